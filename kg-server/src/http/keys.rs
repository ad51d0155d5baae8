//! The key routes: the seed's `GET`/`PUT`/`DELETE /api/key`, `GET /api/keys` listing and
//! `DELETE /api/keys` prefix deletes.
//!
//! Bodies stay byte-compatible with the seed; revision metadata travels in headers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::header::{ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kg_api::{
    DeletePrefixResponse, ErrorBody, GetResponse, KeyCountResponse, KeyListResponse, KeyRecord,
    PutRequest, SuccessResponse, ValueData, DEFAULT_PAGE_SIZE, HEADER_CACHE,
    HEADER_CREATE_REVISION, HEADER_IDEMPOTENT_REPLAYED, HEADER_LEASE, HEADER_REVISION,
    HEADER_TTL_REMAINING_MS, HEADER_VERSION, MAX_PAGE_BYTES, MAX_PAGE_SIZE,
};

use super::history;
use super::input::{self, check_key, json_body, precondition, KeyParam, QueryParams};
use super::Error;
use crate::cache::{CacheEntry, EntryRef, Lookup};
use crate::startup::AppState;
use crate::store::{
    Expect, Granted, Idempotent, LeaseEnd, ListQuery, OpResult, PrefixDelete, Replay, WriteOp,
    WriteOutcome, MAX_PREFIX_DELETE,
};

// Validated once, at compile time: `from_static` checks its name on every call.
const X_CACHE: HeaderName = HeaderName::from_static(HEADER_CACHE);
const X_REVISION: HeaderName = HeaderName::from_static(HEADER_REVISION);
const X_CREATE_REVISION: HeaderName = HeaderName::from_static(HEADER_CREATE_REVISION);
const X_VERSION: HeaderName = HeaderName::from_static(HEADER_VERSION);
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static(HEADER_IDEMPOTENT_REPLAYED);
const X_LEASE: HeaderName = HeaderName::from_static(HEADER_LEASE);
const X_TTL_REMAINING_MS: HeaderName = HeaderName::from_static(HEADER_TTL_REMAINING_MS);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/key", get(get_key).put(put_key).delete(delete_key))
        .route("/api/keys", get(list_keys).delete(delete_keys))
}

/// Read a key.
#[utoipa::path(
    get, path = "/api/key", tag = "keys",
    params(
        ("key" = String, Query, min_length = 1, max_length = 512, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "The key: 1 to 512 characters, no control characters"),
        ("revision" = Option<i64>, Query, nullable = false, minimum = 1, description = "Read the key as it was at this revision (at or above the compact revision, at most the current one) instead of now. Such a read skips the cache"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|"[0-9]{1,18}")$"#, description = "\"<revision>\": answer only if the key's mod_revision is this, else 412; *: only if the key exists"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "\"<revision>\" (or a comma-separated list): 304 if the key is at one of them; *: 304 if the key exists"),
    ),
    responses(
        (status = 200, description = "The value", body = GetResponse, headers(
            ("ETag" = String, description = "\"<mod_revision>\""),
            ("X-KeyGrid-Revision" = i64, description = "The key's mod_revision"),
            ("X-KeyGrid-Create-Revision" = i64, description = "The key's create_revision"),
            ("X-KeyGrid-Version" = i64, description = "Writes since the key was created"),
            ("X-Cache" = String, description = "`hit` when answered from the Redis cache, `miss` otherwise"),
            ("X-KeyGrid-Lease" = i64, description = "The key's lease, when it has one"),
            ("X-KeyGrid-TTL-Remaining-Ms" = i64, description = "Milliseconds left on the key's lease, by the database's clock"),
        )),
        (status = 304, description = "If-None-Match named the current revision, or was * and the key exists"),
        (status = 400, description = "Missing or invalid key, a malformed If-Match, or a revision above the current one", body = ErrorBody),
        (status = 404, description = "`{\"detail\":\"Key not found\"}`", body = ErrorBody),
        (status = 410, description = "The revision is below the compact revision: the history it needs has been dropped", body = ErrorBody),
        (status = 412, description = "If-Match did not hold", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_key(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let params = QueryParams::parse(query.as_deref(), &["key", "revision"])?;
    let key = input::query_key(&params)?;
    tracing::Span::current().record("key", key.as_str());
    let revision = params.integer("revision", 1..=i64::MAX)?;
    // A malformed If-Match is a 400 before anything is read.
    let if_match = input::read_if_match(&headers)?;
    let (entry, cache_hit) = match revision {
        // A version of the past never changes, and the cache holds only the present.
        Some(revision) => {
            let found = state.db(state.store.get_at(&key, revision)).await?;
            (entry_of(history::found_at(found, revision)?), false)
        }
        None => read_entry(&state, &key).await?,
    };
    let cache_header = (
        X_CACHE,
        HeaderValue::from_static(if cache_hit { "hit" } else { "miss" }),
    );
    // RFC 9110 (13.2.2): If-Match first (412 unless it holds), then If-None-Match (304 for
    // a GET that names the current revision, or `*` for a key that exists).
    let revision = entry.value.is_some().then_some(entry.revision);
    if let Some(expect) = if_match {
        let holds = match expect {
            Expect::Exists => revision.is_some(),
            Expect::Revision(wanted) => revision == Some(wanted),
            Expect::Any | Expect::Absent => true,
        };
        if !holds {
            return Ok(([cache_header], precondition_failed(expect)).into_response());
        }
    }
    let Some(value) = entry.value else {
        return Ok(([cache_header], Error::KeyNotFound).into_response());
    };
    let mut response_headers =
        revision_headers(entry.revision, entry.create_revision, entry.version)
            .into_iter()
            .collect::<HeaderMap>();
    if let Some((lease, remaining_ms)) = entry.lease {
        response_headers.insert(X_LEASE, HeaderValue::from(lease));
        response_headers.insert(X_TTL_REMAINING_MS, HeaderValue::from(remaining_ms.max(0)));
    }
    let not_modified = headers
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tag| {
            tag.trim() == "*"
                || tag
                    .split(',')
                    .any(|tag| input::parse_etag(tag.trim()) == Some(entry.revision))
        });
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, response_headers, [cache_header]).into_response());
    }
    let body = GetResponse {
        data: ValueData { value },
    };
    Ok((response_headers, [cache_header], Json(body)).into_response())
}

/// The key's state from the cache, or from the database (then filling the cache), and
/// whether it was a cache hit. A missing key is an entry without a value.
async fn read_entry(state: &AppState, key: &str) -> Result<(CacheEntry, bool), Error> {
    let mut miss_epoch = None;
    if let Some(cache) = &state.cache {
        match cache.lookup(key).await {
            Lookup::Hit(entry) => {
                metrics::counter!("kg_cache_requests_total", "result" => "hit").increment(1);
                return Ok((entry, true));
            }
            Lookup::Miss { epoch } => miss_epoch = Some(epoch),
            Lookup::Pending | Lookup::Degraded => {}
        }
        metrics::counter!("kg_cache_requests_total", "result" => "miss").increment(1);
    }
    let entry = entry_of(state.db(state.store.get(key)).await?);
    if let (Some(cache), Some(epoch)) = (&state.cache, miss_epoch) {
        if let Some(delay) = state.cache_fill_delay {
            tokio::time::sleep(delay).await;
        }
        let fill = EntryRef {
            key,
            revision: entry.revision,
            value: entry.value.as_deref(),
            create_revision: entry.create_revision,
            version: entry.version,
            leased: entry.lease.is_some(),
        };
        cache.fill(fill, epoch).await;
    }
    Ok((entry, false))
}

/// A key's state as the cache holds it. A key that does not exist is cached as a revision-0
/// tombstone: any write outranks it.
fn entry_of(record: Option<KeyRecord>) -> CacheEntry {
    match record {
        Some(record) => CacheEntry {
            revision: record.mod_revision,
            value: record.value,
            create_revision: record.create_revision,
            version: record.version,
            lease: record.lease.zip(record.ttl_remaining_ms),
        },
        None => CacheEntry {
            revision: 0,
            value: None,
            create_revision: 0,
            version: 0,
            lease: None,
        },
    }
}

/// `If-None-Match` on a write: only `*` (create only). For the OpenAPI document, where an
/// enum states that exactly (schemathesis's coverage phase ignores a header's pattern).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // only its schema is used
pub enum IfNoneMatchAny {
    #[schema(rename = "*")]
    Any,
}

/// Create or replace a key.
#[utoipa::path(
    put, path = "/api/key", tag = "keys",
    request_body = PutRequest,
    params(
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|"[0-9]{1,18}")$"#, description = "\"<revision>\": write only if the key's mod_revision is this; *: only if the key exists"),
        ("If-None-Match" = Option<IfNoneMatchAny>, Header, nullable = false, description = "*: create only"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this write: a retry with the same key, on any node, gets the first attempt's answer with Idempotent-Replayed: true and applies nothing"),
    ),
    responses(
        (status = 200, description = "Written", body = SuccessResponse, headers(
            ("ETag" = String, description = "\"<revision>\" of this write"),
            ("X-KeyGrid-Revision" = i64, description = "The revision of this write"),
            ("X-KeyGrid-Create-Revision" = i64, description = "The key's create_revision"),
            ("X-KeyGrid-Version" = i64, description = "The key's version after this write"),
        )),
        (status = 400, description = "Malformed precondition header", body = ErrorBody),
        (status = 404, description = "The lease named does not exist or has expired", body = ErrorBody),
        (status = 412, description = "Precondition failed", body = ErrorBody),
        (status = 413, description = "Value or body too large", body = ErrorBody),
        (status = 422, description = "Malformed JSON, wrong types, missing fields, an invalid key, a TTL out of range, or both `lease` and `ttl`", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn put_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let request: PutRequest = json_body(body, state.body_limit())?;
    let PutRequest { data, lease, ttl } = request;
    tracing::Span::current().record("key", data.key.as_str());
    check_key(&data.key).map_err(Error::Unprocessable)?;
    if data.value.len() > state.max_value_bytes {
        return Err(Error::PayloadTooLarge(format!(
            "value is {} bytes; the limit is {}",
            data.value.len(),
            state.max_value_bytes
        )));
    }
    // After the request itself is found valid: a precondition is never the answer to a
    // request that would fail without it (RFC 9110, 13.2.1).
    match (lease, ttl) {
        (Some(_), Some(_)) => {
            return Err(Error::Unprocessable(
                "give `lease` or `ttl`, not both".to_owned(),
            ))
        }
        (Some(id), None) if id < 1 => {
            return Err(Error::Unprocessable(format!(
                "lease must be a lease id (1 or more), not {id}"
            )))
        }
        (None, Some(ttl)) => input::check_ttl(ttl)?,
        _ => {}
    }
    let idempotency_key = input::idempotency_key(&headers)?;
    let expect = precondition(&headers, true)?;
    // A TTL of the key's own is a lease granted for it now; if the put does not apply, the
    // lease, which holds no key, is revoked again.
    let granted = match ttl {
        Some(ttl) => match state.db(state.store.lease_grant(ttl, None)).await? {
            Granted::New(grant) => Some(grant.id),
            Granted::Replayed(_) => {
                return Err(Error::Internal(anyhow::anyhow!(
                    "store replayed a grant that had no idempotency key"
                )))
            }
        },
        None => None,
    };
    let op = WriteOp {
        key: data.key,
        value: Some(data.value),
        expect,
        idempotency_key,
        lease: granted.or(lease),
        ttl,
    };
    let result = state.write(op).await;
    if let Some(id) = granted {
        if !matches!(
            &result,
            Ok(OpResult {
                outcome: WriteOutcome::Applied { .. },
                replayed: false
            })
        ) {
            let _ = state
                .db(state.writer.end_leases(LeaseEnd::Revoke(id), None))
                .await;
        }
    }
    let result = result?;
    let response = match result.outcome {
        WriteOutcome::Applied {
            revision,
            create_revision,
            version,
        } => (
            revision_headers(revision, create_revision, version),
            Json(SuccessResponse::success()),
        )
            .into_response(),
        WriteOutcome::PreconditionFailed => precondition_failed(expect).into_response(),
        WriteOutcome::IdempotencyMismatch => idempotency_mismatch().into_response(),
        WriteOutcome::LeaseNotFound => {
            Error::LeaseNotFound(lease.unwrap_or_default()).into_response()
        }
        WriteOutcome::NotFound => {
            return Err(Error::Internal(anyhow::anyhow!(
                "store reported not-found for a put"
            )))
        }
    };
    Ok(mark_replayed(response, result))
}

/// Delete a key.
#[utoipa::path(
    delete, path = "/api/key", tag = "keys",
    params(
        ("key" = String, Query, min_length = 1, max_length = 512, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "The key"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|"[0-9]{1,18}")$"#, description = "\"<revision>\": delete only if the key's mod_revision is this; *: only if the key exists"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this delete: a retry with the same key gets the first attempt's answer with Idempotent-Replayed: true"),
    ),
    responses(
        (status = 200, description = "Deleted", body = SuccessResponse, headers(
            ("X-KeyGrid-Revision" = i64, description = "The revision of this delete"),
        )),
        (status = 400, description = "Missing or invalid key, or a malformed precondition", body = ErrorBody),
        (status = 404, description = "`{\"detail\":\"Key not found\"}`", body = ErrorBody),
        (status = 412, description = "Precondition failed", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was already used for a different request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_key(
    State(state): State<AppState>,
    KeyParam(key): KeyParam,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let idempotency_key = input::idempotency_key(&headers)?;
    let expect = precondition(&headers, false)?;
    let op = WriteOp {
        key,
        value: None,
        expect,
        idempotency_key,
        lease: None,
        ttl: None,
    };
    let result = state.write(op).await?;
    let response = match result.outcome {
        WriteOutcome::Applied { revision, .. } => (
            [(X_REVISION, HeaderValue::from(revision))],
            Json(SuccessResponse::success()),
        )
            .into_response(),
        WriteOutcome::NotFound => Error::KeyNotFound.into_response(),
        WriteOutcome::PreconditionFailed => precondition_failed(expect).into_response(),
        WriteOutcome::IdempotencyMismatch => idempotency_mismatch().into_response(),
        WriteOutcome::LeaseNotFound => {
            return Err(Error::Internal(anyhow::anyhow!(
                "store reported a missing lease for a delete"
            )))
        }
    };
    Ok(mark_replayed(response, result))
}

/// Delete every live key under a prefix, at one revision.
#[utoipa::path(
    delete, path = "/api/keys", tag = "keys",
    params(
        ("prefix" = Option<String>, Query, nullable = false, min_length = 1, max_length = 512, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "Delete every live key starting with this. Required unless `all=true` is sent, which deletes every key (OpenAPI cannot say \"one or the other\"; the node answers 400 to neither)"),
        ("all" = Option<bool>, Query, nullable = false, description = "Allow an empty or missing prefix, which deletes every key; with a prefix it changes nothing"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r#"^[!-~]{1,255}$"#, description = "Names this delete: a retry with the same key, on any node, gets the first attempt's answer with Idempotent-Replayed: true and deletes nothing"),
    ),
    responses(
        (status = 200, description = "Deleted, at one revision with one delete event per key. With nothing to delete no revision is used and `revision` is the current one", body = DeletePrefixResponse, headers(
            ("X-KeyGrid-Revision" = i64, description = "The revision of the deletes, or the current one"),
        )),
        (status = 400, description = "An empty prefix without `all=true`, an unknown parameter, a malformed Idempotency-Key, or more live keys under the prefix than one delete may remove (10,000)", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was already used for a different request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_keys(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let params = QueryParams::parse(query.as_deref(), &["prefix", "all"])?;
    let prefix = params.key_part("prefix")?.unwrap_or_default();
    let all = params.flag("all")?;
    if prefix.is_empty() && !all {
        return Err(Error::BadRequest(
            "give a prefix (DELETE /api/keys?prefix=P deletes every key under P), \
             or all=true to delete every key"
                .to_owned(),
        ));
    }
    let idempotent = input::idempotency_key(&headers)?
        .map(|key| Idempotent::new(key, "delete-prefix", prefix.as_bytes()))
        // Issue 47 item 5, planted back: the retry deletes again.
        .filter(|_| !crate::planted::active("prefix-delete-ignores-idempotency-key"));
    let (answer, replayed) = match state.delete_prefix(prefix.to_owned(), idempotent).await? {
        PrefixDelete::Deleted { changes, .. } => (
            DeletePrefixResponse::new(
                changes.len() as u64,
                changes.first().map_or(0, |change| change.revision),
            ),
            false,
        ),
        PrefixDelete::Nothing { revision } => (DeletePrefixResponse::new(0, revision), false),
        PrefixDelete::Replayed(Replay::Same(answer)) => (answer, true),
        PrefixDelete::Replayed(Replay::Mismatch) => return Err(idempotency_mismatch()),
        PrefixDelete::TooMany(live) => {
            return Err(Error::BadRequest(format!(
                "{live} live keys start with {prefix:?}; one delete removes at most \
                 {MAX_PREFIX_DELETE}: delete longer prefixes one at a time"
            )))
        }
    };
    let response = (
        [(X_REVISION, HeaderValue::from(answer.revision))],
        Json(answer),
    )
        .into_response();
    Ok(if replayed {
        replay_marked(response)
    } else {
        response
    })
}

/// What `GET /api/keys` answers: a page, or with `count_only` a count. For the OpenAPI
/// document only (a `oneOf`); the handler writes either type itself.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
pub enum KeyPageOrCount {
    Page(KeyListResponse),
    Count(KeyCountResponse),
}

/// List live keys in byte order, one page at a time, or count them.
#[utoipa::path(
    get, path = "/api/keys", tag = "keys",
    params(
        ("prefix" = Option<String>, Query, nullable = false, max_length = 512, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "Only keys starting with this"),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000 (default 100). A page ends early, with `next` set, where its body would pass 16 MiB: follow `next` until it is null"),
        ("after" = Option<String>, Query, nullable = false, max_length = 512, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", description = "Start after this key: the previous page's `next`"),
        ("keys_only" = Option<bool>, Query, nullable = false, description = "Leave the values out: each key with its revisions only"),
        ("count_only" = Option<bool>, Query, nullable = false, description = "Answer `{\"count\": N}`, the number of live keys under the prefix (and after `after`), instead of a page; `limit` and `keys_only` do not apply"),
        ("revision" = Option<i64>, Query, nullable = false, minimum = 1, description = "List (or count) the keys as they were at this revision (at or above the compact revision, at most the current one). Pass the same revision with every page for one consistent listing"),
    ),
    responses(
        (status = 200, description = "One page of keys, or with `count_only` their number", body = KeyPageOrCount),
        (status = 400, description = "Bad or unknown query parameter, or a revision above the current one", body = ErrorBody),
        (status = 410, description = "The revision is below the compact revision: the history it needs has been dropped", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_keys(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let params = QueryParams::parse(
        query.as_deref(),
        &[
            "prefix",
            "limit",
            "after",
            "keys_only",
            "count_only",
            "revision",
        ],
    )?;
    let prefix = params.key_part("prefix")?.unwrap_or_default();
    let after = params.key_part("after")?;
    let limit = params.integer("limit", 1..=MAX_PAGE_SIZE)?;
    let keys_only = params.flag("keys_only")?;
    let revision = params.integer("revision", 1..=i64::MAX)?;
    if params.flag("count_only")? {
        // As etcd's count_only: the whole range (prefix, after) is counted; a page size and
        // keys_only have nothing to act on.
        let count = match revision {
            Some(revision) => history::found_at(
                state
                    .db(state.store.count_at(prefix, after, revision))
                    .await?,
                revision,
            )?,
            None => state.db(state.store.count(prefix, after)).await?,
        };
        return Ok(Json(KeyCountResponse { count }).into_response());
    }
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    // One row more than asked tells whether another page follows.
    let page = ListQuery {
        prefix,
        after,
        limit: limit + 1,
        with_values: !keys_only,
        value_bytes: MAX_PAGE_BYTES as u64,
    };
    let mut keys = match revision {
        Some(revision) => history::found_at(
            state.db(state.store.list_at(&page, revision)).await?,
            revision,
        )?,
        None => state.db(state.store.list(&page)).await?,
    };
    // A page ends early where its values come to MAX_PAGE_BYTES: the store read no value past
    // that (the key it left without one marks the place), and the body, in which JSON may
    // escape one byte of value as six, is held to the same bound.
    let mut more = false;
    if !keys_only {
        if let Some(cut) = keys.iter().position(|record| record.value.is_none()) {
            keys.truncate(cut);
            more = true;
        }
    }
    more |= fit_page(&mut keys);
    if keys.len() > limit as usize {
        keys.truncate(limit as usize);
        more = true;
    }
    let next = more
        .then(|| keys.last().map(|record| record.key.clone()))
        .flatten();
    Ok(Json(KeyListResponse { keys, next }).into_response())
}

/// What a page's body holds besides its items: the braces and names around them, and a
/// `next` of up to the longest key, escaped.
const PAGE_FRAME_BYTES: usize = 4 * 1024;

/// Keeps the first of `items` whose JSON, with a page's frame, comes to at most
/// [`MAX_PAGE_BYTES`] (and the first item whatever its size, so that every page moves on).
/// Returns whether any were dropped.
pub(super) fn fit_page<T: serde::Serialize>(items: &mut Vec<T>) -> bool {
    /// Counts what JSON serialisation writes, without keeping it.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut total = PAGE_FRAME_BYTES;
    for (index, item) in items.iter().enumerate() {
        let mut counter = Counter(1);
        if serde_json::to_writer(&mut counter, item).is_err() {
            continue;
        }
        total += counter.0;
        if index > 0 && total > MAX_PAGE_BYTES {
            items.truncate(index);
            return true;
        }
    }
    false
}

/// ETag and the revision headers, as parts of a response (no map of their own to build).
fn revision_headers(
    revision: i64,
    create_revision: i64,
    version: i64,
) -> [(HeaderName, HeaderValue); 4] {
    let etag = HeaderValue::try_from(input::etag(revision))
        .expect("a quoted integer is a valid header value");
    [
        (ETAG, etag),
        (X_REVISION, HeaderValue::from(revision)),
        (X_CREATE_REVISION, HeaderValue::from(create_revision)),
        (X_VERSION, HeaderValue::from(version)),
    ]
}

pub(super) fn idempotency_mismatch() -> Error {
    Error::Unprocessable(
        "Idempotency-Key was already used for a different request; use a new key for a new write"
            .to_owned(),
    )
}

/// Marks the answer to a retried request, which was not applied again: the first attempt's.
pub(super) fn replay_marked(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Marks the answer to a retried write, which was not applied again. A key reused for another
/// write is refused, not replayed: that answer is not the first attempt's.
fn mark_replayed(mut response: Response, result: OpResult) -> Response {
    if result.replayed && result.outcome != WriteOutcome::IdempotencyMismatch {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

fn precondition_failed(expect: Expect) -> Error {
    Error::PreconditionFailed(match expect {
        Expect::Revision(revision) => {
            format!("precondition failed: the key is not at revision {revision}")
        }
        Expect::Absent => "precondition failed: the key already exists".to_owned(),
        Expect::Exists => "precondition failed: the key does not exist".to_owned(),
        Expect::Any => "precondition failed".to_owned(),
    })
}
