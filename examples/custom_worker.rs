//! A worker with a task kind of its own, built on the brigade worker runtime.
//!
//! ```sh
//! brigade up                                       # in one terminal
//! cargo run --example custom_worker -- http://127.0.0.1:7070
//! brigade submit --kind shout --input '"hello"' --wait
//! ```

use brigade_worker::{Registry, TaskContext, TaskFailure, Worker, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7070".into());
    let mut registry = Registry::new();
    // An async handler.
    registry.register_fn("shout", |ctx: TaskContext| async move {
        let text = ctx
            .input
            .as_str()
            .ok_or_else(|| TaskFailure::bad_input("expected a string"))?;
        Ok(serde_json::json!(text.to_uppercase()))
    });
    // A CPU-heavy handler runs on the blocking pool and never stalls the others.
    registry.register_blocking("count-primes", |ctx: TaskContext| {
        let below = ctx
            .input
            .get("below")
            .and_then(|v| v.as_u64())
            .unwrap_or(100_000);
        let count = (2..below)
            .filter(|n| (2..).take_while(|d| d * d <= *n).all(|d| n % d != 0))
            .count();
        Ok(serde_json::json!({ "below": below, "primes": count }))
    });
    let client = brigade_client::Client::new(&server, std::env::var("BRIGADE_TOKEN").ok())?;
    let config = WorkerConfig {
        name: "custom".into(),
        capacity: 4,
        ..Default::default()
    };
    Worker::new(client, registry, config)
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
