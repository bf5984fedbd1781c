//! A report covers exactly the span it was recorded over (P5 §5 defects 1, 3, 5, 6, 7), folded
//! from in-memory updates the way `stallscope record` receives them.

use stallscope::report::{self, TextOptions};
use stallscope_wire::model::{Damage, Model, Summary};
use stallscope_wire::recording::RecordingHeader;
use stallscope_wire::{
    Alert, AlertFigure, AlertKind, AlertRecord, Frame, FrameKind, Interval, PeakUnit, ProcessInfo, Received,
    RuntimeStats, Snapshot, StackCount, Stall, Update,
};

/// When the recording was created.
const T0: u64 = 1_800_000_000_000;

fn frame(function: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: Some("src/main.rs".into()),
        line: Some(line),
        inlined: false,
        kind: FrameKind::User,
    }
}

fn stall(id: u64, start_unix_ms: u64, ms: u64, stacks: Vec<StackCount>) -> Stall {
    Stall {
        id,
        start_unix_ms,
        duration_ns: Some(ms * 1_000_000),
        elapsed_ns: ms * 1_000_000,
        worker: 0,
        tid: 7,
        task: Some(id),
        spawned_at: "src/main.rs:9:5".into(),
        in_block_in_place: false,
        stacks,
        samples_lost: 0,
        anatomy: None,
        unobserved: false,
    }
}

fn sampled(function: &str) -> Vec<StackCount> {
    vec![StackCount { frames: vec![frame(function, 12)], count: 3 }]
}

fn runtime(busy_s_per_worker: f64) -> RuntimeStats {
    let b = (busy_s_per_worker * 1e9) as u64;
    RuntimeStats { workers: 2, busy_ns: 2 * b, worker_busy_ns: vec![b, b], busy_ratio: 0.0, ..RuntimeStats::default() }
}

fn tick(
    seq: u64,
    at: u64,
    uptime_s: u64,
    busy_s: f64,
    stalls: Vec<Stall>,
    alerts: Vec<Alert>,
    history: Vec<AlertRecord>,
) -> Received {
    let snapshot = Snapshot {
        seq,
        at_unix_ms: at,
        uptime_ns: uptime_s * 1_000_000_000,
        stall_count: stalls.len() as u64,
        stalls,
        runtime: Some(runtime(busy_s)),
        alerts,
        alert_history: history,
        ..Snapshot::default()
    };
    Received::Update(Update::Tick {
        snapshot: Box::new(snapshot),
        interval: Box::new(Interval { seq, ..Interval::default() }),
    })
}

fn blocking_alert(summary: &str) -> Alert {
    Alert {
        kind: AlertKind::BlockingPoll,
        subject: "app::slow".into(),
        summary: summary.into(),
        what_to_do: "x".into(),
    }
}

fn fold(updates: Vec<Received>) -> Summary {
    let header = RecordingHeader { created_unix_ms: T0, ..RecordingHeader::new(ProcessInfo::default(), "test") };
    let mut f = Model::new(header);
    for u in &updates {
        f.push(u);
    }
    f.finish(Damage::default())
}

/// Defect 5: the first snapshot a new client gets carries the probe's recent stalls, from up to
/// a minute before; they are not the recording's, and the span is the recording's own.
#[test]
fn stalls_from_before_the_recording_are_kept_apart_and_the_span_is_the_recordings() {
    let old = stall(1, T0 - 45_000, 20, sampled("app::old"));
    let new = stall(2, T0 + 5_000, 30, sampled("app::slow"));
    let sum = fold(vec![
        tick(10, T0 + 100, 100, 10.0, vec![old.clone()], vec![], vec![]),
        Received::Update(Update::StallEnded(new.clone())),
        tick(11, T0 + 20_000, 120, 12.0, vec![old.clone(), new.clone()], vec![], vec![]),
    ]);
    assert_eq!(sum.stalls.iter().map(|s| s.id).collect::<Vec<_>>(), [2]);
    assert_eq!(sum.earlier_stalls.iter().map(|s| s.id).collect::<Vec<_>>(), [1]);
    assert_eq!(sum.start_unix_ms(), T0);
    let text = report::text(&sum, &TextOptions::default());
    assert!(text.lines().next().unwrap().contains(", 20.00 s from "), "{text}");
    assert!(text.contains("stalls: 1 seen"), "{text}");
    assert!(text.contains("1 stall from before the recording started"), "{text}");
    // Defect 6: busy over the recording, from Tokio's busy time: 2 s per worker in 20 s.
    assert!(text.contains("busy 10% over the recording"), "{text}");
    let v = report::json(&sum);
    assert_eq!(v["stalls_before_recording"], 1);
    assert_eq!(v["stalls"].as_array().unwrap().len(), 1);
}

/// Defect 3: the alert line of the report summarised the last tick ("30.9 ms … 6 stalls")
/// beside 300 stalls with a longest of 34.8 ms; it now summarises the recording.
#[test]
fn the_alert_line_summarises_the_recording_not_the_last_tick() {
    let stalls: Vec<Stall> =
        (0..300).map(|i| stall(i + 1, T0 + 10 + i * 50, if i == 7 { 35 } else { 31 }, sampled("app::slow"))).collect();
    let mut updates: Vec<Received> = stalls.iter().map(|s| Received::Update(Update::StallEnded(s.clone()))).collect();
    updates.push(tick(
        5,
        T0 + 15_500,
        60,
        1.0,
        stalls[294..].to_vec(),
        vec![blocking_alert("blocking poll: 31.0 ms in app::slow (src/main.rs:12) (6 stalls in the last 10 s)")],
        vec![],
    ));
    let sum = fold(updates);
    let text = report::text(&sum, &TextOptions::default());
    let line = text.lines().find(|l| l.starts_with("  ! blocking poll")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("blocking poll: 35.0 ms in slow (src/main.rs:12), 300 stalls in this recording"), "{line}");
    assert!(!line.contains("6 stalls"), "{line}");
}

/// §6 on the client: an alert's peak over the recording and its episodes, from the probe's
/// history; an incident that passed before the recording is listed apart.
#[test]
fn alert_peaks_and_earlier_incidents_are_in_the_report() {
    let starved = |q: u64| Alert {
        kind: AlertKind::BlockingPoolStarved,
        subject: "blocking pool".into(),
        summary: format!("blocking pool starved: {q} queued, 2 threads all busy"),
        what_to_do: "x".into(),
    };
    let record = |q: u64, active: bool| AlertRecord {
        kind: AlertKind::BlockingPoolStarved,
        subject: "blocking pool".into(),
        latest: AlertFigure { value: q, unit: PeakUnit::Queued },
        active,
        ..AlertRecord::default()
    };
    let earlier = AlertRecord {
        kind: AlertKind::LoopLag,
        subject: "heartbeat".into(),
        first_unix_ms: T0 - 30_000,
        last_unix_ms: T0 - 29_000,
        count: 1,
        active_ns: 1_000_000_000,
        peak: AlertFigure { value: 80_000_000, unit: PeakUnit::Nanos },
        peak_unix_ms: T0 - 29_500,
        peak_summary: "loop lag: a heartbeat fired 80.0 ms late".into(),
        ..AlertRecord::default()
    };
    let sum = fold(vec![
        tick(1, T0 + 100, 10, 0.0, vec![], vec![starved(5)], vec![earlier.clone(), record(5, true)]),
        tick(2, T0 + 200, 10, 0.0, vec![], vec![starved(22)], vec![earlier.clone(), record(22, true)]),
        tick(3, T0 + 300, 10, 0.0, vec![], vec![], vec![earlier.clone(), record(22, false)]),
        tick(4, T0 + 400, 10, 0.0, vec![], vec![starved(3)], vec![earlier.clone(), record(3, true)]),
        tick(5, T0 + 500, 10, 0.0, vec![], vec![], vec![earlier.clone(), record(3, false)]),
    ]);
    let a = &sum.alerts[0];
    assert_eq!((a.count, a.ticks, a.active_at_end), (2, 3, false));
    assert_eq!(a.peak.map(|p| p.value), Some(22));
    assert_eq!(a.peak_summary, "blocking pool starved: 22 queued, 2 threads all busy");
    let text = report::text(&sum, &TextOptions::default());
    assert!(
        text.contains("blocking pool starved: 22 queued, 2 threads all busy (peak 22 queued at +0.200 s)"),
        "{text}"
    );
    assert!(text.contains("2 times, passed]"), "{text}");
    assert!(text.contains("incidents before the recording started"), "{text}");
    assert!(text.contains("loop lag (heartbeat): peak 80.0 ms at -29.500 s; active 1.00 s, 1 time"), "{text}");
    let v = report::json(&sum);
    assert_eq!(v["alerts"][0]["peak"]["value"], 22);
    assert_eq!(v["alerts"][0]["peak"]["unit"], "queued");
    assert_eq!(v["earlier_incidents"][0]["kind"], "loop_lag");
}

/// Defect 1 in the JSON report: `top_user_frame` and `frames` come from the same stack, and a
/// stack of no frame is no stack.
#[test]
fn top_frame_and_frames_come_from_one_stack() {
    let mut stacks = vec![StackCount { frames: vec![], count: 9 }];
    stacks.push(StackCount { frames: vec![frame("app::b", 3)], count: 2 });
    stacks.push(StackCount { frames: vec![frame("app::a", 2)], count: 2 });
    let sum = fold(vec![Received::Update(Update::StallEnded(stall(1, T0 + 1, 14, stacks)))]);
    let v = report::json(&sum);
    let s = &v["stalls"][0];
    assert_eq!(s["top_user_frame"]["function"], s["frames"][0]["function"], "{s}");
    let empty = fold(vec![Received::Update(Update::StallEnded(stall(
        1,
        T0 + 1,
        14,
        vec![StackCount { frames: vec![], count: 1 }],
    )))]);
    let text = report::text(&empty, &TextOptions::default());
    assert!(text.contains("(no stack sample)"), "{text}");
    assert!(!text.contains(" in  "), "{text}");
}
