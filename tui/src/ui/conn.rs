//! The live connection as a state machine on its own thread: resolve the target, connect,
//! stream updates to the UI, and on any failure report it and retry with backoff. The UI never
//! blocks on the network, and a dead probe shows as "disconnected", never as a frozen screen.
//! The one failure not retried: a pid whose process is gone before the first connection
//! ([`Feed::Gone`]), since no probe can ever answer for it.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stallscope_wire::{ProcessInfo, Received};

use crate::conn::{ConnectOptions, Connection};
use crate::target::{resolve_or_only, Target};

/// What the connection thread tells the UI.
#[derive(Debug)]
pub enum Feed {
    /// Connected (again) to this process.
    Connected(ProcessInfo),
    /// Something from the probe.
    Data(Received),
    /// The connection failed or ended; the next attempt is in `retry_in`.
    Lost {
        /// Why, for the status line.
        reason: String,
        /// Failed attempts in a row.
        attempt: u32,
        /// Wait before the next attempt.
        retry_in: Duration,
    },
    /// The target was never reached and never will be (a pid whose process is gone); the
    /// thread has stopped. A probe that was reached once and then lost gives [`Feed::Lost`] and is
    /// retried instead.
    Gone {
        /// Why, for the user.
        reason: String,
    },
}

/// What the UI asks of the connection thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Ask the probe for a task dump.
    TaskDump {
        /// How long the probe may take.
        timeout: Duration,
    },
    /// Stop and close.
    Stop,
}

/// Retry delays: 250 ms doubling up to 5 s, back to the start after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// First delay.
    pub const MIN: Duration = Duration::from_millis(250);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(5);

    /// A fresh backoff.
    pub fn new() -> Backoff {
        Backoff { next: Backoff::MIN }
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = Backoff::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// The running connection thread.
#[derive(Debug)]
pub struct Live {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts connecting to `target` (or to the only probe in `dir`), sending what happens
    /// through `feed` (wrapped by `wrap` into the UI's event type).
    pub fn start<E: Send + 'static>(
        target: Option<Target>,
        dir: PathBuf,
        options: ConnectOptions,
        feed: Sender<E>,
        wrap: fn(Feed) -> E,
    ) -> Live {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stallscope-conn".into())
            .spawn(move || run(target, dir, options, rx, move |f| feed.send(wrap(f)).is_ok()))
            .ok();
        Live { commands: tx, thread }
    }

    /// Sends a command; false if the thread is gone.
    pub fn send(&self, c: Command) -> bool {
        self.commands.send(c).is_ok()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            // The thread checks for Stop at least every poll interval (200 ms).
            let _ = t.join();
        }
    }
}

/// The thread's loop. `emit` returns false once the UI is gone.
fn run(
    target: Option<Target>,
    dir: PathBuf,
    options: ConnectOptions,
    commands: Receiver<Command>,
    emit: impl Fn(Feed) -> bool,
) {
    let mut backoff = Backoff::new();
    let mut attempt = 0u32;
    let mut reached = false;
    loop {
        let reason = match resolve_or_only(target.as_ref(), &dir) {
            Err(e) if !reached && e.process_gone() => {
                emit(Feed::Gone { reason: e.to_string() });
                return;
            }
            Err(e) => first_line(&e.to_string()),
            Ok(endpoint) => match Connection::open(&endpoint, &options) {
                Err(e) => first_line(&e.to_string()),
                Ok(mut conn) => {
                    backoff.reset();
                    attempt = 0;
                    reached = true;
                    if !emit(Feed::Connected(conn.process().clone())) {
                        return;
                    }
                    match stream(&mut conn, &commands, &emit) {
                        Ended::Stop => {
                            conn.close();
                            return;
                        }
                        Ended::Lost(reason) => reason,
                    }
                }
            },
        };
        attempt += 1;
        let retry_in = backoff.delay();
        if !emit(Feed::Lost { reason, attempt, retry_in }) {
            return;
        }
        // Wait, but answer Stop at once.
        let until = Instant::now() + retry_in;
        while Instant::now() < until {
            match commands.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Command::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Command::TaskDump { .. }) => {
                    if !emit(Feed::Data(Received::Error { message: "task dump: not connected to a probe".into() })) {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
    }
}

enum Ended {
    Stop,
    Lost(String),
}

fn stream(conn: &mut Connection, commands: &Receiver<Command>, emit: &impl Fn(Feed) -> bool) -> Ended {
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return Ended::Stop,
                Ok(Command::TaskDump { timeout }) => {
                    if let Err(e) = conn.request_task_dump(timeout) {
                        return Ended::Lost(first_line(&e.to_string()));
                    }
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        match conn.recv() {
            Ok(Some(r)) => {
                if !emit(Feed::Data(r)) {
                    return Ended::Stop;
                }
            }
            Ok(None) => {}
            Err(e) => return Ended::Lost(first_line(&e.to_string())),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let d: Vec<u64> = (0..7).map(|_| b.delay().as_millis() as u64).collect();
        assert_eq!(d, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.delay(), Backoff::MIN);
    }

    #[test]
    fn a_missing_probe_is_reported_and_retried_until_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = std::sync::mpsc::channel();
        let sock = dir.path().join("4242-gone.sock");
        let live =
            Live::start(Some(Target::Socket(sock)), dir.path().to_path_buf(), ConnectOptions::default(), tx, |f| f);
        let mut attempts = Vec::new();
        while attempts.len() < 2 {
            match rx.recv_timeout(Duration::from_secs(5)).expect("a report within 5 s") {
                Feed::Lost { reason, attempt, retry_in } => {
                    assert!(reason.contains("no probe socket"), "{reason}");
                    attempts.push((attempt, retry_in));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(attempts, vec![(1, Duration::from_millis(250)), (2, Duration::from_millis(500))]);
        drop(live); // joins: Stop is answered during the wait
    }

    /// A pid with no process behind it is not retried: the thread says so once and stops.
    #[test]
    fn a_pid_whose_process_is_gone_is_not_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        // Its stale socket, as a probe killed with SIGKILL leaves it.
        std::fs::write(dir.path().join(format!("{pid}-gone.sock")), b"").expect("stale socket");
        let (tx, rx) = std::sync::mpsc::channel();
        let live = Live::start(Some(Target::Pid(pid)), dir.path().to_path_buf(), ConnectOptions::default(), tx, |f| f);
        match rx.recv_timeout(Duration::from_secs(5)).expect("a report within 5 s") {
            Feed::Gone { reason } => assert!(reason.contains(&format!("pid {pid} has exited")), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "nothing after Gone: the thread stopped");
        drop(live);
    }
}
