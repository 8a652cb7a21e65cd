//! Cross-server notifications over `LISTEN`/`NOTIFY`.
//!
//! Every write that produces [`Changes`] calls `pg_notify` inside its
//! transaction, so the notification is delivered on commit and only then. A
//! payload carries the sending server's random origin id, a batch of events
//! and the `ready`/`scheduled` flags; PostgreSQL limits payloads to 8000 bytes,
//! so large batches are split (the flags ride on the last one). Each server
//! listens on the channel, drops its own notifications and forwards the others
//! as [`Remote`] values.

use std::time::Duration;

use brigade_api::Event;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use crate::model::{Changes, Remote};
use crate::{Result, StoreError};

/// The channel every brigade server of one database listens on.
pub(crate) const CHANNEL: &str = "brigade_changes";

/// Most bytes of one payload (PostgreSQL refuses 8000 and more).
const MAX_PAYLOAD: usize = 7900;

/// One notification.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// Origin: the sending server's id.
    o: String,
    /// Sequence within the transaction (PostgreSQL folds identical payloads).
    #[serde(default)]
    n: u32,
    /// Some task became `queued`.
    #[serde(default)]
    r: bool,
    /// Some task became `scheduled`.
    #[serde(default)]
    s: bool,
    /// Events, in order.
    #[serde(default)]
    e: Vec<Event>,
}

/// The payloads announcing `changes`, each under the size limit; empty when
/// there is nothing to say.
pub(crate) fn payloads(origin: &str, changes: &Changes) -> Result<Vec<String>> {
    if changes.events.is_empty() && !changes.ready && !changes.scheduled {
        return Ok(Vec::new());
    }
    // Room for the envelope: origin, sequence, flags.
    let envelope = origin.len() + 64;
    let mut chunks: Vec<Vec<String>> = vec![Vec::new()];
    let mut size = envelope;
    for event in &changes.events {
        let mut text = serde_json::to_string(event)?;
        if text.len() + envelope > MAX_PAYLOAD {
            // Only a huge error message gets here: send the event without it.
            let mut slim = event.clone();
            slim.error = None;
            text = serde_json::to_string(&slim)?;
            if text.len() + envelope > MAX_PAYLOAD {
                tracing::warn!(kind = %event.kind, "event too large to notify other servers");
                continue;
            }
        }
        if size + text.len() + 1 > MAX_PAYLOAD {
            chunks.push(Vec::new());
            size = envelope;
        }
        size += text.len() + 1;
        if let Some(last) = chunks.last_mut() {
            last.push(text);
        }
    }
    let count = chunks.len();
    let mut out = Vec::with_capacity(count);
    for (n, events) in chunks.into_iter().enumerate() {
        let last = n + 1 == count;
        let head = serde_json::to_string(&Payload {
            o: origin.to_owned(),
            n: n as u32,
            r: last && changes.ready,
            s: last && changes.scheduled,
            e: Vec::new(),
        })?;
        // `{"o":..,"e":[]}` with the pre-serialized events spliced in.
        let Some(prefix) = head.strip_suffix("[]}") else {
            return Err(StoreError::Corrupt("notification envelope".into()));
        };
        let mut text = String::with_capacity(
            head.len() + events.iter().map(String::len).sum::<usize>() + events.len(),
        );
        text.push_str(prefix);
        text.push('[');
        text.push_str(&events.join(","));
        text.push_str("]}");
        out.push(text);
    }
    Ok(out)
}

/// Queue `changes` for delivery to the other servers when the transaction commits.
pub(crate) async fn send(conn: &mut PgConnection, origin: &str, changes: &Changes) -> Result<()> {
    let payloads = payloads(origin, changes)?;
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n",
    )
    .bind(CHANNEL)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A listener already listening on [`CHANNEL`] (so nothing committed after
/// the store is opened is missed).
pub(crate) async fn listen(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Forward other servers' notifications to `tx` until the process ends.
pub(crate) async fn run(
    pool: PgPool,
    mut listener: PgListener,
    origin: String,
    tx: broadcast::Sender<Remote>,
) {
    let mut broken = false;
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => {
                if broken {
                    broken = false;
                    missed(&tx);
                }
                forward(note.payload(), &origin, &tx);
            }
            Ok(None) => {
                // The connection dropped and was re-established: anything sent
                // in between is lost, so make every waiter look again.
                tracing::warn!("notification connection to PostgreSQL was reset");
                broken = false;
                missed(&tx);
            }
            Err(e) => {
                if !broken {
                    tracing::warn!(error = %e, "notification connection to PostgreSQL lost; retrying");
                }
                broken = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
                // sqlx drops and replaces a dead connection only for some I/O
                // errors; after others (a reset by peer, when PostgreSQL
                // restarts) it keeps failing on the same socket. Start over
                // with a new listener, and make every waiter look again.
                if let Ok(fresh) = listen(&pool).await {
                    tracing::info!("notification connection to PostgreSQL re-established");
                    listener = fresh;
                    broken = false;
                    missed(&tx);
                }
            }
        }
    }
}

/// Notifications may have been missed.
fn missed(tx: &broadcast::Sender<Remote>) {
    let _ = tx.send(Remote::Ready);
    let _ = tx.send(Remote::Scheduled);
}

fn forward(payload: &str, origin: &str, tx: &broadcast::Sender<Remote>) {
    let p: Payload = match serde_json::from_str(payload) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable notification from another server");
            return;
        }
    };
    if p.o == origin {
        return;
    }
    // Nobody subscribed is not an error: send results are ignored.
    for event in p.e {
        let _ = tx.send(Remote::Event(event));
    }
    if p.r {
        let _ = tx.send(Remote::Ready);
    }
    if p.s {
        let _ = tx.send(Remote::Scheduled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brigade_core::from_ms;

    #[test]
    fn payloads_split_under_the_limit_and_round_trip() -> Result<()> {
        let mut changes = Changes {
            ready: true,
            ..Changes::default()
        };
        for i in 0..200 {
            let mut e = Event::new("task.started", from_ms(1_700_000_000_000 + i));
            e.task_id = Some(format!("task-{i:040}"));
            e.job_id = Some(format!("job-{i:040}"));
            changes.events.push(e);
        }
        let out = payloads("origin-1", &changes)?;
        assert!(out.len() > 1);
        let mut events = Vec::new();
        for (i, text) in out.iter().enumerate() {
            assert!(text.len() < 8000);
            let p: Payload = serde_json::from_str(text)?;
            assert_eq!(p.o, "origin-1");
            assert_eq!(p.n as usize, i);
            assert_eq!(p.r, i + 1 == out.len());
            assert!(!p.s);
            events.extend(p.e);
        }
        assert_eq!(events, changes.events);
        Ok(())
    }

    #[test]
    fn nothing_to_say_sends_nothing() -> Result<()> {
        assert!(payloads("o", &Changes::default())?.is_empty());
        Ok(())
    }
}
