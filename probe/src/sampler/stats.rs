//! The stack sampler's own costs, counted by the probe itself: time in the signal handler, time
//! to unwind a copied stack, and time to symbolize a new address. None of this is on the poll
//! path: the handler reads the raw counter twice, the watchdog and the symbolizer thread record.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::poll::hist::FineHist;

/// What the stack sampler has cost so far, from [`Probe::sampler_stats`](crate::Probe::sampler_stats).
///
/// The handler and unwind figures are this probe's; the symbolization figures are the process's
/// (one symbolizer thread and one address cache serve every probe in a process). Quantiles come
/// from a histogram with 16 sub-buckets per power of two: each is rounded up by at most 6.25%.
/// Everything is zero when sampling is off or unsupported.
///
/// ```
/// use std::time::{Duration, Instant};
/// let probe = stallscope_probe::Probe::builder().server(false).build().unwrap();
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// builder.worker_threads(1).enable_all();
/// probe.install(&mut builder);
/// let rt = builder.build().unwrap();
/// let guard = probe.start(rt.handle());
/// rt.block_on(async {
///     // A 50 ms poll: a stall, sampled every 2 ms while it lasts.
///     tokio::spawn(async { std::thread::sleep(Duration::from_millis(50)) }).await.unwrap();
/// });
/// probe.refresh(Duration::from_secs(5));
/// let stats = probe.sampler_stats();
/// assert!(stats.handler_p50 <= stats.handler_p99 && stats.handler_p99 <= stats.handler_max);
/// println!("handler p99 {:?}, unwind p99 {:?}", stats.handler_p99, stats.unwind_p99);
/// drop(guard);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SamplerStats {
    /// Stack captures this probe collected: each is one run of the signal handler that copied
    /// a stack (including captures then dropped because the poll they were meant for had ended).
    pub samples_captured: u64,
    /// Time inside the signal handler, from its entry until it published the capture (finding
    /// the request, copying registers and up to 64 KiB of stack), median.
    pub handler_p50: Duration,
    /// Time inside the signal handler, 99th percentile.
    pub handler_p99: Duration,
    /// Time inside the signal handler, longest.
    pub handler_max: Duration,
    /// Bytes of stack the handler copied, in all (divide by `samples_captured` for the mean
    /// copy; each is at most 64 KiB).
    pub stack_bytes_copied: u64,
    /// Captures unwound with framehop on the watchdog thread.
    pub samples_unwound: u64,
    /// Frames those unwinds produced, in all (divide by `samples_unwound` for the mean depth).
    pub frames_unwound: u64,
    /// Time to unwind one captured stack, median.
    pub unwind_p50: Duration,
    /// Time to unwind one captured stack, 99th percentile.
    pub unwind_p99: Duration,
    /// Time to unwind one captured stack, longest (includes a reload of the module list when an
    /// address outside every known module appeared).
    pub unwind_max: Duration,
    /// Addresses the symbolizer resolved because they were not in its cache (process-wide).
    pub symbolized_addresses: u64,
    /// Batches those addresses came in: one per stall stack set with new addresses (process-wide).
    pub symbolize_batches: u64,
    /// Time the symbolizer spent on those addresses, in all (process-wide; excludes the warm-up).
    pub symbolize_time: Duration,
    /// Time of the symbolizer's warm-up: the first lookup, which parses the executable's debug
    /// information before the first stall (process-wide).
    pub symbolize_warm_up: Duration,
    /// Reads of a thread's kernel accounting for stall anatomies (`/proc/self/task/TID/...` and
    /// its CPU clock) by the watchdog: when it first sees a poll running, and at each
    /// observation of a poll past half the threshold.
    pub anatomy_reads: u64,
    /// Time of one such read, median.
    pub anatomy_read_p50: Duration,
    /// Time of one such read, 99th percentile.
    pub anatomy_read_p99: Duration,
    /// Time of all of them.
    pub anatomy_time: Duration,
    /// Times the watchdog thread woke (to scan the slots, or to stop). While the service is busy
    /// it wakes every threshold / 2 or sooner (`docs/architecture.md`, "watchdog"); while every
    /// worker is parked it sleeps until one unparks, and wakes at most once a second.
    pub watchdog_wakes: u64,
    /// Times the watchdog went to sleep until a worker unparks (every watched thread was parked).
    pub watchdog_deep_sleeps: u64,
}

impl SamplerStats {
    /// Mean symbolization time per new address (`symbolize_time / symbolized_addresses`), or
    /// `None` before any address was symbolized.
    pub fn symbolize_per_address(&self) -> Option<Duration> {
        (self.symbolized_addresses > 0).then(|| {
            let ns = self.symbolize_time.as_nanos() / u128::from(self.symbolized_addresses);
            Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
        })
    }
}

/// The probe's share of the sampler counters, written by its watchdog.
#[derive(Debug, Default)]
pub(crate) struct SamplerCosts {
    /// Captures collected.
    pub(crate) captured: AtomicU64,
    /// Handler time per capture, ns.
    pub(crate) handler_ns: FineHist,
    /// Unwind time per capture, ns.
    pub(crate) unwind_ns: FineHist,
    /// Frames unwound, in all.
    pub(crate) frames: AtomicU64,
    /// Stack bytes the handler copied, in all.
    pub(crate) stack_bytes: AtomicU64,
    /// Time of each anatomy read, ns.
    pub(crate) anatomy_ns: FineHist,
    /// Time of all anatomy reads, ns.
    pub(crate) anatomy_total_ns: AtomicU64,
    /// Watchdog wake-ups.
    pub(crate) watchdog_wakes: AtomicU64,
    /// Watchdog sleeps until an unpark.
    pub(crate) watchdog_deep_sleeps: AtomicU64,
}

impl SamplerCosts {
    pub(crate) fn stats(&self) -> SamplerStats {
        let ns = Duration::from_nanos;
        let sym = symbolizer_costs();
        SamplerStats {
            samples_captured: self.captured.load(Relaxed),
            handler_p50: ns(self.handler_ns.quantile(0.5)),
            handler_p99: ns(self.handler_ns.quantile(0.99)),
            handler_max: ns(self.handler_ns.max()),
            stack_bytes_copied: self.stack_bytes.load(Relaxed),
            samples_unwound: self.unwind_ns.count(),
            frames_unwound: self.frames.load(Relaxed),
            unwind_p50: ns(self.unwind_ns.quantile(0.5)),
            unwind_p99: ns(self.unwind_ns.quantile(0.99)),
            unwind_max: ns(self.unwind_ns.max()),
            symbolized_addresses: sym.addresses,
            symbolize_batches: sym.batches,
            symbolize_time: ns(sym.time_ns),
            symbolize_warm_up: ns(sym.warm_up_ns),
            anatomy_reads: self.anatomy_ns.count(),
            anatomy_read_p50: ns(self.anatomy_ns.quantile(0.5)),
            anatomy_read_p99: ns(self.anatomy_ns.quantile(0.99)),
            anatomy_time: ns(self.anatomy_total_ns.load(Relaxed)),
            watchdog_wakes: self.watchdog_wakes.load(Relaxed),
            watchdog_deep_sleeps: self.watchdog_deep_sleeps.load(Relaxed),
        }
    }
}

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn symbolizer_costs() -> super::symbolize::Costs {
    super::symbolize::costs()
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
fn symbolizer_costs() -> Costs {
    Costs::default()
}

/// Stand-in where there is no symbolizer.
#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
#[derive(Debug, Default)]
struct Costs {
    addresses: u64,
    batches: u64,
    time_ns: u64,
    warm_up_ns: u64,
}
