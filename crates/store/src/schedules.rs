//! Schedules (EventBridge Scheduler's): their statements and algorithms, written once over
//! [`Tx`] like the rest of [`crate::ops`].
//!
//! Exactly once per scheduled time, across any number of servers:
//! - a schedule row holds its next scheduled time and when that firing is due (`fire_at`). A
//!   **claim** takes due rows (on PostgreSQL, rows another server holds are skipped), writes
//!   one firing row per scheduled time (the time is the firing's key, so it cannot be written
//!   twice) and moves the schedule to its next time, guarded by the time it read, all in one
//!   transaction;
//! - a firing is then **delivered**: taken under a short lease (`retry_at` moved past the
//!   lease, guarded), handed to its target, and settled, guarded by its state and its count of
//!   refused deliveries. A function target is invoked with an idempotency key naming the
//!   firing, so a delivery repeated after a crash (or by a second server after the lease) is
//!   the same invocation; a queue target's message, and a dead-letter message, are written in
//!   the transaction that settles the firing.

use gust_core::queue::{MessageAttribute, NewMessage};
use gust_core::schedule::{Firing, FiringState, Schedule, DEFAULT_GROUP};
use gust_core::Millis;

use crate::ops::Tx;
use crate::rows::{json_err, ColumnRow, Value};
use crate::{Kind, Result, StoreError};

/// Most history rows a schedule keeps (its newest; a pending firing is never dropped).
pub const HISTORY: usize = 1000;

const INSERT_GROUP: &str = "INSERT INTO schedule_groups (name, created_at, updated_at) VALUES ($1, $2, $2) \
     ON CONFLICT (name) DO NOTHING";
const GROUP_BY_NAME: &str = "SELECT name, created_at, updated_at FROM schedule_groups WHERE name = $1";
const GROUPS_AFTER: &str = "SELECT name, created_at, updated_at FROM schedule_groups \
     WHERE name > $1 AND name >= $2 AND name < $3 ORDER BY name LIMIT $4";
const DELETE_GROUP: &str = "DELETE FROM schedule_groups WHERE name = $1";
const DELETE_GROUP_SCHEDULES: &str = "DELETE FROM schedules WHERE grp = $1";
const DELETE_GROUP_FIRINGS: &str = "DELETE FROM schedule_firings WHERE grp = $1";

const INSERT_SCHEDULE: &str = "INSERT INTO schedules (grp, name, spec, next_at, fire_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (grp, name) DO NOTHING";
const UPDATE_SCHEDULE: &str =
    "UPDATE schedules SET spec = $3, next_at = $4, fire_at = $5 WHERE grp = $1 AND name = $2";
const SCHEDULE_BY_NAME: &str = "SELECT spec, next_at FROM schedules WHERE grp = $1 AND name = $2";
const SCHEDULES_AFTER: &str = "SELECT spec, next_at FROM schedules \
     WHERE (grp > $1 OR (grp = $1 AND name > $2)) AND name >= $3 AND name < $4 \
     AND grp >= $5 AND grp <= $6 ORDER BY grp, name LIMIT $7";
const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE grp = $1 AND name = $2";
const DELETE_FIRINGS: &str = "DELETE FROM schedule_firings WHERE grp = $1 AND name = $2";

/// Due schedules, earliest first (PostgreSQL skips rows another server is claiming).
const DUE: &str = "SELECT spec, next_at FROM schedules WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2";
const ADVANCE: &str =
    "UPDATE schedules SET next_at = $4, fire_at = $5 WHERE grp = $1 AND name = $2 AND next_at = $3";
const INSERT_FIRING: &str = "INSERT INTO schedule_firings \
     (grp, name, scheduled_at, fire_at, state, attempts, retry_at, missed_count, missed_until) \
     VALUES ($1, $2, $3, $4, $5, 0, $4, $6, $7) ON CONFLICT (grp, name, scheduled_at) DO NOTHING";
const PRUNE_HISTORY: &str =
    "DELETE FROM schedule_firings WHERE grp = $1 AND name = $2 AND state <> 'PENDING' \
     AND scheduled_at < (SELECT scheduled_at FROM schedule_firings WHERE grp = $1 AND name = $2 \
     ORDER BY scheduled_at DESC LIMIT 1 OFFSET $3)";

/// Pending firings due, earliest first (PostgreSQL skips rows another server is taking).
const DUE_FIRINGS: &str = "SELECT grp, name, scheduled_at, fire_at, state, attempts, invocation_id, detail, \
     missed_count, missed_until FROM schedule_firings WHERE state = 'PENDING' AND retry_at <= $1 \
     ORDER BY retry_at LIMIT $2";
const LEASE_FIRING: &str = "UPDATE schedule_firings SET retry_at = $4 \
     WHERE grp = $1 AND name = $2 AND scheduled_at = $3 AND state = 'PENDING' AND retry_at <= $5";
const SETTLE_FIRING: &str = "UPDATE schedule_firings SET state = $5, invocation_id = $6, detail = $7 \
     WHERE grp = $1 AND name = $2 AND scheduled_at = $3 AND state = 'PENDING' AND attempts = $4";
const REFUSED_FIRING: &str =
    "UPDATE schedule_firings SET attempts = attempts + 1, retry_at = $5, detail = $6 \
     WHERE grp = $1 AND name = $2 AND scheduled_at = $3 AND state = 'PENDING' AND attempts = $4";
const PENDING_OF: &str =
    "SELECT scheduled_at FROM schedule_firings WHERE grp = $1 AND name = $2 AND state = 'PENDING' LIMIT 1";
const HISTORY_BEFORE: &str =
    "SELECT grp, name, scheduled_at, fire_at, state, attempts, invocation_id, detail, \
     missed_count, missed_until FROM schedule_firings WHERE grp = $1 AND name = $2 AND scheduled_at < $3 \
     ORDER BY scheduled_at DESC LIMIT $4";

const LOCK_CREATORS: &str = "UPDATE schedule_groups SET updated_at = updated_at WHERE name = 'default'";
const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM schedules), (SELECT COUNT(*) FROM schedule_groups)";

/// A schedule group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleGroup {
    pub name: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A schedule and the scheduled time of its next firing (`None`: none is left, or disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    pub schedule: Schedule,
    pub next_at: Option<Millis>,
}

/// How a delivery of a firing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The function's invocation is queued.
    Invoked { invocation_id: String },
    /// Send this message to the queue target (in the settling transaction).
    Send { queue: String, message: NewMessage },
    /// The target refused it; try again at `retry_at`.
    Refused { reason: String, retry_at: Millis },
    /// The target refused it for good (or past the retry policy): to the dead-letter queue, if
    /// it names one, with this message.
    Failed { reason: String, dead_letter: Option<(String, NewMessage)> },
}

fn opt(v: Option<i64>) -> Value<'static> {
    v.map_or(Value::Null, Value::Int)
}

fn read_group(r: &dyn ColumnRow) -> Result<ScheduleGroup> {
    Ok(ScheduleGroup { name: r.text(0)?, created_at: r.int(1)?, updated_at: r.int(2)? })
}

fn read_schedule(r: &dyn ColumnRow) -> Result<StoredSchedule> {
    Ok(StoredSchedule {
        schedule: serde_json::from_str(&r.text(0)?).map_err(json_err)?,
        next_at: r.opt_int(1)?,
    })
}

fn read_firing(r: &dyn ColumnRow) -> Result<Firing> {
    let state = r.text(4)?;
    let missed = match (r.opt_int(8)?, r.opt_int(9)?) {
        (Some(n), Some(until)) => Some((n as u64, until)),
        _ => None,
    };
    Ok(Firing {
        group: r.text(0)?,
        schedule: r.text(1)?,
        scheduled_at: r.int(2)?,
        fire_at: r.int(3)?,
        state: FiringState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("unknown firing state {state:?}")))?,
        attempts: r.int(5)? as u32,
        invocation_id: r.opt_text(6)?,
        detail: r.opt_text(7)?,
        missed,
    })
}

fn group_not_found(name: &str) -> StoreError {
    StoreError::NotFound { kind: Kind::ScheduleGroup, name: name.to_string() }
}

fn schedule_not_found(group: &str, name: &str) -> StoreError {
    StoreError::NotFound { kind: Kind::Schedule, name: format!("{group}/{name}") }
}

/// A group (the default group is a row from the schema on: `SCHEDULE_DEFAULT_GROUP`).
pub async fn get_group(tx: &impl Tx, name: &str) -> Result<Option<ScheduleGroup>> {
    Ok(tx.select(GROUP_BY_NAME, &[name.into()], false, read_group).await?.into_iter().next())
}

/// Takes the default group's row lock (PostgreSQL): creators of schedules and groups go one at
/// a time, so a count read next is still true when the row is written.
async fn lock_creators(tx: &impl Tx) -> Result<()> {
    tx.execute(LOCK_CREATORS, &[]).await?;
    Ok(())
}

/// Creates a group; `Invalid` (a conflict) if it exists, `Quota` if `max` groups exist.
pub async fn create_group(tx: &impl Tx, name: &str, now: Millis, max: u64) -> Result<ScheduleGroup> {
    lock_creators(tx).await?;
    let (_, groups) = counts(tx).await?;
    if groups >= max && name != DEFAULT_GROUP {
        return Err(StoreError::Quota(format!(
            "at most {max} schedule groups may exist (the default group among them)"
        )));
    }
    if name == DEFAULT_GROUP || tx.execute(INSERT_GROUP, &[name.into(), now.into()]).await? == 0 {
        return Err(StoreError::Invalid(format!("schedule group {name} already exists")));
    }
    Ok(ScheduleGroup { name: name.into(), created_at: now, updated_at: now })
}

/// Groups whose names start with `prefix`, after `after`, in name order (the default group
/// among them).
pub async fn list_groups(
    tx: &impl Tx, prefix: &str, after: Option<&str>, limit: usize,
) -> Result<Vec<ScheduleGroup>> {
    let upper = format!("{prefix}\u{7f}");
    let after = after.unwrap_or("");
    let values: [Value; _] = [after.into(), prefix.into(), upper.as_str().into(), limit.into()];
    tx.select(GROUPS_AFTER, &values, false, read_group).await
}

/// Deletes a group with its schedules and their history (the default group cannot go).
pub async fn delete_group(tx: &impl Tx, name: &str) -> Result<()> {
    if name == DEFAULT_GROUP {
        return Err(StoreError::Invalid("the default schedule group cannot be deleted".into()));
    }
    if tx.execute(DELETE_GROUP, &[name.into()]).await? == 0 {
        return Err(group_not_found(name));
    }
    tx.execute(DELETE_GROUP_SCHEDULES, &[name.into()]).await?;
    tx.execute(DELETE_GROUP_FIRINGS, &[name.into()]).await?;
    Ok(())
}

/// The next firing a schedule written at `now` waits for: its first scheduled time after `now`
/// (none when disabled).
fn next_of(schedule: &Schedule, now: Millis) -> (Option<Millis>, Option<Millis>) {
    let next = schedule.enabled.then(|| schedule.next_after(now)).flatten();
    (next, next.map(|t| schedule.fire_at(t)))
}

/// Creates a schedule (`Invalid`, a conflict, if its name is taken in its group) or replaces
/// one (`NotFound` if it is not there). Its next firing counts from `now`: a schedule changed
/// or re-enabled does not fire for the times it was disabled.
pub async fn put_schedule(
    tx: &impl Tx, schedule: &Schedule, create: bool, now: Millis, max: u64,
) -> Result<()> {
    if create {
        lock_creators(tx).await?;
        if counts(tx).await?.0 >= max {
            return Err(StoreError::Quota(format!("at most {max} schedules may exist (--max-schedules)")));
        }
    }
    if get_group(tx, &schedule.group).await?.is_none() {
        return Err(group_not_found(&schedule.group));
    }
    let spec = serde_json::to_string(schedule).map_err(json_err)?;
    let (next, fire_at) = next_of(schedule, now);
    let values: [Value; _] = [
        schedule.group.as_str().into(),
        schedule.name.as_str().into(),
        spec.as_str().into(),
        opt(next),
        opt(fire_at),
    ];
    if create {
        if tx.execute(INSERT_SCHEDULE, &values).await? == 0 {
            return Err(StoreError::Invalid(format!(
                "schedule {} already exists in group {}",
                schedule.name, schedule.group
            )));
        }
    } else if tx.execute(UPDATE_SCHEDULE, &values).await? == 0 {
        return Err(schedule_not_found(&schedule.group, &schedule.name));
    }
    Ok(())
}

pub async fn get_schedule(tx: &impl Tx, group: &str, name: &str) -> Result<Option<StoredSchedule>> {
    Ok(tx
        .select(SCHEDULE_BY_NAME, &[group.into(), name.into()], false, read_schedule)
        .await?
        .into_iter()
        .next())
}

/// Schedules of `group` (or of every group) whose names start with `prefix`, after `after`
/// (group, name), in (group, name) order.
pub async fn list_schedules(
    tx: &impl Tx, group: Option<&str>, prefix: &str, after: Option<(&str, &str)>, limit: usize,
) -> Result<Vec<StoredSchedule>> {
    let upper = format!("{prefix}\u{7f}");
    let (after_group, after_name) = after.unwrap_or(("", ""));
    let (lo, hi) = match group {
        Some(g) => (g, g),
        None => ("", "\u{7f}"),
    };
    let values: [Value; _] = [
        after_group.into(),
        after_name.into(),
        prefix.into(),
        upper.as_str().into(),
        lo.into(),
        hi.into(),
        limit.into(),
    ];
    tx.select(SCHEDULES_AFTER, &values, false, read_schedule).await
}

/// Deletes a schedule and its history.
pub async fn delete_schedule(tx: &impl Tx, group: &str, name: &str) -> Result<()> {
    if tx.execute(DELETE_SCHEDULE, &[group.into(), name.into()]).await? == 0 {
        return Err(schedule_not_found(group, name));
    }
    tx.execute(DELETE_FIRINGS, &[group.into(), name.into()]).await?;
    Ok(())
}

/// Claims up to `limit` due schedules at `now`: writes their firings (and a missed run, after
/// downtime) and moves each to its next time. Returns how many firings were written to fire.
pub async fn claim_due(tx: &impl Tx, now: Millis, limit: usize) -> Result<usize> {
    let due = tx.select(DUE, &[now.into(), limit.into()], true, read_schedule).await?;
    let mut written = 0;
    for StoredSchedule { schedule: s, next_at } in due {
        let Some(next_at) = next_at else { continue };
        let plan = s.plan(next_at, now);
        let key: [Value; 2] = [s.group.as_str().into(), s.name.as_str().into()];
        let values: [Value; _] =
            [key[0], key[1], next_at.into(), opt(plan.next), opt(plan.next.map(|t| s.fire_at(t)))];
        // Guarded by the time read: a claim that lost a race writes nothing.
        if tx.execute(ADVANCE, &values).await? != 1 {
            continue;
        }
        if let Some((first, last, n)) = plan.missed {
            let values: [Value; _] = [
                key[0],
                key[1],
                first.into(),
                s.fire_at(first).into(),
                FiringState::Missed.as_str().into(),
                (n as i64).into(),
                last.into(),
            ];
            tx.execute(INSERT_FIRING, &values).await?;
        }
        for t in &plan.fire {
            let values: [Value; _] = [
                key[0],
                key[1],
                (*t).into(),
                s.fire_at(*t).into(),
                FiringState::Pending.as_str().into(),
                Value::Null,
                Value::Null,
            ];
            written += tx.execute(INSERT_FIRING, &values).await? as usize;
        }
        tx.execute(PRUNE_HISTORY, &[key[0], key[1], (HISTORY - 1).into()]).await?;
        if plan.next.is_none() && plan.fire.is_empty() {
            delete_if_complete(tx, &s).await?;
        }
    }
    Ok(written)
}

/// Takes up to `limit` pending firings due at `now` for delivery, each leased until
/// `now + lease_ms` (a server that dies holding one lets another take it after the lease).
/// Each comes with its schedule as it is now; a firing whose schedule is gone is not taken.
pub async fn take_due_firings(
    tx: &impl Tx, now: Millis, lease_ms: i64, limit: usize,
) -> Result<Vec<(Firing, Schedule)>> {
    let due = tx.select(DUE_FIRINGS, &[now.into(), limit.into()], true, read_firing).await?;
    let mut out = Vec::with_capacity(due.len());
    for f in due {
        let Some(stored) = get_schedule(tx, &f.group, &f.schedule).await? else { continue };
        let values: [Value; _] = [
            f.group.as_str().into(),
            f.schedule.as_str().into(),
            f.scheduled_at.into(),
            (now + lease_ms).into(),
            now.into(),
        ];
        if tx.execute(LEASE_FIRING, &values).await? == 1 {
            out.push((f, stored.schedule));
        }
    }
    Ok(out)
}

/// Settles a delivery of `firing` (as taken: its `attempts` guard the write). A message to a
/// queue target or to a dead-letter queue is written in the same transaction. Whether this
/// delivery's outcome was the one recorded (false: another server settled it first).
pub async fn settle_firing(tx: &impl Tx, firing: &Firing, delivery: &Delivery, now: Millis) -> Result<bool> {
    let key: [Value; 4] = [
        firing.group.as_str().into(),
        firing.schedule.as_str().into(),
        firing.scheduled_at.into(),
        i64::from(firing.attempts).into(),
    ];
    fn values<'a>(
        key: &[Value<'a>; 4], state: FiringState, invocation: Option<&'a str>, detail: Option<&'a str>,
    ) -> [Value<'a>; 7] {
        let text = |v: Option<&'a str>| v.map_or(Value::Null, Value::from);
        [key[0], key[1], key[2], key[3], state.as_str().into(), text(invocation), text(detail)]
    }
    let settle = |state, invocation, detail| values(&key, state, invocation, detail);
    let settled = match delivery {
        Delivery::Invoked { invocation_id } => {
            tx.execute(SETTLE_FIRING, &settle(FiringState::Delivered, Some(invocation_id), None)).await? == 1
        }
        Delivery::Send { queue, message } => match crate::queues::send_to(tx, queue, message, now).await? {
            Some(()) => {
                let detail = format!("message {}", message.id);
                let settled =
                    tx.execute(SETTLE_FIRING, &settle(FiringState::Delivered, None, Some(&detail))).await?
                        == 1;
                if !settled {
                    // Another server settled it: the message must not be sent twice.
                    return Err(StoreError::Invalid("the firing was settled elsewhere".into()));
                }
                true
            }
            None => {
                let reason = format!("queue {queue} does not exist");
                tx.execute(SETTLE_FIRING, &settle(FiringState::Failed, None, Some(&reason))).await? == 1
            }
        },
        Delivery::Refused { reason, retry_at } => {
            let values: [Value; _] =
                [key[0], key[1], key[2], key[3], (*retry_at).into(), reason.as_str().into()];
            tx.execute(REFUSED_FIRING, &values).await? == 1
        }
        Delivery::Failed { reason, dead_letter } => {
            let mut state = FiringState::Failed;
            let mut reason = reason.clone();
            if let Some((queue, message)) = dead_letter {
                match crate::queues::send_to(tx, queue, message, now).await? {
                    Some(()) => state = FiringState::DeadLettered,
                    None => reason = format!("{reason}; the dead-letter queue {queue} does not exist"),
                }
            }
            let settled = tx.execute(SETTLE_FIRING, &settle(state, None, Some(&reason))).await? == 1;
            if !settled && state == FiringState::DeadLettered {
                return Err(StoreError::Invalid("the firing was settled elsewhere".into()));
            }
            settled
        }
    };
    if settled {
        if let Some(stored) = get_schedule(tx, &firing.group, &firing.schedule).await? {
            if stored.next_at.is_none() {
                delete_if_complete(tx, &stored.schedule).await?;
            }
        }
    }
    Ok(settled)
}

/// A schedule set to be deleted after completion goes once no firing is left to fire or to
/// deliver.
async fn delete_if_complete(tx: &impl Tx, s: &Schedule) -> Result<()> {
    if !s.delete_after_completion || !s.enabled {
        return Ok(());
    }
    let key: [Value; 2] = [s.group.as_str().into(), s.name.as_str().into()];
    if tx.select(PENDING_OF, &key, false, |r| r.int(0)).await?.is_empty() {
        tx.execute(DELETE_SCHEDULE, &key).await?;
        tx.execute(DELETE_FIRINGS, &key).await?;
    }
    Ok(())
}

/// How many schedules and schedule groups (the default among them) exist.
pub async fn counts(tx: &impl Tx) -> Result<(u64, u64)> {
    fn read(r: &dyn ColumnRow) -> Result<(u64, u64)> {
        Ok((r.int(0)? as u64, r.int(1)? as u64))
    }
    let rows = tx.select(COUNTS, &[], false, read).await?;
    Ok(rows.into_iter().next().unwrap_or_default())
}

/// A schedule's history, newest first, before `before` (a scheduled time).
pub async fn history(
    tx: &impl Tx, group: &str, name: &str, before: Option<Millis>, limit: usize,
) -> Result<Vec<Firing>> {
    let values: [Value; _] = [group.into(), name.into(), before.unwrap_or(Millis::MAX).into(), limit.into()];
    tx.select(HISTORY_BEFORE, &values, false, read_firing).await
}

/// A string message attribute (what a dead-letter message carries about its failure).
pub fn string_attribute(value: &str) -> MessageAttribute {
    MessageAttribute { data_type: "String".into(), string_value: Some(value.into()), binary_value: None }
}
