//! Deterministic fuzzing of every decoder: random byte strings and random mutations of valid
//! frames, handshakes, message streams and recordings (the generator and the decoders it drives
//! are in `support/fuzz.rs`, shared with the fault suite's `tests/tests/fuzz_frames.rs`, which
//! runs them on a live probe's own stream). The property checked is that decoders return (`Ok`
//! or `Err`), never panic, and never blow up memory: a counting allocator measures the most
//! memory the decoders held at once for each input, which must stay within `MEMORY_BOUND` (a
//! length prefix claiming gigabytes must not be believed).
//!
//! Runs `INPUTS` inputs (120,000 in release builds; 12,000 in debug builds, where it is ~10×
//! slower), from a fixed seed, so a failure reproduces. Set `STALLSCOPE_FUZZ_INPUTS` and
//! `STALLSCOPE_FUZZ_SEED` to run longer or elsewhere:
//!
//! ```text
//! STALLSCOPE_FUZZ_INPUTS=5000000 STALLSCOPE_FUZZ_SEED=7 cargo test --release -p stallscope-wire --test fuzz
//! ```

mod support;

use stallscope_wire::{Encoder, Update};

use support::fixture::{self, Rng};
use support::fuzz::{mutate, Corpus, Counting};

const INPUTS: u64 = if cfg!(debug_assertions) { 12_000 } else { 120_000 };

/// The most memory decoding one input may hold at once, beyond what was held before it: the
/// inputs are at most a few hundred KiB, and nothing a peer sends may make a decoder allocate
/// what a length field claims before the bytes are there (the frame limit is 16 MiB). The
/// recording reader once held 10 MiB for a mutated record length; 1.3 MiB is the most seen since.
const MEMORY_BOUND: usize = 4 << 20;

#[global_allocator]
static ALLOC: Counting = Counting;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// A realistic but smaller session, so that one decode stays in the tens of microseconds.
fn small_session(seed: u64, n: usize) -> Vec<Update> {
    let mut updates = fixture::session(seed, n);
    for u in &mut updates {
        if let Update::Tick { snapshot, interval } = u {
            snapshot.stalls.truncate(3);
            snapshot.locations.truncate(8);
            snapshot.workers.truncate(2);
            snapshot.pools.truncate(1);
            interval.locations.truncate(4);
            interval.stalls.truncate(1);
        }
    }
    updates
}

fn corpus() -> Corpus {
    let (recording, _) = support::record(
        &small_session(32, 6),
        stallscope_wire::recording::RecordingOptions::default().keyframe_every(3),
    );
    Corpus::new(&small_session(31, 14), fixture::process_info(), recording)
}

#[test]
fn decoders_never_panic_on_random_and_mutated_input() {
    let inputs = env_u64("STALLSCOPE_FUZZ_INPUTS").unwrap_or(INPUTS);
    let seed = env_u64("STALLSCOPE_FUZZ_SEED").unwrap_or(0x5743_5343);
    let o = support::fuzz::run(&corpus(), inputs, seed, MEMORY_BOUND, |_| {});
    println!("fuzz: {}", o.summary());
    assert_eq!(o.panics, 0, "decoders panicked; reproduce with STALLSCOPE_FUZZ_SEED={seed}: {:?}", o.first_panics);
    assert_eq!(o.over_bound, 0, "decoders held more than {MEMORY_BOUND} bytes at once: {:?}", o.first_over);
    // The counter works: decoding the corpus allocates.
    assert!(o.most_held > 0, "the counting allocator saw nothing");
    assert!(
        inputs < 1000 || (o.stats.ok > inputs / 10 && o.stats.err > inputs / 10),
        "mutations too mild or too harsh: {:?}",
        o.stats
    );
    assert!(inputs < 1000 || o.recordings.1 > 0 && o.recordings.2 > 0, "recording damage paths not reached");
}

#[test]
fn long_lived_decoder_survives_random_messages_and_stays_usable() {
    // One long-lived decoder fed valid-looking garbage: failed messages leave no trace.
    let corpus = corpus();
    let mut rng = Rng::new(99);
    let mut d = corpus.warm.last().unwrap().clone();
    for _ in 0..if cfg!(debug_assertions) { 500 } else { 5_000 } {
        let k = rng.below(corpus.messages.len() as u64) as usize;
        let m = mutate(&mut rng, corpus.messages[k].clone(), &corpus.stream);
        let _ = d.decode_payload(&m);
    }
    // Still usable for a self-contained message.
    let u = small_session(40, 1).remove(0);
    let m = Encoder::new().encode(&u).unwrap();
    assert_eq!(d.decode_update(m).unwrap(), u);
}
