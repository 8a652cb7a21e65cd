//! `brigade status`, `tasks`, `workers`, `queues`, `cancel`.

use std::io::IsTerminal;
use std::process::ExitCode;

use brigade_api::{JobState, JobView, WorkerState};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, Color, Table};

use crate::cli::{Global, Output, client, explain, print_json};

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    if !std::io::stdout().is_terminal() {
        t.force_no_tty();
    }
    t
}

/// Colour a state name (only on a terminal).
fn state_cell(state: &str) -> Cell {
    let color = match state {
        "succeeded" | "active" => Some(Color::Green),
        "failed" | "lost" => Some(Color::Red),
        "running" | "draining" => Some(Color::Cyan),
        "cancelled" | "left" => Some(Color::DarkGrey),
        "scheduled" => Some(Color::Yellow),
        _ => None,
    };
    match color {
        Some(c) if std::io::stdout().is_terminal() => Cell::new(state).fg(c),
        _ => Cell::new(state),
    }
}

/// A bar of `width` cells filled by `ratio`.
pub fn bar(ratio: f64, width: usize) -> String {
    let filled = ((ratio.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// Exit code of a finished job: 0 only when it succeeded.
pub fn exit_code(job: &JobView) -> ExitCode {
    match job.state {
        JobState::Succeeded => ExitCode::SUCCESS,
        JobState::Queued | JobState::Running => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    }
}

/// Print a job's summary.
pub fn print_job(job: &JobView) {
    let p = &job.progress;
    println!("job       {}", job.id);
    if let Some(n) = &job.name {
        println!("name      {n}");
    }
    println!("state     {}", job.state.as_str());
    println!(
        "tasks     {} total: {} waiting, {} queued, {} scheduled, {} running, {} succeeded, {} failed, {} cancelled",
        p.total, p.waiting, p.queued, p.scheduled, p.running, p.succeeded, p.failed, p.cancelled
    );
    println!("created   {}", job.created_at);
    if let Some(ms) = job.duration_ms {
        println!(
            "duration  {:.3} s (first start to last finish)",
            ms as f64 / 1000.0
        );
    }
    if let Some(ms) = job.wall_ms {
        println!(
            "wall      {:.3} s (submitted to finished)",
            ms as f64 / 1000.0
        );
    }
}

/// `brigade status JOB`.
pub async fn status(job: &str, global: &Global) -> anyhow::Result<ExitCode> {
    let view = client(global)?.job(job).await.map_err(explain)?;
    match global.output {
        Output::Json => print_json(&view)?,
        Output::Text => print_job(&view),
    }
    Ok(exit_code(&view))
}

/// Filters of `brigade tasks` and `brigade retry` (those of `GET /v1/tasks`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TaskFilterArgs {
    /// Only tasks in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only tasks of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only tasks in this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only tasks whose error is of this kind (handler, lost, crash, poison, ...).
    #[arg(long)]
    pub error_kind: Option<String>,
    /// Only tasks created at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
}

impl TaskFilterArgs {
    /// Whether only `--state` (or nothing) is given: a job's own list will do.
    fn only_state(&self) -> bool {
        self.kind.is_none()
            && self.queue.is_none()
            && self.error_kind.is_none()
            && self.since.is_none()
    }

    /// The filters as the bulk endpoints take them.
    fn spec(&self, job: Option<&str>) -> anyhow::Result<brigade_api::TaskFilterSpec> {
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => Some(
                brigade_api::TaskState::parse(s)
                    .ok_or_else(|| anyhow::anyhow!("--state {s}: not a task state"))?,
            ),
        };
        let since = match self.since.as_deref() {
            None => None,
            Some(s) => Some(
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| anyhow::anyhow!("--since {s}: {e}"))?,
            ),
        };
        Ok(brigade_api::TaskFilterSpec {
            state,
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            error_kind: self.error_kind.clone(),
            job: job.map(str::to_owned),
            since,
        })
    }
}

/// `brigade tasks`: a job's tasks, or tasks across jobs matching the filters.
pub async fn tasks(
    job: Option<&str>,
    filter: &TaskFilterArgs,
    limit: u32,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let tasks = match job {
        Some(job) if filter.only_state() => c
            .job_tasks(job, filter.state.as_deref())
            .await
            .map_err(explain)?,
        _ => {
            let mut found = Vec::new();
            let mut query = brigade_client::TaskQuery {
                state: filter.state.clone(),
                kind: filter.kind.clone(),
                queue: filter.queue.clone(),
                error_kind: filter.error_kind.clone(),
                job: job.map(str::to_owned),
                since: filter.since.clone(),
                limit: Some(limit.clamp(1, 1000)),
                cursor: None,
            };
            while found.len() < limit as usize {
                let page = c.tasks(&query).await.map_err(explain)?;
                found.extend(page.items);
                match page.next_cursor {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            found.truncate(limit as usize);
            found
        }
    };
    if global.output == Output::Json {
        print_json(&tasks)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "task",
        "name",
        "kind",
        "state",
        "attempt",
        "worker",
        "ms",
        "output / error",
    ]);
    for task in &tasks {
        let ms = match (task.started_at, task.finished_at) {
            (Some(s), Some(f)) => ((f - s).whole_milliseconds()).to_string(),
            _ => String::new(),
        };
        let detail = match &task.error {
            Some(e) if task.state != brigade_api::TaskState::Succeeded => {
                format!("{:?}: {}", e.kind, e.message)
            }
            _ => {
                let s = task.output.to_string();
                if s.len() > 60 {
                    format!("{}…", &s[..s.floor_char_boundary(59)])
                } else {
                    s
                }
            }
        };
        t.add_row(vec![
            Cell::new(&task.id),
            Cell::new(task.name.as_deref().unwrap_or("")),
            Cell::new(&task.kind),
            state_cell(task.state.as_str()),
            Cell::new(format!("{}/{}", task.attempt, task.max_attempts))
                .set_alignment(CellAlignment::Right),
            Cell::new(task.worker_id.as_deref().map(short).unwrap_or("")),
            Cell::new(ms).set_alignment(CellAlignment::Right),
            Cell::new(detail),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// `brigade retry`: retry every failed or cancelled task matching the filters.
pub async fn retry(
    filter: &TaskFilterArgs,
    job: Option<&str>,
    all: bool,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    let spec = filter.spec(job)?;
    // No filter retries everything failed: only when asked for in so many words.
    anyhow::ensure!(
        all || spec != brigade_api::TaskFilterSpec::default(),
        "give a filter (--kind, --state, --queue, --error-kind, --since, --job) or --all"
    );
    let retried = client(global)?.retry_tasks(&spec).await.map_err(explain)?;
    if global.output == Output::Json {
        print_json(&brigade_api::RetriedReply { retried })?;
    } else {
        println!(
            "retried {retried} task{}",
            if retried == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `brigade tasks JOB --tree`.
pub async fn tree(job: &str, global: &Global) -> anyhow::Result<ExitCode> {
    let tasks = client(global)?
        .job_tasks(job, None)
        .await
        .map_err(explain)?;
    if global.output == Output::Json {
        print_json(&tasks)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_tree(&tasks));
    Ok(ExitCode::SUCCESS)
}

/// One line of the tree: key (or name), kind, state, id, and why it ended
/// when it did not succeed.
fn tree_line(t: &brigade_api::TaskView, how: &str) -> String {
    let label = t.key.as_deref().or(t.name.as_deref()).unwrap_or("-");
    let mut line = format!("{label} [{}] {} {}", t.kind, t.state.as_str(), short(&t.id));
    if let Some(p) = &t.progress
        && !t.state.is_finished()
    {
        match p.total {
            Some(total) => line.push_str(&format!(" {}/{total}", p.done)),
            None => line.push_str(&format!(" {}", p.done)),
        }
    }
    if let Some(e) = &t.error
        && t.state != brigade_api::TaskState::Succeeded
    {
        line.push_str(&format!(" ({:?}: {})", e.kind, e.message));
    }
    if !how.is_empty() {
        line.push_str(&format!(" <{how}>"));
    }
    line
}

/// The job's graph as text: roots (tasks that wait for nothing and were not
/// spawned) in submission order; under each task, what it spawned and what
/// waits for its key. A graph is not a tree, so a task reached a second
/// time is printed once more with `(*)` and not expanded again.
pub fn render_tree(tasks: &[brigade_api::TaskView]) -> String {
    use std::collections::{HashMap, HashSet};
    // Children of each task, in submission order: spawned ones, then waiters.
    let mut children: HashMap<&str, Vec<(usize, &'static str)>> = HashMap::new();
    let by_id: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut roots = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let mut has_parent = false;
        if let Some(p) = t.spawned_by.as_deref()
            && by_id.contains_key(p)
        {
            children.entry(p).or_default().push((i, "spawned"));
            has_parent = true;
        }
        for k in &t.after {
            for parent in tasks
                .iter()
                .filter(|p| p.key.as_deref() == Some(k.as_str()))
            {
                // A task spawned into a group is reached through its spawner.
                if parent.spawned_by.is_some() && parent.id != t.id {
                    let spawner_in_group = parent
                        .spawned_by
                        .as_deref()
                        .and_then(|s| by_id.get(s))
                        .is_some_and(|&si| tasks[si].key.as_deref() == Some(k.as_str()));
                    if spawner_in_group {
                        continue;
                    }
                }
                children
                    .entry(parent.id.as_str())
                    .or_default()
                    .push((i, "after"));
                has_parent = true;
            }
        }
        if !has_parent {
            roots.push(i);
        }
    }
    for v in children.values_mut() {
        // What a task spawned comes before what waits for it.
        v.sort_by_key(|(i, how)| (*how != "spawned", *i));
        v.dedup_by_key(|(i, _)| *i);
    }
    let mut d = Drawer {
        tasks,
        children,
        seen: HashSet::new(),
        out: String::new(),
    };
    for r in roots {
        d.walk(r, "", "", None);
    }
    // Whatever a cycle-free graph cannot reach from a root (it should not
    // happen) is still listed, so no task goes missing from the picture.
    for i in 0..tasks.len() {
        if !d.seen.contains(&i) {
            d.walk(i, "", "", None);
        }
    }
    d.out
}

/// The state of [`render_tree`]'s walk.
struct Drawer<'a> {
    tasks: &'a [brigade_api::TaskView],
    children: std::collections::HashMap<&'a str, Vec<(usize, &'static str)>>,
    seen: std::collections::HashSet<usize>,
    out: String,
}

impl Drawer<'_> {
    /// Draw task `i`, reached as `how`, after `prefix`; `last`: whether it
    /// is its parent's last child (`None` for a root).
    fn walk(&mut self, i: usize, how: &str, prefix: &str, last: Option<bool>) {
        let branch = match last {
            None => "",
            Some(true) => "└── ",
            Some(false) => "├── ",
        };
        let again = !self.seen.insert(i);
        let line = tree_line(&self.tasks[i], how);
        self.out.push_str(prefix);
        self.out.push_str(branch);
        self.out.push_str(&line);
        if again {
            self.out.push_str(" (*)\n");
            return;
        }
        self.out.push('\n');
        let below = match last {
            None => prefix.to_owned(),
            Some(true) => format!("{prefix}    "),
            Some(false) => format!("{prefix}│   "),
        };
        let kids = self
            .children
            .get(self.tasks[i].id.as_str())
            .cloned()
            .unwrap_or_default();
        for (n, (k, how)) in kids.iter().enumerate() {
            self.walk(*k, how, &below, Some(n + 1 == kids.len()));
        }
    }
}

fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// "3s ago" for a timestamp.
pub fn ago(t: time::OffsetDateTime) -> String {
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// `brigade workers`.
pub async fn workers(global: &Global) -> anyhow::Result<ExitCode> {
    let workers = client(global)?.workers().await.map_err(explain)?;
    if global.output == Output::Json {
        print_json(&workers)?;
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        eprintln!(
            "no workers yet; start one with `brigade worker --server {}`",
            global.server
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "name",
        "id",
        "state",
        "slots",
        "load",
        "cpu",
        "mem",
        "queues",
        "last seen",
    ]);
    for w in workers.iter().filter(|w| w.state != WorkerState::Left) {
        let ratio = if w.capacity == 0 {
            0.0
        } else {
            f64::from(w.running) / f64::from(w.capacity)
        };
        t.add_row(vec![
            Cell::new(&w.name),
            Cell::new(short(&w.id)),
            state_cell(w.state.as_str()),
            Cell::new(format!("{}/{}", w.running, w.capacity)).set_alignment(CellAlignment::Right),
            Cell::new(bar(ratio, 10)),
            Cell::new(format!("{:>3.0}%", w.load.cpu * 100.0)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:>3.0}%", w.load.memory * 100.0))
                .set_alignment(CellAlignment::Right),
            Cell::new(w.queues.join(",")),
            Cell::new(ago(w.last_seen_at)),
        ]);
    }
    println!("{t}");
    let left = workers
        .iter()
        .filter(|w| w.state == WorkerState::Left)
        .count();
    if left > 0 {
        eprintln!("({left} worker(s) that left are hidden; --output json shows all)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `brigade queues`.
pub async fn queues(global: &Global) -> anyhow::Result<ExitCode> {
    let queues = client(global)?.queues().await.map_err(explain)?;
    if global.output == Output::Json {
        print_json(&queues)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "queue",
        "queued",
        "scheduled",
        "running",
        "workers",
        "paused",
    ]);
    for q in &queues {
        t.add_row(vec![
            Cell::new(&q.name),
            Cell::new(q.queued).set_alignment(CellAlignment::Right),
            Cell::new(q.scheduled).set_alignment(CellAlignment::Right),
            Cell::new(q.running).set_alignment(CellAlignment::Right),
            Cell::new(q.workers).set_alignment(CellAlignment::Right),
            Cell::new(if q.paused { "paused" } else { "" }),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// `brigade cancel JOB`.
pub async fn cancel(job: &str, global: &Global) -> anyhow::Result<ExitCode> {
    let view = client(global)?.cancel_job(job).await.map_err(explain)?;
    match global.output {
        Output::Json => print_json(&view)?,
        Output::Text => print_job(&view),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        id: &str,
        key: &str,
        after: &[&str],
        spawned_by: Option<&str>,
    ) -> brigade_api::TaskView {
        let v = serde_json::json!({
            "id": id, "job_id": "j", "kind": "flow", "queue": "default", "state": "succeeded",
            "attempt": 1, "max_attempts": 3, "priority": 0, "timeout_ms": 1000,
            "input": null, "output": null, "created_at": "2026-12-02T00:00:00Z",
            "key": key, "after": after, "spawned_by": spawned_by,
        });
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_diamond_prints_the_join_once_and_marks_it_again() {
        let tasks = [
            task("t-a", "a", &[], None),
            task("t-b", "b", &["a"], None),
            task("t-c", "c", &["a"], None),
            task("t-d", "d", &["b", "c"], None),
        ];
        assert_eq!(
            render_tree(&tasks).lines().collect::<Vec<_>>(),
            [
                "a [flow] succeeded t-a",
                "├── b [flow] succeeded t-b <after>",
                "│   └── d [flow] succeeded t-d <after>",
                "└── c [flow] succeeded t-c <after>",
                "    └── d [flow] succeeded t-d <after> (*)",
            ]
        );
    }

    #[test]
    fn map_reduce_hangs_maps_and_reduce_under_split() {
        let tasks = [
            task("t-s", "split", &[], None),
            task("t-r", "reduce", &["split"], None),
            task("t-m1", "map", &[], Some("t-s")),
            task("t-m2", "map", &[], Some("t-s")),
        ];
        let text = render_tree(&tasks);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "split [flow] succeeded t-s",
                "├── map [flow] succeeded t-m1 <spawned>",
                "├── map [flow] succeeded t-m2 <spawned>",
                "└── reduce [flow] succeeded t-r <after>",
            ]
        );
    }
}
