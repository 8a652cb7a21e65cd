//! The firing decision on a driven clock, DST transitions included.

use brigade_api::{CatchUp, JobSubmit, Overlap, ScheduleCreate, TaskSpec};

use super::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// ms since the epoch of a UTC time.
fn utc(s: &str) -> i64 {
    s.parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn cron(expr: &str, zone: &str) -> When {
    When::from_parts(Some(expr), None, zone, 0).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// The fires in `(from, to]`, following `next_after`.
fn fires(when: &When, from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(n) = when.next_after(t) {
        if n > to {
            break;
        }
        assert!(n > t, "next_after({t}) = {n} went backwards");
        out.push(n);
        t = n;
    }
    out
}

fn all(list: &[&str]) -> Vec<i64> {
    list.iter().map(|s| utc(s)).collect()
}

#[test]
fn paris_spring_forward_fires_a_skipped_time_once_shifted_by_the_gap() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z). 02:30 does not exist.
    let w = cron("30 2 * * *", "Europe/Paris");
    assert_eq!(
        fires(&w, utc("2026-03-27T12:00:00Z"), utc("2026-03-30T12:00:00Z")),
        all(&[
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:30:00Z", // 03:30 CEST: shifted by the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ])
    );
    // 02:00/02:30 shift onto 03:00/03:30, which fire anyway: each instant once.
    let w = cron("0,30 2,3 * * *", "Europe/Paris");
    assert_eq!(
        fires(&w, utc("2026-03-28T23:00:00Z"), utc("2026-03-29T12:00:00Z")),
        all(&["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"])
    );
}

#[test]
fn paris_fall_back_fires_a_repeated_time_once_unless_hourly() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z). 02:30 happens twice.
    let w = cron("30 2 * * *", "Europe/Paris");
    assert_eq!(
        fires(&w, utc("2026-10-24T12:00:00Z"), utc("2026-10-26T12:00:00Z")),
        all(&[
            "2026-10-25T00:30:00Z", // first 02:30 (CEST) only
            "2026-10-26T01:30:00Z", // 02:30 CET
        ])
    );
    // By the hour: every 30 real minutes through the repeated hour.
    let w = cron("*/30 * * * *", "Europe/Paris");
    assert_eq!(
        fires(&w, utc("2026-10-24T23:50:00Z"), utc("2026-10-25T02:10:00Z")),
        all(&[
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ])
    );
}

#[test]
fn new_york_transitions() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
    let w = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        fires(&w, utc("2026-03-07T12:00:00Z"), utc("2026-03-09T12:00:00Z")),
        all(&["2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z"])
    );
    // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z). 01:30 happens twice.
    let w = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        fires(&w, utc("2026-10-31T12:00:00Z"), utc("2026-11-02T12:00:00Z")),
        all(&["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
    );
    let w = cron("0 * * * *", "America/New_York");
    assert_eq!(
        fires(&w, utc("2026-11-01T04:30:00Z"), utc("2026-11-01T07:30:00Z")),
        all(&[
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T07:00:00Z", // 02:00 EST
        ])
    );
}

#[test]
fn utc_and_seconds() {
    let w = cron("*/20 * * * * *", "UTC");
    assert_eq!(
        fires(
            &w,
            utc("2026-12-02T10:00:00.500Z"),
            utc("2026-12-02T10:01:00Z")
        ),
        all(&[
            "2026-12-02T10:00:20Z",
            "2026-12-02T10:00:40Z",
            "2026-12-02T10:01:00Z"
        ])
    );
}

/// A duty running every `step` on a driven clock: the fires it creates jobs for.
fn drive(
    when: &When,
    overlap: Overlap,
    catch_up: CatchUp,
    from: i64,
    to: i64,
    step: i64,
) -> Vec<i64> {
    let mut next = when.next_after(from);
    let mut created = Vec::new();
    let mut now = from;
    while now <= to {
        if let Some(due) = next.filter(|n| *n <= now) {
            let p = plan(when, overlap, catch_up, due, now, false);
            created.extend(p.fires);
            next = p.next_fire_at;
        }
        now += step;
    }
    created
}

#[test]
fn a_driven_clock_through_both_paris_transitions_fires_each_wall_time_once() {
    let w = cron("0 * * * *", "Europe/Paris");
    // Spring: 23 fires on a 23-hour day.
    let spring = drive(
        &w,
        Overlap::Allow,
        CatchUp::One,
        utc("2026-03-28T23:00:00Z"),
        utc("2026-03-29T22:00:00Z"),
        MIN,
    );
    assert_eq!(spring.len(), 23);
    assert!(spring.windows(2).all(|p| p[1] - p[0] == HOUR));
    // Autumn: 25 fires on a 25-hour day.
    let autumn = drive(
        &w,
        Overlap::Allow,
        CatchUp::One,
        utc("2026-10-24T22:00:00Z"),
        utc("2026-10-25T23:00:00Z"),
        MIN,
    );
    assert_eq!(autumn.len(), 25);
    // A daily job at 02:30 runs on both days, once.
    let daily = cron("30 2 * * *", "Europe/Paris");
    for (from, to) in [
        ("2026-03-28T12:00:00Z", "2026-03-29T12:00:00Z"),
        ("2026-10-24T12:00:00Z", "2026-10-25T12:00:00Z"),
    ] {
        let got = drive(
            &daily,
            Overlap::Allow,
            CatchUp::One,
            utc(from),
            utc(to),
            MIN,
        );
        assert_eq!(got.len(), 1, "{from}: {got:?}");
    }
}

fn every(ms: i64) -> When {
    When::Every {
        every_ms: ms,
        anchor: 0,
    }
}

#[test]
fn every_ms_counts_from_its_anchor() {
    let w = every(500);
    assert_eq!(w.next_after(-1), Some(500));
    assert_eq!(w.next_after(0), Some(500));
    assert_eq!(w.next_after(499), Some(500));
    assert_eq!(w.next_after(500), Some(1000));
}

#[test]
fn catch_up_after_downtime() {
    let w = every(1000);
    // Down from 1 s to 10.5 s: fires at 1, 2, ..., 10 s are due.
    let p = plan(&w, Overlap::Allow, CatchUp::All, 1000, 10_500, false);
    assert_eq!(p.fires, (1..=10).map(|s| s * 1000).collect::<Vec<_>>());
    assert_eq!((p.skipped, p.next_fire_at), (0, Some(11_000)));
    let p = plan(&w, Overlap::Allow, CatchUp::One, 1000, 10_500, false);
    assert_eq!((p.fires, p.skipped), (vec![10_000], 9));
    assert_eq!(p.skip_reason, Some(SkipReason::Missed));
    assert_eq!(p.first_skipped, Some(1000));
    // `none`: the fire due now still runs (late by less than the interval).
    let p = plan(&w, Overlap::Allow, CatchUp::None, 1000, 10_500, false);
    assert_eq!((p.fires, p.skipped), (vec![10_000], 9));

    // A daily job missed by seven hours.
    let daily = cron("0 3 * * *", "UTC");
    let due = utc("2026-12-02T03:00:00Z");
    let now = utc("2026-12-02T10:00:00Z");
    let p = plan(&daily, Overlap::Allow, CatchUp::None, due, now, false);
    assert_eq!((p.fires.len(), p.skipped), (0, 1));
    assert_eq!(p.next_fire_at, Some(due + DAY));
    let p = plan(&daily, Overlap::Allow, CatchUp::One, due, now, false);
    assert_eq!((p.fires, p.skipped), (vec![due], 0));
    // Three days down, `one`: one job, for the latest fire.
    let p = plan(
        &daily,
        Overlap::Allow,
        CatchUp::One,
        due,
        now + 2 * DAY,
        false,
    );
    assert_eq!((p.fires, p.skipped), (vec![due + 2 * DAY], 2));
    // `all` past the per-pass bound continues where it stopped.
    let p = plan(&every(10), Overlap::Allow, CatchUp::All, 10, 10_000, false);
    assert_eq!(p.fires.len(), MAX_FIRES_PER_PASS);
    assert_eq!(p.next_fire_at, Some(10 * (MAX_FIRES_PER_PASS as i64 + 1)));
}

#[test]
fn overlap_policies() {
    let w = every(1000);
    let p = plan(&w, Overlap::Skip, CatchUp::One, 1000, 1000, true);
    assert!(p.fires.is_empty());
    assert_eq!((p.skipped, p.skip_reason), (1, Some(SkipReason::Overlap)));
    assert_eq!((p.first_skipped, p.next_fire_at), (Some(1000), Some(2000)));
    let p = plan(&w, Overlap::Skip, CatchUp::One, 1000, 1000, false);
    assert_eq!((p.fires, p.skipped), (vec![1000], 0));
    // `all` with `skip`: the first job makes the rest overlap.
    let p = plan(&w, Overlap::Skip, CatchUp::All, 1000, 3000, false);
    assert_eq!((p.fires, p.skipped), (vec![1000], 2));
    let p = plan(&w, Overlap::Allow, CatchUp::One, 1000, 1000, true);
    assert_eq!((p.fires, p.cancel_previous), (vec![1000], false));
    let p = plan(&w, Overlap::CancelPrevious, CatchUp::All, 1000, 3000, true);
    assert_eq!(
        (p.fires, p.cancel_previous, p.skipped),
        (vec![3000], true, 2)
    );
    let p = plan(&w, Overlap::CancelPrevious, CatchUp::One, 1000, 1000, false);
    assert!(!p.cancel_previous);
}

#[test]
fn a_pass_before_the_fire_does_nothing() {
    let p = plan(
        &every(1000),
        Overlap::Allow,
        CatchUp::All,
        2000,
        1500,
        false,
    );
    assert!(p.fires.is_empty());
    assert_eq!(p.next_fire_at, Some(2000));
}

fn create(cron: Option<&str>, every_ms: Option<u64>, tz: Option<&str>) -> ScheduleCreate {
    ScheduleCreate {
        cron: cron.map(str::to_owned),
        every_ms,
        timezone: tz.map(str::to_owned),
        ..ScheduleCreate::every(
            1,
            JobSubmit::new(vec![TaskSpec::new("noop", serde_json::Value::Null)]),
        )
    }
}

fn fields(r: Result<NewSchedule, Vec<FieldError>>) -> Vec<String> {
    r.err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn validation_names_the_fields() {
    let limits = crate::Limits::default();
    let now = utc("2026-12-02T10:00:00Z");
    let ok = validate_schedule(
        create(Some("0 3 * * *"), None, Some("Europe/Paris")),
        &limits,
        now,
    );
    let ok = ok.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(ok.next_fire_at, Some(utc("2026-12-03T02:00:00Z")));
    assert_eq!((ok.overlap, ok.catch_up), (Overlap::Skip, CatchUp::One));
    assert_eq!(
        fields(validate_schedule(create(None, None, None), &limits, now)),
        ["cron"]
    );
    assert_eq!(
        fields(validate_schedule(
            create(Some("* *"), Some(1000), Some("Mars/Olympus")),
            &limits,
            now
        )),
        ["timezone", "every_ms"]
    );
    assert_eq!(
        fields(validate_schedule(create(None, Some(5), None), &limits, now)),
        ["every_ms"]
    );
    assert_eq!(
        fields(validate_schedule(
            create(Some("0 0 30 2 *"), None, None),
            &limits,
            now
        )),
        ["cron"]
    );
    let mut bad_job = create(None, Some(1000), None);
    bad_job.job.tasks[0].kind = "Bad Kind".into();
    assert_eq!(
        fields(validate_schedule(bad_job, &limits, now)),
        ["job.tasks[0].kind"]
    );
    let mut paused = create(None, Some(1000), None);
    paused.paused = true;
    let p = validate_schedule(paused, &limits, now).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.next_fire_at, None);
}

/// A stored every-1000 ms schedule created at `T`, as the store gives it back.
fn stored_every(t: i64) -> (ScheduleView, i64, Option<i64>) {
    let mut s = ScheduleCreate::every(
        1000,
        JobSubmit::new(vec![TaskSpec::new("noop", serde_json::Value::Null)]),
    );
    s.name = Some("tick".into());
    let new =
        validate_schedule(s, &crate::Limits::default(), t).unwrap_or_else(|e| panic!("{e:?}"));
    let view = ScheduleView {
        id: "s1".into(),
        name: new.name.clone(),
        cron: new.cron.clone(),
        every_ms: new.every_ms,
        timezone: new.timezone.clone(),
        next_fire_at: new.next_fire_at.map(crate::from_ms),
        last_fire_at: None,
        last_job_id: None,
        paused: new.paused,
        job: serde_json::from_str(&new.job).unwrap_or_else(|e| panic!("{e:?}")),
        overlap: new.overlap,
        catch_up: new.catch_up,
        created_at: crate::from_ms(t),
    };
    (view, new.anchor, new.next_fire_at)
}

fn revise(patch: SchedulePatch, now: i64) -> Result<NewSchedule, Vec<FieldError>> {
    let t = utc("2026-03-01T00:00:00Z");
    let (view, anchor, next) = stored_every(t);
    revise_schedule(&view, anchor, next, &patch, &crate::Limits::default(), now)
}

#[test]
fn a_patch_that_does_not_retime_keeps_the_next_fire_and_anchor() {
    let t = utc("2026-03-01T00:00:00Z");
    let now = t + 2500;
    for patch in [
        SchedulePatch {
            name: Some("renamed".into()),
            ..SchedulePatch::default()
        },
        SchedulePatch {
            overlap: Some(Overlap::Allow),
            catch_up: Some(CatchUp::All),
            ..SchedulePatch::default()
        },
        // The same values as stored change nothing either.
        SchedulePatch {
            every_ms: Some(1000),
            timezone: Some("UTC".into()),
            paused: Some(false),
            ..SchedulePatch::default()
        },
    ] {
        let new = revise(patch.clone(), now).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (new.anchor, new.next_fire_at),
            (t, Some(t + 1000)),
            "{patch:?}"
        );
    }
    let renamed = revise(
        SchedulePatch {
            name: Some("renamed".into()),
            ..SchedulePatch::default()
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(renamed.name.as_deref(), Some("renamed"));
    assert_eq!(renamed.every_ms, Some(1000));
}

#[test]
fn a_patch_that_retimes_restarts_from_now() {
    let t = utc("2026-03-01T00:00:00Z");
    let now = t + 2500;
    let faster = revise(
        SchedulePatch {
            every_ms: Some(200),
            ..SchedulePatch::default()
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((faster.anchor, faster.next_fire_at), (now, Some(now + 200)));
    // Giving cron drops every_ms.
    let cron = revise(
        SchedulePatch {
            cron: Some("0 3 * * *".into()),
            timezone: Some("Europe/Paris".into()),
            ..SchedulePatch::default()
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(cron.every_ms, None);
    assert_eq!(cron.next_fire_at, Some(utc("2026-03-01T02:00:00Z")));
    // Pause clears the next fire; resume fires from now, not from before.
    let paused = revise(
        SchedulePatch {
            paused: Some(true),
            ..SchedulePatch::default()
        },
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(paused.paused);
    assert_eq!(paused.next_fire_at, None);
}

#[test]
fn a_bad_patch_names_its_field() {
    let now = utc("2026-03-01T00:00:01Z");
    let field = |patch: SchedulePatch| -> String {
        revise(patch, now)
            .err()
            .unwrap_or_else(|| panic!("accepted"))
            .remove(0)
            .field
    };
    assert_eq!(
        field(SchedulePatch {
            timezone: Some("Nowhere/Town".into()),
            ..SchedulePatch::default()
        }),
        "timezone"
    );
    assert_eq!(
        field(SchedulePatch {
            cron: Some("* *".into()),
            ..SchedulePatch::default()
        }),
        "cron"
    );
    assert_eq!(
        field(SchedulePatch {
            cron: Some("* * * * *".into()),
            every_ms: Some(1000),
            ..SchedulePatch::default()
        }),
        "every_ms"
    );
    assert_eq!(
        field(SchedulePatch {
            every_ms: Some(1),
            ..SchedulePatch::default()
        }),
        "every_ms"
    );
}

#[test]
fn the_stored_job_is_judged_only_when_a_patch_replaces_it() {
    let t = utc("2026-03-01T00:00:00Z");
    let (view, anchor, next) = stored_every(t);
    let tight = crate::Limits {
        max_tasks_per_job: 1,
        max_input_bytes: 1,
    };
    let pause = SchedulePatch {
        paused: Some(true),
        ..SchedulePatch::default()
    };
    // The stored job's input (`null`, 4 bytes) is over the shrunk limit, yet
    // the owner may pause it.
    let paused = revise_schedule(&view, anchor, next, &pause, &tight, t + 10);
    assert!(paused.is_ok_and(|p| p.paused));
    let replace = SchedulePatch {
        job: Some(view.job.clone()),
        ..SchedulePatch::default()
    };
    let errors = revise_schedule(&view, anchor, next, &replace, &tight, t + 10)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(
        errors.iter().all(|e| e.field.starts_with("job.")),
        "{errors:?}"
    );
}
