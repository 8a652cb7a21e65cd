//! The shared layer's [`Conn`] over a sqlx PostgreSQL connection.

use std::sync::Arc;

use brigade_api::{AttemptOutcome, JobState, TaskState, WorkerState};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArguments, PgRow, PgTypeInfo};
use sqlx::types::Json;
use sqlx::{Column, Encode, PgConnection, Postgres, Row as _, Type, TypeInfo};

use crate::sql::{
    ATTEMPT_UPSERT, Conn, Engine, Pick, RUNNING_COLUMNS, Row, Success, Value, jlit, lit, numbered,
    wlit,
};
use crate::{Result, StoreError};

/// A connection inside a PostgreSQL transaction, seen by the shared layer,
/// with the server's clock when it has one (see [`Conn::now_after_wait`]).
pub(crate) struct Pg<'a>(
    pub(crate) &'a mut PgConnection,
    pub(crate) Option<&'a dyn brigade_core::Clock>,
);

/// A NULL whose type PostgreSQL infers from where it stands (parameter type 0),
/// so one NULL serves a bigint, text or jsonb column alike.
struct Untyped;

impl Type<Postgres> for Untyped {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for Untyped {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// Bind `args`; `casts[i]` says whether the i-th placeholder is cast
/// (`$n::jsonb`). A NULL there is typed text: PostgreSQL would infer the cast's
/// type for an untyped one and keep it in the prepared statement, which the
/// text of a later non-NULL value would then not match.
fn bind<'q>(
    mut q: sqlx::query::Query<'q, Postgres, PgArguments>,
    args: Vec<Value>,
    casts: &[bool],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    for (i, a) in args.into_iter().enumerate() {
        q = match a {
            Value::Null if casts.get(i).copied().unwrap_or(false) => q.bind(None::<String>),
            Value::Null => q.bind(Untyped),
            Value::Int(v) => q.bind(v),
            Value::Bool(b) => q.bind(b),
            Value::Text(s) => q.bind(without_nul(s)),
        };
    }
    q
}

/// PostgreSQL stores no NUL character, in text (`0x00`) or in jsonb (the
/// escape `\u0000`), where SQLite does: each becomes U+FFFD, the
/// replacement character, rather than failing the request.
fn without_nul(s: String) -> String {
    if !s.contains('\0') && !s.contains("\\u0000") {
        return s;
    }
    let s = s.replace('\0', "\u{FFFD}");
    // Only a real escape: `\u0000` preceded by an odd number of backslashes.
    let mut out = String::with_capacity(s.len());
    let mut slashes = 0usize;
    let mut rest = s.as_str();
    while let Some(c) = rest.chars().next() {
        if c == '\\' && slashes.is_multiple_of(2) && rest.starts_with("\\u0000") {
            out.push_str("\\ufffd");
            rest = &rest[6..];
            slashes = 0;
            continue;
        }
        slashes = if c == '\\' { slashes + 1 } else { 0 };
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A fetched row as values, decoded by each column's type.
fn decode(row: &PgRow, names: &Arc<[String]>) -> Result<Row> {
    let mut values = Vec::with_capacity(names.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_info().name();
        let v = match ty {
            "INT8" => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            "INT4" => row
                .try_get::<Option<i32>, _>(i)?
                .map(|v| Value::Int(i64::from(v))),
            "INT2" => row
                .try_get::<Option<i16>, _>(i)?
                .map(|v| Value::Int(i64::from(v))),
            "BOOL" => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
            "JSON" | "JSONB" => row
                .try_get::<Option<Json<Box<serde_json::value::RawValue>>>, _>(i)?
                .map(|j| Value::Text(j.0.get().to_owned())),
            "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
                row.try_get::<Option<String>, _>(i)?.map(Value::Text)
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "column {:?} has type {other}, which the store does not read",
                    col.name()
                )));
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row {
        names: names.clone(),
        values,
    })
}

fn decode_all(rows: &[PgRow]) -> Result<Vec<Row>> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let names: Arc<[String]> = first
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    rows.iter().map(|r| decode(r, &names)).collect()
}

impl Conn for Pg<'_> {
    const ENGINE: Engine = Engine::Postgres;

    fn now_after_wait(&self, now: i64) -> i64 {
        self.1.map_or(now, |c| c.now_ms().max(now))
    }

    async fn exec(&mut self, sql: &str, args: Vec<Value>) -> Result<u64> {
        let (sql, casts) = numbered(sql);
        let done = bind(sqlx::query(&sql), args, &casts)
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected())
    }

    async fn rows(&mut self, sql: &str, args: Vec<Value>) -> Result<Vec<Row>> {
        let (sql, casts) = numbered(sql);
        let found = bind(sqlx::query(&sql), args, &casts)
            .fetch_all(&mut *self.0)
            .await?;
        decode_all(&found)
    }

    async fn pick(&mut self, p: &Pick<'_>) -> Result<Vec<Row>> {
        // One round trip: pick (skipping rows another server is leasing right
        // now), mark running, start the jobs. (The attempt's row is written
        // when it ends.)
        let sql = format!(
            "WITH picked AS ( \
                 SELECT seq FROM tasks \
                 WHERE state = {queued} AND limits IS NULL AND queue = ANY($1::text[]) AND kind = ANY($2::text[]) \
                   AND queue NOT IN (SELECT name FROM queues WHERE paused) \
                   AND (requires IS NULL OR NOT EXISTS ( \
                        SELECT 1 FROM jsonb_each_text(tasks.requires) r \
                        WHERE r.key || '=' || r.value <> ALL($3::text[]))) \
                 ORDER BY priority DESC, coalesce(vt, seq) \
                 LIMIT $4 \
                 FOR UPDATE SKIP LOCKED \
             ), leased AS ( \
                 UPDATE tasks SET state = {running}, attempt = attempt + 1, worker_id = $5, \
                        started_at = $6, lease_expires_at = $7, run_at = NULL, finished_at = NULL \
                 FROM picked WHERE tasks.seq = picked.seq \
                 RETURNING tasks.seq, tasks.priority, tasks.id, tasks.job_id, tasks.kind, \
                           tasks.input::text AS input, tasks.attempt, tasks.timeout_ms, \
                           coalesce(tasks.ready_at, tasks.created_at) AS ready_at, \
                           tasks.after_keys::text AS after_keys, \
                           coalesce(tasks.vt, tasks.seq) AS ord, tasks.traceparent \
             ), started AS ( \
                 UPDATE jobs SET started_at = $6, state = {job_running} \
                 WHERE id IN (SELECT job_id FROM leased) AND started_at IS NULL \
             ) \
             SELECT seq, priority, id, job_id, kind, input, attempt, timeout_ms, ready_at, after_keys, ord, traceparent \
             FROM leased ORDER BY priority DESC, ord, seq",
            queued = lit(TaskState::Queued),
            running = lit(TaskState::Running),
            job_running = jlit(JobState::Running),
        );
        let found = sqlx::query(&sql)
            .bind(p.queues)
            .bind(p.kinds)
            .bind(p.offered)
            .bind(i64::from(p.max))
            .bind(p.worker_id)
            .bind(p.now)
            .bind(p.expires)
            .fetch_all(&mut *self.0)
            .await?;
        decode_all(&found)
    }

    async fn lock_tasks(&mut self, ids: &[&str]) -> Result<Vec<Row>> {
        // In id order, the same in every transaction, so two batches cannot deadlock.
        let sql = format!(
            "SELECT {RUNNING_COLUMNS} FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
        );
        let found = sqlx::query(&sql).bind(ids).fetch_all(&mut *self.0).await?;
        decode_all(&found)
    }

    async fn succeed(&mut self, now: i64, batch: &[Success]) -> Result<()> {
        let seqs: Vec<i64> = batch.iter().map(|s| s.seq).collect();
        let outputs: Vec<&str> = batch.iter().map(|s| s.output.as_str()).collect();
        // One statement for the tasks and their attempts' rows.
        let sql = format!(
            "WITH done AS ( \
                 UPDATE tasks SET state = {succeeded}, output = u.output::json, error = NULL, \
                 finished_at = $1, lease_expires_at = NULL \
                 FROM unnest($2::bigint[], $3::text[]) AS u(seq, output) WHERE tasks.seq = u.seq \
                 RETURNING tasks.id, tasks.attempt, tasks.worker_id, tasks.started_at \
             ) \
             INSERT INTO attempts (task_id, attempt, worker_id, started_at, finished_at, outcome, error) \
             SELECT id, attempt, worker_id, started_at, $1, '{ok}', NULL FROM done \
             {ATTEMPT_UPSERT}",
            succeeded = lit(TaskState::Succeeded),
            ok = AttemptOutcome::Succeeded.as_str(),
        );
        sqlx::query(&sql)
            .bind(now)
            .bind(&seqs)
            .bind(&outputs)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn touch_workers(
        &mut self,
        now: i64,
        beats: &[(&str, String)],
    ) -> Result<Vec<(String, String)>> {
        let ids: Vec<&str> = beats.iter().map(|(w, _)| *w).collect();
        let loads: Vec<&str> = beats.iter().map(|(_, l)| l.as_str()).collect();
        // A worker given up for lost is back and may lease again.
        let sql = format!(
            "WITH b AS (SELECT * FROM unnest($2::text[], $3::text[]) AS b(id, load)), \
             locked AS (SELECT w.id FROM workers w JOIN b ON w.id = b.id ORDER BY w.id FOR UPDATE OF w) \
             UPDATE workers SET last_seen_at = $1, load = b.load::jsonb, \
             state = CASE WHEN workers.state = {lost} THEN {active} ELSE workers.state END \
             FROM b, locked WHERE workers.id = b.id AND locked.id = b.id AND workers.state <> {left} \
             RETURNING workers.id, workers.state",
            lost = wlit(WorkerState::Lost),
            active = wlit(WorkerState::Active),
            left = wlit(WorkerState::Left),
        );
        Ok(sqlx::query_as(&sql)
            .bind(now)
            .bind(&ids)
            .bind(&loads)
            .fetch_all(&mut *self.0)
            .await?)
    }

    async fn extend_leases(&mut self, expires: i64, held: &[(&str, &str)]) -> Result<Vec<String>> {
        let (tids, wids): (Vec<&str>, Vec<&str>) = held.iter().copied().unzip();
        let sql = format!(
            "UPDATE tasks SET lease_expires_at = $1 \
             FROM unnest($2::text[], $3::text[]) AS r(tid, wid) \
             WHERE tasks.id = r.tid AND tasks.worker_id = r.wid AND tasks.state = {} \
             RETURNING tasks.id",
            lit(TaskState::Running)
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(expires)
            .bind(&tids)
            .bind(&wids)
            .fetch_all(&mut *self.0)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::without_nul;

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(without_nul("a\0b".into()), "a\u{FFFD}b");
        assert_eq!(
            without_nul(r#"{"k":"a\u0000b"}"#.into()),
            r#"{"k":"a\ufffdb"}"#
        );
        // An escaped backslash followed by u0000 is text, not an escape.
        assert_eq!(without_nul(r#""\\u0000""#.into()), r#""\\u0000""#);
        assert_eq!(without_nul("plain".into()), "plain");
    }
}
