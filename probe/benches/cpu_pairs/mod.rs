//! `--cpu-pairs N`: the service's own CPU time per request, in alternating pairs of child
//! processes, with a 95 % interval of the ratio. For the 1 % lines of P4 that wall time could not
//! show on this machine (rounds spread ±5–10 %): see docs/benchmarks.md, "The 1 % lines in CPU
//! time".
//!
//! Lines (each `A` against `B`, ratio B / A):
//! - **never-reading client**: W3 with the probe, against W3 with the probe and a client that
//!   attached to its socket, did the handshake and never reads, timed once the probe is already
//!   dropping updates for it. With the probe's defaults (an update every 100 ms) the client's
//!   socket fills after ~10 s and its 64-update queue ~6.4 s later, so both sides of this line
//!   settle 20 s before the timed part. `--stuck-interval-ms 10` runs the line with
//!   `aggregation_interval(10 ms)` on both sides instead: ten times the update rate, so ten times
//!   what a stuck client can cost per second (a copy of every update, then the drop), with a 3 s
//!   settle; a stress variant, not the line as stated.
//! - **W3 probe**: W3 bare against W3 with the probe (defaults).
//! - **W4 probe**: W4 bare against W4 with the probe (defaults).
//! - Only with `--cpu-only w3-hooks,w4-hooks`: bare against the probe installed but not started
//!   (its poll, spawn and park hooks without its threads), to split the probe's cost in two.
//!
//! What is measured. Every run is a child process of this binary (`overhead --cpu-child ...`):
//! a 2-worker service runtime (the probe installed and started on it, or not) runs the server;
//! the clients run on a current-thread runtime on the child's main thread (`work.rs`). Both sides
//! settle for the same time after start (300 ms; for the never-reading line 3 s, and the stuck
//! side waits longer if its probe is not dropping yet, which the table reports). Around the
//! timed part the child reads `CLOCK_PROCESS_CPUTIME_ID` (every thread of the process, including
//! threads that exit meanwhile) and its main thread's `CLOCK_THREAD_CPUTIME_ID`. The **service's
//! CPU time** is the difference: the runtime's workers, its blocking threads, and every probe
//! thread (`stallscope-*`, including the socket server's and the symbolizer's). The probe's
//! threads are counted on purpose: the line is what the service pays, and the probe lives in it.
//! Only the load generator (the main thread) is left out. Per-group figures (from
//! `/proc/self/task/*/schedstat`) are printed too, to show where a difference comes from.
//!
//! Pairs and statistics. One warm-up pair (not counted), then N pairs; pair i runs A then B
//! when i is even and B then A when i is odd, so a drift of the machine does not always favour
//! the same side. Per pair the ratio r = B's service CPU / A's (the work per run is fixed, so
//! that is the ratio per request). The interval is the mean of the r's with a Student t 95 %
//! interval (mean ± t(0.975, N−1) · sd / √N); a percentile bootstrap of the mean (10,000
//! resamples, fixed seed) is printed beside it. A line is **met** when the higher of the two
//! upper ends is ≤ 1.01, and **not shown** otherwise.

mod work;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stallscope_probe::Probe;

/// Workers of the service runtime.
const WORKERS: usize = 2;
/// W3 round trips per client per run (64 clients): 64,000 round trips.
const W3_ROUND_TRIPS: u64 = 1_000;
/// W4 requests per connection per run (32 connections): 32,000 requests.
const W4_PER_CONN: u64 = 1_000;
/// How long both sides of the W3/W4 probe lines wait after start before the timed part (the
/// probe's start-up, the symbolizer's warm-up, is not per-request work).
const SETTLE: Duration = Duration::from_millis(300);
/// The never-reading line's aggregation interval by default: the probe's own default, 100 ms
/// (see the module docs).
pub const STUCK_INTERVAL_MS: u64 = 100;
/// Both sides of the never-reading line wait this long with intervals under 100 ms (with 10 ms
/// the stuck client's socket fills in ~1 s and its 64-update queue ~0.7 s later)...
const STUCK_SETTLE: Duration = Duration::from_secs(3);
/// ... or this long from 100 ms on (~10 s + 6.4 s with the default 100 ms).
const STUCK_SETTLE_DEFAULT_INTERVAL: Duration = Duration::from_secs(20);
/// The stuck side gives up waiting for the probe to drop its updates after this long; the run
/// then goes on and reports `stuck_dropping_ms=-1`.
const STUCK_MAX_WAIT: Duration = Duration::from_secs(40);
/// A line is met when the upper end of its 95 % interval is at most this.
const BOUND: f64 = 1.01;
/// Bootstrap resamples.
const RESAMPLES: usize = 10_000;

// === the child: one timed run ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    W3,
    W4,
}

impl Work {
    fn arg(self) -> &'static str {
        match self {
            Work::W3 => "w3",
            Work::W4 => "w4",
        }
    }

    fn parse(s: &str) -> Option<Work> {
        [Work::W3, Work::W4].into_iter().find(|w| w.arg() == s)
    }

    /// Requests (W3: round trips) per run at `size` per client.
    fn units(self, size: u64) -> u64 {
        match self {
            Work::W3 => work::W3_CLIENTS * size,
            Work::W4 => work::W4_CONNS * size,
        }
    }

    fn describe(self, size: u64) -> String {
        match self {
            Work::W3 => format!(
                "W3 TCP ping-pong, {} clients × {size} round trips of 64 B = {} round trips",
                work::W3_CLIENTS,
                self.units(size)
            ),
            Work::W4 => format!(
                "W4 hyper HTTP/1.1, {} keep-alive connections × {size} requests = {} requests (per 128: 119 /fast, \
                 8 /timer 1 ms, 1 /pool)",
                work::W4_CONNS,
                self.units(size)
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Bare,
    Probe,
    /// The probe and a client that never reads.
    ProbeStuck,
    /// The probe installed on the runtime but not started: its hooks without its threads (for
    /// the `w3-hooks` / `w4-hooks` lines, which split the probe's cost in two).
    HooksOnly,
}

impl Side {
    fn arg(self) -> &'static str {
        match self {
            Side::Bare => "bare",
            Side::Probe => "probe",
            Side::ProbeStuck => "probe-stuck",
            Side::HooksOnly => "hooks-only",
        }
    }

    fn parse(s: &str) -> Option<Side> {
        [Side::Bare, Side::Probe, Side::ProbeStuck, Side::HooksOnly].into_iter().find(|w| w.arg() == s)
    }

    fn label(self) -> &'static str {
        match self {
            Side::Bare => "bare",
            Side::Probe => "probe",
            Side::ProbeStuck => "probe + never-reading client",
            Side::HooksOnly => "probe installed, not started",
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through the pointer, which outlives the call.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Run nanoseconds per thread id, with the thread's group: `runtime` (Tokio's threads),
/// `probe` (`stallscope-*`), `main`, `other`.
fn thread_ns() -> HashMap<u64, (&'static str, u64)> {
    let mut out = HashMap::new();
    let pid = std::process::id() as u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else { continue };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let group = if tid == pid {
            "main"
        } else if comm.starts_with("stallscope-") {
            "probe"
        } else if comm.starts_with("tokio-") {
            "runtime"
        } else {
            "other"
        };
        let sched = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        let run = sched.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
        out.insert(tid, (group, run));
    }
    out
}

/// Per group, run nanoseconds between two tables (threads alive at the end only).
fn group_ns(
    before: &HashMap<u64, (&'static str, u64)>,
    after: &HashMap<u64, (&'static str, u64)>,
) -> BTreeMap<&'static str, u64> {
    let mut g = BTreeMap::new();
    for (tid, (group, run)) in after {
        let b = before.get(tid).map_or(0, |b| b.1);
        *g.entry(*group).or_insert(0) += run.saturating_sub(b);
    }
    g
}

/// Whether the peer has hung up on `s` (poll with `POLLRDHUP`, no wait).
fn peer_hung_up(s: &std::os::unix::net::UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: poll reads and writes one pollfd through the pointer, which outlives the call.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// One timed run; prints a `RESULT key=value ...` line. Args: `<w3|w4> <side> <size per client>
/// <settle ms> <aggregation interval ms, 0 = the probe's default>`.
pub fn child(args: &[String]) -> Result<(), String> {
    let work = args.first().and_then(|a| Work::parse(a)).ok_or("cpu child: workload")?;
    let side = args.get(1).and_then(|a| Side::parse(a)).ok_or("cpu child: side")?;
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).ok_or(format!("cpu child: argument {i}"));
    let (size, settle_ms, interval_ms) = (num(2)?, num(3)?, num(4)?);

    let probe = (side != Side::Bare).then(|| {
        let b = Probe::builder();
        let b = if interval_ms > 0 { b.aggregation_interval(Duration::from_millis(interval_ms)) } else { b };
        b.build().expect("probe")
    });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(WORKERS).enable_all();
    if let Some(p) = &probe {
        p.install(&mut builder);
    }
    let service = builder.build().expect("service runtime");
    let guard = probe.as_ref().filter(|_| side != Side::HooksOnly).map(|p| p.start(service.handle()));
    let drops = || probe.as_ref().and_then(|p| p.snapshot()).map_or(0, |s| s.drops.subscriber_updates);

    // The stuck client: connect, handshake, never read; wait until the probe drops its updates.
    let started = Instant::now();
    let settle = Duration::from_millis(settle_ms);
    let mut stuck = None;
    let mut dropping_after = None;
    if side == Side::ProbeStuck {
        use stallscope_wire::proto::{client_handshake, Hello};
        let path = probe.as_ref().and_then(|p| p.socket_path()).ok_or("the probe has no socket")?;
        let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
        client_handshake(&mut s, &Hello::new("overhead-bench", "0")).map_err(|e| format!("handshake: {e}"))?;
        let base = drops();
        while started.elapsed() < STUCK_MAX_WAIT {
            if drops() > base {
                dropping_after = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stuck = Some(s);
    }
    std::thread::sleep(settle.saturating_sub(started.elapsed()));

    let clients = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    let (addr, server) = match work {
        Work::W3 => work::echo_server(service.handle()),
        Work::W4 => work::http_server(service.handle()),
    };

    let drops0 = drops();
    let ticks0 = crate::machine::cpu_ticks();
    let threads0 = thread_ns();
    let (proc0, main0) = (clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID), clock_ns(libc::CLOCK_THREAD_CPUTIME_ID));
    let t0 = Instant::now();
    clients.block_on(async move {
        match work {
            Work::W3 => work::ping_pong(addr, size).await,
            Work::W4 => work::http_load(addr, size).await,
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let (proc1, main1) = (clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID), clock_ns(libc::CLOCK_THREAD_CPUTIME_ID));
    let groups = group_ns(&threads0, &thread_ns());
    let ticks1 = crate::machine::cpu_ticks();
    let drops1 = drops();

    let process = proc1.saturating_sub(proc0);
    let loadgen = main1.saturating_sub(main0);
    let service_ns = process.saturating_sub(loadgen);
    let other_cores = crate::machine::cores(ticks0, ticks1, wall).map_or(f64::NAN, |(other, _)| other);
    let mut line = format!(
        "RESULT wall_s={wall} service_ns={service_ns} loadgen_ns={loadgen} runtime_ns={} probe_ns={} other_threads_ns={} other_cores={other_cores}",
        groups.get("runtime").copied().unwrap_or(0),
        groups.get("probe").copied().unwrap_or(0),
        groups.get("other").copied().unwrap_or(0),
    );
    if let Some(s) = &stuck {
        let ms = dropping_after.map_or(-1.0, |d| d.as_secs_f64() * 1e3);
        line += &format!(
            " stuck_dropping_ms={ms:.0} stuck_drops_during={} stuck_hup={}",
            drops1.saturating_sub(drops0),
            u8::from(peer_hung_up(s))
        );
    }
    server.abort();
    drop(clients);
    drop(guard);
    drop(service);
    drop(stuck);
    println!("{line}");
    Ok(())
}

// === the parent: pairs ===

/// One line: `a` against `b` on `work`.
struct Line {
    id: &'static str,
    budget: &'static str,
    work: Work,
    size: u64,
    a: Side,
    b: Side,
    settle_ms: u64,
    interval_ms: u64,
}

type Run = HashMap<String, f64>;

fn run_child(exe: &Path, l: &Line, side: Side) -> Result<Run, String> {
    let out = Command::new(exe)
        .arg("--cpu-child")
        .args([l.work.arg(), side.arg()])
        .args([l.size, l.settle_ms, l.interval_ms].map(|n| n.to_string()))
        .output()
        .map_err(|e| format!("spawn child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        return Err(format!(
            "child {} {} failed ({}): {}",
            l.work.arg(),
            side.arg(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
        .collect())
}

fn get(r: &Run, k: &str) -> f64 {
    r.get(k).copied().unwrap_or(f64::NAN)
}

// === statistics ===

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sd(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom: exact table up to 30, then
/// the Cornish–Fisher expansion around the normal quantile (error < 1e-4 from 30 on).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    if df == 0 {
        return f64::NAN;
    }
    if df <= 30 {
        return T[df - 1];
    }
    let (z, v): (f64, f64) = (1.959_963_985, df as f64);
    let (z3, z5, z7) = (z * z * z, z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v * v * v)
}

/// Mean ± t(0.975, n−1) · sd / √n.
fn t_interval(v: &[f64]) -> (f64, f64) {
    let h = t975(v.len() - 1) * sd(v) / (v.len() as f64).sqrt();
    (mean(v) - h, mean(v) + h)
}

/// Percentile bootstrap of the mean: 2.5 % and 97.5 % of [`RESAMPLES`] resampled means.
fn bootstrap(v: &[f64]) -> (f64, f64) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64; // fixed seed: the same data gives the same interval
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let n = v.len();
    let mut means: Vec<f64> =
        (0..RESAMPLES).map(|_| (0..n).map(|_| v[(next() % n as u64) as usize]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    (means[RESAMPLES * 25 / 1000], means[RESAMPLES * 975 / 1000 - 1])
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Options of `--cpu-pairs`.
pub struct Options {
    pub pairs: usize,
    /// Line ids to run (`w3`, `w4`, `stuck`, and the optional `w3-hooks`, `w4-hooks`); `w3`,
    /// `w4` and `stuck` when empty.
    pub only: Vec<String>,
    /// The never-reading line's aggregation interval, ms.
    pub stuck_interval_ms: u64,
    /// Sizes scaled down for a smoke run.
    pub smoke: bool,
}

fn lines(o: &Options) -> Vec<Line> {
    let (w3, w4) = if o.smoke { (10, 20) } else { (W3_ROUND_TRIPS, W4_PER_CONN) };
    let stuck_settle = if o.smoke {
        Duration::ZERO
    } else if o.stuck_interval_ms >= 100 {
        STUCK_SETTLE_DEFAULT_INTERVAL
    } else {
        STUCK_SETTLE
    };
    let settle = if o.smoke { Duration::ZERO } else { SETTLE };
    let all = vec![
        Line {
            id: "w3",
            budget: "the probe costs W3 ≤ 1 %",
            work: Work::W3,
            size: w3,
            a: Side::Bare,
            b: Side::Probe,
            settle_ms: settle.as_millis() as u64,
            interval_ms: 0,
        },
        Line {
            id: "w4",
            budget: "the probe costs W4 ≤ 1 %",
            work: Work::W4,
            size: w4,
            a: Side::Bare,
            b: Side::Probe,
            settle_ms: settle.as_millis() as u64,
            interval_ms: 0,
        },
        Line {
            id: "stuck",
            budget: "a client that never reads costs the service ≤ 1 % (W3)",
            work: Work::W3,
            size: w3,
            a: Side::Probe,
            b: Side::ProbeStuck,
            settle_ms: stuck_settle.as_millis() as u64,
            interval_ms: o.stuck_interval_ms,
        },
    ];
    // Not run by default: where the probe's cost on W3/W4 comes from (its hooks alone, without
    // the watchdog, aggregator, server and heartbeat).
    let optional = [("w3-hooks", Work::W3, w3), ("w4-hooks", Work::W4, w4)].map(|(id, work, size)| Line {
        id,
        budget: "(split) the probe's hooks alone",
        work,
        size,
        a: Side::Bare,
        b: Side::HooksOnly,
        settle_ms: settle.as_millis() as u64,
        interval_ms: 0,
    });
    if o.only.is_empty() {
        return all;
    }
    all.into_iter().chain(optional).filter(|l| o.only.iter().any(|x| x == l.id)).collect()
}

/// Runs the pairs and prints the tables. In a smoke run (`cargo test --benches`), one tiny pair
/// per line, no tables: nothing is timed or asserted.
pub fn run(o: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let lines = lines(o);
    if o.smoke {
        // The stuck side is not smoke-run: it waits for the probe to drop updates (seconds).
        for l in &lines {
            run_child(&exe, l, l.a)?;
            if l.b != Side::ProbeStuck {
                run_child(&exe, l, l.b)?;
            }
        }
        return Ok(());
    }
    let pairs = o.pairs.max(2);
    let (date, load0) = (utc_now(), loadavg());
    let t0 = Instant::now();
    let mut results = Vec::new();
    for l in &lines {
        eprintln!(
            "cpu pairs: {} ({}), {} vs {}, 1 warm-up + {pairs} pairs",
            l.id,
            l.work.describe(l.size),
            l.a.label(),
            l.b.label()
        );
        let mut runs: Vec<(Run, Run)> = Vec::new();
        for i in 0..=pairs {
            let (a, b) = if i % 2 == 0 {
                let a = run_child(&exe, l, l.a)?;
                (a, run_child(&exe, l, l.b)?)
            } else {
                let b = run_child(&exe, l, l.b)?;
                (run_child(&exe, l, l.a)?, b)
            };
            let units = l.work.units(l.size) as f64;
            eprintln!(
                "  {} pair {i}{}: {} {:.2} µs, {} {:.2} µs service CPU per request; ratio {:.4}; other load {:.2}/{:.2} cores",
                l.id,
                if i == 0 { " (warm-up)" } else { "" },
                l.a.arg(),
                get(&a, "service_ns") / units / 1e3,
                l.b.arg(),
                get(&b, "service_ns") / units / 1e3,
                get(&b, "service_ns") / get(&a, "service_ns"),
                get(&a, "other_cores"),
                get(&b, "other_cores"),
            );
            if i > 0 {
                runs.push((a, b));
            }
        }
        results.push((l, runs));
    }
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let load1 = loadavg();

    println!();
    println!("### The 1 % lines in CPU time ({pairs} alternating pairs per line)");
    println!();
    println!(
        "{date}; `nproc` {}; load average (1/5/15 min) {load0} at the start, {load1} at the end; {minutes:.1} min.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| line | workload | A → B | service CPU per request, A → B (mean) | ratio B/A: mean, 95 % t-interval | bootstrap 95 % | median (min–max) | wall-time ratio: mean, 95 % t-interval | other load, cores: mean / max | verdict (upper end ≤ {BOUND}) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (l, runs) in &results {
        let units = l.work.units(l.size) as f64;
        let us = |k: &dyn Fn(&(Run, Run)) -> f64| mean(&runs.iter().map(|r| k(r) / units / 1e3).collect::<Vec<_>>());
        let ratios: Vec<f64> = runs.iter().map(|(a, b)| get(b, "service_ns") / get(a, "service_ns")).collect();
        let walls: Vec<f64> = runs.iter().map(|(a, b)| get(b, "wall_s") / get(a, "wall_s")).collect();
        let (lo, hi) = t_interval(&ratios);
        let (blo, bhi) = bootstrap(&ratios);
        let (wlo, whi) = t_interval(&walls);
        let (rmin, rmax) = ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let other: Vec<f64> = runs.iter().flat_map(|(a, b)| [get(a, "other_cores"), get(b, "other_cores")]).collect();
        let upper = hi.max(bhi);
        let verdict = if upper <= BOUND {
            format!("**met** (upper end {upper:.4})")
        } else {
            format!("**not shown** (upper end {upper:.4})")
        };
        println!(
            "| {} | {} | {} → {} | {:.3} → {:.3} µs | {:.4} [{lo:.4}, {hi:.4}] | [{blo:.4}, {bhi:.4}] | {:.4} ({rmin:.4}–{rmax:.4}) | {:.4} [{wlo:.4}, {whi:.4}] | {:.2} / {:.2} | {verdict} |",
            l.budget,
            l.work.describe(l.size),
            l.a.label(),
            l.b.label(),
            us(&|r| get(&r.0, "service_ns")),
            us(&|r| get(&r.1, "service_ns")),
            mean(&ratios),
            median(&ratios),
            mean(&walls),
            mean(&other),
            other.iter().fold(0.0f64, |m, &x| m.max(x)),
        );
    }
    println!();
    println!("The same ratio split by thread group: per pair, (B − A) of one group's CPU / A's whole service CPU. The groups add up to the ratio − 1 above; the probe's threads are the part that its own work explains, the runtime threads also carry what the probe changes in the service's scheduling (and most of the noise).");
    println!();
    println!("| line | A → B | runtime threads: mean, 95 % t-interval | probe threads: mean, 95 % t-interval |");
    println!("|---|---|---|---|");
    for (l, runs) in &results {
        let share = |key: &str| -> Vec<f64> {
            runs.iter().map(|(a, b)| (get(b, key) - get(a, key)) / get(a, "service_ns")).collect()
        };
        let cell = |v: Vec<f64>| {
            let (lo, hi) = t_interval(&v);
            format!("{:+.2} % [{:+.2} %, {:+.2} %]", mean(&v) * 100.0, lo * 100.0, hi * 100.0)
        };
        println!(
            "| {} | {} → {} | {} | {} |",
            l.id,
            l.a.label(),
            l.b.label(),
            cell(share("runtime_ns")),
            cell(share("probe_ns"))
        );
    }
    println!();
    println!("Where the service's CPU went (means per request, µs; groups from `/proc/self/task/*/schedstat`, threads alive at the end of the run; \"other\" is the rest of the process: threads that exited, and any thread not named by Tokio or the probe):");
    println!();
    println!("| line | side | service | runtime threads | probe threads | other | load generator (not counted) | wall per run, mean | service, cores busy | probe threads, ms CPU per s | never-reading client |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (l, runs) in &results {
        let units = l.work.units(l.size) as f64;
        for (k, side) in [(0, l.a), (1, l.b)] {
            let col = |key: &str| {
                mean(&runs.iter().map(|r| get(if k == 0 { &r.0 } else { &r.1 }, key) / units / 1e3).collect::<Vec<_>>())
            };
            let rest = col("service_ns") - col("runtime_ns") - col("probe_ns");
            // Two clocks of the same kernel counters: a difference under 1 ns per request is noise.
            let rest = if rest.abs() < 0.001 { 0.0 } else { rest };
            let stuck = if side == Side::ProbeStuck {
                let side_runs: Vec<&Run> = runs.iter().map(|r| &r.1).collect();
                let dropping: Vec<f64> = side_runs.iter().map(|r| get(r, "stuck_dropping_ms")).collect();
                let during: Vec<f64> = side_runs.iter().map(|r| get(r, "stuck_drops_during")).collect();
                let never = dropping.iter().filter(|&&d| d < 0.0).count();
                let hup = side_runs.iter().filter(|r| get(r, "stuck_hup") > 0.0).count();
                format!(
                    "probe dropping its updates after {:.0} ms (median; {never} of {} runs never reached it); {:.0} updates dropped during a run (median); hung up by the probe in {hup} runs",
                    median(&dropping),
                    side_runs.len(),
                    median(&during)
                )
            } else {
                "—".to_string()
            };
            let side_runs: Vec<&Run> = runs.iter().map(|r| if k == 0 { &r.0 } else { &r.1 }).collect();
            let wall = mean(&side_runs.iter().map(|r| get(r, "wall_s")).collect::<Vec<_>>());
            let per_s = |key: &str| mean(&side_runs.iter().map(|r| get(r, key) / get(r, "wall_s")).collect::<Vec<_>>());
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {rest:.3} | {:.3} | {:.0} ms | {:.2} | {:.1} | {stuck} |",
                l.id,
                side.label(),
                col("service_ns"),
                col("runtime_ns"),
                col("probe_ns"),
                col("loadgen_ns"),
                wall * 1e3,
                per_s("service_ns") / 1e9,
                per_s("probe_ns") / 1e6,
            );
        }
    }
    Ok(())
}
