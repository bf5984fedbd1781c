//! Fault suite: a worker that blocks the probe's sample signal (P7 defect 9, second half). Each
//! real-time signal sent to a thread that blocks it stays queued, counted against the user's
//! RLIMIT_SIGPENDING (shared with the host); the watchdog re-sent one every 50 ms for as long as
//! the stall lasted. It now stops after `MAX_EXPIRIES` unanswered requests in a row and says so.

use std::time::Duration;

#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}

/// Signals queued for this process's user (`SigQ` in /proc/self/status).
fn queued_signals() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("SigQ:")).expect("SigQ line");
    line.trim().split('/').next().unwrap().parse().unwrap()
}

#[inline(never)]
fn stalls_with_the_signal_blocked(ms: u64) {
    std::thread::sleep(std::hint::black_box(Duration::from_millis(ms)));
    std::hint::black_box(());
}

fn set_mask(how: libc::c_int, signal: i32) {
    // SAFETY: changes this thread's mask for one signal, through a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

#[test]
fn a_worker_that_blocks_the_sample_signal_is_not_signalled_for_ever() {
    let _s = stallscope_tests::serial();
    let probe =
        stallscope_probe::Probe::builder().server(false).stall_threshold(Duration::from_millis(20)).build().unwrap();
    let signal = libc::SIGRTMIN() + probe.config().signal_offset;
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    let rt = b.build().unwrap();
    let guard = probe.start(rt.handle());
    let before = queued_signals();
    let queued = rt.block_on(async move {
        tokio::spawn(async move {
            set_mask(libc::SIG_BLOCK, signal);
            // 1.2 s: 24 requests of 50 ms each if every one were sent.
            stalls_with_the_signal_blocked(1_200);
            let queued = queued_signals();
            // Unblocked, the queued signals reach the handler with no request waiting for them;
            // the worker must go on.
            set_mask(libc::SIG_UNBLOCK, signal);
            queued
        })
        .await
        .unwrap()
    });
    // The service goes on after the queued signals were delivered.
    let n = rt.block_on(async { tokio::spawn(async { 41 + 1 }).await.unwrap() });
    assert_eq!(n, 42);
    let snap = probe.refresh(Duration::from_secs(5)).unwrap();
    drop(guard);
    let sent = queued.saturating_sub(before);
    assert!(sent <= 4, "{sent} sample signals queued on the blocking thread (at most 3 unanswered, 1 in flight)");
    assert!(sent >= 1, "the thread was signalled at all ({sent})");
    assert!(snap.stall_count >= 1, "the stall is still reported: {}", stallscope_tests::describe(&snap));
    assert!(
        snap.process.missing.iter().any(|m| m.contains("sample signals in a row unanswered")),
        "{:?}",
        snap.process.missing
    );
}
