//! Wall-time overhead of the probe on a Tokio runtime.
//!
//! ```text
//! cargo bench -p stallscope-probe --bench overhead              # full run (~1.5 min on 2 cores)
//! cargo bench -p stallscope-probe --bench overhead -- --quick   # CI guard (a few seconds)
//! STALLSCOPE_BENCH_QUICK=1 cargo bench -p stallscope-probe --bench overhead
//! cargo bench -p stallscope-probe --bench overhead -- --diag    # + breakdown, wake-up cost (~3 min)
//! cargo bench -p stallscope-probe --bench overhead -- --spawn-only --pairs 15   # W2 and W2b only
//! cargo bench -p stallscope-probe --bench overhead -- --cpu-pairs 30   # the 1 % lines in CPU time (~30 min)
//! cargo bench -p stallscope-probe --bench overhead -- --idle    # idle cost only (~1.5 min)
//! ```
//!
//! `--cpu-pairs N` runs something else instead of the wall-time tables: the service's own CPU time
//! per request on W3 and W4 (probe vs bare) and with a client that never reads (probe + that
//! client vs probe), in N alternating pairs of child processes, with a 95 % interval of the ratio
//! (`cpu_pairs/mod.rs` says how; `--cpu-only stuck,w3,w4` picks lines, `--stuck-interval-ms M`
//! sets the never-reading line's update interval, by default the probe's 100 ms).
//!
//! Workloads, each on a fresh 2-worker multi-thread runtime per run:
//! - **W1 yield storm**: `W1_TASKS` tasks each `yield_now().await` N times; polls are counted as
//!   tasks × (yields + 1).
//! - **W2 spawn storm**: 4 spawner tasks spawn tiny tasks in batches of 1,000 and await every
//!   handle of a batch before the next.
//! - **W2b spawn storm, two spawners**: the same with 2 spawners and batches of 256, the shape the
//!   project issue (P7) measured at 1.24× and 1.27× of bare while this harness's W2 gave 1.12×
//!   (docs/benchmarks.md, "Spawn storms").
//!
//! Every run reports its wall time and this process's CPU time over the timed part
//! (`getrusage(RUSAGE_SELF)`: every thread, the probe's included). On a machine other processes
//! load, the CPU ratio moves far less than the wall ratio: waiting for a CPU is not CPU time.
//! `--spawn-only` runs only the spawn workloads.
//!
//! Configurations: `bare` (no hooks) and `probe` (probe built with its defaults, installed on the
//! builder and started; its guard is dropped after the run). They run in alternation (bare,
//! probe, bare, probe, ...) in one process after one warm-up round, and the ratios and
//! differences are taken per pair, so drift on the machine hits both sides alike. Only the
//! workload is timed: building the probe and the runtime, and shutting them down, are not.
//!
//! Each run also notes how many cores other processes kept busy meanwhile (from `/proc/stat`,
//! Linux only): on a 2-core machine, any other load lands on the measured workers.
//!
//! Also measured: the cost of the poll hooks alone (an `instrument`ed future polled in a tight
//! loop on one thread, with and without a running probe). With `--diag`, both workloads are run
//! again with two more setups: empty Tokio hooks (Tokio's own cost of calling hooks) and the
//! probe installed but not started (its hooks without its threads), and the CPU cost of one
//! wake-up of a thread that only sleeps is measured. Every run also records what this process's
//! threads did (CPU, times on CPU, preemptions), printed per setup.
//!
//! `--idle` measures something else: what the probe costs a service that does nothing. A 2-worker
//! runtime with one task waiting forever runs for `--idle-secs` (10) seconds, bare and probed in
//! alternation (`--pairs`, default 3 with `--idle`), after one warm-up pair; the process's CPU
//! time (`getrusage`) over that span, per second, is the figure, probed minus bare. It also
//! prints what each thread group used and how often the watchdog woke (`SamplerStats`).
//!
//! Quick mode exits with status 1 when the median probe/bare ratio on W1 exceeds
//! [`QUICK_MAX_W1_RATIO`]. Run without `--bench` (as `cargo test --benches` does), the binary
//! only smoke-runs each workload once at a tiny size and times nothing, whatever the quick
//! switches say: no timing is ever asserted under `cargo test`.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use stallscope_probe::Probe;

mod cpu_pairs;
#[path = "shared/machine.rs"]
mod machine;
use machine::{cpu_ticks, CpuTicks};

/// Workers of every measured runtime (the budget is stated for a 2-worker yield storm).
const WORKERS: usize = 2;
/// W1 tasks by default. With few tasks (64 was the first choice) the two workers keep running out
/// of local work: they steal, park and wake each other, bare W1 costs ~95 ns per poll here instead
/// of the ~30 ns the project's reference machine reports, and that cross-core churn, not the
/// polls, dominates the figure. From a few hundred tasks on, bare W1 is CPU-bound at ~45 ns per
/// poll on this machine (docs/benchmarks.md). `--w1-tasks N` runs another count.
const W1_TASKS: u64 = 1_000;
/// Tasks spawning in W2.
const W2_SPAWNERS: u64 = 4;
/// Handles a W2 spawner holds before awaiting them.
const W2_BATCH: u64 = 1_000;
/// Tasks spawning in W2b.
const W2B_SPAWNERS: u64 = 2;
/// Handles a W2b spawner holds before awaiting them.
const W2B_BATCH: u64 = 256;
/// Quick-mode guard (CI) on the median W1 probe/bare wall-time ratio. The probe measures about
/// 1.10 here; the median of 21 quick pairs stayed within 1.12–1.16 even while two builds loaded
/// the machine (individual pairs 0.75–1.5), so 1.5 does not flake, and it catches the regressions that matter: the first poll path
/// (a clock read at both ends of every poll) added +36 ns per poll, about 1.6x this W1's 61 ns bare,
/// and the project's reference puts `Instant::now()` twice with shared counters at 2.04x
/// (docs/benchmarks.md).
const QUICK_MAX_W1_RATIO: f64 = 1.5;
/// Other processes' mean load (cores) above which a workload's figures are flagged as disturbed.
const DISTURBED_CORES: f64 = 0.1;

#[derive(Clone, Copy, Debug)]
struct Plan {
    quick: bool,
    pairs: usize,
    w1_tasks: u64,
    w1_yields: u64,
    w2_tasks: u64,
    hook_iters: u64,
    hook_rounds: usize,
}

impl Plan {
    fn full() -> Plan {
        // 1_000 × (19_999 + 1) = 20_000_000 polls per W1 run.
        Plan {
            quick: false,
            pairs: 11,
            w1_tasks: W1_TASKS,
            w1_yields: 19_999,
            w2_tasks: 1_000_000,
            hook_iters: 20_000_000,
            hook_rounds: 11,
        }
    }

    fn quick() -> Plan {
        // 1_000 × 1_000 = 1_000_000 polls per W1 run.
        Plan {
            quick: true,
            pairs: 21,
            w1_tasks: W1_TASKS,
            w1_yields: 999,
            w2_tasks: 100_000,
            hook_iters: 2_000_000,
            hook_rounds: 3,
        }
    }

    fn w1_polls(&self) -> u64 {
        self.w1_tasks * (self.w1_yields + 1)
    }

    fn mode(&self) -> &'static str {
        if self.quick {
            "quick"
        } else {
            "full"
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// No hooks.
    Bare,
    /// The probe with its defaults, installed and started.
    Probe,
    /// Tokio hooks that do nothing: what Tokio itself charges for calling hooks. (Without
    /// `tokio_unstable` there are no hooks and this is the same as `Bare`.)
    EmptyHooks,
    /// The probe installed but not started: its hooks without its threads.
    HooksOnly,
    /// The probe with `schedule_latency(true)`: Tokio's own schedule-latency tracking on top.
    ProbeScheduleLatency,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bare => "bare",
            Setup::Probe => "probe",
            Setup::EmptyHooks => "empty hooks",
            Setup::HooksOnly => "installed, not started",
            Setup::ProbeScheduleLatency => "probe + schedule latency",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    YieldStorm {
        tasks: u64,
        yields: u64,
    },
    /// `tasks` in all, from `spawners` tasks, each awaiting its `batch` handles before the next.
    SpawnStorm {
        tasks: u64,
        spawners: u64,
        batch: u64,
    },
}

// === workloads ===

async fn yield_storm(tasks: u64, yields: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            tokio::spawn(async move {
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

async fn spawn_storm(tasks: u64, spawners: u64, batch_len: u64) -> Duration {
    let start = Instant::now();
    let per_spawner = tasks / spawners;
    let spawners: Vec<_> = (0..spawners)
        .map(|s| {
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(batch_len as usize);
                let mut sum = 0u64;
                let mut i = 0;
                while i < per_spawner {
                    let n = batch_len.min(per_spawner - i);
                    for j in i..i + n {
                        batch.push(tokio::spawn(async move { black_box(s ^ j) }));
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

// === other load on the machine ===

/// Cores kept busy by other processes (and the hypervisor) between two readings `secs` apart.
fn other_cores(a: Option<CpuTicks>, b: Option<CpuTicks>, secs: f64) -> Option<f64> {
    machine::cores(a, b, secs).map(|(other, _)| other)
}

// === runs ===

/// CPU time (user + system) of every thread of this process so far, seconds.
fn process_cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// One run's wall time, the other load meanwhile, and what this process's threads did.
#[derive(Clone, Debug)]
struct Run {
    secs: f64,
    /// This process's CPU time over the timed part (`getrusage`), seconds.
    cpu_secs: f64,
    other: Option<f64>,
    threads: Vec<ThreadUse>,
    /// Spawn/terminate events the probe dropped (full rings), read after the run.
    events_dropped: Option<u64>,
    /// What the scheduler did during the run (`tokio_unstable` metrics), summed over workers.
    sched: Sched,
}

/// Scheduler counters over a run, summed over the workers: what a workload asks of Tokio
/// besides polls (the two spawn storms differ here, docs/benchmarks.md, "Spawn storms").
#[derive(Clone, Copy, Debug, Default)]
struct Sched {
    /// Times a worker parked.
    parks: u64,
    /// Times a worker unparked and found nothing to do.
    noops: u64,
    /// Steal operations, and tasks they moved.
    steal_ops: u64,
    stolen: u64,
}

#[cfg(tokio_unstable)]
fn sched(rt: &tokio::runtime::Runtime) -> Sched {
    let m = rt.metrics();
    let mut s = Sched::default();
    for w in 0..m.num_workers() {
        s.parks += m.worker_park_count(w);
        s.noops += m.worker_noop_count(w);
        s.steal_ops += m.worker_steal_operations(w);
        s.stolen += m.worker_steal_count(w);
    }
    s
}

#[cfg(not(tokio_unstable))]
fn sched(_rt: &tokio::runtime::Runtime) -> Sched {
    Sched::default()
}

impl Sched {
    fn since(self, b: Sched) -> Sched {
        Sched {
            parks: self.parks - b.parks,
            noops: self.noops - b.noops,
            steal_ops: self.steal_ops - b.steal_ops,
            stolen: self.stolen - b.stolen,
        }
    }
}

// === this process's threads ===

/// What a group of this process's threads (by name) did during a run, from
/// `/proc/self/task/*/schedstat` and `status` (Linux only).
#[derive(Clone, Debug, Default)]
struct ThreadUse {
    name: String,
    /// CPU time, nanoseconds.
    run_ns: u64,
    /// Times the threads were put on a CPU (wake-ups and preemption returns).
    slices: u64,
    /// Times the threads were preempted (involuntary context switches).
    preempted: u64,
}

/// Per thread id: (group name, run ns, timeslices, involuntary switches).
fn thread_table() -> std::collections::HashMap<u64, (String, u64, u64, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else { continue };
        let path = e.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        // Tokio names its workers and blocking threads alike; the probe names each thread.
        let name = if comm.starts_with("stallscope-") {
            comm.to_string()
        } else if comm.starts_with("tokio-") {
            "runtime threads".to_string()
        } else {
            "other".to_string()
        };
        let sched = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut f = sched.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
        let (run, _wait, slices) = (f.next().unwrap_or(0), f.next(), f.next().unwrap_or(0));
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let preempted = status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.insert(tid, (name, run, slices, preempted));
    }
    out
}

/// What each group of threads did between two tables.
fn thread_use(
    before: &std::collections::HashMap<u64, (String, u64, u64, u64)>,
    after: &std::collections::HashMap<u64, (String, u64, u64, u64)>,
) -> Vec<ThreadUse> {
    let mut groups: std::collections::BTreeMap<String, ThreadUse> = std::collections::BTreeMap::new();
    for (tid, (name, run, slices, pre)) in after {
        let (b_run, b_slices, b_pre) = before.get(tid).map_or((0, 0, 0), |b| (b.1, b.2, b.3));
        let g = groups.entry(name.clone()).or_insert_with(|| ThreadUse { name: name.clone(), ..ThreadUse::default() });
        g.run_ns += run.saturating_sub(b_run);
        g.slices += slices.saturating_sub(b_slices);
        g.preempted += pre.saturating_sub(b_pre);
    }
    groups.into_values().collect()
}

/// One timed run on a fresh runtime. Building and tearing down are not timed.
fn run_once(setup: Setup, work: Workload) -> Run {
    let probe = matches!(setup, Setup::Probe | Setup::HooksOnly | Setup::ProbeScheduleLatency).then(|| {
        Probe::builder()
            .schedule_latency(setup == Setup::ProbeScheduleLatency)
            .build()
            .expect("probe with default settings")
    });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(WORKERS).enable_all();
    if let Some(p) = &probe {
        p.install(&mut builder);
    }
    #[cfg(tokio_unstable)]
    if setup == Setup::EmptyHooks {
        builder.on_task_spawn(|_| {}).on_task_terminate(|_| {}).on_before_task_poll(|_| {}).on_after_task_poll(|_| {});
    }
    let rt = builder.build().expect("runtime");
    let guard = probe
        .as_ref()
        .filter(|_| matches!(setup, Setup::Probe | Setup::ProbeScheduleLatency))
        .map(|p| p.start(rt.handle()));
    let before = cpu_ticks();
    let threads_before = thread_table();
    let sched_before = sched(&rt);
    let cpu_before = process_cpu_secs();
    let elapsed = rt.block_on(async move {
        match work {
            Workload::YieldStorm { tasks, yields } => yield_storm(tasks, yields).await,
            Workload::SpawnStorm { tasks, spawners, batch } => spawn_storm(tasks, spawners, batch).await,
        }
    });
    // The workload's end as the spawners see it; the probe's threads may still be draining, which
    // is counted in the next reading (the run's teardown is not timed).
    let cpu_secs = process_cpu_secs() - cpu_before;
    let sched = sched(&rt).since(sched_before);
    let secs = elapsed.as_secs_f64();
    let threads = thread_use(&threads_before, &thread_table());
    let other = other_cores(before, cpu_ticks(), secs);
    // Untimed: drain what is left and count what the rings could not hold.
    let events_dropped =
        guard.as_ref().and(probe.as_ref()).and_then(|p| p.refresh(Duration::from_secs(5))).map(|s| s.drops.task_events);
    drop(guard);
    drop(rt);
    Run { secs, cpu_secs, other, threads, events_dropped, sched }
}

/// Results of one workload: `runs[k][i]` is setup `k`'s run in round `i`.
struct Rounds {
    setups: Vec<Setup>,
    runs: Vec<Vec<Run>>,
}

/// One warm-up round, then `rounds` rounds running each setup once, in order.
fn measure(name: &str, work: Workload, setups: &[Setup], rounds: usize) -> Rounds {
    for &s in setups {
        run_once(s, work);
    }
    let mut runs = vec![Vec::new(); setups.len()];
    for i in 0..rounds {
        let mut line = format!("  {name} round {}/{rounds}:", i + 1);
        for (k, &s) in setups.iter().enumerate() {
            let r = run_once(s, work);
            line += &format!(" {} {:.1} ms (CPU {:.1} ms)", s.name(), r.secs * 1e3, r.cpu_secs * 1e3);
            if let Some(o) = r.other {
                line += &format!(" (other load {o:.2} cores)");
            }
            runs[k].push(r);
        }
        eprintln!("{line}");
    }
    Rounds { setups: setups.to_vec(), runs }
}

// === statistics ===

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

impl Rounds {
    fn secs(&self, k: usize) -> Vec<f64> {
        self.runs[k].iter().map(|r| r.secs).collect()
    }

    /// Per-round ratio of setup `k` to setup 0.
    fn ratios(&self, k: usize) -> Vec<f64> {
        self.secs(k).iter().zip(self.secs(0)).map(|(t, b)| t / b).collect()
    }

    fn cpu_secs(&self, k: usize) -> Vec<f64> {
        self.runs[k].iter().map(|r| r.cpu_secs).collect()
    }

    /// Per-round ratio of setup `k`'s process CPU time to setup 0's.
    fn cpu_ratios(&self, k: usize) -> Vec<f64> {
        self.cpu_secs(k).iter().zip(self.cpu_secs(0)).map(|(t, b)| t / b).collect()
    }

    /// Per-round added nanoseconds per unit of work, setup `k` against setup 0.
    fn added_ns(&self, k: usize, units: u64) -> Vec<f64> {
        self.secs(k).iter().zip(self.secs(0)).map(|(t, b)| (t - b) * 1e9 / units as f64).collect()
    }

    /// Mean (weighted by run time) and max of the other load over every run, if it could be
    /// read. A single short run's figure is coarse (100 ticks per second); the mean is not.
    fn other_load(&self) -> Option<(f64, f64)> {
        let runs = self.runs.iter().flatten();
        let v: Option<Vec<(f64, f64)>> = runs.map(|r| Some((r.other?, r.secs))).collect();
        let v = v?;
        let secs: f64 = v.iter().map(|(_, s)| s).sum();
        let mean = v.iter().map(|(o, s)| o * s).sum::<f64>() / secs;
        Some((mean, v.iter().fold(0.0, |m, (o, _)| o.max(m))))
    }
}

// === hook cost in isolation ===

/// A future that is never ready and does almost nothing.
struct Spin(u64);

impl Future for Spin {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        self.0 = black_box(self.0.wrapping_add(1));
        Poll::Pending
    }
}

/// Nanoseconds per poll of an `instrument`ed future polled `iters` times in a loop on this
/// thread, inside `rt`'s context (so `instrument` finds the probe started on `rt`, if any).
fn instrumented_poll_ns(rt: &tokio::runtime::Runtime, iters: u64) -> f64 {
    let _enter = rt.enter();
    let mut fut = pin!(stallscope_probe::instrument(Spin(0)));
    let mut cx = Context::from_waker(Waker::noop());
    // The first poll resolves the probe; keep it out of the timing.
    let _ = fut.as_mut().poll(&mut cx);
    let start = Instant::now();
    for _ in 0..iters {
        let _ = black_box(fut.as_mut().poll(&mut cx));
    }
    start.elapsed().as_secs_f64() * 1e9 / iters as f64
}

/// (without probe, with probe) ns per poll, per alternating round.
fn hook_cost(iters: u64, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let current = || {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        b
    };
    let bare = current().build().expect("runtime");
    let probe = Probe::builder().build().expect("probe with default settings");
    let mut b = current();
    probe.install(&mut b);
    let probed = b.build().expect("runtime");
    let guard = probe.start(probed.handle());
    instrumented_poll_ns(&bare, iters / 10);
    instrumented_poll_ns(&probed, iters / 10);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        without.push(instrumented_poll_ns(&bare, iters));
        with.push(instrumented_poll_ns(&probed, iters));
    }
    drop(guard);
    (without, with)
}

// === what a wake-up costs ===

/// CPU time per wake-up (µs) of a thread that only sleeps `period` in a loop for `secs`, while
/// `busy` other threads spin: what any periodic probe thread pays before it does any work, and
/// takes from a worker when the cores are busy. From the thread's own `schedstat` (Linux).
fn wake_up_cost(period: Duration, busy: usize, secs: f64) -> Option<f64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..busy)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = black_box(x.wrapping_mul(31).wrapping_add(1));
                }
            })
        })
        .collect();
    let sleeper = std::thread::spawn(move || {
        let run_ns = || -> Option<u64> {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            s.split_whitespace().next()?.parse().ok()
        };
        let before = run_ns()?;
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            std::thread::sleep(period);
            n += 1;
        }
        Some((run_ns()? - before) as f64 / 1e3 / n as f64)
    });
    let out = sleeper.join().ok().flatten();
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    out
}

// === output ===

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

fn print_table(workloads: &[(&str, String, &Rounds, u64, &str)]) {
    let base = workloads[0].2.setups[0].name();
    println!(
        "| workload | work per run | setup | rounds | median wall | ratio to {base}: median (min–max) | ns per unit | added ns per unit vs {base}: median (min to max) | median CPU | CPU ratio to {base}: median (min–max) | other load, cores: mean / max run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, size, r, units, unit) in workloads {
        let load = match r.other_load() {
            Some((m, x)) => format!("{m:.2} / {x:.2}"),
            None => "n/a".to_string(),
        };
        for (k, s) in r.setups.iter().enumerate() {
            let secs = r.secs(k);
            let per = median(&secs) * 1e9 / *units as f64;
            let cpu = median(&r.cpu_secs(k));
            let cpu_ratio = if k == 0 {
                "—".to_string()
            } else {
                let c = r.cpu_ratios(k);
                let (lo, hi) = min_max(&c);
                format!("{:.3} ({lo:.3}–{hi:.3})", median(&c))
            };
            let (ratio, added) = if k == 0 {
                ("—".to_string(), "—".to_string())
            } else {
                let ratios = r.ratios(k);
                let (lo, hi) = min_max(&ratios);
                let add = r.added_ns(k, *units);
                let (alo, ahi) = min_max(&add);
                (
                    format!("{:.3} ({lo:.3}–{hi:.3})", median(&ratios)),
                    format!("{:+.1} ({alo:+.1} to {ahi:+.1})", median(&add)),
                )
            };
            let (l, z, ld) = if k == 0 { (*label, size.as_str(), load.as_str()) } else { ("", "", "") };
            println!(
                "| {l} | {z} | {} | {} | {} | {ratio} | {per:.1} ns/{unit} | {added} | {} | {cpu_ratio} | {ld} |",
                s.name(),
                secs.len(),
                ms(median(&secs)),
                ms(cpu),
            );
        }
    }
}

/// What this process's threads did per second of run, summed over every run of each setup.
fn print_threads(workloads: &[(&str, &Rounds)]) {
    println!("| workload | setup | threads | CPU, ms per s of run | on CPU, times per s | preempted, times per s |");
    println!("|---|---|---|---|---|---|");
    let mut dropped = Vec::new();
    for (label, r) in workloads {
        for (k, s) in r.setups.iter().enumerate() {
            let secs: f64 = r.runs[k].iter().map(|x| x.secs).sum();
            let mut groups: std::collections::BTreeMap<&str, (u64, u64, u64)> = std::collections::BTreeMap::new();
            for t in r.runs[k].iter().flat_map(|x| &x.threads) {
                let g = groups.entry(&t.name).or_default();
                g.0 += t.run_ns;
                g.1 += t.slices;
                g.2 += t.preempted;
            }
            for (name, (run, slices, pre)) in groups {
                println!(
                    "| {label} | {} | {name} | {:.2} | {:.0} | {:.0} |",
                    s.name(),
                    run as f64 / 1e6 / secs,
                    slices as f64 / secs,
                    pre as f64 / secs
                );
            }
            let d: Vec<f64> = r.runs[k].iter().filter_map(|x| x.events_dropped).map(|d| d as f64).collect();
            if !d.is_empty() {
                let (_, hi) = min_max(&d);
                dropped.push(format!("{label} {}: median {:.0}, max {hi:.0}", s.name(), median(&d)));
            }
        }
    }
    if !dropped.is_empty() {
        println!();
        println!("Task events dropped by the probe per run (full rings): {}.", dropped.join("; "));
    }
}

// === idle cost (`--idle`) ===

/// Process CPU time so far (user + system, all threads), from `getrusage`.
fn process_cpu() -> Duration {
    // SAFETY: `usage` is a valid, writable rusage struct for the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF needs nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One idle run: CPU per second of the whole process, what its threads did, and the watchdog's
/// wake-ups and deep sleeps in the span.
struct IdleRun {
    cpu_ms_per_s: f64,
    threads: Vec<ThreadUse>,
    wakes: Option<(u64, u64)>,
}

/// A 2-worker runtime (bare or with the probe started) with one task that waits forever, left
/// alone for `secs` after a 1 s settle (the probe's threads start, the heartbeat backs off).
fn idle_once(with_probe: bool, secs: f64) -> IdleRun {
    let probe = with_probe.then(|| Probe::builder().build().expect("probe with default settings"));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(WORKERS).enable_all();
    if let Some(p) = &probe {
        p.install(&mut builder);
    }
    let rt = builder.build().expect("runtime");
    let guard = probe.as_ref().map(|p| p.start(rt.handle()));
    // A service waiting for work: one task that is never woken.
    rt.spawn(std::future::pending::<()>());
    std::thread::sleep(Duration::from_secs(1));
    let stats = |p: &Probe| {
        let s = p.sampler_stats();
        (s.watchdog_wakes, s.watchdog_deep_sleeps)
    };
    let wakes_before = probe.as_ref().map(stats);
    let threads_before = thread_table();
    let cpu_before = process_cpu();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cpu = process_cpu().saturating_sub(cpu_before);
    let elapsed = start.elapsed().as_secs_f64();
    let threads = thread_use(&threads_before, &thread_table());
    let wakes = probe.as_ref().map(stats).zip(wakes_before).map(|(a, b)| (a.0 - b.0, a.1 - b.1));
    drop(guard);
    drop(rt);
    IdleRun { cpu_ms_per_s: cpu.as_secs_f64() * 1e3 / elapsed, threads, wakes }
}

/// `--idle`: the probe's cost to a service that does nothing (docs/benchmarks.md, "Idle cost").
fn idle_cost(pairs: usize, secs: f64) {
    eprintln!("overhead --idle: {pairs} pairs of {secs} s idle runs, {WORKERS} workers");
    idle_once(false, 1.0);
    idle_once(true, 1.0);
    let mut runs: [Vec<IdleRun>; 2] = [Vec::new(), Vec::new()];
    for i in 0..pairs {
        for (k, with_probe) in [false, true].into_iter().enumerate() {
            let r = idle_once(with_probe, secs);
            eprintln!("  idle pair {}/{pairs}: {} {:.3} ms CPU per s", i + 1, ["bare", "probe"][k], r.cpu_ms_per_s);
            runs[k].push(r);
        }
    }
    let cpu = |k: usize| runs[k].iter().map(|r| r.cpu_ms_per_s).collect::<Vec<_>>();
    let added: Vec<f64> = cpu(1).iter().zip(cpu(0)).map(|(p, b)| p - b).collect();
    println!();
    println!("### idle cost ({WORKERS} workers, one task waiting forever, {pairs} pairs of {secs} s, process CPU from getrusage)");
    println!();
    println!("| setup | CPU, ms per s: median (min to max) | % of a core |");
    println!("|---|---|---|");
    for (k, name) in ["bare", "probe"].into_iter().enumerate() {
        let (lo, hi) = min_max(&cpu(k));
        println!("| {name} | {:.3} ({lo:.3} to {hi:.3}) | {:.3} % |", median(&cpu(k)), median(&cpu(k)) / 10.0);
    }
    let (lo, hi) = min_max(&added);
    println!(
        "| probe − bare (per pair) | {:.3} ({lo:.3} to {hi:.3}) | {:.3} % |",
        median(&added),
        median(&added) / 10.0
    );
    println!();
    println!("| setup | threads | CPU, ms per s | on CPU, times per s |");
    println!("|---|---|---|---|");
    for (k, name) in ["bare", "probe"].into_iter().enumerate() {
        let mut groups: std::collections::BTreeMap<&str, (u64, u64)> = std::collections::BTreeMap::new();
        for t in runs[k].iter().flat_map(|r| &r.threads) {
            let g = groups.entry(&t.name).or_default();
            g.0 += t.run_ns;
            g.1 += t.slices;
        }
        let total = secs * runs[k].len() as f64;
        for (thread, (run, slices)) in groups {
            println!("| {name} | {thread} | {:.3} | {:.1} |", run as f64 / 1e6 / total, slices as f64 / total);
        }
    }
    let wakes: Vec<(u64, u64)> = runs[1].iter().filter_map(|r| r.wakes).collect();
    if !wakes.is_empty() {
        let total = secs * wakes.len() as f64;
        let (w, d) = wakes.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        println!();
        println!(
            "Watchdog (`SamplerStats`): {:.1} wake-ups per s, {:.1} deep sleeps per s.",
            w as f64 / total,
            d as f64 / total
        );
    }
}

fn smoke() {
    // `cargo test --benches` runs this binary without `--bench`: check that everything runs, but
    // time nothing and assert nothing about time.
    for setup in [Setup::Bare, Setup::Probe, Setup::EmptyHooks, Setup::HooksOnly, Setup::ProbeScheduleLatency] {
        run_once(setup, Workload::YieldStorm { tasks: 64, yields: 10 });
        run_once(setup, Workload::SpawnStorm { tasks: 100, spawners: W2_SPAWNERS, batch: W2_BATCH });
        run_once(setup, Workload::SpawnStorm { tasks: 100, spawners: W2B_SPAWNERS, batch: W2B_BATCH });
    }
    hook_cost(1_000, 1);
    wake_up_cost(Duration::from_millis(1), 1, 0.01);
    let smoke =
        cpu_pairs::Options { pairs: 1, only: Vec::new(), stuck_interval_ms: cpu_pairs::STUCK_INTERVAL_MS, smoke: true };
    if let Err(e) = cpu_pairs::run(&smoke) {
        panic!("cpu pairs smoke run: {e}");
    }
    idle_once(true, 0.01);
    println!("overhead: smoke run only (pass --bench, as `cargo bench` does, to measure)");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // One timed run for `--cpu-pairs`, in a child process of its own (cpu_pairs/mod.rs).
    if args.first().map(String::as_str) == Some("--cpu-child") {
        return match cpu_pairs::child(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return ExitCode::SUCCESS;
    }
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    // `--cpu-pairs N`: the 1 % lines in CPU time instead of the wall-time tables.
    if let Some(pairs) = value("--cpu-pairs").and_then(|v| v.parse().ok()) {
        let only = value("--cpu-only").map_or(Vec::new(), |v| v.split(',').map(str::to_string).collect());
        let stuck_interval_ms =
            value("--stuck-interval-ms").and_then(|v| v.parse().ok()).unwrap_or(cpu_pairs::STUCK_INTERVAL_MS);
        let o = cpu_pairs::Options { pairs, only, stuck_interval_ms, smoke: false };
        return match cpu_pairs::run(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let env_quick = std::env::var("STALLSCOPE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut plan = if env_quick || args.iter().any(|a| a == "--quick") { Plan::quick() } else { Plan::full() };
    // `--pairs N`: more alternating pairs for a steadier median on a noisy machine.
    if let Some(n) = args.iter().position(|a| a == "--pairs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
    {
        plan.pairs = n;
    }
    // `--w1-tasks N`: W1 with another task count (the polls per run stay about the same).
    if let Some(n) =
        args.iter().position(|a| a == "--w1-tasks").and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
    {
        let polls = plan.w1_polls();
        plan.w1_tasks = n.max(1);
        plan.w1_yields = (polls / plan.w1_tasks).max(1) - 1;
    }
    let diag = args.iter().any(|a| a == "--diag");
    if args.iter().any(|a| a == "--spawn-only") {
        return spawn_only(&plan, diag);
    }
    if args.iter().any(|a| a == "--idle") {
        let pairs = args.iter().position(|a| a == "--pairs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
        let secs =
            args.iter().position(|a| a == "--idle-secs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
        idle_cost(pairs.unwrap_or(3), secs.unwrap_or(10.0));
        return ExitCode::SUCCESS;
    }
    if !cfg!(tokio_unstable) {
        eprintln!("warning: built without --cfg tokio_unstable: the probe installs no task hooks");
    }
    eprintln!("overhead: {} mode, {WORKERS} workers, {} rounds per workload", plan.mode(), plan.pairs);

    let w1_polls = plan.w1_polls();
    let w1_work = Workload::YieldStorm { tasks: plan.w1_tasks, yields: plan.w1_yields };
    let w1 = measure("W1", w1_work, &[Setup::Bare, Setup::Probe], plan.pairs);
    let w2_work = Workload::SpawnStorm { tasks: plan.w2_tasks, spawners: W2_SPAWNERS, batch: W2_BATCH };
    let w2 = measure("W2", w2_work, &[Setup::Bare, Setup::Probe], plan.pairs);
    let w2b_work = Workload::SpawnStorm { tasks: plan.w2_tasks, spawners: W2B_SPAWNERS, batch: W2B_BATCH };
    let w2b = measure("W2b", w2b_work, &[Setup::Bare, Setup::Probe], plan.pairs);
    let (hook_bare, hook_probe) = hook_cost(plan.hook_iters, plan.hook_rounds);
    let breakdown = diag.then(|| {
        let mut setups = vec![Setup::Bare];
        if cfg!(tokio_unstable) {
            setups.push(Setup::EmptyHooks);
        }
        setups.extend([Setup::HooksOnly, Setup::Probe]);
        if cfg!(tokio_unstable) {
            setups.push(Setup::ProbeScheduleLatency);
        }
        let w1 = measure("W1 breakdown", w1_work, &setups, plan.pairs);
        let w2 = measure("W2 breakdown", w2_work, &setups, plan.pairs);
        (w1, w2)
    });

    let w1_size = format!("{} tasks × {} yields = {w1_polls} polls", plan.w1_tasks, plan.w1_yields);
    let w2_size = format!("{} tasks from {W2_SPAWNERS} spawners, batches of {W2_BATCH}", plan.w2_tasks);
    let w2b_size = format!("{} tasks from {W2B_SPAWNERS} spawners, batches of {W2B_BATCH}", plan.w2_tasks);
    println!();
    println!("### probe vs bare ({WORKERS} workers, wall time, {} mode)", plan.mode());
    println!();
    print_table(&[
        ("W1 yield storm", w1_size.clone(), &w1, w1_polls, "poll"),
        ("W2 spawn storm", w2_size.clone(), &w2, plan.w2_tasks, "task"),
        ("W2b spawn storm, 2 spawners", w2b_size, &w2b, plan.w2_tasks, "task"),
    ]);
    if let Some((b1, b2)) = &breakdown {
        println!();
        println!("### breakdown ({WORKERS} workers, wall time, {} mode)", plan.mode());
        println!();
        print_table(&[
            ("W1 yield storm", w1_size, b1, w1_polls, "poll"),
            ("W2 spawn storm", w2_size, b2, plan.w2_tasks, "task"),
        ]);
    }
    println!();
    println!("### threads during the runs (`/proc/self/task`, totals over every run / total run time)");
    println!();
    let mut thread_rows = vec![("W1", &w1), ("W2", &w2), ("W2b", &w2b)];
    if let Some((b1, _)) = &breakdown {
        thread_rows.push(("W1 breakdown", b1));
    }
    print_threads(&thread_rows);
    if diag {
        println!();
        println!("### what a wake-up costs (a thread sleeping 1.25 ms in a loop for 3 s, CPU per wake-up)");
        println!();
        println!("| other threads spinning | CPU per wake-up |");
        println!("|---|---|");
        for busy in [0, WORKERS] {
            let cost = wake_up_cost(Duration::from_micros(1250), busy, 3.0);
            let cost = cost.map_or("n/a".to_string(), |c| format!("{c:.1} µs"));
            println!("| {busy} | {cost} |");
        }
    }
    let added: Vec<f64> = hook_probe.iter().zip(&hook_bare).map(|(p, b)| p - b).collect();
    let (alo, ahi) = min_max(&added);
    println!();
    println!(
        "### poll hooks in isolation (one thread, `instrument`ed never-ready future, {} polls × {} rounds)",
        plan.hook_iters, plan.hook_rounds
    );
    println!();
    println!("| without probe | with probe | added per poll: median (min to max) |");
    println!("|---|---|---|");
    println!(
        "| {:.1} ns/poll | {:.1} ns/poll | {:+.1} ({alo:+.1} to {ahi:+.1}) ns |",
        median(&hook_bare),
        median(&hook_probe),
        median(&added),
    );

    println!();
    let mut all = vec![&w1, &w2, &w2b];
    if let Some((b1, b2)) = &breakdown {
        all.extend([b1, b2]);
    }
    let disturbed = all.iter().filter_map(|r| r.other_load()).any(|(mean, _)| mean > DISTURBED_CORES);
    if disturbed {
        println!(
            "note: other processes kept more than {DISTURBED_CORES} cores busy on average during the runs; figures are disturbed"
        );
    }
    let w1_ratio = median(&w1.ratios(1));
    if plan.quick {
        if w1_ratio > QUICK_MAX_W1_RATIO {
            println!("FAIL: W1 median probe/bare ratio {w1_ratio:.3} exceeds {QUICK_MAX_W1_RATIO}");
            return ExitCode::FAILURE;
        }
        println!("ok: W1 median probe/bare ratio {w1_ratio:.3} <= {QUICK_MAX_W1_RATIO}");
    }
    ExitCode::SUCCESS
}

/// `--spawn-only`: W2 and W2b, alternating bare/probe pairs (with `--diag`, also four empty hooks
/// and the probe installed but not started), wall and CPU ratios, the threads' table and the drops.
fn spawn_only(plan: &Plan, diag: bool) -> ExitCode {
    let mut setups = vec![Setup::Bare, Setup::Probe];
    if diag {
        setups.extend([Setup::EmptyHooks, Setup::HooksOnly]);
    }
    eprintln!("overhead: spawn storms only, {} mode, {WORKERS} workers, {} pairs", plan.mode(), plan.pairs);
    let w2_work = Workload::SpawnStorm { tasks: plan.w2_tasks, spawners: W2_SPAWNERS, batch: W2_BATCH };
    let w2b_work = Workload::SpawnStorm { tasks: plan.w2_tasks, spawners: W2B_SPAWNERS, batch: W2B_BATCH };
    // Interleaved W2 and W2b rounds would change each other's warm state; one after the other, the
    // pairs inside each still alternate.
    let w2 = measure("W2", w2_work, &setups, plan.pairs);
    let w2b = measure("W2b", w2b_work, &setups, plan.pairs);
    let w2_size = format!("{} tasks from {W2_SPAWNERS} spawners, batches of {W2_BATCH}", plan.w2_tasks);
    let w2b_size = format!("{} tasks from {W2B_SPAWNERS} spawners, batches of {W2B_BATCH}", plan.w2_tasks);
    println!();
    println!("### spawn storms, probe vs bare ({WORKERS} workers, wall and process CPU time, {} mode)", plan.mode());
    println!();
    print_table(&[
        ("W2 spawn storm", w2_size, &w2, plan.w2_tasks, "task"),
        ("W2b spawn storm, 2 spawners", w2b_size, &w2b, plan.w2_tasks, "task"),
    ]);
    println!();
    println!("### threads during the runs (`/proc/self/task`, totals over every run / total run time)");
    println!();
    print_threads(&[("W2", &w2), ("W2b", &w2b)]);
    println!();
    println!("### scheduler per 1,000 tasks (Tokio's worker metrics, summed over workers; median of the runs)");
    println!();
    println!("| workload | setup | parks | no-op unparks | steal operations | tasks stolen |");
    println!("|---|---|---|---|---|---|");
    for (label, r) in [("W2", &w2), ("W2b", &w2b)] {
        for (k, s) in r.setups.iter().enumerate() {
            let per = |f: fn(&Sched) -> u64| {
                median(&r.runs[k].iter().map(|x| f(&x.sched) as f64 * 1e3 / plan.w2_tasks as f64).collect::<Vec<_>>())
            };
            println!(
                "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.1} |",
                s.name(),
                per(|x| x.parks),
                per(|x| x.noops),
                per(|x| x.steal_ops),
                per(|x| x.stolen)
            );
        }
    }
    println!();
    if [&w2, &w2b].iter().filter_map(|r| r.other_load()).any(|(mean, _)| mean > DISTURBED_CORES) {
        println!(
            "note: other processes kept more than {DISTURBED_CORES} cores busy on average during the runs; wall figures are disturbed (CPU ratios less so)"
        );
    }
    ExitCode::SUCCESS
}
