//! Task logs: storing and reading them back, who may write them, and the
//! per-attempt budget.

use std::sync::Arc;

use brigade_api::logs::{MAX_LOG_BYTES_PER_ATTEMPT, MAX_LOG_LINE_BYTES, TRUNCATED};
use brigade_api::{LogBatch, RejectionCode};
use brigade_core::from_ms;
use brigade_store::Store;

use crate::common::{
    LATER, T0, TestResult, codes, ensure, failed, ids_of, job, join, lease_ids, ok, report,
};

fn batch(task_id: &str, attempt: u32, lines: &[&str]) -> LogBatch {
    LogBatch {
        task_id: task_id.into(),
        attempt,
        lines: lines.iter().map(|l| (*l).to_owned()).collect(),
    }
}

async fn append(
    store: &dyn Store,
    worker: &str,
    batches: Vec<LogBatch>,
    now: i64,
) -> TestResult<brigade_api::LogsReply> {
    Ok(store
        .append_logs(worker, batches, now)
        .await?
        .ok_or("append_logs: worker unknown")?)
}

/// The text of a task's log lines, oldest first.
async fn lines(store: &dyn Store, task_id: &str) -> TestResult<Vec<(u32, String)>> {
    Ok(store
        .task_logs(task_id, None, 10_000)
        .await?
        .into_iter()
        .map(|(_, l)| (l.attempt, l.line))
        .collect())
}

/// Lines come back in the order written, per task, with their attempt and
/// arrival time; the position of a line is a cursor for the lines after it.
pub async fn logs_round_trip(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b) = (&ids[0], &ids[1]);
    let w = join(store, "w", T0).await?;
    lease_ids(store, &w, 2, T0).await?;
    ensure(
        store.task_logs(a, None, 10).await?.is_empty(),
        "no lines yet",
    )?;
    let reply = append(
        store,
        &w,
        vec![batch(a, 1, &["one", "two"]), batch(b, 1, &["b: one"])],
        T0 + 1,
    )
    .await?;
    ensure(
        reply.accepted == ids && reply.rejected.is_empty(),
        format!("{reply:?}"),
    )?;
    append(store, &w, vec![batch(a, 1, &["three", ""])], T0 + 2).await?;

    let got = store.task_logs(a, None, 100).await?;
    let text: Vec<&str> = got.iter().map(|(_, l)| l.line.as_str()).collect();
    ensure(
        text == ["one", "two", "three", ""],
        format!("lines {text:?}"),
    )?;
    ensure(
        got.iter().all(|(_, l)| l.attempt == 1),
        "all from attempt 1",
    )?;
    let at: Vec<_> = got.iter().map(|(_, l)| l.at).collect();
    ensure(
        at == [
            from_ms(T0 + 1),
            from_ms(T0 + 1),
            from_ms(T0 + 2),
            from_ms(T0 + 2),
        ],
        format!("arrival times {at:?}"),
    )?;
    ensure(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "positions increase",
    )?;
    ensure(
        lines(store, b).await? == [(1, "b: one".to_owned())],
        "another task's lines are its own",
    )?;

    // Paging by position.
    let first = store.task_logs(a, None, 1).await?;
    ensure(
        first.len() == 1 && first[0].1.line == "one",
        "the first page",
    )?;
    let next = store.task_logs(a, Some(first[0].0), 2).await?;
    let text: Vec<&str> = next.iter().map(|(_, l)| l.line.as_str()).collect();
    ensure(
        text == ["two", "three"],
        format!("after the first: {text:?}"),
    )?;
    let last = got.last().ok_or("a last line")?.0;
    ensure(
        store.task_logs(a, Some(last), 10).await?.is_empty(),
        "nothing after the last",
    )?;
    ensure(
        store.task_logs("nope", None, 10).await?.is_empty(),
        "an unknown task has no lines",
    )?;

    // The next attempt's lines follow, marked with their attempt.
    report(store, &w, vec![failed(a, 1, true)], T0 + 3).await?;
    store.promote_due(LATER).await?;
    ensure(
        lease_ids(store, &w, 1, LATER).await? == [(a.clone(), 2)],
        "second attempt",
    )?;
    append(store, &w, vec![batch(a, 2, &["again"])], LATER + 1).await?;
    let got = lines(store, a).await?;
    ensure(
        got.len() == 5 && got[4] == (2, "again".to_owned()),
        format!("lines {got:?}"),
    )?;
    ensure(
        store
            .append_logs("ghost", vec![batch(a, 2, &["x"])], LATER)
            .await?
            .is_none(),
        "unknown worker",
    )?;
    Ok(())
}

/// Log batches are refused like results: unknown task, stale attempt,
/// another worker's task, a task no longer running; nothing of them is stored.
pub async fn logs_rejection_codes(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(3, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b, queued) = (&ids[0], &ids[1], &ids[2]);
    let w1 = join(store, "w1", T0).await?;
    let w2 = join(store, "w2", T0).await?;
    ensure(
        lease_ids(store, &w1, 1, T0).await? == [(a.clone(), 1)],
        "w1 runs a",
    )?;
    ensure(
        lease_ids(store, &w2, 1, T0).await? == [(b.clone(), 1)],
        "w2 runs b",
    )?;

    let reply = append(
        store,
        &w1,
        vec![
            batch("nope", 1, &["x"]),
            batch(b, 1, &["x"]),
            batch(a, 2, &["x"]),
            batch(queued, 1, &["x"]),
            batch(a, 1, &["mine"]),
        ],
        T0 + 1,
    )
    .await?;
    ensure(reply.accepted == [a.clone()], format!("accepted {reply:?}"))?;
    ensure(
        codes(&reply.rejected)
            == [
                ("nope".into(), RejectionCode::UnknownTask),
                (b.clone(), RejectionCode::NotLeasedToWorker),
                (a.clone(), RejectionCode::StaleAttempt),
                (queued.clone(), RejectionCode::StaleAttempt),
            ],
        format!("rejected {:?}", reply.rejected),
    )?;
    ensure(
        reply.rejected[2].reason == "stale attempt: the task is on attempt 1",
        format!("reason {:?}", reply.rejected[2].reason),
    )?;
    ensure(
        lines(store, b).await?.is_empty() && lines(store, queued).await?.is_empty(),
        "refused lines are not stored",
    )?;
    ensure(
        lines(store, a).await? == [(1, "mine".to_owned())],
        "only the accepted batch is stored",
    )?;

    // Once the task ended, its worker's late lines are refused.
    report(store, &w1, vec![ok(a, 1)], T0 + 2).await?;
    let reply = append(store, &w1, vec![batch(a, 1, &["late"])], T0 + 3).await?;
    ensure(
        reply.accepted.is_empty()
            && codes(&reply.rejected) == [(a.clone(), RejectionCode::NotRunning)],
        format!("after the end: {reply:?}"),
    )?;
    ensure(
        reply.rejected[0].reason == "the task is succeeded",
        format!("reason {:?}", reply.rejected[0].reason),
    )?;
    ensure(lines(store, a).await?.len() == 1, "late lines not stored")?;
    Ok(())
}

/// An attempt keeps at most the budget of log bytes, then one `[truncated]`
/// line and nothing more; long lines are cut (on a character boundary); the
/// next attempt starts with a fresh budget.
pub async fn logs_truncated_at_the_attempt_budget(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b) = (&ids[0], &ids[1]);
    let w = join(store, "w", T0).await?;
    lease_ids(store, &w, 2, T0).await?;

    let line = "x".repeat(1000);
    let fit = MAX_LOG_BYTES_PER_ATTEMPT / 1000;
    let first: Vec<&str> = vec![line.as_str(); fit - 5];
    append(store, &w, vec![batch(a, 1, &first)], T0 + 1).await?;
    ensure(
        lines(store, a).await?.len() == fit - 5,
        "under the budget: all kept",
    )?;
    let second: Vec<&str> = vec![line.as_str(); 10];
    let reply = append(store, &w, vec![batch(a, 1, &second)], T0 + 2).await?;
    ensure(
        reply.rejected.is_empty(),
        format!("a batch over the budget is not an error: {reply:?}"),
    )?;
    let got = lines(store, a).await?;
    ensure(
        got.len() == fit + 1,
        format!("{} lines kept, want {} and the mark", got.len(), fit),
    )?;
    ensure(
        got.last().map(|(_, l)| l.as_str()) == Some(TRUNCATED),
        "the last line marks the cut",
    )?;
    let kept: usize = got
        .iter()
        .filter(|(_, l)| l != TRUNCATED)
        .map(|(_, l)| l.len())
        .sum();
    ensure(
        kept <= MAX_LOG_BYTES_PER_ATTEMPT,
        format!("{kept} bytes kept"),
    )?;
    // Once cut, nothing more for this attempt, even a short line.
    append(store, &w, vec![batch(a, 1, &["short"])], T0 + 3).await?;
    let after = lines(store, a).await?;
    ensure(
        after.len() == got.len(),
        format!("{} lines after the cut", after.len() - got.len()),
    )?;
    ensure(
        after.iter().filter(|(_, l)| l == TRUNCATED).count() == 1,
        "one mark",
    )?;

    // The budget is per task attempt: b is untouched by a's.
    let long = "é".repeat(MAX_LOG_LINE_BYTES);
    append(store, &w, vec![batch(b, 1, &[&long, "next"])], T0 + 4).await?;
    let got = lines(store, b).await?;
    ensure(got.len() == 2, format!("b kept {} lines", got.len()))?;
    ensure(
        got[0].1.len() <= MAX_LOG_LINE_BYTES
            && got[0].1.len() > MAX_LOG_LINE_BYTES - 2
            && got[0].1.chars().all(|c| c == 'é'),
        format!("a long line is cut to {} bytes", got[0].1.len()),
    )?;
    ensure(got[1].1 == "next", "the line after a cut one is kept")?;

    // A new attempt of a starts with a fresh budget.
    report(store, &w, vec![failed(a, 1, true)], T0 + 5).await?;
    store.promote_due(LATER).await?;
    ensure(
        lease_ids(store, &w, 1, LATER).await? == [(a.clone(), 2)],
        "second attempt",
    )?;
    append(store, &w, vec![batch(a, 2, &["fresh"])], LATER + 1).await?;
    let got = lines(store, a).await?;
    ensure(
        got.last() == Some(&(2, "fresh".to_owned())),
        format!("last line {:?}", got.last()),
    )?;
    Ok(())
}
