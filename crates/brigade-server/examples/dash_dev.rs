//! A server with fake workers and demo jobs, for working on the dashboard.
//!
//! `cargo run -p brigade-server --example dash_dev` then open <http://127.0.0.1:7077/>.
//! Environment: `DASH_ADDR` (default `127.0.0.1:7077`), `DASH_WORKERS` (default 3),
//! `DASH_DEMO=0` to submit no demo jobs or schedules (a browser test submits its own).
//! The workers speak the HTTP worker protocol like `brigade worker` does: join,
//! long-poll leases, heartbeats with a made-up load, results. They run `sleep`
//! (`{"ms": N}`), `noop`, `echo`, `fail` and `flaky`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brigade_server::ServerConfig;
use serde_json::{Value, json};

type Running = Arc<Mutex<HashSet<String>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("DASH_ADDR").unwrap_or_else(|_| "127.0.0.1:7077".into());
    let workers: usize = std::env::var("DASH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let demo = std::env::var("DASH_DEMO").map(|v| v != "0").unwrap_or(true);
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        listen: addr.parse()?,
        database_url: format!("sqlite://{}", dir.path().join("dash.db").display()),
        ..ServerConfig::default()
    };
    let server = brigade_server::start(config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    let base = format!("http://{}", server.addr);
    println!("dashboard: {base}/");
    let http = reqwest::Client::new();
    for i in 0..workers {
        let capacity = [8, 4, 6][i % 3];
        tokio::spawn(worker(
            http.clone(),
            base.clone(),
            format!("kitchen-{}", i + 1),
            capacity,
        ));
    }
    if demo {
        tokio::spawn(demo_jobs(http.clone(), base.clone()));
    }
    server.task.await??;
    Ok(())
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Option<Value> {
    let res = http.post(url).json(&body).send().await.ok()?;
    if !res.status().is_success() {
        eprintln!("{} {}", res.status(), res.text().await.unwrap_or_default());
        return None;
    }
    res.json().await.ok()
}

async fn worker(http: reqwest::Client, base: String, name: String, capacity: u32) {
    let joined = loop {
        let body = json!({"name": name, "hostname": "devbox", "queues": ["default", "batch"],
            "kinds": ["sleep", "noop", "echo", "fail", "flaky"], "capacity": capacity, "version": "dev"});
        if let Some(v) = post(&http, format!("{base}/v1/workers"), body).await {
            break v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let id = joined["id"].as_str().unwrap_or_default().to_owned();
    let beat = joined["heartbeat_ms"].as_u64().unwrap_or(5000);
    let running: Running = Arc::default();
    {
        let (http, base, id, running) = (http.clone(), base.clone(), id.clone(), running.clone());
        tokio::spawn(async move {
            let mut t = 0.0_f64;
            loop {
                let ids: Vec<String> = running
                    .lock()
                    .map(|r| r.iter().cloned().collect())
                    .unwrap_or_default();
                let n = ids.len() as f64;
                t += 1.0;
                let load = json!({"cpu": (0.15 + 0.7 * n / f64::from(capacity) + 0.08 * (t / 3.0).sin()).clamp(0.0, 1.0),
                    "memory": 0.35 + 0.05 * (t / 7.0).sin(), "running": ids.len(), "capacity": capacity});
                post(
                    &http,
                    format!("{base}/v1/workers/{id}/heartbeat"),
                    json!({"running": ids, "load": load}),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(beat.min(2000))).await;
            }
        });
    }
    loop {
        let free = capacity.saturating_sub(running.lock().map(|r| r.len() as u32).unwrap_or(0));
        if free == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let Some(lease) = post(
            &http,
            format!("{base}/v1/workers/{id}/lease"),
            json!({"max": free, "wait_ms": 5000}),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        for task in lease["tasks"].as_array().cloned().unwrap_or_default() {
            let tid = task["id"].as_str().unwrap_or_default().to_owned();
            if let Ok(mut r) = running.lock() {
                r.insert(tid.clone());
            }
            let (http, base, id, running) =
                (http.clone(), base.clone(), id.clone(), running.clone());
            tokio::spawn(async move {
                let result = run(&task).await;
                let mut result = result;
                result["task_id"] = json!(tid);
                result["attempt"] = task["attempt"].clone();
                post(
                    &http,
                    format!("{base}/v1/workers/{id}/results"),
                    json!({"results": [result]}),
                )
                .await;
                if let Ok(mut r) = running.lock() {
                    r.remove(&tid);
                }
            });
        }
    }
}

async fn run(task: &Value) -> Value {
    let input = &task["input"];
    match task["kind"].as_str().unwrap_or_default() {
        "sleep" => {
            let ms = input["ms"].as_u64().unwrap_or(200);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json!({"outcome": "succeeded", "output": {"slept_ms": ms}, "duration_ms": ms})
        }
        "echo" => json!({"outcome": "succeeded", "output": input}),
        "fail" => {
            tokio::time::sleep(Duration::from_millis(150)).await;
            json!({"outcome": "failed", "retryable": input["retryable"].as_bool().unwrap_or(true),
                "error": {"message": input["message"].as_str().unwrap_or("failed on purpose"), "kind": "handler"}})
        }
        "flaky" => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let attempt = task["attempt"].as_u64().unwrap_or(1);
            if attempt <= input["fail_attempts"].as_u64().unwrap_or(1) {
                json!({"outcome": "failed", "retryable": true, "error": {"message": format!("flaky: attempt {attempt} fails"), "kind": "handler"}})
            } else {
                json!({"outcome": "succeeded", "output": {"attempt": attempt}})
            }
        }
        _ => json!({"outcome": "succeeded", "output": null}),
    }
}

/// Schedules for the Schedules page: one firing often, one on a cron in a
/// zone, one paused.
async fn demo_schedules(http: &reqwest::Client, base: &str) {
    let sleep =
        |ms: u64| json!({"name": "tick", "tasks": [{"kind": "sleep", "input": {"ms": ms}}]});
    for body in [
        json!({"name": "heartbeat-check", "every_ms": 15000, "job": sleep(800)}),
        json!({"name": "nightly-report", "cron": "0 3 * * *", "timezone": "Europe/Paris", "job": sleep(2000)}),
        json!({"name": "weekly-cleanup", "cron": "0 4 * * 0", "paused": true, "job": sleep(500)}),
    ] {
        post(http, format!("{base}/v1/schedules"), body).await;
    }
}

async fn demo_jobs(http: reqwest::Client, base: String) {
    demo_schedules(&http, &base).await;
    let mut n = 0u64;
    loop {
        n += 1;
        let mut tasks: Vec<Value> = (0..30 + (n % 4) * 15)
            .map(|i| json!({"kind": "sleep", "name": format!("slice-{i}"), "input": {"ms": 300 + (i * 137 + n * 71) % 1500}}))
            .collect();
        if n.is_multiple_of(3) {
            tasks.push(json!({"kind": "fail", "name": "burnt-toast", "input": {"message": "the toaster caught fire"}, "max_attempts": 2,
                "backoff": {"initial_ms": 500, "factor": 2.0, "max_ms": 2000, "jitter": false}}));
        }
        if n.is_multiple_of(2) {
            tasks.push(
                json!({"kind": "flaky", "name": "wobbly", "input": {"fail_attempts": 1},
                "backoff": {"initial_ms": 300, "factor": 2.0, "max_ms": 1000, "jitter": false}}),
            );
        }
        let names = [
            "fruit-salad",
            "nightly-render",
            "thumbnails",
            "index-rebuild",
            "ml-eval",
        ];
        let body = json!({"name": names[(n as usize) % names.len()], "queue": if n.is_multiple_of(4) { "batch" } else { "default" },
            "labels": {"team": "kitchen"}, "tasks": tasks});
        post(&http, format!("{base}/v1/jobs"), body).await;
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
}
