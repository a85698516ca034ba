use gust_core::names::NameError;
use gust_core::{InvocationId, RoutingError, SpecError};
use gust_store::{Kind, StoreError};
use thiserror::Error;

/// Everything a service call can refuse, in the user's terms. The API maps each variant to
/// one HTTP status; nothing here knows HTTP.
#[derive(Debug, Clone, Error)]
pub enum ServiceError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error(transparent)]
    InvalidConfig(#[from] SpecError),
    #[error(transparent)]
    InvalidRouting(#[from] RoutingError),
    #[error("{0}")]
    InvalidCode(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// Neither this server nor any live worker can run the function's runtime.
    #[error("{0}")]
    RuntimeUnavailable(String),
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: &'static str, size: usize, limit: usize },
    #[error("{} {name} not found", kind.as_str())]
    NotFound { kind: Kind, name: String },
    #[error("revision mismatch: expected {expected}, current is {actual}")]
    RevisionMismatch { expected: u64, actual: u64 },
    #[error(
        "idempotency key was already used for invocation {existing} with a different qualifier or payload"
    )]
    KeyMismatch { existing: InvocationId },
    #[error("{0}")]
    Conflict(String),
    /// The function is at its reserved concurrency.
    #[error("function {function} is at its reserved concurrency of {limit}")]
    Throttled { function: String, limit: u32 },
    /// Too many async invocations are already waiting (of the function, or of all).
    #[error("{waiting} async invocations of {scope} are already waiting (at most {limit}); function {function} cannot queue more until some run")]
    QueueFull { function: String, waiting: u64, limit: u64, scope: &'static str },
    /// A worker's attempt no longer owns the invocation; its report was dropped.
    #[error("{0}")]
    Fenced(String),
    /// An authenticated worker asked for what is not its own (another worker's attempt, code
    /// of work never placed on it). Nothing changed.
    #[error("{0}")]
    WorkerForbidden(String),
    #[error("{0}")]
    Unavailable(String),
    /// The store's disk is full (or below the reserve kept for finishing work already
    /// accepted): new work is refused until space is freed; nothing accepted is lost.
    #[error("{0}; new work is refused until space is freed (work already accepted is kept)")]
    InsufficientStorage(String),
    /// This server is shutting down (SIGTERM): it takes no new invocations; retry elsewhere
    /// or after its restart.
    #[error("the server is shutting down: retry on another server or after its restart")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    /// A configured bound on how many of something may exist (schedules, groups) is reached.
    #[error("{0}")]
    QuotaExceeded(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, name } => ServiceError::NotFound { kind, name },
            StoreError::RevisionMismatch { expected, actual } => {
                ServiceError::RevisionMismatch { expected, actual }
            }
            StoreError::KeyMismatch { existing } => ServiceError::KeyMismatch { existing },
            StoreError::Invalid(msg) => ServiceError::Conflict(msg),
            StoreError::Quota(msg) => ServiceError::QuotaExceeded(msg),
            StoreError::Rejected(r) => ServiceError::Conflict(r.to_string()),
            e @ StoreError::Full(_) => ServiceError::InsufficientStorage(e.to_string()),
            e @ (StoreError::Corrupt(_) | StoreError::Backend(_)) => ServiceError::Internal(e.to_string()),
        }
    }
}
