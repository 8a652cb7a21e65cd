//! Micro-benchmarks of the pure rules on the hot path: validating a large
//! submission, retry backoff, label matching and the waiters' load key.
//!
//! `cargo bench -p brigade-core` (a fast pass: `cargo bench -p brigade-core --bench core -- --quick`).

use std::collections::BTreeMap;
use std::hint::black_box;

use brigade_api::{Backoff, JobSubmit, Progress, TaskSpec};
use brigade_core::dispatch::{load_key, requires_match};
use brigade_core::lifecycle::{backoff_delay_ms, on_failure};
use brigade_core::validate::validate_job;
use brigade_core::{Limits, job_state};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// The largest submission the API takes: 10 000 tasks.
const TASKS: usize = 10_000;

fn noop_job() -> JobSubmit {
    JobSubmit::new(vec![TaskSpec::new("noop", serde_json::Value::Null); TASKS]).named("bench")
}

/// Every optional field set, as a demanding client would send.
fn full_job() -> JobSubmit {
    let mut spec = TaskSpec::new("sleep", serde_json::json!({"ms": 500, "tag": "fruit"}));
    spec.name = Some("apple".into());
    spec.queue = Some("kitchen".into());
    spec.priority = Some(5);
    spec.max_attempts = Some(3);
    spec.timeout_ms = Some(60_000);
    spec.backoff = Some(Backoff::default());
    spec.requires = BTreeMap::from([
        ("lang".into(), "python".into()),
        ("zone".into(), "eu".into()),
    ]);
    JobSubmit {
        name: Some("fruit-salad".into()),
        queue: Some("default".into()),
        labels: BTreeMap::from([("team".into(), "kitchen".into())]),
        tasks: vec![spec; TASKS],
        keep_ms: None,
        unique: None,
        callback: None,
    }
}

fn validation(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("validate_job");
    g.throughput(Throughput::Elements(TASKS as u64));
    for (name, job) in [("noop_10000", noop_job()), ("full_10000", full_job())] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || job.clone(),
                |job| black_box(validate_job(job, &limits)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn retries(c: &mut Criterion) {
    let backoff = Backoff::default();
    c.bench_function("backoff_delay_ms", |b| {
        b.iter(|| backoff_delay_ms(black_box(&backoff), black_box(4), black_box(0.37)))
    });
    c.bench_function("on_failure", |b| {
        b.iter(|| {
            on_failure(
                black_box(2),
                black_box(3),
                black_box(true),
                black_box(false),
                &backoff,
                black_box(1_700_000_000_000),
                black_box(0.5),
            )
        })
    });
    let progress = Progress {
        total: 10_000,
        waiting: 0,
        queued: 10,
        scheduled: 0,
        running: 64,
        succeeded: 9_926,
        failed: 0,
        cancelled: 0,
    };
    c.bench_function("job_state", |b| {
        b.iter(|| job_state(black_box(&progress), black_box(false)))
    });
}

fn matching(c: &mut Criterion) {
    let labels: BTreeMap<String, String> = BTreeMap::from([
        (
            "lang".into(),
            "python,c,cpp,java,rust,javascript,bash".into(),
        ),
        ("zone".into(), "eu".into()),
        ("gpu".into(), "a100".into()),
    ]);
    let hit = BTreeMap::from([("lang".into(), "bash".into()), ("zone".into(), "eu".into())]);
    let miss = BTreeMap::from([("lang".into(), "haskell".into())]);
    let none = BTreeMap::new();
    let mut g = c.benchmark_group("requires_match");
    g.bench_function("none", |b| {
        b.iter(|| requires_match(black_box(&none), &labels))
    });
    g.bench_function("two_hit", |b| {
        b.iter(|| requires_match(black_box(&hit), &labels))
    });
    g.bench_function("one_miss", |b| {
        b.iter(|| requires_match(black_box(&miss), &labels))
    });
    g.finish();
    c.bench_function("load_key", |b| {
        b.iter(|| load_key(black_box(3), black_box(8), black_box(0.43)))
    });
}

criterion_group!(benches, validation, retries, matching);
criterion_main!(benches);
