//! A task per request that waits for a notification nobody ever sends.
//!
//! For every request the service starts a watcher task that waits for the request's
//! "completed" signal, to log its latency. The handler finishes but never fires the signal,
//! and the registry keeps every sender alive, so the watchers never finish: ~50 new live tasks
//! a second. Expected report: a leak suspect at the `tokio::spawn` in `start_request_watcher`
//! (the leak rule needs five 1 s windows and a 5 s old task, hence the 8 s default duration).

use std::hint::black_box;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

/// Time between two requests (~50 per second).
const REQUEST_EVERY: Duration = Duration::from_millis(20);

/// Senders of the "request completed" signals, kept by request id.
#[derive(Default)]
struct CompletionRegistry {
    pending: Vec<(u64, oneshot::Sender<()>)>,
}

/// The culprit spawn site: a watcher that waits for a signal the handler never sends.
#[inline(never)]
fn start_request_watcher(registry: &mut CompletionRegistry, id: u64) {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    registry.pending.push((id, done_tx));
    let started = Instant::now();
    tokio::spawn(async move {
        // Never resolves: the sender stays in the registry and is never used.
        if done_rx.await.is_ok() {
            black_box(started.elapsed());
        }
    });
    black_box(());
}

async fn handle(id: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(3)).await;
    // Bug: the handler should take the sender out of the registry and fire it here.
    black_box(id)
}

/// Accept loop: a watcher and a handler per request.
async fn serve(mut requests: mpsc::Receiver<u64>) {
    let mut registry = CompletionRegistry::default();
    while let Some(id) = requests.recv().await {
        start_request_watcher(&mut registry, id);
        tokio::spawn(async move {
            black_box(handle(id).await);
        });
    }
    black_box(registry.pending.len());
}

fn main() {
    stallscope_examples::Example::new("task_leak").default_duration(Duration::from_secs(8)).run(|_ctx| async {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(stallscope_examples::requests(tx, REQUEST_EVERY, |id| id));
        serve(rx).await;
    });
}
