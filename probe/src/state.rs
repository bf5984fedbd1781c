//! [`Shared`]: the state the poll hooks, the probe's threads and the handles all see, allocated
//! once by [`ProbeBuilder::build`](crate::ProbeBuilder::build): the settings and the poll timing
//! derived from them, the per-thread slots, the lag histogram, what the probe lost or failed
//! at, the channel to the aggregator, and where its output goes ([`Publisher`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;

use crate::aggregator::msg::Msg;
use crate::config::Config;
use crate::poll::hist::NsHist;
use crate::poll::slots::Slots;
use crate::publish::Publisher;
use crate::sampler::stats::SamplerCosts;
use crate::threads::Threads;

/// State shared by the hooks, the probe's threads and the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) threshold_ticks: u64,
    /// Estimated length past which the watchdog asks an untimed poll's end to read the clock.
    pub(crate) maybe_long_ticks: u64,
    /// Time one poll in this many (a power of two).
    pub(crate) timed_every: u32,
    /// `timed_every - 1`.
    pub(crate) timed_mask: u64,
    pub(crate) slots: Slots,
    pub(crate) lag: NsHist,
    pub(crate) lag_last_ns: AtomicU64,
    /// Largest heartbeat lag since the aggregator last took it (each tick's interval).
    pub(crate) lag_interval_max_ns: AtomicU64,
    /// Sample signal, when sampling is on and the handler is installed.
    pub(crate) signal: Option<i32>,
    pub(crate) sampling_problem: Option<String>,
    pub(crate) installed: AtomicBool,
    pub(crate) running: AtomicBool,
    /// The latest snapshot and the subscribers' queues.
    pub(crate) publisher: Publisher,
    /// Channel to the aggregator while running.
    pub(crate) control: Mutex<Option<SyncSender<Msg>>>,
    /// Panics caught in the probe's threads.
    pub(crate) panics: AtomicU64,
    /// Stack samples requested but not captured.
    pub(crate) samples_lost: AtomicU64,
    /// Watchdog messages lost because the aggregator's queue was full.
    pub(crate) stall_msgs_dropped: AtomicU64,
    /// Stall starts the watchdog has sent or tried to send (counted before the send), and those
    /// of them the full queue lost: with the starts it has handled, the aggregator knows when
    /// every start sent before it read a long-poll record has reached it (`Join::long_poll`).
    pub(crate) stall_starts_sent: AtomicU64,
    pub(crate) stall_starts_lost: AtomicU64,
    /// Whether the heartbeat (loop lag) runs.
    pub(crate) lag_running: AtomicBool,
    /// The runtime `start` was given shut down while the probe ran (`poll::lag`): loop lag,
    /// runtime metrics and task dumps stopped with it. Cleared by the next `start`.
    pub(crate) runtime_gone: AtomicBool,
    /// Problems found after start (server, recorder), shown in `process.missing`.
    pub(crate) problems: Mutex<Vec<String>>,
    /// Where the server listens.
    pub(crate) endpoints: Mutex<Endpoints>,
    /// Clients refused (credentials, limit).
    pub(crate) clients_refused: AtomicU64,
    /// Polls running past the stall threshold now, as of the watchdog's last scan (task dumps are
    /// refused while there are any).
    pub(crate) polls_stalled: AtomicUsize,
    /// What stack sampling has cost (`Probe::sampler_stats`).
    pub(crate) sampler_costs: SamplerCosts,
    /// Whether each probe thread runs, died or could not start (`process.missing`).
    pub(crate) threads: Threads,
    /// The watchdog's sleep while every watched thread is parked, and the park hooks' wake-up.
    pub(crate) sleep: WatchdogSleep,
    /// The heartbeat's next deadline and the watchdog's nudge when a worker wakes while the
    /// heartbeat has backed off (`poll/lag.rs`).
    pub(crate) heartbeat: HeartbeatNudge,
}

/// How the watchdog brings a backed-off heartbeat back (`poll/lag.rs`): while the runtime is
/// idle the heartbeat sleeps up to 1 s, so a stall right after idle time could end before its
/// next beat and show no lag. When a worker's unpark ends the watchdog's deep sleep and a thread
/// is still out of its park one idle period later (not the heartbeat's own beat, which parks
/// again within microseconds), and the heartbeat's deadline is more than its configured period
/// away, the watchdog notifies the heartbeat with the moment it woke (`nudged_raw`); the
/// heartbeat then takes that moment plus its period as its deadline: the beat a heartbeat that
/// never backed off would have had by then at the latest, so the lag it measures is never more
/// than that one would have.
#[derive(Debug, Default)]
pub(crate) struct HeartbeatNudge {
    /// The heartbeat's next deadline (raw clock; 0: no heartbeat), written by the heartbeat.
    pub(crate) deadline_raw: AtomicU64,
    /// When the watchdog woke for the latest nudge (raw clock).
    pub(crate) nudged_raw: AtomicU64,
    pub(crate) notify: tokio::sync::Notify,
}

impl HeartbeatNudge {
    /// Called by the watchdog when an unpark woke it from a deep sleep at `woke` (raw clock) and
    /// the service is still running an idle period later.
    pub(crate) fn nudge_if_far(&self, woke: u64, period_ticks: u64) {
        let deadline = self.deadline_raw.load(Acquire);
        if deadline != 0 && deadline > woke.saturating_add(period_ticks) {
            self.nudged_raw.store(woke, Release);
            self.notify.notify_one();
        }
    }
}

impl Shared {
    /// Records a problem found after start; it shows in every snapshot's `process.missing`.
    pub(crate) fn note_problem(&self, p: String) {
        let mut v = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 16 && !v.contains(&p) {
            v.push(p);
        }
    }
}

/// The watchdog's deep sleep: while every thread it watches is parked (no poll can begin without
/// an unpark first), it sleeps until a worker unparks instead of scanning every threshold / 2,
/// which is what an idle service paid for the probe (`watchdog::run`; docs/architecture.md,
/// "Watchdog sleep").
///
/// No wake-up is lost, by the store-fence-load pattern on both sides (Dekker's): the watchdog
/// stores `asleep`, fences, then reads every slot's park state, and sleeps only if all are still
/// parked; the unpark hook stores its slot's park state (`PollState::run`), fences, then reads
/// `asleep`. With both fences sequentially consistent, at least one side sees the other's store:
/// either the watchdog sees the unpark and does not sleep, or the hook sees `asleep` and wakes it.
/// The sleep is a futex wait on `asleep` itself, which returns at once if a waker cleared it
/// before the wait began. No thread handle is kept, so a probe started again after its guard was
/// dropped (a new watchdog thread) is woken the same way.
#[derive(Debug, Default)]
pub(crate) struct WatchdogSleep {
    /// 1 while the watchdog sleeps (or is about to) until an unpark; set to 0 by the watchdog when
    /// it wakes and by the one waker that takes it (an atomic swap).
    asleep: AtomicU32,
    /// Set by the aggregator while it ticks once a second (`aggregator::IDLE_TICK`); the
    /// watchdog takes it when an unpark wakes it from a deep sleep and sends a drain, which
    /// brings the aggregator's period back at once: a spawn read from the rings a second late
    /// would look a second older (its age is floored at the drain that first sees it).
    pub(crate) aggregator_idle: AtomicBool,
}

impl WatchdogSleep {
    /// The watchdog's half: publishes that it is about to sleep. The caller must then check
    /// every slot again (the fence is here), [`sleep`](Self::sleep) only if they are all still
    /// parked, and call [`awake`](Self::awake) once it wakes or decides not to sleep.
    pub(crate) fn announce(&self) {
        self.asleep.store(1, SeqCst);
        fence(SeqCst);
    }

    /// Sleeps until a waker clears `asleep` (at once if one already did), `timeout` passes, or a
    /// signal interrupts (an early wake only costs one scan). Returns whether a waker cleared it.
    pub(crate) fn sleep(&self, timeout: std::time::Duration) -> bool {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT on a live, aligned u32 with a valid relative timeout; the kernel
        // compares the word to 1 and sleeps only if it still is.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.asleep.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                1u32,
                &ts as *const libc::timespec,
            );
        }
        self.asleep.load(SeqCst) == 0
    }

    /// The watchdog is awake (or decided not to sleep after all).
    pub(crate) fn awake(&self) {
        self.asleep.store(0, SeqCst);
    }

    /// Whether the watchdog is asleep until an unpark (every watched thread was parked when it
    /// looked). The aggregator ticks less often while it is.
    pub(crate) fn is_asleep(&self) -> bool {
        self.asleep.load(Relaxed) != 0
    }

    /// The hooks' half, called after a thread published that it left its park or claimed a slot:
    /// a fence and a load of a line that is written only when the watchdog falls asleep or wakes.
    /// Lock-free, allocation-free, no I/O; only on the rare asleep-to-awake edge does one caller
    /// take the flag (an atomic swap) and make one futex wake system call.
    #[inline(always)]
    pub(crate) fn wake_if_asleep(&self) {
        fence(SeqCst);
        if self.asleep.load(Relaxed) != 0 {
            self.wake();
        }
    }

    /// Wakes the watchdog if it sleeps (after `wake_if_asleep` found it asleep).
    #[cold]
    #[inline(never)]
    fn wake(&self) {
        if self.asleep.swap(0, SeqCst) != 0 {
            // SAFETY: FUTEX_WAKE on a live, aligned u32; wakes at most one waiter.
            unsafe {
                libc::syscall(libc::SYS_futex, self.asleep.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1i32);
            }
        }
    }
}

/// Where the socket server listens (set by the server once it does).
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoints {
    pub(crate) unix: Option<PathBuf>,
    pub(crate) tcp: Option<SocketAddr>,
}
