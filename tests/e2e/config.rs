//! `brigade.toml`: a file of options under the command line and the environment.

use std::process::{Command, Stdio};

use brigade_client::Client;
use brigade_testkit::{bin, free_port, until, wait_ready};

/// `brigade ARGS` in `dir` with `env`: exit status, stdout, stderr.
fn brigade(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(dir);
    for var in [
        "BRIGADE_CONFIG",
        "BRIGADE_RETENTION",
        "BRIGADE_LISTEN",
        "BRIGADE_DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[tokio::test]
async fn print_config_shows_each_value_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("brigade.toml"),
        "[server]\nretention = \"3d\"\nlease_ttl_ms = 900\ncallback_allow = [\"a.example\", \"b.example\"]\ncallback_secret = \"0123456789abcdef0123\"\n",
    )
    .unwrap();
    // ./brigade.toml is read without --config; the environment beats it, the command line beats both.
    let (code, out, err) = brigade(
        dir.path(),
        &["server", "--print-config", "--heartbeat-ms", "700"],
        &[("BRIGADE_RETENTION", "1d")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "retention"), "retention = \"1d\"  # environment");
    assert_eq!(line(&out, "lease_ttl_ms"), "lease_ttl_ms = 900  # file");
    assert_eq!(
        line(&out, "heartbeat_ms"),
        "heartbeat_ms = 700  # command line"
    );
    assert_eq!(
        line(&out, "max_body_bytes"),
        "max_body_bytes = 16777216  # default"
    );
    assert_eq!(
        line(&out, "callback_allow"),
        "callback_allow = [\"a.example\", \"b.example\"]  # file"
    );
    assert!(
        line(&out, "callback_secret").contains("<hidden>") && !out.contains("0123456789abcdef"),
        "secrets are not printed:\n{out}"
    );
    // What it prints is a file the server reads back to the same values.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).unwrap();
    let (code, again, err) = brigade(
        dir.path(),
        &[
            "server",
            "--config",
            printed.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let values = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  #").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(values(&again), values(&out));
}

#[tokio::test]
async fn a_bad_file_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.toml");
    for (text, word) in [
        ("[server]\nlease_tll_ms = 5\n", "lease_tll_ms"),
        ("[servr]\nlisten = \"127.0.0.1:1\"\n", "servr"),
        ("[server]\nlease_ttl_ms = \"soon\"\n", "lease-ttl-ms"),
        ("[server\n", "not valid TOML"),
    ] {
        std::fs::write(&f, text).unwrap();
        let (code, _, err) = brigade(
            dir.path(),
            &["server", "--config", f.to_str().unwrap(), "--print-config"],
            &[],
        );
        assert_ne!(code, 0, "{text:?} was accepted");
        assert!(err.contains(word), "{text:?}: {err}");
    }
    let (code, _, err) = brigade(
        dir.path(),
        &["server", "--config", "/nonexistent/brigade.toml"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/brigade.toml"), "{err}");
}

#[tokio::test]
async fn a_server_and_a_worker_run_from_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let file = dir.path().join("brigade.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://{}\"\n\n[worker]\nserver = \"{url}\"\nname = \"from-the-file\"\ncapacity = 3\nno_code = true\n",
            dir.path().join("db.sqlite").display()
        ),
    )
    .unwrap();
    let spawn = |what: &str| {
        Command::new(bin())
            .args([what, "--config", file.to_str().unwrap()])
            .env_remove("BRIGADE_LISTEN")
            .env_remove("BRIGADE_DATABASE_URL")
            .env_remove("BRIGADE_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut server = spawn("server");
    let mut worker = spawn("worker");
    let client = Client::new(&url, None).unwrap();
    wait_ready(&client).await;
    let w = until("the worker joins", String::new, || async {
        client
            .workers()
            .await
            .ok()?
            .into_iter()
            .find(|w| w.name == "from-the-file")
    })
    .await;
    assert_eq!(w.capacity, 3);
    assert!(
        dir.path().join("db.sqlite").exists(),
        "the file's database is used"
    );
    for p in [&mut worker, &mut server] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

#[test]
fn the_sample_in_deploy_is_a_file_both_commands_read() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/brigade.toml");
    let dir = tempfile::tempdir().unwrap();
    for what in ["server", "worker"] {
        let (code, out, err) = brigade(
            dir.path(),
            &[what, "--config", sample.to_str().unwrap(), "--print-config"],
            &[],
        );
        assert_eq!(code, 0, "{what}: {err}");
        assert!(
            out.contains("# file"),
            "{what} took values from the sample:\n{out}"
        );
    }
}
