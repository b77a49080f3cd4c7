//! Recent activity for the dashboard: requests per ten seconds over the
//! last ten minutes, and the latest events.

use std::collections::VecDeque;

/// Seconds per bucket of the dashboard's request chart.
pub(crate) const BUCKET_SECS: i64 = 10;
/// Buckets the chart shows (10 minutes).
const BUCKETS: usize = 60;
/// Events the dashboard lists.
const EVENTS: usize = 50;

/// Recent activity, bounded.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// (bucket start in Unix seconds, answered, failed), oldest first.
    buckets: VecDeque<(i64, u64, u64)>,
    /// (Unix seconds, text), oldest first.
    events: VecDeque<(i64, String)>,
}

impl Activity {
    /// Counts one answered (`ok`) or failed request at `now_secs`.
    pub(crate) fn count(&mut self, now_secs: i64, ok: bool) {
        let bucket = now_secs - now_secs.rem_euclid(BUCKET_SECS);
        if self.buckets.back().is_none_or(|b| b.0 != bucket) {
            self.buckets.push_back((bucket, 0, 0));
            while self.buckets.len() > BUCKETS {
                self.buckets.pop_front();
            }
        }
        if let Some(b) = self.buckets.back_mut() {
            if ok {
                b.1 += 1;
            } else {
                b.2 += 1;
            }
        }
    }

    /// Keeps an event's text.
    pub(crate) fn event(&mut self, now_secs: i64, text: String) {
        self.events.push_back((now_secs, text));
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    /// (bucket start, answered, failed), oldest first.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (i64, u64, u64)> + '_ {
        self.buckets.iter().copied()
    }

    /// (time, text), newest first.
    pub(crate) fn events(&self) -> impl Iterator<Item = (i64, &str)> + '_ {
        self.events.iter().rev().map(|(t, e)| (*t, e.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_events_stay_bounded() {
        let mut a = Activity::default();
        for s in 0..(BUCKETS as i64 + 5) * BUCKET_SECS {
            a.count(s, s % 2 == 0);
        }
        assert_eq!(a.buckets().count(), BUCKETS);
        let (start, ok, failed) = a.buckets().last().unwrap();
        assert_eq!((start % BUCKET_SECS, ok, failed), (0, 5, 5));
        for i in 0..EVENTS + 3 {
            a.event(i as i64, format!("e{i}"));
        }
        assert_eq!(a.events().count(), EVENTS);
        assert_eq!(a.events().next().unwrap().1, format!("e{}", EVENTS + 2));
    }
}
