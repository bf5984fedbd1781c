//! Runtime metrics through tokio-metrics' `RuntimeMonitor`, one interval per aggregator tick.

use stallscope_wire::RuntimeStats;

pub(crate) struct Monitor {
    intervals: Box<dyn Iterator<Item = tokio_metrics::RuntimeMetrics> + Send>,
    /// The last sample that covered a real interval, for rates when a refresh comes right
    /// after a tick.
    last_full: Option<RuntimeStats>,
    handle: tokio::runtime::Handle,
    /// Each worker's busy time when the probe started.
    busy_at_start: Vec<std::time::Duration>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Monitor")
    }
}

impl Monitor {
    pub(crate) fn new(handle: &tokio::runtime::Handle) -> Monitor {
        let monitor = tokio_metrics::RuntimeMonitor::new(handle);
        let busy_at_start = worker_busy(handle);
        Monitor { intervals: Box::new(monitor.intervals()), last_full: None, handle: handle.clone(), busy_at_start }
    }

    /// Gauges now, and rates over the time since the previous call (or, when that is shorter
    /// than `min_interval`, over the last interval that was not).
    pub(crate) fn sample(&mut self, min_interval: std::time::Duration) -> Option<RuntimeStats> {
        let m = self.intervals.next()?;
        let workers = (m.workers_count as f64).max(1.0);
        // tokio-metrics' busy_ratio sums busy time over workers; average it per worker.
        #[allow(unused_mut)]
        let mut s = RuntimeStats {
            workers: m.workers_count as u64,
            live_tasks: m.live_tasks_count as u64,
            busy_ratio: (m.busy_ratio() / workers).clamp(0.0, 1.0),
            global_queue_depth: m.global_queue_depth as u64,
            parks: m.total_park_count,
            ..RuntimeStats::default()
        };
        let busy: Vec<u64> = worker_busy(&self.handle)
            .iter()
            .enumerate()
            .map(|(i, d)| d.saturating_sub(self.busy_at_start.get(i).copied().unwrap_or_default()).as_nanos() as u64)
            .collect();
        s.busy_ns = busy.iter().sum();
        s.worker_busy_ns = busy;
        #[cfg(tokio_unstable)]
        {
            s.local_queue_depth = m.total_local_queue_depth as u64;
            s.steals = m.total_steal_count;
            s.polls = m.total_polls_count;
            s.blocking_threads = m.blocking_threads_count as u64;
            s.idle_blocking_threads = m.idle_blocking_threads_count as u64;
            s.blocking_queue_depth = m.blocking_queue_depth as u64;
        }
        if m.elapsed < min_interval {
            if let Some(full) = &self.last_full {
                s.busy_ratio = full.busy_ratio;
                s.steals = full.steals;
                s.parks = full.parks;
                s.polls = full.polls;
            }
        } else {
            self.last_full = Some(s.clone());
        }
        Some(s)
    }
}

/// Each worker's busy time so far, by Tokio's worker index (exact: Tokio's own accounting).
fn worker_busy(handle: &tokio::runtime::Handle) -> Vec<std::time::Duration> {
    let m = handle.metrics();
    (0..m.num_workers()).map(|i| m.worker_total_busy_duration(i)).collect()
}
