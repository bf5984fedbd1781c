//! The terminal UI: `stallscope attach` (live) and `stallscope replay FILE`.
//!
//! Layers (`docs/architecture.md`, "The terminal UI"):
//! - [`state`]: everything shown, as plain data ([`state::App`], and [`state::picker::Picker`]
//!   before attaching); no ratatui;
//! - [`input`]: keys to [`input::Action`]s, from the one table the Help view prints;
//! - [`update`]: actions to state changes, plus [`update::Effect`]s that need I/O;
//! - [`view`]: one module per screen, drawing `&App` into a buffer;
//! - [`conn`]: the live connection thread (connect, stream, reconnect with backoff);
//! - [`replay`]: a recording on a timeline;
//! - [`term`]: the real terminal, restored on quit, panic and signals.
//!
//! [`run`] and [`pick_loop`] are generic over the ratatui backend, so tests drive them with
//! `TestBackend` and a channel of events exactly as the real terminal does.

pub mod conn;
pub mod fixture;
pub mod input;
pub mod replay;
pub mod state;
pub mod term;
pub mod update;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEvent};
use ratatui::Terminal;
use stallscope_wire::recording::{RecordingHeader, RecordingOptions, RecordingWriter};
use stallscope_wire::Received;

use self::conn::{Command, Feed, Live};
use self::replay::Replay;
use self::state::picker::{Picked, Picker};
use self::state::{App, ConnStatus, DumpState, Source, View};
use self::update::Effect;
use crate::conn::ConnectOptions;
use crate::target::Target;

/// How long the probe may take for a task dump the UI asks for.
pub const TASK_DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between two wake-ups of the run loop (replay clock, signals).
const TICK: Duration = Duration::from_millis(100);
/// Shortest time between two draws: updates arriving faster are folded into one frame.
const MIN_FRAME: Duration = Duration::from_millis(40);
/// Shortest time between two rebuilds of the flame tree caused by new data.
const FLAME_REBUILD: Duration = Duration::from_millis(500);

/// What the run loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A key press.
    Key(KeyEvent),
    /// The terminal changed size.
    Resize,
    /// From the live connection (boxed: a feed carries whole updates, a key a few bytes).
    Feed(Box<Feed>),
}

/// The data side of the UI: a live probe, a recording, or nothing (tests).
#[derive(Debug)]
pub enum Driver {
    /// A live connection.
    Live(Live),
    /// A recording being replayed.
    Replay(Replay),
    /// Data comes only through events (tests).
    None,
}

/// Options of the run loop that are not state.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Where `e` writes SVG files (the current directory when None).
    pub export_dir: Option<PathBuf>,
    /// Client-side recording of everything received.
    pub record: Option<PathBuf>,
}

/// Runs the UI until `q`, Ctrl-C, a signal (`stop` returns true) or the end of `events`.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &Receiver<Event>,
    driver: &mut Driver,
    options: &RunOptions,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut recorder: Option<RecordingWriter<std::io::BufWriter<std::fs::File>>> = None;
    let mut last_draw: Option<Instant> = None;
    let mut last_flame: Option<Instant> = None;
    let mut dirty = true;
    let mut last_tick = Instant::now();
    loop {
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= MIN_FRAME) {
            // New stalls make the flame tree stale; rebuilding it (about 9 ms for 10,000 nodes,
            // docs/benchmarks.md) is done at most every FLAME_REBUILD so a stream of stalls cannot
            // hold the screen. Keys that change the tree (window, view) rebuild at once.
            if app.view == View::Flame && app.flame.stale && last_flame.is_none_or(|t| t.elapsed() >= FLAME_REBUILD) {
                app.refresh_flame();
                last_flame = Some(Instant::now());
            }
            terminal.draw(|f| view::render(app, f))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        if app.quit || stop() {
            break;
        }
        let wait = if dirty { MIN_FRAME } else { TICK };
        match events.recv_timeout(wait) {
            Ok(ev) => {
                dirty |= handle(app, ev, driver, options, &mut recorder)?;
                // Take everything already queued before drawing again.
                while !app.quit {
                    let Ok(ev) = events.try_recv() else { break };
                    dirty |= handle(app, ev, driver, options, &mut recorder)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // No more input: leave the final state on screen.
                if dirty {
                    terminal.draw(|f| view::render(app, f))?;
                }
                break;
            }
        }
        let elapsed = last_tick.elapsed();
        last_tick = Instant::now();
        if let Driver::Replay(r) = driver {
            dirty |= r.advance(app, elapsed.as_secs_f64() * 1000.0);
        }
    }
    if let Some(w) = recorder {
        let path = options.record.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        let mut inner = w.into_inner().with_context(|| format!("while finishing the recording {path}"))?;
        std::io::Write::flush(&mut inner).with_context(|| format!("while finishing the recording {path}"))?;
    }
    Ok(())
}

/// One event; returns whether the screen changed.
fn handle(
    app: &mut App,
    ev: Event,
    driver: &mut Driver,
    options: &RunOptions,
    recorder: &mut Option<RecordingWriter<std::io::BufWriter<std::fs::File>>>,
) -> anyhow::Result<bool> {
    match ev {
        Event::Resize => {}
        Event::Key(k) => {
            if let Some(action) = input::map_key(app, k) {
                let effect = update::update(app, action);
                run_effect(app, effect, driver, options);
            } else {
                return Ok(false);
            }
        }
        Event::Feed(feed) => {
            let feed = *feed;
            match &feed {
                Feed::Connected(process) => {
                    if let (Some(path), None) = (&options.record, &recorder) {
                        let header = RecordingHeader::new(
                            process.clone(),
                            format!("stallscope attach {}", env!("CARGO_PKG_VERSION")),
                        );
                        let w = RecordingWriter::create(path, &header, RecordingOptions::default())
                            .with_context(|| format!("while creating the recording {}", path.display()))?;
                        *recorder = Some(w);
                        app.recording = Some(path.display().to_string());
                    }
                }
                Feed::Data(r) => {
                    if let Some(w) = recorder.as_mut() {
                        if let Err(e) = w.write_received(r) {
                            app.message = Some(format!("recording stopped: {e}"));
                            app.recording = None;
                            *recorder = None;
                        }
                    }
                }
                Feed::Lost { .. } => {}
                Feed::Gone { reason } => anyhow::bail!("{reason}"),
            }
            receive_feed(app, feed);
        }
    }
    Ok(true)
}

/// Applies what the connection thread reports.
pub fn receive_feed(app: &mut App, feed: Feed) {
    match feed {
        Feed::Connected(process) => {
            app.status = ConnStatus::Connected;
            app.process = Some(process);
        }
        Feed::Lost { reason, attempt, retry_in } => {
            app.status = ConnStatus::Reconnecting { reason, attempt, retry_in_ms: retry_in.as_millis() as u64 };
            if matches!(app.tasks_view.dump, DumpState::Waiting { .. }) {
                app.tasks_view.dump = DumpState::Failed { reason: "the connection was lost".into() };
            }
        }
        Feed::Data(r) => receive(app, r),
        // The run loop ends on it before it gets here; a test feeding it directly sees it quit.
        Feed::Gone { reason } => {
            app.message = Some(reason);
            app.quit = true;
        }
    }
}

/// Applies what the probe sent, routing a task-dump answer to the Tasks view.
pub fn receive(app: &mut App, r: Received) {
    if let Received::TaskDump(dump) = &r {
        if let DumpState::Waiting { location } = &app.tasks_view.dump {
            app.tasks_view.dump = dump_for(location.clone(), dump);
        }
        return;
    }
    if let Received::Error { message } = &r {
        if matches!(app.tasks_view.dump, DumpState::Waiting { .. })
            && message.starts_with(stallscope_wire::proto::TASK_DUMP_ERROR_PREFIX)
        {
            app.tasks_view.dump = DumpState::Failed { reason: message.clone() };
            return;
        }
    }
    app.apply(r);
}

/// The part of a task dump that belongs to `location`, with a note on the rest.
pub fn dump_for(location: String, dump: &stallscope_wire::TaskDump) -> DumpState {
    let mine: Vec<(u64, String)> = dump
        .groups
        .iter()
        .filter(|g| g.spawned_at.as_deref() == Some(location.as_str()))
        .map(|g| (g.count, if g.trace_truncated { format!("{}\n(trace cut)", g.trace) } else { g.trace.clone() }))
        .collect();
    let listed: u64 = mine.iter().map(|g| g.0).sum();
    let unknown: u64 = dump.groups.iter().filter(|g| g.spawned_at.is_none()).map(|g| g.count).sum();
    let mut note = format!(
        "{listed} idle task(s) of this location in {} group(s); {} task(s) in the whole dump, taken in {}",
        mine.len(),
        dump.tasks,
        stallscope_wire::fmt_ns(dump.elapsed_ns)
    );
    if unknown > 0 {
        note.push_str(&format!("; {unknown} task(s) of unknown location not shown"));
    }
    if dump.truncated {
        note.push_str(&format!("; the probe's limits left out {} group(s)", dump.omitted_groups));
    }
    DumpState::Ready { location, groups: mine, note }
}

fn run_effect(app: &mut App, effect: Effect, driver: &mut Driver, options: &RunOptions) {
    match effect {
        Effect::None => {}
        Effect::RequestDump => match driver {
            Driver::Live(live) => {
                if !live.send(Command::TaskDump { timeout: TASK_DUMP_TIMEOUT }) {
                    app.tasks_view.dump = DumpState::Failed { reason: "the connection thread has stopped".into() };
                }
            }
            _ => app.tasks_view.dump = DumpState::Failed { reason: "task dumps need a live probe".into() },
        },
        Effect::ExportFlame => {
            app.refresh_flame();
            app.message = Some(export_flame(app, options.export_dir.as_deref()));
        }
        Effect::Seek(to) => {
            if let Driver::Replay(r) = driver {
                r.seek(app, to);
            }
        }
    }
}

/// Writes the Flame view (its window and zoom) as an SVG through the same code as `stallscope
/// export`, from the folded stacks the view was built from (refresh it first with
/// [`App::refresh_flame`]); returns the message for the status line.
pub fn export_flame(app: &App, dir: Option<&Path>) -> String {
    use crate::flame::FlameSvg;
    let zoom = app.flame.tree.path_labels(app.flame.cursor.zoom);
    let flame = app.flame.folded.zoomed(&zoom);
    if flame.is_empty() {
        return "export: no stack sample in this view".to_string();
    }
    let pid = app.process.as_ref().map_or(0, |p| p.pid);
    let name = format!("stallscope-flame-{pid}-{}.svg", app.now_unix_ms());
    let path = dir.map_or_else(|| PathBuf::from(&name), |d| d.join(&name));
    let mut title = format!("stalled time, {}", app.flame.window.label());
    if let Some(last) = zoom.last() {
        title.push_str(&format!(", zoomed to {last}"));
    }
    let written = std::fs::File::create(&path).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        flame.write_svg(&crate::flame::FlameOptions::titled(title), &mut w)?;
        std::io::Write::flush(&mut w)
    });
    match written {
        Ok(()) => format!("exported {} samples to {}", flame.samples(), path.display()),
        Err(e) => format!("export to {} failed: {e}", path.display()),
    }
}

/// Reads terminal events on a thread of its own and sends them to the run loop.
fn spawn_input(tx: Sender<Event>) {
    let _ = std::thread::Builder::new().name("stallscope-input".into()).spawn(move || loop {
        let ev = match event::read() {
            Ok(TermEvent::Key(k)) => Event::Key(k),
            Ok(TermEvent::Resize(..)) => Event::Resize,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(ev).is_err() {
            return;
        }
    });
}

/// Whether colours are off (`NO_COLOR` set and not empty, per no-color.org).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// `stallscope attach`: the live UI on `target`, or with none on the only probe in `dir` (waiting
/// for one when there is none yet). With several, the picker comes first, in the same terminal
/// session and on the same input thread (a second reader would take the first key meant for
/// the UI).
pub fn attach(target: Option<Target>, dir: PathBuf, options: RunOptions) -> anyhow::Result<()> {
    let several = target.is_none()
        && matches!(crate::target::resolve_or_only(None, &dir), Err(crate::target::TargetError::Ambiguous { .. }));
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut guard, stop) = enter_terminal(tx.clone())?;
    let target = if several {
        let mut picker = Picker::new(crate::list::probes(&dir));
        picker.no_color = no_color();
        match pick_loop(&mut guard.terminal, &mut picker, &rx, &|| crate::list::probes(&dir), &stop)? {
            Some(found) => Some(Target::Pid(found.pid)),
            None => return Ok(()),
        }
    } else {
        target
    };
    let shown = target.as_ref().map_or_else(|| "the local probe".to_string(), |t| t.to_string());
    let mut app = App::new(Source::Live { target: shown });
    app.no_color = no_color();
    let live = Live::start(target, dir, ConnectOptions::default(), tx, |f| Event::Feed(Box::new(f)));
    let mut driver = Driver::Live(live);
    let result = run(&mut guard.terminal, &mut app, &rx, &mut driver, &options, &stop);
    // The terminal is given back before the connection thread is stopped.
    drop(guard);
    drop(driver);
    result
}

/// Takes over the real terminal, with one input thread sending its keys to `tx`; returns the
/// guard that gives it back and whether a termination signal arrived.
fn enter_terminal(tx: Sender<Event>) -> anyhow::Result<(term::TerminalGuard, impl Fn() -> bool)> {
    let guard = term::TerminalGuard::enter().context("while setting up the terminal")?;
    spawn_input(tx);
    let signalled = guard.signalled.clone();
    Ok((guard, move || signalled.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Reads a recording for `stallscope replay`: fails when it cannot be read or holds nothing to
/// replay, before any terminal is needed.
pub fn open_replay(path: &Path) -> anyhow::Result<Replay> {
    let rep = Replay::open(path).with_context(|| format!("while reading the recording {}", path.display()))?;
    if rep.is_empty() {
        anyhow::bail!("the recording {} holds no update to replay", path.display());
    }
    Ok(rep)
}

/// `stallscope replay FILE`: the UI on a recording opened by [`open_replay`].
pub fn replay(mut rep: Replay, path: &Path, options: RunOptions) -> anyhow::Result<()> {
    let mut app = App::new(Source::Replay { path: path.display().to_string() });
    app.no_color = no_color();
    if !rep.damage.is_empty() {
        app.message = Some(format!("damaged recording, replaying what could be read: {}", rep.damage.join("; ")));
    }
    rep.start(&mut app);
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut guard, stop) = enter_terminal(tx)?;
    let result = run(&mut guard.terminal, &mut app, &rx, &mut Driver::Replay(rep), &options, &stop);
    drop(guard);
    result
}

/// How often the picker lists the probes again, so that one that exits leaves the list.
const PICKER_REFRESH: Duration = Duration::from_millis(500);

/// The picker's loop, generic over the backend: keys go through `input` and `update` like the
/// other screens'; `list` is called every [`PICKER_REFRESH`] and before attaching, so a probe
/// that has exited is neither shown nor attached to. Returns None when the user gives up.
pub fn pick_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    picker: &mut Picker,
    events: &Receiver<Event>,
    list: &dyn Fn() -> Vec<crate::list::ProbeRow>,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<Option<stallscope_wire::discovery::Found>> {
    let mut listed = Instant::now();
    loop {
        terminal.draw(|f| view::render_picker(picker, f))?;
        if stop() {
            return Ok(None);
        }
        match events.recv_timeout(TICK) {
            Ok(Event::Key(k)) => {
                if let Some(action) = input::picker_key(k) {
                    let mut gone = false;
                    if action == input::Action::Enter {
                        // The probe chosen may have exited since the last listing: then the
                        // list is shown again, without it, rather than attaching to another.
                        let before = picker.selection().map(|f| f.pid);
                        picker.set_probes(list());
                        listed = Instant::now();
                        gone = picker.selection().map(|f| f.pid) != before;
                    }
                    if !gone {
                        update::picker(picker, action);
                    }
                }
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
        }
        match picker.picked.take() {
            Some(Picked::Probe(found)) => return Ok(Some(found)),
            Some(Picked::Nothing) => return Ok(None),
            None => {}
        }
        if listed.elapsed() >= PICKER_REFRESH {
            picker.set_probes(list());
            listed = Instant::now();
        }
    }
}
