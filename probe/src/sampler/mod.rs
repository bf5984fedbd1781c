//! Native stack sampling of stalled threads: signal and stack copy ([`signal`], in the handler on
//! the sampled thread), unwinding ([`unwind`], watchdog thread), symbolization ([`symbolize`] and
//! [`names`], on the `stallscope-symbolizer` thread, asked by the aggregator without waiting), and
//! what they cost ([`stats`]).
//!
//! Supported on Linux x86_64 and aarch64. Elsewhere the probe still detects stalls and measures
//! them, and says that it cannot sample stacks.

pub(crate) mod names;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) mod signal;
pub(crate) mod stats;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) mod symbolize;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) mod unwind;

/// Whether this build can sample native stacks.
pub(crate) const SUPPORTED: bool = cfg!(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")));

/// Whether the calling thread is inside the probe's sample signal handler.
pub(crate) fn in_handler() -> bool {
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    return signal::in_handler();
    #[allow(unreachable_code)]
    false
}
