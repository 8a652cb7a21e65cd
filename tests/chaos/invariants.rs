//! The invariant checker: reads the final state through the API and says
//! whether anything acknowledged was lost, done twice or left stuck.

use std::collections::HashMap;
use std::io::Write;

use brigade_api::{TaskState, TaskView};
use brigade_client::Client;
use futures::StreamExt;
use serde_json::Value;

/// A job that got its 201, with its tasks' ids and inputs.
#[derive(Debug, Clone)]
pub struct Acked {
    pub job_id: String,
    pub tasks: Vec<(String, Value)>,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Tasks that got a 201.
    pub submitted: usize,
    /// Of those, finished with exactly one accepted result equal to the input.
    pub finished: usize,
    /// Acknowledged tasks missing, or finished without a success.
    pub lost: Vec<String>,
    /// Tasks with more than one succeeded attempt.
    pub twice: Vec<String>,
    /// Jobs not in a final state, tasks or attempts still `running`.
    pub stuck: Vec<String>,
    /// Tasks whose output is not their input.
    pub wrong: Vec<String>,
    /// Tasks that used more attempts than their budget.
    pub over_budget: Vec<String>,
    /// Every acknowledged task with its history, by id.
    pub tasks: HashMap<String, TaskView>,
}

/// Read every acknowledged job and task and check them.
pub async fn check(client: &Client, acked: &[Acked]) -> Report {
    let mut r = Report::default();
    for a in acked {
        r.submitted += a.tasks.len();
        match client.job(&a.job_id).await {
            Ok(j) if j.state.is_finished() => {
                if j.progress.total as usize != a.tasks.len() {
                    r.lost
                        .push(format!("job {} has {} tasks", a.job_id, j.progress.total));
                }
            }
            Ok(j) => r.stuck.push(format!("job {} is {:?}", a.job_id, j.state)),
            Err(e) => r.lost.push(format!("job {}: {e}", a.job_id)),
        }
    }
    // Every task with its history, a few requests at a time.
    let wanted: Vec<(String, Value)> = acked.iter().flat_map(|a| a.tasks.clone()).collect();
    let fetched: Vec<(String, Value, Result<TaskView, String>)> =
        futures::stream::iter(wanted.into_iter().map(|(id, input)| {
            let client = client.clone();
            async move {
                let mut last = String::new();
                for _ in 0..5 {
                    match client.task(&id).await {
                        Ok(t) => return (id, input, Ok(t)),
                        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                            return (id, input, Err(e.to_string()));
                        }
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                (id, input, Err(last))
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    for (id, input, t) in fetched {
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                r.lost.push(format!("task {id}: {e}"));
                continue;
            }
        };
        let history = t.history.clone().unwrap_or_default();
        let successes = history.iter().filter(|h| h.outcome == "succeeded").count();
        let spent = history
            .iter()
            .filter(|h| h.outcome != "handed_back")
            .count();
        if history.iter().any(|h| h.outcome == "running") || t.state == TaskState::Running {
            r.stuck.push(format!("task {id} still running"));
        }
        if successes > 1 {
            r.twice
                .push(format!("task {id}: {successes} succeeded attempts"));
        }
        if spent > t.max_attempts as usize {
            r.over_budget
                .push(format!("task {id}: {spent} attempts of {}", t.max_attempts));
        }
        if t.state != TaskState::Succeeded || successes == 0 {
            r.lost.push(format!(
                "task {id} is {:?} with {successes} successes",
                t.state
            ));
        } else if t.output != input {
            r.wrong
                .push(format!("task {id}: output {} for input {input}", t.output));
        } else if successes == 1 {
            r.finished += 1;
        }
        r.tasks.insert(id, t);
    }
    // Nothing left leased anywhere.
    if let Ok(queues) = client.queues().await {
        for q in queues.iter().filter(|q| q.running > 0) {
            r.stuck
                .push(format!("queue {} has {} running", q.name, q.running));
        }
    }
    if let Ok(workers) = client.workers().await {
        for w in workers.iter().filter(|w| w.running > 0) {
            r.stuck
                .push(format!("worker {} holds {} running", w.name, w.running));
        }
    }
    r
}

impl Report {
    /// The one-line summary, printed and appended to the summary file
    /// (`$BRIGADE_CHAOS_SUMMARY`, default `chaos-summary.txt` in the target's tmp dir).
    pub fn print(&self, scenario: &str, engine: &str, recoveries: &[f64], extra: &str) {
        let recovery = recoveries.iter().copied().fold(0.0_f64, f64::max);
        let line = format!(
            "scenario={scenario} engine={engine} submitted={} finished={} lost={} twice={} recovery_s={recovery:.2} redone={}{}{}",
            self.submitted,
            self.finished,
            self.lost.len(),
            self.twice.len(),
            self.redone(),
            if recoveries.len() > 1 {
                format!(" recoveries={}", recoveries.len())
            } else {
                String::new()
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!(" {extra}")
            },
        );
        println!("{line}");
        let path = std::env::var("BRIGADE_CHAOS_SUMMARY")
            .unwrap_or_else(|_| format!("{}/chaos-summary.txt", env!("CARGO_TARGET_TMPDIR")));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Fail the test on any violated invariant, naming a few examples.
    pub fn assert_clean(&self, scenario: &str) {
        let show = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        assert!(
            self.lost.is_empty(),
            "{scenario}: lost {}: {}",
            self.lost.len(),
            show(&self.lost)
        );
        assert!(
            self.twice.is_empty(),
            "{scenario}: done twice {}: {}",
            self.twice.len(),
            show(&self.twice)
        );
        assert!(
            self.stuck.is_empty(),
            "{scenario}: stuck {}: {}",
            self.stuck.len(),
            show(&self.stuck)
        );
        assert!(
            self.wrong.is_empty(),
            "{scenario}: wrong output {}: {}",
            self.wrong.len(),
            show(&self.wrong)
        );
        assert!(
            self.over_budget.is_empty(),
            "{scenario}: over budget {}: {}",
            self.over_budget.len(),
            show(&self.over_budget)
        );
        assert_eq!(
            self.finished, self.submitted,
            "{scenario}: every task finished once"
        );
    }

    /// Tasks that needed more than one attempt (a lease lost, a hand-back).
    pub fn redone(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.history.as_ref().is_some_and(|h| h.len() > 1))
            .count()
    }

    /// Tasks with an attempt by `worker_id` that ended `outcome`, then
    /// succeeded on another worker.
    pub fn redone_after(&self, worker_id: &str, outcome: &str) -> usize {
        self.tasks
            .values()
            .filter(|t| {
                let h = t.history.as_deref().unwrap_or_default();
                let Some(at) = h.iter().position(|e| {
                    e.worker_id.as_deref() == Some(worker_id) && e.outcome == outcome
                }) else {
                    return false;
                };
                h[at + 1..]
                    .iter()
                    .any(|e| e.outcome == "succeeded" && e.worker_id.as_deref() != Some(worker_id))
            })
            .count()
    }
}
