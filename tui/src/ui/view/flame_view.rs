//! The Flame screen: the window's flame graph (icicle, root on top), with the selected frame and
//! the search on a line of their own.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::flame::{flame_status, FlameWidget};
use super::Theme;
use crate::ui::state::App;

pub(crate) fn render(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let f = &app.flame;
    let [head, info, graph] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let samples = f.tree.root().total;
    let head_line = Line::from(vec![
        Span::styled(format!("Stalled time, {} ", f.window.label()), theme.header()),
        Span::raw(format!("· {} stalls · {samples} samples ", f.stalls)),
        Span::styled("· w: window  Enter/Esc: zoom  /: search  e: export SVG", theme.dim()),
    ]);
    Paragraph::new(head_line).render(head, buf);
    let info_line = if f.search.editing {
        Line::from(vec![
            Span::raw("search: "),
            Span::styled(f.search.text.clone(), theme.warn()),
            Span::styled("▏ (Enter keeps, Esc clears)", theme.dim()),
        ])
    } else {
        Line::from(Span::styled(flame_status(&f.tree, &f.cursor), theme.warn()))
    };
    Paragraph::new(info_line).render(info, buf);
    if samples == 0 {
        let msg = if app.stalls().is_empty() {
            "No stall yet. When a poll blocks a worker for longer than the threshold, its sampled stacks appear here."
        } else {
            "No stack sample in this window (w changes the window)."
        };
        Paragraph::new(Span::styled(msg, theme.dim())).wrap(Wrap { trim: true }).render(graph, buf);
        return;
    }
    FlameWidget { tree: &f.tree, cursor: &f.cursor, color: theme.color }.render(graph, buf);
}
