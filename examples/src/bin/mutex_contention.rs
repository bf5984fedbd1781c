//! An async task blocks on a `std::sync::Mutex` that another thread holds for ~50 ms.
//!
//! A background OS thread rebuilds the shared cache's index every 150 ms and holds the lock
//! while it does (~50 ms). Request handlers update the same cache with a plain `lock()`, so a
//! handler that arrives during a rebuild parks its worker thread on the mutex. Expected
//! report: blocking-poll stalls of up to ~50 ms in `update_shared_cache`, task spawned in
//! `serve`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long the refresher holds the lock.
const REBUILD_TIME: Duration = Duration::from_millis(50);
/// Time between two rebuilds.
const REBUILD_EVERY: Duration = Duration::from_millis(150);
/// Time between two requests.
const REQUEST_EVERY: Duration = Duration::from_millis(20);

type Cache = Mutex<HashMap<u64, String>>;

/// The culprit: a synchronous `lock()` from async code, on a lock held by a slow thread.
#[inline(never)]
fn update_shared_cache(cache: &Cache, key: u64, value: String) -> usize {
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    black_box(());
    map.insert(key % 1024, value);
    map.len()
}

/// The holder: rebuilds the index under the lock (the slow work is simulated with a sleep).
#[inline(never)]
fn rebuild_cache_index(cache: &Cache) {
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::sleep(black_box(REBUILD_TIME));
    map.retain(|k, _| k % 7 != 0);
    black_box(());
}

/// Runs on its own OS thread until the service drops the cache.
fn refresher(cache: Weak<Cache>) {
    loop {
        std::thread::sleep(REBUILD_EVERY);
        match cache.upgrade() {
            Some(c) => rebuild_cache_index(&c),
            None => return,
        }
    }
}

async fn handle(cache: Arc<Cache>, id: u64) -> usize {
    // Parse the request, asynchronously.
    tokio::time::sleep(Duration::from_millis(1)).await;
    update_shared_cache(&cache, id, format!("session-{id}"))
}

/// Accept loop: one handler task per request.
async fn serve(cache: Arc<Cache>, mut requests: mpsc::Receiver<u64>) {
    while let Some(id) = requests.recv().await {
        let cache = cache.clone();
        tokio::spawn(async move {
            black_box(handle(cache, id).await);
        });
    }
}

fn main() {
    stallscope_examples::Example::new("mutex_contention").run(|_ctx| async {
        let cache: Arc<Cache> = Arc::new(Mutex::new(HashMap::new()));
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("cache-refresher".into())
            .spawn(move || refresher(weak))
            .expect("spawn the refresher thread");
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(stallscope_examples::requests(tx, REQUEST_EVERY, |id| id));
        serve(cache, rx).await;
    });
}
