//! The `kg-server` binary itself: without a tokens file its first log line says the API is
//! open; with no database URL it serves embedded SQLite under ./data and says so; SIGTERM
//! drains a request already in flight; a failed request is logged with its request id; and
//! no token ever reaches its logs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use kg_api::Precondition;

use kg_testkit::{free_port, ThrowawayPostgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_defaults_to_embedded_sqlite_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kg-server"))
        .current_dir(dir.path())
        .env("KG_LISTEN", &address)
        .env("KG_NODE_ID", "bin-node")
        .env_remove("KG_DATABASE_URL")
        .env_remove("KG_AUTH_TOKENS_FILE")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap());
    let mut first_line = String::new();
    logs.read_line(&mut first_line).unwrap();
    assert!(
        first_line.contains("WARN") && first_line.contains("the API is open"),
        "first log line: {first_line}"
    );
    let mut store_line = String::new();
    logs.read_line(&mut store_line).unwrap();
    assert!(store_line.contains("embedded SQLite"), "{store_line}");
    let mut ready_line = String::new();
    logs.read_line(&mut ready_line).unwrap();
    assert!(ready_line.contains("kg-server ready"), "{ready_line}");
    assert!(dir.path().join("data/keygrid.db").exists());

    let client = kg_api::Client::new(&format!("http://{address}")).unwrap();
    client.put("k", "v", Precondition::None).await.unwrap();
    assert_eq!(client.get("k").await.unwrap().value, "v");

    // A watch stream stays open through the shutdown; it must not keep the node alive.
    let mut watch = client.watch(None, None).await.unwrap();

    // Start a PUT whose body has not fully arrived, then ask the node to stop.
    let body = r#"{"data":{"key":"inflight","value":"drained"}}"#;
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "PUT /api/key HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));

    // New connections are refused while the in-flight request finishes.
    assert!(
        TcpStream::connect(&address).is_err(),
        "listener closed after SIGTERM"
    );
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request drained: {response}"
    );
    assert!(response.ends_with(r#"{"status":"success"}"#), "{response}");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node still running: an open watch blocks shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit after drain: {exit:?}");
    // Watchers end when shutdown begins (a reconnect elsewhere replays what they missed).
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ended with the node");
    let mut rest = String::new();
    logs.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("draining"), "{rest}");
}

/// Tokens never reach the logs, not even at `RUST_LOG=trace` (which turns on hyper's and
/// sqlx's own logging too): presented on good requests, refused ones and bad ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let (write, read, unknown) = (
        "wr1te-t0ken-8d2f61c0",
        "re4d-t0ken-3b9e57aa",
        "unkn0wn-t0ken-c4a1f0e2",
    );
    std::fs::write(
        dir.path().join("tokens"),
        format!("{write} write\n{read} read\n"),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_kg-server"))
        .current_dir(dir.path())
        .env("KG_LISTEN", &address)
        .env("KG_AUTH_TOKENS_FILE", dir.path().join("tokens"))
        .env("RUST_LOG", "trace")
        .env_remove("KG_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (base, http) = wait_until_serving(&address).await;
    let put = |token: &str, body: &'static str| {
        http.put(format!("{base}/api/key"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let good = r#"{"data":{"key":"k","value":"v"}}"#;
    for (request, status) in [
        (put(write, good), 200),
        (put(read, good), 403),
        (put(unknown, good), 401),
        (put(write, "{not json"), 422),
        (
            http.get(format!("{base}/api/key?key=k")).bearer_auth(read),
            200,
        ),
    ] {
        assert_eq!(request.send().await.unwrap().status().as_u16(), status);
    }

    let logs = stop_and_read_logs(child);
    assert!(
        logs.contains("TRACE") && logs.contains("/api/key"),
        "trace logging was on and saw the requests"
    );
    for token in [write, read, unknown] {
        assert!(!logs.contains(token), "a token reached the logs");
    }
}

/// At the default log level a 5xx gets one line with its status, route and request id (the
/// per-request span is at DEBUG, so that line carries them itself); a success gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_logged_with_its_request_id() {
    let postgres = ThrowawayPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_kg-server"))
        .current_dir(dir.path())
        .env("KG_LISTEN", &address)
        .env("KG_DATABASE_URL", postgres.url())
        .env("KG_DB_TIMEOUT", "500ms")
        .env_remove("RUST_LOG")
        .env_remove("KG_REDIS_URL")
        .env_remove("KG_AUTH_TOKENS_FILE")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (base, http) = wait_until_serving(&address).await;
    let get = |request_id: &str| {
        http.get(format!("{base}/api/key?key=k"))
            .header("X-Request-Id", request_id)
            .send()
    };
    assert_eq!(get("served-7f3a").await.unwrap().status(), 404);
    postgres.stop_server();
    assert_eq!(get("failed-9c1e").await.unwrap().status(), 503);

    let logs = stop_and_read_logs(child);
    let failed: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("request failed"))
        .collect();
    assert_eq!(failed.len(), 1, "one failure line: {logs}");
    for field in [
        "WARN",
        "status=503",
        "method=\"GET\"",
        "route=\"/api/key\"",
        "request_id=\"failed-9c1e\"",
    ] {
        assert!(failed[0].contains(field), "{field} in {}", failed[0]);
    }
    assert!(
        !logs.contains("served-7f3a"),
        "a success is not logged: {logs}"
    );
}

/// Waits until the node at `address` answers at all (10 s at most); its base URL and a client.
async fn wait_until_serving(address: &str) -> (String, reqwest::Client) {
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/api/health")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "node did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (base, http)
}

/// SIGTERM, then everything the node wrote to stderr until it exited.
fn stop_and_read_logs(mut child: std::process::Child) -> String {
    sigterm(&child);
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    child.wait().unwrap();
    logs
}

/// SIGTERM to a spawned node, as a supervisor or `docker stop` sends it.
fn sigterm(child: &std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}
