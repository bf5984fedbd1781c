//! Fault suite: a worker that blocks the probe's sample signal (P7 defect 9, second half). Each
//! real-time signal sent to a thread that blocks it stays queued, counted against the user's
//! RLIMIT_SIGPENDING (shared with the host); the watchdog re-sent one every 50 ms for as long as
//! the stall lasted. It now stops after `MAX_EXPIRIES` unanswered requests in a row and says so,
//! and signals the thread again once it unblocks the signal.

use std::time::Duration;

#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}

/// Takes every instance of `signal` queued for the calling thread, which blocks it, and counts
/// them: each is one sample request the watchdog sent.
fn take_queued(signal: i32) -> u64 {
    let mut n = 0;
    // SAFETY: sigtimedwait on a set we own, with a zero timeout; it only dequeues `signal`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == signal {
            n += 1;
        }
    }
    n
}

#[inline(never)]
fn stalls_with_the_signal_blocked(ms: u64) {
    std::thread::sleep(std::hint::black_box(Duration::from_millis(ms)));
    std::hint::black_box(());
}

#[inline(never)]
fn stalls_after_unblocking_it(ms: u64) {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    while std::time::Instant::now() < until {
        std::hint::black_box(());
    }
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
    // One thread, so the stall after unblocking runs on the thread that was muted.
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    probe.install(&mut b);
    let rt = b.build().unwrap();
    let guard = probe.start(rt.handle());
    let queued = rt.block_on(async move {
        tokio::spawn(async move {
            set_mask(libc::SIG_BLOCK, signal);
            // 1.2 s: 24 requests of 50 ms each if every one were sent.
            stalls_with_the_signal_blocked(1_200);
            let queued = take_queued(signal);
            set_mask(libc::SIG_UNBLOCK, signal);
            // A new poll on the same thread, now that it takes the signal: sampled again.
            tokio::task::yield_now().await;
            stalls_after_unblocking_it(150);
            queued
        })
        .await
        .unwrap()
    });
    let n = rt.block_on(async { tokio::spawn(async { 41 + 1 }).await.unwrap() });
    assert_eq!(n, 42);
    let snap = probe.refresh(Duration::from_secs(5)).unwrap();
    drop(guard);
    let sent = queued;
    assert!(sent <= 4, "{sent} sample signals queued on the blocking thread (at most 3 unanswered, 1 in flight)");
    assert!(sent >= 1, "the thread was signalled at all ({sent})");
    assert!(snap.stall_count >= 1, "the stall is still reported: {}", stallscope_tests::describe(&snap));
    stallscope_tests::expect_stall(&snap).naming("stalls_after_unblocking_it").once();
    let after = snap
        .stalls
        .iter()
        .find(|s| stallscope_tests::user_frames(s).iter().any(|f| f.contains("stalls_after_unblocking_it")));
    assert!(after.is_some_and(|s| s.stacks.iter().map(|c| c.count).sum::<u64>() >= 2), "sampled again once unblocked");
    assert!(
        snap.process.missing.iter().any(|m| m.contains("sample signals in a row unanswered")),
        "{:?}",
        snap.process.missing
    );
}
