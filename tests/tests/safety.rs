//! Probe safety and set-up: typed build errors that name the bad value, environment overrides,
//! refusing to install over someone else's signal handler, two runtimes with a probe each,
//! `block_in_place` labelling, `instrument` for futures the hooks never see, and loop lag.

use std::hint::black_box;
use std::time::Duration;

use stallscope_probe::{BuildError, Probe};
use stallscope_tests::{describe, expect_stall, serial, Service};

#[test]
fn build_errors_name_the_bad_value() {
    let e = Probe::builder().stall_threshold(Duration::from_micros(10)).build().unwrap_err();
    assert!(matches!(e, BuildError::Duration { name: "stall_threshold", .. }), "{e:?}");
    assert!(e.to_string().contains("stall_threshold") && e.to_string().contains("10µs"), "{e}");
    let e = Probe::builder().max_threads(0).build().unwrap_err();
    assert!(e.to_string().contains("max_threads") && e.to_string().contains("got 0"), "{e}");
    let e = Probe::builder().signal_offset(1000).build().unwrap_err();
    assert!(matches!(e, BuildError::SignalOffset { offset: 1000, .. }), "{e:?}");
    let e = Probe::builder().record_keep(u32::MAX).build().unwrap_err();
    assert!(matches!(e, BuildError::Limit { name: "record_keep", max: 1000, .. }), "{e:?}");
}

#[test]
fn environment_overrides_and_bad_values() {
    // Safe here: this test binary reads these variables nowhere else.
    std::env::set_var("STALLSCOPE_THRESHOLD_MS", "25");
    let p = Probe::builder().with_env().build().unwrap();
    assert_eq!(p.config().stall_threshold, Duration::from_millis(25));
    std::env::set_var("STALLSCOPE_THRESHOLD_MS", "soon");
    let e = Probe::builder().with_env().build().unwrap_err();
    assert!(e.to_string().contains("STALLSCOPE_THRESHOLD_MS") && e.to_string().contains("soon"), "{e}");
    // Without with_env the environment is ignored.
    assert!(Probe::builder().build().is_ok());
    std::env::remove_var("STALLSCOPE_THRESHOLD_MS");
}

extern "C" fn foreign_handler(_: libc::c_int) {}

#[test]
fn refuses_to_install_over_a_foreign_signal_handler() {
    let offset = 9;
    let signal = libc::SIGRTMIN() + offset;
    // SAFETY: installs a no-op handler for a real-time signal nobody else in this test uses.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = foreign_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
    }
    let e = Probe::builder().signal_offset(offset).build().unwrap_err();
    assert_eq!(e, BuildError::SignalInUse { signal, offset });
    assert!(e.to_string().contains("signal_offset"), "{e}");
    // The foreign handler is still in place.
    // SAFETY: reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old);
        assert_eq!(old.sa_sigaction, foreign_handler as *const () as usize);
    }
    // Sampling can be switched off instead, and the probe says so.
    let p = Probe::builder().signal_offset(offset).sampling(false).build().unwrap();
    assert!(!p.config().sampling);
}

#[inline(never)]
fn block_runtime_a() {
    std::thread::sleep(black_box(Duration::from_millis(40)));
    black_box(());
}

#[test]
fn two_runtimes_each_with_its_own_probe() {
    let _s = serial();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            Service::multi().run_with(|_| async {
                tokio::spawn(async { stallscope_tests::measured(block_runtime_a).0 }).await.unwrap()
            })
        });
        let b = s.spawn(|| {
            Service::current().run(|_| async {
                for _ in 0..200 {
                    tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
                }
            })
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, took) = a;
    expect_stall(&a).naming("block_runtime_a").once().covering(took);
    assert_eq!(b.stall_count, 0, "runtime B saw A's stall: {}", describe(&b));
    let spawned_b: u64 = b.locations.iter().filter(|l| !l.internal && !l.blocking).map(|l| l.spawned).sum();
    assert_eq!(spawned_b, 200);
    assert!(a.locations.iter().filter(|l| !l.internal && !l.blocking).all(|l| l.spawned <= 1));
}

#[inline(never)]
fn blocking_inside_block_in_place() {
    // Durations differ between culprits on purpose: identical functions get merged by the
    // linker and then carry each other's names (a documented effect).
    std::thread::sleep(black_box(Duration::from_millis(35)));
    black_box(());
}

#[test]
fn stalls_inside_block_in_place_are_labelled() {
    let _s = serial();
    let snap = Service::multi().run(|_| async {
        tokio::spawn(async { tokio::task::block_in_place(blocking_inside_block_in_place) }).await.unwrap();
    });
    let e = expect_stall(&snap).naming("blocking_inside_block_in_place").once();
    assert!(e.stalls()[0].in_block_in_place, "{}", describe(&snap));
    assert!(
        !snap.alerts.iter().any(|a| a.kind == stallscope_probe::wire::AlertKind::BlockingPoll),
        "block_in_place is allowed to block: {:?}",
        snap.alerts
    );
}

#[inline(never)]
fn root_future_blocks() {
    std::thread::sleep(black_box(Duration::from_millis(30)));
    black_box(());
}

#[test]
fn instrument_measures_the_block_on_root_future() {
    let _s = serial();
    let (snap, took) = Service::current()
        .run_with(|_| stallscope_probe::instrument(async { stallscope_tests::measured(root_future_blocks).0 }));
    let e = expect_stall(&snap).naming("root_future_blocks").once().covering(took);
    assert_eq!(e.stalls()[0].task, None, "an instrumented future is not a task");
    assert!(e.stalls()[0].spawned_at.contains("safety.rs"), "{}", describe(&snap));
}

#[test]
fn loop_lag_shows_a_stalled_current_thread_runtime() {
    let _s = serial();
    let snap = Service::current().run(|_| async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(80)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    });
    let max = snap.lag.lag.max_ns;
    assert!(max >= 50_000_000, "heartbeat lag max {max} ns after an 80 ms stall");
    assert!(snap.lag.lag.count >= 3);
}

#[test]
fn a_clean_service_raises_no_alert_and_drops_nothing() {
    let _s = serial();
    let snap = Service::multi().run(|_| async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..500u64 {
            set.spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 7)).await;
                black_box(i)
            });
        }
        while set.join_next().await.is_some() {}
    });
    assert!(snap.alerts.is_empty(), "{:?}", snap.alerts);
    assert_eq!(snap.drops.total(), 0, "{:?}", snap.drops);
    assert_eq!(snap.stall_count, 0, "{}", describe(&snap));
    // `Service::run` takes its snapshot after the runtime has shut down, which the probe says
    // (its loop lag stopped there); nothing else may be missing.
    assert!(snap.process.missing.iter().all(|m| m.contains("has shut down")), "{:?}", snap.process.missing);
}

#[inline(never)]
fn local_set_task_blocks() {
    std::thread::sleep(black_box(Duration::from_millis(25)));
    black_box(());
}

#[test]
fn instrument_measures_futures_driven_by_a_local_set() {
    let _s = serial();
    let (snap, took) = Service::current().run_with(|_| async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(stallscope_probe::instrument(async {
                    stallscope_tests::measured(local_set_task_blocks).0
                }))
                .await
                .unwrap()
            })
            .await
    });
    expect_stall(&snap).naming("local_set_task_blocks").once().covering(took);
}

/// Stopping the probe does not wait out the watchdog's interval. With a 20 s threshold the
/// watchdog sleeps up to 10 s between scans; dropping the guard wakes it.
#[test]
fn stopping_the_probe_does_not_wait_for_the_watchdog() {
    let _s = serial();
    let probe = Probe::builder().stall_threshold(Duration::from_secs(20)).build().expect("probe");
    let rt = stallscope_tests::runtime_with(&probe);
    let guard = probe.start(rt.handle());
    // Let the watchdog reach its first long sleep.
    std::thread::sleep(Duration::from_millis(200));
    let began = std::time::Instant::now();
    drop(guard);
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "dropping the guard took {took:?}");
}

#[inline(never)]
fn blocks_after_a_panic() {
    // 37 ms: a body identical to another function's (35 ms and 30 ms are taken here) is folded
    // into it by the linker, and the stall then carries the other's name.
    std::thread::sleep(black_box(Duration::from_millis(37)));
    black_box(());
}

/// A panic inside an `instrument`ed future closes its poll (P7 defect 1): the thread's next
/// stall is one finished stall of the task that made it, and nothing stays "stalled now". Left
/// open, the panicked poll kept the thread's accounting nested: the next task's poll never ended.
#[test]
fn a_panic_inside_an_instrumented_future_closes_its_poll() {
    let _s = serial();
    for service in [Service::current(), Service::multi()] {
        let snap = service.run(|_| async {
            let panicked = tokio::spawn(stallscope_probe::instrument(async {
                if black_box(true) {
                    panic!("a bug in the service");
                }
            }))
            .await;
            assert!(panicked.is_err_and(|e| e.is_panic()));
            tokio::spawn(async { blocks_after_a_panic() }).await.unwrap();
        });
        let e = expect_stall(&snap).naming("blocks_after_a_panic").once();
        let s = e.stalls()[0];
        assert!(s.task.is_some(), "the stall is the task's, not the instrumented future's: {}", describe(&snap));
        assert!(s.spawned_at.contains("safety.rs"), "{}", describe(&snap));
        // (The panic itself can be a stall too: the panic hook prints, and may symbolize a
        // backtrace, inside the poll.)
        assert!(snap.stalls.iter().all(|s| s.duration_ns.is_some()), "a stall never ended: {}", describe(&snap));
    }
}
