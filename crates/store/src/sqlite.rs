//! The SQLite backend of the embedded shape.
//!
//! One writer thread owns the only write connection and commits in groups: it takes every job
//! waiting in its queue, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction, commits once (one fsync with `synchronous=FULL`), then answers every job. A
//! job's reply is sent only after the commit, so an acknowledgement never precedes durability.
//! Reads run on a small pool of read connections on blocking threads (WAL lets them proceed
//! while the writer works). Nothing here blocks the async runtime.
//!
//! Guards run inside the writer's transaction, which holds SQLite's write lock; each lifecycle
//! write is also a conditional UPDATE on `(state, attempt_epoch)`, so the pattern stays correct
//! on a backend without a global write lock.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::limits::{DEFAULT_PLACEMENT_TIMEOUT_MS, RECOVERY_BATCH};
use gust_core::{
    apply, Alias, ApiKey, Context, Deployment, ErrorKind, Event, FunctionConfig, FunctionSpec, InvocationId,
    InvocationRecord, Lifecycle, Millis, Mode, Rejected, Resolved, Routing, StateName, Version, WorkerId,
    WorkerState,
};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::blob::BlobDir;
use crate::gc;
use crate::rows::{
    corrupt, credential_row, decode_state, destination_request, encode_state, json_err, may_owe_destination,
    refuse_if_routed, repeated_report, same_but_description, system_error, to_record, version_spec, KeyRow,
    Outcome, RawInvocation, KEY_COLUMNS,
};
use crate::space::{DiskSpace, LogEvery, DEFAULT_DISK_RESERVE_BYTES};
use crate::{
    Claimed, CollectedCode, Completion, Counters, FoundCredential, Inserted, InvocationFilter, Kind,
    NewInvocation, Pruned, Recovered, Result, Store, StoreError, WorkerCredential,
};

/// Most jobs committed in one group.
const MAX_GROUP: usize = 1024;
/// Read connections kept open.
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('snapshot_version', 0), ('fenced_completions', 0), ('fenced_renewals', 0);
CREATE TABLE functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    code_sha256 TEXT,
    revision INTEGER NOT NULL,
    next_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE function_revisions (
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    spec TEXT NOT NULL,
    code_sha256 TEXT,
    PRIMARY KEY (function, revision)
);
CREATE TABLE versions (
    function TEXT NOT NULL,
    number INTEGER NOT NULL,
    spec TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    from_revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (function, number)
);
CREATE TABLE aliases (
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    routing TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    resolved TEXT NOT NULL,
    payload BLOB NOT NULL,
    mode TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint TEXT,
    received_at INTEGER NOT NULL,
    retry TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    due_at INTEGER,
    attempt_epoch INTEGER NOT NULL,
    function_errors INTEGER NOT NULL,
    lost_attempts INTEGER NOT NULL,
    result BLOB,
    error TEXT,
    log TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE UNIQUE INDEX invocations_idempotency ON invocations (function, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX invocations_queue ON invocations (id) WHERE state = 'QUEUED';
CREATE INDEX invocations_due ON invocations (state, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX invocations_expiry ON invocations (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('QUEUED', 'PLACED', 'RETRY_WAIT');
CREATE INDEX invocations_function ON invocations (function, id);
"#,
    r#"
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_heartbeat INTEGER NOT NULL
);
CREATE INDEX invocations_placed ON invocations (worker, id) WHERE state = 'PLACED';
"#,
    "ALTER TABLE invocations ADD COLUMN completed_epoch INTEGER;",
    "ALTER TABLE aliases ADD COLUMN description TEXT NOT NULL DEFAULT '';",
    r#"
ALTER TABLE invocations ADD COLUMN completed_by TEXT;
CREATE TABLE worker_credentials (
    worker TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    functions TEXT,
    bearer_sha256 TEXT NOT NULL,
    sigv4_secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
"#,
    // Retention prunes terminal records oldest first (finished_at is set only when an
    // invocation ends).
    "CREATE INDEX invocations_finished ON invocations (finished_at) WHERE finished_at IS NOT NULL;",
    // Garbage collection of code: when each `$LATEST` revision was written (rows from before
    // count as written at the upgrade, so none is collected sooner than its grace).
    "ALTER TABLE function_revisions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0; \
     UPDATE function_revisions SET created_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER);",
];

/// The bytes of an invocation record that grow with use (what retention's budget counts).
const RECORD_BYTES: &str =
    "length(payload) + COALESCE(length(result), 0) + COALESCE(length(error), 0) + length(log)";
/// Deletes the oldest ended invocations (`?1` finished before, `?2` at most), each row
/// answering its size.
const PRUNE_SQL: &str = "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations \
     WHERE finished_at IS NOT NULL AND finished_at < ?1 ORDER BY finished_at LIMIT ?2) \
     RETURNING length(payload) + COALESCE(length(result), 0) + COALESCE(length(error), 0) + length(log)";
const BACKLOG_SQL: &str = "SELECT function, COUNT(*) FROM invocations \
     WHERE state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') AND mode = 'async' GROUP BY function";

/// Options of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync every commit; survives power loss) or `NORMAL` (survives a
    /// process crash, may lose the last commits on power loss). Default FULL.
    pub fsync_every_commit: bool,
    /// Free space kept for finishing work already accepted: below it, new work is refused
    /// ([`crate::space`]). Default [`DEFAULT_DISK_RESERVE_BYTES`].
    pub disk_reserve_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { fsync_every_commit: true, disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES }
    }
}

type Reply = Box<dyn FnOnce(Result<()>) + Send>;
/// A job runs in the group's transaction and answers its reply, plus its own error (if it
/// failed) for the group to report should the whole transaction be lost with it.
type Job = Box<dyn FnOnce(&mut Transaction<'_>) -> (Reply, Option<StoreError>) + Send>;

pub struct SqliteStore {
    writer: Mutex<mpsc::Sender<Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    blobs: BlobDir,
    space: Arc<DiskSpace>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // SQLite's own verdict on ENOSPC (and a database at its size limit).
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(format!("sqlite: {e}")),
        _ => StoreError::Backend(format!("sqlite: {e}")),
    }
}

/// A failed write on a disk below its reserve is a full disk: SQLite reports some of ENOSPC's
/// consequences (growing the shared-memory index, EDQUOT on a write) as plain I/O errors.
fn on_disk(space: &DiskSpace, e: StoreError) -> StoreError {
    match e {
        StoreError::Backend(msg) if space.is_low() => StoreError::Full(msg),
        e => e,
    }
}

fn open_connection(path: &Path, opts: &SqliteOptions) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(db_err)?;
    let sync = if opts.fsync_every_commit { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
    ))
    .map_err(db_err)?;
    Ok(conn)
}

/// The database, which holds every function's configuration, is the owner's alone (SQLite gives
/// its -wal and -shm files the database file's mode).
fn private_files(dir: &Path, db: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| StoreError::Backend(format!("permissions in {}: {e}", dir.display()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .map_err(fail)?;
    for name in ["gust.db", "gust.db-wal", "gust.db-shm"] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db_err)?;
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this gust ({}); refusing to run",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`: `gust.db` plus `artifacts/`.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("gust.db");
        private_files(dir, &path)?;
        let mut conn = open_connection(&path, &opts)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let space = Arc::new(DiskSpace::new(dir, opts.disk_reserve_bytes));
        let writer_space = space.clone();
        std::thread::Builder::new()
            .name("gust-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_space))
            .map_err(|e| StoreError::Backend(format!("spawn writer: {e}")))?;
        let readers = (0..READERS).map(|_| open_connection(&path, &opts)).collect::<Result<Vec<_>>>()?;
        Ok(SqliteStore {
            writer: Mutex::new(tx),
            readers: Arc::new(Mutex::new(readers)),
            path,
            blobs: BlobDir::open(&dir.join("artifacts"))?,
            space,
        })
    }

    /// Refuses new work (`Full`) while the disk is below its reserve; writes that finish work
    /// already accepted (claims, renewals, completions, recovery) do not ask.
    fn admit(&self) -> Result<()> {
        self.space.admit()
    }

    /// Runs `f` in the next group-commit transaction; resolves after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T>>();
        let space = self.space.clone();
        let job: Job = Box::new(move |tx: &mut Transaction<'_>| {
            let outcome = match tx.savepoint() {
                Ok(mut sp) => {
                    let r = f(&sp);
                    match &r {
                        Ok(_) => match sp.commit() {
                            Ok(()) => r,
                            Err(e) => Err(db_err(e)),
                        },
                        Err(_) => {
                            let _ = sp.rollback();
                            r
                        }
                    }
                }
                Err(e) => Err(db_err(e)),
            };
            let failed = outcome.as_ref().err().cloned();
            let reply: Reply = Box::new(move |committed: Result<()>| {
                let _ = reply_tx.send(committed.and(outcome).map_err(|e| on_disk(&space, e)));
            });
            (reply, failed)
        });
        self.writer
            .lock()
            .send(job)
            .map_err(|_| StoreError::Backend("sqlite writer thread has stopped".into()))?;
        reply_rx.await.map_err(|_| StoreError::Backend("sqlite writer dropped the request".into()))?
    }

    /// Runs `f` on a read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&path, &SqliteOptions::default())?,
            };
            let r = f(&conn);
            let mut pool = readers.lock();
            if pool.len() < READERS {
                pool.push(conn);
            }
            r
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&BlobDir) -> Result<T> + Send + 'static,
    {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || f(&blobs))
            .await
            .map_err(|e| StoreError::Backend(format!("artifact task failed: {e}")))?
    }
}

/// How often the writer repeats that commits fail (while a disk is full they fail at the rate
/// work arrives).
const FAILED_COMMIT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

fn commit_err(e: rusqlite::Error) -> StoreError {
    match db_err(e) {
        StoreError::Full(m) => StoreError::Full(format!("commit failed: {m}")),
        other => StoreError::Backend(format!("commit failed: {other}")),
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, space: &DiskSpace) {
    let quiet = LogEvery::new(FAILED_COMMIT_LOG_EVERY);
    let log = |e: &StoreError| {
        if let Some(held) = quiet.allow() {
            match on_disk(space, e.clone()) {
                StoreError::Full(_) => tracing::warn!(
                    error = %e, repeated = held,
                    "sqlite: writes fail: the disk is full; new work is refused and accepted work waits until space is freed"
                ),
                _ => tracing::error!(error = %e, repeated = held, "sqlite: writes fail"),
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let mut jobs = Vec::with_capacity(16);
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // One transaction for the group, unless SQLite cancels it mid-way (on SQLITE_FULL,
        // IOERR or NOMEM it may roll back the whole transaction, not only the statement): the
        // jobs run until then fail with it, since their writes are gone, and the rest go into
        // a transaction of their own. Without this, the rest would run outside any transaction
        // and the earlier jobs be answered as if committed.
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => tx,
                Err(e) => {
                    log(&StoreError::Backend(format!("sqlite: begin: {e}")));
                    // The jobs are dropped unanswered; their callers see "dropped the request".
                    jobs.by_ref().for_each(drop);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    break;
                }
            };
            let mut replies: Vec<Reply> = Vec::new();
            let mut lost = None;
            for job in jobs.by_ref() {
                let (reply, failed) = job(&mut tx);
                replies.push(reply);
                if tx.is_autocommit() {
                    let rolled_back = || StoreError::Backend("sqlite rolled the transaction back".into());
                    lost = Some(failed.unwrap_or_else(rolled_back));
                    break;
                }
            }
            let committed = match lost {
                Some(e) => Err(e),
                None => tx.commit().map_err(commit_err),
            };
            if let Err(e) = &committed {
                log(e);
            }
            for reply in replies {
                reply(committed.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row encoding

fn bump_snapshot(c: &Connection) -> Result<u64> {
    c.query_row("UPDATE meta SET value = value + 1 WHERE key = 'snapshot_version' RETURNING value", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
    .map_err(db_err)
}

fn bump_counter(c: &Connection, key: &str) -> Result<()> {
    c.execute("UPDATE meta SET value = value + 1 WHERE key = ?1", [key]).map_err(db_err)?;
    Ok(())
}

fn function_from_row(r: &Row<'_>) -> rusqlite::Result<(String, String, Option<String>, i64, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

const FUNCTION_COLS: &str = "name, spec, code_sha256, revision, created_at, updated_at";

fn to_function(raw: (String, String, Option<String>, i64, i64, i64)) -> Result<FunctionConfig> {
    let (name, spec, code_sha256, revision, created_at, updated_at) = raw;
    Ok(FunctionConfig {
        name,
        spec: crate::secrets::open_spec(&spec)?,
        code_sha256,
        revision: revision as u64,
        created_at,
        updated_at,
    })
}

fn load_function(c: &Connection, name: &str) -> Result<Option<FunctionConfig>> {
    c.query_row(&format!("SELECT {FUNCTION_COLS} FROM functions WHERE name = ?1"), [name], function_from_row)
        .optional()
        .map_err(db_err)?
        .map(to_function)
        .transpose()
}

fn require_function(c: &Connection, name: &str, expect: Option<u64>) -> Result<FunctionConfig> {
    let f = load_function(c, name)?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Function, name: name.to_string() })?;
    check_revision(expect, f.revision)?;
    Ok(f)
}

fn check_revision(expect: Option<u64>, actual: u64) -> Result<()> {
    match expect {
        Some(expected) if expected != actual => Err(StoreError::RevisionMismatch { expected, actual }),
        _ => Ok(()),
    }
}

const VERSION_COLS: &str = "function, number, spec, code_sha256, from_revision, created_at";

fn version_from_row(r: &Row<'_>) -> rusqlite::Result<(String, i64, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_version(raw: (String, i64, String, String, i64, i64)) -> Result<Version> {
    let (function, number, spec, code_sha256, from_revision, created_at) = raw;
    Ok(Version {
        function,
        number: number as u64,
        spec: crate::secrets::open_spec(&spec)?,
        code_sha256,
        from_revision: from_revision as u64,
        created_at,
    })
}

const ALIAS_COLS: &str = "function, name, routing, revision, updated_at, description";

type RawAlias = (String, String, String, i64, i64, String);

fn alias_from_row(r: &Row<'_>) -> rusqlite::Result<RawAlias> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_alias(raw: RawAlias) -> Result<Alias> {
    let (function, name, routing, revision, updated_at, description) = raw;
    Ok(Alias {
        function,
        name,
        routing: serde_json::from_str(&routing).map_err(json_err)?,
        description,
        revision: revision as u64,
        updated_at,
    })
}

const INVOCATION_COLS: &str = "id, function, qualifier, resolved, payload, mode, idempotency_key, fingerprint, \
     received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts, result, error, log, \
     updated_at, finished_at";

fn invocation_from_row(r: &Row<'_>) -> rusqlite::Result<RawInvocation> {
    Ok(RawInvocation {
        id: r.get(0)?,
        function: r.get(1)?,
        qualifier: r.get(2)?,
        resolved: r.get(3)?,
        payload: r.get(4)?,
        mode: r.get(5)?,
        idempotency_key: r.get(6)?,
        fingerprint: r.get(7)?,
        received_at: r.get(8)?,
        retry: r.get(9)?,
        state: r.get(10)?,
        worker: r.get(11)?,
        due_at: r.get(12)?,
        attempt_epoch: r.get(13)?,
        function_errors: r.get(14)?,
        lost_attempts: r.get(15)?,
        result: r.get(16)?,
        error: r.get(17)?,
        log: r.get(18)?,
        updated_at: r.get(19)?,
        finished_at: r.get(20)?,
    })
}

fn load_invocation(c: &Connection, id: &str) -> Result<Option<InvocationRecord>> {
    c.query_row(
        &format!("SELECT {INVOCATION_COLS} FROM invocations WHERE id = ?1"),
        [id],
        invocation_from_row,
    )
    .optional()
    .map_err(db_err)?
    .map(to_record)
    .transpose()
}

fn insert_record(c: &Connection, rec: &InvocationRecord) -> Result<usize> {
    let req = &rec.request;
    let (state, worker, due_at) = encode_state(&rec.lifecycle.state);
    let expires_at = match req.mode {
        Mode::Async => {
            Some(req.received_at.saturating_add((req.retry.max_event_age_s as i64).saturating_mul(1000)))
        }
        Mode::Sync => None,
    };
    c.prepare_cached(
        "INSERT OR IGNORE INTO invocations (id, function, qualifier, resolved, payload, mode, idempotency_key, \
         fingerprint, received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts, \
         result, error, log, updated_at, finished_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
    )
    .map_err(db_err)?
    .execute(params![
        req.id.0,
        req.function,
        req.qualifier,
        req.resolved.encode(),
        req.payload.as_ref(),
        req.mode.as_str(),
        req.idempotency_key,
        req.fingerprint,
        req.received_at,
        serde_json::to_string(&req.retry).map_err(json_err)?,
        state,
        worker,
        due_at,
        rec.lifecycle.attempt_epoch as i64,
        rec.lifecycle.function_errors as i64,
        rec.lifecycle.lost_attempts as i64,
        rec.result.as_deref(),
        rec.error.as_ref().map(serde_json::to_string).transpose().map_err(json_err)?,
        rec.log,
        rec.updated_at,
        rec.finished_at,
        expires_at,
    ])
    .map_err(db_err)
}

/// The part of an invocation row a transition needs.
struct Guarded {
    ctx: Context,
    lifecycle: Lifecycle,
    id: InvocationId,
}

fn load_guarded(c: &Connection, id: &str) -> Result<Guarded> {
    let row = c
        .prepare_cached(
            "SELECT mode, received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts \
             FROM invocations WHERE id = ?1",
        )
        .map_err(db_err)?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })
        .optional()
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Invocation, name: id.to_string() })?;
    let (mode, received_at, retry, state, worker, due_at, epoch, function_errors, lost_attempts) = row;
    Ok(Guarded {
        ctx: Context {
            mode: Mode::parse(&mode).ok_or_else(|| corrupt("mode"))?,
            received_at,
            retry: serde_json::from_str(&retry).map_err(json_err)?,
        },
        lifecycle: Lifecycle {
            state: decode_state(&state, worker, due_at)?,
            attempt_epoch: epoch as u64,
            function_errors: function_errors as u32,
            lost_attempts: lost_attempts as u32,
        },
        id: InvocationId(id.to_string()),
    })
}

/// Applies `event` to invocation `id` with a conditional UPDATE on `(state, attempt_epoch)`.
/// Returns the new lifecycle, or the state machine's refusal (nothing written).
fn transition(
    c: &Connection,
    id: &str,
    event: &Event,
    outcome: Outcome<'_>,
    now: Millis,
) -> Result<Result<Lifecycle, Rejected>> {
    let g = load_guarded(c, id)?;
    let next = match apply(&g.ctx, &g.lifecycle, event, now) {
        Ok(next) => next,
        Err(rejected) => return Ok(Err(rejected)),
    };
    let (state, worker, due_at) = encode_state(&next.state);
    let finished_at = next.state.is_terminal().then_some(now);
    let error_json = outcome.error.map(serde_json::to_string).transpose().map_err(json_err)?;
    let changed = c
        .prepare_cached(
            "UPDATE invocations SET state = ?1, worker = ?2, due_at = ?3, attempt_epoch = ?4, function_errors = ?5, \
             lost_attempts = ?6, updated_at = ?7, finished_at = COALESCE(?8, finished_at), \
             result = CASE WHEN ?9 THEN ?10 ELSE result END, \
             error = CASE WHEN ?9 THEN ?11 ELSE error END, \
             log = COALESCE(?12, log) \
             WHERE id = ?13 AND state = ?14 AND attempt_epoch = ?15",
        )
        .map_err(db_err)?
        .execute(params![
            state,
            worker,
            due_at,
            next.attempt_epoch as i64,
            next.function_errors as i64,
            next.lost_attempts as i64,
            now,
            finished_at,
            outcome.result.is_some() || outcome.error.is_some(),
            outcome.result,
            error_json,
            outcome.log,
            g.id.0,
            g.lifecycle.state.name().as_str(),
            g.lifecycle.attempt_epoch as i64,
        ])
        .map_err(db_err)?;
    if changed != 1 {
        return Err(StoreError::Backend(format!("invocation {id} changed under its guard")));
    }
    if may_owe_destination(&g.ctx, &next) {
        deliver_destination(c, id, now)?;
    }
    Ok(Ok(next))
}

/// Writes the destination invocation a just-finished invocation owes (same transaction).
fn deliver_destination(c: &Connection, id: &str, now: Millis) -> Result<()> {
    let Some(rec) = load_invocation(c, id)? else { return Ok(()) };
    let Some((target, payload)) = gust_core::lambda::destination(&rec, now) else { return Ok(()) };
    let Some(f) = load_function(c, &target)? else { return Ok(()) };
    if let Some(new) = destination_request(f, payload, now) {
        insert_record(c, &new)?;
    }
    Ok(())
}

fn ids_where(c: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(sql).map_err(db_err)?;
    let rows = stmt.query_map(params, |r| r.get::<_, String>(0)).map_err(db_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
}

fn expire(c: &Connection, id: &str, now: Millis) -> Result<bool> {
    let error =
        system_error(ErrorKind::Expired, "the event exceeded its maximum age before it could run".into());
    Ok(transition(c, id, &Event::Expire, Outcome { error: Some(&error), ..Outcome::default() }, now)?.is_ok())
}

/// Writes `$LATEST` of a function (creating it if `expect` allows), keeping its code unless
/// `code` replaces it.
fn write_function(
    c: &Connection,
    name: String,
    spec: FunctionSpec,
    code: Option<String>,
    expect: Option<u64>,
    now: Millis,
) -> Result<FunctionConfig> {
    let existing = load_function(c, &name)?;
    check_revision(expect, existing.as_ref().map_or(0, |f| f.revision))?;
    let revision = bump_snapshot(c)?;
    let spec_json = crate::secrets::seal_spec(&spec)?;
    let code = code.or_else(|| existing.as_ref().and_then(|f| f.code_sha256.clone()));
    c.execute(
        "INSERT INTO functions (name, spec, code_sha256, revision, next_version, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5) \
         ON CONFLICT (name) DO UPDATE SET spec = ?2, code_sha256 = ?3, revision = ?4, updated_at = ?5",
        params![name, spec_json, code, revision as i64, now],
    )
    .map_err(db_err)?;
    c.execute(
        "INSERT INTO function_revisions (function, revision, spec, code_sha256, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, revision as i64, spec_json, code, now],
    )
    .map_err(db_err)?;
    Ok(FunctionConfig {
        name,
        spec,
        code_sha256: code,
        revision,
        created_at: existing.as_ref().map_or(now, |f| f.created_at),
        updated_at: now,
    })
}

/// The first column of every row of `sql`, as text.
fn strings(c: &Connection, sql: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(sql).map_err(db_err)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
}

/// Deletes the `$LATEST` revisions [`gc::prunable_revisions`] names; returns how many.
fn prune_revisions(c: &Connection, older_than: Millis) -> Result<u64> {
    let live = {
        let mut stmt = c.prepare_cached(gc::LIVE_RESOLVED_SQL).map_err(db_err)?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(db_err)?;
        gc::live_revisions(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?)
    };
    let revisions = {
        let mut stmt = c.prepare_cached(gc::REVISIONS_SQL).map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(gc::RevisionRow {
                    function: r.get(0)?,
                    revision: r.get::<_, i64>(1)? as u64,
                    created_at: r.get(2)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?
    };
    let current: HashMap<String, u64> = {
        let mut stmt = c.prepare_cached(gc::CURRENT_SQL).map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)?
    };
    let prune = gc::prunable_revisions(&revisions, &current, &live, older_than);
    let mut delete = c
        .prepare_cached("DELETE FROM function_revisions WHERE function = ?1 AND revision = ?2")
        .map_err(db_err)?;
    for (function, revision) in &prune {
        delete.execute(params![function, *revision as i64]).map_err(db_err)?;
    }
    Ok(prune.len() as u64)
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for SqliteStore {
    async fn put_function(
        &self,
        name: &str,
        spec: FunctionSpec,
        expect: Option<u64>,
        now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let name = name.to_string();
        self.write(move |c| write_function(c, name, spec, None, expect, now)).await
    }

    async fn create_function(
        &self,
        name: &str,
        spec: FunctionSpec,
        code_sha256: &str,
        now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let (name, code) = (name.to_string(), code_sha256.to_string());
        let blobs = self.blobs.clone();
        self.write(move |c| {
            // Checked in the writer, which collections also run in: the artifact cannot go
            // between this check and the commit.
            if !blobs.exists(&code) {
                return Err(StoreError::NotFound {
                    kind: Kind::Artifact,
                    name: code.chars().take(80).collect(),
                });
            }
            write_function(c, name, spec, Some(code), Some(0), now)
        })
        .await
    }

    async fn set_function_code(
        &self,
        name: &str,
        code_sha256: &str,
        expect: Option<u64>,
        now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let (name, code) = (name.to_string(), code_sha256.to_string());
        let blobs = self.blobs.clone();
        self.write(move |c| {
            let mut f = require_function(c, &name, expect)?;
            blobs.get(&code)?; // the artifact must exist and verify
            let revision = bump_snapshot(c)?;
            let spec_json = crate::secrets::seal_spec(&f.spec)?;
            c.execute(
                "UPDATE functions SET code_sha256 = ?2, revision = ?3, updated_at = ?4 WHERE name = ?1",
                params![name, code, revision as i64, now],
            )
            .map_err(db_err)?;
            c.execute(
                "INSERT INTO function_revisions (function, revision, spec, code_sha256, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, revision as i64, spec_json, code, now],
            )
            .map_err(db_err)?;
            f.code_sha256 = Some(code);
            f.revision = revision;
            f.updated_at = now;
            Ok(f)
        })
        .await
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let name = name.to_string();
        self.read(move |c| load_function(c, &name)).await
    }

    async fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        let after = after.unwrap_or("").to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {FUNCTION_COLS} FROM functions WHERE name > ?1 ORDER BY name LIMIT ?2"
                ))
                .map_err(db_err)?;
            let rows = stmt.query_map(params![after, limit as i64], function_from_row).map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(to_function)).collect()
        })
        .await
    }

    async fn delete_function(&self, name: &str, expect: Option<u64>, now: Millis) -> Result<u64> {
        let name = name.to_string();
        self.write(move |c| {
            require_function(c, &name, expect)?;
            bump_snapshot(c)?;
            for table in ["function_revisions", "versions", "aliases"] {
                c.execute(&format!("DELETE FROM {table} WHERE function = ?1"), [&name]).map_err(db_err)?;
            }
            c.execute("DELETE FROM functions WHERE name = ?1", [&name]).map_err(db_err)?;
            let pending = ids_where(
                c,
                "SELECT id FROM invocations WHERE function = ?1 \
                 AND state IN ('QUEUED', 'PLACED', 'RUNNING', 'RETRY_WAIT')",
                [&name],
            )?;
            let error = system_error(ErrorKind::FunctionDeleted, format!("function {name} was deleted"));
            let mut cancelled = 0;
            for id in pending {
                let outcome = Outcome { error: Some(&error), ..Outcome::default() };
                if transition(c, &id, &Event::Cancel, outcome, now)?.is_ok() {
                    cancelled += 1;
                }
            }
            Ok(cancelled)
        })
        .await
    }

    async fn delete_version(&self, name: &str, number: u64, _now: Millis) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            require_function(c, &name, None)?;
            let routings = {
                let mut stmt =
                    c.prepare_cached("SELECT routing FROM aliases WHERE function = ?1").map_err(db_err)?;
                let rows = stmt.query_map([&name], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?
            };
            refuse_if_routed(&name, number, &routings)?;
            bump_snapshot(c)?;
            let n = c
                .execute(
                    "DELETE FROM versions WHERE function = ?1 AND number = ?2",
                    params![name, number as i64],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound { kind: Kind::Version, name: format!("{name}:{number}") });
            }
            Ok(())
        })
        .await
    }

    async fn publish_version(
        &self,
        name: &str,
        expect: Option<u64>,
        description: Option<&str>,
        now: Millis,
    ) -> Result<Version> {
        self.admit()?;
        let name = name.to_string();
        let description = description.map(str::to_string);
        self.write(move |c| {
            let f = require_function(c, &name, expect)?;
            let code = f.code_sha256.clone().ok_or_else(|| {
                StoreError::Invalid(format!("function {name} has no code yet: upload code before publishing"))
            })?;
            let latest = c
                .query_row(
                    &format!("SELECT {VERSION_COLS} FROM versions WHERE function = ?1 ORDER BY number DESC LIMIT 1"),
                    [&name],
                    version_from_row,
                )
                .optional()
                .map_err(db_err)?
                .map(to_version)
                .transpose()?;
            if let Some(v) = latest {
                if same_but_description(&v.spec, &f.spec) && v.code_sha256 == code {
                    return Ok(v);
                }
            }
            let number: i64 = c
                .query_row(
                    "UPDATE functions SET next_version = next_version + 1 WHERE name = ?1 RETURNING next_version - 1",
                    [&name],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            bump_snapshot(c)?;
            let spec = version_spec(&f.spec, description.as_deref());
            let spec_json = crate::secrets::seal_spec(&spec)?;
            c.execute(
                "INSERT INTO versions (function, number, spec, code_sha256, from_revision, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![name, number, spec_json, code, f.revision as i64, now],
            )
            .map_err(db_err)?;
            Ok(Version {
                function: name,
                number: number as u64,
                spec,
                code_sha256: code,
                from_revision: f.revision,
                created_at: now,
            })
        })
        .await
    }

    async fn get_version(&self, name: &str, number: u64) -> Result<Option<Version>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {VERSION_COLS} FROM versions WHERE function = ?1 AND number = ?2"),
                params![name, number as i64],
                version_from_row,
            )
            .optional()
            .map_err(db_err)?
            .map(to_version)
            .transpose()
        })
        .await
    }

    async fn list_versions(&self, name: &str, after: Option<u64>, limit: usize) -> Result<Vec<Version>> {
        let name = name.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLS} FROM versions WHERE function = ?1 AND number > ?2 ORDER BY number LIMIT ?3"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![name, after.unwrap_or(0) as i64, limit as i64], version_from_row)
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(to_version)).collect()
        })
        .await
    }

    async fn put_alias(
        &self,
        function: &str,
        alias: &str,
        routing: Routing,
        description: &str,
        expect: Option<u64>,
        now: Millis,
    ) -> Result<Alias> {
        self.admit()?;
        let (function, alias, description) =
            (function.to_string(), alias.to_string(), description.to_string());
        self.write(move |c| {
            require_function(c, &function, None)?;
            let current: Option<i64> = c
                .query_row(
                    "SELECT revision FROM aliases WHERE function = ?1 AND name = ?2",
                    params![function, alias],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            check_revision(expect, current.map_or(0, |r| r as u64))?;
            for v in routing.versions() {
                let exists: bool = c
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM versions WHERE function = ?1 AND number = ?2)",
                        params![function, v as i64],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if !exists {
                    return Err(StoreError::NotFound { kind: Kind::Version, name: format!("{function}:{v}") });
                }
            }
            let revision = bump_snapshot(c)?;
            c.execute(
                "INSERT INTO aliases (function, name, routing, revision, updated_at, description) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (function, name) DO UPDATE SET routing = ?3, revision = ?4, updated_at = ?5, description = ?6",
                params![
                    function,
                    alias,
                    serde_json::to_string(&routing).map_err(json_err)?,
                    revision as i64,
                    now,
                    description
                ],
            )
            .map_err(db_err)?;
            Ok(Alias { function, name: alias, routing, description, revision, updated_at: now })
        })
        .await
    }

    async fn get_alias(&self, function: &str, alias: &str) -> Result<Option<Alias>> {
        let (function, alias) = (function.to_string(), alias.to_string());
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {ALIAS_COLS} FROM aliases WHERE function = ?1 AND name = ?2"),
                params![function, alias],
                alias_from_row,
            )
            .optional()
            .map_err(db_err)?
            .map(to_alias)
            .transpose()
        })
        .await
    }

    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>> {
        let function = function.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {ALIAS_COLS} FROM aliases WHERE function = ?1 ORDER BY name"
                ))
                .map_err(db_err)?;
            let rows = stmt.query_map([function], alias_from_row).map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(to_alias)).collect()
        })
        .await
    }

    async fn delete_alias(
        &self,
        function: &str,
        alias: &str,
        expect: Option<u64>,
        _now: Millis,
    ) -> Result<()> {
        let (function, alias) = (function.to_string(), alias.to_string());
        self.write(move |c| {
            let current: i64 = c
                .query_row(
                    "SELECT revision FROM aliases WHERE function = ?1 AND name = ?2",
                    params![function, alias],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound {
                    kind: Kind::Alias,
                    name: format!("{function}:{alias}"),
                })?;
            check_revision(expect, current as u64)?;
            bump_snapshot(c)?;
            c.execute("DELETE FROM aliases WHERE function = ?1 AND name = ?2", params![function, alias])
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn get_deployment(&self, function: &str, resolved: Resolved) -> Result<Option<Deployment>> {
        let function = function.to_string();
        self.read(move |c| {
            let row: Option<(String, Option<String>)> = match resolved {
                Resolved::Version(n) => c
                    .query_row(
                        "SELECT spec, code_sha256 FROM versions WHERE function = ?1 AND number = ?2",
                        params![function, n as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional(),
                Resolved::Latest { revision } => c
                    .query_row(
                        "SELECT spec, code_sha256 FROM function_revisions WHERE function = ?1 AND revision = ?2",
                        params![function, revision as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional(),
            }
            .map_err(db_err)?;
            match row {
                Some((spec, Some(code_sha256))) => Ok(Some(Deployment {
                    function,
                    resolved,
                    spec: crate::secrets::open_spec(&spec)?,
                    code_sha256,
                })),
                Some((_, None)) | None => Ok(None),
            }
        })
        .await
    }

    fn check_space(&self) -> Result<()> {
        self.admit()
    }

    async fn snapshot_version(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'snapshot_version'", [], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
                .map_err(db_err)
        })
        .await
    }

    async fn put_artifact(&self, bytes: Bytes) -> Result<String> {
        self.admit()?;
        self.blocking(move |b| b.put(&bytes)).await
    }

    async fn get_artifact(&self, sha256: &str) -> Result<Bytes> {
        let sha = sha256.to_string();
        self.blocking(move |b| b.get(&sha)).await
    }

    async fn collect_code(&self, older_than: Millis, limit: usize) -> Result<CollectedCode> {
        // Revisions first, committed on their own, so the artifact step sees their code freed.
        let revisions = self.write(move |c| prune_revisions(c, older_than)).await?;
        let blobs = self.blobs.clone();
        let stored_before =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(older_than.max(0) as u64);
        // In the writer, which every write that references an artifact also runs in (and checks
        // the file there): nothing can start referencing an artifact between this read and its
        // removal. `put_artifact` is kept out by the blob directory's own lock.
        let removed = self
            .write(move |c| {
                let referenced: HashSet<String> = strings(c, gc::REFERENCED_SQL)?.into_iter().collect();
                blobs.remove_garbage(|sha| !referenced.contains(sha), stored_before, limit)
            })
            .await?;
        Ok(CollectedCode { revisions, artifacts: removed.artifacts, bytes: removed.bytes })
    }

    async fn referenced_code(&self) -> Result<Vec<String>> {
        self.read(|c| strings(c, gc::REFERENCED_SQL)).await
    }

    async fn insert_invocations(&self, batch: Vec<NewInvocation>) -> Result<Vec<Result<Inserted>>> {
        self.admit()?;
        self.write(move |c| {
            let mut out = Vec::with_capacity(batch.len());
            for new in batch {
                let req = &new.request;
                if let Some(key) = &req.idempotency_key {
                    let existing: Option<String> = c
                        .prepare_cached(
                            "SELECT id FROM invocations WHERE function = ?1 AND idempotency_key = ?2",
                        )
                        .map_err(db_err)?
                        .query_row(params![req.function, key], |r| r.get(0))
                        .optional()
                        .map_err(db_err)?;
                    if let Some(id) = existing {
                        let rec = load_invocation(c, &id)?
                            .ok_or_else(|| StoreError::Backend("idempotency index points nowhere".into()))?;
                        out.push(if rec.request.fingerprint == req.fingerprint {
                            Ok(Inserted::Existing(Box::new(rec)))
                        } else {
                            Err(StoreError::KeyMismatch { existing: rec.request.id })
                        });
                        continue;
                    }
                }
                let rec = InvocationRecord::new(new.request, new.lifecycle);
                if insert_record(c, &rec)? == 0 {
                    out.push(Err(StoreError::Invalid(format!(
                        "invocation id {} already exists",
                        rec.request.id
                    ))));
                } else {
                    out.push(Ok(Inserted::Created));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn record_finished(&self, records: Vec<InvocationRecord>) -> Result<()> {
        // Records of answered work, but new rows all the same: they wait (in the service's
        // bounded queue) rather than spend the reserve that completions need.
        self.admit()?;
        self.write(move |c| {
            for rec in &records {
                insert_record(c, rec)?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_queued(
        &self,
        worker: &WorkerId,
        max: usize,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let worker = worker.clone();
        self.write(move |c| {
            let ids = ids_where(
                c,
                "SELECT id FROM invocations WHERE state = 'QUEUED' ORDER BY id LIMIT ?1",
                [(max * 2) as i64],
            )?;
            claim_ids(c, ids, &worker, max, lease_expires_at, now)
        })
        .await
    }

    async fn claim(
        &self,
        id: &InvocationId,
        worker: &WorkerId,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Claimed> {
        let (id, worker) = (id.clone(), worker.clone());
        self.write(move |c| {
            let event = Event::Claim { worker, lease_expires_at };
            let lc = transition(c, &id.0, &event, Outcome::default(), now)??;
            let rec = load_invocation(c, &id.0)?
                .ok_or_else(|| StoreError::Backend("claimed row vanished".into()))?;
            Ok(Claimed { request: rec.request, epoch: lc.attempt_epoch, lease_expires_at })
        })
        .await
    }

    async fn renew_leases(
        &self,
        worker: &WorkerId,
        attempts: Vec<(InvocationId, u64)>,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        let worker = worker.clone();
        self.write(move |c| {
            let mut out = Vec::with_capacity(attempts.len());
            for (id, epoch) in attempts {
                let event = Event::RenewLease { worker: worker.clone(), epoch, lease_expires_at };
                let r = match transition(c, &id.0, &event, Outcome::default(), now) {
                    Ok(r) => r.map(|_| ()),
                    Err(StoreError::NotFound { .. }) => Err(Rejected::Fenced { current: 0, given: epoch }),
                    Err(e) => return Err(e),
                };
                if matches!(r, Err(Rejected::Fenced { .. })) {
                    bump_counter(c, "fenced_renewals")?;
                }
                out.push(r);
            }
            Ok(out)
        })
        .await
    }

    async fn complete(&self, completion: Completion, now: Millis) -> Result<Lifecycle> {
        self.write(move |c| {
            let event = Event::Complete {
                worker: completion.worker.clone(),
                epoch: completion.epoch,
                outcome: completion.outcome,
            };
            let outcome = Outcome {
                result: completion.result.as_deref(),
                error: completion.error.as_ref(),
                log: Some(&completion.log),
            };
            let r = transition(c, &completion.id.0, &event, outcome, now)?;
            match &r {
                Ok(_) => {
                    c.execute(
                        "UPDATE invocations SET completed_epoch = ?2, completed_by = ?3 WHERE id = ?1",
                        params![completion.id.0, completion.epoch as i64, completion.worker.0],
                    )
                    .map_err(db_err)?;
                }
                Err(Rejected::Fenced { .. }) => bump_counter(c, "fenced_completions")?,
                Err(Rejected::Terminal(_)) => {
                    let (epoch, by): (Option<i64>, Option<String>) = c
                        .query_row(
                            "SELECT completed_epoch, completed_by FROM invocations WHERE id = ?1",
                            [&completion.id.0],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .map_err(db_err)?;
                    if epoch == Some(completion.epoch as i64) {
                        return Ok(Err(repeated_report(by.as_deref(), &completion)));
                    }
                }
                Err(_) => {}
            }
            Ok(r)
        })
        .await?
        .map_err(StoreError::Rejected)
    }

    async fn recover(&self, now: Millis) -> Result<Recovered> {
        self.write(move |c| {
            let mut report = Recovered::default();
            let batch = RECOVERY_BATCH as i64;
            let lost = ids_where(
                c,
                "SELECT id FROM invocations WHERE state = 'RUNNING' AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
                params![now, batch],
            )?;
            for id in lost {
                let g = load_guarded(c, &id)?;
                let error = system_error(
                    ErrorKind::WorkerLost,
                    format!("the worker running attempt {} was lost (its lease expired)", g.lifecycle.attempt_epoch),
                );
                let outcome = Outcome { error: Some(&error), ..Outcome::default() };
                if let Ok(lc) = transition(c, &id, &Event::LeaseExpired, outcome, now)? {
                    if lc.state.is_terminal() {
                        report.lost += 1;
                    } else {
                        report.requeued += 1;
                    }
                }
            }
            let due = ids_where(
                c,
                "SELECT id FROM invocations WHERE state = 'RETRY_WAIT' AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
                params![now, batch],
            )?;
            for id in due {
                if transition(c, &id, &Event::RetryDue, Outcome::default(), now)?.is_ok() {
                    report.retries_due += 1;
                }
            }
            let unplaced = ids_where(
                c,
                "SELECT id FROM invocations WHERE state = 'PLACED' AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
                params![now - DEFAULT_PLACEMENT_TIMEOUT_MS, batch],
            )?;
            for id in unplaced {
                if transition(c, &id, &Event::PlacementTimedOut, Outcome::default(), now)?.is_ok() {
                    report.unplaced += 1;
                }
            }
            let old = ids_where(
                c,
                "SELECT id FROM invocations WHERE expires_at < ?1 \
                 AND state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') ORDER BY expires_at LIMIT ?2",
                params![now, batch],
            )?;
            for id in old {
                if expire(c, &id, now)? {
                    report.expired += 1;
                }
            }
            Ok(report)
        })
        .await
    }

    async fn get_invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>> {
        let id = id.clone();
        self.read(move |c| load_invocation(c, &id.0)).await
    }

    async fn list_invocations(
        &self,
        function: &str,
        filter: InvocationFilter,
    ) -> Result<Vec<InvocationRecord>> {
        let function = function.to_string();
        self.read(move |c| {
            // '~' sorts after every UUID character, so "no cursor" means "from the newest".
            let before = filter.before.map(|b| b.0).unwrap_or_else(|| "~".into());
            let state = filter.state.map(|s| s.as_str());
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {INVOCATION_COLS} FROM invocations WHERE function = ?1 AND id < ?2 \
                     AND (?3 IS NULL OR state = ?3) ORDER BY id DESC LIMIT ?4"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![function, before, state, filter.limit as i64], invocation_from_row)
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(to_record)).collect()
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(StateName, u64)>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT state, COUNT(*) FROM invocations GROUP BY state").map_err(db_err)?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (state, n) = row.map_err(db_err)?;
                out.push((StateName::parse(&state).ok_or_else(|| corrupt("state"))?, n as u64));
            }
            Ok(out)
        })
        .await
    }

    async fn prune_invocations(&self, finished_before: Millis, limit: usize) -> Result<Pruned> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(PRUNE_SQL).map_err(db_err)?;
            let freed = stmt
                .query_map(params![finished_before, limit as i64], |r| r.get::<_, i64>(0))
                .map_err(db_err)?;
            let mut pruned = Pruned::default();
            for bytes in freed {
                pruned.invocations += 1;
                pruned.bytes += bytes.map_err(db_err)? as u64;
            }
            Ok(pruned)
        })
        .await
    }

    async fn ended_invocations(&self) -> Result<Pruned> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM({RECORD_BYTES}), 0) FROM invocations WHERE finished_at IS NOT NULL"
                ),
                [],
                |r| Ok(Pruned { invocations: r.get::<_, i64>(0)? as u64, bytes: r.get::<_, i64>(1)? as u64 }),
            )
            .map_err(db_err)
        })
        .await
    }

    async fn async_backlog(&self) -> Result<Vec<(String, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(BACKLOG_SQL).map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(db_err)?;
            rows.collect::<std::result::Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn counters(&self) -> Result<Counters> {
        self.read(|c| {
            let get = |key: &str| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
                    .map(|v| v as u64)
                    .map_err(db_err)
            };
            Ok(Counters {
                fenced_completions: get("fenced_completions")?,
                fenced_renewals: get("fenced_renewals")?,
            })
        })
        .await
    }
    async fn put_worker(&self, state: WorkerState) -> Result<bool> {
        self.write(move |c| {
            let json = serde_json::to_string(&state).map_err(json_err)?;
            let changed = c
                .execute(
                    "INSERT INTO workers (id, revision, state, last_heartbeat) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO UPDATE SET revision = ?2, state = ?3, last_heartbeat = ?4 \
                     WHERE excluded.revision > workers.revision",
                    params![state.id.0, state.revision as i64, json, state.last_heartbeat],
                )
                .map_err(db_err)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn list_workers(&self, since: Millis) -> Result<Vec<WorkerState>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT state FROM workers WHERE last_heartbeat >= ?1 ORDER BY id")
                .map_err(db_err)?;
            let rows = stmt.query_map([since], |r| r.get::<_, String>(0)).map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(|s| serde_json::from_str(&s).map_err(json_err))).collect()
        })
        .await
    }

    async fn queued(&self, limit: usize) -> Result<Vec<(InvocationId, String, Resolved)>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, function, resolved FROM invocations WHERE state = 'QUEUED' ORDER BY id LIMIT ?1",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })
                .map_err(db_err)?;
            rows.map(|r| {
                let (id, function, resolved) = r.map_err(db_err)?;
                let resolved = Resolved::decode(&resolved).ok_or_else(|| corrupt("resolved version"))?;
                Ok((InvocationId(id), function, resolved))
            })
            .collect()
        })
        .await
    }

    async fn placed_counts(&self) -> Result<Vec<(WorkerId, u64)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT worker, COUNT(*) FROM invocations WHERE state = 'PLACED' GROUP BY worker",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((WorkerId(r.get(0)?), r.get::<_, i64>(1)? as u64)))
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }

    async fn place(
        &self,
        placements: Vec<(InvocationId, WorkerId)>,
        now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        self.write(move |c| {
            let mut out = Vec::with_capacity(placements.len());
            for (id, worker) in placements {
                out.push(
                    transition(c, &id.0, &Event::Place { worker }, Outcome::default(), now)?.map(|_| ()),
                );
            }
            Ok(out)
        })
        .await
    }

    async fn claim_placed(
        &self,
        worker: &WorkerId,
        max: usize,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let worker = worker.clone();
        self.write(move |c| {
            let ids = ids_where(
                c,
                "SELECT id FROM invocations WHERE state = 'PLACED' AND worker = ?1 ORDER BY id LIMIT ?2",
                params![worker.0, max as i64],
            )?;
            claim_ids(c, ids, &worker, max, lease_expires_at, now)
        })
        .await
    }

    async fn assigned_deployments(&self, worker: &WorkerId) -> Result<Vec<(String, Resolved)>> {
        let worker = worker.clone();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT DISTINCT function, resolved FROM invocations \
                     WHERE state IN ('PLACED', 'RUNNING') AND worker = ?1",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([&worker.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db_err)?;
            rows.map(|r| {
                let (function, resolved) = r.map_err(db_err)?;
                Ok((function, Resolved::decode(&resolved).ok_or_else(|| corrupt("resolved version"))?))
            })
            .collect()
        })
        .await
    }

    async fn create_worker_credential(&self, credential: WorkerCredential) -> Result<()> {
        self.write(move |c| {
            let created = c
                .execute(
                    "INSERT INTO worker_credentials (worker, secret_sha256, origin, created_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![
                        credential.worker.0,
                        credential.secret_sha256,
                        credential.origin.as_str(),
                        credential.created_at
                    ],
                )
                .map_err(db_err)?;
            if created == 1 {
                Ok(())
            } else {
                Err(StoreError::Invalid(format!("worker {} already has a credential", credential.worker)))
            }
        })
        .await
    }

    async fn find_worker_credential(&self, secret_sha256: &str) -> Result<Option<FoundCredential>> {
        let sha = secret_sha256.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!("{CREDENTIAL_SELECT} WHERE k.secret_sha256 = ?1"))
                .map_err(db_err)?;
            let mut rows = stmt.query_map([&sha], credential_columns).map_err(db_err)?;
            rows.next().transpose().map_err(db_err)?.map(decode_credential).transpose()
        })
        .await
    }

    async fn list_worker_credentials(&self) -> Result<Vec<FoundCredential>> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("{CREDENTIAL_SELECT} ORDER BY k.worker")).map_err(db_err)?;
            let rows = stmt.query_map([], credential_columns).map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(decode_credential)).collect()
        })
        .await
    }

    async fn delete_worker_credential(&self, worker: &WorkerId) -> Result<bool> {
        let worker = worker.clone();
        self.write(move |c| {
            let deleted =
                c.execute("DELETE FROM worker_credentials WHERE worker = ?1", [&worker.0]).map_err(db_err)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn prune_enrolled_credentials(&self, silent_since: Millis) -> Result<u64> {
        self.write(move |c| {
            let deleted = c
                .execute(
                    "DELETE FROM worker_credentials WHERE origin = 'enrolled' \
                     AND MAX(created_at, COALESCE((SELECT last_heartbeat FROM workers w \
                     WHERE w.id = worker_credentials.worker), 0)) < ?1",
                    [silent_since],
                )
                .map_err(db_err)?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<()> {
        let row = KeyRow::seal(&key)?;
        self.write(move |c| {
            let created = c
                .execute(
                    &format!(
                        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (name) DO NOTHING"
                    ),
                    params![
                        row.id,
                        row.name,
                        row.role,
                        row.functions,
                        row.bearer_sha256,
                        row.sigv4_secret_sealed,
                        row.created_at,
                        row.last_used_at
                    ],
                )
                .map_err(db_err)?;
            if created == 1 {
                Ok(())
            } else {
                Err(StoreError::Invalid(format!("an API key named {} exists", row.name)))
            }
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
                .map_err(db_err)?;
            let mut rows = stmt.query_map([&id], key_row).map_err(db_err)?;
            rows.next().transpose().map_err(db_err)?.map(KeyRow::open).transpose()
        })
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name"))
                .map_err(db_err)?;
            let rows = stmt.query_map([], key_row).map_err(db_err)?;
            rows.map(|r| r.map_err(db_err).and_then(KeyRow::open)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| {
            let deleted = c.execute("DELETE FROM api_keys WHERE name = ?1", [&name]).map_err(db_err)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn touch_api_key(&self, id: &str, now: Millis) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND COALESCE(last_used_at, 0) < ?2",
                params![id, now],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        functions: r.get(3)?,
        bearer_sha256: r.get(4)?,
        sigv4_secret_sealed: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
    })
}

/// A credential with its worker's last heartbeat (`k` is the credential, `w` the worker).
const CREDENTIAL_SELECT: &str = "SELECT k.worker, k.secret_sha256, k.origin, k.created_at, w.last_heartbeat \
     FROM worker_credentials k LEFT JOIN workers w ON w.id = k.worker";

type CredentialColumns = (String, String, String, i64, Option<i64>);

fn credential_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn decode_credential(
    (worker, sha, origin, created_at, last_heartbeat): CredentialColumns,
) -> Result<FoundCredential> {
    credential_row(worker, sha, &origin, created_at, last_heartbeat)
}

/// Claims the given invocations for `worker` (up to `max`); too-old events are expired.
fn claim_ids(
    c: &Connection,
    ids: Vec<String>,
    worker: &WorkerId,
    max: usize,
    lease_expires_at: Millis,
    now: Millis,
) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::with_capacity(max);
    let event = Event::Claim { worker: worker.clone(), lease_expires_at };
    for id in ids {
        if claimed.len() == max {
            break;
        }
        match transition(c, &id, &event, Outcome::default(), now)? {
            Ok(lc) => {
                let rec = load_invocation(c, &id)?
                    .ok_or_else(|| StoreError::Backend("claimed row vanished".into()))?;
                claimed.push(Claimed { request: rec.request, epoch: lc.attempt_epoch, lease_expires_at });
            }
            Err(Rejected::TooOld) => {
                expire(c, &id, now)?;
            }
            Err(other) => return Err(StoreError::Rejected(other)),
        }
    }
    Ok(claimed)
}
