//! `brigade demo salad`: a fruit salad prepared in parallel.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use brigade_api::{JobState, JobSubmit, TaskSpec};
use clap::Subcommand;
use rand::Rng;

use crate::cli::{Global, Output, client, explain, print_json};

/// Demonstrations.
#[derive(Debug, Clone, Subcommand)]
pub enum Demo {
    /// Each fruit a task with a random preparation time; the salad is ready when all are.
    Salad {
        /// How many fruits (up to the 16 we know).
        #[arg(long, default_value_t = 12)]
        fruits: usize,
    },
}

const FRUITS: [(&str, &str); 16] = [
    ("🍎", "apple"),
    ("🍐", "pear"),
    ("🍊", "orange"),
    ("🍋", "lemon"),
    ("🍌", "banana"),
    ("🍉", "watermelon"),
    ("🍇", "grapes"),
    ("🍓", "strawberries"),
    ("🫐", "blueberries"),
    ("🍈", "melon"),
    ("🍒", "cherries"),
    ("🍑", "peach"),
    ("🥭", "mango"),
    ("🍍", "pineapple"),
    ("🥥", "coconut"),
    ("🥝", "kiwi"),
];

/// Run a demo.
pub async fn run(demo: Demo, global: &Global) -> anyhow::Result<ExitCode> {
    let Demo::Salad { fruits } = demo;
    let fruits = &FRUITS[..fruits.clamp(1, FRUITS.len())];
    let mut rng = rand::rng();
    let tasks: Vec<TaskSpec> = fruits
        .iter()
        .map(|(_, name)| {
            let mut t = TaskSpec::new(
                "sleep",
                serde_json::json!({ "ms": rng.random_range(300..1500) }),
            );
            t.name = Some((*name).to_owned());
            t
        })
        .collect();
    let job = JobSubmit::new(tasks).named("fruit-salad");
    let client = client(global)?;
    let text = global.output == Output::Text;
    if text {
        println!(
            "Preparing a fruit salad of {} fruits in parallel…",
            fruits.len()
        );
    }
    let submitted = client.submit(&job, None).await.map_err(explain)?;
    let mut view = submitted;
    while !view.state.is_finished() {
        view = client
            .wait_job(&view.id, Duration::from_secs(30))
            .await
            .map_err(explain)?;
    }
    let tasks = client.job_tasks(&view.id, None).await.map_err(explain)?;
    if !text {
        print_json(&serde_json::json!({ "job": view, "tasks": tasks }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let names: HashMap<String, String> = client
        .workers()
        .await
        .map_err(explain)?
        .into_iter()
        .map(|w| (w.id, w.name))
        .collect();
    let mut one_by_one = 0i64;
    for t in &tasks {
        let emoji = FRUITS
            .iter()
            .find(|(_, n)| Some(*n) == t.name.as_deref())
            .map_or("🍴", |(e, _)| *e);
        let ms = match (t.started_at, t.finished_at) {
            (Some(s), Some(f)) => (f - s).whole_milliseconds() as i64,
            _ => 0,
        };
        one_by_one += t
            .output
            .get("slept_ms")
            .and_then(|v| v.as_i64())
            .unwrap_or(ms);
        let worker = t
            .worker_id
            .as_ref()
            .and_then(|id| names.get(id))
            .map_or("?", String::as_str);
        println!(
            "  {emoji} {:<13} prepared by {:<12} in {:.2} s",
            t.name.as_deref().unwrap_or("?"),
            worker,
            ms as f64 / 1000.0
        );
    }
    if view.state != JobState::Succeeded {
        println!(
            "The salad did not come together: the job {}.",
            view.state.as_str()
        );
        return Ok(ExitCode::from(2));
    }
    let wall = view.wall_ms.unwrap_or(0).max(1);
    println!("The salad is ready! Enjoy!");
    println!(
        "Prepared in {:.2} s; one by one it would have taken {:.2} s — a speed-up of {:.1}×.",
        wall as f64 / 1000.0,
        one_by_one as f64 / 1000.0,
        one_by_one as f64 / wall as f64
    );
    Ok(ExitCode::SUCCESS)
}
