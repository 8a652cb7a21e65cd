//! Limits and fairness: budgets per key and pattern, parked tasks that never
//! hold up others, rates on the clock, and round-robin across fair keys.

use std::sync::Arc;

use brigade_core::limits::{Limit, Rate};
use brigade_core::{NewJob, NewTask};
use brigade_store::Store;

use crate::common::{T0, TestResult, ensure, ids_of, join, lease_ids, ok, report, task};

fn concurrency(n: u32) -> Limit {
    Limit {
        concurrency: Some(n),
        rate: None,
    }
}

fn limited(keys: &[&str]) -> NewTask {
    NewTask {
        limits: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..task(1)
    }
}

fn fair(key: &str) -> NewTask {
    NewTask {
        fair_key: Some(key.to_owned()),
        ..task(1)
    }
}

fn job_of(tasks: Vec<NewTask>) -> NewJob {
    NewJob {
        name: Some("flow".into()),
        queue: "default".into(),
        tasks,
        ..NewJob::default()
    }
}

/// Ids of a job's tasks, in submission order.
async fn submit(store: &dyn Store, tasks: Vec<NewTask>, now: i64) -> TestResult<Vec<String>> {
    ids_of(&store.submit("owner", job_of(tasks), None, now).await?)
}

/// A key's limit holds however many ask; the tasks over budget hold up
/// nothing behind them, and one ending lets the next start.
pub async fn concurrency_holds_and_blocks_nobody(store: Arc<dyn Store>) -> TestResult {
    store.set_limit("stripe", concurrency(2), T0).await?;
    let mut tasks: Vec<NewTask> = (0..6).map(|_| limited(&["stripe"])).collect();
    tasks.extend((0..3).map(|_| task(1)));
    let ids = submit(&*store, tasks, T0).await?;
    let w = join(&*store, "w", T0).await?;
    let first = lease_ids(&*store, &w, 20, T0 + 1).await?;
    let limited_got: Vec<&(String, u32)> = first
        .iter()
        .filter(|(id, _)| ids[..6].contains(id))
        .collect();
    ensure(
        limited_got.len() == 2,
        format!("two of the limited tasks start, got {}", limited_got.len()),
    )?;
    ensure(
        first.iter().filter(|(id, _)| ids[6..].contains(id)).count() == 3,
        "every unlimited task behind them starts",
    )?;
    ensure(
        lease_ids(&*store, &w, 20, T0 + 2).await?.is_empty(),
        "nothing more while the key is full",
    )?;
    let view = store.limits(T0 + 2).await?;
    ensure(
        view.len() == 1 && view[0].running == 2 && view[0].waiting == 4,
        format!("the view shows 2 running, 4 waiting: {view:?}"),
    )?;
    let (done, attempt) = limited_got[0].clone();
    report(&*store, &w, vec![ok(&done, attempt)], T0 + 3).await?;
    let next = lease_ids(&*store, &w, 20, T0 + 4).await?;
    ensure(
        next.len() == 1 && ids[..6].contains(&next[0].0),
        format!("one ended, one more starts: {next:?}"),
    )?;
    ensure(
        store.delete_limit("stripe").await? && !store.delete_limit("stripe").await?,
        "a limit is deleted once",
    )?;
    let rest = lease_ids(&*store, &w, 20, T0 + 5).await?;
    ensure(
        rest.len() == 3,
        format!("without the limit the rest start: {}", rest.len()),
    )?;
    Ok(())
}

/// Every concrete key a pattern matches has a budget of its own; a task of
/// two keys starts only when both have room.
pub async fn patterns_give_each_key_its_own_budget(store: Arc<dyn Store>) -> TestResult {
    store.set_limit("tenant:*", concurrency(1), T0).await?;
    let ids = submit(
        &*store,
        vec![
            limited(&["tenant:1"]),
            limited(&["tenant:1"]),
            limited(&["tenant:2"]),
            limited(&["tenant:2", "tenant:1"]),
        ],
        T0,
    )
    .await?;
    let w = join(&*store, "w", T0).await?;
    let got = lease_ids(&*store, &w, 10, T0 + 1).await?;
    let mut started: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    started.sort_unstable();
    let mut want = vec![ids[0].as_str(), ids[2].as_str()];
    want.sort_unstable();
    ensure(started == want, format!("one per tenant: {started:?}"))?;
    let view = store.limits(T0 + 1).await?;
    let keys: Vec<(&str, u64, u64)> = view[0]
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.running, k.waiting))
        .collect();
    ensure(
        view[0].key == "tenant:*" && view[0].running == 2,
        format!("the pattern sums its keys: {view:?}"),
    )?;
    ensure(
        keys.iter().any(|k| k.0 == "tenant:1" && k.1 == 1)
            && keys.iter().any(|k| k.0 == "tenant:2" && k.1 == 1),
        format!("each key shows its own use: {keys:?}"),
    )?;
    // tenant:2 frees up; the two-key task still waits for tenant:1.
    let t2 = got.iter().find(|(id, _)| *id == ids[2]).cloned();
    if let Some((id, a)) = t2 {
        report(&*store, &w, vec![ok(&id, a)], T0 + 2).await?;
    }
    ensure(
        lease_ids(&*store, &w, 10, T0 + 3).await?.is_empty(),
        "a task of two keys waits for both",
    )?;
    let t1 = got.iter().find(|(id, _)| *id == ids[0]).cloned();
    if let Some((id, a)) = t1 {
        report(&*store, &w, vec![ok(&id, a)], T0 + 4).await?;
    }
    let next = lease_ids(&*store, &w, 10, T0 + 5).await?;
    ensure(
        next.len() == 1 && (next[0].0 == ids[1] || next[0].0 == ids[3]),
        format!("tenant:1 frees one slot: {next:?}"),
    )?;
    Ok(())
}

/// A rate lets `burst` start at once, then one per token; the promoter is
/// told when the next token comes.
pub async fn a_rate_spaces_starts_on_the_clock(store: Arc<dyn Store>) -> TestResult {
    store
        .set_limit(
            "api",
            Limit {
                concurrency: None,
                rate: Some(Rate {
                    count: 2,
                    per_ms: 1000,
                    burst: 2,
                }),
            },
            T0,
        )
        .await?;
    submit(&*store, (0..6).map(|_| limited(&["api"])).collect(), T0).await?;
    let w = join(&*store, "w", T0).await?;
    ensure(
        lease_ids(&*store, &w, 10, T0).await?.len() == 2,
        "a full bucket lets its burst start",
    )?;
    ensure(
        lease_ids(&*store, &w, 10, T0 + 100).await?.is_empty(),
        "then nothing until a token comes",
    )?;
    let (_, next) = store.promote_due(T0 + 100).await?;
    ensure(
        next == Some(T0 + 500),
        format!("the promoter wakes at the next token: {next:?}"),
    )?;
    let (woken, _) = store.promote_due(T0 + 500).await?;
    ensure(woken >= 1, "the key is due at its token")?;
    ensure(
        lease_ids(&*store, &w, 10, T0 + 500).await?.len() == 1,
        "one token, one start",
    )?;
    store.promote_due(T0 + 1000).await?;
    ensure(
        lease_ids(&*store, &w, 10, T0 + 1000).await?.len() == 1,
        "and the next at the next token",
    )?;
    let view = store.limits(T0 + 1000).await?;
    ensure(
        view[0].started >= 1 && view[0].waiting >= 1,
        format!("the view counts starts and waiting: {view:?}"),
    )?;
    Ok(())
}

/// A fair key that comes late is served alternately with the one that
/// queued first, not behind all of it.
pub async fn fair_keys_take_turns(store: Arc<dyn Store>) -> TestResult {
    let a = submit(&*store, (0..50).map(|_| fair("tenant:a")).collect(), T0).await?;
    let b = submit(&*store, (0..3).map(|_| fair("tenant:b")).collect(), T0 + 1).await?;
    let w = join(&*store, "w", T0).await?;
    let got = lease_ids(&*store, &w, 6, T0 + 2).await?;
    let of_b = got.iter().filter(|(id, _)| b.contains(id)).count();
    let of_a = got.iter().filter(|(id, _)| a.contains(id)).count();
    ensure(
        of_b == 3 && of_a == 3,
        format!("3 of each in the first 6: a {of_a}, b {of_b}"),
    )?;
    ensure(
        got.iter()
            .filter(|(id, _)| a.contains(id))
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            == a[..3].iter().map(String::as_str).collect::<Vec<_>>(),
        "each key's tasks keep their order",
    )?;
    let view = store.task(&b[0]).await?;
    ensure(
        view.is_some_and(|t| t.fair_key.as_deref() == Some("tenant:b")),
        "the task view shows its fair key",
    )?;
    Ok(())
}
