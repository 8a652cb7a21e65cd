//! `brigade schedule add|list|pause|resume|trigger|rm`.

use std::process::ExitCode;

use anyhow::Context;
use brigade_api::{CatchUp, JobSubmit, Overlap, ScheduleCreate, ScheduleView, TaskSpec};
use clap::{Args, Subcommand, ValueEnum};

use crate::cli::status::{print_job, table};
use crate::cli::{Global, Output, client, explain, print_json};

/// `brigade schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: a job submitted on a cron expression or every N ms.
    Add(AddArgs),
    /// List the schedules with their next fire and last job.
    List,
    /// Stop a schedule firing.
    Pause {
        /// Schedule id.
        id: String,
    },
    /// Fire a paused schedule again, from now on.
    Resume {
        /// Schedule id.
        id: String,
    },
    /// Fire a schedule now (under its overlap policy); prints the job.
    Trigger {
        /// Schedule id.
        id: String,
    },
    /// Delete a schedule (the jobs it created stay).
    Rm {
        /// Schedule id.
        id: String,
    },
}

/// `--overlap`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverlapArg {
    /// Create the new job anyway.
    Allow,
    /// No new job while the previous one is unfinished.
    Skip,
    /// Cancel the previous job, then create the new one.
    CancelPrevious,
}

/// `--catch-up`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CatchUpArg {
    /// Drop missed fires.
    None,
    /// One job for all the missed fires.
    One,
    /// One job per missed fire.
    All,
}

/// Options of `brigade schedule add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first.
    #[arg(
        long,
        required_unless_present = "every_ms",
        conflicts_with = "every_ms"
    )]
    pub cron: Option<String>,
    /// Fire every this many milliseconds instead.
    #[arg(long)]
    pub every_ms: Option<u64>,
    /// IANA time zone the cron expression is read in (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Schedule name.
    #[arg(long)]
    pub name: Option<String>,
    /// What a fire does while the previous job is unfinished (default skip).
    #[arg(long, value_enum)]
    pub overlap: Option<OverlapArg>,
    /// What happens to fires missed while no server ran (default one).
    #[arg(long, value_enum)]
    pub catch_up: Option<CatchUpArg>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    /// A job JSON file (as `brigade submit --file` takes); otherwise built from the flags.
    #[arg(long, short = 'f', conflicts_with_all = ["kind", "input", "count"])]
    pub file: Option<String>,
    /// Task kind.
    #[arg(long, short = 'k', required_unless_present = "file")]
    pub kind: Option<String>,
    /// Task input as JSON.
    #[arg(long, short = 'i')]
    pub input: Option<String>,
    /// How many tasks of that kind per job.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: u32,
    /// Queue of the job's tasks.
    #[arg(long)]
    pub queue: Option<String>,
}

fn job(args: &AddArgs) -> anyhow::Result<JobSubmit> {
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{path} is not a job (see `brigade submit --help`)"));
    }
    let kind = args
        .kind
        .clone()
        .context("say what each fire runs: --kind KIND (or --file job.json)")?;
    let input = match &args.input {
        Some(s) => serde_json::from_str(s).with_context(|| format!("--input is not JSON: {s}"))?,
        None => serde_json::Value::Null,
    };
    let tasks = (0..args.count)
        .map(|_| TaskSpec::new(kind.clone(), input.clone()))
        .collect();
    let mut job = JobSubmit::new(tasks);
    job.name = args.name.clone();
    job.queue = args.queue.clone();
    Ok(job)
}

fn create(args: &AddArgs) -> anyhow::Result<ScheduleCreate> {
    Ok(ScheduleCreate {
        name: args.name.clone(),
        cron: args.cron.clone(),
        every_ms: args.every_ms,
        timezone: args.timezone.clone(),
        job: job(args)?,
        overlap: args.overlap.map(|o| match o {
            OverlapArg::Allow => Overlap::Allow,
            OverlapArg::Skip => Overlap::Skip,
            OverlapArg::CancelPrevious => Overlap::CancelPrevious,
        }),
        catch_up: args.catch_up.map(|c| match c {
            CatchUpArg::None => CatchUp::None,
            CatchUpArg::One => CatchUp::One,
            CatchUpArg::All => CatchUp::All,
        }),
        paused: args.paused,
    })
}

/// Client errors with advice; an unknown id is a schedule's here.
fn advise(e: brigade_client::ClientError) -> anyhow::Error {
    if e.status().map(|s| s.as_u16()) == Some(404) {
        return anyhow::anyhow!("{e}\n  Check the id; `brigade schedule list` shows them.");
    }
    explain(e)
}

/// A time as RFC 3339 (UTC), as the API writes it.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn next_fire(s: &ScheduleView) -> String {
    match s.next_fire_at {
        Some(t) => rfc3339(t),
        None if s.paused => "paused".to_owned(),
        None => "never".to_owned(),
    }
}

fn when(s: &ScheduleView) -> String {
    match (&s.cron, s.every_ms) {
        (Some(c), _) if s.timezone != "UTC" => format!("{c} ({})", s.timezone),
        (Some(c), _) => c.clone(),
        (None, Some(ms)) => format!("every {ms} ms"),
        (None, None) => String::new(),
    }
}

fn print_schedule(s: &ScheduleView) {
    println!("schedule  {}", s.id);
    if let Some(n) = &s.name {
        println!("name      {n}");
    }
    println!("when      {}", when(s));
    println!("next      {}", next_fire(s));
    println!(
        "policy    overlap {}, catch_up {}",
        s.overlap.as_str(),
        s.catch_up.as_str()
    );
    if let (Some(j), Some(at)) = (&s.last_job_id, s.last_fire_at) {
        println!("last job  {j} (fire of {})", rfc3339(at));
    }
}

/// Run a schedule command.
pub async fn run(cmd: ScheduleCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let c = client(global)?;
    let view = match cmd {
        ScheduleCommand::Add(args) => c.create_schedule(&create(&args)?).await,
        ScheduleCommand::Pause { id } => c.pause_schedule(&id).await,
        ScheduleCommand::Resume { id } => c.resume_schedule(&id).await,
        ScheduleCommand::Trigger { id } => {
            let job = c.trigger_schedule(&id).await.map_err(advise)?;
            match global.output {
                Output::Json => print_json(&job)?,
                Output::Text => print_job(&job),
            }
            return Ok(ExitCode::SUCCESS);
        }
        ScheduleCommand::Rm { id } => {
            c.delete_schedule(&id).await.map_err(advise)?;
            if global.output == Output::Text {
                println!("deleted schedule {id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        ScheduleCommand::List => {
            let all = c.schedules().await.map_err(advise)?;
            if global.output == Output::Json {
                print_json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(&["schedule", "name", "when", "next fire", "last job"]);
            for s in &all {
                t.add_row(vec![
                    s.id.clone(),
                    s.name.clone().unwrap_or_default(),
                    when(s),
                    next_fire(s),
                    s.last_job_id.clone().unwrap_or_default(),
                ]);
            }
            println!("{t}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    .map_err(advise)?;
    match global.output {
        Output::Json => print_json(&view)?,
        Output::Text => print_schedule(&view),
    }
    Ok(ExitCode::SUCCESS)
}
