//! Admission and the hot path of an invocation.
//!
//! # The hot path (sync invocation, embedded shape, no idempotency key)
//!
//! Budget: **zero store round trips** before the reply, **zero payload copies** (the body is a
//! `Bytes` shared with the runtime's stdin), one uuid, a few small allocations, and the
//! runtime's own cost (one pooled instantiation, ~3 µs for a no-op). Resolution reads the control-plane cache; the invocation's
//! record is written behind, batched by the store's group commit, because a keyless sync
//! caller holds the truth (DESIGN.md, "What must be durable"). Only while the server shuts
//! down (two relaxed loads of a flag otherwise) does the reply wait for its record, since the
//! process is about to exit.
//!
//! With an `Idempotency-Key` the key is reserved durably first (one group-committed write) so
//! a retried request can never run the function twice; async invocations are acknowledged only
//! after their group commit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gust_core::lambda::{CallContext, HttpCall, ResponseStream};
use gust_core::limits::{MAX_ASYNC_PAYLOAD_BYTES, MAX_SYNC_PAYLOAD_BYTES};
use gust_core::names::validate_function_name;
use gust_core::{
    Deployment, ErrorKind, FunctionConfig, FunctionErrorBody, InvocationId, InvocationRecord,
    InvocationRequest, Lifecycle, Mode, Qualifier, Resolved, State,
};
use gust_store::{Inserted, Kind, NewInvocation, StoreError};
use sha2::{Digest, Sha256};

use crate::{Execution, Metrics, Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

pub struct InvokeInput {
    pub function: String,
    /// `None` means `$LATEST`.
    pub qualifier: Option<String>,
    pub payload: Bytes,
    pub mode: Mode,
    pub idempotency_key: Option<String>,
    /// Client-Context for the runtime (JSON); sync invocations only (Lambda passes it to
    /// synchronous invocations only), stored with the request when a remote worker runs it.
    pub client_context: Option<String>,
    /// Where the response goes as the function streams it (a function URL in RESPONSE_STREAM
    /// mode). Only this server's own worker streams; elsewhere the caller gets it whole.
    pub stream: Option<Arc<dyn ResponseStream>>,
    /// A function URL's request. Served as it came when the function handles HTTP itself and
    /// runs on this server's own worker (then `payload` is only its summary for the record);
    /// else made into Lambda's event, which becomes the payload.
    pub http: Option<HttpInvoke>,
    /// The caller's trace (`X-Amzn-Trace-Id` or `traceparent`); a new one is started if none.
    pub trace: Option<gust_core::trace::Trace>,
}

/// A function URL's request, and how to make Lambda's event of it if it must become one.
pub struct HttpInvoke {
    pub call: HttpCall,
    /// Lambda's event (payload format 2.0) of the request, made from it.
    pub event: Box<dyn FnOnce(HttpCall) -> Bytes + Send>,
}

impl std::fmt::Debug for InvokeInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvokeInput")
            .field("function", &self.function)
            .field("qualifier", &self.qualifier)
            .field("mode", &self.mode)
            .field("payload_bytes", &self.payload.len())
            .field("stream", &self.stream.is_some())
            .field("http", &self.http.is_some())
            .finish()
    }
}

/// What a sync invocation on this server's own worker passes to the runtime besides the payload.
#[derive(Clone, Copy)]
struct Call<'a> {
    client_context: Option<&'a str>,
    stream: Option<&'a Arc<dyn ResponseStream>>,
    http: Option<&'a HttpCall>,
}

/// How a sync invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    Succeeded(Bytes),
    Failed(FunctionErrorBody),
}

#[derive(Debug, Clone)]
pub enum Invoked {
    /// A sync invocation finished (just now, or earlier for a repeated idempotency key).
    Completed {
        id: InvocationId,
        executed_version: String,
        outcome: SyncOutcome,
        log: String,
        /// The attempt's figures (Lambda's REPORT line), where it ran.
        report: Option<gust_core::Report>,
    },
    /// An async invocation is durably queued (or was, for a repeated idempotency key).
    Accepted { id: InvocationId, existing: bool },
}

fn fingerprint(qualifier: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(qualifier.as_bytes());
    h.update([0]);
    h.update(payload);
    hex::encode(h.finalize())
}

/// The outcome a finished record shows a sync caller; `None` while it is not finished.
pub(crate) fn outcome_of(rec: &InvocationRecord) -> Option<SyncOutcome> {
    match rec.lifecycle.state {
        State::Succeeded => Some(SyncOutcome::Succeeded(rec.result.clone().unwrap_or_default())),
        State::Failed | State::Expired => Some(SyncOutcome::Failed(
            rec.error
                .clone()
                .unwrap_or(FunctionErrorBody::new(ErrorKind::FunctionError, "the invocation failed")),
        )),
        State::Queued | State::Placed { .. } | State::Running { .. } | State::RetryWait { .. } => None,
    }
}

impl Service {
    /// Admits one invocation: validates, resolves the qualifier to one concrete version,
    /// applies idempotency, then runs it (sync) or queues it durably (async).
    pub async fn invoke(self: &Arc<Self>, input: InvokeInput) -> Result<Invoked> {
        if let Some(key) = &input.idempotency_key {
            let printable = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !printable {
                return Err(ServiceError::InvalidRequest(format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"
                )));
            }
        }
        self.admit(input).await
    }

    /// [`Service::invoke`] for gust's own callers, whose idempotency keys may hold a space: a
    /// key no client can send (a schedule's firing), so no client can take it first.
    pub(crate) async fn admit(self: &Arc<Self>, mut input: InvokeInput) -> Result<Invoked> {
        use gust_core::trace::{Span, SpanKind, Trace, Value};
        let received = self.clock.now();
        let mut trace = input.trace.take().unwrap_or_else(|| Trace {
            sampled: self.cfg.sample_new_traces,
            ..Trace::new(received, rand::random())
        });
        // This server's own span (`gust.request`, from the request to its answer), when it
        // exports spans: the attempts' spans, wherever they run, are its children.
        let sink = self.span_sink.get().filter(|_| trace.sampled);
        let span = sink.map(|_| {
            let (id, caller) = (rand::random::<[u8; 8]>(), trace.parent);
            trace.parent = Some(id);
            (id, caller)
        });
        // Kept for the span only (the hot path does not copy the name).
        let (function, mode) = (sink.map(|_| input.function.clone()).unwrap_or_default(), input.mode);
        let result = self.admit_traced(input, trace).await;
        if let (Some(sink), Some((span_id, parent))) = (sink, span) {
            let end = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut attributes = vec![
                ("faas.invoked_name", Value::Text(function)),
                ("gust.mode", Value::Text(mode.as_str().to_string())),
            ];
            let error = match &result {
                Ok(Invoked::Completed { id, outcome, .. }) => {
                    attributes.push(("faas.invocation_id", Value::Text(id.0.clone())));
                    match outcome {
                        SyncOutcome::Succeeded(_) => None,
                        SyncOutcome::Failed(e) => Some(e.error_type.as_str().to_string()),
                    }
                }
                Ok(Invoked::Accepted { id, .. }) => {
                    attributes.push(("faas.invocation_id", Value::Text(id.0.clone())));
                    None
                }
                // The kind of refusal only (its variant's name), never its message.
                Err(e) => Some(format!("{e:?}").split([' ', '(', '{']).next().unwrap_or("Error").to_string()),
            };
            sink.export(vec![Span {
                trace_id: trace.trace_id,
                span_id,
                parent,
                name: "gust.request",
                kind: SpanKind::Server,
                start_unix_ns: (received.max(0) as u64).saturating_mul(1_000_000).min(end),
                end_unix_ns: end,
                attributes,
                error,
            }]);
        }
        result
    }

    /// Sends the spans of this server's requests from now on to `sink` (set once).
    pub fn export_spans_to(&self, sink: Arc<dyn gust_core::trace::SpanSink>) {
        let _ = self.span_sink.set(sink);
    }

    /// Admits `input` in `trace` (the caller's, or one started for it).
    async fn admit_traced(
        self: &Arc<Self>, input: InvokeInput, trace: gust_core::trace::Trace,
    ) -> Result<Invoked> {
        if self.is_shutting_down() {
            return Err(ServiceError::ShuttingDown);
        }
        validate_function_name(&input.function)?;
        let qualifier = Qualifier::parse(input.qualifier.as_deref())?;
        let limit = match input.mode {
            Mode::Sync => MAX_SYNC_PAYLOAD_BYTES,
            Mode::Async => MAX_ASYNC_PAYLOAD_BYTES,
        };
        let too_large = |size: usize| ServiceError::TooLarge { what: "payload", size, limit };
        if input.payload.len() > limit {
            return Err(too_large(input.payload.len()));
        }
        let config = self.cached_function(&input.function).await?;
        let deployment = self.resolve(&config, &qualifier).await?;
        let (payload, http) = match input.http {
            Some(h) if self.cfg.local_worker && self.executor.serves_http(&deployment) => {
                (input.payload, Some(h.call))
            }
            Some(h) => ((h.event)(h.call), None),
            None => (input.payload, None),
        };
        if payload.len() > limit {
            return Err(too_large(payload.len()));
        }
        // Kept as the caller wrote it: an unqualified invocation tells its runtime the
        // unqualified ARN, as Lambda does (the fingerprint names the version it means).
        let fingerprint =
            input.idempotency_key.as_ref().map(|_| fingerprint(&qualifier.as_string(), &payload));
        let qualifier = match input.qualifier.as_deref() {
            None | Some("") => String::new(),
            Some(_) => qualifier.as_string(),
        };
        // Read right before the id is made: both name the time it was received (the id's
        // UUIDv7 time is what `received_before` pages by).
        let now = self.clock.now();
        let request = InvocationRequest {
            id: InvocationId(uuid::Uuid::now_v7().to_string()),
            function: input.function,
            fingerprint,
            qualifier,
            resolved: deployment.resolved,
            payload,
            mode: input.mode,
            idempotency_key: input.idempotency_key,
            received_at: now,
            retry: deployment.spec.retry.clone(),
            client_context: match input.mode {
                Mode::Sync => input.client_context,
                Mode::Async => None,
            },
            trace_id: Some(trace.xray()),
        };
        if request.mode == Mode::Async {
            return self.enqueue(request).await;
        }
        // Sync work counts against the function's reserved concurrency while it runs here.
        let limit = config.spec.reserved_concurrency;
        let Some(_permit) = self.concurrency.try_acquire(&request.function, limit) else {
            self.count_throttle(&request.function);
            return Err(ServiceError::Throttled { function: request.function, limit: limit.unwrap_or(0) });
        };
        // And across every server sharing the store.
        let Ok(_slot) = self.cluster_slot(&request.function, limit).await? else {
            self.count_throttle(&request.function);
            return Err(ServiceError::Throttled { function: request.function, limit: limit.unwrap_or(0) });
        };
        let client_context = request.client_context.clone();
        let call = Call {
            client_context: client_context.as_deref(),
            stream: input.stream.as_ref(),
            http: http.as_ref(),
        };
        match request.idempotency_key.is_some() {
            _ if !self.cfg.local_worker => self.run_sync_remote(request).await,
            false => Ok(self.run_sync_unrecorded(&deployment, request, call).await),
            true => self.run_sync_keyed(&deployment, request, call).await,
        }
    }

    /// Resolves a qualifier to the immutable deployment it names right now.
    async fn resolve(&self, config: &FunctionConfig, qualifier: &Qualifier) -> Result<Arc<Deployment>> {
        let function = config.name.as_str();
        let resolved = match qualifier {
            Qualifier::Latest => {
                if config.code_sha256.is_none() {
                    return Err(ServiceError::Conflict(format!(
                        "function {function} has no code yet: upload code before invoking it"
                    )));
                }
                Resolved::Latest { revision: config.revision }
            }
            Qualifier::Version(n) => Resolved::Version(*n),
            Qualifier::Alias(alias) => {
                let alias = self.cached_alias(function, alias).await?;
                Resolved::Version(alias.routing.pick(rand::random::<f64>()))
            }
        };
        self.deployment(function, resolved).await?.ok_or_else(|| ServiceError::NotFound {
            kind: Kind::Version,
            name: format!("{function}:{}", resolved.label()),
        })
    }

    /// The immutable deployment of a resolved version (cached).
    pub(crate) async fn deployment(
        &self, function: &str, resolved: Resolved,
    ) -> Result<Option<Arc<Deployment>>> {
        if let Some(d) = self.cache.deployment(function, resolved) {
            return Ok(Some(d));
        }
        let generation = self.cache.generation();
        let Some(d) = self.store.get_deployment(function, resolved).await? else { return Ok(None) };
        let d = Arc::new(d);
        self.cache.insert_deployment(generation, d.clone());
        Ok(Some(d))
    }

    async fn enqueue(&self, request: InvocationRequest) -> Result<Invoked> {
        self.admit_async(&request.function)?;
        let id = request.id.clone();
        let new = NewInvocation { request, lifecycle: Lifecycle::queued() };
        match self.insert_one(new).await? {
            Ok(Inserted::Created) => {
                Metrics::inc(&self.metrics.async_invocations);
                // Without a local worker the ingest batch placed it or woke the placer.
                if self.cfg.local_worker {
                    self.wake_dispatcher();
                }
                Ok(Invoked::Accepted { id, existing: false })
            }
            Ok(Inserted::Existing(rec)) => Ok(Invoked::Accepted { id: rec.request.id, existing: true }),
            Err(e) => Err(e.into()),
        }
    }

    /// The hot path: run now, answer, write the record behind.
    async fn run_sync_unrecorded(
        &self, deployment: &Deployment, request: InvocationRequest, call: Call<'_>,
    ) -> Invoked {
        Metrics::inc(&self.metrics.sync_invocations);
        let call = CallContext {
            qualifier: &request.qualifier,
            client_context: call.client_context,
            stream: call.stream,
            http: call.http,
            trace_id: request.trace_id.as_deref(),
            received_at: Some(request.received_at),
            is_async: false,
        };
        let exec = self.executor.execute(deployment, &request.id, request.payload.clone(), &call).await;
        self.count_attempt(&exec);
        let id = request.id.clone();
        let report = exec.report;
        let (record, outcome) =
            finished_sync(request, exec.result, exec.log.clone(), report, self.clock.now());
        self.write_finished(record).await;
        Invoked::Completed {
            id,
            executed_version: deployment.resolved.label(),
            outcome,
            log: exec.log,
            report,
        }
    }

    /// Writes the record of a sync invocation that ran without one behind the answer (durably
    /// first when the process is about to exit).
    pub(crate) async fn write_finished(&self, record: InvocationRecord) {
        if self.is_shutting_down() {
            self.dispatch.write_behind_durably(record).await;
        } else {
            self.write_behind(record);
        }
    }

    /// Queues a finished record for the write-behind task; drops (and counts) it if the
    /// queue is full rather than slowing the caller down.
    fn write_behind(&self, record: InvocationRecord) {
        if !self.dispatch.write_behind(record) {
            Metrics::inc(&self.metrics.records_dropped);
        }
    }

    /// Sync with an idempotency key: reserve the key durably (already claimed by this worker,
    /// epoch 1), run, complete with the epoch. A repeated key returns the first outcome.
    async fn run_sync_keyed(
        &self, deployment: &Deployment, request: InvocationRequest, call: Call<'_>,
    ) -> Result<Invoked> {
        let (id, payload, qualifier, trace_id, received_at) = (
            request.id.clone(),
            request.payload.clone(),
            request.qualifier.clone(),
            request.trace_id.clone(),
            request.received_at,
        );
        let lease_until = self.clock.now() + self.cfg.lease.as_millis() as i64;
        let new =
            NewInvocation { request, lifecycle: Lifecycle::claimed(self.cfg.worker_id.clone(), lease_until) };
        let existing = match self.insert_one(new).await? {
            Ok(Inserted::Created) => None,
            Ok(Inserted::Existing(rec)) => Some(rec),
            Err(e) => return Err(e.into()),
        };
        if let Some(existing) = existing {
            return self.await_outcome(*existing).await;
        }
        Metrics::inc(&self.metrics.sync_invocations);
        self.track_attempt(&id, 1);
        let call = CallContext {
            qualifier: &qualifier,
            client_context: call.client_context,
            stream: call.stream,
            http: call.http,
            trace_id: trace_id.as_deref(),
            received_at: Some(received_at),
            is_async: false,
        };
        let exec = self.executor.execute(deployment, &id, payload, &call).await;
        let (log, report) = (exec.log.clone(), exec.report);
        let finished = self.finish_attempt(&id, 1, exec.clone()).await;
        match finished {
            Ok(_) => Ok(Invoked::Completed {
                id,
                executed_version: deployment.resolved.label(),
                outcome: match exec.result {
                    Ok(out) => SyncOutcome::Succeeded(out),
                    Err(e) => SyncOutcome::Failed(e),
                },
                log,
                report,
            }),
            // Our attempt was fenced (e.g. the lease expired while this process was paused):
            // the stored outcome is the one outcome, so report that.
            Err(StoreError::Rejected(_)) => {
                let rec = self
                    .store
                    .get_invocation(&id)
                    .await?
                    .ok_or_else(|| ServiceError::Internal("vanished".into()))?;
                self.await_outcome(rec).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until an invocation has its terminal outcome, polling the store (another request,
    /// possibly on another server, is running it).
    pub(crate) async fn await_outcome(&self, mut rec: InvocationRecord) -> Result<Invoked> {
        let timeout = self
            .deployment(&rec.request.function, rec.request.resolved)
            .await
            .ok()
            .flatten()
            .map_or(gust_core::limits::MAX_TIMEOUT_MS, |d| d.spec.timeout_ms);
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(timeout)
            + self.cfg.lease * 2
            + Duration::from_secs(5);
        let mut wait = Duration::from_millis(5);
        let waiter = self.dispatch.wait_for(&rec.request.id);
        loop {
            let notified = waiter.notify.notified();
            if let Some(outcome) = outcome_of(&rec) {
                return Ok(Invoked::Completed {
                    id: rec.request.id,
                    executed_version: rec.request.resolved.label(),
                    outcome,
                    log: rec.log,
                    report: rec.report,
                });
            }
            if rec.request.mode == Mode::Async {
                return Ok(Invoked::Accepted { id: rec.request.id, existing: true });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Conflict(format!(
                    "invocation {} with this idempotency key is still running",
                    rec.request.id
                )));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_millis(100));
            rec = self
                .store
                .get_invocation(&rec.request.id)
                .await?
                .ok_or_else(|| ServiceError::Internal("an invocation vanished".into()))?;
        }
    }

    pub(crate) fn count_attempt(&self, exec: &Execution) {
        match exec.result {
            Ok(_) => Metrics::inc(&self.metrics.attempts_succeeded),
            Err(_) => Metrics::inc(&self.metrics.attempts_failed),
        }
    }
}

/// The record of a sync invocation that ran as attempt 1 without a record, and what its caller
/// is answered.
pub(crate) fn finished_sync(
    request: InvocationRequest, result: Result<Bytes, FunctionErrorBody>, log: String,
    report: Option<gust_core::Report>, now: gust_core::Millis,
) -> (InvocationRecord, SyncOutcome) {
    let (state, outcome) = match &result {
        Ok(out) => (State::Succeeded, SyncOutcome::Succeeded(out.clone())),
        Err(e) => (State::Failed, SyncOutcome::Failed(e.clone())),
    };
    let (result, error) = match result {
        Ok(out) => (Some(out), None),
        Err(e) => (None, Some(e)),
    };
    let record = InvocationRecord {
        request,
        lifecycle: Lifecycle { state, attempt_epoch: 1, function_errors: 0, lost_attempts: 0 },
        result,
        error,
        log,
        updated_at: now,
        finished_at: Some(now),
        report,
        history: String::new(),
    };
    (record, outcome)
}
