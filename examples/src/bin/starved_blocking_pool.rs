//! The blocking pool is too small for the blocking work sent to it.
//!
//! An image service renders thumbnails with `spawn_blocking`, as it should, but the runtime
//! allows only 2 blocking threads (`max_blocking_threads(2)`) and each render takes 300 ms.
//! 12 clients keep requesting thumbnails, so ~10 jobs are always queued for a thread.
//! Expected report: blocking pool 2 threads, 0 idle, ~10 queued, and a blocking-pool-starved
//! alert.

use std::hint::black_box;
use std::time::Duration;

/// Blocking threads the runtime may start.
const MAX_BLOCKING_THREADS: usize = 2;
/// Clients each waiting for their thumbnail before asking for the next.
const CLIENTS: u64 = 12;
/// How long one render takes.
const RENDER_TIME: Duration = Duration::from_millis(300);

/// The blocking job: a slow, synchronous render (simulated with a sleep).
#[inline(never)]
fn render_thumbnail(image: u64) -> Vec<u8> {
    std::thread::sleep(black_box(RENDER_TIME));
    black_box(());
    vec![image as u8; 64]
}

async fn client(id: u64) {
    for n in 0.. {
        let image = id * 1_000_000 + n;
        match tokio::task::spawn_blocking(move || render_thumbnail(image)).await {
            Ok(thumb) => black_box(thumb.len()),
            Err(_) => return,
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    stallscope_examples::Example::new("starved_blocking_pool")
        .configure_runtime(|b| {
            b.max_blocking_threads(MAX_BLOCKING_THREADS);
        })
        .run(|_ctx| async {
            for id in 0..CLIENTS {
                tokio::spawn(client(id));
            }
            std::future::pending::<()>().await
        });
}
