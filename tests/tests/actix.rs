//! actix-web, which builds each worker's current-thread runtime itself (inside actix-server), so
//! the probe cannot be installed on the runtimes that run the handlers. `Probe::watch_thread`,
//! called from the app factory (once on each worker), has the watchdog read those threads' idle
//! and busy state from their runtimes' metrics: a blocking handler is then a stall naming the
//! handler's blocking function, in a `LocalSet` task, never shorter than the block.
//! Run in release (`debug = "line-tables-only"`).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use stallscope_probe::wire::{Snapshot, StallCause};
use stallscope_probe::{Probe, WatchError};
use stallscope_tests::{describe, expect_stall, serial};

/// Requests to the blocking handler.
const REQUESTS: usize = 8;
/// How much longer than the block an unhooked stall may be reported (see `blind_spots.rs`).
const LATE_MS: f64 = 25.0;

type Measured = Arc<Mutex<Vec<u64>>>;

/// The culprit: a synchronous lookup called from the handler. Returns how long it blocked (ns).
#[inline(never)]
fn lookup_customer_blocking(id: u64) -> u64 {
    let began = Instant::now();
    std::thread::sleep(black_box(Duration::from_millis(40)));
    black_box(id);
    began.elapsed().as_nanos() as u64
}

async fn customer(path: web::Path<u64>, measured: web::Data<Measured>) -> HttpResponse {
    let took = lookup_customer_blocking(path.into_inner());
    measured.lock().unwrap().push(took);
    HttpResponse::Ok().body("customer")
}

/// One HTTP/1.1 GET over a fresh connection; the status code.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// Serves `REQUESTS` blocking requests on two actix workers watched through `watch_thread`;
/// returns the snapshot taken while the server still runs, the blocks as measured inside the
/// handler, and what `watch_thread` said on each worker.
fn serve(probe: &Probe) -> (Snapshot, Vec<u64>, Vec<Result<(), WatchError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let measured: Measured = Arc::default();
    let watched = Arc::new(Mutex::new(Vec::new()));
    let probe = probe.clone();
    let (m, w) = (measured.clone(), watched.clone());
    let snap = actix_web::rt::System::new().block_on(async move {
        let guard = probe.start(&tokio::runtime::Handle::current());
        let p = probe.clone();
        let server = HttpServer::new(move || {
            w.lock().unwrap().push(p.watch_thread());
            App::new().app_data(web::Data::new(m.clone())).route("/customer/{id}", web::get().to(customer))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        let server = actix_web::rt::spawn(server);
        let answered = actix_web::rt::task::spawn_blocking(move || {
            (0..REQUESTS)
                .filter(|id| {
                    // Idle between requests, as a real service is: the workers park.
                    std::thread::sleep(Duration::from_millis(20));
                    get(addr, &format!("/customer/{id}")) == Some(200)
                })
                .count()
        })
        .await
        .unwrap();
        assert_eq!(answered, REQUESTS, "every request answered");
        let p = probe.clone();
        let snap = actix_web::rt::task::spawn_blocking(move || p.refresh(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("a snapshot");
        handle.stop(true).await;
        let _ = server.await;
        drop(guard);
        snap
    });
    let measured = measured.lock().unwrap().clone();
    let watched = watched.lock().unwrap().clone();
    (Arc::unwrap_or_clone(snap), measured, watched)
}

#[test]
fn a_blocking_actix_web_handler_is_a_stall_naming_its_blocking_function() {
    let _s = serial();
    let probe = Probe::builder().stall_threshold(Duration::from_millis(10)).server(false).build().unwrap();
    let (snap, measured, watched) = serve(&probe);
    assert_eq!(watched.len(), 2, "the app factory runs once on each of the two workers");
    assert!(watched.iter().all(|r| r.is_ok()), "{watched:?}");
    assert_eq!(measured.len(), REQUESTS);

    let e = expect_stall(&snap).naming("lookup_customer_blocking");
    // Beside CPU hogs the watchdog can be starved past a whole block: most must be there, and
    // no stall is counted twice.
    let n = e.stalls().len();
    assert!((REQUESTS / 2..=REQUESTS).contains(&n), "{n} stalls for {REQUESTS} blocks\n{}", describe(&snap));
    let shortest = *measured.iter().min().unwrap();
    for s in e.stalls() {
        assert_eq!(s.task, None, "no task hook saw it\n{}", describe(&snap));
        assert_eq!(s.unhooked_origin(), Some("LocalSet task"), "{}", describe(&snap));
        // Its anatomy: a sleep in the handler is time blocked in a sleep system call.
        let a = s.anatomy.as_ref().unwrap_or_else(|| panic!("no anatomy\n{}", describe(&snap)));
        assert_eq!(a.dominant(), StallCause::Blocked, "{}", a.describe());
        let main = a.main_blocked_in().unwrap_or_else(|| panic!("blocked in nothing: {a:?}"));
        assert!(main.syscall.contains("nanosleep"), "{}", a.describe());
        let d = s.duration_ns.unwrap_or(0);
        assert_eq!(a.on_cpu_ns + a.waiting_ns + a.blocked_ns, d);
        let late = (d as f64 - shortest as f64) / 1e6;
        assert!(
            late >= 0.0 && late <= LATE_MS + 5.0,
            "reported {d} ns for blocks of at least {shortest} ns ({late:+.2} ms)\n{}",
            describe(&snap)
        );
    }
    // The report and the alert name the handler's blocking function.
    let report = stallscope_probe::render_report(&snap);
    assert!(report.contains("in lookup_customer_blocking"), "{report}");
    let alert = snap
        .alerts
        .iter()
        .find(|a| a.kind == stallscope_probe::wire::AlertKind::BlockingPoll)
        .unwrap_or_else(|| panic!("a blocking-poll alert: {:?}", snap.alerts));
    assert!(alert.summary.contains("lookup_customer_blocking"), "{}", alert.summary);
    assert!(alert.summary.contains("LocalSet task"), "{}", alert.summary);
}

#[test]
fn watch_thread_says_why_it_cannot_watch_a_thread() {
    let _s = serial();
    let probe = Probe::builder().server(false).build().unwrap();
    assert_eq!(probe.watch_thread(), Err(WatchError::NoRuntime));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    assert_eq!(rt.block_on(async { probe.watch_thread() }), Err(WatchError::MultiThread));
    let unsampled = Probe::builder().sampling(false).server(false).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(async { unsampled.watch_thread() }), Err(WatchError::NoSampling));
    // On a current-thread runtime it watches, and a second call is the same watch.
    assert_eq!(rt.block_on(async { probe.watch_thread() }), Ok(()));
    assert_eq!(rt.block_on(async { probe.watch_thread() }), Ok(()));
}

#[test]
fn a_watched_thread_gives_its_slot_back_when_it_exits() {
    let _s = serial();
    // One slot: a second watched thread gets it only if the first gave it back.
    let probe = Probe::builder().max_threads(1).server(false).build().unwrap();
    for _ in 0..3 {
        let p = probe.clone();
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async { p.watch_thread() })
        })
        .join()
        .unwrap();
        assert_eq!(r, Ok(()));
    }
    let p = probe.clone();
    let held = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let first = rt.block_on(async { p.watch_thread() });
        // While this thread holds the one slot, another thread finds none.
        let p2 = p.clone();
        let second = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async { p2.watch_thread() })
        })
        .join()
        .unwrap();
        (first, second)
    })
    .join()
    .unwrap();
    assert_eq!(held, (Ok(()), Err(WatchError::NoSlot)));
}
