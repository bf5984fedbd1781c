//! Per-connection interning of strings, frames, stacks and histogram bucket bounds.
//!
//! A tick repeats the same spawn locations, function names, file paths, stacks and bucket bounds
//! every interval. On the wire each of them is sent once per connection and referred to by a
//! small integer id afterwards:
//!
//! - an [`Encoder`] (one per connection, on the sending side) turns an [`Update`] into an
//!   [`Interned`] message: a [`Define`] block with only the definitions the peer has not seen
//!   yet, and a [`WireUpdate`] that refers to ids;
//! - a [`Decoder`] (one per connection, on the receiving side) applies the definitions and
//!   rebuilds the identical [`Update`].
//!
//! Ids are implicit: each table's definitions get the next ids in order (the first string
//! defined on a connection is id 0, the next id 1, ...), so both sides agree without sending ids.
//!
//! Tables are bounded ([`InternLimits`]). When an update would push the encoder's tables past a
//! limit, the encoder forgets everything and sends the update with `reset: true` and complete
//! definitions; the decoder clears its tables before applying them. A decoder refuses to grow
//! past the same limits ([`Error::TableFull`]), rejects undefined ids ([`Error::UndefinedId`])
//! and caps the text one message may expand to ([`Error::TooLarge`]), so memory stays bounded on
//! both sides whatever the peer sends. A failed message leaves the decoder's tables as they were
//! before it.
//!
//! Every message an encoder returns must reach its decoder, in order. To drop an update (a full
//! client queue), drop the [`Update`] before encoding it; if an encoded message is lost anyway,
//! call [`Encoder::reset`].
//!
//! ```
//! use stallscope_wire::intern::{Decoder, Encoder};
//! use stallscope_wire::{Frame, FrameKind, Stall, StackCount, Update};
//! let frame = Frame { function: "app::work".into(), file: Some("src/main.rs".into()), line: Some(7), inlined: false, kind: FrameKind::User };
//! let stall = Stall {
//!     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1, task: Some(3),
//!     spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false,
//!     stacks: vec![StackCount { frames: vec![frame.clone(), frame], count: 4 }], samples_lost: 0, anatomy: None, unobserved: false,
//! };
//! let (mut enc, mut dec) = (Encoder::new(), Decoder::new());
//! let first = enc.encode(&Update::StallEnded(stall.clone())).unwrap();
//! let again = enc.encode(&Update::StallEnded(stall.clone())).unwrap();
//! assert_eq!(dec.decode_update(first).unwrap(), Update::StallEnded(stall.clone()));
//! assert_eq!(dec.decode_update(again).unwrap(), Update::StallEnded(stall)); // no definitions this time
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Table};
use crate::proto::ServerMessage;
use crate::{
    Alert, AlertRecord, Drops, Frame, FrameKind, Histogram, Interval, LagStats, LocationDelta, LocationStats,
    PoolStats, ProcessInfo, RuntimeStats, Snapshot, StackCount, Stall, StallAnatomy, TaskDump, Update, WorkerStats,
};

// === Ids and limits ===

/// Id of an interned string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StrId(pub u32);

/// Id of an interned frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FrameId(pub u32);

/// Id of an interned stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StackId(pub u32);

/// Id of an interned list of histogram bucket bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundsId(pub u32);

/// Bounds on the intern tables of one connection.
///
/// The defaults are part of the protocol: a decoder with default limits accepts whatever an
/// encoder with default (or smaller) limits sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InternLimits {
    /// Strings.
    pub strings: usize,
    /// Bytes of all strings together.
    pub string_bytes: usize,
    /// Frames.
    pub frames: usize,
    /// Stacks.
    pub stacks: usize,
    /// Frame references of all stacks together.
    pub stack_frames: usize,
    /// Bucket-bound lists.
    pub bounds: usize,
    /// Decoder only: bytes of text (strings copied into the result) one message may expand to.
    pub expanded_bytes: usize,
}

impl InternLimits {
    /// The protocol's limits.
    pub const DEFAULT: InternLimits = InternLimits {
        strings: 1 << 17,
        string_bytes: 16 << 20,
        frames: 1 << 17,
        stacks: 1 << 16,
        stack_frames: 1 << 22,
        bounds: 1 << 10,
        expanded_bytes: 64 << 20,
    };
}

impl Default for InternLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// === Wire types ===

/// New intern definitions, applied in field order (strings, frames, stacks, bounds); each gets
/// the next id of its table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Define {
    /// New strings.
    pub strings: Vec<String>,
    /// New frames (may refer to strings defined in the same block).
    pub frames: Vec<WireFrame>,
    /// New stacks, innermost frame first (may refer to frames defined in the same block).
    pub stacks: Vec<Vec<FrameId>>,
    /// New bucket-bound lists.
    pub bounds: Vec<Vec<u64>>,
}

impl Define {
    /// Nothing to define.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.frames.is_empty() && self.stacks.is_empty() && self.bounds.is_empty()
    }
}

/// An [`Update`] on the wire: definitions first, then the update referring to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interned {
    /// Clear every table before applying `define` (the encoder hit a limit or was reset).
    /// A message with `reset` set is self-contained: a reader can start decoding from it.
    pub reset: bool,
    /// Definitions this update needs that the peer does not have yet.
    pub define: Define,
    /// The update itself.
    pub update: WireUpdate,
    /// What the types gained after protocol 1.1. Not part of the serde encoding of this struct:
    /// [`ServerMessage::to_payload`] appends it after the message, where a 1.1 peer's decoder
    /// ignores it (trailing bytes), and [`ServerMessage::from_payload`] reads it back when present
    /// (a 1.1 probe or recording has none: every field then has its default).
    #[serde(skip)]
    pub ext: Extension,
}

/// The fields added to the update types since protocol 1.1, carried after the message so that
/// older peers and recordings keep working (see `docs/protocol.md`, "Versioning").
///
/// Every list is in encoding order: `stalls` has one entry per [`WireStall`] of the update, in
/// the order the update holds them (snapshot stalls, then interval stalls).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    /// [`Stall::anatomy`] and [`Stall::unobserved`] of each stall (since 1.2).
    pub stalls: Vec<StallExtension>,
    /// Alerts of kinds a 1.1 peer cannot decode ([`AlertKind::known_in`](crate::AlertKind::known_in)),
    /// with their index in [`Snapshot::alerts`] (since 1.2).
    pub alerts: Vec<(u32, Alert)>,
    /// [`Snapshot::alert_history`] (since 1.2).
    pub alert_history: Vec<AlertRecord>,
    /// [`Snapshot::alert_history_evicted`] (since 1.2).
    pub alert_history_evicted: u64,
    /// [`RuntimeStats::busy_ns`] and [`RuntimeStats::worker_busy_ns`] of the snapshot's runtime
    /// (since 1.2; the rest of [`RuntimeStats`] keeps its 1.1 encoding, [`WireRuntimeStats`]).
    pub runtime_busy: Option<(u64, Vec<u64>)>,
}

impl Extension {
    /// Whether there is nothing to carry (then nothing is appended).
    pub fn is_empty(&self) -> bool {
        self.stalls.iter().all(|s| s.anatomy.is_none() && !s.unobserved)
            && self.alerts.is_empty()
            && self.alert_history.is_empty()
            && self.alert_history_evicted == 0
            && self.runtime_busy.is_none()
    }
}

/// The fields [`Stall`] gained in 1.2.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StallExtension {
    /// [`Stall::anatomy`].
    pub anatomy: Option<StallAnatomy>,
    /// [`Stall::unobserved`].
    pub unobserved: bool,
}

/// [`Frame`] with interned strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireFrame {
    /// [`Frame::function`].
    pub function: StrId,
    /// [`Frame::file`].
    pub file: Option<StrId>,
    /// [`Frame::line`].
    pub line: Option<u32>,
    /// [`Frame::inlined`].
    pub inlined: bool,
    /// [`Frame::kind`].
    pub kind: FrameKind,
}

/// [`StackCount`] with an interned stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStackCount {
    /// [`StackCount::frames`].
    pub stack: StackId,
    /// [`StackCount::count`].
    pub count: u64,
}

/// [`Histogram`] with interned bucket bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHistogram {
    /// [`Histogram::upper_ns`].
    pub bounds: BoundsId,
    /// [`Histogram::counts`].
    pub counts: Vec<u64>,
    /// [`Histogram::count`].
    pub count: u64,
    /// [`Histogram::sum_ns`].
    pub sum_ns: u64,
    /// [`Histogram::max_ns`].
    pub max_ns: u64,
}

/// [`Stall`] with interned spawn location and stacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `Stall`.
pub struct WireStall {
    pub id: u64,
    pub start_unix_ms: u64,
    pub duration_ns: Option<u64>,
    pub elapsed_ns: u64,
    pub worker: u32,
    pub tid: i32,
    pub task: Option<u64>,
    pub spawned_at: StrId,
    pub in_block_in_place: bool,
    pub stacks: Vec<WireStackCount>,
    pub samples_lost: u64,
}

/// [`LocationStats`] with interned location and bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `LocationStats`.
pub struct WireLocationStats {
    pub location: StrId,
    pub spawned: u64,
    pub completed: u64,
    pub live: u64,
    pub oldest_live_ns: Option<u64>,
    pub polls: u64,
    pub poll_time: WireHistogram,
    pub schedule_latency: Option<WireHistogram>,
    pub leak_suspect: bool,
    pub internal: bool,
    pub blocking: bool,
}

/// [`WorkerStats`] with interned bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `WorkerStats`.
pub struct WireWorkerStats {
    pub index: u32,
    pub tid: i32,
    pub polls: u64,
    pub busy_ns: u64,
    pub poll_time: WireHistogram,
}

/// [`PoolStats`] with interned bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `PoolStats`.
pub struct WirePoolStats {
    pub name: String,
    pub in_use: u64,
    pub idle: u64,
    pub max: u64,
    pub waiters: u64,
    pub acquired: u64,
    pub wait_time: WireHistogram,
}

/// [`LagStats`] with interned bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `LagStats`.
pub struct WireLagStats {
    pub period_ns: u64,
    pub lag: WireHistogram,
    pub last_ns: u64,
}

/// [`RuntimeStats`] as protocol 1.1 encodes it: the fields added since travel in the
/// [`Extension`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `RuntimeStats`.
pub struct WireRuntimeStats {
    pub workers: u64,
    pub live_tasks: u64,
    pub busy_ratio: f64,
    pub global_queue_depth: u64,
    pub local_queue_depth: u64,
    pub steals: u64,
    pub parks: u64,
    pub polls: u64,
    pub blocking_threads: u64,
    pub idle_blocking_threads: u64,
    pub blocking_queue_depth: u64,
}

/// [`Snapshot`] with interned parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `Snapshot`.
pub struct WireSnapshot {
    pub schema: u32,
    pub seq: u64,
    pub at_unix_ms: u64,
    pub uptime_ns: u64,
    pub process: ProcessInfo,
    pub workers: Vec<WireWorkerStats>,
    pub locations: Vec<WireLocationStats>,
    pub stalls: Vec<WireStall>,
    pub stall_count: u64,
    pub stalled_ns: u64,
    pub lag: WireLagStats,
    pub runtime: Option<WireRuntimeStats>,
    pub pools: Vec<WirePoolStats>,
    pub alerts: Vec<Alert>,
    pub drops: Drops,
}

/// [`LocationDelta`] with interned location and bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `LocationDelta`.
pub struct WireLocationDelta {
    pub location: StrId,
    pub spawned: u64,
    pub completed: u64,
    pub polls: u64,
    pub poll_time: WireHistogram,
}

/// [`Interval`] with interned parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Field for field the same as `Interval`.
pub struct WireInterval {
    pub seq: u64,
    pub duration_ns: u64,
    pub locations: Vec<WireLocationDelta>,
    pub stalls: Vec<WireStall>,
    pub stalled_ns: u64,
    pub lag: WireHistogram,
    pub drops: Drops,
}

/// [`Update`] with interned parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WireUpdate {
    /// [`Update::Tick`].
    Tick {
        /// Cumulative state.
        snapshot: Box<WireSnapshot>,
        /// Change since the previous tick.
        interval: Box<WireInterval>,
    },
    /// [`Update::StallStarted`].
    StallStarted(WireStall),
    /// [`Update::StallEnded`].
    StallEnded(WireStall),
}

// === impl Encoder ===

/// The encoder's hash: a multiply-rotate hash in the style of rustc's FxHash. Its keys are the
/// probe's own data (symbol names, paths, spawn locations), not attacker input, so a keyed hash
/// buys nothing; this one makes a steady tick's 5,000 frame lookups several times cheaper than
/// SipHash.
#[derive(Clone, Copy, Default)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Sending side of one connection: interns as it encodes. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Encoder {
    limits: InternLimits,
    strings: FxMap<String, u32>,
    string_bytes: usize,
    frames: FxMap<WireFrame, u32>,
    stacks: FxMap<Vec<FrameId>, u32>,
    stack_frames: usize,
    bounds: FxMap<Vec<u64>, u32>,
    /// The next message must carry `reset: true` (fresh encoder or explicit reset).
    reset_pending: bool,
    resets: u64,
    /// Definitions collected for the message being encoded.
    define: Define,
    /// Post-1.1 fields collected for the message being encoded.
    ext: Extension,
    scratch: Vec<FrameId>,
}

impl Encoder {
    /// An encoder with the protocol's [`InternLimits`].
    pub fn new() -> Encoder {
        Self::with_limits(InternLimits::DEFAULT)
    }

    /// An encoder with other limits (smaller ones make it reset more often).
    pub fn with_limits(limits: InternLimits) -> Encoder {
        Encoder {
            limits,
            strings: FxMap::default(),
            string_bytes: 0,
            frames: FxMap::default(),
            stacks: FxMap::default(),
            stack_frames: 0,
            bounds: FxMap::default(),
            reset_pending: true,
            resets: 0,
            define: Define::default(),
            ext: Extension::default(),
            scratch: Vec::new(),
        }
    }

    /// Forgets every definition: the next message has `reset: true` and is self-contained.
    pub fn reset(&mut self) {
        self.strings.clear();
        self.string_bytes = 0;
        self.frames.clear();
        self.stacks.clear();
        self.stack_frames = 0;
        self.bounds.clear();
        self.define = Define::default();
        self.ext = Extension::default();
        self.reset_pending = true;
    }

    /// Times the tables were reset because they reached a limit.
    pub fn limit_resets(&self) -> u64 {
        self.resets
    }

    /// Encodes `update` as a [`ServerMessage::Update`].
    pub fn encode(&mut self, update: &Update) -> Result<ServerMessage> {
        Ok(ServerMessage::Update(Box::new(self.encode_interned(update)?)))
    }

    /// Encodes `update` as an [`Interned`] message.
    ///
    /// When the tables would exceed a limit, the encoder resets and encodes the update again
    /// from empty tables (`reset: true`); only an update that alone exceeds a limit fails, with
    /// [`Error::TableFull`], and leaves the encoder reset.
    pub fn encode_interned(&mut self, update: &Update) -> Result<Interned> {
        let wire = self.intern_update(update);
        if self.over_limit().is_none() {
            return Ok(self.finish(wire));
        }
        self.resets += 1;
        self.reset();
        let wire = self.intern_update(update);
        if let Some((table, limit)) = self.over_limit() {
            self.reset();
            return Err(Error::TableFull { table, limit: limit as u64 });
        }
        Ok(self.finish(wire))
    }

    fn finish(&mut self, update: WireUpdate) -> Interned {
        let reset = std::mem::take(&mut self.reset_pending);
        let mut ext = std::mem::take(&mut self.ext);
        if ext.is_empty() {
            ext = Extension::default();
        }
        Interned { reset, define: std::mem::take(&mut self.define), update, ext }
    }

    fn over_limit(&self) -> Option<(Table, usize)> {
        let l = &self.limits;
        [
            (Table::Strings, self.strings.len(), l.strings),
            (Table::StringBytes, self.string_bytes, l.string_bytes),
            (Table::Frames, self.frames.len(), l.frames),
            (Table::Stacks, self.stacks.len(), l.stacks),
            (Table::StackFrames, self.stack_frames, l.stack_frames),
            (Table::Bounds, self.bounds.len(), l.bounds),
        ]
        .into_iter()
        .find(|(_, len, limit)| len > limit)
        .map(|(t, _, limit)| (t, limit))
    }

    fn string(&mut self, s: &str) -> StrId {
        if let Some(&id) = self.strings.get(s) {
            return StrId(id);
        }
        let id = self.strings.len() as u32;
        self.strings.insert(s.to_owned(), id);
        self.string_bytes += s.len();
        self.define.strings.push(s.to_owned());
        StrId(id)
    }

    fn frame(&mut self, f: &Frame) -> FrameId {
        let Frame { function, file, line, inlined, kind } = f;
        let wire = WireFrame {
            function: self.string(function),
            file: file.as_deref().map(|s| self.string(s)),
            line: *line,
            inlined: *inlined,
            kind: *kind,
        };
        if let Some(&id) = self.frames.get(&wire) {
            return FrameId(id);
        }
        let id = self.frames.len() as u32;
        self.frames.insert(wire, id);
        self.define.frames.push(wire);
        FrameId(id)
    }

    fn stack(&mut self, frames: &[Frame]) -> StackId {
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend(frames.iter().map(|f| self.frame(f)));
        let id = match self.stacks.get(ids.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                self.stacks.insert(ids.clone(), id);
                self.stack_frames += ids.len();
                self.define.stacks.push(ids.clone());
                id
            }
        };
        self.scratch = ids;
        StackId(id)
    }

    fn histogram(&mut self, h: &Histogram) -> WireHistogram {
        let Histogram { upper_ns, counts, count, sum_ns, max_ns } = h;
        let bounds = match self.bounds.get(upper_ns.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.bounds.len() as u32;
                self.bounds.insert(upper_ns.clone(), id);
                self.define.bounds.push(upper_ns.clone());
                id
            }
        };
        WireHistogram {
            bounds: BoundsId(bounds),
            counts: counts.clone(),
            count: *count,
            sum_ns: *sum_ns,
            max_ns: *max_ns,
        }
    }

    fn stall(&mut self, s: &Stall) -> WireStall {
        let Stall {
            id,
            start_unix_ms,
            duration_ns,
            elapsed_ns,
            worker,
            tid,
            task,
            spawned_at,
            in_block_in_place,
            stacks,
            samples_lost,
            anatomy,
            unobserved,
        } = s;
        self.ext.stalls.push(StallExtension { anatomy: anatomy.clone(), unobserved: *unobserved });
        WireStall {
            id: *id,
            start_unix_ms: *start_unix_ms,
            duration_ns: *duration_ns,
            elapsed_ns: *elapsed_ns,
            worker: *worker,
            tid: *tid,
            task: *task,
            spawned_at: self.string(spawned_at),
            in_block_in_place: *in_block_in_place,
            stacks: stacks
                .iter()
                .map(|StackCount { frames, count }| WireStackCount { stack: self.stack(frames), count: *count })
                .collect(),
            samples_lost: *samples_lost,
        }
    }

    fn location(&mut self, l: &LocationStats) -> WireLocationStats {
        let LocationStats {
            location,
            spawned,
            completed,
            live,
            oldest_live_ns,
            polls,
            poll_time,
            schedule_latency,
            leak_suspect,
            internal,
            blocking,
        } = l;
        WireLocationStats {
            location: self.string(location),
            spawned: *spawned,
            completed: *completed,
            live: *live,
            oldest_live_ns: *oldest_live_ns,
            polls: *polls,
            poll_time: self.histogram(poll_time),
            schedule_latency: schedule_latency.as_ref().map(|h| self.histogram(h)),
            leak_suspect: *leak_suspect,
            internal: *internal,
            blocking: *blocking,
        }
    }

    fn snapshot(&mut self, s: &Snapshot) -> WireSnapshot {
        let Snapshot {
            schema,
            seq,
            at_unix_ms,
            uptime_ns,
            process,
            workers,
            locations,
            stalls,
            stall_count,
            stalled_ns,
            lag,
            runtime,
            pools,
            alerts,
            drops,
            alert_history,
            alert_history_evicted,
        } = s;
        self.ext.alert_history = alert_history.clone();
        self.ext.alert_history_evicted = *alert_history_evicted;
        self.ext.runtime_busy = runtime.as_ref().map(|r| (r.busy_ns, r.worker_busy_ns.clone()));
        WireSnapshot {
            schema: *schema,
            seq: *seq,
            at_unix_ms: *at_unix_ms,
            uptime_ns: *uptime_ns,
            process: process.clone(),
            workers: workers
                .iter()
                .map(|WorkerStats { index, tid, polls, busy_ns, poll_time }| WireWorkerStats {
                    index: *index,
                    tid: *tid,
                    polls: *polls,
                    busy_ns: *busy_ns,
                    poll_time: self.histogram(poll_time),
                })
                .collect(),
            locations: locations.iter().map(|l| self.location(l)).collect(),
            stalls: stalls.iter().map(|s| self.stall(s)).collect(),
            stall_count: *stall_count,
            stalled_ns: *stalled_ns,
            lag: {
                let LagStats { period_ns, lag, last_ns } = lag;
                WireLagStats { period_ns: *period_ns, lag: self.histogram(lag), last_ns: *last_ns }
            },
            runtime: runtime.as_ref().map(|r| {
                let RuntimeStats {
                    workers,
                    live_tasks,
                    busy_ratio,
                    busy_ns: _,
                    worker_busy_ns: _,
                    global_queue_depth,
                    local_queue_depth,
                    steals,
                    parks,
                    polls,
                    blocking_threads,
                    idle_blocking_threads,
                    blocking_queue_depth,
                } = r;
                WireRuntimeStats {
                    workers: *workers,
                    live_tasks: *live_tasks,
                    busy_ratio: *busy_ratio,
                    global_queue_depth: *global_queue_depth,
                    local_queue_depth: *local_queue_depth,
                    steals: *steals,
                    parks: *parks,
                    polls: *polls,
                    blocking_threads: *blocking_threads,
                    idle_blocking_threads: *idle_blocking_threads,
                    blocking_queue_depth: *blocking_queue_depth,
                }
            }),
            pools: pools
                .iter()
                .map(|PoolStats { name, in_use, idle, max, waiters, acquired, wait_time }| WirePoolStats {
                    name: name.clone(),
                    in_use: *in_use,
                    idle: *idle,
                    max: *max,
                    waiters: *waiters,
                    acquired: *acquired,
                    wait_time: self.histogram(wait_time),
                })
                .collect(),
            alerts: {
                let (known, newer): (Vec<_>, Vec<_>) =
                    alerts.iter().cloned().enumerate().partition(|(_, a)| a.kind.known_in(1));
                self.ext.alerts = newer.into_iter().map(|(i, a)| (i as u32, a)).collect();
                known.into_iter().map(|(_, a)| a).collect()
            },
            drops: drops.clone(),
        }
    }

    fn interval(&mut self, i: &Interval) -> WireInterval {
        let Interval { seq, duration_ns, locations, stalls, stalled_ns, lag, drops } = i;
        WireInterval {
            seq: *seq,
            duration_ns: *duration_ns,
            locations: locations
                .iter()
                .map(|LocationDelta { location, spawned, completed, polls, poll_time }| WireLocationDelta {
                    location: self.string(location),
                    spawned: *spawned,
                    completed: *completed,
                    polls: *polls,
                    poll_time: self.histogram(poll_time),
                })
                .collect(),
            stalls: stalls.iter().map(|s| self.stall(s)).collect(),
            stalled_ns: *stalled_ns,
            lag: self.histogram(lag),
            drops: drops.clone(),
        }
    }

    fn intern_update(&mut self, update: &Update) -> WireUpdate {
        match update {
            Update::Tick { snapshot, interval } => WireUpdate::Tick {
                snapshot: Box::new(self.snapshot(snapshot)),
                interval: Box::new(self.interval(interval)),
            },
            Update::StallStarted(s) => WireUpdate::StallStarted(self.stall(s)),
            Update::StallEnded(s) => WireUpdate::StallEnded(self.stall(s)),
        }
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Decoder ===

/// What a client gets out of a [`ServerMessage`].
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// An update, rebuilt exactly as the probe published it.
    Update(Update),
    /// [`ServerMessage::Dropped`].
    Dropped {
        /// Updates lost.
        intervals: u64,
    },
    /// [`ServerMessage::Error`].
    Error {
        /// What went wrong.
        message: String,
    },
    /// [`ServerMessage::TaskDump`]: the reply to a task dump request.
    TaskDump(TaskDump),
}

/// Receiving side of one connection: applies definitions, resolves ids. See the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    limits: InternLimits,
    strings: Vec<String>,
    string_bytes: usize,
    frames: Vec<WireFrame>,
    stacks: Vec<Vec<FrameId>>,
    stack_frames: usize,
    bounds: Vec<Vec<u64>>,
}

/// Table lengths, to undo a failed message.
#[derive(Clone, Copy)]
struct Mark {
    strings: usize,
    string_bytes: usize,
    frames: usize,
    stacks: usize,
    stack_frames: usize,
    bounds: usize,
}

impl Decoder {
    /// A decoder with the protocol's [`InternLimits`].
    pub fn new() -> Decoder {
        Self::with_limits(InternLimits::DEFAULT)
    }

    /// A decoder with other limits.
    pub fn with_limits(limits: InternLimits) -> Decoder {
        Decoder { limits, ..Decoder::default() }
    }

    /// Forgets every definition (a reader that lost messages does this and then waits for a
    /// message with `reset: true`).
    pub fn clear(&mut self) {
        *self = Decoder::with_limits(self.limits);
    }

    /// Decodes any server message.
    pub fn decode(&mut self, message: ServerMessage) -> Result<Received> {
        Ok(match message {
            ServerMessage::Update(interned) => Received::Update(self.decode_interned(*interned)?),
            ServerMessage::Dropped { intervals } => Received::Dropped { intervals },
            ServerMessage::Error { message } => Received::Error { message },
            ServerMessage::TaskDump(dump) => Received::TaskDump(dump),
        })
    }

    /// Decodes a frame payload (codec, then [`decode`](Self::decode)).
    pub fn decode_payload(&mut self, payload: &[u8]) -> Result<Received> {
        self.decode(ServerMessage::from_payload(payload)?)
    }

    /// Decodes a message that must be an update; anything else is [`Error::Unexpected`].
    pub fn decode_update(&mut self, message: ServerMessage) -> Result<Update> {
        match message {
            ServerMessage::Update(interned) => self.decode_interned(*interned),
            ServerMessage::Dropped { .. } => Err(Error::Unexpected { expected: "Update", found: "Dropped".into() }),
            ServerMessage::Error { .. } => Err(Error::Unexpected { expected: "Update", found: "Error".into() }),
            ServerMessage::TaskDump(_) => Err(Error::Unexpected { expected: "Update", found: "TaskDump".into() }),
        }
    }

    /// Applies the definitions and rebuilds the update. On error the tables are left as they
    /// were before the message (or empty, if it carried `reset`).
    pub fn decode_interned(&mut self, interned: Interned) -> Result<Update> {
        let Interned { reset, define, update, ext } = interned;
        if reset {
            self.clear();
        }
        let mark = self.mark();
        let result = self.define(define).and_then(|()| Resolver::new(self, ext).update(&update));
        if result.is_err() {
            self.rollback(mark);
        }
        result
    }

    fn mark(&self) -> Mark {
        Mark {
            strings: self.strings.len(),
            string_bytes: self.string_bytes,
            frames: self.frames.len(),
            stacks: self.stacks.len(),
            stack_frames: self.stack_frames,
            bounds: self.bounds.len(),
        }
    }

    fn rollback(&mut self, m: Mark) {
        self.strings.truncate(m.strings);
        self.string_bytes = m.string_bytes;
        self.frames.truncate(m.frames);
        self.stacks.truncate(m.stacks);
        self.stack_frames = m.stack_frames;
        self.bounds.truncate(m.bounds);
    }

    fn define(&mut self, define: Define) -> Result<()> {
        let Define { strings, frames, stacks, bounds } = define;
        let l = self.limits;
        let full = |table: Table, limit: usize| Error::TableFull { table, limit: limit as u64 };

        if self.strings.len().saturating_add(strings.len()) > l.strings {
            return Err(full(Table::Strings, l.strings));
        }
        for s in strings {
            self.string_bytes = self.string_bytes.saturating_add(s.len());
            if self.string_bytes > l.string_bytes {
                return Err(full(Table::StringBytes, l.string_bytes));
            }
            self.strings.push(s);
        }

        if self.frames.len().saturating_add(frames.len()) > l.frames {
            return Err(full(Table::Frames, l.frames));
        }
        for f in frames {
            self.check_string(f.function)?;
            if let Some(file) = f.file {
                self.check_string(file)?;
            }
            self.frames.push(f);
        }

        if self.stacks.len().saturating_add(stacks.len()) > l.stacks {
            return Err(full(Table::Stacks, l.stacks));
        }
        for stack in stacks {
            self.stack_frames = self.stack_frames.saturating_add(stack.len());
            if self.stack_frames > l.stack_frames {
                return Err(full(Table::StackFrames, l.stack_frames));
            }
            if let Some(bad) = stack.iter().find(|id| id.0 as usize >= self.frames.len()) {
                return Err(Error::UndefinedId { table: Table::Frames, id: bad.0, len: self.frames.len() });
            }
            self.stacks.push(stack);
        }

        if self.bounds.len().saturating_add(bounds.len()) > l.bounds {
            return Err(full(Table::Bounds, l.bounds));
        }
        self.bounds.extend(bounds);
        Ok(())
    }

    fn check_string(&self, id: StrId) -> Result<()> {
        if (id.0 as usize) < self.strings.len() {
            Ok(())
        } else {
            Err(Error::UndefinedId { table: Table::Strings, id: id.0, len: self.strings.len() })
        }
    }
}

/// Resolves ids against a decoder's tables, counting the text it copies.
struct Resolver<'a> {
    d: &'a Decoder,
    budget: usize,
    ext: Extension,
    /// The next entry of `ext.stalls`.
    next_stall: usize,
}

impl<'a> Resolver<'a> {
    fn new(d: &'a Decoder, ext: Extension) -> Self {
        Resolver { d, budget: d.limits.expanded_bytes, ext, next_stall: 0 }
    }

    /// The 1.2 fields of the next stall, in encoding order. An update with no extension (from a
    /// 1.1 probe) has none; one whose extension lists fewer stalls than it holds is damaged.
    fn stall_extension(&mut self) -> Result<StallExtension> {
        let list = &mut self.ext.stalls;
        if list.is_empty() {
            return Ok(StallExtension::default());
        }
        let i = self.next_stall;
        self.next_stall += 1;
        match list.get_mut(i) {
            Some(a) => Ok(std::mem::take(a)),
            None => Err(Error::Payload {
                reason: format!("the extension lists {} stall anatomies, the update holds more", list.len()),
            }),
        }
    }

    fn string(&mut self, id: StrId) -> Result<String> {
        let s = self.d.strings.get(id.0 as usize).ok_or(Error::UndefinedId {
            table: Table::Strings,
            id: id.0,
            len: self.d.strings.len(),
        })?;
        self.spend(s.len())?;
        Ok(s.clone())
    }

    fn spend(&mut self, bytes: usize) -> Result<()> {
        // Count every element, so empty strings and long id lists also use up the budget.
        self.budget = self
            .budget
            .checked_sub(bytes.saturating_add(8))
            .ok_or(Error::TooLarge { limit: self.d.limits.expanded_bytes as u64 })?;
        Ok(())
    }

    fn frame(&mut self, id: FrameId) -> Result<Frame> {
        let f = *self.d.frames.get(id.0 as usize).ok_or(Error::UndefinedId {
            table: Table::Frames,
            id: id.0,
            len: self.d.frames.len(),
        })?;
        Ok(Frame {
            function: self.string(f.function)?,
            file: f.file.map(|s| self.string(s)).transpose()?,
            line: f.line,
            inlined: f.inlined,
            kind: f.kind,
        })
    }

    fn stack(&mut self, s: &WireStackCount) -> Result<StackCount> {
        let ids = self.d.stacks.get(s.stack.0 as usize).ok_or(Error::UndefinedId {
            table: Table::Stacks,
            id: s.stack.0,
            len: self.d.stacks.len(),
        })?;
        let frames = ids.iter().map(|&id| self.frame(id)).collect::<Result<Vec<_>>>()?;
        Ok(StackCount { frames, count: s.count })
    }

    fn histogram(&mut self, h: &WireHistogram) -> Result<Histogram> {
        let upper_ns = self.d.bounds.get(h.bounds.0 as usize).ok_or(Error::UndefinedId {
            table: Table::Bounds,
            id: h.bounds.0,
            len: self.d.bounds.len(),
        })?;
        self.spend(upper_ns.len() * 8)?;
        Ok(Histogram {
            upper_ns: upper_ns.clone(),
            counts: h.counts.clone(),
            count: h.count,
            sum_ns: h.sum_ns,
            max_ns: h.max_ns,
        })
    }

    fn stall(&mut self, s: &WireStall) -> Result<Stall> {
        let StallExtension { anatomy, unobserved } = self.stall_extension()?;
        Ok(Stall {
            id: s.id,
            start_unix_ms: s.start_unix_ms,
            duration_ns: s.duration_ns,
            elapsed_ns: s.elapsed_ns,
            worker: s.worker,
            tid: s.tid,
            task: s.task,
            spawned_at: self.string(s.spawned_at)?,
            in_block_in_place: s.in_block_in_place,
            stacks: s.stacks.iter().map(|c| self.stack(c)).collect::<Result<_>>()?,
            samples_lost: s.samples_lost,
            anatomy,
            unobserved,
        })
    }

    fn snapshot(&mut self, s: &WireSnapshot) -> Result<Snapshot> {
        Ok(Snapshot {
            schema: s.schema,
            seq: s.seq,
            at_unix_ms: s.at_unix_ms,
            uptime_ns: s.uptime_ns,
            process: s.process.clone(),
            workers: s
                .workers
                .iter()
                .map(|w| {
                    Ok(WorkerStats {
                        index: w.index,
                        tid: w.tid,
                        polls: w.polls,
                        busy_ns: w.busy_ns,
                        poll_time: self.histogram(&w.poll_time)?,
                    })
                })
                .collect::<Result<_>>()?,
            locations: s
                .locations
                .iter()
                .map(|l| {
                    Ok(LocationStats {
                        location: self.string(l.location)?,
                        spawned: l.spawned,
                        completed: l.completed,
                        live: l.live,
                        oldest_live_ns: l.oldest_live_ns,
                        polls: l.polls,
                        poll_time: self.histogram(&l.poll_time)?,
                        schedule_latency: l.schedule_latency.as_ref().map(|h| self.histogram(h)).transpose()?,
                        leak_suspect: l.leak_suspect,
                        internal: l.internal,
                        blocking: l.blocking,
                    })
                })
                .collect::<Result<_>>()?,
            stalls: s.stalls.iter().map(|st| self.stall(st)).collect::<Result<_>>()?,
            stall_count: s.stall_count,
            stalled_ns: s.stalled_ns,
            lag: LagStats { period_ns: s.lag.period_ns, lag: self.histogram(&s.lag.lag)?, last_ns: s.lag.last_ns },
            runtime: s.runtime.as_ref().map(|r| {
                let (busy_ns, worker_busy_ns) = self.ext.runtime_busy.take().unwrap_or_default();
                RuntimeStats {
                    workers: r.workers,
                    live_tasks: r.live_tasks,
                    busy_ratio: r.busy_ratio,
                    busy_ns,
                    worker_busy_ns,
                    global_queue_depth: r.global_queue_depth,
                    local_queue_depth: r.local_queue_depth,
                    steals: r.steals,
                    parks: r.parks,
                    polls: r.polls,
                    blocking_threads: r.blocking_threads,
                    idle_blocking_threads: r.idle_blocking_threads,
                    blocking_queue_depth: r.blocking_queue_depth,
                }
            }),
            pools: s
                .pools
                .iter()
                .map(|p| {
                    Ok(PoolStats {
                        name: p.name.clone(),
                        in_use: p.in_use,
                        idle: p.idle,
                        max: p.max,
                        waiters: p.waiters,
                        acquired: p.acquired,
                        wait_time: self.histogram(&p.wait_time)?,
                    })
                })
                .collect::<Result<_>>()?,
            alerts: {
                let mut alerts = s.alerts.clone();
                for (i, a) in std::mem::take(&mut self.ext.alerts) {
                    alerts.insert((i as usize).min(alerts.len()), a);
                }
                alerts
            },
            drops: s.drops.clone(),
            alert_history: std::mem::take(&mut self.ext.alert_history),
            alert_history_evicted: self.ext.alert_history_evicted,
        })
    }

    fn interval(&mut self, i: &WireInterval) -> Result<Interval> {
        Ok(Interval {
            seq: i.seq,
            duration_ns: i.duration_ns,
            locations: i
                .locations
                .iter()
                .map(|l| {
                    Ok(LocationDelta {
                        location: self.string(l.location)?,
                        spawned: l.spawned,
                        completed: l.completed,
                        polls: l.polls,
                        poll_time: self.histogram(&l.poll_time)?,
                    })
                })
                .collect::<Result<_>>()?,
            stalls: i.stalls.iter().map(|s| self.stall(s)).collect::<Result<_>>()?,
            stalled_ns: i.stalled_ns,
            lag: self.histogram(&i.lag)?,
            drops: i.drops.clone(),
        })
    }

    fn update(&mut self, u: &WireUpdate) -> Result<Update> {
        Ok(match u {
            WireUpdate::Tick { snapshot, interval } => Update::Tick {
                snapshot: Box::new(self.snapshot(snapshot)?),
                interval: Box::new(self.interval(interval)?),
            },
            WireUpdate::StallStarted(s) => Update::StallStarted(self.stall(s)?),
            WireUpdate::StallEnded(s) => Update::StallEnded(self.stall(s)?),
        })
    }
}
