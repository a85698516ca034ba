//! Row encoding shared by the backends: how an invocation's lifecycle maps to columns and
//! back. Backends differ in SQL and drivers, never in what a row means.

use bytes::Bytes;
use gust_core::{
    ErrorKind, FunctionErrorBody, InvocationId, InvocationRecord, InvocationRequest, Lifecycle, Mode,
    Rejected, Resolved, RetryPolicy, State, StateName, WorkerId,
};

use crate::{Completion, CredentialOrigin, FoundCredential, Result, StoreError, WorkerCredential};

pub(crate) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored JSON is invalid: {e}"))
}

/// An invocation row as stored, before decoding.
pub(crate) struct RawInvocation {
    pub(crate) id: String,
    pub(crate) function: String,
    pub(crate) qualifier: String,
    pub(crate) resolved: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) mode: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) fingerprint: Option<String>,
    pub(crate) received_at: i64,
    pub(crate) retry: String,
    pub(crate) state: String,
    pub(crate) worker: Option<String>,
    pub(crate) due_at: Option<i64>,
    pub(crate) attempt_epoch: i64,
    pub(crate) function_errors: i64,
    pub(crate) lost_attempts: i64,
    pub(crate) result: Option<Vec<u8>>,
    pub(crate) error: Option<String>,
    pub(crate) log: String,
    pub(crate) updated_at: i64,
    pub(crate) finished_at: Option<i64>,
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored invocation has an invalid {what}"))
}

pub(crate) fn decode_state(name: &str, worker: Option<String>, due_at: Option<i64>) -> Result<State> {
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
pub(crate) fn encode_state(state: &State) -> (&'static str, Option<&str>, Option<i64>) {
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

pub(crate) fn to_record(raw: RawInvocation) -> Result<InvocationRecord> {
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
    })
}

/// What a transition writes besides the lifecycle.
#[derive(Default)]
pub(crate) struct Outcome<'a> {
    pub(crate) result: Option<&'a [u8]>,
    pub(crate) error: Option<&'a FunctionErrorBody>,
    pub(crate) log: Option<&'a str>,
}

/// Whether a transition to `next` may owe a destination invocation (cheap; checked before
/// anything is loaded).
pub(crate) fn may_owe_destination(ctx: &gust_core::Context, next: &Lifecycle) -> bool {
    ctx.mode == Mode::Async
        && next.state.is_terminal()
        && (ctx.retry.on_success.is_some() || ctx.retry.on_failure.is_some())
}

/// The async invocation of destination function `f` carrying `payload` (Lambda's invocation
/// record). Backends write it in the same transaction as the finish that owes it, so it is
/// neither lost nor doubled. `None` when the destination function has no code.
pub(crate) fn destination_request(
    f: gust_core::FunctionConfig,
    payload: Vec<u8>,
    now: gust_core::Millis,
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
    };
    Some(InvocationRecord::new(request, Lifecycle::queued()))
}

/// Whether two configurations differ only in their description (publishing then makes no
/// new version: a version's description is its own).
pub(crate) fn same_but_description(a: &gust_core::FunctionSpec, b: &gust_core::FunctionSpec) -> bool {
    let strip =
        |s: &gust_core::FunctionSpec| gust_core::FunctionSpec { description: String::new(), ..s.clone() };
    strip(a) == strip(b)
}

/// The configuration a version freezes: `$LATEST`'s, with the version's own description if
/// it was given one.
pub(crate) fn version_spec(
    latest: &gust_core::FunctionSpec,
    description: Option<&str>,
) -> gust_core::FunctionSpec {
    let mut spec = latest.clone();
    if let Some(d) = description {
        spec.description = d.to_string();
    }
    spec
}

/// Refuses to delete version `number` while an alias (stored routing JSON) routes to it.
pub(crate) fn refuse_if_routed(function: &str, number: u64, routings: &[String]) -> Result<()> {
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

pub(crate) fn system_error(kind: ErrorKind, message: String) -> FunctionErrorBody {
    FunctionErrorBody::new(kind, message)
}

/// Why a report of an attempt that already completed its (now terminal) invocation changes
/// nothing: the completing worker's repeat (its first reply was lost) is recognised; the same
/// epoch from any other worker was never its attempt. Completions recorded before workers were
/// tracked (`completed_by` empty) count as the reporter's.
pub(crate) fn repeated_report(completed_by: Option<&str>, completion: &Completion) -> Rejected {
    match completed_by {
        Some(by) if by != completion.worker.0 => Rejected::NotOwner,
        _ => Rejected::AlreadyCompleted(completion.epoch),
    }
}

/// A `worker_credentials` row (joined with its worker's last heartbeat), decoded.
pub(crate) fn credential_row(
    worker: String,
    secret_sha256: String,
    origin: &str,
    created_at: i64,
    last_heartbeat: Option<i64>,
) -> Result<FoundCredential> {
    let origin = CredentialOrigin::parse(origin).ok_or_else(|| corrupt("credential origin"))?;
    Ok(FoundCredential {
        credential: WorkerCredential { worker: WorkerId(worker), secret_sha256, origin, created_at },
        last_heartbeat,
    })
}

/// An API key as both backends store it, one column per field; the SigV4 secret sealed.
pub(crate) struct KeyRow {
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
pub(crate) const KEY_COLUMNS: &str =
    "id, name, role, functions, bearer_sha256, sigv4_secret, created_at, last_used_at";

impl KeyRow {
    pub(crate) fn seal(key: &gust_core::ApiKey) -> Result<KeyRow> {
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

    pub(crate) fn open(self) -> Result<gust_core::ApiKey> {
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
