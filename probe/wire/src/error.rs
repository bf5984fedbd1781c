//! The one error type of the protocol layer.

use std::fmt;

use crate::proto::ProtocolVersion;

/// Everything that can go wrong while framing, handshaking, decoding or reading a recording.
///
/// Decoders never panic on bad input: every malformed byte string ends up as one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame longer than the limit was announced (on read) or submitted (on write).
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Announced or submitted payload length.
        len: u64,
        /// The limit in force ([`MAX_FRAME_BYTES`](crate::frame::MAX_FRAME_BYTES) unless configured).
        limit: u64,
    },
    /// The stream ended in the middle of a frame.
    #[error("truncated frame: the stream ended {missing} bytes before the end of the frame")]
    Truncated {
        /// Bytes still expected when the stream ended (of the length prefix, when it was cut
        /// inside the prefix).
        missing: u64,
    },
    /// The peer closed the connection cleanly where a frame was required.
    #[error("the peer closed the connection {during}")]
    Closed {
        /// What we were waiting for, e.g. "during the handshake".
        during: &'static str,
    },
    /// The bytes do not start with the expected magic: the peer does not speak this protocol,
    /// or the file is not a recording.
    #[error("bad magic: expected \"{}\", found \"{}\"", expected.escape_ascii(), found.escape_ascii())]
    BadMagic {
        /// The magic this format starts with.
        expected: &'static [u8],
        /// The bytes found in its place (possibly shorter).
        found: Vec<u8>,
    },
    /// A frame's payload could not be decoded as the expected message.
    #[error("undecodable payload: {reason}")]
    Payload {
        /// What the codec reported.
        reason: String,
    },
    /// The peer speaks another MAJOR protocol version. Minor differences never produce this.
    #[error(
        "protocol version mismatch: this {} speaks {}.x, the {peer} speaks {theirs}",
        peer.counterpart(),
        ours.major
    )]
    Version {
        /// The version this build speaks.
        ours: ProtocolVersion,
        /// The version the peer (or recording) announced.
        theirs: ProtocolVersion,
        /// Who announced `theirs`.
        peer: Peer,
    },
    /// A well-formed message arrived where another was required.
    #[error("unexpected message: expected {expected}, got {found}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What arrived.
        found: String,
    },
    /// The probe answered the handshake with `Refused`.
    #[error("the probe refused the connection: {reason}")]
    Refused {
        /// The probe's reason.
        reason: String,
    },
    /// A message referred to an interned id that was never defined on this connection.
    #[error("undefined {table} id {id} (the table holds {len} entries)")]
    UndefinedId {
        /// Which table.
        table: Table,
        /// The id referred to.
        id: u32,
        /// Entries defined at that point.
        len: usize,
    },
    /// An intern table would grow past its limit: the encoder did not reset in time (decoder
    /// side), or a single update needs more entries than the limit (encoder side).
    #[error("intern table of {table} is full (limit {limit})")]
    TableFull {
        /// Which table.
        table: Table,
        /// The limit in force.
        limit: u64,
    },
    /// A decoded update would expand to more text than allowed (a decompression bomb: a few
    /// references to a long string repeated many times).
    #[error("decoded update would exceed {limit} bytes of text")]
    TooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// A recording written in a format version this build does not read.
    #[error("unsupported recording format version {theirs} (this stallscope reads version {ours})")]
    FormatVersion {
        /// The version this build reads and writes.
        ours: u16,
        /// The version in the file.
        theirs: u16,
    },
    /// An I/O error from the underlying stream or file.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Who announced a version in a [`Error::Version`] mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The probe (seen by a client).
    Probe,
    /// The `stallscope` client (seen by the probe).
    Client,
    /// A recording file (seen by a reader).
    Recording,
}

impl Peer {
    /// The side that noticed the mismatch, as named in messages.
    fn counterpart(self) -> &'static str {
        match self {
            Peer::Client => "probe",
            Peer::Probe | Peer::Recording => "stallscope",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Probe => "probe",
            Peer::Client => "stallscope",
            Peer::Recording => "recording",
        })
    }
}

/// The intern tables of a connection (see [`intern`](crate::intern)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Strings: locations, function names, file paths.
    Strings,
    /// Bytes of all interned strings together.
    StringBytes,
    /// Symbolized frames.
    Frames,
    /// Stacks (lists of frame ids).
    Stacks,
    /// Frame references of all stacks together.
    StackFrames,
    /// Histogram bucket-bound lists.
    Bounds,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Strings => "strings",
            Table::StringBytes => "string bytes",
            Table::Frames => "frames",
            Table::Stacks => "stacks",
            Table::StackFrames => "stack frame references",
            Table::Bounds => "bucket bounds",
        })
    }
}

/// Shorthand used inside the crate.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_message_names_both_sides() {
        let e = Error::Version {
            ours: ProtocolVersion { major: 1, minor: 3 },
            theirs: ProtocolVersion { major: 2, minor: 0 },
            peer: Peer::Probe,
        };
        assert_eq!(e.to_string(), "protocol version mismatch: this stallscope speaks 1.x, the probe speaks 2.0");
        let e = Error::Version {
            ours: ProtocolVersion { major: 1, minor: 0 },
            theirs: ProtocolVersion { major: 0, minor: 9 },
            peer: Peer::Client,
        };
        assert_eq!(e.to_string(), "protocol version mismatch: this probe speaks 1.x, the stallscope speaks 0.9");
    }

    #[test]
    fn bad_magic_escapes_bytes() {
        let e = Error::BadMagic { expected: b"STSC", found: b"GET \xff".to_vec() };
        assert_eq!(e.to_string(), "bad magic: expected \"STSC\", found \"GET \\xff\"");
    }
}
