//! Liveness of the probe's own threads: the aggregator, the watchdog, the socket server and the
//! recorder. Each thread's whole body runs inside [`Threads::run`], so a panic anywhere in it
//! (its setup included, which the per-iteration `catch_unwind`s inside the loops do not cover)
//! is caught, counted in `drops.probe_panics`, and marks the thread dead. A dead thread, or one
//! that could not be spawned, is named in every snapshot's `process.missing` with what it costs
//! the user, so a silent probe is never mistaken for a healthy service.
//!
//! Under `panic = "abort"` nothing here runs: a panic in a probe thread aborts the host like
//! any other panic. `docs/guide.md` ("Guarantees and limits") says so.
//!
//! A leaf module: it imports nothing of the crate.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};

/// One of the probe's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Aggregator,
    Watchdog,
    Server,
    Recorder,
}

impl Role {
    const ALL: [Role; 4] = [Role::Aggregator, Role::Watchdog, Role::Server, Role::Recorder];

    /// The thread's name, as `ps -L` and `/proc/PID/task/*/comm` show it.
    pub(crate) fn thread_name(self) -> &'static str {
        match self {
            Role::Aggregator => "stallscope-aggregator",
            Role::Watchdog => "stallscope-watchdog",
            Role::Server => "stallscope-server",
            Role::Recorder => "stallscope-recorder",
        }
    }

    /// What the user loses while this thread is down.
    fn loss(self) -> &'static str {
        match self {
            Role::Aggregator => "no new snapshots, alerts or stalls are published; this snapshot is the last",
            Role::Watchdog => "stalls are no longer detected or sampled",
            Role::Server => "the socket accepts no clients (attach, record)",
            Role::Recorder => "the recording has stopped",
        }
    }

    /// The name `Probe::inject_panic` takes (the thread name without its prefix).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn from_short(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.thread_name().strip_prefix("stallscope-") == Some(s))
    }
}

// 0 (the default): not started yet.
const RUNNING: u8 = 1;
const ENDED: u8 = 2;
const DIED: u8 = 3;
const NOT_SPAWNED: u8 = 4;

/// The state of each probe thread, and the fault-injection switches.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    state: [AtomicU8; 4],
    #[cfg(feature = "fault-injection")]
    inject: [std::sync::atomic::AtomicBool; 4],
}

impl Threads {
    fn state(&self, role: Role) -> &AtomicU8 {
        &self.state[role as usize]
    }

    /// Runs `body` as `role`'s thread: a panic that escapes it is caught, counted in `panics`
    /// and marks the thread dead. Returns `None` when it panicked.
    pub(crate) fn run<R>(&self, role: Role, panics: &AtomicU64, body: impl FnOnce() -> R) -> Option<R> {
        self.state(role).store(RUNNING, Release);
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(r) => {
                self.state(role).store(ENDED, Release);
                Some(r)
            }
            Err(_) => {
                panics.fetch_add(1, Relaxed);
                self.state(role).store(DIED, Release);
                None
            }
        }
    }

    /// `role`'s thread could not be spawned (the OS refused a thread).
    pub(crate) fn not_spawned(&self, role: Role) {
        self.state(role).store(NOT_SPAWNED, Release);
    }

    /// One line per thread that is down, for `process.missing`.
    pub(crate) fn problems(&self) -> impl Iterator<Item = String> + '_ {
        Role::ALL.into_iter().filter_map(|r| {
            let how = match self.state(r).load(Acquire) {
                DIED => "died of a panic (counted in drops.probe_panics)",
                NOT_SPAWNED => "could not be started (the system refused a thread)",
                _ => return None,
            };
            Some(format!("probe thread {}: {how}; {}", r.thread_name(), r.loss()))
        })
    }

    /// Panics if a test asked `role`'s thread to die (`Probe::inject_panic`). Called at the top
    /// of each thread's loop, outside its per-iteration `catch_unwind`, so it kills the thread
    /// the way a panic in its setup code would. Without the `fault-injection` feature it is empty.
    #[inline]
    pub(crate) fn injection_point(&self, role: Role) {
        #[cfg(feature = "fault-injection")]
        if self.inject[role as usize].swap(false, AcqRel) {
            panic!("stallscope fault injection: {} killed", role.thread_name());
        }
        #[cfg(not(feature = "fault-injection"))]
        let _ = role;
    }

    /// Asks `role`'s thread to panic at its next injection point.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn inject_panic(&self, role: Role) {
        self.inject[role as usize].store(true, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_marks_the_thread_dead_and_is_counted() {
        let t = Threads::default();
        let panics = AtomicU64::new(0);
        assert_eq!(t.run(Role::Watchdog, &panics, || 7), Some(7));
        assert_eq!(t.problems().count(), 0, "a thread that ended is not down");
        assert_eq!(t.run(Role::Server, &panics, || -> u8 { panic!("boom") }), None);
        assert_eq!(panics.load(Relaxed), 1);
        let lines: Vec<String> = t.problems().collect();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("probe thread stallscope-server: died of a panic"), "{lines:?}");
        t.not_spawned(Role::Recorder);
        let lines: Vec<String> = t.problems().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("probe thread stallscope-recorder: could not be started"), "{lines:?}");
    }
}
