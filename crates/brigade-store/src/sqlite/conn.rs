//! The shared layer's [`Conn`] over a rusqlite connection.
//!
//! Every call runs at once on the calling thread (the writer's, or a reader's),
//! with statements prepared once and cached by the connection: a whole request
//! costs no hand-off between threads.

use std::sync::Arc;

use brigade_api::{AttemptOutcome, JobState, TaskState, WorkerState};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params, params_from_iter};

use crate::Result;
use crate::sql::{
    ATTEMPT_UPSERT, Conn, Engine, Pick, RUNNING_COLUMNS, Row, Success, Value, jlit, lit, uncast,
    wlit,
};

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// A rusqlite connection seen by the shared layer.
pub(crate) struct Lite<'a>(pub(crate) &'a mut Connection);

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Value::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

/// Run a query, collecting its rows.
fn query(conn: &Connection, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&uncast(sql))?;
    let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let width = names.len();
    let mut rows = stmt.query(params_from_iter(args.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(value(r.get_ref(i)?));
        }
        out.push(Row {
            names: names.clone(),
            values,
        });
    }
    Ok(out)
}

fn execute(conn: &Connection, sql: &str, args: &[Value]) -> Result<u64> {
    let mut stmt = conn.prepare_cached(&uncast(sql))?;
    Ok(stmt.execute(params_from_iter(args.iter()))? as u64)
}

impl Lite<'_> {
    fn pick_now(&mut self, p: &Pick<'_>) -> Result<Vec<Row>> {
        let conn = &*self.0;
        // One statement picks and marks the tasks; the single writer makes it race-free.
        let sql = format!(
            "UPDATE tasks SET state = {running}, attempt = attempt + 1, worker_id = ?1, started_at = ?2, \
             lease_expires_at = ?3, run_at = NULL, finished_at = NULL \
             WHERE seq IN (SELECT seq FROM tasks INDEXED BY tasks_ready WHERE state = {queued} \
               AND limits IS NULL AND queue IN (SELECT value FROM json_each(?4)) AND kind IN (SELECT value FROM json_each(?5)) \
               AND queue NOT IN (SELECT name FROM queues WHERE paused) \
               AND (requires IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(tasks.requires) r \
                    WHERE r.key || '=' || r.value NOT IN (SELECT value FROM json_each(?6)))) \
               ORDER BY priority DESC, coalesce(vt, seq) LIMIT ?7) \
             RETURNING seq, priority, id, job_id, kind, input, attempt, timeout_ms, \
               coalesce(ready_at, created_at) AS ready_at, after_keys, coalesce(vt, seq) AS ord, traceparent",
            running = lit(TaskState::Running),
            queued = lit(TaskState::Queued),
        );
        let mut rows = query(
            conn,
            &sql,
            &[
                Value::from(p.worker_id),
                Value::Int(p.now),
                Value::Int(p.expires),
                Value::Text(serde_json::to_string(p.queues)?),
                Value::Text(serde_json::to_string(p.kinds)?),
                Value::Text(serde_json::to_string(p.offered)?),
                Value::Int(i64::from(p.max)),
            ],
        )?;
        if rows.is_empty() {
            return Ok(rows);
        }
        // RETURNING has no order: hand them out in dispatch order.
        crate::sql::limits::sort_leased(&mut rows);
        let mut start = conn.prepare_cached(&format!(
            "UPDATE jobs SET started_at = ?1, state = {} WHERE id = ?2 AND started_at IS NULL",
            jlit(JobState::Running)
        ))?;
        let mut last_job = String::new();
        for r in &rows {
            use crate::rows::Columns;
            let job = r.text("job_id")?;
            if job != last_job {
                start.execute(params![p.now, job])?;
                last_job = job;
            }
        }
        Ok(rows)
    }

    fn lock_now(&mut self, ids: &[&str]) -> Result<Vec<Row>> {
        // The single writer holds the only write lock: reading is locking.
        let sql = format!("SELECT {RUNNING_COLUMNS} FROM tasks WHERE id = ?");
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(query(self.0, &sql, &[Value::from(*id)])?);
        }
        Ok(out)
    }

    fn succeed_now(&mut self, now: i64, batch: &[Success]) -> Result<()> {
        let conn = &*self.0;
        let mut task = conn.prepare_cached(&format!(
            "UPDATE tasks SET state = {}, output = ?1, error = NULL, finished_at = ?2, \
             lease_expires_at = NULL WHERE seq = ?3",
            lit(TaskState::Succeeded)
        ))?;
        // The attempt's row is written when it ends (see `end_attempt`).
        let mut attempt = conn.prepare_cached(&format!(
            "INSERT INTO attempts (task_id, attempt, worker_id, started_at, finished_at, outcome, error) \
             SELECT id, attempt, worker_id, started_at, ?1, ?2, NULL FROM tasks WHERE seq = ?3 \
             {ATTEMPT_UPSERT}"
        ))?;
        for s in batch {
            task.execute(params![s.output, now, s.seq])?;
            attempt.execute(params![now, AttemptOutcome::Succeeded.as_str(), s.seq])?;
        }
        Ok(())
    }

    fn touch_now(&mut self, now: i64, beats: &[(&str, String)]) -> Result<Vec<(String, String)>> {
        // A worker given up for lost is back and may lease again.
        let mut stmt = self.0.prepare_cached(&format!(
            "UPDATE workers SET last_seen_at = ?1, load = ?2, \
             state = CASE WHEN state = {lost} THEN {active} ELSE state END \
             WHERE id = ?3 AND state <> {left} RETURNING id, state",
            lost = wlit(WorkerState::Lost),
            active = wlit(WorkerState::Active),
            left = wlit(WorkerState::Left),
        ))?;
        let mut out = Vec::with_capacity(beats.len());
        for (id, load) in beats {
            let mut rows = stmt.query(params![now, load, id])?;
            while let Some(r) = rows.next()? {
                out.push((r.get(0)?, r.get(1)?));
            }
        }
        Ok(out)
    }

    fn extend_now(&mut self, expires: i64, held: &[(&str, &str)]) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "UPDATE tasks SET lease_expires_at = ?1 WHERE id = ?2 AND worker_id = ?3 AND state = {} \
             RETURNING id",
            lit(TaskState::Running)
        ))?;
        let mut out = Vec::with_capacity(held.len());
        for (task, worker) in held {
            let mut rows = stmt.query(params![expires, task, worker])?;
            while let Some(r) = rows.next()? {
                out.push(r.get(0)?);
            }
        }
        Ok(out)
    }
}

impl Conn for Lite<'_> {
    const ENGINE: Engine = Engine::Sqlite;

    fn exec(&mut self, sql: &str, args: Vec<Value>) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(execute(self.0, sql, &args))
    }

    fn rows(
        &mut self,
        sql: &str,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>>> + Send {
        std::future::ready(query(self.0, sql, &args))
    }

    fn pick(&mut self, pick: &Pick<'_>) -> impl Future<Output = Result<Vec<Row>>> + Send {
        std::future::ready(self.pick_now(pick))
    }

    fn lock_tasks(&mut self, ids: &[&str]) -> impl Future<Output = Result<Vec<Row>>> + Send {
        std::future::ready(self.lock_now(ids))
    }

    fn succeed(&mut self, now: i64, batch: &[Success]) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.succeed_now(now, batch))
    }

    fn touch_workers(
        &mut self,
        now: i64,
        beats: &[(&str, String)],
    ) -> impl Future<Output = Result<Vec<(String, String)>>> + Send {
        std::future::ready(self.touch_now(now, beats))
    }

    fn extend_leases(
        &mut self,
        expires: i64,
        held: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        std::future::ready(self.extend_now(expires, held))
    }
}
