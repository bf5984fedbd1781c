//! Snapshot assembly on the aggregator thread: the slots' tables summed per location and per
//! worker, the poll-time corrections from exact long polls, the drop counters, and the process
//! description every snapshot and handshake carries.

use std::collections::HashMap;
use std::sync::atomic::Ordering::*;

use stallscope_wire as wire;
use stallscope_wire::WorkerStats;

use crate::aggregator::intmap::IntMap;
use crate::poll::clock::Clock;
use crate::poll::hist::TickSum;
use crate::state::Shared;

/// Corrections to the poll-time histograms from the stalls, which are known exactly: the hooks
/// time one poll in `timed_every` and count it `timed_every` times, so a location whose polls are
/// all long (one long poll per task) could go untimed for a long time and show no percentile at
/// all (P5 defect 9). Every stall whose end the hook read goes in once: an untimed one is added,
/// a timed one (already counted `timed_every` times) has the extra weight taken back. Polls
/// under the threshold stay an estimate from the timed ones; long polls are exact.
#[derive(Debug, Default)]
pub(crate) struct LongPolls {
    pub(crate) by_loc: HashMap<usize, Adj>,
    pub(crate) by_slot: HashMap<usize, Adj>,
}

/// Signed per-bucket changes to a [`TickSum`].
#[derive(Debug, Default)]
pub(crate) struct Adj {
    buckets: [i64; crate::poll::hist::BUCKETS],
    count: i64,
    sum: i64,
    max: u64,
}

impl LongPolls {
    pub(crate) fn add(&mut self, slot: usize, loc: usize, ticks: u64, timed: bool, timed_every: u32) {
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
    pub(crate) fn apply(&self, t: &mut TickSum) {
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
pub(crate) struct LocAgg {
    pub(crate) spawned: u64,
    pub(crate) terminated: u64,
    pub(crate) poll: TickSum,
    pub(crate) sched: TickSum,
}

/// The slots' per-thread tables summed into per-location and per-worker figures.
pub(crate) struct Sums {
    pub(crate) locs: IntMap<usize, LocAgg>,
    /// The locations past each slot's table.
    pub(crate) overflow: LocAgg,
    pub(crate) workers: Vec<WorkerStats>,
}

/// Sums every slot's location table (and the shared fallback slot's), with the workers'
/// poll-time histograms corrected by the exact long polls.
pub(crate) fn sum_slots(shared: &Shared, long_polls: &LongPolls, clk: &Clock) -> Sums {
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
        if let Some(adj) = long_polls.by_slot.get(&wi) {
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
    Sums { locs, overflow, workers }
}

/// What every bounded structure has lost so far, summed. Besides the structures' own counts:
/// `samples` and `stalls` count what was trimmed from updates too large for a frame (once per
/// client that lost it), `task_events` the terminate events evicted from the aggregator's
/// orphan map (`orphans_evicted`), `subscriber_updates` the updates a client's queue refused or
/// that could not be encoded for it.
pub(crate) fn drops(shared: &Shared, long_overrun: u64, untracked: u64, orphans_evicted: u64) -> wire::Drops {
    let losses = &shared.publisher.losses;
    wire::Drops {
        samples: shared.samples_lost.load(Relaxed) + losses.trimmed_samples.load(Relaxed),
        task_events: shared.slots.slots.iter().map(|s| s.ev_dropped.load(Relaxed)).sum::<u64>()
            + shared.slots.shared.ev_dropped.load(Relaxed)
            + orphans_evicted,
        threads_without_slot: shared.slots.no_slot.load(Relaxed),
        location_overflow: shared.slots.slots.iter().map(|s| s.loc_overflow.load(Relaxed)).sum::<u64>()
            + shared.slots.shared.loc_overflow.load(Relaxed),
        stalls: shared.stall_msgs_dropped.load(Relaxed) + long_overrun + losses.trimmed_stalls.load(Relaxed),
        untracked_tasks: untracked,
        probe_panics: shared.panics.load(Relaxed),
        subscriber_updates: shared.publisher.subscriber_drops.load(Relaxed),
    }
}

pub(crate) fn process_info(shared: &Shared) -> wire::ProcessInfo {
    let mut missing = Vec::new();
    if !cfg!(tokio_unstable) {
        missing.push(
            "stalls, stack samples, poll times and per-location task counts of spawned tasks: build with RUSTFLAGS=\"--cfg tokio_unstable\" \
             (Tokio's task hooks); only futures wrapped in instrument() and threads given to watch_thread() are watched"
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
        missing.push(if cfg!(panic = "unwind") {
            "loop lag: the runtime has no timer (use enable_time or enable_all)".to_string()
        } else {
            "loop lag: under panic = \"abort\" the probe cannot check a runtime for a timer without risking the \
             process; call probe.install(&mut builder) on its builder"
                .to_string()
        });
    } else if shared.runtime_gone.load(Acquire) {
        missing.push(
            "loop lag, runtime metrics and task dumps: the runtime the probe was started on has shut down (its \
             figures stopped there); start the probe again on the runtime that replaced it. Stalls are still \
             seen on every runtime the probe is installed on"
                .to_string(),
        );
    }
    missing.extend(shared.problems.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
    missing.extend(shared.threads.problems());
    let unmatched = crate::poll::instrument::UNMATCHED.load(Relaxed);
    if unmatched > 0 {
        missing.push(format!(
            "instrument(): {unmatched} futures not measured: without --cfg tokio_unstable the probe cannot tell which \
             of this process's probes a runtime belongs to"
        ));
    }
    missing.extend(client_losses(shared));
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
        stack_sampling: stack_sampling(shared),
    }
}

/// Whether stalls get native stacks: the handler is installed and some thread can stall where
/// the probe sees it. Without `tokio_unstable` there are no task hooks, so only threads given
/// to the probe by `watch_thread` or `instrument` count.
fn stack_sampling(shared: &Shared) -> bool {
    shared.signal.is_some() && (cfg!(tokio_unstable) || shared.slots.slots.iter().any(|s| s.tid.load(Relaxed) != 0))
}

/// What serving clients refused or lost, one line each, with the counts so far.
fn client_losses(shared: &Shared) -> Vec<String> {
    let c = &shared.config;
    let l = &shared.publisher.losses;
    let mut out = Vec::new();
    let refused = shared.clients_refused.load(Relaxed);
    if refused > 0 {
        out.push(format!(
            "socket server: {refused} connections refused (another user's, or more than max_clients = {} attached or in their handshake)",
            c.max_clients
        ));
    }
    let timed_out = l.clients_timed_out.load(Relaxed);
    if timed_out > 0 {
        out.push(format!(
            "socket server: {timed_out} clients disconnected for not reading: a write blocked for {:?} (client_write_timeout)",
            c.client_write_timeout
        ));
    }
    let failed = l.encode_failures.load(Relaxed);
    if failed > 0 {
        out.push(format!(
            "socket server: {failed} updates could not be encoded for a client, even trimmed (counted in drops.subscriber_updates)"
        ));
    }
    let (stalls, stacks) = (l.trimmed_stalls.load(Relaxed), l.trimmed_stacks.load(Relaxed));
    if stalls + stacks > 0 {
        out.push(format!(
            "socket server: {stalls} stall records and {stacks} stacks ({} samples) left out of updates larger than a {} MiB frame, per client (counted in drops.stalls and drops.samples)",
            l.trimmed_samples.load(Relaxed),
            stallscope_wire::frame::MAX_FRAME_BYTES >> 20
        ));
    }
    out
}

/// The executable's file name (`/proc/self/comm` is cut to 15 bytes).
pub(crate) fn process_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| std::fs::read_to_string("/proc/self/comm").map(|s| s.trim().to_string()).ok())
        .unwrap_or_default()
}
