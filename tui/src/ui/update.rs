//! Actions to state changes. Anything that needs I/O (a task-dump request, writing an SVG,
//! seeking in a recording) is returned as an [`Effect`] for the run loop to carry out.

use super::input::Action;
use super::state::picker::{Picked, Picker};
use super::state::{cycle, App, DumpState, StallColumn, TaskColumn, View};

/// Rows a page key moves.
const PAGE: usize = 10;
/// Replay speeds `+` and `-` step through.
pub const SPEEDS: [f64; 7] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
/// How far `[` and `]` seek.
pub const SEEK_MS: u64 = 5_000;

/// Work for the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// Ask the probe for a task dump (the reply fills `tasks_view.dump`).
    RequestDump,
    /// Write the Flame view (window and zoom) to an SVG file.
    ExportFlame,
    /// Replay: rebuild the state at this data time.
    Seek(u64),
}

/// Applies `action` to `app`.
pub fn update(app: &mut App, action: Action) -> Effect {
    use Action::*;
    match action {
        Quit => app.quit = true,
        ToggleHelp => {
            app.help = !app.help;
            app.help_scroll = 0;
        }
        Up | Down | PageUp | PageDown | Top if app.help => {
            let s = app.help_scroll;
            app.help_scroll = match action {
                Up => s.saturating_sub(1),
                Down => s.saturating_add(1),
                PageUp => s.saturating_sub(PAGE as u16),
                PageDown => s.saturating_add(PAGE as u16),
                _ => 0,
            }
            .min(app.help_scroll_max.get());
        }
        NextView => goto(app, cycle(&View::ALL, app.view, 1)),
        PrevView => goto(app, cycle(&View::ALL, app.view, -1)),
        Goto(v) => goto(app, v),
        TogglePause => match &mut app.timeline {
            Some(t) => {
                if !t.playing && t.at_unix_ms >= t.end_unix_ms {
                    // Play again from the start once the end was reached.
                    t.playing = true;
                    return Effect::Seek(t.start_unix_ms);
                }
                t.playing = !t.playing;
            }
            None => {
                let paused = !app.paused;
                app.set_paused(paused);
            }
        },
        SpeedUp | SlowDown => {
            if let Some(t) = &mut app.timeline {
                let i = SPEEDS.iter().position(|s| *s >= t.speed).unwrap_or(2);
                let j = if action == SpeedUp { (i + 1).min(SPEEDS.len() - 1) } else { i.saturating_sub(1) };
                t.speed = SPEEDS[j];
            }
        }
        SeekBack | SeekForward | SeekStart | SeekEnd => {
            if let Some(t) = &app.timeline {
                let to = match action {
                    SeekBack => t.at_unix_ms.saturating_sub(SEEK_MS).max(t.start_unix_ms),
                    SeekForward => (t.at_unix_ms + SEEK_MS).min(t.end_unix_ms),
                    SeekStart => t.start_unix_ms,
                    _ => t.end_unix_ms,
                };
                return Effect::Seek(to);
            }
        }
        _ => return view_action(app, action),
    }
    Effect::None
}

/// Applies `action` to the picker: move, attach to the selection, or give up.
pub fn picker(p: &mut Picker, action: Action) {
    match action {
        Action::Quit => p.picked = Some(Picked::Nothing),
        Action::Enter => p.picked = p.selection().cloned().map(Picked::Probe),
        other => p.selected = move_sel(p.selected, p.probes.len(), &other),
    }
}

fn goto(app: &mut App, v: View) {
    app.view = v;
    app.message = None;
    if v == View::Flame {
        app.refresh_flame();
    }
}

fn view_action(app: &mut App, action: Action) -> Effect {
    match app.view {
        View::Overview => {}
        View::Stalls => return stalls_action(app, action),
        View::Flame => return flame_action(app, action),
        View::Tasks => return tasks_action(app, action),
        View::Pools => {
            let n = app.pool_rows().len();
            app.pools_selected = move_sel(app.pools_selected, n, &action);
        }
    }
    Effect::None
}

/// The selection after a movement key, within `n` rows.
fn move_sel(sel: usize, n: usize, action: &Action) -> usize {
    let last = n.saturating_sub(1);
    let s = match action {
        Action::Up => sel.saturating_sub(1),
        Action::Down => sel + 1,
        Action::Top => 0,
        Action::Bottom => last,
        Action::PageUp => sel.saturating_sub(PAGE),
        Action::PageDown => sel + PAGE,
        _ => sel,
    };
    s.min(last)
}

fn stalls_action(app: &mut App, action: Action) -> Effect {
    let v = &mut app.stalls_view;
    if v.filter.editing {
        match action {
            Action::InputChar(c) => v.filter.text.push(c),
            Action::InputBackspace => {
                v.filter.text.pop();
            }
            Action::InputDone => v.filter.editing = false,
            Action::Back => {
                v.filter.editing = false;
                v.filter.text.clear();
            }
            _ => {}
        }
        v.selected = 0;
        return Effect::None;
    }
    if v.detail.is_some() {
        // In a stall's detail the keys move in its flame graph.
        app.refresh_detail();
        if app.stall_detail().is_some() {
            // The tree is the model's, cached until the stall changes (`App::refresh_detail`).
            let (tree, c) = (&app.stalls_view.detail_tree, &mut app.stalls_view.detail_cursor);
            match action {
                Action::Back => {
                    if c.zoom != 0 {
                        c.zoom_out(tree);
                    } else {
                        app.stalls_view.detail = None;
                    }
                }
                Action::Up => c.up(tree),
                Action::Down => c.down(tree),
                Action::Left => c.left(tree),
                Action::Right => c.right(tree),
                Action::Enter => c.zoom_in(tree),
                _ => {}
            }
        } else {
            app.stalls_view.detail = None;
        }
        return Effect::None;
    }
    let n = app.stall_rows().len();
    let v = &mut app.stalls_view;
    match action {
        Action::StartInput => v.filter.editing = true,
        Action::Back => v.filter.text.clear(),
        Action::Left => v.sort.column = cycle(&StallColumn::ALL, v.sort.column, -1),
        Action::Right => v.sort.column = cycle(&StallColumn::ALL, v.sort.column, 1),
        Action::InvertSort => v.sort.descending = !v.sort.descending,
        Action::Enter => {
            let id = app.stall_rows().get(app.stalls_view.selected).map(|s| s.id);
            app.stalls_view.detail = id;
            app.stalls_view.detail_cursor = Default::default();
            app.refresh_detail();
        }
        other => v.selected = move_sel(v.selected, n, &other),
    }
    Effect::None
}

fn flame_action(app: &mut App, action: Action) -> Effect {
    app.refresh_flame();
    let f = &mut app.flame;
    if f.search.editing {
        match action {
            Action::InputChar(c) => f.search.text.push(c),
            Action::InputBackspace => {
                f.search.text.pop();
            }
            Action::InputDone => f.search.editing = false,
            Action::Back => {
                f.search.editing = false;
                f.search.text.clear();
            }
            _ => {}
        }
        f.cursor.search = (!f.search.text.is_empty()).then(|| f.search.text.clone());
        return Effect::None;
    }
    let tree = &f.tree;
    match action {
        Action::Up => f.cursor.up(tree),
        Action::Down => f.cursor.down(tree),
        Action::Left => f.cursor.left(tree),
        Action::Right => f.cursor.right(tree),
        Action::Top => f.cursor.reset(),
        Action::Enter => f.cursor.zoom_in(tree),
        Action::Back => {
            if f.cursor.search.is_some() {
                f.cursor.search = None;
                f.search.text.clear();
            } else {
                f.cursor.zoom_out(tree);
            }
        }
        Action::StartInput => {
            f.search.editing = true;
            f.search.text.clear();
        }
        Action::CycleWindow => {
            f.window = f.window.next();
            f.stale = true;
            app.refresh_flame();
        }
        Action::Export => return Effect::ExportFlame,
        _ => {}
    }
    Effect::None
}

fn tasks_action(app: &mut App, action: Action) -> Effect {
    if app.tasks_view.detail.is_some() {
        match action {
            Action::Back => {
                app.tasks_view.detail = None;
                app.tasks_view.dump_scroll = 0;
            }
            Action::TaskDump => {
                if !matches!(app.tasks_view.dump, DumpState::Waiting { .. }) && app.timeline.is_none() {
                    let location = app.tasks_view.detail.clone().unwrap_or_default();
                    app.tasks_view.dump = DumpState::Waiting { location };
                    app.tasks_view.dump_scroll = 0;
                    return Effect::RequestDump;
                }
                if app.timeline.is_some() {
                    app.message = Some("task dumps need a live probe, not a recording".to_string());
                }
            }
            Action::Down => app.tasks_view.dump_scroll = app.tasks_view.dump_scroll.saturating_add(1),
            Action::Up => app.tasks_view.dump_scroll = app.tasks_view.dump_scroll.saturating_sub(1),
            Action::PageDown => app.tasks_view.dump_scroll = app.tasks_view.dump_scroll.saturating_add(PAGE as u16),
            Action::PageUp => app.tasks_view.dump_scroll = app.tasks_view.dump_scroll.saturating_sub(PAGE as u16),
            Action::Top => app.tasks_view.dump_scroll = 0,
            _ => {}
        }
        return Effect::None;
    }
    let n = app.task_rows().len();
    let v = &mut app.tasks_view;
    match action {
        Action::Left => v.sort.column = cycle(&TaskColumn::ALL, v.sort.column, -1),
        Action::Right => v.sort.column = cycle(&TaskColumn::ALL, v.sort.column, 1),
        Action::InvertSort => v.sort.descending = !v.sort.descending,
        Action::ToggleInternal => {
            v.show_internal = !v.show_internal;
            v.selected = 0;
        }
        Action::Enter => {
            let loc = app.task_rows().get(app.tasks_view.selected).map(|l| l.location.clone());
            app.tasks_view.detail = loc;
        }
        other => v.selected = move_sel(v.selected, n, &other),
    }
    Effect::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::state::{Source, Timeline};

    #[test]
    fn pause_holds_updates_until_resumed() {
        let mut app = App::new(Source::Live { target: "t".into() });
        update(&mut app, Action::TogglePause);
        assert!(app.paused);
        app.apply(stallscope_wire::Received::Dropped { intervals: 3 });
        assert_eq!(app.model.dropped_intervals(), 0, "paused: nothing applied");
        assert_eq!(app.pending(), 1);
        update(&mut app, Action::TogglePause);
        assert_eq!(app.model.dropped_intervals(), 3);
        assert_eq!(app.pending(), 0);
    }

    #[test]
    fn replay_speed_and_seek() {
        let mut app = App::new(Source::Replay { path: "r".into() });
        app.timeline =
            Some(Timeline { start_unix_ms: 1_000, end_unix_ms: 20_000, at_unix_ms: 3_000, playing: true, speed: 1.0 });
        update(&mut app, Action::SpeedUp);
        update(&mut app, Action::SpeedUp);
        assert_eq!(app.timeline.map(|t| t.speed), Some(4.0));
        update(&mut app, Action::SlowDown);
        assert_eq!(app.timeline.map(|t| t.speed), Some(2.0));
        assert_eq!(update(&mut app, Action::SeekBack), Effect::Seek(1_000), "clamped to the start");
        assert_eq!(update(&mut app, Action::SeekForward), Effect::Seek(8_000));
        assert_eq!(update(&mut app, Action::SeekEnd), Effect::Seek(20_000));
        update(&mut app, Action::TogglePause);
        assert_eq!(app.timeline.map(|t| t.playing), Some(false));
    }

    #[test]
    fn selection_stays_in_range() {
        assert_eq!(move_sel(0, 0, &Action::Down), 0);
        assert_eq!(move_sel(3, 5, &Action::PageDown), 4);
        assert_eq!(move_sel(3, 5, &Action::Up), 2);
        assert_eq!(move_sel(3, 5, &Action::Bottom), 4);
    }
}
