//! Copying a whole database from one engine to another (`brigade migrate
//! --from … --to …`), written once over two [`Conn`]s.
//!
//! The tables and their columns are read from the target's schema (the same
//! brigade migrated both databases), so a table or column a later migration
//! adds is copied without a change here. Rows go in key order, a batch per
//! multi-row `INSERT`; the source is read inside one snapshot and the target
//! written inside one transaction, so the copy is all or nothing and its
//! counts can be checked before it commits.

use std::collections::BTreeMap;

use super::{Conn, Engine, Value, args};
use crate::rows::Columns;
use crate::{Result, StoreError};

/// Rows per `INSERT`: well under both engines' limits on bound parameters
/// (SQLite 32766, PostgreSQL 65535) for the widest table.
pub(crate) const BATCH_ROWS: usize = 500;

/// brigade's own bookkeeping, which each database keeps for itself.
const SKIPPED: &[&str] = &["_sqlx_migrations"];

/// How the target stores a column, for the casts and conversions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Bool,
    Json,
    Jsonb,
}

/// One table of the target, its columns in order.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) name: String,
    columns: Vec<(String, Kind)>,
}

/// The columns rows are copied in order of: a unique key, so batches follow
/// one another without OFFSET. Tables brigade does not know yet are paged by
/// OFFSET over all their columns, which is slower but still complete.
fn key_of(table: &str) -> Option<&'static [&'static str]> {
    match table {
        "jobs" | "tasks" | "task_logs" | "callback_deliveries" | "callback_attempts" => {
            Some(&["seq"])
        }
        "attempts" => Some(&["task_id", "attempt"]),
        "workers" => Some(&["id"]),
        "queues" => Some(&["name"]),
        _ => None,
    }
}

/// The tables of a database (without brigade's bookkeeping), sorted by name.
pub(crate) async fn tables<C: Conn>(c: &mut C) -> Result<Vec<Table>> {
    let names_sql = match C::ENGINE {
        Engine::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name"
        }
        Engine::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
        }
    };
    let mut out = Vec::new();
    for row in c.rows(names_sql, args![]).await? {
        let name = row.text("name")?;
        if SKIPPED.contains(&name.as_str()) {
            continue;
        }
        let cols_sql = match C::ENGINE {
            Engine::Sqlite => "SELECT name, type FROM pragma_table_info(?) ORDER BY cid",
            Engine::Postgres => {
                "SELECT column_name::text AS name, data_type::text AS type FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position"
            }
        };
        let mut columns = Vec::new();
        for col in c.rows(cols_sql, args![&name]).await? {
            let kind = match col.text("type")?.to_ascii_lowercase().as_str() {
                "boolean" => Kind::Bool,
                "json" => Kind::Json,
                "jsonb" => Kind::Jsonb,
                _ => Kind::Plain,
            };
            columns.push((col.text("name")?, kind));
        }
        out.push(Table { name, columns });
    }
    Ok(out)
}

/// Rows of each table.
pub(crate) async fn counts<C: Conn>(c: &mut C, tables: &[Table]) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for t in tables {
        let sql = format!("SELECT count(*) AS n FROM {}", quote(&t.name));
        let n = match c.rows(&sql, args![]).await?.pop() {
            Some(row) => row.int("n")?,
            None => 0,
        };
        out.insert(t.name.clone(), n);
    }
    Ok(out)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Check that source and target have the same tables with the same columns.
pub(crate) fn same_schema(source: &[Table], target: &[Table]) -> Result<()> {
    let shape = |ts: &[Table]| -> BTreeMap<String, Vec<String>> {
        ts.iter()
            .map(|t| {
                let mut cols: Vec<String> = t.columns.iter().map(|c| c.0.clone()).collect();
                cols.sort();
                (t.name.clone(), cols)
            })
            .collect()
    };
    let (s, t) = (shape(source), shape(target));
    if s != t {
        return Err(StoreError::Schema(format!(
            "the two databases' schemas differ (source {s:?}, target {t:?}); migrate both with this brigade"
        )));
    }
    Ok(())
}

/// Copy every row of `table` from `src` to `dst`, a batch at a time; how many.
pub(crate) async fn copy_table<S: Conn, D: Conn>(
    src: &mut S,
    dst: &mut D,
    table: &Table,
) -> Result<i64> {
    let cols: Vec<&str> = table.columns.iter().map(|c| c.0.as_str()).collect();
    let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let key = key_of(&table.name).filter(|k| k.iter().all(|c| cols.contains(c)));
    let row_marks = format!(
        "({})",
        table
            .columns
            .iter()
            .map(|(_, kind)| match (D::ENGINE, kind) {
                (Engine::Postgres, Kind::Json) => "?::json",
                (Engine::Postgres, Kind::Jsonb) => "?::jsonb",
                _ => "?",
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut copied = 0i64;
    let mut after: Option<Vec<Value>> = None;
    loop {
        let (sql, binds) = match key {
            Some(key) => {
                let order = key.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
                match &after {
                    None => (
                        format!(
                            "SELECT {list} FROM {} ORDER BY {order} LIMIT ?",
                            quote(&table.name)
                        ),
                        args![BATCH_ROWS as i64],
                    ),
                    Some(last) => {
                        // (a, b) > (x, y), spelled out for both engines.
                        let cond = match key {
                            [a] => format!("{} > ?", quote(a)),
                            [a, b] => {
                                format!("({0} > ? OR ({0} = ? AND {1} > ?))", quote(a), quote(b))
                            }
                            _ => {
                                return Err(StoreError::Corrupt(
                                    "keys have one or two columns".into(),
                                ));
                            }
                        };
                        let mut binds: Vec<Value> = match last.as_slice() {
                            [x] => vec![x.clone()],
                            [x, y] => vec![x.clone(), x.clone(), y.clone()],
                            _ => return Err(StoreError::Corrupt("key width".into())),
                        };
                        binds.push(Value::Int(BATCH_ROWS as i64));
                        (
                            format!(
                                "SELECT {list} FROM {} WHERE {cond} ORDER BY {order} LIMIT ?",
                                quote(&table.name)
                            ),
                            binds,
                        )
                    }
                }
            }
            None => (
                format!(
                    "SELECT {list} FROM {} ORDER BY {list} LIMIT ? OFFSET ?",
                    quote(&table.name)
                ),
                args![BATCH_ROWS as i64, copied],
            ),
        };
        let rows = src.rows(&sql, binds).await?;
        if rows.is_empty() {
            break;
        }
        let mut insert = format!("INSERT INTO {} ({list}) VALUES ", quote(&table.name));
        let mut values = Vec::with_capacity(rows.len() * cols.len());
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                insert.push(',');
            }
            insert.push_str(&row_marks);
            for ((_, kind), v) in table.columns.iter().zip(&row.values) {
                values.push(match (kind, v) {
                    // SQLite keeps booleans as 0/1.
                    (Kind::Bool, Value::Int(n)) => Value::Bool(*n != 0),
                    _ => v.clone(),
                });
            }
        }
        dst.exec(&insert, values).await?;
        copied += rows.len() as i64;
        if let Some(key) = key {
            let last = rows.last().map(|row| {
                key.iter()
                    .filter_map(|k| cols.iter().position(|c| c == k))
                    .filter_map(|i| row.values.get(i).cloned())
                    .collect::<Vec<_>>()
            });
            after = last;
        }
        if rows.len() < BATCH_ROWS {
            break;
        }
    }
    // PostgreSQL's serial columns must continue after the copied rows.
    if D::ENGINE == Engine::Postgres && cols.contains(&"seq") && copied > 0 {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence(?, 'seq'), (SELECT max(seq) FROM {})) AS v",
            quote(&table.name)
        );
        dst.rows(&sql, args![table.name.as_str()]).await?;
    }
    Ok(copied)
}
