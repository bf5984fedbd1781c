//! Per-thread slots: everything the poll hooks write. All memory is allocated when the probe is
//! built; a thread claims a slot on its first poll (or park hook) and then writes only to that
//! slot, so no cache line is shared between workers on the poll path.
//!
//! Only threads that poll claim a slot. Threads that only spawn or end tasks (blocking-pool
//! threads, plain threads spawning through a `Handle`, another runtime's workers) count in the
//! shared slot, and their events go to its shared event ring (`event_ring.rs`): given a slot
//! each, such threads used every slot up, and the workers that came after got none (P7, defect 2).
//!
//! Writers: the slot's owner thread (plain atomic load + store, no read-modify-write), except
//! the shared slot used by threads that hold no slot (read-modify-write).
//! Readers: the watchdog (current poll), the aggregator (everything else).
#![cfg_attr(not(tokio_unstable), allow(dead_code))]

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::poll::event_ring::EventRing;
use crate::poll::hist::TickHist;
use crate::poll::zeroed::{zeroed_slice, Padded, Zeroable, Zeroed};

/// Long polls each slot remembers between two aggregator drains.
pub(crate) const LONG_RING: usize = 32;

/// Flag of a long-poll record and a stall start: the start was read from the raw clock (a timed
/// poll). An untimed poll's start is the watchdog's lower bound (`watchdog.rs`).
pub(crate) const FLAG_TIMED: u32 = 2;

/// Flag of a stall start: no task hook saw the code that stalled (the `block_on` future or a
/// `LocalSet` task of a current-thread runtime, `watchdog::Unhooked`); its key is not a poll `seq`.
pub(crate) const FLAG_UNHOOKED: u32 = 4;

/// High bit of an event's task word: the event is a termination (clear: a spawn).
pub(crate) const EVENT_TERMINATE: u64 = 1 << 63;

/// The poll in progress on a thread. `seq` is odd while a poll runs (so `seq / 2` counts the
/// thread's polls); a reader loads `seq`, then the fields, then `seq` again, and trusts the
/// fields only if both loads match. Whether the poll is timed follows from `seq` (one poll in
/// `timed_poll_every`, `hooks::before_poll`). `task` is 0 for an `instrument`ed future.
///
/// `anchor` is the latest raw-clock reading this thread made before the running poll began: the
/// poll's exact start if it is timed; otherwise the end of the thread's last timed (or watched)
/// poll or its last unpark, whichever came later (0: none yet). It is written only between polls or as a
/// timed poll starts, so a consistent read of an untimed poll's fields gives a lower bound of
/// its start.
///
/// `watched`, `watched_start` and `watched_floor` are the one part the watchdog writes: when an
/// untimed poll has run long enough that it may cross the threshold, the watchdog stores its
/// estimated start and its lower bound, then the poll's `seq` in `watched`; the poll's end then reads the clock (see
/// `hooks::after_poll`). All of it fits in one cache line.
#[derive(Debug, Default)]
pub(crate) struct PollState {
    pub(crate) seq: AtomicU64,
    pub(crate) anchor: AtomicU64,
    pub(crate) anchor_seq: AtomicU64,
    pub(crate) task: AtomicU64,
    pub(crate) loc: AtomicUsize,
    /// Nesting depth of polls on this thread (an `instrument`ed future inside a task).
    pub(crate) depth: AtomicU32,
    /// `seq` of the untimed poll the watchdog asks to be timed at its end (0: none).
    pub(crate) watched: AtomicU64,
    /// The watchdog's estimate (raw clock) of that poll's start, which decides whether it crossed
    /// the threshold (see `watchdog::scan`: it may be late when the watchdog itself was delayed).
    pub(crate) watched_start: AtomicU64,
    /// A true lower bound of that poll's start, from which its length is reported: never
    /// shorter than the poll was.
    pub(crate) watched_floor: AtomicU64,
    // The fields below are written by the park hooks only (`hooks::parked`, `hooks::unparked`),
    // never per poll; they sit past the poll fields' cache line.
    /// Odd while the thread is out of its park (`on_thread_unpark` .. `on_thread_park`), even
    /// while parked; 0 if the thread never went through the park hooks (so the watchdog cannot
    /// tell its idle time from busy time). Counts park transitions, so a change tells the
    /// watchdog the thread parked since it last looked.
    pub(crate) run: AtomicU64,
    /// Whether the next unpark should look up the thread's runtime (`Slot::runtime`).
    pub(crate) runtime_wanted: AtomicBool,
}

/// A poll that ran past the stall threshold, written by the owner when the poll ends.
///
/// A seqlock guards each record, because the owner overwrites the oldest record when the
/// aggregator is a full ring behind, possibly while the aggregator reads it. The writer
/// (`Slot::push_long`) stores `seq = 0`, a release fence, the fields, then the record's `seq`
/// with release; the reader (`read`) loads `seq` with acquire, the fields, an acquire fence, then
/// `seq` again, and keeps the record only if both loads give the same non-zero value. The fences
/// are what make this hold on weakly ordered CPUs (aarch64): if the reader saw any field of a
/// newer record, the writer's release fence synchronises with the reader's acquire fence, so the
/// second load sees the `0` (or the newer `seq`) and the torn record is refused. Without them
/// the field stores could become visible before the `0`, and both loads could match around a
/// mix of two records. On x86 the fences compile to nothing.
#[derive(Debug, Default)]
pub(crate) struct LongPoll {
    /// Poll sequence number at the poll's start (odd). 0 = never written, or being rewritten.
    pub(crate) seq: AtomicU64,
    pub(crate) start: AtomicU64,
    pub(crate) ticks: AtomicU64,
    pub(crate) task: AtomicU64,
    pub(crate) loc: AtomicUsize,
    pub(crate) flags: AtomicU32,
}

/// A whole long-poll record as read: `(seq, start, ticks, task, loc, flags)`.
pub(crate) type LongRecord = (u64, u64, u64, u64, usize, u32);

impl LongPoll {
    /// The record, if it was read whole (see the type's docs); None while it is being
    /// rewritten or was never written.
    pub(crate) fn read(&self) -> Option<LongRecord> {
        let seq = self.seq.load(Acquire);
        let rec = (
            seq,
            self.start.load(Relaxed),
            self.ticks.load(Relaxed),
            self.task.load(Relaxed),
            self.loc.load(Relaxed),
            self.flags.load(Relaxed),
        );
        // The field loads above stay before the second `seq` load.
        fence(Acquire);
        (seq != 0 && self.seq.load(Relaxed) == seq).then_some(rec)
    }
}

/// The spawn hook's clock (`hooks::spawn_time`): written only by the slot's owner, read by no
/// one else. `count` numbers the owner's spawns; `at` is the raw clock it last read.
#[derive(Debug, Default)]
pub(crate) struct SpawnClock {
    pub(crate) count: AtomicU64,
    pub(crate) at: AtomicU64,
}

/// A spawn or termination, for the aggregator's live-task ages.
#[derive(Debug, Default)]
pub(crate) struct Event {
    pub(crate) loc: AtomicUsize,
    /// Task id, with [`EVENT_TERMINATE`] set for a termination.
    pub(crate) task: AtomicU64,
    pub(crate) at: AtomicU64,
}

/// Counters for one spawn location on one thread.
#[derive(Debug, Default)]
pub(crate) struct LocEntry {
    /// `&'static Location<'static>` as an address; 0 while empty. Written once by the owner.
    pub(crate) key: AtomicUsize,
    pub(crate) spawned: AtomicU64,
    pub(crate) terminated: AtomicU64,
    pub(crate) poll: TickHist,
    pub(crate) sched: TickHist,
}

#[inline(always)]
fn bump(a: &AtomicU64) {
    a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
}

// SAFETY: only atomics.
unsafe impl Zeroable for LocEntry {}
// SAFETY: only atomics.
unsafe impl Zeroable for Event {}

thread_local! {
    /// This thread's serial number (0: none drawn yet). Const-initialised, no destructor.
    static SERIAL: Cell<u64> = const { Cell::new(0) };
}

/// A number for the calling thread, unique in the process for its lifetime (unlike its tid,
/// which the kernel hands to a new thread once it has exited, or its `pthread_t`, which glibc
/// reuses with the thread's stack). A slot records its owner's, so a thread can tell its own slot
/// from the one a dead thread with the same tid left behind. No allocation: a plain TLS cell.
pub(crate) fn thread_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    SERIAL
        .try_with(|s| {
            if s.get() == 0 {
                s.set(NEXT.fetch_add(1, Relaxed));
            }
            s.get()
        })
        .unwrap_or(0)
}

/// Whether the thread `tid` of this process still exists (`tgkill` with signal 0 sends nothing).
fn thread_alive(tid: i32) -> bool {
    // SAFETY: plain system calls; signal 0 only checks that the target exists.
    unsafe {
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::c_long, 0 as libc::c_long) == 0
            || *libc::__errno_location() != libc::ESRCH
    }
}

/// One thread's slot.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Kernel thread id of the owner; 0 while free.
    pub(crate) tid: AtomicI32,
    /// The owner's [`thread_serial`] (0 while free).
    pub(crate) owner: AtomicU64,
    /// `pthread_t` of the owner, for the watchdog's stack-bounds query. Written with every
    /// claim, before `generation` is bumped: a thread that takes over a dead thread's slot
    /// (same tid) must not leave the dead thread's `pthread_t` behind.
    pub(crate) pthread: AtomicUsize,
    /// Bumped on every claim, so readers can tell a new owner from the old one.
    pub(crate) generation: AtomicU64,
    /// Whether this slot is shared by threads that found no free slot (writes use RMW).
    pub(crate) shared: bool,
    pub(crate) poll: Padded<PollState>,
    pub(crate) long: Box<[LongPoll]>,
    pub(crate) long_head: Padded<AtomicU64>,
    pub(crate) events: Zeroed<Event>,
    pub(crate) ev_head: Padded<AtomicU64>,
    pub(crate) ev_tail: Padded<AtomicU64>,
    pub(crate) ev_dropped: AtomicU64,
    pub(crate) spawn_clock: Padded<SpawnClock>,
    /// The shared slot's event ring, for every thread without a slot of its own (None in owner
    /// slots, whose events go to `events`).
    pub(crate) ring: Option<EventRing>,
    /// Open-addressed by location address; the last entry is the overflow row.
    pub(crate) locs: Zeroed<LocEntry>,
    /// Indices (+ 1) of the entries of `locs` taken so far, in the order they were taken, so that
    /// the aggregator reads those instead of the whole sparse table (`used_entries`). Owner
    /// slots only: the shared slot is read whole.
    used: Zeroed<AtomicU32>,
    used_len: AtomicU32,
    pub(crate) loc_overflow: AtomicU64,
    /// The current-thread runtime this thread drives (set by its first unpark after a claim), so
    /// the watchdog can see its scheduler loop turn (`watchdog::Unhooked`). Written on the park
    /// hooks' cold path and by the watchdog; None for multi-thread workers, whose unhooked time is
    /// never user code. Cleared when the probe stops (it would keep the runtime's handle alive).
    pub(crate) runtime: std::sync::Mutex<Option<tokio::runtime::Handle>>,
    /// Set by `Probe::watch_thread`: the thread drives a current-thread runtime built without the
    /// probe's hooks (an actix-web worker's), so its park state comes from that runtime's metrics
    /// rather than from `PollState::run` (`watchdog::loop_state`).
    pub(crate) foreign: AtomicBool,
    /// Key of the unhooked stall the aggregator found not to be in a runtime poll (the thread
    /// left the runtime, or is in runtime machinery): the watchdog stops sampling it.
    pub(crate) refuted: AtomicU64,
}

impl Slot {
    pub(crate) fn new(locations: usize, events: usize, shared: bool) -> Slot {
        let locations = locations.next_power_of_two();
        Slot {
            tid: AtomicI32::new(0),
            owner: AtomicU64::new(0),
            pthread: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            shared,
            poll: Padded::default(),
            long: (0..LONG_RING).map(|_| LongPoll::default()).collect(),
            long_head: Padded::default(),
            events: zeroed_slice(if shared { 1 } else { events.next_power_of_two() }),
            ev_head: Padded::default(),
            ev_tail: Padded::default(),
            ev_dropped: AtomicU64::new(0),
            spawn_clock: Padded::default(),
            ring: shared.then(|| EventRing::new(events)),
            locs: zeroed_slice(locations + 1),
            used: zeroed_slice(if shared { 0 } else { locations }),
            used_len: AtomicU32::new(0),
            loc_overflow: AtomicU64::new(0),
            runtime: std::sync::Mutex::new(None),
            foreign: AtomicBool::new(false),
            refuted: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    fn overflow_index(&self) -> usize {
        self.locs.len() - 1
    }

    /// Index of the entry for `loc`, inserting it if needed. Linear probing over at most 16
    /// entries; when they are all taken by other locations, the overflow row.
    #[inline(always)]
    pub(crate) fn entry_index(&self, loc: &'static Location<'static>) -> usize {
        let key = loc as *const Location<'static> as usize;
        let mask = self.overflow_index() - 1;
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> 20) & mask;
        for _ in 0..16 {
            let k = self.locs[i].key.load(Acquire);
            if k == key {
                return i;
            }
            if k == 0 {
                if !self.shared {
                    self.locs[i].key.store(key, Release);
                    self.note_used(i);
                    return i;
                }
                match self.locs[i].key.compare_exchange(0, key, AcqRel, Acquire) {
                    Ok(_) => return i,
                    Err(k) if k == key => return i,
                    Err(_) => {}
                }
            }
            i = (i + 1) & mask;
        }
        self.count_overflow();
        self.overflow_index()
    }

    /// Appends a newly taken entry to `used` (owner only; once per location per thread).
    #[cold]
    fn note_used(&self, i: usize) {
        let n = self.used_len.load(Relaxed) as usize;
        if let Some(u) = self.used.get(n) {
            u.store(i as u32 + 1, Relaxed);
            self.used_len.store(n as u32 + 1, Release);
        }
    }

    /// Indices of the entries of `locs` that may hold counts: the taken ones and the overflow
    /// row. An entry's key is visible to whoever sees it listed here.
    pub(crate) fn used_entries(&self) -> impl Iterator<Item = usize> + '_ {
        let listed = if self.shared { 0 } else { self.used_len.load(Acquire) as usize };
        let all = if self.shared { self.locs.len() } else { 0 };
        let used = self.used[..listed.min(self.used.len())].iter().map(|u| u.load(Relaxed) as usize - 1);
        used.chain(0..all).chain((!self.shared).then_some(self.overflow_index()))
    }

    #[cold]
    fn count_overflow(&self) {
        self.loc_overflow.fetch_add(1, Relaxed);
    }

    #[inline(always)]
    pub(crate) fn count_spawn(&self, i: usize) {
        if self.shared {
            self.locs[i].spawned.fetch_add(1, Relaxed);
        } else {
            bump(&self.locs[i].spawned)
        }
    }

    #[inline(always)]
    pub(crate) fn count_terminate(&self, i: usize) {
        if self.shared {
            self.locs[i].terminated.fetch_add(1, Relaxed);
        } else {
            bump(&self.locs[i].terminated)
        }
    }

    /// Records a timed poll standing for `weight` polls (the timing sample rate).
    #[inline(always)]
    pub(crate) fn record_poll(&self, i: usize, ticks: u64, weight: u64) {
        self.locs[i].poll.record_weighted(ticks, weight)
    }

    #[inline(always)]
    pub(crate) fn record_sched(&self, i: usize, ticks: u64) {
        if self.shared {
            self.locs[i].sched.record_shared(ticks)
        } else {
            self.locs[i].sched.record(ticks)
        }
    }

    /// Appends a spawn/terminate event. Single producer (the owner); drops and counts when the
    /// aggregator has fallen a full ring behind. The shared slot's events go to its shared ring.
    #[inline(always)]
    pub(crate) fn push_event(&self, loc: usize, task: u64, at: u64) {
        if self.shared {
            if !self.ring.as_ref().is_some_and(|r| r.push(loc, task, at)) {
                self.ev_dropped.fetch_add(1, Relaxed);
            }
            return;
        }
        let head = self.ev_head.load(Relaxed);
        let tail = self.ev_tail.load(Acquire);
        if head.wrapping_sub(tail) >= self.events.len() as u64 {
            self.ev_dropped.store(self.ev_dropped.load(Relaxed) + 1, Relaxed);
            return;
        }
        let e = &self.events[head as usize & (self.events.len() - 1)];
        e.loc.store(loc, Relaxed);
        e.task.store(task, Relaxed);
        e.at.store(at, Relaxed);
        self.ev_head.store(head.wrapping_add(1), Release);
    }

    /// Records a poll that ran past the threshold. Rare: only on the slow branch.
    #[cold]
    pub(crate) fn push_long(&self, seq: u64, start: u64, ticks: u64, task: u64, loc: usize, flags: u32) {
        if self.shared {
            return;
        }
        let head = self.long_head.load(Relaxed);
        let e = &self.long[head as usize % LONG_RING];
        // Seqlock writer (see `LongPoll`): the 0 is visible before any field of the new record.
        e.seq.store(0, Relaxed);
        fence(Release);
        e.start.store(start, Relaxed);
        e.ticks.store(ticks, Relaxed);
        e.task.store(task, Relaxed);
        e.loc.store(loc, Relaxed);
        e.flags.store(flags, Relaxed);
        e.seq.store(seq, Release);
        self.long_head.store(head.wrapping_add(1), Release);
    }
}

/// All slots of one probe, plus the shared fallback slot.
#[derive(Debug)]
pub(crate) struct Slots {
    pub(crate) slots: Box<[Slot]>,
    pub(crate) shared: Slot,
    /// Per slot: raw-clock ticks the watchdog found the slot's thread in a poll, counting the
    /// time since its previous scan each time it does (an estimate of busy time with the scan
    /// period as resolution; hooks time only one poll in 16, so they cannot give it). Written by
    /// the watchdog only, read by the aggregator; its own allocation, away from the hot lines.
    pub(crate) busy_ticks: Box<[AtomicU64]>,
    /// Claims that found every slot taken.
    pub(crate) no_slot: AtomicU64,
    pub(crate) any_claimed: AtomicBool,
}

impl Slots {
    pub(crate) fn new(threads: usize, locations: usize, events: usize) -> Slots {
        Slots {
            slots: (0..threads).map(|_| Slot::new(locations, events, false)).collect(),
            shared: Slot::new(locations, events, true),
            busy_ticks: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            no_slot: AtomicU64::new(0),
            any_claimed: AtomicBool::new(false),
        }
    }

    /// Claims a slot for the calling thread (kernel id `tid`, [`thread_serial`] `owner`), or finds
    /// the one it already holds. Called once per thread, not per poll.
    ///
    /// A slot that holds `tid` under another owner was left by a thread that exited without
    /// giving it back (a thread's tid is unique among live threads): the caller takes it over as
    /// a new claim. When no slot is free, a slot whose thread no longer exists is taken back
    /// (one `tgkill(.., 0)` per slot, only then): a thread that polled without an
    /// `on_thread_stop` hook (a `block_on` thread, one that polled an `instrument`ed future)
    /// never gives its slot back otherwise.
    #[cold]
    pub(crate) fn claim(&self, tid: i32, owner: u64) -> Option<u32> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.tid.load(Acquire) == tid {
                if s.owner.load(Relaxed) != owner {
                    self.take(s, owner);
                }
                return Some(i as u32);
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.tid.compare_exchange(0, tid, AcqRel, Relaxed).is_ok() {
                self.take(s, owner);
                return Some(i as u32);
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            let held = s.tid.load(Acquire);
            if held != 0 && !thread_alive(held) && s.tid.compare_exchange(held, tid, AcqRel, Relaxed).is_ok() {
                self.take(s, owner);
                return Some(i as u32);
            }
        }
        self.no_slot.fetch_add(1, Relaxed);
        None
    }

    /// Makes `s`, whose `tid` the caller has just set to its own, the calling thread's: every
    /// field that describes the owner is written afresh, then `generation` tells the readers.
    fn take(&self, s: &Slot, owner: u64) {
        s.owner.store(owner, Relaxed);
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        s.pthread.store(me, Relaxed);
        let p = &s.poll.0;
        // A thread that died inside a poll (it cannot unwind through the hooks, but may exit
        // the process's way) left it open: close it, so this thread's polls are not nested in it.
        let seq = p.seq.load(Relaxed);
        if seq & 1 == 1 {
            p.seq.store(seq.wrapping_add(1), Release);
        }
        p.depth.store(0, Relaxed);
        p.run.store(0, Relaxed);
        p.runtime_wanted.store(true, Relaxed);
        // A lower bound of every poll this thread makes from now on (`anchor`): the
        // watchdog's scans bound only the polls they saw begin.
        p.anchor.store(crate::poll::clock::now_raw(), Relaxed);
        p.anchor_seq.store(p.seq.load(Relaxed), Relaxed);
        if let Ok(mut rt) = s.runtime.try_lock() {
            *rt = None;
        }
        s.foreign.store(false, Relaxed);
        // The new owner's first spawn reads the clock (`hooks::spawn_time`).
        s.spawn_clock.count.store(0, Relaxed);
        s.generation.fetch_add(1, Release);
        self.any_claimed.store(true, Relaxed);
    }

    /// Lets go of every runtime handle the slots hold (the probe is stopping): a handle keeps
    /// its runtime's driver alive, and the runtime holds the hooks that hold these slots.
    pub(crate) fn clear_runtimes(&self) {
        for s in self.slots.iter() {
            *s.runtime.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Releases `slot` (its thread is exiting). Counters stay: they are cumulative and the
    /// aggregator sums every slot.
    pub(crate) fn release(&self, slot: *const Slot) {
        if let Some(s) = self.slots.iter().find(|s| std::ptr::eq(*s, slot)) {
            free(s);
        }
    }

    /// Releases the slot the thread `owner` ([`thread_serial`]) holds, if any (its thread is
    /// exiting). Found by owner, not through the thread's claim: that names one probe only, and
    /// a thread that ran another probe's hooks since it claimed here holds that probe's claim.
    pub(crate) fn release_owned(&self, owner: u64) {
        if owner == 0 {
            return;
        }
        if let Some(s) = self.slots.iter().find(|s| s.owner.load(Relaxed) == owner && s.tid.load(Acquire) != 0) {
            free(s);
        }
    }
}

/// Gives `s` back: it no longer describes any thread, and `tid` 0 lets the next claim take it.
fn free(s: &Slot) {
    if let Ok(mut rt) = s.runtime.try_lock() {
        *rt = None;
    }
    s.foreign.store(false, Relaxed);
    s.pthread.store(0, Relaxed);
    s.owner.store(0, Relaxed);
    s.tid.store(0, Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn here() -> &'static Location<'static> {
        Location::caller()
    }

    #[test]
    fn used_entries_list_every_taken_entry_and_the_overflow_row() {
        let slot = Slot::new(64, 16, false);
        let locs: Vec<&'static Location<'static>> = vec![here(), here(), here(), Location::caller()];
        let mut taken: Vec<usize> = locs.iter().map(|l| slot.entry_index(l)).collect();
        // Asking again finds the same entries and lists nothing twice.
        assert_eq!(locs.iter().map(|l| slot.entry_index(l)).collect::<Vec<_>>(), taken);
        taken.push(slot.overflow_index());
        let mut listed: Vec<usize> = slot.used_entries().collect();
        taken.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, taken);
        // Every listed entry but the overflow row holds a key.
        assert!(listed.iter().filter(|&&i| i != slot.overflow_index()).all(|&i| slot.locs[i].key.load(Relaxed) != 0));

        let shared = Slot::new(64, 0, true);
        shared.entry_index(here());
        assert_eq!(shared.used_entries().count(), shared.locs.len(), "the shared slot is read whole");
    }

    fn gettid() -> i32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    /// A thread that exited without giving its slot back, whose tid the kernel then hands to a
    /// new thread: the new thread takes the slot over as a new claim, with its own `pthread_t`
    /// (the watchdog reads the stack bounds through it) and a new generation.
    #[test]
    fn a_reused_tid_takes_the_slot_over_with_its_own_pthread() {
        // Not a live thread's tid: `claim` takes the caller's word for it.
        const TID: i32 = 0x7fff_fff0;
        let slots = Slots::new(2, 64, 64);
        let (i, dead, generation) = std::thread::scope(|sc| {
            sc.spawn(|| {
                let i = slots.claim(TID, thread_serial()).unwrap() as usize;
                // SAFETY: pthread_self has no preconditions.
                (i, unsafe { libc::pthread_self() } as usize, slots.slots[i].generation.load(Relaxed))
            })
            .join()
            .unwrap()
        });
        let s = &slots.slots[i];
        assert_eq!(s.pthread.load(Relaxed), dead);
        // SAFETY: as above.
        let me = unsafe { libc::pthread_self() } as usize;
        assert_ne!(me, dead);
        assert_eq!(slots.claim(TID, thread_serial()), Some(i as u32), "the slot holding its tid");
        assert_eq!(s.pthread.load(Relaxed), me, "the new owner's pthread_t, not the dead thread's");
        assert_eq!(s.owner.load(Relaxed), thread_serial());
        assert!(s.generation.load(Relaxed) > generation, "readers are told of the new owner");
        // The same thread asking again changes nothing.
        let g = s.generation.load(Relaxed);
        assert_eq!(slots.claim(TID, thread_serial()), Some(i as u32));
        assert_eq!(s.generation.load(Relaxed), g);
    }

    /// Threads that polled and exited without `on_thread_stop` (`block_on` threads) do not keep
    /// their slots from the threads that come after, while live holders keep theirs.
    #[test]
    fn a_full_table_takes_back_the_slots_of_exited_threads() {
        let slots = Slots::new(2, 64, 64);
        for _ in 0..2 {
            // `join` returns once the kernel has cleared the thread's tid: it no longer exists.
            std::thread::scope(|sc| sc.spawn(|| slots.claim(gettid(), thread_serial()).unwrap()).join().unwrap());
        }
        let mine = slots.claim(gettid(), thread_serial()).expect("the slot of an exited thread");
        assert_eq!(slots.no_slot.load(Relaxed), 0);
        // One slot left to a dead thread: taken by the next thread, and then the table is full
        // of live holders (this thread and the one blocked below).
        let (hold, release) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|sc| {
            let slots = &slots;
            let holder = sc.spawn(move || {
                let got = slots.claim(gettid(), thread_serial());
                let _ = release.recv();
                got
            });
            while !slots.slots.iter().all(|s| s.tid.load(Acquire) != 0 && thread_alive(s.tid.load(Acquire))) {
                std::thread::yield_now();
            }
            let refused = sc.spawn(|| slots.claim(gettid(), thread_serial())).join().unwrap();
            assert_eq!(refused, None, "a live holder keeps its slot");
            drop(hold);
            let theirs = holder.join().unwrap().expect("a slot for the second thread");
            assert_ne!(theirs, mine);
        });
        assert_eq!(slots.no_slot.load(Relaxed), 1);
    }

    /// A writer laps the long-poll ring as fast as it can while a reader reads it: every record
    /// read is whole (its fields all derive from its `seq`). The fences this relies on are no-ops
    /// on x86; the test bites on weakly ordered CPUs (aarch64), where the records were torn.
    #[test]
    fn long_poll_records_are_never_read_torn() {
        let slot = Slot::new(64, 64, false);
        let stop = AtomicBool::new(false);
        let (read, refused) = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut seq = 1u64;
                while !stop.load(Relaxed) {
                    slot.push_long(seq, seq * 3, seq ^ 0xABCD, seq + 7, (seq * 5) as usize, seq as u32);
                    seq += 2;
                }
            });
            let reader = sc.spawn(|| {
                let (mut read, mut refused) = (0u64, 0u64);
                for _ in 0..2_000_000 {
                    for e in slot.long.iter() {
                        match e.read() {
                            Some((seq, start, ticks, task, loc, flags)) => {
                                assert_eq!(
                                    (start, ticks, task, loc, flags),
                                    (seq * 3, seq ^ 0xABCD, seq + 7, (seq * 5) as usize, seq as u32),
                                    "a torn record"
                                );
                                read += 1;
                            }
                            None => refused += 1,
                        }
                    }
                    if read > 2_000_000 {
                        break;
                    }
                }
                (read, refused)
            });
            let out = reader.join().unwrap();
            stop.store(true, Relaxed);
            out
        });
        assert!(read > 0, "records were read ({refused} refused mid-write)");
    }
}
