//! A 50 ms `thread::sleep`, a 50 ms CPU loop and a 50 ms mutex wait are each reported once,
//! never shorter than the poll measured inside it and at most `LATE_MS` longer, with the culprit
//! function among the top user frames, on both runtime flavours. The spin's anatomy is on CPU.
//! These hold beside CPU hogs: tight wall-clock precision is the benchmarks' business.
//! Run in release (`debug = "line-tables-only"` in the workspace profile).

use std::hint::black_box;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stallscope_tests::{describe, expect_stall, measured, serial, Flavor, Service};

const STALL: Duration = Duration::from_millis(50);

#[inline(never)]
fn culprit_sleep() {
    std::thread::sleep(black_box(STALL));
    black_box(());
}

#[inline(never)]
fn culprit_spin() -> u64 {
    let start = Instant::now();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    while start.elapsed() < STALL {
        for _ in 0..1_000 {
            x = black_box(x.rotate_left(7) ^ 0xA5A5_A5A5);
        }
    }
    black_box(x)
}

#[inline(never)]
fn culprit_lock(m: &Mutex<u64>) -> u64 {
    let g = m.lock().unwrap();
    black_box(*g + 1)
}

fn sleep_stall(flavor: Flavor) {
    let _s = serial();
    let (snap, took) =
        Service::of(flavor).run_with(|_| async { tokio::spawn(async { measured(culprit_sleep).0 }).await.unwrap() });
    expect_stall(&snap).count(1).naming("culprit_sleep").once().covering(took);
}

fn spin_stall(flavor: Flavor) {
    let _s = serial();
    let (snap, took) =
        Service::of(flavor).run_with(|_| async { tokio::spawn(async { measured(culprit_spin).0 }).await.unwrap() });
    let e = expect_stall(&snap).count(1).naming("culprit_spin").once().covering(took);
    // A spin is on CPU whatever the host does: its wall time may stretch, its part does not move.
    let a = e.stalls()[0].anatomy.as_ref().unwrap_or_else(|| panic!("no anatomy\n{}", describe(&snap)));
    assert!(a.on_cpu_ns > 0 && a.blocked_ns < a.on_cpu_ns, "{}", a.describe());
}

fn mutex_stall(flavor: Flavor) {
    let _s = serial();
    let (snap, took) = Service::of(flavor).run_with(|_| async {
        let m = Arc::new(Mutex::new(0u64));
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let holder = {
            let m = m.clone();
            std::thread::spawn(move || {
                let g = m.lock().unwrap();
                let _ = locked_tx.send(());
                std::thread::sleep(STALL);
                drop(g);
            })
        };
        let task = tokio::spawn(async move {
            locked_rx.await.unwrap();
            measured(|| culprit_lock(&m)).0
        });
        let took = task.await.unwrap();
        holder.join().unwrap();
        took
    });
    expect_stall(&snap).count(1).naming("culprit_lock").once().covering(took);
}

#[test]
fn sleep_is_one_stall_naming_the_culprit_multi_thread() {
    sleep_stall(Flavor::Multi)
}

#[test]
fn sleep_is_one_stall_naming_the_culprit_current_thread() {
    sleep_stall(Flavor::Current)
}

#[test]
fn cpu_loop_is_one_stall_naming_the_culprit_multi_thread() {
    spin_stall(Flavor::Multi)
}

#[test]
fn cpu_loop_is_one_stall_naming_the_culprit_current_thread() {
    spin_stall(Flavor::Current)
}

#[test]
fn mutex_wait_is_one_stall_naming_the_culprit_multi_thread() {
    mutex_stall(Flavor::Multi)
}

#[test]
fn mutex_wait_is_one_stall_naming_the_culprit_current_thread() {
    mutex_stall(Flavor::Current)
}

#[test]
fn ten_thousand_short_polls_give_no_stall() {
    let _s = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        let snap = Service::of(flavor).run(|_| async {
            let mut handles = Vec::new();
            for _ in 0..100 {
                handles.push(tokio::spawn(async {
                    for _ in 0..100 {
                        tokio::task::yield_now().await;
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
        // Per-thread poll counts are exact (per-location ones are scaled from timed polls).
        let polls: u64 = snap.workers.iter().map(|w| w.polls).sum();
        assert!(polls >= 10_000, "{flavor:?}: only {polls} polls counted");
        let sampled: u64 = snap.locations.iter().filter(|l| l.location.contains("stalls.rs")).map(|l| l.polls).sum();
        assert!((8_000..=12_000).contains(&sampled), "{flavor:?}: location polls {sampled} far from 10,100");
        assert_eq!(snap.stall_count, 0, "{flavor:?}: {}", describe(&snap));
    }
}

#[test]
fn a_stall_is_published_while_it_is_still_running() {
    let _s = serial();
    Service::multi().run(|probe| async move {
        let sub = probe.subscribe(1024);
        let task = tokio::spawn(async {
            std::thread::sleep(Duration::from_millis(300));
        });
        let started = tokio::task::spawn_blocking(move || loop {
            match sub.recv_timeout(Duration::from_secs(5)) {
                Some(stallscope_probe::wire::Update::StallStarted(s)) => return Some(s),
                Some(_) => continue,
                None => return None,
            }
        })
        .await
        .unwrap()
        .expect("a StallStarted update");
        assert!(started.duration_ns.is_none(), "published before it ended");
        assert!(started.elapsed_ns < 200_000_000, "published {} ns into the stall", started.elapsed_ns);
        task.await.unwrap();
    });
}

/// Busy time per worker comes from the watchdog's scans: a worker stalled 200 ms in a CPU loop
/// shows at least most of that time, and an idle runtime's workers show almost none.
#[test]
fn busy_time_per_worker_covers_a_stall() {
    let _s = serial();
    let snap = Service::multi().run(|_| async {
        tokio::spawn(async {
            let until = std::time::Instant::now() + Duration::from_millis(200);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        })
        .await
        .unwrap();
    });
    let stalled = snap.workers.iter().find(|w| w.busy_ns >= 150_000_000);
    assert!(stalled.is_some(), "a worker busy for ≥150 ms of the 200 ms loop: {:?}", busy(&snap));
    let total: u64 = snap.workers.iter().map(|w| w.busy_ns).sum();
    assert!(total < 400_000_000, "no more than the loop and a little more: {:?}", busy(&snap));

    let idle = Service::multi().run(|_| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let total: u64 = idle.workers.iter().map(|w| w.busy_ns).sum();
    assert!(total < 50_000_000, "an idle runtime is not busy: {:?}", busy(&idle));
}

fn busy(s: &stallscope_wire::Snapshot) -> Vec<(u32, u64)> {
    s.workers.iter().map(|w| (w.index, w.busy_ns / 1_000_000)).collect()
}

/// An untimed poll's start is bounded below by the thread's anchor, not only by the watchdog's
/// previous scan. With an 80 ms threshold the watchdog scans every 40 ms while anchors are close,
/// so the scan bound alone would report each stall up to 40 ms long. Stalls that follow idle
/// time take their bound from the worker's unpark; stalls that follow a run of short polls take
/// it from the last timed poll (at most 16 polls of ~20 µs back). Each is reported never shorter
/// than its length as measured inside the poll, and at most `LATE_MS` longer: microseconds on an
/// idle host, up to 10 ms beside CPU hogs (the worker waits for a CPU between its unpark and the
/// poll). Five stalls each up to 40 ms late with the scan bound alone would exceed it.
#[test]
fn untimed_stall_starts_are_bounded_by_the_thread_anchor() {
    let _s = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        for busy_before in [false, true] {
            let (snap, actual) = Service::of(flavor)
                .probe(|b| b.stall_threshold(Duration::from_millis(80)).sampling(false))
                .run_with(|_| async move {
                    let mut actual = Vec::new();
                    for i in 0..5u64 {
                        // Idle: every worker parks.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        let d = tokio::spawn(async move {
                            if busy_before {
                                // 150 short polls back to back on this worker: about 3 ms.
                                for _ in 0..150 {
                                    spin_for(Duration::from_micros(20));
                                    tokio::task::yield_now().await;
                                }
                            }
                            block_measured(100 + 10 * i)
                        })
                        .await
                        .unwrap();
                        actual.push(d);
                    }
                    actual
                });
            let what = format!("{flavor:?}, busy before {busy_before}");
            let slack = stallscope_tests::SLACK_NS as f64 / 1e6;
            expect_lengths(&what, &snap, actual, -slack..=stallscope_tests::LATE_MS);
        }
    }
}

/// When workers run long polls back to back, the anchor (the end of the last timed poll) can be
/// 15 polls back. The watchdog notices such far anchors and scans every eighth of the threshold
/// instead of every half, so a stall's start stays bounded within about an eighth of the
/// threshold: 10 ms here (80 ms threshold), checked with `LATE_MS` more for what a busy host adds
/// (the watchdog's own wake-up delay). Never shorter than measured. Scanning every half
/// threshold, five stalls would each be up to 40 ms late.
#[test]
fn long_polls_back_to_back_keep_stall_starts_within_an_eighth_of_the_threshold() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _s = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        let (snap, actual) = Service::of(flavor)
            .probe(|b| b.stall_threshold(Duration::from_millis(80)).sampling(false))
            .run_with(|_| async move {
                let stop = Arc::new(AtomicBool::new(false));
                // Four tasks polling for 1 ms at a time keep every worker busy with long polls.
                let grinders: Vec<_> = (0..4)
                    .map(|_| {
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            while !stop.load(Ordering::Relaxed) {
                                spin_for(Duration::from_millis(1));
                                tokio::task::yield_now().await;
                            }
                        })
                    })
                    .collect();
                let mut actual = Vec::new();
                for i in 0..5u64 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    actual.push(tokio::spawn(async move { block_measured(100 + 10 * i) }).await.unwrap());
                }
                stop.store(true, Ordering::Relaxed);
                for g in grinders {
                    g.await.unwrap();
                }
                actual
            });
        let slack = stallscope_tests::SLACK_NS as f64 / 1e6;
        expect_lengths(&format!("{flavor:?}"), &snap, actual, -slack..=10.0 + stallscope_tests::LATE_MS);
    }
}

/// The snapshot's finished stalls, one per length in `actual` (ns, as measured inside each poll),
/// are each reported within `err_ms` of it (matched by order of length).
fn expect_lengths(what: &str, snap: &stallscope_wire::Snapshot, mut actual: Vec<i64>, err_ms: RangeInclusive<f64>) {
    let mut reported: Vec<i64> = snap.finished_stalls().map(|s| s.duration_ns.unwrap_or(0) as i64).collect();
    assert_eq!(reported.len(), actual.len(), "{what}: {}", describe(snap));
    reported.sort_unstable();
    actual.sort_unstable();
    for (r, a) in reported.iter().zip(&actual) {
        let err = (r - a) as f64 / 1e6;
        assert!(err_ms.contains(&err), "{what}: reported {r} ns for a {a} ns stall ({err:+.2} ms)\n{}", describe(snap));
    }
}

/// Blocks the calling thread for `ms` and returns how long that took as measured inside (ns).
fn block_measured(ms: u64) -> i64 {
    let began = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    began.elapsed().as_nanos() as i64
}

/// Keeps the calling thread busy for `d`.
fn spin_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}
