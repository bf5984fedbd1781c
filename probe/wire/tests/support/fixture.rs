//! Realistic updates for the wire tests and the codec bench.
//!
//! Shared by `tests/*.rs` (as `mod support;`) and `benches/codec.rs` (through `#[path]`), so it
//! must not depend on anything but `stallscope-wire` itself. Everything is deterministic: a seeded
//! xorshift generator picks the numbers, so two calls with the same seed build equal values.
#![allow(dead_code)]

use stallscope_wire::{
    Alert, AlertFigure, AlertKind, AlertRecord, BlockedIn, Drops, Frame, FrameKind, Histogram, Interval, LagStats,
    LocationDelta, LocationStats, PeakUnit, PoolStats, ProcessInfo, RuntimeStats, Snapshot, StackCount, Stall,
    StallAnatomy, TaskDump, TaskDumpLimits, TaskGroup, Update, WorkerStats, SCHEMA_VERSION,
};

/// Spawn locations in a realistic tick.
pub const LOCATIONS: usize = 50;
/// Stalls in a snapshot's recent-stalls list.
pub const STALLS: usize = 40;
/// Distinct stacks per stall.
pub const STACKS_PER_STALL: usize = 5;
/// Frames per stack.
pub const FRAMES_PER_STACK: usize = 25;
/// Histogram buckets (the probe's log buckets).
pub const BUCKETS: usize = 26;
/// Runtime worker threads.
pub const WORKERS: usize = 8;

/// A small deterministic xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced by a fixed constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p_percent` / 100.
    pub fn chance(&mut self, p_percent: u64) -> bool {
        self.below(100) < p_percent
    }
}

/// The probe's bucket bounds: 26 log buckets from 1 µs to ~34 s (powers of two).
pub fn bucket_bounds() -> Vec<u64> {
    (0..BUCKETS as u32).map(|i| 1_000u64 << i).collect()
}

/// A histogram with `count` values spread the way poll times are (most short, a long tail).
pub fn histogram(rng: &mut Rng, count: u64) -> Histogram {
    let upper_ns = bucket_bounds();
    let mut counts = vec![0u64; BUCKETS];
    let mut left = count;
    let mut sum_ns = 0u64;
    let mut max_ns = 0u64;
    for (i, c) in counts.iter_mut().enumerate() {
        if left == 0 {
            break;
        }
        // Roughly halve what is left at each bucket after the first few.
        let take = if i + 1 == BUCKETS {
            left
        } else if i < 3 {
            left / 4 + rng.below(left / 8 + 1)
        } else {
            left / 2
        };
        *c = take;
        left -= take;
        if take > 0 {
            let mid = upper_ns[i] - upper_ns[i] / 4;
            sum_ns = sum_ns.saturating_add(take.saturating_mul(mid));
            max_ns = upper_ns[i] - rng.below(upper_ns[i] / 2);
        }
    }
    Histogram { upper_ns, counts, count, sum_ns, max_ns }
}

const CRATES: &[&str] = &["checkout", "inventory", "payments", "search", "sessions", "notify", "billing"];
const VERBS: &[&str] = &["handle", "load", "store", "refresh", "validate", "render", "fetch", "flush", "compute"];
const NOUNS: &[&str] = &["order", "cart", "user", "token", "index", "page", "report", "batch", "invoice"];

/// A pool of frames that stacks are drawn from: user code, Tokio, std and libraries, with
/// realistic long names and paths.
pub fn frame_pool(rng: &mut Rng) -> Vec<Frame> {
    let mut pool = Vec::new();
    for c in CRATES {
        for v in VERBS {
            let n = NOUNS[rng.below(NOUNS.len() as u64) as usize];
            pool.push(Frame {
                function: format!("shopd::{c}::{v}_{n}::{{{{closure}}}}"),
                file: Some(format!("/home/build/shopd/src/{c}/{v}.rs")),
                line: Some(10 + rng.below(400) as u32),
                inlined: rng.chance(20),
                kind: FrameKind::User,
            });
        }
    }
    let tokio = [
        "tokio::runtime::task::core::Core<T,S>::poll::{{closure}}",
        "tokio::runtime::task::harness::Harness<T,S>::poll",
        "tokio::runtime::scheduler::multi_thread::worker::Context::run_task",
        "tokio::runtime::scheduler::multi_thread::worker::Context::run",
        "tokio::runtime::context::scoped::Scoped<T>::set",
        "tokio::runtime::blocking::pool::Inner::run",
        "tokio::sync::mutex::Mutex<T>::lock::{{closure}}",
        "tokio::net::tcp::stream::TcpStream::poll_read_priv",
    ];
    for f in tokio {
        pool.push(Frame {
            function: f.to_string(),
            file: Some(format!(
                "/home/build/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.0/src/{}.rs",
                f.split("::").nth(1).unwrap_or("lib")
            )),
            line: Some(100 + rng.below(900) as u32),
            inlined: rng.chance(30),
            kind: FrameKind::Tokio,
        });
    }
    let std = [
        "std::thread::sleep",
        "std::sys::pal::unix::thread::Thread::sleep",
        "std::sync::mutex::Mutex<T>::lock",
        "std::sys::sync::mutex::futex::Mutex::lock_contended",
        "std::io::Read::read_to_end",
        "std::fs::read_to_string::inner",
        "core::ops::function::FnOnce::call_once",
        "alloc::vec::Vec<T,A>::extend_from_slice",
    ];
    for f in std {
        pool.push(Frame {
            function: f.to_string(),
            file: Some(format!("/rustc/4a4ef493e3a1488c6e321570238084b38948f6db/library/{}.rs", f.replace("::", "/"))),
            line: Some(rng.below(1200) as u32),
            inlined: rng.chance(40),
            kind: FrameKind::Std,
        });
    }
    for f in ["__GI___clock_nanosleep", "__nanosleep", "syscall", "__lll_lock_wait", "read", "getaddrinfo"] {
        pool.push(Frame { function: f.to_string(), file: None, line: None, inlined: false, kind: FrameKind::Library });
    }
    for f in [
        "serde_json::de::from_trait",
        "regex::Regex::is_match",
        "sha2::sha256::compress256",
        "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch",
    ] {
        pool.push(Frame {
            function: f.to_string(),
            file: Some(format!(
                "/home/build/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/{}/src/lib.rs",
                f.split("::").next().unwrap()
            )),
            line: Some(rng.below(3000) as u32),
            inlined: rng.chance(50),
            kind: FrameKind::Library,
        });
    }
    pool.push(Frame {
        function: "0x7f3a12c4e5d0".into(),
        file: None,
        line: None,
        inlined: false,
        kind: FrameKind::Unknown,
    });
    pool
}

/// The spawn location of index `i` (`file:line:col`).
pub fn location(i: usize) -> String {
    let c = CRATES[i % CRATES.len()];
    let v = VERBS[(i / CRATES.len()) % VERBS.len()];
    format!("/home/build/shopd/src/{c}/{v}.rs:{}:{}", 20 + i * 7, 5 + i % 30)
}

/// One stack: a few innermost blocking frames, some user frames, then the Tokio and std
/// frames every task shares near the root.
fn stack(rng: &mut Rng, pool: &[Frame]) -> Vec<Frame> {
    let user: Vec<&Frame> = pool.iter().filter(|f| f.kind == FrameKind::User).collect();
    let tokio: Vec<&Frame> = pool.iter().filter(|f| f.kind == FrameKind::Tokio).collect();
    let other: Vec<&Frame> = pool.iter().filter(|f| !matches!(f.kind, FrameKind::User | FrameKind::Tokio)).collect();
    let mut frames = Vec::with_capacity(FRAMES_PER_STACK);
    let inner = 3 + rng.below(4) as usize;
    for _ in 0..inner {
        frames.push(other[rng.below(other.len() as u64) as usize].clone());
    }
    let outer = 6;
    while frames.len() < FRAMES_PER_STACK - outer {
        frames.push(user[rng.below(user.len() as u64) as usize].clone());
    }
    for t in tokio.iter().take(outer) {
        frames.push((*t).clone());
    }
    frames
}

/// A stall; `ended` gives it a final duration and its samples.
pub fn stall(rng: &mut Rng, pool: &[Frame], id: u64, ended: bool) -> Stall {
    let elapsed_ns = 10_000_000 + rng.below(500_000_000);
    let stacks = if ended || rng.chance(50) {
        (0..STACKS_PER_STALL).map(|_| StackCount { frames: stack(rng, pool), count: 1 + rng.below(40) }).collect()
    } else {
        Vec::new()
    };
    Stall {
        id,
        start_unix_ms: 1_763_700_000_000 + id * 137,
        duration_ns: ended.then_some(elapsed_ns),
        elapsed_ns,
        worker: rng.below(WORKERS as u64) as u32,
        tid: 4_000 + rng.below(64) as i32,
        task: if rng.chance(90) { Some(rng.below(1 << 20)) } else { None },
        spawned_at: location(rng.below(LOCATIONS as u64) as usize),
        in_block_in_place: rng.chance(5),
        stacks,
        samples_lost: if rng.chance(10) { rng.below(3) } else { 0 },
        // From the id, not the generator, so that adding it left every other figure as it was.
        anatomy: (ended && !id.is_multiple_of(3)).then(|| anatomy(id, elapsed_ns)),
        unobserved: ended && id.is_multiple_of(11),
    }
}

/// A stall's anatomy (protocol 1.2), varied by `id`.
fn anatomy(id: u64, wall_ns: u64) -> StallAnatomy {
    let on_cpu_ns = wall_ns / (1 + id % 4);
    let waiting_ns = (wall_ns - on_cpu_ns) / (2 + id % 3);
    let blocked_in = match id % 3 {
        1 => vec![BlockedIn {
            syscall: "read(2)".into(),
            target: Some("/var/lib/shopd/big.csv".into()),
            samples: 1 + id % 7,
        }],
        _ => vec![
            BlockedIn {
                syscall: "futex(2)".into(),
                target: Some("(a lock, a condition variable or a channel)".into()),
                samples: 9,
            },
            BlockedIn { syscall: "recvfrom(2)".into(), target: Some("a socket to 10.0.0.7:5432".into()), samples: 2 },
        ],
    };
    StallAnatomy {
        on_cpu_ns,
        waiting_ns,
        blocked_ns: wall_ns - on_cpu_ns - waiting_ns,
        measured_ns: wall_ns * 3 / 4,
        throttled_ns: id.is_multiple_of(5).then_some(id * 1000),
        blocked_in,
        cpu_starved: id.is_multiple_of(7),
    }
}

/// Process facts.
pub fn process_info() -> ProcessInfo {
    ProcessInfo {
        pid: 48_213,
        name: "shopd".into(),
        probe_version: "0.1.0".into(),
        tokio_unstable: true,
        missing: vec!["task dumps: built without the taskdump feature".into()],
        stall_threshold_ns: 10_000_000,
        sample_interval_ns: 1_000_000,
        stack_sampling: true,
    }
}

/// A realistic `Update::Tick` number `seq` (≥ 1): 50 locations, 40 recent stalls with 5 stacks
/// of 25 frames, 26-bucket histograms everywhere.
pub fn tick(seed: u64, seq: u64) -> Update {
    let mut rng = Rng::new(seed ^ seq.wrapping_mul(0x1000_0000_01B3));
    let mut pool_rng = Rng::new(seed);
    let pool = frame_pool(&mut pool_rng);
    let locations: Vec<LocationStats> = (0..LOCATIONS)
        .map(|i| {
            let spawned = 10 + rng.below(100_000) + seq * 3;
            let completed = spawned - rng.below(spawned.min(200));
            let polls = spawned * (1 + rng.below(20));
            LocationStats {
                location: location(i),
                spawned,
                completed,
                live: spawned - completed,
                oldest_live_ns: (spawned > completed).then(|| rng.below(60_000_000_000)),
                polls,
                poll_time: histogram(&mut rng, polls),
                schedule_latency: if i % 2 == 0 { Some(histogram(&mut rng, polls)) } else { None },
                leak_suspect: i == 7,
                internal: i == 0,
                blocking: i % 17 == 3,
            }
        })
        .collect();
    let workers: Vec<WorkerStats> = (0..WORKERS)
        .map(|i| {
            let polls = 1_000_000 + rng.below(1_000_000) + seq * 1000;
            WorkerStats {
                index: i as u32,
                tid: 4_000 + i as i32,
                polls,
                busy_ns: polls * 2_000,
                poll_time: histogram(&mut rng, polls),
            }
        })
        .collect();
    // Recent stalls: a sliding window over stall ids, the newest still running.
    let first = seq;
    let stalls: Vec<Stall> = (0..STALLS as u64)
        .map(|k| {
            let id = first + k;
            let mut r = Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9));
            stall(&mut r, &pool, id, k + 1 < STALLS as u64)
        })
        .collect();
    let pools = (0..4)
        .map(|i| PoolStats {
            name: ["db", "redis", "http-client", "blocking-files"][i].into(),
            in_use: rng.below(32),
            idle: rng.below(8),
            max: 32,
            waiters: rng.below(3),
            acquired: 1_000 + rng.below(1_000_000),
            wait_time: {
                let waits = 1_000 + rng.below(10_000);
                histogram(&mut rng, waits)
            },
        })
        .collect();
    let snapshot = Snapshot {
        schema: SCHEMA_VERSION,
        seq,
        at_unix_ms: 1_763_700_000_000 + seq * 100,
        uptime_ns: seq * 100_000_000,
        process: process_info(),
        workers,
        locations,
        stall_count: seq + STALLS as u64,
        stalled_ns: seq * 47_000_000,
        lag: LagStats { period_ns: 10_000_000, lag: histogram(&mut rng, seq * 10), last_ns: rng.below(2_000_000) },
        runtime: Some(RuntimeStats {
            workers: WORKERS as u64,
            live_tasks: 1_200 + rng.below(300),
            busy_ratio: (rng.below(1000) as f64) / 1000.0,
            global_queue_depth: rng.below(20),
            local_queue_depth: rng.below(200),
            steals: rng.below(1000),
            parks: rng.below(5000),
            polls: rng.below(100_000),
            blocking_threads: 12,
            idle_blocking_threads: rng.below(12),
            blocking_queue_depth: rng.below(3),
            busy_ns: seq * 190_000_000,
            worker_busy_ns: (0..WORKERS as u64).map(|w| seq * (90_000_000 + w)).collect(),
        }),
        pools,
        alerts: vec![
            Alert {
                subject: "fixture".to_string(),
                kind: AlertKind::BlockingPoll,
                summary: format!("poll blocked worker 3 for 212 ms in {}", stalls[0].spawned_at),
                what_to_do: "move the blocking call into tokio::task::spawn_blocking".into(),
            },
            Alert {
                subject: "host".to_string(),
                kind: AlertKind::CpuStarvation,
                summary: "worker waited 31.0 ms for a CPU (host busy or CPU quota throttled) in a 33.2 ms poll".into(),
                what_to_do: AlertKind::CpuStarvation.what_to_do().into(),
            },
            Alert {
                subject: "fixture".to_string(),
                kind: AlertKind::LeakSuspect,
                summary: format!("{} keeps growing: 1834 live tasks", location(7)),
                what_to_do: "check that the spawned tasks finish; look for a missing timeout".into(),
            },
            Alert {
                subject: "fixture".to_string(),
                kind: AlertKind::PoolSaturated,
                summary: "pool db: 32 of 32 in use, 2 waiting".into(),
                what_to_do: "raise the pool size or shorten how long connections are held".into(),
            },
        ],
        stalls,
        drops: Drops { samples: rng.below(3), subscriber_updates: seq / 50, ..Drops::default() },
        // Carried by `intern` once it transports the history (the integrator's change).
        alert_history: vec![
            AlertRecord {
                kind: AlertKind::BlockingPoolStarved,
                subject: "blocking pool".into(),
                first_unix_ms: 1_763_700_000_000,
                last_unix_ms: 1_763_700_001_000,
                count: 1,
                active_ns: 1_000_000_000,
                peak: AlertFigure { value: 22, unit: PeakUnit::Queued },
                peak_unix_ms: 1_763_700_000_400,
                peak_summary: "blocking pool starved: 22 queued, 0 of 2 threads idle".into(),
                latest: AlertFigure { value: 3, unit: PeakUnit::Queued },
                latest_summary: "blocking pool starved: 3 queued, 0 of 2 threads idle".into(),
                what_to_do: AlertKind::BlockingPoolStarved.what_to_do().into(),
                active: false,
            },
            AlertRecord {
                kind: AlertKind::CpuStarvation,
                subject: "host".into(),
                count: seq,
                active: true,
                ..AlertRecord::default()
            },
        ],
        alert_history_evicted: seq / 10,
    };
    let interval = Interval {
        seq,
        duration_ns: 100_000_000,
        locations: (0..30)
            .map(|i| {
                let polls = rng.below(5000);
                LocationDelta {
                    location: location(i),
                    spawned: rng.below(100),
                    completed: rng.below(100),
                    polls,
                    poll_time: histogram(&mut rng, polls),
                }
            })
            .collect(),
        stalls: snapshot.stalls.iter().rev().take(2).cloned().collect(),
        stalled_ns: rng.below(100_000_000),
        lag: histogram(&mut rng, 10),
        drops: Drops::default(),
    };
    Update::Tick { snapshot: Box::new(snapshot), interval: Box::new(interval) }
}

/// A realistic sequence of `n` updates: ticks with stall events in between, as a subscriber sees
/// them (the stalls roll, so later ticks reuse most earlier stacks and add a few new ones).
pub fn session(seed: u64, n: usize) -> Vec<Update> {
    let mut pool_rng = Rng::new(seed);
    let pool = frame_pool(&mut pool_rng);
    let mut rng = Rng::new(seed.wrapping_add(1));
    let mut out = Vec::with_capacity(n);
    let mut seq = 1;
    while out.len() < n {
        match rng.below(4) {
            0 => {
                let id = 1_000_000 + rng.below(1000);
                out.push(Update::StallStarted(stall(&mut rng, &pool, id, false)));
            }
            1 => {
                let id = 1_000_000 + rng.below(1000);
                out.push(Update::StallEnded(stall(&mut rng, &pool, id, true)));
            }
            _ => {
                out.push(tick(seed, seq));
                seq += 1;
            }
        }
    }
    out
}

/// One async trace as Tokio prints it: `depth` frames, outermost first.
pub fn async_trace(rng: &mut Rng, depth: usize) -> String {
    let mut out = String::new();
    for d in 0..depth {
        let c = CRATES[rng.below(CRATES.len() as u64) as usize];
        let v = VERBS[rng.below(VERBS.len() as u64) as usize];
        if d > 0 {
            out.push('\n');
            out.push_str(&"   ".repeat(d - 1));
            out.push('└');
        }
        out.push_str(&format!(
            "╼ shopd::{c}::{v}::{{{{closure}}}} at /home/build/shopd/src/{c}/{v}.rs:{}:{}",
            10 + rng.below(400),
            5 + rng.below(40)
        ));
    }
    out
}

/// A realistic task dump: `groups` groups of decreasing size, 6..18-frame traces.
pub fn task_dump(seed: u64, groups: usize) -> TaskDump {
    let mut rng = Rng::new(seed);
    let groups: Vec<TaskGroup> = (0..groups)
        .map(|i| {
            let count = 1 + (1_000 >> i.min(10)) as u64 + rng.below(3);
            let depth = 6 + rng.below(12) as usize;
            TaskGroup {
                count,
                trace: async_trace(&mut rng, depth),
                trace_truncated: false,
                task_ids: (0..count.min(8)).map(|k| 1 + i as u64 * 10_000 + k).collect(),
                spawned_at: rng.chance(80).then(|| location(i)),
            }
        })
        .collect();
    let tasks = groups.iter().map(|g| g.count).sum();
    TaskDump { tasks, elapsed_ns: 3_000_000 + rng.below(50_000_000), groups, ..TaskDump::default() }
}

/// The largest reply the limits allow: every group present, every trace at its byte limit,
/// every example id as long as a varint gets, total trace text at its limit.
pub fn largest_task_dump(limits: TaskDumpLimits) -> TaskDump {
    let per_trace = limits.max_trace_bytes.min(limits.max_total_trace_bytes / limits.max_groups.max(1));
    let groups: Vec<TaskGroup> = (0..limits.max_groups)
        .map(|i| TaskGroup {
            count: u64::MAX,
            trace: "x".repeat(per_trace),
            trace_truncated: true,
            task_ids: vec![u64::MAX - i as u64; limits.max_task_ids],
            spawned_at: Some(format!("{}:{}:{}", "/very/long/path".repeat(20), u32::MAX, u32::MAX)),
        })
        .collect();
    TaskDump {
        tasks: u64::MAX,
        elapsed_ns: u64::MAX,
        groups,
        truncated: true,
        omitted_groups: u64::MAX,
        omitted_tasks: u64::MAX,
    }
}
