//! Callbacks: the server tells a URL when a job finishes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The events a callback may ask for.
pub const CALLBACK_EVENTS: &[&str] = &["job.finished"];

/// Header of a callback request carrying its signature:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "Brigade-Signature";

fn default_events() -> Vec<String> {
    vec!["job.finished".to_owned()]
}

/// Job field `callback`: where the server POSTs the job's view (with
/// `event`) when one of `events` happens to the job. The URL's host must be
/// on the server's `--callback-allow` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// `https://…` (or `http://…`) URL, at most 2048 bytes, its host allowed
    /// by the server.
    #[schema(example = "https://hooks.example.com/brigade")]
    pub url: String,
    /// Events to deliver: `job.finished` (the default and, for now, the only one).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
}

impl Callback {
    /// A callback to `url` on `job.finished`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            events: default_events(),
        }
    }
}

/// One attempt to deliver a callback, as `GET /v1/jobs/{id}/callbacks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackAttempt {
    /// The delivery this attempt belongs to (one per event).
    pub delivery_id: String,
    /// Its event, e.g. `job.finished`.
    pub event: String,
    /// Where it went.
    pub url: String,
    /// Attempt number of the delivery, from 1.
    pub attempt: u32,
    /// `delivered` (a 2xx answer) or `failed` (anything else; retried
    /// with backoff for up to 24 h).
    pub status: String,
    /// The HTTP status answered, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the attempt ended.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}
