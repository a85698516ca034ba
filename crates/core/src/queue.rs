//! Queues with Amazon SQS's semantics (standard queues): names, attributes and their bounds,
//! message attributes and the digests SQS computes over a message, as SQS clients check them.
//!
//! A queue is stored with an `id` of its own (a new one each time a name is created), so that
//! nothing of a deleted queue reaches a queue created later under its name. A message is
//! visible from `visible_at`; receiving it hides it for the visibility timeout and gives it a
//! new receipt token, which alone deletes it or changes its visibility (an older receipt no
//! longer works once the message has been received again).

use std::collections::BTreeMap;

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use crate::lambda::{ACCOUNT, REGION};
use crate::Millis;

/// Most characters in a queue name.
pub const MAX_QUEUE_NAME: usize = 80;
/// Most messages in one send, receive or batch request.
pub const MAX_BATCH: usize = 10;
/// Most message attributes on one message.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// The largest `MaximumMessageSize` a queue may set (SQS's 1 MiB).
pub const MAX_MESSAGE_SIZE: u32 = 1024 * 1024;
/// The longest a receive may wait for messages (seconds).
pub const MAX_WAIT_SECONDS: u32 = 20;
/// The longest a message may stay hidden once received (seconds).
pub const MAX_VISIBILITY_TIMEOUT: u32 = 43_200;

/// A queue name: 1-80 letters, digits, hyphens and underscores, the last five `.fifo` for a
/// FIFO queue.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let ok = (1..=MAX_QUEUE_NAME).contains(&name.len())
        && !base.is_empty()
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        return Ok(());
    }
    Err(format!(
        "Can only include alphanumeric characters, hyphens, or underscores (a FIFO queue's name ends with .fifo). 1 to {MAX_QUEUE_NAME} in length"
    ))
}

/// A FIFO queue's message group id or deduplication id: 1-128 characters of `a-z A-Z 0-9`
/// and ASCII punctuation.
pub fn validate_fifo_id(what: &str, id: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b.is_ascii_punctuation());
    if ok {
        Ok(())
    } else {
        Err(format!("Value for parameter {what} is invalid: 1 to 128 letters, digits and punctuation"))
    }
}

/// How long a FIFO queue remembers a deduplication id.
pub const DEDUPLICATION_INTERVAL_MS: Millis = 5 * 60 * 1000;

/// A FIFO sequence number as SQS shows it: 20 digits.
pub fn sequence_number(seq: i64) -> String {
    format!("{seq:020}")
}

/// `arn:aws:sqs:us-east-1:000000000000:NAME`.
pub fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

/// The queue name an ARN of gust's names, if it is one.
pub fn queue_of_arn(arn: &str) -> Option<&str> {
    let name = arn.strip_prefix(&format!("arn:aws:sqs:{REGION}:{ACCOUNT}:"))?;
    validate_queue_name(name).ok().map(|()| name)
}

/// Where a queue's messages go once received `max_receive_count` times without being deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    /// The dead-letter queue's name.
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// A queue's settable attributes, with SQS's defaults and bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueAttributes {
    pub delay_seconds: u32,
    pub maximum_message_size: u32,
    pub message_retention_period: u32,
    pub receive_message_wait_time_seconds: u32,
    pub visibility_timeout: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redrive_policy: Option<RedrivePolicy>,
    /// A FIFO queue (its name ends with `.fifo`; fixed at creation).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fifo: bool,
    /// A FIFO queue's deduplication id, when a send gives none, is the SHA-256 of the body.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content_based_deduplication: bool,
    /// Attributes SQS has that change nothing here (`Policy`, `SqsManagedSseEnabled`,
    /// `KmsMasterKeyId`, ...): kept and shown back.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inert: BTreeMap<String, String>,
}

impl Default for QueueAttributes {
    fn default() -> Self {
        QueueAttributes {
            delay_seconds: 0,
            maximum_message_size: 262_144,
            message_retention_period: 345_600,
            receive_message_wait_time_seconds: 0,
            visibility_timeout: 30,
            redrive_policy: None,
            fifo: false,
            content_based_deduplication: false,
            inert: BTreeMap::new(),
        }
    }
}

/// Attributes accepted and kept without effect.
const INERT: &[&str] = &[
    "Policy",
    "SqsManagedSseEnabled",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "RedriveAllowPolicy",
];

/// Why an attribute was refused: its name is unknown, or its value is out of bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeError {
    Name(String),
    Value(String),
}

impl QueueAttributes {
    /// Sets one attribute from SQS's string form.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), AttributeError> {
        let number = |lo: u32, hi: u32| {
            value.trim().parse::<u32>().ok().filter(|v| (lo..=hi).contains(v)).ok_or_else(|| {
                AttributeError::Value(format!("Invalid value for the parameter {name}: must be {lo} to {hi}"))
            })
        };
        match name {
            "DelaySeconds" => self.delay_seconds = number(0, 900)?,
            "MaximumMessageSize" => self.maximum_message_size = number(1024, MAX_MESSAGE_SIZE)?,
            "MessageRetentionPeriod" => self.message_retention_period = number(60, 1_209_600)?,
            "ReceiveMessageWaitTimeSeconds" => {
                self.receive_message_wait_time_seconds = number(0, MAX_WAIT_SECONDS)?
            }
            "VisibilityTimeout" => self.visibility_timeout = number(0, MAX_VISIBILITY_TIMEOUT)?,
            "RedrivePolicy" if value.trim().is_empty() => self.redrive_policy = None,
            "RedrivePolicy" => self.redrive_policy = Some(parse_redrive(value)?),
            "FifoQueue" => self.fifo = boolean(name, value)?,
            "ContentBasedDeduplication" => self.content_based_deduplication = boolean(name, value)?,
            "DeduplicationScope" if matches!(value, "queue" | "messageGroup") => {
                self.inert.insert(name.to_string(), value.to_string());
            }
            "FifoThroughputLimit" if matches!(value, "perQueue" | "perMessageGroupId") => {
                self.inert.insert(name.to_string(), value.to_string());
            }
            "DeduplicationScope" | "FifoThroughputLimit" => {
                return Err(AttributeError::Value(format!("Invalid value for the parameter {name}")));
            }
            n if INERT.contains(&n) => {
                if value.len() > 20_480 {
                    return Err(AttributeError::Value(format!("Invalid value for the parameter {name}")));
                }
                self.inert.insert(n.to_string(), value.to_string());
            }
            other => {
                return Err(AttributeError::Name(format!(
                    "Unknown Attribute {}.",
                    other.chars().take(80).collect::<String>()
                )))
            }
        }
        Ok(())
    }

    /// The attributes in SQS's string form (the settable ones).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("DelaySeconds".to_string(), self.delay_seconds.to_string()),
            ("MaximumMessageSize".to_string(), self.maximum_message_size.to_string()),
            ("MessageRetentionPeriod".to_string(), self.message_retention_period.to_string()),
            ("ReceiveMessageWaitTimeSeconds".to_string(), self.receive_message_wait_time_seconds.to_string()),
            ("VisibilityTimeout".to_string(), self.visibility_timeout.to_string()),
        ]);
        if let Some(r) = &self.redrive_policy {
            let policy = serde_json::json!({
                "deadLetterTargetArn": queue_arn(&r.dead_letter_queue),
                "maxReceiveCount": r.max_receive_count,
            });
            m.insert("RedrivePolicy".into(), policy.to_string());
        }
        if self.fifo {
            m.insert("FifoQueue".into(), "true".into());
            m.insert("ContentBasedDeduplication".into(), self.content_based_deduplication.to_string());
        }
        m.extend(self.inert.clone());
        m
    }
}

fn boolean(name: &str, value: &str) -> Result<bool, AttributeError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(AttributeError::Value(format!("Invalid value for the parameter {name}: true or false"))),
    }
}

fn parse_redrive(value: &str) -> Result<RedrivePolicy, AttributeError> {
    let bad = |why: &str| {
        AttributeError::Value(format!("Value {value} for parameter RedrivePolicy is invalid. Reason: {why}"))
    };
    let v: serde_json::Value = serde_json::from_str(value).map_err(|_| bad("Invalid JSON."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .ok_or_else(|| bad("Redrive policy does not contain deadLetterTargetArn."))?;
    let queue =
        queue_of_arn(arn).ok_or_else(|| bad("Dead-letter target must be an existing queue's ARN."))?;
    let count = match v.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let count = count
        .filter(|c| (1..=1000).contains(c))
        .ok_or_else(|| bad("Value for maxReceiveCount must be an integer from 1 to 1000."))?;
    Ok(RedrivePolicy { dead_letter_queue: queue.to_string(), max_receive_count: count as u32 })
}

/// A queue as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub name: String,
    /// This incarnation of the name.
    pub id: String,
    pub attributes: QueueAttributes,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One message attribute (SQS `MessageAttributeValue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAttribute {
    pub data_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// Base64 in JSON, as SQS's API carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
}

/// Checks a message's attributes: at most 10, names and types as SQS allows, each with the
/// one value its type needs. Returns their size in bytes (names, types and values), which
/// counts toward the queue's maximum message size.
pub fn validate_message_attributes(attrs: &BTreeMap<String, MessageAttribute>) -> Result<usize, String> {
    if attrs.len() > MAX_MESSAGE_ATTRIBUTES {
        return Err(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_MESSAGE_ATTRIBUTES}].",
            attrs.len()
        ));
    }
    let mut size = 0;
    for (name, a) in attrs {
        let lower = name.to_ascii_lowercase();
        let name_ok = (1..=256).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !lower.starts_with("aws.")
            && !lower.starts_with("amazon.");
        if !name_ok {
            return Err(format!(
                "Message attribute name '{}' is invalid.",
                name.chars().take(80).collect::<String>()
            ));
        }
        let base = a.data_type.split('.').next().unwrap_or("");
        let type_ok = a.data_type.len() <= 256
            && matches!(base, "String" | "Number" | "Binary")
            && a.data_type.bytes().all(|b| b.is_ascii_graphic());
        if !type_ok {
            return Err(format!("The message attribute '{name}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String."));
        }
        let value_len = match (base, &a.string_value, &a.binary_value) {
            ("Binary", None, Some(b)) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| format!("The message attribute '{name}' has an invalid binary value."))?
                    .len()
            }
            ("String" | "Number", Some(s), None) if !s.is_empty() => {
                if !is_message_text(s) {
                    return Err(format!("The message attribute '{name}' has a value with characters SQS does not allow."));
                }
                if base == "Number" && s.trim().parse::<f64>().is_err() {
                    return Err(format!("Can't cast the value of message (user) attribute '{name}' to a number."));
                }
                s.len()
            }
            _ => return Err(format!("The message attribute '{name}' must contain a non-empty message attribute value of its type.")),
        };
        size += name.len() + a.data_type.len() + value_len;
    }
    Ok(size)
}

/// Whether `text` holds only the characters SQS allows in a message (its body and its text
/// attribute values): #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD, #x10000-#x10FFFF.
pub fn is_message_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
    })
}

/// The MD5 (hex) SQS reports of a message body.
pub fn md5_of_body(body: &str) -> String {
    hex_of(&Md5::digest(body.as_bytes()))
}

/// The MD5 (hex) SQS reports of message attributes (`None` without attributes): for each in
/// name order, the name, the type, a transport byte (1 text, 2 binary) and the value, each but
/// the byte preceded by its length as 4 big-endian bytes.
pub fn md5_of_attributes(attrs: &BTreeMap<String, MessageAttribute>) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    use base64::Engine as _;
    let mut bytes = Vec::new();
    let field = |bytes: &mut Vec<u8>, part: &[u8]| {
        bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
        bytes.extend_from_slice(part);
    };
    for (name, a) in attrs {
        field(&mut bytes, name.as_bytes());
        field(&mut bytes, a.data_type.as_bytes());
        match (&a.string_value, &a.binary_value) {
            (_, Some(b)) => {
                bytes.push(2);
                let value = base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default();
                field(&mut bytes, &value);
            }
            (s, None) => {
                bytes.push(1);
                field(&mut bytes, s.as_deref().unwrap_or("").as_bytes());
            }
        }
    }
    Some(hex_of(&Md5::digest(&bytes)))
}

pub(crate) fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewMessage {
    pub id: String,
    pub body: String,
    pub attributes: BTreeMap<String, MessageAttribute>,
    /// When it may first be received.
    pub visible_at: Millis,
    /// A FIFO queue's: the message group, and the deduplication id.
    pub fifo: Option<FifoIds>,
}

/// A FIFO message's group (messages of one group are received in order, one batch at a time)
/// and deduplication id (a second send of it within five minutes is not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoIds {
    pub group: String,
    pub deduplication: String,
}

/// What a send stored: the message id (for a FIFO duplicate, the first send's) and, on a FIFO
/// queue, the sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub sequence: Option<i64>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub body: String,
    pub attributes: BTreeMap<String, MessageAttribute>,
    pub sent_at: Millis,
    pub receive_count: u32,
    pub first_received_at: Option<Millis>,
    /// A FIFO message's ids and sequence number.
    pub fifo: Option<(FifoIds, i64)>,
}

/// A message as one receive gave it: with the receipt token that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message: Message,
    pub receipt: String,
}

/// A receipt handle as clients see it: base64url of `QUEUE-ID.MESSAGE-ID.TOKEN`.
pub fn receipt_handle(queue_id: &str, message_id: &str, token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{queue_id}.{message_id}.{token}"))
}

/// The message id and receipt token a handle names, if it is one of queue `queue_id`'s.
pub fn parse_receipt_handle(queue_id: &str, handle: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(handle.as_bytes()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let mut parts = decoded.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        // A message id is a UUID and a token 32 hex digits (`new_receipt`): nothing else
        // reaches the store.
        (Some(q), Some(m), Some(t))
            if q == queue_id
                && m.len() == 36
                && m.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                && t.len() == 32
                && t.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some((m.to_string(), t.to_string()))
        }
        _ => None,
    }
}

/// A queue that triggers a function (Lambda's event source mapping for SQS): batches of its
/// messages are the function's events; a batch that succeeds is deleted, a failed one comes
/// back after its visibility timeout, and with `report_batch_item_failures` only the messages
/// the function names as failed come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSourceMapping {
    pub uuid: String,
    pub queue: String,
    pub function: String,
    /// `None`: `$LATEST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    pub batch_size: u32,
    pub maximum_batching_window_s: u32,
    pub enabled: bool,
    pub report_batch_item_failures: bool,
    /// Most batches of this mapping running at once (Lambda's ScalingConfig).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_concurrency: Option<u32>,
    /// Lambda's `FilterCriteria` patterns ([`crate::filter`]): a message no pattern matches is
    /// deleted unseen; none at all lets every message through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    pub updated_at: Millis,
}

/// Batches of one mapping running at once when it sets no maximum.
pub const DEFAULT_MAPPING_CONCURRENCY: u32 = 2;

impl EventSourceMapping {
    /// Lambda's bounds: a batch of 1-10,000 (more than 10 needs a batching window), a window of
    /// 0-300 s, a maximum concurrency of 2-1,000.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(format!("BatchSize must be 1 to 10000, got {}", self.batch_size));
        }
        if self.batch_size > 10 && self.maximum_batching_window_s == 0 {
            return Err("Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10".into());
        }
        if self.maximum_batching_window_s > 300 {
            return Err(format!(
                "MaximumBatchingWindowInSeconds must be 0 to 300, got {}",
                self.maximum_batching_window_s
            ));
        }
        if let Some(c) = self.maximum_concurrency.filter(|c| !(2..=1000).contains(c)) {
            return Err(format!("ScalingConfig.MaximumConcurrency must be 2 to 1000, got {c}"));
        }
        if self.filters.len() > crate::filter::MAX_FILTERS {
            return Err(format!("FilterCriteria holds at most {} filters", crate::filter::MAX_FILTERS));
        }
        for f in &self.filters {
            crate::filter::Pattern::parse(f)
                .map_err(|e| format!("Invalid filter pattern definition: {e}"))?;
        }
        Ok(())
    }

    /// Batches of it that may run at once.
    pub fn concurrency(&self) -> u32 {
        self.maximum_concurrency.unwrap_or(DEFAULT_MAPPING_CONCURRENCY)
    }
}

/// How many messages a queue holds, as `GetQueueAttributes` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_ones_sqs_reports() {
        // The body digest is the MD5 of its bytes.
        assert_eq!(md5_of_body("hello"), "5d41402abc4b2a76b9719d911017c592");
        // SQS's documented example: one String attribute.
        let attrs = BTreeMap::from([(
            "a".to_string(),
            MessageAttribute {
                data_type: "String".into(),
                string_value: Some("b".into()),
                binary_value: None,
            },
        )]);
        let mut bytes = Vec::new();
        for part in [&b"a"[..], b"String"] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes.push(1);
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.push(b'b');
        assert_eq!(md5_of_attributes(&attrs).unwrap(), hex_of(&Md5::digest(&bytes)));
        assert_eq!(md5_of_attributes(&BTreeMap::new()), None);
    }

    #[test]
    fn attributes_keep_sqs_bounds() {
        let mut a = QueueAttributes::default();
        a.set("VisibilityTimeout", "60").unwrap();
        assert_eq!(a.visibility_timeout, 60);
        assert!(matches!(a.set("VisibilityTimeout", "43201"), Err(AttributeError::Value(_))));
        assert!(matches!(a.set("Nope", "1"), Err(AttributeError::Name(_))));
        a.set(
            "RedrivePolicy",
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#,
        )
        .unwrap();
        assert_eq!(
            a.redrive_policy,
            Some(RedrivePolicy { dead_letter_queue: "dlq".into(), max_receive_count: 3 })
        );
        assert!(a
            .set(
                "RedrivePolicy",
                r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:1:dlq","maxReceiveCount":3}"#
            )
            .is_err());
        assert!(a
            .set(
                "RedrivePolicy",
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":0}"#
            )
            .is_err());
        assert!(validate_queue_name("a-b_C9").is_ok());
        assert!(validate_queue_name("").is_err() && validate_queue_name(&"a".repeat(81)).is_err());
        assert!(validate_queue_name("x.fifo").is_ok() && validate_queue_name(".fifo").is_err());
        assert!(validate_queue_name("x.fifo.fifo").is_err() && validate_queue_name("x.FIFO").is_err());
        assert!(a.set("FifoQueue", "true").is_ok() && a.fifo);
        assert!(a.set("ContentBasedDeduplication", "yes").is_err());
        assert!(validate_fifo_id("MessageGroupId", "g-1!").is_ok());
        assert!(
            validate_fifo_id("MessageGroupId", "").is_err()
                && validate_fifo_id("MessageGroupId", "a b").is_err()
        );
    }
}
