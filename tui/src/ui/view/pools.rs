//! Pools: the blocking pool and every user pool, with waiters and wait time.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget};

use super::{clip, ns_cell, scroll_for, Theme};
use crate::ui::state::App;

pub(crate) fn render(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let rows = app.pool_rows();
    let [head, table, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(2)]).areas(area);
    let saturated = rows.iter().filter(|r| r.saturated).count();
    let mut spans = vec![Span::styled(format!("Pools ({})", rows.len()), theme.header())];
    if saturated > 0 {
        spans.push(Span::styled(format!("  {saturated} saturated"), theme.bad()));
    }
    Paragraph::new(Line::from(spans)).render(head, buf);
    // in use/max, idle, waiters, wait p99, the mark, and a space between columns.
    let name_w = area.width.saturating_sub(10 + 6 + 8 + 9 + 9 + 5).max(12);
    let widths = [
        Constraint::Length(name_w),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let header = Row::new(
        ["pool", "in use/max", "idle", "waiters", "wait p99", ""].map(|h| Cell::from(h).style(theme.header())),
    );
    let body_h = table.height.saturating_sub(1) as usize;
    let first = scroll_for(app.pools_selected, body_h);
    let table_rows: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(body_h)
        .map(|(i, r)| {
            let mut style = if r.saturated { theme.bad() } else { Default::default() };
            if i == app.pools_selected {
                style = style.patch(theme.selected());
            }
            let max = r.max.map_or_else(|| "—".to_string(), |m| m.to_string());
            Row::new(vec![
                Cell::from(clip(&r.name, name_w as usize)),
                Cell::from(format!("{}/{max}", r.in_use)),
                Cell::from(r.idle.to_string()),
                Cell::from(r.waiters.to_string()),
                Cell::from(ns_cell(r.wait_p99_ns)),
                Cell::from(if r.saturated { "SATURATED" } else { "" }),
            ])
            .style(style)
        })
        .collect();
    if rows.is_empty() {
        Paragraph::new(Span::styled("No pool reported yet.", theme.dim()))
            .render(Rect { y: table.y + 1, height: 1, ..table }, buf);
    }
    Table::new(table_rows, widths).header(header).column_spacing(1).render(table, buf);
    let note = "Blocking pool: in use = busy threads, waiters = queued spawn_blocking calls. \
                User pools report through stallscope_probe::pool.";
    Paragraph::new(Span::styled(note, theme.dim())).wrap(ratatui::widgets::Wrap { trim: true }).render(foot, buf);
}
