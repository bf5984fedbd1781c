//! The aggregator thread: the single owner of every map. It drains the slots' rings into the
//! stall join ([`join`]) and the task ages ([`ages`]), asks the symbolizer for each sample's new
//! addresses as it arrives, and on each tick sums per-thread counters into per-location figures
//! ([`snapshot`]), applies the leak rule, reads runtime metrics and pools, evaluates alerts and
//! publishes one snapshot. Stall starts and ends are published the moment they arrive.

pub(crate) mod ages;
pub(crate) mod alerts;
pub(crate) mod attribution;
pub(crate) mod convert;
pub(crate) mod intmap;
pub(crate) mod join;
pub(crate) mod leak;
pub(crate) mod msg;
pub mod pool;
pub(crate) mod runtime_metrics;
pub(crate) mod snapshot;
pub(crate) mod young;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::*;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_wire as wire;
use stallscope_wire::{Interval, LocationDelta, LocationStats, Snapshot, Stall, Update};

use crate::aggregator::intmap::IntMap;
use crate::poll::clock::{clock, now_raw, Clock};
use crate::poll::slots::{FLAG_TIMED, LONG_RING};
use crate::state::Shared;
use crate::threads::Role;
use ages::{Ages, Batch};
use convert::{Converter, Names};
use join::{Closed, Join, Key, LongPoll, Unhooked};
use msg::Msg;
use snapshot::{drops, sum_slots, LocAgg, LongPolls, Sums};

/// How often the event and long-poll rings are drained between ticks. Each wake-up of this
/// thread preempts a busy worker (docs/benchmarks.md, "Watchdog wake-ups"), so this is not
/// short: the watchdog asks for a drain as soon as an event ring is a quarter full
/// (`Msg::Drain`), which is what keeps a spawn storm from overflowing the rings, and a stall's end
/// triggers its own drain (`Msg::StallEnded`).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Time between ticks while the service is idle: every thread the watchdog watches is parked
/// and it sleeps until one unparks (`state::WatchdogSleep`), and the last snapshot showed nothing
/// else going on (`Agg::tick`). Each tick builds and publishes a
/// snapshot; ten a second were most of what an idle service still paid for the probe once the
/// watchdog slept (docs/benchmarks.md, "Idle cost"). A client still gets a fresh snapshot every
/// second (the UI's refresh), and a stall, a drain or a refresh request brings the configured
/// period back at once; so does a worker's wake-up, through the watchdog
/// (`WatchdogSleep::aggregator_idle`), so spawns are drained as promptly as before.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How long `refresh` waits for stalls that have just ended to be closed.
const SETTLE: Duration = Duration::from_millis(500);
/// How long `refresh` waits for a stall still running when it was asked for to end. A task
/// whose poll stalled completes, wakes its `JoinHandle` and only then returns to Tokio, which
/// calls the after-poll hook: a caller that awaited that task and then called `refresh` raced the
/// hook, and got the stall as still running (seen in 1 run in 2 when the stall had no samples).
/// A stall that really goes on costs the caller this much more.
const RUNNING_GRACE: Duration = Duration::from_millis(50);

struct Agg {
    shared: Arc<Shared>,
    clock: &'static Clock,
    started: Instant,
    started_raw: u64,
    seq: u64,
    /// The stalls in progress, joined from the watchdog and the long-poll rings.
    join: Join,
    /// Stall records to wire stalls.
    conv: Converter,
    done: VecDeque<Stall>,
    interval_stalls: Vec<Stall>,
    stall_count: u64,
    stalled_ticks: u64,
    interval_stalled_ticks: u64,
    long_tail: Vec<u64>,
    long_overrun: u64,
    ages: Ages,
    /// Spawn and terminate events, paired before they reach `ages`; the young live tasks are
    /// handed to `ages` before anything reads it (`Batch::promote`).
    batch: Batch,
    /// The raw clock as the previous drain pass began: no spawn found by the next pass is older
    /// (`hooks::spawn_time`); 0 before the first pass.
    drain_floor: u64,
    leak_history: HashMap<usize, VecDeque<u64>>,
    leak_flags: HashSet<usize>,
    last_window: Instant,
    prev_locs: HashMap<String, (u64, u64, u64, wire::Histogram)>,
    prev_lag: wire::Histogram,
    prev_drops: wire::Drops,
    last_tick: Instant,
    runtime: crate::aggregator::runtime_metrics::Monitor,
    alerts: crate::aggregator::alerts::Checks,
    alert_history: crate::aggregator::alerts::History,
    long_polls: LongPolls,
    /// Refreshes waiting to be answered, with when each was asked.
    pending: Vec<(SyncSender<()>, Instant)>,
    /// When the rings were last drained.
    last_drain: Instant,
}

/// The aggregator thread's body: [`run`], and when it dies of a panic, one last snapshot (the
/// latest, with the death in `process.missing`) so every reader and client learns why nothing
/// new comes. `refresh` then times out and returns that snapshot.
pub(crate) fn run_guarded(shared: Arc<Shared>, rx: Receiver<Msg>, handle: tokio::runtime::Handle) {
    let s = shared.clone();
    if s.threads.run(Role::Aggregator, &s.panics, || run(shared, rx, handle)).is_some() {
        return;
    }
    // Closing the channel makes the watchdog's sends fail fast instead of filling a queue
    // nobody reads, and `refresh` return at once.
    *s.control.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let Some(last) = s.publisher.latest() else { return };
    let mut last = (*last).clone();
    last.process = snapshot::process_info(&s);
    last.drops.probe_panics = s.panics.load(Relaxed);
    s.publisher.set_latest(Arc::new(last));
    // The same full tick a new client starts with, built once by the publisher.
    if let Some(tick) = s.publisher.first_update() {
        s.publisher.publish(Arc::unwrap_or_clone(tick));
    }
}

fn run(shared: Arc<Shared>, rx: Receiver<Msg>, handle: tokio::runtime::Handle) {
    let now = Instant::now();
    let mut agg = Agg {
        clock: clock(),
        started: now,
        started_raw: now_raw(),
        seq: 0,
        join: Join::new(shared.config.max_samples_per_stall),
        conv: Converter {
            clock: clock(),
            symbolize: shared.signal.is_some(),
            threshold_ns: shared.config.stall_threshold.as_nanos() as u64,
            names: Names::default(),
            stacks: Default::default(),
        },
        done: VecDeque::new(),
        interval_stalls: Vec::new(),
        stall_count: 0,
        stalled_ticks: 0,
        interval_stalled_ticks: 0,
        long_tail: shared.slots.slots.iter().map(|s| s.long_head.load(Acquire)).collect(),
        long_overrun: 0,
        ages: Ages::default(),
        batch: Batch::default(),
        drain_floor: 0,
        leak_history: HashMap::new(),
        leak_flags: HashSet::new(),
        last_window: now,
        prev_locs: HashMap::new(),
        prev_lag: wire::Histogram::default(),
        prev_drops: wire::Drops::default(),
        last_tick: now,
        runtime: crate::aggregator::runtime_metrics::Monitor::new(&handle),
        alerts: crate::aggregator::alerts::Checks::default(),
        alert_history: crate::aggregator::alerts::History::default(),
        long_polls: LongPolls::default(),
        pending: Vec::new(),
        last_drain: now,
        shared,
    };
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    if agg.conv.symbolize {
        // Parse debug info now rather than while the first stall waits to be reported.
        crate::sampler::symbolize::warm_up();
    }
    let tick_every = agg.shared.config.aggregation_interval;
    let mut next_tick = now + tick_every;
    // Whether the last tick found the watchdog asleep until an unpark (`IDLE_TICK`).
    let mut idle = false;
    loop {
        agg.shared.threads.injection_point(Role::Aggregator);
        let now = Instant::now();
        let next_drain = agg.last_drain + DRAIN_EVERY;
        // While idle nothing fills the rings between ticks: the tick's drain is enough.
        let mut wake = if idle { next_tick } else { next_tick.min(next_drain) };
        if !agg.pending.is_empty() {
            wake = wake.min(now + Duration::from_millis(1));
        }
        let wait = wake.saturating_duration_since(now);
        let msg = rx.recv_timeout(wait);
        let stop = matches!(msg, Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Ok(m) = msg {
                if idle && !matches!(m, Msg::Stop) {
                    // Work arrived (a stall, a drain, a refresh; the watchdog sends a drain when
                    // a worker wakes): back to the configured period.
                    idle = false;
                    agg.shared.sleep.aggregator_idle.store(false, Release);
                    next_tick = next_tick.min(Instant::now() + tick_every);
                }
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
                let quiet = agg.tick();
                next_tick += tick_every;
                if next_tick < now {
                    next_tick = now + tick_every;
                }
                idle = quiet && agg.shared.sleep.is_asleep();
                agg.shared.sleep.aggregator_idle.store(idle, Release);
                if idle {
                    next_tick = now + IDLE_TICK.max(tick_every);
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
                // An unhooked stall is published once a sample confirms it (`unhooked_sample`).
                if let Some(rec) = self.join.started(s) {
                    let stall = self.conv.wire_stall(rec, false);
                    self.shared.publisher.publish(Update::StallStarted(stall));
                }
            }
            Msg::Sample { slot, seq, at, addrs, blocked } => {
                if self.join.is_unhooked((slot, seq)) {
                    self.unhooked_sample((slot, seq), at, addrs, blocked);
                } else if !self.join.sample((slot, seq), addrs, blocked) {
                    self.shared.samples_lost.fetch_add(1, Relaxed);
                }
            }
            Msg::StallEnded { slot, seq, anatomy, end } => {
                self.join.ended((slot, seq), anatomy, end, now_raw(), Instant::now());
                self.drain_long(slot);
                self.finish_ready();
            }
            Msg::PollAnatomy { slot, seq, anatomy } => self.join.poll_anatomy((slot, seq), anatomy),
            Msg::Refresh(reply) => {
                self.drain();
                self.pending.push((reply, Instant::now()));
                self.answer_refreshes(Instant::now());
            }
            Msg::TaskLocations(msg::LocationsRequest { ids, reply }) => {
                // Spawns still in the rings count too.
                self.drain();
                self.batch.promote(&mut self.ages, self.shared.config.max_tracked_tasks);
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
                                out.names.push(self.conv.names.get(loc));
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
        let seq_now = |slot: usize| slots.get(slot).map(|s| s.poll.seq.load(Acquire));
        let wait = if self.join.unsettled(seq_now) {
            SETTLE
        } else if self.join.still_running(seq_now) {
            RUNNING_GRACE
        } else {
            Duration::ZERO
        };
        if self.pending.iter().all(|(_, asked)| now < *asked + wait) {
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
        // Read before any ring's head: every event the next pass finds was written after it.
        let floor = now_raw();
        self.batch.begin_pass(self.drain_floor);
        self.drain_shared_events();
        for slot in shared.slots.slots.iter() {
            let head = slot.ev_head.load(Acquire);
            let tail = slot.ev_tail.load(Relaxed);
            let mask = slot.events.len() as u64 - 1;
            let mut i = tail;
            while i != head {
                let e = &slot.events[(i & mask) as usize];
                self.batch.event(e.loc.load(Relaxed), e.task.load(Relaxed), e.at.load(Relaxed));
                i = i.wrapping_add(1);
            }
            slot.ev_tail.store(head, Release);
        }
        self.batch.end_pass(&mut self.ages, cap);
        self.drain_floor = floor;
        for i in 0..shared.slots.slots.len() {
            self.drain_long(i);
        }
        self.finish_ready();
        self.last_drain = now;
    }

    /// Feeds the shared event ring (spawns and terminations of threads without a slot,
    /// `poll/event_ring.rs`) into this drain pass, through `Batch::event` like the slots' rings.
    /// Read first: such a thread's spawns end on a worker, so their ends are in a slot's ring.
    fn drain_shared_events(&mut self) {
        let shared = self.shared.clone();
        let Some(ring) = shared.slots.shared.ring.as_ref() else { return };
        let batch = &mut self.batch;
        ring.drain(ring.capacity(), |loc, task, at| batch.event(loc, task, at));
    }

    fn drain_long(&mut self, i: usize) {
        // Before the ring: every start counted here was sent before any record read below
        // (`Join::starts_sent`).
        self.join.starts_sent = self.shared.stall_starts_sent.load(SeqCst);
        let slot = &self.shared.slots.slots[i];
        let head = slot.long_head.load(Acquire);
        let mut tail = self.long_tail[i];
        if head.wrapping_sub(tail) > LONG_RING as u64 {
            self.long_overrun += head.wrapping_sub(tail) - LONG_RING as u64;
            tail = head - LONG_RING as u64;
        }
        let mut found = Vec::new();
        while tail != head {
            match slot.long[(tail % LONG_RING as u64) as usize].read() {
                Some((seq, start, ticks, task, loc, flags)) => {
                    found.push(LongPoll { seq, start, ticks, task, loc, flags })
                }
                // Being rewritten: the owner has lapped us, and this record is lost.
                None => self.long_overrun += 1,
            }
            tail = tail.wrapping_add(1);
        }
        self.long_tail[i] = head;
        let tid = slot.tid.load(Relaxed);
        let now = Instant::now();
        for p in found {
            self.join.long_poll(i, tid, p, now);
        }
    }

    /// Closes the stalls the join has ready: counts them, corrects the poll-time histograms
    /// with their exact durations, and publishes them.
    fn finish_ready(&mut self) {
        self.join.starts_lost = self.shared.stall_starts_lost.load(SeqCst);
        for Closed { rec, overrun } in self.join.finish_ready(Instant::now()) {
            if overrun {
                self.long_overrun += 1;
            }
            self.conv.settle(&rec);
            let stall = self.conv.wire_stall(&rec, true);
            let ticks = rec.ticks.unwrap_or(0);
            if rec.exact {
                let timed = rec.start.flags & FLAG_TIMED != 0;
                self.long_polls.add(rec.start.slot, rec.start.loc, ticks, timed, self.shared.timed_every);
            }
            self.stall_count += 1;
            self.stalled_ticks += ticks;
            self.interval_stalled_ticks += ticks;
            self.interval_stalls.push(stall.clone());
            self.done.push_back(stall.clone());
            while self.done.len() > self.shared.config.max_stalls {
                self.done.pop_front();
            }
            self.shared.publisher.publish(Update::StallEnded(stall));
        }
    }

    /// A sample of an unhooked stall: classified by its frames, then joined
    /// ([`Join::unhooked_sample`]); a confirmed stall is published, a refuted one is no longer
    /// sampled by the watchdog (`Slot::refuted`).
    fn unhooked_sample(&mut self, key: Key, at: u64, addrs: Vec<u64>, blocked: Option<String>) {
        use crate::aggregator::attribution::classify;
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        let frames = {
            // Classifying needs this sample's frames now.
            use crate::sampler::symbolize;
            symbolize::wait_for(&addrs, symbolize::WAIT);
            symbolize::frames(&addrs)
        };
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        let frames: Vec<wire::Frame> = Vec::new();
        let verdict = classify(&frames);
        let top_user = frames.iter().find(|f| f.kind == wire::FrameKind::User).map(|f| f.function.clone());
        match self.join.unhooked_sample(key, at, (addrs, blocked), verdict, top_user) {
            Unhooked::Quiet => {}
            Unhooked::Confirmed => {
                if let Some(rec) = self.join.get(key) {
                    let stall = self.conv.wire_stall(rec, false);
                    self.shared.publisher.publish(Update::StallStarted(stall));
                }
            }
            Unhooked::Refuted => {
                if let Some(slot) = self.shared.slots.slots.get(key.0) {
                    slot.refuted.store(key.1, Release);
                }
            }
        }
    }

    /// Per-location figures from the summed tables: live tasks and their oldest age, the leak
    /// rule's verdict (a window closes every `leak_window`), the poll-time corrections.
    fn locations(
        &mut self,
        locs: &mut IntMap<usize, LocAgg>,
        overflow: &LocAgg,
        now: Instant,
        now_raw: u64,
    ) -> Vec<LocationStats> {
        let shared = self.shared.clone();
        let clk = self.clock;
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
            let name = self.conv.names.get(key);
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
        locations
    }

    /// Builds and publishes a snapshot. Returns whether it shows nothing going on that parked
    /// workers would not show: no alert, no busy or queued blocking-pool work, no pool handed out
    /// or waited for (a starved blocking pool or a saturated pool parks the workers too, and
    /// their alerts are measured in ticks), for `IDLE_TICK`.
    fn tick(&mut self) -> bool {
        let shared = self.shared.clone();
        let now = Instant::now();
        let now_raw = now_raw();
        let clk = self.clock;
        self.seq += 1;

        // Sum per-thread tables into per-location and per-worker figures.
        let Sums { mut locs, overflow, workers } = sum_slots(&shared, &self.long_polls, clk);

        // The ages the locations read include the tasks spawned since the last tick.
        self.batch.promote(&mut self.ages, shared.config.max_tracked_tasks);
        let locations = self.locations(&mut locs, &overflow, now, now_raw);

        // Active stalls, as they are now.
        let mut stalls: Vec<Stall> = self.done.iter().cloned().collect();
        stalls.extend(self.join.running().map(|rec| self.conv.wire_stall(rec, false)));

        let drops = drops(&shared, self.long_overrun, self.ages.untracked, self.ages.orphans_evicted);
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
            process: snapshot::process_info(&shared),
            workers,
            locations,
            stalls,
            stall_count: self.stall_count,
            stalled_ns: clk.ticks_to_ns(self.stalled_ticks),
            lag,
            runtime: self.runtime.sample(shared.config.aggregation_interval / 2),
            pools: self.pools(),
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
        let quiet = snapshot.alerts.is_empty()
            && snapshot
                .runtime
                .as_ref()
                .is_none_or(|r| r.blocking_queue_depth == 0 && r.idle_blocking_threads >= r.blocking_threads)
            && snapshot.pools.iter().all(|p| p.in_use == 0 && p.waiters == 0);
        let snapshot = Arc::new(snapshot);
        shared.publisher.set_latest(snapshot.clone());
        shared
            .publisher
            .publish(Update::Tick { snapshot: Box::new((*snapshot).clone()), interval: Box::new(interval) });
        let _ = self.started;
        quiet
    }

    /// The registered pools' figures. A gauge that panics is left out of the snapshot, each
    /// panic counted in `drops.probe_panics` and the pool named in `process.missing`.
    fn pools(&self) -> Vec<wire::PoolStats> {
        let (pools, panicked) = crate::aggregator::pool::collect();
        for name in panicked {
            self.shared.panics.fetch_add(1, Relaxed);
            self.shared.note_problem(format!(
                "pool {name:?}: its gauge panicked; the pool is left out of the snapshots while it does (each panic counted in drops.probe_panics)"
            ));
        }
        pools
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
