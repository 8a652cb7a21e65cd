//! Workflows with real worker processes: graphs (`key`, `after`,
//! `run_if`), spawning (map-reduce), the dependency cascade, progress, and a
//! graph split across two servers. Runs in both passes (SQLite, and
//! PostgreSQL with `BRIGADE_TEST_POSTGRES`); the two-server case needs
//! PostgreSQL. The tasks are of the built-in `flow` kind, which returns its
//! parents' outputs, so a test reads what a task saw from its output.

use std::collections::BTreeMap;
use std::time::Duration;

use brigade_api::{ErrorKind, JobState, RunIf, TaskSpec, TaskState, TaskView};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use brigade_testkit::{Cluster, task};

/// A `flow` task returning `value`, keyed `key`.
fn flow(key: &str, value: Value) -> TaskSpec {
    task("flow", json!({ "value": value })).keyed(key)
}

/// Tasks by key (the tests give every task its own key, or ask for groups).
fn by_key(tasks: &[TaskView]) -> BTreeMap<String, Vec<TaskView>> {
    let mut m: BTreeMap<String, Vec<TaskView>> = BTreeMap::new();
    for t in tasks {
        m.entry(t.key.clone().unwrap_or_default())
            .or_default()
            .push(t.clone());
    }
    m
}

fn one<'a>(m: &'a BTreeMap<String, Vec<TaskView>>, key: &str) -> &'a TaskView {
    let ts = m
        .get(key)
        .unwrap_or_else(|| panic!("no task keyed {key}: {m:?}"));
    assert_eq!(ts.len(), 1, "one task keyed {key}");
    &ts[0]
}

/// The keys of the parents a `flow` task saw, in order.
fn parent_keys(t: &TaskView) -> Vec<String> {
    t.output["parents"]
        .as_array()
        .unwrap_or_else(|| panic!("flow output of {}: {}", t.id, t.output))
        .iter()
        .map(|p| p["key"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A task started only after each of `parents` finished.
fn started_after(t: &TaskView, parents: &[&TaskView]) {
    let started = t.started_at.expect("the child started");
    for p in parents {
        let done = p.finished_at.expect("the parent finished");
        assert!(
            started >= done,
            "task {} started at {started} before its parent {} finished at {done}",
            t.id,
            p.id
        );
    }
}

#[tokio::test]
async fn a_diamond_runs_in_order_and_the_join_sees_both_parents() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let job = c
        .submit(vec![
            flow("a", json!("A")),
            flow("b", json!("B")).after(["a"]),
            flow("c", json!("C")).after(["a"]),
            flow("d", json!("D")).after(["b", "c"]),
        ])
        .await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.progress.succeeded, 4);
    assert_eq!(done.progress.waiting, 0);

    let tasks = c.tasks(&job.id).await;
    let m = by_key(&tasks);
    let (a, b, cc, d) = (one(&m, "a"), one(&m, "b"), one(&m, "c"), one(&m, "d"));
    assert_eq!(parent_keys(a), Vec::<String>::new());
    assert_eq!(parent_keys(b), ["a"]);
    assert_eq!(parent_keys(cc), ["a"]);
    assert_eq!(parent_keys(d), ["b", "c"], "submission order");
    // d saw b's and c's outputs as they were recorded, a's inside them.
    assert_eq!(d.output["parents"][0]["output"], b.output);
    assert_eq!(d.output["parents"][1]["output"], cc.output);
    assert_eq!(d.output["parents"][0]["output"]["value"], "B");
    assert_eq!(
        d.output["parents"][1]["output"]["parents"][0]["output"]["value"],
        "A"
    );
    assert_eq!(d.output["parents"][0]["state"], "succeeded");
    started_after(b, &[a]);
    started_after(cc, &[a]);
    started_after(d, &[b, cc]);
}

#[tokio::test]
async fn map_reduce_by_spawning_gives_reduce_every_map() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let n = 6;
    let maps: Vec<Value> = (0..n)
        .map(|i| json!({ "kind": "flow", "key": "map", "input": { "value": i * i } }))
        .collect();
    let job = c
        .submit(vec![
            task("flow", json!({ "value": "split", "spawn": maps })).keyed("split"),
            flow("reduce", json!("reduce")).after(["split"]),
        ])
        .await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.progress.total, 2 + n as u64, "the maps joined the job");

    let tasks = c.tasks(&job.id).await;
    let m = by_key(&tasks);
    let split = one(&m, "split");
    let reduce = one(&m, "reduce");
    let maps = &m["map"];
    assert_eq!(maps.len(), n);

    let mut expected = vec!["split".to_owned()];
    expected.extend((0..n).map(|_| "map".to_owned()));
    assert_eq!(parent_keys(reduce), expected, "split first, then its spawn");
    let values: Vec<Value> = reduce.output["parents"].as_array().unwrap()[1..]
        .iter()
        .map(|p| p["output"]["value"].clone())
        .collect();
    let squares: Vec<Value> = (0..n).map(|i| json!(i * i)).collect();
    assert_eq!(values, squares, "every map's output, in spawn order");

    let split_view = c.client.task(&split.id).await.unwrap();
    let mut children = split_view.children.unwrap_or_default();
    children.sort();
    let mut map_ids: Vec<String> = maps.iter().map(|t| t.id.clone()).collect();
    map_ids.sort();
    assert_eq!(children, map_ids, "split lists its children");
    for t in maps {
        assert_eq!(t.spawned_by.as_deref(), Some(split.id.as_str()));
    }
    let maps_ref: Vec<&TaskView> = maps.iter().collect();
    started_after(reduce, &maps_ref);
    started_after(reduce, &[split]);

    // `brigade tasks JOB --tree` draws it: the maps and reduce under split.
    let out = std::process::Command::new(brigade_testkit::bin())
        .args(["tasks", &job.id, "--tree", "--server", &c.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + n, "{text}");
    assert!(lines[0].starts_with("split [flow] succeeded"), "{text}");
    for l in &lines[1..=n] {
        assert!(l.starts_with("├── map [flow] succeeded"), "{text}");
        assert!(l.ends_with("<spawned>"), "{text}");
    }
    assert!(
        lines[n + 1].starts_with("└── reduce [flow] succeeded"),
        "{text}"
    );
}

#[tokio::test]
async fn run_if_finished_and_failed_pick_their_branches() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let mut bad = task("fail", json!({ "retryable": false })).keyed("bad");
    bad.max_attempts = Some(1);
    let job = c
        .submit(vec![
            bad,
            flow("good", json!(1)),
            flow("finally", json!(null))
                .after(["bad", "good"])
                .run_if(RunIf::Finished),
            flow("on_error", json!(null))
                .after(["bad"])
                .run_if(RunIf::Failed),
            flow("no_error", json!(null))
                .after(["good"])
                .run_if(RunIf::Failed),
            flow("on_success", json!(null)).after(["bad"]),
        ])
        .await;
    let done = c.finished(&job.id).await;
    assert_eq!(
        done.state,
        JobState::Failed,
        "a failed task and a dependency cancel"
    );

    let m = by_key(&c.tasks(&job.id).await);
    let finally = one(&m, "finally");
    assert_eq!(finally.state, TaskState::Succeeded);
    assert_eq!(parent_keys(finally), ["bad", "good"]);
    assert_eq!(finally.output["parents"][0]["state"], "failed");
    assert_eq!(finally.output["parents"][1]["state"], "succeeded");

    let on_error = one(&m, "on_error");
    assert_eq!(on_error.state, TaskState::Succeeded);
    assert_eq!(on_error.output["parents"][0]["state"], "failed");

    for key in ["no_error", "on_success"] {
        let t = one(&m, key);
        assert_eq!(t.state, TaskState::Cancelled, "{key}: {t:?}");
        assert_eq!(
            t.error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Dependency)
        );
        assert!(t.started_at.is_none(), "{key} never ran");
    }
}

#[tokio::test]
async fn a_failing_parent_cancels_its_subtree_and_the_job_fails() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let mut root = task("fail", json!({ "retryable": false })).keyed("root");
    root.max_attempts = Some(1);
    let job = c
        .submit(vec![
            root,
            flow("child", json!(null)).after(["root"]),
            flow("grandchild", json!(null)).after(["child"]),
            flow("great", json!(null)).after(["grandchild", "other"]),
            flow("other", json!("unrelated")),
        ])
        .await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.progress.failed, 1);
    assert_eq!(done.progress.cancelled, 3);
    assert_eq!(done.progress.succeeded, 1);

    let m = by_key(&c.tasks(&job.id).await);
    assert_eq!(one(&m, "root").state, TaskState::Failed);
    assert_eq!(one(&m, "other").state, TaskState::Succeeded);
    for key in ["child", "grandchild", "great"] {
        let t = c.client.task(&one(&m, key).id).await.unwrap();
        assert_eq!(t.state, TaskState::Cancelled, "{key}");
        assert_eq!(
            t.error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Dependency),
            "{key}: {:?}",
            t.error
        );
        assert!(t.worker_id.is_none(), "{key} was never leased");
        assert!(
            t.history.unwrap_or_default().is_empty(),
            "{key} had no attempt"
        );
    }
}

#[tokio::test]
async fn progress_reported_by_a_running_task_shows_in_its_view() {
    let c = Cluster::start().await.with_workers(&["w1"], 2, &[]).await;
    let events = reqwest::get(format!("{}/v1/events", c.url)).await.unwrap();
    let mut stream = events.bytes_stream();
    let job = c
        .submit(vec![task(
            "flow",
            json!({
                "progress": { "done": 30, "total": 100, "message": "page 30" },
                "hold_ms": 60000
            }),
        )])
        .await;
    let id = job
        .task_ids
        .clone()
        .unwrap_or_default()
        .pop()
        .unwrap_or_else(|| {
            panic!("the job view lists its task: {job:?}");
        });
    let seen = c
        .until("the running task shows its progress", || async {
            let t = c.client.task(&id).await.ok()?;
            (t.state == TaskState::Running).then_some(())?;
            t.progress
        })
        .await;
    assert_eq!(seen.done, 30);
    assert_eq!(seen.total, Some(100));
    assert_eq!(seen.message.as_deref(), Some("page 30"));
    assert_eq!(seen.attempt, 1);
    // The job's task list carries it as well (the dashboard reads that).
    let listed = c.tasks(&job.id).await;
    assert_eq!(listed[0].progress.as_ref().map(|p| p.done), Some(30));
    // And it was published live.
    let mut seen = String::new();
    let published = tokio::time::timeout(brigade_testkit::DEADLINE, async {
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("task.progress") && seen.contains(&id) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(published, "a task.progress event for {id}; got:\n{seen}");
    c.client.cancel_job(&job.id).await.unwrap();
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Cancelled);
}

#[tokio::test]
async fn parents_finish_through_one_server_and_the_child_leases_through_another() {
    let mut c = Cluster::start().await;
    if !c.shared_database() {
        eprintln!("skipped: needs PostgreSQL (BRIGADE_TEST_POSTGRES)");
        return;
    }
    let a = c.url.clone();
    let b = c.spawn_peer_server("server-b").await;
    // Queues keep each half of the graph on its own server's worker.
    c.spawn_worker_on_with("wa", &a, 4, &["--queues", "parents"]);
    c.spawn_worker_on_with("wb", &b, 4, &["--queues", "children"]);
    let wa = c.worker_named("wa").await;
    let wb = c.worker_named("wb").await;

    let mut p1 = flow("p", json!(1));
    p1.queue = Some("parents".into());
    let mut p2 = flow("p", json!(2));
    p2.queue = Some("parents".into());
    let mut child = flow("child", json!(null)).after(["p"]);
    child.queue = Some("children".into());
    let job = c.submit(vec![p1, p2, child]).await;

    let through_b = brigade_client::Client::new(&b, None).unwrap();
    let done = c
        .until("the job finished", || async {
            let j = through_b
                .wait_job(&job.id, Duration::from_millis(500))
                .await
                .ok()?;
            j.state.is_finished().then_some(j)
        })
        .await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let m = by_key(&through_b.job_tasks(&job.id, None).await.unwrap());
    let child = one(&m, "child");
    assert_eq!(child.worker_id.as_deref(), Some(wb.id.as_str()));
    for p in &m["p"] {
        assert_eq!(p.worker_id.as_deref(), Some(wa.id.as_str()));
    }
    assert_eq!(parent_keys(child), ["p", "p"]);
    assert_eq!(child.output["parents"][0]["output"]["value"], 1);
    assert_eq!(child.output["parents"][1]["output"]["value"], 2);
}

/// `examples/map-reduce.json`, submitted with the CLI: reduce sees split and
/// its three maps, the `finished` report sees reduce.
#[tokio::test]
async fn the_map_reduce_example_runs() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/map-reduce.json");
    let out = std::process::Command::new(brigade_testkit::bin())
        .args([
            "submit", "--file", file, "--output", "json", "--server", &c.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: brigade_api::JobView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);
    let m = by_key(&c.tasks(&job.id).await);
    let reduce = one(&m, "reduce");
    assert_eq!(parent_keys(reduce), ["split", "map", "map", "map"]);
    assert_eq!(parent_keys(one(&m, "report")), ["reduce"]);
}

#[tokio::test]
async fn a_chain_passes_each_output_to_the_next_link() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let links = 5;
    let specs: Vec<TaskSpec> = (0..links)
        .map(|i| {
            let t = flow(&format!("l{i}"), json!(i * 10));
            if i == 0 {
                t
            } else {
                t.after([format!("l{}", i - 1)])
            }
        })
        .collect();
    let job = c.submit(specs).await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.progress.succeeded, links as u64);

    let m = by_key(&c.tasks(&job.id).await);
    let chain: Vec<&TaskView> = (0..links).map(|i| one(&m, &format!("l{i}"))).collect();
    assert_eq!(parent_keys(chain[0]), Vec::<String>::new());
    for i in 1..links {
        let (prev, t) = (chain[i - 1], chain[i]);
        assert_eq!(parent_keys(t), [format!("l{}", i - 1)]);
        assert_eq!(
            t.output["parents"][0]["output"],
            prev.output,
            "l{i} saw l{}'s output as recorded",
            i - 1
        );
        started_after(t, &[prev]);
    }
    // Each link carries the one before it: the last holds the whole chain.
    let mut at = &chain[links - 1].output;
    for i in (0..links).rev() {
        assert_eq!(
            at["value"],
            json!(i * 10),
            "link l{i} inside the last output"
        );
        if i > 0 {
            at = &at["parents"][0]["output"];
        }
    }
}

#[tokio::test]
async fn a_spawner_killed_mid_run_spawns_once_when_retried_and_reduce_sees_all() {
    let mut c = Cluster::start_with(&["--lease-ttl-ms", "1500", "--heartbeat-ms", "250"])
        .await
        .with_workers(&["doomed"], 4, &[])
        .await;
    let doomed = c.worker_named("doomed").await.id;
    let n: i64 = 8;
    let maps: Vec<Value> = (0..n)
        .map(|i| json!({ "kind": "flow", "key": "map", "input": { "value": i } }))
        .collect();
    // The spawner reports progress, then holds: it is caught mid-run.
    let split = task(
        "flow",
        json!({
            "value": "split",
            "spawn": maps,
            "progress": { "done": 0, "total": n, "message": "splitting" },
            "hold_ms": 3000
        }),
    )
    .keyed("split");
    let job = c
        .submit(vec![
            split,
            flow("reduce", json!("reduce")).after(["split"]),
        ])
        .await;
    let m = by_key(&c.tasks(&job.id).await);
    let split_id = one(&m, "split").id.clone();
    c.until("the spawner runs on the doomed worker", || async {
        let t = c.client.task(&split_id).await.ok()?;
        let p = t.progress?;
        (t.state == TaskState::Running && p.attempt == 1).then_some(())
    })
    .await;
    c.signal_worker("doomed", Signal::SIGKILL);
    c.wait_worker_exit("doomed").await;
    c.spawn_worker("survivor", 4, &[]);
    let survivor = c.worker_named("survivor").await.id;

    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.progress.total, 2 + n as u64, "spawned once");

    let split = c.client.task(&split_id).await.unwrap();
    assert_eq!(split.attempt, 2, "the spawner was retried");
    assert_eq!(split.worker_id.as_deref(), Some(survivor.as_str()));
    let history = split.history.clone().unwrap_or_default();
    let outcomes: Vec<(&str, Option<&str>)> = history
        .iter()
        .map(|h| (h.outcome.as_str(), h.worker_id.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("lost", Some(doomed.as_str())),
            ("succeeded", Some(survivor.as_str()))
        ],
        "killed while it ran, then done elsewhere"
    );

    let tasks = c.tasks(&job.id).await;
    assert_eq!(tasks.len(), 2 + n as usize, "no child twice: {tasks:?}");
    let m = by_key(&tasks);
    let maps = &m["map"];
    assert_eq!(maps.len(), n as usize);
    let mut values: Vec<i64> = maps
        .iter()
        .map(|t| t.output["value"].as_i64().unwrap_or(-1))
        .collect();
    values.sort();
    assert_eq!(values, (0..n).collect::<Vec<i64>>(), "each map once");
    for t in maps {
        assert_eq!(t.spawned_by.as_deref(), Some(split_id.as_str()));
        assert_eq!(t.state, TaskState::Succeeded);
        assert_eq!(t.worker_id.as_deref(), Some(survivor.as_str()));
    }
    let mut children = split.children.unwrap_or_default();
    children.sort();
    let mut map_ids: Vec<String> = maps.iter().map(|t| t.id.clone()).collect();
    map_ids.sort();
    assert_eq!(children, map_ids, "the spawner lists exactly its children");

    let reduce = one(&m, "reduce");
    let mut expected = vec!["split".to_owned()];
    expected.extend((0..n).map(|_| "map".to_owned()));
    assert_eq!(parent_keys(reduce), expected);
    let seen: Vec<Value> = reduce.output["parents"].as_array().unwrap()[1..]
        .iter()
        .map(|p| p["output"]["value"].clone())
        .collect();
    assert_eq!(
        seen,
        (0..n).map(|i| json!(i)).collect::<Vec<Value>>(),
        "reduce saw every map, in spawn order"
    );
    let maps_ref: Vec<&TaskView> = maps.iter().collect();
    started_after(reduce, &maps_ref);
}
