//! Messages shared by the stallscope probe and its clients.
//!
//! Everything here is plain data: `serde` types with no behaviour beyond small helpers
//! (percentiles, deltas). The probe builds a [`Snapshot`] (cumulative state) and an
//! [`Interval`] (what changed since the previous snapshot) once per aggregation interval.
//! Durations are carried as integer nanoseconds (`*_ns`) or milliseconds (`*_ms`) so the
//! encoding is independent of any clock type.
//!
//! The protocol between the probe's socket server and the `stallscope` client, and the
//! recording file format, live in the modules (documented in `docs/protocol.md`):
//!
//! - [`frame`]: length-prefixed frames with a size limit, blocking and incremental readers;
//! - [`proto`]: protocol version, handshake, [`ServerMessage`] and [`ClientMessage`];
//! - [`intern`]: per-connection [`Encoder`]/[`Decoder`] that send strings, frames, stacks and
//!   bucket bounds once;
//! - [`codec`]: the payload codec (postcard);
//! - [`recording`]: the recording file, its writer and its damage-tolerant reader.
//!
//! A client can also ask for a [`TaskDump`] (protocol 1.1): the probe answers
//! `Request::TaskDump` with [`ServerMessage::TaskDump`].
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

use serde::{Deserialize, Serialize};

mod alert_text;
pub mod codec;
pub mod discovery;
mod error;
pub mod fit;
pub mod frame;
pub mod intern;
pub mod model;
pub mod names;
pub mod proto;
pub mod recording;

pub use error::{Error, Peer, Table};
pub use frame::{read_frame, write_frame, FrameReader, MAX_FRAME_BYTES};
pub use intern::{Decoder, Encoder, Received};
pub use proto::{ClientMessage, Hello, ProtocolVersion, Request, ServerMessage, PROTOCOL_MAJOR, PROTOCOL_MINOR};
pub use recording::{RecordingReader, RecordingWriter};

/// Version of the snapshot schema. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

// === Histogram ===

/// A log-bucket histogram of durations.
///
/// Bucket `i` counts values in `(upper_ns[i-1], upper_ns[i]]`; the last bucket is open-ended and
/// its upper bound is the largest value seen (`max_ns`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Inclusive upper bound of each bucket, in nanoseconds, ascending.
    pub upper_ns: Vec<u64>,
    /// Number of values in each bucket.
    pub counts: Vec<u64>,
    /// Number of values recorded.
    pub count: u64,
    /// Sum of all values, in nanoseconds.
    pub sum_ns: u64,
    /// Largest value recorded, in nanoseconds (0 when empty).
    pub max_ns: u64,
}

impl Histogram {
    /// The value at quantile `q` (0.0 ..= 1.0), as the upper bound of the bucket holding it,
    /// capped at the largest value seen. `None` when the histogram is empty.
    ///
    /// ```
    /// use stallscope_wire::Histogram;
    /// let h = Histogram { upper_ns: vec![10, 100, 1000], counts: vec![90, 9, 1], count: 100, sum_ns: 2_000, max_ns: 700 };
    /// assert_eq!(h.quantile_ns(0.5), Some(10));
    /// assert_eq!(h.quantile_ns(0.99), Some(100));
    /// assert_eq!(h.quantile_ns(1.0), Some(700));
    /// ```
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                let upper = self.upper_ns.get(i).copied().unwrap_or(self.max_ns);
                return Some(upper.min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }

    /// Mean value in nanoseconds, `None` when empty.
    pub fn mean_ns(&self) -> Option<u64> {
        (self.count > 0).then(|| self.sum_ns / self.count)
    }

    /// `self - earlier`, bucket by bucket (saturating). Both must share bucket bounds; the
    /// maximum is kept from `self` because a maximum cannot be subtracted.
    pub fn delta(&self, earlier: &Histogram) -> Histogram {
        let counts = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
            .collect();
        Histogram {
            upper_ns: self.upper_ns.clone(),
            counts,
            count: self.count.saturating_sub(earlier.count),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            max_ns: self.max_ns,
        }
    }
}

impl Histogram {
    /// The sum of histograms that share bucket bounds with the first one (others are skipped):
    /// all workers' poll times as one, in both reports.
    pub fn merged<'a>(hs: impl IntoIterator<Item = &'a Histogram>) -> Histogram {
        let mut acc = Histogram::default();
        for h in hs {
            if acc.counts.is_empty() && acc.count == 0 {
                acc = h.clone();
            } else if h.upper_ns == acc.upper_ns && h.counts.len() == acc.counts.len() {
                for (a, b) in acc.counts.iter_mut().zip(&h.counts) {
                    *a = a.saturating_add(*b);
                }
                acc.count = acc.count.saturating_add(h.count);
                acc.sum_ns = acc.sum_ns.saturating_add(h.sum_ns);
                acc.max_ns = acc.max_ns.max(h.max_ns);
            }
        }
        acc
    }

    /// A quantile for people (`53.2 ms`), `-` for an empty histogram.
    pub fn quantile_text(&self, q: f64) -> String {
        self.quantile_ns(q).map(fmt_ns).unwrap_or_else(|| "-".to_string())
    }
}

/// A duration for people: "53.2 ms", "1.20 s", "850 µs", "12 ns". Shared by the probe's report and
/// the client's.
///
/// ```
/// assert_eq!(stallscope_wire::fmt_ns(53_200_000), "53.2 ms");
/// assert_eq!(stallscope_wire::fmt_ns(1_200_000_000), "1.20 s");
/// ```
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// `2025-11-21T04:40:00.137Z` for a Unix time in milliseconds (UTC, proleptic Gregorian).
///
/// ```
/// assert_eq!(stallscope_wire::rfc3339_ms(1_763_700_000_137), "2025-11-21T04:40:00.137Z");
/// assert_eq!(stallscope_wire::rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
/// ```
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let (days, ms) = ((unix_ms / 86_400_000) as i64, unix_ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

// === Stacks ===

/// What kind of code a stack frame belongs to. Used for trimming and colouring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FrameKind {
    /// The service's own code.
    User,
    /// The Rust standard library (`std`, `core`, `alloc`).
    Std,
    /// Tokio.
    Tokio,
    /// Any other library: crates from a registry, libc and other shared objects.
    Library,
    /// An address that could not be symbolized.
    Unknown,
}

/// One symbolized frame. Inlined functions get a frame of their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Demangled function name without the hash suffix.
    pub function: String,
    /// Source file, when line tables are present.
    pub file: Option<String>,
    /// Source line, when line tables are present.
    pub line: Option<u32>,
    /// Whether the function was inlined into its caller.
    pub inlined: bool,
    /// What kind of code this is.
    pub kind: FrameKind,
}

impl Frame {
    /// The leaf the probe adds to a sample taken while its thread was blocked in a system call,
    /// so that flame graphs tell off-CPU time from CPU time: `[off CPU] read(2) on /data/x.csv`.
    /// Its kind is [`FrameKind::Unknown`], with no file.
    pub fn off_cpu(what: &str) -> Frame {
        Frame {
            function: format!("{OFF_CPU_PREFIX}{what}"),
            file: None,
            line: None,
            inlined: false,
            kind: FrameKind::Unknown,
        }
    }

    /// Whether this is an [`off_cpu`](Self::off_cpu) leaf.
    pub fn is_off_cpu(&self) -> bool {
        self.file.is_none() && is_off_cpu_label(self.kind, &self.function)
    }

    /// The name people read in alerts and tables: `handle_login (async fn)`,
    /// `serve::{async block}`, `<Flusher as Drop>::drop`, `load (tail call)`. Stacks, folded
    /// output and flame graphs keep the full [`function`](Self::function). See [`names`].
    pub fn short_name(&self) -> String {
        names::short_name(&self.function)
    }

    /// The frame for people: its [`short_name`](Self::short_name) and where it is,
    /// `handle_login (async fn) (src/main.rs:42)`, with the file's
    /// [`short_path`](names::short_path). Alerts, reports, the demo and the UI all name a
    /// frame this way.
    ///
    /// ```
    /// use stallscope_wire::{Frame, FrameKind};
    /// let f = Frame { function: "svc::work".into(), file: Some("/w/svc/src/main.rs".into()), line: Some(42), inlined: false, kind: FrameKind::User };
    /// assert_eq!(f.place(), "work (src/main.rs:42)");
    /// ```
    pub fn place(&self) -> String {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{} ({}:{})", self.short_name(), names::short_path(file), line),
            (Some(file), None) => format!("{} ({})", self.short_name(), names::short_path(file)),
            _ => self.short_name(),
        }
    }

    /// Whether this frame was recovered from a tail call (its function jumped to the next inner
    /// frame's, so it had no frame of its own on the stack).
    pub fn is_tail_call(&self) -> bool {
        self.function.ends_with(names::TAIL_CALL_SUFFIX)
    }
}

/// How an [`Frame::off_cpu`] leaf's text begins.
pub const OFF_CPU_PREFIX: &str = "[off CPU] ";

/// Whether a flame-graph label of this kind is an [`Frame::off_cpu`] leaf (flame graphs keep
/// labels and kinds, not frames).
pub fn is_off_cpu_label(kind: FrameKind, label: &str) -> bool {
    kind == FrameKind::Unknown && label.starts_with(OFF_CPU_PREFIX)
}

/// What a stall with no frame in any sample is blamed on ([`Stall::culprit_text`]).
pub const NO_STACK: &str = "(no stack sample)";

/// A distinct stack and how many samples landed on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCount {
    /// Frames, innermost first, already trimmed of the probe and Tokio's poll machinery.
    pub frames: Vec<Frame>,
    /// Samples that landed on this exact stack.
    pub count: u64,
}

// === Stalls ===

/// One poll that ran longer than the stall threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Identifier, unique within a probe.
    pub id: u64,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// Exact duration of the poll; `None` while it is still running.
    pub duration_ns: Option<u64>,
    /// How long it had run when this record was made (equals `duration_ns` once ended).
    pub elapsed_ns: u64,
    /// Runtime thread slot the poll ran on.
    pub worker: u32,
    /// Kernel thread id of that thread.
    pub tid: i32,
    /// Tokio task id, `None` for an `instrument`ed future and for code no task hook saw.
    pub task: Option<u64>,
    /// Spawn location (`file:line:col`) of the stalled task; for code no task hook saw, one of
    /// [`Stall::UNHOOKED_BLOCK_ON`] and [`Stall::UNHOOKED_LOCAL_SET`] (see
    /// [`Stall::unhooked_origin`]).
    pub spawned_at: String,
    /// The stall happened inside `tokio::task::block_in_place`, which is allowed to block.
    pub in_block_in_place: bool,
    /// Native stack samples, grouped by identical stack.
    pub stacks: Vec<StackCount>,
    /// Samples requested but not captured (buffer busy, thread gone, unwind failed).
    pub samples_lost: u64,
    /// Where the stall's wall time went: on CPU, waiting for a CPU, blocked (since protocol
    /// 1.2; `None` in older recordings, while the stall runs, and where the kernel's per-thread
    /// accounting could not be read).
    #[serde(default)]
    pub anatomy: Option<StallAnatomy>,
    /// The probe's watchdog never saw this poll running past half the threshold, so it has no
    /// sample and no anatomy: only its length, from the poll hook. The watchdog scans at least
    /// every half threshold, so it misses a poll only when its own thread got no CPU for that
    /// long: such a poll blames no code (since protocol 1.2; false in older recordings).
    #[serde(default)]
    pub unobserved: bool,
}

/// A stall's wall time split three ways, read from the kernel's accounting of the stalled
/// thread alone (its CPU clock and `/proc/self/task/TID/schedstat`).
///
/// The probe reads the thread's counters when its watchdog first sees the poll running and again
/// when it sees the poll end; the split measured over that window (`measured_ns`) is scaled to
/// the poll's exact wall time, so `on_cpu_ns + waiting_ns + blocked_ns` equals the stall's
/// duration. The window can start after the poll did (the watchdog scans, it is not told of
/// each poll) and ends up to a sample interval after it: see `docs/guide.md`, "Reading a
/// stall's anatomy".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallAnatomy {
    /// Time the thread ran on a CPU, nanoseconds.
    pub on_cpu_ns: u64,
    /// Time the thread was runnable but not running: the host's other threads or a CPU quota
    /// took its CPU, nanoseconds.
    pub waiting_ns: u64,
    /// Time the thread was off CPU and not runnable: asleep, waiting for a lock or for I/O,
    /// nanoseconds.
    pub blocked_ns: u64,
    /// Length of the window the counters were read over, nanoseconds.
    pub measured_ns: u64,
    /// Time the process's cgroup was throttled by its CPU quota while the stall lasted (from
    /// the cgroup's `cpu.stat`), nanoseconds; `None` where no `cpu.stat` with throttling
    /// counters could be read.
    pub throttled_ns: Option<u64>,
    /// What the thread was blocked in, as the watchdog saw it at its samples (from
    /// `/proc/self/task/TID/syscall`), most seen first.
    pub blocked_in: Vec<BlockedIn>,
    /// The wall time crossed the threshold only because the worker waited for a CPU: on-CPU plus
    /// blocked time stayed under the stall threshold. Such a poll blames no code.
    pub cpu_starved: bool,
}

/// A system call a stalled thread was seen blocked in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedIn {
    /// The system call, e.g. `read(2)`, `futex(2)`, `clock_nanosleep(2)`.
    pub syscall: String,
    /// What it waits on, when the probe can tell: a file path, a socket with its peer address, a
    /// pipe; or what a futex usually is.
    pub target: Option<String>,
    /// Samples that saw the thread there.
    pub samples: u64,
}

impl BlockedIn {
    /// `read(2) on /var/lib/app/big.csv`, `futex(2) (a lock, a condition variable or a channel)`.
    pub fn describe(&self) -> String {
        match &self.target {
            Some(t) if t.starts_with('(') => format!("{} {t}", self.syscall),
            Some(t) => format!("{} on {t}", self.syscall),
            None => self.syscall.clone(),
        }
    }
}

/// The part of a stall's wall time that dominated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StallCause {
    /// The poll ran code: a CPU loop, parsing, hashing, compression.
    OnCpu,
    /// The poll waited in the kernel: a sleep, a lock, blocking I/O.
    Blocked,
    /// The worker was ready to run but had no CPU.
    WaitingForCpu,
}

impl StallAnatomy {
    /// What kind of stall this was: waiting for a CPU when the poll was starved (it blames no
    /// code), otherwise the larger of on CPU and blocked, the two parts the code itself spent.
    /// Time waiting for a CPU can exceed both on a busy host without changing what the code did.
    pub fn dominant(&self) -> StallCause {
        if self.cpu_starved {
            StallCause::WaitingForCpu
        } else if self.on_cpu_ns >= self.blocked_ns {
            StallCause::OnCpu
        } else {
            StallCause::Blocked
        }
    }

    /// What the thread was blocked in most often, if it was seen blocked in a system call.
    pub fn main_blocked_in(&self) -> Option<&BlockedIn> {
        self.blocked_in.iter().max_by_key(|b| b.samples)
    }

    /// One line for people: `on CPU 48.1 ms · waiting 1.2 ms · blocked 0.4 ms`, with what it was
    /// blocked in when that dominates.
    ///
    /// ```
    /// use stallscope_wire::{BlockedIn, StallAnatomy};
    /// let a = StallAnatomy {
    ///     on_cpu_ns: 200_000, waiting_ns: 0, blocked_ns: 49_800_000, measured_ns: 45_000_000,
    ///     blocked_in: vec![BlockedIn { syscall: "clock_nanosleep(2)".into(), target: None, samples: 20 }],
    ///     ..StallAnatomy::default()
    /// };
    /// assert_eq!(a.describe(), "blocked 49.8 ms in clock_nanosleep(2) · on CPU 200 µs · waiting 0 ns");
    /// ```
    pub fn describe(&self) -> String {
        let lead = match self.dominant() {
            StallCause::Blocked => match self.main_blocked_in() {
                Some(b) => format!("blocked {} in {}", fmt_ns(self.blocked_ns), b.describe()),
                None => format!("blocked {}", fmt_ns(self.blocked_ns)),
            },
            StallCause::OnCpu => format!("on CPU {}", fmt_ns(self.on_cpu_ns)),
            StallCause::WaitingForCpu => format!("waiting for a CPU {}", fmt_ns(self.waiting_ns)),
        };
        let mut rest = Vec::new();
        if self.dominant() != StallCause::OnCpu {
            rest.push(format!("on CPU {}", fmt_ns(self.on_cpu_ns)));
        }
        if self.dominant() != StallCause::WaitingForCpu {
            rest.push(format!("waiting {}", fmt_ns(self.waiting_ns)));
        }
        if self.dominant() != StallCause::Blocked {
            match self.main_blocked_in() {
                Some(b) if self.blocked_ns > 0 => {
                    rest.push(format!("blocked {} in {}", fmt_ns(self.blocked_ns), b.describe()))
                }
                _ => rest.push(format!("blocked {}", fmt_ns(self.blocked_ns))),
            }
        }
        if let Some(t) = self.throttled_ns.filter(|t| *t > 0) {
            rest.push(format!("cgroup throttled {}", fmt_ns(t)));
        }
        format!("{lead} · {}", rest.join(" · "))
    }
}

impl Stall {
    /// `spawned_at` of a stall in the `block_on` future of a current-thread runtime, which no
    /// task hook sees (`task` is `None`).
    pub const UNHOOKED_BLOCK_ON: &'static str = "(block_on future)";
    /// `spawned_at` of a stall in a task of a `LocalSet` (`spawn_local`), which no task hook
    /// sees (`task` is `None`).
    pub const UNHOOKED_LOCAL_SET: &'static str = "(LocalSet task)";

    /// For a stall in code no task hook saw, what it was: "block_on future" or "LocalSet task".
    /// `None` for a task's poll or an `instrument`ed future, whose `spawned_at` is a location.
    ///
    /// ```
    /// # use stallscope_wire::Stall;
    /// let s = Stall {
    ///     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
    ///     task: None, spawned_at: Stall::UNHOOKED_LOCAL_SET.into(), in_block_in_place: false,
    ///     stacks: vec![], samples_lost: 0, anatomy: None, unobserved: false,
    /// };
    /// assert_eq!(s.unhooked_origin(), Some("LocalSet task"));
    /// ```
    pub fn unhooked_origin(&self) -> Option<&'static str> {
        if self.task.is_some() {
            return None;
        }
        match self.spawned_at.as_str() {
            Stall::UNHOOKED_BLOCK_ON => Some("block_on future"),
            Stall::UNHOOKED_LOCAL_SET => Some("LocalSet task"),
            _ => None,
        }
    }

    /// The stack a stall is blamed on: the most sampled stack that has frames (the first of
    /// equals, in the probe's order). A sample that unwound to no frame at all is no stack:
    /// a stall whose samples are all empty has none. Every place that names a stall's culprit
    /// or prints its frames goes through this, so the two always come from the same stack.
    ///
    /// ```
    /// use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
    /// let f = |name: &str| Frame { function: name.into(), file: None, line: None, inlined: false, kind: FrameKind::User };
    /// let mut s = Stall { id: 1, start_unix_ms: 0, duration_ns: Some(20_000_000), elapsed_ns: 20_000_000, worker: 0,
    ///     tid: 1, task: Some(1), spawned_at: "src/main.rs:1:1".into(), in_block_in_place: false,
    ///     stacks: vec![StackCount { frames: vec![], count: 5 }, StackCount { frames: vec![f("app::a")], count: 2 }],
    ///     samples_lost: 0, anatomy: None, unobserved: false };
    /// assert_eq!(s.main_stack().unwrap()[0].function, "app::a");
    /// s.stacks.truncate(1);
    /// assert!(s.main_stack().is_none() && s.top_user_frame().is_none() && s.culprit_frame().is_none());
    /// ```
    pub fn main_stack(&self) -> Option<&[Frame]> {
        let mut best: Option<&StackCount> = None;
        for st in self.stacks.iter().filter(|s| !s.frames.is_empty()) {
            if best.is_none_or(|b| st.count > b.count) {
                best = Some(st);
            }
        }
        best.map(|b| b.frames.as_slice())
    }

    /// The innermost user frame of [`Stall::main_stack`], if any.
    pub fn top_user_frame(&self) -> Option<&Frame> {
        self.main_stack()?.iter().find(|f| f.kind == FrameKind::User)
    }

    /// The frame a stall is blamed on: [`Stall::top_user_frame`], else the innermost frame of
    /// [`Stall::main_stack`]; `None` when no sample has a frame.
    pub fn culprit_frame(&self) -> Option<&Frame> {
        let stack = self.main_stack()?;
        stack.iter().find(|f| f.kind == FrameKind::User).or(stack.first())
    }

    /// The function a stall is grouped under: the full name of its
    /// [`culprit_frame`](Self::culprit_frame), or [`NO_STACK`]. One blocking-poll alert and one
    /// row of the reports' "stalled time by function" per function (not per line: a loop
    /// samples several lines of it).
    pub fn culprit_function(&self) -> &str {
        self.culprit_frame().map_or(NO_STACK, |f| f.function.as_str())
    }

    /// The culprit for people: [`Frame::place`] of the [`culprit_frame`](Self::culprit_frame),
    /// or [`NO_STACK`] (never an empty name).
    pub fn culprit_text(&self) -> String {
        self.culprit_frame().map_or_else(|| NO_STACK.to_string(), Frame::place)
    }

    /// The user frames that called the culprit, innermost first, from the same stack
    /// ([`main_stack`](Self::main_stack)): the "called from" lines of the reports.
    pub fn callers(&self) -> impl Iterator<Item = &Frame> {
        let stack = self.main_stack().unwrap_or_default();
        let culprit = self.culprit_frame();
        stack
            .iter()
            .skip_while(move |f| !culprit.is_some_and(|c| std::ptr::eq(*f, c)))
            .skip(1)
            .filter(|f| f.kind == FrameKind::User)
    }

    /// What stalled and where it came from: `task 7  spawned at src/main.rs:3:5`,
    /// `instrumented future  spawned at ...`, or for code no task hook saw,
    /// `LocalSet task (no task hook)`.
    pub fn origin_text(&self) -> String {
        match (self.task, self.unhooked_origin()) {
            (_, Some(origin)) => format!("{origin} (no task hook)"),
            (Some(t), None) => format!("task {t}  spawned at {}", names::short_path(&self.spawned_at)),
            (None, None) => format!("instrumented future  spawned at {}", names::short_path(&self.spawned_at)),
        }
    }

    /// Its length: the final duration once it ended, what had elapsed while it ran.
    pub fn length_ns(&self) -> u64 {
        self.duration_ns.unwrap_or(self.elapsed_ns)
    }

    /// Wall-clock end of the stall (or of what was seen of it), ms since the Unix epoch.
    pub fn end_unix_ms(&self) -> u64 {
        self.start_unix_ms.saturating_add(self.length_ns() / 1_000_000)
    }

    /// Whether any sample of this stall has a frame.
    pub fn has_stack(&self) -> bool {
        self.stacks.iter().any(|s| !s.frames.is_empty())
    }

    /// Total samples taken.
    pub fn sample_count(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// The poll crossed the threshold only because its worker waited for a CPU (see
    /// [`StallAnatomy::cpu_starved`]): not a code stall, no code to blame.
    pub fn cpu_starved(&self) -> bool {
        self.anatomy.as_ref().is_some_and(|a| a.cpu_starved)
    }

    /// Whether the stall names code: not starved of CPU and observed (see
    /// [`unobserved`](Self::unobserved)).
    pub fn blames_code(&self) -> bool {
        !self.cpu_starved() && !self.unobserved
    }

    /// What kind of stall, in a word or two for tables: `on CPU`, `blocked`, `no CPU` (it
    /// waited for a CPU and blames no code), `unseen` (see [`unobserved`](Self::unobserved)), or
    /// `—` when its anatomy was not measured.
    pub fn kind_label(&self) -> &'static str {
        match (&self.anatomy, self.unobserved) {
            (_, true) => "unseen",
            (None, false) => "—",
            (Some(a), false) => match a.dominant() {
                StallCause::OnCpu => "on CPU",
                StallCause::Blocked => "blocked",
                StallCause::WaitingForCpu => "no CPU",
            },
        }
    }

    /// Why a stall that blames no code blames none, for the place its culprit would be.
    pub fn no_blame_reason(&self) -> Option<&'static str> {
        if self.cpu_starved() {
            Some("waited for a CPU: no code blamed")
        } else if self.unobserved {
            Some("not observed: the probe's watchdog got no CPU while it ran")
        } else {
            None
        }
    }
}

// === Tasks ===

/// Figures for one spawn location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocationStats {
    /// `file:line:col` of the `spawn` call.
    pub location: String,
    /// Tasks spawned here, ever.
    pub spawned: u64,
    /// Tasks spawned here that have terminated.
    pub completed: u64,
    /// Tasks spawned here that are alive now (`spawned - completed`).
    pub live: u64,
    /// Age of the oldest live task spawned here, when known.
    pub oldest_live_ns: Option<u64>,
    /// Number of polls.
    pub polls: u64,
    /// Poll durations.
    pub poll_time: Histogram,
    /// Wake-to-poll latency, when schedule-latency tracking is on.
    pub schedule_latency: Option<Histogram>,
    /// This location's live count keeps growing (see the leak rule in the docs).
    pub leak_suspect: bool,
    /// The location belongs to the probe itself (its heartbeat task).
    pub internal: bool,
    /// A `spawn_blocking` site: Tokio reports these tasks only when they finish, so `live` is
    /// always 0 and `spawned` equals `completed`.
    pub blocking: bool,
}

/// Figures for one runtime thread slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Slot index (stable for the life of the thread).
    pub index: u32,
    /// Kernel thread id, 0 if the thread has gone.
    pub tid: i32,
    /// Polls run on this thread.
    pub polls: u64,
    /// Time spent in polls, nanoseconds: estimated by the probe's watchdog, which finds the
    /// thread in a poll or not at each scan (every `stall threshold / 8`, 1.25 ms by default).
    pub busy_ns: u64,
    /// Poll durations on this thread.
    pub poll_time: Histogram,
}

// === Runtime and pools ===

/// Tokio runtime metrics (through tokio-metrics' `RuntimeMonitor`) for the last interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeStats {
    /// Worker threads.
    pub workers: u64,
    /// Tasks alive in the runtime.
    pub live_tasks: u64,
    /// Share of the interval the workers were busy, averaged over workers, 0.0 ..= 1.0.
    pub busy_ratio: f64,
    /// Time the workers spent busy since the probe started, summed over workers, nanoseconds
    /// (Tokio's `worker_total_busy_duration`): what [`Snapshot::busy_ratio_since`] reads.
    #[serde(default)]
    pub busy_ns: u64,
    /// The same per worker, by Tokio's worker index.
    #[serde(default)]
    pub worker_busy_ns: Vec<u64>,
    /// Tasks in the global (injection) queue.
    pub global_queue_depth: u64,
    /// Tasks in all workers' local queues (needs `tokio_unstable`).
    pub local_queue_depth: u64,
    /// Tasks stolen between workers in the interval (needs `tokio_unstable`).
    pub steals: u64,
    /// Times workers parked in the interval.
    pub parks: u64,
    /// Polls in the interval (needs `tokio_unstable`).
    pub polls: u64,
    /// Blocking-pool threads (needs `tokio_unstable`).
    pub blocking_threads: u64,
    /// Idle blocking-pool threads (needs `tokio_unstable`).
    pub idle_blocking_threads: u64,
    /// Tasks queued for the blocking pool (needs `tokio_unstable`).
    pub blocking_queue_depth: u64,
}

/// Gauges and wait times for one pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Name given when the pool was registered.
    pub name: String,
    /// Permits or connections handed out.
    pub in_use: u64,
    /// Permits or connections ready to hand out.
    pub idle: u64,
    /// Capacity.
    pub max: u64,
    /// Callers waiting to acquire.
    pub waiters: u64,
    /// Successful acquisitions, ever.
    pub acquired: u64,
    /// How long acquisitions waited.
    pub wait_time: Histogram,
}

impl LocationStats {
    /// A leak suspect for people: `src/conn.rs:9:9  live 30 (spawned 40, completed 10),
    /// oldest 3.00 s`, as both text reports print it.
    pub fn leak_text(&self) -> String {
        format!(
            "{}  live {} (spawned {}, completed {}), oldest {}",
            self.location,
            self.live,
            self.spawned,
            self.completed,
            self.oldest_live_ns.map(fmt_ns).unwrap_or_else(|| "-".into())
        )
    }
}

impl RuntimeStats {
    /// Tasks wait in the blocking pool's queue and no thread of it is idle: the "blocking pool
    /// starved" alert, the reports' `STARVED` and the Pools view's saturated row.
    pub fn blocking_pool_starved(&self) -> bool {
        self.blocking_queue_depth > 0 && self.idle_blocking_threads == 0
    }
}

impl PoolStats {
    /// Every unit is handed out and somebody is waiting.
    pub fn saturated(&self) -> bool {
        self.max > 0 && self.in_use >= self.max && self.waiters > 0
    }
}

/// How late the probe's heartbeat timer was polled after its deadline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LagStats {
    /// Heartbeat period, nanoseconds.
    pub period_ns: u64,
    /// Lag of every heartbeat.
    pub lag: Histogram,
    /// Lag of the most recent heartbeat, nanoseconds.
    pub last_ns: u64,
}

// === Alerts ===

/// The kinds of alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertKind {
    /// A poll blocked a worker.
    #[default]
    BlockingPoll,
    /// A spawn location's live count keeps growing.
    LeakSuspect,
    /// A pool has every unit in use and callers waiting.
    PoolSaturated,
    /// The blocking pool has work queued and no idle thread.
    BlockingPoolStarved,
    /// The heartbeat timer fired late.
    LoopLag,
    /// The probe dropped data.
    DroppedData,
    /// Polls crossed the threshold only because their worker waited for a CPU (host busy or CPU
    /// quota throttled); no code is blamed (since protocol 1.2).
    CpuStarvation,
}

impl AlertKind {
    /// Whether a peer of protocol `1.minor` can decode this kind (kinds are added at the end).
    pub fn known_in(self, minor: u16) -> bool {
        minor >= 2 || self != AlertKind::CpuStarvation
    }
}

/// One active alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What kind.
    pub kind: AlertKind,
    /// What it is about, stable while the alert lasts (the culprit function, the spawn location,
    /// the pool): `(kind, subject)` identifies one alert across snapshots, while `summary`
    /// carries figures that change every tick.
    pub subject: String,
    /// One-line summary naming the culprit.
    pub summary: String,
    /// What to do about it.
    pub what_to_do: String,
}

/// What an alert's figure counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeakUnit {
    /// A duration in nanoseconds: the longest stall, the largest loop lag.
    #[default]
    Nanos,
    /// Live tasks (a leak suspect).
    Tasks,
    /// Callers waiting for a pool.
    Waiters,
    /// Jobs queued for the blocking pool.
    Queued,
    /// Items the probe dropped in one interval.
    Dropped,
}

/// The figure that says how bad an alert is, with its unit: the longest stall, the most live
/// tasks, the most waiters, the deepest blocking queue, the largest lag, the most dropped.
///
/// ```
/// use stallscope_wire::{AlertFigure, PeakUnit};
/// assert_eq!(AlertFigure { value: 34_800_000, unit: PeakUnit::Nanos }.to_string(), "34.8 ms");
/// assert_eq!(AlertFigure { value: 22, unit: PeakUnit::Queued }.to_string(), "22 queued");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFigure {
    /// The value, in `unit`.
    pub value: u64,
    /// What `value` counts.
    pub unit: PeakUnit,
}

impl std::fmt::Display for AlertFigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.value;
        match self.unit {
            PeakUnit::Nanos => f.write_str(&fmt_ns(v)),
            PeakUnit::Tasks => write!(f, "{v} live task{}", if v == 1 { "" } else { "s" }),
            PeakUnit::Waiters => write!(f, "{v} waiting"),
            PeakUnit::Queued => write!(f, "{v} queued"),
            PeakUnit::Dropped => write!(f, "{v} dropped"),
        }
    }
}

/// One alert over the probe's life, kept after it stops being active, so that an incident that
/// passed (a second of blocking-pool starvation, a burst of loop lag) is still in the end-of-run
/// report. Updated on every aggregator tick from the alerts active then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// What kind.
    pub kind: AlertKind,
    /// What it is about ([`Alert::subject`]); `(kind, subject)` identifies the record.
    pub subject: String,
    /// First tick it was active at, ms since the Unix epoch.
    pub first_unix_ms: u64,
    /// Last tick it was active at, ms since the Unix epoch.
    pub last_unix_ms: u64,
    /// How many separate times it became active (a tick without it ends one).
    pub count: u64,
    /// Time it was active, nanoseconds: each tick it was active at counts the interval since the
    /// tick before (the span its checks looked at). A blocking-poll alert stays up for 10 s after
    /// its last stall, which this includes.
    pub active_ns: u64,
    /// The worst figure while it was active.
    pub peak: AlertFigure,
    /// When the peak was seen, ms since the Unix epoch.
    pub peak_unix_ms: u64,
    /// The alert's summary at the peak.
    pub peak_summary: String,
    /// The figure at the last tick it was active at.
    pub latest: AlertFigure,
    /// The alert's summary at the last tick it was active at.
    pub latest_summary: String,
    /// What to do about it.
    pub what_to_do: String,
    /// Whether it is active at this snapshot.
    pub active: bool,
}

// === Snapshot ===

/// Data the probe had to drop, and failures it absorbed. All cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Stack samples requested but not captured, or left out of an update too large for a frame
    /// (`fit`; counted once per client that lost them).
    pub samples: u64,
    /// Spawn/terminate events dropped because a ring was full, or terminate events evicted from
    /// the aggregator's bounded map of those seen before their spawn (counts stay exact; ages may
    /// not).
    pub task_events: u64,
    /// Threads that found no free slot (their polls are not measured).
    pub threads_without_slot: u64,
    /// Polls or spawns whose location did not fit the location table (counted in an overflow row).
    pub location_overflow: u64,
    /// Stall records dropped because the stall queue was full, or left out of an update too
    /// large for a frame (`fit`; counted once per client that lost them).
    pub stalls: u64,
    /// Live tasks not tracked for age because the tracking table was full.
    pub untracked_tasks: u64,
    /// Panics caught inside the probe's own threads.
    pub probe_panics: u64,
    /// Updates a subscriber did not take in time (its queue was full, in count or in bytes), or
    /// that could not be encoded for it.
    pub subscriber_updates: u64,
}

impl Drops {
    /// Each counter with a short description of what it counts, for reports.
    pub fn parts(&self) -> [(u64, &'static str); 8] {
        [
            (self.samples, "stack samples"),
            (self.task_events, "task events"),
            (self.threads_without_slot, "threads without a slot"),
            (self.location_overflow, "polls in the overflow location row"),
            (self.stalls, "stall records"),
            (self.untracked_tasks, "untracked task ages"),
            (self.probe_panics, "probe panics"),
            (self.subscriber_updates, "updates to slow subscribers"),
        ]
    }

    /// Sum of everything dropped.
    pub fn total(&self) -> u64 {
        self.samples
            + self.task_events
            + self.threads_without_slot
            + self.location_overflow
            + self.stalls
            + self.untracked_tasks
            + self.probe_panics
            + self.subscriber_updates
    }
}

/// Facts about the probed process that do not change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub name: String,
    /// Probe version.
    pub probe_version: String,
    /// Whether the probe was built with `--cfg tokio_unstable`.
    pub tokio_unstable: bool,
    /// Measures this build cannot provide, with the reason.
    pub missing: Vec<String>,
    /// Stall threshold, nanoseconds.
    pub stall_threshold_ns: u64,
    /// Stack sampling interval during a stall, nanoseconds.
    pub sample_interval_ns: u64,
    /// Whether native stacks can be sampled here.
    pub stack_sampling: bool,
}

/// Cumulative state of the probe, produced once per aggregation interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Schema version, [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Sequence number, starting at 1.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Time since the probe started, nanoseconds.
    pub uptime_ns: u64,
    /// Facts about the process.
    pub process: ProcessInfo,
    /// Per runtime thread.
    pub workers: Vec<WorkerStats>,
    /// Per spawn location.
    pub locations: Vec<LocationStats>,
    /// Recent stalls (bounded; oldest first). `stall_count` counts all of them.
    pub stalls: Vec<Stall>,
    /// Stalls ever seen.
    pub stall_count: u64,
    /// Time spent stalled, ever, nanoseconds.
    pub stalled_ns: u64,
    /// Loop lag.
    pub lag: LagStats,
    /// Runtime metrics of the last interval, when a runtime monitor is running.
    pub runtime: Option<RuntimeStats>,
    /// Registered pools.
    pub pools: Vec<PoolStats>,
    /// Active alerts.
    pub alerts: Vec<Alert>,
    /// What the probe dropped.
    pub drops: Drops,
    /// Every alert raised since the probe started, active or passed, oldest first (bounded:
    /// past [`ALERT_HISTORY_MAX`] records the oldest inactive one goes).
    #[serde(default)]
    pub alert_history: Vec<AlertRecord>,
    /// Records evicted from `alert_history` to keep it bounded.
    #[serde(default)]
    pub alert_history_evicted: u64,
}

/// The most [`AlertRecord`]s a snapshot keeps.
pub const ALERT_HISTORY_MAX: usize = 256;

impl Snapshot {
    /// The figures for one spawn location, looked up by a suffix of `file:line:col` or of
    /// `file:line`.
    pub fn location(&self, suffix: &str) -> Option<&LocationStats> {
        self.locations.iter().find(|l| {
            l.location.ends_with(suffix) || l.location.rsplit_once(':').is_some_and(|(fl, _)| fl.ends_with(suffix))
        })
    }

    /// The locations flagged as leak suspects, leaving out the probe's own and Tokio's.
    pub fn leak_suspects(&self) -> impl Iterator<Item = &LocationStats> {
        self.locations.iter().filter(|l| l.leak_suspect && !l.internal)
    }

    /// Stalls that have ended.
    pub fn finished_stalls(&self) -> impl Iterator<Item = &Stall> {
        self.stalls.iter().filter(|s| s.duration_ns.is_some())
    }

    /// The share of time the runtime's workers were busy since `earlier` (since the probe
    /// started with `None`), 0.0 ..= 1.0, averaged over the workers; `None` without runtime
    /// metrics or elapsed time.
    ///
    /// This is the one "busy" every report and screen shows: Tokio's own accounting of each
    /// worker's busy time ([`RuntimeStats::busy_ns`]), exact and cumulative, so that it covers
    /// a whole report's span rather than its last interval (the reports used to print the last
    /// interval's [`RuntimeStats::busy_ratio`], 0 % when the run ended idle). The watchdog's
    /// per-worker estimate ([`WorkerStats::busy_ns`]) is not used for it: it credits whole scan
    /// intervals to whatever poll a scan finds, and read 5 % for a load Tokio put at 16 % (a task
    /// alternating 1 ms of CPU and a 1 ms sleep, `tests/tests/report.rs`).
    ///
    /// ```
    /// use stallscope_wire::{RuntimeStats, Snapshot};
    /// let at = |uptime_ns, busy_ns| Snapshot {
    ///     uptime_ns,
    ///     runtime: Some(RuntimeStats { workers: 2, busy_ns, worker_busy_ns: vec![busy_ns / 2; 2], ..RuntimeStats::default() }),
    ///     ..Snapshot::default()
    /// };
    /// let (a, b) = (at(1_000_000_000, 200_000_000), at(2_000_000_000, 1_200_000_000));
    /// assert_eq!(b.busy_ratio_since(Some(&a)), Some(0.5));
    /// assert_eq!(b.busy_ratio_since(None), Some(0.3));
    /// ```
    pub fn busy_ratio_since(&self, earlier: Option<&Snapshot>) -> Option<f64> {
        // Without Tokio's per-worker figures (an older probe) there is nothing to read.
        let r = self.runtime.as_ref().filter(|r| !r.worker_busy_ns.is_empty())?;
        let (up0, busy0) = match earlier {
            Some(e) => (e.uptime_ns, e.runtime.as_ref().map_or(0, |r| r.busy_ns)),
            None => (0, 0),
        };
        let elapsed = self.uptime_ns.saturating_sub(up0);
        if r.workers == 0 || elapsed == 0 {
            return None;
        }
        let busy = r.busy_ns.saturating_sub(busy0);
        Some((busy as f64 / (elapsed as f64 * r.workers as f64)).clamp(0.0, 1.0))
    }

    /// [`Snapshot::busy_ratio_since`] the probe started.
    pub fn busy_ratio(&self) -> Option<f64> {
        self.busy_ratio_since(None)
    }

    /// Polls run on the workers, counted exactly (every poll, not a sample).
    pub fn worker_polls(&self) -> u64 {
        self.workers.iter().map(|w| w.polls).sum()
    }
}

/// `+1.234 s` from `start_ms` (`-…` before it).
pub fn offset_text(start_ms: u64, at_ms: u64) -> String {
    if at_ms >= start_ms {
        format!("+{:.3} s", (at_ms - start_ms) as f64 / 1e3)
    } else {
        format!("-{:.3} s", (start_ms - at_ms) as f64 / 1e3)
    }
}

/// One line for an incident of the alert history, times as offsets from `start_ms`: what, when,
/// its peak and how long it lasted, e.g. `blocking pool starved (blocking pool): peak 22 queued
/// at +1.300 s; active 1.00 s, 1 time, from +1.200 s to +2.200 s`.
pub fn history_line(r: &AlertRecord, start_ms: u64) -> String {
    format!(
        "{} ({}): peak {} at {}; active {}, {} time{}, from {} to {}",
        r.kind.title(),
        r.subject,
        r.peak,
        offset_text(start_ms, r.peak_unix_ms),
        fmt_ns(r.active_ns),
        r.count,
        if r.count == 1 { "" } else { "s" },
        offset_text(start_ms, r.first_unix_ms),
        offset_text(start_ms, r.last_unix_ms),
    )
}

/// Per-location change over one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocationDelta {
    /// `file:line:col` of the spawn call.
    pub location: String,
    /// Tasks spawned in the interval.
    pub spawned: u64,
    /// Tasks completed in the interval.
    pub completed: u64,
    /// Polls in the interval.
    pub polls: u64,
    /// Poll durations in the interval.
    pub poll_time: Histogram,
}

/// What changed between two consecutive snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Sequence number of the snapshot that ends this interval.
    pub seq: u64,
    /// Length of the interval, nanoseconds.
    pub duration_ns: u64,
    /// Per-location changes (only locations with activity).
    pub locations: Vec<LocationDelta>,
    /// Stalls that started or ended in the interval.
    pub stalls: Vec<Stall>,
    /// Time stalled in the interval, nanoseconds.
    pub stalled_ns: u64,
    /// Heartbeat lag in the interval.
    pub lag: Histogram,
    /// Drops in the interval.
    pub drops: Drops,
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Update {
    /// The periodic frame: cumulative state plus the interval that led to it.
    Tick {
        /// Cumulative state.
        snapshot: Box<Snapshot>,
        /// Change since the previous tick.
        interval: Box<Interval>,
    },
    /// A stall has just crossed the threshold (sent at once, before its samples).
    StallStarted(Stall),
    /// A stall has ended (sent at once, with its samples).
    StallEnded(Stall),
}

// === Task dumps ===

/// Bounds of a [`TaskDump`] reply, part of the protocol: they keep one reply far below
/// [`MAX_FRAME_BYTES`] (at most about 2.1 MiB with [`TaskDumpLimits::DEFAULT`]), whatever the
/// number of tasks. What a limit cuts is said in the reply ([`TaskDump::truncated`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskDumpLimits {
    /// Groups sent; the smallest groups past it are left out and counted.
    pub max_groups: usize,
    /// Bytes of one group's trace text; a longer trace is cut at a line end (its innermost
    /// frames, which are Tokio's own, go first: the trace reads outermost first).
    pub max_trace_bytes: usize,
    /// Bytes of trace text in the whole reply; groups that would cross it are left out.
    pub max_total_trace_bytes: usize,
    /// Example task ids listed per group (not a truncation: `count` stays exact).
    pub max_task_ids: usize,
}

impl TaskDumpLimits {
    /// The limits a probe applies: 256 groups, 16 KiB per trace, 2 MiB of trace text, 8 example
    /// task ids per group.
    pub const DEFAULT: TaskDumpLimits =
        TaskDumpLimits { max_groups: 256, max_trace_bytes: 16 << 10, max_total_trace_bytes: 2 << 20, max_task_ids: 8 };
}

impl Default for TaskDumpLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The reply to `Request::TaskDump`: the async backtraces of the runtime's idle tasks, from
/// Tokio's `Handle::dump`, with identical traces grouped.
///
/// Tokio traces each task at its last `.await`, so a trace names the chain of `async fn`s the
/// task is parked in, outermost first. A task that was running or already scheduled when the dump
/// started is not traced.
///
/// ```
/// use stallscope_wire::{TaskDump, TaskGroup};
/// let dump = TaskDump {
///     tasks: 53,
///     elapsed_ns: 4_000_000,
///     groups: vec![
///         TaskGroup { count: 50, trace: "╼ app::wait_for_job::{{closure}} at src/main.rs:10:5".into(), ..TaskGroup::default() },
///         TaskGroup { count: 3, trace: "╼ app::serve::{{closure}} at src/main.rs:20:9".into(), ..TaskGroup::default() },
///     ],
///     ..TaskDump::default()
/// };
/// assert_eq!(dump.groups[0].count + dump.groups[1].count, dump.tasks);
/// assert!(!dump.truncated);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDump {
    /// Tasks in the dump, including those in groups left out.
    pub tasks: u64,
    /// How long the dump took, nanoseconds: from the probe starting it (Tokio pausing its
    /// workers and re-polling every task in tracing mode) to the grouped reply, traces resolved.
    pub elapsed_ns: u64,
    /// Groups of tasks with the same trace and spawn location, most tasks first (ties in trace
    /// order).
    pub groups: Vec<TaskGroup>,
    /// Whether the [`TaskDumpLimits`] cut anything: groups left out or a trace shortened.
    pub truncated: bool,
    /// Groups left out by the limits (the smallest ones).
    pub omitted_groups: u64,
    /// Tasks in the groups left out.
    pub omitted_tasks: u64,
}

/// Tasks of a [`TaskDump`] whose traces (and spawn locations, when known) are identical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGroup {
    /// Tasks in the group.
    pub count: u64,
    /// The async backtrace, as Tokio prints it: one line per frame, outermost first, e.g.
    /// `╼ app::worker::{{closure}} at src/main.rs:18:20` then `└╼ …` lines for the futures it
    /// awaits. Cut at [`TaskDumpLimits::max_trace_bytes`] (then `trace_truncated`). Tokio cuts
    /// the trace at the task's own poll frame, so in optimized builds the futures inlined into it
    /// (the spawned async block and what it awaits directly) may be missing: `spawned_at` then
    /// names the task. Sibling branches (`join!`, `select!`) come in a stable order, so identical
    /// tasks render identically.
    pub trace: String,
    /// Whether `trace` was cut.
    pub trace_truncated: bool,
    /// Ids of some of the tasks (at most [`TaskDumpLimits::max_task_ids`], smallest first), the
    /// same ids as [`Stall::task`].
    pub task_ids: Vec<u64>,
    /// `file:line:col` of the `spawn` call, when the probe tracked these tasks' spawn (None when
    /// it did not: spawned before the probe started, or past its tracking limits).
    pub spawned_at: Option<String>,
}

impl TaskDump {
    /// Tasks in the groups sent.
    pub fn listed_tasks(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }
}
