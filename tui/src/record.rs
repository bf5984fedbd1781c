//! `stallscope record`: everything a connection receives, into a recording file.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stallscope_wire::recording::{Append, RecordingHeader, RecordingWriter};
use stallscope_wire::Received;

use crate::conn::{ConnError, Connection};
use crate::timefmt::fmt_ns;
use stallscope_wire::model::Model;

/// Why recording stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ended {
    /// The requested duration passed.
    Duration,
    /// The stop flag was raised (Ctrl-C).
    Interrupted,
    /// The file reached its size bound.
    Full,
    /// The connection ended or failed; what was received is in the file.
    Connection(ConnError),
}

/// What a recording session did.
#[derive(Debug)]
pub struct Outcome {
    /// Why it stopped.
    pub ended: Ended,
    /// Updates received and written.
    pub updates: u64,
    /// Ticks among them.
    pub ticks: u64,
    /// Distinct stalls seen.
    pub stalls: usize,
    /// Updates the probe dropped for this client.
    pub dropped: u64,
    /// Error messages from the probe.
    pub errors: u64,
    /// Bytes in the file, header included.
    pub bytes: u64,
    /// How long it recorded.
    pub elapsed: Duration,
}

impl Outcome {
    /// The summary printed at the end.
    pub fn summary(&self, process: &str, file: &str) -> String {
        let mut o = String::new();
        let why = match &self.ended {
            Ended::Duration => "",
            Ended::Interrupted => " (interrupted)",
            Ended::Full => " (stopped at the size bound)",
            Ended::Connection(_) => " (the connection ended)",
        };
        let _ = writeln!(o, "recorded {} from {process} into {file}{why}", fmt_ns(self.elapsed.as_nanos() as u64));
        let _ = writeln!(o, "  updates  {} ({} ticks)", self.updates, self.ticks);
        let _ = writeln!(o, "  stalls   {} seen", self.stalls);
        let _ = writeln!(o, "  dropped  {} updates", self.dropped);
        if self.errors > 0 {
            let _ = writeln!(o, "  errors   {} from the probe", self.errors);
        }
        let _ = writeln!(o, "  bytes    {}", self.bytes);
        o
    }
}

/// The header of a recording made from `conn`.
pub fn header_for(conn: &Connection) -> RecordingHeader {
    RecordingHeader::new(conn.process().clone(), format!("stallscope {}", env!("CARGO_PKG_VERSION")))
}

/// Receives from `conn` into `writer` until `duration` passes (forever with `None`), `stop` is
/// raised, the file is full or the connection ends. Only a failed write is an error; a
/// connection that ends is reported in [`Outcome::ended`]. Every record is flushed as it is
/// written, so the file is valid whenever this returns or is interrupted.
pub fn record<W: Write>(
    conn: &mut Connection,
    writer: &mut RecordingWriter<W>,
    duration: Option<Duration>,
    stop: &AtomicBool,
) -> Result<Outcome, stallscope_wire::Error> {
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut folder = Model::new(header_for(conn));
    let mut ticks = 0u64;
    let mut errors = 0u64;
    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break Ended::Interrupted;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Ended::Duration;
        }
        match conn.recv() {
            Ok(None) => continue,
            Ok(Some(received)) => {
                // A recording keeps the probe's stream; a task dump answers a request.
                if matches!(received, Received::TaskDump(_)) {
                    continue;
                }
                match &received {
                    Received::Update(stallscope_wire::Update::Tick { .. }) => ticks += 1,
                    Received::Error { .. } => errors += 1,
                    _ => {}
                }
                folder.push(&received);
                if writer.write_received(&received)? == Append::Full {
                    break Ended::Full;
                }
            }
            Err(e) => break Ended::Connection(e),
        }
    };
    Ok(Outcome {
        ended,
        updates: folder.updates(),
        ticks,
        stalls: folder.stall_count(),
        dropped: folder.dropped_intervals(),
        errors,
        bytes: writer.bytes_written(),
        elapsed: started.elapsed(),
    })
}
