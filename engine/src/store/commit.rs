//! Group commit: many writers wait for one flush.
//!
//! A writer finishes its sled writes, then calls [`GroupCommit::commit`], which queues a
//! waiter. The committer task takes every queued waiter, runs one flush, and answers them
//! all. Writers that arrive during a flush wait for the next one, so the batch grows with
//! the load and an idle engine flushes at once.

use crate::config::Durability;
use crate::metrics::Metrics;
use crate::store::StoreError;
use prometheus::{Histogram, IntCounter};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the committer task.
#[derive(Clone)]
pub struct GroupCommit {
    tx: Option<mpsc::UnboundedSender<Waiter>>,
}

impl GroupCommit {
    /// Starts the committer for `db`; with [`Durability::Os`] no flush is awaited.
    pub fn start(db: sled::Db, durability: Durability, metrics: &Metrics) -> GroupCommit {
        if durability == Durability::Os {
            return GroupCommit { tx: None };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            db,
            rx,
            metrics.commit_duration.clone(),
            metrics.commit_batch.clone(),
            metrics.store_errors.with_label_values(&["flush"]),
        ));
        GroupCommit { tx: Some(tx) }
    }

    /// Waits for a flush that covers every write completed before this call.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when that flush failed or the committer is gone.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (done, wait) = oneshot::channel();
        tx.send(done)
            .map_err(|_| StoreError::Sled("store committer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Sled("store committer stopped".into()))?
    }
}

async fn run(
    db: sled::Db,
    mut rx: mpsc::UnboundedReceiver<Waiter>,
    duration: Histogram,
    batch_size: Histogram,
    errors: IntCounter,
) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 65_536).await > 0 {
        let started = Instant::now();
        let result = db.flush_async().await.map(|_| ()).map_err(StoreError::from);
        duration.observe(started.elapsed().as_secs_f64());
        batch_size.observe(batch.len() as f64);
        if let Err(e) = &result {
            errors.inc();
            error!(error = %e, waiting = batch.len(), "Store flush failed; answering the waiting messages negatively.");
        }
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}
