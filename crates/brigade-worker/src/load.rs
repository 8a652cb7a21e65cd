//! The host's load as the worker reports it: CPU and memory use from /proc.

use std::fs;

/// Samples CPU use between calls.
#[derive(Debug, Default)]
pub struct LoadSampler {
    last: Option<(u64, u64)>,
}

impl LoadSampler {
    /// A sampler; the first CPU reading covers the time since boot.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPU use (0..1) since the previous call.
    pub fn cpu(&mut self) -> f64 {
        let Some((busy, total)) = read_cpu() else {
            return 0.0;
        };
        let ratio = match self.last {
            Some((b0, t0)) if total > t0 => (busy.saturating_sub(b0)) as f64 / (total - t0) as f64,
            _ if total > 0 => busy as f64 / total as f64,
            _ => 0.0,
        };
        self.last = Some((busy, total));
        ratio.clamp(0.0, 1.0)
    }
}

/// (busy, total) jiffies of all CPUs.
fn read_cpu() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if nums.len() < 4 {
        return None;
    }
    let total: u64 = nums.iter().sum();
    // idle + iowait are not busy.
    let idle = nums[3] + nums.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Memory in use (0..1): 1 - MemAvailable/MemTotal.
pub fn memory() -> f64 {
    let Ok(info) = fs::read_to_string("/proc/meminfo") else {
        return 0.0;
    };
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(total), Some(avail)) if total > 0.0 => (1.0 - avail / total).clamp(0.0, 1.0),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_fractions() {
        let mut s = LoadSampler::new();
        for _ in 0..2 {
            let c = s.cpu();
            assert!((0.0..=1.0).contains(&c));
        }
        assert!((0.0..=1.0).contains(&memory()));
    }
}
