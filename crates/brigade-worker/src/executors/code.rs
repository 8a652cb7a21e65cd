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
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
        let (exe, prefix) = match command_lines(
            &py,
            &[
                "-c",
                "import sys;print(sys.executable);print(sys.base_prefix)",
            ],
        ) {
            Some(l) if l.len() >= 2 => (PathBuf::from(&l[0]), PathBuf::from(&l[1])),
            _ => (real(&py), PathBuf::from("/usr")),
        };
        found.push(Toolchain {
            language: "python",
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
        Ok(Self {
            exe: brigade_exe.into(),
            cache_dir,
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

#[derive(Debug, Deserialize)]
struct CodeInput {
    language: Option<String>,
    source: Option<String>,
    #[serde(default)]
    stdin: String,
    #[serde(default)]
    args: Vec<String>,
    expected_output: Option<String>,
    #[serde(default)]
    limits: LimitsInput,
}

#[derive(Debug, Default, Deserialize)]
struct LimitsInput {
    cpu_ms: Option<u64>,
    wall_ms: Option<u64>,
    memory_kb: Option<u64>,
    processes: Option<u64>,
    output_kb: Option<u64>,
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

impl LimitsInput {
    fn resolve(&self) -> Result<Limits, String> {
        let pick = |name: &str, v: Option<u64>, (def, max): (u64, u64)| -> Result<u64, String> {
            match v {
                None => Ok(def),
                Some(v) if (1..=max).contains(&v) => Ok(v),
                Some(v) => Err(format!("limits.{name} = {v} is out of range 1..={max}")),
            }
        };
        Ok(Limits {
            cpu_ms: pick("cpu_ms", self.cpu_ms, CPU_MS)?,
            wall_ms: pick("wall_ms", self.wall_ms, WALL_MS)?,
            memory_kb: pick("memory_kb", self.memory_kb, MEMORY_KB)?,
            processes: pick("processes", self.processes, PROCESSES)?,
            output_kb: pick("output_kb", self.output_kb, OUTPUT_KB)?,
        })
    }
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
    // The helper waits for this close before it exits.
    drop((rd, wr));
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let result: BoxResult = serde_json::from_slice(&answer)
        .map_err(|e| format!("the sandbox helper gave no answer ({e}); exit status {status:?}"))?;
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

/// Trailing whitespace of each line and of the whole text is ignored.
fn normalize(s: &str) -> String {
    s.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
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

/// The verdict of a finished run.
fn verdict(run: &BoxRun, limits: &Limits, expected: Option<&str>) -> &'static str {
    let r = &run.result;
    if run.output_exceeded || r.signal == Some(libc::SIGXFSZ) {
        "output_limit"
    } else if r.oom_killed {
        "memory_limit"
    } else if r.cpu_exceeded || r.wall_exceeded || r.cpu_ms > limits.cpu_ms {
        "time_limit"
    } else if r.signal.is_some() || r.exit_code != Some(0) {
        "runtime_error"
    } else {
        match expected {
            Some(exp) if normalize(exp) != normalize(&text(&run.stdout)) => "wrong_answer",
            _ => "accepted",
        }
    }
}

impl CodeHandler {
    async fn handle(&self, input: CodeInput, cancel: &CancellationToken) -> TaskOutcome {
        let Some(language) = input.language.as_deref() else {
            return Err(TaskFailure::bad_input("`language` is missing"));
        };
        let Some(source) = input.source.as_deref() else {
            return Err(TaskFailure::bad_input("`source` is missing"));
        };
        const KNOWN: [&str; 7] = ["python", "c", "cpp", "java", "rust", "javascript", "bash"];
        let Some(tc) = toolchains().iter().find(|t| t.language == language) else {
            return Err(TaskFailure::bad_input(if KNOWN.contains(&language) {
                format!("language `{language}` has no toolchain on this worker")
            } else {
                format!(
                    "unknown language `{language}` (known: {})",
                    KNOWN.join(", ")
                )
            }));
        };
        let limits = input.limits.resolve().map_err(TaskFailure::bad_input)?;
        let mut binds = common_binds();
        binds.extend(tc.extra_binds.iter().cloned());
        let managed = tc.is_managed_runtime();
        let base = BoxConfig {
            env: base_env(),
            ro_binds: binds,
            mount_point: self.mount_point(),
            fsize_kb: 64 * 1024,
            nofile: 256,
            ..BoxConfig::default()
        };

        // Compile (or find the cached build).
        let mut compile_output = String::new();
        let mut copy_in = Vec::new();
        if let Some(compile) = &tc.compile {
            let key = sha256_hex(&[
                language.as_bytes(),
                compile.join("\0").as_bytes(),
                source.as_bytes(),
            ]);
            let build = self
                .cache_dir
                .join("build")
                .join(format!("{language}-{key}"));
            if !build.join(".ok").exists() {
                match self
                    .compile(tc, compile, source, &base, &build, cancel)
                    .await
                {
                    Ok(Ok(out)) => compile_output = out,
                    Ok(Err(value)) => return Ok(value),
                    Err(e) => return Ok(internal(&e, "")),
                }
            } else if let Ok(out) = std::fs::read_to_string(build.join(".compile_output")) {
                compile_output = out;
            }
            let Ok(entries) = std::fs::read_dir(&build) else {
                return Ok(internal(
                    "the compiled program vanished from the cache",
                    &compile_output,
                ));
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    copy_in.push((e.path(), name));
                }
            }
        }

        let threads = if managed { RUNTIME_THREADS } else { 0 };
        let cfg = BoxConfig {
            argv: tc.run_argv(limits.memory_kb, &input.args),
            files: if tc.compile.is_none() {
                vec![(tc.source_name.to_string(), source.to_string())]
            } else {
                Vec::new()
            },
            copy_in,
            stdin: input.stdin.clone(),
            cpu_ms: limits.cpu_ms,
            wall_ms: limits.wall_ms,
            memory_kb: limits.memory_kb,
            rlimit_data: !managed,
            stack_kb: if managed { 0 } else { limits.memory_kb },
            processes: limits.processes + threads,
            // Below the tmpfs size, so a file flood ends in SIGXFSZ.
            fsize_kb: 16 * 1024,
            box_mb: 64,
            ..base
        };
        let out_cap = (limits.output_kb * 1024) as usize;
        let run = match run_box(&self.exe, &cfg, out_cap, true, cancel).await {
            Ok(r) => r,
            Err(e) if cancel.is_cancelled() => {
                return Err(TaskFailure::retryable(format!("cancelled: {e}")));
            }
            Err(e) => return Ok(internal(&e, &compile_output)),
        };
        if let Some(e) = &run.result.internal_error {
            return Ok(internal(e, &compile_output));
        }
        let v = verdict(&run, &limits, input.expected_output.as_deref());
        let r = &run.result;
        Ok(json!({
            "verdict": v,
            "exit_code": r.exit_code,
            "signal": r.signal,
            "stdout": text(&run.stdout),
            "stderr": text(&run.stderr),
            "compile_output": compile_output,
            "time_ms": r.cpu_ms,
            "wall_ms": r.wall_ms,
            "memory_kb": r.memory_kb,
        }))
    }

    /// Compile into the cache. `Ok(Ok(output))`: built; `Ok(Err(value))`:
    /// the task's answer (compile error); `Err`: the sandbox failed.
    async fn compile(
        &self,
        tc: &Toolchain,
        compile: &[String],
        source: &str,
        base: &BoxConfig,
        build: &Path,
        cancel: &CancellationToken,
    ) -> Result<Result<String, serde_json::Value>, String> {
        let staging = self.cache_dir.join("build").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("creating {}: {e}", staging.display()))?;
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
        let run = run_box(&self.exe, &cfg, COMPILE_OUTPUT, false, cancel).await?;
        if let Some(e) = &run.result.internal_error {
            return Err(e.clone());
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
            return Ok(Err(json!({
                "verdict": "compile_error",
                "exit_code": r.exit_code,
                "signal": r.signal,
                "stdout": "",
                "stderr": "",
                "compile_output": output,
                "time_ms": r.cpu_ms,
                "wall_ms": r.wall_ms,
                "memory_kb": r.memory_kb,
            })));
        }
        let _ = std::fs::write(staging.join(".compile_output"), &output);
        std::fs::write(staging.join(".ok"), b"").map_err(|e| e.to_string())?;
        if std::fs::rename(&staging, build).is_err() && !build.join(".ok").exists() {
            return Err(format!("could not store the build in {}", build.display()));
        }
        drop(cleanup);
        Ok(Ok(output))
    }
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
            stdin: String::new(),
            args: Vec::new(),
            expected_output: Some("hello".into()),
            limits: LimitsInput::default(),
        };
        // Warm-up (and the C build).
        let first = handler
            .handle(input(), &cancel)
            .await
            .map_err(|e| e.error.message.clone())?;
        if first["verdict"] != "accepted" {
            return Err(format!("{lang} hello world through the sandbox: {first}"));
        }
        let mut boxed = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let v = handler
                .handle(input(), &cancel)
                .await
                .map_err(|e| e.error.message.clone())?;
            if v["verdict"] != "accepted" {
                return Err(format!("{lang} run through the sandbox: {v}"));
            }
            boxed.push(t.elapsed().as_secs_f64() * 1000.0);
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
        let mut direct = Vec::new();
        for _ in 0..runs {
            direct.push(time_direct(&argv, &dir).await?);
        }
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
