//! Time to build a flame graph of 1,000,000 stack samples and write it as SVG, the path
//! `stallscope export` takes after reading a recording.
//!
//! `cargo bench -p stallscope --bench export`. Without `--bench` (as `cargo test --benches` runs
//! it) it builds a tiny graph once and times nothing.

use std::time::Instant;

use stallscope::flame::{Flame, FlameOptions, FlameSvg};
use stallscope_wire::{Frame, FrameKind, StackCount, Stall};

fn frame(name: String, kind: FrameKind) -> Frame {
    Frame { function: name, file: Some("src/service.rs".into()), line: Some(42), inlined: false, kind }
}

/// `stalls` stalls, each with `stacks` distinct stacks of 24 frames, `samples` samples in all.
fn stalls(stalls: usize, stacks: usize, samples: u64) -> Vec<Stall> {
    let per_stack = samples / (stalls * stacks) as u64;
    (0..stalls)
        .map(|s| Stall {
            id: s as u64,
            start_unix_ms: 1_700_000_000_000 + s as u64 * 10,
            duration_ns: Some(50_000_000),
            elapsed_ns: 50_000_000,
            worker: (s % 2) as u32,
            tid: 100,
            task: Some(s as u64),
            spawned_at: format!("src/service.rs:{}:5", s % 40),
            in_block_in_place: false,
            stacks: (0..stacks)
                .map(|k| StackCount {
                    frames: (0..24)
                        .map(|d| {
                            let kind = match d {
                                0..=2 => FrameKind::Library,
                                3..=8 => FrameKind::Std,
                                _ => FrameKind::User,
                            };
                            // Distinct leaves per stack, shared callers: a realistic tree.
                            let name = if d < 6 {
                                format!("leaf_{}_{d}", (k + s) % 97)
                            } else {
                                format!("caller_{}_{d}", (s % 40) + d)
                            };
                            frame(name, kind)
                        })
                        .collect(),
                    count: per_stack,
                })
                .collect(),
            samples_lost: 0,
            anatomy: None,
            unobserved: false,
        })
        .collect()
}

fn main() {
    let timed = std::env::args().any(|a| a == "--bench");
    let (n_stalls, n_stacks, samples) = if timed { (2_000, 50, 1_000_000) } else { (10, 2, 100) };
    let input = stalls(n_stalls, n_stacks, samples);
    let mut times = Vec::new();
    let rounds = if timed { 5 } else { 1 };
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let flame = Flame::from_stalls(&input);
        let mut out = Vec::new();
        flame.write_svg(&FlameOptions::titled("bench"), &mut out).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = out.len();
        assert_eq!(flame.samples(), (samples / (n_stalls * n_stacks) as u64) * (n_stalls * n_stacks) as u64);
    }
    if !timed {
        println!("export bench: smoke run only (pass --bench to measure)");
        return;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| export {samples} samples ({n_stalls} stalls × {n_stacks} stacks × 24 frames) to SVG: median / min of {rounds} | {:.0} / {:.0} ms ({bytes} bytes) |",
        times[times.len() / 2],
        times[0]
    );
}
