//! An actix-web service whose handler makes a blocking call.
//!
//! actix-web runs every handler in a `LocalSet` task on a current-thread runtime per worker, and
//! builds those runtimes itself (inside `actix-server`), so the probe cannot install its hooks
//! on them. Each worker calls [`Probe::watch_thread`] from the app factory instead, which runs
//! once on each worker thread. The handler below looks a customer up with a synchronous driver
//! call that takes ~40 ms, holding its worker for that long.
//!
//! Expected report: stalls of ~40 ms whose culprit is `lookup_customer`, in a LocalSet task,
//! blocked in `nanosleep` (the stand-in for the driver's network wait).
//!
//! `cargo run --release -p stallscope-examples --bin actix_blocking [-- --duration SECS --json]`

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use stallscope_examples::Options;
use stallscope_probe::Probe;

/// How long the "database" takes to answer.
const LOOKUP: Duration = Duration::from_millis(40);
/// Time between two requests from the load generator.
const REQUEST_EVERY: Duration = Duration::from_millis(100);
/// Worker threads (actix's default is one per core).
const WORKERS: usize = 2;

/// The culprit: a synchronous driver call made from an async handler.
#[inline(never)]
fn lookup_customer(id: u64) -> String {
    std::thread::sleep(black_box(LOOKUP));
    black_box(format!("customer {id}"))
}

async fn customer(path: web::Path<u64>) -> HttpResponse {
    let name = lookup_customer(path.into_inner());
    HttpResponse::Ok().body(name)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// One plain HTTP/1.1 GET; the status line's code, if the server answered.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> std::io::Result<()> {
    let opts = Options::parse(Duration::from_secs(3));
    let probe = match Probe::builder().with_env().build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("actix_blocking: cannot build the probe: {e}");
            std::process::exit(2)
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let snapshot = actix_web::rt::System::new().block_on(async move {
        // The system runtime (actix's too) carries the probe's heartbeat and aggregator.
        let guard = probe.start(&tokio::runtime::Handle::current());
        let p = probe.clone();
        let server = HttpServer::new(move || {
            // Runs once on each worker thread, inside its runtime.
            if let Err(e) = p.watch_thread() {
                eprintln!("actix_blocking: this worker is not watched: {e}");
            }
            App::new().route("/customer/{id}", web::get().to(customer)).route("/health", web::get().to(health))
        })
        .workers(WORKERS)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        let server = actix_web::rt::spawn(server);
        eprintln!("actix_blocking: serving on {addr} for {:?}", opts.duration);
        // The load: a client thread, as real traffic would come from outside.
        let duration = opts.duration;
        let client = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let (mut ok, mut id) = (0u64, 0u64);
            while start.elapsed() < duration {
                id += 1;
                let path = if id % 2 == 0 { format!("/customer/{id}") } else { "/health".to_string() };
                ok += u64::from(get(addr, &path) == Some(200));
                std::thread::sleep(REQUEST_EVERY);
            }
            ok
        });
        let answered = actix_web::rt::task::spawn_blocking(move || client.join().unwrap_or(0)).await.unwrap_or(0);
        eprintln!("actix_blocking: {answered} requests answered");
        let snap = actix_web::rt::task::spawn_blocking({
            let probe = probe.clone();
            move || probe.refresh(Duration::from_secs(5)).or_else(|| probe.snapshot())
        })
        .await
        .ok()
        .flatten();
        handle.stop(true).await;
        let _ = server.await;
        drop(guard);
        Ok::<_, std::io::Error>(snap)
    })?;
    let Some(snapshot) = snapshot else {
        eprintln!("actix_blocking: the probe produced no snapshot");
        std::process::exit(1)
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&*snapshot).map_err(std::io::Error::other)?);
    } else {
        print!("{}", stallscope_probe::render_report(&snapshot));
    }
    Ok(())
}
