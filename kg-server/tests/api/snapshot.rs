//! `GET /api/snapshot`: every live key at one revision while writes go on, the limit on
//! snapshots at once, and bad input.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kg_api::{Attach, KeyRecord, Precondition, HEADER_REVISION};
use reqwest::StatusCode;

use kg_testkit::{spawn_app, Backend};

on_both_backends!(
    a_snapshot_shows_every_live_key_as_of_its_revision_while_writes_go_on,
    a_node_streams_two_snapshots_at_once_and_refuses_a_third_with_429,
    a_snapshot_takes_no_query_parameters,
);

/// Enough bytes that the node cannot have read its last pages (into its queue, the socket
/// buffers and the client's) before the test's writes to the last keys commit: those pages
/// are read after them.
const VALUE_BYTES: usize = 2 * 1024;
const KEYS: usize = 12_000;
/// The keys, at the end of the order, that change while the snapshot is read.
const CHANGED: usize = 600;

fn value(tag: &str, i: usize) -> String {
    let head = format!("{tag}-{i}-");
    head.clone() + &"x".repeat(VALUE_BYTES - head.len())
}

/// A record as a snapshot compares it: the time left on a lease moves on between two reads.
fn without_time(mut record: KeyRecord) -> KeyRecord {
    record.ttl_remaining_ms = None;
    record
}

/// Writes the `KEYS` keys, each with a value tagged `tag`.
async fn load(client: &kg_api::Client, tag: &str) {
    futures::stream::iter(0..KEYS)
        .for_each_concurrent(64, |i| async move {
            client
                .put(&format!("k/{i:05}"), &value(tag, i), Precondition::None)
                .await
                .unwrap();
        })
        .await;
}

async fn a_snapshot_shows_every_live_key_as_of_its_revision_while_writes_go_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    load(client, "old").await;
    client.delete("k/00000", Precondition::None).await.unwrap();
    let leased = client
        .put_with(
            "leased",
            "short-lived",
            Precondition::None,
            Attach::Ttl(600),
        )
        .await
        .unwrap();
    let before: Vec<KeyRecord> = client
        .list_all(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(without_time)
        .collect();
    assert_eq!(before.len(), KEYS);

    let mut snapshot = client.snapshot().await.unwrap();
    assert_eq!(snapshot.header.revision, leased.revision);
    assert_eq!(snapshot.header.keys, KEYS as u64);
    let first = snapshot.next().await.unwrap().unwrap();
    // The last keys change, and new ones appear, after the snapshot began.
    client
        .put("k/00000", "back", Precondition::None)
        .await
        .unwrap();
    futures::stream::iter(KEYS - CHANGED..KEYS)
        .for_each_concurrent(16, |i| async move {
            let key = format!("k/{i:05}");
            if i % 3 == 0 {
                client.delete(&key, Precondition::None).await.unwrap();
            } else {
                client
                    .put(&key, &value("new", i), Precondition::None)
                    .await
                    .unwrap();
            }
        })
        .await;
    client
        .put("z-new-key", "v", Precondition::None)
        .await
        .unwrap();
    client
        .put("leased", "rewritten", Precondition::None)
        .await
        .unwrap();

    let mut seen = vec![without_time(first)];
    while let Some(record) = snapshot.next().await.unwrap() {
        assert!(
            record.mod_revision <= snapshot.header.revision,
            "{} at {} is newer than the snapshot",
            record.key,
            record.mod_revision
        );
        seen.push(without_time(record));
    }
    assert_eq!(seen, before, "the snapshot is the store as of its revision");
    let leased_line = seen.iter().find(|record| record.key == "leased").unwrap();
    assert!(leased_line.lease.is_some(), "a leased key keeps its lease");
    // The store went on: the snapshot's transaction held nothing up.
    assert_eq!(client.get("z-new-key").await.unwrap().value, "v");
}

async fn a_node_streams_two_snapshots_at_once_and_refuses_a_third_with_429(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    load(client, "v").await;
    // Two clients that read the header and then stop reading: their snapshots stay open.
    let first = client.snapshot().await.unwrap();
    let second = client.snapshot().await.unwrap();
    let refused = app
        .http
        .get(format!("{}/api/snapshot", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("already streaming 2 snapshots"),
        "{body}"
    );
    // A client that goes away gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match client.snapshot().await {
            Ok(stream) => break stream,
            Err(err) if Instant::now() < deadline => {
                assert!(err.to_string().contains("429"), "{err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("a snapshot slot was never given back: {err}"),
        }
    };
    assert_eq!(third.header.keys, KEYS as u64);
    drop(second);
}

async fn a_snapshot_takes_no_query_parameters(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client.put("k", "v", Precondition::None).await.unwrap();
    let response = app
        .http
        .get(format!("{}/api/snapshot?prefix=k", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("prefix"),
        "{body}"
    );

    let response = app
        .http
        .get(format!("{}/api/snapshot", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "JSON lines"
    );
    let revision = response.headers()[HEADER_REVISION]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["format"], "keygrid-snapshot");
    assert_eq!(lines[0]["revision"].to_string(), revision);
    assert_eq!(lines[1]["key"], "k");
    assert_eq!(lines[1]["value"], "v");
    assert_eq!(lines[2], serde_json::json!({"end": 1}));
}
