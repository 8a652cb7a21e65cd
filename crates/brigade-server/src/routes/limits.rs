//! `/v1/limits`: concurrency and rate budgets per key (admin to change;
//! clients may look). The rules are `brigade_core::limits`; the store
//! applies them at lease.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use brigade_api::{LimitSpec, LimitView, Problem};
use brigade_core::limits::{is_valid_limit_key, validate};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBytes, parse_json};
use crate::state::AppState;

fn check_key(key: &str) -> ApiResult<()> {
    if is_valid_limit_key(key) {
        Ok(())
    } else {
        Err(ApiError::field(
            "key",
            "must be 1 to 128 bytes of [A-Za-z0-9:._/@-], or such a prefix followed by *",
        ))
    }
}

/// Every limit with what its keys use now: running, started in the current
/// window, and queued tasks it holds back.
#[utoipa::path(get, path = "/v1/limits", operation_id = "list_limits", tag = "limits",
    responses((status = 200, body = Vec<LimitView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<LimitView>>> {
    caller.require(&[Role::Client])?;
    Ok(Json(state.store.limits(state.now()).await?))
}

/// One limit with what its keys use.
#[utoipa::path(get, path = "/v1/limits/{key}", operation_id = "get_limit", tag = "limits", params(("key" = String, Path)),
    responses((status = 200, body = LimitView), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<LimitView>> {
    caller.require(&[Role::Client])?;
    check_key(&key)?;
    state
        .store
        .limits(state.now())
        .await?
        .into_iter()
        .find(|l| l.key == key)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("limit", &key))
}

/// Set the limit of a key, or of every key a pattern (`tenant:*`) matches,
/// each on its own budget (admin). Tasks held back under the old budget are
/// looked at again.
#[utoipa::path(put, path = "/v1/limits/{key}", operation_id = "set_limit", tag = "limits", params(("key" = String, Path)),
    request_body = LimitSpec,
    responses(
        (status = 200, body = LimitView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields: key, concurrency, rate, per_ms, burst", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Json<LimitView>> {
    caller.require(&[])?;
    check_key(&key)?;
    let spec: LimitSpec = parse_json(&body)?;
    let limit = validate(&spec).map_err(ApiError::invalid)?;
    let view = state.store.set_limit(&key, limit, state.now()).await?;
    state.dispatcher().wake();
    Ok(Json(view))
}

/// Remove a limit (admin): tasks it held back may start.
#[utoipa::path(delete, path = "/v1/limits/{key}", operation_id = "delete_limit", tag = "limits", params(("key" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(&[])?;
    check_key(&key)?;
    if state.store.delete_limit(&key).await? {
        state.dispatcher().wake();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("limit", &key))
    }
}
