//! `/v1/tasks`: read, cancel and retry single tasks, and read (or follow) their logs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use brigade_api::{LogLine, Page, Problem, TaskState, TaskView};
use brigade_store::RetryOutcome;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
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

/// A task with its output, error and the history of its attempts.
#[utoipa::path(get, path = "/v1/tasks/{id}", operation_id = "get_task", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    caller.require(&[Role::Client])?;
    Ok(Json(owned_task(&state, &caller, &id).await?))
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
        (status = 200, body = Page<LogLine>, description = "A page of lines; with `?follow=true`, \
            a text/event-stream of `log` events (data: a LogLine, id: its cursor) ending with an `end` event"),
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
