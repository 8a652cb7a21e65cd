//! Scenario 6: the disk under the SQLite file fills up, then space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::{Load, SERVER_ARGS, submit_echo};
use brigade_testkit::Cluster;

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self(at.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system of `path` completely; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Whatever is left, byte by byte in small steps.
    for size in [4096usize, 512, 1] {
        while f.write(&chunk[..size]).map(|n| n > 0).unwrap_or(false) {
            written += size as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// Submits answer 503 problem+json saying the disk is full; nothing accepted
/// is lost or corrupted; work resumes when space returns, and the WAL can be
/// checkpointed again.
#[tokio::test]
async fn the_disk_fills_up_and_frees_again() {
    if brigade_testkit::pg::requested().is_some() {
        eprintln!("SKIP the_disk_fills_up_and_frees_again: SQLite only");
        return;
    }
    // The small disk is mounted outside the cluster's directory (its logs),
    // so it is unmounted after the processes are killed and before its
    // mount point is removed.
    let root = tempfile::tempdir().unwrap();
    let disk_dir = root.path().join("disk");
    let disk = match SmallDisk::mount(&disk_dir, "24m") {
        Ok(d) => d,
        Err(why) => {
            println!("SKIP the_disk_fills_up_and_frees_again: cannot mount a small disk: {why}");
            eprintln!("SKIP the_disk_fills_up_and_frees_again: cannot mount a small disk: {why}");
            return;
        }
    };
    let db = disk_dir.join("brigade.db");
    let c = Cluster::start_on(
        tempfile::tempdir().unwrap(),
        format!("sqlite://{}", db.display()),
        SERVER_ARGS,
    )
    .await;
    let mut l = Load::on(c, 3, 8).await;
    l.begin().await;
    l.c.until("some work done", || async {
        let acked = l.tracker.acked();
        let j = l.c.client.job(&acked[0].job_id).await.ok()?;
        (j.progress.succeeded > 100).then_some(())
    })
    .await;

    let filler = disk_dir.join("filler");
    let filled = fill(&filler);
    // Submit bigger jobs until the database has no room left.
    let http = l.c.http();
    let deadline = Instant::now() + brigade_testkit::DEADLINE;
    let (refusals_before, problem) = loop {
        assert!(
            Instant::now() < deadline,
            "submits kept succeeding on a full disk"
        );
        let before = l.tracker.acked_tasks();
        match submit_echo(&l.c.client, &l.tracker, 200, 0, 512).await {
            Ok(_) => continue,
            Err(e) if e.status().map(|s| s.as_u16()) == Some(503) => {
                // The same refusal as raw HTTP, to see its headers.
                let body = serde_json::json!({"tasks": [{"kind": "echo", "input": {"pad": "x".repeat(4096)}}]});
                let res = http
                    .post(format!("{}/v1/jobs", l.c.url))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                if res.status().as_u16() != 503 {
                    // That one fit after all: it was acknowledged, so track nothing
                    // (echo of a padded input without an "i") — try again.
                    continue;
                }
                let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
                assert_eq!(ctype, "application/problem+json");
                assert!(
                    res.headers().contains_key("retry-after"),
                    "503 says when to come back"
                );
                let problem: serde_json::Value = res.json().await.unwrap();
                break (before, problem);
            }
            Err(e) => panic!("a full disk must answer 503, got: {e}"),
        }
    };
    // Stay full longer than a lease TTL: workers keep leasing, heartbeating
    // and reporting against a full disk, and none of it is recorded.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("disk is full"), "a clear message: {detail}");
    // Reads still work while the disk is full.
    l.c.client.job(&l.tracker.acked()[0].job_id).await.unwrap();

    std::fs::remove_file(&filler).unwrap();
    let since = Instant::now();
    l.recovery(since).await;
    let full_log = l.c.read_log("server");
    let refusals = full_log.matches("disk is full").count();
    eprintln!(
        "disk_full: server log while full:\n{}",
        full_log
            .lines()
            .filter(|l| l.contains("full") || l.contains("ERROR"))
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let report = l
        .finish(
            "disk_full",
            &format!(
                "filled_mb={} acked_before_full={refusals_before} disk_full_errors={refusals}",
                filled / (1 << 20)
            ),
        )
        .await;
    // The workers were alive all along: once space returned they got their
    // heartbeats and results in before any lease was judged expired, so no
    // task ran a second time.
    assert_eq!(
        report.redone(),
        0,
        "tasks of live workers were requeued after the outage"
    );
    // The file is sound and its WAL can be checkpointed now that there is room.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0, "the WAL checkpoints once space is back");
    }
    let wal = std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    eprintln!("disk_full: WAL after checkpoint: {wal} bytes");
    drop(l);
    drop(disk);
    drop(root);
}
