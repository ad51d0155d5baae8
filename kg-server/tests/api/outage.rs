//! A database outage gives clean 503s, and the node recovers by itself when it returns.
//! Runs on a private PostgreSQL so that stopping it cannot disturb anything else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kg_api::{DependencyState, Error, Precondition};
use reqwest::StatusCode;

use kg_testkit::{spawn_app_on, AppOptions, ThrowawayPostgres, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_and_the_node_recovers_by_itself() {
    let postgres = ThrowawayPostgres::start();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = AppOptions {
        extra_args: vec!["--db-timeout=3s".to_owned()],
        ..AppOptions::default()
    };
    let app = spawn_app_on(&postgres.url(), dir, options).await;
    app.client
        .put("before", "outage", Precondition::None)
        .await
        .unwrap();

    postgres.stop_server();

    let read = app.get("/api/key?key=before").await;
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        read.text().await.unwrap(),
        r#"{"detail":"database unavailable"}"#
    );
    // The node now knows: later calls get their 503 from its breaker, without waiting for
    // the database again. Counted, not timed: the breaker's refusals are a metric. (The
    // metrics are the test process's, shared with other tests' nodes, whose refusals can only
    // add to the count, never hide these.)
    let refusals = || async { breaker_refusals(&app.client.metrics().await.unwrap()) };
    let before = refusals().await;
    let write = app.client.put("during", "outage", Precondition::None).await;
    assert!(matches!(write, Err(Error::Unavailable { .. })), "{write:?}");
    let read = app.client.get("before").await;
    assert!(matches!(read, Err(Error::Unavailable { .. })), "{read:?}");
    assert!(
        refusals().await >= before + 2,
        "the node sent two calls to a database it knew was down"
    );
    let (status, ready) = app.client.ready().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.database, DependencyState::Unavailable);
    assert_eq!(ready.detail.as_deref(), Some("database unavailable"));
    assert_eq!(
        app.client.health().await.unwrap().status,
        "ok",
        "liveness stays up"
    );
    let node = app.client.status().await.unwrap();
    assert_eq!(node.database.state, DependencyState::Unavailable);
    assert_eq!(node.revision, None);

    postgres.start_server();

    let deadline = Instant::now() + PATIENCE;
    loop {
        match app.client.get("before").await {
            Ok(read) => {
                assert_eq!(read.value, "outage");
                break;
            }
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("node did not recover: {err}"),
        }
    }
    app.client
        .put("after", "outage", Precondition::None)
        .await
        .unwrap();
    assert_eq!(app.client.ready().await.unwrap().0, StatusCode::OK);
    let metrics = app.client.metrics().await.unwrap();
    assert!(
        !metrics.contains(r#"status="500""#),
        "outage errors are 503s, never 500s: {metrics}"
    );
}

/// `kg_db_errors_total{kind="breaker_open"}`: calls the breaker refused, from Prometheus text.
fn breaker_refusals(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"kg_db_errors_total{kind="breaker_open"} "#))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// Heartbeats tell the cluster when a node has lost its database, and when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_say_degraded_while_the_database_is_down() {
    use futures::StreamExt;
    use kg_api::{NodeHealth, NodeHeartbeat};

    let postgres = ThrowawayPostgres::start();
    let prefix = kg_testkit::unique_prefix();
    let mut options = AppOptions::with_redis(&kg_testkit::test_redis_url(), &prefix);
    options.extra_args.push("--db-timeout=1s".to_owned());
    let app = spawn_app_on(
        &postgres.url(),
        Arc::new(tempfile::tempdir().unwrap()),
        options,
    )
    .await;
    let written = app.client.put("k", "v", Precondition::None).await.unwrap();

    let client = redis::Client::open(kg_testkit::test_redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}:nodes")).await.unwrap();
    let mut beats = pubsub.into_on_message().map(|message| {
        let payload: String = message.get_payload().unwrap();
        serde_json::from_str::<NodeHeartbeat>(&payload).unwrap()
    });
    // Waits for a heartbeat with the wanted health; each arrives within about a second.
    async fn expect(
        beats: &mut (impl futures::Stream<Item = NodeHeartbeat> + Unpin),
        want: NodeHealth,
    ) -> NodeHeartbeat {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let beat = tokio::time::timeout_at(deadline, beats.next())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} heartbeat in time"))
                .unwrap();
            if beat.status == want {
                return beat;
            }
        }
    }

    let healthy = expect(&mut beats, NodeHealth::Ok).await;
    assert_eq!(
        (healthy.node.as_str(), healthy.revision),
        ("test-node", written.revision)
    );
    postgres.stop_server();
    expect(&mut beats, NodeHealth::Degraded).await;
    postgres.start_server();
    expect(&mut beats, NodeHealth::Ok).await;
}

/// A database that takes no writes (a standby mid-failover, here a database set read-only,
/// its sessions cut so that the pool reconnects read-only) is unavailable for writes: every
/// PUT gets 503 with a detail and writes nothing, never a 500, and reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_gives_503_on_writes_not_500() {
    use sqlx::Connection as _;
    let app = kg_testkit::spawn_app(kg_testkit::Backend::Postgres).await;
    app.client.put("k", "v", Precondition::None).await.unwrap();
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&kg_testkit::admin_database_url())
        .await
        .unwrap();
    for statement in [
        format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ),
    ] {
        sqlx::query(&statement).execute(&mut admin).await.unwrap();
    }

    // The first calls may meet a cut session (also a 503); the later ones a read-only one.
    for i in 0..10 {
        let response = app
            .http
            .put(app.url("/api/key"))
            .body(format!(r#"{{"data":{{"key":"k","value":"w{i}"}}}}"#))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "write {i}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        match app.client.get("k").await {
            Ok(read) => {
                assert_eq!(read.value, "v", "nothing was written");
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "reads did not come back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Through a database outage the cache keeps serving every key no failed write touched, and
/// none that one did: such a commit may have landed. Once a later write commits, the failed
/// write's key is cached again as the database holds it. The test plants a landed commit (the
/// key changed in the database behind the node's back, as a commit whose answer was lost):
/// a node that merely dropped the key's mark would serve the old value from the cache.
///
/// Two paths are both right, and which one runs depends on the machine's speed: the write is
/// sent and fails (its key stays marked pending in Redis, and reads of it go to the database,
/// 503 during the outage), or the node has already found the database down (a background
/// call tripped its breaker first) and refuses the write unsent (nothing marked, nothing can
/// have landed, and the cache rightly serves the old value). The test reads the mark to know
/// which, and holds each path to its invariant: no stale value, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_of_untouched_keys_outlive_a_database_outage() {
    cached_reads_through_an_outage(false).await;
}

/// The slow machine's path of the test above, made certain: a read of an uncached key finds
/// the database down first, so the write is refused unsent, and the cache keeps serving the
/// key's value, which nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_unsent_during_an_outage_leaves_the_cached_value_right() {
    cached_reads_through_an_outage(true).await;
}

async fn cached_reads_through_an_outage(breaker_open_first: bool) {
    use sqlx::Connection as _;
    let postgres = ThrowawayPostgres::start();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let prefix = kg_testkit::unique_prefix();
    let mut options = AppOptions::with_redis(&kg_testkit::test_redis_url(), &prefix);
    options.extra_args.push("--db-timeout=2s".to_owned());
    let app = spawn_app_on(&postgres.url(), dir, options).await;
    app.client
        .put("quiet", "q", Precondition::None)
        .await
        .unwrap();
    app.client
        .put("hot", "h1", Precondition::None)
        .await
        .unwrap();
    let read = |key: &'static str| {
        let app = &app;
        async move {
            let response = app.get(&format!("/api/key?key={key}")).await;
            let status = response.status();
            let cache = response.headers().get("x-cache").cloned();
            let body = response.text().await.unwrap();
            (
                status,
                cache.map(|value| value.to_str().unwrap().to_owned()),
                body,
            )
        }
    };
    let hit = |value: &str| {
        (
            StatusCode::OK,
            Some("hit".to_owned()),
            format!(r#"{{"data":{{"value":"{value}"}}}}"#),
        )
    };
    assert_eq!(read("quiet").await, hit("q"));
    // The node's own epoch: the metrics are the test process's, shared with other tests' nodes.
    let redis = redis::Client::open(kg_testkit::test_redis_url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let epoch_key = format!("{prefix}:epoch");
    let epoch_before: Option<i64> = redis::AsyncCommands::get(&mut redis, &epoch_key)
        .await
        .unwrap();

    postgres.stop_server();
    if breaker_open_first {
        let missed = app.get("/api/key?key=never-cached").await;
        assert_eq!(missed.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let write = app.client.put("hot", "h2", Precondition::None).await;
    assert!(matches!(write, Err(Error::Unavailable { .. })), "{write:?}");
    assert_eq!(
        read("quiet").await,
        hit("q"),
        "an untouched key, during the outage"
    );
    let pending: Option<i64> =
        redis::AsyncCommands::hget(&mut redis, format!("{prefix}:key:hot"), "p")
            .await
            .unwrap();
    let sent = pending.unwrap_or(0) > 0;
    assert!(
        !(breaker_open_first && sent),
        "a write past an open breaker was sent"
    );
    let during = read("hot").await;
    if sent {
        assert_eq!(
            (during.0, during.2.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"detail":"database unavailable"}"#
            ),
            "the failed write's key is read from the database alone"
        );
    } else {
        assert_eq!(during, hit("h1"), "a write refused unsent changed nothing");
    }

    postgres.start_server();
    // What the database holds for "hot" once it is back: after a sent write, the failed
    // commit landed after all (h2, at a revision the cache never saw); after a refused one,
    // nothing could land, and h1 stays.
    let wanted = if sent {
        let mut admin = sqlx::PgConnection::connect(&postgres.url()).await.unwrap();
        let revision: i64 =
            sqlx::query_scalar("UPDATE kg_meta SET revision = revision + 1 RETURNING revision")
                .fetch_one(&mut admin)
                .await
                .unwrap();
        sqlx::query(
            "UPDATE kg_keys SET value = convert_to('h2', 'UTF8'), mod_revision = $1, \
             version = version + 1 WHERE key = 'hot'",
        )
        .bind(revision)
        .execute(&mut admin)
        .await
        .unwrap();
        "h2"
    } else {
        "h1"
    };
    // Never the stale value: read from the database while the mark stands (once the node
    // sees the database again), or from the cache that no write made stale.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, cache, body) = read("hot").await;
        if status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let answer = (status, body);
        assert_eq!(
            answer,
            (
                StatusCode::OK,
                format!(r#"{{"data":{{"value":"{wanted}"}}}}"#)
            ),
            "cache {cache:?}"
        );
        if sent {
            assert_eq!(
                cache.as_deref(),
                Some("miss"),
                "the mark sends it to the database"
            );
        }
        break;
    }

    // A later write commits; it settles the failed one before it is answered.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match app.client.put("after", "a", Precondition::None).await {
            Ok(_) => break,
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("writes did not come back: {err}"),
        }
    }
    assert_eq!(
        read("hot").await,
        hit(wanted),
        "cached again, as the database holds it"
    );
    assert_eq!(read("quiet").await, hit("q"));
    let epoch_after: Option<i64> = redis::AsyncCommands::get(&mut redis, &epoch_key)
        .await
        .unwrap();
    assert_eq!(epoch_before, epoch_after, "no failure fenced the cache");
}
