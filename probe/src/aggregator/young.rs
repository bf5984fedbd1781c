//! The young spawns of [`super::ages::Batch`]: task → (location, spawn time), kept in a window
//! indexed by task id where ids allow it, and in a hash map where they do not.
//!
//! In a spawn storm the aggregator pairs millions of spawns and ends a second, and every
//! millisecond it spends is taken from a busy worker on a small machine (docs/benchmarks.md,
//! "Spawn storms"). With a hash map, the insert and the remove were most of that time. Tokio gives
//! task ids from one process-wide counter, so the spawns of one storm have nearly consecutive ids
//! and the tasks live at once lie within a short range of them: an array indexed by
//! `id - base` makes each insert and remove an index and a store, near the entries just touched.
//!
//! Nothing here depends on that for being right, only for being fast. A spawn whose id lies below
//! the window, or too far above it, goes to the map; a window that would grow past
//! [`WINDOW_MAX`] entries slides, moving its oldest live entries to the map. Memory is bounded by
//! the window's size plus the young tasks themselves, which `Batch` bounds by the tracking cap.

use std::collections::VecDeque;

use crate::aggregator::intmap::IntMap;

/// Most ids the window spans (16 bytes each: 1 MiB). A storm's live tasks span a few thousand
/// ids; the window spans from the oldest young task still live to the newest spawn, so a task that
/// lives long in a storm is moved to the map once this many ids have been given out after it.
pub(crate) const WINDOW_MAX: u64 = 1 << 16;

/// An empty window entry: location keys are addresses of `Location`s, never 0. A spawn with
/// location 0 (only tests make one) goes to the map.
const EMPTY: usize = 0;

/// Young spawns by task id.
#[derive(Debug, Default)]
pub(crate) struct Young {
    /// Task id of `window[0]`.
    base: u64,
    /// (location, spawn time) by `id - base`; location [`EMPTY`] where no young task is.
    window: VecDeque<(usize, u64)>,
    /// Non-empty entries of `window`.
    in_window: usize,
    /// Young spawns the window does not hold.
    spill: IntMap<u64, (usize, u64)>,
}

impl Young {
    pub(crate) fn len(&self) -> usize {
        self.in_window + self.spill.len()
    }

    /// Entries the two parts hold room for.
    pub(crate) fn capacity(&self) -> usize {
        self.window.capacity() + self.spill.capacity()
    }

    pub(crate) fn shrink_to(&mut self, keep: usize) {
        self.window.shrink_to(keep.min(WINDOW_MAX as usize));
        self.spill.shrink_to(keep);
    }

    /// Adds a young spawn. Ids are unique, so `task` is not young already.
    #[inline]
    pub(crate) fn insert(&mut self, task: u64, loc: usize, at: u64) {
        if loc == EMPTY {
            self.spill.insert(task, (loc, at));
            return;
        }
        if self.in_window == 0 {
            // Nothing live in the window: start it here, whatever came before.
            self.window.clear();
            self.base = task;
        }
        if task < self.base {
            self.spill.insert(task, (loc, at));
            return;
        }
        let mut idx = task - self.base;
        if idx >= WINDOW_MAX {
            self.slide(task);
            idx = task - self.base;
        }
        let idx = idx as usize;
        if idx >= self.window.len() {
            self.window.resize(idx + 1, (EMPTY, 0));
        }
        if self.window[idx].0 == EMPTY {
            self.in_window += 1;
        }
        self.window[idx] = (loc, at);
    }

    /// Moves the window's start up so that it spans `task`: the live entries it leaves behind go
    /// to the map. Each entry is pushed once and popped once, so this costs no more than the
    /// spawns that made the window.
    #[cold]
    fn slide(&mut self, task: u64) {
        let new_base = task + 1 - WINDOW_MAX;
        while self.base < new_base {
            let Some((loc, at)) = self.window.pop_front() else {
                break;
            };
            if loc != EMPTY {
                self.spill.insert(self.base, (loc, at));
                self.in_window -= 1;
            }
            self.base += 1;
        }
        if self.window.is_empty() {
            self.base = new_base;
        }
    }

    /// Takes a young spawn out, if `task` is one.
    #[inline]
    pub(crate) fn remove(&mut self, task: u64) -> Option<(usize, u64)> {
        if let Some(idx) = task.checked_sub(self.base).filter(|&i| i < self.window.len() as u64) {
            let e = &mut self.window[idx as usize];
            if e.0 != EMPTY {
                let found = std::mem::replace(e, (EMPTY, 0));
                self.in_window -= 1;
                // Keep the window starting at its oldest live entry.
                while self.window.front().is_some_and(|e| e.0 == EMPTY) {
                    self.window.pop_front();
                    self.base += 1;
                }
                return Some(found);
            }
        }
        if self.spill.is_empty() {
            None
        } else {
            self.spill.remove(&task)
        }
    }

    /// Takes every young spawn out, as (task, location, spawn time), in no particular order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u64, usize, u64)> + '_ {
        let base = self.base;
        self.in_window = 0;
        let window = self
            .window
            .drain(..)
            .enumerate()
            .filter(|(_, (loc, _))| *loc != EMPTY)
            .map(move |(i, (loc, at))| (base + i as u64, loc, at));
        window.chain(self.spill.drain().map(|(task, (loc, at))| (task, loc, at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOC: usize = 0x1000;

    fn drained(y: &mut Young) -> Vec<(u64, usize, u64)> {
        let mut v: Vec<_> = y.drain().collect();
        v.sort_unstable();
        assert_eq!(y.len(), 0);
        v
    }

    #[test]
    fn consecutive_ids_stay_in_the_window_and_pair() {
        let mut y = Young::default();
        for t in 100..200 {
            y.insert(t, LOC, t * 10);
        }
        assert_eq!((y.len(), y.spill.len()), (100, 0));
        for t in 100..150 {
            assert_eq!(y.remove(t), Some((LOC, t * 10)));
        }
        assert_eq!(y.remove(120), None, "removed once");
        assert_eq!(y.base, 150, "the window starts at its oldest live entry");
        assert_eq!(drained(&mut y), (150..200).map(|t| (t, LOC, t * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn ids_below_the_window_far_above_it_or_out_of_order_are_all_kept() {
        let mut y = Young::default();
        y.insert(1_000, LOC, 1);
        y.insert(999, LOC, 2); // below the window: the map
        y.insert(1_000 + 3 * WINDOW_MAX, LOC, 3); // far above: the window slides past 1,000
        y.insert(5, LOC + 8, 4);
        y.insert(7, 0, 5); // location 0: the map
        assert_eq!(y.len(), 5);
        assert_eq!(y.window.len() as u64, WINDOW_MAX, "bounded: {}", y.window.len());
        assert_eq!(y.remove(1_000), Some((LOC, 1)));
        assert_eq!(y.remove(999), Some((LOC, 2)));
        assert_eq!(drained(&mut y), vec![(5, LOC + 8, 4), (7, 0, 5), (1_000 + 3 * WINDOW_MAX, LOC, 3)]);
        // Reused after a drain, from any id.
        y.insert(3, LOC, 9);
        assert_eq!(y.remove(3), Some((LOC, 9)));
        assert_eq!(y.len(), 0);
    }

    /// A task that lives through a storm moves to the map once the window passes it; the
    /// window's memory stays at most `WINDOW_MAX` entries however many spawns go by.
    #[test]
    fn a_long_lived_task_in_a_storm_leaves_the_window_bounded() {
        let mut y = Young::default();
        y.insert(1, LOC, 7);
        for t in 2..1_000_000u64 {
            y.insert(t, LOC, t);
            assert_eq!(y.remove(t), Some((LOC, t)));
            assert!(y.window.len() as u64 <= WINDOW_MAX);
        }
        assert_eq!(y.len(), 1);
        assert_eq!(y.spill.len(), 1, "moved to the map when the window slid past it");
        assert_eq!(y.remove(1), Some((LOC, 7)));
        assert_eq!(y.len(), 0);
    }
}
