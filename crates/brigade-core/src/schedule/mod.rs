//! Schedules: when a schedule fires, and what a fire does.
//!
//! Pure functions of the schedule and the time, so the firing decision is
//! unit-tested on a driven clock. The store applies [`plan`] inside the
//! transaction that moves the schedule's `next_fire_at` (a conditional
//! update: of several servers running the duty at once, only the one whose
//! update matched creates the job).
//!
//! # Time zones and daylight saving time
//!
//! A cron expression is read in the schedule's IANA time zone (bundled tz
//! database, never the system's). Where the wall clock jumps:
//! - **Gap** (spring forward, e.g. 02:00→03:00 in Europe/Paris): a time that
//!   does not exist that day fires once, shifted forward by the length of the
//!   gap (02:30 fires at 03:30 CEST). Two times that land on one instant
//!   (02:30 and 03:30) fire once.
//! - **Repeat** (fall back, e.g. 03:00→02:00): a time that occurs twice fires
//!   once, at its first occurrence — unless the hour field is `*`, in which
//!   case the expression fires by the hour and fires in both passes
//!   (`*/15 * * * *` keeps firing every 15 real minutes).
//!
//! `every_ms` schedules ignore time zones: they fire every `every_ms` of real
//! time from their anchor (the creation time).

pub mod cron;

use brigade_api::{CatchUp, FieldError, Overlap, ScheduleCreate, SchedulePatch, ScheduleView};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

pub use self::cron::Cron;

/// Shortest `every_ms` accepted.
pub const MIN_EVERY_MS: u64 = 100;
/// Longest `every_ms` accepted (a year).
pub const MAX_EVERY_MS: u64 = 366 * 86_400_000;
/// At most this many jobs per schedule per duty pass (`catch_up: all`); the
/// rest follow on the next pass.
pub const MAX_FIRES_PER_PASS: usize = 100;
/// A fire later than this (or than the schedule's interval, when shorter) is
/// missed, for `catch_up: none`.
pub const LATE_GRACE_MS: i64 = 60_000;
/// Fires counted one by one when catching up; beyond, the count is a floor.
const MAX_SCAN: usize = 100_000;

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum When {
    /// A cron expression in a time zone.
    Cron {
        /// The expression.
        cron: Cron,
        /// The zone it is read in.
        tz: TimeZone,
    },
    /// Every `every_ms` from `anchor` (ms since the epoch).
    Every {
        /// The interval.
        every_ms: i64,
        /// The first fire is `anchor + every_ms`.
        anchor: i64,
    },
}

/// A time zone by IANA name, from the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    jiff::tz::db()
        .get(name)
        .map_err(|_| format!("{name:?} is not an IANA time zone name"))
}

impl When {
    /// From the stored parts: a cron expression and zone, or an interval and anchor.
    pub fn from_parts(
        cron: Option<&str>,
        every_ms: Option<i64>,
        timezone: &str,
        anchor: i64,
    ) -> Result<Self, String> {
        match (cron, every_ms) {
            (Some(c), _) => Ok(When::Cron {
                cron: Cron::parse(c)?,
                tz: time_zone(timezone)?,
            }),
            (None, Some(every_ms)) if every_ms > 0 => Ok(When::Every { every_ms, anchor }),
            _ => Err("a schedule needs cron or every_ms".into()),
        }
    }

    /// The first fire strictly after `t` (ms since the epoch); `None` when
    /// there is none within the search horizon.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            When::Every { every_ms, anchor } => {
                if t < *anchor {
                    return anchor.checked_add(*every_ms);
                }
                let k = (t - anchor) / every_ms + 1;
                anchor.checked_add(k.checked_mul(*every_ms)?)
            }
            When::Cron { cron, tz } => cron_next_after(cron, tz, t),
        }
    }

    /// The shortest time between two fires around `at`: the grace of a late fire.
    fn interval_after(&self, at: i64) -> i64 {
        match self {
            When::Every { every_ms, .. } => *every_ms,
            When::Cron { .. } => self.next_after(at).map_or(LATE_GRACE_MS, |n| n - at),
        }
    }
}

fn to_ts(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

/// The instants a wall-clock time stands for under the DST rules above
/// (none, one, or two in a repeated hour when the expression fires by the hour).
fn instants(cron: &Cron, tz: &TimeZone, dt: DateTime) -> [Option<i64>; 2] {
    let at = |off: jiff::tz::Offset| off.to_timestamp(dt).ok().map(|t| t.as_millisecond());
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => [at(offset), None],
        // Shifted forward by the length of the gap: read with the offset before it.
        AmbiguousOffset::Gap { before, .. } => [at(before), None],
        AmbiguousOffset::Fold { before, after } => {
            [at(before), if cron.every_hour() { at(after) } else { None }]
        }
    }
}

/// Hours either side of a transition within which wall time and real time
/// may disagree on order (no zone shifts by more).
const TRANSITION_MARGIN_MS: i64 = 3 * 3_600_000;

fn cron_next_after(cron: &Cron, tz: &TimeZone, t: i64) -> Option<i64> {
    let ts = to_ts(t)?;
    let second = jiff::Span::new().seconds(1);
    // Is a transition near? Then wall time may run backwards: look from three
    // hours back, over every candidate up to a bound, and keep the earliest.
    let near = tz
        .following(to_ts(t - TRANSITION_MARGIN_MS)?)
        .next()
        .is_some_and(|tr| tr.timestamp().as_millisecond() <= t + TRANSITION_MARGIN_MS);
    let local = tz.to_datetime(ts);
    let local = local.with().subsec_nanosecond(0).build().ok()?;
    if near {
        let start = local.checked_sub(jiff::Span::new().hours(3)).ok()?;
        let end = local.checked_add(jiff::Span::new().hours(6)).ok()?;
        let mut best: Option<i64> = None;
        let mut cand = cron.next_match(start);
        while let Some(dt) = cand {
            if dt > end {
                break;
            }
            for i in instants(cron, tz, dt).into_iter().flatten() {
                if i > t && best.is_none_or(|b| i < b) {
                    best = Some(i);
                }
            }
            cand = cron.next_match(dt.checked_add(second).ok()?);
        }
        if best.is_some() {
            return best;
        }
        return cron_first_after(cron, tz, t, end);
    }
    cron_first_after(cron, tz, t, local)
}

/// Away from transitions: the first candidate from `from` on that lands after `t`.
fn cron_first_after(cron: &Cron, tz: &TimeZone, t: i64, from: DateTime) -> Option<i64> {
    let second = jiff::Span::new().seconds(1);
    let mut cand = cron.next_match(from.checked_add(second).ok()?);
    // Bounded: candidates before `t` only occur in a repeated hour.
    for _ in 0..10_000 {
        let dt = cand?;
        if let Some(i) = instants(cron, tz, dt)
            .into_iter()
            .flatten()
            .filter(|i| *i > t)
            .min()
        {
            return Some(i);
        }
        cand = cron.next_match(dt.checked_add(second).ok()?);
    }
    None
}

/// What one duty pass does for a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The fire times to create a job for, oldest first.
    pub fires: Vec<i64>,
    /// How many due fires create nothing (a floor when very many were missed).
    pub skipped: u64,
    /// Why they were skipped.
    pub skip_reason: Option<SkipReason>,
    /// The earliest fire skipped.
    pub first_skipped: Option<i64>,
    /// Cancel the previous (unfinished) job first.
    pub cancel_previous: bool,
    /// The schedule's next fire after this pass (`None`: it never fires again).
    pub next_fire_at: Option<i64>,
}

/// Why a fire created no job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The previous job was unfinished and `overlap` is `skip`.
    Overlap,
    /// The fire was missed (downtime) and `catch_up` said to drop it.
    Missed,
}

impl SkipReason {
    /// The name events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Missed => "missed",
        }
    }
}

/// The due fires from `first` up to `now`: the first ones (at most `keep`),
/// the latest, and how many there are (a floor past [`MAX_SCAN`]).
fn due_fires(when: &When, first: i64, now: i64, keep: usize) -> (Vec<i64>, Option<i64>, u64) {
    let mut kept = Vec::new();
    let mut latest = None;
    let mut count = 0u64;
    let mut f = Some(first);
    let mut scanned = 0usize;
    while let Some(at) = f {
        if at > now {
            break;
        }
        if kept.len() < keep {
            kept.push(at);
        }
        latest = Some(at);
        count += 1;
        scanned += 1;
        if scanned >= MAX_SCAN {
            // Very many missed: jump to the last day before now.
            let from = (now - 86_400_000).max(at);
            f = when.next_after(from);
            scanned = 0;
            if let When::Every { every_ms, .. } = when {
                // Count exactly: the fires skipped by the jump.
                if let Some(next) = f {
                    count += ((next - at) / every_ms).max(1) as u64 - 1;
                }
            }
            continue;
        }
        f = when.next_after(at);
    }
    (kept, latest, count)
}

/// What a duty pass does for a schedule whose `next_fire_at` is due at `now`.
/// `previous_unfinished`: the last job this schedule created is not finished.
pub fn plan(
    when: &When,
    overlap: Overlap,
    catch_up: CatchUp,
    next_fire_at: i64,
    now: i64,
    previous_unfinished: bool,
) -> Plan {
    let keep = match catch_up {
        CatchUp::All => MAX_FIRES_PER_PASS,
        _ => 0,
    };
    let (kept, latest, count) = due_fires(when, next_fire_at, now, keep);
    let Some(latest) = latest else {
        return Plan {
            fires: Vec::new(),
            skipped: 0,
            skip_reason: None,
            first_skipped: None,
            cancel_previous: false,
            next_fire_at: Some(next_fire_at),
        };
    };
    let mut skip_reason = None;
    // Missed fires folded into the one kept (or dropped) start at the stored next fire.
    let mut first_skipped = (count > 1 || catch_up == CatchUp::None).then_some(next_fire_at);
    let (mut fires, mut skipped, next) = match catch_up {
        CatchUp::All if count as usize > kept.len() => {
            // The rest on the next pass: resume after the last one kept.
            let last = kept.last().copied().unwrap_or(latest);
            (kept, 0, when.next_after(last))
        }
        CatchUp::All => (kept, 0, when.next_after(latest)),
        CatchUp::One => {
            if count > 1 {
                skip_reason = Some(SkipReason::Missed);
            }
            (vec![latest], count - 1, when.next_after(latest))
        }
        CatchUp::None => {
            let grace = LATE_GRACE_MS.min(when.interval_after(latest));
            if now - latest <= grace {
                if count > 1 {
                    skip_reason = Some(SkipReason::Missed);
                }
                (vec![latest], count - 1, when.next_after(latest))
            } else {
                skip_reason = Some(SkipReason::Missed);
                (Vec::new(), count, when.next_after(latest))
            }
        }
    };
    let mut cancel_previous = false;
    match overlap {
        Overlap::Allow => {}
        Overlap::Skip => {
            let over = if previous_unfinished { 0 } else { 1 };
            if fires.len() > over {
                skipped += (fires.len() - over) as u64;
                first_skipped = first_skipped.or(fires.get(over).copied());
                fires.truncate(over);
                skip_reason = Some(SkipReason::Overlap);
            }
        }
        Overlap::CancelPrevious => {
            // Each job would cancel the one before it: only the last one runs.
            if fires.len() > 1 {
                skipped += (fires.len() - 1) as u64;
                first_skipped = first_skipped.or(fires.first().copied());
                fires = fires.split_off(fires.len() - 1);
                skip_reason = Some(SkipReason::Overlap);
            }
            cancel_previous = previous_unfinished && !fires.is_empty();
        }
    }
    Plan {
        fires,
        skipped,
        skip_reason: if skipped > 0 { skip_reason } else { None },
        first_skipped: if skipped > 0 { first_skipped } else { None },
        cancel_previous,
        next_fire_at: next,
    }
}

/// A schedule that passed validation.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Its name.
    pub name: Option<String>,
    /// Cron expression, as given (trimmed).
    pub cron: Option<String>,
    /// Interval.
    pub every_ms: Option<u64>,
    /// IANA zone name.
    pub timezone: String,
    /// The job to submit, as JSON text (validated).
    pub job: String,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// Paused.
    pub paused: bool,
    /// Anchor of `every_ms` (ms since the epoch).
    pub anchor: i64,
    /// First fire (`None` while paused or never).
    pub next_fire_at: Option<i64>,
}

/// Validate a schedule at `now` (its anchor), naming every field at fault.
/// `job` is checked as a submit would be.
pub fn validate_schedule(
    s: ScheduleCreate,
    limits: &crate::Limits,
    now: i64,
) -> Result<NewSchedule, Vec<FieldError>> {
    let mut errors = Vec::new();
    if s.name.as_ref().is_some_and(|n| n.len() > 256) {
        errors.push(FieldError::new("name", "at most 256 bytes"));
    }
    let timezone = s.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
    let tz = match time_zone(&timezone) {
        Ok(tz) => Some(tz),
        Err(e) => {
            errors.push(FieldError::new("timezone", e));
            None
        }
    };
    let cron = s.cron.as_deref().map(str::trim).map(str::to_owned);
    let when = match (&cron, s.every_ms) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "every_ms",
                "give cron or every_ms, not both",
            ));
            None
        }
        (None, None) => {
            errors.push(FieldError::new("cron", "give cron or every_ms"));
            None
        }
        (Some(c), None) => match Cron::parse(c) {
            Ok(cron) => tz.map(|tz| When::Cron { cron, tz }),
            Err(e) => {
                errors.push(FieldError::new("cron", e));
                None
            }
        },
        (None, Some(ms)) => {
            if (MIN_EVERY_MS..=MAX_EVERY_MS).contains(&ms) {
                Some(When::Every {
                    every_ms: ms as i64,
                    anchor: now,
                })
            } else {
                errors.push(FieldError::new(
                    "every_ms",
                    format!("must be {MIN_EVERY_MS} to {MAX_EVERY_MS}"),
                ));
                None
            }
        }
    };
    let next = when.as_ref().and_then(|w| w.next_after(now));
    if when.is_some() && next.is_none() {
        errors.push(FieldError::new("cron", "never fires"));
    }
    let job = match serde_json::to_string(&s.job) {
        Ok(j) => j,
        Err(e) => {
            errors.push(FieldError::new("job", e.to_string()));
            String::new()
        }
    };
    if let Err(job_errors) = crate::validate::validate_job(s.job, limits) {
        errors.extend(
            job_errors
                .into_iter()
                .map(|e| FieldError::new(format!("job.{}", e.field), e.message)),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewSchedule {
        name: s.name,
        cron,
        every_ms: s.every_ms,
        timezone,
        job,
        overlap: s.overlap.unwrap_or_default(),
        catch_up: s.catch_up.unwrap_or_default(),
        paused: s.paused,
        anchor: now,
        next_fire_at: if s.paused { None } else { next },
    })
}

/// A stored schedule with `patch` applied, validated as a create at `now`.
///
/// Giving one of `cron` and `every_ms` replaces the other. A patch that
/// changes when it fires (`cron`, `every_ms`, `timezone` or `paused`)
/// restarts it from `now`: a new anchor, the next fire after `now` (fires
/// missed while paused are not caught up). Any other patch keeps `anchor`
/// and `next_fire_at` as they are, so renaming a schedule or changing its
/// job never moves or drops a fire.
///
/// The stored job is judged against `limits` only when the patch replaces
/// it: a server whose limits shrank since must still let its owner pause,
/// resume or re-time a schedule (its fires are skipped as `invalid` until
/// the job is fixed).
pub fn revise_schedule(
    current: &ScheduleView,
    anchor: i64,
    next_fire_at: Option<i64>,
    patch: &SchedulePatch,
    limits: &crate::Limits,
    now: i64,
) -> Result<NewSchedule, Vec<FieldError>> {
    let (cron, every_ms) = match (&patch.cron, patch.every_ms) {
        (None, None) => (current.cron.clone(), current.every_ms),
        (c, e) => (c.clone(), e),
    };
    let merged = ScheduleCreate {
        name: patch.name.clone().or_else(|| current.name.clone()),
        cron,
        every_ms,
        timezone: Some(
            patch
                .timezone
                .clone()
                .unwrap_or_else(|| current.timezone.clone()),
        ),
        job: patch.job.clone().unwrap_or_else(|| current.job.clone()),
        overlap: Some(patch.overlap.unwrap_or(current.overlap)),
        catch_up: Some(patch.catch_up.unwrap_or(current.catch_up)),
        paused: patch.paused.unwrap_or(current.paused),
    };
    let unbounded = crate::Limits {
        max_tasks_per_job: usize::MAX,
        max_input_bytes: usize::MAX,
    };
    let limits = if patch.job.is_some() {
        limits
    } else {
        &unbounded
    };
    let mut new = validate_schedule(merged, limits, now)?;
    let retimed = patch
        .cron
        .as_ref()
        .is_some_and(|c| Some(c.trim()) != current.cron.as_deref())
        || patch.every_ms.is_some_and(|e| Some(e) != current.every_ms)
        || patch
            .timezone
            .as_ref()
            .is_some_and(|t| *t != current.timezone)
        || patch.paused.is_some_and(|p| p != current.paused);
    if !retimed {
        new.anchor = anchor;
        new.next_fire_at = next_fire_at;
    }
    Ok(new)
}

#[cfg(test)]
mod tests;
