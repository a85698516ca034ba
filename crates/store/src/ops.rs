//! The store's algorithms, each written once over [`Tx`]: the few primitives a backend offers
//! inside one of its transactions (load a row guarded, write it conditionally, insert, count,
//! scan ids). A backend crate holds its SQL dialect, its connection and transaction handling
//! and its deliberate fast paths; it implements [`Tx`] and calls these, and re-implements none.
//!
//! The lifecycle rules are [`gust_core::apply`]'s alone: [`transition`] loads what `apply`
//! decides on, asks it, and writes its answer with a conditional UPDATE on
//! `(state, attempt_epoch)`, so the write is refused if the row moved meanwhile.
//!
//! The primitives are `async` for PostgreSQL, which awaits the network; the SQLite backend runs
//! the same algorithms in its writer thread, where every primitive is a blocking call that is
//! ready at once (its futures never wait), so it drives them without a runtime.
//!
//! Must not: know a driver or a dialect, or read a clock (time is an argument).

use gust_core::limits::{DEFAULT_PLACEMENT_TIMEOUT_MS, RECOVERY_BATCH};
use gust_core::{
    apply, Alias, ErrorKind, Event, FunctionConfig, FunctionSpec, FunctionUrl, InvocationId,
    InvocationRecord, Lifecycle, Millis, Rejected, Routing, UrlConfig, Version, WorkerId,
};

use crate::rows::{
    destination_request, may_owe_destination, refuse_if_routed, same_but_description, system_error,
    version_spec, Guarded, GuardedWrite, InsertInvocation, Outcome, Value,
};
use crate::{Claimed, Completion, Inserted, Kind, NewInvocation, Recovered, Result, StoreError};

/// Which ids a scan of invocations answers (the backend's SQL says how; PostgreSQL also locks
/// the rows it answers, skipping rows another server holds).
#[derive(Debug, Clone, Copy)]
pub enum Scan<'a> {
    /// RUNNING, lease expired at `now`, oldest lease first.
    LeaseExpired { now: Millis, limit: usize },
    /// RETRY_WAIT, due at `now`, oldest first.
    RetryDue { now: Millis, limit: usize },
    /// PLACED before `placed_before`, oldest first.
    Unclaimed { placed_before: Millis, limit: usize },
    /// Waiting (QUEUED, PLACED, RETRY_WAIT) past their maximum age at `now`, oldest first.
    TooOld { now: Millis, limit: usize },
    /// Not yet ended (QUEUED, PLACED, RUNNING, RETRY_WAIT), of one function.
    Pending { function: &'a str },
    /// QUEUED, oldest first.
    Queued { limit: usize },
    /// PLACED on `worker`, oldest first.
    PlacedOn { worker: &'a WorkerId, limit: usize },
}

impl Scan<'_> {
    /// Its statement (with `$N` placeholders; PostgreSQL adds its row locks) and parameters.
    pub fn statement(&self) -> (&'static str, Vec<Value<'_>>) {
        match *self {
            Scan::LeaseExpired { now, limit } => (
                "SELECT id FROM invocations WHERE state = 'RUNNING' AND due_at <= $1 ORDER BY due_at LIMIT $2",
                vec![now.into(), limit.into()],
            ),
            Scan::RetryDue { now, limit } => (
                "SELECT id FROM invocations WHERE state = 'RETRY_WAIT' AND due_at <= $1 ORDER BY due_at LIMIT $2",
                vec![now.into(), limit.into()],
            ),
            Scan::Unclaimed { placed_before, limit } => (
                "SELECT id FROM invocations WHERE state = 'PLACED' AND due_at <= $1 ORDER BY due_at LIMIT $2",
                vec![placed_before.into(), limit.into()],
            ),
            Scan::TooOld { now, limit } => (
                "SELECT id FROM invocations WHERE expires_at < $1 \
                 AND state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') ORDER BY expires_at LIMIT $2",
                vec![now.into(), limit.into()],
            ),
            Scan::Pending { function } => (
                "SELECT id FROM invocations WHERE function = $1 \
                 AND state IN ('QUEUED', 'PLACED', 'RUNNING', 'RETRY_WAIT') ORDER BY id",
                vec![function.into()],
            ),
            Scan::Queued { limit } => {
                ("SELECT id FROM invocations WHERE state = 'QUEUED' ORDER BY id LIMIT $1", vec![limit.into()])
            }
            Scan::PlacedOn { worker, limit } => (
                "SELECT id FROM invocations WHERE state = 'PLACED' AND worker = $1 ORDER BY id LIMIT $2",
                vec![worker.0.as_str().into(), limit.into()],
            ),
        }
    }
}

/// A counter kept with the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Bumped by every control-plane write; revisions are taken from it.
    SnapshotVersion,
    FencedCompletions,
    FencedRenewals,
}

impl Counter {
    /// Its key in the `meta` table.
    pub fn key(self) -> &'static str {
        match self {
            Counter::SnapshotVersion => "snapshot_version",
            Counter::FencedCompletions => "fenced_completions",
            Counter::FencedRenewals => "fenced_renewals",
        }
    }
}

/// Which function URLs a lookup answers.
#[derive(Debug, Clone)]
pub enum UrlLookup {
    /// The URL with this id.
    Id(String),
    /// The URL of a function's `$LATEST` or of one of its aliases.
    Target { function: String, qualifier: String },
    /// Every URL of a function, by qualifier.
    Function(String),
    /// Every URL (a server's cache of them, reloaded when the control plane changes).
    All,
}

impl UrlLookup {
    /// Its statement and parameters.
    pub fn statement(&self) -> (String, Vec<Value<'_>>) {
        let cols = crate::rows::URL_COLUMNS;
        match self {
            UrlLookup::Id(id) => {
                (format!("SELECT {cols} FROM function_urls WHERE url_id = $1"), vec![id.into()])
            }
            UrlLookup::Target { function, qualifier } => (
                format!("SELECT {cols} FROM function_urls WHERE function = $1 AND qualifier = $2"),
                vec![function.into(), qualifier.into()],
            ),
            UrlLookup::Function(function) => (
                format!("SELECT {cols} FROM function_urls WHERE function = $1 ORDER BY qualifier"),
                vec![function.into()],
            ),
            UrlLookup::All => (format!("SELECT {cols} FROM function_urls"), vec![]),
        }
    }
}

/// The primitives of one backend transaction. Reads that guard a write lock what they read
/// where the backend locks rows (PostgreSQL `FOR UPDATE`; SQLite's writer holds the database's
/// write lock for the whole transaction).
// The algorithms are called with concrete backends only, where the futures' auto traits (Send,
// for PostgreSQL) are known; no caller needs a bound on the trait.
#[allow(async_fn_in_trait)]
pub trait Tx {
    /// What a transition decides on, locked; `None` if there is no such invocation.
    async fn load_guarded(&self, id: &str) -> Result<Option<Guarded>>;
    /// [`crate::rows::UPDATE_GUARDED`]; how many rows changed (0: the guard failed).
    async fn update_guarded(&self, write: &GuardedWrite<'_>) -> Result<u64>;
    async fn load_invocation(&self, id: &str) -> Result<Option<InvocationRecord>>;
    /// Inserts a record; `false` if its id or idempotency key exists (nothing written).
    async fn insert_invocation(&self, rec: &InvocationRecord) -> Result<bool>;
    /// The invocation holding idempotency `key` for `function`.
    async fn id_by_key(&self, function: &str, key: &str) -> Result<Option<String>>;
    async fn ids(&self, scan: Scan<'_>) -> Result<Vec<String>>;
    /// Adds `by` to `counter`; its new value.
    async fn bump(&self, counter: Counter, by: u64) -> Result<u64>;

    /// A function, locked against other writers of it if `lock`.
    async fn load_function(&self, name: &str, lock: bool) -> Result<Option<FunctionConfig>>;
    /// Serialises the writers of a function name, including its creation (a row lock cannot:
    /// the row may not exist yet). A no-op where the transaction holds a global write lock.
    async fn lock_name(&self, name: &str) -> Result<()>;
    /// Holds artifact `sha256` until the transaction ends (a code collection either waits for
    /// this reference or deleted it first); `NotFound` if it is not stored. Cheap: never
    /// reads or hashes the bytes.
    async fn hold_artifact(&self, sha256: &str) -> Result<()>;
    /// Announces, at commit, that invocations were placed on `workers` (each id followed by a
    /// comma) to every server sharing the store; a no-op for a store no other server shares.
    async fn announce_placed(&self, workers: &str) -> Result<()>;
    /// Runs one statement of [`crate::rows`] (`UPSERT_FUNCTION`, `SET_CODE`, ...) with its
    /// parameters; how many rows changed.
    async fn execute(&self, statement: &'static str, values: &[crate::rows::Value<'_>]) -> Result<u64>;
    /// Deletes a function's row with its revisions, versions and aliases.
    async fn delete_function_rows(&self, name: &str) -> Result<()>;
    /// Takes a function's next version number.
    async fn next_version(&self, name: &str) -> Result<u64>;
    async fn latest_version(&self, name: &str) -> Result<Option<Version>>;
    async fn version_exists(&self, function: &str, number: u64) -> Result<bool>;
    /// Deletes a version; how many rows went.
    async fn delete_version_row(&self, function: &str, number: u64) -> Result<u64>;
    /// The stored routing (JSON) of every alias of a function, locked.
    async fn alias_routings(&self, function: &str) -> Result<Vec<String>>;
    /// An alias's revision, locked.
    async fn alias_revision(&self, function: &str, alias: &str) -> Result<Option<u64>>;
    async fn delete_alias_row(&self, function: &str, alias: &str) -> Result<()>;
    /// The function URLs `lookup` answers.
    async fn urls(&self, lookup: &UrlLookup) -> Result<Vec<FunctionUrl>>;
    /// The rows of `statement` (with `$N` placeholders), each read by `read`. With
    /// `skip_locked`, PostgreSQL locks the rows it answers and skips rows another
    /// transaction holds (SQLite's writer holds the whole database already).
    async fn select<T: Send>(
        &self, statement: &'static str, values: &[Value<'_>], skip_locked: bool,
        read: fn(&dyn crate::rows::ColumnRow) -> Result<T>,
    ) -> Result<Vec<T>>;
}

// ---- invocations -----------------------------------------------------------------------------

/// Applies `event` to invocation `id`: loads it guarded, asks [`apply`], writes the answer
/// conditionally, and writes the destination invocation a finish owes in the same transaction.
/// Returns the new lifecycle, or the state machine's refusal (nothing written).
pub async fn transition(
    tx: &impl Tx, id: &str, event: &Event, outcome: Outcome<'_>, now: Millis,
) -> Result<Result<Lifecycle, Rejected>> {
    let g = tx
        .load_guarded(id)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Invocation, name: id.to_string() })?;
    let next = match apply(&g.ctx, &g.lifecycle, event, now) {
        Ok(next) => next,
        Err(rejected) => return Ok(Err(rejected)),
    };
    // An attempt starts after its invocation came and before it is reported.
    let report = outcome.report.map(|r| gust_core::Report {
        started_at: r.started_at.clamp(g.ctx.received_at, now.max(g.ctx.received_at)),
        ..*r
    });
    let outcome = Outcome { report: report.as_ref(), ..outcome };
    let write = GuardedWrite::new(id, &g.lifecycle, &next, event, outcome, now)?;
    if tx.update_guarded(&write).await? != 1 {
        return Err(StoreError::Backend(format!("invocation {id} changed under its guard")));
    }
    if next.state.is_terminal() && !g.lifecycle.state.is_terminal() {
        count_ended(tx, id).await?;
    }
    if may_owe_destination(&g.ctx, &next) {
        deliver_destination(tx, id, now).await?;
    }
    Ok(Ok(next))
}

/// Writes what a just-finished invocation owes, in the same transaction: the destination
/// invocation (a function) or message (a queue) with Lambda's invocation record, and, when it
/// failed for good, its event to the function's dead-letter queue. A destination that no
/// longer exists gets nothing.
async fn deliver_destination(tx: &impl Tx, id: &str, now: Millis) -> Result<()> {
    use gust_core::function::Destination;
    use gust_core::queue::{MessageAttribute, NewMessage};
    let Some(rec) = tx.load_invocation(id).await? else { return Ok(()) };
    let message = |body: String, attributes| NewMessage {
        id: uuid::Uuid::new_v4().to_string(),
        body,
        attributes,
        visible_at: now,
        fifo: None,
    };
    if let Some((target, payload)) = gust_core::lambda::destination(&rec, now) {
        match Destination::of(&target) {
            Some(Destination::Queue(queue)) => {
                let body = String::from_utf8_lossy(&payload).into_owned();
                crate::queues::send_to(tx, queue, &message(body, Default::default()), now).await?;
            }
            Some(Destination::Function(function)) => {
                if let Some(f) = tx.load_function(function, false).await? {
                    if let Some(new) = destination_request(f, payload, now) {
                        tx.insert_invocation(&new).await?;
                    }
                }
            }
            None => {}
        }
    }
    let failed = matches!(rec.lifecycle.state, gust_core::State::Failed | gust_core::State::Expired);
    if let (true, Some(dlq)) = (failed, &rec.request.retry.dead_letter_queue) {
        // As Lambda's: the event as it came, with why it failed.
        let attribute = |data_type: &str, value: String| MessageAttribute {
            data_type: data_type.into(),
            string_value: Some(value),
            binary_value: None,
        };
        let error = rec.error.as_ref().map(|e| e.error_message.clone()).unwrap_or_default();
        let attributes = [
            ("RequestID".to_string(), attribute("String", rec.request.id.0.clone())),
            ("ErrorCode".to_string(), attribute("Number", "200".into())),
            ("ErrorMessage".to_string(), attribute("String", error.chars().take(1024).collect())),
        ]
        .into();
        let body = String::from_utf8_lossy(&rec.request.payload).into_owned();
        crate::queues::send_to(tx, dlq, &message(body, attributes), now).await?;
    }
    Ok(())
}

/// Adds ended record `id` (it just ended, or was written ended) to the ended totals, in the
/// transaction that ended or wrote it.
async fn count_ended(tx: &impl Tx, id: &str) -> Result<()> {
    tx.execute(crate::rows::COUNT_ENDED, &[id.into()]).await.map(drop)
}

/// Expires a waiting event past its maximum age; whether it did.
pub async fn expire(tx: &impl Tx, id: &str, now: Millis) -> Result<bool> {
    let error =
        system_error(ErrorKind::Expired, "the event exceeded its maximum age before it could run".into());
    let outcome = Outcome { error: Some(&error), ..Outcome::default() };
    Ok(transition(tx, id, &Event::Expire, outcome, now).await?.is_ok())
}

/// Rows per statement of [`record_finished`] and [`insert_invocations`], largest first; what
/// is left goes one by one.
const RECORD_CHUNKS: [usize; 2] = [64, 8];

/// Most bytes of one placement announcement (PostgreSQL refuses a NOTIFY payload of 8,000).
const ANNOUNCEMENT_BYTES: usize = 4_000;

/// `rows` cut into chunks of [`RECORD_CHUNKS`]' sizes, largest first, each with the statement
/// of its size (`statements`, one per size); and what is left, fewer rows than the smallest.
fn in_chunks<'a, T>(
    rows: &'a [T], statements: &'static [String; 2],
) -> (Vec<(&'static str, &'a [T])>, &'a [T]) {
    let mut chunked = Vec::new();
    let mut rest = rows;
    for (size, statement) in RECORD_CHUNKS.iter().zip(statements) {
        let mut chunks = rest.chunks_exact(*size);
        chunked.extend((&mut chunks).map(|chunk| (statement.as_str(), chunk)));
        rest = chunks.remainder();
    }
    (chunked, rest)
}

/// Writes the records of finished invocations (written behind their answer) a chunk of rows
/// per statement: one plan and, on PostgreSQL, one round trip per chunk, not per row. A record
/// already stored is left as it is. What the batch adds to the ended totals is one row.
pub async fn record_finished(tx: &impl Tx, records: &[InvocationRecord]) -> Result<()> {
    use crate::rows::RETURNING_ENDED_BYTES;
    static STATEMENTS: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        RECORD_CHUNKS.map(|rows| format!("{}{RETURNING_ENDED_BYTES}", crate::rows::insert_invocations(rows)))
    });
    static ONE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{}{RETURNING_ENDED_BYTES}", crate::rows::insert_invocations(1)));
    let (chunks, rest) = in_chunks(records, &STATEMENTS);
    let chunks = chunks.into_iter().chain(rest.chunks(1).map(|one| (ONE.as_str(), one)));
    let (mut ended, mut bytes) = (0i64, 0i64);
    for (statement, chunk) in chunks {
        let inserts = chunk.iter().map(InsertInvocation::new).collect::<Result<Vec<_>>>()?;
        let values: Vec<Value<'_>> = inserts.iter().flat_map(InsertInvocation::values).collect();
        for written in tx.select(statement, &values, false, |r| r.opt_int(0)).await?.into_iter().flatten() {
            ended += 1;
            bytes += written;
        }
    }
    if ended > 0 {
        tx.execute(crate::rows::ADD_ENDED, &[ended.into(), bytes.into()]).await?;
    }
    Ok(())
}

/// Inserts an ingest batch, each entry answered as [`insert_invocation`] would answer it, in
/// the batch's order. The entries one insert settles (no idempotency key; queued, or placed
/// at ingest: the common async event) go a chunk per statement, which answers the ids it
/// inserted (the placed ones announced together); the rest one by one.
pub async fn insert_invocations(tx: &impl Tx, batch: Vec<NewInvocation>) -> Result<Vec<Result<Inserted>>> {
    static STATEMENTS: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        RECORD_CHUNKS.map(|rows| format!("{} RETURNING id, worker", crate::rows::insert_invocations(rows)))
    });
    let taken = |id: &InvocationId| StoreError::Invalid(format!("invocation id {id} already exists"));
    let mut out: Vec<Option<Result<Inserted>>> = (0..batch.len()).map(|_| None).collect();
    let mut plain = Vec::new();
    for (i, new) in batch.into_iter().enumerate() {
        let settled_by_insert =
            matches!(new.lifecycle.state, gust_core::State::Queued | gust_core::State::Placed { .. });
        if new.request.idempotency_key.is_none() && settled_by_insert {
            plain.push((i, InvocationRecord::new(new.request, new.lifecycle)));
        } else {
            out[i] = Some(insert_invocation(tx, new).await?);
        }
    }
    let mut placed_on = std::collections::BTreeSet::new();
    let (chunks, rest) = in_chunks(&plain, &STATEMENTS);
    for (statement, chunk) in chunks {
        let inserts = chunk.iter().map(|(_, r)| InsertInvocation::new(r)).collect::<Result<Vec<_>>>()?;
        let values: Vec<Value<'_>> = inserts.iter().flat_map(InsertInvocation::values).collect();
        let rows = tx.select(statement, &values, false, |r| Ok((r.text(0)?, r.opt_text(1)?))).await?;
        let mut inserted = std::collections::HashSet::with_capacity(rows.len());
        for (id, worker) in rows {
            if let Some(worker) = worker {
                placed_on.insert(worker);
            }
            inserted.insert(id);
        }
        for (i, rec) in chunk {
            let created = inserted.contains(&rec.request.id.0);
            out[*i] = Some(if created { Ok(Inserted::Created) } else { Err(taken(&rec.request.id)) });
        }
    }
    for (i, rec) in rest {
        let created = tx.insert_invocation(rec).await?;
        out[*i] = Some(if created { Ok(Inserted::Created) } else { Err(taken(&rec.request.id)) });
    }
    // Each worker once, in announcements within PostgreSQL's payload limit (8,000 bytes): a
    // batch of 512 rows on long worker ids would not fit in one.
    let mut payload = String::new();
    for worker in placed_on {
        if !payload.is_empty() && payload.len() + worker.len() + 1 > ANNOUNCEMENT_BYTES {
            tx.announce_placed(&std::mem::take(&mut payload)).await?;
        }
        payload.push_str(&worker);
        payload.push(',');
    }
    if !payload.is_empty() {
        tx.announce_placed(&payload).await?;
    }
    Ok(out.into_iter().map(|o| o.expect("every entry is answered")).collect())
}

/// Inserts one invocation; on an idempotency-key conflict, answers with the existing one (or
/// [`StoreError::KeyMismatch`] if its request differs).
pub async fn insert_invocation(tx: &impl Tx, new: NewInvocation) -> Result<Result<Inserted>> {
    let rec = InvocationRecord::new(new.request, new.lifecycle);
    if tx.insert_invocation(&rec).await? {
        return Ok(Ok(Inserted::Created));
    }
    let req = &rec.request;
    let existing = match &req.idempotency_key {
        Some(key) => tx.id_by_key(&req.function, key).await?,
        None => None,
    };
    let Some(existing) = existing else {
        return Ok(Err(StoreError::Invalid(format!("invocation id {} already exists", req.id))));
    };
    let existing = tx
        .load_invocation(&existing)
        .await?
        .ok_or_else(|| StoreError::Backend("idempotency index points nowhere".into()))?;
    Ok(if existing.request.fingerprint == req.fingerprint {
        Ok(Inserted::Existing(Box::new(existing)))
    } else {
        Err(StoreError::KeyMismatch { existing: existing.request.id })
    })
}

/// Claims one invocation for `worker`.
pub async fn claim(
    tx: &impl Tx, id: &str, worker: &WorkerId, lease_expires_at: Millis, now: Millis,
) -> Result<Result<Claimed, Rejected>> {
    let event = Event::Claim { worker: worker.clone(), lease_expires_at };
    let lc = match transition(tx, id, &event, Outcome::default(), now).await? {
        Ok(lc) => lc,
        Err(rejected) => return Ok(Err(rejected)),
    };
    let rec =
        tx.load_invocation(id).await?.ok_or_else(|| StoreError::Backend("claimed row vanished".into()))?;
    Ok(Ok(Claimed { request: rec.request, epoch: lc.attempt_epoch, lease_expires_at }))
}

/// Claims up to `max` of the invocations `scan` names for `worker`, oldest first; too-old events
/// are expired instead.
pub async fn claim_scan(
    tx: &impl Tx, scan: Scan<'_>, worker: &WorkerId, max: usize, lease_expires_at: Millis, now: Millis,
) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::with_capacity(max);
    for id in tx.ids(scan).await? {
        if claimed.len() == max {
            break;
        }
        match claim(tx, &id, worker, lease_expires_at, now).await? {
            Ok(c) => claimed.push(c),
            Err(Rejected::TooOld) => {
                expire(tx, &id, now).await?;
            }
            Err(other) => return Err(StoreError::Rejected(other)),
        }
    }
    Ok(claimed)
}

/// The positions of `ids` in ascending id order. Every transaction that locks several
/// invocation rows locks them in this order, and takes counter rows only after them, so no two
/// can wait on each other (PostgreSQL would abort one as a deadlock).
fn id_order(ids: &[&InvocationId]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| ids[a].cmp(ids[b]));
    order
}

/// Answers computed in [`id_order`], put back in the caller's order.
fn in_caller_order<R>(mut answers: Vec<(usize, R)>) -> Vec<R> {
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, r)| r).collect()
}

/// Renews the leases of attempts `worker` runs; fenced renewals are counted.
pub async fn renew_leases(
    tx: &impl Tx, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>, lease_expires_at: Millis,
    now: Millis,
) -> Result<Vec<Result<(), Rejected>>> {
    let order = id_order(&attempts.iter().map(|(id, _)| id).collect::<Vec<_>>());
    let mut answers = Vec::with_capacity(attempts.len());
    let mut fenced = 0;
    for i in order {
        let (id, epoch) = &attempts[i];
        let event = Event::RenewLease { worker: worker.clone(), epoch: *epoch, lease_expires_at };
        let r = match transition(tx, &id.0, &event, Outcome::default(), now).await {
            Ok(r) => r.map(|_| ()),
            Err(StoreError::NotFound { .. }) => Err(Rejected::Fenced { current: 0, given: *epoch }),
            Err(e) => return Err(e),
        };
        if matches!(r, Err(Rejected::Fenced { .. })) {
            fenced += 1;
        }
        answers.push((i, r));
    }
    if fenced > 0 {
        tx.bump(Counter::FencedRenewals, fenced).await?;
    }
    Ok(in_caller_order(answers))
}

/// Places invocations on workers (QUEUED → PLACED).
pub async fn place(
    tx: &impl Tx, placements: Vec<(InvocationId, WorkerId)>, now: Millis,
) -> Result<Vec<Result<(), Rejected>>> {
    let order = id_order(&placements.iter().map(|(id, _)| id).collect::<Vec<_>>());
    let mut answers = Vec::with_capacity(placements.len());
    for i in order {
        let (id, worker) = &placements[i];
        let event = Event::Place { worker: worker.clone() };
        answers.push((i, transition(tx, &id.0, &event, Outcome::default(), now).await?.map(|_| ())));
    }
    Ok(in_caller_order(answers))
}

/// One guarded completion; a fenced one is counted. A repeated report of the completion that
/// ended the invocation is `apply`'s [`Rejected::AlreadyCompleted`].
pub async fn complete(
    tx: &impl Tx, completion: &Completion, now: Millis,
) -> Result<Result<Lifecycle, Rejected>> {
    let r = complete_uncounted(tx, completion, now).await?;
    if matches!(r, Err(Rejected::Fenced { .. })) {
        count_fenced_completions(tx, 1).await?;
    }
    Ok(r)
}

/// Counts `n` fenced completions: a batch of completions (rows locked in id order) counts its
/// fenced ones once every row is locked (see [`id_order`]).
pub async fn count_fenced_completions(tx: &impl Tx, n: usize) -> Result<()> {
    if n > 0 {
        tx.bump(Counter::FencedCompletions, n as u64).await?;
    }
    Ok(())
}

/// [`complete`] without counting a fenced refusal.
pub async fn complete_uncounted(
    tx: &impl Tx, completion: &Completion, now: Millis,
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
        report: completion.report.as_ref(),
    };
    transition(tx, &completion.id.0, &event, outcome, now).await
}

/// One recovery sweep: expired leases, due retries, placement timeouts, too-old events, at most
/// [`RECOVERY_BATCH`] of each.
pub async fn recover(tx: &impl Tx, now: Millis) -> Result<Recovered> {
    let mut report = Recovered::default();
    let limit = RECOVERY_BATCH;
    for id in tx.ids(Scan::LeaseExpired { now, limit }).await? {
        let Some(g) = tx.load_guarded(&id).await? else { continue };
        let error = system_error(
            ErrorKind::WorkerLost,
            format!("the worker running attempt {} was lost (its lease expired)", g.lifecycle.attempt_epoch),
        );
        let outcome = Outcome { error: Some(&error), ..Outcome::default() };
        if let Ok(lc) = transition(tx, &id, &Event::LeaseExpired, outcome, now).await? {
            if lc.state.is_terminal() {
                report.lost += 1;
            } else {
                report.requeued += 1;
            }
        }
    }
    for id in tx.ids(Scan::RetryDue { now, limit }).await? {
        if transition(tx, &id, &Event::RetryDue, Outcome::default(), now).await?.is_ok() {
            report.retries_due += 1;
        }
    }
    let placed_before = now - DEFAULT_PLACEMENT_TIMEOUT_MS;
    for id in tx.ids(Scan::Unclaimed { placed_before, limit }).await? {
        if transition(tx, &id, &Event::PlacementTimedOut, Outcome::default(), now).await?.is_ok() {
            report.unplaced += 1;
        }
    }
    for id in tx.ids(Scan::TooOld { now, limit }).await? {
        if expire(tx, &id, now).await? {
            report.expired += 1;
        }
    }
    Ok(report)
}

// ---- control plane: every write bumps the snapshot version -------------------------------------

/// Refuses a conditional write whose expected revision is not the current one.
pub fn check_revision(expect: Option<u64>, actual: u64) -> Result<()> {
    match expect {
        Some(expected) if expected != actual => Err(StoreError::RevisionMismatch { expected, actual }),
        _ => Ok(()),
    }
}

/// The function, locked, at the expected revision.
async fn require_function(tx: &impl Tx, name: &str, expect: Option<u64>) -> Result<FunctionConfig> {
    let f = tx
        .load_function(name, true)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Function, name: name.to_string() })?;
    check_revision(expect, f.revision)?;
    Ok(f)
}

/// Writes `$LATEST` of a function (creating it if `expect` allows), keeping its code unless
/// `code` replaces it (that artifact held first: [`Tx::hold_artifact`]).
pub async fn write_function(
    tx: &impl Tx, name: &str, spec: FunctionSpec, code: Option<&str>, expect: Option<u64>, now: Millis,
) -> Result<FunctionConfig> {
    if let Some(code) = code {
        tx.hold_artifact(code).await?;
    }
    tx.lock_name(name).await?;
    let existing = tx.load_function(name, true).await?;
    check_revision(expect, existing.as_ref().map_or(0, |f| f.revision))?;
    let revision = tx.bump(Counter::SnapshotVersion, 1).await?;
    let spec_json = crate::secrets::seal_spec(&spec)?;
    let code = code.map(str::to_string).or_else(|| existing.as_ref().and_then(|f| f.code_sha256.clone()));
    let values: [Value; _] =
        [name.into(), spec_json.as_str().into(), code.as_ref().into(), revision.into(), now.into()];
    tx.execute(crate::rows::UPSERT_FUNCTION, &values).await?;
    tx.execute(crate::rows::INSERT_REVISION, &[values[0], values[3], values[1], values[2], values[4]])
        .await?;
    Ok(FunctionConfig {
        name: name.to_string(),
        spec,
        code_sha256: code,
        revision,
        created_at: existing.as_ref().map_or(now, |f| f.created_at),
        updated_at: now,
    })
}

/// Points a function's `$LATEST` at a stored artifact.
pub async fn set_function_code(
    tx: &impl Tx, name: &str, code: &str, expect: Option<u64>, now: Millis,
) -> Result<FunctionConfig> {
    let mut f = require_function(tx, name, expect).await?;
    tx.hold_artifact(code).await?;
    let revision = tx.bump(Counter::SnapshotVersion, 1).await?;
    let spec_json = crate::secrets::seal_spec(&f.spec)?;
    tx.execute(crate::rows::SET_CODE, &[name.into(), code.into(), revision.into(), now.into()]).await?;
    let values: [Value; _] =
        [name.into(), revision.into(), spec_json.as_str().into(), code.into(), now.into()];
    tx.execute(crate::rows::INSERT_REVISION, &values).await?;
    f.code_sha256 = Some(code.to_string());
    f.revision = revision;
    f.updated_at = now;
    Ok(f)
}

/// Deletes a function with its versions and aliases and fails its pending invocations; how
/// many were cancelled.
pub async fn delete_function(tx: &impl Tx, name: &str, expect: Option<u64>, now: Millis) -> Result<u64> {
    require_function(tx, name, expect).await?;
    tx.bump(Counter::SnapshotVersion, 1).await?;
    tx.delete_function_rows(name).await?;
    let error = system_error(ErrorKind::FunctionDeleted, format!("function {name} was deleted"));
    let mut cancelled = 0;
    for id in tx.ids(Scan::Pending { function: name }).await? {
        let outcome = Outcome { error: Some(&error), ..Outcome::default() };
        if transition(tx, &id, &Event::Cancel, outcome, now).await?.is_ok() {
            cancelled += 1;
        }
    }
    Ok(cancelled)
}

/// Publishes `$LATEST` as a version, or answers the newest version when code and config (but
/// for the description) are unchanged since it.
pub async fn publish_version(
    tx: &impl Tx, name: &str, expect: Option<u64>, description: Option<&str>, now: Millis,
) -> Result<Version> {
    let f = require_function(tx, name, expect).await?;
    let code = f.code_sha256.clone().ok_or_else(|| {
        StoreError::Invalid(format!("function {name} has no code yet: upload code before publishing"))
    })?;
    if let Some(v) = tx.latest_version(name).await? {
        if same_but_description(&v.spec, &f.spec) && v.code_sha256 == code {
            return Ok(v);
        }
    }
    let number = tx.next_version(name).await?;
    tx.bump(Counter::SnapshotVersion, 1).await?;
    let spec = version_spec(&f.spec, description);
    let spec_json = crate::secrets::seal_spec(&spec)?;
    let values: [Value; _] = [
        name.into(),
        number.into(),
        spec_json.as_str().into(),
        code.as_str().into(),
        f.revision.into(),
        now.into(),
    ];
    tx.execute(crate::rows::INSERT_VERSION, &values).await?;
    Ok(Version {
        function: name.to_string(),
        number,
        spec,
        code_sha256: code,
        from_revision: f.revision,
        created_at: now,
    })
}

/// Deletes one published version; `Invalid` while an alias routes to it.
pub async fn delete_version(tx: &impl Tx, name: &str, number: u64) -> Result<()> {
    require_function(tx, name, None).await?;
    refuse_if_routed(name, number, &tx.alias_routings(name).await?)?;
    tx.bump(Counter::SnapshotVersion, 1).await?;
    if tx.delete_version_row(name, number).await? == 0 {
        return Err(StoreError::NotFound { kind: Kind::Version, name: format!("{name}:{number}") });
    }
    Ok(())
}

/// Creates or replaces an alias; every version it routes to must be published.
pub async fn put_alias(
    tx: &impl Tx, function: &str, alias: &str, routing: Routing, description: &str, expect: Option<u64>,
    now: Millis,
) -> Result<Alias> {
    require_function(tx, function, None).await?;
    check_revision(expect, tx.alias_revision(function, alias).await?.unwrap_or(0))?;
    for v in routing.versions() {
        if !tx.version_exists(function, v).await? {
            return Err(StoreError::NotFound { kind: Kind::Version, name: format!("{function}:{v}") });
        }
    }
    let revision = tx.bump(Counter::SnapshotVersion, 1).await?;
    let routing_json = serde_json::to_string(&routing).map_err(crate::rows::json_err)?;
    let values: [Value; _] = [
        function.into(),
        alias.into(),
        routing_json.as_str().into(),
        revision.into(),
        now.into(),
        description.into(),
    ];
    tx.execute(crate::rows::UPSERT_ALIAS, &values).await?;
    Ok(Alias {
        function: function.to_string(),
        name: alias.to_string(),
        routing,
        description: description.to_string(),
        revision,
        updated_at: now,
    })
}

/// Deletes an alias at the expected revision.
pub async fn delete_alias(tx: &impl Tx, function: &str, alias: &str, expect: Option<u64>) -> Result<()> {
    let current = tx
        .alias_revision(function, alias)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: Kind::Alias, name: format!("{function}:{alias}") })?;
    check_revision(expect, current)?;
    tx.bump(Counter::SnapshotVersion, 1).await?;
    // An alias's URL goes with it (as in Lambda); its id is never reused.
    tx.execute(crate::rows::DELETE_URL, &[function.into(), alias.into()]).await?;
    tx.delete_alias_row(function, alias).await
}

// ---- function URLs ---------------------------------------------------------------------------

/// Checks that a URL's target exists: the function, and the alias unless it is `$LATEST`.
async fn require_url_target(tx: &impl Tx, function: &str, qualifier: &str) -> Result<()> {
    tx.lock_name(function).await?;
    require_function(tx, function, None).await?;
    if qualifier != "$LATEST" && tx.alias_revision(function, qualifier).await?.is_none() {
        return Err(StoreError::NotFound { kind: Kind::Alias, name: format!("{function}:{qualifier}") });
    }
    Ok(())
}

fn url_not_found(function: &str, qualifier: &str) -> StoreError {
    StoreError::NotFound { kind: Kind::FunctionUrl, name: format!("{function}:{qualifier}") }
}

/// Creates the URL of a function's `$LATEST` or alias; `Invalid` if it has one.
pub async fn create_url(tx: &impl Tx, url: &FunctionUrl) -> Result<()> {
    require_url_target(tx, &url.function, &url.qualifier).await?;
    let target = UrlLookup::Target { function: url.function.clone(), qualifier: url.qualifier.clone() };
    if !tx.urls(&target).await?.is_empty() {
        return Err(StoreError::Invalid(format!(
            "function {}:{} already has a URL config",
            url.function, url.qualifier
        )));
    }
    tx.bump(Counter::SnapshotVersion, 1).await?;
    let config = serde_json::to_string(&url.config).map_err(crate::rows::json_err)?;
    let values: [Value; _] = [
        url.url_id.as_str().into(),
        url.function.as_str().into(),
        url.qualifier.as_str().into(),
        config.as_str().into(),
        url.created_at.into(),
    ];
    tx.execute(crate::rows::INSERT_URL, &values).await?;
    Ok(())
}

/// Replaces the config of an existing URL; the URL as it is now.
pub async fn update_url(
    tx: &impl Tx, function: &str, qualifier: &str, config: &UrlConfig, now: Millis,
) -> Result<FunctionUrl> {
    require_url_target(tx, function, qualifier).await?;
    let mut url = tx
        .urls(&UrlLookup::Target { function: function.to_string(), qualifier: qualifier.to_string() })
        .await?
        .pop()
        .ok_or_else(|| url_not_found(function, qualifier))?;
    tx.bump(Counter::SnapshotVersion, 1).await?;
    let json = serde_json::to_string(config).map_err(crate::rows::json_err)?;
    let values: [Value; _] = [function.into(), qualifier.into(), json.as_str().into(), now.into()];
    tx.execute(crate::rows::UPDATE_URL, &values).await?;
    url.config = config.clone();
    url.updated_at = now;
    Ok(url)
}

/// Deletes the URL of a function's `$LATEST` or alias.
pub async fn delete_url(tx: &impl Tx, function: &str, qualifier: &str) -> Result<()> {
    tx.lock_name(function).await?;
    if tx.execute(crate::rows::DELETE_URL, &[function.into(), qualifier.into()]).await? == 0 {
        return Err(url_not_found(function, qualifier));
    }
    tx.bump(Counter::SnapshotVersion, 1).await?;
    Ok(())
}
