//! The HTTP surface: merges each module's `router()`, adds the cross-cutting layers (request id,
//! tracing, node header, counters and metrics, panic guard, authentication, body limit) and the
//! OpenAPI docs, and serves it on a listener. It sits on top: it knows the node's state
//! (`startup`), and nothing below it knows HTTP.

mod auth;
mod error;
mod health;
mod history;
pub mod input;
mod keys;
mod leases;
mod request_metrics;
mod snapshot;
mod txn;
mod watch;

use std::any::Any;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::TcpListener;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kg_api::{HEADER_NODE, HEADER_REQUEST_ID};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use error::Error;

use crate::startup::AppState;
use request_metrics::{Labels, RequestMetrics};

/// The OpenAPI document served at `/api/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "KeyGrid", description = "A distributed key-value store. Bodies are byte-compatible with the original FastAPI service; revision metadata travels in headers."),
    paths(
        keys::get_key, keys::put_key, keys::delete_key, keys::list_keys, keys::delete_keys, watch::watch,
        leases::grant, leases::keepalive, leases::keepalive_many, leases::show, leases::list, leases::revoke,
        snapshot::snapshot, txn::txn, history::key_history, history::compact,
        health::get_health, health::get_ready, health::get_status, health::get_metrics,
    ),
    components(schemas(keys::IfNoneMatchAny, kg_api::WatchProgress, kg_api::WatchCompacted, kg_api::DeleteReason, kg_api::KeyRecord, kg_api::SnapshotEnd)),
    tags((name = "keys", description = "Key-value operations"), (name = "leases", description = "Leases: keys that expire"), (name = "node", description = "Node information")),
)]
pub struct ApiDoc;

/// The whole application, without a socket: tests drive it with `oneshot`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.body_limit();
    let router = Router::new()
        .merge(keys::router())
        .merge(leases::router())
        .merge(snapshot::router())
        .merge(txn::router())
        .merge(history::router())
        .merge(health::router())
        .merge(watch::router())
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", ApiDoc::openapi()));
    let router = match &state.web_dir {
        Some(dir) => {
            // The web view is a single-page app: unknown paths get its index.html. The API's
            // own unknown paths keep their JSON 404.
            let files = ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")));
            router.fallback(move |request: Request| async move {
                let path = request.uri().path();
                if path.starts_with("/api/") || path == "/api" || path == "/metrics" {
                    return Error::RouteNotFound.into_response();
                }
                match files.oneshot(request).await {
                    Ok(response) => response.map(axum::body::Body::new),
                    Err(never) => match never {},
                }
            })
        }
        None => router.fallback(route_not_found),
    };
    router
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            reject_declared_oversize(body_limit, request, next)
        }))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                // The per-request span is at DEBUG, tower-http's default: at INFO, creating,
                // entering and closing it cost about 10% of a cache hit's instructions
                // (callgrind). `track` logs each failure with the request's id itself, so that
                // line does not need the span.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request| {
                            let request_id = request
                                .headers()
                                .get(HEADER_REQUEST_ID)
                                .and_then(|value| value.to_str().ok())
                                .unwrap_or_default();
                            tracing::debug_span!(
                                "request",
                                method = %request.method(),
                                path = %request.uri().path(),
                                request_id,
                                // Recorded by the key handlers once the key is parsed.
                                key = tracing::field::Empty,
                            )
                        })
                        .on_failure(()),
                )
                .layer(middleware::from_fn_with_state(
                    (
                        state.clone(),
                        node_header(&state),
                        Arc::new(RequestMetrics::new()),
                    ),
                    track,
                ))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_response))
                // Before any body is read or any route is matched; absent when the API is open.
                .option_layer(
                    state
                        .auth
                        .is_some()
                        .then(|| middleware::from_fn_with_state(state.clone(), auth::require)),
                ),
        )
        .with_state(state)
}

/// Serves the node on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutting_down = state.shutting_down.clone();
    let app = app(state);
    // Answers (and SSE events) go out as soon as they are written, not after Nagle's wait
    // for an ACK of an earlier segment.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            shutting_down.send_replace(true);
        })
        .await
        .context("server failed")
}

/// Refuses a body whose declared Content-Length is over the limit before reading any of it;
/// `DefaultBodyLimit` alone would only trip after reading the limit's worth of bytes.
async fn reject_declared_oversize(limit: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => input::body_too_large(limit).into_response(),
        _ => next.run(request).await,
    }
}

// The fallbacks read (and drop) the body before answering: a response sent while the client
// is still uploading makes the connection close under it, and the client then sees a broken
// pipe instead of the JSON detail. The body limit still bounds what is read.
async fn route_not_found(_body: Result<Bytes, BytesRejection>) -> Error {
    Error::RouteNotFound
}

async fn method_not_allowed(_body: Result<Bytes, BytesRejection>) -> Error {
    Error::MethodNotAllowed
}

const X_KEYGRID_NODE: HeaderName = HeaderName::from_static(HEADER_NODE);

/// The node header's value, made once. `AppState` checked at build that the id is visible
/// ASCII, so the fallback is never used.
fn node_header(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&state.node_id)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-node-id"))
}

/// Stamps the node header, counts the request by route, method and status, and logs a
/// failed one (5xx) with its request id and, for a 500, the cause.
async fn track(
    State((state, node_header, request_metrics)): State<(
        AppState,
        HeaderValue,
        Arc<RequestMetrics>,
    )>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let labels = Labels::of(request.method(), request.uri().path());
    let mut response = next.run(request).await;
    let status = response.status();

    response.headers_mut().insert(X_KEYGRID_NODE, node_header);

    let counters = &state.counters;
    counters.total.fetch_add(1, Ordering::Relaxed);
    match status.as_u16() {
        200..=399 => &counters.success,
        400..=499 => &counters.client_error,
        _ => &counters.server_error,
    }
    .fetch_add(1, Ordering::Relaxed);

    let elapsed = started.elapsed();
    if status.is_server_error() {
        log_failure(&response, labels.method(), labels.route(), elapsed);
    }
    request_metrics.record(labels, status, elapsed.as_secs_f64());
    response
}

/// One line for a 5xx answer: an error, with its cause, for an internal error (a bug); a
/// warning for the others (a 503: the database is away, or the node is stopping).
fn log_failure(response: &Response, method: &str, route: &str, elapsed: std::time::Duration) {
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get(HEADER_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let latency_ms = elapsed.as_secs_f64() * 1e3;
    match response.extensions().get::<error::FailureCause>() {
        Some(cause) => tracing::error!(
            status, method, route, request_id, latency_ms, error = %cause.0, "request failed"
        ),
        None => tracing::warn!(
            status,
            method,
            route,
            request_id,
            latency_ms,
            "request failed"
        ),
    }
}

/// A panic in a handler becomes a logged 500 with a JSON detail; the node keeps serving.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    Error::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}
