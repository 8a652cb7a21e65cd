//! Building graph jobs: chains, groups and chords (Celery's canvas) as one
//! [`JobSubmit`] whose tasks carry `key` and `after`.
//!
//! ```
//! use brigade_client::workflow::Flow;
//! use brigade_api::TaskSpec;
//! use serde_json::json;
//!
//! // Ten maps in parallel, then one reduce that sees all their outputs.
//! let maps = (0..10).map(|i| TaskSpec::new("echo", json!(i))).collect();
//! let job = Flow::chord(maps, TaskSpec::new("sum", json!(null))).into_job();
//! assert_eq!(job.tasks.len(), 11);
//! assert_eq!(job.tasks[10].after, vec!["s0".to_owned()]);
//! ```

use brigade_api::{JobSubmit, TaskSpec};

/// A piece of a workflow: a task, tasks in parallel, or pieces in sequence.
#[derive(Debug, Clone)]
pub enum Flow {
    /// One task.
    Task(Box<TaskSpec>),
    /// Pieces that run side by side.
    Group(Vec<Flow>),
    /// Pieces that run one after the other: each waits for the one before.
    Chain(Vec<Flow>),
}

impl Flow {
    /// One task.
    pub fn task(spec: TaskSpec) -> Self {
        Flow::Task(Box::new(spec))
    }

    /// Tasks side by side.
    pub fn group(tasks: Vec<TaskSpec>) -> Self {
        Flow::Group(tasks.into_iter().map(Flow::task).collect())
    }

    /// Tasks one after the other.
    pub fn chain(tasks: Vec<TaskSpec>) -> Self {
        Flow::Chain(tasks.into_iter().map(Flow::task).collect())
    }

    /// A group, then one task that waits for all of it (and sees every
    /// output in its `parents`).
    pub fn chord(tasks: Vec<TaskSpec>, then: TaskSpec) -> Self {
        Flow::Chain(vec![Flow::group(tasks), Flow::task(then)])
    }

    /// This piece, then `next`.
    pub fn then(self, next: Flow) -> Self {
        match self {
            Flow::Chain(mut v) => {
                v.push(next);
                Flow::Chain(v)
            }
            other => Flow::Chain(vec![other, next]),
        }
    }

    /// The job of this workflow. Each step of a chain gets a key of its own
    /// (`s0`, `s1`, …: the tasks of a group share their step's key) unless
    /// its tasks are keyed already; the tasks of a step wait for the keys
    /// of the step before (adding to an `after` they have).
    pub fn into_job(self) -> JobSubmit {
        let mut b = Builder::default();
        b.add(self, &[]);
        JobSubmit::new(b.tasks)
    }
}

#[derive(Default)]
struct Builder {
    tasks: Vec<TaskSpec>,
    steps: usize,
}

impl Builder {
    fn fresh_key(&mut self) -> String {
        let k = format!("s{}", self.steps);
        self.steps += 1;
        k
    }

    /// Add `flow` waiting for `after`; the keys that name its end.
    fn add(&mut self, flow: Flow, after: &[String]) -> Vec<String> {
        match flow {
            Flow::Task(mut t) => {
                let key = match &t.key {
                    Some(k) => k.clone(),
                    None => {
                        let k = self.fresh_key();
                        t.key = Some(k.clone());
                        k
                    }
                };
                for a in after {
                    if !t.after.contains(a) {
                        t.after.push(a.clone());
                    }
                }
                self.tasks.push(*t);
                vec![key]
            }
            Flow::Group(parts) => {
                // Plain tasks of a group share one key: a waiter names one group.
                let shared = parts
                    .iter()
                    .all(|p| matches!(p, Flow::Task(t) if t.key.is_none()))
                    .then(|| self.fresh_key());
                let mut ends = Vec::new();
                for p in parts {
                    let p = match (p, &shared) {
                        (Flow::Task(mut t), Some(k)) => {
                            t.key = Some(k.clone());
                            Flow::Task(t)
                        }
                        (p, _) => p,
                    };
                    for k in self.add(p, after) {
                        if !ends.contains(&k) {
                            ends.push(k);
                        }
                    }
                }
                ends
            }
            Flow::Chain(parts) => {
                let mut prev: Vec<String> = after.to_vec();
                for p in parts {
                    prev = self.add(p, &prev);
                }
                prev
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(kind: &str) -> TaskSpec {
        TaskSpec::new(kind, json!(null))
    }

    #[test]
    fn a_chain_waits_link_by_link() {
        let job = Flow::chain(vec![t("a"), t("b"), t("c")]).into_job();
        let shape: Vec<(Option<&str>, Vec<&str>)> = job
            .tasks
            .iter()
            .map(|t| {
                (
                    t.key.as_deref(),
                    t.after.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (Some("s0"), vec![]),
                (Some("s1"), vec!["s0"]),
                (Some("s2"), vec!["s1"])
            ]
        );
    }

    #[test]
    fn a_chord_shares_one_key_and_a_diamond_nests() {
        let job = Flow::chord(vec![t("m"), t("m")], t("r")).into_job();
        assert_eq!(job.tasks[0].key.as_deref(), Some("s0"));
        assert_eq!(job.tasks[1].key.as_deref(), Some("s0"));
        assert_eq!(job.tasks[2].after, vec!["s0"]);

        let diamond = Flow::task(t("a"))
            .then(Flow::Group(vec![Flow::task(t("b")), Flow::task(t("c"))]))
            .then(Flow::task(t("d")))
            .into_job();
        assert_eq!(diamond.tasks[1].after, vec!["s0"]);
        assert_eq!(diamond.tasks[2].after, vec!["s0"]);
        assert_eq!(diamond.tasks[3].after, vec!["s1"]);
    }
}
