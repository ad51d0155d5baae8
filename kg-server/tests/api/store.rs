//! The `Store` contract, run directly (no HTTP) against both backends: batch semantics are
//! where the two implementations could drift apart.

use kg_server::store::{Expect, WriteOp, WriteOutcome};

use crate::helpers::{fresh_database, open_store, Backend};

on_both_backends!(
    batch_applies_ops_in_order_with_consecutive_revisions,
    idempotency_keys_replay_the_recorded_outcome,
    changes_replay_latest_states_and_compaction_purges_old_tombstones,
);

fn put(key: &str, value: &str, expect: Expect) -> WriteOp {
    WriteOp {
        key: key.to_owned(),
        value: Some(value.to_owned()),
        expect,
        idempotency_key: None,
    }
}

fn delete(key: &str, expect: Expect) -> WriteOp {
    WriteOp {
        key: key.to_owned(),
        value: None,
        expect,
        idempotency_key: None,
    }
}

fn applied(revision: i64, create_revision: i64, version: i64) -> WriteOutcome {
    WriteOutcome::Applied {
        revision,
        create_revision,
        version,
    }
}

async fn batch_applies_ops_in_order_with_consecutive_revisions(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&fresh_database(backend, dir.path()).await).await;
    assert_eq!(store.current_revision().await.unwrap(), 0);

    // Later ops in a batch see the earlier ones; failed ops consume no revision.
    let batch = [
        put("a", "1", Expect::Absent),
        put("a", "2", Expect::Absent),
        put("a", "3", Expect::Revision(1)),
        delete("b", Expect::Any),
        put("b", "x", Expect::Exists),
        delete("a", Expect::Revision(1)),
        delete("a", Expect::Revision(2)),
        put("a", "4", Expect::Any),
        put("c", "\u{0}", Expect::Any),
    ];
    let results = store.apply("test-node", &batch).await.unwrap();
    assert!(results.iter().all(|result| !result.replayed));
    let outcomes: Vec<WriteOutcome> = results.iter().map(|result| result.outcome).collect();
    assert_eq!(
        outcomes,
        [
            applied(1, 1, 1),
            WriteOutcome::PreconditionFailed,
            applied(2, 1, 2),
            WriteOutcome::NotFound,
            WriteOutcome::PreconditionFailed,
            WriteOutcome::PreconditionFailed,
            applied(3, 0, 0),
            applied(4, 4, 1),
            applied(5, 5, 1),
        ]
    );
    assert_eq!(store.current_revision().await.unwrap(), 5);
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.value.as_str(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        ("4", 4, 4, 1)
    );
    assert_eq!(store.get("c").await.unwrap().unwrap().value, "\u{0}");
    assert_eq!(store.get("b").await.unwrap(), None);

    assert!(
        store.apply("test-node", &[]).await.unwrap().is_empty(),
        "an empty batch is a no-op"
    );
    assert_eq!(store.current_revision().await.unwrap(), 5);

    let listed = store.list("", None, 10).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|record| record.key.as_str()).collect();
    assert_eq!(keys, ["a", "c"]);
    let after_a = store.list("", Some("a"), 10).await.unwrap();
    assert_eq!(after_a.len(), 1);
}

async fn changes_replay_latest_states_and_compaction_purges_old_tombstones(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&fresh_database(backend, dir.path()).await).await;
    let batch = [
        put("a/1", "x", Expect::Any),
        put("a/2", "y", Expect::Any),
        put("a/1", "z", Expect::Any),
        delete("a/2", Expect::Any),
        put("b/1", "w", Expect::Any),
    ];
    store.apply("node-a", &batch).await.unwrap();

    // Only each key's latest state, in revision order, deletes included.
    let changes = store.changes_since(0, "", 100).await.unwrap();
    let seen: Vec<_> = changes
        .iter()
        .map(|change| {
            (
                change.key.as_str(),
                change.revision,
                change.value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a/1", 3, Some("z")),
            ("a/2", 4, None),
            ("b/1", 5, Some("w"))
        ]
    );
    assert!(changes
        .iter()
        .all(|change| change.node == "node-a" && change.at_ms > 0));
    assert_eq!(
        store.changes_since(3, "a/", 100).await.unwrap().len(),
        1,
        "prefix and after"
    );
    assert_eq!(
        store.changes_since(0, "", 2).await.unwrap().len(),
        2,
        "limit"
    );

    assert_eq!(store.compact_revision().await.unwrap(), 0);
    assert_eq!(
        store
            .compact(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "too young"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(store.compact(std::time::Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.compact_revision().await.unwrap(), 4);
    let keys: Vec<_> = store
        .changes_since(0, "", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(
        keys,
        ["a/1", "b/1"],
        "the tombstone is gone, live keys stay"
    );
}

fn keyed(mut op: WriteOp, idempotency_key: &str) -> WriteOp {
    op.idempotency_key = Some(idempotency_key.to_owned());
    op
}

/// A write retried with its idempotency key is answered with the first outcome, also within
/// one batch and also for failures, and consumes no revision; a key reused for a different
/// write is refused.
async fn idempotency_keys_replay_the_recorded_outcome(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&fresh_database(backend, dir.path()).await).await;
    let first = store
        .apply("n1", &[keyed(put("k", "v", Expect::Any), "req-1")])
        .await
        .unwrap();
    assert_eq!(
        (first[0].outcome, first[0].replayed),
        (applied(1, 1, 1), false)
    );

    let batch = [
        keyed(put("k", "v", Expect::Any), "req-1"), // retry of the first write
        keyed(put("k", "w", Expect::Revision(9)), "req-2"), // fails, and is recorded
        keyed(put("k", "w", Expect::Revision(9)), "req-2"), // retry within the same batch
        keyed(put("k", "other value", Expect::Any), "req-1"), // the key reused: refused
        keyed(delete("k", Expect::Any), "req-3"),
    ];
    let results = store.apply("n2", &batch).await.unwrap();
    let seen: Vec<_> = results
        .iter()
        .map(|result| (result.outcome, result.replayed))
        .collect();
    assert_eq!(
        seen,
        [
            (applied(1, 1, 1), true),
            (WriteOutcome::PreconditionFailed, false),
            (WriteOutcome::PreconditionFailed, true),
            (WriteOutcome::IdempotencyMismatch, true),
            (applied(2, 0, 0), false),
        ]
    );
    let retried_delete = store
        .apply("n3", &[keyed(delete("k", Expect::Any), "req-3")])
        .await
        .unwrap();
    assert_eq!(
        (retried_delete[0].outcome, retried_delete[0].replayed),
        (applied(2, 0, 0), true)
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        2,
        "replays consume no revision"
    );

    // Records are purged with the tombstones; after that the key is new again.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.compact(std::time::Duration::ZERO).await.unwrap();
    let after_purge = store
        .apply("n1", &[keyed(put("k", "v", Expect::Any), "req-1")])
        .await
        .unwrap();
    assert!(!after_purge[0].replayed);
}
