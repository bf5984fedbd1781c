//! The plain-text report: stalls with their top user frame, leak suspects, pools, lag and poll
//! percentiles.

use std::fmt::Write;

use stallscope_wire::{Histogram, Snapshot};

use crate::alerts::fmt_ns;

fn pct(h: &Histogram, q: f64) -> String {
    h.quantile_ns(q).map(fmt_ns).unwrap_or_else(|| "-".to_string())
}

/// The workers' busy share since the probe started, from the watchdog's per-worker busy time
/// ([`stallscope_wire::Snapshot::busy_ratio`]).
fn busy_text(s: &Snapshot) -> String {
    s.busy_ratio().map(|b| format!("{:.0}%", b * 100.0)).unwrap_or_else(|| "-".into())
}

/// Renders a snapshot as text.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let p = &s.process;
    let _ = writeln!(
        o,
        "stallscope report: {} (pid {}), up {}, stall threshold {}",
        p.name,
        p.pid,
        fmt_ns(s.uptime_ns),
        fmt_ns(p.stall_threshold_ns)
    );
    for m in &p.missing {
        let _ = writeln!(o, "  missing: {m}");
    }

    let _ = writeln!(o, "\nstalls: {} in all, {} stalled", s.stall_count, fmt_ns(s.stalled_ns));
    let mut stalls: Vec<_> = s.stalls.iter().collect();
    stalls.sort_by_key(|s| std::cmp::Reverse(s.elapsed_ns));
    for st in stalls.iter().take(20) {
        let state = if st.duration_ns.is_some() { "" } else { " (still running)" };
        let bip = if st.in_block_in_place { " [in block_in_place]" } else { "" };
        let what = st.origin_text();
        let _ = writeln!(o, "  {:>9}{state}{bip}  worker {} {what}", fmt_ns(st.elapsed_ns), st.worker);
        match st.no_blame_reason() {
            Some(why) => {
                let _ = writeln!(o, "            ({why})");
            }
            None => {
                let _ = writeln!(o, "            in {}   [{} samples]", st.culprit_text(), st.sample_count());
            }
        }
        if let Some(a) = &st.anatomy {
            let _ = writeln!(o, "            anatomy: {}", a.describe());
        }
        // The callers come from the culprit's stack (`Stall::callers`), as in `stallscope report`.
        if st.blames_code() {
            for f in st.callers().take(3) {
                let _ = writeln!(o, "               called from {}", f.place());
            }
        }
    }

    let leaks: Vec<_> = s.locations.iter().filter(|l| l.leak_suspect && !l.internal).collect();
    let _ = writeln!(o, "\nleak suspects: {}", leaks.len());
    for l in leaks {
        let _ = writeln!(
            o,
            "  {}  live {} (spawned {}, completed {}), oldest {}",
            l.location,
            l.live,
            l.spawned,
            l.completed,
            l.oldest_live_ns.map(fmt_ns).unwrap_or_else(|| "-".into())
        );
    }

    let _ = writeln!(o, "\ntasks by spawn location (live / spawned / completed, poll p50 p99 max):");
    let mut locs: Vec<_> = s.locations.iter().filter(|l| !l.internal).collect();
    locs.sort_by(|a, b| b.live.cmp(&a.live).then(b.polls.cmp(&a.polls)));
    for l in locs.iter().take(15) {
        let _ = writeln!(
            o,
            "  {:>6} / {:>7} / {:>7}  {:>8} {:>8} {:>8}  {}",
            l.live,
            l.spawned,
            l.completed,
            pct(&l.poll_time, 0.5),
            pct(&l.poll_time, 0.99),
            fmt_ns(l.poll_time.max_ns),
            l.location
        );
    }

    let _ = writeln!(o, "\npools:");
    for pl in &s.pools {
        let _ = writeln!(
            o,
            "  {}: {}/{} in use, {} idle, {} waiting, wait p99 {}{}",
            pl.name,
            pl.in_use,
            pl.max,
            pl.idle,
            pl.waiters,
            pct(&pl.wait_time, 0.99),
            if pl.saturated() { "  SATURATED" } else { "" }
        );
    }
    if let Some(r) = &s.runtime {
        let _ = writeln!(
            o,
            "  blocking pool: {} threads, {} idle, {} queued",
            r.blocking_threads, r.idle_blocking_threads, r.blocking_queue_depth
        );
        let _ = writeln!(
            o,
            "\nruntime: {} workers, busy {}, global queue {}, local queues {}, {} steals, {} parks",
            r.workers,
            busy_text(s),
            r.global_queue_depth,
            r.local_queue_depth,
            r.steals,
            r.parks
        );
    }

    let all_polls = s.workers.iter().fold(Histogram::default(), |mut acc, w| {
        if acc.counts.is_empty() {
            acc = w.poll_time.clone();
        } else {
            for (a, b) in acc.counts.iter_mut().zip(&w.poll_time.counts) {
                *a += b;
            }
            acc.count += w.poll_time.count;
            acc.sum_ns += w.poll_time.sum_ns;
            acc.max_ns = acc.max_ns.max(w.poll_time.max_ns);
        }
        acc
    });
    let _ = writeln!(
        o,
        "\nloop lag: p50 {} p99 {} max {} (heartbeat every {})",
        pct(&s.lag.lag, 0.5),
        pct(&s.lag.lag, 0.99),
        fmt_ns(s.lag.lag.max_ns),
        fmt_ns(s.lag.period_ns)
    );
    let _ = writeln!(
        o,
        "polls: {} in all (every poll counted), p50 {} p99 {} p99.9 {} max {} (from timed polls and every stall)",
        s.worker_polls(),
        pct(&all_polls, 0.5),
        pct(&all_polls, 0.99),
        pct(&all_polls, 0.999),
        fmt_ns(all_polls.max_ns)
    );

    let _ = writeln!(o, "\nalerts: {} active (times from the probe's start)", s.alerts.len());
    let started_ms = s.at_unix_ms.saturating_sub(s.uptime_ns / 1_000_000);
    for a in &s.alerts {
        let _ = writeln!(o, "  ! {}", a.summary);
        if let Some(r) = s.alert_history.iter().find(|r| r.kind == a.kind && r.subject == a.subject) {
            let _ = writeln!(o, "    so far: {}", stallscope_wire::history_line(r, started_ms));
        }
        let _ = writeln!(o, "    what to do: {}", a.what_to_do);
    }
    let passed: Vec<_> = s.alert_history.iter().filter(|r| !r.active).collect();
    let _ = writeln!(o, "\nincidents that passed: {}", passed.len());
    for r in passed {
        let _ = writeln!(o, "  - {}", stallscope_wire::history_line(r, started_ms));
        let _ = writeln!(o, "    at the peak: {}", r.peak_summary);
        let _ = writeln!(o, "    what to do: {}", r.what_to_do);
    }
    if s.alert_history_evicted > 0 {
        let _ = writeln!(o, "  ({} older incidents left out to bound the history)", s.alert_history_evicted);
    }
    if s.drops.total() > 0 {
        let _ = writeln!(o, "\ndropped: {:?}", s.drops);
    }
    o
}
