//! `kg-bench leases`: holds many leases alive, as a fleet of clients with sessions would, so
//! that a benchmark can measure what they cost a node's other requests (scripts/bench-leases.sh).
//!
//! Grants `count` leases, then keeps each alive every third of its TTL (as etcd's clients and
//! `kg lock` do), the keep-alives spread evenly over that period rather than in bursts. Prints
//! one JSON line when every lease is granted and one with the totals and the grants' and
//! keep-alives' latencies at the end.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kg_api::{Client, ClientOptions};

use crate::stats::Latency;

/// How many grants or keep-alives are in flight at once.
const IN_FLIGHT: usize = 32;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LeaseLoad {
    pub leases: u64,
    pub ttl_seconds: u64,
    pub keepalives: u64,
    /// Keep-alives that failed (a lease that expired counts here: it was not kept alive).
    pub failed: u64,
    pub seconds: f64,
    /// How long each grant took.
    pub grant_latency_us: Latency,
    /// How long each keep-alive request took (one of `--per-request` leases), failed ones
    /// included: a keep-alive answered late is late whatever it said.
    pub keepalive_latency_us: Latency,
}

/// Latencies of many tasks, in microseconds, into one histogram (bounded memory).
#[derive(Clone)]
struct Recorder(Arc<Mutex<Histogram<u64>>>);

impl Recorder {
    fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid");
        Self(Arc::new(Mutex::new(histogram)))
    }

    fn record(&self, since: Instant) {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Ok(mut histogram) = self.0.lock() {
            histogram.saturating_record(micros.max(1));
        }
    }

    fn latency(&self) -> Latency {
        self.0
            .lock()
            .map(|histogram| Latency::of(&histogram))
            .unwrap_or_default()
    }
}

/// Grants `count` leases of `ttl` on `endpoint` and keeps them alive for `duration`,
/// `per_request` leases in each keep-alive request.
pub async fn hold(
    endpoint: &str,
    count: u64,
    ttl: u64,
    duration: Duration,
    per_request: u64,
    out: &mut dyn Write,
) -> Result<LeaseLoad, String> {
    let client =
        Client::with_options(endpoint, &ClientOptions::default()).map_err(|err| err.to_string())?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut grants = tokio::task::JoinSet::new();
    let (grant_latency, keepalive_latency) = (Recorder::new(), Recorder::new());
    for _ in 0..count {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|err| err.to_string())?;
        let (client, latency) = (client.clone(), grant_latency.clone());
        grants.spawn(async move {
            let sent = Instant::now();
            let granted = client.lease_grant(ttl).await;
            latency.record(sent);
            drop(permit);
            granted.map(|grant| grant.id).map_err(|err| err.to_string())
        });
    }
    let mut ids = Vec::new();
    while let Some(granted) = grants.join_next().await {
        ids.push(granted.map_err(|err| err.to_string())??);
    }
    writeln!(
        out,
        "{}",
        serde_json::json!({"granted": ids.len(), "ttl": ttl})
    )
    .map_err(|err| err.to_string())?;
    out.flush().map_err(|err| err.to_string())?;

    // Each lease once per TTL/3: one request of `per_request` leases every
    // period / (count / per_request), in order.
    let per_request = usize::try_from(per_request)
        .unwrap_or(1)
        .clamp(1, ids.len().max(1));
    let period = Duration::from_millis(ttl.saturating_mul(1000) / 3);
    let gap = period.div_f64(ids.len().max(1) as f64 / per_request as f64);
    let keepalives = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(gap.max(Duration::from_micros(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 0_usize;
    while started.elapsed() < duration && !ids.is_empty() {
        ticker.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let batch: Vec<i64> = (next..next + per_request)
            .map(|index| ids[index % ids.len()])
            .collect();
        let (client, latency) = (client.clone(), keepalive_latency.clone());
        let (keepalives, failed) = (keepalives.clone(), failed.clone());
        tokio::spawn(async move {
            let asked = batch.len() as u64;
            let sent = Instant::now();
            let kept = if let [id] = batch[..] {
                client.lease_keepalive(id).await.map(|_| 1)
            } else {
                client
                    .lease_keepalive_many(&batch)
                    .await
                    .map(|answer| answer.leases.len() as u64)
            };
            latency.record(sent);
            // A lease answered as expired was not kept alive: it counts as failed.
            let kept = kept.unwrap_or(0);
            keepalives.fetch_add(kept, Ordering::Relaxed);
            failed.fetch_add(asked - kept, Ordering::Relaxed);
            drop(permit);
        });
        next += per_request;
    }
    // Let the last keep-alives finish.
    let _ = in_flight.acquire_many(IN_FLIGHT as u32).await;
    Ok(LeaseLoad {
        leases: ids.len() as u64,
        ttl_seconds: ttl,
        keepalives: keepalives.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        grant_latency_us: grant_latency.latency(),
        keepalive_latency_us: keepalive_latency.latency(),
    })
}
