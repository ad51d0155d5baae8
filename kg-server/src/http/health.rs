//! Node information routes: liveness, readiness, status and Prometheus metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kg_api::{
    DatabaseStatus, DependencyState, HealthResponse, NodeStatus, ReadyResponse, RequestCounters,
    DETAIL_DATABASE_UNAVAILABLE,
};

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(get_health))
        .route("/api/ready", get(get_ready))
        .route("/api/status", get(get_status))
        .route("/metrics", get(get_metrics))
}

/// Liveness: 200 while the process serves HTTP, whatever its dependencies.
#[utoipa::path(get, path = "/api/health", tag = "node",
    responses((status = 200, description = "`{\"status\":\"ok\"}`", body = HealthResponse)))]
pub async fn get_health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
    })
}

/// Readiness: 200 when the database answers, 503 naming the dependency that does not.
#[utoipa::path(get, path = "/api/ready", tag = "node",
    responses(
        (status = 200, description = "Ready", body = ReadyResponse),
        (status = 503, description = "A required dependency is down", body = ReadyResponse),
    ))]
pub async fn get_ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = database_state(&state).await;
    let ready = database == DependencyState::Ok;
    let body = ReadyResponse {
        status: ready.then(|| "ready".to_owned()),
        detail: (!ready).then(|| DETAIL_DATABASE_UNAVAILABLE.to_owned()),
        database,
        cache: state.cache_state(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// This node's id, version, uptime, dependencies, revision and request counters.
#[utoipa::path(get, path = "/api/status", tag = "node",
    responses((status = 200, description = "Node status", body = NodeStatus)))]
pub async fn get_status(State(state): State<AppState>) -> Json<NodeStatus> {
    let revision = state.db(state.store.current_revision()).await.ok();
    let primary = match revision {
        Some(_) => state.db(state.store.is_primary()).await.ok().flatten(),
        None => None,
    };
    let counters = &state.counters;
    Json(NodeStatus {
        node: state.node_id.to_string(),
        listen: state.listen.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        database: DatabaseStatus {
            kind: state.store.kind().to_string(),
            state: if revision.is_some() {
                DependencyState::Ok
            } else {
                DependencyState::Unavailable
            },
            endpoint: state.database_endpoint.clone(),
            primary,
        },
        cache: state.cache_state(),
        cache_endpoint: state
            .cache
            .as_ref()
            .map(|cache| cache.target().shown().to_owned()),
        revision,
        requests: RequestCounters {
            total: counters.total.load(Ordering::Relaxed),
            success: counters.success.load(Ordering::Relaxed),
            client_error: counters.client_error.load(Ordering::Relaxed),
            server_error: counters.server_error.load(Ordering::Relaxed),
        },
        peers: state.events.peers(),
    })
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn database_state(state: &AppState) -> DependencyState {
    match state.db(state.store.current_revision()).await {
        Ok(_) => DependencyState::Ok,
        Err(_) => DependencyState::Unavailable,
    }
}
