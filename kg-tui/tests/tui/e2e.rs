//! kg-tui end to end: the real binary in tmux, against a real node and the machine's Redis.
//! A put made over HTTP must show on screen (how soon is printed, not asserted: a duration),
//! and `q` must exit and restore the terminal (same `stty` settings before and after,
//! alternate screen left).

use std::path::Path;
use std::time::{Duration, Instant};

use kg_api::Precondition;
use kg_testkit::{Tmux, PATIENCE};

fn redis_url() -> String {
    kg_testkit::test_redis_url()
}

/// A node on SQLite; with `prefix`, on the machine's Redis under that prefix.
async fn spawn_node(dir: &Path, prefix: Option<&str>) -> String {
    let options = match prefix {
        Some(prefix) => kg_testkit::AppOptions::with_redis(&redis_url(), prefix),
        None => kg_testkit::AppOptions::default(),
    };
    let options = kg_testkit::AppOptions {
        node_id: Some("tui-e2e".to_owned()),
        ..options
    };
    kg_testkit::spawn_node_in(dir, None, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_shows_up_live_and_q_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("kgtui-{}", uuid::Uuid::new_v4().simple());
    let endpoint = spawn_node(dir.path(), Some(&prefix)).await;
    let args = format!("--redis-url {} --redis-prefix {prefix}", redis_url());
    drive(dir.path(), &endpoint, &args, "redis: connected", "redis").await;
}

/// Without Redis the dashboard follows /api/watch, so a lone embedded node works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_events_come_from_the_watch_stream() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path(), None).await;
    drive(dir.path(), &endpoint, "", "watch: connected", "watch").await;
}

/// More keys than one page: the browser shows the count and the cursor's place, pages as the
/// cursor moves (End reaches the very last key), cuts a long key in the middle, and shows a
/// multi-line value as lines; at 80×24 and at 120×40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_browser_pages_past_500_keys_and_shows_long_keys_and_values_whole() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path(), None).await;
    let client = kg_api::Client::new(&endpoint).unwrap();
    let long_key = "drill/652396e3-5a1f-4c7e-9b2d-0c8e7f6a5b4c/000";
    client
        .put(
            long_key,
            "line one\nline two\nline three",
            Precondition::None,
        )
        .await
        .unwrap();
    let writes = (0..620).map(|i| {
        let client = client.clone();
        async move {
            client
                .put(&format!("k/{i:04}"), "v", Precondition::None)
                .await
                .unwrap()
        }
    });
    futures::future::join_all(writes).await;

    for (width, height) in [(80, 24), (120, 40)] {
        let name = format!("keys{width}");
        let script = format!(
            "{bin} --endpoint {endpoint}; sleep 30",
            bin = env!("CARGO_BIN_EXE_kg-tui"),
        );
        let tmux = Tmux::start_sized(&name, &script, width, height);
        let send = |keys: &str| {
            tmux.run(&["send-keys", "-t", "tui", keys]);
        };
        tmux.wait_for("the count of every key", PATIENCE, |s| {
            s.contains("Keys 1/621")
        })
        .await;
        // The long key is cut in the middle, so its start and its end both show.
        let screen = tmux.screen();
        assert!(
            screen
                .lines()
                .any(|line| line.contains("drill/") && line.contains('…') && line.contains("/000")),
            "{width}x{height}: the long key cut in the middle:\n{screen}"
        );
        send("Tab"); // events -> keys
        send("End");
        tmux.wait_for("the last key, past the first page", PATIENCE, |s| {
            s.contains("Keys 621/621") && s.contains("k/0619")
        })
        .await;
        send("Home");
        tmux.wait_for("the first key again", PATIENCE, |s| {
            s.contains("Keys 1/621")
        })
        .await;
        send("PageDown");
        tmux.wait_for("a page down", PATIENCE, |s| s.contains("Keys 21/621"))
            .await;
        send("Home");
        send("Enter");
        let screen = tmux
            .wait_for("the value, as lines", PATIENCE, |s| {
                s.contains("line three")
            })
            .await;
        let lines: Vec<&str> = screen.lines().collect();
        let one = lines.iter().position(|l| l.contains("line one")).unwrap();
        assert!(
            lines[one + 1].contains("line two"),
            "{width}x{height}: one line each:\n{screen}"
        );
        assert!(
            screen.contains("28 bytes, 3 lines"),
            "{width}x{height}: the size:\n{screen}"
        );
        send("q");
        send("q");
    }
}

/// Runs kg-tui in tmux with `args`, waits for `connected` and the node, puts a key, checks
/// it appears (and prints how soon), then quits with q and checks the terminal.
async fn drive(dir: &Path, endpoint: &str, args: &str, connected: &str, name: &str) {
    let files = dir.display().to_string();
    let script = format!(
        "stty -g > {files}/before; {bin} --endpoint {endpoint} {args}; echo $? > {files}/exit; \
         stty -g > {files}/after; sleep 30",
        bin = env!("CARGO_BIN_EXE_kg-tui"),
    );
    let tmux = Tmux::start(name, &script);

    // Subscribed and polled: the feed says so and the node is listed.
    tmux.wait_for("the connected feed and the node", PATIENCE, |screen| {
        screen.contains(connected) && screen.contains("tui-e2e")
    })
    .await;

    let client = kg_api::Client::new(endpoint).unwrap();
    let written = client
        .put("e2e/hello", "world", Precondition::None)
        .await
        .unwrap();
    let put_at = Instant::now();
    let screen = tmux
        .wait_for("the put's event", PATIENCE, |screen| {
            screen
                .lines()
                .any(|line| line.contains("PUT e2e/hello") && line.contains("tui-e2e"))
        })
        .await;
    println!(
        "[{name}] event on screen {} ms after the put:\n{screen}",
        put_at.elapsed().as_millis()
    );
    assert!(screen.contains(&written.revision.to_string()));

    tmux.run(&["send-keys", "-t", "tui", "q"]);
    let exit_file = dir.join("exit");
    let deadline = Instant::now() + PATIENCE;
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "kg-tui did not exit on q");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
    let before = std::fs::read_to_string(dir.join("before")).unwrap();
    let after = std::fs::read_to_string(dir.join("after")).unwrap();
    assert_eq!(before, after, "terminal settings restored (raw mode off)");
    let screen = tmux.screen();
    assert!(
        !screen.contains("Nodes (") && !screen.contains("Events"),
        "the dashboard's alternate screen was left:\n{screen}"
    );
}

/// The event list starts with what happened before kg-tui did (the last revisions, from a
/// watch replay), with Redis and without it, rather than empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_list_starts_with_the_recent_history() {
    for redis in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("kgtui-{}", uuid::Uuid::new_v4().simple());
        let endpoint = spawn_node(dir.path(), redis.then_some(prefix.as_str())).await;
        let client = kg_api::Client::new(&endpoint).unwrap();
        for key in ["early/1", "early/2", "early/3"] {
            client.put(key, "v", Precondition::None).await.unwrap();
        }
        client.delete("early/2", Precondition::None).await.unwrap();
        let args = if redis {
            format!("--redis-url {} --redis-prefix {prefix}", redis_url())
        } else {
            String::new()
        };
        let script = format!(
            "{bin} --endpoint {endpoint} {args}; sleep 30",
            bin = env!("CARGO_BIN_EXE_kg-tui"),
        );
        let tmux = Tmux::start(&format!("recent-{redis}"), &script);
        let screen = tmux
            .wait_for("the history", PATIENCE, |s| {
                s.contains("PUT early/3") && s.contains("DEL early/2")
            })
            .await;
        assert!(
            screen.contains("PUT early/1"),
            "redis {redis}:
{screen}"
        );
        tmux.keys(&["q"]);
    }
}

/// When Redis goes away the header says so, and the subscriber comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_says_when_redis_is_unreachable_and_the_feed_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path(), None).await;
    let mut redis = kg_testkit::ThrowawayRedis::start();
    let script = format!(
        "{bin} --endpoint {endpoint} --redis-url redis://127.0.0.1:{port}; sleep 30",
        bin = env!("CARGO_BIN_EXE_kg-tui"),
        port = redis.port,
    );
    let tmux = Tmux::start("outage", &script);
    tmux.wait_for("redis: connected", PATIENCE, |s| {
        s.contains("redis: connected")
    })
    .await;
    redis.kill();
    tmux.wait_for("redis: UNREACHABLE", PATIENCE, |s| {
        s.contains("redis: UNREACHABLE")
    })
    .await;
    redis.restart();
    tmux.wait_for("redis: connected again", PATIENCE, |s| {
        s.contains("redis: connected")
    })
    .await;
    tmux.run(&["send-keys", "-t", "tui", "q"]);
}
