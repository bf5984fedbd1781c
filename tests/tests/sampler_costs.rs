//! The sampler's own cost counters (`Probe::sampler_stats`) after real, sampled stalls: the
//! signal handler timed itself, the watchdog timed its unwinds, the symbolizer timed its new
//! addresses. Only sanity bounds, no timing thresholds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use stallscope_tests::{describe, expect_stall, Service};

#[inline(never)]
fn sleeps_in_a_poll() {
    std::thread::sleep(black_box(Duration::from_millis(60)));
}

#[inline(never)]
fn spins_in_a_poll() -> u64 {
    let until = Instant::now() + Duration::from_millis(60);
    let mut n = 0u64;
    while Instant::now() < until {
        n = black_box(n.wrapping_mul(31).wrapping_add(7));
    }
    n
}

#[test]
fn sampled_stalls_fill_the_sampler_cost_counters() {
    let _serial = stallscope_tests::serial();
    let (snap, probe) = Service::multi().run_with(|probe| async move {
        tokio::spawn(async { sleeps_in_a_poll() }).await.unwrap();
        tokio::spawn(async { black_box(spins_in_a_poll()) }).await.unwrap();
        probe
    });
    expect_stall(&snap).naming("sleeps_in_a_poll").once();
    expect_stall(&snap).naming("spins_in_a_poll").once();
    let s = probe.sampler_stats();
    let ctx = format!("{s:#?}\n{}", describe(&snap));

    assert!(s.samples_captured >= 1, "no capture collected: {ctx}");
    assert!(s.handler_p50 > Duration::ZERO, "handler time not measured: {ctx}");
    assert!(s.handler_p50 < Duration::from_millis(1), "handler p50 implausible: {ctx}");
    assert!(s.handler_p50 <= s.handler_p99 && s.handler_p99 <= s.handler_max, "{ctx}");
    assert!(s.stack_bytes_copied > 0, "no stack copied: {ctx}");

    assert!(s.samples_unwound >= 1 && s.samples_unwound <= s.samples_captured, "{ctx}");
    assert!(s.frames_unwound >= s.samples_unwound, "{ctx}");
    assert!(s.unwind_p50 > Duration::ZERO, "unwind time not measured: {ctx}");

    // The stalls' stacks were symbolized when the snapshot was made.
    assert!(s.symbolized_addresses >= 1 && s.symbolize_batches >= 1, "{ctx}");
    assert!(s.symbolize_time > Duration::ZERO && s.symbolize_per_address().is_some(), "{ctx}");
    assert!(s.symbolize_warm_up > Duration::ZERO, "{ctx}");
    eprintln!("sampler costs: {s:?}");
}
