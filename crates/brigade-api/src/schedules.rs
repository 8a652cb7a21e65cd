//! Schedules: jobs created on a clock (`/v1/schedules`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::JobSubmit;

/// What a fire does while the previous job of the schedule is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Create the new job anyway.
    Allow,
    /// Create nothing (the fire is skipped, event `schedule.skipped`).
    #[default]
    Skip,
    /// Cancel the previous job, then create the new one.
    CancelPrevious,
}

impl Overlap {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Overlap::Allow,
            "skip" => Overlap::Skip,
            "cancel_previous" => Overlap::CancelPrevious,
            _ => return None,
        })
    }
}

/// What happens to fires missed while no server ran (or all were down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed fires are skipped; only a fire that is due now runs.
    None,
    /// One job stands for all the missed fires.
    #[default]
    One,
    /// One job per missed fire.
    All,
}

impl CatchUp {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => CatchUp::None,
            "one" => CatchUp::One,
            "all" => CatchUp::All,
            _ => return None,
        })
    }
}

/// `POST /v1/schedules`: a job to create on a clock. Exactly one of `cron`
/// and `every_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleCreate {
    /// A name to find it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A cron expression: 5 fields (minute hour day-of-month month day-of-week),
    /// or 6 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Fire every this many milliseconds instead (at least 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The job each fire submits.
    pub job: JobSubmit,
    /// Default `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// Default `one`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// Created paused (default false).
    #[serde(default)]
    pub paused: bool,
}

impl ScheduleCreate {
    /// A schedule firing `job` every `every_ms` milliseconds, other fields defaulted.
    pub fn every(every_ms: u64, job: JobSubmit) -> Self {
        Self {
            name: None,
            cron: None,
            every_ms: Some(every_ms),
            timezone: None,
            job,
            overlap: None,
            catch_up: None,
            paused: false,
        }
    }

    /// A schedule firing `job` on `cron` (UTC), other fields defaulted.
    pub fn cron(cron: impl Into<String>, job: JobSubmit) -> Self {
        Self {
            cron: Some(cron.into()),
            every_ms: None,
            ..Self::every(0, job)
        }
    }
}

/// `PATCH /v1/schedules/{id}`: the fields to change. Giving `cron` drops
/// `every_ms` and the other way round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// New interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// New time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// New job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSubmit>,
    /// New overlap policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// New catch-up policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// Pause or resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    /// Schedule id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Its cron expression, when it has one.
    pub cron: Option<String>,
    /// Its interval, when it has one.
    pub every_ms: Option<u64>,
    /// IANA time zone.
    pub timezone: String,
    /// When it fires next (`null` while paused, or when it never fires again).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_fire_at: Option<OffsetDateTime>,
    /// The fire time of the last job it created.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_fire_at: Option<OffsetDateTime>,
    /// The last job it created.
    pub last_job_id: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// The job each fire submits.
    pub job: JobSubmit,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
