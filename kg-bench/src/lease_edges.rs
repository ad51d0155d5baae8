//! `kg-bench lease-edges`: load on keys whose short leases (1 to 3 s) run out while it reads
//! them, the timing edge where an expired key must stay gone (issue 47).
//!
//! Each client takes a few keys of its own in turn. A round grants a lease, puts a fresh value
//! on the key under it, keeps the lease alive or not (keep-alives at gaps around the TTL, so
//! some land in time and some too late), and reads the key through its deadline, by GET and by
//! a transaction that compares `exists` and gets it, for seconds after a read saw it gone;
//! some rounds revoke their lease instead. The history records every put and read; the
//! lease's end (expiry or revoke) is a delete whose outcome is unknown from the put on, which
//! is all a client can know of when it lands. `kg-bench judge` then finds a key read alive after
//! a read saw it gone (`judge::resurrected_reads`, and the linearizability check).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kg_api::{Attach, Client, ClientOptions, Compare, CompareOp, CompareTarget, CompareValue};
use kg_api::{Precondition, TxnOp, TxnRequest, TxnResult};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;

use crate::history::{HistoryEntry, HistoryOutcome};
use crate::workload::Op;

/// Keys each client takes in turn: a key comes back to a client with a new value, so a read
/// may see it re-created (no violation) as well as revived (one).
const KEYS_PER_CLIENT: usize = 3;

/// How long a round goes on reading its key after a read found it gone: longer than a
/// database stall, so that a key revived when the stall ends is read again.
const READ_AFTER_GONE: Duration = Duration::from_millis(4000);

/// The history's client numbers of the lease ends: one per client, after the clients'.
const END_CLIENTS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct LeaseEdgesOptions {
    pub endpoint: String,
    pub duration: Duration,
    pub clients: usize,
    pub record: PathBuf,
    pub seed: u64,
    pub timeout: Duration,
}

/// What the load did, printed as JSON.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LeaseEdges {
    pub rounds: u64,
    pub puts: u64,
    pub reads: u64,
    /// Reads (GET or transaction) that found the key.
    pub reads_alive: u64,
    pub reads_gone: u64,
    pub txns: u64,
    pub keepalives: u64,
    /// Keep-alives answered that the lease had ended.
    pub keepalives_late: u64,
    pub revokes: u64,
    /// Requests that failed (no answer, a 5xx, a 4xx where none was due).
    pub errors: u64,
    /// Transactions whose compare `exists` disagreed with their own get: one revision's view
    /// of one key that says both alive and gone.
    pub txn_disagreements: u64,
    pub seconds: f64,
}

struct Shared {
    start: Instant,
    run_id: u32,
    history: Mutex<Vec<HistoryEntry>>,
    totals: Mutex<LeaseEdges>,
}

impl Shared {
    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    fn record(&self, entry: HistoryEntry) {
        if let Ok(mut history) = self.history.lock() {
            history.push(entry);
        }
    }

    fn count(&self, add: impl FnOnce(&mut LeaseEdges)) {
        if let Ok(mut totals) = self.totals.lock() {
            add(&mut totals);
        }
    }
}

fn entry(client: usize, op: Op, key: &str, (invoked, completed): (u64, u64)) -> HistoryEntry {
    HistoryEntry {
        client,
        op,
        key: key.to_owned(),
        value: None,
        expected: None,
        revision: None,
        invoke_us: invoked,
        complete_us: completed,
        outcome: HistoryOutcome::Ok,
        error: None,
        node: None,
        deleted: None,
        txn: None,
        idempotency_key: None,
        retry: false,
        at_revision: None,
    }
}

/// How a request that got no 2xx ended, as the history records a write's.
fn failed(err: &kg_api::Error) -> (HistoryOutcome, String) {
    match err {
        kg_api::Error::Api { status, .. } if status.is_client_error() => {
            (HistoryOutcome::Fail, format!("status_{}", status.as_u16()))
        }
        kg_api::Error::Api { status, .. } => (
            HistoryOutcome::Unknown,
            format!("status_{}", status.as_u16()),
        ),
        kg_api::Error::Unavailable { .. } => (HistoryOutcome::Unknown, "status_503".to_owned()),
        kg_api::Error::NotFound { .. } => (HistoryOutcome::Fail, "status_404".to_owned()),
        kg_api::Error::PreconditionFailed { .. } => (HistoryOutcome::Fail, "status_412".to_owned()),
        _ => (HistoryOutcome::Unknown, "io".to_owned()),
    }
}

/// Runs the load and writes its history to `options.record`.
pub async fn run(options: &LeaseEdgesOptions) -> Result<LeaseEdges, String> {
    let client = Client::with_options(
        &options.endpoint,
        &ClientOptions {
            timeout: options.timeout,
            token: None,
        },
    )
    .map_err(|err| err.to_string())?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        run_id: crate::workload::new_run_id(),
        history: Mutex::new(Vec::new()),
        totals: Mutex::new(LeaseEdges::default()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for number in 0..options.clients {
        let (client, shared) = (client.clone(), shared.clone());
        let (duration, seed) = (options.duration, options.seed);
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ (number as u64).wrapping_mul(0x9e37));
            let mut round = 0_usize;
            while shared.start.elapsed() < duration {
                let key = format!("lease-edges/{number}/{}", round % KEYS_PER_CLIENT);
                play_round(&client, &shared, number, round, &key, &mut rng).await;
                round += 1;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|err| format!("a client failed: {err}"))?;
    }
    let mut history = shared
        .history
        .lock()
        .map_err(|_| "history lock poisoned".to_owned())?
        .clone();
    history.sort_by_key(|entry| entry.invoke_us);
    let mut file = tokio::fs::File::create(&options.record)
        .await
        .map_err(|err| format!("cannot create {}: {err}", options.record.display()))?;
    let mut lines = Vec::new();
    for entry in &history {
        serde_json::to_writer(&mut lines, entry).map_err(|err| err.to_string())?;
        lines.push(b'\n');
    }
    file.write_all(&lines)
        .await
        .map_err(|err| format!("cannot write {}: {err}", options.record.display()))?;
    let mut totals = shared
        .totals
        .lock()
        .map_err(|_| "totals lock poisoned".to_owned())?
        .clone();
    totals.seconds = shared.start.elapsed().as_secs_f64();
    Ok(totals)
}

/// One round on `key`: grant, put, keep alive or not, read through the deadline.
async fn play_round(
    client: &Client,
    shared: &Shared,
    number: usize,
    round: usize,
    key: &str,
    rng: &mut SmallRng,
) {
    let ttl = rng.random_range(1..=3_u64);
    shared.count(|t| t.rounds += 1);
    let lease = match client.lease_grant(ttl).await {
        Ok(grant) => grant.id,
        Err(_) => {
            shared.count(|t| t.errors += 1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    };
    let value = format!("l{:08x}-c{number}-r{round}", shared.run_id);
    let invoked = Instant::now();
    let put = client
        .put_with(key, &value, Precondition::None, Attach::Lease(lease))
        .await;
    let times = (shared.micros(invoked), shared.micros(Instant::now()));
    let mut put_entry = HistoryEntry {
        value: Some(value.clone()),
        ..entry(number, Op::Put, key, times)
    };
    match &put {
        Ok(written) => put_entry.revision = Some(written.revision),
        Err(err) => {
            shared.count(|t| t.errors += 1);
            (put_entry.outcome, _) = failed(err);
            put_entry.error = Some(failed(err).1);
        }
    }
    shared.count(|t| t.puts += 1);
    let applied = put_entry.outcome != HistoryOutcome::Fail;
    shared.record(put_entry);
    if !applied {
        return;
    }
    // The lease's end, whenever it comes: from the put on, as far as a client can tell.
    shared.record(HistoryEntry {
        outcome: HistoryOutcome::Unknown,
        ..entry(END_CLIENTS + number, Op::Delete, key, (times.0, times.0))
    });

    let ttl_ms = ttl * 1000;
    let keep_alive = rng.random_bool(0.5);
    let revoke_at = rng
        .random_bool(0.15)
        .then(|| Duration::from_millis(rng.random_range(0..ttl_ms)));
    // Keep-alives at gaps from 0.3 to 1.3 TTLs: most land in time, some too late.
    let gap = |rng: &mut SmallRng| {
        Duration::from_millis(rng.random_range(ttl_ms * 3 / 10..=ttl_ms * 13 / 10))
    };
    let mut next_keepalive = keep_alive.then(|| Instant::now() + gap(rng));
    let round_start = Instant::now();
    // Enough for a kept-alive lease to be kept a few times, and for the reads after it ends.
    let round_end = round_start + Duration::from_millis(ttl_ms * 3 + 1500);
    let mut gone_since: Option<Instant> = None;
    let mut revoked = false;
    loop {
        match gone_since {
            Some(gone) if gone.elapsed() >= READ_AFTER_GONE => break,
            None if Instant::now() >= round_end => break,
            _ => {}
        }
        // Reads cluster around the deadline: short pauses.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..250))).await;
        if let Some(at) = next_keepalive.filter(|at| Instant::now() >= *at) {
            let _ = at;
            shared.count(|t| t.keepalives += 1);
            match client.lease_keepalive(lease).await {
                Ok(_) => next_keepalive = Some(Instant::now() + gap(rng)),
                Err(kg_api::Error::NotFound { .. }) => {
                    shared.count(|t| t.keepalives_late += 1);
                    next_keepalive = None;
                }
                Err(_) => shared.count(|t| t.errors += 1),
            }
        }
        if let Some(at) = revoke_at.filter(|at| !revoked && round_start.elapsed() >= *at) {
            let _ = at;
            revoked = true;
            next_keepalive = None;
            shared.count(|t| t.revokes += 1);
            match client.lease_revoke(lease).await {
                Ok(_) | Err(kg_api::Error::NotFound { .. }) => {}
                Err(_) => shared.count(|t| t.errors += 1),
            }
        }
        // Read-only transactions read a snapshot without waiting for the revision lock; those
        // that write wait for it, and must judge the lease after the wait.
        let alive = match rng.random_range(0..10) {
            0..=1 => read_by_txn(client, shared, number, key, false).await,
            2..=3 => read_by_txn(client, shared, number, key, true).await,
            _ => read_by_get(client, shared, number, key).await,
        };
        if alive == Some(false) && gone_since.is_none() {
            gone_since = Some(Instant::now());
            next_keepalive = None;
        }
    }
}

/// A GET of `key`, recorded; whether it found the key (`None`: no answer).
async fn read_by_get(client: &Client, shared: &Shared, number: usize, key: &str) -> Option<bool> {
    let invoked = Instant::now();
    let read = client.get(key).await;
    let times = (shared.micros(invoked), shared.micros(Instant::now()));
    shared.count(|t| t.reads += 1);
    let (value, revision) = match read {
        Ok(read) => (Some(read.value), Some(read.mod_revision)),
        Err(kg_api::Error::NotFound { .. }) => (None, None),
        Err(_) => {
            shared.count(|t| t.errors += 1);
            return None;
        }
    };
    let alive = value.is_some();
    shared.count(|t| {
        if alive {
            t.reads_alive += 1;
        } else {
            t.reads_gone += 1;
        }
    });
    shared.record(HistoryEntry {
        value,
        revision,
        ..entry(number, Op::Get, key, times)
    });
    Some(alive)
}

/// A transaction that compares `exists(key)` and gets the key in either branch, and if it
/// `writes`, also puts a key beside it when the compare holds (so that it waits for the
/// revision lock, as a transaction that writes does), recorded as a get at the
/// transaction's revision; a compare that disagrees with the get is counted.
async fn read_by_txn(
    client: &Client,
    shared: &Shared,
    number: usize,
    key: &str,
    writes: bool,
) -> Option<bool> {
    let get = || TxnOp::Get {
        key: key.to_owned(),
    };
    let mut txn = TxnRequest {
        compare: vec![Compare {
            key: key.to_owned(),
            target: CompareTarget::Exists,
            op: CompareOp::Equal,
            value: CompareValue::Bool(true),
        }],
        success: vec![
            get(),
            TxnOp::Put {
                key: format!("{key}/seen"),
                value: format!("l{:08x}-c{number}", shared.run_id),
                lease: None,
            },
        ],
        failure: vec![get()],
    };
    if !writes {
        txn.success.truncate(1);
    }
    let invoked = Instant::now();
    let answer = client.txn(&txn, None).await;
    let times = (shared.micros(invoked), shared.micros(Instant::now()));
    shared.count(|t| {
        t.reads += 1;
        t.txns += 1;
    });
    let Ok(answer) = answer else {
        shared.count(|t| t.errors += 1);
        return None;
    };
    let kv = answer.results.into_iter().find_map(|result| match result {
        TxnResult::Get { kv, .. } => Some(kv),
        _ => None,
    })?;
    let alive = kv.is_some();
    shared.count(|t| {
        if alive {
            t.reads_alive += 1;
        } else {
            t.reads_gone += 1;
        }
        if alive != answer.succeeded {
            t.txn_disagreements += 1;
        }
    });
    // The get ran before the put of the branch that wrote: at the revision below it.
    let at = answer.revision - i64::from(answer.succeeded && writes);
    shared.record(HistoryEntry {
        revision: kv.as_ref().map(|kv| kv.mod_revision),
        value: kv.and_then(|kv| kv.value),
        at_revision: Some(at),
        ..entry(number, Op::Get, key, times)
    });
    Some(alive)
}
