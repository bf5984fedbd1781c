//! Markdown tables from [`Results`]: one per workload, then the budget table of issue P4.
//!
//! Everything here is computed from the results file alone, so `--chart-from` re-prints the same
//! tables as the run that wrote it.

use std::fmt::Write;

use crate::results::{Results, Spread};

/// A budget's verdict is flagged as disturbed when another process kept more than this many cores
/// busy during one of the runs it compares (one 10 ms tick in an 80 ms run is 0.125 cores).
pub(crate) const DISTURBED_CORES: f64 = 0.25;

/// Allowed growth of the probe process's peak RSS from W2s to W2 (10× the tasks).
pub(crate) const MEMORY_FLAT_FACTOR: f64 = 1.10;

/// The P4 budget lines on the probe (bound on a per-round series; see [`verdict_at_most`]).
pub(crate) const W1_NS_PER_POLL: f64 = 8.0;
pub(crate) const W2_RATIO: f64 = 1.15;
pub(crate) const W3_RATIO: f64 = 1.01;
pub(crate) const W4_RATIO: f64 = 1.01;
/// The never-reading client's W3 wall time over the plain probe's.
pub(crate) const STALLED_RATIO: f64 = 1.01;
/// console-subscriber's added cost over the probe's, at least.
pub(crate) const VS_CONSOLE_W1: f64 = 30.0;
pub(crate) const VS_CONSOLE_W2: f64 = 30.0;
pub(crate) const VS_CONSOLE_W3: f64 = 10.0;

/// The probe configurations the budgets apply to, each with the console configuration it is
/// compared with (no client with no client, draining client with draining client).
const PROBE_PAIRS: [(&str, &str); 2] = [("probe", "console"), ("probe-client-record", "console-client")];

/// How the verdicts are decided, printed under the budget table.
pub(crate) const RULES: &str = "\
Verdict rules. Each budget is checked on the per-round values (each round's run against the bare \
run of the same round), not only on the median:
- **met**: every round is within the bound (the max for an upper bound);
- **not met**: no round is within the bound;
- **not distinguishable from noise**: the rounds range from no overhead at all (ratio ≤ 1, added \
cost ≤ 0) to beyond the bound, so this many rounds cannot tell either way;
- **not reliably met**: otherwise when the bound lies inside the rounds' range (the median says on \
which side most rounds fell).

A verdict is marked **disturbed** when other processes kept more than 0.25 cores busy during any \
of the runs it compares (the configurations' and their bare runs): on a 2-core machine that load \
lands on the measured workers, and the verdict says little.

For \"added cost vs console-subscriber\", the factor is (console ratio − 1) / (probe ratio − 1). \
**met** when even the worst pairing, console's smallest ratio against the probe's largest, reaches \
the target (or the probe was never slower than bare); **not met** when even the best pairing, \
console's largest against the probe's smallest, does not; otherwise **not reliably met**, with \
\"probe's added cost not distinguishable from 0\" when the probe's ratios span 1.0.";

/// One table per workload.
pub(crate) fn tables(r: &Results) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "# stallscope vs tokio-metrics vs console-subscriber ({} mode, {} rounds, {} workers, {} cores)\n",
        r.mode, r.rounds, r.workers, m.nproc
    );
    let _ = writeln!(
        out,
        "{} · {} cores · Linux {} · {:.1} GiB · started {} · finished {} · load average before: {} · after: {}\n",
        m.cpu_model,
        m.nproc,
        m.kernel,
        m.mem_total_kib as f64 / (1024.0 * 1024.0),
        r.started_utc,
        r.finished_utc,
        m.loadavg_before,
        m.loadavg_after
    );
    for w in &r.workloads {
        let (units, unit) = (w.units as f64, w.unit.as_str());
        let _ = writeln!(out, "## {}\n", w.title);
        let _ = writeln!(
            out,
            "| configuration | runs | median wall | ratio to bare, median | ratio min–max | added ns/{unit}, median \
             | peak RSS MiB, median (max) | other load, cores, median / max | own cores, median |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &r.configs {
            if let Some(s) = r.skip(&w.id, &c.id) {
                if s.shown {
                    let _ = writeln!(out, "| {} | 0 | {} | | | | | | |", c.label, s.reason);
                }
                continue;
            }
            let runs = r.runs(&w.id, &c.id);
            if runs.is_empty() {
                continue;
            }
            let secs = Spread::of(&runs.iter().map(|x| x.wall_secs).collect::<Vec<_>>());
            let rss = Spread::of(&runs.iter().map(|x| x.peak_rss_kib as f64 / 1024.0).collect::<Vec<_>>());
            let other = Spread::of(&runs.iter().map(|x| x.other_cores).collect::<Vec<_>>());
            let own = Spread::of(&runs.iter().map(|x| x.own_cores).collect::<Vec<_>>());
            let (ratio, lohi, add) = if c.id == "bare" {
                ("1.000".to_string(), "—".to_string(), format!("{:.1} ns/{unit} (bare)", secs.median * 1e9 / units))
            } else {
                let ratios = Spread::of(&r.ratios(&w.id, &c.id));
                let added = Spread::of(&r.added_ns(&w.id, &c.id));
                (
                    format!("{:.3}", ratios.median),
                    format!("{:.3}–{:.3}", ratios.min, ratios.max),
                    format!("{:+.1}", added.median),
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} ms | {ratio} | {lohi} | {add} | {:.1} ({:.1}) | {:.2} / {:.2} | {:.2} |",
                c.label,
                runs.len(),
                secs.median * 1e3,
                rss.median,
                rss.max,
                other.median,
                other.max,
                own.median,
            );
        }
        let _ = writeln!(out);
    }
    out
}

// === budget ===

/// `verdict`, with a note when other processes were busy during the runs of `configs` (and bare)
/// on `work`.
fn flag(verdict: &str, r: &Results, work: &str, configs: &[&str]) -> String {
    let other = configs
        .iter()
        .chain(["bare"].iter())
        .flat_map(|c| r.runs(work, c))
        .map(|x| x.other_cores)
        .filter(|x| !x.is_nan())
        .fold(0.0f64, f64::max);
    if other > DISTURBED_CORES {
        format!("{verdict}; disturbed (other load up to {other:.2} cores)")
    } else {
        verdict.to_string()
    }
}

/// Verdict on "value ≤ bound" over per-round values; `none` is the value meaning no overhead at
/// all (ratio 1, added 0), if the line has one. See [`RULES`].
pub(crate) fn verdict_at_most(s: Spread, bound: f64, none: Option<f64>) -> &'static str {
    if s.n == 0 {
        "no data"
    } else if s.max <= bound {
        "met"
    } else if s.min > bound {
        "not met"
    } else if none.is_some_and(|z| s.min <= z) {
        "not distinguishable from noise"
    } else if s.median <= bound {
        "not reliably met (median within)"
    } else {
        "not reliably met (median beyond)"
    }
}

/// (console ratio − 1) / (probe ratio − 1), infinite when the probe added nothing.
fn factor(console: f64, probe: f64) -> f64 {
    if probe <= 1.0 {
        f64::INFINITY
    } else {
        (console - 1.0) / (probe - 1.0)
    }
}

fn fmt_factor(f: f64) -> String {
    if f.is_infinite() {
        "∞".to_string()
    } else if f.abs() >= 10.0 {
        format!("{f:.0}×")
    } else {
        format!("{f:.1}×")
    }
}

/// Measured text and verdict for "console's added cost ≥ target × the probe's". See [`RULES`].
fn vs_console(probe: Spread, console: Spread, target: f64) -> (String, String) {
    if probe.n == 0 || console.n == 0 {
        return ("—".to_string(), "no data".to_string());
    }
    let worst = factor(console.min, probe.max);
    let best = factor(console.max, probe.min);
    let median = factor(console.median, probe.median);
    let measured = format!(
        "factor {} (medians: console {:.3}, probe {:.3}); worst pairing {}, best {}",
        fmt_factor(median),
        console.median,
        probe.median,
        fmt_factor(worst),
        fmt_factor(best)
    );
    let verdict = if worst >= target {
        if probe.min <= 1.0 {
            "met (probe's added cost not distinguishable from 0)".to_string()
        } else {
            "met".to_string()
        }
    } else if best < target {
        "not met".to_string()
    } else if probe.min <= 1.0 {
        "not reliably met: probe's added cost not distinguishable from 0".to_string()
    } else {
        format!("not reliably met (median factor {})", if median >= target { "within" } else { "short" })
    };
    (measured, verdict)
}

fn spread_text(s: Spread, digits: usize) -> String {
    if s.n == 0 {
        return "—".to_string();
    }
    format!("{:.d$} ({:.d$} to {:.d$}, {} rounds)", s.median, s.min, s.max, s.n, d = digits)
}

/// The budget table, with the rules it applies.
pub(crate) fn budget(r: &Results) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let has = |w: &str| r.workload(w).is_some();
    let label = |c: &str| r.config(c).map_or(c.to_string(), |c| c.label.clone());
    let ran = |w: &str, c: &str| !r.runs(w, c).is_empty();

    if has("w1") {
        for (p, _) in PROBE_PAIRS {
            let s = Spread::of(&r.added_ns("w1", p));
            rows.push([
                format!("W1 added cost ≤ {W1_NS_PER_POLL} ns/poll"),
                label(p),
                format!("{} ns/poll", spread_text(s, 1)),
                format!("≤ {W1_NS_PER_POLL}"),
                flag(verdict_at_most(s, W1_NS_PER_POLL, Some(0.0)), r, "w1", &[p]),
            ]);
        }
    }
    for (w, bound) in [("w2", W2_RATIO), ("w3", W3_RATIO), ("w4", W4_RATIO)] {
        if !has(w) {
            continue;
        }
        for (p, _) in PROBE_PAIRS {
            let s = Spread::of(&r.ratios(w, p));
            rows.push([
                format!("{} wall time ≤ {bound:.2}× bare", w.to_uppercase()),
                label(p),
                format!("ratio {}", spread_text(s, 3)),
                format!("≤ {bound:.2}"),
                flag(verdict_at_most(s, bound, Some(1.0)), r, w, &[p]),
            ]);
        }
    }
    // console-subscriber cannot run the 1M-task W2 (memory); W2s stands in for it then.
    let w2_for_console = if ran("w2", "console") { "w2" } else { "w2s" };
    for (w, target) in [("w1", VS_CONSOLE_W1), (w2_for_console, VS_CONSOLE_W2), ("w3", VS_CONSOLE_W3)] {
        if !has(w) {
            continue;
        }
        let name = if w == "w2s" { "W2 (measured on W2s)".to_string() } else { w.to_uppercase() };
        for (p, c) in PROBE_PAIRS {
            let (measured, verdict) = vs_console(Spread::of(&r.ratios(w, p)), Spread::of(&r.ratios(w, c)), target);
            rows.push([
                format!("{name}: console-subscriber's added cost ≥ {target:.0}× the probe's"),
                format!("{} vs {}", label(p), label(c)),
                measured,
                format!("≥ {target:.0}×"),
                flag(&verdict, r, w, &[p, c]),
            ]);
        }
    }
    if has("w2") && has("w2s") {
        let tasks = |w: &str| r.workload(w).map_or(0, |w| w.size);
        let mib =
            |w: &str, c: &str| -> Vec<f64> { r.runs(w, c).iter().map(|x| x.peak_rss_kib as f64 / 1024.0).collect() };
        let bare = Spread::of(&mib("w2", "bare"));
        for (p, _) in PROBE_PAIRS {
            let big = Spread::of(&mib("w2", p));
            let small = Spread::of(&mib("w2s", p));
            let bound = MEMORY_FLAT_FACTOR * small.median;
            rows.push([
                format!(
                    "probe memory flat: peak RSS after {} tasks ≤ {MEMORY_FLAT_FACTOR:.2}× after {}",
                    tasks("w2"),
                    tasks("w2s")
                ),
                label(p),
                format!(
                    "W2 {} MiB; W2s median {:.1} MiB; bare on W2 {:.1} MiB",
                    spread_text(big, 1),
                    small.median,
                    bare.median
                ),
                format!("≤ {bound:.1} MiB"),
                verdict_at_most(big, bound, None).to_string(),
            ]);
        }
    }
    if has("w3") && ran("w3", "probe-stalled-client") {
        let s = Spread::of(&r.ratios_to("w3", "probe-stalled-client", "probe"));
        let runs = r.runs("w3", "probe-stalled-client");
        let counter = |k: &str| Spread::of(&runs.iter().filter_map(|x| x.counters.get(k).copied()).collect::<Vec<_>>());
        let full = counter("stalled_full_ms");
        let dropping = counter("stalled_dropping_ms");
        let pending = counter("stalled_pending_bytes");
        let during = Spread::of(
            &runs
                .iter()
                .filter_map(|x| Some(x.counters.get("subscriber_drops")? - x.counters.get("stalled_drops_at_start")?))
                .collect::<Vec<_>>(),
        );
        let dropping_runs =
            runs.iter().filter(|x| x.counters.get("stalled_dropping_ms").is_some_and(|v| *v >= 0.0)).count();
        let throughput = if s.n > 0 { (1.0 / s.median - 1.0) * 100.0 } else { f64::NAN };
        rows.push([
            format!("W3: a client that never reads changes throughput by ≤ {:.0}%", (STALLED_RATIO - 1.0) * 100.0),
            format!("{} vs {}", label("probe-stalled-client"), label("probe")),
            format!(
                "wall-time ratio {} (throughput {throughput:+.1}% by median). Before each run: socket full after \
                 {:.1} s ({:.0} KiB waiting), probe dropping updates after {:.1} s (medians; {dropping_runs} of {} \
                 runs reached it); updates dropped during the run: median {:.0}",
                spread_text(s, 3),
                full.median / 1e3,
                pending.median / 1024.0,
                dropping.median / 1e3,
                runs.len(),
                during.median
            ),
            format!("≤ {STALLED_RATIO:.2}"),
            flag(verdict_at_most(s, STALLED_RATIO, Some(1.0)), r, "w3", &["probe-stalled-client", "probe"]),
        ]);
    }

    let mut out =
        String::from("## Budget\n\n| budget | configuration | measured: median (min to max) | bound | verdict |\n");
    out += "|---|---|---|---|---|\n";
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let _ = writeln!(out, "\n{RULES}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[f64]) -> Spread {
        Spread::of(v)
    }

    #[test]
    fn at_most() {
        assert_eq!(verdict_at_most(s(&[1.00, 1.005, 1.01]), 1.01, Some(1.0)), "met");
        assert_eq!(verdict_at_most(s(&[1.02, 1.03]), 1.01, Some(1.0)), "not met");
        assert_eq!(verdict_at_most(s(&[0.98, 1.0, 1.05]), 1.01, Some(1.0)), "not distinguishable from noise");
        assert_eq!(verdict_at_most(s(&[1.005, 1.008, 1.05]), 1.01, Some(1.0)), "not reliably met (median within)");
        assert_eq!(verdict_at_most(s(&[1.005, 1.03, 1.05]), 1.01, Some(1.0)), "not reliably met (median beyond)");
        assert_eq!(verdict_at_most(s(&[]), 1.01, Some(1.0)), "no data");
    }

    #[test]
    fn console_factor() {
        // Probe never slower than bare: met whatever console did (as long as it cost something).
        assert!(vs_console(s(&[0.98, 0.99]), s(&[5.0, 6.0]), 30.0).1.starts_with("met"));
        // Worst pairing (4.0 − 1) / (1.05 − 1) = 60 ≥ 30.
        assert_eq!(vs_console(s(&[1.02, 1.05]), s(&[4.0, 6.0]), 30.0).1, "met");
        // Best pairing (1.2 − 1) / (1.05 − 1) = 4 < 10.
        assert_eq!(vs_console(s(&[1.05, 1.10]), s(&[1.1, 1.2]), 10.0).1, "not met");
        // Probe spans 1.0 and its worst round is too close to console's best.
        assert_eq!(
            vs_console(s(&[0.95, 1.0, 1.2]), s(&[1.2, 1.3]), 10.0).1,
            "not reliably met: probe's added cost not distinguishable from 0"
        );
    }
}
