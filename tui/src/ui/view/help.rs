//! Help: every key, and what each alert means with what to do about it.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget, Wrap};
use stallscope_wire::AlertKind;

use super::Theme;
use crate::ui::input::KEYS;
use crate::ui::state::App;

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
    let mut lines: Vec<Line<'_>> = Vec::new();
    for (section, keys) in KEYS {
        lines.push(Line::from(Span::styled(*section, theme.header())));
        for (k, what) in *keys {
            lines.push(Line::from(vec![Span::styled(format!("  {k:<26}"), theme.warn()), Span::raw(*what)]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Alerts", theme.header())));
    for kind in AlertKind::ALL {
        lines.push(Line::from(vec![
            Span::styled(format!("  {}: ", kind.title()), theme.bad()),
            Span::raw(kind.meaning()),
        ]));
        lines.push(Line::from(vec![Span::styled("    what to do: ", theme.dim()), Span::raw(kind.what_to_do())]));
    }
    Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((app.help_scroll, 0)).render(inner, buf);
}
