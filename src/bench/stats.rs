//! Latency samples and the figures printed from them.

/// Durations in milliseconds, summarised as percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ms: Vec<f64>,
    sorted: bool,
}

impl Samples {
    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ms: Vec::with_capacity(n),
            sorted: true,
        }
    }

    /// Add one sample.
    pub fn push(&mut self, d: std::time::Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
        self.sorted = false;
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.ms.len()
    }

    /// The value below which a fraction `p` (0..=1) of the samples lie
    /// (nearest rank); 0 without samples.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if !self.sorted {
            self.ms.sort_by(|a, b| a.total_cmp(b));
            self.sorted = true;
        }
        percentile(&self.ms, p)
    }
}

/// Nearest-rank percentile of sorted values; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn samples_sort_before_answering() {
        let mut s = Samples::with_capacity(3);
        for ms in [30, 10, 20] {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.percentile(0.5), 20.0);
    }
}
