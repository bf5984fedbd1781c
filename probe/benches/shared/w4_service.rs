//! W4's service, the one piece of it that both harnesses run: the request mix and its handlers.
//!
//! Included by path in the CPU-time pairs (`probe/benches/cpu_pairs/work.rs`) and in the
//! comparison harness (`probe/compare/src/w4.rs`, a workspace of its own), so that the two measure
//! the same service. Per [`MIX_PERIOD`] requests of a connection: one `/pool` (a permit of a
//! shared [`POOL_PERMITS`]-permit `Semaphore`, a small connection pool say, held over a
//! [`TIMER`] sleep), [`TIMERS`] `/timer` (a [`TIMER`] sleep), the rest `/fast` (answered at once).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;

/// Permits of the shared pool behind `/pool`.
pub(crate) const POOL_PERMITS: usize = 4;
/// What `/timer` and `/pool` sleep (Tokio's timer rounds it up to its 1 ms tick, so ~1–2 ms).
pub(crate) const TIMER: Duration = Duration::from_millis(1);
/// The request mix repeats every this many requests of a connection.
pub(crate) const MIX_PERIOD: u64 = 128;
/// `/timer` requests per [`MIX_PERIOD`].
pub(crate) const TIMERS: u64 = 8;

/// The path of a connection's request `i` (counted from the connection's offset in the mix).
pub(crate) fn path(i: u64) -> &'static str {
    let k = i % MIX_PERIOD;
    if k == MIX_PERIOD - 1 {
        "/pool"
    } else if k % (MIX_PERIOD / TIMERS) == MIX_PERIOD / TIMERS / 2 {
        "/timer"
    } else {
        "/fast"
    }
}

/// Answers one request by its path.
pub(crate) async fn handle(req: Request<Incoming>, pool: Arc<Semaphore>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body: &'static [u8] = match req.uri().path() {
        "/fast" => b"fast\n",
        "/timer" => {
            tokio::time::sleep(TIMER).await;
            b"timer\n"
        }
        "/pool" => {
            let _permit = pool.acquire().await.expect("pool is never closed");
            tokio::time::sleep(TIMER).await;
            b"pool\n"
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Ok(r);
        }
    };
    Ok(Response::new(Full::new(Bytes::from_static(body))))
}
