//! Per-second series behind the Overview's sparklines.
//!
//! Ticks arrive every aggregation interval (100 ms by default); each one is folded into the
//! bucket of its second, so a sparkline column is one second whatever the probe's interval.

use std::collections::VecDeque;

/// Seconds of history kept (ten minutes).
pub const HISTORY_SECONDS: usize = 600;

/// One second of the service.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    /// Unix time of the second, in seconds.
    pub unix_s: u64,
    /// Worst interval loop-lag p99 seen in the second, nanoseconds.
    pub lag_p99_ns: u64,
    /// Stalled time that ended in the second, nanoseconds.
    pub stalled_ns: u64,
    /// Live tasks at the last tick of the second.
    pub live_tasks: u64,
    /// Blocking-pool queue depth at the last tick of the second.
    pub blocking_queue: u64,
    /// Waiters on all user pools at the last tick of the second.
    pub pool_waiters: u64,
}

/// What one tick contributes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TickPoint {
    /// When the tick was taken (unix ms).
    pub at_unix_ms: u64,
    /// Loop-lag p99 over the tick's interval.
    pub lag_p99_ns: u64,
    /// Stalled time in the tick's interval.
    pub stalled_ns: u64,
    /// Live tasks.
    pub live_tasks: u64,
    /// Blocking-pool queue depth.
    pub blocking_queue: u64,
    /// Waiters on user pools.
    pub pool_waiters: u64,
}

/// The last [`HISTORY_SECONDS`] seconds, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    seconds: VecDeque<Second>,
}

impl History {
    /// Folds one tick into its second. A tick older than the newest second is folded into the
    /// newest one (clocks do not go back on screen).
    pub fn push(&mut self, p: TickPoint) {
        let unix_s = p.at_unix_ms / 1000;
        let start_new = self.seconds.back().is_none_or(|b| unix_s > b.unix_s);
        if start_new {
            // Seconds with no tick at all (a stalled or paused probe) are shown as gaps of zero.
            if let Some(last) = self.seconds.back().copied() {
                let gap = (unix_s - last.unix_s).saturating_sub(1).min(HISTORY_SECONDS as u64);
                for k in 0..gap {
                    let s = Second { unix_s: last.unix_s + 1 + k, ..Second::default() };
                    self.seconds.push_back(s);
                }
            }
            self.seconds.push_back(Second { unix_s, ..Second::default() });
            while self.seconds.len() > HISTORY_SECONDS {
                self.seconds.pop_front();
            }
        }
        if let Some(b) = self.seconds.back_mut() {
            b.lag_p99_ns = b.lag_p99_ns.max(p.lag_p99_ns);
            b.stalled_ns += p.stalled_ns;
            b.live_tasks = p.live_tasks;
            b.blocking_queue = p.blocking_queue;
            b.pool_waiters = p.pool_waiters;
        }
    }

    /// The seconds kept, oldest first.
    pub fn seconds(&self) -> impl DoubleEndedIterator<Item = &Second> + ExactSizeIterator {
        self.seconds.iter()
    }

    /// The newest second.
    pub fn last(&self) -> Option<&Second> {
        self.seconds.back()
    }

    /// Number of seconds kept.
    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// The last `n` values of `f`, oldest first.
    pub fn tail(&self, n: usize, f: impl Fn(&Second) -> u64) -> Vec<u64> {
        let skip = self.seconds.len().saturating_sub(n);
        self.seconds.iter().skip(skip).map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(ms: u64, stalled: u64, lag: u64) -> TickPoint {
        TickPoint { at_unix_ms: ms, stalled_ns: stalled, lag_p99_ns: lag, live_tasks: ms, ..TickPoint::default() }
    }

    #[test]
    fn ticks_fold_into_seconds() {
        let mut h = History::default();
        h.push(tick(10_000, 5, 7));
        h.push(tick(10_500, 6, 3));
        h.push(tick(11_100, 1, 1));
        assert_eq!(h.len(), 2);
        let s: Vec<_> = h.seconds().copied().collect();
        assert_eq!((s[0].unix_s, s[0].stalled_ns, s[0].lag_p99_ns, s[0].live_tasks), (10, 11, 7, 10_500));
        assert_eq!((s[1].unix_s, s[1].stalled_ns), (11, 1));
    }

    #[test]
    fn gaps_are_zero_seconds_and_history_is_bounded() {
        let mut h = History::default();
        h.push(tick(1_000, 1, 1));
        h.push(tick(4_000, 1, 1));
        assert_eq!(h.tail(10, |s| s.unix_s), vec![1, 2, 3, 4]);
        assert_eq!(h.tail(10, |s| s.stalled_ns), vec![1, 0, 0, 1]);
        for k in 5..2_000 {
            h.push(tick(k * 1000, 0, 0));
        }
        assert_eq!(h.len(), HISTORY_SECONDS);
        assert_eq!(h.last().map(|s| s.unix_s), Some(1_999));
    }

    #[test]
    fn an_older_tick_lands_in_the_newest_second() {
        let mut h = History::default();
        h.push(tick(5_000, 1, 0));
        h.push(tick(4_000, 2, 0));
        assert_eq!(h.len(), 1);
        assert_eq!(h.last().map(|s| s.stalled_ns), Some(3));
    }
}
