//! Log-bucket histograms in raw clock ticks. Written by one thread with plain atomic stores,
//! read by the aggregator, which converts bucket bounds to nanoseconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::poll::clock::Clock;
use stallscope_wire::Histogram;

/// Number of buckets. Bucket 0 holds values below 2^FIRST_BITS ticks; bucket k (k >= 1) holds
/// [2^(FIRST_BITS+k-1), 2^(FIRST_BITS+k)); the last bucket is open-ended.
pub(crate) const BUCKETS: usize = 26;
const FIRST_BITS: u32 = 8;

/// Bucket index of a value in ticks: a count of leading zeros and a clamp.
#[inline(always)]
pub(crate) fn bucket_of(ticks: u64) -> usize {
    let bits = 64 - ticks.leading_zeros();
    (bits.saturating_sub(FIRST_BITS) as usize).min(BUCKETS - 1)
}

/// Upper bound, in ticks, of bucket `i` (the last is unbounded).
pub(crate) fn bucket_upper_ticks(i: usize) -> u64 {
    if i + 1 >= BUCKETS {
        u64::MAX
    } else {
        (1u64 << (FIRST_BITS as usize + i)) - 1
    }
}

/// A histogram with a single writer. The writer uses load + store (not read-modify-write):
/// there is no other writer, so the value stays exact and the poll path avoids locked ops.
#[derive(Debug)]
pub(crate) struct TickHist {
    pub(crate) buckets: [AtomicU64; BUCKETS],
    pub(crate) count: AtomicU64,
    pub(crate) sum: AtomicU64,
    pub(crate) max: AtomicU64,
}

impl Default for TickHist {
    fn default() -> Self {
        TickHist {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

#[inline(always)]
fn bump(a: &AtomicU64, by: u64) {
    a.store(a.load(Relaxed).wrapping_add(by), Relaxed);
}

impl TickHist {
    /// Single-writer record.
    #[inline(always)]
    pub(crate) fn record(&self, ticks: u64) {
        bump(&self.buckets[bucket_of(ticks)], 1);
        bump(&self.count, 1);
        bump(&self.sum, ticks);
        if ticks > self.max.load(Relaxed) {
            self.max.store(ticks, Relaxed);
        }
    }

    /// Single-writer record of a sampled value that stands for `weight` values.
    #[inline(always)]
    pub(crate) fn record_weighted(&self, ticks: u64, weight: u64) {
        bump(&self.buckets[bucket_of(ticks)], weight);
        bump(&self.count, weight);
        bump(&self.sum, ticks.wrapping_mul(weight));
        if ticks > self.max.load(Relaxed) {
            self.max.store(ticks, Relaxed);
        }
    }

    /// Multi-writer record (overflow rows shared by threads without a slot).
    pub(crate) fn record_shared(&self, ticks: u64) {
        self.buckets[bucket_of(ticks)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(ticks, Relaxed);
        self.max.fetch_max(ticks, Relaxed);
    }
}

/// A plain (aggregator-side) histogram in ticks, summed over many `TickHist`s.
#[derive(Clone, Debug, Default)]
pub(crate) struct TickSum {
    pub(crate) buckets: [u64; BUCKETS],
    pub(crate) count: u64,
    pub(crate) sum: u64,
    pub(crate) max: u64,
}

impl TickSum {
    pub(crate) fn add(&mut self, h: &TickHist) {
        for (b, a) in self.buckets.iter_mut().zip(h.buckets.iter()) {
            *b = b.wrapping_add(a.load(Relaxed));
        }
        self.count = self.count.wrapping_add(h.count.load(Relaxed));
        self.sum = self.sum.wrapping_add(h.sum.load(Relaxed));
        self.max = self.max.max(h.max.load(Relaxed));
    }

    pub(crate) fn merge(&mut self, o: &TickSum) {
        for (b, a) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *b = b.wrapping_add(*a);
        }
        self.count = self.count.wrapping_add(o.count);
        self.sum = self.sum.wrapping_add(o.sum);
        self.max = self.max.max(o.max);
    }

    pub(crate) fn to_wire(&self, clock: &Clock) -> Histogram {
        let max_ns = clock.ticks_to_ns(self.max);
        Histogram {
            upper_ns: (0..BUCKETS)
                .map(|i| match bucket_upper_ticks(i) {
                    u64::MAX => max_ns.max(clock.ticks_to_ns(bucket_upper_ticks(i - 1)) + 1),
                    t => clock.ticks_to_ns(t),
                })
                .collect(),
            counts: self.buckets.to_vec(),
            count: self.count,
            sum_ns: clock.ticks_to_ns(self.sum),
            max_ns,
        }
    }
}

/// A histogram of nanosecond values, recorded by any thread (pools, lag). Not on the poll path.
#[derive(Debug, Default)]
pub(crate) struct NsHist(pub(crate) TickHist);

impl NsHist {
    pub(crate) fn record_ns(&self, ns: u64) {
        self.0.record_shared(ns)
    }

    pub(crate) fn to_wire(&self) -> Histogram {
        let h = &self.0;
        let max_ns = h.max.load(Relaxed);
        Histogram {
            upper_ns: (0..BUCKETS)
                .map(|i| match bucket_upper_ticks(i) {
                    u64::MAX => max_ns.max(bucket_upper_ticks(i - 1) + 1),
                    t => t,
                })
                .collect(),
            counts: h.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            count: h.count.load(Relaxed),
            sum_ns: h.sum.load(Relaxed),
            max_ns,
        }
    }
}

/// Sub-buckets per power of two in a [`FineHist`]: a quantile is rounded up by at most 1/16.
const FINE_SUB_BITS: u32 = 4;
const FINE_SUB: usize = 1 << FINE_SUB_BITS;
/// Powers of two a [`FineHist`] resolves above its exact range; larger values (past 2^40 ns,
/// about 18 minutes) share the last bucket.
const FINE_TOP_BIT: u32 = 40;
const FINE_BUCKETS: usize = (FINE_TOP_BIT - FINE_SUB_BITS + 2) as usize * FINE_SUB;

/// A finer histogram of nanosecond values for the probe's own cost figures (the signal handler
/// time, the unwind time): 16 linear sub-buckets per power of two, so that a quantile is within
/// 6.25% (the log-bucket [`TickHist`] is only within a factor of two). Any thread may record;
/// never on the poll path.
#[derive(Debug)]
pub(crate) struct FineHist {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for FineHist {
    fn default() -> Self {
        FineHist {
            buckets: (0..FINE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

/// Bucket of a value: exact below 16, then 16 sub-buckets per power of two.
fn fine_bucket_of(ns: u64) -> usize {
    if ns < FINE_SUB as u64 {
        return ns as usize;
    }
    let top = (63 - ns.leading_zeros()).min(FINE_TOP_BIT);
    if top == FINE_TOP_BIT && ns >> FINE_TOP_BIT > 1 {
        return FINE_BUCKETS - 1;
    }
    let shift = top - FINE_SUB_BITS;
    let sub = ((ns >> shift) as usize) & (FINE_SUB - 1);
    (top - FINE_SUB_BITS + 1) as usize * FINE_SUB + sub
}

/// Largest value of bucket `i`.
fn fine_bucket_upper(i: usize) -> u64 {
    if i < FINE_SUB {
        return i as u64;
    }
    if i + 1 >= FINE_BUCKETS {
        return u64::MAX;
    }
    let shift = (i / FINE_SUB - 1) as u32;
    let sub = (i % FINE_SUB) as u64;
    ((FINE_SUB as u64 + sub + 1) << shift) - 1
}

impl FineHist {
    /// Records one value (multi-writer).
    #[cfg_attr(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))), allow(dead_code))]
    pub(crate) fn record(&self, ns: u64) {
        self.buckets[fine_bucket_of(ns)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(ns, Relaxed);
        self.max.fetch_max(ns, Relaxed);
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Largest value recorded.
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The `q` quantile (0..=1): the upper bound of its bucket, at most the maximum; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let max = self.max();
        let mut seen = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(b.load(Relaxed));
            if seen >= rank {
                return fine_bucket_upper(i).min(max);
            }
        }
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_all_values() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(255), 0);
        assert_eq!(bucket_of(256), 1);
        assert_eq!(bucket_of(511), 1);
        assert_eq!(bucket_of(512), 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_of(bucket_upper_ticks(i)), i);
            assert_eq!(bucket_of(bucket_upper_ticks(i) + 1), i + 1);
        }
    }

    #[test]
    fn fine_buckets_are_contiguous_and_narrow() {
        let mut prev_upper = None;
        for i in 0..FINE_BUCKETS - 1 {
            let upper = fine_bucket_upper(i);
            assert_eq!(fine_bucket_of(upper), i, "upper of {i}");
            assert_eq!(fine_bucket_of(upper + 1), i + 1, "after {i}");
            if let Some(p) = prev_upper {
                let lower: u64 = p + 1;
                // Each bucket spans at most 1/16 of its lower bound (exact below 16).
                assert!((upper - lower) * 16 <= lower.max(16), "bucket {i}: {lower}..={upper}");
            }
            prev_upper = Some(upper);
        }
        assert_eq!(fine_bucket_of(u64::MAX), FINE_BUCKETS - 1);
        assert_eq!(fine_bucket_of(0), 0);
    }

    #[test]
    fn fine_quantiles_are_within_a_sixteenth() {
        let h = FineHist::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        let p50 = h.quantile(0.5);
        assert!((50_000..=50_000 + 50_000 / 16).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99);
        assert!((99_000..=99_000 + 99_000 / 16).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn ns_hist_quantiles_follow_recorded_values() {
        let h = NsHist::default();
        for _ in 0..99 {
            h.record_ns(1_000);
        }
        h.record_ns(5_000_000);
        let w = h.to_wire();
        assert_eq!(w.count, 100);
        assert_eq!(w.max_ns, 5_000_000);
        let p50 = w.quantile_ns(0.5).unwrap();
        assert!((1_000..2_048).contains(&p50), "p50 {p50}");
        assert_eq!(w.quantile_ns(1.0), Some(5_000_000));
    }
}
