//! Keys to actions. The same key can mean different things per view (arrows move in tables and
//! in the flame graph); the mapping lives here and nowhere else, and the Help view lists it.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{App, View};

/// What a key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the UI.
    Quit,
    /// Show or hide the help.
    ToggleHelp,
    /// Next tab.
    NextView,
    /// Previous tab.
    PrevView,
    /// A given tab.
    Goto(View),
    /// Freeze or unfreeze the display (live), play or pause (replay).
    TogglePause,
    /// Move the selection up.
    Up,
    /// Move the selection down.
    Down,
    /// Left: previous sort column, or the previous frame in the flame graph.
    Left,
    /// Right: next sort column, or the next frame in the flame graph.
    Right,
    /// Top of the list.
    Top,
    /// Bottom of the list.
    Bottom,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// Open the selection (detail, or zoom in the flame graph).
    Enter,
    /// Go back out (close a detail, zoom out, cancel a search).
    Back,
    /// Start typing a filter or search (`/`).
    StartInput,
    /// A character for the filter or search being typed.
    InputChar(char),
    /// Delete the last character typed.
    InputBackspace,
    /// Finish typing (Enter): keep the filter or search.
    InputDone,
    /// Reverse the sort order.
    InvertSort,
    /// Next flame-graph window (10 s, 1 min, all).
    CycleWindow,
    /// Export the flame view to SVG.
    Export,
    /// Ask for a task dump of the open location.
    TaskDump,
    /// Show or hide internal locations in Tasks.
    ToggleInternal,
    /// Replay: faster.
    SpeedUp,
    /// Replay: slower.
    SlowDown,
    /// Replay: back 5 seconds.
    SeekBack,
    /// Replay: forward 5 seconds.
    SeekForward,
    /// Replay: to the start.
    SeekStart,
    /// Replay: to the end.
    SeekEnd,
}

/// Whether the view is taking typed text.
pub fn typing(app: &App) -> bool {
    match app.view {
        View::Stalls => app.stalls_view.filter.editing,
        View::Flame => app.flame.search.editing,
        _ => false,
    }
}

/// Maps a key to an action in the current state, or None when the key means nothing here.
pub fn map_key(app: &App, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
        return Some(Action::Quit);
    }
    if typing(app) {
        return match key.code {
            KeyCode::Enter => Some(Action::InputDone),
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Backspace => Some(Action::InputBackspace),
            KeyCode::Char(c) if !ctrl => Some(Action::InputChar(c)),
            _ => None,
        };
    }
    if app.help {
        return match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => Some(Action::ToggleHelp),
            KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
            KeyCode::PageUp => Some(Action::PageUp),
            KeyCode::PageDown | KeyCode::Char(' ') => Some(Action::PageDown),
            KeyCode::Char('g') | KeyCode::Home => Some(Action::Top),
            _ => None,
        };
    }
    let replay = app.timeline.is_some();
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Tab => Action::NextView,
        KeyCode::BackTab => Action::PrevView,
        KeyCode::Char(c @ '1'..='5') => Action::Goto(View::ALL[(c as u8 - b'1') as usize]),
        KeyCode::Char(' ') => Action::TogglePause,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Left | KeyCode::Char('h') => Action::Left,
        KeyCode::Right | KeyCode::Char('l') => Action::Right,
        KeyCode::Char('g') | KeyCode::Home if !replay || key.code == KeyCode::Char('g') => Action::Top,
        KeyCode::Char('G') | KeyCode::End if !replay || key.code == KeyCode::Char('G') => Action::Bottom,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Enter => Action::Enter,
        KeyCode::Esc | KeyCode::Backspace => Action::Back,
        KeyCode::Char('/') => Action::StartInput,
        KeyCode::Char('i') => Action::InvertSort,
        KeyCode::Char('w') => Action::CycleWindow,
        KeyCode::Char('e') => Action::Export,
        KeyCode::Char('d') => Action::TaskDump,
        KeyCode::Char('a') => Action::ToggleInternal,
        KeyCode::Char('+') | KeyCode::Char('=') if replay => Action::SpeedUp,
        KeyCode::Char('-') if replay => Action::SlowDown,
        KeyCode::Char('[') | KeyCode::Char('<') | KeyCode::Char(',') if replay => Action::SeekBack,
        KeyCode::Char(']') | KeyCode::Char('>') | KeyCode::Char('.') if replay => Action::SeekForward,
        KeyCode::Home if replay => Action::SeekStart,
        KeyCode::End if replay => Action::SeekEnd,
        _ => return None,
    })
}

/// The key reference shown by Help: (keys, what they do), per section.
pub const KEYS: &[(&str, &[(&str, &str)])] = &[
    (
        "Everywhere",
        &[
            ("q  Ctrl-C", "quit"),
            ("?", "this help"),
            ("Tab  Shift-Tab  1-5", "switch view: Overview, Stalls, Flame, Tasks, Pools"),
            ("space", "pause the display (live) / play-pause (replay)"),
            ("j k  ↑ ↓  g G  PgUp PgDn", "move the selection"),
            ("Enter  Esc", "open the selection / go back"),
        ],
    ),
    (
        "Stalls and Tasks",
        &[
            ("← →  h l", "choose the sort column"),
            ("i", "invert the sort order"),
            ("/", "filter the stalls (Enter keeps it, Esc clears it)"),
            ("d", "in a location's detail: task dump of its idle tasks"),
            ("a", "show or hide the probe's and Tokio's own locations"),
        ],
    ),
    (
        "Flame",
        &[
            ("← → ↑ ↓", "move between frames"),
            ("Enter  Esc", "zoom into the frame / zoom out"),
            ("/", "search: highlights matching frames and their share"),
            ("w", "window: last 10 s, last minute, all"),
            ("e", "export the current view to SVG"),
        ],
    ),
    ("Replay", &[("+ -", "faster / slower"), ("[ ]  , .", "seek 5 s back / forward"), ("Home End", "start / end")]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::state::Source;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn keys_follow_the_view_and_the_mode() {
        let mut app = App::new(Source::Live { target: "x".into() });
        assert_eq!(map_key(&app, key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(map_key(&app, key(KeyCode::Char('3'))), Some(Action::Goto(View::Flame)));
        assert_eq!(map_key(&app, key(KeyCode::Char('+'))), None, "speed keys only in replay");
        assert_eq!(map_key(&app, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        app.view = View::Stalls;
        app.stalls_view.filter.editing = true;
        assert_eq!(map_key(&app, key(KeyCode::Char('q'))), Some(Action::InputChar('q')), "typing wins");
        assert_eq!(map_key(&app, key(KeyCode::Esc)), Some(Action::Back));
        app.stalls_view.filter.editing = false;
        app.help = true;
        assert_eq!(map_key(&app, key(KeyCode::Char('j'))), Some(Action::Down), "scrolls the help");
        assert_eq!(map_key(&app, key(KeyCode::Char('3'))), None);
        assert_eq!(map_key(&app, key(KeyCode::Esc)), Some(Action::ToggleHelp));
    }

    #[test]
    fn replay_keys() {
        let mut app = App::new(Source::Replay { path: "r".into() });
        app.timeline = Some(crate::ui::state::Timeline {
            start_unix_ms: 0,
            end_unix_ms: 1,
            at_unix_ms: 0,
            playing: false,
            speed: 1.0,
        });
        assert_eq!(map_key(&app, key(KeyCode::Char('+'))), Some(Action::SpeedUp));
        assert_eq!(map_key(&app, key(KeyCode::Home)), Some(Action::SeekStart));
        assert_eq!(map_key(&app, key(KeyCode::Char('g'))), Some(Action::Top));
    }
}
