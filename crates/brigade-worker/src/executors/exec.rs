//! `exec`: run a command (only on workers started with `--allow-exec`); its
//! stderr lines also go to the task's log.

use std::collections::BTreeMap;
use std::process::Stdio;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::{Handler, TaskContext, TaskFailure, TaskLog, TaskOutcome};

/// Bytes of stdout and of stderr kept; the rest is cut.
const OUTPUT_CAP: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecInput {
    argv: Vec<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// Runs `argv` with `stdin` and `env`, returning exit code, stdout and stderr.
/// The child runs in its own process group, killed whole when the attempt ends
/// early (timeout, cancel, worker shutdown).
pub struct Exec;

struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Read a pipe to its end, keeping at most [`OUTPUT_CAP`] bytes; with a
/// `log`, each complete line is also written to it as it arrives.
async fn read_capped(mut r: impl AsyncRead + Unpin, log: Option<TaskLog>) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut truncated = false;
    // The start of the line not yet logged.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(buf.len());
                if n > room {
                    truncated = true;
                }
                buf.extend_from_slice(&chunk[..n.min(room)]);
                if let Some(log) = &log {
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        log.line(String::from_utf8_lossy(&line[..nl]));
                    }
                    // A line without end is logged in pieces rather than held forever.
                    if pending.len() > 64 * 1024 {
                        log.line(String::from_utf8_lossy(&pending));
                        pending.clear();
                    }
                }
            }
        }
    }
    if let Some(log) = &log
        && !pending.is_empty()
    {
        log.line(String::from_utf8_lossy(&pending));
    }
    (String::from_utf8_lossy(&buf).into_owned(), truncated)
}

#[async_trait]
impl Handler for Exec {
    async fn run(&self, ctx: TaskContext) -> TaskOutcome {
        let input: ExecInput = serde_json::from_value(ctx.input.clone())
            .map_err(|e| TaskFailure::bad_input(format!("input of exec: {e}")))?;
        let Some((program, args)) = input.argv.split_first() else {
            return Err(TaskFailure::bad_input("argv: needs at least the program"));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(&input.env)
            .stdin(if input.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| TaskFailure::permanent(format!("cannot start {program}: {e}")))?;
        let group = GroupGuard(child.id().map(|p| p as i32));
        if let (Some(text), Some(mut stdin)) = (input.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        let out = child
            .stdout
            .take()
            .map(|o| tokio::spawn(read_capped(o, None)));
        // stderr lines also go to the task's log, as they come.
        let err = child
            .stderr
            .take()
            .map(|e| tokio::spawn(read_capped(e, Some(ctx.log.clone()))));
        let status = child
            .wait()
            .await
            .map_err(|e| TaskFailure::retryable(format!("waiting for {program}: {e}")))?;
        // Whatever it left behind in its group goes too, so the pipes close.
        drop(group);
        let (stdout, out_cut) = match out {
            Some(h) => h.await.unwrap_or_default(),
            None => Default::default(),
        };
        let (stderr, err_cut) = match err {
            Some(h) => h.await.unwrap_or_default(),
            None => Default::default(),
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(json!({
            "exit_code": status.code(),
            "signal": status.signal(),
            "stdout": stdout,
            "stderr": stderr,
            "truncated": out_cut || err_cut,
        }))
    }
}
