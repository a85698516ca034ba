//! Event source mappings: a queue that triggers a function, as Lambda's SQS trigger does.
//!
//! Each server runs, for every enabled mapping, up to its concurrency of pollers. A poller
//! long-polls the queue, gathers a batch (up to `batch_size`, within the batching window),
//! invokes the function synchronously with Lambda's SQS event (`Records[]`), and then deletes
//! the batch if the function succeeded, or, with `ReportBatchItemFailures`, every message but
//! those the function names in `batchItemFailures`. A failed invocation deletes nothing: the
//! messages come back after their visibility timeout, and the queue's redrive policy moves
//! those received too often to its dead-letter queue. Delivery is at least once (a server
//! killed between the invocation and the delete delivers the batch again), as in Lambda.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gust_core::filter::Pattern;
use gust_core::lambda::REGION;
use gust_core::queue::{md5_of_body, queue_arn, receipt_handle, EventSourceMapping, Queue, Received};
use gust_core::Mode;
use gust_store::Kind;
use serde_json::{json, Map, Value};

use crate::{InvokeInput, Invoked, Service, ServiceError, SyncOutcome};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// How often the set of mappings is looked at again.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// A poller's long poll: short enough that a disabled mapping's pollers stop soon.
const POLL_WAIT: Duration = Duration::from_secs(5);
/// A poller's pause after a throttle or an error.
const BACKOFF: Duration = Duration::from_secs(1);

impl Service {
    /// Creates a mapping (its queue and function must exist).
    pub async fn create_mapping(&self, mut m: EventSourceMapping) -> Result<EventSourceMapping> {
        m.validate().map_err(ServiceError::InvalidRequest)?;
        self.queue(&m.queue).await?;
        self.cached_function(&m.function).await?;
        m.uuid = uuid::Uuid::new_v4().to_string();
        m.updated_at = self.clock.now();
        self.store.put_mapping(m.clone()).await?;
        Ok(m)
    }

    pub async fn mapping(&self, uuid: &str) -> Result<EventSourceMapping> {
        self.store
            .get_mapping(uuid)
            .await?
            .ok_or_else(|| ServiceError::NotFound { kind: Kind::EventSourceMapping, name: uuid.to_string() })
    }

    pub async fn list_mappings(&self) -> Result<Vec<EventSourceMapping>> {
        Ok(self.store.mappings().await?)
    }

    /// Replaces a mapping's settings (its uuid and queue stay).
    pub async fn update_mapping(&self, mut m: EventSourceMapping) -> Result<EventSourceMapping> {
        m.validate().map_err(ServiceError::InvalidRequest)?;
        let current = self.mapping(&m.uuid).await?;
        if m.function != current.function {
            self.cached_function(&m.function).await?;
        }
        m.queue = current.queue;
        m.updated_at = self.clock.now().max(current.updated_at + 1);
        self.store.put_mapping(m.clone()).await?;
        Ok(m)
    }

    pub async fn delete_mapping(&self, uuid: &str) -> Result<EventSourceMapping> {
        let m = self.mapping(uuid).await?;
        self.store.delete_mapping(uuid).await?;
        Ok(m)
    }

    /// Keeps every enabled mapping's pollers running with its current settings: started,
    /// restarted on a change, stopped when it is disabled or deleted.
    pub(crate) async fn mapping_supervisor(self: Arc<Self>) {
        let mut running: HashMap<String, (i64, Arc<AtomicBool>)> = HashMap::new();
        loop {
            tokio::time::sleep(SUPERVISE_EVERY).await;
            if self.is_shutting_down() {
                for (_, stop) in running.values() {
                    stop.store(true, Ordering::Relaxed);
                }
                return;
            }
            let Ok(all) = self.store.mappings().await else { continue };
            let wanted: HashMap<&str, &EventSourceMapping> =
                all.iter().filter(|m| m.enabled).map(|m| (m.uuid.as_str(), m)).collect();
            running.retain(|uuid, (version, stop)| {
                let keep = wanted.get(uuid.as_str()).is_some_and(|m| m.updated_at == *version);
                if !keep {
                    stop.store(true, Ordering::Relaxed);
                }
                keep
            });
            for (uuid, m) in wanted {
                if running.contains_key(uuid) {
                    continue;
                }
                let stop = Arc::new(AtomicBool::new(false));
                for _ in 0..m.concurrency() {
                    tokio::spawn(self.clone().mapping_poller(m.clone(), stop.clone()));
                }
                running.insert(uuid.to_string(), (m.updated_at, stop));
            }
        }
    }

    async fn mapping_poller(self: Arc<Self>, m: EventSourceMapping, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.one_batch(&m).await {
                if !matches!(e, ServiceError::Throttled { .. }) {
                    tracing::warn!(mapping = %m.uuid, error = %e, "an event source mapping's batch failed");
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }

    /// Receives one batch, invokes the function with it, deletes what succeeded.
    async fn one_batch(self: &Arc<Self>, m: &EventSourceMapping) -> Result<()> {
        // The mapping's concurrency holds across every server sharing the store: a batch runs
        // under one of its slots (mapping keys hold a `:`, which no function name does).
        let Ok(_slot) = self.cluster_slot(&format!("esm:{}", m.uuid), Some(m.concurrency())).await? else {
            tokio::time::sleep(BACKOFF).await;
            return Ok(());
        };
        let queue = self.queue(&m.queue).await?;
        let visibility = queue.attributes.visibility_timeout;
        let want = m.batch_size as usize;
        let mut batch = self.receive_messages(&queue, want.min(10), visibility, POLL_WAIT).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let window_end =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(m.maximum_batching_window_s));
        while batch.len() < want {
            let left = window_end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let more = self
                .receive_messages(
                    &queue,
                    (want - batch.len()).min(10),
                    visibility,
                    left.min(Duration::from_secs(20)),
                )
                .await?;
            batch.extend(more);
        }
        // Filtered: what no pattern matches is deleted unseen (as Lambda does for SQS).
        if !m.filters.is_empty() {
            let patterns: Vec<Pattern> = m.filters.iter().filter_map(|f| Pattern::parse(f).ok()).collect();
            let records = sqs_records(&queue, &batch);
            let (kept, dropped): (Vec<_>, Vec<_>) =
                batch.into_iter().zip(records).partition(|(_, record)| {
                    let mut matched = record.clone();
                    // The body is matched as JSON when it is JSON.
                    if let Some(json) =
                        record["body"].as_str().and_then(|b| serde_json::from_str::<Value>(b).ok())
                    {
                        matched["body"] = json;
                    }
                    patterns.iter().any(|p| p.matches(&matched))
                });
            let dropped: Vec<(String, String)> =
                dropped.iter().map(|(r, _)| (r.message.id.clone(), r.receipt.clone())).collect();
            if !dropped.is_empty() {
                self.delete_messages(&queue, dropped).await?;
            }
            batch = kept.into_iter().map(|(r, _)| r).collect();
            if batch.is_empty() {
                return Ok(());
            }
        }
        let event = json!({ "Records": sqs_records(&queue, &batch) });
        let input = InvokeInput {
            function: m.function.clone(),
            qualifier: m.qualifier.clone(),
            payload: Bytes::from(event.to_string()),
            mode: Mode::Sync,
            idempotency_key: None,
            client_context: None,
            stream: None,
            http: None,
            trace: None,
        };
        let keep: HashSet<String> = match self.invoke(input).await? {
            Invoked::Completed { outcome: SyncOutcome::Succeeded(out), .. }
                if m.report_batch_item_failures =>
            {
                match failed_items(&out, &batch) {
                    Some(failed) => failed,
                    // A response that names what is not in the batch fails it whole, as Lambda.
                    None => return Ok(()),
                }
            }
            Invoked::Completed { outcome: SyncOutcome::Succeeded(_), .. } => HashSet::new(),
            // The batch comes back after its visibility timeout.
            _ => return Ok(()),
        };
        let done: Vec<(String, String)> = batch
            .iter()
            .filter(|r| !keep.contains(&r.message.id))
            .map(|r| (r.message.id.clone(), r.receipt.clone()))
            .collect();
        if !done.is_empty() {
            self.delete_messages(&queue, done).await?;
        }
        Ok(())
    }
}

/// The ids a function's `{"batchItemFailures": [{"itemIdentifier": ID}]}` names; `None` if it
/// names an id not in the batch or is malformed (the whole batch failed). An answer without
/// the field, or empty, fails nothing.
fn failed_items(out: &[u8], batch: &[Received]) -> Option<HashSet<String>> {
    let v: Value = match serde_json::from_slice(out) {
        Ok(v) => v,
        Err(_) => return Some(HashSet::new()),
    };
    let items = match v.get("batchItemFailures") {
        None | Some(Value::Null) => return Some(HashSet::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return None,
    };
    let ids: HashSet<&str> = batch.iter().map(|r| r.message.id.as_str()).collect();
    items
        .iter()
        .map(|i| {
            i.get("itemIdentifier").and_then(Value::as_str).filter(|id| ids.contains(id)).map(str::to_string)
        })
        .collect()
}

/// The records of Lambda's SQS event (`{"Records": [...]}`) for a batch.
fn sqs_records(queue: &Queue, batch: &[Received]) -> Vec<Value> {
    let arn = queue_arn(&queue.name);
    batch
        .iter()
        .map(|r| {
            let m = &r.message;
            let attributes: Map<String, Value> = m
                .attributes
                .iter()
                .map(|(k, a)| {
                    let mut v =
                        json!({ "stringListValues": [], "binaryListValues": [], "dataType": a.data_type });
                    if let Some(s) = &a.string_value {
                        v["stringValue"] = json!(s);
                    }
                    if let Some(b) = &a.binary_value {
                        v["binaryValue"] = json!(b);
                    }
                    (k.clone(), v)
                })
                .collect();
            let mut record = json!({
                "messageId": m.id,
                "receiptHandle": receipt_handle(&queue.id, &m.id, &r.receipt),
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": m.sent_at.to_string(),
                    "SenderId": gust_core::lambda::ACCOUNT,
                    "ApproximateFirstReceiveTimestamp": m.first_received_at.unwrap_or(m.sent_at).to_string(),
                },
                "messageAttributes": attributes,
                "md5OfBody": md5_of_body(&m.body),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            });
            if let Some(md5) = gust_core::queue::md5_of_attributes(&m.attributes) {
                record["md5OfMessageAttributes"] = json!(md5);
            }
            if let Some((ids, seq)) = &m.fifo {
                record["attributes"]["MessageGroupId"] = json!(ids.group);
                record["attributes"]["MessageDeduplicationId"] = json!(ids.deduplication);
                record["attributes"]["SequenceNumber"] = json!(gust_core::queue::sequence_number(*seq));
            }
            record
        })
        .collect()
}
