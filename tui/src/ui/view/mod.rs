//! Drawing: one module per screen, all reading `&App` and nothing else.
//!
//! The frame is: a tab bar, the view, (in replay) a timeline, and a status line. Help is drawn
//! over the view. Every screen works from 80x24 up. The picker, shown before attaching when
//! several probes run, is a screen of its own ([`render_picker`]).

pub mod flame;
mod flame_view;
mod help;
mod overview;
mod picker;
mod pools;
mod stalls;
mod tasks;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};
use ratatui::Frame;

use super::state::{App, ConnStatus, Source, View};
use crate::timefmt::short_utc;

/// Colours, or none (`NO_COLOR`): every style goes through here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Theme {
    pub(crate) color: bool,
}

impl Theme {
    pub(crate) fn of(app: &App) -> Theme {
        Theme { color: !app.no_color }
    }

    /// A foreground colour (nothing without colours).
    pub(crate) fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Headers and titles.
    pub(crate) fn header(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// The selected row.
    pub(crate) fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// Something wrong (alerts, saturated pools, leak suspects).
    pub(crate) fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Something worth a look.
    pub(crate) fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    /// Fine.
    pub(crate) fn good(self) -> Style {
        self.fg(Color::Green)
    }

    /// Secondary text.
    pub(crate) fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame<'_>) {
    render_area(app, frame.area(), frame.buffer_mut());
}

/// Draws the whole screen into `buf` (for tests and benchmarks without a terminal).
pub fn render_area(app: &App, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let theme = Theme::of(app);
    let timeline = app.timeline.is_some() as u16;
    let [tabs, body, line, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(timeline),
        Constraint::Length(1),
    ])
    .areas(area);
    render_tabs(app, theme, tabs, buf);
    match app.view {
        View::Overview => overview::render(app, theme, body, buf),
        View::Stalls => stalls::render(app, theme, body, buf),
        View::Flame => flame_view::render(app, theme, body, buf),
        View::Tasks => tasks::render(app, theme, body, buf),
        View::Pools => pools::render(app, theme, body, buf),
    }
    if app.timeline.is_some() {
        render_timeline(app, theme, line, buf);
    }
    render_status(app, theme, status, buf);
    if app.help {
        help::render(app, theme, body, buf);
    }
}

/// Draws the picker (several probes, no target given).
pub fn render_picker(p: &super::state::picker::Picker, frame: &mut Frame<'_>) {
    picker::render(p, frame.area(), frame.buffer_mut());
}

/// Draws the picker into `buf` (for tests without a terminal).
pub fn render_picker_area(p: &super::state::picker::Picker, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    picker::render(p, area, buf);
}

fn render_tabs(app: &App, theme: Theme, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let mut spans = vec![Span::styled(" stallscope ", theme.header())];
    for (i, v) in View::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, v.title());
        let mut style = if *v == app.view { theme.selected().add_modifier(Modifier::BOLD) } else { Style::default() };
        if *v == View::Stalls && app.stalls_in_progress().next().is_some() {
            style = style.patch(theme.bad());
        }
        spans.push(Span::styled(label, style));
    }
    if app.paused {
        spans.push(Span::styled(format!("  PAUSED ({} waiting)", app.pending()), theme.warn()));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

/// The status line: target, connection, probe version, drops, recording, help hint (or a
/// message, which wins).
fn render_status(app: &App, theme: Theme, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    if let Some(m) = &app.message {
        Paragraph::new(Line::from(Span::styled(format!(" {m}"), theme.warn()))).render(area, buf);
        return;
    }
    let target = match (&app.source, &app.process) {
        (_, Some(p)) => format!(" {} (pid {})", p.name, p.pid),
        (Source::Live { target }, None) => format!(" {target}"),
        (Source::Replay { path }, None) => format!(" {path}"),
    };
    let (status, reason, status_style) = match &app.status {
        ConnStatus::Connecting => ("connecting…".to_string(), None, theme.warn()),
        ConnStatus::Connected => ("connected".to_string(), None, theme.good()),
        ConnStatus::Reconnecting { reason, attempt, retry_in_ms } => (
            format!("disconnected (retry {attempt} in {:.1} s)", *retry_in_ms as f64 / 1000.0),
            Some(reason.as_str()),
            theme.bad(),
        ),
        ConnStatus::Replay => ("replay".to_string(), None, theme.header()),
    };
    // (span, may be left out on a narrow screen: lower goes first).
    let mut tail: Vec<(Span, Option<u8>)> = Vec::new();
    if let Some(p) = &app.process {
        tail.push((Span::raw(format!(" · probe {}", p.probe_version)), Some(0)));
        if !p.tokio_unstable {
            tail.push((Span::styled(" · no tokio_unstable: lag and runtime metrics only", theme.warn()), None));
        }
    }
    let probe_drops = app.snapshot().map_or(0, |s| s.drops.total());
    let drops = probe_drops + app.model.dropped_intervals() + app.paused_dropped + app.model.stalls_evicted();
    let style = if drops > 0 { theme.warn() } else { Style::default() };
    tail.push((Span::styled(format!(" · drops {drops}"), style), None));
    match &app.recording {
        Some(f) => tail.push((Span::styled(format!(" · rec {f}"), theme.bad()), None)),
        None => tail.push((Span::raw(" · rec off"), Some(1))),
    }
    tail.push((Span::styled(" · ? help", theme.dim()), Some(2)));
    // On a narrow screen the connection state, the drops and a running recording stay: the
    // probe's version, "rec off" and the help hint give way, in that order, and a disconnect
    // reason is cut with an ellipsis (the Overview shows it whole).
    let width = area.width as usize;
    let head = target.chars().count() + 3 + status.chars().count();
    let used = |tail: &[(Span, Option<u8>)]| head + tail.iter().map(|(s, _)| s.width()).sum::<usize>();
    for rank in 0..=2 {
        if used(&tail) <= width {
            break;
        }
        tail.retain(|(_, r)| *r != Some(rank));
    }
    let mut status = status;
    if let Some(reason) = reason {
        // The reason is worth more than "rec off" and the help hint: they give way to let
        // at least 24 columns of it show.
        let want = reason.chars().count().min(24);
        for rank in 0..=2 {
            if width.saturating_sub(used(&tail) + 2) >= want {
                break;
            }
            tail.retain(|(_, r)| *r != Some(rank));
        }
        let room = width.saturating_sub(used(&tail) + 2);
        if room >= 8 {
            status = format!("{status}: {}", clip(reason, room));
        }
    }
    let mut spans = vec![Span::raw(target), Span::raw(" · "), Span::styled(status, status_style)];
    spans.extend(tail.into_iter().map(|(s, _)| s));
    Paragraph::new(Line::from(spans)).render(area, buf);
}

fn render_timeline(app: &App, theme: Theme, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let Some(t) = app.timeline else { return };
    let state = if t.playing { "▶" } else { "⏸" };
    let pos = t.at_unix_ms.saturating_sub(t.start_unix_ms);
    let len = t.end_unix_ms.saturating_sub(t.start_unix_ms);
    let left = format!(" {state} {:>4}x {} ", t.speed, short_utc(t.at_unix_ms));
    let right = format!(" {} / {} ", fmt_secs(pos), fmt_secs(len));
    let bar_w = (area.width as usize).saturating_sub(left.chars().count() + right.chars().count());
    let filled = if len == 0 { bar_w } else { ((pos as f64 / len as f64) * bar_w as f64).round() as usize };
    let filled = filled.min(bar_w);
    let line = Line::from(vec![
        Span::styled(left, theme.header()),
        Span::styled("━".repeat(filled), theme.fg(Color::Cyan)),
        Span::styled("─".repeat(bar_w - filled), theme.dim()),
        Span::raw(right),
    ]);
    Paragraph::new(line).render(area, buf);
}

/// `75.3 s` / `12:05` style position.
pub(crate) fn fmt_secs(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 60 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `text` after `prefix`, word-wrapped to `width` columns; the lines after the first start
/// `indent` columns in, so wrapped text stays in its column instead of going back to the edge.
/// A word longer than a line is cut. When the indent leaves too little room (under 12 columns),
/// continuation lines start 2 columns in.
pub(crate) fn wrap_indented<'a>(prefix: Vec<Span<'a>>, text: &str, width: usize, indent: usize) -> Vec<Line<'a>> {
    let first_w = width.saturating_sub(prefix.iter().map(|s| s.width()).sum());
    let indent = if width.saturating_sub(indent) < 12 { 2.min(width) } else { indent };
    let room = |rows: &Vec<String>| if rows.is_empty() { first_w } else { width - indent }.max(1);
    let mut rows: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let cur_w = cur.chars().count();
        let need = if cur_w > 0 { cur_w + 1 + word.chars().count() } else { word.chars().count() };
        // A full line, or a first line with too little room after the prefix: go to the next.
        if need > room(&rows) && (cur_w > 0 || rows.is_empty()) {
            rows.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        while cur.chars().count() > room(&rows) {
            let r = room(&rows);
            let tail: String = cur.chars().skip(r).collect();
            cur.truncate(cur.char_indices().nth(r).map_or(cur.len(), |(i, _)| i));
            rows.push(std::mem::replace(&mut cur, tail));
        }
    }
    if !cur.is_empty() || rows.is_empty() {
        rows.push(cur);
    }
    let mut lines = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter();
    let mut first = prefix;
    first.push(Span::raw(rows.next().unwrap_or_default()));
    lines.push(Line::from(first));
    lines.extend(rows.map(|r| Line::from(format!("{}{r}", " ".repeat(indent)))));
    lines
}

/// Truncates `s` to `w` columns with an ellipsis.
pub(crate) fn clip(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(w - 1).collect();
        out.push('…');
        out
    }
}

/// Keeps the end of `s` (file paths: the file and line matter most).
pub(crate) fn clip_left(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut out = String::from("…");
        out.extend(s.chars().skip(n - (w - 1)));
        out
    }
}

/// A nanosecond figure for a table cell (`—` when unknown).
pub(crate) fn ns_cell(ns: Option<u64>) -> String {
    ns.map_or_else(|| "—".to_string(), stallscope_wire::fmt_ns)
}

/// First row shown so that `selected` is visible in `height` rows.
pub(crate) fn scroll_for(selected: usize, height: usize) -> usize {
    if height == 0 {
        0
    } else {
        selected.saturating_sub(height - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect()).collect()
    }

    #[test]
    fn wrapped_text_stays_in_its_column() {
        let lines = wrap_indented(vec![Span::raw("  key  ")], "one two three four five", 24, 7);
        assert_eq!(rows(&lines), ["  key  one two three", "       four five"]);
        // Too little room after the indent: continuation lines start 2 columns in, and a word
        // that does not fit after the prefix starts the next line.
        let lines = wrap_indented(vec![Span::raw("  a long label: ")], "alpha beta", 20, 16);
        assert_eq!(rows(&lines), ["  a long label: ", "  alpha beta"]);
        // A word longer than a line is cut, never lost.
        let lines = wrap_indented(vec![Span::raw("> ")], "abcdefghij", 6, 2);
        assert_eq!(rows(&lines), ["> ", "  abcd", "  efgh", "  ij"]);
        assert_eq!(rows(&wrap_indented(vec![Span::raw("x ")], "", 10, 2)), ["x "]);
    }
}
