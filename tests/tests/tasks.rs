//! Live, spawned and completed counts are exact; the leak rule flags a leaking spawn location and
//! leaves a steady accept loop and a long-lived worker alone.

use std::time::Duration;

use stallscope_tests::{serial, Service};
use tokio::sync::oneshot;

#[test]
fn counts_per_spawn_location_are_exact() {
    let _s = serial();
    let (snap, (done_loc, waiting_loc)) = Service::multi().run_with(|probe| async move {
        let done_loc = format!("{}:{}", file!(), line!() + 3);
        let mut handles = Vec::new();
        for i in 0..1000u64 {
            handles.push(tokio::spawn(async move { std::hint::black_box(i) }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut gates = Vec::new();
        let waiting_loc = format!("{}:{}", file!(), line!() + 4);
        let mut waiting = Vec::new();
        for _ in 0..100 {
            let (tx, rx) = oneshot::channel::<()>();
            waiting.push(tokio::spawn(async move { rx.await.ok() }));
            gates.push(tx);
        }
        tokio::task::yield_now().await;
        let snap = tokio::task::spawn_blocking(move || probe.refresh(Duration::from_secs(5)).unwrap()).await.unwrap();
        let l = snap.location(&waiting_loc).expect("waiting location");
        assert_eq!((l.spawned, l.completed, l.live), (100, 0, 100));
        assert!(l.oldest_live_ns.is_some(), "age of the oldest waiting task is known");
        drop(gates);
        for w in waiting {
            w.await.unwrap();
        }
        (done_loc, waiting_loc)
    });
    let d = snap.location(&done_loc).unwrap_or_else(|| panic!("no {done_loc} in {:?}", snap.locations));
    assert_eq!((d.spawned, d.completed, d.live), (1000, 1000, 0));
    let w = snap.location(&waiting_loc).unwrap();
    assert_eq!((w.spawned, w.completed, w.live), (100, 100, 0));
    assert!(!d.leak_suspect && !w.leak_suspect);
}

/// Short leak windows so the test takes about a second and a half.
fn leak_probe(b: stallscope_probe::ProbeBuilder) -> stallscope_probe::ProbeBuilder {
    b.leak_window(Duration::from_millis(200)).leak_windows(5).leak_min_growth(20)
}

#[inline(never)]
fn start_request_watcher(gates: &mut Vec<oneshot::Sender<()>>) {
    let (tx, rx) = oneshot::channel::<()>();
    // Never resolved: the sender is kept but never used.
    tokio::spawn(async move {
        let _ = rx.await;
    });
    gates.push(tx);
}

#[test]
fn a_leaking_spawn_location_is_flagged() {
    let _s = serial();
    // The snapshot is taken while the leaked tasks are alive (shutting the runtime down would
    // drop them).
    let (_, snap) = Service::multi().probe(leak_probe).run_with(|probe| async move {
        let mut gates = Vec::new();
        for _ in 0..80 {
            start_request_watcher(&mut gates);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let snap = tokio::task::spawn_blocking(move || probe.refresh(Duration::from_secs(5)).unwrap()).await.unwrap();
        drop(gates);
        snap
    });
    let suspects: Vec<_> = snap.locations.iter().filter(|l| l.leak_suspect).map(|l| l.location.as_str()).collect();
    assert_eq!(suspects.len(), 1, "suspects: {suspects:?}");
    assert!(suspects[0].contains("tasks.rs:56"), "flagged at the spawn inside start_request_watcher: {suspects:?}");
    assert!(snap.alerts.iter().any(|a| a.summary.contains("tasks.rs:56")), "alerts: {:?}", snap.alerts);
}

#[test]
fn a_steady_accept_loop_and_a_long_lived_worker_are_not_flagged() {
    let _s = serial();
    let snap = Service::multi().probe(leak_probe).run(|_| async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Long-lived worker: one task for the whole run.
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(async move {
            let mut ticks = 0u64;
            while !*stop_rx.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => ticks += 1,
                    _ = stop_rx.changed() => {}
                }
            }
            ticks
        });
        // Accept loop: one short-lived handler per connection.
        let server = tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1600);
        let mut requests = 0u32;
        while tokio::time::Instant::now() < deadline && requests < 5_000 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            requests += 1;
        }
        let _ = stop_tx.send(true);
        assert!(worker.await.unwrap() > 10);
        server.abort();
        assert!(requests > 50, "only {requests} requests");
    });
    let flagged: Vec<_> = snap.locations.iter().filter(|l| l.leak_suspect).collect();
    assert!(flagged.is_empty(), "flagged: {flagged:?}");
    assert!(!snap.alerts.iter().any(|a| a.kind == stallscope_probe::wire::AlertKind::LeakSuspect));
}

#[test]
#[cfg(tokio_unstable)]
fn schedule_latency_is_tracked_per_location_when_opted_in() {
    let _s = serial();
    let run = |on: bool| {
        Service::multi().probe(|b| b.schedule_latency(on)).run(|_| async {
            let mut hs = Vec::new();
            for _ in 0..50 {
                hs.push(tokio::spawn(async {
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                    }
                }));
            }
            for h in hs {
                h.await.unwrap();
            }
        })
    };
    let on = run(true);
    let loc = on.locations.iter().find(|l| l.location.contains("tasks.rs") && l.spawned == 50).expect("location");
    let sched = loc.schedule_latency.as_ref().expect("schedule latency when opted in");
    assert!(sched.count >= 50 * 21, "one latency per poll: {}", sched.count);
    let off = run(false);
    let loc = off.locations.iter().find(|l| l.location.contains("tasks.rs") && l.spawned == 50).expect("location");
    assert!(loc.schedule_latency.is_none(), "off by default");
}

/// Spawns a task that waits on `rx`; returns its spawn location (two copies: one per round).
fn spawn_waiting_a(rx: oneshot::Receiver<()>) -> String {
    tokio::spawn(async move { rx.await.ok() });
    format!("{}:{}", file!(), line!() - 1)
}

fn spawn_waiting_b(rx: oneshot::Receiver<()>) -> String {
    tokio::spawn(async move { rx.await.ok() });
    format!("{}:{}", file!(), line!() - 1)
}

/// Only one spawn in 16 on a thread reads the clock; the others carry the thread's last reading,
/// which can be far older than the spawn on a thread that spawns rarely. The aggregator raises it
/// to its drain floor, so a long-lived task's age is never shorter than the truth and longer by at
/// most the time between two drain passes (100 ms apart while idle; `docs/guide.md`, "Task
/// ages"). Two rounds of 16 spawns, each after a second with no spawn on the thread: whatever the
/// thread's spawn count, the spawns before the clock-reading one carry a reading a second old, in
/// one round at least (16 + 1 spawns apart, the two rounds start at different counts mod 16).
#[test]
fn a_long_lived_task_s_age_is_right_though_spawns_rarely_read_the_clock() {
    let _s = serial();
    // One thread (a current-thread runtime): every spawn is counted on the same slot.
    let (_, (rounds, asked, answered, snap)) = Service::current().run_with(|probe| async move {
        let mut gates = Vec::new();
        let mut rounds = Vec::new();
        for spawn in [spawn_waiting_a as fn(_) -> String, spawn_waiting_b] {
            tokio::spawn(async {}).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = std::time::Instant::now();
            let mut loc = String::new();
            for _ in 0..16 {
                let (tx, rx) = oneshot::channel::<()>();
                loc = spawn(rx);
                gates.push(tx);
            }
            rounds.push((loc, before, std::time::Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = std::time::Instant::now();
        let snap = tokio::task::spawn_blocking(move || probe.refresh(Duration::from_secs(5)).unwrap()).await.unwrap();
        let answered = std::time::Instant::now();
        drop(gates);
        (rounds, asked, answered, snap)
    });
    for (loc, before, after) in rounds {
        let l = snap.location(&loc).unwrap_or_else(|| panic!("no {loc} in {:?}", snap.locations));
        assert_eq!(l.live, 16, "{loc}");
        let age = Duration::from_nanos(l.oldest_live_ns.expect("age of live tasks"));
        // The snapshot was taken between `asked` and `answered`; the oldest of the 16 was spawned
        // between `before` and `after`.
        let (shortest, longest) = (asked - after, answered - before);
        // 1 ms for the two clocks (TSC and CLOCK_MONOTONIC) to disagree.
        assert!(age + Duration::from_millis(1) >= shortest, "{loc}: age {age:?} shorter than the truth ({shortest:?})");
        // Between two drain passes: 100 ms apart while idle; 400 ms leaves room for a busy host,
        // far below the second a reading without the floor would add.
        assert!(
            age <= longest + Duration::from_millis(400),
            "{loc}: age {age:?}, the truth at most {longest:?}: more than the drain floor allows"
        );
    }
}

/// Some tests of this file need `--cfg tokio_unstable`: a build without it fails here rather than
/// passing with them compiled out.
#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}
