//! `kg-bench netem`: delay and jitter for the packets that netfilter queues inside network
//! namespaces, where the kernel has no `netem` qdisc. scripts/net.sh sends a host's packets to
//! an NFQUEUE (`-j NFQUEUE --queue-num Q --queue-bypass`); this reader opens queue Q in each
//! namespace it is given, holds every packet for the delay plus a jitter drawn uniformly from
//! [-jitter, +jitter] (as netem does without correlation, so packets may be reordered), and
//! then accepts it.
//!
//! A netlink socket belongs to the namespace it was made in, so one process serves many: the
//! reader enters each namespace in turn (`setns` on its own thread) to open and bind the queue
//! there, and comes back. nfq's queue offers no descriptor to wait on in the released version,
//! so the reader polls every queue without blocking, and sleeps until the next packet is due,
//! at most `POLL` in between: a packet waits at most that much longer than asked.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use nfq::{Message, Queue, Verdict};
use nix::sched::{setns, CloneFlags};

/// The longest the reader sleeps while a packet could be waiting to be read.
const POLL: Duration = Duration::from_micros(200);
/// Packets a queue holds before the kernel (fail-open) lets further ones through undelayed.
const QUEUE_MAX_LEN: u32 = 16_384;

/// What the reader is asked to do.
#[derive(Debug, Clone)]
pub struct Netem {
    /// Namespaces by name (as `ip netns` names them, under /run/netns).
    pub namespaces: Vec<String>,
    pub queue: u16,
    pub delay: Duration,
    pub jitter: Duration,
    pub seed: u64,
}

/// The time one packet is held: `delay` plus a uniform draw from [-jitter, +jitter], never
/// below zero.
pub fn hold(delay: Duration, jitter: Duration, rng: &mut fastrand::Rng) -> Duration {
    let jitter_us = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
    if jitter_us == 0 {
        return delay;
    }
    let draw = rng.u64(0..=2 * jitter_us);
    let delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros((delay_us + draw).saturating_sub(jitter_us))
}

/// Opens the queue in every namespace, prints `ready` to `out`, and holds and accepts packets
/// until the process is killed (or a queue fails).
pub fn run(netem: &Netem, out: &mut dyn Write) -> Result<(), String> {
    let mut queues = open_queues(netem)?;
    writeln!(
        out,
        "ready: queue {} in {} namespace(s), {} ms +/- {} ms",
        netem.queue,
        queues.len(),
        netem.delay.as_secs_f64() * 1000.0,
        netem.jitter.as_secs_f64() * 1000.0
    )
    .and_then(|()| out.flush())
    .map_err(|err| err.to_string())?;
    let mut rng = fastrand::Rng::with_seed(netem.seed);
    // Due time, arrival order (so that equal times keep their order), queue, packet.
    let mut held: BinaryHeap<Reverse<(Instant, u64, usize, Held)>> = BinaryHeap::new();
    let mut arrivals = 0u64;
    loop {
        let now = Instant::now();
        for (index, queue) in queues.iter_mut().enumerate() {
            while let Some(message) = try_recv(queue)? {
                arrivals += 1;
                let due = now + hold(netem.delay, netem.jitter, &mut rng);
                held.push(Reverse((due, arrivals, index, Held(message))));
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Some(Reverse((_, _, index, Held(mut message)))) = held.pop() else {
                break;
            };
            message.set_verdict(Verdict::Accept);
            queues[index]
                .verdict(message)
                .map_err(|err| format!("cannot accept a held packet: {err}"))?;
        }
        let wait = held
            .peek()
            .map_or(POLL, |Reverse((due, ..))| {
                due.saturating_duration_since(now)
            })
            .min(POLL);
        std::thread::sleep(wait);
    }
}

/// A queued packet; ordered by nothing (the heap orders by due time and arrival first).
struct Held(Message);

impl PartialEq for Held {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

fn try_recv(queue: &mut Queue) -> Result<Option<Message>, String> {
    match queue.recv() {
        Ok(message) => Ok(Some(message)),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(format!("cannot read the queue: {err}")),
    }
}

/// Opens and binds the queue in each namespace, from this thread, and comes back to the
/// namespace it started in.
fn open_queues(netem: &Netem) -> Result<Vec<Queue>, String> {
    let home = File::open("/proc/thread-self/ns/net")
        .map_err(|err| format!("cannot open this thread's network namespace: {err}"))?;
    let mut queues = Vec::with_capacity(netem.namespaces.len());
    let mut result = Ok(());
    for name in &netem.namespaces {
        match open_in(name, netem.queue) {
            Ok(queue) => queues.push(queue),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    setns(&home, CloneFlags::CLONE_NEWNET)
        .map_err(|err| format!("cannot return to this thread's network namespace: {err}"))?;
    result.map(|()| queues)
}

fn open_in(name: &str, queue_num: u16) -> Result<Queue, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("{name:?} is not a network namespace's name"));
    }
    let namespace = File::open(format!("/run/netns/{name}"))
        .map_err(|err| format!("no network namespace {name}: {err}"))?;
    setns(&namespace, CloneFlags::CLONE_NEWNET)
        .map_err(|err| format!("cannot enter {name} (root needed): {err}"))?;
    let fail =
        |what: &str, err: std::io::Error| format!("{what} queue {queue_num} in {name}: {err}");
    let mut queue = Queue::open().map_err(|err| fail("cannot open", err))?;
    queue
        .bind(queue_num)
        .map_err(|err| fail("cannot bind", err))?;
    // A full queue lets packets through undelayed rather than dropping them: the fault asked
    // for is delay, and loss has a rule of its own.
    queue
        .set_fail_open(queue_num, true)
        .map_err(|err| fail("cannot set fail-open on", err))?;
    queue
        .set_queue_max_len(queue_num, QUEUE_MAX_LEN)
        .map_err(|err| fail("cannot size", err))?;
    // Only the verdict is needed, not the payload.
    queue
        .set_copy_range(queue_num, 0)
        .map_err(|err| fail("cannot set the copy range of", err))?;
    queue.set_nonblocking(true);
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_held_its_delay_give_or_take_its_jitter_and_never_less_than_nothing() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (delay, jitter) = (Duration::from_millis(20), Duration::from_millis(10));
        let draws: Vec<Duration> = (0..10_000).map(|_| hold(delay, jitter, &mut rng)).collect();
        assert!(draws
            .iter()
            .all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(30)));
        let mean = draws.iter().sum::<Duration>() / 10_000;
        assert!(
            mean > Duration::from_micros(19_500) && mean < Duration::from_micros(20_500),
            "{mean:?}"
        );
        // Both ends are reached: the draw is over the whole range.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(11)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(29)));
        // Without jitter, exactly the delay; a jitter above the delay stops at zero.
        assert_eq!(hold(delay, Duration::ZERO, &mut rng), delay);
        let wide: Vec<Duration> = (0..1000)
            .map(|_| hold(Duration::from_millis(1), Duration::from_millis(5), &mut rng))
            .collect();
        assert!(wide.iter().all(|d| *d <= Duration::from_millis(6)));
        assert!(wide.contains(&Duration::ZERO));
    }

    #[test]
    fn a_namespace_name_cannot_name_another_path() {
        let err = open_in("../../etc", 1).err().unwrap();
        assert!(err.contains("not a network namespace"), "{err}");
    }
}
