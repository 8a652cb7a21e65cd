//! `/v1/tasks`: read, cancel and retry single tasks.

use axum::Json;
use axum::extract::{Path, State};
use brigade_api::{Problem, TaskView};
use brigade_store::RetryOutcome;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
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
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
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
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path)),
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
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", tag = "tasks", params(("id" = String, Path)),
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
    match state.store.retry_task(&id).await? {
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
