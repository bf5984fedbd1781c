//! The aggregator thread: the single owner of every map. On each tick it drains the slots'
//! rings, symbolizes new stacks, sums per-thread counters into per-location figures, applies the
//! leak rule, reads runtime metrics and pools, evaluates alerts and publishes one snapshot.
//! Stall starts and ends are published the moment they arrive.

pub(crate) mod alerts;
pub(crate) mod attribution;
pub(crate) mod intmap;
pub(crate) mod leak;
pub(crate) mod msg;
pub mod pool;
pub(crate) mod runtime_metrics;

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::Location;
use std::sync::atomic::Ordering::*;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_wire as wire;
use stallscope_wire::{Interval, LocationDelta, LocationStats, Snapshot, Stall, Update, WorkerStats};

use crate::aggregator::intmap::IntMap;
use crate::poll::clock::{clock, now_raw, Clock};
use crate::poll::hist::TickSum;
use crate::poll::slots::{EVENT_TERMINATE, FLAG_TIMED, FLAG_UNHOOKED, LONG_RING};
use crate::state::Shared;
use msg::{Msg, StallStart};

/// How often the event and long-poll rings are drained between ticks. Each wake-up of this
/// thread preempts a busy worker (docs/benchmarks.md, "Watchdog wake-ups"), so this is not
/// short: the watchdog asks for a drain as soon as an event ring is a quarter full
/// (`Msg::Drain`), which is what keeps a spawn storm from overflowing the rings, and a stall's end
/// triggers its own drain (`Msg::StallEnded`).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// A stall the watchdog saw end but whose exact duration never arrived is closed after this.
const END_GRACE: Duration = Duration::from_secs(1);
/// How long `refresh` waits for stalls that have just ended to be closed.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a stall seen only in the long-poll ring waits for the watchdog to claim it.
const UNSEEN_GRACE: Duration = Duration::from_millis(100);
/// Finalized stall keys remembered, to ignore late watchdog messages for them.
const RECENT_KEYS: usize = 4096;
/// Anatomies of long polls kept for a long-poll record not drained yet (`Msg::PollAnatomy`).
const ORPHAN_ANATOMY: usize = 64;

/// A sample's stack (lookup addresses) and what the thread was blocked in when it was taken.
type SampleKey = (Vec<u64>, Option<String>);

#[derive(Debug)]
struct StallRec {
    id: u64,
    start: StallStart,
    /// Samples by stack and by what the thread was blocked in (then the stack gets an off-CPU
    /// leaf, `Frame::off_cpu`).
    stacks: HashMap<SampleKey, u64>,
    samples: u64,
    lost: u64,
    /// Exact duration from the hook, in ticks.
    ticks: Option<u64>,
    /// Raw end of the poll, from the long-poll ring.
    end: Option<u64>,
    /// `ticks` came from the long-poll ring (the hook's own end), not from the detection-time
    /// fallback: only then is the poll added to the poll-time histograms (`LongPolls`).
    exact: bool,
    /// When the watchdog reported the poll's end.
    ended_at: Option<Instant>,
    /// The watchdog's upper bound of the poll's end (raw clock), for a poll whose exact end the
    /// hook did not record.
    watch_end: Option<u64>,
    /// What the watchdog measured for the anatomy, with its end.
    anatomy: Option<Box<crate::watchdog::anatomy::Raw>>,
    /// The watchdog saw the poll: it confirmed the stall or measured it (`Msg::PollAnatomy`).
    observed: bool,
    /// Set for a stall known only from the long-poll ring so far: the watchdog may still report
    /// it (its start message can trail the ring when the aggregator is busy), so it is closed
    /// only after `UNSEEN_GRACE` unless the watchdog claims it first.
    unseen_since: Option<Instant>,
    /// For an unhooked stall (`FLAG_UNHOOKED`): what a sample showed it runs. Until one does,
    /// the stall is not published (it may be a thread that left its runtime).
    origin: Option<crate::aggregator::attribution::Origin>,
    /// For an unhooked stall: the first sample that showed the thread no longer in it (raw
    /// clock), a closer upper bound of its end than the watchdog's.
    end_hint: Option<u64>,
    /// For an unhooked stall not yet confirmed: the last sample that showed user code, and the
    /// innermost user function in it. Two in a row in the same function confirm the stall.
    candidate: Option<(String, SampleKey)>,
    /// For an unhooked stall: when the latest run of samples outside any runtime began.
    outside: Option<u64>,
}

impl StallRec {
    /// A stall the watchdog has just reported, with nothing measured yet.
    fn new(id: u64, start: StallStart) -> StallRec {
        StallRec {
            id,
            start,
            stacks: HashMap::new(),
            samples: 0,
            lost: 0,
            ticks: None,
            end: None,
            exact: false,
            ended_at: None,
            watch_end: None,
            anatomy: None,
            observed: true,
            unseen_since: None,
            origin: None,
            end_hint: None,
            candidate: None,
            outside: None,
        }
    }
}

/// Corrections to the poll-time histograms from the stalls, which are known exactly: the hooks
/// time one poll in `timed_every` and count it `timed_every` times, so a location whose polls are
/// all long (one long poll per task) could go untimed for a long time and show no percentile at
/// all (P5 defect 9). Every stall whose end the hook read goes in once: an untimed one is added,
/// a timed one (already counted `timed_every` times) has the extra weight taken back. Polls
/// under the threshold stay an estimate from the timed ones; long polls are exact.
#[derive(Debug, Default)]
struct LongPolls {
    by_loc: HashMap<usize, Adj>,
    by_slot: HashMap<usize, Adj>,
}

/// Signed per-bucket changes to a [`TickSum`].
#[derive(Debug, Default)]
struct Adj {
    buckets: [i64; crate::poll::hist::BUCKETS],
    count: i64,
    sum: i64,
    max: u64,
}

impl LongPolls {
    fn add(&mut self, slot: usize, loc: usize, ticks: u64, timed: bool, timed_every: u32) {
        let delta = if timed { 1 - i64::from(timed_every.max(1)) } else { 1 };
        if delta == 0 {
            return;
        }
        for adj in [self.by_loc.entry(loc).or_default(), self.by_slot.entry(slot).or_default()] {
            adj.buckets[crate::poll::hist::bucket_of(ticks)] += delta;
            adj.count += delta;
            adj.sum = adj.sum.saturating_add(delta.saturating_mul(ticks.min(i64::MAX as u64) as i64));
            adj.max = adj.max.max(ticks);
        }
    }
}

impl Adj {
    fn apply(&self, t: &mut TickSum) {
        let add = |v: u64, d: i64| if d >= 0 { v.saturating_add(d as u64) } else { v.saturating_sub(d.unsigned_abs()) };
        for (b, d) in t.buckets.iter_mut().zip(self.buckets.iter()) {
            *b = add(*b, *d);
        }
        t.count = add(t.count, self.count);
        t.sum = add(t.sum, self.sum);
        t.max = t.max.max(self.max);
    }
}

#[derive(Debug, Default)]
struct LocAgg {
    spawned: u64,
    terminated: u64,
    poll: TickSum,
    sched: TickSum,
}

/// Live-task ages, from the spawn/terminate event rings.
#[derive(Debug, Default)]
struct Ages {
    tasks: IntMap<u64, (usize, u64)>,
    locs: IntMap<usize, LocAges>,
    orphans: IntMap<u64, u64>,
    untracked: u64,
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
    fn spawn(&mut self, task: u64, loc: usize, at: u64, cap: usize) {
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

    fn terminate(&mut self, task: u64) {
        match self.tasks.remove(&task) {
            Some((loc, _)) => self.untrack(loc),
            // Seen before its spawn (two rings drained out of order) or its spawn was dropped.
            None => {
                self.orphans.insert(task, self.passes);
            }
        }
    }

    fn end_pass(&mut self) {
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
    fn oldest(&mut self, loc: usize, exact_live: u64) -> Option<u64> {
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

struct Agg {
    shared: Arc<Shared>,
    clock: &'static Clock,
    started: Instant,
    started_raw: u64,
    seq: u64,
    names: HashMap<usize, String>,
    active: HashMap<(usize, u64), StallRec>,
    recent: VecDeque<((usize, u64), u64)>,
    recent_set: HashSet<(usize, u64)>,
    /// See `Msg::PollAnatomy`.
    orphan_anatomy: VecDeque<((usize, u64), Box<crate::watchdog::anatomy::Raw>)>,
    done: VecDeque<Stall>,
    interval_stalls: Vec<Stall>,
    next_stall_id: u64,
    stall_count: u64,
    stalled_ticks: u64,
    interval_stalled_ticks: u64,
    long_tail: Vec<u64>,
    long_overrun: u64,
    ages: Ages,
    leak_history: HashMap<usize, VecDeque<u64>>,
    leak_flags: HashSet<usize>,
    last_window: Instant,
    prev_locs: HashMap<String, (u64, u64, u64, wire::Histogram)>,
    prev_lag: wire::Histogram,
    prev_drops: wire::Drops,
    last_tick: Instant,
    /// Whether stacks are sampled (and so symbolized).
    symbolize: bool,
    runtime: crate::aggregator::runtime_metrics::Monitor,
    alerts: crate::aggregator::alerts::Checks,
    alert_history: crate::aggregator::alerts::History,
    long_polls: LongPolls,
    /// `refresh` callers waiting for stalls in progress to settle, with their deadline.
    pending: Vec<(SyncSender<()>, Instant)>,
    /// When the rings were last drained.
    last_drain: Instant,
}

pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<Msg>, handle: tokio::runtime::Handle) {
    let now = Instant::now();
    let mut agg = Agg {
        clock: clock(),
        started: now,
        started_raw: now_raw(),
        seq: 0,
        names: HashMap::new(),
        active: HashMap::new(),
        recent: VecDeque::new(),
        recent_set: HashSet::new(),
        orphan_anatomy: VecDeque::new(),
        done: VecDeque::new(),
        interval_stalls: Vec::new(),
        next_stall_id: 1,
        stall_count: 0,
        stalled_ticks: 0,
        interval_stalled_ticks: 0,
        long_tail: shared.slots.slots.iter().map(|s| s.long_head.load(Acquire)).collect(),
        long_overrun: 0,
        ages: Ages::default(),
        leak_history: HashMap::new(),
        leak_flags: HashSet::new(),
        last_window: now,
        prev_locs: HashMap::new(),
        prev_lag: wire::Histogram::default(),
        prev_drops: wire::Drops::default(),
        last_tick: now,
        symbolize: shared.signal.is_some(),
        runtime: crate::aggregator::runtime_metrics::Monitor::new(&handle),
        alerts: crate::aggregator::alerts::Checks::default(),
        alert_history: crate::aggregator::alerts::History::default(),
        long_polls: LongPolls::default(),
        pending: Vec::new(),
        last_drain: now,
        shared,
    };
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    if agg.symbolize {
        // Parse debug info now rather than while the first stall waits to be reported.
        crate::sampler::symbolize::warm_up();
    }
    let tick_every = agg.shared.config.aggregation_interval;
    let mut next_tick = now + tick_every;
    loop {
        let now = Instant::now();
        let next_drain = agg.last_drain + DRAIN_EVERY;
        let mut wake = next_tick.min(next_drain);
        if !agg.pending.is_empty() {
            wake = wake.min(now + Duration::from_millis(1));
        }
        let wait = wake.saturating_duration_since(now);
        let msg = rx.recv_timeout(wait);
        let stop = matches!(msg, Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Ok(m) = msg {
                agg.handle(m);
            }
            let now = Instant::now();
            if !agg.pending.is_empty() {
                agg.answer_refreshes(now);
            }
            if now >= agg.last_drain + DRAIN_EVERY {
                agg.drain();
            }
            if now >= next_tick {
                agg.tick();
                next_tick += tick_every;
                if next_tick < now {
                    next_tick = now + tick_every;
                }
            }
        }));
        if result.is_err() {
            agg.shared.panics.fetch_add(1, Relaxed);
        }
        if stop {
            break;
        }
    }
}

impl Agg {
    fn handle(&mut self, m: Msg) {
        match m {
            Msg::StallStarted(s) => {
                let key = (s.slot, s.seq);
                if self.recent_set.contains(&key) {
                    return;
                }
                if let Some(rec) = self.active.get_mut(&key) {
                    // Found in the long-poll ring first; now the watchdog owns its end.
                    rec.unseen_since = None;
                    rec.observed = true;
                    rec.start.tid = s.tid;
                    rec.start.detected = s.detected;
                    if rec.start.flags & FLAG_TIMED == 0 {
                        rec.start.start = s.start;
                        if let Some(end) = rec.end {
                            rec.ticks = Some(end.saturating_sub(s.start));
                        }
                    }
                    return;
                }
                let rec = StallRec::new(self.next_stall_id, s);
                self.next_stall_id += 1;
                // An unhooked stall is published once a sample confirms it (`unhooked_sample`).
                if s.flags & FLAG_UNHOOKED == 0 {
                    let stall = self.wire_stall(&rec, false);
                    self.shared.publisher.publish(&Update::StallStarted(stall));
                }
                self.active.insert(key, rec);
            }
            Msg::Sample { slot, seq, at, addrs, blocked } => {
                let cap = self.shared.config.max_samples_per_stall as u64;
                if self.active.get(&(slot, seq)).is_some_and(|r| r.start.flags & FLAG_UNHOOKED != 0) {
                    self.unhooked_sample((slot, seq), at, addrs, blocked);
                    return;
                }
                match self.active.get_mut(&(slot, seq)) {
                    Some(rec) if rec.samples < cap => {
                        rec.samples += 1;
                        *rec.stacks.entry((addrs, blocked)).or_insert(0) += 1;
                    }
                    Some(rec) => rec.lost += 1,
                    // A refuted unhooked stall's last samples (its keys are even, polls' odd):
                    // nothing was lost.
                    None if seq & 1 == 0 => {}
                    None => {
                        self.shared.samples_lost.fetch_add(1, Relaxed);
                    }
                }
            }
            Msg::StallEnded { slot, seq, anatomy, end } => {
                if let Some(rec) = self.active.get_mut(&(slot, seq)) {
                    if rec.start.flags & FLAG_UNHOOKED != 0 {
                        if rec.origin.is_none() {
                            // No sample showed user code under Tokio's poll: not a stall.
                            self.active.remove(&(slot, seq));
                            return;
                        }
                        let end = end.unwrap_or_else(now_raw).min(rec.end_hint.unwrap_or(u64::MAX));
                        rec.end = Some(end);
                        rec.ticks = Some(end.saturating_sub(rec.start.start));
                    }
                    rec.ended_at = Some(Instant::now());
                    rec.watch_end = end;
                    // An unhooked stall whose thread left its runtime before the watchdog saw the
                    // stall end (`end_hint`, from the samples): what the watchdog measured after
                    // that belongs to whatever the thread did next (seen: a `block_on` that
                    // returned and a join's futex wait reported as the stall's cause). No anatomy
                    // rather than another call's.
                    rec.anatomy = anatomy.filter(|raw| rec.end_hint.is_none_or(|h| raw.end.at <= h));
                }
                self.drain_long(slot);
                self.finish_ready();
            }
            Msg::PollAnatomy { slot, seq, anatomy } => match self.active.get_mut(&(slot, seq)) {
                Some(rec) => {
                    rec.anatomy.get_or_insert(anatomy);
                    rec.observed = true;
                }
                None if !self.recent_set.contains(&(slot, seq)) => {
                    // Its long-poll record is still in the ring: keep it for when it is drained
                    // (most such polls never crossed the threshold and are never asked for).
                    self.orphan_anatomy.push_back(((slot, seq), anatomy));
                    while self.orphan_anatomy.len() > ORPHAN_ANATOMY {
                        self.orphan_anatomy.pop_front();
                    }
                }
                None => {}
            },
            Msg::Refresh(reply) => {
                self.drain();
                self.pending.push((reply, Instant::now() + SETTLE));
                self.answer_refreshes(Instant::now());
            }
            Msg::TaskLocations(msg::LocationsRequest { ids, reply }) => {
                // Spawns still in the rings count too.
                self.drain();
                let mut out = msg::TaskLocations::default();
                let mut index: HashMap<usize, u32> = HashMap::new();
                for id in &ids {
                    let loc = self.ages.tasks.get(id).map(|(loc, _)| *loc).filter(|&loc| loc != 0);
                    let name = match loc {
                        None => None,
                        Some(loc) => Some(match index.get(&loc) {
                            Some(&i) => i,
                            None => {
                                let i = out.names.len() as u32;
                                out.names.push(self.location_name(loc));
                                index.insert(loc, i);
                                i
                            }
                        }),
                    };
                    out.of_task.push(name);
                }
                let _ = reply.try_send(out);
            }
            Msg::Drain => self.drain(),
            Msg::Stop => {}
        }
    }

    /// Answers `refresh` callers once no stall is caught between its end and its record (the
    /// watchdog notices a stall's end within a sample interval), or at their deadline.
    fn answer_refreshes(&mut self, now: Instant) {
        self.drain();
        let slots = &self.shared.slots.slots;
        // A stall whose poll has ended (its slot moved on) but that is not closed yet.
        let unsettled = self.active.values().any(|r| {
            if r.start.flags & FLAG_UNHOOKED != 0 {
                // A confirmed one that has not ended may be a `block_on` that just returned:
                // the next sample or scan tells (within a sample interval).
                return r.origin.is_some();
            }
            let moved_on = slots.get(r.start.slot).is_none_or(|s| s.poll.seq.load(Acquire) != r.start.seq);
            moved_on || r.unseen_since.is_some() || (r.ticks.is_some() != r.ended_at.is_some())
        });
        if unsettled && self.pending.iter().all(|(_, deadline)| now < *deadline) {
            return;
        }
        self.tick();
        for (reply, _) in self.pending.drain(..) {
            let _ = reply.try_send(());
        }
    }

    /// Drains the event and long-poll rings of every slot.
    ///
    /// Drains are `DRAIN_EVERY` apart, plus one whenever the watchdog sees a ring a quarter full
    /// (`Msg::Drain`). Planning drains from the rings' fill (as often as every 1 ms in a storm)
    /// was tried: it made the million-task spawn storm 3–5 % slower (two alternating runs, 15 and
    /// 31 pairs) and dropped about as many events (docs/benchmarks.md, "Watchdog wake-ups").
    fn drain(&mut self) {
        let cap = self.shared.config.max_tracked_tasks;
        let shared = self.shared.clone();
        let now = Instant::now();
        for slot in shared.slots.slots.iter() {
            let head = slot.ev_head.load(Acquire);
            let tail = slot.ev_tail.load(Relaxed);
            let mask = slot.events.len() as u64 - 1;
            let mut i = tail;
            while i != head {
                let e = &slot.events[(i & mask) as usize];
                let task = e.task.load(Relaxed);
                if task & EVENT_TERMINATE != 0 {
                    self.ages.terminate(task & !EVENT_TERMINATE);
                } else {
                    self.ages.spawn(task, e.loc.load(Relaxed), e.at.load(Relaxed), cap);
                }
                i = i.wrapping_add(1);
            }
            slot.ev_tail.store(head, Release);
        }
        self.ages.end_pass();
        for i in 0..shared.slots.slots.len() {
            self.drain_long(i);
        }
        self.finish_ready();
        self.last_drain = now;
    }

    fn drain_long(&mut self, i: usize) {
        let slot = &self.shared.slots.slots[i];
        let head = slot.long_head.load(Acquire);
        let mut tail = self.long_tail[i];
        if head.wrapping_sub(tail) > LONG_RING as u64 {
            self.long_overrun += head.wrapping_sub(tail) - LONG_RING as u64;
            tail = head - LONG_RING as u64;
        }
        let mut found = Vec::new();
        while tail != head {
            let e = &slot.long[(tail % LONG_RING as u64) as usize];
            let seq = e.seq.load(Acquire);
            let start = e.start.load(Relaxed);
            let ticks = e.ticks.load(Relaxed);
            let task = e.task.load(Relaxed);
            let loc = e.loc.load(Relaxed);
            let flags = e.flags.load(Relaxed);
            if seq != 0 && e.seq.load(Acquire) == seq {
                found.push((seq, start, ticks, task, loc, flags));
            }
            tail = tail.wrapping_add(1);
        }
        self.long_tail[i] = head;
        let tid = slot.tid.load(Relaxed);
        for (seq, start, ticks, task, loc, flags) in found {
            let key = (i, seq);
            if self.recent_set.contains(&key) {
                continue;
            }
            let timed = flags & FLAG_TIMED != 0;
            let end = start.saturating_add(ticks);
            match self.active.get_mut(&key) {
                // Timed: exact. Untimed: the hook's end is exact and the watchdog's start
                // estimate is better than the one the watchdog gave the hook.
                Some(rec) if timed => {
                    rec.start.start = start;
                    rec.ticks = Some(ticks);
                    rec.exact = true;
                }
                Some(rec) => {
                    rec.ticks = Some(end.saturating_sub(rec.start.start));
                    rec.exact = true;
                }
                None => {
                    // A stall the watchdog did not see past the threshold (no samples), or one
                    // whose watchdog messages are still queued.
                    let s = StallStart { slot: i, seq, start, task, loc, flags, tid, detected: start };
                    let anatomy = self
                        .orphan_anatomy
                        .iter()
                        .position(|(k, _)| *k == key)
                        .and_then(|p| self.orphan_anatomy.remove(p))
                        .map(|(_, a)| a);
                    let rec = StallRec {
                        ticks: Some(ticks),
                        end: Some(end),
                        exact: true,
                        observed: anatomy.is_some(),
                        anatomy,
                        unseen_since: Some(Instant::now()),
                        ..StallRec::new(self.next_stall_id, s)
                    };
                    self.next_stall_id += 1;
                    self.active.insert(key, rec);
                }
            }
        }
    }

    /// Closes every stall that has both ended (per the watchdog) and has its exact duration, or
    /// that ended long enough ago that its duration will not come.
    fn finish_ready(&mut self) {
        let ready: Vec<(usize, u64)> = self
            .active
            .iter()
            .filter(|(_, r)| {
                r.ended_at.is_some_and(|t| r.ticks.is_some() || t.elapsed() >= END_GRACE)
                    || r.unseen_since.is_some_and(|t| t.elapsed() >= UNSEEN_GRACE)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in ready {
            let Some(mut rec) = self.active.remove(&key) else {
                continue;
            };
            // A stall read only from the long-poll ring is reported too, timed or not. An untimed
            // one got there because the watchdog marked it (`PollState::watched`) with its own
            // estimate of that very poll's start, the one a confirmed stall would carry; what is
            // missing is the watchdog's confirmation, which a late wake-up at the threshold
            // crossing can miss (such records used to be discarded: the likely way a 60 ms stall
            // once vanished from a CI run of `untimed_stall_starts_are_bounded_by_the_thread_anchor`).
            if rec.ticks.is_none() {
                // No exact end: the poll ended before it saw the watchdog's mark (a race with a
                // late watchdog), or its record was overwritten in the ring. The watchdog's end
                // bound keeps the length from coming out short; the detection time, the last
                // resort, can.
                match rec.watch_end {
                    Some(end) => rec.ticks = Some(end.saturating_sub(rec.start.start)),
                    None => {
                        rec.ticks = Some(rec.start.detected.saturating_sub(rec.start.start));
                        self.long_overrun += 1;
                    }
                }
            }
            let stall = self.wire_stall(&rec, true);
            let ticks = rec.ticks.unwrap_or(0);
            if rec.exact {
                let timed = rec.start.flags & FLAG_TIMED != 0;
                self.long_polls.add(rec.start.slot, rec.start.loc, ticks, timed, self.shared.timed_every);
            }
            self.stall_count += 1;
            self.stalled_ticks += ticks;
            self.interval_stalled_ticks += ticks;
            self.recent.push_back((key, rec.id));
            self.recent_set.insert(key);
            while self.recent.len() > RECENT_KEYS {
                if let Some((k, _)) = self.recent.pop_front() {
                    self.recent_set.remove(&k);
                }
            }
            self.interval_stalls.push(stall.clone());
            self.done.push_back(stall.clone());
            while self.done.len() > self.shared.config.max_stalls {
                self.done.pop_front();
            }
            self.shared.publisher.publish(&Update::StallEnded(stall));
        }
    }

    /// A sample of an unhooked stall: the first that shows user code under Tokio's `block_on`
    /// confirms and publishes it; one that shows the thread outside any runtime refutes it (or,
    /// once confirmed, ends it), and the watchdog stops sampling it (`Slot::refuted`). Samples of
    /// Tokio's own code (parking, bookkeeping) are not the stall's and are left out.
    fn unhooked_sample(&mut self, key: (usize, u64), at: u64, addrs: Vec<u64>, blocked: Option<String>) {
        use crate::aggregator::attribution::{classify, Verdict};
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        let frames = {
            crate::sampler::symbolize::prepare(&addrs);
            crate::sampler::symbolize::frames(&addrs)
        };
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        let frames: Vec<wire::Frame> = Vec::new();
        let verdict = classify(&frames);
        let top_user = frames.iter().find(|f| f.kind == wire::FrameKind::User).map(|f| f.function.clone());
        let cap = self.shared.config.max_samples_per_stall as u64;
        let refute = |shared: &Shared| {
            if let Some(slot) = shared.slots.slots.get(key.0) {
                slot.refuted.store(key.1, Release);
            }
        };
        let Some(rec) = self.active.get_mut(&key) else { return };
        match verdict {
            Verdict::Polled(origin) => {
                if rec.end_hint.is_some() {
                    return;
                }
                rec.outside = None;
                if rec.origin.is_none() {
                    // Confirmed by two samples in a row, a sample interval apart, in the same
                    // user function: one sample could land in any of a `LocalSet`'s batch of
                    // short polls, which the watchdog cannot tell apart (`watchdog::Unhooked`),
                    // or in a moment of a loop turn the watchdog missed.
                    let top = top_user.unwrap_or_default();
                    match rec.candidate.take() {
                        Some((f, first)) if f == top => {
                            rec.samples += 1;
                            *rec.stacks.entry(first).or_insert(0) += 1;
                        }
                        _ => {
                            rec.candidate = Some((top, (addrs, blocked)));
                            return;
                        }
                    }
                }
                if rec.samples < cap {
                    rec.samples += 1;
                    *rec.stacks.entry((addrs, blocked)).or_insert(0) += 1;
                } else {
                    rec.lost += 1;
                }
                if rec.origin.is_none() {
                    rec.origin = Some(origin);
                    let rec = self.active.remove(&key);
                    if let Some(rec) = rec {
                        let stall = self.wire_stall(&rec, false);
                        self.active.insert(key, rec);
                        self.shared.publisher.publish(&Update::StallStarted(stall));
                    }
                }
            }
            // Two in a row: one stack that unwound wrongly (skipping frames to the thread's
            // start) must not end or refute a stall.
            Verdict::Outside if rec.outside.is_none() => rec.outside = Some(at),
            Verdict::Outside if rec.origin.is_none() => {
                self.active.remove(&key);
                refute(&self.shared);
            }
            Verdict::Outside => {
                let first = rec.outside.unwrap_or(at);
                rec.end_hint = Some(rec.end_hint.unwrap_or(first).min(first));
                refute(&self.shared);
            }
            Verdict::Runtime => rec.candidate = None,
        }
    }

    fn location_name(&mut self, key: usize) -> String {
        if key == 0 {
            return "(unknown)".to_string();
        }
        self.names
            .entry(key)
            .or_insert_with(|| {
                // SAFETY: keys are addresses of `&'static Location<'static>` stored by the hooks.
                let loc: &'static Location<'static> = unsafe { &*(key as *const Location<'static>) };
                format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
            })
            .clone()
    }

    fn wire_stall(&mut self, rec: &StallRec, ended: bool) -> Stall {
        let s = rec.start;
        let now = now_raw();
        let elapsed_ticks = rec.ticks.unwrap_or_else(|| now.saturating_sub(s.start));
        let mut stacks: Vec<wire::StackCount> = Vec::new();
        let mut in_bip = false;
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        if self.symbolize && !rec.stacks.is_empty() {
            use crate::sampler::symbolize;
            let all: Vec<u64> = rec.stacks.keys().flat_map(|(a, _)| a).copied().collect();
            symbolize::prepare(&all);
            for ((addrs, blocked), count) in &rec.stacks {
                let mut frames = symbolize::frames(addrs);
                in_bip |= frames.iter().any(|f| f.function.contains("block_in_place"));
                symbolize::trim(&mut frames);
                if let Some(b) = blocked {
                    frames.insert(0, wire::Frame::off_cpu(b));
                }
                match stacks.iter_mut().find(|x| x.frames == frames) {
                    Some(x) => x.count += count,
                    None => stacks.push(wire::StackCount { frames, count: *count }),
                }
            }
        }
        stacks.sort_by_key(|s| std::cmp::Reverse(s.count));
        let clock = self.clock;
        let anatomy = match (&rec.anatomy, ended) {
            (Some(raw), true) => {
                let threshold_ns = self.shared.config.stall_threshold.as_nanos() as u64;
                raw.anatomy(clock.ticks_to_ns(elapsed_ticks), threshold_ns, |t| clock.ticks_to_ns(t))
            }
            _ => None,
        };
        Stall {
            id: rec.id,
            start_unix_ms: self.clock.raw_to_unix_ns(s.start) / 1_000_000,
            duration_ns: ended.then(|| self.clock.ticks_to_ns(elapsed_ticks)),
            elapsed_ns: self.clock.ticks_to_ns(elapsed_ticks),
            worker: s.slot as u32,
            tid: s.tid,
            // An `instrument`ed future has task 0 (Tokio's task ids start at 1); so has an
            // unhooked stall, which is named by what it runs.
            task: (s.task != 0).then_some(s.task),
            spawned_at: match rec.origin {
                Some(origin) => origin.spawned_at().to_string(),
                None => self.location_name(s.loc),
            },
            in_block_in_place: in_bip,
            stacks,
            samples_lost: rec.lost,
            anatomy,
            // Only a finished stall can tell: a running one may still be confirmed.
            unobserved: ended && !rec.observed && rec.samples == 0,
        }
    }

    fn tick(&mut self) {
        let shared = self.shared.clone();
        let now = Instant::now();
        let now_raw = now_raw();
        let clk = self.clock;
        self.seq += 1;

        // Sum per-thread tables into per-location and per-worker figures.
        let mut locs: IntMap<usize, LocAgg> = IntMap::default();
        let mut overflow = LocAgg::default();
        let mut workers = Vec::new();
        for (wi, slot) in shared.slots.slots.iter().chain(std::iter::once(&shared.slots.shared)).enumerate() {
            let mut wsum = TickSum::default();
            let last = slot.locs.len() - 1;
            for i in slot.used_entries() {
                let e = &slot.locs[i];
                let key = e.key.load(Acquire);
                if key == 0 && i != last {
                    continue;
                }
                let agg = if i == last { &mut overflow } else { locs.entry(key).or_default() };
                agg.spawned += e.spawned.load(Relaxed);
                agg.terminated += e.terminated.load(Relaxed);
                let mut p = TickSum::default();
                p.add(&e.poll);
                wsum.merge(&p);
                agg.poll.merge(&p);
                agg.sched.add(&e.sched);
            }
            if let Some(adj) = self.long_polls.by_slot.get(&wi) {
                adj.apply(&mut wsum);
            }
            let tid = slot.tid.load(Relaxed);
            // `seq` advances by two per poll.
            let polls = slot.poll.seq.load(Relaxed) / 2;
            if !slot.shared && (polls > 0 || tid != 0) {
                workers.push(WorkerStats {
                    index: wi as u32,
                    tid,
                    polls,
                    busy_ns: clk.ticks_to_ns(shared.slots.busy_ticks.get(wi).map_or(wsum.sum, |b| b.load(Relaxed))),
                    poll_time: wsum.to_wire(clk),
                });
            }
        }

        // Leak rule windows.
        let window_due = now.duration_since(self.last_window) >= shared.config.leak_window;
        if window_due {
            self.last_window = now;
        }
        let windows = shared.config.leak_windows;
        let mut locations = Vec::with_capacity(locs.len() + 1);
        let mut keys: Vec<usize> = locs.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            if let (Some(adj), Some(a)) = (self.long_polls.by_loc.get(&key), locs.get_mut(&key)) {
                adj.apply(&mut a.poll);
            }
            let a = &locs[&key];
            // Tokio calls the terminate hook for spawn_blocking tasks but not the spawn hook: a
            // location with completions and no spawns is a blocking-task site. Its tasks are
            // counted when they finish; none is ever seen live.
            let blocking = a.spawned == 0 && a.terminated > 0;
            let spawned = if blocking { a.terminated } else { a.spawned };
            let live = spawned.saturating_sub(a.terminated);
            let oldest = self.ages.oldest(key, live);
            let oldest_live_ns = oldest.filter(|_| live > 0).map(|at| clk.ticks_to_ns(now_raw.saturating_sub(at)));
            if window_due {
                let h = self.leak_history.entry(key).or_default();
                h.push_back(live);
                while h.len() > windows + 1 {
                    h.pop_front();
                }
                let suspect = crate::aggregator::leak::is_suspect(
                    h.make_contiguous(),
                    windows,
                    shared.config.leak_min_growth,
                    oldest_live_ns.map(Duration::from_nanos),
                    shared.config.leak_window * windows as u32,
                );
                if suspect {
                    self.leak_flags.insert(key);
                } else {
                    self.leak_flags.remove(&key);
                }
            }
            let name = self.location_name(key);
            locations.push(LocationStats {
                internal: name.starts_with(crate::poll::lag::HEARTBEAT_FILE),
                location: name,
                spawned,
                completed: a.terminated,
                live,
                blocking,
                oldest_live_ns,
                polls: a.poll.count,
                poll_time: a.poll.to_wire(clk),
                schedule_latency: shared.config.schedule_latency.then(|| a.sched.to_wire(clk)),
                leak_suspect: self.leak_flags.contains(&key),
            });
        }
        if overflow.spawned > 0 || overflow.poll.count > 0 {
            locations.push(LocationStats {
                location: format!("(other locations: more than {} per thread)", shared.config.max_locations),
                spawned: overflow.spawned,
                completed: overflow.terminated,
                live: overflow.spawned.saturating_sub(overflow.terminated),
                oldest_live_ns: None,
                polls: overflow.poll.count,
                poll_time: overflow.poll.to_wire(clk),
                schedule_latency: None,
                leak_suspect: false,
                internal: false,
                blocking: false,
            });
        }

        // Active stalls, as they are now.
        let active_keys: Vec<(usize, u64)> = self.active.keys().copied().collect();
        let mut stalls: Vec<Stall> = self.done.iter().cloned().collect();
        for k in active_keys {
            if let Some(rec) = self.active.remove(&k) {
                // An unhooked stall no sample has confirmed yet is not shown.
                let unconfirmed = rec.start.flags & FLAG_UNHOOKED != 0 && rec.origin.is_none();
                if rec.ended_at.is_none() && rec.unseen_since.is_none() && !unconfirmed {
                    stalls.push(self.wire_stall(&rec, false));
                }
                self.active.insert(k, rec);
            }
        }

        let drops = wire::Drops {
            samples: shared.samples_lost.load(Relaxed),
            task_events: shared.slots.slots.iter().map(|s| s.ev_dropped.load(Relaxed)).sum::<u64>()
                + shared.slots.shared.ev_dropped.load(Relaxed),
            threads_without_slot: shared.slots.no_slot.load(Relaxed),
            location_overflow: shared.slots.slots.iter().map(|s| s.loc_overflow.load(Relaxed)).sum::<u64>()
                + shared.slots.shared.loc_overflow.load(Relaxed),
            stalls: shared.stall_msgs_dropped.load(Relaxed) + self.long_overrun,
            untracked_tasks: self.ages.untracked,
            probe_panics: shared.panics.load(Relaxed),
            subscriber_updates: shared.publisher.subscriber_drops.load(Relaxed),
        };
        let lag = wire::LagStats {
            period_ns: shared.config.heartbeat_interval.as_nanos() as u64,
            lag: shared.lag.to_wire(),
            last_ns: shared.lag_last_ns.load(Relaxed),
        };
        let mut snapshot = Snapshot {
            schema: wire::SCHEMA_VERSION,
            seq: self.seq,
            at_unix_ms: clk.raw_to_unix_ns(now_raw) / 1_000_000,
            uptime_ns: clk.ticks_to_ns(now_raw.saturating_sub(self.started_raw)),
            process: process_info(&shared),
            workers,
            locations,
            stalls,
            stall_count: self.stall_count,
            stalled_ns: clk.ticks_to_ns(self.stalled_ticks),
            lag,
            runtime: self.runtime.sample(shared.config.aggregation_interval / 2),
            pools: crate::aggregator::pool::collect(),
            alerts: Vec::new(),
            drops,
            alert_history: Vec::new(),
            alert_history_evicted: 0,
        };
        let interval = self.interval(&snapshot, now);
        let raised = self.alerts.evaluate(&snapshot, &interval, &shared.config);
        self.alert_history.update(snapshot.at_unix_ms, &raised);
        (snapshot.alert_history, snapshot.alert_history_evicted) = self.alert_history.records();
        snapshot.alerts = raised.into_iter().map(|r| r.alert).collect();
        let snapshot = Arc::new(snapshot);
        shared.publisher.set_latest(snapshot.clone());
        shared
            .publisher
            .publish(&Update::Tick { snapshot: Box::new((*snapshot).clone()), interval: Box::new(interval) });
        let _ = self.started;
    }

    fn interval(&mut self, s: &Snapshot, now: Instant) -> Interval {
        let mut locations = Vec::new();
        let mut prev = std::mem::take(&mut self.prev_locs);
        for l in &s.locations {
            let (ps, pc, pp, ph) = prev.remove(&l.location).unwrap_or_default();
            if l.spawned != ps || l.completed != pc || l.polls != pp {
                locations.push(LocationDelta {
                    location: l.location.clone(),
                    spawned: l.spawned.saturating_sub(ps),
                    completed: l.completed.saturating_sub(pc),
                    polls: l.polls.saturating_sub(pp),
                    poll_time: l.poll_time.delta(&ph),
                });
            }
            self.prev_locs.insert(l.location.clone(), (l.spawned, l.completed, l.polls, l.poll_time.clone()));
        }
        let d = &s.drops;
        let p = &self.prev_drops;
        let drops = wire::Drops {
            samples: d.samples.saturating_sub(p.samples),
            task_events: d.task_events.saturating_sub(p.task_events),
            threads_without_slot: d.threads_without_slot.saturating_sub(p.threads_without_slot),
            location_overflow: d.location_overflow.saturating_sub(p.location_overflow),
            stalls: d.stalls.saturating_sub(p.stalls),
            untracked_tasks: d.untracked_tasks.saturating_sub(p.untracked_tasks),
            probe_panics: d.probe_panics.saturating_sub(p.probe_panics),
            subscriber_updates: d.subscriber_updates.saturating_sub(p.subscriber_updates),
        };
        self.prev_drops = s.drops.clone();
        let mut lag = s.lag.lag.delta(&self.prev_lag);
        self.prev_lag = s.lag.lag.clone();
        // The interval's own maximum (a delta keeps the cumulative one), so that a late beat
        // raises the lag alert whether or not it was the last beat.
        let interval_max = self.shared.lag_interval_max_ns.swap(0, Relaxed);
        lag.max_ns = if lag.count > 0 { interval_max } else { 0 };
        let interval = Interval {
            seq: s.seq,
            duration_ns: now.duration_since(self.last_tick).as_nanos() as u64,
            locations,
            stalls: std::mem::take(&mut self.interval_stalls),
            stalled_ns: self.clock.ticks_to_ns(std::mem::take(&mut self.interval_stalled_ticks)),
            lag,
            drops,
        };
        self.last_tick = now;
        interval
    }
}

pub(crate) fn process_info(shared: &Shared) -> wire::ProcessInfo {
    let mut missing = Vec::new();
    if !cfg!(tokio_unstable) {
        missing.push(
            "stalls, stack samples, poll times and per-location task counts: build with RUSTFLAGS=\"--cfg tokio_unstable\" (Tokio's task hooks)"
                .to_string(),
        );
        missing
            .push("blocking-pool gauges, steals and local queue depths: build with --cfg tokio_unstable".to_string());
    } else if !shared.installed.load(Relaxed) {
        missing.push("task hooks: Probe::install was not called on the runtime builder".to_string());
    }
    if let Some(p) = &shared.sampling_problem {
        missing.push(format!("native stacks: {p}"));
    }
    if !shared.lag_running.load(Relaxed) {
        missing.push("loop lag: the runtime has no timer (use enable_time or enable_all)".to_string());
    }
    missing.extend(shared.problems.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
    if shared.config.schedule_latency && !cfg!(all(tokio_unstable, feature = "schedule-latency")) {
        missing.push("schedule latency: needs the probe's `schedule-latency` feature and tokio_unstable".to_string());
    }
    wire::ProcessInfo {
        pid: std::process::id(),
        name: shared.config.name.clone().unwrap_or_else(process_name),
        probe_version: env!("CARGO_PKG_VERSION").to_string(),
        tokio_unstable: cfg!(tokio_unstable),
        missing,
        stall_threshold_ns: shared.config.stall_threshold.as_nanos() as u64,
        sample_interval_ns: shared.config.sample_interval.as_nanos() as u64,
        stack_sampling: shared.signal.is_some(),
    }
}

/// The executable's file name (`/proc/self/comm` is cut to 15 bytes).
pub(crate) fn process_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| std::fs::read_to_string("/proc/self/comm").map(|s| s.trim().to_string()).ok())
        .unwrap_or_default()
}
