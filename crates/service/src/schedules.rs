//! Schedules: each scheduled time becomes one async invocation of the target function (or one
//! message to the target queue), exactly once across every server sharing the store.
//!
//! Every server runs [`Service::scheduler`]: each tick it claims the due schedules (the store
//! writes one firing per scheduled time, see `gust_store::schedules`) and delivers the due
//! firings under a lease. A function's firing is invoked with an idempotency key naming the
//! firing, so a delivery repeated after a crash is the same invocation. A target that refuses
//! (throttled, queues full, the store out of space) is tried again with backoff within the
//! schedule's retry policy; past it, or refused for good (no such function), the firing goes
//! to the dead-letter queue if the schedule names one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gust_core::lambda::ACCOUNT;
use gust_core::queue::{FifoIds, NewMessage};
use gust_core::schedule::{Expression, Firing, Schedule, TargetKind};
use gust_core::{Millis, Mode, StateName};
use gust_store::schedules::string_attribute;
use gust_store::{Delivery, Kind, ScheduleGroup, StoredSchedule};

use crate::{InvokeInput, Invoked, Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The default bound on schedules (EventBridge Scheduler's default quota is a million per
/// account; a self-hosted store is smaller).
pub const DEFAULT_MAX_SCHEDULES: u64 = 10_000;
/// The default bound on schedule groups (Scheduler's quota).
pub const DEFAULT_MAX_SCHEDULE_GROUPS: u64 = 500;

/// How often a server looks for due schedules and firings.
const TICK: Duration = Duration::from_millis(500);
/// How long a server holds a firing it is delivering before another may take it.
const DELIVERY_LEASE_MS: i64 = 30_000;
/// Most schedules claimed, and firings taken, per store call.
const BATCH: usize = 100;
/// Deliveries in flight at once (each an invocation's ingest or a queue write).
const DELIVERIES_AT_ONCE: usize = 32;
/// How long one tick may keep draining a backlog before it sleeps again.
const TICK_BUDGET: Duration = Duration::from_secs(2);

/// A schedule as shown: what was written, and its next firing.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub schedule: Schedule,
    pub next_at: Option<Millis>,
}

impl From<StoredSchedule> for ScheduleView {
    fn from(s: StoredSchedule) -> Self {
        ScheduleView { schedule: s.schedule, next_at: s.next_at }
    }
}

/// One history row, with the state of the invocation it became (when still recorded).
#[derive(Debug, Clone)]
pub struct FiringView {
    pub firing: Firing,
    pub invocation_state: Option<StateName>,
}

impl Service {
    pub async fn create_schedule_group(&self, name: &str) -> Result<ScheduleGroup> {
        gust_core::schedule::validate_name("Name", name).map_err(ServiceError::InvalidRequest)?;
        Ok(self.store.create_schedule_group(name, self.clock.now(), self.cfg.max_schedule_groups).await?)
    }

    pub async fn schedule_group(&self, name: &str) -> Result<ScheduleGroup> {
        self.store
            .get_schedule_group(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound { kind: Kind::ScheduleGroup, name: name.to_string() })
    }

    pub async fn list_schedule_groups(
        &self, prefix: &str, after: Option<&str>, limit: usize,
    ) -> Result<Vec<ScheduleGroup>> {
        Ok(self.store.list_schedule_groups(prefix, after, limit).await?)
    }

    pub async fn delete_schedule_group(&self, name: &str) -> Result<()> {
        Ok(self.store.delete_schedule_group(name).await?)
    }

    /// Creates (`create`) or replaces a schedule. Refused if it is malformed or, enabled, would
    /// never fire again.
    pub async fn put_schedule(&self, mut schedule: Schedule, create: bool) -> Result<ScheduleView> {
        schedule.validate().map_err(ServiceError::InvalidRequest)?;
        let now = self.clock.now();
        match create {
            true => schedule.created_at = now,
            false => {
                schedule.created_at =
                    self.schedule(&schedule.group, &schedule.name).await?.schedule.created_at
            }
        }
        schedule.updated_at = now;
        if schedule.enabled && schedule.next_after(now).is_none() {
            let why = match Expression::parse(&schedule.expression) {
                Ok(Expression::At(_)) => "its time is in the past",
                _ => "it names no time after now (before its end date)",
            };
            return Err(ServiceError::InvalidRequest(format!(
                "ScheduleExpression {} would never fire: {why}",
                schedule.expression
            )));
        }
        self.store.put_schedule(schedule.clone(), create, now, self.cfg.max_schedules).await?;
        self.schedule(&schedule.group, &schedule.name).await
    }

    pub async fn schedule(&self, group: &str, name: &str) -> Result<ScheduleView> {
        self.store
            .get_schedule(group, name)
            .await?
            .map(ScheduleView::from)
            .ok_or_else(|| ServiceError::NotFound { kind: Kind::Schedule, name: format!("{group}/{name}") })
    }

    pub async fn list_schedules(
        &self, group: Option<&str>, prefix: &str, after: Option<(String, String)>, limit: usize,
    ) -> Result<Vec<ScheduleView>> {
        let found = self.store.list_schedules(group, prefix, after, limit).await?;
        Ok(found.into_iter().map(ScheduleView::from).collect())
    }

    pub async fn delete_schedule(&self, group: &str, name: &str) -> Result<()> {
        Ok(self.store.delete_schedule(group, name).await?)
    }

    /// A schedule's firings, newest first, each with its invocation's state.
    pub async fn schedule_history(
        &self, group: &str, name: &str, before: Option<Millis>, limit: usize,
    ) -> Result<Vec<FiringView>> {
        self.schedule(group, name).await?;
        let limit = limit.clamp(1, gust_core::limits::MAX_PAGE_SIZE);
        let mut out = Vec::new();
        for firing in self.store.schedule_history(group, name, before, limit).await? {
            let invocation_state = match &firing.invocation_id {
                Some(id) => self
                    .store
                    .get_invocation(&gust_core::InvocationId(id.clone()))
                    .await?
                    .map(|r| r.lifecycle.state.name()),
                None => None,
            };
            out.push(FiringView { firing, invocation_state });
        }
        Ok(out)
    }

    /// Claims due schedules and delivers due firings, every tick, for as long as the server
    /// runs (every server does; the store decides who fires what). A tick drains what is due
    /// (claims in batches, deliveries [`DELIVERIES_AT_ONCE`] at a time), within a time budget, so
    /// many busy schedules delay one another by the backlog's length, not by whole ticks.
    pub(crate) async fn scheduler(self: Arc<Self>) {
        use futures_util::stream::StreamExt as _;
        loop {
            tokio::time::sleep(TICK).await;
            let budget = tokio::time::Instant::now() + TICK_BUDGET;
            loop {
                if self.is_shutting_down() {
                    return;
                }
                let now = self.clock.now();
                let claimed = match self.store.claim_due_schedules(now, BATCH).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming due schedules failed; it runs again next tick");
                        0
                    }
                };
                let due = match self.store.take_due_firings(now, DELIVERY_LEASE_MS, BATCH).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "taking due firings failed; it runs again next tick");
                        break;
                    }
                };
                let taken = due.len();
                futures_util::stream::iter(due)
                    .for_each_concurrent(DELIVERIES_AT_ONCE, |(firing, schedule)| {
                        let service = self.clone();
                        async move {
                            let delivery = service.deliver(&firing, &schedule).await;
                            match service.store.settle_firing(firing, delivery, service.clock.now()).await {
                                Ok(_) => {}
                                // Settled by another server meanwhile (its lease ran out here).
                                Err(gust_store::StoreError::Invalid(_)) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "settling a firing failed; it is delivered again")
                                }
                            }
                        }
                    })
                    .await;
                let more = claimed == BATCH || taken == BATCH;
                if !more || tokio::time::Instant::now() >= budget {
                    break;
                }
            }
        }
    }

    /// Hands one firing to its target; what became of it.
    async fn deliver(self: &Arc<Self>, firing: &Firing, schedule: &Schedule) -> Delivery {
        let attempt = firing.attempts + 1;
        let payload = schedule.payload(firing.scheduled_at, attempt);
        let refused = match schedule.target_kind() {
            Ok(TargetKind::Queue(queue)) => {
                let message = NewMessage {
                    id: uuid::Uuid::new_v4().to_string(),
                    body: payload,
                    attributes: Default::default(),
                    visible_at: self.clock.now(),
                    // Deduplicated by the firing: a delivery repeated after a crash is one message.
                    fifo: schedule.target.message_group_id.clone().map(|group| FifoIds {
                        group,
                        deduplication: schedule.execution_id(firing.scheduled_at),
                    }),
                };
                return Delivery::Send { queue, message };
            }
            Ok(TargetKind::Function { name, qualifier }) => {
                let input = InvokeInput {
                    function: name,
                    qualifier,
                    payload: Bytes::from(payload.clone()),
                    mode: Mode::Async,
                    // With a space, which no client's key may hold: nobody can take it first.
                    idempotency_key: Some(format!(
                        "gust schedule {}/{}@{}",
                        schedule.group, schedule.name, firing.scheduled_at
                    )),
                    client_context: None,
                    stream: None,
                    http: None,
                    trace: None,
                };
                match self.admit(input).await {
                    Ok(Invoked::Accepted { id, .. } | Invoked::Completed { id, .. }) => {
                        return Delivery::Invoked { invocation_id: id.0 }
                    }
                    // Delivered before (a crash, or a lease that ran out, came between), then
                    // the schedule's input changed: that invocation is this firing's.
                    Err(ServiceError::KeyMismatch { existing }) => {
                        return Delivery::Invoked { invocation_id: existing.0 }
                    }
                    Err(e) => e,
                }
            }
            Err(e) => ServiceError::InvalidRequest(e),
        };
        let (code, retryable) = refusal(&refused);
        let reason = format!("{code}: {refused}");
        let now = self.clock.now();
        let policy = schedule.target.retry_policy;
        let young = now - firing.scheduled_at < i64::from(policy.maximum_event_age_seconds) * 1000;
        if retryable && firing.attempts < policy.maximum_retry_attempts && young {
            // Exponential backoff, from one second to a minute.
            let backoff = 1_000i64 << firing.attempts.min(6);
            return Delivery::Refused { reason, retry_at: now + backoff };
        }
        tracing::warn!(schedule = %schedule.arn(), scheduled_at = firing.scheduled_at, %reason, "a firing could not be delivered");
        let dead_letter =
            schedule.target.dead_letter_arn.as_deref().and_then(gust_core::queue::queue_of_arn).map(
                |queue| {
                    let attributes = [
                        ("ERROR_CODE", code.to_string()),
                        ("ERROR_MESSAGE", refused.to_string()),
                        ("EXECUTION_ID", schedule.execution_id(firing.scheduled_at)),
                        ("RETRY_ATTEMPTS", firing.attempts.to_string()),
                        ("SCHEDULE_ARN", schedule.arn()),
                        ("TARGET_ARN", schedule.target.arn.clone()),
                        ("ACCOUNT", ACCOUNT.to_string()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), string_attribute(&v)))
                    .collect();
                    let message = NewMessage {
                        id: uuid::Uuid::new_v4().to_string(),
                        body: payload,
                        attributes,
                        visible_at: now,
                        fifo: None,
                    };
                    (queue.to_string(), message)
                },
            );
        Delivery::Failed { reason, dead_letter }
    }
}

/// A target's refusal: its code, and whether trying again later may succeed.
fn refusal(e: &ServiceError) -> (&'static str, bool) {
    match e {
        ServiceError::Throttled { .. } | ServiceError::QueueFull { .. } => ("Throttled", true),
        ServiceError::ShuttingDown | ServiceError::Unavailable(_) => ("ServiceUnavailable", true),
        ServiceError::InsufficientStorage(_) | ServiceError::Internal(_) => ("InternalError", true),
        ServiceError::NotFound { .. } => ("ResourceNotFound", false),
        _ => ("InvalidTarget", false),
    }
}
