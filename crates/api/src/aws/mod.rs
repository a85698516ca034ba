//! The AWS Lambda API (rest-json, `2015-03-31` and its sibling date prefixes), so boto3, the
//! AWS CLI and the JavaScript SDK work against gust with `--endpoint-url`.
//!
//! Like the native API this is a translation onto [`gust_service::Service`]: names, ARNs,
//! shapes and error encoding change here, rules do not. What Lambda has and gust does not (S3
//! code, images, layers, IAM) is refused with `InvalidParameterValueException` naming it.

mod error;
pub(crate) mod functions;
mod invoke;
mod mappings;
mod scheduler;
mod sigv4;
pub(crate) mod sqs;
mod sqs_query;
mod urls;
mod views;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use gust_core::lambda::split_function_name;
use gust_core::names::{validate_function_name, LATEST};

pub(crate) use error::AwsError;

use crate::access::Access;
use crate::AppState;

type AwsResult = Result<Response, AwsError>;

/// Largest request body the AWS API reads: a 50 MB zip, base64 in JSON.
const MAX_AWS_BODY_BYTES: usize = 70 * 1024 * 1024;

pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let r = Router::new()
        .route("/2015-03-31/functions", post(functions::create).get(functions::list))
        .route("/2015-03-31/functions/", get(functions::list))
        .route("/2015-03-31/functions/{name}", get(functions::get).delete(functions::delete))
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(functions::get_configuration).put(functions::update_configuration),
        )
        .route("/2015-03-31/functions/{name}/code", put(functions::update_code))
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(functions::publish).get(functions::list_versions),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(functions::create_alias).get(functions::list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(functions::get_alias).put(functions::update_alias).delete(functions::delete_alias),
        )
        .route("/2015-03-31/functions/{name}/invocations", post(invoke::invoke))
        .route("/2021-11-15/functions/{name}/response-streaming-invocations", post(invoke::invoke_stream))
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(functions::put_concurrency).delete(functions::delete_concurrency),
        )
        .route("/2019-09-30/functions/{name}/concurrency", get(functions::get_concurrency))
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            put(functions::put_event_config)
                .post(functions::update_event_config)
                .get(functions::get_event_config)
                .delete(functions::delete_event_config),
        )
        .route("/2019-09-25/functions/{name}/event-invoke-config/list", get(functions::list_event_configs))
        .route(
            "/2021-10-31/functions/{name}/url",
            post(urls::create).get(urls::get).put(urls::update).delete(urls::delete),
        )
        .route("/2021-10-31/functions/{name}/urls", get(urls::list))
        .route("/2016-08-19/account-settings", get(functions::account_settings))
        .route("/2016-08-19/account-settings/", get(functions::account_settings))
        .route("/2015-03-31/event-source-mappings", post(mappings::create).get(mappings::list))
        .route("/2015-03-31/event-source-mappings/", post(mappings::create).get(mappings::list))
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(mappings::get).put(mappings::update).delete(mappings::delete),
        )
        .route("/schedules", get(scheduler::list))
        .route(
            "/schedules/{name}",
            post(scheduler::create).get(scheduler::get).put(scheduler::update).delete(scheduler::delete),
        )
        .route("/schedule-groups", get(scheduler::list_groups))
        .route(
            "/schedule-groups/{name}",
            post(scheduler::create_group).get(scheduler::get_group).delete(scheduler::delete_group),
        )
        .route(
            "/tags/{*arn}",
            get(scheduler::list_tags).post(scheduler::change_tags).delete(scheduler::change_tags),
        )
        .route("/", post(sqs::handle));
    let r = if state.cfg.aws_auth() {
        r.route_layer(middleware::from_fn(crate::access::authorize))
            .layer(middleware::from_fn_with_state(state, authenticate))
    } else {
        r
    };
    r.layer(middleware::map_response(with_request_id))
}

/// Every AWS API response carries `x-amzn-RequestId` (botocore's `ResponseMetadata.RequestId`).
pub(crate) async fn with_request_id(mut resp: Response) -> Response {
    if !resp.headers().contains_key("x-amzn-requestid") {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-amzn-RequestId", v);
        }
    }
    resp
}

/// SigV4, judged before the body is read wherever the request allows: a missing, malformed,
/// unknown-key or stale Authorization is refused at once, and so is a bad signature over a
/// declared `x-amz-content-sha256` (the body is then read, bounded, and must match the
/// declared hash). Only a request that declares no hash (botocore's) has its body read first,
/// since the signature covers the body's hash, and from a budget of its own (see
/// [`crate::body::MAX_UNAUTHENTICATED_BYTES_IN_FLIGHT`]).
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_signed(&state, req, MAX_AWS_BODY_BYTES).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Checks a SigV4-signed request; its body, if read here, is at most `limit` bytes.
pub(crate) async fn check_signed(state: &AppState, req: Request, limit: usize) -> Result<Request, AwsError> {
    use sha2::{Digest, Sha256};
    use sigv4::DeclaredPayload;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    // Whose key: an `--aws-credential` (or the `--token` as key id `gust`), an admin; else a
    // named key, from the store through its short-lived cache.
    let key_id = sigv4::access_key_id(&parts.headers)?;
    let (secret, caller, named) = match state.cfg.aws_credentials.get(key_id) {
        Some(secret) => {
            let grant = gust_core::Grant::admin(&format!("access key {key_id}"));
            (secret.clone(), Access(std::sync::Arc::new(grant)), None)
        }
        None => match state.keys.by_access_key_id(key_id).await? {
            Some(key) => (key.sigv4_secret.clone(), Access(std::sync::Arc::new(key.grant())), Some(key)),
            None => return Err(sigv4::SigError::UnknownKey.into()),
        },
    };
    let body = {
        let presented = sigv4::check_headers(&parts.headers, &secret, now)?;
        let check = |payload_hash: &str| {
            sigv4::check_signature(&parts.method, &parts.uri, &parts.headers, &presented, payload_hash)
        };
        match sigv4::declared_payload(&parts.headers)? {
            DeclaredPayload::Unsigned => {
                check(sigv4::UNSIGNED_PAYLOAD)?;
                // The handler reads (bounded) what the signature does not cover.
                body
            }
            DeclaredPayload::Sha256(claimed) => {
                check(&claimed)?;
                let bytes = crate::body::read_bounded(body, limit, "the request").await?;
                if hex::encode(Sha256::digest(&bytes)) != claimed {
                    return Err(sigv4::SigError::Invalid(
                        "x-amz-content-sha256 does not match the body".into(),
                    )
                    .into());
                }
                Body::from(bytes)
            }
            DeclaredPayload::Absent => {
                // Read before anyone knows who sent it: from the budget of such reads.
                let bytes = crate::body::read_unauthenticated(body, limit, "the request").await?;
                check(&hex::encode(Sha256::digest(&bytes)))?;
                Body::from(bytes)
            }
        }
    };
    if let Some(key) = named {
        state.keys.record_use(&key, now * 1000);
    }
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, body))
}

/// A FunctionName as clients send it (plain, partial or full ARN, maybe `:qualifier`) plus
/// the `Qualifier` query parameter: `(name, qualifier)`. The two must agree when both are set.
pub(crate) fn target(raw: &str, query: Option<&str>) -> Result<(String, Option<String>), AwsError> {
    let (name, suffix) = split_function_name(raw).ok_or_else(|| {
        AwsError::invalid(format!("FunctionName {:?} is not a name or a Lambda function ARN", truncate(raw)))
    })?;
    validate_function_name(name).map_err(|e| AwsError::invalid(e.to_string()))?;
    let query = query.filter(|q| !q.is_empty());
    let qualifier = match (suffix, query) {
        (Some(a), Some(b)) if a != b => {
            return Err(AwsError::invalid(format!(
                "the qualifier in FunctionName ({a}) and the Qualifier parameter ({b}) differ"
            )))
        }
        (a, b) => a.or(b).map(str::to_string),
    };
    Ok((name.to_string(), qualifier))
}

/// The qualifier, with `$LATEST` spelled as `None`.
pub(crate) fn non_latest(q: Option<String>) -> Option<String> {
    q.filter(|q| q != LATEST)
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

pub(crate) type QueryMap = HashMap<String, String>;
