//! The recording file format: a versioned header, then the same message payloads as on a
//! connection, each in a self-checking record.
//!
//! ```text
//! header   "STSCREC" format:u16le  major:u16le minor:u16le  created_unix_ms:u64le
//!          body_len:u32le  body_crc32:u32le  body (codec: process info, writer)
//! record   sync "\xFFSRC"  len:u32le  crc32:u32le  payload (len bytes: a ServerMessage)
//! record   ...
//! ```
//!
//! A record's CRC32 covers its 4 length bytes and its payload. The sync marker and the checksum
//! let [`RecordingReader`] step over damage: after a bad record it scans forward for the next
//! marker that starts a record whose checksum holds, reports the bytes it skipped, and carries
//! on. A file that ends in the middle of a record (the recorder was killed) reads up to the last
//! whole record and reports where it stopped.
//!
//! The writer forgets its intern tables every [`RecordingOptions::keyframe_every`] records, so
//! updates can be decoded again soon after damage (an update that refers to definitions lost in
//! a skipped region cannot be rebuilt and is counted in [`RecordingReader::lost`]).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Peer, Result};
use crate::frame::MAX_FRAME_BYTES;
use crate::intern::{Decoder, Encoder, Received};
use crate::proto::{ProtocolVersion, ServerMessage};
use crate::{ProcessInfo, Update};

/// First bytes of a recording.
pub const RECORDING_MAGIC: [u8; 7] = *b"STSCREC";
/// Format version written and read by this build.
pub const RECORDING_FORMAT_VERSION: u16 = 1;
/// Marker at the start of every record.
pub const RECORD_SYNC: [u8; 4] = [0xFF, b'S', b'R', b'C'];
/// Bytes before a record's payload: sync, length, checksum.
pub const RECORD_HEADER_BYTES: usize = 12;
/// Default size bound of one recording file: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default number of records between two self-contained (reset) updates.
pub const DEFAULT_KEYFRAME_EVERY: u32 = 100;

/// Fixed part of the file header: magic, format, protocol version, creation time, body length
/// and checksum.
const FILE_HEADER_FIXED: usize = 7 + 2 + 2 + 2 + 8 + 4 + 4;

// === Header ===

/// What a recording's header says.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingHeader {
    /// Protocol version of the recorded messages.
    pub protocol: ProtocolVersion,
    /// When the file was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The recorded process.
    pub process: ProcessInfo,
    /// The program that wrote the file, e.g. `stallscope-probe 0.1.0`.
    pub writer: String,
}

#[derive(Serialize, Deserialize)]
struct HeaderBody {
    process: ProcessInfo,
    writer: String,
}

impl RecordingHeader {
    /// A header for a file created now, at [`ProtocolVersion::CURRENT`].
    pub fn new(process: ProcessInfo, writer: impl Into<String>) -> RecordingHeader {
        let created_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        RecordingHeader { protocol: ProtocolVersion::CURRENT, created_unix_ms, process, writer: writer.into() }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let body = codec::encode(&HeaderBody { process: self.process.clone(), writer: self.writer.clone() })?;
        let mut out = Vec::with_capacity(FILE_HEADER_FIXED + body.len());
        out.extend_from_slice(&RECORDING_MAGIC);
        out.extend_from_slice(&RECORDING_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.protocol.major.to_le_bytes());
        out.extend_from_slice(&self.protocol.minor.to_le_bytes());
        out.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

// === Writer ===

/// Options of a [`RecordingWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordingOptions {
    /// Size bound of the file, header included ([`DEFAULT_MAX_BYTES`]). A record that would
    /// cross it is not written: the writer reports [`Append::Full`] and the caller rotates.
    pub max_bytes: u64,
    /// Records between two self-contained updates ([`DEFAULT_KEYFRAME_EVERY`]); 0 means every
    /// update is self-contained.
    pub keyframe_every: u32,
}

impl Default for RecordingOptions {
    fn default() -> Self {
        RecordingOptions { max_bytes: DEFAULT_MAX_BYTES, keyframe_every: DEFAULT_KEYFRAME_EVERY }
    }
}

impl RecordingOptions {
    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`keyframe_every`](Self::keyframe_every).
    pub fn keyframe_every(mut self, records: u32) -> Self {
        self.keyframe_every = records;
        self
    }
}

/// Outcome of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Append {
    /// The record was written and flushed.
    Written {
        /// Bytes it took in the file.
        bytes: u64,
    },
    /// The file reached its size bound: nothing was written, and nothing more will be. Rotate
    /// (see [`rotate`]) and write the update to a new writer.
    Full,
}

/// Writes a recording: header, then one record per message, flushed after each record.
///
/// It owns an [`Encoder`], so it takes plain [`Update`]s; each file starts from empty intern
/// tables, so every file of a rotation reads on its own.
#[derive(Debug)]
pub struct RecordingWriter<W: Write> {
    w: W,
    encoder: Encoder,
    options: RecordingOptions,
    written: u64,
    records: u64,
    since_keyframe: u32,
    full: bool,
}

impl RecordingWriter<BufWriter<File>> {
    /// Creates (or truncates) the file at `path` and writes the header.
    pub fn create(path: impl AsRef<Path>, header: &RecordingHeader, options: RecordingOptions) -> Result<Self> {
        Self::new(BufWriter::new(File::create(path)?), header, options)
    }
}

impl<W: Write> RecordingWriter<W> {
    /// Writes the header to `w`.
    pub fn new(mut w: W, header: &RecordingHeader, options: RecordingOptions) -> Result<Self> {
        let bytes = header.to_bytes()?;
        w.write_all(&bytes)?;
        w.flush()?;
        Ok(RecordingWriter {
            w,
            encoder: Encoder::new(),
            options,
            written: bytes.len() as u64,
            records: 0,
            since_keyframe: 0,
            full: false,
        })
    }

    /// Records an update.
    pub fn write_update(&mut self, update: &Update) -> Result<Append> {
        if self.full {
            return Ok(Append::Full);
        }
        if self.since_keyframe >= self.options.keyframe_every {
            self.encoder.reset();
        }
        let message = match self.encoder.encode(update) {
            Ok(m) => m,
            Err(e) => {
                self.encoder.reset();
                return Err(e);
            }
        };
        let keyframe = matches!(&message, ServerMessage::Update(i) if i.reset);
        let append = self.write_message(&message);
        match append {
            Ok(Append::Written { .. }) => {
                self.since_keyframe = if keyframe { 1 } else { self.since_keyframe + 1 };
            }
            // The definitions in `message` never reached the file.
            Ok(Append::Full) | Err(_) => self.encoder.reset(),
        }
        append
    }

    /// Records that `intervals` updates were lost before reaching the recorder.
    pub fn write_dropped(&mut self, intervals: u64) -> Result<Append> {
        self.write_message(&ServerMessage::Dropped { intervals })
    }

    /// Records what a client received: updates, drops and errors. A task dump reply answers one
    /// client's request and is not part of the probe's stream: it is not recorded (this returns
    /// `Written { bytes: 0 }`).
    pub fn write_received(&mut self, received: &Received) -> Result<Append> {
        match received {
            Received::Update(u) => self.write_update(u),
            Received::Dropped { intervals } => self.write_dropped(*intervals),
            Received::Error { message } => self.write_message(&ServerMessage::Error { message: message.clone() }),
            Received::TaskDump(_) => Ok(if self.full { Append::Full } else { Append::Written { bytes: 0 } }),
        }
    }

    fn write_message(&mut self, message: &ServerMessage) -> Result<Append> {
        if self.full {
            return Ok(Append::Full);
        }
        let payload = message.to_payload()?;
        if payload.len() > MAX_FRAME_BYTES {
            return Err(Error::Oversized { len: payload.len() as u64, limit: MAX_FRAME_BYTES as u64 });
        }
        let bytes = (RECORD_HEADER_BYTES + payload.len()) as u64;
        // The first record always goes in, so one large update cannot make every file "full".
        if self.records > 0 && self.written.saturating_add(bytes) > self.options.max_bytes {
            self.full = true;
            return Ok(Append::Full);
        }
        let len = (payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(&payload);
        let mut record = Vec::with_capacity(bytes as usize);
        record.extend_from_slice(&RECORD_SYNC);
        record.extend_from_slice(&len);
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.extend_from_slice(&payload);
        self.w.write_all(&record)?;
        self.w.flush()?;
        self.written += bytes;
        self.records += 1;
        Ok(Append::Written { bytes })
    }

    /// Bytes in the file so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the size bound was reached.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// The name of rotation `n` of `path`: `path` itself for 0, else `path` with `.n` appended
/// (`run.stsc` → `run.stsc.1`, `run.stsc.2`, ...; a higher number is older).
///
/// ```
/// use std::path::Path;
/// use stallscope_wire::recording::rotated_path;
/// assert_eq!(rotated_path(Path::new("/tmp/run.stsc"), 2), Path::new("/tmp/run.stsc.2"));
/// ```
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts the rotations of `path` to make room for a new file: `name.{keep-1}` → `name.{keep}`
/// (the old `name.{keep}` is replaced), ..., `name` → `name.1`. With `keep == 0`, `name` is
/// removed. Missing files are skipped.
pub fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return remove_if_exists(path);
    }
    for n in (0..keep).rev() {
        let from = rotated_path(path, n);
        match std::fs::rename(&from, rotated_path(path, n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// === Reader ===

/// What was wrong with the bytes at some offset of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// No record marker where a record should start.
    BadSync,
    /// A record announcing more than [`MAX_FRAME_BYTES`].
    Oversized {
        /// Announced payload length.
        len: u64,
    },
    /// The file ends inside a record.
    Truncated {
        /// Bytes missing to complete it.
        missing: u64,
    },
    /// A record whose checksum does not match its bytes.
    BadChecksum,
    /// An intact record that does not decode as a message (or refers to definitions that
    /// were never recorded).
    Undecodable {
        /// The decoder's error.
        reason: String,
    },
    /// Reading the file failed.
    Io {
        /// The I/O error.
        message: String,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::BadSync => write!(f, "no record marker"),
            Damage::Oversized { len } => write!(f, "record announces {len} bytes (limit {MAX_FRAME_BYTES})"),
            Damage::Truncated { missing } => write!(f, "truncated record: {missing} bytes missing"),
            Damage::BadChecksum => write!(f, "record checksum mismatch"),
            Damage::Undecodable { reason } => write!(f, "record does not decode: {reason}"),
            Damage::Io { message } => write!(f, "read error: {message}"),
        }
    }
}

/// A damaged region the reader stepped over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Offset of the first skipped byte.
    pub start: u64,
    /// Offset just past the last skipped byte (where reading resumed).
    pub end: u64,
    /// What was wrong at `start`.
    pub reason: Damage,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped bytes {}..{} ({} bytes): {}", self.start, self.end, self.end - self.start, self.reason)
    }
}

/// Where and why reading stopped before the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// Offset of the first byte not read as a valid record.
    pub offset: u64,
    /// What was wrong there.
    pub reason: Damage,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recording stops at byte {}: {}", self.offset, self.reason)
    }
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// Offset of the record in the file.
    pub offset: u64,
    /// What it holds.
    pub event: Received,
}

/// Everything [`RecordingReader::read_all`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// The header.
    pub header: RecordingHeader,
    /// Every decoded record, in file order.
    pub events: Vec<Recorded>,
    /// Damaged regions stepped over.
    pub skipped: Vec<Skipped>,
    /// Where reading stopped early, if it did.
    pub stop: Option<Stop>,
    /// Intact updates that could not be rebuilt because definitions they need were lost.
    pub lost: u64,
}

/// Reads a recording, stepping over damage. See the [module docs](self).
///
/// Iterating yields each decodable record; afterwards [`skipped`](Self::skipped),
/// [`stopped_at`](Self::stopped_at) and [`lost`](Self::lost) tell what could not be read.
#[derive(Debug)]
pub struct RecordingReader<R> {
    src: R,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// Index in `buf` of the next unread byte.
    pos: usize,
    eof: bool,
    done: bool,
    header: RecordingHeader,
    decoder: Decoder,
    /// Updates cannot be rebuilt until the next message with `reset`.
    need_keyframe: bool,
    skips_seen: usize,
    skipped: Vec<Skipped>,
    stop: Option<Stop>,
    lost: u64,
}

enum Check {
    /// A valid record with this payload length.
    Valid(usize),
    /// Clean end of file.
    End,
    Bad(Damage),
}

const READ_CHUNK: usize = 64 * 1024;

impl RecordingReader<BufReader<File>> {
    /// Opens the file at `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(BufReader::new(File::open(path)?))
    }
}

impl<R: Read> RecordingReader<R> {
    /// Reads and checks the header.
    ///
    /// Errors: [`Error::BadMagic`] (not a recording), [`Error::FormatVersion`],
    /// [`Error::Version`] (messages of another protocol major), [`Error::Truncated`],
    /// [`Error::Payload`] (damaged header), [`Error::Io`]. Damage after the header is never an
    /// error: it is reported by [`skipped`](Self::skipped) and [`stopped_at`](Self::stopped_at).
    pub fn new(src: R) -> Result<Self> {
        let mut r = RecordingReader {
            src,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            eof: false,
            done: false,
            header: RecordingHeader {
                protocol: ProtocolVersion::CURRENT,
                created_unix_ms: 0,
                process: ProcessInfo::default(),
                writer: String::new(),
            },
            decoder: Decoder::new(),
            need_keyframe: false,
            skips_seen: 0,
            skipped: Vec::new(),
            stop: None,
            lost: 0,
        };
        r.header = r.read_header()?;
        Ok(r)
    }

    fn read_header(&mut self) -> Result<RecordingHeader> {
        let have = self.fill(FILE_HEADER_FIXED)?;
        let b = &self.buf[..have.min(FILE_HEADER_FIXED)];
        let magic = &b[..b.len().min(RECORDING_MAGIC.len())];
        if magic != RECORDING_MAGIC {
            return Err(Error::BadMagic { expected: &RECORDING_MAGIC, found: magic.to_vec() });
        }
        if have < FILE_HEADER_FIXED {
            return Err(Error::Truncated { missing: (FILE_HEADER_FIXED - have) as u64 });
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let format = u16_at(7);
        if format != RECORDING_FORMAT_VERSION {
            return Err(Error::FormatVersion { ours: RECORDING_FORMAT_VERSION, theirs: format });
        }
        let protocol = ProtocolVersion { major: u16_at(9), minor: u16_at(11) };
        if !ProtocolVersion::CURRENT.is_compatible(protocol) {
            return Err(Error::Version { ours: ProtocolVersion::CURRENT, theirs: protocol, peer: Peer::Recording });
        }
        let mut created = [0u8; 8];
        created.copy_from_slice(&b[13..21]);
        let created_unix_ms = u64::from_le_bytes(created);
        let body_len = u32_at(21) as usize;
        let crc = u32_at(25);
        if body_len > MAX_FRAME_BYTES {
            return Err(Error::Oversized { len: body_len as u64, limit: MAX_FRAME_BYTES as u64 });
        }
        let have = self.fill(FILE_HEADER_FIXED + body_len)?;
        if have < FILE_HEADER_FIXED + body_len {
            return Err(Error::Truncated { missing: (FILE_HEADER_FIXED + body_len - have) as u64 });
        }
        let body = &self.buf[FILE_HEADER_FIXED..FILE_HEADER_FIXED + body_len];
        if crc32fast::hash(body) != crc {
            return Err(Error::Payload { reason: "recording header checksum mismatch".into() });
        }
        let body: HeaderBody = codec::decode(body)?;
        self.pos = FILE_HEADER_FIXED + body_len;
        Ok(RecordingHeader { protocol, created_unix_ms, process: body.process, writer: body.writer })
    }

    /// The file's header.
    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// Damaged regions stepped over so far.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Where reading stopped before the end of the file (offset and reason), once it has.
    pub fn stopped_at(&self) -> Option<(u64, &Damage)> {
        self.stop.as_ref().map(|s| (s.offset, &s.reason))
    }

    /// The same as [`stopped_at`](Self::stopped_at), as a displayable value.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Intact updates that could not be rebuilt because definitions they need were in a
    /// damaged region (they are skipped until the next self-contained update).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Reads to the end.
    pub fn read_all(mut self) -> Recording {
        let events = self.by_ref().collect();
        Recording { header: self.header, events, skipped: self.skipped, stop: self.stop, lost: self.lost }
    }

    /// The next decodable record (`None` at the end or where reading stopped).
    pub fn next_event(&mut self) -> Option<Recorded> {
        loop {
            let (offset, payload) = self.next_payload()?;
            if self.skipped.len() != self.skips_seen {
                self.skips_seen = self.skipped.len();
                self.need_keyframe = true;
                self.decoder.clear();
            }
            let end = offset + (RECORD_HEADER_BYTES + payload.len()) as u64;
            let message = match ServerMessage::from_payload(&payload) {
                Ok(m) => m,
                Err(e) => {
                    self.undecodable(offset, end, e);
                    continue;
                }
            };
            let is_update = matches!(message, ServerMessage::Update(_));
            if let ServerMessage::Update(i) = &message {
                if self.need_keyframe && !i.reset {
                    self.lost += 1;
                    continue;
                }
            }
            match self.decoder.decode(message) {
                Ok(event) => {
                    if is_update {
                        self.need_keyframe = false;
                    }
                    return Some(Recorded { offset, event });
                }
                Err(e) => self.undecodable(offset, end, e),
            }
        }
    }

    fn undecodable(&mut self, start: u64, end: u64, e: Error) {
        self.skipped.push(Skipped { start, end, reason: Damage::Undecodable { reason: e.to_string() } });
        self.skips_seen = self.skipped.len();
        self.need_keyframe = true;
        self.decoder.clear();
    }

    /// The next intact record: its offset and payload (an encoded [`ServerMessage`]).
    pub fn next_payload(&mut self) -> Option<(u64, Vec<u8>)> {
        loop {
            if self.done || self.stop.is_some() {
                return None;
            }
            let offset = self.offset();
            match self.check(0) {
                Ok(Check::Valid(len)) => {
                    let start = self.pos + RECORD_HEADER_BYTES;
                    let payload = self.buf[start..start + len].to_vec();
                    self.pos = start + len;
                    return Some((offset, payload));
                }
                Ok(Check::End) => {
                    self.done = true;
                    return None;
                }
                Ok(Check::Bad(damage)) => match self.resync() {
                    Ok(true) => {
                        self.skipped.push(Skipped { start: offset, end: self.offset(), reason: damage });
                    }
                    Ok(false) => self.stop = Some(Stop { offset, reason: damage }),
                    Err(e) => self.stop = Some(Stop { offset, reason: Damage::Io { message: e.to_string() } }),
                },
                Err(e) => self.stop = Some(Stop { offset, reason: Damage::Io { message: e.to_string() } }),
            }
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Makes at least `n` bytes available from `pos` if the file has them; returns how many are.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        while self.buf.len() - self.pos < n && !self.eof {
            if self.pos >= READ_CHUNK && self.pos >= self.buf.len() / 2 {
                self.buf.drain(..self.pos);
                self.base += self.pos as u64;
                self.pos = 0;
            }
            let old = self.buf.len();
            // At most a MiB at a time: the buffer grows with the bytes the file really has,
            // never to what a (possibly corrupt) record length claims (tests/fuzz.rs measures it).
            let want = (n - (old - self.pos)).clamp(READ_CHUNK, 1 << 20);
            self.buf.resize(old + want, 0);
            let read = loop {
                match self.src.read(&mut self.buf[old..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match read {
                Ok(0) => {
                    self.buf.truncate(old);
                    self.eof = true;
                }
                Ok(k) => self.buf.truncate(old + k),
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
        Ok((self.buf.len() - self.pos).min(n))
    }

    /// Examines the record that would start `at` bytes after `pos`.
    fn check(&mut self, at: usize) -> io::Result<Check> {
        let have = self.fill(at + RECORD_HEADER_BYTES)?;
        if have <= at {
            return Ok(Check::End);
        }
        let s = self.pos + at;
        let avail = have - at;
        let sync_len = avail.min(RECORD_SYNC.len());
        if self.buf[s..s + sync_len] != RECORD_SYNC[..sync_len] {
            return Ok(Check::Bad(Damage::BadSync));
        }
        if avail < RECORD_HEADER_BYTES {
            return Ok(Check::Bad(Damage::Truncated { missing: (RECORD_HEADER_BYTES - avail) as u64 }));
        }
        let word = |i: usize| u32::from_le_bytes([self.buf[i], self.buf[i + 1], self.buf[i + 2], self.buf[i + 3]]);
        let len = word(s + 4) as usize;
        let crc = word(s + 8);
        if len > MAX_FRAME_BYTES {
            return Ok(Check::Bad(Damage::Oversized { len: len as u64 }));
        }
        let need = at + RECORD_HEADER_BYTES + len;
        let have = self.fill(need)?;
        if have < need {
            return Ok(Check::Bad(Damage::Truncated { missing: (need - have) as u64 }));
        }
        // `fill` may have moved the buffer: recompute the start.
        let s = self.pos + at;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.buf[s + 4..s + 8]);
        hasher.update(&self.buf[s + RECORD_HEADER_BYTES..s + RECORD_HEADER_BYTES + len]);
        if hasher.finalize() != crc {
            return Ok(Check::Bad(Damage::BadChecksum));
        }
        Ok(Check::Valid(len))
    }

    /// After damage at `pos`: moves `pos` to the next valid record and returns true, or returns
    /// false if there is none before the end of the file.
    fn resync(&mut self) -> io::Result<bool> {
        let mut from = 1;
        loop {
            let have = self.fill(from + RECORD_SYNC.len())?;
            if have < from + RECORD_SYNC.len() {
                return Ok(false);
            }
            let window = &self.buf[self.pos + from..];
            match window.windows(RECORD_SYNC.len()).position(|w| w == RECORD_SYNC) {
                Some(i) => {
                    let at = from + i;
                    if let Check::Valid(_) = self.check(at)? {
                        self.pos += at;
                        return Ok(true);
                    }
                    from = at + 1;
                }
                None => {
                    // Keep the last bytes, which may hold the start of a marker, and drop the
                    // rest: skipped bytes need not stay in memory.
                    let keep_from = window.len().saturating_sub(RECORD_SYNC.len() - 1);
                    self.pos += from + keep_from;
                    from = 0;
                    if self.eof {
                        return Ok(false);
                    }
                    let have = self.buf.len() - self.pos;
                    if self.fill(have + 1)? <= have {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

impl<R: Read> Iterator for RecordingReader<R> {
    type Item = Recorded;

    fn next(&mut self) -> Option<Recorded> {
        self.next_event()
    }
}
