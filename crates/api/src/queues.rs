//! Queues on the native API (`/v1/queues`): REST paths and snake_case shapes around the SQS
//! implementation (`aws::sqs`), so both APIs check and do exactly the same.
//!
//! - `POST /v1/queues` `{"name", "attributes": {SQS attribute: value}}`, `GET /v1/queues?prefix=`
//! - `GET|PATCH|DELETE /v1/queues/{name}` (`PATCH` takes `{"attributes"}`)
//! - `POST /v1/queues/{name}/messages` `{"body", "delay_seconds"?, "attributes"?, "group_id"?,
//!   "deduplication_id"?}` (a FIFO queue's group and deduplication ids)
//! - `POST /v1/queues/{name}/receive` `{"max"?, "wait_seconds"?, "visibility_timeout"?}`
//! - `DELETE /v1/queues/{name}/messages/{receipt}`, `POST /v1/queues/{name}/purge`

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::access::Access;
use crate::aws::sqs;
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/queues", post(create).get(list))
        .route("/v1/queues/{name}", get(show).patch(update).delete(remove))
        .route("/v1/queues/{name}/messages", post(send))
        .route("/v1/queues/{name}/messages/{receipt}", delete(delete_message))
        .route("/v1/queues/{name}/receive", post(receive))
        .route("/v1/queues/{name}/purge", post(purge))
}

/// Largest native queue request: a message of the largest size, JSON-escaped.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

async fn body_json(body: Body) -> Result<Map<String, Value>, ApiError> {
    let bytes = crate::body::read_bounded(body, MAX_BODY_BYTES, "the request").await?;
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match crate::body::parse_json::<Value>(&bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("InvalidRequest", "the body must be a JSON object")),
    }
}

struct Call<'a> {
    state: &'a AppState,
    access: &'a Access,
    headers: &'a HeaderMap,
}

impl Call<'_> {
    async fn op(&self, operation: &str, input: Value) -> Result<Value, ApiError> {
        sqs::call(self.state, Some(self.access), self.headers, operation, input)
            .await
            .map_err(sqs::SqsError::into_api)
    }

    /// The queue's URL (which the SQS operations name it by).
    async fn url(&self, name: &str) -> Result<String, ApiError> {
        let got = self.op("GetQueueUrl", json!({ "QueueName": name })).await?;
        Ok(got["QueueUrl"].as_str().unwrap_or_default().to_string())
    }
}

fn view(name: &str, url: &str, attributes: Option<&Value>) -> Value {
    let mut v = json!({ "name": name, "url": url });
    if let Some(a) = attributes {
        v["attributes"] = a.clone();
    }
    v
}

async fn create(State(state): State<AppState>, access: Access, headers: HeaderMap, body: Body) -> ApiResult {
    let b = body_json(body).await?;
    let name = b
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("InvalidRequest", "name is required"))?;
    let c = Call { state: &state, access: &access, headers: &headers };
    let input =
        json!({ "QueueName": name, "Attributes": b.get("attributes").cloned().unwrap_or(Value::Null) });
    let url = c.op("CreateQueue", input).await?["QueueUrl"].as_str().unwrap_or_default().to_string();
    let attributes =
        c.op("GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] })).await?;
    Ok((StatusCode::CREATED, Json(view(name, &url, attributes.get("Attributes")))).into_response())
}

#[derive(serde::Deserialize)]
struct ListQuery {
    prefix: Option<String>,
}

async fn list(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Query(q): Query<ListQuery>,
) -> ApiResult {
    let c = Call { state: &state, access: &access, headers: &headers };
    let got = c.op("ListQueues", json!({ "QueueNamePrefix": q.prefix.unwrap_or_default() })).await?;
    let queues: Vec<Value> = got["QueueUrls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|url| view(url.rsplit('/').next().unwrap_or_default(), url, None))
        .collect();
    Ok(Json(json!({ "queues": queues })).into_response())
}

async fn show(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Path(name): Path<String>,
) -> ApiResult {
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    let attributes =
        c.op("GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] })).await?;
    Ok(Json(view(&name, &url, attributes.get("Attributes"))).into_response())
}

async fn update(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Path(name): Path<String>, body: Body,
) -> ApiResult {
    let b = body_json(body).await?;
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    let input = json!({ "QueueUrl": url, "Attributes": b.get("attributes").cloned().unwrap_or(Value::Null) });
    c.op("SetQueueAttributes", input).await?;
    show(State(state.clone()), access.clone(), headers.clone(), Path(name)).await
}

async fn remove(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Path(name): Path<String>,
) -> ApiResult {
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    c.op("DeleteQueue", json!({ "QueueUrl": url })).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn purge(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Path(name): Path<String>,
) -> ApiResult {
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    c.op("PurgeQueue", json!({ "QueueUrl": url })).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn send(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Path(name): Path<String>, body: Body,
) -> ApiResult {
    let b = body_json(body).await?;
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    let mut input = json!({ "QueueUrl": url, "MessageBody": b.get("body").cloned().unwrap_or(Value::Null) });
    if let Some(d) = b.get("delay_seconds") {
        input["DelaySeconds"] = d.clone();
    }
    if let Some(a) = b.get("attributes") {
        input["MessageAttributes"] = a.clone();
    }
    for (native, sqs) in [("group_id", "MessageGroupId"), ("deduplication_id", "MessageDeduplicationId")] {
        if let Some(v) = b.get(native) {
            input[sqs] = v.clone();
        }
    }
    let sent = c.op("SendMessage", input).await?;
    let mut out = json!({ "message_id": sent["MessageId"], "md5_of_body": sent["MD5OfMessageBody"] });
    if let Some(seq) = sent.get("SequenceNumber") {
        out["sequence_number"] = seq.clone();
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn receive(
    State(state): State<AppState>, access: Access, headers: HeaderMap, Path(name): Path<String>, body: Body,
) -> ApiResult {
    let b = body_json(body).await?;
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    let mut input = json!({
        "QueueUrl": url,
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    });
    for (ours, theirs) in [
        ("max", "MaxNumberOfMessages"),
        ("wait_seconds", "WaitTimeSeconds"),
        ("visibility_timeout", "VisibilityTimeout"),
    ] {
        if let Some(v) = b.get(ours) {
            input[theirs] = v.clone();
        }
    }
    let got = c.op("ReceiveMessage", input).await?;
    let messages: Vec<Value> = got["Messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            json!({
                "message_id": m["MessageId"],
                "receipt_handle": m["ReceiptHandle"],
                "body": m["Body"],
                "receive_count": m["Attributes"]["ApproximateReceiveCount"].as_str().and_then(|n| n.parse::<u64>().ok()),
                "sent_at": m["Attributes"]["SentTimestamp"].as_str().and_then(|n| n.parse::<i64>().ok()),
                "attributes": m.get("MessageAttributes").cloned().unwrap_or(json!({})),
            })
        })
        .collect();
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn delete_message(
    State(state): State<AppState>, access: Access, headers: HeaderMap,
    Path((name, receipt)): Path<(String, String)>,
) -> ApiResult {
    let c = Call { state: &state, access: &access, headers: &headers };
    let url = c.url(&name).await?;
    c.op("DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": receipt })).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
