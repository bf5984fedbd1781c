//! Overview: sparklines of the last minutes, a busy bar per worker, the active alerts and the
//! incidents that passed.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline, Widget, Wrap};
use stallscope_wire::{fmt_ns, AlertKind};

use super::{clip, Theme};
use crate::timefmt::short_utc;
use crate::ui::state::history::Second;
use crate::ui::state::App;

/// One sparkline row: its label, the series, and how to print the latest value.
struct Series {
    label: &'static str,
    value: fn(&Second) -> u64,
    show: fn(u64) -> String,
    color: Color,
}

const SERIES: [Series; 5] = [
    Series { label: "loop lag p99", value: |s| s.lag_p99_ns, show: fmt_ns, color: Color::Yellow },
    Series {
        label: "stalled / s",
        value: |s| s.stalled_ns,
        show: |v| if v == 0 { "0".into() } else { fmt_ns(v) },
        color: Color::Red,
    },
    Series { label: "live tasks", value: |s| s.live_tasks, show: |v| v.to_string(), color: Color::Cyan },
    Series { label: "blocking queue", value: |s| s.blocking_queue, show: |v| v.to_string(), color: Color::Magenta },
    Series { label: "pool waiters", value: |s| s.pool_waiters, show: |v| v.to_string(), color: Color::Blue },
];

const LABEL_W: u16 = 26;

pub(crate) fn render(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    if app.snapshot().is_none() {
        let msg = match &app.status {
            crate::ui::state::ConnStatus::Reconnecting { reason, .. } => format!("Waiting for the probe: {reason}"),
            _ => "Waiting for the first update from the probe…".to_string(),
        };
        Paragraph::new(msg).style(theme.dim()).wrap(Wrap { trim: true }).render(area, buf);
        return;
    }
    // Sparklines take up to half the height; each gets at least one row.
    let spark_rows = ((area.height / 2) / SERIES.len() as u16).clamp(1, 4);
    let workers = app.worker_busy.len() as u16;
    let worker_cols = if area.width >= 120 { 2 } else { 1 };
    let worker_rows = workers.div_ceil(worker_cols).clamp(1, 8);
    let [sparks, busy, alerts] = Layout::vertical([
        Constraint::Length(spark_rows * SERIES.len() as u16 + 1),
        Constraint::Length(worker_rows + 1),
        Constraint::Min(3),
    ])
    .areas(area);
    render_sparklines(app, theme, sparks, spark_rows, buf);
    render_workers(app, theme, busy, worker_cols, buf);
    render_alerts(app, theme, alerts, buf);
}

fn render_sparklines(app: &App, theme: Theme, area: Rect, rows: u16, buf: &mut Buffer) {
    let title = Line::from(vec![
        Span::styled("Last ", theme.header()),
        Span::styled(
            format!("{} s", app.history.len().min(area.width.saturating_sub(LABEL_W) as usize)),
            theme.header(),
        ),
        Span::styled(" (one column a second; figures: the last full second)", theme.dim()),
    ]);
    Paragraph::new(title).render(Rect { height: 1, ..area }, buf);
    let spark_w = area.width.saturating_sub(LABEL_W) as usize;
    for (k, s) in SERIES.iter().enumerate() {
        let y = area.y + 1 + k as u16 * rows;
        if y >= area.bottom() {
            break;
        }
        let row = Rect { x: area.x, y, width: area.width, height: rows.min(area.bottom() - y) };
        let data = app.history.tail(spark_w, s.value);
        // The newest second is still filling: show the last complete one.
        let n = app.history.len();
        let last = app.history.seconds().nth(n.saturating_sub(2)).map(s.value).unwrap_or(0);
        let max = data.iter().copied().max().unwrap_or(0);
        let label = format!("{:<15}{:>10} ", s.label, (s.show)(last));
        let style = if last > 0 && k <= 1 { theme.fg(s.color) } else { Style::default() };
        Paragraph::new(Span::styled(clip(&label, LABEL_W as usize), style))
            .render(Rect { width: LABEL_W.min(row.width), height: 1, ..row }, buf);
        let spark_area = Rect { x: row.x + LABEL_W, width: row.width.saturating_sub(LABEL_W), ..row };
        if spark_area.width > 0 {
            Sparkline::default().data(&data).max(max.max(1)).style(theme.fg(s.color)).render(spark_area, buf);
        }
    }
}

fn render_workers(app: &App, theme: Theme, area: Rect, cols: u16, buf: &mut Buffer) {
    let title =
        Line::from(vec![Span::styled("Workers", theme.header()), Span::styled(" busy, last second", theme.dim())]);
    Paragraph::new(title).render(Rect { height: 1, ..area }, buf);
    if app.worker_busy.is_empty() {
        Paragraph::new(Span::styled("  no worker seen yet", theme.dim()))
            .render(Rect { y: area.y + 1, height: 1, ..area }, buf);
        return;
    }
    let col_w = area.width / cols;
    let rows = area.height.saturating_sub(1).max(1);
    for (k, (index, ratio)) in app.worker_busy.iter().enumerate() {
        let (c, r) = (k as u16 / rows, k as u16 % rows);
        if c >= cols {
            break;
        }
        let cell = Rect { x: area.x + c * col_w, y: area.y + 1 + r, width: col_w, height: 1 };
        if cell.y >= area.bottom() {
            break;
        }
        let label = format!(" w{index:<3}");
        let pct = format!(" {:>3.0}%", ratio * 100.0);
        let bar_w = (col_w as usize).saturating_sub(label.len() + pct.len() + 3);
        let filled = ((ratio * bar_w as f64).round() as usize).min(bar_w);
        let style = if *ratio >= 0.9 {
            theme.bad()
        } else if *ratio >= 0.6 {
            theme.warn()
        } else {
            theme.good()
        };
        let line = Line::from(vec![
            Span::raw(label),
            Span::raw("▕"),
            Span::styled("█".repeat(filled), style),
            Span::styled("·".repeat(bar_w - filled), theme.dim()),
            Span::raw("▏"),
            Span::raw(pct),
        ]);
        Paragraph::new(line).render(cell, buf);
    }
}

fn render_alerts(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let running: Vec<_> = app.stalls_in_progress().collect();
    let count = app.alerts.len() + running.len();
    let passed = app.passed_alerts.len();
    let title = if passed > 0 {
        format!(" Alerts ({count} active, {passed} passed, newest first) ")
    } else {
        format!(" Alerts ({count} active, newest first) ")
    };
    let block = Block::default().borders(Borders::TOP).title(Span::styled(title, theme.header()));
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines: Vec<Line<'_>> = Vec::new();
    for s in &running {
        let frame = crate::ui::state::frame_name(s);
        let what = if frame.is_empty() { s.spawned_at.clone() } else { frame };
        lines.push(Line::from(vec![
            Span::styled("● stalled now ", theme.bad()),
            Span::raw(format!("w{} for {}: {}", s.worker, fmt_ns(s.elapsed_ns), what)),
        ]));
    }
    for a in &app.alerts {
        let style = match a.alert.kind {
            AlertKind::BlockingPoll | AlertKind::BlockingPoolStarved | AlertKind::PoolSaturated => theme.bad(),
            AlertKind::LeakSuspect | AlertKind::LoopLag | AlertKind::CpuStarvation => theme.warn(),
            AlertKind::DroppedData => theme.dim(),
        };
        let at = short_utc(a.since_unix_ms);
        let time = at.rsplit(' ').next().unwrap_or(&at).to_string();
        lines.push(Line::from(vec![
            Span::styled("● ", style),
            Span::styled(format!("{time} "), theme.dim()),
            Span::raw(a.alert.summary.clone()),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("No active alert: no stall, leak, saturation or lag.", theme.good())));
    }
    // Incidents that passed, greyed: when, how bad at worst, how long.
    for r in &app.passed_alerts {
        let hms = |ms: u64| {
            let at = short_utc(ms);
            at.rsplit(' ').next().unwrap_or(&at).to_string()
        };
        lines.push(Line::from(Span::styled(
            // The subject last: on a narrow screen it is what gets clipped.
            format!(
                "○ {}–{} passed: {}, peak {}, active {}{} ({})",
                hms(r.first_unix_ms),
                hms(r.last_unix_ms),
                r.kind.title(),
                r.peak,
                fmt_ns(r.active_ns),
                if r.count > 1 { format!(", {} times", r.count) } else { String::new() },
                r.subject,
            ),
            theme.dim(),
        )));
    }
    let w = inner.width as usize;
    let lines: Vec<Line<'_>> = lines
        .into_iter()
        .take(inner.height as usize)
        .map(|l| {
            let text: String = l.spans.iter().map(|s| s.content.as_ref()).collect();
            if text.chars().count() <= w {
                l
            } else {
                // Keep the first span's style on the clipped line.
                let style = l.spans.first().map(|s| s.style).unwrap_or_default();
                Line::from(vec![Span::styled(clip(&text, w), style)])
            }
        })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}
