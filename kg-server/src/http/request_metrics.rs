//! The per-request metrics (`kg_http_requests_total`, `kg_http_request_duration_seconds`): their
//! bounded label sets, and the registered handles, looked up by index instead of by name.
//!
//! `metrics::counter!` with labels hashes the name and every label into the recorder's
//! registry on each call. Every request pays that twice, so the handles are registered once per
//! label combination, the first time it occurs (a combination never seen is never exported),
//! and then found by array index.

use std::sync::OnceLock;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};

/// Every route the node serves, as its label; the last is `unmatched`.
const ROUTES: [&str; 18] = [
    "/api/key",
    "/api/keys",
    "/api/watch",
    "/api/txn",
    "/api/snapshot",
    "/api/key/history",
    "/api/compact",
    "/api/leases",
    "/api/leases/keepalive",
    "/api/leases/{id}",
    "/api/leases/{id}/keepalive",
    "/api/health",
    "/api/ready",
    "/api/status",
    "/metrics",
    "/api/openapi.json",
    "/api/docs",
    "unmatched",
];

const METHODS: [&str; 8] = [
    "GET", "PUT", "DELETE", "POST", "HEAD", "OPTIONS", "PATCH", "other",
];

/// The statuses with a label of their own; the rest share `other`, the last of `STATUSES`.
const STATUS_CODES: [u16; 13] = [
    200, 304, 400, 401, 403, 404, 405, 410, 412, 413, 422, 500, 503,
];

const STATUSES: [&str; 14] = [
    "200", "304", "400", "401", "403", "404", "405", "410", "412", "413", "422", "500", "503",
    "other",
];

/// A request's labels, as indices into the tables above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    route: usize,
    method: usize,
}

impl Labels {
    pub fn of(method: &Method, path: &str) -> Self {
        Self {
            route: route_index(path),
            method: method_index(method),
        }
    }

    pub fn route(self) -> &'static str {
        ROUTES[self.route]
    }

    pub fn method(self) -> &'static str {
        METHODS[self.method]
    }
}

/// The handles, each registered on first use. Made after the node's recorder is installed
/// (`AppState` installs it), since a handle stays bound to the recorder it was made with.
pub struct RequestMetrics {
    requests: Box<[OnceLock<Counter>]>,
    durations: Box<[OnceLock<Histogram>]>,
}

impl RequestMetrics {
    pub fn new() -> Self {
        let cells = ROUTES.len() * METHODS.len();
        Self {
            requests: (0..cells * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            durations: (0..cells).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one answered request and records its duration.
    pub fn record(&self, labels: Labels, status: StatusCode, seconds: f64) {
        let cell = labels.route * METHODS.len() + labels.method;
        let status = status_index(status);
        self.requests[cell * STATUSES.len() + status]
            .get_or_init(|| {
                metrics::counter!("kg_http_requests_total",
                    "route" => labels.route(), "method" => labels.method(), "status" => STATUSES[status])
            })
            .increment(1);
        self.durations[cell]
            .get_or_init(|| {
                metrics::histogram!("kg_http_request_duration_seconds",
                    "route" => labels.route(), "method" => labels.method())
            })
            .record(seconds);
    }
}

fn route_index(path: &str) -> usize {
    let label = match path {
        "/api/leases" | "/api/leases/keepalive" => path,
        path if path.starts_with("/api/leases/") => {
            // One segment is a lease id; a keep-alive adds one more. Deeper paths match nothing.
            let rest = &path["/api/leases/".len()..];
            match rest.split_once('/') {
                None if !rest.is_empty() => "/api/leases/{id}",
                Some((id, "keepalive")) if !id.is_empty() => "/api/leases/{id}/keepalive",
                _ => "unmatched",
            }
        }
        docs if docs.starts_with("/api/docs") => "/api/docs",
        other => other,
    };
    ROUTES
        .iter()
        .position(|route| *route == label)
        .unwrap_or(ROUTES.len() - 1)
}

fn method_index(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|name| *name == method.as_str())
        .unwrap_or(METHODS.len() - 1)
}

fn status_index(status: StatusCode) -> usize {
    STATUS_CODES
        .iter()
        .position(|code| *code == status.as_u16())
        .unwrap_or(STATUSES.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_label_and_unknown_paths_share_one() {
        let label = |path| Labels::of(&Method::GET, path).route();
        assert_eq!(label("/api/key"), "/api/key");
        assert_eq!(label("/api/snapshot"), "/api/snapshot");
        assert_eq!(label("/api/leases"), "/api/leases");
        assert_eq!(label("/api/leases/keepalive"), "/api/leases/keepalive");
        assert_eq!(label("/api/leases/42"), "/api/leases/{id}");
        assert_eq!(
            label("/api/leases/42/keepalive"),
            "/api/leases/{id}/keepalive"
        );
        assert_eq!(label("/api/docs/index.html"), "/api/docs");
        assert_eq!(label("/api/leases/"), "unmatched");
        assert_eq!(label("/api/leases//keepalive"), "unmatched");
        assert_eq!(label("/api/leases/42/other"), "unmatched");
        assert_eq!(label("/nowhere"), "unmatched");
        // A label is never an arbitrary path: the set stays bounded.
        assert_eq!(label("/api/leases/{id}"), "/api/leases/{id}");
    }

    /// The route table restates the router's paths; the OpenAPI document lists every one, so
    /// a route added without a label of its own fails here instead of counting as `unmatched`.
    #[test]
    fn every_documented_route_is_its_own_label() {
        use utoipa::OpenApi as _;
        let doc = crate::http::ApiDoc::openapi();
        assert!(!doc.paths.paths.is_empty());
        for path in doc.paths.paths.keys() {
            assert_eq!(Labels::of(&Method::GET, path).route(), path.as_str());
        }
    }

    #[test]
    fn each_status_code_has_the_label_that_spells_it() {
        for (code, label) in STATUS_CODES.iter().zip(STATUSES) {
            assert_eq!(code.to_string(), label);
        }
        assert_eq!(STATUSES.len(), STATUS_CODES.len() + 1);
    }

    #[test]
    fn methods_and_statuses_outside_the_tables_share_other() {
        assert_eq!(Labels::of(&Method::PUT, "/api/key").method(), "PUT");
        assert_eq!(Labels::of(&Method::TRACE, "/api/key").method(), "other");
        assert_eq!(
            STATUSES[status_index(StatusCode::PRECONDITION_FAILED)],
            "412"
        );
        assert_eq!(STATUSES[status_index(StatusCode::IM_A_TEAPOT)], "other");
    }
}
