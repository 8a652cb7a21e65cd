//! The live event bus: every state change fans out to SSE/WebSocket clients
//! and to requests waiting for a job to finish.

use std::sync::Arc;

use brigade_api::Event;
use tokio::sync::broadcast;

/// Events buffered per subscriber before it is considered too slow.
const CAPACITY: usize = 8192;

/// Publishes events to whoever listens. A subscriber that falls more than
/// [`CAPACITY`] events behind loses the oldest and is told so; publishers never wait.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Ids of tasks that have new log lines (followers of their logs re-read).
    logs: broadcast::Sender<Arc<str>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A bus with nobody listening.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        let (logs, _) = broadcast::channel(CAPACITY);
        Self { tx, logs }
    }

    /// Send an event to every subscriber (none is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// Receive every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Say that task `task_id` has new log lines.
    pub fn publish_logs(&self, task_id: &str) {
        let _ = self.logs.send(Arc::from(task_id));
    }

    /// Receive the ids of tasks with new log lines from now on.
    pub fn subscribe_logs(&self) -> broadcast::Receiver<Arc<str>> {
        self.logs.subscribe()
    }
}
