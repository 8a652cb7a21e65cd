//! Long-polls: hold a read until the thing read is finished or the wait ends.
//!
//! Jobs (`GET /v1/jobs/{id}?wait_ms=`) and tasks (`GET /v1/tasks/{id}?wait_ms=`)
//! wait the same way: subscribe to the bus before the first read, so a finish
//! between the two is not missed, and read again when an event says it may be
//! done, when the bus lagged, and once a second in case it finished on
//! another server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use brigade_api::Event;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Longest `wait_ms` on a job or a task.
pub const MAX_WAIT_MS: u64 = 60_000;

/// How often a waiter reads again without an event (another server's finish
/// reaches this server's bus only through the store).
const RECHECK: Duration = Duration::from_millis(1000);

/// `wait_ms` as given, or the problem naming it.
pub(crate) fn wait_ms(given: Option<u64>) -> ApiResult<u64> {
    let wait = given.unwrap_or(0);
    if wait > MAX_WAIT_MS {
        return Err(ApiError::field("wait_ms", format!("at most {MAX_WAIT_MS}")));
    }
    Ok(wait)
}

/// Read with `read` until `done` holds for what it returns or `wait_ms` pass.
/// `may_be_done` picks the events after which to read again, given the
/// latest read.
pub(crate) async fn until_done<T, R, F>(
    state: &AppState,
    wait_ms: u64,
    read: R,
    done: impl Fn(&T) -> bool,
    may_be_done: impl Fn(&Event, &T) -> bool,
) -> ApiResult<T>
where
    R: Fn() -> F,
    F: Future<Output = ApiResult<T>>,
{
    let mut events = state.publisher.bus.subscribe();
    let mut last = read().await?;
    if wait_ms == 0 || done(&last) {
        return Ok(last);
    }
    let _permit = state.long_poll_permit()?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let until = deadline.min(tokio::time::Instant::now() + RECHECK);
        let next: Result<Result<Arc<Event>, RecvError>, _> = tokio::select! {
            next = tokio::time::timeout_at(until, events.recv()) => next,
            // Shutting down: answer with what is there now; the client asks again.
            () = state.closing.cancelled() => return read().await,
        };
        match next {
            Ok(Ok(e)) if !may_be_done(&e, &last) => continue,
            Ok(Err(RecvError::Closed)) => return read().await,
            // The event, a lag or the recheck: read again.
            _ => {
                last = read().await?;
                if done(&last) || tokio::time::Instant::now() >= deadline {
                    return Ok(last);
                }
            }
        }
    }
}
