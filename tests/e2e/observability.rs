//! Observability: the OpenAPI document against the contract and real responses,
//! Prometheus metrics, live events over SSE and WebSocket, and task logs.

use std::collections::{BTreeMap, BTreeSet};

use brigade_api::{JobState, TaskState};
use futures::StreamExt;
use serde_json::{Value, json};

use brigade_testkit::{Cluster, DEADLINE, task};

/// Every path and method of the API reference (`docs/api.md`).
const CONTRACT: &[(&str, &[&str])] = &[
    ("/v1/jobs", &["get", "post"]),
    ("/v1/jobs/{id}", &["get", "delete"]),
    ("/v1/jobs/{id}/tasks", &["get"]),
    ("/v1/jobs/{id}/cancel", &["post"]),
    ("/v1/tasks/{id}", &["get"]),
    ("/v1/tasks/{id}/cancel", &["post"]),
    ("/v1/tasks/{id}/retry", &["post"]),
    ("/v1/workers", &["get", "post"]),
    ("/v1/workers/{id}/lease", &["post"]),
    ("/v1/workers/{id}/heartbeat", &["post"]),
    ("/v1/workers/{id}/results", &["post"]),
    ("/v1/workers/{id}", &["get", "delete"]),
    ("/v1/workers/{id}/drain", &["post"]),
    ("/v1/queues", &["get"]),
    ("/v1/queues/{name}/pause", &["post"]),
    ("/v1/queues/{name}/resume", &["post"]),
    ("/v1/events", &["get"]),
    ("/v1/events/ws", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/v1/languages", &["get"]),
    ("/v1/schedules", &["get", "post"]),
    ("/v1/schedules/{id}", &["get", "patch", "delete"]),
    ("/v1/schedules/{id}/pause", &["post"]),
    ("/v1/schedules/{id}/resume", &["post"]),
    ("/v1/schedules/{id}/trigger", &["post"]),
    ("/v1/schedules/{id}/jobs", &["get"]),
    ("/v1/tasks", &["get"]),
    ("/v1/tasks/retry", &["post"]),
    ("/v1/tasks/cancel", &["post"]),
    // Added by this server beyond the contract.
    ("/v1/tasks/{id}/logs", &["get"]),
    ("/v1/workers/{id}/logs", &["post"]),
];

/// Check `instance` against the schema the document gives for the response
/// `status` of `method path`, resolving `#/components/...` against the document.
fn validate(doc: &Value, path: &str, method: &str, status: u16, instance: &Value) {
    let errors = schema_errors(doc, path, method, status, instance);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {instance} does not match its schema: {errors:#?}"
    );
}

/// Why `instance` does not match the schema of a response (empty when it does).
fn schema_errors(
    doc: &Value,
    path: &str,
    method: &str,
    status: u16,
    instance: &Value,
) -> Vec<String> {
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"];
    let schema = content["application/json"]["schema"]
        .as_object()
        .or_else(|| content["application/problem+json"]["schema"].as_object())
        .unwrap_or_else(|| panic!("{method} {path} {status}: no JSON schema in {content}"));
    // The document is the root, so its refs resolve; the response schema is its top.
    let mut root = doc.clone();
    let obj = root.as_object_mut().unwrap();
    for (k, v) in schema {
        obj.insert(k.clone(), v.clone());
    }
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: bad schema: {e}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "{}", res.url());
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_openapi_document_covers_the_contract_and_matches_real_responses() {
    let c = Cluster::start().await;
    let http = c.http();
    let doc: Value = json_of(
        http.get(format!("{}/openapi.json", c.url))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1, got {}",
        doc["openapi"]
    );
    for (path, methods) in CONTRACT {
        for m in *methods {
            assert!(
                doc["paths"][path][m].is_object(),
                "the document lacks {m} {path}"
            );
        }
    }

    // A worker of our own, speaking the protocol by hand.
    let joined = json_of(
        http.post(format!("{}/v1/workers", c.url))
            .json(
                &json!({"name": "hand", "hostname": "h", "queues": ["default"],
                          "kinds": ["obs-test"], "labels": {}, "capacity": 2, "version": "0"}),
            )
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let wid = joined["id"].as_str().unwrap().to_owned();
    let job = c.submit(vec![task("obs-test", json!({"x": 1}))]).await;
    let lease = json_of(
        http.post(format!("{}/v1/workers/{wid}/lease", c.url))
            .json(&json!({"max": 1, "wait_ms": 10000}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    validate(&doc, "/v1/workers/{id}/lease", "post", 200, &lease);
    let leased = &lease["tasks"][0];
    let tid = leased["id"].as_str().unwrap().to_owned();
    let results = json_of(
        http.post(format!("{}/v1/workers/{wid}/results", c.url))
            .json(
                &json!({"results": [{"task_id": tid, "attempt": leased["attempt"],
                          "outcome": "succeeded", "output": {"ok": true}, "duration_ms": 3}]}),
            )
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(results["accepted"], json!([tid]));
    validate(&doc, "/v1/workers/{id}/results", "post", 200, &results);
    c.finished(&job.id).await;

    let get = |p: String| {
        let http = http.clone();
        async move { http.get(p).send().await.unwrap() }
    };
    let j = json_of(get(format!("{}/v1/jobs/{}", c.url, job.id)).await, 200).await;
    validate(&doc, "/v1/jobs/{id}", "get", 200, &j);
    let t = json_of(get(format!("{}/v1/tasks/{tid}", c.url)).await, 200).await;
    validate(&doc, "/v1/tasks/{id}", "get", 200, &t);
    let ts = json_of(
        get(format!("{}/v1/jobs/{}/tasks", c.url, job.id)).await,
        200,
    )
    .await;
    validate(&doc, "/v1/jobs/{id}/tasks", "get", 200, &ts);
    let ws = json_of(get(format!("{}/v1/workers", c.url)).await, 200).await;
    validate(&doc, "/v1/workers", "get", 200, &ws);
    let qs = json_of(get(format!("{}/v1/queues", c.url)).await, 200).await;
    validate(&doc, "/v1/queues", "get", 200, &qs);
    let missing = get(format!("{}/v1/jobs/no-such-job", c.url)).await;
    assert_eq!(
        missing.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem = json_of(missing, 404).await;
    validate(&doc, "/v1/jobs/{id}", "get", 404, &problem);
    // The check has teeth: a job is not a task, a task without its id is not a task.
    assert!(!schema_errors(&doc, "/v1/tasks/{id}", "get", 200, &j).is_empty());
    let mut broken = t.clone();
    broken.as_object_mut().unwrap().remove("id");
    assert!(!schema_errors(&doc, "/v1/tasks/{id}", "get", 200, &broken).is_empty());
}

/// One sample of the text exposition.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// The server's metrics as they are now.
pub(crate) async fn scrape(c: &Cluster) -> Vec<Sample> {
    let text = c
        .http()
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_prometheus(&text)
}

/// The sum of the samples named `name` that carry every one of `labels`
/// (0 when there are none).
pub(crate) fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Parse the Prometheus text format strictly enough to catch a malformed line.
pub(crate) fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value on {line:?}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'),
            "bad metric name in {line:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let mut key = String::new();
            let end;
            loop {
                let (i, ch) = chars
                    .next()
                    .unwrap_or_else(|| panic!("open labels {line:?}"));
                match ch {
                    '}' => {
                        end = i;
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line:?}");
                        let mut value = String::new();
                        loop {
                            let (_, ch) = chars.next().unwrap_or_else(|| panic!("{line:?}"));
                            match ch {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => value.push('\n'),
                                    Some(other) => value.push(other),
                                    None => panic!("{line:?}"),
                                },
                                '"' => break,
                                other => value.push(other),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    other => key.push(other),
                }
            }
            rest = &body[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| typed.contains(*base))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no TYPE line");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_carry_every_family() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let job = c
        .submit(vec![
            task("noop", json!(null)),
            task("sleep", json!({"ms": 50})),
            task("noop", json!(null)),
        ])
        .await;
    assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);
    let res = c
        .http()
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let samples = parse_prometheus(&text);
    let has = |name: &str, labels: &[(&str, &str)]| {
        samples.iter().any(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    };
    assert!(
        has(
            "brigade_tasks",
            &[("queue", "default"), ("state", "queued")]
        ),
        "{text}"
    );
    assert!(has("brigade_tasks_submitted_total", &[]), "{text}");
    let leased: f64 = samples
        .iter()
        .filter(|s| s.name == "brigade_tasks_leased_total")
        .map(|s| s.value)
        .sum();
    assert!(leased >= 3.0, "leased {leased}");
    assert!(
        has("brigade_results_total", &[("status", "accepted")]),
        "{text}"
    );
    for kind in ["noop", "sleep"] {
        for family in ["brigade_task_queued_seconds", "brigade_task_run_seconds"] {
            assert!(
                has(
                    &format!("{family}_bucket"),
                    &[("kind", kind), ("le", "+Inf")]
                ),
                "{family} of {kind}:\n{text}"
            );
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels["kind"] == kind)
                .unwrap_or_else(|| panic!("{family}_count of {kind}"));
            assert!(count.value >= 1.0);
        }
    }
    let sleep_run = samples
        .iter()
        .find(|s| s.name == "brigade_task_run_seconds_sum" && s.labels["kind"] == "sleep")
        .unwrap();
    assert!(
        sleep_run.value >= 0.05,
        "a 50 ms sleep ran {}",
        sleep_run.value
    );
    assert!(has("brigade_workers", &[("state", "active")]), "{text}");
    assert!(has("brigade_worker_load", &[("worker", "w1")]), "{text}");
    assert!(
        has(
            "brigade_http_request_duration_seconds_bucket",
            &[("route", "/v1/jobs"), ("method", "POST")]
        ),
        "{text}"
    );
}

/// Read events until `job.finished`; returns their types.
async fn sse_types(url: String) -> Vec<String> {
    let res = reqwest::Client::new().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut types = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                let v: Value = serde_json::from_str(data.trim()).unwrap();
                let t = v["type"].as_str().unwrap().to_owned();
                types.push(t.clone());
                if t == "job.finished" {
                    return types;
                }
            }
        }
    }
    types
}

async fn ws_types(url: String) -> Vec<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut types = Vec::new();
    while let Some(msg) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg.unwrap() {
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            let t = v["type"].as_str().unwrap().to_owned();
            types.push(t.clone());
            if t == "job.finished" {
                break;
            }
        }
    }
    types
}

#[tokio::test]
async fn sse_and_websocket_both_deliver_a_jobs_events() {
    let c = Cluster::start().await.with_workers(&["w1"], 2, &[]).await;
    // Long enough for both streams to connect before it ends.
    let job = c.submit(vec![task("sleep", json!({"ms": 1500}))]).await;
    let sse = tokio::spawn(sse_types(format!("{}/v1/events?job={}", c.url, job.id)));
    let ws = tokio::spawn(ws_types(format!(
        "ws://127.0.0.1:{}/v1/events/ws?job={}",
        c.port, job.id
    )));
    for (name, stream) in [("SSE", sse), ("WebSocket", ws)] {
        let types = tokio::time::timeout(DEADLINE, stream)
            .await
            .unwrap_or_else(|_| panic!("{name}: no job.finished"))
            .unwrap();
        assert!(
            types.contains(&"task.succeeded".to_owned())
                && types.contains(&"job.finished".to_owned()),
            "{name} delivered {types:?}"
        );
    }
}

#[tokio::test]
async fn an_exec_tasks_stderr_lines_are_its_log_and_can_be_followed() {
    let c = Cluster::start()
        .await
        .with_workers(&["w1"], 2, &["--allow-exec"])
        .await;
    let script = "echo first >&2; sleep 2; echo out; echo second >&2";
    let job = c
        .submit(vec![task("exec", json!({"argv": ["sh", "-c", script]}))])
        .await;
    let tid = job.task_ids.clone().unwrap()[0].clone();
    c.until("running", || async {
        (c.client.task(&tid).await.ok()?.state == TaskState::Running).then_some(())
    })
    .await;

    let mut follow = c.client.follow_task_logs(&tid).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((first.line.as_str(), first.attempt), ("first", 1));
    // Streamed while the task still runs.
    assert_eq!(c.client.task(&tid).await.unwrap().state, TaskState::Running);
    let second = tokio::time::timeout(DEADLINE, follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.line, "second");
    // The stream ends once the task is finished.
    let end = tokio::time::timeout(DEADLINE, follow.next())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);

    let lines: Vec<String> = c
        .client
        .task_logs(&tid)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["first", "second"]);
    let page = c.client.task_logs_page(&tid, 1, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = c
        .client
        .task_logs_page(&tid, 1, page.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.items[0].line, "second");

    // Bad input is a 4xx naming the field; lines of a task not leased to the worker are refused.
    let http = c.http();
    let bad = http
        .get(format!("{}/v1/tasks/{tid}/logs?cursor=x", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let w = c.worker_named("w1").await;
    let bad: Value = json_of(
        http.post(format!("{}/v1/workers/{}/logs", c.url, w.id))
            .json(&json!({"logs": [{"task_id": tid, "attempt": 0, "lines": ["x"]}]}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "logs[0].attempt");
    let stale: Value = json_of(
        http.post(format!("{}/v1/workers/{}/logs", c.url, w.id))
            .json(&json!({"logs": [{"task_id": tid, "attempt": 1, "lines": ["late"]}]}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(stale["rejected"][0]["task_id"], json!(tid));

    // Deleting the job deletes its logs.
    c.client.delete_job(&job.id).await.unwrap();
    let gone = http
        .get(format!("{}/v1/tasks/{tid}/logs", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn the_throughput_history_counts_what_finished() {
    let c = Cluster::start().await.with_workers(&["w"], 8, &[]).await;
    let mut tasks = vec![task("noop", Value::Null); 25];
    tasks.push(task("fail", json!({"retryable": false})));
    let job = c.submit(tasks).await;
    c.finished(&job.id).await;
    let h: brigade_api::ThroughputView = c
        .http()
        .get(format!("{}/v1/stats/throughput", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (h.interval_ms, h.succeeded.len(), h.failed.len()),
        (1000, 300, 300)
    );
    assert_eq!(h.succeeded.iter().sum::<u64>(), 25, "{h:?}");
    assert_eq!(h.failed.iter().sum::<u64>(), 1);
}
