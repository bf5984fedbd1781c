//! Live-task ages per spawn location, from the slots' spawn/terminate event rings (drained on
//! the aggregator thread): what `oldest_live_ns`, the leak rule and task dumps' spawn locations
//! read.

use std::collections::VecDeque;

use crate::aggregator::intmap::IntMap;

/// Live-task ages, from the spawn/terminate event rings.
#[derive(Debug, Default)]
pub(crate) struct Ages {
    /// Tracked live tasks: their location and spawn time.
    pub(crate) tasks: IntMap<u64, (usize, u64)>,
    locs: IntMap<usize, LocAges>,
    orphans: IntMap<u64, u64>,
    /// Spawns not tracked because the map was full.
    pub(crate) untracked: u64,
    passes: u64,
}

/// One location's tracked live tasks.
#[derive(Debug, Default)]
struct LocAges {
    /// (task, spawn time) in spawn order; entries of tasks that have ended are dropped lazily.
    order: VecDeque<(u64, u64)>,
    /// Tracked live tasks.
    tracked: u64,
}

impl Ages {
    pub(crate) fn spawn(&mut self, task: u64, loc: usize, at: u64, cap: usize) {
        if !self.orphans.is_empty() && self.orphans.remove(&task).is_some() {
            return;
        }
        if self.tasks.len() >= cap {
            self.untracked += 1;
            return;
        }
        if let Some((old_loc, _)) = self.tasks.insert(task, (loc, at)) {
            self.untrack(old_loc);
        }
        let l = self.locs.entry(loc).or_default();
        l.order.push_back((task, at));
        l.tracked += 1;
    }

    fn untrack(&mut self, loc: usize) {
        if let Some(l) = self.locs.get_mut(&loc) {
            l.tracked = l.tracked.saturating_sub(1);
        }
    }

    pub(crate) fn terminate(&mut self, task: u64) {
        match self.tasks.remove(&task) {
            Some((loc, _)) => self.untrack(loc),
            // Seen before its spawn (two rings drained out of order) or its spawn was dropped.
            None => {
                self.orphans.insert(task, self.passes);
            }
        }
    }

    pub(crate) fn end_pass(&mut self) {
        self.passes += 1;
        if self.passes.is_multiple_of(64) {
            let p = self.passes;
            self.orphans.retain(|_, at| p - *at < 256);
            // A spawn storm grows these maps to its peak; give the memory back once it is over,
            // so the probe's footprint follows the live tasks instead of keeping the high-water
            // mark (docs/benchmarks.md, "Probe costs": flatness over a million tasks).
            shrink_map(&mut self.tasks);
            shrink_map(&mut self.orphans);
            for l in self.locs.values_mut() {
                if l.order.capacity() > 4096 && l.order.capacity() > 4 * l.order.len() {
                    l.order.shrink_to(l.order.len() * 2);
                }
            }
        }
    }

    /// Spawn time of the oldest tracked live task of `loc`, trimming dead entries. When the
    /// tracked count exceeds the exact live count (a terminate event was dropped), the oldest
    /// extra entries are taken as the dead ones.
    pub(crate) fn oldest(&mut self, loc: usize, exact_live: u64) -> Option<u64> {
        let l = self.locs.get_mut(&loc)?;
        let tasks = &mut self.tasks;
        while let Some(&(task, at)) = l.order.front() {
            let alive = tasks.get(&task).is_some_and(|(_, a)| *a == at);
            if !alive {
                l.order.pop_front();
                continue;
            }
            break;
        }
        let mut extra = l.tracked.saturating_sub(exact_live);
        while extra > 0 {
            match l.order.pop_front() {
                Some((t, at)) => {
                    if tasks.get(&t).is_some_and(|(_, a)| *a == at) {
                        tasks.remove(&t);
                        extra -= 1;
                        l.tracked = l.tracked.saturating_sub(1);
                    }
                }
                None => break,
            }
        }
        // Dead entries behind the front are dropped lazily; compact when they dominate.
        if l.order.len() > 1024 && l.order.len() as u64 > 4 * l.tracked {
            l.order.retain(|(t, at)| tasks.get(t).is_some_and(|(_, a)| a == at));
        }
        l.order.front().map(|(_, at)| *at)
    }
}

/// Shrinks a map holding far less than its capacity (keeping room to double).
fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut IntMap<K, V>) {
    if m.capacity() > 4096 && m.capacity() > 4 * m.len() {
        m.shrink_to(m.len() * 2);
    }
}
