//! Callbacks: which targets a job may name, and when a failed delivery is
//! tried again.
//!
//! A callback makes the server send requests to a URL a client chose, so
//! the server's operator decides which hosts may be named (`--callback-allow`,
//! empty by default): without that a client could make the server reach
//! into the network it sits in. The allow list is checked at submit (422
//! naming `callback.url`) and again before each delivery, so a host taken
//! off the list gets nothing more.

use brigade_api::{CALLBACK_EVENTS, Callback, FieldError};

/// Longest callback URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// How long a delivery is tried for, from the event (24 h).
pub const RETRY_WINDOW_MS: i64 = 24 * 3_600_000;

/// Longest wait between two attempts (1 h).
pub const MAX_DELAY_MS: i64 = 3_600_000;

/// Default wait before the second attempt; doubled after each failure.
pub const DEFAULT_BASE_DELAY_MS: u64 = 5_000;

/// Check a callback's shape (not its host: see [`check_allowed`]), pushing
/// what is wrong to `errors`; the callback with its events deduplicated.
pub fn validate(cb: Callback, errors: &mut Vec<FieldError>) -> Option<Callback> {
    let before = errors.len();
    if cb.url.len() > MAX_URL_BYTES {
        errors.push(FieldError::new(
            "callback.url",
            format!("at most {MAX_URL_BYTES} bytes"),
        ));
    } else {
        match url::Url::parse(&cb.url) {
            Err(e) => errors.push(FieldError::new("callback.url", format!("not a URL: {e}"))),
            Ok(u) => {
                if !matches!(u.scheme(), "https" | "http") {
                    errors.push(FieldError::new(
                        "callback.url",
                        "must be https:// or http://",
                    ));
                } else if u.host_str().is_none_or(str::is_empty) {
                    errors.push(FieldError::new("callback.url", "needs a host"));
                } else if !u.username().is_empty() || u.password().is_some() {
                    errors.push(FieldError::new(
                        "callback.url",
                        "must not carry credentials (the request is signed instead)",
                    ));
                }
            }
        }
    }
    let mut events: Vec<String> = Vec::with_capacity(cb.events.len());
    if cb.events.is_empty() {
        errors.push(FieldError::new(
            "callback.events",
            "name at least one event",
        ));
    }
    for (i, e) in cb.events.into_iter().enumerate() {
        if !CALLBACK_EVENTS.contains(&e.as_str()) {
            errors.push(FieldError::new(
                format!("callback.events[{i}]"),
                format!("one of {}", CALLBACK_EVENTS.join(", ")),
            ));
        } else if !events.contains(&e) {
            events.push(e);
        }
    }
    (errors.len() == before).then_some(Callback {
        url: cb.url,
        events,
    })
}

/// Whether `url`'s host is on `allow`. An entry `host` allows that host on
/// any port, `host:port` that port only; hosts compare case-insensitively
/// (IPv6 literals in brackets: `[::1]:8080`). An empty list allows nothing.
pub fn host_allowed(url: &str, allow: &[String]) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let port = u.port_or_known_default();
    allow.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry == host {
            return true;
        }
        match entry.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') => {
                h == host && p.parse::<u16>().ok() == port
            }
            _ => false,
        }
    })
}

/// A job's callback, if it has one, must name an allowed host.
pub fn check_allowed(cb: Option<&Callback>, allow: &[String]) -> Result<(), FieldError> {
    match cb {
        Some(cb) if !host_allowed(&cb.url, allow) => Err(FieldError::new(
            "callback.url",
            if allow.is_empty() {
                "this server sends no callbacks (it has no --callback-allow list)".to_owned()
            } else {
                "its host is not on this server's --callback-allow list".to_owned()
            },
        )),
        _ => Ok(()),
    }
}

/// After attempt `attempts` (from 1) of a delivery created at `created_at`
/// failed at `now`: when to try again, or `None` once the 24 h window is
/// over. Waits `base_ms` after the first failure, doubling each time, at
/// most [`MAX_DELAY_MS`]; the last attempt falls at the window's end.
pub fn retry_at(attempts: u32, created_at: i64, now: i64, base_ms: u64) -> Option<i64> {
    let end = created_at.saturating_add(RETRY_WINDOW_MS);
    if now >= end {
        return None;
    }
    let base = i64::try_from(base_ms).unwrap_or(MAX_DELAY_MS).max(1);
    let shift = attempts.saturating_sub(1).min(40);
    let delay = base.saturating_mul(1_i64 << shift).min(MAX_DELAY_MS);
    Some(now.saturating_add(delay).min(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(cb: Callback) -> Vec<String> {
        let mut e = Vec::new();
        validate(cb, &mut e);
        e.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn shapes_are_checked() {
        assert!(errs(Callback::new("https://h.example/x")).is_empty());
        assert_eq!(errs(Callback::new("nope")), ["callback.url"]);
        assert_eq!(errs(Callback::new("ftp://h/x")), ["callback.url"]);
        assert_eq!(errs(Callback::new("https://u:p@h/x")), ["callback.url"]);
        let mut cb = Callback::new("https://h/x");
        cb.events = vec!["job.started".into()];
        assert_eq!(errs(cb.clone()), ["callback.events[0]"]);
        cb.events.clear();
        assert_eq!(errs(cb), ["callback.events"]);
        let mut twice = Callback::new("https://h/x");
        twice.events.push("job.finished".into());
        let mut e = Vec::new();
        assert_eq!(validate(twice, &mut e).map(|c| c.events.len()), Some(1));
    }

    #[test]
    fn hosts_need_the_allow_list() {
        let allow = vec!["hooks.example.com".to_owned(), "127.0.0.1:9000".to_owned()];
        assert!(host_allowed("https://hooks.example.com/a", &allow));
        assert!(host_allowed("https://HOOKS.example.com:8443/a", &allow));
        assert!(host_allowed("http://127.0.0.1:9000/a", &allow));
        assert!(!host_allowed("http://127.0.0.1:9001/a", &allow));
        assert!(!host_allowed("https://evil.example.com/a", &allow));
        assert!(!host_allowed("https://hooks.example.com.evil.io/a", &allow));
        assert!(!host_allowed("https://hooks.example.com/a", &[]));
        let cb = Callback::new("https://elsewhere/x");
        assert_eq!(
            check_allowed(Some(&cb), &allow).map_err(|e| e.field),
            Err("callback.url".to_owned())
        );
        assert!(check_allowed(None, &[]).is_ok());
    }

    #[test]
    fn retries_back_off_and_stop_after_a_day() {
        assert_eq!(retry_at(1, 0, 0, 1000), Some(1000));
        assert_eq!(retry_at(2, 0, 1000, 1000), Some(3000));
        assert_eq!(retry_at(3, 0, 3000, 1000), Some(7000));
        // Capped at an hour, and never past the window.
        assert_eq!(retry_at(30, 0, 10, 1000), Some(10 + MAX_DELAY_MS));
        assert_eq!(
            retry_at(30, 0, RETRY_WINDOW_MS - 5, 1000),
            Some(RETRY_WINDOW_MS)
        );
        assert_eq!(retry_at(31, 0, RETRY_WINDOW_MS, 1000), None);
    }
}
