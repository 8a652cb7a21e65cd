//! Limits and fairness over HTTP: budgets that hold across servers, that
//! hold up nothing behind them, rates that space starts, fair keys that take
//! turns.

use brigade_api::{LimitSpec, TaskSpec, TaskView};
use brigade_client::Client;
use serde_json::json;
use time::OffsetDateTime;

use brigade_testkit::{Cluster, task};

fn span(t: &TaskView) -> (OffsetDateTime, OffsetDateTime) {
    (t.started_at.unwrap(), t.finished_at.unwrap())
}

/// Most of `tasks` running at one moment, by their recorded start and end.
fn most_at_once(tasks: &[&TaskView]) -> usize {
    let mut edges: Vec<(OffsetDateTime, i32)> = Vec::new();
    for t in tasks {
        let (s, f) = span(t);
        edges.push((s, 1));
        edges.push((f, -1));
    }
    // At equal times an end comes before a start: a task that started as
    // another ended did not run beside it.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

fn limited(keys: &[&str], ms: u64) -> TaskSpec {
    task("sleep", json!({ "ms": ms })).limited(keys.iter().copied())
}

#[tokio::test]
async fn a_concurrency_limit_holds_across_servers_and_holds_up_nothing_behind() {
    let mut c = Cluster::start().await;
    // On PostgreSQL the budget is shared by two servers, a worker on each.
    let other = if c.shared_database() {
        c.spawn_peer_server("server2").await
    } else {
        c.url.clone()
    };
    let spec = |n| LimitSpec {
        concurrency: Some(n),
        ..LimitSpec::default()
    };
    c.client.set_limit("stripe", &spec(2)).await.unwrap();
    c.client.set_limit("tenant:*", &spec(1)).await.unwrap();
    // Half the stripe tasks can only go to one worker, half to the other,
    // so both servers lease under the one budget.
    let url = c.url.clone();
    c.spawn_worker_on_with("w1", &url, 4, &["--queues", "qa,default"]);
    c.spawn_worker_on_with("w2", &other, 4, &["--queues", "qb,default"]);

    let in_queue = |q: &str| {
        let mut t = limited(&["stripe"], 120);
        t.queue = Some(q.to_owned());
        t
    };
    let mut tasks: Vec<TaskSpec> = (0..5)
        .flat_map(|_| [in_queue("qa"), in_queue("qb")])
        .collect();
    tasks.extend((0..4).map(|_| limited(&["tenant:1"], 150)));
    tasks.extend((0..4).map(|_| limited(&["tenant:2"], 150)));
    tasks.extend((0..20).map(|_| task("sleep", json!({ "ms": 10 }))));
    let job = c.submit(tasks).await;
    // While it runs, the limits show what they hold.
    let seen = c
        .until("the limit shows its use", || async {
            let l = c.client.limit("stripe").await.ok()?;
            (l.running > 0 && l.waiting + l.running > 2).then_some(l)
        })
        .await;
    assert!(seen.running <= 2, "{seen:?}");
    c.finished(&job.id).await;
    let all = c.tasks(&job.id).await;
    let stripe: Vec<&TaskView> = all.iter().filter(|t| t.limits == ["stripe"]).collect();
    let t1: Vec<&TaskView> = all.iter().filter(|t| t.limits == ["tenant:1"]).collect();
    let t2: Vec<&TaskView> = all.iter().filter(|t| t.limits == ["tenant:2"]).collect();
    let free: Vec<&TaskView> = all.iter().filter(|t| t.limits.is_empty()).collect();
    assert_eq!(
        most_at_once(&stripe),
        2,
        "stripe runs 2 at once, never more"
    );
    assert_eq!(most_at_once(&t1), 1, "tenant:1 has a budget of 1");
    assert_eq!(most_at_once(&t2), 1, "tenant:2 has a budget of 1");
    let both: Vec<&TaskView> = t1.iter().chain(&t2).copied().collect();
    assert_eq!(
        most_at_once(&both),
        2,
        "each key of the pattern has its own"
    );
    // The unlimited tasks behind them were not held up.
    let last_free = free.iter().map(|t| span(t).1).max().unwrap();
    let last_stripe_start = stripe.iter().map(|t| span(t).0).max().unwrap();
    assert!(
        last_free < last_stripe_start,
        "unlimited work finished ({last_free}) before the last limited task started ({last_stripe_start})"
    );
    // The view after: nothing runs, nothing waits.
    let after = c.client.limits().await.unwrap();
    assert!(
        after.iter().all(|l| l.running == 0 && l.waiting == 0),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_spaces_the_starts() {
    let c = Cluster::start().await.with_workers(&["w"], 8, &[]).await;
    let spec = LimitSpec {
        rate: Some(5),
        per_ms: Some(1000),
        burst: Some(1),
        ..LimitSpec::default()
    };
    let view = c.client.set_limit("api", &spec).await.unwrap();
    assert_eq!(
        (view.rate, view.per_ms, view.burst),
        (Some(5), Some(1000), Some(1))
    );
    let job = c
        .submit((0..6).map(|_| limited(&["api"], 1)).collect())
        .await;
    c.finished(&job.id).await;
    let mut starts: Vec<OffsetDateTime> = c
        .tasks(&job.id)
        .await
        .iter()
        .map(|t| t.started_at.unwrap())
        .collect();
    starts.sort();
    for (i, s) in starts.iter().enumerate() {
        let since = (*s - starts[0]).whole_milliseconds();
        // 5 a second, one at a time: the i-th start is at least i × 200 ms
        // after the first (a millisecond of rounding aside).
        assert!(
            since >= i as i128 * 200 - 1,
            "start {i} came {since} ms after the first"
        );
    }
}

#[tokio::test]
async fn a_late_fair_key_takes_turns_with_the_one_queued_first() {
    let c = Cluster::start().await.with_workers(&["w"], 1, &[]).await;
    let fair = |key: &str| task("sleep", json!({ "ms": 20 })).fair(key);
    let a = c.submit((0..60).map(|_| fair("tenant:a")).collect()).await;
    let b = c.submit((0..3).map(|_| fair("tenant:b")).collect()).await;
    c.finished(&b.id).await;
    let b_done = c
        .tasks(&b.id)
        .await
        .iter()
        .map(|t| t.finished_at.unwrap())
        .max()
        .unwrap();
    let a_tasks = c.tasks(&a.id).await;
    let a_before = a_tasks
        .iter()
        .filter(|t| t.started_at.is_some_and(|s| s < b_done))
        .count();
    // Alternating from B's submit on: a few of A's, not all 60.
    assert!(
        a_before < 15,
        "{a_before} of tenant:a's tasks started before tenant:b's 3 were done"
    );
    assert_eq!(a_tasks[0].fair_key.as_deref(), Some("tenant:a"));
    c.client.cancel_job(&a.id).await.unwrap();
}

#[tokio::test]
async fn bad_limits_are_422_naming_the_field() {
    let c = Cluster::start().await;
    let http = c.http();
    for (key, body, field) in [
        ("k", json!({}), "concurrency"),
        ("k", json!({"concurrency": 0}), "concurrency"),
        ("k", json!({"rate": 10, "per_ms": 0}), "per_ms"),
        ("k", json!({"concurrency": 1, "burst": 3}), "burst"),
        ("ten*ant", json!({"concurrency": 1}), "key"),
    ] {
        let res = http
            .put(format!("{}/v1/limits/{key}", c.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{key} {body}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let res = http
        .put(format!("{}/v1/limits/k", c.url))
        .json(&json!({"concurrency": 1, "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = http
        .get(format!("{}/v1/limits/nope", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = http
        .delete(format!("{}/v1/limits/nope", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    for (spec, field) in [
        (
            json!({"kind": "noop", "limits": ["a b"]}),
            "tasks[0].limits[0]",
        ),
        (
            json!({"kind": "noop", "limits": ["tenant:*"]}),
            "tasks[0].limits[0]",
        ),
        (
            json!({"kind": "noop", "limits": ["a","b","c","d","e","f","g","h","i"]}),
            "tasks[0].limits",
        ),
        (json!({"kind": "noop", "fair_key": ""}), "tasks[0].fair_key"),
    ] {
        let res = http
            .post(format!("{}/v1/jobs", c.url))
            .json(&json!({ "tasks": [spec] }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{spec}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    // A pattern key round-trips through the typed client, encoded in the path.
    let client = Client::new(&c.url, None).unwrap();
    let spec = LimitSpec {
        concurrency: Some(3),
        ..LimitSpec::default()
    };
    client.set_limit("tenant:*", &spec).await.unwrap();
    assert_eq!(client.limit("tenant:*").await.unwrap().concurrency, Some(3));
    client.delete_limit("tenant:*").await.unwrap();
    assert!(client.limits().await.unwrap().is_empty());
}
