//! The deterministic fuzzer of every decoder, shared by `tests/fuzz.rs` (a synthetic corpus, the
//! wire crate alone) and the fault suite's `tests/tests/fuzz_frames.rs` in `stallscope-tests` (a
//! live probe's own stream, beside the running service; it includes this file through `#[path]`),
//! so that both drive the same generator and the same decoders.
//!
//! Each input is a random byte string or a mutation of a valid input (bit flips, byte changes,
//! insertions, deletions, truncation, duplicated or foreign ranges, edge values over `u32`s, and a
//! framed stream's length prefixes set to 0, off by one, 16 MiB, 16 MiB + 1 or 4 GiB). It goes
//! through every decoder a peer's bytes reach: the frame readers (`FrameReader`, `read_frame`,
//! `FramedReader`), both sides of the handshake (`server_handshake_with`, `client_handshake`),
//! the client messages, the interning `Decoder` (warmed to the state each message expects) and
//! the recording reader. Every input runs under `catch_unwind`: panics are counted, not fatal,
//! so a run reports all of them. The counting allocator (`Counting`, installed as the global
//! allocator by each test binary) measures the most heap each input held at once.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use stallscope_wire::frame::{frame_into, read_frame, FrameReader, FramedReader, MAX_FRAME_BYTES};
use stallscope_wire::proto::{self, Hello, ProtocolVersion, Refused, Reply, Welcome};
use stallscope_wire::recording::RecordingReader;
use stallscope_wire::{ClientMessage, Decoder, Encoder, ProcessInfo, Request, ServerMessage, Update};

use super::fixture::{self, Rng};

// === counting allocator ===

/// Counts each thread's live heap bytes and their peak (the per-input figure: other threads,
/// such as a live service's, do not disturb it), and the whole process's live bytes and peak.
/// `const` thread-locals without destructors: nothing inside allocates.
pub struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}
static GLOBAL_LIVE: AtomicUsize = AtomicUsize::new(0);
static GLOBAL_PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let _ = LIVE.try_with(|l| {
                l.set(l.get() + layout.size());
                let _ = PEAK.try_with(|pk| pk.set(pk.get().max(l.get())));
            });
            let now = GLOBAL_LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            GLOBAL_PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
        GLOBAL_LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

/// Starts measuring this thread's peak: returns the bytes live now.
pub fn peak_reset() -> usize {
    let live = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(live));
    live
}

/// The most this thread held at once since `peak_reset` returned `base`, beyond `base`.
pub fn peak_since(base: usize) -> usize {
    PEAK.with(|p| p.get()).saturating_sub(base)
}

/// The process's live heap bytes now (every thread).
pub fn global_live() -> usize {
    GLOBAL_LIVE.load(Relaxed)
}

/// Starts measuring the process's peak: returns the bytes live now.
pub fn global_peak_reset() -> usize {
    let live = GLOBAL_LIVE.load(Relaxed);
    GLOBAL_PEAK.store(live, Relaxed);
    live
}

/// The most the process held at once since `global_peak_reset`.
pub fn global_peak() -> usize {
    GLOBAL_PEAK.load(Relaxed)
}

// === generator ===

pub const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x3F, 0x40];

pub fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max + 1) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Applies 1..=8 random mutations.
pub fn mutate(rng: &mut Rng, mut v: Vec<u8>, donor: &[u8]) -> Vec<u8> {
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

/// Sets the length prefix of 1..=3 frames of a valid framed stream to a value a peer could
/// send: 0, one off either way, twice, random, the 16 MiB limit, one past it, 2 GiB, 4 GiB.
/// The frames after a changed prefix are then read from the wrong offset, as they would be.
pub fn mutate_prefixes(rng: &mut Rng, mut stream: Vec<u8>) -> Vec<u8> {
    let mut starts = Vec::new();
    let mut at = 0usize;
    while at + 4 <= stream.len() {
        starts.push(at);
        let len = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    if starts.is_empty() {
        return stream;
    }
    for _ in 0..1 + rng.below(3) {
        let at = starts[rng.below(starts.len() as u64) as usize];
        let len = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap());
        let max = MAX_FRAME_BYTES as u32;
        let x = match rng.below(10) {
            0 => 0,
            1 => len.saturating_sub(1),
            2 => len.saturating_add(1),
            3 => len.saturating_mul(2),
            4 => rng.below(1 << 24) as u32,
            5 => max,
            6 => max + 1,
            7 => 0x8000_0000,
            8 => u32::MAX,
            _ => rng.below(1 << 32) as u32,
        };
        stream[at..at + 4].copy_from_slice(&x.to_le_bytes());
    }
    stream
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(payload, &mut out).unwrap();
    out
}

// === corpus ===

/// Valid inputs to mutate, and decoders in the state each message expects.
pub struct Corpus {
    /// Server message payloads, in connection order.
    pub messages: Vec<Vec<u8>>,
    /// `warm[i]`: a decoder that has decoded `messages[..i]`.
    pub warm: Vec<Decoder>,
    /// Client-side payloads: client messages and the client's hello.
    pub client: Vec<Vec<u8>>,
    /// Server replies to the handshake (welcome, refusal).
    pub replies: Vec<Vec<u8>>,
    /// All server messages as one framed stream.
    pub stream: Vec<u8>,
    /// A recording of the same updates.
    pub recording: Vec<u8>,
    /// What a probe welcomes with.
    pub process: ProcessInfo,
}

impl Corpus {
    /// The corpus of one connection that carries `updates` (with a `Dropped`, an `Error` and a
    /// task dump after the fifth), and `recording`.
    pub fn new(updates: &[Update], process: ProcessInfo, recording: Vec<u8>) -> Corpus {
        let mut enc = Encoder::new();
        let mut messages = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            messages.push(enc.encode(u).unwrap().to_payload().unwrap());
            if i == 4.min(updates.len() - 1) {
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
        let client = vec![
            ClientMessage::Request(Request::TaskDump { timeout_ms: 1500 }).to_payload().unwrap(),
            Hello::new("stallscope", "0.1.0").to_payload().unwrap(),
        ];
        let replies = vec![
            Reply::Welcome(Welcome { protocol: ProtocolVersion::CURRENT, process: process.clone() })
                .to_payload()
                .unwrap(),
            Reply::Refused(Refused { protocol: ProtocolVersion::CURRENT, reason: "busy".into() }).to_payload().unwrap(),
        ];
        Corpus { messages, warm, client, replies, stream, recording, process }
    }
}

// === decoding ===

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub ok: u64,
    pub err: u64,
}

impl Stats {
    pub fn count<T, E>(&mut self, r: Result<T, E>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(_) => self.err += 1,
        }
    }
}

/// A peer's bytes to read, and what the other side writes back (kept to the first 64 KiB).
struct Duplex {
    input: Cursor<Vec<u8>>,
    written: usize,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every payload decoder on one payload.
fn decode_payloads(payload: &[u8], decoder: &mut Decoder, stats: &mut Stats) {
    stats.count(decoder.decode_payload(payload));
    stats.count(ServerMessage::from_payload(payload));
    stats.count(ClientMessage::from_payload(payload));
    stats.count(Hello::from_payload(payload));
    stats.count(Reply::from_payload(payload));
}

/// Both sides of the handshake reading `bytes` from their peer.
fn handshakes(bytes: &[u8], process: &ProcessInfo, stats: &mut Stats) {
    let mut peer = Duplex { input: Cursor::new(bytes.to_vec()), written: 0 };
    stats.count(proto::server_handshake_with(&mut peer, |_| Ok(process.clone())));
    let mut peer = Duplex { input: Cursor::new(bytes.to_vec()), written: 0 };
    stats.count(proto::client_handshake(&mut peer, &Hello::new("stallscope", "0.1.0")));
}

/// A byte stream through the three frame readers (`FrameReader` fed in random chunks, blocking
/// `read_frame`, `FramedReader`); every frame through a decoder.
fn decode_stream(rng: &mut Rng, bytes: &[u8], decoder: &mut Decoder, stats: &mut Stats) {
    let mut reader = FrameReader::new();
    let mut rest = bytes;
    'feed: while !rest.is_empty() {
        let n = (1 + rng.below(4096) as usize).min(rest.len());
        reader.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => stats.count(decoder.decode_payload(&frame)),
                Ok(None) => break,
                Err(_) => {
                    stats.err += 1;
                    break 'feed;
                }
            }
        }
    }
    stats.count(reader.finish());
    let mut cursor = Cursor::new(bytes);
    loop {
        match read_frame(&mut cursor) {
            Ok(Some(_)) => stats.ok += 1,
            Ok(None) => break,
            Err(_) => {
                stats.err += 1;
                break;
            }
        }
    }
    let mut framed_reader = FramedReader::new(Cursor::new(bytes));
    loop {
        match framed_reader.read_frame() {
            Ok(Some(_)) => stats.ok += 1,
            Ok(None) => break,
            Err(_) => {
                stats.err += 1;
                break;
            }
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub inputs: u64,
    /// Inputs per kind: random bytes, server messages, client messages and handshakes, framed
    /// streams, recordings.
    pub kinds: [u64; 5],
    /// Inputs whose framed stream had a length prefix changed.
    pub prefix_changes: u64,
    pub stats: Stats,
    /// Recordings read, with skipped regions, stopped early.
    pub recordings: (u64, u64, u64),
    /// Inputs that panicked a decoder (caught), and how to reproduce the first few.
    pub panics: u64,
    pub first_panics: Vec<String>,
    /// Inputs that made the decoders hold more than the bound at once, and the first few.
    pub over_bound: u64,
    pub first_over: Vec<String>,
    /// The most heap one input held at once, bytes.
    pub most_held: usize,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "{} inputs in {:.2?} (random {}, server messages {}, client/handshake {}, streams {} ({} with length \
             prefixes changed), recordings {}); decodes ok {} / err {}; recordings read {} (with skipped regions {}, \
             stopped early {}); panics {}; most heap held for one input {} KiB, inputs over the bound {}",
            self.inputs,
            self.elapsed,
            self.kinds[0],
            self.kinds[1],
            self.kinds[2],
            self.kinds[3],
            self.prefix_changes,
            self.kinds[4],
            self.stats.ok,
            self.stats.err,
            self.recordings.0,
            self.recordings.1,
            self.recordings.2,
            self.panics,
            self.most_held / 1024,
            self.over_bound
        )
    }
}

/// Runs `inputs` inputs from `seed` over `corpus`; `bound` is the most heap one input may hold
/// at once. `every_4096` runs between inputs (a live test checks its service there).
pub fn run(corpus: &Corpus, inputs: u64, seed: u64, bound: usize, mut every_4096: impl FnMut(u64)) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut o = Outcome { inputs, ..Outcome::default() };
    let started = Instant::now();
    let donor_of = |rng: &mut Rng| &corpus.messages[rng.below(corpus.messages.len() as u64) as usize];
    for i in 0..inputs {
        if i % 4096 == 0 {
            every_4096(i);
        }
        let kind = match rng.below(100) {
            0..=24 => 0,  // random bytes
            25..=59 => 1, // mutated server message, warm decoder
            60..=74 => 2, // mutated client message, hello or reply, framed for the handshakes
            75..=92 => 3, // mutated framed stream
            _ => 4,       // mutated recording
        };
        o.kinds[kind] += 1;
        let input_seed = rng.next_u64();
        let base = peak_reset();
        let (stats, recordings, prefix_changes) = (&mut o.stats, &mut o.recordings, &mut o.prefix_changes);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut rng = Rng::new(input_seed);
            match kind {
                0 => {
                    let max = if rng.chance(90) { 64 } else { 4096 };
                    let bytes = random_bytes(&mut rng, max);
                    decode_payloads(&bytes, &mut Decoder::new(), stats);
                    handshakes(&bytes, &corpus.process, stats);
                    decode_stream(&mut rng, &bytes, &mut Decoder::new(), stats);
                    stats.count(RecordingReader::new(Cursor::new(bytes)).map(|r| r.read_all()));
                }
                1 => {
                    let k = rng.below(corpus.messages.len() as u64) as usize;
                    let donor = donor_of(&mut rng);
                    let m = mutate(&mut rng, corpus.messages[k].clone(), donor);
                    let mut d = corpus.warm[k].clone();
                    decode_payloads(&m, &mut d, stats);
                }
                2 => {
                    let all = corpus.client.len() + corpus.replies.len();
                    let k = rng.below(all as u64) as usize;
                    let valid = if k < corpus.client.len() {
                        &corpus.client[k]
                    } else {
                        &corpus.replies[k - corpus.client.len()]
                    };
                    let m = mutate(&mut rng, valid.clone(), &corpus.client[0]);
                    decode_payloads(&m, &mut Decoder::new(), stats);
                    let mut bytes = framed(&m);
                    if rng.chance(30) {
                        bytes = mutate_prefixes(&mut rng, bytes);
                        *prefix_changes += 1;
                    }
                    handshakes(&bytes, &corpus.process, stats);
                }
                3 => {
                    let mut s = corpus.stream.clone();
                    if rng.chance(40) {
                        s = mutate_prefixes(&mut rng, s);
                        *prefix_changes += 1;
                    }
                    if rng.chance(75) {
                        let donor = donor_of(&mut rng);
                        s = mutate(&mut rng, s, donor);
                    }
                    decode_stream(&mut rng, &s, &mut Decoder::new(), stats);
                }
                _ => {
                    let donor = donor_of(&mut rng);
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
        let held = peak_since(base);
        let repro = format!("input {i} (kind {kind}, input seed {input_seed:#x}, run seed {seed})");
        if result.is_err() {
            o.panics += 1;
            if o.first_panics.len() < 5 {
                o.first_panics.push(repro.clone());
            }
        }
        if held > bound {
            o.over_bound += 1;
            if o.first_over.len() < 5 {
                o.first_over.push(format!("{repro}: {held} bytes held at once"));
            }
        }
        o.most_held = o.most_held.max(held);
    }
    o.elapsed = started.elapsed();
    o
}
