//! Probe-side recording: the same updates a client receives, written to a file with a size
//! bound and rotation, with no client attached (`ProbeBuilder::record_to`, `STALLSCOPE_RECORD`).
//!
//! A subscriber thread, like a socket client: if the disk is slow it loses updates (counted in
//! the file as `Dropped` records), never the service's time. Files rotate at `record_max_bytes`:
//! `path` is the newest, `path.1` the one before, up to `path.<record_keep>`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stallscope_wire::recording::{rotate, Append, RecordingHeader, RecordingOptions, RecordingWriter};
use stallscope_wire::{Interval, Update};

use crate::probe::Probe;

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

pub(crate) fn start(probe: &Probe) -> Option<Recorder> {
    let path = probe.shared.config.record_to.clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let probe = probe.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("stallscope-recorder".into())
            .spawn(move || {
                let shared = probe.shared.clone();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&probe, path, &stop)));
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => shared.note_problem(format!("recording: {e}")),
                    Err(_) => {
                        shared.panics.fetch_add(1, Relaxed);
                    }
                }
            })
            .ok()
    };
    Some(Recorder { stop, thread })
}

fn run(probe: &Probe, path: PathBuf, stop: &AtomicBool) -> Result<(), String> {
    let shared = &probe.shared;
    let c = &shared.config;
    let sub = probe.subscribe(c.client_queue);
    let options = RecordingOptions::default().max_bytes(c.record_max_bytes);
    let open = |path: &PathBuf| {
        let header = RecordingHeader::new(crate::aggregator::process_info(shared), "stallscope-probe");
        RecordingWriter::create(path, &header, options).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let mut w = open(&path)?;
    // The file starts with the cumulative state, like a new client.
    if let Some(snap) = shared.latest.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        let first = Update::Tick {
            interval: Box::new(Interval { seq: snap.seq, ..Interval::default() }),
            snapshot: Box::new((*snap).clone()),
        };
        w.write_update(&first).map_err(|e| e.to_string())?;
    }
    let mut reported = 0;
    while !stop.load(Acquire) {
        let dropped = sub.dropped();
        if dropped > reported {
            let _ = w.write_dropped(dropped - reported);
            reported = dropped;
        }
        let Some(update) = sub.recv_timeout(Duration::from_millis(50)) else { continue };
        match w.write_update(&update).map_err(|e| e.to_string())? {
            Append::Written { .. } => {}
            Append::Full => {
                drop(w);
                rotate(&path, c.record_keep).map_err(|e| format!("cannot rotate {}: {e}", path.display()))?;
                w = open(&path)?;
                // A new file must read on its own: start it with a full tick.
                let update = match update {
                    Update::Tick { .. } => update,
                    _ => match shared.latest.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                        Some(s) => Update::Tick {
                            interval: Box::new(Interval { seq: s.seq, ..Interval::default() }),
                            snapshot: Box::new((*s).clone()),
                        },
                        None => update,
                    },
                };
                w.write_update(&update).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}
