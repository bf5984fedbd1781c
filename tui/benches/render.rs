//! UI frame time: how long one screen takes to draw from a large state — 100,000 live tasks over
//! 1,000 spawn locations and a flame graph of about 10,000 nodes — for every view, at 80x24 and
//! at 250x70. The budget (the project's P3 issue) is 10 ms per frame.
//!
//! `cargo bench -p stallscope --bench render`. Without `--bench` (as `cargo test --benches`
//! runs it) it draws each view once at a small size and times nothing.
//!
//! What is timed is what the run loop does per frame: refreshing the flame tree when stale (the
//! Flame view rebuilds it only when stalls or the window changed) and `view::render_area` into a
//! buffer. Writing the buffer to a terminal is crossterm's diffing, outside this figure.

use std::time::Instant;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use stallscope::ui::state::View;
use stallscope::ui::{fixture, view};

const LIVE: u64 = 100_000;
const LOCATIONS: usize = 1_000;
const NODES: usize = 10_000;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let mut app = fixture::large(LIVE, LOCATIONS, NODES);
    let t = Instant::now();
    app.refresh_flame();
    let build = t.elapsed();
    let nodes = app.flame.tree.len();
    if !bench {
        for v in View::ALL {
            app.view = v;
            let mut buf = Buffer::empty(Rect::new(0, 0, 80, 24));
            view::render_area(&app, buf.area, &mut buf);
        }
        println!("render: smoke run only (pass --bench to measure)");
        return;
    }
    let live: u64 = app.snapshot().map_or(0, |s| s.locations.iter().map(|l| l.live).sum());
    let locations = app.snapshot().map_or(0, |s| s.locations.len());
    println!("state: {live} live tasks, {locations} spawn locations, flame graph of {nodes} nodes");
    println!("flame tree build from the stalls (once per change): {:.2} ms", build.as_secs_f64() * 1e3);
    println!();
    println!("| view | 80x24 median (max) | 250x70 median (max) |");
    println!("|---|---|---|");
    let mut worst: f64 = 0.0;
    for v in View::ALL {
        app.view = v;
        let mut cells = Vec::new();
        for (w, h) in [(80u16, 24u16), (250, 70)] {
            let mut times: Vec<f64> = (0..200)
                .map(|_| {
                    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
                    let t = Instant::now();
                    view::render_area(&app, buf.area, &mut buf);
                    std::hint::black_box(&buf);
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
            worst = worst.max(median);
            cells.push(format!("{median:.3} ms ({max:.3})"));
        }
        println!("| {} | {} | {} |", v.title(), cells[0], cells[1]);
    }
    // A frame in which the flame tree must be rebuilt (new stalls arrived).
    app.view = View::Flame;
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            app.flame.stale = true;
            let mut buf = Buffer::empty(Rect::new(0, 0, 250, 70));
            let t = Instant::now();
            app.refresh_flame();
            view::render_area(&app, buf.area, &mut buf);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "| Flame, tree rebuilt in the frame | — | {:.3} ms ({:.3}) |",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    println!();
    println!("slowest view median: {worst:.3} ms (budget 10 ms)");
}
