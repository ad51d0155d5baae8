//! The `Store` contract, run directly (no HTTP) against both backends: batch semantics are
//! where the two implementations could drift apart.

use sqlx::Connection as _;

use kg_server::store::{Compacted, Expect, ListQuery, WriteOp, WriteOutcome};

use kg_testkit::{fresh_database, open_store, Backend};

on_both_backends!(
    batch_applies_ops_in_order_with_consecutive_revisions,
    idempotency_keys_replay_the_recorded_outcome,
    changes_replay_latest_states_and_compaction_purges_old_tombstones,
);

/// One batch's arguments to kg_apply, and its rows back.
type ApplyArgs = (
    Vec<bool>,
    Vec<String>,
    Vec<Option<Vec<u8>>>,
    Vec<Option<i64>>,
    Vec<Option<String>>,
    Vec<Option<String>>,
);
type ApplyRow = (i16, Option<i64>, Option<i64>, Option<i64>, bool);

async fn call_apply(pool: &sqlx::PgPool, function: &str, args: &ApplyArgs) -> Vec<ApplyRow> {
    let (deletes, keys, values, expects, idem, fingerprints) = args.clone();
    sqlx::query_as(&format!(
        "SELECT * FROM {function}('n', $1, $2, $3, $4, $5, $6, NULL::bigint[])"
    ))
    .bind(deletes)
    .bind(keys)
    .bind(values)
    .bind(expects)
    .bind(idem)
    .bind(fingerprints)
    .fetch_all(pool)
    .await
    .unwrap_or_else(|err| panic!("{function}: {err}"))
}

/// PostgreSQL's kg_apply is one set-based statement for batches whose keys and idempotency
/// keys are distinct, and the row-by-row loop (kg_apply_serial) otherwise. Random batches of
/// puts, deletes, preconditions, replays and reused idempotency keys must give both the same
/// answers and leave the same tables.
#[tokio::test]
async fn postgres_set_based_apply_matches_the_serial_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut pools = Vec::new();
    for _ in 0..2 {
        let url = fresh_database(Backend::Postgres, dir.path()).await;
        drop(open_store(&url).await); // runs the migrations
        pools.push(sqlx::PgPool::connect(&url).await.unwrap());
    }
    // A small deterministic generator, so a failure replays exactly.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut applied = 0;
    for round in 0..60 {
        let mut keys: Vec<String> = (0..8).map(|k| format!("k{k}")).collect();
        let mut idem_ids: Vec<String> = (0..10).map(|i| format!("i{i}")).collect();
        let mut args: ApplyArgs = Default::default();
        // Two to seven writes: a batch of one goes to the loop on both sides.
        for _ in 0..2 + next(6) {
            let key = keys.remove(next(keys.len() as u64) as usize);
            let delete = next(4) == 0;
            args.0.push(delete);
            args.1.push(key);
            args.2
                .push((!delete).then(|| format!("v{round}-{}", next(3)).into_bytes()));
            args.3.push(match next(6) {
                0 => Some(-1),
                1 => Some(-2),
                2 => Some(i64::try_from(next(applied + 2)).unwrap()),
                _ => None,
            });
            let idem =
                (next(2) == 0).then(|| idem_ids.remove(next(idem_ids.len() as u64) as usize));
            args.5.push(idem.as_ref().map(|_| format!("f{}", next(2))));
            args.4.push(idem);
        }
        let set_based = call_apply(&pools[0], "kg_apply", &args).await;
        let serial = call_apply(&pools[1], "kg_apply_serial", &args).await;
        assert_eq!(set_based, serial, "round {round}: {args:?}");
        applied += set_based.iter().filter(|row| row.0 == 0 && !row.4).count() as u64;
    }
    assert!(
        applied > 50,
        "too few writes applied to test much ({applied})"
    );
    let keys =
        "SELECT key, value, create_revision, mod_revision, version FROM kg_keys ORDER BY key";
    let idem = "SELECT id, fingerprint, status, revision, create_revision, version \
                FROM kg_idempotency ORDER BY id";
    type KeyRow = (String, Option<Vec<u8>>, i64, i64, i64);
    type IdemRow = (String, String, i16, Option<i64>, Option<i64>, Option<i64>);
    let key_rows: Vec<Vec<KeyRow>> = vec![
        sqlx::query_as(keys).fetch_all(&pools[0]).await.unwrap(),
        sqlx::query_as(keys).fetch_all(&pools[1]).await.unwrap(),
    ];
    assert_eq!(key_rows[0], key_rows[1]);
    let idem_rows: Vec<Vec<IdemRow>> = vec![
        sqlx::query_as(idem).fetch_all(&pools[0]).await.unwrap(),
        sqlx::query_as(idem).fetch_all(&pools[1]).await.unwrap(),
    ];
    assert_eq!(idem_rows[0], idem_rows[1]);
    let revision = "SELECT revision FROM kg_meta";
    let revisions: Vec<i64> = vec![
        sqlx::query_scalar(revision)
            .fetch_one(&pools[0])
            .await
            .unwrap(),
        sqlx::query_scalar(revision)
            .fetch_one(&pools[1])
            .await
            .unwrap(),
    ];
    assert_eq!(revisions[0], revisions[1]);
}

/// kg_apply's plan is made once per session and kept, so it must not depend on the tables'
/// sizes when it was made. Seen on fresh stacks: a session that planned it while the
/// statistics said kg_idempotency was empty read the whole table for every batch (a
/// materialised full index scan), and PUTs fell from 10,000/s to 500/s as the table grew.
/// The same held for kg_leases: a plan made while it was empty read every live lease for every
/// write once there were 10,000 (PUTs from 6,000/s to 2,000/s).
/// Here: plan with the tables empty and freshly analysed, grow each to 20,000 rows, and count
/// the index entries one more batch of 25 writes (puts on leases, and deletes) reads in each.
#[tokio::test]
async fn postgres_apply_probes_by_key_whatever_the_statistics_said_at_planning() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Backend::Postgres, dir.path()).await;
    drop(open_store(&url).await); // runs the migrations
    let mut session = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("VACUUM ANALYZE")
        .execute(&mut other)
        .await
        .unwrap();

    // Writes `first..first + 25`; the first `deletes` of them delete keys of the first batch.
    let batch = |first: usize, deletes: usize| -> ApplyArgs {
        let mut args = ApplyArgs::default();
        for i in first..first + 25 {
            let delete = i - first < deletes;
            let key = if delete { i - first } else { i };
            args.0.push(delete);
            args.1.push(format!("k{key}"));
            args.2.push((!delete).then(|| b"v".to_vec()));
            args.3.push(None);
            args.4.push(Some(format!("idem-{i}")));
            args.5.push(Some("f".to_owned()));
        }
        args
    };
    // With `leased`, every put on a lease of its own number (leases 1.. exist once the tables
    // are grown; while planning, kg_leases is empty).
    let apply = |args: ApplyArgs, leased: bool| {
        let leases: Vec<Option<i64>> = args
            .0
            .iter()
            .zip(&args.1)
            .map(|(delete, key)| (leased && !delete).then(|| key[1..].parse::<i64>().unwrap() + 1))
            .collect();
        sqlx::query("SELECT * FROM kg_apply('n', $1, $2, $3, $4, $5, $6, $7)")
            .bind(args.0)
            .bind(args.1)
            .bind(args.2)
            .bind(args.3)
            .bind(args.4)
            .bind(args.5)
            .bind(leases)
    };
    // The session plans kg_apply now, with both tables empty by their statistics.
    assert_eq!(
        apply(batch(0, 0), false)
            .fetch_all(&mut session)
            .await
            .unwrap()
            .len(),
        25
    );

    for grow in [
        "INSERT INTO kg_idempotency (id, fingerprint, status, revision, created_at) \
         SELECT 'old-' || g, 'f', 0, g, now() FROM generate_series(1, 20000) g",
        "INSERT INTO kg_keys (key, value, create_revision, mod_revision, version, mod_node, mod_at) \
         SELECT 'old-' || g, 'v', 0, 0, 1, 'n', now() FROM generate_series(1, 20000) g",
        "INSERT INTO kg_leases (ttl, deadline) \
         SELECT 3600, kg_now_ms() + 3600000 FROM generate_series(1, 20000)",
    ] {
        sqlx::query(grow).execute(&mut other).await.unwrap();
    }

    let mut transaction = sqlx::Connection::begin(&mut session).await.unwrap();
    let rows: Vec<ApplyRow> = apply(batch(25, 10), true)
        .fetch_all(&mut *transaction)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::FromRow::from_row(row).unwrap())
        .collect();
    // Ten deletes of live keys, then fifteen new keys: all applied, in batch order.
    let revisions: Vec<Option<i64>> = rows.iter().map(|row| row.1).collect();
    assert_eq!(revisions, (26..=50).map(Some).collect::<Vec<_>>());
    assert!(rows.iter().all(|row| row.0 == 0 && !row.4), "{rows:?}");
    // This transaction's reads so far, per index, counted by the session itself.
    let reads: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_stat_get_xact_tuples_returned(oid) FROM pg_class \
         WHERE relname IN ('kg_idempotency_pkey', 'kg_keys_pkey', 'kg_leases_pkey', \
           'kg_leases_deadline') ORDER BY 1",
    )
    .fetch_all(&mut *transaction)
    .await
    .unwrap();
    for (index, read) in &reads {
        // Two lease probes per write at most: the lease the key has, and the one it takes.
        let most = if index == "kg_leases_pkey" { 50 } else { 25 };
        assert!(
            *read <= most,
            "one batch of 25 read {read} entries of {index}: not one probe per write"
        );
    }
    assert_eq!(reads.len(), 4, "{reads:?}");
    // The deletes left tombstones (read after the count above, not to add to it).
    let tombstones: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kg_keys WHERE key = ANY($1) AND value IS NULL \
         AND create_revision = 0 AND version = 0 AND mod_revision BETWEEN 26 AND 35",
    )
    .bind((0..10).map(|i| format!("k{i}")).collect::<Vec<_>>())
    .fetch_one(&mut *transaction)
    .await
    .unwrap();
    assert_eq!(tombstones, 10);
}

fn put(key: &str, value: &str, expect: Expect) -> WriteOp {
    WriteOp {
        key: key.to_owned(),
        value: Some(value.to_owned()),
        expect,
        idempotency_key: None,
        lease: None,
        ttl: None,
    }
}

fn delete(key: &str, expect: Expect) -> WriteOp {
    WriteOp {
        key: key.to_owned(),
        value: None,
        expect,
        idempotency_key: None,
        lease: None,
        ttl: None,
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
            a.value.as_deref(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (Some("4"), 4, 4, 1)
    );
    assert_eq!(
        store.get("c").await.unwrap().unwrap().value.as_deref(),
        Some("\u{0}")
    );
    assert_eq!(store.get("b").await.unwrap(), None);

    assert!(
        store.apply("test-node", &[]).await.unwrap().is_empty(),
        "an empty batch is a no-op"
    );
    assert_eq!(store.current_revision().await.unwrap(), 5);

    let all = ListQuery {
        prefix: "",
        after: None,
        limit: 10,
        with_values: true,
        value_bytes: u64::MAX,
    };
    let listed = store.list(&all).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|record| record.key.as_str()).collect();
    assert_eq!(keys, ["a", "c"]);
    let after_a = store
        .list(&ListQuery {
            after: Some("a"),
            ..all
        })
        .await
        .unwrap();
    assert_eq!(after_a.len(), 1);
    // Keys only: the same keys and metadata, no values; and the count agrees.
    let names_only = store
        .list(&ListQuery {
            with_values: false,
            ..all
        })
        .await
        .unwrap();
    assert!(names_only.iter().all(|record| record.value.is_none()));
    assert_eq!(
        names_only
            .iter()
            .map(|record| (&record.key, record.mod_revision))
            .collect::<Vec<_>>(),
        listed
            .iter()
            .map(|record| (&record.key, record.mod_revision))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.count("", None).await.unwrap(), 2);
    assert_eq!(store.count("", Some("a")).await.unwrap(), 1);
    assert_eq!(store.count("c", None).await.unwrap(), 1);
    assert_eq!(store.count("zz", None).await.unwrap(), 0);
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
    let changes = store.changes_since(0, None, "", 100).await.unwrap();
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
        store.changes_since(3, None, "a/", 100).await.unwrap().len(),
        1,
        "prefix and after"
    );
    assert_eq!(
        store.changes_since(0, None, "", 2).await.unwrap().len(),
        2,
        "limit"
    );

    assert_eq!(store.compact_revision().await.unwrap(), 0);
    assert_eq!(
        store
            .compact(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        Compacted::default(),
        "too young"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Cut at the newest revision the tombstones and replaced versions show: a/2's delete.
    // Dropped: that tombstone, and the versions of a/1 and a/2 it and a/1's rewrite replaced.
    assert_eq!(
        store.compact(std::time::Duration::ZERO).await.unwrap(),
        Compacted {
            revision: 4,
            tombstones: 1,
            versions: 2,
        }
    );
    assert_eq!(store.compact_revision().await.unwrap(), 4);
    let keys: Vec<_> = store
        .changes_since(0, None, "", 100)
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

/// PostgreSQL runs the transactions of a batch that touch no key an earlier one writes as one
/// read and one write (`postgres_txn.rs`); SQLite runs each alone. Random batches over a few
/// keys, with compares of every target, gets, deletes, prefix deletes, puts on a live lease and
/// on one that does not exist, and reused idempotency keys, must give the same outcomes on both and leave the same
/// keys.
#[tokio::test]
async fn postgres_batched_transactions_match_running_them_one_by_one() {
    use kg_api::{Compare, CompareOp, CompareTarget, CompareValue, TxnOp, TxnRequest, TxnResult};
    use kg_server::store::{batchable, MarkKeys, TxnOutcome, TxnPlan};

    let dir = tempfile::tempdir().unwrap();
    let postgres = open_store(&fresh_database(Backend::Postgres, dir.path()).await).await;
    let sqlite = open_store(&fresh_database(Backend::Sqlite, dir.path()).await).await;
    let mark: Box<MarkKeys> = Box::new(|_| Box::pin(async { 0 }));
    let granted = |grant| match grant {
        kg_server::store::Granted::New(grant) => grant.id,
        other => panic!("{other:?}"),
    };
    let lease = granted(postgres.lease_grant(600, None).await.unwrap());
    assert_eq!(granted(sqlite.lease_grant(600, None).await.unwrap()), lease);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let keys: Vec<String> = (0..10).map(|k| format!("k{k}")).collect();
    // Outcomes as both stores must give them: neither the node's clock at the call nor the
    // milliseconds a lease has left when it is read are compared.
    let comparable = |mut outcomes: Vec<TxnOutcome>| {
        for outcome in &mut outcomes {
            if let TxnOutcome::Done {
                changes, response, ..
            } = outcome
            {
                changes.iter_mut().for_each(|change| change.at_ms = 0);
                for result in &mut response.results {
                    if let TxnResult::Get { kv: Some(kv), .. } = result {
                        kv.ttl_remaining_ms = kv.ttl_remaining_ms.map(|_| 0);
                    }
                }
            }
        }
        outcomes
    };
    let (mut batched, mut written) = (0, 0);
    for round in 0..300 {
        let mut plans = Vec::new();
        for _ in 0..1 + next(8) {
            let compare = (0..next(3))
                .map(|_| {
                    let (target, value) = match next(5) {
                        0 => (
                            CompareTarget::Value,
                            CompareValue::Text(format!("v{}", next(3))),
                        ),
                        1 => (
                            CompareTarget::Revision,
                            CompareValue::Integer(next(round + 2) as i64),
                        ),
                        2 => (
                            CompareTarget::CreateRevision,
                            CompareValue::Integer(next(round + 2) as i64),
                        ),
                        3 => (
                            CompareTarget::Version,
                            CompareValue::Integer(next(3) as i64),
                        ),
                        _ => (CompareTarget::Exists, CompareValue::Bool(next(2) == 0)),
                    };
                    let op = [
                        CompareOp::Equal,
                        CompareOp::NotEqual,
                        CompareOp::Less,
                        CompareOp::Greater,
                    ][next(4) as usize];
                    Compare {
                        key: keys[next(10) as usize].clone(),
                        target,
                        op,
                        value,
                    }
                })
                .collect();
            let mut branch = || {
                let mut free = keys.clone();
                (0..next(4))
                    .map(|_| {
                        let key = free.remove(next(free.len() as u64) as usize);
                        match next(20) {
                            0 => TxnOp::DeletePrefix {
                                prefix: key[..2].to_owned(),
                            },
                            1 => TxnOp::Put {
                                key,
                                value: "v".to_owned(),
                                lease: Some(if next(2) == 0 { lease } else { 999 }),
                            },
                            2..=9 => TxnOp::Put {
                                key,
                                value: format!("v{}", next(3)),
                                lease: None,
                            },
                            10..=17 => TxnOp::Delete { key },
                            // Rare: a get ends a batch (its value is sized first), so the
                            // batched runs this test compares stay long enough to matter.
                            _ => TxnOp::Get { key },
                        }
                    })
                    .collect()
            };
            let request = TxnRequest {
                compare,
                success: branch(),
                failure: branch(),
            };
            let idempotency_key = (next(4) == 0).then(|| format!("i{}", next(6)));
            plans.push(TxnPlan {
                request,
                idempotency_key,
            });
        }
        let mut rest = &plans[..];
        while !rest.is_empty() {
            let run = batchable(rest).max(1);
            if run > 1 {
                batched += run;
            }
            rest = &rest[run..];
        }
        let (on_postgres, epoch) = postgres.txns("n", &plans, &*mark).await.unwrap();
        assert_eq!(epoch, 0);
        let (on_sqlite, _) = sqlite.txns("n", &plans, &*mark).await.unwrap();
        let on_postgres = comparable(on_postgres);
        assert_eq!(
            on_postgres,
            comparable(on_sqlite),
            "round {round}: {plans:#?}"
        );
        written += on_postgres
            .iter()
            .filter(|outcome| {
                matches!(outcome, TxnOutcome::Done { changes, .. } if !changes.is_empty())
            })
            .count();
    }
    for key in &keys {
        let [on_postgres, on_sqlite] =
            [postgres.get(key).await, sqlite.get(key).await].map(|record| {
                record.unwrap().map(|mut kv| {
                    kv.ttl_remaining_ms = kv.ttl_remaining_ms.map(|_| 0);
                    kv
                })
            });
        assert_eq!(on_postgres, on_sqlite, "{key}");
    }
    // Enough of both kinds to mean something: runs the batch path took, and writes.
    assert!(batched > 150, "only {batched} plans in batched runs");
    assert!(written > 150, "only {written} transactions wrote");
}
