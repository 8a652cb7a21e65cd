//! The `code` task kind: compile and run untrusted source in the sandbox of
//! [`crate::sandbox`].
//!
//! Input and output are those of the `code` kind in `API.md`. A program's own
//! failure (wrong answer, crash, limits) is a succeeded task with its verdict.
//! When the sandbox itself fails the task also succeeds, with the verdict
//! `internal_error` and an extra `message` field saying what went wrong
//! (the contract reserves `internal_error` for exactly that case); the worker
//! logs it at `warn`. Input that does not fit (unknown or missing language,
//! missing source, limits out of range) is [`TaskFailure::bad_input`].

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use brigade_api::code::{
    CodeInput, CodeLimits, CodeOutput, CodeTest, Compare, MAX_RESULT_BYTES, MAX_TESTS, RunFields,
    TestResult,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::judge::{self, Stream};
use crate::handler::{Handler, TaskContext, TaskFailure, TaskOutcome};
use crate::sandbox::{BoxConfig, BoxResult};

/// Default and largest CPU time of a run, in milliseconds.
pub const CPU_MS: (u64, u64) = (2_000, 60_000);
/// Default and largest wall-clock time of a run, in milliseconds.
pub const WALL_MS: (u64, u64) = (5_000, 120_000);
/// Default and largest memory of a run, in KiB.
pub const MEMORY_KB: (u64, u64) = (262_144, 4_194_304);
/// Default and largest number of processes (and threads) of a run.
pub const PROCESSES: (u64, u64) = (32, 256);
/// Default and largest stdout (and, separately, stderr) of a run, in KiB.
pub const OUTPUT_KB: (u64, u64) = (1_024, 65_536);
/// `RLIMIT_STACK` of a run (KiB), whatever its memory limit.
pub const STACK_KB: u64 = 8 * 1024;
/// Extra threads allowed to the JVM and Node.js runtimes on top of `processes`.
pub const RUNTIME_THREADS: u64 = 64;

/// Limits of the compile step (fixed; not set by the task).
const COMPILE_CPU_MS: u64 = 20_000;
const COMPILE_WALL_MS: u64 = 30_000;
const COMPILE_MEMORY_KB: u64 = 1_048_576;
const COMPILE_PROCESSES: u64 = 128;
const COMPILE_OUTPUT: usize = 64 * 1024;

const PATH_ENV: &str = "/usr/local/bin:/usr/bin:/bin";

/// A language whose toolchain was found on this host.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `python`, `c`, ...
    pub language: &'static str,
    /// The toolchain's version (`3.11.7`, `12.2.0`), empty when unknown.
    pub version: String,
    /// Source file name in `/box`.
    pub source_name: &'static str,
    /// Compiler argv (absolute paths), if the language is compiled.
    pub compile: Option<Vec<String>>,
    /// Files the compiler produces (names or `*.ext`).
    pub artefacts: Vec<String>,
    /// The main program (absolute path) and its fixed arguments, before the
    /// memory-dependent ones of [`Toolchain::run_argv`].
    pub run: Vec<String>,
    /// Host directories outside the common set the toolchain needs.
    pub extra_binds: Vec<PathBuf>,
}

impl Toolchain {
    fn is_managed_runtime(&self) -> bool {
        matches!(self.language, "java" | "javascript")
    }

    /// The run argv for a memory limit, with the program's own arguments.
    fn run_argv(&self, memory_kb: u64, args: &[String]) -> Vec<String> {
        let mut argv = vec![self.run[0].clone()];
        match self.language {
            // Heap at 3/4 of the limit: the rest is metaspace, stacks, code.
            "java" => {
                argv.push(format!("-Xmx{}k", (memory_kb * 3 / 4).max(16 * 1024)));
                argv.push(format!("-Xss{}k", 64 * 1024));
            }
            "javascript" => argv.push(format!(
                "--max-old-space-size={}",
                (memory_kb * 3 / 4 / 1024).max(16)
            )),
            _ => {}
        }
        argv.extend(self.run[1..].iter().cloned());
        argv.extend(args.iter().cloned());
        argv
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
}

fn command_lines(program: &Path, args: &[&str]) -> Option<Vec<String>> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// The first line of a command's stdout without `prefix` (empty on failure).
fn first_line(program: &Path, args: &[&str], prefix: &str) -> String {
    command_lines(program, args)
        .and_then(|l| l.into_iter().next())
        .map(|l| l.trim().trim_start_matches(prefix).to_string())
        .unwrap_or_default()
}

fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Directories a toolchain at `p` needs bound when it lives outside `/usr`.
fn outside_usr(p: &Path) -> Vec<PathBuf> {
    if p.starts_with("/usr") || p.starts_with("/bin") || p.starts_with("/lib") {
        Vec::new()
    } else {
        vec![p.to_path_buf()]
    }
}

fn detect() -> Vec<Toolchain> {
    let mut found = Vec::new();
    if let Some(py) = which("python3") {
        // Resolve shims (pyenv) to the real interpreter and its prefix.
        let (exe, prefix, version) = match command_lines(
            &py,
            &[
                "-c",
                "import sys;print(sys.executable);print(sys.base_prefix);print(sys.version.split()[0])",
            ],
        ) {
            Some(l) if l.len() >= 3 => (PathBuf::from(&l[0]), PathBuf::from(&l[1]), l[2].clone()),
            _ => (real(&py), PathBuf::from("/usr"), String::new()),
        };
        found.push(Toolchain {
            language: "python",
            version,
            source_name: "main.py",
            compile: None,
            artefacts: vec![],
            run: vec![s(&exe), "-I".into(), "-B".into(), "/box/main.py".into()],
            extra_binds: outside_usr(&prefix),
        });
    }
    for (lang, compiler, file, std) in [
        ("c", "gcc", "main.c", "-std=gnu17"),
        ("cpp", "g++", "main.cpp", "-std=gnu++17"),
    ] {
        if let Some(cc) = which(compiler) {
            let cc = real(&cc);
            let mut argv = vec![
                s(&cc),
                "-O2".into(),
                std.into(),
                "-pipe".into(),
                "-o".into(),
                "main".into(),
                file.into(),
            ];
            if lang == "c" {
                argv.push("-lm".into());
            }
            found.push(Toolchain {
                language: lang,
                version: first_line(&cc, &["-dumpfullversion"], ""),
                source_name: file,
                compile: Some(argv),
                artefacts: vec!["main".into()],
                run: vec!["/box/main".into()],
                extra_binds: outside_usr(cc.parent().unwrap_or(Path::new("/usr"))),
            });
        }
    }
    if let (Some(javac), Some(java)) = (which("javac"), which("java")) {
        let (javac, java) = (real(&javac), real(&java));
        let mut binds = outside_usr(
            javac
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("/usr")),
        );
        if let Ok(rd) = std::fs::read_dir("/etc") {
            binds.extend(
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("java"))
                    .map(|e| e.path()),
            );
        }
        let jflags = [
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
        ];
        let mut compile = vec![s(&javac), "-J-Xmx512m".into()];
        compile.extend(jflags.iter().map(|f| format!("-J{f}")));
        compile.extend(["-encoding", "UTF-8", "-d", ".", "Main.java"].map(String::from));
        let mut run = vec![s(&java)];
        run.extend(jflags.iter().map(|f| f.to_string()));
        run.extend(["-cp", "/box", "Main"].map(String::from));
        found.push(Toolchain {
            language: "java",
            version: first_line(&javac, &["-version"], "javac "),
            source_name: "Main.java",
            compile: Some(compile),
            artefacts: vec!["*.class".into()],
            run,
            extra_binds: binds,
        });
    }
    if let Some(rustc) = which("rustc") {
        // Through rustup's proxy to the real toolchain.
        if let Some(sysroot) = command_lines(&rustc, &["--print", "sysroot"])
            .and_then(|l| l.into_iter().next())
            .map(PathBuf::from)
        {
            let real_rustc = sysroot.join("bin/rustc");
            if real_rustc.exists() {
                found.push(Toolchain {
                    language: "rust",
                    version: first_line(&real_rustc, &["--version"], "rustc ")
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    source_name: "main.rs",
                    compile: Some(
                        [
                            &s(&real_rustc),
                            "-O",
                            "--edition",
                            "2021",
                            "-C",
                            "debuginfo=0",
                            "-o",
                            "main",
                            "main.rs",
                        ]
                        .map(String::from)
                        .to_vec(),
                    ),
                    artefacts: vec!["main".into()],
                    run: vec!["/box/main".into()],
                    extra_binds: outside_usr(&sysroot),
                });
            }
        }
    }
    if let Some(node) = which("node").or_else(|| which("nodejs")) {
        let node = real(&node);
        found.push(Toolchain {
            language: "javascript",
            version: first_line(&node, &["--version"], "v"),
            source_name: "main.js",
            compile: None,
            artefacts: vec![],
            run: vec![s(&node), "/box/main.js".into()],
            extra_binds: outside_usr(node.parent().unwrap_or(Path::new("/usr"))),
        });
    }
    if let Some(bash) = which("bash") {
        let bash = real(&bash);
        found.push(Toolchain {
            language: "bash",
            version: first_line(&bash, &["-c", "echo $BASH_VERSION"], "")
                .split('(')
                .next()
                .unwrap_or("")
                .to_string(),
            source_name: "main.sh",
            compile: None,
            artefacts: vec![],
            run: vec![s(&bash), "/box/main.sh".into()],
            extra_binds: outside_usr(bash.parent().unwrap_or(Path::new("/usr"))),
        });
    }
    found
}

/// The toolchains found on this host (detected once per process).
pub fn toolchains() -> &'static [Toolchain] {
    static CACHE: OnceLock<Vec<Toolchain>> = OnceLock::new();
    CACHE.get_or_init(detect)
}

/// Host paths every box gets read-only.
fn common_binds() -> Vec<PathBuf> {
    [
        "/usr",
        "/bin",
        "/lib",
        "/lib64",
        "/lib32",
        "/libx32",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/alternatives",
        "/etc/localtime",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

fn base_env() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), PATH_ENV.into()),
        ("HOME".into(), "/box".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TMPDIR".into(), "/tmp".into()),
    ]
}

/// The `code` handler.
pub struct CodeHandler {
    exe: PathBuf,
    cache_dir: PathBuf,
    /// Boxes make their own network namespace (the bench's comparison).
    fresh_netns: bool,
}

impl CodeHandler {
    /// A handler that runs the sandbox helper as `brigade_exe sandbox-exec`
    /// (normally [`std::env::current_exe`]) and caches compiled programs
    /// under `cache_dir` (created if missing).
    pub fn new(
        brigade_exe: impl Into<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> std::io::Result<Self> {
        let cache_dir = cache_dir.into();
        std::fs::create_dir_all(cache_dir.join("build"))?;
        std::fs::create_dir_all(cache_dir.join(".mnt"))?;
        // Toolchain detection runs commands: do it now, not on the first task.
        let _ = toolchains();
        // Boxes of a worker that died mid-run left their cgroups behind.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let swept = crate::sandbox::sweep_stale_slots();
            if !swept.is_empty() {
                tracing::info!(slots = ?swept, "code sandbox: removed the cgroups of dead boxes");
            }
        }
        Ok(Self {
            exe: brigade_exe.into(),
            cache_dir,
            fresh_netns: false,
        })
    }

    /// The same with the running executable and `<temp dir>/brigade-code-cache`.
    pub fn with_defaults() -> std::io::Result<Self> {
        Self::new(
            std::env::current_exe()?,
            std::env::temp_dir().join("brigade-code-cache"),
        )
    }

    fn mount_point(&self) -> PathBuf {
        self.cache_dir.join(".mnt")
    }
}

/// Effective limits of one run.
#[derive(Debug, Clone, Copy)]
struct Limits {
    cpu_ms: u64,
    wall_ms: u64,
    memory_kb: u64,
    processes: u64,
    output_kb: u64,
}

fn resolve(l: &CodeLimits) -> Result<Limits, String> {
    let pick = |name: &str, v: Option<u64>, (def, max): (u64, u64)| -> Result<u64, String> {
        match v {
            None => Ok(def),
            Some(v) if (1..=max).contains(&v) => Ok(v),
            Some(v) => Err(format!("limits.{name} = {v} is out of range 1..={max}")),
        }
    };
    Ok(Limits {
        cpu_ms: pick("cpu_ms", l.cpu_ms, CPU_MS)?,
        wall_ms: pick("wall_ms", l.wall_ms, WALL_MS)?,
        memory_kb: pick("memory_kb", l.memory_kb, MEMORY_KB)?,
        processes: pick("processes", l.processes, PROCESSES)?,
        output_kb: pick("output_kb", l.output_kb, OUTPUT_KB)?,
    })
}

/// One finished box: the helper's report and the captured output.
struct BoxRun {
    result: BoxResult,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    output_exceeded: bool,
}

async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
    kill: Option<mpsc::Sender<()>>,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut exceeded = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
                if n > room && !exceeded {
                    exceeded = true;
                    if let Some(k) = &kill {
                        let _ = k.try_send(());
                    }
                }
            }
        }
    }
    (out, exceeded)
}

fn frame(cfg: &BoxConfig) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(cfg).map_err(|e| e.to_string())?;
    let len = u32::try_from(json.len()).map_err(|_| "config too large".to_string())?;
    let mut framed = len.to_le_bytes().to_vec();
    framed.extend_from_slice(&json);
    Ok(framed)
}

/// Put `fd` at fd 3 of the helper (in `pre_exec`: async-signal-safe calls only).
fn control_fd_setup(cmd: &mut std::process::Command, fd: i32) {
    // SAFETY: dup2/fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Run one box through the helper. `Err` means the sandbox failed.
async fn run_box(
    exe: &Path,
    cfg: &BoxConfig,
    out_cap: usize,
    kill_on_cap: bool,
    cancel: &CancellationToken,
) -> Result<BoxRun, String> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut std_cmd = std::process::Command::new(exe);
    std_cmd
        .arg("sandbox-exec")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    control_fd_setup(&mut std_cmd, theirs.as_raw_fd());
    let mut cmd = tokio::process::Command::from(std_cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {} sandbox-exec: {e}", exe.display()))?;
    drop(theirs);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the helper's pipes are missing".into());
    };
    ours.set_nonblocking(true).map_err(|e| e.to_string())?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = ours.into_split();
    wr.write_all(&frame(cfg)?)
        .await
        .map_err(|e| format!("sending the config: {e}"))?;

    let (kill_tx, mut kill_rx) = mpsc::channel::<()>(4);
    let out_task = tokio::spawn(read_capped(
        stdout,
        out_cap,
        kill_on_cap.then(|| kill_tx.clone()),
    ));
    let err_task = tokio::spawn(read_capped(
        stderr,
        out_cap,
        kill_on_cap.then(|| kill_tx.clone()),
    ));
    drop(kill_tx);

    // The helper enforces the wall limit itself; this is a backstop.
    let deadline = tokio::time::sleep(Duration::from_millis(cfg.wall_ms + 10_000));
    tokio::pin!(deadline);
    let mut answer = Vec::new();
    {
        let read = rd.read_to_end(&mut answer);
        tokio::pin!(read);
        loop {
            tokio::select! {
                r = &mut read => {
                    r.map_err(|e| format!("reading the helper's answer: {e}"))?;
                    break;
                }
                Some(()) = kill_rx.recv() => {
                    let _ = wr.write_all(b"k").await;
                }
                () = &mut deadline => {
                    let _ = child.start_kill();
                    return Err("the sandbox helper did not finish in time".into());
                }
                () = cancel.cancelled() => {
                    // Dropping the socket makes the helper kill the box. Wait
                    // for it to finish its cleanup (cgroups, slot lock), so a
                    // cancelled run leaves nothing behind when it returns.
                    drop((rd, wr));
                    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                        let _ = child.start_kill();
                    }
                    return Err("cancelled".into());
                }
            }
        }
    }
    // The helper waits for this close, then removes the box's cgroups and
    // exits; the verdict need not wait for that, so it is reaped aside.
    drop((rd, wr));
    let result: BoxResult = match serde_json::from_slice(&answer) {
        Ok(r) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            r
        }
        Err(e) => {
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            return Err(format!(
                "the sandbox helper gave no answer ({e}); exit status {status:?}"
            ));
        }
    };
    // Everything in the box is dead once the helper answered, so EOF is near;
    // still, never hang on a pipe.
    let grab = |t: tokio::task::JoinHandle<(Vec<u8>, bool)>| async move {
        match tokio::time::timeout(Duration::from_secs(2), t).await {
            Ok(Ok(v)) => v,
            _ => (Vec::new(), false),
        }
    };
    let (stdout, out_ex) = grab(out_task).await;
    let (stderr, err_ex) = grab(err_task).await;
    Ok(BoxRun {
        result,
        stdout,
        stderr,
        output_exceeded: out_ex || err_ex,
    })
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn internal(message: &str, compile_output: &str) -> serde_json::Value {
    tracing::warn!(error = %message, "code sandbox failure");
    json!({
        "verdict": "internal_error",
        "message": message,
        "exit_code": null,
        "signal": null,
        "stdout": "",
        "stderr": "",
        "compile_output": compile_output,
        "time_ms": 0,
        "wall_ms": 0,
        "memory_kb": 0,
    })
}

/// Markers the JVM and V8 print when their own heap is exhausted (they then
/// exit or abort by themselves, before the cgroup's OOM killer acts).
const HEAP_EXHAUSTED: &[&str] = &[
    "java.lang.OutOfMemoryError",
    "Reached heap limit",
    "JavaScript heap out of memory",
];

/// The verdict of a finished run from its limits alone (`None`: it ran to
/// a clean exit, and its output decides).
fn limit_verdict(run: &BoxRun, limits: &Limits, managed: bool) -> Option<&'static str> {
    let r = &run.result;
    let failed = r.signal.is_some() || r.exit_code != Some(0);
    let heap = managed && failed && {
        let err = String::from_utf8_lossy(&run.stderr);
        HEAP_EXHAUSTED.iter().any(|m| err.contains(m))
    };
    if run.output_exceeded || r.signal == Some(libc::SIGXFSZ) {
        Some("output_limit")
    } else if r.oom_killed || heap {
        Some("memory_limit")
    } else if r.cpu_exceeded || r.wall_exceeded || r.cpu_ms > limits.cpu_ms {
        Some("time_limit")
    } else if failed {
        Some("runtime_error")
    } else {
        None
    }
}

/// Limits of a checker run (fixed; the task's limits are the program's).
const CHECKER_LIMITS: Limits = Limits {
    cpu_ms: 10_000,
    wall_ms: 20_000,
    memory_kb: 524_288,
    processes: 32,
    output_kb: 64,
};

/// A program ready to run: its toolchain and the files its box starts with.
struct Built<'a> {
    tc: &'a Toolchain,
    source: String,
    copy_in: Vec<(PathBuf, String)>,
    compile_output: String,
}

/// Why a build gave no program.
enum BuildError {
    /// The compiler refused it (the output, the compiler's run).
    Compile(String, BoxResult),
    /// The sandbox failed.
    Internal(String),
}

/// One test, or the single run of a task without tests.
struct Case {
    name: String,
    stdin: String,
    expected: Option<String>,
    args: Vec<String>,
}

/// What a case came to.
struct Judged {
    name: String,
    verdict: &'static str,
    comment: String,
    result: BoxResult,
    stdout: Stream,
    stderr: Stream,
}

fn lookup(language: &str) -> Result<&'static Toolchain, TaskFailure> {
    const KNOWN: [&str; 7] = ["python", "c", "cpp", "java", "rust", "javascript", "bash"];
    toolchains()
        .iter()
        .find(|t| t.language == language)
        .ok_or_else(|| {
            TaskFailure::bad_input(if KNOWN.contains(&language) {
                format!("language `{language}` has no toolchain on this worker")
            } else {
                format!(
                    "unknown language `{language}` (known: {})",
                    KNOWN.join(", ")
                )
            })
        })
}

fn check_tests(tests: &[CodeTest]) -> Result<(), TaskFailure> {
    if tests.is_empty() || tests.len() > MAX_TESTS {
        return Err(TaskFailure::bad_input(format!(
            "`tests` must hold 1 to {MAX_TESTS} tests, not {}",
            tests.len()
        )));
    }
    for (i, t) in tests.iter().enumerate() {
        if let Some(n) = &t.name
            && (n.is_empty() || n.len() > 64)
        {
            return Err(TaskFailure::bad_input(format!(
                "tests[{i}].name must be 1 to 64 bytes"
            )));
        }
    }
    Ok(())
}

impl CodeHandler {
    async fn handle(&self, input: CodeInput, cancel: &CancellationToken) -> TaskOutcome {
        let Some(language) = input.language.as_deref() else {
            return Err(TaskFailure::bad_input("`language` is missing"));
        };
        let Some(source) = input.source.as_deref() else {
            return Err(TaskFailure::bad_input("`source` is missing"));
        };
        let tc = lookup(language)?;
        let limits = resolve(&input.limits).map_err(TaskFailure::bad_input)?;
        if let Some(tests) = &input.tests {
            check_tests(tests)?;
        }
        let checker_tc = match &input.checker {
            Some(ch) => Some(
                lookup(&ch.language)
                    .map_err(|e| TaskFailure::bad_input(format!("checker: {}", e.error.message)))?,
            ),
            None => None,
        };

        let prog = match self.build(tc, source, cancel).await {
            Ok(b) => b,
            Err(BuildError::Compile(output, r)) => {
                return Ok(compile_error(
                    output,
                    &r,
                    input.tests.as_ref().map(Vec::len),
                ));
            }
            Err(BuildError::Internal(e)) if cancel.is_cancelled() => {
                return Err(TaskFailure::retryable(format!("cancelled: {e}")));
            }
            Err(BuildError::Internal(e)) => return Ok(internal(&e, "")),
        };
        let checker = match (&input.checker, checker_tc) {
            (Some(ch), Some(ctc)) => match self.build(ctc, &ch.source, cancel).await {
                Ok(b) => Some(b),
                Err(BuildError::Compile(output, _)) => {
                    return Err(TaskFailure::bad_input(format!(
                        "the checker does not compile: {output}"
                    )));
                }
                Err(BuildError::Internal(e)) => return Ok(internal(&e, &prog.compile_output)),
            },
            _ => None,
        };

        let with_tests = input.tests.is_some();
        let cases: Vec<Case> = match &input.tests {
            Some(tests) => tests
                .iter()
                .enumerate()
                .map(|(i, t)| Case {
                    name: t.name.clone().unwrap_or_else(|| format!("t{}", i + 1)),
                    stdin: t.stdin.clone(),
                    expected: t.expected_output.clone(),
                    args: t.args.clone(),
                })
                .collect(),
            None => vec![Case {
                name: "t1".into(),
                stdin: input.stdin.clone(),
                expected: input.expected_output.clone(),
                args: input.args.clone(),
            }],
        };
        // What each stream keeps once judged: enough for a case's streams
        // to fill a result between them, so memory stays bounded with 100 tests.
        let keep = (MAX_RESULT_BYTES / cases.len()).max(64 * 1024);
        let mut judged = Vec::with_capacity(cases.len());
        for case in &cases {
            let j = match self
                .run_case(
                    &prog,
                    checker.as_ref(),
                    case,
                    &limits,
                    input.compare,
                    keep,
                    cancel,
                )
                .await
            {
                Ok(j) => j,
                Err(e) if cancel.is_cancelled() => {
                    return Err(TaskFailure::retryable(format!("cancelled: {e}")));
                }
                Err(e) if !with_tests => return Ok(internal(&e, &prog.compile_output)),
                Err(e) => {
                    tracing::warn!(error = %e, "code sandbox failure");
                    Judged {
                        name: case.name.clone(),
                        verdict: "internal_error",
                        comment: e,
                        result: BoxResult::default(),
                        stdout: Stream::default(),
                        stderr: Stream::default(),
                    }
                }
            };
            let stop = input.stop_on_failure && j.verdict != "accepted";
            judged.push(j);
            if stop {
                break;
            }
        }
        Ok(assemble(
            judged,
            with_tests,
            cases.len(),
            prog.compile_output,
        ))
    }

    /// Compile `source` (or find it in the cache) into the files a run starts with.
    async fn build<'a>(
        &self,
        tc: &'a Toolchain,
        source: &str,
        cancel: &CancellationToken,
    ) -> Result<Built<'a>, BuildError> {
        let mut built = Built {
            tc,
            source: source.to_string(),
            copy_in: Vec::new(),
            compile_output: String::new(),
        };
        let Some(compile) = &tc.compile else {
            return Ok(built);
        };
        let key = sha256_hex(&[
            tc.language.as_bytes(),
            compile.join("\0").as_bytes(),
            source.as_bytes(),
        ]);
        let dir = self
            .cache_dir
            .join("build")
            .join(format!("{}-{key}", tc.language));
        if !dir.join(".ok").exists() {
            built.compile_output = self
                .compile(tc, compile, source, &self.base(tc), &dir, cancel)
                .await?;
        } else if let Ok(out) = std::fs::read_to_string(dir.join(".compile_output")) {
            built.compile_output = out;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Err(BuildError::Internal(
                "the compiled program vanished from the cache".into(),
            ));
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                built.copy_in.push((e.path(), name));
            }
        }
        Ok(built)
    }

    /// The box settings every run of `tc` shares.
    fn base(&self, tc: &Toolchain) -> BoxConfig {
        let mut binds = common_binds();
        binds.extend(tc.extra_binds.iter().cloned());
        BoxConfig {
            env: base_env(),
            ro_binds: binds,
            mount_point: self.mount_point(),
            fsize_kb: 64 * 1024,
            nofile: 256,
            fresh_netns: self.fresh_netns,
            ..BoxConfig::default()
        }
    }

    /// The config of one run of a built program.
    fn run_config(
        &self,
        prog: &Built<'_>,
        limits: &Limits,
        stdin: String,
        args: &[String],
    ) -> BoxConfig {
        let tc = prog.tc;
        let managed = tc.is_managed_runtime();
        let threads = if managed { RUNTIME_THREADS } else { 0 };
        BoxConfig {
            argv: tc.run_argv(limits.memory_kb, args),
            files: if tc.compile.is_none() {
                vec![(tc.source_name.to_string(), prog.source.clone())]
            } else {
                Vec::new()
            },
            copy_in: prog.copy_in.clone(),
            stdin,
            cpu_ms: limits.cpu_ms,
            wall_ms: limits.wall_ms,
            memory_kb: limits.memory_kb,
            rlimit_data: !managed,
            // A fixed stack: glibc sizes every thread's stack by RLIMIT_STACK,
            // so tying it to memory_kb left room for only a few threads.
            stack_kb: if managed { 0 } else { STACK_KB },
            processes: limits.processes + threads,
            // Below the tmpfs size, so a file flood ends in SIGXFSZ.
            fsize_kb: 16 * 1024,
            box_mb: 64,
            ..self.base(tc)
        }
    }

    /// Run one case and judge it.
    #[allow(clippy::too_many_arguments)]
    async fn run_case(
        &self,
        prog: &Built<'_>,
        checker: Option<&Built<'_>>,
        case: &Case,
        limits: &Limits,
        compare: Compare,
        keep: usize,
        cancel: &CancellationToken,
    ) -> Result<Judged, String> {
        let cfg = self.run_config(prog, limits, case.stdin.clone(), &case.args);
        let out_cap = (limits.output_kb * 1024) as usize;
        let run = run_box(&self.exe, &cfg, out_cap, true, cancel).await?;
        if let Some(e) = &run.result.internal_error {
            return Err(e.clone());
        }
        let mut comment = String::new();
        let verdict = match limit_verdict(&run, limits, prog.tc.is_managed_runtime()) {
            Some(v) => v,
            None => match checker {
                Some(ch) => {
                    let (v, c) = self.check(ch, case, &run.stdout, cancel).await?;
                    comment = c;
                    v
                }
                None => match &case.expected {
                    Some(exp) => match judge::compare(compare, exp, &run.stdout) {
                        Ok(()) => "accepted",
                        Err(why) => {
                            comment = why;
                            "wrong_answer"
                        }
                    },
                    None => "accepted",
                },
            },
        };
        Ok(Judged {
            name: case.name.clone(),
            verdict,
            comment,
            stdout: Stream::new(run.stdout, keep),
            stderr: Stream::new(run.stderr, keep),
            result: run.result,
        })
    }

    /// Run the checker on one case's output: its verdict and comment.
    async fn check(
        &self,
        ch: &Built<'_>,
        case: &Case,
        output: &[u8],
        cancel: &CancellationToken,
    ) -> Result<(&'static str, String), String> {
        // The three files go in through a host directory of our own (copy-in
        // reads them as bytes), so non-UTF-8 output reaches the checker as is.
        let dir = self
            .cache_dir
            .join("build")
            .join(format!(".tmp-check-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let _cleanup = scopeguard(dir.clone());
        let expected = case.expected.as_deref().unwrap_or("");
        for (name, data) in [
            ("input", case.stdin.as_bytes()),
            ("expected", expected.as_bytes()),
            ("output", output),
        ] {
            std::fs::write(dir.join(name), data).map_err(|e| format!("writing {name}: {e}"))?;
        }
        let mut cfg = self.run_config(ch, &CHECKER_LIMITS, case.stdin.clone(), &[]);
        for name in ["input", "expected", "output"] {
            cfg.copy_in.push((dir.join(name), name.to_string()));
        }
        let cap = (CHECKER_LIMITS.output_kb * 1024) as usize;
        let run = run_box(&self.exe, &cfg, cap, false, cancel).await?;
        if let Some(e) = &run.result.internal_error {
            return Err(format!("checker: {e}"));
        }
        let comment = text(&run.stdout).trim_end().to_string();
        let r = &run.result;
        Ok(match (r.exit_code, r.signal) {
            (Some(0), _) => ("accepted", comment),
            (Some(1), _) => ("wrong_answer", comment),
            _ => {
                let why = match limit_verdict(&run, &CHECKER_LIMITS, ch.tc.is_managed_runtime()) {
                    Some(v) => v.to_string(),
                    None => "no verdict".into(),
                };
                let err = text(&run.stderr);
                (
                    "internal_error",
                    format!(
                        "the checker failed ({why}, exit {:?}, signal {:?}): {}",
                        r.exit_code,
                        r.signal,
                        err.chars().take(2000).collect::<String>()
                    ),
                )
            }
        })
    }

    /// Compile into the cache. `Ok(output)`: built; `Err(Compile)`: the
    /// compiler refused the source; `Err(Internal)`: the sandbox failed.
    async fn compile(
        &self,
        tc: &Toolchain,
        compile: &[String],
        source: &str,
        base: &BoxConfig,
        build: &Path,
        cancel: &CancellationToken,
    ) -> Result<String, BuildError> {
        let staging = self.cache_dir.join("build").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&staging)
            .map_err(|e| BuildError::Internal(format!("creating {}: {e}", staging.display())))?;
        let cleanup = scopeguard(staging.clone());
        let cfg = BoxConfig {
            argv: compile.to_vec(),
            files: vec![(tc.source_name.to_string(), source.to_string())],
            collect: tc.artefacts.clone(),
            collect_to: Some(staging.clone()),
            cpu_ms: COMPILE_CPU_MS,
            wall_ms: COMPILE_WALL_MS,
            memory_kb: COMPILE_MEMORY_KB,
            rlimit_data: tc.language != "java",
            processes: COMPILE_PROCESSES,
            box_mb: 256,
            ..base.clone()
        };
        let run = run_box(&self.exe, &cfg, COMPILE_OUTPUT, false, cancel)
            .await
            .map_err(BuildError::Internal)?;
        if let Some(e) = &run.result.internal_error {
            return Err(BuildError::Internal(e.clone()));
        }
        let mut output = text(&run.stdout);
        output.push_str(&text(&run.stderr));
        let r = &run.result;
        let failure = if r.oom_killed {
            Some("the compiler exceeded its memory limit")
        } else if r.cpu_exceeded || r.wall_exceeded {
            Some("the compiler exceeded its time limit")
        } else if r.signal.is_some() || r.exit_code != Some(0) {
            Some("")
        } else if r.collected.is_empty() {
            Some("the compiler produced no program")
        } else {
            None
        };
        if let Some(why) = failure {
            if !why.is_empty() {
                if !output.is_empty() && !output.ends_with('\n') {
                    output.push('\n');
                }
                output.push_str(why);
            }
            return Err(BuildError::Compile(output, run.result));
        }
        let _ = std::fs::write(staging.join(".compile_output"), &output);
        std::fs::write(staging.join(".ok"), b"")
            .map_err(|e| BuildError::Internal(e.to_string()))?;
        if std::fs::rename(&staging, build).is_err() && !build.join(".ok").exists() {
            return Err(BuildError::Internal(format!(
                "could not store the build in {}",
                build.display()
            )));
        }
        drop(cleanup);
        Ok(output)
    }
}

/// The answer for a source that does not compile.
fn compile_error(output: String, r: &BoxResult, tests: Option<usize>) -> serde_json::Value {
    let out = CodeOutput {
        verdict: "compile_error".into(),
        compile_output: output,
        passed: tests.map(|_| 0),
        total: tests.map(|n| n as u32),
        tests: tests.map(|_| Vec::new()),
        run: tests.is_none().then(|| RunFields {
            exit_code: r.exit_code,
            signal: r.signal,
            ..RunFields::default()
        }),
        time_ms: r.cpu_ms,
        wall_ms: r.wall_ms,
        memory_kb: r.memory_kb,
        ..CodeOutput::default()
    };
    serde_json::to_value(out).unwrap_or_else(|e| internal(&e.to_string(), ""))
}

/// The task's answer from its judged cases, within [`MAX_RESULT_BYTES`].
fn assemble(
    judged: Vec<Judged>,
    with_tests: bool,
    total: usize,
    compile_output: String,
) -> serde_json::Value {
    let verdict = judged
        .iter()
        .find(|j| j.verdict != "accepted")
        .map_or("accepted", |j| j.verdict);
    let message = judged
        .iter()
        .find(|j| j.verdict == "internal_error")
        .map(|j| j.comment.clone());
    let mut out = CodeOutput {
        verdict: verdict.into(),
        message,
        compile_output,
        time_ms: judged.iter().map(|j| j.result.cpu_ms).max().unwrap_or(0),
        wall_ms: judged.iter().map(|j| j.result.wall_ms).max().unwrap_or(0),
        memory_kb: judged.iter().map(|j| j.result.memory_kb).max().unwrap_or(0),
        ..CodeOutput::default()
    };
    let streams: Vec<(Stream, Stream)> = judged
        .iter()
        .map(|j| (j.stdout.clone(), j.stderr.clone()))
        .collect();
    let runs = |fields: Vec<RunFields>| -> Vec<RunFields> {
        fields
            .into_iter()
            .zip(&judged)
            .map(|(f, j)| RunFields {
                exit_code: j.result.exit_code,
                signal: j.result.signal,
                ..f
            })
            .collect()
    };
    // Measure everything but the streams, then share what is left of the
    // result's limit among them (64 bytes each for their flags).
    let empty = runs(judged.iter().map(|_| RunFields::default()).collect());
    if with_tests {
        out.passed = Some(judged.iter().filter(|j| j.verdict == "accepted").count() as u32);
        out.total = Some(total as u32);
        out.tests = Some(tests_of(&judged, empty));
    } else {
        out.run = empty.into_iter().next();
    }
    let fixed = serde_json::to_vec(&out).map_or(0, |v| v.len());
    let budget = MAX_RESULT_BYTES.saturating_sub(fixed + 128 * streams.len() + 1024);
    let filled = runs(judge::fill(&streams, budget));
    if with_tests {
        out.tests = Some(tests_of(&judged, filled));
    } else {
        out.run = filled.into_iter().next();
    }
    serde_json::to_value(out).unwrap_or_else(|e| internal(&e.to_string(), ""))
}

fn tests_of(judged: &[Judged], runs: Vec<RunFields>) -> Vec<TestResult> {
    judged
        .iter()
        .zip(runs)
        .map(|(j, run)| TestResult {
            name: j.name.clone(),
            verdict: j.verdict.into(),
            comment: j.comment.clone(),
            run,
            time_ms: j.result.cpu_ms,
            wall_ms: j.result.wall_ms,
            memory_kb: j.result.memory_kb,
        })
        .collect()
}

/// Removes a staging directory when dropped (if it still exists).
struct StagingGuard(PathBuf);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scopeguard(p: PathBuf) -> StagingGuard {
    StagingGuard(p)
}

#[async_trait]
impl Handler for CodeHandler {
    async fn run(&self, ctx: TaskContext) -> TaskOutcome {
        let input: CodeInput = serde_json::from_value(ctx.input.clone())
            .map_err(|e| TaskFailure::bad_input(format!("bad `code` input: {e}")))?;
        self.handle(input, &ctx.cancel).await
    }
}

/// Run `/bin/true` in a box without an async runtime (for the check report).
pub(crate) fn probe_blocking(exe: &Path) -> Result<BoxResult, String> {
    let mnt = std::env::temp_dir().join("brigade-sandbox-probe-mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| format!("creating {}: {e}", mnt.display()))?;
    let truth = which("true").unwrap_or_else(|| PathBuf::from("/usr/bin/true"));
    let cfg = BoxConfig {
        argv: vec![s(&real(&truth))],
        env: base_env(),
        ro_binds: common_binds(),
        mount_point: mnt,
        cpu_ms: 2_000,
        wall_ms: 5_000,
        memory_kb: 65_536,
        rlimit_data: true,
        processes: 8,
        fsize_kb: 1024,
        nofile: 64,
        box_mb: 1,
        ..BoxConfig::default()
    };
    let (mut ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("sandbox-exec")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    control_fd_setup(&mut cmd, theirs.as_raw_fd());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {} sandbox-exec: {e}", exe.display()))?;
    drop(theirs);
    ours.write_all(&frame(&cfg)?).map_err(|e| e.to_string())?;
    let _ = ours.set_read_timeout(Some(Duration::from_secs(20)));
    let mut answer = Vec::new();
    let read = ours.read_to_end(&mut answer);
    drop(ours);
    let status = child.wait();
    read.map_err(|e| format!("reading the helper's answer: {e}"))?;
    serde_json::from_slice(&answer)
        .map_err(|e| format!("the helper gave no answer ({e}); exit status {status:?}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time_direct(argv: &[String], dir: &Path) -> Result<f64, String> {
    let t = Instant::now();
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!("{} failed: {:?}", argv[0], out.status));
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Per-run overhead of the sandbox: a Python and a C hello world through the
/// sandbox (C from the build cache, so compile time is not counted) against
/// the same interpreter / binary run directly, `runs` times each. Returns
/// `key=value` lines (milliseconds).
pub async fn bench_code(brigade_exe: &Path, runs: u32) -> Result<String, String> {
    let runs = runs.max(1);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let handler =
        CodeHandler::new(brigade_exe, tmp.path().join("cache")).map_err(|e| e.to_string())?;
    // The same boxes, each making its own network namespace (as before the pool).
    let mut fresh_handler =
        CodeHandler::new(brigade_exe, tmp.path().join("cache")).map_err(|e| e.to_string())?;
    fresh_handler.fresh_netns = true;
    let cancel = CancellationToken::new();
    let mut out = String::new();
    let cases = [
        ("python", "print('hello')\n"),
        (
            "c",
            "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n",
        ),
    ];
    for (lang, src) in cases {
        let Some(tc) = toolchains().iter().find(|t| t.language == lang) else {
            out.push_str(&format!("code_{lang}_skipped=no_toolchain\n"));
            continue;
        };
        let input = || CodeInput {
            language: Some(lang.into()),
            source: Some(src.into()),
            expected_output: Some("hello".into()),
            ..CodeInput::default()
        };
        // Warm-up (and the C build).
        let first = handler
            .handle(input(), &cancel)
            .await
            .map_err(|e| e.error.message.clone())?;
        if first["verdict"] != "accepted" {
            return Err(format!("{lang} hello world through the sandbox: {first}"));
        }
        // Direct.
        let dir = tmp.path().join(format!("direct-{lang}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(tc.source_name), src).map_err(|e| e.to_string())?;
        let argv: Vec<String> = if let Some(compile) = &tc.compile {
            time_direct(compile, &dir).await?;
            vec![s(&dir.join("main"))]
        } else {
            let mut a = vec![tc.run[0].clone()];
            a.extend(tc.run[1..tc.run.len() - 1].iter().cloned());
            a.push(s(&dir.join(tc.source_name)));
            a
        };
        time_direct(&argv, &dir).await?;
        // Interleaved, so a neighbour's load falls on all three alike.
        let (mut boxed, mut fresh, mut direct) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            for (h, into) in [(&handler, &mut boxed), (&fresh_handler, &mut fresh)] {
                let t = Instant::now();
                let v = h
                    .handle(input(), &cancel)
                    .await
                    .map_err(|e| e.error.message.clone())?;
                if v["verdict"] != "accepted" {
                    return Err(format!("{lang} run through the sandbox: {v}"));
                }
                into.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            direct.push(time_direct(&argv, &dir).await?);
        }
        fresh.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "code_{lang}_sandboxed_fresh_netns_ms_p50={:.2}\n",
            percentile(&fresh, 0.5)
        ));
        boxed.sort_by(f64::total_cmp);
        direct.sort_by(f64::total_cmp);
        let (b50, d50) = (percentile(&boxed, 0.5), percentile(&direct, 0.5));
        out.push_str(&format!("code_{lang}_runs={runs}\n"));
        out.push_str(&format!("code_{lang}_sandboxed_ms_p50={b50:.2}\n"));
        out.push_str(&format!(
            "code_{lang}_sandboxed_ms_p90={:.2}\n",
            percentile(&boxed, 0.9)
        ));
        out.push_str(&format!("code_{lang}_direct_ms_p50={d50:.2}\n"));
        out.push_str(&format!(
            "code_{lang}_direct_ms_p90={:.2}\n",
            percentile(&direct, 0.9)
        ));
        out.push_str(&format!("code_{lang}_overhead_ms_p50={:.2}\n", b50 - d50));
        out.push_str(&format!(
            "code_{lang}_overhead_ratio={:.2}\n",
            if d50 > 0.0 { b50 / d50 } else { 0.0 }
        ));
    }
    Ok(out)
}
