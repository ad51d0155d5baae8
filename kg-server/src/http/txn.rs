//! `POST /api/txn`: etcd's If/Then/Else transaction in plain JSON. The request is checked whole
//! here, so that every refusal comes before anything is written; the writer runs it.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use kg_api::{
    CompareOp, CompareTarget, CompareValue, ErrorBody, TxnOp, TxnRequest, TxnResponse,
    HEADER_IDEMPOTENT_REPLAYED, HEADER_REVISION, MAX_PAGE_BYTES, MAX_TXN_OPS,
};

use super::input::{self, check_key, json_body};
use super::Error;
use crate::startup::AppState;
use crate::store::{TxnOutcome, TxnPlan, MAX_PREFIX_DELETE};

const X_REVISION: HeaderName = HeaderName::from_static(HEADER_REVISION);
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static(HEADER_IDEMPOTENT_REPLAYED);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/txn", post(txn))
}

/// Run a transaction: compares, then one branch of ops, atomically at one revision.
#[utoipa::path(
    post, path = "/api/txn", tag = "keys",
    request_body = TxnRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this transaction: a retry with the same key, on any node, gets the first attempt's answer with Idempotent-Replayed: true and applies nothing"),
    ),
    responses(
        (status = 200, description = "The compares were evaluated and one branch applied: its writes share one revision, and watchers get them together in key order", body = TxnResponse, headers(
            ("X-KeyGrid-Revision" = i64, description = "The revision of the writes, or the current one when the branch changed nothing"),
        )),
        (status = 400, description = "A malformed Idempotency-Key, prefix deletes that would remove more than 10,000 keys, or gets that would read more than 16 MiB of values together", body = ErrorBody),
        (status = 404, description = "A put named a lease that does not exist or has expired", body = ErrorBody),
        (status = 413, description = "A value, or the values together, larger than the node's value limit", body = ErrorBody),
        (status = 422, description = "Malformed JSON, an unknown op or field, an invalid key, a compare whose value does not fit its target, more than 128 compares or ops in a branch, two writes to one key in a branch, or an Idempotency-Key used for a different request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn txn(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let request: TxnRequest = json_body(body, state.body_limit())?;
    check(&request, state.max_value_bytes)?;
    let idempotency_key = input::idempotency_key(&headers)?;
    let plan = TxnPlan {
        request,
        idempotency_key,
    };
    match state.txn(plan).await? {
        TxnOutcome::Done {
            response, replayed, ..
        } => {
            let mut answer = (
                [(X_REVISION, HeaderValue::from(response.revision))],
                Json(response),
            )
                .into_response();
            if replayed {
                answer
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            Ok(answer)
        }
        TxnOutcome::LeaseNotFound(lease) => Err(Error::LeaseNotFound(lease)),
        TxnOutcome::TooMany(keys) => Err(Error::BadRequest(format!(
            "the branch's prefix deletes would remove {keys} keys; one transaction removes at \
             most {MAX_PREFIX_DELETE}"
        ))),
        TxnOutcome::TooLarge(bytes) => Err(Error::BadRequest(format!(
            "the branch's gets would read {bytes} bytes of values; one answer carries at most \
             {MAX_PAGE_BYTES} (16 MiB): read the keys in several transactions, or page through \
             GET /api/keys"
        ))),
        TxnOutcome::IdempotencyMismatch => Err(super::keys::idempotency_mismatch()),
    }
}

/// Everything that can be refused without the database: limits, keys, operands, and two
/// writes to one key in a branch (one revision holds one change per key, as in etcd).
fn check(request: &TxnRequest, max_value_bytes: usize) -> Result<(), Error> {
    let unprocessable = |detail: String| Err(Error::Unprocessable(detail));
    for (name, len) in [
        ("compare", request.compare.len()),
        ("success", request.success.len()),
        ("failure", request.failure.len()),
    ] {
        if len > MAX_TXN_OPS {
            return unprocessable(format!(
                "{name} has {len} entries; the limit is {MAX_TXN_OPS}"
            ));
        }
    }
    for (at, compare) in request.compare.iter().enumerate() {
        check_key(&compare.key)
            .map_err(|why| Error::Unprocessable(format!("compare[{at}]: {why}")))?;
        let fits = matches!(
            (compare.target, &compare.value),
            (CompareTarget::Value, CompareValue::Text(_))
                | (
                    CompareTarget::Revision
                        | CompareTarget::CreateRevision
                        | CompareTarget::Version,
                    CompareValue::Integer(_)
                )
                | (CompareTarget::Exists, CompareValue::Bool(_))
        );
        if !fits {
            return unprocessable(format!(
                "compare[{at}]: target {} takes {}",
                compare.target.as_str(),
                match compare.target {
                    CompareTarget::Value => "a string value",
                    CompareTarget::Exists => "a boolean value",
                    _ => "an integer value",
                }
            ));
        }
        if compare.target == CompareTarget::Exists
            && matches!(compare.op, CompareOp::Less | CompareOp::Greater)
        {
            return unprocessable(format!("compare[{at}]: target exists takes only == and !="));
        }
    }
    let mut total = 0usize;
    for (name, ops) in [("success", &request.success), ("failure", &request.failure)] {
        let mut written = BTreeSet::new();
        let mut prefixes = Vec::new();
        for (at, op) in ops.iter().enumerate() {
            let place = |why: String| Error::Unprocessable(format!("{name}[{at}]: {why}"));
            match op {
                TxnOp::Put { key, value, lease } => {
                    check_key(key).map_err(place)?;
                    if let Some(lease) = lease.filter(|lease| *lease < 1) {
                        return Err(place(format!(
                            "lease must be a lease id (1 or more), not {lease}"
                        )));
                    }
                    if value.len() > max_value_bytes {
                        return Err(Error::PayloadTooLarge(format!(
                            "{name}[{at}]: value is {} bytes; the limit is {max_value_bytes}",
                            value.len()
                        )));
                    }
                    total += value.len();
                    if !written.insert(key.as_str()) {
                        return Err(place(format!("{key:?} is written twice in {name}")));
                    }
                }
                TxnOp::Delete { key } => {
                    check_key(key).map_err(place)?;
                    if !written.insert(key.as_str()) {
                        return Err(place(format!("{key:?} is written twice in {name}")));
                    }
                }
                TxnOp::DeletePrefix { prefix } => {
                    check_key(prefix).map_err(|why| place(why.replace("key", "prefix")))?;
                    prefixes.push(prefix.as_str());
                }
                TxnOp::Get { key } => check_key(key).map_err(place)?,
            }
        }
        if let Some((key, prefix)) = written.iter().find_map(|key| {
            prefixes
                .iter()
                .find(|prefix| key.starts_with(**prefix))
                .map(|prefix| (key, prefix))
        }) {
            return unprocessable(format!(
                "{key:?} is written in {name} and also deleted by its prefix delete {prefix:?}"
            ));
        }
    }
    if total > max_value_bytes {
        return Err(Error::PayloadTooLarge(format!(
            "the values come to {total} bytes; one transaction carries at most {max_value_bytes}"
        )));
    }
    Ok(())
}
