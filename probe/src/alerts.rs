//! Alerts: small pluggable checks over a snapshot. Each has a one-line summary naming the
//! culprit and an explanation of what to do.

use std::fmt::Write;

use stallscope_wire::{Alert, AlertKind, Interval, Snapshot, Stall};

use crate::probe::Config;

/// How long a blocking-poll alert stays up after its last stall.
const STALL_ALERT_MS: u64 = 10_000;

/// One check.
pub(crate) trait Check: Send {
    fn check(&self, s: &Snapshot, i: &Interval, c: &Config, out: &mut Vec<Alert>);
}

/// The checks in force.
pub(crate) struct Checks(Vec<Box<dyn Check>>);

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checks({})", self.0.len())
    }
}

impl Default for Checks {
    fn default() -> Self {
        Checks(vec![
            Box::new(BlockingPoll),
            Box::new(LeakSuspect),
            Box::new(PoolSaturated),
            Box::new(BlockingPoolStarved),
            Box::new(LoopLag),
            Box::new(DroppedData),
        ])
    }
}

impl Checks {
    pub(crate) fn evaluate(&self, s: &Snapshot, i: &Interval, c: &Config) -> Vec<Alert> {
        let mut out = Vec::new();
        for check in &self.0 {
            check.check(s, i, c, &mut out);
        }
        out
    }
}

pub(crate) use stallscope_wire::fmt_ns;

/// "culprit (src/main.rs:42)" for the top user frame of a stall, or a fallback.
pub(crate) fn culprit(s: &Stall) -> String {
    match s.top_user_frame() {
        Some(f) => match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{} ({}:{})", f.function, short_path(file), line),
            _ => f.function.clone(),
        },
        None if s.stacks.is_empty() => "no stack sample".to_string(),
        None => s.stacks[0].frames.first().map(|f| f.function.clone()).unwrap_or_default(),
    }
}

/// The last two components of a path.
pub(crate) fn short_path(p: &str) -> String {
    let parts: Vec<&str> = p.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

struct BlockingPoll;
impl Check for BlockingPoll {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Alert>) {
        let recent: Vec<&Stall> = s
            .stalls
            .iter()
            .filter(|st| !st.in_block_in_place)
            .filter(|st| st.start_unix_ms + st.elapsed_ns / 1_000_000 + STALL_ALERT_MS >= s.at_unix_ms)
            .collect();
        // One alert per culprit function (not per line: a loop samples several lines of it).
        let mut by_culprit: Vec<(String, Vec<&Stall>)> = Vec::new();
        for st in recent {
            let key = st.top_user_frame().map(|f| f.function.clone()).unwrap_or_else(|| culprit(st));
            match by_culprit.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(st),
                None => by_culprit.push((key, vec![st])),
            }
        }
        for (subject, stalls) in by_culprit {
            let longest = stalls.iter().map(|s| s.elapsed_ns).max().unwrap_or(0);
            let worst = stalls.iter().max_by_key(|s| s.elapsed_ns).copied();
            let c = worst.map(culprit).unwrap_or_default();
            let mut summary = format!("blocking poll: {} in {}", fmt_ns(longest), c);
            if stalls.len() > 1 {
                let _ = write!(summary, " ({} stalls in the last 10 s)", stalls.len());
            }
            if let Some(w) = worst {
                match w.unhooked_origin() {
                    Some(origin) => {
                        let _ = write!(summary, ", in a {origin} (no task hook)");
                    }
                    None => {
                        let _ = write!(summary, ", task spawned at {}", short_path(&w.spawned_at));
                    }
                }
            }
            out.push(Alert {
                kind: AlertKind::BlockingPoll,
                subject,
                summary,
                what_to_do: AlertKind::BlockingPoll.what_to_do().to_string(),
            });
        }
    }
}

struct LeakSuspect;
impl Check for LeakSuspect {
    fn check(&self, s: &Snapshot, _: &Interval, c: &Config, out: &mut Vec<Alert>) {
        for l in s.locations.iter().filter(|l| l.leak_suspect && !l.internal) {
            let age = l.oldest_live_ns.map(|a| format!(", oldest {}", fmt_ns(a))).unwrap_or_default();
            out.push(Alert {
                kind: AlertKind::LeakSuspect,
                subject: l.location.clone(),
                summary: format!("task leak suspect: {} live tasks spawned at {}{}", l.live, l.location, age),
                what_to_do: format!(
                    "Tasks spawned here keep piling up: the live count grew in every {:?} window \
                     and the oldest never finish. Check what they wait on (a channel nobody closes, \
                     a missing timeout, a JoinHandle never awaited or aborted) and bound them with \
                     a JoinSet, a Semaphore or a timeout.",
                    c.leak_window
                ),
            });
        }
    }
}

struct PoolSaturated;
impl Check for PoolSaturated {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Alert>) {
        for p in s.pools.iter().filter(|p| p.saturated()) {
            let p99 = p.wait_time.quantile_ns(0.99).map(fmt_ns).unwrap_or_else(|| "-".into());
            out.push(Alert {
                kind: AlertKind::PoolSaturated,
                subject: p.name.clone(),
                summary: format!(
                    "pool saturated: {} has {}/{} in use and {} waiting (wait p99 {})",
                    p.name, p.in_use, p.max, p.waiters, p99
                ),
                what_to_do: AlertKind::PoolSaturated.what_to_do().to_string(),
            });
        }
    }
}

struct BlockingPoolStarved;
impl Check for BlockingPoolStarved {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Alert>) {
        let Some(r) = &s.runtime else { return };
        if r.blocking_queue_depth > 0 && r.idle_blocking_threads == 0 {
            out.push(Alert {
                kind: AlertKind::BlockingPoolStarved,
                subject: "blocking pool".to_string(),
                summary: format!(
                    "blocking pool starved: {} queued, {} threads all busy",
                    r.blocking_queue_depth, r.blocking_threads
                ),
                what_to_do: AlertKind::BlockingPoolStarved.what_to_do().to_string(),
            });
        }
    }
}

struct LoopLag;
impl Check for LoopLag {
    fn check(&self, s: &Snapshot, i: &Interval, c: &Config, out: &mut Vec<Alert>) {
        let threshold = c.stall_threshold.as_nanos() as u64;
        // Heartbeats in this interval that landed in buckets entirely above the threshold.
        let late: u64 = i
            .lag
            .counts
            .iter()
            .enumerate()
            .filter(|(b, _)| *b > 0 && i.lag.upper_ns.get(b - 1).is_some_and(|lo| *lo >= threshold))
            .map(|(_, n)| *n)
            .sum();
        if late > 0 || s.lag.last_ns >= threshold {
            out.push(Alert {
                kind: AlertKind::LoopLag,
                subject: "heartbeat".to_string(),
                summary: if s.lag.last_ns >= threshold {
                    format!("loop lag: the last heartbeat fired {} late", fmt_ns(s.lag.last_ns))
                } else {
                    format!("loop lag: {late} heartbeats fired over {} late in the last interval", fmt_ns(threshold))
                },
                what_to_do: AlertKind::LoopLag.what_to_do().to_string(),
            });
        }
    }
}

struct DroppedData;
impl Check for DroppedData {
    fn check(&self, _: &Snapshot, i: &Interval, _: &Config, out: &mut Vec<Alert>) {
        let d = &i.drops;
        if d.total() == 0 {
            return;
        }
        let mut parts = Vec::new();
        for (n, what) in d.parts() {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        out.push(Alert {
            kind: AlertKind::DroppedData,
            subject: "probe".to_string(),
            summary: format!("probe dropped data: {}", parts.join(", ")),
            what_to_do: AlertKind::DroppedData.what_to_do().to_string(),
        });
    }
}
