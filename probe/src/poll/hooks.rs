//! The poll hooks: the probe's only hot path.
//!
//! Everything here runs inside the service's runtime on every poll, spawn and termination. It
//! writes to the calling thread's own slot with plain atomic stores and bumps histogram buckets.
//! Most polls read no clock: one in `timed_every` reads the raw clock at both ends, and an
//! untimed poll reads it at its end only if the watchdog marked it as possibly long. It takes no locks, makes no allocations, does no
//! I/O and never panics (indices are masked; the one slow path, the first poll or park hook on a
//! thread, claims a slot with compare-and-swap; a spawn or termination on a thread without a slot
//! takes a position in the shared event ring with a bounded compare-and-swap loop). Do not add
//! anything here that is not per-poll essential: aggregation belongs to the aggregator thread. The benchmark in `probe/benches/overhead.rs`
//! guards this file.
#![cfg_attr(not(tokio_unstable), allow(dead_code))]

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::atomic::{fence, Ordering::*};

use crate::poll::clock::now_raw;
use crate::poll::slots::{Slot, EVENT_TERMINATE, FLAG_TIMED};
use crate::state::Shared;

thread_local! {
    /// (probe id, slot) claimed by this thread. The slot pointer is valid while the probe id
    /// matches: slots live in a boxed slice owned by `Shared`, which the hooks keep alive, and
    /// probe ids are never reused. A null slot with a matching id means that this thread found
    /// no free slot: its polls are not tracked. Spawns and terminations of a thread without a
    /// slot go to the shared slot and its event ring. Const-initialised with no destructor: a
    /// plain TLS load.
    static CLAIM: Cell<(u64, *const Slot)> = const { Cell::new((0, std::ptr::null())) };
}

/// What every poll reads of the probe's configuration, copied into each hook closure so that
/// a poll touches only the closure (which Tokio's call brings in anyway), its thread's TLS and
/// poll line. Reading these from `Shared` cost one more cache
/// line per poll, measurable on the yield storm (docs/benchmarks.md, "What was tried").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hot {
    pub(crate) id: u64,
    /// `timed_every - 1`.
    pub(crate) timed_mask: u64,
}

impl Hot {
    pub(crate) fn of(shared: &Shared) -> Hot {
        Hot { id: shared.id, timed_mask: shared.timed_mask }
    }
}

/// This thread's own slot, or None for a thread that found no free slot.
#[inline(always)]
fn own_slot<'a>(hot: &Hot, shared: &'a Shared) -> Option<&'a Slot> {
    let (probe, slot) = CLAIM.with(Cell::get);
    if probe != hot.id {
        return claim(shared);
    }
    // SAFETY: see CLAIM.
    unsafe { slot.as_ref() }
}

/// The slot spawns and terminations count in: the thread's own if it already holds one, or the
/// shared one. Never claims: a thread that only spawns or ends tasks (a blocking-pool thread, a
/// plain thread spawning through a `Handle`, another runtime's worker) would hold a slot it
/// never gives back, and once the slots ran out the workers that came after had none, so their
/// stalls went unseen (P7, defect 2). Its events go to the shared slot's event ring instead.
#[inline(always)]
fn count_slot<'a>(hot: &Hot, shared: &'a Shared) -> &'a Slot {
    let (probe, slot) = CLAIM.with(Cell::get);
    if probe == hot.id && !slot.is_null() {
        // SAFETY: see CLAIM.
        return unsafe { &*slot };
    }
    &shared.slots.shared
}

#[cold]
#[inline(never)]
fn claim(shared: &Shared) -> Option<&Slot> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let owner = crate::poll::slots::thread_serial();
    let slot = shared.slots.claim(tid, owner).map(|i| &shared.slots.slots[i as usize]);
    CLAIM.with(|c| c.set((shared.id, slot.map_or(std::ptr::null(), |s| s as *const Slot))));
    // A new thread may poll before it ever parks (a worker that finds work at once): a watchdog
    // asleep until an unpark must look at it (`WatchdogSleep`; the claim published the slot).
    if slot.is_some() {
        shared.sleep.wake_if_asleep();
    }
    slot
}

/// The calling thread's slot of this probe, claimed now if it has none (`Probe::watch_thread`).
pub(crate) fn current_slot(shared: &Shared) -> Option<&Slot> {
    own_slot(&Hot::of(shared), shared)
}

thread_local! {
    /// Slots claimed by `Probe::watch_thread` on this thread, given back when it exits: such a
    /// thread has no `on_thread_stop` hook. Touched only by `watch_thread`, never per poll.
    static WATCHED: std::cell::RefCell<Vec<WatchedSlot>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One slot to give back at thread exit. Holds the probe weakly: a thread that outlives the
/// probe must not keep it alive.
struct WatchedSlot {
    shared: std::sync::Weak<Shared>,
    slot: *const Slot,
    tid: i32,
}

impl Drop for WatchedSlot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            // Only the slot this thread still holds: `release` ignores pointers it does not own.
            if shared.slots.slots.iter().any(|s| std::ptr::eq(s, self.slot) && s.tid.load(Acquire) == self.tid) {
                shared.slots.release(self.slot);
            }
        }
    }
}

/// Gives `slot` back when the calling thread exits (see `WATCHED`).
pub(crate) fn release_at_thread_exit(shared: &std::sync::Arc<Shared>, slot: &Slot) {
    let tid = slot.tid.load(Relaxed);
    let entry = WatchedSlot { shared: std::sync::Arc::downgrade(shared), slot, tid };
    // During thread teardown the list may be gone already; then the slot stays with the exited
    // thread's tid, as a thread without `on_thread_stop` would leave it.
    let _ = WATCHED.try_with(|w| w.borrow_mut().push(entry));
}

/// Releases the calling thread's slot of this probe (`on_thread_stop`), whichever probe its
/// claim names now: a worker that ran another probe's hooks since (an `instrument`ed future of
/// that probe, a nested runtime) holds that probe's claim, and its slot here was never given
/// back when this was looked up through the claim.
pub(crate) fn thread_stop(shared: &Shared) {
    shared.slots.release_owned(crate::poll::slots::thread_serial());
    let (probe, _) = CLAIM.with(Cell::get);
    if probe == shared.id {
        CLAIM.with(|c| c.set((0, std::ptr::null())));
    }
}

/// Tokio's task ids are opaque; their `Hash` writes the id as one `u64`, which this captures.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    #[inline(always)]
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[inline(always)]
pub(crate) fn task_id_u64(id: tokio::task::Id) -> u64 {
    let mut h = IdHasher::default();
    id.hash(&mut h);
    h.0
}

#[inline(always)]
fn loc_key(loc: &'static Location<'static>) -> usize {
    loc as *const Location<'static> as usize
}

// === poll ===

/// Start of a poll. `task` is 0 for an `instrument`ed future (Tokio's task ids start at 1).
///
/// Timing: one poll in `timed_poll_every` (per thread, by its poll count) reads the raw clock at
/// both ends and feeds the histograms. Every other poll reads no clock and stores no start. The
/// watchdog bounds such a poll's start from below by the latest clock reading this thread made
/// before it (`PollState::anchor`: the end of its last timed poll or its last unpark), by its own
/// previous scan, and by its scan interval (`watchdog::Cadence`). When such a poll has run long enough
/// that it may cross the threshold, the watchdog marks it (`PollState::watched`) and its end
/// reads the raw clock. Reading the TSC costs ~11 ns here, so two reads per poll alone would
/// exceed the overhead budget (docs/benchmarks.md).
#[inline(always)]
pub(crate) fn before_poll(
    hot: &Hot,
    shared: &Shared,
    task: u64,
    loc: &'static Location<'static>,
    schedule_latency_ns: Option<u64>,
) {
    let Some(slot) = own_slot(hot, shared) else { return };
    let p = &slot.poll.0;
    let seq = p.seq.load(Relaxed);
    if seq & 1 == 1 {
        // A poll inside a poll on the same thread (an instrumented future inside a task, or a
        // nested runtime under block_in_place): the outer poll already covers this time.
        p.depth.store(p.depth.load(Relaxed) + 1, Relaxed);
        return;
    }
    // Seqlock writer: the even `seq` stored by the previous after_poll must be visible before
    // any field of the new poll.
    fence(Release);
    // Poll number `seq / 2` on this thread; every `timed_every`-th (a power of two) is timed, and
    // its exact start is the new anchor.
    if is_timed(hot, seq) {
        p.anchor.store(now_raw(), Relaxed);
        p.anchor_seq.store(seq, Relaxed);
    }
    p.task.store(task, Relaxed);
    p.loc.store(loc_key(loc), Relaxed);
    p.seq.store(seq.wrapping_add(1), Release);
    if let Some(ns) = schedule_latency_ns {
        let i = slot.entry_index(loc);
        slot.record_sched(i, crate::poll::clock::clock().ns_to_ticks(ns));
    }
}

/// Whether the poll that starts at (even) or runs under (odd) `seq` is timed.
#[inline(always)]
fn is_timed(hot: &Hot, seq: u64) -> bool {
    (seq >> 1) & hot.timed_mask == 0
}

/// End of a poll.
#[inline(always)]
pub(crate) fn after_poll(hot: &Hot, shared: &Shared) {
    let Some(slot) = own_slot(hot, shared) else { return };
    let p = &slot.poll.0;
    let depth = p.depth.load(Relaxed);
    if depth > 0 {
        p.depth.store(depth - 1, Relaxed);
        return;
    }
    let seq = p.seq.load(Relaxed);
    if seq & 1 == 0 {
        return;
    }
    p.seq.store(seq.wrapping_add(1), Release);
    if is_timed(hot, seq) {
        timed_end(shared, slot, seq);
    } else if p.watched.load(Acquire) == seq {
        watched_end(shared, slot, seq);
    }
}

/// A worker thread leaves its park (`on_thread_unpark`): whatever it polls next starts after
/// now, so now is a lower bound of those polls' starts (the anchor). Idle workers park, so this
/// makes the start of a stall that follows idle time exact; a busy worker's anchor is the end of
/// its last timed poll, at most `timed_poll_every` polls back.
///
/// It also wakes the watchdog if it sleeps until an unpark (every watched thread was parked,
/// `state::WatchdogSleep`): a fence and a load of a line no poll writes; only the one unpark that
/// ends such a sleep swaps a flag and makes a futex wake system call. No lock, no allocation.
#[inline(always)]
pub(crate) fn unparked(hot: &Hot, shared: &Shared) {
    let Some(slot) = own_slot(hot, shared) else { return };
    let p = &slot.poll.0;
    // Only between polls: a nested runtime's park inside a poll must not move the anchor past
    // the running poll's start.
    let seq = p.seq.load(Relaxed);
    if seq & 1 == 0 {
        // Seqlock: a reader that sees these stores and then checks `seq` must see the even `seq`
        // stored before them, not the odd one of the poll that ended (a compiler barrier on x86).
        fence(Release);
        p.anchor.store(now_raw(), Relaxed);
        p.anchor_seq.store(seq, Relaxed);
        let run = p.run.load(Relaxed);
        if run & 1 == 0 {
            p.run.store(run.wrapping_add(1), Release);
        }
        // After the store of `run` (the fence inside orders them): see `WatchdogSleep`.
        shared.sleep.wake_if_asleep();
        if p.runtime_wanted.load(Relaxed) {
            note_runtime(slot);
        }
    }
}

/// A worker thread parks (`on_thread_park`): the watchdog must not count what follows as busy.
/// Plain loads and stores on the thread's own slot, nothing else. Only between polls, like
/// `unparked`: a nested runtime parking inside a poll does not park this thread's runtime.
///
/// A thread's first park may come before any unpark (a new worker that found work at once):
/// `run` then goes from 0 (never through the park hooks) to 2, parked, so the watchdog can sleep
/// on its word (`watchdog::parked_for_good`); left at 0, such a worker kept the watchdog awake
/// for as long as it stayed parked.
#[inline(always)]
pub(crate) fn parked(hot: &Hot, shared: &Shared) {
    let Some(slot) = own_slot(hot, shared) else { return };
    let p = &slot.poll.0;
    if p.seq.load(Relaxed) & 1 == 0 {
        let run = p.run.load(Relaxed);
        if run & 1 == 1 || run == 0 {
            p.run.store(run.wrapping_add(1 + u64::from(run == 0)), Release);
        }
    }
}

/// First unpark after a claim: remember the thread's runtime if it is a current-thread one (the
/// only flavour that runs user code outside task polls, `watchdog::Unhooked`). Once per claim.
#[cold]
#[inline(never)]
fn note_runtime(slot: &Slot) {
    slot.poll.runtime_wanted.store(false, Relaxed);
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return;
    }
    if let Ok(mut rt) = slot.runtime.try_lock() {
        *rt = Some(handle);
    }
}

/// End of a timed poll: exact duration into the location's histogram (weighted by the
/// sampling rate), and into the long-poll ring if past the threshold.
#[inline(never)]
fn timed_end(shared: &Shared, slot: &Slot, seq: u64) {
    let p = &slot.poll.0;
    let start = p.anchor.load(Relaxed);
    let end = now_raw();
    let ticks = end.saturating_sub(start);
    // The end is a closer anchor for the polls that follow (see `unparked` for the fence).
    fence(Release);
    p.anchor.store(end, Relaxed);
    p.anchor_seq.store(seq.wrapping_add(1), Relaxed);
    let loc = p.loc.load(Relaxed);
    // SAFETY: `loc` was stored from a `&'static Location<'static>` by before_poll.
    let i = slot.entry_index(unsafe { &*(loc as *const Location<'static>) });
    slot.record_poll(i, ticks, u64::from(shared.timed_every));
    if ticks >= shared.threshold_ticks {
        slot.push_long(seq, start, ticks, p.task.load(Relaxed), loc, FLAG_TIMED);
    }
}

/// End of an untimed poll the watchdog marked as possibly long: read the clock and record it
/// if it did cross the threshold, measured from the watchdog's estimate of its start. It is
/// recorded from the watchdog's lower bound of its start, so the length is never shorter than
/// the poll was and longer by at most the bound's distance (the end is exact).
#[cold]
#[inline(never)]
fn watched_end(shared: &Shared, slot: &Slot, seq: u64) {
    let p = &slot.poll.0;
    let start = p.watched_start.load(Relaxed);
    let floor = p.watched_floor.load(Relaxed).min(start);
    let end = now_raw();
    fence(Release);
    p.anchor.store(end, Relaxed);
    p.anchor_seq.store(seq.wrapping_add(1), Relaxed);
    if end.saturating_sub(start) >= shared.threshold_ticks {
        slot.push_long(seq, floor, end.saturating_sub(floor), p.task.load(Relaxed), p.loc.load(Relaxed), 0);
    }
}

// === spawn / terminate ===

/// One spawn in `SPAWN_CLOCK_EVERY` (a power of two) on a thread reads the clock.
pub(crate) const SPAWN_CLOCK_EVERY: u64 = 16;

#[inline(always)]
pub(crate) fn spawn(hot: &Hot, shared: &Shared, task: u64, loc: &'static Location<'static>) {
    let slot = count_slot(hot, shared);
    let i = slot.entry_index(loc);
    slot.count_spawn(i);
    slot.push_event(loc_key(loc), task, spawn_time(slot));
}

/// The spawn time written with a spawn event: a lower bound of the true one, never above it.
///
/// Reading the TSC costs ~11 ns here, a tenth of what the probe adds per task in a spawn storm
/// (docs/benchmarks.md, "Spawn storms"), so only one spawn in [`SPAWN_CLOCK_EVERY`] on a thread
/// reads it (the first one after a claim included); the others carry the last reading made on
/// this thread. Such a time can be far in the past on a thread that spawns rarely, so the
/// aggregator raises it to its drain floor: the clock read at the start of the drain pass before
/// the one that finds the event, which the spawn does not precede (by more than this hook's own
/// run, were it preempted across that read; `ages::Batch::event`). The age a task is given is
/// then too old by at most the time between those two passes, and by at most the time since this
/// thread's last reading (`docs/guide.md`, "Task ages").
///
/// The owner's plain loads and stores; the shared slot (many writers) reads the clock every time.
#[inline(always)]
pub(crate) fn spawn_time(slot: &Slot) -> u64 {
    if slot.shared {
        return now_raw();
    }
    let c = &slot.spawn_clock.0;
    let n = c.count.load(Relaxed);
    c.count.store(n.wrapping_add(1), Relaxed);
    if n & (SPAWN_CLOCK_EVERY - 1) == 0 {
        let now = now_raw();
        c.at.store(now, Relaxed);
        now
    } else {
        c.at.load(Relaxed)
    }
}

#[inline(always)]
pub(crate) fn terminate(hot: &Hot, shared: &Shared, task: u64, loc: &'static Location<'static>) {
    let slot = count_slot(hot, shared);
    let i = slot.entry_index(loc);
    slot.count_terminate(i);
    slot.push_event(loc_key(loc), task | EVENT_TERMINATE, 0);
}

// === registration ===

/// The terminate hook's captures, 128-byte aligned so that they sit two cache lines away from
/// the count of the `Arc` Tokio keeps the hook in.
///
/// Tokio clones that `Arc` into every task it creates and drops the clone with the task
/// (`TaskHarnessScheduleHooks`), so in a spawn storm both workers write its count all the time.
/// With the captures in the count's line, every termination read a line the other worker had just
/// written: the first load of this hook was the hottest instruction of the probe's hooks in the
/// spawn storms (docs/benchmarks.md, "Spawn storms"). The other hooks are not cloned per task.
/// Kept as a struct with a method (not a closure reading its fields) so that the closure
/// captures the whole aligned value rather than its fields.
#[cfg(tokio_unstable)]
#[repr(align(128))]
struct TerminateHook {
    hot: Hot,
    shared: std::sync::Arc<Shared>,
}

#[cfg(tokio_unstable)]
impl TerminateHook {
    #[inline(always)]
    fn call(&self, meta: &tokio::runtime::TaskMeta<'_>) {
        terminate(&self.hot, &self.shared, task_id_u64(meta.id()), meta.spawned_at())
    }
}

/// Registers the hooks on a runtime builder.
#[cfg(tokio_unstable)]
pub(crate) fn register(shared: &std::sync::Arc<Shared>, builder: &mut tokio::runtime::Builder) {
    // Each closure owns a copy of `Hot` next to its `Arc<Shared>`: see `Hot`.
    let hot = Hot::of(shared);
    let s = shared.clone();
    builder.on_task_spawn(move |meta| spawn(&hot, &s, task_id_u64(meta.id()), meta.spawned_at()));
    let hook = TerminateHook { hot, shared: shared.clone() };
    builder.on_task_terminate(move |meta| hook.call(meta));
    let s = shared.clone();
    // The schedule-latency choice is made here, once, not on every poll.
    #[cfg(feature = "schedule-latency")]
    if shared.config.schedule_latency {
        builder.track_task_schedule_latency();
        builder.on_before_task_poll(move |meta| {
            let latency = meta.schedule_latency().map(|d| d.as_nanos() as u64);
            before_poll(&hot, &s, task_id_u64(meta.id()), meta.spawned_at(), latency)
        });
    } else {
        builder.on_before_task_poll(move |meta| before_poll(&hot, &s, task_id_u64(meta.id()), meta.spawned_at(), None));
    }
    #[cfg(not(feature = "schedule-latency"))]
    builder.on_before_task_poll(move |meta| before_poll(&hot, &s, task_id_u64(meta.id()), meta.spawned_at(), None));
    let s = shared.clone();
    builder.on_after_task_poll(move |_meta| after_poll(&hot, &s));
    let s = shared.clone();
    builder.on_thread_unpark(move || unparked(&hot, &s));
    let s = shared.clone();
    builder.on_thread_park(move || parked(&hot, &s));
    let s = shared.clone();
    builder.on_thread_stop(move || thread_stop(&s));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> crate::Probe {
        crate::Probe::builder().server(false).sampling(false).build().unwrap()
    }

    fn held(shared: &Shared) -> usize {
        shared.slots.slots.iter().filter(|s| s.tid.load(Acquire) != 0).count()
    }

    /// A thread that only spawns and ends tasks takes no slot; its events reach the shared ring.
    #[test]
    fn spawning_and_terminating_claim_no_slot() {
        let p = probe();
        let s = &*p.shared;
        let hot = Hot::of(s);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                spawn(&hot, s, 41, Location::caller());
                terminate(&hot, s, 41, Location::caller());
            });
        });
        assert_eq!(held(s), 0, "no slot claimed");
        let ring = s.slots.shared.ring.as_ref().unwrap();
        let mut events = Vec::new();
        ring.drain(usize::MAX, |_, task, _| events.push(task));
        assert_eq!(events, vec![41, 41 | EVENT_TERMINATE]);
        assert_eq!(s.slots.shared.ev_dropped.load(Relaxed), 0);
    }

    /// A worker of probe A that has since polled under probe B (an `instrument`ed future of B, a
    /// nested runtime) holds B's claim; A's `on_thread_stop` still gives back its slot in A.
    #[test]
    fn thread_stop_releases_the_slot_whichever_probe_the_claim_names() {
        let (a, b) = (probe(), probe());
        let (sa, sb) = (&*a.shared, &*b.shared);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let (ha, hb) = (Hot::of(sa), Hot::of(sb));
                before_poll(&ha, sa, 1, Location::caller(), None);
                after_poll(&ha, sa);
                assert_eq!(held(sa), 1);
                before_poll(&hb, sb, 0, Location::caller(), None);
                after_poll(&hb, sb);
                // The worker exits: A's runtime runs A's stop hook (B's never runs here).
                thread_stop(sa);
            });
        });
        assert_eq!(held(sa), 0, "A's slot given back");
    }
}
