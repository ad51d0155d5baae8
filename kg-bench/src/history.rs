//! The history a run records (`--record`), owned here and read by every judge: one JSON line
//! per operation, with the revision the node answered and when it was invoked and completed.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::workload::Op;

/// How an operation ended, as the history records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryOutcome {
    Ok,
    /// Certainly had no effect.
    Fail,
    /// A CAS whose precondition did not hold (412), or a transaction whose compares did not:
    /// it ran, and changed nothing.
    Refused,
    /// A write that may have been applied: a timeout, a broken connection or a 5xx.
    Unknown,
}

/// One operation as the history records it (`--record`) and `check` reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub client: usize,
    pub op: Op,
    pub key: String,
    /// The value written (put, cas), or read (get; `null` for a missing key).
    pub value: Option<String>,
    /// A cas's expected value, as its GET read it; absent when the key was missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The revision the node answered with: the write's, or the value's that a get read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Microseconds since the run started, on the monotonic clock.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: HistoryOutcome,
    /// What went wrong, as the report counts it (`status_503`, `timeout`, `connect`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The node that answered (X-KeyGrid-Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How many keys a prefix delete deleted. With none its revision is not its own but the
    /// current one, which the node reports without using a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// The transaction this entry is a part of, numbered per client: the gets of one read of
    /// several keys at one revision, or the CASes of one transfer, share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<u64>,
    /// The `Idempotency-Key` the write was sent with. Every attempt of one write carries the
    /// same key: a retry must get the first attempt's answer, not apply again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A re-send of a write (same `idempotency_key`), not a write of its own: the judges
    /// see the attempts of one write as that one write (`fold_retries`), and
    /// `judge::retries_applied_twice` checks that the retry did not apply again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
    /// The revision a read was made at, where the node said (a transaction's). Recorded, not
    /// yet judged: a lease ends by the clock, not at a revision, so two reads at one revision
    /// may rightly differ on a leased key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_revision: Option<i64>,
}

impl HistoryEntry {
    /// A PUT, CAS or DELETE: an operation that may change the store.
    pub fn is_write(&self) -> bool {
        self.op != Op::Get
    }

    /// A write the node acknowledged (2xx): it must be in the store.
    pub fn is_acknowledged_write(&self) -> bool {
        self.is_write() && self.outcome == HistoryOutcome::Ok
    }

    /// The value this write left behind: `None` for a delete.
    pub fn written_value(&self) -> Option<&str> {
        match self.op {
            Op::Delete | Op::DeletePrefix => None,
            _ => self.value.as_deref(),
        }
    }
}

/// The history with each retried write folded into one operation, as the other judges must
/// see it: a retry that the node replays changes nothing, so it is no write of its own.
///
/// The attempts of one write share its `idempotency_key` (and, in a transfer, its key).
/// - The first attempt was answered 200, 404 or 412 (`replayable`): the node keeps that
///   answer for the key, every retry must get it back (`judge::retries_applied_twice`
///   checks), and the write is the first attempt alone.
/// - Its answer was lost (unknown outcome): the first retry answered 2xx or 412 says what the
///   write did, and the write spans from the first attempt's call to that answer. Without
///   one it stays unknown, which already lets it apply at any time after its call.
/// - It certainly had no effect and the node kept no answer (another 4xx, no connection):
///   the retry is a write of its own.
pub fn fold_retries(history: &[HistoryEntry]) -> Vec<HistoryEntry> {
    use std::collections::HashMap;
    if history.iter().all(|entry| !entry.retry) {
        return history.to_vec();
    }
    let attempt = |entry: &HistoryEntry| {
        entry
            .idempotency_key
            .as_deref()
            .map(|id| (id.to_owned(), entry.key.clone()))
    };
    let firsts: HashMap<(String, String), &HistoryEntry> = history
        .iter()
        .filter(|entry| !entry.retry)
        .filter_map(|entry| attempt(entry).map(|id| (id, entry)))
        .collect();
    // The first retry answered 2xx or 412, per write.
    let mut answers: HashMap<(String, String), &HistoryEntry> = HashMap::new();
    for entry in history.iter().filter(|entry| {
        entry.retry && matches!(entry.outcome, HistoryOutcome::Ok | HistoryOutcome::Refused)
    }) {
        if let Some(id) = attempt(entry) {
            let slot = answers.entry(id).or_insert(entry);
            if entry.invoke_us < slot.invoke_us {
                *slot = entry;
            }
        }
    }
    let mut folded = Vec::with_capacity(history.len());
    for entry in history {
        let id = attempt(entry);
        if entry.retry {
            let first = id.as_ref().and_then(|id| firsts.get(id));
            if first
                .is_some_and(|first| first.outcome == HistoryOutcome::Unknown || replayable(first))
            {
                continue;
            }
            folded.push(HistoryEntry {
                retry: false,
                ..entry.clone()
            });
            continue;
        }
        let answer = id.as_ref().and_then(|id| answers.get(id));
        match answer {
            Some(answer) if entry.outcome == HistoryOutcome::Unknown => folded.push(HistoryEntry {
                outcome: answer.outcome,
                revision: answer.revision,
                deleted: answer.deleted,
                error: None,
                node: answer.node.clone(),
                complete_us: answer.complete_us,
                ..entry.clone()
            }),
            _ => folded.push(entry.clone()),
        }
    }
    folded
}

/// Whether the node kept `first`'s answer for its idempotency key, for every retry to get
/// back: a 200, a 404 or a 412 (docs/api.md), a refused transfer being a 200.
pub fn replayable(first: &HistoryEntry) -> bool {
    match first.outcome {
        HistoryOutcome::Ok | HistoryOutcome::Refused => true,
        // A 404 is the one failure recorded without an error kind.
        HistoryOutcome::Fail => first.error.is_none(),
        HistoryOutcome::Unknown => false,
    }
}

/// The history as the judges read it: each prefix delete becomes a delete of every key of the
/// history under its prefix, with the prefix delete's revision, times and outcome. To a key
/// it is exactly that (a delete of a key that does not exist changes nothing), and a key
/// no other operation names can be neither read nor lost. The deletes of one prefix delete
/// share its client and invocation time, which is how `judge::reused_revisions` knows them
/// for one commit.
pub fn expand_prefix_deletes(history: &[HistoryEntry]) -> Vec<HistoryEntry> {
    if history.iter().all(|entry| entry.op != Op::DeletePrefix) {
        return history.to_vec();
    }
    let keys: std::collections::BTreeSet<&str> = history
        .iter()
        .filter(|entry| entry.op != Op::DeletePrefix)
        .map(|entry| entry.key.as_str())
        .collect();
    let mut expanded = Vec::with_capacity(history.len());
    for entry in history {
        if entry.op != Op::DeletePrefix {
            expanded.push(entry.clone());
            continue;
        }
        let under = keys
            .range(entry.key.as_str()..)
            .take_while(|key| key.starts_with(entry.key.as_str()));
        expanded.extend(under.map(|key| HistoryEntry {
            op: Op::Delete,
            key: (*key).to_owned(),
            value: None,
            ..entry.clone()
        }));
    }
    expanded
}

/// Reads a recorded history (JSON lines; blank lines are skipped).
pub fn read_history(reader: impl BufRead) -> Result<Vec<HistoryEntry>, String> {
    let mut entries = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(|err| format!("cannot read the history: {err}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: HistoryEntry = serde_json::from_str(&line)
            .map_err(|err| format!("history line {}: {err}", number + 1))?;
        if entry.op == Op::Cas && entry.value.is_none() {
            return Err(format!(
                "history line {}: a cas without a value",
                number + 1
            ));
        }
        if entry.op == Op::Txn {
            return Err(format!(
                "history line {}: a txn is recorded as the gets and CASes it is made of",
                number + 1
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads the history in a file.
pub fn read_history_file(path: &std::path::Path) -> Result<Vec<HistoryEntry>, String> {
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    read_history(std::io::BufReader::new(file)).map_err(|err| format!("{}: {err}", path.display()))
}
