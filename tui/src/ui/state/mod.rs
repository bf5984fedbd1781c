//! Everything the UI shows, as plain data: no ratatui, no I/O.
//!
//! [`App`] is the client's [`Model`] (the one fold of what the probe sends, live or from a
//! recording, shared with `stallscope report` and `export`) plus what each view adds: its
//! selection, sorting, filters, the flame cursor, and views derived from the model and cached
//! until it changes (the flame trees, the sparkline history, smoothed rates). [`App::apply`]
//! hands each message to the model and updates those; `ui::update` changes the state in answer
//! to keys; `ui::view` draws it. Keeping this pure is what lets every view be tested from a
//! fixture.

pub mod flame_tree;
pub mod history;
pub mod picker;

use std::collections::{BTreeMap, HashMap, VecDeque};

use stallscope_wire::model::folded::Folded;
use stallscope_wire::model::Model;
use stallscope_wire::recording::RecordingHeader;
use stallscope_wire::{
    Alert, AlertKind, AlertRecord, Histogram, LocationStats, PoolStats, ProcessInfo, Received, Snapshot, Stall, Update,
};

use self::flame_tree::{FlameCursor, FlameTree};
use self::history::{History, TickPoint};

/// Stalls kept for the Stalls and Flame views; the oldest go first, and are counted.
pub const MAX_STALLS: usize = 10_000;
/// Updates held back while paused; past this the oldest are dropped (and counted).
pub const MAX_PENDING: usize = 20_000;

/// The screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Sparklines, worker busy bars, active alerts.
    Overview,
    /// The table of stall events.
    Stalls,
    /// The flame graph of stalled time.
    Flame,
    /// One row per spawn location.
    Tasks,
    /// One row per pool.
    Pools,
}

impl View {
    /// All views in tab order.
    pub const ALL: [View; 5] = [View::Overview, View::Stalls, View::Flame, View::Tasks, View::Pools];

    /// The tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Stalls => "Stalls",
            View::Flame => "Flame",
            View::Tasks => "Tasks",
            View::Pools => "Pools",
        }
    }

    /// Position in [`View::ALL`].
    pub fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A live probe; `target` is what the user asked for (or what was found).
    Live {
        /// The target as shown in the status line.
        target: String,
    },
    /// A recording file.
    Replay {
        /// The file as given.
        path: String,
    },
}

/// The connection as the status line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnStatus {
    /// First attempt in progress.
    Connecting,
    /// Receiving updates.
    Connected,
    /// Lost (or never reached); retrying.
    Reconnecting {
        /// Why the last attempt failed or the connection ended.
        reason: String,
        /// Attempts since the last success.
        attempt: u32,
        /// Milliseconds until the next attempt, when it was scheduled.
        retry_in_ms: u64,
    },
    /// Playing back a recording.
    Replay,
}

/// A table sorted by one of its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort<C> {
    /// The column.
    pub column: C,
    /// Largest (or latest) first.
    pub descending: bool,
}

/// Sortable columns of the Stalls table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallColumn {
    /// Start time.
    Time,
    /// Duration.
    Duration,
    /// Worker index.
    Worker,
    /// Spawn location.
    Location,
    /// Top user frame.
    Frame,
}

impl StallColumn {
    /// In display order.
    pub const ALL: [StallColumn; 5] =
        [StallColumn::Time, StallColumn::Duration, StallColumn::Worker, StallColumn::Location, StallColumn::Frame];
}

/// Sortable columns of the Tasks table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskColumn {
    /// Spawn location.
    Location,
    /// Live tasks.
    Live,
    /// Spawned per second.
    SpawnRate,
    /// Completed per second.
    CompleteRate,
    /// Age of the oldest live task.
    Oldest,
    /// Poll time p50.
    PollP50,
    /// Poll time p99.
    PollP99,
    /// Schedule latency p99.
    SchedP99,
}

impl TaskColumn {
    /// In display order.
    pub const ALL: [TaskColumn; 8] = [
        TaskColumn::Location,
        TaskColumn::Live,
        TaskColumn::SpawnRate,
        TaskColumn::CompleteRate,
        TaskColumn::Oldest,
        TaskColumn::PollP50,
        TaskColumn::PollP99,
        TaskColumn::SchedP99,
    ];
}

/// Cycles `cur` through `all` by `step` (±1).
pub fn cycle<C: Copy + PartialEq>(all: &[C], cur: C, step: isize) -> C {
    let n = all.len() as isize;
    let i = all.iter().position(|c| *c == cur).unwrap_or(0) as isize;
    all[((i + step).rem_euclid(n)) as usize]
}

/// A line of text being typed (a filter or a search).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The text.
    pub text: String,
    /// Whether keys go to it.
    pub editing: bool,
}

/// State of the Stalls view.
#[derive(Debug, Clone, PartialEq)]
pub struct StallsView {
    /// Selected row.
    pub selected: usize,
    /// Sort order.
    pub sort: Sort<StallColumn>,
    /// Substring filter over time, worker, task, location and frame.
    pub filter: Input,
    /// The stall opened with Enter, by id.
    pub detail: Option<u64>,
    /// Cursor in the detail's flame graph.
    pub detail_cursor: FlameCursor,
    /// The detail's flame graph, from the stall's folded stacks; rebuilt only when another
    /// stall is opened or the model replaces this one.
    pub detail_tree: FlameTree,
    /// (stall id, model revision) `detail_tree` was built for.
    detail_built: Option<(u64, u64)>,
}

impl Default for StallsView {
    fn default() -> Self {
        StallsView {
            selected: 0,
            sort: Sort { column: StallColumn::Time, descending: true },
            filter: Input::default(),
            detail: None,
            detail_cursor: FlameCursor::default(),
            detail_tree: FlameTree::default(),
            detail_built: None,
        }
    }
}

/// A task dump as the Tasks view shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum DumpState {
    /// Nothing asked.
    None,
    /// Asked; the reply has not come.
    Waiting {
        /// The location the dump was asked from.
        location: String,
    },
    /// The probe's answer, already filtered to one location when it could be.
    Ready {
        /// The location the dump was asked from.
        location: String,
        /// Groups of identical traces: (count, trace text), largest first.
        groups: Vec<(u64, String)>,
        /// A note on the dump (truncation, tasks of other locations).
        note: String,
    },
    /// The probe refused or failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// State of the Tasks view.
#[derive(Debug, Clone, PartialEq)]
pub struct TasksView {
    /// Selected row.
    pub selected: usize,
    /// Sort order.
    pub sort: Sort<TaskColumn>,
    /// The location opened with Enter.
    pub detail: Option<String>,
    /// Show the probe's own and Tokio-internal locations too.
    pub show_internal: bool,
    /// The last task dump.
    pub dump: DumpState,
    /// First line of the dump shown (scrolling).
    pub dump_scroll: u16,
}

impl Default for TasksView {
    fn default() -> Self {
        TasksView {
            selected: 0,
            sort: Sort { column: TaskColumn::Live, descending: true },
            detail: None,
            show_internal: false,
            dump: DumpState::None,
            dump_scroll: 0,
        }
    }
}

/// Window of stalled time the Flame view folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlameWindow {
    /// Stalls that ended (or are running) in the last 10 seconds.
    Last10s,
    /// In the last minute.
    LastMinute,
    /// Every stall kept.
    All,
}

impl FlameWindow {
    /// The window's length, if bounded.
    pub fn millis(self) -> Option<u64> {
        match self {
            FlameWindow::Last10s => Some(10_000),
            FlameWindow::LastMinute => Some(60_000),
            FlameWindow::All => None,
        }
    }

    /// As shown on screen.
    pub fn label(self) -> &'static str {
        match self {
            FlameWindow::Last10s => "last 10 s",
            FlameWindow::LastMinute => "last minute",
            FlameWindow::All => "all",
        }
    }

    /// The next window (`w`).
    pub fn next(self) -> FlameWindow {
        match self {
            FlameWindow::Last10s => FlameWindow::LastMinute,
            FlameWindow::LastMinute => FlameWindow::All,
            FlameWindow::All => FlameWindow::Last10s,
        }
    }
}

/// State of the Flame view.
#[derive(Debug, Clone)]
pub struct FlameState {
    /// Which stalls are folded.
    pub window: FlameWindow,
    /// Their folded stacks (what `e` exports, zoomed).
    pub folded: Folded,
    /// The tree built from `folded`, which the view draws.
    pub tree: FlameTree,
    /// Zoom, selection and search.
    pub cursor: FlameCursor,
    /// The search being typed (`/`).
    pub search: Input,
    /// Stalls folded into `tree`.
    pub stalls: usize,
    /// Whether `tree` must be rebuilt from the stalls before it is shown.
    pub stale: bool,
}

impl Default for FlameState {
    fn default() -> Self {
        FlameState {
            window: FlameWindow::All,
            folded: Folded::default(),
            tree: FlameTree::default(),
            cursor: FlameCursor::default(),
            search: Input::default(),
            stalls: 0,
            stale: true,
        }
    }
}

/// An alert as the Overview lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlert {
    /// The alert (latest text).
    pub alert: Alert,
    /// When it was first seen active (data time, unix ms).
    pub since_unix_ms: u64,
}

/// Spawn and completion rates of one location, smoothed over about a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Tasks spawned per second.
    pub spawned_per_s: f64,
    /// Tasks completed per second.
    pub completed_per_s: f64,
    last: Option<(u64, u64, u64)>,
}

/// Replay position, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// First data time of the recording (unix ms).
    pub start_unix_ms: u64,
    /// Last data time of the recording (unix ms).
    pub end_unix_ms: u64,
    /// Where playback is (unix ms).
    pub at_unix_ms: u64,
    /// Playing or paused.
    pub playing: bool,
    /// Playback speed (1.0 = real time).
    pub speed: f64,
}

/// The whole UI state.
#[derive(Debug, Clone)]
pub struct App {
    /// Where the data comes from.
    pub source: Source,
    /// Connection state.
    pub status: ConnStatus,
    /// The process behind the probe, once known (from the connection, then each snapshot).
    pub process: Option<ProcessInfo>,
    /// The fold of everything received: stalls (at most [`MAX_STALLS`]), snapshots, alerts,
    /// drops, errors.
    pub model: Model,
    /// Per-second series for the sparklines.
    pub history: History,
    /// Active alerts, newest first (from the model, at each tick).
    pub alerts: Vec<ActiveAlert>,
    /// Incidents of the probe's alert history that have passed, most recent first.
    pub passed_alerts: Vec<AlertRecord>,
    /// Busy ratio of each worker over the last interval (index = worker index).
    pub worker_busy: Vec<(u32, f64)>,
    prev_workers: HashMap<u32, u64>,
    prev_at_ms: Option<u64>,
    /// Spawn and completion rates per location.
    pub rates: HashMap<String, Rates>,
    /// Updates this UI dropped while paused.
    pub paused_dropped: u64,
    /// Client-side recording file, when recording.
    pub recording: Option<String>,
    /// The screen shown.
    pub view: View,
    /// Help overlay shown.
    pub help: bool,
    /// First line of the help shown.
    pub help_scroll: u16,
    /// The last first line that still fills the help's box, as the last frame drew it (the
    /// help's length depends on the screen's width); scrolling stops there.
    pub help_scroll_max: std::cell::Cell<u16>,
    /// Display frozen (`space`); updates wait in `pending`.
    pub paused: bool,
    pending: VecDeque<Received>,
    /// Stalls view state.
    pub stalls_view: StallsView,
    /// Tasks view state.
    pub tasks_view: TasksView,
    /// Pools view: selected row.
    pub pools_selected: usize,
    /// Flame view state.
    pub flame: FlameState,
    /// A one-line message for the user (an export written, an error).
    pub message: Option<String>,
    /// Replay timeline, when replaying.
    pub timeline: Option<Timeline>,
    /// Draw without colours (`NO_COLOR`).
    pub no_color: bool,
    /// Set by `q`: the run loop ends.
    pub quit: bool,
}

impl App {
    /// An empty state for `source`.
    pub fn new(source: Source) -> App {
        let status = match source {
            Source::Live { .. } => ConnStatus::Connecting,
            Source::Replay { .. } => ConnStatus::Replay,
        };
        App {
            source,
            status,
            process: None,
            model: new_model(),
            history: History::default(),
            alerts: Vec::new(),
            passed_alerts: Vec::new(),
            worker_busy: Vec::new(),
            prev_workers: HashMap::new(),
            prev_at_ms: None,
            rates: HashMap::new(),
            paused_dropped: 0,
            recording: None,
            view: View::Overview,
            help: false,
            help_scroll: 0,
            help_scroll_max: std::cell::Cell::new(u16::MAX),
            paused: false,
            pending: VecDeque::new(),
            stalls_view: StallsView::default(),
            tasks_view: TasksView::default(),
            pools_selected: 0,
            flame: FlameState::default(),
            message: None,
            timeline: None,
            no_color: false,
            quit: false,
        }
    }

    /// Forgets every piece of data (replay seeking back) but keeps what the user chose: the view,
    /// sorting, filters, the flame window and zoom.
    pub fn reset_data(&mut self) {
        let mut fresh = App::new(self.source.clone());
        fresh.status = self.status.clone();
        fresh.recording = self.recording.take();
        fresh.view = self.view;
        fresh.help = self.help;
        fresh.stalls_view = std::mem::take(&mut self.stalls_view);
        // The new model's revisions start again: the open stall's tree is rebuilt.
        fresh.stalls_view.detail_built = None;
        fresh.tasks_view = std::mem::take(&mut self.tasks_view);
        fresh.pools_selected = self.pools_selected;
        fresh.flame.window = self.flame.window;
        fresh.flame.cursor = self.flame.cursor.clone();
        fresh.flame.search = self.flame.search.clone();
        fresh.flame.tree = std::mem::take(&mut self.flame.tree);
        fresh.timeline = self.timeline;
        fresh.no_color = self.no_color;
        *self = fresh;
    }

    /// Takes in what the probe sent. While paused it waits (bounded) and is applied on resume.
    pub fn apply(&mut self, r: Received) {
        if self.paused {
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.paused_dropped += 1;
            }
            self.pending.push_back(r);
            return;
        }
        self.apply_now(r);
    }

    /// Freezes or unfreezes the display; unfreezing applies what waited.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            while let Some(r) = self.pending.pop_front() {
                self.apply_now(r);
            }
        }
    }

    /// Updates waiting while paused.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn apply_now(&mut self, r: Received) {
        let revision = self.model.stalls_revision();
        self.model.push(&r);
        match r {
            Received::Update(Update::Tick { snapshot, interval }) => {
                self.process = Some(snapshot.process.clone());
                let lag_p99 = interval.lag.quantile_ns(0.99).unwrap_or(0);
                self.history.push(TickPoint {
                    at_unix_ms: snapshot.at_unix_ms,
                    lag_p99_ns: lag_p99,
                    stalled_ns: interval.stalled_ns,
                    live_tasks: live_tasks(&snapshot),
                    blocking_queue: snapshot.runtime.as_ref().map_or(0, |r| r.blocking_queue_depth),
                    pool_waiters: snapshot.pools.iter().map(|p| p.waiters).sum(),
                });
                self.update_workers(&snapshot);
                self.update_rates(&snapshot);
                self.update_alerts();
                let mut passed: Vec<_> = snapshot.alert_history.iter().filter(|r| !r.active).cloned().collect();
                passed.sort_by_key(|r| std::cmp::Reverse(r.last_unix_ms));
                self.passed_alerts = passed;
                if self.flame.window != FlameWindow::All {
                    // The window slides even when no stall comes.
                    self.flame.stale = true;
                }
            }
            Received::Error { message } => self.message = Some(format!("probe: {message}")),
            _ => {}
        }
        if self.model.stalls_revision() != revision {
            self.flame.stale = true;
            self.refresh_detail();
        }
    }

    /// Latest cumulative snapshot.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.model.last()
    }

    /// Stalls kept, by id (each in its most complete copy).
    pub fn stalls(&self) -> &BTreeMap<u64, Stall> {
        self.model.stalls()
    }

    /// Latest data time (unix ms): "now" for windows, so replay behaves like live.
    pub fn now_unix_ms(&self) -> u64 {
        self.model.end_unix_ms().unwrap_or(0)
    }

    /// Busy ratio per worker, smoothed over about a second. The source is Tokio's own busy time
    /// per worker (`RuntimeStats::worker_busy_ns`), the same one the reports use
    /// (`Snapshot::busy_ratio_since` says why); snapshots without it (older probes) fall back
    /// to the watchdog's estimate per runtime thread.
    fn update_workers(&mut self, s: &Snapshot) {
        let dt_ns = self.prev_at_ms.map(|p| s.at_unix_ms.saturating_sub(p) * 1_000_000);
        let sources: Vec<(u32, u64)> = match s.runtime.as_ref().filter(|r| !r.worker_busy_ns.is_empty()) {
            Some(r) => r.worker_busy_ns.iter().enumerate().map(|(i, b)| (i as u32, *b)).collect(),
            // A thread that never polled a task (the thread that called `block_on` and
            // spawns) is not a worker to watch.
            None => s.workers.iter().filter(|w| w.polls > 0).map(|w| (w.index, w.busy_ns)).collect(),
        };
        let mut busy = Vec::with_capacity(sources.len());
        for (index, busy_ns) in sources {
            let old = self.worker_busy.iter().find(|(i, _)| *i == index).map(|b| b.1);
            let ratio = match (dt_ns, self.prev_workers.get(&index)) {
                (Some(dt), Some(prev)) if dt > 0 => {
                    let now = (busy_ns.saturating_sub(*prev) as f64 / dt as f64).min(1.0);
                    let a = 1.0 - (-(dt as f64) / 1e9).exp();
                    old.map_or(now, |o| o + a * (now - o))
                }
                _ => old.unwrap_or(0.0),
            };
            busy.push((index, ratio));
            self.prev_workers.insert(index, busy_ns);
        }
        busy.sort_by_key(|(i, _)| *i);
        self.worker_busy = busy;
        self.prev_at_ms = Some(s.at_unix_ms);
    }

    fn update_rates(&mut self, s: &Snapshot) {
        for l in &s.locations {
            let r = self.rates.entry(l.location.clone()).or_default();
            if let Some((at, spawned, completed)) = r.last {
                let dt = s.at_unix_ms.saturating_sub(at) as f64 / 1000.0;
                if dt > 0.0 {
                    // Exponential smoothing with a one-second time constant.
                    let a = 1.0 - (-dt).exp();
                    let sp = l.spawned.saturating_sub(spawned) as f64 / dt;
                    let co = l.completed.saturating_sub(completed) as f64 / dt;
                    r.spawned_per_s += a * (sp - r.spawned_per_s);
                    r.completed_per_s += a * (co - r.completed_per_s);
                }
            }
            r.last = Some((s.at_unix_ms, l.spawned, l.completed));
        }
    }

    /// The Overview's list: the model's active alerts, with when their episode began.
    fn update_alerts(&mut self) {
        let mut next: Vec<ActiveAlert> = self
            .model
            .active_alerts()
            .map(|a| ActiveAlert { alert: a.alert.clone(), since_unix_ms: a.since_unix_ms })
            .collect();
        next.sort_by(|a, b| b.since_unix_ms.cmp(&a.since_unix_ms).then_with(|| a.alert.subject.cmp(&b.alert.subject)));
        self.alerts = next;
    }

    // === derived rows ===

    /// Stalls in progress right now (started, not ended).
    pub fn stalls_in_progress(&self) -> impl Iterator<Item = &Stall> {
        self.stalls().values().filter(|s| s.duration_ns.is_none())
    }

    /// The Stalls table: filtered and sorted.
    pub fn stall_rows(&self) -> Vec<&Stall> {
        let needle = self.stalls_view.filter.text.to_lowercase();
        let mut rows: Vec<&Stall> =
            self.stalls().values().filter(|s| needle.is_empty() || stall_matches(s, &needle)).collect();
        let sort = self.stalls_view.sort;
        rows.sort_by(|a, b| {
            let o = match sort.column {
                StallColumn::Time => a.start_unix_ms.cmp(&b.start_unix_ms),
                StallColumn::Duration => a.length_ns().cmp(&b.length_ns()),
                StallColumn::Worker => a.worker.cmp(&b.worker),
                StallColumn::Location => a.spawned_at.cmp(&b.spawned_at),
                StallColumn::Frame => frame_name(a).cmp(&frame_name(b)),
            }
            .then(a.id.cmp(&b.id));
            if sort.descending {
                o.reverse()
            } else {
                o
            }
        });
        rows
    }

    /// The stall open in the Stalls view's detail.
    pub fn stall_detail(&self) -> Option<&Stall> {
        self.stalls_view.detail.and_then(|id| self.model.stall(id))
    }

    /// Stalls the Flame view folds for its window: those that blame code (a poll that only
    /// waited for a CPU shows whatever code was preempted, which is not to blame).
    pub fn flame_stalls(&self) -> Vec<&Stall> {
        let from = self.flame.window.millis().map(|w| self.now_unix_ms().saturating_sub(w));
        self.stalls().values().filter(|s| s.blames_code() && from.is_none_or(|f| s.end_unix_ms() >= f)).collect()
    }

    /// Rebuilds the flame tree if stalls or the window changed, keeping zoom and selection on the
    /// same frames when they still exist.
    pub fn refresh_flame(&mut self) {
        if !self.flame.stale {
            return;
        }
        let stalls = self.flame_stalls();
        let folded = Folded::from_stalls(stalls.iter().copied());
        let tree = FlameTree::from_folded(&folded);
        self.flame.stalls = stalls.len();
        self.flame.cursor = self.flame.cursor.rebase(&self.flame.tree, &tree);
        self.flame.folded = folded;
        self.flame.tree = tree;
        self.flame.stale = false;
    }

    /// Rebuilds the open stall's flame tree if another stall was opened or the model replaced
    /// it (a running stall that got samples or ended); otherwise keeps it.
    pub fn refresh_detail(&mut self) {
        let built = self.stalls_view.detail.map(|id| (id, self.model.stalls_revision()));
        if built == self.stalls_view.detail_built {
            return;
        }
        let tree = match self.stall_detail() {
            Some(s) => FlameTree::from_folded(&Folded::from_stalls([s])),
            None => FlameTree::default(),
        };
        self.stalls_view.detail_cursor = self.stalls_view.detail_cursor.rebase(&self.stalls_view.detail_tree, &tree);
        self.stalls_view.detail_tree = tree;
        self.stalls_view.detail_built = built;
    }

    /// The Tasks table: sorted locations (without internal ones unless asked).
    pub fn task_rows(&self) -> Vec<&LocationStats> {
        let Some(s) = self.snapshot() else { return Vec::new() };
        let mut rows: Vec<&LocationStats> =
            s.locations.iter().filter(|l| self.tasks_view.show_internal || !l.internal).collect();
        let sort = self.tasks_view.sort;
        let rate = |l: &LocationStats| self.rates.get(&l.location).copied().unwrap_or_default();
        let q = |h: &Histogram, p: f64| h.quantile_ns(p).unwrap_or(0);
        rows.sort_by(|a, b| {
            let o = match sort.column {
                TaskColumn::Location => a.location.cmp(&b.location),
                TaskColumn::Live => a.live.cmp(&b.live),
                TaskColumn::SpawnRate => rate(a).spawned_per_s.total_cmp(&rate(b).spawned_per_s),
                TaskColumn::CompleteRate => rate(a).completed_per_s.total_cmp(&rate(b).completed_per_s),
                TaskColumn::Oldest => a.oldest_live_ns.cmp(&b.oldest_live_ns),
                TaskColumn::PollP50 => q(&a.poll_time, 0.5).cmp(&q(&b.poll_time, 0.5)),
                TaskColumn::PollP99 => q(&a.poll_time, 0.99).cmp(&q(&b.poll_time, 0.99)),
                TaskColumn::SchedP99 => a
                    .schedule_latency
                    .as_ref()
                    .map(|h| q(h, 0.99))
                    .cmp(&b.schedule_latency.as_ref().map(|h| q(h, 0.99))),
            }
            .then_with(|| a.location.cmp(&b.location));
            if sort.descending {
                o.reverse()
            } else {
                o
            }
        });
        rows
    }

    /// The location open in the Tasks view's detail.
    pub fn task_detail(&self) -> Option<&LocationStats> {
        let loc = self.tasks_view.detail.as_ref()?;
        self.snapshot()?.locations.iter().find(|l| &l.location == loc)
    }

    /// The Pools table: the blocking pool first, then user pools by name.
    pub fn pool_rows(&self) -> Vec<PoolRow> {
        let Some(s) = self.snapshot() else { return Vec::new() };
        let mut rows = Vec::new();
        if let Some(r) = &s.runtime {
            let starved = r.blocking_pool_starved();
            rows.push(PoolRow {
                name: "tokio blocking pool".to_string(),
                in_use: r.blocking_threads.saturating_sub(r.idle_blocking_threads),
                max: None,
                idle: r.idle_blocking_threads,
                waiters: r.blocking_queue_depth,
                wait_p99_ns: None,
                saturated: starved,
            });
        }
        let mut pools: Vec<&PoolStats> = s.pools.iter().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        for p in pools {
            rows.push(PoolRow {
                name: p.name.clone(),
                in_use: p.in_use,
                max: Some(p.max),
                idle: p.idle,
                waiters: p.waiters,
                wait_p99_ns: p.wait_time.quantile_ns(0.99),
                saturated: p.saturated(),
            });
        }
        rows
    }

    /// Whether any alert of `kind` is active.
    pub fn alert_active(&self, kind: AlertKind) -> bool {
        self.alerts.iter().any(|a| a.alert.kind == kind)
    }
}

/// One row of the Pools table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    /// Pool name.
    pub name: String,
    /// Units handed out (threads busy, for the blocking pool).
    pub in_use: u64,
    /// Capacity, when known.
    pub max: Option<u64>,
    /// Idle units.
    pub idle: u64,
    /// Callers waiting (queued tasks, for the blocking pool).
    pub waiters: u64,
    /// Wait time p99, when measured.
    pub wait_p99_ns: Option<u64>,
    /// Every unit in use and callers waiting.
    pub saturated: bool,
}

/// Live tasks: the runtime's count when known, else the sum over locations.
pub fn live_tasks(s: &Snapshot) -> u64 {
    match &s.runtime {
        Some(r) if r.live_tasks > 0 => r.live_tasks,
        _ => s.locations.iter().map(|l| l.live).sum(),
    }
}

/// The name a stall is blamed on, for tables and sorting.
pub fn frame_name(s: &Stall) -> String {
    s.culprit_frame().map_or_else(String::new, |f| f.short_name())
}

fn stall_matches(s: &Stall, needle: &str) -> bool {
    s.spawned_at.to_lowercase().contains(needle)
        || frame_name(s).to_lowercase().contains(needle)
        || format!("w{}", s.worker).contains(needle)
        || s.task.is_some_and(|t| t.to_string().contains(needle))
}

/// An empty model bounded to [`MAX_STALLS`] (a live client sees no recording header).
fn new_model() -> Model {
    Model::new(RecordingHeader::new(ProcessInfo::default(), String::new())).with_stall_limit(MAX_STALLS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(id: u64, ms: u64) -> Stall {
        Stall {
            id,
            start_unix_ms: 1_000 + id,
            duration_ns: Some(ms * 1_000_000),
            elapsed_ns: ms * 1_000_000,
            worker: 0,
            tid: 1,
            task: Some(id),
            spawned_at: "src/main.rs:1:1".into(),
            in_block_in_place: false,
            stacks: Vec::new(),
            samples_lost: 0,
            anatomy: None,
            unobserved: false,
        }
    }

    #[test]
    fn stalls_are_bounded_and_evicted_ones_stay_out() {
        let mut app = App::new(Source::Live { target: "t".into() });
        for id in 1..=(MAX_STALLS as u64 + 5) {
            app.apply(Received::Update(Update::StallEnded(stall(id, 20))));
        }
        assert_eq!(app.stalls().len(), MAX_STALLS);
        assert_eq!(app.model.stalls_evicted(), 5);
        assert_eq!(app.stalls().keys().next(), Some(&6), "the oldest went first");
        // The probe repeats its recent stalls every tick; an evicted one does not come back.
        app.apply(Received::Update(Update::StallEnded(stall(3, 20))));
        assert!(!app.stalls().contains_key(&3));
        assert_eq!(app.stalls().len(), MAX_STALLS);
    }

    #[test]
    fn a_stall_is_replaced_only_by_a_more_complete_copy() {
        let mut app = App::new(Source::Live { target: "t".into() });
        let mut running = stall(1, 12);
        running.duration_ns = None;
        app.apply(Received::Update(Update::StallStarted(running.clone())));
        assert!(app.stalls_in_progress().next().is_some());
        app.apply(Received::Update(Update::StallEnded(stall(1, 40))));
        assert_eq!(app.stalls()[&1].duration_ns, Some(40_000_000));
        // A late copy of the running state does not undo the end.
        app.apply(Received::Update(Update::StallStarted(running)));
        assert_eq!(app.stalls()[&1].duration_ns, Some(40_000_000));
        assert!(app.stalls_in_progress().next().is_none());
    }
}
