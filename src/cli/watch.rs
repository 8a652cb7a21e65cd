//! `brigade watch`: a live progress bar until the job finishes.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use brigade_api::JobView;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::status::{exit_code, print_job};
use crate::cli::{Global, Output, client, explain, print_json};

/// Follow `job` until it finishes, then print it.
pub async fn run(job: &str, global: &Global) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let mut view = client.job(job).await.map_err(explain)?;
    let show = global.output == Output::Text;
    let bar = ProgressBar::with_draw_target(
        Some(view.progress.total),
        if show && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} {per_sec} eta {eta}\n  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    loop {
        let p = view.progress;
        bar.set_position(p.finished());
        bar.set_message(format!(
            "{} · waiting {} · queued {} · scheduled {} · running {} · succeeded {} · failed {} · cancelled {}",
            view.state.as_str(),
            p.waiting,
            p.queued,
            p.scheduled,
            p.running,
            p.succeeded,
            p.failed,
            p.cancelled
        ));
        if view.state.is_finished() {
            break;
        }
        // Long-poll for the finish, waking a few times a second to redraw.
        view = match client.wait_job(job, Duration::from_millis(250)).await {
            Ok(v) => v,
            Err(e) if e.is_transient() => {
                bar.set_message(format!("server unreachable, retrying: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                view
            }
            Err(e) => return Err(explain(e)),
        };
    }
    bar.finish_and_clear();
    finish(&view, show, started.elapsed())?;
    Ok(exit_code(&view))
}

fn finish(view: &JobView, show: bool, _elapsed: Duration) -> anyhow::Result<()> {
    if show {
        print_job(view);
    } else {
        print_json(view)?;
    }
    Ok(())
}
