//! The linearizability check of a `--record` history: each key is a register, checked on its
//! own (linearizability is compositional) by the Wing–Gong–Lowe search with memoization of
//! (linearized set, state), as porcupine does it.
//!
//! An operation whose outcome is unknown (a write that timed out, lost its connection or got a
//! 5xx) may take effect at any time after its invocation, or never: it is given no return, so
//! the search may place it anywhere after its call, including after everything else.
//! The register's value before the history is unknown too: a first read may see a value no
//! operation of the history wrote, or no value, and that fixes the initial state.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{expand_prefix_deletes, fold_retries, HistoryEntry, HistoryOutcome};
use crate::workload::Op;

/// What an operation did to, or saw of, the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    /// A PUT of this value, or a DELETE (`None`).
    Write { value: Option<String> },
    /// A GET that saw this value, or no key (`None`).
    Read { value: Option<String> },
    /// A write of `value` only if the register holds `expected` (`None`: no key). `swapped`
    /// is `None` when the outcome is unknown.
    Cas {
        expected: Option<String>,
        value: String,
        swapped: Option<bool>,
    },
}

/// One operation of one key's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub client: usize,
    pub action: Action,
    pub invoke_us: u64,
    /// `None` when the outcome is unknown: it may take effect any time after `invoke_us`.
    pub complete_us: Option<u64>,
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Linearizable,
    /// Not linearizable; `window` is a smallest run of consecutive operations (by invocation)
    /// that is not linearizable on its own.
    Violation {
        window: Vec<Operation>,
    },
    /// The search gave up after exploring `limit` states.
    Unknown {
        limit: usize,
    },
}

/// The result for one key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyResult {
    pub key: String,
    pub operations: usize,
    pub unknown_outcomes: usize,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// States the search may memoize per key before it answers `Unknown`.
pub const DEFAULT_STATE_LIMIT: usize = 2_000_000;

/// States the searches of a whole history may memoize together, narrowing included. A healthy
/// history is decided in a few states a key; a broken one (a failover that lost writes)
/// makes many keys search to their limit, and without a bound for the run the judge would
/// take as long as the keys are many. Past it, the keys left are `Unknown`, which fails the
/// verdict as a violation does.
pub const DEFAULT_RUN_BUDGET: usize = 4 * DEFAULT_STATE_LIMIT;

/// The bounds of the searches: each one's, and what is left of the run's.
#[derive(Debug)]
struct Limits {
    per_search: usize,
    remaining: usize,
}

impl Limits {
    fn search(&mut self, operations: &[Operation]) -> Search {
        let limit = self.per_search.min(self.remaining);
        let (result, states) = search(operations, limit);
        self.remaining = self.remaining.saturating_sub(states);
        result
    }
}

/// Splits a history into each key's operations, sorted by invocation, dropping those that
/// certainly had no effect (`fail`). A retried write is one operation (`fold_retries`).
pub fn registers(history: &[HistoryEntry]) -> BTreeMap<String, Vec<Operation>> {
    let mut keys: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
    for record in &expand_prefix_deletes(&fold_retries(history)) {
        let complete_us = match record.outcome {
            // A refused transfer is not a refused CAS of each of its keys: one compare that
            // failed refuses them all, whatever the others held. It changed nothing.
            HistoryOutcome::Refused if record.txn.is_some() => continue,
            HistoryOutcome::Ok | HistoryOutcome::Refused => Some(record.complete_us),
            HistoryOutcome::Unknown if record.op != Op::Get => None,
            // A read without an answer saw nothing; a refused write changed nothing.
            HistoryOutcome::Fail | HistoryOutcome::Unknown => continue,
        };
        let action = match record.op {
            Op::Get => Action::Read {
                value: record.value.clone(),
            },
            Op::Put => Action::Write {
                value: record.value.clone(),
            },
            Op::Delete | Op::DeletePrefix => Action::Write { value: None },
            // Never in a history: a transaction is recorded as its gets and CASes.
            Op::Txn => continue,
            Op::Cas => Action::Cas {
                expected: record.expected.clone(),
                // read_history refuses a cas without a value.
                value: record.value.clone().unwrap_or_default(),
                swapped: match record.outcome {
                    HistoryOutcome::Ok => Some(true),
                    HistoryOutcome::Refused => Some(false),
                    _ => None,
                },
            },
        };
        keys.entry(record.key.clone()).or_default().push(Operation {
            client: record.client,
            action,
            invoke_us: record.invoke_us,
            complete_us,
        });
    }
    for operations in keys.values_mut() {
        operations.sort_by_key(|op| op.invoke_us);
    }
    keys
}

/// Checks every key of a history, each search memoizing at most `state_limit` states and all
/// of them together at most `budget`.
pub fn check_history(
    keys: &BTreeMap<String, Vec<Operation>>,
    state_limit: usize,
    budget: usize,
) -> Vec<KeyResult> {
    // Two passes: first every key with a small share, which decides the healthy keys and the
    // plain violations, then what is left of the budget for the keys still undecided, so
    // that one hard key early in the order cannot leave the others unjudged.
    let mut limits = Limits {
        per_search: state_limit.min(FIRST_PASS_LIMIT),
        remaining: budget,
    };
    let mut results: Vec<KeyResult> = keys
        .iter()
        .map(|(key, operations)| KeyResult {
            key: key.clone(),
            operations: operations.len(),
            unknown_outcomes: operations
                .iter()
                .filter(|op| op.complete_us.is_none())
                .count(),
            verdict: check_within(operations, &mut limits),
        })
        .collect();
    limits.per_search = state_limit;
    for result in &mut results {
        if matches!(result.verdict, Verdict::Unknown { .. }) {
            result.verdict = check_within(&keys[&result.key], &mut limits);
        }
    }
    results
}

/// Each key's share of the run's budget in the first pass of `check_history`.
const FIRST_PASS_LIMIT: usize = 50_000;

/// How many keys are violations and how many undecided.
pub fn tally(results: &[KeyResult]) -> (usize, usize) {
    let count =
        |wanted: fn(&Verdict) -> bool| results.iter().filter(|r| wanted(&r.verdict)).count();
    (
        count(|v| matches!(v, Verdict::Violation { .. })),
        count(|v| matches!(v, Verdict::Unknown { .. })),
    )
}

/// Checks one key's operations (sorted by invocation) and, on a violation, narrows it down to
/// a smallest failing window.
pub fn check_key(operations: &[Operation], state_limit: usize) -> Verdict {
    check_within(
        operations,
        &mut Limits {
            per_search: state_limit,
            remaining: usize::MAX,
        },
    )
}

fn check_within(operations: &[Operation], limits: &mut Limits) -> Verdict {
    let state_limit = limits.per_search;
    // Writes with an unknown outcome whose value nobody saw can always go last, where they
    // change nothing anyone observed: if the history without them is linearizable, so is the
    // history. After an outage there can be hundreds of them, and each multiplies the
    // search's states, so check without them first.
    //
    // The converse holds too unless the key has a CAS that was refused or has an unknown
    // outcome: taking out an unseen write changes the state only where nothing reads it, and
    // only such a CAS can depend on that state without seeing it. Without one, the pruned
    // verdict is the verdict; with one, a failure falls through to the whole history.
    let unobserved = unobserved_pending_writes(operations);
    if !unobserved.is_empty() {
        let pruned: Vec<Operation> = operations
            .iter()
            .enumerate()
            .filter(|(i, _)| !unobserved.contains(i))
            .map(|(_, op)| op.clone())
            .collect();
        let exact = !operations.iter().any(|op| {
            matches!(
                op.action,
                Action::Cas {
                    swapped: Some(false) | None,
                    ..
                }
            )
        });
        match limits.search(&pruned) {
            Search::Linearizable => return Verdict::Linearizable,
            Search::Violation if exact => {
                return Verdict::Violation {
                    window: failing_window(&pruned, limits).to_vec(),
                }
            }
            Search::GaveUp if exact => return Verdict::Unknown { limit: state_limit },
            Search::Violation | Search::GaveUp => {}
        }
    }
    match limits.search(operations) {
        Search::Linearizable => Verdict::Linearizable,
        Search::GaveUp => Verdict::Unknown { limit: state_limit },
        Search::Violation => Verdict::Violation {
            window: failing_window(operations, limits).to_vec(),
        },
    }
}

/// Indexes of the PUTs and CASes with an unknown outcome whose value no read returned and no
/// CAS expected.
fn unobserved_pending_writes(operations: &[Operation]) -> HashSet<usize> {
    let mut observed: HashSet<&str> = HashSet::new();
    for op in operations {
        match &op.action {
            Action::Read { value: Some(value) }
            | Action::Cas {
                expected: Some(value),
                ..
            } => {
                observed.insert(value);
            }
            _ => {}
        }
    }
    operations
        .iter()
        .enumerate()
        .filter(|(_, op)| op.complete_us.is_none())
        .filter(|(_, op)| match &op.action {
            Action::Write { value: Some(value) } | Action::Cas { value, .. } => {
                !observed.contains(value.as_str())
            }
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

/// The shortest prefix that fails, then the shortest suffix of it that still fails. Each
/// window is checked on its own, with values written outside it treated as written before it.
/// A window never cuts through concurrency: it takes in every operation that overlaps one of
/// its own, since that operation may be what explains it (a CAS refused because a write
/// invoked after it got in first). Cut there, a window can fail on its own while the history
/// around it is fine, and the report would show the wrong evidence.
fn failing_window<'a>(operations: &'a [Operation], limits: &mut Limits) -> &'a [Operation] {
    let mut fails = |window: &[Operation]| matches!(limits.search(window), Search::Violation);
    let prefix = |end: usize| &operations[..closed_end(operations, end)];
    let mut end = operations.len();
    // Adding later operations rarely makes a failing prefix pass, but it can (a pending write
    // may explain a read), so the narrowing only keeps windows it has seen fail.
    let (mut low, mut high) = (1, operations.len());
    while low < high {
        let mid = (low + high) / 2;
        if fails(prefix(mid)) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    if fails(prefix(low)) {
        end = closed_end(operations, low);
    }
    let suffix = |start: usize| &operations[closed_start(operations, start)..end];
    let mut start = 0;
    let (mut low, mut high) = (0, end.saturating_sub(1));
    while low < high {
        let mid = (low + high).div_ceil(2);
        if fails(suffix(mid)) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    if fails(suffix(low)) {
        start = closed_start(operations, low);
    }
    &operations[start..end]
}

/// `end`, moved on past every later operation invoked before an operation of
/// `operations[..end]` completed. Operations with an unknown outcome need no explaining (they
/// may take effect late or never), so they do not pull later ones in.
fn closed_end(operations: &[Operation], mut end: usize) -> usize {
    let mut latest = operations[..end]
        .iter()
        .filter_map(|op| op.complete_us)
        .max();
    while end < operations.len() && latest.is_some_and(|latest| operations[end].invoke_us < latest)
    {
        latest = latest.max(operations[end].complete_us);
        end += 1;
    }
    end
}

/// `start`, moved back to the first earlier operation still running when `operations[start]`
/// was invoked, until there is none: operations are sorted by invocation, so every operation
/// before the result completed before any operation from the result on began.
fn closed_start(operations: &[Operation], mut start: usize) -> usize {
    while let Some(overlapping) = operations[..start].iter().position(|op| {
        op.complete_us
            .is_none_or(|complete| complete > operations[start].invoke_us)
    }) {
        start = overlapping;
    }
    start
}

enum Search {
    Linearizable,
    Violation,
    GaveUp,
}

/// The register's state: unknown before anything fixed it, absent, or a value (interned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    Unknown,
    Absent,
    Value(u32),
}

/// An operation with its value interned; `written` marks values some write of this window
/// wrote, which no read may see before that write.
#[derive(Clone, Copy)]
enum Step {
    Write(Option<u32>),
    Read(Option<u32>),
    Cas {
        expected: Option<u32>,
        value: u32,
        swapped: Option<bool>,
    },
}

fn apply(state: State, step: Step, written: &[bool]) -> Option<State> {
    let as_state = |value: Option<u32>| value.map_or(State::Absent, State::Value);
    // Before anything fixed the register, it may hold what was there before the history:
    // nothing, or a value no write of this window wrote.
    let could_be_initial = |value: Option<u32>| value.is_none_or(|value| !written[value as usize]);
    match step {
        Step::Write(value) => Some(as_state(value)),
        Step::Read(seen) => match state {
            State::Unknown => could_be_initial(seen).then(|| as_state(seen)),
            known => (known == as_state(seen)).then_some(known),
        },
        Step::Cas {
            expected,
            value,
            swapped,
        } => {
            let holds = match state {
                State::Unknown => could_be_initial(expected),
                known => known == as_state(expected),
            };
            match swapped {
                Some(true) => holds.then_some(State::Value(value)),
                // A refusal from an unfixed register says only that it held something else.
                Some(false) if state == State::Unknown => Some(state),
                Some(false) => (!holds).then_some(state),
                // Unknown: if it took effect here it swapped when it could. Placed after
                // everything else, it stands for "never took effect".
                None if holds => Some(State::Value(value)),
                None => Some(state),
            }
        }
    }
}

/// The search over one window: calls and returns in time order in a linked list; linearize the
/// first call whose step the model accepts and whose (linearized set, state) is new; at a
/// return with nothing linearizable, backtrack.
fn search<'a>(operations: &'a [Operation], state_limit: usize) -> (Search, usize) {
    let n = operations.len();
    if n == 0 {
        return (Search::Linearizable, 0);
    }
    let mut interned: HashMap<&str, u32> = HashMap::new();
    let mut written = Vec::new();
    let mut steps = Vec::with_capacity(n);
    let mut intern = |value: Option<&'a str>, write: bool| {
        value.map(|value| {
            let next = u32::try_from(interned.len()).expect("fewer than 2^32 values");
            let id = *interned.entry(value).or_insert(next);
            if id as usize == written.len() {
                written.push(false);
            }
            written[id as usize] |= write;
            id
        })
    };
    for op in operations {
        steps.push(match &op.action {
            Action::Write { value } => Step::Write(intern(value.as_deref(), true)),
            Action::Read { value } => Step::Read(intern(value.as_deref(), false)),
            Action::Cas {
                expected,
                value,
                swapped,
            } => Step::Cas {
                expected: intern(expected.as_deref(), false),
                value: intern(Some(value), true).expect("a value"),
                swapped: *swapped,
            },
        });
    }

    // Events 0..2n: call of op i is 2i, its return 2i+1; node 2n is the list's head. A call
    // sorts before a return at the same instant, so touching operations count as concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in operations.iter().enumerate() {
        events.push((op.invoke_us, false, 2 * i));
        events.push((op.complete_us.unwrap_or(u64::MAX), true, 2 * i + 1));
    }
    events.sort_unstable();
    let head = 2 * n;
    let none = usize::MAX;
    let mut next = vec![none; 2 * n + 1];
    let mut prev = vec![none; 2 * n + 1];
    let mut last = head;
    for &(_, _, node) in &events {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, q) = (prev[node], next[node]);
        next[p] = q;
        if q != none {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, q) = (prev[node], next[node]);
        next[p] = node;
        if q != none {
            prev[q] = node;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = State::Unknown;
    let mut entry = next[head];
    while next[head] != none {
        if entry == none {
            // Only pending returns can end the list; they are handled as returns below.
            unreachable!("the list ends with a return");
        }
        if entry % 2 == 0 {
            let op = entry / 2;
            if let Some(new_state) = apply(state, steps[op], &written) {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), new_state)) {
                    if seen.len() > state_limit {
                        return (Search::GaveUp, seen.len());
                    }
                    stack.push((entry, state));
                    state = new_state;
                    // Lift the call and its return out of the list.
                    unlink(&mut next, &mut prev, entry + 1);
                    unlink(&mut next, &mut prev, entry);
                    entry = next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // A return whose call is not linearized yet: undo the last choice.
            let Some((call, previous)) = stack.pop() else {
                return (Search::Violation, seen.len());
            };
            state = previous;
            let op = call / 2;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, call);
            relink(&mut next, &mut prev, call + 1);
            entry = next[call];
        }
    }
    (Search::Linearizable, seen.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(client: usize, value: &str, invoke: u64, complete: Option<u64>) -> Operation {
        Operation {
            client,
            action: Action::Write {
                value: Some(value.to_owned()),
            },
            invoke_us: invoke,
            complete_us: complete,
        }
    }

    fn read(client: usize, value: Option<&str>, invoke: u64, complete: u64) -> Operation {
        Operation {
            client,
            action: Action::Read {
                value: value.map(str::to_owned),
            },
            invoke_us: invoke,
            complete_us: Some(complete),
        }
    }

    fn cas(
        client: usize,
        (expected, value): (Option<&str>, &str),
        swapped: Option<bool>,
        invoke: u64,
        complete: u64,
    ) -> Operation {
        Operation {
            client,
            action: Action::Cas {
                expected: expected.map(str::to_owned),
                value: value.to_owned(),
                swapped,
            },
            invoke_us: invoke,
            complete_us: swapped.map(|_| complete),
        }
    }

    fn check(mut ops: Vec<Operation>) -> Verdict {
        ops.sort_by_key(|op| op.invoke_us);
        check_key(&ops, DEFAULT_STATE_LIMIT)
    }

    #[test]
    fn a_planted_stale_read_is_a_violation_and_its_window_is_minimal() {
        // a then b are written one after the other; a later read still sees a.
        let verdict = check(vec![
            read(0, None, 0, 5),
            write(1, "a", 10, Some(20)),
            write(2, "b", 30, Some(40)),
            read(3, Some("a"), 50, 60),
            read(4, Some("b"), 70, 80),
        ]);
        let Verdict::Violation { window } = verdict else {
            panic!("a stale read passed: {verdict:?}");
        };
        // b's write completed, then a read saw an older value: that is the whole evidence.
        assert_eq!(
            window,
            vec![write(2, "b", 30, Some(40)), read(3, Some("a"), 50, 60)]
        );
    }

    #[test]
    fn the_window_keeps_the_operations_that_explain_its_own() {
        // The CAS was refused because c, invoked after it, got in first. A window cut just
        // after the CAS would fail on its own and hide the real evidence: the stale read.
        let verdict = check(vec![
            write(1, "a", 0, Some(10)),
            cas(2, (Some("a"), "b"), Some(false), 20, 50),
            write(3, "c", 30, Some(40)),
            read(4, Some("a"), 100, 110),
        ]);
        let Verdict::Violation { window } = verdict else {
            panic!("a stale read passed: {verdict:?}");
        };
        assert_eq!(
            window,
            vec![
                cas(2, (Some("a"), "b"), Some(false), 20, 50),
                write(3, "c", 30, Some(40)),
                read(4, Some("a"), 100, 110),
            ]
        );
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in ["a", "b"] {
            let verdict = check(vec![
                write(1, "a", 0, Some(10)),
                write(2, "b", 20, Some(40)),
                read(3, Some(seen), 25, 35),
            ]);
            assert_eq!(verdict, Verdict::Linearizable, "read saw {seen}");
        }
    }

    #[test]
    fn reads_must_agree_on_the_order_of_concurrent_writes() {
        // Two concurrent writes; one reader sees b then a, another a then b afterwards.
        let verdict = check(vec![
            write(1, "a", 0, Some(100)),
            write(2, "b", 0, Some(100)),
            read(3, Some("b"), 10, 20),
            read(3, Some("a"), 30, 40),
            read(4, Some("a"), 110, 120),
            read(4, Some("b"), 130, 140),
        ]);
        assert!(matches!(verdict, Verdict::Violation { .. }), "{verdict:?}");
    }

    #[test]
    fn a_write_with_an_unknown_outcome_may_apply_late_or_never() {
        // Applied long after its call timed out: a read sees it later.
        let late = check(vec![
            write(1, "a", 0, Some(10)),
            write(2, "b", 20, None),
            read(3, Some("a"), 30, 40),
            read(3, Some("b"), 50, 60),
        ]);
        assert_eq!(late, Verdict::Linearizable);
        // Never applied: nobody sees it.
        let never = check(vec![
            write(1, "a", 0, Some(10)),
            write(2, "b", 20, None),
            read(3, Some("a"), 30, 40),
        ]);
        assert_eq!(never, Verdict::Linearizable);
        // But not before it was called.
        let early = check(vec![
            write(1, "a", 0, Some(10)),
            read(3, Some("b"), 15, 18),
            write(2, "b", 20, None),
        ]);
        assert!(matches!(early, Verdict::Violation { .. }), "{early:?}");
    }

    #[test]
    fn the_value_before_the_history_is_whatever_the_first_read_saw() {
        let before = check(vec![
            read(0, Some("old"), 0, 5),
            read(1, Some("old"), 6, 8),
            write(2, "new", 10, Some(20)),
            read(0, Some("new"), 30, 40),
        ]);
        assert_eq!(before, Verdict::Linearizable);
        // Once fixed, the old value cannot come back, nor can an absent key.
        for stale in [Some("old"), None] {
            let verdict = check(vec![
                read(0, Some("old"), 0, 5),
                write(2, "new", 10, Some(20)),
                read(0, stale, 30, 40),
            ]);
            assert!(matches!(verdict, Verdict::Violation { .. }), "{stale:?}");
        }
    }

    #[test]
    fn a_cas_swaps_only_from_the_value_it_expected() {
        let chained = check(vec![
            write(1, "a", 0, Some(10)),
            cas(2, (Some("a"), "b"), Some(true), 20, 30),
            cas(3, (Some("b"), "c"), Some(true), 40, 50),
            read(4, Some("c"), 60, 70),
        ]);
        assert_eq!(chained, Verdict::Linearizable);
        let from_nothing = check(vec![
            read(0, None, 0, 5),
            cas(1, (None, "a"), Some(true), 10, 20),
            read(2, Some("a"), 30, 40),
        ]);
        assert_eq!(from_nothing, Verdict::Linearizable);
        // A lost update: the CAS swapped from a value that had been overwritten before it.
        let lost_update = check(vec![
            write(1, "a", 0, Some(10)),
            write(2, "c", 20, Some(30)),
            cas(3, (Some("a"), "b"), Some(true), 40, 50),
        ]);
        assert!(
            matches!(lost_update, Verdict::Violation { .. }),
            "{lost_update:?}"
        );
    }

    #[test]
    fn a_refused_cas_must_have_seen_another_value() {
        // Refused while the key held what it expected, and nothing else was going on.
        let wrongly_refused = check(vec![
            write(1, "a", 0, Some(10)),
            cas(2, (Some("a"), "b"), Some(false), 20, 30),
        ]);
        assert!(
            matches!(wrongly_refused, Verdict::Violation { .. }),
            "{wrongly_refused:?}"
        );
        // Refused because a concurrent write got in first.
        let raced = check(vec![
            write(1, "a", 0, Some(10)),
            write(3, "c", 15, Some(35)),
            cas(2, (Some("a"), "b"), Some(false), 20, 30),
            read(4, Some("c"), 40, 50),
        ]);
        assert_eq!(raced, Verdict::Linearizable);
    }

    #[test]
    fn a_cas_with_an_unknown_outcome_may_apply_late_or_never() {
        for seen in ["a", "b"] {
            let verdict = check(vec![
                write(1, "a", 0, Some(10)),
                cas(2, (Some("a"), "b"), None, 20, 0),
                read(3, Some(seen), 30, 40),
            ]);
            assert_eq!(verdict, Verdict::Linearizable, "read saw {seen}");
        }
        // It can only have swapped from what it expected: b cannot replace c.
        let verdict = check(vec![
            write(1, "c", 0, Some(10)),
            cas(2, (Some("a"), "b"), None, 20, 0),
            read(3, Some("b"), 30, 40),
        ]);
        assert!(matches!(verdict, Verdict::Violation { .. }), "{verdict:?}");
    }

    #[test]
    fn a_deleted_key_reads_as_absent() {
        let verdict = check(vec![
            write(1, "a", 0, Some(10)),
            Operation {
                client: 2,
                action: Action::Write { value: None },
                invoke_us: 20,
                complete_us: Some(30),
            },
            read(3, None, 40, 50),
        ]);
        assert_eq!(verdict, Verdict::Linearizable);
    }

    #[test]
    fn many_unseen_writes_with_unknown_outcomes_do_not_stall_the_search() {
        // An outage: every write of 200 fails with an unknown outcome, none is ever seen, while
        // reads keep seeing the value from before. Without pruning this exhausts the limit.
        let mut ops = vec![write(0, "before", 0, Some(1))];
        for i in 0..200u64 {
            ops.push(write(
                1 + i as usize % 8,
                &format!("lost{i}"),
                10 + i * 10,
                None,
            ));
            ops.push(read(9, Some("before"), 15 + i * 10, 16 + i * 10));
        }
        ops.sort_by_key(|op| op.invoke_us);
        assert_eq!(check_key(&ops, 10_000), Verdict::Linearizable);
        // One of them seen, then the old value again: still a violation, found as fast.
        ops.push(read(9, Some("lost7"), 5_000, 5_001));
        ops.push(read(9, Some("before"), 5_010, 5_011));
        let Verdict::Violation { window } = check_key(&ops, 10_000) else {
            panic!("a stale read passed");
        };
        assert_eq!(window.last(), Some(&read(9, Some("before"), 5_010, 5_011)));
    }

    #[test]
    fn the_search_gives_up_at_its_state_limit() {
        // Many overlapping pending writes, each seen once in turn, then the first one again:
        // not linearizable, but the search tries the pending writes' subsets before it knows.
        let mut ops: Vec<Operation> = (0..40)
            .map(|i| write(i, &format!("v{i}"), i as u64, None))
            .collect();
        for i in 0..40u64 {
            ops.push(read(
                99,
                Some(&format!("v{i}")),
                1000 + 10 * i,
                1001 + 10 * i,
            ));
        }
        ops.push(read(99, Some("v0"), 2000, 2001));
        ops.sort_by_key(|op| op.invoke_us);
        assert_eq!(check_key(&ops, 1000), Verdict::Unknown { limit: 1000 });
    }

    /// Keys whose searches each run to their limit share the run's budget: once it is spent,
    /// the keys left are undecided at once instead of each searching to its own limit, and
    /// the keys decided before are decided as without a budget.
    #[test]
    fn the_runs_budget_bounds_all_searches_together() {
        let mut hard: Vec<Operation> = (0..40)
            .map(|i| write(i, &format!("v{i}"), i as u64, None))
            .collect();
        for i in 0..40u64 {
            hard.push(read(
                99,
                Some(&format!("v{i}")),
                1000 + 10 * i,
                1001 + 10 * i,
            ));
        }
        hard.push(read(99, Some("v0"), 2000, 2001));
        hard.sort_by_key(|op| op.invoke_us);
        let easy = vec![write(0, "a", 0, Some(1)), read(1, Some("a"), 2, 3)];
        let keys: BTreeMap<String, Vec<Operation>> = [
            ("a-easy".to_owned(), easy.clone()),
            ("b-hard".to_owned(), hard.clone()),
            ("c-hard".to_owned(), hard.clone()),
            ("d-easy".to_owned(), easy),
        ]
        .into_iter()
        .collect();
        let verdicts: Vec<Verdict> = check_history(&keys, 1000, 1500)
            .into_iter()
            .map(|result| result.verdict)
            .collect();
        assert_eq!(verdicts[0], Verdict::Linearizable);
        assert_eq!(verdicts[1], Verdict::Unknown { limit: 1000 });
        // Only 500 states were left for c, and none after it: d, however easy, has none.
        assert_eq!(verdicts[2], Verdict::Unknown { limit: 1000 });
        assert_eq!(verdicts[3], Verdict::Unknown { limit: 1000 });
        // With room for all, the easy keys are decided.
        let roomy = check_history(&keys, 1000, usize::MAX);
        assert_eq!(roomy[3].verdict, Verdict::Linearizable);
    }

    #[test]
    fn the_history_file_is_read_per_key_and_failed_operations_are_dropped() {
        let lines = [
            r#"{"client":0,"op":"put","key":"k1","value":"a","invoke_us":1,"complete_us":2,"outcome":"ok"}"#,
            r#"{"client":0,"op":"put","key":"k1","value":"b","invoke_us":3,"complete_us":4,"outcome":"unknown"}"#,
            r#"{"client":1,"op":"get","key":"k2","value":null,"invoke_us":1,"complete_us":2,"outcome":"ok"}"#,
            r#"{"client":1,"op":"get","key":"k2","value":null,"invoke_us":3,"complete_us":9,"outcome":"fail"}"#,
            r#"{"client":1,"op":"delete","key":"k2","value":null,"invoke_us":5,"complete_us":6,"outcome":"ok"}"#,
            r#"{"client":2,"op":"cas","key":"k3","value":"b","expected":"a","invoke_us":1,"complete_us":2,"outcome":"refused"}"#,
            r#"{"client":2,"op":"cas","key":"k3","value":"c","invoke_us":3,"complete_us":4,"outcome":"unknown"}"#,
            // A refused transfer: its other key's compare may be the one that failed, so it
            // says nothing of k4's value, and is dropped.
            r#"{"client":3,"op":"cas","key":"k4","value":"1:t","invoke_us":1,"complete_us":2,"outcome":"refused","txn":1}"#,
        ]
        .join("\n");
        let keys = registers(&crate::history::read_history(lines.as_bytes()).unwrap());
        assert!(!keys.contains_key("k4"), "{keys:?}");
        assert_eq!(keys["k1"].len(), 2);
        assert_eq!(keys["k1"][1].complete_us, None);
        assert_eq!(keys["k2"].len(), 2);
        assert_eq!(keys["k2"][1].action, Action::Write { value: None });
        assert_eq!(
            keys["k3"][0].action,
            Action::Cas {
                expected: Some("a".to_owned()),
                value: "b".to_owned(),
                swapped: Some(false)
            }
        );
        assert_eq!(keys["k3"][0].complete_us, Some(2));
        assert_eq!(
            (&keys["k3"][1].action, keys["k3"][1].complete_us),
            (
                &Action::Cas {
                    expected: None,
                    value: "c".to_owned(),
                    swapped: None
                },
                None
            )
        );
        let bad = crate::history::read_history(r#"{"client":0}"#.as_bytes()).unwrap_err();
        assert!(bad.starts_with("history line 1:"), "{bad}");
        let cas = r#"{"client":0,"op":"cas","key":"k","value":null,"invoke_us":1,"complete_us":2,"outcome":"ok"}"#;
        let bad = crate::history::read_history(cas.as_bytes()).unwrap_err();
        assert!(bad.contains("a cas without a value"), "{bad}");
    }
}
