//! What every handler shares.

use std::sync::Arc;

use brigade_core::{Clock, Limits};
use brigade_store::{Changes, Store};
use tokio::sync::Notify;

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
    /// Counters.
    pub metrics: Metrics,
}

impl Publisher {
    /// Publish what a committed change did.
    pub fn publish(&self, changes: Changes) {
        if changes.ready {
            self.dispatcher.wake();
        }
        if changes.scheduled {
            self.scheduled.notify_one();
        }
        for timing in &changes.timings {
            self.metrics.timing(timing);
        }
        for event in changes.events {
            self.metrics.event(&event);
            self.bus.publish(event);
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
}
