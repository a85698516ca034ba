//! gust's persistence: the [`Store`] trait every backend implements, its one error type, what a
//! stored row means ([`rows`]), sealed secrets, the rules of code collection ([`gc`]), and the
//! conformance suite every backend runs. The backends live in their own crates
//! (`gust-store-sqlite`, `gust-store-postgres`); the binary picks one.
//!
//! Architecture invariant: every guard (revision CAS, claim, guarded completion, idempotency
//! key) is enforced inside one backend transaction that holds the rows it decides on; nothing
//! here is read-then-write across calls. The lifecycle rules themselves come from
//! [`gust_core::apply`], so each backend enforces exactly the same state machine.
//!
//! Architecture invariant: this crate knows nothing of HTTP or runtimes, and depends on no
//! database driver (as TiKV's `engine_traits` must not depend on RocksDB): callers of [`Store`]
//! compile no driver.

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::queue::{EventSourceMapping, NewMessage, Queue, QueueAttributes, QueueCounts, Received, Sent};
use gust_core::schedule::{Firing, Schedule};
use gust_core::{
    Alias, ApiKey, AttemptOutcome, Deployment, FunctionConfig, FunctionErrorBody, FunctionSpec, FunctionUrl,
    InvocationId, InvocationRecord, InvocationRequest, Lifecycle, Millis, Rejected, Resolved, Routing,
    StateName, UrlConfig, Version, WorkerId, WorkerState,
};
use serde::Serialize;
use thiserror::Error;

pub mod conformance;
pub mod gc;
pub mod ops;
pub mod queues;
pub mod rows;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod space;

pub use schedules::{Delivery, ScheduleGroup, StoredSchedule};

/// The sha256 of `bytes`, in lowercase hex: an artifact's name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a store error is about, for messages and status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Function,
    Version,
    Alias,
    Invocation,
    Artifact,
    Worker,
    ApiKey,
    FunctionUrl,
    Queue,
    EventSourceMapping,
    Schedule,
    ScheduleGroup,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::Version => "version",
            Kind::Alias => "alias",
            Kind::Invocation => "invocation",
            Kind::Artifact => "artifact",
            Kind::Worker => "worker",
            Kind::ApiKey => "API key",
            Kind::FunctionUrl => "function URL config",
            Kind::Queue => "queue",
            Kind::EventSourceMapping => "event source mapping",
            Kind::Schedule => "schedule",
            Kind::ScheduleGroup => "schedule group",
        }
    }
}

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("{} {name} not found", kind.as_str())]
    NotFound { kind: Kind, name: String },
    /// A conditional write named a revision that is no longer current. Nothing changed.
    #[error("revision mismatch: expected {expected}, current is {actual}")]
    RevisionMismatch { expected: u64, actual: u64 },
    /// The same idempotency key was used with a different request.
    #[error(
        "idempotency key was already used for invocation {existing} with a different qualifier or payload"
    )]
    KeyMismatch { existing: InvocationId },
    /// A lifecycle transition was refused by the state machine. Nothing changed.
    #[error("transition refused: {0}")]
    Rejected(#[from] Rejected),
    /// A write that is well-formed but not allowed now (publish without code, ...).
    #[error("{0}")]
    Invalid(String),
    /// Stored bytes do not hash to their name.
    #[error("artifact {0} is corrupt: its bytes do not match its sha256")]
    Corrupt(String),
    /// The store's disk is full, or below the reserve kept for finishing work already accepted
    /// ([`space`]). Nothing changed: the write was refused, or rolled back whole. It passes
    /// once space is freed.
    #[error("the store's disk is full: {0}")]
    Full(String),
    /// A bound on how many of something may exist is reached. Nothing changed.
    #[error("{0}")]
    Quota(String),
    /// The backend failed (I/O, database). The operation may or may not have been applied only
    /// if the message says the commit failed; otherwise nothing changed.
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A new invocation to insert: the request plus its initial lifecycle (QUEUED for async, or
/// already claimed by the local worker for a sync invocation with an idempotency key).
#[derive(Debug, Clone)]
pub struct NewInvocation {
    pub request: InvocationRequest,
    pub lifecycle: Lifecycle,
}

/// The answer to inserting an invocation.
#[derive(Debug, Clone)]
pub enum Inserted {
    /// Stored (and durable once the call returns).
    Created,
    /// The idempotency key was used before with the same request: here is that invocation.
    Existing(Box<InvocationRecord>),
}

/// An invocation claimed by a worker: it owns attempt `epoch` until its lease expires.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub request: InvocationRequest,
    pub epoch: u64,
    pub lease_expires_at: Millis,
}

/// The report of one finished attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: InvocationId,
    /// The worker reporting; accepted only from the worker that owns the attempt.
    pub worker: WorkerId,
    pub epoch: u64,
    pub outcome: AttemptOutcome,
    pub result: Option<Bytes>,
    pub error: Option<FunctionErrorBody>,
    pub log: String,
    /// What the attempt measured (`None` for one the platform ended without running it).
    pub report: Option<gust_core::Report>,
}

impl Completion {
    /// The report of an attempt the platform ended without running it (throttled, or its
    /// version gone): no result, no log, this error.
    pub fn not_run(
        claimed: &Claimed, worker: &WorkerId, outcome: AttemptOutcome, error: FunctionErrorBody,
    ) -> Self {
        Completion {
            id: claimed.request.id.clone(),
            worker: worker.clone(),
            epoch: claimed.epoch,
            outcome,
            result: None,
            error: Some(error),
            log: String::new(),
            report: None,
        }
    }
}

/// Invocation records and their bytes: what one retention pass deleted, or what is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub invocations: u64,
    /// Payload, result, error and log bytes of the deleted records.
    pub bytes: u64,
}

/// What one recovery sweep changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// RUNNING invocations whose lease expired, put back in the queue (async).
    pub requeued: u64,
    /// RUNNING invocations whose lease expired and that may not run again (sync, or too many losses).
    pub lost: u64,
    /// RETRY_WAIT invocations whose backoff elapsed.
    pub retries_due: u64,
    /// PLACED invocations whose worker did not claim them in time.
    pub unplaced: u64,
    /// Async invocations older than their maximum event age.
    pub expired: u64,
}

/// What one garbage collection of code ([`Store::collect_code`]) deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectedCode {
    /// `$LATEST` revisions no longer needed (rows only; their code may still be named elsewhere).
    pub revisions: u64,
    /// Artifacts deleted, by sha256.
    pub artifacts: Vec<String>,
    /// Bytes of the deleted artifacts.
    pub bytes: u64,
}

/// Monotonic counters kept with the state, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Completions refused because their attempt epoch was fenced.
    pub fenced_completions: u64,
    /// Lease renewals refused because their attempt epoch was fenced.
    pub fenced_renewals: u64,
}

/// How a worker credential came to be, which decides how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialOrigin {
    /// Issued to a worker that presented the enrollment token: lasts while its worker
    /// heartbeats (the service expires it after a long silence) or until revoked.
    Enrolled,
    /// Created ahead of time by an administrator for a named worker: lasts until revoked.
    Provisioned,
}

impl CredentialOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialOrigin::Enrolled => "enrolled",
            CredentialOrigin::Provisioned => "provisioned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enrolled" => Some(CredentialOrigin::Enrolled),
            "provisioned" => Some(CredentialOrigin::Provisioned),
            _ => None,
        }
    }
}

/// A worker's own credential: it authenticates as exactly one worker id. Only the secret's
/// SHA-256 is stored; the secret itself is shown once, to whoever created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerCredential {
    pub worker: WorkerId,
    /// SHA-256 (hex) of the secret.
    #[serde(skip)]
    pub secret_sha256: String,
    pub origin: CredentialOrigin,
    pub created_at: Millis,
}

/// A credential found by its secret, with when its worker last heartbeated (if ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCredential {
    pub credential: WorkerCredential,
    pub last_heartbeat: Option<Millis>,
}

/// A page of invocations for one function, newest first.
#[derive(Debug, Clone, Default)]
pub struct InvocationFilter {
    pub state: Option<StateName>,
    /// Only invocations older than this id (the previous page's last id).
    pub before: Option<InvocationId>,
    pub limit: usize,
    /// Instead: only ended invocations that finished after this `(finished_at, id)`, oldest
    /// finish first (a tail of new outcomes: `gust logs --follow`).
    pub finished_after: Option<(Millis, InvocationId)>,
    /// Read without payloads and results (both empty): for readers of many records that
    /// need neither (log streams, charts).
    pub light: bool,
}

/// The persistence interface of gust. Every method is one atomic step.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- control plane: every write bumps the snapshot version in the same transaction ----

    /// Creates or replaces a function's configuration. With `expect`, the current revision
    /// must equal it (0 means "must not exist yet").
    async fn put_function(
        &self, name: &str, spec: FunctionSpec, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig>;
    /// Points a function's `$LATEST` at an artifact already stored with [`Store::put_artifact`].
    /// Creates a function with its code in one transaction (its artifact stored already);
    /// `RevisionMismatch { expected: 0 }` if the name exists.
    async fn create_function(
        &self, name: &str, spec: FunctionSpec, code_sha256: &str, now: Millis,
    ) -> Result<FunctionConfig>;
    async fn set_function_code(
        &self, name: &str, code_sha256: &str, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig>;
    /// Replaces a function's configuration and points its `$LATEST` at an artifact already
    /// stored with [`Store::put_artifact`], in one transaction and one revision (what a deploy
    /// of config and code together needs: never one without the other). With `expect`, the
    /// current revision must equal it (0 means "must not exist yet": the function is created).
    async fn put_function_with_code(
        &self, name: &str, spec: FunctionSpec, code_sha256: &str, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig>;
    async fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>>;
    /// Functions ordered by name, after `after`.
    async fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>>;
    /// Deletes a function with its versions and aliases, and fails its pending invocations
    /// (they could never run). Returns how many invocations were cancelled.
    async fn delete_function(&self, name: &str, expect: Option<u64>, now: Millis) -> Result<u64>;
    /// Freezes `$LATEST` into a new version, or returns the newest version if config and code
    /// are unchanged since it.
    /// Publishes `$LATEST` as a version (its description replaced by `description` if given);
    /// returns the newest version instead when code and config are unchanged.
    async fn publish_version(
        &self, name: &str, expect: Option<u64>, description: Option<&str>, now: Millis,
    ) -> Result<Version>;
    async fn get_version(&self, name: &str, number: u64) -> Result<Option<Version>>;
    /// Deletes one published version; `Invalid` while an alias routes to it.
    async fn delete_version(&self, name: &str, number: u64, now: Millis) -> Result<()>;
    async fn list_versions(&self, name: &str, after: Option<u64>, limit: usize) -> Result<Vec<Version>>;
    /// Creates or replaces an alias. Every version it routes to must be published.
    async fn put_alias(
        &self, function: &str, alias: &str, routing: Routing, description: &str, expect: Option<u64>,
        now: Millis,
    ) -> Result<Alias>;
    async fn get_alias(&self, function: &str, alias: &str) -> Result<Option<Alias>>;
    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>>;
    async fn delete_alias(&self, function: &str, alias: &str, expect: Option<u64>, now: Millis)
        -> Result<()>;
    /// Creates the URL of a function's `$LATEST` or alias (`Invalid` if it has one).
    async fn create_url(&self, url: FunctionUrl) -> Result<FunctionUrl>;
    /// Replaces a URL's config.
    async fn update_url(
        &self, function: &str, qualifier: &str, config: UrlConfig, now: Millis,
    ) -> Result<FunctionUrl>;
    async fn delete_url(&self, function: &str, qualifier: &str) -> Result<()>;
    /// The function URLs `lookup` answers.
    async fn urls(&self, lookup: ops::UrlLookup) -> Result<Vec<FunctionUrl>>;

    // ---- queues ([`queues`]) ----

    /// Creates a queue, or answers the existing one of its name if its attributes are the
    /// same (`Invalid` if they differ).
    async fn create_queue(&self, queue: Queue) -> Result<Queue>;
    async fn get_queue(&self, name: &str) -> Result<Option<Queue>>;
    /// Queues whose names start with `prefix`, after `after`, in name order.
    async fn list_queues(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Queue>>;
    async fn set_queue_attributes(
        &self, name: &str, attributes: QueueAttributes, now: Millis,
    ) -> Result<Queue>;
    /// Deletes a queue with its messages.
    async fn delete_queue(&self, name: &str) -> Result<()>;
    /// Stores messages in the queue whose id is `queue_id`, all or none, durably.
    async fn send_messages(
        &self, queue_id: &str, messages: Vec<NewMessage>, now: Millis, expires_at: Millis,
    ) -> Result<Vec<Sent>>;
    /// Receives up to `max` visible messages, hiding them for `visibility_ms`
    /// ([`queues::receive`]).
    async fn receive_messages(
        &self, queue: &Queue, max: usize, visibility_ms: i64, now: Millis,
    ) -> Result<Vec<Received>>;
    /// Deletes a message if `receipt` is its current one; whether it was.
    async fn delete_message(&self, queue_id: &str, message_id: &str, receipt: &str) -> Result<bool>;
    /// [`Store::delete_message`] of each `(message id, receipt)`, in one transaction.
    async fn delete_messages(&self, queue_id: &str, messages: Vec<(String, String)>) -> Result<Vec<bool>>;
    /// Makes a hidden message visible at `visible_at` if `receipt` is its current one.
    async fn change_visibility(
        &self, queue_id: &str, message_id: &str, receipt: &str, visible_at: Millis, now: Millis,
    ) -> Result<bool>;
    async fn purge_queue(&self, queue_id: &str) -> Result<u64>;
    async fn queue_counts(&self, queue_id: &str, now: Millis) -> Result<QueueCounts>;
    /// Whether a receive at `now` would find a message: a read, for long polls to look
    /// without a write transaction each time.
    async fn any_visible(&self, queue_id: &str, now: Millis) -> Result<bool>;
    /// Deletes at most `limit` messages (of any queue) past their retention at `now`.
    async fn expire_messages(&self, now: Millis, limit: usize) -> Result<u64>;
    /// Moves up to `limit` visible dead letters of queue `dlq_id` to `destination` (a queue
    /// id), or each back where it came from ([`queues::move_back`]); how many.
    async fn move_back(
        &self, dlq_id: &str, destination: Option<&str>, limit: usize, now: Millis,
    ) -> Result<u64>;
    async fn record_move_task(&self, task: queues::MoveTask) -> Result<()>;
    /// The newest move tasks of a source (dead-letter) queue, by name.
    async fn move_tasks(&self, source: &str, limit: usize) -> Result<Vec<queues::MoveTask>>;
    /// Creates or replaces an event source mapping.
    async fn put_mapping(&self, mapping: EventSourceMapping) -> Result<()>;
    async fn get_mapping(&self, uuid: &str) -> Result<Option<EventSourceMapping>>;
    /// Every event source mapping.
    async fn mappings(&self) -> Result<Vec<EventSourceMapping>>;
    /// Deletes a mapping; whether it was there.
    async fn delete_mapping(&self, uuid: &str) -> Result<bool>;

    // ---- schedules ([`schedules`]) ----

    /// Creates a schedule group; `Invalid` (a conflict) if it exists, `Quota` if `max` groups
    /// (the default among them) exist.
    async fn create_schedule_group(&self, name: &str, now: Millis, max: u64) -> Result<ScheduleGroup>;
    /// A group (the default group always exists).
    async fn get_schedule_group(&self, name: &str) -> Result<Option<ScheduleGroup>>;
    async fn list_schedule_groups(
        &self, prefix: &str, after: Option<&str>, limit: usize,
    ) -> Result<Vec<ScheduleGroup>>;
    /// Deletes a group with its schedules and their history.
    async fn delete_schedule_group(&self, name: &str) -> Result<()>;
    /// Creates (`create`; `Quota` if `max` schedules exist) or replaces a schedule; its next
    /// firing counts from `now`.
    async fn put_schedule(&self, schedule: Schedule, create: bool, now: Millis, max: u64) -> Result<()>;
    async fn get_schedule(&self, group: &str, name: &str) -> Result<Option<StoredSchedule>>;
    /// Schedules of one group or all, by (group, name), after `after`.
    async fn list_schedules(
        &self, group: Option<&str>, prefix: &str, after: Option<(String, String)>, limit: usize,
    ) -> Result<Vec<StoredSchedule>>;
    /// Deletes a schedule and its history.
    async fn delete_schedule(&self, group: &str, name: &str) -> Result<()>;
    /// Claims due schedules and writes their firings ([`schedules::claim_due`]); how many to fire.
    async fn claim_due_schedules(&self, now: Millis, limit: usize) -> Result<usize>;
    /// Takes pending firings for delivery under a lease ([`schedules::take_due_firings`]).
    async fn take_due_firings(
        &self, now: Millis, lease_ms: i64, limit: usize,
    ) -> Result<Vec<(Firing, Schedule)>>;
    /// Settles a delivery ([`schedules::settle_firing`]); whether it was this one's to settle.
    async fn settle_firing(&self, firing: Firing, delivery: Delivery, now: Millis) -> Result<bool>;
    /// A schedule's history, newest first.
    async fn schedule_history(
        &self, group: &str, name: &str, before: Option<Millis>, limit: usize,
    ) -> Result<Vec<Firing>>;
    /// The immutable code and config of one resolved version.
    async fn get_deployment(&self, function: &str, resolved: Resolved) -> Result<Option<Deployment>>;
    /// The control-plane snapshot version: bumped by every control-plane write.
    async fn snapshot_version(&self) -> Result<u64>;
    /// Whether the store has room for new work: [`StoreError::Full`] while its disk is below
    /// the reserve kept for finishing work already accepted ([`space`]). The store's own
    /// writes of new work check it too; callers ask first to refuse before doing any work.
    /// Cheap (no I/O most of the time). A backend whose disk is not its own to watch
    /// (PostgreSQL) always has room, and reports a full disk from the writes themselves.
    fn check_space(&self) -> Result<()> {
        Ok(())
    }

    // ---- artifacts: content addressed, verified on every read ----

    /// Stores bytes under their sha256 (hex), durably. Idempotent.
    async fn put_artifact(&self, bytes: Bytes) -> Result<String>;
    async fn get_artifact(&self, sha256: &str) -> Result<Bytes>;
    /// Garbage collection of code, in one transaction with its reference check, so a write that
    /// starts referencing an artifact either commits first (and the artifact stays) or finds it
    /// gone (`NotFound`, nothing changed). Deletes `$LATEST` revisions superseded before
    /// `older_than` that no unfinished invocation resolved to (a function redeployed a thousand
    /// times keeps one), then up to `limit` artifacts last stored (`put_artifact`) before
    /// `older_than` that no function's `$LATEST`, kept revision or published version names.
    /// The grace before `older_than` covers an upload between `put_artifact` and the write
    /// that references it, and work admitted against a revision just superseded. Idempotent;
    /// several servers may run it at once.
    async fn collect_code(&self, older_than: Millis, limit: usize) -> Result<CollectedCode>;
    /// Every sha256 a function's `$LATEST`, a kept revision or a published version names: the
    /// code local caches (task roots, compiled modules) keep.
    async fn referenced_code(&self) -> Result<Vec<String>>;

    // ---- invocations ----

    /// Inserts a batch of invocations in one transaction (one commit for many requests).
    /// Per entry: created, the existing invocation for the same idempotency key and request, or
    /// [`StoreError::KeyMismatch`].
    async fn insert_invocations(&self, batch: Vec<NewInvocation>) -> Result<Vec<Result<Inserted>>>;
    /// Records finished invocations that were never stored before (sync without a key, written
    /// behind). An id that already exists is left untouched.
    async fn record_finished(&self, records: Vec<InvocationRecord>) -> Result<()>;
    /// Claims up to `max` runnable invocations for `worker`, oldest first: each gets a new
    /// attempt epoch and a lease. Too-old events are never claimed: they are expired here or
    /// by the next recovery sweep.
    async fn claim_queued(
        &self, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Claimed>>;
    /// Claims one invocation. Exactly one of several concurrent claimers wins each epoch.
    async fn claim(
        &self, id: &InvocationId, worker: &WorkerId, lease_expires_at: Millis, now: Millis,
    ) -> Result<Claimed>;
    /// Renews the leases of attempts a worker is running. Per entry: ok or why it was refused
    /// (a fenced attempt should be abandoned).
    async fn renew_leases(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>>;
    /// Guarded completion: accepted only for the current attempt epoch of a RUNNING invocation.
    /// A refused completion changes nothing but the fenced counter.
    async fn complete(&self, completion: Completion, now: Millis) -> Result<Lifecycle>;
    /// One recovery sweep: expired leases, due retries, placement timeouts, too-old events.
    async fn recover(&self, now: Millis) -> Result<Recovered>;
    async fn get_invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>>;
    async fn list_invocations(
        &self, function: &str, filter: InvocationFilter,
    ) -> Result<Vec<InvocationRecord>>;
    /// Invocations per state, for status and tests.
    async fn count_by_state(&self) -> Result<Vec<(StateName, u64)>>;
    /// Deletes up to `limit` ended invocations that finished before `finished_before`, oldest
    /// first (retention). Work still in flight is never touched. Returns what was freed.
    async fn prune_invocations(&self, finished_before: Millis, limit: usize) -> Result<Pruned>;
    /// How many records of ended invocations there are, and the bytes they hold (payloads,
    /// results, errors, logs). Read from totals kept as records end and go, never by reading
    /// the records; the read folds the rows those writes added into one (call it regularly,
    /// or they grow with every ended record).
    async fn ended_invocations(&self) -> Result<Pruned>;
    /// Async invocations waiting to run (QUEUED, PLACED, RETRY_WAIT), per function.
    async fn async_backlog(&self) -> Result<Vec<(String, u64)>>;
    async fn counters(&self) -> Result<Counters>;

    /// Invocations completed by any server sharing this store, as they commit; `None` where
    /// one process owns the store (the caller's own completions are all there is).
    fn completion_events(&self) -> Option<tokio::sync::broadcast::Receiver<InvocationId>> {
        None
    }

    /// Whether several server processes share this store (then reserved concurrency is
    /// counted here, across all of them, with the slots below).
    fn shared(&self) -> bool {
        false
    }

    /// Takes one of the `limit` concurrency slots of `function` for `holder` (a server process)
    /// until `expires_at`: a free slot, or one whose holder stopped renewing it before `now`.
    /// `None` when all are held. A store one process owns answers `Some(0)`: that process's
    /// own count is exact.
    async fn acquire_slot(
        &self, _function: &str, _limit: u32, _holder: &str, _expires_at: Millis, _now: Millis,
    ) -> Result<Option<u32>> {
        Ok(Some(0))
    }

    /// Gives a slot back (only if `holder` still holds it).
    async fn release_slot(&self, _function: &str, _slot: u32, _holder: &str) -> Result<()> {
        Ok(())
    }

    /// Extends every slot `holder` holds to `expires_at`; how many.
    async fn renew_slots(&self, _holder: &str, _expires_at: Millis) -> Result<u64> {
        Ok(0)
    }

    /// Workers that had work placed on them by any server sharing this store, as the
    /// placements commit (so the server a worker polls wakes it at once); `None` where one
    /// process owns the store (its own placer wakes its polls).
    fn placement_events(&self) -> Option<tokio::sync::broadcast::Receiver<WorkerId>> {
        None
    }

    // ---- workers and placement ----

    /// The secret `name` the cluster's servers share: `candidate` if none was stored yet (the
    /// first server to ask stores its own), else the stored one, which never changes.
    async fn cluster_secret(&self, name: &str, candidate: &str) -> Result<String>;

    /// Records a worker's heartbeat if its revision is newer than the stored one (monotonic per
    /// worker). Returns whether it was applied.
    async fn put_worker(&self, state: WorkerState) -> Result<bool>;
    /// Every worker seen within `since` (ms epoch), by id.
    async fn list_workers(&self, since: Millis) -> Result<Vec<WorkerState>>;
    /// The oldest QUEUED invocations: `(id, function, resolved)`.
    async fn queued(&self, limit: usize) -> Result<Vec<(InvocationId, String, Resolved)>>;
    /// PLACED invocations not yet claimed, per worker.
    async fn placed_counts(&self) -> Result<Vec<(WorkerId, u64)>>;
    /// Places invocations on workers (QUEUED → PLACED). Per entry: ok or why it was refused.
    async fn place(
        &self, placements: Vec<(InvocationId, WorkerId)>, now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>>;
    /// Claims up to `max` invocations placed on `worker`, oldest first.
    async fn claim_placed(
        &self, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Claimed>>;
    /// The distinct `(function, resolved)` of invocations PLACED on or RUNNING on `worker`:
    /// the deployments whose code it may fetch.
    async fn assigned_deployments(&self, worker: &WorkerId) -> Result<Vec<(String, Resolved)>>;

    // ---- worker credentials ----

    /// Stores a new credential; `Invalid` if its worker already has one (nothing changes).
    async fn create_worker_credential(&self, credential: WorkerCredential) -> Result<()>;
    /// The credential whose secret hashes to `secret_sha256`, with its worker's last heartbeat.
    async fn find_worker_credential(&self, secret_sha256: &str) -> Result<Option<FoundCredential>>;
    /// Every credential, by worker id, with its worker's last heartbeat.
    async fn list_worker_credentials(&self) -> Result<Vec<FoundCredential>>;
    /// Deletes a worker's credential; whether there was one.
    async fn delete_worker_credential(&self, worker: &WorkerId) -> Result<bool>;
    /// Deletes enrolled credentials whose worker was last heard from (or, never heard from,
    /// that were created) before `silent_since`; returns how many.
    async fn prune_enrolled_credentials(&self, silent_since: Millis) -> Result<u64>;

    // ---- API keys: named bearer tokens and SigV4 key pairs ----

    /// Stores a new key; `Invalid` if a key with its name exists (nothing changes).
    async fn create_api_key(&self, key: ApiKey) -> Result<()>;
    /// The key with this id (revoked keys are gone).
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// Every key, by name.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    /// Revokes (deletes) the key named `name`, so its name may be used again; whether there
    /// was one.
    async fn revoke_api_key(&self, name: &str) -> Result<bool>;
    /// Records that key `id` authenticated a request at `now` (a later time only).
    async fn touch_api_key(&self, id: &str, now: Millis) -> Result<()>;
}
