//! The store against SQLite: every conformance case of `common::cases`, and
//! the tests only SQLite has (one server).

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

/// A fresh store on a file of its own, for the conformance cases.
async fn fresh() -> TestResult<Option<(TestFile, Arc<dyn Store>)>> {
    let f = TestFile::new();
    let store = f.open().await?;
    Ok(Some((f, store)))
}

common::conformance_tests!(fresh);

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
