//! Test support: run a real runtime with a real probe, then state what the snapshot must show.
//!
//! ```ignore
//! let snap = Service::multi().run(|| async { tokio::spawn(async { culprit() }).await.unwrap() });
//! expect_stall(&snap).lasting_ms(50, 0.10).naming("culprit").once();
//! ```
#![warn(missing_docs, missing_debug_implementations)]

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use stallscope_probe::wire::{FrameKind, Snapshot, Stall};
use stallscope_probe::{Probe, ProbeBuilder};

static SERIAL: Mutex<()> = Mutex::new(());

/// A multi-thread runtime of 2 workers, built with `probe`'s hooks installed (the probe is not
/// started): the runtime most tests run their service on.
pub fn runtime_with(probe: &Probe) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    b.build().expect("runtime")
}

/// Tests in one binary share two cores; timing-sensitive ones take this lock so that one test's
/// CPU loop does not stretch another's measurement.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runtime flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `new_multi_thread` with 2 workers.
    Multi,
    /// `new_current_thread`.
    Current,
}

/// A real runtime with a real probe.
#[derive(Debug)]
pub struct Service {
    flavor: Flavor,
    builder: ProbeBuilder,
    max_blocking: Option<usize>,
}

impl Service {
    /// Multi-thread runtime, 2 workers, default probe.
    pub fn multi() -> Service {
        Service { flavor: Flavor::Multi, builder: Probe::builder(), max_blocking: None }
    }

    /// Current-thread runtime, default probe.
    pub fn current() -> Service {
        Service { flavor: Flavor::Current, builder: Probe::builder(), max_blocking: None }
    }

    /// Either flavour.
    pub fn of(flavor: Flavor) -> Service {
        match flavor {
            Flavor::Multi => Service::multi(),
            Flavor::Current => Service::current(),
        }
    }

    /// Adjusts the probe builder.
    pub fn probe(mut self, f: impl FnOnce(ProbeBuilder) -> ProbeBuilder) -> Service {
        self.builder = f(self.builder);
        self
    }

    /// Caps the blocking pool.
    pub fn max_blocking_threads(mut self, n: usize) -> Service {
        self.max_blocking = Some(n);
        self
    }

    /// Builds the runtime and the probe, runs `body` to completion inside it, shuts the runtime
    /// down (so every hook of every poll has run: Tokio wakes a task's joiner before its
    /// after-poll hook), and returns the probe's snapshot taken then.
    pub fn run<F, Fut>(self, body: F) -> Snapshot
    where
        F: FnOnce(Probe) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (snap, _) = self.run_with(|p| async move {
            body(p).await;
        });
        snap
    }

    /// Like [`run`](Self::run), also returning the body's output.
    pub fn run_with<F, Fut, T>(self, body: F) -> (Snapshot, T)
    where
        F: FnOnce(Probe) -> Fut,
        Fut: Future<Output = T>,
    {
        let probe = self.builder.build().expect("probe settings");
        let mut b = match self.flavor {
            Flavor::Multi => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
            Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        };
        b.enable_all();
        if let Some(n) = self.max_blocking {
            b.max_blocking_threads(n);
        }
        probe.install(&mut b);
        let rt = b.build().expect("runtime");
        let guard = probe.start(rt.handle());
        let out = rt.block_on(body(probe.clone()));
        drop(rt);
        let snap = probe.refresh(Duration::from_secs(10)).expect("a snapshot after the run");
        drop(guard);
        ((*snap).clone(), out)
    }
}

/// Expectations about the stalls of a snapshot.
#[derive(Debug)]
pub struct StallExpect<'a> {
    snap: &'a Snapshot,
    matching: Vec<&'a Stall>,
    what: String,
}

/// Starts an expectation over the finished stalls of `snap`.
pub fn expect_stall(snap: &Snapshot) -> StallExpect<'_> {
    StallExpect { snap, matching: snap.finished_stalls().collect(), what: "stalls".into() }
}

/// Names of the user frames of a stall's most sampled stack, innermost first.
pub fn user_frames(s: &Stall) -> Vec<String> {
    s.stacks
        .iter()
        .max_by_key(|st| st.count)
        .map(|st| st.frames.iter().filter(|f| f.kind == FrameKind::User).map(|f| f.function.clone()).collect())
        .unwrap_or_default()
}

/// A compact dump of the stalls, for failure messages.
pub fn describe(snap: &Snapshot) -> String {
    let mut o = format!("{} stalls:\n", snap.stall_count);
    for s in &snap.stalls {
        o.push_str(&format!(
            "  {:?} ns at {} worker {} samples {} bip {} user frames {:?}\n",
            s.duration_ns,
            s.spawned_at,
            s.worker,
            s.sample_count(),
            s.in_block_in_place,
            user_frames(s)
        ));
        if let Some(st) = s.stacks.first() {
            for f in st.frames.iter().take(12) {
                o.push_str(&format!("      {:?} {}\n", f.kind, f.function));
            }
        }
    }
    o
}

impl<'a> StallExpect<'a> {
    /// Only stalls of tasks spawned at a location ending with `suffix` (`file.rs:line`).
    pub fn spawned_at(mut self, suffix: &str) -> Self {
        self.matching.retain(|s| s.spawned_at.contains(suffix));
        self.what = format!("{} spawned at {suffix}", self.what);
        self
    }

    /// Only stalls whose top user frames (the first three) include `function`.
    pub fn naming(mut self, function: &str) -> Self {
        self.matching.retain(|s| user_frames(s).iter().take(3).any(|f| f.ends_with(function)));
        self.what = format!("{} naming {function}", self.what);
        self
    }

    /// Every matching stall lasted `ms` ± `tolerance` (a fraction).
    pub fn lasting_ms(self, ms: u64, tolerance: f64) -> Self {
        let lo = (ms as f64 * (1.0 - tolerance) * 1e6) as u64;
        let hi = (ms as f64 * (1.0 + tolerance) * 1e6) as u64;
        for s in &self.matching {
            let d = s.duration_ns.unwrap_or(0);
            assert!(
                (lo..=hi).contains(&d),
                "{}: duration {d} ns outside {lo}..={hi}\n{}",
                self.what,
                describe(self.snap)
            );
        }
        self
    }

    /// Every matching stall is reported at least as long as `measured_ns` (what the stalled code
    /// measured inside the poll, minus `SLACK_NS` for the clock reads around it) and at most
    /// [`LATE_MS`] longer. The lower end is what the probe guarantees on any host (a length never
    /// comes out shorter); the upper end is the precision of the start bound plus what a busy
    /// host adds, not a benchmark figure.
    pub fn covering(self, measured_ns: u64) -> Self {
        for s in &self.matching {
            let d = s.duration_ns.unwrap_or(0);
            let late = (d as f64 - measured_ns as f64) / 1e6;
            assert!(
                d + SLACK_NS >= measured_ns && late <= LATE_MS,
                "{}: reported {d} ns for {measured_ns} ns measured inside ({late:+.2} ms, allowed -{:.2}..=+{LATE_MS})\n{}",
                self.what,
                SLACK_NS as f64 / 1e6,
                describe(self.snap)
            );
        }
        self
    }

    /// Exactly `n` stalls match.
    pub fn count(self, n: usize) -> Self {
        assert_eq!(self.matching.len(), n, "{}: expected {n}\n{}", self.what, describe(self.snap));
        self
    }

    /// Exactly one stall matches.
    pub fn once(self) -> Self {
        self.count(1)
    }

    /// The matching stalls.
    pub fn stalls(&self) -> &[&'a Stall] {
        &self.matching
    }
}

/// A client of the probe's socket, speaking the real protocol over a real Unix socket.
#[derive(Debug)]
pub struct Client {
    stream: std::os::unix::net::UnixStream,
    decoder: stallscope_wire::intern::Decoder,
    /// What the probe said in its welcome.
    pub welcome: stallscope_wire::proto::Welcome,
    /// `Dropped` counts received so far.
    pub dropped: u64,
}

impl Client {
    /// Connects and runs the handshake.
    pub fn connect(path: &std::path::Path) -> Result<Client, stallscope_wire::Error> {
        Self::connect_with(path, &stallscope_wire::proto::Hello::new("stallscope-tests", "0"))
    }

    /// Connects with another hello (e.g. an older protocol version).
    pub fn connect_with(
        path: &std::path::Path,
        hello: &stallscope_wire::proto::Hello,
    ) -> Result<Client, stallscope_wire::Error> {
        let mut stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let welcome = stallscope_wire::proto::client_handshake(&mut stream, hello)?;
        Ok(Client { stream, decoder: stallscope_wire::intern::Decoder::new(), welcome, dropped: 0 })
    }

    /// The next update, counting `Dropped` messages on the way. `Ok(None)` when the probe hangs up.
    #[allow(clippy::should_implement_trait)] // fallible, so not an `Iterator`
    pub fn next(&mut self) -> Result<Option<stallscope_wire::Update>, stallscope_wire::Error> {
        use stallscope_wire::intern::Received;
        loop {
            let Some(frame) = stallscope_wire::frame::read_frame(&mut self.stream)? else { return Ok(None) };
            match self.decoder.decode_payload(&frame)? {
                Received::Update(u) => return Ok(Some(u)),
                Received::Dropped { intervals } => self.dropped += intervals,
                Received::Error { message } => panic!("probe sent an error: {message}"),
                Received::TaskDump(_) => panic!("probe sent a task dump nobody asked for (use `reply`)"),
            }
        }
    }

    /// Sends a request (its answer comes through [`reply`](Self::reply)).
    pub fn request(&mut self, request: stallscope_wire::Request) -> Result<(), stallscope_wire::Error> {
        use std::io::Write;
        stallscope_wire::proto::send(&mut self.stream, &stallscope_wire::ClientMessage::Request(request))?;
        Ok(self.stream.flush()?)
    }

    /// Skips updates until the probe answers a request: `Received::TaskDump` or
    /// `Received::Error`. `Ok(None)` when the probe hangs up.
    pub fn reply(&mut self) -> Result<Option<stallscope_wire::intern::Received>, stallscope_wire::Error> {
        use stallscope_wire::intern::Received;
        loop {
            let Some(frame) = stallscope_wire::frame::read_frame(&mut self.stream)? else { return Ok(None) };
            match self.decoder.decode_payload(&frame)? {
                Received::Update(_) => {}
                Received::Dropped { intervals } => self.dropped += intervals,
                r @ (Received::Error { .. } | Received::TaskDump(_)) => return Ok(Some(r)),
            }
        }
    }

    /// Reads updates until `pred` accepts one, or `timeout` passes.
    pub fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&stallscope_wire::Update) -> bool,
    ) -> Option<stallscope_wire::Update> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match self.next() {
                Ok(Some(u)) if pred(&u) => return Some(u),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
        None
    }

    /// The raw stream (to misbehave with).
    pub fn stream(&mut self) -> &mut std::os::unix::net::UnixStream {
        &mut self.stream
    }
}

/// How much later than measured inside the poll a stall may be reported ([`StallExpect::covering`]):
/// the start bound (the thread's unpark or last timed poll: microseconds on an idle host), the
/// end read by the hook after the poll returns, and on a busy host the worker's and the
/// watchdog's own waits for a CPU (seen up to 10 ms beside two CPU hogs).
pub const LATE_MS: f64 = 15.0;

/// Clock reads around a measured block, and the rounding of the raw clock's calibration.
pub const SLACK_NS: u64 = 250_000;

/// Runs `f` and returns how long it took, measured inside (ns), with its result.
pub fn measured<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let began = std::time::Instant::now();
    let out = f();
    (began.elapsed().as_nanos() as u64, out)
}

/// Fails when this crate was built without `--cfg tokio_unstable`: an environment `RUSTFLAGS`
/// replaces the flags of the repo's `.cargo/config.toml`, and the tests that need the cfg would
/// then be compiled out and the run would pass without them. Each test file that has such tests
/// calls this from a test of its own.
pub fn assert_built_with_tokio_unstable() {
    assert!(
        cfg!(tokio_unstable),
        "built without --cfg tokio_unstable, so this file's tests that need it were compiled out: an \
         environment RUSTFLAGS overrides .cargo/config.toml; unset it or add `--cfg tokio_unstable` to it"
    );
}
