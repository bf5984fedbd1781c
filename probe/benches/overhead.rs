//! Wall-time overhead of the probe on a Tokio runtime.
//!
//! ```text
//! cargo bench -p stallscope-probe --bench overhead              # full run (~1-2 min)
//! cargo bench -p stallscope-probe --bench overhead -- --quick   # CI guard (a few seconds)
//! STALLSCOPE_BENCH_QUICK=1 cargo bench -p stallscope-probe --bench overhead
//! ```
//!
//! Workloads, each on a fresh 2-worker multi-thread runtime per run:
//! - **W1 yield storm**: `W1_TASKS` tasks each `yield_now().await` N times; polls are counted as
//!   tasks × (yields + 1).
//! - **W2 spawn storm**: a few spawner tasks spawn tiny tasks in batches and await every handle.
//!
//! Configurations: `bare` (no hooks) and `probe` (probe built with its defaults, installed on the
//! builder and started; its guard is dropped after the run). The two run in alternation
//! (bare, probe, bare, probe, ...) in one process after one warm-up pair, and every figure is
//! reported per pair so that drift on the machine hits both sides alike. Only the workload is
//! timed: building the probe and the runtime, and shutting them down, are outside the timer.
//!
//! Also measured: the cost of the poll hooks alone (`instrument`ed future polled in a tight loop
//! on one thread, with and without a running probe), and in full mode, Tokio's own cost of
//! calling hooks (empty hooks vs bare) on W1.
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

/// Workers of every measured runtime (the budget is stated for a 2-worker yield storm).
const WORKERS: usize = 2;
/// W1 tasks: 32 per worker, enough to keep both run queues busy.
const W1_TASKS: u64 = 32 * WORKERS as u64;
/// Tasks spawning in W2.
const W2_SPAWNERS: u64 = 4;
/// Handles a W2 spawner holds before awaiting them.
const W2_BATCH: u64 = 1_000;
/// Quick-mode guard on the median W1 probe/bare wall-time ratio.
const QUICK_MAX_W1_RATIO: f64 = 2.0;

#[derive(Clone, Copy, Debug)]
struct Plan {
    quick: bool,
    pairs: usize,
    w1_yields: u64,
    w2_tasks: u64,
    hook_iters: u64,
}

impl Plan {
    fn full() -> Plan {
        // 64 × (312_499 + 1) = 20_000_000 polls per W1 run.
        Plan {
            quick: false,
            pairs: 7,
            w1_yields: 312_499,
            w2_tasks: 1_000_000,
            hook_iters: 20_000_000,
        }
    }

    fn quick() -> Plan {
        // 64 × 15_625 = 1_000_000 polls per W1 run.
        Plan {
            quick: true,
            pairs: 5,
            w1_yields: 15_624,
            w2_tasks: 100_000,
            hook_iters: 2_000_000,
        }
    }

    fn w1_polls(&self) -> u64 {
        W1_TASKS * (self.w1_yields + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Bare,
    /// Tokio hooks that do nothing: what Tokio itself charges for calling hooks.
    #[cfg_attr(not(tokio_unstable), allow(dead_code))]
    EmptyHooks,
    Probe,
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    YieldStorm { yields: u64 },
    SpawnStorm { tasks: u64 },
}

// === workloads ===

async fn yield_storm(yields: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..W1_TASKS)
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

async fn spawn_storm(tasks: u64) -> Duration {
    let start = Instant::now();
    let per_spawner = tasks / W2_SPAWNERS;
    let spawners: Vec<_> = (0..W2_SPAWNERS)
        .map(|s| {
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(W2_BATCH as usize);
                let mut sum = 0u64;
                let mut i = 0;
                while i < per_spawner {
                    let n = W2_BATCH.min(per_spawner - i);
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

/// One timed run on a fresh runtime. Building and tearing down are not timed.
fn run_once(setup: Setup, work: Workload) -> Duration {
    let probe = (setup == Setup::Probe).then(|| {
        Probe::builder()
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
        builder
            .on_task_spawn(|_| {})
            .on_task_terminate(|_| {})
            .on_before_task_poll(|_| {})
            .on_after_task_poll(|_| {});
    }
    let rt = builder.build().expect("runtime");
    let guard = probe.as_ref().map(|p| p.start(rt.handle()));
    let elapsed = rt.block_on(async move {
        match work {
            Workload::YieldStorm { yields } => yield_storm(yields).await,
            Workload::SpawnStorm { tasks } => spawn_storm(tasks).await,
        }
    });
    drop(guard);
    drop(rt);
    elapsed
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
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Per-pair results of one workload: wall times in seconds.
struct Pairs {
    base: Vec<f64>,
    test: Vec<f64>,
}

impl Pairs {
    fn ratios(&self) -> Vec<f64> {
        self.base
            .iter()
            .zip(&self.test)
            .map(|(b, t)| t / b)
            .collect()
    }

    /// Added nanoseconds per unit of work, per pair.
    fn added_ns(&self, units: u64) -> Vec<f64> {
        self.base
            .iter()
            .zip(&self.test)
            .map(|(b, t)| (t - b) * 1e9 / units as f64)
            .collect()
    }
}

/// Warm-up pair, then `pairs` alternating runs of `base` and `test`.
fn measure(name: &str, work: Workload, base: Setup, test: Setup, pairs: usize) -> Pairs {
    run_once(base, work);
    run_once(test, work);
    let mut out = Pairs {
        base: Vec::new(),
        test: Vec::new(),
    };
    for i in 0..pairs {
        let b = run_once(base, work).as_secs_f64();
        let t = run_once(test, work).as_secs_f64();
        eprintln!(
            "  {name} pair {}/{pairs}: {base:?} {:.1} ms, {test:?} {:.1} ms, ratio {:.3}",
            i + 1,
            b * 1e3,
            t * 1e3,
            t / b
        );
        out.base.push(b);
        out.test.push(t);
    }
    out
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

/// (bare ns/poll, probe ns/poll) per alternating round.
fn hook_cost(iters: u64, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let current = || {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        b
    };
    let bare = current().build().expect("runtime");
    let probe = Probe::builder()
        .build()
        .expect("probe with default settings");
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

// === output ===

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

fn row(label: &str, size: &str, p: &Pairs, units: u64, unit: &str) -> String {
    let r = p.ratios();
    let (rlo, rhi) = min_max(&r);
    let added = p.added_ns(units);
    let (alo, ahi) = min_max(&added);
    let per = |v: &[f64]| median(v) * 1e9 / units as f64;
    format!(
        "| {label} | {size} | {} | {} | {} | {:.3} | {:.3}–{:.3} | {:.2} | {:.2} | {:+.2} ({:+.2} to {:+.2}) ns/{unit} |",
        p.base.len(),
        ms(median(&p.base)),
        ms(median(&p.test)),
        median(&r),
        rlo,
        rhi,
        per(&p.base),
        per(&p.test),
        median(&added),
        alo,
        ahi,
    )
}

fn header(base: &str, test: &str) {
    println!(
        "| workload | work per run | pairs | {base} median | {test} median | {test}/{base} median | {test}/{base} min–max | {base} ns/unit | {test} ns/unit | added per unit: median (min to max) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
}

fn smoke() {
    // `cargo test --benches` runs this binary without `--bench`: check that everything runs, but
    // time nothing and assert nothing about time.
    for setup in [Setup::Bare, Setup::Probe] {
        run_once(setup, Workload::YieldStorm { yields: 10 });
        run_once(setup, Workload::SpawnStorm { tasks: 100 });
    }
    hook_cost(1_000, 1);
    println!("overhead: smoke run only (pass --bench, as `cargo bench` does, to measure)");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_quick =
        std::env::var("STALLSCOPE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let quick = env_quick || args.iter().any(|a| a == "--quick");
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return ExitCode::SUCCESS;
    }
    let plan = if quick { Plan::quick() } else { Plan::full() };
    if !cfg!(tokio_unstable) {
        eprintln!("warning: built without --cfg tokio_unstable: the probe installs no task hooks");
    }
    eprintln!(
        "overhead: {} mode, {WORKERS} workers, {} pairs per workload",
        if plan.quick { "quick" } else { "full" },
        plan.pairs
    );

    let w1_polls = plan.w1_polls();
    let w1 = measure(
        "W1",
        Workload::YieldStorm {
            yields: plan.w1_yields,
        },
        Setup::Bare,
        Setup::Probe,
        plan.pairs,
    );
    let w2 = measure(
        "W2",
        Workload::SpawnStorm {
            tasks: plan.w2_tasks,
        },
        Setup::Bare,
        Setup::Probe,
        plan.pairs,
    );
    let hook_rounds = if plan.quick { 3 } else { 7 };
    let (hook_bare, hook_probe) = hook_cost(plan.hook_iters, hook_rounds);
    #[cfg(tokio_unstable)]
    let empty = (!plan.quick).then(|| {
        measure(
            "W1 empty hooks",
            Workload::YieldStorm {
                yields: plan.w1_yields,
            },
            Setup::Bare,
            Setup::EmptyHooks,
            plan.pairs,
        )
    });
    #[cfg(not(tokio_unstable))]
    let empty: Option<Pairs> = None;

    let w1_size = format!(
        "{W1_TASKS} tasks × {} yields = {w1_polls} polls",
        plan.w1_yields
    );
    let w2_size = format!(
        "{} tasks from {W2_SPAWNERS} spawners, batches of {W2_BATCH}",
        plan.w2_tasks
    );
    println!();
    println!(
        "### probe vs bare ({WORKERS} workers, wall time; {} mode)",
        if plan.quick { "quick" } else { "full" }
    );
    println!();
    header("bare", "probe");
    println!("{}", row("W1 yield storm", &w1_size, &w1, w1_polls, "poll"));
    println!(
        "{}",
        row("W2 spawn storm", &w2_size, &w2, plan.w2_tasks, "task")
    );
    if let Some(empty) = &empty {
        println!();
        println!("### Tokio's hook dispatch alone: empty hooks vs bare (W1)");
        println!();
        header("bare", "empty");
        println!(
            "{}",
            row("W1 yield storm", &w1_size, empty, w1_polls, "poll")
        );
    }
    let added: Vec<f64> = hook_probe
        .iter()
        .zip(&hook_bare)
        .map(|(p, b)| p - b)
        .collect();
    let (alo, ahi) = min_max(&added);
    println!();
    println!("### poll hooks in isolation (one thread, `instrument`ed never-ready future, {} polls × {hook_rounds} rounds)", plan.hook_iters);
    println!();
    println!("| without probe ns/poll | with probe ns/poll | added ns/poll: median (min to max) |");
    println!("|---|---|---|");
    println!(
        "| {:.2} | {:.2} | {:+.2} ({:+.2} to {:+.2}) |",
        median(&hook_bare),
        median(&hook_probe),
        median(&added),
        alo,
        ahi
    );

    let w1_ratio = median(&w1.ratios());
    println!();
    if plan.quick {
        if w1_ratio > QUICK_MAX_W1_RATIO {
            println!("FAIL: W1 median probe/bare ratio {w1_ratio:.3} exceeds {QUICK_MAX_W1_RATIO}");
            return ExitCode::FAILURE;
        }
        println!("ok: W1 median probe/bare ratio {w1_ratio:.3} <= {QUICK_MAX_W1_RATIO}");
    }
    ExitCode::SUCCESS
}
