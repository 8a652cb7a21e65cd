//! `brigade`: the one binary — server, worker, a local cluster, and the client commands.

mod bench;
mod cli;
mod command;
mod config;
mod demo;
mod otlp;
mod up;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use command::{Cli, Command};

fn main() -> ExitCode {
    // The sandbox helper must stay single-threaded: dispatch it before any runtime starts.
    if std::env::args().nth(1).as_deref() == Some("sandbox-exec") {
        return sandbox_exec();
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (args, loaded) = match config::expand(args, &Cli::command()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(&args);
    let print = match &cli.command {
        Command::Server(a) if a.print_config => Some("server"),
        Command::Worker(a) if a.print_config => Some("worker"),
        _ => None,
    };
    if let Some(name) = print {
        print!("{}", config::render(&Cli::command(), &args, name, &loaded));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let otlp = match command::init_tracing(&cli.command, cli.global.verbose, runtime.handle()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans go out on the runtime, which still runs.
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    code
}

/// `brigade sandbox-exec`: the single-threaded helper that sets up a sandbox
/// and runs one program in it (its configuration arrives on fd 3).
fn sandbox_exec() -> ExitCode {
    let code = brigade_worker::sandbox::helper_main();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => cli::server::run(args).await,
        Command::Worker(args) => cli::worker::run(args).await,
        Command::Up(args) => up::run(args).await,
        Command::Submit(args) => cli::submit::run(args, &cli.global).await,
        Command::Run(args) => cli::run::run(args, &cli.global).await,
        Command::Status { job } => cli::status::status(&job, &cli.global).await,
        Command::Tasks {
            job,
            filter,
            limit,
            tree,
        } => match (tree, job.as_deref()) {
            (true, Some(job)) => cli::status::tree(job, &cli.global).await,
            (true, None) => Err(anyhow::anyhow!("--tree needs a job id")),
            (false, job) => cli::status::tasks(job, &filter, limit, &cli.global).await,
        },
        Command::Retry { filter, job, all } => {
            cli::status::retry(&filter, job.as_deref(), all, &cli.global).await
        }
        Command::Watch { job } => cli::watch::run(&job, &cli.global).await,
        Command::Logs { task, follow } => cli::logs::run(&task, follow, &cli.global).await,
        Command::Workers => cli::status::workers(&cli.global).await,
        Command::Queues => cli::status::queues(&cli.global).await,
        Command::Cancel { job } => cli::status::cancel(&job, &cli.global).await,
        Command::Schedule(cmd) => cli::schedule::run(cmd, &cli.global).await,
        Command::Limits { cmd } => cli::limits::run(cmd, &cli.global).await,
        Command::Demo(demo) => demo::run(demo, &cli.global).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Migrate(args) => cli::ops::migrate(args, cli.global.output).await,
        Command::Backup(args) => cli::ops::backup(args, cli.global.output).await,
        Command::Token(cmd) => {
            cli::token(&cmd, cli.global.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            command::completions(shell);
            Ok(ExitCode::SUCCESS)
        }
    }
}
