//! Queues.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A queue and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// Tasks ready to run.
    pub queued: u64,
    /// Tasks waiting for their time.
    pub scheduled: u64,
    /// Tasks running.
    pub running: u64,
    /// Paused queues hand out nothing.
    pub paused: bool,
    /// Active workers serving it.
    pub workers: u64,
}
