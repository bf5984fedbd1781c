//! `probe.report()`: the latest snapshot as text, through the client's renderer
//! (`stallscope_wire::model::report`, the one behind `stallscope report`).

use stallscope_wire::model::report::{text, TextOptions};
use stallscope_wire::model::Summary;
use stallscope_wire::Snapshot;

/// Renders a snapshot as text: folded into a one-tick [`Summary`] whose span is the probe's
/// uptime, then rendered as `stallscope report` renders a recording.
pub fn render(s: &Snapshot) -> String {
    text(&Summary::from_snapshot(s, "probe.report()"), &TextOptions::probe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stallscope_wire::{
        Alert, AlertFigure, AlertKind, AlertRecord, BlockedIn, Frame, FrameKind, Histogram, LagStats, LocationStats,
        PeakUnit, PoolStats, ProcessInfo, RuntimeStats, StackCount, Stall, StallAnatomy, WorkerStats,
    };

    fn hist(counts: [u64; 3], max_ns: u64) -> Histogram {
        let upper_ns = vec![1_000_000, 10_000_000, 100_000_000];
        let sum_ns = counts.iter().zip(&upper_ns).map(|(c, u)| c * u / 2).sum();
        Histogram { upper_ns, counts: counts.to_vec(), count: counts.iter().sum(), sum_ns, max_ns }
    }

    fn frame(function: &str, file: Option<&str>, line: Option<u32>, kind: FrameKind) -> Frame {
        Frame { function: function.into(), file: file.map(Into::into), line, inlined: false, kind }
    }

    /// A snapshot with one of everything the report prints.
    fn snapshot() -> Snapshot {
        let at = 1_764_000_000_000;
        let stall = Stall {
            id: 3,
            start_unix_ms: at - 4_000,
            duration_ns: Some(52_000_000),
            elapsed_ns: 52_000_000,
            worker: 1,
            tid: 4243,
            task: Some(17),
            spawned_at: "/w/shopd/src/main.rs:40:5".into(),
            in_block_in_place: false,
            stacks: vec![
                StackCount {
                    frames: vec![
                        frame(
                            "std::thread::sleep",
                            Some("/rustc/library/std/src/thread/mod.rs"),
                            Some(8),
                            FrameKind::Std,
                        ),
                        frame("shopd::cache::refresh", Some("/w/shopd/src/cache.rs"), Some(51), FrameKind::User),
                        frame(
                            "shopd::handler::{async fn body}",
                            Some("/w/shopd/src/handler.rs"),
                            Some(12),
                            FrameKind::User,
                        ),
                    ],
                    count: 9,
                },
                StackCount { frames: vec![frame("shopd::other", None, None, FrameKind::User)], count: 1 },
            ],
            samples_lost: 0,
            anatomy: Some(StallAnatomy {
                on_cpu_ns: 200_000,
                waiting_ns: 0,
                blocked_ns: 51_800_000,
                measured_ns: 50_000_000,
                throttled_ns: None,
                blocked_in: vec![BlockedIn { syscall: "clock_nanosleep(2)".into(), target: None, samples: 9 }],
                cpu_starved: false,
            }),
            unobserved: false,
        };
        let location = |name: &str, live, leak| LocationStats {
            location: name.into(),
            spawned: 40,
            completed: 40 - live,
            live,
            oldest_live_ns: Some(3_000_000_000),
            polls: 100,
            poll_time: hist([90, 9, 1], 52_000_000),
            schedule_latency: None,
            leak_suspect: leak,
            internal: false,
            blocking: false,
        };
        let lag = |value| AlertFigure { value, unit: PeakUnit::Nanos };
        Snapshot {
            at_unix_ms: at,
            uptime_ns: 30_000_000_000,
            process: ProcessInfo {
                pid: 4242,
                name: "shopd".into(),
                probe_version: "0.1.0".into(),
                stall_threshold_ns: 10_000_000,
                ..ProcessInfo::default()
            },
            workers: (0..2)
                .map(|index| WorkerStats {
                    index,
                    tid: 4242 + index as i32,
                    polls: 50,
                    busy_ns: 3_000_000_000,
                    poll_time: hist([45, 4, index as u64], 52_000_000),
                })
                .collect(),
            locations: vec![
                location("/w/shopd/src/main.rs:40:5", 2, false),
                location("/w/shopd/src/conn.rs:9:9", 30, true),
            ],
            stalls: vec![stall],
            stall_count: 1,
            stalled_ns: 52_000_000,
            lag: LagStats {
                lag: hist([20, 0, 0], 400_000),
                last_ns: 120_000,
                period_ns: 100_000_000,
                ..LagStats::default()
            },
            runtime: Some(RuntimeStats {
                workers: 2,
                live_tasks: 32,
                blocking_threads: 2,
                idle_blocking_threads: 0,
                blocking_queue_depth: 3,
                ..RuntimeStats::default()
            }),
            pools: vec![PoolStats {
                name: "db".into(),
                in_use: 4,
                idle: 0,
                max: 4,
                waiters: 2,
                acquired: 80,
                wait_time: hist([10, 5, 1], 30_000_000),
            }],
            alerts: vec![Alert {
                kind: AlertKind::BlockingPoll,
                subject: "shopd::cache::refresh".into(),
                summary: "blocking poll: 52.0 ms in refresh (src/cache.rs:51)".into(),
                what_to_do: AlertKind::BlockingPoll.what_to_do().into(),
            }],
            alert_history: vec![
                AlertRecord {
                    kind: AlertKind::BlockingPoll,
                    subject: "shopd::cache::refresh".into(),
                    first_unix_ms: at - 4_000,
                    last_unix_ms: at,
                    count: 1,
                    active_ns: 4_000_000_000,
                    peak: lag(52_000_000),
                    peak_unix_ms: at - 3_900,
                    peak_summary: "blocking poll: 52.0 ms in refresh (src/cache.rs:51)".into(),
                    latest: lag(52_000_000),
                    latest_summary: "blocking poll: 52.0 ms in refresh (src/cache.rs:51)".into(),
                    what_to_do: AlertKind::BlockingPoll.what_to_do().into(),
                    active: true,
                },
                AlertRecord {
                    kind: AlertKind::LoopLag,
                    subject: "heartbeat".into(),
                    first_unix_ms: at - 20_000,
                    last_unix_ms: at - 19_000,
                    count: 1,
                    active_ns: 1_000_000_000,
                    peak: lag(80_000_000),
                    peak_unix_ms: at - 19_500,
                    peak_summary: "loop lag: a heartbeat fired 80.0 ms late".into(),
                    latest: lag(30_000_000),
                    latest_summary: "loop lag: a heartbeat fired 30.0 ms late".into(),
                    what_to_do: AlertKind::LoopLag.what_to_do().into(),
                    active: false,
                },
            ],
            ..Snapshot::default()
        }
    }

    /// `probe.report()`'s text for a fixed snapshot, against `tests/data/report.txt`.
    /// `BLESS=1 cargo test -p stallscope-probe --lib report` rewrites it.
    #[test]
    fn report_golden() {
        let actual = render(&snapshot());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/report.txt");
        if std::env::var_os("BLESS").is_some_and(|v| v != "0") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}; run the test with BLESS=1 to create it", path.display()));
        assert_eq!(actual, expected, "probe.report() changed; BLESS=1 rewrites {}", path.display());
    }
}
