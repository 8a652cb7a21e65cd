//! `/v1/workers`: the worker protocol (join, lease, heartbeat, results, leave) and its admin.

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use brigade_api::{
    ErrorKind, FieldError, Heartbeat, HeartbeatReply, LeaseRequest, LeaseResponse, LogsReply,
    LogsRequest, Outcome, ParentResult, Problem, ProgressRequest, ResultsReply, ResultsRequest,
    TaskError, TaskResult, WorkerJoin, WorkerJoined, WorkerView,
};
use brigade_core::validate::{is_valid_kind, is_valid_queue};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::metrics::names;
use crate::state::AppState;

/// Longest lease long-poll.
pub const MAX_LEASE_WAIT_MS: u64 = 60_000;
/// Lease long-poll when the worker names none.
pub const DEFAULT_LEASE_WAIT_MS: u64 = 30_000;
/// Most tasks one lease may hand out.
pub const MAX_LEASE: u32 = 1000;
/// Most results in one batch.
pub const MAX_RESULTS: usize = 10_000;

fn check_join(j: &WorkerJoin) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if j.name.is_empty() || j.name.len() > 256 {
        errors.push(FieldError::new("name", "1 to 256 bytes"));
    }
    if j.hostname.len() > 256 {
        errors.push(FieldError::new("hostname", "at most 256 bytes"));
    }
    if !(1..=10_000).contains(&j.capacity) {
        errors.push(FieldError::new("capacity", "must be 1 to 10000"));
    }
    if j.kinds.is_empty() || j.kinds.len() > 1000 {
        errors.push(FieldError::new("kinds", "1 to 1000 task kinds"));
    }
    for (i, k) in j.kinds.iter().enumerate() {
        if !is_valid_kind(k) {
            errors.push(FieldError::new(
                format!("kinds[{i}]"),
                "must match [a-z0-9][a-z0-9._-]{0,63}",
            ));
        }
    }
    if j.queues.len() > 1000 {
        errors.push(FieldError::new("queues", "at most 1000 queues"));
    }
    for (i, q) in j.queues.iter().enumerate() {
        if !is_valid_queue(q) {
            errors.push(FieldError::new(
                format!("queues[{i}]"),
                "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
            ));
        }
    }
    if j.labels.len() > 64
        || j.labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 1024)
    {
        errors.push(FieldError::new(
            "labels",
            "at most 64 labels, keys 1 to 64 bytes, values up to 1024",
        ));
    }
    if j.version.len() > 64 {
        errors.push(FieldError::new("version", "at most 64 bytes"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// A worker joins; it gets its id, lease TTL and heartbeat period.
#[utoipa::path(post, path = "/v1/workers", operation_id = "join_worker", tag = "workers", request_body = WorkerJoin,
    responses(
        (status = 201, body = WorkerJoined),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn join(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(join): ApiJson<WorkerJoin>,
) -> ApiResult<(StatusCode, Json<WorkerJoined>)> {
    caller.require(&[Role::Worker])?;
    check_join(&join)?;
    let capacity = join.capacity;
    let (view, changes) = state
        .store
        .join_worker(&caller.name, join, state.now())
        .await?;
    state.dispatcher().note_load(
        &view.id,
        brigade_api::Load {
            capacity,
            ..Default::default()
        },
    );
    state.publish(changes);
    tracing::info!(worker = %view.id, name = %view.name, capacity, "worker joined");
    Ok((
        StatusCode::CREATED,
        Json(WorkerJoined {
            id: view.id,
            lease_ttl_ms: state.config.lease_ttl_ms,
            heartbeat_ms: state.config.heartbeat_ms,
            long_poll_keepalive: true,
            results_on_lease: true,
        }),
    ))
}

/// Ask for up to `max` tasks; held until some are available or `wait_ms` passes.
#[utoipa::path(post, path = "/v1/workers/{id}/lease", operation_id = "lease_tasks", tag = "workers", params(("id" = String, Path)),
    request_body = LeaseRequest,
    responses(
        (status = 200, body = LeaseResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(mut req): ApiJson<LeaseRequest>,
) -> ApiResult<Json<LeaseResponse>> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    if req.max > MAX_LEASE {
        return Err(ApiError::field("max", format!("must be 0 to {MAX_LEASE}")));
    }
    let wait = req.wait_ms.unwrap_or(DEFAULT_LEASE_WAIT_MS);
    if wait > MAX_LEASE_WAIT_MS {
        return Err(ApiError::field(
            "wait_ms",
            format!("at most {MAX_LEASE_WAIT_MS}"),
        ));
    }
    check_results(&state, &id, &mut req.results)?;
    let _permit = if wait > 0 {
        Some(state.long_poll_permit()?)
    } else {
        None
    };
    let granted = state
        .dispatcher()
        .lease(
            id.clone(),
            req.results,
            req.max,
            Duration::from_millis(wait),
        )
        .await?;
    if !granted.tasks.is_empty() {
        metrics::counter!(names::TASKS_LEASED).increment(granted.tasks.len() as u64);
        crate::trace::leased(&id, &granted.tasks);
    }
    Ok(Json(LeaseResponse {
        tasks: granted.tasks,
        drain: granted.drain,
        cancel: granted.cancel,
        results: granted.results,
    }))
}

/// Extend the leases of running tasks, report load; the reply says what to cancel and whether to drain.
#[utoipa::path(post, path = "/v1/workers/{id}/heartbeat", operation_id = "worker_heartbeat", tag = "workers", params(("id" = String, Path)),
    request_body = Heartbeat,
    responses(
        (status = 200, body = HeartbeatReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<Json<HeartbeatReply>> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    if hb.running.len() > 100_000 {
        return Err(ApiError::field("running", "at most 100000 task ids"));
    }
    let load = hb.load;
    let reply = state
        .heartbeats
        .beat(id.clone(), hb)
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    state.dispatcher().note_load(&id, load);
    Ok(Json(reply))
}

/// Report finished tasks in a batch; each is applied only for its current attempt.
#[utoipa::path(post, path = "/v1/workers/{id}/results", operation_id = "report_results", tag = "workers", params(("id" = String, Path)),
    request_body = ResultsRequest,
    responses(
        (status = 200, body = ResultsReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(mut req): ApiJson<ResultsRequest>,
) -> ApiResult<Json<ResultsReply>> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    check_results(&state, &id, &mut req.results)?;
    let (reply, changes) = state
        .store
        .report(&id, req.results, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    crate::metrics::results(&reply);
    state.publish(changes);
    Ok(Json(reply))
}

/// The checks a batch of results must pass, wherever it comes (the results
/// route or a lease request): 422 naming each bad field.
fn check_results(
    state: &AppState,
    worker_id: &str,
    results: &mut [TaskResult],
) -> Result<(), ApiError> {
    if results.len() > MAX_RESULTS {
        return Err(ApiError::field(
            "results",
            format!("at most {MAX_RESULTS} per batch"),
        ));
    }
    let mut errors = Vec::new();
    let mut seen = HashSet::with_capacity(results.len());
    for (i, r) in results.iter().enumerate() {
        if r.outcome == Outcome::Failed && r.error.is_none() {
            errors.push(FieldError::new(
                format!("results[{i}].error"),
                "a failed result needs an error",
            ));
        }
        if r.retry_in_ms
            .is_some_and(|ms| ms > brigade_core::transition::MAX_RETRY_IN_MS)
        {
            errors.push(FieldError::new(
                format!("results[{i}].retry_in_ms"),
                "at most 86400000 (a day)",
            ));
        }
        if r.attempt == 0 {
            errors.push(FieldError::new(
                format!("results[{i}].attempt"),
                "attempts start at 1",
            ));
        }
        if !seen.insert(r.task_id.as_str()) {
            errors.push(FieldError::new(
                format!("results[{i}].task_id"),
                "the same task twice in one batch",
            ));
        }
        if !r.spawn.is_empty() {
            if r.outcome != Outcome::Succeeded {
                errors.push(FieldError::new(
                    format!("results[{i}].spawn"),
                    "only a succeeded result spawns tasks",
                ));
            } else if let Err(e) = brigade_core::validate::validate_spawn(
                &format!("results[{i}]"),
                r.spawn.clone(),
                &state.limits,
            ) {
                errors.extend(e);
            }
        }
        if errors.len() > 100 {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    cap_results(state, worker_id, results);
    Ok(())
}

/// A result is data: one too large to keep is not refused (that would lose
/// it, and the batch with it) but recorded as a failed attempt that says so,
/// and is not retried (it would only come back as large).
fn cap_results(state: &AppState, worker_id: &str, results: &mut [TaskResult]) {
    let max = state.config.max_result_bytes;
    for r in results {
        let size = json_size(&r.output);
        if size > max {
            tracing::warn!(worker = %worker_id, task = %r.task_id, size, max, "result too large; recording it as failed");
            metrics::counter!(names::RESULTS, "status" => "too_large").increment(1);
            r.outcome = Outcome::Failed;
            r.output = serde_json::Value::Null;
            r.retryable = Some(false);
            r.error = Some(TaskError::new(
                ErrorKind::ResultTooLarge,
                format!(
                    "the result's output is {size} bytes of JSON; this server keeps at most {max} (--max-result-bytes)"
                ),
            ));
        }
    }
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn json_size(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Most reports in one progress request.
pub const MAX_PROGRESS: usize = 10_000;

/// Report how far running tasks got; each report is kept only for the
/// task's current attempt on this worker (the rule of results), and
/// published as a `task.progress` event.
#[utoipa::path(post, path = "/v1/workers/{id}/progress", operation_id = "report_progress", tag = "workers", params(("id" = String, Path)),
    request_body = ProgressRequest,
    responses(
        (status = 200, body = ResultsReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ProgressRequest>,
) -> ApiResult<Json<ResultsReply>> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    if req.progress.len() > MAX_PROGRESS {
        return Err(ApiError::field(
            "progress",
            format!("at most {MAX_PROGRESS} per request"),
        ));
    }
    let mut errors = Vec::new();
    for (i, p) in req.progress.iter().enumerate() {
        if p.attempt == 0 {
            errors.push(FieldError::new(
                format!("progress[{i}].attempt"),
                "attempts start at 1",
            ));
        }
        if p.message.as_ref().is_some_and(|m| m.len() > 1024) {
            errors.push(FieldError::new(
                format!("progress[{i}].message"),
                "at most 1024 bytes",
            ));
        }
        if p.total.is_some_and(|t| p.done > t) {
            errors.push(FieldError::new(
                format!("progress[{i}].done"),
                "must not exceed total",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let (reply, changes) = state
        .store
        .report_progress(&id, req.progress, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    state.publish(changes);
    Ok(Json(reply))
}

/// Query of the parents page.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ParentsQuery {
    /// Page size (default 1000, max 10000).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// The parents of a task this worker runs, with their outputs, in
/// submission then spawn order: where a worker reads them when its lease
/// carried ids only (`parents_truncated`).
#[utoipa::path(get, path = "/v1/workers/{id}/tasks/{task_id}/parents", operation_id = "task_parents", tag = "workers",
    params(("id" = String, Path), ("task_id" = String, Path), ParentsQuery),
    responses(
        (status = 200, body = brigade_api::Page<ParentResult>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn parents(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, task_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<ParentsQuery>,
) -> ApiResult<Json<brigade_api::Page<ParentResult>>> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 10000"));
    }
    if q.cursor
        .as_deref()
        .is_some_and(|c| !c.is_empty() && c.parse::<i64>().is_err())
    {
        return Err(ApiError::field("cursor", "not a cursor this server gave"));
    }
    let page = state
        .store
        .task_parents(&task_id, limit, q.cursor.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("task", &task_id))?;
    Ok(Json(page))
}

/// Most batches (task attempts) in one logs request.
pub const MAX_LOG_BATCHES: usize = 10_000;
/// Most lines in one batch.
pub const MAX_LOG_LINES: usize = 10_000;

/// Ship log lines of running tasks; each batch is stored only for the task's
/// current attempt on this worker, up to 64 KiB per attempt (then `[truncated]`).
#[utoipa::path(post, path = "/v1/workers/{id}/logs", operation_id = "report_logs", tag = "workers", params(("id" = String, Path)),
    request_body = LogsRequest,
    responses(
        (status = 200, body = LogsReply),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<LogsRequest>,
) -> ApiResult<Json<LogsReply>> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    if req.logs.len() > MAX_LOG_BATCHES {
        return Err(ApiError::field(
            "logs",
            format!("at most {MAX_LOG_BATCHES} per request"),
        ));
    }
    let mut errors = Vec::new();
    for (i, b) in req.logs.iter().enumerate() {
        if b.task_id.is_empty() || b.task_id.len() > 128 {
            errors.push(FieldError::new(
                format!("logs[{i}].task_id"),
                "1 to 128 bytes",
            ));
        }
        if b.attempt == 0 {
            errors.push(FieldError::new(
                format!("logs[{i}].attempt"),
                "attempts start at 1",
            ));
        }
        if b.lines.len() > MAX_LOG_LINES {
            errors.push(FieldError::new(
                format!("logs[{i}].lines"),
                format!("at most {MAX_LOG_LINES} lines per batch"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let reply = state
        .store
        .append_logs(&id, req.logs, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    for task_id in &reply.accepted {
        state.publisher.bus.publish_logs(task_id);
    }
    Ok(Json(reply))
}

/// A worker leaves; its running tasks are requeued at once.
#[utoipa::path(delete, path = "/v1/workers/{id}", operation_id = "leave_worker", tag = "workers", params(("id" = String, Path)),
    responses((status = 204, description = "Left"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn leave(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Worker])?;
    state.check_worker_owner(&caller, &id).await?;
    let changes = state
        .store
        .leave(&id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    state.dispatcher().forget(&id);
    if let Ok(mut owners) = state.worker_owners.lock() {
        owners.remove(&id);
    }
    state.publish(changes);
    Ok(StatusCode::NO_CONTENT)
}

/// The worker finishes what it runs and leases nothing more (admin).
#[utoipa::path(post, path = "/v1/workers/{id}/drain", operation_id = "drain_worker", tag = "workers", params(("id" = String, Path)),
    responses((status = 200, body = WorkerView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkerView>> {
    caller.require(&[])?;
    let view = state
        .store
        .drain_worker(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("worker", &id))?;
    Ok(Json(view))
}

/// Every worker with its state, load and running count.
#[utoipa::path(get, path = "/v1/workers", operation_id = "list_workers", tag = "workers", responses((status = 200, body = Vec<WorkerView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<WorkerView>>> {
    caller.require(&[Role::Client, Role::Worker])?;
    Ok(Json(state.store.workers().await?))
}

/// One worker.
#[utoipa::path(get, path = "/v1/workers/{id}", operation_id = "get_worker", tag = "workers", params(("id" = String, Path)),
    responses((status = 200, body = WorkerView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkerView>> {
    caller.require(&[Role::Client, Role::Worker])?;
    Ok(Json(
        state
            .store
            .worker(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("worker", &id))?,
    ))
}
