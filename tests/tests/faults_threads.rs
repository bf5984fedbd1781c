//! Fault suite: the probe's own threads killed by injected panics (`Probe::inject_panic`, the
//! probe's `fault-injection` feature). Each death must leave the service working, be counted in
//! `drops.probe_panics`, and be named in `process.missing` with what it costs; a dead watchdog
//! must not leave task dumps refused forever.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_probe::Probe;
use stallscope_tests::{serial, Client};
use stallscope_wire::intern::Received;
use stallscope_wire::{Request, Snapshot, Update};

#[test]
fn built_with_tokio_unstable() {
    stallscope_tests::assert_built_with_tokio_unstable();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Names of this process's threads (cut to 15 bytes, as the kernel keeps them).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// The service's own work: 200 tasks that each yield and add one. Returns how many ran.
fn serve(rt: &tokio::runtime::Runtime) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..200 {
            let done = done.clone();
            hs.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                done.fetch_add(1, SeqCst);
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    });
    done.load(SeqCst)
}

fn latest(probe: &Probe) -> Arc<Snapshot> {
    probe.refresh(Duration::from_secs(2)).or_else(|| probe.snapshot()).expect("a snapshot")
}

/// Kills `thread` and waits until it is gone from the process and named in `missing`.
fn kill(probe: &Probe, thread: &str) -> Arc<Snapshot> {
    let full = format!("stallscope-{thread}");
    let name = full[..full.len().min(15)].to_string();
    assert!(thread_names().contains(&name), "{name} runs before the fault: {:?}", thread_names());
    let panics_before = latest(probe).drops.probe_panics;
    assert!(probe.inject_panic(thread));
    wait_for(&format!("{name} to end"), || !thread_names().contains(&name));
    let mut snap = latest(probe);
    wait_for(&format!("{name} in missing"), || {
        snap = latest(probe);
        snap.process.missing.iter().any(|m| m.contains(&format!("probe thread {full}: died of a panic")))
    });
    assert!(snap.drops.probe_panics > panics_before, "the panic is counted: {:?}", snap.drops);
    snap
}

/// Blocks its worker until `release` is set (or 20 s pass).
#[inline(never)]
fn hold_the_worker_until(started: &AtomicBool, release: &AtomicBool) {
    started.store(true, SeqCst);
    let give_up = Instant::now() + Duration::from_secs(20);
    while !release.load(SeqCst) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ask_dump(c: &mut Client) -> Result<u64, String> {
    c.request(Request::TaskDump { timeout_ms: 5_000 }).unwrap();
    loop {
        match c.reply().unwrap().expect("the probe answers") {
            Received::TaskDump(d) => return Ok(d.tasks as u64),
            Received::Error { message } => return Err(message),
            _ => continue,
        }
    }
}

#[test]
fn each_probe_thread_killed_by_a_panic_is_named_and_the_service_goes_on() {
    let _s = serial();
    let dir = std::env::temp_dir().join(format!("stallscope-faults-threads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let probe = Probe::builder()
        .stall_threshold(Duration::from_millis(20))
        .socket_dir(&dir)
        .record_to(dir.join("run.stallscope"))
        .build()
        .unwrap();
    let rt = stallscope_tests::runtime_with(&probe);
    let _g = probe.start(rt.handle());
    let path = probe.socket_path().expect("listening");
    let mut client = Client::connect(&path).unwrap();
    assert_eq!(serve(&rt), 200);

    // The watchdog dies while a poll is stalled. Task dumps are refused while a poll is stalled;
    // once that stall is over they must be served again, though no watchdog sees it end.
    let (started, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    {
        let (started, release) = (started.clone(), release.clone());
        rt.spawn(async move { hold_the_worker_until(&started, &release) });
    }
    wait_for("the blocking task", || started.load(SeqCst));
    assert!(client.until(Duration::from_secs(5), |u| matches!(u, Update::StallStarted(_))).is_some());
    let refused = ask_dump(&mut client).expect_err("no dump while the watchdog sees a stall");
    assert!(refused.contains("stalled"), "{refused}");
    let snap = kill(&probe, "watchdog");
    assert!(snap.process.missing.iter().any(|m| m.contains("stalls are no longer detected")), "{snap:?}");
    release.store(true, SeqCst);
    assert_eq!(serve(&rt), 200, "the service works without a watchdog");
    let tasks = ask_dump(&mut client).unwrap_or_else(|m| panic!("dump refused after the watchdog died: {m}"));
    assert!(tasks >= 1, "the dump sees the heartbeat task at least");

    // The recorder dies: the file keeps what was written, the service goes on.
    let snap = kill(&probe, "recorder");
    assert!(snap.process.missing.iter().any(|m| m.contains("the recording has stopped")), "{snap:?}");
    assert!(std::fs::metadata(dir.join("run.stallscope")).unwrap().len() > 0, "the recording keeps what it had");
    assert_eq!(serve(&rt), 200);

    // The server dies: the client already connected still gets updates (its threads live on),
    // the death is named, and the service goes on.
    let snap = kill(&probe, "server");
    assert!(snap.process.missing.iter().any(|m| m.contains("accepts no clients")), "{snap:?}");
    assert_eq!(serve(&rt), 200);

    // The aggregator dies last: its final snapshot names the death, every later read returns
    // it, and neither `refresh` nor `report` hangs the caller.
    let snap = kill(&probe, "aggregator");
    assert!(snap.process.missing.iter().any(|m| m.contains("this snapshot is the last")), "{snap:?}");
    let t = Instant::now();
    let report = probe.report();
    assert!(t.elapsed() < Duration::from_secs(3), "report() returned in {:?}", t.elapsed());
    assert!(report.contains("stallscope-aggregator"), "{report}");
    assert_eq!(serve(&rt), 200, "the service works with every probe thread dead");
    assert!(
        thread_names().iter().all(|n| !matches!(
            n.as_str(),
            "stallscope-aggregator" | "stallscope-watchdog" | "stallscope-server" | "stallscope-recorder"
        )),
        "{:?}",
        thread_names()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
