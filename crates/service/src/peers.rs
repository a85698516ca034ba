//! Keyless sync invocations handed between servers. A server whose own workers cannot take a
//! keyless sync invocation hands it to the server a live worker that can is attached to (the
//! URL that server stamped on its workers' heartbeats); that server gives it straight to the
//! worker as it would its own caller's ([`crate::direct`]), writes its record behind, and
//! answers the outcome. The store is not on the way out: no placement row, no claim, no
//! announcement, no completion row to wait for.
//!
//! What may happen, and what each means:
//! - the peer answers an outcome: it ran (or its worker was lost there); it is never re-run;
//! - the peer answers that it did not start it (no worker of its had room, none picked it up,
//!   it is shutting down), or refused it, or could not be reached: it has not run, and the
//!   store path runs it here as before;
//! - the call was sent and no answer came (the peer died, the connection broke, the wait ran
//!   out): it may have run, so it fails as worker lost, as a lost worker's sync invocation
//!   does, and this server writes that record (a record the peer wrote first stands).
//!
//! The HTTP side (client and route) lives in the binary and `gust-api`; the wire format in
//! [`gust_core::peer`].

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gust_core::peer::Answer;
use gust_core::placement::{choose, Candidate};
use gust_core::protocol::LIVENESS_BOUND;
use gust_core::{ErrorKind, FunctionErrorBody, InvocationRequest, WorkerState};

use crate::invoke::finished_sync;
use crate::{Invoked, Metrics, Service, SyncOutcome};

type Result<T, E = crate::ServiceError> = std::result::Result<T, E>;

/// Sends handed-over invocations to peer servers.
#[async_trait]
pub trait Peers: Send + Sync {
    /// Hands `request` to the server at `url` and waits at most `wait` for its answer.
    async fn hand_over(&self, url: &str, request: &InvocationRequest, wait: Duration) -> Handover;
}

/// How handing an invocation to a peer ended.
#[derive(Debug)]
pub enum Handover {
    /// The peer's answer, and a success's result.
    Answered(Answer, Bytes),
    /// It did not reach the peer, or the peer refused it before running anything.
    NotStarted(String),
    /// It was sent and no answer came: it may have run.
    Lost(String),
}

/// Beyond the function's timeout and the peer's own wait for its worker, how long a handed
/// invocation's answer may take.
const ANSWER_MARGIN: Duration = Duration::from_secs(7);

impl Service {
    /// Sends the keyless sync invocations no worker attached here can take to peer servers.
    pub fn hand_over_with(&self, peers: std::sync::Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    /// The secret the cluster's servers hand over invocations with: the one in the store, or a
    /// new random one this server stores (the first server to ask).
    pub async fn peer_secret(&self) -> Result<String> {
        use rand::RngCore;
        let mut candidate = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut candidate);
        Ok(self.store.cluster_secret("peer", &hex::encode(candidate)).await?)
    }

    /// Hands a keyless sync invocation to the server of a live worker that can run it (not
    /// this server), and answers its outcome; the request back when it has not run there.
    pub(crate) async fn run_sync_at_peer(
        &self, request: InvocationRequest,
    ) -> Result<std::result::Result<Invoked, InvocationRequest>> {
        let Some(peers) = self.peers.get() else { return Ok(Err(request)) };
        let Some(deployment) = self.deployment(&request.function, request.resolved).await? else {
            return Ok(Err(request));
        };
        let now = self.clock.now();
        let liveness = LIVENESS_BOUND.as_millis() as i64;
        let workers = self.live_workers(now, liveness).await?;
        let own = self.cfg.advertise.as_deref();
        let at_peers: Vec<&WorkerState> =
            workers.iter().filter(|w| w.server.is_some() && w.server.as_deref() != own).collect();
        let candidates: Vec<Candidate<'_>> =
            at_peers.iter().map(|s| Candidate { state: s, placed: 0 }).collect();
        let need = crate::workers::need(&deployment);
        let Some(i) = choose(&need, &candidates, now, liveness) else { return Ok(Err(request)) };
        let url = candidates[i].state.server.clone().unwrap_or_default();
        let wait = Duration::from_millis(deployment.spec.timeout_ms) + self.cfg.lease * 2 + ANSWER_MARGIN;
        Metrics::inc(&self.metrics.peer_handovers);
        let (result, log, report, executed_version) = match peers.hand_over(&url, &request, wait).await {
            Handover::Answered(Answer::Finished { executed_version, error, log, report }, result) => {
                let outcome = match error {
                    None => SyncOutcome::Succeeded(result),
                    Some(error) => SyncOutcome::Failed(error),
                };
                return Ok(Ok(Invoked::Completed { id: request.id, executed_version, outcome, log, report }));
            }
            Handover::Answered(Answer::NotStarted, _) => return Ok(Err(request)),
            Handover::NotStarted(why) => {
                tracing::debug!(peer = %url, why, "handing over to a peer failed before it ran; the store path runs it");
                return Ok(Err(request));
            }
            Handover::Lost(why) => {
                Metrics::inc(&self.metrics.peer_handovers_lost);
                let why = format!("the server its worker is attached to ({url}) did not answer: {why}");
                let error = FunctionErrorBody::new(ErrorKind::WorkerLost, why);
                (Err(error), String::new(), None, deployment.resolved.label())
            }
        };
        let id = request.id.clone();
        let (record, outcome) = finished_sync(request, result, log.clone(), report, self.clock.now());
        self.write_finished(record).await;
        Ok(Ok(Invoked::Completed { id, executed_version, outcome, log, report }))
    }

    /// A keyless sync invocation a peer server handed over (it admitted it, and holds its
    /// concurrency slot): run on a worker attached here, or `None` when none took it (then it
    /// has not run).
    pub async fn run_for_peer(&self, request: InvocationRequest) -> Result<Option<Invoked>> {
        if self.is_shutting_down() {
            return Ok(None);
        }
        Metrics::inc(&self.metrics.peer_handovers_served);
        Ok(self.run_sync_direct(request).await?.ok())
    }
}
