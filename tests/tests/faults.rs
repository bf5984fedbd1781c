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
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    let rt = b.build().unwrap();
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
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    let rt = b.build().unwrap();
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
