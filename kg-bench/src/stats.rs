//! Measurements: each worker records into its own [`Stats`] (hdrhistogram, microseconds,
//! bounded memory), and the runs' stats merge into one before the [`Report`] is built. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::workload::Op;

/// Latencies up to an hour, in microseconds.
const HIGHEST_US: u64 = 3_600_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, sigfig).expect("constant histogram bounds are valid")
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// A 404: a GET or DELETE of a key that is not there, which a mix with deletes makes
    /// normal. Counted as a success, and reported apart.
    NotFound,
    /// A 412: a CAS whose expected revision was no longer current, which contention makes
    /// normal. Counted as a success, and reported apart.
    PreconditionFailed,
    /// Any other status.
    Status(u16),
    /// No answer within `--timeout`.
    Timeout,
    /// The connection could not be made (refused, unreachable).
    Connect,
    /// The connection broke during the request.
    Io,
    /// A CAS's read was answered 2xx without `X-KeyGrid-Revision`, so there was no revision
    /// to make the write conditional on: the server broke the protocol, and no write was sent.
    NoRevision,
}

impl Outcome {
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            Outcome::Ok | Outcome::NotFound | Outcome::PreconditionFailed
        )
    }

    /// The error kind's name in reports: `status_503`, `timeout`, `connect`, `io`,
    /// `no_revision`.
    pub fn error_kind(self) -> Option<String> {
        match self {
            Outcome::Ok | Outcome::NotFound | Outcome::PreconditionFailed => None,
            Outcome::Status(status) => Some(format!("status_{status}")),
            Outcome::Timeout => Some("timeout".to_owned()),
            Outcome::Connect => Some("connect".to_owned()),
            Outcome::Io => Some("io".to_owned()),
            Outcome::NoRevision => Some("no_revision".to_owned()),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub op: Op,
    pub outcome: Outcome,
    pub latency: Duration,
    /// `X-KeyGrid-Node`.
    pub node: Option<&'a str>,
    /// `X-Cache`: HIT or MISS.
    pub cache_hit: Option<bool>,
}

/// Counts and latencies of one slice of the run. Failures keep a histogram of their own: a
/// dead endpoint answers in microseconds, and mixed into the successes its refusals would make
/// the percentiles look good.
#[derive(Debug, Clone)]
pub struct Series {
    pub requests: u64,
    pub errors: u64,
    /// Refusals the store's rules make normal, counted as successes: a CAS's lost race, a
    /// transaction whose compares did not hold (both a 412 [`Outcome::PreconditionFailed`]).
    pub refused: u64,
    /// Latencies of the requests that did not fail.
    pub latency: Histogram<u64>,
    /// Latencies of the failed ones.
    pub failed_latency: Histogram<u64>,
}

impl Series {
    fn new(sigfig: u8) -> Self {
        Self {
            requests: 0,
            errors: 0,
            refused: 0,
            latency: histogram(sigfig),
            failed_latency: histogram(sigfig),
        }
    }

    fn record(&mut self, micros: u64, error: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        if error {
            self.failed_latency.saturating_record(micros);
        } else {
            self.latency.saturating_record(micros);
        }
    }

    fn merge(&mut self, other: &Series) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.refused += other.refused;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.failed_latency.add(&other.failed_latency);
    }
}

/// Everything measured, mergeable across workers.
#[derive(Debug, Clone)]
pub struct Stats {
    pub overall: Series,
    pub not_found: u64,
    pub precondition_failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub ops: BTreeMap<Op, Series>,
    pub nodes: BTreeMap<String, Series>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// One entry per second of the measured run (2 significant figures, to bound memory).
    pub seconds: Vec<Series>,
    /// Open model: requests scheduled inside the run that were never sent, because the time
    /// was up before their worker was free (k6's `dropped_iterations`).
    pub dropped: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            overall: Series::new(3),
            not_found: 0,
            precondition_failed: 0,
            errors: BTreeMap::new(),
            ops: BTreeMap::new(),
            nodes: BTreeMap::new(),
            cache_hits: 0,
            cache_misses: 0,
            seconds: Vec::new(),
            dropped: 0,
        }
    }
}

impl Stats {
    /// Records `sample`, completed in second `second` of the measured run.
    pub fn record(&mut self, sample: &Sample<'_>, second: usize) {
        let micros = u64::try_from(sample.latency.as_micros())
            .unwrap_or(HIGHEST_US)
            .clamp(1, HIGHEST_US);
        let error = sample.outcome.is_error();
        self.overall.record(micros, error);
        let op = self.ops.entry(sample.op).or_insert_with(|| Series::new(3));
        op.record(micros, error);
        op.refused += u64::from(sample.outcome == Outcome::PreconditionFailed);
        if let Some(kind) = sample.outcome.error_kind() {
            *self.errors.entry(kind).or_insert(0) += 1;
        }
        match sample.outcome {
            Outcome::NotFound => self.not_found += 1,
            Outcome::PreconditionFailed => self.precondition_failed += 1,
            _ => {}
        }
        if let Some(node) = sample.node {
            match self.nodes.get_mut(node) {
                Some(series) => series.record(micros, error),
                None => {
                    let mut series = Series::new(3);
                    series.record(micros, error);
                    self.nodes.insert(node.to_owned(), series);
                }
            }
        }
        match sample.cache_hit {
            Some(true) => self.cache_hits += 1,
            Some(false) => self.cache_misses += 1,
            None => {}
        }
        while self.seconds.len() <= second {
            self.seconds.push(Series::new(2));
        }
        self.seconds[second].record(micros, error);
    }

    pub fn merge(&mut self, other: &Stats) {
        self.overall.merge(&other.overall);
        self.not_found += other.not_found;
        self.precondition_failed += other.precondition_failed;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += count;
        }
        for (op, series) in &other.ops {
            self.ops
                .entry(*op)
                .or_insert_with(|| Series::new(3))
                .merge(series);
        }
        for (node, series) in &other.nodes {
            self.nodes
                .entry(node.clone())
                .or_insert_with(|| Series::new(3))
                .merge(series);
        }
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.dropped += other.dropped;
        while self.seconds.len() < other.seconds.len() {
            self.seconds.push(Series::new(2));
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.merge(theirs);
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    #[serde(default)]
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub requests: u64,
    pub errors: u64,
    /// Refused by the store's rules and counted as successes: CASes that lost the race,
    /// transactions that took their failure branch.
    #[serde(default)]
    pub refused: u64,
    pub rps: f64,
    pub latency_us: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub requests: u64,
    /// This node's part of all answered requests, 0 to 1.
    pub share: f64,
    pub errors: u64,
    pub latency_us: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheReport {
    pub hits: u64,
    pub misses: u64,
    /// Hits over hits plus misses; `null` when no answer said.
    pub hit_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    pub second: usize,
    /// Requests completed in this second.
    #[serde(default)]
    pub requests: u64,
    /// Requests completed in this second; for a partial second, scaled to a rate.
    pub rps: u64,
    pub errors: u64,
    /// p50 of the successes in this second.
    #[serde(default)]
    pub p50_us: u64,
    /// p99 of the successes in this second.
    pub p99_us: u64,
    /// The run ended inside this second: `rps` is its count scaled up to a whole second.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// One point of a latency distribution: the latency at or below which `percentile` percent of
/// the successful requests completed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub latency_us: u64,
}

/// The latency distribution of one slice of the run (all requests, an operation or a node),
/// for the HDR percentile plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// `all`, an operation (`get`), or `node n1`.
    pub series: String,
    pub points: Vec<PercentilePoint>,
}

/// Where the distributions are sampled: dense in the tail, where latency plots are read.
pub const DISTRIBUTION_PERCENTILES: [f64; 14] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

impl Distribution {
    fn of(series: String, histogram: &Histogram<u64>) -> Option<Self> {
        (!histogram.is_empty()).then(|| Self {
            series,
            points: DISTRIBUTION_PERCENTILES
                .iter()
                .map(|&percentile| PercentilePoint {
                    percentile,
                    latency_us: histogram.value_at_quantile(percentile / 100.0),
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub threshold: String,
    pub value: f64,
    pub unit: String,
    pub passed: bool,
}

/// A whole run, as printed and as written with `-o json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub settings: serde_json::Value,
    /// `open` (a fixed arrival rate, `--rate`) or `closed` (`--concurrency` back to back).
    #[serde(default)]
    pub model: String,
    /// Open model: the rate asked for, requests per second.
    #[serde(default)]
    pub target_rps: Option<f64>,
    /// Open model: requests scheduled inside the run but never sent (k6's
    /// `dropped_iterations`): the target rate was more than the endpoint could take.
    #[serde(default)]
    pub dropped: u64,
    /// Measured seconds (the warmup excluded).
    pub duration_s: f64,
    pub requests: u64,
    /// Requests that did not fail (404s and CAS 412s included; see `not_found` and
    /// `precondition_failed`).
    pub successes: u64,
    pub not_found: u64,
    #[serde(default)]
    pub precondition_failed: u64,
    pub errors: u64,
    /// Errors by kind: `status_NNN`, `timeout`, `connect`, `io`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Errors over requests, 0 to 1.
    pub error_ratio: f64,
    /// Requests sent per second: the achieved rate.
    pub rps: f64,
    /// Latencies of the requests that did not fail.
    pub latency_us: Latency,
    /// Latencies of the failed requests, apart; `null` when none failed.
    #[serde(default)]
    pub failed_latency_us: Option<Latency>,
    pub ops: BTreeMap<String, OpReport>,
    pub nodes: BTreeMap<String, NodeReport>,
    pub cache: CacheReport,
    pub series: Vec<SecondReport>,
    /// Latency distributions of the successes: all, per operation, per node.
    #[serde(default)]
    pub distributions: Vec<Distribution>,
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
}

impl Report {
    /// Which model ran and at what rate: an open model's rate is only meaningful next to the
    /// rate it was asked for and what it could not send.
    pub fn model_summary(&self) -> String {
        match self.target_rps {
            Some(target) => format!(
                "open model, target {target:.0} req/s: achieved {:.0} req/s, {} dropped (never sent)",
                self.rps, self.dropped
            ),
            None => format!("closed model: {:.0} req/s", self.rps),
        }
    }
}

#[allow(clippy::cast_precision_loss)] // request counts are far below 2^52
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Report {
    /// The report of a run that measured `stats` over `elapsed`; `target_rps` for an open model.
    pub fn new(
        stats: &Stats,
        elapsed: Duration,
        target_rps: Option<f64>,
        settings: serde_json::Value,
    ) -> Self {
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        #[allow(clippy::cast_precision_loss)]
        let rate = |count: u64| count as f64 / seconds;
        let requests = stats.overall.requests;
        let errors = stats.overall.errors;
        let answered: u64 = stats.nodes.values().map(|s| s.requests).sum();
        let lookups = stats.cache_hits + stats.cache_misses;
        Self {
            settings,
            model: if target_rps.is_some() {
                "open"
            } else {
                "closed"
            }
            .to_owned(),
            target_rps,
            dropped: stats.dropped,
            duration_s: elapsed.as_secs_f64(),
            requests,
            successes: requests - errors,
            not_found: stats.not_found,
            precondition_failed: stats.precondition_failed,
            errors,
            errors_by_kind: stats.errors.clone(),
            error_ratio: ratio(errors, requests),
            rps: rate(requests),
            latency_us: Latency::of(&stats.overall.latency),
            failed_latency_us: (!stats.overall.failed_latency.is_empty())
                .then(|| Latency::of(&stats.overall.failed_latency)),
            ops: stats
                .ops
                .iter()
                .map(|(op, series)| {
                    (
                        op.name().to_owned(),
                        OpReport {
                            requests: series.requests,
                            errors: series.errors,
                            refused: series.refused,
                            rps: rate(series.requests),
                            latency_us: Latency::of(&series.latency),
                        },
                    )
                })
                .collect(),
            nodes: stats
                .nodes
                .iter()
                .map(|(node, series)| {
                    (
                        node.clone(),
                        NodeReport {
                            requests: series.requests,
                            share: ratio(series.requests, answered),
                            errors: series.errors,
                            latency_us: Latency::of(&series.latency),
                        },
                    )
                })
                .collect(),
            cache: CacheReport {
                hits: stats.cache_hits,
                misses: stats.cache_misses,
                hit_ratio: (lookups > 0).then(|| ratio(stats.cache_hits, lookups)),
            },
            series: stats
                .seconds
                .iter()
                .enumerate()
                .map(|(second, series)| {
                    // The run's last second is usually cut short: its count is scaled to a
                    // rate and marked, so a plot shows no false cliff at the end.
                    #[allow(clippy::cast_precision_loss)]
                    let covered = (elapsed.as_secs_f64() - second as f64).clamp(0.001, 1.0);
                    let partial = covered < 1.0;
                    #[allow(
                        clippy::cast_precision_loss,
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss
                    )]
                    let rps = if partial {
                        (series.requests as f64 / covered).round() as u64
                    } else {
                        series.requests
                    };
                    SecondReport {
                        second: second + 1,
                        requests: series.requests,
                        rps,
                        errors: series.errors,
                        p50_us: if series.latency.is_empty() {
                            0
                        } else {
                            series.latency.value_at_quantile(0.5)
                        },
                        p99_us: if series.latency.is_empty() {
                            0
                        } else {
                            series.latency.value_at_quantile(0.99)
                        },
                        partial,
                    }
                })
                .collect(),
            distributions: Distribution::of("all".to_owned(), &stats.overall.latency)
                .into_iter()
                .chain(stats.ops.iter().filter_map(|(op, series)| {
                    Distribution::of(op.name().to_owned(), &series.latency)
                }))
                .chain(stats.nodes.iter().filter_map(|(node, series)| {
                    Distribution::of(format!("node {node}"), &series.latency)
                }))
                .collect(),
            thresholds: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(op: Op, outcome: Outcome, ms: u64, node: &str) -> Sample<'_> {
        Sample {
            op,
            outcome,
            latency: Duration::from_millis(ms),
            node: Some(node),
            cache_hit: (op == Op::Get).then_some(ms < 5),
        }
    }

    #[test]
    fn merged_stats_equal_stats_recorded_in_one_place() {
        let samples = [
            sample(Op::Get, Outcome::Ok, 1, "n1"),
            sample(Op::Get, Outcome::Ok, 2, "n2"),
            sample(Op::Put, Outcome::Status(503), 30, "n1"),
            sample(Op::Get, Outcome::NotFound, 3, "n2"),
            sample(Op::Delete, Outcome::Timeout, 1000, "n1"),
            sample(Op::Get, Outcome::Ok, 9, "n1"),
        ];
        let mut whole = Stats::default();
        let (mut left, mut right) = (Stats::default(), Stats::default());
        for (i, s) in samples.iter().enumerate() {
            whole.record(s, i / 3);
            if i % 2 == 0 {
                left.record(s, i / 3);
            } else {
                right.record(s, i / 3);
            }
        }
        left.merge(&right);
        let settings = serde_json::json!({});
        let a = Report::new(&whole, Duration::from_secs(2), None, settings.clone());
        let b = Report::new(&left, Duration::from_secs(2), None, settings);
        assert_eq!(a, b);

        assert_eq!(a.requests, 6);
        assert_eq!(a.successes + a.errors, a.requests);
        assert_eq!(a.errors, 2);
        assert_eq!(a.not_found, 1);
        assert_eq!(a.errors_by_kind["status_503"], 1);
        assert_eq!(a.errors_by_kind["timeout"], 1);
        assert_eq!(a.ops["get"].requests, 4);
        assert_eq!(a.nodes["n1"].requests, 4);
        assert!((a.nodes["n1"].share - 4.0 / 6.0).abs() < 1e-9);
        assert_eq!((a.cache.hits, a.cache.misses), (3, 1));
        assert!((a.rps - 3.0).abs() < 1e-9);
        assert_eq!(a.series.len(), 2);
        assert_eq!(a.series[0].rps, 3);
        // The successes' latencies, with the failures' apart. hdrhistogram keeps 3
        // significant figures: 1000 ms reads back within 0.1%.
        assert!(
            (8_990..=9_010).contains(&a.latency_us.max),
            "{:?}",
            a.latency_us
        );
        let failed = a.failed_latency_us.as_ref().unwrap();
        assert!((999_000..=1_001_000).contains(&failed.max), "{failed:?}");
        assert!((1_990..=2_010).contains(&a.ops["get"].latency_us.p50));
    }

    #[test]
    fn a_partial_last_second_is_scaled_and_marked() {
        let mut stats = Stats::default();
        for second in 0..3 {
            // 100 requests in each whole second, 50 in the half second the run ended in.
            let count = if second == 2 { 50 } else { 100 };
            for _ in 0..count {
                stats.record(&sample(Op::Get, Outcome::Ok, 1, "n1"), second);
            }
        }
        let report = Report::new(
            &stats,
            Duration::from_millis(2500),
            None,
            serde_json::json!({}),
        );
        let series: Vec<(u64, bool)> = report.series.iter().map(|s| (s.rps, s.partial)).collect();
        assert_eq!(series, [(100, false), (100, false), (100, true)]);
        let json = serde_json::to_value(&report.series).unwrap();
        assert!(json[0].get("partial").is_none(), "marked only where true");
        assert_eq!(json[2]["partial"], true);
    }

    #[test]
    fn failures_do_not_feed_the_latency_percentiles() {
        let mut stats = Stats::default();
        for _ in 0..99 {
            stats.record(&sample(Op::Get, Outcome::Status(503), 1, "n1"), 0);
        }
        stats.record(&sample(Op::Get, Outcome::Ok, 50, "n1"), 0);
        let report = Report::new(&stats, Duration::from_secs(1), None, serde_json::json!({}));
        assert!(report.latency_us.p50 >= 49_000, "{:?}", report.latency_us);
        let failed = report.failed_latency_us.unwrap();
        assert!(failed.p99 < 2_000, "{failed:?}");
    }
}
