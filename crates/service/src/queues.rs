//! Queues (SQS standard queues): the service's side. Inputs are checked by the caller (the SQS
//! API maps SQS's parameters and errors); here a queue is looked up, messages are stored durably
//! before a send is answered, and a receive waits for messages up to its wait time (long
//! polling): a send on this server wakes the waiting receivers at once, and a waiting receive
//! looks every [`RECHECK`] (a read, no write transaction) for sends on other servers of a
//! cluster, delays that ended and visibility timeouts that ran out.

use std::time::Duration;

use gust_core::queue::{NewMessage, Queue, QueueAttributes, QueueCounts, Received};
use gust_store::Kind;

use crate::{Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// How often a long poll looks for messages sent through other servers.
const RECHECK: Duration = Duration::from_millis(200);
/// How often messages past their retention period are deleted, and how many per batch.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);
const EXPIRY_BATCH: usize = 1000;

impl Service {
    /// Deletes messages past their queue's retention period, in batches, every
    /// [`EXPIRY_INTERVAL`] (a receive also drops the expired messages it comes across).
    pub(crate) async fn message_expirer(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(EXPIRY_INTERVAL).await;
            loop {
                match self.store.expire_messages(self.clock.now(), EXPIRY_BATCH).await {
                    Ok(n) if n as usize == EXPIRY_BATCH => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "deleting expired messages failed; it runs again later");
                        break;
                    }
                }
            }
        }
    }

    pub async fn create_queue(&self, name: &str, attributes: QueueAttributes) -> Result<Queue> {
        gust_core::queue::validate_queue_name(name).map_err(ServiceError::InvalidRequest)?;
        let now = self.clock.now();
        let queue = Queue {
            name: name.to_string(),
            id: uuid::Uuid::now_v7().simple().to_string(),
            attributes,
            created_at: now,
            updated_at: now,
        };
        Ok(self.store.create_queue(queue).await?)
    }

    /// The queue of a name; `NotFound` if there is none.
    pub async fn queue(&self, name: &str) -> Result<Queue> {
        self.store
            .get_queue(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound { kind: Kind::Queue, name: name.to_string() })
    }

    pub async fn list_queues(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Queue>> {
        Ok(self.store.list_queues(prefix, after, limit).await?)
    }

    pub async fn queue_counts(&self, queue: &Queue) -> Result<QueueCounts> {
        Ok(self.store.queue_counts(&queue.id, self.clock.now()).await?)
    }

    pub async fn set_queue_attributes(&self, name: &str, attributes: QueueAttributes) -> Result<Queue> {
        Ok(self.store.set_queue_attributes(name, attributes, self.clock.now()).await?)
    }

    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        Ok(self.store.delete_queue(name).await?)
    }

    pub async fn purge_queue(&self, queue: &Queue) -> Result<u64> {
        Ok(self.store.purge_queue(&queue.id).await?)
    }

    /// Stores messages (all or none) and wakes this server's waiting receivers. `delays` are
    /// each message's delay in seconds.
    pub async fn send_messages(&self, queue: &Queue, messages: Vec<(NewMessage, u32)>) -> Result<()> {
        let now = self.clock.now();
        let expires_at = now + i64::from(queue.attributes.message_retention_period) * 1000;
        let messages: Vec<NewMessage> = messages
            .into_iter()
            .map(|(m, delay)| NewMessage { visible_at: now + i64::from(delay) * 1000, ..m })
            .collect();
        self.store.send_messages(&queue.id, messages, now, expires_at).await?;
        self.queue_wake.notify_waiters();
        Ok(())
    }

    /// Receives up to `max` messages, hidden for `visibility` seconds once received, waiting up
    /// to `wait` for the first to be there.
    pub async fn receive_messages(
        &self, queue: &Queue, max: usize, visibility: u32, wait: Duration,
    ) -> Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut look = true;
        loop {
            let woken = self.queue_wake.notified();
            let now = self.clock.now();
            // A waiting receive looks with a read first; only a find takes the write.
            if look || self.store.any_visible(&queue.id, now).await? {
                let got = self.store.receive_messages(queue, max, i64::from(visibility) * 1000, now).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            if tokio::time::Instant::now() >= deadline || self.is_shutting_down() {
                return Ok(Vec::new());
            }
            let next = (tokio::time::Instant::now() + RECHECK).min(deadline);
            look = tokio::select! {
                _ = woken => true,
                _ = tokio::time::sleep_until(next) => false,
            };
        }
    }

    /// Deletes a received message; `false` if `receipt` is not its current receipt (it was
    /// received again since, or deleted): as SQS, that is not an error.
    pub async fn delete_message(&self, queue: &Queue, message_id: &str, receipt: &str) -> Result<bool> {
        Ok(self.store.delete_message(&queue.id, message_id, receipt).await?)
    }

    /// Hides a received message for `timeout` seconds from now (0: visible at once); `false`
    /// if it is not in flight under `receipt`.
    pub async fn change_visibility(
        &self, queue: &Queue, message_id: &str, receipt: &str, timeout: u32,
    ) -> Result<bool> {
        let now = self.clock.now();
        let visible_at = now + i64::from(timeout) * 1000;
        let changed = self.store.change_visibility(&queue.id, message_id, receipt, visible_at, now).await?;
        if changed && timeout == 0 {
            self.queue_wake.notify_waiters();
        }
        Ok(changed)
    }
}
