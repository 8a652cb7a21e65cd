//! Tokens, roles, ownership, limits and TLS, against the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use brigade_testkit::{
    Cluster, DEADLINE, KillOnDrop, bin, free_port, server_command, task, wait_ready, worker_command,
};

const ADMIN: &str = "admin-secret-0123456789";
const ALICE: &str = "alice-secret-0123456789";
const BOB: &str = "bob-secret-0123456789abc";
const W1: &str = "w1-secret-0123456789abcd";
const W2: &str = "w2-secret-0123456789abcd";

/// An auth file with an admin, two clients and two workers; `bob` given by hash.
fn auth_file(dir: &std::path::Path) -> String {
    let path = dir.join("tokens.toml");
    let bob_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(BOB.as_bytes()))
    };
    std::fs::write(
        &path,
        format!(
            r#"
[[token]]
name = "root"
role = "admin"
secret = "{ADMIN}"

[[token]]
name = "alice"
role = "client"
secret = "{ALICE}"

[[token]]
name = "bob"
role = "client"
secret_hash = "{bob_hash}"

[[token]]
name = "w1"
role = "worker"
secret = "{W1}"

[[token]]
name = "w2"
role = "worker"
secret = "{W2}"
"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn secured(extra: &[&str]) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = auth_file(dir.path());
    let mut args = vec!["--auth-file", file.as_str()];
    args.extend_from_slice(extra);
    let mut c = Cluster::start_with(&args).await;
    c.use_token(Some(ADMIN));
    (c, dir)
}

async fn call(
    c: &Cluster,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = c.http().request(method, format!("{}{path}", c.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

async fn access_token(c: &Cluster, id: &str, secret: &str) -> (u16, Value) {
    let res = c
        .http()
        .post(format!("{}/v1/auth/token", c.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn join_body(name: &str) -> Value {
    json!({"name": name, "hostname": "h", "queues": ["default"], "kinds": ["noop"],
           "labels": {}, "capacity": 1, "version": "t"})
}

/// Every private route, with a body that would be valid, and the token of a role it refuses.
fn private_routes(
    job: &str,
    task: &str,
    worker: &str,
    schedule: &str,
) -> Vec<(Method, String, Option<Value>, &'static str)> {
    let submit = json!({"tasks": [{"kind": "noop"}]});
    let every = json!({"every_ms": 3_600_000, "job": {"tasks": [{"kind": "noop"}]}});
    vec![
        (Method::POST, "/v1/schedules".into(), Some(every), W1),
        (Method::GET, "/v1/schedules".into(), None, W1),
        (Method::GET, format!("/v1/schedules/{schedule}"), None, W1),
        (
            Method::PATCH,
            format!("/v1/schedules/{schedule}"),
            Some(json!({"name": "x"})),
            W1,
        ),
        (
            Method::DELETE,
            format!("/v1/schedules/{schedule}"),
            None,
            W1,
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/pause"),
            None,
            W1,
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/resume"),
            None,
            W1,
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/trigger"),
            None,
            W1,
        ),
        (
            Method::GET,
            format!("/v1/schedules/{schedule}/jobs"),
            None,
            W1,
        ),
        (Method::POST, "/v1/jobs".into(), Some(submit), W1),
        (Method::GET, "/v1/jobs".into(), None, W1),
        (Method::GET, format!("/v1/jobs/{job}"), None, W1),
        (Method::DELETE, format!("/v1/jobs/{job}"), None, W1),
        (Method::GET, format!("/v1/jobs/{job}/tasks"), None, W1),
        (Method::POST, format!("/v1/jobs/{job}/cancel"), None, W1),
        (Method::GET, format!("/v1/tasks/{task}"), None, W1),
        (Method::POST, format!("/v1/tasks/{task}/cancel"), None, W1),
        (Method::POST, format!("/v1/tasks/{task}/retry"), None, W1),
        (Method::GET, "/v1/tasks".into(), None, W1),
        (
            Method::POST,
            "/v1/tasks/retry".into(),
            Some(json!({"state": "failed"})),
            ALICE,
        ),
        (
            Method::POST,
            "/v1/tasks/cancel".into(),
            Some(json!({"kind": "noop"})),
            ALICE,
        ),
        (
            Method::POST,
            "/v1/workers".into(),
            Some(join_body("x")),
            ALICE,
        ),
        (Method::GET, "/v1/workers".into(), None, ""),
        (Method::GET, format!("/v1/workers/{worker}"), None, ""),
        (Method::DELETE, format!("/v1/workers/{worker}"), None, ALICE),
        (
            Method::POST,
            format!("/v1/workers/{worker}/lease"),
            Some(json!({"max": 1, "wait_ms": 0})),
            ALICE,
        ),
        (
            Method::POST,
            format!("/v1/workers/{worker}/heartbeat"),
            Some(json!({"running": []})),
            ALICE,
        ),
        (
            Method::POST,
            format!("/v1/workers/{worker}/results"),
            Some(json!({"results": []})),
            ALICE,
        ),
        (
            Method::POST,
            format!("/v1/workers/{worker}/drain"),
            None,
            ALICE,
        ),
        (Method::GET, "/v1/queues".into(), None, W1),
        (Method::POST, "/v1/queues/default/pause".into(), None, ALICE),
        (
            Method::POST,
            "/v1/queues/default/resume".into(),
            None,
            ALICE,
        ),
        (Method::GET, "/v1/events".into(), None, ""),
        (Method::GET, "/v1/events/ws".into(), None, ""),
        (Method::GET, "/metrics".into(), None, ALICE),
    ]
}

#[tokio::test]
async fn every_private_route_refuses_missing_bad_expired_and_wrong_role_tokens() {
    let (c, _dir) = secured(&["--access-token-ttl-s", "1"]).await;
    // Something real behind the ids, so a 404 cannot stand in for a refusal.
    let job = {
        let client = brigade_client::Client::new(&c.url, Some(ALICE.into())).unwrap();
        client
            .submit(
                &brigade_api::JobSubmit::new(vec![task("noop", Value::Null)]),
                None,
            )
            .await
            .unwrap()
    };
    let task_id = job.task_ids.as_ref().unwrap()[0].clone();
    let schedule = brigade_client::Client::new(&c.url, Some(ALICE.into()))
        .unwrap()
        .create_schedule(&brigade_api::ScheduleCreate::every(
            3_600_000,
            brigade_api::JobSubmit::new(vec![task("noop", Value::Null)]),
        ))
        .await
        .unwrap();
    let (s, _, body) = call(
        &c,
        Method::POST,
        "/v1/workers",
        Some(W1),
        Some(join_body("w1")),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let worker: Value = serde_json::from_str(&body).unwrap();
    let worker = worker["id"].as_str().unwrap().to_owned();

    let (s, expired) = access_token(&c, "alice", ALICE).await;
    assert_eq!(s, 200, "{expired}");
    assert_eq!(expired["token_type"], "Bearer");
    assert_eq!(expired["expires_in"], 1);
    let expired = expired["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut checked = 0;
    for (method, path, body, wrong) in private_routes(&job.id, &task_id, &worker, &schedule.id) {
        for (what, token) in [
            ("no token", None),
            ("bad token", Some("not-a-token-of-this-server")),
            ("forged access token", Some("bga.eyJzdWIiOiJyb290In0.AAAA")),
            ("expired access token", Some(expired.as_str())),
        ] {
            let (s, h, text) = call(&c, method.clone(), &path, token, body.clone()).await;
            assert_eq!(s, 401, "{what}: {method} {path}: {text}");
            assert_eq!(
                h.get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Bearer realm=\"brigade\""),
                "{method} {path}"
            );
            assert_eq!(h["content-type"], "application/problem+json");
            checked += 1;
        }
        if !wrong.is_empty() {
            let (s, h, text) = call(&c, method.clone(), &path, Some(wrong), body.clone()).await;
            assert_eq!(s, 403, "wrong role: {method} {path}: {text}");
            assert_eq!(h["content-type"], "application/problem+json");
            checked += 1;
        }
    }
    assert!(checked > 90, "{checked}");

    // The public routes need no token.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/", "/"] {
        let (s, _, _) = call(&c, Method::GET, path, None, None).await;
        assert_eq!(s, 200, "{path}");
    }
    // A fresh access token works, as do static tokens; the SSE stream accepts ?access_token=.
    let (_, fresh) = access_token(&c, "root", ADMIN).await;
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    let (s, _, _) = call(&c, Method::GET, "/metrics", Some(&fresh), None).await;
    assert_eq!(s, 200);
    let res = c
        .http()
        .get(format!("{}/v1/events?access_token={fresh}", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (s, _, _) = call(
        &c,
        Method::GET,
        &format!("/v1/jobs?access_token={fresh}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 401, "?access_token= is for the event streams only");
    // Wrong credentials and grants get RFC 6749 errors.
    let (s, e) = access_token(&c, "alice", BOB).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_client")));
    let res = c
        .http()
        .post(format!("{}/v1/auth/token", c.url))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "alice"),
            ("client_secret", ALICE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"], "unsupported_grant_type");
    // No secret in the server's log.
    let log = c.read_log("server");
    for secret in [ADMIN, ALICE, BOB, W1, W2, fresh.as_str(), expired.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[tokio::test]
async fn clients_see_only_their_own_schedules_and_the_jobs_they_make() {
    let (c, _dir) = secured(&[]).await;
    let alice = brigade_client::Client::new(&c.url, Some(ALICE.into())).unwrap();
    let bob = brigade_client::Client::new(&c.url, Some(BOB.into())).unwrap();
    let mut every = brigade_api::ScheduleCreate::every(
        3_600_000,
        brigade_api::JobSubmit::new(vec![task("noop", Value::Null)]).named("alices"),
    );
    every.overlap = Some(brigade_api::Overlap::Allow);
    let s = alice.create_schedule(&every).await.unwrap();
    bob.create_schedule(&every).await.unwrap();
    // A schedule of another client does not exist for bob: 404 everywhere.
    let status = |e: brigade_client::ClientError| e.status().map(|s| s.as_u16());
    assert_eq!(status(bob.schedule(&s.id).await.unwrap_err()), Some(404));
    assert_eq!(
        status(bob.pause_schedule(&s.id).await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status(bob.trigger_schedule(&s.id).await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status(bob.schedule_jobs(&s.id).await.unwrap_err()),
        Some(404)
    );
    assert_eq!(
        status(bob.delete_schedule(&s.id).await.unwrap_err()),
        Some(404)
    );
    let patch = brigade_api::SchedulePatch {
        name: Some("taken".into()),
        ..Default::default()
    };
    assert_eq!(
        status(bob.update_schedule(&s.id, &patch).await.unwrap_err()),
        Some(404)
    );
    // Lists: each client its own, the admin all.
    let mine = alice.schedules().await.unwrap();
    assert_eq!(
        mine.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        [s.id.as_str()]
    );
    assert_eq!(bob.schedules().await.unwrap().len(), 1);
    assert_eq!(c.client.schedules().await.unwrap().len(), 2);
    // The jobs a schedule makes belong to its owner.
    let job = alice.trigger_schedule(&s.id).await.unwrap();
    assert_eq!(
        alice.job(&job.id).await.unwrap().schedule_id.as_deref(),
        Some(s.id.as_str())
    );
    assert_eq!(status(bob.job(&job.id).await.unwrap_err()), Some(404));
    assert_eq!(c.client.schedule_jobs(&s.id).await.unwrap().len(), 1);
    // The admin may act on anyone's.
    assert!(c.client.pause_schedule(&s.id).await.unwrap().paused);
    c.client.delete_schedule(&s.id).await.unwrap();
    assert_eq!(status(alice.schedule(&s.id).await.unwrap_err()), Some(404));
}

#[tokio::test]
async fn clients_see_only_their_own_jobs_and_workers_speak_only_for_their_own() {
    let (c, _dir) = secured(&[]).await;
    let alice = brigade_client::Client::new(&c.url, Some(ALICE.into())).unwrap();
    let bob = brigade_client::Client::new(&c.url, Some(BOB.into())).unwrap();
    let submit = brigade_api::JobSubmit::new(vec![task("noop", Value::Null)]).named("mine");
    let job = alice.submit(&submit, None).await.unwrap();
    // Bob gets 404, not 403: a job of another client does not exist for him,
    // so its id cannot be probed. Alice and the admin see it.
    assert_eq!(bob.job(&job.id).await.unwrap_err().status().unwrap(), 404);
    assert_eq!(
        bob.cancel_job(&job.id).await.unwrap_err().status().unwrap(),
        404
    );
    assert_eq!(
        bob.job_tasks(&job.id, None)
            .await
            .unwrap_err()
            .status()
            .unwrap(),
        404
    );
    let (s, _, _) = call(
        &c,
        Method::GET,
        &format!("/v1/tasks/{}", job.task_ids.as_ref().unwrap()[0]),
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = call(
        &c,
        Method::POST,
        &format!("/v1/tasks/{}/cancel", job.task_ids.as_ref().unwrap()[0]),
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = call(
        &c,
        Method::DELETE,
        &format!("/v1/jobs/{}", job.id),
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (_, _, list) = call(&c, Method::GET, "/v1/jobs", Some(BOB), None).await;
    assert!(!list.contains(&job.id), "{list}");
    let (_, _, list) = call(&c, Method::GET, "/v1/jobs", Some(ALICE), None).await;
    assert!(list.contains(&job.id), "{list}");
    assert_eq!(alice.job(&job.id).await.unwrap().id, job.id);
    assert_eq!(c.client.job(&job.id).await.unwrap().id, job.id);

    // w1 registers a worker; w2 may not lease, heartbeat, report or leave for it.
    let (s, _, body) = call(
        &c,
        Method::POST,
        "/v1/workers",
        Some(W1),
        Some(join_body("one")),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _, body) = call(
        &c,
        Method::POST,
        &format!("/v1/workers/{id}/lease"),
        Some(W1),
        Some(json!({"max": 1, "wait_ms": 5000})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let leased = serde_json::from_str::<Value>(&body).unwrap();
    let tid = leased["tasks"][0]["id"].as_str().unwrap().to_owned();
    let result =
        json!({"results": [{"task_id": tid, "attempt": 1, "outcome": "succeeded", "output": 1}]});
    for (path, body) in [
        (
            format!("/v1/workers/{id}/lease"),
            Some(json!({"max": 1, "wait_ms": 0})),
        ),
        (
            format!("/v1/workers/{id}/heartbeat"),
            Some(json!({"running": [tid]})),
        ),
        (format!("/v1/workers/{id}/results"), Some(result.clone())),
    ] {
        let (s, _, text) = call(&c, Method::POST, &path, Some(W2), body).await;
        assert_eq!(s, 403, "{path}: {text}");
    }
    let (s, _, _) = call(
        &c,
        Method::DELETE,
        &format!("/v1/workers/{id}"),
        Some(W2),
        None,
    )
    .await;
    assert_eq!(s, 403);
    // The job is untouched by the refused report; w1's own report is accepted.
    assert!(!alice.job(&job.id).await.unwrap().state.is_finished());
    let (s, _, text) = call(
        &c,
        Method::POST,
        &format!("/v1/workers/{id}/results"),
        Some(W1),
        Some(result),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains(&tid));
    assert_eq!(alice.job(&job.id).await.unwrap().progress.succeeded, 1);
}

#[tokio::test]
async fn worker_process_with_a_token_runs_jobs_and_rate_limits_answer_429() {
    let (mut c, _dir) = secured(&["--rate-limit-per-s", "5"]).await;
    c.spawn_worker("tw", 2, &["--token", W1]);
    c.worker_named("tw").await;
    let alice = brigade_client::Client::new(&c.url, Some(ALICE.into())).unwrap();
    let job = alice
        .submit(
            &brigade_api::JobSubmit::new(vec![task("echo", json!(1)), task("echo", json!(2))]),
            None,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match alice.wait_job(&job.id, Duration::from_millis(1000)).await {
            Ok(j) if j.state.is_finished() => {
                assert_eq!(j.progress.succeeded, 2);
                break;
            }
            _ => assert!(Instant::now() < deadline, "job did not finish"),
        }
    }
    // Bob's bucket (5/s, burst 10) runs dry; the answer says when to come back.
    let mut limited = None;
    for _ in 0..40 {
        let (s, h, text) = call(&c, Method::GET, "/v1/jobs", Some(BOB), None).await;
        if s == 429 {
            limited = Some((h, text));
            break;
        }
        assert_eq!(s, 200);
    }
    let (h, text) = limited.expect("no 429 after 40 quick requests at 5/s");
    assert!(h.contains_key("retry-after"), "{text}");
    assert_eq!(h["content-type"], "application/problem+json");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_413_400_422() {
    let (c, _dir) = secured(&["--max-body-bytes", "65536"]).await;
    let big = json!({"tasks": [{"kind": "echo", "input": "x".repeat(100_000)}]});
    let (s, _, text) = call(&c, Method::POST, "/v1/jobs", Some(ALICE), Some(big)).await;
    assert_eq!(s, 413, "{text}");
    let res = c
        .http()
        .post(format!("{}/v1/jobs", c.url))
        .bearer_auth(ALICE)
        .header("content-type", "application/json")
        .body("{\"tasks\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (s, _, _) = call(
        &c,
        Method::POST,
        "/v1/jobs",
        Some(ALICE),
        Some(json!({"tasks": [{"kind": "NO SUCH"}]})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _, _) = call(
        &c,
        Method::POST,
        "/v1/workers",
        Some(W1),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, 422);
    // The token endpoint wants a form.
    let res = c
        .http()
        .post(format!("{}/v1/auth/token", c.url))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn open_mode_off_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let port = free_port().unwrap();
    let listen = format!("0.0.0.0:{port}");
    let out = server_command(&bin(), &listen, &db)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen") && err.contains("--insecure"),
        "{err}"
    );

    let child = server_command(&bin(), &listen, &db)
        .arg("--insecure")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child);
    let client = brigade_client::Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    wait_ready(&client).await;
    assert!(
        client.queues().await.is_ok(),
        "open mode: everyone is an admin"
    );
}

#[tokio::test]
async fn tls_round_trip_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let file = auth_file(dir.path());
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let port = free_port().unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = server_command(&bin(), &format!("127.0.0.1:{port}"), &db)
        .args([
            "--auth-file",
            &file,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _server = KillOnDrop(child);
    let url = format!("https://127.0.0.1:{port}");
    let opts = brigade_client::ClientOptions::with_ca_cert_file(&cert).unwrap();
    let admin =
        brigade_client::Client::with_options(&url, Some(ADMIN.into()), opts.clone()).unwrap();
    wait_ready(&admin).await;

    // Without the CA the certificate is not trusted.
    let untrusting = brigade_client::Client::new(&url, Some(ADMIN.into())).unwrap();
    assert!(untrusting.ready().await.is_err());
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = brigade_client::Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    assert!(plain.ready().await.is_err());

    // A worker and the CLI trust it with --ca-cert; a job runs end to end.
    let wlog = std::fs::File::create(dir.path().join("worker.log")).unwrap();
    let worker = worker_command(&bin(), &url, "tls-w", 8)
        .args(["--token", W1, "--ca-cert", cert.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(wlog)
        .spawn()
        .unwrap();
    let _worker = KillOnDrop(worker);
    let alice = brigade_client::Client::with_options(&url, Some(ALICE.into()), opts).unwrap();
    let job = alice
        .submit(
            &brigade_api::JobSubmit::new(vec![task("echo", json!({"over": "tls"}))]),
            None,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let j = alice
            .wait_job(&job.id, Duration::from_millis(1000))
            .await
            .unwrap();
        if j.state.is_finished() {
            assert_eq!(j.progress.succeeded, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not finish; worker log:\n{}",
            std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
        );
    }
    let out = Command::new(bin())
        .args([
            "--server",
            &url,
            "--token",
            ALICE,
            "--ca-cert",
            cert.to_str().unwrap(),
            "status",
            &job.id,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn clients_follow_only_their_own_jobs_events() {
    let (c, _dir) = secured(&[]).await;
    let alice = brigade_client::Client::new(&c.url, Some(ALICE.into())).unwrap();
    let job = alice
        .submit(
            &brigade_api::JobSubmit::new(vec![task("noop", Value::Null)]),
            None,
        )
        .await
        .unwrap();
    let status = |path: String, token: &'static str| {
        let req = c.http().get(format!("{}{path}", c.url)).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // The whole stream would show every client's job ids: admins only.
    assert_eq!(status("/v1/events".into(), ALICE).await, 403);
    assert_eq!(status("/v1/events/ws".into(), ALICE).await, 403);
    assert_eq!(status("/v1/events".into(), W1).await, 403);
    assert_eq!(
        status(format!("/v1/events?job={}", job.id), ALICE).await,
        200
    );
    assert_eq!(status(format!("/v1/events?job={}", job.id), BOB).await, 404);
    assert_eq!(
        status(format!("/v1/events/ws?job={}", job.id), BOB).await,
        404
    );
    assert_eq!(status("/v1/events".into(), ADMIN).await, 200);
}

#[tokio::test]
async fn a_client_finds_only_its_own_tasks_and_only_admins_replay_in_bulk() {
    let (c, _dir) = secured(&[]).await;
    let alice = brigade_client::Client::new(&c.url, Some(ALICE.into())).unwrap();
    let bob = brigade_client::Client::new(&c.url, Some(BOB.into())).unwrap();
    let submit = brigade_api::JobSubmit::new(vec![task("noop", json!(null))]);
    let a = alice.submit(&submit, None).await.unwrap();
    let b = bob.submit(&submit, None).await.unwrap();
    let mine = alice
        .tasks(&brigade_client::TaskQuery::default())
        .await
        .unwrap();
    let ids: Vec<&str> = mine.items.iter().map(|t| t.job_id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str()], "alice sees her task only");
    // Naming another owner's job finds nothing rather than telling it exists.
    let theirs = alice
        .tasks(&brigade_client::TaskQuery {
            job: Some(b.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(theirs.items.is_empty());
    let all = c
        .client
        .tasks(&brigade_client::TaskQuery::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "the admin sees both");
    for path in ["/v1/tasks/retry", "/v1/tasks/cancel"] {
        let (status, _, body) = call(&c, Method::POST, path, Some(ALICE), Some(json!({}))).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let cancelled = c
        .client
        .cancel_tasks(&brigade_api::TaskFilterSpec::default())
        .await
        .unwrap();
    assert_eq!(cancelled, 2, "the admin cancels every owner's");
}
