//! kg-bench end to end: the real binary against a node spawned on a free port. The JSON
//! report's counts must add up, the open model must hold its rate, a threshold that cannot
//! hold must exit 99, `compare` must flag a regression, `--record` must log every call,
//! `check` must pass a recorded history and fail one with a planted stale read, `judge` must
//! pass a real run against the node's own state and catch a planted lost write and stale read,
//! `--token` must go with every request to a node that requires one, and a CAS must not
//! count as a success when the server's read gave it no revision.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::process::Output;

mod leases;
mod story;
mod txn;

use serde_json::Value;

/// A node on embedded SQLite in `dir`, named bench-node, with more of kg-server's arguments.
async fn spawn_node_with(dir: &std::path::Path, extra: &[String]) -> String {
    let options = kg_testkit::AppOptions {
        node_id: Some("bench-node".to_owned()),
        extra_args: extra.to_vec(),
        ..kg_testkit::AppOptions::default()
    };
    kg_testkit::spawn_node_in(dir, None, options).await
}

async fn spawn_node(dir: &std::path::Path) -> String {
    spawn_node_with(dir, &[]).await
}

/// A recorded history: its text, and each line parsed.
fn read_history(path: &std::path::Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let entries = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, entries)
}

/// Held shared by every run that puts load on the machine, and alone by a test that asserts a
/// rate or a duration: the tests of this binary run at once on two cores, and a rate the node
/// can take alone is more than it can take beside an overload test.
pub(crate) static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn run_kg_bench(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kg-bench"))
        .args(args)
        .output()
        .await
        .unwrap()
}

async fn kg_bench(args: &[&str]) -> Output {
    let _shared = LOAD.read().await;
    run_kg_bench(args).await
}

/// kg-bench run with the arguments of one command line, with no other load running.
async fn bench_alone(line: &str) -> Output {
    let _alone = LOAD.write().await;
    run_kg_bench(&kg_testkit::argv(line)).await
}

/// kg-bench run with the arguments of one command line.
async fn bench(line: &str) -> Output {
    kg_bench(&kg_testkit::argv(line)).await
}

/// The stdout of a run that must have exited with `code`.
fn stdout(output: &Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_is_complete_and_its_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let output = bench(&format!(
        "--endpoint {endpoint} --concurrency 4 --duration 2s --warmup 500ms --keys \
         200 --preload --mix get=70,put=20,delete=10 --output json"
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);

    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 100, "{report}");
    assert_eq!(
        report["successes"].as_u64().unwrap() + report["errors"].as_u64().unwrap(),
        requests
    );
    assert_eq!(report["errors"], 0, "a healthy node: {report}");
    let ops = report["ops"].as_object().unwrap();
    assert_eq!(
        ops.keys().collect::<Vec<_>>(),
        ["delete", "get", "put"],
        "every operation of the mix ran"
    );
    let by_op: u64 = ops
        .values()
        .map(|op| op["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(by_op, requests);
    let by_second: u64 = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(by_second, requests);
    let node = &report["nodes"]["bench-node"];
    assert_eq!(node["requests"].as_u64().unwrap(), requests);
    assert!((node["share"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let latency = &report["latency_us"];
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(latency[field].as_u64().unwrap() > 0, "{field}: {latency}");
    }
    assert!(latency["p50"].as_u64() <= latency["p99"].as_u64());
    assert!(latency["p99"].as_u64() <= latency["max"].as_u64());
    // It measured what was asked; a slow machine can only make the run longer, and how much
    // longer is a duration, not this test's to bound.
    let duration = report["duration_s"].as_f64().unwrap();
    assert!(duration >= 1.9, "measured {duration}s of --duration 2s");
    assert_eq!(report["settings"]["model"], "closed");
    assert_eq!(report["settings"]["preload"], true);
    // Without Redis every read is a miss, and the node says so on each GET.
    assert_eq!(report["cache"]["hits"], 0);
    assert_eq!(report["cache"]["misses"], report["ops"]["get"]["requests"]);
    assert_eq!(report["cache"]["hit_ratio"], 0.0);
}

/// The open model's schedule: 200/s for 2 s is 400 requests, each either sent or counted as
/// dropped (never sent in time), none lost. How many were sent in time is the machine's
/// business (a busy one drops some), so it is printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_sends_or_counts_every_scheduled_request() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let output = bench_alone(&format!(
        "--endpoint {endpoint} --rate 200 --concurrency 64 --duration 2s --keys 50 \
         --mix get=1,put=1 -o json"
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    let requests = report["requests"].as_u64().unwrap();
    let dropped = report["dropped"].as_u64().unwrap();
    println!("200/s for 2 s: {requests} sent, {dropped} dropped");
    assert!(
        (399..=401).contains(&(requests + dropped)),
        "200/s for 2 s scheduled {requests} sent + {dropped} dropped"
    );
    assert!(requests > 0, "{report}");
    assert_eq!(report["settings"]["model"], "open");
    assert_eq!(report["model"], "open");
    assert_eq!(report["target_rps"], 200.0);
}

/// An open model asked for more than the endpoint can take stops at --duration, as k6 does,
/// and says how much it never sent, instead of running on until its backlog is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_open_model_stops_on_time_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let args_line = format!(
        "--endpoint {endpoint} --rate 20000 --concurrency 2 --duration 2s --keys 100 \
         --mix get=1,put=1"
    );
    let args = kg_testkit::argv(&args_line);
    let output = kg_bench(&[&args[..], &["-o", "json"]].concat()).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    // Two workers cannot send 20,000/s; before, the run went on until all 40,000 were sent.
    // That it stopped instead shows in what it dropped, not in a duration: a run that sent
    // its backlog would have dropped nothing.
    let requests = report["requests"].as_u64().unwrap();
    let dropped = report["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{report}");
    let scheduled = requests + dropped;
    assert!(
        (39_000..=40_100).contains(&scheduled),
        "sent {requests} + dropped {dropped} should be the 40,000 the schedule held"
    );
    assert_eq!(report["target_rps"], 20000.0);

    let text = kg_bench(&[&args[..], &["--threshold", "dropped<1"]].concat()).await;
    let stdout = stdout(&text, 99);
    assert!(
        stdout.contains("open model, target 20000 req/s: achieved"),
        "the headline names the model: {stdout}"
    );
    assert!(stdout.contains("dropped (never sent)"), "{stdout}");
}

/// A dead endpoint fails every request: the run exits 1, and the failures' latencies are
/// reported apart instead of passing for the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_where_every_request_failed_exits_1_and_keeps_failures_apart() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let output = bench(&format!(
        "--endpoint {dead} --concurrency 2 --duration 1s -o json"
    ))
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = json(&output);
    assert!(report["requests"].as_u64().unwrap() > 0);
    assert_eq!(report["errors"], report["requests"]);
    assert_eq!(
        report["latency_us"]["p50"], 0,
        "no success, no success latency"
    );
    assert!(
        report["failed_latency_us"]["p50"].as_u64().unwrap() > 0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_print_their_values_and_a_failed_one_exits_99() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let base_line = format!("--endpoint {endpoint} -c 2 --requests 200 --keys 20");
    let passing = bench(&format!(
        "{base_line} --threshold errors<1% --threshold p99<5s"
    ))
    .await;
    let text = stdout(&passing, 0);
    assert!(text.contains("✓ errors<1%: 0.000%"), "{text}");
    assert!(text.contains("200 requests"), "exactly --requests: {text}");

    let failing = bench(&format!(
        "{base_line} --threshold p99<1us --threshold rps>1"
    ))
    .await;
    let text = stdout(&failing, 99);
    assert!(text.contains("✗ p99<1us: "), "{text}");
    assert!(text.contains("✓ rps>1: "), "{text}");

    let bad = kg_bench(&["--threshold", "p100<1ms"]).await;
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a bad threshold is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_flags_a_regression_between_two_reports() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let output = bench(&format!(
        "--endpoint {endpoint} -c 2 --requests 300 --keys 20 -o json"
    ))
    .await;
    let base = json(&output);
    let mut slower = base.clone();
    let p99 = base["latency_us"]["p99"].as_u64().unwrap();
    slower["latency_us"]["p99"] = Value::from(p99 * 2);
    let base_path = dir.path().join("base.json");
    let slower_path = dir.path().join("slower.json");
    std::fs::write(&base_path, base.to_string()).unwrap();
    std::fs::write(&slower_path, slower.to_string()).unwrap();

    let same = bench(&format!(
        "compare {} {}",
        base_path.display(),
        base_path.display()
    ))
    .await;
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert!(String::from_utf8_lossy(&same.stdout).contains("0 regression(s) beyond 5.0%"));

    let worse = bench(&format!(
        "compare {} {}",
        base_path.display(),
        slower_path.display()
    ))
    .await;
    let text = stdout(&worse, 1);
    let line = text.lines().find(|l| l.starts_with("p99_us ")).unwrap();
    assert!(
        line.contains("+100.0%") && line.contains("REGRESSION"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_every_operation_with_unique_written_values() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let history = dir.path().join("history.jsonl");
    let output = bench(&format!(
        "--endpoint {endpoint} -c 4 --requests 400 --keys 10 --mix get=50,put=50 \
         --record {} -o json",
        history.display()
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let (_, entries) = read_history(&history);
    assert_eq!(entries.len(), 400);
    let mut written = std::collections::HashSet::new();
    let mut revisions = std::collections::HashSet::new();
    for entry in &entries {
        assert!(
            entry["invoke_us"].as_u64() <= entry["complete_us"].as_u64(),
            "{entry}"
        );
        assert_eq!(entry["outcome"], "ok", "{entry}");
        assert!(entry["client"].as_u64().unwrap() < 4);
        if entry["op"] == "put" {
            assert!(
                written.insert(entry["value"].as_str().unwrap().to_owned()),
                "{entry}"
            );
            // Each write has a revision of its own, as the node answered it.
            assert!(
                revisions.insert(entry["revision"].as_u64().unwrap()),
                "{entry}"
            );
        }
    }
    // Every value a GET saw was written by some PUT of the run (or the key was missing).
    for entry in entries.iter().filter(|e| e["op"] == "get") {
        if let Some(value) = entry["value"].as_str() {
            assert!(written.contains(value), "{entry}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_recorded_history_and_catches_a_planted_stale_read() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let history = dir.path().join("history.jsonl");
    let output = bench(&format!(
        "--endpoint {endpoint} -c 8 --requests 1000 --keys 10 --mix \
         get=40,put=32,delete=5,cas=20,delete_prefix=3 --record {} -o json",
        history.display()
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    let check = kg_bench(&["check", history.to_str().unwrap(), "-o", "json"]).await;
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let keys = json(&check);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(
        keys.iter().all(|k| k["verdict"] == "linearizable"),
        "{keys:?}"
    );
    // Every operation is checked but those that certainly did nothing (a delete's 404).
    let (text, entries) = read_history(&history);
    // A CAS is its GET, then the conditional PUT: swapped (ok) or refused (412), both checked.
    let cases: Vec<&Value> = entries.iter().filter(|e| e["op"] == "cas").collect();
    assert!(cases.len() > 100, "{} CAS operations", cases.len());
    assert!(
        cases
            .iter()
            .all(|e| e["outcome"] == "ok" || e["outcome"] == "refused"),
        "{cases:?}"
    );
    // A prefix delete of bench/0000000 is a delete of each of the ten keys under it.
    let prefix_deletes: Vec<&Value> = entries
        .iter()
        .filter(|e| e["op"] == "delete_prefix")
        .collect();
    assert!(
        prefix_deletes.len() > 10,
        "{} prefix deletes",
        prefix_deletes.len()
    );
    assert!(
        prefix_deletes
            .iter()
            .all(|e| e["key"] == "bench/0000000" && e["outcome"] == "ok"),
        "{prefix_deletes:?}"
    );
    let effective: u64 = entries
        .iter()
        .filter(|e| e["outcome"] != "fail")
        .map(|e| if e["op"] == "delete_prefix" { 10 } else { 1 })
        .sum();
    let checked: u64 = keys.iter().map(|k| k["operations"].as_u64().unwrap()).sum();
    assert_eq!(checked, effective);
    assert!(effective > 900, "{effective}");

    // Plant a stale read: after everything, a GET of some key that returns the value of a PUT
    // that a later PUT of the same key (invoked after it completed) had replaced.
    let puts: Vec<&Value> = entries.iter().filter(|e| e["op"] == "put").collect();
    let (old, new) = puts
        .iter()
        .flat_map(|a| puts.iter().map(move |b| (*a, *b)))
        .find(|(a, b)| a["key"] == b["key"] && a["complete_us"].as_u64() < b["invoke_us"].as_u64())
        .expect("two puts of one key, one after the other");
    let end = entries
        .iter()
        .map(|e| e["complete_us"].as_u64().unwrap())
        .max()
        .unwrap();
    let stale = serde_json::json!({
        "client": 99, "op": "get", "key": new["key"], "value": old["value"],
        "invoke_us": end + 10, "complete_us": end + 20, "outcome": "ok",
    });
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, format!("{text}{stale}\n")).unwrap();
    let check = kg_bench(&["check", tampered.to_str().unwrap()]).await;
    let report = stdout(&check, 1);
    let key = new["key"].as_str().unwrap();
    assert!(
        report.contains(&format!("{key}: smallest failing window")),
        "{report}"
    );
    assert!(report.contains("1 violation(s)"), "{report}");
    assert!(report.contains(old["value"].as_str().unwrap()), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_passes_a_real_run_and_catches_a_planted_lost_write_and_stale_read() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let history = dir.path().join("run.jsonl");
    let report = dir.path().join("run.json");
    let output = bench(&format!(
        "--endpoint {endpoint} -c 8 --requests 800 --keys 10 --mix \
         get=40,put=40,cas=20 --record {} -o json",
        history.display()
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    std::fs::write(&report, &output.stdout).unwrap();

    // What the node holds afterwards, in the shape the drills dump from PostgreSQL.
    let client = kg_api::Client::new(&endpoint).unwrap();
    let rows = client.list_all(Some("bench/"), 1000).await.unwrap();
    assert_eq!(rows.len(), 10);
    let state: serde_json::Map<String, Value> = rows
        .iter()
        .map(|r| {
            let row = serde_json::json!({"value": r.value, "revision": r.mod_revision});
            (r.key.clone(), row)
        })
        .collect();
    let state_file = dir.path().join("state.json");
    std::fs::write(&state_file, Value::Object(state.clone()).to_string()).unwrap();

    let judge = |history: &std::path::Path, state: &std::path::Path| {
        let (history, state, report) = (
            history.to_str().unwrap().to_owned(),
            state.to_str().unwrap().to_owned(),
            report.to_str().unwrap().to_owned(),
        );
        async move {
            kg_bench(&[
                "judge", &history, "--state", &state, "--report", &report, "--name", "run", "-o",
                "json",
            ])
            .await
        }
    };
    let clean = judge(&history, &state_file).await;
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    let verdict = json(&clean);
    assert_eq!(verdict["passed"], true, "{verdict}");
    assert_eq!(verdict["lost_acknowledged_writes"], 0, "{verdict}");
    assert_eq!(verdict["stale_reads"], 0, "{verdict}");
    assert_eq!(verdict["violations"], 0, "{verdict}");
    assert_eq!(verdict["requests"], 800, "{verdict}");
    assert!(
        verdict["acknowledged_writes"].as_u64().unwrap() > 300,
        "{verdict}"
    );

    // Multi-key invariants over the same state: two keys the run wrote apart do not hold one
    // value (a `together` rule breaks), two keys nobody wrote do (both absent).
    let written: Vec<&String> = state.keys().take(2).collect();
    let invariants = bench(&format!(
        "judge {} --state {} --invariant together:{},{} --invariant together:none/1,none/2 -o json",
        history.display(),
        state_file.display(),
        written[0],
        written[1]
    ))
    .await;
    assert_eq!(invariants.status.code(), Some(1), "{invariants:?}");
    let verdict = json(&invariants);
    let broken = verdict["broken_invariants"].as_array().unwrap();
    assert_eq!(broken.len(), 1, "{verdict}");
    assert_eq!(
        broken[0]["invariant"],
        format!("together:{},{}", written[0], written[1])
    );
    assert!(
        verdict["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("invariant together:"),
        "{verdict}"
    );

    // Plant what a failover could do: the store lost the newest acknowledged write (its row
    // is back one revision), and a read sent after everything saw a key's first value.
    let (text, entries) = read_history(&history);
    let acked: Vec<&Value> = entries
        .iter()
        .filter(|e| e["op"] != "get" && e["outcome"] == "ok")
        .collect();
    let by_revision = |e: &&Value| e["revision"].as_i64().unwrap();
    let newest = acked.iter().copied().max_by_key(by_revision).unwrap();
    let oldest = acked.iter().copied().min_by_key(by_revision).unwrap();
    let mut planted_state = state;
    planted_state.insert(
        newest["key"].as_str().unwrap().to_owned(),
        serde_json::json!({"value": "planted", "revision": by_revision(&newest) - 1}),
    );
    let end = entries
        .iter()
        .map(|e| e["complete_us"].as_u64().unwrap())
        .max()
        .unwrap();
    let stale = serde_json::json!({
        "client": 99, "op": "get", "key": oldest["key"], "value": oldest["value"],
        "revision": oldest["revision"], "invoke_us": end + 10, "complete_us": end + 20,
        "outcome": "ok",
    });
    let planted_history = dir.path().join("planted.jsonl");
    std::fs::write(&planted_history, format!("{text}{stale}\n")).unwrap();
    let planted_state_file = dir.path().join("planted-state.json");
    std::fs::write(
        &planted_state_file,
        Value::Object(planted_state).to_string(),
    )
    .unwrap();

    let caught = judge(&planted_history, &planted_state_file).await;
    assert_eq!(caught.status.code(), Some(1), "{caught:?}");
    let verdict = json(&caught);
    assert_eq!(verdict["passed"], false, "{verdict}");
    assert_eq!(verdict["lost_acknowledged_writes"], 1, "{verdict}");
    assert_eq!(verdict["lost_examples"][0]["write"], *newest, "{verdict}");
    assert!(verdict["stale_reads"].as_u64().unwrap() >= 1, "{verdict}");
    assert!(verdict["violations"].as_u64().unwrap() >= 1, "{verdict}");

    // The text form names both, and the run's verdict.
    let text = bench(&format!(
        "judge {} --state {}",
        planted_history.display(),
        planted_state_file.display()
    ))
    .await;
    let printed = stdout(&text, 1);
    assert!(printed.contains("FAIL"), "{printed}");
    assert!(
        printed.contains("1 acknowledged write(s) lost"),
        "{printed}"
    );
    assert!(printed.contains("  lost: {"), "{printed}");
    assert!(printed.contains("  stale: {"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_with_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "bench-write-token write\n").unwrap();
    let endpoint = spawn_node_with(
        dir.path(),
        &[format!("--auth-tokens-file={}", tokens.display())],
    )
    .await;
    let run = |token: Option<&'static str>| {
        let endpoint = endpoint.clone();
        async move {
            let mut args = vec![
                "--endpoint",
                &endpoint,
                "-c",
                "2",
                "--requests",
                "100",
                "--keys",
                "10",
                "--mix",
                "get=50,put=50",
                "-o",
                "json",
            ];
            if let Some(token) = token {
                args.extend(["--token", token]);
            }
            json(&kg_bench(&args).await)
        }
    };
    let with = run(Some("bench-write-token")).await;
    assert_eq!(with["errors"], 0, "{with}");
    let without = run(None).await;
    assert_eq!(without["errors"], 100, "{without}");
    assert_eq!(without["errors_by_kind"]["status_401"], 100, "{without}");
}

/// A CAS makes its write conditional on the revision its read returned. A server that answers
/// the read without `X-KeyGrid-Revision` breaks the protocol: each such CAS is an error
/// (`no_revision`), not a success, and no write goes out. The server here is a stand-in,
/// because a KeyGrid node always sends the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_whose_read_has_no_revision_is_an_error_and_writes_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let app = axum::Router::new().route(
        "/api/key",
        axum::routing::get(|| async { r#"{"data":{"value":"v"}}"# }).put(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { r#"{"success":true}"# }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let output = bench(&format!(
        "--endpoint {endpoint} --concurrency 2 --requests 20 --mix cas=100 --output json"
    ))
    .await;
    let report = json(&output);
    assert_eq!(
        (&report["errors"], &report["errors_by_kind"]["no_revision"]),
        (&Value::from(20), &Value::from(20)),
        "{report}"
    );
    assert_eq!(writes.load(Ordering::Relaxed), 0, "no CAS may write blind");
}

/// --report writes one self-contained page with every series, and `compare --report` overlays
/// two runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_holds_every_series_and_compare_overlays_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let run = |name: &'static str| {
        let json_path = dir.path().join(format!("{name}.json"));
        let html_path = dir.path().join(format!("{name}.html"));
        let endpoint = endpoint.clone();
        async move {
            let output = bench(&format!(
                "--endpoint {endpoint} --concurrency 4 --duration 2s --keys 100 \
                 --preload --mix get=80,put=15,delete=5 --report {} -o json",
                html_path.display()
            ))
            .await;
            assert_eq!(output.status.code(), Some(0), "{output:?}");
            std::fs::write(&json_path, &output.stdout).unwrap();
            (json_path, std::fs::read_to_string(&html_path).unwrap())
        }
    };
    let (base_json, page) = run("base").await;
    assert!(page.starts_with("<!doctype html>"), "{}", &page[..100]);
    // Every series the issue names: latency over time, throughput and errors per second, the
    // distribution overall, per operation and per node.
    for title in [
        "Latency over time",
        "Throughput and errors per second",
        "Latency distribution",
    ] {
        assert!(page.contains(title), "the report lacks the chart {title}");
    }
    // A legend entry is an SVG text element of its own.
    let legend = |label: &str| format!(">\n{label}\n</text>");
    for series in [
        "p50",
        "p99",
        "requests/s",
        "errors/s",
        "all",
        "get",
        "put",
        "delete",
        "node bench-node",
    ] {
        assert!(
            page.contains(&legend(series)),
            "the report lacks the series {series}"
        );
    }
    // Nothing is fetched at view time: no script, stylesheet link or image source.
    for fetch in ["<script", "<link", "src=", "url("] {
        assert!(!page.contains(fetch), "the report would fetch: {fetch}");
    }

    let (new_json, _) = run("new").await;
    let overlay = dir.path().join("compare.html");
    let compared = bench(&format!(
        "compare {} {} --tolerance 1000% --report {}",
        base_json.display(),
        new_json.display(),
        overlay.display()
    ))
    .await;
    // Two real runs on a shared machine can differ in their tails by any amount (a single
    // stall is enough), so the verdict is not this test's subject (a planted regression is,
    // in compare_flags_a_regression_between_two_reports): the exit code must agree with the
    // table, and the overlay is written either way.
    let flagged = String::from_utf8_lossy(&compared.stdout).contains("REGRESSION");
    assert_eq!(
        compared.status.code(),
        Some(i32::from(flagged)),
        "{compared:?}"
    );
    let page = std::fs::read_to_string(&overlay).unwrap();
    assert!(page.contains("new against base"));
    for series in ["base: p99", "new: p99", "base: get", "new: get"] {
        assert!(page.contains(&legend(series)), "the overlay lacks {series}");
    }
}

/// On a terminal, the progress line stops showing the preload's count once the load begins:
/// the real binary in a tmux session of the test's own, its screen read every 20 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_progress_line_leaves_the_preload_behind() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let _shared = LOAD.read().await;
    let socket = format!("kgbench-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("tmux is missing: apt-get install tmux (scripts/test.sh installs it)")
    };
    let done = dir.path().join("done");
    let script = format!(
        "{bin} --endpoint {endpoint} --preload --keys 3000 -c 4 -d 3s; touch {done}; sleep 30",
        bin = env!("CARGO_BIN_EXE_kg-bench"),
        done = done.display(),
    );
    let session = kg_testkit::argv("new-session -d -s bench -x 120 -y 10 sh -c");
    let started = tmux(&[&session[..], &[script.as_str()]].concat());
    assert!(started.status.success(), "{started:?}");
    let (mut saw_preload, mut saw_load) = (false, false);
    let deadline = std::time::Instant::now() + kg_testkit::PATIENCE;
    while !done.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "kg-bench did not finish"
        );
        let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "bench"]).stdout)
            .into_owned();
        for line in screen.lines() {
            saw_preload |= line.contains("preload") && line.contains("keys written");
            saw_load |= line.contains(" load ") && line.contains("req/s");
            assert!(
                !line.contains("keys written") || line.contains("preload"),
                "the load's line still shows the preload's count:\n{screen}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = tmux(&["kill-server"]);
    assert!(saw_preload && saw_load, "both phases were on screen");
}
