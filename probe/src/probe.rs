//! The probe's public handle: configuration, `build`, `install`, `start`, and the guard.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use stallscope_wire::{Snapshot, Update};

use crate::aggregator::{self, Msg};
use crate::clock::clock;
use crate::hist::NsHist;
use crate::sampler::stats::{SamplerCosts, SamplerStats};
use crate::slots::Slots;

// === defaults ===

/// Default stall threshold: a poll longer than this is a stall.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(10);
/// Default interval between native stack samples of a stalled thread.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(2);
/// Default aggregation interval (one snapshot per interval).
pub const DEFAULT_AGGREGATION_INTERVAL: Duration = Duration::from_millis(100);
/// Default heartbeat period for loop lag.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(25);
/// Default sample signal: `SIGRTMIN + DEFAULT_SIGNAL_OFFSET`.
pub const DEFAULT_SIGNAL_OFFSET: i32 = 5;
/// Default number of thread slots (runtime workers, plus threads that spawn tasks).
pub const DEFAULT_MAX_THREADS: usize = 64;
/// Default number of spawn locations per thread slot.
pub const DEFAULT_MAX_LOCATIONS: usize = 512;
/// Default spawn/terminate events buffered per thread between aggregator drains.
pub const DEFAULT_EVENT_RING: usize = 16 * 1024;
/// Default number of live tasks whose age is tracked.
pub const DEFAULT_MAX_TRACKED_TASKS: usize = 1_000_000;
/// Default number of recent stalls kept in a snapshot.
pub const DEFAULT_MAX_STALLS: usize = 256;
/// Default number of stack samples kept per stall.
pub const DEFAULT_MAX_SAMPLES_PER_STALL: usize = 2_000;
/// Default number of clients attached at once.
pub const DEFAULT_MAX_CLIENTS: usize = 16;
/// Default number of updates queued per client before it loses them.
pub const DEFAULT_CLIENT_QUEUE: usize = 64;
/// Default size bound of one recording file (64 MiB).
pub const DEFAULT_RECORD_MAX_BYTES: u64 = 64 << 20;
/// Default number of rotated recording files kept.
pub const DEFAULT_RECORD_KEEP: u32 = 3;
/// Default poll timing sample: one poll in this many per thread is timed with the raw clock.
pub const DEFAULT_TIMED_POLL_EVERY: u32 = 16;
/// Default leak-rule window.
pub const DEFAULT_LEAK_WINDOW: Duration = Duration::from_secs(1);
/// Default number of leak-rule windows.
pub const DEFAULT_LEAK_WINDOWS: usize = 5;
/// Default minimum growth of a location's live count over the leak windows.
pub const DEFAULT_LEAK_MIN_GROWTH: u64 = 20;

/// Probe configuration. Build it with [`Probe::builder`]; every field has a `DEFAULT_*`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// A poll longer than this is a stall.
    pub stall_threshold: Duration,
    /// Interval between stack samples of a stalled thread.
    pub sample_interval: Duration,
    /// One snapshot per interval.
    pub aggregation_interval: Duration,
    /// Heartbeat period for loop lag.
    pub heartbeat_interval: Duration,
    /// Sample signal is `SIGRTMIN + signal_offset`.
    pub signal_offset: i32,
    /// Whether to sample native stacks during stalls.
    pub sampling: bool,
    /// Track per-location schedule latency through Tokio (~68 ns per poll).
    pub schedule_latency: bool,
    /// One poll in this many (per thread; rounded up to a power of two) is timed exactly for the
    /// poll-time histograms; 1 times every poll. Stall detection does not depend on it.
    pub timed_poll_every: u32,
    /// Thread slots.
    pub max_threads: usize,
    /// Spawn locations per thread slot.
    pub max_locations: usize,
    /// Spawn/terminate events buffered per thread.
    pub event_ring: usize,
    /// Live tasks whose age is tracked.
    pub max_tracked_tasks: usize,
    /// Recent stalls kept.
    pub max_stalls: usize,
    /// Samples kept per stall.
    pub max_samples_per_stall: usize,
    /// Leak rule: window length.
    pub leak_window: Duration,
    /// Leak rule: number of windows.
    pub leak_windows: usize,
    /// Leak rule: minimum growth of the live count over all windows.
    pub leak_min_growth: u64,
    /// A name for this probe (defaults to the process name).
    pub name: Option<String>,
    /// Start the socket server so `stallscope` can attach (default on).
    pub server: bool,
    /// Directory of the private Unix socket (default `$XDG_RUNTIME_DIR/stallscope` or
    /// `/tmp/stallscope-<uid>`).
    pub socket_dir: Option<std::path::PathBuf>,
    /// Also listen on TCP (opt-in). Must be a loopback address unless `tcp_allow_remote`.
    pub tcp: Option<std::net::SocketAddr>,
    /// Allow `tcp` on a non-loopback address (there is no authentication on TCP).
    pub tcp_allow_remote: bool,
    /// Clients attached at once.
    pub max_clients: usize,
    /// Updates queued per client (and for the recorder) before it loses them.
    pub client_queue: usize,
    /// Record every update to this file (no client needed).
    pub record_to: Option<std::path::PathBuf>,
    /// Size bound of one recording file, bytes.
    pub record_max_bytes: u64,
    /// Rotated recording files kept besides the current one.
    pub record_keep: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            aggregation_interval: DEFAULT_AGGREGATION_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            signal_offset: DEFAULT_SIGNAL_OFFSET,
            sampling: true,
            schedule_latency: false,
            timed_poll_every: DEFAULT_TIMED_POLL_EVERY,
            max_threads: DEFAULT_MAX_THREADS,
            max_locations: DEFAULT_MAX_LOCATIONS,
            event_ring: DEFAULT_EVENT_RING,
            max_tracked_tasks: DEFAULT_MAX_TRACKED_TASKS,
            max_stalls: DEFAULT_MAX_STALLS,
            max_samples_per_stall: DEFAULT_MAX_SAMPLES_PER_STALL,
            leak_window: DEFAULT_LEAK_WINDOW,
            leak_windows: DEFAULT_LEAK_WINDOWS,
            leak_min_growth: DEFAULT_LEAK_MIN_GROWTH,
            name: None,
            server: true,
            socket_dir: None,
            tcp: None,
            tcp_allow_remote: false,
            max_clients: DEFAULT_MAX_CLIENTS,
            client_queue: DEFAULT_CLIENT_QUEUE,
            record_to: None,
            record_max_bytes: DEFAULT_RECORD_MAX_BYTES,
            record_keep: DEFAULT_RECORD_KEEP,
        }
    }
}

/// Why a probe could not be built. Each variant names the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A duration setting is out of range.
    #[error("{name} must be between {min:?} and {max:?}, got {value:?}")]
    Duration {
        /// Setting name.
        name: &'static str,
        /// Value given.
        value: Duration,
        /// Smallest allowed.
        min: Duration,
        /// Largest allowed.
        max: Duration,
    },
    /// A size limit is out of range.
    #[error("{name} must be between {min} and {max}, got {value}")]
    Limit {
        /// Setting name.
        name: &'static str,
        /// Value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// An environment variable could not be parsed.
    #[error("environment variable {var}={value:?} is not valid: {reason}")]
    Env {
        /// Variable name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The sample signal is outside the real-time range.
    #[error("signal offset {offset} is outside 0..={max} (SIGRTMIN+offset must be a real-time signal)")]
    SignalOffset {
        /// Offset given.
        offset: i32,
        /// Largest valid offset here.
        max: i32,
    },
    /// Somebody else already handles the sample signal.
    #[error("signal {signal} (SIGRTMIN+{offset}) already has a handler that stallscope did not install; pick a free one with signal_offset() or STALLSCOPE_SIGNAL_OFFSET")]
    SignalInUse {
        /// Signal number.
        signal: i32,
        /// Offset from SIGRTMIN.
        offset: i32,
    },
}

/// Builds a [`Probe`]. See [`Config`] for the settings and their defaults.
#[derive(Debug, Clone, Default)]
pub struct ProbeBuilder {
    config: Config,
    env: bool,
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $ty:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.config.$name = v;
            self
        }
    };
}

impl ProbeBuilder {
    setter!(
        /// A poll longer than this is a stall (default 10 ms).
        stall_threshold: Duration);
    setter!(
        /// Interval between stack samples while a stall lasts (default 2 ms).
        sample_interval: Duration);
    setter!(
        /// Interval between snapshots (default 100 ms).
        aggregation_interval: Duration);
    setter!(
        /// Heartbeat period for loop lag (default 25 ms).
        heartbeat_interval: Duration);
    setter!(
        /// Sample signal is `SIGRTMIN + offset` (default 5). Change it if another profiler uses it.
        signal_offset: i32);
    setter!(
        /// Sample native stacks during stalls (default on).
        sampling: bool);
    setter!(
        /// Track per-location wake-to-poll latency through Tokio (default off; ~68 ns per poll).
        /// Needs the `schedule-latency` cargo feature.
        schedule_latency: bool);
    setter!(
        /// Time one poll in `n` per thread with the raw clock for the poll-time histograms
        /// (default 16; 1 times every poll at ~2 × 11 ns per poll on the benchmark machine).
        timed_poll_every: u32);
    setter!(
        /// Thread slots (default 64). Threads beyond this are not measured; they are counted.
        max_threads: usize);
    setter!(
        /// Spawn locations per thread (default 512); further locations share an overflow row.
        max_locations: usize);
    setter!(
        /// Spawn/terminate events buffered per thread between drains (default 16384).
        event_ring: usize);
    setter!(
        /// Live tasks whose age is tracked (default 1,000,000).
        max_tracked_tasks: usize);
    setter!(
        /// Recent stalls kept (default 256).
        max_stalls: usize);
    setter!(
        /// Samples kept per stall (default 2000).
        max_samples_per_stall: usize);
    setter!(
        /// Leak rule window (default 1 s).
        leak_window: Duration);
    setter!(
        /// Leak rule: number of windows (default 5).
        leak_windows: usize);
    setter!(
        /// Leak rule: minimum live-count growth across the windows (default 20).
        leak_min_growth: u64);

    /// Name shown to clients (default: the process name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    setter!(
        /// Start the socket server with the probe (default on).
        server: bool);
    setter!(
        /// Allow `listen_tcp` on a non-loopback address (off: there is no authentication on TCP).
        tcp_allow_remote: bool);
    setter!(
        /// Clients attached at once (default 16).
        max_clients: usize);
    setter!(
        /// Updates queued per client before it loses them (default 64).
        client_queue: usize);
    setter!(
        /// Size bound of one recording file in bytes (default 64 MiB).
        record_max_bytes: u64);
    setter!(
        /// Rotated recording files kept (default 3).
        record_keep: u32);

    /// Directory for the private Unix socket.
    pub fn socket_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.socket_dir = Some(dir.into());
        self
    }

    /// Also listen on TCP at `addr` (loopback only unless `tcp_allow_remote(true)`).
    pub fn listen_tcp(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.tcp = Some(addr);
        self
    }

    /// Records every update to `path`, rotating at `record_max_bytes`.
    pub fn record_to(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.record_to = Some(path.into());
        self
    }

    /// Lets `STALLSCOPE_*` environment variables override the builder (see the crate docs).
    pub fn with_env(mut self) -> Self {
        self.env = true;
        self
    }

    /// Validates the settings, allocates every buffer and installs the sample signal handler.
    pub fn build(self) -> Result<Probe, BuildError> {
        let mut c = self.config;
        if self.env {
            apply_env(&mut c, |k| std::env::var(k).ok())?;
        }
        validate(&c)?;
        let mut sampling_problem = None;
        let mut signal = None;
        if c.sampling && !crate::sampler::SUPPORTED {
            sampling_problem = Some("native stack sampling is only supported on Linux x86_64 and aarch64".to_string());
        }
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        if c.sampling {
            let sig = libc::SIGRTMIN() + c.signal_offset;
            match crate::sampler::signal::install(sig) {
                Ok(()) => {
                    crate::sampler::unwind::preload();
                    signal = Some(sig)
                }
                Err(crate::sampler::signal::InstallError::InUse) => {
                    return Err(BuildError::SignalInUse { signal: sig, offset: c.signal_offset })
                }
                Err(crate::sampler::signal::InstallError::Os(e)) => {
                    sampling_problem = Some(format!("sigaction failed for signal {sig}: errno {e}"))
                }
            }
        }
        if !c.sampling {
            sampling_problem = Some("stack sampling turned off in the builder".to_string());
        }
        let clk = clock();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let threshold_ticks = clk.ns_to_ticks(c.stall_threshold.as_nanos() as u64).max(1);
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Relaxed),
            threshold_ticks,
            // The watchdog wakes as a poll it has seen would cross the threshold and marks it
            // then (`watchdog::Cadence`); marking from half the threshold on leaves room for a
            // delayed wake-up. A marked poll's end reads the clock: rare, and cheap.
            maybe_long_ticks: threshold_ticks / 2,
            timed_every: c.timed_poll_every.max(1).next_power_of_two(),
            timed_mask: u64::from(c.timed_poll_every.max(1).next_power_of_two() - 1),
            slots: Slots::new(c.max_threads, c.max_locations, c.event_ring),
            lag: NsHist::default(),
            lag_last_ns: AtomicU64::new(0),
            lag_interval_max_ns: AtomicU64::new(0),
            signal,
            sampling_problem,
            installed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            latest: Mutex::new(None),
            subscribers: Mutex::new(Vec::new()),
            control: Mutex::new(None),
            panics: AtomicU64::new(0),
            samples_lost: AtomicU64::new(0),
            stall_msgs_dropped: AtomicU64::new(0),
            subscriber_drops: AtomicU64::new(0),
            lag_running: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
            endpoints: Mutex::new(crate::server::Endpoints::default()),
            clients_refused: AtomicU64::new(0),
            polls_stalled: AtomicUsize::new(0),
            sampler_costs: SamplerCosts::default(),
            config: c,
        });
        Ok(Probe { shared })
    }
}

fn validate(c: &Config) -> Result<(), BuildError> {
    let dur = |name, value: Duration, min: Duration, max: Duration| {
        if value < min || value > max {
            Err(BuildError::Duration { name, value, min, max })
        } else {
            Ok(())
        }
    };
    let ms = Duration::from_millis;
    dur("stall_threshold", c.stall_threshold, ms(1), Duration::from_secs(60))?;
    dur("sample_interval", c.sample_interval, Duration::from_micros(200), c.stall_threshold.max(ms(1)))?;
    dur("aggregation_interval", c.aggregation_interval, ms(10), Duration::from_secs(60))?;
    dur("heartbeat_interval", c.heartbeat_interval, ms(1), Duration::from_secs(10))?;
    dur("leak_window", c.leak_window, ms(10), Duration::from_secs(3600))?;
    let lim = |name, value: usize, min: u64, max: u64| {
        let value = value as u64;
        if value < min || value > max {
            Err(BuildError::Limit { name, value, min, max })
        } else {
            Ok(())
        }
    };
    lim("max_threads", c.max_threads, 1, 4096)?;
    lim("max_locations", c.max_locations, 16, 1 << 16)?;
    lim("event_ring", c.event_ring, 64, 1 << 22)?;
    lim("max_tracked_tasks", c.max_tracked_tasks, 0, 1 << 26)?;
    lim("max_stalls", c.max_stalls, 1, 1 << 16)?;
    lim("max_samples_per_stall", c.max_samples_per_stall, 1, 1 << 20)?;
    lim("leak_windows", c.leak_windows, 2, 1000)?;
    lim("timed_poll_every", c.timed_poll_every as usize, 1, 1 << 16)?;
    lim("max_clients", c.max_clients, 1, 1024)?;
    lim("client_queue", c.client_queue, 1, 1 << 16)?;
    lim("record_max_bytes", c.record_max_bytes.min(usize::MAX as u64) as usize, 64 << 10, 1 << 40)?;
    // Each rotation renames every kept file: u32::MAX of them would stall the recorder for good.
    lim("record_keep", c.record_keep as usize, 0, 1000)?;
    #[cfg(target_os = "linux")]
    {
        let max = libc::SIGRTMAX() - libc::SIGRTMIN();
        if c.signal_offset < 0 || c.signal_offset > max {
            return Err(BuildError::SignalOffset { offset: c.signal_offset, max });
        }
    }
    Ok(())
}

/// Applies `STALLSCOPE_*` overrides. `get` reads a variable (the environment, or a map in tests).
pub(crate) fn apply_env(c: &mut Config, get: impl Fn(&str) -> Option<String>) -> Result<(), BuildError> {
    fn num<T: std::str::FromStr>(var: &'static str, v: &str, reason: &'static str) -> Result<T, BuildError> {
        v.trim().parse().map_err(|_| BuildError::Env { var, value: v.to_string(), reason })
    }
    fn flag(var: &'static str, v: &str) -> Result<bool, BuildError> {
        match v.trim() {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" => Ok(false),
            _ => Err(BuildError::Env { var, value: v.to_string(), reason: "expected 1/0, true/false, on/off" }),
        }
    }
    const MS: &str = "expected a whole number of milliseconds";
    if let Some(v) = get("STALLSCOPE_THRESHOLD_MS") {
        c.stall_threshold = Duration::from_millis(num("STALLSCOPE_THRESHOLD_MS", &v, MS)?);
    }
    if let Some(v) = get("STALLSCOPE_SAMPLE_INTERVAL_US") {
        c.sample_interval =
            Duration::from_micros(num("STALLSCOPE_SAMPLE_INTERVAL_US", &v, "expected a whole number of microseconds")?);
    }
    if let Some(v) = get("STALLSCOPE_INTERVAL_MS") {
        c.aggregation_interval = Duration::from_millis(num("STALLSCOPE_INTERVAL_MS", &v, MS)?);
    }
    if let Some(v) = get("STALLSCOPE_SIGNAL_OFFSET") {
        c.signal_offset = num("STALLSCOPE_SIGNAL_OFFSET", &v, "expected a small whole number")?;
    }
    if let Some(v) = get("STALLSCOPE_SAMPLING") {
        c.sampling = flag("STALLSCOPE_SAMPLING", &v)?;
    }
    if let Some(v) = get("STALLSCOPE_SCHEDULE_LATENCY") {
        c.schedule_latency = flag("STALLSCOPE_SCHEDULE_LATENCY", &v)?;
    }
    if let Some(v) = get("STALLSCOPE_TIMED_POLL_EVERY") {
        c.timed_poll_every = num("STALLSCOPE_TIMED_POLL_EVERY", &v, "expected a whole number from 1")?;
    }
    if let Some(v) = get("STALLSCOPE_SERVER") {
        c.server = flag("STALLSCOPE_SERVER", &v)?;
    }
    if let Some(v) = get("STALLSCOPE_SOCKET_DIR") {
        c.socket_dir = Some(v.into());
    }
    if let Some(v) = get("STALLSCOPE_TCP") {
        let addr = v.trim().trim_start_matches("tcp://");
        c.tcp = Some(addr.parse().map_err(|_| BuildError::Env {
            var: "STALLSCOPE_TCP",
            value: v.clone(),
            reason: "expected HOST:PORT with a numeric address, like 127.0.0.1:7878",
        })?);
    }
    if let Some(v) = get("STALLSCOPE_RECORD") {
        c.record_to = Some(v.into());
    }
    if let Some(v) = get("STALLSCOPE_RECORD_MAX_MB") {
        c.record_max_bytes = num::<u64>("STALLSCOPE_RECORD_MAX_MB", &v, "expected a whole number of MiB")? << 20;
    }
    if let Some(v) = get("STALLSCOPE_NAME") {
        c.name = Some(v);
    }
    Ok(())
}

// === Shared ===

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
    pub(crate) latest: Mutex<Option<Arc<Snapshot>>>,
    pub(crate) subscribers: Mutex<Vec<(SyncSender<Update>, Arc<AtomicU64>)>>,
    /// Channel to the aggregator while running.
    pub(crate) control: Mutex<Option<SyncSender<Msg>>>,
    /// Panics caught in the probe's threads.
    pub(crate) panics: AtomicU64,
    /// Stack samples requested but not captured.
    pub(crate) samples_lost: AtomicU64,
    /// Watchdog messages lost because the aggregator's queue was full.
    pub(crate) stall_msgs_dropped: AtomicU64,
    /// Updates subscribers lost, summed.
    pub(crate) subscriber_drops: AtomicU64,
    /// Whether the heartbeat (loop lag) runs.
    pub(crate) lag_running: AtomicBool,
    /// Problems found after start (server, recorder), shown in `process.missing`.
    pub(crate) problems: Mutex<Vec<String>>,
    /// Where the server listens.
    pub(crate) endpoints: Mutex<crate::server::Endpoints>,
    /// Clients refused (credentials, limit).
    pub(crate) clients_refused: AtomicU64,
    /// Polls running past the stall threshold now, as of the watchdog's last scan (task dumps are
    /// refused while there are any).
    pub(crate) polls_stalled: AtomicUsize,
    /// What stack sampling has cost (`Probe::sampler_stats`).
    pub(crate) sampler_costs: SamplerCosts,
}

impl Shared {
    /// Records a problem found after start; it shows in every snapshot's `process.missing`.
    pub(crate) fn note_problem(&self, p: String) {
        let mut v = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 16 && !v.contains(&p) {
            v.push(p);
        }
    }

    /// Sends an update to every subscriber without blocking; a full queue loses the update
    /// and counts it.
    pub(crate) fn publish(&self, u: &Update) -> u64 {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        subs.retain(|(tx, drops)| match tx.try_send(u.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                drops.fetch_add(1, Relaxed);
                self.subscriber_drops.fetch_add(1, Relaxed);
                dropped += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        dropped
    }
}

// === Probe ===

/// The probe. Cheap to clone; all clones share the same state.
///
/// ```
/// use std::time::Duration;
/// let probe = stallscope_probe::Probe::builder()
///     .stall_threshold(Duration::from_millis(20))
///     .build()
///     .expect("valid settings");
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// builder.enable_all().worker_threads(2);
/// probe.install(&mut builder);
/// let rt = builder.build().unwrap();
/// let guard = probe.start(rt.handle());
/// rt.block_on(async { tokio::spawn(async { 1 + 1 }).await.unwrap() });
/// let snapshot = probe.refresh(Duration::from_secs(5)).expect("a snapshot");
/// assert!(snapshot.process.probe_version.len() > 0);
/// drop(guard);
/// ```
#[derive(Debug, Clone)]
pub struct Probe {
    pub(crate) shared: Arc<Shared>,
}

impl Probe {
    /// A builder with the defaults.
    pub fn builder() -> ProbeBuilder {
        ProbeBuilder::default()
    }

    /// The configuration in force (after environment overrides).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Registers the task hooks on a runtime builder, and enables its timer (the heartbeat that
    /// measures loop lag needs one). Call before `builder.build()`.
    ///
    /// The probe takes Tokio's task hooks (spawn, terminate, before and after poll) and the
    /// `on_thread_park`, `on_thread_unpark` and `on_thread_stop` hooks. Tokio keeps one of each and offers no way to
    /// chain them: a hook of yours set before this call is replaced by the probe's, and one set
    /// after replaces the probe's. Without the probe's `on_thread_unpark`, untimed stall starts
    /// fall back to the watchdog's scan bound (docs/guide.md, "Precision"), and without its park hooks
    /// stalls in a current-thread runtime's `block_on` future and `LocalSet` tasks go unseen; without its
    /// `on_thread_stop`, an exited thread's slot is not handed to a new thread.
    ///
    /// Without `--cfg tokio_unstable` Tokio has no task hooks; this then does nothing and the
    /// probe reports loop lag and the stable runtime metrics only.
    pub fn install(&self, builder: &mut tokio::runtime::Builder) -> &Self {
        // The heartbeat (loop lag) needs a timer; enabling it here costs nothing if the service
        // already did, and spares a runtime without one a panic message from the heartbeat.
        builder.enable_time();
        #[cfg(tokio_unstable)]
        crate::hooks::register(&self.shared, builder);
        #[cfg(not(tokio_unstable))]
        let _ = builder;
        self.shared.installed.store(true, Relaxed);
        self
    }

    /// Watches the calling thread for stalls although its runtime was built without
    /// [`install`](Self::install): for the current-thread runtimes a library builds for itself,
    /// such as each actix-web worker's (actix builds them inside `actix-server`, out of the
    /// service's reach). Call it on that thread, inside its runtime; for actix-web, in the
    /// `HttpServer::new` app factory, which runs once on each worker. Calling it again on the same
    /// thread does nothing.
    ///
    /// A task poll, `LocalSet` task or `block_on` future that keeps the thread past the threshold
    /// is then a stall with stack samples, named and attributed from the stack as on an installed
    /// current-thread runtime (`docs/guide.md`, "Runtimes the probe did not build"). The watchdog
    /// tells the thread's idle time from busy time by the runtime's own park and busy metrics
    /// (stable Tokio), so this works without `--cfg tokio_unstable` too. What only the hooks
    /// give is missing for this thread: its tasks, their spawn locations and poll times. The
    /// slot is given back when the thread exits.
    ///
    /// Errors say why the thread cannot be watched; the probe itself goes on either way.
    pub fn watch_thread(&self) -> Result<(), WatchError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
            return Err(WatchError::MultiThread);
        }
        if self.shared.signal.is_none() {
            return Err(WatchError::NoSampling);
        }
        let slot = crate::hooks::current_slot(&self.shared).ok_or(WatchError::NoSlot)?;
        if slot.foreign.load(Acquire) {
            return Ok(());
        }
        crate::instrument::register_runtime(&handle, &self.shared);
        slot.poll.runtime_wanted.store(false, Relaxed);
        *slot.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        slot.foreign.store(true, Release);
        crate::hooks::release_at_thread_exit(&self.shared, slot);
        Ok(())
    }

    /// Starts the watchdog and aggregator threads and the heartbeat task on `handle`'s runtime.
    /// Dropping the returned guard stops them. Starting a probe that is already running returns
    /// a guard that does nothing.
    pub fn start(&self, handle: &tokio::runtime::Handle) -> ProbeGuard {
        if self.shared.running.swap(true, AcqRel) {
            return ProbeGuard {
                shared: self.shared.clone(),
                threads: Vec::new(),
                stop: None,
                server: None,
                recorder: None,
            };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<Msg>(4096);
        *self.shared.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
        let mut threads = Vec::new();
        crate::instrument::register_runtime(handle, &self.shared);
        let lag = crate::lag::spawn_heartbeat(&self.shared, handle, stop.clone());
        self.shared.lag_running.store(lag, Relaxed);
        {
            let shared = self.shared.clone();
            let handle = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("stallscope-aggregator".into())
                .spawn(move || aggregator::run(shared, rx, handle));
            if let Ok(t) = spawned {
                threads.push(t);
            }
        }
        {
            let shared = self.shared.clone();
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name("stallscope-watchdog".into())
                .spawn(move || crate::watchdog::run(shared, tx, stop));
            if let Ok(t) = spawned {
                threads.push(t);
            }
        }
        let server = crate::server::start(self, handle);
        let recorder = crate::recorder::start(self);
        ProbeGuard { shared: self.shared.clone(), threads, stop: Some(stop), server, recorder }
    }

    /// The private Unix socket the probe listens on, once started (None if the server is off or
    /// could not listen: the reason is in `process.missing`).
    pub fn socket_path(&self) -> Option<std::path::PathBuf> {
        self.shared.endpoints.lock().unwrap_or_else(|e| e.into_inner()).unix.clone()
    }

    /// The TCP address the probe listens on, if `listen_tcp` was set and it could listen.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.endpoints.lock().unwrap_or_else(|e| e.into_inner()).tcp
    }

    /// The most recent snapshot, if one has been made.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.shared.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the aggregator for a snapshot now and waits for it (up to `timeout`). The snapshot
    /// covers everything that happened before the call. `None` if the probe is not running.
    pub fn refresh(&self, timeout: Duration) -> Option<Arc<Snapshot>> {
        let control = self.shared.control.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        let (tx, rx) = mpsc::sync_channel(1);
        // Never a blocking send: with the aggregator's queue full (it waits on the symbolizer,
        // say) that would hold the host's thread past `timeout`. `report()` comes through here.
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Refresh(tx);
        loop {
            match control.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return None,
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).ok()?;
        self.snapshot()
    }

    /// Receives every update (ticks, stall starts and ends) through a bounded queue of
    /// `capacity`. A subscriber that does not keep up loses updates; the count is in
    /// [`Subscription::dropped`] and in the snapshots.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        self.shared.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push((tx, dropped.clone()));
        Subscription { rx, dropped }
    }

    /// What native stack sampling has cost so far, counted by the probe itself: time in the
    /// signal handler, unwind time per sample, symbolization time per new address. Not part of
    /// the snapshots (the wire format); see [`SamplerStats`] for each figure.
    pub fn sampler_stats(&self) -> SamplerStats {
        self.shared.sampler_costs.stats()
    }

    /// A plain-text summary of the latest snapshot: stalls with their top user frame, leak
    /// suspects, pools, lag and poll percentiles.
    pub fn report(&self) -> String {
        match self.refresh(Duration::from_secs(2)).or_else(|| self.snapshot()) {
            Some(s) => crate::report::render(&s),
            None => "stallscope: no snapshot yet (was the probe started?)\n".to_string(),
        }
    }
}

/// Why [`Probe::watch_thread`] cannot watch the calling thread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The thread is not inside a Tokio runtime.
    #[error("not inside a Tokio runtime: call watch_thread on the runtime's own thread, inside it")]
    NoRuntime,
    /// The thread's runtime is a multi-thread one: its workers are watched through `install`,
    /// and a multi-thread runtime's user code runs only in task polls the hooks see.
    #[error("the runtime is multi-threaded: give its builder to Probe::install instead")]
    MultiThread,
    /// Stack sampling is off or unavailable (`process.missing` says why): without samples the
    /// watchdog cannot tell user code from the runtime's own work on an unhooked thread.
    #[error("stack sampling is off or unavailable, which watching an unhooked thread needs")]
    NoSampling,
    /// Every thread slot is taken (`max_threads`).
    #[error("every thread slot is taken (raise max_threads)")]
    NoSlot,
}

/// A stream of [`Update`]s from [`Probe::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Update>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Waits up to `timeout` for the next update.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Update> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Updates lost because this subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Keeps the probe's threads running; dropping it stops and joins them.
#[derive(Debug)]
pub struct ProbeGuard {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    stop: Option<Arc<AtomicBool>>,
    server: Option<crate::server::Server>,
    recorder: Option<crate::recorder::Recorder>,
}

impl ProbeGuard {
    /// The most recent snapshot.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.shared.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        // Clients and the recorder first, while the aggregator still publishes.
        drop(self.server.take());
        drop(self.recorder.take());
        let Some(stop) = self.stop.take() else { return };
        stop.store(true, Release);
        if let Some(tx) = self.shared.control.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.try_send(Msg::Stop);
        }
        for t in self.threads.drain(..) {
            // The watchdog parks between scans; wake it rather than wait out its interval.
            t.thread().unpark();
            let _ = t.join();
        }
        // The runtimes' handles the slots hold for the watchdog (`Slot::runtime`): without the
        // watchdog they serve nothing, and they would keep those runtimes' drivers alive.
        self.shared.slots.clear_runtimes();
        self.shared.running.store(false, Release);
    }
}
