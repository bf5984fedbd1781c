//! Fault suite (P7): runtimes that come and go under one probe, and probes that share a process.
//! Each test runs a live service on real runtimes and asserts that the service's own work goes
//! on, that stalls are still seen with their stacks where they should be and nowhere else, that
//! thread slots and threads are given back, and that the probe says what it lost.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_probe::wire::{Snapshot, Update};
use stallscope_probe::Probe;
use stallscope_tests::{describe, expect_stall, user_frames, Client};

#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn live_tids() -> HashSet<i32> {
    std::fs::read_dir("/proc/self/task").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Waits (up to 10 s: threads exit asynchronously) until at most `n` threads are left.
fn threads_settle_at_most(n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = threads_of_this_process();
        if now <= n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn socket_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stallscope-{tag}-{}", std::process::id()))
}

fn runtime(probe: &Probe) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).max_blocking_threads(2).enable_all();
    probe.install(&mut b);
    b.build().unwrap()
}

/// The service's own work: a ticker that spawns a short request task every 2 ms; `served`
/// counts the requests that completed.
fn serve(rt: &tokio::runtime::Runtime) -> Arc<AtomicU64> {
    let served = Arc::new(AtomicU64::new(0));
    let s = served.clone();
    rt.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let s = s.clone();
            tokio::spawn(async move {
                black_box(vec![0u8; 256]);
                s.fetch_add(1, Relaxed);
            });
        }
    });
    served
}

/// Waits until the service has served `more` requests beyond `from` (up to 10 s).
#[track_caller]
fn service_goes_on(served: &AtomicU64, more: u64) {
    let from = served.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.load(Relaxed) < from + more {
        assert!(Instant::now() < deadline, "the service stopped: {} requests served", served.load(Relaxed));
        std::thread::sleep(Duration::from_millis(5));
    }
}

// Each culprit sleeps a different time: identical bodies would be folded into one by the
// linker, and the stacks would name one for the other (docs/guide.md, "Known effects").
#[inline(never)]
fn stalls_on_a_rebuilt_runtime() {
    std::thread::sleep(black_box(Duration::from_millis(40)));
    black_box(());
}

#[inline(never)]
fn stalls_on_runtime_a() {
    std::thread::sleep(black_box(Duration::from_millis(41)));
    black_box(());
}

#[inline(never)]
fn stalls_on_runtime_b() {
    std::thread::sleep(black_box(Duration::from_millis(42)));
    black_box(());
}

#[inline(never)]
fn stalls_on_the_started_runtime() {
    std::thread::sleep(black_box(Duration::from_millis(43)));
    black_box(());
}

#[inline(never)]
fn stalls_on_the_other_runtime() {
    std::thread::sleep(black_box(Duration::from_millis(44)));
    black_box(());
}

/// A snapshot in which `n` ended stalls name `function`, refreshing for up to 10 s: Tokio wakes
/// a task's joiner before the poll's after-poll hook runs, so a refresh made as soon as the
/// stalled task's handle resolves may still see its poll running.
#[track_caller]
fn with_ended(probe: &Probe, function: &str, n: usize) -> Arc<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = probe.refresh(Duration::from_secs(10)).expect("a snapshot");
        let ended = snap
            .finished_stalls()
            .filter(|s| !s.stacks.is_empty() && user_frames(s).iter().any(|f| f.ends_with(function)))
            .count();
        if ended >= n || Instant::now() > deadline {
            return snap;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn names(snap: &Snapshot, function: &str) -> usize {
    snap.stalls.iter().filter(|s| user_frames(s).iter().any(|f| f.ends_with(function))).count()
}

/// Every slot the probe lists as held belongs to a thread that is still alive.
#[track_caller]
fn no_slot_held_by_a_dead_thread(snap: &Snapshot) {
    let alive = live_tids();
    let stale: Vec<i32> = snap.workers.iter().map(|w| w.tid).filter(|t| *t != 0 && !alive.contains(t)).collect();
    assert!(stale.is_empty(), "slots still held by exited threads {stale:?}");
    assert_eq!(snap.drops.threads_without_slot, 0, "threads found no free slot");
}

/// The same probe on a runtime dropped and rebuilt five times, stopped and started with it, with
/// room for only 8 threads: each new runtime's stall is seen with its stack, every exited
/// worker and blocking thread gives its slot back (five runtimes' threads would need 20), the
/// process's thread count and the tasks the probe counts alive come back to where they were.
#[test]
fn a_runtime_dropped_and_rebuilt_under_one_probe_is_watched_each_time_and_leaks_nothing() {
    let _s = stallscope_tests::serial();
    let dir = socket_dir("rebuilt");
    let probe = Probe::builder().name("rebuilt").socket_dir(&dir).max_threads(8).build().unwrap();
    let mut settled = None;
    for cycle in 0..5 {
        let rt = runtime(&probe);
        let guard = probe.start(rt.handle());
        let served = serve(&rt);
        // A client attaches to this run's socket.
        let mut client = Client::connect(&probe.socket_path().unwrap()).expect("a client attaches");
        rt.block_on(async {
            for _ in 0..4 {
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1))).await.unwrap();
            }
            tokio::spawn(async { stalls_on_a_rebuilt_runtime() }).await.unwrap();
        });
        service_goes_on(&served, 20);
        let ended = client.until(Duration::from_secs(10), |u| {
            matches!(u, Update::StallEnded(s) if user_frames(s).iter().any(|f| f.ends_with("stalls_on_a_rebuilt_runtime")))
        });
        assert!(ended.is_some(), "cycle {cycle}: the client did not get the stall");
        drop(client);
        let running = probe.refresh(Duration::from_secs(10)).expect("a snapshot");
        assert!(running.process.missing.is_empty(), "cycle {cycle}: {:?}", running.process.missing);
        drop(rt);
        let snap = probe.refresh(Duration::from_secs(10)).expect("a snapshot");
        drop(guard);
        let ctx = format!("cycle {cycle}: {}\nworkers {:?}", describe(&snap), snap.workers);
        expect_stall(&snap).naming("stalls_on_a_rebuilt_runtime").once();
        assert!(snap.stalls.iter().all(|s| !s.stacks.is_empty()), "{ctx}");
        no_slot_held_by_a_dead_thread(&snap);
        // Every task of the dropped runtime ended for the probe too (Tokio runs the terminate
        // hook of each task it drops at shutdown), the heartbeat included.
        let alive: Vec<_> = snap.locations.iter().filter(|l| l.live > 0).map(|l| (&l.location, l.live)).collect();
        assert!(alive.is_empty(), "{ctx}\ntasks still counted alive: {alive:?}");
        // The runtime is gone and the probe, still running, says what stopped with it.
        assert!(
            snap.process.missing.iter().any(|m| m.contains("loop lag") && m.contains("shut down")),
            "cycle {cycle}: {:?}",
            snap.process.missing
        );
        assert_eq!(snap.drops.probe_panics, 0);
        // Threads: the first cycle starts the process's symbolizer, kept for good; from then on
        // each cycle comes back to the same count.
        let now = threads_settle_at_most(settled.unwrap_or(0));
        match settled {
            None => settled = Some(now),
            Some(n) => assert!(now <= n, "cycle {cycle}: {now} threads, {n} after the first cycle"),
        }
    }
    assert!(!Path::new(&dir).read_dir().unwrap().any(|e| e.is_ok()), "a socket was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two probes in one process, each installed on its own runtime: each sees its own stall only
/// (the two stall at the same time), both sockets serve their own probe, and dropping one probe
/// with its runtime leaves the other watching, serving and sampling.
#[test]
fn two_probes_on_two_runtimes_see_their_own_stalls_and_outlive_each_other() {
    let _s = stallscope_tests::serial();
    let dir = socket_dir("two-probes");
    let pa = Probe::builder().name("service-a").socket_dir(&dir).build().unwrap();
    let pb = Probe::builder().name("service-b").socket_dir(&dir).build().unwrap();
    let (rt_a, rt_b) = (runtime(&pa), runtime(&pb));
    let ga = pa.start(rt_a.handle());
    let gb = pb.start(rt_b.handle());
    let (served_a, served_b) = (serve(&rt_a), serve(&rt_b));
    let (path_a, path_b) = (pa.socket_path().unwrap(), pb.socket_path().unwrap());
    assert_ne!(path_a, path_b);
    let mut ca = Client::connect(&path_a).unwrap();
    let mut cb = Client::connect(&path_b).unwrap();
    assert_eq!(ca.welcome.process.name, "service-a");
    assert_eq!(cb.welcome.process.name, "service-b");

    // Both stall at once.
    let a = rt_a.spawn(async { stalls_on_runtime_a() });
    let b = rt_b.spawn(async { stalls_on_runtime_b() });
    rt_a.block_on(a).unwrap();
    rt_b.block_on(b).unwrap();
    let (sa, sb) = (with_ended(&pa, "stalls_on_runtime_a", 1), with_ended(&pb, "stalls_on_runtime_b", 1));
    expect_stall(&sa).naming("stalls_on_runtime_a").once();
    expect_stall(&sb).naming("stalls_on_runtime_b").once();
    assert_eq!(names(&sa, "stalls_on_runtime_b"), 0, "probe A reports B's stall\n{}", describe(&sa));
    assert_eq!(names(&sb, "stalls_on_runtime_a"), 0, "probe B reports A's stall\n{}", describe(&sb));
    // No thread polled tasks for both probes (the test's own thread, which spawns onto both
    // runtimes, is no poller).
    let pollers =
        |s: &Snapshot| s.workers.iter().filter(|w| w.polls > 0 && w.tid != 0).map(|w| w.tid).collect::<HashSet<_>>();
    assert!(pollers(&sa).is_disjoint(&pollers(&sb)), "{:?}\n{:?}", sa.workers, sb.workers);
    assert_eq!(pollers(&sa).len(), 2, "{:?}", sa.workers);
    // Each socket carries its own probe's stall, and not the other's.
    for (client, own, other) in [
        (&mut ca, "stalls_on_runtime_a", "stalls_on_runtime_b"),
        (&mut cb, "stalls_on_runtime_b", "stalls_on_runtime_a"),
    ] {
        let mut foreign = 0;
        let got = client.until(Duration::from_secs(10), |u| match u {
            Update::StallEnded(s) | Update::StallStarted(s) => {
                foreign += user_frames(s).iter().any(|f| f.ends_with(other)) as usize;
                matches!(u, Update::StallEnded(_)) && user_frames(s).iter().any(|f| f.ends_with(own))
            }
            Update::Tick { .. } => false,
        });
        assert!(got.is_some(), "no stall naming {own} on its socket");
        assert_eq!(foreign, 0, "{other} came through the socket of the probe of {own}");
    }

    // B goes away, probe and runtime; A goes on.
    drop(cb);
    drop(gb);
    drop(rt_b);
    drop(pb);
    assert!(path_a.exists(), "dropping probe B removed A's socket");
    assert!(!path_b.exists(), "probe B's socket was left behind");
    service_goes_on(&served_a, 20);
    let _ = served_b;
    rt_a.block_on(async { tokio::spawn(async { stalls_on_runtime_a() }).await.unwrap() });
    let got = ca.until(
        Duration::from_secs(10),
        |u| matches!(u, Update::StallEnded(s) if user_frames(s).iter().any(|f| f.ends_with("stalls_on_runtime_a"))),
    );
    assert!(got.is_some(), "A's client stopped getting A's stalls after B went away");
    let mut again = Client::connect(&path_a).expect("a new client attaches to A");
    assert!(again.until(Duration::from_secs(5), |u| matches!(u, Update::Tick { .. })).is_some());
    let sa = with_ended(&pa, "stalls_on_runtime_a", 2);
    expect_stall(&sa).naming("stalls_on_runtime_a").count(2);
    assert!(sa.stalls.iter().all(|s| !s.stacks.is_empty()), "{}", describe(&sa));
    assert_eq!(sa.drops.probe_panics, 0);
    drop(again);
    drop(ca);
    drop(ga);
    drop(rt_a);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One probe installed on two runtimes, started on the first: stalls on both are seen, each
/// once, with stacks. When the runtime it was started on is dropped, stalls on the other are
/// still seen and the probe says that its loop lag and runtime figures stopped with that runtime;
/// started again on the runtime that is left, it measures them again.
#[test]
fn one_probe_on_two_runtimes_outlives_the_runtime_it_was_started_on() {
    let _s = stallscope_tests::serial();
    let probe = Probe::builder().name("two-runtimes").server(false).build().unwrap();
    let (rt1, rt2) = (runtime(&probe), runtime(&probe));
    let guard = probe.start(rt1.handle());
    let (served1, served2) = (serve(&rt1), serve(&rt2));
    rt1.block_on(async { tokio::spawn(async { stalls_on_the_started_runtime() }).await.unwrap() });
    rt2.block_on(async { tokio::spawn(async { stalls_on_the_other_runtime() }).await.unwrap() });
    with_ended(&probe, "stalls_on_the_started_runtime", 1);
    let snap = with_ended(&probe, "stalls_on_the_other_runtime", 1);
    expect_stall(&snap).naming("stalls_on_the_started_runtime").once();
    expect_stall(&snap).naming("stalls_on_the_other_runtime").once();
    assert!(snap.process.missing.iter().all(|m| !m.contains("shut down")), "{:?}", snap.process.missing);
    service_goes_on(&served1, 10);

    // The runtime the probe was started on goes away; the probe keeps running.
    drop(rt1);
    let _ = served1;
    service_goes_on(&served2, 20);
    rt2.block_on(async { tokio::spawn(async { stalls_on_the_other_runtime() }).await.unwrap() });
    let snap = with_ended(&probe, "stalls_on_the_other_runtime", 2);
    expect_stall(&snap).naming("stalls_on_the_other_runtime").count(2);
    assert!(snap.stalls.iter().all(|s| !s.stacks.is_empty()), "{}", describe(&snap));
    no_slot_held_by_a_dead_thread(&snap);
    assert!(
        snap.process.missing.iter().any(|m| m.contains("loop lag") && m.contains("shut down")),
        "the probe does not say that its heartbeat's runtime is gone: {:?}",
        snap.process.missing
    );

    // Started again on the runtime that is left: lag is measured again, and said to be.
    drop(guard);
    let guard = probe.start(rt2.handle());
    let lag_before = probe.refresh(Duration::from_secs(10)).unwrap().lag.lag.count;
    std::thread::sleep(Duration::from_millis(300));
    let snap = probe.refresh(Duration::from_secs(10)).unwrap();
    assert!(snap.process.missing.iter().all(|m| !m.contains("shut down")), "{:?}", snap.process.missing);
    assert!(snap.lag.lag.count > lag_before, "no heartbeat on the runtime left");
    assert_eq!(snap.drops.probe_panics, 0);
    drop(guard);
    drop(rt2);
}
