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
//! Times here are the node's monotonic clock, and only their differences reach the database
//! ("the node last reached you this long ago"), so a node whose wall clock is off still names
//! the right moment on the database's clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Contact {
    origin: Instant,
    /// When the last database call that got an answer ended, in ms since `origin`.
    answered_ms: AtomicU64,
    /// Whether a refresh is due: what every database call checks first, without the lock.
    due: AtomicBool,
    lost: Mutex<Option<Lost>>,
}

/// The loss a refresh is due for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    /// `answered_ms` when the database was found lost; the earliest, if it was found lost
    /// again before the refresh.
    at_ms: u64,
    /// Counts the losses found, so that a refresh that ran before the latest one does not
    /// settle it.
    losses: u64,
}

impl Default for Contact {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            answered_ms: AtomicU64::new(0),
            due: AtomicBool::new(false),
            lost: Mutex::new(None),
        }
    }
}

/// A refresh that is due: how long ago this node last reached the database before it lost
/// it, and what [`Contact::settled`] takes once the refresh has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsettled {
    pub since: Duration,
    lost: Lost,
}

impl Contact {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A database call got an answer (an error the database itself gave counts: it was
    /// there to give it).
    pub fn answered(&self) {
        self.answered_ms.fetch_max(self.now_ms(), Ordering::AcqRel);
    }

    /// The database was found unreachable: a refresh is due, for the leases that were live
    /// when this node last reached it.
    pub fn lost(&self) {
        let last = self.answered_ms.load(Ordering::Acquire);
        let Ok(mut slot) = self.lost.lock() else {
            return;
        };
        *slot = Some(match *slot {
            None => Lost {
                at_ms: last,
                losses: 1,
            },
            Some(lost) => Lost {
                at_ms: lost.at_ms.min(last),
                losses: lost.losses + 1,
            },
        });
        self.due.store(true, Ordering::Release);
    }

    /// The refresh that is due, if any.
    pub fn unsettled(&self) -> Option<Unsettled> {
        if !self.due.load(Ordering::Acquire) {
            return None;
        }
        let lost = (*self.lost.lock().ok()?)?;
        Some(Unsettled {
            since: Duration::from_millis(self.now_ms().saturating_sub(lost.at_ms)),
            lost,
        })
    }

    /// The refresh `done` stood for has committed. A loss found since keeps a refresh due.
    pub fn settled(&self, done: Unsettled) {
        let Ok(mut slot) = self.lost.lock() else {
            return;
        };
        if *slot == Some(done.lost) {
            *slot = None;
            self.due.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_covers_the_leases_live_at_the_last_contact_before_the_loss() {
        let contact = Contact::default();
        assert_eq!(contact.unsettled(), None);
        std::thread::sleep(Duration::from_millis(20));
        contact.answered();
        std::thread::sleep(Duration::from_millis(30));
        contact.lost();
        // Calls that answer after the loss (the database is back) do not move the cut-off.
        contact.answered();
        let due = contact.unsettled().unwrap();
        assert!(due.since >= Duration::from_millis(30), "{due:?}");
        // A second loss before the refresh keeps the earlier last contact.
        contact.lost();
        let again = contact.unsettled().unwrap();
        assert_eq!(again.lost.at_ms, due.lost.at_ms);
        contact.settled(again);
        assert_eq!(contact.unsettled(), None);
        // A loss found while a refresh ran keeps a refresh due.
        contact.lost();
        let due = contact.unsettled().unwrap();
        contact.lost();
        contact.settled(due);
        assert!(contact.unsettled().is_some());
    }
}
