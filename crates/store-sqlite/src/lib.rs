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
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::queue::{EventSourceMapping, NewMessage, Queue, QueueAttributes, QueueCounts, Received, Sent};
use gust_core::schedule::{Firing, Schedule};
use gust_core::{
    Alias, ApiKey, Deployment, FunctionConfig, FunctionSpec, FunctionUrl, InvocationId, InvocationRecord,
    Lifecycle, Millis, Rejected, Resolved, Routing, StateName, UrlConfig, Version, WorkerId, WorkerState,
};
use gust_store::ops::{self, Counter, Scan, Tx, UrlLookup};
use gust_store::rows::{
    self, corrupt, json_err, key_values, read_alias, read_credential, read_function, read_guarded, read_key,
    read_record, read_url, read_version, Column, ColumnRow, Guarded, GuardedWrite, InsertInvocation, KeyRow,
    Value, ALIAS_COLUMNS, CREDENTIAL_SELECT, FUNCTION_COLUMNS, GUARDED_COLUMNS, INSERT_INVOCATION,
    INVOCATION_COLUMNS, NEXT_VERSION, UPDATE_GUARDED, VERSION_COLUMNS,
};
use gust_store::space::{DiskSpace, LogEvery, DEFAULT_DISK_RESERVE_BYTES};
use gust_store::{gc, schema};
use gust_store::{queues, schedules, Delivery, ScheduleGroup, StoredSchedule};
use gust_store::{
    Claimed, CollectedCode, Completion, Counters, FoundCredential, Inserted, InvocationFilter, Kind,
    NewInvocation, Pruned, Recovered, Result, Store, StoreError, WorkerCredential,
};
use parking_lot::Mutex;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Row, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

mod blob;

use blob::BlobDir;

/// Most jobs committed in one group.
const MAX_GROUP: usize = 1024;
/// Read connections kept open.
const READERS: usize = 4;

/// The schema's steps in the order SQLite databases have applied them (see [`schema`]).
const MIGRATIONS: &[&[&str]] = &[
    &[schema::CATALOG, schema::INVOCATIONS],
    &[schema::WORKERS],
    &[schema::COMPLETED_EPOCH],
    &[schema::ALIAS_DESCRIPTION],
    &[schema::WORKER_CREDENTIALS],
    &[schema::API_KEYS],
    &[schema::FINISHED_INDEX],
    &[schema::REVISION_CREATED_AT],
    &[schema::CLIENT_CONTEXT],
    &[schema::CONCURRENCY_SLOTS],
    &[schema::WAITING_INDEXES],
    &[schema::FUNCTION_URLS],
    &[schema::QUEUES],
    &[schema::SCHEDULES],
    &[schema::FIFO_QUEUES],
    &[schema::SCHEDULE_DEFAULT_GROUP],
    &[schema::MESSAGE_MOVES],
    &[schema::TRACE_AND_REPORT],
    &[schema::INVOCATION_HISTORY],
    &[schema::CLUSTER_SECRETS],
    &[schema::ENDED_TOTALS],
    &[schema::WORKERS_HEARTBEAT_INDEX],
];

/// Deletes the oldest ended invocations (`$1` finished before, `$2` at most), each row
/// answering its size.
const PRUNE_SQL: &str = concat!(
    "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations \
     WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2) RETURNING ",
    gust_store::record_bytes!()
);
/// Options of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync every commit; survives power loss) or `NORMAL` (survives a
    /// process crash, may lose the last commits on power loss). Default FULL.
    pub fsync_every_commit: bool,
    /// Free space kept for finishing work already accepted: below it, new work is refused
    /// ([`gust_store::space`]). Default [`DEFAULT_DISK_RESERVE_BYTES`].
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
    schema::check_version(current, MIGRATIONS.len())?;
    for (i, steps) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(&schema::SQLITE.render(steps)).map_err(db_err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

impl SqliteStore {
    /// `code_sha256` once its artifact verifies: hashed here, on a blocking thread, never inside
    /// the writer's transaction (up to 50 MB would stall every group commit behind it). The
    /// writer then only checks that it is still there.
    async fn verified(&self, code_sha256: &str) -> Result<String> {
        let code = code_sha256.to_string();
        let verify = code.clone();
        self.blocking(move |b| b.get(&verify).map(drop)).await?;
        Ok(code)
    }

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
        F: FnOnce(&SqliteTx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T>>();
        let space = self.space.clone();
        let blobs = self.blobs.clone();
        let job: Job = Box::new(move |tx: &mut Transaction<'_>| {
            let outcome = match tx.savepoint() {
                Ok(mut sp) => {
                    let r = f(&SqliteTx { c: &sp, blobs: &blobs });
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
        F: FnOnce(&SqliteTx<'_>) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&path, &SqliteOptions::default())?,
            };
            let r = f(&SqliteTx { c: &conn, blobs: &blobs });
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
// The primitives of `gust_store::ops`, on the writer's transaction (or a read connection)

/// Drives one of [`gust_store::ops`]'s algorithms to its end on this thread. Every primitive
/// of [`SqliteTx`] is a blocking call that never waits on anything else, so the future is ready
/// on its first poll; no runtime is needed (and the writer thread has none).
fn ready<F: Future>(algorithm: F) -> F::Output {
    let mut algorithm = std::pin::pin!(algorithm);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(out) = algorithm.as_mut().poll(&mut cx) {
            return out;
        }
        // Not reached with the primitives below; polling again keeps it correct regardless.
        std::thread::yield_now();
    }
}

/// A statement of [`gust_store::rows`] in SQLite's placeholder style (`?N` for `$N`).
fn dialect(statement: &str) -> String {
    statement.replace('$', "?")
}

/// A [`Value`] bound as a SQLite parameter.
struct Sql<'a>(Value<'a>);

impl rusqlite::ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Bool(v) => ValueRef::Integer(i64::from(v)),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Bytes(v) => ValueRef::Blob(v),
        }))
    }
}

fn bind<'a>(values: &'a [Value<'a>]) -> impl rusqlite::Params + 'a {
    rusqlite::params_from_iter(values.iter().map(|v| Sql(*v)))
}

/// A SQLite row, read by [`gust_store::rows`]' decoders.
struct SqlRow<'a, 'b>(&'a Row<'b>);

impl ColumnRow for SqlRow<'_, '_> {
    fn column(&self, i: usize) -> Result<Column> {
        Ok(match self.0.get_ref(i).map_err(db_err)? {
            ValueRef::Null => Column::Null,
            ValueRef::Integer(v) => Column::Int(v),
            ValueRef::Text(v) => {
                Column::Text(String::from_utf8(v.to_vec()).map_err(|_| corrupt("text column"))?)
            }
            ValueRef::Blob(v) => Column::Bytes(v.to_vec()),
            ValueRef::Real(_) => return Err(corrupt("number column")),
        })
    }
}

/// One transaction (a savepoint of the writer's group transaction) or a read connection.
struct SqliteTx<'a> {
    c: &'a Connection,
    blobs: &'a BlobDir,
}

impl SqliteTx<'_> {
    /// Every row of `statement` (`$N` placeholders), each read by `read`.
    fn query<T>(
        &self, statement: &str, values: &[Value<'_>], mut read: impl FnMut(&dyn ColumnRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.c.prepare_cached(&dialect(statement)).map_err(db_err)?;
        let mut rows = stmt.query(bind(values)).map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            out.push(read(&SqlRow(row))?);
        }
        Ok(out)
    }

    /// The first row of `statement`, if any.
    fn query_opt<T>(
        &self, statement: &str, values: &[Value<'_>], read: impl FnOnce(&dyn ColumnRow) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut stmt = self.c.prepare_cached(&dialect(statement)).map_err(db_err)?;
        let mut rows = stmt.query(bind(values)).map_err(db_err)?;
        rows.next().map_err(db_err)?.map(|row| read(&SqlRow(row))).transpose()
    }

    fn run(&self, statement: &str, values: &[Value<'_>]) -> Result<u64> {
        let mut stmt = self.c.prepare_cached(&dialect(statement)).map_err(db_err)?;
        Ok(stmt.execute(bind(values)).map_err(db_err)? as u64)
    }

    /// The first column of every row, as text.
    fn strings(&self, statement: &str, values: &[Value<'_>]) -> Result<Vec<String>> {
        self.query(statement, values, |r| r.text(0))
    }
}

impl Tx for SqliteTx<'_> {
    async fn load_guarded(&self, id: &str) -> Result<Option<Guarded>> {
        self.query_opt(
            &format!("SELECT {GUARDED_COLUMNS} FROM invocations WHERE id = $1"),
            &[id.into()],
            read_guarded,
        )
    }

    async fn update_guarded(&self, write: &GuardedWrite<'_>) -> Result<u64> {
        self.run(UPDATE_GUARDED, &write.values())
    }

    async fn load_invocation(&self, id: &str) -> Result<Option<InvocationRecord>> {
        self.query_opt(
            &format!("SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = $1"),
            &[id.into()],
            read_record,
        )
    }

    async fn insert_invocation(&self, rec: &InvocationRecord) -> Result<bool> {
        Ok(self.run(INSERT_INVOCATION, &InsertInvocation::new(rec)?.values())? == 1)
    }

    async fn id_by_key(&self, function: &str, key: &str) -> Result<Option<String>> {
        let sql = "SELECT id FROM invocations WHERE function = $1 AND idempotency_key = $2";
        self.query_opt(sql, &[function.into(), key.into()], |r| r.text(0))
    }

    async fn ids(&self, scan: Scan<'_>) -> Result<Vec<String>> {
        let (statement, values) = scan.statement();
        self.strings(statement, &values)
    }

    async fn bump(&self, counter: Counter, by: u64) -> Result<u64> {
        let sql = "UPDATE meta SET value = value + $2 WHERE key = $1 RETURNING value";
        let value = self.query_opt(sql, &[counter.key().into(), (by as i64).into()], |r| r.int(0))?;
        Ok(value.ok_or_else(|| StoreError::Backend(format!("counter {} is missing", counter.key())))? as u64)
    }

    async fn load_function(&self, name: &str, _lock: bool) -> Result<Option<FunctionConfig>> {
        self.query_opt(
            &format!("SELECT {FUNCTION_COLUMNS} FROM functions WHERE name = $1"),
            &[name.into()],
            read_function,
        )
    }

    async fn lock_name(&self, _name: &str) -> Result<()> {
        // The writer's transaction holds the database's write lock already.
        Ok(())
    }

    async fn announce_placed(&self, _workers: &str) -> Result<()> {
        // No other server shares this store; this server wakes its own polls.
        Ok(())
    }

    async fn hold_artifact(&self, sha256: &str) -> Result<()> {
        // Checked in the writer, which collections also run in: the artifact cannot go between
        // this check and the commit. Its bytes were verified before the job was submitted.
        if self.blobs.exists(sha256) {
            Ok(())
        } else {
            Err(StoreError::NotFound { kind: Kind::Artifact, name: sha256.chars().take(80).collect() })
        }
    }

    async fn execute(&self, statement: &'static str, values: &[Value<'_>]) -> Result<u64> {
        self.run(statement, values)
    }

    async fn delete_function_rows(&self, name: &str) -> Result<()> {
        for table in ["function_revisions", "versions", "aliases", "function_urls"] {
            self.c.execute(&format!("DELETE FROM {table} WHERE function = ?1"), [name]).map_err(db_err)?;
        }
        self.c.execute("DELETE FROM functions WHERE name = ?1", [name]).map_err(db_err)?;
        Ok(())
    }

    async fn next_version(&self, name: &str) -> Result<u64> {
        let number = self.query_opt(NEXT_VERSION, &[name.into()], |r| r.int(0))?;
        Ok(number.ok_or_else(|| StoreError::NotFound { kind: Kind::Function, name: name.to_string() })?
            as u64)
    }

    async fn latest_version(&self, name: &str) -> Result<Option<Version>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 ORDER BY number DESC LIMIT 1"
        );
        self.query_opt(&sql, &[name.into()], read_version)
    }

    async fn version_exists(&self, function: &str, number: u64) -> Result<bool> {
        let sql = "SELECT 1 FROM versions WHERE function = $1 AND number = $2";
        Ok(self.query_opt(sql, &[function.into(), number.into()], |_| Ok(()))?.is_some())
    }

    async fn delete_version_row(&self, function: &str, number: u64) -> Result<u64> {
        self.run(
            "DELETE FROM versions WHERE function = $1 AND number = $2",
            &[function.into(), number.into()],
        )
    }

    async fn alias_routings(&self, function: &str) -> Result<Vec<String>> {
        self.strings("SELECT routing FROM aliases WHERE function = $1", &[function.into()])
    }

    async fn alias_revision(&self, function: &str, alias: &str) -> Result<Option<u64>> {
        let sql = "SELECT revision FROM aliases WHERE function = $1 AND name = $2";
        Ok(self.query_opt(sql, &[function.into(), alias.into()], |r| r.int(0))?.map(|r| r as u64))
    }

    async fn delete_alias_row(&self, function: &str, alias: &str) -> Result<()> {
        self.run("DELETE FROM aliases WHERE function = $1 AND name = $2", &[function.into(), alias.into()])?;
        Ok(())
    }

    async fn urls(&self, lookup: &UrlLookup) -> Result<Vec<FunctionUrl>> {
        let (sql, values) = lookup.statement();
        self.query(&sql, &values, read_url)
    }

    async fn select<T: Send>(
        &self, statement: &'static str, values: &[Value<'_>], _skip_locked: bool,
        read: fn(&dyn ColumnRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(statement, values, read)
    }
}

/// Deletes the `$LATEST` revisions [`gc::prunable_revisions`] names; returns how many.
fn prune_revisions(tx: &SqliteTx<'_>, older_than: Millis) -> Result<u64> {
    let live = gc::live_revisions(tx.query(gc::LIVE_RESOLVED_SQL, &[], |r| Ok((r.text(0)?, r.text(1)?)))?);
    let revisions = tx.query(gc::REVISIONS_SQL, &[], |r| {
        Ok(gc::RevisionRow { function: r.text(0)?, revision: r.int(1)? as u64, created_at: r.int(2)? })
    })?;
    let current: HashMap<String, u64> =
        tx.query(gc::CURRENT_SQL, &[], |r| Ok((r.text(0)?, r.int(1)? as u64)))?.into_iter().collect();
    let prune = gc::prunable_revisions(&revisions, &current, &live, older_than);
    for (function, revision) in &prune {
        let delete = "DELETE FROM function_revisions WHERE function = $1 AND revision = $2";
        tx.run(delete, &[function.into(), (*revision).into()])?;
    }
    Ok(prune.len() as u64)
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for SqliteStore {
    async fn put_function(
        &self, name: &str, spec: FunctionSpec, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let name = name.to_string();
        self.write(move |tx| ready(ops::write_function(tx, &name, spec, None, expect, now))).await
    }

    async fn create_function(
        &self, name: &str, spec: FunctionSpec, code_sha256: &str, now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let (name, code) = (name.to_string(), code_sha256.to_string());
        self.write(move |tx| ready(ops::write_function(tx, &name, spec, Some(&code), Some(0), now))).await
    }

    async fn set_function_code(
        &self, name: &str, code_sha256: &str, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let code = self.verified(code_sha256).await?;
        let name = name.to_string();
        self.write(move |tx| ready(ops::set_function_code(tx, &name, &code, expect, now))).await
    }

    async fn put_function_with_code(
        &self, name: &str, spec: FunctionSpec, code_sha256: &str, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig> {
        self.admit()?;
        let code = self.verified(code_sha256).await?;
        let name = name.to_string();
        self.write(move |tx| ready(ops::write_function(tx, &name, spec, Some(&code), expect, now))).await
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let name = name.to_string();
        self.read(move |tx| ready(tx.load_function(&name, false))).await
    }

    async fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        let after = after.unwrap_or("").to_string();
        self.read(move |tx| {
            let sql =
                format!("SELECT {FUNCTION_COLUMNS} FROM functions WHERE name > $1 ORDER BY name LIMIT $2");
            tx.query(&sql, &[after.as_str().into(), limit.into()], read_function)
        })
        .await
    }

    async fn delete_function(&self, name: &str, expect: Option<u64>, now: Millis) -> Result<u64> {
        let name = name.to_string();
        self.write(move |tx| ready(ops::delete_function(tx, &name, expect, now))).await
    }

    async fn delete_version(&self, name: &str, number: u64, _now: Millis) -> Result<()> {
        let name = name.to_string();
        self.write(move |tx| ready(ops::delete_version(tx, &name, number))).await
    }

    async fn publish_version(
        &self, name: &str, expect: Option<u64>, description: Option<&str>, now: Millis,
    ) -> Result<Version> {
        self.admit()?;
        let name = name.to_string();
        let description = description.map(str::to_string);
        self.write(move |tx| ready(ops::publish_version(tx, &name, expect, description.as_deref(), now)))
            .await
    }

    async fn get_version(&self, name: &str, number: u64) -> Result<Option<Version>> {
        let name = name.to_string();
        self.read(move |tx| {
            let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 AND number = $2");
            tx.query_opt(&sql, &[name.as_str().into(), number.into()], read_version)
        })
        .await
    }

    async fn list_versions(&self, name: &str, after: Option<u64>, limit: usize) -> Result<Vec<Version>> {
        let name = name.to_string();
        self.read(move |tx| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 AND number > $2 ORDER BY number LIMIT $3"
            );
            tx.query(&sql, &[name.as_str().into(), after.unwrap_or(0).into(), limit.into()], read_version)
        })
        .await
    }

    async fn put_alias(
        &self, function: &str, alias: &str, routing: Routing, description: &str, expect: Option<u64>,
        now: Millis,
    ) -> Result<Alias> {
        self.admit()?;
        let (function, alias, description) =
            (function.to_string(), alias.to_string(), description.to_string());
        self.write(move |tx| ready(ops::put_alias(tx, &function, &alias, routing, &description, expect, now)))
            .await
    }

    async fn get_alias(&self, function: &str, alias: &str) -> Result<Option<Alias>> {
        let (function, alias) = (function.to_string(), alias.to_string());
        self.read(move |tx| {
            let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = $1 AND name = $2");
            tx.query_opt(&sql, &[function.as_str().into(), alias.as_str().into()], read_alias)
        })
        .await
    }

    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>> {
        let function = function.to_string();
        self.read(move |tx| {
            let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = $1 ORDER BY name");
            tx.query(&sql, &[function.as_str().into()], read_alias)
        })
        .await
    }

    async fn delete_alias(
        &self, function: &str, alias: &str, expect: Option<u64>, _now: Millis,
    ) -> Result<()> {
        let (function, alias) = (function.to_string(), alias.to_string());
        self.write(move |tx| ready(ops::delete_alias(tx, &function, &alias, expect))).await
    }

    async fn create_url(&self, url: FunctionUrl) -> Result<FunctionUrl> {
        self.admit()?;
        self.write(move |tx| {
            ready(ops::create_url(tx, &url))?;
            Ok(url)
        })
        .await
    }

    async fn update_url(
        &self, function: &str, qualifier: &str, config: UrlConfig, now: Millis,
    ) -> Result<FunctionUrl> {
        let (function, qualifier) = (function.to_string(), qualifier.to_string());
        self.write(move |tx| ready(ops::update_url(tx, &function, &qualifier, &config, now))).await
    }

    async fn delete_url(&self, function: &str, qualifier: &str) -> Result<()> {
        let (function, qualifier) = (function.to_string(), qualifier.to_string());
        self.write(move |tx| ready(ops::delete_url(tx, &function, &qualifier))).await
    }

    async fn urls(&self, lookup: UrlLookup) -> Result<Vec<FunctionUrl>> {
        self.read(move |tx| {
            let (sql, values) = lookup.statement();
            tx.query(&sql, &values, read_url)
        })
        .await
    }

    async fn create_queue(&self, queue: Queue) -> Result<Queue> {
        self.admit()?;
        self.write(move |tx| ready(queues::create_queue(tx, &queue))).await
    }

    async fn get_queue(&self, name: &str) -> Result<Option<Queue>> {
        let name = name.to_string();
        self.read(move |tx| ready(queues::get_queue(tx, &name))).await
    }

    async fn list_queues(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Queue>> {
        let (prefix, after) = (prefix.to_string(), after.map(str::to_string));
        self.read(move |tx| ready(queues::list_queues(tx, &prefix, after.as_deref(), limit))).await
    }

    async fn set_queue_attributes(
        &self, name: &str, attributes: QueueAttributes, now: Millis,
    ) -> Result<Queue> {
        let name = name.to_string();
        self.write(move |tx| ready(queues::set_queue_attributes(tx, &name, &attributes, now))).await
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |tx| ready(queues::delete_queue(tx, &name))).await
    }

    async fn send_messages(
        &self, queue_id: &str, messages: Vec<NewMessage>, now: Millis, expires_at: Millis,
    ) -> Result<Vec<Sent>> {
        self.admit()?;
        let queue_id = queue_id.to_string();
        self.write(move |tx| ready(queues::send_messages(tx, &queue_id, &messages, now, expires_at))).await
    }

    async fn receive_messages(
        &self, queue: &Queue, max: usize, visibility_ms: i64, now: Millis,
    ) -> Result<Vec<Received>> {
        let queue = queue.clone();
        self.write(move |tx| ready(queues::receive(tx, &queue, max, visibility_ms, now, queues::new_receipt)))
            .await
    }

    async fn delete_message(&self, queue_id: &str, message_id: &str, receipt: &str) -> Result<bool> {
        let (q, m, r) = (queue_id.to_string(), message_id.to_string(), receipt.to_string());
        self.write(move |tx| ready(queues::delete_message(tx, &q, &m, &r))).await
    }

    async fn delete_messages(&self, queue_id: &str, messages: Vec<(String, String)>) -> Result<Vec<bool>> {
        let queue_id = queue_id.to_string();
        self.write(move |tx| ready(queues::delete_messages(tx, &queue_id, &messages))).await
    }

    async fn change_visibility(
        &self, queue_id: &str, message_id: &str, receipt: &str, visible_at: Millis, now: Millis,
    ) -> Result<bool> {
        let (q, m, r) = (queue_id.to_string(), message_id.to_string(), receipt.to_string());
        self.write(move |tx| ready(queues::change_visibility(tx, &q, &m, &r, visible_at, now))).await
    }

    async fn purge_queue(&self, queue_id: &str) -> Result<u64> {
        let queue_id = queue_id.to_string();
        self.write(move |tx| ready(queues::purge(tx, &queue_id))).await
    }

    async fn queue_counts(&self, queue_id: &str, now: Millis) -> Result<QueueCounts> {
        let queue_id = queue_id.to_string();
        self.read(move |tx| ready(queues::counts(tx, &queue_id, now))).await
    }

    async fn move_back(
        &self, dlq_id: &str, destination: Option<&str>, limit: usize, now: Millis,
    ) -> Result<u64> {
        let (dlq, destination) = (dlq_id.to_string(), destination.map(str::to_string));
        self.write(move |tx| ready(queues::move_back(tx, &dlq, destination.as_deref(), limit, now))).await
    }

    async fn record_move_task(&self, task: queues::MoveTask) -> Result<()> {
        self.write(move |tx| ready(queues::record_move_task(tx, &task))).await
    }

    async fn move_tasks(&self, source: &str, limit: usize) -> Result<Vec<queues::MoveTask>> {
        let source = source.to_string();
        self.read(move |tx| ready(queues::move_tasks(tx, &source, limit))).await
    }

    async fn put_mapping(&self, mapping: EventSourceMapping) -> Result<()> {
        self.write(move |tx| ready(queues::put_mapping(tx, &mapping))).await
    }

    async fn get_mapping(&self, uuid: &str) -> Result<Option<EventSourceMapping>> {
        let uuid = uuid.to_string();
        self.read(move |tx| ready(queues::get_mapping(tx, &uuid))).await
    }

    async fn mappings(&self) -> Result<Vec<EventSourceMapping>> {
        self.read(move |tx| ready(queues::mappings(tx))).await
    }

    async fn delete_mapping(&self, uuid: &str) -> Result<bool> {
        let uuid = uuid.to_string();
        self.write(move |tx| ready(queues::delete_mapping(tx, &uuid))).await
    }

    async fn create_schedule_group(&self, name: &str, now: Millis, max: u64) -> Result<ScheduleGroup> {
        let name = name.to_string();
        self.write(move |tx| ready(schedules::create_group(tx, &name, now, max))).await
    }

    async fn get_schedule_group(&self, name: &str) -> Result<Option<ScheduleGroup>> {
        let name = name.to_string();
        self.read(move |tx| ready(schedules::get_group(tx, &name))).await
    }

    async fn list_schedule_groups(
        &self, prefix: &str, after: Option<&str>, limit: usize,
    ) -> Result<Vec<ScheduleGroup>> {
        let (prefix, after) = (prefix.to_string(), after.map(str::to_string));
        self.read(move |tx| ready(schedules::list_groups(tx, &prefix, after.as_deref(), limit))).await
    }

    async fn delete_schedule_group(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |tx| ready(schedules::delete_group(tx, &name))).await
    }

    async fn put_schedule(&self, schedule: Schedule, create: bool, now: Millis, max: u64) -> Result<()> {
        self.write(move |tx| ready(schedules::put_schedule(tx, &schedule, create, now, max))).await
    }

    async fn get_schedule(&self, group: &str, name: &str) -> Result<Option<StoredSchedule>> {
        let (group, name) = (group.to_string(), name.to_string());
        self.read(move |tx| ready(schedules::get_schedule(tx, &group, &name))).await
    }

    async fn list_schedules(
        &self, group: Option<&str>, prefix: &str, after: Option<(String, String)>, limit: usize,
    ) -> Result<Vec<StoredSchedule>> {
        let (group, prefix) = (group.map(str::to_string), prefix.to_string());
        self.read(move |tx| {
            let after = after.as_ref().map(|(g, n)| (g.as_str(), n.as_str()));
            ready(schedules::list_schedules(tx, group.as_deref(), &prefix, after, limit))
        })
        .await
    }

    async fn delete_schedule(&self, group: &str, name: &str) -> Result<()> {
        let (group, name) = (group.to_string(), name.to_string());
        self.write(move |tx| ready(schedules::delete_schedule(tx, &group, &name))).await
    }

    async fn claim_due_schedules(&self, now: Millis, limit: usize) -> Result<usize> {
        self.write(move |tx| ready(schedules::claim_due(tx, now, limit))).await
    }

    async fn take_due_firings(
        &self, now: Millis, lease_ms: i64, limit: usize,
    ) -> Result<Vec<(Firing, Schedule)>> {
        self.write(move |tx| ready(schedules::take_due_firings(tx, now, lease_ms, limit))).await
    }

    async fn settle_firing(&self, firing: Firing, delivery: Delivery, now: Millis) -> Result<bool> {
        self.write(move |tx| ready(schedules::settle_firing(tx, &firing, &delivery, now))).await
    }

    async fn schedule_history(
        &self, group: &str, name: &str, before: Option<Millis>, limit: usize,
    ) -> Result<Vec<Firing>> {
        let (group, name) = (group.to_string(), name.to_string());
        self.read(move |tx| ready(schedules::history(tx, &group, &name, before, limit))).await
    }

    async fn expire_messages(&self, now: Millis, limit: usize) -> Result<u64> {
        self.write(move |tx| ready(queues::expire(tx, now, limit))).await
    }

    async fn any_visible(&self, queue_id: &str, now: Millis) -> Result<bool> {
        let queue_id = queue_id.to_string();
        self.read(move |tx| ready(queues::any_visible(tx, &queue_id, now))).await
    }

    async fn get_deployment(&self, function: &str, resolved: Resolved) -> Result<Option<Deployment>> {
        let function = function.to_string();
        self.read(move |tx| {
            let (sql, key) = rows::deployment_statement(resolved);
            let row = tx.query_opt(sql, &[function.as_str().into(), key.into()], |r| {
                Ok((r.text(0)?, r.opt_text(1)?))
            })?;
            rows::deployment(function, resolved, row)
        })
        .await
    }

    fn check_space(&self) -> Result<()> {
        self.admit()
    }

    async fn snapshot_version(&self) -> Result<u64> {
        self.read(|tx| {
            let sql = "SELECT value FROM meta WHERE key = 'snapshot_version'";
            Ok(tx.query_opt(sql, &[], |r| r.int(0))?.unwrap_or(0) as u64)
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
        let revisions = self.write(move |tx| prune_revisions(tx, older_than)).await?;
        let stored_before =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(older_than.max(0) as u64);
        // In the writer, which every write that references an artifact also runs in (and checks
        // the file there): nothing can start referencing an artifact between this read and its
        // removal. `put_artifact` is kept out by the blob directory's own lock.
        let removed = self
            .write(move |tx| {
                let referenced: HashSet<String> = tx.strings(gc::REFERENCED_SQL, &[])?.into_iter().collect();
                tx.blobs.remove_garbage(|sha| !referenced.contains(sha), stored_before, limit)
            })
            .await?;
        Ok(CollectedCode { revisions, artifacts: removed.artifacts, bytes: removed.bytes })
    }

    async fn referenced_code(&self) -> Result<Vec<String>> {
        self.read(|tx| tx.strings(gc::REFERENCED_SQL, &[])).await
    }

    async fn insert_invocations(&self, batch: Vec<NewInvocation>) -> Result<Vec<Result<Inserted>>> {
        self.admit()?;
        self.write(move |tx| ready(ops::insert_invocations(tx, batch))).await
    }

    async fn record_finished(&self, records: Vec<InvocationRecord>) -> Result<()> {
        // Records of answered work, but new rows all the same: they wait (in the service's
        // bounded queue) rather than spend the reserve that completions need.
        self.admit()?;
        self.write(move |tx| ready(ops::record_finished(tx, &records))).await
    }

    async fn claim_queued(
        &self, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let worker = worker.clone();
        self.write(move |tx| {
            // Twice as many as wanted: too-old events among them are expired, not claimed.
            let scan = Scan::Queued { limit: max * 2 };
            ready(ops::claim_scan(tx, scan, &worker, max, lease_expires_at, now))
        })
        .await
    }

    async fn claim(
        &self, id: &InvocationId, worker: &WorkerId, lease_expires_at: Millis, now: Millis,
    ) -> Result<Claimed> {
        let (id, worker) = (id.clone(), worker.clone());
        self.write(move |tx| Ok(ready(ops::claim(tx, &id.0, &worker, lease_expires_at, now))??)).await
    }

    async fn renew_leases(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        let worker = worker.clone();
        self.write(move |tx| ready(ops::renew_leases(tx, &worker, attempts, lease_expires_at, now))).await
    }

    async fn complete(&self, completion: Completion, now: Millis) -> Result<Lifecycle> {
        self.write(move |tx| ready(ops::complete(tx, &completion, now))).await?.map_err(StoreError::Rejected)
    }

    async fn recover(&self, now: Millis) -> Result<Recovered> {
        self.write(move |tx| ready(ops::recover(tx, now))).await
    }

    async fn get_invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>> {
        let id = id.clone();
        self.read(move |tx| ready(tx.load_invocation(&id.0))).await
    }

    async fn list_invocations(
        &self, function: &str, filter: InvocationFilter,
    ) -> Result<Vec<InvocationRecord>> {
        let function = function.to_string();
        self.read(move |tx| {
            let (sql, values) = rows::invocation_page(&function, &filter);
            tx.query(&sql, &values, read_record)
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(StateName, u64)>> {
        self.read(|tx| tx.query(rows::COUNT_BY_STATE, &[], rows::read_state_count)).await
    }

    async fn prune_invocations(&self, finished_before: Millis, limit: usize) -> Result<Pruned> {
        self.write(move |tx| {
            let sizes = tx.query(PRUNE_SQL, &[finished_before.into(), limit.into()], |r| r.int(0))?;
            let (records, bytes) = (sizes.len() as i64, sizes.iter().sum::<i64>());
            if records > 0 {
                tx.run(rows::ADD_ENDED, &[(-records).into(), (-bytes).into()])?;
            }
            Ok(Pruned { invocations: records as u64, bytes: bytes.max(0) as u64 })
        })
        .await
    }

    async fn ended_invocations(&self) -> Result<Pruned> {
        let totals = |r: &dyn ColumnRow| Ok((r.int(0)?, r.int(1)?, r.int(2)?));
        let (records, bytes, parts) =
            self.read(move |tx| tx.query_opt(rows::ENDED_TOTALS, &[], totals)).await?.unwrap_or_default();
        if parts > 1 {
            // Folded by the writer, which holds the database: the rows it sums are the rows it
            // deletes. Best effort: the answer stands without it (a full disk may refuse it).
            let fold = self
                .write(move |tx| {
                    let (records, bytes, _) =
                        tx.query_opt(rows::ENDED_TOTALS, &[], totals)?.unwrap_or_default();
                    tx.run("DELETE FROM ended_totals", &[])?;
                    tx.run(rows::ADD_ENDED, &[records.into(), bytes.into()]).map(drop)
                })
                .await;
            if let Err(e) = fold {
                tracing::warn!(error = %e, "sqlite: folding the ended totals failed; the next read tries again");
            }
        }
        Ok(Pruned { invocations: records.max(0) as u64, bytes: bytes.max(0) as u64 })
    }

    async fn async_backlog(&self) -> Result<Vec<(String, u64)>> {
        self.read(|tx| tx.query(rows::ASYNC_BACKLOG, &[], |r| Ok((r.text(0)?, r.int(1)? as u64)))).await
    }

    async fn counters(&self) -> Result<Counters> {
        self.read(|tx| rows::counters(tx.query(rows::COUNTERS, &[], |r| Ok((r.text(0)?, r.int(1)?)))?)).await
    }

    async fn cluster_secret(&self, name: &str, candidate: &str) -> Result<String> {
        let (name, candidate) = (name.to_string(), candidate.to_string());
        self.write(move |tx| {
            tx.run(rows::INSERT_CLUSTER_SECRET, &[name.as_str().into(), candidate.as_str().into()])?;
            let mut found = tx.query(rows::CLUSTER_SECRET, &[name.as_str().into()], |r| r.text(0))?;
            found.pop().ok_or_else(|| StoreError::Backend(format!("cluster secret {name} vanished")))
        })
        .await
    }

    async fn put_worker(&self, state: WorkerState) -> Result<bool> {
        self.write(move |tx| {
            let json = serde_json::to_string(&state).map_err(json_err)?;
            let values = rows::worker_values(&state, &json);
            Ok(tx.run(rows::PUT_WORKER, &values)? == 1)
        })
        .await
    }

    async fn list_workers(&self, since: Millis) -> Result<Vec<WorkerState>> {
        let workers = self.read(move |tx| tx.query(rows::LIST_WORKERS, &[since.into()], rows::read_worker));
        Ok(rows::workers_by_id(workers.await?))
    }

    async fn queued(&self, limit: usize) -> Result<Vec<(InvocationId, String, Resolved)>> {
        self.read(move |tx| tx.query(rows::QUEUED, &[limit.into()], rows::read_queued)).await
    }

    async fn placed_counts(&self) -> Result<Vec<(WorkerId, u64)>> {
        self.read(|tx| tx.query(rows::PLACED_COUNTS, &[], |r| Ok((WorkerId(r.text(0)?), r.int(1)? as u64))))
            .await
    }

    async fn place(
        &self, placements: Vec<(InvocationId, WorkerId)>, now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        self.write(move |tx| ready(ops::place(tx, placements, now))).await
    }

    async fn claim_placed(
        &self, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let worker = worker.clone();
        self.write(move |tx| {
            let scan = Scan::PlacedOn { worker: &worker, limit: max };
            ready(ops::claim_scan(tx, scan, &worker, max, lease_expires_at, now))
        })
        .await
    }

    async fn assigned_deployments(&self, worker: &WorkerId) -> Result<Vec<(String, Resolved)>> {
        let worker = worker.clone();
        self.read(move |tx| tx.query(rows::ASSIGNED, &[worker.0.as_str().into()], rows::read_assigned)).await
    }

    async fn create_worker_credential(&self, credential: WorkerCredential) -> Result<()> {
        // A new worker is new work: each one stores its heartbeats.
        self.admit()?;
        self.write(move |tx| {
            let created = tx.run(rows::INSERT_CREDENTIAL, &rows::credential_values(&credential))?;
            rows::created_credential(created, &credential)
        })
        .await
    }

    async fn find_worker_credential(&self, secret_sha256: &str) -> Result<Option<FoundCredential>> {
        let sha = secret_sha256.to_string();
        self.read(move |tx| {
            let sql = format!("{CREDENTIAL_SELECT} WHERE k.secret_sha256 = $1");
            tx.query_opt(&sql, &[sha.as_str().into()], read_credential)
        })
        .await
    }

    async fn list_worker_credentials(&self) -> Result<Vec<FoundCredential>> {
        self.read(|tx| tx.query(&format!("{CREDENTIAL_SELECT} ORDER BY k.worker"), &[], read_credential))
            .await
    }

    async fn delete_worker_credential(&self, worker: &WorkerId) -> Result<bool> {
        let worker = worker.clone();
        self.write(move |tx| Ok(tx.run(rows::DELETE_CREDENTIAL, &[worker.0.as_str().into()])? == 1)).await
    }

    async fn prune_enrolled_credentials(&self, silent_since: Millis) -> Result<u64> {
        self.write(move |tx| {
            tx.run(
                "DELETE FROM worker_credentials WHERE origin = 'enrolled' \
                 AND MAX(created_at, COALESCE((SELECT last_heartbeat FROM workers w \
                 WHERE w.id = worker_credentials.worker), 0)) < $1",
                &[silent_since.into()],
            )
        })
        .await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<()> {
        let row = KeyRow::seal(&key)?;
        self.write(move |tx| rows::created_key(tx.run(rows::INSERT_KEY, &key_values(&row))?, &row)).await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.read(move |tx| tx.query_opt(rows::GET_KEY, &[id.as_str().into()], read_key)).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(|tx| tx.query(rows::LIST_KEYS, &[], read_key)).await
    }

    async fn revoke_api_key(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx| Ok(tx.run(rows::REVOKE_KEY, &[name.as_str().into()])? == 1)).await
    }

    async fn touch_api_key(&self, id: &str, now: Millis) -> Result<()> {
        let id = id.to_string();
        self.write(move |tx| tx.run(rows::TOUCH_KEY, &[id.as_str().into(), now.into()]).map(drop)).await
    }
}
