//! Expiry goes through the history checker: keys written with a TTL on three nodes (shared
//! PostgreSQL, Redis cache on), read concurrently through every node, each expiry recorded as
//! the delete it is, and the whole history judged for linearizability and stale reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kg_api::{Attach, DeleteReason, EventType, Precondition};
use kg_bench::check::{check_history, registers, Verdict};
use kg_bench::history::{HistoryEntry, HistoryOutcome};
use kg_bench::judge::{reused_revisions, stale_reads};
use kg_bench::workload::Op;
use kg_testkit::{
    fresh_database, spawn_app_on, test_redis_url, unique_prefix, AppOptions, Backend,
};

/// A key's lease, in seconds.
const TTL: u64 = 1;
const KEYS: usize = 6;
const READERS: usize = 4;
/// The history's clients: writers are 0..KEYS, readers after them, the expiries last.
const EXPIRY_CLIENT: usize = KEYS + READERS;

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap()
}

/// Each expiry is a delete that took effect at its lease's deadline. The deadline is the
/// database's clock at the grant plus the TTL, and the grant ran inside the PUT, so the
/// delete's window is the PUT's own window moved a TTL later: exactly what a linearizable
/// store must show, whether or not its sweeper has run yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_are_judged_linearizable_with_reads_on_every_node() {
    let _shared = super::LOAD.read().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = fresh_database(Backend::Postgres, dir.path()).await;
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for (id, sweep) in [("n1", "200ms"), ("n2", "200ms"), ("n3", "700ms")] {
        let mut options = AppOptions::with_redis(&test_redis_url(), &prefix);
        options.node_id = Some(id.to_owned());
        options
            .extra_args
            .push(format!("--lease-sweep-interval={sweep}"));
        nodes.push(spawn_app_on(&url, dir.clone(), options).await);
    }
    let clients: Vec<kg_api::Client> = nodes.iter().map(|node| node.client.clone()).collect();
    let history: Arc<Mutex<Vec<HistoryEntry>>> = Arc::default();
    let started = Instant::now();
    let run_for = Duration::from_secs(6);

    // Expiry events, from one watch, to the writer of each key.
    let mut watch = clients[0].watch(Some("ttl/"), None).await.unwrap();
    let mut expired_tx = BTreeMap::new();
    let mut expired_rx = Vec::new();
    for key in 0..KEYS {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
        expired_tx.insert(format!("ttl/{key}"), tx);
        expired_rx.push(rx);
    }
    let watcher = tokio::spawn(async move {
        while let Some(Ok(event)) = watch.next().await {
            if event.kind == EventType::Delete {
                assert_eq!(event.reason, Some(DeleteReason::Expired), "{event:?}");
                if let Some(tx) = expired_tx.get(&event.key) {
                    let _ = tx.send(event.revision);
                }
            }
        }
    });

    let mut tasks = Vec::new();
    for (writer, mut expired) in expired_rx.into_iter().enumerate() {
        let (clients, history) = (clients.clone(), history.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("ttl/{writer}");
            let mut round = 0;
            while started.elapsed() < run_for {
                let value = format!("w{writer}-{round}");
                let invoke_us = micros(started);
                let written = clients[round % clients.len()]
                    .put_with(&key, &value, Precondition::None, Attach::Ttl(TTL))
                    .await
                    .unwrap();
                let complete_us = micros(started);
                let entry = |op, value, revision, invoke_us, complete_us, client| HistoryEntry {
                    client,
                    op,
                    key: key.clone(),
                    value,
                    expected: None,
                    revision: Some(revision),
                    invoke_us,
                    complete_us,
                    outcome: HistoryOutcome::Ok,
                    error: None,
                    node: None,
                    deleted: None,
                    txn: None,
                    idempotency_key: None,
                    retry: false,
                    at_revision: None,
                };
                history.lock().unwrap().push(entry(
                    Op::Put,
                    Some(value),
                    written.revision,
                    invoke_us,
                    complete_us,
                    writer,
                ));
                // The next put waits for this one's expiry, so every expiry has its delete.
                let revision = tokio::time::timeout(kg_testkit::PATIENCE, expired.recv())
                    .await
                    .expect("the expiry's delete event")
                    .unwrap();
                let ttl_us = TTL * 1_000_000;
                history.lock().unwrap().push(entry(
                    Op::Delete,
                    None,
                    revision,
                    invoke_us + ttl_us,
                    complete_us + ttl_us,
                    EXPIRY_CLIENT,
                ));
                round += 1;
            }
        }));
    }
    for reader in 0..READERS {
        let (clients, history) = (clients.clone(), history.clone());
        tasks.push(tokio::spawn(async move {
            let mut count = 0_usize;
            while started.elapsed() < run_for + Duration::from_secs(2) {
                let key = format!("ttl/{}", (reader + count) % KEYS);
                let client = &clients[(reader + count) % clients.len()];
                let invoke_us = micros(started);
                let read = client.get(&key).await;
                let complete_us = micros(started);
                let (value, revision) = match read {
                    Ok(read) => (Some(read.value), Some(read.mod_revision)),
                    Err(kg_api::Error::NotFound { .. }) => (None, None),
                    Err(err) => panic!("{err}"),
                };
                history.lock().unwrap().push(HistoryEntry {
                    client: KEYS + reader,
                    op: Op::Get,
                    key,
                    value,
                    expected: None,
                    revision,
                    invoke_us,
                    complete_us,
                    outcome: HistoryOutcome::Ok,
                    error: None,
                    node: None,
                    deleted: None,
                    txn: None,
                    idempotency_key: None,
                    retry: false,
                    at_revision: None,
                });
                count += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    watcher.abort();

    let history = history.lock().unwrap().clone();
    let expiries = history.iter().filter(|h| h.op == Op::Delete).count();
    let seen = history
        .iter()
        .filter(|h| h.op == Op::Get && h.value.is_some())
        .count();
    let missed = history
        .iter()
        .filter(|h| h.op == Op::Get && h.value.is_none())
        .count();
    println!(
        "{} operations: {expiries} expiries, reads {seen} of a value and {missed} of no key",
        history.len()
    );
    // Not vacuous: keys expired many times, and reads saw them both alive and gone.
    assert!(expiries >= KEYS * 2, "{expiries} expiries");
    assert!(seen > 50 && missed > 50, "{seen} / {missed}");
    let stale = stale_reads(&history);
    assert!(
        stale.is_empty(),
        "{} stale reads, the first: {:?}",
        stale.len(),
        stale.first()
    );
    assert!(reused_revisions(&history).is_empty());
    for result in check_history(&registers(&history), 200_000, 2_000_000) {
        assert_eq!(result.verdict, Verdict::Linearizable, "{}", result.key);
    }
}
