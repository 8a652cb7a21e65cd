//! `/v1/schedules`: jobs created on a clock. The firing rules are in
//! `brigade_core::schedule`, the exactly-once fire in the store; these
//! handlers validate, check the owner and wake this server's scheduler.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use brigade_api::{JobView, Page, Problem, ScheduleCreate, SchedulePatch, ScheduleView};
use brigade_core::schedule::{revise_schedule, validate_schedule};
use brigade_store::{JobFilter, StoredSchedule, TriggerOutcome};

use super::{PageParams, cursor, limit};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, JsonBytes, parse_json};
use crate::state::AppState;

/// Attempts at a revision that a fire keeps moving under it (each fire moves
/// `next_fire_at`, which the revision is conditional on).
const REVISE_ATTEMPTS: usize = 8;

/// Create a schedule: a job submitted on a cron expression or every `every_ms`.
#[utoipa::path(post, path = "/v1/schedules", operation_id = "create_schedule", tag = "schedules", request_body = ScheduleCreate,
    responses(
        (status = 201, description = "Stored; it fires from `next_fire_at` on", body = ScheduleView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields: cron, every_ms, timezone, job.*", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    caller.require(&[Role::Client])?;
    let create: ScheduleCreate = parse_json(&body)?;
    let now = state.now();
    let new = validate_schedule(create, &state.limits, now).map_err(ApiError::invalid)?;
    let view = state.store.create_schedule(&caller.name, new, now).await?;
    state.publisher.schedules.notify_one();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Schedules, oldest first (a client sees its own).
#[utoipa::path(get, path = "/v1/schedules", operation_id = "list_schedules", tag = "schedules", params(PageParams),
    responses((status = 200, body = Page<ScheduleView>), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ScheduleView>>> {
    caller.require(&[Role::Client])?;
    let page = state
        .store
        .schedules(
            caller.owner_filter().as_deref(),
            limit(q.limit)?,
            cursor(&q.cursor)?,
        )
        .await?;
    Ok(Json(page))
}

/// The schedule if the caller may see it; 404 otherwise (as for jobs, another
/// owner's schedule is not acknowledged to exist).
async fn owned(state: &AppState, caller: &Caller, id: &str) -> ApiResult<StoredSchedule> {
    match state.store.schedule(id).await? {
        Some(s) if caller.may_touch(&s.owner) => Ok(s),
        _ => Err(ApiError::not_found("schedule", id)),
    }
}

/// A schedule.
#[utoipa::path(get, path = "/v1/schedules/{id}", operation_id = "get_schedule", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(&[Role::Client])?;
    Ok(Json(owned(&state, &caller, &id).await?.view))
}

/// Apply `patch`, conditional on the schedule not having fired meanwhile
/// (retried on a fresh read when it has).
async fn revise(
    state: &AppState,
    caller: &Caller,
    id: &str,
    patch: &SchedulePatch,
) -> ApiResult<ScheduleView> {
    for _ in 0..REVISE_ATTEMPTS {
        let s = owned(state, caller, id).await?;
        let now = state.now();
        let new = revise_schedule(&s.view, s.anchor, s.next_fire_at, patch, &state.limits, now)
            .map_err(ApiError::invalid)?;
        if let Some(view) = state
            .store
            .replace_schedule(id, new, s.next_fire_at)
            .await?
        {
            state.publisher.schedules.notify_one();
            return Ok(view);
        }
    }
    Err(ApiError::conflict(
        "the schedule kept firing while it was being changed; try again",
    ))
}

/// Change a schedule. Changing `cron`, `every_ms`, `timezone` or `paused`
/// recomputes the next fire from now; other fields leave it.
#[utoipa::path(patch, path = "/v1/schedules/{id}", operation_id = "update_schedule", tag = "schedules", params(("id" = String, Path)), request_body = SchedulePatch,
    responses(
        (status = 200, body = ScheduleView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It kept firing during the change; try again", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(&[Role::Client])?;
    let patch: SchedulePatch = parse_json(&body)?;
    Ok(Json(revise(&state, &caller, &id, &patch).await?))
}

/// Delete a schedule; the jobs it created stay.
#[utoipa::path(delete, path = "/v1/schedules/{id}", operation_id = "delete_schedule", tag = "schedules", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Client])?;
    owned(&state, &caller, &id).await?;
    if state.store.delete_schedule(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("schedule", &id))
    }
}

/// Stop firing (`next_fire_at` becomes null).
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", operation_id = "pause_schedule", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It kept firing during the change; try again", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The stored schedule no longer validates", body = Problem, content_type = "application/problem+json")))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(&[Role::Client])?;
    let patch = SchedulePatch {
        paused: Some(true),
        ..SchedulePatch::default()
    };
    Ok(Json(revise(&state, &caller, &id, &patch).await?))
}

/// Fire again from now on; fires missed while paused are not caught up.
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", operation_id = "resume_schedule", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It kept firing during the change; try again", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The stored schedule no longer validates", body = Problem, content_type = "application/problem+json")))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(&[Role::Client])?;
    let patch = SchedulePatch {
        paused: Some(false),
        ..SchedulePatch::default()
    };
    Ok(Json(revise(&state, &caller, &id, &patch).await?))
}

/// Fire now, under the schedule's overlap policy (paused or not); the next
/// fire stays where it was.
#[utoipa::path(post, path = "/v1/schedules/{id}/trigger", operation_id = "trigger_schedule", tag = "schedules", params(("id" = String, Path)),
    responses(
        (status = 201, description = "The job it created", body = JobView),
        (status = 200, description = "Created nothing: the earlier job holding its job's `unique` key (named by `Brigade-Duplicate-Of`)", body = JobView,
            headers(("Brigade-Duplicate-Of" = String, description = "The earlier job holding the `unique` key"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`overlap: skip` and its previous job is unfinished", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Its job no longer validates under this server's limits", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(&[Role::Client])?;
    owned(&state, &caller, &id).await?;
    match state
        .store
        .trigger_schedule(&id, state.limits, state.now())
        .await?
    {
        TriggerOutcome::Fired(job, changes) => {
            state.publish(changes);
            let job = super::jobs::with_expiry(&state, *job);
            Ok((StatusCode::CREATED, Json(job)).into_response())
        }
        TriggerOutcome::NotFound => Err(ApiError::not_found("schedule", &id)),
        TriggerOutcome::Overlap(prev) => Err(ApiError::conflict(format!(
            "its previous job {prev} is unfinished and overlap is skip"
        ))),
        TriggerOutcome::Invalid => Err(ApiError::field(
            "job",
            "the schedule's job no longer validates under this server's limits",
        )),
        TriggerOutcome::Duplicate(holder, changes) => {
            state.publish(changes);
            let job = state
                .store
                .job(&holder)
                .await?
                .ok_or_else(|| ApiError::not_found("job", &holder))?;
            let job = super::jobs::with_expiry(&state, job);
            let mut res = (StatusCode::OK, Json(job)).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&holder) {
                res.headers_mut().insert(super::jobs::DUPLICATE_OF, v);
            }
            Ok(res)
        }
    }
}

/// The jobs a schedule created, newest first.
#[utoipa::path(get, path = "/v1/schedules/{id}/jobs", operation_id = "list_schedule_jobs", tag = "schedules", params(("id" = String, Path), PageParams),
    responses(
        (status = 200, body = Page<JobView>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<JobView>>> {
    caller.require(&[Role::Client])?;
    let (limit, cursor) = (limit(q.limit)?, cursor(&q.cursor)?);
    owned(&state, &caller, &id).await?;
    let filter = JobFilter {
        owner: caller.owner_filter(),
        schedule_id: Some(id),
        ..JobFilter::default()
    };
    let mut page = state.store.jobs(&filter, limit, cursor).await?;
    page.items = page
        .items
        .into_iter()
        .map(|j| super::jobs::with_expiry(&state, j))
        .collect();
    Ok(Json(page))
}
