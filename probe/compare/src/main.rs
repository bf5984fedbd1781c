//! Wall-time overhead of the stallscope probe next to tokio-metrics and console-subscriber, against
//! a bare runtime (issue P4, groundwork).
//!
//! ```text
//! cargo run --release --manifest-path probe/compare/Cargo.toml              # full run
//! cargo run --release --manifest-path probe/compare/Cargo.toml -- --quick   # smoke run, small sizes
//! ```
//!
//! Every timed run is a child process of this binary (`compare --child <config> <workload> <mode>`),
//! with a fresh 2-worker multi-thread runtime: console-subscriber installs a process-global tracing
//! subscriber, so it cannot share a process with the other configurations, and running all of them
//! the same way keeps the comparison uniform. The parent runs the configurations in alternation
//! (one round = every configuration once, in order), and takes each configuration's ratio to the
//! bare run of the same round. Only the workload is timed, not building or tearing down.
//!
//! Each child also reports its peak RSS (`VmHWM`) and how many cores other processes kept busy
//! during its timed part (from `/proc/stat`).

use std::future::Future;
use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_metrics::{RuntimeMonitor, TaskMonitor};

#[cfg(not(tokio_unstable))]
compile_error!("build with RUSTFLAGS=\"--cfg tokio_unstable\" (probe/compare/.cargo/config.toml sets it)");

/// Workers of every measured runtime.
const WORKERS: usize = 2;
/// W1 tasks: 32 per worker.
const W1_TASKS: u64 = 32 * WORKERS as u64;
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

// === configurations and workloads ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Bare,
    Probe,
    ProbeClientRecord,
    TokioMetrics,
    Console,
    ConsoleClient,
}

const CONFIGS: [Config; 6] = [
    Config::Bare,
    Config::Probe,
    Config::ProbeClientRecord,
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
            Config::TokioMetrics => "tokio-metrics (TaskMonitor on every task + RuntimeMonitor @100 ms)",
            Config::Console => "console-subscriber 0.5, no client",
            Config::ConsoleClient => "console-subscriber 0.5 + draining gRPC client",
        }
    }

    fn parse(s: &str) -> Option<Config> {
        CONFIGS.into_iter().find(|c| c.arg() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    YieldStorm,
    SpawnStorm,
    /// W2 at a tenth of the size, so console-subscriber fits in memory (see `skipped`).
    SpawnStormSmall,
    PingPong,
}

const WORKLOADS: [Workload; 4] =
    [Workload::YieldStorm, Workload::SpawnStorm, Workload::SpawnStormSmall, Workload::PingPong];

/// console-subscriber keeps ~48 KiB per task (completed tasks are retained for an hour by
/// default), measured 4.8 GB peak RSS at 100,000 tasks: 1,000,000 would need ~48 GB, more than
/// the 24 GB machine has. Above this many tasks, console runs are skipped.
const CONSOLE_MAX_TASKS: u64 = 200_000;

/// Whether this configuration is left out of this workload.
fn skipped(config: Config, work: Workload, quick: bool) -> bool {
    matches!(config, Config::Console | Config::ConsoleClient)
        && matches!(work, Workload::SpawnStorm | Workload::SpawnStormSmall)
        && work.size(quick) > CONSOLE_MAX_TASKS
}

impl Workload {
    fn arg(self) -> &'static str {
        match self {
            Workload::YieldStorm => "w1",
            Workload::SpawnStorm => "w2",
            Workload::SpawnStormSmall => "w2s",
            Workload::PingPong => "w3",
        }
    }

    fn parse(s: &str) -> Option<Workload> {
        WORKLOADS.into_iter().find(|w| w.arg() == s)
    }

    /// (yields per task | tasks | round trips per client) for the mode; `COMPARE_W1` (etc.) in the
    /// environment overrides it.
    fn size(self, quick: bool) -> u64 {
        let var = format!("COMPARE_{}", self.arg().to_uppercase());
        if let Some(n) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
            return n;
        }
        match (self, quick) {
            // 64 × (312_499 + 1) = 20_000_000 polls.
            (Workload::YieldStorm, false) => 312_499,
            (Workload::YieldStorm, true) => 15_624,
            (Workload::SpawnStorm, false) => 1_000_000,
            (Workload::SpawnStorm, true) => 50_000,
            (Workload::SpawnStormSmall, false) => 100_000,
            (Workload::SpawnStormSmall, true) => 5_000,
            (Workload::PingPong, false) => 2_000,
            (Workload::PingPong, true) => 200,
        }
    }

    /// Units the added cost is expressed per: polls, tasks, round trips.
    fn units(self, quick: bool) -> (u64, &'static str) {
        let n = self.size(quick);
        match self {
            Workload::YieldStorm => (W1_TASKS * (n + 1), "poll"),
            Workload::SpawnStorm | Workload::SpawnStormSmall => (n, "task"),
            Workload::PingPong => (W3_CLIENTS * n, "round trip"),
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
        }
    }
}

// === workloads ===

/// `tokio::spawn`, through the TaskMonitor when tokio-metrics is measured.
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

// === other load on the machine ===

/// CPU ticks (USER_HZ, 100 per second on Linux) used by the whole machine and by this process.
#[derive(Clone, Copy, Debug)]
struct CpuTicks {
    machine: u64,
    own: u64,
}

fn cpu_ticks() -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal ...
    let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|x| x.parse().ok()).collect();
    let machine = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name start at field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = me.get(me.rfind(')')? + 2..)?.split_whitespace().collect();
    let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(CpuTicks { machine, own })
}

/// Cores kept busy by other processes between two readings `secs` apart.
fn other_cores(a: Option<CpuTicks>, b: Option<CpuTicks>, secs: f64) -> Option<f64> {
    let (a, b) = (a?, b?);
    let other = (b.machine - a.machine).saturating_sub(b.own - a.own);
    Some(other as f64 / 100.0 / secs)
}

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
fn probe_client(path: &std::path::Path) -> std::thread::JoinHandle<u64> {
    use stallscope_wire::frame::read_frame;
    use stallscope_wire::proto::{client_handshake, Hello};
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect to the probe socket");
    client_handshake(&mut s, &Hello::new("stallscope-compare", env!("CARGO_PKG_VERSION"))).expect("handshake");
    std::thread::spawn(move || {
        let mut bytes = 0u64;
        while let Ok(Some(frame)) = read_frame(&mut s) {
            bytes += frame.len() as u64;
        }
        bytes
    })
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
    let probe = matches!(config, Config::Probe | Config::ProbeClientRecord).then(|| {
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
    let probe_thread = (config == Config::ProbeClientRecord)
        .then(|| probe_client(&probe.as_ref().and_then(|p| p.socket_path()).expect("probe socket path")));

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
    let before = cpu_ticks();
    let elapsed = rt.block_on(async move {
        match work {
            Workload::YieldStorm => yield_storm(tm, n).await,
            Workload::SpawnStorm | Workload::SpawnStormSmall => spawn_storm(tm, n).await,
            Workload::PingPong => ping_pong(tm, n).await,
        }
    });
    let secs = elapsed.as_secs_f64();
    let other = other_cores(before, cpu_ticks(), secs).unwrap_or(f64::NAN);
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        black_box(s.join().expect("metrics sampler"));
    }
    drop(guard);
    drop(rt);
    drop(probe);
    let probe_bytes = probe_thread.map(|t| t.join().expect("probe client")).unwrap_or(0);
    let console_updates = console_thread.map(|t| t.join().expect("console client")).unwrap_or(0);
    let hwm = peak_rss_kib();
    let _ = std::fs::remove_dir_all(&record_dir);
    println!(
        "RESULT secs={secs} hwm_kib={hwm} other={other} probe_bytes={probe_bytes} console_updates={console_updates}"
    );
}

// === parent ===

#[derive(Clone, Copy, Debug)]
struct Run {
    secs: f64,
    hwm_kib: u64,
    other: f64,
}

fn run_child(exe: &std::path::Path, config: Config, work: Workload, quick: bool) -> Run {
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
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    eprintln!("  {:<20} {:<3} {}", config.arg(), work.arg(), &line[7..]);
    Run { secs: field("secs"), hwm_kib: field("hwm_kib") as u64, other: field("other") }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let (Some(config), Some(work)) =
            (args.get(2).and_then(|s| Config::parse(s)), args.get(3).and_then(|s| Workload::parse(s)))
        else {
            eprintln!("usage: compare --child <config> <w1|w2|w2s|w3> <full|quick>");
            return ExitCode::from(2);
        };
        child(config, work, args.get(4).map(String::as_str) == Some("quick"));
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 5 };
    let exe = std::env::current_exe().expect("current exe");

    println!(
        "# stallscope vs tokio-metrics vs console-subscriber ({} mode, {rounds} rounds, {WORKERS} workers, {} cores)\n",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    for work in WORKLOADS {
        eprintln!("{}", work.describe(quick));
        // One untimed warm-up (page cache, binary load).
        let _ = run_child(&exe, Config::Bare, work, quick);
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); CONFIGS.len()];
        for round in 0..rounds {
            eprintln!(" round {}", round + 1);
            for (i, c) in CONFIGS.into_iter().enumerate() {
                if !skipped(c, work, quick) {
                    runs[i].push(run_child(&exe, c, work, quick));
                }
            }
        }
        let (units, unit) = work.units(quick);
        println!("## {}\n", work.describe(quick));
        println!(
            "| configuration | runs | median wall | ratio to bare, median | ratio min–max | added ns/{unit}, median \
             | peak RSS MiB, median (max) | other load, cores, median / max |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (i, c) in CONFIGS.into_iter().enumerate() {
            if skipped(c, work, quick) {
                println!(
                    "| {} | 0 | not run: ~48 KiB per task retained would exceed this machine's memory (see W2s) \
                     | | | | | |",
                    c.label()
                );
                continue;
            }
            let secs: Vec<f64> = runs[i].iter().map(|r| r.secs).collect();
            let ratios: Vec<f64> = runs[i].iter().zip(&runs[0]).map(|(r, b)| r.secs / b.secs).collect();
            let added: Vec<f64> =
                runs[i].iter().zip(&runs[0]).map(|(r, b)| (r.secs - b.secs) * 1e9 / units as f64).collect();
            let rss: Vec<f64> = runs[i].iter().map(|r| r.hwm_kib as f64 / 1024.0).collect();
            let other: Vec<f64> = runs[i].iter().map(|r| r.other).collect();
            let (lo, hi) = min_max(&ratios);
            let (ratio, lohi, add) = if c == Config::Bare {
                (
                    "1.000".to_string(),
                    "—".to_string(),
                    format!("{:.1} ns/{unit} (bare)", median(&secs) * 1e9 / units as f64),
                )
            } else {
                (format!("{:.3}", median(&ratios)), format!("{lo:.3}–{hi:.3}"), format!("{:+.1}", median(&added)))
            };
            println!(
                "| {} | {} | {:.1} ms | {ratio} | {lohi} | {add} | {:.1} ({:.1}) | {:.2} / {:.2} |",
                c.label(),
                runs[i].len(),
                median(&secs) * 1e3,
                median(&rss),
                min_max(&rss).1,
                median(&other),
                min_max(&other).1,
            );
        }
        println!();
    }
    ExitCode::SUCCESS
}
