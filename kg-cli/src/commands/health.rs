//! `kg health`: every endpoint, then every peer those nodes know of from Redis heartbeats.

use std::io::{self, Write};
use std::time::Instant;

use kg_api::{ClientOptions, DependencyState, Endpoints};
use serde::Serialize;

use super::status::state_name;
use crate::output::{print_table, Render};
use crate::CliError;

/// One endpoint's line.
#[derive(Debug, Serialize)]
pub struct NodeHealth {
    pub endpoint: String,
    pub node: String,
    pub status: &'static str,
    pub latency_ms: f64,
    pub database: String,
    pub cache: String,
    /// The node's last revision, a number like every revision `kg` prints; null when unknown.
    pub revision: Option<i64>,
    /// Why a node that could not be checked is down, in a few words (see [`cause`]).
    pub cause: Option<&'static str>,
    pub error: Option<String>,
}

/// Every endpoint's line: JSON (and raw) an array, text a table.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Health(pub Vec<NodeHealth>);

impl Health {
    pub fn healthy(&self) -> bool {
        self.0.iter().all(|node| node.status == "ok")
    }
}

impl Render for Health {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|n| {
                vec![
                    n.endpoint.clone(),
                    n.node.clone(),
                    match n.cause {
                        Some(cause) => format!("{} ({cause})", n.status),
                        None => n.status.to_owned(),
                    },
                    format!("{:.1}ms", n.latency_ms),
                    n.database.clone(),
                    n.cache.clone(),
                    n.revision
                        .map_or("-".to_owned(), |revision| revision.to_string()),
                ]
            })
            .collect();
        print_table(
            out,
            &[
                "ENDPOINT", "NODE", "STATUS", "LATENCY", "DATABASE", "CACHE", "REVISION",
            ],
            &rows,
        )
    }
}

/// Checks every endpoint, then every peer those nodes know of from Redis heartbeats (cluster
/// mode).
pub async fn health(endpoints: &Endpoints, options: &ClientOptions) -> Result<Health, CliError> {
    let mut reports = Vec::new();
    let mut queue: std::collections::VecDeque<kg_api::Client> =
        endpoints.clients().iter().cloned().collect();
    let mut checked_urls = std::collections::HashSet::new();
    let mut seen_nodes = std::collections::HashSet::new();
    while let Some(client) = queue.pop_front() {
        let endpoint = client.endpoint().as_str().trim_end_matches('/').to_owned();
        if !checked_urls.insert(endpoint.clone()) {
            continue;
        }
        let started = Instant::now();
        let result = client.status().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (node, state, database, cache, revision) = match &result {
            Ok(status) => {
                if !seen_nodes.insert(status.node.clone()) {
                    continue; // the same node behind another address (e.g. the load balancer)
                }
                for peer in &status.peers {
                    if !seen_nodes.contains(&peer.node) {
                        let url = peer_url(&endpoint, &peer.listen);
                        if let Ok(peer_client) = kg_api::Client::with_options(&url, options) {
                            queue.push_back(peer_client);
                        }
                    }
                }
                let state = if status.database.state != DependencyState::Ok {
                    "down"
                } else if status.cache == DependencyState::Degraded {
                    "degraded"
                } else {
                    "ok"
                };
                (
                    status.node.clone(),
                    state,
                    state_name(status.database.state).to_owned(),
                    state_name(status.cache).to_owned(),
                    status.revision,
                )
            }
            Err(_) => ("-".to_owned(), "down", "-".to_owned(), "-".to_owned(), None),
        };
        reports.push(NodeHealth {
            endpoint,
            node,
            status: state,
            latency_ms: (latency_ms * 10.0).round() / 10.0,
            database,
            cache,
            revision,
            cause: result.as_ref().err().map(cause),
            error: result.as_ref().err().map(ToString::to_string),
        });
    }
    Ok(Health(reports))
}

/// Why a status request failed, in the words a user acts on: a token to give, a node to
/// start, a network to look at, or an endpoint that is not KeyGrid at all.
pub(crate) fn cause(err: &kg_api::Error) -> &'static str {
    use kg_api::Error as E;
    match err {
        _ if err.is_refused() => "refused",
        _ if err.is_timeout() => "timed out",
        E::Transport { .. } => "unreachable",
        E::NoApi { .. } | E::Decode { .. } => "not KeyGrid",
        E::Api { status, .. } if status.as_u16() == 401 => "auth required",
        E::Api { status, .. } if status.as_u16() == 403 => "token not allowed",
        E::Api { status, .. } if status.as_u16() == 502 || status.as_u16() == 504 => "bad gateway",
        E::Unavailable { .. } => "unavailable",
        E::NotFound { .. } | E::PreconditionFailed { .. } | E::Api { .. } => "unexpected answer",
        E::InvalidEndpoint { .. } => "invalid endpoint",
    }
}

/// The URL of a peer from its heartbeat's listen address. A wildcard address (0.0.0.0, [::])
/// is reached through the host of the endpoint that reported it.
fn peer_url(reporting_endpoint: &str, listen: &str) -> String {
    let port = listen.rsplit(':').next().unwrap_or_default();
    let host = listen.strip_suffix(&format!(":{port}")).unwrap_or(listen);
    let host = if matches!(host, "0.0.0.0" | "[::]" | "::") {
        reporting_endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.rsplit_once(':').map(|(host, _)| host.to_owned()))
            .unwrap_or_else(|| "127.0.0.1".to_owned())
    } else {
        host.to_owned()
    };
    format!("http://{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::peer_url;

    #[test]
    fn peer_urls_resolve_wildcard_listen_addresses_through_the_reporter() {
        assert_eq!(
            peer_url("http://10.0.0.5:8001", "127.0.0.1:8002"),
            "http://127.0.0.1:8002"
        );
        assert_eq!(
            peer_url("http://kg.example:8000", "0.0.0.0:8003"),
            "http://kg.example:8003"
        );
        assert_eq!(
            peer_url("http://127.0.0.1:8000", "[::]:8003"),
            "http://127.0.0.1:8003"
        );
    }
}
