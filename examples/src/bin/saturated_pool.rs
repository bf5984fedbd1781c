//! A connection pool that is too small for its load.
//!
//! The "db" pool is a `stallscope_probe::pool::Semaphore` with 4 permits. 16 workers each run
//! queries in a loop and hold a permit across a 200 ms query, so 12 of them are always
//! waiting. Expected report: pool `db` 4/4 in use, ~12 waiting, wait p99 ~600 ms, SATURATED,
//! and a pool-saturated alert.

use std::hint::black_box;
use std::time::Duration;

use stallscope_probe::pool::Semaphore;

/// Connections in the pool.
const POOL_SIZE: usize = 4;
/// Concurrent workers issuing queries.
const WORKERS: usize = 16;
/// How long one query holds its connection.
const QUERY_TIME: Duration = Duration::from_millis(200);

/// One query: holds a connection for its whole duration.
async fn run_query(db: &Semaphore, worker: usize, n: u64) -> u64 {
    let _conn = db.acquire().await.expect("the pool is never closed");
    tokio::time::sleep(QUERY_TIME).await;
    black_box(worker as u64 * 1000 + n)
}

async fn worker(db: Semaphore, worker: usize) {
    for n in 0.. {
        black_box(run_query(&db, worker, n).await);
    }
}

fn main() {
    stallscope_examples::Example::new("saturated_pool").run(|_ctx| async {
        let db = Semaphore::new("db", POOL_SIZE);
        for w in 0..WORKERS {
            tokio::spawn(worker(db.clone(), w));
        }
        std::future::pending::<()>().await
    });
}
