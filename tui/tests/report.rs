//! The report, text and JSON, from recordings made with the wire crate's `RecordingWriter`:
//! intact, truncated, and with a damaged record in the middle.

mod support;

use stallscope::report::{self, TextOptions};
use stallscope_wire::model::Summary;
use stallscope_wire::RecordingReader;

fn summary_of(bytes: &[u8]) -> Summary {
    Summary::from_recording(RecordingReader::new(bytes).unwrap().read_all())
}

#[test]
fn stalls_are_deduplicated_and_longest_first() {
    let s = summary_of(&support::recording_bytes(100));
    let ids: Vec<u64> = s.stalls.iter().map(|s| s.id).collect();
    assert_eq!(ids, [1, 3, 6, 2, 4, 5]);
    // Each kept copy is the most complete one: ended, with its samples.
    let s1 = &s.stalls[0];
    assert_eq!(s1.duration_ns, Some(212_000_000));
    assert_eq!(s1.sample_count(), 200);
    assert_eq!(s.stalls[1].sample_count(), 88);
    assert_eq!(s.stalls[5].duration_ns, None, "stall 5 never ended");
    assert_eq!(s.updates, 11);
    assert_eq!(s.ticks, 3);
    assert_eq!(s.dropped_intervals, 3);
    assert_eq!(s.errors, ["task dumps are not served yet"]);
    assert_eq!(s.alerts.len(), 3);
    assert_eq!(s.alerts[0].ticks, 2);
    assert!(s.damage.is_empty());
}

#[test]
fn functions_sum_stalled_time_by_top_user_frame() {
    let s = summary_of(&support::recording_bytes(100));
    let f = s.functions();
    let names: Vec<&str> = f.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(
        names,
        ["shopd::checkout::load_cart", "shopd::sessions::refresh_token", "shopd::search::rank", "(no stack sample)"]
    );
    // 212 + 60 (block_in_place) ms; the 30 ms poll of the same task only waited for a CPU and
    // names no function.
    assert_eq!(f[0].stalled_ns, 272_000_000);
    assert_eq!(f[0].stalls, 2);
    assert_eq!(f[0].longest_ns, 212_000_000);
    assert_eq!(f[0].line, Some(41));
    assert_eq!(f[0].samples, 255);
}

#[test]
fn text_report_golden() {
    let s = summary_of(&support::recording_bytes(100));
    let text = report::text(&s, &TextOptions::default());
    for needle in [
        "stallscope report: shopd (pid 4242), 2.10 s from 2025-11-21T04:40:00.000Z (11 updates, 3 ticks)",
        "212.0 ms  at 2025-11-21T04:40:00.300Z (+0.300 s)  worker 1  task 17  spawned at src/checkout.rs:20:5",
        "in load_cart (src/checkout.rs:41)   [200 samples]",
        "called from handle_order::{closure} (src/checkout.rs:88)",
        "95.0 ms  at 2025-11-21T04:40:01.000Z (+1.000 s)  worker 2  instrumented future",
        "60.0 ms [in block_in_place]",
        "15.0 ms (still running)",
        "leak suspects: 1",
        "db: 16/16 in use, 0 idle, 9 waiting, 27000 acquired",
        "SATURATED",
        "blocking pool: 8 threads, 0 idle, 4 queued  STARVED",
        "loop lag: p50 64 µs p99 2.0 ms max 205.0 ms",
        "what to do: Every unit of the pool is handed out",
        "3 updates dropped for the recorder",
        "4 stack samples (dropped by the probe since it started)",
        "probe error: task dumps are not served yet",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The probe's own heartbeat location is not a user's task.
    assert!(!text.contains("probe/src/lag.rs"), "{text}");
    support::golden("report.txt", &text);
}

#[test]
fn json_report_golden_and_stable_keys() {
    let s = summary_of(&support::recording_bytes(100));
    let v = report::json(&s);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = [
        "stalls",
        "functions",
        "leak_suspects",
        "pools",
        "lag",
        "polls",
        "alerts",
        "dropped",
        "earlier_incidents",
        "stalls_before_recording",
        "busy_ratio",
    ];
    expected.sort();
    assert_eq!(keys, expected);

    let first = &v["stalls"][0];
    assert_eq!(first["duration_ms"], 212.0);
    assert_eq!(first["start"], "2025-11-21T04:40:00.300Z");
    assert_eq!(first["start_unix_ms"], support::T0 + 300);
    assert_eq!(first["worker"], 1);
    assert_eq!(first["task"], 17);
    assert_eq!(first["spawned_at"], "/home/build/shopd/src/checkout.rs:20:5");
    let frames = first["frames"].as_array().unwrap();
    assert_eq!(frames[0]["function"], "__GI___clock_nanosleep", "innermost first");
    assert_eq!(frames[0]["kind"], "library");
    assert_eq!(frames[3]["function"], "shopd::checkout::load_cart");
    assert_eq!(frames[3]["line"], 41);
    assert_eq!(frames[3]["kind"], "user");
    assert_eq!(frames.last().unwrap()["kind"], "tokio");
    assert_eq!(v["stalls"][1]["task"], serde_json::Value::Null, "stall 3 is an instrumented future");

    assert_eq!(v["functions"][0]["stalled_ms"], 272.0);
    assert_eq!(v["leak_suspects"][0]["live"], 450);
    assert_eq!(v["pools"]["registered"][0]["saturated"], true);
    assert_eq!(v["pools"]["blocking"]["starved"], true);
    assert_eq!(v["lag"]["max_ms"], 205.0);
    assert_eq!(v["polls"]["count"], 4 * (2499 * 3 + 1));
    assert_eq!(v["alerts"][2]["kind"], "pool_saturated");
    assert_eq!(v["dropped"]["intervals"], 3);
    assert_eq!(v["dropped"]["probe"]["samples"], 4);

    // The string form keeps the documented key order.
    let text = report::json_string(&s);
    let order: Vec<usize> = [
        "\"stalls\"",
        "\"functions\"",
        "\"leak_suspects\"",
        "\"pools\"",
        "\"lag\"",
        "\"polls\"",
        "\"alerts\"",
        "\"dropped\"",
    ]
    .iter()
    .map(|k| text.find(&format!("\n  {k}:")).unwrap_or_else(|| panic!("no top-level {k}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    support::golden("report.json", &text);
}

#[test]
fn a_truncated_recording_still_reports_and_says_where_it_ends() {
    let bytes = support::recording_bytes(100);
    let offsets = support::record_offsets(&bytes);
    let last = *offsets.last().unwrap();
    let cut = &bytes[..bytes.len() - 7];
    let s = summary_of(cut);
    assert_eq!(s.ticks, 2, "the last tick was cut");
    let text = report::text(&s, &TextOptions::default());
    let expected = format!("recording ends at byte {last}: truncated record: 7 bytes missing");
    assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    // Stalls from the records before the cut are all there.
    assert_eq!(s.stalls.len(), 6);
    let v = report::json(&s);
    assert_eq!(v["dropped"]["recording"]["ends_at"]["offset"], last);
}

#[test]
fn a_corrupted_middle_is_skipped_and_named_by_offset() {
    // A keyframe every 3 records, so decoding resumes soon after the damage.
    let mut bytes = support::recording_bytes(3);
    let offsets = support::record_offsets(&bytes);
    assert_eq!(offsets.len(), 13);
    // Damage record 4 (the second tick): flip a byte inside its payload.
    let (start, end) = (offsets[4], offsets[5]);
    bytes[start as usize + 20] ^= 0xFF;
    let s = summary_of(&bytes);
    let text = report::text(&s, &TextOptions::default());
    let expected = format!("skipped bytes {start}..{end} ({} bytes): record checksum mismatch", end - start);
    assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    // Records 5 and 6 refer to definitions in the lost record... the reader waits for the next
    // keyframe, and the report says how many updates it lost.
    assert!(s.damage.lost > 0, "{:?}", s.damage);
    assert!(text.contains("could not be rebuilt after the damage"), "{text}");
    // The final tick comes after a keyframe and carries everything.
    assert_eq!(s.ticks, 2);
    assert_eq!(s.stalls.len(), 6);
    let v = report::json(&s);
    assert_eq!(v["dropped"]["recording"]["skipped"][0]["start"], start);
    assert_eq!(v["dropped"]["recording"]["skipped"][0]["end"], end);
}
