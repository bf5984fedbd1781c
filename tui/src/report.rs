//! `stallscope report`: the model's [`Summary`] as text, or as the stable JSON documented in
//! `docs/report-json.md`.

use serde::Serialize;
use stallscope_wire::{AlertFigure, AlertKind, Frame, FrameKind, Histogram, PeakUnit, Stall};

use crate::timefmt::{ns_to_ms, rfc3339_ms};
use stallscope_wire::model::report::locations_by_p99;
use stallscope_wire::model::Summary;

pub use stallscope_wire::model::report::{alert_line, text, Scope, TextOptions};

fn alert_kind_name(k: AlertKind) -> &'static str {
    match k {
        AlertKind::BlockingPoll => "blocking_poll",
        AlertKind::LeakSuspect => "leak_suspect",
        AlertKind::PoolSaturated => "pool_saturated",
        AlertKind::BlockingPoolStarved => "blocking_pool_starved",
        AlertKind::LoopLag => "loop_lag",
        AlertKind::DroppedData => "dropped_data",
        AlertKind::CpuStarvation => "cpu_starvation",
    }
}

/// `user`, `std`, `tokio`, `library`, `unknown`.
pub fn frame_kind_name(k: FrameKind) -> &'static str {
    match k {
        FrameKind::User => "user",
        FrameKind::Std => "std",
        FrameKind::Tokio => "tokio",
        FrameKind::Library => "library",
        FrameKind::Unknown => "unknown",
    }
}

// === JSON ===

#[derive(Serialize)]
struct JsonReport {
    stalls: Vec<JsonStall>,
    functions: Vec<JsonFunction>,
    leak_suspects: Vec<JsonLeak>,
    pools: JsonPools,
    lag: Option<JsonLag>,
    polls: Option<JsonPolls>,
    alerts: Vec<JsonAlert>,
    dropped: JsonDropped,
    earlier_incidents: Vec<JsonIncident>,
    stalls_before_recording: usize,
    busy_ratio: Option<f64>,
}

#[derive(Serialize)]
struct JsonFrame {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    kind: &'static str,
    inlined: bool,
}

impl From<&Frame> for JsonFrame {
    fn from(f: &Frame) -> Self {
        JsonFrame {
            function: f.function.clone(),
            file: f.file.clone(),
            line: f.line,
            kind: frame_kind_name(f.kind),
            inlined: f.inlined,
        }
    }
}

#[derive(Serialize)]
struct JsonStall {
    id: u64,
    duration_ms: f64,
    ended: bool,
    start: String,
    start_unix_ms: u64,
    offset_ms: i64,
    worker: u32,
    tid: i32,
    task: Option<u64>,
    spawned_at: String,
    in_block_in_place: bool,
    samples: u64,
    samples_lost: u64,
    top_user_frame: Option<JsonFrame>,
    frames: Vec<JsonFrame>,
    /// `on CPU`, `blocked`, `no CPU`, `unseen` or `—` ([`Stall::kind_label`]).
    kind: &'static str,
    /// Whether the stall names code ([`Stall::blames_code`]).
    blames_code: bool,
    unobserved: bool,
    anatomy: Option<JsonAnatomy>,
}

#[derive(Serialize)]
struct JsonAnatomy {
    on_cpu_ms: f64,
    waiting_ms: f64,
    blocked_ms: f64,
    measured_ms: f64,
    throttled_ms: Option<f64>,
    cpu_starved: bool,
    blocked_in: Vec<JsonBlockedIn>,
    summary: String,
}

#[derive(Serialize)]
struct JsonBlockedIn {
    syscall: String,
    target: Option<String>,
    samples: u64,
}

impl From<&stallscope_wire::StallAnatomy> for JsonAnatomy {
    fn from(a: &stallscope_wire::StallAnatomy) -> Self {
        JsonAnatomy {
            on_cpu_ms: ns_to_ms(a.on_cpu_ns),
            waiting_ms: ns_to_ms(a.waiting_ns),
            blocked_ms: ns_to_ms(a.blocked_ns),
            measured_ms: ns_to_ms(a.measured_ns),
            throttled_ms: a.throttled_ns.map(ns_to_ms),
            cpu_starved: a.cpu_starved,
            blocked_in: a
                .blocked_in
                .iter()
                .map(|b| JsonBlockedIn { syscall: b.syscall.clone(), target: b.target.clone(), samples: b.samples })
                .collect(),
            summary: a.describe(),
        }
    }
}

#[derive(Serialize)]
struct JsonFunction {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    kind: Option<&'static str>,
    stalls: u64,
    stalled_ms: f64,
    longest_ms: f64,
    samples: u64,
}

#[derive(Serialize)]
struct JsonLeak {
    location: String,
    live: u64,
    spawned: u64,
    completed: u64,
    oldest_live_ms: Option<f64>,
}

#[derive(Serialize)]
struct JsonPools {
    registered: Vec<JsonPool>,
    blocking: Option<JsonBlocking>,
}

#[derive(Serialize)]
struct JsonPool {
    name: String,
    in_use: u64,
    idle: u64,
    max: u64,
    waiters: u64,
    acquired: u64,
    saturated: bool,
    wait: JsonPercentiles,
}

#[derive(Serialize)]
struct JsonBlocking {
    threads: u64,
    idle: u64,
    queued: u64,
    starved: bool,
}

#[derive(Serialize)]
struct JsonPercentiles {
    count: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    max_ms: f64,
    mean_ms: Option<f64>,
}

impl From<&Histogram> for JsonPercentiles {
    fn from(h: &Histogram) -> Self {
        JsonPercentiles {
            count: h.count,
            p50_ms: h.quantile_ns(0.5).map(ns_to_ms),
            p99_ms: h.quantile_ns(0.99).map(ns_to_ms),
            p999_ms: h.quantile_ns(0.999).map(ns_to_ms),
            max_ms: ns_to_ms(h.max_ns),
            mean_ms: h.mean_ns().map(ns_to_ms),
        }
    }
}

#[derive(Serialize)]
struct JsonLag {
    period_ms: f64,
    last_ms: f64,
    #[serde(flatten)]
    lag: JsonPercentiles,
}

#[derive(Serialize)]
struct JsonPolls {
    #[serde(flatten)]
    all: JsonPercentiles,
    by_location: Vec<JsonLocationPolls>,
}

#[derive(Serialize)]
struct JsonLocationPolls {
    location: String,
    live: u64,
    spawned: u64,
    completed: u64,
    blocking: bool,
    poll_time: JsonPercentiles,
    schedule_latency: Option<JsonPercentiles>,
}

#[derive(Serialize)]
struct JsonAlert {
    kind: &'static str,
    summary: String,
    what_to_do: String,
    first_seen: String,
    last_seen: String,
    ticks: u64,
    subject: String,
    count: u64,
    peak: Option<JsonFigure>,
    peak_at: Option<String>,
    peak_summary: String,
    recording_summary: String,
    active_at_end: bool,
}

#[derive(Serialize)]
struct JsonFigure {
    value: u64,
    unit: &'static str,
    text: String,
}

impl From<AlertFigure> for JsonFigure {
    fn from(f: AlertFigure) -> Self {
        let unit = match f.unit {
            PeakUnit::Nanos => "ns",
            PeakUnit::Tasks => "tasks",
            PeakUnit::Waiters => "waiters",
            PeakUnit::Queued => "queued",
            PeakUnit::Dropped => "dropped",
        };
        JsonFigure { value: f.value, unit, text: f.to_string() }
    }
}

#[derive(Serialize)]
struct JsonIncident {
    kind: &'static str,
    subject: String,
    first_seen: String,
    last_seen: String,
    count: u64,
    active_ms: f64,
    peak: JsonFigure,
    peak_at: String,
    peak_summary: String,
}

#[derive(Serialize)]
struct JsonDropped {
    intervals: u64,
    notices: u64,
    probe: JsonProbeDrops,
    recording: JsonDamage,
    errors: Vec<String>,
}

#[derive(Serialize)]
struct JsonProbeDrops {
    samples: u64,
    task_events: u64,
    threads_without_slot: u64,
    location_overflow: u64,
    stalls: u64,
    untracked_tasks: u64,
    probe_panics: u64,
    subscriber_updates: u64,
}

#[derive(Serialize)]
struct JsonDamage {
    skipped: Vec<JsonSkipped>,
    ends_at: Option<JsonStop>,
    lost_updates: u64,
}

#[derive(Serialize)]
struct JsonSkipped {
    start: u64,
    end: u64,
    reason: String,
}

#[derive(Serialize)]
struct JsonStop {
    offset: u64,
    reason: String,
}

fn json_stall(s: &Stall, start_ms: u64) -> JsonStall {
    JsonStall {
        id: s.id,
        duration_ms: ns_to_ms(s.length_ns()),
        ended: s.duration_ns.is_some(),
        start: rfc3339_ms(s.start_unix_ms),
        start_unix_ms: s.start_unix_ms,
        offset_ms: s.start_unix_ms as i64 - start_ms as i64,
        worker: s.worker,
        tid: s.tid,
        task: s.task,
        spawned_at: s.spawned_at.clone(),
        in_block_in_place: s.in_block_in_place,
        samples: s.sample_count(),
        samples_lost: s.samples_lost,
        // Both from the same stack (`Stall::main_stack`).
        top_user_frame: s.top_user_frame().map(JsonFrame::from),
        frames: s.main_stack().unwrap_or_default().iter().map(JsonFrame::from).collect(),
        kind: s.kind_label(),
        blames_code: s.blames_code(),
        unobserved: s.unobserved,
        anatomy: s.anatomy.as_ref().map(JsonAnatomy::from),
    }
}

/// The report as a JSON value (layout: `docs/report-json.md`). Object keys of a
/// `serde_json::Value` are sorted; [`json_string`] keeps the documented order.
pub fn json(sum: &Summary) -> serde_json::Value {
    serde_json::to_value(build(sum)).expect("the report serializes: plain data, no maps with non-string keys")
}

/// The report as pretty-printed JSON in the documented key order, with a trailing newline.
pub fn json_string(sum: &Summary) -> String {
    let mut s = serde_json::to_string_pretty(&build(sum))
        .expect("the report serializes: plain data, no maps with non-string keys");
    s.push('\n');
    s
}

fn build(sum: &Summary) -> JsonReport {
    let start = sum.start_unix_ms();
    let last = sum.last.as_ref();
    let d = sum.probe_drops();
    JsonReport {
        stalls: sum.stalls.iter().map(|s| json_stall(s, start)).collect(),
        functions: sum
            .functions()
            .into_iter()
            .map(|f| JsonFunction {
                function: f.function,
                file: f.file,
                line: f.line,
                kind: f.kind.map(frame_kind_name),
                stalls: f.stalls,
                stalled_ms: ns_to_ms(f.stalled_ns),
                longest_ms: ns_to_ms(f.longest_ns),
                samples: f.samples,
            })
            .collect(),
        leak_suspects: last
            .map(|s| {
                s.leak_suspects()
                    .map(|l| JsonLeak {
                        location: l.location.clone(),
                        live: l.live,
                        spawned: l.spawned,
                        completed: l.completed,
                        oldest_live_ms: l.oldest_live_ns.map(ns_to_ms),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        pools: JsonPools {
            registered: last
                .map(|s| {
                    s.pools
                        .iter()
                        .map(|p| JsonPool {
                            name: p.name.clone(),
                            in_use: p.in_use,
                            idle: p.idle,
                            max: p.max,
                            waiters: p.waiters,
                            acquired: p.acquired,
                            saturated: p.saturated(),
                            wait: (&p.wait_time).into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            blocking: last.and_then(|s| s.runtime.as_ref()).map(|r| JsonBlocking {
                threads: r.blocking_threads,
                idle: r.idle_blocking_threads,
                queued: r.blocking_queue_depth,
                starved: r.blocking_pool_starved(),
            }),
        },
        lag: last.map(|s| JsonLag {
            period_ms: ns_to_ms(s.lag.period_ns),
            last_ms: ns_to_ms(s.lag.last_ns),
            lag: (&s.lag.lag).into(),
        }),
        polls: last.map(|s| JsonPolls {
            all: (&Histogram::merged(s.workers.iter().map(|w| &w.poll_time))).into(),
            by_location: locations_by_p99(s)
                .into_iter()
                .map(|l| JsonLocationPolls {
                    location: l.location.clone(),
                    live: l.live,
                    spawned: l.spawned,
                    completed: l.completed,
                    blocking: l.blocking,
                    poll_time: (&l.poll_time).into(),
                    schedule_latency: l.schedule_latency.as_ref().map(JsonPercentiles::from),
                })
                .collect(),
        }),
        alerts: sum
            .alerts
            .iter()
            .map(|a| JsonAlert {
                kind: alert_kind_name(a.alert.kind),
                summary: a.alert.summary.clone(),
                what_to_do: a.alert.what_to_do.clone(),
                first_seen: rfc3339_ms(a.first_unix_ms),
                last_seen: rfc3339_ms(a.last_unix_ms),
                ticks: a.ticks,
                subject: a.alert.subject.clone(),
                count: a.count,
                peak: a.peak.map(JsonFigure::from),
                peak_at: a.peak.map(|_| rfc3339_ms(a.peak_unix_ms)),
                peak_summary: a.peak_summary.clone(),
                recording_summary: alert_line(sum, a, Scope::Recording),
                active_at_end: a.active_at_end,
            })
            .collect(),
        dropped: JsonDropped {
            intervals: sum.dropped_intervals,
            notices: sum.dropped_notices,
            probe: JsonProbeDrops {
                samples: d.samples,
                task_events: d.task_events,
                threads_without_slot: d.threads_without_slot,
                location_overflow: d.location_overflow,
                stalls: d.stalls,
                untracked_tasks: d.untracked_tasks,
                probe_panics: d.probe_panics,
                subscriber_updates: d.subscriber_updates,
            },
            recording: JsonDamage {
                skipped: sum
                    .damage
                    .skipped
                    .iter()
                    .map(|s| JsonSkipped { start: s.start, end: s.end, reason: s.reason.to_string() })
                    .collect(),
                ends_at: sum.damage.stop.as_ref().map(|s| JsonStop { offset: s.offset, reason: s.reason.to_string() }),
                lost_updates: sum.damage.lost,
            },
            errors: sum.errors.clone(),
        },
        earlier_incidents: sum
            .earlier_incidents()
            .into_iter()
            .map(|r| JsonIncident {
                kind: alert_kind_name(r.kind),
                subject: r.subject.clone(),
                first_seen: rfc3339_ms(r.first_unix_ms),
                last_seen: rfc3339_ms(r.last_unix_ms),
                count: r.count,
                active_ms: ns_to_ms(r.active_ns),
                peak: r.peak.into(),
                peak_at: rfc3339_ms(r.peak_unix_ms),
                peak_summary: r.peak_summary.clone(),
            })
            .collect(),
        stalls_before_recording: sum.earlier_stalls.len(),
        busy_ratio: sum.busy_ratio(),
    }
}
