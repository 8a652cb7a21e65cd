//! Periodic duties: scheduled tasks coming due, schedules firing, silent
//! workers and expired leases, finished jobs past their retention.
//!
//! Each duty is one store transaction that is safe to run from any number of
//! servers at once: it changes only rows still in the state it looks for, so
//! two servers never requeue the same attempt twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::state::AppState;

/// Longest sleep of the promoter between looks.
const PROMOTER_MAX_SLEEP_MS: i64 = 1000;

/// Longest sleep of the scheduler between looks: how soon a schedule created
/// or changed through another server (which cannot wake this one) is seen.
const SCHEDULER_MAX_SLEEP_MS: i64 = 1000;

/// Start the promoter, the scheduler, the reaper and the pruner.
pub fn spawn(state: AppState, scheduled: Arc<Notify>) {
    tokio::spawn(promoter(state.clone(), scheduled));
    tokio::spawn(scheduler(state.clone()));
    tokio::spawn(reaper(state.clone()));
    tokio::spawn(pruner(state));
}

/// Pause between two pruning transactions while a backlog is worked off: the
/// writer serves the hot path in between, so a week of expired jobs going at
/// once never stalls submits, leases or results for more than one small batch.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Deletes finished jobs whose retention ran out, a small batch per transaction.
async fn pruner(state: AppState) {
    let mut tick = tokio::time::interval(state.config.prune_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let pruned = state
                .store
                .prune(
                    state.now(),
                    state.config.retention_ms,
                    state.config.prune_batch,
                )
                .await;
            match pruned {
                Ok(p) => {
                    crate::metrics::pruned(&p);
                    if !p.is_empty() {
                        tracing::debug!(
                            jobs = p.jobs,
                            tasks = p.tasks,
                            attempts = p.attempts,
                            logs = p.logs,
                            "pruned expired jobs"
                        );
                    }
                    if !p.more {
                        break;
                    }
                    tokio::time::sleep(PRUNE_PAUSE).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning expired jobs failed");
                    break;
                }
            }
        }
    }
}

/// Moves `scheduled` tasks whose time has come to `queued`, sleeping until the next is due.
async fn promoter(state: AppState, scheduled: Arc<Notify>) {
    loop {
        let now = state.now();
        let sleep_ms = match state.store.promote_due(now).await {
            Ok((moved, next)) => {
                if moved > 0 {
                    state.dispatcher().wake();
                }
                next.map_or(PROMOTER_MAX_SLEEP_MS, |at| {
                    (at - now).clamp(1, PROMOTER_MAX_SLEEP_MS)
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "promoting scheduled tasks failed");
                PROMOTER_MAX_SLEEP_MS
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            _ = scheduled.notified() => {}
        }
    }
}

/// Fires due schedules, sleeping until the next is due (or a schedule is
/// created or changed here). Every server runs it: the store's fire is
/// conditional on the `next_fire_at` it read, so of several servers waking for
/// one fire exactly one creates the job, and the others see it moved.
async fn scheduler(state: AppState) {
    let wake = state.publisher.schedules.clone();
    loop {
        let now = state.now();
        let sleep_ms = match state.store.fire_schedules(state.limits, now).await {
            Ok((changes, next)) => {
                let fired = changes
                    .events
                    .iter()
                    .filter(|e| e.kind == "schedule.fired")
                    .count();
                if fired > 0 {
                    tracing::debug!(fired, "schedules fired");
                }
                state.publish(changes);
                next.map_or(SCHEDULER_MAX_SLEEP_MS, |at| {
                    (at - now).clamp(1, SCHEDULER_MAX_SLEEP_MS)
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "firing schedules failed");
                SCHEDULER_MAX_SLEEP_MS
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Marks silent workers lost and requeues tasks whose lease expired.
async fn reaper(state: AppState) {
    let ttl = state.config.lease_ttl_ms as i64;
    // Look a few times per TTL so a lost task waits at most a fraction more than the TTL.
    let period = Duration::from_millis((state.config.lease_ttl_ms / 4).clamp(50, 2000));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While this server was down or its store failed, live workers could not
    // record their heartbeats either. Judge no lease until they have had a
    // whole TTL to extend theirs: otherwise their tasks would be requeued and
    // run a second time while they still run them.
    let grace = Duration::from_millis(state.config.lease_ttl_ms);
    let mut blind_since = Some(tokio::time::Instant::now());
    loop {
        tick.tick().await;
        if blind_since.is_some_and(|t| t.elapsed() < grace) {
            continue;
        }
        match state.store.reap(state.now(), ttl).await {
            Ok(changes) => {
                blind_since = None;
                for e in changes.events.iter().filter(|e| e.kind == "worker.lost") {
                    tracing::warn!(worker = ?e.worker_id, name = ?e.name, "worker lost: no heartbeat within the lease TTL");
                }
                state.publish(changes);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reaping expired leases failed");
                blind_since = Some(tokio::time::Instant::now());
            }
        }
    }
}
