//! Limits in the store: leasing limited tasks, parking those over budget,
//! fair places at submit, and the limits themselves.
//!
//! Limited tasks (`limits` not NULL) are out of the main dispatch index and
//! are leased here, in the same transaction as the rest of the lease. What
//! may start is [`brigade_core::limits::Budget`]'s decision: what runs is
//! counted from the running tasks (at most the workers' slots), rates from a
//! bucket per concrete key. A task over budget is parked on the key that
//! stopped it, and that key is recorded in `limit_waits`. A wait is *due*
//! (`wake_at <= now`) when a task of its key ended ([`ended`], from results
//! and the reaper), at a rate's next token, and at least once a second (the
//! promoter, a net under ends no hook saw: a cancel, a worker leaving). A
//! lease looks at due keys first and lets go of as many parked tasks as
//! each has room for; a full key costs leases nothing until then. On
//! PostgreSQL each concrete key has an advisory lock: a lease decides only
//! for the keys whose lock it gets at once (another lease holding one is
//! deciding for it, so nobody waits), and an end that marks a wait due
//! waits for the key's lock, so N servers share each budget exactly and no
//! end is missed. Leases that find nothing limited to do take no lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use brigade_api::{JobState, LimitUsage, LimitView, TaskState};
use brigade_core::limits::{Blocked, Bucket, Budget, Limit, Rate, Usage, covers, resolve};
use brigade_core::{NewTask, from_ms};

use super::{Conn, Engine, Pick, Row, Value, args, indexed_by, jlit, lit};
use crate::Result;
use crate::rows::{self, Columns};

/// The class of the advisory locks (PostgreSQL) of concrete keys: a key's
/// lock is `(KEY_LOCK_CLASS, hashtext(key))`. Two keys of one hash share a
/// lock, which only makes them wait on each other.
const KEY_LOCK_CLASS: i32 = 0x6272_6c6b;

/// Candidates looked at per lease beyond what it asks for: those over budget
/// are parked, so each is looked at about once.
const SLACK: u32 = 16;

/// What a lease returns of each task, as the engines' picks do.
const LEASED: &str = "seq, priority, id, job_id, kind, input, attempt, timeout_ms, \
     coalesce(ready_at, created_at) AS ready_at, after_keys, coalesce(vt, seq) AS ord, traceparent";

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn limit_of(row: &Row) -> Result<(String, Limit)> {
    let rate = row.int_opt("rate")?.map(|count| Rate {
        count: count.max(1) as u32,
        per_ms: row.int_opt("per_ms").ok().flatten().unwrap_or(1000).max(1) as u64,
        burst: row.int_opt("burst").ok().flatten().unwrap_or(count).max(1) as u32,
    });
    Ok((
        row.text("key")?,
        Limit {
            concurrency: row.int_opt("concurrency")?.map(|c| c.max(0) as u32),
            rate,
        },
    ))
}

async fn defs<C: Conn>(c: &mut C) -> Result<Vec<(String, Limit)>> {
    c.rows(
        "SELECT key, concurrency, rate, per_ms, burst FROM limits ORDER BY key",
        args![],
    )
    .await?
    .iter()
    .map(limit_of)
    .collect()
}

/// Every key of every running limited task, one entry per task and key.
async fn running_keys<C: Conn>(c: &mut C) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT limits FROM tasks{} WHERE state = {} AND limits IS NOT NULL",
        indexed_by::<C>("tasks_running_limited"),
        lit(TaskState::Running)
    );
    let mut keys = Vec::new();
    for r in c.rows(&sql, args![]).await? {
        let ks: Vec<String> = rows::json_or(r.text_opt("limits")?)?;
        keys.extend(ks);
    }
    Ok(keys)
}

fn usage_of(row: &Row) -> Result<(String, Usage)> {
    let bucket = match (row.int_opt("tokens")?, row.int_opt("refilled_at")?) {
        (Some(milli), Some(at)) => Some(Bucket { milli, at }),
        _ => None,
    };
    Ok((
        row.text("key")?,
        Usage {
            bucket,
            window_at: row.int("window_at")?,
            started: row.int("started")?.max(0) as u32,
        },
    ))
}

/// The stored use of `keys`.
async fn usage<C: Conn>(c: &mut C, keys: &[&str]) -> Result<HashMap<String, Usage>> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(500) {
        let sql = format!(
            "SELECT key, tokens, refilled_at, window_at, started FROM limit_usage WHERE key IN ({})",
            placeholders(chunk.len())
        );
        let args = chunk.iter().map(|k| Value::from(*k)).collect();
        for r in c.rows(&sql, args).await? {
            let (k, u) = usage_of(&r)?;
            out.insert(k, u);
        }
    }
    Ok(out)
}

/// Whether a lease has anything limited to do: queued limited tasks not
/// parked, or a parked key due to be looked at again.
async fn anything<C: Conn>(c: &mut C, now: i64) -> Result<bool> {
    let sql = format!(
        "SELECT 1 AS one FROM tasks{} WHERE state = {} AND limits IS NOT NULL AND parked_on IS NULL \
         UNION ALL SELECT 1 AS one FROM limit_waits WHERE wake_at <= ? LIMIT 1",
        indexed_by::<C>("tasks_limited"),
        lit(TaskState::Queued)
    );
    Ok(!c.rows(&sql, args![now]).await?.is_empty())
}

/// Let go of up to `n` tasks parked on `key`, first in dispatch order; how many.
async fn unpark<C: Conn>(c: &mut C, key: &str, n: u32) -> Result<u64> {
    let sql = format!(
        "UPDATE tasks SET parked_on = NULL WHERE seq IN (SELECT seq FROM tasks{} \
         WHERE state = {} AND parked_on = ? ORDER BY priority DESC, coalesce(vt, seq) LIMIT ?)",
        indexed_by::<C>("tasks_parked"),
        lit(TaskState::Queued)
    );
    c.exec(&sql, args![key, n]).await
}

/// What the limited part of a lease did.
#[derive(Default)]
pub(crate) struct Picked {
    /// Rows as [`Conn::pick`] returns them.
    pub(crate) rows: Vec<Row>,
    /// Some key now waits for a token at a time: the promoter should
    /// recompute its next wake-up.
    pub(crate) timed: bool,
}

/// The keys among `keys` this transaction holds the lock of: on
/// PostgreSQL each concrete key has an advisory lock, taken without waiting
/// (a key another lease holds is that lease's to decide, and is skipped
/// here); SQLite's one writer holds them all.
async fn try_lock<C: Conn>(c: &mut C, keys: &[&str], held: &mut HashSet<String>) -> Result<()> {
    let fresh: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !held.contains(*k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    if C::ENGINE == Engine::Sqlite {
        held.extend(fresh.iter().map(|k| (*k).to_owned()));
        return Ok(());
    }
    for chunk in fresh.chunks(500) {
        let sql = format!(
            "SELECT k AS key, pg_try_advisory_xact_lock({KEY_LOCK_CLASS}, hashtext(k)) AS got \
             FROM (VALUES {}) AS v(k)",
            vec!["(?)"; chunk.len()].join(", ")
        );
        for r in c
            .rows(&sql, chunk.iter().map(|k| Value::from(*k)).collect())
            .await?
        {
            if r.flag("got")? {
                held.insert(r.text("key")?);
            }
        }
    }
    Ok(())
}

/// Wait for the locks of `keys` (PostgreSQL), in one order so that two
/// waiters cannot deadlock.
async fn lock_keys<C: Conn>(c: &mut C, keys: &[&str]) -> Result<()> {
    if C::ENGINE == Engine::Sqlite || keys.is_empty() {
        return Ok(());
    }
    let sorted: BTreeSet<&str> = keys.iter().copied().collect();
    for chunk in sorted.into_iter().collect::<Vec<_>>().chunks(500) {
        let sql = format!(
            "SELECT count(*) AS n FROM (SELECT pg_advisory_xact_lock({KEY_LOCK_CLASS}, hashtext(k)) \
             FROM (VALUES {}) AS v(k)) AS l",
            vec!["(?)"; chunk.len()].join(", ")
        );
        c.rows(&sql, chunk.iter().map(|k| Value::from(*k)).collect())
            .await?;
    }
    Ok(())
}

/// The budget of `keys` as of now: the limits, what runs, their buckets.
/// Read after their locks are held, so what earlier holders leased is seen.
async fn budget_of<C: Conn>(c: &mut C, keys: &[&str], now: i64) -> Result<Budget> {
    let defs = defs(c).await?;
    let running = running_keys(c).await?;
    let known = usage(c, keys).await?;
    Ok(Budget::new(defs, running, known, now))
}

/// Limited candidates a worker may run, in dispatch order, with their keys.
async fn candidates<C: Conn>(c: &mut C, p: &Pick<'_>, cap: u32) -> Result<Vec<(i64, Vec<String>)>> {
    let sql = format!(
        "SELECT seq, limits, requires FROM tasks{} WHERE state = {} AND limits IS NOT NULL \
         AND parked_on IS NULL AND queue IN ({}) AND kind IN ({}) \
         AND queue NOT IN (SELECT name FROM queues WHERE paused) \
         ORDER BY priority DESC, coalesce(vt, seq) LIMIT ?{}",
        indexed_by::<C>("tasks_limited"),
        lit(TaskState::Queued),
        placeholders(p.queues.len()),
        placeholders(p.kinds.len()),
        super::skip_locked::<C>(),
    );
    let mut a: Vec<Value> = p.queues.iter().map(Value::from).collect();
    a.extend(p.kinds.iter().map(Value::from));
    a.push(Value::from(cap));
    let mut out = Vec::new();
    for r in c.rows(&sql, a).await? {
        let requires: BTreeMap<String, String> = rows::json_or(r.text_opt("requires")?)?;
        let offered = requires
            .iter()
            .all(|(k, v)| p.offered.iter().any(|o| *o == format!("{k}={v}")));
        if offered {
            out.push((r.int("seq")?, rows::json_or(r.text_opt("limits")?)?));
        }
    }
    Ok(out)
}

/// Lease limited tasks for a worker: up to `p.max` whose every key has room,
/// in dispatch order.
pub(crate) async fn pick<C: Conn>(c: &mut C, p: &Pick<'_>) -> Result<Picked> {
    if !anything(c, p.now).await? {
        return Ok(Picked::default());
    }
    let mut timed = false;
    let mut held: HashSet<String> = HashSet::new();
    let cap = p.max.saturating_mul(2).saturating_add(SLACK);

    // Due keys first: those with room again let go of as many parked tasks
    // as they have room for.
    let waits: Vec<String> = c
        .rows(
            "SELECT key FROM limit_waits WHERE wake_at <= ? ORDER BY key",
            args![p.now],
        )
        .await?
        .iter()
        .map(|r| r.text("key"))
        .collect::<Result<_>>()?;
    let wait_refs: Vec<&str> = waits.iter().map(String::as_str).collect();
    try_lock(c, &wait_refs, &mut held).await?;
    let mine: Vec<&str> = wait_refs
        .iter()
        .copied()
        .filter(|k| held.contains(*k))
        .collect();
    // The budget read once the locks were held, and the keys held then.
    let mut known: Option<(Budget, usize)> = None;
    if !mine.is_empty() {
        let mut budget = budget_of(c, &mine, c.now_after_wait(p.now)).await?;
        for key in &mine {
            match budget.room(key) {
                Ok(room) => {
                    let want = room.min(cap);
                    if unpark(c, key, want).await? < u64::from(want) {
                        c.exec("DELETE FROM limit_waits WHERE key = ?", args![*key])
                            .await?;
                    } else {
                        // More wait: look again when the ones let go of end.
                        c.exec(
                            "UPDATE limit_waits SET wake_at = NULL WHERE key = ?",
                            args![*key],
                        )
                        .await?;
                    }
                }
                Err(Blocked::Rate(_, at)) => {
                    c.exec(
                        "UPDATE limit_waits SET wake_at = ? WHERE key = ?",
                        args![at, *key],
                    )
                    .await?;
                    timed = true;
                }
                Err(Blocked::Full(_)) => {
                    c.exec(
                        "UPDATE limit_waits SET wake_at = NULL WHERE key = ?",
                        args![*key],
                    )
                    .await?;
                }
            }
        }
        known = Some((budget, held.len()));
    }

    let keyed = candidates(c, p, cap).await?;
    if keyed.is_empty() {
        return Ok(Picked {
            rows: Vec::new(),
            timed,
        });
    }
    let keys: Vec<&str> = keyed
        .iter()
        .flat_map(|(_, ks)| ks.iter().map(String::as_str))
        .collect();
    try_lock(c, &keys, &mut held).await?;
    let mine: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| held.contains(*k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if mine.is_empty() {
        return Ok(Picked {
            rows: Vec::new(),
            timed,
        });
    }
    // Leases and results that read the clock before this one may have
    // committed since: what it starts starts after them.
    let fresh;
    let mut p = p;
    let now = c.now_after_wait(p.now);
    if now != p.now {
        fresh = Pick {
            now,
            expires: p.expires + (now - p.now),
            ..p.clone()
        };
        p = &fresh;
    }
    // No key locked since the budget was read: what runs is as it was read
    // (only this transaction leases for the keys it holds).
    let mut budget = match known {
        Some((mut b, n)) if n == held.len() => {
            let missing: Vec<&str> = mine.iter().copied().filter(|k| !b.knows(k)).collect();
            b.learn(usage(c, &missing).await?);
            b
        }
        _ => budget_of(c, &mine, p.now).await?,
    };

    let mut take: Vec<i64> = Vec::new();
    let mut parked: BTreeMap<String, (Vec<i64>, Option<i64>, bool)> = BTreeMap::new();
    for (seq, keys) in keyed {
        if take.len() as u32 >= p.max {
            break;
        }
        // A key another lease holds is its to decide.
        if !keys.iter().all(|k| held.contains(k)) {
            continue;
        }
        match budget.take(&keys) {
            Ok(()) => take.push(seq),
            Err(blocked) => {
                let e = parked
                    .entry(blocked.key().to_owned())
                    .or_insert((Vec::new(), None, false));
                e.0.push(seq);
                // A key some task waits on for a slot is looked at when one
                // of its tasks ends; else at its first token.
                match blocked.wake_at() {
                    None => e.2 = true,
                    Some(at) => e.1 = Some(e.1.map_or(at, |t: i64| t.min(at))),
                }
            }
        }
    }
    for (key, (seqs, at, full)) in &parked {
        let sql = format!(
            "UPDATE tasks SET parked_on = ? WHERE seq IN ({})",
            placeholders(seqs.len())
        );
        let mut a = args![key.as_str()];
        a.extend(seqs.iter().map(|s| Value::Int(*s)));
        c.exec(&sql, a).await?;
        let wake = if *full { None } else { *at };
        timed |= wake.is_some();
        c.exec(
            "INSERT INTO limit_waits (key, wake_at) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET wake_at = excluded.wake_at",
            args![key.as_str(), wake],
        )
        .await?;
    }
    for (key, u) in budget.changed() {
        c.exec(
            "INSERT INTO limit_usage (key, tokens, refilled_at, window_at, started) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, \
             refilled_at = excluded.refilled_at, window_at = excluded.window_at, \
             started = excluded.started",
            args![
                key,
                u.bucket.map(|b| b.milli),
                u.bucket.map(|b| b.at),
                u.window_at,
                u.started
            ],
        )
        .await?;
    }
    let rows = if take.is_empty() {
        Vec::new()
    } else {
        lease_seqs(c, p, &take).await?
    };
    Ok(Picked { rows, timed })
}

/// Mark the tasks `seqs` (queued) running on `p.worker_id` and start their jobs.
async fn lease_seqs<C: Conn>(c: &mut C, p: &Pick<'_>, seqs: &[i64]) -> Result<Vec<Row>> {
    let sql = format!(
        "UPDATE tasks SET state = {}, attempt = attempt + 1, worker_id = ?, started_at = ?, \
         lease_expires_at = ?, run_at = NULL, finished_at = NULL, parked_on = NULL \
         WHERE state = {} AND seq IN ({}) RETURNING {LEASED}",
        lit(TaskState::Running),
        lit(TaskState::Queued),
        placeholders(seqs.len())
    );
    let mut a = args![p.worker_id, p.now, p.expires];
    a.extend(seqs.iter().map(|s| Value::Int(*s)));
    let mut leased = c.rows(&sql, a).await?;
    let mut jobs: Vec<String> = Vec::new();
    for r in &leased {
        let j = r.text("job_id")?;
        if !jobs.contains(&j) {
            jobs.push(j);
        }
    }
    let sql = format!(
        "UPDATE jobs SET started_at = ?, state = {} WHERE started_at IS NULL AND id IN ({})",
        jlit(JobState::Running),
        placeholders(jobs.len())
    );
    let mut a = args![p.now];
    a.extend(jobs.iter().map(Value::from));
    c.exec(&sql, a).await?;
    sort_leased(&mut leased);
    Ok(leased)
}

/// Put leased rows in dispatch order (RETURNING has none).
pub(crate) fn sort_leased(rows: &mut [Row]) {
    rows.sort_by_cached_key(|r| {
        (
            -r.int("priority").unwrap_or(0),
            r.int("ord").unwrap_or(0),
            r.int("seq").unwrap_or(0),
        )
    });
}

/// Places in the dispatch order (`vt`) of the fair tasks among `tasks`, in
/// order (`None` for a task without a fair key): each fair key's tasks in
/// one queue and priority follow its last queued one, and start no earlier
/// than the head of that queue's fair tasks, so a key that comes late
/// interleaves with the others from the head on rather than waiting behind
/// them.
pub(crate) async fn fair_places<C: Conn>(c: &mut C, tasks: &[NewTask]) -> Result<Vec<Option<i64>>> {
    let mut next: HashMap<(&str, i32, &str), i64> = HashMap::new();
    let mut heads: HashMap<(&str, i32), i64> = HashMap::new();
    let mut tail: Option<i64> = None;
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let Some(fair) = t.fair_key.as_deref() else {
            out.push(None);
            continue;
        };
        let slot = (t.queue.as_str(), t.priority, fair);
        if let Some(v) = next.get_mut(&slot) {
            out.push(Some(*v));
            *v += 1;
            continue;
        }
        let head = match heads.get(&(slot.0, slot.1)) {
            Some(h) => *h,
            None => {
                let sql = format!(
                    "SELECT min(vt) AS v FROM tasks{} WHERE state = {} AND fair_key IS NOT NULL \
                     AND queue = ? AND priority = ?",
                    indexed_by::<C>("tasks_fair"),
                    lit(TaskState::Queued)
                );
                let found = c
                    .rows(&sql, args![slot.0, i64::from(slot.1)])
                    .await?
                    .pop()
                    .map(|r| r.int_opt("v"))
                    .transpose()?
                    .flatten();
                let h = match found {
                    Some(h) => h,
                    // No fair task queued there: start at the end, like
                    // any new task.
                    None => match tail {
                        Some(t) => t,
                        None => {
                            let t = c
                                .rows("SELECT coalesce(max(seq), 0) + 1 AS v FROM tasks", args![])
                                .await?
                                .pop()
                                .map(|r| r.int("v"))
                                .transpose()?
                                .unwrap_or(1);
                            tail = Some(t);
                            t
                        }
                    },
                };
                heads.insert((slot.0, slot.1), h);
                h
            }
        };
        let sql = format!(
            "SELECT max(vt) AS v FROM tasks{} WHERE state = {} AND fair_key IS NOT NULL \
             AND fair_key = ? AND queue = ? AND priority = ?",
            indexed_by::<C>("tasks_fair_key"),
            lit(TaskState::Queued)
        );
        let last = c
            .rows(&sql, args![fair, slot.0, i64::from(slot.1)])
            .await?
            .pop()
            .map(|r| r.int_opt("v"))
            .transpose()?
            .flatten();
        let first = last.map_or(head, |l| (l + 1).max(head));
        out.push(Some(first));
        next.insert(slot, first + 1);
    }
    Ok(out)
}

/// Let go of every task parked on a key `name` covers (a limit was set or
/// removed: its budget is not what they were parked under).
async fn unpark_covered<C: Conn>(c: &mut C, name: &str) -> Result<u64> {
    let (cond, arg) = match name.strip_suffix('*') {
        Some(prefix) => (
            format!("substr(parked_on, 1, {}) = ?", prefix.len()),
            prefix.to_owned(),
        ),
        None => ("parked_on = ?".to_owned(), name.to_owned()),
    };
    let sql = format!(
        "UPDATE tasks SET parked_on = NULL WHERE state = {} AND parked_on IS NOT NULL AND {cond}",
        lit(TaskState::Queued)
    );
    let n = c.exec(&sql, args![arg.as_str()]).await?;
    let sql = format!(
        "DELETE FROM limit_waits WHERE {}",
        cond.replace("parked_on", "key")
    );
    c.exec(&sql, args![arg.as_str()]).await?;
    Ok(n)
}

/// Set (create or replace) the limit `key`; its view.
pub(crate) async fn set<C: Conn>(
    c: &mut C,
    key: &str,
    limit: Limit,
    now: i64,
) -> Result<LimitView> {
    c.exec(
        "INSERT INTO limits (key, concurrency, rate, per_ms, burst, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (key) DO UPDATE SET concurrency = excluded.concurrency, rate = excluded.rate, \
         per_ms = excluded.per_ms, burst = excluded.burst, updated_at = excluded.updated_at",
        args![
            key,
            limit.concurrency,
            limit.rate.map(|r| r.count),
            limit.rate.map(|r| r.per_ms as i64),
            limit.rate.map(|r| r.burst),
            now
        ],
    )
    .await?;
    unpark_covered(c, key).await?;
    let views = views(c, now).await?;
    views
        .into_iter()
        .find(|v| v.key == key)
        .ok_or_else(|| crate::StoreError::Corrupt(format!("limit {key:?} vanished as it was set")))
}

/// Remove the limit `key`; whether it existed.
pub(crate) async fn delete<C: Conn>(c: &mut C, key: &str) -> Result<bool> {
    let gone = c
        .exec("DELETE FROM limits WHERE key = ?", args![key])
        .await?
        > 0;
    if gone {
        unpark_covered(c, key).await?;
    }
    Ok(gone)
}

/// The use of concrete key `k` among `per_key`, added empty if new.
fn use_of(per_key: &mut BTreeMap<String, LimitUsage>, k: String) -> &mut LimitUsage {
    per_key.entry(k.clone()).or_insert_with(|| LimitUsage {
        key: k,
        ..LimitUsage::default()
    })
}

/// Every limit with what its keys use now.
pub(crate) async fn views<C: Conn>(c: &mut C, now: i64) -> Result<Vec<LimitView>> {
    let rows = c
        .rows(
            "SELECT key, concurrency, rate, per_ms, burst, updated_at FROM limits ORDER BY key",
            args![],
        )
        .await?;
    let mut defs = Vec::with_capacity(rows.len());
    let mut updated = Vec::with_capacity(rows.len());
    for r in &rows {
        defs.push(limit_of(r)?);
        updated.push(r.int("updated_at")?);
    }
    let mut per_key: BTreeMap<String, LimitUsage> = BTreeMap::new();
    for k in running_keys(c).await? {
        use_of(&mut per_key, k).running += 1;
    }
    let sql = format!(
        "SELECT parked_on, count(*) AS n FROM tasks{} WHERE state = {} AND parked_on IS NOT NULL \
         GROUP BY parked_on",
        indexed_by::<C>("tasks_parked"),
        lit(TaskState::Queued)
    );
    for r in c.rows(&sql, args![]).await? {
        let k = r.text("parked_on")?;
        use_of(&mut per_key, k).waiting = r.int("n")?.max(0) as u64;
    }
    for r in c
        .rows(
            "SELECT key, tokens, refilled_at, window_at, started FROM limit_usage",
            args![],
        )
        .await?
    {
        let (k, u) = usage_of(&r)?;
        let Some((_, limit)) = resolve(&k, &defs) else {
            continue;
        };
        // Listed even when idle, so its gauges fall back to zero.
        let current = now - u.window_at < limit.window_ms() as i64;
        use_of(&mut per_key, k).started = if current { u64::from(u.started) } else { 0 };
    }
    let mut views: Vec<LimitView> = defs
        .iter()
        .zip(updated)
        .map(|((key, l), at)| LimitView {
            key: key.clone(),
            concurrency: l.concurrency,
            rate: l.rate.map(|r| r.count),
            per_ms: l.rate.map(|r| r.per_ms),
            burst: l.rate.map(|r| r.burst),
            running: 0,
            started: 0,
            waiting: 0,
            keys: Vec::new(),
            updated_at: from_ms(at),
        })
        .collect();
    for (k, u) in per_key {
        let Some((name, _)) = resolve(&k, &defs) else {
            continue;
        };
        if let Some(v) = views.iter_mut().find(|v| v.key == name && covers(name, &k)) {
            v.running += u.running;
            v.started += u.started;
            v.waiting += u.waiting;
            v.keys.push(u);
        }
    }
    Ok(views)
}

/// Tasks of `keys` ended: the waits on them are due, so the next lease
/// lets go of what they held back. On PostgreSQL under the limits lock: a
/// lease that parked a task on one of them either committed first (its
/// wait is seen here) or comes after and sees the end.
pub(crate) async fn ended<C: Conn>(c: &mut C, keys: &[String]) -> Result<()> {
    let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    keys.sort_unstable();
    keys.dedup();
    lock_keys(c, &keys).await?;
    for chunk in keys.chunks(500) {
        let sql = format!(
            "UPDATE limit_waits SET wake_at = 0 WHERE wake_at IS NULL AND key IN ({})",
            placeholders(chunk.len())
        );
        c.exec(&sql, chunk.iter().map(|k| Value::from(*k)).collect())
            .await?;
    }
    Ok(())
}

/// The promoter's part: keys whose rate comes back by `now` are due, and so,
/// as a net under ends no hook saw, is every key waiting for a slot. How
/// many became due, and when the next key's token comes.
pub(crate) async fn due_waits<C: Conn>(c: &mut C, now: i64) -> Result<(u64, Option<i64>)> {
    // 0: due and announced, so the next call does not count it again.
    let n = c
        .exec(
            "UPDATE limit_waits SET wake_at = 0 WHERE wake_at IS NULL OR (wake_at > 0 AND wake_at <= ?)",
            args![now],
        )
        .await?;
    let next = c
        .rows(
            "SELECT min(wake_at) AS t FROM limit_waits WHERE wake_at > 0",
            args![],
        )
        .await?
        .pop()
        .map(|r| r.int_opt("t"))
        .transpose()?
        .flatten();
    Ok((n, next))
}
