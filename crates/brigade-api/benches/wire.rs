//! Micro-benchmarks of the wire types on the hot path: a lease response of 64
//! tasks, a batch of 64 results, and a 10 000-task submission, each encoded
//! and decoded with serde_json.
//!
//! `cargo bench -p brigade-api` (a fast pass: `cargo bench -p brigade-api --bench wire -- --quick`).

use std::hint::black_box;

use brigade_api::{
    JobSubmit, LeaseResponse, LeasedTask, Outcome, ResultsRequest, TaskResult, TaskSpec,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Tasks a busy worker leases (and reports) at once.
const BATCH: usize = 64;

fn id(n: usize) -> String {
    format!("019a{n:028x}")
}

fn lease_response() -> LeaseResponse {
    LeaseResponse {
        tasks: (0..BATCH)
            .map(|i| LeasedTask {
                id: id(i),
                job_id: id(1 << 20),
                kind: "noop".into(),
                input: serde_json::Value::Null,
                attempt: 1,
                timeout_ms: 60_000,
                lease_expires_at: time::OffsetDateTime::UNIX_EPOCH,
                parents: None,
                parents_truncated: false,
                traceparent: None,
            })
            .collect(),
        drain: false,
        cancel: Vec::new(),
        results: None,
    }
}

fn results_request() -> ResultsRequest {
    ResultsRequest {
        results: (0..BATCH)
            .map(|i| TaskResult {
                task_id: id(i),
                attempt: 1,
                outcome: Outcome::Succeeded,
                output: serde_json::Value::Null,
                error: None,
                retryable: None,
                retry_in_ms: None,
                duration_ms: Some(0),
                spawn: Vec::new(),
            })
            .collect(),
    }
}

fn submission() -> JobSubmit {
    JobSubmit::new(vec![TaskSpec::new("noop", serde_json::Value::Null); 10_000]).named("bench")
}

/// Encode and decode `value` as JSON, counting `elements` per iteration.
fn round_trip<T>(c: &mut Criterion, name: &str, value: &T, elements: u64)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let Ok(bytes) = serde_json::to_vec(value) else {
        panic!("{name} does not serialize");
    };
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(elements));
    g.bench_function("serialize", |b| {
        b.iter(|| serde_json::to_vec(black_box(value)).map(|v| v.len()))
    });
    g.bench_function("deserialize", |b| {
        b.iter(|| serde_json::from_slice::<T>(black_box(&bytes)).is_ok())
    });
    g.finish();
}

fn wire(c: &mut Criterion) {
    round_trip(c, "lease_response_64", &lease_response(), BATCH as u64);
    round_trip(c, "results_request_64", &results_request(), BATCH as u64);
    round_trip(c, "job_submit_10000", &submission(), 10_000);
}

criterion_group!(benches, wire);
criterion_main!(benches);
