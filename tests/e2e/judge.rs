//! Judging code through the real server and workers: tests, compare modes
//! and checkers in four languages, `GET /v1/languages`, results of any size
//! the executor allows, and a worker killed mid-run leaving nothing behind.

use std::path::PathBuf;

use base64::Engine as _;
use brigade_api::{ErrorKind, JobState, TaskState};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use brigade_testkit::{Cluster, task};

/// Languages of the judging tests whose toolchains this host has.
fn judged_languages() -> Vec<&'static str> {
    let have = brigade_worker::sandbox::detect_languages();
    ["python", "c", "cpp", "java"]
        .into_iter()
        .filter(|l| {
            let ok = have.iter().any(|h| h == l);
            if !ok {
                eprintln!("note: no {l} toolchain here; not judged");
            }
            ok
        })
        .collect()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn code_cluster(server_args: &[&str]) -> Cluster {
    let mut c = Cluster::start_with(server_args).await;
    let cache = c.dir.path().join("code-cache");
    let cache = cache.to_str().unwrap().to_owned();
    c.spawn_worker("judge", 4, &["--code-cache", &cache]);
    c.worker_named("judge").await;
    c
}

fn sum_source(lang: &str) -> &'static str {
    match lang {
        "python" => "a, b = map(float, input().split())\nprint(a / b)\n",
        "c" => {
            "#include <stdio.h>\nint main(void){double a,b;scanf(\"%lf %lf\",&a,&b);printf(\"%.9f\\n\",a/b);return 0;}\n"
        }
        "cpp" => {
            "#include <cstdio>\nint main(){double a,b;std::scanf(\"%lf %lf\",&a,&b);std::printf(\"%.9f\\n\",a/b);}\n"
        }
        "java" => {
            "import java.util.*;public class Main{public static void main(String[] x){Scanner s=new Scanner(System.in);double a=s.nextDouble(),b=s.nextDouble();System.out.printf(\"%.9f%n\",a/b);}}\n"
        }
        _ => unreachable!(),
    }
}

/// Division to 1e-6 in four languages; the third test expects a wrong value.
fn division_tests() -> Value {
    json!([
        {"name": "third", "stdin": "1 3", "expected_output": "0.333333"},
        {"name": "whole", "stdin": "10 4", "expected_output": "2.5"},
        {"name": "wrong", "stdin": "2 3", "expected_output": "0.7"},
    ])
}

#[tokio::test]
async fn tests_compare_and_checkers_in_four_languages() {
    let langs = judged_languages();
    if langs.is_empty() {
        return;
    }
    let c = code_cluster(&[]).await;

    // The worker reported its toolchains' versions at join.
    let listed = c.client.languages().await.unwrap();
    for l in &langs {
        let v = listed
            .iter()
            .find(|v| v.language == *l)
            .unwrap_or_else(|| panic!("{l} missing from {listed:?}"));
        assert_eq!(v.workers, 1);
        assert_eq!(v.slots_free, 4);
        assert_eq!(v.compiled, *l != "python");
        assert!(
            v.version
                .as_deref()
                .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit())),
            "{v:?}"
        );
    }

    // A checker in Python: the answer must be within 0.01 of a / b.
    let checker = "a, b = map(float, open('input').read().split())\nv = float(open('output').read())\nok = abs(v - a / b) < 0.01\nprint('ok' if ok else 'far off')\nraise SystemExit(0 if ok else 1)\n";
    let mut tasks = Vec::new();
    for l in &langs {
        tasks.push(task(
            "code",
            json!({"language": l, "source": sum_source(l), "tests": division_tests(), "compare": {"float": 1e-6}}),
        ));
        tasks.push(task(
            "code",
            json!({"language": l, "source": sum_source(l), "tests": division_tests(),
                   "checker": {"language": "python", "source": checker}}),
        ));
        tasks.push(task(
            "code",
            json!({"language": l, "source": sum_source(l), "tests": division_tests(),
                   "compare": "exact", "stop_on_failure": true}),
        ));
    }
    let job = c.submit(tasks).await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let all = c.tasks(&job.id).await;
    for (i, l) in langs.iter().enumerate() {
        let (float, checked, exact) = (
            &all[3 * i].output,
            &all[3 * i + 1].output,
            &all[3 * i + 2].output,
        );
        let verdicts = |v: &Value| -> Vec<String> {
            v["tests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["verdict"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(float["verdict"], "wrong_answer", "{l} float: {float}");
        assert_eq!(
            verdicts(float),
            ["accepted", "accepted", "wrong_answer"],
            "{l}: {float}"
        );
        assert_eq!(float["passed"], 2);
        assert_eq!(float["total"], 3);
        assert!(
            float["tests"][2]["comment"]
                .as_str()
                .unwrap()
                .contains("expected `0.7`"),
            "{float}"
        );
        // The checker is more tolerant: all three pass.
        assert_eq!(checked["verdict"], "accepted", "{l} checker: {checked}");
        assert_eq!(checked["passed"], 3);
        assert_eq!(checked["tests"][0]["comment"], "ok");
        // Exact: the first test already fails, and nothing after it runs.
        assert_eq!(exact["verdict"], "wrong_answer", "{l} exact: {exact}");
        assert_eq!(exact["tests"].as_array().unwrap().len(), 1, "{exact}");
    }
}

/// 1000 KiB of bytes that are not UTF-8 on stdout and 1000 KiB of text on
/// stderr, inside the default 1024 KiB limits: the client gets the verdict
/// and every byte.
#[tokio::test]
async fn large_binary_output_reaches_the_client() {
    if !judged_languages().contains(&"python") {
        return;
    }
    let c = code_cluster(&[]).await;
    let src = "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4000)\nsys.stderr.write('e' * 1024000)\n";
    let job = c
        .submit(vec![
            task("code", json!({"language": "python", "source": src})),
            task("echo", json!({"small": true})),
        ])
        .await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let t = &c.tasks(&job.id).await[0];
    assert_eq!(t.output["verdict"], "accepted");
    assert_eq!(t.output["stdout_encoding"], "base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t.output["stdout"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 1_024_000);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 256) as u8));
    assert_eq!(t.output["stderr"].as_str().unwrap().len(), 1_024_000);
}

/// A result over the server's limit is not lost (nor its batch): the task
/// fails at once with kind `result_too_large`, and is not retried.
#[tokio::test]
async fn a_result_over_the_server_limit_fails_the_task_clearly() {
    if !judged_languages().contains(&"python") {
        return;
    }
    let c = code_cluster(&["--max-result-bytes", "200000"]).await;
    let big = "print('x' * 500000)\n";
    let mut t = task("code", json!({"language": "python", "source": big}));
    t.max_attempts = Some(3);
    let job = c
        .submit(vec![
            t,
            task("code", json!({"language": "python", "source": "print(1)"})),
        ])
        .await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Failed);
    let all = c.tasks(&job.id).await;
    assert_eq!(all[0].state, TaskState::Failed);
    let e = all[0].error.clone().unwrap();
    assert_eq!(e.kind, ErrorKind::ResultTooLarge, "{e:?}");
    assert!(e.message.contains("200000"), "{}", e.message);
    assert_eq!(all[0].attempt, 1, "not retried");
    assert_eq!(all[1].state, TaskState::Succeeded);
    assert_eq!(all[1].output["stdout"], "1\n");
}

/// Processes of the tree under `root` (its pid included).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    let mut tree = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (&pid, &ppid) in &parent {
            if tree.contains(&ppid) && !tree.contains(&pid) {
                tree.push(pid);
                grew = true;
            }
        }
    }
    tree
}

/// The sandbox slot a process of the tree under `root` is in.
fn slot_of_tree(root: u32) -> Option<u32> {
    descendants(root).into_iter().find_map(|pid| {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        cg.lines().find_map(|l| {
            l.split_once(":/brigade-sandbox/slot-")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
    })
}

fn slot_cgroups(n: u32) -> Vec<PathBuf> {
    ["memory", "pids", "cpuacct"]
        .iter()
        .map(|c| {
            PathBuf::from("/sys/fs/cgroup")
                .join(c)
                .join(brigade_worker::sandbox::CGROUP_PARENT)
                .join(format!("slot-{n}"))
        })
        .filter(|p| p.exists())
        .collect()
}

/// A worker SIGKILLed while a box runs cannot clean up that box's cgroups;
/// the next worker to start sweeps them.
#[tokio::test]
async fn a_worker_killed_mid_run_leaves_no_stale_cgroup() {
    if !is_root() || !judged_languages().contains(&"python") {
        eprintln!("note: needs root and python");
        return;
    }
    let mut c = code_cluster(&[]).await;
    let job = c
        .submit(vec![task(
            "code",
            json!({"language": "python", "source": "import time\ntime.sleep(60)\n", "limits": {"wall_ms": 60000}}),
        )])
        .await;
    let pid = c.workers[0].1.id();
    let slot = c
        .until("the box is running", || async { slot_of_tree(pid) })
        .await;
    assert!(!slot_cgroups(slot).is_empty());
    c.signal_worker("judge", Signal::SIGKILL);
    c.wait_worker_exit("judge").await;
    // The helper and its box die with the worker (PR_SET_PDEATHSIG)...
    c.until("the box's lock is free", || async {
        brigade_worker::sandbox::try_lock_slot(slot).map(drop)
    })
    .await;
    // ...but its cgroups stay: nobody ran its cleanup.
    let left = slot_cgroups(slot);
    if left.is_empty() {
        // Another test's box took the slot and cleaned it first: the fault
        // cannot be shown this time, but nothing is stale either.
        eprintln!("note: slot {slot} was reused before the check");
    }
    let cache = c.dir.path().join("code-cache");
    let cache = cache.to_str().unwrap().to_owned();
    c.spawn_worker("next", 1, &["--code-cache", &cache]);
    c.worker_named("next").await;
    // Stale means: there, and no box holds the slot.
    let stale = match brigade_worker::sandbox::try_lock_slot(slot) {
        Some(_held) => slot_cgroups(slot),
        None => Vec::new(),
    };
    assert!(
        stale.is_empty(),
        "stale cgroups after a new worker started: {stale:?} (before it: {left:?})"
    );
    // The task itself is requeued to the new worker when its lease runs out.
    let _ = job;
}

/// `brigade run FILE --tests DIR` prints a verdict per test and exits
/// non-zero unless accepted; a single run with --stdin/--expect too.
#[tokio::test]
async fn brigade_run_judges_a_file_from_the_command_line() {
    if !judged_languages().contains(&"python") {
        return;
    }
    let c = code_cluster(&[]).await;
    let dir = c.dir.path();
    std::fs::write(
        dir.join("sum.py"),
        "a, b = map(int, input().split())\nprint(a + b if a != 7 else 0)\n",
    )
    .unwrap();
    let tests = dir.join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    for (name, input, out) in [("1", "1 2", "3"), ("2", "7 1", "8"), ("10", "5 5", "10")] {
        std::fs::write(tests.join(format!("{name}.in")), input).unwrap();
        std::fs::write(tests.join(format!("{name}.out")), out).unwrap();
    }
    let run = |args: &[&str]| {
        std::process::Command::new(brigade_testkit::bin())
            .arg("run")
            .args(args)
            .args(["--server", &c.url])
            .output()
            .unwrap()
    };
    let out = run(&[
        dir.join("sum.py").to_str().unwrap(),
        "--tests",
        tests.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("wrong_answer: 2/3 tests passed"), "{text}");
    // Natural order: 1, 2, 10.
    let (p1, p2, p10) = (
        text.find("│ 1 ").unwrap(),
        text.find("│ 2 ").unwrap(),
        text.find("│ 10 ").unwrap(),
    );
    assert!(p1 < p2 && p2 < p10, "{text}");

    std::fs::write(dir.join("in.txt"), "20 22\n").unwrap();
    std::fs::write(dir.join("want.txt"), "42\n").unwrap();
    let out = run(&[
        dir.join("sum.py").to_str().unwrap(),
        "--stdin",
        dir.join("in.txt").to_str().unwrap(),
        "--expect",
        dir.join("want.txt").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("accepted"), "{text}");
    // An unknown extension is refused before anything is submitted.
    std::fs::write(dir.join("x.txt"), "").unwrap();
    let out = run(&[dir.join("x.txt").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--language"));
}
