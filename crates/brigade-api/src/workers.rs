//! The worker protocol: join, lease, heartbeat, results, leave.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

use crate::{ParentResult, TaskError, TaskSpec};

/// `POST /v1/workers`: a worker joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerJoin {
    /// A name for humans (several workers may share one).
    pub name: String,
    /// Host it runs on.
    #[serde(default)]
    pub hostname: String,
    /// Queues it serves (`["default"]` when empty).
    #[serde(default)]
    pub queues: Vec<String>,
    /// Task kinds it can run.
    #[schema(min_items = 1, max_items = 1000)]
    pub kinds: Vec<String>,
    /// Labels matched against tasks' `requires`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Tasks it runs at once.
    #[schema(minimum = 1, maximum = 10000)]
    pub capacity: u32,
    /// Its version.
    #[serde(default)]
    pub version: String,
}

/// Reply to a join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerJoined {
    /// The worker's id for every later call.
    pub id: String,
    /// A lease not extended within this is lost.
    pub lease_ttl_ms: u64,
    /// Heartbeat period.
    pub heartbeat_ms: u64,
    /// The server counts a lease long-poll it holds for a worker that runs
    /// nothing (one asking for all its slots) as that worker's heartbeat, and
    /// answers it with `drain: true` when the worker is to drain: such a
    /// worker may skip its heartbeats while it waits. Absent: heartbeat always.
    #[serde(default)]
    pub long_poll_keepalive: bool,
    /// The server takes `results` in a lease request (recorded in the lease's
    /// transaction, answered in the reply's `results`) and `max: 0` lease
    /// requests that wait for cancels. Absent: use `/results` only.
    #[serde(default)]
    pub results_on_lease: bool,
}

/// `POST /v1/workers/{id}/lease`: ask for up to `max` tasks, waiting up to `wait_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseRequest {
    /// Most tasks to hand out (0..=1000). 0 leases nothing: a busy worker
    /// holds such a long-poll so a cancel of what it runs reaches it at once.
    #[schema(minimum = 0, maximum = 1000)]
    pub max: u32,
    /// Longest wait for work (max 60000; default 30000).
    #[serde(default)]
    #[schema(maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// Finished attempts to record before leasing, in the same transaction
    /// (as `POST /v1/workers/{id}/results` would): a busy worker makes one
    /// round trip per batch instead of two. The reply's `results` says what
    /// was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
}

impl LeaseRequest {
    /// Ask for up to `max` tasks, waiting up to `wait_ms`.
    pub fn new(max: u32, wait_ms: Option<u64>) -> Self {
        Self {
            max,
            wait_ms,
            results: Vec::new(),
        }
    }
}

/// Reply to a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseResponse {
    /// Leased tasks; empty when none came within `wait_ms`.
    pub tasks: Vec<LeasedTask>,
    /// The worker is to drain: finish what it runs and lease nothing more
    /// (as a heartbeat reply's `drain`).
    #[serde(default)]
    pub drain: bool,
    /// Tasks this worker runs that were cancelled: stop them now. (A
    /// heartbeat reply names them too, later.) The long-poll answers as soon
    /// as there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel: Vec<String>,
    /// What became of the request's `results`; absent when it carried none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<ResultsReply>,
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeasedTask {
    /// Task id.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Handler name.
    pub kind: String,
    /// Handler input.
    #[schema(value_type = serde_json::Value)]
    pub input: serde_json::Value,
    /// This attempt's number; the result must carry it.
    pub attempt: u32,
    /// Run time limit.
    pub timeout_ms: u64,
    /// Lease end unless a heartbeat extends it.
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    /// For a task with `after`: the tasks it waited for, with their
    /// results, in submission (then spawn) order. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<Vec<ParentResult>>,
    /// The parents' outputs were over the lease's payload bound
    /// ([`MAX_PARENTS_BYTES`], or more than [`MAX_PARENTS_INLINE`] parents):
    /// `parents` carries keys, ids and states only (at most
    /// [`MAX_PARENT_IDS`] of them); fetch the outputs from
    /// `GET /v1/workers/{id}/tasks/{task_id}/parents`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parents_truncated: bool,
    /// The W3C trace context (`00-<trace id>-<span id>-<flags>`) of the job
    /// this task belongs to: the worker's span for running it is a child of
    /// it. Absent when the job was submitted without tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Most bytes of parents' outputs and errors a lease carries inline.
pub const MAX_PARENTS_BYTES: usize = 1 << 20;
/// Most parents a lease carries with their outputs.
pub const MAX_PARENTS_INLINE: usize = 10_000;
/// Most parent ids a lease carries when their outputs are left out.
pub const MAX_PARENT_IDS: usize = 100_000;

/// Load a worker reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Load {
    /// CPU use of the host, 0..1.
    #[serde(default)]
    pub cpu: f64,
    /// Memory use of the host, 0..1.
    #[serde(default)]
    pub memory: f64,
    /// Tasks running.
    #[serde(default)]
    pub running: u32,
    /// Slots.
    #[serde(default)]
    pub capacity: u32,
}

/// `POST /v1/workers/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// Ids of the tasks it runs; their leases are extended.
    #[serde(default)]
    pub running: Vec<String>,
    /// Current load.
    #[serde(default)]
    pub load: Load,
}

/// Reply to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatReply {
    /// Tasks to stop now: cancelled ones, and any the heartbeat named that
    /// are not this worker's to run any more (finished, requeued after a
    /// lost lease, or leased to another worker). A worker ignores ids it
    /// does not run.
    pub cancel: Vec<String>,
    /// Finish what runs, lease nothing more, leave.
    pub drain: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// With an output.
    Succeeded,
    /// With an error.
    Failed,
}

/// One finished attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskResult {
    /// Task id.
    pub task_id: String,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Output when succeeded.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub output: serde_json::Value,
    /// Error when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Whether a failure may be retried (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// For a retryable failure: retry after this many ms instead of the
    /// task's backoff (Celery's `retry(countdown=…)`). At most a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400000)]
    pub retry_in_ms: Option<u64>,
    /// How long it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tasks to add to the task's job (with a succeeded outcome only; at
    /// most 10000), created in the same transaction as the result: a
    /// rejected result spawns nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 10000)]
    pub spawn: Vec<TaskSpec>,
}

/// `POST /v1/workers/{id}/progress`: running tasks report how far they got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProgressRequest {
    /// One report per task attempt.
    pub progress: Vec<ProgressReport>,
}

/// How far one attempt got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProgressReport {
    /// Task id.
    pub task_id: String,
    /// The attempt it belongs to (the same rule as results).
    pub attempt: u32,
    /// Units done.
    pub done: u64,
    /// Units in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// A line for people (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/workers/{id}/results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultsRequest {
    /// Finished attempts.
    pub results: Vec<TaskResult>,
}

/// Reply to a results batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultsReply {
    /// Recorded.
    pub accepted: Vec<String>,
    /// Not recorded, with why.
    pub rejected: Vec<RejectedResult>,
}

/// A result that was not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RejectedResult {
    /// Task id.
    pub task_id: String,
    /// Why, for people: `unknown task`, `stale attempt: the task is on
    /// attempt N`, `stale attempt: the task is not leased to this worker`,
    /// `the task is <state>`, `the task's result was already recorded`.
    pub reason: String,
    /// Why, for programs. Absent from servers older than this field.
    #[serde(default)]
    pub code: RejectionCode,
}

/// Why a result (or a log batch) was not recorded, machine-readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// No task has this id.
    UnknownTask,
    /// The same batch already carried a result for this task.
    Duplicate,
    /// The task has moved on to another attempt.
    StaleAttempt,
    /// The attempt is leased to another worker.
    NotLeasedToWorker,
    /// The task is not running (it finished, was cancelled or requeued).
    NotRunning,
    /// The result is larger than the server accepts.
    TooLarge,
    /// A code this client does not know yet.
    #[default]
    #[serde(other)]
    Other,
}

impl RejectionCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::UnknownTask => "unknown_task",
            RejectionCode::Duplicate => "duplicate",
            RejectionCode::StaleAttempt => "stale_attempt",
            RejectionCode::NotLeasedToWorker => "not_leased_to_worker",
            RejectionCode::NotRunning => "not_running",
            RejectionCode::TooLarge => "too_large",
            RejectionCode::Other => "other",
        }
    }
}

/// Worker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Leasing and running.
    Active,
    /// Finishing what it runs, leasing nothing.
    Draining,
    /// Went silent.
    Lost,
    /// Left.
    Left,
}

impl WorkerState {
    /// The states of a worker that is still serving: its heartbeats are expected.
    pub const SERVING: [WorkerState; 2] = [WorkerState::Active, WorkerState::Draining];
    /// The states of a worker that is gone: what it ran goes back to the queue.
    pub const GONE: [WorkerState; 2] = [WorkerState::Lost, WorkerState::Left];

    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Draining => "draining",
            WorkerState::Lost => "lost",
            WorkerState::Left => "left",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => WorkerState::Active,
            "draining" => WorkerState::Draining,
            "lost" => WorkerState::Lost,
            "left" => WorkerState::Left,
            _ => return None,
        })
    }
}

/// A worker as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    /// Worker id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Host.
    pub hostname: String,
    /// State.
    pub state: WorkerState,
    /// Queues served.
    pub queues: Vec<String>,
    /// Kinds it runs.
    pub kinds: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Slots.
    pub capacity: u32,
    /// Tasks leased to it now.
    pub running: u32,
    /// Last reported load.
    pub load: Load,
    /// Its version.
    pub version: String,
    /// Joined.
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    /// Last heard from.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
}
