//! Async code does synchronous file I/O: it writes a 32 MiB snapshot with `std::fs`, fsyncs it
//! and reads it back to verify it, all on a runtime worker.
//!
//! A key-value service persists its state every 400 ms from an async task. Writing, `sync_all`
//! and reading back block the worker for tens of milliseconds (the write-back of 32 MiB to
//! disk dominates). Expected report: blocking-poll stalls in `persist_snapshot`, task spawned
//! in `main`'s `spawn(snapshotter(..))`.
//!
//! The file lives under `std::env::temp_dir()` with a unique name and is removed on exit.

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Size of one snapshot.
const SNAPSHOT_BYTES: usize = 32 << 20;
/// Time between two snapshots.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(400);

/// A file under the temp dir, removed when the last holder drops it.
struct TempFile(PathBuf);

impl TempFile {
    fn unique(prefix: &str) -> TempFile {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        TempFile(std::env::temp_dir().join(format!("{prefix}-{}-{nanos}.snapshot", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The culprit: blocking `std::fs` write + fsync + read-back, called from async code.
#[inline(never)]
fn persist_snapshot(path: &Path, state: &[u8]) -> std::io::Result<u64> {
    let mut file = File::options().read(true).write(true).create(true).truncate(true).open(path)?;
    file.write_all(black_box(state))?;
    file.sync_all()?;
    // Read it back to verify it, in 1 MiB chunks.
    file.seek(SeekFrom::Start(0))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut sum = 0u64;
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(u64::from(chunk[n - 1]));
    }
    black_box(());
    Ok(sum)
}

/// Persists the store's state periodically.
async fn snapshotter(file: Arc<TempFile>, state: Arc<Vec<u8>>) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = persist_snapshot(&file.0, &state) {
            eprintln!("blocking_file_io: snapshot to {} failed: {e}", file.0.display());
            return;
        }
    }
}

/// The store's request traffic: small async gets that suffer whenever a worker is blocked.
async fn traffic(state: Arc<Vec<u8>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut i = 0usize;
    loop {
        tick.tick().await;
        i = (i + 4099) % state.len();
        black_box(state[i]);
    }
}

fn main() {
    stallscope_examples::Example::new("blocking_file_io").run(|_ctx| async {
        let file = Arc::new(TempFile::unique("stallscope-blocking-file-io"));
        let state: Arc<Vec<u8>> = Arc::new((0..SNAPSHOT_BYTES).map(|i| (i * 7 + i / 4096) as u8).collect());
        // The tasks own the file: it is removed when the runtime drops them at shutdown.
        tokio::spawn(snapshotter(file, state.clone()));
        tokio::spawn(traffic(state));
        std::future::pending::<()>().await
    });
}
