//! `brigade logs TASK [--follow]`: a task's log lines.

use std::process::ExitCode;

use brigade_api::LogLine;

use crate::cli::{Global, Output, client, explain, print_json};

fn show(line: &LogLine, global: &Global) -> anyhow::Result<()> {
    if global.output == Output::Text {
        println!("{}", line.line);
        Ok(())
    } else {
        print_json(line)
    }
}

/// Print the log lines of `task`; with `follow`, new ones too until it finishes.
pub async fn run(task: &str, follow: bool, global: &Global) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    if follow {
        let mut lines = client.follow_task_logs(task).await.map_err(explain)?;
        while let Some(line) = lines.next().await.map_err(explain)? {
            show(&line, global)?;
        }
    } else {
        for line in client.task_logs(task).await.map_err(explain)? {
            show(&line, global)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
