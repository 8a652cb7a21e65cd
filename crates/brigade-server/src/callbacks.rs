//! Callback delivery: POST a finished job's view to the URL its `callback`
//! names, signed, until a 2xx comes back or 24 hours pass.
//!
//! The store keeps an outbox (written when the job finishes, in the same
//! transaction), so a delivery survives restarts and is made at least once.
//! This duty claims due deliveries (one server at a time per delivery, a
//! claim running out if its server dies), sends each, and records the
//! attempt with when to try again (`brigade_core::callback::retry_at`).
//!
//! The body is the job's view with `"event"` and `"delivery_id"` added; the
//! `Brigade-Signature` header is `t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, so a receiver checks the body came from a server that
//! knows the secret and rejects old timestamps (replays). Redirects are not
//! followed: a redirect could lead off the allowed hosts.

use std::time::Duration;

use brigade_store::{CallbackOutcome, DueCallback};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::state::AppState;

/// Deliveries claimed per look.
const BATCH: u32 = 16;
/// Longest time limit of one delivery request (and at most half a claim,
/// so a request ends well before its claim could pass to another server).
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two looks for due deliveries.
const MAX_POLL: Duration = Duration::from_millis(1000);
/// Longest error text kept per attempt.
const MAX_ERROR_BYTES: usize = 500;

/// The `Brigade-Signature` value of `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: the error case cannot happen, and
    // an unsigned request would be rejected by any receiver that checks.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return format!("t={t},v1=");
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Start the delivery duty, when this server has a callback secret (without
/// one it sends nothing; deliveries wait in the outbox for a server that has).
pub fn spawn(state: AppState) {
    let Some(secret) = state.config.callback_secret.clone() else {
        return;
    };
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(MAX_REQUEST_TIMEOUT.min(Duration::from_millis(state.config.callback_claim_ms / 2)))
        .user_agent(concat!("brigade/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for callbacks; none will be sent");
            return;
        }
    };
    tokio::spawn(deliverer(state, http, secret.into_bytes()));
}

async fn deliverer(state: AppState, http: reqwest::Client, secret: Vec<u8>) {
    let me = brigade_core::ids::new_id();
    let claim_ms = i64::try_from(state.config.callback_claim_ms).unwrap_or(i64::MAX);
    let poll = Duration::from_millis(state.config.callback_backoff_ms.max(1)).min(MAX_POLL);
    let mut events = state.publisher.bus.subscribe();
    loop {
        let now = state.now();
        let due = match state.store.claim_callbacks(&me, now, claim_ms, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "claiming callback deliveries failed");
                Vec::new()
            }
        };
        let full = due.len() >= BATCH as usize;
        let sends = due
            .into_iter()
            .map(|d| deliver(&state, &http, &secret, &me, d));
        futures::future::join_all(sends).await;
        if full {
            continue;
        }
        // A job finishing here or on another server is a reason to look now.
        let _ = tokio::time::timeout(poll, async {
            loop {
                match events.recv().await {
                    Ok(e) if e.kind == "job.finished" => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        })
        .await;
    }
}

/// The body of a delivery: the job's view with the event and delivery id.
async fn body(state: &AppState, d: &DueCallback) -> Result<Option<Vec<u8>>, String> {
    let job = match state.store.job(&d.job_id).await {
        Ok(Some(job)) => crate::routes::jobs::with_expiry(state, job),
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("reading the job: {e}")),
    };
    let mut v = serde_json::to_value(&job).map_err(|e| e.to_string())?;
    if let Some(o) = v.as_object_mut() {
        o.insert("event".into(), d.event.clone().into());
        o.insert("delivery_id".into(), d.id.clone().into());
    }
    serde_json::to_vec(&v).map(Some).map_err(|e| e.to_string())
}

async fn deliver(
    state: &AppState,
    http: &reqwest::Client,
    secret: &[u8],
    me: &str,
    d: DueCallback,
) {
    let attempt = d.attempts.saturating_add(1);
    let (delivered, http_status, error, retry) = send(state, http, secret, &d).await;
    let at = state.now();
    let retry_at = if delivered || !retry {
        None
    } else {
        brigade_core::callback::retry_at(
            attempt,
            d.created_at,
            at,
            state.config.callback_backoff_ms,
        )
    };
    let outcome = if delivered { "ok" } else { "failed" };
    metrics::counter!(crate::metrics::names::CALLBACK_DELIVERIES, "outcome" => outcome)
        .increment(1);
    if !delivered {
        tracing::info!(
            job = %d.job_id, delivery = %d.id, attempt, status = ?http_status, error = ?error,
            retry_at = ?retry_at, "callback delivery failed"
        );
    }
    let record = CallbackOutcome {
        id: d.id.clone(),
        claimed_by: me.to_owned(),
        attempt,
        delivered,
        http_status,
        error: error.map(|mut e| {
            if e.len() > MAX_ERROR_BYTES {
                let mut cut = MAX_ERROR_BYTES;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
            }
            e
        }),
        at,
        retry_at,
    };
    if let Err(e) = state.store.record_callback(record).await {
        // The claim runs out and the delivery is made again: at least once.
        tracing::warn!(error = %e, delivery = %d.id, "recording a callback attempt failed");
    }
}

/// Send one delivery: (delivered, HTTP status, error, worth retrying).
async fn send(
    state: &AppState,
    http: &reqwest::Client,
    secret: &[u8],
    d: &DueCallback,
) -> (bool, Option<u16>, Option<String>, bool) {
    if !brigade_core::callback::host_allowed(&d.url, &state.config.callback_allow) {
        return (
            false,
            None,
            Some("the host is no longer on this server's --callback-allow list".into()),
            false,
        );
    }
    let body = match body(state, d).await {
        Ok(Some(b)) => b,
        Ok(None) => return (false, None, Some("the job was deleted".into()), false),
        Err(e) => return (false, None, Some(e), true),
    };
    let t = state.now().div_euclid(1000);
    let sent = http
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(brigade_api::SIGNATURE_HEADER, signature(secret, t, &body))
        .header("Brigade-Event", &d.event)
        .header("Brigade-Delivery", &d.id)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => (true, Some(resp.status().as_u16()), None, false),
        Ok(resp) => {
            let status = resp.status();
            (
                false,
                Some(status.as_u16()),
                Some(format!("the receiver answered {status}")),
                true,
            )
        }
        Err(e) => (false, None, Some(format!("request failed: {e}")), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_time_dot_body() {
        // HMAC-SHA256("key", "1.{}"), computed independently (Python's hmac module).
        assert_eq!(
            signature(b"key", 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
