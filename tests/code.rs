//! End-to-end tests of the `code` kind: the real `brigade sandbox-exec`
//! helper, driven through `CodeHandler` (no server needed). Needs root for
//! the full set of protections (as on our machines); a language whose
//! toolchain is missing is skipped with a note.

// Tests: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use brigade_worker::executors::code::CodeHandler;
use brigade_worker::sandbox::{SANDBOX_SLOTS, SANDBOX_UID_BASE, detect_languages};
use brigade_worker::{Handler, TaskContext, TaskFailure};
use serde_json::{Value, json};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

/// Runs hold it shared; the leftover checks take it exclusively, so they see
/// a quiet host.
static QUIET: RwLock<()> = RwLock::const_new(());

fn cache_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("brigade-code-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    })
}

fn handler() -> &'static CodeHandler {
    static H: OnceLock<CodeHandler> = OnceLock::new();
    H.get_or_init(|| CodeHandler::new(brigade_testkit::bin(), cache_dir()).unwrap())
}

fn has(lang: &str) -> bool {
    let ok = detect_languages().iter().any(|l| l == lang);
    if !ok {
        eprintln!("note: skipping {lang}: no toolchain on this host");
    }
    ok
}

fn ctx(input: Value) -> TaskContext {
    TaskContext {
        id: "t".into(),
        job_id: "j".into(),
        kind: "code".into(),
        input,
        attempt: 1,
        timeout: Duration::from_secs(120),
        cancel: CancellationToken::new(),
        log: brigade_worker::handler::TaskLog::discard(),
        parents: Vec::new(),
        parents_truncated: false,
        flow: brigade_worker::TaskFlow::default(),
    }
}

async fn try_run(input: Value) -> Result<Value, TaskFailure> {
    let _g = QUIET.read().await;
    handler().run(ctx(input)).await
}

async fn run(input: Value) -> Value {
    try_run(input.clone())
        .await
        .unwrap_or_else(|e| panic!("task failed: {e:?} for {input}"))
}

async fn run_src(lang: &str, source: &str, stdin: &str, limits: Value) -> Value {
    run(json!({"language": lang, "source": source, "stdin": stdin, "limits": limits})).await
}

fn verdict(v: &Value) -> &str {
    v["verdict"].as_str().unwrap_or("?")
}

/// What this test binary's runs left behind: processes of sandbox uids and
/// cgroups of slots that no live box holds (another process's box running
/// now is not a leftover; a slot swept when this process started was not
/// ours), staging directories and mounts of our cache.
async fn assert_nothing_left() {
    let _g = QUIET.write().await;
    // The kernel finishes tearing down a PID namespace asynchronously.
    let mut strays = Vec::new();
    for _ in 0..50 {
        strays = sandbox_processes();
        if strays.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(strays.is_empty(), "sandbox processes left: {strays:?}");
    let stale = stale_cgroups();
    assert!(stale.is_empty(), "cgroups left of dead boxes: {stale:?}");
    let build = cache_dir().join("build");
    if let Ok(rd) = std::fs::read_dir(&build) {
        let tmp: Vec<_> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(tmp.is_empty(), "staging dirs left: {tmp:?}");
    }
    let mnt = cache_dir().join(".mnt");
    if let Ok(rd) = std::fs::read_dir(&mnt) {
        assert_eq!(rd.count(), 0, "the mount point on the host is not empty");
    }
}

/// Whether no box holds slot `n` now (we hold its lock for an instant).
fn slot_is_free(n: u32) -> bool {
    brigade_worker::sandbox::try_lock_slot(n).is_some()
}

/// Cgroup directories of slots no box holds.
fn stale_cgroups() -> Vec<PathBuf> {
    let mut left = Vec::new();
    for ctrl in ["memory", "pids", "cpuacct"] {
        let dir = PathBuf::from("/sys/fs/cgroup")
            .join(ctrl)
            .join(brigade_worker::sandbox::CGROUP_PARENT);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let slot = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("slot-"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = slot
                && e.path().is_dir()
                && slot_is_free(n)
            {
                left.push(e.path());
            }
        }
    }
    left
}

/// Processes running as the uid of a slot that no box holds.
fn sandbox_processes() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if let Some(uid) = uid
            && (SANDBOX_UID_BASE..SANDBOX_UID_BASE + SANDBOX_SLOTS).contains(&uid)
            && slot_is_free(uid - SANDBOX_UID_BASE)
        {
            found.push(format!("pid {} uid {uid}", e.file_name().to_string_lossy()));
        }
    }
    found
}

struct Lang {
    name: &'static str,
    hello: &'static str,
    echo: &'static str,
    exit3: &'static str,
    /// (source, expected signal)
    signal: Option<(&'static str, i32)>,
    compiled: bool,
}

const LANGS: &[Lang] = &[
    Lang {
        name: "python",
        hello: "print('hello')\n",
        echo: "import sys\nsys.stdout.write(sys.stdin.read())\n",
        exit3: "import sys\nsys.exit(3)\n",
        signal: Some((
            "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
            11,
        )),
        compiled: false,
    },
    Lang {
        name: "c",
        hello: "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n",
        echo: "#include <stdio.h>\nint main(void){int c;while((c=getchar())!=EOF)putchar(c);return 0;}\n",
        exit3: "int main(void){return 3;}\n",
        signal: Some(("#include <stdlib.h>\nint main(void){abort();}\n", 6)),
        compiled: true,
    },
    Lang {
        name: "cpp",
        hello: "#include <iostream>\nint main(){std::cout<<\"hello\\n\";}\n",
        echo: "#include <iostream>\nint main(){std::cout<<std::cin.rdbuf();}\n",
        exit3: "int main(){return 3;}\n",
        signal: Some(("int main(){volatile int*p=nullptr;return *p;}\n", 11)),
        compiled: true,
    },
    Lang {
        name: "java",
        hello: "public class Main{public static void main(String[] a){System.out.println(\"hello\");}}\n",
        echo: "public class Main{public static void main(String[] a)throws Exception{System.in.transferTo(System.out);}}\n",
        exit3: "public class Main{public static void main(String[] a){System.exit(3);}}\n",
        signal: None,
        compiled: true,
    },
    Lang {
        name: "rust",
        hello: "fn main(){println!(\"hello\");}\n",
        echo: "fn main(){std::io::copy(&mut std::io::stdin(),&mut std::io::stdout()).unwrap();}\n",
        exit3: "fn main(){std::process::exit(3);}\n",
        signal: Some(("fn main(){std::process::abort();}\n", 6)),
        compiled: true,
    },
    Lang {
        name: "javascript",
        hello: "console.log('hello')\n",
        echo: "process.stdout.write(require('fs').readFileSync(0,'utf8'))\n",
        exit3: "process.exit(3)\n",
        signal: Some(("process.kill(process.pid,'SIGKILL')\n", 9)),
        compiled: false,
    },
    Lang {
        name: "bash",
        hello: "echo hello\n",
        echo: "cat\n",
        exit3: "exit 3\n",
        signal: Some(("kill -SEGV $$\n", 11)),
        compiled: false,
    },
];

async fn language_suite(name: &str) {
    let Some(l) = LANGS.iter().find(|l| l.name == name) else {
        panic!("no programs for {name}");
    };
    if !has(name) {
        return;
    }
    let v = run(json!({"language": name, "source": l.hello, "expected_output": "hello\n\n"})).await;
    assert_eq!(verdict(&v), "accepted", "{name} hello: {v}");
    assert_eq!(v["stdout"], "hello\n");
    assert_eq!(v["exit_code"], 0);

    let v = run(json!({"language": name, "source": l.hello, "expected_output": "goodbye"})).await;
    assert_eq!(verdict(&v), "wrong_answer", "{name}: {v}");

    let input = "line one\nline two\n";
    let v = run_src(name, l.echo, input, json!({})).await;
    assert_eq!(verdict(&v), "accepted", "{name} echo: {v}");
    assert_eq!(v["stdout"], input, "{name} echo: {v}");

    let v = run_src(name, l.exit3, "", json!({})).await;
    assert_eq!(verdict(&v), "runtime_error", "{name} exit 3: {v}");
    assert_eq!(v["exit_code"], 3, "{name}: {v}");

    if let Some((src, sig)) = l.signal {
        let v = run_src(name, src, "", json!({})).await;
        assert_eq!(verdict(&v), "runtime_error", "{name} signal: {v}");
        assert_eq!(v["signal"], sig, "{name} signal: {v}");
    }
    if l.compiled {
        let v = run_src(name, "this is not a program {{{\n", "", json!({})).await;
        assert_eq!(verdict(&v), "compile_error", "{name}: {v}");
        assert!(
            !v["compile_output"].as_str().unwrap_or("").is_empty(),
            "{name}: {v}"
        );
        // Second submission of the same source: from the build cache.
        let t = std::time::Instant::now();
        let v = run(json!({"language": name, "source": l.hello})).await;
        assert_eq!(verdict(&v), "accepted", "{name}: {v}");
        eprintln!("{name}: cached hello in {:?}", t.elapsed());
    }
}

#[tokio::test]
async fn python() {
    language_suite("python").await;
}
#[tokio::test]
async fn c() {
    language_suite("c").await;
}
#[tokio::test]
async fn cpp() {
    language_suite("cpp").await;
}
#[tokio::test]
async fn java() {
    language_suite("java").await;
}
#[tokio::test]
async fn rust() {
    language_suite("rust").await;
}
#[tokio::test]
async fn javascript() {
    language_suite("javascript").await;
}
#[tokio::test]
async fn bash() {
    language_suite("bash").await;
}

#[tokio::test]
async fn bad_input_is_a_failed_task() {
    let e = try_run(json!({"language": "cobol", "source": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.error.kind, brigade_api::ErrorKind::BadInput);
    let e = try_run(json!({"language": "python"})).await.unwrap_err();
    assert_eq!(e.error.kind, brigade_api::ErrorKind::BadInput);
    let e = try_run(json!({"language": "python", "source": "", "limits": {"cpu_ms": 999999999}}))
        .await
        .unwrap_err();
    assert_eq!(e.error.kind, brigade_api::ErrorKind::BadInput);
}

#[tokio::test]
async fn environment_is_clean() {
    if !has("python") {
        return;
    }
    // SAFETY: tests in this binary don't read the environment concurrently... much.
    let v = run_src(
        "python",
        "import os\nprint(sorted(os.environ))\nprint(os.getuid(), os.getcwd())\n",
        "",
        json!({}),
    )
    .await;
    assert_eq!(verdict(&v), "accepted", "{v}");
    let out = v["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("['HOME', 'LANG', 'PATH', 'TMPDIR']"),
        "{out}"
    );
    assert!(out.contains("/box"), "{out}");
}

#[tokio::test]
async fn fork_bomb() {
    if !has("c") {
        return;
    }
    let src = "#include <unistd.h>\nint main(void){for(;;)fork();}\n";
    let v = run_src("c", src, "", json!({"cpu_ms": 1000, "wall_ms": 3000})).await;
    assert!(
        ["time_limit", "runtime_error"].contains(&verdict(&v)),
        "fork bomb: {v}"
    );
    assert!(v["wall_ms"].as_u64().unwrap() < 5000, "{v}");
    assert_nothing_left().await;
}

#[tokio::test]
async fn cpu_loop_is_time_limit() {
    if !has("c") {
        return;
    }
    let v = run_src(
        "c",
        "int main(void){for(;;);}\n",
        "",
        json!({"cpu_ms": 500}),
    )
    .await;
    assert_eq!(verdict(&v), "time_limit", "{v}");
    let t = v["time_ms"].as_u64().unwrap();
    assert!((500..2000).contains(&t), "{v}");
    assert_nothing_left().await;
}

#[tokio::test]
async fn threads_spinning_are_time_limit() {
    if !has("python") {
        return;
    }
    // CPU of the whole tree counts, not just one process.
    let src =
        "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        break\nwhile True: pass\n";
    let v = run_src("python", src, "", json!({"cpu_ms": 600, "wall_ms": 5000})).await;
    assert_eq!(verdict(&v), "time_limit", "{v}");
    assert!(v["wall_ms"].as_u64().unwrap() < 3000, "{v}");
    assert_nothing_left().await;
}

#[tokio::test]
async fn sleeping_past_the_wall_limit() {
    if !has("python") {
        return;
    }
    let v = run_src(
        "python",
        "import time\ntime.sleep(30)\n",
        "",
        json!({"wall_ms": 800}),
    )
    .await;
    assert_eq!(verdict(&v), "time_limit", "{v}");
    let w = v["wall_ms"].as_u64().unwrap();
    assert!((800..2500).contains(&w), "{v}");
    assert_nothing_left().await;
}

#[tokio::test]
async fn memory_hog() {
    if has("c") {
        let src = "#include <stdlib.h>\n#include <string.h>\nint main(void){for(;;){char*p=malloc(1<<20);if(!p)return 42;memset(p,1,1<<20);}}\n";
        let v = run_src("c", src, "", json!({"memory_kb": 65536})).await;
        assert_eq!(verdict(&v), "memory_limit", "c hog: {v}");
    }
    if has("python") {
        let src = "a=[]\nwhile True: a.append(bytearray(1<<20))\n";
        let v = run_src("python", src, "", json!({"memory_kb": 65536})).await;
        assert!(
            ["memory_limit", "runtime_error"].contains(&verdict(&v)),
            "python hog: {v}"
        );
    }
    if has("java") {
        let src = "import java.util.*;public class Main{public static void main(String[] a){List<long[]> l=new ArrayList<>();for(;;)l.add(new long[1<<17]);}}\n";
        let v = run_src("java", src, "", json!({"memory_kb": 131072})).await;
        // The JVM stops at its -Xmx heap (OutOfMemoryError) or the cgroup
        // kills it: either way the program ran out of memory.
        assert_eq!(verdict(&v), "memory_limit", "java hog: {v}");
    }
    if has("javascript") {
        let src = "const a=[];for(;;)a.push(new Array(1<<16).fill(1.5));\n";
        let v = run_src("javascript", src, "", json!({"memory_kb": 131072})).await;
        // V8 stops at --max-old-space-size ("Reached heap limit") and aborts.
        assert_eq!(verdict(&v), "memory_limit", "node hog: {v}");
    }
    assert_nothing_left().await;
}

#[tokio::test]
async fn output_flood() {
    if !has("python") {
        return;
    }
    let src = "while True: print('x' * 1000)\n";
    let v = run_src("python", src, "", json!({"output_kb": 64})).await;
    assert_eq!(verdict(&v), "output_limit", "{}", v["message"]);
    assert_eq!(v["stdout"].as_str().unwrap().len(), 64 * 1024);
    assert!(v["wall_ms"].as_u64().unwrap() < 3000);
    assert_nothing_left().await;
}

#[tokio::test]
async fn file_flood_is_output_limit_or_error() {
    if !has("c") {
        return;
    }
    // A file larger than RLIMIT_FSIZE: SIGXFSZ.
    let src = "#include <stdio.h>\nint main(void){FILE*f=fopen(\"big\",\"w\");static char b[1<<20];for(;;)fwrite(b,1,sizeof b,f);}\n";
    let v = run_src("c", src, "", json!({})).await;
    assert!(
        ["output_limit", "runtime_error"].contains(&verdict(&v)),
        "{v}"
    );
    assert_nothing_left().await;
}

#[tokio::test]
async fn no_network() {
    if !has("python") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let src = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)\n"
    );
    let v = run_src("python", &src, "", json!({})).await;
    assert_eq!(verdict(&v), "accepted", "{v}");
    assert!(v["stdout"].as_str().unwrap().starts_with("blocked"), "{v}");
    assert!(listener.accept().is_err(), "the sandbox reached the host");
}

#[tokio::test]
async fn cannot_write_outside_its_dir() {
    if !has("python") {
        return;
    }
    let tag = format!("brigade-escape-{}", std::process::id());
    let src = format!(
        "import os\nfor p in ['/etc/{tag}', '/usr/{tag}', '/{tag}', '/tmp/{tag}', '/box/{tag}', '/proc/{tag}']:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n    except OSError as e:\n        print('refused', p, e.errno)\n"
    );
    let v = run_src("python", &src, "", json!({})).await;
    assert_eq!(verdict(&v), "accepted", "{v}");
    let out = v["stdout"].as_str().unwrap();
    for p in ["/etc/", "/usr/", "/", "/proc/"] {
        assert!(out.contains(&format!("refused {p}{tag}")), "{p}: {out}");
    }
    for p in ["/etc", "/usr", "/", "/tmp", "/root"] {
        assert!(
            !PathBuf::from(p).join(&tag).exists(),
            "{p}/{tag} on the host"
        );
    }
    assert!(!cache_dir().join(".mnt").join("box").join(&tag).exists());
    // The host's own files are not there to read either.
    let v = run_src(
        "python",
        "import os\nprint(os.path.exists('/root/.cargo'), os.path.exists('/home'), os.path.exists('/work'))\n",
        "",
        json!({}),
    )
    .await;
    assert_eq!(v["stdout"], "False False False\n", "{v}");
}

#[tokio::test]
async fn compile_bombs() {
    if has("c") {
        let v = run_src(
            "c",
            "#include \"/dev/random\"\nint main(void){}\n",
            "",
            json!({}),
        )
        .await;
        assert!(
            ["compile_error", "time_limit"].contains(&verdict(&v)),
            "/dev/random include: {v}"
        );
    }
    if has("cpp") {
        // Exponential template instantiation.
        let src = "template<int N> struct F { typedef typename F<N-1>::T T1; typedef F<N-1> A; typedef F<N-2> B; enum { v = A::v + B::v }; typedef int T; };\n\
                   template<> struct F<0> { enum { v = 1 }; typedef int T; };\n\
                   template<> struct F<1> { enum { v = 1 }; typedef int T; };\n\
                   template<int N, int M> struct G { enum { v = G<N-1, M>::v + G<N, M-1>::v }; };\n\
                   template<int M> struct G<0, M> { enum { v = 1 }; };\n\
                   template<int N> struct G<N, 0> { enum { v = 1 }; };\n\
                   int main() { return G<3000, 3000>::v; }\n";
        let t = std::time::Instant::now();
        let v = run_src("cpp", src, "", json!({})).await;
        assert!(
            ["compile_error", "time_limit"].contains(&verdict(&v)),
            "template bomb: {v}"
        );
        assert!(t.elapsed() < Duration::from_secs(45));
    }
    assert_nothing_left().await;
}

#[tokio::test]
async fn daemonized_child_is_killed() {
    if !has("c") {
        return;
    }
    let src = "#include <stdio.h>\n#include <unistd.h>\nint main(void){\n  if(fork()==0){setsid();if(fork()==0){for(;;)sleep(1);}return 0;}\n  puts(\"parent done\");fflush(stdout);return 0;}\n";
    let t = std::time::Instant::now();
    let v = run_src("c", src, "", json!({"wall_ms": 10000})).await;
    assert_eq!(verdict(&v), "accepted", "{v}");
    assert_eq!(v["stdout"], "parent done\n");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the run hung on the daemon"
    );
    assert_nothing_left().await;
}

#[tokio::test]
async fn cancellation_kills_the_box() {
    if !has("python") {
        return;
    }
    let cancel = CancellationToken::new();
    let mut c = ctx(
        json!({"language": "python", "source": "import time\ntime.sleep(60)\n", "limits": {"wall_ms": 60000}}),
    );
    c.cancel = cancel.clone();
    {
        let _g = QUIET.read().await;
        let run = handler().run(c);
        let stop = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cancel.cancel();
        };
        let (r, ()) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(run, stop) })
                .await
                .expect("cancellation did not stop the run");
        assert!(r.is_err(), "{r:?}");
    }
    assert_nothing_left().await;
}

#[tokio::test]
async fn concurrent_runs_are_isolated() {
    if !has("python") {
        return;
    }
    let src = "import os, sys, time\nn = sys.stdin.read().strip()\nopen('/tmp/mark', 'w').write(n)\nopen('/box/mark', 'w').write(n)\ntime.sleep(0.3)\nprint(n, open('/tmp/mark').read(), open('/box/mark').read(), sorted(os.listdir('/box')), len(os.listdir('/proc')) < 6)\n";
    let runs = (0..8).map(|i| {
        let src = src.to_string();
        async move {
            (
                i,
                run_src("python", &src, &format!("{i}\n"), json!({})).await,
            )
        }
    });
    for (i, v) in futures::future::join_all(runs).await {
        assert_eq!(verdict(&v), "accepted", "{v}");
        assert_eq!(
            v["stdout"],
            format!("{i} {i} {i} ['main.py', 'mark'] True\n"),
            "{v}"
        );
    }
    assert_nothing_left().await;
}

#[tokio::test]
async fn check_report_lists_protections() {
    let report = brigade_worker::sandbox::sandbox_check_report(&brigade_testkit::bin());
    eprintln!("{report}");
    assert!(report.contains("probe run: ok"), "{report}");
    for name in [
        "pid namespace",
        "network namespace",
        "read-only root",
        "seccomp",
        "landlock",
    ] {
        assert!(report.contains(name), "{name} missing from {report}");
    }
}

/// `cargo test -p brigade --test code -- --ignored bench --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn bench() {
    let _g = QUIET.write().await;
    let out = brigade_worker::sandbox::bench_code(&brigade_testkit::bin(), 30)
        .await
        .unwrap();
    println!("{out}");
}

#[tokio::test]
async fn seccomp_and_proc() {
    if !has("c") {
        return;
    }
    let src = "#define _GNU_SOURCE\n#include <sched.h>\n#include <stdio.h>\n#include <sys/ptrace.h>\n#include <sys/socket.h>\n#include <unistd.h>\n\
               int main(void){\n printf(\"%d %d %d %d\\n\", unshare(CLONE_NEWUSER), (int)ptrace(PTRACE_TRACEME,0,0,0), socket(AF_NETLINK,SOCK_RAW,0), (int)getpid());\n return 0;}\n";
    let v = run_src("c", src, "", json!({})).await;
    assert_eq!(verdict(&v), "accepted", "{v}");
    // Refused, refused, refused; PID 2 of its own namespace.
    assert_eq!(v["stdout"], "-1 -1 -1 2\n", "{v}");
}

// ---- Faults found by outside testing (issue 16) ----

/// A program that writes 1000 KiB of bytes that are not UTF-8 to stdout and
/// 1000 KiB of text to stderr, inside its 1024 KiB limits, gets its verdict
/// and its output: the result fits the server's limit, the bytes arrive
/// intact as base64, and nothing is silently cut.
#[tokio::test]
async fn large_binary_output_is_carried_whole() {
    if !has("python") {
        return;
    }
    let src = "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4000)\nsys.stderr.write('e' * 1024000)\n";
    let v = run_src("python", src, "", json!({})).await;
    assert_eq!(verdict(&v), "accepted", "{}", v["message"]);
    let size = serde_json::to_vec(&v).unwrap().len();
    assert!(
        size <= brigade_api::MAX_RESULT_BYTES,
        "{size} bytes of result"
    );
    assert_eq!(v["stdout_encoding"], "base64");
    assert!(v.get("stdout_truncated").is_none(), "nothing was cut");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["stdout"].as_str().unwrap())
        .unwrap();
    let want: Vec<u8> = (0..4000).flat_map(|_| 0..=255u8).collect();
    assert!(bytes == want, "stdout did not come back byte for byte");
    assert!(v.get("stderr_encoding").is_none(), "text stays text");
    assert_eq!(v["stderr"].as_str().unwrap().len(), 1_024_000);
}

/// At the largest output limit the carried copy is cut to fit a result,
/// and says so; the verdict is made on the whole output.
#[tokio::test]
async fn output_beyond_a_result_is_cut_explicitly() {
    if !has("python") {
        return;
    }
    let src = "import sys\nsys.stdout.write('x' * (12 << 20))\n";
    let v = run_src(
        "python",
        src,
        "",
        json!({"output_kb": 65536, "wall_ms": 20000}),
    )
    .await;
    assert_eq!(verdict(&v), "accepted", "{}", v["message"]);
    let size = serde_json::to_vec(&v).unwrap().len();
    assert!(size <= brigade_api::MAX_RESULT_BYTES, "{size}");
    assert_eq!(v["stdout_truncated"], true, "the cut is stated");
    assert!(v["stdout"].as_str().unwrap().len() > 7 << 20);
}

/// Threads need only their own stacks: RLIMIT_STACK is 8 MiB whatever
/// `memory_kb` is (glibc sizes each thread's stack by it).
#[tokio::test]
async fn programs_can_start_threads_under_default_limits() {
    if has("cpp") {
        let src = "#include <thread>\n#include <vector>\n#include <atomic>\n#include <cstdio>\nint main(){std::atomic<int> n{0};std::vector<std::thread> v;for(int i=0;i<16;i++)v.emplace_back([&]{n++;});for(auto&t:v)t.join();printf(\"%d\\n\",n.load());}\n";
        let v = run(json!({"language": "cpp", "source": src, "expected_output": "16"})).await;
        assert_eq!(verdict(&v), "accepted", "cpp threads: {v}");
    }
    if has("python") {
        let src = "import threading\nn=[]\nts=[threading.Thread(target=lambda: n.append(1)) for _ in range(16)]\nfor t in ts: t.start()\nfor t in ts: t.join()\nprint(len(n))\n";
        let v = run(json!({"language": "python", "source": src, "expected_output": "16"})).await;
        assert_eq!(verdict(&v), "accepted", "python threads: {v}");
    }
    assert_nothing_left().await;
}

/// A slot whose box died without cleaning up (its cgroups are there, its
/// lock is free) is swept; a slot a live box holds is not touched.
#[tokio::test]
async fn stale_slots_are_swept_and_live_ones_kept() {
    let base = PathBuf::from("/sys/fs/cgroup/pids");
    if unsafe_euid() != 0 || !base.join("cgroup.procs").exists() {
        eprintln!("note: skipping: needs root and cgroup v1 pids");
        return;
    }
    let _g = QUIET.write().await;
    // Two free slots from the top: one we leave "dead", one we hold.
    let mut free = (0..SANDBOX_SLOTS).rev().filter(|&n| slot_is_free(n));
    let (dead, live) = (free.next().unwrap(), free.next().unwrap());
    let held = brigade_worker::sandbox::try_lock_slot(live).unwrap();
    let dir = |n: u32| {
        base.join(brigade_worker::sandbox::CGROUP_PARENT)
            .join(format!("slot-{n}"))
    };
    std::fs::create_dir_all(dir(dead)).unwrap();
    std::fs::create_dir_all(dir(live)).unwrap();
    let swept = brigade_worker::sandbox::sweep_stale_slots();
    assert!(swept.contains(&dead), "{swept:?}");
    assert!(!dir(dead).exists(), "the dead box's cgroup is gone");
    assert!(dir(live).exists(), "a held slot is not swept");
    std::fs::remove_dir(dir(live)).unwrap();
    drop(held);
}

fn unsafe_euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

// ---- Judging ----

/// A sum program in each judged language: reads two integers, prints their sum.
fn sum_program(lang: &str) -> &'static str {
    match lang {
        "python" => "a, b = map(int, input().split())\nprint(a + b)\n",
        "c" => {
            "#include <stdio.h>\nint main(void){long a,b;scanf(\"%ld %ld\",&a,&b);printf(\"%ld\\n\",a+b);return 0;}\n"
        }
        "cpp" => {
            "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<\"\\n\";}\n"
        }
        "java" => {
            "import java.util.*;public class Main{public static void main(String[] x){Scanner s=new Scanner(System.in);long a=s.nextLong(),b=s.nextLong();System.out.println(a+b);}}\n"
        }
        _ => unreachable!(),
    }
}

fn sum_tests() -> Value {
    json!([
        {"name": "small", "stdin": "1 2\n", "expected_output": "3\n"},
        {"name": "negative", "stdin": "-5 3\n", "expected_output": "-2"},
        {"name": "wrong", "stdin": "2 2\n", "expected_output": "5\n"},
        {"name": "big", "stdin": "1000000000 1000000000\n", "expected_output": "2000000000\n"},
    ])
}

async fn judging_suite(lang: &str) {
    if !has(lang) {
        return;
    }
    let src = sum_program(lang);
    let v = run(json!({"language": lang, "source": src, "tests": sum_tests()})).await;
    assert_eq!(verdict(&v), "wrong_answer", "{lang}: {v}");
    assert_eq!(v["passed"], 3, "{lang}: {v}");
    assert_eq!(v["total"], 4);
    let verdicts: Vec<&str> = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["accepted", "accepted", "wrong_answer", "accepted"],
        "{lang}: {v}"
    );
    assert_eq!(v["tests"][2]["name"], "wrong");
    assert_eq!(v["tests"][2]["stdout"], "4\n");
    assert_eq!(v["tests"][2]["comment"], "line 1: expected `5`, got `4`");
    assert!(v.get("stdout").is_none(), "per-test output only: {v}");

    // stop_on_failure: the fourth test does not run.
    let v = run(
        json!({"language": lang, "source": src, "tests": sum_tests(), "stop_on_failure": true}),
    )
    .await;
    assert_eq!(v["tests"].as_array().unwrap().len(), 3, "{lang}: {v}");
    assert_eq!(v["total"], 4);

    // A checker in Python accepts any answer within 1 of the sum.
    let checker = "a, b = map(int, open('input').read().split())\ngot = int(open('output').read())\nif abs(got - (a + b)) <= 1:\n    print('close enough')\nelse:\n    print('off by', got - (a + b))\n    raise SystemExit(1)\n";
    let v = run(
        json!({"language": lang, "source": src, "tests": sum_tests(),
        "checker": {"language": "python", "source": checker}}),
    )
    .await;
    assert_eq!(verdict(&v), "accepted", "{lang} checker: {v}");
    assert_eq!(v["passed"], 4);
    assert_eq!(v["tests"][2]["comment"], "close enough");

    // A compile error is one verdict for all tests.
    if lang != "python" {
        let v =
            run(json!({"language": lang, "source": "not a program {", "tests": sum_tests()})).await;
        assert_eq!(verdict(&v), "compile_error", "{lang}: {v}");
        assert_eq!(v["passed"], 0);
        assert_eq!(v["total"], 4);
    }
}

#[tokio::test]
async fn judging_python() {
    judging_suite("python").await;
}
#[tokio::test]
async fn judging_c() {
    judging_suite("c").await;
}
#[tokio::test]
async fn judging_cpp() {
    judging_suite("cpp").await;
}
#[tokio::test]
async fn judging_java() {
    judging_suite("java").await;
}

#[tokio::test]
async fn compare_modes() {
    if !has("python") {
        return;
    }
    let src = "print('3.14159 x')\nprint('  2')\n";
    let case = |compare: Value, expected: &str| {
        json!({"language": "python", "source": src, "compare": compare,
               "tests": [{"expected_output": expected}]})
    };
    for (compare, expected, want) in [
        (json!("trim"), "3.14159 x\n  2", "accepted"),
        (json!("trim"), "3.14159 x\n2", "wrong_answer"),
        (json!("exact"), "3.14159 x\n  2\n", "accepted"),
        (json!("exact"), "3.14159 x\n  2", "wrong_answer"),
        (json!("tokens"), "3.14159\nx 2", "accepted"),
        (json!("tokens"), "3.1416 x 2", "wrong_answer"),
        (json!({"float": 1e-3}), "3.1416 x 2.0001", "accepted"),
        (json!({"float": 1e-6}), "3.1416 x 2", "wrong_answer"),
    ] {
        let v = run(case(compare.clone(), expected)).await;
        assert_eq!(verdict(&v), want, "{compare} vs {expected:?}: {v}");
    }
    let e = try_run(case(json!("fuzzy"), "")).await.unwrap_err();
    assert_eq!(e.error.kind, brigade_api::ErrorKind::BadInput);
    assert!(e.error.message.contains("compare"), "{}", e.error.message);
}

/// A checker gets the test's input, expected output and the program's
/// output as files; it runs in the sandbox (no network, its own box).
#[tokio::test]
async fn checkers_are_sandboxed_programs() {
    if !has("c") || !has("python") {
        return;
    }
    // A C checker: accepts when the output has as many lines as the input says.
    let checker = "#include <stdio.h>\nint main(void){FILE*i=fopen(\"input\",\"r\"),*o=fopen(\"output\",\"r\");int n=0,c,l=0;fscanf(i,\"%d\",&n);while((c=fgetc(o))!=EOF)l+=c=='\\n';if(l==n){puts(\"ok\");return 0;}printf(\"%d lines, wanted %d\\n\",l,n);return 1;}\n";
    let src = "n = int(input())\nfor i in range(n if n != 3 else 2): print(i)\n";
    let v = run(json!({"language": "python", "source": src,
        "tests": [{"stdin": "2"}, {"stdin": "3"}],
        "checker": {"language": "c", "source": checker}}))
    .await;
    assert_eq!(verdict(&v), "wrong_answer", "{v}");
    assert_eq!(v["tests"][0]["verdict"], "accepted");
    assert_eq!(v["tests"][1]["comment"], "2 lines, wanted 3");
    // The checker has no network either.
    let net = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n    print('network')\nexcept OSError:\n    print('no network')\n";
    let v = run(
        json!({"language": "python", "source": "print(1)", "tests": [{}],
        "checker": {"language": "python", "source": net}}),
    )
    .await;
    assert_eq!(v["tests"][0]["comment"], "no network", "{v}");
    // A checker that crashes is the judge's fault: internal_error, not the program's.
    let v = run(
        json!({"language": "python", "source": "print(1)", "tests": [{}],
        "checker": {"language": "python", "source": "import os\nos.abort()\n"}}),
    )
    .await;
    assert_eq!(verdict(&v), "internal_error", "{v}");
    assert!(
        v["tests"][0]["comment"]
            .as_str()
            .unwrap()
            .contains("checker failed"),
        "{v}"
    );
    let e = try_run(
        json!({"language": "python", "source": "print(1)", "tests": [{}],
        "checker": {"language": "c", "source": "nope {"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.error.kind, brigade_api::ErrorKind::BadInput, "{e:?}");
    assert_nothing_left().await;
}

#[tokio::test]
async fn bad_tests_are_bad_input() {
    let many: Vec<Value> = (0..101).map(|_| json!({})).collect();
    for tests in [json!([]), json!(many), json!([{"name": ""}])] {
        let e = try_run(json!({"language": "python", "source": "", "tests": tests}))
            .await
            .unwrap_err();
        assert_eq!(e.error.kind, brigade_api::ErrorKind::BadInput);
    }
}

/// Tests share one build: the compiler's output is reported once, and the
/// program's build is in the cache once.
#[tokio::test]
async fn tests_share_one_build() {
    if !has("c") {
        return;
    }
    // A unique source, so the build cache cannot have it yet.
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let src = format!(
        "#include <stdio.h>\n#warning built {tag}\nint main(void){{puts(\"x\");return 0;}}\n"
    );
    let tests: Vec<Value> = (0..5).map(|_| json!({"expected_output": "x"})).collect();
    let v = run(json!({"language": "c", "source": src, "tests": tests})).await;
    assert_eq!(verdict(&v), "accepted", "{v}");
    assert_eq!(v["passed"], 5);
    let out = v["compile_output"].as_str().unwrap();
    assert_eq!(
        out.matches(&format!("warning: #warning built {tag}"))
            .count(),
        1,
        "{out}"
    );
    let builds = std::fs::read_dir(cache_dir().join("build"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join(".compile_output"))
                .is_ok_and(|o| o.contains(&format!("built {tag}")))
        })
        .count();
    assert_eq!(builds, 1);
}
