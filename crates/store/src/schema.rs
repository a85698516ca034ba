//! The schema, written once for both backends. Each backend lists its migrations as steps of
//! this module (plus its few dialect-only statements) in the order its databases have applied
//! them; a [`Dialect`] renders the placeholders: `{int}` (a 64-bit integer), `{blob}` (bytes),
//! `{keyed}` (the suffix of a table that is only ever read by its primary key), `{now_ms}` (the
//! current Unix time in milliseconds).
//!
//! A migration's number is its position in the backend's list: never reorder, edit or remove
//! an applied one; append.

use crate::{Result, StoreError};

/// How a backend spells the placeholders.
pub struct Dialect {
    pub int: &'static str,
    pub blob: &'static str,
    pub keyed: &'static str,
    pub now_ms: &'static str,
}

impl Dialect {
    /// One migration: its steps rendered and joined.
    pub fn render(&self, steps: &[&str]) -> String {
        steps
            .iter()
            .map(|s| {
                s.replace("{int}", self.int)
                    .replace("{blob}", self.blob)
                    .replace("{keyed}", self.keyed)
                    .replace("{now_ms}", self.now_ms)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// SQLite's spelling.
pub const SQLITE: Dialect = Dialect {
    int: "INTEGER",
    blob: "BLOB",
    keyed: " WITHOUT ROWID",
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
};

/// PostgreSQL's spelling.
pub const POSTGRES: Dialect =
    Dialect { int: "BIGINT", blob: "BYTEA", keyed: "", now_ms: "(extract(epoch from now()) * 1000)::BIGINT" };

/// Refuses a database written by a newer gust (`current` migrations applied, `known` here).
pub fn check_version(current: i64, known: usize) -> Result<()> {
    if current < 0 || current as usize > known {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this gust ({known}); refusing to run"
        )));
    }
    Ok(())
}

/// The bytes of an invocation record that grow with use (payload, result, error, log): what
/// retention's byte budget counts. One expression for both backends, so what a write adds to
/// [`ENDED_TOTALS`] is exactly what a prune takes away.
#[macro_export]
macro_rules! record_bytes {
    () => {
        "octet_length(payload) + COALESCE(octet_length(result), 0) + COALESCE(octet_length(error), 0) \
         + octet_length(log)"
    };
}

/// [`record_bytes!`] as a constant.
pub const RECORD_BYTES: &str = record_bytes!();

/// Counters, functions, their revisions, versions and aliases.
pub const CATALOG: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value {int} NOT NULL);
INSERT INTO meta (key, value) VALUES ('snapshot_version', 0), ('fenced_completions', 0), ('fenced_renewals', 0);
CREATE TABLE functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    code_sha256 TEXT,
    revision {int} NOT NULL,
    next_version {int} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE TABLE function_revisions (
    function TEXT NOT NULL,
    revision {int} NOT NULL,
    spec TEXT NOT NULL,
    code_sha256 TEXT,
    PRIMARY KEY (function, revision)
);
CREATE TABLE versions (
    function TEXT NOT NULL,
    number {int} NOT NULL,
    spec TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    from_revision {int} NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (function, number)
);
CREATE TABLE aliases (
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    routing TEXT NOT NULL,
    revision {int} NOT NULL,
    updated_at {int} NOT NULL,
    PRIMARY KEY (function, name)
);
"#;

/// The invocation records and the indexes of the scans over them.
pub const INVOCATIONS: &str = r#"
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    resolved TEXT NOT NULL,
    payload {blob} NOT NULL,
    mode TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint TEXT,
    received_at {int} NOT NULL,
    retry TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    due_at {int},
    attempt_epoch {int} NOT NULL,
    function_errors {int} NOT NULL,
    lost_attempts {int} NOT NULL,
    result {blob},
    error TEXT,
    log TEXT NOT NULL,
    updated_at {int} NOT NULL,
    finished_at {int},
    expires_at {int}
){keyed};
CREATE UNIQUE INDEX invocations_idempotency ON invocations (function, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX invocations_queue ON invocations (id) WHERE state = 'QUEUED';
CREATE INDEX invocations_due ON invocations (state, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX invocations_expiry ON invocations (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('QUEUED', 'PLACED', 'RETRY_WAIT');
CREATE INDEX invocations_function ON invocations (function, id);
"#;

/// Remote workers and the scan of the work placed on each.
pub const WORKERS: &str = r#"
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    revision {int} NOT NULL,
    state TEXT NOT NULL,
    last_heartbeat {int} NOT NULL
);
CREATE INDEX invocations_placed ON invocations (worker, id) WHERE state = 'PLACED';
"#;

/// The epoch of the attempt that completed an invocation (fencing a late duplicate).
pub const COMPLETED_EPOCH: &str = "ALTER TABLE invocations ADD COLUMN completed_epoch {int};";

pub const ALIAS_DESCRIPTION: &str = "ALTER TABLE aliases ADD COLUMN description TEXT NOT NULL DEFAULT '';";

/// Per-worker credentials, and which worker completed an invocation.
pub const WORKER_CREDENTIALS: &str = r#"
ALTER TABLE invocations ADD COLUMN completed_by TEXT;
CREATE TABLE worker_credentials (
    worker TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    created_at {int} NOT NULL
);
"#;

pub const API_KEYS: &str = r#"
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    functions TEXT,
    bearer_sha256 TEXT NOT NULL,
    sigv4_secret TEXT NOT NULL,
    created_at {int} NOT NULL,
    last_used_at {int}
);
"#;

/// Retention prunes ended records oldest first (`finished_at` is set only when one ends).
pub const FINISHED_INDEX: &str =
    "CREATE INDEX invocations_finished ON invocations (finished_at) WHERE finished_at IS NOT NULL;";

/// How many records of ended invocations there are and the bytes they hold (retention's byte
/// budget), kept as rows that sum to the totals: each write that ends, writes or prunes ended
/// records adds one row of its difference, in its own transaction (no row every writer waits
/// for), and a read folds the rows into one. Seeded here from the records already kept.
pub const ENDED_TOTALS: &str = concat!(
    "CREATE TABLE ended_totals (records {int} NOT NULL, bytes {int} NOT NULL);\n",
    "INSERT INTO ended_totals (records, bytes) SELECT COUNT(*), COALESCE(SUM(",
    record_bytes!(),
    "), 0) FROM invocations WHERE finished_at IS NOT NULL;"
);

/// The live workers are found by their last heartbeat (the placer and the live-worker view
/// ask several times a second): without it every worker row ever written was read each time,
/// and each restart of an enrolled worker adds one.
pub const WORKERS_HEARTBEAT_INDEX: &str = "CREATE INDEX workers_heartbeat ON workers (last_heartbeat);";

/// Garbage collection of code: when each `$LATEST` revision was written (rows from before count
/// as written at the upgrade, so none is collected sooner than its grace).
pub const REVISION_CREATED_AT: &str =
    "ALTER TABLE function_revisions ADD COLUMN created_at {int} NOT NULL DEFAULT 0;
UPDATE function_revisions SET created_at = {now_ms};";

/// Lambda's ClientContext of a sync invocation, for the worker that runs it.
pub const CLIENT_CONTEXT: &str = "ALTER TABLE invocations ADD COLUMN client_context TEXT;";

/// Cluster-wide reserved concurrency: slot `slot` of `function` is held by `holder` (a server
/// process) until `expires_at` (renewed while it runs; a dead holder's slots free themselves).
pub const CONCURRENCY_SLOTS: &str = r#"
CREATE TABLE concurrency_slots (
    function TEXT NOT NULL,
    slot {int} NOT NULL,
    holder TEXT NOT NULL,
    expires_at {int} NOT NULL,
    PRIMARY KEY (function, slot)
);
CREATE INDEX concurrency_slots_holder ON concurrency_slots (holder);
"#;

/// Indexes of the work not yet ended, for the scans repeated while a server runs: the
/// waiting async work per function (the queue caps' count, once a second) and the work on a
/// worker (which code it may fetch). Without them both scanned every record ever kept, which
/// grows with retention: a full scan a second cost a busy server a whole core.
pub const WAITING_INDEXES: &str = r#"
CREATE INDEX invocations_waiting ON invocations (function)
    WHERE state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') AND mode = 'async';
CREATE INDEX invocations_assigned ON invocations (worker) WHERE state IN ('PLACED', 'RUNNING');
"#;

/// Function URLs: one per `$LATEST` or alias of a function, found by its id at the edge.
pub const FUNCTION_URLS: &str = r#"
CREATE TABLE function_urls (
    url_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE UNIQUE INDEX function_urls_target ON function_urls (function, qualifier);
"#;

/// Queues (SQS standard queues) and their messages, keyed by the queue's incarnation id.
pub const QUEUES: &str = r#"
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    attributes TEXT NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE TABLE queue_messages (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_at {int} NOT NULL,
    visible_at {int} NOT NULL,
    receive_count {int} NOT NULL,
    first_received_at {int},
    receipt TEXT,
    expires_at {int} NOT NULL,
    PRIMARY KEY (queue, id)
){keyed};
CREATE INDEX queue_messages_visible ON queue_messages (queue, visible_at);
CREATE INDEX queue_messages_expiry ON queue_messages (expires_at);
CREATE TABLE event_source_mappings (
    uuid TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    function TEXT NOT NULL,
    config TEXT NOT NULL,
    updated_at {int} NOT NULL
);
"#;

/// The default schedule group as a row: creators of schedules and groups lock it, so the
/// bounds on how many exist hold under concurrent creators on PostgreSQL too.
pub const SCHEDULE_DEFAULT_GROUP: &str = r#"
INSERT INTO schedule_groups (name, created_at, updated_at) VALUES ('default', 0, 0) ON CONFLICT (name) DO NOTHING;
"#;

/// Redrive back: where a dead letter came from (its source queue's incarnation id), and the
/// message move tasks that took dead letters back.
pub const MESSAGE_MOVES: &str = r#"
ALTER TABLE queue_messages ADD COLUMN source_queue TEXT;
CREATE TABLE queue_move_tasks (
    handle TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT,
    moved {int} NOT NULL,
    to_move {int} NOT NULL,
    started_at {int} NOT NULL
);
CREATE INDEX queue_move_tasks_source ON queue_move_tasks (source, started_at);
"#;

/// Each invocation's trace (X-Ray's form) and the figures its last attempt reported (JSON of
/// `gust_core::Report`: Lambda's REPORT line, the console's timeline, the duration metrics).
pub const TRACE_AND_REPORT: &str = "ALTER TABLE invocations ADD COLUMN trace_id TEXT;
ALTER TABLE invocations ADD COLUMN report TEXT;";

/// Each invocation's lifecycle as it happened: one JSON object per line per transition
/// (placed, started with its epoch and worker, completed, lease expired, retry due, ...),
/// appended by the transition's own write and bounded (`rows::MAX_HISTORY_BYTES`).
pub const INVOCATION_HISTORY: &str = "ALTER TABLE invocations ADD COLUMN history TEXT;";

/// Secrets the cluster's servers share (the peer secret of handed-over invocations).
pub const CLUSTER_SECRETS: &str =
    "CREATE TABLE cluster_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL){keyed};";

/// FIFO queues: a message's group, deduplication id and sequence number, each queue's last
/// sequence number, and the deduplication ids seen in the last five minutes.
pub const FIFO_QUEUES: &str = r#"
ALTER TABLE queue_messages ADD COLUMN group_id TEXT;
ALTER TABLE queue_messages ADD COLUMN dedup_id TEXT;
ALTER TABLE queue_messages ADD COLUMN seq {int};
ALTER TABLE queues ADD COLUMN seq {int} NOT NULL DEFAULT 0;
CREATE INDEX queue_messages_group ON queue_messages (queue, group_id) WHERE group_id IS NOT NULL;
CREATE TABLE queue_dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq {int} NOT NULL,
    expires_at {int} NOT NULL,
    PRIMARY KEY (queue, dedup_id)
){keyed};
"#;

/// Schedules (EventBridge Scheduler's), their groups, and their firings: one row per scheduled
/// time, the history `gust schedule history` shows and the key that makes each time fire once.
pub const SCHEDULES: &str = r#"
CREATE TABLE schedule_groups (
    name TEXT PRIMARY KEY,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE TABLE schedules (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    next_at {int},
    fire_at {int},
    PRIMARY KEY (grp, name)
);
CREATE INDEX schedules_due ON schedules (fire_at) WHERE fire_at IS NOT NULL;
CREATE TABLE schedule_firings (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    scheduled_at {int} NOT NULL,
    fire_at {int} NOT NULL,
    state TEXT NOT NULL,
    attempts {int} NOT NULL,
    retry_at {int} NOT NULL,
    invocation_id TEXT,
    detail TEXT,
    missed_count {int},
    missed_until {int},
    PRIMARY KEY (grp, name, scheduled_at)
){keyed};
CREATE INDEX schedule_firings_due ON schedule_firings (retry_at) WHERE state = 'PENDING';
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_rendered() {
        let d = Dialect { int: "BIGINT", blob: "BYTEA", keyed: "", now_ms: "0" };
        let all = d.render(&[
            CATALOG,
            INVOCATIONS,
            WORKERS,
            COMPLETED_EPOCH,
            ALIAS_DESCRIPTION,
            WORKER_CREDENTIALS,
            API_KEYS,
            FINISHED_INDEX,
            REVISION_CREATED_AT,
            CLIENT_CONTEXT,
            CONCURRENCY_SLOTS,
            WAITING_INDEXES,
            FUNCTION_URLS,
            QUEUES,
            SCHEDULES,
            FIFO_QUEUES,
            SCHEDULE_DEFAULT_GROUP,
            MESSAGE_MOVES,
            TRACE_AND_REPORT,
            INVOCATION_HISTORY,
            CLUSTER_SECRETS,
            ENDED_TOTALS,
            WORKERS_HEARTBEAT_INDEX,
        ]);
        assert!(!all.contains('{'), "unrendered placeholder in {all}");
    }

    #[test]
    fn a_newer_database_is_refused() {
        assert!(check_version(3, 3).is_ok());
        assert!(check_version(4, 3).unwrap_err().to_string().contains("newer than this gust"));
    }
}
