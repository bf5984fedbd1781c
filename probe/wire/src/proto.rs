//! Protocol version, handshake and the messages exchanged after it.
//!
//! A connection starts with one handshake frame in each direction, then carries
//! [`ServerMessage`]s from the probe and [`ClientMessage`]s from the client, one per frame,
//! encoded with [`crate::codec`].
//!
//! The handshake frames have a fixed prefix that no future version may change, so that two
//! builds of any versions can always tell each other apart:
//!
//! ```text
//! "STSC"  major:u16le  minor:u16le  kind:u8  body (codec-encoded, depends on kind)
//!  kind 1 = Hello (client → probe), 2 = Welcome, 3 = Refused (probe → client)
//! ```
//!
//! The major version is checked before the body is decoded: a peer with another major version
//! gets [`Error::Version`] naming both versions, never a decoding error.

use std::fmt;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Peer, Result};
use crate::frame::{read_frame, write_frame};
use crate::intern::Interned;
use crate::{ProcessInfo, TaskDump};

/// Protocol MAJOR version: bumped on any change an older peer cannot decode.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Protocol MINOR version: bumped on backward-compatible additions.
///
/// - 1.0: updates, drop notices, errors; `Request::TaskDump` defined but answered with an error.
/// - 1.1: [`ServerMessage::TaskDump`], the reply to `Request::TaskDump`.
/// - 1.2: an [`Extension`](crate::intern::Extension) after an update's message: each stall's
///   anatomy ([`Stall::anatomy`](crate::Stall::anatomy)) and alerts of the kinds added in 1.2
///   ([`AlertKind::CpuStarvation`](crate::AlertKind::CpuStarvation)). A 1.1 client ignores it.
pub const PROTOCOL_MINOR: u16 = 2;
/// First bytes of every handshake frame.
pub const MAGIC: [u8; 4] = *b"STSC";

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REFUSED: u8 = 3;
const PREFIX_BYTES: usize = MAGIC.len() + 2 + 2 + 1;

// === impl ProtocolVersion ===

/// A protocol version. Peers interoperate when their majors are equal; each side then sends
/// only what the smaller minor ([`common`](Self::common)) defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this build speaks: [`PROTOCOL_MAJOR`].[`PROTOCOL_MINOR`].
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR };

    /// Whether a peer speaking `other` can talk to one speaking `self` (same major).
    pub fn is_compatible(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }

    /// The version both sides use on a connection: the common major with the smaller minor.
    ///
    /// ```
    /// use stallscope_wire::proto::ProtocolVersion;
    /// let a = ProtocolVersion { major: 1, minor: 4 };
    /// let b = ProtocolVersion { major: 1, minor: 2 };
    /// assert_eq!(a.common(b), b);
    /// ```
    pub fn common(self, other: ProtocolVersion) -> ProtocolVersion {
        ProtocolVersion { major: self.major, minor: self.minor.min(other.minor) }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

// === Handshake ===

/// First frame of a connection, client → probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The client's protocol version (sent in the fixed prefix after the magic).
    pub protocol: ProtocolVersion,
    /// Client program name, e.g. `stallscope`.
    pub client_name: String,
    /// Client program version, e.g. `0.1.0`.
    pub client_version: String,
}

#[derive(Serialize, Deserialize)]
struct HelloBody {
    client_name: String,
    client_version: String,
}

/// The probe accepts: its version and the facts about its process.
#[derive(Clone, Debug, PartialEq)]
pub struct Welcome {
    /// The probe's protocol version. The connection uses
    /// `ProtocolVersion::CURRENT.common(welcome.protocol)`.
    pub protocol: ProtocolVersion,
    /// Facts about the probed process.
    pub process: ProcessInfo,
}

#[derive(Serialize, Deserialize)]
struct WelcomeBody {
    process: ProcessInfo,
}

/// The probe declines the connection (too many clients, major version mismatch, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The probe's protocol version.
    pub protocol: ProtocolVersion,
    /// Why, in words meant for the user.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct RefusedBody {
    reason: String,
}

/// The probe's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Accepted; messages follow.
    Welcome(Welcome),
    /// Declined; the probe closes the connection.
    Refused(Refused),
}

fn prefix(version: ProtocolVersion, kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.major.to_le_bytes());
    out.extend_from_slice(&version.minor.to_le_bytes());
    out.push(kind);
    out
}

/// Checks magic and major version, then splits a handshake payload into version, kind and body.
fn parse_prefix(bytes: &[u8], peer: Peer) -> Result<(ProtocolVersion, u8, &[u8])> {
    let magic = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if magic != MAGIC {
        return Err(Error::BadMagic { expected: &MAGIC, found: magic.to_vec() });
    }
    if bytes.len() < PREFIX_BYTES {
        return Err(Error::Payload { reason: format!("handshake frame of {} bytes is too short", bytes.len()) });
    }
    let theirs = ProtocolVersion {
        major: u16::from_le_bytes([bytes[4], bytes[5]]),
        minor: u16::from_le_bytes([bytes[6], bytes[7]]),
    };
    if !ProtocolVersion::CURRENT.is_compatible(theirs) {
        return Err(Error::Version { ours: ProtocolVersion::CURRENT, theirs, peer });
    }
    Ok((theirs, bytes[8], &bytes[PREFIX_BYTES..]))
}

fn kind_name(kind: u8) -> String {
    match kind {
        KIND_HELLO => "Hello".into(),
        KIND_WELCOME => "Welcome".into(),
        KIND_REFUSED => "Refused".into(),
        other => format!("handshake kind {other}"),
    }
}

impl Hello {
    /// A hello at [`ProtocolVersion::CURRENT`].
    pub fn new(client_name: impl Into<String>, client_version: impl Into<String>) -> Hello {
        Hello {
            protocol: ProtocolVersion::CURRENT,
            client_name: client_name.into(),
            client_version: client_version.into(),
        }
    }

    /// The frame payload.
    pub fn to_payload(&self) -> Result<Vec<u8>> {
        let mut out = prefix(self.protocol, KIND_HELLO);
        codec::encode_into(
            &HelloBody { client_name: self.client_name.clone(), client_version: self.client_version.clone() },
            &mut out,
        )?;
        Ok(out)
    }

    /// Parses a hello as the probe does: magic, then major version, then kind and body.
    ///
    /// Errors: [`Error::BadMagic`], [`Error::Version`] (with `peer: Client`),
    /// [`Error::Unexpected`] for another handshake kind, [`Error::Payload`].
    pub fn from_payload(bytes: &[u8]) -> Result<Hello> {
        let (protocol, kind, body) = parse_prefix(bytes, Peer::Client)?;
        if kind != KIND_HELLO {
            return Err(Error::Unexpected { expected: "Hello", found: kind_name(kind) });
        }
        let body: HelloBody = codec::decode(body)?;
        Ok(Hello { protocol, client_name: body.client_name, client_version: body.client_version })
    }
}

impl Reply {
    /// The frame payload.
    pub fn to_payload(&self) -> Result<Vec<u8>> {
        match self {
            Reply::Welcome(w) => {
                let mut out = prefix(w.protocol, KIND_WELCOME);
                codec::encode_into(&WelcomeBody { process: w.process.clone() }, &mut out)?;
                Ok(out)
            }
            Reply::Refused(r) => {
                let mut out = prefix(r.protocol, KIND_REFUSED);
                codec::encode_into(&RefusedBody { reason: r.reason.clone() }, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Parses the probe's answer as the client does: magic, then major version (a `Refused`
    /// from a probe of another major gives [`Error::Version`], which is more useful than its
    /// reason), then kind and body.
    pub fn from_payload(bytes: &[u8]) -> Result<Reply> {
        let (protocol, kind, body) = parse_prefix(bytes, Peer::Probe)?;
        match kind {
            KIND_WELCOME => {
                let body: WelcomeBody = codec::decode(body)?;
                Ok(Reply::Welcome(Welcome { protocol, process: body.process }))
            }
            KIND_REFUSED => {
                let body: RefusedBody = codec::decode(body)?;
                Ok(Reply::Refused(Refused { protocol, reason: body.reason }))
            }
            other => Err(Error::Unexpected { expected: "Welcome or Refused", found: kind_name(other) }),
        }
    }
}

/// Client side of the handshake: sends `hello`, reads the answer.
///
/// `Ok(Welcome)` when accepted; [`Error::Refused`] with the probe's reason, [`Error::Version`]
/// when the probe speaks another major version, [`Error::Closed`] or [`Error::Truncated`] when it
/// hangs up, [`Error::BadMagic`] when the other end is not a probe.
pub fn client_handshake<S: Read + Write + ?Sized>(stream: &mut S, hello: &Hello) -> Result<Welcome> {
    write_frame(stream, &hello.to_payload()?)?;
    stream.flush()?;
    let payload = read_frame(stream)?.ok_or(Error::Closed { during: "before answering the handshake" })?;
    match Reply::from_payload(&payload)? {
        Reply::Welcome(w) => Ok(w),
        Reply::Refused(r) => Err(Error::Refused { reason: r.reason }),
    }
}

/// Probe side of the handshake: reads the client's [`Hello`] and answers `Welcome` with
/// `process`. See [`server_handshake_with`].
pub fn server_handshake<S: Read + Write + ?Sized>(stream: &mut S, process: &ProcessInfo) -> Result<Hello> {
    server_handshake_with(stream, |_| Ok(process.clone()))
}

/// Probe side of the handshake with a decision: `decide` sees the hello and returns the process
/// facts to welcome the client with, or a reason to refuse it.
///
/// A client of another major version is answered `Refused` (with this probe's version in the
/// prefix, so the client reports the mismatch) and gives [`Error::Version`]. A refusal by
/// `decide` gives [`Error::Refused`]. Garbage (bad magic) gets no answer. Returns the hello on
/// success; the connection then uses `ProtocolVersion::CURRENT.common(hello.protocol)`.
pub fn server_handshake_with<S, F>(stream: &mut S, decide: F) -> Result<Hello>
where
    S: Read + Write + ?Sized,
    F: FnOnce(&Hello) -> std::result::Result<ProcessInfo, String>,
{
    let payload = read_frame(stream)?.ok_or(Error::Closed { during: "before sending its hello" })?;
    let hello = match Hello::from_payload(&payload) {
        Ok(hello) => hello,
        Err(e @ Error::Version { .. }) => {
            let refused = Reply::Refused(Refused { protocol: ProtocolVersion::CURRENT, reason: e.to_string() });
            // Best effort: the client may already be gone.
            let _ = write_frame(stream, &refused.to_payload()?).and_then(|()| Ok(stream.flush()?));
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let (reply, outcome) = match decide(&hello) {
        Ok(process) => (Reply::Welcome(Welcome { protocol: ProtocolVersion::CURRENT, process }), Ok(hello)),
        Err(reason) => (
            Reply::Refused(Refused { protocol: ProtocolVersion::CURRENT, reason: reason.clone() }),
            Err(Error::Refused { reason }),
        ),
    };
    write_frame(stream, &reply.to_payload()?)?;
    stream.flush()?;
    outcome
}

// === Messages ===

/// Probe → client, one per frame after the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// An update with the intern definitions it needs (see [`intern`](crate::intern)).
    Update(Box<Interned>),
    /// This client's queue was full: `intervals` updates were dropped for it since the last
    /// `Dropped` (the next `Update` carries complete cumulative state again).
    Dropped {
        /// Updates lost.
        intervals: u64,
    },
    /// The probe hit an error serving this client or a request (the connection stays open
    /// unless the probe closes it). A request the probe refuses (e.g. a task dump while a
    /// worker is stalled) is answered with one.
    Error {
        /// What went wrong, for the user.
        message: String,
    },
    /// The reply to [`Request::TaskDump`] (since 1.1; a probe never sends it to a 1.0 client).
    /// Not interned: self-contained, and bounded by [`TaskDumpLimits`](crate::TaskDumpLimits).
    TaskDump(TaskDump),
}

impl ServerMessage {
    /// Encodes the message as a frame payload. An update's [`Extension`](crate::intern::Extension)
    /// follows the message, when it carries anything.
    pub fn to_payload(&self) -> Result<Vec<u8>> {
        let mut out = codec::encode(self)?;
        if let ServerMessage::Update(interned) = self {
            if !interned.ext.is_empty() {
                let mut tail = Vec::new();
                codec::encode_into(&interned.ext, &mut tail)?;
                out.extend_from_slice(&tail);
            }
        }
        Ok(out)
    }

    /// Decodes a frame payload, with an update's extension when one follows it. Never panics.
    pub fn from_payload(bytes: &[u8]) -> Result<ServerMessage> {
        let (mut message, rest) = codec::decode_prefix::<ServerMessage>(bytes)?;
        if let ServerMessage::Update(interned) = &mut message {
            if !rest.is_empty() {
                interned.ext = codec::decode(rest)?;
            }
        }
        Ok(message)
    }
}

/// Client → probe, one per frame after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Asks the probe for something.
    Request(Request),
}

impl ClientMessage {
    /// Encodes the message as a frame payload.
    pub fn to_payload(&self) -> Result<Vec<u8>> {
        codec::encode(self)
    }

    /// Decodes a frame payload. Never panics.
    pub fn from_payload(bytes: &[u8]) -> Result<ClientMessage> {
        codec::decode(bytes)
    }
}

/// What a client can ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Async backtraces of idle tasks through Tokio's `Handle::dump`, giving up after
    /// `timeout_ms`. Answered (since 1.1) with [`ServerMessage::TaskDump`], or with
    /// [`ServerMessage::Error`] saying why not: a worker is stalled (retry when it ends), another
    /// dump is in progress, the dump timed out, or this build of the probe cannot dump tasks. A
    /// 1.0 probe always answers with an error.
    TaskDump {
        /// How long the dump may take, milliseconds. The probe clamps it to
        /// [`TASK_DUMP_TIMEOUT_MS`].
        timeout_ms: u64,
    },
}

/// The range a probe clamps `Request::TaskDump { timeout_ms }` to: 100 ms ..= 10 s.
pub const TASK_DUMP_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=10_000;

/// Every `ServerMessage::Error` that answers a `Request::TaskDump` starts with this, so a client
/// can tell the answer to its request from other errors (the protocol has no request ids).
pub const TASK_DUMP_ERROR_PREFIX: &str = "task dump";

/// A message of this protocol, encoded to and decoded from one frame's payload. Go through it
/// rather than the codec: a [`ServerMessage`] carries an update's extension after its body.
pub trait Message: Sized {
    /// Encodes the message as a frame payload.
    fn to_frame_payload(&self) -> Result<Vec<u8>>;
    /// Decodes a frame payload. Never panics.
    fn from_frame_payload(bytes: &[u8]) -> Result<Self>;
}

impl Message for ServerMessage {
    fn to_frame_payload(&self) -> Result<Vec<u8>> {
        self.to_payload()
    }
    fn from_frame_payload(bytes: &[u8]) -> Result<Self> {
        ServerMessage::from_payload(bytes)
    }
}

impl Message for ClientMessage {
    fn to_frame_payload(&self) -> Result<Vec<u8>> {
        self.to_payload()
    }
    fn from_frame_payload(bytes: &[u8]) -> Result<Self> {
        ClientMessage::from_payload(bytes)
    }
}

/// Encodes `message` and writes it as one frame.
pub fn send<W: Write + ?Sized, M: Message>(w: &mut W, message: &M) -> Result<()> {
    write_frame(w, &message.to_frame_payload()?)
}

/// Reads one frame and decodes it as `M`; `Ok(None)` at a clean end of stream.
pub fn recv<R: Read + ?Sized, M: Message>(r: &mut R) -> Result<Option<M>> {
    match read_frame(r)? {
        Some(payload) => Ok(Some(M::from_frame_payload(&payload)?)),
        None => Ok(None),
    }
}
