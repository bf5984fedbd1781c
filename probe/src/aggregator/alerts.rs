//! Alerts: small pluggable checks over a snapshot. Each has a one-line summary naming the
//! culprit and an explanation of what to do.

use std::fmt::Write;

use stallscope_wire::{
    Alert, AlertFigure, AlertKind, AlertRecord, Interval, PeakUnit, Snapshot, Stall, ALERT_HISTORY_MAX,
};

use crate::config::Config;

/// How long a blocking-poll alert stays up after its last stall.
const STALL_ALERT_MS: u64 = 10_000;

/// Whether a stall ended within `STALL_ALERT_MS` of the snapshot: the stalls an alert is about.
fn recent(st: &Stall, s: &Snapshot) -> bool {
    st.start_unix_ms + st.elapsed_ns / 1_000_000 + STALL_ALERT_MS >= s.at_unix_ms
}

/// An alert a check raised, with the figure that says how bad it is (kept as its peak in the
/// history).
#[derive(Debug, Clone)]
pub(crate) struct Raised {
    pub(crate) alert: Alert,
    pub(crate) figure: AlertFigure,
}

fn raise(out: &mut Vec<Raised>, alert: Alert, value: u64, unit: PeakUnit) {
    out.push(Raised { alert, figure: AlertFigure { value, unit } });
}

/// One check.
pub(crate) trait Check: Send {
    fn check(&self, s: &Snapshot, i: &Interval, c: &Config, out: &mut Vec<Raised>);
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
            Box::new(CpuStarvation),
        ])
    }
}

impl Checks {
    pub(crate) fn evaluate(&self, s: &Snapshot, i: &Interval, c: &Config) -> Vec<Raised> {
        let mut out = Vec::new();
        for check in &self.0 {
            check.check(s, i, c, &mut out);
        }
        out
    }
}

pub(crate) use stallscope_wire::fmt_ns;

struct BlockingPoll;
impl Check for BlockingPoll {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Raised>) {
        let recent: Vec<&Stall> = s
            .stalls
            .iter()
            .filter(|st| !st.in_block_in_place && st.blames_code())
            .filter(|st| recent(st, s))
            // A stall still running with no stack yet is not blamed on anything: its first
            // sample is on its way (the watchdog samples right after the threshold crossing),
            // and an alert "in no stack sample" would flip to the culprit a tick later. It is
            // counted once it has a stack or once it ends, whatever its samples then.
            .filter(|st| st.duration_ns.is_some() || st.has_stack() || !s.process.stack_sampling)
            .collect();
        let mut by_culprit: Vec<(String, Vec<&Stall>)> = Vec::new();
        for st in recent {
            let key = st.culprit_function().to_string();
            match by_culprit.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(st),
                None => by_culprit.push((key, vec![st])),
            }
        }
        for (subject, stalls) in by_culprit {
            let Some(worst) = stalls.iter().max_by_key(|s| s.elapsed_ns).copied() else { continue };
            let longest = worst.elapsed_ns;
            let mut summary = format!("blocking poll: {} in {}", fmt_ns(longest), worst.culprit_text());
            if stalls.len() > 1 {
                let _ = write!(summary, " ({} stalls in the last 10 s)", stalls.len());
            }
            match worst.unhooked_origin() {
                Some(origin) => {
                    let _ = write!(summary, ", in a {origin} (no task hook)");
                }
                None => {
                    let _ =
                        write!(summary, ", task spawned at {}", stallscope_wire::names::short_path(&worst.spawned_at));
                }
            }
            if let Some(a) = &worst.anatomy {
                let _ = write!(summary, "; {}", a.describe());
            }
            let alert = Alert {
                kind: AlertKind::BlockingPoll,
                subject,
                summary,
                what_to_do: AlertKind::BlockingPoll.what_to_do().to_string(),
            };
            raise(out, alert, longest, PeakUnit::Nanos);
        }
    }
}

struct LeakSuspect;
impl Check for LeakSuspect {
    fn check(&self, s: &Snapshot, _: &Interval, c: &Config, out: &mut Vec<Raised>) {
        for l in s.leak_suspects() {
            let age = l.oldest_live_ns.map(|a| format!(", oldest {}", fmt_ns(a))).unwrap_or_default();
            let alert = Alert {
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
            };
            raise(out, alert, l.live, PeakUnit::Tasks);
        }
    }
}

struct PoolSaturated;
impl Check for PoolSaturated {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Raised>) {
        for p in s.pools.iter().filter(|p| p.saturated()) {
            let p99 = p.wait_time.quantile_ns(0.99).map(fmt_ns).unwrap_or_else(|| "-".into());
            let alert = Alert {
                kind: AlertKind::PoolSaturated,
                subject: p.name.clone(),
                summary: format!(
                    "pool saturated: {} has {}/{} in use and {} waiting (wait p99 {})",
                    p.name, p.in_use, p.max, p.waiters, p99
                ),
                what_to_do: AlertKind::PoolSaturated.what_to_do().to_string(),
            };
            raise(out, alert, p.waiters, PeakUnit::Waiters);
        }
    }
}

struct BlockingPoolStarved;
impl Check for BlockingPoolStarved {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Raised>) {
        let Some(r) = &s.runtime else { return };
        if r.blocking_pool_starved() {
            let alert = Alert {
                kind: AlertKind::BlockingPoolStarved,
                subject: "blocking pool".to_string(),
                summary: format!(
                    "blocking pool starved: {} queued, {} threads all busy",
                    r.blocking_queue_depth, r.blocking_threads
                ),
                what_to_do: AlertKind::BlockingPoolStarved.what_to_do().to_string(),
            };
            raise(out, alert, r.blocking_queue_depth, PeakUnit::Queued);
        }
    }
}

struct LoopLag;
impl Check for LoopLag {
    fn check(&self, s: &Snapshot, i: &Interval, c: &Config, out: &mut Vec<Raised>) {
        let threshold = c.stall_threshold.as_nanos() as u64;
        // The largest lag of the interval: the heartbeat keeps it (`Shared::lag_max_ns`), so a
        // late beat is seen whatever beat came last. Older snapshots without it fall back to
        // the last beat.
        let worst = i.lag.max_ns.max(s.lag.last_ns);
        if worst >= threshold {
            let alert = Alert {
                kind: AlertKind::LoopLag,
                subject: "heartbeat".to_string(),
                summary: format!(
                    "loop lag: a heartbeat fired {} late (threshold {})",
                    fmt_ns(worst),
                    fmt_ns(threshold)
                ),
                what_to_do: AlertKind::LoopLag.what_to_do().to_string(),
            };
            raise(out, alert, worst, PeakUnit::Nanos);
        }
    }
}

struct DroppedData;
impl Check for DroppedData {
    fn check(&self, _: &Snapshot, i: &Interval, _: &Config, out: &mut Vec<Raised>) {
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
        let alert = Alert {
            kind: AlertKind::DroppedData,
            subject: "probe".to_string(),
            summary: format!("probe dropped data: {}", parts.join(", ")),
            what_to_do: AlertKind::DroppedData.what_to_do().to_string(),
        };
        raise(out, alert, d.total(), PeakUnit::Dropped);
    }
}

// === History ===

/// Every alert raised since the probe started, updated on each tick from the alerts active
/// then (owned by the aggregator).
#[derive(Debug, Default)]
pub(crate) struct History {
    records: Vec<AlertRecord>,
    evicted: u64,
    last_tick_ms: Option<u64>,
}

impl History {
    /// Takes the alerts active at the tick at `at_unix_ms` into account.
    pub(crate) fn update(&mut self, at_unix_ms: u64, raised: &[Raised]) {
        let since_last_ns = self.last_tick_ms.map_or(0, |t| at_unix_ms.saturating_sub(t).saturating_mul(1_000_000));
        self.last_tick_ms = Some(at_unix_ms);
        let was_active: Vec<bool> = self.records.iter().map(|r| r.active).collect();
        for r in &mut self.records {
            r.active = false;
        }
        for Raised { alert, figure } in raised {
            let i = match self.records.iter().position(|r| r.kind == alert.kind && r.subject == alert.subject) {
                Some(i) => i,
                None => {
                    if self.records.len() >= ALERT_HISTORY_MAX {
                        self.evict();
                    }
                    self.records.push(AlertRecord {
                        kind: alert.kind,
                        subject: alert.subject.clone(),
                        first_unix_ms: at_unix_ms,
                        peak: *figure,
                        peak_unix_ms: at_unix_ms,
                        peak_summary: alert.summary.clone(),
                        ..AlertRecord::default()
                    });
                    self.records.len() - 1
                }
            };
            let active_before = was_active.get(i).copied().unwrap_or(false);
            let r = &mut self.records[i];
            if r.active {
                // Two alerts with one key in a tick: keep the worse.
                if figure.value <= r.latest.value {
                    continue;
                }
            } else {
                if !active_before {
                    r.count += 1;
                }
                // The checks of this tick looked at the interval since the previous one.
                r.active_ns = r.active_ns.saturating_add(since_last_ns);
            }
            r.active = true;
            r.last_unix_ms = at_unix_ms;
            r.latest = *figure;
            r.latest_summary = alert.summary.clone();
            r.what_to_do = alert.what_to_do.clone();
            if figure.value > r.peak.value {
                r.peak = *figure;
                r.peak_unix_ms = at_unix_ms;
                r.peak_summary = alert.summary.clone();
            }
        }
    }

    /// Drops the inactive record seen least recently, else the oldest.
    fn evict(&mut self) {
        let victim = self
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.active)
            .min_by_key(|(_, r)| r.last_unix_ms)
            .or_else(|| self.records.iter().enumerate().min_by_key(|(_, r)| r.last_unix_ms))
            .map(|(i, _)| i);
        if let Some(i) = victim {
            self.records.remove(i);
            self.evicted += 1;
        }
    }

    /// The records, oldest first, and how many were evicted.
    pub(crate) fn records(&self) -> (Vec<AlertRecord>, u64) {
        (self.records.clone(), self.evicted)
    }
}

/// Polls that crossed the threshold only because their worker waited for a CPU: one alert for
/// the host, blaming no code.
struct CpuStarvation;
impl Check for CpuStarvation {
    fn check(&self, s: &Snapshot, _: &Interval, _: &Config, out: &mut Vec<Raised>) {
        let recent = |st: &&Stall| recent(st, s);
        let starved: Vec<&Stall> = s.stalls.iter().filter(|st| st.cpu_starved()).filter(recent).collect();
        let unobserved = s.stalls.iter().filter(|st| st.unobserved).filter(recent).count();
        let worst = starved.iter().max_by_key(|st| st.anatomy.as_ref().map_or(0, |a| a.waiting_ns));
        let mut summary = match worst.and_then(|w| w.anatomy.as_ref().map(|a| (w, a))) {
            Some((w, a)) => {
                let mut o = format!(
                    "worker waited {} for a CPU (host busy or CPU quota throttled) in a {} poll",
                    fmt_ns(a.waiting_ns),
                    fmt_ns(w.elapsed_ns)
                );
                if starved.len() > 1 {
                    let _ = write!(o, " ({} polls in the last 10 s)", starved.len());
                }
                if let Some(t) = a.throttled_ns.filter(|t| *t > 0) {
                    let _ = write!(o, "; cgroup throttled {}", fmt_ns(t));
                }
                o
            }
            None if unobserved > 0 => {
                "the probe's own thread waited for a CPU (host busy or CPU quota throttled)".into()
            }
            None => return,
        };
        if unobserved > 0 {
            let _ = write!(
                summary,
                "; {unobserved} long poll{} not observed: the watchdog got no CPU while {} ran",
                if unobserved == 1 { "" } else { "s" },
                if unobserved == 1 { "it" } else { "they" }
            );
        }
        let alert = Alert {
            kind: AlertKind::CpuStarvation,
            subject: "host".to_string(),
            summary,
            what_to_do: AlertKind::CpuStarvation.what_to_do().to_string(),
        };
        // Its peak: the longest wait for a CPU.
        let peak = worst.and_then(|w| w.anatomy.as_ref()).map_or(0, |a| a.waiting_ns);
        raise(out, alert, peak, PeakUnit::Nanos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stallscope_wire::NO_STACK;
    use stallscope_wire::{Frame, FrameKind, ProcessInfo, StackCount};

    fn stall(id: u64, ms: u64, ended: bool, stacks: Vec<StackCount>) -> Stall {
        Stall {
            id,
            start_unix_ms: 10_000 + id,
            duration_ns: ended.then_some(ms * 1_000_000),
            elapsed_ns: ms * 1_000_000,
            worker: 0,
            tid: 1,
            task: Some(id),
            spawned_at: "src/main.rs:1:1".into(),
            in_block_in_place: false,
            stacks,
            samples_lost: 0,
            anatomy: None,
            unobserved: false,
        }
    }

    fn stack(function: &str, count: u64) -> StackCount {
        let frames =
            vec![Frame { function: function.into(), file: None, line: None, inlined: false, kind: FrameKind::User }];
        StackCount { frames, count }
    }

    fn alerts(stalls: Vec<Stall>) -> Vec<Alert> {
        let s = Snapshot {
            at_unix_ms: 10_500,
            stalls,
            process: ProcessInfo { stack_sampling: true, ..ProcessInfo::default() },
            ..Snapshot::default()
        };
        Checks::default().evaluate(&s, &Interval::default(), &Config::default()).into_iter().map(|r| r.alert).collect()
    }

    /// Defect: a stall with one sample of zero frames raised "14.3 ms in , task spawned at …".
    #[test]
    fn a_stall_whose_samples_have_no_frame_is_no_stack_sample_never_an_empty_name() {
        let a = alerts(vec![stall(1, 14, true, vec![StackCount { frames: vec![], count: 1 }])]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].summary.starts_with("blocking poll: 14.0 ms in (no stack sample), task"), "{}", a[0].summary);
        assert_eq!(a[0].subject, NO_STACK);
        // An empty stack sampled more than a real one does not hide the real one.
        let a = alerts(vec![stall(1, 14, true, vec![StackCount { frames: vec![], count: 5 }, stack("app::f", 1)])]);
        assert!(a[0].summary.contains(" in f, "), "{}", a[0].summary);
    }

    /// Defect: a stall that had just started (no samples yet) raised a one-tick "in no stack
    /// sample" alert, which flipped to the culprit at the next tick.
    #[test]
    fn a_running_stall_without_samples_yet_raises_no_alert() {
        assert!(alerts(vec![stall(1, 11, false, vec![])]).is_empty());
        // Once sampled, it names the culprit.
        let a = alerts(vec![stall(1, 12, false, vec![stack("app::f", 1)])]);
        assert_eq!(a[0].subject, "app::f");
        // Once ended without a sample, it is "no stack sample".
        assert_eq!(alerts(vec![stall(1, 12, true, vec![])])[0].subject, NO_STACK);
    }

    /// Defect: "10.8 ms in no stack sample" in the alert where the report's table said
    /// "10.2 ms (no stack sample)": the alert counted a running stall without samples yet under
    /// "no stack sample"; the table counted it under its culprit once sampled.
    #[test]
    fn the_no_stack_alert_counts_the_stalls_the_report_counts() {
        let a = alerts(vec![stall(1, 10, true, vec![]), stall(2, 11, false, vec![])]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].summary.starts_with("blocking poll: 10.0 ms in (no stack sample)"), "{}", a[0].summary);
    }

    #[test]
    fn the_history_keeps_a_passed_alert_with_its_peak_count_and_duration() {
        let raised = |value: u64| Raised {
            alert: Alert {
                kind: AlertKind::BlockingPoolStarved,
                subject: "blocking pool".into(),
                summary: format!("blocking pool starved: {value} queued"),
                what_to_do: String::new(),
            },
            figure: AlertFigure { value, unit: PeakUnit::Queued },
        };
        let mut h = History::default();
        h.update(1_000, &[]);
        h.update(1_100, &[raised(5)]);
        h.update(1_200, &[raised(22)]);
        h.update(1_300, &[raised(3)]);
        h.update(1_400, &[]);
        h.update(1_500, &[raised(1)]);
        h.update(1_600, &[]);
        let (records, evicted) = h.records();
        assert_eq!(evicted, 0);
        let r = &records[0];
        assert!(!r.active);
        assert_eq!((r.first_unix_ms, r.last_unix_ms, r.count), (1_100, 1_500, 2));
        assert_eq!((r.peak.value, r.peak_unix_ms), (22, 1_200));
        assert_eq!(r.peak_summary, "blocking pool starved: 22 queued");
        assert_eq!(r.active_ns, 400_000_000);
    }

    #[test]
    fn the_history_is_bounded_and_evicts_the_oldest_inactive_record() {
        let raised = |i: usize| Raised {
            alert: Alert {
                kind: AlertKind::PoolSaturated,
                subject: format!("pool {i}"),
                summary: String::new(),
                what_to_do: String::new(),
            },
            figure: AlertFigure { value: 1, unit: PeakUnit::Waiters },
        };
        let mut h = History::default();
        for i in 0..ALERT_HISTORY_MAX + 10 {
            h.update(i as u64, &[raised(i)]);
        }
        let (records, evicted) = h.records();
        assert_eq!((records.len(), evicted), (ALERT_HISTORY_MAX, 10));
        assert_eq!(records[0].subject, "pool 10");
    }
}
