//! Wire types of the brigade HTTP API, version 1 (`docs/api.md`).
//!
//! Pure data: serde for the wire and utoipa schemas for the OpenAPI document.
//! No I/O lives here, so the server, the client, the worker and the tests all
//! speak exactly the same shapes.

pub mod callbacks;
pub mod code;
pub mod events;
pub mod jobs;
pub mod limits;
pub mod logs;
pub mod page;
pub mod problem;
pub mod queues;
pub mod schedules;
pub mod tasks;
pub mod workers;

pub use callbacks::{CALLBACK_EVENTS, Callback, CallbackAttempt, SIGNATURE_HEADER};
pub use code::{CodeInput, CodeOutput, LanguageView, MAX_RESULT_BYTES};
pub use events::{Event, EventKind, ThroughputView};
pub use jobs::{Backoff, JobState, JobSubmit, JobView, Progress, TaskSpec, Unique, UniqueWhile};
pub use limits::{LimitSpec, LimitUsage, LimitView};
pub use logs::{LogBatch, LogLine, LogsReply, LogsRequest};
pub use page::Page;
pub use problem::{FieldError, Problem};
pub use queues::QueueView;
pub use schedules::{CatchUp, Overlap, ScheduleCreate, SchedulePatch, ScheduleView};
pub use tasks::{
    AttemptOutcome, CancelledReply, ErrorKind, HistoryEntry, ParentResult, RetriedReply, RunIf,
    TaskError, TaskFilterSpec, TaskProgress, TaskState, TaskView,
};
pub use workers::{
    Heartbeat, HeartbeatReply, LeaseRequest, LeaseResponse, LeasedTask, Load, Outcome,
    ProgressReport, ProgressRequest, RejectedResult, RejectionCode, ResultsReply, ResultsRequest,
    TaskResult, WorkerJoin, WorkerJoined, WorkerState, WorkerView,
};

/// RFC 3339 timestamps in UTC, as the contract wants them.
pub type Timestamp = time::OffsetDateTime;

/// The version this build speaks and reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// serde helpers for optional RFC 3339 timestamps.
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;
}
