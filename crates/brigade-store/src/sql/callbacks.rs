//! Callback deliveries, the same on both engines: the outbox row written
//! when a job finishes, the claim, and the record of each attempt.
//!
//! The outbox row is inserted by [`enqueue_finished`] inside the transaction
//! that records the job as finished, so the delivery exists exactly when the
//! finish does, whatever crashes. A claim marks due rows with the claiming
//! server and a time; on PostgreSQL the `SELECT … FOR UPDATE SKIP LOCKED`
//! makes two servers claiming at once pick different rows, and the claim
//! column keeps a delivery with its server after the claim commits, until
//! the attempt is recorded or the claim runs out (its server died).

use brigade_api::{Callback, CallbackAttempt};
use brigade_core::{from_ms, ids::new_id};

use super::{Conn, args};
use crate::Result;
use crate::model::{CallbackOutcome, DueCallback};
use crate::rows::Columns;

/// Delivery states.
const PENDING: &str = "pending";
const DELIVERED: &str = "delivered";
const FAILED: &str = "failed";

/// A job just recorded as finished: queue a delivery of `event` if its
/// callback (`callback`, the job row's JSON) asks for it.
pub(crate) async fn enqueue<C: Conn>(
    c: &mut C,
    job_id: &str,
    callback: Option<&str>,
    event: &str,
    now: i64,
) -> Result<bool> {
    let Some(text) = callback else {
        return Ok(false);
    };
    let cb: Callback = serde_json::from_str(text)?;
    if !cb.events.iter().any(|e| e == event) {
        return Ok(false);
    }
    c.exec(
        "INSERT INTO callback_deliveries (id, job_id, event, url, state, attempts, next_at, created_at) \
         VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        args![new_id(), job_id, event, &cb.url, PENDING, now, now],
    )
    .await?;
    Ok(true)
}

pub(crate) async fn claim<C: Conn>(
    c: &mut C,
    claimer: &str,
    now: i64,
    claim_ms: i64,
    max: u32,
) -> Result<Vec<DueCallback>> {
    let sql = format!(
        "SELECT id, job_id, event, url, attempts, created_at FROM callback_deliveries \
         WHERE state = '{PENDING}' AND next_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?) \
         ORDER BY next_at LIMIT ?{}",
        super::skip_locked::<C>()
    );
    let rows = c.rows(&sql, args![now, now, max]).await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.text("id")?;
        c.exec(
            "UPDATE callback_deliveries SET claimed_by = ?, claimed_until = ? WHERE id = ?",
            args![claimer, now.saturating_add(claim_ms), &id],
        )
        .await?;
        due.push(DueCallback {
            id,
            job_id: row.text("job_id")?,
            event: row.text("event")?,
            url: row.text("url")?,
            attempts: row.int("attempts")?.clamp(0, i64::from(u32::MAX)) as u32,
            created_at: row.int("created_at")?,
        });
    }
    Ok(due)
}

pub(crate) async fn record<C: Conn>(c: &mut C, o: &CallbackOutcome) -> Result<()> {
    let Some(row) = c
        .rows(
            "SELECT job_id FROM callback_deliveries WHERE id = ?",
            args![&o.id],
        )
        .await?
        .pop()
    else {
        // The job was deleted meanwhile, with its deliveries.
        return Ok(());
    };
    let job_id = row.text("job_id")?;
    let status = if o.delivered { DELIVERED } else { FAILED };
    c.exec(
        "INSERT INTO callback_attempts (delivery_id, job_id, attempt, status, http_status, error, at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        args![
            &o.id,
            &job_id,
            o.attempt,
            status,
            o.http_status.map(i64::from),
            o.error.as_deref(),
            o.at
        ],
    )
    .await?;
    let (state, next_at, finished) = match (o.delivered, o.retry_at) {
        (true, _) => (DELIVERED, o.at, Some(o.at)),
        (false, Some(at)) => (PENDING, at, None),
        (false, None) => (FAILED, o.at, Some(o.at)),
    };
    // Only the claim this attempt was made under moves the delivery on: a
    // server whose claim ran out (it was slow) and was taken over records
    // its attempt but leaves the delivery to the new claimant.
    c.exec(
        "UPDATE callback_deliveries SET state = ?, attempts = ?, next_at = ?, finished_at = ?, \
         claimed_by = NULL, claimed_until = NULL \
         WHERE id = ? AND claimed_by = ? AND state = ?",
        args![
            state,
            o.attempt,
            next_at,
            finished,
            &o.id,
            &o.claimed_by,
            PENDING
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn attempts<C: Conn>(
    c: &mut C,
    job_id: &str,
) -> Result<Option<Vec<CallbackAttempt>>> {
    if c.rows("SELECT id FROM jobs WHERE id = ?", args![job_id])
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    let rows = c
        .rows(
            "SELECT a.delivery_id, d.event, d.url, a.attempt, a.status, a.http_status, a.error, a.at \
             FROM callback_attempts a JOIN callback_deliveries d ON d.id = a.delivery_id \
             WHERE a.job_id = ? ORDER BY a.seq",
            args![job_id],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(CallbackAttempt {
            delivery_id: row.text("delivery_id")?,
            event: row.text("event")?,
            url: row.text("url")?,
            attempt: row.int("attempt")?.clamp(0, i64::from(u32::MAX)) as u32,
            status: row.text("status")?,
            http_status: row
                .int_opt("http_status")?
                .and_then(|s| u16::try_from(s).ok()),
            error: row.text_opt("error")?,
            at: from_ms(row.int("at")?),
        });
    }
    Ok(Some(out))
}

/// Statements deleting a job's callback rows (`?` is the job id).
pub(crate) const DELETE_FOR_JOB: [&str; 2] = [
    "DELETE FROM callback_attempts WHERE job_id = ?",
    "DELETE FROM callback_deliveries WHERE job_id = ?",
];
