//! `brigade submit`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use brigade_api::{JobSubmit, TaskSpec};
use clap::Args;

use crate::cli::{Global, Output, client, explain, print_json};

/// Options of `brigade submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// A job JSON file (`-` for stdin); otherwise the job is built from the flags.
    #[arg(long, short = 'f', conflicts_with_all = ["kind", "input", "count"])]
    pub file: Option<String>,
    /// Task kind (noop, echo, sleep, fail, flaky, exec, code, or your own).
    #[arg(long, short = 'k')]
    pub kind: Option<String>,
    /// Task input as JSON.
    #[arg(long, short = 'i')]
    pub input: Option<String>,
    /// How many tasks of that kind.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: u32,
    /// Job name.
    #[arg(long)]
    pub name: Option<String>,
    /// Queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Priority (higher first).
    #[arg(long)]
    pub priority: Option<i32>,
    /// Attempt budget per task.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Time limit per attempt.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Labels a worker must carry, `key=value` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub requires: Vec<String>,
    /// A repeat with the same key returns the first job instead of a second.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// POST the job's view to this URL when it finishes (its host must be on the
    /// server's --callback-allow list); with --file, replaces the file's callback.
    #[arg(long)]
    pub callback: Option<String>,
    /// Follow the job with a live progress bar until it finishes.
    #[arg(long, short = 'w')]
    pub wait: bool,
}

fn build(args: &SubmitArgs) -> anyhow::Result<JobSubmit> {
    let mut job = build_job(args)?;
    if let Some(url) = &args.callback {
        job.callback = Some(brigade_api::Callback::new(url.clone()));
    }
    Ok(job)
}

fn build_job(args: &SubmitArgs) -> anyhow::Result<JobSubmit> {
    if let Some(path) = &args.file {
        let text = if path == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the job from stdin")?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
        };
        return serde_json::from_str(&text)
            .with_context(|| format!("{path} is not a job (see `brigade submit --help`)"));
    }
    let kind = args
        .kind
        .clone()
        .context("say what to run: --kind KIND (or --file job.json)")?;
    let input = match &args.input {
        Some(s) => serde_json::from_str(s).with_context(|| format!("--input is not JSON: {s}"))?,
        None => serde_json::Value::Null,
    };
    let mut requires = std::collections::BTreeMap::new();
    for r in &args.requires {
        let (k, v) = r
            .split_once('=')
            .with_context(|| format!("--requires {r}: expected key=value"))?;
        requires.insert(k.to_owned(), v.to_owned());
    }
    let mut task = TaskSpec::new(kind, input);
    task.priority = args.priority;
    task.max_attempts = args.max_attempts;
    task.timeout_ms = args.timeout_ms;
    task.requires = requires;
    anyhow::ensure!(
        (1..=10_000).contains(&args.count),
        "--count must be 1 to 10000"
    );
    Ok(JobSubmit {
        name: args.name.clone(),
        queue: args.queue.clone(),
        labels: Default::default(),
        tasks: vec![task; args.count as usize],
        keep_ms: None,
        unique: None,
        callback: None,
    })
}

/// Submit, print the job, and with `--wait` follow it.
pub async fn run(args: SubmitArgs, global: &Global) -> anyhow::Result<ExitCode> {
    let job = build(&args)?;
    let client = client(global)?;
    let view = client
        .submit(&job, args.idempotency_key.as_deref())
        .await
        .map_err(explain)?;
    if !args.wait {
        match global.output {
            Output::Json => print_json(&view)?,
            Output::Text => {
                println!("{}", view.id);
                eprintln!(
                    "submitted {} task(s); follow with: brigade watch {}",
                    view.progress.total, view.id
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if global.output == Output::Text {
        eprintln!("job {} ({} tasks)", view.id, view.progress.total);
    }
    crate::cli::watch::run(&view.id, global).await
}
