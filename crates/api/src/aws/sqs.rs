//! The Amazon SQS API (AWS JSON 1.0, `X-Amz-Target: AmazonSQS.<Operation>` on `POST /`), as
//! current boto3 and the AWS SDK for JavaScript v3 speak it, for gust's standard queues.
//!
//! Errors are SQS's: `{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": ...}` with
//! the `x-amzn-query-error` header that maps them to the older query codes
//! (`AWS.SimpleQueueService.NonExistentQueue;Sender`), as SQS sends both.
//!
//! Who may do what: reading queues needs the Read role, sending, receiving and deleting
//! messages the Invoke role, creating, changing, purging and deleting queues the Deploy role.
//! Keys scoped to some functions have no queues.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gust_core::access::Action;
use gust_core::lambda::ACCOUNT;
use gust_core::queue::{
    md5_of_attributes, md5_of_body, validate_message_attributes, AttributeError, MessageAttribute,
    NewMessage, Queue, QueueAttributes, Received, MAX_BATCH, MAX_VISIBILITY_TIMEOUT, MAX_WAIT_SECONDS,
};
use gust_service::ServiceError;
use gust_store::Kind;
use serde_json::{json, Map, Value};

use crate::access::Access;
use crate::AppState;

/// Largest SQS request body read: a batch is at most a message's largest size (1 MiB) in all,
/// which JSON escaping (`\\uXXXX` for non-ASCII) can make about three times longer.
const MAX_SQS_BODY_BYTES: usize = 3 * 1024 * 1024 + 64 * 1024;

/// An SQS error: the JSON `__type`, the query-compatible code, the sender's fault or not.
#[derive(Debug)]
pub(crate) struct SqsError {
    status: StatusCode,
    code: &'static str,
    query_code: &'static str,
    message: String,
}

impl SqsError {
    fn new(code: &'static str, query_code: &'static str, message: impl Into<String>) -> Self {
        SqsError { status: StatusCode::BAD_REQUEST, code, query_code, message: message.into() }
    }
    fn invalid(message: impl Into<String>) -> Self {
        SqsError::new("InvalidParameterValue", "InvalidParameterValue", message)
    }
    pub(super) fn missing(name: &str) -> Self {
        SqsError::new(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }
    fn no_queue() -> Self {
        SqsError::new(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        )
    }
    fn receipt(handle: &str) -> Self {
        SqsError::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!(
                "The input receipt handle \"{}\" is not a valid receipt handle.",
                handle.chars().take(120).collect::<String>()
            ),
        )
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let fault = if self.status.is_server_error() { "Receiver" } else { "Sender" };
        let body = json!({ "__type": format!("com.amazonaws.sqs#{}", self.code), "message": self.message });
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.0"));
        if let Ok(v) = HeaderValue::from_str(&format!("{};{fault}", self.query_code)) {
            h.insert("x-amzn-query-error", v);
        }
        resp
    }
}

impl From<ServiceError> for SqsError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { kind: Kind::Queue, .. } => SqsError::no_queue(),
            ServiceError::Conflict(m) if m.starts_with("A queue already exists") => {
                SqsError::new("QueueNameExists", "QueueAlreadyExists", m)
            }
            ServiceError::Conflict(m) | ServiceError::InvalidRequest(m) => SqsError::invalid(m),
            ServiceError::ShuttingDown
            | ServiceError::Unavailable(_)
            | ServiceError::InsufficientStorage(_) => SqsError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                ..SqsError::new("ServiceUnavailable", "ServiceUnavailable", e.to_string())
            },
            other => {
                tracing::error!(error = %other, "internal error");
                SqsError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    ..SqsError::new(
                        "InternalError",
                        "InternalError",
                        "We encountered an internal error. Please try again.",
                    )
                }
            }
        }
    }
}

impl From<AttributeError> for SqsError {
    fn from(e: AttributeError) -> Self {
        match e {
            AttributeError::Name(m) => SqsError::new("InvalidAttributeName", "InvalidAttributeName", m),
            AttributeError::Value(m) => SqsError::new("InvalidAttributeValue", "InvalidAttributeValue", m),
        }
    }
}

type SqsResult = Result<Value, SqsError>;

/// `POST /` with `X-Amz-Target: AmazonSQS.*`, or a form in the older query protocol.
pub(crate) async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let access = req.extensions().get::<Access>().cloned();
    if super::sqs_query::is_query(req.headers()) {
        let (parts, body) = req.into_parts();
        return match crate::body::read_bounded(body, MAX_SQS_BODY_BYTES, "the request").await {
            Ok(form) => super::sqs_query::handle(&state, access.as_ref(), &parts.headers, &form).await,
            Err(e) => SqsError::invalid(e.message).into_response(),
        };
    }
    let operation = req
        .headers()
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.strip_prefix("AmazonSQS."))
        .map(str::to_string);
    let base = queue_base(req.headers(), state.cfg.urls.template.starts_with("https://"));
    let (_, body) = req.into_parts();
    let result = async {
        let operation = operation.ok_or_else(|| {
            SqsError::new("InvalidAction", "InvalidAction", "X-Amz-Target must name an AmazonSQS operation")
        })?;
        let bytes = crate::body::read_bounded(body, MAX_SQS_BODY_BYTES, "the request")
            .await
            .map_err(|e| SqsError::invalid(e.message))?;
        let input: Value = if bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                SqsError::new("SerializationException", "SerializationException", "the body is not JSON")
            })?
        };
        let Value::Object(input) = input else {
            return Err(SqsError::invalid("the body must be a JSON object"));
        };
        let ctx = Ctx { state: &state, access: access.as_ref(), base: &base, input: &input };
        ctx.dispatch(&operation).await
    }
    .await;
    match result {
        Ok(v) => {
            let mut resp = (StatusCode::OK, v.to_string()).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.0"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// One SQS operation on `input` (SQS's JSON shapes), as `caller`: the native API's queue
/// routes are this, with their own paths and shapes around it.
pub(crate) async fn call(
    state: &AppState, access: Option<&Access>, headers: &HeaderMap, operation: &str, input: Value,
) -> Result<Value, SqsError> {
    let base = queue_base(headers, state.cfg.urls.template.starts_with("https://"));
    let Value::Object(input) = input else {
        return Err(SqsError::invalid("the body must be a JSON object"));
    };
    Ctx { state, access, base: &base, input: &input }.dispatch(operation).await
}

impl SqsError {
    /// `(status, the query protocol's code, message)`.
    pub(super) fn parts(&self) -> (StatusCode, &str, &str) {
        (self.status, self.query_code, &self.message)
    }

    /// The native API's form of it: the same status, SQS's code and message.
    pub(crate) fn into_api(self) -> crate::ApiError {
        crate::ApiError { status: self.status, code: self.code, message: self.message }
    }
}

/// `http://HOST/000000000000/`: where queue URLs point, as the request reached gust.
fn queue_base(headers: &HeaderMap, tls: bool) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let host: String = host.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    format!("{}://{host}/{ACCOUNT}/", if tls { "https" } else { "http" })
}

struct Ctx<'a> {
    state: &'a AppState,
    access: Option<&'a Access>,
    base: &'a str,
    input: &'a Map<String, Value>,
}

impl Ctx<'_> {
    async fn dispatch(&self, operation: &str) -> SqsResult {
        match operation {
            "CreateQueue" => self.create_queue().await,
            "GetQueueUrl" => self.get_queue_url().await,
            "ListQueues" => self.list_queues().await,
            "DeleteQueue" => self.delete_queue().await,
            "GetQueueAttributes" => self.get_attributes().await,
            "SetQueueAttributes" => self.set_attributes().await,
            "PurgeQueue" => self.purge().await,
            "SendMessage" => self.send_message().await,
            "SendMessageBatch" => self.send_batch().await,
            "ReceiveMessage" => self.receive().await,
            "DeleteMessage" => self.delete_message().await,
            "DeleteMessageBatch" => self.delete_batch().await,
            "ChangeMessageVisibility" => self.change_visibility().await,
            "ChangeMessageVisibilityBatch" => self.change_visibility_batch().await,
            "StartMessageMoveTask" => self.start_move().await,
            "ListMessageMoveTasks" => self.list_moves().await,
            "CancelMessageMoveTask" => {
                self.allow(Action::Deploy)?;
                self.required("TaskHandle")?;
                // Tasks run to completion when started: none is ever running to cancel.
                Err(SqsError::new(
                    "ResourceNotFoundException",
                    "ResourceNotFoundException",
                    "No running message move task has this handle (gust's tasks complete when started).",
                ))
            }
            "AddPermission"
            | "RemovePermission"
            | "TagQueue"
            | "UntagQueue"
            | "ListQueueTags"
            | "ListDeadLetterSourceQueues" => Err(SqsError::new(
                "UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation",
                format!("gust does not support {operation} yet"),
            )),
            other => Err(SqsError::new(
                "InvalidAction",
                "InvalidAction",
                format!("An invalid action was specified: {}", other.chars().take(80).collect::<String>()),
            )),
        }
    }

    /// The caller may do `action` on queues.
    fn allow(&self, action: Action) -> Result<(), SqsError> {
        let Some(access) = self.access else { return Ok(()) };
        let denied = |m: String| SqsError {
            status: StatusCode::FORBIDDEN,
            ..SqsError::new("AccessDenied", "AccessDenied", m)
        };
        access.check(action, None).map_err(|d| denied(d.0))?;
        if access.0.functions.is_some() {
            return Err(denied(format!(
                "{} is limited to some functions and has no queues",
                access.0.principal
            )));
        }
        Ok(())
    }

    fn str(&self, name: &str) -> Result<Option<&str>, SqsError> {
        match self.input.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(SqsError::invalid(format!("{name} must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<&str, SqsError> {
        self.str(name)?.ok_or_else(|| SqsError::missing(name))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, SqsError> {
        int_of(self.input.get(name), name)
    }

    /// The queue `QueueUrl` names.
    async fn queue(&self) -> Result<Queue, SqsError> {
        let url = self.required("QueueUrl")?;
        let name = name_of_url(url).ok_or_else(|| {
            SqsError::new(
                "InvalidAddress",
                "InvalidAddress",
                format!(
                    "The address {} is not valid for this endpoint.",
                    url.chars().take(200).collect::<String>()
                ),
            )
        })?;
        Ok(self.state.service.queue(name).await?)
    }

    fn url_of(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    async fn create_queue(&self) -> SqsResult {
        self.allow(Action::Deploy)?;
        let name = self.required("QueueName")?;
        gust_core::queue::validate_queue_name(name).map_err(SqsError::invalid)?;
        let attributes = parse_attributes(self.input.get("Attributes"), QueueAttributes::default())?;
        if name.ends_with(".fifo") != attributes.fifo {
            return Err(SqsError::invalid(
                "The name of a FIFO queue must end with the .fifo suffix, and a queue whose name ends with .fifo must set FifoQueue to true",
            ));
        }
        check_fifo_attributes(&attributes)?;
        let queue = self.state.service.create_queue(name, attributes).await?;
        Ok(json!({ "QueueUrl": self.url_of(&queue.name) }))
    }

    async fn get_queue_url(&self) -> SqsResult {
        self.allow(Action::Read)?;
        let name = self.required("QueueName")?;
        gust_core::queue::validate_queue_name(name).map_err(|_| SqsError::no_queue())?;
        let queue = self.state.service.queue(name).await?;
        Ok(json!({ "QueueUrl": self.url_of(&queue.name) }))
    }

    async fn list_queues(&self) -> SqsResult {
        self.allow(Action::Read)?;
        let prefix = self.str("QueueNamePrefix")?.unwrap_or("");
        let max = self.int("MaxResults")?;
        if max.is_some_and(|m| !(1..=1000).contains(&m)) {
            return Err(SqsError::invalid("MaxResults must be an integer from 1 to 1000"));
        }
        let after = self.str("NextToken")?;
        let name_chars =
            |s: &str| s.len() <= 80 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_chars(prefix) {
            return Err(SqsError::invalid(
                "QueueNamePrefix may hold only letters, digits, hyphens and underscores (at most 80)",
            ));
        }
        if after.is_some_and(|t| !name_chars(t)) {
            return Err(SqsError::invalid("Invalid NextToken value."));
        }
        let limit = max.unwrap_or(1000) as usize;
        let page = self.state.service.list_queues(prefix, after, limit).await?;
        let mut out = json!({ "QueueUrls": page.iter().map(|q| self.url_of(&q.name)).collect::<Vec<_>>() });
        // A token only when the caller pages (SQS gives one only with MaxResults).
        if max.is_some() && page.len() == limit {
            out["NextToken"] = json!(page.last().map(|q| q.name.clone()));
        }
        Ok(out)
    }

    async fn delete_queue(&self) -> SqsResult {
        self.allow(Action::Deploy)?;
        let queue = self.queue().await?;
        self.state.service.delete_queue(&queue.name).await?;
        Ok(json!({}))
    }

    async fn get_attributes(&self) -> SqsResult {
        self.allow(Action::Read)?;
        let queue = self.queue().await?;
        let wanted = names(self.input.get("AttributeNames"))?;
        let counts = self.state.service.queue_counts(&queue).await?;
        let mut all = queue.attributes.to_map();
        all.insert("QueueArn".into(), gust_core::queue::queue_arn(&queue.name));
        all.insert("ApproximateNumberOfMessages".into(), counts.visible.to_string());
        all.insert("ApproximateNumberOfMessagesNotVisible".into(), counts.in_flight.to_string());
        all.insert("ApproximateNumberOfMessagesDelayed".into(), counts.delayed.to_string());
        all.insert("CreatedTimestamp".into(), (queue.created_at / 1000).to_string());
        all.insert("LastModifiedTimestamp".into(), (queue.updated_at / 1000).to_string());
        let mut out = BTreeMap::new();
        for name in &wanted {
            if name == "All" {
                out.extend(all.clone());
            } else if let Some(v) = all.get(name) {
                out.insert(name.clone(), v.clone());
            } else if !matches!(
                name.as_str(),
                "FifoQueue" | "ContentBasedDeduplication" | "DeduplicationScope" | "FifoThroughputLimit"
            ) {
                return Err(SqsError::new(
                    "InvalidAttributeName",
                    "InvalidAttributeName",
                    format!("Unknown Attribute {}.", name.chars().take(80).collect::<String>()),
                ));
            }
        }
        Ok(if out.is_empty() { json!({}) } else { json!({ "Attributes": out }) })
    }

    async fn set_attributes(&self) -> SqsResult {
        self.allow(Action::Deploy)?;
        let queue = self.queue().await?;
        if self.input.get("Attributes").is_none() {
            return Err(SqsError::missing("Attributes"));
        }
        let attributes = parse_attributes(self.input.get("Attributes"), queue.attributes.clone())?;
        if attributes.fifo != queue.attributes.fifo {
            return Err(SqsError::invalid("FifoQueue cannot be changed once a queue exists"));
        }
        check_fifo_attributes(&attributes)?;
        self.state.service.set_queue_attributes(&queue.name, attributes).await?;
        Ok(json!({}))
    }

    async fn purge(&self) -> SqsResult {
        self.allow(Action::Deploy)?;
        let queue = self.queue().await?;
        self.state.service.purge_queue(&queue).await?;
        Ok(json!({}))
    }

    async fn send_message(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let entry = message_entry(self.input, &queue)?;
        let out = json!({ "MD5OfMessageBody": md5_of_body(&entry.0.body) });
        let mut out = with_attributes_md5(out, "MD5OfMessageAttributes", &entry.0.attributes);
        let sent = self.state.service.send_messages(&queue, vec![entry]).await?;
        with_sent(&mut out, sent.first());
        Ok(out)
    }

    async fn send_batch(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let entries = batch_entries(self.input)?;
        let total: usize = entries.iter().map(entry_size).sum();
        if total > queue.attributes.maximum_message_size as usize {
            return Err(SqsError::new(
                "BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                format!(
                    "Batch requests cannot be longer than {} bytes.",
                    queue.attributes.maximum_message_size
                ),
            ));
        }
        let (mut ok, mut failed, mut messages) = (Vec::new(), Vec::new(), Vec::new());
        for e in &entries {
            let id = e.get("Id").and_then(Value::as_str).unwrap_or_default();
            match message_entry(e, &queue) {
                Ok(m) => {
                    let out = json!({ "Id": id, "MD5OfMessageBody": md5_of_body(&m.0.body) });
                    ok.push(with_attributes_md5(out, "MD5OfMessageAttributes", &m.0.attributes));
                    messages.push(m);
                }
                Err(err) => failed.push(entry_failure(id, &err)),
            }
        }
        if !messages.is_empty() {
            let sent = self.state.service.send_messages(&queue, messages).await?;
            for (out, sent) in ok.iter_mut().zip(&sent) {
                with_sent(out, Some(sent));
            }
        }
        Ok(json!({ "Successful": ok, "Failed": failed }))
    }

    async fn receive(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let max = self.int("MaxNumberOfMessages")?.unwrap_or(1);
        if !(1..=MAX_BATCH as i64).contains(&max) {
            return Err(SqsError::invalid(format!(
                "Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
            )));
        }
        let visibility = match self.int("VisibilityTimeout")? {
            None => queue.attributes.visibility_timeout,
            Some(v) if (0..=i64::from(MAX_VISIBILITY_TIMEOUT)).contains(&v) => v as u32,
            Some(v) => {
                return Err(SqsError::invalid(format!(
                "Value {v} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )))
            }
        };
        let wait = match self.int("WaitTimeSeconds")? {
            None => queue.attributes.receive_message_wait_time_seconds,
            Some(w) if (0..=i64::from(MAX_WAIT_SECONDS)).contains(&w) => w as u32,
            Some(w) => return Err(SqsError::invalid(format!("Value {w} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."))),
        };
        let mut system = names(self.input.get("AttributeNames"))?;
        system.extend(names(self.input.get("MessageSystemAttributeNames"))?);
        let user = names(self.input.get("MessageAttributeNames"))?;
        let got = self
            .state
            .service
            .receive_messages(&queue, max as usize, visibility, Duration::from_secs(u64::from(wait)))
            .await?;
        let messages: Vec<Value> = got.iter().map(|r| message_view(&queue, r, &system, &user)).collect();
        Ok(if messages.is_empty() { json!({}) } else { json!({ "Messages": messages }) })
    }

    /// The queue an ARN of gust's names.
    async fn queue_of_arn(&self, key: &str) -> Result<Queue, SqsError> {
        let arn = self.required(key)?;
        let name = gust_core::queue::queue_of_arn(arn).ok_or_else(|| {
            SqsError::invalid(format!(
                "{key} {} is not a gust queue's ARN",
                arn.chars().take(200).collect::<String>()
            ))
        })?;
        Ok(self.state.service.queue(name).await?)
    }

    async fn start_move(&self) -> SqsResult {
        self.allow(Action::Deploy)?;
        let source = self.queue_of_arn("SourceArn").await?;
        let destination = match self.str("DestinationArn")? {
            Some(_) => Some(self.queue_of_arn("DestinationArn").await?),
            None => None,
        };
        if destination.as_ref().is_some_and(|d| d.id == source.id) {
            return Err(SqsError::invalid("DestinationArn must be another queue than SourceArn"));
        }
        if let Some(r) = self.int("MaxNumberOfMessagesPerSecond")? {
            if !(1..=500).contains(&r) {
                return Err(SqsError::invalid("MaxNumberOfMessagesPerSecond must be from 1 to 500"));
            }
        }
        let task = self.state.service.move_messages(&source, destination.as_ref()).await?;
        Ok(json!({ "TaskHandle": task.handle }))
    }

    async fn list_moves(&self) -> SqsResult {
        self.allow(Action::Read)?;
        let source = self.queue_of_arn("SourceArn").await?;
        let results: Vec<Value> = self
            .state
            .service
            .move_tasks(&source)
            .await?
            .iter()
            .map(|t| {
                let mut v = json!({
                    "TaskHandle": t.handle,
                    "Status": "COMPLETED",
                    "SourceArn": gust_core::queue::queue_arn(&t.source),
                    "ApproximateNumberOfMessagesMoved": t.moved,
                    "ApproximateNumberOfMessagesToMove": t.to_move,
                    "StartedTimestamp": t.started_at,
                });
                if let Some(d) = &t.destination {
                    v["DestinationArn"] = json!(gust_core::queue::queue_arn(d));
                }
                v
            })
            .collect();
        Ok(json!({ "Results": results }))
    }

    async fn delete_message(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let handle = self.required("ReceiptHandle")?;
        let (message, token) = parse_receipt(&queue, handle)?;
        self.state.service.delete_message(&queue, &message, &token).await?;
        Ok(json!({}))
    }

    async fn delete_batch(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let entries = batch_entries(self.input)?;
        let (mut ok, mut failed, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
        for e in &entries {
            let id = e.get("Id").and_then(Value::as_str).unwrap_or_default();
            let handle = e.get("ReceiptHandle").and_then(Value::as_str).unwrap_or_default();
            match parse_receipt(&queue, handle) {
                Ok(message_and_token) => {
                    deletes.push(message_and_token);
                    ok.push(json!({ "Id": id }));
                }
                Err(err) => failed.push(entry_failure(id, &err)),
            }
        }
        // In one transaction; a stale receipt deletes nothing and is no error (as SQS).
        if !deletes.is_empty() {
            self.state.service.delete_messages(&queue, deletes).await?;
        }
        Ok(json!({ "Successful": ok, "Failed": failed }))
    }

    async fn change_visibility(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let handle = self.required("ReceiptHandle")?;
        let timeout = self.int("VisibilityTimeout")?.ok_or_else(|| SqsError::missing("VisibilityTimeout"))?;
        change_one(self.state, &queue, handle, timeout).await?;
        Ok(json!({}))
    }

    async fn change_visibility_batch(&self) -> SqsResult {
        self.allow(Action::Invoke)?;
        let queue = self.queue().await?;
        let entries = batch_entries(self.input)?;
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for e in &entries {
            let id = e.get("Id").and_then(Value::as_str).unwrap_or_default();
            let handle = e.get("ReceiptHandle").and_then(Value::as_str).unwrap_or_default();
            let changed = match int_of(e.get("VisibilityTimeout"), "VisibilityTimeout") {
                Ok(Some(t)) => change_one(self.state, &queue, handle, t).await,
                Ok(None) => Err(SqsError::missing("VisibilityTimeout")),
                Err(err) => Err(err),
            };
            match changed {
                Ok(()) => ok.push(json!({ "Id": id })),
                Err(err) if err.status.is_server_error() => return Err(err),
                Err(err) => failed.push(entry_failure(id, &err)),
            }
        }
        Ok(json!({ "Successful": ok, "Failed": failed }))
    }
}

async fn change_one(state: &AppState, queue: &Queue, handle: &str, timeout: i64) -> Result<(), SqsError> {
    if !(0..=i64::from(MAX_VISIBILITY_TIMEOUT)).contains(&timeout) {
        return Err(SqsError::invalid(format!(
            "Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
        )));
    }
    let (message, token) = parse_receipt(queue, handle)?;
    if !state.service.change_visibility(queue, &message, &token, timeout as u32).await? {
        return Err(SqsError::new(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            "Message does not exist or is not available for visibility timeout change.",
        ));
    }
    Ok(())
}

fn int_of(v: Option<&Value>, name: &str) -> Result<Option<i64>, SqsError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| SqsError::invalid(format!("{name} must be an integer")))
        }
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| SqsError::invalid(format!("{name} must be an integer")))
        }
        Some(_) => Err(SqsError::invalid(format!("{name} must be an integer"))),
    }
}

/// A list of names (attribute names), at most 100 of at most 256 characters.
fn names(v: Option<&Value>) -> Result<Vec<String>, SqsError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let list = v.as_array().ok_or_else(|| SqsError::invalid("attribute names must be a list"))?;
    if list.len() > 100 {
        return Err(SqsError::invalid("at most 100 attribute names"));
    }
    list.iter()
        .map(|n| {
            n.as_str()
                .filter(|s| s.len() <= 256)
                .map(str::to_string)
                .ok_or_else(|| SqsError::invalid("attribute names must be strings"))
        })
        .collect()
}

/// Queue attributes from SQS's map of strings, over `base`.
fn parse_attributes(v: Option<&Value>, mut base: QueueAttributes) -> Result<QueueAttributes, SqsError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(base) };
    let map = v.as_object().ok_or_else(|| SqsError::invalid("Attributes must be a map"))?;
    for (name, value) in map {
        let value =
            value.as_str().ok_or_else(|| SqsError::invalid(format!("attribute {name} must be a string")))?;
        base.set(name, value)?;
    }
    Ok(base)
}

/// The queue name a queue URL (`http(s)://HOST/ACCOUNT/NAME`) names.
fn name_of_url(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (_host, path) = rest.split_once('/')?;
    let (account, name) = path.split_once('/')?;
    let account_ok = !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit());
    (account_ok && gust_core::queue::validate_queue_name(name).is_ok()).then_some(name)
}

/// A receipt handle (see [`gust_core::queue::receipt_handle`]).
fn receipt_handle(queue: &Queue, r: &Received) -> String {
    gust_core::queue::receipt_handle(&queue.id, &r.message.id, &r.receipt)
}

/// The message and receipt token a handle names, if it is one of this queue's.
fn parse_receipt(queue: &Queue, handle: &str) -> Result<(String, String), SqsError> {
    gust_core::queue::parse_receipt_handle(&queue.id, handle).ok_or_else(|| SqsError::receipt(handle))
}

/// The entries of a batch request: 1-10, each with a distinct, well-formed `Id`.
fn batch_entries(input: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, SqsError> {
    let entries = match input.get("Entries") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(SqsError::missing("Entries")),
        Some(_) => return Err(SqsError::invalid("Entries must be a list")),
    };
    if entries.is_empty() {
        return Err(SqsError::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one SendMessageBatchRequestEntry in the request.",
        ));
    }
    if entries.len() > MAX_BATCH {
        return Err(SqsError::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are {MAX_BATCH}. You have sent {}.",
                entries.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in entries {
        let e = e.as_object().ok_or_else(|| SqsError::invalid("each entry must be an object"))?;
        let id = e.get("Id").and_then(Value::as_str).ok_or_else(|| SqsError::missing("Id"))?;
        let id_ok = (1..=80).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(SqsError::new("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long."));
        }
        if !seen.insert(id) {
            return Err(SqsError::new(
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
        out.push(e.clone());
    }
    Ok(out)
}

/// What an entry of a send counts toward a batch's size: its body, and its attributes' names,
/// types and values.
fn entry_size(e: &Map<String, Value>) -> usize {
    let body = e.get("MessageBody").and_then(Value::as_str).map_or(0, str::len);
    let attributes: usize = e
        .get("MessageAttributes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, a)| {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map_or(0, str::len);
            name.len() + field("DataType") + field("StringValue") + field("BinaryValue") * 3 / 4
        })
        .sum();
    body + attributes
}

fn entry_failure(id: &str, e: &SqsError) -> Value {
    json!({ "Id": id, "SenderFault": !e.status.is_server_error(), "Code": e.query_code, "Message": e.message })
}

/// FIFO-only attributes only on FIFO queues; a FIFO queue's dead-letter queue is FIFO too
/// (a standard one's is standard: SQS checks both ways).
fn check_fifo_attributes(a: &QueueAttributes) -> Result<(), SqsError> {
    let fifo_only = a.content_based_deduplication
        || a.inert.contains_key("DeduplicationScope")
        || a.inert.contains_key("FifoThroughputLimit");
    if fifo_only && !a.fifo {
        return Err(SqsError::invalid(
            "ContentBasedDeduplication, DeduplicationScope and FifoThroughputLimit are only for FIFO queues",
        ));
    }
    if let Some(r) = &a.redrive_policy {
        if r.dead_letter_queue.ends_with(".fifo") != a.fifo {
            return Err(SqsError::invalid(
                "Value for parameter RedrivePolicy is invalid. Reason: the dead-letter queue of a FIFO queue must be a FIFO queue, and of a standard queue a standard queue.",
            ));
        }
    }
    Ok(())
}

/// A message to send from a request (or batch entry) and its delay in seconds.
fn message_entry(e: &Map<String, Value>, queue: &Queue) -> Result<(NewMessage, u32), SqsError> {
    let body = match e.get("MessageBody") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(SqsError::missing("MessageBody")),
        Some(_) => return Err(SqsError::invalid("MessageBody must be a string")),
    };
    if body.is_empty() {
        return Err(SqsError::missing("MessageBody"));
    }
    if !gust_core::queue::is_message_text(body) {
        return Err(SqsError::new("InvalidMessageContents", "InvalidMessageContents", "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"));
    }
    let attributes: BTreeMap<String, MessageAttribute> = match e.get("MessageAttributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(name, v)| {
                let a = MessageAttribute {
                    data_type: v.get("DataType").and_then(Value::as_str).unwrap_or_default().to_string(),
                    string_value: v.get("StringValue").and_then(Value::as_str).map(str::to_string),
                    binary_value: v.get("BinaryValue").and_then(Value::as_str).map(str::to_string),
                };
                (name.clone(), a)
            })
            .collect(),
        Some(_) => return Err(SqsError::invalid("MessageAttributes must be a map")),
    };
    let attribute_bytes = validate_message_attributes(&attributes).map_err(SqsError::invalid)?;
    let limit = queue.attributes.maximum_message_size as usize;
    if body.len() + attribute_bytes > limit {
        return Err(SqsError::invalid(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
        )));
    }
    let delay = match int_of(e.get("DelaySeconds"), "DelaySeconds")? {
        None => queue.attributes.delay_seconds,
        // A FIFO queue's delay is the queue's (SQS refuses a message's own).
        Some(_) if queue.attributes.fifo => {
            return Err(SqsError::invalid(
                "Value for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
            ))
        }
        Some(d) if (0..=900).contains(&d) => d as u32,
        Some(d) => {
            return Err(SqsError::invalid(format!(
            "Value {d} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
        )))
        }
    };
    let text = |key: &str| match e.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(SqsError::invalid(format!("{key} must be a string"))),
    };
    let (group, dedup) = (text("MessageGroupId")?, text("MessageDeduplicationId")?);
    let fifo = if queue.attributes.fifo {
        let group = group.ok_or_else(|| SqsError::missing("MessageGroupId"))?;
        gust_core::queue::validate_fifo_id("MessageGroupId", group).map_err(SqsError::invalid)?;
        let deduplication = match dedup {
            Some(d) => {
                gust_core::queue::validate_fifo_id("MessageDeduplicationId", d).map_err(SqsError::invalid)?;
                d.to_string()
            }
            None if queue.attributes.content_based_deduplication => {
                use sha2::{Digest, Sha256};
                hex::encode(Sha256::digest(body.as_bytes()))
            }
            None => {
                return Err(SqsError::invalid(
                    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                ))
            }
        };
        Some(gust_core::queue::FifoIds { group: group.to_string(), deduplication })
    } else {
        if dedup.is_some() {
            return Err(SqsError::invalid(
                "Value for parameter MessageDeduplicationId is invalid. Reason: The request includes a parameter that is not valid for this queue type.",
            ));
        }
        // A standard queue takes a group id (SQS's fair queues) and orders nothing by it.
        if let Some(g) = group {
            gust_core::queue::validate_fifo_id("MessageGroupId", g).map_err(SqsError::invalid)?;
        }
        None
    };
    let message = NewMessage {
        id: uuid::Uuid::new_v4().to_string(),
        body: body.clone(),
        attributes,
        visible_at: 0,
        fifo,
    };
    Ok((message, delay))
}

/// A send's answer: the message id (a FIFO duplicate's is the first send's) and, on a FIFO
/// queue, its sequence number.
fn with_sent(out: &mut Value, sent: Option<&gust_core::queue::Sent>) {
    if let Some(sent) = sent {
        out["MessageId"] = json!(sent.id);
        if let Some(seq) = sent.sequence {
            out["SequenceNumber"] = json!(gust_core::queue::sequence_number(seq));
        }
    }
}

fn with_attributes_md5(mut out: Value, key: &str, attributes: &BTreeMap<String, MessageAttribute>) -> Value {
    if let Some(md5) = md5_of_attributes(attributes) {
        out[key] = json!(md5);
    }
    out
}

/// A received message as ReceiveMessage shows it: the system attributes and message
/// attributes asked for (`All`, names, or `prefix.*`).
fn message_view(queue: &Queue, r: &Received, system: &[String], user: &[String]) -> Value {
    let m = &r.message;
    let mut all_system = BTreeMap::from([
        ("SenderId", ACCOUNT.to_string()),
        ("SentTimestamp", m.sent_at.to_string()),
        ("ApproximateReceiveCount", m.receive_count.to_string()),
        ("ApproximateFirstReceiveTimestamp", m.first_received_at.unwrap_or(m.sent_at).to_string()),
    ]);
    if let Some((ids, seq)) = &m.fifo {
        all_system.insert("MessageGroupId", ids.group.clone());
        all_system.insert("MessageDeduplicationId", ids.deduplication.clone());
        all_system.insert("SequenceNumber", gust_core::queue::sequence_number(*seq));
    }
    let attributes: BTreeMap<&str, String> =
        all_system.into_iter().filter(|(k, _)| system.iter().any(|s| s == "All" || s == k)).collect();
    let wanted = |name: &str| {
        user.iter().any(|u| {
            u == "All"
                || u == ".*"
                || u == name
                || u.strip_suffix(".*").is_some_and(|p| name.starts_with(&format!("{p}.")))
        })
    };
    let shown: BTreeMap<String, MessageAttribute> =
        m.attributes.iter().filter(|(k, _)| wanted(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut out = json!({
        "MessageId": m.id,
        "ReceiptHandle": receipt_handle(queue, r),
        "MD5OfBody": md5_of_body(&m.body),
        "Body": m.body,
    });
    if !attributes.is_empty() {
        out["Attributes"] = json!(attributes);
    }
    if !shown.is_empty() {
        let view: Map<String, Value> = shown
            .iter()
            .map(|(k, a)| {
                let mut v = json!({ "DataType": a.data_type });
                if let Some(s) = &a.string_value {
                    v["StringValue"] = json!(s);
                }
                if let Some(b) = &a.binary_value {
                    v["BinaryValue"] = json!(b);
                }
                (k.clone(), v)
            })
            .collect();
        out["MessageAttributes"] = Value::Object(view);
        out = with_attributes_md5(out, "MD5OfMessageAttributes", &shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_name_their_queue() {
        assert_eq!(name_of_url("http://127.0.0.1:9/000000000000/jobs"), Some("jobs"));
        assert_eq!(name_of_url("https://sqs.example/123456789012/a-b_c"), Some("a-b_c"));
        for bad in [
            "jobs",
            "http://h/jobs",
            "http://h/acct/jobs",
            "http://h/0/../x",
            "ftp://h/0/jobs",
            "http://h/0/a/b",
        ] {
            assert_eq!(name_of_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn receipts_name_a_message_of_their_queue_only() {
        let queue = Queue {
            name: "q".into(),
            id: "qid".into(),
            attributes: QueueAttributes::default(),
            created_at: 0,
            updated_at: 0,
        };
        let (id, token) = ("0192b1a4-7c1e-7000-8000-000000000001", "0123456789abcdef0123456789abcdef");
        let r = Received {
            message: gust_core::queue::Message {
                id: id.into(),
                body: "b".into(),
                attributes: BTreeMap::new(),
                sent_at: 0,
                receive_count: 1,
                first_received_at: Some(0),
                fifo: None,
            },
            receipt: token.into(),
        };
        let handle = receipt_handle(&queue, &r);
        assert_eq!(parse_receipt(&queue, &handle).unwrap(), (id.to_string(), token.to_string()));
        let other = Queue { id: "other".into(), ..queue.clone() };
        assert!(parse_receipt(&other, &handle).is_err());
        assert!(parse_receipt(&queue, "garbage!").is_err());
        // Only a UUID and 32 hex digits reach the store: nothing else (a NUL, SQL) does.
        for (m, t) in
            [("m\0", token), (id, "tok"), ("' OR 1=1 --", token), (id, "0123456789abcdef0123456789abcde\0")]
        {
            let forged = gust_core::queue::receipt_handle("qid", m, t);
            assert!(parse_receipt(&queue, &forged).is_err(), "{m:?} {t:?}");
        }
    }
}
