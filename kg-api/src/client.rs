//! The typed async client: one method per endpoint, so no caller writes a URL or a JSON shape.
//!
//! Errors keep the server's `detail`, and a 404, a 412 and an unreachable node are distinct
//! variants because the CLI maps each to its own exit code.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::types::*;

/// What can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404: the key does not exist.
    #[error("{detail}")]
    NotFound { detail: String },
    /// 412: an `If-Match` or `If-None-Match` precondition did not hold.
    #[error("{detail}")]
    PreconditionFailed { detail: String },
    /// 503: the node is up but a required dependency is not.
    #[error("{detail}")]
    Unavailable { detail: String },
    /// Any other non-success status, with the server's detail.
    #[error("{status}: {detail}")]
    Api { status: StatusCode, detail: String },
    /// The request never got an HTTP answer: refused, reset, timed out.
    #[error("cannot reach {url}: {}", transport_reason(source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON shape the API documents.
    #[error("unexpected response from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint given is not a usable base URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// Something answered 404 that is not a KeyGrid node's "not found": another service on
    /// that port (no `X-KeyGrid-Node` header), or a node asked for a path it has no route for
    /// (a base URL with a path after the host). Never a missing key.
    #[error("no KeyGrid API at {endpoint}: {reason}")]
    NoApi { endpoint: String, reason: String },
}

impl Error {
    /// True when the node could not be reached at all, so another endpoint may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.is_connect())
    }

    /// True when no answer arrived in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.is_timeout())
    }

    /// True when the connection was refused: nothing listens at the endpoint's port.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if is_refused(source))
    }

    /// The HTTP status the server answered with, or `None` when no answer arrived.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            Error::PreconditionFailed { .. } => Some(StatusCode::PRECONDITION_FAILED),
            Error::Unavailable { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            Error::Api { status, .. } => Some(*status),
            Error::NoApi { .. } => Some(StatusCode::NOT_FOUND),
            Error::Transport { .. } | Error::Decode { .. } | Error::InvalidEndpoint { .. } => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request got no answer, in words a user acts on. reqwest's own text ("error sending
/// request for url") says neither whether the node refused nor whether time ran out.
fn transport_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out: no answer within the request timeout".to_owned();
    }
    if is_refused(err) {
        return "connection refused (is a node listening there?)".to_owned();
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if err.is_connect() {
        format!("cannot connect: {innermost}")
    } else {
        innermost.to_string()
    }
}

/// Whether an I/O error somewhere in `err`'s chain is a refused connection.
fn is_refused(err: &reqwest::Error) -> bool {
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        if let Some(io) = source.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = source;
    }
    false
}

/// A condition a write must meet, sent as an HTTP precondition header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Unconditional.
    #[default]
    None,
    /// `If-Match: "<rev>"`: the key's mod_revision must equal this.
    IfRevision(i64),
    /// `If-Match: *`: the key must exist.
    MustExist,
    /// `If-None-Match: *`: the key must not exist (create only).
    CreateOnly,
}

/// Facts about a response that travel in headers rather than in the seed's bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    /// `X-KeyGrid-Node`.
    pub node: Option<String>,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// `X-Cache`: `Some(true)` for a hit, `Some(false)` for a miss, `None` when absent.
    pub cache_hit: Option<bool>,
}

/// The outcome of a successful PUT or DELETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// The revision this write committed at.
    pub revision: i64,
    /// The key's version after the write (0 after a delete).
    pub version: i64,
    /// The key's create_revision after the write (0 after a delete).
    pub create_revision: i64,
    pub meta: ResponseMeta,
}

/// What a put ties the key's life to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attach {
    /// Nothing: the key lives until deleted (and leaves any lease it had).
    #[default]
    None,
    /// An existing lease.
    Lease(i64),
    /// A new lease of this many seconds, for this key alone.
    Ttl(u64),
}

/// A value read with `GET /api/key` and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    /// The key's lease, if it has one.
    pub lease: Option<i64>,
    /// Milliseconds left on that lease.
    pub ttl_remaining_ms: Option<i64>,
    pub meta: ResponseMeta,
}

/// A client bound to one node or load balancer.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

/// Options shared by every client a program builds.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            token: None,
        }
    }
}

impl Client {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:8000`) with default options.
    pub fn new(endpoint: &str) -> Result<Self> {
        Self::with_options(endpoint, &ClientOptions::default())
    }

    pub fn with_options(endpoint: &str, options: &ClientOptions) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        // A bare HOST:PORT is http, as etcdctl's --endpoints takes it. Without this,
        // `localhost:8000` would parse as a URL of the scheme "localhost".
        let url = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let mut base = Url::parse(&url).map_err(|err| invalid(err.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("scheme must be http or https".into()));
        }
        // A trailing slash makes `join("api/key")` append rather than replace the last segment.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = &options.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(2)))
            .default_headers(headers)
            .build()
            .map_err(|err| invalid(err.to_string()))?;
        Ok(Self { http, base })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    /// `GET /api/health`.
    pub async fn health(&self) -> Result<HealthResponse> {
        let response = self.send(self.request(Method::GET, "api/health")).await?;
        self.json(response).await
    }

    /// `GET /api/ready`. A 503 is returned as `Ok` so callers can see which dependency failed.
    pub async fn ready(&self) -> Result<(StatusCode, ReadyResponse)> {
        let response = self
            .send_raw(self.request(Method::GET, "api/ready"))
            .await?;
        let status = response.status();
        Ok((status, self.json(response).await?))
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Result<NodeStatus> {
        let response = self.send(self.request(Method::GET, "api/status")).await?;
        self.json(response).await
    }

    /// `GET /metrics`, as Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let url = self.url("metrics");
        let response = self.send(self.request(Method::GET, "metrics")).await?;
        response
            .text()
            .await
            .map_err(|source| Error::Decode { url, source })
    }

    /// `PUT /api/key`.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        precondition: Precondition,
    ) -> Result<WriteResult> {
        self.put_with(key, value, precondition, Attach::None).await
    }

    /// `PUT /api/key`, attaching the key to a lease or to a TTL of its own.
    pub async fn put_with(
        &self,
        key: &str,
        value: &str,
        precondition: Precondition,
        attach: Attach,
    ) -> Result<WriteResult> {
        self.put_idempotent(key, value, precondition, attach, None)
            .await
    }

    /// `put_with`, naming the write with an `Idempotency-Key`: a retry with the same key, on
    /// any node, gets the first attempt's answer and writes nothing again.
    pub async fn put_idempotent(
        &self,
        key: &str,
        value: &str,
        precondition: Precondition,
        attach: Attach,
        idempotency_key: Option<&str>,
    ) -> Result<WriteResult> {
        let mut body = PutRequest::new(key, value);
        match attach {
            Attach::None => {}
            Attach::Lease(id) => body.lease = Some(id),
            Attach::Ttl(seconds) => body.ttl = Some(seconds),
        }
        let mut request = with_precondition(self.request(Method::PUT, "api/key"), precondition);
        if let Some(id) = idempotency_key {
            request = request.header(HEADER_IDEMPOTENCY_KEY, id);
        }
        let response = self.send(request.json(&body)).await?;
        let result = write_result(response.headers());
        let _: SuccessResponse = self.json(response).await?;
        Ok(result)
    }

    /// `GET /api/key?key=...`.
    pub async fn get(&self, key: &str) -> Result<GetResult> {
        let request = self.request(Method::GET, "api/key").query(&[("key", key)]);
        let response = self.send(request).await?;
        let headers = response.headers().clone();
        let body: GetResponse = self.json(response).await?;
        Ok(get_result(body, &headers))
    }

    /// `GET /api/key?key=...&revision=R`: the key as of revision `R`.
    pub async fn get_at(&self, key: &str, revision: i64) -> Result<GetResult> {
        let request = self
            .request(Method::GET, "api/key")
            .query(&[("key", key), ("revision", &revision.to_string())]);
        let response = self.send(request).await?;
        let headers = response.headers().clone();
        let body: GetResponse = self.json(response).await?;
        Ok(get_result(body, &headers))
    }

    /// `GET /api/key/history`: up to `limit` versions of `key` below revision `before` (the
    /// newest when `None`), newest first.
    pub async fn history(
        &self,
        key: &str,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<crate::KeyHistoryResponse> {
        let mut query = vec![("key", key.to_owned())];
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let request = self.request(Method::GET, "api/key/history").query(&query);
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `POST /api/compact`: drops the history below `revision`.
    pub async fn compact(&self, revision: i64) -> Result<crate::CompactResponse> {
        let request = self
            .request(Method::POST, "api/compact")
            .json(&crate::CompactRequest { revision });
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `POST /api/leases`: a lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: u64) -> Result<LeaseGrant> {
        let request = self
            .request(Method::POST, "api/leases")
            .json(&LeaseGrantRequest { ttl });
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `POST /api/leases/{id}/keepalive`: the lease's full TTL again.
    pub async fn lease_keepalive(&self, id: i64) -> Result<LeaseGrant> {
        let request = self.request(Method::POST, &format!("api/leases/{id}/keepalive"));
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `POST /api/leases/keepalive`: many leases' full TTLs again in one request, and the ids
    /// that were no longer alive.
    pub async fn lease_keepalive_many(&self, ids: &[i64]) -> Result<LeaseKeepAliveResponse> {
        let request = self
            .request(Method::POST, "api/leases/keepalive")
            .json(&LeaseKeepAliveRequest { ids: ids.to_vec() });
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `GET /api/leases/{id}`: its TTL, the time it has left and its keys.
    pub async fn lease(&self, id: i64) -> Result<LeaseInfo> {
        let response = self
            .send(self.request(Method::GET, &format!("api/leases/{id}")))
            .await?;
        self.json(response).await
    }

    /// `GET /api/leases`: every live lease.
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let response = self.send(self.request(Method::GET, "api/leases")).await?;
        let list: LeaseListResponse = self.json(response).await?;
        Ok(list.leases)
    }

    /// `DELETE /api/leases/{id}`: ends the lease and deletes its keys at once.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        let response = self
            .send(self.request(Method::DELETE, &format!("api/leases/{id}")))
            .await?;
        self.json(response).await
    }

    /// `DELETE /api/key?key=...`.
    pub async fn delete(&self, key: &str, precondition: Precondition) -> Result<WriteResult> {
        let request = self
            .request(Method::DELETE, "api/key")
            .query(&[("key", key)]);
        let response = self.send(with_precondition(request, precondition)).await?;
        let result = write_result(response.headers());
        let _: SuccessResponse = self.json(response).await?;
        Ok(result)
    }

    /// `POST /api/txn`: compares, then one branch of ops, atomically at one revision. With an
    /// idempotency key, a retry (on any node) gets the first attempt's answer.
    pub async fn txn(
        &self,
        txn: &crate::TxnRequest,
        idempotency_key: Option<&str>,
    ) -> Result<crate::TxnResponse> {
        let mut request = self.request(Method::POST, "api/txn").json(txn);
        if let Some(id) = idempotency_key {
            request = request.header(HEADER_IDEMPOTENCY_KEY, id);
        }
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `DELETE /api/keys`: deletes every live key under `prefix` at one revision. An empty
    /// prefix is refused by the node unless `all` says every key is meant.
    pub async fn delete_prefix(&self, prefix: &str, all: bool) -> Result<DeletePrefixResponse> {
        let mut request = self.request(Method::DELETE, "api/keys");
        if !prefix.is_empty() {
            request = request.query(&[("prefix", prefix)]);
        }
        if all {
            request = request.query(&[("all", "true")]);
        }
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `GET /api/keys`: one page of live keys in byte order.
    pub async fn list(
        &self,
        prefix: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<KeyListResponse> {
        self.list_page(prefix, limit, after, false, None).await
    }

    /// `GET /api/keys?keys_only=true`: one page of keys with their metadata, no values.
    pub async fn list_keys_only(
        &self,
        prefix: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<KeyListResponse> {
        self.list_page(prefix, limit, after, true, None).await
    }

    async fn list_page(
        &self,
        prefix: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
        keys_only: bool,
        revision: Option<i64>,
    ) -> Result<KeyListResponse> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(prefix) = prefix {
            query.push(("prefix", prefix.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        if keys_only {
            query.push(("keys_only", "true".to_owned()));
        }
        if let Some(revision) = revision {
            query.push(("revision", revision.to_string()));
        }
        let request = self.request(Method::GET, "api/keys").query(&query);
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `GET /api/keys?count_only=true`: how many live keys start with `prefix`.
    pub async fn count(&self, prefix: Option<&str>) -> Result<u64> {
        self.count_at(prefix, None).await
    }

    /// [`count`](Self::count) as the keys were at `revision` (now when `None`).
    pub async fn count_at(&self, prefix: Option<&str>, revision: Option<i64>) -> Result<u64> {
        let revision = revision.map(|revision| revision.to_string());
        let mut query = vec![("count_only", "true")];
        if let Some(prefix) = prefix {
            query.push(("prefix", prefix));
        }
        if let Some(revision) = &revision {
            query.push(("revision", revision));
        }
        let request = self.request(Method::GET, "api/keys").query(&query);
        let response = self.send(request).await?;
        let body: KeyCountResponse = self.json(response).await?;
        Ok(body.count)
    }

    /// Every live key under `prefix`, walking all pages of `page_size`.
    pub async fn list_all(&self, prefix: Option<&str>, page_size: u32) -> Result<Vec<KeyRecord>> {
        self.list_up_to(prefix, None, false, page_size).await
    }

    /// Up to `limit` live keys under `prefix` (all of them when `None`), with or without
    /// their values, walking pages of at most `page_size`: the paging every listing client
    /// needs, written once.
    pub async fn list_up_to(
        &self,
        prefix: Option<&str>,
        limit: Option<usize>,
        keys_only: bool,
        page_size: u32,
    ) -> Result<Vec<KeyRecord>> {
        self.list_up_to_at(prefix, limit, keys_only, page_size, None)
            .await
    }

    /// [`list_up_to`](Self::list_up_to) as the keys were at `revision` (now when `None`): every
    /// page asks for the same revision, so the listing is one consistent view.
    pub async fn list_up_to_at(
        &self,
        prefix: Option<&str>,
        limit: Option<usize>,
        keys_only: bool,
        page_size: u32,
        revision: Option<i64>,
    ) -> Result<Vec<KeyRecord>> {
        let wanted = limit.unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        while keys.len() < wanted {
            let size = u32::try_from(wanted - keys.len()).map_or(page_size, |n| n.min(page_size));
            let page = self
                .list_page(prefix, Some(size), after.as_deref(), keys_only, revision)
                .await?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        keys.truncate(wanted);
        Ok(keys)
    }

    /// `GET /api/watch`: a stream of committed changes. `after` resumes after that revision
    /// (sent as `Last-Event-ID`); without it only changes from now on are streamed.
    pub async fn watch(&self, prefix: Option<&str>, after: Option<i64>) -> Result<WatchStream> {
        self.watch_with(prefix, after, None).await
    }

    /// `watch`, asking for a progress event whenever nothing else was sent for `progress`
    /// (`WatchStream::next_item` yields them).
    pub async fn watch_with(
        &self,
        prefix: Option<&str>,
        after: Option<i64>,
        progress: Option<Duration>,
    ) -> Result<WatchStream> {
        let mut request = self
            .request(Method::GET, "api/watch")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // A watch runs for as long as the caller wants; only connecting is bounded.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(prefix) = prefix {
            request = request.query(&[("prefix", prefix)]);
        }
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        if let Some(progress) = progress {
            request = request.query(&[("progress", format!("{}ms", progress.as_millis()))]);
        }
        let response = self.send(request).await?;
        let url = response.url().to_string();
        let mut stream = WatchStream::new(url, response.bytes_stream());
        stream.resume_after = after;
        Ok(stream)
    }

    /// `GET /api/snapshot`: every live key at one revision. The header is read before this
    /// returns; the keys follow from [`SnapshotStream::next`].
    pub async fn snapshot(&self) -> Result<SnapshotStream> {
        let request = self
            .request(Method::GET, "api/snapshot")
            // A snapshot of many keys takes as long as it takes; only connecting is bounded.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        let response = self.send(request).await?;
        let url = response.url().to_string();
        SnapshotStream::start(url, response.bytes_stream()).await
    }

    /// A request builder for a path under the base URL, for endpoints and options this client
    /// has no method for (raw bodies in tests, streaming in the CLI).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    fn url(&self, path: &str) -> String {
        // `path` is always one of this module's literals, so joining cannot fail in practice;
        // fall back to plain concatenation rather than panic if it ever did.
        self.base
            .join(path)
            .map(String::from)
            .unwrap_or_else(|_| format!("{}{path}", self.base))
    }

    /// Sends and turns every non-2xx status into an [`Error`] carrying the server's detail.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = self.send_raw(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let from_node = response.headers().contains_key(HEADER_NODE);
        let path = response.url().path().to_owned();
        let detail = match response.json::<ErrorBody>().await {
            Ok(body) => body.detail,
            Err(_) => status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_owned(),
        };
        Err(match status {
            StatusCode::NOT_FOUND if !from_node => Error::NoApi {
                endpoint: self.base.to_string(),
                reason: format!(
                    "{path} answered 404 without the X-KeyGrid-Node header every node sends: \
                     another service, or a proxy that does not lead to KeyGrid"
                ),
            },
            StatusCode::NOT_FOUND if detail == DETAIL_ROUTE_NOT_FOUND => Error::NoApi {
                endpoint: self.base.to_string(),
                reason: format!(
                    "the node has no route {path}: an endpoint is a node's base URL, such as \
                     http://127.0.0.1:8000, with no path after the port"
                ),
            },
            StatusCode::NOT_FOUND => Error::NotFound { detail },
            StatusCode::PRECONDITION_FAILED => Error::PreconditionFailed { detail },
            StatusCode::SERVICE_UNAVAILABLE => Error::Unavailable { detail },
            status => Error::Api { status, detail },
        })
    }

    async fn send_raw(&self, request: RequestBuilder) -> Result<Response> {
        let request = request.build().map_err(|source| Error::Transport {
            url: self.base.to_string(),
            source,
        })?;
        let url = request.url().to_string();
        self.http
            .execute(request)
            .await
            .map_err(|source| Error::Transport { url, source })
    }

    async fn json<T: DeserializeOwned>(&self, response: Response) -> Result<T> {
        let url = response.url().to_string();
        response
            .json()
            .await
            .map_err(|source| Error::Decode { url, source })
    }
}

fn with_precondition(request: RequestBuilder, precondition: Precondition) -> RequestBuilder {
    match precondition {
        Precondition::None => request,
        Precondition::IfRevision(revision) => request.header(IF_MATCH, format!("\"{revision}\"")),
        Precondition::MustExist => request.header(IF_MATCH, "*"),
        Precondition::CreateOnly => request.header(IF_NONE_MATCH, "*"),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn header_i64(headers: &HeaderMap, name: &str) -> Option<i64> {
    header_str(headers, name).and_then(|value| value.parse().ok())
}

/// A `GET /api/key` answer: the body's value and the revision headers.
fn get_result(body: GetResponse, headers: &HeaderMap) -> GetResult {
    GetResult {
        value: body.data.value,
        mod_revision: etag_revision(headers)
            .or_else(|| header_i64(headers, HEADER_REVISION))
            .unwrap_or_default(),
        create_revision: header_i64(headers, HEADER_CREATE_REVISION).unwrap_or_default(),
        version: header_i64(headers, HEADER_VERSION).unwrap_or_default(),
        lease: header_i64(headers, HEADER_LEASE),
        ttl_remaining_ms: header_i64(headers, HEADER_TTL_REMAINING_MS),
        meta: response_meta(headers),
    }
}

/// The revision inside a strong `ETag: "<rev>"`.
fn etag_revision(headers: &HeaderMap) -> Option<i64> {
    header_str(headers, ETAG.as_str())
        .and_then(|value| value.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
}

fn response_meta(headers: &HeaderMap) -> ResponseMeta {
    ResponseMeta {
        node: header_str(headers, HEADER_NODE).map(str::to_owned),
        request_id: header_str(headers, HEADER_REQUEST_ID).map(str::to_owned),
        cache_hit: header_str(headers, HEADER_CACHE).map(|value| value == "hit"),
    }
}

fn write_result(headers: &HeaderMap) -> WriteResult {
    WriteResult {
        revision: header_i64(headers, HEADER_REVISION)
            .or_else(|| etag_revision(headers))
            .unwrap_or_default(),
        version: header_i64(headers, HEADER_VERSION).unwrap_or_default(),
        create_revision: header_i64(headers, HEADER_CREATE_REVISION).unwrap_or_default(),
        meta: response_meta(headers),
    }
}

/// What a watch stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Change(ChangeEvent),
    /// Every change up to this revision has been sent (`watch_with`'s progress).
    Progress(i64),
}

/// The lines of `GET /api/snapshot` as they arrive: its header, then each key, then the end
/// line, which [`SnapshotStream::next`] checks against the keys it gave.
pub struct SnapshotStream {
    url: String,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    keys: u64,
    ended: bool,
    /// The snapshot's first line: its revision and how many keys follow.
    pub header: SnapshotHeader,
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStream")
            .field("url", &self.url)
            .field("header", &self.header)
            .finish()
    }
}

impl SnapshotStream {
    /// Reads the header of a snapshot body arriving from `url`.
    pub async fn start<S>(url: String, body: S) -> Result<Self>
    where
        S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    {
        let mut stream = SnapshotStream {
            url,
            body: Box::pin(body),
            buffer: Vec::new(),
            start: 0,
            keys: 0,
            ended: false,
            header: SnapshotHeader {
                format: String::new(),
                version: 0,
                revision: 0,
                created_at: String::new(),
                keys: 0,
            },
        };
        let Some(line) = stream.line().await? else {
            return Err(stream.malformed("the snapshot is empty"));
        };
        stream.header = SnapshotHeader::parse(&line).map_err(|err| stream.malformed(err))?;
        Ok(stream)
    }

    /// The next key, with its value; `None` after the end line. A body that ends without
    /// one, or whose end line disagrees with the keys received, is an error: it was cut short.
    pub async fn next(&mut self) -> Result<Option<KeyRecord>> {
        if self.ended {
            return Ok(None);
        }
        let Some(line) = self.line().await? else {
            return Err(self.malformed(format!(
                "the snapshot was cut short after {} keys (no end line)",
                self.keys
            )));
        };
        match SnapshotLine::parse(&line).map_err(|err| self.malformed(err))? {
            SnapshotLine::Key(record) => {
                self.keys += 1;
                Ok(Some(record))
            }
            SnapshotLine::End(SnapshotEnd { end }) if end == self.keys => {
                self.ended = true;
                Ok(None)
            }
            SnapshotLine::End(SnapshotEnd { end }) => Err(self.malformed(format!(
                "the end line counts {end} keys, but {} arrived",
                self.keys
            ))),
        }
    }

    /// The next line without its newline; `None` at the end of the body. A last line without
    /// a newline is returned as it is (and will not parse if it was cut).
    async fn line(&mut self) -> Result<Option<Vec<u8>>> {
        use futures::StreamExt as _;
        loop {
            if let Some(at) = self.buffer[self.start..].iter().position(|&b| b == b'\n') {
                let line = self.buffer[self.start..self.start + at].to_vec();
                self.start += at + 1;
                return Ok(Some(line));
            }
            // Keep only the unread part before reading more.
            self.buffer.drain(..self.start);
            self.start = 0;
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    return Err(Error::Transport {
                        url: self.url.clone(),
                        source,
                    })
                }
                None if self.buffer.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buffer))),
            }
        }
    }

    fn malformed(&self, err: impl std::fmt::Display) -> Error {
        Error::Api {
            status: StatusCode::OK,
            detail: format!("bad snapshot from {}: {err}", self.url),
        }
    }
}

/// The change events of a watch, parsed from Server-Sent Events.
pub struct WatchStream {
    url: String,
    events: std::pin::Pin<Box<dyn futures::Stream<Item = SseItem> + Send + 'static>>,
    /// The last SSE id read (or the revision the watch was opened after).
    resume_after: Option<i64>,
}

type SseItem = std::result::Result<
    eventsource_stream::Event,
    eventsource_stream::EventStreamError<reqwest::Error>,
>;

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("url", &self.url)
            .finish()
    }
}

impl WatchStream {
    /// The events of an SSE body, as the bytes arrive from `url`.
    pub fn new<S>(url: String, body: S) -> Self
    where
        S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    {
        use eventsource_stream::Eventsource as _;
        WatchStream {
            url,
            events: Box::pin(body.eventsource()),
            resume_after: None,
        }
    }

    /// The revision a new watch should resume after to miss nothing and repeat nothing: the
    /// last SSE id read, or what this watch was opened after. It is not always the last
    /// event's revision: a revision that changed several keys carries its id on its last
    /// event only, so a stream cut inside it resumes before it and gets all of it again.
    pub fn resume_after(&self) -> Option<i64> {
        self.resume_after
    }

    /// The next change, `None` when the server ended the stream. Keep-alive comments, events
    /// without data and progress events are skipped.
    pub async fn next(&mut self) -> Option<Result<ChangeEvent>> {
        loop {
            match self.next_item().await? {
                Ok(WatchItem::Change(event)) => return Some(Ok(event)),
                Ok(WatchItem::Progress(_)) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The next change or progress event, `None` when the server ended the stream. A stream
    /// that history it needed was compacted out of ends with an error: a 410, as a watch
    /// asked to resume there gets.
    pub async fn next_item(&mut self) -> Option<Result<WatchItem>> {
        use futures::StreamExt as _;
        loop {
            let event = match self.events.next().await? {
                Ok(event) => event,
                Err(eventsource_stream::EventStreamError::Transport(source)) => {
                    return Some(Err(Error::Transport {
                        url: self.url.clone(),
                        source,
                    }))
                }
                Err(err) => return Some(Err(self.malformed(err))),
            };
            if let Ok(revision) = event.id.trim().parse::<i64>() {
                self.resume_after = Some(revision);
            }
            if event.data.is_empty() {
                continue;
            }
            return Some(if event.event == "progress" {
                serde_json::from_str::<WatchProgress>(&event.data)
                    .map(|progress| WatchItem::Progress(progress.revision))
                    .map_err(|err| self.malformed(err))
            } else if event.event == "compacted" {
                match serde_json::from_str::<WatchCompacted>(&event.data) {
                    Ok(notice) => Err(Error::Api {
                        status: StatusCode::GONE,
                        detail: notice.detail,
                    }),
                    Err(err) => Err(self.malformed(err)),
                }
            } else {
                serde_json::from_str(&event.data)
                    .map(WatchItem::Change)
                    .map_err(|err| self.malformed(err))
            });
        }
    }

    fn malformed(&self, err: impl std::fmt::Display) -> Error {
        Error::Api {
            status: StatusCode::OK,
            detail: format!("malformed event from {}: {err}", self.url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as it may arrive: `chunks` of bytes, split anywhere.
    fn stream_of(chunks: &[&'static str]) -> WatchStream {
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = chunks
            .iter()
            .map(|chunk| Ok(bytes::Bytes::from_static(chunk.as_bytes())))
            .collect();
        WatchStream::new(
            "http://test/api/watch".to_owned(),
            futures::stream::iter(chunks),
        )
    }

    async fn keys(mut stream: WatchStream) -> Vec<(String, i64)> {
        let mut seen = Vec::new();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            seen.push((event.key, event.revision));
        }
        seen
    }

    const ONE: &str = r#"{"type":"put","key":"a","revision":1,"version":1,"node":"n1","at":"2026-11-30T00:00:00Z","value":"x"}"#;
    const TWO: &str = r#"{"type":"delete","key":"b","revision":2,"version":0,"node":"n1","at":"2026-11-30T00:00:00Z"}"#;

    #[test]
    fn a_revision_of_several_events_is_resumed_after_only_once_all_have_come() {
        let first = r#"{"type":"delete","key":"p/a","revision":5,"version":0,"node":"n1","at":"2026-11-30T00:00:00Z"}"#;
        let second = r#"{"type":"delete","key":"p/b","revision":5,"version":0,"node":"n1","at":"2026-11-30T00:00:00Z"}"#;
        let body = format!("id: 4\ndata: {ONE}\n\ndata: {first}\n\nid: 5\ndata: {second}\n\n");
        let mut stream = stream_of(&[Box::leak(body.into_boxed_str())]);
        assert_eq!(stream.resume_after(), None);
        assert_eq!(
            futures::executor::block_on(stream.next())
                .unwrap()
                .unwrap()
                .key,
            "a"
        );
        assert_eq!(stream.resume_after(), Some(4));
        let cut = futures::executor::block_on(stream.next()).unwrap().unwrap();
        assert_eq!((cut.key.as_str(), cut.revision), ("p/a", 5));
        // Cut here, a reconnect must ask for revision 5 again.
        assert_eq!(stream.resume_after(), Some(4));
        assert_eq!(
            futures::executor::block_on(stream.next())
                .unwrap()
                .unwrap()
                .key,
            "p/b"
        );
        assert_eq!(stream.resume_after(), Some(5));
    }

    #[test]
    fn events_are_read_with_lf_or_crlf_framing_across_chunk_boundaries() {
        for newline in ["\n", "\r\n"] {
            let body = format!(
                ": keep-alive{newline}{newline}id: 1{newline}data: {ONE}{newline}{newline}\
                 id: 9{newline}{newline}id: 2{newline}data: {TWO}{newline}{newline}"
            );
            // Split at every third byte, so a CRLF pair and a field name are cut in two.
            let leaked: &'static str = Box::leak(body.into_boxed_str());
            let chunks: Vec<&'static str> = leaked
                .as_bytes()
                .chunks(3)
                .map(|chunk| std::str::from_utf8(chunk).unwrap())
                .collect();
            let seen = futures::executor::block_on(keys(stream_of(&chunks)));
            assert_eq!(
                seen,
                [("a".to_owned(), 1), ("b".to_owned(), 2)],
                "newline {newline:?}"
            );
        }
    }

    #[test]
    fn a_compacted_event_is_a_410_error_and_moves_no_resume_point() {
        let notice =
            r#"{"compact_revision":9,"detail":"the history this watch needed was compacted"}"#;
        let body = format!("id: 1\ndata: {ONE}\n\nevent: compacted\ndata: {notice}\n\n");
        let mut stream = stream_of(&[Box::leak(body.into_boxed_str())]);
        let event = futures::executor::block_on(stream.next()).unwrap().unwrap();
        assert_eq!(event.key, "a");
        let err = futures::executor::block_on(stream.next())
            .unwrap()
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::GONE));
        assert!(err.to_string().contains("compacted"), "{err}");
        assert_eq!(stream.resume_after(), Some(1));
        assert!(futures::executor::block_on(stream.next()).is_none());
    }

    #[test]
    fn a_malformed_event_is_an_error_that_names_the_stream() {
        let mut stream = stream_of(&["data: {not json\r\n\r\n"]);
        let err = futures::executor::block_on(stream.next())
            .unwrap()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("malformed event from http://test/api/watch"),
            "{err}"
        );
    }

    const HEADER: &str = r#"{"format":"keygrid-snapshot","version":1,"revision":7,"created_at":"2026-12-01T00:00:00.000Z","keys":2}"#;
    const KEY_A: &str =
        r#"{"key":"a","value":"1","create_revision":1,"mod_revision":3,"version":2}"#;
    const KEY_B: &str = r#"{"key":"b","value":"2","create_revision":4,"mod_revision":4,"version":1,"lease":9,"ttl_remaining_ms":1500}"#;

    /// The snapshot body `lines` (each followed by a newline), split every `every` bytes.
    fn snapshot_of(lines: &[&str], every: usize) -> Result<SnapshotStream> {
        let body: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = body
            .as_bytes()
            .chunks(every)
            .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk)))
            .collect();
        futures::executor::block_on(SnapshotStream::start(
            "http://test/api/snapshot".to_owned(),
            futures::stream::iter(chunks),
        ))
    }

    fn drain(stream: &mut SnapshotStream) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        while let Some(record) = futures::executor::block_on(stream.next())? {
            keys.push(record.key);
        }
        Ok(keys)
    }

    #[test]
    fn a_whole_snapshot_reads_the_same_however_its_bytes_arrive() {
        for every in [1, 7, 4096] {
            let mut stream = snapshot_of(&[HEADER, KEY_A, KEY_B, r#"{"end":2}"#], every).unwrap();
            assert_eq!((stream.header.revision, stream.header.keys), (7, 2));
            assert_eq!(drain(&mut stream).unwrap(), ["a", "b"], "chunks of {every}");
            assert!(futures::executor::block_on(stream.next())
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn a_snapshot_cut_short_or_miscounted_is_refused() {
        let cut = drain(&mut snapshot_of(&[HEADER, KEY_A, KEY_B], 5).unwrap()).unwrap_err();
        assert!(cut.to_string().contains("cut short after 2 keys"), "{cut}");
        let miscounted =
            drain(&mut snapshot_of(&[HEADER, KEY_A, r#"{"end":2}"#], 5).unwrap()).unwrap_err();
        assert!(
            miscounted
                .to_string()
                .contains("counts 2 keys, but 1 arrived"),
            "{miscounted}"
        );
        let no_value = drain(
            &mut snapshot_of(
                &[
                    HEADER,
                    r#"{"key":"a","create_revision":1,"mod_revision":1,"version":1}"#,
                ],
                5,
            )
            .unwrap(),
        )
        .unwrap_err();
        assert!(no_value.to_string().contains("has no value"), "{no_value}");
    }

    #[test]
    fn a_header_of_another_format_or_version_is_refused() {
        let version =
            snapshot_of(&[&HEADER.replace(r#""version":1"#, r#""version":2"#)], 64).unwrap_err();
        assert!(
            version.to_string().contains("version 2 is not supported"),
            "{version}"
        );
        let format = snapshot_of(&[&HEADER.replace("keygrid-snapshot", "etcd")], 64).unwrap_err();
        assert!(
            format.to_string().contains("its format is \"etcd\""),
            "{format}"
        );
        let empty = snapshot_of(&[], 64).unwrap_err();
        assert!(
            empty.to_string().contains("the snapshot is empty"),
            "{empty}"
        );
    }
}
