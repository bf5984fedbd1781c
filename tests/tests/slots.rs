//! Thread slots go to threads that poll (P7, defect 2). Threads that only spawn or end tasks
//! (blocking-pool threads, plain threads spawning through a `Handle`, another runtime's workers)
//! used to take a slot each and never give it back; once the slots ran out, a new worker (the
//! one that takes over after `block_in_place`) had none, and its stalls went unseen. Their spawns
//! and terminations now go to the shared event ring, and are still counted and aged.
#![cfg_attr(not(tokio_unstable), allow(unused))]

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use stallscope_probe::wire::Snapshot;
use stallscope_probe::Probe;
use stallscope_tests::{describe, expect_stall, serial};

/// Short-lived threads of each kind that spawn into the probed runtime.
const BLOCKING_THREADS: usize = 5_000;
const PLAIN_THREADS: usize = 5_000;
/// Threads alive at once, per batch.
const BATCH: usize = 50;
/// Spawner threads alive while a new worker appears: more than the probe's 64 slots.
const LIVE_SPAWNERS: usize = 100;

/// Long enough to be sampled even when two CPU hogs delay the watchdog (a 60 ms stall was once
/// seen with no sample beside them).
#[inline(never)]
fn stall_on_the_new_worker() {
    std::thread::sleep(black_box(Duration::from_millis(300)));
    black_box(());
}

fn refresh(probe: &Probe) -> Snapshot {
    (*probe.refresh(Duration::from_secs(10)).expect("a snapshot")).clone()
}

#[cfg(tokio_unstable)]
#[test]
fn short_lived_spawner_threads_leave_slots_for_new_workers() {
    let _s = serial();
    let probe = Probe::builder().server(false).build().expect("probe");
    let started = Arc::new(AtomicUsize::new(0));
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // One worker, so that the task spawned during `block_in_place` can only run on the thread
    // that took the worker over. Idle blocking-pool threads exit after 1 ms.
    b.worker_threads(1).enable_all().thread_keep_alive(Duration::from_millis(1));
    let counter = started.clone();
    b.on_thread_start(move || {
        counter.fetch_add(1, Relaxed);
    });
    probe.install(&mut b);
    let rt = b.build().expect("runtime");
    let guard = probe.start(rt.handle());
    let handle = rt.handle().clone();

    // 1. Blocking-pool threads, BATCH at a time (a barrier keeps them on distinct threads),
    //    each spawning one task; between batches the pool's threads exit.
    let blocking_loc = format!("{}:{}", file!(), line!() + 8);
    for batch in 0..BLOCKING_THREADS / BATCH {
        let barrier = Arc::new(Barrier::new(BATCH));
        let joins: Vec<_> = (0..BATCH)
            .map(|_| {
                let barrier = barrier.clone();
                handle.spawn_blocking(move || {
                    barrier.wait();
                    tokio::spawn(async { black_box(()) })
                })
            })
            .collect();
        rt.block_on(async {
            for j in joins {
                j.await.unwrap().await.unwrap();
            }
        });
        // Until the pool's threads have exited (1 ms idle), so that the next batch starts new ones.
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.metrics().num_blocking_threads() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Drained every 1,000 threads (2,000 events): the shared ring (16 Ki events) cannot
        // overflow however late the aggregator runs on a busy host.
        if batch % 20 == 19 {
            refresh(&probe);
        }
    }
    assert!(started.load(Relaxed) >= BLOCKING_THREADS, "{} threads started", started.load(Relaxed));

    // 2. Plain threads spawning through a Handle, and a few other runtimes' workers.
    let plain_loc = format!("{}:{}", file!(), line!() + 6);
    for batch in 0..PLAIN_THREADS / BATCH {
        let joins: Vec<_> = std::thread::scope(|sc| {
            let spawners: Vec<_> = (0..BATCH)
                .map(|_| {
                    let h = handle.clone();
                    sc.spawn(move || h.spawn(async { black_box(()) }))
                })
                .collect();
            spawners.into_iter().map(|s| s.join().unwrap()).collect()
        });
        rt.block_on(async {
            for j in joins {
                j.await.unwrap();
            }
        });
        if batch % 20 == 19 {
            refresh(&probe);
        }
    }
    let other_loc = format!("{}:{}", file!(), line!() + 5);
    for _ in 0..10 {
        let other = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        let h = handle.clone();
        let j =
            other.block_on(async move { tokio::spawn(async move { h.spawn(async { black_box(()) }) }).await.unwrap() });
        rt.block_on(j).unwrap();
        other.shutdown_timeout(Duration::from_secs(10));
    }

    // 3. Tasks that stay alive, spawned by LIVE_SPAWNERS plain threads that stay alive too, more
    //    than there are slots: counted live and aged. Taking back the slots of exited threads
    //    cannot free anything here.
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let waiting_loc = format!("{}:{}", file!(), line!() + 9);
    let (leave_tx, leave_rx) = tokio::sync::watch::channel(false);
    std::thread::scope(|sc| {
        let spawned = Arc::new(Barrier::new(LIVE_SPAWNERS + 1));
        let spawners: Vec<_> = (0..LIVE_SPAWNERS)
            .map(|_| {
                let (mut gate, mut leave) = (gate_rx.clone(), leave_rx.clone());
                let (h, spawned) = (handle.clone(), spawned.clone());
                sc.spawn(move || {
                    let t = h.spawn(async move { gate.wait_for(|open| *open).await.map(|_| ()).ok() });
                    spawned.wait();
                    // Alive until the new worker below has been seen.
                    h.block_on(leave.wait_for(|go| *go)).ok();
                    t
                })
            })
            .collect();
        spawned.wait();
        let snap = refresh(&probe);
        let w = snap.location(&waiting_loc).unwrap_or_else(|| panic!("no {waiting_loc} in {:?}", snap.locations));
        assert_eq!((w.spawned, w.completed, w.live), (LIVE_SPAWNERS as u64, 0, LIVE_SPAWNERS as u64));
        assert!(w.oldest_live_ns.is_some(), "the live tasks' age is known: their spawns reached the aggregator");

        // 4. A new worker: `block_in_place` hands the only worker to another thread, which must
        //    get a slot, so that a stall on it is seen and sampled.
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let parked = handle.spawn(async move {
            tokio::task::block_in_place(move || {
                entered_tx.send(()).unwrap();
                release_rx.recv().ok();
            })
        });
        entered_rx.recv_timeout(Duration::from_secs(10)).expect("block_in_place entered");
        let stall = handle.spawn(async { stall_on_the_new_worker() });
        rt.block_on(stall).unwrap();
        release_tx.send(()).unwrap();
        rt.block_on(parked).unwrap();

        leave_tx.send(true).unwrap();
        gate_tx.send(true).unwrap();
        let waiting: Vec<_> = spawners.into_iter().map(|s| s.join().unwrap()).collect();
        rt.block_on(async {
            for t in waiting {
                t.await.unwrap();
            }
        });
    });

    drop(rt);
    let snap = refresh(&probe);
    drop(guard);

    expect_stall(&snap).naming("stall_on_the_new_worker").once();
    assert_eq!(snap.drops.threads_without_slot, 0, "every polling thread got a slot");
    assert_eq!(snap.drops.task_events, 0, "no spawn or termination event lost");
    for (loc, n) in [
        (&blocking_loc, BLOCKING_THREADS as u64),
        (&plain_loc, PLAIN_THREADS as u64),
        (&other_loc, 10),
        (&waiting_loc, LIVE_SPAWNERS as u64),
    ] {
        let l = snap.location(loc).unwrap_or_else(|| panic!("no {loc} in {:?}\n{}", snap.locations, describe(&snap)));
        assert_eq!((l.spawned, l.completed, l.live), (n, n, 0), "{loc}");
        assert_eq!(l.oldest_live_ns, None, "{loc}: no live task left in the ages");
    }
}

/// The test of this file needs `--cfg tokio_unstable`: a build without it fails here rather than
/// passing with the test compiled out.
#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}
