//! `POST /v1/auth/token`: OAuth2 client credentials (RFC 6749 §4.4).

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

/// The form of a token request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    /// The token name from the auth file.
    pub client_id: Option<String>,
    /// Its secret.
    pub client_secret: Option<String>,
}

/// A short-lived bearer token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// An RFC 6749 §5.2 error; it carries the RFC 9457 fields too.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client` or `unsupported_grant_type`.
    pub error: String,
    /// A sentence for a human.
    pub error_description: String,
    /// Problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Problem title.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Same as `error_description`.
    pub detail: String,
}

fn oauth_error(error: &str, description: &str) -> Response {
    let body = OAuthError {
        error: error.to_owned(),
        error_description: description.to_owned(),
        kind: format!(
            "https://brigade.dev/problems/oauth-{}",
            error.replace('_', "-")
        ),
        title: "Bad Request".to_owned(),
        status: 400,
        detail: description.to_owned(),
    };
    let mut res = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Exchange client credentials for a short-lived bearer token.
#[utoipa::path(post, path = "/v1/auth/token", operation_id = "issue_token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "RFC 6749 error: invalid_request, invalid_client, unsupported_grant_type", body = OAuthError),
        (status = 413, body = brigade_api::Problem, content_type = "application/problem+json"),
    ))]
pub async fn token(
    State(state): State<AppState>,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let Ok(Form(req)) = form else {
        return oauth_error(
            "invalid_request",
            "expected an application/x-www-form-urlencoded body with grant_type, client_id and client_secret",
        );
    };
    match req.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            );
        }
        None => return oauth_error("invalid_request", "grant_type is missing"),
    }
    let (Some(id), Some(secret)) = (req.client_id, req.client_secret) else {
        return oauth_error("invalid_client", "client_id and client_secret are required");
    };
    let auth = &state.config.auth;
    let Some(entry) = auth.check_credentials(&id, &secret) else {
        tracing::info!(client_id = %id, "token request with bad credentials");
        return oauth_error("invalid_client", "unknown client or wrong secret");
    };
    let body = TokenResponse {
        access_token: auth.issue(entry, state.now()),
        token_type: "Bearer".to_owned(),
        expires_in: auth.access_token_ttl_s,
    };
    let mut res = axum::Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
