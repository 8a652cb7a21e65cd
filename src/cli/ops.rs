//! Operating the database: `brigade migrate` (the schema, or a whole copy to
//! another engine) and `brigade backup`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use crate::cli::{Output, print_json};

/// Options of `brigade migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database to bring up to this brigade's schema.
    #[arg(
        long,
        env = "BRIGADE_DATABASE_URL",
        default_value = "sqlite://brigade.db"
    )]
    pub database_url: String,
    /// Copy everything from this database (read in one snapshot)…
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// …into this empty one (refused when it holds any row).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// SQLite: also rebuild the file so that space freed by retention goes back to the
    /// file system (databases made before brigade chose incremental auto-vacuum only
    /// reuse it). Stop the server first; needs free space of about the file's size.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub vacuum: bool,
}

/// Options of `brigade backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The SQLite database to back up (`sqlite://FILE`); servers may keep running on it.
    #[arg(
        long,
        env = "BRIGADE_DATABASE_URL",
        default_value = "sqlite://brigade.db"
    )]
    pub database_url: String,
    /// The copy to write: a new file (an existing one is never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

/// `brigade migrate`.
pub async fn migrate(args: MigrateArgs, output: Output) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        let started = Instant::now();
        let report = brigade_store::copy_database(from, to)
            .await
            .with_context(|| format!("copying {from} into {to}"))?;
        match output {
            Output::Json => print_json(&serde_json::json!({
                "from": from, "to": to, "rows": report.rows,
                "seconds": started.elapsed().as_secs_f64(),
            }))?,
            Output::Text => {
                println!(
                    "copied {from} into {to} in {:.1} s; rows, equal on both sides:",
                    started.elapsed().as_secs_f64()
                );
                for (table, n) in &report.rows {
                    println!("  {table:<12} {n}");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let url = &args.database_url;
    brigade_store::migrate(url).await?;
    if args.vacuum {
        anyhow::ensure!(
            url.starts_with("sqlite:"),
            "--vacuum is for SQLite; PostgreSQL's autovacuum reuses space by itself"
        );
        let rebuilt = brigade_store::sqlite::vacuum(url).await?;
        println!(
            "{url}: {}",
            if rebuilt {
                "rebuilt; freed space now goes back to the file system"
            } else {
                "already gives freed space back"
            }
        );
    }
    println!("{url}: schema up to date");
    Ok(ExitCode::SUCCESS)
}

/// `brigade backup`.
pub async fn backup(args: BackupArgs, output: Output) -> anyhow::Result<ExitCode> {
    let url = &args.database_url;
    anyhow::ensure!(
        url.starts_with("sqlite:"),
        "brigade backup copies SQLite databases; for PostgreSQL use pg_dump \
         (pg_dump --format=custom --file brigade.dump DATABASE_URL)"
    );
    let started = Instant::now();
    let bytes = brigade_store::sqlite::backup(url, &args.out)
        .await
        .with_context(|| format!("backing up {url}"))?;
    let seconds = started.elapsed().as_secs_f64();
    match output {
        Output::Json => print_json(&serde_json::json!({
            "database_url": url, "out": args.out, "bytes": bytes, "seconds": seconds,
        }))?,
        Output::Text => println!(
            "{url} → {} ({:.1} MiB in {seconds:.1} s); restore by starting a server on it",
            args.out.display(),
            bytes as f64 / 1_048_576.0
        ),
    }
    Ok(ExitCode::SUCCESS)
}
