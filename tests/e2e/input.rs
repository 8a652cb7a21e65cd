//! Every bad input of the contract gets the right 4xx problem+json — never a 5xx.

use reqwest::Method;
use serde_json::{Value, json};

use brigade_testkit::{Cluster, task};

struct Case {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    status: u16,
    field: Option<&'static str>,
}

fn case(
    method: Method,
    path: &str,
    body: Option<&str>,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: body.map(|b| b.as_bytes().to_vec()),
        content_type: "application/json",
        headers: Vec::new(),
        status,
        field,
    }
}

async fn check(c: &Cluster, case: Case) -> Value {
    let mut req = c
        .http()
        .request(case.method.clone(), format!("{}{}", c.url, case.path));
    if let Some(b) = case.body {
        req = req.header("content-type", case.content_type).body(b);
    }
    for (k, v) in &case.headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    assert_eq!(status, case.status, "{} {}: {text}", case.method, case.path);
    if status >= 400 {
        assert_eq!(
            ct, "application/problem+json",
            "{} {}",
            case.method, case.path
        );
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["status"], json!(status));
        assert!(
            problem["title"].is_string()
                && problem["detail"].is_string()
                && problem["type"].is_string()
        );
        if let Some(field) = case.field {
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.contains(&field),
                "{} {}: expected field {field} in {fields:?}",
                case.method,
                case.path
            );
        }
        problem
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field_and_loses_nothing() {
    let c = Cluster::start().await;
    use Method as M;
    let too_many = json!({ "tasks": vec![json!({"kind": "noop"}); 10_001] }).to_string();
    let huge = format!(
        "{{\"tasks\": [{{\"kind\": \"echo\", \"input\": \"{}\"}}]}}",
        "x".repeat(17 << 20)
    );
    let cases = vec![
        case(M::POST, "/v1/jobs", Some("{\"tasks\": ["), 400, None),
        case(M::POST, "/v1/jobs", Some("not json"), 400, None),
        case(M::POST, "/v1/jobs", Some(""), 400, None),
        case(M::POST, "/v1/jobs", Some("{}"), 422, Some("tasks")),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": []}"),
            422,
            Some("tasks"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{}]}"),
            422,
            Some("tasks[0].kind"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"Bad Kind\"}]}"),
            422,
            Some("tasks[0].kind"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\"}, {\"kind\": 7}]}"),
            422,
            Some("tasks[1].kind"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"max_attempts\": 0}]}"),
            422,
            Some("tasks[0].max_attempts"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"max_attempts\": -1}]}"),
            422,
            Some("tasks[0].max_attempts"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"timeout_ms\": 0}]}"),
            422,
            Some("tasks[0].timeout_ms"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"priority\": 1e99}]}"),
            422,
            Some("tasks[0].priority"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"run_at\": \"tomorrow\"}]}"),
            422,
            Some("tasks[0].run_at"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"backoff\": {\"factor\": 0.1}}]}"),
            422,
            Some("tasks[0].backoff.factor"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"tasks\": [{\"kind\": \"noop\", \"surprise\": 1}]}"),
            422,
            Some("tasks[0].surprise"),
        ),
        case(
            M::POST,
            "/v1/jobs",
            Some("{\"queue\": \"no spaces\", \"tasks\": [{\"kind\": \"noop\"}]}"),
            422,
            Some("queue"),
        ),
        case(M::POST, "/v1/jobs", Some("[1, 2]"), 422, None),
        case(M::POST, "/v1/jobs", Some(&too_many), 422, Some("tasks")),
        case(M::POST, "/v1/jobs", Some(&huge), 413, None),
        case(M::GET, "/v1/jobs/nope", None, 404, None),
        case(M::GET, "/v1/jobs/nope/tasks", None, 404, None),
        case(M::POST, "/v1/jobs/nope/cancel", None, 404, None),
        case(M::DELETE, "/v1/jobs/nope", None, 404, None),
        case(M::GET, "/v1/tasks/nope", None, 404, None),
        case(M::GET, "/v1/tasks/nope?wait_ms=1000", None, 404, None),
        case(
            M::GET,
            "/v1/tasks/nope?wait_ms=60001",
            None,
            422,
            Some("wait_ms"),
        ),
        case(
            M::GET,
            "/v1/tasks/nope?wait_ms=soon",
            None,
            422,
            Some("wait_ms"),
        ),
        case(
            M::GET,
            "/v1/jobs/nope?wait_ms=60001",
            None,
            422,
            Some("wait_ms"),
        ),
        case(M::POST, "/v1/tasks/nope/retry", None, 404, None),
        case(M::GET, "/v1/jobs?limit=0", None, 422, Some("limit")),
        case(M::GET, "/v1/jobs?limit=5000", None, 422, Some("limit")),
        case(M::GET, "/v1/jobs?limit=abc", None, 422, Some("limit")),
        case(M::GET, "/v1/jobs?state=sleeping", None, 422, Some("state")),
        case(M::GET, "/v1/jobs?label=nocolon", None, 422, Some("label")),
        case(
            M::GET,
            "/v1/jobs?cursor=%27%3B--",
            None,
            422,
            Some("cursor"),
        ),
        case(
            M::POST,
            "/v1/workers",
            Some("{\"name\": \"w\", \"kinds\": [], \"capacity\": 1}"),
            422,
            Some("kinds"),
        ),
        case(
            M::POST,
            "/v1/workers",
            Some("{\"name\": \"w\", \"kinds\": [\"noop\"], \"capacity\": 0}"),
            422,
            Some("capacity"),
        ),
        case(
            M::POST,
            "/v1/workers",
            Some("{\"name\": \"w\"}"),
            422,
            Some("kinds"),
        ),
        case(
            M::POST,
            "/v1/workers/nope/lease",
            Some("{\"max\": 1, \"wait_ms\": 0}"),
            404,
            None,
        ),
        case(
            M::POST,
            "/v1/workers/nope/heartbeat",
            Some("{\"running\": []}"),
            404,
            None,
        ),
        case(
            M::POST,
            "/v1/workers/nope/results",
            Some("{\"results\": []}"),
            404,
            None,
        ),
        case(M::DELETE, "/v1/workers/nope", None, 404, None),
        case(M::POST, "/v1/workers/nope/drain", None, 404, None),
        case(
            M::POST,
            "/v1/queues/bad%20name/pause",
            None,
            422,
            Some("name"),
        ),
        case(M::GET, "/v1/no-such-route", None, 404, None),
        case(M::PUT, "/v1/jobs", None, 405, None),
        Case {
            content_type: "text/plain",
            ..case(
                M::POST,
                "/v1/jobs",
                Some("{\"tasks\": [{\"kind\": \"noop\"}]}"),
                415,
                None,
            )
        },
    ];
    for cs in cases {
        check(&c, cs).await;
    }

    // Worker protocol bodies of a real worker.
    let joined = check(
        &c,
        case(
            M::POST,
            "/v1/workers",
            Some("{\"name\": \"w\", \"kinds\": [\"noop\"], \"capacity\": 2}"),
            201,
            None,
        ),
    )
    .await;
    let wid = joined["id"].as_str().unwrap().to_owned();
    for cs in [
        case(
            M::GET,
            &format!("/v1/workers/{wid}/tasks/nope/parents?limit=0"),
            None,
            422,
            Some("limit"),
        ),
        case(
            M::GET,
            &format!("/v1/workers/{wid}/tasks/nope/parents?limit=93915198766"),
            None,
            422,
            Some("limit"),
        ),
        case(
            M::GET,
            &format!("/v1/workers/{wid}/tasks/nope/parents?cursor=%C3%920X"),
            None,
            422,
            Some("cursor"),
        ),
        case(
            M::GET,
            &format!("/v1/workers/{wid}/tasks/nope/parents"),
            None,
            404,
            None,
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/lease"),
            Some("{\"max\": 1001}"),
            422,
            Some("max"),
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/lease"),
            Some(
                "{\"max\": 1, \"wait_ms\": 0, \"results\": [{\"task_id\": \"x\", \"attempt\": 0, \"outcome\": \"succeeded\"}]}",
            ),
            422,
            Some("results[0].attempt"),
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/lease"),
            Some("{\"max\": 1, \"wait_ms\": 999999}"),
            422,
            Some("wait_ms"),
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/lease"),
            Some("{}"),
            422,
            Some("max"),
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/results"),
            Some("{\"results\": [{\"task_id\": \"x\", \"attempt\": 1, \"outcome\": \"failed\"}]}"),
            422,
            Some("results[0].error"),
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/results"),
            Some("{\"results\": [{\"task_id\": \"x\", \"attempt\": 1, \"outcome\": \"maybe\"}]}"),
            422,
            Some("results[0].outcome"),
        ),
        case(
            M::POST,
            &format!("/v1/workers/{wid}/heartbeat"),
            Some("{\"running\": 5}"),
            422,
            Some("running"),
        ),
    ] {
        check(&c, cs).await;
    }
    let unknown = check(
        &c,
        case(
            M::POST,
            &format!("/v1/workers/{wid}/results"),
            Some(
                "{\"results\": [{\"task_id\": \"x\", \"attempt\": 1, \"outcome\": \"succeeded\"}]}",
            ),
            200,
            None,
        ),
    )
    .await;
    assert_eq!(unknown["rejected"][0]["reason"], "unknown task");

    // Idempotency: same key and body → the same job (200); another body → 409.
    let body = "{\"tasks\": [{\"kind\": \"noop\"}]}";
    let with_key = |b: &str, status| Case {
        headers: vec![("idempotency-key", "k-1".into())],
        ..case(M::POST, "/v1/jobs", Some(b), status, None)
    };
    let first = check(&c, with_key(body, 201)).await;
    let again = check(&c, with_key(body, 200)).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["task_ids"], again["task_ids"]);
    check(&c, with_key("{\"tasks\": [{\"kind\": \"echo\"}]}", 409)).await;

    // An unfinished job cannot be deleted; a cancelled one can.
    let id = first["id"].as_str().unwrap();
    check(
        &c,
        case(M::DELETE, &format!("/v1/jobs/{id}"), None, 409, None),
    )
    .await;
    check(
        &c,
        case(
            M::POST,
            &format!("/v1/tasks/{}/retry", first["task_ids"][0].as_str().unwrap()),
            None,
            409,
            None,
        ),
    )
    .await;
    check(
        &c,
        case(M::POST, &format!("/v1/jobs/{id}/cancel"), None, 200, None),
    )
    .await;
    check(
        &c,
        case(M::DELETE, &format!("/v1/jobs/{id}"), None, 204, None),
    )
    .await;
    check(&c, case(M::GET, &format!("/v1/jobs/{id}"), None, 404, None)).await;

    // Nothing bad input did left a trace: the only job is a valid one submitted now.
    let ok = c.submit(vec![task("noop", json!(null))]).await;
    let page = c.client.jobs(&Default::default()).await.unwrap();
    assert_eq!(
        page.items.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![ok.id]
    );
    let log = c.read_log("server");
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// A body is exactly one JSON document under a JSON media type: trailing content is 400
/// (and submits nothing), media types are matched case-insensitively and exactly.
#[tokio::test]
async fn strict_json_bodies_and_media_types() {
    let c = Cluster::start().await;
    use Method as M;
    let job = "{\"tasks\": [{\"kind\": \"noop\"}]}";
    for trailing in [
        format!("{job} xyz"),
        format!("{job}{job}"),
        format!("{job}\n{job}"),
        format!("{job} 1"),
        format!("{job},"),
    ] {
        let problem = check(&c, case(M::POST, "/v1/jobs", Some(&trailing), 400, None)).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("trailing"),
            "{problem}"
        );
    }
    // The worker protocol parses the same way.
    let joined = check(
        &c,
        case(
            M::POST,
            "/v1/workers",
            Some("{\"name\": \"w\", \"kinds\": [\"noop\"], \"capacity\": 2} {}"),
            400,
            None,
        ),
    )
    .await;
    assert!(joined["detail"].as_str().unwrap().contains("trailing"));
    // Nothing was submitted by any of them.
    let page = c.client.jobs(&Default::default()).await.unwrap();
    assert!(page.items.is_empty(), "{:?}", page.items);

    let with_type = |ct: &'static str, status| Case {
        content_type: ct,
        ..case(M::POST, "/v1/jobs", Some(job), status, None)
    };
    for ct in [
        "Application/JSON",
        "APPLICATION/JSON; charset=UTF-8",
        "application/json;charset=utf-8",
        "application/vnd.brigade+json",
    ] {
        check(&c, with_type(ct, 201)).await;
    }
    for ct in [
        "application/jsonx",
        "application/json-patch",
        "text/json",
        "text/plain; profile=+json",
        "application/x-www-form-urlencoded",
    ] {
        check(&c, with_type(ct, 415)).await;
    }
    // Whitespace after the document is no trailing content.
    check(
        &c,
        case(
            M::POST,
            "/v1/jobs",
            Some(&format!("{job} \r\n\t")),
            201,
            None,
        ),
    )
    .await;
    let page = c.client.jobs(&Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 5);
}
