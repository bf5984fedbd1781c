//! A request handler calls `std::thread::sleep` inside async code.
//!
//! Each request reloads a config file from a (simulated) slow source with a blocking call,
//! so every handler holds its worker thread for ~50 ms and every other task queued on that
//! worker waits. Expected report: blocking-poll stalls of ~50 ms in `load_config_blocking`,
//! task spawned in `serve`.

use std::hint::black_box;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long the "config server" takes to answer.
const CONFIG_FETCH: Duration = Duration::from_millis(50);
/// Tenants the requests come from.
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// Time between two requests.
const REQUEST_EVERY: Duration = Duration::from_millis(150);

#[derive(Debug)]
struct Request {
    id: u64,
    tenant: &'static str,
}

#[derive(Debug)]
struct Config {
    tenant: &'static str,
    rate_limit: u32,
}

/// The culprit: a blocking sleep standing in for a synchronous fetch, called from async code.
#[inline(never)]
fn load_config_blocking(tenant: &'static str) -> Config {
    std::thread::sleep(black_box(CONFIG_FETCH));
    black_box(());
    Config { tenant, rate_limit: 100 + tenant.len() as u32 }
}

async fn handle(req: Request) -> String {
    let config = load_config_blocking(req.tenant);
    // The rest of the handler is properly async.
    tokio::time::sleep(Duration::from_millis(2)).await;
    format!("request {} for {}: limit {}", req.id, config.tenant, config.rate_limit)
}

/// Accept loop: one handler task per request.
async fn serve(mut requests: mpsc::Receiver<Request>) {
    while let Some(req) = requests.recv().await {
        tokio::spawn(async move {
            black_box(handle(req).await);
        });
    }
}

fn main() {
    stallscope_examples::Example::new("sleep_in_async").run(|_ctx| async {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(stallscope_examples::requests(tx, REQUEST_EVERY, |id| Request {
            id,
            tenant: TENANTS[id as usize % TENANTS.len()],
        }));
        serve(rx).await;
    });
}
