//! Heartbeats recorded in batches.
//!
//! Every worker heartbeats every few seconds whether it works or not, so a
//! thousand idle workers send hundreds a second. Written one by one, each
//! would be its own commit, and the server would spend its time committing
//! nothing of value. Here they wait a moment for company (at most a twentieth
//! of the heartbeat period, and never more than 100 ms) and the whole batch is
//! one transaction of two statements, whatever its size.

use std::sync::Arc;
use std::time::Duration;

use brigade_api::{Heartbeat, HeartbeatReply};
use brigade_core::Clock;
use brigade_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::ApiError;

/// Most heartbeats in one transaction.
const MAX_BATCH: usize = 4096;
/// Longest a heartbeat waits for others before its batch is written.
const MAX_LINGER: Duration = Duration::from_millis(100);

type Reply = Result<Option<HeartbeatReply>, ApiError>;

struct Beat {
    worker: String,
    hb: Heartbeat,
    reply: oneshot::Sender<Reply>,
}

/// Hands heartbeats to the batcher and waits for their replies.
#[derive(Clone)]
pub struct Heartbeats {
    tx: mpsc::Sender<Beat>,
}

impl Heartbeats {
    /// Start the batcher. `heartbeat_ms` is the period workers are given;
    /// leases are extended to `now + ttl_ms`.
    pub fn spawn(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        heartbeat_ms: u64,
        ttl_ms: i64,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let linger = Duration::from_millis(heartbeat_ms / 20).min(MAX_LINGER);
        tokio::spawn(batcher(rx, store, clock, linger, ttl_ms));
        Self { tx }
    }

    /// Record one heartbeat; `None` when the worker is unknown.
    pub async fn beat(&self, worker: String, hb: Heartbeat) -> Reply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Beat { worker, hb, reply })
            .await
            .map_err(|_| ApiError::shutting_down())?;
        rx.await.map_err(|_| ApiError::shutting_down())?
    }
}

async fn batcher(
    mut rx: mpsc::Receiver<Beat>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    linger: Duration,
    ttl_ms: i64,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(beat)) => batch.push(beat),
                Ok(None) | Err(_) => break,
            }
        }
        let (beats, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|b| ((b.worker, b.hb), b.reply)).unzip();
        match store.heartbeats(beats, clock.now_ms(), ttl_ms).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
