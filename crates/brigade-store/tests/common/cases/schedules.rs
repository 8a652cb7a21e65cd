//! Schedules: stored, revised, fired exactly once per fire.

use std::sync::Arc;

use brigade_api::{CatchUp, JobState, JobSubmit, Overlap, ScheduleCreate, TaskSpec};
use brigade_core::Limits;
use brigade_core::schedule::{NewSchedule, validate_schedule};
use brigade_store::{JobFilter, Store, TriggerOutcome};

use crate::common::{T0, TestResult, ensure, join, lease_ids, ok, report};

fn every(ms: u64, overlap: Overlap, catch_up: CatchUp) -> TestResult<NewSchedule> {
    let mut s = ScheduleCreate::every(
        ms,
        JobSubmit::new(vec![TaskSpec::new("echo", serde_json::json!({"n": 1}))]).named("tick"),
    );
    s.name = Some("ticker".into());
    s.overlap = Some(overlap);
    s.catch_up = Some(catch_up);
    validate_schedule(s, &Limits::default(), T0).map_err(|e| format!("{e:?}").into())
}

/// The `(job id, fire_at ms)` of a schedule's jobs, oldest first.
async fn jobs_of(store: &dyn Store, schedule: &str) -> TestResult<Vec<(String, i64)>> {
    let filter = JobFilter {
        schedule_id: Some(schedule.to_owned()),
        ..JobFilter::default()
    };
    let page = store.jobs(&filter, 1000, None).await?;
    let mut out = Vec::new();
    for j in page.items.into_iter().rev() {
        let at = j.fire_at.ok_or("a schedule's job without fire_at")?;
        ensure(
            j.schedule_id.as_deref() == Some(schedule),
            "job carries its schedule",
        )?;
        out.push((j.id, brigade_core::to_ms(at)));
    }
    Ok(out)
}

/// Several duty passes at once over `stores` (one store: concurrent calls on
/// it; several: several servers on one database) create one job per fire.
pub async fn fire_once(stores: Vec<Arc<dyn Store>>) -> TestResult {
    let first = stores.first().ok_or("a store")?.clone();
    let s = first
        .create_schedule("owner", every(1000, Overlap::Allow, CatchUp::All)?, T0)
        .await?;
    let mut fired_events = 0;
    // Ten fires, eight duty passes racing for each.
    for k in 1..=10i64 {
        let now = T0 + k * 1000;
        let mut handles = Vec::new();
        for i in 0..8 {
            let store = stores[i % stores.len()].clone();
            handles.push(tokio::spawn(async move {
                store.fire_schedules(Limits::default(), now).await
            }));
        }
        for h in handles {
            let (changes, next) = h.await??;
            fired_events += changes
                .events
                .iter()
                .filter(|e| e.kind == "schedule.fired")
                .count();
            ensure(next == Some(now + 1000), format!("next due {next:?}"))?;
        }
    }
    let jobs = jobs_of(&*first, &s.id).await?;
    let fires: Vec<i64> = jobs.iter().map(|(_, at)| *at).collect();
    let want: Vec<i64> = (1..=10).map(|k| T0 + k * 1000).collect();
    ensure(fires == want, format!("fires {fires:?}"))?;
    ensure(
        fired_events == 10,
        format!("{fired_events} schedule.fired events"),
    )?;
    let view = first.schedule(&s.id).await?.ok_or("schedule")?.view;
    ensure(
        view.last_job_id.as_deref() == jobs.last().map(|(id, _)| id.as_str()),
        "last_job_id is the newest job",
    )?;
    Ok(())
}

pub async fn schedule_fires_once_under_concurrent_duty_calls(store: Arc<dyn Store>) -> TestResult {
    fire_once(vec![store]).await
}

pub async fn schedule_catch_up_policies(store: Arc<dyn Store>) -> TestResult {
    // Down from T0 + 1 s to T0 + 5.5 s.
    let now = T0 + 5500;
    let mut made = Vec::new();
    for catch_up in [CatchUp::All, CatchUp::One, CatchUp::None] {
        let s = store
            .create_schedule("owner", every(1000, Overlap::Allow, catch_up)?, T0)
            .await?;
        made.push((catch_up, s.id));
    }
    let (changes, _) = store.fire_schedules(Limits::default(), now).await?;
    for (catch_up, id) in &made {
        let fires: Vec<i64> = jobs_of(&*store, id)
            .await?
            .into_iter()
            .map(|j| j.1)
            .collect();
        let want: Vec<i64> = match catch_up {
            CatchUp::All => (1..=5).map(|k| T0 + k * 1000).collect(),
            _ => vec![T0 + 5000],
        };
        ensure(fires == want, format!("{catch_up:?}: fires {fires:?}"))?;
        let skipped: u64 = changes
            .events
            .iter()
            .filter(|e| e.kind == "schedule.skipped" && e.schedule_id.as_ref() == Some(id))
            .filter_map(|e| e.count)
            .sum();
        let want_skipped = if *catch_up == CatchUp::All { 0 } else { 4 };
        ensure(
            skipped == want_skipped,
            format!("{catch_up:?}: {skipped} skipped"),
        )?;
        let view = store.schedule(id).await?.ok_or("schedule")?.view;
        ensure(
            view.next_fire_at.map(brigade_core::to_ms) == Some(T0 + 6000),
            format!("{catch_up:?}: next {:?}", view.next_fire_at),
        )?;
    }
    Ok(())
}

pub async fn schedule_overlap_policies(store: Arc<dyn Store>) -> TestResult {
    let skip = store
        .create_schedule("owner", every(1000, Overlap::Skip, CatchUp::One)?, T0)
        .await?;
    let cancel = store
        .create_schedule(
            "owner",
            every(1000, Overlap::CancelPrevious, CatchUp::One)?,
            T0,
        )
        .await?;
    store.fire_schedules(Limits::default(), T0 + 1000).await?;
    // The first jobs are unfinished at the second fire.
    let (changes, _) = store.fire_schedules(Limits::default(), T0 + 2000).await?;
    let skip_jobs = jobs_of(&*store, &skip.id).await?;
    ensure(
        skip_jobs.len() == 1,
        format!("skip made {} jobs", skip_jobs.len()),
    )?;
    ensure(
        changes.events.iter().any(|e| {
            e.kind == "schedule.skipped"
                && e.schedule_id.as_deref() == Some(skip.id.as_str())
                && e.reason.as_deref() == Some("overlap")
        }),
        "schedule.skipped for the overlap",
    )?;
    let cancel_jobs = jobs_of(&*store, &cancel.id).await?;
    ensure(cancel_jobs.len() == 2, "cancel_previous made two jobs")?;
    let first = store.job(&cancel_jobs[0].0).await?.ok_or("job")?;
    ensure(
        first.state == JobState::Cancelled,
        format!("previous job is {:?}", first.state),
    )?;
    // Once the skipped schedule's job is done, the next fire creates one.
    let worker = join(&*store, "w", T0).await?;
    let leased = lease_ids(&*store, &worker, 10, T0 + 2100).await?;
    let results = leased.iter().map(|(id, a)| ok(id, *a)).collect();
    report(&*store, &worker, results, T0 + 2200).await?;
    let done = store.job(&skip_jobs[0].0).await?.ok_or("job")?;
    ensure(done.state == JobState::Succeeded, "first job finished")?;
    store.fire_schedules(Limits::default(), T0 + 3000).await?;
    ensure(
        jobs_of(&*store, &skip.id).await?.len() == 2,
        "a fire after the job finished creates one",
    )?;
    Ok(())
}

pub async fn schedule_pause_trigger_and_delete(store: Arc<dyn Store>) -> TestResult {
    let created = store
        .create_schedule("alice", every(1000, Overlap::Skip, CatchUp::One)?, T0)
        .await?;
    let id = created.id.clone();
    ensure(
        created.next_fire_at.map(brigade_core::to_ms) == Some(T0 + 1000),
        "first fire one interval after creation",
    )?;
    store
        .create_schedule("bob", every(5000, Overlap::Allow, CatchUp::One)?, T0)
        .await?;
    let mine = store.schedules(Some("alice"), 100, None).await?;
    ensure(
        mine.items.len() == 1 && mine.items[0].id == id,
        "alice sees hers",
    )?;
    ensure(
        store.schedules(None, 100, None).await?.items.len() == 2,
        "admin sees all",
    )?;
    // Pause: nothing fires.
    let stored = store.schedule(&id).await?.ok_or("schedule")?;
    ensure(stored.owner == "alice", "owner")?;
    let mut paused = every(1000, Overlap::Skip, CatchUp::One)?;
    paused.paused = true;
    paused.next_fire_at = None;
    let view = store
        .replace_schedule(&id, paused.clone(), stored.next_fire_at)
        .await?
        .ok_or("replaced")?;
    ensure(view.paused && view.next_fire_at.is_none(), "paused")?;
    // A stale read (next_fire_at moved since) is refused.
    ensure(
        store
            .replace_schedule(&id, paused, Some(T0 + 1000))
            .await?
            .is_none(),
        "stale replace refused",
    )?;
    store.fire_schedules(Limits::default(), T0 + 10_000).await?;
    ensure(
        jobs_of(&*store, &id).await?.is_empty(),
        "paused fires nothing",
    )?;
    // Trigger: a job now, then `skip` refuses a second while it runs.
    let TriggerOutcome::Fired(job, changes) = store
        .trigger_schedule(&id, Limits::default(), T0 + 11_000)
        .await?
    else {
        return Err("trigger fired nothing".into());
    };
    ensure(
        job.schedule_id.as_deref() == Some(id.as_str())
            && job.fire_at.map(brigade_core::to_ms) == Some(T0 + 11_000),
        "triggered job carries its schedule",
    )?;
    ensure(
        changes.ready && changes.events.iter().any(|e| e.kind == "schedule.fired"),
        "trigger wakes workers and says fired",
    )?;
    let again = store
        .trigger_schedule(&id, Limits::default(), T0 + 11_001)
        .await?;
    ensure(
        matches!(&again, TriggerOutcome::Overlap(prev) if *prev == job.id),
        format!("second trigger: {again:?}"),
    )?;
    ensure(
        matches!(
            store
                .trigger_schedule("nope", Limits::default(), T0)
                .await?,
            TriggerOutcome::NotFound
        ),
        "unknown schedule",
    )?;
    ensure(store.delete_schedule(&id).await?, "deleted")?;
    ensure(!store.delete_schedule(&id).await?, "deleted once")?;
    ensure(store.schedule(&id).await?.is_none(), "gone")?;
    ensure(store.job(&job.id).await?.is_some(), "its jobs stay")?;
    Ok(())
}
