//! A job's trace on the server: the `job.submit` span (a child of the
//! client's `traceparent`, when it sent one), and a `task.lease` and a
//! `task.result` span for each task, children of the job's trace context
//! stored on the task.
//!
//! The spans have target [`TARGET`], which only the OpenTelemetry layer
//! listens to (`brigade server --otlp-endpoint`): without it they are
//! disabled callsites, and no trace context is made up for a job.

use brigade_api::{LeasedTask, Outcome};
use brigade_core::trace::TraceParent;
use brigade_store::TracedResult;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use brigade_core::trace::TARGET;

/// The header a client names the trace of its submit with.
pub const TRACEPARENT: &str = "traceparent";

/// The client's trace context, `None` when absent or malformed.
pub fn client_parent(headers: &axum::http::HeaderMap) -> Option<TraceParent> {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceParent::parse(v.trim()))
}

/// The trace context of `span` as a `traceparent`, `None` when it is not
/// traced (no OpenTelemetry layer, or the span disabled).
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// A `job.submit` span, a child of the client's context when it sent one,
/// with the job's trace context to store on its tasks: the span's own when
/// tracing is on, else the client's as it came, else none.
pub fn submit(client: Option<TraceParent>) -> (tracing::Span, Option<String>) {
    let span = tracing::info_span!(
        target: TARGET,
        "job.submit",
        brigade.job_id = tracing::field::Empty,
        brigade.tasks = tracing::field::Empty,
    );
    if let Some(parent) = &client {
        let _ = span.set_parent(parent.otel_context());
    }
    let context = traceparent_of(&span).or(client).map(|tp| tp.to_string());
    (span, context)
}

/// One `task.lease` span for each leased task of a traced job.
pub fn leased(worker_id: &str, tasks: &[LeasedTask]) {
    for t in tasks {
        let Some(parent) = t.traceparent.as_deref().and_then(TraceParent::parse) else {
            continue;
        };
        let span = tracing::info_span!(
            target: TARGET,
            "task.lease",
            brigade.job_id = %t.job_id,
            brigade.task_id = %t.id,
            brigade.task_kind = %t.kind,
            brigade.attempt = t.attempt,
            brigade.worker_id = %worker_id,
        );
        let _ = span.set_parent(parent.otel_context());
    }
}

/// One `task.result` span for each recorded result of a traced job.
pub fn recorded(results: &[TracedResult]) {
    for r in results {
        let Some(parent) = TraceParent::parse(&r.traceparent) else {
            continue;
        };
        let span = tracing::info_span!(
            target: TARGET,
            "task.result",
            brigade.job_id = %r.job_id,
            brigade.task_id = %r.task_id,
            brigade.task_kind = %r.kind,
            brigade.attempt = r.attempt,
            brigade.outcome = match r.outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Failed => "failed",
            },
        );
        let _ = span.set_parent(parent.otel_context());
    }
}
