//! The server's side of remote workers: their credentials, heartbeats (worker state),
//! placement of queued work onto live workers, and the calls a worker makes to run what it was
//! given (poll, renew, complete, fetch code). Workers never open the database: every state
//! change they cause is a guarded store transition made here.
//!
//! Identity: every worker call is made as one worker id, proven by that worker's own secret
//! (only its SHA-256 is stored). A worker gets one by enrolling with the shared enrollment
//! token (a fresh id `NAME-RANDOM`, so the token never names an existing worker), or an
//! administrator provisions one for a stable id (`gust workers create NAME`). What a worker may
//! touch is decided from the store, not from what it claims: the attempts it owns (the store
//! refuses another worker's renewal or completion as `NotOwner`) and the code of work placed
//! on it or named by its snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gust_core::placement::{choose, Candidate, Need};
use gust_core::protocol::{CompleteReply, Verdict};
use gust_core::{
    Deployment, InvocationId, Lifecycle, Mode, Rejected, Resolved, Runtime, State, WorkerId, WorkerState,
};
use gust_store::{Claimed, Completion, CredentialOrigin, FoundCredential, StoreError, WorkerCredential};
use parking_lot::Mutex;

use crate::concurrency::throttled;
use crate::{Metrics, Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The protocol's version and timings are the protocol's own (`gust_core::protocol`), shared
/// with the workers that speak it.
pub use gust_core::protocol::{
    HeartbeatReply, HEARTBEAT_INTERVAL, LIVENESS_BOUND, MAX_POLL_WAIT, VERSION as WORKER_PROTOCOL,
};
/// How often an open poll checks the store without being woken: the safety net under the
/// wake-ups placements send (in process, or announced by the store from other servers).
const POLL_RECHECK: Duration = Duration::from_secs(1);
/// Most queued invocations placed in one round.
const PLACEMENT_BATCH: usize = 512;
/// How long an enrolled worker's credential outlives its last heartbeat (or its enrollment,
/// if it never heartbeated): long enough to ride out a server restart or a network partition,
/// short enough that the credentials of workers that are gone (every restart enrolls anew)
/// stop working and are deleted. Provisioned credentials never expire; both are revocable.
/// Overridden by `gust server --worker-credential-ttl`.
pub const DEFAULT_ENROLLED_CREDENTIAL_TTL: Duration = Duration::from_secs(600);
/// How long a server trusts a credential it has checked before it reads it again: bounds how
/// long a revocation made through another server takes to apply, and keeps a store read off
/// most worker calls.
const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most credentials remembered (one per worker in use; only valid ones are remembered).
const CREDENTIAL_CACHE_CAPACITY: usize = 4_096;
/// How often the placer deletes expired enrolled credentials.
const CREDENTIAL_PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Worker secrets start with this, so a leaked one is recognisable (secret scanners, logs).
const SECRET_PREFIX: &str = "gustw_";
/// Bytes of randomness in a secret (256 bits) and in an enrolled worker id's suffix (64 bits,
/// so that ids never repeat; they need not be secret).
const SECRET_BYTES: usize = 32;
const ENROLLED_ID_BYTES: usize = 8;

/// A worker's new credential; the secret is shown here once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    pub worker: WorkerId,
    pub secret: String,
}

/// Credentials this server checked recently: secret hash to (worker, checked at); and a count
/// of removals, bumped under the lock, so a check that read the store before a credential was
/// removed never caches what the removal took away.
#[derive(Default)]
pub(crate) struct CredentialCache(Mutex<HashMap<String, (WorkerId, Instant)>>, std::sync::atomic::AtomicU64);

impl CredentialCache {
    /// Forgets `worker`'s credential after the store removed it.
    fn forget(&self, worker: &WorkerId) {
        let mut cache = self.0.lock();
        cache.retain(|_, (w, _)| w != worker);
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A worker name: 1-64 characters of `[A-Za-z0-9._-]` (an id is a name, or a name plus a
/// suffix, and must fit the protocol's 128).
fn valid_name(name: &str) -> Result<()> {
    // Starting with a letter or digit: `.` and `..` name no worker (they are path steps).
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidRequest(format!(
            "invalid worker name {:?}: use 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// How long the live workers a sync invocation is placed among are read from the store once
/// (a placement on a worker that died meanwhile returns to the queue after the placement
/// timeout, before it ever started).
const LIVE_WORKERS_TTL: Duration = Duration::from_millis(250);

/// The live workers, read from the store at most once per [`LIVE_WORKERS_TTL`].
#[derive(Default)]
pub(crate) struct LiveWorkers(Mutex<Option<(Instant, Arc<Vec<WorkerState>>)>>);

/// The wake-ups of the remote workers' polls on this server, one per worker, so a placement
/// wakes only the poll of the worker it is for; and, per worker, whether the store may hold
/// work placed on it that no poll has claimed since, so a poll asks the store only then (or
/// once a second, the safety net), not every time a worker polls: under load a worker attached
/// here polls once per batch, and most batches are handed over in memory.
#[derive(Default)]
pub(crate) struct Polls {
    wakes: Mutex<PollWakes>,
    all: tokio::sync::Notify,
}

#[derive(Default)]
struct PollWakes {
    by_worker: HashMap<WorkerId, Arc<PollWake>>,
    /// Past this many entries, those of workers that stopped polling are dropped.
    prune_at: usize,
}

/// How long a worker may go without polling here before its entry is dropped (a new poll
/// makes a fresh one, which asks the store first).
const POLL_ENTRY_IDLE: Duration = Duration::from_secs(60);

struct PollWake {
    notify: tokio::sync::Notify,
    /// Set by every wake-up about the store (a placement, missed announcements), before it
    /// notifies; taken by the poll that then asks the store.
    store: std::sync::atomic::AtomicBool,
    /// When a poll last asked the store for this worker.
    asked_at: Mutex<Instant>,
}

impl PollWake {
    fn new() -> PollWake {
        let long_ago = Instant::now().checked_sub(POLL_RECHECK).unwrap_or_else(Instant::now);
        PollWake {
            notify: tokio::sync::Notify::new(),
            store: std::sync::atomic::AtomicBool::new(true),
            asked_at: Mutex::new(long_ago),
        }
    }

    fn store_may_have_work(&self) {
        self.store.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a poll should ask the store now: something was placed since it last did, or
    /// the safety net's interval passed. Taking it clears the flag and restarts the interval.
    fn take_store_turn(&self) -> bool {
        let flagged = self.store.swap(false, std::sync::atomic::Ordering::SeqCst);
        let mut asked_at = self.asked_at.lock();
        if flagged || asked_at.elapsed() >= POLL_RECHECK {
            *asked_at = Instant::now();
            return true;
        }
        false
    }
}

impl Polls {
    /// `worker`'s wake-up, held while one of its polls is open here.
    fn open(&self, worker: &WorkerId) -> Arc<PollWake> {
        let mut wakes = self.wakes.lock();
        if let Some(wake) = wakes.by_worker.get(worker) {
            return wake.clone();
        }
        if wakes.by_worker.len() >= wakes.prune_at {
            wakes
                .by_worker
                .retain(|_, w| Arc::strong_count(w) > 1 || w.asked_at.lock().elapsed() < POLL_ENTRY_IDLE);
            wakes.prune_at = (wakes.by_worker.len() * 2).max(64);
        }
        wakes.by_worker.entry(worker.clone()).or_insert_with(|| Arc::new(PollWake::new())).clone()
    }

    /// Work was placed on `worker` in the store: its poll here asks the store again.
    pub(crate) fn wake(&self, worker: &WorkerId) {
        if let Some(w) = self.wakes.lock().by_worker.get(worker) {
            w.store_may_have_work();
            w.notify.notify_waiters();
        }
    }

    /// Work was handed to `worker` in memory: its poll here takes it without the store.
    pub(crate) fn wake_for_handed(&self, worker: &WorkerId) {
        if let Some(w) = self.wakes.lock().by_worker.get(worker) {
            w.notify.notify_waiters();
        }
    }

    /// Every poll here asks the store again (announcements were missed, or shutdown began).
    pub(crate) fn wake_all(&self) {
        for w in self.wakes.lock().by_worker.values() {
            w.store_may_have_work();
        }
        self.all.notify_waiters();
    }
}

/// One invocation handed to a worker: everything it needs to run it, including the exact
/// deployment resolved at ingest (so a worker never runs a stale or wrong version).
#[derive(Debug, Clone)]
pub struct Assignment {
    pub claimed: Claimed,
    pub deployment: Arc<Deployment>,
}

/// `workers` as placement candidates, each with what the store has placed on it.
fn candidates<'w>(workers: &'w [WorkerState], placed: &[(WorkerId, u64)]) -> Vec<Candidate<'w>> {
    let placed_on = |w: &WorkerState| placed.iter().find(|(id, _)| *id == w.id).map_or(0, |(_, n)| *n as u32);
    workers.iter().map(|w| Candidate { state: w, placed: placed_on(w) }).collect()
}

/// What running `deployment` needs from a worker.
pub(crate) fn need(deployment: &Deployment) -> Need<'_> {
    Need {
        runtime: deployment.spec.runtime,
        code_sha256: &deployment.code_sha256,
        snapshot_version: needed_snapshot(deployment.resolved),
    }
}

/// The snapshot version at which a resolved version became visible: `$LATEST@r` needs a worker
/// that has seen revision `r`; published versions are immutable and pulled on a miss.
fn needed_snapshot(resolved: Resolved) -> u64 {
    match resolved {
        Resolved::Latest { revision } => revision,
        Resolved::Version(_) => 0,
    }
}

impl Service {
    /// Enrollment: a worker that presented the enrollment token gets a fresh id (`NAME-` and
    /// 16 random hex digits) and its own secret.
    pub async fn enroll_worker(&self, name: &str) -> Result<IssuedCredential> {
        valid_name(name)?;
        let worker = WorkerId(format!("{name}-{}", random_hex(ENROLLED_ID_BYTES)));
        self.issue_credential(worker, CredentialOrigin::Enrolled).await
    }

    /// An administrator provisions a credential for the worker id `name`, for
    /// `gust worker --name NAME --secret-file F`; refused (409) if that worker has one.
    pub async fn provision_worker(&self, name: &str) -> Result<IssuedCredential> {
        valid_name(name)?;
        self.issue_credential(WorkerId(name.to_string()), CredentialOrigin::Provisioned).await
    }

    async fn issue_credential(&self, worker: WorkerId, origin: CredentialOrigin) -> Result<IssuedCredential> {
        let secret = format!("{SECRET_PREFIX}{}", random_hex(SECRET_BYTES));
        let credential = WorkerCredential {
            worker: worker.clone(),
            secret_sha256: gust_store::sha256_hex(secret.as_bytes()),
            origin,
            created_at: self.clock.now(),
        };
        self.store.create_worker_credential(credential).await?;
        tracing::info!(%worker, origin = origin.as_str(), "worker credential issued");
        Ok(IssuedCredential { worker, secret })
    }

    /// The worker a secret proves, or `None` (unknown, revoked, or an enrolled credential
    /// whose worker has been silent past the credential's lifetime).
    pub async fn authenticate_worker(&self, secret: &str) -> Result<Option<WorkerId>> {
        let sha = gust_store::sha256_hex(secret.as_bytes());
        if let Some((worker, checked)) = self.credentials.0.lock().get(&sha) {
            if checked.elapsed() < CREDENTIAL_CACHE_TTL {
                return Ok(Some(worker.clone()));
            }
        }
        let generation = self.credentials.1.load(std::sync::atomic::Ordering::SeqCst);
        let Some(found) = self.store.find_worker_credential(&sha).await? else {
            self.credentials.0.lock().remove(&sha);
            return Ok(None);
        };
        if self.credential_expired(&found) {
            self.credentials.0.lock().remove(&sha);
            return Ok(None);
        }
        let worker = found.credential.worker;
        let mut cache = self.credentials.0.lock();
        if self.credentials.1.load(std::sync::atomic::Ordering::SeqCst) != generation {
            // Removed meanwhile, perhaps: ask the store again, and cache nothing.
            drop(cache);
            let again = self.store.find_worker_credential(&sha).await?;
            return Ok(again.filter(|f| !self.credential_expired(f)).map(|f| f.credential.worker));
        }
        if cache.len() >= CREDENTIAL_CACHE_CAPACITY {
            cache.retain(|_, (_, checked)| checked.elapsed() < CREDENTIAL_CACHE_TTL);
        }
        if cache.len() < CREDENTIAL_CACHE_CAPACITY {
            cache.insert(sha, (worker.clone(), Instant::now()));
        }
        Ok(Some(worker))
    }

    fn credential_expired(&self, found: &FoundCredential) -> bool {
        match found.credential.origin {
            CredentialOrigin::Provisioned => false,
            CredentialOrigin::Enrolled => {
                let heard = found.last_heartbeat.unwrap_or(0).max(found.credential.created_at);
                let ttl = self.cfg.enrolled_credential_ttl.as_millis() as i64;
                self.clock.now().saturating_sub(heard) > ttl
            }
        }
    }

    /// Revokes a worker's credential at once on this server (within a second on the others):
    /// its calls are refused, so its leases expire and its work is recovered.
    pub async fn revoke_worker(&self, worker: &WorkerId) -> Result<()> {
        if !self.store.delete_worker_credential(worker).await? {
            return Err(ServiceError::NotFound { kind: gust_store::Kind::Worker, name: worker.0.clone() });
        }
        self.credentials.forget(worker);
        tracing::info!(%worker, "worker credential revoked");
        Ok(())
    }

    /// A worker stopping for good: an enrolled credential ends with it (a restart enrolls
    /// anew); a provisioned one stays for the worker's next start.
    pub async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        let mine =
            self.store.list_worker_credentials().await?.into_iter().find(|f| &f.credential.worker == worker);
        if mine.is_some_and(|f| f.credential.origin == CredentialOrigin::Enrolled) {
            self.store.delete_worker_credential(worker).await?;
            self.credentials.forget(worker);
        }
        Ok(())
    }

    /// Every worker credential (never a secret), with whether it is still valid.
    pub async fn worker_credentials(&self) -> Result<Vec<(FoundCredential, bool)>> {
        let all = self.store.list_worker_credentials().await?;
        Ok(all
            .into_iter()
            .map(|f| {
                let valid = !self.credential_expired(&f);
                (f, valid)
            })
            .collect())
    }

    /// Records a worker's heartbeat (its state, stamped with the server's clock).
    pub async fn worker_heartbeat(&self, mut state: WorkerState) -> Result<HeartbeatReply> {
        state.last_heartbeat = self.clock.now();
        // Where peers hand over work for this worker: this server, never the worker's say.
        state.server = self.cfg.advertise.clone();
        self.direct.attached(&state);
        self.store.put_worker(state).await?;
        self.placement_wake.notify_one();
        Ok(HeartbeatReply {
            protocol: WORKER_PROTOCOL,
            snapshot_version: self.store.snapshot_version().await?,
            lease_ms: self.cfg.lease.as_millis() as u64,
            heartbeat_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
        })
    }

    /// Workers heard from recently, for operators.
    pub async fn workers(&self) -> Result<Vec<WorkerState>> {
        Ok(self.store.list_workers(self.clock.now() - 3_600_000).await?)
    }

    /// A worker asks for up to `max` invocations placed on it; waits up to `wait` for some.
    pub async fn worker_poll(
        &self, worker: &WorkerId, max: usize, wait: Duration,
    ) -> Result<Vec<Assignment>> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_POLL_WAIT);
        let open = self.polls.open(worker);
        loop {
            // Made before the store is asked, so a placement committed meanwhile still wakes us.
            let (mine, all) = (open.notify.notified(), self.polls.all.notified());
            // A server shutting down hands out no more work (and holds no poll open).
            if self.is_shutting_down() {
                return Ok(Vec::new());
            }
            let now = self.clock.now();
            let lease_until = now + self.cfg.lease.as_millis() as i64;
            // Handed here directly first: no store on the way.
            let handed = self.direct.take(worker, max.min(256), lease_until);
            if !handed.is_empty() {
                return Ok(handed);
            }
            let claimed = match open.take_store_turn() {
                true => match self.store.claim_placed(worker, max.min(256), lease_until, now).await {
                    // A full batch may leave more behind.
                    Ok(claimed) if claimed.len() == max.min(256) => {
                        open.store_may_have_work();
                        claimed
                    }
                    Ok(claimed) => claimed,
                    Err(e) => {
                        open.store_may_have_work();
                        return Err(e.into());
                    }
                },
                false => Vec::new(),
            };
            if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
                let mut out = Vec::with_capacity(claimed.len());
                for c in claimed {
                    if c.request.mode == Mode::Async && !self.slot_for_remote(worker, &c).await {
                        continue;
                    }
                    match self.deployment(&c.request.function, c.request.resolved).await? {
                        Some(deployment) => out.push(Assignment { claimed: c, deployment }),
                        None => {
                            // The version is gone (function deleted): fail the attempt now.
                            let gone = gust_core::FunctionErrorBody::new(
                                gust_core::ErrorKind::InitError,
                                format!(
                                    "{}:{} no longer exists",
                                    c.request.function,
                                    c.request.resolved.label()
                                ),
                            );
                            let outcome = gust_core::AttemptOutcome::FunctionError;
                            let completion = Completion::not_run(&c, worker, outcome, gone);
                            let _ = self.store.complete(completion, self.clock.now()).await;
                        }
                    }
                }
                return Ok(out);
            }
            tokio::select! {
                _ = mine => {}
                _ = all => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tokio::time::sleep(POLL_RECHECK) => {}
            }
        }
    }

    pub async fn worker_renew(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>,
    ) -> Result<Vec<std::result::Result<(), Rejected>>> {
        let now = self.clock.now();
        let until = now + self.cfg.lease.as_millis() as i64;
        self.renew_or_release(worker, attempts, until, false).await
    }

    /// Renews (or, with `release`, hands back) attempts: those handed here directly in
    /// memory, the others in the store; answers in the caller's order.
    pub(crate) async fn renew_or_release(
        &self, worker: &WorkerId, attempts: Vec<(InvocationId, u64)>, until: gust_core::Millis, release: bool,
    ) -> Result<Vec<std::result::Result<(), Rejected>>> {
        let (mut answered, others) = self.direct.renew(worker, &attempts, until, release);
        if !others.is_empty() {
            let theirs: Vec<(InvocationId, u64)> = others.iter().map(|&i| attempts[i].clone()).collect();
            let stored = if release {
                self.hand_back(worker, theirs).await?
            } else {
                let now = self.clock.now();
                self.store.renew_leases(worker, theirs, until, now).await?
            };
            answered.extend(others.into_iter().zip(stored));
        }
        answered.sort_by_key(|(i, _)| *i);
        // Only the attempt's own worker, renewing or handing back its current attempt, keeps
        // or gives back its concurrency slot: a refused entry (another worker's attempt, an
        // older epoch) leaves the slot to the attempt that holds it.
        let taken = answered.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| &attempts[*i].0);
        match release {
            true => taken.for_each(|id| self.remote_slots.end(id)),
            false => self.remote_slots.renewed(taken),
        }
        Ok(answered.into_iter().map(|(_, r)| r).collect())
    }

    /// A worker reports an attempt's outcome: the verdict and the invocation's state after it.
    /// A repeat of the accepted report (its first reply was lost) is taken again, as
    /// `already_completed` (and counted); a fenced attempt is refused (and counted); an attempt
    /// the reporting worker (`completion.worker`) does not own is refused.
    pub async fn worker_complete(&self, completion: Completion) -> Result<CompleteReply> {
        let id = completion.id.clone();
        let worker_of_completion = completion.worker.clone();
        let result = match self.direct.complete(&completion) {
            Some(Ok(reply)) => {
                if reply.verdict == Verdict::AlreadyCompleted {
                    Metrics::inc(&self.metrics.repeated_completions);
                }
                return Ok(reply);
            }
            Some(Err(rejected)) => Err(StoreError::Rejected(rejected)),
            None => self.store.complete(completion, self.clock.now()).await,
        };
        if !matches!(result, Err(StoreError::Rejected(Rejected::NotOwner))) {
            self.dispatch.completed(&id);
        }
        // A fenced report is of an attempt that no longer holds the slot (a newer one may).
        if matches!(result, Ok(_) | Err(StoreError::Rejected(Rejected::AlreadyCompleted(_)))) {
            self.remote_slots.end(&id);
        }
        match result {
            Ok(lc) => Ok(CompleteReply { state: lc.state.name(), verdict: Verdict::Accepted }),
            // A retried report of the accepted attempt (the first reply was lost): ack it again.
            Err(StoreError::Rejected(Rejected::AlreadyCompleted(_))) => {
                Metrics::inc(&self.metrics.repeated_completions);
                let rec = self
                    .store
                    .get_invocation(&id)
                    .await?
                    .ok_or_else(|| ServiceError::Internal("vanished".into()))?;
                Ok(CompleteReply { state: rec.lifecycle.state.name(), verdict: Verdict::AlreadyCompleted })
            }
            Err(StoreError::Rejected(r @ Rejected::Fenced { .. })) => {
                Metrics::inc(&self.metrics.fenced_completions);
                Err(ServiceError::Fenced(r.to_string()))
            }
            Err(StoreError::Rejected(Rejected::NotOwner)) => Err(ServiceError::WorkerForbidden(format!(
                "invocation {id} is not an attempt of worker {}",
                worker_of_completion
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The control-plane delta `worker` pulls when its snapshot version moves: every function
    /// of a runtime it reported whose `$LATEST` changed after `since`, so the worker can fetch
    /// and compile new code before the first invocation needs it. A worker that has not
    /// heartbeated yet (no runtimes known) is named nothing.
    pub async fn snapshot_delta(
        &self, worker: &WorkerId, since: u64,
    ) -> Result<(u64, Vec<gust_core::FunctionConfig>)> {
        let version = self.store.snapshot_version().await?;
        let runtimes = self.reported_runtimes(worker).await?;
        let changed = self.functions_for(&runtimes, |f| f.revision > since).await?;
        Ok((version, changed))
    }

    /// Functions of the runtimes in `runtimes` (by family) that pass `keep`.
    async fn functions_for(
        &self, runtimes: &[Runtime], keep: impl Fn(&gust_core::FunctionConfig) -> bool,
    ) -> Result<Vec<gust_core::FunctionConfig>> {
        let mut out = Vec::new();
        if runtimes.is_empty() {
            return Ok(out);
        }
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_functions(after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            let full = page.len() == 1000;
            out.extend(
                page.into_iter()
                    .filter(|f| runtimes.iter().any(|r| r.same_family(f.spec.runtime)) && keep(f)),
            );
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The runtimes `worker` said it runs in its latest heartbeat (none if never heard from).
    async fn reported_runtimes(&self, worker: &WorkerId) -> Result<Vec<Runtime>> {
        let since = self.clock.now() - 3_600_000;
        let workers = self.store.list_workers(since).await?;
        Ok(workers.into_iter().find(|w| &w.id == worker).map(|w| w.runtimes).unwrap_or_default())
    }

    /// Code for `worker`, only if it may run it: code of an invocation placed on it or that it
    /// runs, or the `$LATEST` code of a function its snapshot names. Anything else is refused
    /// before the artifact is even looked up (so a refusal says nothing about what exists).
    /// Rare (once per code per worker), so it may scan: a few store reads.
    pub async fn worker_artifact(&self, worker: &WorkerId, sha256: &str) -> Result<Bytes> {
        if !self.may_fetch(worker, sha256).await? {
            return Err(ServiceError::WorkerForbidden(format!(
                "artifact {} is not code of work placed on worker {worker} nor named by its snapshot",
                sha256.chars().take(80).collect::<String>()
            )));
        }
        Ok(self.store.get_artifact(sha256).await?)
    }

    async fn may_fetch(&self, worker: &WorkerId, sha256: &str) -> Result<bool> {
        if self.direct.may_fetch(worker, sha256) {
            return Ok(true);
        }
        for (function, resolved) in self.store.assigned_deployments(worker).await? {
            if self.deployment(&function, resolved).await?.is_some_and(|d| d.code_sha256 == sha256) {
                return Ok(true);
            }
        }
        let runtimes = self.reported_runtimes(worker).await?;
        let named = self.functions_for(&runtimes, |f| f.code_sha256.as_deref() == Some(sha256)).await?;
        Ok(!named.is_empty())
    }

    /// Places queued invocations on live remote workers (pure policy in
    /// `gust_core::placement`), then wakes their polls.
    pub(crate) async fn placer(self: Arc<Self>) {
        let mut next_prune = tokio::time::Instant::now();
        loop {
            // A server shutting down places nothing more (its workers' polls get nothing).
            if self.is_shutting_down() {
                return;
            }
            if tokio::time::Instant::now() >= next_prune {
                next_prune += CREDENTIAL_PRUNE_INTERVAL;
                let silent_since = self.clock.now() - self.cfg.enrolled_credential_ttl.as_millis() as i64;
                match self.store.prune_enrolled_credentials(silent_since).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(n, "expired enrolled worker credentials deleted"),
                    Err(e) => tracing::warn!(error = %e, "pruning worker credentials failed"),
                }
            }
            match self.place_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => self.dispatch.failed_for_space(
                    "a placement round",
                    matches!(e, ServiceError::InsufficientStorage(_)),
                    &e,
                ),
            }
            tokio::select! {
                _ = self.placement_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// One placement round: queued invocations placed on live workers that can run them
    /// (and those workers' polls woken); answers how many were placed.
    #[doc(hidden)] // A single pass of a background loop, for lifecycle tests.
    pub async fn place_once(&self) -> Result<usize> {
        let now = self.clock.now();
        let liveness = LIVENESS_BOUND.as_millis() as i64;
        let workers = self.store.list_workers(now - liveness).await?;
        if workers.is_empty() {
            return Ok(0);
        }
        let queued = self.store.queued(PLACEMENT_BATCH).await?;
        if queued.is_empty() {
            return Ok(0);
        }
        let placed = self.store.placed_counts().await?;
        let mut candidates = candidates(&workers, &placed);
        let mut batch = Vec::new();
        for (id, function, resolved) in queued {
            if let Some(worker) = self.pick(&mut candidates, &function, resolved, now, liveness).await? {
                batch.push((id, worker));
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let workers: Vec<WorkerId> = batch.iter().map(|(_, w)| w.clone()).collect();
        let results = self.store.place(batch, now).await?;
        let mut placed = 0;
        for (worker, r) in workers.iter().zip(&results) {
            if r.is_ok() {
                placed += 1;
                self.polls.wake(worker);
            }
        }
        Ok(placed)
    }

    /// Places a batch's async invocations as they are inserted, on a server without a local
    /// worker (what [`Service::place_once`] would do a round later, without its three reads):
    /// on live workers that can run them, counting what the store has placed on each plus
    /// this batch, so a burst spreads as the placer spreads it. What no worker can take now
    /// stays queued for the placer. Answers the worker each entry was placed on. A failed
    /// read places nothing: the placer is the safety net.
    pub(crate) async fn place_at_ingest(
        &self, batch: &mut [gust_store::NewInvocation],
    ) -> Vec<Option<WorkerId>> {
        let mut placed_on = vec![None; batch.len()];
        if !batch.iter().any(|n| n.request.mode == Mode::Async && n.lifecycle.state == State::Queued) {
            return placed_on;
        }
        let now = self.clock.now();
        let liveness = LIVENESS_BOUND.as_millis() as i64;
        // Read fresh, as the placer reads them (a cached list may show a full worker free),
        // and side by side: one round trip's wait.
        let (workers, placed) =
            tokio::join!(self.store.list_workers(now - liveness), self.store.placed_counts());
        let (Ok(workers), Ok(placed)) = (workers, placed) else { return placed_on };
        let mut candidates = candidates(&workers, &placed);
        for (new, on) in batch.iter_mut().zip(placed_on.iter_mut()) {
            if new.request.mode != Mode::Async || new.lifecycle.state != State::Queued {
                continue;
            }
            let (function, resolved) = (&new.request.function, new.request.resolved);
            if let Ok(Some(worker)) = self.pick(&mut candidates, function, resolved, now, liveness).await {
                new.lifecycle.state = State::Placed { worker: worker.clone(), placed_at: now };
                *on = Some(worker);
            }
        }
        placed_on
    }

    /// The worker among `candidates` to run `function` at `resolved` now (counted as placed
    /// on it), if one can ([`choose`]'s policy).
    async fn pick(
        &self, candidates: &mut [Candidate<'_>], function: &str, resolved: Resolved, now: gust_core::Millis,
        liveness: i64,
    ) -> Result<Option<WorkerId>> {
        let Some(d) = self.deployment(function, resolved).await? else { return Ok(None) };
        let need = need(&d);
        Ok(choose(&need, candidates, now, liveness).map(|i| {
            candidates[i].placed += 1;
            candidates[i].state.id.clone()
        }))
    }

    pub(crate) async fn live_workers(
        &self, now: gust_core::Millis, liveness: i64,
    ) -> Result<Arc<Vec<WorkerState>>> {
        if let Some((read, workers)) = self.live_workers.0.lock().as_ref() {
            if read.elapsed() < LIVE_WORKERS_TTL {
                return Ok(workers.clone());
            }
        }
        let workers = Arc::new(self.store.list_workers(now - liveness).await?);
        // None is never remembered: a worker that just joined is found at once.
        if !workers.is_empty() {
            *self.live_workers.0.lock() = Some((Instant::now(), workers.clone()));
        }
        Ok(workers)
    }

    /// A concurrency slot for an async attempt just claimed for remote `worker`, held here
    /// until it ends; without one (its function at its reserved concurrency across the
    /// cluster) the attempt is handed back to wait, as the local dispatcher does, and `false`.
    async fn slot_for_remote(&self, worker: &WorkerId, c: &Claimed) -> bool {
        let req = &c.request;
        let limit = self.cached_function(&req.function).await.ok().and_then(|f| f.spec.reserved_concurrency);
        match self.cluster_slot(&req.function, limit).await {
            Ok(Ok(Some(slot))) => {
                self.remote_slots.hold(req.id.clone(), slot);
                true
            }
            Ok(Ok(None)) => true,
            Ok(Err(())) | Err(_) => {
                self.count_throttle(&req.function);
                let completion = Completion::not_run(
                    c,
                    worker,
                    gust_core::AttemptOutcome::Throttled,
                    throttled(&req.function),
                );
                if let Err(e) = self.store.complete(completion, self.clock.now()).await {
                    tracing::warn!(id = %req.id, error = %e, "handing back a throttled attempt failed");
                }
                false
            }
        }
    }

    /// Sync invocations when this server has no local worker: queued for a remote worker, and
    /// the caller waits for the one outcome (a lost worker fails it: sync is never re-run).
    pub(crate) async fn run_sync_remote(
        &self, request: gust_core::InvocationRequest,
    ) -> Result<crate::Invoked> {
        debug_assert_eq!(request.mode, Mode::Sync);
        // Without a key the caller holds the truth: a worker attached here takes it directly.
        let (request, counted) = match request.idempotency_key {
            None => match self.run_sync_direct(request).await? {
                Ok(invoked) => return Ok(invoked),
                // No worker attached here can take it: one attached to a peer server may.
                Err((request, false)) => match self.run_sync_at_peer(request).await? {
                    Ok(invoked) => return Ok(invoked),
                    Err(request) => (request, false),
                },
                // Handed to a worker here that did not pick it up (and counted).
                Err((request, true)) => (request, true),
            },
            Some(_) => (request, false),
        };
        // Refuse at once, rather than after the timeout, when nothing could run it.
        let now = self.clock.now();
        let liveness = LIVENESS_BOUND.as_millis() as i64;
        let workers = self.live_workers(now, liveness).await?;
        if workers.is_empty() {
            return Err(ServiceError::Unavailable(
                "no live worker can run this invocation: start one with `gust worker`".into(),
            ));
        }
        // Placed as it is inserted, on a live worker that can run it (this server's placer
        // would place it a round later): the store announces it to that worker's server.
        let mut lifecycle = Lifecycle::queued();
        let mut candidates = candidates(&workers, &[]);
        if let Some(worker) =
            self.pick(&mut candidates, &request.function, request.resolved, now, liveness).await?
        {
            lifecycle.state = State::Placed { worker, placed_at: now };
        }
        let placed_on = match &lifecycle.state {
            State::Placed { worker, .. } => Some(worker.clone()),
            _ => None,
        };
        let new = gust_store::NewInvocation { request, lifecycle };
        let record = match self.insert_one(new.clone()).await? {
            Ok(gust_store::Inserted::Created) => {
                if !counted {
                    Metrics::inc(&self.metrics.sync_invocations);
                }
                match &placed_on {
                    Some(worker) => self.polls.wake(worker),
                    None => self.placement_wake.notify_one(),
                }
                gust_core::InvocationRecord::new(new.request, new.lifecycle)
            }
            Ok(gust_store::Inserted::Existing(rec)) => *rec,
            Err(e) => return Err(e.into()),
        };
        self.await_outcome(record).await
    }
}
