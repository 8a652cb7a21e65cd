//! The size rules of task logs, shared by both engines.

use brigade_api::logs::{MAX_LOG_BYTES_PER_ATTEMPT, MAX_LOG_LINE_BYTES, TRUNCATED};

/// `line` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut_line(mut line: String, max: usize) -> String {
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// Which of `lines` an attempt that already holds `stored` bytes keeps
/// (nothing once `cut`, its log having been truncated): long lines are cut,
/// and the first line over the budget is replaced by [`TRUNCATED`], after
/// which nothing more is kept.
pub(crate) fn admit(stored: i64, cut: bool, lines: Vec<String>) -> Vec<String> {
    if cut {
        return Vec::new();
    }
    let mut budget = MAX_LOG_BYTES_PER_ATTEMPT.saturating_sub(stored.max(0) as usize);
    let mut kept = Vec::with_capacity(lines.len());
    for line in lines {
        let line = cut_line(line, MAX_LOG_LINE_BYTES);
        if line == TRUNCATED {
            kept.push(line);
            break;
        }
        if line.len() > budget {
            kept.push(TRUNCATED.to_owned());
            break;
        }
        budget -= line.len();
        kept.push(line);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_the_budget_once() {
        let line = "x".repeat(1000);
        let kept = admit(0, false, vec![line.clone(); 100]);
        assert_eq!(kept.len(), MAX_LOG_BYTES_PER_ATTEMPT / 1000 + 1);
        assert_eq!(kept.last().map(String::as_str), Some(TRUNCATED));
        assert!(admit(0, true, vec![line]).is_empty());
        assert_eq!(cut_line("héllo".into(), 2), "h");
    }
}
