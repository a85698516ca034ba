//! Keyless sync invocations handed straight to a remote worker attached to this server: the
//! store is skipped on the way out, as in the embedded shape (the caller, waiting on this
//! server, holds the truth; the record is written behind). The attempt is still fenced and
//! leased, here in memory: the worker must be the one it was handed to, report epoch 1, and
//! renew its lease; a worker that goes silent, or hands it back, fails it as worker lost (sync
//! is never re-run); one that never picks it up within the placement timeout leaves it to the
//! store path, where any worker may run it. Work with an idempotency key, async work, and work
//! no attached worker can take go through the store as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gust_core::placement::{choose, Candidate};
use gust_core::protocol::{CompleteReply, Verdict, LIVENESS_BOUND};
use gust_core::{
    AttemptOutcome, Deployment, ErrorKind, FunctionErrorBody, InvocationId, InvocationRequest, Millis,
    Rejected, StateName, WorkerId, WorkerState,
};
use gust_store::{Claimed, Completion};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::invoke::finished_sync;
use crate::workers::Assignment;
use crate::{Invoked, Service};

type Result<T, E = crate::ServiceError> = std::result::Result<T, E>;

/// How long a handed invocation may wait for its worker's next poll before the store path
/// takes it over (a worker polls again as soon as it has a free slot).
const PICKUP_TIMEOUT_MS: Millis = 2_000;
/// Repeats of accepted reports recognised (a completion whose reply was lost is sent again).
const REMEMBERED_COMPLETIONS: usize = 4_096;

/// Verdicts by position in the caller's list.
type Answers = Vec<(usize, std::result::Result<(), Rejected>)>;

/// How a handed invocation ended.
enum Finished {
    /// The worker's report.
    Ran(Completion),
    /// Its worker stopped renewing or handed it back: it may have run; it is never re-run.
    Lost(String),
    /// No worker picked it up: it has not run.
    NotStarted,
}

struct Handed {
    worker: WorkerId,
    request: InvocationRequest,
    deployment: Arc<Deployment>,
    handed_at: Millis,
    /// `None` until the worker's poll takes it; then the end of its lease.
    lease_until: Option<Millis>,
    reply: oneshot::Sender<Finished>,
}

/// The in-memory side of direct hand-offs: what was handed to which worker, what waits for
/// each worker's next poll, the workers attached here (their latest heartbeat), and recent
/// accepted reports.
#[derive(Default)]
pub(crate) struct Direct(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    handed: HashMap<InvocationId, Handed>,
    waiting: HashMap<WorkerId, VecDeque<InvocationId>>,
    attached: HashMap<WorkerId, WorkerState>,
    done: VecDeque<(InvocationId, WorkerId, StateName)>,
}

impl Inner {
    fn end(&mut self, id: &InvocationId, how: Finished) -> bool {
        match self.handed.remove(id) {
            Some(h) => {
                let _ = h.reply.send(how);
                true
            }
            None => false,
        }
    }
}

impl Direct {
    /// Records a heartbeat received here: the worker is attached to this server.
    pub(crate) fn attached(&self, state: &WorkerState) {
        let mut inner = self.0.lock();
        let liveness = LIVENESS_BOUND.as_millis() as i64;
        let now = state.last_heartbeat;
        inner.attached.retain(|_, w| now - w.last_heartbeat <= liveness * 4);
        inner.attached.insert(state.id.clone(), state.clone());
    }

    /// Up to `max` invocations handed to `worker`, now its attempts (epoch 1) until
    /// `lease_until`.
    pub(crate) fn take(&self, worker: &WorkerId, max: usize, lease_until: Millis) -> Vec<Assignment> {
        let mut inner = self.0.lock();
        let inner = &mut *inner;
        let Some(queue) = inner.waiting.get_mut(worker) else { return Vec::new() };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = queue.pop_front() else { break };
            let Some(h) = inner.handed.get_mut(&id) else { continue };
            h.lease_until = Some(lease_until);
            out.push(Assignment {
                claimed: Claimed { request: h.request.clone(), epoch: 1, lease_expires_at: lease_until },
                deployment: h.deployment.clone(),
            });
        }
        if queue.is_empty() {
            inner.waiting.remove(worker);
        }
        out
    }

    /// Renews (or, with `release`, hands back) the attempts of `attempts` that were handed
    /// here; answers them by position, and returns the positions that are not ours.
    pub(crate) fn renew(
        &self, worker: &WorkerId, attempts: &[(InvocationId, u64)], lease_until: Millis, release: bool,
    ) -> (Answers, Vec<usize>) {
        let mut inner = self.0.lock();
        let (mut answered, mut others) = (Vec::new(), Vec::new());
        for (i, (id, epoch)) in attempts.iter().enumerate() {
            let Some(h) = inner.handed.get_mut(id) else {
                others.push(i);
                continue;
            };
            let verdict = if &h.worker != worker {
                Err(Rejected::NotOwner)
            } else if *epoch != 1 || h.lease_until.is_none() {
                Err(Rejected::Fenced { current: 1, given: *epoch })
            } else {
                h.lease_until = Some(lease_until);
                Ok(())
            };
            if verdict.is_ok() && release {
                inner.end(id, Finished::Lost(format!("worker {worker} handed back attempt 1 at shutdown")));
            }
            answered.push((i, verdict));
        }
        (answered, others)
    }

    /// Takes a worker's report of an attempt handed here; `None` if it was not handed here.
    pub(crate) fn complete(
        &self, completion: &Completion,
    ) -> Option<std::result::Result<CompleteReply, Rejected>> {
        let mut inner = self.0.lock();
        let Some(h) = inner.handed.get(&completion.id) else {
            // A repeat of a report accepted here (its reply was lost), or not ours at all.
            let repeat = inner.done.iter().find(|(id, w, _)| id == &completion.id && w == &completion.worker);
            return repeat.map(|(_, _, state)| {
                Ok(CompleteReply { state: *state, verdict: Verdict::AlreadyCompleted })
            });
        };
        if h.worker != completion.worker {
            return Some(Err(Rejected::NotOwner));
        }
        if completion.epoch != 1 || h.lease_until.is_none() {
            return Some(Err(Rejected::Fenced { current: 1, given: completion.epoch }));
        }
        let state = match completion.outcome {
            AttemptOutcome::Succeeded => StateName::Succeeded,
            AttemptOutcome::FunctionError | AttemptOutcome::Throttled => StateName::Failed,
        };
        if inner.done.len() >= REMEMBERED_COMPLETIONS {
            inner.done.pop_front();
        }
        inner.done.push_back((completion.id.clone(), completion.worker.clone(), state));
        inner.end(&completion.id, Finished::Ran(completion.clone()));
        Some(Ok(CompleteReply { state, verdict: Verdict::Accepted }))
    }

    /// Whether `sha256` is the code of an invocation handed to `worker`.
    pub(crate) fn may_fetch(&self, worker: &WorkerId, sha256: &str) -> bool {
        self.0.lock().handed.values().any(|h| &h.worker == worker && h.deployment.code_sha256 == sha256)
    }

    /// Ends `id` if its worker went silent (lease over) or never picked it up.
    fn check(&self, id: &InvocationId, now: Millis) {
        let mut inner = self.0.lock();
        let Some(h) = inner.handed.get(id) else { return };
        match h.lease_until {
            Some(until) if now > until => {
                let why =
                    format!("the worker running attempt 1 was lost (worker {}: its lease expired)", h.worker);
                inner.end(id, Finished::Lost(why));
            }
            None if now - h.handed_at > PICKUP_TIMEOUT_MS => {
                let worker = h.worker.clone();
                if let Some(q) = inner.waiting.get_mut(&worker) {
                    q.retain(|x| x != id);
                }
                inner.end(id, Finished::NotStarted);
            }
            _ => {}
        }
    }

    /// Everything waiting for a poll is left to the store path (this server is shutting down
    /// and hands out nothing more).
    pub(crate) fn unhand_waiting(&self) {
        let mut inner = self.0.lock();
        let ids: Vec<InvocationId> = inner.waiting.drain().flat_map(|(_, q)| q).collect();
        for id in ids {
            inner.end(&id, Finished::NotStarted);
        }
    }
}

impl Service {
    /// Hands a keyless sync invocation to a worker attached here that can run it now, and
    /// waits for its outcome; the request back when no attached worker can take it or none
    /// picked it up (then with `true`: it was counted already), so the store path runs it.
    pub(crate) async fn run_sync_direct(
        &self, request: InvocationRequest,
    ) -> Result<std::result::Result<Invoked, (InvocationRequest, bool)>> {
        let Some(deployment) = self.deployment(&request.function, request.resolved).await? else {
            return Ok(Err((request, false)));
        };
        let now = self.clock.now();
        let (tx, rx) = oneshot::channel();
        let worker = {
            let mut inner = self.direct.0.lock();
            if inner.handed.contains_key(&request.id) {
                // The same invocation handed over twice (by a peer): the first one runs.
                return Ok(Err((request, false)));
            }
            let liveness = LIVENESS_BOUND.as_millis() as i64;
            let waiting: HashMap<&WorkerId, u32> =
                inner.waiting.iter().map(|(w, q)| (w, q.len() as u32)).collect();
            let states: Vec<&WorkerState> = inner.attached.values().collect();
            let candidates: Vec<Candidate<'_>> = states
                .iter()
                .map(|s| Candidate { state: s, placed: waiting.get(&s.id).copied().unwrap_or(0) })
                .collect();
            let need = crate::workers::need(&deployment);
            let Some(i) = choose(&need, &candidates, now, liveness) else {
                return Ok(Err((request, false)));
            };
            let worker = candidates[i].state.id.clone();
            drop(candidates);
            drop(states);
            inner.waiting.entry(worker.clone()).or_default().push_back(request.id.clone());
            let handed = Handed {
                worker: worker.clone(),
                request: request.clone(),
                deployment: deployment.clone(),
                handed_at: now,
                lease_until: None,
                reply: tx,
            };
            inner.handed.insert(request.id.clone(), handed);
            worker
        };
        self.polls.wake_for_handed(&worker);
        crate::Metrics::inc(&self.metrics.sync_invocations);
        let finished = self.await_handed(&request, &deployment, rx).await;
        let (result, log, report) = match finished {
            Finished::NotStarted => return Ok(Err((request, true))),
            Finished::Ran(c) => match c.outcome {
                AttemptOutcome::Succeeded => (Ok(c.result.unwrap_or_default()), c.log, c.report),
                AttemptOutcome::FunctionError | AttemptOutcome::Throttled => {
                    let error = c.error.unwrap_or_else(|| {
                        FunctionErrorBody::new(ErrorKind::FunctionError, "the function failed".to_string())
                    });
                    (Err(error), c.log, c.report)
                }
            },
            Finished::Lost(why) => {
                (Err(FunctionErrorBody::new(ErrorKind::WorkerLost, why)), String::new(), None)
            }
        };
        let id = request.id.clone();
        let (record, outcome) = finished_sync(request, result, log.clone(), report, self.clock.now());
        self.write_finished(record).await;
        Ok(Ok(Invoked::Completed { id, executed_version: deployment.resolved.label(), outcome, log, report }))
    }

    /// Waits for a handed invocation to end, checking its lease (and pickup) as time passes.
    async fn await_handed(
        &self, request: &InvocationRequest, deployment: &Deployment, mut rx: oneshot::Receiver<Finished>,
    ) -> Finished {
        let check = (self.cfg.lease / 3).min(Duration::from_millis(PICKUP_TIMEOUT_MS as u64 / 2));
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(deployment.spec.timeout_ms)
            + self.cfg.lease * 2
            + Duration::from_secs(5);
        loop {
            tokio::select! {
                finished = &mut rx => {
                    return finished.unwrap_or(Finished::Lost("the attempt was dropped".into()));
                }
                _ = tokio::time::sleep(check) => self.direct.check(&request.id, self.clock.now()),
                _ = tokio::time::sleep_until(deadline) => {
                    self.direct.0.lock().end(&request.id, Finished::Lost("no outcome within the timeout".into()));
                }
            }
        }
    }
}
