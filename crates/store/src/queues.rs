//! Queues (SQS's standard queues): their statements and algorithms, written once over
//! [`Tx`] like the rest of [`crate::ops`].
//!
//! A receive is one transaction: it picks visible messages (oldest visibility first; on
//! PostgreSQL rows another receiver holds are skipped, never shared), moves those received
//! too often to the dead-letter queue, and hides the rest with a new receipt token each. A
//! delete or visibility change names the message and its current token, so a receipt from an
//! earlier receive changes nothing.

use gust_core::queue::{
    EventSourceMapping, FifoIds, Message, NewMessage, Queue, QueueAttributes, QueueCounts, Received, Sent,
    DEDUPLICATION_INTERVAL_MS,
};
use gust_core::Millis;

use crate::ops::Tx;
use crate::rows::{json_err, ColumnRow, Value};
use crate::{Kind, Result, StoreError};

const INSERT_QUEUE: &str = "INSERT INTO queues (name, id, attributes, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING";
const QUEUE_BY_NAME: &str = "SELECT name, id, attributes, created_at, updated_at FROM queues WHERE name = $1";
const QUEUES_AFTER: &str = "SELECT name, id, attributes, created_at, updated_at FROM queues \
     WHERE name > $1 AND name >= $2 AND name < $3 ORDER BY name LIMIT $4";
const SET_ATTRIBUTES: &str = "UPDATE queues SET attributes = $2, updated_at = $3 WHERE name = $1";
const DELETE_QUEUE: &str = "DELETE FROM queues WHERE name = $1";
const DELETE_MESSAGES: &str = "DELETE FROM queue_messages WHERE queue = $1";
const INSERT_MESSAGE: &str = "INSERT INTO queue_messages \
     (queue, id, body, attributes, sent_at, visible_at, receive_count, expires_at, group_id, dedup_id, seq) \
     VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10)";
/// Visible messages, oldest visibility first (PostgreSQL skips rows another receiver holds).
const VISIBLE: &str = "SELECT id, body, attributes, sent_at, receive_count, first_received_at, expires_at, \
     group_id, dedup_id, seq FROM queue_messages WHERE queue = $1 AND visible_at <= $2 ORDER BY visible_at LIMIT $3";
/// A FIFO queue's visible messages in sequence order, but none of a group that has a message
/// in flight (received and still hidden): a group is received in order, one batch at a time.
const VISIBLE_FIFO: &str =
    "SELECT m.id, m.body, m.attributes, m.sent_at, m.receive_count, m.first_received_at, \
     m.expires_at, m.group_id, m.dedup_id, m.seq FROM queue_messages m \
     WHERE m.queue = $1 AND m.visible_at <= $2 AND NOT EXISTS (SELECT 1 FROM queue_messages h \
     WHERE h.queue = $1 AND h.group_id = m.group_id AND h.receipt IS NOT NULL AND h.visible_at > $2) \
     ORDER BY m.seq LIMIT $3";
/// Takes the queue's row lock (PostgreSQL): FIFO sends and receives of one queue go one at a
/// time, so sequence numbers follow commit order and two receivers never split a group.
const LOCK_QUEUE: &str = "UPDATE queues SET seq = seq WHERE id = $1";
const NEXT_SEQ: &str = "UPDATE queues SET seq = seq + 1 WHERE id = $1";
const SEQ_OF: &str = "SELECT seq FROM queues WHERE id = $1";
const FORGET_DEDUP: &str = "DELETE FROM queue_dedup WHERE queue = $1 AND dedup_id = $2 AND expires_at <= $3";
const SEEN_DEDUP: &str = "SELECT message_id, seq FROM queue_dedup WHERE queue = $1 AND dedup_id = $2";
const REMEMBER_DEDUP: &str =
    "INSERT INTO queue_dedup (queue, dedup_id, message_id, seq, expires_at) VALUES ($1, $2, $3, $4, $5)";
const EXPIRE_DEDUP: &str = "DELETE FROM queue_dedup WHERE (queue, dedup_id) IN \
     (SELECT queue, dedup_id FROM queue_dedup WHERE expires_at <= $1 LIMIT $2)";
const HIDE: &str = "UPDATE queue_messages SET visible_at = $3, receive_count = receive_count + 1, \
     first_received_at = COALESCE(first_received_at, $4), receipt = $5 \
     WHERE queue = $1 AND id = $2 AND visible_at <= $4";
const DELETE_ONE: &str = "DELETE FROM queue_messages WHERE queue = $1 AND id = $2";
/// To the dead-letter queue, remembering where it came from (for a redrive back).
const MOVE_TO: &str = "UPDATE queue_messages SET queue = $3, visible_at = $4, receive_count = 0, \
     first_received_at = NULL, receipt = NULL, source_queue = $1 WHERE queue = $1 AND id = $2";
/// A visible dead letter back to a queue (guarded: one received meanwhile stays).
const MOVE_BACK: &str = "UPDATE queue_messages SET queue = $3, visible_at = $4, receive_count = 0, \
     first_received_at = NULL, receipt = NULL, source_queue = NULL \
     WHERE queue = $1 AND id = $2 AND visible_at <= $4";
const VISIBLE_SOURCES: &str = "SELECT id, source_queue FROM queue_messages \
     WHERE queue = $1 AND visible_at <= $2 ORDER BY visible_at LIMIT $3";
const QUEUE_BY_ID: &str = "SELECT id FROM queues WHERE id = $1";
const INSERT_MOVE_TASK: &str =
    "INSERT INTO queue_move_tasks (handle, source, destination, moved, to_move, started_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";
const MOVE_TASKS: &str =
    "SELECT handle, source, destination, moved, to_move, started_at FROM queue_move_tasks \
     WHERE source = $1 ORDER BY started_at DESC LIMIT $2";
const DELETE_RECEIVED: &str = "DELETE FROM queue_messages WHERE queue = $1 AND id = $2 AND receipt = $3";
const SET_VISIBLE_AT: &str =
    "UPDATE queue_messages SET visible_at = $4 WHERE queue = $1 AND id = $2 AND receipt = $3 AND visible_at > $5";
const EXPIRE: &str = "DELETE FROM queue_messages WHERE (queue, id) IN \
     (SELECT queue, id FROM queue_messages WHERE expires_at <= $1 LIMIT $2)";
const QUEUE_ID_BY_NAME: &str = "SELECT id, attributes FROM queues WHERE name = $1";
const ANY_VISIBLE: &str = "SELECT id FROM queue_messages WHERE queue = $1 AND visible_at <= $2 LIMIT 1";
const COUNTS: &str = "SELECT \
     COALESCE(SUM(CASE WHEN visible_at <= $2 THEN 1 ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN visible_at > $2 AND receipt IS NOT NULL THEN 1 ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN visible_at > $2 AND receipt IS NULL THEN 1 ELSE 0 END), 0) \
     FROM queue_messages WHERE queue = $1 AND expires_at > $2";

/// A new receipt token: 128 random bits.
pub fn new_receipt() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn read_queue(r: &dyn ColumnRow) -> Result<Queue> {
    Ok(Queue {
        name: r.text(0)?,
        id: r.text(1)?,
        attributes: serde_json::from_str(&r.text(2)?).map_err(json_err)?,
        created_at: r.int(3)?,
        updated_at: r.int(4)?,
    })
}

/// A visible message and when it expires.
fn read_message(r: &dyn ColumnRow) -> Result<(Message, Millis)> {
    let fifo = match (r.opt_text(7)?, r.opt_text(8)?, r.opt_int(9)?) {
        (Some(group), Some(deduplication), Some(seq)) => Some((FifoIds { group, deduplication }, seq)),
        _ => None,
    };
    let message = Message {
        id: r.text(0)?,
        body: r.text(1)?,
        attributes: serde_json::from_str(&r.text(2)?).map_err(json_err)?,
        sent_at: r.int(3)?,
        receive_count: r.int(4)? as u32,
        first_received_at: r.opt_int(5)?,
        fifo,
    };
    Ok((message, r.int(6)?))
}

fn read_counts(r: &dyn ColumnRow) -> Result<QueueCounts> {
    Ok(QueueCounts { visible: r.int(0)? as u64, in_flight: r.int(1)? as u64, delayed: r.int(2)? as u64 })
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound { kind: Kind::Queue, name: name.to_string() }
}

pub async fn get_queue(tx: &impl Tx, name: &str) -> Result<Option<Queue>> {
    Ok(tx.select(QUEUE_BY_NAME, &[name.into()], false, read_queue).await?.into_iter().next())
}

/// Creates a queue; an existing queue of the name is answered as it is if its attributes are
/// `queue`'s, else `Invalid` (SQS's QueueNameExists).
pub async fn create_queue(tx: &impl Tx, queue: &Queue) -> Result<Queue> {
    check_dead_letter(tx, &queue.name, &queue.attributes).await?;
    let attributes = serde_json::to_string(&queue.attributes).map_err(json_err)?;
    let values: [Value; _] = [
        queue.name.as_str().into(),
        queue.id.as_str().into(),
        attributes.as_str().into(),
        queue.created_at.into(),
    ];
    if tx.execute(INSERT_QUEUE, &values).await? == 1 {
        return Ok(queue.clone());
    }
    let existing = get_queue(tx, &queue.name).await?.ok_or_else(|| not_found(&queue.name))?;
    if existing.attributes != queue.attributes {
        return Err(StoreError::Invalid(format!(
            "A queue already exists with the same name and a different value for attribute(s): {}",
            differing(&existing.attributes, &queue.attributes).join(", ")
        )));
    }
    Ok(existing)
}

fn differing(a: &QueueAttributes, b: &QueueAttributes) -> Vec<String> {
    let (a, b) = (a.to_map(), b.to_map());
    let mut names: Vec<String> =
        a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    names.dedup();
    names
}

/// A redrive policy must name another queue that exists.
async fn check_dead_letter(tx: &impl Tx, name: &str, attributes: &QueueAttributes) -> Result<()> {
    let Some(policy) = &attributes.redrive_policy else { return Ok(()) };
    if policy.dead_letter_queue == name {
        return Err(StoreError::Invalid("a queue cannot be its own dead-letter queue".into()));
    }
    if get_queue(tx, &policy.dead_letter_queue).await?.is_none() {
        return Err(StoreError::Invalid(format!(
            "Value {} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.",
            gust_core::queue::queue_arn(&policy.dead_letter_queue)
        )));
    }
    Ok(())
}

/// Queues whose names start with `prefix`, after `after`, in name order.
pub async fn list_queues(
    tx: &impl Tx, prefix: &str, after: Option<&str>, limit: usize,
) -> Result<Vec<Queue>> {
    // Names are ASCII from a small alphabet, so every name with the prefix sorts below the
    // prefix followed by the highest byte.
    let upper = format!("{prefix}\u{7f}");
    let values: [Value; _] = [after.unwrap_or("").into(), prefix.into(), upper.as_str().into(), limit.into()];
    tx.select(QUEUES_AFTER, &values, false, read_queue).await
}

pub async fn set_queue_attributes(
    tx: &impl Tx, name: &str, attributes: &QueueAttributes, now: Millis,
) -> Result<Queue> {
    check_dead_letter(tx, name, attributes).await?;
    let json = serde_json::to_string(attributes).map_err(json_err)?;
    if tx.execute(SET_ATTRIBUTES, &[name.into(), json.as_str().into(), now.into()]).await? == 0 {
        return Err(not_found(name));
    }
    get_queue(tx, name).await?.ok_or_else(|| not_found(name))
}

/// Deletes a queue and its messages.
pub async fn delete_queue(tx: &impl Tx, name: &str) -> Result<()> {
    let queue = get_queue(tx, name).await?.ok_or_else(|| not_found(name))?;
    tx.execute(DELETE_MESSAGES, &[queue.id.as_str().into()]).await?;
    tx.execute(DELETE_QUEUE, &[name.into()]).await?;
    Ok(())
}

/// Stores messages, all or none. A FIFO message (`fifo` set) gets the queue's next sequence
/// number, unless its deduplication id was seen in the last five minutes: then nothing is
/// stored and the first send's id and sequence number are answered.
pub async fn send_messages(
    tx: &impl Tx, queue_id: &str, messages: &[NewMessage], now: Millis, expires_at: Millis,
) -> Result<Vec<Sent>> {
    fn read_seen(r: &dyn ColumnRow) -> Result<(String, i64)> {
        Ok((r.text(0)?, r.int(1)?))
    }
    let mut sent = Vec::with_capacity(messages.len());
    for m in messages {
        let mut seq = None;
        if let Some(ids) = &m.fifo {
            let key: [Value; 2] = [queue_id.into(), ids.deduplication.as_str().into()];
            tx.execute(NEXT_SEQ, &[queue_id.into()]).await?;
            tx.execute(FORGET_DEDUP, &[key[0], key[1], now.into()]).await?;
            if let Some((id, seq)) = tx.select(SEEN_DEDUP, &key, false, read_seen).await?.into_iter().next() {
                sent.push(Sent { id, sequence: Some(seq) });
                continue;
            }
            let n = tx.select(SEQ_OF, &[queue_id.into()], false, |r| r.int(0)).await?.into_iter().next();
            let n = n.ok_or_else(|| not_found(queue_id))?;
            let values: [Value; _] =
                [key[0], key[1], m.id.as_str().into(), n.into(), (now + DEDUPLICATION_INTERVAL_MS).into()];
            tx.execute(REMEMBER_DEDUP, &values).await?;
            seq = Some(n);
        }
        let attributes = serde_json::to_string(&m.attributes).map_err(json_err)?;
        let (group, dedup) = match &m.fifo {
            Some(f) => (Value::from(f.group.as_str()), Value::from(f.deduplication.as_str())),
            None => (Value::Null, Value::Null),
        };
        let values: [Value; _] = [
            queue_id.into(),
            m.id.as_str().into(),
            m.body.as_str().into(),
            attributes.as_str().into(),
            now.into(),
            m.visible_at.into(),
            expires_at.into(),
            group,
            dedup,
            seq.map_or(Value::Null, Value::Int),
        ];
        tx.execute(INSERT_MESSAGE, &values).await?;
        sent.push(Sent { id: m.id.clone(), sequence: seq });
    }
    Ok(sent)
}

/// Receives up to `max` messages of `queue`, hiding each until `now + visibility_ms` under a
/// new receipt from `receipt`. Expired messages found on the way are deleted; messages
/// already received as often as the queue's redrive policy allows go to its dead-letter queue
/// (visible there at once) instead of being received again.
pub async fn receive(
    tx: &impl Tx, queue: &Queue, max: usize, visibility_ms: i64, now: Millis,
    mut receipt: impl FnMut() -> String,
) -> Result<Vec<Received>> {
    let dead_letter = match &queue.attributes.redrive_policy {
        Some(p) => get_queue(tx, &p.dead_letter_queue).await?.map(|q| (q.id, p.max_receive_count)),
        None => None,
    };
    let fifo = queue.attributes.fifo;
    if fifo {
        tx.execute(LOCK_QUEUE, &[queue.id.as_str().into()]).await?;
    }
    let mut out = Vec::new();
    // Each pass looks at a few more than it needs, since some may expire or move away.
    for _ in 0..4 {
        let want = max - out.len();
        if want == 0 {
            break;
        }
        let (statement, skip_locked) = if fifo { (VISIBLE_FIFO, false) } else { (VISIBLE, true) };
        let values: [Value; _] = [queue.id.as_str().into(), now.into(), (want * 2).into()];
        let visible = tx.select(statement, &values, skip_locked, read_message).await?;
        if visible.is_empty() {
            break;
        }
        for (message, expires_at) in visible {
            let key: [Value; 2] = [queue.id.as_str().into(), message.id.as_str().into()];
            if expires_at <= now {
                tx.execute(DELETE_ONE, &key).await?;
                continue;
            }
            if let Some((dlq, max_receives)) = &dead_letter {
                if message.receive_count >= *max_receives {
                    let values: [Value; _] = [key[0], key[1], dlq.as_str().into(), now.into()];
                    tx.execute(MOVE_TO, &values).await?;
                    continue;
                }
            }
            if out.len() == max {
                continue;
            }
            let token = receipt();
            let values: [Value; _] =
                [key[0], key[1], (now + visibility_ms).into(), now.into(), token.as_str().into()];
            // Guarded: a message another receiver hid meanwhile is not received twice.
            if tx.execute(HIDE, &values).await? != 1 {
                continue;
            }
            let message = Message {
                receive_count: message.receive_count + 1,
                first_received_at: message.first_received_at.or(Some(now)),
                ..message
            };
            out.push(Received { message, receipt: token });
        }
    }
    Ok(out)
}

/// Deletes a message if `receipt` is its current one; whether it was.
pub async fn delete_message(tx: &impl Tx, queue_id: &str, message_id: &str, receipt: &str) -> Result<bool> {
    Ok(tx.execute(DELETE_RECEIVED, &[queue_id.into(), message_id.into(), receipt.into()]).await? == 1)
}

/// Deletes each `(message id, receipt)` whose receipt is current, in one transaction; which
/// were, in order.
pub async fn delete_messages(
    tx: &impl Tx, queue_id: &str, messages: &[(String, String)],
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(messages.len());
    for (id, receipt) in messages {
        out.push(delete_message(tx, queue_id, id, receipt).await?);
    }
    Ok(out)
}

/// Makes a received message visible at `visible_at` if `receipt` is its current one and it is
/// still hidden at `now`; whether it was.
pub async fn change_visibility(
    tx: &impl Tx, queue_id: &str, message_id: &str, receipt: &str, visible_at: Millis, now: Millis,
) -> Result<bool> {
    let values: [Value; _] =
        [queue_id.into(), message_id.into(), receipt.into(), visible_at.into(), now.into()];
    Ok(tx.execute(SET_VISIBLE_AT, &values).await? == 1)
}

/// Deletes every message of a queue; how many.
pub async fn purge(tx: &impl Tx, queue_id: &str) -> Result<u64> {
    tx.execute(DELETE_MESSAGES, &[queue_id.into()]).await
}

/// Deletes at most `limit` messages past their retention at `now`, and as many deduplication
/// ids past their five minutes; how many messages.
pub async fn expire(tx: &impl Tx, now: Millis, limit: usize) -> Result<u64> {
    tx.execute(EXPIRE_DEDUP, &[now.into(), limit.into()]).await?;
    tx.execute(EXPIRE, &[now.into(), limit.into()]).await
}

/// Whether a receive at `now` would find a message (a read: no lock, no write).
pub async fn any_visible(tx: &impl Tx, queue_id: &str, now: Millis) -> Result<bool> {
    Ok(!tx.select(ANY_VISIBLE, &[queue_id.into(), now.into()], false, |r| r.text(0)).await?.is_empty())
}

pub async fn counts(tx: &impl Tx, queue_id: &str, now: Millis) -> Result<QueueCounts> {
    let rows = tx.select(COUNTS, &[queue_id.into(), now.into()], false, read_counts).await?;
    Ok(rows.into_iter().next().unwrap_or_default())
}

/// Writes `message` to queue `name` (by name, within the caller's transaction: a schedule's
/// firing, a destination, a dead letter); `None` if there is no such queue.
pub async fn send_to(tx: &impl Tx, name: &str, message: &NewMessage, now: Millis) -> Result<Option<()>> {
    fn read(r: &dyn ColumnRow) -> Result<(String, String)> {
        Ok((r.text(0)?, r.text(1)?))
    }
    let Some((id, attributes)) =
        tx.select(QUEUE_ID_BY_NAME, &[name.into()], false, read).await?.into_iter().next()
    else {
        return Ok(None);
    };
    let attributes: QueueAttributes = serde_json::from_str(&attributes).map_err(json_err)?;
    let expires_at = now + i64::from(attributes.message_retention_period) * 1000;
    let mut message = message.clone();
    if attributes.fifo && message.fifo.is_none() {
        // One group: what gust itself sends to a FIFO queue stays in the order it was sent.
        message.fifo = Some(FifoIds { group: "gust".into(), deduplication: message.id.clone() });
    }
    send_messages(tx, &id, &[message], now, expires_at).await?;
    Ok(Some(()))
}

/// Moves up to `limit` visible messages of dead-letter queue `dlq` to `destination`, or each
/// back to the queue it came from (when that queue still exists: a message whose source is
/// gone, or unknown, stays). How many moved.
pub async fn move_back(
    tx: &impl Tx, dlq_id: &str, destination: Option<&str>, limit: usize, now: Millis,
) -> Result<u64> {
    fn read(r: &dyn ColumnRow) -> Result<(String, Option<String>)> {
        Ok((r.text(0)?, r.opt_text(1)?))
    }
    let found = tx.select(VISIBLE_SOURCES, &[dlq_id.into(), now.into(), limit.into()], true, read).await?;
    let mut moved = 0;
    for (id, source) in found {
        let target = match (destination, source) {
            (Some(d), _) => d.to_string(),
            (None, Some(source)) => {
                let exists = !tx
                    .select(QUEUE_BY_ID, &[source.as_str().into()], false, |r| r.text(0))
                    .await?
                    .is_empty();
                if !exists {
                    continue;
                }
                source
            }
            (None, None) => continue,
        };
        let values: [Value; _] = [dlq_id.into(), id.as_str().into(), target.as_str().into(), now.into()];
        moved += tx.execute(MOVE_BACK, &values).await?;
    }
    Ok(moved)
}

/// A finished message move task, as `ListMessageMoveTasks` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    pub handle: String,
    /// Queue names.
    pub source: String,
    pub destination: Option<String>,
    pub moved: u64,
    pub to_move: u64,
    pub started_at: Millis,
}

pub async fn record_move_task(tx: &impl Tx, t: &MoveTask) -> Result<()> {
    let values: [Value; _] = [
        t.handle.as_str().into(),
        t.source.as_str().into(),
        t.destination.as_deref().map_or(Value::Null, Value::from),
        (t.moved as i64).into(),
        (t.to_move as i64).into(),
        t.started_at.into(),
    ];
    tx.execute(INSERT_MOVE_TASK, &values).await?;
    Ok(())
}

/// The newest move tasks of source queue `source` (by name).
pub async fn move_tasks(tx: &impl Tx, source: &str, limit: usize) -> Result<Vec<MoveTask>> {
    fn read(r: &dyn ColumnRow) -> Result<MoveTask> {
        Ok(MoveTask {
            handle: r.text(0)?,
            source: r.text(1)?,
            destination: r.opt_text(2)?,
            moved: r.int(3)? as u64,
            to_move: r.int(4)? as u64,
            started_at: r.int(5)?,
        })
    }
    tx.select(MOVE_TASKS, &[source.into(), limit.into()], false, read).await
}

// ---- event source mappings --------------------------------------------------------------------

const UPSERT_MAPPING: &str = "INSERT INTO event_source_mappings (uuid, queue, function, config, updated_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (uuid) DO UPDATE SET queue = $2, function = $3, config = $4, updated_at = $5";
const MAPPING_BY_UUID: &str = "SELECT config FROM event_source_mappings WHERE uuid = $1";
const MAPPINGS: &str = "SELECT config FROM event_source_mappings ORDER BY uuid";
const DELETE_MAPPING: &str = "DELETE FROM event_source_mappings WHERE uuid = $1";

fn read_mapping(r: &dyn ColumnRow) -> Result<EventSourceMapping> {
    serde_json::from_str(&r.text(0)?).map_err(json_err)
}

/// Creates or replaces a mapping.
pub async fn put_mapping(tx: &impl Tx, m: &EventSourceMapping) -> Result<()> {
    let config = serde_json::to_string(m).map_err(json_err)?;
    let values: [Value; _] = [
        m.uuid.as_str().into(),
        m.queue.as_str().into(),
        m.function.as_str().into(),
        config.as_str().into(),
        m.updated_at.into(),
    ];
    tx.execute(UPSERT_MAPPING, &values).await?;
    Ok(())
}

pub async fn get_mapping(tx: &impl Tx, uuid: &str) -> Result<Option<EventSourceMapping>> {
    Ok(tx.select(MAPPING_BY_UUID, &[uuid.into()], false, read_mapping).await?.into_iter().next())
}

/// Every mapping, by uuid.
pub async fn mappings(tx: &impl Tx) -> Result<Vec<EventSourceMapping>> {
    tx.select(MAPPINGS, &[], false, read_mapping).await
}

/// Deletes a mapping; whether it was there.
pub async fn delete_mapping(tx: &impl Tx, uuid: &str) -> Result<bool> {
    Ok(tx.execute(DELETE_MAPPING, &[uuid.into()]).await? == 1)
}
