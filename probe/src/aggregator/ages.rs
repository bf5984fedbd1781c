//! Live-task ages per spawn location, from the slots' spawn/terminate event rings (drained on
//! the aggregator thread): what `oldest_live_ns`, the leak rule and task dumps' spawn locations
//! read. Each drain pass goes through a [`Batch`] first, which pairs the spawn and end of every
//! task that lived within the pass, so that only tasks that outlive a pass reach [`Ages`].

use std::collections::VecDeque;

use crate::aggregator::intmap::IntMap;
use crate::poll::slots::EVENT_TERMINATE;

/// One drain pass's spawn and terminate events, paired before any of them touches [`Ages`].
///
/// In a spawn storm nearly every task is spawned and ends between two drains (100 ms apart at
/// most). Such a task was never live at a tick: no figure but the slots' counters (exact on
/// their own) can show it. Here its two events cancel with two operations on a small map that
/// stays in cache, instead of an insert into the live-task map, a place in its location's spawn
/// order, a removal, and a lookup when that order is trimmed: the aggregator's CPU on the
/// two-spawner storm fell by half (docs/benchmarks.md, "Spawn storms"), and on 2 cores that CPU
/// is taken from a worker.
///
/// What does not pair goes to [`Ages`] at the end of the pass ([`Batch::finish`]): the ends of
/// tasks spawned in an earlier pass (or whose spawn comes later or was dropped: `Ages` keeps those
/// as orphans), then the spawns, oldest first, their times raised to the drain floor.
///
/// Events come from any ring, in any order between rings: [`Batch::event`] is the one entry
/// point. The order within a pass does not matter: a task's two events pair whichever comes
/// first.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Spawns of this pass not paired yet: task → (location, spawn time).
    spawns: IntMap<u64, (usize, u64)>,
    /// Ends of this pass whose spawn it has not seen (yet).
    ends: IntMap<u64, ()>,
    /// What did not pair, sorted at the end of the pass (kept for its allocation).
    left: Vec<(u64, u64, usize)>,
    /// Tasks paired, over every pass.
    pub(crate) paired: u64,
    /// Events of the largest pass since the maps last shrank.
    peak: usize,
    passes: u64,
}

impl Batch {
    /// One spawn (`task` without [`EVENT_TERMINATE`]; `at` its raw spawn time) or termination
    /// (with it; `loc` and `at` unused).
    #[inline]
    pub(crate) fn event(&mut self, loc: usize, task: u64, at: u64) {
        if task & EVENT_TERMINATE != 0 {
            let task = task & !EVENT_TERMINATE;
            if self.spawns.remove(&task).is_some() {
                self.paired += 1;
            } else {
                self.ends.insert(task, ());
            }
        } else if !self.ends.is_empty() && self.ends.remove(&task).is_some() {
            self.paired += 1;
        } else {
            self.spawns.insert(task, (loc, at));
        }
    }

    /// Ends the pass: hands what did not pair to `ages`, each spawn time raised to `floor` (see
    /// `hooks::spawn_time`: the clock read as the previous pass began, 0 before the first), and
    /// ends `ages`'s pass.
    pub(crate) fn finish(&mut self, ages: &mut Ages, floor: u64, cap: usize) {
        let events = self.spawns.len() + self.ends.len();
        for (task, ()) in self.ends.drain() {
            ages.terminate(task);
        }
        self.left.extend(self.spawns.drain().map(|(task, (loc, at))| (at.max(floor), task, loc)));
        // Oldest first, as `Ages` keeps each location's tasks; Tokio's ids grow with each spawn,
        // which orders the spawns of one thread that carry the same clock reading.
        self.left.sort_unstable();
        for (at, task, loc) in self.left.drain(..) {
            ages.spawn(task, loc, at, cap);
        }
        ages.end_pass();
        // A storm grows the maps to its largest pass; give the memory back once it is over.
        self.peak = self.peak.max(events);
        self.passes += 1;
        if self.passes.is_multiple_of(64) {
            let keep = self.peak * 2;
            let too_big = |cap: usize| cap > 4096 && cap > 2 * keep;
            if too_big(self.spawns.capacity()) || too_big(self.ends.capacity()) || too_big(self.left.capacity()) {
                self.spawns.shrink_to(keep);
                self.ends.shrink_to(keep);
                self.left.shrink_to(keep);
            }
            self.peak = 0;
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1_000;
    const LOC: usize = 0x1000;

    fn spawn(b: &mut Batch, task: u64, at: u64) {
        b.event(LOC, task, at);
    }

    fn end(b: &mut Batch, task: u64) {
        b.event(LOC, task | EVENT_TERMINATE, 0);
    }

    #[test]
    fn a_task_that_lives_within_a_pass_never_reaches_the_live_task_map() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        // Its own ring first, or the ring of the worker that ran it first: both pair.
        spawn(&mut b, 1, 100);
        end(&mut b, 1);
        end(&mut b, 2);
        spawn(&mut b, 2, 100);
        b.finish(&mut ages, 0, CAP);
        assert_eq!(b.paired, 2);
        assert!(ages.tasks.is_empty());
        assert_eq!(ages.oldest(LOC, 0), None);
        assert!(ages.orphans.is_empty(), "nothing is left waiting for a partner");
    }

    #[test]
    fn tasks_that_outlive_a_pass_are_tracked_until_their_end() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        spawn(&mut b, 1, 100);
        spawn(&mut b, 2, 150);
        spawn(&mut b, 3, 120);
        end(&mut b, 3);
        b.finish(&mut ages, 0, CAP);
        assert_eq!(b.paired, 1);
        assert_eq!(ages.tasks.len(), 2);
        assert_eq!(ages.oldest(LOC, 2), Some(100));
        // Next pass: the oldest ends; its end pairs with nothing in this pass and leaves the map.
        end(&mut b, 1);
        spawn(&mut b, 4, 300);
        b.finish(&mut ages, 200, CAP);
        assert_eq!(b.paired, 1);
        assert_eq!(ages.tasks.len(), 2);
        assert_eq!(ages.oldest(LOC, 2), Some(150));
    }

    #[test]
    fn an_end_drained_a_pass_before_its_spawn_still_cancels_it() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        end(&mut b, 7);
        b.finish(&mut ages, 0, CAP);
        spawn(&mut b, 7, 500);
        b.finish(&mut ages, 400, CAP);
        assert!(ages.tasks.is_empty());
        assert_eq!(ages.oldest(LOC, 0), None);
    }

    #[test]
    fn spawn_times_are_raised_to_the_floor_and_kept_oldest_first() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        // Out of order within the pass (two rings), one stale reading far below the floor.
        spawn(&mut b, 11, 1_500);
        spawn(&mut b, 10, 10);
        spawn(&mut b, 12, 1_200);
        b.finish(&mut ages, 1_000, CAP);
        assert_eq!(ages.oldest(LOC, 3), Some(1_000), "the stale time is raised to the floor");
        end(&mut b, 10);
        b.finish(&mut ages, 2_000, CAP);
        assert_eq!(ages.oldest(LOC, 2), Some(1_200), "then the next oldest, not the last drained");
    }

    #[test]
    fn the_maps_give_their_memory_back_after_a_storm() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        for t in 0..100_000 {
            spawn(&mut b, t, 1);
        }
        for t in 0..100_000 {
            end(&mut b, t);
        }
        b.finish(&mut ages, 0, CAP);
        assert!(b.spawns.capacity() >= 100_000);
        for _ in 0..128 {
            spawn(&mut b, 1_000_000, 1);
            end(&mut b, 1_000_000);
            b.finish(&mut ages, 0, CAP);
        }
        assert!(b.spawns.capacity() <= 4096, "capacity {}", b.spawns.capacity());
    }
}
