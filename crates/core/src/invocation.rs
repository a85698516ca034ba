//! Invocations: the immutable request, and the lifecycle state machine of DESIGN.md.
//!
//! ```text
//! QUEUED ──place──▶ PLACED(worker) ──claim──▶ RUNNING(worker, epoch, lease) ──complete(epoch)──▶ SUCCEEDED | FAILED
//!    ▲                   │ placement times out            │ lease expires / worker dies
//!    └───────────────────┴────────────────────────────────┘  (async: retried with epoch+1; sync: FAILED "worker lost")
//! RUNNING ──error, retries left──▶ RETRY_WAIT(not_before) ──▶ QUEUED        QUEUED/RETRY_WAIT ──too old──▶ EXPIRED
//! ```
//!
//! [`apply`] is the only definition of these rules. Stores call it inside the transaction that
//! holds the row, so the guard and the write are one atomic step.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::function::{Resolved, RetryPolicy};
use crate::limits::MAX_LOST_ATTEMPTS;
use crate::Millis;

/// An invocation id: a UUIDv7 string, so ids sort by arrival.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvocationId(pub String);

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker's id: stable name plus boot epoch, e.g. `local-01J...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The caller waits for the result. Never re-run by the platform once an attempt started.
    Sync,
    /// Acknowledged with 202 once durable; run at least once, retried on failure.
    Async,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sync" => Some(Mode::Sync),
            "async" => Some(Mode::Async),
            _ => None,
        }
    }
}

/// An invocation as it arrived: an immutable fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRequest {
    pub id: InvocationId,
    pub function: String,
    /// The qualifier exactly as the client gave it (`$LATEST`, `3`, `live`).
    pub qualifier: String,
    /// What the qualifier resolved to at ingest; every attempt runs this.
    pub resolved: Resolved,
    pub payload: Bytes,
    pub mode: Mode,
    pub idempotency_key: Option<String>,
    /// sha256 (hex) of qualifier and payload, when there is an idempotency key: a reused key
    /// must match it.
    pub fingerprint: Option<String>,
    pub received_at: Millis,
    /// The retry policy of the resolved version, frozen with the request.
    pub retry: RetryPolicy,
    /// Lambda's ClientContext (the JSON the caller sent, decoded; sync only), handed to the
    /// runtime of whichever worker runs the invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
    /// The trace it belongs to, in X-Ray's header form ([`crate::trace::Trace::xray`]): the
    /// caller's (`X-Amzn-Trace-Id` or `traceparent`) or one started at ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Where an invocation is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Queued,
    Placed { worker: WorkerId, placed_at: Millis },
    Running { worker: WorkerId, lease_expires_at: Millis },
    RetryWait { not_before: Millis },
    Succeeded,
    Failed,
    Expired,
}

/// The state without its data: what the store indexes and the API filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateName {
    Queued,
    Placed,
    Running,
    RetryWait,
    Succeeded,
    Failed,
    Expired,
}

impl StateName {
    pub const ALL: [StateName; 7] = [
        StateName::Queued,
        StateName::Placed,
        StateName::Running,
        StateName::RetryWait,
        StateName::Succeeded,
        StateName::Failed,
        StateName::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Queued => "QUEUED",
            StateName::Placed => "PLACED",
            StateName::Running => "RUNNING",
            StateName::RetryWait => "RETRY_WAIT",
            StateName::Succeeded => "SUCCEEDED",
            StateName::Failed => "FAILED",
            StateName::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        StateName::ALL.into_iter().find(|n| n.as_str().eq_ignore_ascii_case(s))
    }

    pub fn is_terminal(self) -> bool {
        match self {
            StateName::Succeeded | StateName::Failed | StateName::Expired => true,
            StateName::Queued | StateName::Placed | StateName::Running | StateName::RetryWait => false,
        }
    }
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Queued => StateName::Queued,
            State::Placed { .. } => StateName::Placed,
            State::Running { .. } => StateName::Running,
            State::RetryWait { .. } => StateName::RetryWait,
            State::Succeeded => StateName::Succeeded,
            State::Failed => StateName::Failed,
            State::Expired => StateName::Expired,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.name().is_terminal()
    }
}

/// The mutable part of an invocation, guarded by `(state, attempt_epoch)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub state: State,
    /// Number of claims so far; the current attempt's fencing token.
    pub attempt_epoch: u64,
    /// Attempts that ended in a function error.
    pub function_errors: u32,
    /// Attempts lost to a dead or fenced worker (lease expiry).
    pub lost_attempts: u32,
}

impl Lifecycle {
    pub fn queued() -> Self {
        Lifecycle { state: State::Queued, attempt_epoch: 0, function_errors: 0, lost_attempts: 0 }
    }

    /// A sync invocation with an idempotency key is reserved already claimed: epoch 1, running.
    pub fn claimed(worker: WorkerId, lease_expires_at: Millis) -> Self {
        Lifecycle {
            state: State::Running { worker, lease_expires_at },
            attempt_epoch: 1,
            function_errors: 0,
            lost_attempts: 0,
        }
    }
}

/// How one attempt ended, as reported by its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    Succeeded,
    /// The function failed (error, trap, timeout, out of memory): may be retried if async.
    FunctionError,
    /// The attempt was not run: the function was at its reserved concurrency. An async
    /// invocation waits and tries again (until its maximum age) without counting an error.
    Throttled,
}

/// Something that happens to an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Place {
        worker: WorkerId,
    },
    PlacementTimedOut,
    Claim {
        worker: WorkerId,
        lease_expires_at: Millis,
    },
    RenewLease {
        worker: WorkerId,
        epoch: u64,
        lease_expires_at: Millis,
    },
    /// The report of the attempt `epoch` by `worker`, which must be the attempt's owner.
    Complete {
        worker: WorkerId,
        epoch: u64,
        outcome: AttemptOutcome,
    },
    LeaseExpired,
    RetryDue,
    Expire,
    /// The function was deleted: pending work can never run.
    Cancel,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Place { .. } => "place",
            Event::PlacementTimedOut => "placement timeout",
            Event::Claim { .. } => "claim",
            Event::RenewLease { .. } => "renew lease",
            Event::Complete { .. } => "complete",
            Event::LeaseExpired => "lease expiry",
            Event::RetryDue => "retry",
            Event::Expire => "expire",
            Event::Cancel => "cancel",
        }
    }
}

/// Why a transition was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The caller's attempt no longer owns the invocation (superseded or its lease was
    /// recovered): it is fenced, and whatever it reports is dropped.
    #[error("attempt epoch {given} no longer owns the invocation (current epoch {current})")]
    Fenced { current: u64, given: u64 },
    #[error("the attempt is owned by another worker")]
    NotOwner,
    #[error("the invocation already ended as {0:?}")]
    Terminal(StateName),
    /// A repeated report of the attempt whose completion was already accepted (e.g. a retry
    /// after a lost reply): nothing changes, and the reporter may treat it as accepted.
    #[error("attempt {0} already completed this invocation")]
    AlreadyCompleted(u64),
    #[error("cannot {event} an invocation in state {from:?}")]
    InvalidTransition { from: StateName, event: &'static str },
    #[error("the lease has not expired yet")]
    LeaseNotExpired,
    #[error("the retry is not due yet")]
    NotDue,
    #[error("the event is older than its maximum age")]
    TooOld,
    #[error("the event is not older than its maximum age")]
    NotTooOld,
}

/// What an invocation needs to know about itself to take a transition.
#[derive(Debug, Clone)]
pub struct Context {
    pub mode: Mode,
    pub received_at: Millis,
    pub retry: RetryPolicy,
    /// The last completion accepted for this invocation (stores record it with the transition
    /// that accepted it), so a repeated report of it is recognised rather than refused.
    pub completed: Option<AcceptedCompletion>,
}

/// A completion that was accepted: its attempt and the worker that reported it (`None` when it
/// was recorded before workers were tracked; it then counts as any reporter's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedCompletion {
    pub epoch: u64,
    pub worker: Option<WorkerId>,
}

impl From<&InvocationRequest> for Context {
    fn from(r: &InvocationRequest) -> Self {
        Context { mode: r.mode, received_at: r.received_at, retry: r.retry.clone(), completed: None }
    }
}

impl Context {
    fn too_old(&self, now: Millis) -> bool {
        self.mode == Mode::Async
            && now.saturating_sub(self.received_at) > (self.retry.max_event_age_s as i64).saturating_mul(1000)
    }
}

/// The invocation state machine: the next lifecycle, or why the event is refused.
pub fn apply(ctx: &Context, lc: &Lifecycle, event: &Event, now: Millis) -> Result<Lifecycle, Rejected> {
    let from = lc.state.name();
    // A repeated report of the last accepted completion (its first reply was lost), while no
    // attempt has started since: recognised, whether that completion ended the invocation or
    // scheduled a retry; the same epoch from any other worker was never its attempt.
    if let (Event::Complete { epoch, worker, .. }, Some(done)) = (event, &ctx.completed) {
        if done.epoch == *epoch && lc.attempt_epoch == *epoch {
            return match &done.worker {
                Some(by) if by != worker => Err(Rejected::NotOwner),
                Some(_) | None => Err(Rejected::AlreadyCompleted(*epoch)),
            };
        }
    }
    if from.is_terminal() {
        // A completion for an ended invocation from an old attempt is a fenced completion.
        if let Event::Complete { epoch, .. } | Event::RenewLease { epoch, .. } = event {
            if *epoch != lc.attempt_epoch {
                return Err(Rejected::Fenced { current: lc.attempt_epoch, given: *epoch });
            }
        }
        return Err(Rejected::Terminal(from));
    }
    let invalid = || Rejected::InvalidTransition { from, event: event.name() };
    let mut next = lc.clone();
    match (event, &lc.state) {
        (Event::Place { worker }, State::Queued) => {
            next.state = State::Placed { worker: worker.clone(), placed_at: now };
        }
        (Event::PlacementTimedOut, State::Placed { .. }) => next.state = State::Queued,
        (Event::Claim { worker, lease_expires_at }, State::Queued | State::Placed { .. }) => {
            if let State::Placed { worker: placed_on, .. } = &lc.state {
                if placed_on != worker {
                    return Err(Rejected::NotOwner);
                }
            }
            if ctx.too_old(now) {
                return Err(Rejected::TooOld);
            }
            next.attempt_epoch += 1;
            next.state = State::Running { worker: worker.clone(), lease_expires_at: *lease_expires_at };
        }
        (Event::RenewLease { worker, epoch, lease_expires_at }, State::Running { worker: owner, .. }) => {
            check_epoch(lc, *epoch)?;
            if owner != worker {
                return Err(Rejected::NotOwner);
            }
            next.state = State::Running { worker: owner.clone(), lease_expires_at: *lease_expires_at };
        }
        (Event::Complete { worker, epoch, outcome }, State::Running { worker: owner, .. }) => {
            check_epoch(lc, *epoch)?;
            if owner != worker {
                return Err(Rejected::NotOwner);
            }
            next.state = match (outcome, ctx.mode) {
                (AttemptOutcome::Succeeded, _) => State::Succeeded,
                (AttemptOutcome::FunctionError | AttemptOutcome::Throttled, Mode::Sync) => State::Failed,
                (AttemptOutcome::Throttled, Mode::Async) => {
                    let delay = ctx.retry.delay_ms(next.attempt_epoch.min(u64::from(u32::MAX)) as u32) as i64;
                    State::RetryWait { not_before: now.saturating_add(delay) }
                }
                (AttemptOutcome::FunctionError, Mode::Async) => {
                    next.function_errors += 1;
                    if next.function_errors <= ctx.retry.max_retries {
                        let delay = ctx.retry.delay_ms(next.function_errors) as i64;
                        State::RetryWait { not_before: now.saturating_add(delay) }
                    } else {
                        State::Failed
                    }
                }
            };
        }
        (Event::Complete { epoch, .. } | Event::RenewLease { epoch, .. }, _) => {
            return Err(Rejected::Fenced { current: lc.attempt_epoch, given: *epoch });
        }
        (Event::LeaseExpired, State::Running { lease_expires_at, .. }) => {
            if now < *lease_expires_at {
                return Err(Rejected::LeaseNotExpired);
            }
            next.lost_attempts += 1;
            next.state = match ctx.mode {
                Mode::Async if next.lost_attempts < MAX_LOST_ATTEMPTS => State::Queued,
                Mode::Async | Mode::Sync => State::Failed,
            };
        }
        (Event::RetryDue, State::RetryWait { not_before }) => {
            if now < *not_before {
                return Err(Rejected::NotDue);
            }
            next.state = State::Queued;
        }
        (Event::Expire, State::Queued | State::Placed { .. } | State::RetryWait { .. }) => {
            if !ctx.too_old(now) {
                return Err(Rejected::NotTooOld);
            }
            next.state = State::Expired;
        }
        (Event::Cancel, _) => next.state = State::Failed,
        (
            Event::Place { .. }
            | Event::PlacementTimedOut
            | Event::Claim { .. }
            | Event::LeaseExpired
            | Event::RetryDue
            | Event::Expire,
            _,
        ) => return Err(invalid()),
    }
    Ok(next)
}

fn check_epoch(lc: &Lifecycle, epoch: u64) -> Result<(), Rejected> {
    if epoch == lc.attempt_epoch {
        Ok(())
    } else {
        Err(Rejected::Fenced { current: lc.attempt_epoch, given: epoch })
    }
}

/// Why an invocation failed, in words a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The function reported an error or exited non-zero.
    FunctionError,
    /// The function trapped (WebAssembly) or crashed.
    Crashed,
    /// The function ran past its timeout.
    Timeout,
    /// The function exceeded its memory limit.
    OutOfMemory,
    /// The code could not be prepared (invalid or missing artifact).
    InitError,
    /// The worker running the attempt was lost (crash, lease expiry).
    WorkerLost,
    /// The event outlived its maximum age before it could run.
    Expired,
    /// The function was deleted before the invocation could finish.
    FunctionDeleted,
    /// The result was larger than the limit.
    ResultTooLarge,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FunctionError => "FunctionError",
            ErrorKind::Crashed => "Crashed",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::OutOfMemory => "OutOfMemory",
            ErrorKind::InitError => "InitError",
            ErrorKind::WorkerLost => "WorkerLost",
            ErrorKind::Expired => "Expired",
            ErrorKind::FunctionDeleted => "FunctionDeleted",
            ErrorKind::ResultTooLarge => "ResultTooLarge",
        }
    }
}

/// The error of a failed attempt, shaped like Lambda's error payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionErrorBody {
    #[serde(rename = "errorType")]
    pub error_type: ErrorKind,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    /// The error JSON the function's runtime posted itself (`errorType`, `errorMessage`,
    /// `stackTrace`, ...), verbatim, when it did: the AWS API returns it as the Invoke payload.
    #[serde(rename = "runtimeError", default, skip_serializing_if = "Option::is_none")]
    pub runtime_error: Option<String>,
}

impl FunctionErrorBody {
    pub fn new(error_type: ErrorKind, error_message: impl Into<String>) -> Self {
        FunctionErrorBody { error_type, error_message: error_message.into(), runtime_error: None }
    }
}

/// An invocation as the store keeps it: request, lifecycle and the last outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub request: InvocationRequest,
    pub lifecycle: Lifecycle,
    /// The function's output (SUCCEEDED) or last output before an error.
    pub result: Option<Bytes>,
    /// The last attempt's error, if it failed.
    pub error: Option<FunctionErrorBody>,
    /// The last attempt's log (stderr), bounded to its tail.
    pub log: String,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    /// The figures of the attempt that reported last (Lambda's REPORT line).
    pub report: Option<Report>,
    /// What happened to it, one JSON object per line (`at`, `event`, and `epoch`, `worker`,
    /// `outcome`, `state`, `retry_at` as they apply), oldest first; bounded, so a very long
    /// history stops growing (its first events are kept).
    pub history: String,
}

/// What an attempt measured, as Lambda's `REPORT` log line gives it: the run's duration, the
/// environment's init duration on a cold start, the memory configured and the most used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When the function was handed the event (after any init), ms since the epoch.
    pub started_at: Millis,
    /// The run, from the event handed over to the answer, in microseconds.
    pub duration_us: u64,
    /// A cold start's init (starting the runtime or loading the module), in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_us: Option<u64>,
    pub memory_mb: u32,
    /// The most memory the environment has used, in MB, where the runtime can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
}

impl Report {
    /// The figures within what an attempt can take (a remote worker's report is not trusted):
    /// a run and an init within the longest timeout, memory within the largest, a start not
    /// after `now`.
    pub fn bounded(self, now: Millis) -> Report {
        let longest_us = crate::limits::MAX_TIMEOUT_MS * 1000;
        Report {
            started_at: self.started_at.clamp(0, now),
            duration_us: self.duration_us.min(longest_us),
            init_us: self.init_us.map(|i| i.min(longest_us)),
            memory_mb: self.memory_mb.min(crate::limits::MAX_MEMORY_MB),
            max_memory_mb: self.max_memory_mb.map(|m| m.min(crate::limits::MAX_MEMORY_MB)),
        }
    }

    /// Lambda's line: `REPORT RequestId: ID\tDuration: 1.71 ms\tBilled Duration: 2 ms\tMemory
    /// Size: 128 MB\tMax Memory Used: 64 MB\tInit Duration: 163.49 ms` (a duration is billed
    /// by the millisecond, rounded up, and init is billed with it).
    pub fn line(&self, request_id: &str) -> String {
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        let billed = self.duration_us.saturating_add(self.init_us.unwrap_or(0)).div_ceil(1000).max(1);
        let mut out = format!(
            "REPORT RequestId: {request_id}\tDuration: {}\tBilled Duration: {billed} ms\tMemory Size: {} MB",
            ms(self.duration_us),
            self.memory_mb
        );
        if let Some(m) = self.max_memory_mb {
            out.push_str(&format!("\tMax Memory Used: {m} MB"));
        }
        if let Some(i) = self.init_us {
            out.push_str(&format!("\tInit Duration: {}", ms(i)));
        }
        out
    }
}

impl InvocationRecord {
    /// A record as stored at ingest: no outcome or log yet.
    pub fn new(request: InvocationRequest, lifecycle: Lifecycle) -> Self {
        let updated_at = request.received_at;
        InvocationRecord {
            request,
            lifecycle,
            result: None,
            error: None,
            log: String::new(),
            updated_at,
            finished_at: None,
            report: None,
            history: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_has_lambda_s_fields() {
        let r = Report {
            started_at: 0,
            duration_us: 1_712,
            init_us: None,
            memory_mb: 128,
            max_memory_mb: Some(64),
        };
        assert_eq!(
            r.line("id-1"),
            "REPORT RequestId: id-1\tDuration: 1.71 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 64 MB"
        );
        let cold = Report { init_us: Some(163_490), duration_us: 40, max_memory_mb: None, ..r };
        assert_eq!(
            cold.line("id-2"),
            "REPORT RequestId: id-2\tDuration: 0.04 ms\tBilled Duration: 164 ms\tMemory Size: 128 MB\tInit Duration: 163.49 ms"
        );
    }

    fn ctx(mode: Mode) -> Context {
        Context {
            mode,
            received_at: 0,
            retry: RetryPolicy {
                max_retries: 2,
                max_event_age_s: 60,
                base_delay_ms: 1000,
                ..RetryPolicy::default()
            },
            completed: None,
        }
    }

    fn w(s: &str) -> WorkerId {
        WorkerId(s.into())
    }

    fn claim(c: &Context, lc: &Lifecycle, worker: &str, now: Millis) -> Lifecycle {
        apply(c, lc, &Event::Claim { worker: w(worker), lease_expires_at: now + 5000 }, now).unwrap()
    }

    #[test]
    fn happy_path_place_claim_complete() {
        let c = ctx(Mode::Async);
        let lc = Lifecycle::queued();
        let placed = apply(&c, &lc, &Event::Place { worker: w("a") }, 1).unwrap();
        assert_eq!(placed.state.name(), StateName::Placed);
        assert_eq!(
            apply(&c, &placed, &Event::Claim { worker: w("b"), lease_expires_at: 9 }, 2),
            Err(Rejected::NotOwner)
        );
        let running = claim(&c, &placed, "a", 2);
        assert_eq!(running.attempt_epoch, 1);
        let done = apply(
            &c,
            &running,
            &Event::Complete { worker: w("a"), epoch: 1, outcome: AttemptOutcome::Succeeded },
            3,
        )
        .unwrap();
        assert_eq!(done.state, State::Succeeded);
        // Exactly one terminal outcome: a second completion is refused.
        assert_eq!(
            apply(
                &c,
                &done,
                &Event::Complete { worker: w("a"), epoch: 1, outcome: AttemptOutcome::FunctionError },
                4
            ),
            Err(Rejected::Terminal(StateName::Succeeded))
        );
    }

    #[test]
    fn a_repeated_report_of_the_accepted_completion_is_recognised() {
        let mut c = ctx(Mode::Sync);
        let running = claim(&c, &Lifecycle::queued(), "a", 0);
        let report = |worker: &str, epoch| Event::Complete {
            worker: w(worker),
            epoch,
            outcome: AttemptOutcome::Succeeded,
        };
        let done = apply(&c, &running, &report("a", 1), 1).unwrap();
        // Not recorded as accepted: an ended invocation refuses the report.
        assert_eq!(apply(&c, &done, &report("a", 1), 2), Err(Rejected::Terminal(StateName::Succeeded)));
        c.completed = Some(AcceptedCompletion { epoch: 1, worker: Some(w("a")) });
        assert_eq!(apply(&c, &done, &report("a", 1), 2), Err(Rejected::AlreadyCompleted(1)));
        assert_eq!(apply(&c, &done, &report("b", 1), 2), Err(Rejected::NotOwner), "never its attempt");
        assert_eq!(apply(&c, &done, &report("a", 0), 2), Err(Rejected::Fenced { current: 1, given: 0 }));
        c.completed = Some(AcceptedCompletion { epoch: 1, worker: None });
        assert_eq!(
            apply(&c, &done, &report("b", 1), 2),
            Err(Rejected::AlreadyCompleted(1)),
            "recorded before workers"
        );
    }

    #[test]
    fn a_repeated_report_of_a_completion_that_scheduled_a_retry_is_recognised() {
        let mut c = ctx(Mode::Async);
        let running = claim(&c, &Lifecycle::queued(), "a", 0);
        let failed = Event::Complete { worker: w("a"), epoch: 1, outcome: AttemptOutcome::FunctionError };
        let waiting = apply(&c, &running, &failed, 10).unwrap();
        assert!(matches!(waiting.state, State::RetryWait { .. }), "{waiting:?}");
        c.completed = Some(AcceptedCompletion { epoch: 1, worker: Some(w("a")) });
        assert_eq!(apply(&c, &waiting, &failed, 11), Err(Rejected::AlreadyCompleted(1)));
        // Once the retry has started, the old attempt's report is fenced.
        let retried = claim(&c, &apply(&c, &waiting, &Event::RetryDue, 2_000).unwrap(), "a", 2_000);
        assert_eq!(apply(&c, &retried, &failed, 2_001), Err(Rejected::Fenced { current: 2, given: 1 }));
    }

    #[test]
    fn throttled_async_attempts_wait_without_counting_an_error() {
        let c = ctx(Mode::Async);
        let running = claim(&c, &Lifecycle::queued(), "a", 0);
        let throttled = Event::Complete { worker: w("a"), epoch: 1, outcome: AttemptOutcome::Throttled };
        let waiting = apply(&c, &running, &throttled, 10).unwrap();
        assert_eq!(waiting.state, State::RetryWait { not_before: 1010 });
        assert_eq!(waiting.function_errors, 0, "a throttle is not a function error");
        let again = claim(&c, &apply(&c, &waiting, &Event::RetryDue, 1010).unwrap(), "a", 1010);
        let later = apply(
            &c,
            &again,
            &Event::Complete { worker: w("a"), epoch: 2, outcome: AttemptOutcome::Throttled },
            1020,
        );
        assert_eq!(later.unwrap().state, State::RetryWait { not_before: 3020 }, "backs off");
        let sync = claim(&ctx(Mode::Sync), &Lifecycle::queued(), "a", 0);
        assert_eq!(apply(&ctx(Mode::Sync), &sync, &throttled, 10).unwrap().state, State::Failed);
    }

    #[test]
    fn each_claim_increments_the_epoch_and_fences_the_old_attempt() {
        let c = ctx(Mode::Async);
        let first = claim(&c, &Lifecycle::queued(), "a", 0);
        let lost = apply(&c, &first, &Event::LeaseExpired, 6000).unwrap();
        assert_eq!(lost.state, State::Queued);
        assert_eq!(lost.lost_attempts, 1);
        let second = claim(&c, &lost, "b", 6001);
        assert_eq!(second.attempt_epoch, 2);
        let stale = Event::Complete { worker: w("a"), epoch: 1, outcome: AttemptOutcome::Succeeded };
        assert_eq!(apply(&c, &second, &stale, 6002), Err(Rejected::Fenced { current: 2, given: 1 }));
        let renew = Event::RenewLease { worker: w("a"), epoch: 1, lease_expires_at: 9999 };
        assert_eq!(apply(&c, &second, &renew, 6002), Err(Rejected::Fenced { current: 2, given: 1 }));
        // The attempt whose lease was recovered is fenced even before anyone claims again.
        assert_eq!(apply(&c, &lost, &stale, 6002), Err(Rejected::Fenced { current: 1, given: 1 }));
    }

    #[test]
    fn lease_cannot_expire_early_and_renewal_extends_it() {
        let c = ctx(Mode::Async);
        let running = claim(&c, &Lifecycle::queued(), "a", 0);
        assert_eq!(apply(&c, &running, &Event::LeaseExpired, 4999), Err(Rejected::LeaseNotExpired));
        let renewed = apply(
            &c,
            &running,
            &Event::RenewLease { worker: w("a"), epoch: 1, lease_expires_at: 9000 },
            4000,
        )
        .unwrap();
        assert_eq!(apply(&c, &renewed, &Event::LeaseExpired, 8999), Err(Rejected::LeaseNotExpired));
        let other = Event::RenewLease { worker: w("b"), epoch: 1, lease_expires_at: 9000 };
        assert_eq!(apply(&c, &running, &other, 4000), Err(Rejected::NotOwner));
    }

    #[test]
    fn only_the_owner_completes_its_attempt() {
        let c = ctx(Mode::Async);
        let running = claim(&c, &Lifecycle::queued(), "a", 0);
        let by = |worker: &str| Event::Complete {
            worker: w(worker),
            epoch: 1,
            outcome: AttemptOutcome::Succeeded,
        };
        assert_eq!(apply(&c, &running, &by("b"), 10), Err(Rejected::NotOwner), "right epoch, wrong worker");
        assert_eq!(apply(&c, &running, &by("a"), 10).unwrap().state, State::Succeeded);
    }

    #[test]
    fn async_function_errors_retry_with_backoff_then_fail() {
        let c = ctx(Mode::Async);
        let err = |epoch| Event::Complete { worker: w("a"), epoch, outcome: AttemptOutcome::FunctionError };
        let r1 = claim(&c, &Lifecycle::queued(), "a", 0);
        let w1 = apply(&c, &r1, &err(1), 100).unwrap();
        assert_eq!(w1.state, State::RetryWait { not_before: 1100 });
        assert_eq!(apply(&c, &w1, &Event::RetryDue, 1099), Err(Rejected::NotDue));
        let q1 = apply(&c, &w1, &Event::RetryDue, 1100).unwrap();
        let r2 = claim(&c, &q1, "a", 1200);
        let w2 = apply(&c, &r2, &err(2), 1300).unwrap();
        assert_eq!(w2.state, State::RetryWait { not_before: 3300 });
        let r3 = claim(&c, &apply(&c, &w2, &Event::RetryDue, 3300).unwrap(), "a", 3400);
        let done = apply(&c, &r3, &err(3), 3500).unwrap();
        assert_eq!(done.state, State::Failed);
        assert_eq!(done.function_errors, 3);
    }

    #[test]
    fn sync_is_never_rerun() {
        let c = ctx(Mode::Sync);
        let running = Lifecycle::claimed(w("a"), 5000);
        let failed = apply(
            &c,
            &running,
            &Event::Complete { worker: w("a"), epoch: 1, outcome: AttemptOutcome::FunctionError },
            10,
        )
        .unwrap();
        assert_eq!(failed.state, State::Failed);
        let lost = apply(&c, &running, &Event::LeaseExpired, 5000).unwrap();
        assert_eq!(lost.state, State::Failed, "a sync invocation whose worker died fails: worker lost");
    }

    #[test]
    fn old_async_events_expire_instead_of_running() {
        let c = ctx(Mode::Async);
        let q = Lifecycle::queued();
        assert_eq!(apply(&c, &q, &Event::Expire, 60_000), Err(Rejected::NotTooOld));
        assert_eq!(
            apply(&c, &q, &Event::Claim { worker: w("a"), lease_expires_at: 1 }, 60_001),
            Err(Rejected::TooOld)
        );
        assert_eq!(apply(&c, &q, &Event::Expire, 60_001).unwrap().state, State::Expired);
        // Sync invocations never expire: they are never queued.
        assert_eq!(apply(&ctx(Mode::Sync), &q, &Event::Expire, 1 << 40), Err(Rejected::NotTooOld));
    }

    #[test]
    fn poison_events_stop_after_bounded_lost_attempts() {
        let c = ctx(Mode::Async);
        let mut lc = Lifecycle::queued();
        for i in 0..MAX_LOST_ATTEMPTS {
            let now = i as Millis * 10_000;
            lc = claim(&c, &lc, "a", now);
            lc = apply(&c, &lc, &Event::LeaseExpired, now + 5000).unwrap();
        }
        assert_eq!(lc.state, State::Failed);
        assert_eq!(lc.attempt_epoch, MAX_LOST_ATTEMPTS as u64);
    }

    #[test]
    fn cancel_ends_pending_work_and_terminal_states_are_final() {
        let c = ctx(Mode::Async);
        for lc in [Lifecycle::queued(), claim(&c, &Lifecycle::queued(), "a", 0)] {
            assert_eq!(apply(&c, &lc, &Event::Cancel, 1).unwrap().state, State::Failed);
        }
        let failed = Lifecycle { state: State::Failed, ..Lifecycle::queued() };
        for ev in [Event::Cancel, Event::RetryDue, Event::LeaseExpired, Event::Expire] {
            assert_eq!(apply(&c, &failed, &ev, 1), Err(Rejected::Terminal(StateName::Failed)));
        }
    }

    #[test]
    fn invalid_transitions_are_named() {
        let c = ctx(Mode::Async);
        assert_eq!(
            apply(&c, &Lifecycle::queued(), &Event::RetryDue, 0),
            Err(Rejected::InvalidTransition { from: StateName::Queued, event: "retry" })
        );
        assert_eq!(StateName::parse("retry_wait"), Some(StateName::RetryWait));
    }
}
