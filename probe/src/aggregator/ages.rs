//! Live-task ages per spawn location, from the slots' spawn/terminate event rings and the shared
//! event ring of threads without a slot (drained on the aggregator thread): what
//! `oldest_live_ns`, the leak rule and task dumps' spawn locations read. Each drain pass goes
//! through a [`Batch`] first, which pairs the spawn and end of every task that lived within the
//! pass, so that only tasks that outlive a pass reach [`Ages`].

use std::collections::VecDeque;

use crate::aggregator::intmap::IntMap;
use crate::aggregator::young::Young;
use crate::poll::slots::EVENT_TERMINATE;

/// Drain passes that must end after a terminate event is seen before its spawn (an orphan,
/// `Ages::orphans`) before a promotion ([`Batch::promote`]) may let it go. A spawn is written
/// before its task can terminate, so a spawn missed by the pass that saw the terminate (its ring
/// was read earlier in that pass) is read by the next pass, stays young, and reaches [`Ages`] at
/// the first promotion after that pass, which finds the orphan. Orphans that no such promotion
/// claimed never will be: their spawn was dropped, or they are `spawn_blocking` tasks, which have
/// no spawn event at all. Keeping those for 256 passes, as before, grew the map with every
/// blocking task, uncounted (P7 defect 8).
const ORPHAN_PASSES: u64 = 2;
/// Most orphans kept at once; past it the oldest pass's orphans are evicted, counted in
/// `drops.task_events` (a spawn that then arrives is tracked as live until the exact live count
/// corrects it, `Ages::oldest`). Without promotions for a long time (a long
/// `aggregation_interval`), `spawn_blocking` completions reach it.
pub(crate) const ORPHAN_CAP: usize = 65_536;

/// Spawn and terminate events, paired before any of them touches [`Ages`].
///
/// In a spawn storm nearly every task is spawned and ends between two ticks (100 ms apart), and
/// only ticks and task-location questions read [`Ages`]: such a task is never live when anyone
/// looks, and only the slots' counters (exact on their own) can show it. Here its two events
/// cancel with an index and a store each in the window of young tasks ([`Young`]), which stays in
/// cache, instead of an insert into the live-task map, a place in its location's spawn order, a
/// removal, and a lookup when that order is trimmed. On 2 cores the aggregator's CPU is taken
/// from a worker (docs/benchmarks.md, "Spawn storms").
///
/// A spawn stays young until [`Batch::promote`] (each tick and each task-location question; also
/// once the young and the tracked tasks together reach the tracking cap) hands it to [`Ages`],
/// oldest first. Ends are held until the end of their drain pass ([`Batch::end_pass`]), after
/// every spawn of the pass, so that a task spawned on one ring and ended on another pairs
/// whichever ring was read first, with no lookup per spawn. An end whose spawn is not young then
/// goes to [`Ages`]: its task was spawned before the last promotion, or its spawn comes in a later
/// pass or was dropped (`Ages` keeps those as orphans).
///
/// Events come from any ring: [`Batch::event`] is the one entry point, between
/// [`Batch::begin_pass`] and [`Batch::end_pass`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Spawns not paired yet since the last promotion: task → (location, spawn time, floored).
    young: Young,
    /// Ends of this pass, paired at its end.
    ends: Vec<u64>,
    /// The young, sorted as they are promoted (kept for its allocation).
    left: Vec<(u64, u64, usize)>,
    /// This pass's floor of spawn times (`hooks::spawn_time`).
    floor: u64,
    /// Tasks paired, over every pass.
    pub(crate) paired: u64,
    /// Most young tasks and ends held at once since the maps last shrank.
    peak: usize,
    passes: u64,
}

impl Batch {
    /// Starts a drain pass. `floor`: the raw clock as the previous pass began (0 before the
    /// first), which no spawn this pass finds precedes (`hooks::spawn_time`).
    pub(crate) fn begin_pass(&mut self, floor: u64) {
        self.floor = floor;
    }

    /// One spawn (`task` without [`EVENT_TERMINATE`]; `at` its raw spawn time, a lower bound) or
    /// termination (with it; `loc` and `at` unused).
    #[inline]
    pub(crate) fn event(&mut self, loc: usize, task: u64, at: u64) {
        if task & EVENT_TERMINATE != 0 {
            self.ends.push(task & !EVENT_TERMINATE);
        } else {
            self.young.insert(task, loc, at.max(self.floor));
        }
    }

    /// Ends a drain pass: its ends pair with the young spawns, the others go to `ages`, and
    /// `ages`'s pass ends.
    pub(crate) fn end_pass(&mut self, ages: &mut Ages, cap: usize) {
        self.peak = self.peak.max(self.young.len() + self.ends.len());
        for task in self.ends.drain(..) {
            if self.young.remove(task).is_some() {
                self.paired += 1;
            } else {
                ages.terminate(task);
            }
        }
        // The young count against the tracking cap too: past it, they are handed over (and
        // `Ages` counts what it cannot track).
        if self.young.len() + ages.tasks.len() >= cap {
            self.promote(ages, cap);
        }
        ages.end_pass();
        // A storm grows the maps to its peak; give the memory back once it is over.
        self.passes += 1;
        if self.passes.is_multiple_of(64) {
            let keep = self.peak * 2;
            let too_big = |cap: usize| cap > 4096 && cap > 2 * keep;
            if too_big(self.young.capacity()) || too_big(self.ends.capacity()) || too_big(self.left.capacity()) {
                self.young.shrink_to(keep);
                self.ends.shrink_to(keep);
                self.left.shrink_to(keep);
            }
            self.peak = 0;
        }
    }

    /// Hands the young tasks, all live, to `ages`, oldest first: before anything reads `ages`.
    pub(crate) fn promote(&mut self, ages: &mut Ages, cap: usize) {
        self.left.extend(self.young.drain().map(|(task, loc, at)| (at, task, loc)));
        // Oldest first, as `Ages` keeps each location's tasks; Tokio's ids grow with each spawn,
        // which orders the spawns of one thread that carry the same clock reading.
        self.left.sort_unstable();
        for (at, task, loc) in self.left.drain(..) {
            ages.spawn(task, loc, at, cap);
        }
        ages.expire_orphans();
    }
}

/// Live-task ages, from the spawn/terminate event rings.
#[derive(Debug, Default)]
pub(crate) struct Ages {
    /// Tracked live tasks: their location and spawn time.
    pub(crate) tasks: IntMap<u64, (usize, u64)>,
    locs: IntMap<usize, LocAges>,
    /// Terminate events whose spawn was not seen yet, with the drain pass that saw them: kept
    /// until a promotion `ORPHAN_PASSES` passes later, at most `ORPHAN_CAP`.
    orphans: IntMap<u64, u64>,
    /// Spawns not tracked because the map was full.
    pub(crate) untracked: u64,
    /// Orphans evicted to keep the map within `ORPHAN_CAP`.
    pub(crate) orphans_evicted: u64,
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
            // Seen before its spawn (two rings drained out of order), its spawn was dropped, or a
            // `spawn_blocking` task (no spawn event).
            None => {
                if self.orphans.len() >= ORPHAN_CAP {
                    self.evict_orphans();
                }
                self.orphans.insert(task, self.passes);
            }
        }
    }

    /// Makes room in a full orphan map: the oldest pass's orphans go (all of them if the map
    /// holds one pass only), counted.
    fn evict_orphans(&mut self) {
        let oldest = self.orphans.values().copied().min().unwrap_or(self.passes);
        let before = self.orphans.len();
        if oldest < self.passes {
            self.orphans.retain(|_, at| *at != oldest);
        } else {
            self.orphans.clear();
        }
        self.orphans_evicted += (before - self.orphans.len()) as u64;
    }

    /// After a promotion's spawns: the orphans no spawn can claim any more go (see
    /// `ORPHAN_PASSES`).
    pub(crate) fn expire_orphans(&mut self) {
        if !self.orphans.is_empty() {
            let p = self.passes;
            self.orphans.retain(|_, at| p - *at < ORPHAN_PASSES);
        }
    }

    pub(crate) fn end_pass(&mut self) {
        self.passes += 1;
        if self.passes.is_multiple_of(64) {
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

    /// One drain pass of `events` with `floor`, then a tick's promotion.
    fn pass_and_tick(b: &mut Batch, ages: &mut Ages, floor: u64, events: impl FnOnce(&mut Batch)) {
        b.begin_pass(floor);
        events(b);
        b.end_pass(ages, CAP);
        b.promote(ages, CAP);
    }

    #[test]
    fn a_task_that_lives_between_two_ticks_never_reaches_the_live_task_map() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        b.begin_pass(0);
        // Its own ring first, or the ring of the worker that ran it first: both pair.
        spawn(&mut b, 1, 100);
        end(&mut b, 1);
        end(&mut b, 2);
        spawn(&mut b, 2, 100);
        // Spawned in one pass, ended in the next, both before a tick.
        spawn(&mut b, 3, 100);
        b.end_pass(&mut ages, CAP);
        assert!(ages.tasks.is_empty() && ages.orphans.is_empty());
        b.begin_pass(50);
        end(&mut b, 3);
        b.end_pass(&mut ages, CAP);
        b.promote(&mut ages, CAP);
        assert_eq!(b.paired, 3);
        assert!(ages.tasks.is_empty());
        assert_eq!(ages.oldest(LOC, 0), None);
        assert!(ages.orphans.is_empty(), "nothing is left waiting for a partner");
    }

    #[test]
    fn tasks_live_at_a_tick_are_tracked_until_their_end() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        pass_and_tick(&mut b, &mut ages, 0, |b| {
            spawn(b, 1, 100);
            spawn(b, 2, 150);
            spawn(b, 3, 120);
            end(b, 3);
        });
        assert_eq!(b.paired, 1);
        assert_eq!(ages.tasks.len(), 2);
        assert_eq!(ages.oldest(LOC, 2), Some(100));
        // The oldest ends: its end pairs with no young spawn and leaves the map.
        pass_and_tick(&mut b, &mut ages, 200, |b| {
            end(b, 1);
            spawn(b, 4, 300);
        });
        assert_eq!(b.paired, 1);
        assert_eq!(ages.tasks.len(), 2);
        assert_eq!(ages.oldest(LOC, 2), Some(150));
    }

    #[test]
    fn an_end_drained_a_pass_before_its_spawn_still_cancels_it() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        pass_and_tick(&mut b, &mut ages, 0, |b| end(b, 7));
        pass_and_tick(&mut b, &mut ages, 400, |b| spawn(b, 7, 500));
        assert!(ages.tasks.is_empty());
        assert_eq!(ages.oldest(LOC, 0), None);
    }

    #[test]
    fn spawn_times_are_raised_to_the_floor_and_kept_oldest_first() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        // Out of order within the pass (two rings), one stale reading far below the floor.
        pass_and_tick(&mut b, &mut ages, 1_000, |b| {
            spawn(b, 11, 1_500);
            spawn(b, 10, 10);
            spawn(b, 12, 1_200);
        });
        assert_eq!(ages.oldest(LOC, 3), Some(1_000), "the stale time is raised to the floor");
        pass_and_tick(&mut b, &mut ages, 2_000, |b| end(b, 10));
        assert_eq!(ages.oldest(LOC, 2), Some(1_200), "then the next oldest, not the last drained");
    }

    #[test]
    fn the_young_count_against_the_tracking_cap() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        b.begin_pass(0);
        for t in 0..CAP as u64 + 10 {
            spawn(&mut b, t, t);
        }
        b.end_pass(&mut ages, CAP);
        assert_eq!(b.young.len(), 0, "handed over at the cap, not held beside it");
        assert_eq!((ages.tasks.len(), ages.untracked), (CAP, 10));
    }

    /// P7 defect 8: every `spawn_blocking` completion is a terminate event with no spawn, and
    /// each one stayed in the orphan map for 256 drain passes, uncounted: 1,000,000 blocking
    /// tasks in a few seconds made a map of 1,000,000 entries.
    #[test]
    fn orphans_are_kept_until_a_promotion_two_passes_later_and_at_most_the_cap() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        // 100,000 blocking completions in each of 10 passes, a tick after each.
        let mut task = 1u64 << 40;
        for _ in 0..10 {
            pass_and_tick(&mut b, &mut ages, 0, |b| {
                for _ in 0..100_000 {
                    task += 1;
                    end(b, task);
                }
            });
            assert!(ages.orphans.len() <= ORPHAN_CAP);
        }
        assert!(ages.orphans_evicted > 0);
        // Two quiet passes and a tick later none is left.
        pass_and_tick(&mut b, &mut ages, 0, |_| {});
        pass_and_tick(&mut b, &mut ages, 0, |_| {});
        assert!(ages.orphans.is_empty());
        let evicted = ages.orphans_evicted;
        // What the map is for still works: an end drained a pass before its spawn, with ticks
        // between the two passes and passes before the next tick, leaves no live task.
        pass_and_tick(&mut b, &mut ages, 0, |b| end(b, 7));
        b.promote(&mut ages, CAP);
        b.promote(&mut ages, CAP);
        b.begin_pass(0);
        spawn(&mut b, 7, 500);
        b.end_pass(&mut ages, CAP);
        for _ in 0..5 {
            b.begin_pass(0);
            b.end_pass(&mut ages, CAP);
        }
        b.promote(&mut ages, CAP);
        assert!(ages.tasks.is_empty());
        assert!(ages.orphans.is_empty());
        assert_eq!(ages.orphans_evicted, evicted);
    }

    #[test]
    fn the_maps_give_their_memory_back_after_a_storm() {
        let (mut b, mut ages) = (Batch::default(), Ages::default());
        pass_and_tick(&mut b, &mut ages, 0, |b| {
            for t in 0..100_000 {
                spawn(b, t, 1);
            }
            for t in 0..100_000 {
                end(b, t);
            }
        });
        assert!(b.young.capacity() >= 100_000);
        for _ in 0..128 {
            pass_and_tick(&mut b, &mut ages, 0, |b| {
                spawn(b, 1_000_000, 1);
                end(b, 1_000_000);
            });
        }
        assert!(b.young.capacity() <= 4096, "capacity {}", b.young.capacity());
    }
}
