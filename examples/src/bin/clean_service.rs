//! A healthy service, for comparison: the report must raise no alert.
//!
//! A TCP echo server on 127.0.0.1 (ephemeral port) with an accept loop that spawns a handler
//! per connection; in the same process, a bounded client (4 persistent connections plus one
//! short-lived connection every 200 ms) sends requests in a loop; a long-lived background
//! worker aggregates latency stats and flushes them on a timer. Every await is short, nothing
//! blocks, no task outlives its purpose.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Persistent client connections.
const CONNECTIONS: usize = 4;
/// Pause between two requests on one connection.
const THINK_TIME: Duration = Duration::from_millis(10);
/// Time between two short-lived connections.
const SHORT_LIVED_EVERY: Duration = Duration::from_millis(200);
/// Time between two stats flushes.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Echoes newline-terminated lines until the client closes the connection.
async fn handle_connection(stream: TcpStream) -> std::io::Result<u64> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut served = 0;
    while let Some(line) = lines.next_line().await? {
        write.write_all(line.as_bytes()).await?;
        write.write_all(b"\n").await?;
        served += 1;
    }
    Ok(served)
}

/// Accept loop: one handler task per connection.
async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    black_box(handle_connection(stream).await.ok());
                });
            }
            Err(e) => {
                eprintln!("clean_service: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Sends `requests` requests (or forever with `None`) on one connection, checking each echo.
async fn client(
    addr: SocketAddr,
    name: String,
    requests: Option<u64>,
    stats: mpsc::Sender<Duration>,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut n = 0u64;
    while requests.is_none_or(|max| n < max) {
        let msg = format!("{name} request {n}");
        let start = Instant::now();
        write.write_all(msg.as_bytes()).await?;
        write.write_all(b"\n").await?;
        match lines.next_line().await? {
            Some(echo) if echo == msg => {}
            other => return Err(std::io::Error::other(format!("bad echo {other:?} for {msg:?}"))),
        }
        // The stats worker is never far behind; if it were, drop the sample rather than wait.
        let _ = stats.try_send(start.elapsed());
        n += 1;
        tokio::time::sleep(THINK_TIME).await;
    }
    Ok(())
}

/// Long-lived background worker: aggregates round-trip times and flushes them periodically.
async fn stats_worker(mut samples: mpsc::Receiver<Duration>) {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let (mut count, mut total, mut max) = (0u64, Duration::ZERO, Duration::ZERO);
    loop {
        tokio::select! {
            s = samples.recv() => match s {
                Some(d) => {
                    count += 1;
                    total += d;
                    max = max.max(d);
                }
                None => return,
            },
            _ = flush.tick() => {
                // A real service would export these; keeping them observable is enough here.
                black_box((count, total, max));
                (count, total, max) = (0, Duration::ZERO, Duration::ZERO);
            }
        }
    }
}

fn main() {
    stallscope_examples::Example::new("clean_service").run(|_ctx| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(accept_loop(listener));

        let (stats_tx, stats_rx) = mpsc::channel(1024);
        tokio::spawn(stats_worker(stats_rx));

        for c in 0..CONNECTIONS {
            let stats = stats_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = client(addr, format!("client-{c}"), None, stats).await {
                    eprintln!("clean_service: client-{c}: {e}");
                }
            });
        }

        let mut every = tokio::time::interval(SHORT_LIVED_EVERY);
        for n in 0u64.. {
            every.tick().await;
            let stats = stats_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = client(addr, format!("short-{n}"), Some(3), stats).await {
                    eprintln!("clean_service: short-{n}: {e}");
                }
            });
        }
    });
}
