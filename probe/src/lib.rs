//! # stallscope-probe
//!
//! Link this into a Tokio service to find out, live, *what is blocking the event loop* and
//! *which tasks pile up and never finish*.
//!
//! - **Stalls.** A watchdog thread notices any poll that runs longer than the threshold and,
//!   while it lasts, samples the stalled thread's native stack (a real-time signal copies the
//!   stack; it is unwound and symbolized off the hot path). Each stall carries its exact
//!   duration, worker, task, spawn location and the stacks, so the blocking line is named.
//! - **Tasks.** Spawned, completed, live and oldest-live age per spawn location, and a leak rule.
//! - **Lag.** A heartbeat timer's lateness (works without `tokio_unstable`); optionally Tokio's
//!   per-task schedule latency.
//! - **Pools.** The blocking pool, and any pool through [`pool`].
//! - **Task dumps.** On a client's request, Tokio's `Handle::dump` with identical async traces
//!   grouped (feature `taskdump`, on by default; needs `tokio_unstable`), refused while a worker is
//!   stalled, bounded in time and size (`docs/protocol.md`, "Task dumps").
//!
//! ```no_run
//! use std::time::Duration;
//! let probe = stallscope_probe::Probe::builder()
//!     .stall_threshold(Duration::from_millis(10))
//!     .with_env()
//!     .build()
//!     .expect("probe settings");
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! builder.enable_all();
//! probe.install(&mut builder);
//! let runtime = builder.build().unwrap();
//! let _guard = probe.start(runtime.handle());
//! runtime.block_on(async { /* the service */ });
//! println!("{}", probe.report());
//! ```
//!
//! The service must be built with `--cfg tokio_unstable` (Tokio's task hooks): put
//! `[build] rustflags = ["--cfg", "tokio_unstable"]` in its `.cargo/config.toml`. Without it the
//! probe still compiles and reports loop lag and stable runtime metrics, and each snapshot's
//! `process.missing` says what is unavailable.
//!
//! ## Environment variables (with [`ProbeBuilder::with_env`])
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `STALLSCOPE_THRESHOLD_MS` | stall threshold, ms | 10 |
//! | `STALLSCOPE_SAMPLE_INTERVAL_US` | stack sample interval during a stall, µs | 2000 |
//! | `STALLSCOPE_INTERVAL_MS` | aggregation interval, ms | 100 |
//! | `STALLSCOPE_SIGNAL_OFFSET` | sample signal is `SIGRTMIN + offset` | 5 |
//! | `STALLSCOPE_SAMPLING` | sample native stacks (`1`/`0`) | 1 |
//! | `STALLSCOPE_SCHEDULE_LATENCY` | track schedule latency (`1`/`0`) | 0 |
//! | `STALLSCOPE_TIMED_POLL_EVERY` | time one poll in N exactly for the histograms | 16 |
//! | `STALLSCOPE_NAME` | name shown to clients | process name |
//! | `STALLSCOPE_SERVER` | start the socket server (`1`/`0`) | 1 |
//! | `STALLSCOPE_SOCKET_DIR` | directory of the private socket | `$XDG_RUNTIME_DIR/stallscope` or `/tmp/stallscope-<uid>` |
//! | `STALLSCOPE_TCP` | also listen on TCP, `HOST:PORT` (loopback) | off |
//! | `STALLSCOPE_RECORD` | record every update to this file | off |
//! | `STALLSCOPE_RECORD_MAX_MB` | size bound of one recording file, MiB | 64 |
//! | `STALLSCOPE_CLIENT_QUEUE_MB` | bytes of updates queued per client before it loses them, MiB | 16 |
//! | `STALLSCOPE_CLIENT_WRITE_TIMEOUT_MS` | a client whose socket takes no data this long is disconnected, ms | 5000 |
//!
//! ## Guarantees
//! The poll hooks take no locks, allocate nothing and do no I/O. Every buffer is allocated at
//! [`ProbeBuilder::build`] and bounded; what does not fit is counted in
//! [`wire::Drops`]. After start the probe never returns an error into the host and its threads
//! catch their own panics (counted as `probe_panics`).
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

// The folders follow the threads the code runs on; the files at the top are what they all
// share (docs/architecture.md, "Modules" and "Layers").
mod aggregator;
mod config;
mod poll;
mod probe;
mod publish;
mod report;
mod sampler;
mod serve;
mod state;
mod threads;
mod watchdog;

pub use aggregator::pool;
pub use config::{
    BuildError, Config, DEFAULT_AGGREGATION_INTERVAL, DEFAULT_CLIENT_QUEUE, DEFAULT_CLIENT_QUEUE_BYTES,
    DEFAULT_CLIENT_WRITE_TIMEOUT, DEFAULT_EVENT_RING, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEAK_MIN_GROWTH,
    DEFAULT_LEAK_WINDOW, DEFAULT_LEAK_WINDOWS, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_LOCATIONS,
    DEFAULT_MAX_SAMPLES_PER_STALL, DEFAULT_MAX_STALLS, DEFAULT_MAX_THREADS, DEFAULT_MAX_TRACKED_TASKS,
    DEFAULT_RECORD_KEEP, DEFAULT_RECORD_MAX_BYTES, DEFAULT_SAMPLE_INTERVAL, DEFAULT_SIGNAL_OFFSET,
    DEFAULT_STALL_THRESHOLD, DEFAULT_TIMED_POLL_EVERY,
};
pub use poll::instrument::{instrument, Instrumented};
pub use probe::{Probe, ProbeBuilder, ProbeGuard, WatchError};
pub use publish::Subscription;
pub use report::render as render_report;
pub use sampler::stats::SamplerStats;
/// The snapshot types (crate `stallscope-wire`).
pub use stallscope_wire as wire;

/// Whether the calling thread is inside the probe's stack-sample signal handler. For
/// allocation tripwires in tests; not part of the stable API.
#[doc(hidden)]
pub fn __in_sample_handler() -> bool {
    sampler::in_handler()
}

/// Sets a function the sample signal handler calls on the sampled thread after each capture,
/// or none. For the fault suite's soak only (feature `fault-injection`, never on in a service): the
/// function must be async-signal-safe; the soak's checks that `__in_sample_handler` is true
/// there, which is what its allocation tripwire relies on.
#[cfg(all(feature = "fault-injection", target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
#[doc(hidden)]
pub fn __set_sample_handler_hook(hook: Option<fn()>) {
    let p = hook.map_or(std::ptr::null_mut(), |f| f as *mut ());
    sampler::signal::HANDLER_HOOK.store(p, std::sync::atomic::Ordering::Release);
}

/// Stacks copied by the sample signal handler in this process, ever. For soak tests and
/// benchmarks; not part of the stable API.
#[doc(hidden)]
pub fn __sample_captures() -> u64 {
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    return sampler::signal::CAPTURES.load(std::sync::atomic::Ordering::Relaxed);
    #[allow(unreachable_code)]
    0
}
