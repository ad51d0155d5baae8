//! What a node knows of its contact with the database, for the lease refresh after an outage
//! (`AppState::settle_leases`, [`crate::store::Store::refresh_leases`]).
//!
//! A lease's deadline decides visibility: from it on, every read filters the lease's keys
//! out, whether or not the sweeper has deleted them. So a deadline that has passed must never
//! move again, or a key that a read found gone would come back. The refresh exists for the
//! opposite case: while this node could not reach the database, no keep-alive could land
//! through it, and a lease must not expire for that. The two meet at the last moment this
//! node reached the database before it lost it: a lease still live then was never read as
//! expired through this node, and gets its full TTL back; one whose deadline had passed by
//! then stays expired.
//!
//! Which reads count. Every database call whose answer a client may see counts, whenever it
//! completes: such a read may have found a lease expired, so the cut-off is never before it.
//! The sweeper's own checks count too while nothing is amiss, which keeps the cut-off within
//! a sweep interval of a loss on a node that serves no requests; they stop counting while a
//! loss is suspected or a refresh is due, or the cut-off would move past the outage itself.
//!
//! Times here are the node's monotonic clock, and only their differences reach the database
//! ("the node last reached you this long ago"), so a node whose wall clock is off still names
//! the right moment on the database's clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Contact {
    origin: Instant,
    /// When the last read that counts ended, in ms since `origin`.
    answered_ms: AtomicU64,
    /// Whether a loss of the database is suspected (a check of it runs).
    suspected: AtomicBool,
    /// Whether a refresh is due: what every database call checks first, without the lock.
    due: AtomicBool,
    /// Counts the losses found, so that a refresh that ran before the latest one does not
    /// settle it.
    losses: Mutex<u64>,
}

impl Default for Contact {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            answered_ms: AtomicU64::new(0),
            suspected: AtomicBool::new(false),
            due: AtomicBool::new(false),
            losses: Mutex::new(0),
        }
    }
}

/// A refresh that is due: how long ago this node last reached the database, and what
/// [`Contact::settled`] takes once the refresh has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsettled {
    pub since: Duration,
    losses: u64,
}

impl Contact {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A database call that a client may see the answer of got one (an error the database
    /// itself gave counts: it was there to give it).
    pub fn answered(&self) {
        self.answered_ms.fetch_max(self.now_ms(), Ordering::AcqRel);
    }

    /// One of the node's own reads (the sweeper's check) got an answer: it counts only while
    /// the database is trusted.
    pub fn checked(&self) {
        if !self.suspected.load(Ordering::Acquire) && !self.due.load(Ordering::Acquire) {
            self.answered();
        }
    }

    /// A loss of the database is suspected, and being checked; `false` ends the suspicion.
    pub fn suspect(&self, suspected: bool) {
        self.suspected.store(suspected, Ordering::Release);
    }

    /// The database was found unreachable: a refresh is due, for the leases that were live
    /// when this node last reached it.
    pub fn lost(&self) {
        let Ok(mut losses) = self.losses.lock() else {
            return;
        };
        *losses += 1;
        self.due.store(true, Ordering::Release);
    }

    /// The refresh that is due, if any.
    pub fn unsettled(&self) -> Option<Unsettled> {
        if !self.due.load(Ordering::Acquire) {
            return None;
        }
        let losses = *self.losses.lock().ok()?;
        let answered = self.answered_ms.load(Ordering::Acquire);
        Some(Unsettled {
            since: Duration::from_millis(self.now_ms().saturating_sub(answered)),
            losses,
        })
    }

    /// The refresh `done` stood for has committed. A loss found since keeps a refresh due.
    pub fn settled(&self, done: Unsettled) {
        let Ok(losses) = self.losses.lock() else {
            return;
        };
        if *losses == done.losses {
            self.due.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_covers_the_leases_live_at_the_last_read_that_counts() {
        let contact = Contact::default();
        assert_eq!(contact.unsettled(), None);
        std::thread::sleep(Duration::from_millis(20));
        contact.checked();
        std::thread::sleep(Duration::from_millis(30));
        contact.suspect(true);
        // The sweeper reaching the database while a loss is suspected does not count.
        contact.checked();
        contact.lost();
        contact.suspect(false);
        contact.checked();
        let due = contact.unsettled().unwrap();
        assert!(due.since >= Duration::from_millis(30), "{due:?}");
        // A read a client saw counts whenever it ends: it may have found a lease expired.
        contact.answered();
        let due = contact.unsettled().unwrap();
        assert!(due.since < Duration::from_millis(30), "{due:?}");
        contact.settled(due);
        assert_eq!(contact.unsettled(), None);
        // A loss found while a refresh ran keeps a refresh due.
        contact.lost();
        let due = contact.unsettled().unwrap();
        contact.lost();
        contact.settled(due);
        assert!(contact.unsettled().is_some());
    }
}
