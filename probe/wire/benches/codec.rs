//! Encoded size and encode/decode time of realistic frames for each candidate codec.
//!
//! ```text
//! cargo bench -p stallscope-wire --bench codec              # full run (~30 s on 2 cores)
//! cargo bench -p stallscope-wire --bench codec -- --runs 50 # fewer runs
//! ```
//!
//! Frames measured (built by `tests/support/fixture.rs`, deterministic):
//! - **raw tick**: a plain `Update::Tick` (50 spawn locations, 40 recent stalls of 5 stacks of 25
//!   frames, 26-bucket histograms, 8 workers, 4 pools, 3 alerts) serialized as is;
//! - **interned, first**: the same tick through a fresh [`Encoder`] (every string, frame, stack
//!   and bucket-bounds list defined in the message), as a new client's first frame;
//! - **interned, steady**: the next tick through the same encoder (only new definitions), which
//!   is what a connected client receives every interval.
//!
//! Candidates: postcard, bincode 2 (serde, standard config: varints), rmp-serde (MessagePack,
//! structs as arrays) and serde_json (baseline). Each cell is the median of `--runs` timings
//! (default 200) after a warm-up; each timing covers `BATCH` operations to stay well above the
//! clock's resolution. Also printed: the Encoder/Decoder (interning) cost alone.
//!
//! Run without `--bench` (as `cargo test --benches` does), the binary only checks that every
//! codec round-trips the frames once and times nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};
use stallscope_wire::intern::{Decoder, Encoder};
use stallscope_wire::proto::ServerMessage;
use stallscope_wire::Update;

#[path = "../tests/support/fixture.rs"]
#[allow(unreachable_pub)]
mod fixture;

/// Operations per timing.
const BATCH: u32 = 5;

trait Codec {
    const NAME: &'static str;
    fn encode<T: Serialize>(value: &T) -> Vec<u8>;
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T;
}

struct Postcard;
impl Codec for Postcard {
    const NAME: &'static str = "postcard 1";
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).expect("postcard encode")
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
        postcard::from_bytes(bytes).expect("postcard decode")
    }
}

struct Bincode;
impl Codec for Bincode {
    const NAME: &'static str = "bincode 2 (serde, standard)";
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("bincode encode")
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).expect("bincode decode").0
    }
}

struct MessagePack;
impl Codec for MessagePack {
    const NAME: &'static str = "rmp-serde 1 (MessagePack)";
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec(value).expect("rmp encode")
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
        rmp_serde::from_slice(bytes).expect("rmp decode")
    }
}

struct Json;
impl Codec for Json {
    const NAME: &'static str = "serde_json 1 (baseline)";
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("json encode")
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
        serde_json::from_slice(bytes).expect("json decode")
    }
}

/// Median time per operation of `f` over `runs` timings of `BATCH` calls.
fn median_per_op(runs: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..BATCH {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCH {
                f();
            }
            start.elapsed() / BATCH
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

struct Frames {
    raw: Update,
    first: ServerMessage,
    steady: ServerMessage,
}

fn frames() -> Frames {
    let raw = fixture::tick(7, 1);
    let next = fixture::tick(7, 2);
    let mut encoder = Encoder::new();
    let first = encoder.encode(&raw).expect("encode first");
    let steady = encoder.encode(&next).expect("encode steady");
    Frames { raw, first, steady }
}

/// One table row per frame kind for codec `C`; checks the round trip first.
fn rows<C: Codec>(frames: &Frames, runs: Option<usize>, out: &mut Vec<String>) {
    let raw_bytes = C::encode(&frames.raw);
    assert_eq!(C::decode::<Update>(&raw_bytes), frames.raw, "{} round trip", C::NAME);
    let first_bytes = C::encode(&frames.first);
    assert_eq!(C::decode::<ServerMessage>(&first_bytes), frames.first, "{} round trip", C::NAME);
    let steady_bytes = C::encode(&frames.steady);
    assert_eq!(C::decode::<ServerMessage>(&steady_bytes), frames.steady, "{} round trip", C::NAME);
    let Some(runs) = runs else { return };

    let mut row = |label: &str, len: usize, enc: Duration, dec: Duration| {
        out.push(format!("| {} | {label} | {len} | {} | {} |", C::NAME, micros(enc), micros(dec)));
    };
    let enc = median_per_op(runs, || drop(black_box(C::encode(black_box(&frames.raw)))));
    let dec = median_per_op(runs, || drop(black_box(C::decode::<Update>(black_box(&raw_bytes)))));
    row("raw tick", raw_bytes.len(), enc, dec);
    let enc = median_per_op(runs, || drop(black_box(C::encode(black_box(&frames.first)))));
    let dec = median_per_op(runs, || drop(black_box(C::decode::<ServerMessage>(black_box(&first_bytes)))));
    row("interned, first", first_bytes.len(), enc, dec);
    let enc = median_per_op(runs, || drop(black_box(C::encode(black_box(&frames.steady)))));
    let dec = median_per_op(runs, || drop(black_box(C::decode::<ServerMessage>(black_box(&steady_bytes)))));
    row("interned, steady", steady_bytes.len(), enc, dec);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(200)
        .max(1);
    let frames = frames();
    let runs = benching.then_some(runs);

    let mut out = Vec::new();
    rows::<Postcard>(&frames, runs, &mut out);
    rows::<Bincode>(&frames, runs, &mut out);
    rows::<MessagePack>(&frames, runs, &mut out);
    rows::<Json>(&frames, runs, &mut out);
    let Some(runs) = runs else {
        println!("codec bench: smoke run only (pass --bench to measure)");
        return;
    };

    println!("Codec comparison: median of {runs} timings of {BATCH} operations each, per frame.\n");
    println!("| codec | frame | bytes | encode µs | decode µs |");
    println!("|---|---|---:|---:|---:|");
    for line in &out {
        println!("{line}");
    }

    // The interning layer alone (codec-independent): Update -> ServerMessage and back. Steady
    // state: both ticks already interned, so the message carries no definitions.
    let next = fixture::tick(7, 2);
    let intern_first = median_per_op(runs, || {
        let mut e = Encoder::new();
        drop(black_box(e.encode(black_box(&frames.raw)).expect("encode")));
    });
    let mut warm = Encoder::new();
    warm.encode(&frames.raw).expect("encode");
    warm.encode(&next).expect("encode");
    let intern_steady = median_per_op(runs, || drop(black_box(warm.encode(black_box(&next)).expect("encode"))));
    let mut decoder = Decoder::new();
    decoder.decode(frames.first.clone()).expect("decode first");
    decoder.decode(frames.steady.clone()).expect("decode steady");
    let no_defs = warm.encode(&next).expect("encode");
    let clone_only = median_per_op(runs, || drop(black_box(no_defs.clone())));
    let resolve_steady =
        median_per_op(runs, || drop(black_box(decoder.decode(black_box(no_defs.clone())).expect("decode"))));
    println!("\nInterning layer alone (no codec):\n");
    println!("| step | µs |");
    println!("|---|---:|");
    println!("| Encoder::encode, first tick (fresh tables) | {} |", micros(intern_first));
    println!("| Encoder::encode, steady tick (no new definitions) | {} |", micros(intern_steady));
    println!(
        "| Decoder::decode, steady tick (no new definitions) | {} |",
        micros(resolve_steady.saturating_sub(clone_only))
    );
}
