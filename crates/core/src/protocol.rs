//! The worker protocol, version [`VERSION`]: every message a remote worker and a server
//! exchange under `/internal/v1`, its paths, its verdicts and its timings, as one set of serde
//! types. The server (`gust-api`) and the worker (`gust worker`) both speak through these; neither
//! builds a body by hand nor compares a reply's strings.
//!
//! Plain data: no HTTP, no I/O. Status codes belong to `gust-api`; a refusal's `code` (the
//! `{"error":{"code","message"}}` envelope every gust endpoint answers with) is [`ErrorCode`].
//!
//! Compatibility: a server answers every heartbeat with the version it speaks, and a worker
//! refuses a server whose version it does not know ([`check_version`]), before it runs anything.
//! Within a version, replies may gain fields (readers ignore what they do not know); requests
//! may not (the server refuses unknown fields).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Deployment, FunctionErrorBody, InvocationId, Millis, Mode, Rejected, Runtime, StateName, WorkerId,
    WorkerState,
};

/// The version of the worker protocol this build speaks (servers and workers alike).
pub const VERSION: u32 = 1;

/// How often workers heartbeat: what a server tells them, and what a worker assumes until the
/// first reply.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// The bounds a worker keeps the server's heartbeat interval within (a server cannot make a
/// worker spin, nor fall silent long enough to lose its work).
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A worker not heard from for this long gets no new work.
pub const LIVENESS_BOUND: Duration = Duration::from_millis(2_000);
/// Longest a worker's poll waits for work (a server holds a longer one only this long).
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(5);
/// How long a worker asks each poll to wait for work.
pub const POLL_WAIT: Duration = Duration::from_secs(1);
/// Leases are renewed this many times per lease, so a renewal may be lost or late once
/// without losing the attempt.
pub const RENEWALS_PER_LEASE: u32 = 3;

/// The longest worker id (`[A-Za-z0-9._-]`).
pub const MAX_WORKER_ID_BYTES: usize = 128;
/// Most warm code hashes one heartbeat may report (a worker with more reports this many; a
/// heartbeat with more, or with anything but SHA-256 hex digests, is refused): the server
/// stores each heartbeat, so it must stay small (at most ~1 MB).
pub const MAX_WARM_REPORTED: usize = 16_384;
/// Most runtimes one heartbeat may report (there are a handful; more is refused).
pub const MAX_RUNTIMES_REPORTED: usize = 64;
/// The most invocations one worker runs at once (`gust worker --capacity`; a heartbeat with
/// more is refused), and so the most attempts one renewal or release names: each is a step
/// of one store transaction every other writer of a SQLite store waits behind.
pub const MAX_WORKER_CAPACITY: usize = 10_000;

/// `POST`, authenticated with the enrollment token: [`EnrollRequest`] → 201 [`IssuedCredential`].
pub const ENROLL_PATH: &str = "/internal/v1/workers/enroll";
/// `POST` [`Heartbeat`] → [`HeartbeatReply`].
pub const HEARTBEAT_PATH: &str = "/internal/v1/workers/heartbeat";
/// `GET ARTIFACTS_PATH/{sha256}`: the code, as bytes.
pub const ARTIFACTS_PATH: &str = "/internal/v1/artifacts";
/// `GET SNAPSHOT_PATH?since=V` ([`SnapshotQuery`]) → [`SnapshotReply`].
pub const SNAPSHOT_PATH: &str = "/internal/v1/snapshot";

/// The calls a worker makes about itself, under `/internal/v1/workers/{id}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCall {
    /// [`PollRequest`] → [`PollReply`].
    Poll,
    /// [`AttemptsRequest`] → [`AttemptsReply`].
    Renew,
    /// [`AttemptsRequest`] → [`AttemptsReply`].
    Release,
    /// [`CompleteRequest`] → [`CompleteReply`] (verdict `accepted` or `already_completed`),
    /// or a refusal ([`ErrorCode::Fenced`], [`ErrorCode::Forbidden`]; [`Verdict::of_refusal`]).
    Complete,
    /// [`CompletionsRequest`] → [`CompletionsReply`]: several completions in one call, each
    /// answered as [`WorkerCall::Complete`] would (a refusal as its verdict). Added within
    /// version 1: a worker falls back to [`WorkerCall::Complete`] on a server without it (404).
    Completions,
    /// No body → 204.
    Deregister,
}

impl WorkerCall {
    pub const ALL: [WorkerCall; 6] = [
        WorkerCall::Poll,
        WorkerCall::Renew,
        WorkerCall::Release,
        WorkerCall::Complete,
        WorkerCall::Completions,
        WorkerCall::Deregister,
    ];

    /// The route, with the worker id as the path parameter `{id}`.
    pub fn route(self) -> &'static str {
        match self {
            WorkerCall::Poll => "/internal/v1/workers/{id}/poll",
            WorkerCall::Renew => "/internal/v1/workers/{id}/renew",
            WorkerCall::Release => "/internal/v1/workers/{id}/release",
            WorkerCall::Complete => "/internal/v1/workers/{id}/complete",
            WorkerCall::Completions => "/internal/v1/workers/{id}/completions",
            WorkerCall::Deregister => "/internal/v1/workers/{id}/deregister",
        }
    }

    /// The path of this call for worker `id`.
    pub fn path(self, id: &str) -> String {
        self.route().replace("{id}", id)
    }
}

/// Enrollment: the worker's name; its id will be `NAME-` and 16 random hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub name: String,
}

/// A new credential: the worker id it proves and its secret (shown once, stored hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCredential {
    pub id: String,
    pub secret: String,
}

/// A worker's state, sent every [`HEARTBEAT_INTERVAL`]; the first one registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Must be the id the credential proves.
    pub id: WorkerId,
    /// Monotonic per worker; the server ignores an older one.
    pub revision: u64,
    pub runtimes: Vec<Runtime>,
    /// Invocations it can run at once (0 while it shuts down: nothing more is placed on it).
    pub capacity: u32,
    pub running: u32,
    /// Code hashes with a warm environment.
    pub warm: Vec<String>,
    /// The control-plane snapshot version it has applied.
    pub snapshot_version: u64,
}

impl Heartbeat {
    /// The worker's state as the store keeps it, heard from at `last_heartbeat`.
    pub fn into_state(self, last_heartbeat: Millis) -> WorkerState {
        let Heartbeat { id, revision, runtimes, capacity, running, warm, snapshot_version } = self;
        let server = None;
        WorkerState {
            id,
            revision,
            runtimes,
            capacity,
            running,
            warm,
            snapshot_version,
            last_heartbeat,
            server,
        }
    }
}

/// What a heartbeat answers: the protocol version the server speaks, its control-plane
/// snapshot version and the protocol's timings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub protocol: u32,
    pub snapshot_version: u64,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
}

impl HeartbeatReply {
    /// Reads a heartbeat reply, refusing a server whose protocol version this build does not
    /// know before anything else of the reply is trusted.
    pub fn parse(body: &[u8]) -> Result<HeartbeatReply, ReplyError> {
        #[derive(Deserialize)]
        struct Versioned {
            protocol: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(body).map_err(|e| ReplyError::Malformed(e.to_string()))?;
        check_version(versioned.protocol)?;
        serde_json::from_slice(body).map_err(|e| ReplyError::Malformed(e.to_string()))
    }

    /// The lease of every attempt the worker runs.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// How often to heartbeat, within [`MIN_HEARTBEAT_INTERVAL`] and [`MAX_HEARTBEAT_INTERVAL`].
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms).clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL)
    }
}

/// Why a server's reply cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error(transparent)]
    UnknownVersion(#[from] UnknownVersion),
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// The server speaks a protocol version this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server speaks worker protocol version {server}, and this worker only version {VERSION}: \
     run a gust worker of the same release as the server"
)]
pub struct UnknownVersion {
    pub server: u32,
}

/// Whether this build can speak to a server of protocol version `server`.
pub fn check_version(server: u32) -> Result<(), UnknownVersion> {
    if server == VERSION {
        Ok(())
    } else {
        Err(UnknownVersion { server })
    }
}

/// Asks for up to `max` invocations placed on this worker, waiting up to `wait_ms` (at most
/// [`MAX_POLL_WAIT`]) for some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    pub max: usize,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollReply {
    pub assignments: Vec<Assignment>,
}

/// One invocation handed to a worker: the attempt it now owns and everything it needs to run
/// it, including the exact deployment resolved at ingest (so it never runs a stale version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub invocation_id: InvocationId,
    pub epoch: u64,
    pub lease_expires_at: Millis,
    pub mode: Mode,
    pub deployment: Arc<Deployment>,
    pub payload_b64: String,
    /// The qualifier the caller invoked (`$LATEST`, `3`, `live`): the runtime is told the ARN
    /// the caller used, as in the embedded shape. Absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    /// Lambda's Client-Context of a sync invocation, for the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
    /// The invocation's trace in X-Ray's form, for the runtime. Absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the invocation was received (the worker's queue-wait and end-to-end figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Millis>,
}

impl Assignment {
    /// The attempt this assignment is.
    pub fn attempt(&self) -> Attempt {
        (self.invocation_id.clone(), self.epoch)
    }
}

/// An attempt: an invocation and the epoch of its attempt.
pub type Attempt = (InvocationId, u64);

/// Renew (or release) the leases of these attempts (at most [`MAX_WORKER_CAPACITY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptsRequest {
    pub attempts: Vec<Attempt>,
}

/// The server's answer about each attempt of an [`AttemptsRequest`], in its order: a refused
/// entry changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptsReply {
    /// Per attempt, `null` (accepted) or why it was refused, for people.
    pub results: Vec<Option<String>>,
    /// Per attempt, what happened, for the worker.
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
}

impl AttemptsReply {
    pub fn new(results: &[Result<(), Rejected>]) -> AttemptsReply {
        AttemptsReply {
            results: results.iter().map(|r| r.as_ref().err().map(Rejected::to_string)).collect(),
            verdicts: results.iter().map(Verdict::of).collect(),
        }
    }
}

/// What the server made of one attempt's renewal, release or completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    /// The attempt no longer owns its invocation (superseded, or its lease was recovered):
    /// what it reports is dropped.
    Fenced,
    /// A repeat of the accepted completion: nothing changes, and it counts as accepted.
    AlreadyCompleted,
    /// Another worker's attempt.
    Forbidden,
    /// Refused for another reason (the invocation ended meanwhile, ...).
    Refused,
}

impl Verdict {
    pub fn of(result: &Result<(), Rejected>) -> Verdict {
        match result {
            Ok(()) => Verdict::Accepted,
            Err(Rejected::Fenced { .. }) => Verdict::Fenced,
            Err(Rejected::NotOwner) => Verdict::Forbidden,
            Err(Rejected::AlreadyCompleted(_)) => Verdict::AlreadyCompleted,
            Err(
                Rejected::Terminal(_)
                | Rejected::InvalidTransition { .. }
                | Rejected::LeaseNotExpired
                | Rejected::NotDue
                | Rejected::TooOld
                | Rejected::NotTooOld,
            ) => Verdict::Refused,
        }
    }

    /// The verdict a refused call's error code stands for (a completion is refused rather
    /// than answered with a verdict: 409 `Fenced`, 403 `Forbidden`).
    pub fn of_refusal(code: ErrorCode) -> Verdict {
        match code {
            ErrorCode::Fenced => Verdict::Fenced,
            ErrorCode::Forbidden => Verdict::Forbidden,
            ErrorCode::Unauthorized | ErrorCode::EnrollmentDisabled | ErrorCode::Other => Verdict::Refused,
        }
    }

    /// Whether the worker no longer holds the attempt (it must stop renewing it).
    pub fn attempt_lost(self) -> bool {
        match self {
            Verdict::Fenced | Verdict::Forbidden => true,
            Verdict::Accepted | Verdict::AlreadyCompleted | Verdict::Refused => false,
        }
    }
}

/// An attempt's outcome, reported with its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub invocation_id: InvocationId,
    pub epoch: u64,
    pub succeeded: bool,
    pub result_b64: Option<String>,
    pub error: Option<FunctionErrorBody>,
    pub log: String,
    /// What the attempt measured (Lambda's REPORT figures). Absent from older workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::Report>,
}

/// A completion the server took: its verdict, and the invocation's state after it, which says
/// whether the invocation ended or a retry was scheduled. A completion it did not take is
/// refused instead (409 `Fenced`, 403 `Forbidden`), and [`Verdict::of_refusal`] reads that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteReply {
    pub state: StateName,
    /// [`Verdict::Accepted`], or [`Verdict::AlreadyCompleted`] for a repeat of the accepted
    /// report (its first reply was lost): nothing changed, and the worker is done all the same.
    /// Added within version 1, so a reply without it (an older server) reads as accepted.
    #[serde(default = "Verdict::accepted")]
    pub verdict: Verdict,
}

/// Most completions in one [`CompletionsRequest`].
pub const MAX_COMPLETIONS_PER_CALL: usize = 256;

/// Completions reported together (a busy worker sends what finished while its previous call
/// was in flight), at most [`MAX_COMPLETIONS_PER_CALL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionsRequest {
    pub completions: Vec<CompleteRequest>,
}

/// Per completion of a [`CompletionsRequest`], in its order, what [`WorkerCall::Complete`]
/// would have answered: a taken one's verdict and state; a refused one's verdict (`fenced`,
/// `forbidden`, `refused`) without a state. A call the server could not finish (a store
/// failure) is answered with a 5xx as a whole, and the worker sends it again: completions are
/// idempotent per epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionsReply {
    pub replies: Vec<CompletionVerdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionVerdict {
    pub verdict: Verdict,
    /// The invocation's state after a taken completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateName>,
}

impl Verdict {
    /// What a [`CompleteReply`] without a verdict means (serde's default needs a function).
    fn accepted() -> Verdict {
        Verdict::Accepted
    }
}

/// `?since=V`: what changed after snapshot version V.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    pub since: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReply {
    pub snapshot_version: u64,
    pub functions: Vec<SnapshotFunction>,
}

/// A function (of a runtime the worker reports) whose `$LATEST` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFunction {
    pub name: String,
    pub revision: u64,
    pub runtime: Runtime,
    pub code_sha256: Option<String>,
}

/// A refusal, as every gust endpoint answers one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// The refusals a worker acts on; any other code is [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A stale attempt's completion.
    Fenced,
    /// A call about another worker, or about another worker's attempt or code.
    Forbidden,
    /// No credential, or one the server does not accept (unknown, revoked, expired).
    Unauthorized,
    /// The server takes no enrollments.
    EnrollmentDisabled,
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The code as it stands in the error envelope.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Fenced => "Fenced",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::EnrollmentDisabled => "EnrollmentDisabled",
            ErrorCode::Other => "Other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_worker_refuses_a_server_of_another_version() {
        let ours =
            json!({ "protocol": VERSION, "snapshot_version": 3, "lease_ms": 5000, "heartbeat_ms": 500 });
        let reply = HeartbeatReply::parse(ours.to_string().as_bytes()).unwrap();
        assert_eq!(
            (reply.snapshot_version, reply.lease(), reply.heartbeat_interval()),
            (3, Duration::from_secs(5), HEARTBEAT_INTERVAL)
        );
        // A newer server's reply may look like anything else: the version is read first.
        let newer = json!({ "protocol": VERSION + 1, "lease": "5s" });
        let err = HeartbeatReply::parse(newer.to_string().as_bytes()).unwrap_err();
        assert_eq!(err, ReplyError::UnknownVersion(UnknownVersion { server: VERSION + 1 }));
        let message = err.to_string();
        assert!(
            message.contains(&format!("version {}", VERSION + 1))
                && message.contains(&format!("only version {VERSION}")),
            "{message}"
        );
        assert!(matches!(HeartbeatReply::parse(b"{}"), Err(ReplyError::Malformed(_))), "no version at all");
    }

    #[test]
    fn the_heartbeat_interval_stays_within_bounds() {
        let reply =
            |ms| HeartbeatReply { protocol: VERSION, snapshot_version: 0, lease_ms: 0, heartbeat_ms: ms };
        assert_eq!(reply(0).heartbeat_interval(), MIN_HEARTBEAT_INTERVAL);
        assert_eq!(reply(u64::MAX).heartbeat_interval(), MAX_HEARTBEAT_INTERVAL);
    }

    #[test]
    fn verdicts_travel_with_the_reasons() {
        let results = [Ok(()), Err(Rejected::Fenced { current: 2, given: 1 }), Err(Rejected::NotOwner)];
        let reply = AttemptsReply::new(&results);
        let wire = serde_json::to_value(&reply).unwrap();
        assert_eq!(wire["verdicts"], json!(["accepted", "fenced", "forbidden"]));
        assert_eq!(wire["results"][0], json!(null));
        assert_eq!(wire["results"][2], json!("the attempt is owned by another worker"));
        let read: AttemptsReply = serde_json::from_value(wire).unwrap();
        assert_eq!(read.verdicts.iter().map(|v| v.attempt_lost()).collect::<Vec<_>>(), [false, true, true]);
    }

    #[test]
    fn a_completion_reply_says_whether_it_was_a_repeat() {
        let repeat = CompleteReply { state: StateName::Succeeded, verdict: Verdict::AlreadyCompleted };
        let wire = serde_json::to_value(&repeat).unwrap();
        assert_eq!(wire, json!({ "state": "SUCCEEDED", "verdict": "already_completed" }));
        assert_eq!(serde_json::from_value::<CompleteReply>(wire).unwrap(), repeat);
        // A server of this version that predates the verdict answered only the state: that
        // was an acceptance (a refusal is an error reply, never a 200).
        let older: CompleteReply = serde_json::from_value(json!({ "state": "RETRY_WAIT" })).unwrap();
        assert_eq!(older.verdict, Verdict::Accepted);
        // A refusal's code is the verdict the worker acts on.
        assert_eq!(Verdict::of_refusal(ErrorCode::Fenced), Verdict::Fenced);
        assert_eq!(Verdict::of_refusal(ErrorCode::Forbidden), Verdict::Forbidden);
        assert_eq!(Verdict::of_refusal(ErrorCode::Other), Verdict::Refused);
    }

    #[test]
    fn error_codes_read_and_unknown_ones_are_other() {
        let fenced: ErrorReply =
            serde_json::from_value(json!({ "error": { "code": "Fenced", "message": "stale" } })).unwrap();
        assert_eq!(fenced.error.code, ErrorCode::Fenced);
        let other: ErrorReply =
            serde_json::from_value(json!({ "error": { "code": "Throttled", "message": "" } })).unwrap();
        assert_eq!(other.error.code, ErrorCode::Other);
        for code in
            [ErrorCode::Fenced, ErrorCode::Forbidden, ErrorCode::Unauthorized, ErrorCode::EnrollmentDisabled]
        {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn worker_call_paths_fill_in_the_id() {
        for call in WorkerCall::ALL {
            let path = call.path("w-1");
            assert!(path.starts_with("/internal/v1/workers/w-1/") && !path.contains('{'), "{path}");
        }
    }
}
