//! Fixtures for the client's tests: a realistic, deterministic session of updates built from the
//! wire types (three ticks, stalls of each kind, a dropped notice), recordings made from it, and
//! golden-file comparison with a `BLESS=1` switch.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use stallscope_wire::recording::{RecordingHeader, RecordingOptions, RecordingReader, RecordingWriter};
use stallscope_wire::{
    Alert, AlertKind, BlockedIn, Drops, Frame, FrameKind, Histogram, Interval, LagStats, LocationDelta, LocationStats,
    PoolStats, ProcessInfo, Received, RuntimeStats, Snapshot, StackCount, Stall, StallAnatomy, Update, WorkerStats,
    SCHEMA_VERSION,
};

/// When the fixture recording starts (2025-11-21T04:40:00Z).
pub const T0: u64 = 1_763_700_000_000;
const MS: u64 = 1_000_000;

// === Golden files ===

/// Compares `actual` with `tests/data/<name>`; with `BLESS=1` in the environment, rewrites the
/// file instead. On a mismatch the actual output is left in the target's temp dir.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    if std::env::var_os("BLESS").is_some_and(|v| v != "0") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run the test with BLESS=1 to create it", path.display()));
    if expected != actual {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&out, actual).unwrap();
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{} differs from the output (first at line {}):\n  expected: {:?}\n  actual:   {:?}\n\
             the output is in {}; run with BLESS=1 to accept it",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
            out.display()
        );
    }
}

// === Frames ===

fn user(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("/home/build/shopd/{file}")),
        line: Some(line),
        inlined: false,
        kind: FrameKind::User,
    }
}

fn std_frame(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("/rustc/4a4ef493e3a1488c6e321570238084b38948f6db/library/{file}")),
        line: Some(line),
        inlined,
        kind: FrameKind::Std,
    }
}

fn tokio_frame(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some(format!("/home/build/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/{file}")),
        line: Some(line),
        inlined: false,
        kind: FrameKind::Tokio,
    }
}

fn lib(function: &str) -> Frame {
    Frame { function: function.into(), file: None, line: None, inlined: false, kind: FrameKind::Library }
}

/// Tokio's frames under every task poll (outermost last).
fn tokio_root() -> Vec<Frame> {
    vec![
        tokio_frame("tokio::runtime::task::core::Core<T,S>::poll", "runtime/task/core.rs", 331),
        tokio_frame("tokio::runtime::task::harness::Harness<T,S>::poll", "runtime/task/harness.rs", 153),
        tokio_frame(
            "tokio::runtime::scheduler::multi_thread::worker::Context::run_task",
            "runtime/scheduler/multi_thread/worker.rs",
            608,
        ),
        tokio_frame(
            "tokio::runtime::scheduler::multi_thread::worker::Context::run",
            "runtime/scheduler/multi_thread/worker.rs",
            543,
        ),
    ]
}

fn stack(inner: Vec<Frame>) -> Vec<Frame> {
    let mut v = inner;
    v.extend(tokio_root());
    v
}

/// `std::thread::sleep` called from `load_cart` (the classic blocking poll).
fn sleep_stack(innermost: &str) -> Vec<Frame> {
    stack(vec![
        lib(innermost),
        std_frame("std::sys::pal::unix::thread::Thread::sleep", "std/src/sys/pal/unix/thread.rs", 254, false),
        std_frame("std::thread::sleep", "std/src/thread/mod.rs", 897, true),
        user("shopd::checkout::load_cart", "src/checkout.rs", 41),
        user("shopd::checkout::handle_order::{{closure}}", "src/checkout.rs", 88),
    ])
}

/// A CPU loop hashing in `rank` (with a `;` inside a type, which must not split frames).
fn cpu_stack(hashing: bool) -> Vec<Frame> {
    let mut inner = Vec::new();
    if hashing {
        inner.push(lib("sha2::sha256::compress256"));
        inner.push(lib("<[u8; 32] as digest::Digest>::update"));
    }
    inner.push(user("shopd::search::rank", "src/search.rs", 120));
    inner.push(user("shopd::search::query::{{closure}}", "src/search.rs", 64));
    stack(inner)
}

/// A contended `std::sync::Mutex` in `refresh_token`, with an unsymbolized frame.
fn mutex_stack() -> Vec<Frame> {
    stack(vec![
        lib("syscall"),
        std_frame("std::sys::sync::mutex::futex::Mutex::lock_contended", "std/src/sys/sync/mutex/futex.rs", 88, false),
        std_frame("std::sync::mutex::Mutex<T>::lock", "std/src/sync/mutex.rs", 317, true),
        user("shopd::sessions::refresh_token", "src/sessions.rs", 57),
        Frame { function: "0x7f3a12c4e5d0".into(), file: None, line: None, inlined: false, kind: FrameKind::Unknown },
        user("shopd::sessions::serve::{{closure}}", "src/sessions.rs", 19),
    ])
}

// === Stalls ===

#[allow(clippy::too_many_arguments)]
fn stall(
    id: u64,
    start_ms: u64,
    ms: u64,
    worker: u32,
    task: Option<u64>,
    at: &str,
    stacks: Vec<(Vec<Frame>, u64)>,
) -> Stall {
    Stall {
        id,
        start_unix_ms: T0 + start_ms,
        duration_ns: Some(ms * MS),
        elapsed_ns: ms * MS,
        worker,
        tid: 4300 + worker as i32,
        task,
        spawned_at: format!("/home/build/shopd/{at}"),
        in_block_in_place: false,
        stacks: stacks.into_iter().map(|(frames, count)| StackCount { frames, count }).collect(),
        samples_lost: 0,
        anatomy: None,
        unobserved: false,
    }
}

/// The same stall as first announced: still running, no samples yet.
fn started(s: &Stall, elapsed_ms: u64) -> Stall {
    Stall { duration_ns: None, elapsed_ns: elapsed_ms * MS, stacks: Vec::new(), ..s.clone() }
}

/// The stalls of the session, by id.
pub fn stalls() -> Vec<Stall> {
    let mut bip =
        stall(6, 1700, 60, 3, Some(211), "src/reports.rs:77:9", vec![(sleep_stack("__GI___clock_nanosleep"), 55)]);
    bip.in_block_in_place = true;
    let mut running = stall(5, 2050, 15, 0, Some(17), "src/checkout.rs:20:5", vec![]);
    running.duration_ns = None;
    let mut s3 = stall(3, 1000, 95, 2, None, "src/sessions.rs:12:5", vec![(mutex_stack(), 88)]);
    s3.samples_lost = 2;
    s3.anatomy = Some(anatomy(95, 0.2, 0.3, Some(("futex(2)", "(a lock, a condition variable or a channel)")), false));
    let mut s1 = stall(
        1,
        300,
        212,
        1,
        Some(17),
        "src/checkout.rs:20:5",
        vec![(sleep_stack("__GI___clock_nanosleep"), 180), (sleep_stack("__nanosleep"), 20)],
    );
    s1.anatomy = Some(anatomy(212, 0.1, 0.4, Some(("read(2)", "/var/lib/shopd/carts.db")), false));
    let mut s2 =
        stall(2, 800, 48, 0, Some(93), "src/search.rs:33:13", vec![(cpu_stack(true), 30), (cpu_stack(false), 15)]);
    s2.anatomy = Some(anatomy(48, 44.5, 3.1, None, false));
    // A poll that only waited for a CPU: it blames no code.
    let mut s4 = stall(4, 1500, 30, 1, Some(18), "src/checkout.rs:20:5", vec![(cpu_stack(false), 3)]);
    s4.anatomy = Some(anatomy(30, 1.5, 28.0, None, true));
    vec![s1, s2, s3, s4, running, bip]
}

/// An anatomy of a `wall_ms` stall with `on_cpu_ms` on CPU and `waiting_ms` waiting (the rest
/// blocked, in `blocked_in` if given).
fn anatomy(
    wall_ms: u64,
    on_cpu_ms: f64,
    waiting_ms: f64,
    blocked_in: Option<(&str, &str)>,
    starved: bool,
) -> StallAnatomy {
    let on_cpu_ns = (on_cpu_ms * MS as f64) as u64;
    let waiting_ns = (waiting_ms * MS as f64) as u64;
    StallAnatomy {
        on_cpu_ns,
        waiting_ns,
        blocked_ns: wall_ms * MS - on_cpu_ns - waiting_ns,
        measured_ns: wall_ms * MS * 4 / 5,
        throttled_ns: Some(0),
        blocked_in: blocked_in
            .map(|(call, target)| BlockedIn { syscall: call.into(), target: Some(target.into()), samples: 40 })
            .into_iter()
            .collect(),
        cpu_starved: starved,
    }
}

// === Ticks ===

/// A histogram of `values` (ns) over the probe's 26 log buckets (1 µs << i).
pub fn hist(values: &[(u64, u64)]) -> Histogram {
    let upper_ns: Vec<u64> = (0..26).map(|i| 1_000u64 << i).collect();
    let mut counts = vec![0u64; 26];
    let (mut count, mut sum_ns, mut max_ns) = (0, 0, 0);
    for &(v, n) in values {
        let i = upper_ns.iter().position(|u| v <= *u).unwrap_or(25);
        counts[i] += n;
        count += n;
        sum_ns += v * n;
        max_ns = max_ns.max(v);
    }
    Histogram { upper_ns, counts, count, sum_ns, max_ns }
}

pub fn process() -> ProcessInfo {
    ProcessInfo {
        pid: 4242,
        name: "shopd".into(),
        probe_version: "0.1.0".into(),
        tokio_unstable: true,
        missing: vec!["task dumps: built without the taskdump feature".into()],
        stall_threshold_ns: 10 * MS,
        sample_interval_ns: MS,
        stack_sampling: true,
    }
}

fn location(at: &str, spawned: u64, completed: u64, polls: u64, slow_ms: u64) -> LocationStats {
    LocationStats {
        location: format!("/home/build/shopd/{at}"),
        spawned,
        completed,
        live: spawned - completed,
        oldest_live_ns: (spawned > completed).then_some(41_000 * MS),
        polls,
        poll_time: hist(&[(3_000, polls.saturating_sub(5)), (900_000, 4), (slow_ms * MS, 1)]),
        schedule_latency: Some(hist(&[(20_000, polls)])),
        leak_suspect: false,
        internal: false,
        blocking: false,
    }
}

/// Tick `seq` (1, 2 or 3) at `T0 + at_ms`, with the recent stalls `recent`.
pub fn tick(seq: u64, at_ms: u64, recent: Vec<Stall>, interval_stalls: Vec<Stall>) -> Update {
    let k = seq;
    let mut checkout = location("src/checkout.rs:20:5", 400 * k, 400 * k - 150 * k, 3000 * k, 212);
    checkout.leak_suspect = k >= 2;
    let mut heartbeat = location("probe/src/lag.rs:40:9", 1, 0, 100 * k, 1);
    heartbeat.internal = true;
    let mut files = location("src/reports.rs:90:5", 12 * k, 12 * k, 12 * k, 8);
    files.blocking = true;
    files.schedule_latency = None;
    let locations = vec![
        checkout,
        location("src/search.rs:33:13", 900 * k, 900 * k, 5000 * k, 48),
        location("src/sessions.rs:12:5", 1, 0, 700 * k, 95),
        files,
        heartbeat,
    ];
    let workers = (0..4)
        .map(|i| WorkerStats {
            index: i,
            tid: 4300 + i as i32,
            polls: 2500 * k,
            busy_ns: 2500 * k * 40_000,
            poll_time: hist(&[(2_000, 2400 * k), (700_000, 99 * k), (60 * MS, 1)]),
        })
        .collect();
    let snapshot = Snapshot {
        schema: SCHEMA_VERSION,
        seq,
        at_unix_ms: T0 + at_ms,
        uptime_ns: (41_000 + at_ms) * MS,
        process: process(),
        workers,
        locations,
        stall_count: 30 + recent.len() as u64,
        stalled_ns: 2_000 * MS,
        lag: LagStats {
            period_ns: 10 * MS,
            lag: hist(&[(50_000, 90 * k), (2 * MS, 8 * k), (205 * MS, 1)]),
            last_ns: if seq == 2 { 3 * MS } else { 80_000 },
        },
        runtime: Some(RuntimeStats {
            workers: 4,
            live_tasks: 260 * k,
            busy_ratio: 0.42,
            global_queue_depth: 3,
            local_queue_depth: 17,
            steals: 40,
            parks: 300,
            polls: 10_000,
            blocking_threads: 8,
            idle_blocking_threads: if seq == 3 { 0 } else { 2 },
            blocking_queue_depth: if seq == 3 { 4 } else { 0 },
            busy_ns: 4 * (41_000 + at_ms) * MS * 42 / 100,
            worker_busy_ns: vec![(41_000 + at_ms) * MS * 42 / 100; 4],
        }),
        pools: vec![
            PoolStats {
                name: "db".into(),
                in_use: 16,
                idle: 0,
                max: 16,
                waiters: 3 * k,
                acquired: 9000 * k,
                wait_time: hist(&[(100_000, 8000 * k), (25 * MS, 40 * k)]),
            },
            PoolStats {
                name: "redis".into(),
                in_use: 2,
                idle: 6,
                max: 8,
                waiters: 0,
                acquired: 20_000 * k,
                wait_time: hist(&[(5_000, 20_000 * k)]),
            },
        ],
        alerts: alerts(seq),
        stalls: recent,
        drops: Drops { samples: 2 * (k - 1), subscriber_updates: 3 * (k / 2), ..Drops::default() },
        alert_history: Vec::new(),
        alert_history_evicted: 0,
    };
    let interval = Interval {
        seq,
        duration_ns: 100 * MS,
        locations: vec![LocationDelta {
            location: "/home/build/shopd/src/checkout.rs:20:5".into(),
            spawned: 40,
            completed: 25,
            polls: 300,
            poll_time: hist(&[(3_000, 300)]),
        }],
        stalls: interval_stalls,
        stalled_ns: 212 * MS,
        lag: hist(&[(50_000, 9)]),
        drops: Drops::default(),
    };
    Update::Tick { snapshot: Box::new(snapshot), interval: Box::new(interval) }
}

fn alerts(seq: u64) -> Vec<Alert> {
    let blocking = Alert {
        kind: AlertKind::BlockingPoll,
        subject: "shopd::checkout::load_cart".into(),
        summary: "blocking poll: 212.0 ms in shopd::checkout::load_cart (src/checkout.rs:41), task spawned at src/checkout.rs:20:5".into(),
        what_to_do: "A poll ran without yielding, so every task queued on that worker waited. Move blocking calls to \
                     tokio::task::spawn_blocking."
            .into(),
    };
    let leak = Alert {
        kind: AlertKind::LeakSuspect,
        subject: "/home/build/shopd/src/checkout.rs:20:5".into(),
        summary: "task leak suspect: 500 live tasks spawned at /home/build/shopd/src/checkout.rs:20:5".into(),
        what_to_do: "Tasks spawned here keep piling up. Bound them with a JoinSet, a Semaphore or a timeout.".into(),
    };
    let pool = Alert {
        kind: AlertKind::PoolSaturated,
        subject: "db".into(),
        summary: "pool saturated: db has 16/16 in use and 6 waiting (wait p99 32.8 ms)".into(),
        what_to_do: "Every unit of the pool is handed out and callers queue for it.".into(),
    };
    match seq {
        1 => vec![],
        2 => vec![blocking, leak],
        _ => vec![blocking, leak, pool],
    }
}

/// The whole session as a subscriber sees it, in order: ticks, stall starts and ends, a drop
/// notice and an error message.
pub fn session() -> Vec<Received> {
    let s = stalls();
    let by = |id: u64| s.iter().find(|x| x.id == id).unwrap().clone();
    let u = Received::Update;
    vec![
        u(tick(1, 100, vec![], vec![])),
        u(Update::StallStarted(started(&by(1), 10))),
        u(Update::StallEnded(by(1))),
        u(Update::StallEnded(by(2))),
        u(tick(2, 1100, vec![by(1), by(2), started(&by(3), 40)], vec![by(2), started(&by(3), 40)])),
        Received::Dropped { intervals: 3 },
        u(Update::StallEnded(by(3))),
        u(Update::StallEnded(by(4))),
        u(Update::StallStarted(started(&by(6), 10))),
        u(Update::StallEnded(by(6))),
        u(Update::StallStarted(by(5))),
        Received::Error { message: "task dumps are not served yet".into() },
        u(tick(3, 2100, vec![by(1), by(2), by(3), by(4), by(6), by(5)], vec![by(6), by(5)])),
    ]
}

/// The header the fixture recordings carry.
pub fn header() -> RecordingHeader {
    let mut h = RecordingHeader::new(process(), "stallscope-tests");
    h.created_unix_ms = T0;
    h
}

/// The session written as a recording (a keyframe every `keyframe_every` records).
pub fn recording_bytes(keyframe_every: u32) -> Vec<u8> {
    let options = RecordingOptions::default().keyframe_every(keyframe_every);
    let mut w = RecordingWriter::new(Vec::new(), &header(), options).unwrap();
    for r in session() {
        w.write_received(&r).unwrap();
    }
    w.into_inner().unwrap()
}

/// Offsets of every record in a recording.
pub fn record_offsets(bytes: &[u8]) -> Vec<u64> {
    RecordingReader::new(bytes).unwrap().map(|r| r.offset).collect()
}
