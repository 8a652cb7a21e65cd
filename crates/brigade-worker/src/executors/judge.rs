//! The pure parts of judging a `code` run: comparing output with the
//! expected output, and carrying output in a result of bounded size.
//!
//! No I/O here, so every rule is unit-tested.

use base64::Engine as _;
use brigade_api::code::{Compare, CompareMode, RunFields};

/// Whether `got` matches `expected` under `mode`; on a mismatch, a short
/// note of where (the test's `comment`).
pub fn compare(mode: Compare, expected: &str, got: &[u8]) -> Result<(), String> {
    match mode {
        Compare::Mode(CompareMode::Exact) => {
            if expected.as_bytes() == got {
                Ok(())
            } else {
                let at = expected
                    .bytes()
                    .zip(got.iter())
                    .take_while(|(a, b)| a == *b)
                    .count();
                Err(format!(
                    "differs at byte {at} (expected {} bytes, got {})",
                    expected.len(),
                    got.len()
                ))
            }
        }
        Compare::Mode(CompareMode::Trim) | Compare::Default => {
            let got = String::from_utf8_lossy(got);
            let (e, g) = (trimmed_lines(expected), trimmed_lines(&got));
            for (i, pair) in e.iter().zip(g.iter()).enumerate() {
                if pair.0 != pair.1 {
                    return Err(format!(
                        "line {}: expected `{}`, got `{}`",
                        i + 1,
                        clip(pair.0),
                        clip(pair.1)
                    ));
                }
            }
            if e.len() == g.len() {
                Ok(())
            } else {
                Err(format!("expected {} lines, got {}", e.len(), g.len()))
            }
        }
        Compare::Mode(CompareMode::Tokens) => tokens(expected, got, |a, b| a == b),
        Compare::Float { float: eps } => tokens(expected, got, |a, b| {
            if a == b {
                return true;
            }
            match (number(a), number(b)) {
                (Some(x), Some(y)) => {
                    let d = (x - y).abs();
                    d <= eps || d <= eps * x.abs()
                }
                _ => false,
            }
        }),
    }
}

/// A finite number in decimal notation (not `inf`/`nan`, which `f64::from_str` takes).
fn number(s: &str) -> Option<f64> {
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn tokens(expected: &str, got: &[u8], eq: impl Fn(&str, &str) -> bool) -> Result<(), String> {
    let got = String::from_utf8_lossy(got);
    let mut e = expected.split_whitespace();
    let mut g = got.split_whitespace();
    let mut i = 0usize;
    loop {
        i += 1;
        match (e.next(), g.next()) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) if eq(a, b) => {}
            (Some(a), Some(b)) => {
                return Err(format!(
                    "token {i}: expected `{}`, got `{}`",
                    clip(a),
                    clip(b)
                ));
            }
            (Some(a), None) => {
                return Err(format!(
                    "token {i}: expected `{}`, got the end of the output",
                    clip(a)
                ));
            }
            (None, Some(b)) => return Err(format!("token {i}: unexpected `{}`", clip(b))),
        }
    }
}

/// Lines with trailing whitespace removed, without trailing empty lines.
fn trimmed_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().map(str::trim_end).collect();
    while v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// Captured output on its way into a result: a prefix of what the program
/// wrote, whether all of it was UTF-8, and whether the prefix is all of it.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    bytes: Vec<u8>,
    utf8: bool,
    cut: bool,
}

impl Stream {
    /// Keep at most `keep` bytes of `all` (at a character boundary when it
    /// is text). Whether it is text is decided on all of it.
    pub fn new(mut all: Vec<u8>, keep: usize) -> Self {
        let utf8 = std::str::from_utf8(&all).is_ok();
        let mut cut = false;
        if all.len() > keep {
            cut = true;
            let mut end = keep;
            if utf8 {
                while end > 0 && !is_char_start(all[end]) {
                    end -= 1;
                }
            }
            all.truncate(end);
        }
        Self {
            bytes: all,
            utf8,
            cut,
        }
    }

    /// Size of the whole prefix once encoded as a JSON string's contents.
    fn encoded_len(&self) -> usize {
        if self.utf8 {
            String::from_utf8_lossy(&self.bytes)
                .chars()
                .map(json_width)
                .sum()
        } else {
            self.bytes.len().div_ceil(3) * 4
        }
    }

    /// The carried text, its encoding and whether it was cut, within
    /// `room` bytes of encoded JSON.
    fn encode(&self, room: usize) -> (String, Option<String>, bool) {
        if self.utf8 {
            let text = String::from_utf8_lossy(&self.bytes);
            let mut used = 0;
            let mut end = text.len();
            for (i, c) in text.char_indices() {
                used += json_width(c);
                if used > room {
                    end = i;
                    break;
                }
            }
            let cut = self.cut || end < text.len();
            (text[..end].to_string(), None, cut)
        } else {
            let n = (room / 4 * 3).min(self.bytes.len());
            (
                base64::engine::general_purpose::STANDARD.encode(&self.bytes[..n]),
                Some("base64".into()),
                self.cut || n < self.bytes.len(),
            )
        }
    }
}

fn is_char_start(b: u8) -> bool {
    (b as i8) >= -0x40
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_width(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Encode `streams` into `fields` (pairs of stdout, stderr per run) so that
/// together they take at most `budget` bytes: everyone gets an equal share
/// of what is left, and what a small stream does not use goes to the big
/// ones.
pub fn fill(streams: &[(Stream, Stream)], budget: usize) -> Vec<RunFields> {
    let all: Vec<&Stream> = streams.iter().flat_map(|(o, e)| [o, e]).collect();
    let sizes: Vec<usize> = all.iter().map(|s| s.encoded_len()).collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut room = vec![0usize; all.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (order.len() - k);
        room[i] = sizes[i].min(share);
        left -= room[i];
    }
    streams
        .iter()
        .enumerate()
        .map(|(n, (o, e))| {
            let (stdout, stdout_encoding, stdout_truncated) = o.encode(room[2 * n]);
            let (stderr, stderr_encoding, stderr_truncated) = e.encode(room[2 * n + 1]);
            RunFields {
                stdout,
                stdout_encoding,
                stdout_truncated,
                stderr,
                stderr_encoding,
                stderr_truncated,
                ..RunFields::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(mode: Compare, e: &str, g: &str) -> bool {
        compare(mode, e, g.as_bytes()).is_ok()
    }

    #[test]
    fn trim_ignores_trailing_whitespace_only() {
        let t = Compare::Default;
        assert!(ok(t, "1 2\n3", "1 2  \n3\n\n"));
        assert!(!ok(t, "1 2\n3", "1  2\n3"));
        assert!(!ok(t, "a", "a\nb"));
        assert_eq!(
            compare(t, "a\nb", b"a\nc").unwrap_err(),
            "line 2: expected `b`, got `c`"
        );
    }

    #[test]
    fn exact_tokens_float() {
        let exact = Compare::Mode(CompareMode::Exact);
        assert!(ok(exact, "a\n", "a\n"));
        assert!(!ok(exact, "a\n", "a"));
        let tok = Compare::Mode(CompareMode::Tokens);
        assert!(ok(tok, "1 2\n3", "1\n2   3 "));
        assert!(!ok(tok, "1 2 3", "1 2"));
        let f = Compare::Float { float: 1e-6 };
        assert!(ok(f, "3.14159265 x", "3.1415929 x"));
        assert!(!ok(f, "3.14159265", "3.1416"));
        assert!(ok(f, "1000000000", "1000000100"), "relative");
        assert!(!ok(f, "1 x", "1 y"));
        assert!(!ok(f, "nan", "inf"));
    }

    #[test]
    fn streams_fit_the_budget_and_say_when_cut() {
        let big = Stream::new(vec![b'a'; 10_000], usize::MAX);
        let small = Stream::new(b"hi".to_vec(), usize::MAX);
        let bin = Stream::new(vec![0xff; 3000], usize::MAX);
        let f = fill(&[(big.clone(), small.clone()), (bin, small)], 10_000);
        let total: usize = f.iter().map(|r| r.stdout.len() + r.stderr.len()).sum();
        assert!(total <= 10_000, "{total}");
        assert_eq!(
            f[0].stdout.len(),
            10_000 - 4 - 4000,
            "the rest goes to the big one"
        );
        assert!(f[0].stdout_truncated && !f[0].stderr_truncated);
        assert_eq!(f[0].stderr, "hi");
        assert_eq!(f[1].stdout_encoding.as_deref(), Some("base64"));
        assert_eq!(f[1].stdout.len(), 4000, "3000 bytes fit whole");
        assert!(!f[1].stdout_truncated);
        let all = fill(&[(big, Stream::default())], usize::MAX);
        assert_eq!(all[0].stdout.len(), 10_000);
        assert!(!all[0].stdout_truncated);
    }

    #[test]
    fn text_is_cut_at_a_character() {
        let s = Stream::new("ééé".as_bytes().to_vec(), 3);
        let f = fill(&[(s, Stream::default())], 100);
        assert_eq!(f[0].stdout, "é");
        assert!(f[0].stdout_truncated);
        assert!(f[0].stdout_encoding.is_none());
    }
}
