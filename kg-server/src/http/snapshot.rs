//! `GET /api/snapshot`: every live key at one revision, streamed as JSON lines, for backups
//! (`kg snapshot save`) and for moving a store (`kg snapshot restore`).
//!
//! The keys are read page by page inside one transaction that sees a single point in time,
//! and each page is sent before the next is read, a chunk of at most about a MiB at a time,
//! so a node's memory holds a page (at most `MAX_PAGE_BYTES` of values, plus one) and a few
//! chunks, whatever the number of keys and their size. The last line says how many keys were sent: a stream cut
//! short (the client, the node or the database failed mid-way) has no such line, and a reader
//! must refuse it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kg_api::{
    ErrorBody, KeyRecord, SnapshotEnd, SnapshotHeader, HEADER_REVISION, SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::input::QueryParams;
use super::Error;
use crate::startup::AppState;
use crate::store::Snapshot;

/// Keys per page; a page of large values ends early (see `Snapshot::page`).
const PAGE: u32 = 128;
/// The most bytes sent as one chunk (but a single key larger than this, as a chunk of its
/// own): a page's lines go out as they are written, rather than all at once, so the node holds
/// a page's values and little more.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Pages serialised ahead of the client.
const PAGES_AHEAD: usize = 2;
/// How long a client may stop reading before the snapshot is abandoned: an open snapshot
/// holds a database session and, on PostgreSQL, keeps old row versions from being vacuumed.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/snapshot", get(snapshot))
}

type Chunk = Result<Bytes, std::io::Error>;

/// Every live key at one revision.
#[utoipa::path(
    get, path = "/api/snapshot", tag = "keys",
    responses(
        (status = 200, description = "`application/x-ndjson`: a SnapshotHeader line, one KeyRecord line (with its value) per live key in byte order, all as of the header's revision, then a SnapshotEnd line. A stream without the end line was cut short. `X-KeyGrid-Revision` is the snapshot's revision.", content_type = "application/x-ndjson", body = SnapshotHeader),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorBody),
        (status = 429, description = "This node is already streaming as many snapshots as it allows", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn snapshot(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    QueryParams::parse(query.as_deref(), &[])?;
    let permit = state.snapshots.clone().try_acquire_owned().map_err(|_| {
        Error::TooManyRequests(format!(
            "this node is already streaming {} snapshots; retry when one has finished",
            crate::startup::MAX_SNAPSHOTS
        ))
    })?;
    let snapshot = state.db(state.store.snapshot()).await?;
    let revision = snapshot.revision();
    let header_line = SnapshotHeader {
        format: SNAPSHOT_FORMAT.to_owned(),
        version: SNAPSHOT_VERSION,
        revision,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        keys: snapshot.keys(),
    };
    let (chunks, body) = mpsc::channel::<Chunk>(PAGES_AHEAD);
    let db_timeout = state.db_timeout;
    tokio::spawn(async move {
        if let Err(why) = stream(snapshot, header_line, &chunks, db_timeout).await {
            tracing::warn!(revision, "snapshot abandoned: {why}");
            // The client sees the body end in an error, and the stream has no end line.
            let _ = chunks.try_send(Err(std::io::Error::other(why)));
        }
        drop(permit);
    });
    let mut response = Body::from_stream(ReceiverStream::new(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(HEADER_REVISION, HeaderValue::from(revision));
    Ok(response)
}

/// Sends the header, every page and the end line; an error says why it stopped.
async fn stream(
    mut snapshot: Box<dyn Snapshot>,
    header: SnapshotHeader,
    chunks: &mpsc::Sender<Chunk>,
    db_timeout: Duration,
) -> Result<(), String> {
    send(chunks, line(&header)).await?;
    let mut after: Option<String> = None;
    let mut sent = 0_u64;
    loop {
        let page = tokio::time::timeout(db_timeout, snapshot.page(after.as_deref(), PAGE))
            .await
            .map_err(|_| "a page took longer than --db-timeout".to_owned())?
            .map_err(|err| err.to_string())?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.key.clone());
        sent += page.len() as u64;
        let mut chunk = Vec::new();
        for record in &page {
            chunk.extend_from_slice(&line::<KeyRecord>(record));
            if chunk.len() >= CHUNK_BYTES {
                send(chunks, std::mem::take(&mut chunk)).await?;
            }
        }
        if !chunk.is_empty() {
            send(chunks, chunk).await?;
        }
    }
    tokio::time::timeout(db_timeout, snapshot.finish())
        .await
        .map_err(|_| "confirming the primary took longer than --db-timeout".to_owned())?
        .map_err(|err| err.to_string())?;
    send(chunks, line(&SnapshotEnd { end: sent })).await
}

fn line<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

async fn send(chunks: &mpsc::Sender<Chunk>, bytes: Vec<u8>) -> Result<(), String> {
    match tokio::time::timeout(STALLED_CLIENT, chunks.send(Ok(Bytes::from(bytes)))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the client went away".to_owned()),
        Err(_) => Err(format!(
            "the client read nothing for {} s",
            STALLED_CLIENT.as_secs()
        )),
    }
}
