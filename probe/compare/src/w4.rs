//! W4: an HTTP/1.1 service under a bounded loopback load generator.
//!
//! The service is a hyper 1 server on 127.0.0.1, one task per connection (keep-alive), with three
//! handlers chosen by path:
//! - `/fast` answers a small body at once;
//! - `/timer` awaits `tokio::time::sleep(TIMER)`, then answers;
//! - `/pool` takes a permit from a shared `Semaphore` of [`POOL_PERMITS`] (a small connection
//!   pool, say), awaits `sleep(TIMER)` while holding it, then answers.
//!
//! The load generator runs in the same runtime: [`CONNS`] client tasks, each with one keep-alive
//! connection (hyper's client `http1::handshake`, its connection driven by a task of its own),
//! send a fixed number of GET requests one after the other, each waiting for the whole response.
//! Connection `c` walks the mix ([`path`]) from its own offset, so the connections do not all hit
//! the same handler at once. Every task (server accept loop, server connections, clients, client
//! connection drivers) goes through `crate::spawn`, so tokio-metrics' TaskMonitor sees them all.
//! Timed: from the first connect to the last response; the server is aborted after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio_metrics::TaskMonitor;

use crate::spawn;

/// Client connections, each sending its requests one after the other.
pub(crate) const CONNS: u64 = 32;
#[path = "../../benches/shared/w4_service.rs"]
mod w4_service;
use w4_service::{handle, path, MIX_PERIOD, POOL_PERMITS, TIMER};

fn count(p: &str) -> usize {
    (0..MIX_PERIOD).filter(|&i| path(i) == p).count()
}

pub(crate) fn describe(per_conn: u64) -> String {
    format!(
        "W4 HTTP service: {CONNS} keep-alive HTTP/1.1 connections × {per_conn} requests = {} requests against \
         an in-process hyper server on 127.0.0.1; mix per {}: {} /fast, {} /timer (sleep {} ms), {} /pool \
         ({POOL_PERMITS}-permit semaphore held over a {} ms sleep)",
        CONNS * per_conn,
        MIX_PERIOD,
        count("/fast"),
        count("/timer"),
        TIMER.as_millis(),
        count("/pool"),
        TIMER.as_millis(),
    )
}

/// Runs the load and returns its wall time.
pub(crate) async fn http(tm: Option<TaskMonitor>, per_conn: u64) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http server");
    let addr = listener.local_addr().expect("http server address");
    let pool = Arc::new(Semaphore::new(POOL_PERMITS));
    let tm_server = tm.clone();
    let server = spawn(&tm, async move {
        loop {
            let (sock, _) = listener.accept().await.expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            let pool = pool.clone();
            spawn(&tm_server, async move {
                let svc = hyper::service::service_fn(move |req| handle(req, pool.clone()));
                // An error here is a client going away mid-request; none does in this workload.
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
            });
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..CONNS)
        .map(|c| {
            let tm_conn = tm.clone();
            spawn(&tm, async move {
                let sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
                sock.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(sock)).await.expect("http handshake");
                let driver = spawn(&tm_conn, conn);
                let mut bytes = 0usize;
                for i in 0..per_conn {
                    let path = path(c * (MIX_PERIOD / CONNS) + i);
                    let req = Request::get(path)
                        .header(hyper::header::HOST, "127.0.0.1")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let resp = sender.send_request(req).await.expect("send request");
                    assert!(resp.status().is_success(), "{path}: {}", resp.status());
                    bytes += resp.into_body().collect().await.expect("response body").to_bytes().len();
                }
                drop(sender);
                driver.await.expect("client connection task").expect("client connection");
                bytes
            })
        })
        .collect();
    for h in clients {
        std::hint::black_box(h.await.expect("http client"));
    }
    let elapsed = start.elapsed();
    server.abort();
    elapsed
}
