//! Limits: concurrency and rate per key, cluster-wide.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `PUT /v1/limits/{key}`: `concurrency`, a `rate`, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Most tasks naming the key that run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub concurrency: Option<u32>,
    /// Most tasks naming the key that start per `per_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub rate: Option<u32>,
    /// The rate's window (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400000)]
    pub per_ms: Option<u64>,
    /// How many may start at once after a quiet spell (default `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub burst: Option<u32>,
}

/// What one concrete key uses of its budget now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitUsage {
    /// The concrete key (`tenant:42` under the pattern `tenant:*`).
    pub key: String,
    /// Tasks naming it that run now.
    pub running: u64,
    /// Tasks naming it started in the current window (the rate's, else a second).
    pub started: u64,
    /// Queued tasks held back by it.
    pub waiting: u64,
}

/// A limit and what its keys use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LimitView {
    /// The key, or a pattern ending in `*`.
    pub key: String,
    /// Most running at once per concrete key.
    pub concurrency: Option<u32>,
    /// Most starts per window per concrete key.
    pub rate: Option<u32>,
    /// The rate's window.
    pub per_ms: Option<u64>,
    /// The rate's bucket size.
    pub burst: Option<u32>,
    /// Running now, summed over its keys.
    pub running: u64,
    /// Started in the current window, summed over its keys.
    pub started: u64,
    /// Queued tasks held back, summed over its keys.
    pub waiting: u64,
    /// Each concrete key in use (for a pattern, every key it matched).
    pub keys: Vec<LimitUsage>,
    /// Last set.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: time::OffsetDateTime,
}
