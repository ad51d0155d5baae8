//! `POST /api/txn`: compares, then one branch applied atomically at one revision, seen whole by
//! watchers and by the cache; refusals that write nothing; idempotent retries; and concurrent
//! transfers that keep their sum.

use std::time::Duration;

use kg_api::{
    Attach, Compare, CompareOp, CompareTarget, CompareValue, DeleteReason, EventType, Precondition,
    TxnOp, TxnRequest, TxnResponse, TxnResult,
};
use serde_json::{json, Value};

use kg_testkit::{
    spawn_app, spawn_app_with, test_redis_url, unique_prefix, AppOptions, Backend, TestApp,
};

on_both_backends!(
    a_transaction_applies_one_branch_at_one_revision_seen_whole,
    a_refused_transaction_writes_nothing,
    a_retried_transaction_is_replayed_not_applied_again,
    concurrent_transfers_keep_their_sum,
    a_transaction_judges_leases_after_waiting_for_the_revision_lock,
    a_transaction_s_gets_carry_at_most_a_page_of_values,
);

const WAIT: Duration = Duration::from_secs(5);

fn compare(key: &str, target: CompareTarget, op: CompareOp, value: CompareValue) -> Compare {
    Compare {
        key: key.to_owned(),
        target,
        op,
        value,
    }
}

fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.to_owned(),
        value: value.to_owned(),
        lease: None,
    }
}

fn get(key: &str) -> TxnOp {
    TxnOp::Get {
        key: key.to_owned(),
    }
}

/// The current revision: what a transaction that changes nothing answers.
async fn current_revision(app: &TestApp) -> i64 {
    app.client
        .txn(&TxnRequest::default(), None)
        .await
        .unwrap()
        .revision
}

async fn post(app: &TestApp, body: &Value, idempotency_key: Option<&str>) -> (u16, Value) {
    let mut request = app.http.post(app.url("/api/txn")).json(body);
    if let Some(id) = idempotency_key {
        request = request.header("idempotency-key", id);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn a_transaction_applies_one_branch_at_one_revision_seen_whole(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::with_redis(&test_redis_url(), &unique_prefix()),
    )
    .await;
    let client = &app.client;
    client
        .put("acct/a", "10", Precondition::None)
        .await
        .unwrap();
    let b = client.put("acct/b", "5", Precondition::None).await.unwrap();
    client.put("old/1", "x", Precondition::None).await.unwrap();
    let before = client
        .put("old/2", "y", Precondition::None)
        .await
        .unwrap()
        .revision;
    for key in ["acct/a", "acct/b"] {
        // Cached now: the transaction must leave the cache holding its writes.
        client.get(key).await.unwrap();
    }
    let mut watch = client.watch(None, Some(before)).await.unwrap();

    let transfer = TxnRequest {
        compare: vec![
            compare(
                "acct/a",
                CompareTarget::Value,
                CompareOp::Equal,
                CompareValue::Text("10".to_owned()),
            ),
            compare(
                "acct/b",
                CompareTarget::Revision,
                CompareOp::Equal,
                CompareValue::Integer(b.revision),
            ),
            compare(
                "acct/new",
                CompareTarget::Exists,
                CompareOp::Equal,
                CompareValue::Bool(false),
            ),
        ],
        success: vec![
            put("acct/b", "8"),
            put("acct/a", "7"),
            put("acct/new", "0"),
            get("acct/a"),
            TxnOp::Delete {
                key: "never/was".to_owned(),
            },
            TxnOp::DeletePrefix {
                prefix: "old/".to_owned(),
            },
        ],
        failure: vec![get("acct/a")],
    };
    let done = client.txn(&transfer, None).await.unwrap();
    let revision = before + 1;
    assert!(done.succeeded, "{done:?}");
    assert_eq!(done.revision, revision, "every write at one new revision");
    assert_eq!(done.results.len(), 6);
    assert_eq!(
        done.results[..3],
        [
            TxnResult::Put {
                key: "acct/b".to_owned(),
                create_revision: b.create_revision,
                version: 2,
            },
            TxnResult::Put {
                key: "acct/a".to_owned(),
                create_revision: 1,
                version: 2,
            },
            TxnResult::Put {
                key: "acct/new".to_owned(),
                create_revision: revision,
                version: 1,
            },
        ]
    );
    let TxnResult::Get { kv: Some(kv), .. } = &done.results[3] else {
        panic!("a get of a live key: {:?}", done.results[3]);
    };
    assert_eq!(
        (kv.value.as_deref(), kv.mod_revision),
        (Some("7"), revision),
        "a get sees the branch's earlier writes"
    );
    assert_eq!(
        done.results[4..],
        [
            TxnResult::Delete {
                key: "never/was".to_owned(),
                deleted: 0,
            },
            TxnResult::DeletePrefix {
                prefix: "old/".to_owned(),
                deleted: 2,
            },
        ]
    );

    // One event per changed key, in key order, all at the one revision; the SSE id (where a
    // reconnect resumes) only once the last has arrived.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("an event within the wait")
            .unwrap()
            .unwrap();
        seen.push((event.key, event.kind, event.revision, watch.resume_after()));
    }
    let expected = [
        ("acct/a", EventType::Put),
        ("acct/b", EventType::Put),
        ("acct/new", EventType::Put),
        ("old/1", EventType::Delete),
        ("old/2", EventType::Delete),
    ];
    for (at, ((key, kind, event_revision, resume), (want_key, want_kind))) in
        seen.iter().zip(expected).enumerate()
    {
        assert_eq!(
            (key.as_str(), *kind, *event_revision),
            (want_key, want_kind, revision)
        );
        let want_resume = if at == 4 { revision } else { before };
        assert_eq!(*resume, Some(want_resume), "resume point after {key}");
    }
    for (key, value) in [("acct/a", "7"), ("acct/b", "8")] {
        let read = client.get(key).await.unwrap();
        assert_eq!(
            (read.value.as_str(), read.meta.cache_hit),
            (value, Some(true))
        );
    }
    for key in ["old/1", "old/2"] {
        let read = app.get(&format!("/api/key?key={key}")).await;
        assert_eq!(read.status().as_u16(), 404, "{key} was deleted");
    }

    // A compare that fails runs the failure branch, which here writes nothing: no revision.
    let stale = client.txn(&transfer, None).await.unwrap();
    assert!(!stale.succeeded);
    assert_eq!(
        stale.revision, revision,
        "nothing written, the current revision"
    );
    let TxnResult::Get { kv: Some(kv), .. } = &stale.results[0] else {
        panic!("{stale:?}");
    };
    assert_eq!(kv.value.as_deref(), Some("7"));

    // A put over a tombstone starts the key again, as a PUT does.
    let again = TxnRequest {
        success: vec![
            put("old/1", "back"),
            TxnOp::Delete {
                key: "old/2".to_owned(),
            },
        ],
        ..TxnRequest::default()
    };
    let again = client.txn(&again, None).await.unwrap();
    assert_eq!(
        again.results,
        [
            TxnResult::Put {
                key: "old/1".to_owned(),
                create_revision: again.revision,
                version: 1,
            },
            TxnResult::Delete {
                key: "old/2".to_owned(),
                deleted: 0,
            },
        ]
    );

    // A put may attach its key to a lease.
    let lease = client.lease_grant(60).await.unwrap();
    let leased = TxnRequest {
        success: vec![TxnOp::Put {
            key: "acct/leased".to_owned(),
            value: "1".to_owned(),
            lease: Some(lease.id),
        }],
        ..TxnRequest::default()
    };
    client.txn(&leased, None).await.unwrap();
    let info = client.lease(lease.id).await.unwrap();
    assert_eq!(info.keys, Some(vec!["acct/leased".to_owned()]));
    client.lease_revoke(lease.id).await.unwrap();
    let read = app.get("/api/key?key=acct/leased").await;
    assert_eq!(
        read.status().as_u16(),
        404,
        "revoking the lease deleted the key"
    );
}

async fn a_refused_transaction_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client
        .put("k", "before", Precondition::None)
        .await
        .unwrap();
    let before = current_revision(&app).await;
    let puts = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"op": "put", "key": format!("many/{i}"), "value": "v"}))
            .collect()
    };
    let big = "x".repeat(700 * 1024);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"success": puts(129)}), 422, "limit is 128"),
        (
            json!({"success": [{"op": "put", "key": "k", "value": "1"}, {"op": "delete", "key": "k"}]}),
            422,
            "written twice",
        ),
        (
            json!({"success": [{"op": "put", "key": "p/1", "value": "1"}, {"op": "delete_prefix", "prefix": "p/"}]}),
            422,
            "prefix delete",
        ),
        (
            json!({"success": [{"op": "frob", "key": "k"}]}),
            422,
            "frob",
        ),
        (
            json!({"success": [{"op": "put", "key": "k", "value": "1", "tll": 5}]}),
            422,
            "tll",
        ),
        (json!({"sucess": []}), 422, "sucess"),
        (
            json!({"compare": [{"key": "k", "target": "version", "op": "==", "value": "1"}], "success": [{"op": "put", "key": "k", "value": "1"}]}),
            422,
            "integer",
        ),
        (
            json!({"compare": [{"key": "k", "target": "exists", "op": "<", "value": true}]}),
            422,
            "only == and !=",
        ),
        (
            json!({"success": [{"op": "put", "key": "", "value": "1"}]}),
            422,
            "success[0]: key must not be empty",
        ),
        (
            json!({"success": [{"op": "delete_prefix", "prefix": ""}]}),
            422,
            "prefix must not be empty",
        ),
        (
            json!({"success": [{"op": "put", "key": "k", "value": "1", "lease": 0}]}),
            422,
            "lease must be",
        ),
        (
            json!({"success": [{"op": "put", "key": "k", "value": "1", "lease": 987654321}]}),
            404,
            "lease 987654321 not found",
        ),
        (
            json!({"success": [{"op": "put", "key": "b/1", "value": big}, {"op": "put", "key": "b/2", "value": big}]}),
            413,
            "at most",
        ),
        (json!([1, 2]), 422, "JSON object"),
    ];
    for (body, status, detail) in cases {
        let (got, answer) = post(&app, &body, None).await;
        let shown = answer["detail"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{answer} for {body:.200}");
        assert!(shown.contains(detail), "{shown:?} should say {detail:?}");
    }
    assert_eq!(current_revision(&app).await, before, "nothing was written");
    assert_eq!(app.client.get("k").await.unwrap().value, "before");
}

async fn a_retried_transaction_is_replayed_not_applied_again(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({
        "compare": [{"key": "n", "target": "version", "op": "==", "value": 0}],
        "success": [{"op": "put", "key": "n", "value": "first"}, {"op": "get", "key": "n"}],
        "failure": [{"op": "get", "key": "n"}],
    });
    let (status, first) = post(&app, &body, Some("txn-retry-1")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["succeeded"], true);
    let revision = first["revision"].as_i64().unwrap();

    // On a retry the compare would now fail; the replay gives the first answer instead.
    let response = app
        .http
        .post(app.url("/api/txn"))
        .header("idempotency-key", "txn-retry-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(
        response.headers()["x-keygrid-revision"],
        revision.to_string().as_str()
    );
    let replayed: Value = response.json().await.unwrap();
    assert_eq!(replayed, first, "the first attempt's answer, byte for byte");
    assert_eq!(current_revision(&app).await, revision, "applied once");

    // The same key for another request, or one a single-key write used, is refused.
    let other = json!({"success": [{"op": "put", "key": "n", "value": "second"}]});
    let (status, answer) = post(&app, &other, Some("txn-retry-1")).await;
    assert_eq!(status, 422, "{answer}");
    let put = app
        .http
        .put(app.url("/api/key"))
        .header("idempotency-key", "put-then-txn")
        .json(&json!({"data": {"key": "m", "value": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let (status, answer) = post(&app, &other, Some("put-then-txn")).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(app.client.get("n").await.unwrap().value, "first");
}

/// Eight clients move money between four accounts, each transfer guarded by the revisions it
/// read; the transfers that succeeded are exactly what the balances show, and the sum holds.
async fn concurrent_transfers_keep_their_sum(backend: Backend) {
    const ACCOUNTS: usize = 4;
    let app = spawn_app(backend).await;
    for account in 0..ACCOUNTS {
        app.client
            .put(&format!("bank/{account}"), "100", Precondition::None)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let client = app.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut moved = 0;
            for round in 0..15usize {
                let from = format!("bank/{}", (worker + round) % ACCOUNTS);
                let to = format!("bank/{}", (worker + round + 1) % ACCOUNTS);
                let read = client
                    .txn(
                        &TxnRequest {
                            success: vec![get(&from), get(&to)],
                            ..TxnRequest::default()
                        },
                        None,
                    )
                    .await
                    .unwrap();
                let balance = |at: usize| match &read.results[at] {
                    TxnResult::Get { kv: Some(kv), .. } => (
                        kv.value.as_deref().unwrap().parse::<i64>().unwrap(),
                        kv.mod_revision,
                    ),
                    other => panic!("{other:?}"),
                };
                let ((from_balance, from_revision), (to_balance, to_revision)) =
                    (balance(0), balance(1));
                let at = |key: &str, revision| {
                    compare(
                        key,
                        CompareTarget::Revision,
                        CompareOp::Equal,
                        CompareValue::Integer(revision),
                    )
                };
                let transfer = TxnRequest {
                    compare: vec![at(&from, from_revision), at(&to, to_revision)],
                    success: vec![
                        put(&from, &(from_balance - 1).to_string()),
                        put(&to, &(to_balance + 1).to_string()),
                    ],
                    failure: vec![],
                };
                let done: TxnResponse = client.txn(&transfer, None).await.unwrap();
                moved += usize::from(done.succeeded);
            }
            moved
        }));
    }
    let mut moved = 0;
    for task in tasks {
        moved += task.await.unwrap();
    }
    assert!(moved > 0, "some transfers went through");
    let balances = app.client.list_all(Some("bank/"), 100).await.unwrap();
    let sum: i64 = balances
        .iter()
        .map(|kv| kv.value.as_deref().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(sum, 100 * ACCOUNTS as i64, "the sum is invariant");
    let versions: i64 = balances.iter().map(|kv| kv.version - 1).sum();
    assert_eq!(
        versions,
        2 * moved as i64,
        "each successful transfer wrote two keys, and nothing else did"
    );
}

/// A transaction judges leases when it runs, after it waited for the revision lock, not when
/// its database transaction began: a key whose lease ended during the wait is absent for its
/// compares and its gets, and its expiry is still recorded as one.
async fn a_transaction_judges_leases_after_waiting_for_the_revision_lock(backend: Backend) {
    let options = AppOptions {
        // Long enough for the transaction to be answered after the wait.
        extra_args: vec![
            "--db-timeout=10s".to_owned(),
            "--lease-sweep-interval=100ms".to_owned(),
        ],
        ..AppOptions::default()
    };
    let app = spawn_app_with(backend, options).await;
    let client = &app.client;
    client
        .put_with("tx/k", "alive", Precondition::None, Attach::Ttl(2))
        .await
        .unwrap();
    let past_deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut watch = client.watch(Some("tx/"), None).await.unwrap();
    // Held past the deadline: the transaction, sent well before it, waits for the lock.
    let lock = kg_testkit::hold_revision_lock(&app.database_url, Duration::from_millis(3500)).await;
    let request = TxnRequest {
        compare: vec![compare(
            "tx/k",
            CompareTarget::Exists,
            CompareOp::Equal,
            CompareValue::Bool(true),
        )],
        success: vec![get("tx/k"), put("tx/flag", "saw it alive")],
        failure: vec![get("tx/k"), put("tx/flag", "saw it gone")],
    };
    let answer = client.txn(&request, None).await.unwrap();
    lock.await.unwrap();
    assert!(std::time::Instant::now() > past_deadline);
    assert!(
        !answer.succeeded,
        "the transaction ran after the deadline and found the key alive: {answer:?}"
    );
    assert!(
        matches!(&answer.results[0], TxnResult::Get { kv: None, .. }),
        "{answer:?}"
    );
    assert_eq!(client.get("tx/flag").await.unwrap().value, "saw it gone");
    // The key's end is an expiry, after the transaction's write.
    let mut ended = None;
    while ended.is_none() {
        let event = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("the expiry within the wait")
            .unwrap()
            .unwrap();
        if event.key == "tx/k" {
            ended = Some(event);
        }
    }
    let ended = ended.unwrap();
    assert_eq!(
        (ended.kind, ended.reason),
        (EventType::Delete, Some(DeleteReason::Expired))
    );
}

/// A branch whose gets would read more than a page's worth of values (`MAX_PAGE_BYTES`) is
/// refused before it writes, sized from the rows, its own puts counted; one at the bound is
/// answered whole. Without the bound, 128 gets of 1 MiB values made one answer of 128 MiB or,
/// JSON-escaped, several times that.
async fn a_transaction_s_gets_carry_at_most_a_page_of_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let value = "x".repeat(1_000_000);
    let keys: Vec<String> = (0..17).map(|i| format!("big/{i:02}")).collect();
    for key in &keys {
        app.client
            .put(key, &value, Precondition::None)
            .await
            .unwrap();
    }
    let before = current_revision(&app).await;
    let gets = |n: usize| -> Vec<Value> {
        keys[..n]
            .iter()
            .map(|key| json!({"op": "get", "key": key}))
            .collect()
    };
    let mut over = gets(17);
    over.push(json!({"op": "put", "key": "marker", "value": "written"}));
    let mut own = gets(16);
    own.push(json!({"op": "put", "key": "big/new", "value": value}));
    own.push(json!({"op": "get", "key": "big/new"}));
    for branch in [over, own] {
        let (status, answer) = post(&app, &json!({"success": branch}), None).await;
        assert_eq!(status, 400, "{answer:.300}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("one answer carries at most"), "{detail}");
        assert!(detail.contains("17000000 bytes"), "{detail}");
    }
    assert_eq!(current_revision(&app).await, before, "nothing was written");
    assert!(
        app.client.get("marker").await.is_err(),
        "the refused branch wrote"
    );

    let (status, answer) = post(&app, &json!({"success": gets(16)}), None).await;
    assert_eq!(status, 200, "{answer:.300}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 16);
    for result in results {
        assert_eq!(
            result["kv"]["value"].as_str().map(str::len),
            Some(1_000_000),
            "{result:.200}"
        );
    }
}
