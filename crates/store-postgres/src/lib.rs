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
use gust_core::queue::{EventSourceMapping, NewMessage, Queue, QueueAttributes, QueueCounts, Received, Sent};
use gust_core::schedule::{Firing, Schedule};
use gust_core::{
    Alias, ApiKey, Deployment, FunctionConfig, FunctionSpec, FunctionUrl, InvocationId, InvocationRecord,
    Lifecycle, Millis, Rejected, Resolved, Routing, StateName, UrlConfig, Version, WorkerId, WorkerState,
};
use gust_store::ops::{self, Counter, Scan, Tx, UrlLookup};
use gust_store::rows::{
    self, json_err, key_values, read_alias, read_credential, read_function, read_guarded, read_key,
    read_record, read_url, read_version, Column, ColumnRow, Guarded, GuardedWrite, InsertInvocation, KeyRow,
    Value, ALIAS_COLUMNS, CREDENTIAL_SELECT, FUNCTION_COLUMNS, GUARDED_COLUMNS, INSERT_INVOCATION,
    INVOCATION_COLUMNS, NEXT_VERSION, UPDATE_GUARDED, VERSION_COLUMNS,
};
use gust_store::schema::RECORD_BYTES;
use gust_store::{gc, schema};
use gust_store::{queues, schedules, Delivery, ScheduleGroup, StoredSchedule};
use gust_store::{
    sha256_hex, Claimed, CollectedCode, Completion, Counters, FoundCredential, Inserted, InvocationFilter,
    Kind, NewInvocation, Pruned, Recovered, Result, Store, StoreError, WorkerCredential,
};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Row;

mod tls;

/// A parameter list of mixed types.
macro_rules! params {
    ($($x:expr),* $(,)?) => { &[$($x as &(dyn ToSql + Sync)),*] };
}

/// Connections per server process.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The schema's steps in the order PostgreSQL databases have applied them (see [`schema`]).
/// Artifacts live in the database here (SQLite keeps them in files).
const MIGRATIONS: &[&[&str]] = &[
    &[
        schema::CATALOG,
        "CREATE TABLE artifacts (sha256 TEXT PRIMARY KEY, bytes BYTEA NOT NULL);",
        schema::INVOCATIONS,
        schema::COMPLETED_EPOCH,
        schema::WORKERS,
    ],
    &[schema::ALIAS_DESCRIPTION],
    &[schema::WORKER_CREDENTIALS],
    &[schema::API_KEYS],
    &[schema::FINISHED_INDEX],
    // When each artifact was last stored (the collection grace starts over at each upload).
    &[
        "ALTER TABLE artifacts ADD COLUMN stored_at {int} NOT NULL DEFAULT 0; \
         UPDATE artifacts SET stored_at = {now_ms};",
        schema::REVISION_CREATED_AT,
    ],
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
    placed: tokio::sync::broadcast::Sender<WorkerId>,
    channels: Channels,
}

/// [`INSERT_INVOCATION`] of an invocation already placed, announcing it on the placement
/// channel of the current schema ([`Channels`]) if it was inserted; answers how many were.
static INSERT_PLACED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH ins AS ({INSERT_INVOCATION} RETURNING worker) \
         SELECT count(pg_notify('gust_placed_' || current_schema(), worker || ',')) FROM ins"
    )
});

/// Takes the lowest free slot of `$1` below `$2` for holder `$3` until `$4` (free: no row, or
/// a row that expired before `$5`); answers the slot, or no row if another acquirer took it.
const ACQUIRE_SLOT: &str = "INSERT INTO concurrency_slots (function, slot, holder, expires_at) \
     SELECT $1, s, $3, $4 FROM generate_series(0, $2::BIGINT - 1) AS s \
     WHERE NOT EXISTS (SELECT 1 FROM concurrency_slots c WHERE c.function = $1 AND c.slot = s AND c.expires_at > $5) \
     ORDER BY s LIMIT 1 \
     ON CONFLICT (function, slot) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
     WHERE concurrency_slots.expires_at <= $5 \
     RETURNING slot";
/// How many times an acquirer that lost a race for a free slot looks again.
const SLOT_ATTEMPTS: usize = 4;

/// The NOTIFY channels on which one gust deployment (one per schema) announces, to every
/// server, completions and placements as they commit.
#[derive(Clone)]
struct Channels {
    completed: String,
    placed: String,
}

impl Channels {
    fn of(schema: &str) -> Channels {
        Channels { completed: format!("gust_completed_{schema}"), placed: format!("gust_placed_{schema}") }
    }
}

/// Announces `items` on `channel` when the transaction commits, in payloads of comma-separated
/// ids under PostgreSQL's 8000 bytes.
async fn notify<'a>(
    tx: &impl GenericClient, channel: &str, items: impl Iterator<Item = &'a str>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let mut payload = String::new();
    for item in items {
        if !payload.is_empty() && payload.len() + item.len() >= 7_000 {
            pg_execute(tx, "SELECT pg_notify($1, $2)", params![&channel, &payload]).await?;
            payload.clear();
        }
        payload.push_str(item);
        payload.push(',');
    }
    if !payload.is_empty() {
        pg_execute(tx, "SELECT pg_notify($1, $2)", params![&channel, &payload]).await?;
    }
    Ok(())
}

/// Listens for completions and placements committed by any server (LISTEN/NOTIFY) and
/// republishes them; reconnects after a failure. Polling the store stays the safety net.
async fn listener(
    cfg: tokio_postgres::Config, tls: tls::PgTls, channels: Channels,
    completed: tokio::sync::broadcast::Sender<InvocationId>,
    placed: tokio::sync::broadcast::Sender<WorkerId>,
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
                                let ids = n.payload().split(',').filter(|s| !s.is_empty());
                                if n.channel() == channels.placed {
                                    for id in ids {
                                        let _ = placed.send(WorkerId(id.to_string()));
                                    }
                                } else {
                                    for id in ids {
                                        let _ = completed.send(InvocationId(id.to_string()));
                                    }
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
                    let sql = format!("LISTEN {}; LISTEN {}", channels.completed, channels.placed);
                    if let Err(e) = client.batch_execute(&sql).await {
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
    pool: Pool, mut rx: tokio::sync::mpsc::Receiver<PendingCompletion>, channel: String,
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
    pool: &Pool, mut batch: Vec<PendingCompletion>, channel: &str,
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
    let mut accepted = Vec::new();
    let mut fenced = 0;
    // One completion alone needs no savepoint: its failure is the transaction's (two round
    // trips fewer on the way back to a waiting caller).
    let alone = n == 1;
    for (completion, now) in work {
        if !alone {
            if let Err(e) = tx.batch_execute("SAVEPOINT completion").await {
                return (all_failed(pg_err(e)), replies);
            }
        }
        let r = match ops::complete_uncounted(&PgTx(&tx), &completion, now).await {
            // Nothing was written; the transaction rolls back as it is dropped.
            Err(e) if alone => return (vec![Err(e)], replies),
            Err(e) => match tx.batch_execute("ROLLBACK TO SAVEPOINT completion").await {
                Ok(()) => Err(e),
                Err(e) => return (all_failed(pg_err(e)), replies),
            },
            Ok(r) => {
                if !alone {
                    if let Err(e) = tx.batch_execute("RELEASE SAVEPOINT completion").await {
                        return (all_failed(pg_err(e)), replies);
                    }
                }
                if r.is_ok() {
                    accepted.push(completion.id.0.clone());
                }
                if matches!(r, Err(Rejected::Fenced { .. })) {
                    fenced += 1;
                }
                r.map_err(StoreError::Rejected)
            }
        };
        results.push(r);
    }
    // Counted once every row of the batch is locked (rows first, counters last).
    if let Err(e) = ops::count_fenced_completions(&PgTx(&tx), fenced).await {
        return (all_failed(e), replies);
    }
    // Announced at commit, to every server.
    if let Err(e) = notify(&tx, channel, accepted.iter().map(String::as_str)).await {
        return (all_failed(pg_err(e)), replies);
    }
    match tx.commit().await {
        Ok(()) => (results, replies),
        Err(e) => (all_failed(by_sqlstate(e.code(), format!("postgres: commit failed: {e}"))), replies),
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    // tokio-postgres says only "db error"; the server's own words and SQLSTATE are the cause.
    let message = match e.as_db_error() {
        Some(db) => format!("postgres: {} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => format!("postgres: {e}"),
    };
    by_sqlstate(e.code(), message)
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
        let mgr =
            Manager::from_config(cfg, tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL ({}): {}",
                tls_plan.describe(),
                gust_core::error_chain(&e)
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
        schema::check_version(current, MIGRATIONS.len())?;
        for (i, steps) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(&schema::POSTGRES.render(steps)).await.map_err(pg_err)?;
            pg_execute(&tx, "UPDATE gust_schema SET version = $1", params![&((i + 1) as i64)])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        // The channels are named after the schema the tables live in, as the statements that
        // notify in SQL name them (`current_schema()`).
        let current: String =
            pg_query_one(&client, "SELECT current_schema()", &[]).await.map_err(pg_err)?.get(0);
        drop(client);
        let channels = Channels::of(&current);
        let (completions, rx) = tokio::sync::mpsc::channel(8_192);
        tokio::spawn(completion_batcher(pool.clone(), rx, channels.completed.clone()));
        let (completed, _) = tokio::sync::broadcast::channel(4_096);
        let (placed, _) = tokio::sync::broadcast::channel(4_096);
        tokio::spawn(listener(listen_cfg, tls, channels.clone(), completed.clone(), placed.clone()));
        Ok(PgStore { pool, completions, completed, placed, channels })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }
}

// Every statement goes through the connection's prepared-statement cache: one round trip per
// statement instead of a prepare and an execute.

async fn pg_query(
    c: &impl GenericClient, sql: &str, p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, p).await
}

async fn pg_query_opt(
    c: &impl GenericClient, sql: &str, p: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, p).await
}

async fn pg_query_one(
    c: &impl GenericClient, sql: &str, p: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_one(&stmt, p).await
}

async fn pg_execute(
    c: &impl GenericClient, sql: &str, p: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, p).await
}

/// The wall clock in ms, for when an artifact was stored (the embedded store uses the file's
/// modification time, the same clock).
fn unix_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
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

/// Runs `$body` in one transaction on a pooled connection (`$tx` is its [`PgTx`]), committing
/// if it answers `Ok` and rolling back (awaited, so no row lock outlives the call) otherwise.
/// A `?` in `$body` would return past the rollback: bodies that use it are `async` blocks.
macro_rules! in_tx {
    ($self:expr, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let transaction = client.transaction().await.map_err(pg_err)?;
        let $tx = PgTx(&transaction);
        let out = $body;
        match out {
            Ok(v) => {
                transaction.commit().await.map_err(pg_err)?;
                Ok(v)
            }
            Err(e) => {
                // Roll back before answering, so no row lock outlives the call.
                let _ = transaction.rollback().await;
                Err(e)
            }
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// The primitives of `gust_store::ops`, on one PostgreSQL transaction (or a pooled connection)

/// A [`Value`] bound as a PostgreSQL parameter (the statement decides its type; every number
/// gust stores is a BIGINT).
#[derive(Debug)]
struct Pg<'a>(Value<'a>);

impl ToSql for Pg<'_> {
    fn to_sql(
        &self, ty: &Type, out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A PostgreSQL row, read by [`gust_store::rows`]' decoders.
struct PgRow<'a>(&'a Row);

impl ColumnRow for PgRow<'_> {
    fn column(&self, i: usize) -> Result<Column> {
        let ty = self.0.columns().get(i).map(|c| c.type_().clone());
        let column = match ty {
            Some(Type::INT8) => self.0.try_get::<_, Option<i64>>(i).map(|v| v.map(Column::Int)),
            Some(Type::INT4) => self.0.try_get::<_, Option<i32>>(i).map(|v| v.map(|v| Column::Int(v.into()))),
            Some(Type::BOOL) => {
                self.0.try_get::<_, Option<bool>>(i).map(|v| v.map(|v| Column::Int(v.into())))
            }
            Some(Type::BYTEA) => self.0.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map(Column::Bytes)),
            _ => self.0.try_get::<_, Option<String>>(i).map(|v| v.map(Column::Text)),
        };
        Ok(column.map_err(pg_err)?.unwrap_or(Column::Null))
    }
}

/// One transaction, or a pooled connection for a single statement.
struct PgTx<'a, C>(&'a C);

impl<C: GenericClient> PgTx<'_, C> {
    /// Every row of `statement`, each read by `read`.
    async fn query<T>(
        &self, statement: &str, values: &[Value<'_>], mut read: impl FnMut(&dyn ColumnRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let params: Vec<Pg<'_>> = values.iter().map(|v| Pg(*v)).collect();
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = pg_query(self.0, statement, &params).await.map_err(pg_err)?;
        rows.iter().map(|r| read(&PgRow(r))).collect()
    }

    /// The first row of `statement`, if any.
    async fn query_opt<T>(
        &self, statement: &str, values: &[Value<'_>], read: impl FnMut(&dyn ColumnRow) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.query(statement, values, read).await?.into_iter().next())
    }

    async fn run(&self, statement: &str, values: &[Value<'_>]) -> Result<u64> {
        let params: Vec<Pg<'_>> = values.iter().map(|v| Pg(*v)).collect();
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        pg_execute(self.0, statement, &params).await.map_err(pg_err)
    }
}

impl<C: GenericClient> Tx for PgTx<'_, C> {
    async fn load_guarded(&self, id: &str) -> Result<Option<Guarded>> {
        let sql = format!("SELECT {GUARDED_COLUMNS} FROM invocations WHERE id = $1 FOR UPDATE");
        self.query_opt(&sql, &[id.into()], read_guarded).await
    }

    async fn update_guarded(&self, write: &GuardedWrite<'_>) -> Result<u64> {
        self.run(UPDATE_GUARDED, &write.values()).await
    }

    async fn load_invocation(&self, id: &str) -> Result<Option<InvocationRecord>> {
        let sql = format!("SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = $1");
        self.query_opt(&sql, &[id.into()], read_record).await
    }

    async fn insert_invocation(&self, rec: &InvocationRecord) -> Result<bool> {
        let values = InsertInvocation::new(rec)?;
        if matches!(rec.lifecycle.state, gust_core::State::Placed { .. }) {
            // Inserted already placed: announced like a placement, in the same statement (at
            // commit), so the server its worker polls wakes it.
            let inserted = self.query_opt(&INSERT_PLACED, &values.values(), |r| r.int(0)).await?;
            return Ok(inserted == Some(1));
        }
        Ok(self.run(INSERT_INVOCATION, &values.values()).await? == 1)
    }

    async fn id_by_key(&self, function: &str, key: &str) -> Result<Option<String>> {
        let sql = "SELECT id FROM invocations WHERE function = $1 AND idempotency_key = $2";
        self.query_opt(sql, &[function.into(), key.into()], |r| r.text(0)).await
    }

    async fn ids(&self, scan: Scan<'_>) -> Result<Vec<String>> {
        let (statement, values) = scan.statement();
        match scan {
            // Work another server is sweeping right now is skipped, not waited for.
            Scan::LeaseExpired { .. }
            | Scan::RetryDue { .. }
            | Scan::Unclaimed { .. }
            | Scan::TooOld { .. } => {
                let locked = format!("{statement} FOR UPDATE SKIP LOCKED");
                self.query(&locked, &values, |r| r.text(0)).await
            }
            Scan::Pending { .. } | Scan::Queued { .. } | Scan::PlacedOn { .. } => {
                self.query(statement, &values, |r| r.text(0)).await
            }
        }
    }

    async fn bump(&self, counter: Counter, by: u64) -> Result<u64> {
        let sql = "UPDATE meta SET value = value + $2 WHERE key = $1 RETURNING value";
        let value = self.query_opt(sql, &[counter.key().into(), (by as i64).into()], |r| r.int(0)).await?;
        Ok(value.ok_or_else(|| StoreError::Backend(format!("counter {} is missing", counter.key())))? as u64)
    }

    async fn load_function(&self, name: &str, lock: bool) -> Result<Option<FunctionConfig>> {
        let lock = if lock { " FOR UPDATE" } else { "" };
        let sql = format!("SELECT {FUNCTION_COLUMNS} FROM functions WHERE name = $1{lock}");
        self.query_opt(&sql, &[name.into()], read_function).await
    }

    async fn lock_name(&self, name: &str) -> Result<()> {
        self.query("SELECT pg_advisory_xact_lock(hashtext($1))", &[name.into()], |_| Ok(())).await.map(drop)
    }

    async fn announce_placed(&self, workers: &str) -> Result<()> {
        // Delivered at commit, on the channel placement rounds and `INSERT_PLACED` use.
        let sql = "SELECT pg_notify('gust_placed_' || current_schema(), $1)";
        self.query(sql, &[workers.into()], |_| Ok(())).await.map(|_| ())
    }

    async fn hold_artifact(&self, sha256: &str) -> Result<()> {
        let sql = "SELECT 1 FROM artifacts WHERE sha256 = $1 FOR KEY SHARE";
        match self.query_opt(sql, &[sha256.into()], |_| Ok(())).await? {
            Some(()) => Ok(()),
            None => {
                Err(StoreError::NotFound { kind: Kind::Artifact, name: sha256.chars().take(80).collect() })
            }
        }
    }

    async fn execute(&self, statement: &'static str, values: &[Value<'_>]) -> Result<u64> {
        self.run(statement, values).await
    }

    async fn delete_function_rows(&self, name: &str) -> Result<()> {
        for sql in [
            "DELETE FROM function_revisions WHERE function = $1",
            "DELETE FROM versions WHERE function = $1",
            "DELETE FROM aliases WHERE function = $1",
            "DELETE FROM function_urls WHERE function = $1",
            "DELETE FROM functions WHERE name = $1",
        ] {
            self.run(sql, &[name.into()]).await?;
        }
        Ok(())
    }

    async fn next_version(&self, name: &str) -> Result<u64> {
        let number = self.query_opt(NEXT_VERSION, &[name.into()], |r| r.int(0)).await?;
        Ok(number.ok_or_else(|| StoreError::NotFound { kind: Kind::Function, name: name.to_string() })?
            as u64)
    }

    async fn latest_version(&self, name: &str) -> Result<Option<Version>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 ORDER BY number DESC LIMIT 1"
        );
        self.query_opt(&sql, &[name.into()], read_version).await
    }

    async fn version_exists(&self, function: &str, number: u64) -> Result<bool> {
        let sql = "SELECT 1 FROM versions WHERE function = $1 AND number = $2";
        Ok(self.query_opt(sql, &[function.into(), number.into()], |_| Ok(())).await?.is_some())
    }

    async fn delete_version_row(&self, function: &str, number: u64) -> Result<u64> {
        let sql = "DELETE FROM versions WHERE function = $1 AND number = $2";
        self.run(sql, &[function.into(), number.into()]).await
    }

    async fn alias_routings(&self, function: &str) -> Result<Vec<String>> {
        let sql = "SELECT routing FROM aliases WHERE function = $1 FOR UPDATE";
        self.query(sql, &[function.into()], |r| r.text(0)).await
    }

    async fn alias_revision(&self, function: &str, alias: &str) -> Result<Option<u64>> {
        let sql = "SELECT revision FROM aliases WHERE function = $1 AND name = $2 FOR UPDATE";
        Ok(self.query_opt(sql, &[function.into(), alias.into()], |r| r.int(0)).await?.map(|r| r as u64))
    }

    async fn delete_alias_row(&self, function: &str, alias: &str) -> Result<()> {
        let sql = "DELETE FROM aliases WHERE function = $1 AND name = $2";
        self.run(sql, &[function.into(), alias.into()]).await.map(drop)
    }

    async fn urls(&self, lookup: &UrlLookup) -> Result<Vec<FunctionUrl>> {
        let (sql, values) = lookup.statement();
        self.query(&sql, &values, read_url).await
    }

    async fn select<T: Send>(
        &self, statement: &'static str, values: &[Value<'_>], skip_locked: bool,
        read: fn(&dyn ColumnRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        if skip_locked {
            let locked = format!("{statement} FOR UPDATE SKIP LOCKED");
            return self.query(&locked, values, read).await;
        }
        self.query(statement, values, read).await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn put_function(
        &self, name: &str, spec: FunctionSpec, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| ops::write_function(&tx, name, spec, None, expect, now).await)
    }

    async fn create_function(
        &self, name: &str, spec: FunctionSpec, code_sha256: &str, now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| ops::write_function(&tx, name, spec, Some(code_sha256), Some(0), now).await)
    }

    async fn set_function_code(
        &self, name: &str, code_sha256: &str, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| ops::set_function_code(&tx, name, code_sha256, expect, now).await)
    }

    async fn put_function_with_code(
        &self, name: &str, spec: FunctionSpec, code_sha256: &str, expect: Option<u64>, now: Millis,
    ) -> Result<FunctionConfig> {
        in_tx!(self, |tx| ops::write_function(&tx, name, spec, Some(code_sha256), expect, now).await)
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let client = self.client().await?;
        PgTx(&client).load_function(name, false).await
    }

    async fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        let client = self.client().await?;
        let sql = format!("SELECT {FUNCTION_COLUMNS} FROM functions WHERE name > $1 ORDER BY name LIMIT $2");
        PgTx(&client).query(&sql, &[after.unwrap_or("").into(), limit.into()], read_function).await
    }

    async fn delete_function(&self, name: &str, expect: Option<u64>, now: Millis) -> Result<u64> {
        in_tx!(self, |tx| ops::delete_function(&tx, name, expect, now).await)
    }

    async fn delete_version(&self, name: &str, number: u64, _now: Millis) -> Result<()> {
        in_tx!(self, |tx| ops::delete_version(&tx, name, number).await)
    }

    async fn publish_version(
        &self, name: &str, expect: Option<u64>, description: Option<&str>, now: Millis,
    ) -> Result<Version> {
        in_tx!(self, |tx| ops::publish_version(&tx, name, expect, description, now).await)
    }

    async fn get_version(&self, name: &str, number: u64) -> Result<Option<Version>> {
        let client = self.client().await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 AND number = $2");
        PgTx(&client).query_opt(&sql, &[name.into(), number.into()], read_version).await
    }

    async fn list_versions(&self, name: &str, after: Option<u64>, limit: usize) -> Result<Vec<Version>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE function = $1 AND number > $2 ORDER BY number LIMIT $3"
        );
        PgTx(&client).query(&sql, &[name.into(), after.unwrap_or(0).into(), limit.into()], read_version).await
    }

    async fn put_alias(
        &self, function: &str, alias: &str, routing: Routing, description: &str, expect: Option<u64>,
        now: Millis,
    ) -> Result<Alias> {
        in_tx!(self, |tx| ops::put_alias(&tx, function, alias, routing, description, expect, now).await)
    }

    async fn get_alias(&self, function: &str, alias: &str) -> Result<Option<Alias>> {
        let client = self.client().await?;
        let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = $1 AND name = $2");
        PgTx(&client).query_opt(&sql, &[function.into(), alias.into()], read_alias).await
    }

    async fn list_aliases(&self, function: &str) -> Result<Vec<Alias>> {
        let client = self.client().await?;
        let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = $1 ORDER BY name");
        PgTx(&client).query(&sql, &[function.into()], read_alias).await
    }

    async fn delete_alias(
        &self, function: &str, alias: &str, expect: Option<u64>, _now: Millis,
    ) -> Result<()> {
        in_tx!(self, |tx| ops::delete_alias(&tx, function, alias, expect).await)
    }

    async fn create_url(&self, url: FunctionUrl) -> Result<FunctionUrl> {
        in_tx!(self, |tx| ops::create_url(&tx, &url).await)?;
        Ok(url)
    }

    async fn update_url(
        &self, function: &str, qualifier: &str, config: UrlConfig, now: Millis,
    ) -> Result<FunctionUrl> {
        in_tx!(self, |tx| ops::update_url(&tx, function, qualifier, &config, now).await)
    }

    async fn delete_url(&self, function: &str, qualifier: &str) -> Result<()> {
        in_tx!(self, |tx| ops::delete_url(&tx, function, qualifier).await)
    }

    async fn urls(&self, lookup: UrlLookup) -> Result<Vec<FunctionUrl>> {
        let client = self.client().await?;
        let (sql, values) = lookup.statement();
        PgTx(&client).query(&sql, &values, read_url).await
    }

    async fn create_queue(&self, queue: Queue) -> Result<Queue> {
        in_tx!(self, |tx| queues::create_queue(&tx, &queue).await)
    }

    async fn get_queue(&self, name: &str) -> Result<Option<Queue>> {
        let client = self.client().await?;
        queues::get_queue(&PgTx(&client), name).await
    }

    async fn list_queues(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Queue>> {
        let client = self.client().await?;
        queues::list_queues(&PgTx(&client), prefix, after, limit).await
    }

    async fn set_queue_attributes(
        &self, name: &str, attributes: QueueAttributes, now: Millis,
    ) -> Result<Queue> {
        in_tx!(self, |tx| queues::set_queue_attributes(&tx, name, &attributes, now).await)
    }

    async fn delete_queue(&self, name: &str) -> Result<()> {
        in_tx!(self, |tx| queues::delete_queue(&tx, name).await)
    }

    async fn send_messages(
        &self, queue_id: &str, messages: Vec<NewMessage>, now: Millis, expires_at: Millis,
    ) -> Result<Vec<Sent>> {
        in_tx!(self, |tx| queues::send_messages(&tx, queue_id, &messages, now, expires_at).await)
    }

    async fn receive_messages(
        &self, queue: &Queue, max: usize, visibility_ms: i64, now: Millis,
    ) -> Result<Vec<Received>> {
        in_tx!(self, |tx| queues::receive(&tx, queue, max, visibility_ms, now, queues::new_receipt).await)
    }

    async fn delete_message(&self, queue_id: &str, message_id: &str, receipt: &str) -> Result<bool> {
        let client = self.client().await?;
        queues::delete_message(&PgTx(&client), queue_id, message_id, receipt).await
    }

    async fn delete_messages(&self, queue_id: &str, messages: Vec<(String, String)>) -> Result<Vec<bool>> {
        in_tx!(self, |tx| queues::delete_messages(&tx, queue_id, &messages).await)
    }

    async fn change_visibility(
        &self, queue_id: &str, message_id: &str, receipt: &str, visible_at: Millis, now: Millis,
    ) -> Result<bool> {
        let client = self.client().await?;
        queues::change_visibility(&PgTx(&client), queue_id, message_id, receipt, visible_at, now).await
    }

    async fn purge_queue(&self, queue_id: &str) -> Result<u64> {
        let client = self.client().await?;
        queues::purge(&PgTx(&client), queue_id).await
    }

    async fn queue_counts(&self, queue_id: &str, now: Millis) -> Result<QueueCounts> {
        let client = self.client().await?;
        queues::counts(&PgTx(&client), queue_id, now).await
    }

    async fn move_back(
        &self, dlq_id: &str, destination: Option<&str>, limit: usize, now: Millis,
    ) -> Result<u64> {
        in_tx!(self, |tx| queues::move_back(&tx, dlq_id, destination, limit, now).await)
    }

    async fn record_move_task(&self, task: queues::MoveTask) -> Result<()> {
        let client = self.client().await?;
        queues::record_move_task(&PgTx(&client), &task).await
    }

    async fn move_tasks(&self, source: &str, limit: usize) -> Result<Vec<queues::MoveTask>> {
        let client = self.client().await?;
        queues::move_tasks(&PgTx(&client), source, limit).await
    }

    async fn put_mapping(&self, mapping: EventSourceMapping) -> Result<()> {
        let client = self.client().await?;
        queues::put_mapping(&PgTx(&client), &mapping).await
    }

    async fn get_mapping(&self, uuid: &str) -> Result<Option<EventSourceMapping>> {
        let client = self.client().await?;
        queues::get_mapping(&PgTx(&client), uuid).await
    }

    async fn mappings(&self) -> Result<Vec<EventSourceMapping>> {
        let client = self.client().await?;
        queues::mappings(&PgTx(&client)).await
    }

    async fn delete_mapping(&self, uuid: &str) -> Result<bool> {
        let client = self.client().await?;
        queues::delete_mapping(&PgTx(&client), uuid).await
    }

    async fn create_schedule_group(&self, name: &str, now: Millis, max: u64) -> Result<ScheduleGroup> {
        in_tx!(self, |tx| schedules::create_group(&tx, name, now, max).await)
    }

    async fn get_schedule_group(&self, name: &str) -> Result<Option<ScheduleGroup>> {
        let client = self.client().await?;
        schedules::get_group(&PgTx(&client), name).await
    }

    async fn list_schedule_groups(
        &self, prefix: &str, after: Option<&str>, limit: usize,
    ) -> Result<Vec<ScheduleGroup>> {
        let client = self.client().await?;
        schedules::list_groups(&PgTx(&client), prefix, after, limit).await
    }

    async fn delete_schedule_group(&self, name: &str) -> Result<()> {
        in_tx!(self, |tx| schedules::delete_group(&tx, name).await)
    }

    async fn put_schedule(&self, schedule: Schedule, create: bool, now: Millis, max: u64) -> Result<()> {
        in_tx!(self, |tx| schedules::put_schedule(&tx, &schedule, create, now, max).await)
    }

    async fn get_schedule(&self, group: &str, name: &str) -> Result<Option<StoredSchedule>> {
        let client = self.client().await?;
        schedules::get_schedule(&PgTx(&client), group, name).await
    }

    async fn list_schedules(
        &self, group: Option<&str>, prefix: &str, after: Option<(String, String)>, limit: usize,
    ) -> Result<Vec<StoredSchedule>> {
        let client = self.client().await?;
        let after = after.as_ref().map(|(g, n)| (g.as_str(), n.as_str()));
        schedules::list_schedules(&PgTx(&client), group, prefix, after, limit).await
    }

    async fn delete_schedule(&self, group: &str, name: &str) -> Result<()> {
        in_tx!(self, |tx| schedules::delete_schedule(&tx, group, name).await)
    }

    async fn claim_due_schedules(&self, now: Millis, limit: usize) -> Result<usize> {
        in_tx!(self, |tx| schedules::claim_due(&tx, now, limit).await)
    }

    async fn take_due_firings(
        &self, now: Millis, lease_ms: i64, limit: usize,
    ) -> Result<Vec<(Firing, Schedule)>> {
        in_tx!(self, |tx| schedules::take_due_firings(&tx, now, lease_ms, limit).await)
    }

    async fn settle_firing(&self, firing: Firing, delivery: Delivery, now: Millis) -> Result<bool> {
        in_tx!(self, |tx| schedules::settle_firing(&tx, &firing, &delivery, now).await)
    }

    async fn schedule_history(
        &self, group: &str, name: &str, before: Option<Millis>, limit: usize,
    ) -> Result<Vec<Firing>> {
        let client = self.client().await?;
        schedules::history(&PgTx(&client), group, name, before, limit).await
    }

    async fn expire_messages(&self, now: Millis, limit: usize) -> Result<u64> {
        let client = self.client().await?;
        queues::expire(&PgTx(&client), now, limit).await
    }

    async fn any_visible(&self, queue_id: &str, now: Millis) -> Result<bool> {
        let client = self.client().await?;
        queues::any_visible(&PgTx(&client), queue_id, now).await
    }

    async fn get_deployment(&self, function: &str, resolved: Resolved) -> Result<Option<Deployment>> {
        let client = self.client().await?;
        let (sql, key) = rows::deployment_statement(resolved);
        let read = |r: &dyn ColumnRow| Ok((r.text(0)?, r.opt_text(1)?));
        let row = PgTx(&client).query_opt(sql, &[function.into(), key.into()], read).await?;
        rows::deployment(function.to_string(), resolved, row)
    }

    async fn snapshot_version(&self) -> Result<u64> {
        let client = self.client().await?;
        let sql = "SELECT value FROM meta WHERE key = 'snapshot_version'";
        Ok(PgTx(&client).query_opt(sql, &[], |r| r.int(0)).await?.unwrap_or(0) as u64)
    }

    async fn put_artifact(&self, bytes: Bytes) -> Result<String> {
        let sha = sha256_hex(&bytes);
        let client = self.client().await?;
        // Stored again: the collection grace starts over (the upload's config write follows).
        let sql = "INSERT INTO artifacts (sha256, bytes, stored_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO UPDATE SET stored_at = GREATEST(artifacts.stored_at, EXCLUDED.stored_at)";
        PgTx(&client).run(sql, &[sha.as_str().into(), bytes.as_ref().into(), unix_millis().into()]).await?;
        Ok(sha)
    }

    async fn get_artifact(&self, sha256: &str) -> Result<Bytes> {
        let client = self.client().await?;
        let sql = "SELECT bytes FROM artifacts WHERE sha256 = $1";
        let bytes = PgTx(&client).query_opt(sql, &[sha256.into()], |r| r.bytes(0)).await?;
        let bytes = bytes.ok_or_else(|| StoreError::NotFound {
            kind: Kind::Artifact,
            name: sha256.chars().take(80).collect(),
        })?;
        if sha256_hex(&bytes) != sha256 {
            return Err(StoreError::Corrupt(sha256.to_string()));
        }
        Ok(Bytes::from(bytes))
    }

    async fn collect_code(&self, older_than: Millis, limit: usize) -> Result<CollectedCode> {
        in_tx!(self, |tx| async {
            let ours: bool = pg_query_one(
                tx.0,
                "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                params![&CODE_GC_LOCK],
            )
            .await
            .map_err(pg_err)?
            .get(0);
            if !ours {
                return Ok(CollectedCode::default());
            }
            let revisions = prune_revisions(tx.0, older_than).await?;
            // Lock the candidates, skipping any a deploy holds (`hold_artifact`); then decide
            // again in a statement that starts after the locks were granted, so it sees every
            // reference committed before them. A deploy that comes later waits for this commit
            // and finds the artifact gone.
            let candidates: Vec<String> = pg_query(
                tx.0,
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
                tx.0,
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
        PgTx(&client).query(gc::REFERENCED_SQL, &[], |r| r.text(0)).await
    }

    async fn insert_invocations(&self, batch: Vec<NewInvocation>) -> Result<Vec<Result<Inserted>>> {
        Ok(if batch.len() == 1 {
            // The ingest hot path: one autocommitted statement (two on a key conflict).
            let client = self.client().await?;
            let new = batch.into_iter().next().expect("one entry");
            vec![ops::insert_invocation(&PgTx(&client), new).await?]
        } else {
            in_tx!(self, |tx| ops::insert_invocations(&tx, batch).await)?
        })
    }

    async fn record_finished(&self, records: Vec<InvocationRecord>) -> Result<()> {
        in_tx!(self, |tx| ops::record_finished(&tx, &records).await)
    }

    async fn claim_queued(
        &self, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Claimed>> {
        // One statement: its WHERE clause is `apply`'s Claim rule for QUEUED rows (not older
        // than their maximum age; too-old rows are left to the sweeper, which expires them).
        claim_where(self, "state = 'QUEUED'", None, worker, max, lease_expires_at, now).await
    }

    async fn claim(
        &self, id: &InvocationId, worker: &WorkerId, lease_expires_at: Millis, now: Millis,
    ) -> Result<Claimed> {
        // In a block of its own: a refusal must reach `in_tx!`'s rollback, not return past it.
        in_tx!(self, |tx| async { Ok(ops::claim(&tx, &id.0, worker, lease_expires_at, now).await??) }.await)
    }

    async fn renew_leases(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        in_tx!(self, |tx| ops::renew_leases(&tx, worker, attempts, lease_expires_at, now).await)
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
        in_tx!(self, |tx| ops::recover(&tx, now).await)
    }

    async fn get_invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>> {
        let client = self.client().await?;
        PgTx(&client).load_invocation(&id.0).await
    }

    async fn list_invocations(
        &self, function: &str, filter: InvocationFilter,
    ) -> Result<Vec<InvocationRecord>> {
        let client = self.client().await?;
        let (sql, values) = rows::invocation_page(function, &filter);
        PgTx(&client).query(&sql, &values, read_record).await
    }

    async fn count_by_state(&self) -> Result<Vec<(StateName, u64)>> {
        let client = self.client().await?;
        PgTx(&client).query(rows::COUNT_BY_STATE, &[], rows::read_state_count).await
    }

    async fn prune_invocations(&self, finished_before: Millis, limit: usize) -> Result<Pruned> {
        let client = self.client().await?;
        // Rows another server is pruning right now are skipped, not waited for; what went is
        // taken off the ended totals in the same statement.
        let sql = format!(
            "WITH gone AS (DELETE FROM invocations WHERE id IN (SELECT id FROM invocations \
             WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2 \
             FOR UPDATE SKIP LOCKED) RETURNING ({RECORD_BYTES})::BIGINT AS bytes), \
             counted AS (INSERT INTO ended_totals (records, bytes) \
             SELECT -COUNT(*), -COALESCE(SUM(bytes), 0) FROM gone HAVING COUNT(*) > 0) \
             SELECT bytes FROM gone"
        );
        let sizes = PgTx(&client).query(&sql, &[finished_before.into(), limit.into()], |r| r.int(0)).await?;
        Ok(Pruned { invocations: sizes.len() as u64, bytes: sizes.iter().map(|b| (*b).max(0) as u64).sum() })
    }

    async fn ended_invocations(&self) -> Result<Pruned> {
        let client = self.client().await?;
        // Folded in one statement: exactly the rows it deletes are summed into the one it
        // adds (a row written meanwhile stays, and still counts).
        let fold = "WITH gone AS (DELETE FROM ended_totals RETURNING records, bytes) \
             INSERT INTO ended_totals (records, bytes) \
             SELECT COALESCE(SUM(records), 0), COALESCE(SUM(bytes), 0) FROM gone HAVING COUNT(*) > 0";
        // Best effort: the answer stands without it (a full disk may refuse it).
        if let Err(e) = PgTx(&client).run(fold, &[]).await {
            tracing::warn!(error = %e, "postgres: folding the ended totals failed; the next read tries again");
        }
        let read = |r: &dyn ColumnRow| {
            Ok(Pruned { invocations: r.int(0)?.max(0) as u64, bytes: r.int(1)?.max(0) as u64 })
        };
        Ok(PgTx(&client).query_opt(rows::ENDED_TOTALS, &[], read).await?.unwrap_or_default())
    }

    async fn async_backlog(&self) -> Result<Vec<(String, u64)>> {
        let client = self.client().await?;
        PgTx(&client).query(rows::ASYNC_BACKLOG, &[], |r| Ok((r.text(0)?, r.int(1)? as u64))).await
    }

    async fn counters(&self) -> Result<Counters> {
        let client = self.client().await?;
        rows::counters(PgTx(&client).query(rows::COUNTERS, &[], |r| Ok((r.text(0)?, r.int(1)?))).await?)
    }

    fn placement_events(&self) -> Option<tokio::sync::broadcast::Receiver<WorkerId>> {
        Some(self.placed.subscribe())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn acquire_slot(
        &self, function: &str, limit: u32, holder: &str, expires_at: Millis, now: Millis,
    ) -> Result<Option<u32>> {
        let client = self.client().await?;
        let values: [Value<'_>; 5] =
            [function.into(), u64::from(limit).into(), holder.into(), expires_at.into(), now.into()];
        // Two acquirers may pick the same free slot: the loser's conditional upsert takes
        // nothing, and it looks again (the slots it saw held stay held).
        for _ in 0..SLOT_ATTEMPTS {
            let free: Option<i64> =
                PgTx(&client).query_opt(ACQUIRE_SLOT, &values, |r| r.opt_int(0)).await?.flatten();
            match free {
                Some(slot) => return Ok(Some(slot as u32)),
                None => {
                    let held =
                        "SELECT count(*) FROM concurrency_slots WHERE function = $1 AND expires_at > $2";
                    let n =
                        PgTx(&client).query_opt(held, &[function.into(), now.into()], |r| r.int(0)).await?;
                    if n.unwrap_or(0) >= i64::from(limit) {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    async fn release_slot(&self, function: &str, slot: u32, holder: &str) -> Result<()> {
        let client = self.client().await?;
        let sql = "DELETE FROM concurrency_slots WHERE function = $1 AND slot = $2 AND holder = $3";
        PgTx(&client).run(sql, &[function.into(), u64::from(slot).into(), holder.into()]).await.map(drop)
    }

    async fn renew_slots(&self, holder: &str, expires_at: Millis) -> Result<u64> {
        let client = self.client().await?;
        let sql = "UPDATE concurrency_slots SET expires_at = $2 WHERE holder = $1";
        PgTx(&client).run(sql, &[holder.into(), expires_at.into()]).await
    }

    fn completion_events(&self) -> Option<tokio::sync::broadcast::Receiver<InvocationId>> {
        Some(self.completed.subscribe())
    }

    async fn cluster_secret(&self, name: &str, candidate: &str) -> Result<String> {
        let client = self.client().await?;
        let tx = PgTx(&client);
        tx.run(rows::INSERT_CLUSTER_SECRET, &[name.into(), candidate.into()]).await?;
        let mut found = tx.query(rows::CLUSTER_SECRET, &[name.into()], |r| r.text(0)).await?;
        found.pop().ok_or_else(|| StoreError::Backend(format!("cluster secret {name} vanished")))
    }

    async fn put_worker(&self, state: WorkerState) -> Result<bool> {
        let client = self.client().await?;
        let json = serde_json::to_string(&state).map_err(json_err)?;
        Ok(PgTx(&client).run(rows::PUT_WORKER, &rows::worker_values(&state, &json)).await? == 1)
    }

    async fn list_workers(&self, since: Millis) -> Result<Vec<WorkerState>> {
        let client = self.client().await?;
        Ok(rows::workers_by_id(
            PgTx(&client).query(rows::LIST_WORKERS, &[since.into()], rows::read_worker).await?,
        ))
    }

    async fn queued(&self, limit: usize) -> Result<Vec<(InvocationId, String, Resolved)>> {
        let client = self.client().await?;
        PgTx(&client).query(rows::QUEUED, &[limit.into()], rows::read_queued).await
    }

    async fn placed_counts(&self) -> Result<Vec<(WorkerId, u64)>> {
        let client = self.client().await?;
        let read = |r: &dyn ColumnRow| Ok((WorkerId(r.text(0)?), r.int(1)? as u64));
        PgTx(&client).query(rows::PLACED_COUNTS, &[], read).await
    }

    async fn place(
        &self, placements: Vec<(InvocationId, WorkerId)>, now: Millis,
    ) -> Result<Vec<Result<(), Rejected>>> {
        in_tx!(self, |tx| async {
            let workers: Vec<WorkerId> = placements.iter().map(|(_, w)| w.clone()).collect();
            let results = ops::place(&tx, placements, now).await?;
            // Announced at commit, so the server each worker polls wakes it at once.
            let mut placed: Vec<&str> =
                workers.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(w, _)| w.0.as_str()).collect();
            placed.sort_unstable();
            placed.dedup();
            notify(tx.0, &self.channels.placed, placed.into_iter()).await.map_err(pg_err)?;
            Ok(results)
        }
        .await)
    }

    async fn claim_placed(
        &self, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
    ) -> Result<Vec<Claimed>> {
        let filter = "state = 'PLACED' AND worker = $5";
        claim_where(self, filter, Some(worker), worker, max, lease_expires_at, now).await
    }

    async fn assigned_deployments(&self, worker: &WorkerId) -> Result<Vec<(String, Resolved)>> {
        let client = self.client().await?;
        PgTx(&client).query(rows::ASSIGNED, &[worker.0.as_str().into()], rows::read_assigned).await
    }

    async fn create_worker_credential(&self, credential: WorkerCredential) -> Result<()> {
        let client = self.client().await?;
        let created =
            PgTx(&client).run(rows::INSERT_CREDENTIAL, &rows::credential_values(&credential)).await?;
        rows::created_credential(created, &credential)
    }

    async fn find_worker_credential(&self, secret_sha256: &str) -> Result<Option<FoundCredential>> {
        let client = self.client().await?;
        let sql = format!("{CREDENTIAL_SELECT} WHERE k.secret_sha256 = $1");
        PgTx(&client).query_opt(&sql, &[secret_sha256.into()], read_credential).await
    }

    async fn list_worker_credentials(&self) -> Result<Vec<FoundCredential>> {
        let client = self.client().await?;
        PgTx(&client).query(&format!("{CREDENTIAL_SELECT} ORDER BY k.worker"), &[], read_credential).await
    }

    async fn delete_worker_credential(&self, worker: &WorkerId) -> Result<bool> {
        let client = self.client().await?;
        Ok(PgTx(&client).run(rows::DELETE_CREDENTIAL, &[worker.0.as_str().into()]).await? == 1)
    }

    async fn prune_enrolled_credentials(&self, silent_since: Millis) -> Result<u64> {
        let client = self.client().await?;
        let sql = "DELETE FROM worker_credentials k WHERE origin = 'enrolled' \
             AND GREATEST(created_at, COALESCE((SELECT last_heartbeat FROM workers w \
             WHERE w.id = k.worker), 0)) < $1";
        PgTx(&client).run(sql, &[silent_since.into()]).await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<()> {
        let row = KeyRow::seal(&key)?;
        let client = self.client().await?;
        rows::created_key(PgTx(&client).run(rows::INSERT_KEY, &key_values(&row)).await?, &row)
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let client = self.client().await?;
        PgTx(&client).query_opt(rows::GET_KEY, &[id.into()], read_key).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let client = self.client().await?;
        PgTx(&client).query(rows::LIST_KEYS, &[], read_key).await
    }

    async fn revoke_api_key(&self, name: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(PgTx(&client).run(rows::REVOKE_KEY, &[name.into()]).await? == 1)
    }

    async fn touch_api_key(&self, id: &str, now: Millis) -> Result<()> {
        let client = self.client().await?;
        PgTx(&client).run(rows::TOUCH_KEY, &[id.into(), now.into()]).await.map(drop)
    }
}

/// Claims up to `max` rows matching `filter` in one statement: a new attempt epoch and a
/// lease each, rows locked by other claimers skipped.
async fn claim_where(
    store: &PgStore, filter: &str, placed_on: Option<&WorkerId>, worker: &WorkerId, max: usize,
    lease_expires_at: Millis, now: Millis,
) -> Result<Vec<Claimed>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let client = store.client().await?;
    let sql = format!(
        "UPDATE invocations SET state = 'RUNNING', worker = $1, due_at = $2, attempt_epoch = attempt_epoch + 1, \
         updated_at = $3, history = CASE WHEN length(COALESCE(history, '')) >= {max_history} THEN history \
         ELSE COALESCE(history, '') || json_build_object('at', $3::bigint, 'event', 'started', \
         'epoch', attempt_epoch + 1, 'worker', $1::text)::text || chr(10) END \
         WHERE id IN (SELECT id FROM invocations WHERE {filter} AND (expires_at IS NULL OR expires_at >= $3) \
         ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {INVOCATION_COLUMNS}",
        max_history = rows::MAX_HISTORY_BYTES
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
            let rec = read_record(&PgRow(r))?;
            Ok(Claimed { epoch: rec.lifecycle.attempt_epoch, request: rec.request, lease_expires_at })
        })
        .collect::<Result<_>>()?;
    claimed.sort_by(|a, b| a.request.id.cmp(&b.request.id));
    Ok(claimed)
}

#[cfg(test)]
mod disk_full_tests {
    use super::by_sqlstate;
    use gust_store::StoreError;
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
