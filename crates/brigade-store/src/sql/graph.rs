//! Jobs as graphs, the same on both engines: the groups a keyed task belongs
//! to, the tasks waiting for them, and releasing or cancelling a waiting
//! task in the transaction that made the last task it waited for final.
//!
//! Bookkeeping (see `brigade_core::graph` for the rules):
//! - `job_groups (job_id, group_key, open, bad)`: per group, members not
//!   final yet and members that ended failed or cancelled;
//! - `group_members`: who is in a group (a lease reads parents from it);
//! - `group_waiters`: who waits for a group;
//! - `tasks.pending_keys`: of a waiting task, the groups it waits for that
//!   are still open.
//!
//! A batch of tasks becoming final costs one `UPDATE job_groups` per group
//! it touches (not per task); a group that closes costs one `UPDATE` of its
//! waiters, one read of their groups' state and one `UPDATE` per verdict.
//! Tasks in no group (a flat job's) cost nothing: [`settle`] skips them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use brigade_api::EventKind;
use brigade_api::workers::{MAX_PARENT_IDS, MAX_PARENTS_BYTES, MAX_PARENTS_INLINE};
use brigade_api::{ParentResult, RunIf, TaskState};
use brigade_core::NewTask;
use brigade_core::graph::{self, JobGraph, Verdict};

use super::{Conn, Engine, Row, Value, args, lit};
use crate::model::Changes;
use crate::rows::{self, Columns};
use crate::{Result, StoreError, events};

/// Rows per multi-row insert.
const CHUNK: usize = 500;

/// A task that became final and belongs to groups.
#[derive(Debug, Clone)]
pub(crate) struct Final {
    pub(crate) job_id: String,
    pub(crate) groups: Vec<String>,
    /// It ended failed or cancelled.
    pub(crate) bad: bool,
}

impl Final {
    /// The final of a task whose `member_of` column is `member_of`; `None`
    /// for a task in no group.
    pub(crate) fn of(job_id: &str, member_of: Option<&str>, bad: bool) -> Result<Option<Self>> {
        let Some(text) = member_of else {
            return Ok(None);
        };
        let groups: Vec<String> = serde_json::from_str(text)?;
        if groups.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            job_id: job_id.to_owned(),
            groups,
            bad,
        }))
    }
}

/// A waiting task whose verdict may have changed.
#[derive(Debug, Clone)]
struct Waiter {
    id: String,
    job_id: String,
    pending: i64,
    run_if: RunIf,
    after: Vec<String>,
    member_of: Option<String>,
    run_at: Option<i64>,
}

/// Columns a [`Waiter`] is read from.
const WAITER_COLUMNS: &str = "id, job_id, pending_keys, run_if, after_keys, member_of, run_at";

impl Waiter {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(Self {
            id: row.text("id")?,
            job_id: row.text("job_id")?,
            pending: row.int("pending_keys")?,
            run_if: row
                .text_opt("run_if")?
                .as_deref()
                .and_then(RunIf::parse)
                .unwrap_or_default(),
            after: rows::json_or(row.text_opt("after_keys")?)?,
            member_of: row.text_opt("member_of")?,
            run_at: row.int_opt("run_at")?,
        })
    }
}

/// `(?, ?, …)` with `n` placeholders.
fn marks(n: usize) -> String {
    let mut s = String::with_capacity(n * 3 + 2);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// Insert `rows` of `width` values each with `head` (`INSERT … VALUES `)
/// and an optional `tail` (`ON CONFLICT …`), a chunk per statement.
async fn insert_rows<C: Conn>(
    c: &mut C,
    head: &str,
    tail: &str,
    width: usize,
    rows: Vec<Value>,
) -> Result<()> {
    let per_row = marks(width);
    for chunk in rows.chunks(CHUNK * width) {
        let n = chunk.len() / width;
        let mut sql = String::with_capacity(head.len() + n * (per_row.len() + 1) + tail.len());
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&per_row);
        }
        sql.push_str(tail);
        c.exec(&sql, chunk.to_vec()).await?;
    }
    Ok(())
}

/// The graph rows of newly inserted tasks of one job: `(task id, its groups,
/// its after)`. New groups are created; existing ones gain the members.
pub(crate) async fn add_to_groups<C: Conn>(
    c: &mut C,
    job_id: &str,
    tasks: &[(String, Vec<String>, Vec<String>)],
) -> Result<()> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    let mut members = Vec::new();
    let mut waiters = Vec::new();
    for (id, groups, after) in tasks {
        for g in groups {
            *counts.entry(g.as_str()).or_default() += 1;
            members.extend(args![job_id, g.as_str(), id.as_str()]);
        }
        for a in after {
            waiters.extend(args![job_id, a.as_str(), id.as_str()]);
        }
    }
    let mut groups = Vec::with_capacity(counts.len() * 3);
    for (g, n) in counts {
        groups.extend(args![job_id, g, n]);
    }
    insert_rows(
        c,
        "INSERT INTO job_groups (job_id, group_key, open) VALUES ",
        " ON CONFLICT (job_id, group_key) DO UPDATE SET open = job_groups.open + excluded.open",
        3,
        groups,
    )
    .await?;
    insert_rows(
        c,
        "INSERT INTO group_members (job_id, group_key, task_id) VALUES ",
        " ON CONFLICT DO NOTHING",
        3,
        members,
    )
    .await?;
    insert_rows(
        c,
        "INSERT INTO group_waiters (job_id, group_key, task_id) VALUES ",
        " ON CONFLICT DO NOTHING",
        3,
        waiters,
    )
    .await?;
    Ok(())
}

/// `(open, bad)` of the named groups of a job.
async fn group_states<C: Conn>(
    c: &mut C,
    job_id: &str,
    keys: &BTreeSet<&str>,
) -> Result<HashMap<String, (i64, i64)>> {
    let mut out = HashMap::with_capacity(keys.len());
    let keys: Vec<&str> = keys.iter().copied().collect();
    for chunk in keys.chunks(CHUNK) {
        let sql = format!(
            "SELECT group_key, open, bad FROM job_groups WHERE job_id = ? AND group_key IN {}",
            marks(chunk.len())
        );
        let mut a = args![job_id];
        a.extend(chunk.iter().map(|k| Value::from(*k)));
        for row in c.rows(&sql, a).await? {
            out.insert(row.text("group_key")?, (row.int("open")?, row.int("bad")?));
        }
    }
    Ok(out)
}

/// Decide waiting tasks whose groups changed: release those whose
/// condition holds, cancel (error kind `dependency`) those whose condition
/// can no longer hold; the finals of the cancelled ones.
async fn decide<C: Conn>(
    c: &mut C,
    waiters: Vec<Waiter>,
    now: i64,
    changes: &mut Changes,
    jobs: &mut BTreeSet<String>,
) -> Result<Vec<Final>> {
    let mut by_job: BTreeMap<String, Vec<Waiter>> = BTreeMap::new();
    for w in waiters {
        by_job.entry(w.job_id.clone()).or_default().push(w);
    }
    let mut finals = Vec::new();
    for (job_id, waiters) in by_job {
        let keys: BTreeSet<&str> = waiters
            .iter()
            .flat_map(|w| w.after.iter().map(String::as_str))
            .collect();
        let states = group_states(c, &job_id, &keys).await?;
        let mut run: Vec<&Waiter> = Vec::new();
        let mut skip: Vec<&Waiter> = Vec::new();
        for w in &waiters {
            let any_bad = w
                .after
                .iter()
                .any(|k| states.get(k).is_some_and(|(_, bad)| *bad > 0));
            match graph::verdict(w.run_if, w.pending.max(0) as u64, any_bad) {
                Verdict::Wait => {}
                Verdict::Run => run.push(w),
                Verdict::Skip => skip.push(w),
            }
        }
        for chunk in run.chunks(CHUNK) {
            let sql = format!(
                "UPDATE tasks SET \
                 state = CASE WHEN run_at IS NOT NULL AND run_at > ? THEN {scheduled} ELSE {queued} END, \
                 ready_at = CASE WHEN run_at IS NOT NULL AND run_at > ? THEN run_at ELSE ? END, \
                 run_at = CASE WHEN run_at IS NOT NULL AND run_at > ? THEN run_at ELSE NULL END, \
                 pending_keys = 0 \
                 WHERE state = {waiting} AND id IN {}",
                marks(chunk.len()),
                scheduled = lit(TaskState::Scheduled),
                queued = lit(TaskState::Queued),
                waiting = lit(TaskState::Waiting),
            );
            let mut a = args![now, now, now, now];
            a.extend(chunk.iter().map(|w| Value::from(w.id.as_str())));
            c.exec(&sql, a).await?;
            for w in chunk {
                if w.run_at.is_some_and(|at| at > now) {
                    changes.scheduled = true;
                } else {
                    changes.ready = true;
                }
            }
        }
        if !skip.is_empty() {
            jobs.insert(job_id.clone());
        }
        // One statement per condition: the error names it.
        for run_if in [RunIf::Succeeded, RunIf::Finished, RunIf::Failed] {
            let these: Vec<&&Waiter> = skip.iter().filter(|w| w.run_if == run_if).collect();
            if these.is_empty() {
                continue;
            }
            let error = graph::dependency_error(run_if);
            let error_json = serde_json::to_string(&error)?;
            for chunk in these.chunks(CHUNK) {
                let sql = format!(
                    "UPDATE tasks SET state = {cancelled}, finished_at = ?, error = ?::jsonb, run_at = NULL, \
                     pending_keys = 0 WHERE state = {waiting} AND id IN {}",
                    marks(chunk.len()),
                    cancelled = lit(TaskState::Cancelled),
                    waiting = lit(TaskState::Waiting),
                );
                let mut a = args![now, error_json.as_str()];
                a.extend(chunk.iter().map(|w| Value::from(w.id.as_str())));
                c.exec(&sql, a).await?;
            }
            for w in these {
                changes.events.push(events::task_error(
                    EventKind::TaskCancelled,
                    now,
                    &w.job_id,
                    &w.id,
                    None,
                    0,
                    &error,
                ));
                if let Some(f) = Final::of(&w.job_id, w.member_of.as_deref(), true)? {
                    finals.push(f);
                }
            }
        }
    }
    Ok(finals)
}

/// Tasks became final: close their groups, and release or cancel what waits
/// for them, down the graph, in this transaction. Jobs where a task was
/// cancelled by dependency go to `jobs` (to be checked for their end).
pub(crate) async fn settle<C: Conn>(
    c: &mut C,
    mut finals: Vec<Final>,
    now: i64,
    changes: &mut Changes,
    jobs: &mut BTreeSet<String>,
) -> Result<()> {
    let waiting = lit(TaskState::Waiting);
    let close_sql = format!(
        "UPDATE tasks SET pending_keys = pending_keys - 1 WHERE state = {waiting} AND id IN \
         (SELECT task_id FROM group_waiters WHERE job_id = ? AND group_key = ?) RETURNING {WAITER_COLUMNS}"
    );
    let bad_sql = format!(
        "SELECT {WAITER_COLUMNS} FROM tasks WHERE state = {waiting} AND run_if = '{}' AND id IN \
         (SELECT task_id FROM group_waiters WHERE job_id = ? AND group_key = ?)",
        RunIf::Succeeded.as_str()
    );
    while !finals.is_empty() {
        let mut deltas: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        for f in finals.drain(..) {
            for g in f.groups {
                let d = deltas.entry((f.job_id.clone(), g)).or_default();
                d.0 += 1;
                if f.bad {
                    d.1 += 1;
                }
            }
        }
        let mut touched: HashMap<String, Waiter> = HashMap::new();
        for ((job_id, key), (done, bad)) in deltas {
            let Some(row) = c
                .rows(
                    "UPDATE job_groups SET open = open - ?, bad = bad + ? \
                     WHERE job_id = ? AND group_key = ? RETURNING open",
                    args![done, bad, job_id.as_str(), key.as_str()],
                )
                .await?
                .pop()
            else {
                continue;
            };
            let found = if row.int("open")? <= 0 {
                c.rows(&close_sql, args![job_id.as_str(), key.as_str()])
                    .await?
            } else if bad > 0 {
                c.rows(&bad_sql, args![job_id.as_str(), key.as_str()])
                    .await?
            } else {
                continue;
            };
            for r in &found {
                let w = Waiter::from_row(r)?;
                // Seen twice in a round: the later row has the lower count.
                touched.insert(w.id.clone(), w);
            }
        }
        if touched.is_empty() {
            break;
        }
        let mut waiters: Vec<Waiter> = touched.into_values().collect();
        waiters.sort_by(|a, b| a.id.cmp(&b.id));
        finals = decide(c, waiters, now, changes, jobs).await?;
    }
    Ok(())
}

/// After inserting tasks with `after` into a job whose groups may already
/// be closed or bad (spawned tasks): decide those that need not wait.
pub(crate) async fn decide_new<C: Conn>(
    c: &mut C,
    ids: &[String],
    now: i64,
    changes: &mut Changes,
    jobs: &mut BTreeSet<String>,
) -> Result<()> {
    let mut waiters = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT {WAITER_COLUMNS} FROM tasks WHERE state = {} AND id IN {}",
            lit(TaskState::Waiting),
            marks(chunk.len())
        );
        let a: Vec<Value> = chunk.iter().map(|id| Value::from(id.as_str())).collect();
        for r in c.rows(&sql, a).await? {
            waiters.push(Waiter::from_row(&r)?);
        }
    }
    if waiters.is_empty() {
        return Ok(());
    }
    let finals = decide(c, waiters, now, changes, jobs).await?;
    settle(c, finals, now, changes, jobs).await
}

/// How many of `after` are still open groups of the job (after the spawned
/// tasks joined them).
pub(crate) async fn open_count<C: Conn>(c: &mut C, job_id: &str, after: &[String]) -> Result<i64> {
    let keys: BTreeSet<&str> = after.iter().map(String::as_str).collect();
    let states = group_states(c, job_id, &keys).await?;
    Ok(after
        .iter()
        .filter(|k| states.get(*k).is_some_and(|(open, _)| *open > 0))
        .count() as i64)
}

/// The job's graph as [`graph::check_spawn`] needs it.
pub(crate) async fn job_graph<C: Conn>(c: &mut C, job_id: &str, total: i64) -> Result<JobGraph> {
    let keys = c
        .rows(
            "SELECT group_key FROM job_groups WHERE job_id = ?",
            args![job_id],
        )
        .await?
        .iter()
        .map(|r| r.text("group_key"))
        .collect::<Result<_>>()?;
    let mut edges = Vec::new();
    for r in c
        .rows(
            "SELECT member_of, after_keys FROM tasks WHERE job_id = ? \
             AND after_keys IS NOT NULL AND member_of IS NOT NULL",
            args![job_id],
        )
        .await?
    {
        let member_of: Vec<String> = rows::json_or(r.text_opt("member_of")?)?;
        let after: Vec<String> = rows::json_or(r.text_opt("after_keys")?)?;
        for m in &member_of {
            for a in &after {
                edges.push((m.clone(), a.clone()));
            }
        }
    }
    Ok(JobGraph {
        keys,
        edges,
        tasks: total.max(0) as u64,
    })
}

/// Whether spawned tasks may join the job; the reason when not.
pub(crate) fn check_spawn(
    job: &JobGraph,
    spawner_groups: &[String],
    spawned: &[NewTask],
) -> std::result::Result<(), String> {
    graph::check_spawn(job, spawner_groups, spawned)
}

/// Columns of a parent as [`parent`] reads them.
const PARENT_COLUMNS: &str = "seq, task_key, id, state, output, error";

fn parent(row: &Row, with_output: bool) -> Result<ParentResult> {
    Ok(ParentResult {
        key: row.text_opt("task_key")?,
        task_id: row.text("id")?,
        state: rows::task_state(&row.text("state")?)?,
        output: if with_output {
            rows::value(row.text_opt("output")?)?
        } else {
            serde_json::Value::Null
        },
        error: if with_output {
            rows::error(row.text_opt("error")?)?
        } else {
            None
        },
    })
}

/// `tasks.id IN (members of these groups of the job)`, with its arguments.
fn members_filter(job_id: &str, keys: &[String]) -> (String, Vec<Value>) {
    let sql = format!(
        "id IN (SELECT task_id FROM group_members WHERE job_id = ? AND group_key IN {})",
        marks(keys.len())
    );
    let mut a = args![job_id];
    a.extend(keys.iter().map(|k| Value::from(k.as_str())));
    (sql, a)
}

/// The parents of a task waiting for `after` in its job, for its lease:
/// with their outputs when they fit the payload bound, else ids only.
pub(crate) async fn lease_parents<C: Conn>(
    c: &mut C,
    job_id: &str,
    after: &[String],
) -> Result<(Vec<ParentResult>, bool)> {
    if after.is_empty() {
        return Ok((Vec::new(), false));
    }
    let (filter, a) = members_filter(job_id, after);
    let mut with_limit = a.clone();
    with_limit.push(Value::Int(MAX_PARENTS_INLINE as i64 + 1));
    let sql = format!(
        "SELECT {} FROM tasks WHERE {filter} ORDER BY seq LIMIT ?",
        output_text::<C>()
    );
    let found = c.rows(&sql, with_limit).await?;
    let bytes: usize = found
        .iter()
        .map(|r| {
            let o = r.text_opt("output").ok().flatten().map_or(0, |s| s.len());
            let e = r.text_opt("error").ok().flatten().map_or(0, |s| s.len());
            o + e
        })
        .sum();
    if found.len() <= MAX_PARENTS_INLINE && bytes <= MAX_PARENTS_BYTES {
        let parents = found
            .iter()
            .map(|r| parent(r, true))
            .collect::<Result<_>>()?;
        return Ok((parents, false));
    }
    let mut with_limit = a;
    with_limit.push(Value::Int(MAX_PARENT_IDS as i64));
    let sql =
        format!("SELECT seq, task_key, id, state FROM tasks WHERE {filter} ORDER BY seq LIMIT ?");
    let parents = c
        .rows(&sql, with_limit)
        .await?
        .iter()
        .map(|r| parent(r, false))
        .collect::<Result<_>>()?;
    Ok((parents, true))
}

/// The parents' columns, outputs as text on both engines.
fn output_text<C: Conn>() -> &'static str {
    match C::ENGINE {
        Engine::Sqlite => PARENT_COLUMNS,
        Engine::Postgres => {
            "seq, task_key, id, state, output::text AS output, error::text AS error"
        }
    }
}

/// A page of a task's parents with their outputs, after position `after`
/// (a parent's `seq`); `None` when the task is unknown. The next cursor is
/// the last parent's position when the page is full.
pub(crate) async fn parents_page<C: Conn>(
    c: &mut C,
    task_id: &str,
    after: Option<i64>,
    limit: u32,
) -> Result<Option<(Vec<ParentResult>, Option<String>)>> {
    let Some(row) = c
        .rows(
            "SELECT job_id, after_keys FROM tasks WHERE id = ?",
            args![task_id],
        )
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let keys: Vec<String> = rows::json_or(row.text_opt("after_keys")?)?;
    if keys.is_empty() {
        return Ok(Some((Vec::new(), None)));
    }
    let job_id = row.text("job_id")?;
    let (filter, mut a) = members_filter(&job_id, &keys);
    a.push(Value::Int(after.unwrap_or(0)));
    a.push(Value::Int(i64::from(limit) + 1));
    let sql = format!(
        "SELECT {} FROM tasks WHERE {filter} AND seq > ? ORDER BY seq LIMIT ?",
        output_text::<C>()
    );
    let mut found = c.rows(&sql, a).await?;
    let next = rows::cut_page(&mut found, limit)?;
    let parents = found
        .iter()
        .map(|r| parent(r, true))
        .collect::<Result<_>>()?;
    Ok(Some((parents, next)))
}

/// The error-kind test of a stored task error, per engine.
pub(crate) fn error_kind_is<C: Conn>() -> &'static str {
    match C::ENGINE {
        Engine::Sqlite => "json_extract(error, '$.kind') = ?",
        Engine::Postgres => "error->>'kind' = ?",
    }
}

/// How many of a job's cancelled tasks were cancelled by dependency.
pub(crate) async fn skipped<C: Conn>(c: &mut C, job_id: &str) -> Result<u64> {
    let sql = format!(
        "SELECT count(*) AS n FROM tasks WHERE job_id = ? AND state = {} AND {}",
        lit(TaskState::Cancelled),
        error_kind_is::<C>()
    );
    let n = c
        .rows(&sql, args![job_id, "dependency"])
        .await?
        .pop()
        .map(|r| r.int("n"))
        .transpose()?
        .unwrap_or(0);
    Ok(n.max(0) as u64)
}

/// A hand retry put a failed or cancelled task back: its groups have one
/// more open member and one bad fewer; groups that reopen make their
/// still-waiting waiters wait for them again. The state the task takes:
/// `waiting` when groups it waits for are open (its `pending_keys` set).
pub(crate) async fn reopen<C: Conn>(
    c: &mut C,
    task_id: &str,
    job_id: &str,
    member_of: Option<&str>,
    after: &[String],
) -> Result<Option<TaskState>> {
    if let Some(f) = Final::of(job_id, member_of, true)? {
        for g in &f.groups {
            let Some(row) = c
                .rows(
                    "UPDATE job_groups SET open = open + 1, bad = CASE WHEN bad > 0 THEN bad - 1 ELSE 0 END \
                     WHERE job_id = ? AND group_key = ? RETURNING open",
                    args![job_id, g.as_str()],
                )
                .await?
                .pop()
            else {
                continue;
            };
            if row.int("open")? == 1 {
                let sql = format!(
                    "UPDATE tasks SET pending_keys = pending_keys + 1 WHERE state = {} AND id IN \
                     (SELECT task_id FROM group_waiters WHERE job_id = ? AND group_key = ?)",
                    lit(TaskState::Waiting)
                );
                c.exec(&sql, args![job_id, g.as_str()]).await?;
            }
        }
    }
    if after.is_empty() {
        return Ok(None);
    }
    let open = open_count(c, job_id, after).await?;
    c.exec(
        "UPDATE tasks SET pending_keys = ? WHERE id = ?",
        args![open, task_id],
    )
    .await?;
    Ok((open > 0).then_some(TaskState::Waiting))
}

/// Parse a stored JSON list of keys.
pub(crate) fn keys(text: Option<&str>) -> Result<Vec<String>> {
    match text {
        Some(t) => serde_json::from_str(t).map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(Vec::new()),
    }
}
