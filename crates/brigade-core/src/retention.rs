//! How long finished jobs are kept: the server's `--retention`, a job's own
//! `keep_ms`, and when a job expires.

/// Default retention of finished jobs: 7 days.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 86_400_000;

/// Longest `keep_ms` a job may ask for: 100 years, far beyond any real need
/// and far below where `finished_at + keep_ms` could overflow.
pub const MAX_KEEP_MS: u64 = 100 * 365 * 86_400_000;

/// When a finished job expires, in ms since the epoch: its own `keep_ms`
/// wins over the server's `default_ms`; `None` while it runs or when it is
/// kept forever (no `keep_ms` and no server retention).
pub fn expires_at(
    finished_at: Option<i64>,
    keep_ms: Option<u64>,
    default_ms: Option<u64>,
) -> Option<i64> {
    let keep = keep_ms.or(default_ms)?;
    let keep = i64::try_from(keep.min(MAX_KEEP_MS)).ok()?;
    finished_at.map(|f| f.saturating_add(keep))
}

/// Parse a retention like `7d`, `12h`, `30m`, `60s` or `500ms` into
/// milliseconds; `0`, `off` and `forever` mean keep forever (`None`).
pub fn parse_retention(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if matches!(t, "0" | "off" | "forever" | "never") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit, for example 7d, 12h, 30m, 60s or 500ms"))?;
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number followed by d, h, m, s or ms"))?;
    let per = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (d, h, m, s or ms)"
            ));
        }
    };
    let ms = n
        .checked_mul(per)
        .filter(|ms| *ms <= MAX_KEEP_MS)
        .ok_or_else(|| format!("{text:?}: at most 100 years"))?;
    if ms == 0 {
        return Ok(None);
    }
    Ok(Some(ms))
}

/// A retention in the shortest unit that says it exactly (`7d`, `90s`, `off`):
/// what `--print-config` shows and what [`parse_retention`] reads back.
pub fn format_retention(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "off".into();
    };
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_own_keep_wins_over_the_servers() {
        assert_eq!(expires_at(Some(1000), Some(10), Some(5000)), Some(1010));
        assert_eq!(expires_at(Some(1000), None, Some(5000)), Some(6000));
        assert_eq!(expires_at(Some(1000), None, None), None);
        assert_eq!(expires_at(None, Some(10), Some(5000)), None);
        assert_eq!(
            expires_at(Some(i64::MAX - 1), Some(10), None),
            Some(i64::MAX)
        );
    }

    #[test]
    fn retentions_parse_and_print_back() {
        assert_eq!(parse_retention("7d"), Ok(Some(DEFAULT_RETENTION_MS)));
        assert_eq!(parse_retention("60s"), Ok(Some(60_000)));
        assert_eq!(parse_retention("500ms"), Ok(Some(500)));
        assert_eq!(parse_retention("12h"), Ok(Some(43_200_000)));
        assert_eq!(parse_retention("off"), Ok(None));
        assert_eq!(parse_retention("0"), Ok(None));
        assert_eq!(parse_retention("0s"), Ok(None));
        for bad in [
            "",
            "7",
            "d",
            "7y",
            "-1d",
            "99999999999999999999d",
            "200000w",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
        for ms in [
            Some(DEFAULT_RETENTION_MS),
            Some(60_000),
            Some(1500),
            None,
            Some(90_000),
        ] {
            assert_eq!(parse_retention(&format_retention(ms)), Ok(ms));
        }
        assert_eq!(format_retention(Some(90_000)), "90s");
    }
}
