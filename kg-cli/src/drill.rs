//! `kg failover-drill`: the seed's manual failover procedure, run automatically under load, with
//! per-phase figures and a PASS/FAIL verdict. The load is kg-bench's engine, the node changes
//! go through kg-bench's fault runtime, and the verdict on lost writes, stale reads and
//! linearizability is kg-bench's judge. The phase engine is public so that the cluster tests
//! can run other sequences (kills, rolling restarts) through the same code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use kg_api::{Client, Precondition};
use kg_bench::fault::{self, Member};
use kg_bench::history::{self, HistoryEntry, HistoryOutcome};
use kg_bench::judge::{self, Expectations, RunCounts};
use kg_bench::run::{RunOptions, Target};
use kg_bench::workload::{KeyDist, Mix, Op, ValueSize};
use serde::Serialize;

/// How the drill stops and starts nodes: kg-bench's fault runtime.
pub use kg_bench::fault::Runtime;

/// The key the seed's drill writes and reads.
pub const SEED_KEY: &str = "failover";

/// Keys the load spreads over, under the drill's own prefix.
const KEYS: u64 = 100;

/// What a phase does to the cluster before holding the load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "nodes", rename_all = "snake_case")]
pub enum Action {
    /// Change nothing.
    None,
    Stop(Vec<String>),
    Kill(Vec<String>),
    /// Start these nodes, all at once.
    Start(Vec<String>),
    /// Stop, then start each node in turn (a rolling restart).
    Restart(Vec<String>),
}

/// What a phase expects of the requests made in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Some node is up: no GET may fail.
    NoFailedGets,
    /// Some node is up and changes are graceful: no request at all may fail.
    NoFailures,
    /// Every node is down: once the change is made, every request gets 502.
    AllBadGateway,
    /// Nodes come back: a GET succeeds within the recovery bound.
    Recovers,
}

/// One step of a drill.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub action: Action,
    /// Nodes up once the action is done.
    pub nodes_up: usize,
    pub expect: Expect,
}

/// The seed's five phases over `nodes`: baseline, stop each in turn, restore all.
pub fn seed_phases(nodes: &[String]) -> Vec<Phase> {
    let mut phases = vec![Phase {
        name: "baseline".to_owned(),
        action: Action::None,
        nodes_up: nodes.len(),
        expect: Expect::NoFailedGets,
    }];
    for (stopped, node) in nodes.iter().enumerate() {
        let nodes_up = nodes.len() - stopped - 1;
        phases.push(Phase {
            name: if nodes_up == 0 {
                format!("stop {node} (all down)")
            } else {
                format!("stop {node}")
            },
            action: Action::Stop(vec![node.clone()]),
            nodes_up,
            expect: if nodes_up == 0 {
                Expect::AllBadGateway
            } else {
                Expect::NoFailedGets
            },
        });
    }
    phases.push(Phase {
        name: "restore all".to_owned(),
        action: Action::Start(nodes.to_vec()),
        nodes_up: nodes.len(),
        expect: Expect::Recovers,
    });
    phases
}

/// Load and bounds of a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// How long each phase holds the load after its action.
    pub phase_duration: Duration,
    /// Requests per second, GETs and PUTs together.
    pub rate: u32,
    /// Share of PUTs, 0.0 to 1.0.
    pub write_ratio: f64,
    /// The restore phase must serve a GET within this long of its action starting.
    pub max_recovery: Duration,
    /// Connections, each with one request in flight.
    pub concurrency: usize,
    /// A request without an answer after this long has an unknown outcome.
    pub timeout: Duration,
    /// Bearer token for nodes that require one.
    pub token: Option<String>,
    /// Where the recorded history is kept; a temporary file, deleted after the verdict, when
    /// `None`.
    pub keep_history: Option<std::path::PathBuf>,
}

/// The figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub action: Action,
    pub nodes_up: usize,
    pub expect: Expect,
    /// How long the action took (stop commands wait for the drain).
    pub action_ms: u64,
    pub requests: u64,
    pub successes: u64,
    pub failed_gets: u64,
    pub failed_puts: u64,
    /// Failures by status code, `transport` for no answer (refused, reset, timed out).
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Which nodes answered, and how often (X-KeyGrid-Node).
    pub answered_by: BTreeMap<String, u64>,
    /// Time from the start of the action to the first success after the last failure of the
    /// phase; 0 when nothing failed, `null` when nothing succeeded after the last failure.
    pub recovery_ms: Option<u64>,
    pub passed: bool,
    /// Why the phase failed its expectation, if it did.
    pub problem: Option<String>,
}

/// The whole drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub endpoint: String,
    pub rate: u32,
    pub write_ratio: f64,
    pub phase_duration_ms: u64,
    pub max_recovery_ms: u64,
    pub phases: Vec<PhaseReport>,
    pub acknowledged_writes: u64,
    pub lost_writes: u64,
    /// Up to 10 lost keys, for the curious.
    pub lost_examples: Vec<String>,
    /// GETs that returned an older state than a write acknowledged before they were sent.
    pub stale_reads: u64,
    /// Keys whose history is not linearizable (kg-bench's checker).
    pub violations: u64,
    pub passed: bool,
}

/// Runs `phases` against the entry `client` while kg-bench's load engine holds an open-model
/// load on it (its history recorded), then judges the history: acknowledged writes lost
/// (against a listing of the drill's keys), stale reads and linearizability, and each phase
/// against its expectation. `progress` shows a live line on a terminal.
pub async fn run_drill(
    client: &Client,
    runtime: &Runtime,
    phases: &[Phase],
    options: &DrillOptions,
    progress: bool,
) -> Result<DrillReport, String> {
    // The seed's step 1: PUT failover=ok, then GET returns it.
    client
        .put(SEED_KEY, "ok", Precondition::None)
        .await
        .map_err(|err| format!("the cluster is not serving before the drill: {err}"))?;
    let read = client
        .get(SEED_KEY)
        .await
        .map_err(|err| format!("the cluster is not serving before the drill: {err}"))?;
    if read.value != "ok" {
        return Err(format!(
            "GET {SEED_KEY} returned {:?}, not \"ok\"",
            read.value
        ));
    }

    let run_id = format!("{:08x}", fastrand::u32(..));
    let prefix = format!("drill/{run_id}/");
    let history_file = options
        .keep_history
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kg-drill-{run_id}.jsonl")));
    let forget = |file: &std::path::Path| {
        if options.keep_history.is_none() {
            let _ = std::fs::remove_file(file);
        }
    };
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let put = (options.write_ratio * 100.0).round() as u32;
    let load_options = RunOptions {
        targets: vec![Target::resolve(client.endpoint().as_str().trim_end_matches('/')).await?],
        concurrency: options.concurrency,
        rate: Some(f64::from(options.rate)),
        duration: None,
        requests: None,
        warmup: Duration::ZERO,
        mix: Mix {
            get: 100 - put,
            put,
            delete: 0,
            cas: 0,
            delete_prefix: 0,
            txn: 0,
        },
        keys: KEYS,
        key_dist: KeyDist::Uniform,
        value_size: ValueSize { min: 32, max: 32 },
        preload: false,
        timeout: options.timeout,
        token: options.token.clone(),
        record: Some(history_file.clone()),
        progress: false,
        key_prefix: prefix.clone(),
        stop: Some(stop.clone()),
        origin: Some(origin),
        retries: None,
    };
    let settings = serde_json::json!({"drill": run_id});
    let load = tokio::spawn(kg_bench::run::run(load_options, settings));

    let bar = progress_bar(progress);
    let mut marks = Vec::with_capacity(phases.len());
    for (index, phase) in phases.iter().enumerate() {
        bar.set_prefix(format!(
            "phase {}/{}: {}",
            index + 1,
            phases.len(),
            phase.name
        ));
        let started = Instant::now();
        let result = apply(runtime, &phase.action).await;
        let settled = Instant::now();
        marks.push((micros(origin, started), micros(origin, settled)));
        if let Err(err) = result {
            stop.store(true, Ordering::Relaxed);
            let _ = load.await;
            forget(&history_file);
            bar.finish_and_clear();
            return Err(format!("phase {:?}: {err}", phase.name));
        }
        tokio::time::sleep_until((settled + options.phase_duration).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let loaded = load.await.map_err(|err| format!("the load failed: {err}"));
    bar.finish_and_clear();
    let history = history::read_history_file(&history_file);
    forget(&history_file);
    let (report, _) = loaded??;
    let history = history?;

    let state = kg_bench::chaos::read_state(client, &prefix).await?;
    let verdict = judge::judge(
        "failover-drill",
        &history,
        Some(&state),
        Some(&RunCounts {
            requests: report.requests,
            errors_by_kind: report.errors_by_kind.clone(),
            precondition_failed: report.precondition_failed,
        }),
        &Expectations {
            state_limit: kg_bench::check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        },
    )?;
    let mut lost: Vec<String> = judge::lost_writes(&history, &state)?
        .into_iter()
        .map(|lost| lost.write.key)
        .collect();
    // The seed's own key, written before the load: still there after every phase.
    match client.get(SEED_KEY).await {
        Ok(read) if read.value == "ok" => {}
        _ => lost.push(SEED_KEY.to_owned()),
    }

    let mut reports = Vec::with_capacity(phases.len());
    for (index, phase) in phases.iter().enumerate() {
        let (started, settled) = marks[index];
        let end = marks.get(index + 1).map(|(next, _)| *next);
        let in_phase: Vec<&HistoryEntry> = history
            .iter()
            .filter(|h| h.invoke_us >= started && end.is_none_or(|end| h.invoke_us < end))
            .collect();
        reports.push(phase_report(
            phase, &in_phase, started, settled, end, options,
        ));
    }
    let passed = lost.is_empty()
        && verdict.stale_reads == 0
        && verdict.violations == 0
        && verdict.undecided == 0
        && reports.iter().all(|phase| phase.passed);
    Ok(DrillReport {
        endpoint: client.endpoint().to_string(),
        rate: options.rate,
        write_ratio: options.write_ratio,
        phase_duration_ms: millis(options.phase_duration),
        max_recovery_ms: millis(options.max_recovery),
        phases: reports,
        // The seed's write counts too.
        acknowledged_writes: verdict.acknowledged_writes as u64 + 1,
        lost_writes: lost.len() as u64,
        lost_examples: lost.into_iter().take(10).collect(),
        stale_reads: verdict.stale_reads as u64,
        violations: (verdict.violations + verdict.undecided) as u64,
        passed,
    })
}

fn micros(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_micros()).unwrap_or(u64::MAX)
}

async fn apply(runtime: &Runtime, action: &Action) -> Result<(), String> {
    let on = |nodes: &[String]| {
        nodes
            .iter()
            .map(|node| node.parse::<Member>())
            .collect::<Result<Vec<_>, _>>()
    };
    match action {
        Action::None => Ok(()),
        Action::Stop(nodes) => {
            for node in on(nodes)? {
                runtime.act(fault::Action::Stop, &node).await?;
            }
            Ok(())
        }
        Action::Kill(nodes) => {
            for node in on(nodes)? {
                runtime.act(fault::Action::Kill, &node).await?;
            }
            Ok(())
        }
        Action::Start(nodes) => {
            let nodes = on(nodes)?;
            let starts = nodes
                .iter()
                .map(|node| runtime.act(fault::Action::Start, node));
            futures::future::join_all(starts)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ())
        }
        Action::Restart(nodes) => {
            for node in on(nodes)? {
                runtime.act(fault::Action::Stop, &node).await?;
                runtime.act(fault::Action::Start, &node).await?;
            }
            Ok(())
        }
    }
}

/// Whether an operation of the history succeeded: answered 2xx (or 404 for a GET).
fn succeeded(entry: &HistoryEntry) -> bool {
    matches!(entry.outcome, HistoryOutcome::Ok | HistoryOutcome::Refused)
}

/// A failure's label in the phase table: the status code, or `transport` for no answer.
fn failure_label(entry: &HistoryEntry) -> String {
    match entry.error.as_deref() {
        Some(kind) => kind
            .strip_prefix("status_")
            .map_or_else(|| "transport".to_owned(), str::to_owned),
        None => "transport".to_owned(),
    }
}

/// The phase's row. Its expectation judges only the requests answered before the next
/// phase's action began (`end`): a GET sent near the end of "stop backend2", held for a second
/// by a connect to a stopped node, and then refused because "stop backend3" stopped the last
/// one, failed because of the next action, not this one. Every request still counts in the
/// row's figures, and every one goes to the history checker.
fn phase_report(
    phase: &Phase,
    entries: &[&HistoryEntry],
    started: u64,
    settled: u64,
    end: Option<u64>,
    options: &DrillOptions,
) -> PhaseReport {
    // Latencies in microseconds, up to an hour (longer ones saturate).
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
    let mut errors = BTreeMap::new();
    let mut answered_by = BTreeMap::new();
    let (mut successes, mut failed_gets, mut failed_puts) = (0, 0, 0);
    let (mut judged_failed_gets, mut judged_failed_puts) = (0, 0);
    let before_end = |entry: &HistoryEntry| end.is_none_or(|end| entry.complete_us < end);
    for entry in entries {
        if let Some(histogram) = histogram.as_mut() {
            histogram.saturating_record((entry.complete_us - entry.invoke_us).max(1));
        }
        if let Some(node) = &entry.node {
            *answered_by.entry(node.clone()).or_insert(0) += 1;
        }
        if succeeded(entry) {
            successes += 1;
            continue;
        }
        let judged = u64::from(before_end(entry));
        if entry.op == Op::Get {
            failed_gets += 1;
            judged_failed_gets += judged;
        } else {
            failed_puts += 1;
            judged_failed_puts += judged;
        }
        *errors.entry(failure_label(entry)).or_insert(0) += 1;
    }

    let last_failure = entries
        .iter()
        .filter(|e| !succeeded(e))
        .map(|e| e.invoke_us)
        .max();
    let recovery_us = match last_failure {
        None => Some(0),
        Some(last) => entries
            .iter()
            .filter(|e| succeeded(e) && e.invoke_us > last)
            .map(|e| e.complete_us)
            .min()
            .map(|first_ok| first_ok.saturating_sub(started)),
    };
    let first_get_ok = entries
        .iter()
        .filter(|e| e.op == Op::Get && succeeded(e))
        .map(|e| Duration::from_micros(e.complete_us.saturating_sub(started)))
        .min();

    let problem = match phase.expect {
        Expect::NoFailedGets if judged_failed_gets > 0 => {
            Some(format!("{judged_failed_gets} GETs failed with a node up"))
        }
        Expect::NoFailures if judged_failed_gets + judged_failed_puts > 0 => Some(format!(
            "{} requests failed during a graceful change",
            judged_failed_gets + judged_failed_puts
        )),
        Expect::AllBadGateway => {
            let after: Vec<&&HistoryEntry> = entries
                .iter()
                .filter(|e| e.invoke_us >= settled && before_end(e))
                .collect();
            let not_502 = after
                .iter()
                .filter(|e| e.error.as_deref() != Some("status_502"))
                .count();
            if after.is_empty() {
                Some("no request was made with every node down".to_owned())
            } else if not_502 > 0 {
                Some(format!(
                    "{not_502} of {} requests with every node down did not get 502",
                    after.len()
                ))
            } else {
                None
            }
        }
        Expect::Recovers => match first_get_ok {
            Some(took) if took <= options.max_recovery => None,
            Some(took) => Some(format!(
                "the first GET succeeded {} ms after the restore began (bound {} ms)",
                took.as_millis(),
                options.max_recovery.as_millis()
            )),
            None => Some("no GET succeeded after the restore".to_owned()),
        },
        _ => None,
    };

    #[allow(clippy::cast_precision_loss)]
    let quantile_ms = |q: f64| match &histogram {
        Some(histogram) if !histogram.is_empty() => histogram.value_at_quantile(q) as f64 / 1000.0,
        _ => 0.0,
    };
    PhaseReport {
        name: phase.name.clone(),
        action: phase.action.clone(),
        nodes_up: phase.nodes_up,
        expect: phase.expect,
        action_ms: (settled - started) / 1000,
        requests: entries.len() as u64,
        successes,
        failed_gets,
        failed_puts,
        errors,
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        answered_by,
        recovery_ms: recovery_us.map(|us| us / 1000),
        passed: problem.is_none(),
        problem,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn progress_bar(visible: bool) -> ProgressBar {
    kg_bench::run::spinner(visible, "{spinner} {elapsed:>3} {prefix}  {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: Op, invoke_us: u64, complete_us: u64, error: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            client: 0,
            op,
            key: "k".to_owned(),
            value: None,
            expected: None,
            revision: None,
            invoke_us,
            complete_us,
            outcome: if error.is_some() {
                HistoryOutcome::Fail
            } else {
                HistoryOutcome::Ok
            },
            error: error.map(str::to_owned),
            node: None,
            deleted: None,
            txn: None,
            idempotency_key: None,
            retry: false,
            at_revision: None,
        }
    }

    fn options() -> DrillOptions {
        DrillOptions {
            phase_duration: Duration::from_secs(5),
            rate: 100,
            write_ratio: 0.2,
            max_recovery: Duration::from_secs(10),
            concurrency: 4,
            timeout: Duration::from_secs(5),
            token: None,
            keep_history: None,
        }
    }

    /// The row of a phase "stop backend2" that started at 0, settled at 500 us and ended
    /// when the next phase's action began, at 10,000 us.
    fn report(expect: Expect, entries: &[HistoryEntry]) -> PhaseReport {
        let phase = Phase {
            name: "stop backend2".to_owned(),
            action: Action::Stop(vec!["backend2".to_owned()]),
            nodes_up: 1,
            expect,
        };
        let refs: Vec<&HistoryEntry> = entries.iter().collect();
        phase_report(&phase, &refs, 0, 500, Some(10_000), &options())
    }

    #[test]
    fn a_get_that_fails_within_its_phase_fails_the_phase() {
        let report = report(
            Expect::NoFailedGets,
            &[
                entry(Op::Get, 1_000, 2_000, None),
                entry(Op::Get, 3_000, 4_000, Some("status_502")),
            ],
        );
        assert!(!report.passed);
        assert_eq!(
            report.problem.as_deref(),
            Some("1 GETs failed with a node up")
        );
    }

    #[test]
    fn a_get_answered_after_the_next_action_began_counts_but_is_not_judged() {
        // Sent before the next phase's action, answered (502) after it began.
        let report = report(
            Expect::NoFailedGets,
            &[
                entry(Op::Get, 1_000, 2_000, None),
                entry(Op::Get, 9_500, 10_500, Some("status_502")),
            ],
        );
        assert!(report.passed, "{:?}", report.problem);
        assert_eq!(report.failed_gets, 1);
        assert_eq!(report.errors.get("502"), Some(&1));
    }

    #[test]
    fn with_every_node_down_a_success_before_the_restore_fails_the_phase_and_one_after_does_not() {
        let down = |complete_us| {
            report(
                Expect::AllBadGateway,
                &[
                    entry(Op::Get, 1_000, 2_000, Some("status_502")),
                    entry(Op::Get, 9_000, complete_us, None),
                ],
            )
        };
        assert!(!down(9_500).passed);
        assert!(down(10_200).passed);
    }
}
