//! The lease routes: grant, keep-alive, look up, list and revoke, as etcd's lease API in plain
//! JSON. Expiry itself is the node's sweeper (`startup::sweep_leases`), not a route.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kg_api::{
    ErrorBody, LeaseGrant, LeaseGrantRequest, LeaseInfo, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseListResponse, LeaseRevokeResponse,
};

use std::collections::HashMap;

use super::input::{check_ttl, idempotency_key, json_body};
use super::keys::{idempotency_mismatch, replay_marked};
use super::Error;
use crate::startup::AppState;
use crate::store::{Ended, Granted, Idempotent, LeaseEnd, Replay};

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
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this grant: a retry with the same key, on any node, gets the same lease with Idempotent-Replayed: true, not a second one"),
    ),
    responses(
        (status = 200, description = "Granted: its id and TTL", body = LeaseGrant),
        (status = 400, description = "A malformed Idempotency-Key", body = ErrorBody),
        (status = 422, description = "Malformed JSON, a TTL out of range, or an Idempotency-Key used for a different request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let request: LeaseGrantRequest = json_body(body, state.body_limit())?;
    check_ttl(request.ttl)?;
    let idempotent = idempotency_key(&headers)?
        .map(|key| Idempotent::new(key, "lease-grant", &request.ttl.to_be_bytes()));
    match state
        .db(state.store.lease_grant(request.ttl, idempotent.as_ref()))
        .await?
    {
        Granted::New(grant) => Ok(Json(grant).into_response()),
        Granted::Replayed(Replay::Same(grant)) => Ok(replay_marked(Json(grant).into_response())),
        Granted::Replayed(Replay::Mismatch) => Err(idempotency_mismatch()),
    }
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
    params(
        ("id" = i64, Path, minimum = 1, description = "The lease id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this revoke: a retry with the same key, on any node, gets the first attempt's answer with Idempotent-Replayed: true, not a 404 for the lease it ended"),
    ),
    responses(
        (status = 200, description = "Revoked", body = LeaseRevokeResponse),
        (status = 400, description = "Not a lease id, or a malformed Idempotency-Key", body = ErrorBody),
        (status = 404, description = "The lease has expired, was revoked or never existed", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was already used for a different request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let id = lease_id(&id)?;
    let idempotent = idempotency_key(&headers)?
        .map(|key| Idempotent::new(key, "lease-revoke", &id.to_be_bytes()));
    match state
        .db(state.writer.end_leases(LeaseEnd::Revoke(id), idempotent))
        .await?
    {
        Ended::Deleted { changes, revision } => Ok(Json(LeaseRevokeResponse {
            deleted: changes.len() as u64,
            revision,
        })
        .into_response()),
        Ended::NotFound => Err(Error::LeaseNotFound(id)),
        Ended::Replayed(Replay::Same(answer)) => Ok(replay_marked(Json(answer).into_response())),
        Ended::Replayed(Replay::Mismatch) => Err(idempotency_mismatch()),
    }
}
