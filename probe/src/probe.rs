//! The probe's public handle: [`ProbeBuilder`] (`build` validates the settings, installs the
//! sample signal handler and allocates every buffer into the [`Shared`] state), then `install`,
//! `start`, the guard that stops it, and the ways to read what it measures (`snapshot`,
//! `refresh`, `subscribe`, `report`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use stallscope_wire::Snapshot;

use crate::aggregator::{self, msg::Msg};
use crate::config::{apply_env, validate, BuildError, Config};
use crate::poll::clock::clock;
use crate::poll::hist::NsHist;
use crate::poll::slots::Slots;
use crate::publish::{Publisher, Subscription};
use crate::sampler::stats::{SamplerCosts, SamplerStats};
use crate::state::{Endpoints, Shared};
use crate::threads::Role;

// === ProbeBuilder ===

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
        /// Interval between snapshots (default 100 ms; 1 s while every worker is parked).
        aggregation_interval: Duration);
    setter!(
        /// Heartbeat period for loop lag (default 25 ms) while the runtime is busy; it backs off
        /// to 1 s while the runtime stays idle.
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
        /// Thread slots (default 64), one per thread that polls: runtime workers, `block_on`
        /// threads. Polling threads beyond this are not measured; they are counted. Threads that
        /// only spawn or end tasks take none (their events go to one shared ring).
        max_threads: usize);
    setter!(
        /// Spawn locations per thread (default 512); further locations share an overflow row.
        max_locations: usize);
    setter!(
        /// Spawn/terminate events buffered per thread slot between drains, and in the shared ring
        /// of threads without a slot (default 32768).
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
        /// Bytes the updates queued for one client may hold before it loses them (default
        /// 16 MiB, from 64 KiB to 4 GiB). Updates are shared by every client's queue.
        client_queue_bytes: usize);
    setter!(
        /// How long a write to a client may block before the client, which does not read, is
        /// disconnected and counted (default 5 s, from 10 ms to 10 min).
        client_write_timeout: Duration);
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
            publisher: Publisher::default(),
            control: Mutex::new(None),
            panics: AtomicU64::new(0),
            samples_lost: AtomicU64::new(0),
            stall_msgs_dropped: AtomicU64::new(0),
            stall_starts_sent: AtomicU64::new(0),
            stall_starts_lost: AtomicU64::new(0),
            lag_running: AtomicBool::new(false),
            runtime_gone: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
            endpoints: Mutex::new(Endpoints::default()),
            clients_refused: AtomicU64::new(0),
            polls_stalled: AtomicUsize::new(0),
            sampler_costs: SamplerCosts::default(),
            threads: Default::default(),
            sleep: crate::state::WatchdogSleep::default(),
            heartbeat: crate::state::HeartbeatNudge::default(),
            config: c,
        });
        Ok(Probe { shared })
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
        crate::poll::hooks::register(&self.shared, builder);
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
        let slot = crate::poll::hooks::current_slot(&self.shared).ok_or(WatchError::NoSlot)?;
        if slot.foreign.load(Acquire) {
            return Ok(());
        }
        crate::poll::instrument::register_runtime(&handle, &self.shared);
        slot.poll.runtime_wanted.store(false, Relaxed);
        *slot.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        slot.foreign.store(true, Release);
        crate::poll::hooks::release_at_thread_exit(&self.shared, slot);
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
        crate::poll::instrument::register_runtime(handle, &self.shared);
        self.shared.runtime_gone.store(false, Release);
        let lag = crate::poll::lag::spawn_heartbeat(&self.shared, handle, stop.clone());
        self.shared.lag_running.store(lag, Relaxed);
        {
            let shared = self.shared.clone();
            let handle = handle.clone();
            let spawned = std::thread::Builder::new()
                .name(Role::Aggregator.thread_name().into())
                .spawn(move || aggregator::run_guarded(shared, rx, handle));
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => self.shared.threads.not_spawned(Role::Aggregator),
            }
        }
        {
            let shared = self.shared.clone();
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(Role::Watchdog.thread_name().into())
                .spawn(move || crate::watchdog::run_guarded(shared, tx, stop));
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => self.shared.threads.not_spawned(Role::Watchdog),
            }
        }
        let server = crate::serve::server::start(&self.shared, handle);
        let recorder = crate::serve::recorder::start(&self.shared);
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
        self.shared.publisher.latest()
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

    /// Receives every update (ticks, stall starts and ends) through a queue bounded at
    /// `capacity` updates and at `client_queue_bytes` of them. A subscriber that does not keep
    /// up loses updates; the count is in [`Subscription::dropped`] and in the snapshots.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.shared.publisher.subscribe(capacity, self.shared.config.client_queue_bytes)
    }

    /// Kills one of the probe's threads (`"aggregator"`, `"watchdog"`, `"server"`,
    /// `"recorder"`) with a panic at the top of its next loop, for the fault suite. Returns
    /// `false` for another name. Only with the `fault-injection` feature.
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn inject_panic(&self, thread: &str) -> bool {
        let Some(role) = Role::from_short(thread) else { return false };
        self.shared.threads.inject_panic(role);
        // Wake the aggregator, which otherwise sleeps until its next tick.
        if role == Role::Aggregator {
            if let Some(c) = self.shared.control.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = c.try_send(Msg::Refresh(mpsc::sync_channel(1).0));
            }
        }
        true
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

/// Keeps the probe's threads running; dropping it stops and joins them.
#[derive(Debug)]
pub struct ProbeGuard {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    stop: Option<Arc<AtomicBool>>,
    server: Option<crate::serve::server::Server>,
    recorder: Option<crate::serve::recorder::Recorder>,
}

impl ProbeGuard {
    /// The most recent snapshot.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.shared.publisher.latest()
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        // Clients and the recorder first, while the aggregator still publishes.
        drop(self.server.take());
        drop(self.recorder.take());
        let Some(stop) = self.stop.take() else { return };
        stop.store(true, Release);
        // A watchdog asleep until an unpark (every worker parked) wakes now, not within 1 s.
        self.shared.sleep.wake_if_asleep();
        // And a backed-off heartbeat (up to 1 s) sees `stop` now.
        self.shared.heartbeat.notify.notify_one();
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
