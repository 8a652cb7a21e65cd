//! Prometheus metrics: counters on the hot path, gauges read from the store at scrape time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use brigade_api::{Event, WorkerState};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names, in one place.
/// Count the results of a batch, accepted and rejected.
pub fn results(reply: &brigade_api::ResultsReply) {
    ::metrics::counter!(names::RESULTS, "status" => "accepted")
        .increment(reply.accepted.len() as u64);
    ::metrics::counter!(names::RESULTS, "status" => "rejected")
        .increment(reply.rejected.len() as u64);
}

pub mod names {
    /// Tasks accepted by submits.
    pub const TASKS_SUBMITTED: &str = "brigade_tasks_submitted_total";
    /// Tasks handed to workers.
    pub const TASKS_LEASED: &str = "brigade_tasks_leased_total";
    /// Of those, tasks leased to a waiting worker by the submit that created them.
    pub const TASKS_HANDED_OFF: &str = "brigade_tasks_handed_off_total";
    /// Results received, by outcome and whether accepted.
    pub const RESULTS: &str = "brigade_results_total";
    /// Live events published, by type.
    pub const EVENTS: &str = "brigade_events_total";
    /// Tasks by state and queue (scrape time).
    pub const TASKS: &str = "brigade_tasks";
    /// Workers by state (scrape time).
    pub const WORKERS: &str = "brigade_workers";
    /// Load of each active worker (scrape time).
    pub const WORKER_LOAD: &str = "brigade_worker_load";
    /// HTTP request latency by route.
    pub const HTTP_SECONDS: &str = "brigade_http_request_duration_seconds";
    /// Time from a task being ready (created, due or requeued) to its lease, by kind.
    pub const TASK_QUEUED_SECONDS: &str = "brigade_task_queued_seconds";
    /// Time from a task's lease to its accepted result, by kind.
    pub const TASK_RUN_SECONDS: &str = "brigade_task_run_seconds";
    /// Rows deleted by retention, by table (`jobs`, `tasks`, `attempts`, `logs`).
    pub const PRUNED: &str = "brigade_pruned_rows_total";
    /// Callback delivery attempts, by outcome (`ok`: a 2xx came back; `failed`).
    pub const CALLBACK_DELIVERIES: &str = "brigade_callback_deliveries_total";
    /// Use of each limited key (scrape time), by `limit` (the key or pattern
    /// set), `key` (the concrete key) and `use`: `running`, `started` (in the
    /// current window) or `waiting` (queued tasks it holds back).
    pub const LIMIT_USE: &str = "brigade_limit_use";
}

/// Count the rows a pruning pass deleted.
pub fn pruned(p: &brigade_store::Pruned) {
    for (table, n) in [
        ("jobs", p.jobs),
        ("tasks", p.tasks),
        ("attempts", p.attempts),
        ("logs", p.logs),
    ] {
        ::metrics::counter!(names::PRUNED, "table" => table).increment(n);
    }
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's metrics recorder.
#[derive(Clone, Default)]
pub struct Metrics;

impl Metrics {
    /// Install the Prometheus recorder (once per process).
    pub fn install() -> Self {
        HANDLE.get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .ok()?
                // Gauges are set at every scrape for what exists now; one no
                // longer set (a worker that left or died) is dropped after a
                // while, so a cluster with worker churn does not keep a series
                // per worker it ever saw.
                .idle_timeout(
                    metrics_util::MetricKindMask::GAUGE,
                    Some(std::time::Duration::from_secs(300)),
                );
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histogram samples pile up in the recorder until they are folded
            // into their buckets, which a scrape does — and nothing else:
            // with nobody scraping, every request and every task left a few
            // bytes behind for good (the soak's RSS rose 0.65 MiB a minute).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            Some(handle)
        });
        Metrics
    }

    /// Count an event.
    pub fn event(&self, e: &Event) {
        counter!(names::EVENTS, "type" => e.kind.clone()).increment(1);
    }

    /// Record a task latency sample in its histogram.
    pub fn timing(&self, t: &brigade_store::Timing) {
        let name = match t.phase {
            brigade_store::Phase::Queued => names::TASK_QUEUED_SECONDS,
            brigade_store::Phase::Run => names::TASK_RUN_SECONDS,
        };
        histogram!(name, "kind" => t.kind.clone()).record(t.seconds);
    }

    /// Render the text exposition, refreshing the gauges from the store.
    pub async fn render(&self, store: &dyn brigade_store::Store, now: i64) -> String {
        if let Ok(limits) = store.limits(now).await {
            for l in limits {
                for k in l.keys {
                    for (u, n) in [
                        ("running", k.running),
                        ("started", k.started),
                        ("waiting", k.waiting),
                    ] {
                        gauge!(names::LIMIT_USE, "limit" => l.key.clone(), "key" => k.key.clone(), "use" => u)
                            .set(n as f64);
                    }
                }
            }
        }
        if let Ok(queues) = store.queues().await {
            for q in queues {
                for (st, n) in [
                    ("queued", q.queued),
                    ("scheduled", q.scheduled),
                    ("running", q.running),
                ] {
                    gauge!(names::TASKS, "queue" => q.name.clone(), "state" => st).set(n as f64);
                }
            }
        }
        if let Ok(workers) = store.workers().await {
            for st in [
                WorkerState::Active,
                WorkerState::Draining,
                WorkerState::Lost,
                WorkerState::Left,
            ] {
                let n = workers.iter().filter(|w| w.state == st).count();
                gauge!(names::WORKERS, "state" => st.as_str()).set(n as f64);
            }
            for w in workers
                .iter()
                .filter(|w| matches!(w.state, WorkerState::Active | WorkerState::Draining))
            {
                let ratio = if w.capacity == 0 {
                    0.0
                } else {
                    f64::from(w.running) / f64::from(w.capacity)
                };
                gauge!(names::WORKER_LOAD, "worker" => w.name.clone(), "id" => w.id.clone(), "kind" => "slots").set(ratio);
                gauge!(names::WORKER_LOAD, "worker" => w.name.clone(), "id" => w.id.clone(), "kind" => "cpu").set(w.load.cpu);
                gauge!(names::WORKER_LOAD, "worker" => w.name.clone(), "id" => w.id.clone(), "kind" => "memory")
                    .set(w.load.memory);
            }
        }
        HANDLE
            .get()
            .and_then(|h| h.as_ref())
            .map(|h| h.render())
            .unwrap_or_default()
    }
}

/// Middleware: time each request by its route template.
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    if let Some(route) = route {
        let status = res.status().as_u16().to_string();
        histogram!(names::HTTP_SECONDS, "method" => method, "route" => route, "status" => status)
            .record(start.elapsed().as_secs_f64());
    }
    res
}
