//! Making an update fit a frame, and what an update costs in memory.
//!
//! A probe with hundreds of recent stalls, each with thousands of distinct deep stacks, can make
//! a tick whose encoding is larger than [`MAX_FRAME_BYTES`](crate::frame::MAX_FRAME_BYTES) or
//! whose stacks alone exceed an [`InternLimits`](crate::intern::InternLimits) table. Such an
//! update used to fail to send, and the probe closed every client on it. [`encode_fitting`] (and
//! [`fit`] for other writers, such as the recorder) instead leave out what matters least until
//! it fits, and say what they left out ([`Trimmed`]):
//!
//! 1. the oldest stalls (by start) of a tick, keeping the newest one;
//! 2. then, in every stall left, the stacks with the fewest samples, keeping one per stall (the
//!    samples of a stack left out are added to the stall's `samples_lost`);
//! 3. then everything else in those lists.
//!
//! Each round removes about as much as the last attempt was over (a tick 3× too large loses
//! about two thirds of what is left to trim), so a fit takes a few encodes, not one per stall.
//!
//! [`approx_bytes`] estimates the heap an update holds: what a subscriber's byte budget counts.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::intern::Encoder;
use crate::{Snapshot, Stall, Update};

/// What [`fit`] left out of an update so that it fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Stall records left out (each distinct stall once, whichever lists held it).
    pub stalls: u64,
    /// Distinct stacks left out of the stalls that stayed.
    pub stacks: u64,
    /// Samples those stacks held (added to their stall's `samples_lost`).
    pub samples: u64,
}

impl Trimmed {
    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        *self == Trimmed::default()
    }

    fn add(&mut self, o: Trimmed) {
        self.stalls += o.stalls;
        self.stacks += o.stacks;
        self.samples += o.samples;
    }
}

/// The outcome of one try of [`fit`]'s writer.
#[derive(Debug)]
pub enum Attempt<T> {
    /// It fitted, and was written or encoded.
    Done(T),
    /// It did not fit: its encoding took `len` bytes against `limit`, or (both `None`) a table
    /// limit of the encoder was exceeded. The writer must have left nothing of it behind (an
    /// interning encoder must have been reset).
    TooLarge {
        /// Bytes the encoding took.
        len: Option<u64>,
        /// Bytes allowed.
        limit: Option<u64>,
    },
}

/// Tries `attempt` on `update`, then on smaller copies of it (see the [module docs](self)) until
/// one fits. Fails with [`Error::Oversized`] when nothing is left to trim and it still does not
/// fit; errors of `attempt` are returned as they are. `update` is cloned only if the first try
/// does not fit.
pub fn fit<T>(update: &Update, mut attempt: impl FnMut(&Update) -> Result<Attempt<T>>) -> Result<(T, Trimmed)> {
    let (mut len, mut limit) = match attempt(update)? {
        Attempt::Done(t) => return Ok((t, Trimmed::default())),
        Attempt::TooLarge { len, limit } => (len, limit),
    };
    let mut smaller = update.clone();
    let mut trimmed = Trimmed::default();
    // Bounded: each round removes at least one stall or stack, and the ratio makes it converge
    // in a few rounds; the cap only guards against a writer that never says yes.
    for _ in 0..64 {
        // The share of what is left to trim that should stay: what the last try was over by,
        // with a margin; a table overflow (no length) halves it.
        let keep = match (len, limit) {
            (Some(len), Some(limit)) if len > 0 => (limit as f64 / len as f64) * 0.9,
            _ => 0.5,
        };
        match trim(&mut smaller, keep.clamp(0.0, 0.95)) {
            Some(t) => trimmed.add(t),
            None => break,
        }
        match attempt(&smaller)? {
            Attempt::Done(t) => return Ok((t, trimmed)),
            Attempt::TooLarge { len: l, limit: m } => (len, limit) = (l, m),
        }
    }
    Err(Error::Oversized { len: len.unwrap_or(u64::MAX), limit: limit.unwrap_or(0) })
}

/// Encodes `update` with `enc` as one frame payload of at most `limit` bytes, trimming it as
/// [`fit`] does when it is larger (or when it alone overflows one of `enc`'s tables). Every
/// try that does not fit resets `enc`, so the payload returned is the one to send: nothing it
/// depends on was lost. On an error `enc` is reset.
///
/// ```
/// use stallscope_wire::fit::encode_fitting;
/// use stallscope_wire::intern::Encoder;
/// use stallscope_wire::{Frame, FrameKind, StackCount, Stall, Update};
/// let stack = |i: usize| StackCount {
///     frames: vec![Frame { function: format!("app::f{i}::{}", "x".repeat(200)), file: None, line: None, inlined: false, kind: FrameKind::User }],
///     count: 1,
/// };
/// let stall = Stall {
///     id: 1, start_unix_ms: 0, duration_ns: Some(1), elapsed_ns: 1, worker: 0, tid: 1, task: None, spawned_at: String::new(),
///     in_block_in_place: false, stacks: (0..100).map(stack).collect(), samples_lost: 0, anatomy: None, unobserved: false,
/// };
/// let mut enc = Encoder::new();
/// let (payload, trimmed) = encode_fitting(&mut enc, &Update::StallEnded(stall), 4096).unwrap();
/// assert!(payload.len() <= 4096);
/// assert!(trimmed.stacks > 80 && trimmed.samples == trimmed.stacks);
/// ```
pub fn encode_fitting(enc: &mut Encoder, update: &Update, limit: usize) -> Result<(Vec<u8>, Trimmed)> {
    let out = fit(update, |u| {
        let message = match enc.encode(u) {
            Ok(m) => m,
            // The encoder is reset already.
            Err(Error::TableFull { .. }) => return Ok(Attempt::TooLarge { len: None, limit: None }),
            Err(e) => return Err(e),
        };
        let payload = message.to_payload()?;
        if payload.len() <= limit {
            return Ok(Attempt::Done(payload));
        }
        // Its definitions will never reach the peer.
        enc.reset();
        Ok(Attempt::TooLarge { len: Some(payload.len() as u64), limit: Some(limit as u64) })
    });
    if out.is_err() {
        enc.reset();
    }
    out
}

/// Removes about `1 - keep` of what is left to trim, in the order of the module docs. `None`
/// when nothing is left.
fn trim(u: &mut Update, keep: f64) -> Option<Trimmed> {
    match u {
        Update::Tick { snapshot, interval } => {
            let lists = [&mut snapshot.stalls, &mut interval.stalls];
            trim_lists(lists, keep)
        }
        Update::StallStarted(s) | Update::StallEnded(s) => {
            let t = trim_stacks(std::slice::from_mut(s), keep, 0);
            (!t.is_empty()).then_some(t)
        }
    }
}

fn trim_lists([a, b]: [&mut Vec<Stall>; 2], keep: f64) -> Option<Trimmed> {
    // Distinct stalls, oldest first.
    let mut order: Vec<(u64, u64)> = a.iter().chain(b.iter()).map(|s| (s.start_unix_ms, s.id)).collect();
    order.sort_unstable();
    order.dedup();
    let drop_n = |n: usize, floor: usize| -> usize {
        let over = n.saturating_sub(floor);
        if over == 0 {
            0
        } else {
            ((n as f64 * (1.0 - keep)).ceil() as usize).clamp(1, over)
        }
    };
    // 1. The oldest stalls, keeping the newest.
    let n = drop_n(order.len(), 1);
    if n > 0 {
        let gone: HashSet<u64> = order[..n].iter().map(|&(_, id)| id).collect();
        a.retain(|s| !gone.contains(&s.id));
        b.retain(|s| !gone.contains(&s.id));
        return Some(Trimmed { stalls: n as u64, ..Trimmed::default() });
    }
    // 2. Stacks, keeping one per stall; 3. then the rest. A stall in both lists is trimmed in
    // both and counted once.
    let in_a: HashSet<u64> = a.iter().map(|s| s.id).collect();
    for floor in [1, 0] {
        let mut t = trim_stacks(a, keep, floor);
        for s in b.iter_mut() {
            let tb = trim_stacks(std::slice::from_mut(s), keep, floor);
            if !in_a.contains(&s.id) {
                t.add(tb);
            }
        }
        if !t.is_empty() {
            return Some(t);
        }
    }
    if !a.is_empty() || !b.is_empty() {
        let stalls = order.len() as u64;
        a.clear();
        b.clear();
        return Some(Trimmed { stalls, ..Trimmed::default() });
    }
    None
}

/// In each stall, removes about `1 - keep` of its stacks, the least sampled first, keeping at
/// least `floor`; their samples go to the stall's `samples_lost`.
fn trim_stacks(stalls: &mut [Stall], keep: f64, floor: usize) -> Trimmed {
    let mut t = Trimmed::default();
    for s in stalls {
        let n = s.stacks.len();
        if n <= floor {
            continue;
        }
        let drop = ((n as f64 * (1.0 - keep)).ceil() as usize).clamp(1, n - floor);
        // Most samples first; stable, so equal counts keep their order and the later go.
        s.stacks.sort_by_key(|k| std::cmp::Reverse(k.count));
        for gone in s.stacks.drain(n - drop..) {
            t.stacks += 1;
            t.samples += gone.count;
            s.samples_lost += gone.count;
        }
    }
    t
}

// === memory ===

/// About how many bytes `update` holds on the heap: the sizes of its structs, lists and text.
/// What a subscriber's byte budget counts; within tens of percent of the truth, never far below
/// it for large updates, which are large because of their stalls' stacks and frames.
pub fn approx_bytes(update: &Update) -> usize {
    use std::mem::size_of;
    let base = size_of::<Update>();
    match update {
        Update::Tick { snapshot, interval } => {
            base + snapshot_bytes(snapshot)
                + size_of::<crate::Interval>()
                + interval.locations.len() * (size_of::<crate::LocationDelta>() + 64)
                + interval.locations.iter().map(|l| l.location.len() + l.poll_time.counts.len() * 16).sum::<usize>()
                + interval.stalls.iter().map(stall_bytes).sum::<usize>()
        }
        Update::StallStarted(s) | Update::StallEnded(s) => base + stall_bytes(s),
    }
}

fn snapshot_bytes(s: &Snapshot) -> usize {
    use std::mem::size_of;
    let hist = |h: &crate::Histogram| h.counts.len() * 16;
    size_of::<Snapshot>()
        + s.process.missing.iter().map(|m| m.len() + 24).sum::<usize>()
        + s.workers.iter().map(|w| size_of::<crate::WorkerStats>() + hist(&w.poll_time)).sum::<usize>()
        + s.locations
            .iter()
            .map(|l| {
                size_of::<crate::LocationStats>()
                    + l.location.len()
                    + hist(&l.poll_time)
                    + l.schedule_latency.as_ref().map_or(0, hist)
            })
            .sum::<usize>()
        + s.stalls.iter().map(stall_bytes).sum::<usize>()
        + s.pools.iter().map(|p| size_of::<crate::PoolStats>() + p.name.len() + hist(&p.wait_time)).sum::<usize>()
        + s.alerts.len() * (size_of::<crate::Alert>() + 256)
        + s.alert_history.len() * (size_of::<crate::AlertRecord>() + 256)
        + hist(&s.lag.lag)
}

fn stall_bytes(s: &Stall) -> usize {
    use std::mem::size_of;
    size_of::<Stall>()
        + s.spawned_at.len()
        + s.anatomy.as_ref().map_or(0, |a| {
            size_of::<crate::StallAnatomy>()
                + a.blocked_in.iter().map(|b| size_of::<crate::BlockedIn>() + b.syscall.len() + 64).sum::<usize>()
        })
        + s.stacks
            .iter()
            .map(|st| {
                size_of::<crate::StackCount>()
                    + st.frames
                        .iter()
                        .map(|f| size_of::<crate::Frame>() + f.function.len() + f.file.as_ref().map_or(0, |p| p.len()))
                        .sum::<usize>()
            })
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_FRAME_BYTES;
    use crate::intern::Decoder;
    use crate::{Frame, FrameKind, Interval, StackCount};

    /// A stall with `stacks` distinct stacks of `depth` frames, each frame's name unique.
    fn stall(id: u64, stacks: usize, depth: usize) -> Stall {
        Stall {
            id,
            start_unix_ms: 1_000 + id,
            duration_ns: Some(50_000_000),
            elapsed_ns: 50_000_000,
            worker: 0,
            tid: 1,
            task: Some(id),
            spawned_at: "src/main.rs:1:1".into(),
            in_block_in_place: false,
            stacks: (0..stacks)
                .map(|k| StackCount {
                    frames: (0..depth)
                        .map(|d| Frame {
                            function: format!("svc::handler_{id}_{k}::level_{d}::{}", "deep_recursion_".repeat(4)),
                            file: Some(format!("src/handlers/h{id}_{k}.rs")),
                            line: Some(d as u32),
                            inlined: false,
                            kind: FrameKind::User,
                        })
                        .collect(),
                    count: 1 + (k as u64 % 7),
                })
                .collect(),
            samples_lost: 0,
            anatomy: None,
            unobserved: false,
        }
    }

    /// A tick with `n` recent stalls of `stacks` distinct stacks of `depth` frames; the
    /// interval holds the newest six again.
    fn tick(n: u64, stacks: usize, depth: usize) -> Update {
        let stalls: Vec<Stall> = (0..n).map(|i| stall(i, stacks, depth)).collect();
        Update::Tick {
            interval: Box::new(Interval { seq: 7, stalls: stalls[n as usize - 6..].to_vec(), ..Interval::default() }),
            snapshot: Box::new(Snapshot { seq: 7, stalls, ..Snapshot::default() }),
        }
    }

    /// Decodes `payload` as a tick.
    fn decoded_tick(dec: &mut Decoder, payload: &[u8]) -> (Box<Snapshot>, Box<Interval>) {
        match dec.decode_payload(payload).unwrap() {
            crate::intern::Received::Update(Update::Tick { snapshot, interval }) => (snapshot, interval),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tick_over_the_limit_loses_its_oldest_stalls_and_decodes() {
        // About 2.5 MB encoded (64 stalls × 20 stacks × 10 frames, every name distinct),
        // against 256 KiB (the same path as a real tick against MAX_FRAME_BYTES).
        let update = tick(64, 20, 10);
        let limit = 256 << 10;
        let mut enc = Encoder::new();
        assert!(enc.encode(&update).unwrap().to_payload().unwrap().len() > 4 * limit);
        enc.reset();
        let (payload, trimmed) = encode_fitting(&mut enc, &update, limit).unwrap();
        assert!(payload.len() <= limit);
        // Fitted in a few rounds, not one stall at a time: at least half the limit is used.
        assert!(payload.len() >= limit / 2, "{}", payload.len());
        assert!(trimmed.stalls > 0 && trimmed.stalls < 64 && trimmed.stacks == 0, "{trimmed:?}");
        let mut dec = Decoder::new();
        let (snapshot, interval) = decoded_tick(&mut dec, &payload);
        // The newest stalls stayed, whole; the oldest went.
        assert_eq!(snapshot.stalls.len() as u64, 64 - trimmed.stalls);
        assert_eq!(snapshot.stalls[0].id, trimmed.stalls);
        assert_eq!(snapshot.stalls.last().unwrap().id, 63);
        assert!(snapshot.stalls.iter().all(|s| s.stacks.len() == 20));
        assert_eq!(interval.stalls.len(), 6);
        // The next update on the same encoder still decodes: nothing it relies on was lost.
        let next = Update::StallEnded(stall(300, 2, 3));
        let p = enc.encode(&next).unwrap().to_payload().unwrap();
        assert!(matches!(dec.decode_payload(&p).unwrap(), crate::intern::Received::Update(u) if u == next));
    }

    #[test]
    fn a_tick_over_a_table_limit_is_trimmed_too() {
        // 40 stalls × 5 distinct stacks against a table of 64 stacks.
        let update = tick(40, 5, 2);
        let limits = crate::intern::InternLimits { stacks: 64, ..crate::intern::InternLimits::DEFAULT };
        let mut enc = Encoder::with_limits(limits);
        assert!(matches!(enc.encode(&update), Err(Error::TableFull { .. })));
        let (payload, trimmed) = encode_fitting(&mut enc, &update, MAX_FRAME_BYTES).unwrap();
        let (snapshot, _) = decoded_tick(&mut Decoder::with_limits(limits), &payload);
        assert!(snapshot.stalls.len() * 5 <= 64 && !snapshot.stalls.is_empty());
        assert_eq!(snapshot.stalls.len() as u64 + trimmed.stalls, 40);
    }

    #[test]
    fn one_huge_stall_keeps_its_most_sampled_stacks_and_counts_the_rest() {
        let s = stall(1, 1000, 20);
        let total: u64 = s.stacks.iter().map(|k| k.count).sum();
        let mut enc = Encoder::new();
        let (payload, t) = encode_fitting(&mut enc, &Update::StallEnded(s), 64 << 10).unwrap();
        assert!(payload.len() <= 64 << 10);
        assert_eq!(t.stalls, 0);
        assert!(t.stacks > 0);
        let crate::intern::Received::Update(Update::StallEnded(got)) = Decoder::new().decode_payload(&payload).unwrap()
        else {
            panic!()
        };
        assert_eq!(got.stacks.len() as u64, 1000 - t.stacks);
        // Nothing left out is unaccounted for.
        assert_eq!(got.stacks.iter().map(|k| k.count).sum::<u64>() + got.samples_lost, total);
        assert_eq!(got.samples_lost, t.samples);
        let least_kept = got.stacks.iter().map(|k| k.count).min().unwrap();
        assert!(least_kept >= 1 && got.stacks.iter().any(|k| k.count == 7));
    }

    #[test]
    fn an_update_that_fits_is_untouched_and_one_that_never_fits_is_an_error() {
        let u = Update::StallEnded(stall(1, 3, 3));
        let (p, t) = encode_fitting(&mut Encoder::new(), &u, MAX_FRAME_BYTES).unwrap();
        assert!(t.is_empty());
        assert!(matches!(Decoder::new().decode_payload(&p).unwrap(), crate::intern::Received::Update(g) if g == u));
        assert!(matches!(encode_fitting(&mut Encoder::new(), &u, 8), Err(Error::Oversized { .. })));
    }

    #[test]
    fn approx_bytes_grows_with_the_stacks() {
        let small = approx_bytes(&Update::StallEnded(stall(1, 1, 1)));
        let big = approx_bytes(&Update::StallEnded(stall(1, 100, 40)));
        // 4,000 frames of ~90 bytes of text each, plus the structs.
        assert!(big > 4000 * 90, "{big}");
        assert!(big < 4000 * 300, "{big}");
        assert!(small < 1000, "{small}");
    }
}
