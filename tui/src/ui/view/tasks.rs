//! Tasks: one row per spawn location; a location's detail shows its histograms and, on
//! request, a task dump of its idle tasks.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Widget, Wrap};
use stallscope_wire::{fmt_ns, Histogram, LocationStats};

use super::stalls::header_cell;
use super::{clip_left, ns_cell, scroll_for, Theme};
use crate::ui::state::{App, DumpState, TaskColumn};

pub(crate) fn render(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    if let Some(l) = app.task_detail() {
        render_detail(app, l, theme, area, buf);
        return;
    }
    let rows = app.task_rows();
    let [head, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let suspects = rows.iter().filter(|l| l.leak_suspect).count();
    let mut spans = vec![Span::styled(format!("Spawn locations ({})", rows.len()), theme.header())];
    if suspects > 0 {
        spans.push(Span::styled(format!("  {suspects} leak suspect(s)"), theme.bad()));
    }
    let internal = if app.tasks_view.show_internal { "hide" } else { "show" };
    spans.push(Span::styled(format!("  Enter: detail  ←→: sort  i: invert  a: {internal} internal"), theme.dim()));
    Paragraph::new(Line::from(spans)).render(head, buf);

    let sort = app.tasks_view.sort;
    let wide = area.width >= 120;
    let names = if wide {
        ["location", "live", "spawn/s", "done/s", "oldest", "poll p50", "poll p99", "sched p99"]
    } else {
        ["location", "live", "spawn/s", "done/s", "oldest", "poll50", "poll99", "sched99"]
    };
    let headers: Vec<Cell<'_>> = TaskColumn::ALL
        .iter()
        .zip(names)
        .map(|(c, n)| header_cell(n, *c == sort.column, sort, theme))
        .chain(std::iter::once(Cell::from("")))
        .collect();
    let num: u16 = if wide { 10 } else { 7 };
    // Seven figures, the leak mark, and a space between columns.
    let fixed = 7 * num + 4 + 8;
    let loc_w = area.width.saturating_sub(fixed).max(12);
    let widths = [
        Constraint::Length(loc_w),
        Constraint::Length(num),
        Constraint::Length(num),
        Constraint::Length(num),
        Constraint::Length(num),
        Constraint::Length(num),
        Constraint::Length(num),
        Constraint::Length(num),
        Constraint::Length(4),
    ];
    let body_h = table.height.saturating_sub(1) as usize;
    let first = scroll_for(app.tasks_view.selected, body_h);
    let table_rows: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(body_h)
        .map(|(i, l)| {
            let r = app.rates.get(&l.location).copied().unwrap_or_default();
            let mut style = if l.leak_suspect {
                theme.bad()
            } else if l.internal {
                theme.dim()
            } else {
                Default::default()
            };
            if i == app.tasks_view.selected {
                style = style.patch(theme.selected());
            }
            Row::new(vec![
                Cell::from(clip_left(&l.location, loc_w as usize)),
                Cell::from(l.live.to_string()),
                Cell::from(rate(r.spawned_per_s)),
                Cell::from(rate(r.completed_per_s)),
                Cell::from(ns_cell(l.oldest_live_ns)),
                Cell::from(ns_cell(l.poll_time.quantile_ns(0.5))),
                Cell::from(ns_cell(l.poll_time.quantile_ns(0.99))),
                Cell::from(ns_cell(l.schedule_latency.as_ref().and_then(|h| h.quantile_ns(0.99)))),
                Cell::from(if l.leak_suspect { "LEAK" } else { "" }),
            ])
            .style(style)
        })
        .collect();
    if rows.is_empty() {
        Paragraph::new(Span::styled("No spawn location seen yet.", theme.dim()))
            .render(Rect { y: table.y + 1, height: 1, ..table }, buf);
    }
    Table::new(table_rows, widths).header(Row::new(headers)).column_spacing(1).render(table, buf);
}

fn rate(v: f64) -> String {
    if v < 0.05 {
        "0".to_string()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn render_detail(app: &App, l: &LocationStats, theme: Theme, area: Rect, buf: &mut Buffer) {
    let [head, hists, dump] =
        Layout::vertical([Constraint::Length(3), Constraint::Length(hist_height(area)), Constraint::Min(3)])
            .areas(area);
    let r = app.rates.get(&l.location).copied().unwrap_or_default();
    let leak = if l.leak_suspect {
        Span::styled("  LEAK SUSPECT: live count keeps growing", theme.bad())
    } else {
        Span::raw("")
    };
    let lines = vec![
        Line::from(vec![Span::styled(l.location.clone(), theme.header()), leak]),
        Line::from(format!(
            "live {} · spawned {} ({}/s) · completed {} ({}/s) · oldest {} · polls {}",
            l.live,
            l.spawned,
            rate(r.spawned_per_s),
            l.completed,
            rate(r.completed_per_s),
            ns_cell(l.oldest_live_ns),
            l.polls
        )),
        Line::from(Span::styled("d: task dump of its idle tasks · j/k scroll the dump · Esc: back", theme.dim())),
    ];
    Paragraph::new(lines).render(head, buf);
    let sched = l.schedule_latency.as_ref();
    if hists.width >= 100 {
        let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(hists);
        render_hist("poll time", Some(&l.poll_time), theme, a, buf);
        render_hist("schedule latency", sched, theme, b, buf);
    } else {
        let [a, b] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(hists);
        render_hist("poll time", Some(&l.poll_time), theme, a, buf);
        render_hist("schedule latency", sched, theme, b, buf);
    }
    render_dump(app, theme, dump, buf);
}

fn hist_height(area: Rect) -> u16 {
    if area.width >= 100 {
        (area.height / 3).clamp(4, 14)
    } else {
        (area.height / 2).clamp(4, 14)
    }
}

/// A histogram as horizontal bars, one per non-empty bucket (as many as fit).
fn render_hist(title: &str, h: Option<&Histogram>, theme: Theme, area: Rect, buf: &mut Buffer) {
    let summary = match h {
        Some(h) if h.count > 0 => format!(
            " {title}: p50 {} · p99 {} · max {} ",
            ns_cell(h.quantile_ns(0.5)),
            ns_cell(h.quantile_ns(0.99)),
            fmt_ns(h.max_ns)
        ),
        Some(_) => format!(" {title}: no sample yet "),
        None => format!(" {title}: off (Probe::builder().schedule_latency(true)) "),
    };
    let block = Block::default().borders(Borders::TOP).title(Span::styled(summary, theme.header()));
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(h) = h.filter(|h| h.count > 0) else { return };
    let buckets: Vec<(u64, u64)> =
        h.upper_ns.iter().zip(&h.counts).filter(|(_, c)| **c > 0).map(|(u, c)| (*u, *c)).collect();
    // Merge neighbours until the buckets fit the rows.
    let rows = inner.height.max(1) as usize;
    let per = buckets.len().div_ceil(rows).max(1);
    let merged: Vec<(u64, u64)> =
        buckets.chunks(per).map(|c| (c[c.len() - 1].0, c.iter().map(|x| x.1).sum())).collect();
    let max = merged.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let label_w = 12usize;
    let bar_w = (inner.width as usize).saturating_sub(label_w + 10);
    let lines: Vec<Line<'_>> = merged
        .iter()
        .map(|(upper, count)| {
            let n = ((*count as f64 / max as f64) * bar_w as f64).ceil() as usize;
            Line::from(vec![
                Span::styled(format!("≤{:>10} ", fmt_ns(*upper)), theme.dim()),
                Span::styled("█".repeat(n.min(bar_w)), theme.fg(ratatui::style::Color::Cyan)),
                Span::raw(format!(" {count}")),
            ])
        })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}

fn render_dump(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let block = Block::default().borders(Borders::TOP).title(Span::styled(" Task dump ", theme.header()));
    let inner = block.inner(area);
    block.render(area, buf);
    let lines: Vec<Line<'_>> = match &app.tasks_view.dump {
        DumpState::None => vec![Line::from(Span::styled(
            "Press d for the async backtraces of this location's idle tasks (identical traces grouped).",
            theme.dim(),
        ))],
        DumpState::Waiting { .. } => vec![Line::from(Span::styled("Asking the probe for a task dump…", theme.warn()))],
        DumpState::Failed { reason } => {
            // Wrapped under its own text, not back at the edge.
            let prefix = "Task dump failed: ";
            let lines = super::wrap_indented(vec![Span::raw(prefix)], reason, inner.width as usize, prefix.len());
            lines.into_iter().map(|l| l.style(theme.bad())).collect()
        }
        DumpState::Ready { groups, note, .. } => {
            let mut lines = vec![Line::from(Span::styled(note.clone(), theme.dim()))];
            for (count, trace) in groups {
                lines.push(Line::from(Span::styled(format!("── {count} task(s) with this trace ──"), theme.header())));
                lines.extend(trace.lines().map(|t| Line::from(t.to_string())));
            }
            if groups.is_empty() {
                lines.push(Line::from(Span::styled("No idle task of this location.", theme.dim())));
            }
            lines
        }
    };
    Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((app.tasks_view.dump_scroll, 0)).render(inner, buf);
}
