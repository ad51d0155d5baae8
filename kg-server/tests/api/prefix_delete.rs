//! `DELETE /api/keys?prefix=P`: every live key under P deleted at one revision, one event per
//! key for watchers on any node, the cache left with the deletes, and bad requests refused
//! with nothing written.

use std::time::Duration;

use futures::StreamExt;
use kg_api::{Attach, ChangeEvent, DeleteReason, EventType, Precondition};

use kg_testkit::{
    spawn_app, spawn_app_on, spawn_app_with, test_redis_url, unique_prefix, AppOptions, Backend,
    TestApp,
};

on_both_backends!(
    a_prefix_delete_removes_every_live_key_under_it_at_one_revision,
    a_replay_of_a_revision_larger_than_a_page_sends_it_whole_and_once,
    a_key_whose_lease_ends_while_a_prefix_delete_waits_is_recorded_as_expired,
);

const WAIT: Duration = Duration::from_secs(5);

async fn next_event(stream: &mut kg_api::WatchStream) -> ChangeEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the wait")
        .expect("the stream is open")
        .expect("a well-formed event")
}

async fn put(app: &TestApp, key: &str, value: &str) -> i64 {
    app.client
        .put(key, value, Precondition::None)
        .await
        .unwrap()
        .revision
}

async fn a_prefix_delete_removes_every_live_key_under_it_at_one_revision(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::with_redis(&test_redis_url(), &unique_prefix()),
    )
    .await;
    put(&app, "p", "not under p/").await;
    put(&app, "p/a", "1").await;
    put(&app, "p/gone", "deleted before").await;
    app.client
        .delete("p/gone", Precondition::None)
        .await
        .unwrap();
    app.client
        .put_with("p/leased", "3", Precondition::None, Attach::Ttl(600))
        .await
        .unwrap();
    put(&app, "p/b", "2").await;
    let before = put(&app, "q/x", "other prefix").await;
    // Read once so the cache holds p/a and p/b: the delete must leave it holding the deletes.
    for key in ["p/a", "p/b"] {
        assert_eq!(
            app.client.get(key).await.unwrap().meta.cache_hit,
            Some(true)
        );
    }
    let mut watch = app.client.watch(None, Some(before)).await.unwrap();

    let deleted = app.client.delete_prefix("p/", false).await.unwrap();
    assert_eq!(
        (deleted.status.as_str(), deleted.deleted, deleted.revision),
        ("success", 3, before + 1),
        "three live keys, one revision; the tombstone of p/gone is not counted"
    );
    let mut events = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut watch).await;
        // Cut here, a reconnect must get this revision again, whole.
        let resume = watch.resume_after();
        events.push((event.key, event.revision, event.kind, event.version, resume));
    }
    let revision = deleted.revision;
    assert_eq!(
        events,
        [
            (
                "p/a".to_owned(),
                revision,
                EventType::Delete,
                0,
                Some(before)
            ),
            (
                "p/b".to_owned(),
                revision,
                EventType::Delete,
                0,
                Some(before)
            ),
            (
                "p/leased".to_owned(),
                revision,
                EventType::Delete,
                0,
                Some(revision)
            ),
        ],
        "one event per key in key order; the SSE id on the last only"
    );

    for key in ["p/a", "p/b", "p/leased"] {
        let read = app.get(&format!("/api/key?key={key}")).await;
        assert_eq!(read.status().as_u16(), 404, "{key} is deleted");
        if key != "p/leased" {
            assert_eq!(
                read.headers()["x-cache"],
                "hit",
                "the cache holds {key}'s delete"
            );
        }
    }
    assert_eq!(app.client.get("p").await.unwrap().value, "not under p/");
    assert_eq!(app.client.get("q/x").await.unwrap().value, "other prefix");
    let listed = app.client.list(Some("p/"), None, None).await.unwrap();
    assert!(listed.keys.is_empty(), "{listed:?}");

    // Nothing left to delete: no revision is used, and the answer names the current one.
    let again = app.client.delete_prefix("p/", false).await.unwrap();
    assert_eq!((again.deleted, again.revision), (0, revision));
    assert_eq!(put(&app, "after", "x").await, revision + 1);
    let after = next_event(&mut watch).await;
    assert_eq!(
        (after.key.as_str(), after.revision),
        ("after", revision + 1)
    );

    // all=true deletes every key, at one revision.
    let all = app.client.delete_prefix("", true).await.unwrap();
    assert_eq!((all.deleted, all.revision), (3, revision + 2));
    let count = app.client.count(None).await.unwrap();
    assert_eq!(count, 0);
}

/// A replay pages through the database 1,000 changes at a time, so a revision of 1,500 keys
/// spans pages: the watcher must still send each key once, in key order, with one SSE id.
async fn a_replay_of_a_revision_larger_than_a_page_sends_it_whole_and_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    futures::stream::iter(0..1500)
        .for_each_concurrent(64, |i| async move {
            client
                .put(&format!("big/{i:04}"), "v", Precondition::None)
                .await
                .unwrap();
        })
        .await;
    let before = put(&app, "zz", "last before").await;
    let deleted = client.delete_prefix("big/", false).await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (1500, before + 1));
    put(&app, "zz", "first after").await;

    let mut watch = client.watch(None, Some(before)).await.unwrap();
    for i in 0..1500 {
        let event = next_event(&mut watch).await;
        assert_eq!(
            (event.key, event.revision, event.kind),
            (format!("big/{i:04}"), deleted.revision, EventType::Delete)
        );
        let complete = (i == 1499).then_some(deleted.revision);
        assert_eq!(
            watch.resume_after(),
            complete.or(Some(before)),
            "after big/{i:04}"
        );
    }
    let next = next_event(&mut watch).await;
    assert_eq!(
        (next.key.as_str(), next.revision),
        ("zz", deleted.revision + 1)
    );

    // Raw SSE, resumed from before the delete: one `id:` line, after the last event.
    let body = app
        .http
        .get(format!("{}/api/watch?prefix=big/", app.base))
        .header("last-event-id", before.to_string())
        .send()
        .await
        .unwrap();
    let mut chunks = body.bytes_stream();
    let mut text = String::new();
    while text.matches("data:").count() < 1500 {
        let chunk = tokio::time::timeout(WAIT, chunks.next())
            .await
            .expect("the replay within the wait")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let ids: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("id:"))
        .collect();
    assert_eq!(ids, [format!("id: {}", deleted.revision)]);
    let last_data = text.rfind("data:").unwrap();
    assert!(
        text.rfind("id:").unwrap() > last_data - 40,
        "the id closes the revision"
    );
    assert!(
        !text.contains("revision_events"),
        "the count stays between the nodes"
    );
}

/// A prefix delete on one node reaches a watcher on another through Redis, whole, and the
/// events on the channel say how many the revision has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_delete_reaches_other_nodes_watchers_as_one_revision() {
    let prefix = unique_prefix();
    let first = spawn_app_with(
        Backend::Postgres,
        AppOptions::with_redis(&test_redis_url(), &prefix),
    )
    .await;
    let mut options = AppOptions::with_redis(&test_redis_url(), &prefix);
    options.node_id = Some("second-node".to_owned());
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let second = spawn_app_on(&first.database_url, dir, options).await;
    for key in ["d/1", "d/2", "d/3", "e/1"] {
        put(&first, key, "v").await;
    }
    let client = redis::Client::open(test_redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}:events")).await.unwrap();
    let mut all = second.client.watch(None, None).await.unwrap();
    let mut only_d2 = second.client.watch(Some("d/2"), None).await.unwrap();

    let deleted = first.client.delete_prefix("d/", false).await.unwrap();
    assert_eq!(deleted.deleted, 3);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut all).await;
        seen.push((event.key, event.revision, event.node));
    }
    let node = "test-node".to_owned();
    assert_eq!(
        seen,
        [
            ("d/1".to_owned(), deleted.revision, node.clone()),
            ("d/2".to_owned(), deleted.revision, node.clone()),
            ("d/3".to_owned(), deleted.revision, node),
        ]
    );
    assert_eq!(all.resume_after(), Some(deleted.revision));
    let filtered = next_event(&mut only_d2).await;
    assert_eq!(
        (filtered.key.as_str(), filtered.revision),
        ("d/2", deleted.revision)
    );
    assert_eq!(
        only_d2.resume_after(),
        Some(deleted.revision),
        "its one event carries the id"
    );

    let mut messages = pubsub.on_message();
    for key in ["d/1", "d/2", "d/3"] {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
        assert_eq!(
            (&json["key"], &json["revision"], &json["revision_events"]),
            (&key.into(), &deleted.revision.into(), &3.into())
        );
    }
    // A single-key write's event stays as it was.
    put(&first, "e/2", "v").await;
    let message = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
    assert!(json.get("revision_events").is_none(), "{json}");
}

/// Bad requests are 400 with a detail, and write nothing; so is a range over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prefix_deletes_are_refused_with_nothing_written() {
    let app = spawn_app(Backend::Sqlite).await;
    let client = &app.client;
    futures::stream::iter(0..10_001)
        .for_each_concurrent(64, |i| async move {
            client
                .put(&format!("many/{i:05}"), "v", Precondition::None)
                .await
                .unwrap();
        })
        .await;
    let revision = put(&app, "one", "v").await;
    for (query, detail) in [
        ("", "give a prefix"),
        ("?prefix=", "give a prefix"),
        ("?all=false", "give a prefix"),
        ("?prefix=one&all=yes", "must be true or false"),
        ("?prefix=one&recursive=true", "recursive"),
        ("?prefix=many/", "10001 live keys start with \"many/\""),
        ("?all=true", "10002 live keys"),
    ] {
        let response = app
            .http
            .delete(format!("{}/api/keys{query}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        let text = body["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{query}: {text}");
    }
    assert_eq!(client.count(None).await.unwrap(), 10_002);
    assert_eq!(
        put(&app, "after", "v").await,
        revision + 1,
        "no revision was used"
    );
}

/// A prefix delete judges leases when it runs, after it waited for the revision lock: a key
/// whose lease ended during the wait is not among its deletes (it was gone already), and its
/// end is recorded as the expiry it was.
async fn a_key_whose_lease_ends_while_a_prefix_delete_waits_is_recorded_as_expired(
    backend: Backend,
) {
    let options = AppOptions {
        // Long enough for the delete to be answered after the wait.
        extra_args: vec![
            "--db-timeout=10s".to_owned(),
            "--lease-sweep-interval=100ms".to_owned(),
        ],
        ..AppOptions::default()
    };
    let app = spawn_app_with(backend, options).await;
    app.client
        .put_with("w/leased", "v", Precondition::None, Attach::Ttl(2))
        .await
        .unwrap();
    let before = put(&app, "w/plain", "v").await;
    let past_deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut watch = app.client.watch(Some("w/"), Some(before)).await.unwrap();
    let lock = kg_testkit::hold_revision_lock(&app.database_url, Duration::from_millis(3500)).await;
    let deleted = app.client.delete_prefix("w/", false).await.unwrap();
    lock.await.unwrap();
    assert!(std::time::Instant::now() > past_deadline);
    let mut ends = std::collections::BTreeMap::new();
    while ends.len() < 2 {
        let event = next_event(&mut watch).await;
        assert_eq!(event.kind, EventType::Delete, "{event:?}");
        ends.insert(event.key.clone(), (event.revision, event.reason));
    }
    assert_eq!(
        ends["w/plain"],
        (deleted.revision, None),
        "the prefix delete's own key"
    );
    assert_eq!(
        ends["w/leased"].1,
        Some(DeleteReason::Expired),
        "a key whose lease ended before the delete ran is an expiry: {ends:?}"
    );
    assert_eq!(deleted.deleted, 1, "{deleted:?}");
}

/// A 10,000-key prefix delete on PostgreSQL completes within the db timeout whatever its
/// session ran before. The history trigger's statement is planned once per session, on the
/// transition tables of the first write it runs for; planned on one row (a single PUT), its
/// join ran as a nested loop over 10,000 × 10,000 rows, holding the revision lock for
/// seconds. One pooled session, so that the delete runs where the PUTs ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_large_prefix_delete_is_fast_after_a_session_of_one_row_writes() {
    use sqlx::Connection as _;
    let options = AppOptions {
        extra_args: vec!["--db-pool-size=1".to_owned()],
        ..AppOptions::default()
    };
    let app = spawn_app_with(Backend::Postgres, options).await;
    put(&app, "one", "v").await;
    // 10,000 keys written straight into the table, from another session.
    let mut admin = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO kg_keys (key, value, create_revision, mod_revision, version, mod_node, \
           mod_at) SELECT 'big/' || lpad(i::text, 5, '0'), '\\x76', 1 + i, 1 + i, 1, 'bulk', \
           now() FROM generate_series(1, 10000) i",
        "UPDATE kg_meta SET revision = 10001",
    ] {
        sqlx::query(statement).execute(&mut admin).await.unwrap();
    }
    for value in 0..7 {
        put(&app, "one", &value.to_string()).await;
    }
    let started = std::time::Instant::now();
    let response = app
        .http
        .delete(app.url("/api/keys?prefix=big/"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    println!(
        "10,000-key prefix delete after one-row writes in its session: {status} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "not done within the db timeout: {body}"
    );
    let deleted: kg_api::DeletePrefixResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(deleted.deleted, 10_000);
}
