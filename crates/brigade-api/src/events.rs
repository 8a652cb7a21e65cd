//! Live events (`/v1/events`, `/v1/events/ws`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

use crate::{JobState, TaskError};

/// One event: `{"type": "task.succeeded", "at": "...", ...ids and changed fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// `job.created|job.finished|task.started|task.succeeded|task.failed|task.retrying|task.cancelled|worker.joined|worker.lost|worker.left`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Job concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Task concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Worker concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Attempt concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Job state (job events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// Error (failure events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Name of the job or worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Event {
    /// An event of `kind` at `at` with no ids yet.
    pub fn new(kind: &str, at: OffsetDateTime) -> Self {
        Self {
            kind: kind.to_owned(),
            at,
            job_id: None,
            task_id: None,
            worker_id: None,
            attempt: None,
            state: None,
            error: None,
            name: None,
        }
    }
}
