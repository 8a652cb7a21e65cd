//! Limits: how many tasks naming a key may run at once, and how many may
//! start per window, cluster-wide.
//!
//! A limit is set on a key (`stripe`) or a pattern (`tenant:*`: every
//! concrete key it matches gets a budget of its own). A task names the keys
//! it counts against; it is leased only while every one of them has room.
//! Concurrency is counted from the tasks running now, so no counter can drift;
//! a rate is a token bucket per concrete key.
//!
//! The store picks limited tasks apart from the others, and a task over
//! budget is *parked* on the key that stopped it: it leaves the scan, so
//! tasks behind it (of other keys, or unlimited) are never held up, and the
//! cost of a full key is paid once per task, not once per lease. [`Budget`]
//! decides which key a task waits on and how many parked tasks a key may
//! let go of now.

use std::collections::HashMap;

use brigade_api::{FieldError, LimitSpec};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Most keys one task may name.
pub const MAX_KEYS_PER_TASK: usize = 8;
/// Largest concurrency, rate or burst accepted.
pub const MAX_COUNT: u32 = 1_000_000;
/// Longest rate window (one day).
pub const MAX_PER_MS: u64 = 86_400_000;
/// The rate window when none is given.
pub const DEFAULT_PER_MS: u64 = 1000;

/// Whether `s` is a concrete key: 1 to 128 bytes of `[A-Za-z0-9:._/@-]`.
pub fn is_valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KEY_BYTES
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'_' | b'/' | b'@' | b'-')
        })
}

/// Whether `s` may name a limit: a concrete key, or a pattern (a key
/// prefix, possibly empty, followed by `*`).
pub fn is_valid_limit_key(s: &str) -> bool {
    match s.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => is_valid_key(prefix),
        None => is_valid_key(s),
    }
}

/// A rate: `count` starts per `per_ms`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts per window.
    pub count: u32,
    /// The window.
    pub per_ms: u64,
    /// The bucket's size: how many may start at once after a quiet spell.
    pub burst: u32,
}

/// A validated limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    /// Most tasks of a key running at once.
    pub concurrency: Option<u32>,
    /// Most starts of a key per window.
    pub rate: Option<Rate>,
}

impl Limit {
    /// The window "started" counts are kept over: the rate's, else a second.
    pub fn window_ms(&self) -> u64 {
        self.rate.map_or(DEFAULT_PER_MS, |r| r.per_ms)
    }
}

/// Validate a limit's body, naming each field at fault.
pub fn validate(spec: &LimitSpec) -> Result<Limit, Vec<FieldError>> {
    let mut errors = Vec::new();
    let count = |field: &str, v: Option<u32>, errors: &mut Vec<FieldError>| {
        if let Some(v) = v
            && !(1..=MAX_COUNT).contains(&v)
        {
            errors.push(FieldError::new(field, format!("must be 1 to {MAX_COUNT}")));
        }
    };
    count("concurrency", spec.concurrency, &mut errors);
    count("rate", spec.rate, &mut errors);
    count("burst", spec.burst, &mut errors);
    if let Some(p) = spec.per_ms
        && !(1..=MAX_PER_MS).contains(&p)
    {
        errors.push(FieldError::new(
            "per_ms",
            format!("must be 1 to {MAX_PER_MS}"),
        ));
    }
    if spec.rate.is_none() {
        for (field, set) in [
            ("per_ms", spec.per_ms.is_some()),
            ("burst", spec.burst.is_some()),
        ] {
            if set {
                errors.push(FieldError::new(field, "only with `rate`"));
            }
        }
    }
    if spec.concurrency.is_none() && spec.rate.is_none() {
        errors.push(FieldError::new(
            "concurrency",
            "give `concurrency`, `rate`, or both",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Limit {
        concurrency: spec.concurrency,
        rate: spec.rate.map(|count| Rate {
            count,
            per_ms: spec.per_ms.unwrap_or(DEFAULT_PER_MS),
            burst: spec.burst.unwrap_or(count),
        }),
    })
}

/// Check the `limits` of a task at `field`: at most
/// [`MAX_KEYS_PER_TASK`] concrete keys; repeats are dropped.
pub fn check_task_keys(
    field: &str,
    keys: Vec<String>,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    if keys.len() > MAX_KEYS_PER_TASK {
        errors.push(FieldError::new(
            field,
            format!("at most {MAX_KEYS_PER_TASK} keys"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        if !is_valid_key(&k) {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "must be 1 to 128 bytes of [A-Za-z0-9:._/@-] (a pattern is for `PUT /v1/limits`)",
            ));
        } else if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// The limit that applies to concrete `key`: its own, else the longest
/// pattern that matches it; `None` when nothing limits it.
pub fn resolve<'a>(key: &str, defs: &'a [(String, Limit)]) -> Option<(&'a str, &'a Limit)> {
    let mut best: Option<(&str, &Limit)> = None;
    for (name, limit) in defs {
        if name == key {
            return Some((name, limit));
        }
        if let Some(prefix) = name.strip_suffix('*')
            && key.starts_with(prefix)
            && best.is_none_or(|(b, _)| b.len() < name.len())
        {
            best = Some((name, limit));
        }
    }
    best
}

/// Whether limit name `name` (a key or a pattern) covers concrete `key`.
pub fn covers(name: &str, key: &str) -> bool {
    match name.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => name == key,
    }
}

/// A token bucket's state, in thousandths of a token (the store keeps
/// integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens held, ×1000.
    pub milli: i64,
    /// When it was last filled.
    pub at: i64,
}

impl Bucket {
    /// A full bucket, as a key that never started anything has.
    pub fn full(rate: &Rate, now: i64) -> Self {
        Self {
            milli: i64::from(rate.burst) * 1000,
            at: now,
        }
    }

    /// The bucket at `now`: tokens accrue at `count / per_ms`, up to `burst`.
    pub fn refilled(self, rate: &Rate, now: i64) -> Self {
        let elapsed = (now - self.at).max(0);
        let cap = i64::from(rate.burst) * 1000;
        let gained =
            i128::from(elapsed) * i128::from(rate.count) * 1000 / i128::from(rate.per_ms.max(1));
        let milli = (i128::from(self.milli) + gained).min(i128::from(cap)) as i64;
        Self {
            milli,
            at: now.max(self.at),
        }
    }

    /// Whole tokens held.
    pub fn whole(&self) -> u32 {
        (self.milli / 1000).max(0) as u32
    }

    /// When the bucket next holds a whole token (`now` if it does).
    pub fn next_token_at(&self, rate: &Rate, now: i64) -> i64 {
        let missing = 1000 - self.milli;
        if missing <= 0 {
            return now;
        }
        // missing/1000 of a token at count/per_ms tokens a ms, rounded up.
        let num = i128::from(missing) * i128::from(rate.per_ms);
        let den = i128::from(rate.count.max(1)) * 1000;
        now + ((num + den - 1) / den) as i64
    }
}

/// A key's use as the store read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Its bucket, `None` when it never started a task under a rate.
    pub bucket: Option<Bucket>,
    /// Start of the current "started" window.
    pub window_at: i64,
    /// Starts in that window.
    pub started: u32,
}

/// What stops a task now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// `key` runs as many as it may: wait until one of them ends.
    Full(String),
    /// `key` has no token: wait until `at`.
    Rate(String, i64),
}

impl Blocked {
    /// The key it waits on.
    pub fn key(&self) -> &str {
        match self {
            Blocked::Full(k) | Blocked::Rate(k, _) => k,
        }
    }

    /// When to look again on a clock (`None`: when a task ends).
    pub fn wake_at(&self) -> Option<i64> {
        match self {
            Blocked::Full(_) => None,
            Blocked::Rate(_, at) => Some(*at),
        }
    }
}

/// The budget of every key one lease looks at: what runs, what the buckets
/// hold, and what this lease took so far.
#[derive(Debug)]
pub struct Budget {
    defs: Vec<(String, Limit)>,
    running: HashMap<String, u32>,
    usage: HashMap<String, Usage>,
    touched: Vec<String>,
    now: i64,
}

impl Budget {
    /// A budget from the limits set, the keys of the tasks running now (one
    /// entry per task and key), and the stored use of keys.
    pub fn new(
        defs: Vec<(String, Limit)>,
        running_keys: impl IntoIterator<Item = String>,
        usage: HashMap<String, Usage>,
        now: i64,
    ) -> Self {
        let mut running: HashMap<String, u32> = HashMap::new();
        for k in running_keys {
            *running.entry(k).or_default() += 1;
        }
        Self {
            defs,
            running,
            usage,
            touched: Vec::new(),
            now,
        }
    }

    /// Whether the stored use of `key` was read (or the key has none).
    pub fn knows(&self, key: &str) -> bool {
        self.usage.contains_key(key)
    }

    /// Add the stored use of keys not known yet.
    pub fn learn(&mut self, usage: HashMap<String, Usage>) {
        for (k, u) in usage {
            self.usage.entry(k).or_insert(u);
        }
    }

    /// How many more tasks of `key` may start now, or what stops the next.
    pub fn room(&mut self, key: &str) -> Result<u32, Blocked> {
        let Some((_, limit)) = resolve(key, &self.defs) else {
            return Ok(u32::MAX);
        };
        let limit = *limit;
        let mut room = u32::MAX;
        if let Some(c) = limit.concurrency {
            let running = self.running.get(key).copied().unwrap_or(0);
            if running >= c {
                return Err(Blocked::Full(key.to_owned()));
            }
            room = c - running;
        }
        if let Some(rate) = limit.rate {
            let now = self.now;
            let u = self.usage.entry(key.to_owned()).or_default();
            let b = u
                .bucket
                .map_or_else(|| Bucket::full(&rate, now), |b| b.refilled(&rate, now));
            u.bucket = Some(b);
            if b.whole() == 0 {
                return Err(Blocked::Rate(key.to_owned(), b.next_token_at(&rate, now)));
            }
            room = room.min(b.whole());
        }
        Ok(room)
    }

    /// Whether a task naming `keys` may start now; if so it is counted as
    /// started, else what stops it (the first key without room).
    pub fn take(&mut self, keys: &[String]) -> Result<(), Blocked> {
        for k in keys {
            self.room(k)?;
        }
        for k in keys {
            let Some((_, limit)) = resolve(k, &self.defs) else {
                continue;
            };
            let limit = *limit;
            *self.running.entry(k.clone()).or_default() += 1;
            let now = self.now;
            let u = self.usage.entry(k.clone()).or_default();
            if let Some(b) = u.bucket.as_mut() {
                b.milli -= 1000;
            }
            if now - u.window_at >= limit.window_ms() as i64 {
                u.window_at = now;
                u.started = 0;
            }
            u.started += 1;
            if !self.touched.contains(k) {
                self.touched.push(k.clone());
            }
        }
        Ok(())
    }

    /// The keys whose use this lease changed, with their use now: to store.
    pub fn changed(&self) -> impl Iterator<Item = (&str, &Usage)> {
        self.touched
            .iter()
            .filter_map(|k| self.usage.get(k).map(|u| (k.as_str(), u)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c: Option<u32>, r: Option<u32>, per: Option<u64>, burst: Option<u32>) -> LimitSpec {
        LimitSpec {
            concurrency: c,
            rate: r,
            per_ms: per,
            burst,
        }
    }

    #[test]
    fn keys_and_patterns() {
        assert!(is_valid_key("tenant:42"));
        assert!(!is_valid_key("tenant:*"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("a b"));
        assert!(is_valid_limit_key("tenant:*"));
        assert!(is_valid_limit_key("*"));
        assert!(!is_valid_limit_key("ten*ant"));
        assert!(!is_valid_limit_key("**"));
    }

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn validation_names_the_fields() {
        assert!(validate(&spec(None, None, None, None)).is_err());
        let fields: Vec<String> = match validate(&spec(Some(0), None, Some(5), None)) {
            Err(e) => e.into_iter().map(|f| f.field).collect(),
            Ok(l) => panic!("accepted {l:?}"),
        };
        assert_eq!(fields, ["concurrency", "per_ms"]);
        let rate = validate(&spec(None, Some(100), None, None)).map(|l| l.rate);
        assert_eq!(
            rate.ok().flatten(),
            Some(Rate {
                count: 100,
                per_ms: 1000,
                burst: 100
            })
        );
    }

    #[test]
    fn the_exact_key_wins_then_the_longest_pattern() -> R {
        let l = |c| Limit {
            concurrency: Some(c),
            rate: None,
        };
        let defs = vec![
            ("*".to_owned(), l(1)),
            ("tenant:*".to_owned(), l(2)),
            ("tenant:4*".to_owned(), l(3)),
            ("tenant:42".to_owned(), l(4)),
        ];
        assert_eq!(resolve("tenant:42", &defs).ok_or("none")?.0, "tenant:42");
        assert_eq!(resolve("tenant:43", &defs).ok_or("none")?.0, "tenant:4*");
        assert_eq!(resolve("tenant:5", &defs).ok_or("none")?.0, "tenant:*");
        assert_eq!(resolve("stripe", &defs).ok_or("none")?.0, "*");
        assert!(resolve("x", &defs[1..]).is_none());
        Ok(())
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let rate = Rate {
            count: 100,
            per_ms: 1000,
            burst: 10,
        };
        let b = Bucket { milli: 0, at: 0 };
        assert_eq!(b.refilled(&rate, 10).whole(), 1);
        assert_eq!(b.refilled(&rate, 55).whole(), 5);
        assert_eq!(b.refilled(&rate, 10_000).whole(), 10);
        assert_eq!(b.next_token_at(&rate, 0), 10);
        let half = Bucket { milli: 500, at: 0 };
        assert_eq!(half.next_token_at(&rate, 0), 5);
    }

    #[test]
    fn concurrency_counts_what_runs_and_what_this_lease_took() {
        let defs = vec![(
            "tenant:*".to_owned(),
            Limit {
                concurrency: Some(2),
                rate: None,
            },
        )];
        let mut b = Budget::new(defs, ["tenant:1".to_owned()], HashMap::new(), 0);
        let t1 = vec!["tenant:1".to_owned()];
        let t2 = vec!["tenant:2".to_owned()];
        assert_eq!(b.take(&t1), Ok(()));
        assert_eq!(b.take(&t1), Err(Blocked::Full("tenant:1".into())));
        // Each concrete key has its own budget.
        assert_eq!(b.take(&t2), Ok(()));
        assert_eq!(b.take(&t2), Ok(()));
        assert_eq!(b.room("tenant:2"), Err(Blocked::Full("tenant:2".into())));
        // An unlimited key never stops anything.
        assert_eq!(b.take(&["free".to_owned()]), Ok(()));
    }

    #[test]
    fn a_task_of_two_keys_takes_from_both_or_neither() {
        let defs = vec![
            (
                "a".to_owned(),
                Limit {
                    concurrency: Some(1),
                    rate: None,
                },
            ),
            (
                "b".to_owned(),
                Limit {
                    concurrency: Some(5),
                    rate: None,
                },
            ),
        ];
        let mut b = Budget::new(defs, ["a".to_owned()], HashMap::new(), 0);
        let both = vec!["b".to_owned(), "a".to_owned()];
        assert_eq!(b.take(&both), Err(Blocked::Full("a".into())));
        assert_eq!(b.room("b"), Ok(5));
    }

    #[test]
    fn a_rate_spends_tokens_and_says_when_the_next_comes() -> R {
        let defs = vec![(
            "api".to_owned(),
            Limit {
                concurrency: None,
                rate: Some(Rate {
                    count: 2,
                    per_ms: 1000,
                    burst: 2,
                }),
            },
        )];
        let key = vec!["api".to_owned()];
        let mut b = Budget::new(defs.clone(), [], HashMap::new(), 1000);
        assert_eq!(b.take(&key), Ok(()));
        assert_eq!(b.take(&key), Ok(()));
        assert_eq!(b.take(&key), Err(Blocked::Rate("api".into(), 1500)));
        let (_, u) = b.changed().next().ok_or("nothing changed")?;
        assert_eq!(u.started, 2);
        // Half a second later one token is back.
        let usage = HashMap::from([("api".to_owned(), *u)]);
        let mut later = Budget::new(defs, [], usage, 1500);
        assert_eq!(later.room("api"), Ok(1));
        Ok(())
    }
}
