//! What a run's reports tell: every refusal class counted in the text summary, the HTML
//! report's settings, thresholds and cache hit rate, a report path checked before any load,
//! `compare` warning of runs made differently, `--help` naming every op of `--mix`, and
//! `kg-bench leases` measuring its latencies and writing `--report`.

use serde_json::Value;

use super::{bench, json, kg_bench, spawn_node, stdout};

/// CAS races lost and transactions that took their failure branch are counted apart, each by
/// name, and agree with the JSON's per-operation counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_summary_counts_every_refusal_class() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    // Three keys and eight workers: CASes and transfers race, and some lose.
    let line =
        format!("--endpoint {endpoint} -c 8 --requests 400 --keys 3 --mix get=1,cas=3,txn=3");
    let report = json(&bench(&format!("{line} -o json")).await);
    let refused = |op: &str| report["ops"][op]["refused"].as_u64().unwrap();
    assert_eq!(
        refused("cas") + refused("txn"),
        report["precondition_failed"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(refused("get"), 0, "{report}");
    let text = stdout(&bench(&line).await, 0);
    let headline = text.lines().next().unwrap();
    assert!(headline.contains(" CAS lost the race (412)"), "{text}");
    assert!(
        headline.contains(" transactions took the failure branch"),
        "{text}"
    );

    // A refusal the store never gives, from a server that gives only that: named too.
    let conflict = kg_testkit::stranger_endpoint("409 Conflict", "{}").await;
    let text = stdout(
        &bench(&format!(
            "--endpoint {conflict} -c 2 --requests 20 --keys 3"
        ))
        .await,
        1,
    );
    assert!(text.contains("status_409 (Conflict): 20"), "{text}");
}

/// The HTML report says how the run was made (endpoint, model, connections, mix, keys,
/// duration, date, version), how each threshold fared, and the cache hit rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_settings_thresholds_and_the_cache_hit_rate() {
    let dir = tempfile::tempdir().unwrap();
    let options = kg_testkit::AppOptions {
        node_id: Some("bench-node".to_owned()),
        ..kg_testkit::AppOptions::with_redis(
            &kg_testkit::test_redis_url(),
            &kg_testkit::unique_prefix(),
        )
    };
    let endpoint = kg_testkit::spawn_node_in(dir.path(), None, options).await;
    let page_path = dir.path().join("run.html");
    let output = bench(&format!(
        "--endpoint {endpoint} -c 3 --duration 2s --keys 40 --preload --mix get=9,put=1 \
         --threshold p99<60s --threshold rps>100000000 --report {}",
        page_path.display()
    ))
    .await;
    stdout(&output, 99);
    let page = std::fs::read_to_string(&page_path).unwrap();
    let cell = |name: &str, value: &str| format!("<tr><th>{name}</th><td>{value}</td></tr>");
    for (name, value) in [
        ("endpoint", endpoint.as_str()),
        ("model", "closed: 3 connections"),
        ("mix", "get=9,put=1"),
        ("keys", "40 (uniform), preloaded"),
        ("duration", "2s"),
        ("version", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(
            page.contains(&cell(name, value)),
            "no {name} {value}: {page}"
        );
    }
    assert!(page.contains("<tr><th>date</th><td>20"), "{page}");
    assert!(page.contains("<td>p99&lt;60s</td>"), "{page}");
    assert!(page.contains("<td class=\"pass\">pass</td>"), "{page}");
    assert!(page.contains("<td>rps&gt;100000000</td>"), "{page}");
    assert!(page.contains("<td class=\"fail\">FAIL</td>"), "{page}");
    assert!(page.contains("<th>cache hit rate</th><td>"), "{page}");
    assert!(page.contains("% (") && page.contains(" hits, "), "{page}");
}

/// A report that cannot be written is refused before the load starts: nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_path_that_cannot_be_written_is_refused_before_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let output = bench(&format!(
        "--endpoint {endpoint} -c 2 --requests 50 --keys 10 --preload \
         --report /nonexistent/run.html"
    ))
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/run.html"), "{stderr}");
    let client = kg_api::Client::new(&endpoint).unwrap();
    assert_eq!(
        client.count(None).await.unwrap(),
        0,
        "the preload never ran"
    );
}

/// Two runs made differently are compared all the same, with a warning that names what
/// differed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_warns_when_the_runs_settings_differ() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let base = json(
        &bench(&format!(
            "--endpoint {endpoint} -c 2 --requests 100 --keys 20 -o json"
        ))
        .await,
    );
    let mut other = base.clone();
    other["settings"]["concurrency"] = Value::from(16);
    other["settings"]["mix"] = Value::from("get=1");
    let (base_path, other_path) = (dir.path().join("base.json"), dir.path().join("other.json"));
    std::fs::write(&base_path, base.to_string()).unwrap();
    std::fs::write(&other_path, other.to_string()).unwrap();
    let same = stdout(
        &bench(&format!(
            "compare {} {}",
            base_path.display(),
            base_path.display()
        ))
        .await,
        0,
    );
    assert!(!same.contains("warning"), "{same}");
    let compared = bench(&format!(
        "compare {} {}",
        base_path.display(),
        other_path.display()
    ))
    .await;
    let text = String::from_utf8_lossy(&compared.stdout);
    assert!(
        text.starts_with("warning: the runs were made differently: concurrency 2 against 16, mix"),
        "{text}"
    );
}

#[tokio::test]
async fn help_names_every_op_of_the_mix() {
    let help = stdout(&kg_bench(&["--help"]).await, 0);
    let mix = help
        .split("--mix <MIX>")
        .nth(1)
        .and_then(|rest| rest.split("\n  -").next())
        .unwrap();
    for op in ["get", "put", "delete", "cas", "delete_prefix", "txn"] {
        assert!(mix.contains(op), "--mix's help lacks {op}: {mix}");
    }
}

/// `kg-bench leases` reports how long grants and keep-alives took, and writes `--report`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_report_their_latencies_and_write_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let page_path = dir.path().join("leases.html");
    let output = bench(&format!(
        "leases --endpoint {endpoint} --count 30 --ttl 3 --duration 2s --report {}",
        page_path.display()
    ))
    .await;
    let text = stdout(&output, 0);
    let totals: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    for series in ["grant_latency_us", "keepalive_latency_us"] {
        let latency = &totals[series];
        assert!(latency["p50"].as_u64().unwrap() > 0, "{series}: {totals}");
        assert!(
            latency["p50"].as_u64() <= latency["p99"].as_u64()
                && latency["p99"].as_u64() <= latency["max"].as_u64(),
            "{series}: {totals}"
        );
    }
    assert_eq!(totals["failed"], 0, "{totals}");
    let page = std::fs::read_to_string(&page_path).unwrap();
    for part in [
        "kg-bench leases",
        "<th>grants</th>",
        "<th>keep-alives</th>",
        "p99 ms",
    ] {
        assert!(page.contains(part), "the report lacks {part}: {page}");
    }
}

/// With KG_ENDPOINT set, a usage error's usage line does not show `--endpoint` as required.
#[tokio::test]
async fn usage_lines_do_not_show_the_endpoint_set_by_the_environment() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kg-bench"))
        .arg("chaos")
        .env("KG_ENDPOINT", "http://127.0.0.1:1")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("Usage: kg-bench chaos --out <DIR>\n"),
        "{stderr}"
    );
}
