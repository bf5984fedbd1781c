//! What an unhooked stall was running: code Tokio polled without calling a task hook (the
//! `block_on` future of a current-thread runtime, or a task of a `LocalSet` it drives), told
//! from a thread that left its runtime or is in the runtime's own machinery, by Tokio's frames in
//! a stack sample. Decided by Tokio's module (from the symbol name, or the source path for inlined
//! frames), never by the user's names. The one place this is decided (`watchdog::Unhooked`
//! finds such stalls; the aggregator asks here).

use stallscope_wire::{Frame, FrameKind, Stall};

/// What runs in an unhooked stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The future given to `block_on` (including a `LocalSet::run_until` body).
    BlockOnFuture,
    /// A task spawned on a `LocalSet` (`spawn_local`).
    LocalSetTask,
}

impl Origin {
    /// The text the stall carries in `Stall::spawned_at` (see [`Stall::unhooked_origin`]).
    pub(crate) fn spawned_at(self) -> &'static str {
        match self {
            Origin::BlockOnFuture => Stall::UNHOOKED_BLOCK_ON,
            Origin::LocalSetTask => Stall::UNHOOKED_LOCAL_SET,
        }
    }
}

/// What one sample of a possible unhooked stall shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Code outside Tokio, polled by Tokio's `block_on` with no task hook around it.
    Polled(Origin),
    /// Inside a runtime, but in Tokio's own code (parking, the driver, the `LocalSet`'s
    /// bookkeeping) or in a hooked task: says nothing about a stall.
    Runtime,
    /// No Tokio `block_on` on the stack: the thread is not driving a runtime (its `block_on`
    /// returned).
    Outside,
}

fn name(f: &Frame) -> &str {
    f.function.trim_start_matches('<')
}

fn is_tokio(f: &Frame) -> bool {
    f.kind == FrameKind::Tokio || name(f).starts_with("tokio::")
}

fn path_ends(f: &Frame, suffixes: &[&str]) -> bool {
    f.kind == FrameKind::Tokio && f.file.as_deref().is_some_and(|p| suffixes.iter().any(|s| p.contains(s)))
}

/// A `block_on` of a runtime (current-thread, `LocalRuntime`, or a thread parked by
/// `CachedParkThread`): the frame under which a thread drives a runtime from outside any task.
fn is_block_on(f: &Frame) -> bool {
    let n = name(f);
    is_tokio(f) && n.contains("block_on") && !n.starts_with("tokio::task::local::") && !n.contains("block_in_place")
}

/// Where Tokio polls a task's future (any task: hooked or a `LocalSet`'s): a `poll*` function of
/// the task harness (`raw::poll`, `Harness::poll`, `poll_inner`, `poll_future`, `Core::poll`),
/// by name, or for inlined frames (short names) by source file. Spawning (`RawTask::new`,
/// `Cell::new`) and join handles also live in `tokio::runtime::task`, under other names.
fn is_task_harness(f: &Frame) -> bool {
    let n = name(f);
    let in_harness = n.starts_with("tokio::runtime::task::raw::")
        || n.starts_with("tokio::runtime::task::harness::")
        || n.starts_with("tokio::runtime::task::core::")
        || path_ends(f, &["/src/runtime/task/raw.rs", "/src/runtime/task/harness.rs", "/src/runtime/task/core.rs"]);
    in_harness && bare(n).starts_with("poll")
}

/// The function's own name: its last path segment, generic arguments left out
/// (`Harness<T,S>::poll` gives `poll`).
fn bare(n: &str) -> String {
    let mut depth = 0usize;
    let plain: String = n
        .chars()
        .filter(|c| match c {
            '<' => {
                depth += 1;
                false
            }
            '>' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect();
    plain.rsplit("::").next().unwrap_or("").to_string()
}

fn is_local_set(f: &Frame) -> bool {
    name(f).starts_with("tokio::task::local::") || path_ends(f, &["/src/task/local.rs"])
}

/// Parking, the I/O and time drivers: the thread waits for work, it does not run any.
fn is_idle(f: &Frame) -> bool {
    let n = name(f);
    (is_tokio(f) && n.contains("park") && !n.contains("block_on"))
        || path_ends(f, &["/src/runtime/io/", "/src/runtime/time/", "/src/runtime/driver.rs", "/src/runtime/signal/"])
}

/// The outermost frame of a complete stack: the process entry or a thread's start.
fn is_thread_root(f: &Frame) -> bool {
    let n = f.function.as_str();
    f.kind == FrameKind::Library && (n.contains("_start") || n.contains("start_thread") || n.contains("clone"))
}

/// Classifies one symbolized sample (innermost frame first).
pub(crate) fn classify(frames: &[Frame]) -> Verdict {
    let Some(b) = frames.iter().position(is_block_on) else {
        // Outside only if the unwind reached the thread's first frame and every frame has a
        // name; a stack cut short (an unwind that failed part way) or not symbolized (the
        // symbolizer timed out) says nothing.
        let complete = frames.last().is_some_and(is_thread_root) && frames.iter().all(|f| f.kind != FrameKind::Unknown);
        return if complete { Verdict::Outside } else { Verdict::Runtime };
    };
    let inner = &frames[..b];
    if inner.iter().any(is_idle) {
        return Verdict::Runtime;
    }
    // The innermost poll of a task, and the outermost LocalSet frame (its `RunUntil::poll`; the
    // innermost could be a `spawn_local` the `block_on` future calls).
    let harness = inner.iter().position(is_task_harness);
    let local = inner.iter().rposition(is_local_set);
    let (polled_at, origin) = match (harness, local) {
        // A task polled by the LocalSet.
        (Some(h), Some(l)) if h < l => (h, Origin::LocalSetTask),
        // A task polled by the scheduler itself (a hooked poll, not ours to report), or some
        // other nesting this does not know.
        (Some(_), _) => return Verdict::Runtime,
        // The `run_until` body, or the `block_on` future itself.
        (None, Some(l)) => (l, Origin::BlockOnFuture),
        (None, None) => (b, Origin::BlockOnFuture),
    };
    // Code of the service inside it; Tokio's own bookkeeping alone is no stall.
    if inner[..polled_at].iter().any(|f| f.kind == FrameKind::User) {
        Verdict::Polled(origin)
    } else {
        Verdict::Runtime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(function: &str, kind: FrameKind) -> Frame {
        Frame { function: function.into(), file: None, line: None, inlined: false, kind }
    }

    fn user(f: &str) -> Frame {
        fr(f, FrameKind::User)
    }

    fn tokio(f: &str) -> Frame {
        fr(f, FrameKind::Tokio)
    }

    fn std(f: &str) -> Frame {
        fr(f, FrameKind::Std)
    }

    fn block_on_stack(inner: Vec<Frame>) -> Vec<Frame> {
        let mut v = inner;
        v.push(tokio("tokio::task::coop::budget"));
        v.push(tokio("tokio::runtime::scheduler::current_thread::CoreGuard::block_on::{{closure}}"));
        v.push(tokio("tokio::runtime::scheduler::current_thread::CoreGuard::block_on"));
        v.push(tokio("tokio::runtime::runtime::Runtime::block_on"));
        v.push(user("app::main"));
        v.push(std("std::rt::lang_start"));
        v
    }

    #[test]
    fn a_local_set_task_is_named_by_the_task_harness_inside_the_local_set() {
        let s = block_on_stack(vec![
            fr("clock_nanosleep", FrameKind::Library),
            std("std::thread::sleep"),
            user("app::render_invoice_blocking"),
            user("app::handler::{{closure}}"),
            tokio("tokio::runtime::task::core::Core<T,S>::poll"),
            tokio("tokio::runtime::task::harness::Harness<T,S>::poll"),
            tokio("tokio::runtime::task::raw::poll"),
            tokio("tokio::task::local::LocalSet::tick"),
            tokio("<tokio::task::local::RunUntil<T> as core::future::future::Future>::poll"),
            user("app::main::{{closure}}"),
        ]);
        assert_eq!(classify(&s), Verdict::Polled(Origin::LocalSetTask));
    }

    #[test]
    fn the_block_on_future_and_the_run_until_body_are_the_block_on_future() {
        let s = block_on_stack(vec![std("std::thread::sleep"), user("app::boot"), user("app::main::{{closure}}")]);
        assert_eq!(classify(&s), Verdict::Polled(Origin::BlockOnFuture));
        let s = block_on_stack(vec![
            std("std::thread::sleep"),
            user("app::setup"),
            user("app::main::{{closure}}::{{closure}}"),
            tokio("<tokio::task::local::RunUntil<T> as core::future::future::Future>::poll"),
            user("app::main::{{closure}}"),
        ]);
        assert_eq!(classify(&s), Verdict::Polled(Origin::BlockOnFuture));
        // Spawning from the block_on future goes through `tokio::runtime::task` too, not a poll.
        let s = block_on_stack(vec![
            std("alloc::alloc::alloc"),
            tokio("tokio::runtime::task::core::Cell<T,S>::new"),
            tokio("tokio::runtime::task::raw::RawTask::new"),
            tokio("tokio::task::local::LocalSet::spawn_named"),
            tokio("tokio::task::local::spawn_local"),
            user("app::main::{{closure}}::{{closure}}"),
            tokio("<tokio::task::local::RunUntil<T> as core::future::future::Future>::poll"),
            user("app::main::{{closure}}"),
        ]);
        assert_eq!(classify(&s), Verdict::Polled(Origin::BlockOnFuture));
    }

    #[test]
    fn parking_bookkeeping_and_hooked_tasks_are_runtime() {
        let parked = block_on_stack(vec![
            fr("epoll_wait", FrameKind::Library),
            tokio("tokio::runtime::io::driver::Driver::turn"),
            tokio("tokio::runtime::scheduler::current_thread::Context::park"),
        ]);
        assert_eq!(classify(&parked), Verdict::Runtime);
        let bookkeeping = block_on_stack(vec![
            tokio("tokio::task::local::LocalSet::next_task"),
            tokio("tokio::task::local::LocalSet::tick"),
            user("app::main::{{closure}}"),
        ]);
        assert_eq!(classify(&bookkeeping), Verdict::Runtime);
        let hooked = block_on_stack(vec![
            user("app::work"),
            tokio("tokio::runtime::task::harness::Harness<T,S>::poll"),
            tokio("tokio::runtime::scheduler::current_thread::Context::run_task"),
        ]);
        assert_eq!(classify(&hooked), Verdict::Runtime);
    }

    #[test]
    fn a_thread_with_no_block_on_is_outside() {
        let s = vec![
            fr("syscall", FrameKind::Library),
            std("std::sync::mpmc::Receiver<T>::recv_timeout"),
            user("app::after_the_runtime"),
            user("app::main"),
            fr("__libc_start_main", FrameKind::Library),
        ];
        assert_eq!(classify(&s), Verdict::Outside);
        // Cut short, or not symbolized in the middle: no verdict.
        assert_eq!(classify(&s[..4]), Verdict::Runtime);
        let s = vec![user("app::f"), fr("0x5555deadbeef", FrameKind::Unknown), fr("_start", FrameKind::Library)];
        assert_eq!(classify(&s), Verdict::Runtime);
        // `block_in_place` is not a `block_on`.
        let s = vec![
            user("app::f"),
            tokio("tokio::task::block_in_place"),
            user("app::main"),
            fr("_start", FrameKind::Library),
        ];
        assert_eq!(classify(&s), Verdict::Outside);
    }
}
