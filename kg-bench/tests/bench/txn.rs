//! The `txn` operation against a real node: transfers between accounts through
//! `POST /api/txn`, recorded as reads of every account at one revision and CASes of two, and
//! judged: the run is linearizable, every read has the same sum, none saw part of a transfer;
//! a planted read that saw half of one fails the judge.

use serde_json::Value;

use super::{bench, json, kg_bench, read_history, spawn_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_keep_the_sum_and_a_read_of_half_a_transfer_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = spawn_node(dir.path()).await;
    let history = dir.path().join("txn.jsonl");
    let output = bench(&format!(
        "--endpoint {endpoint} -c 8 --requests 400 --keys 10 --mix get=1,put=1,txn=4 \
         --record {} -o json",
        history.display()
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    assert!(
        report["ops"]["txn"]["requests"].as_u64().unwrap() > 150,
        "{report}"
    );

    let (text, entries) = read_history(&history);
    let in_txn = |e: &&Value| e["txn"].is_u64();
    let transfers: Vec<&Value> = entries
        .iter()
        .filter(in_txn)
        .filter(|e| e["op"] == "cas")
        .collect();
    let swapped = transfers.iter().filter(|e| e["outcome"] == "ok").count();
    let refused = transfers
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .count();
    assert!(
        swapped >= 40 && refused > 0,
        "{swapped} swapped, {refused} refused"
    );
    let reads = entries
        .iter()
        .filter(in_txn)
        .filter(|e| e["op"] == "get")
        .count();
    assert_eq!(reads % 8, 0, "every read is of all eight accounts");

    let judged = kg_bench(&["judge", history.to_str().unwrap(), "-o", "json"]).await;
    let verdict = json(&judged);
    assert_eq!(judged.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["fractured_reads"], 0, "{verdict}");
    assert_eq!(verdict["violations"], 0, "{verdict}");

    // The accounts after the run add up to what they started at: nothing.
    let client = kg_api::Client::new(&endpoint).unwrap();
    let accounts = client.list_all(Some("bench/acct/"), 100).await.unwrap();
    let sum: i64 = accounts
        .iter()
        .map(|kv| kg_bench::workload::balance(kv.value.as_deref()).unwrap())
        .sum();
    assert_eq!(sum, 0, "{accounts:?}");

    // Plant a read that saw a transfer's first account after it and its second before it.
    let (first, second) = transfers
        .iter()
        .zip(transfers.iter().skip(1))
        .find(|(a, b)| a["outcome"] == "ok" && a["client"] == b["client"] && a["txn"] == b["txn"])
        .expect("a transfer that went through");
    let end = entries
        .iter()
        .map(|e| e["complete_us"].as_u64().unwrap())
        .max()
        .unwrap();
    let revision = first["revision"].as_i64().unwrap();
    let get = |key: &Value, value: &Value, revision: Option<i64>| {
        serde_json::json!({
            "client": 99, "op": "get", "key": key, "value": value, "revision": revision,
            "invoke_us": end + 10, "complete_us": end + 20, "outcome": "ok", "txn": 0,
        })
    };
    let before = (!second["expected"].is_null()).then_some(revision - 1);
    let planted = format!(
        "{text}{}\n{}\n",
        get(&first["key"], &first["value"], Some(revision)),
        get(&second["key"], &second["expected"], before)
    );
    let planted_file = dir.path().join("planted.jsonl");
    std::fs::write(&planted_file, planted).unwrap();
    let caught = kg_bench(&["judge", planted_file.to_str().unwrap(), "-o", "json"]).await;
    let verdict = json(&caught);
    assert_eq!(caught.status.code(), Some(1), "{verdict}");
    assert_eq!(verdict["fractured_reads"], 1, "{verdict}");
    let problems = verdict["problems"].to_string();
    assert!(problems.contains("saw part of a transaction"), "{problems}");
    assert!(problems.contains("invariant sum:"), "{problems}");
}
