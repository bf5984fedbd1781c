//! Fault suite (P7): fuzzed frames against the wire decoders and the interning layer, beside a
//! live probed service, and against the live probe's own socket.
//!
//! The corpus is the live probe's own update stream (ticks, stall starts and ends with their
//! stacks), encoded for a connection by the interning `Encoder` and recorded, plus the
//! handshake. The generator and the decoders it drives are the wire crate's fuzzer
//! (`probe/wire/tests/support/fuzz.rs`, included here): bit flips, byte changes, truncation,
//! insertions, deletions, length prefixes set to 0, off by one, 16 MiB + 1, 4 GiB, and random
//! bytes, through the frame readers, both handshakes, the client messages, the interning
//! `Decoder` warmed to each message's state and the recording reader. Each input runs under
//! `catch_unwind` (panics counted, 0 allowed) and a counting global allocator (the most heap one
//! input holds at once: under `MEMORY_BOUND`). Meanwhile the service serves requests and
//! stalls, and the probe must keep seeing those stalls and publishing.
//!
//! Then fuzzed handshakes and requests go to the live probe's socket, from 8 clients at once.
//!
//! `FRAMES` inputs (300,000, ~6 s on a 2-core host beside other builds) in the normal run; the fault suite
//! (`tests/faults.sh`) runs 1,000,000 through `STALLSCOPE_FUZZ_FRAMES`. `STALLSCOPE_FUZZ_SEED`
//! picks another seed; a failure names the input and seed that reproduce it, and keeps the
//! corpus (this run's live stream) in the temporary directory.

#[path = "../../probe/wire/tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_probe::wire::Update;
use stallscope_probe::Probe;
use stallscope_tests::{describe, user_frames, Client};
use stallscope_wire::frame::frame_into;
use stallscope_wire::proto::Hello;
use stallscope_wire::recording::RecordingOptions;

use support::fixture::Rng;
use support::fuzz::{self, Corpus, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

const FRAMES: u64 = if cfg!(debug_assertions) { 30_000 } else { 300_000 };

/// The most heap one input may make the decoders hold at once (the wire crate's own bound:
/// inputs are at most a few hundred KiB, and no length field is believed before its bytes).
const MEMORY_BOUND: usize = 4 << 20;

/// The most the whole process's heap may grow during the run, beyond what was live before it:
/// one input at a time (`MEMORY_BOUND`), the probe's bounded stall list and queues, the
/// service's requests. A decoder that kept something per input would cross it.
const HEAP_GROWTH_BOUND: usize = 64 << 20;

/// Fuzzed connections to the live socket, and clients sending them at once.
const CONNECTIONS: usize = 1_000;
const CLIENTS: usize = 8;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[inline(never)]
fn stalls_beside_the_fuzzer() {
    std::thread::sleep(black_box(Duration::from_millis(25)));
    black_box(());
}

struct Service {
    served: Arc<AtomicU64>,
    stalls_made: Arc<AtomicU64>,
}

/// The service's own work: a request every millisecond (a task that allocates and completes),
/// and a 25 ms stall every 150 ms.
fn start_service(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>) -> Service {
    let served = Arc::new(AtomicU64::new(0));
    let stalls_made = Arc::new(AtomicU64::new(0));
    let (s, st) = (served.clone(), stop.clone());
    rt.spawn(async move {
        while !st.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let s = s.clone();
            tokio::spawn(async move {
                black_box(vec![0u8; 512]);
                s.fetch_add(1, Relaxed);
            });
        }
    });
    let m = stalls_made.clone();
    rt.spawn(async move {
        while !stop.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(150)).await;
            tokio::spawn(async { stalls_beside_the_fuzzer() }).await.unwrap();
            m.fetch_add(1, Relaxed);
        }
    });
    Service { served, stalls_made }
}

/// One fuzzed connection: a mutated hello (sometimes with a changed length prefix), or a valid
/// hello followed by 1..=8 mutated or random request frames. Sends, closes its write side, and
/// reads what the probe answers until the probe closes (or 2 s pass). True when the probe
/// closed the connection.
fn fuzzed_connection(path: &std::path::Path, rng: &mut Rng, corpus: &Corpus) -> bool {
    let Ok(mut s) = UnixStream::connect(path) else { return false };
    let hello = Hello::new("fuzzer", "0").to_payload().unwrap();
    let mut bytes = Vec::new();
    if rng.chance(50) {
        let m = fuzz::mutate(rng, hello.clone(), &corpus.client[0]);
        frame_into(&m, &mut bytes).unwrap();
        if rng.chance(30) {
            bytes = fuzz::mutate_prefixes(rng, bytes);
        }
    } else {
        frame_into(&hello, &mut bytes).unwrap();
        for _ in 0..1 + rng.below(8) {
            let m = if rng.chance(80) {
                fuzz::mutate(rng, corpus.client[0].clone(), &corpus.client[1])
            } else {
                fuzz::random_bytes(rng, 64)
            };
            let mut f = Vec::new();
            frame_into(&m, &mut f).unwrap();
            if rng.chance(20) {
                f = fuzz::mutate_prefixes(rng, f);
            }
            bytes.extend_from_slice(&f);
        }
    }
    let _ = s.write_all(&bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 64 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn fuzzed_frames_beside_a_live_probe_and_at_its_socket_panic_nothing_and_stay_bounded() {
    let _s = stallscope_tests::serial();
    let frames = env_u64("STALLSCOPE_FUZZ_FRAMES").unwrap_or(FRAMES);
    let seed = env_u64("STALLSCOPE_FUZZ_SEED").unwrap_or(0x00F0_2261);
    let threads_before = threads_of_this_process();
    let dir = std::env::temp_dir().join(format!("stallscope-fuzz-{}", std::process::id()));
    let probe = Probe::builder().name("fuzzed").socket_dir(&dir).build().unwrap();
    let rt = stallscope_tests::runtime_with(&probe);
    let guard = probe.start(rt.handle());
    let stop = Arc::new(AtomicBool::new(false));
    let service = start_service(&rt, stop.clone());
    let path = probe.socket_path().unwrap();

    // The corpus: what this probe sends, as a client receives it.
    let sub = probe.subscribe(4096);
    let mut updates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let enough = |u: &[Update]| {
        u.iter().filter(|u| matches!(u, Update::Tick { .. })).count() >= 8
            && u.iter().any(|u| matches!(u, Update::StallEnded(s) if !s.stacks.is_empty()))
    };
    while !enough(&updates) && Instant::now() < deadline {
        if let Some(u) = sub.recv_timeout(Duration::from_millis(100)) {
            updates.push(u);
        }
    }
    drop(sub);
    assert!(enough(&updates), "the live probe sent too little to fuzz: {} updates", updates.len());
    updates.truncate(24);
    let process = probe.refresh(Duration::from_secs(10)).unwrap().process.clone();
    let (recording, _) = support::record(&updates, RecordingOptions::default().keyframe_every(4));
    let corpus = Corpus::new(&updates, process, recording);

    // A client stays attached through the whole run, reading, until the test is done with it:
    // it keeps the ids of the stalls it saw end.
    let done = Arc::new(AtomicBool::new(false));
    let mut c = Client::connect(&path).expect("a client attaches");
    // Stalls that start from now on end while the client is attached.
    let attached_ms = unix_ms() + 50;
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut ended = HashSet::new();
            while !done.load(Relaxed) {
                match c.next() {
                    Ok(Some(Update::StallEnded(s))) => {
                        ended.insert(s.id);
                    }
                    Ok(Some(_)) => {}
                    other => panic!("the attached client lost the probe: {other:?}"),
                }
            }
            (ended, c.dropped)
        })
    };

    // The decoders, input after input, while the service runs.
    let heap_before = fuzz::global_peak_reset();
    let served_before = service.served.load(Relaxed);
    let mut checks = 0u64;
    let outcome = fuzz::run(&corpus, frames, seed, MEMORY_BOUND, |_| {
        checks += 1;
    });
    let heap_peak = fuzz::global_peak().saturating_sub(heap_before);
    let served = service.served.load(Relaxed) - served_before;
    println!("fuzz_frames: {}", outcome.summary());
    println!("fuzz_frames: heap peak +{} KiB, {served} requests served meanwhile", heap_peak / 1024);
    if outcome.panics > 0 || outcome.over_bound > 0 {
        // The corpus is this run's live stream: keep it, so that the seed reproduces the input.
        let keep = std::env::temp_dir().join(format!("stallscope-fuzz-corpus-{}", std::process::id()));
        let _ = std::fs::write(keep.with_extension("frames"), &corpus.stream);
        let _ = std::fs::write(keep.with_extension("ssrec"), &corpus.recording);
        println!("fuzz_frames: the corpus is kept in {}.{{frames,ssrec}}", keep.display());
    }
    assert_eq!(
        outcome.panics, 0,
        "decoders panicked; reproduce with STALLSCOPE_FUZZ_FRAMES={frames} STALLSCOPE_FUZZ_SEED={seed}: {:?}",
        outcome.first_panics
    );
    assert_eq!(outcome.over_bound, 0, "inputs held more than {MEMORY_BOUND} bytes: {:?}", outcome.first_over);
    assert!(outcome.most_held > 0, "the counting allocator saw nothing");
    assert!(outcome.stats.ok > frames / 10 && outcome.stats.err > frames / 10, "{:?}", outcome.stats);
    assert!(outcome.prefix_changes > frames / 20, "length prefixes were hardly changed");
    assert!(outcome.recordings.1 > 0 && outcome.recordings.2 > 0, "recording damage paths not reached");
    assert!(heap_peak <= HEAP_GROWTH_BOUND, "the heap grew by {heap_peak} bytes");
    assert!(checks >= frames / 4096);

    // The live socket: fuzzed handshakes and requests from 8 clients at once.
    let started = Instant::now();
    let closed: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (path, corpus) = (&path, &corpus);
                scope.spawn(move || {
                    let mut rng = Rng::new(seed ^ ((c as u64 + 1) * 0x9E37_79B9));
                    (0..CONNECTIONS / CLIENTS).filter(|_| fuzzed_connection(path, &mut rng, corpus)).count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!(
        "fuzz_frames: {CONNECTIONS} fuzzed connections to the socket in {:.1?}, {closed} closed by the probe",
        started.elapsed()
    );

    // The service's own work went on, the probe kept seeing its stalls and publishing, the
    // attached client was never cut off, and a new client attaches.
    let mut fresh = Client::connect(&path).expect("a client attaches after the fuzzing");
    assert!(fresh.until(Duration::from_secs(5), |u| matches!(u, Update::Tick { .. })).is_some());
    drop(fresh);
    // The service stops; every stall the probe ended while the client was attached must have
    // reached it (the next tick's snapshot lists them all).
    stop.store(true, Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let stalls_made = service.stalls_made.load(Relaxed);
    let snap = probe.refresh(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Relaxed);
    let (ended, client_dropped) = watcher.join().expect("the attached client");
    let names_it =
        |s: &&stallscope_probe::wire::Stall| user_frames(s).iter().any(|f| f.ends_with("stalls_beside_the_fuzzer"));
    let seen = snap.finished_stalls().filter(names_it).count() as u64;
    let owed: Vec<u64> =
        snap.finished_stalls().filter(|s| s.start_unix_ms >= attached_ms).filter(names_it).map(|s| s.id).collect();
    let missed: Vec<u64> = owed.iter().copied().filter(|id| !ended.contains(id)).collect();
    println!(
        "fuzz_frames: {stalls_made} stalls made, {seen} seen by the probe, {} of the {} it ended while a client \
         was attached reached that client; drops {:?}; missing {:?}",
        owed.len() - missed.len(),
        owed.len(),
        snap.drops,
        snap.process.missing
    );
    assert!(served > frames / 1000, "the service served {served} requests while the decoders were fuzzed");
    assert!(stalls_made >= 2, "{stalls_made} stalls made");
    // The probe sees a stall only if its watchdog gets a CPU while the stall runs: on a host
    // this busy (other builds beside the test) it misses a few; it must not miss many.
    assert!(seen * 10 >= stalls_made * 9, "{stalls_made} stalls made, {seen} seen\n{}", describe(&snap));
    assert!(owed.len() >= 2, "no stall ended while the client was attached");
    assert!(
        missed.is_empty(),
        "the attached client never got the ends of stalls {missed:?} ({client_dropped} updates dropped for it)"
    );
    assert_eq!(snap.drops.probe_panics, 0, "{:?}", snap.drops);
    assert!(closed >= CONNECTIONS * 9 / 10, "the probe left {} fuzzed connections open", CONNECTIONS - closed);
    drop(guard);
    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_of_this_process() > threads_before + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // + 1: the process's symbolizer thread, kept once started.
    assert!(threads_of_this_process() <= threads_before + 1, "threads left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
