//! A self-contained SVG chart of [`Results`]: each configuration's wall time relative to bare, per
//! workload, as the median of the rounds with min–max whiskers.
//!
//! Two panels: all configurations on a log scale (tokio-metrics and console-subscriber cost several
//! times bare, the probe a few percent), then the probe's configurations alone on a linear scale,
//! where a few percent and the budget lines (dashed) are visible. The rounds' spread is drawn as
//! it is: on a noisy machine it can dwarf a 1% budget. Written by hand: no plotting crate.

use std::fmt::Write;

use crate::report;
use crate::results::{Results, Spread};

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 890.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 16.0;
/// Panel A (log scale, every configuration): top and height of the plot area.
const A_TOP: f64 = 112.0;
const A_HEIGHT: f64 = 300.0;
/// Panel B (linear scale, probe configurations).
const B_TOP: f64 = 540.0;
const B_HEIGHT: f64 = 200.0;
const LEGEND_TOP: f64 = 815.0;
/// Panel B shows whiskers up to this ratio, or a little above the highest median or budget if
/// that is higher; a whisker beyond is cut, with an arrowhead and its value.
const B_MAX_TOP: f64 = 1.6;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const BUDGET_COLOUR: &str = "#c62828";

fn colour(config: &str) -> &'static str {
    match config {
        "probe" => "#1b7837",
        "probe-client-record" => "#5aae61",
        "probe-stalled-client" => "#a6dba0",
        "tokio-metrics" => "#762a83",
        "console" => "#e08214",
        "console-client" => "#fdb863",
        _ => "#9e9e9e",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar to draw: a configuration and its ratios' spread, or a "not run" mark.
struct Bar {
    config: String,
    ratios: Spread,
    not_run: bool,
}

struct Group {
    work: String,
    name: String,
    units: String,
    bars: Vec<Bar>,
    budget: Option<(f64, String)>,
}

/// The budget line of a workload as a ratio to bare, with its label.
fn budget(r: &Results, work: &str) -> Option<(f64, String)> {
    match work {
        "w1" => {
            let w = r.workload("w1")?;
            let bare = Spread::of(&r.runs("w1", "bare").iter().map(|x| x.wall_secs).collect::<Vec<_>>());
            let ns = bare.median * 1e9 / w.units as f64;
            (ns > 0.0).then(|| (1.0 + report::W1_NS_PER_POLL / ns, format!("+{} ns/poll", report::W1_NS_PER_POLL)))
        }
        "w2" => Some((report::W2_RATIO, format!("≤ {:.2}×", report::W2_RATIO))),
        "w3" => Some((report::W3_RATIO, format!("≤ {:.2}×", report::W3_RATIO))),
        "w4" => Some((report::W4_RATIO, format!("≤ {:.2}×", report::W4_RATIO))),
        _ => None,
    }
}

fn groups(r: &Results, only_probe: bool) -> Vec<Group> {
    r.workloads
        .iter()
        .map(|w| {
            let bars = r
                .configs
                .iter()
                .filter(|c| c.id != "bare" && (!only_probe || c.id.starts_with("probe")))
                .filter_map(|c| match r.skip(&w.id, &c.id) {
                    Some(s) if s.shown => Some(Bar { config: c.id.clone(), ratios: Spread::of(&[]), not_run: true }),
                    Some(_) => None,
                    None => {
                        let ratios = Spread::of(&r.ratios(&w.id, &c.id));
                        (ratios.n > 0).then(|| Bar { config: c.id.clone(), ratios, not_run: false })
                    }
                })
                .collect();
            let name = w.title.split(':').next().unwrap_or(&w.title).to_string();
            let units = format!("{} {}s", thousands(w.units), w.unit);
            Group { work: w.id.clone(), name, units, bars, budget: budget(r, &w.id) }
        })
        .filter(|g| !g.bars.is_empty())
        .collect()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Horizontal layout of the groups: (x of each bar's centre, bar width), per group.
fn layout(groups: &[Group]) -> (Vec<Vec<f64>>, f64) {
    const GAP: f64 = 1.1;
    let bars: usize = groups.iter().map(|g| g.bars.len()).sum();
    let slots = bars as f64 + GAP * groups.len() as f64;
    let slot = (WIDTH - LEFT - RIGHT) / slots;
    let mut x = LEFT + slot * GAP / 2.0;
    let mut out = Vec::new();
    for g in groups {
        let mut xs = Vec::new();
        for _ in &g.bars {
            xs.push(x + slot / 2.0);
            x += slot;
        }
        x += slot * GAP;
        out.push(xs);
    }
    (out, (slot * 0.72).min(56.0))
}

/// 1-2-5 steps.
fn nice_steps(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32 - 1);
    while decade <= hi * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            let x = m * decade;
            if x >= lo * 0.999 && x <= hi * 1.001 {
                v.push(x);
            }
        }
        decade *= 10.0;
    }
    v
}

fn fmt_tick(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.0}×")
    } else {
        format!("{x}×")
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}×")
    } else if x >= 2.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.3}")
    }
}

/// The y scale of a panel.
struct Scale {
    lo: f64,
    hi: f64,
    /// Whiskers above this are cut there, with an arrow and their value.
    clip: f64,
    log: bool,
    top: f64,
    height: f64,
}

impl Scale {
    fn y(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        let t = if self.log {
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.top + self.height * (1.0 - t)
    }
}

/// Draws one panel's axes, bars, whiskers, value labels and budget lines.
fn panel(out: &mut String, groups: &[Group], s: &Scale, ticks: &[f64], title: &str, axis: &str, rotate: bool) {
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        s.top - 14.0,
        esc(title)
    );
    for &t in ticks {
        let y = s.y(t);
        let (stroke, w) = if (t - 1.0).abs() < 1e-9 { ("#444", 1.2) } else { ("#e3e3e3", 1.0) };
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="{stroke}" stroke-width="{w}"/>"#
        );
        let label = if s.log { fmt_tick(t) } else { format!("{t:.2}") };
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{label}</text>"##,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let mid = s.top + s.height / 2.0;
    let _ = writeln!(
        out,
        r##"<text transform="translate(18 {mid:.1}) rotate(-90)" font-size="12" text-anchor="middle" fill="#333">{}</text>"##,
        esc(axis)
    );
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{0:.1}" x2="{right}" y2="{0:.1}" stroke="#888"/><line x1="{LEFT}" y1="{1:.1}" x2="{LEFT}" y2="{0:.1}" stroke="#888"/>"##,
        s.top + s.height,
        s.top
    );

    let (xs, bw) = layout(groups);
    let one = s.y(1.0);
    for (g, xs) in groups.iter().zip(&xs) {
        let (gx0, gx1) = (xs[0] - bw * 0.9, xs[xs.len() - 1] + bw * 0.9);
        // Workload name and size under the group.
        let cx = (gx0 + gx1) / 2.0;
        let base = s.top + s.height;
        let _ = writeln!(
            out,
            r##"<text x="{cx:.1}" y="{:.1}" font-size="12" font-weight="bold" text-anchor="middle">{}</text>"##,
            base + 17.0,
            esc(&g.name)
        );
        let _ = writeln!(
            out,
            r##"<text x="{cx:.1}" y="{:.1}" font-size="10.5" text-anchor="middle" fill="#555">{}</text>"##,
            base + 31.0,
            esc(&g.units)
        );
        if let Some((_, label)) = &g.budget {
            let _ = writeln!(
                out,
                r#"<text x="{cx:.1}" y="{:.1}" font-size="10.5" text-anchor="middle" fill="{BUDGET_COLOUR}">budget {}</text>"#,
                base + 45.0,
                esc(label)
            );
        }
        for (b, &x) in g.bars.iter().zip(xs) {
            if b.not_run {
                let _ = writeln!(
                    out,
                    r##"<text transform="translate({:.1} {:.1}) rotate(-90)" font-size="10" fill="#777">not run (memory)</text>"##,
                    x + 3.5,
                    one - 6.0,
                );
                continue;
            }
            let r = b.ratios;
            let top = s.y(r.median);
            let (y0, y1) = (one.min(top), one.max(top));
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{y0:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{} on {}: median {:.3}, min {:.3}, max {:.3} ({} rounds)</title></rect>"#,
                x - bw / 2.0,
                (y1 - y0).max(1.0),
                colour(&b.config),
                esc(&b.config),
                esc(&g.work),
                r.median,
                r.min,
                r.max,
                r.n
            );
            let (wlo, whi) = (s.y(r.min), s.y(r.max.min(s.clip)));
            let cap = bw * 0.25;
            let _ = writeln!(
                out,
                r##"<path d="M{x:.1} {wlo:.1}V{whi:.1}M{:.1} {wlo:.1}h{:.1}M{:.1} {whi:.1}h{:.1}" stroke="#222" stroke-width="1.2" fill="none"/>"##,
                x - cap,
                2.0 * cap,
                x - cap,
                2.0 * cap
            );
            let cut = r.max > s.clip;
            if cut {
                // The whisker goes off the top: an arrowhead, and its real maximum in the label.
                let _ = writeln!(
                    out,
                    r##"<path d="M{:.1} {:.1}L{x:.1} {whi:.1}L{:.1} {:.1}" stroke="#222" stroke-width="1.2" fill="none"/>"##,
                    x - 4.0,
                    whi + 6.0,
                    x + 4.0,
                    whi + 6.0,
                );
            }
            // The median, above the whisker, with a white halo so that grid and budget lines do
            // not hide it; a cut whisker's maximum above that.
            let label = fmt_ratio(r.median);
            let halo = r#"paint-order="stroke" stroke="white" stroke-width="3" stroke-linejoin="round""#;
            if rotate {
                let y = s.y(r.max.max(1.0)) - 4.0;
                let _ = writeln!(
                    out,
                    r#"<text transform="translate({:.1} {y:.1}) rotate(-90)" font-size="10.5" {halo}>{label}</text>"#,
                    x + 3.8
                );
            } else {
                let y = s.y(r.max.max(1.0).min(s.clip)) - 5.0;
                let _ = writeln!(
                    out,
                    r#"<text x="{x:.1}" y="{y:.1}" font-size="10.5" text-anchor="middle" {halo}>{label}</text>"#
                );
                if cut {
                    let _ = writeln!(
                        out,
                        r##"<text x="{x:.1}" y="{:.1}" font-size="9.5" text-anchor="middle" fill="#444" {halo}>max {}</text>"##,
                        y - 12.0,
                        fmt_ratio(r.max)
                    );
                }
            }
        }
        if let Some((b, _)) = &g.budget {
            if *b >= s.lo && *b <= s.hi {
                let y = s.y(*b);
                let _ = writeln!(
                    out,
                    r#"<line x1="{gx0:.1}" y1="{y:.1}" x2="{gx1:.1}" y2="{y:.1}" stroke="{BUDGET_COLOUR}" stroke-width="1.5" stroke-dasharray="5 3"/>"#
                );
            }
        }
    }
}

/// The whole chart.
pub(crate) fn svg(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="{FONT}">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="28" font-size="17" font-weight="bold">Wall time relative to bare: stallscope probe vs tokio-metrics vs console-subscriber</text>"#
    );
    let m = &r.machine;
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="48" font-size="11.5" fill="#444">{} · {} cores · Linux {} · {} Tokio workers · {} UTC</text>"##,
        esc(&m.cpu_model),
        m.nproc,
        esc(&m.kernel),
        r.workers,
        esc(&r.started_utc.replace('T', " ").replace('Z', ""))
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="64" font-size="11.5" fill="#444">{} mode: bars are the median over {} rounds of each run's wall time ÷ the bare run of the same round; whiskers min–max; dashed: P4 budgets</text>"##,
        esc(&r.mode),
        r.rounds
    );

    // Panel A: everything, log scale.
    let all = groups(r, false);
    let (mut lo, mut hi) = (1.0f64, 1.0f64);
    for g in &all {
        for b in g.bars.iter().filter(|b| !b.not_run) {
            lo = lo.min(b.ratios.min);
            hi = hi.max(b.ratios.max);
        }
        if let Some((b, _)) = g.budget {
            hi = hi.max(b);
        }
    }
    let bottom = nice_steps(lo * 0.05, lo * 0.95).last().copied().unwrap_or(lo * 0.9);
    let a = Scale { lo: bottom, hi: hi * 3.0, clip: hi * 3.0, log: true, top: A_TOP, height: A_HEIGHT };
    let ticks = nice_steps(a.lo, a.hi);
    panel(&mut out, &all, &a, &ticks, "All configurations (log scale)", "wall time ÷ bare (log)", true);

    // Panel B: the probe's configurations, linear scale.
    let probe = groups(r, true);
    if !probe.is_empty() {
        let (mut lo, mut hi, mut top) = (0.95f64, 1.10f64, 1.10f64);
        for g in &probe {
            for b in g.bars.iter().filter(|b| !b.not_run) {
                lo = lo.min(b.ratios.min);
                hi = hi.max(b.ratios.max);
                top = top.max(b.ratios.median);
            }
            if let Some((b, _)) = g.budget {
                top = top.max(b);
            }
        }
        let shown = hi.min(B_MAX_TOP.max(top + 0.1));
        let lo = lo.max(2.0 - B_MAX_TOP);
        let step = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5].into_iter().find(|s| (shown - lo) / s <= 8.0).unwrap_or(1.0);
        let lo = (lo / step).floor() * step;
        // Headroom for the value labels above the tallest whisker shown: 18 px, 30 px when a cut
        // whisker's maximum is written above its median.
        let cut = probe.iter().flat_map(|g| &g.bars).any(|b| b.ratios.max > shown);
        let room = if cut { 30.0 } else { 18.0 };
        let mut hi = (shown / step).ceil() * step;
        while (hi - shown) / (hi - lo) * B_HEIGHT < room {
            hi += step;
        }
        let ticks: Vec<f64> = (0..).map(|i| lo + step * i as f64).take_while(|t| *t <= hi + step * 1e-6).collect();
        let b = Scale { lo, hi, clip: shown, log: false, top: B_TOP, height: B_HEIGHT };
        panel(
            &mut out,
            &probe,
            &b,
            &ticks,
            "The stallscope probe alone (linear scale, zoomed)",
            "wall time ÷ bare",
            false,
        );
    }

    legend(&mut out, r, &all);
    let _ = writeln!(out, "</svg>");
    out
}

fn legend(out: &mut String, r: &Results, groups: &[Group]) {
    let mut x = LEFT;
    let mut y = LEGEND_TOP;
    for c in r.configs.iter().filter(|c| groups.iter().any(|g| g.bars.iter().any(|b| b.config == c.id))) {
        let w = 22.0 + c.short.chars().count() as f64 * 6.6 + 22.0;
        if x + w > WIDTH - RIGHT {
            x = LEFT;
            y += 20.0;
        }
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="14" height="14" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            y - 11.0,
            colour(&c.id),
            x + 20.0,
            y,
            esc(&c.short)
        );
        x += w;
    }
    y += 22.0;
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{BUDGET_COLOUR}" stroke-width="1.5" stroke-dasharray="5 3"/><text x="{2:.1}" y="{3:.1}" font-size="12">P4 budgets: W1 +{4} ns/poll, W2 ≤ {5:.2}×, W3 and W4 ≤ {6:.2}× bare (the W1 line is drawn at bare's median ns/poll)</text>"#,
        y - 4.0,
        LEFT + 28.0,
        LEFT + 36.0,
        y,
        report::W1_NS_PER_POLL,
        report::W2_RATIO,
        report::W3_RATIO,
    );
}
