//! HTTP routes, one module per resource. Handlers stay thin: parse,
//! authorize, call the store, publish what changed, answer.

pub mod events;
pub mod jobs;
pub mod languages;
pub mod limits;
pub mod ops;
pub mod queues;
pub mod schedules;
pub mod tasks;
pub mod token;
pub mod wait;
pub mod workers;

use brigade_api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items per page (default 100, max 1000).
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The page size asked for, checked.
pub fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )),
    }
}

/// A cursor must be one we handed out.
pub fn cursor(c: &Option<String>) -> Result<Option<&str>, ApiError> {
    match c.as_deref() {
        None => Ok(None),
        Some(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(s))
        }
        Some(_) => Err(ApiError::field(
            "cursor",
            "not a cursor this server handed out",
        )),
    }
}

/// One Server-Sent Event as framed on the wire, for the OpenAPI document:
/// `event:` names it, `data:` carries its JSON text, `id:` is its cursor.
/// (The streams' own payloads are described on each operation.)
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SseFrame {
    /// The event's name (`log`, `end`, or an event kind).
    pub event: Option<String>,
    /// Its payload, JSON text.
    pub data: String,
    /// Its cursor, to resume from.
    pub id: Option<String>,
    /// Reconnection delay the server asks for, in ms.
    pub retry: Option<u64>,
}
