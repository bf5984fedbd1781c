//! `instrument(fut)`: measures futures the task hooks never see, such as the root future given
//! to `block_on` or futures driven by a `LocalSet`.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use crate::state::Shared;

/// Running probes by the id of the runtime they were started on.
#[cfg(tokio_unstable)]
static BY_RUNTIME: Mutex<Vec<(tokio::runtime::Id, Weak<Shared>)>> = Mutex::new(Vec::new());
#[cfg(not(tokio_unstable))]
static BY_RUNTIME: Mutex<Vec<((), Weak<Shared>)>> = Mutex::new(Vec::new());

pub(crate) fn register_runtime(_handle: &tokio::runtime::Handle, shared: &Arc<Shared>) {
    let mut v = BY_RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|(_, w)| w.strong_count() > 0);
    #[cfg(tokio_unstable)]
    v.push((_handle.id(), Arc::downgrade(shared)));
    #[cfg(not(tokio_unstable))]
    v.push(((), Arc::downgrade(shared)));
}

fn current_probe() -> Option<Arc<Shared>> {
    #[cfg(tokio_unstable)]
    {
        let id = tokio::runtime::Handle::try_current().ok()?.id();
        let v = BY_RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().rev().find(|(r, _)| *r == id).and_then(|(_, w)| w.upgrade())
    }
    // Without the cfg a handle has no id: a future is measured by the probe when only one probe
    // runs in the process (the common case), and counted as unmeasured otherwise, never
    // silently dropped (`process.missing` says so).
    #[cfg(not(tokio_unstable))]
    {
        tokio::runtime::Handle::try_current().ok()?;
        let v = BY_RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = v.iter().filter_map(|(_, w)| w.upgrade());
        match (live.next(), live.next()) {
            (Some(one), None) => Some(one),
            (Some(_), Some(_)) => {
                UNMATCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
            _ => None,
        }
    }
}

/// Futures `instrument` could not give to a probe: without `tokio_unstable` while two or more
/// probes run (see `current_probe`).
pub(crate) static UNMATCHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Wraps a future so that its polls are measured like a task's: long polls become stalls with
/// stack samples, attributed to the location of this call.
///
/// ```
/// # let probe = stallscope_probe::Probe::builder().build().unwrap();
/// let mut b = tokio::runtime::Builder::new_current_thread();
/// b.enable_all();
/// probe.install(&mut b);
/// let rt = b.build().unwrap();
/// let _guard = probe.start(rt.handle());
/// rt.block_on(stallscope_probe::instrument(async { /* the root future */ }));
/// ```
#[track_caller]
pub fn instrument<F: Future>(fut: F) -> Instrumented<F> {
    Instrumented { fut, loc: Location::caller(), probe: None, resolved: false }
}

/// A future wrapped by [`instrument`].
#[derive(Debug)]
pub struct Instrumented<F> {
    fut: F,
    loc: &'static Location<'static>,
    probe: Option<Arc<Shared>>,
    resolved: bool,
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned: never moved out of, and the other fields are
        // plain data that do not need pinning.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.resolved {
            // Once, on the first poll: find the probe of the runtime we run in.
            this.probe = current_probe();
            this.resolved = true;
        }
        // SAFETY: see above.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        match &this.probe {
            Some(shared) => {
                let hot = crate::poll::hooks::Hot::of(shared);
                crate::poll::hooks::before_poll(&hot, shared, 0, this.loc, None);
                // Closes the poll when `fut.poll` returns and when it unwinds: a panic that left
                // it open kept `seq` odd (a stall that never ends) or `depth` raised (every later
                // poll on the thread counted as nested). Tokio catches a task's panic, so the
                // thread goes on polling.
                let _close = ClosePoll { hot, shared };
                fut.poll(cx)
            }
            None => fut.poll(cx),
        }
    }
}

/// Ends the instrumented poll on drop, including during unwinding.
struct ClosePoll<'a> {
    hot: crate::poll::hooks::Hot,
    shared: &'a Shared,
}

impl Drop for ClosePoll<'_> {
    fn drop(&mut self) {
        crate::poll::hooks::after_poll(&self.hot, self.shared);
    }
}
