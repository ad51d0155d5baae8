//! Fails database calls fast while the database is known to be down, and finds out by itself
//! when it is back.
//!
//! Without it every request during an outage waits the whole `--db-timeout` (the pool keeps
//! retrying the connection) before its 503, so clients pile up behind a database that cannot
//! answer. Once one call has found the database unavailable, later calls get their 503 at
//! once, and a single probe checks the database at once, then every [`PROBE_INTERVAL`], until
//! it answers.
//!
//! The first probe goes at once because a call can also time out when the node itself
//! stalled: a node stopped for 7 s (SIGSTOP, a frozen VM) finds the `--db-timeout` of every
//! call it had in flight long past when it resumes, while the database is fine. Waiting a
//! whole interval before the first probe then turned away a whole probe interval of good
//! requests (docs/reliability.md has the drill that showed it).
//!
//! A call that fails does not show that the database went away: a read may run past
//! `--db-timeout` by its own cost, or wait for a pool that slow reads hold. Only when a probe
//! fails, and a connection of its own cannot read from the database within
//! [`REACHABLE_TIMEOUT`] either, does the node count the database as lost
//! ([`Contact::lost`]), which makes it refresh the leases once it is back. That check runs
//! beside the probe, so that a slow answer to it never holds up the probe that closes the
//! breaker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::contact::Contact;
use crate::store::Store;

/// How often the probe retries while the database is down: the bound on how long the node
/// keeps refusing after the database is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// How long a connection of its own has to read from the database before the database
/// counts as lost (or `--db-timeout`, if longer). Well past what load alone makes a new
/// connection wait: a database that cannot open a session and answer one trivial read in
/// that long takes no keep-alive either.
pub const REACHABLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Breaker {
    /// True while calls should fail without trying.
    open: AtomicBool,
    /// True while a probe task runs; there is at most one.
    probing: AtomicBool,
    /// True while a check of [`Breaker::suspect`] runs; there is at most one.
    checking: AtomicBool,
    /// Told when the database is found unreachable.
    contact: Arc<Contact>,
}

impl Breaker {
    /// A closed breaker that tells `contact` when the database is found lost.
    pub fn new(contact: Arc<Contact>) -> Self {
        Self {
            contact,
            ..Self::default()
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Called when a call found the database unavailable: opens the breaker and starts the
    /// probe unless one is running. `timeout` bounds each probe.
    pub fn trip(self: &Arc<Self>, store: Arc<dyn Store>, timeout: Duration) {
        if !self.open.swap(true, Ordering::AcqRel) {
            metrics::counter!("kg_db_breaker_trips_total").increment(1);
            tracing::warn!("database unavailable; refusing database calls until it answers");
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let breaker = self.clone();
        tokio::spawn(async move {
            loop {
                let answered = tokio::time::timeout(timeout, store.current_revision()).await;
                if matches!(answered, Ok(Ok(_))) {
                    breaker.open.store(false, Ordering::Release);
                    breaker.probing.store(false, Ordering::Release);
                    tracing::info!("database reachable again");
                    return;
                }
                breaker.suspect(store.clone(), timeout);
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }
}

impl Breaker {
    /// Called when a database call failed in a way that an outage would explain: checks, on a
    /// connection of its own and unless a check is running already, whether the database can
    /// be reached at all, and tells the contact that it was lost if not. `timeout` is the
    /// node's `--db-timeout`.
    pub fn suspect(self: &Arc<Self>, store: Arc<dyn Store>, timeout: Duration) {
        if self
            .checking
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.contact.suspect(true);
        let breaker = self.clone();
        tokio::spawn(async move {
            let bound = timeout.max(REACHABLE_TIMEOUT);
            let reached = tokio::time::timeout(bound, store.reachable()).await;
            if !matches!(reached, Ok(Ok(()))) {
                breaker.contact.lost();
            }
            breaker.contact.suspect(false);
            breaker.checking.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, ConnectOptions};

    /// A call that timed out while the database is fine (the node itself stalled) costs no
    /// more than the first probe's round trip, not a whole PROBE_INTERVAL of refusals.
    #[tokio::test]
    async fn a_breaker_tripped_while_the_database_answers_closes_at_the_first_probe() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keygrid.db").display());
        let options = ConnectOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            read_fence: false,
        };
        let store = store::connect(&url, &options).await.unwrap();
        let breaker = Arc::new(Breaker::default());
        let tripped = std::time::Instant::now();
        breaker.trip(store, Duration::from_secs(5));
        assert!(breaker.is_open());
        while breaker.is_open() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            tripped.elapsed() < PROBE_INTERVAL,
            "closed after {:?}: the first probe waited an interval",
            tripped.elapsed()
        );
    }
}
