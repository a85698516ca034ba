//! Errors as the AWS SDKs parse them: the status, `x-amzn-ErrorType: <Exception>` and a JSON
//! body `{"Type": "User", "message": ...}` (plus modeled fields such as `Reason`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gust_service::ServiceError;
use gust_store::Kind;
use serde_json::{json, Map, Value};

use super::sigv4::SigError;
use crate::ApiError;

#[derive(Debug)]
pub(crate) struct AwsError {
    status: StatusCode,
    exception: &'static str,
    message: String,
    /// Modeled members besides the message (`Reason`, `retryAfterSeconds`).
    extra: Map<String, Value>,
}

impl AwsError {
    pub(crate) fn new(status: StatusCode, exception: &'static str, message: impl Into<String>) -> Self {
        AwsError { status, exception, message: message.into(), extra: Map::new() }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        AwsError::new(StatusCode::BAD_REQUEST, "InvalidParameterValueException", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        AwsError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        AwsError::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    /// The same error under another service's name for its kind (Scheduler's
    /// `ValidationException` for Lambda's `InvalidParameterValueException`, ...).
    pub(crate) fn renamed(mut self, name: impl Fn(&'static str) -> &'static str) -> Self {
        self.exception = name(self.exception);
        self
    }

    pub(crate) fn precondition() -> Self {
        AwsError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            "The RevisionId provided does not match the latest RevisionId for the Lambda function or alias. Call the GetFunction or the GetAlias API to retrieve the latest RevisionId for your resource.",
        )
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        // botocore and the JS SDK accept either spelling; the model uses `Message` for these two.
        let key = match self.exception {
            "ResourceNotFoundException" | "ServiceException" => "Message",
            _ => "message",
        };
        let mut body = self.extra;
        body.insert("Type".into(), json!(if self.status.is_server_error() { "Service" } else { "User" }));
        body.insert(key.into(), json!(self.message));
        let retry_after = body.get("retryAfterSeconds").and_then(Value::as_str).map(str::to_string);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        resp.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(self.exception));
        if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s).ok()) {
            resp.headers_mut().insert("Retry-After", v);
        }
        resp
    }
}

impl From<ServiceError> for AwsError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::InvalidName(_)
            | ServiceError::InvalidConfig(_)
            | ServiceError::InvalidRouting(_)
            | ServiceError::InvalidCode(_)
            | ServiceError::InvalidRequest(_)
            | ServiceError::RuntimeUnavailable(_) => AwsError::invalid(message),
            ServiceError::TooLarge { .. } => {
                AwsError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", message)
            }
            ServiceError::NotFound { kind, name } => {
                let what = match kind {
                    Kind::Function => "Function",
                    Kind::Version => "Function version",
                    Kind::Alias => "Alias",
                    Kind::Invocation => "Invocation",
                    Kind::Artifact => "Code",
                    Kind::Worker => "Worker",
                    Kind::ApiKey => "API key",
                    Kind::FunctionUrl => "The resource you requested does not exist. Function URL config",
                    Kind::Queue => "Queue",
                    Kind::EventSourceMapping => {
                        "The resource you requested does not exist. Event source mapping"
                    }
                    Kind::Schedule => "Schedule",
                    Kind::ScheduleGroup => "Schedule group",
                };
                AwsError::not_found(format!("{what} not found: {}", arn_of(&name)))
            }
            ServiceError::RevisionMismatch { .. } => AwsError::precondition(),
            ServiceError::KeyMismatch { .. } | ServiceError::Conflict(_) | ServiceError::Fenced(_) => {
                AwsError::conflict(message)
            }
            ServiceError::Throttled { .. } => {
                let mut e = AwsError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                );
                e.extra.insert("Reason".into(), json!("ReservedFunctionConcurrentInvocationLimitExceeded"));
                e.extra.insert("retryAfterSeconds".into(), json!("1"));
                e
            }
            // Scheduler's name and status for it (Lambda has none of these bounds).
            ServiceError::QuotaExceeded(_) => {
                AwsError::new(StatusCode::PAYMENT_REQUIRED, "ServiceQuotaExceededException", message)
            }
            ServiceError::QueueFull { .. } => {
                let mut e = AwsError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", message);
                e.extra.insert("Reason".into(), json!("CallerRateLimitExceeded"));
                e.extra.insert("retryAfterSeconds".into(), json!("1"));
                e
            }
            // Only the worker protocol refuses this; the AWS API never does.
            ServiceError::WorkerForbidden(_) => {
                AwsError::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
            }
            // Lambda has no full-disk error: 503 ServiceException is one every SDK parses and
            // retries with backoff (507 is not in their transient list), and it passes once
            // space is freed.
            ServiceError::Unavailable(_)
            | ServiceError::ShuttingDown
            | ServiceError::InsufficientStorage(_) => {
                AwsError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", message)
            }
            ServiceError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                AwsError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "internal error")
            }
        }
    }
}

/// `f` or `f:q` as the ARN Lambda names in its messages.
fn arn_of(name: &str) -> String {
    match name.split_once(':') {
        Some((f, q)) => gust_core::lambda::function_arn(f, Some(q)),
        None => gust_core::lambda::function_arn(name, None),
    }
}

impl From<ApiError> for AwsError {
    fn from(e: ApiError) -> Self {
        match e.status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                AwsError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", e.message)
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                AwsError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaTypeException", e.message)
            }
            // The bounded reader's deadline and its share of the body budget.
            StatusCode::REQUEST_TIMEOUT => {
                AwsError::new(StatusCode::REQUEST_TIMEOUT, "RequestTimeoutException", e.message)
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                AwsError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", e.message)
            }
            _ => AwsError::new(StatusCode::BAD_REQUEST, "InvalidRequestContentException", e.message),
        }
    }
}

impl From<SigError> for AwsError {
    fn from(e: SigError) -> Self {
        match e {
            SigError::Missing => AwsError::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token: sign the request with SigV4 (AWS4-HMAC-SHA256)",
            ),
            SigError::UnknownKey => AwsError::new(
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            SigError::Invalid(why) => AwsError::new(StatusCode::FORBIDDEN, "InvalidSignatureException", why),
        }
    }
}
