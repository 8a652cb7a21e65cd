//! The store's shared behaviour against SQLite (one server; see `common`).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use brigade_store::Store;
use common::TestResult;

/// A database file removed when this goes away.
struct TestFile(PathBuf);

impl TestFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!(
            "brigade-store-test-{:016x}.db",
            rand::random::<u64>()
        )))
    }

    async fn open(&self) -> TestResult<Arc<dyn Store>> {
        Ok(brigade_store::open(&format!("sqlite://{}", self.0.display())).await?)
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip() -> TestResult {
    let f = TestFile::new();
    common::round_trip(f.open().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_attempt_rejected() -> TestResult {
    let f = TestFile::new();
    common::stale_attempt(f.open().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leasers_never_lease_a_task_twice() -> TestResult {
    let f = TestFile::new();
    common::concurrent_lease(vec![f.open().await?], 2000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reapers_requeue_once() -> TestResult {
    let f = TestFile::new();
    let store = f.open().await?;
    common::reap_once(store.clone(), store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_remote_notifications() -> TestResult {
    let f = TestFile::new();
    common::ensure(f.open().await?.remote().is_none(), "sqlite has no remote")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matching_heartbeat_cancel_retry() -> TestResult {
    let f = TestFile::new();
    common::matching_heartbeat_cancel_retry(f.open().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeat_batch() -> TestResult {
    let f = TestFile::new();
    common::heartbeat_batch(f.open().await?).await
}
