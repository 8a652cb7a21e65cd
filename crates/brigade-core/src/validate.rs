//! Turning a submitted job into a valid one, or naming every field at fault.

use std::collections::BTreeMap;

use brigade_api::{Backoff, FieldError, JobSubmit, RunIf, TaskSpec};

use crate::clock::to_ms;

/// Bounds on what a submission may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tasks per job.
    pub max_tasks_per_job: usize,
    /// Bytes of one task's input as JSON.
    pub max_input_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tasks_per_job: 10_000,
            max_input_bytes: 1 << 20,
        }
    }
}

/// Default attempt budget.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default run time limit of one attempt.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Longest run time limit accepted (one day).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Largest attempt budget accepted.
pub const MAX_ATTEMPTS: u32 = 1000;
/// The queue when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// A job that passed validation, every default filled in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewJob {
    /// Name.
    pub name: Option<String>,
    /// Default queue.
    pub queue: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Tasks in submission order.
    pub tasks: Vec<NewTask>,
    /// How long to keep the job once finished; `None`: the server's retention.
    pub keep_ms: Option<u64>,
    /// At most one job per key (see [`crate::unique`]).
    pub unique: Option<crate::unique::UniqueKey>,
    /// Where to POST the job when it finishes (its shape checked; its
    /// host is checked against the server's list by [`crate::callback::check_allowed`]).
    pub callback: Option<brigade_api::Callback>,
    /// The W3C `traceparent` of the job's trace (its submit's span), stored on
    /// each task and handed to workers with the lease; `None` without tracing.
    /// Set by the server, not by the submit body.
    pub traceparent: Option<String>,
}

/// A task that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Handler name.
    pub kind: String,
    /// Input as JSON text.
    pub input: String,
    /// Name.
    pub name: Option<String>,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Attempt time limit.
    pub timeout_ms: u64,
    /// Retry backoff.
    pub backoff: Backoff,
    /// Labels a worker must carry.
    pub requires: BTreeMap<String, String>,
    /// Not before (ms since epoch).
    pub run_at: Option<i64>,
    /// Its key inside the job.
    pub key: Option<String>,
    /// Keys it waits for, without repeats, in the order given.
    pub after: Vec<String>,
    /// When it runs once they are final (`None` without `after`).
    pub run_if: Option<RunIf>,
    /// Keys whose limits it counts against, without repeats.
    pub limits: Vec<String>,
    /// Its fairness key.
    pub fair_key: Option<String>,
}

/// Whether `s` is a valid task kind: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn is_valid_kind(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The error kind called `s` (`handler`, `lost`, `poison`, ...), `None` for
/// a name brigade does not use.
pub fn error_kind_named(s: &str) -> Option<brigade_api::ErrorKind> {
    let kind: brigade_api::ErrorKind =
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()?;
    // Unknown names deserialize as `other`: only the real name round-trips.
    (serde_json::to_value(kind).ok()? == serde_json::Value::String(s.to_owned())).then_some(kind)
}

/// Whether `s` is a valid queue name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn is_valid_queue(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn check_labels(field: &str, labels: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if labels.len() > 64 {
        errors.push(FieldError::new(field, "at most 64 labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 64 {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                "label keys are 1 to 64 bytes",
            ));
        }
        if v.len() > 256 {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                "label values are at most 256 bytes",
            ));
        }
    }
}

/// Most keys one task may wait for.
pub const MAX_AFTER: usize = 1000;

/// Validate one task at `path` (`tasks[3]`), filling in defaults; errors go
/// to `errors`. Without `default_queue` (a spawned task) a task that names
/// no queue gets an empty one: the store puts it in its job's queue.
pub(crate) fn task(
    path: &str,
    t: TaskSpec,
    default_queue: Option<&str>,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
) -> NewTask {
    let at = |f: &str| format!("{path}.{f}");
    if !is_valid_kind(&t.kind) {
        errors.push(FieldError::new(
            at("kind"),
            "must match [a-z0-9][a-z0-9._-]{0,63}",
        ));
    }
    let task_queue = match (t.queue, default_queue) {
        (Some(q), _) => q,
        (None, Some(d)) => d.to_owned(),
        (None, None) => String::new(),
    };
    let inherits = task_queue.is_empty() && default_queue.is_none();
    if !inherits && !is_valid_queue(&task_queue) {
        errors.push(FieldError::new(
            at("queue"),
            "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        ));
    }
    if t.name.as_ref().is_some_and(|n| n.len() > 256) {
        errors.push(FieldError::new(at("name"), "at most 256 bytes"));
    }
    let max_attempts = t.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        errors.push(FieldError::new(
            at("max_attempts"),
            format!("must be 1 to {MAX_ATTEMPTS}"),
        ));
    }
    let timeout_ms = t.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        errors.push(FieldError::new(
            at("timeout_ms"),
            format!("must be 1 to {MAX_TIMEOUT_MS}"),
        ));
    }
    let backoff = t.backoff.unwrap_or_default();
    if !(backoff.factor.is_finite() && (1.0..=100.0).contains(&backoff.factor)) {
        errors.push(FieldError::new(
            at("backoff.factor"),
            "must be 1.0 to 100.0",
        ));
    }
    if backoff.max_ms > MAX_TIMEOUT_MS {
        errors.push(FieldError::new(
            at("backoff.max_ms"),
            format!("at most {MAX_TIMEOUT_MS}"),
        ));
    }
    if backoff.initial_ms > backoff.max_ms {
        errors.push(FieldError::new(
            at("backoff.initial_ms"),
            "must not exceed backoff.max_ms",
        ));
    }
    check_labels(&at("requires"), &t.requires, errors);
    let input = t.input.to_string();
    if input.len() > limits.max_input_bytes {
        errors.push(FieldError::new(
            at("input"),
            format!(
                "{} bytes is more than the {} allowed",
                input.len(),
                limits.max_input_bytes
            ),
        ));
    }
    if let Some(k) = &t.key
        && !is_valid_kind(k)
    {
        errors.push(FieldError::new(
            at("key"),
            "must match [a-z0-9][a-z0-9._-]{0,63}",
        ));
    }
    if t.after.len() > MAX_AFTER {
        errors.push(FieldError::new(
            at("after"),
            format!("at most {MAX_AFTER} keys"),
        ));
    }
    let mut after: Vec<String> = Vec::with_capacity(t.after.len());
    for (j, k) in t.after.into_iter().enumerate() {
        if !is_valid_kind(&k) {
            errors.push(FieldError::new(
                format!("{path}.after[{j}]"),
                "must match [a-z0-9][a-z0-9._-]{0,63}",
            ));
        } else if !after.contains(&k) {
            after.push(k);
        }
    }
    if t.run_if.is_some() && after.is_empty() {
        errors.push(FieldError::new(
            at("run_if"),
            "only a task with `after` has a condition to run",
        ));
    }
    let task_limits = crate::limits::check_task_keys(&at("limits"), t.limits, errors);
    if let Some(f) = &t.fair_key
        && !crate::limits::is_valid_key(f)
    {
        errors.push(FieldError::new(
            at("fair_key"),
            "must be 1 to 128 bytes of [A-Za-z0-9:._/@-]",
        ));
    }
    NewTask {
        kind: t.kind,
        input,
        name: t.name,
        queue: task_queue,
        priority: t.priority.unwrap_or(0),
        max_attempts,
        timeout_ms,
        backoff,
        requires: t.requires,
        run_at: t.run_at.map(to_ms),
        key: t.key,
        run_if: if after.is_empty() {
            None
        } else {
            Some(t.run_if.unwrap_or_default())
        },
        after,
        limits: task_limits,
        fair_key: t.fair_key,
    }
}

/// Most tasks one result may spawn.
pub const MAX_SPAWN: usize = 10_000;

/// Validate the `spawn` of a result at `path` (`results[2]`): the shape of
/// each task, as a submit's. What depends on the job (keys it has, cycles
/// through its graph, its size) is checked by the store with
/// [`crate::graph::check_spawn`] when the result is applied.
pub fn validate_spawn(
    path: &str,
    specs: Vec<TaskSpec>,
    limits: &Limits,
) -> Result<Vec<NewTask>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if specs.len() > MAX_SPAWN {
        errors.push(FieldError::new(
            format!("{path}.spawn"),
            format!("at most {MAX_SPAWN} tasks per result (got {})", specs.len()),
        ));
        return Err(errors);
    }
    let mut tasks = Vec::with_capacity(specs.len());
    for (i, t) in specs.into_iter().enumerate() {
        tasks.push(task(
            &format!("{path}.spawn[{i}]"),
            t,
            None,
            limits,
            &mut errors,
        ));
        if errors.len() > 100 {
            break;
        }
    }
    if errors.is_empty() {
        Ok(tasks)
    } else {
        Err(errors)
    }
}

/// Validate a submission, filling in defaults, or list every field at fault.
pub fn validate_job(job: JobSubmit, limits: &Limits) -> Result<NewJob, Vec<FieldError>> {
    let mut errors = Vec::new();
    let queue = job.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    if !is_valid_queue(&queue) {
        errors.push(FieldError::new(
            "queue",
            "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        ));
    }
    if job.name.as_ref().is_some_and(|n| n.len() > 256) {
        errors.push(FieldError::new("name", "at most 256 bytes"));
    }
    check_labels("labels", &job.labels, &mut errors);
    let callback = job
        .callback
        .and_then(|cb| crate::callback::validate(cb, &mut errors));
    if job
        .keep_ms
        .is_some_and(|k| k > crate::retention::MAX_KEEP_MS)
    {
        errors.push(FieldError::new(
            "keep_ms",
            format!("at most {} (100 years)", crate::retention::MAX_KEEP_MS),
        ));
    }
    let unique = job
        .unique
        .and_then(|u| crate::unique::validate(u, &mut errors));
    if job.tasks.is_empty() {
        errors.push(FieldError::new("tasks", "a job needs at least one task"));
    } else if job.tasks.len() > limits.max_tasks_per_job {
        errors.push(FieldError::new(
            "tasks",
            format!(
                "at most {} tasks per job (got {})",
                limits.max_tasks_per_job,
                job.tasks.len()
            ),
        ));
        return Err(errors);
    }

    let mut tasks = Vec::with_capacity(job.tasks.len());
    for (i, t) in job.tasks.into_iter().enumerate() {
        tasks.push(task(
            &format!("tasks[{i}]"),
            t,
            Some(&queue),
            limits,
            &mut errors,
        ));
        if errors.len() > 100 {
            break;
        }
    }
    if errors.is_empty() {
        errors.extend(crate::graph::check_job(&tasks));
    }
    if errors.is_empty() {
        Ok(NewJob {
            name: job.name,
            queue,
            labels: job.labels,
            tasks,
            keep_ms: job.keep_ms,
            unique,
            callback,
            traceparent: None,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use brigade_api::TaskSpec;

    use super::*;

    fn job(tasks: Vec<TaskSpec>) -> JobSubmit {
        JobSubmit::new(tasks)
    }

    #[test]
    fn fills_in_defaults() {
        let ok = validate_job(
            job(vec![TaskSpec::new("noop", serde_json::Value::Null)]),
            &Limits::default(),
        );
        let ok = ok.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.queue, "default");
        let t = &ok.tasks[0];
        assert_eq!(
            (t.max_attempts, t.timeout_ms, t.priority, t.input.as_str()),
            (3, 60_000, 0, "null")
        );
        assert_eq!(t.queue, "default");
    }

    #[test]
    fn names_every_bad_field() {
        let mut bad = TaskSpec::new("Bad Kind", serde_json::Value::Null);
        bad.max_attempts = Some(0);
        let good = TaskSpec::new("echo", serde_json::json!({"x": 1}));
        let mut bad2 = TaskSpec::new("ok", serde_json::Value::Null);
        bad2.timeout_ms = Some(0);
        bad2.queue = Some("no spaces".into());
        let errs = validate_job(job(vec![bad, good, bad2]), &Limits::default())
            .err()
            .unwrap_or_default();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "tasks[0].kind",
                "tasks[0].max_attempts",
                "tasks[2].queue",
                "tasks[2].timeout_ms"
            ]
        );
    }

    #[test]
    fn rejects_empty_and_oversized_jobs() {
        let errs = validate_job(job(vec![]), &Limits::default())
            .err()
            .unwrap_or_default();
        assert_eq!(errs[0].field, "tasks");
        let limits = Limits {
            max_tasks_per_job: 2,
            max_input_bytes: 8,
        };
        let many = vec![TaskSpec::new("noop", serde_json::Value::Null); 3];
        assert_eq!(
            validate_job(job(many), &limits).err().unwrap_or_default()[0].field,
            "tasks"
        );
        let big = TaskSpec::new("echo", serde_json::json!("0123456789"));
        assert_eq!(
            validate_job(job(vec![big]), &limits)
                .err()
                .unwrap_or_default()[0]
                .field,
            "tasks[0].input"
        );
    }

    #[test]
    fn error_kinds_are_known_by_name() {
        assert_eq!(
            error_kind_named("poison"),
            Some(brigade_api::ErrorKind::Poison)
        );
        assert_eq!(
            error_kind_named("other"),
            Some(brigade_api::ErrorKind::Other)
        );
        assert_eq!(error_kind_named("nope"), None);
    }

    #[test]
    fn kinds_follow_the_contract_pattern() {
        for ok in ["noop", "a", "0x", "my.kind_v2-x"] {
            assert!(is_valid_kind(ok), "{ok}");
        }
        for bad in ["", "Noop", "-x", ".x", "a b", &"x".repeat(65)] {
            assert!(!is_valid_kind(bad), "{bad}");
        }
    }
}
