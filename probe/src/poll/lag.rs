//! Loop lag: a heartbeat task on the service's runtime sleeps until a deadline and measures how
//! late it is polled after it. Works without `tokio_unstable`: it needs only a timer.

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;

use tokio::time::Instant;

use crate::state::Shared;

/// File of the heartbeat's spawn call, so the aggregator can mark its location as internal.
pub(crate) const HEARTBEAT_FILE: &str = file!();

/// Dropped with the heartbeat task. Dropped before the probe was stopped, the task was dropped by
/// its runtime's shutdown: the runtime the probe was started on is gone, and with it loop lag,
/// runtime metrics and task dumps, while stalls on other runtimes the probe is installed on are
/// still seen. `process.missing` says so until the probe is started again (a service that
/// rebuilds its runtime without restarting the probe used to get stale figures, said nowhere).
struct RuntimeGone {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Drop for RuntimeGone {
    fn drop(&mut self) {
        if !self.stop.load(Acquire) {
            self.shared.runtime_gone.store(true, Release);
        }
    }
}

/// Spawns the heartbeat. Returns `false` (and spawns nothing) when the runtime has no timer.
pub(crate) fn spawn_heartbeat(shared: &Arc<Shared>, handle: &tokio::runtime::Handle, stop: Arc<AtomicBool>) -> bool {
    // `tokio::time::sleep` panics on a runtime built without `enable_time`, and Tokio has no
    // way to ask. With unwinding, find out here, inside the runtime's context, rather than inside
    // the task (the host's panic hook still prints that one caught panic). Under
    // `panic = "abort"` that check would abort the host: trust `install`, which enables the
    // timer on the builder it is given, and without it measure no lag (`process.missing` says
    // why). Do not turn this into an unconditional `catch_unwind`.
    let has_timer = if cfg!(panic = "unwind") {
        let _enter = handle.enter();
        std::panic::catch_unwind(|| drop(tokio::time::sleep(std::time::Duration::ZERO))).is_ok()
    } else {
        shared.installed.load(Relaxed)
    };
    if !has_timer {
        return false;
    }
    let shared = shared.clone();
    let period = shared.config.heartbeat_interval;
    let gone = RuntimeGone { shared: shared.clone(), stop: stop.clone() };
    handle.spawn(async move {
        let _gone = gone;
        let mut deadline = Instant::now() + period;
        while !stop.load(Acquire) {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            let lag = now.saturating_duration_since(deadline);
            let ns = lag.as_nanos().min(u64::MAX as u128) as u64;
            shared.lag.record_ns(ns);
            shared.lag_last_ns.store(ns, Relaxed);
            shared.lag_interval_max_ns.fetch_max(ns, Relaxed);
            deadline += period;
            if deadline < now {
                // After a long stall, skip the missed beats instead of firing them back to back.
                deadline = now + period;
            }
        }
    });
    true
}
