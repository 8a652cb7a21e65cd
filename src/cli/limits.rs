//! `brigade limits [list|set|rm]`: concurrency and rate budgets per key.

use std::process::ExitCode;

use brigade_api::{LimitSpec, LimitView};
use clap::Subcommand;

use crate::cli::status::table;
use crate::cli::{Global, Output, client, explain, print_json};

/// `brigade limits ...` (no subcommand: list).
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// List the limits with what each key uses now.
    List,
    /// Set the limit of a key, or of each key a pattern (`tenant:*`) matches (admin).
    Set {
        /// The key, or a pattern ending in `*`.
        key: String,
        /// Most tasks of the key running at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Most starts of the key per `--per-ms`.
        #[arg(long)]
        rate: Option<u32>,
        /// The rate's window in ms (default 1000).
        #[arg(long)]
        per_ms: Option<u64>,
        /// How many may start at once after a quiet spell (default: the rate).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Remove a limit (admin).
    Rm {
        /// The key or pattern.
        key: String,
    },
}

fn numbers(l: &LimitView) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.concurrency {
        parts.push(format!("{c} at once"));
    }
    if let (Some(r), Some(per)) = (l.rate, l.per_ms) {
        let burst = l.burst.map(|b| format!(", burst {b}")).unwrap_or_default();
        parts.push(format!("{r} per {per} ms{burst}"));
    }
    parts.join("; ")
}

fn print_limits(all: &[LimitView]) {
    if all.is_empty() {
        println!("no limits (set one with `brigade limits set KEY --concurrency N`)");
        return;
    }
    let mut t = table(&["key", "limit", "running", "started", "waiting"]);
    for l in all {
        t.add_row(vec![
            l.key.clone(),
            numbers(l),
            l.running.to_string(),
            l.started.to_string(),
            l.waiting.to_string(),
        ]);
        if l.key.ends_with('*') {
            for k in &l.keys {
                t.add_row(vec![
                    format!("  {}", k.key),
                    String::new(),
                    k.running.to_string(),
                    k.started.to_string(),
                    k.waiting.to_string(),
                ]);
            }
        }
    }
    println!("{t}");
}

/// Run a limits command.
pub async fn run(cmd: Option<LimitsCommand>, global: &Global) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    match cmd.unwrap_or(LimitsCommand::List) {
        LimitsCommand::List => {
            let all = c.limits().await.map_err(explain)?;
            match global.output {
                Output::Json => print_json(&all)?,
                Output::Text => print_limits(&all),
            }
        }
        LimitsCommand::Set {
            key,
            concurrency,
            rate,
            per_ms,
            burst,
        } => {
            let spec = LimitSpec {
                concurrency,
                rate,
                per_ms,
                burst,
            };
            let view = c.set_limit(&key, &spec).await.map_err(explain)?;
            match global.output {
                Output::Json => print_json(&view)?,
                Output::Text => println!("limit {}: {}", view.key, numbers(&view)),
            }
        }
        LimitsCommand::Rm { key } => {
            c.delete_limit(&key).await.map_err(explain)?;
            if global.output == Output::Text {
                println!("removed limit {key}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
