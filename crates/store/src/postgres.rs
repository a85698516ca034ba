//! The PostgreSQL backend of the cluster shape: any number of gust servers share one database.
//!
//! Every store call is one transaction on a pooled connection. Lifecycle guards lock the row
//! (`SELECT … FOR UPDATE`), run the state machine (`gust_core::apply`) and write with a
//! conditional UPDATE on `(state, attempt_epoch)`; queue claims take rows with
//! `FOR UPDATE SKIP LOCKED`, so many claimers never wait on each other or share a row.
//! Migrations run under an advisory lock, so several servers can start at once.
//! Artifacts are stored in the database (`artifacts`, BYTEA, at most 50 MB each), so every
//! server can serve every artifact; workers cache them by sha256.
//!
//! Vacuum: the queue's hot path updates invocation rows in place (claims, renewals,
//! completions), leaving dead tuples that autovacuum reclaims; the partial indexes (queued,
//! due, placed) stay small because they only cover live work.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use gust_core::limits::{DEFAULT_PLACEMENT_TIMEOUT_MS, RECOVERY_BATCH};
use gust_core::{
    apply, Alias, ApiKey, Context, Deployment, ErrorKind, Event, FunctionConfig, FunctionSpec, InvocationId,
    InvocationRecord, Lifecycle, Millis, Mode, Rejected, Resolved, Routing, StateName, Version, WorkerId,
    WorkerState,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

mod tls;

use crate::gc;
use crate::rows::{
    corrupt, credential_row, decode_state, destination_request, encode_state, json_err, may_owe_destination,
    refuse_if_routed, repeated_report, same_but_description, system_error, to_record, version_spec, KeyRow,
    Outcome, RawInvocation, KEY_COLUMNS,
};
use crate::{
    sha256_hex, Claimed, CollectedCode, Completion, Counters, FoundCredential, Inserted, InvocationFilter,
    Kind, NewInvocation, Pruned, Recovered, Result, Store, StoreError, WorkerCredential,
};

/// The bytes of an invocation record that grow with use (what retention's budget counts).
const RECORD_BYTES: &str = "octet_length(payload) + COALESCE(octet_length(result), 0) \
     + COALESCE(octet_length(error), 0) + octet_length(log)";

/// A parameter list of mixed types.
macro_rules! params {
    ($($x:expr),* $(,)?) => { &[$($x as &(dyn ToSql + Sync)),*] };
}

/// Connections per server process.
pub const DEFAULT_POOL_SIZE: usize = 16;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('snapshot_version', 0), ('fenced_completions', 0), ('fenced_renewals', 0);
CREATE TABLE functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    code_sha256 TEXT,
    revision BIGINT NOT NULL,
    next_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE function_revisions (
    function TEXT NOT NULL,
    revision BIGINT NOT NULL,
    spec TEXT NOT NULL,
    code_sha256 TEXT,
    PRIMARY KEY (function, revision)
);
CREATE TABLE versions (
    function TEXT NOT NULL,
    number BIGINT NOT NULL,
    spec TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    from_revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (function, number)
);
CREATE TABLE aliases (
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    routing TEXT NOT NULL,
    revision BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE artifacts (sha256 TEXT PRIMARY KEY, bytes BYTEA NOT NULL);
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    resolved TEXT NOT NULL,
    payload BYTEA NOT NULL,
    mode TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint TEXT,
    received_at BIGINT NOT NULL,
    retry TEXT NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    due_at BIGINT,
    attempt_epoch BIGINT NOT NULL,
    function_errors BIGINT NOT NULL,
    lost_attempts BIGINT NOT NULL,
    result BYTEA,
    error TEXT,
    log TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    expires_at BIGINT,
    completed_epoch BIGINT
);
CREATE UNIQUE INDEX invocations_idempotency ON invocations (function, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX invocations_queue ON invocations (id) WHERE state = 'QUEUED';
CREATE INDEX invocations_due ON invocations (state, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX invocations_expiry ON invocations (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('QUEUED', 'PLACED', 'RETRY_WAIT');
CREATE INDEX invocations_function ON invocations (function, id);
CREATE INDEX invocations_placed ON invocations (worker, id) WHERE state = 'PLACED';
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    state TEXT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);
"#,
    "ALTER TABLE aliases ADD COLUMN description TEXT NOT NULL DEFAULT ''",
    r#"
ALTER TABLE invocations ADD COLUMN completed_by TEXT;
CREATE TABLE worker_credentials (
    worker TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL
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
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
"#,
    // Retention prunes terminal records oldest first (finished_at is set only when an
    // invocation ends).
    "CREATE INDEX invocations_finished ON invocations (finished_at) WHERE finished_at IS NOT NULL;",
    // Garbage collection of code: when each artifact was last stored and each `$LATEST`
    // revision written (rows from before count as written at the upgrade, so none is
    // collected sooner than its grace).
    r#"
ALTER TABLE artifacts ADD COLUMN stored_at BIGINT NOT NULL DEFAULT 0;
UPDATE artifacts SET stored_at = (extract(epoch from now()) * 1000)::BIGINT;
ALTER TABLE function_revisions ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
UPDATE function_revisions SET created_at = (extract(epoch from now()) * 1000)::BIGINT;
"#,
];

/// The advisory lock a code collection holds for its transaction (with the schema's hash as
/// the second key: advisory locks are per database): one server collects at a time, the
/// others skip the round.
const CODE_GC_LOCK: i32 = 7_215_422;

/// An artifact (`a`) that no function's `$LATEST`, revision or version names.
const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM functions f WHERE f.code_sha256 = a.sha256) \
     AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.code_sha256 = a.sha256) \
     AND NOT EXISTS (SELECT 1 FROM function_revisions r WHERE r.code_sha256 = a.sha256)";

pub struct PgStore {
    pool: Pool,
    completions: tokio::sync::mpsc::Sender<PendingCompletion>,
    completed: tokio::sync::broadcast::Sender<InvocationId>,
}

/// The NOTIFY channel on which committed completions are announced to every server of one
/// gust deployment (one per schema).
fn completed_channel(schema: Option<&str>) -> String {
    format!("gust_completed_{}", schema.unwrap_or("public"))
}

/// Listens for completions committed by any server (LISTEN/NOTIFY on `channel`) and
/// republishes them; reconnects after a failure. Polling the store stays the safety net.
async fn completion_listener(
    cfg: tokio_postgres::Config,
    tls: tls::PgTls,
    channel: String,
    tx: tokio::sync::broadcast::Sender<InvocationId>,
) {
    loop {
        match cfg.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                // The connection must be polled for LISTEN to complete and notifications to
                // arrive; it ends when the server goes away.
                let drive = async {
                    while let Some(msg) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        match msg {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                for id in n.payload().split(',').filter(|s| !s.is_empty()) {
                                    let _ = tx.send(InvocationId(id.to_string()));
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "completion listener lost its connection");
                                return;
                            }
                        }
                    }
                };
                let listen = async {
                    if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    }
                };
                tokio::join!(drive, listen);
            }
            Err(e) => tracing::warn!(error = %e, "completion listener cannot connect"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

type PendingCompletion = (Completion, Millis, tokio::sync::oneshot::Sender<Result<Lifecycle>>);

/// Most completions committed in one transaction.
const COMPLETION_BATCH: usize = 256;
/// Completion transactions in flight at once.
const COMPLETION_IN_FLIGHT: usize = 4;

/// Group commit for completions: concurrent `complete` calls share one transaction (one
/// commit), each inside its own savepoint so one failure never spoils the others. Replies go
/// out only after the commit.
async fn completion_batcher(
    pool: Pool,
    mut rx: tokio::sync::mpsc::Receiver<PendingCompletion>,
    channel: String,
) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(COMPLETION_IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < COMPLETION_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (pool, channel) = (pool.clone(), channel.clone());
        tokio::spawn(async move {
            let (results, replies) = commit_completions(&pool, batch, &channel).await;
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
            drop(permit);
        });
    }
}

type Replies = Vec<tokio::sync::oneshot::Sender<Result<Lifecycle>>>;

async fn commit_completions(
    pool: &Pool,
    mut batch: Vec<PendingCompletion>,
    channel: &str,
) -> (Vec<Result<Lifecycle>>, Replies) {
    // Every batch locks its rows in id order, so concurrent batches cannot deadlock.
    batch.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let n = batch.len();
    let mut replies = Vec::with_capacity(n);
    let mut work = Vec::with_capacity(n);
    for (c, now, reply) in batch {
        work.push((c, now));
        replies.push(reply);
    }
    let all_failed = |e: StoreError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return (all_failed(pool_err(e)), replies),
    };
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return (all_failed(pg_err(e)), replies),
    };
    let mut results = Vec::with_capacity(n);
    let mut accepted = String::new();
    for (completion, now) in work {
        if let Err(e) = tx.batch_execute("SAVEPOINT completion").await {
            return (all_failed(pg_err(e)), replies);
        }
        match complete_in(&tx, &completion, now).await {
            Ok(r) => {
                if let Err(e) = tx.batch_execute("RELEASE SAVEPOINT completion").await {
                    return (all_failed(pg_err(e)), replies);
                }
                if r.is_ok() {
                    accepted.push_str(&completion.id.0);
                    accepted.push(',');
                }
                results.push(r.map_err(StoreError::Rejected));
            }
            Err(e) => {
                if let Err(e) = tx.batch_execute("ROLLBACK TO SAVEPOINT completion").await {
                    return (all_failed(pg_err(e)), replies);
                }
                results.push(Err(e));
            }
        }
    }
    // Announced at commit, to every server (a payload stays under PostgreSQL's 8000 bytes).
    for chunk in accepted.as_bytes().chunks(37 * 200) {
        let payload = String::from_utf8_lossy(chunk).into_owned();
        if let Err(e) = pg_execute(&tx, "SELECT pg_notify($1, $2)", params![&channel, &payload]).await {
            return (all_failed(pg_err(e)), replies);
        }
    }
    match tx.commit().await {
        Ok(()) => (results, replies),
        Err(e) => (all_failed(by_sqlstate(e.code(), format!("postgres: commit failed: {e}"))), replies),
    }
}

/// One guarded completion inside the caller's transaction.
async fn complete_in(
    c: &impl GenericClient,
    completion: &Completion,
    now: Millis,
) -> Result<Result<Lifecycle, Rejected>> {
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
    let r = transition(c, &completion.id.0, &event, outcome, now).await?;
    match &r {
        Ok(_) => {}
        Err(Rejected::Fenced { .. }) => bump_counter(c, "fenced_completions").await?,
        Err(Rejected::Terminal(_)) => {
            let row = pg_query_one(
                c,
                "SELECT completed_epoch, completed_by FROM invocations WHERE id = $1",
                params![&completion.id.0],
            )
            .await
            .map_err(pg_err)?;
            if row.get::<_, Option<i64>>(0) == Some(completion.epoch as i64) {
                return Ok(Err(repeated_report(row.get(1), completion)));
            }
        }
        Err(_) => {}
    }
    Ok(r)
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    by_sqlstate(e.code(), format!("postgres: {e}"))
}

/// The database's own disk is full (`53100 disk_full`, or the class `53000
/// insufficient_resources` itself): the same error as the embedded store's full disk, so
/// clients see 507 and retry later. Nothing was written (the statement or the transaction
/// failed). `53200 out_of_memory` and `53300 too_many_connections` are not about disk and pass
/// soon by themselves: plain backend errors.
fn by_sqlstate(code: Option<&tokio_postgres::error::SqlState>, message: String) -> StoreError {
    use tokio_postgres::error::SqlState;
    match code {
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::INSUFFICIENT_RESOURCES => {
            StoreError::Full(message)
        }
        _ => StoreError::Backend(message),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(format!("postgres pool: {e}"))
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL), optionally inside `schema` (created if
    /// missing; tests use one schema each), and applies migrations under an advisory lock.
    pub async fn connect(url: &str, schema: Option<&str>, pool_size: usize) -> Result<Self> {
        let (url, tls_plan) = tls::plan(url)?;
        let mut cfg = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        cfg.ssl_mode(tls::tokio_ssl_mode(tls_plan.mode));
        let tls = tls::connector(&tls_plan)?;
        tracing::info!(tls = %tls_plan.describe(), "PostgreSQL store");
        if let Some(schema) = schema {
            if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(StoreError::Backend(format!("invalid schema name {schema:?}")));
            }
            cfg.options(format!("-c search_path={schema}"));
        }
        let listen_cfg = cfg.clone();
        let channel = completed_channel(schema);
        let mgr =
            Manager::from_config(cfg, tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let (completions, rx) = tokio::sync::mpsc::channel(8_192);
        tokio::spawn(completion_batcher(pool.clone(), rx, channel.clone()));
        let (completed, _) = tokio::sync::broadcast::channel(4_096);
        tokio::spawn(completion_listener(listen_cfg, tls, channel, completed.clone()));
        let store = PgStore { pool, completions, completed };
        let mut client = store.pool.get().await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL ({}): {}",
                tls_plan.describe(),
                tls::error_chain(&e)
            ))
        })?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Concurrent `CREATE SCHEMA IF NOT EXISTS` can collide: create it under the lock too.
        pg_execute(&tx, "SELECT pg_advisory_xact_lock(7215421)", &[]).await.map_err(pg_err)?;
        if let Some(schema) = schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.map_err(pg_err)?;
        }
        tx.batch_execute("CREATE TABLE IF NOT EXISTS gust_schema (version BIGINT NOT NULL)")
            .await
            .map_err(pg_err)?;
        let current: i64 = match pg_query_opt(&tx, "SELECT version FROM gust_schema", &[])
            .await
            .map_err(pg_err)?
        {
            Some(row) => row.get(0),
            None => {
                pg_execute(&tx, "INSERT INTO gust_schema (version) VALUES (0)", &[]).await.map_err(pg_err)?;
                0
            }
        };
        if current as usize > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {current} is newer than this gust ({}); refusing to run",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(pg_err)?;
            pg_execute(&tx, "UPDATE gust_schema SET version = $1", params![&((i + 1) as i64)])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        drop(client);
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }
}

// Every statement goes through the connection's prepared-statement cache: one round trip per
// statement instead of a prepare and an execute.

async fn pg_query(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, p).await
}

async fn pg_query_opt(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, p).await
}

async fn pg_query_one(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_one(&stmt, p).await
}

async fn pg_execute(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, p).await
}

async fn bump_snapshot(c: &impl GenericClient) -> Result<u64> {
    let row = pg_query_one(
        c,
        "UPDATE meta SET value = value + 1 WHERE key = 'snapshot_version' RETURNING value",
        &[],
    )
    .await
    .map_err(pg_err)?;
    Ok(row.get::<_, i64>(0) as u64)
}

async fn bump_counter(c: &impl GenericClient, key: &str) -> Result<()> {
    pg_execute(c, "UPDATE meta SET value = value + 1 WHERE key = $1", params![&key]).await.map_err(pg_err)?;
    Ok(())
}

fn check_revision(expect: Option<u64>, actual: u64) -> Result<()> {
    match expect {
        Some(expected) if expected != actual => Err(StoreError::RevisionMismatch { expected, actual }),
        _ => Ok(()),
    }
}

const FUNCTION_COLS: &str = "name, spec, code_sha256, revision, created_at, updated_at";

fn to_function(r: &Row) -> Result<FunctionConfig> {
    Ok(FunctionConfig {
        name: r.get(0),
        spec: crate::secrets::open_spec(r.get::<_, &str>(1))?,
        code_sha256: r.get(2),
        revision: r.get::<_, i64>(3) as u64,
        created_at: r.get(4),
        updated_at: r.get(5),
    })
}

async fn load_function(c: &impl GenericClient, name: &str, lock: bool) -> Result<Option<FunctionConfig>> {
    let sql = format!(
        "SELECT {FUNCTION_COLS} FROM functions WHERE name = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    pg_query_opt(c, &sql, params![&name]).await.map_err(pg_err)?.map(|r| to_function(&r)).transpose()
}

async fn require_function(c: &impl GenericClient, name: &str, expect: Option<u64>) -> Result<FunctionConfig> {
    let f = load_function(c, name, true)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Function, name: name.to_string() })?;
    check_revision(expect, f.revision)?;
    Ok(f)
}

const VERSION_COLS: &str = "function, number, spec, code_sha256, from_revision, created_at";

fn to_version(r: &Row) -> Result<Version> {
    Ok(Version {
        function: r.get(0),
        number: r.get::<_, i64>(1) as u64,
        spec: crate::secrets::open_spec(r.get::<_, &str>(2))?,
        code_sha256: r.get(3),
        from_revision: r.get::<_, i64>(4) as u64,
        created_at: r.get(5),
    })
}

const ALIAS_COLS: &str = "function, name, routing, revision, updated_at, description";

fn to_alias(r: &Row) -> Result<Alias> {
    Ok(Alias {
        function: r.get(0),
        name: r.get(1),
        routing: serde_json::from_str(r.get::<_, &str>(2)).map_err(json_err)?,
        revision: r.get::<_, i64>(3) as u64,
        updated_at: r.get(4),
        description: r.get(5),
    })
}

const INVOCATION_COLS: &str = "id, function, qualifier, resolved, payload, mode, idempotency_key, fingerprint, \
     received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts, result, error, log, \
     updated_at, finished_at";

fn raw_invocation(r: &Row) -> RawInvocation {
    RawInvocation {
        id: r.get(0),
        function: r.get(1),
        qualifier: r.get(2),
        resolved: r.get(3),
        payload: r.get(4),
        mode: r.get(5),
        idempotency_key: r.get(6),
        fingerprint: r.get(7),
        received_at: r.get(8),
        retry: r.get(9),
        state: r.get(10),
        worker: r.get(11),
        due_at: r.get(12),
        attempt_epoch: r.get(13),
        function_errors: r.get(14),
        lost_attempts: r.get(15),
        result: r.get(16),
        error: r.get(17),
        log: r.get(18),
        updated_at: r.get(19),
        finished_at: r.get(20),
    }
}

async fn load_invocation(c: &impl GenericClient, id: &str) -> Result<Option<InvocationRecord>> {
    let sql = format!("SELECT {INVOCATION_COLS} FROM invocations WHERE id = $1");
    pg_query_opt(c, &sql, params![&id])
        .await
        .map_err(pg_err)?
        .map(|r| to_record(raw_invocation(&r)))
        .transpose()
}

async fn insert_record(c: &impl GenericClient, rec: &InvocationRecord) -> Result<u64> {
    let req = &rec.request;
    let (state, worker, due_at) = encode_state(&rec.lifecycle.state);
    let expires_at = match req.mode {
        Mode::Async => {
            Some(req.received_at.saturating_add((req.retry.max_event_age_s as i64).saturating_mul(1000)))
        }
        Mode::Sync => None,
    };
    let retry = serde_json::to_string(&req.retry).map_err(json_err)?;
    let error = rec.error.as_ref().map(serde_json::to_string).transpose().map_err(json_err)?;
    let resolved = req.resolved.encode();
    let payload: &[u8] = &req.payload;
    let result: Option<&[u8]> = rec.result.as_deref();
    let params: [&(dyn ToSql + Sync); 22] = [
        &req.id.0,
        &req.function,
        &req.qualifier,
        &resolved,
        &payload,
        &req.mode.as_str(),
        &req.idempotency_key,
        &req.fingerprint,
        &req.received_at,
        &retry,
        &state,
        &worker,
        &due_at,
        &(rec.lifecycle.attempt_epoch as i64),
        &(rec.lifecycle.function_errors as i64),
        &(rec.lifecycle.lost_attempts as i64),
        &result,
        &error,
        &rec.log,
        &rec.updated_at,
        &rec.finished_at,
        &expires_at,
    ];
    pg_execute(c,
        "INSERT INTO invocations (id, function, qualifier, resolved, payload, mode, idempotency_key, fingerprint, \
         received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts, result, error, \
         log, updated_at, finished_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
         ON CONFLICT DO NOTHING",
        &params,
    )
    .await
    .map_err(pg_err)
}

/// Locks an invocation row and reads what a transition needs.
async fn load_guarded(c: &impl GenericClient, id: &str) -> Result<(Context, Lifecycle)> {
    let row = pg_query_opt(c,
            "SELECT mode, received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts \
             FROM invocations WHERE id = $1 FOR UPDATE",
            params![&id],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Invocation, name: id.to_string() })?;
    let ctx = Context {
        mode: Mode::parse(row.get::<_, &str>(0)).ok_or_else(|| corrupt("mode"))?,
        received_at: row.get(1),
        retry: serde_json::from_str(row.get::<_, &str>(2)).map_err(json_err)?,
    };
    let lifecycle = Lifecycle {
        state: decode_state(row.get::<_, &str>(3), row.get(4), row.get(5))?,
        attempt_epoch: row.get::<_, i64>(6) as u64,
        function_errors: row.get::<_, i64>(7) as u32,
        lost_attempts: row.get::<_, i64>(8) as u32,
    };
    Ok((ctx, lifecycle))
}

/// Applies `event` to invocation `id` under its row lock, with a conditional UPDATE on
/// `(state, attempt_epoch)`. Returns the new lifecycle or the state machine's refusal.
async fn transition(
    c: &impl GenericClient,
    id: &str,
    event: &Event,
    outcome: Outcome<'_>,
    now: Millis,
) -> Result<Result<Lifecycle, Rejected>> {
    let (ctx, current) = load_guarded(c, id).await?;
    let next = match apply(&ctx, &current, event, now) {
        Ok(next) => next,
        Err(rejected) => return Ok(Err(rejected)),
    };
    let (state, worker, due_at) = encode_state(&next.state);
    let finished_at = next.state.is_terminal().then_some(now);
    let error_json = outcome.error.map(serde_json::to_string).transpose().map_err(json_err)?;
    let set_outcome = outcome.result.is_some() || outcome.error.is_some();
    // An accepted completion records its epoch, so a repeated report is recognised.
    let (completed_epoch, completed_by) = match event {
        Event::Complete { epoch, worker, .. } => (Some(*epoch as i64), Some(worker.0.as_str())),
        _ => (None, None),
    };
    let changed = pg_execute(c,
            "UPDATE invocations SET state = $1, worker = $2, due_at = $3, attempt_epoch = $4, function_errors = $5, \
             lost_attempts = $6, updated_at = $7, finished_at = COALESCE($8, finished_at), \
             result = CASE WHEN $9 THEN $10 ELSE result END, \
             error = CASE WHEN $9 THEN $11 ELSE error END, \
             log = COALESCE($12, log), completed_epoch = COALESCE($16, completed_epoch), \
             completed_by = COALESCE($17, completed_by) \
             WHERE id = $13 AND state = $14 AND attempt_epoch = $15",
            &[
                &state,
                &worker,
                &due_at,
                &(next.attempt_epoch as i64),
                &(next.function_errors as i64),
                &(next.lost_attempts as i64),
                &now,
                &finished_at,
                &set_outcome,
                &outcome.result,
                &error_json,
                &outcome.log,
                &id,
                &current.state.name().as_str(),
                &(current.attempt_epoch as i64),
                &completed_epoch,
                &completed_by,
            ],
        )
        .await
        .map_err(pg_err)?;
    if changed != 1 {
        return Err(StoreError::Backend(format!("invocation {id} changed under its guard")));
    }
    if may_owe_destination(&ctx, &next) {
        deliver_destination(c, id, now).await?;
    }
    Ok(Ok(next))
}

/// Writes the destination invocation a just-finished invocation owes (same transaction).
async fn deliver_destination(c: &impl GenericClient, id: &str, now: Millis) -> Result<()> {
    let Some(rec) = load_invocation(c, id).await? else { return Ok(()) };
    let Some((target, payload)) = gust_core::lambda::destination(&rec, now) else { return Ok(()) };
    let Some(f) = load_function(c, &target, false).await? else { return Ok(()) };
    if let Some(new) = destination_request(f, payload, now) {
        insert_record(c, &new).await?;
    }
    Ok(())
}

async fn ids_where(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<String>> {
    Ok(pg_query(c, sql, params).await.map_err(pg_err)?.iter().map(|r| r.get(0)).collect())
}

async fn expire(c: &impl GenericClient, id: &str, now: Millis) -> Result<bool> {
    let error =
        system_error(ErrorKind::Expired, "the event exceeded its maximum age before it could run".into());
    Ok(transition(c, id, &Event::Expire, Outcome { error: Some(&error), ..Outcome::default() }, now)
        .await?
        .is_ok())
}

/// Runs `$body` in one transaction on a pooled connection, committing if it returns `Ok`.
/// Writes `$LATEST` of a function (creating it if `expect` allows), keeping its code unless
/// `code` replaces it.
async fn write_function(
    tx: &impl GenericClient,
    name: &str,
    spec: FunctionSpec,
    code: Option<String>,
    expect: Option<u64>,
    now: Millis,
) -> Result<FunctionConfig> {
    // Serialise writers of this name, including its creation.
    pg_execute(tx, "SELECT pg_advisory_xact_lock(hashtext($1))", params![&name]).await.map_err(pg_err)?;
    let existing = load_function(tx, name, true).await?;
    check_revision(expect, existing.as_ref().map_or(0, |f| f.revision))?;
    let revision = bump_snapshot(tx).await?;
    let spec_json = crate::secrets::seal_spec(&spec)?;
    let code = code.or_else(|| existing.as_ref().and_then(|f| f.code_sha256.clone()));
    pg_execute(
        tx,
        "INSERT INTO functions (name, spec, code_sha256, revision, next_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $5) \
         ON CONFLICT (name) DO UPDATE SET spec = $2, code_sha256 = $3, revision = $4, updated_at = $5",
        params![&name, &spec_json, &code, &(revision as i64), &now],
    )
    .await
    .map_err(pg_err)?;
    pg_execute(
        tx,
        "INSERT INTO function_revisions (function, revision, spec, code_sha256, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        params![&name, &(revision as i64), &spec_json, &code, &now],
    )
    .await
    .map_err(pg_err)?;
    Ok(FunctionConfig {
        name: name.to_string(),
        spec,
        code_sha256: code,
        revision,
        created_at: existing.as_ref().map_or(now, |f| f.created_at),
        updated_at: now,
    })
}

/// The wall clock in ms, for when an artifact was stored (the embedded store uses the file's
/// modification time, the same clock).
fn unix_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Holds a stored artifact until the transaction ends, so a code collection either waits for
/// this transaction's reference or has deleted the artifact first (then `NotFound`).
async fn hold_artifact(tx: &impl GenericClient, sha256: &str) -> Result<()> {
    let held = pg_query_opt(tx, "SELECT 1 FROM artifacts WHERE sha256 = $1 FOR KEY SHARE", params![&sha256])
        .await
        .map_err(pg_err)?
        .is_some();
    if !held {
        return Err(StoreError::NotFound { kind: Kind::Artifact, name: sha256.chars().take(80).collect() });
    }
    Ok(())
}

/// Deletes the `$LATEST` revisions [`gc::prunable_revisions`] names, locking their functions
/// first as every writer of a function does (one being written now is skipped until the next
/// collection); returns how many.
async fn prune_revisions(tx: &impl GenericClient, older_than: Millis) -> Result<u64> {
    let live = pg_query(tx, gc::LIVE_RESOLVED_SQL, &[]).await.map_err(pg_err)?;
    let live = gc::live_revisions(live.iter().map(|r| (r.get(0), r.get(1))));
    let revisions: Vec<gc::RevisionRow> = pg_query(tx, gc::REVISIONS_SQL, &[])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| gc::RevisionRow {
            function: r.get(0),
            revision: r.get::<_, i64>(1) as u64,
            created_at: r.get(2),
        })
        .collect();
    let current: HashMap<String, u64> = pg_query(tx, gc::CURRENT_SQL, &[])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect();
    let prune = gc::prunable_revisions(&revisions, &current, &live, older_than);
    if prune.is_empty() {
        return Ok(0);
    }
    let mut names: Vec<&str> = prune.iter().map(|(f, _)| f.as_str()).collect();
    names.dedup();
    let locked: HashSet<String> = pg_query(
        tx,
        "SELECT name FROM functions WHERE name = ANY($1) ORDER BY name FOR UPDATE SKIP LOCKED",
        params![&names],
    )
    .await
    .map_err(pg_err)?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let (functions, numbers): (Vec<&str>, Vec<i64>) =
        prune.iter().filter(|(f, _)| locked.contains(f)).map(|(f, r)| (f.as_str(), *r as i64)).unzip();
    pg_execute(
        tx,
        "DELETE FROM function_revisions WHERE (function, revision) IN \
         (SELECT * FROM unnest($1::TEXT[], $2::BIGINT[]))",
        params![&functions, &numbers],
    )
    .await
    .map_err(pg_err)
}

macro_rules! in_tx {
    ($self:expr, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client.transaction().await.map_err(pg_err)?;
        let out = $body;
        match out {
            Ok(v) => {
                $tx.commit().await.map_err(pg_err)?;
                Ok(v)
            }
            Err(e) => {
                // Roll back before answering, so no row lock outlives the call.
                let _ = $tx.rollback().await;
                Err(e)
            }
        }
    }};
}

#[async_trait]
impl Store for PgStore {
    async fn put_function(
        &self,
        name: &str,
        spec: FunctionSpec,
        expect: Option<u64>,
        now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| write_function(&tx, name, spec, None, expect, now).await)
    }

    async fn create_function(
        &self,
        name: &str,
        spec: FunctionSpec,
        code_sha256: &str,
        now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| async {
            hold_artifact(&tx, code_sha256).await?;
            write_function(&tx, name, spec, Some(code_sha256.to_string()), Some(0), now).await
        }
        .await)
    }

    async fn set_function_code(
        &self,
        name: &str,
        code_sha256: &str,
        expect: Option<u64>,
        now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| {
            async {
                let mut f = require_function(&tx, name, expect).await?;
                hold_artifact(&tx, code_sha256).await?;
                let revision = bump_snapshot(&tx).await?;
                let spec_json = crate::secrets::seal_spec(&f.spec)?;
                pg_execute(
                    &tx,
                    "UPDATE functions SET code_sha256 = $2, revision = $3, updated_at = $4 WHERE name = $1",
                    params![&name, &code_sha256, &(revision as i64), &now],
                )
                .await
                .map_err(pg_err)?;
                pg_execute(
                    &tx,
                    "INSERT INTO function_revisions (function, revision, spec, code_sha256, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                    params![&name, &(revision as i64), &spec_json, &code_sha256, &now],
                )
                .await
                .map_err(pg_err)?;
                f.code_sha256 = Some(code_sha256.to_string());
                f.revision = revision;
                f.updated_at = now;
                Ok(f)
            }
            .await
        })
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let client = self.client().await?;
        load_function(&client, name, false).await
    }

    async fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        let client = self.client().await?;
        let sql = format!("SELECT {FUNCTION_COLS} FROM functions WHERE name > $1 ORDER BY name LIMIT $2");
        let rows =
            pg_query(&client, &sql, params![&after.unwrap_or(""), &(limit as i64)]).await.map_err(pg_err)?;
        rows.iter().map(to_function).collect()
    }

    async fn delete_function(&self, name: &str, expect: Option<u64>, now: Millis) -> Result<u64> {
        in_tx!(self, |tx| async {
            require_function(&tx, name, expect).await?;
            bump_snapshot(&tx).await?;
            for table in ["function_revisions", "versions", "aliases"] {
                pg_execute(&tx, &format!("DELETE FROM {table} WHERE function = $1"), params![&name])
                    .await
                    .map_err(pg_err)?;
            }
            pg_execute(&tx, "DELETE FROM functions WHERE name = $1", params![&name]).await.map_err(pg_err)?;
            let pending = ids_where(
                &tx,
                "SELECT id FROM invocations WHERE function = $1 \
                 AND state IN ('QUEUED', 'PLACED', 'RUNNING', 'RETRY_WAIT') ORDER BY id",
                params![&name],
            )
            .await?;
            let error = system_error(ErrorKind::FunctionDeleted, format!("function {name} was deleted"));
            let mut cancelled = 0;
            for id in pending {
                let outcome = Outcome { error: Some(&error), ..Outcome::default() };
                if transition(&tx, &id, &Event::Cancel, outcome, now).await?.is_ok() {
                    cancelled += 1;
                }
            }
            Ok(cancelled)
        }
        .await)
    }

    async fn delete_version(&self, name: &str, number: u64, _now: Millis) -> Result<()> {
        in_tx!(self, |tx| async {
            require_function(&tx, name, None).await?;
            let routings: Vec<String> =
                pg_query(&tx, "SELECT routing FROM aliases WHERE function = $1 FOR UPDATE", params![&name])
                    .await
                    .map_err(pg_err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
            refuse_if_routed(name, number, &routings)?;
            bump_snapshot(&tx).await?;
            let n = pg_execute(
                &tx,
                "DELETE FROM versions WHERE function = $1 AND number = $2",
                params![&name, &(number as i64)],
            )
            .await
            .map_err(pg_err)?;
            if n == 0 {
                return Err(StoreError::NotFound { kind: Kind::Version, name: format!("{name}:{number}") });
            }
            Ok(())
        }
        .await)
    }

    async fn publish_version(
        &self,
        name: &str,
        expect: Option<u64>,
        description: Option<&str>,
        now: Millis,
    ) -> Result<Version> {
        in_tx!(self, |tx| {
            async {
            let f = require_function(&tx, name, expect).await?;
            let code = f.code_sha256.clone().ok_or_else(|| {
                StoreError::Invalid(format!("function {name} has no code yet: upload code before publishing"))
            })?;
            let sql = format!("SELECT {VERSION_COLS} FROM versions WHERE function = $1 ORDER BY number DESC LIMIT 1");
            if let Some(row) = pg_query_opt(&tx, &sql, params![&name]).await.map_err(pg_err)? {
                let v = to_version(&row)?;
                if same_but_description(&v.spec, &f.spec) && v.code_sha256 == code {
                    return Ok(v);
                }
            }
            let number: i64 = pg_query_one(&tx,
                    "UPDATE functions SET next_version = next_version + 1 WHERE name = $1 RETURNING next_version - 1",
                    params![&name],
                )
                .await
                .map_err(pg_err)?
                .get(0);
            bump_snapshot(&tx).await?;
            let spec = version_spec(&f.spec, description);
            let spec_json = crate::secrets::seal_spec(&spec)?;
            pg_execute(&tx,
                "INSERT INTO versions (function, number, spec, code_sha256, from_revision, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                params![&name, &number, &spec_json, &code, &(f.revision as i64), &now],
            )
            .await
            .map_err(pg_err)?;
            Ok(Version {
                function: name.to_string(),
                number: number as u64,
                spec,
                code_sha256: code,
                from_revision: f.revision,
                created_at: now,
            })
        }
        .await
        })
    }

    async fn get_version(&self, name: &str, number: u64) -> Result<Option<Version>> {
        let client = self.client().await?;
        let sql = format!("SELECT {VERSION_COLS} FROM versions WHERE function = $1 AND number = $2");
        pg_query_opt(&client, &sql, params![&name, &(number as i64)])
            .await
            .map_err(pg_err)?
            .map(|r| to_version(&r))
            .transpose()
    }

    async fn list_versions(&self, name: &str, after: Option<u64>, limit: usize) -> Result<Vec<Version>> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {VERSION_COLS} FROM versions WHERE function = $1 AND number > $2 ORDER BY number LIMIT $3");
        let rows = pg_query(&client, &sql, params![&name, &(after.unwrap_or(0) as i64), &(limit as i64)])
            .await
            .map_err(pg_err)?;
        rows.iter().map(to_version).collect()
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
        in_tx!(self, |tx| {
            async {
            require_function(&tx, function, None).await?;
            let current = pg_query_opt(&tx,
                    "SELECT revision FROM aliases WHERE function = $1 AND name = $2 FOR UPDATE",
                    params![&function, &alias],
                )
                .await
                .map_err(pg_err)?
                .map(|r| r.get::<_, i64>(0) as u64);
            check_revision(expect, current.unwrap_or(0))?;
            for v in routing.versions() {
                let exists = pg_query_opt(&tx, "SELECT 1 FROM versions WHERE function = $1 AND number = $2", params![&function, &(v as i64)])
                    .await
                    .map_err(pg_err)?
                    .is_some();
                if !exists {
                    return Err(StoreError::NotFound { kind: Kind::Version, name: format!("{function}:{v}") });
                }
            }
            let revision = bump_snapshot(&tx).await?;
            let routing_json = serde_json::to_string(&routing).map_err(json_err)?;
            pg_execute(&tx,
                "INSERT INTO aliases (function, name, routing, revision, updated_at, description) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (function, name) DO UPDATE SET routing = $3, revision = $4, updated_at = $5, description = $6",
                params![&function, &alias, &routing_json, &(revision as i64), &now, &description],
            )
            .await
            .map_err(pg_err)?;
            Ok(Alias {
                function: function.to_string(),
                name: alias.to_string(),
                routing,
                description: description.to_string(),
                revision,
                updated_at: now,
            })
        }
        .await
        })
    }

    async fn get_alias(&self, function: &str, alias: &str) -> Result<Option<Alias>> {
        let client = self.client().await?;
        let sql = format!("SELECT {ALIAS_COLS} FROM aliases WHERE function = $1 AND name = $2");
        pg_query_opt(&client, &sql, params![&function, &alias])
            .await
            .map_err(pg_err)?
            .map(|r| to_alias(&r))
            .transpose()
    }

    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>> {
        let client = self.client().await?;
        let sql = format!("SELECT {ALIAS_COLS} FROM aliases WHERE function = $1 ORDER BY name");
        pg_query(&client, &sql, params![&function]).await.map_err(pg_err)?.iter().map(to_alias).collect()
    }

    async fn delete_alias(
        &self,
        function: &str,
        alias: &str,
        expect: Option<u64>,
        _now: Millis,
    ) -> Result<()> {
        in_tx!(self, |tx| async {
            let current = pg_query_opt(
                &tx,
                "SELECT revision FROM aliases WHERE function = $1 AND name = $2 FOR UPDATE",
                params![&function, &alias],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get::<_, i64>(0) as u64)
            .ok_or_else(|| StoreError::NotFound { kind: Kind::Alias, name: format!("{function}:{alias}") })?;
            check_revision(expect, current)?;
            bump_snapshot(&tx).await?;
            pg_execute(
                &tx,
                "DELETE FROM aliases WHERE function = $1 AND name = $2",
                params![&function, &alias],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        }
        .await)
    }

    async fn get_deployment(&self, function: &str, resolved: Resolved) -> Result<Option<Deployment>> {
        let client = self.client().await?;
        let row = match resolved {
            Resolved::Version(n) => pg_query_opt(
                &client,
                "SELECT spec, code_sha256 FROM versions WHERE function = $1 AND number = $2",
                params![&function, &(n as i64)],
            )
            .await
            .map_err(pg_err)?,
            Resolved::Latest { revision } => pg_query_opt(
                &client,
                "SELECT spec, code_sha256 FROM function_revisions WHERE function = $1 AND revision = $2",
                params![&function, &(revision as i64)],
            )
            .await
            .map_err(pg_err)?,
        };
        let Some(row) = row else { return Ok(None) };
        let Some(code_sha256) = row.get::<_, Option<String>>(1) else { return Ok(None) };
        Ok(Some(Deployment {
            function: function.to_string(),
            resolved,
            spec: crate::secrets::open_spec(row.get::<_, &str>(0))?,
            code_sha256,
        }))
    }

    async fn snapshot_version(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = pg_query_one(&client, "SELECT value FROM meta WHERE key = 'snapshot_version'", &[])
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn put_artifact(&self, bytes: Bytes) -> Result<String> {
        let sha = sha256_hex(&bytes);
        let client = self.client().await?;
        let data: &[u8] = &bytes;
        pg_execute(
            &client,
            // Stored again: the collection grace starts over (the upload's config write follows).
            "INSERT INTO artifacts (sha256, bytes, stored_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO UPDATE SET stored_at = GREATEST(artifacts.stored_at, EXCLUDED.stored_at)",
            params![&sha, &data, &unix_millis()],
        )
        .await
        .map_err(pg_err)?;
        Ok(sha)
    }

    async fn get_artifact(&self, sha256: &str) -> Result<Bytes> {
        let client = self.client().await?;
        let row = pg_query_opt(&client, "SELECT bytes FROM artifacts WHERE sha256 = $1", params![&sha256])
            .await
            .map_err(pg_err)?;
        let not_found =
            || StoreError::NotFound { kind: Kind::Artifact, name: sha256.chars().take(80).collect() };
        let bytes: Vec<u8> = row.ok_or_else(not_found)?.get(0);
        if sha256_hex(&bytes) != sha256 {
            return Err(StoreError::Corrupt(sha256.to_string()));
        }
        Ok(Bytes::from(bytes))
    }

    async fn collect_code(&self, older_than: Millis, limit: usize) -> Result<CollectedCode> {
        in_tx!(self, |tx| async {
            let ours: bool = pg_query_one(
                &tx,
                "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                params![&CODE_GC_LOCK],
            )
            .await
            .map_err(pg_err)?
            .get(0);
            if !ours {
                return Ok(CollectedCode::default());
            }
            let revisions = prune_revisions(&tx, older_than).await?;
            // Lock the candidates, skipping any a deploy holds (`hold_artifact`); then decide
            // again in a statement that starts after the locks were granted, so it sees every
            // reference committed before them. A deploy that comes later waits for this commit
            // and finds the artifact gone.
            let candidates: Vec<String> = pg_query(
                &tx,
                &format!(
                    "SELECT sha256 FROM artifacts a WHERE stored_at < $1 AND {UNREFERENCED} \
                     LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                params![&older_than, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
            let mut collected = CollectedCode { revisions, ..CollectedCode::default() };
            if candidates.is_empty() {
                return Ok(collected);
            }
            let deleted = pg_query(
                &tx,
                &format!(
                    "DELETE FROM artifacts a WHERE sha256 = ANY($1) AND stored_at < $2 AND {UNREFERENCED} \
                     RETURNING sha256, octet_length(bytes)::BIGINT"
                ),
                params![&candidates, &older_than],
            )
            .await
            .map_err(pg_err)?;
            for row in &deleted {
                collected.artifacts.push(row.get(0));
                collected.bytes += row.get::<_, i64>(1).max(0) as u64;
            }
            collected.artifacts.sort();
            Ok(collected)
        }
        .await)
    }

    async fn referenced_code(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = pg_query(&client, gc::REFERENCED_SQL, &[]).await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn insert_invocations(&self, batch: Vec<NewInvocation>) -> Result<Vec<Result<Inserted>>> {
        if batch.len() == 1 {
            // The ingest hot path: one autocommitted statement (two on a key conflict).
            let client = self.client().await?;
            let new = batch.into_iter().next().expect("one entry");
            return Ok(vec![insert_one(&client, new).await?]);
        }
        in_tx!(self, |tx| async {
            let mut out = Vec::with_capacity(batch.len());
            for new in batch {
                out.push(insert_one(&tx, new).await?);
            }
            Ok(out)
        }
        .await)
    }

    async fn record_finished(&self, records: Vec<InvocationRecord>) -> Result<()> {
        in_tx!(self, |tx| async {
            for rec in &records {
                insert_record(&tx, rec).await?;
            }
            Ok(())
        }
        .await)
    }

    async fn claim_queued(
        &self,
        worker: &WorkerId,
        max: usize,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Vec<Claimed>> {
        // One statement: its WHERE clause is `apply`'s Claim rule for QUEUED rows (not older
        // than their maximum age; too-old rows are left to the sweeper, which expires them).
        claim_where(self, "state = 'QUEUED'", None, worker, max, lease_expires_at, now).await
    }

    async fn claim(
        &self,
        id: &InvocationId,
        worker: &WorkerId,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Claimed> {
        in_tx!(self, |tx| async {
            let event = Event::Claim { worker: worker.clone(), lease_expires_at };
            let lc = transition(&tx, &id.0, &event, Outcome::default(), now).await??;
            let rec = load_invocation(&tx, &id.0)
                .await?
                .ok_or_else(|| StoreError::Backend("claimed row vanished".into()))?;
            Ok(Claimed { request: rec.request, epoch: lc.attempt_epoch, lease_expires_at })
        }
        .await)
    }

    async fn renew_leases(
        &self,
        worker: &WorkerId,
        attempts: Vec<(InvocationId, u64)>,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        in_tx!(self, |tx| async {
            let mut out = Vec::with_capacity(attempts.len());
            for (id, epoch) in attempts {
                let event = Event::RenewLease { worker: worker.clone(), epoch, lease_expires_at };
                let r = match transition(&tx, &id.0, &event, Outcome::default(), now).await {
                    Ok(r) => r.map(|_| ()),
                    Err(StoreError::NotFound { .. }) => Err(Rejected::Fenced { current: 0, given: epoch }),
                    Err(e) => return Err(e),
                };
                if matches!(r, Err(Rejected::Fenced { .. })) {
                    bump_counter(&tx, "fenced_renewals").await?;
                }
                out.push(r);
            }
            Ok(out)
        }
        .await)
    }

    async fn complete(&self, completion: Completion, now: Millis) -> Result<Lifecycle> {
        // Completions are group-committed: see `completion_batcher`.
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.completions
            .send((completion, now, reply))
            .await
            .map_err(|_| StoreError::Backend("the completion batcher has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the completion batch was abandoned".into()))?
    }

    async fn recover(&self, now: Millis) -> Result<Recovered> {
        in_tx!(self, |tx| {
            async {
            let mut report = Recovered::default();
            let batch = RECOVERY_BATCH as i64;
            let lost = ids_where(
                &tx,
                "SELECT id FROM invocations WHERE state = 'RUNNING' AND due_at <= $1 ORDER BY due_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED",
                params![&now, &batch],
            )
            .await?;
            for id in lost {
                let (_, current) = load_guarded(&tx, &id).await?;
                let error = system_error(
                    ErrorKind::WorkerLost,
                    format!("the worker running attempt {} was lost (its lease expired)", current.attempt_epoch),
                );
                let outcome = Outcome { error: Some(&error), ..Outcome::default() };
                if let Ok(lc) = transition(&tx, &id, &Event::LeaseExpired, outcome, now).await? {
                    if lc.state.is_terminal() {
                        report.lost += 1;
                    } else {
                        report.requeued += 1;
                    }
                }
            }
            let due = ids_where(
                &tx,
                "SELECT id FROM invocations WHERE state = 'RETRY_WAIT' AND due_at <= $1 ORDER BY due_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED",
                params![&now, &batch],
            )
            .await?;
            for id in due {
                if transition(&tx, &id, &Event::RetryDue, Outcome::default(), now).await?.is_ok() {
                    report.retries_due += 1;
                }
            }
            let unplaced = ids_where(
                &tx,
                "SELECT id FROM invocations WHERE state = 'PLACED' AND due_at <= $1 ORDER BY due_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED",
                params![&(now - DEFAULT_PLACEMENT_TIMEOUT_MS), &batch],
            )
            .await?;
            for id in unplaced {
                if transition(&tx, &id, &Event::PlacementTimedOut, Outcome::default(), now).await?.is_ok() {
                    report.unplaced += 1;
                }
            }
            let old = ids_where(
                &tx,
                "SELECT id FROM invocations WHERE expires_at < $1 \
                 AND state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                params![&now, &batch],
            )
            .await?;
            for id in old {
                if expire(&tx, &id, now).await? {
                    report.expired += 1;
                }
            }
            Ok(report)
        }
        .await
        })
    }

    async fn get_invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>> {
        let client = self.client().await?;
        load_invocation(&client, &id.0).await
    }

    async fn list_invocations(
        &self,
        function: &str,
        filter: InvocationFilter,
    ) -> Result<Vec<InvocationRecord>> {
        let client = self.client().await?;
        let before = filter.before.map(|b| b.0).unwrap_or_else(|| "~".into());
        let state = filter.state.map(|s| s.as_str());
        let sql = format!(
            "SELECT {INVOCATION_COLS} FROM invocations WHERE function = $1 AND id < $2 \
             AND ($3::TEXT IS NULL OR state = $3) ORDER BY id DESC LIMIT $4"
        );
        let rows = pg_query(&client, &sql, params![&function, &before, &state, &(filter.limit as i64)])
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| to_record(raw_invocation(r))).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(StateName, u64)>> {
        let client = self.client().await?;
        let rows = pg_query(&client, "SELECT state, COUNT(*) FROM invocations GROUP BY state", &[])
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let state = StateName::parse(r.get::<_, &str>(0)).ok_or_else(|| corrupt("state"))?;
                Ok((state, r.get::<_, i64>(1) as u64))
            })
            .collect()
    }

    async fn prune_invocations(&self, finished_before: Millis, limit: usize) -> Result<Pruned> {
        let client = self.client().await?;
        // Rows another server is pruning right now are skipped, not waited for.
        let sql = format!(
            "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations \
             WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2 \
             FOR UPDATE SKIP LOCKED) RETURNING {RECORD_BYTES}"
        );
        let rows = pg_query(&client, &sql, &[&finished_before, &(limit as i64)]).await.map_err(pg_err)?;
        let bytes = rows.iter().map(|r| r.get::<_, Option<i32>>(0).unwrap_or(0).max(0) as u64).sum();
        Ok(Pruned { invocations: rows.len() as u64, bytes })
    }

    async fn ended_invocations(&self) -> Result<Pruned> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM({RECORD_BYTES}), 0)::BIGINT FROM invocations WHERE finished_at IS NOT NULL"
        );
        let rows = pg_query(&client, &sql, &[]).await.map_err(pg_err)?;
        Ok(rows.first().map_or(Pruned::default(), |r| Pruned {
            invocations: r.get::<_, i64>(0).max(0) as u64,
            bytes: r.get::<_, i64>(1).max(0) as u64,
        }))
    }

    async fn async_backlog(&self) -> Result<Vec<(String, u64)>> {
        let client = self.client().await?;
        let rows = pg_query(
            &client,
            "SELECT function, COUNT(*) FROM invocations \
             WHERE state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') AND mode = 'async' GROUP BY function",
            &[],
        )
        .await
        .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect())
    }

    async fn counters(&self) -> Result<Counters> {
        let client = self.client().await?;
        let rows = pg_query(
            &client,
            "SELECT key, value FROM meta WHERE key IN ('fenced_completions', 'fenced_renewals')",
            &[],
        )
        .await
        .map_err(pg_err)?;
        let mut c = Counters::default();
        for r in rows {
            match r.get::<_, &str>(0) {
                "fenced_completions" => c.fenced_completions = r.get::<_, i64>(1) as u64,
                _ => c.fenced_renewals = r.get::<_, i64>(1) as u64,
            }
        }
        Ok(c)
    }

    fn completion_events(&self) -> Option<tokio::sync::broadcast::Receiver<InvocationId>> {
        Some(self.completed.subscribe())
    }

    async fn put_worker(&self, state: WorkerState) -> Result<bool> {
        let client = self.client().await?;
        let json = serde_json::to_string(&state).map_err(json_err)?;
        let changed = pg_execute(
            &client,
            "INSERT INTO workers (id, revision, state, last_heartbeat) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET revision = $2, state = $3, last_heartbeat = $4 \
                 WHERE workers.revision < EXCLUDED.revision",
            params![&state.id.0, &(state.revision as i64), &json, &state.last_heartbeat],
        )
        .await
        .map_err(pg_err)?;
        Ok(changed == 1)
    }

    async fn list_workers(&self, since: Millis) -> Result<Vec<WorkerState>> {
        let client = self.client().await?;
        let rows = pg_query(
            &client,
            "SELECT state FROM workers WHERE last_heartbeat >= $1 ORDER BY id",
            params![&since],
        )
        .await
        .map_err(pg_err)?;
        rows.iter().map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(json_err)).collect()
    }

    async fn queued(&self, limit: usize) -> Result<Vec<(InvocationId, String, Resolved)>> {
        let client = self.client().await?;
        let rows = pg_query(
            &client,
            "SELECT id, function, resolved FROM invocations WHERE state = 'QUEUED' ORDER BY id LIMIT $1",
            params![&(limit as i64)],
        )
        .await
        .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let resolved =
                    Resolved::decode(r.get::<_, &str>(2)).ok_or_else(|| corrupt("resolved version"))?;
                Ok((InvocationId(r.get(0)), r.get(1), resolved))
            })
            .collect()
    }

    async fn placed_counts(&self) -> Result<Vec<(WorkerId, u64)>> {
        let client = self.client().await?;
        let rows = pg_query(
            &client,
            "SELECT worker, COUNT(*) FROM invocations WHERE state = 'PLACED' GROUP BY worker",
            &[],
        )
        .await
        .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (WorkerId(r.get(0)), r.get::<_, i64>(1) as u64)).collect())
    }

    async fn place(
        &self,
        placements: Vec<(InvocationId, WorkerId)>,
        now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        in_tx!(self, |tx| async {
            let mut out = Vec::with_capacity(placements.len());
            for (id, worker) in placements {
                out.push(
                    transition(&tx, &id.0, &Event::Place { worker }, Outcome::default(), now)
                        .await?
                        .map(|_| ()),
                );
            }
            Ok(out)
        }
        .await)
    }

    async fn claim_placed(
        &self,
        worker: &WorkerId,
        max: usize,
        lease_expires_at: Millis,
        now: Millis,
    ) -> Result<Vec<Claimed>> {
        claim_where(
            self,
            "state = 'PLACED' AND worker = $5",
            Some(worker),
            worker,
            max,
            lease_expires_at,
            now,
        )
        .await
    }

    async fn assigned_deployments(&self, worker: &WorkerId) -> Result<Vec<(String, Resolved)>> {
        let client = self.client().await?;
        let rows = pg_query(
            &client,
            "SELECT DISTINCT function, resolved FROM invocations \
             WHERE state IN ('PLACED', 'RUNNING') AND worker = $1",
            params![&worker.0],
        )
        .await
        .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let resolved =
                    Resolved::decode(r.get::<_, &str>(1)).ok_or_else(|| corrupt("resolved version"))?;
                Ok((r.get(0), resolved))
            })
            .collect()
    }

    async fn create_worker_credential(&self, credential: WorkerCredential) -> Result<()> {
        let client = self.client().await?;
        let created = pg_execute(
            &client,
            "INSERT INTO worker_credentials (worker, secret_sha256, origin, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            params![
                &credential.worker.0,
                &credential.secret_sha256,
                &credential.origin.as_str(),
                &credential.created_at
            ],
        )
        .await
        .map_err(pg_err)?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("worker {} already has a credential", credential.worker)))
        }
    }

    async fn find_worker_credential(&self, secret_sha256: &str) -> Result<Option<FoundCredential>> {
        let client = self.client().await?;
        let sql = format!("{CREDENTIAL_SELECT} WHERE k.secret_sha256 = $1");
        let row = pg_query_opt(&client, &sql, params![&secret_sha256]).await.map_err(pg_err)?;
        row.as_ref().map(decode_credential).transpose()
    }

    async fn list_worker_credentials(&self) -> Result<Vec<FoundCredential>> {
        let client = self.client().await?;
        let sql = format!("{CREDENTIAL_SELECT} ORDER BY k.worker");
        let rows = pg_query(&client, &sql, &[]).await.map_err(pg_err)?;
        rows.iter().map(decode_credential).collect()
    }

    async fn delete_worker_credential(&self, worker: &WorkerId) -> Result<bool> {
        let client = self.client().await?;
        let deleted =
            pg_execute(&client, "DELETE FROM worker_credentials WHERE worker = $1", params![&worker.0])
                .await
                .map_err(pg_err)?;
        Ok(deleted == 1)
    }

    async fn prune_enrolled_credentials(&self, silent_since: Millis) -> Result<u64> {
        let client = self.client().await?;
        pg_execute(
            &client,
            "DELETE FROM worker_credentials k WHERE origin = 'enrolled' \
             AND GREATEST(created_at, COALESCE((SELECT last_heartbeat FROM workers w \
             WHERE w.id = k.worker), 0)) < $1",
            params![&silent_since],
        )
        .await
        .map_err(pg_err)
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<()> {
        let row = KeyRow::seal(&key)?;
        let client = self.client().await?;
        let created = pg_execute(
            &client,
            &format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            params![
                &row.id,
                &row.name,
                &row.role,
                &row.functions,
                &row.bearer_sha256,
                &row.sigv4_secret_sealed,
                &row.created_at,
                &row.last_used_at
            ],
        )
        .await
        .map_err(pg_err)?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("an API key named {} exists", row.name)))
        }
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let client = self.client().await?;
        let row =
            pg_query_opt(&client, &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"), params![&id])
                .await
                .map_err(pg_err)?;
        row.map(|r| key_row(&r).open()).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let client = self.client().await?;
        let rows = pg_query(&client, &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name"), &[])
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| key_row(r).open()).collect()
    }

    async fn revoke_api_key(&self, name: &str) -> Result<bool> {
        let client = self.client().await?;
        let deleted = pg_execute(&client, "DELETE FROM api_keys WHERE name = $1", params![&name])
            .await
            .map_err(pg_err)?;
        Ok(deleted == 1)
    }

    async fn touch_api_key(&self, id: &str, now: Millis) -> Result<()> {
        let client = self.client().await?;
        pg_execute(
            &client,
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND COALESCE(last_used_at, 0) < $2",
            params![&id, &now],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}

fn key_row(r: &Row) -> KeyRow {
    KeyRow {
        id: r.get(0),
        name: r.get(1),
        role: r.get(2),
        functions: r.get(3),
        bearer_sha256: r.get(4),
        sigv4_secret_sealed: r.get(5),
        created_at: r.get(6),
        last_used_at: r.get(7),
    }
}

/// A credential with its worker's last heartbeat (`k` is the credential, `w` the worker).
const CREDENTIAL_SELECT: &str = "SELECT k.worker, k.secret_sha256, k.origin, k.created_at, w.last_heartbeat \
     FROM worker_credentials k LEFT JOIN workers w ON w.id = k.worker";

fn decode_credential(r: &Row) -> Result<FoundCredential> {
    credential_row(r.get(0), r.get(1), r.get::<_, &str>(2), r.get(3), r.get(4))
}

/// Claims up to `max` rows matching `filter` in one statement: a new attempt epoch and a
/// lease each, rows locked by other claimers skipped.
async fn claim_where(
    store: &PgStore,
    filter: &str,
    placed_on: Option<&WorkerId>,
    worker: &WorkerId,
    max: usize,
    lease_expires_at: Millis,
    now: Millis,
) -> Result<Vec<Claimed>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let client = store.client().await?;
    let sql = format!(
        "UPDATE invocations SET state = 'RUNNING', worker = $1, due_at = $2, attempt_epoch = attempt_epoch + 1, \
         updated_at = $3 \
         WHERE id IN (SELECT id FROM invocations WHERE {filter} AND (expires_at IS NULL OR expires_at >= $3) \
         ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {INVOCATION_COLS}"
    );
    let rows = match placed_on {
        Some(w) => {
            pg_query(&client, &sql, params![&worker.0, &lease_expires_at, &now, &(max as i64), &w.0]).await
        }
        None => pg_query(&client, &sql, params![&worker.0, &lease_expires_at, &now, &(max as i64)]).await,
    }
    .map_err(pg_err)?;
    let mut claimed: Vec<Claimed> = rows
        .iter()
        .map(|r| {
            let rec = to_record(raw_invocation(r))?;
            Ok(Claimed { epoch: rec.lifecycle.attempt_epoch, request: rec.request, lease_expires_at })
        })
        .collect::<Result<_>>()?;
    claimed.sort_by(|a, b| a.request.id.cmp(&b.request.id));
    Ok(claimed)
}

/// Inserts one invocation; on an idempotency-key conflict, answers with the existing one.
async fn insert_one(c: &impl GenericClient, new: NewInvocation) -> Result<Result<Inserted>> {
    let rec = InvocationRecord::new(new.request, new.lifecycle);
    if insert_record(c, &rec).await? == 1 {
        return Ok(Ok(Inserted::Created));
    }
    let req = &rec.request;
    let Some(key) = &req.idempotency_key else {
        return Ok(Err(StoreError::Invalid(format!("invocation id {} already exists", req.id))));
    };
    let id: String = pg_query_one(
        c,
        "SELECT id FROM invocations WHERE function = $1 AND idempotency_key = $2",
        params![&req.function, key],
    )
    .await
    .map_err(pg_err)?
    .get(0);
    let existing = load_invocation(c, &id)
        .await?
        .ok_or_else(|| StoreError::Backend("idempotency index points nowhere".into()))?;
    Ok(if existing.request.fingerprint == req.fingerprint {
        Ok(Inserted::Existing(Box::new(existing)))
    } else {
        Err(StoreError::KeyMismatch { existing: existing.request.id })
    })
}

#[cfg(test)]
mod disk_full_tests {
    use super::by_sqlstate;
    use crate::StoreError;
    use tokio_postgres::error::SqlState;

    #[test]
    fn a_full_database_disk_is_the_stores_full_error() {
        for full in [SqlState::DISK_FULL, SqlState::INSUFFICIENT_RESOURCES] {
            assert!(matches!(by_sqlstate(Some(&full), "m".into()), StoreError::Full(m) if m == "m"));
        }
        for other in [SqlState::OUT_OF_MEMORY, SqlState::TOO_MANY_CONNECTIONS, SqlState::UNIQUE_VIOLATION] {
            assert!(matches!(by_sqlstate(Some(&other), "m".into()), StoreError::Backend(_)), "{other:?}");
        }
        assert!(matches!(by_sqlstate(None, "connection reset".into()), StoreError::Backend(_)));
    }
}
