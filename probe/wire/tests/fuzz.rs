//! Deterministic fuzzing of every decoder: random byte strings and random mutations of valid
//! frames, handshakes, message streams and recordings. The property checked is that decoders
//! return (`Ok` or `Err`), never panic, and never blow up memory: a counting allocator measures
//! the most memory the decoders held at once for each input, which must stay within
//! `MEMORY_BOUND` (a length prefix claiming gigabytes must not be believed).
//!
//! Runs `INPUTS` inputs (120,000 in release builds; 12,000 in debug builds, where it is ~10×
//! slower), from a fixed seed, so a failure reproduces. Set `STALLSCOPE_FUZZ_INPUTS` and
//! `STALLSCOPE_FUZZ_SEED` to run longer or elsewhere:
//!
//! ```text
//! STALLSCOPE_FUZZ_INPUTS=5000000 STALLSCOPE_FUZZ_SEED=7 cargo test --release -p stallscope-wire --test fuzz
//! ```

mod support;

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use stallscope_wire::frame::{frame_into, FrameReader};
use stallscope_wire::proto::{Hello, ProtocolVersion, Refused, Reply, Welcome};
use stallscope_wire::recording::{RecordingOptions, RecordingReader};
use stallscope_wire::{ClientMessage, Decoder, Encoder, Request, ServerMessage, Update};

use support::fixture::{self, Rng};

const INPUTS: u64 = if cfg!(debug_assertions) { 12_000 } else { 120_000 };

/// The most memory decoding one input may hold at once, beyond what was held before it: the
/// inputs are at most a few hundred KiB, and nothing a peer sends may make a decoder allocate
/// what a length field claims before the bytes are there (the frame limit is 16 MiB). The
/// recording reader once held 10 MiB for a mutated record length; 1.3 MiB is the most seen since.
const MEMORY_BOUND: usize = 4 << 20;

/// Counts this thread's live heap bytes and their peak (per thread: the tests of this file run
/// on parallel threads). `const` thread-locals without destructors: no allocation inside.
struct Counting;

thread_local! {
    static LIVE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static PEAK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts around it.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = std::alloc::System.alloc(layout);
        if !p.is_null() {
            let _ = LIVE.try_with(|l| {
                l.set(l.get() + layout.size());
                let _ = PEAK.try_with(|pk| pk.set(pk.get().max(l.get())));
            });
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout);
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts measuring this thread's peak: returns the bytes live now.
fn peak_reset() -> usize {
    let live = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(live));
    live
}

/// The most this thread held at once since `peak_reset` returned `base`, beyond `base`.
fn peak_since(base: usize) -> usize {
    PEAK.with(|p| p.get()).saturating_sub(base)
}

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

/// Valid inputs to mutate, and decoders in the state each message expects.
struct Corpus {
    /// Server message payloads, in connection order.
    messages: Vec<Vec<u8>>,
    /// `warm[i]`: a decoder that has decoded `messages[..i]`.
    warm: Vec<Decoder>,
    /// Other payloads: client messages and handshake frames.
    others: Vec<Vec<u8>>,
    /// All server messages as one framed stream.
    stream: Vec<u8>,
    /// A small recording.
    recording: Vec<u8>,
}

fn corpus() -> Corpus {
    let updates = small_session(31, 14);
    let mut enc = Encoder::new();
    let mut messages = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        messages.push(enc.encode(u).unwrap().to_payload().unwrap());
        if i == 4 {
            messages.push(ServerMessage::Dropped { intervals: 3 }.to_payload().unwrap());
            messages.push(ServerMessage::Error { message: "nope".into() }.to_payload().unwrap());
            messages.push(ServerMessage::TaskDump(fixture::task_dump(5, 4)).to_payload().unwrap());
        }
    }
    let mut warm = vec![Decoder::new()];
    for m in &messages {
        let mut d = warm.last().unwrap().clone();
        d.decode_payload(m).unwrap();
        warm.push(d);
    }
    warm.pop();
    let mut stream = Vec::new();
    for m in &messages {
        frame_into(m, &mut stream).unwrap();
    }
    let others = vec![
        ClientMessage::Request(Request::TaskDump { timeout_ms: 1500 }).to_payload().unwrap(),
        Hello::new("stallscope", "0.1.0").to_payload().unwrap(),
        Reply::Welcome(Welcome { protocol: ProtocolVersion::CURRENT, process: fixture::process_info() })
            .to_payload()
            .unwrap(),
        Reply::Refused(Refused { protocol: ProtocolVersion::CURRENT, reason: "busy".into() }).to_payload().unwrap(),
    ];
    let (recording, _) = support::record(&small_session(32, 6), RecordingOptions::default().keyframe_every(3));
    Corpus { messages, warm, others, stream, recording }
}

const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x3F, 0x40];

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max + 1) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Applies 1..=8 random mutations.
fn mutate(rng: &mut Rng, mut v: Vec<u8>, donor: &[u8]) -> Vec<u8> {
    for _ in 0..1 + rng.below(8) {
        let len = v.len() as u64;
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                v[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len) as usize;
                v[i] = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
            }
            3 => {
                let i = rng.below(len + 1) as usize;
                let extra = random_bytes(rng, 16);
                v.splice(i..i, extra);
            }
            4 if len > 0 => {
                let i = rng.below(len) as usize;
                let n = (1 + rng.below(32)).min(len - i as u64) as usize;
                v.drain(i..i + n);
            }
            5 => {
                let keep = rng.below(len + 1) as usize;
                v.truncate(keep);
            }
            6 if len > 0 => {
                // Duplicate a range (repeated fields, repeated records).
                let i = rng.below(len) as usize;
                let n = (1 + rng.below(64)).min(len - i as u64) as usize;
                let copy = v[i..i + n].to_vec();
                let at = rng.below(len + 1) as usize;
                v.splice(at..at, copy);
            }
            7 if !donor.is_empty() => {
                // Splice in a piece of another valid input.
                let i = rng.below(donor.len() as u64) as usize;
                let n = (1 + rng.below(64)).min((donor.len() - i) as u64) as usize;
                let at = rng.below(len + 1) as usize;
                v.splice(at..at, donor[i..i + n].iter().copied());
            }
            8 if len >= 4 => {
                // Overwrite a little-endian u32 (lengths, counts) with an edge value.
                let i = rng.below(len - 3) as usize;
                let x: u32 = [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 16 << 20, (16 << 20) + 1][rng.below(6) as usize];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            _ => {}
        }
    }
    v
}

#[derive(Default, Debug)]
struct Stats {
    ok: u64,
    err: u64,
}

impl Stats {
    fn count<T, E>(&mut self, r: Result<T, E>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(_) => self.err += 1,
        }
    }
}

/// Every decoder on one payload.
fn decode_everything(payload: &[u8], decoder: &mut Decoder, stats: &mut Stats) {
    stats.count(decoder.decode_payload(payload));
    stats.count(ClientMessage::from_payload(payload));
    stats.count(Hello::from_payload(payload));
    stats.count(Reply::from_payload(payload));
}

/// A byte stream through a FrameReader fed in random chunks; every frame through a decoder.
fn decode_stream(rng: &mut Rng, bytes: &[u8], decoder: &mut Decoder, stats: &mut Stats) {
    let mut reader = FrameReader::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (1 + rng.below(4096) as usize).min(rest.len());
        reader.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => stats.count(decoder.decode_payload(&frame)),
                Ok(None) => break,
                Err(_) => {
                    stats.err += 1;
                    return;
                }
            }
        }
    }
    stats.count(reader.finish());
}

#[test]
fn decoders_never_panic_on_random_and_mutated_input() {
    let inputs = env_u64("STALLSCOPE_FUZZ_INPUTS").unwrap_or(INPUTS);
    let seed = env_u64("STALLSCOPE_FUZZ_SEED").unwrap_or(0x5743_5343);
    let corpus = corpus();
    let mut rng = Rng::new(seed);
    let mut stats = Stats::default();
    let mut kinds = [0u64; 5];
    let mut recordings = (0u64, 0u64, 0u64); // read, with skipped regions, stopped early
    let started = Instant::now();
    let mut most_held = 0usize;

    for i in 0..inputs {
        let kind = match rng.below(100) {
            0..=29 => 0,  // random bytes
            30..=69 => 1, // mutated server message, warm decoder
            70..=79 => 2, // mutated client message or handshake frame
            80..=93 => 3, // mutated framed stream
            _ => 4,       // mutated recording
        };
        kinds[kind] += 1;
        let input_seed = rng.next_u64();
        let base = peak_reset();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut rng = Rng::new(input_seed);
            match kind {
                0 => {
                    let max = if rng.chance(90) { 64 } else { 4096 };
                    let bytes = random_bytes(&mut rng, max);
                    decode_everything(&bytes, &mut Decoder::new(), &mut stats);
                    decode_stream(&mut rng, &bytes, &mut Decoder::new(), &mut stats);
                    stats.count(RecordingReader::new(Cursor::new(bytes)).map(|r| r.read_all()));
                }
                1 => {
                    let k = rng.below(corpus.messages.len() as u64) as usize;
                    let donor = &corpus.messages[rng.below(corpus.messages.len() as u64) as usize];
                    let m = mutate(&mut rng, corpus.messages[k].clone(), donor);
                    let mut d = corpus.warm[k].clone();
                    decode_everything(&m, &mut d, &mut stats);
                }
                2 => {
                    let k = rng.below(corpus.others.len() as u64) as usize;
                    let m = mutate(&mut rng, corpus.others[k].clone(), &corpus.others[0]);
                    decode_everything(&m, &mut Decoder::new(), &mut stats);
                }
                3 => {
                    let donor = &corpus.messages[rng.below(corpus.messages.len() as u64) as usize];
                    let s = mutate(&mut rng, corpus.stream.clone(), donor);
                    decode_stream(&mut rng, &s, &mut Decoder::new(), &mut stats);
                }
                _ => {
                    let donor = &corpus.messages[rng.below(corpus.messages.len() as u64) as usize];
                    let bytes = mutate(&mut rng, corpus.recording.clone(), donor);
                    match RecordingReader::new(Cursor::new(bytes)) {
                        Ok(r) => {
                            let rec = r.read_all();
                            recordings.0 += 1;
                            recordings.1 += !rec.skipped.is_empty() as u64;
                            recordings.2 += rec.stop.is_some() as u64;
                            stats.ok += 1;
                        }
                        Err(_) => stats.err += 1,
                    }
                }
            }
        }));
        if result.is_err() {
            panic!(
                "a decoder panicked on input {i} (kind {kind}, input seed {input_seed:#x}, run seed {seed:#x}); \
                 reproduce with STALLSCOPE_FUZZ_SEED={seed}"
            );
        }
        let held = peak_since(base);
        assert!(
            held <= MEMORY_BOUND,
            "input {i} (kind {kind}, input seed {input_seed:#x}) made the decoders hold {held} bytes at once; \
             reproduce with STALLSCOPE_FUZZ_SEED={seed}"
        );
        most_held = most_held.max(held);
    }

    let elapsed = started.elapsed();
    println!(
        "fuzz: {inputs} inputs in {elapsed:.2?} (random {}, server messages {}, client/handshake {}, streams {}, recordings {}); \
         decodes ok {} / err {}; recordings read {} (with skipped regions {}, stopped early {}); \
         most memory held for one input {} KiB",
        kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], stats.ok, stats.err, recordings.0, recordings.1, recordings.2,
        most_held / 1024
    );
    // The counter works: decoding the corpus allocates.
    assert!(most_held > 0, "the counting allocator saw nothing");
    assert!(
        inputs < 1000 || (stats.ok > inputs / 10 && stats.err > inputs / 10),
        "mutations too mild or too harsh: {stats:?}"
    );
    assert!(inputs < 1000 || recordings.1 > 0 && recordings.2 > 0, "recording damage paths not reached");
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
