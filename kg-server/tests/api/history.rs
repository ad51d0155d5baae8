//! History: reads at a past revision (`?revision=` on a key and a listing), a key's versions
//! (`GET /api/key/history`), compaction by request and by age, and what each refuses.

use std::time::{Duration, Instant};

use kg_api::{
    Attach, DeleteReason, EventType, KeyHistoryResponse, Precondition, TxnOp, TxnRequest,
};
use serde_json::{json, Value};

use kg_testkit::{spawn_app, spawn_app_with, AppOptions, Backend, TestApp};

on_both_backends!(
    reads_at_a_past_revision_see_the_keys_as_they_were,
    a_key_history_lists_every_version_newest_first,
    compaction_drops_the_history_below_its_revision,
    history_past_its_retention_is_compacted,
    a_lease_end_is_a_version_with_its_reason,
    concurrent_writes_read_back_at_every_revision,
    a_key_written_hundreds_of_times_reads_back_at_every_revision,
    compactions_racing_writers_that_recreate_purged_keys_never_fail_or_lose_a_write,
);

/// Status and JSON body of a GET.
async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post_compact(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/api/compact"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Every key of a listing at `revision`, with its value.
async fn listed_at(app: &TestApp, prefix: &str, revision: i64) -> Vec<(String, String)> {
    let (status, body) = get_json(
        app,
        &format!("/api/keys?prefix={prefix}&revision={revision}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next"], Value::Null);
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            (
                record["key"].as_str().unwrap().to_owned(),
                record["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

async fn reads_at_a_past_revision_see_the_keys_as_they_were(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let put = |key: &'static str, value: &'static str| async move {
        client
            .put(key, value, Precondition::None)
            .await
            .unwrap()
            .revision
    };
    let r1 = put("h/a", "1").await;
    let r2 = put("h/a", "2").await;
    let r3 = put("h/b", "x").await;
    let r4 = client
        .delete("h/a", Precondition::None)
        .await
        .unwrap()
        .revision;
    let r5 = put("h/a", "3").await;
    let transaction = TxnRequest {
        success: vec![
            TxnOp::Put {
                key: "h/a".to_owned(),
                value: "4".to_owned(),
                lease: None,
            },
            TxnOp::Put {
                key: "h/c".to_owned(),
                value: "y".to_owned(),
                lease: None,
            },
            TxnOp::Delete {
                key: "h/b".to_owned(),
            },
        ],
        ..TxnRequest::default()
    };
    let r6 = client.txn(&transaction, None).await.unwrap().revision;
    put("other", "z").await;

    // The key at each revision, with the metadata it had then.
    let at = |revision| async move { client.get_at("h/a", revision).await };
    let first = at(r1).await.unwrap();
    assert_eq!(
        (first.value.as_str(), first.mod_revision, first.version),
        ("1", r1, 1)
    );
    assert_eq!(
        first.meta.cache_hit,
        Some(false),
        "a past version is read from the database"
    );
    for revision in [r2, r3] {
        let second = at(revision).await.unwrap();
        assert_eq!(
            (second.value.as_str(), second.mod_revision, second.version),
            ("2", r2, 2)
        );
    }
    let gone = at(r4).await.unwrap_err();
    assert_eq!(gone.status().map(|s| s.as_u16()), Some(404), "{gone}");
    let recreated = at(r5).await.unwrap();
    assert_eq!(
        (
            recreated.value.as_str(),
            recreated.create_revision,
            recreated.version
        ),
        ("3", r5, 1),
        "a key created again starts again"
    );
    assert_eq!(at(r6).await.unwrap().value, "4");

    // A listing at a revision, whole and page by page.
    assert_eq!(listed_at(&app, "h/", r1).await, pairs(&[("h/a", "1")]));
    assert_eq!(
        listed_at(&app, "h/", r3).await,
        pairs(&[("h/a", "2"), ("h/b", "x")])
    );
    assert_eq!(listed_at(&app, "h/", r4).await, pairs(&[("h/b", "x")]));
    assert_eq!(
        listed_at(&app, "h/", r6).await,
        pairs(&[("h/a", "4"), ("h/c", "y")])
    );
    let (status, page) =
        get_json(&app, &format!("/api/keys?prefix=h/&revision={r3}&limit=1")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["keys"][0]["key"], "h/a");
    assert_eq!(page["next"], "h/a");
    let (_, page) = get_json(
        &app,
        &format!("/api/keys?prefix=h/&revision={r3}&limit=1&after=h/a&keys_only=true"),
    )
    .await;
    assert_eq!(page["keys"][0]["key"], "h/b");
    assert_eq!(page["keys"][0]["mod_revision"], r3);
    assert_eq!(
        page["keys"][0].get("value"),
        None,
        "keys_only at a revision"
    );
    for (revision, count) in [(r1, 1), (r3, 2), (r4, 1), (r6, 2)] {
        let (status, body) = get_json(
            &app,
            &format!("/api/keys?prefix=h/&revision={revision}&count_only=true"),
        )
        .await;
        assert_eq!((status, body["count"].as_u64()), (200, Some(count)));
    }

    // Refusals, each with a detail.
    let current = client
        .txn(&TxnRequest::default(), None)
        .await
        .unwrap()
        .revision;
    for path in [
        format!("/api/key?key=h/a&revision={}", current + 1),
        format!("/api/keys?revision={}", current + 1),
        "/api/key?key=h/a&revision=0".to_owned(),
        "/api/key?key=h/a&revision=-1".to_owned(),
        "/api/key?key=h/a&revision=abc".to_owned(),
        "/api/keys?revision=".to_owned(),
    ] {
        let (status, body) = get_json(&app, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("revision"),
            "{body}"
        );
    }
    let (_, body) = get_json(&app, &format!("/api/key?key=h/a&revision={}", current + 1)).await;
    assert_eq!(
        body["detail"],
        format!(
            "revision {} is in the future: the current revision is {current}",
            current + 1
        )
    );
    // The current revision is a past one like any other.
    assert_eq!(client.get_at("h/a", current).await.unwrap().value, "4");
}

async fn history_of(app: &TestApp, query: &str) -> KeyHistoryResponse {
    let (status, body) = get_json(app, &format!("/api/key/history?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_value(body).unwrap()
}

async fn a_key_history_lists_every_version_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let r1 = client.put("k", "one", Precondition::None).await.unwrap();
    let r2 = client.put("k", "two", Precondition::None).await.unwrap();
    client.put("other", "x", Precondition::None).await.unwrap();
    let r3 = client.delete("k", Precondition::None).await.unwrap();
    let r4 = client.put("k", "three", Precondition::None).await.unwrap();

    let whole = history_of(&app, "key=k").await;
    assert_eq!(whole.key, "k");
    assert_eq!(whole.next, None);
    assert_eq!(whole.compact_revision, 0);
    let seen: Vec<_> = whole
        .history
        .iter()
        .map(|version| {
            (
                version.kind,
                version.revision,
                version.version,
                version.create_revision,
                version.value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (EventType::Put, r4.revision, 1, r4.revision, Some("three")),
            (EventType::Delete, r3.revision, 0, 0, None),
            (EventType::Put, r2.revision, 2, r1.revision, Some("two")),
            (EventType::Put, r1.revision, 1, r1.revision, Some("one")),
        ]
    );
    assert!(whole.history.iter().all(|version| !version.node.is_empty()));
    assert!(
        whole
            .history
            .windows(2)
            .all(|pair| pair[0].at >= pair[1].at),
        "commit times go back in time with the revisions"
    );

    // Page by page through `next`, and through the typed client.
    let first = history_of(&app, "key=k&limit=3").await;
    assert_eq!(first.history.len(), 3);
    assert_eq!(first.next, Some(r2.revision));
    let rest = history_of(&app, &format!("key=k&limit=3&before={}", r2.revision)).await;
    assert_eq!(rest.history, whole.history[3..]);
    assert_eq!(rest.next, None);
    let typed = client.history("k", None, Some(2)).await.unwrap();
    assert_eq!(typed.history, whole.history[..2]);
    assert_eq!(typed.next, Some(r3.revision));

    let never = history_of(&app, "key=never").await;
    assert!(never.history.is_empty() && never.next.is_none());

    for query in [
        "",
        "key=",
        "key=k&limit=0",
        "key=k&limit=1001",
        "key=k&before=0",
        "key=k&revision=1",
    ] {
        let (status, body) = get_json(&app, &format!("/api/key/history?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
}

async fn compaction_drops_the_history_below_its_revision(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let r1 = client
        .put("c/a", "1", Precondition::None)
        .await
        .unwrap()
        .revision;
    client.put("c/b", "x", Precondition::None).await.unwrap();
    client.delete("c/b", Precondition::None).await.unwrap();
    let r2 = client
        .put("c/a", "2", Precondition::None)
        .await
        .unwrap()
        .revision;
    let r3 = client
        .put("c/a", "3", Precondition::None)
        .await
        .unwrap()
        .revision;

    // Refused, with nothing dropped: a revision not yet written, a negative one, other fields.
    for body in [
        json!({"revision": r3 + 1}),
        json!({"revision": -1}),
        json!({"revision": r2, "physical": true}),
        json!({"revision": "2"}),
        json!({}),
    ] {
        let (status, answer) = post_compact(&app, &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer["detail"].is_string(), "{answer}");
    }
    assert_eq!(client.get_at("c/a", r1).await.unwrap().value, "1");

    let (status, done) = post_compact(&app, &json!({"revision": r2})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["compact_revision"], r2);
    // c/a's first version and c/b's put were replaced below r2; c/b's tombstone is purged.
    assert_eq!(
        (done["versions"].as_u64(), done["tombstones"].as_u64()),
        (Some(2), Some(1))
    );

    let refused = client.get_at("c/a", r1).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(410), "{refused}");
    let (status, body) = get_json(&app, &format!("/api/key?key=c/a&revision={}", r2 - 1)).await;
    assert_eq!(status, 410);
    assert_eq!(
        body["detail"],
        format!(
            "revision {} is compacted: the history below revision {r2} has been dropped; \
             read at revision {r2} or later",
            r2 - 1
        )
    );
    let (status, _) = get_json(&app, &format!("/api/keys?revision={r1}")).await;
    assert_eq!(status, 410);
    // The compact revision itself, and everything after it, is still readable.
    assert_eq!(client.get_at("c/a", r2).await.unwrap().value, "2");
    assert_eq!(listed_at(&app, "c/", r2).await, pairs(&[("c/a", "2")]));
    let history = history_of(&app, "key=c/a").await;
    assert_eq!(history.compact_revision, r2);
    let revisions: Vec<i64> = history.history.iter().map(|v| v.revision).collect();
    assert_eq!(
        revisions,
        [r3, r2],
        "the version current at the compact revision stays"
    );
    // Watches cannot resume below it either.
    let watch = app
        .http
        .get(app.url(&format!("/api/watch?from_revision={}", r2 - 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status().as_u16(), 410);

    // Compacting again below it changes nothing, as through the typed client.
    let again = client.compact(r1).await.unwrap();
    assert_eq!(
        (again.compact_revision, again.versions, again.tombstones),
        (r2, 0, 0)
    );
    assert_eq!(client.compact(r3).await.unwrap().compact_revision, r3);
    assert_eq!(client.get_at("c/a", r3).await.unwrap().value, "3");
}

async fn history_past_its_retention_is_compacted(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions {
            extra_args: vec!["--history-retention=1s".to_owned()],
            ..AppOptions::default()
        },
    )
    .await;
    let client = &app.client;
    let old = client
        .put("r/a", "1", Precondition::None)
        .await
        .unwrap()
        .revision;
    let replaced = client
        .put("r/a", "2", Precondition::None)
        .await
        .unwrap()
        .revision;
    // Compaction runs every half retention (at least every second) and cuts at the newest
    // revision committed more than a retention ago.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let history = history_of(&app, "key=r/a").await;
        if history.compact_revision >= replaced {
            let revisions: Vec<i64> = history.history.iter().map(|v| v.revision).collect();
            assert_eq!(revisions, [replaced], "the replaced version is dropped");
            break;
        }
        assert!(Instant::now() < deadline, "not compacted: {history:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = client.get_at("r/a", old).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(410), "{refused}");
    assert_eq!(client.get_at("r/a", replaced).await.unwrap().value, "2");
}

async fn a_lease_end_is_a_version_with_its_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    let put = client
        .put_with("l/a", "v", Precondition::None, Attach::Ttl(1))
        .await
        .unwrap();
    let lease = client.get("l/a").await.unwrap().lease.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let history = history_of(&app, "key=l/a").await;
        if history.history.len() == 2 {
            break history;
        }
        assert!(Instant::now() < deadline, "no expiry: {history:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (delete, written) = (&expired.history[0], &expired.history[1]);
    assert_eq!(
        (delete.kind, delete.reason, delete.value.as_deref()),
        (EventType::Delete, Some(DeleteReason::Expired), None)
    );
    assert_eq!(
        (written.revision, written.lease, written.value.as_deref()),
        (put.revision, Some(lease), Some("v"))
    );
    // Before its expiry's revision the key was there, and at it not.
    assert_eq!(client.get_at("l/a", put.revision).await.unwrap().value, "v");
    let after = client.get_at("l/a", delete.revision).await.unwrap_err();
    assert_eq!(after.status().map(|s| s.as_u16()), Some(404));
}

/// Writers race on a few keys with puts, deletes and two-key transactions; every write is
/// acknowledged, so each key's whole history is known. Then every revision from the first to
/// the last is read for every key, and each read must show the last write at or below it.
async fn concurrent_writes_read_back_at_every_revision(backend: Backend) {
    const KEYS: [&str; 4] = ["w/a", "w/b", "w/c", "w/d"];
    let app = spawn_app(backend).await;
    let writers = (0..6).map(|writer: usize| {
        let client = app.client.clone();
        tokio::spawn(async move {
            let mut written: Vec<(String, i64, Option<String>)> = Vec::new();
            for step in 0..30usize {
                let key = KEYS[(writer + step) % KEYS.len()];
                let value = format!("{writer}:{step}");
                match step % 5 {
                    3 => {
                        if let Ok(done) = client.delete(key, Precondition::None).await {
                            written.push((key.to_owned(), done.revision, None));
                        }
                    }
                    4 => {
                        let other = KEYS[(writer + step + 1) % KEYS.len()];
                        let txn = TxnRequest {
                            success: [key, other]
                                .iter()
                                .map(|key| TxnOp::Put {
                                    key: (*key).to_owned(),
                                    value: value.clone(),
                                    lease: None,
                                })
                                .collect(),
                            ..TxnRequest::default()
                        };
                        let done = client.txn(&txn, None).await.unwrap();
                        for key in [key, other] {
                            written.push((key.to_owned(), done.revision, Some(value.clone())));
                        }
                    }
                    _ => {
                        let done = client.put(key, &value, Precondition::None).await.unwrap();
                        written.push((key.to_owned(), done.revision, Some(value)));
                    }
                }
            }
            written
        })
    });
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let last = written
        .iter()
        .map(|(_, revision, _)| *revision)
        .max()
        .unwrap();
    let mut checked = 0;
    for key in KEYS {
        let mut versions: Vec<(i64, Option<String>)> = written
            .iter()
            .filter(|(written_key, _, _)| written_key == key)
            .map(|(_, revision, value)| (*revision, value.clone()))
            .collect();
        versions.sort();
        for revision in 1..=last {
            let expected = versions
                .iter()
                .rev()
                .find(|(at, _)| *at <= revision)
                .and_then(|(_, value)| value.clone());
            let found = match app.client.get_at(key, revision).await {
                Ok(read) => Some(read.value),
                Err(err) if err.status().map(|s| s.as_u16()) == Some(404) => None,
                Err(err) => panic!("{key} at {revision}: {err}"),
            };
            assert_eq!(found, expected, "{key} at revision {revision}");
            checked += 1;
        }
        // The history lists exactly the acknowledged writes, newest first.
        let history = app.client.history(key, None, Some(1000)).await.unwrap();
        let listed: Vec<(i64, Option<String>)> = history
            .history
            .iter()
            .rev()
            .map(|version| (version.revision, version.value.clone()))
            .collect();
        assert_eq!(listed, versions, "{key}");
    }
    assert!(checked > 4 * 150, "{checked} reads");
}

/// A key rewritten past several checkpoints (every 64th version, and each delete), with
/// another key's writes between, so that most revisions are not one of its versions: every
/// read at a revision, and every page of its history from any `before`, is the one the
/// writes made, before and after a compaction into the middle of them.
async fn a_key_written_hundreds_of_times_reads_back_at_every_revision(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = &app.client;
    // (revision, value) of each version of "hot", a delete as None.
    let mut versions: Vec<(i64, Option<String>)> = Vec::new();
    for step in 0..300usize {
        if step % 3 == 2 {
            client
                .put("cold", &step.to_string(), Precondition::None)
                .await
                .unwrap();
        }
        if step == 150 {
            let done = client.delete("hot", Precondition::None).await.unwrap();
            versions.push((done.revision, None));
        } else {
            let value = step.to_string();
            let done = client.put("hot", &value, Precondition::None).await.unwrap();
            versions.push((done.revision, Some(value)));
        }
    }
    let last = versions.last().unwrap().0;
    let value_at = |revision: i64| {
        versions
            .iter()
            .rev()
            .find(|(at, _)| *at <= revision)
            .and_then(|(_, value)| value.clone())
    };
    // Newest first, from `before` (exclusive), in pages of 7.
    let history_from = |before: Option<i64>| async move {
        let mut listed = Vec::new();
        let mut next = before;
        loop {
            let page = client.history("hot", next, Some(7)).await.unwrap();
            listed.extend(
                page.history
                    .iter()
                    .map(|version| (version.revision, version.value.clone())),
            );
            match page.next {
                Some(revision) => next = Some(revision),
                None => return listed,
            }
        }
    };

    let versions = &versions;
    let check = |floor: i64| {
        async move {
            for revision in floor..=last {
                let found = match client.get_at("hot", revision).await {
                    Ok(read) => Some(read.value),
                    Err(err) if err.status().map(|s| s.as_u16()) == Some(404) => None,
                    Err(err) => panic!("at {revision}: {err}"),
                };
                assert_eq!(found, value_at(revision), "hot at revision {revision}");
            }
            // The version current at the floor, and every one after it.
            let kept: Vec<_> = versions
                .iter()
                .filter(|(at, _)| *at > floor)
                .chain(versions.iter().rev().find(|(at, _)| *at <= floor))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .rev()
                .collect();
            assert_eq!(history_from(None).await, kept);
            for before in (floor + 1..=last).step_by(37) {
                let expected: Vec<_> = kept
                    .iter()
                    .filter(|(at, _)| *at < before)
                    .cloned()
                    .collect();
                assert_eq!(
                    history_from(Some(before)).await,
                    expected,
                    "before {before}"
                );
            }
        }
    };
    check(versions[0].0).await;
    let middle = versions[200].0 - 1;
    let (status, body) = post_compact(&app, &json!({ "revision": middle })).await;
    assert_eq!(status, 200, "{body}");
    check(middle).await;
}

/// Compactions race writers that re-create the keys whose tombstones they purge: no request
/// fails (a compaction and a write batch that wait on each other's locks would be a deadlock
/// that PostgreSQL breaks by failing one of them) and no write is lost.
async fn compactions_racing_writers_that_recreate_purged_keys_never_fail_or_lose_a_write(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let keys: Vec<String> = (0..64).map(|i| format!("race/{i:02}")).collect();
    let mut failures = Vec::new();
    for round in 0..25 {
        // Tombstones for the compaction to purge, in one batch as concurrent deletes go.
        let deletes = keys.iter().map(|key| {
            app.http
                .delete(app.url(&format!("/api/key?key={key}")))
                .send()
        });
        for response in futures::future::join_all(deletes).await {
            let status = response.unwrap().status().as_u16();
            if status >= 500 {
                failures.push(format!("round {round}: a delete answered {status}"));
            }
        }
        let current = app.client.status().await.unwrap().revision.unwrap();
        let body = json!({ "revision": current });
        let compact = post_compact(&app, &body);
        let value = format!("round {round}");
        let puts = keys.iter().map(|key| {
            app.http
                .put(app.url("/api/key"))
                .json(&json!({"data": {"key": key, "value": value}}))
                .send()
        });
        let (compacted, puts) = tokio::join!(compact, futures::future::join_all(puts));
        if compacted.0 >= 500 {
            failures.push(format!(
                "round {round}: the compaction answered {compacted:?}"
            ));
        }
        for response in puts {
            let response = response.unwrap();
            let status = response.status().as_u16();
            if status >= 500 {
                let body = response.text().await.unwrap();
                failures.push(format!("round {round}: a put answered {status} {body}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures, the first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    for key in &keys {
        assert_eq!(
            app.client.get(key).await.unwrap().value,
            "round 24",
            "{key}"
        );
    }
}
