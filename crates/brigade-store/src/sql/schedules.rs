//! Schedules, the same on both engines: their rows, and the fire.
//!
//! A fire is one transaction: a conditional `UPDATE` moves the schedule's
//! `next_fire_at` from the value this server read to the next one, and only
//! when it matched does the same transaction submit the job. Several servers
//! (and a restarted one) running the duty at once therefore create exactly
//! one job per fire: on PostgreSQL the second `UPDATE` waits for the first
//! transaction and then no longer matches; on SQLite the writer is alone.

use brigade_api::{CatchUp, EventKind, JobSubmit, JobView, Overlap, Page, ScheduleView};
use brigade_core::schedule::{NewSchedule, When, plan};
use brigade_core::{Limits, from_ms, ids::new_id};

use super::{Conn, Row, args, write};
use crate::model::{Changes, StoredSchedule, TriggerOutcome};
use crate::rows::{self, Columns};
use crate::{Result, StoreError};

/// Columns [`view`] reads.
const COLUMNS: &str = "seq, id, name, owner, cron, every_ms, timezone, anchor_at, job, overlap, catch_up, \
     paused, next_fire_at, last_fire_at, last_job_id, created_at";

/// Schedules handled per duty pass.
const DUE_PER_PASS: i64 = 100;

fn stored(row: &Row) -> Result<StoredSchedule> {
    let overlap = row.text("overlap")?;
    let catch_up = row.text("catch_up")?;
    let job: JobSubmit = serde_json::from_str(&row.text("job")?)?;
    Ok(StoredSchedule {
        view: ScheduleView {
            id: row.text("id")?,
            name: row.text_opt("name")?,
            cron: row.text_opt("cron")?,
            every_ms: row.int_opt("every_ms")?.map(|v| v.max(0) as u64),
            timezone: row.text("timezone")?,
            next_fire_at: row.int_opt("next_fire_at")?.map(from_ms),
            last_fire_at: row.int_opt("last_fire_at")?.map(from_ms),
            last_job_id: row.text_opt("last_job_id")?,
            paused: row.flag("paused")?,
            job,
            overlap: Overlap::parse(&overlap)
                .ok_or_else(|| StoreError::Corrupt(format!("overlap {overlap:?}")))?,
            catch_up: CatchUp::parse(&catch_up)
                .ok_or_else(|| StoreError::Corrupt(format!("catch_up {catch_up:?}")))?,
            created_at: from_ms(row.int("created_at")?),
        },
        owner: row.text("owner")?,
        anchor: row.int("anchor_at")?,
        next_fire_at: row.int_opt("next_fire_at")?,
    })
}

pub(crate) async fn create<C: Conn>(
    c: &mut C,
    owner: &str,
    s: &NewSchedule,
    now: i64,
) -> Result<ScheduleView> {
    let id = new_id();
    c.exec(
        "INSERT INTO schedules (id, name, owner, cron, every_ms, timezone, anchor_at, job, overlap, catch_up, \
         paused, next_fire_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?)",
        args![
            &id,
            s.name.as_deref(),
            owner,
            s.cron.as_deref(),
            s.every_ms.map(|v| v as i64),
            &s.timezone,
            s.anchor,
            &s.job,
            s.overlap.as_str(),
            s.catch_up.as_str(),
            s.paused,
            s.next_fire_at,
            now
        ],
    )
    .await?;
    Ok(get(c, &id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("schedule vanished".into()))?
        .view)
}

pub(crate) async fn get<C: Conn>(c: &mut C, id: &str) -> Result<Option<StoredSchedule>> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE id = ?");
    c.rows(&sql, args![id])
        .await?
        .first()
        .map(stored)
        .transpose()
}

pub(crate) async fn list<C: Conn>(
    c: &mut C,
    owner: Option<&str>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<ScheduleView>> {
    let mut sql = format!("SELECT {COLUMNS} FROM schedules WHERE 1 = 1");
    let mut a = args![];
    if let Some(cur) = rows::parse_cursor(cursor)? {
        sql.push_str(" AND seq > ?");
        a.push(cur.into());
    }
    if let Some(o) = owner {
        sql.push_str(" AND owner = ?");
        a.push(o.into());
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    a.push((i64::from(limit) + 1).into());
    let mut found = c.rows(&sql, a).await?;
    let next = rows::cut_page(&mut found, limit)?;
    Ok(Page {
        items: found
            .iter()
            .map(|r| stored(r).map(|s| s.view))
            .collect::<Result<_>>()?,
        next_cursor: next,
    })
}

/// Write a revised schedule over the one read with `next_fire_at == read_next`.
/// `None` when it is gone or a fire moved it meanwhile (read again and retry).
pub(crate) async fn replace<C: Conn>(
    c: &mut C,
    id: &str,
    s: &NewSchedule,
    read_next: Option<i64>,
) -> Result<Option<ScheduleView>> {
    let n = c
        .exec(
            "UPDATE schedules SET name = ?, cron = ?, every_ms = ?, timezone = ?, anchor_at = ?, job = ?::jsonb, \
             overlap = ?, catch_up = ?, paused = ?, next_fire_at = ? \
             WHERE id = ? AND coalesce(next_fire_at, -1) = ?",
            args![
                s.name.as_deref(),
                s.cron.as_deref(),
                s.every_ms.map(|v| v as i64),
                &s.timezone,
                s.anchor,
                &s.job,
                s.overlap.as_str(),
                s.catch_up.as_str(),
                s.paused,
                s.next_fire_at,
                id,
                read_next.unwrap_or(-1)
            ],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    Ok(get(c, id).await?.map(|s| s.view))
}

pub(crate) async fn delete<C: Conn>(c: &mut C, id: &str) -> Result<bool> {
    Ok(c.exec("DELETE FROM schedules WHERE id = ?", args![id])
        .await?
        > 0)
}

/// Whether a job exists and is unfinished.
async fn unfinished<C: Conn>(c: &mut C, job_id: Option<&str>) -> Result<bool> {
    let Some(id) = job_id else {
        return Ok(false);
    };
    Ok(c.rows(
        "SELECT 1 AS one FROM jobs WHERE id = ? AND finished_at IS NULL",
        args![id],
    )
    .await?
    .is_empty())
    .map(|none| !none)
}

fn schedule_event(
    kind: EventKind,
    now: i64,
    s: &StoredSchedule,
    fire_at: i64,
) -> brigade_api::Event {
    let mut e = brigade_api::Event::new(kind.as_str(), from_ms(now));
    e.schedule_id = Some(s.view.id.clone());
    e.name = s.view.name.clone();
    e.fire_at = Some(from_ms(fire_at));
    e
}

/// What a fire submitted.
enum Fire {
    /// The job it created.
    Created(Box<JobView>),
    /// Nothing: the stored job no longer validates.
    Invalid,
    /// Nothing: the job's `unique` key is held by this earlier job.
    Duplicate(String),
}

/// Submit the schedule's job for the fire at `fire_at`; nothing (and a
/// `schedule.skipped` event) when the stored job no longer validates or its
/// `unique` key is held.
async fn submit_for<C: Conn>(
    c: &mut C,
    s: &StoredSchedule,
    fire_at: i64,
    limits: &Limits,
    now: i64,
    changes: &mut Changes,
) -> Result<Fire> {
    let job = match brigade_core::validate::validate_job(s.view.job.clone(), limits) {
        Ok(job) => job,
        Err(errors) => {
            let mut e = schedule_event(EventKind::ScheduleSkipped, now, s, fire_at);
            e.reason = Some(format!(
                "invalid: {}",
                errors.first().map(|e| e.field.as_str()).unwrap_or("job")
            ));
            e.count = Some(1);
            changes.events.push(e);
            return Ok(Fire::Invalid);
        }
    };
    let mut submitted = write::submit(c, &s.owner, &job, None, now).await?;
    // A job `unique` key still held by an earlier job: this fire creates
    // nothing, and the earlier job stays as it is.
    if let Some(earlier) = &submitted.duplicate_of {
        let mut e = schedule_event(EventKind::ScheduleSkipped, now, s, fire_at);
        e.reason = Some(format!("unique: the key is held by job {earlier}"));
        e.count = Some(1);
        e.job_id = Some(earlier.clone());
        changes.events.push(e);
        return Ok(Fire::Duplicate(earlier.clone()));
    }
    c.exec(
        "UPDATE jobs SET schedule_id = ?, fire_at = ? WHERE id = ?",
        args![&s.view.id, fire_at, &submitted.job.id],
    )
    .await?;
    submitted.job.schedule_id = Some(s.view.id.clone());
    submitted.job.fire_at = Some(from_ms(fire_at));
    changes.merge(submitted.changes);
    let mut e = schedule_event(EventKind::ScheduleFired, now, s, fire_at);
    e.job_id = Some(submitted.job.id.clone());
    changes.events.push(e);
    Ok(Fire::Created(Box::new(submitted.job)))
}

/// Cancel a schedule's previous job.
async fn cancel_previous<C: Conn>(
    c: &mut C,
    job_id: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    if let Some(more) = write::cancel_job(c, job_id, now).await? {
        changes.merge(more);
    }
    Ok(())
}

/// One duty pass: fire every due schedule (each fire at most once, whatever
/// the number of servers running this at once). What changed, and when the
/// next schedule is due.
pub(crate) async fn fire_due<C: Conn>(
    c: &mut C,
    limits: &Limits,
    now: i64,
) -> Result<(Changes, Option<i64>)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE next_fire_at IS NOT NULL AND next_fire_at <= ? \
         ORDER BY next_fire_at, id LIMIT ?"
    );
    let due = c.rows(&sql, args![now, DUE_PER_PASS]).await?;
    let mut changes = Changes::default();
    for row in &due {
        let s = stored(row)?;
        let Some(read_next) = s.next_fire_at else {
            continue;
        };
        let when = When::from_parts(
            s.view.cron.as_deref(),
            s.view.every_ms.map(|v| v as i64),
            &s.view.timezone,
            s.anchor,
        );
        let previous = s.view.last_job_id.clone();
        let open = unfinished(c, previous.as_deref()).await?;
        let p = match &when {
            Ok(w) => plan(w, s.view.overlap, s.view.catch_up, read_next, now, open),
            Err(e) => {
                // Validated when stored: only a schema from elsewhere gets here.
                tracing::warn!(schedule = %s.view.id, error = %e, "schedule cannot fire; stopping it");
                brigade_core::schedule::Plan {
                    fires: Vec::new(),
                    skipped: 0,
                    skip_reason: None,
                    first_skipped: None,
                    cancel_previous: false,
                    next_fire_at: None,
                }
            }
        };
        // The fire itself: only the server whose update matched goes on.
        let moved = c
            .exec(
                "UPDATE schedules SET next_fire_at = ? WHERE id = ? AND next_fire_at = ?",
                args![p.next_fire_at, &s.view.id, read_next],
            )
            .await?;
        if moved == 0 {
            continue;
        }
        if p.cancel_previous
            && let Some(prev) = &previous
        {
            cancel_previous(c, prev, now, &mut changes).await?;
        }
        let mut last = None;
        for fire_at in &p.fires {
            if let Fire::Created(job) =
                submit_for(c, &s, *fire_at, limits, now, &mut changes).await?
            {
                last = Some((job.id, *fire_at));
            }
        }
        if let Some((job_id, fire_at)) = last {
            c.exec(
                "UPDATE schedules SET last_job_id = ?, last_fire_at = ? WHERE id = ?",
                args![job_id, fire_at, &s.view.id],
            )
            .await?;
        }
        if p.skipped > 0 {
            let mut e = schedule_event(
                EventKind::ScheduleSkipped,
                now,
                &s,
                p.first_skipped.unwrap_or(read_next),
            );
            e.reason = p.skip_reason.map(|r| r.as_str().to_owned());
            e.count = Some(p.skipped);
            changes.events.push(e);
        }
    }
    let next = c
        .rows(
            "SELECT min(next_fire_at) AS t FROM schedules WHERE next_fire_at IS NOT NULL",
            args![],
        )
        .await?
        .pop()
        .map(|r| r.int_opt("t"))
        .transpose()?
        .flatten();
    Ok((changes, next))
}

/// Fire a schedule now (`POST /v1/schedules/{id}/trigger`), under its overlap policy.
pub(crate) async fn trigger<C: Conn>(
    c: &mut C,
    id: &str,
    limits: &Limits,
    now: i64,
) -> Result<TriggerOutcome> {
    let Some(s) = get(c, id).await? else {
        return Ok(TriggerOutcome::NotFound);
    };
    let previous = s.view.last_job_id.clone();
    let open = unfinished(c, previous.as_deref()).await?;
    let mut changes = Changes::default();
    match (s.view.overlap, &previous) {
        (Overlap::Skip, Some(prev)) if open => {
            return Ok(TriggerOutcome::Overlap(prev.clone()));
        }
        (Overlap::CancelPrevious, Some(prev)) if open => {
            cancel_previous(c, prev, now, &mut changes).await?;
        }
        _ => {}
    }
    let job = match submit_for(c, &s, now, limits, now, &mut changes).await? {
        Fire::Created(job) => *job,
        Fire::Invalid => return Ok(TriggerOutcome::Invalid),
        Fire::Duplicate(earlier) => return Ok(TriggerOutcome::Duplicate(earlier, changes)),
    };
    c.exec(
        "UPDATE schedules SET last_job_id = ?, last_fire_at = ? WHERE id = ?",
        args![&job.id, now, id],
    )
    .await?;
    Ok(TriggerOutcome::Fired(Box::new(job), changes))
}
