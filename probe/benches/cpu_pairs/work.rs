//! W3 and W4 for the CPU-time pairs, split into a service and a load generator.
//!
//! The shapes are probe/compare's W3 (TCP ping-pong) and W4 (hyper HTTP/1.1 service, see
//! `probe/compare/src/w4.rs`), with one difference: there the clients are tasks on the measured
//! runtime; here the **server** runs on the service runtime (the one the probe is installed on)
//! and the **clients** run on a current-thread runtime of their own, driven by the calling
//! thread (`block_on`). So the service's CPU time can be read apart from the load generator's,
//! and the probe's hooks see the service's tasks only, as they would in production where the
//! clients are other machines.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

#[path = "../shared/w4_service.rs"]
mod w4_service;
use w4_service::{handle, path, MIX_PERIOD, POOL_PERMITS};

/// W3 clients (as in probe/compare).
pub const W3_CLIENTS: u64 = 64;
/// W3 message size, bytes (as in probe/compare).
const W3_MSG: usize = 64;
/// W4 client connections (as in probe/compare).
pub const W4_CONNS: u64 = 32;

/// A loopback listener, bound here and handed to a task on `service` (which registers it with
/// the service runtime's reactor).
fn listener() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback listener");
    l.set_nonblocking(true).expect("nonblocking listener");
    let addr = l.local_addr().expect("listener address");
    (l, addr)
}

/// W3's echo server on `service`: one task per connection, `TCP_NODELAY`. Abort the handle to
/// stop accepting; connection tasks end when their client closes.
pub fn echo_server(service: &Handle) -> (SocketAddr, JoinHandle<()>) {
    let (l, addr) = listener();
    let server = service.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(l).expect("echo listener");
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            sock.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut buf = [0u8; W3_MSG];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, server)
}

/// W3's load: [`W3_CLIENTS`] clients, each `round_trips` round trips of [`W3_MSG`] bytes
/// (`write_all` then `read_exact`). Run it inside the load generator's runtime.
pub async fn ping_pong(addr: SocketAddr, round_trips: u64) {
    let clients: Vec<_> = (0..W3_CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
                sock.set_nodelay(true).expect("nodelay");
                let msg = [c as u8; W3_MSG];
                let mut buf = [0u8; W3_MSG];
                for _ in 0..round_trips {
                    sock.write_all(&msg).await.expect("write");
                    sock.read_exact(&mut buf).await.expect("read");
                }
                black_box(buf[0])
            })
        })
        .collect();
    for h in clients {
        black_box(h.await.expect("W3 client"));
    }
}

/// W4's HTTP/1.1 server on `service`: hyper, one task per keep-alive connection.
pub fn http_server(service: &Handle) -> (SocketAddr, JoinHandle<()>) {
    let (l, addr) = listener();
    let pool = Arc::new(Semaphore::new(POOL_PERMITS));
    let server = service.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(l).expect("http listener");
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            sock.set_nodelay(true).expect("nodelay");
            let pool = pool.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, pool.clone()));
                // An error here is a client going away mid-request; none does in this workload.
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
            });
        }
    });
    (addr, server)
}

/// W4's load: [`W4_CONNS`] keep-alive connections, each sending `per_conn` GET requests one
/// after the other and reading every response whole. Run it inside the load generator's runtime.
pub async fn http_load(addr: SocketAddr, per_conn: u64) {
    let clients: Vec<_> = (0..W4_CONNS)
        .map(|c| {
            tokio::spawn(async move {
                let sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
                sock.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(sock)).await.expect("http handshake");
                let driver = tokio::spawn(conn);
                let mut bytes = 0usize;
                for i in 0..per_conn {
                    let path = path(c * (MIX_PERIOD / W4_CONNS) + i);
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
        black_box(h.await.expect("W4 client"));
    }
}
