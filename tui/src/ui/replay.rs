//! Replay: a recording played into the same [`App`] the live UI uses, on a timeline with play,
//! pause, speed and seek. Every view therefore works on a recording exactly as it does live.
//!
//! Each recorded event gets a data time (a tick's snapshot time, a stall's start plus what was
//! seen of it), made non-decreasing. Seeking forward applies events up to the new time; seeking
//! back rebuilds the data from the start (keeping the views' own state), which is fast because
//! applying an event is cheap.

use std::path::Path;

use stallscope_wire::recording::{Recording, RecordingReader};
use stallscope_wire::{Received, Update};

use super::state::{App, Timeline};

/// A loaded recording and where playback is in it.
#[derive(Debug)]
pub struct Replay {
    events: Vec<(u64, Received)>,
    /// Events applied to the app so far.
    applied: usize,
    /// What was damaged or lost in the file, one line each (shown to the user).
    pub damage: Vec<String>,
}

impl Replay {
    /// Reads the whole recording. A damaged file replays what could be read; `damage` says what
    /// was skipped. Fails only if the file cannot be opened or has no valid header.
    pub fn open(path: &Path) -> Result<Replay, stallscope_wire::Error> {
        Ok(Replay::from_recording(RecordingReader::open(path)?.read_all()))
    }

    /// From a recording already read.
    pub fn from_recording(rec: Recording) -> Replay {
        let mut damage: Vec<String> =
            rec.skipped.iter().map(|s| format!("skipped bytes {}..{}: {}", s.start, s.end, s.reason)).collect();
        if let Some(stop) = &rec.stop {
            damage.push(format!("stopped reading at byte {}: {}", stop.offset, stop.reason));
        }
        // Events before the first one with a time of its own take that first time.
        let mut t = rec.events.iter().find_map(|e| data_time(&e.event)).unwrap_or(rec.header.created_unix_ms);
        let events = rec
            .events
            .into_iter()
            .map(|e| {
                t = t.max(data_time(&e.event).unwrap_or(t));
                (t, e.event)
            })
            .collect();
        Replay { events, applied: 0, damage }
    }

    /// Events in the recording.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the recording holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Sets up `app`'s timeline at the start of the recording, playing at real time, with the
    /// first update applied so the screen is not empty.
    pub fn start(&mut self, app: &mut App) {
        let start = self.events.first().map_or(0, |e| e.0);
        let end = self.events.last().map_or(start, |e| e.0);
        app.timeline =
            Some(Timeline { start_unix_ms: start, end_unix_ms: end, at_unix_ms: start, playing: true, speed: 1.0 });
        self.apply_until(app, start);
    }

    /// Advances playback by `elapsed_ms` of wall time (times the speed) if playing. Returns
    /// whether anything changed on screen.
    pub fn advance(&mut self, app: &mut App, elapsed_ms: f64) -> bool {
        let Some(t) = app.timeline else { return false };
        if !t.playing {
            return false;
        }
        let to = ((t.at_unix_ms as f64) + elapsed_ms * t.speed).min(t.end_unix_ms as f64) as u64;
        self.seek(app, to.max(t.at_unix_ms));
        if to >= t.end_unix_ms {
            if let Some(t) = &mut app.timeline {
                t.playing = false;
            }
        }
        true
    }

    /// Moves playback to data time `to`.
    pub fn seek(&mut self, app: &mut App, to: u64) {
        let Some(t) = app.timeline else { return };
        let to = to.clamp(t.start_unix_ms, t.end_unix_ms);
        if to < t.at_unix_ms {
            app.reset_data();
            self.applied = 0;
        }
        self.apply_until(app, to);
        if let Some(t) = &mut app.timeline {
            t.at_unix_ms = to;
        }
    }

    fn apply_until(&mut self, app: &mut App, to: u64) {
        while let Some((at, r)) = self.events.get(self.applied) {
            if *at > to {
                break;
            }
            app.apply(r.clone());
            self.applied += 1;
        }
    }
}

/// When an event happened, from its content.
fn data_time(r: &Received) -> Option<u64> {
    match r {
        Received::Update(Update::Tick { snapshot, .. }) => Some(snapshot.at_unix_ms),
        Received::Update(Update::StallStarted(s)) | Received::Update(Update::StallEnded(s)) => Some(s.end_unix_ms()),
        _ => None,
    }
}
