//! Operations: liveness, readiness, metrics.

use axum::extract::{FromRef, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", responses((status = 200, description = "ok", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Storage answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, description = "ready", body = String), (status = 503, body = brigade_api::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    state.store.ping().await.map_err(|e| {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage is not reachable: {e}"),
        );
        err.retry_after = Some(1);
        err
    })?;
    Ok("ready")
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>, parts: Parts) -> ApiResult<impl IntoResponse> {
    if !state.config.public_metrics {
        auth::authenticate(&parts, &auth::AuthState::from_ref(&state))?.require(&[])?;
    }
    let text = state
        .publisher
        .metrics
        .render(&*state.store, state.now())
        .await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
