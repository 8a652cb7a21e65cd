//! Tasks as the API shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// Task states.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Has `after`: some task it waits for is not final yet.
    Waiting,
    /// Ready to run.
    Queued,
    /// Waiting for `run_at` or a retry backoff.
    Scheduled,
    /// Leased to a worker.
    Running,
    /// Done.
    Succeeded,
    /// Attempts exhausted or not retryable.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The wire name (also the stored one).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Queued => "queued",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The states a task can still leave: it is waiting, queued, scheduled or running.
    pub const UNFINISHED: [TaskState; 4] = [
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::Scheduled,
        TaskState::Running,
    ];

    /// Whether the task is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// How an attempt ended: the `outcome` of a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Still running.
    Running,
    /// The worker reported success.
    Succeeded,
    /// The handler failed.
    Failed,
    /// The attempt ran past its timeout.
    Timeout,
    /// The process running it crashed.
    Crash,
    /// The worker stopped renewing the lease.
    Lost,
    /// Cancelled while running.
    Cancelled,
    /// The worker gave the task back (it left or shut down); not counted
    /// against `max_attempts`.
    HandedBack,
}

impl AttemptOutcome {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Crash => "crash",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::HandedBack => "handed_back",
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Ran past `timeout_ms`.
    Timeout,
    /// The handler panicked or its process died.
    Crash,
    /// Its worker went silent.
    Lost,
    /// The handler returned an error.
    Handler,
    /// Cancelled by a user.
    Cancelled,
    /// No handler for the kind on the worker.
    UnknownKind,
    /// The input did not fit the handler.
    BadInput,
    /// Not run: the tasks it waited for (`after`) ended so that its
    /// `run_if` can no longer hold.
    Dependency,
    /// The result's `spawn` could not be applied to the job (an unknown or
    /// taken key, a cycle, the job's task bound); nothing was spawned.
    Spawn,
    /// The result's output was larger than the server takes
    /// ([`crate::MAX_RESULT_BYTES`] by default); recorded instead of it.
    ResultTooLarge,
    /// Its attempts ended `lost` or `crash` (the worker died, the handler
    /// panicked) `--poison-after` times in a row: failed for good, whatever
    /// `max_attempts` says, before it takes down more workers.
    Poison,
    /// Anything else.
    #[serde(other)]
    Other,
}

/// An attempt's error: `{"message": "...", "kind": "timeout|crash|lost|handler|cancelled|..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    /// What went wrong.
    pub message: String,
    /// Its kind.
    pub kind: ErrorKind,
}

impl TaskError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Worker that ran it.
    pub worker_id: Option<String>,
    /// When it was leased.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// How it ended: one of [`AttemptOutcome`]'s names — `running`,
    /// `succeeded`, `failed`, `timeout`, `crash`, `lost`, `cancelled`,
    /// `handed_back` (not counted against `max_attempts`).
    pub outcome: String,
    /// The attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Handler name.
    pub kind: String,
    /// Name, if given.
    pub name: Option<String>,
    /// Queue.
    pub queue: String,
    /// State.
    pub state: TaskState,
    /// Current (or last) attempt; 0 before the first lease.
    pub attempt: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Priority.
    pub priority: i32,
    /// Attempt time limit.
    pub timeout_ms: u64,
    /// Labels a worker must carry.
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
    /// Keys whose limits it counts against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
    /// Its fairness key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_key: Option<String>,
    /// Input.
    #[schema(value_type = serde_json::Value)]
    pub input: serde_json::Value,
    /// Output once succeeded.
    #[schema(value_type = serde_json::Value)]
    pub output: serde_json::Value,
    /// Last error.
    pub error: Option<TaskError>,
    /// Worker running it or that ran it last.
    pub worker_id: Option<String>,
    /// Submitted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Not before (for scheduled tasks).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub run_at: Option<OffsetDateTime>,
    /// Current attempt started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Finished.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Every attempt (only on `GET /v1/tasks/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    /// Its key inside the job, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Keys it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// When it may run once what it waits for is final (with `after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_if: Option<RunIf>,
    /// The task whose result spawned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_by: Option<String>,
    /// Ids of the tasks its result spawned, in spawn order (only on
    /// `GET /v1/tasks/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<String>>,
    /// The last progress its running attempt reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TaskProgress>,
}

/// When a task with `after` may run, once every task it waits for is final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunIf {
    /// Every task it waits for succeeded (the default).
    #[default]
    Succeeded,
    /// All finished, whatever their outcome (a "finally").
    Finished,
    /// At least one failed or was cancelled (an error handler).
    Failed,
}

impl RunIf {
    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunIf::Succeeded => "succeeded",
            RunIf::Finished => "finished",
            RunIf::Failed => "failed",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [RunIf::Succeeded, RunIf::Finished, RunIf::Failed]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Progress a running task reported: `{"done", "total", "message", "at"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskProgress {
    /// Units done.
    pub done: u64,
    /// Units in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// A line for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was reported.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The attempt that reported it.
    #[serde(default)]
    pub attempt: u32,
}

/// A task a leased task waited for, with its result: an entry of
/// `LeasedTask::parents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ParentResult {
    /// The parent's own key (`null` for a spawned task without one).
    pub key: Option<String>,
    /// Its id.
    pub task_id: String,
    /// Its final state.
    pub state: TaskState,
    /// Its output (`null` unless it succeeded, and in a lease whose
    /// `parents_truncated` is true).
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub output: serde_json::Value,
    /// Its error.
    #[serde(default)]
    pub error: Option<TaskError>,
}

/// Filters of `POST /v1/tasks/retry` and `POST /v1/tasks/cancel`: the query
/// of `GET /v1/tasks` as JSON. Every filter given must hold; none matches
/// every task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFilterSpec {
    /// In this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// Of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// In this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Whose error is of this kind (`handler`, `lost`, `poison`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Of this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Created at or after this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub since: Option<OffsetDateTime>,
}

/// `POST /v1/tasks/retry`: how many failed or cancelled tasks went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetriedReply {
    /// Tasks retried.
    pub retried: u64,
}

/// `POST /v1/tasks/cancel`: how many unfinished tasks were cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CancelledReply {
    /// Tasks cancelled.
    pub cancelled: u64,
}
