//! Callbacks end to end: a receiver on 127.0.0.1 (axum) that refuses the
//! first deliveries, a server that signs, retries with backoff and keeps the
//! delivery across a SIGKILL, the attempts listed by the API, the allow list,
//! and (PostgreSQL) two servers delivering each callback once.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use brigade_api::{Callback, JobState, JobSubmit};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use brigade_testkit::{Cluster, task};

use crate::observability::{scrape, total};

const SECRET: &str = "a-test-secret-of-some-length";

/// What the receiver got: each request's signature header and body.
#[derive(Default)]
struct Received {
    requests: Vec<(Option<String>, Vec<u8>)>,
    /// Answer 500 to this many requests first.
    refuse_first: usize,
    /// Hold the answer to the request with this number (from 1) until
    /// `release` fires, then refuse it.
    hold: Option<usize>,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Received>>,
    release: Arc<tokio::sync::Notify>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let (refuse, hold) = {
        let mut g = r.got.lock().unwrap();
        let sig = headers
            .get("brigade-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        g.requests.push((sig, body.to_vec()));
        let n = g.requests.len();
        (n <= g.refuse_first, g.hold == Some(n))
    };
    if hold {
        r.release.notified().await;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if refuse {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Start a receiver refusing the first `refuse_first` requests and holding
/// request number `hold`; its port.
async fn receiver_holding(refuse_first: usize, hold: Option<usize>) -> (u16, Receiver) {
    let r = Receiver {
        got: Arc::new(Mutex::new(Received {
            requests: Vec::new(),
            refuse_first,
            hold,
        })),
        release: Arc::new(tokio::sync::Notify::new()),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    (brigade_testkit::serve_on_loopback(app).await, r)
}

async fn receiver(refuse_first: usize) -> (u16, Receiver) {
    receiver_holding(refuse_first, None).await
}

/// Check a `Brigade-Signature` against the body, as a receiver would; the
/// timestamp.
fn verify(header: &str, body: &[u8]) -> i64 {
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .unwrap_or_else(|_| panic!("signature {header} does not match the body"));
    t.parse().unwrap()
}

fn server_args(port: u16) -> Vec<String> {
    vec![
        "--callback-allow".into(),
        format!("127.0.0.1:{port}"),
        "--callback-secret".into(),
        SECRET.into(),
        "--callback-backoff-ms".into(),
        "200".into(),
        "--callback-claim-ms".into(),
        "1500".into(),
    ]
}

async fn attempts(c: &Cluster, url: &str, job_id: &str) -> Vec<Value> {
    let res = c
        .http()
        .get(format!("{url}/v1/jobs/{job_id}/callbacks"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Vec<Value>>().await.unwrap()
}

fn with_callback(port: u16, tasks: Vec<brigade_api::TaskSpec>) -> JobSubmit {
    JobSubmit::new(tasks)
        .named("cb")
        .with_callback(Callback::new(format!("http://127.0.0.1:{port}/hook")))
}

/// The receiver refuses attempt 1 and holds attempt 2 while the server is
/// killed (SIGKILL) mid-request; the restarted server takes the delivery
/// over once the dead one's claim ran out and gets it through.
#[tokio::test]
async fn a_callback_is_signed_retried_and_survives_a_server_kill() {
    let (port, rx) = receiver_holding(1, Some(2)).await;
    let args = server_args(port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start_with(&args)
        .await
        .with_workers(&["w1"], 2, &[])
        .await;
    let job = c
        .client
        .submit(
            &with_callback(port, vec![task("echo", json!({"x": 1}))]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        job.callback.as_ref().map(|cb| cb.events.clone()),
        Some(vec!["job.finished".to_owned()])
    );
    assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);

    // Attempt 1 is refused; attempt 2 is in flight, held by the receiver.
    c.until("the second attempt is in flight", || async {
        (rx.got.lock().unwrap().requests.len() >= 2).then_some(())
    })
    .await;
    c.kill_server();
    rx.release.notify_one();
    c.start_server().await;

    let url = c.url.clone();
    let listed = c
        .until("the delivery went through after the restart", || async {
            let a = attempts(&c, &url, &job.id).await;
            a.iter().any(|a| a["status"] == "delivered").then_some(a)
        })
        .await;
    let summary: Vec<(u64, String, u64)> = listed
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap().to_owned(),
                a["http_status"].as_u64().unwrap(),
            )
        })
        .collect();
    // The attempt cut short by the kill was never recorded: it is made again.
    assert_eq!(
        summary,
        [
            (1, "failed".to_owned(), 500),
            (2, "delivered".to_owned(), 204)
        ],
        "attempts across the restart: {listed:?}"
    );
    assert!(listed[0]["error"].is_string());
    assert_eq!(listed[0]["url"], format!("http://127.0.0.1:{port}/hook"));
    let typed = c.client.job_callbacks(&job.id).await.unwrap();
    assert_eq!(typed.len(), 2, "the typed client reads the same list");
    assert_eq!(typed[1].status, "delivered");
    assert_eq!(typed[1].http_status, Some(204));

    let requests = std::mem::take(&mut rx.got.lock().unwrap().requests);
    assert_eq!(
        requests.len(),
        3,
        "refused, cut short by the kill, delivered; nothing more"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut deliveries = Vec::new();
    for (sig, body) in &requests {
        let t = verify(sig.as_deref().expect("a Brigade-Signature header"), body);
        assert!((now - t).abs() < 3600, "timestamp {t} is about now ({now})");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["event"], "job.finished");
        assert_eq!(v["id"], job.id);
        assert_eq!(v["state"], "succeeded");
        assert_eq!(v["progress"]["succeeded"], 1);
        deliveries.push(v["delivery_id"].as_str().unwrap().to_owned());
    }
    deliveries.dedup();
    assert_eq!(deliveries.len(), 1, "one delivery, attempted three times");
    // A body changed in transit fails the check.
    let (sig, body) = &requests[0];
    let mut forged = body.clone();
    forged.push(b' ');
    let forged_ok = std::panic::catch_unwind(|| verify(sig.as_deref().unwrap(), &forged));
    assert!(forged_ok.is_err(), "a changed body does not verify");

    let samples = scrape(&c).await;
    assert_eq!(
        total(
            &samples,
            "brigade_callback_deliveries_total",
            &[("outcome", "ok")]
        ),
        1.0,
        "the restarted server made the last attempt"
    );
}

/// Backoff: with the receiver refusing twice, the delivery is made on the
/// third attempt, and the attempts are listed in order.
#[tokio::test]
async fn a_refused_callback_is_retried_until_accepted() {
    let (port, rx) = receiver(2).await;
    let args = server_args(port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Cluster::start_with(&args)
        .await
        .with_workers(&["w1"], 2, &[])
        .await;
    // Submitted with the CLI's --callback.
    let out = std::process::Command::new(brigade_testkit::bin())
        .args([
            "submit",
            "--kind",
            "fail",
            "--input",
            r#"{"retryable": false}"#,
        ])
        .args(["--output", "json", "--server", &c.url, "--callback"])
        .arg(format!("http://127.0.0.1:{port}/hook"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: brigade_api::JobView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c.finished(&job.id).await.state, JobState::Failed);
    let url = c.url.clone();
    let listed = c
        .until("delivered", || async {
            let a = attempts(&c, &url, &job.id).await;
            a.iter().any(|a| a["status"] == "delivered").then_some(a)
        })
        .await;
    let statuses: Vec<&str> = listed
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "delivered"]);
    let requests = rx.got.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 3);
    let last: Value = serde_json::from_slice(&requests[2].1).unwrap();
    assert_eq!(last["state"], "failed", "a failed job is delivered too");
    let samples = scrape(&c).await;
    assert_eq!(
        total(
            &samples,
            "brigade_callback_deliveries_total",
            &[("outcome", "failed")]
        ),
        2.0
    );
}

#[tokio::test]
async fn a_callback_host_off_the_allow_list_is_refused() {
    // No --callback-allow: no callbacks at all.
    let c = Cluster::start().await;
    let (port, _) = receiver(0).await;
    for (cluster_args, url) in [
        (
            Vec::<String>::new(),
            format!("http://127.0.0.1:{port}/hook"),
        ),
        (
            server_args(port),
            format!("http://127.0.0.1:{}/hook", port.wrapping_add(1)),
        ),
        (server_args(port), format!("http://localhost:{port}/hook")),
    ] {
        let other;
        let target: &Cluster = if cluster_args.is_empty() {
            &c
        } else {
            let args: Vec<&str> = cluster_args.iter().map(String::as_str).collect();
            other = Cluster::start_with(&args).await;
            &other
        };
        let body = json!({
            "tasks": [{"kind": "noop"}],
            "callback": {"url": url}
        });
        let res = target
            .http()
            .post(format!("{}/v1/jobs", target.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{url}");
        let problem: Value = res.json().await.unwrap();
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(fields, ["callback.url"], "{url}: {problem}");
    }
    // The CLI says so too.
    let out = std::process::Command::new(brigade_testkit::bin())
        .args(["submit", "--kind", "noop", "--server", &c.url, "--callback"])
        .arg(format!("http://127.0.0.1:{port}/hook"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("callback.url"), "{err}");
    // Shape errors name their field too.
    let res = c
        .http()
        .post(format!("{}/v1/jobs", c.url))
        .json(&json!({
            "tasks": [{"kind": "noop"}],
            "callback": {"url": "https://h.example/x", "events": ["job.exploded"]}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem.to_string().contains("callback.events[0]"),
        "{problem}"
    );
    // A job without a callback lists no attempts; an unknown job is 404.
    let job = c.submit(vec![task("noop", json!(null))]).await;
    assert!(attempts(&c, &c.url, &job.id).await.is_empty());
    let res = c
        .http()
        .get(format!("{}/v1/jobs/nope/callbacks", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn two_servers_deliver_each_callback_once() {
    let (port, got) = receiver(0).await;
    let args = server_args(port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start_with(&args).await;
    if !c.shared_database() {
        eprintln!("skipped: needs PostgreSQL (BRIGADE_TEST_POSTGRES)");
        return;
    }
    let b = c.spawn_peer_server("server-b").await;
    let a = c.url.clone();
    c.spawn_worker_on("wa", &a, 4);
    c.spawn_worker_on("wb", &b, 4);
    c.worker_named("wa").await;
    c.worker_named("wb").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let job = with_callback(port, vec![task("sleep", json!({ "ms": 20 + i }))]);
        ids.push(c.client.submit(&job, None).await.unwrap().id);
    }
    for id in &ids {
        let url = c.url.clone();
        c.until("delivered", || async {
            let a = attempts(&c, &url, id).await;
            a.iter().any(|a| a["status"] == "delivered").then_some(())
        })
        .await;
    }
    for id in &ids {
        let a = attempts(&c, &b, id).await;
        assert_eq!(a.len(), 1, "job {id}: one attempt, by one server: {a:?}");
    }
    let requests = got.got.lock().unwrap().requests.len();
    assert_eq!(requests, ids.len(), "each callback delivered once");
}
