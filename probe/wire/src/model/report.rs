//! The text report: a [`Summary`] as text, the one renderer behind `stallscope report` (a
//! recording) and the probe's `probe.report()` (its latest snapshot, folded by
//! [`Summary::from_snapshot`]). [`Scope`] words the few lines that differ between the two.

use std::fmt::Write;

use crate::model::{SeenAlert, Summary};
use crate::names::short_path;
use crate::{fmt_ns, history_line, rfc3339_ms, AlertKind, Histogram, LocationStats, Snapshot, Stall};

/// What the summary covers, which words the lines about its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scope {
    /// A recording (`stallscope report`): its span is from its creation to its last event.
    #[default]
    Recording,
    /// One snapshot taken in the probe's process (`probe.report()`): its span is the probe's
    /// uptime, its stalls the probe's recent ones.
    Probe,
}

/// Options of the text report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextOptions {
    /// Stalls listed (the longest); the JSON lists them all.
    pub top: usize,
    /// What the summary covers.
    pub scope: Scope,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions { top: 20, scope: Scope::Recording }
    }
}

impl TextOptions {
    /// These options, listing the `top` longest stalls.
    pub fn with_top(self, top: usize) -> TextOptions {
        TextOptions { top, ..self }
    }

    /// The options of `probe.report()`.
    pub fn probe() -> TextOptions {
        TextOptions { scope: Scope::Probe, ..TextOptions::default() }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `+1.234 s` from the recording's start.
fn offset(start_ms: u64, at_ms: u64) -> String {
    if at_ms >= start_ms {
        format!("+{:.3} s", (at_ms - start_ms) as f64 / 1e3)
    } else {
        format!("-{:.3} s", (start_ms - at_ms) as f64 / 1e3)
    }
}

/// The spawn locations of a snapshot (the probe's own left out), slowest p99 first.
pub fn locations_by_p99(s: &Snapshot) -> Vec<&LocationStats> {
    let mut locs: Vec<&LocationStats> = s.locations.iter().filter(|l| !l.internal).collect();
    locs.sort_by(|a, b| {
        let key = |l: &LocationStats| (l.poll_time.quantile_ns(0.99).unwrap_or(0), l.poll_time.max_ns);
        key(b).cmp(&key(a)).then(a.location.cmp(&b.location))
    });
    locs
}

// === Text ===

/// Renders the report as text.
pub fn text(sum: &Summary, options: &TextOptions) -> String {
    let mut o = String::new();
    let p = sum.process();
    let start = sum.start_unix_ms();
    let end = sum.end_unix_ms();
    let name = if p.name.is_empty() { "unknown process" } else { &p.name };
    let span = fmt_ns((end - start).saturating_mul(1_000_000));
    let _ = match options.scope {
        Scope::Recording => writeln!(
            o,
            "stallscope report: {name} (pid {}), {span} from {} ({} update{}, {} tick{})",
            p.pid,
            rfc3339_ms(start),
            sum.updates,
            plural(sum.updates),
            sum.ticks,
            plural(sum.ticks),
        ),
        Scope::Probe => {
            writeln!(o, "stallscope report: {name} (pid {}), up {span} (since {})", p.pid, rfc3339_ms(start))
        }
    };
    let _ = writeln!(
        o,
        "  probe {}, stall threshold {}, written by {}",
        if p.probe_version.is_empty() { "?" } else { &p.probe_version },
        fmt_ns(p.stall_threshold_ns),
        if sum.header.writer.is_empty() { "?" } else { &sum.header.writer },
    );
    for m in &p.missing {
        let _ = writeln!(o, "  missing: {m}");
    }
    for line in sum.damage.lines() {
        let _ = writeln!(o, "  damaged recording: {line}");
    }

    // Stalls.
    let _ =
        writeln!(o, "\nstalls: {} seen, {} stalled in all (longest first)", sum.stalls.len(), fmt_ns(sum.stalled_ns()));
    if !sum.earlier_stalls.is_empty() {
        let _ = writeln!(
            o,
            "  ({} stall{} from before the recording started, sent with the first snapshot, left out)",
            sum.earlier_stalls.len(),
            if sum.earlier_stalls.len() == 1 { "" } else { "s" }
        );
    }
    if let Some(last) = &sum.last {
        if last.stall_count > sum.stalls.len() as u64 {
            let _ = match options.scope {
                Scope::Recording => writeln!(
                    o,
                    "  (the probe counted {} stalls since it started; {} of them are in this recording)",
                    last.stall_count,
                    sum.stalls.len()
                ),
                Scope::Probe => writeln!(
                    o,
                    "  (the probe counted {} stalls since it started; it keeps the {} most recent)",
                    last.stall_count,
                    sum.stalls.len()
                ),
            };
        }
    }
    for s in sum.stalls.iter().take(options.top) {
        let running = if s.duration_ns.is_some() { "" } else { " (still running)" };
        let bip = if s.in_block_in_place { " [in block_in_place]" } else { "" };
        let _ = writeln!(
            o,
            "  {:>9}{running}{bip}  at {} ({})  worker {}  {}",
            fmt_ns(s.length_ns()),
            rfc3339_ms(s.start_unix_ms),
            offset(start, s.start_unix_ms),
            s.worker,
            s.origin_text(),
        );
        let samples = s.sample_count();
        match s.culprit_frame() {
            _ if s.no_blame_reason().is_some() => {
                let _ = writeln!(o, "      ({})", s.no_blame_reason().unwrap_or_default());
            }
            Some(c) => {
                let _ = writeln!(o, "      in {}   [{} samples]", c.place(), samples);
                for f in s.callers().take(3) {
                    let _ = writeln!(o, "         called from {}", f.place());
                }
            }
            _ => {
                let why = if s.duration_ns.is_none() { "still running when recorded" } else { "no stack sample" };
                let _ = writeln!(o, "      ({why})");
            }
        }
        if let Some(a) = &s.anatomy {
            let _ = writeln!(o, "      anatomy: {}", a.describe());
        }
    }
    if sum.stalls.len() > options.top {
        let hint = match options.scope {
            Scope::Recording => " (--top N shows more; --json lists all)",
            Scope::Probe => " (the snapshot lists them all)",
        };
        let _ = writeln!(o, "  … and {} shorter stalls{hint}", sum.stalls.len() - options.top);
    }

    // Functions.
    let functions = sum.functions();
    let _ = writeln!(o, "\nstalled time by function (the top user frame of each stall):");
    if functions.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for f in functions.iter().take(options.top) {
        let loc = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!(" ({}:{})", short_path(file), line),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  {:>9}  {:>4} stall{}  longest {:>9}  {}{}",
            fmt_ns(f.stalled_ns),
            f.stalls,
            if f.stalls == 1 { " " } else { "s" },
            fmt_ns(f.longest_ns),
            crate::names::short_name(&f.function),
            loc
        );
    }
    // Long polls that name no function, and why.
    for (what, pick) in [
        (
            "waited for a CPU (host busy or CPU quota throttled): no code blamed",
            Stall::cpu_starved as fn(&Stall) -> bool,
        ),
        ("not observed (the probe's watchdog got no CPU while they ran): no code blamed", |s: &Stall| s.unobserved),
    ] {
        let picked: Vec<&Stall> = sum.stalls.iter().filter(|s| pick(s)).collect();
        if let Some(longest) = picked.iter().map(|s| s.length_ns()).max() {
            let total: u64 = picked.iter().map(|s| s.length_ns()).sum();
            let n = picked.len();
            let _ = writeln!(
                o,
                "  {:>9}  {:>4} poll{}  longest {:>9}  {what}",
                fmt_ns(total),
                n,
                if n == 1 { " " } else { "s" },
                fmt_ns(longest)
            );
        }
    }

    let Some(last) = &sum.last else {
        let _ = writeln!(o, "\nno tick in this recording: no task, pool, lag or poll figures");
        write_alerts_and_drops(&mut o, sum, options.scope);
        return o;
    };

    // Leaks.
    let leaks: Vec<_> = last.leak_suspects().collect();
    let _ = writeln!(o, "\nleak suspects: {}", leaks.len());
    for l in leaks {
        let _ = writeln!(o, "  {}", l.leak_text());
    }

    // Pools.
    let _ = writeln!(o, "\npools:");
    if last.pools.is_empty() && last.runtime.is_none() {
        let _ = writeln!(o, "  none registered");
    }
    for pl in &last.pools {
        let _ = writeln!(
            o,
            "  {}: {}/{} in use, {} idle, {} waiting, {} acquired, wait p50 {} p99 {}{}",
            pl.name,
            pl.in_use,
            pl.max,
            pl.idle,
            pl.waiters,
            pl.acquired,
            pl.wait_time.quantile_text(0.5),
            pl.wait_time.quantile_text(0.99),
            if pl.saturated() { "  SATURATED" } else { "" }
        );
    }
    if let Some(r) = &last.runtime {
        let _ = writeln!(
            o,
            "  blocking pool: {} threads, {} idle, {} queued{}",
            r.blocking_threads,
            r.idle_blocking_threads,
            r.blocking_queue_depth,
            if r.blocking_pool_starved() { "  STARVED" } else { "" }
        );
        let _ = writeln!(
            o,
            "\nruntime: {} workers, busy {} {}, {} live tasks, global queue {}, local queues {}",
            r.workers,
            sum.busy_ratio().map(|b| format!("{:.0}%", b * 100.0)).unwrap_or_else(|| "-".into()),
            match options.scope {
                Scope::Recording => "over the recording",
                Scope::Probe => "since the probe started",
            },
            r.live_tasks,
            r.global_queue_depth,
            r.local_queue_depth
        );
    }

    // Lag and polls.
    let lag = &last.lag;
    let _ = writeln!(
        o,
        "\nloop lag: p50 {} p99 {} max {} last {} ({} heartbeats, one every {})",
        lag.lag.quantile_text(0.5),
        lag.lag.quantile_text(0.99),
        fmt_ns(lag.lag.max_ns),
        fmt_ns(lag.last_ns),
        lag.lag.count,
        fmt_ns(lag.period_ns)
    );
    let all = Histogram::merged(last.workers.iter().map(|w| &w.poll_time));
    let _ = writeln!(
        o,
        "polls since the probe started: {} in all (every poll counted), p50 {} p99 {} p99.9 {} max {} (from timed polls)",
        last.worker_polls(),
        all.quantile_text(0.5),
        all.quantile_text(0.99),
        all.quantile_text(0.999),
        fmt_ns(all.max_ns)
    );
    let locs = locations_by_p99(last);
    if !locs.is_empty() {
        let _ = writeln!(
            o,
            "  by spawn location, slowest p99 first (polls, p50, p99, max; live / spawned); poll counts here are \
             estimates, from the timed polls scaled up (about {} in all, the probe's heartbeat left out):",
            locs.iter().map(|l| l.polls).sum::<u64>()
        );
    }
    for l in locs.iter().take(10) {
        let _ = writeln!(
            o,
            "  {:>9} {:>9} {:>9} {:>9}  {:>6} / {:<7}  {}",
            l.polls,
            l.poll_time.quantile_text(0.5),
            l.poll_time.quantile_text(0.99),
            fmt_ns(l.poll_time.max_ns),
            l.live,
            l.spawned,
            short_path(&l.location)
        );
    }
    write_alerts_and_drops(&mut o, sum, options.scope);
    o
}

/// The line for an alert over the recording: its figures summarise the recording's span (a
/// blocking poll: the stalls of the recording blamed on it; others: the peak seen), not the
/// last tick's.
///
/// With [`Scope::Probe`] (one tick) the bracket of ticks is left out: the probe's own history of
/// the alert follows on a "so far" line.
pub fn alert_line(sum: &Summary, a: &SeenAlert, scope: Scope) -> String {
    let start = sum.start_unix_ms();
    let when = match scope {
        Scope::Recording => format!(
            "  [{} .. {}, {} tick{}, {} time{}{}]",
            offset(start, a.first_unix_ms),
            offset(start, a.last_unix_ms),
            a.ticks,
            if a.ticks == 1 { "" } else { "s" },
            a.count,
            if a.count == 1 { "" } else { "s" },
            if a.active_at_end { ", still active at the end" } else { ", passed" }
        ),
        Scope::Probe => String::new(),
    };
    if a.alert.kind == AlertKind::BlockingPoll {
        if let (n, Some(worst)) = sum.stalls_of(&a.alert.subject) {
            let place = worst.culprit_text();
            return format!(
                "blocking poll: {} in {}, {} stall{} {}, task spawned at {}{when}",
                fmt_ns(worst.length_ns()),
                place,
                n,
                plural(n),
                match scope {
                    Scope::Recording => "in this recording",
                    Scope::Probe => "kept by the probe",
                },
                short_path(&worst.spawned_at)
            );
        }
    }
    match a.peak {
        Some(p) if scope == Scope::Recording => {
            format!("{} (peak {p} at {}){when}", a.peak_summary, offset(start, a.peak_unix_ms))
        }
        _ => format!("{}{when}", a.peak_summary),
    }
}

fn write_alerts_and_drops(o: &mut String, sum: &Summary, scope: Scope) {
    let start = sum.start_unix_ms();
    let _ = writeln!(o, "\nalerts: {}", sum.alerts.len());
    for a in &sum.alerts {
        let _ = writeln!(o, "  ! {}", alert_line(sum, a, scope));
        if scope == Scope::Probe {
            if let Some(r) = sum.history_of(a).filter(|r| r.active) {
                let _ = writeln!(o, "    so far: {}", history_line(r, start));
            }
        }
        let _ = writeln!(o, "    what to do: {}", a.alert.what_to_do);
    }
    let passed = sum.passed_incidents();
    if !passed.is_empty() || scope == Scope::Probe {
        let _ = match scope {
            Scope::Recording => {
                writeln!(o, "\nincidents before the recording started (from the probe's alert history):")
            }
            Scope::Probe => writeln!(o, "\nincidents that passed: {}", passed.len()),
        };
    }
    for r in passed {
        let _ = writeln!(o, "  - {}", history_line(r, start));
        let _ = writeln!(o, "    at the peak: {}", r.peak_summary);
        let _ = writeln!(o, "    what to do: {}", r.what_to_do);
    }
    if let Some(last) = sum.last.as_ref().filter(|l| l.alert_history_evicted > 0) {
        let _ = writeln!(o, "  ({} older incidents left out to bound the history)", last.alert_history_evicted);
    }

    let _ = writeln!(o, "\ndropped:");
    let mut any = false;
    if sum.dropped_intervals > 0 {
        any = true;
        let _ = writeln!(
            o,
            "  {} updates dropped for the recorder (its queue at the probe overflowed; {} notice{})",
            sum.dropped_intervals,
            sum.dropped_notices,
            if sum.dropped_notices == 1 { "" } else { "s" }
        );
    }
    let d = sum.probe_drops();
    for (n, what) in d.parts() {
        if n > 0 {
            any = true;
            let _ = writeln!(o, "  {n} {what} (dropped by the probe since it started)");
        }
    }
    for line in sum.damage.lines() {
        any = true;
        let _ = writeln!(o, "  damaged recording: {line}");
    }
    for e in &sum.errors {
        any = true;
        let _ = writeln!(o, "  probe error: {e}");
    }
    if !any {
        let _ = writeln!(o, "  nothing");
    }
}
