//! The task and job state machine: what a failure leads to, what state a job is in.

use brigade_api::{Backoff, JobState, Progress};

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Try again, not before `run_at` (ms since epoch): the task becomes `scheduled`.
    Retry {
        /// When the next attempt may start.
        run_at: i64,
    },
    /// Try again right away: the task becomes `queued` (used when a worker was lost).
    Requeue,
    /// No more attempts: the task becomes `failed`.
    Fail,
}

/// Delay before retrying after failed attempt number `attempt` (from 1).
///
/// `initial * factor^(attempt-1)` capped at `max`; with jitter, a point in
/// `[delay/2, delay]` chosen by `unit` (a number in `[0, 1)`).
pub fn backoff_delay_ms(backoff: &Backoff, attempt: u32, unit: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(64) as i32;
    let factor = if backoff.factor.is_finite() && backoff.factor >= 1.0 {
        backoff.factor
    } else {
        1.0
    };
    let raw = backoff.initial_ms as f64 * factor.powi(exp);
    let capped = raw.min(backoff.max_ms as f64).max(0.0);
    let delay = if backoff.jitter {
        capped * (0.5 + 0.5 * unit.clamp(0.0, 1.0))
    } else {
        capped
    };
    delay as u64
}

/// What follows a failed attempt.
///
/// `lost` attempts (the worker went silent) are requeued at once; other
/// retryable failures wait out the backoff.
pub fn on_failure(
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
    lost: bool,
    backoff: &Backoff,
    now_ms: i64,
    unit: f64,
) -> Failure {
    if !retryable || attempt >= max_attempts {
        return Failure::Fail;
    }
    if lost {
        return Failure::Requeue;
    }
    Failure::Retry {
        run_at: now_ms + backoff_delay_ms(backoff, attempt, unit) as i64,
    }
}

/// A job's state from its tasks' counts and whether a user cancelled it.
pub fn job_state(p: &Progress, cancel_requested: bool) -> JobState {
    job_state_skipping(p, cancel_requested, 0)
}

/// A job's state, where `skipped` of its cancelled tasks were cancelled with
/// error kind `dependency`. Those say nothing of their own: a job whose
/// error handler was skipped because nothing failed succeeded, and one with
/// a failed task is failed however many tasks its failure cancelled.
pub fn job_state_skipping(p: &Progress, cancel_requested: bool, skipped: u64) -> JobState {
    let unfinished = p.waiting + p.queued + p.scheduled + p.running;
    let cancelled = p.cancelled.saturating_sub(skipped);
    if unfinished == 0 && p.total > 0 {
        if cancel_requested || (cancelled > 0 && p.failed == 0) {
            JobState::Cancelled
        } else if p.failed > 0 {
            JobState::Failed
        } else if cancelled > 0 {
            JobState::Cancelled
        } else {
            JobState::Succeeded
        }
    } else if p.running > 0 || p.finished() > 0 {
        JobState::Running
    } else {
        JobState::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_JITTER: Backoff = Backoff {
        initial_ms: 1000,
        factor: 2.0,
        max_ms: 5000,
        jitter: false,
    };

    #[test]
    fn backoff_grows_exponentially_and_caps() {
        let d: Vec<u64> = (1..=5)
            .map(|a| backoff_delay_ms(&NO_JITTER, a, 0.0))
            .collect();
        assert_eq!(d, vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let b = Backoff {
            jitter: true,
            ..NO_JITTER
        };
        assert_eq!(backoff_delay_ms(&b, 2, 0.0), 1000);
        assert_eq!(backoff_delay_ms(&b, 2, 1.0), 2000);
        let mid = backoff_delay_ms(&b, 2, 0.5);
        assert!((1000..=2000).contains(&mid));
    }

    #[test]
    fn a_silly_factor_does_not_shrink_or_explode() {
        let b = Backoff {
            factor: f64::NAN,
            ..NO_JITTER
        };
        assert_eq!(backoff_delay_ms(&b, 9, 0.0), 1000);
        let b = Backoff {
            factor: 1e300,
            max_ms: 60_000,
            ..NO_JITTER
        };
        assert_eq!(backoff_delay_ms(&b, 200, 0.0), 60_000);
    }

    #[test]
    fn failures_retry_until_the_budget_is_spent() {
        assert_eq!(
            on_failure(1, 3, true, false, &NO_JITTER, 10, 0.0),
            Failure::Retry { run_at: 1010 }
        );
        assert_eq!(
            on_failure(2, 3, true, false, &NO_JITTER, 10, 0.0),
            Failure::Retry { run_at: 2010 }
        );
        assert_eq!(
            on_failure(3, 3, true, false, &NO_JITTER, 10, 0.0),
            Failure::Fail
        );
        assert_eq!(
            on_failure(1, 3, false, false, &NO_JITTER, 10, 0.0),
            Failure::Fail
        );
        assert_eq!(
            on_failure(1, 3, true, true, &NO_JITTER, 10, 0.0),
            Failure::Requeue
        );
        assert_eq!(
            on_failure(3, 3, true, true, &NO_JITTER, 10, 0.0),
            Failure::Fail
        );
    }

    fn progress(q: u64, s: u64, r: u64, ok: u64, f: u64, c: u64) -> Progress {
        Progress {
            total: q + s + r + ok + f + c,
            waiting: 0,
            queued: q,
            scheduled: s,
            running: r,
            succeeded: ok,
            failed: f,
            cancelled: c,
        }
    }

    #[test]
    fn job_states_follow_their_tasks() {
        assert_eq!(
            job_state(&progress(3, 0, 0, 0, 0, 0), false),
            JobState::Queued
        );
        assert_eq!(
            job_state(&progress(0, 3, 0, 0, 0, 0), false),
            JobState::Queued
        );
        assert_eq!(
            job_state(&progress(2, 0, 1, 0, 0, 0), false),
            JobState::Running
        );
        assert_eq!(
            job_state(&progress(2, 0, 0, 1, 0, 0), false),
            JobState::Running
        );
        assert_eq!(
            job_state(&progress(0, 0, 0, 3, 0, 0), false),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&progress(0, 0, 0, 2, 1, 0), false),
            JobState::Failed
        );
        assert_eq!(
            job_state(&progress(0, 0, 0, 2, 1, 1), true),
            JobState::Cancelled
        );
        assert_eq!(
            job_state(&progress(0, 0, 0, 2, 0, 1), false),
            JobState::Cancelled
        );
    }

    #[test]
    fn dependency_cancels_are_neutral_and_waiting_is_unfinished() {
        // A skipped error handler: the job succeeded.
        assert_eq!(
            job_state_skipping(&progress(0, 0, 0, 3, 0, 1), false, 1),
            JobState::Succeeded
        );
        // A failure and what it cancelled downstream: failed.
        assert_eq!(
            job_state_skipping(&progress(0, 0, 0, 1, 1, 3), false, 3),
            JobState::Failed
        );
        // A user's cancel upstream, dependency cancels below: cancelled.
        assert_eq!(
            job_state_skipping(&progress(0, 0, 0, 1, 0, 3), false, 2),
            JobState::Cancelled
        );
        let waiting = Progress {
            waiting: 1,
            ..progress(0, 0, 0, 1, 0, 0)
        };
        assert_eq!(job_state(&waiting, false), JobState::Running);
    }
}
