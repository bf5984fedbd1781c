//! Soak (fault suite): stack captures while one task allocates in a tight loop and another
//! panics in a loop, on a probed runtime with a 2 ms threshold and the shortest sample interval,
//! so that the sampler fires thousands of times a second. No crash, no deadlock, the service's
//! own work goes on, heap growth stays bounded, and no allocation inside the signal handler: a
//! tripwire allocator counts allocations made while the handler runs on the allocating thread
//! (`__in_sample_handler`), and a hook the handler calls after each capture (feature
//! `fault-injection`) proves that the tripwire's flag is up there.
//!
//! `CAPTURES_WANTED` (20,000) in the normal run; the fault suite (`tests/faults.sh`) runs
//! 100,000 through `STALLSCOPE_SOAK_CAPTURES`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_tests::{describe, user_frames};

struct Tripwire;
static IN_HANDLER_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Live heap bytes of the process, and their peak.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_in(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: forwards to the system allocator; only adds counters.
unsafe impl GlobalAlloc for Tripwire {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if stallscope_probe::__in_sample_handler() {
            IN_HANDLER_ALLOCS.fetch_add(1, Relaxed);
        }
        let p = System.alloc(l);
        if !p.is_null() {
            count_in(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if stallscope_probe::__in_sample_handler() {
            IN_HANDLER_ALLOCS.fetch_add(1, Relaxed);
        }
        LIVE.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if stallscope_probe::__in_sample_handler() {
            IN_HANDLER_ALLOCS.fetch_add(1, Relaxed);
        }
        let q = System.realloc(p, l, n);
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Relaxed);
            count_in(n);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Tripwire = Tripwire;

const CAPTURES_WANTED: u64 = 20_000;

/// Heap the soak may add, beyond what was live before it: the probe's buffers are allocated at
/// `build()`; what grows is bounded by `max_stalls` (4,096 stalls of at most `max_samples_per_stall`
/// stacks, most of them identical), the symbolizer's address cache and the churn's own vectors.
const HEAP_GROWTH_BOUND: usize = 256 << 20;

/// Handler runs seen by the hook, with the tripwire's flag up and down.
static HOOK_IN: AtomicU64 = AtomicU64::new(0);
static HOOK_OUT: AtomicU64 = AtomicU64::new(0);

/// Runs inside the signal handler after each capture: async-signal-safe (a thread-local load
/// and an atomic add).
fn handler_hook() {
    if stallscope_probe::__in_sample_handler() {
        HOOK_IN.fetch_add(1, Relaxed);
    } else {
        HOOK_OUT.fetch_add(1, Relaxed);
    }
}

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[inline(never)]
fn alloc_churn(until: Instant) -> usize {
    let mut total = 0;
    while Instant::now() < until {
        let v: Vec<u64> = black_box((0..black_box(64)).collect());
        let s = black_box(format!("{}", v.len()));
        total += s.len() + v.len();
    }
    black_box(total)
}

#[inline(never)]
fn panic_loop(until: Instant) -> u64 {
    let mut n = 0;
    while Instant::now() < until {
        let r = std::panic::catch_unwind(|| {
            if black_box(true) {
                panic!("soak panic {}", black_box(7));
            }
        });
        n += r.is_err() as u64;
    }
    black_box(n)
}

#[test]
fn a_hundred_thousand_captures_over_allocation_and_panics_allocate_nothing_in_the_handler() {
    let wanted: u64 =
        std::env::var("STALLSCOPE_SOAK_CAPTURES").ok().and_then(|v| v.parse().ok()).unwrap_or(CAPTURES_WANTED);
    // ~2,000 captures a second on a busy 2-core host; the deadline is a hang guard, not a timing.
    let budget = Duration::from_secs(90 + wanted / 250);
    // Silence the panic loop's own panics only: any other panic (an assertion inside the run,
    // a refresh that timed out) must still say what it was.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().downcast_ref::<String>().is_some_and(|m| m.starts_with("soak panic")) {
            default_hook(info)
        }
    }));
    stallscope_probe::__set_sample_handler_hook(Some(handler_hook));
    let threads_before = threads_of_this_process();
    let heap_before = LIVE.load(Relaxed);
    PEAK.store(heap_before, Relaxed);
    let before = stallscope_probe::__sample_captures();
    let started = Instant::now();
    let probe = stallscope_probe::Probe::builder()
        .stall_threshold(Duration::from_millis(2))
        .sample_interval(Duration::from_micros(200))
        .max_stalls(4096)
        .server(false)
        .build()
        .unwrap();
    let rt = stallscope_tests::runtime_with(&probe);
    let guard = probe.start(rt.handle());
    let rounds = rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + budget;
        let mut tasks = Vec::new();
        for which in 0..2 {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut rounds = 0u64;
                while !stop.load(Relaxed) {
                    // 100 ms without yielding: one stall per round.
                    let until = Instant::now() + Duration::from_millis(100);
                    if which == 0 {
                        alloc_churn(until);
                    } else {
                        panic_loop(until);
                    }
                    rounds += 1;
                    tokio::task::yield_now().await;
                }
                rounds
            }));
        }
        while stallscope_probe::__sample_captures() - before < wanted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Relaxed);
        let mut rounds = Vec::new();
        for t in tasks {
            rounds.push(t.await.unwrap());
        }
        rounds
    });
    let elapsed = started.elapsed();
    drop(rt);
    // The aggregator may be far behind after the soak (each stall closes once its stacks are
    // symbolized): wait for it, within a bound, and say how long it took.
    let behind = Instant::now();
    let snap = loop {
        if let Some(s) = probe.refresh(Duration::from_secs(10)) {
            break s;
        }
        assert!(behind.elapsed() < Duration::from_secs(180), "the probe did not catch up in 180 s");
    };
    let caught_up = behind.elapsed();
    drop(guard);
    stallscope_probe::__set_sample_handler_hook(None);
    let _ = std::panic::take_hook();
    let captures = stallscope_probe::__sample_captures() - before;
    assert!(captures >= wanted, "only {captures} captures in {elapsed:?}");
    // The service's own work went on: both tasks kept running rounds, and no round was lost
    // to a crash (their results came back).
    assert!(rounds.iter().all(|&r| r >= 2), "rounds {rounds:?}");
    // The tripwire is armed: the hook ran inside the handler for (nearly) every capture of the
    // soak (a capture made after the hook was cleared does not count), always with the flag up.
    let (hook_in, hook_out) = (HOOK_IN.load(Relaxed), HOOK_OUT.load(Relaxed));
    assert_eq!(hook_out, 0, "the handler ran with the tripwire's flag down");
    assert!(hook_in >= wanted, "the hook saw {hook_in} handler runs for {captures} captures");
    assert_eq!(IN_HANDLER_ALLOCS.load(Relaxed), 0, "allocations inside the signal handler");
    // Heap and threads stay bounded, and come back.
    let heap_peak = PEAK.load(Relaxed).saturating_sub(heap_before);
    assert!(heap_peak <= HEAP_GROWTH_BOUND, "the heap grew by {heap_peak} bytes during the soak");
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_of_this_process() > threads_before + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // + 1: the process's one symbolizer thread, started by the first probe and kept.
    assert!(threads_of_this_process() <= threads_before + 1, "threads: {} before", threads_before);
    let named = |f: &str| snap.stalls.iter().any(|s| user_frames(s).iter().any(|u| u.ends_with(f)));
    assert!(named("alloc_churn"), "{}", describe(&snap));
    assert!(named("panic_loop"), "{}", describe(&snap));
    assert_eq!(snap.drops.probe_panics, 0);
    eprintln!(
        "soak: {captures} captures in {elapsed:.1?}, the probe caught up {caught_up:.1?} later ({hook_in} handler runs seen by the hook, 0 allocations in \
         the handler), {} stalls, rounds {rounds:?}, heap peak +{} KiB, drops {:?}, missing {:?}",
        snap.stall_count,
        heap_peak / 1024,
        snap.drops,
        snap.process.missing
    );
}
