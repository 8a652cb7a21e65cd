//! `brigade bench` keeps printing the keys that scripts/bench-vs-celery and
//! BENCHMARKS.md rely on (tiny sizes: this checks the wiring, not the speed).

use std::collections::HashMap;
use std::process::Command;

use brigade_testkit::bin;

/// Run `brigade bench ARGS` and parse its `key=value` lines.
fn bench(args: &[&str]) -> HashMap<String, String> {
    let out = Command::new(bin())
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("running brigade bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "brigade bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn throughput_prints_rate_memory_and_cpu_per_task() {
    let kv = bench(&["throughput", "--tasks", "200", "--batch", "100"]);
    for key in [
        "throughput_tasks_per_s",
        "submit_tasks_per_s",
        "server_rss_peak_mib",
        "server_cpu_s",
        "workers_cpu_s",
        "cpu_us_per_task",
    ] {
        let v = kv.get(key).unwrap_or_else(|| panic!("no {key} in {kv:?}"));
        assert!(v.parse::<f64>().is_ok(), "{key}={v} is not a number");
    }
    assert_eq!(kv["tasks"], "200");
}

#[test]
fn deep_queue_prints_lease_latency_empty_and_deep() {
    let kv = bench(&[
        "deep-queue",
        "--deep-tasks",
        "3000",
        "--batch",
        "1000",
        "--latency-runs",
        "5",
    ]);
    for key in [
        "lease_p50_ms_empty",
        "lease_p50_ms_deep",
        "lease_p99_ms_deep",
        "lease_p50_ratio_deep_empty",
        "submit_tasks_per_s_first_100k",
        "submit_tasks_per_s_last_100k",
    ] {
        let v = kv.get(key).unwrap_or_else(|| panic!("no {key} in {kv:?}"));
        assert!(v.parse::<f64>().is_ok(), "{key}={v} is not a number");
    }
}

#[test]
fn workflow_prints_chord_ratio_reduce_start_and_chain_rate() {
    let kv = bench(&[
        "workflow",
        "--workflow-tasks",
        "50",
        "--workflow-runs",
        "1",
        "--chain-links",
        "20",
    ]);
    for key in [
        "workflow_flat_wall_s",
        "workflow_chord_wall_s",
        "workflow_chord_ratio",
        "workflow_reduce_start_p50_ms",
        "workflow_chain_links_per_s",
    ] {
        let v = kv.get(key).unwrap_or_else(|| panic!("no {key} in {kv:?}"));
        assert!(v.parse::<f64>().is_ok(), "{key}={v} is not a number");
    }
    assert_eq!(kv["workflow_chord_maps"], "49");
    assert_eq!(kv["workflow_chain_links"], "20");
}
