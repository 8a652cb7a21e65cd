//! The server dies (SIGKILL) or is stopped (SIGTERM) mid-job and restarts on
//! the same database.

use std::time::{Duration, Instant};

use brigade_api::WorkerJoin;
use brigade_client::ClientError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;

use crate::load::{Load, submit_echo};

/// Scenario 4: SIGKILL the server several times while workers run and
/// clients submit; restart it on the same database each time.
#[tokio::test]
async fn the_server_killed_and_restarted_again_and_again() {
    let mut l = Load::start(3, 8).await;
    l.begin().await;
    for round in 0..4 {
        let pause = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        l.c.kill_server();
        let since = Instant::now();
        l.c.start_server().await;
        let s = l.recovery(since).await;
        eprintln!("round {round}: server killed and restarted; progress after {s:.2}s");
    }
    l.finish("server_kills", "restarts=4").await;
}

/// SIGTERM to the server: a waiting long-poll is answered at once (no tasks,
/// or 503) instead of being cut, the process exits cleanly, and workers
/// reconnect to the restarted server without losing anything.
#[tokio::test]
async fn the_server_stopped_with_sigterm_answers_long_polls_and_workers_come_back() {
    let mut l = Load::start(2, 8).await;
    l.begin().await;
    // A worker of our own, waiting in a long-poll for work that never matches.
    let join = WorkerJoin {
        name: "poller".into(),
        hostname: "test".into(),
        queues: vec!["nothing-here".into()],
        kinds: vec!["echo".into()],
        labels: Default::default(),
        capacity: 1,
        version: brigade_api::VERSION.into(),
    };
    let poller = l.c.client.join(&join).await.unwrap();
    let client = l.c.client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let r = client.lease(&poller.id, 1, Duration::from_secs(30)).await;
        (r, started.elapsed())
    });
    // A client waiting for a job that cannot finish yet (its queue has no
    // worker), and a live event stream.
    let mut stuck = brigade_api::TaskSpec::new("echo", serde_json::json!("waits"));
    stuck.queue = Some("unserved".into());
    let waiting =
        l.c.client
            .submit(
                &brigade_api::JobSubmit::new(vec![stuck]).named("waits"),
                None,
            )
            .await
            .unwrap();
    let client = l.c.client.clone();
    let waiting_id = waiting.id.clone();
    let job_wait =
        tokio::spawn(async move { client.wait_job(&waiting_id, Duration::from_secs(30)).await });
    let events =
        l.c.http()
            .get(format!("{}/v1/events", l.c.url))
            .send()
            .await
            .unwrap();
    let stream_end = tokio::spawn(async move {
        use futures::StreamExt;
        let mut body = events.bytes_stream();
        loop {
            match body.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = Pid::from_raw(l.c.server.as_ref().unwrap().id() as i32);
    let term = Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    let (reply, _) = poll.await.unwrap();
    let answered = term.elapsed();
    match &reply {
        Ok(r) => assert!(r.tasks.is_empty(), "no work for that queue"),
        Err(ClientError::Api { status, .. }) => assert_eq!(status.as_u16(), 503),
        Err(e) => panic!("the long-poll was cut instead of answered: {e}"),
    }
    let job = job_wait.await.unwrap();
    assert!(
        job.is_ok(),
        "a job long-poll is answered, not cut: {:?}",
        job.err()
    );
    let ended = stream_end.await.unwrap();
    assert!(ended.is_ok(), "the event stream ends cleanly: {ended:?}");
    let mut server = l.c.server.take().unwrap();
    let deadline = Instant::now() + brigade_testkit::DEADLINE;
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped = term.elapsed();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let since = Instant::now();
    l.c.start_server().await;
    // More work after the restart: the same worker processes must take it.
    submit_echo(&l.c.client, &l.tracker, 500, 0, 0)
        .await
        .unwrap();
    l.recovery(since).await;
    l.c.client.cancel_job(&waiting.id).await.unwrap();
    l.finish(
        "server_sigterm",
        &format!(
            "long_poll_answered_s={:.2} exited_s={:.2}",
            answered.as_secs_f64(),
            stopped.as_secs_f64()
        ),
    )
    .await;
}
