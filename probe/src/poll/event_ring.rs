//! The shared event ring: the spawn and terminate events of threads that hold no slot.
//!
//! A slot is claimed only by a thread that polls (a runtime's workers, a `block_on` thread, a
//! thread that polls an `instrument`ed future). Threads that only spawn or end tasks (blocking-pool
//! threads, plain threads spawning through a `Handle`, another runtime's workers) are many and
//! often short-lived; giving each a slot used the slots up (P7, defect 2). Their events come here
//! instead, and the aggregator drains them with the per-slot rings (`Agg::drain`).
//!
//! Bounded, lock-free, multi-producer and single-consumer (the aggregator thread), after Dmitry
//! Vyukov's bounded queue. Every cell carries a stamp that says whose turn it is: for the cell of
//! position `pos`, in lap `lap = pos / len`,
//! - `2 * lap`: free for the producer of `pos`;
//! - `2 * lap + 1`: written by that producer, for the consumer to read.
//!
//! The all-zero table is therefore a valid empty ring (every cell free for lap 0), so it is mapped
//! lazily like the slots' tables (`Zeroed`). A producer reserves `pos` with one compare-and-swap
//! of `head`, writes the fields, then publishes them with a release store of the stamp; the
//! consumer's acquire load of the stamp makes the fields visible, and its release store of the
//! next lap's free stamp after reading them keeps the next producer from writing over them. No
//! locks, no allocation, no unbounded loop: a producer that finds the ring full, or loses the
//! race for `head` [`RACES`] times in a row, gives up and the caller counts the event as dropped.
#![cfg_attr(not(tokio_unstable), allow(dead_code))]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use crate::poll::zeroed::{zeroed_slice, Padded, Zeroable, Zeroed};

/// Lost races for `head` after which a producer drops its event rather than retry again.
const RACES: usize = 64;

/// One event and its stamp.
#[derive(Debug, Default)]
struct Cell {
    stamp: AtomicU64,
    loc: AtomicUsize,
    /// Task id, with `EVENT_TERMINATE` set for a termination.
    task: AtomicU64,
    at: AtomicU64,
}

// SAFETY: only atomics.
unsafe impl Zeroable for Cell {}

/// The bounded multi-producer, single-consumer event ring (see the module docs).
#[derive(Debug)]
pub(crate) struct EventRing {
    cells: Zeroed<Cell>,
    /// `log2(cells.len())`.
    shift: u32,
    /// Next position a producer reserves.
    head: Padded<AtomicU64>,
    /// Next position the consumer reads; written by the consumer only (an atomic so that the
    /// watchdog can read the ring's fill).
    tail: Padded<AtomicU64>,
}

impl EventRing {
    /// A ring of at least `n` events (rounded up to a power of two, at least 2).
    pub(crate) fn new(n: usize) -> EventRing {
        let len = n.max(2).next_power_of_two();
        EventRing {
            cells: zeroed_slice(len),
            shift: len.trailing_zeros(),
            head: Padded::default(),
            tail: Padded::default(),
        }
    }

    /// Events the ring holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.cells.len()
    }

    /// Events written or being written and not read yet (approximate while producers run).
    pub(crate) fn queued(&self) -> u64 {
        self.head.load(Relaxed).wrapping_sub(self.tail.load(Relaxed))
    }

    /// Appends an event; false when it was not kept (the ring is full, or the producer lost the
    /// race for a position too often). Any thread; no locks, no allocation.
    #[inline]
    pub(crate) fn push(&self, loc: usize, task: u64, at: u64) -> bool {
        let mask = self.cells.len() as u64 - 1;
        let mut pos = self.head.load(Relaxed);
        for _ in 0..RACES {
            let cell = &self.cells[(pos & mask) as usize];
            let free = (pos >> self.shift).wrapping_mul(2);
            // Acquire: the consumer's reads of this cell's previous event happen before our writes.
            let stamp = cell.stamp.load(Acquire);
            if stamp == free {
                match self.head.compare_exchange_weak(pos, pos.wrapping_add(1), Relaxed, Relaxed) {
                    Ok(_) => {
                        cell.loc.store(loc, Relaxed);
                        cell.task.store(task, Relaxed);
                        cell.at.store(at, Relaxed);
                        // Release: publishes the fields to the consumer's acquire load.
                        cell.stamp.store(free.wrapping_add(1), Release);
                        return true;
                    }
                    Err(now) => pos = now,
                }
            } else if (stamp.wrapping_sub(free) as i64) < 0 {
                // The cell still holds (or is still getting) the previous lap's event: full.
                return false;
            } else {
                // Another producer took `pos` since we read `head`.
                pos = self.head.load(Relaxed);
            }
        }
        false
    }

    /// Reads up to `max` events in order, giving each to `f(loc, task, at)`. Stops early at a
    /// position whose producer has reserved but not yet written it (that event and the ones after
    /// it are read by a later call). The aggregator thread only: there is one consumer.
    pub(crate) fn drain(&self, max: usize, mut f: impl FnMut(usize, u64, u64)) -> usize {
        let mask = self.cells.len() as u64 - 1;
        let mut tail = self.tail.load(Relaxed);
        let mut n = 0;
        while n < max {
            let cell = &self.cells[(tail & mask) as usize];
            let lap = tail >> self.shift;
            // Acquire: pairs with the producer's release store, so the fields are whole.
            if cell.stamp.load(Acquire) != lap.wrapping_mul(2).wrapping_add(1) {
                break;
            }
            let (loc, task, at) = (cell.loc.load(Relaxed), cell.task.load(Relaxed), cell.at.load(Relaxed));
            // Release: our reads above happen before the next lap's producer writes.
            cell.stamp.store(lap.wrapping_add(1).wrapping_mul(2), Release);
            tail = tail.wrapping_add(1);
            n += 1;
            f(loc, task, at);
        }
        self.tail.store(tail, Release);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn keeps_what_fits_and_drops_the_rest_until_drained() {
        let r = EventRing::new(5);
        assert_eq!(r.capacity(), 8);
        for i in 0..8 {
            assert!(r.push(i, i as u64, 100 + i as u64), "event {i} fits");
        }
        assert!(!r.push(99, 99, 99), "a full ring refuses");
        let mut got = Vec::new();
        assert_eq!(r.drain(3, |l, t, a| got.push((l, t, a))), 3);
        for i in 8..11 {
            assert!(r.push(i, i as u64, 100 + i as u64), "room again after a drain");
        }
        assert_eq!(r.drain(usize::MAX, |l, t, a| got.push((l, t, a))), 8);
        let want: Vec<_> = (0..11).map(|i| (i, i as u64, 100 + i as u64)).collect();
        assert_eq!(got, want, "in order, each once");
        assert_eq!(r.queued(), 0);
    }

    /// Four producers and a consumer racing over a small ring: every event is read whole,
    /// exactly once and in each producer's order, or counted as dropped by its producer.
    #[test]
    fn concurrent_producers_lose_nothing_uncounted() {
        const PER: u64 = 200_000;
        let r = Arc::new(EventRing::new(256));
        let done = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut kept = 0u64;
                    for i in 0..PER {
                        // Every field derives from (p, i), so a torn event cannot pass the check.
                        let task = (p << 32) | i;
                        if r.push(task as usize ^ 0x5555, task, !task) {
                            kept += 1;
                        }
                    }
                    kept
                })
            })
            .collect();
        let consumer = {
            let (r, done) = (r.clone(), done.clone());
            std::thread::spawn(move || {
                let mut next = [0u64; 4];
                let mut read = 0u64;
                loop {
                    let finished = done.load(Acquire);
                    r.drain(usize::MAX, |loc, task, at| {
                        assert_eq!((loc, at), (task as usize ^ 0x5555, !task), "a torn event");
                        let (p, i) = ((task >> 32) as usize, task & 0xFFFF_FFFF);
                        assert!(i >= next[p], "producer {p}: {i} after {}", next[p]);
                        next[p] = i + 1;
                        read += 1;
                    });
                    if finished {
                        return read;
                    }
                    std::thread::yield_now();
                }
            })
        };
        let kept: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
        done.store(true, Release);
        let read = consumer.join().unwrap();
        assert_eq!(read, kept, "every kept event read once");
        assert!(kept > 0);
    }
}
