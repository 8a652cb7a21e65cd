//! Jobs as graphs: which keys a task waits for, whether the waits form a
//! cycle, and what a waiting task does once what it waits for is final.
//!
//! A task's `key` names a group: every task of the job with that key, and
//! every task those spawned, down the tree. A task's *groups* are its own
//! key plus the groups of the task that spawned it. A task with `after`
//! waits for every group it names to be *closed* — every member final —
//! and then runs or is cancelled as its `run_if` says. A group is *bad*
//! once a member ended failed or cancelled.
//!
//! The waits are edges between groups: a waiting task that belongs to group
//! `m` and waits for group `a` keeps `m` open until `a` closes (`m → a`).
//! A cycle of such edges would wait forever, so submits and spawns that
//! would make one are refused.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use brigade_api::{ErrorKind, FieldError, RunIf, TaskError};

use crate::NewTask;

/// The most tasks one job may hold, spawned ones included.
pub const MAX_TASKS_PER_JOB: u64 = 1_000_000;

/// What a waiting task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep waiting: some group it waits for is open and the condition may
    /// still hold.
    Wait,
    /// Run it: it becomes `queued` (or `scheduled`, before its `run_at`).
    Run,
    /// Its condition can no longer hold: `cancelled` with error kind
    /// `dependency`.
    Skip,
}

/// What a waiting task with `run_if` does, given how many of the groups it
/// waits for are still open and whether any is bad.
///
/// `succeeded` is skipped as soon as a group is bad (no need to wait for
/// the rest); `failed` runs only once all are closed and one is bad, and is
/// skipped when all closed clean; `finished` runs once all are closed.
pub fn verdict(run_if: RunIf, open_groups: u64, any_bad: bool) -> Verdict {
    match (run_if, open_groups, any_bad) {
        (RunIf::Succeeded, _, true) => Verdict::Skip,
        (_, n, _) if n > 0 => Verdict::Wait,
        (RunIf::Succeeded | RunIf::Finished, _, _) => Verdict::Run,
        (RunIf::Failed, _, true) => Verdict::Run,
        (RunIf::Failed, _, false) => Verdict::Skip,
    }
}

/// The error of a task cancelled because its condition can no longer hold.
pub fn dependency_error(run_if: RunIf) -> TaskError {
    let why = match run_if {
        RunIf::Succeeded => "a task it waited for failed or was cancelled",
        RunIf::Failed => "every task it waited for succeeded (run_if: failed)",
        RunIf::Finished => "the tasks it waited for cannot finish",
    };
    TaskError::new(ErrorKind::Dependency, format!("not run: {why}"))
}

/// The groups of a task: its own key, then the groups of its spawner.
pub fn groups_of(key: Option<&str>, spawner_groups: &[String]) -> Vec<String> {
    let mut groups: Vec<String> = Vec::with_capacity(spawner_groups.len() + 1);
    if let Some(k) = key {
        groups.push(k.to_owned());
    }
    for g in spawner_groups {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    groups
}

/// A cycle among `edges` (`from → to`: group `from` waits for `to`), as the
/// keys along it with the first repeated at the end, or `None`.
pub fn find_cycle<'a>(edges: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges {
        next.entry(from).or_default().insert(to);
    }
    // Iterative depth-first search: 1 = on the path, 2 = done.
    let mut color: HashMap<&str, u8> = HashMap::new();
    let starts: Vec<&str> = next.keys().copied().collect();
    for start in starts {
        if color.contains_key(start) {
            continue;
        }
        let mut path: Vec<&str> = vec![start];
        let mut iters: Vec<std::collections::btree_set::Iter<'_, &str>> = Vec::new();
        color.insert(start, 1);
        iters.push(next.get(start).map(|s| s.iter()).unwrap_or_default());
        while let Some(it) = iters.last_mut() {
            match it.next() {
                Some(&to) => match color.get(to) {
                    Some(1) => {
                        let from = path.iter().position(|k| *k == to).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[from..].iter().map(|k| (*k).to_owned()).collect();
                        cycle.push(to.to_owned());
                        return Some(cycle);
                    }
                    Some(_) => {}
                    None => {
                        color.insert(to, 1);
                        path.push(to);
                        iters.push(next.get(to).map(|s| s.iter()).unwrap_or_default());
                    }
                },
                None => {
                    iters.pop();
                    if let Some(done) = path.pop() {
                        color.insert(done, 2);
                    }
                }
            }
        }
    }
    None
}

/// The graph errors of a submitted job's tasks (already valid one by one):
/// `after` naming a key no task has, a task waiting for its own key, and
/// cycles — each naming the task (`tasks[i].after`).
pub fn check_job(tasks: &[NewTask]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let keys: HashSet<&str> = tasks.iter().filter_map(|t| t.key.as_deref()).collect();
    let mut edges: Vec<(&str, &str)> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        for (j, a) in t.after.iter().enumerate() {
            if !keys.contains(a.as_str()) {
                errors.push(FieldError::new(
                    format!("tasks[{i}].after[{j}]"),
                    format!("no task of the job has key {a:?}"),
                ));
            } else if t.key.as_deref() == Some(a.as_str()) {
                errors.push(FieldError::new(
                    format!("tasks[{i}].after[{j}]"),
                    format!("a task cannot wait for its own key {a:?}"),
                ));
            } else if let Some(k) = t.key.as_deref() {
                edges.push((k, a.as_str()));
            }
        }
        if errors.len() > 100 {
            return errors;
        }
    }
    if errors.is_empty()
        && let Some(cycle) = find_cycle(edges.iter().copied())
    {
        // Name the first task that makes the cycle's first edge.
        let (from, to) = (cycle[0].as_str(), cycle[1].as_str());
        let at = tasks
            .iter()
            .position(|t| t.key.as_deref() == Some(from) && t.after.iter().any(|a| a == to))
            .unwrap_or(0);
        errors.push(FieldError::new(
            format!("tasks[{at}].after"),
            format!(
                "the tasks wait for each other in a cycle: {}",
                cycle.join(" → ")
            ),
        ));
    }
    errors
}

/// What the store knows of a job when a result spawns tasks into it.
#[derive(Debug, Clone, Default)]
pub struct JobGraph {
    /// Keys the job's tasks already have.
    pub keys: HashSet<String>,
    /// The waits among its groups (`from → to`).
    pub edges: Vec<(String, String)>,
    /// Tasks it holds.
    pub tasks: u64,
}

/// Whether `spawned` may join a job shaped `job`, spawned by a task whose
/// groups are `spawner_groups`: their keys must be new to the job (a closed
/// group must not reopen), `after` must name keys of the job or of the
/// spawned tasks, no wait may close a cycle (a spawned task waiting for a
/// group it belongs to would wait for itself), and the job stays within
/// [`MAX_TASKS_PER_JOB`]. The reason, for people, when not.
pub fn check_spawn(
    job: &JobGraph,
    spawner_groups: &[String],
    spawned: &[NewTask],
) -> Result<(), String> {
    if job.tasks + spawned.len() as u64 > MAX_TASKS_PER_JOB {
        return Err(format!(
            "the job would hold more than {MAX_TASKS_PER_JOB} tasks"
        ));
    }
    let new_keys: HashSet<&str> = spawned.iter().filter_map(|t| t.key.as_deref()).collect();
    for k in &new_keys {
        if job.keys.contains(*k) {
            return Err(format!(
                "spawn[].key {k:?} is taken in the job; spawned tasks join their spawner's groups without a key of their own"
            ));
        }
    }
    let mut edges: Vec<(&str, &str)> = job
        .edges
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let groups: Vec<Vec<String>> = spawned
        .iter()
        .map(|t| groups_of(t.key.as_deref(), spawner_groups))
        .collect();
    for (i, t) in spawned.iter().enumerate() {
        for a in &t.after {
            if !job.keys.contains(a) && !new_keys.contains(a.as_str()) {
                return Err(format!(
                    "spawn[{i}].after names {a:?}, which no task of the job has"
                ));
            }
            for m in &groups[i] {
                edges.push((m.as_str(), a.as_str()));
            }
        }
    }
    match find_cycle(edges) {
        Some(cycle) => Err(format!(
            "the spawned tasks would wait for each other in a cycle: {}",
            cycle.join(" → ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use brigade_api::{JobSubmit, TaskSpec};

    use super::*;
    use crate::validate::{Limits, validate_job};

    fn spec(kind: &str) -> TaskSpec {
        TaskSpec::new(kind, serde_json::Value::Null)
    }

    fn fields(tasks: Vec<TaskSpec>) -> Vec<String> {
        validate_job(JobSubmit::new(tasks), &Limits::default())
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn verdicts_follow_run_if() {
        use Verdict::*;
        assert_eq!(verdict(RunIf::Succeeded, 2, false), Wait);
        assert_eq!(verdict(RunIf::Succeeded, 2, true), Skip);
        assert_eq!(verdict(RunIf::Succeeded, 0, false), Run);
        assert_eq!(verdict(RunIf::Finished, 1, true), Wait);
        assert_eq!(verdict(RunIf::Finished, 0, true), Run);
        assert_eq!(verdict(RunIf::Finished, 0, false), Run);
        assert_eq!(verdict(RunIf::Failed, 1, true), Wait);
        assert_eq!(verdict(RunIf::Failed, 0, true), Run);
        assert_eq!(verdict(RunIf::Failed, 0, false), Skip);
    }

    #[test]
    fn a_diamond_is_a_valid_graph() {
        let tasks = vec![
            spec("a").keyed("a"),
            spec("b").keyed("b").after(["a"]),
            spec("c").keyed("c").after(["a"]),
            spec("d").after(["b", "c", "b"]),
        ];
        let job = validate_job(JobSubmit::new(tasks), &Limits::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(job.tasks[3].after, vec!["b", "c"], "repeats dropped");
        assert_eq!(job.tasks[3].run_if, Some(RunIf::Succeeded));
        assert_eq!(job.tasks[0].run_if, None);
    }

    #[test]
    fn unknown_keys_self_waits_and_bad_syntax_name_the_task() {
        assert_eq!(
            fields(vec![spec("a").keyed("a"), spec("b").after(["nope"])]),
            vec!["tasks[1].after[0]"]
        );
        assert_eq!(
            fields(vec![spec("a").keyed("a").after(["a"])]),
            vec!["tasks[0].after[0]"]
        );
        assert_eq!(
            fields(vec![spec("a").keyed("Bad Key"), spec("b").after(["x y"])]),
            vec!["tasks[0].key", "tasks[1].after[0]"]
        );
        assert_eq!(
            fields(vec![spec("a").run_if(RunIf::Failed)]),
            vec!["tasks[0].run_if"]
        );
    }

    #[test]
    fn cycles_are_refused_naming_a_task_on_them() {
        let errs = validate_job(
            JobSubmit::new(vec![
                spec("x").keyed("x"),
                spec("a").keyed("a").after(["c", "x"]),
                spec("b").keyed("b").after(["a"]),
                spec("c").keyed("c").after(["b"]),
            ]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "tasks[1].after");
        assert!(
            errs[0].message.contains("a → c → b → a"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn find_cycle_sees_long_chains_as_acyclic() {
        let names: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        let edges: Vec<(&str, &str)> = names
            .windows(2)
            .map(|w| (w[1].as_str(), w[0].as_str()))
            .collect();
        assert_eq!(find_cycle(edges.iter().copied()), None);
        let mut closed = edges.clone();
        closed.push(("k0", "k4999"));
        assert!(find_cycle(closed).is_some());
    }

    fn new_task(key: Option<&str>, after: &[&str]) -> NewTask {
        let mut t = validate_job(JobSubmit::new(vec![spec("x")]), &Limits::default())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .tasks
            .remove(0);
        t.key = key.map(str::to_owned);
        t.after = after.iter().map(|s| (*s).to_owned()).collect();
        t
    }

    #[test]
    fn spawns_that_would_wait_for_their_own_group_are_refused() {
        let job = JobGraph {
            keys: ["split", "reduce"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            edges: vec![("reduce".into(), "split".into())],
            tasks: 2,
        };
        let split = vec!["split".to_owned()];
        // Plain maps join split's group: fine.
        assert!(check_spawn(&job, &split, &[new_task(None, &[]), new_task(None, &[])]).is_ok());
        // A map waiting for reduce, which waits for split (the map's own group).
        assert!(check_spawn(&job, &split, &[new_task(None, &["reduce"])]).is_err());
        // Waiting for its own group.
        assert!(check_spawn(&job, &split, &[new_task(None, &["split"])]).is_err());
        // Spawned chain among new keys: fine; a key of the job: refused.
        assert!(
            check_spawn(
                &job,
                &[],
                &[
                    new_task(Some("m1"), &[]),
                    new_task(Some("m2"), &["m1", "split"])
                ]
            )
            .is_ok()
        );
        assert!(check_spawn(&job, &[], &[new_task(Some("split"), &[])]).is_err());
        assert!(check_spawn(&job, &[], &[new_task(None, &["nope"])]).is_err());
        let full = JobGraph {
            tasks: MAX_TASKS_PER_JOB,
            ..JobGraph::default()
        };
        assert!(check_spawn(&full, &[], &[new_task(None, &[])]).is_err());
    }

    #[test]
    fn groups_are_the_own_key_then_the_spawners() {
        assert_eq!(
            groups_of(Some("map"), &["split".into(), "map".into()]),
            vec!["map", "split"]
        );
        assert!(groups_of(None, &[]).is_empty());
    }
}
