//! `/v1/tasks`: find tasks across jobs, read, cancel and retry them (one or
//! in bulk), and read (or follow) their logs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use brigade_api::{
    CancelledReply, LogLine, Page, Problem, RetriedReply, TaskFilterSpec, TaskState, TaskView,
};
use brigade_store::{RetryOutcome, TaskFilter};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use super::wait;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, JsonBytes, parse_json};
use crate::state::AppState;

async fn owned_task(state: &AppState, caller: &Caller, id: &str) -> ApiResult<TaskView> {
    let task = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))?;
    if caller.role != Role::Admin {
        let owner = state
            .store
            .job_owner(&task.job_id)
            .await?
            .unwrap_or_default();
        if !caller.may_touch(&owner) {
            return Err(ApiError::not_found("task", id));
        }
    }
    Ok(task)
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTasksParams {
    /// Only tasks in this state.
    pub state: Option<String>,
    /// Only tasks of this kind.
    pub kind: Option<String>,
    /// Only tasks in this queue.
    pub queue: Option<String>,
    /// Only tasks whose error is of this kind (`handler`, `lost`, `poison`, ...).
    pub error_kind: Option<String>,
    /// Only tasks of this job.
    pub job: Option<String>,
    /// Only tasks created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Items per page (default 100, max 1000).
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The store's filter for `spec`, or the field at fault.
fn filter_of(spec: TaskFilterSpec, caller: &Caller) -> ApiResult<TaskFilter> {
    if let Some(k) = &spec.error_kind
        && brigade_core::validate::error_kind_named(k).is_none()
    {
        return Err(ApiError::field(
            "error_kind",
            "not an error kind (handler, timeout, crash, lost, poison, cancelled, ...)",
        ));
    }
    Ok(TaskFilter {
        state: spec.state,
        kind: spec.kind,
        queue: spec.queue,
        error_kind: spec.error_kind,
        job_id: spec.job,
        since: spec.since.map(brigade_core::to_ms),
        owner: caller.owner_filter(),
    })
}

/// Tasks across jobs, newest first (a client sees those of its own jobs).
#[utoipa::path(get, path = "/v1/tasks", operation_id = "list_tasks", tag = "tasks", params(ListTasksParams),
    responses(
        (status = 200, body = Page<TaskView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListTasksParams>,
) -> ApiResult<Json<Page<TaskView>>> {
    caller.require(&[Role::Client])?;
    let task_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::field(
                "state",
                "one of waiting, queued, scheduled, running, succeeded, failed, cancelled",
            )
        })?),
    };
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::field("since", "an RFC 3339 time"))?,
        ),
    };
    let spec = TaskFilterSpec {
        state: task_state,
        kind: q.kind,
        queue: q.queue,
        error_kind: q.error_kind,
        job: q.job,
        since,
    };
    let filter = filter_of(spec, &caller)?;
    let page = state
        .store
        .tasks(&filter, super::limit(q.limit)?, super::cursor(&q.cursor)?)
        .await?;
    Ok(Json(page))
}

/// Tasks one transaction of a bulk retry or cancel changes at most.
const BULK_BATCH: u32 = 500;

/// The filters of a bulk body (`{}` or no body: every task).
fn bulk_filter(body: &[u8], caller: &Caller) -> ApiResult<TaskFilter> {
    let spec: TaskFilterSpec = if body.iter().all(u8::is_ascii_whitespace) {
        TaskFilterSpec::default()
    } else {
        parse_json(body)?
    };
    filter_of(spec, caller)
}

/// Retry every failed or cancelled task matching the filters (those of
/// `GET /v1/tasks`, as JSON), each with a fresh attempt budget.
#[utoipa::path(post, path = "/v1/tasks/retry", operation_id = "retry_tasks", tag = "tasks", request_body = TaskFilterSpec,
    responses(
        (status = 200, body = RetriedReply),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_matching(
    State(state): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Json<RetriedReply>> {
    caller.require(&[])?;
    let filter = bulk_filter(&body, &caller)?;
    let mut retried = 0;
    let mut after = None;
    loop {
        let bulk = state
            .store
            .retry_tasks(&filter, after, BULK_BATCH, state.now())
            .await?;
        retried += bulk.changed;
        state.publish(bulk.changes);
        match bulk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(Json(RetriedReply { retried }))
}

/// Cancel every unfinished task matching the filters (those of
/// `GET /v1/tasks`, as JSON); running ones are told to stop.
#[utoipa::path(post, path = "/v1/tasks/cancel", operation_id = "cancel_tasks", tag = "tasks", request_body = TaskFilterSpec,
    responses(
        (status = 200, body = CancelledReply),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_matching(
    State(state): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Json<CancelledReply>> {
    caller.require(&[])?;
    let filter = bulk_filter(&body, &caller)?;
    let mut cancelled = 0;
    let mut after = None;
    loop {
        let bulk = state
            .store
            .cancel_tasks(&filter, after, BULK_BATCH, state.now())
            .await?;
        cancelled += bulk.changed;
        state.publish(bulk.changes);
        match bulk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(Json(CancelledReply { cancelled }))
}

/// Query of `GET /v1/tasks/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GetTaskParams {
    /// Hold the request until the task is finished (succeeded, failed or
    /// cancelled) or this many ms pass (max 60000).
    pub wait_ms: Option<u64>,
}

/// A task with its output, error and the history of its attempts; `?wait_ms=`
/// long-polls until it is finished.
#[utoipa::path(get, path = "/v1/tasks/{id}", operation_id = "get_task", tag = "tasks", params(("id" = String, Path), GetTaskParams),
    responses(
        (status = 200, body = TaskView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<GetTaskParams>,
) -> ApiResult<Json<TaskView>> {
    caller.require(&[Role::Client])?;
    let wait = wait::wait_ms(q.wait_ms)?;
    let task = wait::until_done(
        &state,
        wait,
        || owned_task(&state, &caller, &id),
        |task: &TaskView| task.state.is_finished(),
        // A job's cancel may end its tasks with the job's event alone.
        |e, task: &TaskView| match e.kind.as_str() {
            "task.succeeded" | "task.failed" | "task.cancelled" => {
                e.task_id.as_deref() == Some(id.as_str())
            }
            "job.finished" => e.job_id.as_deref() == Some(task.job_id.as_str()),
            _ => false,
        },
    )
    .await?;
    Ok(Json(task))
}

/// Cancel a task; a running one is told to stop on its worker's next heartbeat.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", operation_id = "cancel_task", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    caller.require(&[Role::Client])?;
    owned_task(&state, &caller, &id).await?;
    let changes = state
        .store
        .cancel_task(&id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    state.publish(changes);
    Ok(Json(owned_task(&state, &caller, &id).await?))
}

/// Put a failed or cancelled task back in the queue with a fresh attempt budget.
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", operation_id = "retry_task", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 200, body = TaskView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is not failed or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    caller.require(&[Role::Client])?;
    owned_task(&state, &caller, &id).await?;
    match state.store.retry_task(&id, state.now()).await? {
        RetryOutcome::Retried(view, changes) => {
            state.publish(changes);
            Ok(Json(*view))
        }
        RetryOutcome::NotFound => Err(ApiError::not_found("task", &id)),
        RetryOutcome::NotRetryable(s) => Err(ApiError::conflict(format!(
            "the task is {}; only failed or cancelled tasks can be retried",
            s.as_str()
        ))),
    }
}

/// `?limit=&cursor=&follow=` of a task's logs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Lines per page (default 100, max 1000).
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page (or the `id` of the last SSE event).
    pub cursor: Option<String>,
    /// Stream the lines as Server-Sent Events (`event: log`), new ones as they
    /// arrive, until the task is finished (then `event: end`).
    pub follow: Option<bool>,
}

/// Lines read per query while following.
const FOLLOW_CHUNK: u32 = 500;
/// A follower re-checks at least this often (lines written through another server).
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// The log lines a task's handler wrote, oldest first, all attempts;
/// `?follow=true` streams them (and new ones) as Server-Sent Events until the task is finished.
#[utoipa::path(get, path = "/v1/tasks/{id}/logs", operation_id = "get_task_logs", tag = "tasks", params(("id" = String, Path), LogParams),
    responses(
        (status = 200, description = "A page of lines; with `?follow=true`, \
            a text/event-stream of `log` events (data: a LogLine, id: its cursor) ending with an `end` event",
            content((Page<LogLine> = "application/json"), (super::SseFrame = "text/event-stream"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogParams>,
) -> ApiResult<Response> {
    let limit = super::limit(q.limit)?;
    let after = match super::cursor(&q.cursor)? {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor this server handed out"))?,
        ),
    };
    owned_task(&state, &caller, &id).await?;
    if !q.follow.unwrap_or(false) {
        let rows = state.store.task_logs(&id, after, limit).await?;
        let next_cursor = if rows.len() == limit as usize {
            rows.last().map(|(seq, _)| seq.to_string())
        } else {
            None
        };
        let items = rows.into_iter().map(|(_, line)| line).collect();
        return Ok(Json(Page { items, next_cursor }).into_response());
    }
    // Subscribe before the first read, so no line falls between the two.
    let logs_rx = state.publisher.bus.subscribe_logs();
    let events_rx = state.publisher.bus.subscribe();
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    let closing = state.closing.clone();
    tokio::spawn(follow(state, id, after, logs_rx, events_rx, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    // The stream ends when the server shuts down (the client reconnects).
    let stream = futures::StreamExt::take_until(stream, closing.cancelled_owned());
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Feed a follower: everything after `after`, then new lines as they come,
/// until the task is finished (or the client goes away).
async fn follow(
    state: AppState,
    id: String,
    mut after: Option<i64>,
    mut logs_rx: broadcast::Receiver<Arc<str>>,
    mut events_rx: broadcast::Receiver<Arc<brigade_api::Event>>,
    tx: mpsc::Sender<SseEvent>,
) {
    loop {
        // Seen finished before the last read: every line it wrote is in.
        let state_now = match state.store.task(&id).await {
            Ok(Some(t)) => Some(t.state),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "following logs: cannot read the task");
                return;
            }
        };
        let finished = !matches!(
            state_now,
            Some(
                TaskState::Waiting | TaskState::Queued | TaskState::Scheduled | TaskState::Running
            )
        );
        loop {
            let rows = match state.store.task_logs(&id, after, FOLLOW_CHUNK).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "following logs: cannot read them");
                    return;
                }
            };
            let full = rows.len() == FOLLOW_CHUNK as usize;
            for (seq, line) in rows {
                after = Some(seq);
                let data = serde_json::to_string(&line).unwrap_or_default();
                let event = SseEvent::default()
                    .event("log")
                    .id(seq.to_string())
                    .data(data);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        if finished {
            let data = serde_json::json!({
                "task_id": id,
                "state": state_now.map(TaskState::as_str),
            });
            let _ = tx
                .send(SseEvent::default().event("end").data(data.to_string()))
                .await;
            return;
        }
        // Wait for new lines or a change of the task, at most FOLLOW_POLL.
        let wait = async {
            loop {
                tokio::select! {
                    r = logs_rx.recv() => match r {
                        Ok(t) if *t == *id => return,
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    r = events_rx.recv() => match r {
                        Ok(e) if e.task_id.as_deref() == Some(id.as_str()) => return,
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        };
        let _ = tokio::time::timeout(FOLLOW_POLL, wait).await;
        if tx.is_closed() {
            return;
        }
    }
}
