//! `brigade sandbox-exec`: the single-threaded helper that builds the box and
//! runs one program in it. Process tree:
//!
//! ```text
//! helper (host PID ns, root; new mount/net/ipc/uts ns; polls limits)
//!  └─ init (PID 1 of a new PID ns; own mount ns; pivoted into the box)
//!      └─ program (PID 2; rlimits, unprivileged uid, no_new_privs, seccomp)
//! ```
//!
//! When the program exits, init exits at once, and the kernel kills every
//! other process of the PID namespace (daemonized children included).

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    BoxConfig, BoxResult, CGROUP_PARENT, Protection, SANDBOX_SLOTS, SANDBOX_UID_BASE, SLOT_LOCK_DIR,
};

type Res<T> = Result<T, String>;

/// The fd on which the helper gets its config and answers (see the module docs).
const CONTROL_FD: RawFd = 3;
/// Largest config accepted.
const MAX_CONFIG: usize = 64 << 20;
/// Largest single file collected out of the box.
const MAX_COLLECT_FILE: u64 = 256 << 20;

/// Entry point of `brigade sandbox-exec`. Reads a [`BoxConfig`] from fd 3,
/// runs it, writes a [`BoxResult`] to fd 3 and returns the process exit code
/// (0 when the result was delivered, whatever the program did; 2 when fd 3 is
/// unusable). Must be called before any other thread exists.
pub fn helper_main() -> i32 {
    // SAFETY: fd 3 is handed to us by the parent (the async side); we take
    // ownership of it for the life of the process.
    let valid = unsafe { libc::fcntl(CONTROL_FD, libc::F_GETFD) } >= 0;
    if !valid {
        eprintln!("brigade sandbox-exec: fd 3 (the control socket) is not open; internal use only");
        return 2;
    }
    // SAFETY: see above; nothing else owns fd 3.
    let mut control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let (result, cleanup) = match read_config(&mut control) {
        Ok(cfg) => run(&cfg, &control),
        Err(e) => (
            BoxResult {
                internal_error: Some(format!("reading the config: {e}")),
                ..BoxResult::default()
            },
            None,
        ),
    };
    // Unread kill requests would turn our close into a connection reset on
    // the other side: drain them first.
    if control.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 256];
        while matches!(control.read(&mut sink), Ok(n) if n > 0) {}
        let _ = control.set_nonblocking(false);
    }
    let Ok(json) = serde_json::to_vec(&result) else {
        return 2;
    };
    if control.write_all(&json).is_err() {
        return 2;
    }
    // Wait for the other side to close, so a late kill request cannot reset
    // the connection before our answer is read.
    let _ = control.shutdown(std::net::Shutdown::Write);
    // The box's cgroups go only now, after the answer: removing them (a
    // memory cgroup in particular) waits for the kernel to finish with the
    // dead processes, and need not hold up the verdict. The slot stays
    // locked until they are gone, so no other run or sweep touches them.
    drop(cleanup);
    let _ = control.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 256];
    while matches!(control.read(&mut sink), Ok(n) if n > 0) {}
    0
}

fn read_config(control: &mut UnixStream) -> Res<BoxConfig> {
    let mut len = [0u8; 4];
    control.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_CONFIG {
        return Err(format!("config too large ({len} bytes)"));
    }
    let mut buf = vec![0u8; len];
    control.read_exact(&mut buf).map_err(|e| e.to_string())?;
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

fn cstr(s: impl AsRef<OsStr>) -> Res<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| "NUL byte in a string".to_string())
}

fn check(ret: libc::c_int, what: &str) -> Res<()> {
    if ret < 0 {
        Err(format!("{what}: {}", errno()))
    } else {
        Ok(())
    }
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Res<()> {
    let src_c = src.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype_c = fstype.map(cstr).transpose()?;
    let data_c = data.map(cstr).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    let ret = unsafe {
        libc::mount(
            src_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    };
    check(ret, &format!("mount {}", target.display()))
}

/// Per-run state the helper cleans up whatever happens.
struct Cleanup {
    cgroups: Vec<PathBuf>,
    _slot_lock: Option<File>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cg in &self.cgroups {
            remove_cgroup(cg);
        }
    }
}

fn remove_cgroup(cg: &Path) {
    for _ in 0..200 {
        match fs::remove_dir(cg) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                // Processes still inside (zombies being reaped): kill and retry.
                if let Ok(procs) = fs::read_to_string(cg.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: plain kill(2).
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn protection(list: &mut Vec<Protection>, name: &str, on: bool, detail: impl Into<String>) {
    list.push(Protection {
        name: name.to_string(),
        on,
        detail: detail.into(),
    });
}

/// Take a free slot: an exclusive `flock` on `SLOT_LOCK_DIR/slot-N`, held
/// until this process (and its children) end. Works across worker processes.
fn acquire_slot() -> Res<(u32, File)> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(SLOT_LOCK_DIR)
        .map_err(|e| format!("creating {SLOT_LOCK_DIR}: {e}"))?;
    // Lowest free first: the slots in use stay few, and so do the pooled
    // network namespaces they keep.
    for n in 0..SANDBOX_SLOTS {
        if let Some(file) = try_lock_slot(n) {
            return Ok((n, file));
        }
    }
    Err("all sandbox slots are busy".into())
}

/// Create the run's cgroups (v1: memory, pids, cpuacct) for `slot`.
fn setup_cgroups(
    slot: u32,
    cfg: &BoxConfig,
    prot: &mut Vec<Protection>,
    cleanup: &mut Cleanup,
) -> Cgroups {
    let mut cgs = Cgroups::default();
    for ctrl in ["memory", "pids", "cpuacct"] {
        let root = Path::new("/sys/fs/cgroup").join(ctrl);
        let dir = root.join(CGROUP_PARENT).join(format!("slot-{slot}"));
        let made = (|| -> Res<()> {
            if !root.join("cgroup.procs").exists() {
                return Err(format!(
                    "no cgroup v1 `{ctrl}` hierarchy at {}",
                    root.display()
                ));
            }
            // A dead helper may have left this slot's cgroup behind.
            remove_cgroup(&dir);
            fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            cleanup.cgroups.push(dir.clone());
            let write = |file: &str, value: String| -> Res<()> {
                fs::write(dir.join(file), value).map_err(|e| format!("{ctrl} {file}: {e}"))
            };
            match ctrl {
                "memory" => {
                    let bytes = cfg.memory_kb.saturating_mul(1024);
                    write("memory.limit_in_bytes", bytes.to_string())?;
                    // Swap too, where the kernel accounts it (no error if not).
                    let _ = write("memory.memsw.limit_in_bytes", bytes.to_string());
                    let _ = write("memory.swappiness", "0".into());
                }
                // +1: the box's init process.
                "pids" => write("pids.max", (cfg.processes + 1).to_string())?,
                _ => {}
            }
            Ok(())
        })();
        let name = format!("cgroup {ctrl}");
        match made {
            Ok(()) => {
                let detail = match ctrl {
                    "memory" => format!("limit {} KiB for the whole tree", cfg.memory_kb),
                    "pids" => format!("at most {} tasks", cfg.processes),
                    _ => "CPU time of the whole tree, polled every 10 ms".into(),
                };
                protection(prot, &name, true, detail);
                match ctrl {
                    "memory" => cgs.memory = Some(dir),
                    "pids" => cgs.pids = Some(dir),
                    _ => cgs.cpuacct = Some(dir),
                }
            }
            Err(e) => protection(prot, &name, false, e),
        }
    }
    cgs
}

#[derive(Default)]
struct Cgroups {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
}

impl Cgroups {
    fn attach(&self, pid: i32) -> Res<()> {
        for dir in [&self.memory, &self.pids, &self.cpuacct]
            .into_iter()
            .flatten()
        {
            fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(|e| format!("joining {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    fn cpu_ns(&self) -> Option<u64> {
        let dir = self.cpuacct.as_ref()?;
        fs::read_to_string(dir.join("cpuacct.usage"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn mem_peak_bytes(&self) -> Option<u64> {
        let dir = self.memory.as_ref()?;
        fs::read_to_string(dir.join("memory.max_usage_in_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn oom_killed(&self) -> bool {
        let Some(dir) = self.memory.as_ref() else {
            return false;
        };
        let Ok(text) = fs::read_to_string(dir.join("memory.oom_control")) else {
            return false;
        };
        text.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    }
}

/// What init reports to the helper about the program.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InitReport {
    /// 0: exited, 1: killed by signal, 2: exec failed (`value` = errno),
    /// 3: set-up failed in init (`value` = step number).
    kind: i32,
    value: i32,
    utime_us: i64,
    stime_us: i64,
    maxrss_kb: i64,
    errno: i32,
    _pad: i32,
}

/// Run the box; the cleanup of a run that went well is handed back, to be
/// done after the answer (a failed run cleans up at once).
fn run(cfg: &BoxConfig, control: &UnixStream) -> (BoxResult, Option<Cleanup>) {
    let mut result = BoxResult::default();
    let mut later = None;
    if let Err(e) = run_inner(cfg, control, &mut result, &mut later) {
        result.internal_error = Some(e);
    }
    (result, later)
}

fn run_inner(
    cfg: &BoxConfig,
    control: &UnixStream,
    result: &mut BoxResult,
    later: &mut Option<Cleanup>,
) -> Res<()> {
    let prot = &mut result.protections;
    if cfg.argv.is_empty() {
        return Err("empty argv".into());
    }
    // 1. Die with the worker.
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) },
        "PR_SET_PDEATHSIG",
    )?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        return Err("the worker exited before the sandbox started".into());
    }
    // 2. Own session and process group (the async side can kill the group).
    // SAFETY: setsid has no preconditions.
    if unsafe { libc::setsid() } < 0 {
        // Already a group leader: harmless.
        protection(prot, "new session", false, errno());
    } else {
        protection(prot, "new session", true, "");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cleanup = Cleanup {
        cgroups: Vec::new(),
        _slot_lock: None,
    };
    let (uid, cgroups, slot) = if root {
        let (slot, lock) = acquire_slot()?;
        cleanup._slot_lock = Some(lock);
        let uid = SANDBOX_UID_BASE + slot;
        protection(
            prot,
            "unprivileged uid",
            true,
            format!("uid/gid {uid} (one per concurrent run), no supplementary groups"),
        );
        let cgs = setup_cgroups(slot, cfg, prot, &mut cleanup);
        (Some(uid), cgs, Some(slot))
    } else {
        protection(
            prot,
            "unprivileged uid",
            false,
            "the worker is not root: the program runs as the worker's own uid (mapped in a user namespace)",
        );
        for c in ["memory", "pids", "cpuacct"] {
            protection(prot, &format!("cgroup {c}"), false, "needs root");
        }
        (None, Cgroups::default(), None)
    };

    // 3. Namespaces. NEWPID applies to the children forked from here on.
    // SAFETY: getuid/getgid have no preconditions.
    let (outer_uid, outer_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if !root {
        flags |= libc::CLONE_NEWUSER;
    }
    // The slot's own empty network namespace, made once and joined after:
    // creating (and, later, destroying) one takes a global kernel lock and
    // was a third of a box's fixed cost. Nothing in it outlives a run: its
    // only interface is a loopback that is down, which the unprivileged
    // program cannot change, and every socket dies with the box's processes.
    let net_detail = match slot.filter(|_| !cfg.fresh_netns).map(pooled_netns) {
        Some(Ok(fd)) => {
            // SAFETY: setns on an nsfs fd we opened.
            check(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                "setns",
            )?;
            "no interfaces but a down loopback: no network at all (the slot's pooled namespace)"
        }
        other => {
            if let Some(Err(e)) = other {
                protection(prot, "network namespace pool", false, e);
            }
            flags |= libc::CLONE_NEWNET;
            "no interfaces but a down loopback: no network at all"
        }
    };
    // SAFETY: unshare in a single-threaded process.
    check(unsafe { libc::unshare(flags) }, "unshare")?;
    if !root {
        fs::write("/proc/self/setgroups", "deny").map_err(|e| format!("setgroups: {e}"))?;
        fs::write("/proc/self/uid_map", format!("0 {outer_uid} 1"))
            .map_err(|e| format!("uid_map: {e}"))?;
        fs::write("/proc/self/gid_map", format!("0 {outer_gid} 1"))
            .map_err(|e| format!("gid_map: {e}"))?;
        protection(prot, "user namespace", true, "one-entry uid/gid map");
    }
    for (name, detail) in [
        ("network namespace", net_detail),
        (
            "pid namespace",
            "the program sees only its own tree; all of it dies with it",
        ),
        ("mount namespace", ""),
        ("ipc namespace", ""),
        ("uts namespace", "hostname `box`"),
    ] {
        protection(prot, name, true, detail);
    }
    let _ = nix::unistd::sethostname("box");

    // 4. Build the box's root in this (private) mount namespace.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let newroot = cfg.mount_point.clone();
    build_root(cfg, &newroot, uid)?;
    protection(
        prot,
        "read-only root",
        true,
        format!(
            "pivot_root into a tmpfs; read-only nosuid binds: {}; writable: /box, /tmp ({} MiB tmpfs each)",
            cfg.ro_binds
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            cfg.box_mb
        ),
    );
    protection(
        prot,
        "clean environment",
        true,
        format!(
            "only {}",
            cfg.env
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let rl = format!(
        "CPU {} s, FSIZE {} KiB, NPROC {}, NOFILE {}, CORE 0{}{}",
        cfg.cpu_ms.div_ceil(1000) + 1,
        cfg.fsize_kb,
        cfg.processes,
        cfg.nofile,
        if cfg.rlimit_data {
            format!(
                ", DATA {} KiB",
                if cgroups.memory.is_some() {
                    cfg.memory_kb * 4
                } else {
                    cfg.memory_kb
                }
            )
        } else {
            ", no DATA/AS limit (JVM/V8: heap flags + cgroup)".into()
        },
        if cfg.stack_kb > 0 {
            format!(", STACK {} KiB", cfg.stack_kb)
        } else {
            String::new()
        }
    );
    protection(prot, "rlimits", true, rl);
    protection(prot, "no_new_privs", true, "");
    let seccomp_note = super::seccomp::describe();
    protection(prot, "seccomp", true, seccomp_note);

    // Everything the program's process needs, prepared before forking.
    let prog = Prepared::new(cfg, uid, cgroups.memory.is_some())?;

    // 5. Fork init (PID 1 of the new PID namespace).
    let (report_r, report_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let started = Instant::now();
    // SAFETY: the helper is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", errno()));
    }
    if pid == 0 {
        // In init. Never returns.
        drop(report_r);
        drop(go_w);
        init_main(&newroot, &prog, go_r, report_w);
    }
    drop(report_w);
    drop(go_r);
    if let Err(e) = cgroups.attach(pid) {
        // SAFETY: kill our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = wait_pid(pid);
        return Err(e);
    }
    let mut go_w = go_w;
    let _ = go_w.write_all(b"g");
    drop(go_w);

    // 6. Supervise.
    let wall_limit = Duration::from_millis(cfg.wall_ms);
    let cpu_limit_ns = cfg.cpu_ms.saturating_mul(1_000_000);
    // A pidfd wakes the loop the moment init exits (else: 10 ms polling).
    // SAFETY: pidfd_open on our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    let _pidfd_guard = (pidfd >= 0).then(|| {
        // SAFETY: a fresh fd we own.
        unsafe { File::from_raw_fd(pidfd) }
    });
    let mut killed = false;
    let status = loop {
        if let Some(status) = try_wait_pid(pid)? {
            break status;
        }
        if !killed {
            let mut kill_now = false;
            if started.elapsed() > wall_limit {
                result.wall_exceeded = true;
                kill_now = true;
            }
            if cgroups.cpu_ns().is_some_and(|ns| ns > cpu_limit_ns) {
                result.cpu_exceeded = true;
                kill_now = true;
            }
            if control_readable(control, pidfd) {
                result.killed_on_request = true;
                kill_now = true;
            }
            if kill_now {
                // Killing PID 1 of the namespace kills all of it.
                // SAFETY: kill our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    result.wall_ms = started.elapsed().as_millis() as u64;

    let mut report = InitReport::default();
    {
        let mut buf = [0u8; std::mem::size_of::<InitReport>()];
        let mut f = report_r;
        if f.read_exact(&mut buf).is_ok() {
            // SAFETY: InitReport is plain old data of exactly this size.
            report = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<InitReport>()) };
        } else if !killed {
            return Err(format!(
                "the box's init died without a report (status {status:#x})"
            ));
        } else {
            report.kind = 1;
            report.value = libc::SIGKILL;
        }
    }
    match report.kind {
        0 => result.exit_code = Some(report.value),
        1 => result.signal = Some(report.value),
        2 => {
            return Err(format!(
                "could not execute {}: {}",
                cfg.argv[0],
                std::io::Error::from_raw_os_error(report.value)
            ));
        }
        _ => {
            return Err(format!(
                "box set-up failed in init at step {}: {}",
                report.value,
                std::io::Error::from_raw_os_error(report.errno)
            ));
        }
    }
    if result.signal == Some(libc::SIGXCPU) {
        result.cpu_exceeded = true;
    }
    let rusage_cpu_ms = ((report.utime_us + report.stime_us) / 1000).max(0) as u64;
    result.cpu_ms = cgroups.cpu_ns().map_or(rusage_cpu_ms, |ns| ns / 1_000_000);
    result.memory_kb = cgroups
        .mem_peak_bytes()
        .map_or(report.maxrss_kb.max(0) as u64, |b| b / 1024);
    result.oom_killed = cgroups.oom_killed();
    if result.cpu_ms > cfg.cpu_ms {
        result.cpu_exceeded = true;
    }

    // 7. Copy artefacts out. Everything in the box is dead now (the PID
    // namespace is gone), so nothing can race us; files are opened with
    // O_NOFOLLOW and must be regular.
    if let Some(to) = &cfg.collect_to {
        result.collected = collect(cfg, &newroot.join("box"), to)?;
    }
    *later = Some(cleanup);
    Ok(())
}

/// Wait up to 10 ms for the control socket (kill request) or the pidfd
/// (init exited; ignored when negative). True when a kill was requested.
fn control_readable(control: &UnixStream, pidfd: RawFd) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds (a negative fd is ignored by poll).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 10) };
    n > 0 && fds[0].revents != 0
}

fn pipe() -> Res<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    )?;
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn try_wait_pid(pid: i32) -> Res<Option<i32>> {
    let mut status = 0;
    // SAFETY: waitpid on our child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
    if r < 0 {
        return Err(format!("waitpid: {}", errno()));
    }
    Ok((r == pid).then_some(status))
}

fn wait_pid(pid: i32) -> Res<i32> {
    let mut status = 0;
    // SAFETY: waitpid on our child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    if r < 0 {
        return Err(format!("waitpid: {}", errno()));
    }
    Ok(status)
}

fn mkdirs(path: &Path) -> Res<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| format!("mkdir {}: {e}", path.display()))
}

/// Flags of the mount at `path` that a bind remount must keep (the kernel
/// refuses to drop locked ones).
fn kept_flags(path: &Path) -> libc::c_ulong {
    let Ok(c) = cstr(path) else { return 0 };
    // SAFETY: statvfs into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

/// Bind `src` read-only (and nosuid) at the same path under `newroot`.
/// Symlinks are recreated as symlinks.
fn bind_ro(src: &Path, newroot: &Path, extra: libc::c_ulong) -> Res<()> {
    let Ok(meta) = fs::symlink_metadata(src) else {
        return Ok(()); // Absent on this host: nothing to bind.
    };
    let rel = src.strip_prefix("/").unwrap_or(src);
    let dst = newroot.join(rel);
    if let Some(parent) = dst.parent() {
        mkdirs(parent)?;
    }
    if meta.file_type().is_symlink() {
        let target = fs::read_link(src).map_err(|e| format!("readlink {}: {e}", src.display()))?;
        if fs::symlink_metadata(&dst).is_err() {
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(|e| format!("symlink {}: {e}", dst.display()))?;
        }
        return Ok(());
    }
    if meta.is_dir() {
        mkdirs(&dst)?;
    } else if fs::symlink_metadata(&dst).is_err() {
        File::create(&dst).map_err(|e| format!("touch {}: {e}", dst.display()))?;
    }
    mount(Some(src), &dst, None, libc::MS_BIND | libc::MS_REC, None)?;
    let flags = libc::MS_BIND
        | libc::MS_REMOUNT
        | libc::MS_RDONLY
        | libc::MS_NOSUID
        | extra
        | kept_flags(&dst);
    mount(None, &dst, None, flags, None)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Res<()> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(contents)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn chown(path: &Path, uid: u32) -> Res<()> {
    let c = cstr(path)?;
    // SAFETY: valid path; lchown never follows a symlink.
    check(
        unsafe { libc::lchown(c.as_ptr(), uid, uid) },
        &format!("chown {}", path.display()),
    )
}

fn build_root(cfg: &BoxConfig, newroot: &Path, uid: Option<u32>) -> Res<()> {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    mount(
        Some(Path::new("tmpfs")),
        newroot,
        Some("tmpfs"),
        nosuid_nodev,
        Some("size=16m,mode=0755"),
    )?;
    for p in &cfg.ro_binds {
        if !p.is_absolute() {
            return Err(format!("bind path {} is not absolute", p.display()));
        }
        bind_ro(p, newroot, libc::MS_NODEV)?;
    }
    for d in ["proc", "dev", "box", "tmp", "run", "etc", ".oldroot"] {
        mkdirs(&newroot.join(d))?;
    }
    // /dev: just the harmless character devices.
    for dev in ["null", "zero", "full", "random", "urandom"] {
        bind_ro(&Path::new("/dev").join(dev), newroot, libc::MS_NOEXEC)?;
    }
    // /dev/null and friends must stay writable: rebind without RDONLY.
    for dev in ["null", "zero", "full"] {
        let dst = newroot.join("dev").join(dev);
        if dst.exists() {
            mount(
                None,
                &dst,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC,
                None,
            )?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, newroot.join("dev").join(name));
    }
    let owner = uid.unwrap_or(0);
    let tmpfs_opts = |mode: &str| {
        format!(
            "size={}m,mode={mode},uid={owner},gid={owner},nr_inodes=16384",
            cfg.box_mb.max(1)
        )
    };
    mount(
        Some(Path::new("tmpfs")),
        &newroot.join("box"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&tmpfs_opts("0755")),
    )?;
    mount(
        Some(Path::new("tmpfs")),
        &newroot.join("tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&tmpfs_opts("1777")),
    )?;
    // Files of the run (the box is fresh: no symlinks can exist yet).
    let boxdir = newroot.join("box");
    for (name, contents) in &cfg.files {
        let path = box_path(&boxdir, name)?;
        write_file(&path, contents.as_bytes(), 0o644)?;
        if let Some(u) = uid {
            chown(&path, u)?;
        }
    }
    for (src, name) in &cfg.copy_in {
        let path = box_path(&boxdir, name)?;
        let data = fs::read(src).map_err(|e| format!("reading {}: {e}", src.display()))?;
        let mode = fs::metadata(src)
            .map(|m| m.permissions().mode() & 0o755)
            .unwrap_or(0o644);
        write_file(&path, &data, mode)?;
        if let Some(u) = uid {
            chown(&path, u)?;
        }
    }
    write_file(&newroot.join("run/stdin"), cfg.stdin.as_bytes(), 0o444)?;
    let u = uid.unwrap_or(0);
    write_file(
        &newroot.join("etc/passwd"),
        format!("root:x:0:0:root:/root:/bin/false\nbox:x:{u}:{u}:box:/box:/bin/false\n").as_bytes(),
        0o644,
    )?;
    write_file(
        &newroot.join("etc/group"),
        format!("root:x:0:\nbox:x:{u}:\n").as_bytes(),
        0o644,
    )?;
    write_file(&newroot.join("etc/hostname"), b"box\n", 0o644)?;
    // The root tmpfs itself becomes read-only.
    mount(
        None,
        newroot,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev,
        Some("size=16m,mode=0755"),
    )
}

/// `name` must be a plain file name (no `/`, not `.`/`..`).
fn box_path(boxdir: &Path, name: &str) -> Res<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(format!("bad file name {name:?}"));
    }
    Ok(boxdir.join(name))
}

fn collect(cfg: &BoxConfig, boxdir: &Path, to: &Path) -> Res<Vec<String>> {
    let mut names = Vec::new();
    let entries = fs::read_dir(boxdir).map_err(|e| format!("listing the box: {e}"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let wanted = cfg.collect.iter().any(|pat| match pat.strip_prefix('*') {
            Some(suffix) => name.ends_with(suffix),
            None => pat == name,
        });
        if !wanted || box_path(boxdir, name).is_err() {
            continue;
        }
        let mut src = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(entry.path())
        {
            Ok(f) => f,
            Err(_) => continue, // A symlink or worse: not an artefact.
        };
        let Ok(meta) = src.metadata() else { continue };
        if !meta.is_file() || meta.len() > MAX_COLLECT_FILE {
            continue;
        }
        let mut data = Vec::new();
        (&mut src)
            .take(MAX_COLLECT_FILE)
            .read_to_end(&mut data)
            .map_err(|e| format!("reading {name}: {e}"))?;
        let out = to.join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(meta.permissions().mode() & 0o755)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&out)
            .map_err(|e| format!("creating {}: {e}", out.display()))?;
        f.write_all(&data)
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
        names.push(name.to_string());
    }
    names.sort();
    Ok(names)
}

/// The program's exec arguments and limits, allocated before forking.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    uid: Option<u32>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
}

impl Prepared {
    fn new(cfg: &BoxConfig, uid: Option<u32>, mem_cgroup: bool) -> Res<Self> {
        let argv = cfg.argv.iter().map(cstr).collect::<Res<Vec<_>>>()?;
        let env = cfg
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}")))
            .collect::<Res<Vec<_>>>()?;
        let path = cstr(&cfg.argv[0])?;
        let cpu_s = cfg.cpu_ms.div_ceil(1000) + 1;
        let kb = |k: u64| k.saturating_mul(1024);
        let mut rlimits = vec![
            (libc::RLIMIT_CPU, cpu_s, cpu_s + 1),
            (libc::RLIMIT_FSIZE, kb(cfg.fsize_kb), kb(cfg.fsize_kb)),
            (libc::RLIMIT_NOFILE, cfg.nofile, cfg.nofile),
            (libc::RLIMIT_CORE, 0, 0),
            (libc::RLIMIT_MEMLOCK, 0, 0),
            (libc::RLIMIT_MSGQUEUE, 0, 0),
        ];
        if uid.is_some() {
            // Per real uid: every slot has its own uid, so this is per run.
            rlimits.push((libc::RLIMIT_NPROC, cfg.processes, cfg.processes));
        }
        if cfg.rlimit_data {
            // With a memory cgroup the cgroup decides (a clean memory_limit
            // verdict); RLIMIT_DATA is then only a generous backstop.
            let data = if mem_cgroup {
                kb(cfg.memory_kb).saturating_mul(4)
            } else {
                kb(cfg.memory_kb)
            };
            rlimits.push((libc::RLIMIT_DATA, data, data));
        }
        if cfg.stack_kb > 0 {
            rlimits.push((libc::RLIMIT_STACK, kb(cfg.stack_kb), kb(cfg.stack_kb)));
        }
        Ok(Self {
            path,
            argv,
            env,
            uid,
            rlimits,
        })
    }
}

/// Report a set-up failure of init and exit.
fn init_fail(report_w: &mut File, step: i32) -> ! {
    let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let r = InitReport {
        kind: 3,
        value: step,
        errno: err,
        ..InitReport::default()
    };
    send_report(report_w, &r);
    // SAFETY: terminate init without running destructors.
    unsafe { libc::_exit(127) }
}

fn send_report(report_w: &mut File, r: &InitReport) {
    // SAFETY: InitReport is plain old data.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (r as *const InitReport).cast::<u8>(),
            std::mem::size_of::<InitReport>(),
        )
    };
    let _ = report_w.write_all(bytes);
}

fn init_main(newroot: &Path, prog: &Prepared, go_r: File, mut report_w: File) -> ! {
    // SAFETY: (all below) plain syscalls in the single-threaded init.
    unsafe {
        libc::close(CONTROL_FD);
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            init_fail(&mut report_w, 1);
        }
    }
    // Wait until the helper put us in the cgroups.
    let mut b = [0u8; 1];
    let mut go = go_r;
    if go.read_exact(&mut b).is_err() {
        // SAFETY: the helper is gone; just exit.
        unsafe { libc::_exit(127) }
    }
    drop(go);
    // Own mount namespace, so pivot_root does not move the helper too.
    // SAFETY: unshare in a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        init_fail(&mut report_w, 2);
    }
    let proc_dir = newroot.join("proc");
    let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        proc_flags,
        Some("hidepid=2,subset=pid"),
    )
    .is_err()
        && mount(
            Some(Path::new("proc")),
            &proc_dir,
            Some("proc"),
            proc_flags,
            Some("hidepid=2"),
        )
        .is_err()
    {
        init_fail(&mut report_w, 3);
    }
    let Ok(root_c) = cstr(newroot) else {
        init_fail(&mut report_w, 4)
    };
    // SAFETY: valid path strings.
    unsafe {
        if libc::chdir(root_c.as_ptr()) != 0 {
            init_fail(&mut report_w, 4);
        }
        let dot = c".".as_ptr();
        if libc::syscall(libc::SYS_pivot_root, dot, dot) != 0 {
            init_fail(&mut report_w, 5);
        }
        if libc::umount2(dot, libc::MNT_DETACH) != 0 {
            init_fail(&mut report_w, 6);
        }
        if libc::chdir(c"/box".as_ptr()) != 0 {
            init_fail(&mut report_w, 7);
        }
    }
    let (exec_r, exec_w) = match pipe() {
        Ok(p) => p,
        Err(_) => init_fail(&mut report_w, 8),
    };
    // SAFETY: init is single-threaded.
    let child = unsafe { libc::fork() };
    if child < 0 {
        init_fail(&mut report_w, 9);
    }
    if child == 0 {
        drop(exec_r);
        drop(report_w);
        exec_program(prog, exec_w);
    }
    drop(exec_w);
    // exec failure?
    let mut errbuf = [0u8; 4];
    let mut exec_r = exec_r;
    let exec_errno = match exec_r.read(&mut errbuf) {
        Ok(4) => Some(i32::from_le_bytes(errbuf)),
        _ => None,
    };
    // Reap everything; stop as soon as the program itself is gone.
    let mut report = InitReport::default();
    loop {
        let mut status = 0;
        // SAFETY: wait for any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid < 0 {
            // SAFETY: errno location read.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            init_fail(&mut report_w, 10);
        }
        if pid == child {
            if let Some(e) = exec_errno {
                report.kind = 2;
                report.value = e;
            } else if libc::WIFEXITED(status) {
                report.kind = 0;
                report.value = libc::WEXITSTATUS(status);
            } else {
                report.kind = 1;
                report.value = libc::WTERMSIG(status);
            }
            break;
        }
    }
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    report.utime_us = ru.ru_utime.tv_sec * 1_000_000 + ru.ru_utime.tv_usec;
    report.stime_us = ru.ru_stime.tv_sec * 1_000_000 + ru.ru_stime.tv_usec;
    report.maxrss_kb = ru.ru_maxrss;
    send_report(&mut report_w, &report);
    // PID 1 exits: the kernel kills everything else in the namespace.
    // SAFETY: terminate init.
    unsafe { libc::_exit(0) }
}

fn exec_program(prog: &Prepared, mut exec_w: File) -> ! {
    let fail = |w: &mut File| -> ! {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let _ = w.write_all(&e.to_le_bytes());
        // SAFETY: terminate the child.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: (all below) plain syscalls in the single-threaded child.
    unsafe {
        // Parent death of init already kills us via the namespace, but be explicit.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // stdin from the run's file.
        let fd = libc::open(c"/run/stdin".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::dup2(fd, 0) < 0 {
            fail(&mut exec_w);
        }
        libc::close(fd);
        for &(res, soft, hard) in &prog.rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(res, &lim) != 0 {
                fail(&mut exec_w);
            }
        }
        if let Some(uid) = prog.uid
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0)
        {
            fail(&mut exec_w);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(&mut exec_w);
        }
        // Nothing but 0-2 (and the CLOEXEC exec-error pipe) survives exec.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if super::seccomp::install().is_err() {
            fail(&mut exec_w);
        }
        let mut argv: Vec<*const libc::c_char> = prog.argv.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut env: Vec<*const libc::c_char> = prog.env.iter().map(|c| c.as_ptr()).collect();
        env.push(std::ptr::null());
        libc::execve(prog.path.as_ptr(), argv.as_ptr(), env.as_ptr());
    }
    fail(&mut exec_w)
}

/// Where the slots' pooled network namespaces are bind-mounted (root only).
pub const NETNS_DIR: &str = "/run/brigade-sandbox/netns";

/// The filesystem magic of namespace files (`nsfs`).
const NSFS_MAGIC: libc::c_long = 0x6e73_6673;

/// The network namespace of `slot`, made on first use: an empty namespace
/// bind-mounted at `NETNS_DIR/slot-N` (as `ip netns add` does). The caller
/// holds the slot, so no other helper makes or joins it meanwhile.
fn pooled_netns(slot: u32) -> Res<File> {
    let path = Path::new(NETNS_DIR).join(format!("slot-{slot}"));
    let is_ns = |p: &Path| -> bool {
        let Ok(c) = cstr(p) else { return false };
        // SAFETY: statfs into a zeroed struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == NSFS_MAGIC }
    };
    if !is_ns(&path) {
        mkdirs(Path::new(NETNS_DIR))?;
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let target = cstr(&path)?;
        // SAFETY: the helper is single-threaded; the child only makes
        // syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", errno()));
        }
        if pid == 0 {
            // SAFETY: plain syscalls, then _exit.
            unsafe {
                let ok = libc::unshare(libc::CLONE_NEWNET) == 0
                    && libc::mount(
                        c"/proc/self/ns/net".as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let status = wait_pid(pid)?;
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 || !is_ns(&path) {
            return Err(format!("could not make {}", path.display()));
        }
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

/// Remove the cgroups of every slot that no box holds now. A helper killed
/// with SIGKILL (with its worker, say) cannot run its own cleanup: its
/// processes die with it, but its cgroup directories stay. A slot is free
/// when its lock file can be locked; holding that lock while sweeping keeps
/// a new run from taking the slot meanwhile. Returns the slots swept.
pub fn sweep_stale_slots() -> Vec<u32> {
    let mut slots = std::collections::BTreeSet::new();
    for ctrl in ["memory", "pids", "cpuacct"] {
        let parent = Path::new("/sys/fs/cgroup").join(ctrl).join(CGROUP_PARENT);
        let Ok(rd) = fs::read_dir(&parent) else {
            continue;
        };
        for e in rd.flatten() {
            if let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("slot-"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                slots.insert(n);
            }
        }
    }
    let mut swept = Vec::new();
    for n in slots {
        let Some(_lock) = try_lock_slot(n) else {
            continue; // A live box holds it.
        };
        for ctrl in ["memory", "pids", "cpuacct"] {
            remove_cgroup(
                &Path::new("/sys/fs/cgroup")
                    .join(ctrl)
                    .join(CGROUP_PARENT)
                    .join(format!("slot-{n}")),
            );
        }
        swept.push(n);
    }
    swept
}

/// Lock slot `n` if nobody holds it (the lock goes with the file).
pub fn try_lock_slot(n: u32) -> Option<File> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(SLOT_LOCK_DIR)
        .ok()?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .mode(0o600)
        .open(Path::new(SLOT_LOCK_DIR).join(format!("slot-{n}")))
        .ok()?;
    // SAFETY: flock on an fd we own.
    (unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0).then_some(file)
}
