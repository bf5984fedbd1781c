//! What an idle service pays for the probe, and what it keeps (P7, "Idle cost").
//!
//! While every worker is parked the watchdog sleeps until one unparks, instead of scanning every
//! threshold / 2 (`state::WatchdogSleep`). The cost itself is measured in the overhead bench
//! (`--idle`, docs/benchmarks.md "Idle cost"); these tests assert the mechanism: the watchdog's
//! wake-ups over an idle spell are few, and a stall that begins right after a long idle spell is
//! still caught while it runs (its stack sampled), never shorter than it was and at most
//! `LATE_MS` longer, on both runtime flavours. Both hold beside CPU hogs: they count wake-ups and
//! bound lengths from below, never the machine's speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use stallscope_tests::{describe, serial, user_frames, Flavor, Service, LATE_MS, SLACK_NS};

/// The stall threshold of these tests (the default): the watchdog's cadence while a service is
/// busy is half of it, 5 ms, so 2 s idle would be about 400 wake-ups without the deep sleep.
const THRESHOLD: Duration = Duration::from_millis(10);

#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}

/// Over 2 s of idle time (after the heartbeat has backed off), the watchdog wakes a few times a
/// second: once per heartbeat beat (its worker's unpark wakes it) plus the scans that see the
/// worker park again, and its one-second safety-net timeout. Scanning on its busy cadence it woke
/// about 400 times.
#[test]
fn an_idle_service_lets_the_watchdog_sleep() {
    let _s = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        let (_, (wakes, deep)) =
            Service::of(flavor).probe(|b| b.stall_threshold(THRESHOLD)).run_with(|probe| async move {
                // The heartbeat's period doubles from 25 ms to 1 s while nothing runs: 1.6 s.
                tokio::time::sleep(Duration::from_millis(1_800)).await;
                let before = probe.sampler_stats();
                tokio::time::sleep(Duration::from_secs(2)).await;
                let after = probe.sampler_stats();
                (after.watchdog_wakes - before.watchdog_wakes, after.watchdog_deep_sleeps - before.watchdog_deep_sleeps)
            });
        eprintln!("{flavor:?}: {wakes} watchdog wake-ups, {deep} deep sleeps in 2 s idle");
        assert!(deep >= 1, "{flavor:?}: the watchdog never slept until an unpark ({wakes} wake-ups in 2 s)");
        // 2 s at one scan per threshold / 2 would be 400; a heartbeat beat a second costs a few.
        assert!(wakes <= 40, "{flavor:?}: the watchdog woke {wakes} times in 2 s idle ({deep} deep sleeps)");
    }
}

#[inline(never)]
fn culprit_after_idle(ms: u64) -> i64 {
    let began = Instant::now();
    std::thread::sleep(black_box(Duration::from_millis(ms)));
    black_box(began.elapsed().as_nanos() as i64)
}

/// Three stalls, each right after 1.2 s of idle time (the watchdog asleep until an unpark, the
/// heartbeat backed off): the unpark that runs each one wakes the watchdog, which samples it
/// while it runs and bounds its start by that unpark. Without the wake-up the watchdog would
/// sleep through it (up to 1 s) and the stall would go unseen or unsampled.
#[test]
fn a_stall_right_after_a_long_idle_spell_is_caught_with_its_stack_and_not_shortened() {
    let _s = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        let (snap, (actual, deep)) =
            Service::of(flavor).probe(|b| b.stall_threshold(THRESHOLD)).run_with(|probe| async move {
                let mut actual = Vec::new();
                let mut deep = Vec::new();
                for i in 0..3u64 {
                    let before = probe.sampler_stats().watchdog_deep_sleeps;
                    tokio::time::sleep(Duration::from_millis(1_200)).await;
                    deep.push(probe.sampler_stats().watchdog_deep_sleeps - before);
                    actual.push(tokio::spawn(async move { culprit_after_idle(60 + 10 * i) }).await.unwrap());
                }
                (actual, deep)
            });
        assert!(deep.iter().all(|&d| d >= 1), "{flavor:?}: the watchdog did not sleep before each stall: {deep:?}");
        let mut stalls: Vec<_> = snap.finished_stalls().collect();
        assert_eq!(stalls.len(), actual.len(), "{flavor:?}: {}", describe(&snap));
        stalls.sort_by_key(|s| s.start_unix_ms);
        for (s, &a) in stalls.iter().zip(&actual) {
            let frames = user_frames(s);
            assert!(
                frames.iter().take(3).any(|f| f.ends_with("culprit_after_idle")),
                "{flavor:?}: stall not sampled while it ran (frames {frames:?})\n{}",
                describe(&snap)
            );
            let d = s.duration_ns.unwrap_or(0) as i64;
            let late = (d - a) as f64 / 1e6;
            assert!(
                d + SLACK_NS as i64 >= a && late <= LATE_MS,
                "{flavor:?}: reported {d} ns for a {a} ns stall ({late:+.2} ms)\n{}",
                describe(&snap)
            );
        }
    }
}
