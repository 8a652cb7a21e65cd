//! Live events (`/v1/events`, `/v1/events/ws`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

use crate::{JobState, TaskError, TaskProgress};

/// One event: `{"type": "task.succeeded", "at": "...", ...ids and changed fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// `job.created|job.finished|task.started|task.succeeded|task.failed|task.retrying|task.cancelled|task.progress|worker.joined|worker.lost|worker.left|schedule.fired|schedule.skipped`.
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
    /// Name of the job, worker or schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Progress (`task.progress`); boxed, so events stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Box<TaskProgress>>,
    /// Schedule concerned (schedule events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// The fire time concerned (schedule events).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub fire_at: Option<OffsetDateTime>,
    /// Why a fire was skipped (`schedule.skipped`): `overlap` or `missed`;
    /// `count` says how many fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many fires a `schedule.skipped` event stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The kinds of event, as `Event::kind` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A job was submitted.
    JobCreated,
    /// Every task of a job is over.
    JobFinished,
    /// A task was leased to a worker.
    TaskStarted,
    /// A task succeeded.
    TaskSucceeded,
    /// A task failed for good.
    TaskFailed,
    /// An attempt failed and the task will run again.
    TaskRetrying,
    /// A task was cancelled.
    TaskCancelled,
    /// A running task reported progress.
    TaskProgress,
    /// A worker joined.
    WorkerJoined,
    /// A worker left.
    WorkerLeft,
    /// A worker went silent and was given up for lost.
    WorkerLost,
    /// A schedule created a job.
    ScheduleFired,
    /// A schedule's fire created nothing (overlap, or missed with `catch_up`).
    ScheduleSkipped,
}

impl EventKind {
    /// The wire name (`Event::kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobCreated => "job.created",
            EventKind::JobFinished => "job.finished",
            EventKind::TaskStarted => "task.started",
            EventKind::TaskSucceeded => "task.succeeded",
            EventKind::TaskFailed => "task.failed",
            EventKind::TaskRetrying => "task.retrying",
            EventKind::TaskCancelled => "task.cancelled",
            EventKind::TaskProgress => "task.progress",
            EventKind::WorkerJoined => "worker.joined",
            EventKind::WorkerLeft => "worker.left",
            EventKind::WorkerLost => "worker.lost",
            EventKind::ScheduleFired => "schedule.fired",
            EventKind::ScheduleSkipped => "schedule.skipped",
        }
    }
}

impl Event {
    /// Whether this event is of `kind`.
    pub fn is(&self, kind: EventKind) -> bool {
        self.kind == kind.as_str()
    }

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
            progress: None,
            schedule_id: None,
            fire_at: None,
            reason: None,
            count: None,
        }
    }
}

/// Tasks finished per second over the last minutes (`GET /v1/stats/throughput`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ThroughputView {
    /// Width of each count, in ms (1000).
    pub interval_ms: u64,
    /// Start of the last interval counted (the current second).
    #[serde(with = "time::serde::rfc3339")]
    pub until: time::OffsetDateTime,
    /// Tasks that succeeded in each interval, oldest first (300 of them).
    pub succeeded: Vec<u64>,
    /// Tasks that failed for good in each interval, oldest first.
    pub failed: Vec<u64>,
}
