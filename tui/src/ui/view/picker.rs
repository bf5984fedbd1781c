//! The picker: the probes on this machine, one row each, and the keys (from `ui::input`'s table).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::{clip_left, Theme};
use crate::list::fmt_uptime;
use crate::ui::input::picker_rows;
use crate::ui::state::picker::Picker;

pub(crate) fn render(p: &Picker, area: Rect, buf: &mut Buffer) {
    let theme = Theme { color: !p.no_color };
    let head = match p.probes.len() {
        0 => "No probe is running on this machine any more; waiting for one to start.".to_string(),
        1 => "1 probe is running on this machine. Attach to:".to_string(),
        n => format!("{n} probes are running on this machine. Attach to:"),
    };
    let mut lines = vec![Line::from(Span::styled(head, theme.header())), Line::from("")];
    for (i, r) in p.probes.iter().enumerate() {
        let up = r.uptime.map(fmt_uptime).unwrap_or_default();
        let f = &r.found;
        let mut text = format!("  {:>7}  {:<24} {:>10}  ", f.pid, f.name, up);
        // One line per probe: the path keeps its end (the file names the process).
        let room = (area.width as usize).saturating_sub(text.chars().count());
        text.push_str(&clip_left(&f.path.display().to_string(), room));
        let style = if i == p.selected { theme.selected() } else { Default::default() };
        lines.push(Line::from(Span::styled(text, style)));
    }
    lines.push(Line::from(""));
    let keys: Vec<String> = picker_rows().map(|r| format!("{} {}", r.label(), r.what)).collect();
    lines.push(Line::from(Span::styled(keys.join(" · "), theme.dim())));
    Paragraph::new(lines).wrap(Wrap { trim: false }).render(area, buf);
}
