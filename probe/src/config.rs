//! The probe's settings: [`Config`] with its `DEFAULT_*` values, their validation into
//! [`BuildError`], and the `STALLSCOPE_*` environment overrides. Plain data: every other module
//! may read it, and it reads none of them.

use std::time::Duration;

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
/// Default number of thread slots (threads that poll: runtime workers, `block_on` threads).
/// Threads that only spawn or end tasks take none.
pub const DEFAULT_MAX_THREADS: usize = 64;
/// Default number of spawn locations per thread slot.
pub const DEFAULT_MAX_LOCATIONS: usize = 512;
/// Default spawn/terminate events buffered per thread slot between aggregator drains (and in
/// the shared ring of threads without a slot).
///
/// 32,768 (768 KiB of 24-byte events per polling thread, touched as it wraps): a worker in a
/// million-task spawn storm writes 3–4 million events a second, and the watchdog, which asks for
/// a drain once a ring is a quarter full, scans about every 4 ms while busy. At 16,384 such a
/// ring filled between two scans and 6–30 % of the storm's events were dropped; at 32,768 about
/// 1–2 % on the harsher storm, for perhaps +0.01 of bare there (docs/benchmarks.md, "Spawn storms
/// (P7)"). 65,536 dropped none, at twice the memory for every worker of every service.
pub const DEFAULT_EVENT_RING: usize = 32 * 1024;
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
/// Default bytes the updates queued for one client may hold before it loses them (16 MiB). The
/// updates are shared by every queue, so this bounds what one client that stops reading keeps
/// alive, not a copy per client.
pub const DEFAULT_CLIENT_QUEUE_BYTES: usize = 16 << 20;
/// Default time a write to a client may block before the client is disconnected (it does not
/// read) and counted.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Probe configuration. Build it with [`Probe::builder`](crate::Probe::builder); every field has a `DEFAULT_*`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// A poll longer than this is a stall.
    pub stall_threshold: Duration,
    /// Interval between stack samples of a stalled thread.
    pub sample_interval: Duration,
    /// One snapshot per interval (one a second at most while the service is idle, see
    /// docs/guide.md, "Settings").
    pub aggregation_interval: Duration,
    /// Heartbeat period for loop lag while the runtime is busy; it doubles up to 1 s while the
    /// runtime stays idle.
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
    /// Thread slots (threads that poll).
    pub max_threads: usize,
    /// Spawn locations per thread slot.
    pub max_locations: usize,
    /// Spawn/terminate events buffered per thread slot, and in the shared ring.
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
    /// Bytes the updates queued for one client (or the recorder, or a subscriber) may hold
    /// before it loses them.
    pub client_queue_bytes: usize,
    /// A write to a client that blocks this long (`SO_SNDTIMEO`: the client does not read)
    /// disconnects it; it is counted in `process.missing`.
    pub client_write_timeout: Duration,
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
            client_queue_bytes: DEFAULT_CLIENT_QUEUE_BYTES,
            client_write_timeout: DEFAULT_CLIENT_WRITE_TIMEOUT,
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

pub(crate) fn validate(c: &Config) -> Result<(), BuildError> {
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
    dur("client_write_timeout", c.client_write_timeout, ms(10), Duration::from_secs(600))?;
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
    lim("client_queue_bytes", c.client_queue_bytes, 64 << 10, 1 << 32)?;
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
    if let Some(v) = get("STALLSCOPE_CLIENT_QUEUE_MB") {
        let mb: usize = num("STALLSCOPE_CLIENT_QUEUE_MB", &v, "expected a whole number of MiB")?;
        c.client_queue_bytes = mb.saturating_mul(1 << 20);
    }
    if let Some(v) = get("STALLSCOPE_CLIENT_WRITE_TIMEOUT_MS") {
        c.client_write_timeout = Duration::from_millis(num("STALLSCOPE_CLIENT_WRITE_TIMEOUT_MS", &v, MS)?);
    }
    if let Some(v) = get("STALLSCOPE_NAME") {
        c.name = Some(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_budget_and_write_timeout_are_validated_and_read_from_the_environment() {
        let c = Config::default();
        assert_eq!((c.client_queue_bytes, c.client_write_timeout), (16 << 20, Duration::from_secs(5)));
        let bad = Config { client_queue_bytes: 1000, ..Config::default() };
        assert!(matches!(validate(&bad), Err(BuildError::Limit { name: "client_queue_bytes", value: 1000, .. })));
        let bad = Config { client_write_timeout: Duration::ZERO, ..Config::default() };
        assert!(matches!(validate(&bad), Err(BuildError::Duration { name: "client_write_timeout", .. })));
        let mut c = Config::default();
        apply_env(&mut c, |v| match v {
            "STALLSCOPE_CLIENT_QUEUE_MB" => Some("2".into()),
            "STALLSCOPE_CLIENT_WRITE_TIMEOUT_MS" => Some("750".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.client_queue_bytes, c.client_write_timeout), (2 << 20, Duration::from_millis(750)));
        assert!(validate(&c).is_ok());
        let e = apply_env(&mut c, |v| (v == "STALLSCOPE_CLIENT_WRITE_TIMEOUT_MS").then(|| "soon".into())).unwrap_err();
        assert!(matches!(e, BuildError::Env { var: "STALLSCOPE_CLIENT_WRITE_TIMEOUT_MS", .. }));
    }
}
