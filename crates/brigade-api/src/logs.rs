//! Task logs: lines a handler writes while it runs, shipped by its worker.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::RejectedResult;

/// Most bytes of log lines kept per attempt; beyond, lines are dropped and a
/// final [`TRUNCATED`] line says so.
pub const MAX_LOG_BYTES_PER_ATTEMPT: usize = 64 * 1024;
/// Longest single log line, in bytes (longer ones are cut).
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// The line that marks where an attempt's log was cut.
pub const TRUNCATED: &str = "[truncated]";

/// `POST /v1/workers/{id}/logs`: log lines of tasks leased to this worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// Lines by task attempt.
    pub logs: Vec<LogBatch>,
}

/// Lines of one attempt of one task, in the order they were written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    /// Task id.
    pub task_id: String,
    /// The attempt that wrote them (must be the task's current one).
    pub attempt: u32,
    /// The lines, without trailing newlines.
    pub lines: Vec<String>,
}

/// Reply to `POST /v1/workers/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogsReply {
    /// Tasks whose lines were stored.
    pub accepted: Vec<String>,
    /// Batches not stored (not the current attempt, not leased to this worker, unknown task).
    pub rejected: Vec<RejectedResult>,
}

/// One stored log line, as `GET /v1/tasks/{id}/logs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// The attempt that wrote it.
    pub attempt: u32,
    /// When the server received it.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The text.
    pub line: String,
}
