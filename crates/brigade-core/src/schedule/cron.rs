//! Cron expressions: 5 fields (`minute hour day-of-month month day-of-week`)
//! or 6 with seconds first, matched against wall-clock (civil) times.
//!
//! Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n` or
//! `a/n`, or a comma list of those. Months take `jan`–`dec`, days of the
//! week `sun`–`sat` (0 and 7 are Sunday). As in Vixie cron, when both the
//! day of the month and the day of the week are restricted (neither starts
//! with `*`), a day matches if either does.

use jiff::civil::{Date, DateTime, Time};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_any: bool,
    weekdays_any: bool,
    hours_any: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Years searched ahead for a match before giving up: enough for a
/// 29 February that must fall on a given weekday.
const SEARCH_YEARS: i16 = 30;

fn number(s: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    s.parse::<u32>().map_err(|_| {
        format!(
            "{s:?} is not a number{}",
            if names.is_empty() { "" } else { " or a name" }
        )
    })
}

/// The bits of one field, `lo..=hi`.
fn field(spec: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    if spec.is_empty() {
        return Err("empty field".into());
    }
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("step {s:?} must be a positive number"))?;
                (r, Some(step))
            }
            None => (part, None),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, names, name_base)?, number(b, names, name_base)?)
        } else {
            let a = number(range, names, name_base)?;
            // `a/n` runs from a to the end of the range.
            (a, if step.is_some() { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{range:?} is outside {lo}-{hi}"));
        }
        let step = step.unwrap_or(1);
        let mut v = a;
        while v <= b {
            bits |= 1u64 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn has(bits: u64, v: i8) -> bool {
    v >= 0 && bits & (1u64 << v) != 0
}

/// The smallest value of `bits` at least `from`, up to `hi`.
fn next_in(bits: u64, from: i8, hi: i8) -> Option<i8> {
    (from.max(0)..=hi).find(|v| has(bits, *v))
}

impl Cron {
    /// Parse 5 or 6 whitespace-separated fields.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "expected 5 fields (or 6 with seconds first), got {n}"
                ));
            }
        };
        let named = |what: &str, r: Result<u64, String>| r.map_err(|e| format!("{what}: {e}"));
        let seconds = named("seconds", field(sec, 0, 59, &[], 0))?;
        let minutes = named("minute", field(rest[0], 0, 59, &[], 0))?;
        let hours = named("hour", field(rest[1], 0, 23, &[], 0))? as u32;
        let days = named("day of month", field(rest[2], 1, 31, &[], 0))? as u32;
        let months = named("month", field(rest[3], 1, 12, &MONTHS, 1))? as u16;
        let mut weekdays = named("day of week", field(rest[4], 0, 7, &WEEKDAYS, 0))?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let starts_any = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(Self {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays: weekdays as u8,
            days_any: starts_any(rest[2]),
            weekdays_any: starts_any(rest[4]),
            hours_any: rest[1] == "*",
        })
    }

    /// Whether the hour field is `*`: the expression fires by the hour, so in a
    /// repeated (fall-back) hour it fires in both passes.
    pub fn every_hour(&self) -> bool {
        self.hours_any
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first wall-clock time at or after `from` (to the second) that matches,
    /// or `None` when none does within the search horizon.
    pub fn next_match(&self, from: DateTime) -> Option<DateTime> {
        let horizon = from.year().saturating_add(SEARCH_YEARS);
        let mut date = from.date();
        let (mut h, mut m, mut s) = (from.hour(), from.minute(), from.second());
        loop {
            if date.year() > horizon {
                return None;
            }
            if self.months & (1 << date.month()) == 0 {
                // First day of the next month.
                date = date
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1))
                    .ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            if !self.day_matches(date) {
                date = date.tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            let Some(hh) = next_in(u64::from(self.hours), h, 23) else {
                date = date.tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            };
            if hh != h {
                (h, m, s) = (hh, 0, 0);
            }
            let Some(mm) = next_in(self.minutes, m, 59) else {
                (h, m, s) = (h + 1, 0, 0);
                if h > 23 {
                    date = date.tomorrow().ok()?;
                    (h, m, s) = (0, 0, 0);
                }
                continue;
            };
            if mm != m {
                (m, s) = (mm, 0);
            }
            let Some(ss) = next_in(self.seconds, s, 59) else {
                (m, s) = (m + 1, 0);
                if m > 59 {
                    (h, m) = (h + 1, 0);
                    if h > 23 {
                        date = date.tomorrow().ok()?;
                        (h, m, s) = (0, 0, 0);
                    }
                }
                continue;
            };
            return Some(date.to_datetime(Time::new(h, m, ss, 0).ok()?));
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;

    fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> DateTime {
        date(y, mo, d).at(h, mi, s, 0)
    }

    fn next(expr: &str, from: DateTime) -> Option<DateTime> {
        Cron::parse(expr).ok()?.next_match(from)
    }

    #[test]
    fn five_and_six_fields() {
        let from = at(2026, 12, 2, 10, 17, 30);
        assert_eq!(next("0 3 * * *", from), Some(at(2026, 12, 3, 3, 0, 0)));
        assert_eq!(next("*/15 * * * *", from), Some(at(2026, 12, 2, 10, 30, 0)));
        assert_eq!(
            next("*/10 * * * * *", from),
            Some(at(2026, 12, 2, 10, 17, 30))
        );
        assert_eq!(
            next("5 17 10 * * *", from),
            Some(at(2026, 12, 3, 10, 17, 5))
        );
        assert_eq!(next("0 0 1 jan *", from), Some(at(2027, 1, 1, 0, 0, 0)));
        // 2026-12-04 is a Friday.
        assert_eq!(next("0 9 * * fri", from), Some(at(2026, 12, 4, 9, 0, 0)));
        assert_eq!(next("0 9 * * 7", from), Some(at(2026, 12, 6, 9, 0, 0)));
        assert_eq!(
            next("59 23 31 12 *", from),
            Some(at(2026, 12, 31, 23, 59, 0))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // The 15th, or any Monday: Monday 2026-12-07 comes first.
        let from = at(2026, 12, 2, 0, 0, 0);
        assert_eq!(next("0 0 15 * mon", from), Some(at(2026, 12, 7, 0, 0, 0)));
        // `*/2` starts with `*`: both must hold (an odd day that is a Monday).
        assert_eq!(next("0 0 */2 * mon", from), Some(at(2026, 12, 7, 0, 0, 0)));
        assert_eq!(next("0 0 */2 * tue", from), Some(at(2026, 12, 15, 0, 0, 0)));
    }

    #[test]
    fn impossible_dates_never_match_and_leap_days_wait() {
        assert_eq!(next("0 0 30 2 *", at(2026, 1, 1, 0, 0, 0)), None);
        assert_eq!(
            next("0 0 29 2 *", at(2026, 1, 1, 0, 0, 0)),
            Some(at(2028, 2, 29, 0, 0, 0))
        );
    }

    #[test]
    fn bad_fields_are_named() {
        for (expr, want) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "minute"),
            ("x * * * *", "minute"),
        ] {
            let err = Cron::parse(expr).err().unwrap_or_default();
            assert!(err.contains(want), "{expr}: {err}");
        }
    }
}
