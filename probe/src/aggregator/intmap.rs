//! Hash maps keyed by the probe's own integers (task ids, spawn-location addresses), for the
//! aggregator's per-event work.
//!
//! In a spawn storm the aggregator handles millions of spawn and terminate events a second, each
//! a few map operations; with std's SipHash they took most of its time, and every millisecond it
//! spends is taken from a busy worker on a small machine (docs/benchmarks.md, W2). These keys are
//! produced by this process, never by a peer, so a keyed hash buys nothing here. Use std's maps
//! for anything keyed by outside input.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One folded 64×64→128-bit multiply per word: sequential ids and aligned addresses both
/// spread over the low bits (bucket index) and the high bits (control byte).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IntHasher(u64);

#[inline(always)]
fn fold(x: u64) -> u64 {
    let p = u128::from(x) * 0x9E37_79B9_7F4A_7C15;
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for IntHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline(always)]
    fn write_u64(&mut self, v: u64) {
        self.0 = fold(self.0 ^ v);
    }
    #[inline(always)]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// A `HashMap` keyed by the probe's own integers.
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(v: T) -> u64 {
        BuildHasherDefault::<IntHasher>::default().hash_one(v)
    }

    #[test]
    fn sequential_ids_and_aligned_addresses_spread_over_low_and_high_bits() {
        for keys in [(1..=4096u64).collect::<Vec<_>>(), (0..4096u64).map(|i| 0x5555_0000_0000 + i * 64).collect()] {
            let low: std::collections::HashSet<u64> = keys.iter().map(|&k| hash(k) & 4095).collect();
            let high: std::collections::HashSet<u64> = keys.iter().map(|&k| hash(k) >> 57).collect();
            // A uniform hash fills ~63% of 4096 buckets with 4096 keys, and all 128 tags.
            assert!(low.len() > 2400, "low bits: {} distinct of 4096", low.len());
            assert_eq!(high.len(), 128, "high bits: {} distinct of 128", high.len());
        }
    }

    #[test]
    fn a_map_works() {
        let mut m: IntMap<u64, u64> = IntMap::default();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m.get(&i) == Some(&(i * 2))));
    }
}
