//! Fixture states for the UI's snapshot tests and its render benchmark: realistic data pushed
//! through [`App::apply`] exactly as a probe's updates would be, at fixed times, so that screens
//! are deterministic.
#![doc(hidden)]

use stallscope_wire::{
    Alert, AlertFigure, AlertKind, AlertRecord, BlockedIn, Drops, Frame, FrameKind, Histogram, Interval, LagStats,
    LocationStats, PeakUnit, PoolStats, ProcessInfo, Received, RuntimeStats, Snapshot, StackCount, Stall, StallAnatomy,
    Update, WorkerStats,
};

use super::state::{App, Source};

/// 2025-11-21 04:40:00 UTC: the fixture's first tick.
pub const T0: u64 = 1_763_700_000_000;

/// A finished stall of one sample per count, its stacks given outermost first as `"a;b;c"`, each
/// frame's kind from `kind`: what the flame tests fold.
pub fn folded_stall(stacks: &[(&str, u64)], kind: impl Fn(&str) -> FrameKind) -> Stall {
    let frame = |name: &str| Frame { function: name.into(), file: None, line: None, inlined: false, kind: kind(name) };
    Stall {
        id: 1,
        start_unix_ms: 0,
        duration_ns: Some(1),
        elapsed_ns: 1,
        worker: 0,
        tid: 1,
        task: Some(1),
        spawned_at: "src/main.rs:1:1".into(),
        in_block_in_place: false,
        samples_lost: 0,
        anatomy: None,
        unobserved: false,
        stacks: stacks
            .iter()
            .map(|(s, count)| StackCount { frames: s.split(';').rev().map(frame).collect(), count: *count })
            .collect(),
    }
}

/// A histogram with `count` samples spread over buckets around `typical_ns`.
pub fn hist(count: u64, typical_ns: u64) -> Histogram {
    let upper_ns: Vec<u64> = (0..26).map(|i| 1_000u64 << i).collect();
    let mut counts = vec![0u64; upper_ns.len()];
    let i = upper_ns.iter().position(|u| *u >= typical_ns).unwrap_or(0);
    counts[i] = count * 7 / 10;
    if i + 1 < counts.len() {
        counts[i + 1] = count * 2 / 10;
    }
    if i + 3 < counts.len() {
        counts[i + 3] = count - count * 7 / 10 - count * 2 / 10;
    }
    Histogram { upper_ns, counts, count, sum_ns: count * typical_ns, max_ns: typical_ns * 9 }
}

fn frame(function: &str, file: &str, line: u32, kind: FrameKind) -> Frame {
    Frame { function: function.into(), file: Some(file.into()), line: Some(line), inlined: false, kind }
}

/// A stack of `user` (innermost last in the list given outermost first) under Tokio's poll.
fn stack(outer_to_inner: &[Frame], count: u64) -> StackCount {
    let mut frames: Vec<Frame> = outer_to_inner.to_vec();
    frames.reverse();
    StackCount { frames, count }
}

/// The three stalls of the fixture: a blocking sleep, a CPU loop and a mutex wait.
pub fn stalls() -> Vec<Stall> {
    let tokio =
        frame("tokio::runtime::task::core::Core<T,S>::poll", "tokio/src/runtime/task/core.rs", 331, FrameKind::Tokio);
    let handler = frame("checkout_api::handlers::quote::{{closure}}", "src/handlers.rs", 42, FrameKind::User);
    let fetch = frame("checkout_api::rates::fetch_rates_blocking", "src/rates.rs", 17, FrameKind::User);
    let sleep = frame("std::thread::sleep", "std/src/thread/mod.rs", 860, FrameKind::Std);
    let nanosleep = frame("nanosleep", "libc", 0, FrameKind::Library);
    let report = frame("checkout_api::report::render_report_cpu", "src/report.rs", 88, FrameKind::User);
    let fmt = frame("core::fmt::write", "core/src/fmt/mod.rs", 1200, FrameKind::Std);
    let cache = frame("checkout_api::cache::update_shared_cache", "src/cache.rs", 51, FrameKind::User);
    let lock = frame("std::sync::mutex::Mutex<T>::lock", "std/src/sync/mutex.rs", 317, FrameKind::Std);
    let futex = frame("syscall", "libc", 0, FrameKind::Library);
    let mk = |id: u64, at: u64, ms: u64, worker: u32, stacks: Vec<StackCount>, loc: &str| Stall {
        id,
        start_unix_ms: at,
        duration_ns: Some(ms * 1_000_000),
        elapsed_ns: ms * 1_000_000,
        worker,
        tid: 4243 + worker as i32,
        task: Some(100 + id),
        spawned_at: loc.into(),
        in_block_in_place: false,
        stacks,
        samples_lost: 0,
        anatomy: None,
        unobserved: false,
    };
    let ms = 1_000_000;
    let anatomy = |on_cpu: u64, waiting: u64, blocked: u64, blocked_in: Option<(&str, &str)>| StallAnatomy {
        on_cpu_ns: on_cpu * ms / 10,
        waiting_ns: waiting * ms / 10,
        blocked_ns: blocked * ms / 10,
        measured_ns: (on_cpu + waiting + blocked) * ms / 10 * 3 / 4,
        throttled_ns: Some(0),
        blocked_in: blocked_in
            .map(|(call, target)| BlockedIn { syscall: call.into(), target: Some(target.into()), samples: 20 })
            .into_iter()
            .collect(),
        cpu_starved: false,
    };
    let mut out = vec![
        mk(
            1,
            T0 + 12_250,
            52,
            0,
            vec![stack(&[tokio.clone(), handler.clone(), fetch.clone(), sleep.clone(), nanosleep.clone()], 24)],
            "src/server.rs:61:13",
        ),
        mk(
            2,
            T0 + 20_410,
            48,
            1,
            vec![
                stack(&[tokio.clone(), handler.clone(), report.clone(), fmt.clone()], 15),
                stack(&[tokio.clone(), handler.clone(), report.clone()], 7),
            ],
            "src/server.rs:61:13",
        ),
        mk(3, T0 + 27_930, 31, 0, vec![stack(&[tokio, handler, cache, lock, futex], 14)], "src/cache.rs:20:5"),
    ];
    out[0].anatomy = Some(anatomy(3, 1, 516, Some(("clock_nanosleep(2)", "(a sleep)"))));
    out[1].anatomy = Some(anatomy(452, 28, 0, None));
    out[2].anatomy = Some(anatomy(2, 0, 308, Some(("futex(2)", "(a lock, a condition variable or a channel)"))));
    out
}

/// The snapshot after `k` seconds.
pub fn snapshot(k: u64, stalls_so_far: &[Stall]) -> Snapshot {
    let at = T0 + k * 1000;
    let loc = |location: &str, spawned: u64, completed: u64, oldest_s: Option<u64>, poll_ns: u64| LocationStats {
        location: location.into(),
        spawned,
        completed,
        live: spawned - completed,
        oldest_live_ns: oldest_s.map(|s| s * 1_000_000_000),
        polls: spawned * 3,
        poll_time: hist(spawned * 3, poll_ns),
        schedule_latency: Some(hist(spawned * 3, poll_ns / 2)),
        leak_suspect: false,
        internal: false,
        blocking: false,
    };
    let mut watch = loc("src/watch.rs:88:5", 40 * k + 1, 1, Some(k), 4_000);
    watch.leak_suspect = k >= 5;
    let mut heartbeat = loc("stallscope-probe/src/lag.rs:31:5", 1, 0, Some(k), 2_000);
    heartbeat.internal = true;
    let locations = vec![
        loc("src/server.rs:61:13", 300 * k + 12, 300 * k, Some(1), 180_000),
        watch,
        loc("src/main.rs:30:5", 1, 0, Some(k + 3), 9_000),
        loc("src/cache.rs:20:5", 50 * k, 50 * k, None, 60_000),
        heartbeat,
    ];
    let stalled_ns: u64 = stalls_so_far.iter().filter_map(|s| s.duration_ns).sum();
    let mut alerts = Vec::new();
    if let Some(s) = stalls_so_far.last() {
        alerts.push(Alert {
            kind: AlertKind::BlockingPoll,
            subject: "checkout_api::rates::fetch_rates_blocking".into(),
            summary: format!(
                "blocking poll: {} stalls, worst {} ms, in checkout_api::rates::fetch_rates_blocking (src/rates.rs:17)",
                stalls_so_far.len(),
                s.duration_ns.unwrap_or(0) / 1_000_000
            ),
            what_to_do: AlertKind::BlockingPoll.what_to_do().into(),
        });
    }
    if k >= 5 {
        alerts.push(Alert {
            kind: AlertKind::LeakSuspect,
            subject: "src/watch.rs:88:5".into(),
            summary: format!("task leak suspect: {} live tasks spawned at src/watch.rs:88:5", 40 * k),
            what_to_do: AlertKind::LeakSuspect.what_to_do().into(),
        });
    }
    let db_waiters = if k >= 8 { 14 } else { 0 };
    if db_waiters > 0 {
        alerts.push(Alert {
            kind: AlertKind::PoolSaturated,
            subject: "db".into(),
            summary: "pool saturated: db has 10/10 in use and 14 waiting (wait p99 48.0 ms)".into(),
            what_to_do: AlertKind::PoolSaturated.what_to_do().into(),
        });
    }
    let worker = |index: u32, busy: f64| WorkerStats {
        index,
        tid: 4243 + index as i32,
        polls: 1000 * k,
        busy_ns: (busy * (k * 1_000_000_000) as f64) as u64,
        poll_time: hist(1000 * k, 50_000),
    };
    Snapshot {
        schema: 1,
        seq: k,
        at_unix_ms: at,
        uptime_ns: (k + 5) * 1_000_000_000,
        process: process(),
        workers: vec![worker(0, 0.93), worker(1, 0.41)],
        locations,
        stalls: stalls_so_far.to_vec(),
        stall_count: stalls_so_far.len() as u64,
        stalled_ns,
        lag: LagStats { period_ns: 25_000_000, lag: hist(40 * k, 300_000), last_ns: 250_000 },
        runtime: Some(RuntimeStats {
            workers: 2,
            live_tasks: 0,
            busy_ratio: 0.67,
            global_queue_depth: 3,
            local_queue_depth: 7,
            steals: 120 * k,
            parks: 30 * k,
            polls: 2000 * k,
            blocking_threads: 4,
            idle_blocking_threads: if k >= 8 { 0 } else { 2 },
            blocking_queue_depth: if k >= 8 { 3 } else { 0 },
            busy_ns: ((0.93 + 0.41) * (k * 1_000_000_000) as f64) as u64,
            worker_busy_ns: vec![
                (0.93 * (k * 1_000_000_000) as f64) as u64,
                (0.41 * (k * 1_000_000_000) as f64) as u64,
            ],
        }),
        pools: vec![PoolStats {
            name: "db".into(),
            in_use: if k >= 8 { 10 } else { 4 },
            idle: if k >= 8 { 0 } else { 6 },
            max: 10,
            waiters: db_waiters,
            acquired: 90 * k,
            wait_time: hist(90 * k, 2_000_000),
        }],
        alert_history: history(k, at, &alerts),
        alerts,
        drops: Drops::default(),
        alert_history_evicted: 0,
    }
}

/// The fixture's alert history at snapshot `k`: a blocking-pool starvation that passed (from
/// snapshot 3 to 5), then a record per active alert.
fn history(k: u64, at: u64, alerts: &[Alert]) -> Vec<AlertRecord> {
    let t = |j: u64| at - (k - j) * 1000;
    let mut out = Vec::new();
    if k >= 3 {
        out.push(AlertRecord {
            kind: AlertKind::BlockingPoolStarved,
            subject: "blocking pool".into(),
            first_unix_ms: t(3),
            last_unix_ms: t(k.min(5)),
            count: 1,
            active_ns: (k.min(5) - 3 + 1) * 1_000_000_000,
            peak: AlertFigure { value: 22, unit: PeakUnit::Queued },
            peak_unix_ms: t(3.max(k.min(4))),
            peak_summary: "blocking pool starved: 22 queued, 4 threads all busy".into(),
            latest: AlertFigure { value: 5, unit: PeakUnit::Queued },
            latest_summary: "blocking pool starved: 5 queued, 4 threads all busy".into(),
            what_to_do: AlertKind::BlockingPoolStarved.what_to_do().into(),
            active: k <= 5,
        });
    }
    for a in alerts {
        out.push(AlertRecord {
            kind: a.kind,
            subject: a.subject.clone(),
            first_unix_ms: at,
            last_unix_ms: at,
            count: 1,
            active_ns: 1_000_000_000,
            peak_unix_ms: at,
            peak_summary: a.summary.clone(),
            latest_summary: a.summary.clone(),
            what_to_do: a.what_to_do.clone(),
            active: true,
            ..AlertRecord::default()
        });
    }
    out
}

/// The fixture's process.
pub fn process() -> ProcessInfo {
    ProcessInfo {
        pid: 4242,
        name: "checkout-api".into(),
        probe_version: "0.1.0".into(),
        tokio_unstable: true,
        missing: Vec::new(),
        stall_threshold_ns: 10_000_000,
        sample_interval_ns: 2_000_000,
        stack_sampling: true,
    }
}

/// The updates of a 30-second session: a tick a second, stalls announced as they start and end.
pub fn updates() -> Vec<Received> {
    let all = stalls();
    let mut out = Vec::new();
    for k in 0..=30u64 {
        let at = T0 + k * 1000;
        let seen: Vec<Stall> = all.iter().filter(|s| s.start_unix_ms < at).cloned().collect();
        for s in all.iter().filter(|s| s.start_unix_ms >= at.saturating_sub(1000) && s.start_unix_ms < at) {
            let mut started = s.clone();
            started.duration_ns = None;
            started.elapsed_ns = 10_000_000;
            started.stacks.clear();
            out.push(Received::Update(Update::StallStarted(started)));
            out.push(Received::Update(Update::StallEnded(s.clone())));
        }
        let snapshot = snapshot(k, &seen);
        let interval = Interval {
            seq: k,
            duration_ns: 1_000_000_000,
            stalled_ns: seen
                .iter()
                .filter(|s| s.start_unix_ms >= at.saturating_sub(1000))
                .filter_map(|s| s.duration_ns)
                .sum(),
            lag: hist(40, 200_000 + (k % 7) * 150_000),
            ..Interval::default()
        };
        out.push(Received::Update(Update::Tick { snapshot: Box::new(snapshot), interval: Box::new(interval) }));
    }
    out
}

/// The app after [`updates`], connected, on the Overview.
pub fn app() -> App {
    let mut app = App::new(Source::Live { target: "4242".into() });
    app.status = super::state::ConnStatus::Connected;
    for r in updates() {
        app.apply(r);
    }
    app
}

/// A large state for the render benchmark: `live` live tasks over `locations` locations and
/// stalls whose flame graph has about `nodes` nodes.
pub fn large(live: u64, locations: usize, nodes: usize) -> App {
    let mut s = snapshot(30, &[]);
    let per = live / locations as u64;
    s.locations = (0..locations)
        .map(|i| LocationStats {
            location: format!("src/module_{}/handler_{i}.rs:{}:{}", i % 37, 10 + i, 5 + i % 9),
            spawned: per + 1000,
            completed: 1000,
            live: per,
            oldest_live_ns: Some(i as u64 * 1_000_000),
            polls: 5000 + i as u64,
            poll_time: hist(5000, 10_000 + i as u64 * 100),
            schedule_latency: Some(hist(5000, 5_000)),
            leak_suspect: i % 97 == 0,
            internal: false,
            blocking: false,
        })
        .collect();
    // Stacks six frames deep: the outer three shared by groups of 1000, 100 and 10 leaves, the
    // inner three distinct per leaf, so the tree has about `nodes` nodes.
    let leaves = (nodes * 1000 / 3111).max(1);
    let stacks: Vec<StackCount> = (0..leaves)
        .map(|l| {
            let outer = [l / 1000, l / 100, l / 10];
            let mut frames: Vec<Frame> = outer
                .iter()
                .enumerate()
                .map(|(d, g)| frame(&format!("app::layer{d}::group_{g}"), "src/app.rs", d as u32, FrameKind::User))
                .collect();
            frames.extend((3..6).map(|d| {
                let kind = if d == 5 { FrameKind::Std } else { FrameKind::Library };
                frame(&format!("lib::layer{d}::leaf_{l}"), "src/lib.rs", d as u32, kind)
            }));
            frames.reverse();
            StackCount { frames, count: 1 + (l % 13) as u64 }
        })
        .collect();
    let stall = Stall {
        id: 1,
        start_unix_ms: T0 + 29_000,
        duration_ns: Some(500_000_000),
        elapsed_ns: 500_000_000,
        worker: 0,
        tid: 1,
        task: Some(1),
        spawned_at: "src/main.rs:1:1".into(),
        in_block_in_place: false,
        stacks,
        samples_lost: 0,
        anatomy: None,
        unobserved: false,
    };
    s.stalls = vec![stall];
    let mut app = App::new(Source::Live { target: "bench".into() });
    app.status = super::state::ConnStatus::Connected;
    for r in updates() {
        app.apply(r);
    }
    app.apply(Received::Update(Update::Tick { snapshot: Box::new(s), interval: Box::new(Interval::default()) }));
    app
}
