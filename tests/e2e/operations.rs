//! Operating a cluster: queues paused and resumed, workers drained or stopped,
//! labels, priorities, and tasks scheduled for later.

use brigade_api::{JobState, JobSubmit, TaskState, WorkerState};
use nix::sys::signal::Signal;
use serde_json::json;

use brigade_testkit::{Cluster, task};

#[tokio::test]
async fn a_paused_queue_holds_its_tasks_until_resumed() {
    let c = Cluster::start()
        .await
        .with_workers(&["w1"], 4, &["--queues", "default,slow"])
        .await;
    let q = c.client.pause_queue("slow").await.unwrap();
    assert!(q.paused);
    let held = c
        .client
        .submit(
            &JobSubmit::new(vec![task("noop", json!(null))]).in_queue("slow"),
            None,
        )
        .await
        .unwrap();
    // The worker is busy with other work meanwhile: the paused queue is skipped, not stuck.
    let other = c.submit(vec![task("noop", json!(null)); 5]).await;
    assert_eq!(c.finished(&other.id).await.state, JobState::Succeeded);
    assert_eq!(
        c.client.job(&held.id).await.unwrap().state,
        JobState::Queued
    );
    let queues = c.client.queues().await.unwrap();
    let slow = queues.iter().find(|q| q.name == "slow").unwrap();
    assert_eq!((slow.queued, slow.paused, slow.workers), (1, true, 1));

    assert!(!c.client.resume_queue("slow").await.unwrap().paused);
    assert_eq!(c.finished(&held.id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_drained_worker_finishes_its_task_and_leaves() {
    let mut c = Cluster::start_with(&["--heartbeat-ms", "200"])
        .await
        .with_workers(&["w1"], 2, &[])
        .await;
    let w = c.worker_named("w1").await;
    let job = c.submit(vec![task("sleep", json!({ "ms": 800 }))]).await;
    c.until("running", || async {
        (c.client.job(&job.id).await.ok()?.progress.running == 1).then_some(())
    })
    .await;
    let drained = c.client.drain_worker(&w.id).await.unwrap();
    assert_eq!(drained.state, WorkerState::Draining);
    let status = c.wait_worker_exit("w1").await;
    assert!(status.success());
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let t = &c.tasks(&job.id).await[0];
    assert_eq!((t.state, t.attempt), (TaskState::Succeeded, 1));
    let ws = c.client.workers().await.unwrap();
    assert_eq!(
        ws.iter().find(|x| x.id == w.id).unwrap().state,
        WorkerState::Left
    );
}

/// Heartbeats the server has answered so far (its request metrics).
async fn heartbeats_answered(c: &Cluster) -> u64 {
    use crate::observability::{scrape, total};
    let route = ("route", "/v1/workers/{id}/heartbeat");
    total(
        &scrape(c).await,
        "brigade_http_request_duration_seconds_count",
        &[route],
    ) as u64
}

#[tokio::test]
async fn an_idle_worker_waiting_for_work_stays_alive_without_heartbeats_and_hears_a_drain() {
    // Lost after 1 s of silence; heartbeats every 100 ms.
    let mut c = Cluster::start_with(&["--lease-ttl-ms", "1000", "--heartbeat-ms", "100"])
        .await
        .with_workers(&["w1"], 2, &[])
        .await;
    let w = c.worker_named("w1").await;
    let before = heartbeats_answered(&c).await;
    // Three TTLs idle: its held long-poll stands for the ~30 heartbeats.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let sent = heartbeats_answered(&c).await - before;
    assert!(sent <= 3, "an idle worker sent {sent} heartbeats");
    let now = c.worker_named("w1").await;
    assert_eq!(now.state, WorkerState::Active, "{now:?}");
    assert!(
        now.last_seen_at > w.last_seen_at,
        "last seen {} then {}",
        w.last_seen_at,
        now.last_seen_at
    );
    // It still gets work at once.
    let job = c.submit(vec![task("noop", json!(null))]).await;
    assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);
    // A drain reaches it through its long-poll: it leaves.
    c.client.drain_worker(&w.id).await.unwrap();
    assert!(c.wait_worker_exit("w1").await.success());
    let ws = c.client.workers().await.unwrap();
    assert_eq!(
        ws.iter().find(|x| x.id == w.id).unwrap().state,
        WorkerState::Left
    );
}

#[tokio::test]
async fn sigterm_lets_a_worker_finish_what_it_runs_then_leave() {
    let mut c = Cluster::start_with(&["--heartbeat-ms", "100"])
        .await
        .with_workers(&["w1"], 2, &[])
        .await;
    let w = c.worker_named("w1").await;
    let job = c
        .submit(vec![
            task("sleep", json!({ "ms": 1500 })),
            task("sleep", json!({ "ms": 1500 })),
        ])
        .await;
    // Running as the worker itself reports it: the server counts a task
    // running once the lease commits, before the worker has its reply, and a
    // lease reply still in flight at SIGTERM is handed back, not run.
    c.until("running on the worker", || async {
        (c.worker_named("w1").await.load.running == 2).then_some(())
    })
    .await;
    c.signal_worker("w1", Signal::SIGTERM);
    assert!(c.wait_worker_exit("w1").await.success());
    let j = c.client.job(&job.id).await.unwrap();
    assert_eq!(
        (j.state, j.progress.succeeded),
        (JobState::Succeeded, 2),
        "finished before leaving"
    );
    let ws = c.client.workers().await.unwrap();
    assert_eq!(
        ws.iter().find(|x| x.id == w.id).unwrap().state,
        WorkerState::Left
    );
}

#[tokio::test]
async fn a_worker_stopped_before_its_tasks_finish_hands_them_back() {
    let mut c = Cluster::start()
        .await
        .with_workers(&["w1"], 1, &["--shutdown-grace-ms", "100"])
        .await;
    let job = c.submit(vec![task("sleep", json!({ "ms": 20_000 }))]).await;
    c.until("running", || async {
        (c.client.job(&job.id).await.ok()?.progress.running == 1).then_some(())
    })
    .await;
    c.signal_worker("w1", Signal::SIGTERM);
    assert!(c.wait_worker_exit("w1").await.success());
    let t = c.client.task(&job.task_ids.unwrap()[0]).await.unwrap();
    assert_eq!(
        t.state,
        TaskState::Queued,
        "handed back at once, not left to expire"
    );
    assert_eq!(t.history.unwrap()[0].outcome, "handed_back");
}

#[tokio::test]
async fn tasks_go_only_to_workers_carrying_their_required_labels() {
    let c = Cluster::start()
        .await
        .with_workers(&["plain"], 4, &[])
        .await
        .with_workers(
            &["gpu"],
            4,
            &["--labels", "gpu=a100,gpu=h100", "--labels", "zone=eu"],
        )
        .await;
    let gpu = c.worker_named("gpu").await.id;
    let tasks = (0..20)
        .map(|i| {
            let mut t = task("echo", json!(i));
            t.requires = [(
                "gpu".to_owned(),
                if i % 2 == 0 { "h100" } else { "a100" }.to_owned(),
            )]
            .into();
            t
        })
        .collect();
    let job = c.submit(tasks).await;
    assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);
    for t in c.tasks(&job.id).await {
        assert_eq!(t.worker_id.as_deref(), Some(gpu.as_str()));
    }
    // A task nobody can run waits.
    let mut nobody = task("noop", json!(null));
    nobody.requires = [("gpu".to_owned(), "tpu".to_owned())].into();
    let stuck = c.submit(vec![nobody]).await;
    let after = c.submit(vec![task("noop", json!(null))]).await;
    assert_eq!(c.finished(&after.id).await.state, JobState::Succeeded);
    assert_eq!(
        c.client.job(&stuck.id).await.unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn higher_priority_runs_first_and_run_at_holds_a_task_until_its_time() {
    let c = Cluster::start()
        .await
        .with_workers(&["w1"], 1, &["--queues", "p"])
        .await;
    c.client.pause_queue("p").await.unwrap();
    let mut tasks = Vec::new();
    for prio in [0, 5, 1, 9, 3] {
        let mut t = task("echo", json!(prio));
        t.priority = Some(prio);
        tasks.push(t);
    }
    let job = c
        .client
        .submit(&JobSubmit::new(tasks).in_queue("p"), None)
        .await
        .unwrap();
    c.client.resume_queue("p").await.unwrap();
    c.finished(&job.id).await;
    let mut all = c.tasks(&job.id).await;
    all.sort_by_key(|t| t.started_at);
    let order: Vec<i32> = all.iter().map(|t| t.priority).collect();
    assert_eq!(order, vec![9, 5, 3, 1, 0]);

    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let mut later = task("noop", json!(null));
    later.run_at = Some(at);
    let job = c
        .client
        .submit(&JobSubmit::new(vec![later]).in_queue("p"), None)
        .await
        .unwrap();
    assert_eq!(job.progress.scheduled, 1);
    let t = c
        .client
        .task(&job.task_ids.clone().unwrap()[0])
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Scheduled);
    c.finished(&job.id).await;
    let t = c.client.task(&job.task_ids.unwrap()[0]).await.unwrap();
    assert!(
        t.started_at.unwrap() >= at - time::Duration::milliseconds(1),
        "started {:?} before {at}",
        t.started_at
    );
}
