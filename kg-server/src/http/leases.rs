//! The lease routes: grant, keep-alive, look up, list and revoke, as etcd's lease API in plain
//! JSON. Expiry itself is the node's sweeper (`startup::sweep_leases`), not a route.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kg_api::{
    ErrorBody, LeaseGrant, LeaseGrantRequest, LeaseInfo, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseListResponse, LeaseRevokeResponse,
};

use std::collections::HashMap;

use super::input::{check_ttl, json_body};
use super::Error;
use crate::startup::AppState;
use crate::store::LeaseEnd;

/// The most lease ids one keep-alive request may carry: one renewal statement's worth.
pub const MAX_KEEPALIVE_IDS: usize = crate::keepalive::MAX_BATCH;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/leases", post(grant).get(list))
        .route("/api/leases/{id}", get(show).delete(revoke))
        .route("/api/leases/{id}/keepalive", post(keepalive))
        .route("/api/leases/keepalive", post(keepalive_many))
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
    let request: LeaseGrantRequest = json_body(body, state.body_limit())?;
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

/// Keep many leases alive in one request: each deadline is set a full TTL ahead again.
///
/// One statement renews them all, so a client holding thousands of leases (a fleet's
/// sessions behind one proxy, say) costs the node one request per batch rather than one per
/// lease, as etcd's clients keep every lease alive over one stream.
#[utoipa::path(
    post, path = "/api/leases/keepalive", tag = "leases",
    request_body = LeaseKeepAliveRequest,
    responses(
        (status = 200, description = "The leases kept alive, and the ids that were not", body = LeaseKeepAliveResponse),
        (status = 422, description = "Malformed JSON, or no ids or more than 1,024", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn keepalive_many(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LeaseKeepAliveResponse>, Error> {
    let request: LeaseKeepAliveRequest = json_body(body, state.body_limit())?;
    if request.ids.is_empty() || request.ids.len() > MAX_KEEPALIVE_IDS {
        return Err(Error::Unprocessable(format!(
            "ids must hold 1 to {MAX_KEEPALIVE_IDS} lease ids, not {}",
            request.ids.len()
        )));
    }
    // No id below 1 was ever granted: it is answered as expired without asking the database.
    let mut asked: Vec<i64> = request.ids.iter().copied().filter(|id| *id >= 1).collect();
    asked.sort_unstable();
    asked.dedup();
    let renewed: HashMap<i64, LeaseGrant> = if asked.is_empty() {
        HashMap::new()
    } else {
        let grants = state.db(state.store.lease_keepalive(&asked)).await?;
        grants.into_iter().map(|grant| (grant.id, grant)).collect()
    };
    let (mut leases, mut expired) = (Vec::new(), Vec::new());
    for id in request.ids {
        match renewed.get(&id) {
            Some(grant) => leases.push(*grant),
            None => expired.push(id),
        }
    }
    Ok(Json(LeaseKeepAliveResponse { leases, expired }))
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
