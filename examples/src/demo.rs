//! The demo service: several failure modes at once, for a first look at stallscope. Used by
//! `examples/src/bin/demo.rs` and by `stallscope demo` (which runs it in a child process).
//!
//! - request handlers that call `std::thread::sleep` (`fetch_rates_blocking`);
//! - a report job that hashes for ~40 ms without yielding (`render_report_cpu`);
//! - a cache write that blocks on a `std::sync::Mutex` held by a refresher thread
//!   (`update_shared_cache`);
//! - a watcher task spawned per request that never finishes (`watch_request`): a leak;
//! - a 3-permit pool held across slow awaits by 8 workers: saturated;
//! - and plenty of healthy traffic around them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use stallscope_probe::pool::Semaphore;

/// Blocks its worker for 30 ms: a synchronous "rates" lookup inside async code.
#[inline(never)]
pub fn fetch_rates_blocking(currency: &str) -> f64 {
    std::thread::sleep(black_box(Duration::from_millis(30)));
    black_box(1.0 + currency.len() as f64 / 100.0)
}

/// Hashes for ~40 ms without yielding.
#[inline(never)]
pub fn render_report_cpu(rows: u64) -> u64 {
    let start = Instant::now();
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    while start.elapsed() < Duration::from_millis(40) {
        for i in 0..rows {
            h = black_box((h ^ i).wrapping_mul(0x100_0000_01b3));
        }
    }
    black_box(h)
}

/// Locks a `std::sync::Mutex` from async code; a refresher thread holds it for 40 ms at a time.
#[inline(never)]
pub fn update_shared_cache(cache: &std::sync::Mutex<Vec<u64>>, value: u64) -> usize {
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    c.push(black_box(value));
    if c.len() > 1024 {
        c.clear();
    }
    black_box(c.len())
}

/// Spawns a watcher that waits for a cancellation nobody ever sends: the leak.
#[inline(never)]
pub fn watch_request(id: u64, parked: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.await;
        black_box(id);
    });
    parked.push(tx);
}

/// Runs the demo workload until the future is dropped.
pub async fn run() {
    let pool = Semaphore::new("db", 3);
    for w in 0..8u64 {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                let _conn = pool.acquire().await.unwrap();
                tokio::time::sleep(Duration::from_millis(120 + w)).await;
            }
        });
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_millis(700));
        loop {
            tick.tick().await;
            tokio::spawn(async { black_box(render_report_cpu(black_box(1024))) });
        }
    });
    let cache = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        // The refresher: an OS thread that rebuilds the cache under the lock for 40 ms now and
        // then, and tells the service it is refreshing, which then writes to the cache at once
        // and blocks on the lock. It ends with the demo's runtime (the channel closes).
        let (refreshing_tx, mut refreshing) = tokio::sync::mpsc::unbounded_channel::<()>();
        let for_thread = cache.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(600));
            let _g = for_thread.lock().unwrap_or_else(|e| e.into_inner());
            if refreshing_tx.send(()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(40));
        });
        let cache = cache.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while refreshing.recv().await.is_some() {
                n += 1;
                let cache = cache.clone();
                tokio::spawn(async move { black_box(update_shared_cache(&cache, n)) });
            }
        });
    }
    let mut parked = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for id in 0u64.. {
        tick.tick().await;
        if id % 25 == 0 {
            tokio::spawn(async move { black_box(fetch_rates_blocking(if id % 2 == 0 { "EUR" } else { "USD" })) });
        }
        watch_request(id, &mut parked);
        // Healthy, short requests.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            black_box(id)
        });
    }
}
