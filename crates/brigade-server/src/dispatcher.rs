//! Long-poll dispatch: workers wait here for work, and the least loaded is served first.
//!
//! One task owns every waiting lease request. When work may have arrived (a
//! submit, a retry coming due, a requeue, a tick) it leases for the waiters in
//! order of load — running/capacity, then reported CPU — so when several
//! workers wait, the least loaded gets the task. A request that finds work at
//! once returns at once; one that finds none waits until woken or its
//! `wait_ms` ends.
//!
//! The leases of one round (new requests, or the waiters woken together) are
//! issued at once rather than one after another, in load order: the store
//! commits them in one group (one fsync for all) instead of one each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brigade_api::{LeasedTask, Load};
use brigade_core::Clock;
use brigade_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::state::Publisher;

/// What a waiting lease request gets: tasks, or the reason there are none.
pub type LeaseReply = Result<Vec<LeasedTask>, ApiError>;

enum Command {
    Wait(Waiter),
    Wake,
    Load(String, Load),
    Forget(String),
    Shutdown,
}

struct Waiter {
    worker_id: String,
    max: u32,
    deadline: Instant,
    reply: oneshot::Sender<LeaseReply>,
}

/// Commands waiting for the dispatcher task.
pub struct Inbox(mpsc::UnboundedReceiver<Command>);

/// Handle to the dispatcher task.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Command>,
}

impl Dispatcher {
    /// A handle and the inbox its task will read (handles can exist before the task runs).
    pub fn channel() -> (Self, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, Inbox(rx))
    }

    /// Start the dispatcher task on `inbox`.
    pub fn spawn(
        inbox: Inbox,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        lease_ttl_ms: i64,
        publisher: Publisher,
    ) {
        let task = Task {
            store,
            clock,
            ttl: lease_ttl_ms,
            publisher,
            waiters: Vec::new(),
            loads: HashMap::new(),
            closing: false,
        };
        tokio::spawn(task.run(inbox.0));
    }

    /// Lease up to `max` tasks for a worker, waiting up to `wait` for some.
    pub async fn lease(&self, worker_id: String, max: u32, wait: Duration) -> LeaseReply {
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            worker_id,
            max,
            deadline: Instant::now() + wait,
            reply,
        };
        self.tx.send(Command::Wait(waiter)).map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        })?;
        answer.await.map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        })?
    }

    /// Work may be available: let the waiters look.
    pub fn wake(&self) {
        let _ = self.tx.send(Command::Wake);
    }

    /// Remember a worker's latest load, to order the waiters.
    pub fn note_load(&self, worker_id: &str, load: Load) {
        let _ = self.tx.send(Command::Load(worker_id.to_owned(), load));
    }

    /// The server is shutting down: answer every waiting lease now (with no
    /// tasks) and every later one at once with 503, so workers come back to
    /// a restarted server instead of seeing their connection cut.
    pub fn shut_down(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// A worker left: drop what is known of it.
    pub fn forget(&self, worker_id: &str) {
        let _ = self.tx.send(Command::Forget(worker_id.to_owned()));
    }
}

struct Task {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl: i64,
    publisher: Publisher,
    waiters: Vec<Waiter>,
    loads: HashMap<String, Load>,
    /// Shutting down: no more leases.
    closing: bool,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        // A safety net: look for work now and then even when nobody said so
        // (another server's submit, a clock that jumped).
        let mut tick = tokio::time::interval(Duration::from_millis(1000));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_deadline = self.waiters.iter().map(|w| w.deadline).min();
            let mut woken = false;
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    let mut fresh = Vec::new();
                    woken |= self.handle(cmd, &mut fresh);
                    // Take everything else already queued before leasing for anyone.
                    while let Ok(cmd) = rx.try_recv() {
                        woken |= self.handle(cmd, &mut fresh);
                    }
                    // New requests try at once, each for all it asked; those
                    // that find nothing wait.
                    fresh.sort_by_key(|w| self.load_key(w));
                    let asks: Vec<u32> = fresh.iter().map(|w| w.max).collect();
                    self.lease_round(fresh, &asks).await;
                }
                // With nothing queued there is nothing to lease: one read
                // instead of a lease per waiting worker every second.
                _ = tick.tick() => {
                    woken = !self.waiters.is_empty()
                        && self.store.has_queued().await.unwrap_or(true);
                }
                _ = sleep_until(next_deadline) => {}
            }
            self.expire();
            if woken {
                self.serve_waiters().await;
            }
        }
    }

    /// Apply one command; true when waiters should look for work. New lease
    /// requests are collected in `fresh`.
    fn handle(&mut self, cmd: Command, fresh: &mut Vec<Waiter>) -> bool {
        match cmd {
            Command::Wait(w) if self.closing => {
                let mut e = ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                );
                e.retry_after = Some(1);
                let _ = w.reply.send(Err(e));
                false
            }
            Command::Wait(w) => {
                fresh.push(w);
                false
            }
            Command::Wake => true,
            Command::Load(id, load) => {
                self.loads.insert(id, load);
                false
            }
            Command::Forget(id) => {
                self.loads.remove(&id);
                false
            }
            Command::Shutdown => {
                self.closing = true;
                for w in self.waiters.drain(..) {
                    let _ = w.reply.send(Ok(Vec::new()));
                }
                false
            }
        }
    }

    /// Lease for every waiter in `round` at once (waiter `i` asks for
    /// `asks[i]`); answer those that got tasks or an error, keep the rest waiting.
    async fn lease_round(&mut self, round: Vec<Waiter>, asks: &[u32]) {
        if round.is_empty() {
            return;
        }
        // Polled in order, so the store sees the requests in load order.
        let replies = futures::future::join_all(
            round
                .iter()
                .zip(asks)
                .map(|(w, &max)| self.try_lease(w, max)),
        )
        .await;
        for (w, reply) in round.into_iter().zip(replies) {
            match reply {
                Ok(tasks) if tasks.is_empty() => {
                    if !w.reply.is_closed() {
                        self.waiters.push(w);
                    }
                }
                reply => {
                    let _ = w.reply.send(reply);
                }
            }
        }
    }

    async fn try_lease(&self, w: &Waiter, max: u32) -> LeaseReply {
        if w.reply.is_closed() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        match self.store.lease(&w.worker_id, max, now, self.ttl).await {
            Ok(Some((tasks, changes))) => {
                self.publisher.publish(changes);
                Ok(tasks)
            }
            Ok(None) => Err(ApiError::not_found("worker", &w.worker_id)),
            Err(e) => Err(e.into()),
        }
    }

    fn load_key(&self, w: &Waiter) -> (u64, u64) {
        let load = self.loads.get(&w.worker_id).copied().unwrap_or_default();
        // The request itself says how many slots are free: capacity - max are busy.
        let capacity = load.capacity.max(w.max);
        brigade_core::dispatch::load_key(capacity - w.max, capacity, load.cpu)
    }

    async fn serve_waiters(&mut self) {
        let mut waiting = std::mem::take(&mut self.waiters);
        waiting.retain(|w| !w.reply.is_closed());
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by_key(|w| self.load_key(w));
        // Spread a burst: with k workers waiting, each takes at most its
        // share now and comes back at once for more if it has room.
        let k = waiting.len() as u32;
        let asks: Vec<u32> = waiting.iter().map(|w| w.max.div_ceil(k).max(1)).collect();
        self.lease_round(waiting, &asks).await;
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].deadline <= now || self.waiters[i].reply.is_closed() {
                let w = self.waiters.swap_remove(i);
                let _ = w.reply.send(Ok(Vec::new()));
            } else {
                i += 1;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
