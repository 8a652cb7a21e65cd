//! Schedules end to end: the real binary fires them on its clock, one job per
//! fire, across restarts and (on PostgreSQL) across two servers, one of them
//! SIGKILLed mid-run.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brigade_api::{
    CatchUp, JobSubmit, JobView, Overlap, ScheduleCreate, ScheduleView, TaskSpec, TaskState,
};
use brigade_client::Client;
use futures::StreamExt;
use serde_json::{Value, json};

use brigade_testkit::pg::TestDatabase;
use brigade_testkit::{Cluster, bin, task};

fn every(ms: u64, overlap: Overlap, catch_up: CatchUp, job: JobSubmit) -> ScheduleCreate {
    let mut s = ScheduleCreate::every(ms, job);
    s.name = Some(format!("every-{ms}"));
    s.overlap = Some(overlap);
    s.catch_up = Some(catch_up);
    s
}

fn noop_job() -> JobSubmit {
    JobSubmit::new(vec![TaskSpec::new("noop", Value::Null)]).named("tick")
}

fn ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The schedule's jobs, oldest fire first, each checked to carry the schedule.
async fn jobs_of(client: &Client, id: &str) -> Vec<JobView> {
    let mut jobs = client.schedule_jobs(id).await.unwrap();
    for j in &jobs {
        assert_eq!(
            j.schedule_id.as_deref(),
            Some(id),
            "job {} names its schedule",
            j.id
        );
        assert!(j.fire_at.is_some(), "job {} has fire_at", j.id);
    }
    jobs.sort_by_key(|j| j.fire_at);
    jobs
}

fn fire_times(jobs: &[JobView]) -> Vec<i64> {
    jobs.iter().map(|j| ms(j.fire_at.unwrap())).collect()
}

/// Every fire from the first on is there once: consecutive fire times are
/// exactly `every` apart (a double would be 0 apart, a gap 2×).
fn assert_one_job_per_fire(fires: &[i64], every: i64, first: i64) {
    assert_eq!(
        fires.first(),
        Some(&first),
        "first fire is one interval after creation"
    );
    for w in fires.windows(2) {
        assert_eq!(
            w[1] - w[0],
            every,
            "consecutive fires {} and {} (all: {fires:?})",
            w[0],
            w[1]
        );
    }
}

/// Collects the text of a server's live event stream in the background.
struct Events(Arc<Mutex<String>>);

impl Events {
    async fn of(url: &str) -> Self {
        let res = reqwest::get(format!("{url}/v1/events")).await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let seen = Arc::new(Mutex::new(String::new()));
        let out = seen.clone();
        tokio::spawn(async move {
            let mut body = res.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        Events(seen)
    }

    /// The `data:` documents of events of `kind` about schedule `id`.
    fn of_kind(&self, kind: &str, id: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .filter(|e| e["type"] == kind && e["schedule_id"] == id)
            .collect()
    }
}

#[tokio::test]
async fn an_every_ms_schedule_creates_one_job_per_fire() {
    let c = Cluster::start().await;
    let events = Events::of(&c.url).await;
    let s = c
        .client
        .create_schedule(&every(500, Overlap::Allow, CatchUp::All, noop_job()))
        .await
        .unwrap();
    assert_eq!(
        s.next_fire_at.map(ms),
        Some(ms(s.created_at) + 500),
        "first fire one interval after creation"
    );
    // About ten seconds of fires.
    c.until("20 fires", || async {
        (c.client.schedule_jobs(&s.id).await.ok()?.len() >= 20).then_some(())
    })
    .await;
    let paused = c.client.pause_schedule(&s.id).await.unwrap();
    assert!(paused.paused && paused.next_fire_at.is_none());
    let jobs = jobs_of(&c.client, &s.id).await;
    assert_one_job_per_fire(&fire_times(&jobs), 500, ms(s.created_at) + 500);
    // The schedule points at its latest job.
    let view = c.client.schedule(&s.id).await.unwrap();
    assert_eq!(
        view.last_job_id.as_deref(),
        Some(jobs.last().unwrap().id.as_str())
    );
    assert_eq!(view.last_fire_at, jobs.last().unwrap().fire_at);
    // Each fire was announced once, naming its job.
    let fired = c
        .until("an event per fire", || async {
            let fired = events.of_kind("schedule.fired", &s.id);
            (fired.len() >= jobs.len()).then_some(fired)
        })
        .await;
    let mut announced: Vec<&str> = fired
        .iter()
        .map(|e| e["job_id"].as_str().unwrap())
        .collect();
    announced.sort();
    let mut ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    ids.sort();
    assert_eq!(announced, ids, "one schedule.fired per job");
}

/// Two servers on one PostgreSQL database both run the scheduler; one is
/// SIGKILLed mid-run. Every fire still makes exactly one job.
#[tokio::test]
async fn two_postgres_servers_fire_each_fire_once_while_one_is_killed() {
    let Some(pg) = TestDatabase::create().await.unwrap() else {
        return;
    };
    let mut c = Cluster::start_on(tempfile::tempdir().unwrap(), pg.url.clone(), &[]).await;
    let b = c.spawn_peer_server("server-b").await;
    let through_b = Client::new(&b, None).unwrap();
    let events_b = Events::of(&b).await;
    let s = c
        .client
        .create_schedule(&every(500, Overlap::Allow, CatchUp::All, noop_job()))
        .await
        .unwrap();
    c.until("some fires with both servers up", || async {
        (through_b.schedule_jobs(&s.id).await.ok()?.len() >= 8).then_some(())
    })
    .await;
    c.kill_server(); // A dies, SIGKILL, possibly mid-fire
    let before_kill = through_b.schedule_jobs(&s.id).await.unwrap().len();
    c.until("fires through B alone", || async {
        (through_b.schedule_jobs(&s.id).await.ok()?.len() >= before_kill.max(8) + 10).then_some(())
    })
    .await;
    through_b.pause_schedule(&s.id).await.unwrap();
    let jobs = jobs_of(&through_b, &s.id).await;
    assert!(jobs.len() >= 18);
    assert_one_job_per_fire(&fire_times(&jobs), 500, ms(s.created_at) + 500);
    // B announced the fires it made itself and those A made while it lived
    // (forwarded through the database): never one job twice.
    let fired = events_b.of_kind("schedule.fired", &s.id);
    let mut seen = std::collections::BTreeSet::new();
    for e in &fired {
        assert!(
            seen.insert(e["job_id"].as_str().unwrap().to_owned()),
            "{e} announced twice"
        );
    }
    drop(c);
    drop(pg);
}

#[tokio::test]
async fn missed_fires_are_caught_up_after_downtime_as_catch_up_says() {
    let mut c = Cluster::start().await;
    let mut ids = BTreeMap::new();
    for catch_up in [CatchUp::One, CatchUp::All] {
        let s = c
            .client
            .create_schedule(&every(1000, Overlap::Allow, catch_up, noop_job()))
            .await
            .unwrap();
        ids.insert(catch_up.as_str(), s);
    }
    for s in ids.values() {
        c.until("a fire before the downtime", || async {
            (!c.client.schedule_jobs(&s.id).await.ok()?.is_empty()).then_some(())
        })
        .await;
    }
    c.kill_server();
    // Several fires are missed while no server runs.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let down_until = ms(time::OffsetDateTime::now_utc());
    c.start_server().await;
    for s in ids.values() {
        c.until("a fire after the downtime", || async {
            let jobs = jobs_of(&c.client, &s.id).await;
            fire_times(&jobs)
                .iter()
                .any(|f| *f >= down_until - 1000)
                .then_some(())
        })
        .await;
    }
    for s in ids.values() {
        c.client.pause_schedule(&s.id).await.unwrap();
    }
    // `all`: a job for every missed fire, no gap.
    let all = &ids["all"];
    let fires = fire_times(&jobs_of(&c.client, &all.id).await);
    assert_one_job_per_fire(&fires, 1000, ms(all.created_at) + 1000);
    assert!(
        fires.iter().any(|f| *f >= down_until - 1000),
        "fired up to after the restart: {fires:?}"
    );
    // `one`: the missed fires fold into one job (the latest of them): one gap
    // of several intervals across the downtime, every other step one interval.
    let one = &ids["one"];
    let fires = fire_times(&jobs_of(&c.client, &one.id).await);
    assert_eq!(fires.first(), Some(&(ms(one.created_at) + 1000)));
    let steps: Vec<i64> = fires.windows(2).map(|w| w[1] - w[0]).collect();
    let long: Vec<&i64> = steps.iter().filter(|d| **d != 1000).collect();
    assert_eq!(long.len(), 1, "one fold across the downtime: {fires:?}");
    assert!(
        *long[0] >= 3000 && *long[0] % 1000 == 0,
        "the fold stands for the missed fires: {fires:?}"
    );
}

#[tokio::test]
async fn overlap_skip_creates_nothing_while_the_previous_job_runs() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let events = Events::of(&c.url).await;
    let job = JobSubmit::new(vec![task("sleep", json!({"ms": 1000}))]).named("slow");
    let s = c
        .client
        .create_schedule(&every(200, Overlap::Skip, CatchUp::One, job))
        .await
        .unwrap();
    c.until("three jobs finished", || async {
        let jobs = c.client.schedule_jobs(&s.id).await.ok()?;
        (jobs.iter().filter(|j| j.state.is_finished()).count() >= 3).then_some(())
    })
    .await;
    c.client.pause_schedule(&s.id).await.unwrap();
    let jobs = jobs_of(&c.client, &s.id).await;
    // A worker with room for four ran them one after another: a job was only
    // created once the one before had finished.
    let mut runs = Vec::new();
    for j in &jobs {
        let finished = c.finished(&j.id).await;
        let t = &c.tasks(&finished.id).await[0];
        assert_eq!(t.state, TaskState::Succeeded);
        runs.push((t.started_at.unwrap(), t.finished_at.unwrap()));
    }
    for w in runs.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlap: {runs:?}");
    }
    let skipped = events.of_kind("schedule.skipped", &s.id);
    assert!(
        skipped.iter().any(|e| e["reason"] == "overlap"),
        "fires during a run were skipped for overlap: {skipped:?}"
    );
}

#[tokio::test]
async fn pause_resume_trigger_and_the_cli() {
    let c = Cluster::start().await;
    // Pause stops the fires; resume starts them again from now, without
    // catching up what was missed while paused.
    let s = c
        .client
        .create_schedule(&every(200, Overlap::Allow, CatchUp::All, noop_job()))
        .await
        .unwrap();
    c.until("fires", || async {
        (c.client.schedule_jobs(&s.id).await.ok()?.len() >= 2).then_some(())
    })
    .await;
    let paused = c.client.pause_schedule(&s.id).await.unwrap();
    assert!(paused.paused && paused.next_fire_at.is_none());
    let n = c.client.schedule_jobs(&s.id).await.unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        c.client.schedule_jobs(&s.id).await.unwrap().len(),
        n,
        "paused: no fire"
    );
    let resumed = c.client.resume_schedule(&s.id).await.unwrap();
    let from = ms(resumed.next_fire_at.expect("a next fire once resumed"));
    c.until("fires after resume", || async {
        (c.client.schedule_jobs(&s.id).await.ok()?.len() >= n + 2).then_some(())
    })
    .await;
    c.client.pause_schedule(&s.id).await.unwrap();
    let fires = fire_times(&jobs_of(&c.client, &s.id).await);
    let (old, new) = fires.split_at(n);
    assert!(
        old.iter().all(|f| *f < from) && new.iter().all(|f| *f >= from),
        "{fires:?} vs {from}"
    );
    for w in new.windows(2) {
        assert_eq!(w[1] - w[0], 200, "{new:?}");
    }

    // Trigger fires now; with overlap skip, not while its job is unfinished
    // (no worker here, so it stays queued).
    let t = c
        .client
        .create_schedule(&every(3_600_000, Overlap::Skip, CatchUp::One, noop_job()))
        .await
        .unwrap();
    let first = c.client.trigger_schedule(&t.id).await.unwrap();
    assert_eq!(first.schedule_id.as_deref(), Some(t.id.as_str()));
    assert!(first.fire_at.is_some());
    let again = c.client.trigger_schedule(&t.id).await.unwrap_err();
    assert_eq!(again.status().map(|s| s.as_u16()), Some(409), "{again}");
    c.client.cancel_job(&first.id).await.unwrap();
    let second = c.client.trigger_schedule(&t.id).await.unwrap();
    let view = c.client.schedule(&t.id).await.unwrap();
    assert_eq!(view.last_job_id.as_deref(), Some(second.id.as_str()));
    assert_eq!(
        view.next_fire_at, t.next_fire_at,
        "a trigger leaves the next fire"
    );
    assert_eq!(c.client.schedule_jobs(&t.id).await.unwrap().len(), 2);

    // Validation names the field; unknown ids are 404.
    let http = c.http();
    for (body, field) in [
        (
            json!({"cron": "61 * * * *", "job": {"tasks": [{"kind": "noop"}]}}),
            "cron",
        ),
        (
            json!({"cron": "* * * * *", "timezone": "Nowhere/Town", "job": {"tasks": [{"kind": "noop"}]}}),
            "timezone",
        ),
        (
            json!({"cron": "* * * * *", "every_ms": 1000, "job": {"tasks": [{"kind": "noop"}]}}),
            "every_ms",
        ),
        (json!({"job": {"tasks": [{"kind": "noop"}]}}), "cron"),
        (
            json!({"every_ms": 1000, "job": {"tasks": [{"kind": "Not A Kind"}]}}),
            "job.tasks[0].kind",
        ),
    ] {
        let res = http
            .post(format!("{}/v1/schedules", c.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 422, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let res = http
        .patch(format!("{}/v1/schedules/{}", c.url, t.id))
        .json(&json!({"timezone": "Nowhere/Town"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    for (m, path) in [
        ("GET", "/v1/schedules/nope"),
        ("POST", "/v1/schedules/nope/trigger"),
        ("DELETE", "/v1/schedules/nope"),
    ] {
        let res = http
            .request(m.parse().unwrap(), format!("{}{path}", c.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 404, "{m} {path}");
    }

    // The CLI, in JSON.
    let cli = |args: &[&str]| -> Value {
        let out = Command::new(bin())
            .args(["--server", &c.url, "-o", "json", "schedule"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let added: ScheduleView = serde_json::from_value(cli(&[
        "add",
        "--every-ms",
        "3600000",
        "--kind",
        "noop",
        "--name",
        "from-cli",
        "--overlap",
        "allow",
    ]))
    .unwrap();
    assert_eq!(added.every_ms, Some(3_600_000));
    let listed = cli(&["list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == added.id.as_str())
    );
    assert_eq!(cli(&["pause", &added.id])["paused"], true);
    assert_eq!(cli(&["resume", &added.id])["paused"], false);
    assert_eq!(
        cli(&["trigger", &added.id])["schedule_id"],
        added.id.as_str()
    );
    cli(&["rm", &added.id]);
    assert_eq!(
        c.client
            .schedule(&added.id)
            .await
            .unwrap_err()
            .status()
            .map(|s| s.as_u16()),
        Some(404)
    );
    // A bad cron from the CLI fails and names the field.
    let out = Command::new(bin())
        .args([
            "--server", &c.url, "schedule", "add", "--cron", "bad", "--kind", "noop",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cron"));
}
