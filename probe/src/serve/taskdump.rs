//! Task dumps on request (`Request::TaskDump`): Tokio's `Handle::dump`, run off the service's
//! runtime with a deadline, grouped and bounded for the wire.
//!
//! - **Refusals.** A dump is refused, with the reason, when this build cannot dump tasks (no
//!   `--cfg tokio_unstable`, no `taskdump` feature, or a platform Tokio does not dump on), while a
//!   worker is stalled (Tokio's dump waits for every worker to reach an `.await`, so it would
//!   wait for the stall), and while another dump is in flight.
//! - **One dump in flight per probe.** It runs on its own thread (`stallscope-dump`); the caller,
//!   a client's reader thread, waits for it up to the request's timeout (clamped to
//!   [`TASK_DUMP_TIMEOUT_MS`]). A dump that misses its deadline is answered with an error and
//!   finishes in the background (it stops rendering at the deadline, and gives up when the
//!   probe stops); until it has, new requests are refused as busy, so late dumps never pile up.
//!   The server and the other clients never wait for a dump.
//! - **Rendering.** Traces are rendered here from the resolved backtraces, not with `Trace`'s
//!   `Display`, whose order of sibling branches (a `join!` or `select!`) changes from one call to
//!   the next: identical tasks must render identically to be grouped.
//! - **Spawn locations** come from the aggregator's live-task table (task id → spawn location),
//!   when it tracked the task.
//! - **Bounds.** Groups, trace text and example ids are bounded by [`TaskDumpLimits`]; distinct
//!   traces past [`MAX_DISTINCT`] are counted, not kept, so memory stays bounded whatever the
//!   number of tasks.
#![cfg_attr(
    not(all(
        tokio_unstable,
        feature = "taskdump",
        target_os = "linux",
        any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
    )),
    allow(dead_code)
)]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stallscope_wire::proto::{ServerMessage, TASK_DUMP_TIMEOUT_MS};
use stallscope_wire::{TaskDump, TaskDumpLimits, TaskGroup};

use crate::aggregator::msg::{LocationsRequest, TaskLocations};
use crate::state::Shared;

/// Whether this build can dump tasks: Tokio's own condition for `Handle::dump`, plus the probe's
/// `taskdump` feature (which turns on Tokio's).
const AVAILABLE: bool = cfg!(all(
    tokio_unstable,
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
));

/// Distinct (trace, spawn location) groups tracked while grouping; tasks of further distinct
/// traces are counted as omitted.
pub(crate) const MAX_DISTINCT: usize = 4096;

/// How often a waiting reader or the dump thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The text of a task whose trace holds no backtrace (it awaits nothing Tokio instruments).
pub(crate) const NO_TRACE: &str = "(no async trace: the task awaits nothing Tokio instruments)";

/// What this build lacks to dump tasks, or None when it can.
pub(crate) fn unavailable() -> Option<String> {
    if AVAILABLE {
        return None;
    }
    let mut missing = Vec::new();
    if !cfg!(tokio_unstable) {
        missing.push(
            "the service was built without `--cfg tokio_unstable` (set it in RUSTFLAGS or .cargo/config.toml)"
                .to_string(),
        );
    }
    if !cfg!(feature = "taskdump") {
        missing.push("stallscope-probe was built without its `taskdump` feature".to_string());
    }
    if !cfg!(all(
        target_os = "linux",
        any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
    )) {
        missing.push(format!(
            "Tokio dumps tasks only on Linux on x86, x86_64, aarch64 or s390x (this is {} on {})",
            std::env::consts::OS,
            std::env::consts::ARCH
        ));
    }
    Some(format!("task dumps are not available in this probe: {}", missing.join("; ")))
}

/// The refusal sent while a worker is stalled.
pub(crate) fn stalled_message(threshold: Duration) -> String {
    format!(
        "task dump refused: a worker is stalled (a poll has run past the {threshold:?} stall threshold). Tokio can \
         only dump tasks once every worker reaches an .await, so the dump would wait for the stall; retry when it \
         has ended"
    )
}

/// The refusal sent while another dump is in flight (for `running` so far).
pub(crate) fn busy_message(running: Duration) -> String {
    format!(
        "task dump refused: busy: another task dump has been running in this probe for {:.1} s (one at a time); \
         retry in a moment",
        running.as_secs_f64()
    )
}

/// The refusal sent to a client whose protocol has no task dump reply.
pub(crate) fn old_client_message(minor: u16) -> String {
    format!(
        "task dump refused: this client speaks protocol 1.{minor}, which has no task dump reply (it needs 1.1; \
         upgrade stallscope)"
    )
}

fn timeout_message(timeout: Duration) -> String {
    format!(
        "task dump timed out after {timeout:?}: a worker did not reach an .await in time (a stall may have begun), \
         or the runtime has many tasks. Retry later; this dump finishes in the background and another is refused \
         as busy until it has"
    )
}

// === Dumper ===

/// Serves task dump requests for one probe (shared by every client).
pub(crate) struct Dumper {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    /// When the dump thread in flight started: at most one per probe.
    busy: Arc<Mutex<Option<Instant>>>,
    /// The server's stop flag.
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Dumper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dumper").field("busy", &self.busy.lock().map(|b| b.is_some()).unwrap_or(true)).finish()
    }
}

/// Clears the busy flag when the dump thread ends, however it ends.
struct ClearOnDrop(Arc<Mutex<Option<Instant>>>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Dumper {
    pub(crate) fn new(shared: Arc<Shared>, handle: tokio::runtime::Handle, stop: Arc<AtomicBool>) -> Dumper {
        Dumper { shared, handle, busy: Arc::new(Mutex::new(None)), stop }
    }

    /// Counts a panic caught on a thread serving requests.
    pub(crate) fn note_panic(&self) {
        self.shared.panics.fetch_add(1, Relaxed);
    }

    /// Answers one request: the dump, or an error saying why not. Blocks the calling thread (a
    /// client's reader) for at most the clamped timeout, never the runtime or other clients.
    pub(crate) fn serve(&self, timeout_ms: u64) -> ServerMessage {
        let error = |message: String| ServerMessage::Error { message };
        if let Some(missing) = unavailable() {
            return error(missing);
        }
        if self.shared.polls_stalled.load(Acquire) > 0 {
            return error(stalled_message(self.shared.config.stall_threshold));
        }
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(since) = *busy {
                return error(busy_message(since.elapsed()));
            }
            *busy = Some(Instant::now());
        }
        let timeout =
            Duration::from_millis(timeout_ms.clamp(*TASK_DUMP_TIMEOUT_MS.start(), *TASK_DUMP_TIMEOUT_MS.end()));
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::sync_channel::<Result<TaskDump, String>>(1);
        let release = ClearOnDrop(self.busy.clone());
        let (shared, handle, stop) = (self.shared.clone(), self.handle.clone(), self.stop.clone());
        let spawned = std::thread::Builder::new().name("stallscope-dump".into()).spawn(move || {
            let _release = release;
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&shared, &handle, &stop, deadline)))
                    .unwrap_or_else(|_| {
                        shared.panics.fetch_add(1, Relaxed);
                        Err("task dump failed: it panicked inside the probe (counted in probe_panics)".to_string())
                    });
            // The reader may have given up (timeout) or gone: nobody to tell then.
            let _ = tx.try_send(result);
        });
        if let Err(e) = spawned {
            // The closure (and the busy flag's guard with it) was dropped: the flag is clear.
            return error(format!("task dump failed: cannot start its thread: {e}"));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return error(timeout_message(timeout));
            }
            match rx.recv_timeout(left.min(POLL)) {
                Ok(Ok(dump)) => return ServerMessage::TaskDump(dump),
                Ok(Err(message)) => return error(message),
                Err(RecvTimeoutError::Timeout) if self.stop.load(Acquire) => {
                    return error("task dump abandoned: the probe is stopping".to_string())
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return error("task dump failed: its thread ended without an answer".to_string())
                }
            }
        }
    }
}

#[cfg(all(
    tokio_unstable,
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
))]
fn run(
    shared: &Shared,
    handle: &tokio::runtime::Handle,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<TaskDump, String> {
    imp::run(shared, handle, stop, deadline)
}

#[cfg(not(all(
    tokio_unstable,
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
)))]
fn run(_: &Shared, _: &tokio::runtime::Handle, _: &AtomicBool, _: Instant) -> Result<TaskDump, String> {
    Err(unavailable().unwrap_or_default())
}

#[cfg(all(
    tokio_unstable,
    feature = "taskdump",
    target_os = "linux",
    any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
))]
mod imp {
    use std::fmt::Write as _;
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering::*};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Instant;

    use stallscope_wire::{TaskDump, TaskDumpLimits};
    use tokio::runtime::dump::{BacktraceSymbol, Trace};
    use tokio::runtime::{Handle, RuntimeFlavor};

    use super::{locations, Grouper, NO_TRACE, POLL};
    use crate::state::Shared;

    pub(super) fn run(
        shared: &Shared,
        handle: &Handle,
        stop: &AtomicBool,
        deadline: Instant,
    ) -> Result<TaskDump, String> {
        let started = Instant::now();
        let dump = match handle.runtime_flavor() {
            // A current-thread runtime is dumped only from inside itself: by a task.
            RuntimeFlavor::CurrentThread => {
                let join = handle.spawn(async { Handle::current().dump().await });
                block_on(join, stop)?.map_err(|e| format!("task dump failed: the dumping task did not finish: {e}"))?
            }
            // Tokio runs the dump on a thread of its own and pauses the workers at their next
            // yield point while one of them traces every idle task.
            _ => block_on(handle.dump(), stop)?,
        };
        let tasks: Vec<_> = dump.tasks().iter().collect();
        let ids: Vec<u64> = tasks.iter().map(|t| crate::poll::hooks::task_id_u64(t.id())).collect();
        let locations = locations(shared, ids.clone(), deadline);
        let of_task = |i: usize| locations.as_ref().and_then(|l| l.of_task.get(i).copied().flatten());
        let mut grouper = Grouper::new(TaskDumpLimits::DEFAULT);
        for (i, task) in tasks.iter().enumerate() {
            if Instant::now() >= deadline {
                return Err("task dump timed out while resolving its traces".to_string());
            }
            grouper.add(ids[i], render(task.trace()), of_task(i));
        }
        let names = locations.map(|l| l.names).unwrap_or_default();
        Ok(grouper.finish(&names, started.elapsed()))
    }

    /// Polls `fut` on this thread until it is ready, or gives up when `stop` is set.
    fn block_on<F: Future>(fut: F, stop: &AtomicBool) -> Result<F::Output, String> {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Ok(out);
            }
            if stop.load(Acquire) {
                return Err("task dump abandoned: the probe is stopping".to_string());
            }
            std::thread::park_timeout(POLL);
        }
    }

    /// One frame's text: `function at file:line:col`, as Tokio prints it.
    fn symbol_line(s: &BacktraceSymbol) -> String {
        let mut out = match s.name_demangled() {
            Some(name) => strip_hash(name).to_string(),
            None => format!("{:?}", s.addr().unwrap_or(std::ptr::null_mut())),
        };
        if let Some(file) = s.filename() {
            let _ = write!(out, " at {}", file.display());
            if let Some(line) = s.lineno() {
                let _ = write!(out, ":{line}");
                if let Some(col) = s.colno() {
                    let _ = write!(out, ":{col}");
                }
            }
        }
        out
    }

    /// `a::b::h0123456789abcdef` → `a::b` (legacy mangling's hash).
    fn strip_hash(name: &str) -> &str {
        match name.rsplit_once("::h") {
            Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => head,
            _ => name,
        }
    }

    /// The trace as a tree, outermost frame first, siblings in the order the trace met them.
    pub(super) fn render(trace: &Trace) -> String {
        struct Node {
            line: String,
            children: Vec<usize>,
        }
        let mut nodes: Vec<Node> = Vec::new();
        let mut roots: Vec<usize> = Vec::new();
        for backtrace in trace.resolve_backtraces() {
            let frames: Vec<_> = backtrace.frames().collect();
            let mut parent: Option<usize> = None;
            for frame in frames.iter().rev() {
                let symbols: Vec<_> = frame.symbols().collect();
                let lines: Vec<String> = if symbols.is_empty() {
                    vec![format!("{:?}", frame.ip())]
                } else {
                    // A frame's first symbol is the innermost (inlined) function.
                    symbols.iter().rev().map(|s| symbol_line(s)).collect()
                };
                for line in lines {
                    let siblings = match parent {
                        None => &roots,
                        Some(p) => &nodes[p].children,
                    };
                    let idx = match siblings.iter().copied().find(|&i| nodes[i].line == line) {
                        Some(i) => i,
                        None => {
                            nodes.push(Node { line, children: Vec::new() });
                            let i = nodes.len() - 1;
                            match parent {
                                None => roots.push(i),
                                Some(p) => nodes[p].children.push(i),
                            }
                            i
                        }
                    };
                    parent = Some(idx);
                }
            }
        }
        if roots.is_empty() {
            return NO_TRACE.to_string();
        }
        // Depth-first, iteratively: (node, prefix of its children, is last sibling, depth).
        let mut out = String::new();
        let mut stack: Vec<(usize, String, bool, bool)> =
            roots.iter().rev().enumerate().map(|(k, &r)| (r, String::new(), k == 0, true)).collect();
        while let Some((i, prefix, last, root)) = stack.pop() {
            if !out.is_empty() {
                out.push('\n');
            }
            let child_prefix = if root {
                out.push_str("╼ ");
                String::new()
            } else {
                out.push_str(&prefix);
                out.push_str(if last { "└╼ " } else { "├╼ " });
                format!("{prefix}{}", if last { "   " } else { "│  " })
            };
            out.push_str(&nodes[i].line);
            let children = &nodes[i].children;
            for (k, &c) in children.iter().enumerate().rev() {
                stack.push((c, child_prefix.clone(), k == children.len() - 1, false));
            }
        }
        out
    }
}

// === grouping ===

/// Longest wait for the aggregator's spawn locations (they are optional).
const LOCATIONS_WAIT: Duration = Duration::from_secs(1);

/// Asks the aggregator where the tasks were spawned (None if it does not answer in time).
fn locations(shared: &Shared, ids: Vec<u64>, deadline: Instant) -> Option<TaskLocations> {
    let control = shared.control.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
    let (tx, rx) = mpsc::sync_channel(1);
    control.try_send(crate::aggregator::msg::Msg::TaskLocations(LocationsRequest { ids, reply: tx })).ok()?;
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()).min(LOCATIONS_WAIT)).ok()
}

#[derive(Debug)]
struct Acc {
    count: u64,
    /// The smallest ids seen, ascending.
    ids: Vec<u64>,
    cut: bool,
}

/// Groups tasks by (trace, spawn location) within [`TaskDumpLimits`] and [`MAX_DISTINCT`].
#[derive(Debug)]
pub(crate) struct Grouper {
    limits: TaskDumpLimits,
    max_distinct: usize,
    groups: HashMap<(String, Option<u32>), Acc>,
    /// Hashes of the keys past `max_distinct`, to count their groups.
    overflow: HashSet<u64>,
    overflow_tasks: u64,
    tasks: u64,
}

/// Cuts `s` to at most `max` bytes at a line end (or a char boundary if the first line is
/// longer); whether it cut.
fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(nl) = s[..end].rfind('\n') {
        end = nl;
    }
    s.truncate(end);
    true
}

impl Grouper {
    pub(crate) fn new(limits: TaskDumpLimits) -> Grouper {
        Self::with_max_distinct(limits, MAX_DISTINCT)
    }

    pub(crate) fn with_max_distinct(limits: TaskDumpLimits, max_distinct: usize) -> Grouper {
        Grouper { limits, max_distinct, groups: HashMap::new(), overflow: HashSet::new(), overflow_tasks: 0, tasks: 0 }
    }

    /// One task: its id, its rendered trace, and the index of its spawn location's name.
    pub(crate) fn add(&mut self, id: u64, mut trace: String, location: Option<u32>) {
        self.tasks += 1;
        let was_cut = cut(&mut trace, self.limits.max_trace_bytes);
        let key = (trace, location);
        if !self.groups.contains_key(&key) && self.groups.len() >= self.max_distinct {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            self.overflow.insert(h.finish());
            self.overflow_tasks += 1;
            return;
        }
        let acc = self.groups.entry(key).or_insert_with(|| Acc { count: 0, ids: Vec::new(), cut: was_cut });
        acc.count += 1;
        let max_ids = self.limits.max_task_ids;
        if max_ids > 0 && (acc.ids.len() < max_ids || acc.ids.last().is_some_and(|&l| id < l)) {
            let at = acc.ids.partition_point(|&x| x < id);
            acc.ids.insert(at, id);
            acc.ids.truncate(max_ids);
        }
    }

    /// The reply: groups most tasks first, within the limits, what was cut counted.
    pub(crate) fn finish(self, names: &[String], elapsed: Duration) -> TaskDump {
        let mut all: Vec<TaskGroup> = self
            .groups
            .into_iter()
            .map(|((trace, location), acc)| TaskGroup {
                count: acc.count,
                trace,
                trace_truncated: acc.cut,
                task_ids: acc.ids,
                spawned_at: location.and_then(|i| names.get(i as usize).cloned()),
            })
            .collect();
        all.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| a.trace.cmp(&b.trace)).then_with(|| a.spawned_at.cmp(&b.spawned_at))
        });
        let (mut groups, mut text, mut full) = (Vec::new(), 0usize, false);
        let (mut omitted_groups, mut omitted_tasks) = (self.overflow.len() as u64, self.overflow_tasks);
        for g in all {
            // Once one group does not fit, no smaller one is sent: the reply stays "most tasks
            // first", and what is left out is always the tail.
            full = full
                || groups.len() >= self.limits.max_groups
                || text + g.trace.len() > self.limits.max_total_trace_bytes;
            if full {
                omitted_groups += 1;
                omitted_tasks += g.count;
            } else {
                text += g.trace.len();
                groups.push(g);
            }
        }
        let truncated = omitted_groups > 0 || groups.iter().any(|g| g.trace_truncated);
        TaskDump {
            tasks: self.tasks,
            elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            groups,
            truncated,
            omitted_groups,
            omitted_tasks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(groups: usize, trace: usize, total: usize, ids: usize) -> TaskDumpLimits {
        let mut l = TaskDumpLimits::DEFAULT;
        l.max_groups = groups;
        l.max_trace_bytes = trace;
        l.max_total_trace_bytes = total;
        l.max_task_ids = ids;
        l
    }

    #[test]
    fn identical_traces_group_most_tasks_first_with_the_smallest_ids() {
        let mut g = Grouper::new(limits(10, 1000, 10_000, 3));
        for id in (1..=20).rev() {
            g.add(id, "╼ a\n└╼ wait".into(), Some(0));
        }
        for id in 100..105 {
            g.add(id, "╼ b\n└╼ sleep".into(), None);
        }
        // Same trace, other spawn location: another group.
        g.add(7_000, "╼ a\n└╼ wait".into(), Some(1));
        let d = g.finish(&["src/a.rs:1:1".into(), "src/c.rs:2:2".into()], Duration::from_millis(3));
        assert_eq!(d.tasks, 26);
        assert_eq!(d.elapsed_ns, 3_000_000);
        let summary: Vec<_> = d.groups.iter().map(|g| (g.count, g.trace.as_str(), g.spawned_at.as_deref())).collect();
        assert_eq!(
            summary,
            vec![
                (20, "╼ a\n└╼ wait", Some("src/a.rs:1:1")),
                (5, "╼ b\n└╼ sleep", None),
                (1, "╼ a\n└╼ wait", Some("src/c.rs:2:2"))
            ]
        );
        assert_eq!(d.groups[0].task_ids, vec![1, 2, 3]);
        assert_eq!(d.groups[1].task_ids, vec![100, 101, 102]);
        assert!(!d.truncated);
        assert_eq!((d.omitted_groups, d.omitted_tasks), (0, 0));
        assert_eq!(d.listed_tasks(), d.tasks);
    }

    #[test]
    fn the_limits_cut_traces_at_line_ends_and_leave_out_the_smallest_groups() {
        // A 30-byte trace budget per trace, 2 groups at most.
        let mut g = Grouper::new(limits(2, 30, 1_000, 8));
        let long = "╼ outer at src/x.rs:1:1\n└╼ inner at src/x.rs:2:2".to_string();
        for id in 0..5 {
            g.add(id, long.clone(), None);
        }
        for id in 10..13 {
            g.add(id, "b".into(), None);
        }
        g.add(20, "c".into(), None);
        g.add(21, "d".into(), None);
        let d = g.finish(&[], Duration::ZERO);
        assert_eq!(d.groups.len(), 2);
        assert_eq!(d.groups[0].trace, "╼ outer at src/x.rs:1:1");
        assert!(d.groups[0].trace_truncated);
        assert_eq!(d.groups[1].count, 3);
        assert!(d.truncated);
        assert_eq!((d.omitted_groups, d.omitted_tasks), (2, 2));
        assert_eq!(d.listed_tasks() + d.omitted_tasks, d.tasks);

        // The total text budget: the second group does not fit, and nothing smaller is sent.
        let mut g = Grouper::new(limits(10, 100, 12, 8));
        for id in 0..3 {
            g.add(id, "0123456789".into(), None);
        }
        g.add(3, "abcdefghij".into(), None);
        g.add(4, "x".into(), None);
        let d = g.finish(&[], Duration::ZERO);
        assert_eq!(d.groups.len(), 1);
        assert_eq!((d.omitted_groups, d.omitted_tasks), (2, 2));
        assert!(d.truncated);
    }

    #[test]
    fn distinct_traces_past_the_cap_are_counted_not_kept() {
        let mut g = Grouper::with_max_distinct(limits(10, 100, 1_000, 8), 2);
        for id in 0..50u64 {
            g.add(id, format!("trace {}", id % 5), None);
        }
        let d = g.finish(&[], Duration::ZERO);
        assert_eq!(d.tasks, 50);
        assert_eq!(d.groups.len(), 2);
        assert_eq!(d.listed_tasks(), 20);
        assert_eq!((d.omitted_groups, d.omitted_tasks), (3, 30));
        assert!(d.truncated);
    }

    #[test]
    fn cut_respects_char_boundaries() {
        let mut s = "ééééé".to_string();
        assert!(cut(&mut s, 5));
        assert_eq!(s, "éé");
        let mut s = "short".to_string();
        assert!(!cut(&mut s, 5));
    }

    #[test]
    fn every_refusal_starts_with_the_prefix_clients_match() {
        use stallscope_wire::proto::TASK_DUMP_ERROR_PREFIX as P;
        let msgs = [
            stalled_message(Duration::from_millis(10)),
            busy_message(Duration::from_secs(2)),
            old_client_message(0),
            timeout_message(Duration::from_secs(1)),
        ];
        for m in msgs.iter().chain(unavailable().iter()) {
            assert!(m.starts_with(P), "{m}");
        }
    }
}
