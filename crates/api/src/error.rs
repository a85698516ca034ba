use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gust_core::protocol::ErrorCode;
use gust_service::ServiceError;
use gust_store::Kind;
use serde_json::json;

/// An error as every endpoint reports it: a status and `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        ApiError { status, code, message: message.to_string() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            ServiceError::InvalidName(_) => (StatusCode::BAD_REQUEST, "InvalidName"),
            ServiceError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "InvalidConfig"),
            ServiceError::InvalidRouting(_) => (StatusCode::BAD_REQUEST, "InvalidRouting"),
            ServiceError::InvalidCode(_) => (StatusCode::BAD_REQUEST, "InvalidCode"),
            ServiceError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            ServiceError::RuntimeUnavailable(_) => (StatusCode::BAD_REQUEST, "RuntimeUnavailable"),
            ServiceError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
            ServiceError::NotFound { kind, .. } => (
                StatusCode::NOT_FOUND,
                match kind {
                    Kind::Function => "FunctionNotFound",
                    Kind::Version => "VersionNotFound",
                    Kind::Alias => "AliasNotFound",
                    Kind::Invocation => "InvocationNotFound",
                    Kind::Artifact => "ArtifactNotFound",
                    Kind::Worker => "WorkerNotFound",
                    Kind::ApiKey => "TokenNotFound",
                    Kind::FunctionUrl => "UrlNotFound",
                    Kind::Queue => "QueueNotFound",
                    Kind::EventSourceMapping => "EventSourceMappingNotFound",
                    Kind::Schedule => "ScheduleNotFound",
                    Kind::ScheduleGroup => "ScheduleGroupNotFound",
                },
            ),
            ServiceError::RevisionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "RevisionMismatch"),
            ServiceError::KeyMismatch { .. } => (StatusCode::CONFLICT, "IdempotencyKeyMismatch"),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ServiceError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "Throttled"),
            ServiceError::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "QueueFull"),
            ServiceError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "QuotaExceeded"),
            // The worker protocol's refusals: codes a worker reads (`gust_core::protocol`).
            ServiceError::Fenced(_) => (StatusCode::CONFLICT, ErrorCode::Fenced.as_str()),
            ServiceError::WorkerForbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden.as_str()),
            ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            ServiceError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown"),
            ServiceError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage"),
            ServiceError::Internal(_) => {
                // Logged in full; the caller is told nothing of the backend (its errors name
                // tables, bytes and versions).
                tracing::error!(error = %message, "internal error");
                let message = "internal error (see the server's log)".to_string();
                return ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "Internal", message };
            }
        };
        ApiError { status, code, message }
    }
}
