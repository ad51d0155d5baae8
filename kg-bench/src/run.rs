//! The load engine: workers on hyper HTTP/1.1 connections of their own, a closed model
//! (`--concurrency` back to back) or an open one (`--rate`, latency from each request's
//! scheduled start, so coordinated omission is corrected as wrk2 does), a live progress line,
//! and an optional history of every operation for the linearizability check.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::history::{HistoryEntry, HistoryOutcome};
use crate::stats::{Outcome, Report, Sample, Stats};
use crate::workload::{
    account_key, balance, key_name, new_run_id, KeyDist, Mix, Op, Sampler, ValueSize, ACCOUNTS,
};

/// An endpoint, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// The Host header.
    pub host: String,
}

impl Target {
    /// Resolves `http://host[:port]` (https is not spoken: KeyGrid's nodes and nginx are
    /// plain HTTP on the inside).
    pub async fn resolve(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// endpoints are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|err| format!("{url:?}: {err}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: no address"))?;
        Ok(Self {
            url: url.to_owned(),
            addr,
            host: authority.to_owned(),
        })
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub targets: Vec<Target>,
    pub concurrency: usize,
    /// Open model: requests per second over all workers.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub mix: Mix,
    pub keys: u64,
    pub key_dist: KeyDist,
    pub value_size: ValueSize,
    pub preload: bool,
    pub timeout: Duration,
    pub token: Option<String>,
    pub record: Option<PathBuf>,
    pub progress: bool,
    /// Keys are this prefix and an 8-digit number (`bench/` by default).
    pub key_prefix: String,
    /// Set by a scenario to end a run that has no --duration or --requests (a drill that
    /// holds the load while it injects faults).
    pub stop: Option<Arc<AtomicBool>>,
    /// The instant the history's microseconds count from; now when `None`. A scenario that
    /// marks its own events on the same clock passes its own.
    pub origin: Option<Instant>,
    /// Re-send a share of the writes with their Idempotency-Key; `None`: send each once,
    /// without a key.
    pub retries: Option<Retries>,
}

/// Writes sent twice with one `Idempotency-Key`, as nginx and careful clients retry them:
/// the history records both attempts (the second with `retry`), and the judge checks that
/// the second changed nothing (`judge::retries_applied_twice`). With retries on, every write
/// carries a key.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Retries {
    /// The share of writes (0 to 1) sent a second time.
    pub share: f64,
    /// The second attempt waits up to this long (uniformly drawn) after the first ended.
    #[serde(serialize_with = "as_seconds")]
    pub delay: Duration,
    /// The share of retried writes (0 to 1) whose first attempt is cut: its connection is
    /// dropped a few milliseconds after the request left, whether or not the node has
    /// applied it, so that the retry races the first attempt or follows its commit.
    pub cut: f64,
}

fn as_seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl Retries {
    /// Whether this write is sent twice, and how long its first attempt may take: a cut one
    /// is given 1 to 20 ms.
    fn draw(self, rng: &mut SmallRng, timeout: Duration) -> Option<(Duration, Duration)> {
        use rand::Rng;
        if !rng.random_bool(self.share.clamp(0.0, 1.0)) {
            return None;
        }
        let first = if rng.random_bool(self.cut.clamp(0.0, 1.0)) {
            Duration::from_micros(rng.random_range(1_000..20_000))
        } else {
            timeout
        };
        let max = u64::try_from(self.delay.as_micros()).unwrap_or(u64::MAX);
        Some((first, Duration::from_micros(rng.random_range(0..=max))))
    }
}

/// State the workers share: stop flags and the live counters the progress line reads.
#[derive(Debug)]
struct Shared {
    /// In every value this run writes (`Sampler::value`).
    run_id: u32,
    stop: AtomicBool,
    /// Requests issued in the measured part (for `--requests`).
    issued: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    /// Latencies since the progress line last looked, for its p99.
    recent: Mutex<Histogram<u64>>,
}

/// The answer to one request, as much as the stats and the history need.
struct Answer {
    outcome: Outcome,
    node: Option<String>,
    cache_hit: Option<bool>,
    /// `X-KeyGrid-Revision`: a write's revision, or a read value's mod_revision.
    revision: Option<i64>,
    body: Option<Bytes>,
}

/// One HTTP/1.1 connection of a worker, reconnected after any failure.
struct Connection {
    target: Target,
    token: Option<String>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Outcome> {
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.target.addr)
                .await
                .map_err(|_| Outcome::Connect)?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| Outcome::Connect)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or(Outcome::Connect)
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        precondition: Option<&Precondition>,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.target.host);
        if let Some(id) = idempotency_key {
            builder = builder.header(kg_api::HEADER_IDEMPOTENCY_KEY, id);
        }
        match precondition {
            Some(Precondition::Revision(revision)) => {
                builder = builder.header(header::IF_MATCH, format!("\"{revision}\""));
            }
            Some(Precondition::Absent) => builder = builder.header(header::IF_NONE_MATCH, "*"),
            None => {}
        }
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let Ok(request) = builder.body(Full::new(body.unwrap_or_default())) else {
            return Answer::failed(Outcome::Io);
        };
        // A server may close a keep-alive connection between requests (nginx does after
        // `keepalive_requests`, with `Connection: close` on the last answer). That is not an
        // error: open a fresh connection. Only failing on a fresh one is.
        let reused = self.sender.is_some();
        let mut sender = match self.connect().await {
            Ok(sender) => sender,
            Err(outcome) => return Answer::failed(outcome),
        };
        if sender.ready().await.is_err() {
            self.sender = None;
            if !reused {
                return Answer::failed(Outcome::Io);
            }
            sender = match self.connect().await {
                Ok(sender) => sender,
                Err(outcome) => return Answer::failed(outcome),
            };
            if sender.ready().await.is_err() {
                self.sender = None;
                return Answer::failed(Outcome::Io);
            }
        }
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(_) => {
                self.sender = None;
                return Answer::failed(Outcome::Io);
            }
        };
        let status = response.status();
        let header_text = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let node = header_text(kg_api::HEADER_NODE);
        let cache_hit = header_text(kg_api::HEADER_CACHE).map(|v| v.eq_ignore_ascii_case("hit"));
        let revision = header_text(kg_api::HEADER_REVISION).and_then(|v| v.parse().ok());
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                self.sender = None;
                return Answer::failed(Outcome::Io);
            }
        };
        let outcome = if status.is_success() {
            Outcome::Ok
        } else if status == StatusCode::NOT_FOUND {
            Outcome::NotFound
        } else if status == StatusCode::PRECONDITION_FAILED {
            Outcome::PreconditionFailed
        } else {
            Outcome::Status(status.as_u16())
        };
        Answer {
            outcome,
            node,
            cache_hit,
            revision,
            body: Some(body),
        }
    }
}

impl Answer {
    fn failed(outcome: Outcome) -> Self {
        Self {
            outcome,
            node: None,
            cache_hit: None,
            revision: None,
            body: None,
        }
    }
}

/// The seed's PUT body, in kg-api's wire type.
fn put_body(key: &str, value: &str) -> Bytes {
    let body = kg_api::PutRequest::new(key, value);
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A CAS's condition, from the GET before it.
#[derive(Debug, Clone, Copy)]
enum Precondition {
    /// `If-Match: "<revision>"`.
    Revision(i64),
    /// `If-None-Match: *`: the key was missing.
    Absent,
}

/// Sends one request, bounded by `timeout` (after which the connection is dropped). A CAS is
/// its conditional PUT here; its GET is an operation of its own.
async fn operate(
    connection: &mut Connection,
    op: Op,
    key: &str,
    value: Option<&str>,
    precondition: Option<&Precondition>,
    timeout: Duration,
    idempotency_key: Option<&str>,
) -> Answer {
    let id = idempotency_key;
    let call = async {
        match op {
            Op::Get => {
                connection
                    .send(
                        Method::GET,
                        &format!("/api/key?key={key}"),
                        None,
                        None,
                        None,
                    )
                    .await
            }
            Op::Put | Op::Cas => {
                let body = put_body(key, value.unwrap_or_default());
                connection
                    .send(Method::PUT, "/api/key", Some(body), precondition, id)
                    .await
            }
            Op::Delete => {
                connection
                    .send(
                        Method::DELETE,
                        &format!("/api/key?key={key}"),
                        None,
                        None,
                        id,
                    )
                    .await
            }
            Op::DeletePrefix => {
                connection
                    .send(
                        Method::DELETE,
                        &format!("/api/keys?prefix={key}"),
                        None,
                        None,
                        id,
                    )
                    .await
            }
            // `value` is the transaction's JSON.
            Op::Txn => {
                let body = Bytes::from(value.unwrap_or_default().to_owned());
                connection
                    .send(Method::POST, "/api/txn", Some(body), None, id)
                    .await
            }
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer,
        Err(_) => {
            connection.sender = None;
            Answer::failed(Outcome::Timeout)
        }
    }
}

/// Writes every key once, with `concurrency` connections.
async fn preload(options: &RunOptions, run_id: u32, bar: &ProgressBar) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency {
        let target = options.targets[worker % options.targets.len()].clone();
        let (next, failed, done) = (next.clone(), failed.clone(), done.clone());
        let options = options.clone();
        tasks.spawn(async move {
            let sampler = Sampler::new(options.keys, options.key_dist, options.value_size, run_id)?;
            let mut rng = SmallRng::seed_from_u64(worker as u64);
            let mut connection = Connection {
                target,
                token: options.token.clone(),
                sender: None,
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= options.keys {
                    return Ok::<(), String>(());
                }
                let key = key_name(&options.key_prefix, index);
                let value = sampler.value(&mut rng, worker, index);
                let answer = operate(
                    &mut connection,
                    Op::Put,
                    &key,
                    Some(&value),
                    None,
                    options.timeout,
                    None,
                )
                .await;
                if answer.outcome.is_error() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    bar.set_prefix("preload");
    while !tasks.is_empty() {
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(Ok(Err(err))) = joined {
                    return Err(err);
                }
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                bar.set_message(format!(
                    "{} of {} keys written",
                    done.load(Ordering::Relaxed),
                    options.keys
                ));
            }
        }
    }
    match failed.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(format!("preload: {n} of {} writes failed", options.keys)),
    }
}

/// Runs the load and returns the report (without thresholds).
/// Runs the load; returns the report and the histogram of the successes' latencies (which
/// thresholds on any percentile read).
pub async fn run(
    options: RunOptions,
    settings: serde_json::Value,
) -> Result<(Report, Histogram<u64>), String> {
    if options.targets.is_empty() {
        return Err("no endpoint".to_owned());
    }
    let bar = progress_bar(options.progress);
    let run_id = new_run_id();
    if options.preload {
        preload(&options, run_id, &bar).await?;
    }

    let (history_tx, history_task) = match &options.record {
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
            let (tx, rx) = mpsc::unbounded_channel::<HistoryEntry>();
            (Some(tx), Some(tokio::spawn(write_history(file, rx))))
        }
        None => (None, None),
    };

    let shared = Arc::new(Shared {
        run_id,
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        recent: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 2).map_err(|err| err.to_string())?,
        ),
    });
    let start = options.origin.unwrap_or_else(Instant::now);
    let measure_start = start + options.warmup;
    let end = options.duration.map(|duration| measure_start + duration);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency {
        let options = options.clone();
        let shared = shared.clone();
        let history = history_tx.clone();
        workers.spawn(work(
            worker,
            options,
            shared,
            history,
            Clock {
                start,
                measure_start,
                end,
            },
        ));
    }
    drop(history_tx);

    // The preload's count must not stay on the line once the load has begun (the message
    // first, so that no frame shows the load's prefix beside the preload's count).
    bar.set_message("starting");
    bar.set_prefix("load");
    let mut last_done = 0;
    let mut stats = Stats::default();
    let mut last_completion = measure_start;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while !workers.is_empty() {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(Ok((worker_stats, last)))) => {
                    stats.merge(&worker_stats);
                    last_completion = last_completion.max(last);
                }
                Some(Ok(Err(err))) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    return Err(err);
                }
                Some(Err(err)) => return Err(format!("a worker failed: {err}")),
                None => {}
            },
            _ = ticker.tick() => {
                let done = shared.done.load(Ordering::Relaxed);
                let p99 = shared
                    .recent
                    .lock()
                    .map(|mut recent| {
                        let p99 = recent.value_at_quantile(0.99);
                        recent.reset();
                        p99
                    })
                    .unwrap_or(0);
                let phase = if Instant::now() < measure_start { "warmup" } else { "load" };
                bar.set_prefix(phase);
                bar.set_message(format!(
                    "{} req/s · {} requests · {} errors · p99 {:.2}ms",
                    done - last_done,
                    done,
                    shared.errors.load(Ordering::Relaxed),
                    p99 as f64 / 1000.0
                ));
                last_done = done;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(task) = history_task {
        task.await
            .map_err(|err| format!("history writer failed: {err}"))??;
    }
    let elapsed = last_completion.saturating_duration_since(measure_start);
    let report = Report::new(&stats, elapsed, options.rate, settings);
    Ok((report, stats.overall.latency))
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_start: Instant,
    end: Option<Instant>,
}

fn micros_since(start: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

/// One worker: its own connection, RNG, sampler and stats. Returns its stats and the time of
/// its last measured completion.
async fn work(
    worker: usize,
    options: RunOptions,
    shared: Arc<Shared>,
    history: Option<mpsc::UnboundedSender<HistoryEntry>>,
    clock: Clock,
) -> Result<(Stats, Instant), String> {
    let sampler = Sampler::new(
        options.keys,
        options.key_dist,
        options.value_size,
        shared.run_id,
    )?;
    let mut rng = SmallRng::seed_from_u64(0x6b67_6265_6e63_6800 ^ worker as u64);
    let mut connection = Connection {
        target: options.targets[worker % options.targets.len()].clone(),
        token: options.token.clone(),
        sender: None,
    };
    let mut stats = Stats::default();
    let mut local =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).map_err(|err| err.to_string())?;
    let mut last_completion = clock.measure_start;
    // Open model: each worker takes an equal share of the rate, its start staggered.
    let period = options.rate.map(|rate| {
        #[allow(clippy::cast_precision_loss)]
        Duration::from_secs_f64(options.concurrency as f64 / rate)
    });
    #[allow(clippy::cast_possible_truncation)]
    let mut next = clock.start
        + period.map_or(Duration::ZERO, |p| {
            p * worker as u32 / options.concurrency.max(1) as u32
        });
    let mut sequence = 0u64;
    let stopped = || {
        shared.stop.load(Ordering::Relaxed)
            || options
                .stop
                .as_ref()
                .is_some_and(|stop| stop.load(Ordering::Relaxed))
    };
    loop {
        if stopped() {
            break;
        }
        let scheduled = match period {
            Some(period) => {
                let at = next;
                next += period;
                if let Some(end) = clock.end {
                    if at >= end {
                        break;
                    }
                    // The run stops at --duration, as k6's does. A worker that fell behind its
                    // schedule would otherwise send its whole backlog after the end and stretch
                    // the run; what it never sent is counted as dropped instead.
                    let now = Instant::now();
                    if now >= end {
                        let from = at.max(clock.measure_start);
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let unsent = (end.saturating_duration_since(from).as_secs_f64()
                            / period.as_secs_f64())
                        .ceil() as u64;
                        stats.dropped += unsent;
                        break;
                    }
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        if clock.end.is_some_and(|end| scheduled >= end) {
            break;
        }
        let measured = scheduled >= clock.measure_start;
        if measured {
            if let Some(limit) = options.requests {
                if shared.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
            }
        }
        sequence += 1;
        let op = options.mix.pick(&mut rng);
        let mut key = key_name(&options.key_prefix, sampler.key_index(&mut rng));
        if op == Op::DeletePrefix {
            // The key's ten neighbours: key names end in a fixed-width index.
            key.pop();
        }
        let value =
            matches!(op, Op::Put | Op::Cas).then(|| sampler.value(&mut rng, worker, sequence));
        // With retries, every write is sent with a key of its own; some are sent twice.
        let idempotency_key = options
            .retries
            .filter(|_| op != Op::Get)
            .map(|_| format!("kgb-{:08x}-{worker}-{sequence}", shared.run_id));
        let retry = options
            .retries
            .filter(|_| op != Op::Get)
            .and_then(|retries| retries.draw(&mut rng, options.timeout));
        let first_timeout = retry.map_or(options.timeout, |(first, _)| first);
        let record = |op: Op, answer: &Answer, expected, invoked, completed, retry: bool| {
            if let Some(history) = &history {
                let _ = history.send(HistoryEntry {
                    client: worker,
                    op,
                    value: match op {
                        Op::Put | Op::Cas => value.clone(),
                        Op::Get => answer.body.as_deref().and_then(read_value),
                        Op::Delete | Op::DeletePrefix | Op::Txn => None,
                    },
                    expected,
                    revision: answer.revision.filter(|_| answer.outcome == Outcome::Ok),
                    key: key.clone(),
                    invoke_us: micros_since(clock.start, invoked),
                    complete_us: micros_since(clock.start, completed),
                    outcome: history_outcome(op, answer.outcome),
                    error: answer.outcome.error_kind(),
                    node: answer.node.clone(),
                    deleted: (op == Op::DeletePrefix)
                        .then(|| answer.body.as_deref().and_then(deleted_count))
                        .flatten(),
                    txn: None,
                    idempotency_key: idempotency_key.clone().filter(|_| op != Op::Get),
                    retry,
                    at_revision: None,
                });
            }
        };
        let mut invoked = Instant::now();
        let mut expected = None;
        let mut precondition = None;
        let mut read_failure = Outcome::Ok;
        if op == Op::Cas {
            // The read half of the CAS is an operation of its own in the history.
            let read = operate(
                &mut connection,
                Op::Get,
                &key,
                None,
                None,
                options.timeout,
                None,
            )
            .await;
            let read_at = Instant::now();
            record(Op::Get, &read, None, invoked, read_at, false);
            precondition = match (read.outcome, read.revision) {
                (Outcome::Ok, Some(revision)) => Some(Precondition::Revision(revision)),
                (Outcome::NotFound, _) => Some(Precondition::Absent),
                _ => None,
            };
            // A 2xx read without a revision leaves nothing to make the write conditional on.
            read_failure = match read.outcome {
                Outcome::Ok => Outcome::NoRevision,
                failed => failed,
            };
            expected = read.body.as_deref().and_then(read_value);
            invoked = read_at;
        }
        let answer = if op == Op::Txn {
            let transfer = Transfer {
                worker,
                sequence,
                run_id: shared.run_id,
                prefix: &options.key_prefix,
                start: clock.start,
                history: history.as_ref(),
                idempotency_key: idempotency_key.as_deref(),
                retry,
            };
            transfer
                .run(&mut connection, options.timeout, &mut rng)
                .await
        } else if op == Op::Cas && precondition.is_none() {
            // The read failed: no write is attempted, and the CAS fails as its read did.
            Answer::failed(read_failure)
        } else {
            operate(
                &mut connection,
                op,
                &key,
                value.as_deref(),
                precondition.as_ref(),
                first_timeout,
                idempotency_key.as_deref(),
            )
            .await
        };
        let completed = Instant::now();
        let latency = completed.saturating_duration_since(scheduled);
        // A transfer records its own parts, and sends its own retry.
        if op != Op::Txn && (precondition.is_some() || op != Op::Cas) {
            record(op, &answer, expected.clone(), invoked, completed, false);
            if let Some((_, delay)) = retry {
                tokio::time::sleep(delay).await;
                let invoked = Instant::now();
                let again = operate(
                    &mut connection,
                    op,
                    &key,
                    value.as_deref(),
                    precondition.as_ref(),
                    options.timeout,
                    idempotency_key.as_deref(),
                )
                .await;
                record(op, &again, expected, invoked, Instant::now(), true);
            }
        }
        if !measured {
            continue;
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        local.saturating_record(micros);
        if local.len() >= 64 {
            if let Ok(mut recent) = shared.recent.lock() {
                let _ = recent.add(&local);
            }
            local.reset();
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
        if answer.outcome.is_error() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        let second = usize::try_from(
            completed
                .saturating_duration_since(clock.measure_start)
                .as_secs(),
        )
        .unwrap_or(usize::MAX);
        stats.record(
            &Sample {
                op,
                outcome: answer.outcome,
                latency,
                node: answer.node.as_deref(),
                cache_hit: answer.cache_hit,
            },
            second,
        );
        last_completion = last_completion.max(completed);
    }
    Ok((stats, last_completion))
}

/// One `txn` operation of a worker: a read of every account at one revision, then a transfer
/// of 1 between two of them, conditioned on both being at the revisions read.
struct Transfer<'a> {
    worker: usize,
    sequence: u64,
    run_id: u32,
    prefix: &'a str,
    start: Instant,
    history: Option<&'a mpsc::UnboundedSender<HistoryEntry>>,
    /// The transfer's key (the read is sent without one: it changes nothing).
    idempotency_key: Option<&'a str>,
    /// The first attempt's timeout and the delay before the second, for a transfer sent twice.
    retry: Option<(Duration, Duration)>,
}

impl Transfer<'_> {
    /// Runs both transactions and records them: the read as a get of each account, the
    /// transfer as a CAS of each of its two accounts, whose expected value is the one read
    /// (values are unique, so "at the revision read" and "holds the value read" are one
    /// condition). A transfer that did not apply is recorded as refused. The answer is the
    /// transfer's: `PreconditionFailed` when it did not apply.
    async fn run(
        &self,
        connection: &mut Connection,
        timeout: Duration,
        rng: &mut SmallRng,
    ) -> Answer {
        use kg_api::{Compare, CompareOp, CompareTarget, CompareValue, TxnOp, TxnRequest};
        use rand::Rng;
        let accounts: Vec<String> = (0..ACCOUNTS).map(|i| account_key(self.prefix, i)).collect();
        let read = TxnRequest {
            success: accounts
                .iter()
                .map(|key| TxnOp::Get { key: key.clone() })
                .collect(),
            ..TxnRequest::default()
        };
        let invoked = Instant::now();
        let answer = self.send(connection, &read, timeout, None).await;
        let read_at = Instant::now();
        let Some(response) = answer.body.as_deref().and_then(read_txn) else {
            return answer_or(answer, Outcome::Io);
        };
        let mut seen = Vec::with_capacity(ACCOUNTS);
        for result in response.results {
            if let kg_api::TxnResult::Get { key, kv } = result {
                let value = kv.as_ref().and_then(|kv| kv.value.clone());
                let revision = kv.map(|kv| kv.mod_revision);
                self.record(HistoryEntry {
                    value: value.clone(),
                    revision,
                    node: answer.node.clone(),
                    ..self.entry(Op::Get, &key, (invoked, read_at), 0)
                });
                seen.push((key, value, revision));
            }
        }
        if seen.len() != ACCOUNTS {
            return answer_or(answer, Outcome::Io);
        }
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let mut compare = Vec::new();
        let mut success = Vec::new();
        let mut writes = Vec::new();
        for (account, delta) in [(from, -1), (to, 1)] {
            let (key, value, revision) = &seen[account];
            let Some(old) = balance(value.as_deref()) else {
                return answer_or(answer, Outcome::Io);
            };
            let tag = format!("{:08x}.{}.{}", self.run_id, self.worker, self.sequence);
            let new = format!("{}:{tag}", old + delta);
            compare.push(match revision {
                Some(revision) => Compare {
                    key: key.clone(),
                    target: CompareTarget::Revision,
                    op: CompareOp::Equal,
                    value: CompareValue::Integer(*revision),
                },
                None => Compare {
                    key: key.clone(),
                    target: CompareTarget::Exists,
                    op: CompareOp::Equal,
                    value: CompareValue::Bool(false),
                },
            });
            success.push(TxnOp::Put {
                key: key.clone(),
                value: new.clone(),
                lease: None,
            });
            writes.push((key.clone(), value.clone(), new));
        }
        let transfer = TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        };
        let first_timeout = self.retry.map_or(timeout, |(first, _)| first);
        let answer = self
            .transfer(connection, &transfer, first_timeout, &writes, false)
            .await;
        if let Some((_, delay)) = self.retry {
            tokio::time::sleep(delay).await;
            self.transfer(connection, &transfer, timeout, &writes, true)
                .await;
        }
        answer
    }

    /// Sends the transfer once and records it as a CAS of each of its accounts.
    async fn transfer(
        &self,
        connection: &mut Connection,
        transfer: &kg_api::TxnRequest,
        timeout: Duration,
        writes: &[(String, Option<String>, String)],
        retry: bool,
    ) -> Answer {
        let invoked = Instant::now();
        let mut answer = self
            .send(connection, transfer, timeout, self.idempotency_key)
            .await;
        let completed = Instant::now();
        let done = answer.body.as_deref().and_then(read_txn);
        if answer.outcome == Outcome::Ok {
            answer.outcome = match &done {
                Some(done) if done.succeeded => Outcome::Ok,
                Some(_) => Outcome::PreconditionFailed,
                None => Outcome::Io,
            };
        }
        let outcome = history_outcome(Op::Cas, answer.outcome);
        let revision = done.filter(|done| done.succeeded).map(|done| done.revision);
        for (key, old, new) in writes {
            self.record(HistoryEntry {
                value: Some(new.clone()),
                expected: old.clone(),
                revision,
                outcome,
                error: answer.outcome.error_kind(),
                node: answer.node.clone(),
                idempotency_key: self.idempotency_key.map(str::to_owned),
                retry,
                at_revision: None,
                ..self.entry(Op::Cas, key, (invoked, completed), 1)
            });
        }
        answer
    }

    /// An entry of this operation's `part` (0 the read, 1 the transfer), answered `ok`.
    fn entry(
        &self,
        op: Op,
        key: &str,
        (invoked, completed): (Instant, Instant),
        part: u64,
    ) -> HistoryEntry {
        HistoryEntry {
            client: self.worker,
            op,
            key: key.to_owned(),
            value: None,
            expected: None,
            revision: None,
            invoke_us: micros_since(self.start, invoked),
            complete_us: micros_since(self.start, completed),
            outcome: HistoryOutcome::Ok,
            error: None,
            node: None,
            deleted: None,
            txn: Some(self.sequence * 2 + part),
            idempotency_key: None,
            retry: false,
            at_revision: None,
        }
    }

    fn record(&self, entry: HistoryEntry) {
        if let Some(history) = self.history {
            let _ = history.send(entry);
        }
    }

    async fn send(
        &self,
        connection: &mut Connection,
        txn: &kg_api::TxnRequest,
        timeout: Duration,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let body = serde_json::to_string(txn).unwrap_or_default();
        operate(
            connection,
            Op::Txn,
            "",
            Some(&body),
            None,
            timeout,
            idempotency_key,
        )
        .await
    }
}

/// `answer` if it failed, else `answer` with `outcome`: a 2xx whose body made no sense.
fn answer_or(mut answer: Answer, outcome: Outcome) -> Answer {
    if answer.outcome == Outcome::Ok {
        answer.outcome = outcome;
    }
    answer
}

fn read_txn(body: &[u8]) -> Option<kg_api::TxnResponse> {
    serde_json::from_slice(body).ok()
}

/// The value in a GET's `{"data":{"value":...}}`.
fn read_value(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<kg_api::GetResponse>(body)
        .ok()
        .map(|response| response.data.value)
}

fn deleted_count(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<kg_api::DeletePrefixResponse>(body)
        .ok()
        .map(|response| response.deleted)
}

fn history_outcome(op: Op, outcome: Outcome) -> HistoryOutcome {
    match (op, outcome) {
        (_, Outcome::Ok) | (Op::Get, Outcome::NotFound) => HistoryOutcome::Ok,
        (Op::Cas, Outcome::PreconditionFailed) => HistoryOutcome::Refused,
        // A read that failed had no effect; so had a write the node refused (4xx).
        (Op::Get, _) => HistoryOutcome::Fail,
        (_, Outcome::NotFound) => HistoryOutcome::Fail,
        (_, Outcome::Status(status)) if (400..500).contains(&status) => HistoryOutcome::Fail,
        (_, Outcome::Connect | Outcome::NoRevision) => HistoryOutcome::Fail,
        _ => HistoryOutcome::Unknown,
    }
}

async fn write_history(
    file: tokio::fs::File,
    mut rx: mpsc::UnboundedReceiver<HistoryEntry>,
) -> Result<(), String> {
    let mut out = tokio::io::BufWriter::new(file);
    while let Some(entry) = rx.recv().await {
        let mut line = serde_json::to_vec(&entry).map_err(|err| err.to_string())?;
        line.push(b'\n');
        out.write_all(&line)
            .await
            .map_err(|err| format!("cannot write the history: {err}"))?;
    }
    out.flush()
        .await
        .map_err(|err| format!("cannot write the history: {err}"))
}

fn progress_bar(visible: bool) -> ProgressBar {
    spinner(visible, "{spinner} {elapsed:>4} {prefix:7} {msg}")
}

/// A live line on stderr in indicatif's `template`, ticking by itself; hidden unless
/// `visible` (a person is watching). kg failover-drill's line is one too.
pub fn spinner(visible: bool, template: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
