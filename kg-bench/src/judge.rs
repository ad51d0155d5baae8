//! The judges of a recorded run, each over the one history type (`history::HistoryEntry`):
//! acknowledged writes lost (read back against what the store holds afterwards), a revision
//! handed out twice, stale reads, reads of several keys that saw part of a transaction (and
//! the sum such reads of a bank's accounts must keep), linearizability per key (`check`), and
//! the time a fault took to recover from. `judge` puts their findings into one verdict with
//! its problems.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check;
use crate::history::{
    expand_prefix_deletes, fold_retries, replayable, HistoryEntry, HistoryOutcome,
};
use crate::workload::Op;

/// One key as the store holds it after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub value: Option<String>,
    pub revision: i64,
}

/// What the store holds after the run, key by key; a key that is absent has no row.
pub type StoreState = BTreeMap<String, StoredKey>;

/// Why an acknowledged write counts as lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LostReason {
    /// Another acknowledged write got the same revision later: this one was rolled back and
    /// its revision handed out again.
    RevisionReused { by: Box<HistoryEntry> },
    /// The key's last acknowledged write is not what the store holds: the row is missing, or
    /// older, or holds another value at this revision, or a newer value that no write of
    /// the history with an unknown outcome wrote.
    NotInStore { stored: Option<StoredKey> },
}

/// An acknowledged write that the store does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    pub write: HistoryEntry,
    #[serde(flatten)]
    pub reason: LostReason,
}

/// A read that returned an older state than a write of its key acknowledged before the read
/// was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleRead {
    pub read: HistoryEntry,
    pub newer: HistoryEntry,
}

/// A read of several keys at one revision (a transaction's gets) that missed an acknowledged
/// write of one of them although it saw a key at or above that write's revision: the read was
/// not of one revision, as a read that saw half a transaction is not.
#[derive(Debug, Clone, Serialize)]
pub struct FracturedRead {
    /// The get that showed the older state.
    pub read: HistoryEntry,
    /// The write it missed.
    pub missed: HistoryEntry,
    /// The highest revision another get of the same read showed.
    pub seen_revision: i64,
}

/// A read that found a key alive after another read, ended before it began, had found the
/// key gone, although the value it found was written (and acknowledged) before that other
/// read began: the key came back without a new put, as an expired leased key revived would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResurrectedRead {
    pub gone: HistoryEntry,
    pub alive: HistoryEntry,
}

/// A retry of a write that did not get the first attempt's answer back: the node applied the
/// write again (a second revision, a prefix delete that deleted other keys), or refused what
/// it had done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetriedTwice {
    pub first: HistoryEntry,
    pub retry: HistoryEntry,
}

/// What the judge needs of kg-bench's report of the run (read from its JSON).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunCounts {
    pub requests: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    #[serde(default)]
    pub precondition_failed: u64,
}

/// What a scenario asks of a run beyond the judges' own bars.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// When the fault was repaired, in seconds since the run started: recovery is counted
    /// from here.
    pub repaired_at_s: Option<f64>,
    /// The only error kinds (as the report counts them, e.g. `status_503`) allowed.
    pub allowed_errors: Option<Vec<String>>,
    /// Failures later than this after the repair fail the run.
    pub max_recovery: Option<Duration>,
    /// A stretch longer than this after the repair in which no write was acknowledged fails
    /// the run (see [`write_gap_s`]).
    pub max_write_gap: Option<Duration>,
    /// States the linearizability search may explore per key.
    pub state_limit: usize,
    /// States all of a run's searches may explore together [default:
    /// `check::DEFAULT_RUN_BUDGET`].
    pub search_budget: Option<usize>,
}

/// The verdict on one run.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    pub fault: String,
    pub requests: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub cas_refused: u64,
    pub acknowledged_writes: usize,
    pub unknown_outcomes: usize,
    /// `None` when no store state was given: lost writes were not looked for.
    pub lost_acknowledged_writes: Option<usize>,
    pub lost_examples: Vec<LostWrite>,
    pub stale_reads: usize,
    pub stale_examples: Vec<StaleRead>,
    /// Reads of several keys that saw part of a transaction ([`fractured_reads`]).
    pub fractured_reads: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fractured_examples: Vec<FracturedRead>,
    pub violations: usize,
    pub undecided: usize,
    /// Retried writes that the node did not answer as it had answered the first attempt
    /// ([`retries_applied_twice`]); absent from runs that retried nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_twice: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retried_twice_examples: Vec<RetriedTwice>,
    /// Reads that found a key alive after a read had found it gone, with no put in between
    /// ([`resurrected_reads`]).
    pub resurrected_reads: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resurrected_examples: Vec<ResurrectedRead>,
    /// From the repair to the last failed operation; `None` when nothing failed.
    pub recovery_s: Option<f64>,
    /// The longest stretch after the repair in which no write was acknowledged
    /// ([`write_gap_s`]); `None` when the run acknowledged no write.
    pub write_gap_s: Option<f64>,
    /// Multi-key invariants the store's state broke (see [`Judgement::hold_invariants`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub broken_invariants: Vec<crate::invariant::Broken>,
    /// Reads of keys no write touched, made beside the load (see [`crate::untouched`]);
    /// `None` where the run made none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untouched_reads: Option<crate::untouched::UntouchedReads>,
    /// The watchers beside the load and what they were sent (see [`crate::watchers`]);
    /// `None` where the run had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchers: Option<crate::watchers::WatchVerdict>,
    pub problems: Vec<String>,
    pub passed: bool,
    /// A negative control's run (see `chaos::Scenario::control`): its verdict must fail on a
    /// loss, and the tables say so instead of a bare FAIL.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub negative_control: bool,
}

impl Judgement {
    /// Judges the reads of untouched keys: any wrong answer is a problem, and so is a share
    /// answered during the window below `min_answered`.
    pub fn judge_untouched(
        &mut self,
        reads: crate::untouched::UntouchedReads,
        min_answered: Option<f64>,
    ) {
        if reads.wrong > 0 {
            self.problems.push(format!(
                "{} read(s) of untouched keys answered a value no write wrote: {}",
                reads.wrong,
                reads.wrong_examples.join("; ")
            ));
        }
        if let Some(min) = min_answered {
            if reads.answered_ratio() < min {
                self.problems.push(format!(
                    "{} of {} reads of untouched keys answered from {:.2} s to {:.2} s, under {:.1}%",
                    reads.answered,
                    reads.during,
                    reads.window_s.0,
                    reads.window_s.1,
                    min * 100.0
                ));
            }
        }
        self.untouched_reads = Some(reads);
        self.passed = self.problems.is_empty();
    }

    /// Judges the watchers' records against `history` (the run's, unfolded): any change they
    /// were sent wrong, out of order or not at all is a problem.
    pub fn judge_watchers(
        &mut self,
        history: &[HistoryEntry],
        records: &[crate::watchers::WatchRecord],
    ) {
        let verdict = crate::watchers::judge(history, records);
        if verdict.violations > 0 {
            self.problems.push(format!(
                "{} watch violation(s): {}",
                verdict.violations,
                verdict.examples.join("; ")
            ));
        }
        self.watchers = Some(verdict);
        self.passed = self.problems.is_empty();
    }

    /// Checks `invariants` against the store's state after the run, as one view; each that
    /// breaks is a problem, and fails the verdict.
    pub fn hold_invariants(
        &mut self,
        state: &StoreState,
        invariants: &[crate::invariant::Invariant],
    ) {
        let view = crate::invariant::View::from_state(state);
        for invariant in invariants {
            for broken in crate::invariant::check(std::slice::from_ref(&view), invariant) {
                self.problems.push(format!(
                    "invariant {} broken: {}",
                    broken.invariant, broken.detail
                ));
                self.broken_invariants.push(broken);
            }
        }
        self.passed = self.problems.is_empty();
    }
}

const EXAMPLES: usize = 3;

/// Every acknowledged write that `state` does not account for, by the rules of `LostReason`.
/// Fails on an acknowledged write without a revision: it cannot be judged.
pub fn lost_writes(history: &[HistoryEntry], state: &StoreState) -> Result<Vec<LostWrite>, String> {
    let history = &expand_prefix_deletes(history);
    let acked: Vec<&HistoryEntry> = history
        .iter()
        .filter(|h| h.is_acknowledged_write())
        .collect();
    if let Some(write) = acked.iter().find(|w| w.revision.is_none()) {
        return Err(format!(
            "an acknowledged write without a revision cannot be judged: {write:?}"
        ));
    }
    let mut lost: Vec<LostWrite> = reused_revisions(history)
        .into_iter()
        .flat_map(|(_, mut writes)| {
            writes.sort_by_key(|w| w.complete_us);
            let last = writes.pop().expect("a reuse has two writes");
            writes.into_iter().map(move |write| LostWrite {
                write,
                reason: LostReason::RevisionReused {
                    by: Box::new(last.clone()),
                },
            })
        })
        .collect();

    let mut last_acked: BTreeMap<&str, &HistoryEntry> = BTreeMap::new();
    for write in &acked {
        let newer = last_acked
            .get(write.key.as_str())
            .is_none_or(|last| write.revision > last.revision);
        if newer {
            last_acked.insert(&write.key, write);
        }
    }
    for (key, write) in last_acked {
        let revision = write.revision.unwrap_or_default();
        let stored = state.get(key);
        // A write whose outcome is unknown may have landed after the last acknowledged one.
        let unknown = || {
            history
                .iter()
                .filter(|h| h.key == key && h.is_write() && h.outcome == HistoryOutcome::Unknown)
        };
        let kept = match stored {
            None => write.op == Op::Delete || unknown().any(|h| h.op == Op::Delete),
            Some(row) if row.revision < revision => false,
            Some(row) if row.revision == revision => row.value.as_deref() == write.written_value(),
            Some(row) => unknown().any(|h| h.written_value() == row.value.as_deref()),
        };
        if !kept {
            lost.push(LostWrite {
                write: write.clone(),
                reason: LostReason::NotInStore {
                    stored: stored.cloned(),
                },
            });
        }
    }
    Ok(lost)
}

/// Every retry whose first attempt the node answered 200, 404 or 412 (so kept that answer
/// under the idempotency key) and that got another answer: another revision or outcome (it
/// applied again, or judged again), another count of deleted keys, or another status. A
/// retry without an answer (a timeout, a 5xx, no connection) proves nothing either way.
pub fn retries_applied_twice(history: &[HistoryEntry]) -> Vec<RetriedTwice> {
    let firsts: HashMap<(&str, &str), &HistoryEntry> = history
        .iter()
        .filter(|entry| !entry.retry)
        .filter_map(|entry| {
            Some((
                (entry.idempotency_key.as_deref()?, entry.key.as_str()),
                entry,
            ))
        })
        .collect();
    let mut twice = Vec::new();
    for retry in history.iter().filter(|entry| entry.retry) {
        let Some(id) = retry.idempotency_key.as_deref() else {
            continue;
        };
        let Some(first) = firsts.get(&(id, retry.key.as_str())) else {
            continue;
        };
        if !replayable(first) {
            continue;
        }
        let answer = |entry: &HistoryEntry| {
            (
                entry.outcome,
                entry.revision,
                entry.deleted,
                entry.error.clone(),
            )
        };
        let differs = match retry.outcome {
            HistoryOutcome::Unknown => false,
            HistoryOutcome::Fail if retry.error.as_deref() == Some("connect") => false,
            _ => answer(retry) != answer(first),
        };
        if differs {
            twice.push(RetriedTwice {
                first: (*first).clone(),
                retry: retry.clone(),
            });
        }
    }
    twice.sort_by_key(|t| t.retry.invoke_us);
    twice
}

/// Every read that saw a key alive with a value whose write was acknowledged before an
/// earlier read (ended before this one began) saw the key gone: values are unique, so only
/// that write could have put it there, and it had landed before the key was gone. A newer
/// put re-creates a key with a new value, which this never flags. (The linearizability check
/// finds the same; this names it.)
pub fn resurrected_reads(history: &[HistoryEntry]) -> Vec<ResurrectedRead> {
    // When each value's write was acknowledged.
    let written: HashMap<(&str, &str), u64> = history
        .iter()
        .filter(|h| h.is_acknowledged_write())
        .filter_map(|h| Some(((h.key.as_str(), h.written_value()?), h.complete_us)))
        .collect();
    let mut reads: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    for read in history
        .iter()
        .filter(|h| h.op == Op::Get && h.outcome == HistoryOutcome::Ok)
    {
        reads.entry(&read.key).or_default().push(read);
    }
    let mut found = Vec::new();
    for reads in reads.values_mut() {
        reads.sort_by_key(|read| read.invoke_us);
        // The gone reads by completion, to find the first one ended before a read began.
        let mut gone: Vec<&HistoryEntry> = reads
            .iter()
            .copied()
            .filter(|read| read.value.is_none())
            .collect();
        gone.sort_by_key(|read| read.complete_us);
        for alive in reads.iter().filter(|read| read.value.is_some()) {
            let Some(&acked) = alive
                .value
                .as_deref()
                .and_then(|value| written.get(&(alive.key.as_str(), value)))
            else {
                continue;
            };
            // A gone read that began after the write was acknowledged and ended before this
            // read began.
            let ended_before = gone.partition_point(|read| read.complete_us < alive.invoke_us);
            if let Some(read) = gone[..ended_before]
                .iter()
                .find(|read| read.invoke_us > acked)
            {
                found.push(ResurrectedRead {
                    gone: (*read).clone(),
                    alive: (*alive).clone(),
                });
            }
        }
    }
    found.sort_by_key(|r| r.alive.invoke_us);
    found
}

/// Revisions that more than one acknowledged write got, with those writes. A revision is a
/// commit: two acknowledged writes at one revision mean one of them was rolled back. The
/// deletes of one prefix delete share its revision as one write: they have one client and
/// one invocation time, which two requests of one client cannot.
pub fn reused_revisions(history: &[HistoryEntry]) -> Vec<(i64, Vec<HistoryEntry>)> {
    let mut by_revision: BTreeMap<i64, Vec<HistoryEntry>> = BTreeMap::new();
    // A prefix delete that deleted nothing names the current revision, not one of its own.
    let commits = history
        .iter()
        .filter(|h| h.is_acknowledged_write() && h.deleted != Some(0));
    for write in commits {
        if let Some(revision) = write.revision {
            let writes = by_revision.entry(revision).or_default();
            let same_request = |other: &HistoryEntry| {
                (other.client, other.invoke_us) == (write.client, write.invoke_us)
            };
            if !writes.iter().any(same_request) {
                writes.push(write.clone());
            }
        }
    }
    by_revision
        .into_iter()
        .filter(|(_, writes)| writes.len() > 1)
        .collect()
}

/// Every successful GET that saw an older state of its key than the newest write of that
/// key acknowledged before the GET was sent: a lower revision, or no key where the write
/// left one.
pub fn stale_reads(history: &[HistoryEntry]) -> Vec<StaleRead> {
    let history = &expand_prefix_deletes(history);
    // Per key, the acknowledged writes by completion, each with the newest one (by revision)
    // completed so far.
    let mut writes: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    for write in history.iter().filter(|h| h.is_acknowledged_write()) {
        writes.entry(&write.key).or_default().push(write);
    }
    let newest_so_far: HashMap<&str, Vec<(u64, &HistoryEntry)>> = writes
        .into_iter()
        .map(|(key, mut writes)| {
            writes.sort_by_key(|w| w.complete_us);
            let mut newest: Option<&HistoryEntry> = None;
            let prefix = writes
                .into_iter()
                .map(|w| {
                    if newest.is_none_or(|n| w.revision > n.revision) {
                        newest = Some(w);
                    }
                    (w.complete_us, newest.expect("set above"))
                })
                .collect();
            (key, prefix)
        })
        .collect();

    let mut deletes: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    // Deletes whose outcome is unknown (a 503 or a timeout): they may take effect at any time
    // after they were sent, or never.
    let mut maybe_deletes: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    for delete in history.iter().filter(|h| h.op == Op::Delete) {
        if delete.is_acknowledged_write() {
            deletes.entry(&delete.key).or_default().push(delete);
        } else if delete.outcome == HistoryOutcome::Unknown {
            maybe_deletes.entry(&delete.key).or_default().push(delete);
        }
    }
    let mut stale = Vec::new();
    for read in history
        .iter()
        .filter(|h| h.op == Op::Get && h.outcome == HistoryOutcome::Ok)
    {
        let Some(prefix) = newest_so_far.get(read.key.as_str()) else {
            continue;
        };
        let before = prefix.partition_point(|(complete, _)| *complete < read.invoke_us);
        let Some((_, newest)) = before.checked_sub(1).map(|i| prefix[i]) else {
            continue;
        };
        let is_stale = match (&read.value, read.revision) {
            // No key: stale unless the newest write deleted it, or a newer delete ran
            // alongside the read (an expiry, whose window is its lease's deadline, or any
            // delete acknowledged after the read began) and may have come first, or a delete
            // with an unknown outcome was sent before the read ended and may have landed.
            (None, _) => {
                newest.op != Op::Delete
                    && !deletes.get(read.key.as_str()).is_some_and(|deletes| {
                        deletes.iter().any(|delete| {
                            delete.invoke_us < read.complete_us && delete.revision > newest.revision
                        })
                    })
                    && !maybe_deletes.get(read.key.as_str()).is_some_and(|deletes| {
                        deletes
                            .iter()
                            .any(|delete| delete.invoke_us < read.complete_us)
                    })
            }
            (Some(_), seen) => newest.revision > Some(seen.unwrap_or(0)),
        };
        if is_stale {
            stale.push(StaleRead {
                read: read.clone(),
                newer: newest.clone(),
            });
        }
    }
    stale.sort_by_key(|s| s.read.invoke_us);
    stale
}

/// The reads of several keys at one revision in `history`: the successful gets of one
/// transaction (same client, same `txn`), in key order.
pub fn txn_reads(history: &[HistoryEntry]) -> Vec<Vec<&HistoryEntry>> {
    let mut reads: BTreeMap<(usize, u64), Vec<&HistoryEntry>> = BTreeMap::new();
    for get in history
        .iter()
        .filter(|h| h.op == Op::Get && h.outcome == HistoryOutcome::Ok)
    {
        if let Some(txn) = get.txn {
            reads.entry((get.client, txn)).or_default().push(get);
        }
    }
    reads
        .into_values()
        .map(|mut gets| {
            gets.sort_by(|a, b| a.key.cmp(&b.key));
            gets
        })
        .collect()
}

/// Every read of several keys at one revision that missed an acknowledged write of a key it
/// read, although another key it read showed that write's revision or a later one. A read at
/// one revision S shows each key at its last write at or below S, so no acknowledged write
/// of a key lies between the revision the read showed for it and S. A missing key is judged
/// only when the history never deletes it (a delete's revision would be what it showed).
pub fn fractured_reads(history: &[HistoryEntry]) -> Vec<FracturedRead> {
    let history = &expand_prefix_deletes(history);
    let mut writes: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    let mut deleted: HashSet<&str> = HashSet::new();
    for write in history.iter().filter(|h| h.is_write()) {
        if write.written_value().is_none() && write.outcome != HistoryOutcome::Fail {
            deleted.insert(&write.key);
        }
        if write.is_acknowledged_write() && write.revision.is_some() {
            writes.entry(&write.key).or_default().push(write);
        }
    }
    let mut fractured = Vec::new();
    for read in txn_reads(history) {
        let seen = read
            .iter()
            .filter_map(|get| get.revision)
            .max()
            .unwrap_or(0);
        for get in read {
            let shown = match (get.value.is_some(), get.revision) {
                (true, Some(revision)) => revision,
                (false, _) if !deleted.contains(get.key.as_str()) => 0,
                _ => continue,
            };
            let missed = writes.get(get.key.as_str()).and_then(|writes| {
                writes
                    .iter()
                    .find(|w| w.revision.is_some_and(|r| shown < r && r <= seen))
            });
            if let Some(missed) = missed {
                fractured.push(FracturedRead {
                    read: get.clone(),
                    missed: (*missed).clone(),
                    seen_revision: seen,
                });
            }
        }
    }
    fractured
}

/// The reads of every account of `txn` transfers whose balances do not add up to what most
/// such reads add up to: a transfer moves money and never makes any, so every read of all
/// the accounts at one revision has one sum. Reads holding anything but balances are left
/// out.
pub fn broken_sums(history: &[HistoryEntry]) -> Vec<crate::invariant::Broken> {
    use crate::invariant::{check, Invariant, View};
    let views: Vec<View> = txn_reads(history)
        .into_iter()
        .filter(|read| {
            read.iter()
                .all(|get| crate::workload::balance(get.value.as_deref()).is_some())
        })
        .map(|read| View {
            revision: read.iter().filter_map(|get| get.revision).max(),
            values: read
                .iter()
                .map(|get| (get.key.clone(), get.value.clone()))
                .collect(),
        })
        .collect();
    let sum = |view: &View| -> i64 {
        view.values
            .values()
            .filter_map(|value| crate::workload::balance(value.as_deref()))
            .sum()
    };
    let mut sums: BTreeMap<i64, usize> = BTreeMap::new();
    for view in &views {
        *sums.entry(sum(view)).or_default() += 1;
    }
    let Some((&total, _)) = sums.iter().max_by_key(|(_, count)| **count) else {
        return Vec::new();
    };
    views
        .iter()
        .flat_map(|view| {
            let keys = view.values.keys().cloned().collect();
            check(std::slice::from_ref(view), &Invariant::Sum { keys, total })
        })
        .collect()
}

/// Seconds from `repaired_at_s` to the last operation that failed or whose outcome is
/// unknown (never below 0); `None` when nothing failed.
pub fn recovery_s(history: &[HistoryEntry], repaired_at_s: f64) -> Option<f64> {
    history
        .iter()
        .filter(|h| !matches!(h.outcome, HistoryOutcome::Ok | HistoryOutcome::Refused))
        .map(|h| h.complete_us)
        .max()
        .map(|last| (micros_to_s(last) - repaired_at_s).max(0.0))
}

/// The longest stretch, from `repaired_at_s` to the history's last completion, in which no
/// write was acknowledged; `None` when none was. This is how long writes were away after a
/// fault, which the last failure does not show: a write that waits for the database (a
/// commit held until a synchronous standby returns) fails nothing while it waits.
pub fn write_gap_s(history: &[HistoryEntry], repaired_at_s: f64) -> Option<f64> {
    let mut acks: Vec<u64> = history
        .iter()
        .filter(|h| h.is_acknowledged_write())
        .map(|h| h.complete_us)
        .collect();
    if acks.is_empty() {
        return None;
    }
    acks.sort_unstable();
    let end = history.iter().map(|h| h.complete_us).max().unwrap_or(0);
    let from = s_to_micros(repaired_at_s);
    let mut last = from;
    let mut longest = 0;
    for at in acks
        .into_iter()
        .filter(|&at| at > from)
        .chain(std::iter::once(end))
    {
        longest = longest.max(at.saturating_sub(last));
        last = last.max(at);
    }
    Some(micros_to_s(longest))
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn s_to_micros(s: f64) -> u64 {
    (s.max(0.0) * 1e6) as u64
}

#[allow(clippy::cast_precision_loss)]
fn micros_to_s(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Runs every judge over one run: `history`, what the store held afterwards (`state`, when
/// known), and the counts of kg-bench's report of the run (`report`, for its errors).
pub fn judge(
    name: &str,
    history: &[HistoryEntry],
    state: Option<&StoreState>,
    report: Option<&RunCounts>,
    expect: &Expectations,
) -> Result<Judgement, String> {
    let retried = history.iter().any(|entry| entry.retry);
    let twice = retries_applied_twice(history);
    let history = &fold_retries(history);
    let lost = state.map(|state| lost_writes(history, state)).transpose()?;
    let stale = stale_reads(history);
    let resurrected = resurrected_reads(history);
    let fractured = fractured_reads(history);
    let sums = broken_sums(history);
    let results = check::check_history(
        &check::registers(history),
        expect.state_limit,
        expect.search_budget.unwrap_or(check::DEFAULT_RUN_BUDGET),
    );
    let (violations, undecided) = check::tally(&results);
    let recovery = recovery_s(history, expect.repaired_at_s.unwrap_or(0.0));
    let write_gap = write_gap_s(history, expect.repaired_at_s.unwrap_or(0.0));

    let errors_by_kind = report.map(|r| r.errors_by_kind.clone()).unwrap_or_default();
    let mut problems = Vec::new();
    if let Some(lost) = lost.as_ref().filter(|lost| !lost.is_empty()) {
        problems.push(format!("{} acknowledged write(s) lost", lost.len()));
    }
    if !stale.is_empty() {
        problems.push(format!("{} stale read(s)", stale.len()));
    }
    if !fractured.is_empty() {
        problems.push(format!(
            "{} read(s) of several keys saw part of a transaction",
            fractured.len()
        ));
    }
    for broken in &sums {
        problems.push(format!(
            "invariant {} broken at revision {}: {}",
            broken.invariant,
            broken.revision.unwrap_or_default(),
            broken.detail
        ));
    }
    if !resurrected.is_empty() {
        problems.push(format!(
            "{} read(s) found a key alive after a read had found it gone (no put between)",
            resurrected.len()
        ));
    }
    if !twice.is_empty() {
        problems.push(format!(
            "{} retried write(s) not answered as their first attempt was (applied twice)",
            twice.len()
        ));
    }
    if violations > 0 || undecided > 0 {
        problems.push(format!(
            "{violations} linearizability violation(s), {undecided} undecided"
        ));
    }
    if let Some(allowed) = &expect.allowed_errors {
        let allowed: HashSet<&str> = allowed.iter().map(String::as_str).collect();
        let unclean: BTreeMap<&str, u64> = errors_by_kind
            .iter()
            .filter(|(kind, _)| !allowed.contains(kind.as_str()))
            .map(|(kind, n)| (kind.as_str(), *n))
            .collect();
        if !unclean.is_empty() {
            problems.push(format!("errors other than {allowed:?}: {unclean:?}"));
        }
    }
    if let (Some(bound), Some(recovery)) = (expect.max_recovery, recovery) {
        if recovery > bound.as_secs_f64() {
            problems.push(format!(
                "recovered in {recovery:.2} s, over {:.1} s",
                bound.as_secs_f64()
            ));
        }
    }
    if let (Some(bound), Some(gap)) = (expect.max_write_gap, write_gap) {
        if gap > bound.as_secs_f64() {
            problems.push(format!(
                "no write acknowledged for {gap:.2} s after the repair, over {:.1} s",
                bound.as_secs_f64()
            ));
        }
    }

    Ok(Judgement {
        fault: name.to_owned(),
        requests: report.map_or(history.len() as u64, |r| r.requests),
        errors_by_kind,
        cas_refused: report.map_or(0, |r| r.precondition_failed),
        acknowledged_writes: history.iter().filter(|h| h.is_acknowledged_write()).count(),
        unknown_outcomes: history
            .iter()
            .filter(|h| h.outcome == HistoryOutcome::Unknown)
            .count(),
        lost_acknowledged_writes: lost.as_ref().map(Vec::len),
        lost_examples: lost
            .unwrap_or_default()
            .into_iter()
            .take(EXAMPLES)
            .collect(),
        stale_reads: stale.len(),
        stale_examples: stale.into_iter().take(EXAMPLES).collect(),
        fractured_reads: fractured.len(),
        fractured_examples: fractured.into_iter().take(EXAMPLES).collect(),
        violations,
        undecided,
        retried_twice: retried.then_some(twice.len()),
        retried_twice_examples: twice.into_iter().take(EXAMPLES).collect(),
        resurrected_reads: resurrected.len(),
        resurrected_examples: resurrected.into_iter().take(EXAMPLES).collect(),
        recovery_s: recovery,
        write_gap_s: write_gap,
        broken_invariants: sums,
        untouched_reads: None,
        watchers: None,
        negative_control: false,
        passed: problems.is_empty(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        op: Op,
        key: &str,
        value: Option<&str>,
        revision: Option<i64>,
        at: u64,
    ) -> HistoryEntry {
        HistoryEntry {
            client: 0,
            op,
            key: key.to_owned(),
            value: value.map(str::to_owned),
            expected: None,
            revision,
            invoke_us: at,
            complete_us: at + 10,
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

    fn put(key: &str, value: &str, revision: i64, at: u64) -> HistoryEntry {
        entry(Op::Put, key, Some(value), Some(revision), at)
    }

    fn get(key: &str, value: Option<&str>, revision: Option<i64>, at: u64) -> HistoryEntry {
        entry(Op::Get, key, value, revision, at)
    }

    fn stored(value: &str, revision: i64) -> StoredKey {
        StoredKey {
            value: Some(value.to_owned()),
            revision,
        }
    }

    /// Two keys written, read back and deleted in order, and the store as they left it.
    fn clean() -> (Vec<HistoryEntry>, StoreState) {
        let history = vec![
            get("a", None, None, 0),
            put("a", "a1", 1, 100),
            get("a", Some("a1"), Some(1), 200),
            put("b", "b1", 2, 300),
            put("a", "a2", 3, 400),
            get("a", Some("a2"), Some(3), 500),
            entry(Op::Delete, "b", None, Some(4), 600),
            get("b", None, None, 700),
        ];
        let state = StoreState::from([("a".to_owned(), stored("a2", 3))]);
        (history, state)
    }

    fn verdict(history: &[HistoryEntry], state: &StoreState) -> Judgement {
        let expect = Expectations {
            state_limit: check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        };
        judge("test", history, Some(state), None, &expect).unwrap()
    }

    #[test]
    fn a_clean_history_passes_every_judge() {
        let (history, state) = clean();
        let v = verdict(&history, &state);
        assert_eq!(v.lost_acknowledged_writes, Some(0));
        assert_eq!((v.stale_reads, v.violations, v.undecided), (0, 0, 0));
        assert_eq!(v.acknowledged_writes, 4);
        assert_eq!(v.recovery_s, None);
        assert!(v.passed, "{:?}", v.problems);
    }

    #[test]
    fn a_store_that_lost_the_last_write_is_caught() {
        let (history, mut state) = clean();
        // The row went back to the first write: the second, acknowledged, is gone.
        state.insert("a".to_owned(), stored("a1", 1));
        let lost = lost_writes(&history, &state).unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].write.value.as_deref(), Some("a2"));
        assert_eq!(
            lost[0].reason,
            LostReason::NotInStore {
                stored: Some(stored("a1", 1))
            }
        );
        let v = verdict(&history, &state);
        assert!(!v.passed);
        assert_eq!(v.problems, ["1 acknowledged write(s) lost"]);
    }

    #[test]
    fn a_missing_row_another_value_or_a_lost_delete_is_a_loss() {
        let (history, state) = clean();
        let mut gone = state.clone();
        gone.remove("a");
        assert_eq!(lost_writes(&history, &gone).unwrap().len(), 1);
        let mut other = state.clone();
        other.insert("a".to_owned(), stored("someone else", 3));
        assert_eq!(lost_writes(&history, &other).unwrap().len(), 1);
        // The delete of b was acknowledged, yet b is back at its old revision.
        let mut undeleted = state;
        undeleted.insert("b".to_owned(), stored("b1", 2));
        let lost = lost_writes(&history, &undeleted).unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].write.op, Op::Delete);
    }

    #[test]
    fn a_newer_row_is_kept_only_when_an_unknown_write_explains_it() {
        let (mut history, mut state) = clean();
        state.insert("a".to_owned(), stored("a3", 9));
        assert_eq!(lost_writes(&history, &state).unwrap().len(), 1);
        let mut timed_out = put("a", "a3", 0, 800);
        timed_out.revision = None;
        timed_out.outcome = HistoryOutcome::Unknown;
        history.push(timed_out);
        assert_eq!(lost_writes(&history, &state).unwrap(), []);
    }

    /// `clean()`, then a prefix delete of "p/" over p/1 and p/2 at one revision, and the
    /// store as it left them.
    fn with_prefix_delete() -> (Vec<HistoryEntry>, StoreState) {
        let (mut history, state) = clean();
        history.extend([
            put("p/1", "x", 5, 800),
            put("p/2", "y", 6, 900),
            put("q", "q", 7, 950),
            entry(Op::DeletePrefix, "p/", None, Some(8), 1_000),
            get("p/1", None, None, 1_100),
            get("q", Some("q"), Some(7), 1_200),
        ]);
        let mut state = state;
        state.insert("q".to_owned(), stored("q", 7));
        (history, state)
    }

    #[test]
    fn a_prefix_delete_is_a_delete_of_each_key_under_it_at_one_revision() {
        let (history, state) = with_prefix_delete();
        let v = verdict(&history, &state);
        assert!(v.passed, "{:?}", v.problems);
        assert_eq!(
            reused_revisions(&history),
            [],
            "one request's deletes are one commit"
        );
        let expanded = crate::history::expand_prefix_deletes(&history);
        let deleted: Vec<&str> = expanded
            .iter()
            .filter(|h| h.revision == Some(8))
            .map(|h| h.key.as_str())
            .collect();
        assert_eq!(deleted, ["p/1", "p/2"], "q is not under p/");
    }

    #[test]
    fn a_key_a_prefix_delete_left_behind_is_lost_and_reading_it_is_stale() {
        let (mut history, mut state) = with_prefix_delete();
        // The store kept p/2 as it was before the prefix delete.
        state.insert("p/2".to_owned(), stored("y", 6));
        let lost = lost_writes(&history, &state).unwrap();
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(
            (lost[0].write.key.as_str(), lost[0].write.revision),
            ("p/2", Some(8))
        );
        // A read sent after the prefix delete was acknowledged that still saw p/2.
        history.push(get("p/2", Some("y"), Some(6), 1_300));
        let stale = stale_reads(&history);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].read.key, "p/2");
        let v = verdict(&history, &state);
        assert_eq!(v.violations, 1, "the register check sees it too");
        assert!(!v.passed);
        // Two requests at one revision are still a reuse.
        history.push(put("r", "r", 8, 1_400));
        assert_eq!(reused_revisions(&history).len(), 1);
    }

    #[test]
    fn a_prefix_delete_that_deleted_nothing_reuses_no_revision() {
        let (mut history, state) = with_prefix_delete();
        // Nothing is left under p/: the node answers with the current revision, 8.
        let mut again = entry(Op::DeletePrefix, "p/", None, Some(8), 1_400);
        again.deleted = Some(0);
        history.push(again.clone());
        assert_eq!(reused_revisions(&history), []);
        assert!(verdict(&history, &state).passed);
        // Had it deleted something, revision 8 would be handed out twice.
        again.deleted = Some(1);
        history.push(again);
        assert_eq!(reused_revisions(&history).len(), 1);
    }

    #[test]
    fn a_revision_handed_out_twice_loses_the_earlier_write() {
        let (mut history, mut state) = clean();
        // b's write was rolled back and its revision went to a later write of c.
        history.push(put("c", "c1", 2, 900));
        state.insert("c".to_owned(), stored("c1", 2));
        let reused = reused_revisions(&history);
        assert_eq!(reused.len(), 1);
        assert_eq!(reused[0].0, 2);
        let lost = lost_writes(&history, &state).unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].write.key, "b");
        assert!(matches!(&lost[0].reason, LostReason::RevisionReused { by } if by.key == "c"));
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_stale() {
        let (mut history, state) = clean();
        // Sent after a2 was acknowledged, yet it saw a1.
        history.push(get("a", Some("a1"), Some(1), 1_000));
        // And a read that saw no key where a write left one.
        history.push(get("a", None, None, 1_100));
        let stale = stale_reads(&history);
        assert_eq!(stale.len(), 2);
        assert_eq!(stale[0].newer.value.as_deref(), Some("a2"));
        let v = verdict(&history, &state);
        assert_eq!(v.stale_reads, 2);
        assert!(
            v.problems.iter().any(|p| p == "2 stale read(s)"),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_state() {
        let history = vec![
            put("a", "a1", 1, 0),
            // The write of a2 runs from 100 to 110; a read from 105 may see a1.
            put("a", "a2", 2, 100),
            get("a", Some("a1"), Some(1), 105),
        ];
        assert_eq!(stale_reads(&history), []);
    }

    #[test]
    fn no_key_is_fresh_while_a_newer_delete_runs_and_stale_after_an_older_one() {
        // An expiry: a delete whose window (100..110) is its lease's deadline. A read from 105
        // that saw no key may have come after it.
        let mut expiry = entry(Op::Delete, "a", None, Some(2), 100);
        expiry.client = 9;
        let history = vec![
            put("a", "a1", 1, 0),
            expiry.clone(),
            get("a", None, None, 105),
        ];
        assert_eq!(stale_reads(&history), []);
        // A delete older than the newest write explains nothing: a1 was rewritten as a3
        // (acknowledged at 60) after the delete of revision 2, so no key at 105 is stale.
        let history = vec![
            put("a", "a1", 1, 0),
            entry(Op::Delete, "a", None, Some(2), 20),
            put("a", "a3", 3, 50),
            get("a", None, None, 105),
        ];
        assert_eq!(stale_reads(&history).len(), 1);
        // Nor does a newer delete that began after the read ended.
        let mut late = expiry;
        late.invoke_us = 200;
        late.complete_us = 210;
        let history = vec![put("a", "a1", 1, 0), late, get("a", None, None, 105)];
        assert_eq!(stale_reads(&history).len(), 1);
    }

    #[test]
    fn a_non_linearizable_window_is_a_violation() {
        // Each read is fresh by revision, yet a read after a2 sees a1 again through an
        // unknown-outcome write it cannot be explained by: only the register search sees it.
        let mut history = vec![
            put("a", "a1", 1, 0),
            get("a", Some("a2"), Some(2), 100),
            get("a", Some("a1"), Some(2), 200),
        ];
        let mut pending = put("a", "a2", 0, 50);
        pending.revision = None;
        pending.outcome = HistoryOutcome::Unknown;
        pending.complete_us = 1_000;
        history.push(pending);
        let state = StoreState::from([("a".to_owned(), stored("a2", 2))]);
        let v = verdict(&history, &state);
        assert_eq!(v.violations, 1);
        assert_eq!(v.stale_reads, 0);
        assert!(!v.passed);
    }

    #[test]
    fn recovery_counts_from_the_repair_and_bounds_and_error_kinds_apply() {
        let (mut history, state) = clean();
        let mut failed = get("a", None, None, 2_400_000);
        failed.outcome = HistoryOutcome::Fail;
        history.push(failed);
        assert_eq!(
            recovery_s(&history, 2.0).map(|s| (s * 100.0).round()),
            Some(40.0)
        );
        assert_eq!(recovery_s(&history, 3.0), Some(0.0));

        let report: RunCounts = serde_json::from_value(serde_json::json!({
            "requests": 9, "rps": 4.5,
            "errors_by_kind": {"status_503": 3, "timeout": 1},
        }))
        .unwrap();
        let expect = Expectations {
            repaired_at_s: Some(2.0),
            allowed_errors: Some(vec!["status_503".to_owned()]),
            max_recovery: Some(Duration::from_millis(200)),
            state_limit: check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        };
        let v = judge("pg-down", &history, Some(&state), Some(&report), &expect).unwrap();
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert!(v.problems[0].contains("timeout"), "{:?}", v.problems);
        assert!(
            v.problems[1].starts_with("recovered in 0.40 s"),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_stretch_without_acknowledged_writes_is_measured_from_the_repair_and_bounded() {
        // Writes at 1 s and 2 s, the fault at 2.5 s, a write held until 9.5 s that fails
        // nothing, and reads meanwhile: the last failure says nothing, the gap says 7 s.
        let mut history = vec![
            put("a", "a1", 1, 1_000_000),
            put("a", "a2", 2, 2_000_000),
            get("a", Some("a2"), Some(2), 4_000_000),
        ];
        let mut held = put("a", "a3", 3, 3_000_000);
        held.complete_us = 9_500_000;
        history.push(held);
        history.push(put("a", "a4", 4, 9_600_000));
        history.push(get("a", Some("a4"), Some(4), 9_700_000));
        let state = StoreState::from([("a".to_owned(), stored("a4", 4))]);
        let gap = |repaired_at| write_gap_s(&history, repaired_at).map(|s| (s * 100.0).round());
        assert_eq!(gap(2.5), Some(700.0));
        // From a repair after the stretch: only what follows it counts.
        assert_eq!(gap(9.5), Some(10.0));
        // A run whose writes never came back: the gap runs to the history's end.
        assert_eq!(
            write_gap_s(&history[..3], 2.5).map(|s| (s * 100.0).round()),
            Some(150.0)
        );
        assert_eq!(write_gap_s(&history[2..3], 0.0), None);

        let expect = Expectations {
            repaired_at_s: Some(2.5),
            max_write_gap: Some(Duration::from_secs(5)),
            state_limit: check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        };
        let v = judge("pg-primary-kill", &history, Some(&state), None, &expect).unwrap();
        assert_eq!(v.recovery_s, None);
        assert!(!v.passed);
        assert_eq!(
            v.problems,
            ["no write acknowledged for 7.00 s after the repair, over 5.0 s"]
        );
        let expect = Expectations {
            max_write_gap: Some(Duration::from_secs(8)),
            ..expect
        };
        assert!(
            judge("pg-primary-kill", &history, Some(&state), None, &expect)
                .unwrap()
                .passed
        );
    }

    #[test]
    fn an_acknowledged_write_without_a_revision_cannot_be_judged() {
        let history = vec![entry(Op::Put, "a", Some("a1"), None, 0)];
        let err = lost_writes(&history, &StoreState::new()).unwrap_err();
        assert!(err.contains("without a revision"), "{err}");
    }

    fn in_txn(mut entry: HistoryEntry, client: usize, txn: u64) -> HistoryEntry {
        entry.client = client;
        entry.txn = Some(txn);
        entry
    }

    /// A transfer's CAS of `key` from a missing account to `value`, swapped at `revision`.
    fn cas(key: &str, value: &str, revision: i64, at: u64) -> HistoryEntry {
        entry(Op::Cas, key, Some(value), Some(revision), at)
    }

    #[test]
    fn a_read_that_saw_half_a_transfer_is_fractured_and_breaks_the_sum() {
        // One transfer of 1 from acct/0 to acct/1, both CASes of one request at revision 5.
        let mut history = vec![
            in_txn(cas("acct/0", "-1:t", 5, 100), 1, 1),
            in_txn(cas("acct/1", "1:t", 5, 100), 1, 1),
            // Reads of both accounts at one revision: before the transfer, and after it.
            in_txn(get("acct/0", None, None, 50), 2, 0),
            in_txn(get("acct/1", None, None, 50), 2, 0),
            in_txn(get("acct/0", Some("-1:t"), Some(5), 200), 3, 0),
            in_txn(get("acct/1", Some("1:t"), Some(5), 200), 3, 0),
        ];
        assert!(fractured_reads(&history).is_empty());
        assert!(broken_sums(&history).is_empty());
        assert!(
            reused_revisions(&history).is_empty(),
            "one transfer, one commit"
        );

        // Planted: a read that saw acct/0 after the transfer and acct/1 before it.
        history.push(in_txn(get("acct/0", Some("-1:t"), Some(5), 300), 4, 0));
        history.push(in_txn(get("acct/1", None, None, 300), 4, 0));
        let fractured = fractured_reads(&history);
        assert_eq!(fractured.len(), 1, "{fractured:?}");
        assert_eq!(
            (fractured[0].read.key.as_str(), fractured[0].seen_revision),
            ("acct/1", 5)
        );
        assert_eq!(fractured[0].missed.revision, Some(5));
        let sums = broken_sums(&history);
        assert_eq!(sums.len(), 1, "{sums:?}");
        assert!(sums[0].detail.contains("add up to -1, not 0"), "{sums:?}");

        let expect = Expectations {
            state_limit: check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        };
        let verdict = judge("txn", &history, None, None, &expect).unwrap();
        assert_eq!(verdict.fractured_reads, 1);
        assert!(!verdict.passed);
        let problems = verdict.problems.join("; ");
        assert!(problems.contains("saw part of a transaction"), "{problems}");
        assert!(problems.contains("add up to -1"), "{problems}");
    }

    #[test]
    fn a_missing_key_that_was_deleted_is_not_judged_fractured() {
        // acct/0 was written at 3 and deleted at 6; a read at 7 that shows it missing saw its
        // delete, whose revision a missing key does not show.
        let history = vec![
            entry(Op::Put, "acct/0", Some("1:a"), Some(3), 0),
            entry(Op::Delete, "acct/0", None, Some(6), 100),
            entry(Op::Put, "acct/1", Some("-1:b"), Some(7), 200),
            in_txn(get("acct/0", None, None, 300), 2, 0),
            in_txn(get("acct/1", Some("-1:b"), Some(7), 300), 2, 0),
        ];
        assert!(fractured_reads(&history).is_empty());
    }

    #[test]
    fn a_missing_key_after_a_delete_of_unknown_outcome_is_not_stale() {
        // The delete got a 503 during an outage and committed all the same: a read that then
        // finds no key saw it. Without that delete the same read is stale.
        let mut unknown = entry(Op::DeletePrefix, "p/", None, None, 200);
        unknown.outcome = HistoryOutcome::Unknown;
        let history = vec![
            put("p/1", "v1", 3, 0),
            unknown,
            get("p/1", None, None, 1_000),
        ];
        assert!(stale_reads(&history).is_empty());
        let without: Vec<HistoryEntry> = history
            .iter()
            .filter(|h| h.op != Op::DeletePrefix)
            .cloned()
            .collect();
        assert_eq!(stale_reads(&without).len(), 1);
        // A delete sent only after the read ended cannot explain it.
        let mut late = entry(Op::Delete, "p/1", None, None, 2_000);
        late.outcome = HistoryOutcome::Unknown;
        let history = vec![put("p/1", "v1", 3, 0), get("p/1", None, None, 1_000), late];
        assert_eq!(stale_reads(&history).len(), 1);
    }

    /// The untouched keys' judge: a wrong answer fails any run, and a run with a bar fails
    /// when too few of the window's reads were answered.
    #[test]
    fn untouched_keys_read_wrong_or_left_unanswered_are_caught() {
        use crate::untouched::{tally, Outcome, Read};
        let (history, state) = clean();
        let reads = |outcomes: Vec<Outcome>| -> Vec<Read> {
            outcomes
                .into_iter()
                .enumerate()
                .map(|(i, outcome)| Read {
                    at_s: i as f64,
                    outcome,
                })
                .collect()
        };
        let answered = reads(vec![Outcome::Right; 5]);
        let mut v = verdict(&history, &state);
        v.judge_untouched(tally(&answered, (0.0, 10.0)), Some(0.999));
        assert!(v.passed, "{:?}", v.problems);
        assert_eq!(v.untouched_reads.as_ref().map(|r| r.answered), Some(5));

        let one_failed = reads(vec![Outcome::Right, Outcome::Failed, Outcome::Right]);
        let mut v = verdict(&history, &state);
        v.judge_untouched(tally(&one_failed, (0.0, 10.0)), Some(0.999));
        assert!(!v.passed);
        assert!(v.problems[0].starts_with("2 of 3 reads of untouched keys answered"));
        // Without a bar, unanswered reads are only counted.
        let mut v = verdict(&history, &state);
        v.judge_untouched(tally(&one_failed, (0.0, 10.0)), None);
        assert!(v.passed, "{:?}", v.problems);

        // A wrong value fails even outside the window and without a bar.
        let wrong = reads(vec![
            Outcome::Right,
            Outcome::Wrong("untouched/0: \"old\"".into()),
        ]);
        let mut v = verdict(&history, &state);
        v.judge_untouched(tally(&wrong, (0.0, 0.5)), None);
        assert!(!v.passed);
        assert!(v.problems[0].contains("no write wrote"), "{:?}", v.problems);
    }

    /// An attempt of a write sent with idempotency key `id`.
    fn attempt(mut entry: HistoryEntry, id: &str, retry: bool) -> HistoryEntry {
        entry.idempotency_key = Some(id.to_owned());
        entry.retry = retry;
        entry
    }

    #[test]
    fn a_replayed_retry_is_one_write_and_a_reapplied_one_a_violation() {
        let (mut history, state) = clean();
        // The put of a2 (revision 3) is retried after b's delete and replayed: same answer.
        history[4] = attempt(history[4].clone(), "w1", false);
        let mut replayed = attempt(put("a", "a2", 3, 650), "w1", true);
        replayed.client = 0;
        history.push(replayed);
        let v = verdict(&history, &state);
        assert!(v.passed, "{:?}", v.problems);
        assert_eq!(v.retried_twice, Some(0));
        // Applied again: a revision of its own. The retry judge says so, and the other judges
        // see the write once.
        let last = history.len() - 1;
        history[last].revision = Some(5);
        let v = verdict(&history, &state);
        assert!(!v.passed);
        assert_eq!(v.retried_twice, Some(1));
        assert_eq!(v.retried_twice_examples[0].retry.revision, Some(5));
        assert!(v.problems[0].contains("applied twice"), "{:?}", v.problems);
        // A retry answered 4xx (here 422: the key "used for another request") is as wrong.
        history[last].revision = None;
        history[last].outcome = HistoryOutcome::Fail;
        history[last].error = Some("status_422".to_owned());
        assert_eq!(retries_applied_twice(&history).len(), 1);
        // One without an answer proves nothing.
        history[last].outcome = HistoryOutcome::Unknown;
        history[last].error = Some("timeout".to_owned());
        assert!(retries_applied_twice(&history).is_empty());
    }

    #[test]
    fn a_prefix_delete_retried_must_delete_what_it_deleted_the_first_time() {
        let mut first = attempt(
            entry(Op::DeletePrefix, "p/", None, Some(7), 100),
            "d1",
            false,
        );
        first.deleted = Some(1);
        let mut retry = attempt(
            entry(Op::DeletePrefix, "p/", None, Some(7), 300),
            "d1",
            true,
        );
        retry.deleted = Some(1);
        assert!(retries_applied_twice(&[first.clone(), retry.clone()]).is_empty());
        // The retry deleted p/2, written between the attempts: another revision and count.
        retry.revision = Some(9);
        assert_eq!(retries_applied_twice(&[first, retry]).len(), 1);
    }

    #[test]
    fn a_write_whose_answer_was_lost_takes_its_retrys_answer() {
        // The first attempt was cut: unknown. Its retry says it applied, at revision 2, so a
        // read after the retry that misses it is stale, and the write is one operation.
        let mut cut = attempt(put("a", "a1", 1, 100), "w", false);
        cut.outcome = HistoryOutcome::Unknown;
        cut.revision = None;
        let retry = attempt(put("a", "a1", 2, 200), "w", true);
        let history = vec![cut.clone(), retry.clone(), get("a", None, None, 400)];
        let folded = fold_retries(&history);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            (
                folded[0].outcome,
                folded[0].revision,
                folded[0].invoke_us,
                folded[0].complete_us
            ),
            (HistoryOutcome::Ok, Some(2), 100, 210)
        );
        assert_eq!(stale_reads(&folded).len(), 1);
        // A first attempt that certainly did nothing and was kept by no one (a 422): the
        // retry is a write of its own.
        let mut refused = cut;
        refused.outcome = HistoryOutcome::Fail;
        refused.error = Some("status_422".to_owned());
        let folded = fold_retries(&[refused, retry.clone()]);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            (folded[1].retry, folded[1].invoke_us),
            (false, retry.invoke_us)
        );
    }

    #[test]
    fn a_key_read_alive_after_a_read_found_it_gone_is_resurrected() {
        // a1 written, read; then the key is found gone (its lease ended), then a1 again.
        let history = vec![
            put("a", "a1", 1, 100),
            get("a", Some("a1"), Some(1), 200),
            get("a", None, None, 300),
            get("a", Some("a1"), Some(1), 400),
        ];
        let found = resurrected_reads(&history);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].gone.invoke_us, found[0].alive.invoke_us),
            (300, 400)
        );
        let expect = Expectations {
            state_limit: check::DEFAULT_STATE_LIMIT,
            ..Expectations::default()
        };
        let v = judge("t", &history, None, None, &expect).unwrap();
        assert!(!v.passed && v.resurrected_reads == 1, "{:?}", v.problems);
        // Re-created by a newer put: a new value, no resurrection.
        let recreated = vec![
            put("a", "a1", 1, 100),
            get("a", None, None, 300),
            put("a", "a2", 2, 350),
            get("a", Some("a2"), Some(2), 400),
        ];
        assert!(resurrected_reads(&recreated).is_empty());
        // Concurrent with the gone read, or written after it began: no proof.
        let overlapping = vec![
            put("a", "a1", 1, 100),
            get("a", None, None, 105),
            get("a", Some("a1"), Some(1), 400),
        ];
        assert!(resurrected_reads(&overlapping).is_empty());
    }
}
