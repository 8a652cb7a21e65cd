//! The SQL both engines share, written once.
//!
//! Every store operation is a function over a [`Conn`]: a connection inside
//! the transaction the engine opened. Its statements use `?` placeholders
//! (`?::json` / `?::jsonb` where PostgreSQL needs to be told a text is JSON;
//! SQLite drops the cast); the engine rewrites them for its driver. Where the
//! engines really differ — the lease, the batched success write, the batched
//! heartbeat, locking — the [`Conn`] has a method of its own, and the shared
//! code around it (checks, events, jobs finishing) stays here.
//!
//! The domain's decisions are `brigade-core`'s: this layer asks it what a
//! failure or a result does and writes down the answer.

pub(crate) mod callbacks;
pub(crate) mod copy;
pub(crate) mod graph;
pub(crate) mod limits;
pub(crate) mod read;
pub(crate) mod schedules;
pub(crate) mod write;

use std::future::Future;
use std::sync::Arc;

use brigade_api::{JobState, TaskState, WorkerState};

use crate::rows::Columns;
use crate::{Result, StoreError};

/// Which engine a connection belongs to, for the few fragments that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<TaskState> for Value {
    fn from(v: TaskState) -> Self {
        Value::Text(v.as_str().to_owned())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// The arguments of a statement, each converted into a [`Value`].
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::sql::Value::from($v)),*] };
}
pub(crate) use args;

/// One fetched row: its values by position, the names shared by the rows of a statement.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) names: Arc<[String]>,
    pub(crate) values: Vec<Value>,
}

impl Row {
    fn get(&self, col: &str) -> Result<&Value> {
        self.names
            .iter()
            .position(|n| n == col)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("no column {col:?} in the row")))
    }

    fn mismatch(col: &str, want: &str, got: &Value) -> StoreError {
        StoreError::Corrupt(format!("column {col:?}: expected {want}, found {got:?}"))
    }
}

impl Columns for Row {
    fn int(&self, col: &str) -> Result<i64> {
        match self.get(col)? {
            Value::Int(v) => Ok(*v),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(Row::mismatch(col, "an integer", other)),
        }
    }
    fn int_opt(&self, col: &str) -> Result<Option<i64>> {
        match self.get(col)? {
            Value::Null => Ok(None),
            _ => self.int(col).map(Some),
        }
    }
    fn text(&self, col: &str) -> Result<String> {
        match self.get(col)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(Row::mismatch(col, "a text", other)),
        }
    }
    fn text_opt(&self, col: &str) -> Result<Option<String>> {
        match self.get(col)? {
            Value::Null => Ok(None),
            _ => self.text(col).map(Some),
        }
    }
    fn flag(&self, col: &str) -> Result<bool> {
        match self.get(col)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(v) => Ok(*v != 0),
            other => Err(Row::mismatch(col, "a boolean", other)),
        }
    }
}

/// What a lease asks the engine to pick and mark.
#[derive(Debug, Clone)]
pub(crate) struct Pick<'a> {
    pub(crate) worker_id: &'a str,
    pub(crate) queues: &'a [String],
    pub(crate) kinds: &'a [String],
    /// `key=value` pairs the worker's labels offer.
    pub(crate) offered: &'a [String],
    pub(crate) max: u32,
    pub(crate) now: i64,
    pub(crate) expires: i64,
}

/// A success to write: the task's row number and its output as JSON text.
#[derive(Debug, Clone)]
pub(crate) struct Success {
    pub(crate) seq: i64,
    pub(crate) output: String,
}

/// A connection inside the engine's transaction.
///
/// The futures are `Send` so PostgreSQL's can live in request handlers;
/// SQLite's are ready at once (its calls block the writer thread they run on).
pub(crate) trait Conn: Send {
    /// The engine.
    const ENGINE: Engine;

    /// Run a statement; how many rows it changed.
    /// The time after waiting for a lock another transaction held: on
    /// PostgreSQL, transactions that read the clock before this one may
    /// have committed meanwhile, and what this one records must not seem to
    /// come before what they did. `now` where no clock is known, and on
    /// SQLite, whose single writer applies requests in the order they read
    /// the clock.
    fn now_after_wait(&self, now: i64) -> i64 {
        now
    }

    fn exec(&mut self, sql: &str, args: Vec<Value>) -> impl Future<Output = Result<u64>> + Send;

    /// Run a query; its rows.
    fn rows(
        &mut self,
        sql: &str,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send;

    /// Pick up to `max` runnable tasks, mark them running for the worker, open
    /// their attempts and start their jobs; the rows (`id, job_id, kind,
    /// input, attempt, timeout_ms, ready_at, after_keys`) in dispatch order.
    fn pick(&mut self, pick: &Pick<'_>) -> impl Future<Output = Result<Vec<Row>>> + Send;

    /// The rows (`RUNNING_COLUMNS`) of the tasks with these ids, locked
    /// against other writers until the transaction ends.
    fn lock_tasks(&mut self, ids: &[&str]) -> impl Future<Output = Result<Vec<Row>>> + Send;

    /// Mark these tasks succeeded and close their attempts.
    fn succeed(&mut self, now: i64, batch: &[Success]) -> impl Future<Output = Result<()>> + Send;

    /// Record that these workers were heard from (`(id, load JSON)`); the
    /// `(id, state)` of those that exist.
    fn touch_workers(
        &mut self,
        now: i64,
        beats: &[(&str, String)],
    ) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;

    /// Extend the leases of `(task id, worker id)` pairs still running on
    /// that worker; the ids extended.
    fn extend_leases(
        &mut self,
        expires: i64,
        held: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// ` FOR UPDATE` on PostgreSQL; nothing on SQLite, whose single writer
/// already excludes every other.
pub(crate) fn for_update<C: Conn>() -> &'static str {
    match C::ENGINE {
        Engine::Sqlite => "",
        Engine::Postgres => " FOR UPDATE",
    }
}

/// ` FOR UPDATE SKIP LOCKED` on PostgreSQL: rows another server is working
/// on are left to it. Nothing on SQLite.
/// `INDEXED BY index` on SQLite, whose planner otherwise may not pick the
/// partial index; nothing on PostgreSQL.
pub(crate) fn indexed_by<C: Conn>(index: &str) -> String {
    match C::ENGINE {
        Engine::Sqlite => format!(" INDEXED BY {index}"),
        Engine::Postgres => String::new(),
    }
}

pub(crate) fn skip_locked<C: Conn>() -> &'static str {
    match C::ENGINE {
        Engine::Sqlite => "",
        Engine::Postgres => " FOR UPDATE SKIP LOCKED",
    }
}

/// A task state as an SQL literal (partial indexes need literals to be usable).
pub(crate) fn lit(state: TaskState) -> String {
    format!("'{}'", state.as_str())
}

/// A list of task states as an SQL list: `('queued','scheduled')`.
pub(crate) fn lits(states: &[TaskState]) -> String {
    let inner: Vec<String> = states.iter().map(|s| lit(*s)).collect();
    format!("({})", inner.join(","))
}

/// A worker state as an SQL literal.
pub(crate) fn wlit(state: WorkerState) -> String {
    format!("'{}'", state.as_str())
}

/// A list of worker states as an SQL list.
pub(crate) fn wlits(states: &[WorkerState]) -> String {
    let inner: Vec<String> = states.iter().map(|s| wlit(*s)).collect();
    format!("({})", inner.join(","))
}

/// A job state as an SQL literal.
pub(crate) fn jlit(state: JobState) -> String {
    format!("'{}'", state.as_str())
}

/// The conflict clause of every statement that records an ended attempt.
pub(crate) const ATTEMPT_UPSERT: &str = "ON CONFLICT (task_id, attempt) DO UPDATE SET \
     worker_id = excluded.worker_id, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, outcome = excluded.outcome, error = excluded.error";

/// Columns of a task row that results, the reaper and cancels work from.
pub(crate) const RUNNING_COLUMNS: &str = "seq, id, job_id, state, attempt, attempt_base, max_attempts, worker_id, \
     backoff, kind, started_at, member_of, deaths, limits, traceparent";

/// Rewrite `?` placeholders (and `?::json`-style casts) for PostgreSQL: `$1`, `$2::json`, ….
/// Placeholders inside quoted literals are left alone. Also says, for each
/// placeholder, whether a cast follows it.
pub(crate) fn numbered(sql: &str) -> (String, Vec<bool>) {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut casts = Vec::new();
    let mut quoted = false;
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                casts.push(rest.starts_with("::"));
                out.push('$');
                out.push_str(&casts.len().to_string());
            }
            _ => out.push(c),
        }
    }
    (out, casts)
}

/// Drop PostgreSQL's `::json` / `::jsonb` / `::text` casts after placeholders for SQLite.
pub(crate) fn uncast(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains("?::") {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut s = sql.to_owned();
    for cast in ["?::jsonb", "?::json", "?::text", "?::bigint"] {
        s = s.replace(cast, "?");
    }
    std::borrow::Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT ? , '?' , ?::jsonb"),
            ("SELECT $1 , '?' , $2::jsonb".to_owned(), vec![false, true])
        );
        assert_eq!(uncast("VALUES (?::json, ?)"), "VALUES (?, ?)");
    }
}
