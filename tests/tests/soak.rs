//! Soak: at least 20,000 stack captures while one task allocates in a tight loop and another
//! panics in a loop. No crash, no deadlock, and no allocation inside the signal handler (a
//! tripwire allocator counts allocations made while the handler runs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_tests::{describe, user_frames, Service};

struct Tripwire;
static IN_HANDLER_ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only adds a counter.
unsafe impl GlobalAlloc for Tripwire {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if stallscope_probe::__in_sample_handler() {
            IN_HANDLER_ALLOCS.fetch_add(1, Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if stallscope_probe::__in_sample_handler() {
            IN_HANDLER_ALLOCS.fetch_add(1, Relaxed);
        }
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if stallscope_probe::__in_sample_handler() {
            IN_HANDLER_ALLOCS.fetch_add(1, Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Tripwire = Tripwire;

const CAPTURES_WANTED: u64 = 20_000;

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
fn twenty_thousand_captures_with_allocation_and_panics() {
    std::panic::set_hook(Box::new(|_| {}));
    let before = stallscope_probe::__sample_captures();
    let snap = Service::multi()
        .probe(|b| {
            b.stall_threshold(Duration::from_millis(2)).sample_interval(Duration::from_micros(200)).max_stalls(4096)
        })
        .run(|_| async move {
            let stop = Arc::new(AtomicBool::new(false));
            let deadline = Instant::now() + Duration::from_secs(90);
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
            while stallscope_probe::__sample_captures() - before < CAPTURES_WANTED && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.store(true, Relaxed);
            for t in tasks {
                assert!(t.await.unwrap() > 0);
            }
        });
    let _ = std::panic::take_hook();
    let captures = stallscope_probe::__sample_captures() - before;
    assert!(captures >= CAPTURES_WANTED, "only {captures} captures");
    assert_eq!(IN_HANDLER_ALLOCS.load(Relaxed), 0, "allocations inside the signal handler");
    let named = |f: &str| snap.stalls.iter().any(|s| user_frames(s).iter().any(|u| u.ends_with(f)));
    assert!(named("alloc_churn"), "{}", describe(&snap));
    assert!(named("panic_loop"), "{}", describe(&snap));
    assert_eq!(snap.drops.probe_panics, 0);
    eprintln!("soak: {captures} captures, {} stalls, drops {:?}", snap.stall_count, snap.drops);
}
