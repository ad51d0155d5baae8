//! k6-style pass/fail thresholds (`p99<5ms`, `p(95)<2ms`, `errors<0.1%`, `rps>10000`,
//! `dropped<1`, `nodes>=3`, `node_share>20%`) and the comparison of two JSON reports (`kg-bench compare`). Pure.

use std::fmt;
use std::str::FromStr;

use crate::stats::{Report, ThresholdResult};

use hdrhistogram::Histogram;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A latency percentile (`p95`, `p(95)`, `p99.9`, any `pNN` or `pNN.N`) or `max` or `mean`
    /// of the successful requests, in µs.
    Latency(LatencyStat),
    /// Failed requests over all requests.
    Errors,
    /// Requests sent per second (the achieved rate).
    Rps,
    /// Open model: requests the run never sent (k6's `dropped_iterations`), a count.
    Dropped,
    /// How many nodes answered (X-KeyGrid-Node), a count.
    Nodes,
    /// The smallest share of the requests that one answering node took: whether a load
    /// balancer spreads the load.
    NodeShare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyStat {
    /// A percentile, in thousandths of a percent: p95 is 95_000, p99.9 is 99_900.
    Percentile(u32),
    Max,
    Mean,
}

/// `p95`, `p(95)`, `p99.9`, `p(99.99)`, and `p999` (an old spelling of p99.9) as a
/// percentile in thousandths of a percent.
fn parse_percentile(name: &str) -> Option<u32> {
    let number = name.strip_prefix('p')?;
    let number = number
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or(number);
    if number == "999" {
        return Some(99_900);
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 2 || !(fraction.is_empty() || digits(fraction)) {
        return None;
    }
    if fraction.len() > 3 {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let fraction: u32 = format!("{fraction:0<3}").parse().ok()?;
    let thousandths = whole * 1000 + fraction;
    (thousandths > 0 && thousandths < 100_000).then_some(thousandths)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// One `--threshold`: `METRIC OP VALUE`, the value in the metric's unit (µs for latencies,
/// a ratio for errors, requests per second for rps).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub metric: Metric,
    pub comparison: Comparison,
    pub limit: f64,
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact
            .find(['<', '>'])
            .ok_or_else(|| format!("{text:?}: expected METRIC<VALUE or METRIC>VALUE"))?;
        let (name, rest) = compact.split_at(at);
        let (comparison, value) = if let Some(value) = rest.strip_prefix("<=") {
            (Comparison::LessOrEqual, value)
        } else if let Some(value) = rest.strip_prefix(">=") {
            (Comparison::GreaterOrEqual, value)
        } else if let Some(value) = rest.strip_prefix('<') {
            (Comparison::Less, value)
        } else {
            (Comparison::Greater, &rest[1..])
        };
        let metric = match name {
            "max" => Metric::Latency(LatencyStat::Max),
            "mean" | "avg" => Metric::Latency(LatencyStat::Mean),
            "errors" => Metric::Errors,
            "rps" => Metric::Rps,
            "dropped" => Metric::Dropped,
            "nodes" => Metric::Nodes,
            "node_share" => Metric::NodeShare,
            other => match parse_percentile(other) {
                Some(thousandths) => Metric::Latency(LatencyStat::Percentile(thousandths)),
                None => {
                    return Err(format!(
                        "{text:?}: unknown metric {other:?} (a percentile such as p95, p(95) or \
                         p99.9; max, mean, errors, rps, dropped, nodes, node_share)"
                    ))
                }
            },
        };
        let limit = match metric {
            Metric::Latency(_) => parse_duration_us(value),
            Metric::Errors | Metric::NodeShare => parse_ratio(value),
            Metric::Rps | Metric::Dropped | Metric::Nodes => value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0),
        }
        .ok_or_else(|| format!("{text:?}: cannot read the value {value:?}"))?;
        Ok(Threshold {
            text: text.trim().to_owned(),
            metric,
            comparison,
            limit,
        })
    }
}

/// `5ms`, `250us`, `1.5s` → microseconds.
fn parse_duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * scale)
}

/// `0.1%` or `0.001` → 0.001.
pub fn parse_ratio(text: &str) -> Option<f64> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (text, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * scale)
}

impl Threshold {
    /// The measured value, in the threshold's unit, and the unit's name. Percentiles are read
    /// from `latency`, the successes' histogram, so that any percentile is exact.
    pub fn measure(&self, report: &Report, latency: &Histogram<u64>) -> (f64, &'static str) {
        #[allow(clippy::cast_precision_loss)]
        match self.metric {
            Metric::Latency(stat) => {
                let value = match stat {
                    LatencyStat::Percentile(thousandths) if !latency.is_empty() => {
                        latency.value_at_quantile(f64::from(thousandths) / 100_000.0) as f64
                    }
                    LatencyStat::Percentile(_) => 0.0,
                    LatencyStat::Max => report.latency_us.max as f64,
                    LatencyStat::Mean => report.latency_us.mean,
                };
                (value, "us")
            }
            Metric::Errors => (report.error_ratio, "ratio"),
            Metric::Rps => (report.rps, "rps"),
            Metric::Dropped => (report.dropped as f64, "requests"),
            Metric::Nodes => (report.nodes.len() as f64, "nodes"),
            Metric::NodeShare => {
                let smallest = report.nodes.values().map(|n| n.share).reduce(f64::min);
                (smallest.unwrap_or(0.0), "ratio")
            }
        }
    }

    pub fn check(&self, report: &Report, latency: &Histogram<u64>) -> ThresholdResult {
        let (value, unit) = self.measure(report, latency);
        let passed = match self.comparison {
            Comparison::Less => value < self.limit,
            Comparison::LessOrEqual => value <= self.limit,
            Comparison::Greater => value > self.limit,
            Comparison::GreaterOrEqual => value >= self.limit,
        };
        ThresholdResult {
            threshold: self.text.clone(),
            value,
            unit: unit.to_owned(),
            passed,
        }
    }
}

/// One figure of `compare`: where it was, where it is, and whether that is worse.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub figure: String,
    pub base: f64,
    pub new: f64,
    /// (new - base) / base; `None` when base is 0.
    pub change: Option<f64>,
    pub regression: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.figure, self.base, self.new)
    }
}

/// What differs between two runs' settings, as `NAME BASE against NEW` (the mix as
/// `get=90,put=9`): figures of runs made differently may not compare. When each started is
/// left out: it always differs.
pub fn settings_differences(base: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (base, new) = (
        base.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let names: std::collections::BTreeSet<&String> = base.keys().chain(new.keys()).collect();
    let absent = serde_json::Value::Null;
    names
        .into_iter()
        .filter(|name| name.as_str() != "started_at")
        .filter_map(|name| {
            let (before, after) = (
                base.get(name).unwrap_or(&absent),
                new.get(name).unwrap_or(&absent),
            );
            (before != after).then(|| {
                format!(
                    "{name} {} against {}",
                    crate::report::setting_text(name, before),
                    crate::report::setting_text(name, after)
                )
            })
        })
        .collect()
}

/// Compares every figure the two reports share. Higher is better for rps, lower for latency
/// and errors; a change worse than `tolerance` (0.05 = 5%) is a regression.
pub fn compare(base: &Report, new: &Report, tolerance: f64) -> Vec<Change> {
    #[allow(clippy::cast_precision_loss)]
    fn latency_rows(
        prefix: &str,
        base: &crate::stats::Latency,
        new: &crate::stats::Latency,
    ) -> Vec<(String, f64, f64)> {
        vec![
            (format!("{prefix}p50_us"), base.p50 as f64, new.p50 as f64),
            (format!("{prefix}p90_us"), base.p90 as f64, new.p90 as f64),
            (format!("{prefix}p99_us"), base.p99 as f64, new.p99 as f64),
            (
                format!("{prefix}p99.9_us"),
                base.p999 as f64,
                new.p999 as f64,
            ),
        ]
    }
    let mut rows: Vec<(String, f64, f64, bool)> = vec![("rps".to_owned(), base.rps, new.rps, true)];
    rows.push((
        "error_ratio".to_owned(),
        base.error_ratio,
        new.error_ratio,
        false,
    ));
    rows.extend(
        latency_rows("", &base.latency_us, &new.latency_us)
            .into_iter()
            .map(|(f, b, n)| (f, b, n, false)),
    );
    for (op, base_op) in &base.ops {
        if let Some(new_op) = new.ops.get(op) {
            rows.push((format!("{op}.rps"), base_op.rps, new_op.rps, true));
            rows.extend(
                latency_rows(&format!("{op}."), &base_op.latency_us, &new_op.latency_us)
                    .into_iter()
                    .map(|(f, b, n)| (f, b, n, false)),
            );
        }
    }
    rows.into_iter()
        .map(|(figure, base, new, higher_is_better)| {
            let change = (base != 0.0).then(|| (new - base) / base);
            let regression = if figure == "error_ratio" {
                // Any rise in errors from none is a regression; otherwise relative.
                new > base && (base == 0.0 || change.is_some_and(|c| c > tolerance))
            } else {
                match change {
                    Some(c) if higher_is_better => c < -tolerance,
                    Some(c) => c > tolerance,
                    None => false,
                }
            };
            Change {
                figure,
                base,
                new,
                change,
                regression,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{Outcome, Sample, Stats};
    use crate::workload::Op;

    fn report(latencies_ms: &[u64], errors: usize, seconds: u64) -> (Report, Histogram<u64>) {
        let mut stats = Stats::default();
        for (i, ms) in latencies_ms.iter().enumerate() {
            let outcome = if i < errors {
                Outcome::Status(503)
            } else {
                Outcome::Ok
            };
            stats.record(
                &Sample {
                    op: Op::Get,
                    outcome,
                    latency: Duration::from_millis(*ms),
                    // Two nodes in turn: n1 answers 3 of 5, n2 2 of 5.
                    node: Some(if i % 2 == 0 { "n1" } else { "n2" }),
                    cache_hit: None,
                },
                0,
            );
        }
        let report = Report::new(
            &stats,
            Duration::from_secs(seconds),
            None,
            serde_json::json!({}),
        );
        (report, stats.overall.latency)
    }

    #[test]
    fn thresholds_parse_in_every_form() {
        let t: Threshold = "p99<5ms".parse().unwrap();
        assert_eq!(t.metric, Metric::Latency(LatencyStat::Percentile(99_000)));
        // k6's most common threshold, in both of its spellings, and any percentile.
        for (text, thousandths) in [
            ("p95<2ms", 95_000),
            ("p(95)<2ms", 95_000),
            ("p(99.9)<2ms", 99_900),
            ("p999<2ms", 99_900),
            ("p99.99<2ms", 99_990),
            ("p75<2ms", 75_000),
            ("p(97.5) < 2ms", 97_500),
        ] {
            assert_eq!(
                text.parse::<Threshold>().unwrap().metric,
                Metric::Latency(LatencyStat::Percentile(thousandths)),
                "{text}"
            );
        }
        let t: Threshold = "dropped<1".parse().unwrap();
        assert_eq!((t.metric, t.limit), (Metric::Dropped, 1.0));
        let t: Threshold = "nodes>=3".parse().unwrap();
        assert_eq!((t.metric, t.limit), (Metric::Nodes, 3.0));
        let t: Threshold = "node_share>20%".parse().unwrap();
        assert_eq!(t.metric, Metric::NodeShare);
        assert!((t.limit - 0.2).abs() < 1e-12);
        let t: Threshold = "p99<5ms".parse().unwrap();
        assert_eq!(t.comparison, Comparison::Less);
        assert!((t.limit - 5_000.0).abs() < 1e-9);
        let t: Threshold = "errors < 0.1%".parse().unwrap();
        assert_eq!(t.metric, Metric::Errors);
        assert!((t.limit - 0.001).abs() < 1e-12);
        let t: Threshold = "rps>=10000".parse().unwrap();
        assert_eq!(
            (t.metric, t.comparison, t.limit),
            (Metric::Rps, Comparison::GreaterOrEqual, 10_000.0)
        );
        assert!(("p99.9<=1.5s".parse::<Threshold>().unwrap().limit - 1_500_000.0).abs() < 1e-6);
        for bad in [
            "p99",
            "p99<5",
            "errors<lots",
            "rps>-1",
            "<5ms",
            "p100<5ms",
            "p0<5ms",
            "p(95<5ms",
            "p9.9999<5ms",
            "px<5ms",
            "dropped<-1",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn thresholds_check_the_measured_value() {
        let (run, latency) = report(&[1, 2, 3, 4, 100], 1, 1);
        let check = |t: &str| t.parse::<Threshold>().unwrap().check(&run, &latency);
        assert!(check("p50<5ms").passed);
        assert!(!check("p99<5ms").passed);
        assert!(check("p(75)<5ms").passed);
        assert!(!check("p95<5ms").passed);
        assert!(check("dropped<1").passed);
        assert!(!check("errors<1%").passed);
        assert!(check("errors<=20%").passed);
        assert!(check("rps>4").passed);
        assert!(!check("rps>5").passed);
        assert!((check("rps>5").value - 5.0).abs() < 1e-9);
        assert!(check("nodes>=2").passed);
        assert!(!check("nodes>=3").passed);
        assert!(check("node_share>=40%").passed);
        assert!(!check("node_share>40%").passed);
    }

    #[test]
    fn compare_flags_only_changes_beyond_the_tolerance() {
        let (base, _) = report(&[10; 100], 0, 10);
        let (same, _) = report(&[10; 100], 0, 10);
        assert!(compare(&base, &same, 0.05).iter().all(|c| !c.regression));

        let (slower, _) = report(&[12; 100], 0, 10);
        let changes = compare(&base, &slower, 0.05);
        let p50 = changes.iter().find(|c| c.figure == "p50_us").unwrap();
        assert!(p50.regression, "{p50:?}");
        assert!((p50.change.unwrap() - 0.2).abs() < 0.01);

        let (fewer, _) = report(&[10; 100], 0, 11); // same requests over longer: rps -9%
        let rps = compare(&base, &fewer, 0.05)
            .into_iter()
            .find(|c| c.figure == "rps")
            .unwrap();
        assert!(rps.regression);
        assert!(compare(&base, &fewer, 0.10)
            .iter()
            .all(|c| c.figure != "rps" || !c.regression));

        let (failing, _) = report(&[10; 100], 1, 10);
        let errors = compare(&base, &failing, 0.05)
            .into_iter()
            .find(|c| c.figure == "error_ratio")
            .unwrap();
        assert!(errors.regression, "errors from none is a regression");
    }
}
