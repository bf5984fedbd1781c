//! A request handler runs a CPU-bound loop without yielding.
//!
//! An upload endpoint verifies each payload by hashing it over and over ("key stretching")
//! for ~50 ms, calibrated by time so it lasts that long on any machine. The loop never
//! awaits, so the worker runs nothing else meanwhile. Expected report: blocking-poll stalls of
//! ~50 ms in `checksum_payload`, task spawned in `serve`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// CPU time each upload is checked for.
const CHECK_BUDGET: Duration = Duration::from_millis(50);
/// Time between two uploads.
const UPLOAD_EVERY: Duration = Duration::from_millis(150);

struct Upload {
    id: u64,
    payload: Vec<u8>,
}

/// The culprit: hashes `payload` round after round until `budget` has passed, never yielding.
#[inline(never)]
fn checksum_payload(payload: &[u8], budget: Duration) -> u64 {
    let start = Instant::now();
    let budget = black_box(budget);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a offset basis
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        for &b in black_box(payload) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash = black_box(hash.rotate_left(17) ^ rounds);
        rounds += 1;
    }
    black_box(());
    hash
}

async fn handle(upload: Upload) -> String {
    let sum = checksum_payload(&upload.payload, CHECK_BUDGET);
    // Storing the upload is properly async.
    tokio::time::sleep(Duration::from_millis(2)).await;
    format!("upload {} ({} bytes): checksum {sum:016x}", upload.id, upload.payload.len())
}

/// Accept loop: one handler task per upload.
async fn serve(mut uploads: mpsc::Receiver<Upload>) {
    while let Some(upload) = uploads.recv().await {
        tokio::spawn(async move {
            black_box(handle(upload).await);
        });
    }
}

fn main() {
    stallscope_examples::Example::new("cpu_loop").run(|_ctx| async {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(stallscope_examples::requests(tx, UPLOAD_EVERY, |id| Upload {
            id,
            payload: (0..4096u64).map(|i| (i.wrapping_mul(31) ^ id) as u8).collect(),
        }));
        serve(rx).await;
    });
}
