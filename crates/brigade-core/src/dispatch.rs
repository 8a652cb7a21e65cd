//! Which worker may run which task, and who is served first.

use std::collections::BTreeMap;

/// The `key=value` pairs a worker's labels offer: a label `lang=python,c`
/// offers `lang=python` and `lang=c`.
pub fn offered_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels
        .iter()
        .flat_map(|(k, v)| v.split(',').map(move |one| format!("{k}={}", one.trim())))
        .collect()
}

/// Whether a worker carrying `labels` satisfies a task's `requires`.
///
/// Every required label must be present; a worker's value may be a comma list
/// meaning "any of these" (`lang = "python,c"` satisfies `lang = "c"`).
pub fn requires_match(
    requires: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    requires.iter().all(|(key, want)| {
        labels
            .get(key)
            .is_some_and(|have| have.split(',').any(|v| v.trim() == want.as_str()))
    })
}

/// Sort key of a waiting worker: the least loaded is served first.
///
/// Load is running/capacity, then the CPU it reported; ties keep arrival order.
pub fn load_key(running: u32, capacity: u32, cpu: f64) -> (u64, u64) {
    let ratio = if capacity == 0 {
        1.0
    } else {
        f64::from(running) / f64::from(capacity)
    };
    // Scaled to integers so the key is totally ordered.
    ((ratio * 1e6) as u64, (cpu.clamp(0.0, 1.0) * 1e6) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_requires_match_anyone() {
        assert!(requires_match(&map(&[]), &map(&[])));
    }

    #[test]
    fn comma_list_means_any_of() {
        let labels = map(&[("lang", "python,c, java"), ("zone", "eu")]);
        assert!(requires_match(&map(&[("lang", "java")]), &labels));
        assert!(requires_match(
            &map(&[("lang", "c"), ("zone", "eu")]),
            &labels
        ));
        assert!(!requires_match(&map(&[("lang", "rust")]), &labels));
        assert!(!requires_match(&map(&[("gpu", "yes")]), &labels));
    }

    #[test]
    fn less_loaded_sorts_first() {
        assert!(load_key(1, 8, 0.9) < load_key(4, 8, 0.1));
        assert!(load_key(2, 8, 0.1) < load_key(2, 8, 0.5));
        assert!(load_key(0, 0, 0.0) > load_key(7, 8, 1.0));
    }
}
