//! Stalls that end while a stack sample is on its way lose nothing.
//!
//! The watchdog asks for a sample every sample interval while a poll is stalled; a poll that ends
//! between the request and the signal's delivery is caught in its next poll (or parked), and that
//! sample is dropped so that no other code is blamed. That is the sampling's granularity, not a
//! bound the probe hit: it must not be counted in `drops.samples`, which raises "probe dropped
//! data" on a clean service. Counted, it did so in one run of the demo in two to four.
//!
//! Beside CPU hogs a second loss showed here: while the aggregator was behind on its queue (its
//! symbolizer's warm-up at start), it read a stall's long-poll record, closed it as unclaimed
//! after 100 ms, then ignored the stall's queued start and every sample of it (the stall was
//! reported without stacks). It now waits for every start sent before it read the record
//! (`aggregator::join`, `Join::starts_sent`).
//! Run in release (`debug = "line-tables-only"` in the workspace profile).

use std::hint::black_box;
use std::time::{Duration, Instant};

use stallscope_tests::{describe, serial, Service};

/// Stalls run.
const STALLS: u64 = 600;

#[inline(never)]
fn spin(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    while start.elapsed() < d {
        x = black_box(x.rotate_left(7) ^ 0xA5A5_A5A5);
    }
    x
}

#[test]
fn stalls_ending_as_a_sample_lands_drop_no_data() {
    let _s = serial();
    // The shortest threshold and sample interval the probe allows, so that a stall's end often
    // falls between a sample's request and its signal: the race is as likely as that gap is long
    // against the interval. Lengths sweep the interval's phase in 5 µs steps.
    let snap = Service::multi()
        .probe(|b| {
            b.stall_threshold(Duration::from_millis(2)).sample_interval(Duration::from_micros(200)).max_stalls(1_000)
        })
        .run(|_| async {
            for i in 0..STALLS {
                let d = Duration::from_micros(2_300 + (i % 40) * 5 + (i % 3) * 400);
                tokio::spawn(async move { black_box(spin(d)) }).await.unwrap();
            }
        });
    assert!(snap.stall_count >= STALLS / 2, "{} stalls of {STALLS}\n{}", snap.stall_count, describe(&snap));
    let sampled: u64 = snap.stalls.iter().flat_map(|s| &s.stacks).map(|c| c.count).sum();
    assert!(sampled > 0, "no samples at all\n{}", describe(&snap));
    assert_eq!(snap.drops.samples, 0, "samples counted as dropped\n{}", describe(&snap));
    assert!(!snap.process.missing.iter().any(|m| m.contains("sample")), "missing: {:?}", snap.process.missing);
}
