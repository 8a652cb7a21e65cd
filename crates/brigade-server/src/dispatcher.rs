//! Long-poll dispatch: workers wait here for work, and the least loaded is served first.
//!
//! One task owns every waiting lease request. When work may have arrived (a
//! submit, a retry coming due, a requeue, a tick) it leases for the waiters in
//! order of load — running/capacity, then reported CPU — so when several
//! workers wait, the least loaded gets the task. A request that finds work at
//! once returns at once; one that finds none waits until woken or its
//! `wait_ms` ends.
//!
//! A worker that runs nothing and waits here need not heartbeat: every
//! heartbeat period the dispatcher records one batch of heartbeats for all
//! such waiters (one write, however many), and answers those the store says
//! are to drain with `drain: true`. A thousand idle workers then cost the
//! server their long-polls only.
//!
//! The leases of one round (new requests, or the waiters woken together) are
//! issued at once rather than one after another, in load order: the store
//! commits them in one group (one fsync for all) instead of one each.
//!
//! A submit hands its tasks straight to waiting workers: it borrows the
//! least loaded waiters ([`Dispatcher::lend`]), leases for them in the
//! submit's own transaction, answers them itself and gives back those that
//! got nothing ([`Lent::settle`]). An idle round trip then costs one commit
//! and no wake-up between submit and lease.
//!
//! A lease request may carry the worker's finished results: they are
//! recorded in the same transaction as its lease, and the reply says what
//! became of them. A busy worker holds a lease request for no tasks
//! (`max: 0`); when a task it runs is cancelled, that long-poll is answered
//! at once with `cancel`, so the cancel reaches it within a round trip
//! instead of at its next heartbeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brigade_api::{Heartbeat, HeartbeatReply, LeasedTask, Load, ResultsReply, TaskResult};
use brigade_core::Clock;
use brigade_store::{HandOff, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Why a lease request got no tasks.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The server is shutting down: come back (to a restarted server).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The store does not know the worker (or it left): it is to join again.
    #[error("no worker with id {0:?}")]
    UnknownWorker(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] brigade_store::StoreError),
}

/// Where the dispatcher hands the changes its leases made (events, wake-ups).
pub type ChangeSink = Arc<dyn Fn(brigade_store::Changes) + Send + Sync>;

/// What a lease request gets.
#[derive(Debug, Default)]
pub struct Granted {
    /// The tasks leased; empty when none came in time.
    pub tasks: Vec<LeasedTask>,
    /// The worker is to drain.
    pub drain: bool,
    /// Tasks the worker runs that were cancelled.
    pub cancel: Vec<String>,
    /// What became of the results the request carried.
    pub results: Option<ResultsReply>,
}

/// What a waiting lease request gets: tasks, or the reason there are none.
pub type LeaseReply = Result<Granted, DispatchError>;

/// One lease attempt: the tasks, or why not.
type Attempt = Result<Vec<LeasedTask>, DispatchError>;

enum Command {
    Wait(Waiter),
    Wake,
    /// A submit borrows waiters to lease for in its own transaction.
    Lend(u32, oneshot::Sender<Lent>),
    /// Borrowed waiters that got nothing, with the wake count when lent.
    Return(Vec<Waiter>, u64),
    /// Replies to the heartbeats recorded for idle waiters.
    Kept(Vec<(String, Option<HeartbeatReply>)>),
    /// A task the worker runs was cancelled.
    Cancel(String, String),
    /// A worker left or was lost.
    Forget(String),
    Shutdown,
}

/// Most cancels kept for workers that hold no long-poll right now (they
/// hear of them at their next lease request or heartbeat anyway).
const MAX_PENDING_CANCELS: usize = 10_000;

/// Each worker's latest load, to order the waiters. Shared rather than sent
/// to the task: a heartbeat then costs the dispatcher nothing (with a
/// thousand idle workers, hundreds a second would each wake it).
type Loads = Arc<std::sync::Mutex<HashMap<String, Load>>>;

fn locked(loads: &Loads) -> std::sync::MutexGuard<'_, HashMap<String, Load>> {
    // A panic while holding it cannot leave a map half-written.
    loads
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Waiter {
    worker_id: String,
    max: u32,
    deadline: Instant,
    reply: oneshot::Sender<LeaseReply>,
    /// Results to record with the first lease attempt.
    results: Vec<TaskResult>,
    /// What became of them, once recorded.
    reported: Option<ResultsReply>,
    /// Cancels to deliver.
    cancel: Vec<String>,
}

impl Waiter {
    fn answer(self, attempt: Attempt) {
        let (cancel, results) = (self.cancel, self.reported);
        let _ = self.reply.send(attempt.map(|tasks| Granted {
            tasks,
            drain: false,
            cancel,
            results,
        }));
    }

    /// Whether the request has something to say besides tasks.
    fn has_news(&self) -> bool {
        !self.cancel.is_empty()
    }
}

/// Commands waiting for the dispatcher task.
pub struct Inbox(
    mpsc::UnboundedReceiver<Command>,
    Loads,
    mpsc::WeakUnboundedSender<Command>,
);

/// Handle to the dispatcher task.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Command>,
    loads: Loads,
}

impl Dispatcher {
    /// A handle and the inbox its task will read (handles can exist before the task runs).
    pub fn channel() -> (Self, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let loads = Loads::default();
        (
            Self {
                tx: tx.clone(),
                loads: loads.clone(),
            },
            Inbox(rx, loads, tx.downgrade()),
        )
    }

    /// Start the dispatcher task on `inbox`.
    pub fn spawn(
        inbox: Inbox,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        lease_ttl_ms: i64,
        heartbeat: Duration,
        publish: ChangeSink,
    ) {
        let task = Task {
            store,
            clock,
            ttl: lease_ttl_ms,
            heartbeat,
            tx: inbox.2,
            publish,
            waiters: Vec::new(),
            loads: inbox.1,
            pending_cancels: HashMap::new(),
            closing: false,
            wakes: 0,
        };
        tokio::spawn(task.run(inbox.0));
    }

    /// Record `results` and lease up to `max` tasks for a worker, waiting up
    /// to `wait` for some (or, with `max` 0, for a cancel or a drain).
    pub async fn lease(
        &self,
        worker_id: String,
        results: Vec<TaskResult>,
        max: u32,
        wait: Duration,
    ) -> LeaseReply {
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            worker_id,
            max,
            deadline: Instant::now() + wait,
            reply,
            results,
            reported: None,
            cancel: Vec::new(),
        };
        self.tx
            .send(Command::Wait(waiter))
            .map_err(|_| DispatchError::ShuttingDown)?;
        answer.await.map_err(|_| DispatchError::ShuttingDown)?
    }

    /// Borrow the least loaded waiting workers that together ask for at
    /// least `want` tasks, for a submit to lease for them in its own
    /// transaction. Settle (or drop) what this returns.
    pub async fn lend(&self, want: u32) -> Lent {
        let (reply, answer) = oneshot::channel();
        if want == 0 || self.tx.send(Command::Lend(want, reply)).is_err() {
            return Lent::none(self.tx.clone());
        }
        answer.await.unwrap_or_else(|_| Lent::none(self.tx.clone()))
    }

    /// Work may be available: let the waiters look.
    pub fn wake(&self) {
        let _ = self.tx.send(Command::Wake);
    }

    /// Remember a worker's latest load, to order the waiters.
    pub fn note_load(&self, worker_id: &str, load: Load) {
        locked(&self.loads).insert(worker_id.to_owned(), load);
    }

    /// The server is shutting down: answer every waiting lease now (with no
    /// tasks) and every later one at once with 503, so workers come back to
    /// a restarted server instead of seeing their connection cut.
    pub fn shut_down(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// A task running on `worker_id` was cancelled: tell the worker now.
    pub fn cancel(&self, worker_id: &str, task_id: &str) {
        let _ = self
            .tx
            .send(Command::Cancel(worker_id.to_owned(), task_id.to_owned()));
    }

    /// A worker left or was lost: drop what is known of it.
    pub fn forget(&self, worker_id: &str) {
        locked(&self.loads).remove(worker_id);
        let _ = self.tx.send(Command::Forget(worker_id.to_owned()));
    }
}

/// Waiters borrowed by a submit: it leases for them ([`Lent::asks`]) in its
/// own transaction and then [`settle`](Lent::settle)s. Dropped unsettled,
/// they go back to the dispatcher untouched.
pub struct Lent {
    waiters: Vec<Waiter>,
    asks: Vec<HandOff>,
    /// The dispatcher's wake count when lent: a wake missed meanwhile makes
    /// the returned waiters look for work at once.
    wakes: u64,
    tx: mpsc::UnboundedSender<Command>,
}

impl Lent {
    fn none(tx: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            waiters: Vec::new(),
            asks: Vec::new(),
            wakes: 0,
            tx,
        }
    }

    /// The workers to lease for, in order, with how many tasks each takes.
    pub fn asks(&self) -> Vec<HandOff> {
        self.asks.clone()
    }

    /// Answer the waiters with what the submit leased for them
    /// (`handed[i]` for waiter `i`, as [`brigade_store::Submitted::handed`]);
    /// those that got nothing, or all when the submit failed (`None`), go
    /// back to waiting.
    pub fn settle(mut self, handed: Option<Vec<Option<Vec<LeasedTask>>>>) {
        let waiters = std::mem::take(&mut self.waiters);
        let Some(handed) = handed else {
            self.give_back(waiters);
            return;
        };
        let mut handed = handed.into_iter();
        let mut back = Vec::new();
        for w in waiters {
            match handed.next() {
                Some(Some(tasks)) if !tasks.is_empty() => w.answer(Ok(tasks)),
                Some(None) => {
                    let id = w.worker_id.clone();
                    w.answer(Err(DispatchError::UnknownWorker(id)));
                }
                _ => back.push(w),
            }
        }
        self.give_back(back);
    }

    fn give_back(&self, waiters: Vec<Waiter>) {
        if !waiters.is_empty() {
            let _ = self.tx.send(Command::Return(waiters, self.wakes));
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        self.give_back(waiters);
    }
}

struct Task {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl: i64,
    /// How often idle waiters' heartbeats are recorded.
    heartbeat: Duration,
    /// To the task itself (replies of the idle waiters' heartbeats); weak,
    /// so the task still ends when every handle is gone.
    tx: mpsc::WeakUnboundedSender<Command>,
    publish: ChangeSink,
    waiters: Vec<Waiter>,
    loads: Loads,
    /// Cancels for workers that had no request waiting.
    pending_cancels: HashMap<String, Vec<String>>,
    /// Shutting down: no more leases.
    closing: bool,
    /// Wake-ups seen so far.
    wakes: u64,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        // A safety net: look for work now and then even when nobody said so
        // (another server's submit, a clock that jumped).
        let mut tick = tokio::time::interval(Duration::from_millis(1000));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keepalive = tokio::time::interval(self.heartbeat);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    sort_by_load(&mut fresh, &self.loads);
                    let asks: Vec<u32> = fresh.iter().map(|w| w.max).collect();
                    self.lease_round(fresh, &asks).await;
                }
                // With nothing queued there is nothing to lease: one read
                // instead of a lease per waiting worker every second.
                _ = tick.tick() => {
                    woken = !self.waiters.is_empty()
                        && self.store.has_queued().await.unwrap_or(true);
                }
                _ = keepalive.tick() => self.keep_idle_alive(),
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
                w.answer(Err(DispatchError::ShuttingDown));
                false
            }
            Command::Wait(mut w) => {
                if let Some(cancel) = self.pending_cancels.remove(&w.worker_id) {
                    w.cancel = cancel;
                }
                fresh.push(w);
                false
            }
            Command::Cancel(worker, task) => {
                self.cancel(worker, task);
                false
            }
            Command::Forget(worker) => {
                self.pending_cancels.remove(&worker);
                false
            }
            Command::Wake => {
                self.wakes += 1;
                true
            }
            Command::Lend(want, reply) => {
                if let Some(tx) = self.tx.upgrade() {
                    let lent = self.lend(want, tx);
                    // A submit that went away drops it, which gives it back.
                    let _ = reply.send(lent);
                }
                false
            }
            Command::Return(waiters, wakes) => {
                let missed = wakes != self.wakes;
                for w in waiters {
                    if self.closing {
                        w.answer(Ok(Vec::new()));
                    } else if missed {
                        fresh.push(w);
                    } else if !w.reply.is_closed() {
                        self.waiters.push(w);
                    }
                }
                false
            }
            Command::Kept(replies) => {
                self.kept(replies);
                false
            }
            Command::Shutdown => {
                self.closing = true;
                for w in self.waiters.drain(..) {
                    w.answer(Ok(Vec::new()));
                }
                false
            }
        }
    }

    /// Take the least loaded waiters that together ask for `want` tasks.
    fn lend(&mut self, want: u32, tx: mpsc::UnboundedSender<Command>) -> Lent {
        let mut lent = Lent::none(tx);
        lent.wakes = self.wakes;
        if self.closing {
            return lent;
        }
        self.waiters.retain(|w| !w.reply.is_closed());
        sort_by_load(&mut self.waiters, &self.loads);
        let mut left = want;
        let mut i = 0;
        while i < self.waiters.len() && left > 0 {
            let w = &self.waiters[i];
            if w.max == 0 || !w.results.is_empty() {
                i += 1;
                continue;
            }
            let max = w.max.min(left);
            left -= max;
            lent.asks.push(HandOff {
                worker_id: w.worker_id.clone(),
                max,
            });
            // Keeps the others in load order.
            lent.waiters.push(self.waiters.remove(i));
        }
        lent
    }

    /// Tell the worker of a cancelled task: answer its waiting request now,
    /// or keep the cancel for its next one.
    fn cancel(&mut self, worker: String, task: String) {
        if let Some(i) = self
            .waiters
            .iter()
            .position(|w| w.worker_id == worker && !w.reply.is_closed())
        {
            let mut w = self.waiters.swap_remove(i);
            w.cancel.push(task);
            w.answer(Ok(Vec::new()));
            return;
        }
        if self.pending_cancels.len() >= MAX_PENDING_CANCELS {
            self.pending_cancels.clear();
        }
        self.pending_cancels.entry(worker).or_default().push(task);
    }

    /// Lease for every waiter in `round` at once (waiter `i` asks for
    /// `asks[i]`); answer those that got tasks, news or an error, keep the
    /// rest waiting.
    async fn lease_round(&mut self, mut round: Vec<Waiter>, asks: &[u32]) {
        if round.is_empty() {
            return;
        }
        // Polled in order, so the store sees the requests in load order.
        let (store, clock, ttl) = (&self.store, &self.clock, self.ttl);
        let publish = &self.publish;
        let replies = futures::future::join_all(
            round
                .iter_mut()
                .zip(asks)
                .map(|(w, &max)| try_lease(store, clock, ttl, publish, w, max)),
        )
        .await;
        for (w, reply) in round.into_iter().zip(replies) {
            match reply {
                Ok(tasks) if tasks.is_empty() && !w.has_news() => {
                    if !w.reply.is_closed() {
                        self.waiters.push(w);
                    }
                }
                reply => w.answer(reply),
            }
        }
    }

    async fn serve_waiters(&mut self) {
        let mut waiting = std::mem::take(&mut self.waiters);
        waiting.retain(|w| !w.reply.is_closed());
        if waiting.is_empty() {
            return;
        }
        sort_by_load(&mut waiting, &self.loads);
        // Spread a burst: with k workers waiting, each takes at most its
        // share now and comes back at once for more if it has room.
        let k = waiting.len() as u32;
        let asks: Vec<u32> = waiting
            .iter()
            .map(|w| {
                if w.max == 0 {
                    0
                } else {
                    w.max.div_ceil(k).max(1)
                }
            })
            .collect();
        self.lease_round(waiting, &asks).await;
    }

    /// Record a heartbeat for every waiter whose worker runs nothing (it asks
    /// for all its slots, or its capacity is not known here yet, as after a
    /// restart), in one batch written off this task.
    fn keep_idle_alive(&self) {
        let mut batch: Vec<(String, Heartbeat)> = {
            let loads = locked(&self.loads);
            self.waiters
                .iter()
                .filter(|w| !w.reply.is_closed())
                .filter_map(|w| {
                    let load = loads.get(&w.worker_id).copied();
                    let idle = w.max > 0 && load.is_none_or(|l| w.max >= l.capacity);
                    idle.then(|| {
                        let load = load.unwrap_or(Load {
                            capacity: w.max,
                            ..Load::default()
                        });
                        let hb = Heartbeat {
                            running: Vec::new(),
                            load,
                        };
                        (w.worker_id.clone(), hb)
                    })
                })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        batch.dedup_by(|a, b| a.0 == b.0);
        let Some(tx) = self.tx.upgrade() else { return };
        let (store, ttl) = (self.store.clone(), self.ttl);
        let now = self.clock.now_ms();
        tokio::spawn(async move {
            let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            match store.heartbeats(batch, now, ttl).await {
                Ok(replies) => {
                    let _ = tx.send(Command::Kept(ids.into_iter().zip(replies).collect()));
                }
                Err(e) => tracing::warn!(error = %e, "recording idle workers' heartbeats failed"),
            }
        });
    }

    /// Answer the waiters the store said are to drain or does not know.
    fn kept(&mut self, replies: Vec<(String, Option<HeartbeatReply>)>) {
        let told: HashMap<String, Option<HeartbeatReply>> = replies
            .into_iter()
            .filter(|(_, r)| r.as_ref().is_none_or(|r| r.drain))
            .collect();
        if told.is_empty() {
            return;
        }
        let (go, stay) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| told.contains_key(&w.worker_id));
        self.waiters = stay;
        for mut w in go {
            let reply = match told.get(&w.worker_id) {
                Some(Some(_)) => Ok(Granted {
                    tasks: Vec::new(),
                    drain: true,
                    cancel: std::mem::take(&mut w.cancel),
                    results: w.reported.take(),
                }),
                _ => Err(DispatchError::UnknownWorker(w.worker_id.clone())),
            };
            let _ = w.reply.send(reply);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].deadline <= now || self.waiters[i].reply.is_closed() {
                self.waiters.swap_remove(i).answer(Ok(Vec::new()));
            } else {
                i += 1;
            }
        }
    }
}

/// One lease attempt for a waiter, with the results it carries (once).
async fn try_lease(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    ttl: i64,
    publish: &ChangeSink,
    w: &mut Waiter,
    max: u32,
) -> Attempt {
    if w.reply.is_closed() {
        return Ok(Vec::new());
    }
    if max == 0 && w.results.is_empty() {
        // Nothing to lease nor record: it waits for a cancel, a drain or its deadline.
        return Ok(Vec::new());
    }
    let now = clock.now_ms();
    let results = std::mem::take(&mut w.results);
    let had_results = !results.is_empty();
    match store
        .report_and_lease(&w.worker_id, results, max, now, ttl)
        .await
    {
        Ok(Some((reply, tasks, changes))) => {
            if had_results {
                crate::metrics::results(&reply);
                w.reported = Some(reply);
            }
            publish(changes);
            Ok(tasks)
        }
        Ok(None) => Err(DispatchError::UnknownWorker(w.worker_id.clone())),
        Err(e) => Err(DispatchError::Store(e)),
    }
}

/// Least loaded first.
fn sort_by_load(waiters: &mut [Waiter], loads: &Loads) {
    if waiters.len() < 2 {
        return;
    }
    let loads = locked(loads);
    waiters.sort_by_key(|w| {
        let load = loads.get(&w.worker_id).copied().unwrap_or_default();
        // The request itself says how many slots are free: capacity - max are busy.
        let capacity = load.capacity.max(w.max);
        brigade_core::dispatch::load_key(capacity - w.max, capacity, load.cpu)
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
