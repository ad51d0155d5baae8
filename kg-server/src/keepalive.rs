//! Keep-alives in batches: one task per node gathers the keep-alives that arrive within a short
//! window and renews them all with one statement, so that thousands of clients keeping leases
//! alive cost the database one statement (and one commit) per window rather than one each.
//!
//! A keep-alive's answer can wait tens of milliseconds: clients send one every third of the
//! TTL, and a TTL is at least a second. What it must not do is tell a client that its lease is
//! alive before the renewal has committed, so every waiter is answered only from the
//! statement's own result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kg_api::LeaseGrant;
use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError};
use crate::writer::WriteError;

/// The most keep-alives one statement renews; a bound on its size and on how long it runs.
pub const MAX_BATCH: usize = 1024;

/// A renewal's answer: the lease's full TTL again, `None` once it has expired or been revoked.
type Renewed = Result<Option<LeaseGrant>, Arc<StoreError>>;

/// Hands keep-alives to the node's batching task.
#[derive(Debug, Clone)]
pub struct KeepAlives {
    queue: mpsc::Sender<(i64, oneshot::Sender<Renewed>)>,
}

impl KeepAlives {
    /// Starts the batching task; it runs until every `KeepAlives` clone is dropped. `window` is
    /// how long a batch waits, from its first keep-alive, for more to join it.
    pub fn spawn(store: Arc<dyn Store>, window: Duration) -> Self {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(store, window, receiver));
        Self { queue }
    }

    /// Renews lease `id` with the next batch and waits for that batch to commit.
    pub async fn renew(&self, id: i64) -> Result<Option<LeaseGrant>, WriteError> {
        let (reply, renewed) = oneshot::channel();
        self.queue
            .send((id, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        match renewed.await {
            Ok(result) => result.map_err(WriteError::Store),
            Err(_) => Err(WriteError::Stopped),
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    window: Duration,
    mut receiver: mpsc::Receiver<(i64, oneshot::Sender<Renewed>)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => batch.push(next),
                // The window closed, or every sender is gone: renew what there is.
                Ok(None) | Err(_) => break,
            }
        }
        // A client that gave up (its request was cancelled) needs no renewal; skipping it keeps
        // a burst of abandoned requests from costing a statement.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("kg_keepalive_batch_size").record(batch.len() as f64);
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        match store.lease_keepalive(&ids).await {
            Ok(grants) => {
                let grants: HashMap<i64, LeaseGrant> =
                    grants.into_iter().map(|grant| (grant.id, grant)).collect();
                for (id, reply) in batch.drain(..) {
                    let _ = reply.send(Ok(grants.get(&id).copied()));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
