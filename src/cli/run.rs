//! `brigade run FILE`: judge one program on the cluster and print its verdicts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use brigade_api::code::{Checker, CodeInput, CodeLimits, CodeTest, Compare, CompareMode};
use brigade_api::{JobSubmit, TaskSpec};
use clap::Args;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, Color, Table};
use serde_json::Value;

use crate::cli::{Global, Output, client, explain, print_json};

/// Options of `brigade run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The program. Its extension gives the language: .py, .c, .cpp/.cc/.cxx, .java, .rs,
    /// .js, .sh.
    pub file: PathBuf,
    /// The language, when the extension does not say it.
    #[arg(long, short = 'l')]
    pub language: Option<String>,
    /// The program's standard input.
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// The expected output; without it any clean exit is accepted.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// A directory of tests: NAME.in (stdin) with NAME.out or NAME.ans (expected output).
    #[arg(long, conflicts_with_all = ["stdin", "expect"])]
    pub tests: Option<PathBuf>,
    /// How output is compared: trim (default), exact, tokens, or float:TOLERANCE.
    #[arg(long)]
    pub compare: Option<String>,
    /// A checker program (language from its extension) that judges each output instead.
    #[arg(long)]
    pub checker: Option<PathBuf>,
    /// Stop at the first test that is not accepted.
    #[arg(long)]
    pub stop_on_failure: bool,
    /// CPU time limit per run, ms.
    #[arg(long)]
    pub cpu_ms: Option<u64>,
    /// Wall-clock limit per run, ms.
    #[arg(long)]
    pub wall_ms: Option<u64>,
    /// Memory limit per run, KiB.
    #[arg(long)]
    pub memory_kb: Option<u64>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_s: u64,
}

/// The language of a source file, from its extension.
pub fn language_of(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "py" => "python",
        "c" => "c",
        "cpp" | "cc" | "cxx" | "c++" => "cpp",
        "java" => "java",
        "rs" => "rust",
        "js" | "mjs" => "javascript",
        "sh" | "bash" => "bash",
        _ => return None,
    })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn parse_compare(s: &str) -> anyhow::Result<Compare> {
    Ok(match s {
        "trim" => Compare::Mode(CompareMode::Trim),
        "exact" => Compare::Mode(CompareMode::Exact),
        "tokens" => Compare::Mode(CompareMode::Tokens),
        _ => {
            let tol = s
                .strip_prefix("float:")
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|t| t.is_finite() && (0.0..=1.0).contains(t))
                .with_context(|| {
                    format!("--compare {s}: use trim, exact, tokens or float:TOLERANCE (0 to 1)")
                })?;
            Compare::Float { float: tol }
        }
    })
}

/// Tests from DIR: every NAME.in, with NAME.out or NAME.ans when there is one,
/// in natural order of NAME (2 before 10).
pub fn read_tests(dir: &Path) -> anyhow::Result<Vec<CodeTest>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) == Some("in")
            && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    anyhow::ensure!(
        !names.is_empty(),
        "{} holds no NAME.in files",
        dir.display()
    );
    names.sort_by_key(|n| natural_key(n));
    names
        .into_iter()
        .map(|name| {
            let stdin = read(&dir.join(format!("{name}.in")))?;
            let expected = ["out", "ans"]
                .iter()
                .map(|x| dir.join(format!("{name}.{x}")))
                .find(|p| p.exists())
                .map(|p| read(&p))
                .transpose()?;
            Ok(CodeTest {
                name: Some(name),
                stdin,
                expected_output: expected,
                args: Vec::new(),
            })
        })
        .collect()
}

/// Digits compare as numbers: `t2` before `t10`.
fn natural_key(s: &str) -> Vec<(u8, u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let (d, r) = rest.split_at(digits);
            key.push((0, d.parse().unwrap_or(u64::MAX), String::new()));
            rest = r;
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            let (t, r) = rest.split_at(text);
            key.push((1, 0, t.to_owned()));
            rest = r;
        }
    }
    key
}

fn build(args: &RunArgs) -> anyhow::Result<CodeInput> {
    let language = match &args.language {
        Some(l) => l.clone(),
        None => language_of(&args.file)
            .with_context(|| {
                format!(
                    "cannot tell the language of {} from its extension; pass --language",
                    args.file.display()
                )
            })?
            .to_owned(),
    };
    let checker = match &args.checker {
        Some(p) => Some(Checker {
            language: language_of(p)
                .with_context(|| {
                    format!("cannot tell the language of the checker {}", p.display())
                })?
                .to_owned(),
            source: read(p)?,
        }),
        None => None,
    };
    Ok(CodeInput {
        language: Some(language),
        source: Some(read(&args.file)?),
        stdin: args
            .stdin
            .as_deref()
            .map(read)
            .transpose()?
            .unwrap_or_default(),
        expected_output: args.expect.as_deref().map(read).transpose()?,
        tests: args.tests.as_deref().map(read_tests).transpose()?,
        compare: args
            .compare
            .as_deref()
            .map(parse_compare)
            .transpose()?
            .unwrap_or_default(),
        checker,
        stop_on_failure: args.stop_on_failure,
        limits: CodeLimits {
            cpu_ms: args.cpu_ms,
            wall_ms: args.wall_ms,
            memory_kb: args.memory_kb,
            ..CodeLimits::default()
        },
        args: Vec::new(),
    })
}

fn colour(verdict: &str) -> Color {
    if verdict == "accepted" {
        Color::Green
    } else {
        Color::Red
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Print the verdicts of a finished `code` output.
fn print_table(out: &Value) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(["test", "verdict", "time ms", "memory KiB", "comment"]);
    let rows: Vec<&Value> = match out["tests"].as_array() {
        Some(tests) => tests.iter().collect(),
        None => vec![out],
    };
    for r in rows {
        let v = r["verdict"].as_str().unwrap_or("?");
        t.add_row(vec![
            Cell::new(r["name"].as_str().unwrap_or("run")),
            Cell::new(v).fg(colour(v)),
            Cell::new(s(&r["time_ms"])),
            Cell::new(s(&r["memory_kb"])),
            Cell::new(r["comment"].as_str().unwrap_or("")),
        ]);
    }
    println!("{t}");
}

/// Submit the program, wait for its verdict, print it; the exit status is 0
/// only when it is `accepted`.
pub async fn run(args: RunArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let input = build(&args)?;
    let language = input.language.clone().unwrap_or_default();
    let mut task = TaskSpec::new("code", serde_json::to_value(&input)?);
    task.name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    task.requires = [("lang".to_owned(), language.clone())].into();
    // A program's failure is a verdict, not a reason to run it again.
    task.max_attempts = Some(1);
    let job = JobSubmit {
        name: Some(format!("run {}", args.file.display())),
        queue: None,
        labels: Default::default(),
        tasks: vec![task],
        keep_ms: None,
        unique: None,
        callback: None,
    };
    let client = client(global)?;
    let view = client.submit(&job, None).await.map_err(explain)?;
    if global.output == Output::Text {
        eprintln!(
            "{language}: job {} submitted; waiting for a verdict",
            view.id
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_s);
    loop {
        let j = client
            .wait_job(&view.id, Duration::from_secs(20))
            .await
            .map_err(explain)?;
        if j.state.is_finished() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no verdict within {} s (job {} is {:?}); is a worker with `lang={language}` running?",
            args.wait_s,
            view.id,
            j.state
        );
    }
    let tasks = client.job_tasks(&view.id, None).await.map_err(explain)?;
    let t = tasks.first().context("the job has no task")?;
    if global.output == Output::Json {
        print_json(t)?;
    }
    let Some(verdict) = t.output["verdict"].as_str() else {
        let why = t.error.as_ref().map_or_else(
            || format!("{:?}", t.state),
            |e| format!("{:?}: {}", e.kind, e.message),
        );
        anyhow::bail!("the task {} did not judge the program: {why}", t.id);
    };
    if global.output == Output::Text {
        let out = &t.output;
        if let Some(c) = out["compile_output"].as_str().filter(|c| !c.is_empty()) {
            eprintln!("compile output:\n{}", c.trim_end());
        }
        if out["tests"].is_null() {
            for stream in ["stdout", "stderr"] {
                if let Some(text) = out[stream].as_str().filter(|t| !t.is_empty()) {
                    let note = if out[format!("{stream}_encoding")] == "base64" {
                        " (not UTF-8; base64)"
                    } else {
                        ""
                    };
                    eprintln!("{stream}{note}:\n{}", text.trim_end());
                }
            }
        }
        print_table(out);
        let worker = t.worker_id.as_deref().unwrap_or("?");
        match (out["passed"].as_u64(), out["total"].as_u64()) {
            (Some(p), Some(n)) => println!("{verdict}: {p}/{n} tests passed (worker {worker})"),
            _ => println!("{verdict} (worker {worker})"),
        }
    }
    Ok(if verdict == "accepted" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_order() {
        assert_eq!(language_of(Path::new("a/b.py")), Some("python"));
        assert_eq!(language_of(Path::new("x.cc")), Some("cpp"));
        assert_eq!(language_of(Path::new("Main.java")), Some("java"));
        assert_eq!(language_of(Path::new("x.txt")), None);
        let mut v = vec!["t10", "t2", "a", "t1"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["a", "t1", "t2", "t10"]);
        assert!(parse_compare("float:1e-6").is_ok());
        assert!(parse_compare("float:x").is_err());
    }
}
