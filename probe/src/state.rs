//! [`Shared`]: the state the poll hooks, the probe's threads and the handles all see, allocated
//! once by [`ProbeBuilder::build`](crate::ProbeBuilder::build): the settings and the poll timing
//! derived from them, the per-thread slots, the lag histogram, what the probe lost or failed
//! at, the channel to the aggregator, and where its output goes ([`Publisher`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
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

/// Where the socket server listens (set by the server once it does).
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoints {
    pub(crate) unix: Option<PathBuf>,
    pub(crate) tcp: Option<SocketAddr>,
}
