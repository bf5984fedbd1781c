//! Pool waiters: an instrumented semaphore, and a small trait any pool can implement.
//!
//! Pools register in a process-wide registry (they usually outlive any one probe) and every
//! running probe reports them. A pool leaves the registry when it is dropped.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let db = stallscope_probe::pool::Semaphore::new("db", 2);
//! let permit = db.acquire().await.unwrap();
//! let g = db.gauges();
//! assert_eq!((g.in_use, g.idle, g.max, g.waiters), (1, 1, 2, 0));
//! drop(permit);
//! # }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use stallscope_wire::PoolStats;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, SemaphorePermit, TryAcquireError};

use crate::poll::hist::NsHist;

/// Gauges of a pool at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolGauges {
    /// Units handed out.
    pub in_use: u64,
    /// Units ready to hand out.
    pub idle: u64,
    /// Capacity.
    pub max: u64,
    /// Callers waiting.
    pub waiters: u64,
}

impl PoolGauges {
    /// Gauges from their four values.
    pub fn new(in_use: u64, idle: u64, max: u64, waiters: u64) -> PoolGauges {
        PoolGauges { in_use, idle, max, waiters }
    }
}

/// Anything that can report its gauges: implement it for a deadpool, bb8 or sqlx pool (see
/// `examples/`) and pass it to [`register`].
pub trait PoolGauge: Send + Sync + 'static {
    /// Current gauges.
    fn gauges(&self) -> PoolGauges;
}

impl<F: Fn() -> PoolGauges + Send + Sync + 'static> PoolGauge for F {
    fn gauges(&self) -> PoolGauges {
        self()
    }
}

struct Entry {
    name: String,
    gauge: Box<dyn PoolGauge>,
    waits: NsHist,
    acquired: AtomicU64,
}

static REGISTRY: Mutex<Vec<Weak<Entry>>> = Mutex::new(Vec::new());

/// A registered pool. Record acquisition waits through it; dropping it unregisters the pool.
#[derive(Clone)]
pub struct PoolHandle(Arc<Entry>);

impl std::fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHandle").field("name", &self.0.name).finish()
    }
}

impl PoolHandle {
    /// Records one successful acquisition that waited `wait`.
    pub fn record_wait(&self, wait: Duration) {
        self.0.waits.record_ns(wait.as_nanos().min(u64::MAX as u128) as u64);
        self.0.acquired.fetch_add(1, Relaxed);
    }

    /// Awaits `acquire`, recording how long it took when it succeeds.
    pub async fn timed<T, E>(&self, acquire: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let start = Instant::now();
        let r = acquire.await;
        if r.is_ok() {
            self.record_wait(start.elapsed());
        }
        r
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// Registers a pool under `name`.
pub fn register(name: impl Into<String>, gauge: impl PoolGauge) -> PoolHandle {
    let entry = Arc::new(Entry {
        name: name.into(),
        gauge: Box::new(gauge),
        waits: NsHist::default(),
        acquired: AtomicU64::new(0),
    });
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|w| w.strong_count() > 0);
    reg.push(Arc::downgrade(&entry));
    PoolHandle(entry)
}

/// Every registered pool, as the aggregator reports it.
/// Every registered pool's figures, and the names of the pools whose gauge panicked (their
/// figures are left out of this snapshot; the caller counts each panic).
pub(crate) fn collect() -> (Vec<PoolStats>, Vec<String>) {
    let entries: Vec<Arc<Entry>> = {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|w| w.strong_count() > 0);
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    let mut panicked = Vec::new();
    let stats = entries
        .iter()
        .filter_map(|e| {
            // A user's gauge implementation must not take the aggregator down.
            let Ok(g) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.gauge.gauges())) else {
                panicked.push(e.name.clone());
                return None;
            };
            Some(PoolStats {
                name: e.name.clone(),
                in_use: g.in_use,
                idle: g.idle,
                max: g.max,
                waiters: g.waiters,
                acquired: e.acquired.load(Relaxed),
                wait_time: e.waits.to_wire(),
            })
        })
        .collect();
    (stats, panicked)
}

// === impl Semaphore ===

/// A `tokio::sync::Semaphore` that reports in use, idle, max, waiters and wait times.
#[derive(Debug, Clone)]
pub struct Semaphore {
    inner: Arc<tokio::sync::Semaphore>,
    waiters: Arc<AtomicU64>,
    max: u64,
    handle: PoolHandle,
}

struct Waiting<'a>(&'a AtomicU64);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Semaphore {
    /// A semaphore with `permits` permits, registered as pool `name`.
    pub fn new(name: impl Into<String>, permits: usize) -> Semaphore {
        let inner = Arc::new(tokio::sync::Semaphore::new(permits));
        let waiters = Arc::new(AtomicU64::new(0));
        let max = permits as u64;
        let (i, w) = (Arc::downgrade(&inner), waiters.clone());
        let handle = register(name, move || {
            let idle = i.upgrade().map(|s| s.available_permits() as u64).unwrap_or(0);
            PoolGauges { in_use: max.saturating_sub(idle), idle, max, waiters: w.load(Relaxed) }
        });
        Semaphore { inner, waiters, max, handle }
    }

    /// Acquires a permit, counting the caller as a waiter until it has one (or gives up).
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        if let Ok(p) = self.inner.try_acquire() {
            self.handle.record_wait(Duration::ZERO);
            return Ok(p);
        }
        self.waiters.fetch_add(1, Relaxed);
        let _w = Waiting(&self.waiters);
        self.handle.timed(self.inner.acquire()).await
    }

    /// Like [`acquire`](Self::acquire), for a permit that owns a reference to the semaphore.
    pub async fn acquire_owned(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        if let Ok(p) = self.inner.clone().try_acquire_owned() {
            self.handle.record_wait(Duration::ZERO);
            return Ok(p);
        }
        self.waiters.fetch_add(1, Relaxed);
        let _w = Waiting(&self.waiters);
        self.handle.timed(self.inner.clone().acquire_owned()).await
    }

    /// Takes a permit if one is free.
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        let p = self.inner.try_acquire()?;
        self.handle.record_wait(Duration::ZERO);
        Ok(p)
    }

    /// Current gauges.
    pub fn gauges(&self) -> PoolGauges {
        let idle = self.inner.available_permits() as u64;
        PoolGauges { in_use: self.max.saturating_sub(idle), idle, max: self.max, waiters: self.waiters.load(Relaxed) }
    }
}
