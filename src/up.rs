//! `brigade up`: a server and local worker processes in one command.

use std::process::ExitCode;

use anyhow::Context;
use brigade_launch::{current_exe, spawn_workers, stop_children};
use clap::Args;

use crate::cli::server::{Endpoint, shutdown_signal};

/// Options of `brigade up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Slots of each worker.
    #[arg(long, default_value_t = 8)]
    pub capacity: u32,
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Let the workers run `exec` tasks.
    #[arg(long)]
    pub allow_exec: bool,
    /// Export traces over OTLP/HTTP to URL/v1/traces (the server's spans and
    /// the workers'), as `brigade server --otlp-endpoint` does.
    #[arg(long, env = "BRIGADE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Run it all until Ctrl-C.
pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Open mode with defaults: refused by the server unless on loopback.
    let config = brigade_server::ServerConfig {
        listen: args.endpoint.listen,
        database_url: args.endpoint.database_url.clone(),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = brigade_server::start(config, async {
        let _ = stop_rx.await;
    })
    .await
    .with_context(|| format!("starting the server on {}", args.endpoint.listen))?;
    let url = format!("http://{}", server.addr);
    let mut extra: Vec<&str> = Vec::new();
    if args.allow_exec {
        extra.push("--allow-exec");
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        extra.extend(["--otlp-endpoint", endpoint.as_str()]);
    }
    let mut workers = spawn_workers(
        &current_exe()?,
        &url,
        args.workers,
        args.capacity,
        "local",
        &extra,
        false,
    )?;
    println!("brigade is up at {url}");
    println!("  dashboard   {url}/");
    println!("  API docs    {url}/docs");
    println!("  database    {}", args.endpoint.database_url);
    println!("  workers     {} × {} slots", args.workers, args.capacity);
    println!();
    println!("Try, in another terminal:");
    println!("  brigade demo salad");
    println!("  brigade submit --kind sleep --input '{{\"ms\": 500}}' --count 20 --wait");
    println!("  brigade workers");
    println!("Ctrl-C stops everything.");
    shutdown_signal().await;
    eprintln!("stopping workers…");
    stop_children(&mut workers).await;
    let _ = stop_tx.send(());
    let _ = server.task.await;
    Ok(ExitCode::SUCCESS)
}
