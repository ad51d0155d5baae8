//! The table of `scripts/bench.sh`: reads the raw outputs of one run (kg-bench JSON reports,
//! wrk, pgbench with its per-transaction logs, redis-benchmark CSV), combines the rows
//! measured in alternating rounds, takes each ratio against a baseline measured in the same
//! rounds, and checks the targets.
//!
//! A row measured in rounds (NAME.r1, NAME.r2, ...) has the mean rate over its rounds and the
//! medians of the rounds' own p50 and p99 (close to, not exactly, the percentiles of all
//! requests). A ratio against a baseline measured in the same rounds is the median of the
//! per-round ratios, because the machine drifts between rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::Report;

/// One measurement: a run, or the combination of a row's rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub requests: Option<u64>,
    pub errors: u64,
    /// Which node answered what share (kg-bench rows through nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<BTreeMap<String, f64>>,
    /// Each round's own figures, when the row ran in rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<Vec<Measurement>>,
}

impl Measurement {
    fn single(rps: f64, p50_ms: Option<f64>, p99_ms: Option<f64>) -> Self {
        Self {
            rps,
            p50_ms,
            p99_ms,
            requests: None,
            errors: 0,
            nodes: None,
            rounds: None,
        }
    }
}

/// A row of the table: its measurement and its ratios to the baselines it is compared with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub row: String,
    pub tool: String,
    #[serde(flatten)]
    pub measurement: Measurement,
    pub ratios: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRss {
    pub node: String,
    pub peak_rss_kb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    #[serde(default)]
    pub hit_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetResult {
    pub target: String,
    pub want: String,
    pub value: f64,
    pub met: bool,
}

/// The whole run, as printed and as written to target/bench/.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suite {
    pub meta: serde_json::Value,
    pub rows: Vec<Row>,
    pub baselines: BTreeMap<String, Measurement>,
    pub rss: Vec<NodeRss>,
    pub cache: CacheCounts,
    pub targets: Vec<TargetResult>,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

/// The number after `prefix` at the start of a (trimmed) line of `text`.
fn after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(prefix))
        .map(str::trim)
}

/// `1.23ms`, `850.00us`, `1.02s` in milliseconds.
fn wrk_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

/// Rate, p50/p99 and errors (non-2xx/3xx answers and socket errors) of `wrk --latency`.
pub fn parse_wrk(text: &str) -> Result<Measurement, String> {
    let rps = after(text, "Requests/sec:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no 'Requests/sec' line; wrk said:\n{text}"))?;
    let percentile = |p: &str| {
        text.lines().map(str::trim).find_map(|line| {
            let rest = line.strip_prefix(p)?.strip_prefix('%')?;
            wrk_duration_ms(rest.trim())
        })
    };
    let mut errors = after(text, "Non-2xx or 3xx responses:")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(socket) = after(text, "Socket errors:") {
        // "connect 0, read 0, write 0, timeout 3"
        errors += socket
            .split(',')
            .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    let requests = text.lines().map(str::trim).find_map(|line| {
        let (count, rest) = line.split_once(' ')?;
        rest.starts_with("requests in")
            .then(|| count.parse().ok())?
    });
    Ok(Measurement {
        requests,
        errors,
        ..Measurement::single(rps, percentile("50"), percentile("99"))
    })
}

/// The same fields from a kg-bench JSON report.
pub fn from_report(report: &Report) -> Measurement {
    #[allow(clippy::cast_precision_loss)]
    let ms = |us: u64| us as f64 / 1000.0;
    Measurement {
        requests: Some(report.requests),
        errors: report.errors,
        nodes: Some(
            report
                .nodes
                .iter()
                .map(|(node, n)| (node.clone(), (n.share * 1000.0).round() / 1000.0))
                .collect(),
        ),
        ..Measurement::single(
            report.rps,
            Some(ms(report.latency_us.p50)),
            Some(ms(report.latency_us.p99)),
        )
    }
}

fn parse_report(path: &Path) -> Result<Measurement, String> {
    let report: Report = serde_json::from_str(&read(path)?)
        .map_err(|err| format!("{} is not a kg-bench JSON report: {err}", path.display()))?;
    Ok(from_report(&report))
}

/// pgbench's tps from NAME.txt and p50/p99 from its per-transaction logs NAME.<pid>[.<n>]
/// (`-l`: the third field is the transaction's latency in microseconds).
pub fn parse_pgbench(dir: &Path, name: &str) -> Result<Measurement, String> {
    let text = read(&dir.join(format!("{name}.txt")))?;
    let rps: f64 = after(&text, "tps =")
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("pgbench printed no tps:\n{text}"))?;
    let errors = after(&text, "number of failed transactions:")
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut latencies = Vec::new();
    for path in files_with_prefix(dir, &format!("{name}."))? {
        if path.extension().is_some_and(|ext| ext == "txt") {
            continue;
        }
        for line in read(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|f| f.parse::<u64>().ok())
            {
                #[allow(clippy::cast_precision_loss)]
                latencies.push(us as f64 / 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let pct = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied()
    };
    Ok(Measurement {
        requests: Some(latencies.len() as u64),
        errors,
        ..Measurement::single(rps, pct(0.50), pct(0.99))
    })
}

/// The GET row of `redis-benchmark --csv`.
pub fn parse_redis_benchmark(text: &str) -> Result<Measurement, String> {
    let split = |line: &str| -> Vec<String> {
        line.trim()
            .replace('"', "")
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split(lines.next().ok_or("redis-benchmark printed nothing")?);
    let row = lines
        .map(split)
        .find(|r| r.first().is_some_and(|t| t == "GET"))
        .ok_or("redis-benchmark printed no GET row")?;
    let field = |name: &str| -> Result<f64, String> {
        header
            .iter()
            .position(|h| h == name)
            .and_then(|i| row.get(i)?.parse().ok())
            .ok_or_else(|| format!("redis-benchmark's GET row has no {name}"))
    };
    Ok(Measurement::single(
        field("rps")?,
        Some(field("p50_latency_ms")?),
        Some(field("p99_latency_ms")?),
    ))
}

fn files_with_prefix(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    })
}

/// The rounds NAME.r1.EXT, NAME.r2.EXT, ... of `dir`, each parsed, combined into one.
pub fn in_rounds(
    dir: &Path,
    name: &str,
    ext: &str,
    parse: impl Fn(&Path) -> Result<Measurement, String>,
) -> Result<Measurement, String> {
    let mut numbered: Vec<(u32, PathBuf)> = files_with_prefix(dir, &format!("{name}.r"))?
        .into_iter()
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?;
            let round = file
                .strip_prefix(&format!("{name}.r"))?
                .strip_suffix(&format!(".{ext}"))?
                .parse()
                .ok()?;
            Some((round, path))
        })
        .collect();
    if numbered.is_empty() {
        return Err(format!("{}: no rounds of {name}", dir.display()));
    }
    numbered.sort();
    let rounds = numbered
        .iter()
        .map(|(_, path)| parse(path))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(combine(rounds))
}

/// One measurement out of its rounds.
pub fn combine(rounds: Vec<Measurement>) -> Measurement {
    #[allow(clippy::cast_precision_loss)]
    let rps = rounds.iter().map(|r| r.rps).sum::<f64>() / rounds.len().max(1) as f64;
    Measurement {
        rps,
        p50_ms: median(rounds.iter().filter_map(|r| r.p50_ms).collect()),
        p99_ms: median(rounds.iter().filter_map(|r| r.p99_ms).collect()),
        requests: Some(rounds.iter().filter_map(|r| r.requests).sum()),
        errors: rounds.iter().map(|r| r.errors).sum(),
        nodes: None,
        rounds: Some(rounds),
    }
}

/// ROW's rate over BASELINE's: the median per-round ratio when both ran in the same rounds.
pub fn ratio_of(row: &Measurement, baseline: &Measurement) -> f64 {
    match (&row.rounds, &baseline.rounds) {
        (Some(a), Some(b)) if a.len() == b.len() => {
            median(a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect()).unwrap_or(f64::NAN)
        }
        _ => row.rps / baseline.rps,
    }
}

const PGBENCH: &str = "pgbench upsert";
const STATIC_KG: &str = "nginx->static (kg-bench)";
const STATIC_WRK: &str = "nginx->static (wrk)";
const STATIC_OPEN: &str = "nginx->static at half load (open)";
const REDIS: &str = "redis-benchmark GET";

/// Reads the run in `dir` (as scripts/bench.sh lays it out) into the table.
pub fn summarize(dir: &Path, meta: serde_json::Value) -> Result<Suite, String> {
    let wrk = |path: &Path| parse_wrk(&read(path)?).map_err(|e| format!("{}: {e}", path.display()));
    let pgbench = |path: &Path| {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: not a pgbench output", path.display()))?;
        parse_pgbench(dir, name)
    };
    let file = |name: &str| dir.join(name);

    let mut baselines = BTreeMap::new();
    baselines.insert(
        PGBENCH.to_owned(),
        in_rounds(dir, "pgbench-upsert", "txt", pgbench)?,
    );
    baselines.insert(
        STATIC_KG.to_owned(),
        in_rounds(dir, "static-nginx-kgbench", "json", parse_report)?,
    );
    baselines.insert(
        STATIC_WRK.to_owned(),
        in_rounds(dir, "static-nginx-wrk", "wrk", wrk)?,
    );
    // The latency row's floor: the proxy hop alone, at the same open-model rate.
    baselines.insert(
        STATIC_OPEN.to_owned(),
        parse_report(&file("static-latency-kgbench.json"))?,
    );
    let redis_csv = file("redis-get.csv");
    baselines.insert(
        REDIS.to_owned(),
        parse_redis_benchmark(&read(&redis_csv)?)
            .map_err(|e| format!("{}: {e}", redis_csv.display()))?,
    );

    let measured: Vec<(&str, &str, Measurement, &[&str])> = vec![
        (
            "PUT via nginx",
            "kg-bench",
            in_rounds(dir, "put-nginx-kgbench", "json", parse_report)?,
            &[PGBENCH],
        ),
        (
            "PUT via nginx",
            "wrk",
            in_rounds(dir, "put-nginx-wrk", "wrk", wrk)?,
            &[PGBENCH],
        ),
        (
            "GET hit via nginx",
            "kg-bench",
            in_rounds(dir, "get-nginx-kgbench", "json", parse_report)?,
            &[STATIC_KG, REDIS],
        ),
        (
            "GET hit via nginx",
            "wrk",
            in_rounds(dir, "get-nginx-wrk", "wrk", wrk)?,
            &[STATIC_WRK, REDIS],
        ),
        (
            "GET hit direct to n1",
            "wrk",
            in_rounds(dir, "get-direct-wrk", "wrk", wrk)?,
            &[STATIC_WRK, REDIS],
        ),
        (
            "90/10 mix via nginx",
            "kg-bench",
            parse_report(&file("mix-nginx-kgbench.json"))?,
            &[],
        ),
        (
            "GET at half load (open)",
            "kg-bench",
            parse_report(&file("get-latency-kgbench.json"))?,
            &[],
        ),
    ];
    let rows: Vec<Row> = measured
        .into_iter()
        .map(|(row, tool, measurement, against)| Row {
            ratios: against
                .iter()
                .map(|b| ((*b).to_owned(), ratio_of(&measurement, &baselines[*b])))
                .collect(),
            row: row.to_owned(),
            tool: tool.to_owned(),
            measurement,
        })
        .collect();

    let rss: Vec<NodeRss> = read(&file("rss.jsonl"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|err| format!("rss.jsonl: {err}")))
        .collect::<Result<_, _>>()?;
    let mut cache: CacheCounts = serde_json::from_str(&read(&file("cache.json"))?)
        .map_err(|err| format!("cache.json: {err}"))?;
    let looked_up = cache.hits + cache.misses;
    #[allow(clippy::cast_precision_loss)]
    {
        cache.hit_ratio = (looked_up > 0).then(|| cache.hits as f64 / looked_up as f64);
    }

    let ratio = |row: &str, tool: &str, baseline: &str| {
        rows.iter()
            .find(|r| r.row == row && r.tool == tool)
            .and_then(|r| r.ratios.get(baseline).copied())
            .unwrap_or(f64::NAN)
    };
    #[allow(clippy::cast_precision_loss)]
    let peak_rss_mb = rss.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0) as f64 / 1024.0;
    let latency_p99 = rows
        .iter()
        .find(|r| r.row == "GET at half load (open)")
        .and_then(|r| r.measurement.p99_ms)
        .unwrap_or(f64::NAN);
    let targets = [
        (
            "PUT via nginx / pgbench upsert (kg-bench)",
            ">=",
            0.8,
            ratio("PUT via nginx", "kg-bench", PGBENCH),
        ),
        (
            "PUT via nginx / pgbench upsert (wrk)",
            ">=",
            0.8,
            ratio("PUT via nginx", "wrk", PGBENCH),
        ),
        (
            "GET hit via nginx / nginx->static (kg-bench)",
            ">=",
            0.5,
            ratio("GET hit via nginx", "kg-bench", STATIC_KG),
        ),
        (
            "GET hit via nginx / nginx->static (wrk)",
            ">=",
            0.5,
            ratio("GET hit via nginx", "wrk", STATIC_WRK),
        ),
        ("GET p99 via nginx at half load, ms", "<", 5.0, latency_p99),
        ("peak node RSS, MB", "<", 150.0, peak_rss_mb),
    ]
    .into_iter()
    .map(|(target, op, want, value)| TargetResult {
        target: target.to_owned(),
        want: format!("{op} {want}"),
        value,
        met: if op == ">=" {
            value >= want
        } else {
            value < want
        },
    })
    .collect();

    Ok(Suite {
        meta,
        rows,
        baselines,
        rss,
        cache,
        targets,
    })
}

const SINGLE_PUT: &str = "PUT via nginx, single-server stack";
const SINGLE_GET: &str = "GET hit via nginx, single-server stack";

/// `scripts/bench.sh --ha`'s table: the same kg-bench PUT and GET (cache hit) through nginx
/// on the replicated data tier (`put-ha`, `get-ha`) against the single-server stack
/// (`put-single`, `get-single`), measured in alternating rounds; the targets are the issue's
/// costs of HA (PUT >= 0.7x, GET hit >= 0.95x).
pub fn summarize_ha(dir: &Path, meta: serde_json::Value) -> Result<Suite, String> {
    let mut baselines = BTreeMap::new();
    baselines.insert(
        SINGLE_PUT.to_owned(),
        in_rounds(dir, "put-single", "json", parse_report)?,
    );
    baselines.insert(
        SINGLE_GET.to_owned(),
        in_rounds(dir, "get-single", "json", parse_report)?,
    );
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (row, name, baseline, want) in [
        ("PUT via nginx, HA tier", "put-ha", SINGLE_PUT, 0.7),
        ("GET hit via nginx, HA tier", "get-ha", SINGLE_GET, 0.95),
    ] {
        let measurement = in_rounds(dir, name, "json", parse_report)?;
        let value = ratio_of(&measurement, &baselines[baseline]);
        targets.push(TargetResult {
            target: format!("{row} / single-server stack"),
            want: format!(">= {want}"),
            value,
            met: value >= want,
        });
        rows.push(Row {
            ratios: BTreeMap::from([(baseline.to_owned(), value)]),
            row: row.to_owned(),
            tool: "kg-bench".to_owned(),
            measurement,
        });
    }
    Ok(Suite {
        meta,
        rows,
        baselines,
        rss: Vec::new(),
        cache: CacheCounts {
            hits: 0,
            misses: 0,
            hit_ratio: None,
        },
        targets,
    })
}

/// Rows that measured the wrong thing: any errors, or no rate at all.
pub fn unsound_rows(suite: &Suite) -> Vec<String> {
    let rows = suite
        .rows
        .iter()
        .map(|r| (format!("{} ({})", r.row, r.tool), &r.measurement));
    let baselines = suite.baselines.iter().map(|(n, m)| (n.clone(), m));
    rows.chain(baselines)
        .filter(|(_, m)| m.errors > 0 || m.rps.is_nan() || m.rps <= 0.0 || m.p99_ms.is_none())
        .map(|(name, m)| format!("{name}: {} errors, {:.0} req/s", m.errors, m.rps))
        .collect()
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The table, the baselines, memory and cache, and the targets.
pub fn print(out: &mut dyn Write, suite: &Suite) -> io::Result<()> {
    let meta = &suite.meta;
    let field = |name: &str| match &meta[name] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".to_owned(),
        other => other.to_string(),
    };
    writeln!(
        out,
        "\nKeyGrid benchmark {}: {} connections, {} keys, {} s per row in {} alternating rounds, \
         {} build, {} cores ({})\n",
        field("date"),
        field("connections"),
        field("keys"),
        field("duration_s"),
        field("rounds"),
        field("profile"),
        field("cores"),
        field("cpu"),
    )?;
    let rows: Vec<Vec<String>> = suite
        .rows
        .iter()
        .map(|r| {
            let m = &r.measurement;
            vec![
                r.row.clone(),
                r.tool.clone(),
                format!("{:.0}", m.rps),
                ms(m.p50_ms),
                ms(m.p99_ms),
                m.errors.to_string(),
                r.ratios
                    .iter()
                    .map(|(b, v)| format!("{v:.2}x {b}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    crate::report::table(
        out,
        &[
            "ROW", "TOOL", "REQ/S", "P50 MS", "P99 MS", "ERRORS", "RATIO",
        ],
        &rows,
    )?;
    writeln!(out)?;
    let baselines: Vec<Vec<String>> = suite
        .baselines
        .iter()
        .map(|(name, m)| {
            vec![
                name.clone(),
                format!("{:.0}", m.rps),
                ms(m.p50_ms),
                ms(m.p99_ms),
            ]
        })
        .collect();
    crate::report::table(out, &["BASELINE", "REQ/S", "P50 MS", "P99 MS"], &baselines)?;
    // The HA table measures neither memory nor the cache's counters.
    if suite.rss.is_empty() {
        writeln!(out)?;
        return print_targets(out, suite);
    }
    let mut memory = String::from("\npeak RSS: ");
    for (i, r) in suite.rss.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let mb = r.peak_rss_kb as f64 / 1024.0;
        let _ = write!(
            memory,
            "{}{} {mb:.1} MB",
            if i > 0 { ", " } else { "" },
            r.node
        );
    }
    writeln!(
        out,
        "{memory}; cache hit ratio during the GET rows: {}\n",
        suite
            .cache
            .hit_ratio
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.4}"))
    )?;
    print_targets(out, suite)
}

fn print_targets(out: &mut dyn Write, suite: &Suite) -> io::Result<()> {
    let targets: Vec<Vec<String>> = suite
        .targets
        .iter()
        .map(|t| {
            vec![
                if t.met { "met" } else { "MISSED" }.to_owned(),
                t.target.clone(),
                format!("{:.2}", t.value),
                format!("(want {})", t.want),
            ]
        })
        .collect();
    crate::report::table(out, &["TARGET", "", "VALUE", ""], &targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 2s test @ http://127.0.0.1:8000
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  20.01ms   80.00%
  Latency Distribution
     50%    1.92ms
     75%    2.50ms
     90%    3.10ms
     99%  850.00us
  24000 requests in 2.00s, 5.00MB read
  Non-2xx or 3xx responses: 5
  Socket errors: connect 1, read 2, write 0, timeout 3
Requests/sec:  12000.50
Transfer/sec:      2.50MB
";

    #[test]
    fn wrk_output_gives_rate_percentiles_and_every_error() {
        let m = parse_wrk(WRK).unwrap();
        assert!((m.rps - 12000.5).abs() < 1e-9);
        assert_eq!(m.p50_ms, Some(1.92));
        assert_eq!(m.p99_ms, Some(0.85));
        assert_eq!(m.requests, Some(24000));
        assert_eq!(m.errors, 11);
        let err = parse_wrk("unable to connect").unwrap_err();
        assert!(err.contains("Requests/sec"), "{err}");
    }

    #[test]
    fn redis_benchmark_csv_gives_the_get_row() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
                   \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"GET\",\"81234.56\",\"0.4\",\"0.1\",\"0.391\",\"0.6\",\"0.799\",\"2.0\"\n";
        let m = parse_redis_benchmark(csv).unwrap();
        assert!((m.rps - 81234.56).abs() < 1e-9);
        assert_eq!((m.p50_ms, m.p99_ms), (Some(0.391), Some(0.799)));
        assert!(parse_redis_benchmark("\"test\",\"rps\"\n\"SET\",\"1\"\n").is_err());
    }

    #[test]
    fn pgbench_gives_tps_and_percentiles_from_its_logs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pg.r1.txt"),
            "number of failed transactions: 2 (0.1%)\ntps = 1500.25 (without initial connection time)\n",
        )
        .unwrap();
        // Two threads' logs: 100 transactions of 1..=100 ms.
        let log = |range: std::ops::RangeInclusive<u64>| {
            range
                .map(|ms| format!("0 {ms} {} 0 1700000000 0\n", ms * 1000))
                .collect::<String>()
        };
        std::fs::write(dir.path().join("pg.r1.123"), log(1..=50)).unwrap();
        std::fs::write(dir.path().join("pg.r1.123.1"), log(51..=100)).unwrap();
        let m = parse_pgbench(dir.path(), "pg.r1").unwrap();
        assert!((m.rps - 1500.25).abs() < 1e-9);
        assert_eq!((m.requests, m.errors), (Some(100), 2));
        assert_eq!((m.p50_ms, m.p99_ms), (Some(51.0), Some(100.0)));
    }

    #[test]
    fn rounds_combine_by_mean_rate_and_median_percentiles_and_ratios_pair_rounds() {
        let m = |rps: f64, p99: f64| Measurement {
            requests: Some(10),
            errors: 1,
            ..Measurement::single(rps, Some(p99 / 2.0), Some(p99))
        };
        // The machine drifts: the second round is slower for both, and the ratio holds.
        let row = combine(vec![m(900.0, 3.0), m(450.0, 5.0), m(600.0, 4.0)]);
        let base = combine(vec![m(1000.0, 1.0), m(500.0, 1.0), m(1200.0, 1.0)]);
        assert!((row.rps - 650.0).abs() < 1e-9);
        assert_eq!(row.p99_ms, Some(4.0));
        assert_eq!((row.requests, row.errors), (Some(30), 3));
        assert!((ratio_of(&row, &base) - 0.9).abs() < 1e-9);
        // Unpaired: the plain ratio of the rates.
        let single = m(325.0, 1.0);
        assert!((ratio_of(&single, &row) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn in_rounds_reads_the_rounds_in_order_and_wants_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        for (round, rps) in [(10, "300"), (2, "200"), (1, "100")] {
            let text = WRK.replace("12000.50", rps);
            std::fs::write(dir.path().join(format!("w.r{round}.wrk")), text).unwrap();
        }
        let wrk = |p: &Path| parse_wrk(&std::fs::read_to_string(p).unwrap());
        let m = in_rounds(dir.path(), "w", "wrk", wrk).unwrap();
        let rates: Vec<f64> = m.rounds.unwrap().iter().map(|r| r.rps).collect();
        assert_eq!(rates, [100.0, 200.0, 300.0]);
        assert!(in_rounds(dir.path(), "nothing", "wrk", wrk).is_err());
    }

    #[test]
    fn a_row_or_baseline_with_errors_or_without_a_rate_is_unsound() {
        let good = Measurement::single(100.0, Some(1.0), Some(2.0));
        let row = |name: &str, measurement: Measurement| Row {
            row: name.to_owned(),
            tool: "wrk".to_owned(),
            measurement,
            ratios: BTreeMap::new(),
        };
        let mut suite = Suite {
            meta: serde_json::json!({}),
            rows: vec![row("clean", good.clone())],
            baselines: BTreeMap::from([("base".to_owned(), good.clone())]),
            rss: vec![],
            cache: CacheCounts {
                hits: 0,
                misses: 0,
                hit_ratio: None,
            },
            targets: vec![],
        };
        assert!(unsound_rows(&suite).is_empty());
        suite.rows.push(row(
            "errors",
            Measurement {
                errors: 3,
                ..good.clone()
            },
        ));
        suite
            .baselines
            .insert("dead".to_owned(), Measurement::single(0.0, None, None));
        let unsound = unsound_rows(&suite);
        assert_eq!(unsound.len(), 2, "{unsound:?}");
        assert!(
            unsound[0].starts_with("errors (wrk): 3 errors"),
            "{unsound:?}"
        );
        assert!(
            unsound[1].starts_with("dead: 0 errors, 0 req/s"),
            "{unsound:?}"
        );
    }
}
