//! Socket figures: the time from a stall crossing its threshold to its alert reaching a client,
//! and the bytes per second a client receives from a busy service.
//!
//! `cargo bench -p stallscope-probe --bench socket` (about 20 s). Run without `--bench` (as
//! `cargo test --benches` does) it runs each part once at a tiny size and times nothing.

use std::hint::black_box;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use stallscope_wire::frame::read_frame;
use stallscope_wire::intern::{Decoder, Received};
use stallscope_wire::proto::{client_handshake, Hello};
use stallscope_wire::Update;

fn runtime(probe: &stallscope_probe::Probe) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    b.build().unwrap()
}

fn connect(path: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    client_handshake(&mut s, &Hello::new("bench", "0")).unwrap();
    s
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Stall start → `StallStarted` at a client, minus the threshold.
fn alert_latency(stalls: usize) -> Vec<f64> {
    let threshold = Duration::from_millis(10);
    let probe = stallscope_probe::Probe::builder().stall_threshold(threshold).build().unwrap();
    let rt = runtime(&probe);
    let _g = probe.start(rt.handle());
    let mut s = connect(&probe.socket_path().unwrap());
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    for _ in 0..stalls {
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let t0 = Instant::now();
            let _ = tx.send(t0);
            std::thread::sleep(black_box(Duration::from_millis(40)));
        });
        let t0 = rx.recv().unwrap();
        loop {
            let frame = read_frame(&mut s).unwrap().unwrap();
            if let Received::Update(Update::StallStarted(_)) = dec.decode_payload(&frame).unwrap() {
                let crossed = t0 + threshold;
                out.push(Instant::now().saturating_duration_since(crossed).as_secs_f64() * 1e3);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    out
}

/// Bytes per second a client receives while the service spawns, polls and stalls.
fn bytes_per_second(secs: f64) -> (f64, u64) {
    let probe = stallscope_probe::Probe::builder().build().unwrap();
    let rt = runtime(&probe);
    let _g = probe.start(rt.handle());
    let mut s = connect(&probe.socket_path().unwrap());
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        rt.spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                // 40 spawn sites' worth of short tasks, a stall every second.
                tokio::spawn(async move { black_box(i) });
                if i.is_multiple_of(500) {
                    tokio::spawn(async { std::thread::sleep(Duration::from_millis(15)) });
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while start.elapsed().as_secs_f64() < secs {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(_) => {}
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = rt.block_on(load);
    (bytes as f64 / start.elapsed().as_secs_f64(), bytes)
}

/// Wall time of a yield storm (64 tasks, `polls` polls in all) with the probe publishing every
/// 10 ms, with or without a client that connected and never reads.
fn storm(polls: u64, stuck_client: bool) -> f64 {
    let probe = stallscope_probe::Probe::builder().aggregation_interval(Duration::from_millis(10)).build().unwrap();
    let rt = runtime(&probe);
    let _g = probe.start(rt.handle());
    let _client = stuck_client.then(|| connect(&probe.socket_path().unwrap()));
    // Let the stuck client's socket buffer and queue fill before timing.
    std::thread::sleep(Duration::from_millis(300));
    let per_task = polls / 64;
    let t = Instant::now();
    rt.block_on(async move {
        let mut hs = Vec::new();
        for _ in 0..64 {
            hs.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    tokio::task::yield_now().await;
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    });
    t.elapsed().as_secs_f64()
}

fn main() {
    let timed = std::env::args().any(|a| a == "--bench");
    let (stalls, secs) = if timed { (40, 10.0) } else { (2, 0.3) };
    let mut lat = alert_latency(stalls);
    let (bps, total) = bytes_per_second(secs);
    let (pairs, polls) = if timed { (9, 5_000_000) } else { (1, 1_000) };
    storm(polls / 10, true);
    let mut ratios = Vec::new();
    for _ in 0..pairs {
        let none = storm(polls, false);
        let stuck = storm(polls, true);
        ratios.push(stuck / none);
    }
    if !timed {
        println!("socket bench: smoke run only (pass --bench to measure)");
        return;
    }
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| stall alert latency after the threshold is crossed ({} stalls): p50 / p90 / max | {:.2} / {:.2} / {:.2} ms |",
        lat.len(),
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.9),
        percentile(&mut lat, 1.0)
    );
    println!("| socket bytes per second to one client, busy service ({secs:.0} s, {total} bytes) | {:.0} B/s |", bps);
    let mut r = ratios.clone();
    println!(
        "| yield storm ({polls} polls, updates every 10 ms) with a client that never reads / with no client: median (min–max) of {pairs} alternating pairs | {:.3} ({:.3}–{:.3}) |",
        percentile(&mut r, 0.5),
        percentile(&mut r, 0.0),
        percentile(&mut r, 1.0)
    );
}
