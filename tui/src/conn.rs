//! A connection to a probe: connect, handshake, then decoded updates, and requests.
//!
//! Requests are sent with [`Connection::send_request`] (or [`Connection::request_task_dump`]);
//! their replies arrive later, in order with the updates, through [`Connection::recv`].
//!
//! ```no_run
//! use std::time::Duration;
//! use stallscope::conn::{Connection, ConnectOptions};
//! use stallscope::target::Endpoint;
//! let mut conn = Connection::open(&Endpoint::Unix("/tmp/stallscope-1000/4242-api.sock".into()), &ConnectOptions::default())?;
//! println!("connected to {} (pid {})", conn.process().name, conn.process().pid);
//! while let Some(received) = conn.recv()? {
//!     println!("{received:?}");
//! }
//! # Ok::<(), stallscope::conn::ConnError>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use stallscope_wire::frame::{write_frame, FramedReader};
use stallscope_wire::proto::{self, ClientMessage, Hello, ProtocolVersion, Request, Welcome};
use stallscope_wire::{Decoder, Error as WireError, ProcessInfo, Received};

use crate::target::Endpoint;

/// Name this client gives in its hello.
pub const CLIENT_NAME: &str = "stallscope";
/// How long a probe may take to answer the handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Connection::recv`] waits for a message by default before returning `Ok(None)`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How to connect.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Connect and handshake timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// How long one [`Connection::recv`] call waits ([`DEFAULT_POLL_INTERVAL`]), so a caller can
    /// check a deadline or Ctrl-C between messages.
    pub poll_interval: Duration,
    /// The version sent in the hello.
    pub client_version: String,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            client_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Why connecting or receiving failed. Each message names the probe and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// No socket file at the path.
    #[error("no probe socket at {}: the file does not exist (is the service running? `stallscope list` shows the probes)", .0.display())]
    NoSocket(PathBuf),
    /// The socket exists but nobody listens on it.
    #[error("nobody is listening on {} (a stale socket left by a process that exited?)", .0.display())]
    Stale(PathBuf),
    /// The socket belongs to someone else.
    #[error("permission denied on {}: probe sockets are private to the user running the service (run stallscope as that user, or as root)", .0.display())]
    PermissionDenied(PathBuf),
    /// A TCP address that does not resolve.
    #[error("cannot resolve {endpoint}: {cause}")]
    Resolve {
        /// The address.
        endpoint: Endpoint,
        /// The resolver's error.
        cause: io::Error,
    },
    /// TCP connection refused.
    #[error("connection refused by {0} (is the probe's TCP listener enabled on that port?)")]
    TcpRefused(Endpoint),
    /// Any other failure to connect.
    #[error("cannot connect to {endpoint}: {cause}")]
    Connect {
        /// Where.
        endpoint: Endpoint,
        /// Why.
        cause: io::Error,
    },
    /// The peer speaks another major protocol version (the message names both).
    #[error(transparent)]
    Version(WireError),
    /// The probe answered the handshake with `Refused`.
    #[error("the probe at {endpoint} refused the connection: {reason}")]
    Refused {
        /// Where.
        endpoint: Endpoint,
        /// The probe's reason.
        reason: String,
    },
    /// The peer answered something that is not the stallscope protocol.
    #[error("{endpoint} is not a stallscope probe: {cause}")]
    NotAProbe {
        /// Where.
        endpoint: Endpoint,
        /// The wire error.
        cause: WireError,
    },
    /// The probe did not answer the handshake in time.
    #[error("the probe at {endpoint} did not answer the handshake within {timeout:?}")]
    HandshakeTimeout {
        /// Where.
        endpoint: Endpoint,
        /// How long we waited.
        timeout: Duration,
    },
    /// The probe hung up during the handshake.
    #[error("the probe at {endpoint} closed the connection during the handshake (process exited?)")]
    HandshakeClosed {
        /// Where.
        endpoint: Endpoint,
    },
    /// The connection ended after the handshake.
    #[error("the probe closed the connection (process exited?) after {updates} update{}", plural(*.updates))]
    Closed {
        /// Updates received before it ended.
        updates: u64,
    },
    /// The probe sent bytes that do not decode.
    #[error("the probe sent data stallscope cannot decode, after {updates} update{}: {cause}", plural(*.updates))]
    Garbage {
        /// Updates received before it.
        updates: u64,
        /// The wire error.
        cause: WireError,
    },
    /// Reading the socket failed.
    #[error("reading from the probe failed after {updates} update{}: {cause}", plural(*.updates))]
    Io {
        /// Updates received before it.
        updates: u64,
        /// The I/O error.
        cause: io::Error,
    },
    /// Sending a request to the probe failed.
    #[error("sending a request to the probe failed after {updates} update{}: {cause}", plural(*.updates))]
    Send {
        /// Updates received before it.
        updates: u64,
        /// The wire or I/O error.
        cause: WireError,
    },
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

// === impl Stream ===

/// The socket under a connection.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Stream, ConnError> {
    match endpoint {
        Endpoint::Unix(path) => match UnixStream::connect(path) {
            Ok(s) => Ok(Stream::Unix(s)),
            Err(e) => Err(match e.kind() {
                io::ErrorKind::NotFound => ConnError::NoSocket(path.clone()),
                io::ErrorKind::ConnectionRefused => ConnError::Stale(path.clone()),
                io::ErrorKind::PermissionDenied => ConnError::PermissionDenied(path.clone()),
                _ => ConnError::Connect { endpoint: endpoint.clone(), cause: e },
            }),
        },
        Endpoint::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|cause| ConnError::Resolve { endpoint: endpoint.clone(), cause })?
                .collect();
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => ConnError::TcpRefused(endpoint.clone()),
                Some(e) => ConnError::Connect { endpoint: endpoint.clone(), cause: e },
                None => ConnError::Resolve {
                    endpoint: endpoint.clone(),
                    cause: io::Error::new(io::ErrorKind::NotFound, "no address found"),
                },
            })
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn is_hangup(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

// === impl Connection ===

/// An open, handshaken connection to a probe. See the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    reader: FramedReader<Stream>,
    decoder: Decoder,
    welcome: Welcome,
    endpoint: Endpoint,
    updates: u64,
    failed: bool,
}

impl Connection {
    /// Connects to `endpoint` and runs the client handshake.
    pub fn open(endpoint: &Endpoint, options: &ConnectOptions) -> Result<Connection, ConnError> {
        let mut stream = connect(endpoint, options.handshake_timeout)?;
        let setup = |e: io::Error| ConnError::Connect { endpoint: endpoint.clone(), cause: e };
        stream.set_read_timeout(Some(options.handshake_timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(options.handshake_timeout)).map_err(setup)?;
        let hello = Hello::new(CLIENT_NAME, options.client_version.clone());
        let welcome =
            proto::client_handshake(&mut stream, &hello).map_err(|e| handshake_error(endpoint, options, e))?;
        stream.set_read_timeout(Some(options.poll_interval.max(Duration::from_millis(1)))).map_err(setup)?;
        Ok(Connection {
            reader: FramedReader::new(stream),
            decoder: Decoder::new(),
            welcome,
            endpoint: endpoint.clone(),
            updates: 0,
            failed: false,
        })
    }

    /// Facts about the probed process, from the probe's welcome.
    pub fn process(&self) -> &ProcessInfo {
        &self.welcome.process
    }

    /// The probe's protocol version.
    pub fn probe_protocol(&self) -> ProtocolVersion {
        self.welcome.protocol
    }

    /// Where this connection goes.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Updates received so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The next message: `Ok(Some(_))` for a message, `Ok(None)` when nothing arrived within the
    /// poll interval (call again), an error when the connection is over.
    pub fn recv(&mut self) -> Result<Option<Received>, ConnError> {
        if self.failed {
            return Err(ConnError::Closed { updates: self.updates });
        }
        let result = self.recv_inner();
        if result.is_err() {
            self.failed = true;
            self.reader.get_ref().shutdown();
        }
        result
    }

    fn recv_inner(&mut self) -> Result<Option<Received>, ConnError> {
        let updates = self.updates;
        let payload = match self.reader.read_frame() {
            Ok(Some(p)) => p,
            Ok(None) | Err(WireError::Truncated { .. }) => return Err(ConnError::Closed { updates }),
            Err(WireError::Io(e)) if is_timeout(&e) => return Ok(None),
            Err(WireError::Io(e)) if is_hangup(&e) => return Err(ConnError::Closed { updates }),
            Err(WireError::Io(cause)) => return Err(ConnError::Io { updates, cause }),
            Err(cause) => return Err(ConnError::Garbage { updates, cause }),
        };
        let received = self.decoder.decode_payload(&payload).map_err(|cause| ConnError::Garbage { updates, cause })?;
        if matches!(received, Received::Update(_)) {
            self.updates += 1;
        }
        Ok(Some(received))
    }

    /// Sends a request. Its reply (or a [`Received::Error`] saying why the probe will not serve
    /// it) arrives later through [`recv`](Self::recv), in order with the updates. Sending does not
    /// wait for the reply, so it can be called from the thread that calls `recv`.
    ///
    /// A failed send ends the connection (later calls return [`ConnError::Closed`]).
    pub fn send_request(&mut self, request: &Request) -> Result<(), ConnError> {
        let updates = self.updates;
        if self.failed {
            return Err(ConnError::Closed { updates });
        }
        let payload =
            ClientMessage::Request(request.clone()).to_payload().map_err(|cause| ConnError::Send { updates, cause })?;
        let stream = self.reader.get_mut();
        let sent = write_frame(stream, &payload).and_then(|()| stream.flush().map_err(WireError::Io));
        match sent {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed = true;
                self.reader.get_ref().shutdown();
                Err(match e {
                    WireError::Io(e) if is_hangup(&e) => ConnError::Closed { updates },
                    cause => ConnError::Send { updates, cause },
                })
            }
        }
    }

    /// Asks the probe for a task dump: the async backtraces of the service's idle tasks, grouped
    /// by identical trace. `timeout` bounds how long the probe may take (it clamps it to
    /// [`TASK_DUMP_TIMEOUT_MS`](stallscope_wire::proto::TASK_DUMP_TIMEOUT_MS), 100 ms ..= 10 s).
    ///
    /// The reply arrives later through [`recv`](Self::recv): [`Received::TaskDump`], or
    /// [`Received::Error`] when the probe refuses (a worker is stalled, another dump is running,
    /// the dump timed out, the probe was built without task dumps, or it speaks protocol 1.0).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use stallscope::conn::{Connection, ConnectOptions};
    /// use stallscope::target::Endpoint;
    /// use stallscope_wire::Received;
    /// let mut conn = Connection::open(&Endpoint::Unix("/tmp/stallscope-1000/4242-api.sock".into()), &ConnectOptions::default())?;
    /// conn.request_task_dump(Duration::from_secs(2))?;
    /// loop {
    ///     match conn.recv()? {
    ///         Some(Received::TaskDump(dump)) => {
    ///             for g in &dump.groups {
    ///                 println!("{} tasks:\n{}", g.count, g.trace);
    ///             }
    ///             break;
    ///         }
    ///         Some(Received::Error { message }) => {
    ///             eprintln!("{message}");
    ///             break;
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # Ok::<(), stallscope::conn::ConnError>(())
    /// ```
    pub fn request_task_dump(&mut self, timeout: Duration) -> Result<(), ConnError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.send_request(&Request::TaskDump { timeout_ms })
    }

    /// Closes the connection.
    pub fn close(self) {
        self.reader.get_ref().shutdown();
    }
}

/// Blocks until each message arrives; ends after the first error (which it yields).
impl Iterator for Connection {
    type Item = Result<Received, ConnError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.recv() {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn handshake_error(endpoint: &Endpoint, options: &ConnectOptions, e: WireError) -> ConnError {
    let endpoint = endpoint.clone();
    match e {
        e @ WireError::Version { .. } => ConnError::Version(e),
        WireError::Refused { reason } => ConnError::Refused { endpoint, reason },
        WireError::Io(e) if is_timeout(&e) => {
            ConnError::HandshakeTimeout { endpoint, timeout: options.handshake_timeout }
        }
        WireError::Io(e) if is_hangup(&e) => ConnError::HandshakeClosed { endpoint },
        WireError::Closed { .. } | WireError::Truncated { .. } => ConnError::HandshakeClosed { endpoint },
        WireError::Io(cause) => ConnError::Connect { endpoint, cause },
        cause => ConnError::NotAProbe { endpoint, cause },
    }
}
