//! Wall-time overhead of the stallscope probe next to tokio-metrics and console-subscriber, against
//! a bare runtime (issue P4).
//!
//! ```text
//! cargo run --release --manifest-path probe/compare/Cargo.toml              # full run
//! cargo run --release --manifest-path probe/compare/Cargo.toml -- --quick   # smoke run, small sizes
//!   [--json PATH]        raw results (default probe/compare/target/compare-results.json)
//!   [--chart PATH.svg]   chart (default: the JSON path with `.svg` instead of `.json`)
//!   [--only w1,w4]       run only these workloads
//! cargo run --release --manifest-path probe/compare/Cargo.toml -- --chart-from RESULTS.json [--chart OUT.svg]
//!                        re-print the tables and redraw the chart from a results file, run nothing
//! ```
//!
//! Every timed run is a child process of this binary (`compare --child <config> <workload> <mode>`),
//! with a fresh 2-worker multi-thread runtime: console-subscriber installs a process-global tracing
//! subscriber, so it cannot share a process with the other configurations, and running all of them
//! the same way keeps the comparison uniform. The parent runs the configurations in alternation
//! (one round = every configuration once, in order), and takes each configuration's ratio to the
//! bare run of the same round. Only the workload is timed, not building or tearing down.
//!
//! Each child also reports its peak RSS (`VmHWM`), how many cores other processes kept busy during
//! its timed part (from `/proc/stat`) and how many it kept busy itself.
//!
//! The parent prints one markdown table per workload and a budget table (`report.rs`), writes
//! every run's raw numbers with the machine's description to the JSON file (`results.rs` documents
//! the schema) and draws the chart from that file's contents (`chart.rs`).

mod chart;
#[path = "../../benches/shared/machine.rs"]
mod machine;
mod report;
mod results;
mod w4;

use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_metrics::{RuntimeMonitor, TaskMonitor};

use results::{ConfigInfo, Results, RunRecord, SkipInfo, WorkloadInfo};

#[cfg(not(tokio_unstable))]
compile_error!("build with RUSTFLAGS=\"--cfg tokio_unstable\" (probe/compare/.cargo/config.toml sets it)");

/// Workers of every measured runtime.
const WORKERS: usize = 2;
/// W1 tasks. With 64 (the first choice) the two workers keep running out of local work, steal,
/// park and wake each other, and bare W1 costs ~95 ns per poll instead of ~30–45: the cross-core
/// churn, not the polls, dominated. The overhead bench moved to 1,000 too (`probe/benches/overhead.rs`).
const W1_TASKS: u64 = 1_000;
/// W2 spawner tasks.
const W2_SPAWNERS: u64 = 4;
/// Handles a W2 spawner holds before awaiting them.
const W2_BATCH: u64 = 1_000;
/// W3 clients.
const W3_CLIENTS: u64 = 64;
/// W3 message size, bytes.
const W3_MSG: usize = 64;
/// tokio-metrics runtime sampling period.
const METRICS_PERIOD: Duration = Duration::from_millis(100);
/// The never-reading client's socket counts as full once the bytes waiting in it have not grown
/// for this long (three of the probe's 100 ms ticks): the probe's writer thread is then blocked on
/// it, and its updates pile up in the client's bounded queue until the probe starts dropping them.
const STALL_SETTLE: Duration = Duration::from_millis(350);
/// How long a never-reading client may take to reach the dropping state before the run starts
/// anyway (the child reports `stalled_dropping_ms=-1` then). With the defaults it takes ~17 s:
/// ~10 s to fill the socket with ~100 ticks, 6.4 s more to fill a 64-update queue.
const STALL_MAX_WAIT: Duration = Duration::from_secs(40);

// === configurations and workloads ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Bare,
    Probe,
    ProbeClientRecord,
    ProbeStalledClient,
    TokioMetrics,
    Console,
    ConsoleClient,
}

const CONFIGS: [Config; 7] = [
    Config::Bare,
    Config::Probe,
    Config::ProbeClientRecord,
    Config::ProbeStalledClient,
    Config::TokioMetrics,
    Config::Console,
    Config::ConsoleClient,
];

impl Config {
    fn arg(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Probe => "probe",
            Config::ProbeClientRecord => "probe-client-record",
            Config::ProbeStalledClient => "probe-stalled-client",
            Config::TokioMetrics => "tokio-metrics",
            Config::Console => "console",
            Config::ConsoleClient => "console-client",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Probe => "stallscope probe (defaults)",
            Config::ProbeClientRecord => "stallscope probe + draining client + recording",
            Config::ProbeStalledClient => "stallscope probe + a client that never reads",
            Config::TokioMetrics => "tokio-metrics (TaskMonitor on every task + RuntimeMonitor @100 ms)",
            Config::Console => "console-subscriber 0.5, no client",
            Config::ConsoleClient => "console-subscriber 0.5 + draining gRPC client",
        }
    }

    /// For the chart's legend.
    fn short(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Probe => "stallscope probe",
            Config::ProbeClientRecord => "probe + draining client + recording",
            Config::ProbeStalledClient => "probe + never-reading client",
            Config::TokioMetrics => "tokio-metrics",
            Config::Console => "console-subscriber",
            Config::ConsoleClient => "console-subscriber + client",
        }
    }

    fn parse(s: &str) -> Option<Config> {
        CONFIGS.into_iter().find(|c| c.arg() == s)
    }

    fn is_probe(self) -> bool {
        matches!(self, Config::Probe | Config::ProbeClientRecord | Config::ProbeStalledClient)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    YieldStorm,
    SpawnStorm,
    /// W2 at a tenth of the size, so console-subscriber fits in memory (see `skipped`).
    SpawnStormSmall,
    PingPong,
    Http,
}

const WORKLOADS: [Workload; 5] =
    [Workload::YieldStorm, Workload::SpawnStorm, Workload::SpawnStormSmall, Workload::PingPong, Workload::Http];

/// console-subscriber keeps ~48 KiB per task (completed tasks are retained for an hour by
/// default), measured 4.8 GB peak RSS at 100,000 tasks: 1,000,000 would need ~48 GB, more than
/// the 24 GB machine has. Above this many tasks, console runs are skipped.
const CONSOLE_MAX_TASKS: u64 = 200_000;

/// Why a configuration is left out of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// By design: the never-reading client is a W3 budget line only. No row in the tables.
    NotApplicable,
    /// console-subscriber on a spawn storm too big for the machine's memory. A "not run" row.
    Memory,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::NotApplicable => "not applicable: only measured on W3",
            Skip::Memory => "not run: ~48 KiB per task retained would exceed this machine's memory (see W2s)",
        }
    }

    fn shown(self) -> bool {
        self == Skip::Memory
    }
}

/// Whether (and why) this configuration is left out of this workload.
fn skipped(config: Config, work: Workload, quick: bool) -> Option<Skip> {
    if config == Config::ProbeStalledClient && work != Workload::PingPong {
        return Some(Skip::NotApplicable);
    }
    (matches!(config, Config::Console | Config::ConsoleClient)
        && matches!(work, Workload::SpawnStorm | Workload::SpawnStormSmall)
        && work.size(quick) > CONSOLE_MAX_TASKS)
        .then_some(Skip::Memory)
}

impl Workload {
    fn arg(self) -> &'static str {
        match self {
            Workload::YieldStorm => "w1",
            Workload::SpawnStorm => "w2",
            Workload::SpawnStormSmall => "w2s",
            Workload::PingPong => "w3",
            Workload::Http => "w4",
        }
    }

    fn parse(s: &str) -> Option<Workload> {
        WORKLOADS.into_iter().find(|w| w.arg() == s)
    }

    /// (yields per task | tasks | round trips per client | requests per connection) for the
    /// mode; `COMPARE_W1` (etc.) in the environment overrides it.
    fn size(self, quick: bool) -> u64 {
        let var = format!("COMPARE_{}", self.arg().to_uppercase());
        if let Some(n) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
            return n;
        }
        match (self, quick) {
            // 1_000 × (19_999 + 1) = 20_000_000 polls.
            (Workload::YieldStorm, false) => 19_999,
            // 1_000 × (999 + 1) = 1_000_000 polls.
            (Workload::YieldStorm, true) => 999,
            (Workload::SpawnStorm, false) => 1_000_000,
            (Workload::SpawnStorm, true) => 50_000,
            (Workload::SpawnStormSmall, false) => 100_000,
            (Workload::SpawnStormSmall, true) => 5_000,
            (Workload::PingPong, false) => 2_000,
            (Workload::PingPong, true) => 200,
            // 32 × 3_000 = 96_000 requests.
            (Workload::Http, false) => 3_000,
            (Workload::Http, true) => 150,
        }
    }

    /// Units the added cost is expressed per: polls, tasks, round trips, requests.
    fn units(self, quick: bool) -> (u64, &'static str) {
        let n = self.size(quick);
        match self {
            Workload::YieldStorm => (W1_TASKS * (n + 1), "poll"),
            Workload::SpawnStorm | Workload::SpawnStormSmall => (n, "task"),
            Workload::PingPong => (W3_CLIENTS * n, "round trip"),
            Workload::Http => (w4::CONNS * n, "request"),
        }
    }

    fn describe(self, quick: bool) -> String {
        let n = self.size(quick);
        match self {
            Workload::YieldStorm => {
                format!("W1 yield storm: {W1_TASKS} tasks × {n} yields = {} polls", W1_TASKS * (n + 1))
            }
            Workload::SpawnStorm => {
                format!("W2 spawn storm: {n} tiny tasks from {W2_SPAWNERS} spawners, batches of {W2_BATCH}")
            }
            Workload::SpawnStormSmall => {
                format!("W2s small spawn storm: {n} tiny tasks from {W2_SPAWNERS} spawners, batches of {W2_BATCH}")
            }
            Workload::PingPong => format!(
                "W3 TCP ping-pong: {W3_CLIENTS} clients × {n} round trips of {W3_MSG} B against an in-process \
                 echo server on 127.0.0.1"
            ),
            Workload::Http => w4::describe(n),
        }
    }
}

// === workloads ===

/// `tokio::spawn`, through the TaskMonitor when tokio-metrics is measured. Every task of every
/// workload is spawned through here.
fn spawn<F>(tm: &Option<TaskMonitor>, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tm {
        Some(m) => tokio::spawn(m.instrument(fut)),
        None => tokio::spawn(fut),
    }
}

async fn yield_storm(tm: Option<TaskMonitor>, yields: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..W1_TASKS)
        .map(|_| {
            spawn(&tm, async move {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("yield task");
    }
    start.elapsed()
}

async fn spawn_storm(tm: Option<TaskMonitor>, tasks: u64) -> Duration {
    let start = Instant::now();
    let per_spawner = tasks / W2_SPAWNERS;
    let spawners: Vec<_> = (0..W2_SPAWNERS)
        .map(|s| {
            let tm2 = tm.clone();
            spawn(&tm, async move {
                let mut batch = Vec::with_capacity(W2_BATCH as usize);
                let mut sum = 0u64;
                let mut i = 0;
                while i < per_spawner {
                    let n = W2_BATCH.min(per_spawner - i);
                    for j in i..i + n {
                        batch.push(spawn(&tm2, async move { black_box(s ^ j) }));
                    }
                    for h in batch.drain(..) {
                        sum = sum.wrapping_add(h.await.expect("tiny task"));
                    }
                    i += n;
                }
                sum
            })
        })
        .collect();
    for h in spawners {
        black_box(h.await.expect("spawner"));
    }
    start.elapsed()
}

async fn ping_pong(tm: Option<TaskMonitor>, round_trips: u64) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    let tm_server = tm.clone();
    let server = spawn(&tm, async move {
        loop {
            let (mut sock, _) = listener.accept().await.expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            spawn(&tm_server, async move {
                let mut buf = [0u8; W3_MSG];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..W3_CLIENTS)
        .map(|c| {
            spawn(&tm, async move {
                let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
                sock.set_nodelay(true).expect("nodelay");
                let msg = [c as u8; W3_MSG];
                let mut buf = [0u8; W3_MSG];
                for _ in 0..round_trips {
                    sock.write_all(&msg).await.expect("write");
                    sock.read_exact(&mut buf).await.expect("read");
                }
                black_box(buf[0])
            })
        })
        .collect();
    for h in clients {
        black_box(h.await.expect("client"));
    }
    let elapsed = start.elapsed();
    server.abort();
    elapsed
}

// === load on the machine ===

/// Peak resident set size of this process, KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1).and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// === child: one timed run ===

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// Drains console-subscriber's update stream on its own thread and runtime, like `tokio-console`
/// does. Returns once the first update has arrived, so the run starts with the client attached.
fn console_client(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    use console_api::instrument::instrument_client::InstrumentClient;
    use console_api::instrument::InstrumentRequest;
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
        rt.block_on(async move {
            let dst = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut client = loop {
                match InstrumentClient::connect(dst.clone()).await {
                    Ok(c) => break c.max_decoding_message_size(usize::MAX),
                    Err(e) if Instant::now() > deadline => panic!("console client: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let mut stream = client.watch_updates(InstrumentRequest {}).await.expect("watch_updates").into_inner();
            let mut updates = 0u64;
            let mut tx = Some(tx);
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                    Ok(Ok(Some(u))) => {
                        black_box(u);
                        updates += 1;
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            updates
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("first console update");
    t
}

/// Drains the probe's socket: handshake, then read every frame until the probe hangs up.
fn probe_client(path: &Path) -> std::thread::JoinHandle<u64> {
    use stallscope_wire::frame::read_frame;
    let mut s = probe_connect(path);
    std::thread::spawn(move || {
        let mut bytes = 0u64;
        while let Ok(Some(frame)) = read_frame(&mut s) {
            bytes += frame.len() as u64;
        }
        bytes
    })
}

/// Connects to the probe's socket and does the client handshake.
fn probe_connect(path: &Path) -> std::os::unix::net::UnixStream {
    use stallscope_wire::proto::{client_handshake, Hello};
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect to the probe socket");
    client_handshake(&mut s, &Hello::new("stallscope-compare", env!("CARGO_PKG_VERSION"))).expect("handshake");
    s
}

/// Bytes waiting to be read in a socket (`FIONREAD`).
fn pending_bytes(s: &std::os::unix::net::UnixStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which outlives the call.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r == 0 {
        n.max(0) as u64
    } else {
        0
    }
}

/// A client that attaches to the probe and never reads. Holds the socket open until dropped.
struct StalledClient {
    _sock: std::os::unix::net::UnixStream,
    /// How long after the handshake the socket stopped filling (the probe's writer blocked).
    full_after: Option<Duration>,
    /// How long after the handshake the probe first dropped an update for it.
    dropping_after: Option<Duration>,
    /// Bytes waiting in the socket when the run started.
    pending: u64,
    /// The probe's count of updates dropped for slow clients when the run started.
    drops_at_start: u64,
}

/// Attaches a client that never reads, and waits until the probe drops updates for it, so that
/// the timed run sees the probe's steady state with such a client: its writer thread blocked in
/// `write` on a full socket, its bounded queue full, every new update dropped (and counted), the
/// service untouched. Gives up waiting after [`STALL_MAX_WAIT`]. `drops` reads the probe's count
/// of updates dropped for slow clients.
fn stalled_client(path: &Path, drops: impl Fn() -> u64) -> StalledClient {
    let sock = probe_connect(path);
    let start = Instant::now();
    let base = drops();
    let mut last = (0u64, start);
    let mut full_after = None;
    loop {
        std::thread::sleep(Duration::from_millis(25));
        let now = Instant::now();
        let pending = pending_bytes(&sock);
        if pending != last.0 {
            last = (pending, now);
            full_after = None;
        } else if full_after.is_none() && pending > 0 && now.duration_since(last.1) >= STALL_SETTLE {
            full_after = Some(last.1.duration_since(start));
        }
        let drops_at_start = drops();
        let dropping = drops_at_start > base;
        if dropping || now.duration_since(start) > STALL_MAX_WAIT {
            let dropping_after = dropping.then(|| now.duration_since(start));
            return StalledClient { _sock: sock, full_after, dropping_after, pending, drops_at_start };
        }
    }
}

fn child(config: Config, work: Workload, quick: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut console_thread = None;
    if matches!(config, Config::Console | Config::ConsoleClient) {
        let port = free_port();
        console_subscriber::ConsoleLayer::builder().server_addr(([127, 0, 0, 1], port)).init();
        if config == Config::ConsoleClient {
            console_thread = Some(console_client(port, stop.clone()));
        }
    }
    let record_dir = std::env::temp_dir().join(format!("stallscope-compare-{}", std::process::id()));
    let probe = config.is_probe().then(|| {
        let b = stallscope_probe::Probe::builder();
        let b = if config == Config::ProbeClientRecord {
            std::fs::create_dir_all(&record_dir).expect("record dir");
            b.record_to(record_dir.join("run.ssrec"))
        } else {
            b
        };
        b.build().expect("probe")
    });

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(WORKERS).enable_all();
    if let Some(p) = &probe {
        p.install(&mut builder);
    }
    let rt = builder.build().expect("runtime");
    let guard = probe.as_ref().map(|p| p.start(rt.handle()));
    let socket = || probe.as_ref().and_then(|p| p.socket_path()).expect("probe socket path");
    let probe_thread = (config == Config::ProbeClientRecord).then(|| probe_client(&socket()));
    let stalled = (config == Config::ProbeStalledClient).then(|| {
        let p = probe.as_ref().expect("probe");
        stalled_client(&socket(), || p.snapshot().map_or(0, |s| s.drops.subscriber_updates))
    });

    let tm = (config == Config::TokioMetrics).then(TaskMonitor::new);
    let sampler = tm.clone().map(|tm| {
        let rm = RuntimeMonitor::new(rt.handle());
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut intervals = rm.intervals();
            let mut task_intervals = tm.intervals();
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(METRICS_PERIOD);
                black_box(intervals.next());
                black_box(task_intervals.next());
                samples += 1;
            }
            samples
        })
    });

    let n = work.size(quick);
    let before = machine::cpu_ticks();
    let elapsed = rt.block_on(async move {
        match work {
            Workload::YieldStorm => yield_storm(tm, n).await,
            Workload::SpawnStorm | Workload::SpawnStormSmall => spawn_storm(tm, n).await,
            Workload::PingPong => ping_pong(tm, n).await,
            Workload::Http => w4::http(tm, n).await,
        }
    });
    let secs = elapsed.as_secs_f64();
    let (other, own) = machine::cores(before, machine::cpu_ticks(), secs).unwrap_or((f64::NAN, f64::NAN));
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        black_box(s.join().expect("metrics sampler"));
    }
    let mut extra = String::new();
    if let Some(p) = &probe {
        let snap = p.refresh(Duration::from_secs(1)).or_else(|| p.snapshot());
        let drops = snap.map_or(-1, |s| s.drops.subscriber_updates as i64);
        extra += &format!(" subscriber_drops={drops}");
    }
    if let Some(s) = &stalled {
        let ms = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1e3);
        extra += &format!(
            " stalled_full_ms={:.0} stalled_dropping_ms={:.0} stalled_pending_bytes={} stalled_drops_at_start={}",
            ms(s.full_after),
            ms(s.dropping_after),
            s.pending,
            s.drops_at_start
        );
    }
    drop(guard);
    drop(rt);
    drop(probe);
    drop(stalled);
    if let Some(t) = probe_thread {
        extra += &format!(" probe_bytes={}", t.join().expect("probe client"));
    }
    if let Some(t) = console_thread {
        extra += &format!(" console_updates={}", t.join().expect("console client"));
    }
    let hwm = peak_rss_kib();
    let _ = std::fs::remove_dir_all(&record_dir);
    println!("RESULT secs={secs} hwm_kib={hwm} other={other} own={own}{extra}");
}

// === parent ===

/// Runs one child and parses its `RESULT` line: `secs`, `hwm_kib`, `other` and `own` become the
/// record's fields, every other `key=number` goes to its counters.
fn run_child(exe: &Path, config: Config, work: Workload, quick: bool, round: usize) -> RunRecord {
    let out = Command::new(exe)
        .args(["--child", config.arg(), work.arg(), if quick { "quick" } else { "full" }])
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap_or_else(|| {
        panic!(
            "child {} {} failed ({}): {}",
            config.arg(),
            work.arg(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("  {:<20} {:<3} {}", config.arg(), work.arg(), &line[7..]);
    let mut rec = RunRecord {
        workload: work.arg().to_string(),
        config: config.arg().to_string(),
        round,
        wall_secs: f64::NAN,
        peak_rss_kib: 0,
        other_cores: f64::NAN,
        own_cores: f64::NAN,
        counters: Default::default(),
    };
    for (k, v) in line[7..].split_whitespace().filter_map(|kv| kv.split_once('=')) {
        let v: f64 = v.parse().unwrap_or(f64::NAN);
        match k {
            "secs" => rec.wall_secs = v,
            "hwm_kib" => rec.peak_rss_kib = v as u64,
            "other" => rec.other_cores = v,
            "own" => rec.own_cores = v,
            _ => {
                rec.counters.insert(k.to_string(), v);
            }
        }
    }
    rec
}

/// Command-line options of the parent.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    json: Option<PathBuf>,
    chart: Option<PathBuf>,
    chart_from: Option<PathBuf>,
    only: Option<Vec<Workload>>,
}

const USAGE: &str = "usage: compare [--quick] [--json PATH] [--chart PATH.svg] [--only w1,w2,w2s,w3,w4]\n       \
                     compare --chart-from RESULTS.json [--chart PATH.svg]";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = Some(value()?.into()),
            "--chart" => o.chart = Some(value()?.into()),
            "--chart-from" => o.chart_from = Some(value()?.into()),
            "--only" => {
                let list = value()?;
                let w: Option<Vec<Workload>> = list.split(',').map(Workload::parse).collect();
                o.only = Some(w.ok_or_else(|| format!("--only {list}: expected w1, w2, w2s, w3 or w4"))?);
            }
            // `cargo bench`-style harness flags are not expected here; anything else is a mistake.
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

/// The default results path: `probe/compare/target/compare-results.json`, wherever the binary is
/// run from.
fn default_json() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("compare-results.json")
}

/// Prints the tables, writes the chart. Shared by a run and `--chart-from`.
fn report_and_chart(results: &Results, chart_path: &Path) -> Result<(), String> {
    print!("{}", report::tables(results));
    print!("{}", report::budget(results));
    let svg = chart::svg(results);
    std::fs::write(chart_path, svg).map_err(|e| format!("writing the chart {}: {e}", chart_path.display()))?;
    eprintln!("chart: {}", chart_path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let (Some(config), Some(work)) =
            (args.get(2).and_then(|s| Config::parse(s)), args.get(3).and_then(|s| Workload::parse(s)))
        else {
            eprintln!("usage: compare --child <config> <w1|w2|w2s|w3|w4> <full|quick>");
            return ExitCode::from(2);
        };
        child(config, work, args.get(4).map(String::as_str) == Some("quick"));
        return ExitCode::SUCCESS;
    }
    let opts = match parse_args(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    if let Some(from) = &opts.chart_from {
        let chart_path = opts.chart.clone().unwrap_or_else(|| from.with_extension("svg"));
        let done = Results::load(from).and_then(|r| report_and_chart(&r, &chart_path));
        if let Err(e) = done {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }

    let quick = opts.quick;
    let rounds = if quick { 3 } else { 5 };
    let exe = std::env::current_exe().expect("current exe");
    let json_path = opts.json.clone().unwrap_or_else(default_json);
    let chart_path = opts.chart.clone().unwrap_or_else(|| json_path.with_extension("svg"));
    let workloads: Vec<Workload> =
        WORKLOADS.into_iter().filter(|w| opts.only.as_ref().is_none_or(|o| o.contains(w))).collect();

    let mut results = Results::new(if quick { "quick" } else { "full" }, rounds, WORKERS);
    results.configs = CONFIGS
        .into_iter()
        .map(|c| ConfigInfo { id: c.arg().into(), label: c.label().into(), short: c.short().into() })
        .collect();
    for &work in &workloads {
        let (units, unit) = work.units(quick);
        results.workloads.push(WorkloadInfo {
            id: work.arg().into(),
            title: work.describe(quick),
            size: work.size(quick),
            units,
            unit: unit.into(),
            skipped: CONFIGS
                .into_iter()
                .filter_map(|c| {
                    skipped(c, work, quick).map(|s| SkipInfo {
                        config: c.arg().into(),
                        reason: s.reason().into(),
                        shown: s.shown(),
                    })
                })
                .collect(),
        });
    }

    for &work in &workloads {
        eprintln!("{}", work.describe(quick));
        // One untimed warm-up (page cache, binary load), kept in the results as round 0.
        results.runs.push(run_child(&exe, Config::Bare, work, quick, 0));
        for round in 1..=rounds {
            eprintln!(" round {round}");
            for c in CONFIGS {
                if skipped(c, work, quick).is_none() {
                    results.runs.push(run_child(&exe, c, work, quick, round));
                }
            }
        }
    }
    results.finish();

    if let Some(dir) = json_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = results.save(&json_path) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    eprintln!("results: {}", json_path.display());
    if let Err(e) = report_and_chart(&results, &chart_path) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
