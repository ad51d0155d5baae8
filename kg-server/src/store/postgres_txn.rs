//! Transactions on PostgreSQL in a batch: a run of them that [`txn::batchable`] allows is
//! read in one statement and written in one, where running them one by one costs a round trip
//! per compare and per op. The group-commit writer hands over every transaction waiting, so
//! without this a batch's round trips grew with its size while a batch of PUTs (one
//! `kg_apply` call) did not.

use std::collections::{HashMap, HashSet};

use kg_api::{KeyRecord, TxnOp, TxnResponse, TxnResult};
use sqlx::{Postgres, Transaction};

use super::txn::{self, TxnOutcome, TxnPlan};
use super::{Change, KeyRow, StoreError};

/// The live keys among `$1`. Each key is a lookup of its own behind `OFFSET 0`, so no plan
/// made while the tables were small can turn it into a scan (see migration 0003); a lease is
/// looked up by id alone, its deadline compared outside the lookup (see migration 0004).
const READ_KEYS: &str = "SELECT r.* FROM unnest(CAST($1 AS text[])) AS q(key), LATERAL ( \
       SELECT k.key, k.value, k.create_revision, k.mod_revision, k.version, k.lease, \
         l.deadline - kg_now_ms() AS ttl_remaining_ms \
       FROM kg_keys k LEFT JOIN kg_leases l ON l.id = k.lease \
       WHERE k.key = q.key AND k.value IS NOT NULL \
         AND (k.lease IS NULL OR l.deadline > kg_now_ms()) OFFSET 0) r";

/// The live leases among `$1`.
const LIVE_LEASES: &str = "SELECT r.id FROM unnest(CAST($1 AS bigint[])) AS q(id), LATERAL ( \
       SELECT l.id, l.deadline FROM kg_leases l WHERE l.id = q.id OFFSET 0) r \
     WHERE r.deadline > kg_now_ms()";

/// The idempotency records among `$1`.
const PRIORS: &str = "SELECT r.* FROM unnest(CAST($1 AS text[])) AS q(id), LATERAL ( \
       SELECT d.id, d.fingerprint, d.response FROM kg_idempotency d WHERE d.id = q.id \
       OFFSET 0) r";

/// Every put and delete of the run in one statement, each key at its own transaction's
/// revision: the single-key `upsert` of `sql.rs` over arrays, with a delete as a put of no
/// value (only keys read live are deleted, so a delete always finds its row). A live key keeps
/// its create_revision and counts one more version; anything else starts again.
const WRITE: &str = "INSERT INTO kg_keys (key, value, create_revision, mod_revision, version, \
       mod_node, mod_at, lease, reason) \
     SELECT w.key, w.value, CASE WHEN w.value IS NULL THEN 0 ELSE w.rev END, w.rev, \
       CASE WHEN w.value IS NULL THEN 0 ELSE 1 END, $5, now(), w.lease, NULL \
     FROM unnest(CAST($1 AS text[]), CAST($2 AS bytea[]), CAST($3 AS bigint[]), \
                 CAST($4 AS bigint[])) AS w(key, value, rev, lease) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
       create_revision = CASE WHEN excluded.value IS NULL THEN 0 \
         WHEN kg_keys.value IS NOT NULL AND (kg_keys.lease IS NULL OR coalesce( \
           (SELECT l.deadline > kg_now_ms() FROM kg_leases l WHERE l.id = kg_keys.lease), \
           false)) THEN kg_keys.create_revision \
         ELSE excluded.create_revision END, \
       version = CASE WHEN excluded.value IS NULL THEN 0 \
         WHEN kg_keys.value IS NOT NULL AND (kg_keys.lease IS NULL OR coalesce( \
           (SELECT l.deadline > kg_now_ms() FROM kg_leases l WHERE l.id = kg_keys.lease), \
           false)) THEN kg_keys.version + 1 \
         ELSE 1 END, \
       mod_revision = excluded.mod_revision, mod_node = excluded.mod_node, \
       mod_at = excluded.mod_at, lease = excluded.lease, reason = NULL \
     RETURNING key, create_revision, version";

/// The run's idempotency records; status 0, as `remember_txn`'s.
const REMEMBER: &str = "INSERT INTO kg_idempotency \
       (id, fingerprint, status, revision, created_at, response) \
     SELECT r.id, r.fingerprint, 0, r.revision, now(), r.response \
     FROM unnest(CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS bigint[]), \
                 CAST($4 AS bytea[])) AS r(id, fingerprint, revision, response)";

/// The run's puts and deletes (no value), as the columns of `WRITE`.
#[derive(Default)]
struct Writes<'a> {
    keys: Vec<&'a str>,
    values: Vec<Option<&'a [u8]>>,
    revisions: Vec<i64>,
    leases: Vec<Option<i64>>,
}

impl<'a> Writes<'a> {
    fn push(&mut self, key: &'a str, value: Option<&'a [u8]>, revision: i64, lease: Option<i64>) {
        self.keys.push(key);
        self.values.push(value);
        self.revisions.push(revision);
        self.leases.push(lease);
    }
}

/// The run's idempotency records, as the columns of `REMEMBER`.
#[derive(Default)]
struct Records<'a> {
    ids: Vec<&'a str>,
    fingerprints: Vec<String>,
    revisions: Vec<i64>,
    responses: Vec<Vec<u8>>,
}

/// A plan whose branch has run, waiting for its puts' create_revision and version.
struct Ran<'a> {
    plan: &'a TxnPlan,
    succeeded: bool,
    revision: i64,
    results: Vec<TxnResult>,
    changes: Vec<Change>,
}

/// Runs `plans` (a run [`txn::batchable`] allows) in `tx`, with the outcomes of running them
/// one after the other. `revision` is the last revision handed out; every plan that writes
/// takes the next.
pub(super) async fn run(
    tx: &mut Transaction<'_, Postgres>,
    node: &str,
    plans: &[TxnPlan],
    revision: &mut i64,
    at_ms: i64,
) -> Result<Vec<TxnOutcome>, StoreError> {
    let ids: Vec<&str> = plans
        .iter()
        .filter_map(|plan| plan.idempotency_key.as_deref())
        .collect();
    let mut priors: HashMap<String, (String, Option<Vec<u8>>)> = HashMap::new();
    if !ids.is_empty() {
        let rows: Vec<(String, String, Option<Vec<u8>>)> = sqlx::query_as(PRIORS)
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
        priors.extend(
            rows.into_iter()
                .map(|(id, fp, response)| (id, (fp, response))),
        );
    }
    let fresh = |plan: &TxnPlan| {
        plan.idempotency_key
            .as_ref()
            .is_none_or(|id| !priors.contains_key(id))
    };

    // What the compares, reads and deletes look at, and the leases puts name, as they were
    // before the run: no plan of the run touches what an earlier one writes.
    let (mut keys, mut leases) = (HashSet::new(), HashSet::new());
    for plan in plans.iter().filter(|plan| fresh(plan)) {
        let request = &plan.request;
        keys.extend(request.compare.iter().map(|c| c.key.as_str()));
        for op in request.success.iter().chain(&request.failure) {
            match op {
                TxnOp::Get { key } | TxnOp::Delete { key } => {
                    keys.insert(key.as_str());
                }
                TxnOp::Put {
                    lease: Some(lease), ..
                } => {
                    leases.insert(*lease);
                }
                TxnOp::Put { .. } | TxnOp::DeletePrefix { .. } => {}
            }
        }
    }
    let mut live: HashMap<String, KeyRow> = HashMap::new();
    if !keys.is_empty() {
        let keys: Vec<&str> = keys.into_iter().collect();
        let rows: Vec<KeyRow> = sqlx::query_as(READ_KEYS)
            .bind(keys)
            .fetch_all(&mut **tx)
            .await?;
        live.extend(rows.into_iter().map(|row| (row.key.clone(), row)));
    }
    let mut live_leases: HashSet<i64> = HashSet::new();
    if !leases.is_empty() {
        let leases: Vec<i64> = leases.into_iter().collect();
        let rows: Vec<(i64,)> = sqlx::query_as(LIVE_LEASES)
            .bind(leases)
            .fetch_all(&mut **tx)
            .await?;
        live_leases.extend(rows.into_iter().map(|(id,)| id));
    }

    // Each plan as `sql.rs` runs it alone, against what was read.
    let mut outcomes: Vec<Option<TxnOutcome>> = Vec::with_capacity(plans.len());
    let mut ran: Vec<(usize, Ran<'_>)> = Vec::new();
    let mut writes = Writes::default();
    for plan in plans {
        if let Some((prior, response)) = plan.idempotency_key.as_ref().and_then(|id| priors.get(id))
        {
            let fingerprint = plan.fingerprint();
            outcomes.push(Some(TxnOutcome::replay(
                prior,
                &fingerprint,
                response.as_deref(),
            )));
            continue;
        }
        let request = &plan.request;
        let succeeded = request.compare.iter().all(|compare| {
            let current = live.get(&compare.key).map(txn::Current::from);
            txn::holds(compare, current.as_ref())
        });
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let dead_lease = ops.iter().find_map(|op| match op {
            TxnOp::Put {
                lease: Some(lease), ..
            } if !live_leases.contains(lease) => Some(*lease),
            _ => None,
        });
        if let Some(lease) = dead_lease {
            outcomes.push(Some(TxnOutcome::LeaseNotFound(lease)));
            continue;
        }
        let next = *revision + 1;
        let change = |key: &str, value: Option<&str>, lease| Change {
            key: key.to_owned(),
            value: value.map(str::to_owned),
            revision: next,
            create_revision: 0,
            version: 0,
            node: node.to_owned(),
            at_ms,
            lease,
            reason: None,
            value_bytes: None,
        };
        let mut results = Vec::with_capacity(ops.len());
        let mut changes = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    writes.push(key, Some(value.as_bytes()), next, *lease);
                    changes.push(change(key, Some(value), *lease));
                    // create_revision and version come back from the write.
                    results.push(TxnResult::Put {
                        key: key.clone(),
                        create_revision: 0,
                        version: 0,
                    });
                }
                TxnOp::Delete { key } => {
                    let deleted = live.contains_key(key);
                    if deleted {
                        writes.push(key, None, next, None);
                        changes.push(change(key, None, None));
                    }
                    results.push(TxnResult::Delete {
                        key: key.clone(),
                        deleted: u64::from(deleted),
                    });
                }
                TxnOp::Get { key } => results.push(TxnResult::Get {
                    key: key.clone(),
                    kv: live.get(key).cloned().map(KeyRecord::from),
                }),
                // `batchable` keeps prefix deletes out of a run.
                TxnOp::DeletePrefix { prefix } => {
                    return Err(StoreError::Internal(sqlx::Error::Protocol(format!(
                        "prefix delete of {prefix:?} in a batched transaction"
                    ))))
                }
            }
        }
        if !changes.is_empty() {
            *revision = next;
        }
        ran.push((
            outcomes.len(),
            Ran {
                plan,
                succeeded,
                revision: *revision,
                results,
                changes,
            },
        ));
        outcomes.push(None);
    }

    let mut written: HashMap<String, (i64, i64)> = HashMap::new();
    if !writes.keys.is_empty() {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(WRITE)
            .bind(writes.keys)
            .bind(writes.values)
            .bind(writes.revisions)
            .bind(writes.leases)
            .bind(node)
            .fetch_all(&mut **tx)
            .await?;
        written.extend(
            rows.into_iter()
                .map(|(key, create, version)| (key, (create, version))),
        );
    }
    let mut remember = Records::default();
    for (index, mut ran) in ran {
        let counts = |key: &str| written.get(key).copied().unwrap_or_default();
        for result in &mut ran.results {
            if let TxnResult::Put {
                key,
                create_revision,
                version,
            } = result
            {
                (*create_revision, *version) = counts(key);
            }
        }
        for change in ran.changes.iter_mut().filter(|c| c.value.is_some()) {
            (change.create_revision, change.version) = counts(&change.key);
        }
        // Watchers get a revision's events in key order (see `watch.rs`).
        ran.changes.sort_by(|a, b| a.key.cmp(&b.key));
        let response = TxnResponse {
            succeeded: ran.succeeded,
            revision: ran.revision,
            results: ran.results,
        };
        if let Some(id) = &ran.plan.idempotency_key {
            let body = serde_json::to_vec(&response)
                .map_err(|err| StoreError::Internal(sqlx::Error::Decode(err.into())))?;
            remember.ids.push(id);
            remember.fingerprints.push(ran.plan.fingerprint());
            remember.revisions.push(ran.revision);
            remember.responses.push(body);
        }
        outcomes[index] = Some(TxnOutcome::Done {
            response,
            changes: ran.changes,
            replayed: false,
        });
    }
    if !remember.ids.is_empty() {
        sqlx::query(REMEMBER)
            .bind(remember.ids)
            .bind(remember.fingerprints)
            .bind(remember.revisions)
            .bind(remember.responses)
            .execute(&mut **tx)
            .await?;
    }
    Ok(outcomes.into_iter().flatten().collect())
}
