//! The `flow` kind: a task that shows the workflow machinery from outside.
//!
//! Handlers written against the library use [`TaskContext::spawn`],
//! [`TaskContext::progress`] and [`TaskContext::parents`] directly; the
//! `brigade worker` binary has only built-in kinds, so without one of its
//! own a graph submitted over HTTP could not spawn, report progress or
//! show what its parents produced. `flow` does each from its input, which
//! makes it the kind the end-to-end tests, the docs and `brigade demo`
//! use for map-reduce and graphs with real worker processes.
//!
//! Input (every field optional):
//! - `value`: any JSON, returned as is;
//! - `spawn`: tasks (the submit shape) added to the job when this attempt
//!   succeeds;
//! - `progress`: `{"done": N, "total": M, "message": "..."}`, reported
//!   before the task ends;
//! - `hold_ms`: how long to wait after reporting progress (at most 60 s),
//!   so that a running task's progress can be looked at.
//!
//! Output: `{"value": <value>, "parents": [{"key", "state", "output"}]}`,
//! the parents in the order the lease gave them.

use std::time::Duration;

use brigade_api::TaskSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Registry, TaskContext, TaskFailure, TaskOutcome};

/// Longest `hold_ms` accepted.
const MAX_HOLD_MS: u64 = 60_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FlowInput {
    #[serde(default)]
    value: Value,
    #[serde(default)]
    spawn: Vec<TaskSpec>,
    #[serde(default)]
    progress: Option<FlowProgress>,
    #[serde(default)]
    hold_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowProgress {
    done: u64,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

async fn flow(ctx: TaskContext) -> TaskOutcome {
    let i: FlowInput = if ctx.input.is_null() {
        FlowInput::default()
    } else {
        serde_json::from_value(ctx.input.clone())
            .map_err(|e| TaskFailure::bad_input(format!("input of flow: {e}")))?
    };
    if i.hold_ms > MAX_HOLD_MS {
        return Err(TaskFailure::bad_input(format!(
            "hold_ms: at most {MAX_HOLD_MS}"
        )));
    }
    if let Some(p) = i.progress {
        ctx.progress(p.done, p.total, p.message.unwrap_or_default())
            .await;
    }
    if i.hold_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(i.hold_ms)) => {}
            _ = ctx.cancel.cancelled() => return Err(TaskFailure::retryable("cancelled")),
        }
    }
    let parents = ctx
        .parents()
        .await
        .map_err(|e| TaskFailure::retryable(format!("parents: {e}")))?;
    let parents: Vec<Value> = parents
        .into_iter()
        .map(|p| json!({ "key": p.key, "state": p.state, "output": p.output }))
        .collect();
    ctx.spawn_all(i.spawn);
    Ok(json!({ "value": i.value, "parents": parents }))
}

/// Register `flow`.
pub fn register(r: &mut Registry) {
    r.register_fn("flow", flow);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_checked() -> Result<(), serde_json::Error> {
        let bad: Result<FlowInput, _> = serde_json::from_value(json!({ "spawm": [] }));
        assert!(bad.is_err(), "a misspelt field is refused");
        let ok: FlowInput = serde_json::from_value(json!({
            "value": 1,
            "spawn": [{ "kind": "noop" }],
            "progress": { "done": 1, "total": 2 }
        }))?;
        assert_eq!(ok.spawn.len(), 1);
        assert_eq!(ok.value, json!(1));
        Ok(())
    }
}
