//! Jobs: what clients submit and read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// `POST /v1/jobs`: a batch of tasks submitted together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmit {
    /// A name to find the job by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default queue of the job's tasks (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Free-form labels, filterable with `?label=k:v`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The tasks, 1 to 10000.
    #[schema(min_items = 1, max_items = 10000)]
    pub tasks: Vec<TaskSpec>,
    /// Keep the job this long after it finished, then delete it with its tasks,
    /// history and logs (default: the server's `--retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 3_153_600_000_000.0)]
    pub keep_ms: Option<u64>,
    /// Submit at most one job per key: while an earlier job of the same
    /// caller with this key holds it, a submit creates nothing and answers
    /// 200 with that job and `Brigade-Duplicate-Of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Unique>,
    /// POST the job's view to a URL when it finishes (signed; retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::Callback>,
}

/// `unique` of a job: the key, and how long an earlier job holds it — give
/// exactly one of `for_ms` and `while`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unique {
    /// The key, 1 to 255 bytes (per caller).
    pub key: String,
    /// An earlier job holds the key until it is this old (ms since it was
    /// submitted), finished or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3_153_600_000_000.0)]
    pub for_ms: Option<u64>,
    /// An earlier job holds the key while it is unfinished.
    #[serde(default, rename = "while", skip_serializing_if = "Option::is_none")]
    pub while_: Option<UniqueWhile>,
}

/// How long an earlier job holds a unique key without `for_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UniqueWhile {
    /// Until it is finished (succeeded, failed or cancelled).
    Unfinished,
}

impl JobSubmit {
    /// A job of `tasks` in the default queue, without a name or labels.
    pub fn new(tasks: Vec<TaskSpec>) -> Self {
        Self {
            name: None,
            queue: None,
            labels: BTreeMap::new(),
            tasks,
            keep_ms: None,
            unique: None,
            callback: None,
        }
    }

    /// The same job, named `name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The same job, its tasks in `queue` by default.
    pub fn in_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The same job, with `callback`.
    pub fn with_callback(mut self, callback: crate::Callback) -> Self {
        self.callback = Some(callback);
        self
    }
}

/// One task of a submitted job. Only `kind` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Handler name: `[a-z0-9][a-z0-9._-]{0,63}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub kind: String,
    /// Input handed to the handler (`null` when absent).
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub input: serde_json::Value,
    /// A name for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Queue (the job's queue when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher runs first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Attempts before the task fails for good (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    /// Run time limit of one attempt (default 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400000)]
    pub timeout_ms: Option<u64>,
    /// Retry backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Labels a worker must carry to run this task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, String>,
    /// Do not start before this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub run_at: Option<OffsetDateTime>,
    /// A name for the task inside its job, `[a-z0-9][a-z0-9_.-]{0,63}`;
    /// several tasks may share one (it then names the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub key: Option<String>,
    /// Keys of the same job whose tasks (and what they spawn) must be final
    /// before this one runs; until then it is `waiting`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 1000)]
    pub after: Vec<String>,
    /// When it may run once they are: `succeeded` (the default), `finished`
    /// or `failed`. Only with `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_if: Option<crate::RunIf>,
    /// Keys whose limits this task counts against (`PUT /v1/limits/{key}`):
    /// it is leased only while every one has room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 8)]
    pub limits: Vec<String>,
    /// Among queued tasks of one queue and priority, leases go round-robin
    /// across fair keys (a tenant, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_key: Option<String>,
}

impl TaskSpec {
    /// A task of `kind` with `input` and every other field defaulted.
    pub fn new(kind: impl Into<String>, input: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            input,
            name: None,
            queue: None,
            priority: None,
            max_attempts: None,
            timeout_ms: None,
            backoff: None,
            requires: BTreeMap::new(),
            run_at: None,
            key: None,
            after: Vec::new(),
            run_if: None,
            limits: Vec::new(),
            fair_key: None,
        }
    }

    /// The same task, keyed `key` inside its job.
    pub fn keyed(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same task, waiting for the tasks of `keys`.
    pub fn after<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.after = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The same task, counted against the limits of `keys`.
    pub fn limited<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.limits = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The same task, served fairly among the tasks of other `fair_key`s.
    pub fn fair(mut self, fair_key: impl Into<String>) -> Self {
        self.fair_key = Some(fair_key.into());
        self
    }

    /// The same task, run when `run_if` holds for what it waits for.
    pub fn run_if(mut self, run_if: crate::RunIf) -> Self {
        self.run_if = Some(run_if);
        self
    }
}

/// Exponential retry backoff: `initial_ms * factor^(attempt-1)`, capped at `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(default = "Backoff::default_initial")]
    pub initial_ms: u64,
    /// Growth per attempt.
    #[serde(default = "Backoff::default_factor")]
    pub factor: f64,
    /// Longest delay.
    #[serde(default = "Backoff::default_max")]
    pub max_ms: u64,
    /// Spread retries randomly over [delay/2, delay].
    #[serde(default = "Backoff::default_jitter")]
    pub jitter: bool,
}

impl Backoff {
    fn default_initial() -> u64 {
        1000
    }
    fn default_factor() -> f64 {
        2.0
    }
    fn default_max() -> u64 {
        60_000
    }
    fn default_jitter() -> bool {
        true
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: Self::default_initial(),
            factor: Self::default_factor(),
            max_ms: Self::default_max(),
            jitter: Self::default_jitter(),
        }
    }
}

/// Job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Nothing started yet.
    Queued,
    /// Some task started, not all finished.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Finished, at least one task failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// How many of a job's tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// All tasks.
    pub total: u64,
    /// Waiting for the tasks they come `after`.
    #[serde(default)]
    pub waiting: u64,
    /// Ready to run.
    pub queued: u64,
    /// Waiting for `run_at` or a retry.
    pub scheduled: u64,
    /// Leased to a worker.
    pub running: u64,
    /// Done, successfully.
    pub succeeded: u64,
    /// Done, failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl Progress {
    /// Tasks that are over.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Its name, if given.
    pub name: Option<String>,
    /// Default queue of its tasks.
    pub queue: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Derived from its tasks' states.
    pub state: JobState,
    /// Counts per task state.
    pub progress: Progress,
    /// When it was submitted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its first task started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When its last task finished.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// First task start to last task end.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Submitted to finished.
    #[serde(default)]
    pub wall_ms: Option<u64>,
    /// Its own retention, as submitted (`None`: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_ms: Option<u64>,
    /// When it will be deleted with its tasks, history and logs: `finished_at`
    /// plus `keep_ms` or the server's retention; `null` while it runs or when
    /// the server keeps finished jobs forever.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Ids of its tasks, in submission order (only in the reply to a submit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ids: Option<Vec<String>>,
    /// The schedule that created it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// The fire time it was created for (a schedule's jobs only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub fire_at: Option<OffsetDateTime>,
    /// Its callback, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::Callback>,
}
