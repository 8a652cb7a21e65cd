//! Tasks finished per second over the last minutes, kept in memory from the
//! events this server publishes (its own and, on PostgreSQL, other
//! servers'), so the dashboard's throughput chart starts full rather than
//! empty when a page opens.

use std::collections::VecDeque;
use std::sync::Mutex;

use brigade_api::{Event, EventKind, ThroughputView};

/// Seconds kept.
pub const WINDOW_S: usize = 300;

/// Per-second counts of succeeded and failed tasks.
#[derive(Debug, Default)]
pub struct Throughput {
    /// `(second since the epoch, succeeded, failed)`, oldest first, at most
    /// [`WINDOW_S`] seconds before the newest.
    seconds: Mutex<VecDeque<(i64, u64, u64)>>,
}

impl Throughput {
    /// Count a task's end (other events are ignored).
    pub fn record(&self, e: &Event) {
        let ok = e.is(EventKind::TaskSucceeded);
        if !ok && !e.is(EventKind::TaskFailed) {
            return;
        }
        let sec = e.at.unix_timestamp();
        let Ok(mut q) = self.seconds.lock() else {
            return;
        };
        // Events arrive nearly in order; a late one finds its second near the end.
        if let Some(slot) = q.iter_mut().rev().take(8).find(|(s, _, _)| *s == sec) {
            if ok {
                slot.1 += 1;
            } else {
                slot.2 += 1;
            }
        } else if q.back().is_none_or(|(s, _, _)| *s < sec) {
            q.push_back((sec, u64::from(ok), u64::from(!ok)));
        }
        // (Older than what is kept in order: not worth a reshuffle.)
        while q
            .front()
            .is_some_and(|(s, _, _)| *s <= sec - WINDOW_S as i64)
        {
            q.pop_front();
        }
    }

    /// The last [`WINDOW_S`] seconds up to `now_ms`, oldest first.
    pub fn view(&self, now_ms: i64) -> ThroughputView {
        let until = now_ms.div_euclid(1000);
        let first = until - WINDOW_S as i64 + 1;
        let mut succeeded = vec![0u64; WINDOW_S];
        let mut failed = vec![0u64; WINDOW_S];
        if let Ok(q) = self.seconds.lock() {
            for (s, ok, bad) in q.iter() {
                if (first..=until).contains(s) {
                    let i = (s - first) as usize;
                    succeeded[i] = *ok;
                    failed[i] = *bad;
                }
            }
        }
        ThroughputView {
            interval_ms: 1000,
            until: brigade_core::from_ms(until * 1000),
            succeeded,
            failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(kind: EventKind, ms: i64) -> Event {
        let mut e = Event::new(kind.as_str(), brigade_core::from_ms(ms));
        e.task_id = Some("t".into());
        e
    }

    #[test]
    fn ends_are_counted_in_their_second_and_old_ones_fall_out() {
        let h = Throughput::default();
        for ms in [10_000, 10_500, 11_200] {
            h.record(&ended(EventKind::TaskSucceeded, ms));
        }
        h.record(&ended(EventKind::TaskFailed, 11_900));
        h.record(&ended(EventKind::TaskStarted, 11_900));
        let v = h.view(11_999);
        assert_eq!(v.succeeded.len(), WINDOW_S);
        assert_eq!(
            (
                v.succeeded[WINDOW_S - 2],
                v.succeeded[WINDOW_S - 1],
                v.failed[WINDOW_S - 1]
            ),
            (2, 1, 1)
        );
        // Five minutes on, nothing of that is left.
        h.record(&ended(EventKind::TaskSucceeded, 11_000 + 300_000));
        let v = h.view(11_000 + 300_000);
        assert_eq!(v.succeeded.iter().sum::<u64>(), 1);
    }
}
