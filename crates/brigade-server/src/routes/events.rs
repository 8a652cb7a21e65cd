//! `/v1/events` (Server-Sent Events) and `/v1/events/ws` (WebSocket).
//!
//! A client receives the events from the moment it connects. One that reads
//! too slowly to keep up is not allowed to slow the server: it gets a
//! `stream.lagged` notice saying how many events it missed, then the stream ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use brigade_api::Event;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::IntoParams;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Filter of the event streams.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Only events of this job.
    pub job: Option<String>,
    /// A bearer token, for browsers that cannot set `Authorization` on an event stream.
    pub access_token: Option<String>,
}

enum Next {
    Event(Arc<Event>),
    Lagged(u64),
    Closed,
}

async fn next(rx: &mut broadcast::Receiver<Arc<Event>>, job: Option<&str>) -> Next {
    loop {
        match rx.recv().await {
            Ok(e) => {
                if job.is_none() || e.job_id.as_deref() == job {
                    return Next::Event(e);
                }
            }
            Err(RecvError::Lagged(n)) => return Next::Lagged(n),
            Err(RecvError::Closed) => return Next::Closed,
        }
    }
}

fn lagged_notice(n: u64) -> String {
    serde_json::json!({
        "type": "stream.lagged",
        "missed": n,
        "detail": "this client read too slowly and missed events; reconnect and re-read current state from the REST resources",
    })
    .to_string()
}

/// Who may follow which events: admins all of them, clients only a job of
/// their own (named with `?job=`), workers none.
async fn authorize(state: &AppState, caller: &Caller, job: Option<&str>) -> ApiResult<()> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    caller.require(&[Role::Client])?;
    let Some(job) = job else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "clients follow the events of one of their own jobs: pass ?job=ID",
        ));
    };
    match state.store.job_owner(job).await? {
        Some(owner) if caller.may_touch(&owner) => Ok(()),
        _ => Err(ApiError::not_found("job", job)),
    }
}

/// Live events as Server-Sent Events; `?job=` keeps one job's.
#[utoipa::path(get, path = "/v1/events", operation_id = "follow_events", tag = "events", params(EventParams),
    responses((status = 200, description = "text/event-stream of events: each frame's `data` is an Event as JSON", body = super::SseFrame, content_type = "text/event-stream")))]
pub async fn sse(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    authorize(&state, &caller, q.job.as_deref()).await?;
    let rx = state.publisher.bus.subscribe();
    let stream = futures::stream::unfold((rx, q.job, false), |(mut rx, job, done)| async move {
        if done {
            return None;
        }
        match next(&mut rx, job.as_deref()).await {
            Next::Event(e) => {
                let data = serde_json::to_string(&*e).unwrap_or_default();
                Some((
                    Ok(SseEvent::default().event(e.kind.clone()).data(data)),
                    (rx, job, false),
                ))
            }
            Next::Lagged(n) => Some((
                Ok(SseEvent::default()
                    .event("stream.lagged")
                    .data(lagged_notice(n))),
                (rx, job, true),
            )),
            Next::Closed => None,
        }
    });
    // The stream ends when the server shuts down (the client reconnects).
    let stream = futures::StreamExt::take_until(stream, state.closing.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Live events over a WebSocket, one JSON text message each; `?job=` keeps one job's.
#[utoipa::path(get, path = "/v1/events/ws", operation_id = "follow_events_ws", tag = "events", params(EventParams),
    responses((status = 101, description = "Switching to WebSocket; each message is an Event", body = Event)))]
pub async fn ws(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Who may listen is decided before whether the request is a proper upgrade.
    if let Err(e) = authorize(&state, &caller, q.job.as_deref()).await {
        return e.into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::new(rejection.status(), rejection.body_text()).into_response();
        }
    };
    let rx = state.publisher.bus.subscribe();
    upgrade
        .on_upgrade(move |socket| pump(socket, rx, q.job))
        .into_response()
}

async fn pump(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<Event>>, job: Option<String>) {
    loop {
        tokio::select! {
            n = next(&mut rx, job.as_deref()) => match n {
                Next::Event(e) => {
                    let text = serde_json::to_string(&*e).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Next::Lagged(n) => {
                    let _ = socket.send(Message::Text(lagged_notice(n).into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Next::Closed => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Tasks finished per second over the last five minutes, as this server saw
/// their events (on PostgreSQL, other servers' too): what the dashboard's
/// throughput chart starts from.
#[utoipa::path(get, path = "/v1/stats/throughput", operation_id = "throughput", tag = "events",
    responses((status = 200, body = brigade_api::ThroughputView)))]
pub async fn throughput(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<brigade_api::ThroughputView>> {
    caller.require(&[Role::Client])?;
    Ok(axum::Json(state.publisher.history.view(state.now())))
}
