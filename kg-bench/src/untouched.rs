//! Reads of keys that no write touches, made beside a drill's load: how many of them a fault
//! leaves unanswered while the store cannot take writes, and whether any answer was wrong.
//!
//! A cluster whose database fails over can still serve keys nobody is writing from its cache;
//! the data tier's drills hold it to that (`chaos::Scenario::untouched_bar`).

use std::time::{Duration, Instant};

use serde::Serialize;

/// Under no prefix of the load's (`workload::DEFAULT_KEY_PREFIX`), so that neither its writes
/// nor its prefix deletes nor the state the judge reads back include these keys.
pub const PREFIX: &str = "untouched/";
const KEYS: usize = 20;
/// One read at a time, this far apart: enough reads in a failover's few seconds for a bar of
/// 99.9% to mean that none failed, at a rate that adds little to the load.
const INTERVAL: Duration = Duration::from_millis(20);

/// What the untouched keys' reads met during a window of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UntouchedReads {
    /// The window, in seconds since the run started: from the fault to the load's last
    /// failed request or its first write acknowledged again, whichever is later (or to the
    /// repair, when neither comes after it).
    pub window_s: (f64, f64),
    /// Reads sent during the window.
    pub during: u64,
    /// Of those, answered with the key's value.
    pub answered: u64,
    /// Answered with another value, or none: no write touched the keys, so this is a lost or
    /// stale read, whenever it happened.
    pub wrong: u64,
    /// Examples of the wrong answers, over the whole run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wrong_examples: Vec<String>,
}

impl UntouchedReads {
    /// The share of the window's reads answered; 1 when none were sent.
    pub fn answered_ratio(&self) -> f64 {
        if self.during == 0 {
            1.0
        } else {
            self.answered as f64 / self.during as f64
        }
    }
}

/// One read: when it was sent (seconds since the run started) and what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub at_s: f64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Right,
    /// Answered, with this instead of the key's value.
    Wrong(String),
    /// No answer: an error status, a timeout, a refused connection.
    Failed,
}

/// The key and value of untouched key `i`.
fn key_value(i: usize) -> (String, String) {
    (format!("{PREFIX}{i}"), format!("untouched value {i}"))
}

/// Writes the untouched keys; each write also puts its key in the nodes' cache.
pub async fn seed(client: &kg_api::Client) -> Result<(), String> {
    for i in 0..KEYS {
        let (key, value) = key_value(i);
        client
            .put(&key, &value, kg_api::Precondition::None)
            .await
            .map_err(|err| format!("cannot write untouched key {key}: {err}"))?;
    }
    Ok(())
}

/// Reads the untouched keys in turn, one at a time, until `until`.
pub async fn read_until(client: &kg_api::Client, origin: Instant, until: Instant) -> Vec<Read> {
    let mut reads = Vec::new();
    let mut next = Instant::now();
    for i in (0..KEYS).cycle() {
        if Instant::now() >= until {
            break;
        }
        let (key, value) = key_value(i);
        let at_s = origin.elapsed().as_secs_f64();
        let outcome = match client.get(&key).await {
            Ok(read) if read.value == value => Outcome::Right,
            Ok(read) => Outcome::Wrong(format!("{key}: {:?}", read.value)),
            Err(kg_api::Error::NotFound { .. }) => Outcome::Wrong(format!("{key}: not found")),
            Err(_) => Outcome::Failed,
        };
        reads.push(Read { at_s, outcome });
        next += INTERVAL;
        tokio::time::sleep_until(next.max(Instant::now()).into()).await;
    }
    reads
}

/// Counts `reads` sent within `window` (seconds since the run started); wrong answers count
/// wherever they fell.
pub fn tally(reads: &[Read], window: (f64, f64)) -> UntouchedReads {
    let inside = |read: &&Read| read.at_s >= window.0 && read.at_s <= window.1;
    let wrong: Vec<String> = reads
        .iter()
        .filter_map(|read| match &read.outcome {
            Outcome::Wrong(what) => Some(format!("{what} at {:.2} s", read.at_s)),
            _ => None,
        })
        .collect();
    UntouchedReads {
        window_s: window,
        during: reads.iter().filter(inside).count() as u64,
        answered: reads
            .iter()
            .filter(inside)
            .filter(|read| read.outcome == Outcome::Right)
            .count() as u64,
        wrong: wrong.len() as u64,
        wrong_examples: wrong.into_iter().take(3).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(at_s: f64, outcome: Outcome) -> Read {
        Read { at_s, outcome }
    }

    #[test]
    fn only_the_windows_reads_count_and_a_wrong_answer_counts_anywhere() {
        let reads = [
            read(1.0, Outcome::Failed),
            read(2.0, Outcome::Right),
            read(2.5, Outcome::Failed),
            read(3.0, Outcome::Right),
            read(9.0, Outcome::Wrong("untouched/1: \"x\"".to_owned())),
        ];
        let tally = tally(&reads, (2.0, 3.0));
        assert_eq!((tally.during, tally.answered, tally.wrong), (3, 2, 1));
        assert!((tally.answered_ratio() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(tally.wrong_examples, ["untouched/1: \"x\" at 9.00 s"]);
        assert_eq!(super::tally(&[], (0.0, 1.0)).answered_ratio(), 1.0);
    }
}
