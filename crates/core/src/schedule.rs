//! Schedules with EventBridge Scheduler's semantics: `cron(...)`, `rate(...)` and `at(...)`
//! expressions in an IANA time zone, start and end dates, a flexible time window, and a target
//! (a function, or a queue) with its input, retry policy and dead-letter queue.
//!
//! Each scheduled time is one *firing*. A schedule stores the scheduled time of its next firing;
//! whoever claims a due schedule in the store writes its firings (one row per scheduled time, so
//! a time can never fire twice) and moves it on to the next. [`Schedule::plan`] says what a claim
//! writes: after downtime, the firings still within the retry window fire once each (at most
//! [`MAX_CATCH_UP`] of them), older ones are recorded as missed in one row, never a storm.
//!
//! `rate(N seconds)` is gust's own extension (EventBridge's finest rate is one minute), for
//! tests and demos; everything else is AWS's syntax.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::lambda::{split_function_name, ACCOUNT, REGION};
use crate::queue::{hex_of, queue_of_arn};
use crate::Millis;

/// The group every schedule is in unless it names another; it always exists.
pub const DEFAULT_GROUP: &str = "default";
/// Most characters in a schedule's or a group's name.
pub const MAX_NAME: usize = 64;
/// Most characters in a target's input (EventBridge Scheduler's limit).
pub const MAX_INPUT: usize = 8192;
/// Most characters in a description.
pub const MAX_DESCRIPTION: usize = 512;
/// Most firings a claim fires to catch up after downtime; earlier ones are recorded as missed.
pub const MAX_CATCH_UP: usize = 100;
/// The last moment a start or end date may name: the end of 2199 (UTC).
pub const LATEST_DATE_MS: Millis = 7_258_118_399_999;
/// Most missed cron times a claim steps over one by one (past that it jumps to the window).
const MAX_MISSED_STEPS: u32 = 10_000;
/// The last year a cron expression may name (AWS's bound).
const LAST_YEAR: i16 = 2199;
const FIRST_YEAR: i16 = 1970;

/// A schedule's or a group's name: 1-64 letters, digits, `-`, `_` and `.`.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} must be 1-{MAX_NAME} letters, digits, '-', '_' or '.'"))
    }
}

/// `arn:aws:scheduler:us-east-1:000000000000:schedule/GROUP/NAME`.
pub fn schedule_arn(group: &str, name: &str) -> String {
    format!("arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{group}/{name}")
}

/// `arn:aws:scheduler:us-east-1:000000000000:schedule-group/NAME`.
pub fn group_arn(name: &str) -> String {
    format!("arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule-group/{name}")
}

/// A schedule expression, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    Cron(Box<Cron>),
    /// Every `every_ms`, from the schedule's start date (or its creation).
    Rate {
        every_ms: i64,
    },
    /// Once, at this civil time in the schedule's time zone.
    At(DateTime),
}

impl Expression {
    pub fn parse(s: &str) -> Result<Expression, String> {
        let s = s.trim();
        let inner = |prefix: &str| s.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        if let Some(body) = inner("cron(") {
            return Cron::parse(body).map(|c| Expression::Cron(Box::new(c)));
        }
        if let Some(body) = inner("rate(") {
            return parse_rate(body);
        }
        if let Some(body) = inner("at(") {
            return body
                .parse::<DateTime>()
                .ok()
                .filter(|dt| body.len() == 19 && body.as_bytes()[10] == b'T' && dt.subsec_nanosecond() == 0)
                .map(Expression::At)
                .ok_or_else(|| format!("at({body}) is not at(yyyy-mm-ddThh:mm:ss)"));
        }
        Err("ScheduleExpression must be cron(...), rate(...) or at(...)".into())
    }
}

fn parse_rate(body: &str) -> Result<Expression, String> {
    let bad = || {
        format!(
            "rate({body}) is not rate(VALUE UNIT) with a positive VALUE and UNIT minute(s), hour(s) or day(s) \
             (or second(s), gust's own)"
        )
    };
    let (value, unit) = body.trim().split_once(' ').ok_or_else(bad)?;
    let value: i64 = value.parse().ok().filter(|v| (1..=1_000_000).contains(v)).ok_or_else(bad)?;
    let (singular, unit_ms) = match unit.trim() {
        "second" | "seconds" => ("second", 1_000),
        "minute" | "minutes" => ("minute", 60_000),
        "hour" | "hours" => ("hour", 3_600_000),
        "day" | "days" => ("day", 86_400_000),
        _ => return Err(bad()),
    };
    // As EventBridge: the unit is singular for 1 and plural otherwise.
    if (value == 1) != (unit.trim() == singular) {
        return Err(format!("rate({body}): the unit must be singular for a value of 1, plural otherwise"));
    }
    Ok(Expression::Rate { every_ms: value * unit_ms })
}

/// A six-field cron expression: minutes, hours, day of month, month, day of week, year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    dom: DayOfMonth,
    /// Bits 1..=12.
    months: u16,
    dow: DayOfWeek,
    /// Allowed years, bit `year - 1970`.
    years: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Any,
    /// Bits 1..=31.
    Days(u32),
    Last,
    LastWeekday,
    /// `nW`: the weekday nearest the n-th, within the month.
    NearestWeekday(i8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    /// Bits 1..=7, 1 is Sunday.
    Days(u8),
    /// `dL`: the last such day of the month.
    Last(i8),
    /// `d#n`: the n-th such day of the month.
    Nth(i8, i8),
}

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's values as a bit set over `min..=max` (`names` are the values from `min` up).
fn parse_field(field: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<Vec<u32>, String> {
    let bad = |why: &str| format!("cron {what} field {field:?}: {why}");
    let value = |v: &str| -> Result<u32, String> {
        let upper = v.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(min + i as u32);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| bad(&format!("{v:?} is not a value from {min} to {max}")))
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = s.parse::<u32>().ok().filter(|s| (1..=max).contains(s));
                (r, Some(step.ok_or_else(|| bad(&format!("{s:?} is not a step")))?))
            }
            None => (item, None),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None => {
                    let v = value(r)?;
                    (v, if step.is_some() { max } else { v })
                }
            },
        };
        if lo > hi {
            return Err(bad(&format!("{lo}-{hi} runs backwards")));
        }
        out.extend((lo..=hi).step_by(step.unwrap_or(1) as usize));
    }
    Ok(out)
}

fn bits<T: From<u8> + std::ops::BitOr<Output = T> + std::ops::Shl<u32, Output = T>>(values: &[u32]) -> T {
    values.iter().fold(T::from(0), |acc, v| acc | (T::from(1) << *v))
}

impl Cron {
    fn parse(body: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = body.split_whitespace().collect();
        let [minutes, hours, dom, months, dow, years] = fields.as_slice() else {
            return Err(format!(
                "cron({body}) needs six fields: minutes hours day-of-month month day-of-week year"
            ));
        };
        if (*dom == "?") == (*dow == "?") {
            return Err(format!(
                "cron({body}): exactly one of day-of-month and day-of-week must be '?' (the other says which days)"
            ));
        }
        let year_values = parse_field(years, "year", FIRST_YEAR as u32, LAST_YEAR as u32, &[])?;
        let mut allowed = vec![false; (LAST_YEAR - FIRST_YEAR + 1) as usize];
        for y in year_values {
            allowed[(y - FIRST_YEAR as u32) as usize] = true;
        }
        Ok(Cron {
            minutes: bits(&parse_field(minutes, "minutes", 0, 59, &[])?),
            hours: bits(&parse_field(hours, "hours", 0, 23, &[])?),
            dom: parse_dom(dom)?,
            months: bits(&parse_field(months, "month", 1, 12, &MONTHS)?),
            dow: parse_dow(dow)?,
            years: allowed,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let (year, month, day) = (date.year(), date.month(), date.day());
        let dim = date.days_in_month();
        if !(FIRST_YEAR..=LAST_YEAR).contains(&year) || !self.years[(year - FIRST_YEAR) as usize] {
            return false;
        }
        if self.months & (1 << month) == 0 {
            return false;
        }
        let weekday =
            |d: i8| date.first_of_month().weekday().to_sunday_one_offset() as i32 + i32::from(d) - 1;
        let dow_of = |d: i8| ((weekday(d) - 1).rem_euclid(7) + 1) as i8;
        let dom_ok = match &self.dom {
            DayOfMonth::Any => true,
            DayOfMonth::Days(b) => b & (1 << day) != 0,
            DayOfMonth::Last => day == dim,
            DayOfMonth::LastWeekday => {
                let last = (1..=dim).rev().find(|d| (2..=6).contains(&dow_of(*d))).unwrap_or(dim);
                day == last
            }
            DayOfMonth::NearestWeekday(n) => {
                let n = (*n).min(dim);
                let nearest = match dow_of(n) {
                    7 if n == 1 => n + 2,
                    7 => n - 1,
                    1 if n == dim => n - 2,
                    1 => n + 1,
                    _ => n,
                };
                day == nearest
            }
        };
        let today = dow_of(day);
        let dow_ok = match &self.dow {
            DayOfWeek::Any => true,
            DayOfWeek::Days(b) => b & (1 << today) != 0,
            DayOfWeek::Last(d) => today == *d && day + 7 > dim,
            DayOfWeek::Nth(d, n) => today == *d && (day - 1) / 7 + 1 == *n,
        };
        dom_ok && dow_ok
    }

    /// The first time strictly after `after` that this expression names, in `tz`.
    fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let civil = tz.to_datetime(after);
        let first = civil.date();
        let mut date = first;
        let last = Date::new(LAST_YEAR, 12, 31).ok()?;
        while date <= last {
            if self.day_matches(date) {
                // On the first day, civil times before `after`'s cannot be after it (in a
                // repeated hour they name its first, earlier, occurrence).
                let from = if date == first { (civil.hour(), civil.minute()) } else { (0, 0) };
                for hour in (from.0..24).filter(|h| self.hours & (1 << h) != 0) {
                    let first_minute = if hour == from.0 { from.1 } else { 0 };
                    for minute in (first_minute..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                        // A time in a daylight-saving gap runs when the clock jumps past it; one
                        // in a repeated hour runs once, the first time.
                        let at = tz.to_timestamp(date.at(hour, minute, 0, 0)).ok()?;
                        if at > after {
                            return Some(at);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

fn parse_dom(field: &str) -> Result<DayOfMonth, String> {
    match field {
        "?" => Ok(DayOfMonth::Any),
        "L" => Ok(DayOfMonth::Last),
        "LW" => Ok(DayOfMonth::LastWeekday),
        f if f.ends_with('W') => f[..f.len() - 1]
            .parse::<i8>()
            .ok()
            .filter(|n| (1..=31).contains(n))
            .map(DayOfMonth::NearestWeekday)
            .ok_or_else(|| format!("cron day-of-month {f:?}: nW needs a day from 1 to 31")),
        f => Ok(DayOfMonth::Days(bits(&parse_field(f, "day-of-month", 1, 31, &[])?))),
    }
}

fn parse_dow(field: &str) -> Result<DayOfWeek, String> {
    let day = |v: &str| -> Result<i8, String> {
        let values = parse_field(v, "day-of-week", 1, 7, &DAYS)?;
        match values.as_slice() {
            [d] => Ok(*d as i8),
            _ => Err(format!("cron day-of-week {field:?}: L and # take one day")),
        }
    };
    match field {
        "?" => Ok(DayOfWeek::Any),
        "L" => Ok(DayOfWeek::Days(1 << 7)),
        f if f.len() > 1 && f.ends_with('L') => Ok(DayOfWeek::Last(day(&f[..f.len() - 1])?)),
        f if f.contains('#') => {
            let (d, n) = f.split_once('#').unwrap_or_default();
            let n = n.parse::<i8>().ok().filter(|n| (1..=5).contains(n));
            let n = n.ok_or_else(|| format!("cron day-of-week {f:?}: d#n needs n from 1 to 5"))?;
            Ok(DayOfWeek::Nth(day(d)?, n))
        }
        f => Ok(DayOfWeek::Days(bits(&parse_field(f, "day-of-week", 1, 7, &DAYS)?))),
    }
}

/// What the target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A gust function, with the qualifier the ARN names.
    Function { name: String, qualifier: Option<String> },
    /// A gust queue: each firing sends the input as a message.
    Queue(String),
}

impl TargetKind {
    /// A target ARN: a Lambda function ARN (maybe qualified) or an SQS queue ARN, of gust's.
    pub fn of_arn(arn: &str) -> Result<TargetKind, String> {
        if let Some(queue) = queue_of_arn(arn) {
            return Ok(TargetKind::Queue(queue.to_string()));
        }
        let function = arn.starts_with("arn:aws:lambda:").then(|| split_function_name(arn)).flatten().filter(
            |(name, q)| {
                crate::names::validate_function_name(name).is_ok()
                    && q.is_none_or(|q| crate::Qualifier::parse(Some(q)).is_ok())
            },
        );
        match function {
            Some((name, qualifier)) => {
                Ok(TargetKind::Function { name: name.to_string(), qualifier: qualifier.map(str::to_string) })
            }
            None => Err(format!(
                "Target.Arn {:?} is neither a Lambda function ARN nor a gust queue ARN",
                arn.chars().take(120).collect::<String>()
            )),
        }
    }
}

/// How long, and how many times, a firing the target refused is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// 60-86,400; also the catch-up window after downtime.
    pub maximum_event_age_seconds: u32,
    /// 0-185.
    pub maximum_retry_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { maximum_event_age_seconds: 86_400, maximum_retry_attempts: 185 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub arn: String,
    /// Kept and shown back; gust has no IAM roles.
    pub role_arn: String,
    /// What the target gets; with EventBridge Scheduler's context attributes replaced. `None`:
    /// an EventBridge "Scheduled Event".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// A gust queue's ARN: where a firing goes when it cannot be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_arn: Option<String>,
    /// A FIFO queue target's message group (Scheduler's `SqsParameters.MessageGroupId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_group_id: Option<String>,
}

/// A schedule, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub group: String,
    pub name: String,
    pub expression: String,
    /// An IANA time zone name.
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Millis>,
    pub enabled: bool,
    /// `FLEXIBLE` with this window (minutes, 1-1,440); `None` is `OFF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flexible_window_minutes: Option<u32>,
    pub target: Target,
    #[serde(default)]
    pub description: String,
    /// `DELETE`: a schedule with no firing left is deleted after its last one.
    #[serde(default)]
    pub delete_after_completion: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What a claim of a due schedule writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Scheduled times to fire now, oldest first.
    pub fire: Vec<Millis>,
    /// Scheduled times too old to fire: (first, last, how many).
    pub missed: Option<(Millis, Millis, u64)>,
    /// The next firing's scheduled time, if any is left.
    pub next: Option<Millis>,
}

fn timestamp(ms: Millis) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

impl Schedule {
    pub fn arn(&self) -> String {
        schedule_arn(&self.group, &self.name)
    }

    pub fn target_kind(&self) -> Result<TargetKind, String> {
        TargetKind::of_arn(&self.target.arn)
    }

    fn time_zone(&self) -> Result<TimeZone, String> {
        TimeZone::get(&self.timezone).map_err(|_| {
            format!("ScheduleExpressionTimezone {:?} is not an IANA time zone name", self.timezone)
        })
    }

    /// Everything about the schedule that can be wrong by itself.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("Name", &self.name)?;
        validate_name("GroupName", &self.group)?;
        // EventBridge Scheduler's bounds; a long expression also costs its parse many times
        // its size (`1970/1,` names 230 years).
        for (what, value, max) in [
            ("ScheduleExpression", self.expression.as_str(), 256),
            ("ScheduleExpressionTimezone", self.timezone.as_str(), 50),
            ("Target.Arn", self.target.arn.as_str(), 1600),
            ("Target.RoleArn", self.target.role_arn.as_str(), 1600),
            ("KmsKeyArn", self.kms_key_arn.as_deref().unwrap_or_default(), 2048),
            ("DeadLetterConfig.Arn", self.target.dead_letter_arn.as_deref().unwrap_or_default(), 1600),
        ] {
            if value.len() > max {
                return Err(format!("{what} is longer than {max} characters"));
            }
        }
        for (what, at) in [("StartDate", self.start), ("EndDate", self.end)] {
            if at.is_some_and(|t| !(0..=LATEST_DATE_MS).contains(&t)) {
                return Err(format!("{what} must be between 1970 and 2199"));
            }
        }
        Expression::parse(&self.expression)?;
        self.time_zone()?;
        if let (Some(start), Some(end)) = (self.start, self.end) {
            if end <= start {
                return Err("EndDate must be after StartDate".into());
            }
        }
        if let Some(w) = self.flexible_window_minutes {
            if !(1..=1440).contains(&w) {
                return Err("FlexibleTimeWindow.MaximumWindowInMinutes must be from 1 to 1440".into());
            }
        }
        self.target_kind()?;
        if let Some(input) = &self.target.input {
            if input.chars().count() > MAX_INPUT {
                return Err(format!("Target.Input is longer than {MAX_INPUT} characters"));
            }
        }
        let r = self.target.retry_policy;
        if !(60..=86_400).contains(&r.maximum_event_age_seconds) {
            return Err("RetryPolicy.MaximumEventAgeInSeconds must be from 60 to 86400".into());
        }
        if r.maximum_retry_attempts > 185 {
            return Err("RetryPolicy.MaximumRetryAttempts must be from 0 to 185".into());
        }
        if let Some(dlq) = &self.target.dead_letter_arn {
            if queue_of_arn(dlq).is_none() {
                return Err(format!("DeadLetterConfig.Arn {dlq:?} is not a gust queue ARN"));
            }
        }
        if let Some(g) = &self.target.message_group_id {
            crate::queue::validate_fifo_id("SqsParameters.MessageGroupId", g)?;
            if !matches!(self.target_kind()?, TargetKind::Queue(q) if q.ends_with(".fifo")) {
                return Err("SqsParameters.MessageGroupId is for FIFO queue targets".into());
            }
        }
        if self.description.chars().count() > MAX_DESCRIPTION {
            return Err(format!("Description is longer than {MAX_DESCRIPTION} characters"));
        }
        Ok(())
    }

    /// The first scheduled time strictly after `after`, within the start and end dates.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let (expression, tz) = self.compiled()?;
        self.next_with(&expression, &tz, after)
    }

    /// The expression and the time zone, parsed (once per claim, not once per step).
    fn compiled(&self) -> Option<(Expression, TimeZone)> {
        Some((Expression::parse(&self.expression).ok()?, self.time_zone().ok()?))
    }

    fn next_with(&self, expression: &Expression, tz: &TimeZone, after: Millis) -> Option<Millis> {
        let from = match self.start {
            Some(start) => after.max(start.saturating_sub(1)),
            None => after,
        };
        let next = match expression {
            Expression::Cron(cron) => cron.next_after(timestamp(from)?, tz)?.as_millisecond(),
            &Expression::Rate { every_ms } => {
                // From the start date (which fires), else every period after creation.
                let (anchor, first) = match self.start {
                    Some(start) => (start, 0),
                    None => (self.created_at, 1),
                };
                let k =
                    if from < anchor { first } else { (from.checked_sub(anchor)? / every_ms + 1).max(first) };
                anchor.checked_add(k.checked_mul(every_ms)?)?
            }
            Expression::At(dt) => Some(tz.to_timestamp(*dt).ok()?.as_millisecond()).filter(|t| *t > from)?,
        };
        match self.end {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// When the firing of `scheduled` is due: later by a fixed share of the flexible window,
    /// the same on every server.
    pub fn fire_at(&self, scheduled: Millis) -> Millis {
        let Some(window) = self.flexible_window_minutes else { return scheduled };
        let digest = Md5::digest(format!("{}@{scheduled}", self.arn()).as_bytes());
        let n = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default());
        scheduled.saturating_add((n % (u64::from(window) * 60_000)) as Millis)
    }

    /// The firings due by `now`, from the due scheduled time `next`.
    pub fn plan(&self, next: Millis, now: Millis) -> Plan {
        let Some((expression, tz)) = self.compiled() else { return Plan::default() };
        let step = |t: Millis| self.next_with(&expression, &tz, t);
        let window_start =
            now.saturating_sub(i64::from(self.target.retry_policy.maximum_event_age_seconds) * 1000);
        let mut missed: Option<(Millis, Millis, u64)> = None;
        let mut add_missed = |first: Millis, last: Millis, n: u64| {
            missed = Some(match missed {
                Some((f, _, m)) => (f, last, m + n),
                None => (first, last, n),
            });
        };
        let mut at = Some(next);
        // Too old to fire: due (its fire time, within a flexible window) before the retry
        // window. A rate skips arithmetically to the times that may not be (a window's length
        // before it); a cron steps (bounded), then jumps (the count then says how many it
        // stepped over, at least).
        let slack = i64::from(self.flexible_window_minutes.unwrap_or(0)) * 60_000;
        let surely_missed = window_start.saturating_sub(slack);
        if let (&Expression::Rate { every_ms }, Some(t)) = (&expression, at) {
            if t < surely_missed {
                let n = (surely_missed - t + every_ms - 1) / every_ms;
                add_missed(t, t + (n - 1) * every_ms, n as u64);
                at = t
                    .checked_add(n.saturating_mul(every_ms))
                    .filter(|t| self.end.is_none_or(|end| *t <= end));
            }
        }
        let mut steps = 0;
        while let Some(t) = at.filter(|t| self.fire_at(*t) < window_start) {
            add_missed(t, t, 1);
            steps += 1;
            // Once (never again: after the jump every step moves forward).
            let jump = steps == MAX_MISSED_STEPS && t < surely_missed;
            at = if jump { step(surely_missed.saturating_sub(1)) } else { step(t) };
        }
        let mut due = Vec::new();
        while let Some(t) = at.filter(|t| self.fire_at(*t) <= now) {
            due.push(t);
            at = step(t);
            if due.len() > 2 * MAX_CATCH_UP {
                // Keep the latest; the ones dropped are missed.
                let late = due.len() - MAX_CATCH_UP;
                add_missed(due[0], due[late - 1], late as u64);
                due.drain(..late);
            }
        }
        if due.len() > MAX_CATCH_UP {
            let late = due.len() - MAX_CATCH_UP;
            add_missed(due[0], due[late - 1], late as u64);
            due.drain(..late);
        }
        Plan { fire: due, missed, next: at }
    }

    /// A deterministic id of one firing (EventBridge Scheduler's execution id).
    pub fn execution_id(&self, scheduled: Millis) -> String {
        let d = hex_of(&Md5::digest(format!("{}@{scheduled}", self.arn()).as_bytes()));
        format!("{}-{}-{}-{}-{}", &d[..8], &d[8..12], &d[12..16], &d[16..20], &d[20..32])
    }

    /// What the target gets for the firing of `scheduled`, at its `attempt`-th delivery.
    pub fn payload(&self, scheduled: Millis, attempt: u32) -> String {
        let time = iso_seconds(scheduled);
        match &self.target.input {
            Some(input) => input
                .replace("<aws.scheduler.schedule-arn>", &self.arn())
                .replace("<aws.scheduler.scheduled-time>", &time)
                .replace("<aws.scheduler.execution-id>", &self.execution_id(scheduled))
                .replace("<aws.scheduler.attempt-number>", &attempt.to_string()),
            None => json!({
                "version": "0",
                "id": self.execution_id(scheduled),
                "detail-type": "Scheduled Event",
                "source": "aws.scheduler",
                "account": ACCOUNT,
                "time": time,
                "region": REGION,
                "resources": [self.arn()],
                "detail": {},
            })
            .to_string(),
        }
    }
}

/// `2026-12-03T10:00:00Z`.
pub fn iso_seconds(ms: Millis) -> String {
    timestamp(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

/// What became of one firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FiringState {
    /// Written by a claim; not yet handed to the target.
    Pending,
    /// The target took it (the function's invocation is queued, or the message sent).
    Delivered,
    /// The target refused it past the retry policy, and there is no dead-letter queue.
    Failed,
    /// The target refused it past the retry policy; it went to the dead-letter queue.
    DeadLettered,
    /// Too old to fire when the schedule was claimed (the servers were down).
    Missed,
}

impl FiringState {
    pub fn as_str(self) -> &'static str {
        match self {
            FiringState::Pending => "PENDING",
            FiringState::Delivered => "DELIVERED",
            FiringState::Failed => "FAILED",
            FiringState::DeadLettered => "DEAD_LETTERED",
            FiringState::Missed => "MISSED",
        }
    }

    pub fn parse(s: &str) -> Option<FiringState> {
        [Self::Pending, Self::Delivered, Self::Failed, Self::DeadLettered, Self::Missed]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// One firing of a schedule (or, for `Missed`, a run of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    pub group: String,
    pub schedule: String,
    pub scheduled_at: Millis,
    /// When it is (or was) due: later than `scheduled_at` within a flexible window.
    pub fire_at: Millis,
    pub state: FiringState,
    /// Deliveries the target refused so far.
    pub attempts: u32,
    /// The invocation it became (a function target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// Why it failed, or the message id it became (a queue target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For a `Missed` row: how many scheduled times it stands for, and the last of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<(u64, Millis)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn schedule(expression: &str, tz: &str) -> Schedule {
        Schedule {
            group: DEFAULT_GROUP.into(),
            name: "s".into(),
            expression: expression.into(),
            timezone: tz.into(),
            start: None,
            end: None,
            enabled: true,
            flexible_window_minutes: None,
            target: Target {
                arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
                role_arn: "arn:aws:iam::000000000000:role/r".into(),
                input: None,
                retry_policy: RetryPolicy::default(),
                dead_letter_arn: None,
                message_group_id: None,
            },
            description: String::new(),
            delete_after_completion: false,
            kms_key_arn: None,
            created_at: ms("2026-01-01T00:00:00Z"),
            updated_at: 0,
        }
    }

    fn next(expression: &str, tz: &str, after: &str) -> String {
        let s = schedule(expression, tz);
        s.validate().unwrap();
        iso_seconds(s.next_after(ms(after)).expect("a next firing"))
    }

    #[test]
    fn cron_fields_mean_what_aws_documents() {
        // Every 10 minutes on weekdays.
        assert_eq!(next("cron(0/10 * ? * MON-FRI *)", "UTC", "2026-12-04T23:55:00Z"), "2026-12-07T00:00:00Z");
        // 10:15 on the last day of the month.
        assert_eq!(next("cron(15 10 L * ? *)", "UTC", "2026-02-01T00:00:00Z"), "2026-02-28T10:15:00Z");
        // Last Friday of the month (6 = FRI).
        assert_eq!(next("cron(0 12 ? * 6L *)", "UTC", "2026-12-01T00:00:00Z"), "2026-12-25T12:00:00Z");
        // Second Tuesday.
        assert_eq!(next("cron(0 9 ? * 3#2 *)", "UTC", "2026-12-01T00:00:00Z"), "2026-12-08T09:00:00Z");
        // The weekday nearest the 1st when the 1st is a Saturday (2026-08-01): Monday the 3rd.
        assert_eq!(next("cron(0 8 1W * ? *)", "UTC", "2026-07-31T12:00:00Z"), "2026-08-03T08:00:00Z");
        // The weekday nearest the 15th when it is a Sunday (2026-11-15): Monday the 16th.
        assert_eq!(next("cron(0 8 15W * ? *)", "UTC", "2026-11-01T00:00:00Z"), "2026-11-16T08:00:00Z");
        // The last weekday of a month ending on a Saturday (2027-01-31 is a Sunday, 30th Sat).
        assert_eq!(next("cron(0 18 LW * ? *)", "UTC", "2027-01-01T00:00:00Z"), "2027-01-29T18:00:00Z");
        // Lists, ranges, names and a year.
        assert_eq!(
            next("cron(5,35 8-9 ? JAN,JUL SUN 2028)", "UTC", "2026-12-01T00:00:00Z"),
            "2028-01-02T08:05:00Z"
        );
        // Strictly after: a firing exactly at `after` is not the next one.
        assert_eq!(next("cron(0 * * * ? *)", "UTC", "2026-12-03T10:00:00Z"), "2026-12-03T11:00:00Z");
    }

    #[test]
    fn cron_runs_in_its_time_zone_across_daylight_saving() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        assert_eq!(
            next("cron(0 9 * * ? *)", "America/New_York", "2026-12-03T15:00:00Z"),
            "2026-12-04T14:00:00Z"
        );
        assert_eq!(
            next("cron(0 9 * * ? *)", "America/New_York", "2026-07-03T15:00:00Z"),
            "2026-07-04T13:00:00Z"
        );
        // 02:30 does not exist on 2026-03-08 in New York: it runs when the clock jumps (03:00 EDT).
        assert_eq!(
            next("cron(30 2 * * ? *)", "America/New_York", "2026-03-07T12:00:00Z"),
            "2026-03-08T07:30:00Z"
        );
        // 01:30 happens twice on 2026-11-01: it runs once, the first time.
        let s = schedule("cron(30 1 * * ? *)", "America/New_York");
        let first = s.next_after(ms("2026-11-01T00:00:00Z")).unwrap();
        assert_eq!(iso_seconds(first), "2026-11-01T05:30:00Z");
        assert_eq!(iso_seconds(s.next_after(first).unwrap()), "2026-11-02T06:30:00Z");
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for (bad, says) in [
            ("cron(0 9 * * * *)", "exactly one of day-of-month and day-of-week"),
            ("cron(0 9 ? * ? *)", "exactly one of day-of-month and day-of-week"),
            ("cron(0 9 * * ?)", "six fields"),
            ("cron(60 9 * * ? *)", "from 0 to 59"),
            ("cron(0 9 ? * 8 *)", "from 1 to 7"),
            ("cron(0 9 ? * 2#6 *)", "n from 1 to 5"),
            ("cron(0 9 32W * ? *)", "nW needs"),
            ("cron(0 9-5 * * ? *)", "backwards"),
            ("cron(0 9 * * ? 2200)", "from 1970 to 2199"),
            ("rate(1 minutes)", "singular"),
            ("rate(5 minute)", "singular"),
            ("rate(0 minutes)", "positive VALUE"),
            ("rate(5 weeks)", "UNIT"),
            ("at(2026-13-01T00:00:00)", "yyyy-mm-dd"),
            ("at(2026-12-01 00:00:00)", "yyyy-mm-dd"),
            ("every 5 minutes", "cron(...), rate(...) or at(...)"),
        ] {
            let e = Expression::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut s = schedule("rate(5 minutes)", "Mars/Olympus");
        assert!(s.validate().unwrap_err().contains("IANA"));
        s.timezone = "Europe/Paris".into();
        s.target.arn = "arn:aws:sns:us-east-1:000000000000:topic".into();
        assert!(s.validate().unwrap_err().contains("Target.Arn"));
    }

    #[test]
    fn rates_count_from_the_start_date_or_from_creation() {
        let mut s = schedule("rate(5 minutes)", "UTC");
        assert_eq!(iso_seconds(s.next_after(ms("2026-01-01T00:00:00Z")).unwrap()), "2026-01-01T00:05:00Z");
        assert_eq!(iso_seconds(s.next_after(ms("2026-01-01T00:07:00Z")).unwrap()), "2026-01-01T00:10:00Z");
        s.start = Some(ms("2026-02-01T00:00:00Z"));
        assert_eq!(iso_seconds(s.next_after(ms("2026-01-05T00:00:00Z")).unwrap()), "2026-02-01T00:00:00Z");
        s.end = Some(ms("2026-02-01T00:09:00Z"));
        assert_eq!(iso_seconds(s.next_after(ms("2026-02-01T00:00:00Z")).unwrap()), "2026-02-01T00:05:00Z");
        assert_eq!(s.next_after(ms("2026-02-01T00:05:00Z")), None, "the end date ends it");
    }

    #[test]
    fn a_one_time_schedule_fires_once_in_its_time_zone() {
        let s = schedule("at(2027-01-01T00:00:00)", "Asia/Tokyo");
        let at = s.next_after(ms("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(iso_seconds(at), "2026-12-31T15:00:00Z");
        assert_eq!(s.next_after(at), None);
    }

    #[test]
    fn after_downtime_recent_firings_fire_once_and_older_ones_are_missed() {
        let mut s = schedule("rate(1 minute)", "UTC");
        s.target.retry_policy.maximum_event_age_seconds = 600;
        // Down for an hour: the last ten minutes fire, the fifty before are one missed run.
        let next = ms("2026-01-01T00:01:00Z");
        let plan = s.plan(next, ms("2026-01-01T01:00:30Z"));
        assert_eq!(plan.fire.len(), 10);
        assert_eq!(iso_seconds(plan.fire[0]), "2026-01-01T00:51:00Z");
        assert_eq!(iso_seconds(*plan.fire.last().unwrap()), "2026-01-01T01:00:00Z");
        let (first, last, n) = plan.missed.unwrap();
        assert_eq!(
            (iso_seconds(first), iso_seconds(last), n),
            ("2026-01-01T00:01:00Z".into(), "2026-01-01T00:50:00Z".into(), 50)
        );
        assert_eq!(iso_seconds(plan.next.unwrap()), "2026-01-01T01:01:00Z");
        // Never a storm: within a day's window, only the latest MAX_CATCH_UP fire.
        s.target.retry_policy.maximum_event_age_seconds = 86_400;
        let plan = s.plan(next, ms("2026-01-01T10:00:30Z"));
        assert_eq!(plan.fire.len(), MAX_CATCH_UP);
        assert_eq!(plan.missed.unwrap().2, 600 - MAX_CATCH_UP as u64);
        // A second-rate schedule down for a week: counted, not stepped through.
        let mut fast = schedule("rate(1 second)", "UTC");
        fast.target.retry_policy.maximum_event_age_seconds = 60;
        let started = std::time::Instant::now();
        let plan = fast.plan(next, next + 7 * 86_400_000);
        assert!(started.elapsed() < std::time::Duration::from_millis(200), "{:?}", started.elapsed());
        assert_eq!((plan.fire.len(), plan.missed.unwrap().2 + plan.fire.len() as u64), (61, 7 * 86_400 + 1));
        // A minute cron down for a year steps a bounded number of times.
        let mut cron = schedule("cron(* * * * ? *)", "UTC");
        cron.target.retry_policy.maximum_event_age_seconds = 60;
        let started = std::time::Instant::now();
        let plan = cron.plan(next, next + 365 * 86_400_000);
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
        assert_eq!(plan.fire.len(), 2);
        assert!(plan.missed.unwrap().2 >= u64::from(MAX_MISSED_STEPS));
        // On time: exactly the due one.
        let plan = s.plan(next, next + 10);
        assert_eq!((plan.fire, plan.missed), (vec![next], None));
    }

    #[test]
    fn a_flexible_window_delays_each_firing_alike_everywhere_and_within_the_window() {
        let mut s = schedule("rate(1 hour)", "UTC");
        s.flexible_window_minutes = Some(15);
        let t = ms("2026-01-01T01:00:00Z");
        let at = s.fire_at(t);
        assert!((t..t + 15 * 60_000).contains(&at));
        assert_eq!(s.fire_at(t), at, "deterministic");
        assert_eq!(s.plan(t, t + 1).fire, Vec::<Millis>::new(), "not due before its share of the window");
        assert_eq!(s.plan(t, at).fire, vec![t]);
    }

    #[test]
    fn a_flexible_window_longer_than_the_event_age_still_fires_each_time() {
        let mut s = schedule("rate(1 hour)", "UTC");
        s.flexible_window_minutes = Some(15);
        s.target.retry_policy.maximum_event_age_seconds = 60;
        let mut next = s.next_after(s.created_at).unwrap();
        for _ in 0..24 {
            let plan = s.plan(next, s.fire_at(next));
            assert_eq!((plan.fire, plan.missed), (vec![next], None), "claimed when due, it fires");
            next = plan.next.unwrap();
        }
    }

    #[test]
    fn the_payload_is_a_scheduled_event_or_the_input_with_context_attributes() {
        let mut s = schedule("rate(1 hour)", "UTC");
        let t = ms("2026-01-01T01:00:00Z");
        let event: serde_json::Value = serde_json::from_str(&s.payload(t, 1)).unwrap();
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["time"], "2026-01-01T01:00:00Z");
        assert_eq!(event["resources"][0], "arn:aws:scheduler:us-east-1:000000000000:schedule/default/s");
        s.target.input =
            Some(r#"{"at":"<aws.scheduler.scheduled-time>","try":<aws.scheduler.attempt-number>}"#.into());
        assert_eq!(s.payload(t, 2), r#"{"at":"2026-01-01T01:00:00Z","try":2}"#);
        assert_eq!(s.execution_id(t), s.execution_id(t));
        assert_ne!(s.execution_id(t), s.execution_id(t + 1));
    }

    #[test]
    fn targets_are_functions_or_queues_of_gusts() {
        assert_eq!(
            TargetKind::of_arn("arn:aws:lambda:us-east-1:000000000000:function:f:live").unwrap(),
            TargetKind::Function { name: "f".into(), qualifier: Some("live".into()) }
        );
        assert_eq!(
            TargetKind::of_arn("arn:aws:sqs:us-east-1:000000000000:jobs").unwrap(),
            TargetKind::Queue("jobs".into())
        );
        assert!(TargetKind::of_arn("arn:aws:lambda:us-east-1:000000000000:function:bad/name").is_err());
    }
}
