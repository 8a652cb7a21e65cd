//! Typed transitions of a task: what a result, a failure or a lost lease does
//! to it. Decided here, applied by the store, so both engines follow one rule
//! and a new state fails to compile wherever it matters.

use brigade_api::{
    AttemptOutcome, Backoff, ErrorKind, EventKind, RejectionCode, TaskError, TaskState,
};

use crate::lifecycle::{Failure, on_failure};

/// Why a result or a log batch is refused. Each has a machine-readable
/// [`code`](Rejection::code) and a reason for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No task has this id.
    UnknownTask,
    /// The batch already carried a result for this task.
    Duplicate,
    /// The task is on another attempt now.
    StaleAttempt {
        /// The task's current attempt.
        current: u32,
    },
    /// The attempt belongs to another worker.
    NotLeasedToWorker,
    /// The task is not running.
    NotRunning {
        /// Its state.
        state: TaskState,
    },
}

impl Rejection {
    /// The code clients act on.
    pub fn code(&self) -> RejectionCode {
        match self {
            Rejection::UnknownTask => RejectionCode::UnknownTask,
            Rejection::Duplicate => RejectionCode::Duplicate,
            Rejection::StaleAttempt { .. } => RejectionCode::StaleAttempt,
            Rejection::NotLeasedToWorker => RejectionCode::NotLeasedToWorker,
            Rejection::NotRunning { .. } => RejectionCode::NotRunning,
        }
    }

    /// The reason, for people.
    pub fn reason(&self) -> String {
        match self {
            Rejection::UnknownTask => "unknown task".into(),
            Rejection::Duplicate => "the task's result was already recorded".into(),
            Rejection::StaleAttempt { current } => {
                format!("stale attempt: the task is on attempt {current}")
            }
            Rejection::NotLeasedToWorker => {
                "stale attempt: the task is not leased to this worker".into()
            }
            Rejection::NotRunning { state } => format!("the task is {}", state.as_str()),
        }
    }
}

/// What the store knows of a task when a worker reports on it.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// Its state.
    pub state: TaskState,
    /// Its current attempt.
    pub attempt: u32,
    /// The worker its current attempt is leased to.
    pub worker_id: Option<&'a str>,
}

/// Whether `worker` may report on attempt `attempt` of a task: only the
/// worker holding the task's current attempt, while it runs.
pub fn check_attempt(task: Held<'_>, worker: &str, attempt: u32) -> Result<(), Rejection> {
    if task.attempt != attempt {
        return Err(Rejection::StaleAttempt {
            current: task.attempt,
        });
    }
    if task.worker_id != Some(worker) {
        return Err(Rejection::NotLeasedToWorker);
    }
    if task.state != TaskState::Running {
        return Err(Rejection::NotRunning { state: task.state });
    }
    Ok(())
}

/// Who should hear of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Nobody.
    Nobody,
    /// Waiting workers: a task became `queued`.
    Workers,
    /// The promoter: a task became `scheduled`.
    Promoter,
}

/// A failed attempt's consequence, as the store writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The task's new state.
    pub state: TaskState,
    /// When a scheduled task is due.
    pub run_at: Option<i64>,
    /// When the task becomes ready again (`None`: unchanged).
    pub ready_at: Option<i64>,
    /// When the task ended, if it did.
    pub finished_at: Option<i64>,
    /// The event to publish.
    pub event: EventKind,
    /// Who to wake.
    pub wake: Wake,
    /// Attempts in a row that ended `lost` or `crash`, this one included.
    pub deaths: u32,
    /// Failed for good as a poison task: the store records
    /// [`poison_error`] instead of the attempt's own error.
    pub poison: bool,
}

/// A task's attempt budget, as the store keeps it.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// The attempt that failed.
    pub attempt: u32,
    /// Attempts up to this one were not counted (retried by hand or handed back).
    pub attempt_base: u32,
    /// The budget.
    pub max_attempts: u32,
    /// The retry delays.
    pub backoff: &'a Backoff,
    /// Attempts in a row before this one that ended `lost` or `crash`.
    pub deaths: u32,
    /// After this many such attempts in a row the task is poison (0: never).
    pub poison_after: u32,
}

/// The server's `--poison-after` when none is given.
pub const DEFAULT_POISON_AFTER: u32 = 3;

/// Whether an attempt that ended so was a death: its worker went silent
/// (`lost`) or its handler crashed (`crash`). Deaths count apart from
/// handler failures, toward [`Budget::poison_after`].
pub fn is_death(outcome: AttemptOutcome) -> bool {
    matches!(outcome, AttemptOutcome::Lost | AttemptOutcome::Crash)
}

/// The error recorded on a task failed as poison after `deaths` deaths in a row.
pub fn poison_error(deaths: u32, last: &TaskError) -> TaskError {
    TaskError::new(
        ErrorKind::Poison,
        format!(
            "{deaths} attempts in a row ended lost or crash (the last: {}); \
             not retried so it cannot take down more workers",
            last.message
        ),
    )
}

/// What a failed attempt does: retry after the backoff (or after
/// `retry_in_ms` when the worker asked for a delay of its own), requeue at
/// once (a lost worker), or fail for good. An attempt that ended as
/// `outcome` counts toward poison when it [`is_death`]: the
/// `poison_after`-th death in a row fails the task whatever its budget
/// says; any other failure ends the run of deaths. `unit` is a random
/// number in `[0, 1)` for the backoff's jitter.
pub fn fail(
    budget: Budget<'_>,
    outcome: AttemptOutcome,
    retryable: bool,
    retry_in_ms: Option<u64>,
    now: i64,
    unit: f64,
) -> Transition {
    let lost = outcome == AttemptOutcome::Lost;
    let deaths = if is_death(outcome) {
        budget.deaths.saturating_add(1)
    } else {
        0
    };
    let poison = budget.poison_after > 0 && deaths >= budget.poison_after;
    let counted = budget.attempt.saturating_sub(budget.attempt_base);
    let decided = if poison {
        Failure::Fail
    } else {
        on_failure(
            counted,
            budget.max_attempts,
            retryable,
            lost,
            budget.backoff,
            now,
            unit,
        )
    };
    let decided = match (decided, retry_in_ms) {
        (Failure::Retry { .. }, Some(ms)) => Failure::Retry {
            run_at: now.saturating_add(ms.min(MAX_RETRY_IN_MS) as i64),
        },
        (other, _) => other,
    };
    match decided {
        Failure::Retry { run_at } => Transition {
            state: TaskState::Scheduled,
            run_at: Some(run_at),
            ready_at: Some(run_at),
            finished_at: None,
            event: EventKind::TaskRetrying,
            wake: Wake::Promoter,
            deaths,
            poison: false,
        },
        Failure::Requeue => Transition {
            state: TaskState::Queued,
            run_at: None,
            ready_at: Some(now),
            finished_at: None,
            event: EventKind::TaskRetrying,
            wake: Wake::Workers,
            deaths,
            poison: false,
        },
        Failure::Fail => Transition {
            state: TaskState::Failed,
            run_at: None,
            ready_at: None,
            finished_at: Some(now),
            event: EventKind::TaskFailed,
            wake: Wake::Nobody,
            deaths,
            poison,
        },
    }
}

/// The longest delay a worker may ask a retry to wait: a day.
pub const MAX_RETRY_IN_MS: u64 = 86_400_000;

/// How an attempt that failed with `error` is recorded in the history.
pub fn failed_outcome(error: &TaskError) -> AttemptOutcome {
    match error.kind {
        ErrorKind::Timeout => AttemptOutcome::Timeout,
        ErrorKind::Crash => AttemptOutcome::Crash,
        _ => AttemptOutcome::Failed,
    }
}

/// The error recorded for a failure report that carried none.
pub fn default_error() -> TaskError {
    TaskError::new(ErrorKind::Handler, "failed")
}

/// The error recorded when a lease ran out.
pub fn lost_error() -> TaskError {
    TaskError::new(
        ErrorKind::Lost,
        "the worker stopped renewing the lease (lost or unreachable)",
    )
}

/// The error recorded on a cancelled task.
pub fn cancelled_error() -> TaskError {
    TaskError::new(ErrorKind::Cancelled, "cancelled by request")
}

/// The state a failed or cancelled task retried by hand starts over in.
pub fn retryable_by_hand(state: TaskState) -> bool {
    matches!(state, TaskState::Failed | TaskState::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial_ms: 1000,
        factor: 2.0,
        max_ms: 60_000,
        jitter: false,
    };

    fn budget(attempt: u32, base: u32, max: u32) -> Budget<'static> {
        Budget {
            attempt,
            attempt_base: base,
            max_attempts: max,
            backoff: &B,
            deaths: 0,
            poison_after: 3,
        }
    }

    #[test]
    fn only_the_current_attempt_of_the_holder_may_report() {
        let held = Held {
            state: TaskState::Running,
            attempt: 2,
            worker_id: Some("w1"),
        };
        assert_eq!(check_attempt(held, "w1", 2), Ok(()));
        assert_eq!(
            check_attempt(held, "w1", 1),
            Err(Rejection::StaleAttempt { current: 2 })
        );
        assert_eq!(
            check_attempt(held, "w2", 2),
            Err(Rejection::NotLeasedToWorker)
        );
        let done = Held {
            state: TaskState::Succeeded,
            ..held
        };
        let e = check_attempt(done, "w1", 2);
        assert_eq!(
            e,
            Err(Rejection::NotRunning {
                state: TaskState::Succeeded
            })
        );
        let e = Rejection::NotRunning {
            state: TaskState::Succeeded,
        };
        assert_eq!(e.code(), RejectionCode::NotRunning);
        assert_eq!(e.reason(), "the task is succeeded");
    }

    #[test]
    fn a_failure_retries_requeues_or_fails() {
        let t = fail(budget(1, 0, 3), AttemptOutcome::Failed, true, None, 10, 0.0);
        assert_eq!(t.state, TaskState::Scheduled);
        assert_eq!(t.run_at, Some(1010));
        assert_eq!(t.ready_at, Some(1010));
        assert_eq!(t.wake, Wake::Promoter);
        let t = fail(budget(1, 0, 3), AttemptOutcome::Lost, true, None, 10, 0.0);
        assert_eq!(
            (t.state, t.ready_at, t.wake),
            (TaskState::Queued, Some(10), Wake::Workers)
        );
        let t = fail(budget(3, 0, 3), AttemptOutcome::Failed, true, None, 10, 0.0);
        assert_eq!(
            (t.state, t.finished_at, t.event),
            (TaskState::Failed, Some(10), EventKind::TaskFailed)
        );
        // Attempts below the base do not count: attempt 4 after a hand-back is the 3rd.
        assert_eq!(
            fail(budget(4, 2, 3), AttemptOutcome::Failed, true, None, 10, 0.0).state,
            TaskState::Scheduled
        );
        assert_eq!(
            fail(
                budget(1, 0, 3),
                AttemptOutcome::Failed,
                false,
                None,
                10,
                0.0
            )
            .state,
            TaskState::Failed
        );
    }

    #[test]
    fn a_worker_may_choose_the_retry_delay_but_not_the_budget() {
        let t = fail(
            budget(1, 0, 3),
            AttemptOutcome::Failed,
            true,
            Some(5000),
            10,
            0.0,
        );
        assert_eq!((t.state, t.run_at), (TaskState::Scheduled, Some(5010)));
        // The last attempt fails however soon the worker wanted it again.
        let t = fail(
            budget(3, 0, 3),
            AttemptOutcome::Failed,
            true,
            Some(5000),
            10,
            0.0,
        );
        assert_eq!(t.state, TaskState::Failed);
        // A lost worker's task is requeued at once, not delayed.
        let t = fail(
            budget(1, 0, 3),
            AttemptOutcome::Lost,
            true,
            Some(5000),
            10,
            0.0,
        );
        assert_eq!(t.state, TaskState::Queued);
    }

    #[test]
    fn deaths_in_a_row_make_a_task_poison_whatever_its_budget() {
        let mut b = budget(1, 0, 10);
        let t = fail(b, AttemptOutcome::Lost, true, None, 10, 0.0);
        assert_eq!((t.state, t.deaths, t.poison), (TaskState::Queued, 1, false));
        b.deaths = 1;
        let t = fail(b, AttemptOutcome::Crash, true, None, 10, 0.0);
        assert_eq!(
            (t.state, t.deaths, t.poison),
            (TaskState::Scheduled, 2, false)
        );
        b.deaths = 2;
        let t = fail(b, AttemptOutcome::Lost, true, None, 10, 0.0);
        assert_eq!(
            (t.state, t.deaths, t.poison, t.event),
            (TaskState::Failed, 3, true, EventKind::TaskFailed)
        );
        // A handler failure ends the run: deaths start over.
        let t = fail(b, AttemptOutcome::Failed, true, None, 10, 0.0);
        assert_eq!(
            (t.state, t.deaths, t.poison),
            (TaskState::Scheduled, 0, false)
        );
        let t = fail(b, AttemptOutcome::Timeout, true, None, 10, 0.0);
        assert_eq!(t.deaths, 0);
        // 0 turns poison off.
        b.poison_after = 0;
        b.deaths = 50;
        assert!(!fail(b, AttemptOutcome::Lost, true, None, 10, 0.0).poison);
        // The last attempt of the budget that is also the third death is poison.
        let mut last = budget(3, 0, 3);
        last.deaths = 2;
        assert!(fail(last, AttemptOutcome::Lost, true, None, 10, 0.0).poison);
        assert_eq!(poison_error(3, &lost_error()).kind, ErrorKind::Poison);
    }

    #[test]
    fn outcomes_follow_the_error_kind() {
        assert_eq!(
            failed_outcome(&TaskError::new(ErrorKind::Timeout, "t")),
            AttemptOutcome::Timeout
        );
        assert_eq!(failed_outcome(&default_error()), AttemptOutcome::Failed);
    }
}
