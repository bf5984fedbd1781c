//! Keys to actions, from one table: [`KEYS`] lists every binding with what it does, grouped in
//! sections. [`map_key`] (and [`picker_key`]) look keys up in it, and the Help view and the
//! picker's footer print it, so a key cannot work without being listed or be listed without
//! working.
//!
//! A key can mean different things per mode. Each row of the table says when it applies
//! ([`When`]); the mode the UI is in ([`Mode`]) decides which rows are consulted, most specific
//! first (in replay, `Home` seeks to the start before it would move to the top of a list). Within
//! a view, the same action can do different things (arrows sort in Stalls and move in the flame
//! graph): that is `update`'s business, and the table lists both meanings.

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

/// A key as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character (with or without Shift).
    Char(char),
    /// Ctrl and a character.
    Ctrl(char),
    /// A named key: arrows, Enter, Esc, Tab, Home, …
    Code(KeyCode),
    /// Any character typed without Ctrl (the text of a filter or search).
    Typed,
}

impl Key {
    /// Whether `key` is this one.
    fn matches(self, key: &KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match (self, key.code) {
            (Key::Ctrl(c), KeyCode::Char(k)) => ctrl && k == c,
            (Key::Char(c), KeyCode::Char(k)) => c == k,
            (Key::Typed, KeyCode::Char(_)) => !ctrl,
            (Key::Code(c), k) => c == k,
            _ => false,
        }
    }

    /// The key as the help shows it.
    pub fn label(self) -> String {
        match self {
            Key::Char(' ') => "space".into(),
            Key::Char(c) => c.to_string(),
            Key::Ctrl(c) => format!("Ctrl-{}", c.to_ascii_uppercase()),
            Key::Typed => "other keys".into(),
            Key::Code(code) => match code {
                KeyCode::Up => "↑",
                KeyCode::Down => "↓",
                KeyCode::Left => "←",
                KeyCode::Right => "→",
                KeyCode::Enter => "Enter",
                KeyCode::Esc => "Esc",
                KeyCode::Backspace => "Backspace",
                KeyCode::Tab => "Tab",
                KeyCode::BackTab => "Shift-Tab",
                KeyCode::Home => "Home",
                KeyCode::End => "End",
                KeyCode::PageUp => "PgUp",
                KeyCode::PageDown => "PgDn",
                _ => "?",
            }
            .into(),
        }
    }
}

/// When a row of the table applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// In every mode, typing included.
    Always,
    /// In every mode but typing (and but the picker).
    NotTyping,
    /// Browsing the views, live or replay (not typing, help closed).
    Browsing,
    /// Browsing a replay: consulted before [`When::Browsing`].
    Replay,
    /// While typing a filter or search.
    Typing,
    /// While the help is open.
    Help,
    /// In the picker, before attaching.
    Picker,
}

/// The mode the UI is in, which decides the rows consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Browsing a live probe.
    Live,
    /// Browsing a replay.
    Replay,
    /// Typing a filter or search.
    Typing,
    /// The help is open.
    Help,
    /// Choosing a probe.
    Picker,
}

impl Mode {
    /// The rows consulted in this mode, most specific first.
    fn order(self) -> &'static [When] {
        match self {
            Mode::Live => &[When::Always, When::NotTyping, When::Browsing],
            Mode::Replay => &[When::Always, When::NotTyping, When::Replay, When::Browsing],
            Mode::Typing => &[When::Always, When::Typing],
            Mode::Help => &[When::Always, When::NotTyping, When::Help],
            Mode::Picker => &[When::Always, When::Picker],
        }
    }

    /// The mode of `app`.
    pub fn of(app: &App) -> Mode {
        if typing(app) {
            Mode::Typing
        } else if app.help {
            Mode::Help
        } else if app.timeline.is_some() {
            Mode::Replay
        } else {
            Mode::Live
        }
    }
}

/// One line of the key reference: keys, each with its action, and what they do together.
#[derive(Debug)]
pub struct Row {
    /// When the keys work.
    pub when: When,
    /// The keys and their actions. [`Key::Typed`] gives [`Action::InputChar`] of the key.
    pub keys: &'static [(Key, Action)],
    /// What they do, for the help.
    pub what: &'static str,
}

impl Row {
    /// A row of the table.
    const fn new(when: When, keys: &'static [(Key, Action)], what: &'static str) -> Row {
        Row { when, keys, what }
    }

    /// The keys as the help shows them: `1-5` for a run of digits, the others by name.
    pub fn label(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.keys.len() {
            let mut j = i;
            while let (Key::Char(a), Some((Key::Char(b), _))) = (self.keys[j].0, self.keys.get(j + 1)) {
                if !(a.is_ascii_digit() && *b as u32 == a as u32 + 1) {
                    break;
                }
                j += 1;
            }
            if j > i + 1 {
                out.push(format!("{}-{}", self.keys[i].0.label(), self.keys[j].0.label()));
            } else {
                out.extend(self.keys[i..=j].iter().map(|(k, _)| k.label()));
            }
            i = j + 1;
        }
        out.join(" ")
    }
}

/// A titled group of rows.
#[derive(Debug)]
pub struct Section {
    /// The title in the help.
    pub title: &'static str,
    /// Its rows.
    pub rows: &'static [Row],
}

use self::Action as A;
use self::Key::{Char as C, Code as K};

const MOVE: &[(Key, Action)] = &[
    (C('j'), A::Down),
    (C('k'), A::Up),
    (K(KeyCode::Up), A::Up),
    (K(KeyCode::Down), A::Down),
    (C('g'), A::Top),
    (C('G'), A::Bottom),
    (K(KeyCode::Home), A::Top),
    (K(KeyCode::End), A::Bottom),
    (K(KeyCode::PageUp), A::PageUp),
    (K(KeyCode::PageDown), A::PageDown),
];

/// Every key binding, in the order the help lists them.
pub const KEYS: &[Section] = &[
    Section {
        title: "Everywhere",
        rows: &[
            Row::new(When::NotTyping, &[(C('q'), A::Quit)], "quit"),
            Row::new(When::Always, &[(Key::Ctrl('c'), A::Quit), (Key::Ctrl('d'), A::Quit)], "quit, also while typing"),
            Row::new(When::NotTyping, &[(C('?'), A::ToggleHelp)], "this help"),
            Row::new(
                When::Browsing,
                &[
                    (K(KeyCode::Tab), A::NextView),
                    (K(KeyCode::BackTab), A::PrevView),
                    (C('1'), A::Goto(View::Overview)),
                    (C('2'), A::Goto(View::Stalls)),
                    (C('3'), A::Goto(View::Flame)),
                    (C('4'), A::Goto(View::Tasks)),
                    (C('5'), A::Goto(View::Pools)),
                ],
                "switch view: Overview, Stalls, Flame, Tasks, Pools",
            ),
            Row::new(When::Browsing, &[(C(' '), A::TogglePause)], "pause the display (live) / play-pause (replay)"),
            Row::new(When::Browsing, MOVE, "move the selection"),
            Row::new(
                When::Browsing,
                &[(K(KeyCode::Enter), A::Enter), (K(KeyCode::Esc), A::Back), (K(KeyCode::Backspace), A::Back)],
                "open the selection / go back",
            ),
        ],
    },
    Section {
        title: "Stalls and Tasks",
        rows: &[
            Row::new(
                When::Browsing,
                &[(K(KeyCode::Left), A::Left), (K(KeyCode::Right), A::Right), (C('h'), A::Left), (C('l'), A::Right)],
                "choose the sort column",
            ),
            Row::new(When::Browsing, &[(C('i'), A::InvertSort)], "invert the sort order"),
            Row::new(When::Browsing, &[(C('/'), A::StartInput)], "filter the stalls (Enter keeps it, Esc clears it)"),
            Row::new(When::Browsing, &[(C('d'), A::TaskDump)], "in a location's detail: task dump of its idle tasks"),
            Row::new(
                When::Browsing,
                &[(C('a'), A::ToggleInternal)],
                "show or hide the probe's and Tokio's own locations",
            ),
        ],
    },
    Section {
        title: "Flame",
        rows: &[
            Row::new(
                When::Browsing,
                &[
                    (K(KeyCode::Left), A::Left),
                    (K(KeyCode::Right), A::Right),
                    (K(KeyCode::Up), A::Up),
                    (K(KeyCode::Down), A::Down),
                ],
                "move between frames",
            ),
            Row::new(
                When::Browsing,
                &[(K(KeyCode::Enter), A::Enter), (K(KeyCode::Esc), A::Back)],
                "zoom into the frame / zoom out",
            ),
            Row::new(When::Browsing, &[(C('/'), A::StartInput)], "search: highlights matching frames and their share"),
            Row::new(When::Browsing, &[(C('w'), A::CycleWindow)], "window: last 10 s, last minute, all"),
            Row::new(When::Browsing, &[(C('e'), A::Export)], "export the current view to SVG"),
        ],
    },
    Section {
        title: "Replay",
        rows: &[
            Row::new(
                When::Replay,
                &[(C('+'), A::SpeedUp), (C('='), A::SpeedUp), (C('-'), A::SlowDown)],
                "faster / slower",
            ),
            Row::new(
                When::Replay,
                &[
                    (C('['), A::SeekBack),
                    (C(']'), A::SeekForward),
                    (C(','), A::SeekBack),
                    (C('.'), A::SeekForward),
                    (C('<'), A::SeekBack),
                    (C('>'), A::SeekForward),
                ],
                "seek 5 s back / forward",
            ),
            Row::new(When::Replay, &[(K(KeyCode::Home), A::SeekStart), (K(KeyCode::End), A::SeekEnd)], "start / end"),
        ],
    },
    Section {
        title: "Typing a filter or search",
        rows: &[
            Row::new(When::Typing, &[(K(KeyCode::Enter), A::InputDone)], "keep it"),
            Row::new(When::Typing, &[(K(KeyCode::Esc), A::Back)], "clear it"),
            Row::new(When::Typing, &[(K(KeyCode::Backspace), A::InputBackspace)], "delete the last character"),
            Row::new(When::Typing, &[(Key::Typed, A::InputChar(' '))], "typed into it"),
        ],
    },
    Section {
        title: "This help",
        rows: &[
            Row::new(
                When::Help,
                &[
                    (C('j'), A::Down),
                    (C('k'), A::Up),
                    (K(KeyCode::Up), A::Up),
                    (K(KeyCode::Down), A::Down),
                    (C('g'), A::Top),
                    (K(KeyCode::Home), A::Top),
                    (K(KeyCode::PageUp), A::PageUp),
                    (K(KeyCode::PageDown), A::PageDown),
                    (C(' '), A::PageDown),
                ],
                "scroll",
            ),
            Row::new(
                When::Help,
                &[(K(KeyCode::Esc), A::ToggleHelp), (K(KeyCode::Enter), A::ToggleHelp)],
                "close (so does ?)",
            ),
        ],
    },
    Section {
        title: "Choosing a probe",
        rows: &[
            Row::new(
                When::Picker,
                &[(C('j'), A::Down), (C('k'), A::Up), (K(KeyCode::Up), A::Up), (K(KeyCode::Down), A::Down)],
                "choose",
            ),
            Row::new(When::Picker, &[(K(KeyCode::Enter), A::Enter)], "attach"),
            Row::new(When::Picker, &[(C('q'), A::Quit), (K(KeyCode::Esc), A::Quit)], "quit"),
        ],
    },
];

/// The sections the Help overlay lists: all but the picker's, which the picker shows itself.
pub fn help_sections() -> impl Iterator<Item = &'static Section> {
    KEYS.iter().filter(|s| s.rows.iter().all(|r| r.when != When::Picker))
}

/// The rows that apply in the picker (its footer).
pub fn picker_rows() -> impl Iterator<Item = &'static Row> {
    KEYS.iter().flat_map(|s| s.rows).filter(|r| r.when == When::Picker)
}

/// What `key` does in `mode`, or None when it means nothing there.
pub fn lookup(mode: Mode, key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    for when in mode.order() {
        for row in KEYS.iter().flat_map(|s| s.rows).filter(|r| r.when == *when) {
            if let Some((k, action)) = row.keys.iter().find(|(k, _)| k.matches(key)) {
                return Some(match (k, key.code) {
                    (Key::Typed, KeyCode::Char(c)) => Action::InputChar(c),
                    _ => action.clone(),
                });
            }
        }
    }
    None
}

/// Maps a key to an action in the current state, or None when the key means nothing here.
pub fn map_key(app: &App, key: KeyEvent) -> Option<Action> {
    lookup(Mode::of(app), &key)
}

/// Maps a key in the picker.
pub fn picker_key(key: KeyEvent) -> Option<Action> {
    lookup(Mode::Picker, &key)
}

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
        assert_eq!(map_key(&app, key(KeyCode::Home)), Some(Action::Top), "Home moves to the top, live");
        assert_eq!(map_key(&app, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        app.view = View::Stalls;
        app.stalls_view.filter.editing = true;
        assert_eq!(map_key(&app, key(KeyCode::Char('q'))), Some(Action::InputChar('q')), "typing wins");
        assert_eq!(map_key(&app, key(KeyCode::Esc)), Some(Action::Back));
        assert_eq!(map_key(&app, KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL)), Some(Action::Quit));
        app.stalls_view.filter.editing = false;
        app.help = true;
        assert_eq!(map_key(&app, key(KeyCode::Char('j'))), Some(Action::Down), "scrolls the help");
        assert_eq!(map_key(&app, key(KeyCode::Char(' '))), Some(Action::PageDown));
        assert_eq!(map_key(&app, key(KeyCode::Char('3'))), None);
        assert_eq!(map_key(&app, key(KeyCode::Esc)), Some(Action::ToggleHelp));
        assert_eq!(map_key(&app, key(KeyCode::Char('?'))), Some(Action::ToggleHelp));
        assert_eq!(map_key(&app, key(KeyCode::Char('q'))), Some(Action::Quit));
        let mut release = key(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(map_key(&app, release), None);
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
        assert_eq!(map_key(&app, key(KeyCode::Home)), Some(Action::SeekStart), "Home seeks in replay");
        assert_eq!(map_key(&app, key(KeyCode::End)), Some(Action::SeekEnd));
        assert_eq!(map_key(&app, key(KeyCode::Char('g'))), Some(Action::Top));
        assert_eq!(map_key(&app, key(KeyCode::Char('>'))), Some(Action::SeekForward));
    }

    #[test]
    fn picker_keys() {
        assert_eq!(picker_key(key(KeyCode::Char('j'))), Some(Action::Down));
        assert_eq!(picker_key(key(KeyCode::Up)), Some(Action::Up));
        assert_eq!(picker_key(key(KeyCode::Enter)), Some(Action::Enter));
        assert_eq!(picker_key(key(KeyCode::Esc)), Some(Action::Quit));
        assert_eq!(picker_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(picker_key(key(KeyCode::Char('3'))), None, "no views before attaching");
    }

    /// Within the rows one mode consults, a key means one thing: a second meaning would be listed
    /// in the help and never happen.
    #[test]
    fn no_key_means_two_things_in_one_mode() {
        let mut codes: Vec<KeyEvent> = (' '..='~').map(|c| key(KeyCode::Char(c))).collect();
        codes.extend(['c', 'd'].map(|c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)));
        for code in [
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::Left,
            KeyCode::Right,
            KeyCode::Enter,
            KeyCode::Esc,
            KeyCode::Backspace,
            KeyCode::Tab,
            KeyCode::BackTab,
            KeyCode::Home,
            KeyCode::End,
            KeyCode::PageUp,
            KeyCode::PageDown,
        ] {
            codes.push(key(code));
        }
        for when in
            [When::Always, When::NotTyping, When::Browsing, When::Replay, When::Typing, When::Help, When::Picker]
        {
            for k in &codes {
                let meanings: Vec<&Action> = KEYS
                    .iter()
                    .flat_map(|s| s.rows)
                    .filter(|r| r.when == when)
                    .flat_map(|r| r.keys)
                    .filter(|(key, _)| *key != Key::Typed && key.matches(k))
                    .map(|(_, a)| a)
                    .collect();
                assert!(meanings.windows(2).all(|w| w[0] == w[1]), "{k:?} in {when:?}: {meanings:?}");
            }
        }
    }

    #[test]
    fn labels_name_every_key() {
        let row = |keys| Row { when: When::Browsing, keys, what: "" };
        assert_eq!(KEYS[0].rows[3].label(), "Tab Shift-Tab 1-5");
        assert_eq!(row(MOVE).label(), "j k ↑ ↓ g G Home End PgUp PgDn");
        assert_eq!(row(&[(C('1'), A::Quit), (C('3'), A::Quit)]).label(), "1 3");
        assert_eq!(row(&[(Key::Ctrl('c'), A::Quit), (C(' '), A::Quit)]).label(), "Ctrl-C space");
        let footer: Vec<String> = picker_rows().map(|r| format!("{} {}", r.label(), r.what)).collect();
        assert_eq!(footer, ["j k ↑ ↓ choose", "Enter attach", "q Esc quit"]);
        assert!(help_sections().all(|s| s.title != "Choosing a probe"));
    }
}
