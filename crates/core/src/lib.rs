//! gust's domain model: functions, versions, aliases, invocations and the invocation state
//! machine, as plain data and pure functions.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio, SQL, HTTP or
//! wasmtime. Time enters as an argument (`Millis`), never from a clock, so every transition is
//! unit-tested without sleeping. The store enforces the same guards atomically where the state
//! lives.

pub mod access;
pub mod filter;
pub mod function;
pub mod invocation;
pub mod lambda;
pub mod limits;
pub mod names;
pub mod outbound;
pub mod peer;
pub mod placement;
pub mod protocol;
pub mod queue;
pub mod routing;
pub mod schedule;
pub mod trace;
pub mod url;

pub use access::{Action, ApiKey, FunctionGlob, Grant, Role};
pub use function::{
    Alias, Deployment, FunctionConfig, FunctionSpec, Resolved, RetryPolicy, Runtime, SpecError, Version,
};
pub use invocation::{
    apply, AcceptedCompletion, AttemptOutcome, Context, ErrorKind, Event, FunctionErrorBody, InvocationId,
    InvocationRecord, InvocationRequest, Lifecycle, Mode, Rejected, Report, State, StateName, WorkerId,
};
pub use names::{NameError, Qualifier};
pub use placement::WorkerState;
pub use routing::{Routing, RoutingError};
pub use url::{AuthType, Cors, FunctionUrl, InvokeMode, UrlConfig};

/// Milliseconds since the Unix epoch. Every timestamp in gust is one of these.
pub type Millis = i64;

/// An error and its causes, joined with ": " (a cause already in the text is not repeated):
/// many libraries say only what kind of thing failed ("error sending request", "db error")
/// and keep what went wrong in the causes.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
