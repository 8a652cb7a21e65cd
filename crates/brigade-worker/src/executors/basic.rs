//! The simple built-in kinds of the contract.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Registry, TaskContext, TaskFailure, TaskOutcome};

/// Longest `sleep` accepted (one day).
const MAX_SLEEP_MS: u64 = 86_400_000;

fn input<T: for<'de> Deserialize<'de>>(ctx: &TaskContext) -> Result<T, TaskFailure> {
    serde_json::from_value(ctx.input.clone())
        .map_err(|e| TaskFailure::bad_input(format!("input of {}: {e}", ctx.kind)))
}

#[derive(Deserialize)]
struct SleepInput {
    ms: u64,
}

#[derive(Deserialize, Default)]
struct FailInput {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retryable: Option<bool>,
}

#[derive(Deserialize, Default)]
struct FlakyInput {
    #[serde(default)]
    fail_attempts: u32,
}

async fn sleep(ctx: TaskContext) -> TaskOutcome {
    let SleepInput { ms } = input(&ctx)?;
    if ms > MAX_SLEEP_MS {
        return Err(TaskFailure::bad_input(format!(
            "ms: at most {MAX_SLEEP_MS}"
        )));
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(json!({ "slept_ms": ms }))
}

async fn fail(ctx: TaskContext) -> TaskOutcome {
    let i: FailInput = if ctx.input.is_null() {
        FailInput::default()
    } else {
        input(&ctx)?
    };
    let message = i.message.unwrap_or_else(|| "failed on purpose".into());
    if i.retryable.unwrap_or(true) {
        Err(TaskFailure::retryable(message))
    } else {
        Err(TaskFailure::permanent(message))
    }
}

async fn flaky(ctx: TaskContext) -> TaskOutcome {
    let i: FlakyInput = if ctx.input.is_null() {
        FlakyInput::default()
    } else {
        input(&ctx)?
    };
    if ctx.attempt <= i.fail_attempts {
        Err(TaskFailure::retryable(format!(
            "flaky: attempt {} of {} meant to fail",
            ctx.attempt, i.fail_attempts
        )))
    } else {
        Ok(json!({ "attempt": ctx.attempt }))
    }
}

/// Register `noop`, `echo`, `sleep`, `fail` and `flaky`.
pub fn register(r: &mut Registry) {
    r.register_fn("noop", |_ctx| async { Ok(Value::Null) });
    r.register_fn("echo", |ctx: TaskContext| async move { Ok(ctx.input) });
    r.register_fn("sleep", sleep);
    r.register_fn("fail", fail);
    r.register_fn("flaky", flaky);
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn ctx(kind: &str, input: Value, attempt: u32) -> TaskContext {
        TaskContext {
            id: "t".into(),
            job_id: "j".into(),
            kind: kind.into(),
            input,
            attempt,
            timeout: Duration::from_secs(5),
            cancel: CancellationToken::new(),
            log: crate::TaskLog::discard(),
            parents: Vec::new(),
            parents_truncated: false,
            flow: crate::TaskFlow::default(),
        }
    }

    async fn run(kind: &str, input: Value, attempt: u32) -> TaskOutcome {
        let mut r = Registry::new();
        register(&mut r);
        match r.get(kind) {
            Some(h) => h.run(ctx(kind, input, attempt)).await,
            None => Err(TaskFailure::permanent("no handler")),
        }
    }

    #[tokio::test]
    async fn builtins_follow_the_contract() {
        assert_eq!(run("noop", Value::Null, 1).await, Ok(Value::Null));
        assert_eq!(
            run("echo", json!({"a": [1, 2]}), 1).await,
            Ok(json!({"a": [1, 2]}))
        );
        assert_eq!(
            run("sleep", json!({"ms": 5}), 1).await,
            Ok(json!({"slept_ms": 5}))
        );
        assert_eq!(
            run("flaky", json!({"fail_attempts": 2}), 3).await,
            Ok(json!({"attempt": 3}))
        );
        let e = run("flaky", json!({"fail_attempts": 2}), 2)
            .await
            .err()
            .map(|f| f.retryable);
        assert_eq!(e, Some(true));
        let e = run("fail", json!({"message": "no", "retryable": false}), 1)
            .await
            .err();
        assert_eq!(
            e.map(|f| (f.error.message, f.retryable)),
            Some(("no".to_owned(), false))
        );
    }

    #[tokio::test]
    async fn bad_input_is_not_retried() {
        let e = run("sleep", json!({"ms": "soon"}), 1).await.err();
        assert_eq!(
            e.map(|f| (f.error.kind, f.retryable)),
            Some((brigade_api::ErrorKind::BadInput, false))
        );
    }
}
