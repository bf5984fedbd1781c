//! What each kind of alert means and what to do about it, in general terms: the UI's help
//! lists these, and the probe uses the same "what to do" text in the alerts it raises (the
//! leak alert adds its window).

use crate::AlertKind;

impl AlertKind {
    /// Every kind, in the order help lists them.
    pub const ALL: [AlertKind; 7] = [
        AlertKind::BlockingPoll,
        AlertKind::LeakSuspect,
        AlertKind::PoolSaturated,
        AlertKind::BlockingPoolStarved,
        AlertKind::LoopLag,
        AlertKind::DroppedData,
        AlertKind::CpuStarvation,
    ];

    /// A short name.
    ///
    /// ```
    /// assert_eq!(stallscope_wire::AlertKind::BlockingPoll.title(), "blocking poll");
    /// ```
    pub fn title(self) -> &'static str {
        match self {
            AlertKind::BlockingPoll => "blocking poll",
            AlertKind::LeakSuspect => "task leak suspect",
            AlertKind::PoolSaturated => "pool saturated",
            AlertKind::BlockingPoolStarved => "blocking pool starved",
            AlertKind::LoopLag => "loop lag",
            AlertKind::DroppedData => "probe dropped data",
            AlertKind::CpuStarvation => "waited for a CPU",
        }
    }

    /// What raises it.
    pub fn meaning(self) -> &'static str {
        match self {
            AlertKind::BlockingPoll => {
                "a poll ran longer than the stall threshold (10 ms by default) without yielding its worker"
            }
            AlertKind::LeakSuspect => {
                "a spawn location's live task count grew in every leak window in a row, with its oldest tasks never finishing"
            }
            AlertKind::PoolSaturated => "every unit of a pool is in use and callers are waiting for one",
            AlertKind::BlockingPoolStarved => "spawn_blocking calls are queued and no blocking thread is idle",
            AlertKind::LoopLag => "the probe's heartbeat timer fired late: the workers did not get to it in time",
            AlertKind::DroppedData => "the probe hit one of its bounds and counted what it had to drop",
            AlertKind::CpuStarvation => {
                "polls ran past the stall threshold only because their worker was runnable and got no CPU: \
                 their own CPU and blocked time stayed under the threshold"
            }
        }
    }

    /// What to do about it.
    pub fn what_to_do(self) -> &'static str {
        match self {
            AlertKind::BlockingPoll => {
                "A poll ran without yielding, so every task queued on that worker waited. Move blocking calls to \
                 tokio::task::spawn_blocking, use the async form (tokio::time::sleep, tokio::fs, \
                 tokio::sync::Mutex), or break CPU loops up with tokio::task::yield_now. The flame graph shows \
                 the blocking line."
            }
            AlertKind::LeakSuspect => {
                "Tasks spawned there keep piling up. Check what they wait on (a channel nobody closes, a missing \
                 timeout, a JoinHandle never awaited or aborted) and bound them with a JoinSet, a Semaphore or a \
                 timeout."
            }
            AlertKind::PoolSaturated => {
                "Every unit of the pool is handed out and callers queue for it. Look for holders that keep a \
                 permit or connection across slow awaits, add a timeout to acquisition, or size the pool for the \
                 load."
            }
            AlertKind::BlockingPoolStarved => {
                "spawn_blocking work is waiting for a thread. Something holds the blocking threads for a long \
                 time (sleeps, long file or DNS I/O): shorten it, raise max_blocking_threads, or give long jobs \
                 their own threads."
            }
            AlertKind::LoopLag => {
                "Timers fire late because the workers are busy or blocked. Look at the blocking-poll alerts and \
                 the busy ratio; if there are none, the runtime is simply saturated: add workers or shed load."
            }
            AlertKind::DroppedData => {
                "The probe hit one of its bounds and counted what it lost; figures it shows are still exact where \
                 they say so. Raise the matching builder limit (max_threads, max_locations, event_ring, \
                 max_tracked_tasks) if this persists."
            }
            AlertKind::CpuStarvation => {
                "No code is to blame: the worker thread was ready to run and waited for a CPU. The host is busier \
                 than its cores (other processes, other services' threads, more runtime and blocking threads \
                 than cores) or the service's cgroup CPU quota throttled it. Give the service more CPU or a \
                 larger quota, move noisy neighbours away, or run fewer threads than cores allow; the stalls \
                 view shows how long each poll waited."
            }
        }
    }
}
