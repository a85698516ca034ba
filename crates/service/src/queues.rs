//! Queues (SQS standard queues): the service's side. Inputs are checked by the caller (the SQS
//! API maps SQS's parameters and errors); here a queue is looked up, messages are stored durably
//! before a send is answered, and a receive waits for messages up to its wait time (long
//! polling). Waiting receives cost nothing while nothing comes: per queue with waiters, one
//! watcher task looks every [`RECHECK`] with a read (for sends through other servers of a
//! cluster, delays that ended, visibility timeouts that ran out) and wakes one waiter when
//! there is something to receive; a send on this server wakes one at once. A woken waiter that
//! got messages wakes the next, so many waiters never all rush one message. At most
//! [`MAX_LONG_POLLS`] receives wait at once per server; past that a receive answers at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use gust_core::queue::{NewMessage, Queue, QueueAttributes, QueueCounts, Received, Sent};
use gust_store::queues::MoveTask;
use gust_store::Kind;

use crate::{Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// How often a queue's watcher looks for messages while receives wait on it.
const RECHECK: Duration = Duration::from_millis(250);
/// Receives waiting at once on one server.
pub(crate) const MAX_LONG_POLLS: usize = 4096;

/// The waiting receives of each queue (by queue id) and their watchers.
#[derive(Default)]
pub(crate) struct Waits {
    queues: parking_lot::Mutex<HashMap<String, Arc<Wait>>>,
}

#[derive(Default)]
struct Wait {
    notify: Notify,
    waiters: AtomicUsize,
    /// A watcher task runs for it.
    watched: AtomicBool,
}

impl Waits {
    /// Wakes one receive waiting on `queue_id`, if any.
    fn wake(&self, queue_id: &str) {
        if let Some(w) = self.queues.lock().get(queue_id) {
            w.notify.notify_one();
        }
    }
}
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

    /// Redrives dead letters (SQS's message move task): what is visible in `source` now goes
    /// to `destination`, or each message back to the queue it came from, in transactions of
    /// 1,000 (a crash leaves each message on one side, never both), then the task is recorded
    /// as completed. `MaxNumberOfMessagesPerSecond` is not kept to: the move runs at once.
    pub async fn move_messages(&self, source: &Queue, destination: Option<&Queue>) -> Result<MoveTask> {
        let started_at = self.clock.now();
        let to_move = self.store.queue_counts(&source.id, started_at).await?.visible;
        let mut moved = 0;
        while moved < to_move {
            let now = self.clock.now();
            let n = self.store.move_back(&source.id, destination.map(|d| d.id.as_str()), 1_000, now).await?;
            if n == 0 {
                break;
            }
            moved += n;
        }
        if let Some(d) = destination {
            self.queue_waits.wake(&d.id);
        }
        let task = MoveTask {
            handle: uuid::Uuid::new_v4().to_string(),
            source: source.name.clone(),
            destination: destination.map(|d| d.name.clone()),
            moved,
            to_move,
            started_at,
        };
        self.store.record_move_task(task.clone()).await?;
        Ok(task)
    }

    pub async fn move_tasks(&self, source: &Queue) -> Result<Vec<MoveTask>> {
        Ok(self.store.move_tasks(&source.name, 10).await?)
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
    /// Stores messages (each with its delay in seconds), all or none; what each became.
    pub async fn send_messages(&self, queue: &Queue, messages: Vec<(NewMessage, u32)>) -> Result<Vec<Sent>> {
        let now = self.clock.now();
        let expires_at = now + i64::from(queue.attributes.message_retention_period) * 1000;
        let messages: Vec<NewMessage> = messages
            .into_iter()
            .map(|(m, delay)| NewMessage { visible_at: now + i64::from(delay) * 1000, ..m })
            .collect();
        let sent = self.store.send_messages(&queue.id, messages, now, expires_at).await?;
        self.queue_waits.wake(&queue.id);
        Ok(sent)
    }

    /// Receives up to `max` messages, hidden for `visibility` seconds once received, waiting up
    /// to `wait` for the first to be there.
    pub async fn receive_messages(
        self: &Arc<Self>, queue: &Queue, max: usize, visibility: u32, wait: Duration,
    ) -> Result<Vec<Received>> {
        let visibility_ms = i64::from(visibility) * 1000;
        let slot =
            if wait.is_zero() || self.is_shutting_down() { None } else { self.long_polls.try_acquire().ok() };
        if slot.is_none() {
            return Ok(self.store.receive_messages(queue, max, visibility_ms, self.clock.now()).await?);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let w = self.wait_on(queue);
        let _waiting = Waiting(w.clone());
        loop {
            // Listening before looking: a send in between is not missed.
            let woken = w.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let got = self.store.receive_messages(queue, max, visibility_ms, self.clock.now()).await?;
            if !got.is_empty() {
                // There may be more: the next waiter looks.
                w.notify.notify_one();
                return Ok(got);
            }
            if tokio::time::Instant::now() >= deadline || self.is_shutting_down() {
                return Ok(got);
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    /// The wait of `queue`, counted as one more waiter; its watcher started if it had none.
    fn wait_on(self: &Arc<Self>, queue: &Queue) -> Arc<Wait> {
        let mut queues = self.queue_waits.queues.lock();
        let w = queues.entry(queue.id.clone()).or_default().clone();
        w.waiters.fetch_add(1, Ordering::SeqCst);
        if !w.watched.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().watch(queue.id.clone(), w.clone()));
        }
        w
    }

    /// Looks for messages every [`RECHECK`] while receives wait on the queue, and wakes one
    /// when there is something to receive.
    async fn watch(self: Arc<Self>, queue_id: String, w: Arc<Wait>) {
        loop {
            tokio::time::sleep(RECHECK).await;
            {
                let mut queues = self.queue_waits.queues.lock();
                if w.waiters.load(Ordering::SeqCst) == 0 {
                    if queues.get(&queue_id).is_some_and(|x| Arc::ptr_eq(x, &w)) {
                        queues.remove(&queue_id);
                    }
                    w.watched.store(false, Ordering::SeqCst);
                    return;
                }
            }
            if let Ok(true) = self.store.any_visible(&queue_id, self.clock.now()).await {
                w.notify.notify_one();
            }
        }
    }

    /// Deletes a received message; `false` if `receipt` is not its current receipt (it was
    /// received again since, or deleted): as SQS, that is not an error.
    pub async fn delete_message(&self, queue: &Queue, message_id: &str, receipt: &str) -> Result<bool> {
        Ok(self.store.delete_message(&queue.id, message_id, receipt).await?)
    }

    /// Deletes received messages (each by its current receipt) in one store transaction.
    pub async fn delete_messages(&self, queue: &Queue, messages: Vec<(String, String)>) -> Result<Vec<bool>> {
        Ok(self.store.delete_messages(&queue.id, messages).await?)
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
            self.queue_waits.wake(&queue.id);
        }
        Ok(changed)
    }
}

/// One waiting receive, counted while it lives.
struct Waiting(Arc<Wait>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
