//! Unique jobs: whether an earlier job with the same key still holds it, so
//! that a submit answers with that job instead of creating another.

use brigade_api::{FieldError, Unique, UniqueWhile};

/// Longest unique key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// Longest `for_ms` accepted (100 years, as `keep_ms`).
pub const MAX_FOR_MS: u64 = crate::retention::MAX_KEEP_MS;

/// How long an earlier job holds its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until it is this many ms old, finished or not.
    For(u64),
    /// While it is unfinished.
    Unfinished,
}

/// A validated `unique`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    /// The key (per owner).
    pub key: String,
    /// How long the job that takes it holds it.
    pub hold: Hold,
}

/// What the store knows of the job holding a key.
#[derive(Debug, Clone, Copy)]
pub struct Holder {
    /// When it was submitted (ms).
    pub created_at: i64,
    /// Whether it is finished.
    pub finished: bool,
    /// How it holds the key (as it was submitted).
    pub hold: Hold,
}

/// Whether the earlier job `holder` (`None`: deleted) still holds its key at
/// `now`: a new submit with the key is then a duplicate of it.
pub fn holds(holder: Option<Holder>, now: i64) -> bool {
    match holder {
        None => false,
        Some(h) => match h.hold {
            Hold::Unfinished => !h.finished,
            Hold::For(ms) => now < h.created_at.saturating_add(ms.min(MAX_FOR_MS) as i64),
        },
    }
}

/// Validate `unique` of a job (fields named `unique.*`).
pub fn validate(u: Unique, errors: &mut Vec<FieldError>) -> Option<UniqueKey> {
    let before = errors.len();
    if u.key.is_empty() || u.key.len() > MAX_KEY_BYTES {
        errors.push(FieldError::new(
            "unique.key",
            format!("1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    let hold = match (u.for_ms, u.while_) {
        (Some(ms), None) if ms == 0 || ms > MAX_FOR_MS => {
            errors.push(FieldError::new(
                "unique.for_ms",
                format!("1 to {MAX_FOR_MS}"),
            ));
            None
        }
        (Some(ms), None) => Some(Hold::For(ms)),
        (None, Some(UniqueWhile::Unfinished)) => Some(Hold::Unfinished),
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "unique",
                "give either for_ms or while, not both",
            ));
            None
        }
        (None, None) => {
            errors.push(FieldError::new(
                "unique",
                "give for_ms or \"while\": \"unfinished\"",
            ));
            None
        }
    };
    match hold {
        Some(hold) if errors.len() == before => Some(UniqueKey { key: u.key, hold }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(key: &str, for_ms: Option<u64>, w: Option<UniqueWhile>) -> Unique {
        Unique {
            key: key.into(),
            for_ms,
            while_: w,
        }
    }

    #[test]
    fn an_earlier_job_holds_its_key_while_unfinished_or_young() {
        let unfinished = Holder {
            created_at: 1000,
            finished: false,
            hold: Hold::Unfinished,
        };
        assert!(holds(Some(unfinished), 10_000_000));
        assert!(!holds(
            Some(Holder {
                finished: true,
                ..unfinished
            }),
            1001
        ));
        let young = Holder {
            created_at: 1000,
            finished: true,
            hold: Hold::For(500),
        };
        assert!(holds(Some(young), 1499));
        assert!(!holds(Some(young), 1500));
        assert!(!holds(None, 0), "a deleted job holds nothing");
    }

    #[test]
    fn validation_names_the_field() {
        let mut e = Vec::new();
        assert_eq!(
            validate(u("k", Some(10), None), &mut e),
            Some(UniqueKey {
                key: "k".into(),
                hold: Hold::For(10)
            })
        );
        assert!(e.is_empty());
        for (bad, field) in [
            (u("", Some(10), None), "unique.key"),
            (u("k", Some(0), None), "unique.for_ms"),
            (u("k", None, None), "unique"),
            (u("k", Some(5), Some(UniqueWhile::Unfinished)), "unique"),
            (
                u(&"x".repeat(256), None, Some(UniqueWhile::Unfinished)),
                "unique.key",
            ),
        ] {
            let mut e = Vec::new();
            assert_eq!(validate(bad, &mut e), None);
            assert_eq!(e[0].field, field);
        }
    }
}
