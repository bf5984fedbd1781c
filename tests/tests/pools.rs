//! Semaphore waiters and the blocking queue depth match the known load.

use std::time::Duration;

use stallscope_probe::pool::Semaphore;
use stallscope_tests::{serial, Service};

#[test]
fn semaphore_waiters_and_in_use_match_the_load() {
    let _s = serial();
    Service::multi().run(|probe| async move {
        let sem = Semaphore::new("test-db", 2);
        let (release_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut holders = Vec::new();
        for _ in 0..5 {
            let sem = sem.clone();
            let mut release = release_tx.subscribe();
            holders.push(tokio::spawn(async move {
                let _p = sem.acquire().await.unwrap();
                let _ = release.recv().await;
            }));
        }
        // Let all five reach the semaphore: two hold a permit, three wait.
        while sem.gauges().waiters < 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let snap = tokio::task::spawn_blocking(move || probe.refresh(Duration::from_secs(5)).unwrap()).await.unwrap();
        let p = snap.pools.iter().find(|p| p.name == "test-db").expect("pool registered");
        assert_eq!((p.in_use, p.idle, p.max, p.waiters), (2, 0, 2, 3), "{p:?}");
        assert!(p.saturated());
        assert!(snap.alerts.iter().any(|a| a.summary.contains("test-db")), "{:?}", snap.alerts);
        drop(release_tx);
        for h in holders {
            h.await.unwrap();
        }
        let g = sem.gauges();
        assert_eq!((g.in_use, g.waiters), (0, 0));
    });
}

#[test]
fn waits_are_recorded_in_the_wait_histogram() {
    let _s = serial();
    let snap = Service::multi().run(|_| async {
        let sem = Semaphore::new("wait-hist", 1);
        let held = sem.acquire_owned().await.unwrap();
        let s2 = sem.clone();
        let waiter = tokio::spawn(async move { drop(s2.acquire().await.unwrap()) });
        tokio::time::sleep(Duration::from_millis(40)).await;
        drop(held);
        waiter.await.unwrap();
        // Keep the pool registered until the snapshot.
        std::mem::forget(sem);
    });
    let p = snap.pools.iter().find(|p| p.name == "wait-hist").expect("pool");
    assert_eq!(p.acquired, 2);
    let max = p.wait_time.max_ns;
    assert!((35_000_000..200_000_000).contains(&max), "longest wait {max} ns");
}

#[test]
#[cfg(tokio_unstable)]
fn blocking_queue_depth_matches_the_load() {
    let _s = serial();
    Service::multi().max_blocking_threads(2).run(|probe| async move {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut jobs = Vec::new();
        for _ in 0..6 {
            let rx = rx.clone();
            jobs.push(tokio::task::spawn_blocking(move || {
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(5));
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe2 = probe.clone();
        let snap = std::thread::spawn(move || probe2.refresh(Duration::from_secs(5)).unwrap()).join().unwrap();
        let r = snap.runtime.clone().expect("runtime metrics");
        assert_eq!((r.blocking_threads, r.idle_blocking_threads), (2, 0), "{r:?}");
        assert_eq!(r.blocking_queue_depth, 4, "{r:?}");
        assert!(snap.alerts.iter().any(|a| a.kind == stallscope_probe::wire::AlertKind::BlockingPoolStarved));
        for _ in 0..6 {
            let _ = tx.send(());
        }
        for j in jobs {
            j.await.unwrap();
        }
    });
}

/// Some tests of this file need `--cfg tokio_unstable`: a build without it fails here rather than
/// passing with them compiled out.
#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}
