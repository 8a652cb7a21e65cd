//! `/v1/jobs`: submit, read, wait for, cancel and delete jobs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use brigade_api::{
    CallbackAttempt, JobState, JobSubmit, JobView, Page, Problem, TaskState, TaskView,
};
use brigade_core::validate::{Limits, validate_job};
use brigade_store::{DeleteOutcome, Idempotency, JobFilter};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::{cursor, limit, wait};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, JsonBytes, parse_json};
use crate::state::AppState;

/// The header naming the earlier job a `unique` submit is a duplicate of.
pub const DUPLICATE_OF: &str = "brigade-duplicate-of";

/// Submit a job: a batch of tasks stored in one transaction.
#[utoipa::path(post, path = "/v1/jobs", operation_id = "submit_job", tag = "jobs", request_body = JobSubmit,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body return the first job")),
    responses(
        (status = 201, description = "Every task is durably stored", body = JobView),
        (status = 200, description = "Nothing created: the job an earlier request with this Idempotency-Key created, \
            or the earlier job holding the `unique` key (then named by `Brigade-Duplicate-Of`)", body = JobView,
            headers(("Brigade-Duplicate-Of" = String, description = "The earlier job holding the `unique` key"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    caller.require(&[Role::Client])?;
    let idem = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::field(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(Idempotency {
                key: key.to_owned(),
                hash: hex::encode(Sha256::digest(&body)),
            })
        }
    };
    let submit: JobSubmit = parse_json(&body)?;
    let limits: Limits = state.limits;
    let mut job = validate_job(submit, &limits).map_err(ApiError::invalid)?;
    let (span, traceparent) = crate::trace::submit(crate::trace::client_parent(&headers));
    job.traceparent = traceparent;
    brigade_core::callback::check_allowed(job.callback.as_ref(), &state.config.callback_allow)
        .map_err(|e| ApiError::invalid(vec![e]))?;
    let n = job.tasks.len() as u64;
    // On its own task: once the store leased for borrowed workers, their
    // replies must go out even if this request's client goes away.
    let (st, owner) = (state.clone(), caller.name.clone());
    let submitted = tokio::spawn(async move {
        let lent = st
            .dispatcher()
            .lend(n.min(u64::from(u32::MAX)) as u32)
            .await;
        let (now, ttl) = (st.now(), st.config.lease_ttl_ms as i64);
        let mut submitted = st
            .store
            .submit_and_lease(&owner, job, idem, now, ttl, lent.asks())
            .await?;
        let handed = std::mem::take(&mut submitted.handed);
        let n: usize = handed.iter().flatten().map(Vec::len).sum();
        metrics::counter!(crate::metrics::names::TASKS_HANDED_OFF).increment(n as u64);
        lent.settle(Some(handed));
        Ok::<_, brigade_store::StoreError>(submitted)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the submit stopped: {e}"),
        )
    })??;
    if submitted.created {
        metrics::counter!(crate::metrics::names::TASKS_SUBMITTED).increment(n);
    }
    span.record("brigade.job_id", submitted.job.id.as_str());
    span.record("brigade.tasks", n);
    state.publish(submitted.changes);
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut reply = (status, Json(submitted.job)).into_response();
    if let Some(earlier) = submitted.duplicate_of
        && let Ok(v) = axum::http::HeaderValue::from_str(&earlier)
    {
        reply.headers_mut().insert(DUPLICATE_OF, v);
    }
    Ok(reply)
}

/// Query of `GET /v1/jobs/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GetJobParams {
    /// Hold the request until the job is finished or this many ms pass (max 60000).
    pub wait_ms: Option<u64>,
}

/// Fill in when a finished job is deleted under this server's retention (the
/// store knows only a job's own `keep_ms`).
pub(crate) fn with_expiry(state: &AppState, mut job: JobView) -> JobView {
    if job.expires_at.is_none() {
        let finished = job.finished_at.map(brigade_core::to_ms);
        job.expires_at =
            brigade_core::retention::expires_at(finished, job.keep_ms, state.config.retention_ms)
                .map(brigade_core::from_ms);
    }
    job
}

async fn owned_job(state: &AppState, caller: &Caller, id: &str) -> ApiResult<JobView> {
    let job = state
        .store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", id))?;
    if caller.role != Role::Admin {
        let owner = state.store.job_owner(id).await?.unwrap_or_default();
        if !caller.may_touch(&owner) {
            return Err(ApiError::not_found("job", id));
        }
    }
    Ok(with_expiry(state, job))
}

/// A job with its progress; `?wait_ms=` long-polls until it is finished.
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs", params(("id" = String, Path), GetJobParams),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<GetJobParams>,
) -> ApiResult<Json<JobView>> {
    caller.require(&[Role::Client])?;
    let wait = wait::wait_ms(q.wait_ms)?;
    let job = wait::until_done(
        &state,
        wait,
        || owned_job(&state, &caller, &id),
        |job: &JobView| job.state.is_finished(),
        |e, _| e.kind == "job.finished" && e.job_id.as_deref() == Some(id.as_str()),
    )
    .await?;
    Ok(Json(job))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListJobsParams {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs with this name.
    pub name: Option<String>,
    /// Only jobs carrying this label, as `key:value`.
    pub label: Option<String>,
    /// Items per page (default 100, max 1000).
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs", params(ListJobsParams),
    responses((status = 200, body = Page<JobView>), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListJobsParams>,
) -> ApiResult<Json<Page<JobView>>> {
    caller.require(&[Role::Client])?;
    let job_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::field(
                "state",
                "one of queued, running, succeeded, failed, cancelled",
            )
        })?),
    };
    let label = match q.label.as_deref() {
        None => None,
        Some(l) => {
            let (k, v) = l
                .split_once(':')
                .ok_or_else(|| ApiError::field("label", "expected key:value"))?;
            Some((k.to_owned(), v.to_owned()))
        }
    };
    let filter = JobFilter {
        state: job_state,
        name: q.name,
        label,
        owner: caller.owner_filter(),
        ..JobFilter::default()
    };
    let mut page = state
        .store
        .jobs(&filter, limit(q.limit)?, cursor(&q.cursor)?)
        .await?;
    page.items = page
        .items
        .into_iter()
        .map(|j| with_expiry(&state, j))
        .collect();
    Ok(Json(page))
}

/// Query of `GET /v1/jobs/{id}/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobTasksParams {
    /// Only tasks in this state.
    pub state: Option<String>,
    /// Items per page (default 100, max 1000).
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A job's tasks with their output and error, in submission order.
#[utoipa::path(get, path = "/v1/jobs/{id}/tasks", operation_id = "list_job_tasks", tag = "jobs", params(("id" = String, Path), JobTasksParams),
    responses(
        (status = 200, body = Page<TaskView>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn tasks(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<JobTasksParams>,
) -> ApiResult<Json<Page<TaskView>>> {
    let task_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::field(
                "state",
                "one of queued, scheduled, running, succeeded, failed, cancelled",
            )
        })?),
    };
    caller.require(&[Role::Client])?;
    let (limit, cursor) = (limit(q.limit)?, cursor(&q.cursor)?);
    owned_job(&state, &caller, &id).await?;
    let page = state
        .store
        .job_tasks(&id, task_state, limit, cursor)
        .await?;
    Ok(Json(page.ok_or_else(|| ApiError::not_found("job", &id))?))
}

/// Cancel every unfinished task of a job; running ones are told to stop.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "cancel_job", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    caller.require(&[Role::Client])?;
    owned_job(&state, &caller, &id).await?;
    let changes = state
        .store
        .cancel_job(&id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("job", &id))?;
    state.publish(changes);
    Ok(Json(owned_job(&state, &caller, &id).await?))
}

/// Delete a finished job and its results.
#[utoipa::path(delete, path = "/v1/jobs/{id}", operation_id = "delete_job", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not finished", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Client])?;
    owned_job(&state, &caller, &id).await?;
    match state.store.delete_job(&id).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteOutcome::NotFound => Err(ApiError::not_found("job", &id)),
        DeleteOutcome::Unfinished => Err(ApiError::conflict(
            "the job is not finished; cancel it first",
        )),
    }
}

/// The delivery attempts of the job's callback, oldest first: each with its
/// status (`delivered` or `failed`), the HTTP status answered, the error and
/// when. A failed delivery is tried again with backoff for up to 24 h.
#[utoipa::path(get, path = "/v1/jobs/{id}/callbacks", operation_id = "list_job_callbacks", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, body = Vec<CallbackAttempt>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn callbacks(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<CallbackAttempt>>> {
    caller.require(&[Role::Client])?;
    owned_job(&state, &caller, &id).await?;
    let attempts = state
        .store
        .callback_attempts(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &id))?;
    Ok(Json(attempts))
}
