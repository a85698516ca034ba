//! Group commit for ingest, whatever the backend: concurrent requests that must be durable
//! before their reply (async invocations, key reservations) are gathered into one store batch,
//! so one commit (one fsync) acknowledges many. SQLite batches again in its writer; on
//! PostgreSQL this is what turns one commit per request into one commit per batch.

use std::sync::Arc;

use gust_core::State;
use gust_store::{Inserted, NewInvocation, StoreError};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{Service, ServiceError};

/// Most invocations in one ingest batch.
const INGEST_BATCH: usize = 512;
/// Batches being committed at once.
const INGEST_IN_FLIGHT: usize = 4;
/// Requests waiting to be batched before callers are pushed back on.
const INGEST_QUEUE: usize = 8_192;

type Reply = oneshot::Sender<Result<Inserted, StoreError>>;

pub(crate) struct IngestState {
    tx: mpsc::Sender<(NewInvocation, Reply)>,
    rx: Mutex<Option<mpsc::Receiver<(NewInvocation, Reply)>>>,
}

impl Default for IngestState {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(INGEST_QUEUE);
        IngestState { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Service {
    /// Durably inserts one invocation as part of the next ingest batch.
    pub(crate) async fn insert_one(
        &self, new: NewInvocation,
    ) -> Result<Result<Inserted, StoreError>, ServiceError> {
        if self.ingest.rx.lock().is_some() {
            // The batcher is not running (the service was not started): insert directly.
            let mut out = self.store.insert_invocations(vec![new]).await?;
            return out
                .pop()
                .ok_or_else(|| ServiceError::Internal("the store answered an empty batch".into()));
        }
        let (reply, answer) = oneshot::channel();
        self.ingest
            .tx
            .send((new, reply))
            .await
            .map_err(|_| ServiceError::Unavailable("the server is shutting down".into()))?;
        answer.await.map_err(|_| ServiceError::Unavailable("the ingest batch was abandoned".into()))
    }

    pub(crate) fn take_ingest_rx(&self) -> Option<mpsc::Receiver<(NewInvocation, Reply)>> {
        self.ingest.rx.lock().take()
    }

    pub(crate) async fn ingest_batcher(self: Arc<Self>, mut rx: mpsc::Receiver<(NewInvocation, Reply)>) {
        let in_flight = Arc::new(Semaphore::new(INGEST_IN_FLIGHT));
        loop {
            // Wait for a free commit slot first: while all are busy, requests pile up and the
            // next batch grows.
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < INGEST_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let service = self.clone();
            tokio::spawn(async move {
                let (mut news, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                // Without a local worker, async work is placed as it is inserted (the store
                // announces it to its worker's server); only what stays queued needs the placer.
                let placed = match service.cfg.local_worker {
                    true => Vec::new(),
                    false => service.place_at_ingest(&mut news).await,
                };
                let queued = news.iter().any(|n| n.lifecycle.state == State::Queued);
                match service.store.insert_invocations(news).await {
                    Ok(results) => {
                        for (i, (reply, r)) in replies.into_iter().zip(results).enumerate() {
                            if let (Ok(Inserted::Created), Some(Some(worker))) = (&r, placed.get(i)) {
                                service.polls.wake(worker);
                            }
                            let _ = reply.send(r);
                        }
                        if queued && !service.cfg.local_worker {
                            service.placement_wake.notify_one();
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
                drop(permit);
            });
        }
    }
}
