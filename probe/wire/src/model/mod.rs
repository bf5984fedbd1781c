//! The client's model: one fold of what a probe sends (live, or read back from a recording).
//!
//! [`Model`] is the only place a client folds the update stream. `stallscope report` (text and
//! JSON), `stallscope export` (SVG and folded stacks), `stallscope record`'s totals and the
//! terminal UI (attach and replay) all read it, so they cannot disagree about what was seen.
//!
//! **Which copy of a stall wins.** A stall arrives several times: a `StallStarted` (no samples
//! yet), a `StallEnded` (final duration, samples, anatomy), and inside each tick's snapshot (the
//! recent ones) and interval. The model keeps one copy per stall id, replaced only by a strictly
//! more complete one ([`more_complete`]): an ended copy over a running one, then the one with
//! more samples, then the one that had run longer, then the one with more distinct stacks. An
//! equal copy never replaces the one kept, so a late repeat of an older state cannot undo an end.
//!
//! **Alerts.** An alert is keyed by its kind and subject (its summary when the subject is
//! empty, as from probes that sent none). Each key keeps its history over the stream
//! ([`SeenAlert`]): first and last tick, ticks, episodes, the peak figure and when the current
//! episode began.
//!
//! **Bounds.** A live client caps the stalls it keeps ([`Model::with_stall_limit`]): the oldest
//! ids go first, are counted, and do not come back when the probe repeats them. Probe error
//! messages are kept up to [`MAX_ERRORS`].
//!
//! [`Model::finish`] turns the fold into a [`Summary`], what the reports print: the stalls of
//! the recording's span longest first, the functions they blame, alerts, drops and damage.
//! [`folded`] is the one stack fold, which every flame graph derives from.

pub mod folded;
pub mod report;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::recording::{Recording, RecordingHeader, Skipped, Stop};
use crate::{
    Alert, AlertFigure, AlertKind, AlertRecord, Drops, FrameKind, ProcessInfo, Received, Snapshot, Stall, Update,
};

/// Probe error messages a model keeps; later ones are counted in [`Model::errors_dropped`].
pub const MAX_ERRORS: usize = 100;

/// How an alert is told apart over a stream: its kind and subject (its summary when the
/// subject is empty).
pub type AlertKey = (AlertKind, String);

/// The key of an alert ([`AlertKey`]).
pub fn alert_key(a: &Alert) -> AlertKey {
    (a.kind, if a.subject.is_empty() { a.summary.clone() } else { a.subject.clone() })
}

/// Whether `new` is a strictly more complete copy of a stall than `old` (the module docs give
/// the rule; an equal copy is not).
pub fn more_complete(new: &Stall, old: &Stall) -> bool {
    let rank = |s: &Stall| (s.duration_ns.is_some(), s.sample_count(), s.elapsed_ns, s.stacks.len());
    rank(new) > rank(old)
}

/// An alert as seen over a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenAlert {
    /// The alert, as its latest occurrence put it.
    pub alert: Alert,
    /// First snapshot that carried it, ms since the Unix epoch.
    pub first_unix_ms: u64,
    /// Last snapshot that carried it.
    pub last_unix_ms: u64,
    /// Snapshots that carried it.
    pub ticks: u64,
    /// Separate times it became active in the recording (a tick without it ends one).
    pub count: u64,
    /// The worst figure seen while it was active in the recording (from the probe's alert
    /// history; `None` from a probe without one).
    pub peak: Option<AlertFigure>,
    /// When that peak was seen, ms since the Unix epoch.
    pub peak_unix_ms: u64,
    /// The alert's summary at that peak (the latest summary without a peak).
    pub peak_summary: String,
    /// When its latest episode began (the first tick of the current run of ticks that carried
    /// it), ms since the Unix epoch: what the UI shows as "since".
    pub since_unix_ms: u64,
    /// Whether it was active at the last tick.
    pub active_at_end: bool,
}

/// Stalled time attributed to one function: the top user frame of each stall.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionStalls {
    /// The function (or, for a stall without a user frame, its innermost frame, or
    /// `(no stack sample)`).
    pub function: String,
    /// Source file of that frame in the longest of these stalls.
    pub file: Option<String>,
    /// Source line of that frame in the longest of these stalls.
    pub line: Option<u32>,
    /// Kind of that frame (`None` without samples).
    pub kind: Option<FrameKind>,
    /// Stalls attributed to it.
    pub stalls: u64,
    /// Their total duration, nanoseconds.
    pub stalled_ns: u64,
    /// The longest of them, nanoseconds.
    pub longest_ns: u64,
    /// Stack samples taken in them.
    pub samples: u64,
}

/// Damage the recording reader stepped over or stopped at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Damage {
    /// Regions skipped.
    pub skipped: Vec<Skipped>,
    /// Where reading stopped before the end of the file.
    pub stop: Option<Stop>,
    /// Intact updates that could not be rebuilt (their definitions were in a damaged region).
    pub lost: u64,
}

impl Damage {
    /// Whether anything was damaged.
    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.stop.is_none() && self.lost == 0
    }

    /// One line per problem: `skipped bytes A..B (N bytes): reason`, `recording ends at byte N:
    /// reason`, `N updates lost after damage`.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.skipped.iter().map(|s| s.to_string()).collect();
        if let Some(s) = &self.stop {
            out.push(format!("recording ends at byte {}: {}", s.offset, s.reason));
        }
        if self.lost > 0 {
            out.push(format!(
                "{} update{} could not be rebuilt after the damage (they refer to definitions in a skipped region)",
                self.lost,
                if self.lost == 1 { "" } else { "s" }
            ));
        }
        out
    }
}

/// Everything folded out of a recording or a live stream.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The recording's header (process, writer, creation time).
    pub header: RecordingHeader,
    /// Every stall that started in the recording's span, once, longest first.
    pub stalls: Vec<Stall>,
    /// Stalls the first snapshot carried that started before the recording did (a new client
    /// gets the probe's recent stalls): not part of the report's figures.
    pub earlier_stalls: Vec<Stall>,
    /// The first snapshot (the state when the recording started).
    pub first: Option<Snapshot>,
    /// The last snapshot (cumulative state at the end).
    pub last: Option<Snapshot>,
    /// Updates received.
    pub updates: u64,
    /// Ticks among them.
    pub ticks: u64,
    /// Time of the last event (snapshot, stall end), ms since the Unix epoch.
    pub end_unix_ms: Option<u64>,
    /// Time of the first event.
    pub first_unix_ms: Option<u64>,
    /// Alerts seen, in order of first appearance.
    pub alerts: Vec<SeenAlert>,
    /// Updates the probe dropped for this client (its queue overflowed).
    pub dropped_intervals: u64,
    /// `Dropped` notices received.
    pub dropped_notices: u64,
    /// Error messages the probe sent.
    pub errors: Vec<String>,
    /// Damage in the file.
    pub damage: Damage,
}

/// The fold of an update stream (see the module docs for its rules).
#[derive(Debug, Clone)]
pub struct Model {
    header: RecordingHeader,
    stalls: BTreeMap<u64, Stall>,
    /// Most stalls kept (`None`: all of them).
    stall_limit: Option<usize>,
    stalls_evicted: u64,
    /// Bumped whenever a stall is added or replaced: what derived views (flame graphs) check.
    stalls_revision: u64,
    /// Stalls seen as they happened (a start or end message, or a tick's interval), as opposed
    /// to only in snapshots' lists of recent stalls, which a new client receives from before it
    /// connected.
    live: HashSet<u64>,
    first: Option<Snapshot>,
    last: Option<Snapshot>,
    /// Alert keys active at the previous tick.
    active_keys: Vec<AlertKey>,
    updates: u64,
    ticks: u64,
    first_unix_ms: Option<u64>,
    end_unix_ms: Option<u64>,
    alerts: Vec<SeenAlert>,
    alert_index: HashMap<AlertKey, usize>,
    dropped_intervals: u64,
    dropped_notices: u64,
    errors: Vec<String>,
    errors_dropped: u64,
}

impl Model {
    /// An empty fold for a recording with this header (a live client passes
    /// [`RecordingHeader::new`] for the process it connects to).
    pub fn new(header: RecordingHeader) -> Model {
        Model {
            header,
            stalls: BTreeMap::new(),
            stall_limit: None,
            stalls_evicted: 0,
            stalls_revision: 0,
            live: HashSet::new(),
            first: None,
            last: None,
            active_keys: Vec::new(),
            updates: 0,
            ticks: 0,
            first_unix_ms: None,
            end_unix_ms: None,
            alerts: Vec::new(),
            alert_index: HashMap::new(),
            dropped_intervals: 0,
            dropped_notices: 0,
            errors: Vec::new(),
            errors_dropped: 0,
        }
    }

    /// Keeps at most `limit` stalls (a live client's memory bound); the oldest ids go first.
    pub fn with_stall_limit(mut self, limit: usize) -> Model {
        self.stall_limit = Some(limit);
        self
    }

    /// Takes one received message into account.
    pub fn push(&mut self, received: &Received) {
        match received {
            Received::Update(u) => self.update(u),
            Received::Dropped { intervals } => {
                self.dropped_notices += 1;
                self.dropped_intervals = self.dropped_intervals.saturating_add(*intervals);
            }
            Received::Error { message } => {
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(message.clone());
                } else {
                    self.errors_dropped += 1;
                }
            }
            // A reply to one client's request, not part of the probe's stream.
            Received::TaskDump(_) => {}
        }
    }

    fn seen_at(&mut self, ms: u64) {
        self.first_unix_ms = Some(self.first_unix_ms.map_or(ms, |f| f.min(ms)));
        self.end_unix_ms = Some(self.end_unix_ms.map_or(ms, |e| e.max(ms)));
    }

    fn keep_stall(&mut self, s: &Stall) {
        use std::collections::btree_map::Entry;
        self.seen_at(s.start_unix_ms);
        self.seen_at(s.end_unix_ms());
        let oldest_kept = self.stalls.first_key_value().map(|(k, _)| *k);
        match self.stalls.entry(s.id) {
            Entry::Occupied(mut e) => {
                if more_complete(s, e.get()) {
                    e.insert(s.clone());
                    self.stalls_revision += 1;
                }
            }
            Entry::Vacant(e) => {
                if self.stalls_evicted > 0 && oldest_kept.is_some_and(|k| s.id < k) {
                    // Older than everything kept: it was evicted before; do not bring it back.
                    return;
                }
                e.insert(s.clone());
                self.stalls_revision += 1;
            }
        }
        while self.stall_limit.is_some_and(|max| self.stalls.len() > max) {
            if let Some((id, _)) = self.stalls.pop_first() {
                self.live.remove(&id);
                self.stalls_evicted += 1;
            }
        }
    }

    fn update(&mut self, u: &Update) {
        self.updates += 1;
        match u {
            Update::StallStarted(s) | Update::StallEnded(s) => {
                self.keep_stall(s);
                if self.stalls.contains_key(&s.id) {
                    self.live.insert(s.id);
                }
            }
            Update::Tick { snapshot, interval } => {
                self.ticks += 1;
                self.seen_at(snapshot.at_unix_ms);
                for s in snapshot.stalls.iter().chain(&interval.stalls) {
                    self.keep_stall(s);
                }
                for s in &interval.stalls {
                    if self.stalls.contains_key(&s.id) {
                        self.live.insert(s.id);
                    }
                }
                let mut active = Vec::with_capacity(snapshot.alerts.len());
                for a in &snapshot.alerts {
                    // One entry per alert subject: the summary's figures change every tick.
                    let key = alert_key(a);
                    let figure = snapshot
                        .alert_history
                        .iter()
                        .find(|r| r.active && r.kind == a.kind && r.subject == a.subject)
                        .map(|r: &AlertRecord| r.latest);
                    let new_episode = !self.active_keys.contains(&key);
                    let at = snapshot.at_unix_ms;
                    match self.alert_index.get(&key) {
                        Some(&i) => {
                            let seen = &mut self.alerts[i];
                            seen.last_unix_ms = at;
                            seen.ticks += 1;
                            seen.count += u64::from(new_episode);
                            if new_episode {
                                seen.since_unix_ms = at;
                            }
                            seen.alert = a.clone();
                            if figure.is_some_and(|f| seen.peak.is_none_or(|p| f.value > p.value)) {
                                seen.peak = figure;
                                seen.peak_unix_ms = at;
                                seen.peak_summary = a.summary.clone();
                            } else if seen.peak.is_none() {
                                seen.peak_summary = a.summary.clone();
                            }
                        }
                        None => {
                            self.alert_index.insert(key.clone(), self.alerts.len());
                            self.alerts.push(SeenAlert {
                                alert: a.clone(),
                                first_unix_ms: at,
                                last_unix_ms: at,
                                ticks: 1,
                                count: 1,
                                peak: figure,
                                peak_unix_ms: at,
                                peak_summary: a.summary.clone(),
                                since_unix_ms: at,
                                active_at_end: false,
                            });
                        }
                    }
                    active.push(key);
                }
                for (key, &i) in &self.alert_index {
                    self.alerts[i].active_at_end = active.contains(key);
                }
                self.active_keys = active;
                if self.first.as_ref().is_none_or(|f| snapshot.seq < f.seq && snapshot.at_unix_ms <= f.at_unix_ms) {
                    self.first = Some((**snapshot).clone());
                }
                if self.last.as_ref().is_none_or(|l| snapshot.seq >= l.seq || snapshot.at_unix_ms >= l.at_unix_ms) {
                    self.last = Some((**snapshot).clone());
                }
            }
        }
    }

    /// Distinct stalls kept so far.
    pub fn stall_count(&self) -> usize {
        self.stalls.len()
    }

    /// The stalls kept, by id (each in its most complete copy).
    pub fn stalls(&self) -> &BTreeMap<u64, Stall> {
        &self.stalls
    }

    /// One stall by id.
    pub fn stall(&self, id: u64) -> Option<&Stall> {
        self.stalls.get(&id)
    }

    /// Stalls dropped to stay within [`Model::with_stall_limit`].
    pub fn stalls_evicted(&self) -> u64 {
        self.stalls_evicted
    }

    /// A number that changes whenever a stall is added or replaced: a view derived from the
    /// stalls (a flame graph) is rebuilt only when it moved.
    pub fn stalls_revision(&self) -> u64 {
        self.stalls_revision
    }

    /// Updates seen so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Ticks seen so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Updates the probe dropped for this client so far.
    pub fn dropped_intervals(&self) -> u64 {
        self.dropped_intervals
    }

    /// Error messages the probe sent (the first [`MAX_ERRORS`]).
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Error messages past [`MAX_ERRORS`], counted and not kept.
    pub fn errors_dropped(&self) -> u64 {
        self.errors_dropped
    }

    /// The latest snapshot (cumulative state).
    pub fn last(&self) -> Option<&Snapshot> {
        self.last.as_ref()
    }

    /// The process: from the latest snapshot, else the header.
    pub fn process(&self) -> &ProcessInfo {
        match &self.last {
            Some(s) if !s.process.name.is_empty() => &s.process,
            _ => &self.header.process,
        }
    }

    /// Time of the latest event (snapshot, stall start or end), ms since the Unix epoch: "now"
    /// in data time, so windows behave the same live and in replay.
    pub fn end_unix_ms(&self) -> Option<u64> {
        self.end_unix_ms
    }

    /// Every alert seen, in order of first appearance.
    pub fn alerts(&self) -> &[SeenAlert] {
        &self.alerts
    }

    /// The alerts active at the latest tick.
    pub fn active_alerts(&self) -> impl Iterator<Item = &SeenAlert> {
        self.alerts.iter().filter(|a| a.active_at_end)
    }

    /// The summary, with `damage` from the reader.
    pub fn finish(self, damage: Damage) -> Summary {
        // The recording's span starts when it was created. A stall that started before and
        // was only ever seen in snapshots' lists of recent stalls (what a new client is sent)
        // is kept apart; one seen ending during the recording overlaps it and counts.
        let created = match self.end_unix_ms {
            Some(e) if e < self.header.created_unix_ms => 0,
            _ => self.header.created_unix_ms,
        };
        let live = self.live;
        let (mut stalls, mut earlier_stalls): (Vec<Stall>, Vec<Stall>) =
            self.stalls.into_values().partition(|s| created == 0 || s.start_unix_ms >= created || live.contains(&s.id));
        earlier_stalls.sort_by_key(|s| (s.start_unix_ms, s.id));
        stalls.sort_by(|a, b| {
            b.length_ns().cmp(&a.length_ns()).then(a.start_unix_ms.cmp(&b.start_unix_ms)).then(a.id.cmp(&b.id))
        });
        Summary {
            header: self.header,
            stalls,
            earlier_stalls,
            first: self.first,
            last: self.last,
            updates: self.updates,
            ticks: self.ticks,
            end_unix_ms: self.end_unix_ms,
            first_unix_ms: self.first_unix_ms,
            alerts: self.alerts,
            dropped_intervals: self.dropped_intervals,
            dropped_notices: self.dropped_notices,
            errors: self.errors,
            damage,
        }
    }
}

impl Summary {
    /// Folds a whole recording.
    pub fn from_recording(rec: Recording) -> Summary {
        let mut model = Model::new(rec.header);
        for e in &rec.events {
            model.push(&e.event);
        }
        model.finish(Damage { skipped: rec.skipped, stop: rec.stop, lost: rec.lost })
    }

    /// When the recording started, ms since the Unix epoch: the header's creation time, or the
    /// first event for a file without one (written by hand). Earlier events (the stalls a new
    /// client is sent from before it connected) do not move it: a report covers the span the
    /// recording was made over.
    pub fn start_unix_ms(&self) -> u64 {
        match (self.header.created_unix_ms, self.first_unix_ms, self.end_unix_ms) {
            (0, Some(f), _) => f,
            // Every event is older than the file: the events' clock is not the writer's (a file
            // written by hand, a probe on another host); keep the events' own span.
            (created, Some(f), Some(e)) if e < created => f,
            (created, _, _) => created,
        }
    }

    /// The workers' busy share over the recording (first to last snapshot), or since the probe
    /// started with one snapshot ([`Snapshot::busy_ratio_since`]).
    pub fn busy_ratio(&self) -> Option<f64> {
        let last = self.last.as_ref()?;
        let first = self.first.as_ref().filter(|f| f.seq < last.seq);
        last.busy_ratio_since(first)
    }

    /// The summary of one snapshot taken in the probe's process (what `probe.report()` prints):
    /// a one-tick fold whose span is the probe's uptime, so that every stall and incident of
    /// the snapshot is in it. `writer` names who folded it.
    pub fn from_snapshot(snapshot: &Snapshot, writer: impl Into<String>) -> Summary {
        let header = RecordingHeader {
            protocol: crate::ProtocolVersion::CURRENT,
            // The wall clock of a stall's start and the probe's monotonic uptime can disagree by
            // a millisecond: the span starts at the earlier, so that no stall is left out.
            created_unix_ms: snapshot
                .stalls
                .iter()
                .map(|s| s.start_unix_ms)
                .fold(snapshot.at_unix_ms.saturating_sub(snapshot.uptime_ns / 1_000_000), u64::min),
            process: snapshot.process.clone(),
            writer: writer.into(),
        };
        let mut model = Model::new(header);
        model.push(&Received::Update(Update::Tick { snapshot: Box::new(snapshot.clone()), interval: Box::default() }));
        model.finish(Damage::default())
    }

    /// The probe's history record of an alert seen (the last snapshot's, matched by kind and
    /// subject; the active one first).
    pub fn history_of(&self, a: &SeenAlert) -> Option<&AlertRecord> {
        let history = &self.last.as_ref()?.alert_history;
        let of = |r: &&AlertRecord| r.kind == a.alert.kind && r.subject == a.alert.subject;
        history.iter().filter(of).find(|r| r.active).or_else(|| history.iter().find(of))
    }

    /// Incidents of the probe's alert history that passed without a tick of this summary
    /// seeing their alert active: those before a recording started, and, for one snapshot, all
    /// that passed since the probe started.
    pub fn passed_incidents(&self) -> Vec<&AlertRecord> {
        let Some(last) = &self.last else { return Vec::new() };
        let seen = |r: &AlertRecord| {
            self.alerts.iter().any(|a| {
                a.alert.kind == r.kind
                    && a.alert.subject == r.subject
                    && a.first_unix_ms <= r.last_unix_ms
                    && r.first_unix_ms <= a.last_unix_ms
            })
        };
        last.alert_history.iter().filter(|r| !r.active && !seen(r)).collect()
    }

    /// Incidents of the probe's alert history that had passed before the recording started.
    pub fn earlier_incidents(&self) -> Vec<&AlertRecord> {
        let start = self.start_unix_ms();
        match &self.last {
            Some(l) => l.alert_history.iter().filter(|r| r.last_unix_ms < start).collect(),
            None => Vec::new(),
        }
    }

    /// The stalls of the recording blamed on `function` (as [`Summary::functions`] groups
    /// them): how many, and the longest.
    pub fn stalls_of(&self, function: &str) -> (u64, Option<&Stall>) {
        let of: Vec<&Stall> = self.stalls.iter().filter(|s| s.culprit_function() == function).collect();
        (of.len() as u64, of.into_iter().max_by_key(|s| s.length_ns()))
    }

    /// When the last event happened (or the start, with no events).
    pub fn end_unix_ms(&self) -> u64 {
        self.end_unix_ms.unwrap_or_else(|| self.start_unix_ms()).max(self.start_unix_ms())
    }

    /// The process name and pid: from the last snapshot, else the header.
    pub fn process(&self) -> &ProcessInfo {
        match &self.last {
            Some(s) if !s.process.name.is_empty() => &s.process,
            _ => &self.header.process,
        }
    }

    /// Total stalled time of the stalls seen, nanoseconds.
    pub fn stalled_ns(&self) -> u64 {
        self.stalls.iter().map(Stall::length_ns).fold(0u64, u64::saturating_add)
    }

    /// Stalled time per top user frame, most first.
    pub fn functions(&self) -> Vec<FunctionStalls> {
        let mut by: Vec<(FunctionStalls, u64)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        // `self.stalls` is longest first, so the first stall of each group is its longest. A stall
        // that blames no code (it waited for a CPU, or was never observed) names no function.
        for s in self.stalls.iter().filter(|s| s.blames_code()) {
            let frame = s.culprit_frame();
            let function = s.culprit_function().to_string();
            let ns = s.length_ns();
            match index.get(&function) {
                Some(&i) => {
                    let f = &mut by[i].0;
                    f.stalls += 1;
                    f.stalled_ns = f.stalled_ns.saturating_add(ns);
                    f.longest_ns = f.longest_ns.max(ns);
                    f.samples += s.sample_count();
                }
                None => {
                    index.insert(function.clone(), by.len());
                    by.push((
                        FunctionStalls {
                            function,
                            file: frame.and_then(|f| f.file.clone()),
                            line: frame.and_then(|f| f.line),
                            kind: frame.map(|f| f.kind),
                            stalls: 1,
                            stalled_ns: ns,
                            longest_ns: ns,
                            samples: s.sample_count(),
                        },
                        by.len() as u64,
                    ));
                }
            }
        }
        by.sort_by(|(a, ai), (b, bi)| b.stalled_ns.cmp(&a.stalled_ns).then(ai.cmp(bi)));
        by.into_iter().map(|(f, _)| f).collect()
    }

    /// The probe's own drop counters at the end (cumulative).
    pub fn probe_drops(&self) -> Drops {
        self.last.as_ref().map(|s| s.drops.clone()).unwrap_or_default()
    }
}
