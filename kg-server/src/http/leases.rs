//! The lease routes: grant, keep-alive, look up, list and revoke, as etcd's lease API in plain
//! JSON. Expiry itself is the node's sweeper (`startup::sweep_leases`), not a route.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kg_api::{
    ErrorBody, LeaseGrant, LeaseGrantRequest, LeaseInfo, LeaseListResponse, LeaseRevokeResponse,
};

use super::input::{check_ttl, json_body};
use super::Error;
use crate::startup::AppState;
use crate::store::LeaseEnd;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/leases", post(grant).get(list))
        .route("/api/leases/{id}", get(show).delete(revoke))
        .route("/api/leases/{id}/keepalive", post(keepalive))
}

/// A lease id from the path: a positive integer, else a 400.
fn lease_id(raw: &str) -> Result<i64, Error> {
    match raw.parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(Error::BadRequest(format!(
            "lease id must be a positive integer, not {raw:?}"
        ))),
    }
}

/// Grant a lease.
#[utoipa::path(
    post, path = "/api/leases", tag = "leases",
    request_body = LeaseGrantRequest,
    responses(
        (status = 200, description = "Granted: its id and TTL", body = LeaseGrant),
        (status = 422, description = "Malformed JSON, or a TTL out of range", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LeaseGrant>, Error> {
    let request: LeaseGrantRequest = json_body(body)?;
    check_ttl(request.ttl)?;
    Ok(Json(state.db(state.store.lease_grant(request.ttl)).await?))
}

/// Keep a lease alive: its deadline is set a full TTL ahead again.
#[utoipa::path(
    post, path = "/api/leases/{id}/keepalive", tag = "leases",
    params(("id" = i64, Path, minimum = 1, description = "The lease id")),
    responses(
        (status = 200, description = "Kept alive: its id and full TTL", body = LeaseGrant),
        (status = 400, description = "Not a lease id", body = ErrorBody),
        (status = 404, description = "The lease has expired, was revoked or never existed", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn keepalive(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaseGrant>, Error> {
    let id = lease_id(&id)?;
    match state.db(state.keepalives.renew(id)).await? {
        Some(grant) => Ok(Json(grant)),
        None => Err(Error::LeaseNotFound(id)),
    }
}

/// A lease: its TTL, the time it has left and its keys.
#[utoipa::path(
    get, path = "/api/leases/{id}", tag = "leases",
    params(("id" = i64, Path, minimum = 1, description = "The lease id")),
    responses(
        (status = 200, description = "The lease", body = LeaseInfo),
        (status = 400, description = "Not a lease id", body = ErrorBody),
        (status = 404, description = "The lease has expired, was revoked or never existed", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaseInfo>, Error> {
    let id = lease_id(&id)?;
    match state.db(state.store.lease(id)).await? {
        Some(info) => Ok(Json(info)),
        None => Err(Error::LeaseNotFound(id)),
    }
}

/// Every live lease, soonest to expire first.
#[utoipa::path(
    get, path = "/api/leases", tag = "leases",
    responses(
        (status = 200, description = "The live leases, without their keys", body = LeaseListResponse),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<LeaseListResponse>, Error> {
    let leases = state.db(state.store.leases()).await?;
    Ok(Json(LeaseListResponse { leases }))
}

/// Revoke a lease: its keys are deleted at once, each with a revision and a delete event
/// marked `"reason": "revoked"`.
#[utoipa::path(
    delete, path = "/api/leases/{id}", tag = "leases",
    params(("id" = i64, Path, minimum = 1, description = "The lease id")),
    responses(
        (status = 200, description = "Revoked", body = LeaseRevokeResponse),
        (status = 400, description = "Not a lease id", body = ErrorBody),
        (status = 404, description = "The lease has expired, was revoked or never existed", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaseRevokeResponse>, Error> {
    let id = lease_id(&id)?;
    let Some(changes) = state
        .db(state.writer.end_leases(LeaseEnd::Revoke(id)))
        .await?
    else {
        return Err(Error::LeaseNotFound(id));
    };
    let revision = match changes.last() {
        Some(change) => change.revision,
        None => state.db(state.store.current_revision()).await?,
    };
    Ok(Json(LeaseRevokeResponse {
        deleted: changes.len() as u64,
        revision,
    }))
}
