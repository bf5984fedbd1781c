//! `stallscope report`: the model's [`Summary`] as text, or as the stable JSON documented in
//! `docs/report-json.md`.

use std::fmt::Write;

use serde::Serialize;
use stallscope_wire::{AlertFigure, AlertKind, Frame, FrameKind, Histogram, LocationStats, PeakUnit, Snapshot, Stall};

use stallscope_wire::names::short_path;

use crate::timefmt::{fmt_ns, ns_to_ms, rfc3339_ms};
use stallscope_wire::model::{SeenAlert, Summary};

/// Options of the text report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextOptions {
    /// Stalls listed (the longest); the JSON lists them all.
    pub top: usize,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions { top: 20 }
    }
}

/// `+1.234 s` from the recording's start.
fn offset(start_ms: u64, at_ms: u64) -> String {
    if at_ms >= start_ms {
        format!("+{:.3} s", (at_ms - start_ms) as f64 / 1e3)
    } else {
        format!("-{:.3} s", (start_ms - at_ms) as f64 / 1e3)
    }
}

fn locations_by_p99(s: &Snapshot) -> Vec<&LocationStats> {
    let mut locs: Vec<&LocationStats> = s.locations.iter().filter(|l| !l.internal).collect();
    locs.sort_by(|a, b| {
        let key = |l: &LocationStats| (l.poll_time.quantile_ns(0.99).unwrap_or(0), l.poll_time.max_ns);
        key(b).cmp(&key(a)).then(a.location.cmp(&b.location))
    });
    locs
}

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

// === Text ===

/// Renders the report as text.
pub fn text(sum: &Summary, options: &TextOptions) -> String {
    let mut o = String::new();
    let p = sum.process();
    let start = sum.start_unix_ms();
    let end = sum.end_unix_ms();
    let _ = writeln!(
        o,
        "stallscope report: {} (pid {}), {} from {} ({} updates, {} ticks)",
        if p.name.is_empty() { "unknown process" } else { &p.name },
        p.pid,
        fmt_ns((end - start).saturating_mul(1_000_000)),
        rfc3339_ms(start),
        sum.updates,
        sum.ticks,
    );
    let _ = writeln!(
        o,
        "  probe {}, stall threshold {}, written by {}",
        if p.probe_version.is_empty() { "?" } else { &p.probe_version },
        fmt_ns(p.stall_threshold_ns),
        if sum.header.writer.is_empty() { "?" } else { &sum.header.writer },
    );
    for m in &p.missing {
        let _ = writeln!(o, "  missing: {m}");
    }
    for line in sum.damage.lines() {
        let _ = writeln!(o, "  damaged recording: {line}");
    }

    // Stalls.
    let _ =
        writeln!(o, "\nstalls: {} seen, {} stalled in all (longest first)", sum.stalls.len(), fmt_ns(sum.stalled_ns()));
    if !sum.earlier_stalls.is_empty() {
        let _ = writeln!(
            o,
            "  ({} stall{} from before the recording started, sent with the first snapshot, left out)",
            sum.earlier_stalls.len(),
            if sum.earlier_stalls.len() == 1 { "" } else { "s" }
        );
    }
    if let Some(last) = &sum.last {
        if last.stall_count > sum.stalls.len() as u64 {
            let _ = writeln!(
                o,
                "  (the probe counted {} stalls since it started; {} of them are in this recording)",
                last.stall_count,
                sum.stalls.len()
            );
        }
    }
    for s in sum.stalls.iter().take(options.top) {
        let running = if s.duration_ns.is_some() { "" } else { " (still running)" };
        let bip = if s.in_block_in_place { " [in block_in_place]" } else { "" };
        let _ = writeln!(
            o,
            "  {:>9}{running}{bip}  at {} ({})  worker {}  {}",
            fmt_ns(s.length_ns()),
            rfc3339_ms(s.start_unix_ms),
            offset(start, s.start_unix_ms),
            s.worker,
            s.origin_text(),
        );
        let samples = s.sample_count();
        match s.culprit_frame() {
            _ if s.no_blame_reason().is_some() => {
                let _ = writeln!(o, "      ({})", s.no_blame_reason().unwrap_or_default());
            }
            Some(c) => {
                let _ = writeln!(o, "      in {}   [{} samples]", c.place(), samples);
                for f in s.callers().take(3) {
                    let _ = writeln!(o, "         called from {}", f.place());
                }
            }
            _ => {
                let why = if s.duration_ns.is_none() { "still running when recorded" } else { "no stack sample" };
                let _ = writeln!(o, "      ({why})");
            }
        }
        if let Some(a) = &s.anatomy {
            let _ = writeln!(o, "      anatomy: {}", a.describe());
        }
    }
    if sum.stalls.len() > options.top {
        let _ = writeln!(
            o,
            "  … and {} shorter stalls (--top N shows more; --json lists all)",
            sum.stalls.len() - options.top
        );
    }

    // Functions.
    let functions = sum.functions();
    let _ = writeln!(o, "\nstalled time by function (the top user frame of each stall):");
    if functions.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for f in functions.iter().take(options.top) {
        let loc = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!(" ({}:{})", short_path(file), line),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  {:>9}  {:>4} stall{}  longest {:>9}  {}{}",
            fmt_ns(f.stalled_ns),
            f.stalls,
            if f.stalls == 1 { " " } else { "s" },
            fmt_ns(f.longest_ns),
            stallscope_wire::names::short_name(&f.function),
            loc
        );
    }
    // Long polls that name no function, and why.
    for (what, pick) in [
        (
            "waited for a CPU (host busy or CPU quota throttled): no code blamed",
            Stall::cpu_starved as fn(&Stall) -> bool,
        ),
        ("not observed (the probe's watchdog got no CPU while they ran): no code blamed", |s: &Stall| s.unobserved),
    ] {
        let picked: Vec<&Stall> = sum.stalls.iter().filter(|s| pick(s)).collect();
        if let Some(longest) = picked.iter().map(|s| s.length_ns()).max() {
            let total: u64 = picked.iter().map(|s| s.length_ns()).sum();
            let n = picked.len();
            let _ = writeln!(
                o,
                "  {:>9}  {:>4} poll{}  longest {:>9}  {what}",
                fmt_ns(total),
                n,
                if n == 1 { " " } else { "s" },
                fmt_ns(longest)
            );
        }
    }

    let Some(last) = &sum.last else {
        let _ = writeln!(o, "\nno tick in this recording: no task, pool, lag or poll figures");
        write_alerts_and_drops(&mut o, sum);
        return o;
    };

    // Leaks.
    let leaks: Vec<_> = last.leak_suspects().collect();
    let _ = writeln!(o, "\nleak suspects: {}", leaks.len());
    for l in leaks {
        let _ = writeln!(o, "  {}", l.leak_text());
    }

    // Pools.
    let _ = writeln!(o, "\npools:");
    if last.pools.is_empty() && last.runtime.is_none() {
        let _ = writeln!(o, "  none registered");
    }
    for pl in &last.pools {
        let _ = writeln!(
            o,
            "  {}: {}/{} in use, {} idle, {} waiting, {} acquired, wait p50 {} p99 {}{}",
            pl.name,
            pl.in_use,
            pl.max,
            pl.idle,
            pl.waiters,
            pl.acquired,
            pl.wait_time.quantile_text(0.5),
            pl.wait_time.quantile_text(0.99),
            if pl.saturated() { "  SATURATED" } else { "" }
        );
    }
    if let Some(r) = &last.runtime {
        let _ = writeln!(
            o,
            "  blocking pool: {} threads, {} idle, {} queued{}",
            r.blocking_threads,
            r.idle_blocking_threads,
            r.blocking_queue_depth,
            if r.blocking_pool_starved() { "  STARVED" } else { "" }
        );
        let _ = writeln!(
            o,
            "\nruntime: {} workers, busy {} over the recording, {} live tasks, global queue {}, local queues {}",
            r.workers,
            sum.busy_ratio().map(|b| format!("{:.0}%", b * 100.0)).unwrap_or_else(|| "-".into()),
            r.live_tasks,
            r.global_queue_depth,
            r.local_queue_depth
        );
    }

    // Lag and polls.
    let lag = &last.lag;
    let _ = writeln!(
        o,
        "\nloop lag: p50 {} p99 {} max {} last {} ({} heartbeats, one every {})",
        lag.lag.quantile_text(0.5),
        lag.lag.quantile_text(0.99),
        fmt_ns(lag.lag.max_ns),
        fmt_ns(lag.last_ns),
        lag.lag.count,
        fmt_ns(lag.period_ns)
    );
    let all = Histogram::merged(last.workers.iter().map(|w| &w.poll_time));
    let _ = writeln!(
        o,
        "polls since the probe started: {} in all (every poll counted), p50 {} p99 {} p99.9 {} max {} (from timed polls)",
        last.worker_polls(),
        all.quantile_text(0.5),
        all.quantile_text(0.99),
        all.quantile_text(0.999),
        fmt_ns(all.max_ns)
    );
    let locs = locations_by_p99(last);
    if !locs.is_empty() {
        let _ = writeln!(
            o,
            "  by spawn location, slowest p99 first (polls, p50, p99, max; live / spawned); poll counts here are \
             estimates, from the timed polls scaled up (about {} in all, the probe's heartbeat left out):",
            locs.iter().map(|l| l.polls).sum::<u64>()
        );
    }
    for l in locs.iter().take(10) {
        let _ = writeln!(
            o,
            "  {:>9} {:>9} {:>9} {:>9}  {:>6} / {:<7}  {}",
            l.polls,
            l.poll_time.quantile_text(0.5),
            l.poll_time.quantile_text(0.99),
            fmt_ns(l.poll_time.max_ns),
            l.live,
            l.spawned,
            short_path(&l.location)
        );
    }
    write_alerts_and_drops(&mut o, sum);
    o
}

/// The line for an alert over the recording: its figures summarise the recording's span (a
/// blocking poll: the stalls of the recording blamed on it; others: the peak seen), not the
/// last tick's.
pub fn alert_line(sum: &Summary, a: &SeenAlert) -> String {
    let start = sum.start_unix_ms();
    let when = format!(
        "[{} .. {}, {} tick{}, {} time{}{}]",
        offset(start, a.first_unix_ms),
        offset(start, a.last_unix_ms),
        a.ticks,
        if a.ticks == 1 { "" } else { "s" },
        a.count,
        if a.count == 1 { "" } else { "s" },
        if a.active_at_end { ", still active at the end" } else { ", passed" }
    );
    if a.alert.kind == AlertKind::BlockingPoll {
        if let (n, Some(worst)) = sum.stalls_of(&a.alert.subject) {
            let place = worst.culprit_text();
            return format!(
                "blocking poll: {} in {}, {} stall{} in this recording, task spawned at {}  {when}",
                fmt_ns(worst.length_ns()),
                place,
                n,
                if n == 1 { "" } else { "s" },
                short_path(&worst.spawned_at)
            );
        }
    }
    match a.peak {
        Some(p) => format!("{} (peak {p} at {})  {when}", a.peak_summary, offset(start, a.peak_unix_ms)),
        None => format!("{}  {when}", a.peak_summary),
    }
}

fn write_alerts_and_drops(o: &mut String, sum: &Summary) {
    let _ = writeln!(o, "\nalerts: {}", sum.alerts.len());
    for a in &sum.alerts {
        let _ = writeln!(o, "  ! {}", alert_line(sum, a));
        let _ = writeln!(o, "    what to do: {}", a.alert.what_to_do);
    }
    let earlier = sum.earlier_incidents();
    if !earlier.is_empty() {
        let _ = writeln!(o, "\nincidents before the recording started (from the probe's alert history):");
        for r in earlier {
            let _ = writeln!(o, "  - {}", stallscope_wire::history_line(r, sum.start_unix_ms()));
        }
    }

    let _ = writeln!(o, "\ndropped:");
    let mut any = false;
    if sum.dropped_intervals > 0 {
        any = true;
        let _ = writeln!(
            o,
            "  {} updates dropped for the recorder (its queue at the probe overflowed; {} notice{})",
            sum.dropped_intervals,
            sum.dropped_notices,
            if sum.dropped_notices == 1 { "" } else { "s" }
        );
    }
    let d = sum.probe_drops();
    for (n, what) in drop_parts(&d) {
        if n > 0 {
            any = true;
            let _ = writeln!(o, "  {n} {what} (dropped by the probe since it started)");
        }
    }
    for line in sum.damage.lines() {
        any = true;
        let _ = writeln!(o, "  damaged recording: {line}");
    }
    for e in &sum.errors {
        any = true;
        let _ = writeln!(o, "  probe error: {e}");
    }
    if !any {
        let _ = writeln!(o, "  nothing");
    }
}

fn drop_parts(d: &stallscope_wire::Drops) -> [(u64, &'static str); 8] {
    d.parts()
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
                recording_summary: alert_line(sum, a),
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
