//! Row encoding shared by the backends: how an invocation's lifecycle maps to columns and
//! back. Backends differ in SQL and drivers, never in what a row means.
//!
//! A backend binds parameters as [`Value`]s and reads columns through [`ColumnRow`], so every
//! row is encoded and decoded here once; the statements both dialects accept as written are
//! here too (with `$N` placeholders, which the SQLite backend rewrites to `?N`).

use bytes::Bytes;
use gust_core::{
    ErrorKind, FunctionErrorBody, InvocationId, InvocationRecord, InvocationRequest, Lifecycle, Mode,
    Resolved, RetryPolicy, State, StateName, WorkerId,
};

use crate::{CredentialOrigin, FoundCredential, Result, StoreError, WorkerCredential};

pub fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored JSON is invalid: {e}"))
}

/// A statement parameter, the same for both backends: each wraps it in its driver's own
/// parameter trait, so a row is encoded once.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Bytes(v)
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value<'_> {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}

impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        Value::Int(v.min(i64::MAX as usize) as i64)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One column of a result row as its backend read it, before decoding.
#[derive(Debug)]
pub enum Column {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One result row of a backend, read by column index: a backend says how to read one column
/// ([`ColumnRow::column`]); every decoder here is written against the typed readers once.
pub trait ColumnRow {
    fn column(&self, i: usize) -> Result<Column>;

    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.column(i)? {
            Column::Null => Ok(None),
            Column::Text(v) => Ok(Some(v)),
            other => Err(unexpected(i, "text", &other)),
        }
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.column(i)? {
            Column::Null => Ok(None),
            Column::Int(v) => Ok(Some(v)),
            other => Err(unexpected(i, "an integer", &other)),
        }
    }

    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>> {
        match self.column(i)? {
            Column::Null => Ok(None),
            Column::Bytes(v) => Ok(Some(v)),
            Column::Text(v) => Ok(Some(v.into_bytes())),
            other => Err(unexpected(i, "bytes", &other)),
        }
    }

    fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| unexpected(i, "text", &Column::Null))
    }

    fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| unexpected(i, "an integer", &Column::Null))
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        self.opt_bytes(i)?.ok_or_else(|| unexpected(i, "bytes", &Column::Null))
    }
}

fn unexpected(i: usize, wanted: &str, found: &Column) -> StoreError {
    let found = match found {
        Column::Null => "NULL",
        Column::Int(_) => "an integer",
        Column::Text(_) => "text",
        Column::Bytes(_) => "bytes",
    };
    StoreError::Backend(format!("stored column {i} holds {found} where {wanted} belongs"))
}

/// The columns of an invocation record, in [`RawInvocation::read`]'s order.
pub const INVOCATION_COLUMNS: &str = "id, function, qualifier, resolved, payload, mode, idempotency_key, \
     fingerprint, received_at, retry, state, worker, due_at, attempt_epoch, function_errors, lost_attempts, \
     result, error, log, updated_at, finished_at, client_context, trace_id, report, history";

/// [`INVOCATION_COLUMNS`] with the payload and the result read empty (same order and types).
pub const LIGHT_INVOCATION_COLUMNS: &str = "id, function, qualifier, resolved, substr(payload, 1, 0), mode, \
     idempotency_key, fingerprint, received_at, retry, state, worker, due_at, attempt_epoch, function_errors, \
     lost_attempts, substr(result, 1, 0), error, log, updated_at, finished_at, client_context, trace_id, report, \
     history";

/// The columns of [`INSERT_INVOCATION`], in [`InsertInvocation::values`]' order.
macro_rules! insert_invocations_into {
    () => {
        "INSERT INTO invocations (id, function, qualifier, resolved, payload, mode, \
         idempotency_key, fingerprint, received_at, retry, state, worker, due_at, attempt_epoch, \
         function_errors, lost_attempts, result, error, log, updated_at, finished_at, expires_at, \
         client_context, trace_id, report, history) VALUES "
    };
}

/// How many parameters one record binds in [`INSERT_INVOCATION`].
pub const INVOCATION_PARAMS: usize = 26;

/// Inserts an invocation ([`insert_values`]); a conflict on its id or idempotency key inserts
/// nothing.
pub const INSERT_INVOCATION: &str = concat!(
    insert_invocations_into!(),
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
     $21, $22, $23, $24, $25, $26) ON CONFLICT DO NOTHING"
);

/// [`INSERT_INVOCATION`] of `rows` records in one statement (parameters in
/// [`InsertInvocation::values`]' order, record after record): one round trip and one plan for
/// a batch where a backend pays per statement.
pub fn insert_invocations(rows: usize) -> String {
    let width = INVOCATION_PARAMS;
    let mut sql = String::from(insert_invocations_into!());
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * width + col + 1));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// Adds ended record `$1` (it just ended, or was written ended) to the ended totals.
pub const COUNT_ENDED: &str = concat!(
    "INSERT INTO ended_totals (records, bytes) SELECT 1, ",
    crate::record_bytes!(),
    " FROM invocations WHERE id = $1 AND finished_at IS NOT NULL"
);

/// Adds `$1` records of `$2` bytes (negative: removed) to the ended totals.
pub const ADD_ENDED: &str = "INSERT INTO ended_totals (records, bytes) VALUES ($1, $2)";

/// The ended totals, and how many rows hold them.
pub const ENDED_TOTALS: &str = "SELECT CAST(COALESCE(SUM(records), 0) AS BIGINT), \
     CAST(COALESCE(SUM(bytes), 0) AS BIGINT), COUNT(*) FROM ended_totals";

/// What an inserted record adds to the ended totals: its bytes, or NULL if it has not ended.
pub const RETURNING_ENDED_BYTES: &str =
    concat!(" RETURNING CASE WHEN finished_at IS NULL THEN NULL ELSE ", crate::record_bytes!(), " END");

/// What a transition needs of an invocation row, in [`read_guarded`]'s order.
pub const GUARDED_COLUMNS: &str = "mode, received_at, retry, state, worker, due_at, attempt_epoch, \
     function_errors, lost_attempts, completed_epoch, completed_by";

/// A transition's conditional write ([`GuardedWrite::values`]): applied only if the row is
/// still in the state and attempt epoch the transition was decided on. An accepted completion
/// records its epoch and worker in the same statement, so a repeated report is recognised.
pub const UPDATE_GUARDED: &str = "UPDATE invocations SET state = $1, worker = $2, due_at = $3, \
     attempt_epoch = $4, function_errors = $5, lost_attempts = $6, updated_at = $7, \
     finished_at = COALESCE($8, finished_at), result = CASE WHEN $9 THEN $10 ELSE result END, \
     error = CASE WHEN $9 THEN $11 ELSE error END, log = COALESCE($12, log), \
     completed_epoch = COALESCE($16, completed_epoch), completed_by = COALESCE($17, completed_by), \
     report = COALESCE($18, report), \
     history = CASE WHEN CAST($19 AS TEXT) IS NULL OR length(COALESCE(history, '')) >= CAST($20 AS BIGINT) THEN history \
     ELSE COALESCE(history, '') || CAST($19 AS TEXT) END WHERE id = $13 AND state = $14 AND attempt_epoch = $15";

/// The columns of a function, in [`read_function`]'s order.
pub const FUNCTION_COLUMNS: &str = "name, spec, code_sha256, revision, created_at, updated_at";
/// The columns of a version, in [`read_version`]'s order.
pub const VERSION_COLUMNS: &str = "function, number, spec, code_sha256, from_revision, created_at";
/// The columns of an alias, in [`read_alias`]'s order.
pub const ALIAS_COLUMNS: &str = "function, name, routing, revision, updated_at, description";

/// Creates a function or replaces its `$LATEST` (`$1` name, `$2` sealed spec, `$3` code,
/// `$4` revision, `$5` now).
pub const UPSERT_FUNCTION: &str = "INSERT INTO functions (name, spec, code_sha256, revision, next_version, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5) \
     ON CONFLICT (name) DO UPDATE SET spec = $2, code_sha256 = $3, revision = $4, updated_at = $5";
/// Points a function at new code (`$1` name, `$2` code, `$3` revision, `$4` now).
pub const SET_CODE: &str =
    "UPDATE functions SET code_sha256 = $2, revision = $3, updated_at = $4 WHERE name = $1";
/// Keeps a `$LATEST` revision (`$1` function, `$2` revision, `$3` sealed spec, `$4` code, `$5` now).
pub const INSERT_REVISION: &str = "INSERT INTO function_revisions (function, revision, spec, code_sha256, \
     created_at) VALUES ($1, $2, $3, $4, $5)";
/// Takes a function's next version number (`$1` name).
pub const NEXT_VERSION: &str =
    "UPDATE functions SET next_version = next_version + 1 WHERE name = $1 RETURNING next_version - 1";
/// Stores a version (`$1` function, `$2` number, `$3` sealed spec, `$4` code, `$5` from revision,
/// `$6` now).
pub const INSERT_VERSION: &str = "INSERT INTO versions (function, number, spec, code_sha256, from_revision, \
     created_at) VALUES ($1, $2, $3, $4, $5, $6)";
/// Creates or replaces an alias (`$1` function, `$2` name, `$3` routing JSON, `$4` revision,
/// `$5` now, `$6` description).
pub const UPSERT_ALIAS: &str =
    "INSERT INTO aliases (function, name, routing, revision, updated_at, description) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (function, name) \
     DO UPDATE SET routing = $3, revision = $4, updated_at = $5, description = $6";

/// The columns of a function URL, in [`read_url`]'s order.
pub const URL_COLUMNS: &str = "url_id, function, qualifier, config, created_at, updated_at";
/// A new function URL (`$1` id, `$2` function, `$3` qualifier, `$4` config, `$5` now).
pub const INSERT_URL: &str = "INSERT INTO function_urls (url_id, function, qualifier, config, created_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5, $5)";
/// A URL's new config (`$1` function, `$2` qualifier, `$3` config, `$4` now).
pub const UPDATE_URL: &str =
    "UPDATE function_urls SET config = $3, updated_at = $4 WHERE function = $1 AND qualifier = $2";
/// Deletes the URL of a function's `$LATEST` or alias (`$1` function, `$2` qualifier).
pub const DELETE_URL: &str = "DELETE FROM function_urls WHERE function = $1 AND qualifier = $2";

/// Reads the columns of [`URL_COLUMNS`].
pub fn read_url(r: &dyn ColumnRow) -> Result<gust_core::FunctionUrl> {
    Ok(gust_core::FunctionUrl {
        url_id: r.text(0)?,
        function: r.text(1)?,
        qualifier: r.text(2)?,
        config: serde_json::from_str(&r.text(3)?).map_err(json_err)?,
        created_at: r.int(4)?,
        updated_at: r.int(5)?,
    })
}

/// An invocation row as stored, before decoding.
pub struct RawInvocation {
    pub id: String,
    pub function: String,
    pub qualifier: String,
    pub resolved: String,
    pub payload: Vec<u8>,
    pub mode: String,
    pub idempotency_key: Option<String>,
    pub fingerprint: Option<String>,
    pub received_at: i64,
    pub retry: String,
    pub state: String,
    pub worker: Option<String>,
    pub due_at: Option<i64>,
    pub attempt_epoch: i64,
    pub function_errors: i64,
    pub lost_attempts: i64,
    pub result: Option<Vec<u8>>,
    pub error: Option<String>,
    pub log: String,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub client_context: Option<String>,
    pub trace_id: Option<String>,
    pub report: Option<String>,
    pub history: Option<String>,
}

impl RawInvocation {
    /// Reads the columns of [`INVOCATION_COLUMNS`].
    pub fn read(r: &dyn ColumnRow) -> Result<RawInvocation> {
        Ok(RawInvocation {
            id: r.text(0)?,
            function: r.text(1)?,
            qualifier: r.text(2)?,
            resolved: r.text(3)?,
            payload: r.bytes(4)?,
            mode: r.text(5)?,
            idempotency_key: r.opt_text(6)?,
            fingerprint: r.opt_text(7)?,
            received_at: r.int(8)?,
            retry: r.text(9)?,
            state: r.text(10)?,
            worker: r.opt_text(11)?,
            due_at: r.opt_int(12)?,
            attempt_epoch: r.int(13)?,
            function_errors: r.int(14)?,
            lost_attempts: r.int(15)?,
            result: r.opt_bytes(16)?,
            error: r.opt_text(17)?,
            log: r.text(18)?,
            updated_at: r.int(19)?,
            finished_at: r.opt_int(20)?,
            client_context: r.opt_text(21)?,
            trace_id: r.opt_text(22)?,
            report: r.opt_text(23)?,
            history: r.opt_text(24)?,
        })
    }
}

/// A record read with [`INVOCATION_COLUMNS`], decoded.
pub fn read_record(r: &dyn ColumnRow) -> Result<InvocationRecord> {
    to_record(RawInvocation::read(r)?)
}

/// The owned parameters of [`INSERT_INVOCATION`] for one record.
pub struct InsertInvocation<'a> {
    rec: &'a InvocationRecord,
    resolved: String,
    retry: String,
    error: Option<String>,
    report: Option<String>,
    history: String,
}

impl<'a> InsertInvocation<'a> {
    pub fn new(rec: &'a InvocationRecord) -> Result<Self> {
        Ok(InsertInvocation {
            rec,
            resolved: rec.request.resolved.encode(),
            retry: serde_json::to_string(&rec.request.retry).map_err(json_err)?,
            error: rec.error.as_ref().map(serde_json::to_string).transpose().map_err(json_err)?,
            report: rec.report.as_ref().map(serde_json::to_string).transpose().map_err(json_err)?,
            history: match &rec.lifecycle.state {
                // Inserted already placed or claimed: that is its first event.
                State::Placed { worker, .. } => {
                    history_line(rec.request.received_at, "placed", None, Some(worker), &[])
                }
                State::Running { worker, .. } => history_line(
                    rec.request.received_at,
                    "started",
                    Some(rec.lifecycle.attempt_epoch),
                    Some(worker),
                    &[],
                ),
                _ => rec.history.clone(),
            },
        })
    }

    pub fn values(&self) -> [Value<'_>; INVOCATION_PARAMS] {
        let (rec, req) = (self.rec, &self.rec.request);
        let (state, worker, due_at) = encode_state(&rec.lifecycle.state);
        // An async event older than its maximum age is never run (the expiry index).
        let expires_at = match req.mode {
            Mode::Async => {
                Some(req.received_at.saturating_add((req.retry.max_event_age_s as i64).saturating_mul(1000)))
            }
            Mode::Sync => None,
        };
        [
            Value::from(&req.id.0),
            Value::from(&req.function),
            Value::from(&req.qualifier),
            Value::from(&self.resolved),
            Value::from(req.payload.as_ref()),
            Value::from(req.mode.as_str()),
            Value::from(req.idempotency_key.as_ref()),
            Value::from(req.fingerprint.as_ref()),
            Value::from(req.received_at),
            Value::from(&self.retry),
            Value::from(state),
            Value::from(worker),
            Value::from(due_at),
            Value::from(rec.lifecycle.attempt_epoch),
            Value::from(u64::from(rec.lifecycle.function_errors)),
            Value::from(u64::from(rec.lifecycle.lost_attempts)),
            Value::from(rec.result.as_deref()),
            Value::from(self.error.as_ref()),
            Value::from(&rec.log),
            Value::from(rec.updated_at),
            Value::from(rec.finished_at),
            Value::from(expires_at),
            Value::from(req.client_context.as_ref()),
            Value::from(req.trace_id.as_ref()),
            Value::from(self.report.as_ref()),
            Value::from((!self.history.is_empty()).then_some(&self.history)),
        ]
    }
}

/// The part of an invocation row a transition needs: what [`gust_core::apply`] decides on.
pub struct Guarded {
    pub ctx: gust_core::Context,
    pub lifecycle: Lifecycle,
}

/// Reads the columns of [`GUARDED_COLUMNS`].
pub fn read_guarded(r: &dyn ColumnRow) -> Result<Guarded> {
    let completed =
        r.opt_int(9)?.map(|epoch| gust_core::AcceptedCompletion { epoch: epoch as u64, worker: None });
    let completed = match (completed, r.opt_text(10)?) {
        (Some(c), by) => Some(gust_core::AcceptedCompletion { worker: by.map(WorkerId), ..c }),
        (None, _) => None,
    };
    Ok(Guarded {
        ctx: gust_core::Context {
            mode: Mode::parse(&r.text(0)?).ok_or_else(|| corrupt("mode"))?,
            received_at: r.int(1)?,
            retry: serde_json::from_str(&r.text(2)?).map_err(json_err)?,
            completed,
        },
        lifecycle: Lifecycle {
            state: decode_state(&r.text(3)?, r.opt_text(4)?, r.opt_int(5)?)?,
            attempt_epoch: r.int(6)? as u64,
            function_errors: r.int(7)? as u32,
            lost_attempts: r.int(8)? as u32,
        },
    })
}

/// The parameters of [`UPDATE_GUARDED`]: invocation `id` moves from `from` to `next`.
pub struct GuardedWrite<'a> {
    pub id: &'a str,
    pub from: &'a Lifecycle,
    pub next: &'a Lifecycle,
    pub now: gust_core::Millis,
    pub outcome: Outcome<'a>,
    /// The accepted completion's `(epoch, worker)`, if this transition is one.
    pub completed: Option<(u64, &'a WorkerId)>,
    error_json: Option<String>,
    report_json: Option<String>,
    /// The line this transition adds to the history (`None`: nothing worth a line).
    history: Option<String>,
}

impl<'a> GuardedWrite<'a> {
    pub fn new(
        id: &'a str, from: &'a Lifecycle, next: &'a Lifecycle, event: &'a gust_core::Event,
        outcome: Outcome<'a>, now: gust_core::Millis,
    ) -> Result<Self> {
        let completed = match event {
            gust_core::Event::Complete { epoch, worker, .. } => Some((*epoch, worker)),
            _ => None,
        };
        let error_json = outcome.error.map(serde_json::to_string).transpose().map_err(json_err)?;
        let report_json = outcome.report.map(serde_json::to_string).transpose().map_err(json_err)?;
        let history = history_of(event, from, next, now);
        Ok(GuardedWrite { id, from, next, now, outcome, completed, error_json, report_json, history })
    }

    pub fn values(&self) -> [Value<'_>; 20] {
        let (state, worker, due_at) = encode_state(&self.next.state);
        let finished_at = self.next.state.is_terminal().then_some(self.now);
        [
            Value::from(state),
            Value::from(worker),
            Value::from(due_at),
            Value::from(self.next.attempt_epoch),
            Value::from(u64::from(self.next.function_errors)),
            Value::from(u64::from(self.next.lost_attempts)),
            Value::from(self.now),
            Value::from(finished_at),
            Value::from(self.outcome.result.is_some() || self.outcome.error.is_some()),
            Value::from(self.outcome.result),
            Value::from(self.error_json.as_ref()),
            Value::from(self.outcome.log),
            Value::from(self.id),
            Value::from(self.from.state.name().as_str()),
            Value::from(self.from.attempt_epoch),
            Value::from(self.completed.map(|(epoch, _)| epoch)),
            Value::from(self.completed.map(|(_, worker)| worker.0.as_str())),
            Value::from(self.report_json.as_ref()),
            Value::from(self.history.as_ref()),
            Value::from(MAX_HISTORY_BYTES),
        ]
    }
}

/// Reads the columns of [`FUNCTION_COLUMNS`].
pub fn read_function(r: &dyn ColumnRow) -> Result<gust_core::FunctionConfig> {
    Ok(gust_core::FunctionConfig {
        name: r.text(0)?,
        spec: crate::secrets::open_spec(&r.text(1)?)?,
        code_sha256: r.opt_text(2)?,
        revision: r.int(3)? as u64,
        created_at: r.int(4)?,
        updated_at: r.int(5)?,
    })
}

/// Reads the columns of [`VERSION_COLUMNS`].
pub fn read_version(r: &dyn ColumnRow) -> Result<gust_core::Version> {
    Ok(gust_core::Version {
        function: r.text(0)?,
        number: r.int(1)? as u64,
        spec: crate::secrets::open_spec(&r.text(2)?)?,
        code_sha256: r.text(3)?,
        from_revision: r.int(4)? as u64,
        created_at: r.int(5)?,
    })
}

/// Reads the columns of [`ALIAS_COLUMNS`].
pub fn read_alias(r: &dyn ColumnRow) -> Result<gust_core::Alias> {
    Ok(gust_core::Alias {
        function: r.text(0)?,
        name: r.text(1)?,
        routing: serde_json::from_str(&r.text(2)?).map_err(json_err)?,
        revision: r.int(3)? as u64,
        updated_at: r.int(4)?,
        description: r.text(5)?,
    })
}

/// Reads the columns of [`KEY_COLUMNS`].
pub fn read_key(r: &dyn ColumnRow) -> Result<gust_core::ApiKey> {
    KeyRow {
        id: r.text(0)?,
        name: r.text(1)?,
        role: r.text(2)?,
        functions: r.opt_text(3)?,
        bearer_sha256: r.text(4)?,
        sigv4_secret_sealed: r.text(5)?,
        created_at: r.int(6)?,
        last_used_at: r.opt_int(7)?,
    }
    .open()
}

/// A credential with its worker's last heartbeat (`k` is the credential, `w` the worker), read
/// by [`read_credential`].
pub const CREDENTIAL_SELECT: &str =
    "SELECT k.worker, k.secret_sha256, k.origin, k.created_at, w.last_heartbeat \
     FROM worker_credentials k LEFT JOIN workers w ON w.id = k.worker";

/// Reads a row of [`CREDENTIAL_SELECT`].
pub fn read_credential(r: &dyn ColumnRow) -> Result<FoundCredential> {
    credential_row(r.text(0)?, r.text(1)?, &r.text(2)?, r.int(3)?, r.opt_int(4)?)
}

/// The values of [`KEY_COLUMNS`] for a sealed key.
pub fn key_values(row: &KeyRow) -> [Value<'_>; 8] {
    [
        Value::from(&row.id),
        Value::from(&row.name),
        Value::from(&row.role),
        Value::from(row.functions.as_ref()),
        Value::from(&row.bearer_sha256),
        Value::from(&row.sigv4_secret_sealed),
        Value::from(row.created_at),
        Value::from(row.last_used_at),
    ]
}

pub fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored invocation has an invalid {what}"))
}

pub fn decode_state(name: &str, worker: Option<String>, due_at: Option<i64>) -> Result<State> {
    let name = StateName::parse(name).ok_or_else(|| corrupt("state"))?;
    let worker = || worker.clone().map(WorkerId).ok_or_else(|| corrupt("worker"));
    let due = || due_at.ok_or_else(|| corrupt("due time"));
    Ok(match name {
        StateName::Queued => State::Queued,
        StateName::Placed => State::Placed { worker: worker()?, placed_at: due()? },
        StateName::Running => State::Running { worker: worker()?, lease_expires_at: due()? },
        StateName::RetryWait => State::RetryWait { not_before: due()? },
        StateName::Succeeded => State::Succeeded,
        StateName::Failed => State::Failed,
        StateName::Expired => State::Expired,
    })
}

/// `(state, worker, due_at)` columns of a state.
pub fn encode_state(state: &State) -> (&'static str, Option<&str>, Option<i64>) {
    let name = state.name().as_str();
    match state {
        State::Queued | State::Succeeded | State::Failed | State::Expired => (name, None, None),
        State::Placed { worker, placed_at } => (name, Some(worker.0.as_str()), Some(*placed_at)),
        State::Running { worker, lease_expires_at } => {
            (name, Some(worker.0.as_str()), Some(*lease_expires_at))
        }
        State::RetryWait { not_before } => (name, None, Some(*not_before)),
    }
}

pub fn to_record(raw: RawInvocation) -> Result<InvocationRecord> {
    let request = InvocationRequest {
        id: InvocationId(raw.id),
        function: raw.function,
        qualifier: raw.qualifier,
        resolved: Resolved::decode(&raw.resolved).ok_or_else(|| corrupt("resolved version"))?,
        payload: Bytes::from(raw.payload),
        mode: Mode::parse(&raw.mode).ok_or_else(|| corrupt("mode"))?,
        idempotency_key: raw.idempotency_key,
        fingerprint: raw.fingerprint,
        received_at: raw.received_at,
        retry: serde_json::from_str::<RetryPolicy>(&raw.retry).map_err(json_err)?,
        client_context: raw.client_context,
        trace_id: raw.trace_id,
    };
    let lifecycle = Lifecycle {
        state: decode_state(&raw.state, raw.worker, raw.due_at)?,
        attempt_epoch: raw.attempt_epoch as u64,
        function_errors: raw.function_errors as u32,
        lost_attempts: raw.lost_attempts as u32,
    };
    Ok(InvocationRecord {
        request,
        lifecycle,
        result: raw.result.map(Bytes::from),
        error: raw.error.map(|e| serde_json::from_str(&e)).transpose().map_err(json_err)?,
        log: raw.log,
        updated_at: raw.updated_at,
        finished_at: raw.finished_at,
        // A record the store cannot read the figures of is still shown (they are a report).
        report: raw.report.and_then(|r| serde_json::from_str(&r).ok()),
        history: raw.history.unwrap_or_default(),
    })
}

/// A history stops growing past this many bytes (about 100 events).
pub const MAX_HISTORY_BYTES: i64 = 16 * 1024;

/// One line of an invocation's history: `{"at":…,"event":…,…}` and a line end.
pub fn history_line(
    at: gust_core::Millis, event: &str, epoch: Option<u64>, worker: Option<&WorkerId>,
    more: &[(&str, serde_json::Value)],
) -> String {
    let mut v = serde_json::json!({ "at": at, "event": event });
    if let Some(e) = epoch {
        v["epoch"] = e.into();
    }
    if let Some(w) = worker {
        v["worker"] = w.0.clone().into();
    }
    for (k, x) in more {
        v[*k] = x.clone();
    }
    format!("{v}\n")
}

/// The history line of a transition from `from` to `next` on `event` (lease renewals leave
/// none: they change nothing an operator follows).
pub fn history_of(
    event: &gust_core::Event, from: &Lifecycle, next: &Lifecycle, now: gust_core::Millis,
) -> Option<String> {
    use gust_core::Event;
    let state = ("state", serde_json::Value::from(next.state.name().as_str()));
    let retry_at = match next.state {
        State::RetryWait { not_before } => vec![("retry_at", serde_json::Value::from(not_before))],
        _ => Vec::new(),
    };
    Some(match event {
        Event::Place { worker } => history_line(now, "placed", None, Some(worker), &[]),
        Event::PlacementTimedOut => history_line(now, "placement timed out", None, None, &[state]),
        Event::Claim { worker, .. } => {
            history_line(now, "started", Some(next.attempt_epoch), Some(worker), &[])
        }
        Event::RenewLease { .. } => return None,
        Event::Complete { worker, epoch, outcome } => {
            let outcome = ("outcome", serde_json::Value::from(format!("{outcome:?}")));
            let more: Vec<_> = [outcome, state].into_iter().chain(retry_at).collect();
            history_line(now, "completed", Some(*epoch), Some(worker), &more)
        }
        Event::LeaseExpired => {
            let more: Vec<_> = std::iter::once(state).chain(retry_at).collect();
            history_line(now, "lease expired", Some(from.attempt_epoch), None, &more)
        }
        Event::RetryDue => history_line(now, "retry due", None, None, &[state]),
        Event::Expire => history_line(now, "expired", None, None, &[]),
        Event::Cancel => history_line(now, "cancelled", None, None, &[]),
    })
}

/// What a transition writes besides the lifecycle.
#[derive(Default, Clone, Copy)]
pub struct Outcome<'a> {
    pub result: Option<&'a [u8]>,
    pub error: Option<&'a FunctionErrorBody>,
    pub log: Option<&'a str>,
    pub report: Option<&'a gust_core::Report>,
}

/// Whether a transition to `next` may owe a destination invocation (cheap; checked before
/// anything is loaded).
pub fn may_owe_destination(ctx: &gust_core::Context, next: &Lifecycle) -> bool {
    ctx.mode == Mode::Async
        && next.state.is_terminal()
        && (ctx.retry.on_success.is_some()
            || ctx.retry.on_failure.is_some()
            || ctx.retry.dead_letter_queue.is_some())
}

/// The async invocation of destination function `f` carrying `payload` (Lambda's invocation
/// record). Backends write it in the same transaction as the finish that owes it, so it is
/// neither lost nor doubled. `None` when the destination function has no code.
pub fn destination_request(
    f: gust_core::FunctionConfig, payload: Vec<u8>, now: gust_core::Millis,
) -> Option<InvocationRecord> {
    f.code_sha256.as_ref()?;
    let request = InvocationRequest {
        id: InvocationId(uuid::Uuid::now_v7().to_string()),
        function: f.name,
        qualifier: gust_core::names::LATEST.to_string(),
        resolved: Resolved::Latest { revision: f.revision },
        payload: Bytes::from(payload),
        mode: Mode::Async,
        idempotency_key: None,
        fingerprint: None,
        received_at: now,
        retry: f.spec.retry,
        client_context: None,
        trace_id: None,
    };
    Some(InvocationRecord::new(request, Lifecycle::queued()))
}

/// Whether two configurations differ only in their description (publishing then makes no
/// new version: a version's description is its own).
pub fn same_but_description(a: &gust_core::FunctionSpec, b: &gust_core::FunctionSpec) -> bool {
    let strip =
        |s: &gust_core::FunctionSpec| gust_core::FunctionSpec { description: String::new(), ..s.clone() };
    strip(a) == strip(b)
}

/// The configuration a version freezes: `$LATEST`'s, with the version's own description if
/// it was given one.
pub fn version_spec(latest: &gust_core::FunctionSpec, description: Option<&str>) -> gust_core::FunctionSpec {
    let mut spec = latest.clone();
    if let Some(d) = description {
        spec.description = d.to_string();
    }
    spec
}

/// Refuses to delete version `number` while an alias (stored routing JSON) routes to it.
pub fn refuse_if_routed(function: &str, number: u64, routings: &[String]) -> Result<()> {
    for raw in routings {
        let routing: gust_core::Routing = serde_json::from_str(raw).map_err(json_err)?;
        if routing.versions().any(|v| v == number) {
            return Err(StoreError::Invalid(format!(
                "version {number} of {function} is routed to by an alias: update or delete the alias first"
            )));
        }
    }
    Ok(())
}

pub fn system_error(kind: ErrorKind, message: String) -> FunctionErrorBody {
    FunctionErrorBody::new(kind, message)
}

/// A `worker_credentials` row (joined with its worker's last heartbeat), decoded.
pub fn credential_row(
    worker: String, secret_sha256: String, origin: &str, created_at: i64, last_heartbeat: Option<i64>,
) -> Result<FoundCredential> {
    let origin = CredentialOrigin::parse(origin).ok_or_else(|| corrupt("credential origin"))?;
    Ok(FoundCredential {
        credential: WorkerCredential { worker: WorkerId(worker), secret_sha256, origin, created_at },
        last_heartbeat,
    })
}

/// An API key as both backends store it, one column per field; the SigV4 secret sealed.
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub functions: Option<String>,
    pub bearer_sha256: String,
    pub sigv4_secret_sealed: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// The columns of a key row, in [`KeyRow`]'s order.
pub const KEY_COLUMNS: &str =
    "id, name, role, functions, bearer_sha256, sigv4_secret, created_at, last_used_at";

impl KeyRow {
    pub fn seal(key: &gust_core::ApiKey) -> Result<KeyRow> {
        Ok(KeyRow {
            id: key.id.clone(),
            name: key.name.clone(),
            role: key.role.as_str().to_string(),
            functions: key.functions.as_ref().map(|g| g.as_str().to_string()),
            bearer_sha256: key.bearer_sha256.clone(),
            sigv4_secret_sealed: crate::secrets::seal_text(&key.sigv4_secret)?,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        })
    }

    pub fn open(self) -> Result<gust_core::ApiKey> {
        let bad = |what: &str| StoreError::Backend(format!("stored API key {}: {what}", self.name));
        Ok(gust_core::ApiKey {
            role: gust_core::Role::parse(&self.role).ok_or_else(|| bad("unknown role"))?,
            functions: self
                .functions
                .as_deref()
                .map(gust_core::FunctionGlob::parse)
                .transpose()
                .map_err(|e| bad(&e))?,
            sigv4_secret: crate::secrets::open_text(&self.sigv4_secret_sealed)?,
            name: self.name,
            id: self.id,
            bearer_sha256: self.bearer_sha256,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        })
    }
}

// ---- statements both dialects accept as written, and their rows ------------------------------

/// Invocations per state.
pub const COUNT_BY_STATE: &str = "SELECT state, COUNT(*) FROM invocations GROUP BY state";

/// Reads a row of [`COUNT_BY_STATE`].
pub fn read_state_count(r: &dyn ColumnRow) -> Result<(StateName, u64)> {
    Ok((StateName::parse(&r.text(0)?).ok_or_else(|| corrupt("state"))?, r.int(1)? as u64))
}

/// Async invocations waiting to run, per function.
pub const ASYNC_BACKLOG: &str = "SELECT function, COUNT(*) FROM invocations \
     WHERE state IN ('QUEUED', 'PLACED', 'RETRY_WAIT') AND mode = 'async' GROUP BY function";

/// The fencing counters, as `(key, value)` rows.
pub const COUNTERS: &str =
    "SELECT key, value FROM meta WHERE key IN ('fenced_completions', 'fenced_renewals')";

/// The counters from the rows of [`COUNTERS`].
pub fn counters(rows: Vec<(String, i64)>) -> Result<crate::Counters> {
    let mut counters = crate::Counters::default();
    for (key, value) in rows {
        match key.as_str() {
            "fenced_completions" => counters.fenced_completions = value as u64,
            "fenced_renewals" => counters.fenced_renewals = value as u64,
            other => return Err(StoreError::Backend(format!("unexpected counter {other}"))),
        }
    }
    Ok(counters)
}

/// Records a heartbeat only if its revision is newer (`$1` id, `$2` revision, `$3` state JSON,
/// `$4` time).
pub const PUT_WORKER: &str =
    "INSERT INTO workers (id, revision, state, last_heartbeat) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (id) DO UPDATE SET revision = $2, state = $3, last_heartbeat = $4 \
     WHERE excluded.revision > workers.revision";

/// The parameters of [`PUT_WORKER`].
pub fn worker_values<'a>(state: &'a gust_core::WorkerState, json: &'a str) -> [Value<'a>; 4] {
    [
        Value::from(&state.id.0),
        Value::from(state.revision),
        Value::from(json),
        Value::from(state.last_heartbeat),
    ]
}

/// Stores cluster secret `$1` as `$2` unless it has one.
pub const INSERT_CLUSTER_SECRET: &str =
    "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

/// Cluster secret `$1`.
pub const CLUSTER_SECRET: &str = "SELECT value FROM cluster_secrets WHERE name = $1";

/// Workers heard from since `$1`, in no order: found through the `last_heartbeat` index, so
/// the rows of workers long gone are never read (an `ORDER BY id` makes SQLite walk the whole
/// table by its key instead).
pub const LIST_WORKERS: &str = "SELECT state FROM workers WHERE last_heartbeat >= $1";

/// The rows of [`LIST_WORKERS`] by id.
pub fn workers_by_id(mut workers: Vec<gust_core::WorkerState>) -> Vec<gust_core::WorkerState> {
    workers.sort_unstable_by(|a, b| a.id.0.cmp(&b.id.0));
    workers
}

/// Reads a row of [`LIST_WORKERS`].
pub fn read_worker(r: &dyn ColumnRow) -> Result<gust_core::WorkerState> {
    serde_json::from_str(&r.text(0)?).map_err(json_err)
}

/// The oldest QUEUED invocations (`$1` at most).
pub const QUEUED: &str =
    "SELECT id, function, resolved FROM invocations WHERE state = 'QUEUED' ORDER BY id LIMIT $1";

/// Reads a row of [`QUEUED`].
pub fn read_queued(r: &dyn ColumnRow) -> Result<(InvocationId, String, Resolved)> {
    let resolved = Resolved::decode(&r.text(2)?).ok_or_else(|| corrupt("resolved version"))?;
    Ok((InvocationId(r.text(0)?), r.text(1)?, resolved))
}

/// PLACED invocations per worker.
pub const PLACED_COUNTS: &str =
    "SELECT worker, COUNT(*) FROM invocations WHERE state = 'PLACED' GROUP BY worker";

/// The deployments of work placed on or running on worker `$1`.
pub const ASSIGNED: &str = "SELECT DISTINCT function, resolved FROM invocations \
     WHERE state IN ('PLACED', 'RUNNING') AND worker = $1";

/// Reads a row of [`ASSIGNED`].
pub fn read_assigned(r: &dyn ColumnRow) -> Result<(String, Resolved)> {
    Ok((r.text(0)?, Resolved::decode(&r.text(1)?).ok_or_else(|| corrupt("resolved version"))?))
}

/// Stores a worker credential unless its worker has one.
pub const INSERT_CREDENTIAL: &str =
    "INSERT INTO worker_credentials (worker, secret_sha256, origin, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// The parameters of [`INSERT_CREDENTIAL`].
pub fn credential_values(c: &WorkerCredential) -> [Value<'_>; 4] {
    [
        Value::from(&c.worker.0),
        Value::from(&c.secret_sha256),
        Value::from(c.origin.as_str()),
        Value::from(c.created_at),
    ]
}

/// The answer to [`INSERT_CREDENTIAL`] that changed `inserted` rows.
pub fn created_credential(inserted: u64, c: &WorkerCredential) -> Result<()> {
    match inserted {
        1 => Ok(()),
        _ => Err(StoreError::Invalid(format!("worker {} already has a credential", c.worker))),
    }
}

/// Deletes worker `$1`'s credential.
pub const DELETE_CREDENTIAL: &str = "DELETE FROM worker_credentials WHERE worker = $1";

/// Stores an API key unless its name is taken ([`key_values`]).
pub const INSERT_KEY: &str = "INSERT INTO api_keys \
     (id, name, role, functions, bearer_sha256, sigv4_secret, created_at, last_used_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING";

/// The answer to [`INSERT_KEY`] that changed `inserted` rows.
pub fn created_key(inserted: u64, row: &KeyRow) -> Result<()> {
    match inserted {
        1 => Ok(()),
        _ => Err(StoreError::Invalid(format!("an API key named {} exists", row.name))),
    }
}

/// The key with id `$1` ([`read_key`]).
pub const GET_KEY: &str = "SELECT id, name, role, functions, bearer_sha256, sigv4_secret, created_at, \
     last_used_at FROM api_keys WHERE id = $1";
/// Every key, by name ([`read_key`]).
pub const LIST_KEYS: &str = "SELECT id, name, role, functions, bearer_sha256, sigv4_secret, created_at, \
     last_used_at FROM api_keys ORDER BY name";
/// Revokes the key named `$1`.
pub const REVOKE_KEY: &str = "DELETE FROM api_keys WHERE name = $1";
/// Records that key `$1` was used at `$2` (a later time only).
pub const TOUCH_KEY: &str =
    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND COALESCE(last_used_at, 0) < $2";

/// The statement reading a resolved version's `(spec, code_sha256)` (`$1` function, `$2` the
/// returned number or revision).
pub fn deployment_statement(resolved: Resolved) -> (&'static str, u64) {
    match resolved {
        Resolved::Version(n) => {
            ("SELECT spec, code_sha256 FROM versions WHERE function = $1 AND number = $2", n)
        }
        Resolved::Latest { revision } => (
            "SELECT spec, code_sha256 FROM function_revisions WHERE function = $1 AND revision = $2",
            revision,
        ),
    }
}

/// The deployment a row of [`deployment_statement`] describes (none without code).
pub fn deployment(
    function: String, resolved: Resolved, row: Option<(String, Option<String>)>,
) -> Result<Option<gust_core::Deployment>> {
    match row {
        Some((spec, Some(code_sha256))) => Ok(Some(gust_core::Deployment {
            function,
            resolved,
            spec: crate::secrets::open_spec(&spec)?,
            code_sha256,
        })),
        Some((_, None)) | None => Ok(None),
    }
}

/// One page of a function's invocations, newest first ([`read_record`]).
pub fn invocation_page<'a>(
    function: &'a str, filter: &'a crate::InvocationFilter,
) -> (String, Vec<Value<'a>>) {
    let state = filter.state.map(|s| s.as_str());
    let columns = if filter.light { LIGHT_INVOCATION_COLUMNS } else { INVOCATION_COLUMNS };
    if let Some((at, id)) = &filter.finished_after {
        let sql = format!(
            "SELECT {columns} FROM invocations WHERE function = $1 AND finished_at IS NOT NULL \
             AND (finished_at > $2 OR (finished_at = $2 AND id > $3)) \
             AND (CAST($4 AS TEXT) IS NULL OR state = $4) ORDER BY finished_at, id LIMIT $5"
        );
        return (
            sql,
            vec![function.into(), (*at).into(), id.0.as_str().into(), state.into(), filter.limit.into()],
        );
    }
    // '~' sorts after every UUID character, so "no cursor" means "from the newest".
    let before = filter.before.as_ref().map_or("~", |b| b.0.as_str());
    let sql = format!(
        "SELECT {columns} FROM invocations WHERE function = $1 AND id < $2 \
         AND (CAST($3 AS TEXT) IS NULL OR state = $3) ORDER BY id DESC LIMIT $4"
    );
    (sql, vec![function.into(), before.into(), state.into(), filter.limit.into()])
}
