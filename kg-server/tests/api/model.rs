//! The model-based test of the API: random sequences of every operation (puts with and without
//! leases, compare-and-swap, deletes, prefix deletes, transactions, compaction, reads and
//! listings at a revision, pages, history, lease grants, keep-alives and revokes, and retries
//! with the same `Idempotency-Key`), sent to a real `kg-server` process over HTTP and compared
//! answer by answer with a small in-memory model of what KeyGrid promises. proptest generates
//! the sequences and, on a mismatch, shrinks them to a minimal one, which is printed with the
//! seed that reproduces it.
//!
//! `scripts/model-test.sh` runs it for longer. The environment sizes a run:
//! `KG_MODEL_CASES` (sequences per backend), `KG_MODEL_OPS` (the longest sequence) and
//! `KG_MODEL_SEED` (a run's seed; random, and printed, when unset).
//!
//! Leases are granted for ten minutes or an hour, so none expires while a sequence runs:
//! expiry is judged by the database's clock, a race this model cannot decide. A revoke ends a
//! lease the way an expiry does (each key its own revision, in key order, with a reason), and
//! one step (`Op::Expire`) grants a lease of 1 s, attaches keys to it and waits for the node
//! to say it has ended; the model then expects each key deleted as expired.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kg_api::{Compare, CompareOp, CompareTarget, CompareValue, TxnOp, TxnRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use kg_testkit::{free_port, fresh_database, test_redis_url, unique_prefix, Backend, PATIENCE};

/// The keys and prefixes every sequence draws from: few, so that operations meet, with
/// prefixes that nest (`a`, `a/`) and keys that sort around the separator (`a/b` < `ab`).
/// `é/1` sorts after every ASCII key in byte order, and its prefix `é` has a bound past
/// one byte.
const KEYS: &[&str] = &["a", "a/b", "a/c", "ab", "b", "b/a", "c", "é/1"];
const PREFIXES: &[&str] = &["a", "a/", "ab", "b", "c", "é", ""];
/// Values include the empty string and a NUL, which PostgreSQL's text cannot hold.
const VALUES: &[&str] = &["", "x", "y", "xyz", "é\u{0}ü", "zz"];
/// Long enough that no lease expires while a sequence runs (see the module's comment).
const LEASE_TTLS: &[u64] = &[600, 3600];
/// A lease id that no node of these tests grants.
const MISSING_LEASE: i64 = 999_999_999;

mod sqlite {
    #[test]
    fn random_operation_sequences_answer_as_the_model_says() {
        super::model_test(kg_testkit::Backend::Sqlite);
    }
}

mod postgres {
    #[test]
    fn random_operation_sequences_answer_as_the_model_says() {
        super::model_test(kg_testkit::Backend::Postgres);
    }
}

/// With the Redis read cache, whose answers must be the database's.
mod postgres_with_redis {
    #[test]
    fn random_operation_sequences_answer_as_the_model_says() {
        super::model_test_with(kg_testkit::Backend::Postgres, true, 1);
    }
}

/// Two nodes over one database and one Redis, taking the requests in turn, as behind nginx.
mod postgres_two_nodes_with_redis {
    #[test]
    fn random_operation_sequences_answer_as_the_model_says() {
        super::model_test_with(kg_testkit::Backend::Postgres, true, 2);
    }
}

/// Two nodes over one SQLite file (two processes, WAL), taking the requests in turn.
mod sqlite_two_nodes {
    #[test]
    fn random_operation_sequences_answer_as_the_model_says() {
        super::model_test_with(kg_testkit::Backend::Sqlite, false, 2);
    }
}

/// A planted revert of the fix that made prefix deletes honour `Idempotency-Key`: the model
/// must find it, and shrink what it found to a few steps: a prefix delete sent with a key and
/// that key sent again.
#[test]
fn the_model_catches_a_prefix_delete_that_ignores_its_idempotency_key() {
    let runtime = runtime();
    let node = runtime.block_on(ModelNode::start(
        Backend::Sqlite,
        Some("prefix-delete-ignores-idempotency-key"),
    ));
    let settings = Settings {
        cases: 256,
        ..Settings::from_env()
    };
    let outcome = run_model(&runtime, &node, settings);
    let report = outcome
        .result
        .expect_err("the model test passed against a node that replays no prefix delete");
    eprintln!("{report}");
    let minimal = outcome.minimal.expect("a failing sequence, shrunk");
    assert!(
        minimal.len() <= 4,
        "the sequence was not shrunk to a few steps: {minimal:?}"
    );
    // A prefix delete sent with a key, and that key sent again: by a retry, or by another
    // request that the node must refuse.
    let keyed_prefix_delete = |op: &Op| match op {
        Op::DeletePrefix { idem, .. } => *idem,
        Op::ReuseKey { with, .. } => matches!(**with, Op::DeletePrefix { .. }),
        _ => false,
    };
    assert!(
        minimal.iter().any(keyed_prefix_delete)
            && minimal
                .iter()
                .any(|op| matches!(op, Op::Retry { .. } | Op::ReuseKey { .. })),
        "the minimal sequence does not send a prefix delete's key again: {minimal:?}"
    );
    assert!(report.contains("DeletePrefix"), "{report}");
    // The same sequence on a node without the plant answers as the model says: the plant,
    // not the model, is what failed.
    let clean = runtime.block_on(ModelNode::start(Backend::Sqlite, None));
    let rerun = runtime.block_on(clean.run(&minimal));
    assert!(
        rerun.result.is_ok(),
        "the minimal sequence fails without the plant too: {}",
        rerun.trace
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn model_test(backend: Backend) {
    model_test_with(backend, false, 1);
}

fn model_test_with(backend: Backend, redis: bool, nodes: usize) {
    let runtime = runtime();
    let node = runtime.block_on(ModelNode::start_with(backend, None, redis, nodes));
    let mut settings = Settings::from_env();
    if (redis || nodes > 1) && std::env::var_os("KG_MODEL_CASES").is_none() {
        // The variants share the suite's time with the two backends' own runs.
        settings.cases /= 4;
    }
    if let Err(failure) = run_model(&runtime, &node, settings).result {
        panic!("{failure}");
    }
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub cases: u32,
    pub max_ops: usize,
    pub seed: u64,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .map(|text| {
                    text.parse::<u64>()
                        .unwrap_or_else(|_| panic!("{name} must be a whole number, not {text:?}"))
                })
                .unwrap_or(default)
        };
        let random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or_default();
        Settings {
            cases: u32::try_from(number("KG_MODEL_CASES", 40)).unwrap_or(u32::MAX),
            max_ops: usize::try_from(number("KG_MODEL_OPS", 40)).unwrap_or(usize::MAX),
            seed: number("KG_MODEL_SEED", random_seed),
        }
    }
}

/// What a run did, and its minimal failing sequence if it failed.
pub struct Outcome {
    pub result: Result<(), String>,
    pub minimal: Option<Vec<Op>>,
}

/// Runs `settings.cases` random sequences against `node` and shrinks the first that fails.
fn run_model(runtime: &tokio::runtime::Runtime, node: &ModelNode, settings: Settings) -> Outcome {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&settings.seed.to_le_bytes());
    let config = Config {
        cases: settings.cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        max_shrink_time: 240_000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let started = Instant::now();
    let mut stats = Stats::default();
    let stats_cell = std::cell::RefCell::new(&mut stats);
    let result = runner.run(&sequences(settings.max_ops), |ops| {
        let mut stats = stats_cell.borrow_mut();
        stats.cases += 1;
        let run = runtime.block_on(node.run(&ops));
        stats.ops += run.sent;
        run.result.map_err(TestCaseError::fail)
    });
    let backend = node.kind();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "model test ({backend}): seed {}, {} sequences run ({} ops sent), {elapsed:.1} s",
        settings.seed, stats.cases, stats.ops
    );
    match result {
        Ok(()) => Outcome {
            result: Ok(()),
            minimal: None,
        },
        Err(TestError::Fail(reason, minimal)) => {
            // Run the minimal sequence once more, to print what each step answered.
            let trace = runtime.block_on(node.run(&minimal)).trace;
            let mut report = format!(
                "the model test failed on {backend} (seed {seed}; rerun with \
                 KG_MODEL_SEED={seed} ./scripts/model-test.sh --backend {name}).\n\
                 Minimal sequence ({len} ops):\n",
                seed = settings.seed,
                name = node.script_backend(),
                len = minimal.len(),
            );
            for (at, op) in minimal.iter().enumerate() {
                report.push_str(&format!("  {at:>3}. {op:?}\n"));
            }
            report.push_str(&format!(
                "It failed with: {reason}\nThe minimal run, step by step:\n{trace}"
            ));
            Outcome {
                result: Err(report),
                minimal: Some(minimal),
            }
        }
        Err(TestError::Abort(reason)) => Outcome {
            result: Err(format!("the model test aborted: {reason}")),
            minimal: None,
        },
    }
}

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    ops: u64,
}

// ---------------------------------------------------------------------------------------
// Operations, as generated (symbolic: revisions and leases are named relative to the state).

/// One step of a sequence.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: &'static str,
        value: &'static str,
        cond: Cond,
        attach: AttachRef,
        idem: bool,
    },
    Delete {
        key: &'static str,
        cond: Cond,
        idem: bool,
    },
    DeletePrefix {
        prefix: &'static str,
        idem: bool,
    },
    Txn {
        compare: Vec<CompareGen>,
        success: Vec<TxnOpGen>,
        failure: Vec<TxnOpGen>,
        idem: bool,
    },
    Get {
        key: &'static str,
        at: Option<RevChoice>,
    },
    List {
        prefix: &'static str,
        limit: u32,
        keys_only: bool,
        at: Option<RevChoice>,
    },
    Count {
        prefix: &'static str,
        at: Option<RevChoice>,
    },
    History {
        key: &'static str,
        limit: u32,
    },
    Compact {
        to: RevChoice,
        idem: bool,
    },
    Grant {
        ttl: u64,
        idem: bool,
    },
    KeepAlive {
        leases: Vec<LeaseRef>,
    },
    LeaseInfo {
        lease: LeaseRef,
    },
    Revoke {
        lease: LeaseRef,
        idem: bool,
    },
    /// Sends again, byte for byte, a write sent with an `Idempotency-Key`: the latest such
    /// write, or `nth` before it (as a client retries soon). Counted from the end, so that
    /// shrinking away steps before the write leaves the retry on it.
    Retry {
        nth: usize,
    },
    /// Sends the write `with` under the `Idempotency-Key` of a write sent with one (counted
    /// as `Retry` counts): a key reused for another request is refused, not replayed.
    ReuseKey {
        nth: usize,
        with: Box<Op>,
    },
    Snapshot,
    /// Grants a lease of 1 s, attaches `keys` to it in one transaction, and waits until the
    /// node has ended it: its keys deleted, each at a revision of its own, as expired.
    Expire {
        keys: Vec<&'static str>,
    },
}

/// A write's precondition.
#[derive(Clone, Copy, Debug)]
pub enum Cond {
    None,
    IfRevision(RevChoice),
    MustExist,
    CreateOnly,
}

/// A revision, named by what it is at the time the step runs.
#[derive(Clone, Copy, Debug)]
pub enum RevChoice {
    /// The key's mod_revision (0 when it is not live).
    ModOf(&'static str),
    /// The current revision less this many.
    Back(u8),
    /// The revision after the current one.
    Ahead,
}

/// A lease, by its place among the leases granted so far in the sequence.
#[derive(Clone, Copy, Debug)]
pub enum LeaseRef {
    Known(usize),
    Missing,
}

#[derive(Clone, Copy, Debug)]
pub enum AttachRef {
    None,
    Lease(LeaseRef),
    Ttl,
}

#[derive(Clone, Debug)]
pub struct CompareGen {
    key: &'static str,
    target: TargetGen,
    op: CompareOp,
}

#[derive(Clone, Debug)]
pub enum TargetGen {
    Value(&'static str),
    Revision(RevChoice),
    CreateRevision(RevChoice),
    Version(i64),
    Exists(bool),
}

#[derive(Clone, Debug)]
pub enum TxnOpGen {
    Put {
        key: &'static str,
        value: &'static str,
        lease: Option<LeaseRef>,
    },
    Delete {
        key: &'static str,
    },
    DeletePrefix {
        prefix: &'static str,
    },
    Get {
        key: &'static str,
    },
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(KEYS)
}

fn value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(VALUES)
}

fn prefix() -> impl Strategy<Value = &'static str> {
    prop::sample::select(PREFIXES)
}

fn rev_choice() -> impl Strategy<Value = RevChoice> {
    prop_oneof![
        3 => key().prop_map(RevChoice::ModOf),
        3 => (0u8..6).prop_map(RevChoice::Back),
        1 => Just(RevChoice::Ahead),
    ]
}

fn lease_ref() -> impl Strategy<Value = LeaseRef> {
    prop_oneof![
        6 => (0usize..4).prop_map(LeaseRef::Known),
        1 => Just(LeaseRef::Missing),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        6 => Just(Cond::None),
        2 => rev_choice().prop_map(Cond::IfRevision),
        1 => Just(Cond::MustExist),
        1 => Just(Cond::CreateOnly),
    ]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(
        &[
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Less,
            CompareOp::Greater,
        ][..],
    )
}

fn compare() -> impl Strategy<Value = CompareGen> {
    let target = prop_oneof![
        value().prop_map(TargetGen::Value),
        rev_choice().prop_map(TargetGen::Revision),
        rev_choice().prop_map(TargetGen::CreateRevision),
        (0i64..4).prop_map(TargetGen::Version),
        any::<bool>().prop_map(TargetGen::Exists),
    ];
    (key(), target, compare_op()).prop_map(|(key, target, op)| CompareGen { key, target, op })
}

fn txn_op() -> impl Strategy<Value = TxnOpGen> {
    prop_oneof![
        3 => (key(), value(), prop::option::weighted(0.3, lease_ref()))
            .prop_map(|(key, value, lease)| TxnOpGen::Put { key, value, lease }),
        2 => key().prop_map(|key| TxnOpGen::Delete { key }),
        1 => prop::sample::select(&PREFIXES[..PREFIXES.len() - 1])
            .prop_map(|prefix| TxnOpGen::DeletePrefix { prefix }),
        2 => key().prop_map(|key| TxnOpGen::Get { key }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let attach = prop_oneof![
        6 => Just(AttachRef::None),
        2 => lease_ref().prop_map(AttachRef::Lease),
        1 => Just(AttachRef::Ttl),
    ];
    let at = || prop::option::weighted(0.4, rev_choice());
    prop_oneof![
        12 => (key(), value(), cond(), attach, any::<bool>())
            .prop_map(|(key, value, cond, attach, idem)| Op::Put { key, value, cond, attach, idem }),
        5 => (key(), cond(), any::<bool>())
            .prop_map(|(key, cond, idem)| Op::Delete { key, cond, idem }),
        3 => (prefix(), any::<bool>()).prop_map(|(prefix, idem)| Op::DeletePrefix { prefix, idem }),
        4 => (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(txn_op(), 0..4),
            prop::collection::vec(txn_op(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(compare, success, failure, idem)| Op::Txn { compare, success, failure, idem }),
        6 => (key(), at()).prop_map(|(key, at)| Op::Get { key, at }),
        3 => (prefix(), 1u32..4, any::<bool>(), at())
            .prop_map(|(prefix, limit, keys_only, at)| Op::List { prefix, limit, keys_only, at }),
        1 => (prefix(), at()).prop_map(|(prefix, at)| Op::Count { prefix, at }),
        2 => (key(), 1u32..4).prop_map(|(key, limit)| Op::History { key, limit }),
        2 => (rev_choice(), any::<bool>()).prop_map(|(to, idem)| Op::Compact { to, idem }),
        2 => (prop::sample::select(LEASE_TTLS), any::<bool>())
            .prop_map(|(ttl, idem)| Op::Grant { ttl, idem }),
        1 => prop::collection::vec(lease_ref(), 1..3).prop_map(|leases| Op::KeepAlive { leases }),
        1 => lease_ref().prop_map(|lease| Op::LeaseInfo { lease }),
        2 => (lease_ref(), any::<bool>()).prop_map(|(lease, idem)| Op::Revoke { lease, idem }),
        4 => (0usize..6).prop_map(|nth| Op::Retry { nth }),
        1 => (0usize..6, reused_write()).prop_map(|(nth, with)| Op::ReuseKey { nth, with: Box::new(with) }),
        1 => Just(Op::Snapshot),
        1 => prop::collection::vec(key(), 0..3).prop_map(|keys| Op::Expire { keys }),
    ]
}

/// A write to send under another's idempotency key.
fn reused_write() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| Op::Put {
            key,
            value,
            cond: Cond::None,
            attach: AttachRef::None,
            idem: true
        }),
        key().prop_map(|key| Op::Delete {
            key,
            cond: Cond::None,
            idem: true
        }),
        prefix().prop_map(|prefix| Op::DeletePrefix { prefix, idem: true }),
        key().prop_map(|key| Op::Txn {
            compare: Vec::new(),
            success: vec![TxnOpGen::Delete { key }],
            failure: Vec::new(),
            idem: true
        }),
        rev_choice().prop_map(|to| Op::Compact { to, idem: true }),
        prop::sample::select(LEASE_TTLS).prop_map(|ttl| Op::Grant { ttl, idem: true }),
    ]
}

fn sequences(max_ops: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max_ops.max(1))
}

// ---------------------------------------------------------------------------------------
// Requests, as sent: every revision and lease id resolved.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Any,
    Revision(i64),
    Exists,
    Absent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Attach {
    None,
    Lease(i64),
    Ttl(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    Put {
        key: String,
        value: String,
        expect: Expect,
        attach: Attach,
        idem: Option<String>,
    },
    Delete {
        key: String,
        expect: Expect,
        idem: Option<String>,
    },
    DeletePrefix {
        prefix: String,
        idem: Option<String>,
    },
    Txn {
        request: TxnRequest,
        idem: Option<String>,
    },
    Get {
        key: String,
        revision: Option<i64>,
    },
    List {
        prefix: String,
        limit: u32,
        keys_only: bool,
        revision: Option<i64>,
    },
    Count {
        prefix: String,
        revision: Option<i64>,
    },
    History {
        key: String,
        limit: u32,
    },
    Compact {
        revision: i64,
        idem: Option<String>,
    },
    Grant {
        ttl: u64,
        idem: Option<String>,
    },
    KeepAlive {
        ids: Vec<i64>,
    },
    LeaseInfo {
        id: i64,
    },
    Revoke {
        id: i64,
        idem: Option<String>,
    },
    Snapshot,
    Expire {
        keys: Vec<String>,
    },
}

impl Req {
    /// This request under the idempotency key `key`, when it takes one.
    fn under_key(mut self, key: &str) -> Self {
        match &mut self {
            Req::Put { idem, .. }
            | Req::Delete { idem, .. }
            | Req::DeletePrefix { idem, .. }
            | Req::Txn { idem, .. }
            | Req::Compact { idem, .. }
            | Req::Grant { idem, .. }
            | Req::Revoke { idem, .. } => *idem = Some(key.to_owned()),
            _ => {}
        }
        self
    }

    fn idempotency_key(&self) -> Option<&str> {
        match self {
            Req::Put { idem, .. }
            | Req::Delete { idem, .. }
            | Req::DeletePrefix { idem, .. }
            | Req::Txn { idem, .. }
            | Req::Compact { idem, .. }
            | Req::Grant { idem, .. }
            | Req::Revoke { idem, .. } => idem.as_deref(),
            _ => None,
        }
    }

    /// Whether the node records this answer for a retry: every outcome of a single-key
    /// write, a prefix delete always, and the rest only when they did something.
    fn records(&self, answer: &Value) -> bool {
        let ok = answer["status"] == 200;
        match self {
            Req::Put { .. } | Req::Delete { .. } => {
                matches!(answer["status"].as_u64(), Some(200 | 404 | 412))
            }
            Req::DeletePrefix { .. } | Req::Grant { .. } => ok,
            Req::Txn { .. } | Req::Compact { .. } | Req::Revoke { .. } => ok,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
struct Version {
    revision: i64,
    /// `None` for a delete.
    value: Option<String>,
    create_revision: i64,
    version: i64,
    lease: Option<i64>,
    reason: Option<&'static str>,
    /// Dropped by a compaction (only ever a replaced version).
    dropped: bool,
}

#[derive(Clone, Debug)]
struct LeaseModel {
    ttl: u64,
    alive: bool,
}

/// What KeyGrid promises, kept in memory: every key's versions (its row, then what history
/// keeps of it), the revision, the compact revision, the leases, and the idempotency records.
#[derive(Debug)]
struct Model {
    revision: i64,
    compact_revision: i64,
    /// A key's versions, oldest first; empty once compaction purged its tombstone.
    keys: BTreeMap<String, Vec<Version>>,
    leases: BTreeMap<i64, LeaseModel>,
    /// Lease ids in the order they were learned, for `LeaseRef::Known`.
    lease_order: Vec<i64>,
    records: HashMap<String, (Req, Value)>,
    /// Every request sent with an Idempotency-Key, in order, for `Op::Retry`.
    sent: Vec<Req>,
    /// Makes idempotency keys unique across the sequences one node serves.
    tag: String,
    next_idem: u64,
}

impl Model {
    fn new(revision: i64, tag: String) -> Self {
        Model {
            revision,
            compact_revision: revision,
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_order: Vec::new(),
            records: HashMap::new(),
            sent: Vec::new(),
            tag,
            next_idem: 0,
        }
    }

    fn live(&self, key: &str) -> Option<&Version> {
        self.keys
            .get(key)
            .and_then(|versions| versions.last())
            .filter(|version| version.value.is_some())
    }

    fn idem(&mut self, wanted: bool) -> Option<String> {
        wanted.then(|| {
            self.next_idem += 1;
            format!("model-{}-{}", self.tag, self.next_idem)
        })
    }

    fn revision_of(&self, choice: RevChoice) -> i64 {
        match choice {
            RevChoice::ModOf(key) => self.live(key).map_or(0, |version| version.revision),
            RevChoice::Back(back) => self.revision - i64::from(back),
            RevChoice::Ahead => self.revision + 1,
        }
    }

    fn lease_of(&self, lease: LeaseRef) -> i64 {
        match lease {
            LeaseRef::Known(at) if !self.lease_order.is_empty() => {
                self.lease_order[at % self.lease_order.len()]
            }
            _ => MISSING_LEASE,
        }
    }

    fn expect_of(&self, cond: Cond) -> Expect {
        match cond {
            Cond::None => Expect::Any,
            Cond::IfRevision(choice) => Expect::Revision(self.revision_of(choice)),
            Cond::MustExist => Expect::Exists,
            Cond::CreateOnly => Expect::Absent,
        }
    }

    /// The request `op` sends in this state; `None` for a retry with nothing to retry.
    fn resolve(&mut self, op: &Op) -> Option<Req> {
        Some(match op {
            Op::Put {
                key,
                value,
                cond,
                attach,
                idem,
            } => Req::Put {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
                expect: self.expect_of(*cond),
                attach: match attach {
                    AttachRef::None => Attach::None,
                    AttachRef::Lease(lease) => Attach::Lease(self.lease_of(*lease)),
                    AttachRef::Ttl => Attach::Ttl(LEASE_TTLS[0]),
                },
                idem: self.idem(*idem),
            },
            Op::Delete { key, cond, idem } => Req::Delete {
                key: (*key).to_owned(),
                expect: self.expect_of(*cond),
                idem: self.idem(*idem),
            },
            Op::DeletePrefix { prefix, idem } => Req::DeletePrefix {
                prefix: (*prefix).to_owned(),
                idem: self.idem(*idem),
            },
            Op::Txn {
                compare,
                success,
                failure,
                idem,
            } => {
                let compare = compare
                    .iter()
                    .map(|compare| {
                        let (target, value) = match &compare.target {
                            TargetGen::Value(text) => {
                                (CompareTarget::Value, CompareValue::Text((*text).to_owned()))
                            }
                            TargetGen::Revision(choice) => (
                                CompareTarget::Revision,
                                CompareValue::Integer(self.revision_of(*choice)),
                            ),
                            TargetGen::CreateRevision(choice) => (
                                CompareTarget::CreateRevision,
                                CompareValue::Integer(self.revision_of(*choice)),
                            ),
                            TargetGen::Version(version) => {
                                (CompareTarget::Version, CompareValue::Integer(*version))
                            }
                            TargetGen::Exists(exists) => {
                                (CompareTarget::Exists, CompareValue::Bool(*exists))
                            }
                        };
                        Compare {
                            key: compare.key.to_owned(),
                            target,
                            op: compare.op,
                            value,
                        }
                    })
                    .collect();
                let ops = |model: &Model, ops: &[TxnOpGen]| -> Vec<TxnOp> {
                    ops.iter()
                        .map(|op| match op {
                            TxnOpGen::Put { key, value, lease } => TxnOp::Put {
                                key: (*key).to_owned(),
                                value: (*value).to_owned(),
                                lease: lease.map(|lease| model.lease_of(lease)),
                            },
                            TxnOpGen::Delete { key } => TxnOp::Delete {
                                key: (*key).to_owned(),
                            },
                            TxnOpGen::DeletePrefix { prefix } => TxnOp::DeletePrefix {
                                prefix: (*prefix).to_owned(),
                            },
                            TxnOpGen::Get { key } => TxnOp::Get {
                                key: (*key).to_owned(),
                            },
                        })
                        .collect()
                };
                let request = TxnRequest {
                    compare,
                    success: ops(self, success),
                    failure: ops(self, failure),
                };
                Req::Txn {
                    request,
                    idem: self.idem(*idem),
                }
            }
            Op::Get { key, at } => Req::Get {
                key: (*key).to_owned(),
                revision: at.map(|at| self.revision_of(at)),
            },
            Op::List {
                prefix,
                limit,
                keys_only,
                at,
            } => Req::List {
                prefix: (*prefix).to_owned(),
                limit: *limit,
                keys_only: *keys_only,
                revision: at.map(|at| self.revision_of(at)),
            },
            Op::Count { prefix, at } => Req::Count {
                prefix: (*prefix).to_owned(),
                revision: at.map(|at| self.revision_of(at)),
            },
            Op::History { key, limit } => Req::History {
                key: (*key).to_owned(),
                limit: *limit,
            },
            Op::Compact { to, idem } => Req::Compact {
                revision: self.revision_of(*to),
                idem: self.idem(*idem),
            },
            Op::Grant { ttl, idem } => Req::Grant {
                ttl: *ttl,
                idem: self.idem(*idem),
            },
            Op::KeepAlive { leases } => {
                let mut ids: Vec<i64> = Vec::new();
                for lease in leases {
                    let id = self.lease_of(*lease);
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                Req::KeepAlive { ids }
            }
            Op::LeaseInfo { lease } => Req::LeaseInfo {
                id: self.lease_of(*lease),
            },
            Op::Revoke { lease, idem } => Req::Revoke {
                id: self.lease_of(*lease),
                idem: self.idem(*idem),
            },
            Op::Retry { nth } => self.sent_back(*nth)?,
            Op::ReuseKey { nth, with } => {
                let first = self.sent_back(*nth)?;
                let key = first.idempotency_key()?.to_owned();
                self.resolve(with)?.under_key(&key)
            }
            Op::Snapshot => Req::Snapshot,
            Op::Expire { keys } => {
                let mut unique: Vec<String> = Vec::new();
                for key in keys {
                    if !unique.iter().any(|known| known == key) {
                        unique.push((*key).to_owned());
                    }
                }
                Req::Expire { keys: unique }
            }
        })
    }

    /// The write sent with an idempotency key `nth` before the latest (the first, if fewer).
    fn sent_back(&self, nth: usize) -> Option<Req> {
        let latest = self.sent.len().checked_sub(1)?;
        Some(self.sent[latest - nth.min(latest)].clone())
    }

    /// The answer the node must give to `req`, applying it to the model. `actual` is read
    /// only for what the model cannot know beforehand: the id of a lease the node grants.
    fn answer(&mut self, req: &Req, actual: &Value) -> Result<Value, String> {
        // A request refused for its form is refused before its idempotency key is looked up.
        match req {
            Req::Delete {
                expect: Expect::Absent,
                ..
            } => return Ok(json!({"status": 400, "replayed": false})),
            Req::Put {
                expect: Expect::Revision(revision),
                ..
            }
            | Req::Delete {
                expect: Expect::Revision(revision),
                ..
            } if *revision < 0 => return Ok(json!({"status": 400, "replayed": false})),
            Req::Compact { revision, .. } if *revision < 0 => {
                return Ok(json!({"status": 422, "replayed": false}))
            }
            _ => {}
        }
        let idem = req.idempotency_key().map(str::to_owned);
        if let Some(idem) = &idem {
            if let Some((first, answer)) = self.records.get(idem) {
                if first != req {
                    return Ok(json!({"status": 422, "replayed": false}));
                }
                let mut replayed = answer.clone();
                replayed["replayed"] = json!(true);
                self.after_put_with_ttl(req, &mut replayed);
                return Ok(replayed);
            }
        }
        let mut answer = self.apply(req, actual)?;
        if let Some(idem) = idem {
            if !self.sent.contains(req) {
                self.sent.push(req.clone());
            }
            if req.records(&answer) {
                self.records.insert(idem, (req.clone(), answer.clone()));
            }
        }
        self.after_put_with_ttl(req, &mut answer);
        Ok(answer)
    }

    /// A put with a TTL does not say which lease it was granted: the runner reads the key
    /// after it, and the model says which lease that read must show.
    fn after_put_with_ttl(&self, req: &Req, answer: &mut Value) {
        if let Req::Put {
            key,
            attach: Attach::Ttl(_),
            ..
        } = req
        {
            if answer["status"] == 200 {
                answer["lease_now"] = json!(self.live(key).and_then(|version| version.lease));
            }
        }
    }

    fn write(&mut self, key: &str, version: Version) {
        self.keys.entry(key.to_owned()).or_default().push(version);
    }

    fn tombstone(revision: i64, reason: Option<&'static str>) -> Version {
        Version {
            revision,
            value: None,
            create_revision: 0,
            version: 0,
            lease: None,
            reason,
            dropped: false,
        }
    }

    fn put_version(&self, key: &str, value: &str, revision: i64, lease: Option<i64>) -> Version {
        let (create_revision, version) = match self.live(key) {
            Some(live) => (live.create_revision, live.version + 1),
            None => (revision, 1),
        };
        Version {
            revision,
            value: Some(value.to_owned()),
            create_revision,
            version,
            lease,
            reason: None,
            dropped: false,
        }
    }

    fn holds(&self, key: &str, expect: &Expect) -> bool {
        let live = self.live(key);
        match expect {
            Expect::Any => true,
            Expect::Absent => live.is_none(),
            Expect::Exists => live.is_some(),
            Expect::Revision(revision) => live.is_some_and(|live| live.revision == *revision),
        }
    }

    fn lease_alive(&self, id: i64) -> bool {
        self.leases.get(&id).is_some_and(|lease| lease.alive)
    }

    /// A new lease id the node reported: it must be one the model has not seen.
    fn learn_lease(&mut self, id: Option<i64>, ttl: u64) -> Result<i64, String> {
        let Some(id) = id else {
            return Err("the node granted a lease but did not say its id".to_owned());
        };
        if self.leases.contains_key(&id) || id == MISSING_LEASE {
            return Err(format!(
                "the node granted lease {id}, which it had granted before"
            ));
        }
        self.leases.insert(id, LeaseModel { ttl, alive: true });
        self.lease_order.push(id);
        Ok(id)
    }

    /// Whether a read at `revision` is refused, and how.
    fn refuse_read_at(&self, revision: Option<i64>) -> Option<Value> {
        let revision = revision?;
        if revision < 1 || revision > self.revision {
            Some(json!({"status": 400}))
        } else if revision < self.compact_revision {
            Some(json!({"status": 410}))
        } else {
            None
        }
    }

    /// The version of `key` that was current at `revision` (now when `None`), if live.
    fn at(&self, key: &str, revision: Option<i64>) -> Option<&Version> {
        let versions = self.keys.get(key)?;
        let version = match revision {
            None => versions.last(),
            Some(revision) => versions
                .iter()
                .rev()
                .find(|version| version.revision <= revision),
        }?;
        version.value.is_some().then_some(version)
    }

    fn record(&self, key: &str, version: &Version, with_value: bool) -> Value {
        let mut record = json!({
            "key": key,
            "create_revision": version.create_revision,
            "mod_revision": version.revision,
            "version": version.version,
            "lease": version.lease,
        });
        if with_value {
            record["value"] = json!(version.value);
        }
        record
    }

    fn live_under(&self, prefix: &str, revision: Option<i64>) -> Vec<(String, Version)> {
        self.keys
            .keys()
            .filter(|key| key.starts_with(prefix))
            .filter_map(|key| {
                self.at(key, revision)
                    .map(|version| (key.clone(), version.clone()))
            })
            .collect()
    }

    fn apply(&mut self, req: &Req, actual: &Value) -> Result<Value, String> {
        Ok(match req {
            Req::Put {
                key,
                value,
                expect,
                attach,
                ..
            } => {
                if !self.holds(key, expect) {
                    return Ok(json!({"status": 412, "replayed": false}));
                }
                let lease = match attach {
                    Attach::None => None,
                    Attach::Lease(id) if self.lease_alive(*id) => Some(*id),
                    Attach::Lease(_) => return Ok(json!({"status": 404, "replayed": false})),
                    Attach::Ttl(ttl) => Some(self.learn_lease(actual["lease_now"].as_i64(), *ttl)?),
                };
                let revision = self.revision + 1;
                let version = self.put_version(key, value, revision, lease);
                let answer = json!({
                    "status": 200,
                    "replayed": false,
                    "revision": revision,
                    "create_revision": version.create_revision,
                    "version": version.version,
                });
                self.revision = revision;
                self.write(key, version);
                answer
            }
            Req::Delete { key, expect, .. } => {
                if !self.holds(key, expect) {
                    return Ok(json!({"status": 412, "replayed": false}));
                }
                if self.live(key).is_none() {
                    return Ok(json!({"status": 404, "replayed": false}));
                }
                self.revision += 1;
                self.write(key, Self::tombstone(self.revision, None));
                json!({"status": 200, "replayed": false, "revision": self.revision})
            }
            Req::DeletePrefix { prefix, .. } => {
                let doomed = self.live_under(prefix, None);
                if !doomed.is_empty() {
                    self.revision += 1;
                    for (key, _) in &doomed {
                        self.write(key, Self::tombstone(self.revision, None));
                    }
                }
                json!({"status": 200, "replayed": false,
                       "body": {"status": "success", "deleted": doomed.len(), "revision": self.revision}})
            }
            Req::Txn { request, .. } => self.txn(request)?,
            Req::Get { key, revision } => {
                if let Some(refused) = self.refuse_read_at(*revision) {
                    return Ok(refused);
                }
                // A read at a revision names no lease in its headers: the lease headers go
                // with the time left, which only the key's current version has.
                match self.at(key, *revision) {
                    Some(version) => json!({
                        "status": 200,
                        "value": version.value,
                        "revision": version.revision,
                        "create_revision": version.create_revision,
                        "version": version.version,
                        "lease": if revision.is_none() { version.lease } else { None },
                    }),
                    None => json!({"status": 404}),
                }
            }
            Req::List {
                prefix,
                limit,
                keys_only,
                revision,
            } => {
                if let Some(refused) = self.refuse_read_at(*revision) {
                    return Ok(refused);
                }
                let live = self.live_under(prefix, *revision);
                let mut pages = Vec::new();
                let mut rest = &live[..];
                loop {
                    let take = rest.len().min(*limit as usize);
                    let keys: Vec<Value> = rest[..take]
                        .iter()
                        .map(|(key, version)| self.record(key, version, !keys_only))
                        .collect();
                    let more = rest.len() > take;
                    let next = more.then(|| rest[take - 1].0.clone());
                    pages.push(json!({"keys": keys, "next": next}));
                    rest = &rest[take..];
                    if !more {
                        break;
                    }
                }
                json!({"status": 200, "pages": pages})
            }
            Req::Count { prefix, revision } => {
                if let Some(refused) = self.refuse_read_at(*revision) {
                    return Ok(refused);
                }
                json!({"status": 200, "count": self.live_under(prefix, *revision).len()})
            }
            Req::History { key, limit } => {
                let versions: Vec<&Version> = self
                    .keys
                    .get(key)
                    .map(|versions| {
                        versions
                            .iter()
                            .rev()
                            .filter(|version| !version.dropped)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut pages = Vec::new();
                let mut rest = &versions[..];
                loop {
                    let take = rest.len().min(*limit as usize);
                    let history: Vec<Value> = rest[..take]
                        .iter()
                        .map(|version| history_entry(version))
                        .collect();
                    let more = rest.len() > take;
                    let next = more.then(|| rest[take - 1].revision);
                    pages.push(json!({"history": history, "next": next,
                                      "compact_revision": self.compact_revision}));
                    rest = &rest[take..];
                    if !more {
                        break;
                    }
                }
                json!({"status": 200, "pages": pages})
            }
            Req::Compact { revision, .. } => {
                if *revision < 0 || *revision > self.revision {
                    return Ok(json!({"status": 422, "replayed": false}));
                }
                let (mut tombstones, mut dropped) = (0, 0);
                for versions in self.keys.values_mut() {
                    let count = versions.len();
                    for at in 0..count.saturating_sub(1) {
                        let superseded = versions[at + 1].revision;
                        if !versions[at].dropped && superseded <= *revision {
                            versions[at].dropped = true;
                            dropped += 1;
                        }
                    }
                    if versions
                        .last()
                        .is_some_and(|last| last.value.is_none() && last.revision <= *revision)
                    {
                        tombstones += 1;
                        versions.clear();
                    }
                }
                self.keys.retain(|_, versions| !versions.is_empty());
                self.compact_revision = self.compact_revision.max(*revision);
                json!({"status": 200, "replayed": false, "body": {
                    "compact_revision": self.compact_revision,
                    "tombstones": tombstones,
                    "versions": dropped,
                }})
            }
            Req::Grant { ttl, .. } => {
                let id = self.learn_lease(actual["body"]["id"].as_i64(), *ttl)?;
                json!({"status": 200, "replayed": false, "body": {"id": id, "ttl": ttl}})
            }
            Req::KeepAlive { ids } => {
                if let [id] = ids[..] {
                    match self.leases.get(&id).filter(|lease| lease.alive) {
                        Some(lease) => json!({"status": 200, "body": {"id": id, "ttl": lease.ttl}}),
                        None => json!({"status": 404}),
                    }
                } else {
                    let (mut leases, mut expired) = (Vec::new(), Vec::new());
                    for id in ids {
                        match self.leases.get(id).filter(|lease| lease.alive) {
                            Some(lease) => leases.push(json!({"id": id, "ttl": lease.ttl})),
                            None => expired.push(json!(id)),
                        }
                    }
                    json!({"status": 200, "body": {"leases": leases, "expired": expired}})
                }
            }
            Req::LeaseInfo { id } => match self.leases.get(id).filter(|lease| lease.alive) {
                Some(lease) => {
                    let keys: Vec<&String> = self
                        .keys
                        .keys()
                        .filter(|key| self.live(key).is_some_and(|live| live.lease == Some(*id)))
                        .collect();
                    json!({"status": 200, "body": {"id": id, "ttl": lease.ttl, "keys": keys},
                           "remaining_in_ttl": true})
                }
                None => json!({"status": 404}),
            },
            Req::Expire { keys } => {
                let id = self.learn_lease(actual["lease"].as_i64(), 1)?;
                let request = expiring_txn(keys, id);
                // The only race the model leaves to the node: a transaction that reached it
                // after the lease's second was up finds no lease. Either way the lease ends.
                let (txn, expired_at) = if actual["txn"]["status"] == 404 {
                    (json!({"status": 404, "replayed": false}), Value::Null)
                } else {
                    let txn = self.txn(&request)?;
                    let mut attached: Vec<String> = keys
                        .iter()
                        .filter(|key| self.live(key).is_some_and(|live| live.lease == Some(id)))
                        .cloned()
                        .collect();
                    attached.sort();
                    for key in &attached {
                        self.revision += 1;
                        self.write(key, Self::tombstone(self.revision, Some("expired")));
                    }
                    (txn, json!((!attached.is_empty()).then_some(self.revision)))
                };
                if let Some(lease) = self.leases.get_mut(&id) {
                    lease.alive = false;
                }
                json!({"lease": id, "txn": txn, "expired_at": expired_at})
            }
            Req::Snapshot => {
                let records: Vec<Value> = self
                    .live_under("", None)
                    .iter()
                    .map(|(key, version)| self.record(key, version, true))
                    .collect();
                json!({"status": 200, "revision": self.revision, "keys": records.len(),
                       "records": records, "end": records.len()})
            }
            Req::Revoke { id, .. } => {
                if !self.lease_alive(*id) {
                    return Ok(json!({"status": 404, "replayed": false}));
                }
                let keys: Vec<String> = self
                    .keys
                    .keys()
                    .filter(|key| self.live(key).is_some_and(|live| live.lease == Some(*id)))
                    .cloned()
                    .collect();
                for key in &keys {
                    self.revision += 1;
                    self.write(key, Self::tombstone(self.revision, Some("revoked")));
                }
                if let Some(lease) = self.leases.get_mut(id) {
                    lease.alive = false;
                }
                json!({"status": 200, "replayed": false,
                       "body": {"deleted": keys.len(), "revision": self.revision}})
            }
        })
    }

    fn compare_holds(&self, compare: &Compare) -> bool {
        let live = self.live(&compare.key);
        let number = |field: fn(&Version) -> i64| live.map_or(0, field);
        let ordering = match (&compare.target, &compare.value) {
            (CompareTarget::Value, CompareValue::Text(text)) => match live {
                Some(live) => live
                    .value
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes()
                    .cmp(text.as_bytes()),
                None => return false,
            },
            (CompareTarget::Revision, CompareValue::Integer(want)) => {
                number(|version| version.revision).cmp(want)
            }
            (CompareTarget::CreateRevision, CompareValue::Integer(want)) => {
                number(|version| version.create_revision).cmp(want)
            }
            (CompareTarget::Version, CompareValue::Integer(want)) => {
                number(|version| version.version).cmp(want)
            }
            (CompareTarget::Exists, CompareValue::Bool(want)) => live.is_some().cmp(want),
            _ => return false,
        };
        compare.op.holds(ordering)
    }

    fn txn(&mut self, request: &TxnRequest) -> Result<Value, String> {
        // Refused before anything is read: a key written twice in a branch, or written under
        // the branch's own prefix delete; `exists` compared with < or >.
        for compare in &request.compare {
            if compare.target == CompareTarget::Exists
                && matches!(compare.op, CompareOp::Less | CompareOp::Greater)
            {
                return Ok(json!({"status": 422, "replayed": false}));
            }
        }
        for ops in [&request.success, &request.failure] {
            let mut written: Vec<&str> = Vec::new();
            let mut prefixes: Vec<&str> = Vec::new();
            for op in ops.iter() {
                match op {
                    TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                        if written.contains(&key.as_str()) {
                            return Ok(json!({"status": 422, "replayed": false}));
                        }
                        written.push(key);
                    }
                    TxnOp::DeletePrefix { prefix } => prefixes.push(prefix),
                    TxnOp::Get { .. } => {}
                }
            }
            if written
                .iter()
                .any(|key| prefixes.iter().any(|prefix| key.starts_with(prefix)))
            {
                return Ok(json!({"status": 422, "replayed": false}));
            }
        }
        let succeeded = request
            .compare
            .iter()
            .all(|compare| self.compare_holds(compare));
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        for op in ops.iter() {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                if !self.lease_alive(*lease) {
                    return Ok(json!({"status": 404, "replayed": false}));
                }
            }
        }
        let next = self.revision + 1;
        let mut wrote = false;
        let mut results = Vec::new();
        for op in ops.iter() {
            match op {
                TxnOp::Put { key, value, lease } => {
                    let version = self.put_version(key, value, next, *lease);
                    results.push(json!({"op": "put", "key": key,
                        "create_revision": version.create_revision, "version": version.version}));
                    self.write(key, version);
                    wrote = true;
                }
                TxnOp::Delete { key } => {
                    let live = self.live(key).is_some();
                    if live {
                        self.write(key, Self::tombstone(next, None));
                        wrote = true;
                    }
                    results.push(json!({"op": "delete", "key": key, "deleted": u64::from(live)}));
                }
                TxnOp::DeletePrefix { prefix } => {
                    let doomed = self.live_under(prefix, None);
                    for (key, _) in &doomed {
                        self.write(key, Self::tombstone(next, None));
                    }
                    wrote |= !doomed.is_empty();
                    results.push(json!({"op": "delete_prefix", "prefix": prefix,
                                        "deleted": doomed.len()}));
                }
                TxnOp::Get { key } => {
                    let kv = self
                        .live(key)
                        .map(|version| self.record(key, version, true));
                    results.push(json!({"op": "get", "key": key, "kv": kv}));
                }
            }
        }
        if wrote {
            self.revision = next;
        }
        Ok(json!({"status": 200, "replayed": false, "body": {
            "succeeded": succeeded, "revision": self.revision, "results": results,
        }}))
    }
}

/// The transaction that attaches `keys` to the lease `id`.
fn expiring_txn(keys: &[String], id: i64) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: keys
            .iter()
            .map(|key| TxnOp::Put {
                key: key.clone(),
                value: "expiring".to_owned(),
                lease: Some(id),
            })
            .collect(),
        failure: Vec::new(),
    }
}

fn history_entry(version: &Version) -> Value {
    json!({
        "type": if version.value.is_some() { "put" } else { "delete" },
        "revision": version.revision,
        "create_revision": version.create_revision,
        "version": version.version,
        "value": version.value,
        "lease": version.lease,
        "reason": version.reason,
    })
}

// ---------------------------------------------------------------------------------------
// The node: a kg-server process of its own, so that KG_PLANTED_BUG applies to it.

pub struct ModelNode {
    backend: Backend,
    redis: bool,
    /// One node, or several over one database (and one Redis), taking requests in turn.
    bases: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
    http: reqwest::Client,
    children: Vec<Child>,
    runs: std::sync::atomic::AtomicU64,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for ModelNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelNode")
            .field("bases", &self.bases)
            .finish()
    }
}

impl Drop for ModelNode {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ModelNode {
    /// A kg-server process over a fresh database, with `planted` bugs switched on.
    pub async fn start(backend: Backend, planted: Option<&str>) -> Self {
        Self::start_with(backend, planted, false, 1).await
    }

    /// `start`, with the Redis read cache at KG_TEST_REDIS_URL when `redis`, under a key
    /// prefix of its own, and `nodes` processes over the one database and cache, which take
    /// the requests in turn.
    pub async fn start_with(
        backend: Backend,
        planted: Option<&str>,
        redis: bool,
        nodes: usize,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, dir.path()).await;
        let redis_prefix = unique_prefix();
        let mut bases = Vec::new();
        let mut children = Vec::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        for node in 0..nodes {
            let address = format!("127.0.0.1:{}", free_port());
            let log = std::fs::File::create(dir.path().join(format!("node-{node}.log"))).unwrap();
            let mut command = Command::new(env!("CARGO_BIN_EXE_kg-server"));
            command
                .env_clear()
                .env("RUST_LOG", "warn")
                .args([
                    format!("--listen={address}"),
                    format!("--database-url={url}"),
                    format!("--node-id=model-{node}"),
                    "--db-pool-size=4".to_owned(),
                    // A busy machine must not turn a slow answer into a 503 the model calls wrong.
                    "--db-timeout=60s".to_owned(),
                ])
                .stdout(Stdio::null())
                .stderr(log);
            if redis {
                command.args([
                    format!("--redis-url={}", test_redis_url()),
                    format!("--redis-prefix={redis_prefix}"),
                    // As kg-testkit's nodes: a busy machine's Redis may take longer than 250 ms.
                    "--cache-timeout=2s".to_owned(),
                ]);
            }
            if let Some(planted) = planted {
                command.env("KG_PLANTED_BUG", planted);
            }
            children.push(command.spawn().unwrap());
            bases.push(format!("http://{address}"));
            // One after the other: the first migrates the database the others then open.
            let deadline = Instant::now() + PATIENCE;
            loop {
                let ready = http.get(format!("http://{address}/api/ready")).send().await;
                if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                    break;
                }
                assert!(Instant::now() < deadline, "kg-server did not become ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let node = ModelNode {
            backend,
            redis,
            bases,
            next: std::sync::atomic::AtomicUsize::new(0),
            http,
            children,
            runs: std::sync::atomic::AtomicU64::new(0),
            _dir: dir,
        };
        // Every sequence starts above revision 10, so that a revision a few back from the
        // current one is always a revision (from 1), and a sequence answers alike whatever
        // ran before it: its shrinking, and its rerun, depend on nothing else.
        for warmup in 0..10 {
            let body = json!({"data": {"key": format!("warmup/{warmup}"), "value": "w"}});
            node.call(Method::PUT, "/api/key", Some(body), None)
                .await
                .unwrap();
        }
        node
    }

    /// What this node is, for the report: its store, Redis, how many processes.
    fn kind(&self) -> String {
        let mut kind = format!("{:?}", self.backend);
        if self.redis {
            kind.push_str(" with Redis");
        }
        if self.bases.len() > 1 {
            kind.push_str(&format!(", {} nodes", self.bases.len()));
        }
        kind
    }

    /// The `--backend` of scripts/model-test.sh that runs this node's test.
    fn script_backend(&self) -> &'static str {
        match (self.backend, self.redis, self.bases.len()) {
            (_, _, 2..) => "two",
            (Backend::Postgres, true, _) => "redis",
            (Backend::Postgres, false, _) => "postgres",
            (Backend::Sqlite, _, _) => "sqlite",
        }
    }

    /// The URL of `path` on the node whose turn it is.
    fn url(&self, path: &str) -> String {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}{path}", self.bases[turn % self.bases.len()])
    }

    /// Empties the store for a new sequence: every lease revoked, every key deleted, and the
    /// history compacted up to now. Returns the revision the sequence starts at.
    async fn reset(&self) -> Result<i64, String> {
        let leases = self.call(Method::GET, "/api/leases", None, None).await?;
        for lease in leases.1["leases"].as_array().cloned().unwrap_or_default() {
            let id = lease["id"].as_i64().unwrap_or_default();
            self.call(Method::DELETE, &format!("/api/leases/{id}"), None, None)
                .await?;
        }
        self.call(Method::DELETE, "/api/keys?all=true", None, None)
            .await?;
        let (_, status, _) = self.call(Method::GET, "/api/status", None, None).await?;
        let revision = status["revision"]
            .as_i64()
            .ok_or_else(|| format!("no revision in the node's status: {status}"))?;
        let (code, body, _) = self
            .call(
                Method::POST,
                "/api/compact",
                Some(json!({"revision": revision})),
                None,
            )
            .await?;
        if code != 200 {
            return Err(format!("the reset's compaction answered {code}: {body}"));
        }
        Ok(revision)
    }

    /// Sends one request; its status, JSON body (null when none) and headers.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> Result<(u16, Value, reqwest::header::HeaderMap), String> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(idem) = idem {
            request = request.header("idempotency-key", idem);
        }
        let response = request
            .send()
            .await
            .map_err(|err| format!("{method} {path}: {err}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|err| format!("{method} {path}: {err}"))?;
        if status >= 500 {
            return Err(format!("{method} {path} answered {status}: {text}"));
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, body, headers))
    }

    /// The node's answer to `req`, in the model's terms.
    async fn answer(&self, req: &Req) -> Result<Value, String> {
        let header = |headers: &reqwest::header::HeaderMap, name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim_matches('"').parse::<i64>().ok())
        };
        let replayed = |headers: &reqwest::header::HeaderMap| {
            headers
                .get("idempotent-replayed")
                .is_some_and(|value| value == "true")
        };
        Ok(match req {
            Req::Put {
                key,
                value,
                expect,
                attach,
                idem,
            } => {
                let mut body = json!({"data": {"key": key, "value": value}});
                match attach {
                    Attach::None => {}
                    Attach::Lease(id) => body["lease"] = json!(id),
                    Attach::Ttl(ttl) => body["ttl"] = json!(ttl),
                }
                let mut request = self.http.put(self.url("/api/key")).json(&body);
                request = match expect {
                    Expect::Any => request,
                    Expect::Revision(revision) => {
                        request.header("if-match", format!("\"{revision}\""))
                    }
                    Expect::Exists => request.header("if-match", "*"),
                    Expect::Absent => request.header("if-none-match", "*"),
                };
                if let Some(idem) = idem {
                    request = request.header("idempotency-key", idem);
                }
                let response = request.send().await.map_err(|err| format!("PUT: {err}"))?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                if status >= 500 {
                    return Err(format!("PUT answered {status}: {text}"));
                }
                let mut answer = json!({"status": status, "replayed": replayed(&headers)});
                if status == 200 {
                    answer["revision"] = json!(header(&headers, "x-keygrid-revision"));
                    answer["create_revision"] =
                        json!(header(&headers, "x-keygrid-create-revision"));
                    answer["version"] = json!(header(&headers, "x-keygrid-version"));
                    if matches!(attach, Attach::Ttl(_)) {
                        let (_, _, read) = self
                            .call(
                                Method::GET,
                                &format!("/api/key?key={}", encode(key)),
                                None,
                                None,
                            )
                            .await?;
                        answer["lease_now"] = json!(header(&read, "x-keygrid-lease"));
                    }
                }
                answer
            }
            Req::Delete { key, expect, idem } => {
                let mut request = self
                    .http
                    .delete(self.url(&format!("/api/key?key={}", encode(key))));
                request = match expect {
                    Expect::Any => request,
                    Expect::Revision(revision) => {
                        request.header("if-match", format!("\"{revision}\""))
                    }
                    Expect::Exists => request.header("if-match", "*"),
                    Expect::Absent => request.header("if-none-match", "*"),
                };
                if let Some(idem) = idem {
                    request = request.header("idempotency-key", idem);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|err| format!("DELETE: {err}"))?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                if status >= 500 {
                    return Err(format!("DELETE answered {status}: {text}"));
                }
                let mut answer = json!({"status": status, "replayed": replayed(&headers)});
                if status == 200 {
                    answer["revision"] = json!(header(&headers, "x-keygrid-revision"));
                }
                answer
            }
            Req::DeletePrefix { prefix, idem } => {
                let path = if prefix.is_empty() {
                    "/api/keys?all=true".to_owned()
                } else {
                    format!("/api/keys?prefix={}", encode(prefix))
                };
                let (status, body, headers) = self
                    .call(Method::DELETE, &path, None, idem.as_deref())
                    .await?;
                with_body(status, replayed(&headers), body)
            }
            Req::Txn { request, idem } => {
                let (status, mut body, headers) = self
                    .call(
                        Method::POST,
                        "/api/txn",
                        Some(serde_json::to_value(request).unwrap()),
                        idem.as_deref(),
                    )
                    .await?;
                for result in body["results"].as_array_mut().into_iter().flatten() {
                    if result["op"] == "get" && result["kv"].is_object() {
                        result["kv"] = normal_record(&result["kv"]);
                    }
                }
                with_body(status, replayed(&headers), body)
            }
            Req::Get { key, revision } => {
                let mut path = format!("/api/key?key={}", encode(key));
                if let Some(revision) = revision {
                    path.push_str(&format!("&revision={revision}"));
                }
                let (status, body, headers) = self.call(Method::GET, &path, None, None).await?;
                if status == 200 {
                    json!({
                        "status": 200,
                        "value": body["data"]["value"],
                        "revision": header(&headers, "etag"),
                        "create_revision": header(&headers, "x-keygrid-create-revision"),
                        "version": header(&headers, "x-keygrid-version"),
                        "lease": header(&headers, "x-keygrid-lease").filter(|_| revision.is_none()),
                    })
                } else {
                    json!({"status": status})
                }
            }
            Req::List {
                prefix,
                limit,
                keys_only,
                revision,
            } => {
                let mut pages = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let mut path = format!("/api/keys?prefix={}&limit={limit}", encode(prefix));
                    if *keys_only {
                        path.push_str("&keys_only=true");
                    }
                    if let Some(revision) = revision {
                        path.push_str(&format!("&revision={revision}"));
                    }
                    if let Some(after) = &after {
                        path.push_str(&format!("&after={}", encode(after)));
                    }
                    let (status, body, _) = self.call(Method::GET, &path, None, None).await?;
                    if status != 200 {
                        return Ok(json!({"status": status}));
                    }
                    let keys: Vec<Value> = body["keys"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(normal_record)
                        .collect();
                    let next = body["next"].clone();
                    pages.push(json!({"keys": keys, "next": next}));
                    match next.as_str() {
                        Some(next) if pages.len() < 64 => after = Some(next.to_owned()),
                        _ => break,
                    }
                }
                json!({"status": 200, "pages": pages})
            }
            Req::Count { prefix, revision } => {
                let mut path = format!("/api/keys?count_only=true&prefix={}", encode(prefix));
                if let Some(revision) = revision {
                    path.push_str(&format!("&revision={revision}"));
                }
                let (status, body, _) = self.call(Method::GET, &path, None, None).await?;
                if status == 200 {
                    json!({"status": 200, "count": body["count"]})
                } else {
                    json!({"status": status})
                }
            }
            Req::History { key, limit } => {
                let mut pages = Vec::new();
                let mut before: Option<i64> = None;
                loop {
                    let mut path = format!("/api/key/history?key={}&limit={limit}", encode(key));
                    if let Some(before) = before {
                        path.push_str(&format!("&before={before}"));
                    }
                    let (status, body, _) = self.call(Method::GET, &path, None, None).await?;
                    if status != 200 {
                        return Ok(json!({"status": status}));
                    }
                    let history: Vec<Value> = body["history"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|entry| {
                            json!({
                                "type": entry["type"],
                                "revision": entry["revision"],
                                "create_revision": entry["create_revision"],
                                "version": entry["version"],
                                "value": entry["value"],
                                "lease": entry["lease"],
                                "reason": entry["reason"],
                            })
                        })
                        .collect();
                    let next = body["next"].clone();
                    pages.push(json!({"history": history, "next": next,
                                      "compact_revision": body["compact_revision"]}));
                    match next.as_i64() {
                        Some(next) if pages.len() < 64 => before = Some(next),
                        _ => break,
                    }
                }
                json!({"status": 200, "pages": pages})
            }
            Req::Compact { revision, idem } => {
                let (status, body, headers) = self
                    .call(
                        Method::POST,
                        "/api/compact",
                        Some(json!({"revision": revision})),
                        idem.as_deref(),
                    )
                    .await?;
                with_body(status, replayed(&headers), body)
            }
            Req::Grant { ttl, idem } => {
                let (status, body, headers) = self
                    .call(
                        Method::POST,
                        "/api/leases",
                        Some(json!({"ttl": ttl})),
                        idem.as_deref(),
                    )
                    .await?;
                with_body(status, replayed(&headers), body)
            }
            Req::KeepAlive { ids } => {
                let (status, body, _) = if let [id] = ids[..] {
                    self.call(
                        Method::POST,
                        &format!("/api/leases/{id}/keepalive"),
                        None,
                        None,
                    )
                    .await?
                } else {
                    self.call(
                        Method::POST,
                        "/api/leases/keepalive",
                        Some(json!({"ids": ids})),
                        None,
                    )
                    .await?
                };
                if status == 200 {
                    json!({"status": 200, "body": body})
                } else {
                    json!({"status": status})
                }
            }
            Req::LeaseInfo { id } => {
                let (status, body, _) = self
                    .call(Method::GET, &format!("/api/leases/{id}"), None, None)
                    .await?;
                if status == 200 {
                    let remaining = body["remaining_ms"].as_i64().unwrap_or(-1);
                    let ttl_ms = body["ttl"].as_i64().unwrap_or_default() * 1000;
                    json!({
                        "status": 200,
                        "body": {"id": body["id"], "ttl": body["ttl"], "keys": body["keys"]},
                        "remaining_in_ttl": remaining > 0 && remaining <= ttl_ms,
                    })
                } else {
                    json!({"status": status})
                }
            }
            Req::Expire { keys } => {
                let (status, grant, _) = self
                    .call(Method::POST, "/api/leases", Some(json!({"ttl": 1})), None)
                    .await?;
                let id = grant["id"].as_i64();
                let Some(id) = id.filter(|_| status == 200) else {
                    return Err(format!("a lease of 1 s was not granted: {status} {grant}"));
                };
                let request = expiring_txn(keys, id);
                let (status, body, headers) = self
                    .call(
                        Method::POST,
                        "/api/txn",
                        Some(serde_json::to_value(&request).unwrap()),
                        None,
                    )
                    .await?;
                let txn = with_body(status, replayed(&headers), body);
                let deadline = Instant::now() + PATIENCE;
                let waited = |what: &str| {
                    if Instant::now() > deadline {
                        Err(format!("lease {id} of 1 s: {what} after {PATIENCE:?}"))
                    } else {
                        Ok(())
                    }
                };
                // Its end, by the node's own answers: the lease gone, then (when keys were
                // attached) the last of them deleted as expired.
                loop {
                    let (status, _, _) = self
                        .call(Method::GET, &format!("/api/leases/{id}"), None, None)
                        .await?;
                    if status == 404 {
                        break;
                    }
                    waited("still alive")?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let mut expired_at = Value::Null;
                if status == 200 && !keys.is_empty() {
                    let last = keys.iter().max().cloned().unwrap_or_default();
                    loop {
                        let (_, history, _) = self
                            .call(
                                Method::GET,
                                &format!("/api/key/history?key={}&limit=1", encode(&last)),
                                None,
                                None,
                            )
                            .await?;
                        let top = &history["history"][0];
                        if top["type"] == "delete" && top["reason"] == "expired" {
                            expired_at = top["revision"].clone();
                            break;
                        }
                        waited("its keys not deleted")?;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                json!({"lease": id, "txn": txn, "expired_at": expired_at})
            }
            Req::Snapshot => {
                let response = self
                    .http
                    .get(self.url("/api/snapshot"))
                    .send()
                    .await
                    .map_err(|err| format!("GET /api/snapshot: {err}"))?;
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if status != 200 {
                    return Err(format!("GET /api/snapshot answered {status}: {text}"));
                }
                let mut lines = text.lines().map(|line| {
                    serde_json::from_str::<Value>(line)
                        .unwrap_or_else(|_| json!({"unparsed": line}))
                });
                let header = lines.next().unwrap_or(Value::Null);
                let mut records = Vec::new();
                let mut end = Value::Null;
                for line in lines {
                    if line.get("end").is_some() {
                        end = line["end"].clone();
                    } else {
                        records.push(normal_record(&line));
                    }
                }
                json!({"status": 200, "revision": header["revision"], "keys": header["keys"],
                       "records": records, "end": end})
            }
            Req::Revoke { id, idem } => {
                let (status, body, headers) = self
                    .call(
                        Method::DELETE,
                        &format!("/api/leases/{id}"),
                        None,
                        idem.as_deref(),
                    )
                    .await?;
                with_body(status, replayed(&headers), body)
            }
        })
    }

    /// Runs one sequence from an empty store and compares every answer with the model's.
    pub async fn run(&self, ops: &[Op]) -> Run {
        let mut run = Run {
            sent: 0,
            result: Ok(()),
            trace: String::new(),
        };
        let start = match self.reset().await {
            Ok(start) => start,
            Err(err) => {
                run.result = Err(format!("could not empty the store: {err}"));
                return run;
            }
        };
        let tag = format!(
            "{}-{}",
            std::process::id(),
            self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut model = Model::new(start, tag);
        run.trace
            .push_str(&format!("       (starts at revision {start})\n"));
        for (at, op) in ops.iter().enumerate() {
            let Some(req) = model.resolve(op) else {
                run.trace
                    .push_str(&format!("  {at:>3}. {op:?}: nothing to retry yet\n"));
                continue;
            };
            run.sent += 1;
            let actual = match self.answer(&req).await {
                Ok(actual) => actual,
                Err(err) => {
                    run.result = Err(format!("step {at}, {req:?}: {err}"));
                    run.trace
                        .push_str(&format!("  {at:>3}. {req:?}\n       failed: {err}\n"));
                    return run;
                }
            };
            let expected = model.answer(&req, &actual);
            run.trace
                .push_str(&format!("  {at:>3}. {req:?}\n       answered {actual}\n"));
            match expected {
                Ok(expected) if expected == actual => {}
                Ok(expected) => {
                    run.trace
                        .push_str(&format!("       the model expected {expected}\n"));
                    run.result = Err(format!(
                        "step {at}, {req:?}:\n  the node answered {actual}\n  the model expected {expected}"
                    ));
                    return run;
                }
                Err(err) => {
                    run.trace
                        .push_str(&format!("       the model refused it: {err}\n"));
                    run.result = Err(format!("step {at}, {req:?}: {err} (answered {actual})"));
                    return run;
                }
            }
        }
        run
    }
}

/// One sequence's run: how many requests it sent, whether every answer was the model's, and
/// what each step sent and got.
pub struct Run {
    sent: u64,
    result: Result<(), String>,
    trace: String,
}

fn with_body(status: u16, replayed: bool, body: Value) -> Value {
    if status == 200 {
        json!({"status": 200, "replayed": replayed, "body": body})
    } else {
        json!({"status": status, "replayed": replayed})
    }
}

/// A key's record as the model keeps it: its time left on a lease is the database clock's.
fn normal_record(record: &Value) -> Value {
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        fields.remove("ttl_remaining_ms");
        fields.entry("lease").or_insert(Value::Null);
    }
    record
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
