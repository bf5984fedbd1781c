//! Names people recognise in stall stacks, under the workspace's `debug = "line-tables-only"`:
//! one stall per shape (an async fn body, an async block, a `Drop` impl, a sync wrapper compiled
//! to a tail call, a generic function, a closure), each asserting the culprit's short name (what
//! alerts and tables print) and, where it matters, the full name (what stacks keep).

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use stallscope_probe::wire::{Frame, Snapshot};
use stallscope_tests::{describe, expect_stall, serial, Service};

const STALL: Duration = Duration::from_millis(60);

mod handlers {
    use super::*;

    /// The line of the sleep in `handle_login`.
    pub(crate) const SLEEP_LINE: u32 = line!() + 4;

    /// A blocking call written straight into an async fn body.
    pub(crate) async fn handle_login(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(black_box(ms)));
        black_box(ms + 1)
    }
}

/// An `async { .. }` block inside a function (the shape under test, so not an `async fn`).
#[allow(clippy::manual_async_fn)]
fn serve(ms: u64) -> impl Future<Output = u64> {
    async move {
        std::thread::sleep(Duration::from_millis(black_box(ms)));
        black_box(ms)
    }
}

/// A slow `Drop` impl.
struct Flusher(u64);

impl Drop for Flusher {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(black_box(self.0)));
    }
}

/// A thin sync wrapper whose last act is the blocking call. Checked with
/// `objdump -d -C target/release/deps/names-*`: `<names::load>:` is a single
/// `jmp *..(%rip)` (std's `thread::sleep` through the GOT), so `load` has no frame of its own.
#[inline(never)]
fn load(d: Duration) {
    std::thread::sleep(d)
}

/// A generic function (a real frame: `#[inline(never)]`).
#[inline(never)]
fn process<T: std::fmt::Debug>(x: T, ms: u64) -> usize {
    std::thread::sleep(Duration::from_millis(black_box(ms)));
    black_box(format!("{x:?}").len())
}

/// A closure.
fn run_closure(ms: u64) -> u64 {
    let block = |m: u64| {
        std::thread::sleep(Duration::from_millis(black_box(m)));
        black_box(m)
    };
    block(black_box(ms))
}

/// Runs `body` on a real multi-thread runtime with the probe; returns the culprit frame (the top
/// user frame) of its one stall. No frame of any sampled stack other than the culprit may be a
/// recovered tail call (libc, std and Tokio frames included): a spurious one would be a wrong
/// frame in every flame graph.
fn culprit_of<F, Fut>(body: F) -> (Frame, Snapshot)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let _s = serial();
    let snap = Service::multi().run(|_| body());
    let stall = expect_stall(&snap).once().stalls()[0];
    let frame = stall.top_user_frame().cloned().unwrap_or_else(|| panic!("no user frame\n{}", describe(&snap)));
    let tails: Vec<&str> =
        stall.stacks.iter().flat_map(|s| &s.frames).filter(|f| f.is_tail_call()).map(|f| f.function.as_str()).collect();
    assert!(tails.iter().all(|t| *t == frame.function), "unexpected tail-call frames {tails:?}\n{}", describe(&snap));
    (frame, snap)
}

const MS: u64 = STALL.as_millis() as u64;

#[test]
fn an_async_fn_body_is_named_by_its_function() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(handlers::handle_login(MS)).await.unwrap();
    });
    assert_eq!(f.short_name(), "handle_login (async fn)", "{}", describe(&snap));
    assert_eq!(f.function, "names::handlers::handle_login::{async fn body}");
    assert_eq!(f.line, Some(handlers::SLEEP_LINE));
}

#[test]
fn an_async_block_is_named_through_its_enclosing_function() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(serve(MS)).await.unwrap();
    });
    assert_eq!(f.short_name(), "serve::{async block}", "{}", describe(&snap));
    assert_eq!(f.function, "names::serve::{async block}");
}

#[test]
fn a_drop_impl_carries_its_type_and_trait() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(async {
            drop(black_box(Flusher(MS)));
        })
        .await
        .unwrap();
    });
    assert_eq!(f.short_name(), "<Flusher as Drop>::drop", "{}", describe(&snap));
    assert_eq!(f.function, "<names::Flusher as core::ops::drop::Drop>::drop");
}

#[test]
fn a_wrapper_left_by_a_tail_call_is_recovered() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(async {
            load(black_box(STALL));
            black_box(());
        })
        .await
        .unwrap();
    });
    assert_eq!(f.short_name(), "load (tail call)", "{}", describe(&snap));
    assert!(f.is_tail_call() && f.function == "names::load (tail call)", "{}", describe(&snap));
}

#[test]
fn a_generic_function_reads_with_its_arguments() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(async {
            process(black_box(vec![7u8]), MS);
        })
        .await
        .unwrap();
    });
    assert_eq!(f.short_name(), "process<Vec<u8>>", "{}", describe(&snap));
    assert_eq!(f.function, "names::process<alloc::vec::Vec<u8, alloc::alloc::Global>>");
}

#[test]
fn a_closure_is_named_through_the_function_that_defines_it() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(async {
            run_closure(MS);
        })
        .await
        .unwrap();
    });
    assert_eq!(f.short_name(), "run_closure::{closure}", "{}", describe(&snap));
}

/// Awaits `handle_login`; the optimizer may inline its body here.
async fn login_flow(ms: u64) -> u64 {
    let v = handlers::handle_login(ms).await;
    black_box(v)
}

#[test]
fn an_awaited_async_fn_is_never_named_after_its_awaiter() {
    let (f, snap) = culprit_of(|| async {
        tokio::spawn(login_flow(MS)).await.unwrap();
    });
    // Inlined into `login_flow`, `handle_login`'s name is nowhere in a line-tables-only binary
    // (`{async fn}` at its file and line); out of line, its symbol names it.
    let short = f.short_name();
    assert!(short == "{async fn}" || short == "handle_login (async fn)", "{short}\n{}", describe(&snap));
    assert_eq!(f.line, Some(handlers::SLEEP_LINE), "the sleep in handle_login\n{}", describe(&snap));
}
