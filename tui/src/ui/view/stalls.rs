//! Stalls: the table of stall events, and a stall's detail (its own flame graph and the top
//! frames of its samples).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Widget};
use stallscope_wire::{fmt_ns, Frame, FrameKind, Stall};

use super::flame::FlameWidget;
use super::{clip, clip_left, scroll_for, Theme};
use crate::ui::state::{frame_name, App, Sort, StallColumn};

pub(crate) fn render(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    if let Some(stall) = app.stall_detail() {
        render_detail(app, stall, theme, area, buf);
        return;
    }
    let rows = app.stall_rows();
    let [head, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let f = &app.stalls_view.filter;
    let mut spans = vec![Span::styled(format!("Stalls ({} of {})", rows.len(), app.stalls().len()), theme.header())];
    if f.editing || !f.text.is_empty() {
        spans.push(Span::raw("  filter: "));
        spans.push(Span::styled(f.text.clone(), theme.warn()));
        if f.editing {
            spans.push(Span::styled("▏ (Enter keeps, Esc clears)", theme.dim()));
        }
    } else {
        spans.push(Span::styled("  Enter: detail  /: filter  ←→: sort  i: invert", theme.dim()));
    }
    Paragraph::new(Line::from(spans)).render(head, buf);

    let sort = app.stalls_view.sort;
    let wide = area.width >= 120;
    let headers: Vec<Cell<'_>> = [
        (StallColumn::Time, "time (UTC)"),
        (StallColumn::Duration, "duration"),
        (StallColumn::Duration, "kind"),
        (StallColumn::Worker, "worker"),
        (StallColumn::Time, "task"),
        (StallColumn::Location, "spawned at"),
        (StallColumn::Frame, "top user frame"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (c, name))| {
        // The kind and task columns do not sort.
        let marked = *c == sort.column && i != 2 && i != 4;
        header_cell(name, marked, sort, theme)
    })
    .collect();
    let loc_w: u16 = if wide { 44 } else { 14 };
    let widths = [
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(if wide { 8 } else { 5 }),
        Constraint::Length(loc_w),
        Constraint::Min(10),
    ];
    let body_h = table.height.saturating_sub(1) as usize;
    let first = scroll_for(app.stalls_view.selected, body_h);
    let frame_w = table.width.saturating_sub(12 + 9 + 7 + 6 + if wide { 8 } else { 5 } + loc_w + 6) as usize;
    let table_rows: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(body_h)
        .map(|(i, s)| {
            let running = s.duration_ns.is_none();
            let dur = if running { format!("{}…", fmt_ns(s.elapsed_ns)) } else { fmt_ns(s.length_ns()) };
            let frame = frame_name(s);
            let frame = match s.no_blame_reason() {
                Some(why) => format!("({why})"),
                None if frame.is_empty() => "(no user frame sampled)".to_string(),
                None => frame,
            };
            let mut style = if running { theme.bad() } else { Default::default() };
            if i == app.stalls_view.selected {
                style = style.patch(theme.selected());
            }
            Row::new(vec![
                Cell::from(time_of_day(s.start_unix_ms)),
                Cell::from(dur),
                Cell::from(s.kind_label()),
                Cell::from(format!("w{}", s.worker)),
                Cell::from(s.task.map_or_else(|| "—".to_string(), |t| t.to_string())),
                Cell::from(clip_left(&s.spawned_at, loc_w as usize)),
                Cell::from(clip_left(&frame, frame_w.max(4))),
            ])
            .style(style)
        })
        .collect();
    if rows.is_empty() {
        let msg = if app.stalls().is_empty() {
            "No stall yet: no poll has run longer than the threshold."
        } else {
            "No stall matches the filter."
        };
        Paragraph::new(Span::styled(msg, theme.dim())).render(Rect { y: table.y + 1, height: 1, ..table }, buf);
    }
    Table::new(table_rows, widths).header(Row::new(headers)).column_spacing(1).render(table, buf);
}

pub(crate) fn header_cell<C: PartialEq + Copy>(name: &str, marked: bool, sort: Sort<C>, theme: Theme) -> Cell<'static> {
    let text = if marked { format!("{name}{}", if sort.descending { "▼" } else { "▲" }) } else { name.to_string() };
    let style = theme.header();
    Cell::from(text).style(if marked { style.add_modifier(Modifier::UNDERLINED) } else { style })
}

/// `04:40:00.137` (UTC).
pub(crate) fn time_of_day(unix_ms: u64) -> String {
    let s = crate::timefmt::rfc3339_ms(unix_ms);
    s.split('T').nth(1).map(|t| t.trim_end_matches('Z').to_string()).unwrap_or(s)
}

fn render_detail(app: &App, stall: &Stall, theme: Theme, area: Rect, buf: &mut Buffer) {
    let [head, body] = Layout::vertical([Constraint::Length(4), Constraint::Min(1)]).areas(area);
    let dur = match stall.duration_ns {
        Some(d) => fmt_ns(d),
        None => format!("{} so far", fmt_ns(stall.elapsed_ns)),
    };
    let bip = if stall.in_block_in_place { " · inside block_in_place" } else { "" };
    let lines = vec![
        Line::from(vec![
            Span::styled(format!("Stall #{} ", stall.id), theme.header()),
            Span::raw(format!(
                "at {} · {dur} · worker w{} (tid {}) · task {}{bip}",
                time_of_day(stall.start_unix_ms),
                stall.worker,
                stall.tid,
                stall.task.map_or_else(|| "—".to_string(), |t| t.to_string())
            )),
        ]),
        Line::from(vec![Span::styled("spawned at ", theme.dim()), Span::raw(stall.spawned_at.clone())]),
        Line::from(match (&stall.anatomy, stall.no_blame_reason()) {
            (Some(a), why) => {
                let mut spans = vec![Span::styled("anatomy ", theme.dim()), Span::raw(a.describe())];
                if let Some(why) = why {
                    spans.push(Span::styled(format!(" ({why})"), theme.warn()));
                }
                spans
            }
            (None, Some(why)) => vec![Span::styled(why.to_string(), theme.warn())],
            (None, None) if stall.duration_ns.is_none() => {
                vec![Span::styled("anatomy when it ends (on CPU, waiting for a CPU, blocked)", theme.dim())]
            }
            (None, None) => vec![Span::styled("anatomy not measured", theme.dim())],
        }),
        Line::from(Span::styled(
            format!(
                "{} samples{} · arrows move, Enter zooms, Esc goes back",
                stall.sample_count(),
                if stall.samples_lost > 0 { format!(" ({} lost)", stall.samples_lost) } else { String::new() }
            ),
            theme.dim(),
        )),
    ];
    Paragraph::new(lines).render(head, buf);
    let tree = &app.stalls_view.detail_tree;
    let wide = body.width >= 110;
    let (flame_area, top_area) = if wide {
        let [a, b] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
        (a, b)
    } else {
        let [a, b] = Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
        (a, b)
    };
    if tree.root().total == 0 {
        Paragraph::new(Span::styled(
            "No stack sample for this stall (it ended before the first sample, or sampling is off).",
            theme.dim(),
        ))
        .render(flame_area, buf);
    } else {
        FlameWidget { tree, cursor: &app.stalls_view.detail_cursor, color: theme.color }.render(flame_area, buf);
    }
    render_top_frames(stall, theme, top_area, buf);
}

/// The samples' stacks, most sampled first, each by its innermost user frame.
fn render_top_frames(stall: &Stall, theme: Theme, area: Rect, buf: &mut Buffer) {
    let block =
        Block::default().borders(Borders::TOP).title(Span::styled(" Top frames of the samples ", theme.header()));
    let inner = block.inner(area);
    block.render(area, buf);
    let total = stall.sample_count().max(1);
    let mut stacks: Vec<_> = stall.stacks.iter().collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(s.count));
    let w = inner.width as usize;
    let mut lines = Vec::new();
    for st in stacks.iter().take(inner.height as usize) {
        let f = st.frames.iter().find(|f| f.kind == FrameKind::User).or(st.frames.first());
        let name = f.map_or_else(|| "?".to_string(), Frame::place);
        let pct = st.count as f64 * 100.0 / total as f64;
        let text = format!("{:>5.1}% {:>5}  {}", pct, st.count, name);
        lines.push(Line::from(clip(&text, w)));
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("no samples", theme.dim())));
    }
    Paragraph::new(lines).render(inner, buf);
}
