//! Help: every key (from the one table in `ui::input`), and what each alert means with what to
//! do about it. Long lines wrap under their own text, not back to the left edge.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};
use stallscope_wire::AlertKind;

use super::{wrap_indented, Theme};
use crate::ui::input::help_sections;
use crate::ui::state::App;

/// Widest keys' column; a row whose keys take more has its text on the next line.
const MAX_KEYS_W: usize = 20;
/// The label before an alert's advice.
const WHAT_TO_DO: &str = "what to do: ";

pub(crate) fn render(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let w = area.width.saturating_sub(4).min(110);
    let h = area.height;
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y, width: w, height: h };
    Clear.render(popup, buf);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(" Help — ? or Esc closes, j/k scroll ", theme.header()));
    let inner = block.inner(popup);
    block.render(popup, buf);
    let width = inner.width as usize;
    // The keys' column fits most labels; a longer one has its text on the line below.
    let key_w = help_sections().flat_map(|s| s.rows).map(|r| r.label().chars().count()).filter(|w| *w <= MAX_KEYS_W);
    let key_w = key_w.max().unwrap_or(MAX_KEYS_W);
    let mut lines: Vec<Line<'_>> = Vec::new();
    for section in help_sections() {
        lines.push(Line::from(Span::styled(section.title, theme.header())));
        for row in section.rows {
            let label = row.label();
            let indent = 2 + key_w + 2;
            if label.chars().count() > key_w {
                lines.push(Line::from(Span::styled(format!("  {label}"), theme.warn())));
                lines.extend(wrap_indented(vec![Span::raw(" ".repeat(indent))], row.what, width, indent));
            } else {
                let keys = Span::styled(format!("  {label:<key_w$}  "), theme.warn());
                lines.extend(wrap_indented(vec![keys], row.what, width, indent));
            }
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Alerts", theme.header())));
    for kind in AlertKind::ALL {
        let title = Span::styled(format!("  {}: ", kind.title()), theme.bad());
        lines.extend(wrap_indented(vec![title], kind.meaning(), width, 4));
        let label = format!("    {WHAT_TO_DO}");
        let indent = label.chars().count();
        lines.extend(wrap_indented(vec![Span::styled(label, theme.dim())], kind.what_to_do(), width, indent));
    }
    let max = lines.len().saturating_sub(inner.height as usize).min(u16::MAX as usize) as u16;
    app.help_scroll_max.set(max);
    // The screen may have grown since the last key: never show blank space below the end.
    Paragraph::new(lines).scroll((app.help_scroll.min(max), 0)).render(inner, buf);
}
