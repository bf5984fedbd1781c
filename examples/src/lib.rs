//! Shared harness for the example services.
//!
//! Every binary in `src/bin/` is a small service that shows one failure mode (or, for
//! `clean_service`, none). They all run the same way through [`Example`]:
//!
//! 1. parse the command line ([`Options::parse`]): `--duration SECS`, `--flavor current|multi`,
//!    `--json`;
//! 2. build the probe with [`ProbeBuilder::with_env`](stallscope_probe::ProbeBuilder::with_env),
//!    so every `STALLSCOPE_*` variable applies;
//! 3. build the runtime (multi-thread with [`MULTI_THREAD_WORKERS`] workers, or current-thread),
//!    install and start the probe;
//! 4. run the service for the duration, then take a fresh snapshot while the service is still
//!    running, so the report shows the live state (queued work, waiters, live tasks);
//! 5. stop the service and the runtime, then print the report followed by every alert raised
//!    at any point of the run (alerts can come and go), or with `--json` the final snapshot
//!    alone as JSON.
//!
//! ```no_run
//! use std::time::Duration;
//! stallscope_examples::Example::new("my_service")
//!     .default_duration(Duration::from_secs(3))
//!     .run(|_ctx| async {
//!         tokio::spawn(async { /* handlers */ });
//!         std::future::pending::<()>().await
//!     });
//! ```
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub mod demo;

/// Steady traffic, as a load balancer would send it: request `id` (made by `make`) every `every`,
/// until the service stops receiving.
pub async fn requests<T>(tx: tokio::sync::mpsc::Sender<T>, every: Duration, mut make: impl FnMut(u64) -> T) {
    let mut tick = tokio::time::interval(every);
    for id in 0u64.. {
        tick.tick().await;
        if tx.send(make(id)).await.is_err() {
            break;
        }
    }
}

use stallscope_probe::wire::{AlertKind, Snapshot, Update};
use stallscope_probe::Probe;

/// Worker threads of the multi-thread flavor.
pub const MULTI_THREAD_WORKERS: usize = 2;

/// Default run time of an example when neither the binary nor `--duration` says otherwise.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3);

/// How long the final snapshot may take before the harness gives up on it.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the runtime is given to wind down after the report.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Which Tokio scheduler the example runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `Builder::new_current_thread`: one thread runs every task.
    CurrentThread,
    /// `Builder::new_multi_thread` with [`MULTI_THREAD_WORKERS`] workers.
    MultiThread,
}

impl FromStr for Flavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "current" | "current_thread" | "current-thread" => Ok(Flavor::CurrentThread),
            "multi" | "multi_thread" | "multi-thread" => Ok(Flavor::MultiThread),
            other => Err(format!("unknown flavor {other:?}: expected `current` or `multi`")),
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flavor::CurrentThread => f.write_str("current-thread"),
            Flavor::MultiThread => write!(f, "multi-thread ({MULTI_THREAD_WORKERS} workers)"),
        }
    }
}

/// Command-line options shared by every example.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How long the service runs before the report (`--duration SECS`, fractions allowed).
    pub duration: Duration,
    /// Runtime flavor (`--flavor current|multi`, default `multi`).
    pub flavor: Flavor,
    /// Print the final snapshot as JSON instead of the text report (`--json`).
    pub json: bool,
}

impl Options {
    /// Parses `args` (without the program name). `default_duration` applies when
    /// `--duration` is absent. Returns the usage text as the error for `--help`.
    pub fn parse_from<I, S>(args: I, default_duration: Duration) -> Result<Options, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut opts = Options { duration: default_duration, flavor: Flavor::MultiThread, json: false };
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value =
                |name: &str| inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"));
            match flag.as_str() {
                "--duration" => {
                    let v = value("--duration")?;
                    let secs: f64 = v.parse().map_err(|_| format!("--duration: {v:?} is not a number of seconds"))?;
                    if !(secs.is_finite() && secs > 0.0 && secs <= 24.0 * 3600.0) {
                        return Err(format!("--duration: {v} is out of range (0, 86400]"));
                    }
                    opts.duration = Duration::from_secs_f64(secs);
                }
                "--flavor" => opts.flavor = value("--flavor")?.parse()?,
                "--json" => opts.json = true,
                "-h" | "--help" => return Err(usage(default_duration)),
                other => return Err(format!("unknown argument {other:?}\n\n{}", usage(default_duration))),
            }
        }
        Ok(opts)
    }

    /// Parses the process's command line; prints the problem and exits on a bad one
    /// (status 0 for `--help`, 2 otherwise).
    pub fn parse(default_duration: Duration) -> Options {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let help = args.iter().any(|a| a == "-h" || a == "--help");
        match Options::parse_from(args, default_duration) {
            Ok(o) => o,
            Err(msg) if help => {
                println!("{msg}");
                std::process::exit(0)
            }
            Err(msg) => {
                eprintln!("error: {msg}");
                std::process::exit(2)
            }
        }
    }
}

fn usage(default_duration: Duration) -> String {
    format!(
        "options:\n  --duration SECS          run time before the report (default {})\n  \
         --flavor current|multi   runtime flavor (default multi, {MULTI_THREAD_WORKERS} workers)\n  \
         --json                   print the final snapshot as JSON instead of the report\n\n\
         STALLSCOPE_* environment variables configure the probe (see stallscope-probe's docs).",
        secs(default_duration)
    )
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// What a service gets from the harness.
#[derive(Debug, Clone)]
pub struct Context {
    /// The running probe (for services that want to look at their own figures).
    pub probe: Probe,
    /// How long the service runs before the report.
    pub duration: Duration,
    /// The runtime flavor it runs on.
    pub flavor: Flavor,
}

/// Alerts seen in the snapshots published during the run, by kind.
#[derive(Debug, Default)]
struct AlertLog {
    /// Per kind: snapshots in which it was active, and its first summary.
    seen: BTreeMap<String, (u64, String)>,
    ticks: u64,
}

/// One example service: its name, default duration and runtime tweaks. See the crate docs.
pub struct Example {
    name: String,
    default_duration: Duration,
    configure: Vec<RuntimeTweak>,
}

/// A change to the runtime builder, from [`Example::configure_runtime`].
type RuntimeTweak = Box<dyn FnOnce(&mut tokio::runtime::Builder)>;

impl std::fmt::Debug for Example {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Example")
            .field("name", &self.name)
            .field("default_duration", &self.default_duration)
            .field("configure", &self.configure.len())
            .finish()
    }
}

impl Example {
    /// An example called `name` (used in messages), running [`DEFAULT_DURATION`] by default.
    pub fn new(name: impl Into<String>) -> Example {
        Example { name: name.into(), default_duration: DEFAULT_DURATION, configure: Vec::new() }
    }

    /// Run time when `--duration` is not given.
    pub fn default_duration(mut self, d: Duration) -> Example {
        self.default_duration = d;
        self
    }

    /// Adjusts the runtime builder (after the flavor's defaults, before the probe installs its
    /// hooks), e.g. `|b| { b.max_blocking_threads(2); }`.
    pub fn configure_runtime(mut self, f: impl FnOnce(&mut tokio::runtime::Builder) + 'static) -> Example {
        self.configure.push(Box::new(f));
        self
    }

    /// Parses the command line, runs `service` under the probe for the duration and prints the
    /// report. The service may run forever: when the duration is up the harness takes the
    /// final snapshot while it still runs, then drops it and shuts the runtime down (which
    /// drops every task it spawned). A service that returns early just ends the run early.
    pub fn run<F, Fut>(self, service: F)
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = ()>,
    {
        let opts = Options::parse(self.default_duration);
        let probe = match Probe::builder().with_env().build() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: cannot build the probe: {e}", self.name);
                std::process::exit(2)
            }
        };
        let mut builder = match opts.flavor {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(MULTI_THREAD_WORKERS);
                b
            }
        };
        builder.enable_all();
        for f in self.configure {
            f(&mut builder);
        }
        probe.install(&mut builder);
        let runtime = match builder.build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{}: cannot build the runtime: {e}", self.name);
                std::process::exit(2)
            }
        };
        let guard = probe.start(runtime.handle());
        let stop_watching = Arc::new(AtomicBool::new(false));
        let (log, log_thread) = watch_alerts(&probe, stop_watching.clone());
        eprintln!("{}: running for {} on the {} runtime", self.name, secs(opts.duration), opts.flavor);

        let ctx = Context { probe: probe.clone(), duration: opts.duration, flavor: opts.flavor };
        let snapshot = runtime.block_on(async {
            let service = service(ctx);
            tokio::pin!(service);
            let mut returned = false;
            tokio::select! {
                _ = &mut service => returned = true,
                _ = tokio::time::sleep(opts.duration) => {}
            }
            if returned {
                eprintln!("{}: the service returned before its time was up", self.name);
            }
            // Snapshot on another thread while this one keeps driving the runtime and the
            // service future, so the service (on the current-thread flavor, everything) is
            // live and in the state it ran in when the snapshot is taken.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let p = probe.clone();
            std::thread::spawn(move || {
                let _ = tx.send(p.refresh(REFRESH_TIMEOUT).or_else(|| p.snapshot()));
            });
            let snapshot = async { rx.await.ok().flatten() };
            tokio::pin!(snapshot);
            loop {
                tokio::select! {
                    s = &mut snapshot => break s,
                    _ = &mut service, if !returned => returned = true,
                }
            }
        });

        drop(guard);
        stop_watching.store(true, Ordering::Release);
        let _ = log_thread.join();
        runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);

        let Some(snapshot) = snapshot else {
            eprintln!("{}: the probe produced no snapshot", self.name);
            std::process::exit(1)
        };
        if opts.json {
            match serde_json::to_string_pretty(&*snapshot) {
                Ok(j) => println!("{j}"),
                Err(e) => {
                    eprintln!("{}: cannot encode the snapshot: {e}", self.name);
                    std::process::exit(1)
                }
            }
        } else {
            print!("{}", stallscope_probe::render_report(&snapshot));
            print!("{}", render_alert_log(&log.lock().unwrap_or_else(|e| e.into_inner())));
        }
    }
}

/// Records the alerts of every published snapshot until `stop` is set.
fn watch_alerts(probe: &Probe, stop: Arc<AtomicBool>) -> (Arc<Mutex<AlertLog>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(AlertLog::default()));
    // Generous: a slow subscriber loses updates and the probe reports that as dropped data.
    let sub = probe.subscribe(4096);
    let l = log.clone();
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            if let Some(Update::Tick { snapshot, .. }) = sub.recv_timeout(Duration::from_millis(50)) {
                record(&mut l.lock().unwrap_or_else(|e| e.into_inner()), &snapshot);
            }
        }
    });
    (log, thread)
}

fn record(log: &mut AlertLog, s: &Snapshot) {
    log.ticks += 1;
    let mut kinds: Vec<AlertKind> = Vec::new();
    for a in &s.alerts {
        if kinds.contains(&a.kind) {
            continue;
        }
        kinds.push(a.kind);
        let e = log.seen.entry(kind_name(a.kind).to_string()).or_insert_with(|| (0, a.summary.clone()));
        e.0 += 1;
    }
}

fn kind_name(k: AlertKind) -> &'static str {
    match k {
        AlertKind::BlockingPoll => "blocking poll",
        AlertKind::LeakSuspect => "leak suspect",
        AlertKind::PoolSaturated => "pool saturated",
        AlertKind::BlockingPoolStarved => "blocking pool starved",
        AlertKind::LoopLag => "loop lag",
        AlertKind::DroppedData => "dropped data",
        AlertKind::CpuStarvation => "waited for a CPU",
    }
}

fn render_alert_log(log: &AlertLog) -> String {
    let mut o = String::new();
    let _ =
        writeln!(o, "\nalerts raised at any time during the run ({} snapshots watched): {}", log.ticks, log.seen.len());
    for (kind, (n, first)) in &log.seen {
        let _ = writeln!(o, "  {kind}: active in {n} snapshots; first: {first}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let d = Duration::from_secs(3);
        let o = Options::parse_from(Vec::<String>::new(), d).unwrap();
        assert_eq!(o, Options { duration: d, flavor: Flavor::MultiThread, json: false });
        let o = Options::parse_from(["--duration", "1.5", "--flavor", "current", "--json"], d).unwrap();
        assert_eq!(o, Options { duration: Duration::from_millis(1500), flavor: Flavor::CurrentThread, json: true });
        let o = Options::parse_from(["--duration=2", "--flavor=multi"], d).unwrap();
        assert_eq!(o.duration, Duration::from_secs(2));
        assert!(Options::parse_from(["--duration"], d).is_err());
        assert!(Options::parse_from(["--duration", "-1"], d).is_err());
        assert!(Options::parse_from(["--flavor", "both"], d).is_err());
        assert!(Options::parse_from(["--verbose"], d).is_err());
    }
}
