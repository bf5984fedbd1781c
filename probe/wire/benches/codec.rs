//! Encoded size and encode/decode time of realistic frames for each candidate codec.
//!
//! ```text
//! cargo bench -p stallscope-wire --bench codec              # full run (~15 s on 2 cores)
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
//! structs as arrays) and serde_json (baseline). The cells are measured in rounds: each round
//! times every codec on every frame once ([`BATCH`] operations per timing), so drift and other
//! load on the machine hit all candidates alike; each cell is the median over `--runs` rounds
//! (default 200) after a warm-up round. Also printed: the Encoder/Decoder (interning) cost alone.
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
    let mut times: Vec<Duration> = (0..runs).map(|_| time_batch(&mut f)).collect();
    median(&mut times)
}

fn time_batch(f: &mut dyn FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..BATCH {
        f();
    }
    start.elapsed() / BATCH
}

fn median(times: &mut [Duration]) -> Duration {
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

/// One codec on one frame: its encoded size and the two operations to time.
struct Case<'a> {
    codec: &'static str,
    frame: &'static str,
    bytes: usize,
    encode: Box<dyn FnMut() + 'a>,
    decode: Box<dyn FnMut() + 'a>,
    encode_times: Vec<Duration>,
    decode_times: Vec<Duration>,
}

fn case<'a, C: Codec, T>(frame: &'static str, value: &'a T) -> Case<'a>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = C::encode(value);
    assert_eq!(&C::decode::<T>(&bytes), value, "{} round trip of the {frame} frame", C::NAME);
    let len = bytes.len();
    Case {
        codec: C::NAME,
        frame,
        bytes: len,
        encode: Box::new(move || drop(black_box(C::encode(black_box(value))))),
        decode: Box::new(move || drop(black_box(C::decode::<T>(black_box(&bytes))))),
        encode_times: Vec::new(),
        decode_times: Vec::new(),
    }
}

/// The three frames for codec `C` (checks each round trip).
fn cases<'a, C: Codec>(frames: &'a Frames, out: &mut Vec<Case<'a>>) {
    out.push(case::<C, Update>("raw tick", &frames.raw));
    out.push(case::<C, ServerMessage>("interned, first", &frames.first));
    out.push(case::<C, ServerMessage>("interned, steady", &frames.steady));
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
    let mut all = Vec::new();
    cases::<Postcard>(&frames, &mut all);
    cases::<Bincode>(&frames, &mut all);
    cases::<MessagePack>(&frames, &mut all);
    cases::<Json>(&frames, &mut all);
    if !benching {
        println!("codec bench: smoke run only (pass --bench to measure)");
        return;
    }

    // Rounds: every case once per round, so drift and other load on the machine hit every
    // codec alike instead of whichever happened to run at the time.
    for c in &mut all {
        time_batch(&mut c.encode);
        time_batch(&mut c.decode);
    }
    for _ in 0..runs {
        for c in &mut all {
            c.encode_times.push(time_batch(&mut c.encode));
            c.decode_times.push(time_batch(&mut c.decode));
        }
    }

    println!("Codec comparison: per frame, median of {runs} rounds (each times {BATCH} operations per cell).\n");
    println!("| codec | frame | bytes | encode µs | decode µs |");
    println!("|---|---|---:|---:|---:|");
    for c in &mut all {
        let (enc, dec) = (median(&mut c.encode_times), median(&mut c.decode_times));
        println!("| {} | {} | {} | {} | {} |", c.codec, c.frame, c.bytes, micros(enc), micros(dec));
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
