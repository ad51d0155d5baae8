//! History: `GET /api/key/history` lists a key's versions, `POST /api/compact` drops the
//! history below a revision, and [`found_at`] answers every read at a past revision the same
//! way (`GET /api/key` and `GET /api/keys` with `?revision=`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kg_api::{
    CompactRequest, CompactResponse, ErrorBody, EventType, KeyHistoryResponse, KeyVersion,
    DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE,
};

use super::input::{self, json_body, query_key, QueryParams};
use super::Error;
use crate::startup::AppState;
use crate::store::{AtRevision, Change, CompactTo, Idempotent, Replay};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/key/history", get(key_history))
        .route("/api/compact", post(compact))
}

/// What a read at `revision` found, or the refusal that says why it could not be made.
pub fn found_at<T>(found: AtRevision<T>, revision: i64) -> Result<T, Error> {
    match found {
        AtRevision::Found(found) => Ok(found),
        AtRevision::Compacted { floor } => Err(Error::Gone(format!(
            "revision {revision} is compacted: the history below revision {floor} has been \
             dropped; read at revision {floor} or later"
        ))),
        AtRevision::Future { current } => Err(Error::BadRequest(format!(
            "revision {revision} is in the future: the current revision is {current}"
        ))),
    }
}

/// List a key's versions, newest first, deletes included.
#[utoipa::path(
    get, path = "/api/key/history", tag = "keys",
    params(
        ("key" = String, Query, min_length = 1, max_length = 512, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "The key: 1 to 512 characters, no control characters"),
        ("before" = Option<i64>, Query, nullable = false, minimum = 1, description = "Only versions written below this revision: the previous page's `next`"),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000 (default 100). A page ends early, with `next` set, where its body would pass 16 MiB: follow `next` until it is null"),
    ),
    responses(
        (status = 200, description = "One page of versions, newest first. A key that never existed (or whose history was compacted away) has an empty history", body = KeyHistoryResponse),
        (status = 400, description = "Missing or invalid key, or a bad or unknown query parameter", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn key_history(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let params = QueryParams::parse(query.as_deref(), &["key", "before", "limit"])?;
    let key = query_key(&params)?;
    tracing::Span::current().record("key", key.as_str());
    let before = params.integer("before", 1..=i64::MAX)?;
    let limit = params
        .integer("limit", 1..=MAX_PAGE_SIZE)?
        .unwrap_or(DEFAULT_PAGE_SIZE);
    // One version more than asked tells whether another page follows. A page ends early
    // where its values come to MAX_PAGE_BYTES, as a listing's does (`keys::list_keys`).
    let found = state
        .db(state
            .store
            .history(&key, before, limit + 1, MAX_PAGE_BYTES as u64))
        .await?;
    let mut history: Vec<KeyVersion> = found.versions.into_iter().map(version_of).collect();
    let mut more = found.cut;
    more |= super::keys::fit_page(&mut history);
    if history.len() > limit as usize {
        history.truncate(limit as usize);
        more = true;
    }
    let next = more
        .then(|| history.last().map(|version| version.revision))
        .flatten();
    Ok(Json(KeyHistoryResponse {
        key,
        history,
        next,
        compact_revision: found.compact_revision,
    })
    .into_response())
}

fn version_of(change: Change) -> KeyVersion {
    KeyVersion {
        kind: if change.value.is_some() {
            EventType::Put
        } else {
            EventType::Delete
        },
        revision: change.revision,
        create_revision: change.create_revision,
        version: change.version,
        node: change.node,
        at: chrono::DateTime::from_timestamp_millis(change.at_ms).unwrap_or_default(),
        value: change.value,
        lease: change.lease,
        reason: change.reason,
    }
}

/// Drop the history below a revision, as etcd's compact does.
#[utoipa::path(
    post, path = "/api/compact", tag = "keys",
    request_body = CompactRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this compaction: a retry with the same key, on any node, gets the first attempt's answer with Idempotent-Replayed: true"),
    ),
    responses(
        (status = 200, description = "Compacted: reads below `compact_revision` are now answered 410, and watches cannot resume below it. Compacting to a revision already compacted changes nothing", body = CompactResponse),
        (status = 400, description = "A malformed Idempotency-Key", body = ErrorBody),
        (status = 422, description = "Malformed JSON, an unknown field, a negative revision, a revision above the current one, or an Idempotency-Key used for a different request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn compact(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let request: CompactRequest = json_body(body, state.body_limit())?;
    if request.revision < 0 {
        return Err(Error::Unprocessable(format!(
            "revision must not be negative, got {}",
            request.revision
        )));
    }
    let idempotent = input::idempotency_key(&headers)?
        .map(|key| Idempotent::new(key, "compact", &request.revision.to_be_bytes()));
    let compacted = state
        .db(state
            .store
            .compact_to(request.revision, idempotent.as_ref()))
        .await?;
    match compacted {
        CompactTo::Done(done) => Ok(Json(CompactResponse::from(done)).into_response()),
        CompactTo::Replayed(Replay::Same(done)) => Ok(super::keys::replay_marked(
            Json(CompactResponse::from(done)).into_response(),
        )),
        CompactTo::Replayed(Replay::Mismatch) => Err(super::keys::idempotency_mismatch()),
        CompactTo::Future { current } => Err(Error::Unprocessable(format!(
            "revision {} is in the future: the current revision is {current}",
            request.revision
        ))),
    }
}
