//! The watchdog thread: finds polls that have run past the stall threshold, samples the stalled
//! thread's native stack while the stall lasts, unwinds the copies, and tells the aggregator.
//! It also records what each sample cost: the handler's own time and the unwind time.
//!
//! It runs outside the service's runtime, so a fully stalled runtime still reports its stall.

pub(crate) mod anatomy;

use std::sync::atomic::{fence, AtomicBool, Ordering::*};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::aggregator::msg::{Msg, StallStart};
use crate::poll::clock::{clock, now_raw};
use crate::poll::slots::{FLAG_TIMED, FLAG_UNHOOKED};
use crate::state::Shared;
use crate::threads::Role;
use crate::watchdog::anatomy::{Cgroup, Counters, InSyscall, Reading, Track};

#[derive(Debug, Default)]
struct Watch {
    generation: u64,
    stack: Option<(usize, usize)>,
    active: Option<Active>,
    /// The running poll this watchdog first saw on the slot (its seq), the estimate of its
    /// start and the lower bound of it (raw clock), see `scan`.
    first_seen: Option<(u64, u64, u64)>,
    /// The slot's thread's counters (`anatomy`), opened for its current tid.
    counters: Option<Counters>,
    /// The thread's counters when this watchdog first saw the poll `first_seen` (its seq): the
    /// start of the window a stall's anatomy is measured over.
    base: Option<(u64, Reading, Option<Reading>)>,
    /// The latest reading of the slot's thread (its tid), whatever it was doing.
    latest: Option<(i32, Reading)>,
    /// The running poll's measurements, from when it passed half the threshold (`maybe long`)
    /// until this watchdog sees it end; a stall's anatomy.
    track: Option<Track>,
    /// What the thread was blocked in when its pending sample was requested (`None`: it was not
    /// in a system call), for that sample's stack.
    pending_blocked: Option<(InSyscall, String)>,
    /// The running stall's latest captured stack and the system call it was taken in: while the
    /// thread sleeps in that same call, its stack cannot have changed, so the next samples reuse
    /// it instead of signalling the thread. A signal wakes a sleeping thread, which must then
    /// wait for a CPU to run the handler: on a busy host that turned a sleep into "waiting for a
    /// CPU" and stretched it.
    blocked_stack: Option<(u64, InSyscall, Vec<u64>)>,
    unhooked: Unhooked,
    /// The end of a stall that did not fit in the aggregator's queue, sent again at each scan:
    /// dropped, it left the stall open for good ("stalled now", never counted).
    unsent_end: Option<Msg>,
    /// Sample requests in a row the slot's thread left unanswered.
    expiries: u32,
    /// A thread (tid) no longer signalled: it left `MAX_EXPIRIES` requests unanswered in a row
    /// and its signal mask blocks the signal. Its stalls go on without stacks until it unblocks
    /// the signal (checked again at each sample it would have had); 0 for none.
    muted: i32,
    /// The slot's owner, poll `seq` and park state (`PollState::run`) as the previous scan read
    /// them: whether anything moved since, for the deep sleep (`parked_for_good`).
    look: (i32, u64, u64),
    /// The slot's thread polled while its park state said parked: it has no working unpark hook
    /// (one set on the builder after `Probe::install` replaced the probe's), so its polls can
    /// begin without waking the watchdog, which then never sleeps on its word. Cleared when
    /// another thread claims the slot.
    deaf: bool,
}

impl Watch {
    /// A sample request to thread `tid` was given up on. Only a thread that blocks the signal
    /// is muted: on a busy host a thread that waits for a CPU longer than the request timeout
    /// also leaves requests unanswered, and muting it would lose its stacks for good.
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn expired(&mut self, shared: &Shared, tid: i32) {
        self.expiries += 1;
        let Some(signal) = shared.signal else { return };
        if self.expiries < MAX_EXPIRIES
            || self.muted == tid
            || !crate::sampler::signal::blocked_by(tid, signal).unwrap_or(false)
        {
            return;
        }
        self.muted = tid;
        let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        shared.note_problem(format!(
            "stack sampling: thread {tid} ({}) left {MAX_EXPIRIES} sample signals in a row unanswered and blocks \
             SIGRTMIN+{}, so it is not signalled while it does and those stalls have no stacks",
            name.trim(),
            shared.config.signal_offset
        ));
    }

    /// The counters of thread `tid`, opened on first use.
    fn counters(&mut self, tid: i32) -> &Counters {
        if self.counters.as_ref().is_none_or(|c| c.tid() != tid) {
            self.counters = None;
        }
        self.counters.get_or_insert_with(|| Counters::open(tid))
    }
}

#[derive(Debug)]
struct Active {
    /// The stall's key for the aggregator: the poll's (odd) `seq`, or for an unhooked stall an
    /// even key of its own (`Unhooked::next_key`).
    key: u64,
    /// The slot's `seq` while the stall lasts (odd for a poll, even for an unhooked stall).
    seq: u64,
    tid: i32,
    last_sample: u64,
    ended: bool,
    /// Raw clock of the scan that first saw the stall end (an upper bound of its end); 0 before.
    ended_at: u64,
    /// Set for an unhooked stall: the loop state it started in, and when a scan first saw it end.
    unhooked: Option<UnhookedActive>,
}

#[derive(Debug, Clone, Copy)]
struct UnhookedActive {
    run: u64,
    busy: Option<u64>,
}

/// What the watchdog last saw of a thread between task polls, to find user code that runs on a
/// runtime thread without any task hook around it: the `block_on` future of a current-thread
/// runtime and every task of a `LocalSet` it drives (Tokio calls no poll hook for either).
///
/// Such a thread shows three things the watchdog can read without touching it: its poll `seq`
/// (a hooked poll began or ended), its park state `PollState::run` (the park hooks), and its
/// runtime's busy-time metric, which Tokio's current-thread scheduler updates every time its
/// loop comes back from polling the `block_on` future and the ready tasks (`park_yield` and
/// `park` both submit it; a `LocalSet` returns to that loop at least every 61 tasks). While the
/// thread is out of its park and none of the three moves, it is inside one call that does not
/// return to the scheduler: once that lasts past the threshold it is an unhooked stall,
/// sampled like any other. Whether the samples show user code under Tokio's `block_on` or
/// `LocalSet` is decided by the aggregator (`attribution::classify`), which refutes the rest
/// (the thread left the runtime: `block_on` returned; or runtime machinery).
///
/// Only threads of a current-thread runtime (including `LocalRuntime`) are watched this way:
/// a multi-thread worker runs user code only inside hooked polls, and a thread that never
/// passed the park hooks (the thread of a multi-thread runtime's `block_on`) shows no park
/// state to tell idle from busy.
#[derive(Debug, Default)]
struct Unhooked {
    seq: u64,
    run: u64,
    busy: Option<u64>,
    /// A lower bound of the last change seen: the scan before the one that saw it (raw clock).
    quiet_since: u64,
    /// The state since `quiet_since` was refuted: do not start another stall before it changes.
    dead: bool,
    /// The thread's counters as of the previous scan, and as of `quiet_since` (None if the
    /// thread was parked or in a poll then): its CPU wait discounts the threshold, and the
    /// reading at `quiet_since` starts an unhooked stall's anatomy.
    reading_prev: Option<Reading>,
    reading_at_quiet: Option<Reading>,
    /// Unhooked stalls started on this slot, for their keys.
    episodes: u64,
}

impl Unhooked {
    /// Records what a scan saw; returns whether anything changed since the previous one.
    fn observe(&mut self, seq: u64, run: u64, busy: Option<u64>, prev_scan: u64) -> bool {
        if (seq, run, busy) == (self.seq, self.run, self.busy) {
            return false;
        }
        (self.seq, self.run, self.busy) = (seq, run, busy);
        self.quiet_since = prev_scan;
        self.dead = false;
        self.reading_at_quiet = self.reading_prev;
        true
    }

    /// A key no poll uses (poll keys are odd) and no other unhooked stall of the slot uses.
    fn next_key(&mut self) -> u64 {
        self.episodes += 1;
        (1 << 63) | (self.episodes << 1)
    }
}

/// The park state of `slot`'s thread (odd while out of its park, see `PollState::run`) and,
/// while it is out of its park between task polls, the busy time so far of the current-thread
/// runtime it drives (None if it drives none). See [`Unhooked`].
///
/// A thread watched through `Probe::watch_thread` went through no park hook: both figures come
/// from its runtime's metrics. Tokio's current-thread scheduler submits its park/unpark count on
/// each side of its park (odd while parked, `worker_park_unpark_count`), so the count plus one has
/// the parity of `PollState::run`. `last` is returned while the handle is being replaced.
fn loop_state(slot: &crate::poll::slots::Slot, seq: u64, last: &Unhooked) -> (u64, Option<u64>) {
    let foreign = slot.foreign.load(Acquire);
    let run = if foreign { None } else { Some(slot.poll.0.run.load(Acquire)) };
    if run.is_some_and(|r| r & 1 == 0) || seq & 1 == 1 {
        return (run.unwrap_or(last.run), None);
    }
    let Ok(rt) = slot.runtime.try_lock() else { return (run.unwrap_or(last.run), last.busy) };
    let Some(metrics) = rt.as_ref().map(|h| h.metrics()) else { return (run.unwrap_or(0), None) };
    let run = run.unwrap_or_else(|| metrics.worker_park_unpark_count(0).wrapping_add(1));
    let busy = (run & 1 == 1).then(|| metrics.worker_total_busy_duration(0).as_nanos() as u64);
    (run, busy)
}

/// Sends a stall start like [`send`], counted in `stall_starts_sent` first and, when the queue is
/// full, in `stall_starts_lost`: the aggregator closes a long-poll record no start has claimed only
/// once every start counted before it read that record has reached it or is known lost
/// (`Join::long_poll`). Counting after the send would let a watchdog preempted between the two
/// hide a start that is already queued.
fn send_start(tx: &SyncSender<Msg>, shared: &Shared, s: StallStart) {
    shared.stall_starts_sent.fetch_add(1, SeqCst);
    if tx.try_send(Msg::StallStarted(s)).is_err() {
        shared.stall_starts_lost.fetch_add(1, SeqCst);
        shared.stall_msgs_dropped.fetch_add(1, Relaxed);
    }
}

/// Sends to the aggregator without blocking; what a full queue loses is counted (a sample as a
/// lost sample, a stall start or end as a lost stall record).
fn send(tx: &SyncSender<Msg>, shared: &Shared, msg: Msg) {
    let is_sample = matches!(msg, Msg::Sample { .. });
    let is_nudge = matches!(msg, Msg::Drain);
    // A drain request that does not fit loses nothing: the aggregator is busy with the queue.
    if tx.try_send(msg).is_err() && !is_nudge {
        let counter = if is_sample { &shared.samples_lost } else { &shared.stall_msgs_dropped };
        counter.fetch_add(1, Relaxed);
    }
}

/// When the watchdog scans.
///
/// Every wake-up of this thread costs the service: on a machine whose cores the workers keep
/// busy, it preempts a worker, and a wake-up costs ~20 µs of CPU on the VMs measured
/// (docs/benchmarks.md, "Watchdog wake-ups"). So the watchdog does not scan on a fixed short
/// period. It wakes when there is something to do: at the moment a poll it has seen running
/// would cross the threshold (so a stall's first alert does not wait for a period), every sample
/// interval while a stall lasts, and otherwise every period below.
///
/// The period is what bounds an untimed poll's start when nothing closer does: the start is
/// bounded below by the previous scan and by the thread's anchor (the end of its last timed poll
/// or its unpark, `PollState::anchor`), and a poll can be reported up to that bound's distance
/// longer than it was, never shorter (more when the watchdog itself was delayed, see `scan`). The
/// anchor is close for a worker that was idle (its unpark) and for one running short polls (at
/// most `timed_poll_every` polls back), which is most of the time; then the watchdog scans every
/// half threshold (`idle`). When a scan finds a poll whose anchor is further back than an eighth
/// of the threshold (a worker running long polls back to back), it scans every eighth of the
/// threshold (`precise`) for a while (`hold`), which keeps the bound of the polls that follow
/// within an eighth of the threshold, as a fixed scan used to; the first such poll after a quiet
/// spell is bounded by the idle period only. Do not lengthen
/// either without measuring that bound (`tests/tests/stalls.rs`, the anchor and long-polls tests).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cadence {
    /// Period while every anchor is close (raw ticks).
    idle: u64,
    /// Period while some anchor is not.
    precise: u64,
    /// How long the precise period lasts after the last far anchor.
    hold: u64,
    /// Scan at the precise period until then (raw clock).
    precise_until: u64,
}

impl Cadence {
    fn idle_period(c: &crate::config::Config) -> Duration {
        (c.stall_threshold / 2).max(MIN_SLEEP)
    }

    fn precise_period(c: &crate::config::Config) -> Duration {
        (c.stall_threshold / 8).max(MIN_SLEEP)
    }

    fn new(c: &crate::config::Config) -> Cadence {
        let clk = clock();
        let idle = clk.ns_to_ticks(Cadence::idle_period(c).as_nanos() as u64);
        Cadence {
            idle,
            precise: clk.ns_to_ticks(Cadence::precise_period(c).as_nanos() as u64),
            hold: 4 * idle,
            precise_until: 0,
        }
    }

    fn period(&self, now: u64) -> u64 {
        if now < self.precise_until {
            self.precise
        } else {
            self.idle
        }
    }
}

/// Shortest sleep between two scans.
const MIN_SLEEP: Duration = Duration::from_micros(250);

/// The watchdog thread's body: [`run`]. When it dies of a panic, no poll counts as stalled any
/// more, so task dumps (refused while a poll is stalled) are not refused forever.
pub(crate) fn run_guarded(shared: Arc<Shared>, tx: SyncSender<Msg>, stop: Arc<AtomicBool>) {
    let s = shared.clone();
    if s.threads.run(Role::Watchdog, &s.panics, || run(shared, tx, stop)).is_none() {
        s.polls_stalled.store(0, Release);
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        crate::sampler::signal::release_all(s.id);
    }
}

/// Longest deep sleep (see [`parked_for_good`]): a wake-up per second at most while the service
/// is idle. Only a safety net: the unpark and claim hooks end a deep sleep, and a thread found
/// polling without them (`Watch::deaf`) keeps the watchdog on its cadence from then on.
const DEEP_SLEEP: Duration = Duration::from_secs(1);

/// Scans in a row that must find every thread parked, with nothing moved since the scan before,
/// before the watchdog sleeps until an unpark: at least two idle periods (threshold / 2 each) of
/// quiet. A shorter hold would let a service whose workers wake every few milliseconds wake the
/// watchdog more often than its cadence did (one hook wake-up per sleep).
const QUIET_SCANS: u32 = 2;

/// Whether slot `slot`'s thread cannot begin a poll without waking the watchdog first, given
/// what the watchdog's previous scan saw of it (`w.look`): the slot is free (a claim wakes the
/// watchdog, `hooks::claim`), or its thread is parked through the probe's park hooks (its next
/// poll comes after an unpark, which wakes the watchdog, `hooks::unparked`) with nothing moved
/// since that scan. A thread that never went through the park hooks (`run` 0) counts only if it
/// has never polled (`seq` 0: a thread that only spawned tasks); its first poll would then be
/// seen up to [`DEEP_SLEEP`] late, and that poll, a slot's first, is timed (`hooks::before_poll`:
/// poll 0 is), so its start and length stay exact. A thread given by `Probe::watch_thread` has
/// no park hooks at all, and never counts.
///
/// The watchdog calls this again after publishing that it sleeps (`WatchdogSleep::announce`),
/// so that an unpark or claim racing with its decision is seen by one side or the other.
fn parked_for_good(slot: &crate::poll::slots::Slot, w: &Watch) -> bool {
    let tid = slot.tid.load(Acquire);
    if tid != w.look.0 {
        return false;
    }
    if tid == 0 {
        return true;
    }
    let p = &slot.poll.0;
    let (seq, run) = (p.seq.load(Acquire), p.run.load(Acquire));
    let parked = (run & 1 == 0 && run != 0) || (run == 0 && seq == 0);
    parked
        && seq & 1 == 0
        && (seq, run) == (w.look.1, w.look.2)
        && !w.deaf
        && slot.generation.load(Acquire) == w.generation
        && !slot.foreign.load(Acquire)
        && w.active.is_none()
        && w.track.is_none()
        && w.unsent_end.is_none()
}

fn run(shared: Arc<Shared>, tx: SyncSender<Msg>, stop: Arc<AtomicBool>) {
    let c = &shared.config;
    let clk = clock();
    let sample_ticks = clk.ns_to_ticks(c.sample_interval.as_nanos() as u64);
    let request_timeout = clk.ns_to_ticks(50_000_000);
    let mut cadence = Cadence::new(c);
    let min_ticks = clk.ns_to_ticks(MIN_SLEEP.as_nanos() as u64);
    let heartbeat_ticks = clk.ns_to_ticks(c.heartbeat_interval.as_nanos() as u64);
    let mut watches: Vec<Watch> = (0..shared.slots.slots.len()).map(|_| Watch::default()).collect();
    let cgroup = Cgroup::open();
    {
        // Say what the anatomy cannot measure on this host, once.
        let mut problems = shared.problems.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: gettid has no preconditions.
        if Counters::open(unsafe { libc::gettid() }).read(0).is_none() {
            problems.push(
                "stall anatomy: the kernel's per-thread accounting (/proc/self/task/TID/schedstat, CONFIG_SCHED_INFO) \
                 is not readable, so stalls are not split into on CPU, waiting for a CPU and blocked"
                    .to_string(),
            );
        } else if !cgroup.available() {
            problems.push(
                "CPU quota throttling: no cgroup cpu.stat with throttling counters (v2 or v1 cpu controller); \
                 waiting for a CPU is still measured"
                    .to_string(),
            );
        }
    }
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    let mut unwinder = shared.signal.map(|_| crate::sampler::unwind::Unwinder::new());
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    let mut addrs = Vec::with_capacity(crate::sampler::unwind::MAX_FRAMES);
    // No scan has read the slots yet, so nothing bounds the start of a poll already running:
    // 0, and the first scan bounds such polls by their thread's anchor alone (at the latest,
    // when the thread claimed its slot). The watchdog thread's own start is no bound: the
    // runtime runs while it is being scheduled, which once made the first stall of a run come
    // out 3-10 ms short on a busy host.
    let mut prev_scan = 0;
    // The planned length of the interval that ends with the next scan.
    let mut planned = cadence.idle;
    // Scans in a row that found every thread parked for good (`QUIET_SCANS`).
    let mut quiet_scans = 0;
    // When a hook last woke this thread from a deep sleep, until a scan an idle period later
    // decides whether to nudge the heartbeat.
    let mut woken_at: Option<u64> = None;
    while !stop.load(Acquire) {
        shared.threads.injection_point(Role::Watchdog);
        let mut slept_deep = false;
        if quiet_scans >= QUIET_SCANS {
            // Every thread is parked: sleep until one unparks (`WatchdogSleep`). Publish that
            // first, then look again: an unpark between the last scan and now is seen here, one
            // after it clears the flag, so the sleep returns at once or is woken. The guard's
            // drop stores `stop` and then wakes this sleep the same way.
            shared.sleep.announce();
            if !stop.load(Acquire) && shared.slots.slots.iter().zip(&watches).all(|(s, w)| parked_for_good(s, w)) {
                shared.sampler_costs.watchdog_deep_sleeps.fetch_add(1, Relaxed);
                if shared.sleep.sleep(DEEP_SLEEP) {
                    // A worker unparked: if it is still running an idle period from now, a
                    // backed-off heartbeat must beat within its period (`HeartbeatNudge`).
                    woken_at = Some(now_raw());
                    // And an aggregator ticking once a second goes back to its period now.
                    if shared.sleep.aggregator_idle.swap(false, AcqRel) {
                        send(&tx, &shared, Msg::Drain);
                    }
                }
                slept_deep = true;
            }
            shared.sleep.awake();
            quiet_scans = 0;
            // Not asleep after all (something moved since the scan): scan now.
        } else {
            // Parked, not asleep: the guard's drop unparks this thread, so stopping never waits
            // for an interval (up to threshold / 2). An early wake only makes one interval shorter.
            std::thread::park_timeout(Duration::from_nanos(clk.ticks_to_ns(planned)));
        }
        shared.sampler_costs.watchdog_wakes.fetch_add(1, Relaxed);
        if stop.load(Acquire) {
            break;
        }
        let woke = now_raw();
        if slept_deep {
            // The interval this scan ends is the whole sleep: `scan` bounds a poll it finds by
            // the previous scan and its thread's anchor (its unpark, which woke this thread).
            planned = woke.saturating_sub(prev_scan);
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
            if let Some(unwinder) = unwinder.as_mut() {
                collect_samples(&shared, &tx, unwinder, &mut addrs, &mut watches, request_timeout);
            }
            // Busy time is counted from the previous scan, except across a deep sleep, during
            // which every thread was parked until at most the moment this thread woke.
            let busy_since = if slept_deep { woke } else { prev_scan };
            let timing = Timing { sample_ticks, planned, woke, busy_since, cgroup: &cgroup };
            let (began, next, quiet, running) = scan(&shared, &tx, &mut watches, timing, &mut cadence, prev_scan);
            prev_scan = began;
            if let Some(at) = woken_at {
                if !running {
                    woken_at = None;
                } else if began.saturating_sub(at) >= cadence.idle {
                    shared.heartbeat.nudge_if_far(at, heartbeat_ticks);
                    woken_at = None;
                }
            }
            planned = next.saturating_sub(began).clamp(min_ticks, cadence.idle);
            // After a deep sleep that found everything as it left it (its safety-net timeout),
            // sleep again at once rather than after another `QUIET_SCANS` scans.
            quiet_scans = match (quiet, slept_deep) {
                (false, _) => 0,
                (true, true) => QUIET_SCANS,
                (true, false) => quiet_scans + 1,
            };
        }));
        if result.is_err() {
            shared.panics.fetch_add(1, Relaxed);
            planned = cadence.precise;
            quiet_scans = 0;
        }
    }
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    crate::sampler::signal::release_all(shared.id);
}

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn collect_samples(
    shared: &Shared,
    tx: &SyncSender<Msg>,
    unwinder: &mut crate::sampler::unwind::Unwinder,
    addrs: &mut Vec<u64>,
    watches: &mut [Watch],
    request_timeout: u64,
) {
    let clk = clock();
    let costs = &shared.sampler_costs;
    let mut expired_of = Vec::new();
    let expired = crate::sampler::signal::collect(
        shared.id,
        now_raw(),
        request_timeout,
        |cap| {
            costs.captured.fetch_add(1, Relaxed);
            if let Some(w) = watches.get_mut(cap.slot) {
                w.expiries = 0;
            }
            costs.stack_bytes.fetch_add(cap.stack.len() as u64, Relaxed);
            if cap.handler_ticks > 0 {
                costs.handler_ns.record(clk.ticks_to_ns(cap.handler_ticks));
            }
            let pending = watches.get_mut(cap.slot).and_then(|w| w.pending_blocked.take());
            // A sample whose poll had already ended when the signal landed shows another poll's
            // stack: drop it rather than blame the wrong code. Nothing was lost: the stall ended
            // between the request and the signal, and its time after its last sample is the
            // sampling's own granularity, not a bound the probe hit. Counting it made a clean
            // service's first stalls raise "probe dropped data" now and then (one demo run in
            // two or four). A capture that came back empty is a loss, and is counted.
            if cap.stack.is_empty() {
                shared.samples_lost.fetch_add(1, Relaxed);
                return;
            }
            if cap.got_seq != cap.want_seq {
                return;
            }
            let began = now_raw();
            unwinder.unwind(cap.regs, cap.stack, addrs);
            costs.unwind_ns.record(clk.ticks_to_ns(now_raw().saturating_sub(began)));
            costs.frames.fetch_add(addrs.len() as u64, Relaxed);
            if addrs.is_empty() {
                shared.samples_lost.fetch_add(1, Relaxed);
                return;
            }
            if let (Some(w), Some((call, _))) = (watches.get_mut(cap.slot), &pending) {
                w.blocked_stack = Some((cap.want_seq, *call, addrs.clone()));
            }
            let blocked = pending.map(|(_, what)| what);
            // An unhooked stall's samples are requested with the slot's (even) `seq`, which the
            // handler checks; the aggregator knows the stall by its own key.
            let key = match watches.get(cap.slot).and_then(|w| w.active.as_ref()) {
                Some(a) if a.unhooked.is_some() && a.seq == cap.want_seq => a.key,
                _ => cap.want_seq,
            };
            // When it was taken: an unhooked stall that the sample finds over ended before then.
            let at = if cap.captured_at != 0 { cap.captured_at } else { now_raw() };
            send(tx, shared, Msg::Sample { slot: cap.slot, seq: key, at, addrs: addrs.clone(), blocked });
        },
        |slot, tid| expired_of.push((slot, tid)),
    );
    shared.samples_lost.fetch_add(expired, Relaxed);
    for (slot, tid) in expired_of {
        if let Some(w) = watches.get_mut(slot) {
            w.expired(shared, tid);
        }
    }
}

/// Sample requests in a row that a thread blocking the signal may leave unanswered before the
/// watchdog stops signalling it. Such a thread queues every real-time signal sent to it (each
/// counts against the user's RLIMIT_SIGPENDING, shared with the host), and was sent one every
/// 50 ms for as long as its stall lasted.
const MAX_EXPIRIES: u32 = 3;

/// What a scan needs to know about time, in raw clock ticks, and where throttling is read.
#[derive(Clone, Copy, Debug)]
struct Timing<'a> {
    /// Time between two samples of a stalled thread.
    sample_ticks: u64,
    /// The planned length of the interval this scan ends (the previous scan's plan).
    planned: u64,
    /// When this thread woke for this scan (before collecting samples).
    woke: u64,
    /// Since when a thread found in a poll counts as busy (`Slots::busy_ticks`): the previous
    /// scan, or this wake-up after a deep sleep.
    busy_since: u64,
    cgroup: &'a Cgroup,
}

/// Which sample a scan may take.
#[derive(Clone, Copy, Debug)]
struct SampleAt<'a> {
    tid: i32,
    /// The slot's `seq` the sample must be taken under (the handler checks it).
    want_seq: u64,
    now: u64,
    t: Timing<'a>,
}

/// Samples the thread of the slot's stall in progress if a sample is due, and plans the next one.
/// First it looks at what the thread is doing (for the anatomy of a hooked poll, `Watch::track`):
/// while the thread sleeps in the same system call as its last sample, that sample's stack is
/// counted again instead of signalling the thread (`Watch::blocked_stack`).
fn sample(
    shared: &Shared,
    tx: &SyncSender<Msg>,
    slot: &crate::poll::slots::Slot,
    i: usize,
    w: &mut Watch,
    at: SampleAt<'_>,
    next_wake: &mut u64,
) {
    let (now, t) = (at.now, at.t);
    let Some(a) = w.active.as_mut() else { return };
    if now.saturating_sub(a.last_sample) < t.sample_ticks {
        *next_wake = (*next_wake).min(a.last_sample.saturating_add(t.sample_ticks));
        return;
    }
    *next_wake = (*next_wake).min(now.saturating_add(t.sample_ticks));
    // What the thread is blocked in, read before the sample's signal interrupts it, and its
    // counters so far.
    w.pending_blocked = None;
    if let (Some(c), Some(track)) = (w.counters.as_ref(), w.track.as_mut().filter(|tr| tr.seq == at.want_seq)) {
        let began = now_raw();
        w.pending_blocked = track.observe(c, now, t.cgroup);
        w.latest = track.last().map(|r| (at.tid, r)).or(w.latest);
        anatomy_cost(shared, began);
    }
    match (&w.pending_blocked, &w.blocked_stack) {
        (Some((call, what)), Some((s, last_call, addrs))) if *s == at.want_seq && call == last_call => {
            // Still asleep in the call its last sample was taken in: the same stack, no signal.
            let msg = Msg::Sample { slot: i, seq: a.key, at: now, addrs: addrs.clone(), blocked: Some(what.clone()) };
            send(tx, shared, msg);
            w.pending_blocked = None;
            a.last_sample = now;
            return;
        }
        (None, _) => w.blocked_stack = None,
        _ => {}
    }
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    if let Some(signal) = shared.signal {
        use crate::sampler::signal;
        if signal::in_flight(shared.id, at.tid) {
            return;
        }
        if w.muted == at.tid && signal::blocked_by(at.tid, signal).unwrap_or(false) {
            // Stopped after repeated expiries (`Watch::expired`, named in `missing`).
            shared.samples_lost.fetch_add(1, Relaxed);
            a.last_sample = now;
            return;
        }
        if w.muted != 0 {
            // It unblocked the signal, or another thread holds the slot now: its own chances.
            (w.muted, w.expiries) = (0, 0);
        }
        if w.stack.is_none() {
            w.stack = signal::stack_bounds(slot.pthread.load(Relaxed));
        }
        let Some(bounds) = w.stack else {
            shared.samples_lost.fetch_add(1, Relaxed);
            a.last_sample = now;
            return;
        };
        let p = &slot.poll.0;
        let req = signal::Request {
            probe: shared.id,
            slot: i,
            tid: at.tid,
            seq: &p.seq,
            want_seq: at.want_seq,
            stack: bounds,
            now,
        };
        match signal::request(signal, req) {
            Ok(()) => {}
            Err(signal::RequestError::NotOurs) => {
                shared.samples_lost.fetch_add(1, Relaxed);
                shared.note_problem(format!(
                    "stack sampling: the handler of signal {signal} (SIGRTMIN+{}) was replaced after the probe \
                     started, so no stack is sampled (signalling would kill the process or run another handler); \
                     choose another signal_offset if the service uses this one",
                    shared.config.signal_offset
                ));
            }
            Err(_) => {
                shared.samples_lost.fetch_add(1, Relaxed);
            }
        }
        a.last_sample = now;
    }
    #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = (slot, i);
}

/// One scan of every slot. `prev_scan` is when the previous scan began; returns when this one
/// began, when the next one should (see [`Cadence`]), whether every slot was parked for good
/// ([`parked_for_good`]) with nothing for the watchdog to do, and whether some thread was out of
/// its park or in a poll.
fn scan(
    shared: &Shared,
    tx: &SyncSender<Msg>,
    watches: &mut [Watch],
    t: Timing<'_>,
    cadence: &mut Cadence,
    prev_scan: u64,
) -> (u64, u64, bool, bool) {
    let now = now_raw();
    let mut far_anchor = false;
    let mut next_wake = u64::MAX;
    let mut quiet = true;
    let mut running = false;
    let timed_mask = u64::from(shared.timed_every - 1);
    // The shared event ring (threads without a slot) too, once it is a quarter full.
    let mut drain_asked =
        shared.slots.shared.ring.as_ref().is_some_and(|r| r.queued() >= (r.capacity() as u64 / 4).max(1));
    if drain_asked {
        send(tx, shared, Msg::Drain);
    }
    for (i, (slot, w)) in shared.slots.slots.iter().zip(watches.iter_mut()).enumerate() {
        if let Some(msg) = w.unsent_end.take() {
            // Sent, or the aggregator is gone (the probe is stopping), unless the queue is full.
            if let Err(std::sync::mpsc::TrySendError::Full(msg)) = tx.try_send(msg) {
                w.unsent_end = Some(msg);
                next_wake = next_wake.min(now.saturating_add(t.sample_ticks));
            }
        }
        let generation = slot.generation.load(Acquire);
        // A claim since the previous scan: not quiet until a scan has seen the new owner settle.
        let fresh = generation != w.generation;
        if fresh {
            w.generation = generation;
            w.stack = None;
            w.deaf = false;
        }
        if generation != 0 {
            // A quarter-full event ring (a spawn storm): have the aggregator drain it now rather
            // than at its next periodic drain, by when it could have overflowed.
            let queued = slot.ev_head.load(Relaxed).wrapping_sub(slot.ev_tail.load(Relaxed));
            if queued >= (slot.events.len() as u64 / 4).max(1) && !drain_asked {
                drain_asked = true;
                send(tx, shared, Msg::Drain);
            }
        }
        let p = &slot.poll.0;
        let seq = p.seq.load(Acquire);
        if seq & 1 == 1 && t.busy_since != 0 {
            let busy = &shared.slots.busy_ticks[i];
            busy.store(busy.load(Relaxed) + now.saturating_sub(t.busy_since), Relaxed);
        }
        {
            // For the deep sleep: what moved since the previous scan (`parked_for_good`).
            let (tid, run) = (slot.tid.load(Acquire), p.run.load(Acquire));
            let same_owner = !fresh && tid == w.look.0;
            if same_owner && tid != 0 && run != 0 && run & 1 == 0 && run == w.look.2 && seq != w.look.1 {
                // It polled while it stayed parked: its unpark hook does not run. (A thread
                // polls only between its unpark and its park hooks; `run` 0 is a thread that has
                // not been through them yet, never taken as parked for good unless it never polled.)
                w.deaf = true;
            }
            quiet &= same_owner && parked_for_good(slot, w);
            running |= tid != 0 && (seq & 1 == 1 || run & 1 == 1);
            w.look = (tid, seq, run);
        }
        // What the thread's loop did since the last scan, for unhooked stalls (`Unhooked`).
        let (run, rt_busy) = loop_state(slot, seq, &w.unhooked);
        let moved = w.unhooked.observe(seq, run, rt_busy, prev_scan);
        // Its CPU wait as of this scan, while it may be in unhooked code (see below).
        let reading_now = if rt_busy.is_some() && shared.signal.is_some() {
            w.counters(slot.tid.load(Relaxed)).read(now)
        } else {
            None
        };
        w.unhooked.reading_prev = reading_now;
        if let Some(a) = &mut w.active {
            let tid_changed = slot.tid.load(Acquire) != a.tid;
            match &mut a.unhooked {
                None => {
                    if !a.ended && (a.seq != seq || tid_changed) {
                        a.ended = true;
                        // The hook's end is exact, but it is recorded only if the poll saw the
                        // watchdog's mark before it ended; this bound stands in when it did not.
                        a.ended_at = now_raw();
                    }
                }
                Some(u) => {
                    let refuted = slot.refuted.load(Acquire) == a.key;
                    if refuted {
                        w.unhooked.dead = !moved;
                    }
                    if !a.ended && (a.seq != seq || u.run != run || u.busy != rt_busy || tid_changed || refuted) {
                        a.ended = true;
                        // Read after the slot, not the scan's start: the thread may have moved
                        // on after `now` if this thread was preempted mid-scan.
                        a.ended_at = now_raw();
                    }
                }
            }
            // End a stall only once no sample request for it is in flight, so that every
            // sample reaches the aggregator before the end does.
            if a.ended && !sample_in_flight(shared, a.tid) {
                let (seq, key, tid) = (a.seq, a.key, a.tid);
                let end = Some(a.ended_at).filter(|&e| e != 0);
                w.active = None;
                let raw = finish_track(w, seq, tid, now);
                let msg = Msg::StallEnded { slot: i, seq: key, anatomy: raw, end };
                if w.unsent_end.is_some() {
                    // An older end waits: keep the order (at most one waits per slot; this
                    // one is counted lost, which needs two full queues a stall apart).
                    shared.stall_msgs_dropped.fetch_add(1, Relaxed);
                } else if let Err(std::sync::mpsc::TrySendError::Full(msg)) = tx.try_send(msg) {
                    w.unsent_end = Some(msg);
                    next_wake = next_wake.min(now.saturating_add(t.sample_ticks));
                }
            } else {
                // Its next sample (taken below if due now), or another look for the end of its
                // last one. Never "now": a due sample is taken in this scan.
                let due = a.last_sample.saturating_add(t.sample_ticks);
                next_wake = next_wake.min(if due > now { due } else { now.saturating_add(t.sample_ticks) });
            }
        }
        // A long poll that ended without the watchdog seeing it cross the threshold (it woke
        // late): its anatomy goes to the aggregator, for the long-poll record the hook wrote if
        // it did cross.
        if w.active.is_none() && w.track.as_ref().is_some_and(|tr| tr.seq != seq || slot.tid.load(Relaxed) != tr.tid) {
            if let Some((s, tid)) = w.track.as_ref().map(|tr| (tr.seq, tr.tid)) {
                if let Some(raw) = finish_track(w, s, tid, now) {
                    send(tx, shared, Msg::PollAnatomy { slot: i, seq: s, anatomy: raw });
                }
            }
        }
        if seq & 1 == 0 {
            // Only with stack sampling: the samples are what tells user code from a thread that left.
            let watched = shared.signal.is_some() && rt_busy.is_some() && run & 1 == 1;
            if w.active.is_none() && !moved && !w.unhooked.dead && watched {
                // Out of its park, no poll began or ended, its scheduler loop did not turn: since
                // `quiet_since` at the latest, or since the thread's anchor (its unpark or the end
                // of its last timed poll) if that is later. Both are lower bounds of the start.
                let anchor = p.anchor.load(Relaxed);
                let tid = slot.tid.load(Relaxed);
                fence(Acquire);
                let run_moved = !slot.foreign.load(Relaxed) && p.run.load(Relaxed) != run;
                if p.seq.load(Relaxed) != seq || run_moved || tid == 0 {
                    continue;
                }
                let start = w.unhooked.quiet_since.max(anchor);
                // Time it spent waiting for a CPU since `quiet_since` does not count: a thread that
                // did not run could not turn its loop, and what looks like one call may be a
                // LocalSet's batch of short polls (which the watchdog cannot tell apart,
                // `Unhooked`) stretched by an overloaded host. This costs one read of the thread's
                // schedstat per scan while it is out of its park and between task polls; none while
                // it is parked.
                let mut counted = now.saturating_sub(start);
                if let (Some(then), Some(r)) = (w.unhooked.reading_at_quiet, reading_now) {
                    counted = counted.saturating_sub(clock().ns_to_ticks(r.wait_ns.saturating_sub(then.wait_ns)));
                }
                if counted < shared.threshold_ticks {
                    next_wake = next_wake.min(now.saturating_add(shared.threshold_ticks - counted));
                    continue;
                }
                let key = w.unhooked.next_key();
                let u = UnhookedActive { run, busy: rt_busy };
                w.active = Some(Active { key, seq, tid, last_sample: 0, ended: false, ended_at: 0, unhooked: Some(u) });
                let flags = FLAG_UNHOOKED;
                let s = StallStart { slot: i, seq: key, start, task: 0, loc: 0, flags, tid, detected: now };
                send_start(tx, shared, s);
                // Its anatomy, measured like a poll's (`anatomy::Track`, keyed by the slot's
                // even `seq`, which the stall's samples carry): from the reading at
                // `quiet_since` (a bound of its start, and before it), or from now.
                let at_quiet = w.unhooked.reading_at_quiet;
                let mut track = Track::new(seq, tid, at_quiet.or(reading_now), at_quiet, t.cgroup);
                let began = now_raw();
                track.observe(w.counters(tid), now, t.cgroup);
                w.latest = track.last().map(|r| (tid, r)).or(w.latest);
                anatomy_cost(shared, began);
                w.track = Some(track);
            }
            if let Some((tid, want)) =
                w.active.as_ref().filter(|a| a.unhooked.is_some() && a.seq == seq && !a.ended).map(|a| (a.tid, a.seq))
            {
                sample(shared, tx, slot, i, w, SampleAt { tid, want_seq: want, now, t }, &mut next_wake);
            }
            continue;
        }
        let anchor = p.anchor.load(Relaxed);
        let anchor_seq = p.anchor_seq.load(Relaxed);
        let task = p.task.load(Relaxed);
        let loc = p.loc.load(Relaxed);
        let tid = slot.tid.load(Relaxed);
        fence(Acquire);
        if p.seq.load(Relaxed) != seq || tid == 0 {
            continue;
        }
        let timed = (seq >> 1) & timed_mask == 0;
        let (start, floor) = match w.first_seen {
            Some((s, est, floor)) if s == seq => (est, floor),
            _ => {
                // The poll began after the previous scan, which read this slot and did not see
                // it, and after the thread's anchor: both are lower bounds.
                let bound = prev_scan.max(anchor);
                let est = if timed {
                    // Read from the clock as the poll began.
                    anchor
                } else if anchor != 0 && seq.wrapping_sub(anchor_seq) / 2 == 0 {
                    // The first poll since the anchor: it began right after it (or after
                    // `prev_scan`, if work no hook sees ran in between).
                    bound
                } else {
                    far_anchor |= now.saturating_sub(anchor) > cadence.precise;
                    // If this thread was delayed, `prev_scan` is older than planned and may be
                    // far before the poll; then the planned interval before this wake-up
                    // estimates it instead, which never makes a short poll look long. That
                    // estimate is not a bound: on a busy host the poll may have begun before it,
                    // which once made 30 ms polls come out 2-5 ms short. So it only decides
                    // whether the poll crossed the threshold; the stall's length is measured from
                    // `bound` (the floor), never shorter than the poll and longer by at most the
                    // watchdog's own delay. Do not report from the estimate: the guide promises
                    // lengths that can only come out longer (`tests/tests/report.rs`).
                    bound.max(t.woke.saturating_sub(t.planned))
                };
                let floor = if timed { anchor } else { bound.min(est) };
                w.first_seen = Some((seq, est, floor));
                // The start of a possible stall's anatomy window (two system calls, only for a
                // poll this scan finds running).
                let began = now_raw();
                // From an earlier scan only (readings carry their scan's time): that scan saw
                // another poll or none, so it read the counters before this poll began.
                let before = w.latest.filter(|(t, r)| *t == tid && r.at < now).map(|(_, r)| r);
                let reading = w.counters(tid).read(now);
                w.latest = reading.map(|r| (tid, r)).or(w.latest);
                w.base = reading.map(|r| (seq, r, before));
                anatomy_cost(shared, began);
                (est, floor)
            }
        };
        let flags = if timed { FLAG_TIMED } else { 0 };
        if !timed && p.watched.load(Relaxed) != seq && now.saturating_sub(start) >= shared.maybe_long_ticks {
            // It may cross the threshold: have its end read the clock (`hooks::after_poll`).
            p.watched_start.store(start, Relaxed);
            p.watched_floor.store(floor, Relaxed);
            p.watched.store(seq, Release);
        }
        if now.saturating_sub(start) >= shared.maybe_long_ticks && w.track.as_ref().is_none_or(|tr| tr.seq != seq) {
            // It may become a stall: measure it from here on (`anatomy::Track`).
            let (base, before) = match w.base.take() {
                Some((s, r, before)) if s == seq => (Some(r), before),
                _ => (None, None),
            };
            let mut track = Track::new(seq, tid, base, before, t.cgroup);
            let began = now_raw();
            track.observe(w.counters(tid), now, t.cgroup);
            w.latest = track.last().map(|r| (tid, r)).or(w.latest);
            anatomy_cost(shared, began);
            w.track = Some(track);
        }
        if now.saturating_sub(start) < shared.threshold_ticks {
            // Wake as it would cross the threshold, if that comes before the next scan.
            next_wake = next_wake.min(start.saturating_add(shared.threshold_ticks));
            continue;
        }
        if w.active.is_none() {
            w.active = Some(Active { key: seq, seq, tid, last_sample: 0, ended: false, ended_at: 0, unhooked: None });
            send_start(tx, shared, StallStart { slot: i, seq, start: floor, task, loc, flags, tid, detected: now });
        }
        if w.active.as_ref().is_some_and(|a| a.seq == seq && !a.ended && a.unhooked.is_none()) {
            sample(shared, tx, slot, i, w, SampleAt { tid, want_seq: seq, now, t }, &mut next_wake);
        }
    }
    if far_anchor {
        cadence.precise_until = now.saturating_add(cadence.hold);
    }
    // Something due (a stall's sample, a poll about to cross the threshold): no deep sleep.
    quiet &= next_wake == u64::MAX;
    let next = next_wake.min(now.saturating_add(cadence.period(now)));
    // Stalls in progress, for whoever must not wait on a stalled worker (task dumps).
    let stalled = watches.iter().filter(|w| w.active.as_ref().is_some_and(|a| !a.ended)).count();
    shared.polls_stalled.store(stalled, Release);
    (now, next, quiet, running)
}

/// Counts one anatomy read that began at `began` (raw clock), for `Probe::sampler_stats`.
fn anatomy_cost(shared: &Shared, began: u64) {
    let ns = clock().ticks_to_ns(now_raw().saturating_sub(began));
    shared.sampler_costs.anatomy_ns.record(ns);
    shared.sampler_costs.anatomy_total_ns.fetch_add(ns, Relaxed);
}

/// Ends the measurements of poll `seq` on thread `tid`: what the aggregator needs for its
/// anatomy. A thread that has exited since (a runtime shutting down) has no counters left; the
/// last reading taken while the poll ran ends the window then, as it does whenever there is one.
fn finish_track(w: &mut Watch, seq: u64, tid: i32, now: u64) -> Option<Box<crate::watchdog::anatomy::Raw>> {
    let track = w.track.take().filter(|tr| tr.seq == seq && tr.tid == tid)?;
    let after = w.counters(tid).read(now);
    w.latest = after.map(|r| (tid, r)).or(w.latest);
    track.finish(after).map(Box::new)
}

fn sample_in_flight(_shared: &Shared, _tid: i32) -> bool {
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    if _shared.signal.is_some() {
        return crate::sampler::signal::in_flight(_shared.id, _tid);
    }
    false
}
