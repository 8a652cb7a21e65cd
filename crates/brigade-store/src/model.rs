//! Values the store takes and returns besides the wire types.

use brigade_api::{Event, JobView, LeasedTask, TaskView};

/// An `Idempotency-Key` and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request body, hex.
    pub hash: String,
}

/// Outcome of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The job, with `task_ids`.
    pub job: JobView,
    /// `false` when an earlier submit with the same idempotency key is returned.
    pub created: bool,
    /// The earlier job returned instead of a new one because it holds the
    /// submit's `unique` key (then `created` is `false`).
    pub duplicate_of: Option<String>,
    /// What happened.
    pub changes: Changes,
    /// The leases handed to waiting workers in the same transaction, one
    /// entry per worker asked for, in order (`None`: the worker is unknown
    /// or left); empty when no worker was asked.
    pub handed: Vec<Option<Vec<LeasedTask>>>,
}

/// A worker waiting for work, to lease for in a submit's own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    /// The waiting worker.
    pub worker_id: String,
    /// Most tasks it takes.
    pub max: u32,
}

/// What a state change did, for live events and wake-ups.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Events to publish, in order.
    pub events: Vec<Event>,
    /// Some task became `queued`: waiting workers should look.
    pub ready: bool,
    /// Some task became `scheduled`: the promoter should recompute its next wake-up.
    pub scheduled: bool,
    /// Latency samples of the tasks this change started or finished, for metrics.
    pub timings: Vec<Timing>,
    /// Running tasks this change cancelled, as `(worker id, task id)`: their
    /// workers should hear of it now, not at their next heartbeat.
    pub cancelled: Vec<(String, String)>,
    /// Jobs this change ended tasks of while others looked unfinished, so it
    /// did not lock the job to record its end. On PostgreSQL another
    /// transaction may have ended those others at the same moment, unseen:
    /// the engine looks again once this change is committed.
    pub(crate) unsettled: Vec<String>,
    /// Results this change recorded of tasks whose job is traced, for their
    /// `task.result` spans; empty for untraced jobs.
    pub traced: Vec<TracedResult>,
}

/// A recorded result of a task whose job carries a trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedResult {
    /// The task.
    pub task_id: String,
    /// Its job.
    pub job_id: String,
    /// Its kind.
    pub kind: String,
    /// The attempt the result ended.
    pub attempt: u32,
    /// How it ended.
    pub outcome: brigade_api::Outcome,
    /// The job's W3C `traceparent`.
    pub traceparent: String,
}

/// Which latency of a task a [`Timing`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From the moment the task became ready (created, due or requeued) to its lease.
    Queued,
    /// From its lease to the accepted result.
    Run,
}

/// One latency sample of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// The task's kind.
    pub kind: String,
    /// What was measured.
    pub phase: Phase,
    /// How long it took, in seconds (never negative).
    pub seconds: f64,
}

impl Timing {
    /// A sample of `phase` for `kind`, from two times in ms since the epoch.
    pub fn between(kind: impl Into<String>, phase: Phase, from_ms: i64, to_ms: i64) -> Self {
        Self {
            kind: kind.into(),
            phase,
            seconds: (to_ms.saturating_sub(from_ms)).max(0) as f64 / 1000.0,
        }
    }
}

impl Changes {
    /// Append another change.
    pub fn merge(&mut self, other: Changes) {
        self.events.extend(other.events);
        self.ready |= other.ready;
        self.scheduled |= other.scheduled;
        self.timings.extend(other.timings);
        self.cancelled.extend(other.cancelled);
        self.unsettled.extend(other.unsettled);
        self.traced.extend(other.traced);
    }
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<brigade_api::JobState>,
    /// Only jobs of this name.
    pub name: Option<String>,
    /// Only jobs carrying this label.
    pub label: Option<(String, String)>,
    /// Only jobs of this owner (clients see their own).
    pub owner: Option<String>,
    /// Only jobs this schedule created.
    pub schedule_id: Option<String>,
}

/// Filters of `GET /v1/tasks` and of the bulk retry and cancel: tasks
/// across jobs matching every filter given.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// In this state.
    pub state: Option<brigade_api::TaskState>,
    /// Of this kind.
    pub kind: Option<String>,
    /// In this queue.
    pub queue: Option<String>,
    /// Whose `error.kind` has this name (`lost`, `poison`, ...).
    pub error_kind: Option<String>,
    /// Of this job.
    pub job_id: Option<String>,
    /// Created at or after this time (ms).
    pub since: Option<i64>,
    /// Of jobs of this owner (clients see their own).
    pub owner: Option<String>,
}

/// One batch of a bulk retry or cancel.
#[derive(Debug, Clone, Default)]
pub struct Bulk {
    /// Tasks retried (or cancelled) by this batch.
    pub changed: u64,
    /// Where the next batch starts; `None` when no match is left after it.
    pub next: Option<i64>,
    /// What happened.
    pub changes: Changes,
}

/// Outcome of deleting a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Gone.
    Deleted,
    /// No such job.
    NotFound,
    /// The job still has unfinished tasks.
    Unfinished,
}

/// Outcome of retrying a task.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    /// Back in the queue.
    Retried(Box<TaskView>, Changes),
    /// No such task.
    NotFound,
    /// Only failed or cancelled tasks can be retried.
    NotRetryable(brigade_api::TaskState),
}

/// A change another server made to the shared database (PostgreSQL engine),
/// delivered by [`crate::Store::remote`].
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one at a time through a channel; boxing would cost an allocation per event"
)]
pub enum Remote {
    /// An event another server published.
    Event(Event),
    /// Some task became `queued` elsewhere (or notifications may have been
    /// missed): waiting workers should look.
    Ready,
    /// Some task became `scheduled` elsewhere: the promoter should recompute
    /// its next wake-up.
    Scheduled,
}

/// The replies to a batch of heartbeats, in batch order, from what its
/// UPDATEs returned: each worker's state now (absent: unknown worker) and the
/// tasks whose lease was extended. A task a worker named that was not
/// extended is no longer its to run: the reply says to cancel it.
pub(crate) fn heartbeat_replies(
    batch: &[(String, brigade_api::Heartbeat)],
    states: &[(String, String)],
    extended: &[String],
) -> Vec<Option<brigade_api::HeartbeatReply>> {
    let states: std::collections::HashMap<&str, &str> = states
        .iter()
        .map(|(id, state)| (id.as_str(), state.as_str()))
        .collect();
    let extended: std::collections::HashSet<&str> = extended.iter().map(String::as_str).collect();
    batch
        .iter()
        .map(|(worker, hb)| {
            let state = *states.get(worker.as_str())?;
            Some(brigade_api::HeartbeatReply {
                cancel: hb
                    .running
                    .iter()
                    .filter(|t| !extended.contains(t.as_str()))
                    .cloned()
                    .collect(),
                drain: state == brigade_api::WorkerState::Draining.as_str(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use brigade_api::{Heartbeat, HeartbeatReply, Load};

    use super::heartbeat_replies;

    fn beat(worker: &str, running: &[&str]) -> (String, Heartbeat) {
        let hb = Heartbeat {
            running: running.iter().map(|s| (*s).to_owned()).collect(),
            load: Load::default(),
        };
        (worker.to_owned(), hb)
    }

    #[test]
    fn replies_follow_the_batch_order_and_name_what_was_not_extended() {
        let batch = vec![
            beat("w1", &["a", "b"]),
            beat("gone", &["c"]),
            beat("w2", &[]),
            beat("w1", &["a"]),
        ];
        let states = [
            ("w2".to_owned(), "draining".to_owned()),
            ("w1".to_owned(), "active".to_owned()),
        ];
        let replies = heartbeat_replies(&batch, &states, &["a".to_owned()]);
        assert_eq!(
            replies,
            vec![
                Some(HeartbeatReply {
                    cancel: vec!["b".into()],
                    drain: false
                }),
                None,
                Some(HeartbeatReply {
                    cancel: vec![],
                    drain: true
                }),
                Some(HeartbeatReply {
                    cancel: vec![],
                    drain: false
                }),
            ]
        );
    }
}

/// What one pruning pass of expired jobs deleted (rows of each table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Jobs deleted whole.
    pub jobs: u64,
    /// Tasks deleted.
    pub tasks: u64,
    /// Attempts (history rows) deleted.
    pub attempts: u64,
    /// Log lines deleted.
    pub logs: u64,
    /// More expired rows were left for the next pass.
    pub more: bool,
}

impl Pruned {
    /// Whether the pass deleted anything.
    pub fn is_empty(&self) -> bool {
        self.jobs + self.tasks + self.attempts + self.logs == 0
    }
}

/// A schedule as stored: its view, its owner, and what the fire works from.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    /// What the API shows.
    pub view: brigade_api::ScheduleView,
    /// The token name that created it (its jobs belong to it too).
    pub owner: String,
    /// Anchor of an `every_ms` schedule (ms since the epoch).
    pub anchor: i64,
    /// Its next fire, ms since the epoch (`None` while paused).
    pub next_fire_at: Option<i64>,
}

/// Outcome of firing a schedule by hand.
#[derive(Debug, Clone)]
pub enum TriggerOutcome {
    /// The job it created.
    Fired(Box<JobView>, Changes),
    /// No such schedule.
    NotFound,
    /// `overlap: skip` and this job of the schedule is unfinished.
    Overlap(String),
    /// Its job no longer validates (the server's limits changed).
    Invalid,
    /// Its job's `unique` key is held by this earlier job: nothing created
    /// (a `schedule.skipped` event says so).
    Duplicate(String, Changes),
}

/// A callback delivery that is due, claimed by one server for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCallback {
    /// The delivery.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Its event (`job.finished`).
    pub event: String,
    /// Where it goes.
    pub url: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the event happened (the retry window runs from here).
    pub created_at: i64,
}

/// What one attempt of a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackOutcome {
    /// The delivery.
    pub id: String,
    /// The server that made the attempt (its claim).
    pub claimed_by: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// A 2xx came back.
    pub delivered: bool,
    /// The HTTP status, if one came back.
    pub http_status: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// When the attempt ended.
    pub at: i64,
    /// When to try again; `None` with `delivered == false`: given up.
    pub retry_at: Option<i64>,
}
