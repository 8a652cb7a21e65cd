//! `/v1/queues`: depth of each queue; pause and resume.

use axum::Json;
use axum::extract::{Path, State};
use brigade_api::{Problem, QueueView};
use brigade_core::validate::is_valid_queue;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Every queue with its queued, scheduled and running counts.
#[utoipa::path(get, path = "/v1/queues", operation_id = "list_queues", tag = "queues", responses((status = 200, body = Vec<QueueView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<QueueView>>> {
    caller.require(&[Role::Client])?;
    Ok(Json(state.store.queues().await?))
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    name: &str,
    paused: bool,
) -> ApiResult<Json<QueueView>> {
    caller.require(&[])?;
    if !is_valid_queue(name) {
        return Err(ApiError::field(
            "name",
            "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        ));
    }
    let view = state.store.set_queue_paused(name, paused).await?;
    if !paused {
        state.dispatcher().wake();
    }
    Ok(Json(view))
}

/// Stop handing out the queue's tasks (admin).
#[utoipa::path(post, path = "/v1/queues/{name}/pause", operation_id = "pause_queue", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, body = QueueView), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueView>> {
    set_paused(&state, &caller, &name, true).await
}

/// Hand out the queue's tasks again (admin).
#[utoipa::path(post, path = "/v1/queues/{name}/resume", operation_id = "resume_queue", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, body = QueueView), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueView>> {
    set_paused(&state, &caller, &name, false).await
}
