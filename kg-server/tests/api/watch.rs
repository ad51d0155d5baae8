//! Change events and the watch stream: order, resumption with Last-Event-ID, and delivery
//! across nodes through Redis pub/sub or, without it, through the database.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kg_api::{ChangeEvent, EventType, NodeHeartbeat, Precondition};

use kg_testkit::{
    spawn_app, spawn_app_on, spawn_app_with, test_redis_url, unique_prefix, AppOptions, Backend,
};

on_both_backends!(
    watch_streams_puts_and_deletes_in_revision_order,
    watch_resumes_after_reconnects_without_missing_a_final_state,
    a_compaction_that_overtakes_a_replay_is_told_in_the_stream,
);

/// The next event within `wait`, or a panic naming what was expected.
async fn next_event(stream: &mut kg_api::WatchStream, wait: Duration) -> ChangeEvent {
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("an event within the wait")
        .expect("the stream is open")
        .expect("a well-formed event")
}

async fn watch_streams_puts_and_deletes_in_revision_order(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client
        .put("before/1", "old", Precondition::None)
        .await
        .unwrap();
    // From revision 0: the replay brings what was written before the watch started.
    let mut all = app.client.watch(None, Some(0)).await.unwrap();
    let mut only_b = app.client.watch(Some("b/"), None).await.unwrap();
    // Let the replay finish before writing: a replay that ran after the writes would rightly
    // send only each key's latest state (b/1's delete, not its put), which is all it promises.
    let wait = Duration::from_secs(5);
    let replayed = next_event(&mut all, wait).await;
    assert_eq!(
        (replayed.key.as_str(), replayed.revision, replayed.kind),
        ("before/1", 1, EventType::Put)
    );
    app.client
        .put("b/1", "one", Precondition::None)
        .await
        .unwrap();
    app.client
        .put("c/1", "other", Precondition::None)
        .await
        .unwrap();
    app.client.delete("b/1", Precondition::None).await.unwrap();

    let put = next_event(&mut all, wait).await;
    assert_eq!((put.key.as_str(), put.revision, put.version), ("b/1", 2, 1));
    assert_eq!(
        (put.value.as_deref(), put.node.as_str()),
        (Some("one"), "test-node")
    );
    assert_eq!(next_event(&mut all, wait).await.revision, 3);
    let delete = next_event(&mut all, wait).await;
    assert_eq!(
        (delete.kind, delete.revision, delete.version, delete.value),
        (EventType::Delete, 4, 0, None)
    );

    // The filtered watcher sees only b/ keys, revisions going up, ending with the delete. It
    // sees the put at 2 too unless its first replay ran after the delete (a loaded machine),
    // when b/1's latest state is all a replay owes it.
    let mut filtered = Vec::new();
    while filtered.last().is_none_or(|(_, revision)| *revision < 4) {
        let event = next_event(&mut only_b, wait).await;
        filtered.push((event.key, event.revision));
    }
    assert!(filtered.iter().all(|(key, _)| key == "b/1"), "{filtered:?}");
    assert!(filtered.windows(2).all(|w| w[0].1 < w[1].1), "{filtered:?}");
    assert!(
        filtered == [("b/1".to_owned(), 2), ("b/1".to_owned(), 4)]
            || filtered == [("b/1".to_owned(), 4)],
        "{filtered:?}"
    );

    // Large values travel without their value; the event still says what changed.
    app.client
        .put("b/big", &"x".repeat(2000), Precondition::None)
        .await
        .unwrap();
    let big = next_event(&mut only_b, wait).await;
    assert_eq!((big.key.as_str(), big.value), ("b/big", None));
}

/// A writer runs while a watcher disconnects and reconnects with the last id it saw. The
/// watcher must see revisions only go up, and end with every key's final state.
async fn watch_resumes_after_reconnects_without_missing_a_final_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let writer = tokio::spawn({
        let client = app.client.clone();
        async move {
            for i in 0..300 {
                let key = format!("k{}", i % 10);
                if i % 7 == 3 {
                    let _ = client.delete(&key, Precondition::None).await;
                } else {
                    client
                        .put(&key, &i.to_string(), Precondition::None)
                        .await
                        .unwrap();
                }
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });

    let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut last = 0_i64;
    for _session in 0..4 {
        let mut stream = app.client.watch(None, Some(last)).await.unwrap();
        for _ in 0..40 {
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await
            else {
                break;
            };
            let event = event.unwrap();
            assert!(
                event.revision > last,
                "revision went backwards: {} after {last}",
                event.revision
            );
            last = event.revision;
            state.insert(event.key.clone(), event.value.clone());
        }
        drop(stream); // disconnect; the writer keeps going
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.await.unwrap();
    let final_revision = app.client.status().await.unwrap().revision.unwrap();
    let mut stream = app.client.watch(None, Some(last)).await.unwrap();
    while last < final_revision {
        let event = next_event(&mut stream, Duration::from_secs(5)).await;
        assert!(event.revision > last);
        last = event.revision;
        state.insert(event.key.clone(), event.value.clone());
    }
    let live: BTreeMap<String, Option<String>> = app
        .client
        .list_all(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.key, record.value))
        .collect();
    state.retain(|_, value| value.is_some());
    assert_eq!(
        state, live,
        "the watcher's view equals the database's final state"
    );
}

/// Two nodes over one database and one Redis: a write on one reaches a watcher on the other
/// through pub/sub, and the channels carry the documented JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_heartbeats_cross_nodes_through_redis() {
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

    let client = redis::Client::open(test_redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}:events")).await.unwrap();
    pubsub.subscribe(format!("{prefix}:nodes")).await.unwrap();
    let mut watch = second.client.watch(None, None).await.unwrap();

    let written = first
        .client
        .put("across", "nodes", Precondition::None)
        .await
        .unwrap();
    let event = next_event(&mut watch, Duration::from_secs(2)).await;
    assert_eq!(
        (event.key.as_str(), event.revision, event.node.as_str()),
        ("across", written.revision, "test-node")
    );

    let mut messages = pubsub.on_message();
    let (mut saw_event, mut heartbeat_nodes) = (false, std::collections::BTreeSet::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while (!saw_event || heartbeat_nodes.len() < 2) && tokio::time::Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(3), messages.next()).await
        else {
            break;
        };
        let payload: String = message.get_payload().unwrap();
        if message.get_channel_name().ends_with(":events") {
            let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(json["type"], "put");
            assert_eq!(json["key"], "across");
            assert_eq!(json["value"], "nodes");
            assert!(json["at"].as_str().unwrap().ends_with('Z'));
            saw_event = true;
        } else {
            let beat: NodeHeartbeat = serde_json::from_str(&payload).unwrap();
            heartbeat_nodes.insert(beat.node);
        }
    }
    assert!(saw_event, "the event was published on {prefix}:events");
    assert_eq!(
        heartbeat_nodes.into_iter().collect::<Vec<_>>(),
        ["second-node", "test-node"]
    );
}

/// Without Redis, a node still learns of another node's writes, from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_watchers_learn_of_other_nodes_writes_from_the_database() {
    let first = spawn_app(Backend::Postgres).await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let second = spawn_app_on(&first.database_url, dir, AppOptions::default()).await;
    let mut watch = second.client.watch(None, None).await.unwrap();
    let written = first
        .client
        .put("quiet", "db", Precondition::None)
        .await
        .unwrap();
    let event = next_event(&mut watch, Duration::from_secs(3)).await;
    assert_eq!(
        (event.key.as_str(), event.revision),
        ("quiet", written.revision)
    );
}

/// Tombstones are purged after `--tombstone-retention`; a watcher that asks to resume below
/// the purge gets 410 Gone, one at or above it is served, and the key can be created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_tombstones_make_older_resumes_gone() {
    let options = AppOptions {
        extra_args: vec!["--tombstone-retention=1s".to_owned()],
        ..AppOptions::default()
    };
    let app = spawn_app_with(Backend::Postgres, options).await;
    app.client
        .put("short", "lived", Precondition::None)
        .await
        .unwrap();
    let deleted = app
        .client
        .delete("short", Precondition::None)
        .await
        .unwrap();
    app.client
        .put("kept", "live", Precondition::None)
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let gone = loop {
        match app.client.watch(None, Some(0)).await {
            Err(kg_api::Error::Api { status, detail }) if status.as_u16() == 410 => break detail,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("expected 410 once the tombstone is purged, got {other:?}"),
        }
    };
    assert!(
        gone.contains(&format!("up to revision {}", deleted.revision)),
        "{gone}"
    );

    let mut resumed = app
        .client
        .watch(None, Some(deleted.revision))
        .await
        .unwrap();
    let kept = next_event(&mut resumed, Duration::from_secs(3)).await;
    assert_eq!(kept.key, "kept");
    let again = app
        .client
        .put("short", "again", Precondition::None)
        .await
        .unwrap();
    assert_eq!((again.create_revision, again.version), (again.revision, 1));
}

/// The next change or progress event within 5 s.
async fn item(stream: &mut kg_api::WatchStream) -> kg_api::WatchItem {
    tokio::time::timeout(Duration::from_secs(5), stream.next_item())
        .await
        .expect("an item within 5 s")
        .expect("the stream is open")
        .expect("a well-formed item")
}

/// `progress=1s`: a watcher of a quiet prefix is told, as the other prefix moves on, how far
/// its stream is complete; a change of its own comes as a change, and a resume from the
/// progress revision misses nothing. A bad interval is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_gets_progress_events_with_the_revision_it_is_complete_up_to() {
    use kg_api::WatchItem;
    let app = spawn_app(Backend::Sqlite).await;
    let mut quiet = app
        .client
        .watch_with(Some("quiet/"), None, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let mut busy_revision = 0;
    for i in 0..3 {
        busy_revision = app
            .client
            .put(&format!("busy/{i}"), "x", Precondition::None)
            .await
            .unwrap()
            .revision;
    }
    // The first progress may predate some busy writes; within a few it has caught up.
    let mut seen = 0;
    for _ in 0..4 {
        match item(&mut quiet).await {
            WatchItem::Progress(revision) => {
                assert!(revision >= seen, "progress went back: {revision} < {seen}");
                seen = revision;
                if seen >= busy_revision {
                    break;
                }
            }
            WatchItem::Change(event) => panic!("a change outside the prefix: {event:?}"),
        }
    }
    assert_eq!(
        seen, busy_revision,
        "progress never reached the newest revision"
    );

    let own = app
        .client
        .put("quiet/k", "v", Precondition::None)
        .await
        .unwrap();
    match item(&mut quiet).await {
        WatchItem::Change(event) => assert_eq!(
            (event.key.as_str(), event.revision),
            ("quiet/k", own.revision)
        ),
        WatchItem::Progress(revision) => {
            // A progress due just before the write may come first; it must not claim the write.
            assert!(revision < own.revision);
            match item(&mut quiet).await {
                WatchItem::Change(event) => assert_eq!(event.revision, own.revision),
                other => panic!("expected the change, got {other:?}"),
            }
        }
    }

    // Resuming from a progress revision replays exactly what came after it.
    let mut resumed = app.client.watch(Some("quiet/"), Some(seen)).await.unwrap();
    let replayed = next_event(&mut resumed, Duration::from_secs(5)).await;
    assert_eq!(
        (replayed.key.as_str(), replayed.revision),
        ("quiet/k", own.revision)
    );

    for bad in ["0s", "2h", "soon", ""] {
        let response = app.get(&format!("/api/watch?progress={bad}")).await;
        assert_eq!(response.status(), 400, "progress={bad}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("\"progress\""),
            "{body}"
        );
    }
}

/// `from_revision=N` starts at N, as etcd's watch start revision does; `Last-Event-ID: N` is
/// the last event the client had, so the stream resumes after it, as SSE means, and it wins
/// over `from_revision`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_revision_includes_its_revision_and_last_event_id_resumes_after_it() {
    let app = spawn_app(Backend::Sqlite).await;
    for key in ["r/1", "r/2", "r/3"] {
        app.client.put(key, "v", Precondition::None).await.unwrap();
    }
    let first_event = |query: &'static str, last_event_id: Option<&'static str>| {
        let app = &app;
        async move {
            let mut request = app.http.get(app.url(&format!("/api/watch?{query}")));
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{query}");
            let url = response.url().to_string();
            let mut stream = kg_api::WatchStream::new(url, response.bytes_stream());
            next_event(&mut stream, Duration::from_secs(5))
                .await
                .revision
        }
    };
    assert_eq!(first_event("from_revision=2", None).await, 2);
    assert_eq!(first_event("from_revision=0", None).await, 1);
    assert_eq!(first_event("from_revision=1", None).await, 1);
    assert_eq!(first_event("prefix=r/", Some("2")).await, 3);
    assert_eq!(first_event("from_revision=1", Some("2")).await, 3);
}

/// A watcher whose replay a compaction overtakes either still gets every change from its
/// start or is told in the stream that it was compacted (kg-api's client makes that a 410
/// error), as etcd's ErrCompacted: never the rest of the replay without the deletes the
/// compaction purged, as if it were whole.
async fn a_compaction_that_overtakes_a_replay_is_told_in_the_stream(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let start = client
        .put("a/x", "first", Precondition::None)
        .await
        .unwrap()
        .revision;
    // Enough that a reader who reads nothing holds the replay up long before its last page,
    // the buffers on the way full. Events carry values of up to 1 KiB.
    let store = kg_testkit::open_store(&app.database_url).await;
    let value = "v".repeat(1000);
    let keys: Vec<String> = (0..12_800).map(|i| format!("a/bulk/{i:05}")).collect();
    for chunk in keys.chunks(256) {
        let ops: Vec<kg_server::store::WriteOp> = chunk
            .iter()
            .map(|key| kg_server::store::WriteOp {
                key: key.clone(),
                value: Some(value.clone()),
                expect: kg_server::store::Expect::Any,
                idempotency_key: None,
                lease: None,
                ttl: None,
            })
            .collect();
        store.apply("bulk", &ops).await.unwrap();
    }
    let deleted = client
        .delete("a/x", Precondition::None)
        .await
        .unwrap()
        .revision;

    let mut watch = client.watch(Some("a/"), Some(start)).await.unwrap();
    let first = next_event(&mut watch, Duration::from_secs(10)).await;
    assert!(first.key.starts_with("a/bulk/"), "{first:?}");
    // The replay is under way and held up by this slow reader: compact its start away.
    let compacted = client.compact(deleted).await.unwrap();
    assert_eq!(compacted.compact_revision, deleted);

    let mut puts = 1;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Err(_) => panic!(
                "after {puts} puts, neither a/x's delete nor a compaction notice came: the \
                 watcher goes on as if it had every revision"
            ),
            Ok(None) => panic!("after {puts} puts the stream ended without a notice"),
            Ok(Some(Ok(event))) if event.key == "a/x" => {
                assert_eq!((event.kind, event.revision), (EventType::Delete, deleted));
                break;
            }
            Ok(Some(Ok(_))) => puts += 1,
            Ok(Some(Err(err))) => {
                assert_eq!(err.status(), Some(reqwest::StatusCode::GONE), "{err}");
                assert!(err.to_string().contains("compacted"), "{err}");
                // Told, the stream ends.
                let after = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
                assert!(matches!(after, Ok(None)), "{after:?}");
                break;
            }
        }
    }
}

/// Idle watchers cost the database at most about one query a second per node, however many
/// there are: each once asked the database for its revision every second, so 50 idle
/// watchers were 50 queries a second. Counted as the transactions PostgreSQL commits for the
/// node's database (every statement outside a transaction is one), with the sweeper idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_share_one_revision_check_a_second() {
    use sqlx::Connection as _;
    let options = AppOptions {
        extra_args: vec!["--lease-sweep-interval=1h".to_owned()],
        ..AppOptions::default()
    };
    let app = spawn_app_with(Backend::Postgres, options).await;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers.push(app.client.watch(Some("idle/"), None).await.unwrap());
    }
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&kg_testkit::admin_database_url())
        .await
        .unwrap();
    // Past the watchers' first replays, and past the 10 s an idle PostgreSQL backend may hold
    // its counts before it reports them (PGSTAT_IDLE_INTERVAL).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = database_commits(&mut admin, &name).await;
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let after = database_commits(&mut admin, &name).await;
    let per_second = (after - before) as f64 / window.as_secs_f64();
    println!("50 idle watchers: {per_second:.1} commits a second");
    assert!(
        per_second <= 3.0,
        "50 idle watchers cost {per_second:.1} queries a second"
    );
    drop(watchers);
}

/// The transactions PostgreSQL has counted as committed in database `name`.
async fn database_commits(admin: &mut sqlx::PgConnection, name: &str) -> i64 {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}
