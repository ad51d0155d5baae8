//! `kg failover-drill`: the seed's manual failover procedure, run automatically under load, with
//! per-phase figures and a PASS/FAIL verdict. The phase engine is public so that the cluster
//! tests can run other sequences (kills, rolling restarts) through the same code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kg_api::{Client, Precondition};
use serde::Serialize;
use tokio::process::Command as Process;
use tokio::sync::Semaphore;

/// The key the seed's drill writes and reads.
pub const SEED_KEY: &str = "failover";

/// How the drill stops and starts nodes.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// `scripts/node.sh stop|start|kill <node>` of the local stack.
    Local { script: PathBuf },
    /// `docker compose stop|start <service>`.
    Compose,
    /// Shell commands with `{node}` replaced by the node's name.
    Command { stop: String, start: String },
}

impl Runtime {
    /// Stops `node` (gracefully where the runtime can).
    pub async fn stop(&self, node: &str) -> Result<(), String> {
        match self {
            Runtime::Local { script } => run_process(script_command(script, &["stop", node])).await,
            Runtime::Compose => run_process(compose_command(&["stop", node])).await,
            Runtime::Command { stop, .. } => run_process(shell(stop, node)).await,
        }
    }

    /// Starts `node` again.
    pub async fn start(&self, node: &str) -> Result<(), String> {
        match self {
            Runtime::Local { script } => {
                run_process(script_command(script, &["start", node])).await
            }
            Runtime::Compose => run_process(compose_command(&["start", node])).await,
            Runtime::Command { start, .. } => run_process(shell(start, node)).await,
        }
    }

    /// Kills `node` abruptly (SIGKILL); runtimes without that notion stop it instead.
    pub async fn kill(&self, node: &str) -> Result<(), String> {
        match self {
            Runtime::Local { script } => run_process(script_command(script, &["kill", node])).await,
            Runtime::Compose => run_process(compose_command(&["kill", node])).await,
            Runtime::Command { stop, .. } => run_process(shell(stop, node)).await,
        }
    }
}

fn script_command(script: &PathBuf, args: &[&str]) -> Process {
    let mut command = Process::new(script);
    command.args(args);
    command
}

fn compose_command(args: &[&str]) -> Process {
    let mut command = Process::new("docker");
    command.arg("compose").args(args);
    command
}

fn shell(template: &str, node: &str) -> Process {
    let mut command = Process::new("sh");
    command.arg("-c").arg(template.replace("{node}", node));
    command
}

async fn run_process(mut command: Process) -> Result<(), String> {
    let shown = format!("{:?}", command.as_std());
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|err| format!("cannot run {shown}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

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
    /// Bound on requests in flight at once.
    pub concurrency: usize,
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Status(u16),
    /// No answer: refused, reset or timed out.
    Transport,
    /// A GET of an acknowledged key answered 200 with another value.
    WrongValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Put,
}

#[derive(Debug, Clone)]
struct Sample {
    issued: Instant,
    op: Op,
    outcome: Outcome,
    latency: Duration,
    node: Option<String>,
}

/// Everything the load generator shares with its requests.
#[derive(Debug, Default)]
struct Shared {
    samples: Mutex<Vec<Sample>>,
    /// Keys whose PUT got a 200, with the value written.
    acknowledged: Mutex<Vec<(String, String)>>,
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
    /// Failures by status code, `transport` for no answer, `wrong_value` for a bad read.
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
    pub passed: bool,
}

/// Runs `phases` against the entry `client` while holding the load, then reads every
/// acknowledged write back. `progress` shows a live line on a terminal.
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
    let shared = Arc::new(Shared::default());
    shared
        .acknowledged
        .lock()
        .map_err(|_| "poisoned")?
        .push((SEED_KEY.to_owned(), "ok".to_owned()));

    let bar = progress_bar(progress);
    let (stop_load, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(generate_load(
        client.clone(),
        shared.clone(),
        prefix.clone(),
        options.clone(),
        stop_rx,
    ));

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
        marks.push((started, settled));
        if let Err(err) = result {
            let _ = stop_load.send(true);
            let _ = load.await;
            bar.finish_and_clear();
            return Err(format!("phase {:?}: {err}", phase.name));
        }
        let until = settled + options.phase_duration;
        while Instant::now() < until {
            update_bar(&bar, &shared);
            tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
        }
    }
    let _ = stop_load.send(true);
    let _ = load.await;
    bar.finish_and_clear();

    let samples = std::mem::take(&mut *shared.samples.lock().map_err(|_| "poisoned")?);
    let acknowledged = std::mem::take(&mut *shared.acknowledged.lock().map_err(|_| "poisoned")?);
    let lost = lost_writes(client, &prefix, &acknowledged).await?;

    let mut reports = Vec::with_capacity(phases.len());
    for (index, phase) in phases.iter().enumerate() {
        let (started, settled) = marks[index];
        let end = marks.get(index + 1).map(|(next, _)| *next);
        let in_phase: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.issued >= started && end.is_none_or(|end| s.issued < end))
            .collect();
        reports.push(phase_report(phase, &in_phase, started, settled, options));
    }
    let passed = lost.is_empty() && reports.iter().all(|phase| phase.passed);
    Ok(DrillReport {
        endpoint: client.endpoint().to_string(),
        rate: options.rate,
        write_ratio: options.write_ratio,
        phase_duration_ms: millis(options.phase_duration),
        max_recovery_ms: millis(options.max_recovery),
        phases: reports,
        acknowledged_writes: acknowledged.len() as u64,
        lost_writes: lost.len() as u64,
        lost_examples: lost.into_iter().take(10).collect(),
        passed,
    })
}

async fn apply(runtime: &Runtime, action: &Action) -> Result<(), String> {
    match action {
        Action::None => Ok(()),
        Action::Stop(nodes) => {
            for node in nodes {
                runtime.stop(node).await?;
            }
            Ok(())
        }
        Action::Kill(nodes) => {
            for node in nodes {
                runtime.kill(node).await?;
            }
            Ok(())
        }
        Action::Start(nodes) => {
            let starts = nodes.iter().map(|node| runtime.start(node));
            futures::future::join_all(starts)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ())
        }
        Action::Restart(nodes) => {
            for node in nodes {
                runtime.stop(node).await?;
                runtime.start(node).await?;
            }
            Ok(())
        }
    }
}

/// Open-loop load at `options.rate`, like k6's constant-arrival-rate: a request starts on
/// every tick, whatever the others are doing, up to `options.concurrency` in flight.
async fn generate_load(
    client: Client,
    shared: Arc<Shared>,
    prefix: String,
    options: DrillOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        sequence += 1;
        let write = fastrand::f64() < options.write_ratio;
        let (client, shared) = (client.clone(), shared.clone());
        let key = format!("{prefix}{sequence:08}");
        tasks.spawn(async move {
            let _permit = permit;
            if write {
                put_once(&client, &shared, key).await;
            } else {
                get_once(&client, &shared).await;
            }
        });
        // Reap finished tasks so the set does not grow with the drill.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn put_once(client: &Client, shared: &Shared, key: String) {
    let value = format!("v-{key}");
    let issued = Instant::now();
    let result = client.put(&key, &value, Precondition::None).await;
    let latency = issued.elapsed();
    let (outcome, node) = match result {
        Ok(written) => {
            if let Ok(mut acknowledged) = shared.acknowledged.lock() {
                acknowledged.push((key, value));
            }
            (Outcome::Ok, written.meta.node)
        }
        Err(err) => (failure(&err), None),
    };
    record(shared, issued, Op::Put, outcome, latency, node);
}

async fn get_once(client: &Client, shared: &Shared) {
    let target = shared.acknowledged.lock().ok().and_then(|acknowledged| {
        (!acknowledged.is_empty())
            .then(|| acknowledged[fastrand::usize(..acknowledged.len())].clone())
    });
    let Some((key, value)) = target else {
        return;
    };
    let issued = Instant::now();
    let result = client.get(&key).await;
    let latency = issued.elapsed();
    let (outcome, node) = match result {
        Ok(read) if read.value == value => (Outcome::Ok, read.meta.node),
        Ok(read) => (Outcome::WrongValue, read.meta.node),
        Err(err) => (failure(&err), None),
    };
    record(shared, issued, Op::Get, outcome, latency, node);
}

fn failure(err: &kg_api::Error) -> Outcome {
    err.status().map_or(Outcome::Transport, |status| {
        Outcome::Status(status.as_u16())
    })
}

fn record(
    shared: &Shared,
    issued: Instant,
    op: Op,
    outcome: Outcome,
    latency: Duration,
    node: Option<String>,
) {
    if let Ok(mut samples) = shared.samples.lock() {
        samples.push(Sample {
            issued,
            op,
            outcome,
            latency,
            node,
        });
    }
}

/// Reads back every acknowledged drill key with one listing, and the seed's key with a GET.
async fn lost_writes(
    client: &Client,
    prefix: &str,
    acknowledged: &[(String, String)],
) -> Result<Vec<String>, String> {
    // Nodes may still be coming back from the last phase; give the read-back a few tries.
    let mut attempt = 0;
    let stored = loop {
        match client.list_all(Some(prefix), kg_api::MAX_PAGE_SIZE).await {
            Ok(records) => break records,
            Err(_) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(format!("cannot read the acknowledged writes back: {err}")),
        }
    };
    let stored: BTreeMap<&str, &str> = stored
        .iter()
        .map(|record| {
            (
                record.key.as_str(),
                record.value.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let mut lost = Vec::new();
    for (key, value) in acknowledged {
        if key == SEED_KEY {
            match client.get(SEED_KEY).await {
                Ok(read) if read.value == *value => {}
                _ => lost.push(key.clone()),
            }
        } else if stored.get(key.as_str()) != Some(&value.as_str()) {
            lost.push(key.clone());
        }
    }
    Ok(lost)
}

fn phase_report(
    phase: &Phase,
    samples: &[&Sample],
    started: Instant,
    settled: Instant,
    options: &DrillOptions,
) -> PhaseReport {
    // Latencies in microseconds, up to an hour (longer ones saturate).
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
    let mut errors = BTreeMap::new();
    let mut answered_by = BTreeMap::new();
    let (mut successes, mut failed_gets, mut failed_puts) = (0, 0, 0);
    for sample in samples {
        let micros = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(histogram) = histogram.as_mut() {
            histogram.saturating_record(micros.max(1));
        }
        if let Some(node) = &sample.node {
            *answered_by.entry(node.clone()).or_insert(0) += 1;
        }
        let label = match sample.outcome {
            Outcome::Ok => {
                successes += 1;
                continue;
            }
            Outcome::Status(status) => status.to_string(),
            Outcome::Transport => "transport".to_owned(),
            Outcome::WrongValue => "wrong_value".to_owned(),
        };
        match sample.op {
            Op::Get => failed_gets += 1,
            Op::Put => failed_puts += 1,
        }
        *errors.entry(label).or_insert(0) += 1;
    }

    let last_failure = samples
        .iter()
        .filter(|s| s.outcome != Outcome::Ok)
        .map(|s| s.issued)
        .max();
    let recovery = match last_failure {
        None => Some(Duration::ZERO),
        Some(last) => samples
            .iter()
            .filter(|s| s.outcome == Outcome::Ok && s.issued > last)
            .map(|s| s.issued + s.latency)
            .min()
            .map(|first_ok| first_ok.saturating_duration_since(started)),
    };
    let first_get_ok = samples
        .iter()
        .filter(|s| s.op == Op::Get && s.outcome == Outcome::Ok)
        .map(|s| (s.issued + s.latency).saturating_duration_since(started))
        .min();

    let problem = match phase.expect {
        Expect::NoFailedGets if failed_gets > 0 => {
            Some(format!("{failed_gets} GETs failed with a node up"))
        }
        Expect::NoFailures if failed_gets + failed_puts > 0 => Some(format!(
            "{} requests failed during a graceful change",
            failed_gets + failed_puts
        )),
        Expect::AllBadGateway => {
            let after: Vec<&&Sample> = samples.iter().filter(|s| s.issued >= settled).collect();
            let not_502 = after
                .iter()
                .filter(|s| s.outcome != Outcome::Status(502))
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

    let quantile_ms = |q: f64| match &histogram {
        Some(histogram) if !histogram.is_empty() => histogram.value_at_quantile(q) as f64 / 1000.0,
        _ => 0.0,
    };
    PhaseReport {
        name: phase.name.clone(),
        action: phase.action.clone(),
        nodes_up: phase.nodes_up,
        expect: phase.expect,
        action_ms: millis(settled - started),
        requests: samples.len() as u64,
        successes,
        failed_gets,
        failed_puts,
        errors,
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        answered_by,
        recovery_ms: recovery.map(millis),
        passed: problem.is_none(),
        problem,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} {prefix}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn update_bar(bar: &ProgressBar, shared: &Shared) {
    if bar.is_hidden() {
        return;
    }
    if let Ok(samples) = shared.samples.lock() {
        let failed = samples.iter().filter(|s| s.outcome != Outcome::Ok).count();
        bar.set_message(format!("{} requests, {failed} failed", samples.len()));
    }
}
