//! The probe's clock: a raw counter (the TSC where it is usable), read by the hooks only at the
//! ends of timed and watched polls (most polls read no clock; `hooks`). Conversion to
//! nanoseconds happens off the hot path, in the watchdog and the aggregator.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// Raw counter plus the calibration needed to turn ticks into nanoseconds.
#[derive(Debug)]
pub(crate) struct Clock {
    inner: quanta::Clock,
    /// Nanoseconds per 2^20 ticks, so that conversion is one multiply and one shift.
    ns_per_mega_tick: u64,
    /// (raw ticks, unix nanoseconds) read together once, to place raw stamps on the wall clock.
    epoch_raw: u64,
    epoch_unix_ns: u64,
}

impl Clock {
    fn new() -> Clock {
        let inner = quanta::Clock::new();
        let span = 1u64 << 30;
        let ns = inner.delta_as_nanos(0, span).max(1);
        let ns_per_mega_tick = ((ns as u128) << 20).div_ceil(span as u128) as u64;
        let epoch_raw = inner.raw();
        let epoch_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Clock { inner, ns_per_mega_tick, epoch_raw, epoch_unix_ns }
    }

    /// Ticks to nanoseconds (saturating).
    pub(crate) fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * self.ns_per_mega_tick as u128) >> 20).min(u64::MAX as u128) as u64
    }

    /// Nanoseconds to ticks (rounded up).
    pub(crate) fn ns_to_ticks(&self, ns: u64) -> u64 {
        (((ns as u128) << 20).div_ceil(self.ns_per_mega_tick.max(1) as u128)).min(u64::MAX as u128) as u64
    }

    /// Wall-clock time of a raw stamp, nanoseconds since the Unix epoch.
    pub(crate) fn raw_to_unix_ns(&self, raw: u64) -> u64 {
        if raw >= self.epoch_raw {
            self.epoch_unix_ns.saturating_add(self.ticks_to_ns(raw - self.epoch_raw))
        } else {
            self.epoch_unix_ns.saturating_sub(self.ticks_to_ns(self.epoch_raw - raw))
        }
    }
}

/// The process-wide clock. Calibrated once, on first use (at `Probe::build`).
#[inline(always)]
pub(crate) fn clock() -> &'static Clock {
    CLOCK.get_or_init(Clock::new)
}

/// The raw counter. This is the only clock read on the poll path.
#[inline(always)]
pub(crate) fn now_raw() -> u64 {
    clock().inner.raw()
}

/// The raw counter for the sample signal handler, or 0 before the clock is calibrated (never in
/// practice: `Probe::build` calibrates it before any sample is requested). Async-signal-safe: it
/// never initializes anything, it only reads the counter (`rdtsc` / `cntvct_el0`, or
/// `clock_gettime` where quanta found no usable TSC).
#[inline(always)]
pub(crate) fn now_raw_in_handler() -> u64 {
    CLOCK.get().map_or(0, |c| c.inner.raw())
}
