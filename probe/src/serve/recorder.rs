//! Probe-side recording: the same updates a client receives, written to a file with a size
//! bound and rotation, with no client attached (`ProbeBuilder::record_to`, `STALLSCOPE_RECORD`).
//!
//! A subscriber thread, like a socket client: if the disk is slow it loses updates (counted in
//! the file as `Dropped` records), never the service's time. Files rotate at `record_max_bytes`:
//! `path` is the newest, `path.1` the one before, up to `path.<record_keep>`. A file already at
//! `path` (the previous run's) is rotated away on start, never truncated. A failed write (a full
//! disk) does not end the recording: updates are lost, counted (`drops.subscriber_updates`) and
//! said in `process.missing`, and every `RETRY` the recorder tries a fresh file, which starts
//! with a full tick and a `Dropped` record of what was lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stallscope_wire::fit::{fit, Attempt};
use stallscope_wire::recording::{rotate, Append, RecordingHeader, RecordingOptions, RecordingWriter};
use stallscope_wire::{Error, Update};

use crate::state::Shared;
use crate::threads::Role;

/// The recorder thread; dropping it stops and joins it (the file is flushed after every record).
pub(crate) struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn start(shared: &Arc<Shared>) -> Option<Recorder> {
    let path = shared.config.record_to.clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let s = shared.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(Role::Recorder.thread_name().into())
            .spawn(move || {
                if let Some(Err(e)) = s.threads.run(Role::Recorder, &s.panics, || run(&s, path, &stop)) {
                    s.note_problem(format!("recording: {e}"));
                }
            })
            .map_err(|_| shared.threads.not_spawned(Role::Recorder))
            .ok()
    };
    Some(Recorder { stop, thread })
}

/// How long the recorder waits after a failed write before it tries a fresh file.
const RETRY: Duration = Duration::from_secs(1);

/// Records `update`, trimmed to fit a record (`stallscope_wire::fit`) when it is too large;
/// what was trimmed is counted. An update that cannot be made to fit is lost, counted, and is
/// not a write error (the file is fine).
fn write_fitted<W: std::io::Write>(
    shared: &Shared,
    w: &mut RecordingWriter<W>,
    update: &Update,
) -> Result<Append, Error> {
    let r = fit(update, |u| match w.write_update(u) {
        // The writer reset its encoder: nothing of it reached the file.
        Err(Error::Oversized { len, limit }) => Ok(Attempt::TooLarge { len: Some(len), limit: Some(limit) }),
        Err(Error::TableFull { .. }) => Ok(Attempt::TooLarge { len: None, limit: None }),
        other => other.map(Attempt::Done),
    });
    match r {
        Ok((append, trimmed)) => {
            shared.publisher.losses.trimmed(trimmed);
            Ok(append)
        }
        Err(Error::Oversized { .. }) => {
            shared.publisher.losses.encode_failures.fetch_add(1, Relaxed);
            shared.publisher.subscriber_drops.fetch_add(1, Relaxed);
            Ok(Append::Written { bytes: 0 })
        }
        Err(e) => Err(e),
    }
}

fn run(shared: &Arc<Shared>, path: PathBuf, stop: &AtomicBool) -> Result<(), String> {
    let c = &shared.config;
    let sub = shared.publisher.subscribe(c.client_queue, c.client_queue_bytes);
    let options = RecordingOptions::default().max_bytes(c.record_max_bytes);
    // A fresh file, the one before it rotated away (never truncated: it may be the recording
    // of the previous run, wanted for the incident review). Only a regular file is rotated:
    // `/dev/null`, a FIFO or a device is written as it is.
    let fresh = |path: &PathBuf| -> Result<RecordingWriter<_>, String> {
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0) {
            rotate(path, c.record_keep).map_err(|e| format!("cannot rotate {}: {e}", path.display()))?;
        }
        let header = RecordingHeader::new(crate::aggregator::snapshot::process_info(shared), "stallscope-probe");
        let mut w = RecordingWriter::create(path, &header, options)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        // The file starts with the cumulative state, like a new client.
        if let Some(first) = shared.publisher.first_update() {
            write_fitted(shared, &mut w, &first).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(w)
    };
    let mut w = Some(fresh(&path)?);
    // Updates lost while the file could not be written (a full disk), and when to try again.
    let mut lost = 0u64;
    let mut retry_at = std::time::Instant::now();
    let mut reported = 0;
    while !stop.load(Acquire) {
        shared.threads.injection_point(Role::Recorder);
        let dropped = sub.dropped();
        if let (Some(w), true) = (w.as_mut(), dropped > reported) {
            let _ = w.write_dropped(dropped - reported);
            reported = dropped;
        }
        let Some(update) = sub.recv_shared(Duration::from_millis(50)) else { continue };
        if w.is_none() {
            if std::time::Instant::now() < retry_at {
                lost += 1;
                shared.publisher.subscriber_drops.fetch_add(1, Relaxed);
                continue;
            }
            // Try a fresh file: the disk may have room again, and the old file may end in a
            // partial record (readers skip it, naming its offset).
            match fresh(&path) {
                Ok(mut nw) => {
                    let _ = nw.write_dropped(lost + dropped.saturating_sub(reported));
                    reported = dropped;
                    shared.note_problem(format!(
                        "recording: resumed writing {} after losing {lost} updates",
                        path.display()
                    ));
                    lost = 0;
                    w = Some(nw);
                }
                Err(_) => {
                    retry_at = std::time::Instant::now() + RETRY;
                    lost += 1;
                    shared.publisher.subscriber_drops.fetch_add(1, Relaxed);
                    continue;
                }
            }
        }
        let Some(writer) = w.as_mut() else { continue };
        let written = match write_fitted(shared, writer, &update) {
            Ok(Append::Written { .. }) => Ok(()),
            Ok(Append::Full) => {
                // A new file must read on its own: start it with a full tick (`fresh`), then
                // this update unless it was a tick (the full one replaces it).
                w = None;
                fresh(&path).and_then(|mut nw| {
                    if !matches!(*update, Update::Tick { .. }) {
                        write_fitted(shared, &mut nw, &update).map_err(|e| e.to_string())?;
                    }
                    w = Some(nw);
                    Ok(())
                })
            }
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
        };
        if let Err(e) = written {
            // Not the end of the recording: lose updates (counted) and try a fresh file later.
            shared
                .note_problem(format!("recording: {e}; retrying every {}s, lost updates are counted", RETRY.as_secs()));
            w = None;
            lost += 1;
            shared.publisher.subscriber_drops.fetch_add(1, Relaxed);
            retry_at = std::time::Instant::now() + RETRY;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use stallscope_wire::intern::Received;
    use stallscope_wire::recording::RecordingReader;
    use stallscope_wire::Update;

    /// P7 defect 4 for the recorder: an update above the frame limit failed to write, was taken
    /// for a disk error, and the recorder dropped the file for a fresh one every second. It is
    /// now trimmed to fit and recorded, what was trimmed counted.
    #[test]
    fn an_update_larger_than_a_record_is_trimmed_and_recorded() {
        let dir = std::env::temp_dir().join(format!("stallscope-rec-oversized-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.stsc");
        let probe =
            crate::Probe::builder().server(false).record_to(&path).client_queue_bytes(256 << 20).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = probe.start(rt.handle());
        let seq = 1_000_000;
        probe.shared.publisher.publish(crate::serve::testing::oversized_tick(seq));
        let losses = &probe.shared.publisher.losses;
        let deadline = Instant::now() + Duration::from_secs(30);
        while losses.trimmed_stalls.load(super::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(guard);
        let problems = probe.shared.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "{problems:?}");
        let rec = RecordingReader::open(&path).unwrap().read_all();
        let got = rec.events.iter().find_map(|e| match &e.event {
            Received::Update(Update::Tick { snapshot, .. }) if snapshot.seq == seq => Some(snapshot.clone()),
            _ => None,
        });
        let got = got.expect("the large tick is not in the recording");
        assert_eq!(got.stalls.last().map(|s| s.id), Some(2015));
        assert!(got.stalls[0].id >= 16);
        assert!(losses.trimmed_stalls.load(super::Relaxed) >= 16);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
