//! Code Tokio polls without calling a task hook: the `block_on` future of a current-thread
//! runtime and the tasks of a `LocalSet` it drives. A blocking call there is one stall, never
//! reported shorter than the block (measured inside it) and at most a few scan intervals longer,
//! naming the blocking function, with `task: None` and what it was in `spawned_at`
//! (`Stall::unhooked_origin`). `LocalRuntime`'s `spawn_local` tasks go through the task hooks and
//! are reported like any task. Busy `LocalSet`s of short polls raise nothing.
//! Run in release (`debug = "line-tables-only"`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use stallscope_probe::wire::{Snapshot, Stall, StallCause};
use stallscope_probe::Probe;
use stallscope_tests::{describe, expect_stall, serial, Service};

/// How much longer than the block an unhooked stall may be reported: its start is bounded by
/// the thread's unpark (exact here) or the scan before the last loop turn the watchdog saw, its
/// end by the scan that sees the loop move on (every sample interval, 2 ms, while it lasts),
/// plus the watchdog's own wake-up delay on a busy host (seen up to 17 ms beside two CPU hogs).
const LATE_MS: f64 = 25.0;

/// Blocks for `ms` and returns how long that took, measured inside (ns).
fn block_measured(ms: u64) -> u64 {
    let began = Instant::now();
    std::thread::sleep(black_box(Duration::from_millis(ms)));
    began.elapsed().as_nanos() as u64
}

#[inline(never)]
fn blocking_in_local_task() -> u64 {
    black_box(block_measured(45))
}

#[inline(never)]
fn blocking_in_block_on_future() -> u64 {
    black_box(block_measured(55))
}

#[inline(never)]
fn blocking_in_local_runtime_task() -> u64 {
    black_box(block_measured(35))
}

#[inline(never)]
fn blocking_in_local_runtime_root() -> u64 {
    black_box(block_measured(65))
}

/// The one stall naming `function`, with its origin, lasting at least `actual_ns` and at most
/// `LATE_MS` more.
fn expect_unhooked<'a>(snap: &'a Snapshot, function: &str, origin: &str, actual_ns: u64) -> &'a Stall {
    let e = expect_stall(snap).naming(function).once();
    let s = e.stalls()[0];
    assert_eq!(s.task, None, "{}", describe(snap));
    assert_eq!(s.unhooked_origin(), Some(origin), "{}", describe(snap));
    let d = s.duration_ns.unwrap_or(0);
    let late = (d as f64 - actual_ns as f64) / 1e6;
    assert!(
        (0.0..=LATE_MS).contains(&late),
        "{function}: reported {d} ns for a {actual_ns} ns block ({late:+.2} ms)\n{}",
        describe(snap)
    );
    assert_eq!(snap.stall_count, 1, "{}", describe(snap));
    // Its anatomy, measured like a poll's: these blocks are sleeps. (A stall whose thread left
    // the runtime before the watchdog saw it end has none, rather than a wrong one.)
    let Some(a) = s.anatomy.as_ref() else { return s };
    assert_eq!(a.dominant(), StallCause::Blocked, "{function}: {}", a.describe());
    let main = a.main_blocked_in().unwrap_or_else(|| panic!("{function}: blocked in nothing: {a:?}"));
    assert!(main.syscall.contains("nanosleep"), "{function}: {}", a.describe());
    assert_eq!(a.on_cpu_ns + a.waiting_ns + a.blocked_ns, d);
    s
}

#[test]
fn a_local_set_task_on_a_current_thread_runtime() {
    let _s = serial();
    let (snap, actual) = Service::current().run_with(|_| async {
        // A real service awaits something before its first request: the runtime parks.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let local = tokio::task::LocalSet::new();
        let d = local
            .run_until(async { tokio::task::spawn_local(async { blocking_in_local_task() }).await.unwrap() })
            .await;
        // ... and goes on serving: the runtime parks again (a `block_on` that returns right after
        // the block is the test below).
        tokio::time::sleep(Duration::from_millis(5)).await;
        d
    });
    let s = expect_unhooked(&snap, "blocking_in_local_task", "LocalSet task", actual);
    assert!(s.anatomy.is_some(), "an anatomy\n{}", describe(&snap));
    // The alert says what it was, not "task spawned at (LocalSet task)".
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == stallscope_probe::wire::AlertKind::BlockingPoll)
        .unwrap_or_else(|| panic!("a blocking-poll alert: {:?}", snap.alerts));
    assert!(alert.summary.contains("in a LocalSet task (no task hook)"), "{}", alert.summary);
}

#[test]
fn the_block_on_future_of_a_current_thread_runtime() {
    let _s = serial();
    let (snap, actual) = Service::current().run_with(|_| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let d = blocking_in_block_on_future();
        tokio::time::sleep(Duration::from_millis(5)).await;
        d
    });
    let s = expect_unhooked(&snap, "blocking_in_block_on_future", "block_on future", actual);
    assert!(s.anatomy.is_some(), "an anatomy\n{}", describe(&snap));
}

/// The `block_on` future returns right after it blocks: no park or poll ends the stall; the
/// samples that find the thread outside the runtime do.
#[test]
fn a_block_on_future_that_returns_right_after_blocking() {
    let _s = serial();
    let (snap, actual) = Service::current().run_with(|_| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        blocking_in_block_on_future()
    });
    expect_unhooked(&snap, "blocking_in_block_on_future", "block_on future", actual);
}

/// `LocalRuntime` (unstable): its `spawn_local` tasks are scheduler tasks and go through the
/// task hooks (a task id and a spawn location); its `block_on` future is unhooked like a
/// current-thread runtime's.
#[test]
fn local_runtime_tasks_are_hooked_and_its_block_on_future_is_not() {
    let _s = serial();
    let probe = Probe::builder().build().expect("probe");
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    probe.install(&mut b);
    let rt = b.build_local(Default::default()).expect("local runtime");
    let guard = probe.start(rt.handle());
    let (task_ns, root_ns) = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let task_ns = tokio::task::spawn_local(async { blocking_in_local_runtime_task() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let root_ns = blocking_in_local_runtime_root();
        tokio::time::sleep(Duration::from_millis(5)).await;
        (task_ns, root_ns)
    });
    drop(rt);
    let snap = probe.refresh(Duration::from_secs(10)).expect("a snapshot");
    drop(guard);
    let e = expect_stall(&snap).naming("blocking_in_local_runtime_task").once();
    let task = e.stalls()[0];
    assert!(task.task.is_some(), "a LocalRuntime task is a hooked task: {}", describe(&snap));
    assert!(task.spawned_at.contains("blind_spots.rs"), "{}", describe(&snap));
    // (Its length is a hooked poll's, with the bounds `tests/tests/stalls.rs` checks.)
    let _ = task_ns;
    let e = expect_stall(&snap).naming("blocking_in_local_runtime_root").once();
    let root = e.stalls()[0];
    assert_eq!(root.unhooked_origin(), Some("block_on future"), "{}", describe(&snap));
    let late = (root.duration_ns.unwrap_or(0) as f64 - root_ns as f64) / 1e6;
    assert!((0.0..=LATE_MS).contains(&late), "root: {late:+.2} ms\n{}", describe(&snap));
    assert_eq!(snap.stall_count, 2, "{}", describe(&snap));
}

/// A `LocalSet` kept busy by short polls for far longer than the threshold, with idle gaps in
/// between: the LocalSet returns to the scheduler every 61 tasks, which the watchdog sees (the
/// runtime's busy time moves), so none of it is a stall; nor is the runtime's idle time. (What
/// the watchdog cannot see is a task boundary inside those 61: 61 polls of 200 µs back to back
/// are one 12 ms stall, `docs/guide.md`; so is a tick stretched past the threshold by waiting for
/// a CPU on an overloaded host.)
#[test]
fn a_busy_local_set_of_short_polls_raises_no_stall() {
    let _s = serial();
    let (snap, busy) = Service::current().run_with(|_| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let local = tokio::task::LocalSet::new();
        let busy = local
            .run_until(async {
                let mut busy = Vec::new();
                for round in 0..5u32 {
                    let began = Instant::now();
                    // 10,000 tasks of 20 short polls each: 200,000 polls back to back, spawned 50
                    // at a time (spawning 10,000 in one poll would be a long poll of its own).
                    let mut handles = Vec::new();
                    for _ in 0..200 {
                        for _ in 0..50 {
                            handles.push(tokio::task::spawn_local(async {
                                for _ in 0..20 {
                                    tokio::task::yield_now().await;
                                }
                            }));
                        }
                        tokio::task::yield_now().await;
                    }
                    for h in handles {
                        h.await.unwrap();
                    }
                    busy.push(began.elapsed());
                    tokio::time::sleep(Duration::from_millis(10 + 5 * u64::from(round))).await;
                }
                busy
            })
            .await;
        // Idle: the runtime parks.
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy
    });
    // Each round kept the LocalSet busy well past the threshold (10 ms) without a pause.
    assert!(busy.iter().all(|d| *d >= Duration::from_millis(15)), "rounds too short to mean anything: {busy:?}");
    assert_eq!(snap.stall_count, 0, "{}", describe(&snap));
    assert!(snap.stalls.is_empty(), "{}", describe(&snap));
    // Nothing thrown away for want of room (a sample signal that a starved thread did not take
    // within its timeout is counted as lost, and may be).
    assert_eq!(snap.drops.stalls, 0, "{:?}", snap.drops);
}
