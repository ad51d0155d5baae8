//! Fails database calls fast while the database is known to be down, and finds out by itself
//! when it is back.
//!
//! Without it every request during an outage waits the whole `--db-timeout` (the pool keeps
//! retrying the connection) before its 503, so clients pile up behind a database that cannot
//! answer. Once one call has found the database unavailable, later calls get their 503 at
//! once, and a single probe checks the database every [`PROBE_INTERVAL`] until it answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;

/// How often the probe retries while the database is down: the bound on how long the node
/// keeps refusing after the database is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Breaker {
    /// True while calls should fail without trying.
    open: AtomicBool,
    /// True while a probe task runs; there is at most one.
    probing: AtomicBool,
}

impl Breaker {
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
                tokio::time::sleep(PROBE_INTERVAL).await;
                let answered = tokio::time::timeout(timeout, store.current_revision()).await;
                if matches!(answered, Ok(Ok(_))) {
                    breaker.open.store(false, Ordering::Release);
                    breaker.probing.store(false, Ordering::Release);
                    tracing::info!("database reachable again");
                    return;
                }
            }
        });
    }
}
