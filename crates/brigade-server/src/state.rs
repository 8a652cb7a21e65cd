//! What every handler shares.

use std::sync::Arc;

use brigade_api::{Event, EventKind};
use brigade_core::{Clock, Limits};
use brigade_store::{Changes, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::auth::{Caller, RateLimiter, Role};
use crate::error::ApiError;

use crate::bus::Bus;
use crate::config::ServerConfig;
use crate::dispatcher::Dispatcher;
use crate::metrics::Metrics;

/// Spreads the consequences of a committed change: live events, waking
/// waiting workers, telling the promoter about new scheduled tasks.
#[derive(Clone)]
pub struct Publisher {
    /// The event bus.
    pub bus: Bus,
    /// Waiting workers.
    pub dispatcher: Dispatcher,
    /// The promoter of scheduled tasks.
    pub scheduled: Arc<Notify>,
    /// The scheduler duty: a schedule was created or changed here.
    pub schedules: Arc<Notify>,
    /// Counters.
    pub metrics: Metrics,
    /// Owners of workers seen so far (a worker's owner never changes).
    pub worker_owners: WorkerOwners,
    /// Tasks finished per second, for the dashboard's chart.
    pub history: Arc<crate::history::Throughput>,
}

/// Owners of workers, cached for authorization.
pub type WorkerOwners = Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

impl Publisher {
    /// Publish what a committed change did.
    pub fn publish(&self, changes: Changes) {
        crate::trace::recorded(&changes.traced);
        if changes.ready {
            self.dispatcher.wake();
        }
        if changes.scheduled {
            self.scheduled.notify_one();
        }
        for timing in &changes.timings {
            self.metrics.timing(timing);
        }
        for (worker, task) in &changes.cancelled {
            self.dispatcher.cancel(worker, task);
        }
        for event in changes.events {
            self.follow(&event, false);
            self.metrics.event(&event);
            self.history.record(&event);
            self.bus.publish(event);
        }
    }

    /// What an event means for this server's own bookkeeping: a worker that
    /// left or was lost is forgotten (however it went: SIGKILLed workers never
    /// say goodbye), and a cancel another server made reaches the worker if
    /// it waits here.
    pub fn follow(&self, event: &Event, remote: bool) {
        let Some(worker) = event.worker_id.as_deref() else {
            return;
        };
        if event.is(EventKind::WorkerLeft) || event.is(EventKind::WorkerLost) {
            self.dispatcher.forget(worker);
            if let Ok(mut owners) = self.worker_owners.lock() {
                owners.remove(worker);
            }
        } else if remote
            && event.is(EventKind::TaskCancelled)
            && let Some(task) = event.task_id.as_deref()
        {
            // The worker may not run it (the event names the task's last
            // worker); a cancel for a task it does not hold is ignored.
            self.dispatcher.cancel(worker, task);
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Configuration.
    pub config: Arc<ServerConfig>,
    /// Publishes changes.
    pub publisher: Publisher,
    /// Submission limits.
    pub limits: Limits,
    /// Per-caller rate limits.
    pub limiter: Arc<RateLimiter>,
    /// Permits for long-polls held at once.
    pub long_polls: Arc<Semaphore>,
    /// Records heartbeats in batches.
    pub heartbeats: crate::heartbeats::Heartbeats,
    /// Owners of workers seen so far (shared with the publisher, which
    /// forgets workers that left or were lost).
    pub worker_owners: WorkerOwners,
    /// Cancelled when the server begins to shut down: long-polls answer and
    /// streams end, so the graceful shutdown has only short requests to finish.
    pub closing: tokio_util::sync::CancellationToken,
}

impl axum::extract::FromRef<AppState> for crate::auth::AuthState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            limiter: state.limiter.clone(),
            clock: state.clock.clone(),
        }
    }
}

impl AppState {
    /// Now, in ms since the epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.publisher.dispatcher
    }

    /// Publish a committed change.
    pub fn publish(&self, changes: Changes) {
        self.publisher.publish(changes);
    }

    /// A permit to hold a long-poll, or 503 when too many are held.
    pub fn long_poll_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.long_polls.clone().try_acquire_owned().map_err(|_| {
            let mut e = ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too many long-polls are waiting on this server; try again shortly",
            );
            e.retry_after = Some(1);
            e
        })
    }

    /// A worker-role caller may speak only for the workers it registered (403 otherwise,
    /// 404 for an unknown worker). Admins speak for all.
    pub async fn check_worker_owner(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        if caller.role == Role::Admin {
            return Ok(());
        }
        let cached = self
            .worker_owners
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned());
        let owner = match cached {
            Some(o) => o,
            None => {
                let o = self
                    .store
                    .worker_owner(id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("worker", id))?;
                if let Ok(mut m) = self.worker_owners.lock() {
                    m.insert(id.to_owned(), o.clone());
                }
                o
            }
        };
        if owner == caller.name {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!("worker {id:?} was registered by another token"),
            ))
        }
    }
}
