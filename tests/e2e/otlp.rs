//! Traces end to end: a real server and a real worker with `--otlp-endpoint`
//! pointing at an OTLP/HTTP receiver on 127.0.0.1 (axum, protobuf bodies
//! decoded with prost), one trace per job: the client's `traceparent` is
//! the parent of `job.submit`, and every task's `task.lease`, `task.result`
//! (server) and `task.run` (worker) spans are in the job's trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use brigade_api::{JobState, JobSubmit, JobView};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use brigade_testkit::{Cluster, task};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn traces(State(r): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut got = r.spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    service: service.clone(),
                    name: s.name.clone(),
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    StatusCode::OK
}

/// Start the receiver; its port.
async fn receiver() -> (u16, Receiver) {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .with_state(r.clone());
    (brigade_testkit::serve_on_loopback(app).await, r)
}

/// Submit `n` tasks over plain HTTP, with `traceparent` when given.
async fn submit(c: &Cluster, n: usize, traceparent: Option<&str>) -> JobView {
    let tasks = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                task("noop", json!(null))
            } else {
                task("echo", json!({ "i": i }))
            }
        })
        .collect();
    let body = JobSubmit::new(tasks).named("traced");
    let mut req = c.http().post(format!("{}/v1/jobs", c.url)).json(&body);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

/// SIGTERM a process and wait until it exits, so it flushes its spans.
async fn stop(child: &mut std::process::Child, what: &str) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn otlp_one_trace_per_job_from_submit_to_run() {
    let (port, received) = receiver().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut c = Cluster::start_with(&["--otlp-endpoint", &endpoint]).await;
    c.spawn_worker("w1", 4, &["--otlp-endpoint", &endpoint]);
    c.worker_named("w1").await;

    let client_tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let traced = submit(&c, 4, Some(&client_tp)).await;
    let untraced = submit(&c, 2, None).await;
    // A malformed header is ignored: the job gets a trace of its own.
    let malformed = submit(&c, 1, Some("00-nothex-b7ad6b7169203331-01")).await;
    for job in [&traced, &untraced, &malformed] {
        assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);
    }
    let traced_tasks: Vec<String> = traced.task_ids.clone().unwrap();
    assert_eq!(traced_tasks.len(), 4);

    // Graceful stops flush the batch exporters.
    let (_, mut worker) = c.workers.pop().unwrap();
    stop(&mut worker, "worker").await;
    let mut server = c.server.take().unwrap();
    stop(&mut server, "server").await;

    // Every span of the first job, once all have arrived.
    let want = 1 + 3 * traced_tasks.len();
    let spans: Vec<Got> = c
        .until("the traced job's spans", || async {
            let all = received.spans.lock().unwrap().clone();
            let mine: Vec<Got> = all
                .into_iter()
                .filter(|s| s.trace_id == CLIENT_TRACE)
                .collect();
            (mine.len() >= want).then_some(mine)
        })
        .await;

    // job.submit: the client's span is its parent.
    let submits: Vec<&Got> = spans.iter().filter(|s| s.name == "job.submit").collect();
    assert_eq!(submits.len(), 1, "{spans:#?}");
    let root = submits[0];
    assert_eq!(root.service, "brigade-server");
    assert_eq!(root.parent_span_id, CLIENT_SPAN);
    assert_eq!(root.attributes.get("brigade.job_id"), Some(&traced.id));

    // Each task: a lease and a result on the server, a run on the worker,
    // each a child of the job's submit span.
    for id in &traced_tasks {
        for (name, service) in [
            ("task.lease", "brigade-server"),
            ("task.result", "brigade-server"),
            ("task.run", "brigade-worker"),
        ] {
            let of_task: Vec<&Got> = spans
                .iter()
                .filter(|s| s.name == name && s.attributes.get("brigade.task_id") == Some(id))
                .collect();
            assert_eq!(of_task.len(), 1, "{name} of {id}: {spans:#?}");
            let s = of_task[0];
            assert_eq!(s.service, service, "{name} of {id}");
            assert_eq!(s.trace_id, CLIENT_TRACE, "{name} of {id}");
            assert_eq!(s.parent_span_id, root.span_id, "{name} of {id}");
            assert_eq!(s.attributes.get("brigade.job_id"), Some(&traced.id));
        }
        let run = spans
            .iter()
            .find(|s| s.name == "task.run" && s.attributes.get("brigade.task_id") == Some(id))
            .unwrap();
        assert_eq!(
            run.attributes.get("brigade.attempt").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            run.attributes.get("brigade.outcome").map(String::as_str),
            Some("succeeded")
        );
        assert!(
            matches!(
                run.attributes.get("brigade.task_kind").map(String::as_str),
                Some("noop" | "echo")
            ),
            "{run:?}"
        );
    }

    // The jobs without a (valid) traceparent: each its own new trace, from
    // its own submit span, with its tasks' spans in it.
    let all = received.spans.lock().unwrap().clone();
    let mut seen_traces = vec![CLIENT_TRACE.to_owned()];
    for job in [&untraced, &malformed] {
        let submit = all
            .iter()
            .find(|s| s.name == "job.submit" && s.attributes.get("brigade.job_id") == Some(&job.id))
            .unwrap_or_else(|| panic!("job.submit of {}: {all:#?}", job.id));
        assert!(submit.parent_span_id.is_empty(), "a root span: {submit:?}");
        assert!(
            !seen_traces.contains(&submit.trace_id),
            "one trace per job: {submit:?}"
        );
        seen_traces.push(submit.trace_id.clone());
        for id in job.task_ids.as_ref().unwrap() {
            let run = all
                .iter()
                .find(|s| s.name == "task.run" && s.attributes.get("brigade.task_id") == Some(id))
                .unwrap_or_else(|| panic!("task.run of {id}"));
            assert_eq!(run.trace_id, submit.trace_id);
            assert_eq!(run.parent_span_id, submit.span_id);
        }
    }
    eprintln!("received {} spans", all.len());
    // Nothing but the spans of traces is exported.
    for s in &all {
        assert!(
            ["job.submit", "task.lease", "task.result", "task.run"].contains(&s.name.as_str()),
            "{s:?}"
        );
    }
}
