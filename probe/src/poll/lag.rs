//! Loop lag: a heartbeat task on the service's runtime sleeps until a deadline and measures how
//! late it is polled after it. Works without `tokio_unstable`: it needs only a timer. While the
//! runtime is idle (every worker parked: the watchdog sleeps) the beats space out to one a second
//! (`next_period`), and a worker that wakes meanwhile brings the next beat within one period
//! (`state::HeartbeatNudge`), so a stall right after idle time still shows as lag.

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
    let base = shared.config.heartbeat_interval;
    let gone = RuntimeGone { shared: shared.clone(), stop: stop.clone() };
    handle.spawn(async move {
        let _gone = gone;
        let clk = crate::poll::clock::clock();
        let nudge = &shared.heartbeat;
        let mut period = base;
        let mut deadline = Instant::now() + period;
        let mut last_beat_raw = crate::poll::clock::now_raw();
        let mut deep_sleeps = shared.sampler_costs.watchdog_deep_sleeps.load(Relaxed);
        while !stop.load(Acquire) {
            let ahead = deadline.saturating_duration_since(Instant::now()).as_nanos() as u64;
            nudge.deadline_raw.store(crate::poll::clock::now_raw().saturating_add(clk.ns_to_ticks(ahead)), Release);
            if wait(deadline, &nudge.notify).await {
                // A worker woke while this beat was far off (`HeartbeatNudge`): beat by the
                // watchdog's wake-up plus one period. A nudge from before the last beat (a
                // stored notification) is stale.
                let at = nudge.nudged_raw.load(Acquire);
                if at > last_beat_raw {
                    let since = clk.ticks_to_ns(crate::poll::clock::now_raw().saturating_sub(at));
                    let nudged = Instant::now().checked_sub(std::time::Duration::from_nanos(since));
                    if let Some(catch_up) = nudged.map(|n| n + base).filter(|&c| c < deadline) {
                        deadline = catch_up;
                    }
                }
                continue;
            }
            last_beat_raw = crate::poll::clock::now_raw();
            let now = Instant::now();
            let lag = now.saturating_duration_since(deadline);
            let ns = lag.as_nanos().min(u64::MAX as u128) as u64;
            shared.lag.record_ns(ns);
            shared.lag_last_ns.store(ns, Relaxed);
            shared.lag_interval_max_ns.fetch_max(ns, Relaxed);
            // Idle: the watchdog slept until an unpark since the previous beat, so every worker
            // was parked for a while, and a worker that wakes will nudge this heartbeat. Not
            // without the hooks (`tokio_unstable`), nor while a thread the hooks do not hear
            // keeps the watchdog awake. (Tokio's busy time was tried first: on a loaded host a
            // beat's own wall time, preemptions included, passed for a busy runtime.)
            let sleeps = shared.sampler_costs.watchdog_deep_sleeps.load(Relaxed);
            let idle = cfg!(tokio_unstable) && sleeps != deep_sleeps;
            deep_sleeps = sleeps;
            period = next_period(period, base, idle);
            deadline += period;
            if deadline < now {
                // After a long stall, skip the missed beats instead of firing them back to back.
                deadline = now + period;
            }
        }
    });
    true
}

/// Waits until `deadline` (false) or a nudge from the watchdog (true).
async fn wait(deadline: Instant, notify: &tokio::sync::Notify) -> bool {
    use std::future::Future;
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
    let mut nudged = std::pin::pin!(notify.notified());
    std::future::poll_fn(|cx| {
        if sleep.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(false);
        }
        if nudged.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(true);
        }
        std::task::Poll::Pending
    })
    .await
}

/// Longest period of the heartbeat, reached while the runtime stays idle.
pub(crate) const IDLE_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The next beat's period: the configured one while the runtime is busy, doubling up to
/// [`IDLE_PERIOD`] while it stays idle. Each beat wakes a worker (and, through its unpark, the
/// watchdog), which was most of what an idle service paid for the probe (docs/benchmarks.md,
/// "Idle cost"). Lag is still measured against each beat's own deadline, so a longer period
/// never makes a beat look late; it only samples lag less often while nothing runs to be
/// delayed. A busy runtime goes back to the configured period at the first beat that sees it.
fn next_period(period: std::time::Duration, base: std::time::Duration, idle: bool) -> std::time::Duration {
    if idle {
        (period * 2).min(IDLE_PERIOD.max(base))
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_period_backs_off_while_idle_and_snaps_back_when_busy() {
        let base = Duration::from_millis(25);
        let mut p = base;
        let mut seen = vec![];
        for _ in 0..8 {
            p = next_period(p, base, true);
            seen.push(p.as_millis());
        }
        assert_eq!(seen, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(next_period(p, base, false), base);
        // A configured period above the idle one is kept.
        assert_eq!(next_period(Duration::from_secs(2), Duration::from_secs(2), true), Duration::from_secs(2));
    }
}
