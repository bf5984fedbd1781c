//! Reporting a real pool crate to stallscope: a `deadpool` managed pool behind a
//! [`PoolGauge`] adapter.
//!
//! [`DeadpoolGauge`] turns `Pool::status()` (max_size, size, available, waiting) into
//! stallscope's gauges, and [`InstrumentedPool::get`] records every acquisition's wait with
//! [`PoolHandle::timed`]. The service runs a light steady load on an 8-connection pool, then a
//! burst of 24 extra clients that each hold a connection for 150 ms for the middle third of
//! the run, then the steady load again. Expected: the pool-saturated alert while the burst
//! lasts (listed under "alerts raised at any time during the run"), wait p99 in the hundreds
//! of milliseconds in the final report, and the pool back to no waiters at the end.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleResult, WeakPool};
use stallscope_probe::pool::{self, PoolGauge, PoolGauges, PoolHandle};

/// Connections the pool may open.
const MAX_CONNECTIONS: usize = 8;
/// Clients of the steady load.
const STEADY_CLIENTS: u64 = 4;
/// Extra clients during the burst.
const BURST_CLIENTS: u64 = 24;
/// How long a burst query holds its connection.
const BURST_QUERY: Duration = Duration::from_millis(150);

// === the adapter ===

/// A [`PoolGauge`] over a deadpool managed pool. Holds the pool weakly, so registering it does
/// not keep the pool alive; a dropped pool reports zeros.
struct DeadpoolGauge<M: managed::Manager>(WeakPool<M>);

impl<M> PoolGauge for DeadpoolGauge<M>
where
    M: managed::Manager + 'static,
{
    fn gauges(&self) -> PoolGauges {
        let Some(pool) = self.0.upgrade() else {
            return PoolGauges::default();
        };
        let s = pool.status();
        // `size` counts open objects, `available` the idle ones among them.
        PoolGauges::new(
            s.size.saturating_sub(s.available) as u64,
            s.available as u64,
            s.max_size as u64,
            s.waiting as u64,
        )
    }
}

/// A deadpool pool registered with stallscope: `get` records how long each acquisition waited.
struct InstrumentedPool<M: managed::Manager + 'static> {
    pool: managed::Pool<M>,
    handle: PoolHandle,
}

// By hand: a derive would require `M: Clone`, which neither field needs.
impl<M: managed::Manager + 'static> Clone for InstrumentedPool<M> {
    fn clone(&self) -> Self {
        InstrumentedPool { pool: self.pool.clone(), handle: self.handle.clone() }
    }
}

impl<M: managed::Manager + 'static> InstrumentedPool<M> {
    /// Registers `pool` as `name`.
    fn register(name: &str, pool: managed::Pool<M>) -> Self {
        let handle = pool::register(name, DeadpoolGauge(pool.weak()));
        InstrumentedPool { pool, handle }
    }

    /// `Pool::get`, timed.
    async fn get(&self) -> Result<Object<M>, PoolError<M::Error>> {
        self.handle.timed(self.pool.get()).await
    }
}

// === a trivial database ===

/// A pretend database connection.
#[derive(Debug)]
struct DbConn {
    id: u64,
}

impl DbConn {
    async fn query(&self, sql: &str, took: Duration) -> usize {
        tokio::time::sleep(took).await;
        black_box(sql.len() + self.id as usize)
    }
}

/// Opens pretend connections (a 5 ms handshake) and recycles them as they are.
#[derive(Debug, Default)]
struct DbManager {
    opened: AtomicU64,
}

impl managed::Manager for DbManager {
    type Type = DbConn;
    type Error = std::convert::Infallible;

    async fn create(&self) -> Result<DbConn, Self::Error> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(DbConn { id: self.opened.fetch_add(1, Ordering::Relaxed) })
    }

    async fn recycle(&self, _conn: &mut DbConn, _: &Metrics) -> RecycleResult<Self::Error> {
        Ok(())
    }
}

type Db = InstrumentedPool<DbManager>;

// === the service ===

/// Steady load: short queries with think time, forever.
async fn steady_client(db: Db, id: u64) {
    loop {
        let Ok(conn) = db.get().await else { return };
        black_box(
            conn.query("SELECT balance FROM accounts WHERE id = $1", Duration::from_millis(20)).await + id as usize,
        );
        drop(conn);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Burst load: long report queries back to back until `until`.
async fn burst_client(db: Db, until: tokio::time::Instant) {
    while tokio::time::Instant::now() < until {
        let Ok(conn) = db.get().await else { return };
        black_box(conn.query("SELECT * FROM ledger ORDER BY ts", BURST_QUERY).await);
    }
}

fn main() {
    stallscope_examples::Example::new("deadpool_adapter").run(|ctx| async move {
        let pool = managed::Pool::builder(DbManager::default())
            .max_size(MAX_CONNECTIONS)
            .build()
            .expect("a pool without timeouts needs no runtime");
        let db = Db::register("db", pool);
        for id in 0..STEADY_CLIENTS {
            tokio::spawn(steady_client(db.clone(), id));
        }

        let third = ctx.duration / 3;
        tokio::time::sleep(third).await;
        eprintln!("deadpool_adapter: burst: {BURST_CLIENTS} clients holding connections for {BURST_QUERY:?}");
        let until = tokio::time::Instant::now() + third;
        for _ in 0..BURST_CLIENTS {
            tokio::spawn(burst_client(db.clone(), until));
        }
        tokio::time::sleep(third).await;
        eprintln!("deadpool_adapter: burst over, steady load again: {:?}", db.pool.status());
        std::future::pending::<()>().await
    });
}
