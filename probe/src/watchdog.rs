//! The watchdog thread: finds polls that have run past the stall threshold, samples the stalled
//! thread's native stack while the stall lasts, unwinds the copies, and tells the aggregator.
//! It also records what each sample cost: the handler's own time and the unwind time.
//!
//! It runs outside the service's runtime, so a fully stalled runtime still reports its stall.

use std::sync::atomic::{fence, AtomicBool, Ordering::*};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::aggregator::{Msg, StallStart};
use crate::clock::{clock, now_raw};
use crate::probe::Shared;
use crate::slots::{FLAG_MASK, FLAG_TIMED};

#[derive(Debug, Default)]
struct Watch {
    generation: u64,
    stack: Option<(usize, usize)>,
    active: Option<Active>,
    /// The running poll this watchdog first saw on the slot, and when (raw clock).
    first_seen: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Active {
    seq: u64,
    tid: i32,
    last_sample: u64,
    ended: bool,
}

/// Sends to the aggregator without blocking; what a full queue loses is counted (a sample as a
/// lost sample, a stall start or end as a lost stall record).
fn send(tx: &SyncSender<Msg>, shared: &Shared, msg: Msg) {
    let is_sample = matches!(msg, Msg::Sample { .. });
    if tx.try_send(msg).is_err() {
        let counter = if is_sample { &shared.samples_lost } else { &shared.stall_msgs_dropped };
        counter.fetch_add(1, Relaxed);
    }
}

/// Time between two scans: often enough to start sampling within a fraction of the threshold.
/// It is also the precision of an untimed poll's start, which the scans bound.
pub(crate) fn scan_period(c: &crate::probe::Config) -> Duration {
    (c.stall_threshold / 8).min(c.sample_interval).max(Duration::from_micros(250))
}

pub(crate) fn run(shared: Arc<Shared>, tx: SyncSender<Msg>, stop: Arc<AtomicBool>) {
    let c = &shared.config;
    let period = scan_period(c);
    let clk = clock();
    let sample_ticks = clk.ns_to_ticks(c.sample_interval.as_nanos() as u64);
    let request_timeout = clk.ns_to_ticks(50_000_000);
    let period_ticks = clk.ns_to_ticks(period.as_nanos() as u64);
    let mut watches: Vec<Watch> = (0..shared.slots.slots.len()).map(|_| Watch::default()).collect();
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    let mut unwinder = shared.signal.map(|_| crate::sampler::unwind::Unwinder::new());
    let mut prev_scan = now_raw();
    while !stop.load(Acquire) {
        std::thread::sleep(period);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
            if let Some(unwinder) = unwinder.as_mut() {
                collect_samples(&shared, &tx, unwinder, request_timeout);
            }
            prev_scan = scan(&shared, &tx, &mut watches, sample_ticks, period_ticks, prev_scan);
        }));
        if result.is_err() {
            shared.panics.fetch_add(1, Relaxed);
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
    request_timeout: u64,
) {
    let mut addrs = Vec::with_capacity(crate::sampler::unwind::MAX_FRAMES);
    let clk = clock();
    let costs = &shared.sampler_costs;
    let expired = crate::sampler::signal::collect(shared.id, now_raw(), request_timeout, |cap| {
        costs.captured.fetch_add(1, Relaxed);
        costs.stack_bytes.fetch_add(cap.stack.len() as u64, Relaxed);
        if cap.handler_ticks > 0 {
            costs.handler_ns.record(clk.ticks_to_ns(cap.handler_ticks));
        }
        // A sample whose poll had already ended when the signal landed shows another poll's
        // stack: drop it rather than blame the wrong code.
        if cap.got_seq != cap.want_seq || cap.stack.is_empty() {
            shared.samples_lost.fetch_add(1, Relaxed);
            return;
        }
        let began = now_raw();
        unwinder.unwind(cap.regs, cap.stack, &mut addrs);
        costs.unwind_ns.record(clk.ticks_to_ns(now_raw().saturating_sub(began)));
        costs.frames.fetch_add(addrs.len() as u64, Relaxed);
        if addrs.is_empty() {
            shared.samples_lost.fetch_add(1, Relaxed);
            return;
        }
        send(tx, shared, Msg::Sample { slot: cap.slot, seq: cap.want_seq, addrs: addrs.clone() });
    });
    shared.samples_lost.fetch_add(expired, Relaxed);
}

/// One scan of every slot. `prev_scan` is when the previous scan began; returns when this one
/// began.
fn scan(
    shared: &Shared,
    tx: &SyncSender<Msg>,
    watches: &mut [Watch],
    sample_ticks: u64,
    period_ticks: u64,
    prev_scan: u64,
) -> u64 {
    let now = now_raw();
    for (i, (slot, w)) in shared.slots.slots.iter().zip(watches.iter_mut()).enumerate() {
        let generation = slot.generation.load(Acquire);
        if generation != w.generation {
            w.generation = generation;
            w.stack = None;
        }
        let p = &slot.poll.0;
        let seq = p.seq.load(Acquire);
        if seq & 1 == 1 {
            let busy = &shared.slots.busy_ticks[i];
            busy.store(busy.load(Relaxed) + now.saturating_sub(prev_scan), Relaxed);
        }
        if let Some(a) = &mut w.active {
            if a.seq != seq || slot.tid.load(Acquire) != a.tid {
                a.ended = true;
            }
            // End a stall only once no sample request for it is in flight, so that every
            // sample reaches the aggregator before the end does.
            if a.ended && !sample_in_flight(shared, a.tid) {
                send(tx, shared, Msg::StallEnded { slot: i, seq: a.seq });
                w.active = None;
            }
        }
        if seq & 1 == 0 {
            continue;
        }
        let start_word = p.start.load(Relaxed);
        let (start, flags) = (start_word & !FLAG_MASK, (start_word & FLAG_MASK) as u32);
        let task = p.task.load(Relaxed);
        let loc = p.loc.load(Relaxed);
        let tid = slot.tid.load(Relaxed);
        fence(Acquire);
        if p.seq.load(Relaxed) != seq || tid == 0 {
            continue;
        }
        let est = match w.first_seen {
            Some((s, est)) if s == seq => est,
            _ => {
                // First seen now, and not by the previous scan, which read this slot after it
                // began: the poll started after `prev_scan`. If this thread was delayed, that
                // bound is older than one period; the later of the two never makes a short poll
                // look long, and is at most a period early for a regular scan.
                let est = prev_scan.max(now.saturating_sub(period_ticks));
                w.first_seen = Some((seq, est));
                est
            }
        };
        let timed = flags & FLAG_TIMED != 0;
        let start = if timed { start } else { est };
        if !timed && p.watched.load(Relaxed) != seq && now.saturating_sub(start) >= shared.maybe_long_ticks {
            // It may cross the threshold: have its end read the clock (`hooks::after_poll`).
            p.watched_start.store(start, Relaxed);
            p.watched.store(seq, Release);
        }
        if now.saturating_sub(start) < shared.threshold_ticks {
            continue;
        }
        if w.active.is_none() {
            w.active = Some(Active { seq, tid, last_sample: 0, ended: false });
            send(
                tx,
                shared,
                Msg::StallStarted(StallStart { slot: i, seq, start, task, loc, flags, tid, detected: now }),
            );
        }
        let Some(a) = w.active.as_mut().filter(|a| a.seq == seq && !a.ended) else {
            continue;
        };
        if now.saturating_sub(a.last_sample) < sample_ticks {
            continue;
        }
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        if let Some(signal) = shared.signal {
            use crate::sampler::signal;
            if signal::in_flight(shared.id, tid) {
                continue;
            }
            if w.stack.is_none() {
                w.stack = signal::stack_bounds(slot.pthread.load(Relaxed));
            }
            let Some(stack) = w.stack else {
                shared.samples_lost.fetch_add(1, Relaxed);
                a.last_sample = now;
                continue;
            };
            let req = signal::Request { probe: shared.id, slot: i, tid, seq: &p.seq, want_seq: seq, stack, now };
            if signal::request(signal, req).is_err() {
                shared.samples_lost.fetch_add(1, Relaxed);
            }
            a.last_sample = now;
        }
    }
    // Stalls in progress, for whoever must not wait on a stalled worker (task dumps).
    let stalled = watches.iter().filter(|w| w.active.as_ref().is_some_and(|a| !a.ended)).count();
    shared.polls_stalled.store(stalled, Release);
    now
}

fn sample_in_flight(_shared: &Shared, _tid: i32) -> bool {
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    if _shared.signal.is_some() {
        return crate::sampler::signal::in_flight(_shared.id, _tid);
    }
    false
}
