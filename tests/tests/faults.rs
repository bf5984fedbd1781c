//! Faults a careful SRE would try before leaving the probe on in production (P7), each against a
//! live service: the service's work goes on, nothing panics, and the probe says what it lost.

use std::process::Command;

use stallscope_wire::intern::Received;
use stallscope_wire::recording::{rotated_path, RecordingReader};
use stallscope_wire::Update;

/// A recording onto a disk that fills up, then has room again (`record_full_disk`: the file-size
/// limit of the service's process). The recorder used to stop for good at the first failed
/// write, and to truncate the previous run's file on start.
#[test]
fn a_recording_onto_a_full_disk_loses_updates_counted_and_resumes_when_there_is_room() {
    let dir = std::env::temp_dir().join(format!("stallscope-full-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("service.ssrec");
    let previous = b"the previous run's recording, wanted for the incident review";
    std::fs::write(&path, previous).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_record_full_disk")).arg(&path).arg("5").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the service died: {:?}\n{stdout}\n{stderr}", out.status);
    // The service's own work went on.
    let stalls: u64 = stdout.lines().find_map(|l| l.strip_prefix("stalls: ")).and_then(|n| n.parse().ok()).unwrap();
    assert!(stalls >= 20, "{stdout}");
    // It says what happened and what was lost.
    assert!(stdout.contains("problem: recording: cannot write"), "{stdout}");
    assert!(stdout.contains("problem: recording: resumed writing"), "{stdout}");
    let lost: u64 = stdout.lines().find_map(|l| l.strip_prefix("lost updates: ")).and_then(|n| n.parse().ok()).unwrap();
    assert!(lost > 0, "{stdout}");

    // The previous run's file was rotated away, not truncated.
    let kept = (1..=8).map(|n| rotated_path(&path, n)).any(|p| std::fs::read(&p).is_ok_and(|b| b == previous));
    assert!(kept, "the previous run's recording is gone");
    // The newest file reads on its own, says how much was lost, and holds the stalls made after
    // the disk had room again.
    let rec = RecordingReader::open(&path).unwrap().read_all();
    let dropped: u64 = rec
        .events
        .iter()
        .map(|e| match &e.event {
            Received::Dropped { intervals } => *intervals,
            _ => 0,
        })
        .sum();
    assert!(dropped > 0, "the resumed file does not count what was lost");
    let ends = rec.events.iter().filter(|e| matches!(&e.event, Received::Update(Update::StallEnded(_)))).count();
    assert!(ends >= 10, "{ends} stalls in the resumed recording");
    let _ = std::fs::remove_dir_all(&dir);
}

fn threads_of_this_process() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap()
}

/// 1,000 connections that never say hello (P7 defect 6: each got a thread before any check, and
/// a service ran 1,007 threads). The probe holds at most `max_clients` + 16 handshakes at once
/// and closes the rest; the service's work goes on; once the flood is over, a client attaches.
#[test]
fn a_thousand_silent_connections_cost_a_bounded_number_of_threads() {
    let _s = stallscope_tests::serial();
    let dir = std::env::temp_dir().join(format!("stallscope-flood-{}", std::process::id()));
    let probe = stallscope_probe::Probe::builder().socket_dir(&dir).build().unwrap();
    let rt = stallscope_tests::runtime_with(&probe);
    let guard = probe.start(rt.handle());
    let path = probe.socket_path().unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = ticks.clone();
    rt.spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let before = threads_of_this_process();
    let flood: Vec<_> = (0..1000).filter_map(|_| std::os::unix::net::UnixStream::connect(&path).ok()).collect();
    assert!(flood.len() >= 900, "only {} connections made", flood.len());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let during = threads_of_this_process();
    let cap = stallscope_probe::DEFAULT_MAX_CLIENTS + 16;
    assert!(during <= before + cap + 2, "{during} threads with the flood, {before} before (cap {cap})");
    // The service's own work went on.
    let t0 = ticks.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > t0 + 10, "the service stopped");
    // The flood ends; the handshakes it held time out; a real client attaches.
    drop(flood);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let attached = loop {
        match stallscope_tests::Client::connect(&path) {
            Ok(c) => break Some(c),
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(200)),
            Err(_) => break None,
        }
    };
    assert!(attached.is_some(), "no client could attach after the flood");
    drop(attached);
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}

#[inline(never)]
fn stalls_after_the_handler_was_reset() {
    std::thread::sleep(std::hint::black_box(std::time::Duration::from_millis(40)));
    std::hint::black_box(());
}

/// The host resets the probe's sample signal to `SIG_DFL` after the probe started (P7 defect 9:
/// the disposition was checked only at `build()`, and the next stall's sample request killed the
/// process: a real-time signal's default action terminates it). The stall is still reported,
/// without samples, and `process.missing` says why.
#[test]
fn a_host_that_resets_the_sample_signal_is_not_killed() {
    let _s = stallscope_tests::serial();
    let probe = stallscope_probe::Probe::builder().server(false).build().unwrap();
    let signal = libc::SIGRTMIN() + probe.config().signal_offset;
    let rt = stallscope_tests::runtime_with(&probe);
    let guard = probe.start(rt.handle());
    // SAFETY: swaps the disposition of a signal this test owns, and restores it below, so that
    // the other tests of this binary keep the probe's handler.
    let saved = unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, &dfl, &mut old), 0);
        old
    };
    rt.block_on(async { tokio::spawn(async { stalls_after_the_handler_was_reset() }).await.unwrap() });
    let snap = probe.refresh(std::time::Duration::from_secs(5)).unwrap();
    // SAFETY: restores the handler saved above.
    unsafe { assert_eq!(libc::sigaction(signal, &saved, std::ptr::null_mut()), 0) };
    drop(guard);
    assert_eq!(snap.stall_count, 1, "{}", stallscope_tests::describe(&snap));
    assert!(snap.stalls.iter().all(|s| s.stacks.is_empty()), "sampled with the handler gone");
    assert!(
        snap.process.missing.iter().any(|m| m.contains("was replaced after the probe started")),
        "{:?}",
        snap.process.missing
    );
}

// === clients that misbehave (P7 defect 4, fault suite) ===

/// Heap bytes live in this test binary now, and the most since `reset_peak`: the allocator
/// counts every allocation (the probe's included), so a test can state a bound on what the
/// probe holds, not only on the process's RSS.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    pub(crate) struct Counting;
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: forwards to the system allocator, only counting sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: same contract as ours.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                PEAK.fetch_max(LIVE.fetch_add(l.size(), Relaxed) + l.size(), Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            LIVE.fetch_sub(l.size(), Relaxed);
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            // SAFETY: same contract as ours.
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() {
                if new >= l.size() {
                    PEAK.fetch_max(LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size(), Relaxed);
                } else {
                    LIVE.fetch_sub(l.size() - new, Relaxed);
                }
            }
            q
        }
    }

    pub(crate) fn live() -> usize {
        LIVE.load(Relaxed)
    }
    pub(crate) fn peak() -> usize {
        PEAK.load(Relaxed)
    }
    pub(crate) fn reset_peak() {
        PEAK.store(LIVE.load(Relaxed), Relaxed);
    }
}

#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

/// Resident set size of this process, bytes (`/proc/self/statm`).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// How long each client fault runs: a few seconds by default (CI), `STALLSCOPE_FAULT_SECS=30`
/// for the long run.
fn fault_duration() -> std::time::Duration {
    let secs = std::env::var("STALLSCOPE_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5u64);
    std::time::Duration::from_secs(secs.max(3))
}

#[inline(never)]
fn load_stall_parse() {
    std::thread::sleep(std::hint::black_box(std::time::Duration::from_millis(12)));
}

#[inline(never)]
fn load_stall_render() {
    std::thread::sleep(std::hint::black_box(std::time::Duration::from_millis(14)));
}

/// The service's own work: batches of small requests, counted in `done`, and a stall every
/// tenth batch (in one of two functions), so that the snapshots carry stalls with stacks.
async fn service_load(done: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let mut batch = 0u64;
    loop {
        let hs: Vec<_> = (0..32u64)
            .map(|i| {
                tokio::spawn(async move { std::hint::black_box((0..200u64).fold(i, |a, b| a.wrapping_mul(31) ^ b)) })
            })
            .collect();
        for h in hs {
            let _ = h.await;
        }
        done.fetch_add(32, std::sync::atomic::Ordering::Relaxed);
        batch += 1;
        if batch.is_multiple_of(10) {
            let parse = batch.is_multiple_of(20);
            tokio::spawn(async move {
                if parse {
                    load_stall_parse()
                } else {
                    load_stall_render()
                }
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A probed service (2 workers) running `service_load`; returns the probe, its guard, the
/// runtime and the counter of requests done.
fn loaded_service(
    b: stallscope_probe::ProbeBuilder,
) -> (
    stallscope_probe::Probe,
    stallscope_probe::ProbeGuard,
    tokio::runtime::Runtime,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let probe = b.build().unwrap();
    let rt = stallscope_tests::runtime_with(&probe);
    let guard = probe.start(rt.handle());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    rt.spawn(service_load(done.clone()));
    (probe, guard, rt, done)
}

/// 64 clients that connect, finish the handshake and never read a byte, beside a service
/// under load (P7 defect 4: each client's queue held deep copies of whole snapshots, and a
/// client that did not read blocked its writer thread for good). Each write to a client that
/// does not read now gives up after `client_write_timeout` (1 s here, to see it happen in a
/// short run; 5 s by default), the client is disconnected and counted, and the updates its
/// queue held are shared with the other queues and bounded in bytes.
///
/// The bound: the 64 clients attach together, so their queues hold the same shared updates,
/// at most `client_queue_bytes` (16 MiB) of them; each client adds its encoder's tables and the
/// frame it is writing (the first holds a whole snapshot, tens of KiB here). Asserted: the
/// heap grows by at most 16 MiB over the run, and the process's RSS by at most 64 MiB (which
/// adds 128 threads' stacks and the allocator's arenas). Measured: about 1.5 MiB of heap and
/// 5 MiB of RSS (docs/benchmarks.md, "Faults"). Before the fix the same run grew the heap by
/// hundreds of MiB: every queue held up to 64 deep copies of the snapshot, and no writer ever
/// gave up.
#[test]
fn sixty_four_clients_that_never_read_cost_bounded_memory_and_are_disconnected_counted() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};
    let _s = stallscope_tests::serial();
    let run = fault_duration();
    let dir = std::env::temp_dir().join(format!("stallscope-never-read-{}", std::process::id()));
    let (probe, guard, rt, done) = loaded_service(
        stallscope_probe::Probe::builder()
            .socket_dir(&dir)
            .max_clients(64)
            .client_write_timeout(Duration::from_secs(1)),
    );
    let path = probe.socket_path().unwrap();
    // Let the snapshots fill with stalls first.
    std::thread::sleep(Duration::from_secs(1));
    let (heap0, rss0) = (heap::live(), rss());
    heap::reset_peak();
    let mut rss_peak = rss0;
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            stallscope_wire::proto::client_handshake(&mut s, &stallscope_wire::proto::Hello::new("never-reads", "0"))
                .unwrap();
            s
        })
        .collect();
    let began = Instant::now();
    let mut last = (began, done.load(Relaxed));
    let mut stopped_windows = Vec::new();
    while began.elapsed() < run {
        std::thread::sleep(Duration::from_millis(50));
        rss_peak = rss_peak.max(rss());
        // The service's own work goes on: every second of the run it did some.
        if last.0.elapsed() >= Duration::from_secs(1) {
            let now = done.load(Relaxed);
            if now == last.1 {
                stopped_windows.push(began.elapsed());
            }
            last = (Instant::now(), now);
        }
    }
    let heap_growth = heap::peak().saturating_sub(heap0);
    let rss_growth = rss_peak.saturating_sub(rss0);
    let snap = probe.refresh(Duration::from_secs(5)).unwrap();
    println!(
        "64 never-reading clients for {run:?}: peak heap growth {:.1} MiB, peak RSS growth {:.1} MiB, requests done {}, stalls {}, drops {:?}",
        heap_growth as f64 / (1 << 20) as f64,
        rss_growth as f64 / (1 << 20) as f64,
        done.load(Relaxed),
        snap.stall_count,
        snap.drops
    );
    println!("missing: {:?}", snap.process.missing);
    assert!(stopped_windows.is_empty(), "the service did no work in the second before {stopped_windows:?}");
    assert!(snap.stall_count > 0, "the load made no stalls");
    assert!(heap_growth <= 16 << 20, "the probe's heap grew by {heap_growth} bytes");
    assert!(rss_growth <= 64 << 20, "RSS grew by {rss_growth} bytes");
    // It says what it did: every client was disconnected for not reading.
    assert!(
        snap.process.missing.iter().any(|m| m.contains("64 clients disconnected for not reading")),
        "{:?}",
        snap.process.missing
    );
    assert_eq!(snap.drops.probe_panics, 0);
    drop(clients);
    drop(guard);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads what the probe sends on `s` until it closes: the `Error` messages it sent (the reason)
/// and whether it closed within `within`.
fn reasons_until_closed(s: &mut std::os::unix::net::UnixStream, within: std::time::Duration) -> (Vec<String>, bool) {
    let deadline = std::time::Instant::now() + within;
    s.set_read_timeout(Some(within)).unwrap();
    let mut dec = stallscope_wire::intern::Decoder::new();
    let mut reasons = Vec::new();
    while std::time::Instant::now() < deadline {
        match stallscope_wire::frame::read_frame(s) {
            Ok(Some(frame)) => {
                if let Ok(Received::Error { message }) = dec.decode_payload(&frame) {
                    reasons.push(message);
                }
            }
            Ok(None) => return (reasons, true),
            // A reset after the probe closed with data unread is a close too.
            Err(stallscope_wire::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (reasons, true)
            }
            Err(_) => return (reasons, false),
        }
    }
    (reasons, false)
}

/// A client that, after a valid handshake, sends garbage, a truncated frame, or a frame that
/// announces 4 GiB. Each is closed with a reason, nothing panics, the 4 GiB are never
/// allocated, and a well-behaved client beside them streams on, as does the service's work.
#[test]
fn clients_that_send_garbage_truncated_frames_or_a_4_gib_length_are_closed_with_a_reason() {
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;
    let _s = stallscope_tests::serial();
    let dir = std::env::temp_dir().join(format!("stallscope-bad-clients-{}", std::process::id()));
    let (probe, guard, rt, done) = loaded_service(stallscope_probe::Probe::builder().socket_dir(&dir));
    let path = probe.socket_path().unwrap();
    // A well-behaved client, reading on its own thread.
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let good = {
        let ticks = ticks.clone();
        let mut c = stallscope_tests::Client::connect(&path).unwrap();
        std::thread::spawn(move || {
            while let Ok(Some(u)) = c.next() {
                if matches!(u, Update::Tick { .. }) {
                    ticks.fetch_add(1, Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (heap0, done0, ticks0) = (heap::live(), done.load(Relaxed), ticks.load(Relaxed));
    heap::reset_peak();
    let mut garbage = vec![0u8; 4096];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut framed_garbage = Vec::new();
    stallscope_wire::frame::frame_into(&garbage[..1000], &mut framed_garbage).unwrap();
    let mut truncated = 100u32.to_le_bytes().to_vec();
    truncated.extend_from_slice(&garbage[..10]);
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("a frame of garbage", framed_garbage, false),
        ("unframed garbage", garbage.clone(), false),
        ("a truncated frame, then end of stream", truncated, true),
        ("a 4 GiB length prefix", u32::MAX.to_le_bytes().to_vec(), false),
    ];
    // Round after round of the four, for the fault's duration.
    let (run, began) = (fault_duration(), std::time::Instant::now());
    let mut results = Vec::new();
    let mut rounds = 0;
    while rounds == 0 || began.elapsed() < run {
        rounds += 1;
        for (what, bytes, then_close) in &cases {
            // A closed client's place is given back just after its socket closes (its threads
            // end first), so a refusal here is retried.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut s = loop {
                let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                match stallscope_wire::proto::client_handshake(&mut s, &stallscope_wire::proto::Hello::new("bad", "0"))
                {
                    Ok(_) => break s,
                    Err(stallscope_wire::Error::Refused { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("{what}: {e}"),
                }
            };
            s.write_all(bytes).unwrap();
            if *then_close {
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let (reasons, closed) = reasons_until_closed(&mut s, Duration::from_secs(15));
            if rounds == 1 {
                println!("{what}: closed {closed}, reasons {reasons:?}");
            }
            results.push((*what, reasons, closed));
        }
    }
    let heap_growth = heap::peak().saturating_sub(heap0);
    println!(
        "{rounds} rounds of bad clients in {:?}: peak heap growth {:.2} MiB",
        began.elapsed(),
        heap_growth as f64 / (1 << 20) as f64
    );
    for (what, reasons, closed) in &results {
        assert!(closed, "{what}: the probe did not close the connection");
        assert!(reasons.iter().any(|r| r.starts_with("closing:")), "{what}: closed without a reason: {reasons:?}");
    }
    assert!(
        results[3].1.iter().any(|r| r.contains("16777216") || r.to_lowercase().contains("large")),
        "{:?}",
        results[3]
    );
    // No 4 GiB buffer, nor anything near it.
    assert!(heap_growth <= 16 << 20, "the heap grew by {heap_growth} bytes");
    // The others were unaffected: the good client still streams (a few more ticks come).
    let (deadline, ticks1) = (std::time::Instant::now() + Duration::from_secs(10), ticks.load(Relaxed));
    while ticks.load(Relaxed) <= ticks1 + 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ticks1 > ticks0 && ticks.load(Relaxed) > ticks1 + 3, "the good client stopped receiving");
    assert!(done.load(Relaxed) > done0, "the service stopped");
    assert!(!good.is_finished(), "the good client was closed");
    let snap = probe.refresh(Duration::from_secs(5)).unwrap();
    assert_eq!(snap.drops.probe_panics, 0, "{:?}", snap.drops);
    drop(guard);
    drop(rt);
    let _ = good.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pool gauge that panics (a user's `PoolGauge`): it used to be dropped silently from the
/// snapshot. Each panic is now counted in `drops.probe_panics` and the pool is named in
/// `process.missing`; the service's work and the other figures go on.
#[test]
fn a_pool_gauge_that_panics_is_counted_and_named() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;
    let _s = stallscope_tests::serial();
    let (probe, guard, rt, done) = loaded_service(stallscope_probe::Probe::builder().server(false));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = calls.clone();
    let pool = stallscope_probe::pool::register("flaky-db", move || {
        if c.fetch_add(1, Relaxed) < 3 {
            panic!("the gauge broke");
        }
        stallscope_probe::pool::PoolGauges::new(1, 2, 3, 0)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap = probe.refresh(Duration::from_secs(5)).unwrap();
        if snap.pools.iter().any(|p| p.name == "flaky-db") || std::time::Instant::now() > deadline {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(pool);
    assert!(snap.pools.iter().any(|p| p.name == "flaky-db" && p.max == 3), "{:?}", snap.pools);
    assert_eq!(snap.drops.probe_panics, 3, "{:?}", snap.drops);
    assert!(
        snap.process.missing.iter().any(|m| m.contains("pool \"flaky-db\": its gauge panicked")),
        "{:?}",
        snap.process.missing
    );
    assert!(done.load(Relaxed) > 0);
    drop(guard);
    drop(rt);
}
