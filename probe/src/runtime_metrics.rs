//! Runtime metrics through tokio-metrics' `RuntimeMonitor`, one interval per aggregator tick.

use stallscope_wire::RuntimeStats;

pub(crate) struct Monitor {
    intervals: Box<dyn Iterator<Item = tokio_metrics::RuntimeMetrics> + Send>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Monitor")
    }
}

impl Monitor {
    pub(crate) fn new(handle: &tokio::runtime::Handle) -> Monitor {
        let monitor = tokio_metrics::RuntimeMonitor::new(handle);
        Monitor {
            intervals: Box::new(monitor.intervals()),
        }
    }

    /// Metrics for the time since the previous call.
    pub(crate) fn sample(&mut self) -> Option<RuntimeStats> {
        let m = self.intervals.next()?;
        #[allow(unused_mut)]
        let mut s = RuntimeStats {
            workers: m.workers_count as u64,
            live_tasks: m.live_tasks_count as u64,
            busy_ratio: m.busy_ratio().clamp(0.0, 1.0),
            global_queue_depth: m.global_queue_depth as u64,
            parks: m.total_park_count,
            ..RuntimeStats::default()
        };
        #[cfg(tokio_unstable)]
        {
            s.local_queue_depth = m.total_local_queue_depth as u64;
            s.steals = m.total_steal_count;
            s.polls = m.total_polls_count;
            s.blocking_threads = m.blocking_threads_count as u64;
            s.idle_blocking_threads = m.idle_blocking_threads_count as u64;
            s.blocking_queue_depth = m.blocking_queue_depth as u64;
        }
        Some(s)
    }
}
