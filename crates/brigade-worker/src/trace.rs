//! The worker's part of a job's trace: a `task.run` span around each
//! attempt, a child of the trace context its lease carries.
//!
//! The span has target [`TARGET`], which only the OpenTelemetry layer
//! listens to (`brigade worker --otlp-endpoint`); without it the span is
//! disabled and costs nothing.

use brigade_api::LeasedTask;
use brigade_core::trace::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use brigade_core::trace::TARGET;

/// How an attempt ended, as the `brigade.outcome` attribute says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// With an output.
    Succeeded,
    /// With an error (timeouts and crashes too).
    Failed,
    /// Stopped by a cancel: nothing is reported.
    Cancelled,
    /// Handed back (lost lease, shutdown): its result is dropped.
    Abandoned,
}

impl RunOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Abandoned => "abandoned",
        }
    }
}

/// The `task.run` span of one attempt: a child of the task's trace context
/// when the lease carries a valid one, a root span otherwise.
pub fn run_span(task: &LeasedTask) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "task.run",
        brigade.job_id = %task.job_id,
        brigade.task_id = %task.id,
        brigade.task_kind = %task.kind,
        brigade.attempt = task.attempt,
        brigade.outcome = tracing::field::Empty,
    );
    if let Some(parent) = task.traceparent.as_deref().and_then(TraceParent::parse) {
        let _ = span.set_parent(parent.otel_context());
    }
    span
}

/// Record how the attempt of `span` ended.
pub fn record_outcome(span: &tracing::Span, outcome: RunOutcome) {
    span.record("brigade.outcome", outcome.as_str());
}
