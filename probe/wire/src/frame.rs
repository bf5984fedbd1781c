//! Length-prefixed framing.
//!
//! A frame is a `u32` little-endian payload length followed by that many payload bytes. Payloads
//! longer than [`MAX_FRAME_BYTES`] are refused on write and on read (the reader refuses as soon
//! as it sees the length, before buffering anything).
//!
//! Three ways to read:
//! - [`read_frame`]: blocking, reads exactly one frame and nothing past it (so the stream can be
//!   handed to other code afterwards). Not for streams with read timeouts: a timeout in the
//!   middle of a frame loses its start.
//! - [`FramedReader`]: wraps a reader, keeps partial frames across `WouldBlock`/`TimedOut`, so it
//!   works on non-blocking sockets and sockets with a read timeout.
//! - [`FrameReader`]: pure and incremental, with no I/O at all: feed it bytes, take frames out.
//!   This is what the fuzz test drives.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

/// Largest payload accepted in a frame: 16 MiB.
///
/// A realistic tick (50 spawn locations, 40 stalls with 5 stacks of 25 frames) takes about
/// 25 KB in a new client's first message and 10 KB afterwards (interned), 570 KB uninterned, so
/// the limit only stops garbage and attacks.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Bytes in a frame's length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Writes one frame carrying `payload`.
///
/// Fails with [`Error::Oversized`] (writing nothing) when `payload` is longer than
/// [`MAX_FRAME_BYTES`]. Wrap unbuffered streams in a `BufWriter` to send prefix and payload in one
/// system call, or build the bytes with [`frame_into`].
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> Result<()> {
    let header = header_for(payload.len())?;
    w.write_all(&header)?;
    w.write_all(payload)?;
    Ok(())
}

/// Appends one frame carrying `payload` (prefix and payload) to `out`.
///
/// ```
/// use stallscope_wire::frame::{frame_into, FrameReader};
/// let mut bytes = Vec::new();
/// frame_into(b"hello", &mut bytes).unwrap();
/// assert_eq!(bytes, b"\x05\x00\x00\x00hello");
/// let mut reader = FrameReader::new();
/// reader.feed(&bytes);
/// assert_eq!(reader.next_frame().unwrap().as_deref(), Some(&b"hello"[..]));
/// ```
pub fn frame_into(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let header = header_for(payload.len())?;
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

fn header_for(len: usize) -> Result<[u8; FRAME_HEADER_BYTES]> {
    if len > MAX_FRAME_BYTES {
        return Err(Error::Oversized { len: len as u64, limit: MAX_FRAME_BYTES as u64 });
    }
    Ok((len as u32).to_le_bytes())
}

/// Reads one frame, blocking, and nothing past it.
///
/// Returns `Ok(None)` when the stream ends cleanly before the first byte of a frame,
/// [`Error::Truncated`] when it ends inside one, [`Error::Oversized`] when the announced length is
/// above [`MAX_FRAME_BYTES`] (the payload is not read: the stream cannot be resynchronised and
/// should be closed). `Interrupted` reads are retried.
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut got = 0;
    while got < FRAME_HEADER_BYTES {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::Truncated { missing: (FRAME_HEADER_BYTES - got) as u64 }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(Error::Oversized { len: len as u64, limit: MAX_FRAME_BYTES as u64 });
    }
    // Grow with the data actually received rather than trusting the prefix with an allocation.
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() < len {
        return Err(Error::Truncated { missing: (len - payload.len()) as u64 });
    }
    Ok(Some(payload))
}

// === impl FrameReader ===

/// Pure incremental frame decoder: [`feed`](Self::feed) it bytes as they arrive, take frames
/// out with [`next_frame`](Self::next_frame), and call [`finish`](Self::finish) at end of
/// stream to learn whether it ended inside a frame.
///
/// It does no I/O and never panics, whatever the input. An oversized length prefix is reported
/// as soon as the 4 prefix bytes are in, and again on every later call (the stream cannot be
/// resynchronised after it). Memory is bounded by the limit plus whatever is fed between two
/// calls to `next_frame`.
///
/// ```
/// use stallscope_wire::frame::FrameReader;
/// use stallscope_wire::Error;
/// let mut r = FrameReader::new();
/// r.feed(&[3, 0, 0, 0, b'a']);
/// assert!(r.next_frame().unwrap().is_none()); // needs 2 more bytes
/// assert!(matches!(r.finish(), Err(Error::Truncated { missing: 2 })));
/// r.feed(b"bc");
/// assert_eq!(r.next_frame().unwrap().unwrap(), b"abc");
/// assert!(r.finish().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct FrameReader {
    buf: Vec<u8>,
    pos: usize,
    limit: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// A reader enforcing [`MAX_FRAME_BYTES`].
    pub fn new() -> FrameReader {
        Self::with_limit(MAX_FRAME_BYTES)
    }

    /// A reader enforcing a smaller (or larger) payload limit.
    pub fn with_limit(limit: usize) -> FrameReader {
        FrameReader { buf: Vec::new(), pos: 0, limit }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `Ok(None)` when more bytes are needed, or
    /// [`Error::Oversized`].
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let avail = &self.buf[self.pos..];
        let Some(len) = announced_len(avail) else { return Ok(None) };
        if len > self.limit {
            return Err(Error::Oversized { len: len as u64, limit: self.limit as u64 });
        }
        let Some(payload) = avail.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else { return Ok(None) };
        let payload = payload.to_vec();
        self.pos += FRAME_HEADER_BYTES + len;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(payload))
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// To be called at end of stream: `Ok` if it ended on a frame boundary, otherwise
    /// [`Error::Truncated`] with the number of bytes missing (or [`Error::Oversized`] if that is
    /// what the buffered prefix announces).
    pub fn finish(&self) -> Result<()> {
        let avail = &self.buf[self.pos..];
        if avail.is_empty() {
            return Ok(());
        }
        match announced_len(avail) {
            None => Err(Error::Truncated { missing: (FRAME_HEADER_BYTES - avail.len()) as u64 }),
            Some(len) if len > self.limit => Err(Error::Oversized { len: len as u64, limit: self.limit as u64 }),
            Some(len) => {
                let have = avail.len() - FRAME_HEADER_BYTES;
                if have >= len {
                    // A whole frame is buffered: not truncated, just not taken yet.
                    Ok(())
                } else {
                    Err(Error::Truncated { missing: (len - have) as u64 })
                }
            }
        }
    }
}

fn announced_len(avail: &[u8]) -> Option<usize> {
    let prefix: [u8; FRAME_HEADER_BYTES] = avail.get(..FRAME_HEADER_BYTES)?.try_into().ok()?;
    Some(u32::from_le_bytes(prefix) as usize)
}

// === impl FramedReader ===

/// A reader plus a [`FrameReader`]: blocking-style [`read_frame`](Self::read_frame) that keeps a
/// partial frame when the read times out or would block, so it can be called again later.
///
/// It reads ahead into its own buffer: once wrapped, read the stream only through it.
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
    frames: FrameReader,
    chunk: Box<[u8]>,
    ended: bool,
}

impl<R: Read> FramedReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> FramedReader<R> {
        FramedReader { inner, frames: FrameReader::new(), chunk: vec![0u8; 64 * 1024].into_boxed_slice(), ended: false }
    }

    /// The next frame's payload; `Ok(None)` at a clean end of stream.
    ///
    /// `WouldBlock` and `TimedOut` come back as [`Error::Io`] with nothing lost: call again.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(Some(frame));
            }
            if self.ended {
                self.frames.finish()?;
                return Ok(None);
            }
            match self.inner.read(&mut self.chunk) {
                Ok(0) => self.ended = true,
                Ok(n) => self.frames.feed(&self.chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The wrapped reader (to set timeouts, for instance).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader, mutably. Reading from it directly loses frames.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps, dropping any buffered bytes.
    pub fn into_inner(self) -> R {
        self.inner
    }
}
