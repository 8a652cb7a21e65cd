//! The sandbox that runs untrusted programs for the `code` task kind.
//!
//! The set-up happens in a separate, single-threaded process: the brigade
//! binary re-executed as `brigade sandbox-exec` (see [`helper_main`]). The
//! async side ([`crate::executors::code`]) spawns it with:
//!
//! * **fd 3**: one end of a Unix stream socket pair. The async side writes the
//!   run's [`BoxConfig`] as a 4-byte little-endian length followed by that
//!   many bytes of JSON. Anything written after that (any byte), or the socket
//!   closing, asks the helper to kill the run at once (this is how output-limit
//!   kills and cancellation reach it: when the task's future is dropped the
//!   socket closes). When the run is over the helper writes one [`BoxResult`]
//!   as JSON to the socket and exits 0.
//! * **fd 0** `/dev/null`; **fd 1 / fd 2**: pipes that become the program's
//!   stdout and stderr (the helper itself never writes to them). The
//!   program's stdin comes from [`BoxConfig::stdin`], through a file.
//!
//! See `README.md` next to this file for what it does and does not protect
//! against.

mod helper;
mod seccomp;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use helper::{helper_main, sweep_stale_slots, try_lock_slot};

/// The first of the host uids given to sandboxed programs when the worker
/// runs as root: slot `n` runs as uid/gid `SANDBOX_UID_BASE + n`.
pub const SANDBOX_UID_BASE: u32 = 900_000;
/// How many runs may be sandboxed at once on one host (slots).
pub const SANDBOX_SLOTS: u32 = 256;
/// Where the helper keeps its per-slot lock files (root only).
pub const SLOT_LOCK_DIR: &str = "/run/brigade-sandbox";
/// The cgroup (v1) directory name under each controller's hierarchy.
pub const CGROUP_PARENT: &str = "brigade-sandbox";

/// Everything the helper needs to run one program in a fresh box.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BoxConfig {
    /// Program and arguments; `argv[0]` must be an absolute path inside the box.
    pub argv: Vec<String>,
    /// The program's whole environment.
    pub env: Vec<(String, String)>,
    /// Files to create in `/box` before the run: (name, contents).
    pub files: Vec<(String, String)>,
    /// Host files to copy into `/box` before the run: (host path, name).
    pub copy_in: Vec<(PathBuf, String)>,
    /// Plain names, or `*.ext` patterns, of files to copy out of `/box`
    /// after the run into `collect_to`.
    pub collect: Vec<String>,
    /// Host directory (trusted, created by the caller) for collected files.
    pub collect_to: Option<PathBuf>,
    /// The program's standard input.
    pub stdin: String,
    /// Host paths bound read-only into the box at the same path.
    pub ro_binds: Vec<PathBuf>,
    /// An empty host directory used as the mount point of the box's root
    /// (only inside the helper's private mount namespace).
    pub mount_point: PathBuf,
    /// CPU time limit of the whole process tree, in milliseconds.
    pub cpu_ms: u64,
    /// Wall-clock limit, in milliseconds.
    pub wall_ms: u64,
    /// Memory limit of the whole tree (cgroup), in KiB.
    pub memory_kb: u64,
    /// Also set `RLIMIT_DATA` to `memory_kb` (not for the JVM / V8).
    pub rlimit_data: bool,
    /// `RLIMIT_STACK`, in KiB (0: leave the default).
    pub stack_kb: u64,
    /// Processes and threads the program may have at once.
    pub processes: u64,
    /// Largest file the program may write, in KiB.
    pub fsize_kb: u64,
    /// Open file descriptors.
    pub nofile: u64,
    /// Size of each of the `/box` and `/tmp` tmpfs, in MiB.
    pub box_mb: u64,
    /// Make a new network namespace for this run instead of joining the
    /// slot's pooled one (only `brigade bench code` sets it, to compare).
    #[serde(default)]
    pub fresh_netns: bool,
}

/// One protection and whether it was in force for a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Protection {
    /// Short name, e.g. `pid namespace`.
    pub name: String,
    /// Whether it was applied.
    pub on: bool,
    /// Why not, or details.
    pub detail: String,
}

/// What the helper reports about a run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BoxResult {
    /// The sandbox itself failed (set-up, exec of a missing toolchain...).
    pub internal_error: Option<String>,
    /// Exit code, when the program exited.
    pub exit_code: Option<i32>,
    /// Signal number, when the program was killed by a signal.
    pub signal: Option<i32>,
    /// CPU time of the whole tree, in milliseconds.
    pub cpu_ms: u64,
    /// Wall-clock time, in milliseconds.
    pub wall_ms: u64,
    /// Peak memory of the tree, in KiB.
    pub memory_kb: u64,
    /// Killed for exceeding the CPU limit (or got SIGXCPU).
    pub cpu_exceeded: bool,
    /// Killed for exceeding the wall-clock limit.
    pub wall_exceeded: bool,
    /// The kernel's OOM killer fired in the run's memory cgroup.
    pub oom_killed: bool,
    /// Killed because the async side asked (output limit, cancellation).
    pub killed_on_request: bool,
    /// Files copied out into `collect_to`.
    pub collected: Vec<String>,
    /// Which protections were in force.
    pub protections: Vec<Protection>,
}

/// The languages whose toolchains exist on this host, in a fixed order
/// (`python, c, cpp, java, rust, javascript, bash`). Used as the worker
/// label `lang` (comma-joined).
pub fn detect_languages() -> Vec<String> {
    crate::executors::code::toolchains()
        .iter()
        .map(|t| t.language.to_string())
        .collect()
}

/// The version of each language's toolchain found on this host, in the
/// order of [`detect_languages`] (`("python", "3.11.7")`; empty when the
/// toolchain would not say). Workers send them as labels `lang.<language>`.
pub fn detect_language_versions() -> Vec<(String, String)> {
    crate::executors::code::toolchains()
        .iter()
        .map(|t| (t.language.to_string(), t.version.clone()))
        .collect()
}

/// A human-readable list of the protections in force on this host, found by
/// running `/bin/true` through the helper at `brigade_exe`. Blocking (a few
/// milliseconds); call it at start-up, not from async code on a hot path.
pub fn sandbox_check_report(brigade_exe: &Path) -> String {
    let mut out = String::from("code sandbox check:\n");
    let langs = detect_languages();
    out.push_str(&format!(
        "  languages: {}\n",
        if langs.is_empty() {
            "(none found)".to_string()
        } else {
            langs.join(",")
        }
    ));
    match crate::executors::code::probe_blocking(brigade_exe) {
        Ok(result) => {
            for p in &result.protections {
                out.push_str(&format!(
                    "  [{}] {}{}\n",
                    if p.on { "on " } else { "OFF" },
                    p.name,
                    if p.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.detail)
                    }
                ));
            }
            for (name, detail) in NOT_IMPLEMENTED {
                out.push_str(&format!("  [OFF] {name}: {detail}\n"));
            }
            match &result.internal_error {
                Some(e) => out.push_str(&format!("  probe run FAILED: {e}\n")),
                None if result.exit_code == Some(0) => out.push_str("  probe run: ok\n"),
                None => out.push_str(&format!(
                    "  probe run: unexpected status exit={:?} signal={:?}\n",
                    result.exit_code, result.signal
                )),
            }
        }
        Err(e) => out.push_str(&format!(
            "  the sandbox helper could not run: {e}\n  => the `code` kind will answer internal_error\n"
        )),
    }
    out
}

/// Protections this build does not apply at all, stated so nobody assumes them.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[(
    "landlock",
    "not applied (the pivoted read-only root and the unprivileged uid stand in for it)",
)];

pub use crate::executors::code::bench_code;
