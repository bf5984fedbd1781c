//! The socket server: lets `stallscope` attach from another process on the same machine.
//!
//! It listens on a private Unix socket (`stallscope_wire::discovery`), checks each peer's
//! credentials (same uid or root), runs the versioned handshake, then streams interned updates:
//! first the latest cumulative snapshot, then every tick and every stall start and end. Each
//! client is a subscriber with a queue bounded in updates and in bytes (`client_queue`,
//! `client_queue_bytes`; the updates are shared with the other queues, not copied): a client
//! that does not read loses updates (they are counted and it is told how many), and costs the
//! service nothing, because the aggregator only ever `try_send`s. A write that blocks for
//! `client_write_timeout` (`SO_SNDTIMEO`) disconnects the client, counted. The timeout is on
//! progress, not on a whole frame, on purpose: a client that reads slowly (a remote one over a
//! slow link, which can take longer than the timeout for a large first snapshot) stays, losing
//! updates to its byte budget like any slow reader, and costs one blocked writer thread; only one
//! that takes nothing for the whole timeout is dropped. An update too large
//! for a frame is trimmed to fit (`stallscope_wire::fit`), what it lost counted. TCP is opt-in
//! and binds to loopback unless explicitly allowed.
//!
//! Threads: `stallscope-server` accepts; each client has a writer and a reader thread. A client's
//! requests are served on its reader thread: a task dump (`taskdump.rs`) runs on a thread of its
//! own, one per probe, and the reader waits for it up to the request's timeout, so a dump never
//! holds up the writers, the accept loop or the other clients.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stallscope_wire::discovery;
use stallscope_wire::fit::encode_fitting;
use stallscope_wire::frame::{read_frame, write_frame, MAX_FRAME_BYTES};
use stallscope_wire::intern::Encoder;
use stallscope_wire::proto::{self, ClientMessage, ProtocolVersion, Request, ServerMessage};

use crate::serve::taskdump::Dumper;
use crate::state::{Endpoints, Shared};
use crate::threads::Role;

/// How often the writers look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// How long a reader that found a bad frame waits for the writer to tell the client why and close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Longest wait of the accept loop. It waits in `poll(2)` on the listeners and a wake-up socket
/// that `Server::drop` writes to, so it answers a connection or a stop at once; this is only the
/// rate at which it forgets finished clients. It used to sleep 50 ms between non-blocking accepts:
/// 20 wake-ups a second, each one taking a busy worker's core (docs/benchmarks.md).
const ACCEPT_WAIT: Duration = Duration::from_secs(1);
/// A client must finish the handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections that may be in their handshake at once, beyond `max_clients`. Each has a thread
/// for up to `HANDSHAKE_TIMEOUT`; further connections are closed at once, uncounted by any
/// thread (1,000 silent connections once made a service run 1,007 threads).
const MAX_HANDSHAKING: usize = 16;

/// A connected stream, Unix or TCP.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(d),
            Conn::Tcp(s) => s.set_read_timeout(d),
        }
    }
    /// `SO_SNDTIMEO`: it bounds each `send` below as well (a blocked one fails with `EAGAIN`).
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(d),
            Conn::Tcp(s) => s.set_write_timeout(d),
        }
    }
}

impl io::Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl io::Write for Conn {
    /// `send` with `MSG_NOSIGNAL`, never a plain `write`: a client that hung up makes a write
    /// raise SIGPIPE, which kills a host whose SIGPIPE is not ignored (Rust ignores it only in
    /// Rust `main`s, and a host may reset it).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        };
        loop {
            // SAFETY: sends from a valid buffer of `buf.len()` bytes on a socket we own.
            let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// The running server; dropping it stops the threads and removes the socket.
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    /// Written to on drop, to wake the accept loop.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Release);
        if let Some(w) = &self.wake {
            use std::os::fd::AsRawFd;
            // MSG_NOSIGNAL: if the accept thread is gone, its end is closed, and a plain write
            // would raise SIGPIPE in the host.
            // SAFETY: sends one byte from a valid buffer on a socket we own.
            let _ = unsafe { libc::send(w.as_raw_fd(), [1u8].as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.path {
            unbind_unix(p);
        }
    }
}

/// Binds the listeners and starts the accept thread. Failures are counted and reported in
/// `process.missing`, never returned to the host. `handle` is the runtime that task dumps dump.
pub(crate) fn start(shared: &Arc<Shared>, handle: &tokio::runtime::Handle) -> Option<Server> {
    let c = &shared.config;
    if !c.server {
        return None;
    }
    let mut unix = None;
    let mut path = None;
    let dir = c.socket_dir.clone().unwrap_or_else(discovery::socket_dir);
    let name = c.name.clone().unwrap_or_else(crate::aggregator::snapshot::process_name);
    match bind_unix(&dir, &name) {
        Ok((l, p)) => {
            unix = Some(l);
            path = Some(p);
        }
        Err(e) => shared.note_problem(format!("socket server: cannot listen in {}: {e}", dir.display())),
    }
    let mut tcp = None;
    if let Some(addr) = c.tcp {
        if !addr.ip().is_loopback() && !c.tcp_allow_remote {
            shared.note_problem(format!(
                "socket server: refusing to listen on {addr}: not a loopback address (allow it with tcp_allow_remote)"
            ));
        } else {
            match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(l) => tcp = Some(l),
                Err(e) => shared.note_problem(format!("socket server: cannot listen on tcp://{addr}: {e}")),
            }
        }
    }
    if unix.is_none() && tcp.is_none() {
        return None;
    }
    *shared.endpoints.lock().unwrap_or_else(|e| e.into_inner()) =
        Endpoints { unix: path.clone(), tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()) };
    let stop = Arc::new(AtomicBool::new(false));
    let dumper = Arc::new(Dumper::new(shared.clone(), handle.clone(), stop.clone()));
    // Without the pair (out of descriptors), the loop falls back to waiting `POLL` at a time.
    let (wake, woken) = match UnixStream::pair() {
        Ok((w, r)) => (Some(w), Some(r)),
        Err(_) => (None, None),
    };
    let thread = {
        let s = shared.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(Role::Server.thread_name().into())
            .spawn(move || {
                let threads = s.clone();
                threads.threads.run(Role::Server, &threads.panics, || accept_loop(s, unix, tcp, woken, stop, dumper));
            })
            .map_err(|_| shared.threads.not_spawned(Role::Server))
            .ok()
    };
    Some(Server { stop, wake, thread, path })
}

/// Socket paths bound by the running probes of this process. A path with our pid can only have
/// been made by this process, so a file there that is not in this list is left over from a probe
/// that is gone; one that is belongs to a live probe, which a second probe of the same name must
/// neither unlink nor remove on its drop (it takes `<pid>-<name>-2.sock` instead).
static BOUND: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Probes of one name in one process that can listen side by side.
const MAX_SAME_NAME: u32 = 64;

fn bind_unix(dir: &std::path::Path, name: &str) -> io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    discovery::prepare_dir(dir)?;
    discovery::remove_stale(dir);
    let mut bound = BOUND.lock().unwrap_or_else(|e| e.into_inner());
    let path = (1..=MAX_SAME_NAME)
        .map(|n| discovery::socket_path_nth(dir, std::process::id(), name, n))
        .find(|p| !bound.contains(p))
        .ok_or_else(|| io::Error::other(format!("{MAX_SAME_NAME} probes named {name:?} already listen")))?;
    // Not a live probe's (see BOUND): left over from an earlier probe in this process.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    bound.push(path.clone());
    Ok((listener, path))
}

/// Removes this probe's socket file and lets its path be taken again.
fn unbind_unix(path: &std::path::Path) {
    let mut bound = BOUND.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::fs::remove_file(path);
    bound.retain(|p| p != path);
}

/// The peer's uid, from `SO_PEERCRED`.
pub(crate) fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
}

/// Whether a peer with `uid` may attach: the probe's own user, or root.
pub(crate) fn uid_allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

struct Client {
    conn: Conn,
    threads: Vec<JoinHandle<()>>,
}

/// Accepts every pending connection into `out`. Returns whether accepting failed for another
/// reason than "none left" (then the caller backs off).
fn accept_all(mut accept: impl FnMut() -> io::Result<(Conn, bool)>, out: &mut Vec<(Conn, bool)>) -> bool {
    loop {
        match accept() {
            Ok(c) => out.push(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Waits until a listener has a connection, `woken` has a byte, or `ACCEPT_WAIT` has passed.
fn wait_for_work(unix: Option<&UnixListener>, tcp: Option<&TcpListener>, woken: Option<&UnixStream>) {
    use std::os::fd::AsRawFd;
    let Some(woken) = woken else {
        std::thread::sleep(POLL);
        return;
    };
    let fds = [unix.map(|l| l.as_raw_fd()), tcp.map(|l| l.as_raw_fd()), Some(woken.as_raw_fd())];
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().flatten().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ACCEPT_WAIT.as_millis() as i32) };
    if rc < 0 {
        // EINTR (a sample signal landed here) or worse: do not spin.
        std::thread::sleep(POLL);
    }
}

fn accept_loop(
    shared: Arc<Shared>,
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
    woken: Option<UnixStream>,
    stop: Arc<AtomicBool>,
    dumper: Arc<Dumper>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut clients: Vec<Client> = Vec::new();
    while !stop.load(Acquire) {
        shared.threads.injection_point(Role::Server);
        let mut accepted = Vec::new();
        let mut failing = false;
        if let Some(l) = &unix {
            failing |= accept_all(|| l.accept().map(|(s, _)| (Conn::Unix(s), true)), &mut accepted);
        }
        if let Some(l) = &tcp {
            failing |= accept_all(
                || {
                    l.accept().map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        (Conn::Tcp(s), false)
                    })
                },
                &mut accepted,
            );
        }
        let prune = |clients: &mut Vec<Client>| {
            clients.retain_mut(|c| {
                c.threads.retain(|t| !t.is_finished());
                !c.threads.is_empty()
            })
        };
        prune(&mut clients);
        let cap = shared.config.max_clients + MAX_HANDSHAKING;
        for (conn, is_unix) in accepted {
            if clients.len() >= cap {
                conn.shutdown();
                shared.clients_refused.fetch_add(1, Relaxed);
                continue;
            }
            if let Some(c) = serve(&shared, conn, is_unix, &live, &stop, &dumper) {
                clients.push(c);
            }
        }
        if stop.load(Acquire) {
            break;
        }
        if failing {
            // Out of descriptors, say: the connection stays queued and `poll` would report it
            // again at once. Do not spin on it.
            std::thread::sleep(POLL);
        }
        wait_for_work(unix.as_ref(), tcp.as_ref(), woken.as_ref());
    }
    for c in &clients {
        c.conn.shutdown();
    }
    for c in clients {
        for t in c.threads {
            let _ = t.join();
        }
    }
}

/// Starts the threads of one connection. The credential check and the handshake run on the
/// client's own thread, so a slow or silent peer never holds up the accept loop.
fn serve(
    shared: &Arc<Shared>,
    conn: Conn,
    is_unix: bool,
    live: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
    dumper: &Arc<Dumper>,
) -> Option<Client> {
    match &conn {
        Conn::Unix(s) => s.set_nonblocking(false).ok()?,
        Conn::Tcp(s) => s.set_nonblocking(false).ok()?,
    }
    // Every write to this client, the handshake's included, gives up after this long.
    conn.set_write_timeout(Some(shared.config.client_write_timeout)).ok()?;
    let control = conn.try_clone().ok()?;
    let reader_conn = conn.try_clone().ok()?;
    let shared = shared.clone();
    let live = live.clone();
    let stop = stop.clone();
    let dumper = dumper.clone();
    let t = std::thread::Builder::new()
        .name("stallscope-client".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                client(&shared, conn, reader_conn, is_unix, &live, &stop, dumper);
            }));
            if r.is_err() {
                shared.panics.fetch_add(1, Relaxed);
            }
        })
        .ok()?;
    Some(Client { conn: control, threads: vec![t] })
}

/// A claimed place among the `max_clients`, given back when dropped (also on a panic).
struct Claim<'a>(&'a AtomicUsize);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AcqRel);
    }
}

/// One client: check, handshake, then a reader thread for its requests and this thread writing
/// updates until either side stops.
fn client(
    shared: &Arc<Shared>,
    mut conn: Conn,
    reader_conn: Conn,
    is_unix: bool,
    live: &AtomicUsize,
    stop: &AtomicBool,
    dumper: Arc<Dumper>,
) {
    let max = shared.config.max_clients;
    let refusal = match (&conn, is_unix) {
        (Conn::Unix(s), true) => match peer_uid(s) {
            Ok(uid) if uid_allowed(uid) => None,
            Ok(uid) => Some(format!("uid {uid} may not attach to this probe (only its own user or root)")),
            Err(e) => Some(format!("cannot check the peer's credentials: {e}")),
        },
        _ => None,
    }
    .or_else(|| {
        // Claimed before the handshake, atomically: two clients handshaking at once used to both
        // pass a plain `live < max` check. Given back when `claim` drops.
        let claimed = live.fetch_update(AcqRel, Acquire, |n| (n < max).then_some(n + 1)).is_ok();
        (!claimed).then(|| format!("too many clients ({max}) attached to this probe"))
    });
    let _claim = refusal.is_none().then(|| Claim(live));
    let _ = conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let process = crate::aggregator::snapshot::process_info(shared);
    let hello = proto::server_handshake_with(&mut conn, |_| match &refusal {
        None => Ok(process),
        Some(reason) => Err(reason.clone()),
    });
    let hello = match hello {
        Ok(hello) => hello,
        Err(_) => {
            if refusal.is_some() {
                shared.clients_refused.fetch_add(1, Relaxed);
            }
            conn.shutdown();
            return;
        }
    };
    // Tests inject a panic on this thread, holding a place among `max_clients`.
    #[cfg(test)]
    if hello.client_name == tests::PANIC_CLIENT {
        panic!("injected by a test");
    }
    // What this connection may carry: the smaller of the two minors.
    let minor = ProtocolVersion::CURRENT.common(hello.protocol).minor;
    let _ = conn.set_read_timeout(None);
    let sub = shared.publisher.subscribe(shared.config.client_queue, shared.config.client_queue_bytes);
    let (reply_tx, reply_rx) = mpsc::sync_channel::<ServerMessage>(16);
    let writer_done = Arc::new(AtomicBool::new(false));
    let done = writer_done.clone();
    let reader = std::thread::Builder::new().name("stallscope-client-in".into()).spawn(move || {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_loop(reader_conn, reply_tx, &dumper, minor, &done);
        }));
        if panicked.is_err() {
            dumper.note_panic();
        }
    });
    write_loop(shared, &mut conn, sub, reply_rx, stop);
    // Wakes the reader, blocked in a read on a client that may never send or close.
    conn.shutdown();
    writer_done.store(true, Release);
    if let Ok(r) = reader {
        let _ = r.join();
    }
}

/// Reads the client's requests and answers them (through the writer). Anything that is not a
/// valid request closes the connection, once the writer has told the client why.
fn read_loop(
    mut conn: Conn,
    replies: SyncSender<ServerMessage>,
    dumper: &Dumper,
    minor: u16,
    writer_done: &AtomicBool,
) {
    // The writer sends a "closing" error and then closes the connection; shutting it down from
    // here first would lose the reason (the writer looks at replies between updates, every
    // `POLL`). A writer stuck on a client that does not read gets `CLOSE_GRACE`.
    let close_after = |message: String| {
        if replies.try_send(ServerMessage::Error { message }).is_ok() {
            let until = std::time::Instant::now() + CLOSE_GRACE;
            while !writer_done.load(Acquire) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    loop {
        let frame = match read_frame(&mut conn) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                close_after(format!("closing: {e}"));
                break;
            }
        };
        match ClientMessage::from_payload(&frame) {
            Ok(ClientMessage::Request(Request::TaskDump { timeout_ms })) => {
                let reply = if minor < 1 {
                    ServerMessage::Error { message: crate::serve::taskdump::old_client_message(minor) }
                } else {
                    dumper.serve(timeout_ms)
                };
                // Blocks only while the writer drains (it is gone if the client is).
                if replies.send(reply).is_err() {
                    break;
                }
            }
            Ok(_) => {
                let _ = replies.try_send(ServerMessage::Error { message: "unknown request".to_string() });
            }
            Err(e) => {
                close_after(format!("closing: bad request: {e}"));
                break;
            }
        }
    }
    conn.shutdown();
}

/// Why a write to the client failed.
enum WriteError {
    /// It blocked for `client_write_timeout`: the client does not read.
    TimedOut,
    /// The client is gone, or another error.
    Closed,
}

/// Writes one frame; a write that timed out (`SO_SNDTIMEO` gives `EAGAIN`) is told apart.
fn send_payload(conn: &mut Conn, payload: &[u8]) -> Result<(), WriteError> {
    let r = write_frame(conn, payload).and_then(|()| conn.flush().map_err(Into::into));
    match r {
        Ok(()) => Ok(()),
        Err(stallscope_wire::Error::Io(e))
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
        {
            Err(WriteError::TimedOut)
        }
        Err(_) => Err(WriteError::Closed),
    }
}

/// Sends updates (each fitted into a frame) and the reader's replies until the client or the
/// probe stops. A write that times out counts the client as disconnected for not reading.
fn write_loop(
    shared: &Shared,
    conn: &mut Conn,
    sub: crate::publish::Subscription,
    replies: Receiver<ServerMessage>,
    stop: &AtomicBool,
) {
    let losses = &shared.publisher.losses;
    let r = write_updates(shared, conn, sub, replies, stop);
    if let Err(WriteError::TimedOut) = r {
        losses.clients_timed_out.fetch_add(1, Relaxed);
    }
}

fn write_updates(
    shared: &Shared,
    conn: &mut Conn,
    sub: crate::publish::Subscription,
    replies: Receiver<ServerMessage>,
    stop: &AtomicBool,
) -> Result<(), WriteError> {
    let losses = &shared.publisher.losses;
    let mut enc = Encoder::new();
    // Updates lost here (not encodable even trimmed), to tell the client with the queue's.
    let lost = std::cell::Cell::new(0u64);
    let mut send_update = |conn: &mut Conn, update: &stallscope_wire::Update| -> Result<(), WriteError> {
        match encode_fitting(&mut enc, update, MAX_FRAME_BYTES) {
            Ok((payload, trimmed)) => {
                losses.trimmed(trimmed);
                send_payload(conn, &payload)
            }
            Err(_) => {
                // Nothing of it was sent; `enc` is reset, so the next update is self-contained.
                losses.encode_failures.fetch_add(1, Relaxed);
                shared.publisher.subscriber_drops.fetch_add(1, Relaxed);
                lost.set(lost.get() + 1);
                Ok(())
            }
        }
    };
    let send = |conn: &mut Conn, msg: &ServerMessage| -> Result<(), WriteError> {
        match msg.to_payload() {
            Ok(p) => send_payload(conn, &p),
            Err(_) => Ok(()),
        }
    };
    // A new client first gets the cumulative state (one copy shared by the clients that attach
    // from the same snapshot).
    if let Some(first) = shared.publisher.first_update() {
        send_update(conn, &first)?;
    }
    let mut reported_drops = sub.dropped();
    while !stop.load(Acquire) {
        while let Ok(r) = replies.try_recv() {
            let closing = matches!(&r, ServerMessage::Error { message } if message.starts_with("closing"));
            send(conn, &r)?;
            if closing {
                return Ok(());
            }
        }
        let drops = sub.dropped() + lost.get();
        if drops > reported_drops {
            send(conn, &ServerMessage::Dropped { intervals: drops - reported_drops })?;
            reported_drops = drops;
        }
        let Some(update) = sub.recv_shared(POLL) else { continue };
        send_update(conn, &update)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use stallscope_wire::frame::read_frame;
    use stallscope_wire::intern::{Decoder, Received};
    use stallscope_wire::proto::{client_handshake, Hello};
    use stallscope_wire::{Snapshot, Update};

    use crate::serve::testing::stall;

    /// A client of this name makes its client thread panic after the handshake.
    pub(super) const PANIC_CLIENT: &str = "test-panic-in-client-thread";

    /// Reads until a tick with `seq`, or the probe hangs up (`None`).
    fn tick_with_seq(stream: &mut UnixStream, dec: &mut Decoder, seq: u64) -> Option<Snapshot> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let frame = read_frame(stream).ok()??;
            if let Received::Update(Update::Tick { snapshot, .. }) = dec.decode_payload(&frame).unwrap() {
                if snapshot.seq == seq {
                    return Some(*snapshot);
                }
            }
        }
        None
    }

    /// P7 defect 4: a tick whose encoding is above the 16 MiB frame limit failed to send, and
    /// the server closed every client on it. Now it is trimmed (its oldest stalls go) and sent,
    /// the clients stay, and what was trimmed is counted.
    #[test]
    fn a_tick_larger_than_a_frame_is_trimmed_and_every_client_stays() {
        let dir = std::env::temp_dir().join(format!("stallscope-oversized-{}", std::process::id()));
        // Room in the queues for the large tick beside the probe's own ticks.
        let probe = crate::Probe::builder().socket_dir(&dir).client_queue_bytes(256 << 20).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = probe.start(rt.handle());
        let path = probe.socket_path().unwrap();
        let mut clients: Vec<(UnixStream, Decoder)> = (0..3)
            .map(|_| {
                let mut s = UnixStream::connect(&path).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                client_handshake(&mut s, &Hello::new("test", "0")).unwrap();
                (s, Decoder::new())
            })
            .collect();
        let seq = 1_000_000;
        let update = crate::serve::testing::oversized_tick(seq);
        // Every client is streaming before the large tick comes.
        for (s, d) in clients.iter_mut() {
            assert!(tick_with_seq(s, d, 2).is_some());
        }
        probe.shared.publisher.publish(update);
        for (s, d) in clients.iter_mut() {
            let got = tick_with_seq(s, d, seq).expect("the client was closed instead of getting the tick");
            // The oldest stalls went, the newest stayed.
            assert_eq!(got.stalls.last().map(|s| s.id), Some(2015));
            assert!(got.stalls.len() >= 1500 && got.stalls[0].id >= 16, "{} stalls", got.stalls.len());
        }
        // Still connected: the probe's next ticks come.
        let next = probe.snapshot().map_or(3, |s| s.seq + 2);
        for (s, d) in clients.iter_mut() {
            assert!(tick_with_seq(s, d, next).is_some(), "closed after the large tick");
        }
        // Counted, per client, and said.
        let l = &probe.shared.publisher.losses;
        assert!(l.trimmed_stalls.load(super::Relaxed) >= 3 * 16);
        let snap = probe.refresh(Duration::from_secs(5)).unwrap();
        assert!(snap.drops.stalls >= 48, "{:?}", snap.drops);
        assert!(
            snap.process.missing.iter().any(|m| m.contains("left out of updates larger than")),
            "{:?}",
            snap.process.missing
        );
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// P7 defect 4: a client that never reads blocked its writer thread for good (no write
    /// timeout), holding its place among `max_clients` and its queue. Now the write gives up
    /// after `client_write_timeout`, the client is disconnected and counted, and its place is
    /// free for another.
    #[test]
    fn a_client_that_never_reads_is_disconnected_after_the_write_timeout() {
        let dir = std::env::temp_dir().join(format!("stallscope-never-reads-{}", std::process::id()));
        let probe = crate::Probe::builder()
            .socket_dir(&dir)
            .max_clients(1)
            .client_write_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = probe.start(rt.handle());
        let path = probe.socket_path().unwrap();
        let mut idle = UnixStream::connect(&path).unwrap();
        client_handshake(&mut idle, &Hello::new("test", "0")).unwrap();
        // It holds the one place: another client is refused, and that is said.
        let mut refused = UnixStream::connect(&path).unwrap();
        let e = client_handshake(&mut refused, &Hello::new("test", "0")).unwrap_err();
        assert!(matches!(e, stallscope_wire::Error::Refused { .. }), "{e:?}");
        // Fill its socket: 64 updates of about 100 KB each, never read.
        let losses = &probe.shared.publisher.losses;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut id = 0;
        while losses.clients_timed_out.load(super::Relaxed) == 0 && Instant::now() < deadline {
            for _ in 0..8 {
                id += 1;
                probe.shared.publisher.publish(Update::StallEnded(stall(id, format!("{id}:").repeat(25_000))));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(losses.clients_timed_out.load(super::Relaxed), 1, "never disconnected");
        // Its place is free again: another client attaches and streams.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut next = loop {
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            match client_handshake(&mut s, &Hello::new("test", "0")) {
                Ok(_) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("no place for a new client: {e}"),
            }
        };
        let seq = probe.snapshot().map_or(3, |s| s.seq + 2);
        assert!(tick_with_seq(&mut next, &mut Decoder::new(), seq).is_some());
        let snap = probe.refresh(Duration::from_secs(5)).unwrap();
        assert!(
            snap.process.missing.iter().any(|m| m.contains("1 clients disconnected for not reading")),
            "{:?}",
            snap.process.missing
        );
        assert!(snap.process.missing.iter().any(|m| m.contains("connections refused")), "{:?}", snap.process.missing);
        drop(idle);
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An update that cannot be encoded even trimmed (70,000 spawn locations of 250 bytes:
    /// more text than the 16 MiB string table, and nothing `fit` trims) used to be skipped
    /// silently. It is now counted, and the client is told with `Dropped`; it stays connected.
    #[test]
    fn an_update_that_cannot_be_encoded_is_counted_and_told() {
        let dir = std::env::temp_dir().join(format!("stallscope-unencodable-{}", std::process::id()));
        let probe = crate::Probe::builder().socket_dir(&dir).client_queue_bytes(256 << 20).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = probe.start(rt.handle());
        let path = probe.socket_path().unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        client_handshake(&mut s, &Hello::new("test", "0")).unwrap();
        let mut dec = Decoder::new();
        assert!(tick_with_seq(&mut s, &mut dec, 2).is_some());
        let location = |i: usize| stallscope_wire::LocationStats {
            location: format!("{i:0250}"),
            spawned: 0,
            completed: 0,
            live: 0,
            oldest_live_ns: None,
            polls: 0,
            poll_time: Default::default(),
            schedule_latency: None,
            leak_suspect: false,
            internal: false,
            blocking: false,
        };
        let snapshot =
            Snapshot { seq: 1_000_000, locations: (0..70_000).map(location).collect(), ..Snapshot::default() };
        probe.shared.publisher.publish(Update::Tick { snapshot: Box::new(snapshot), interval: Default::default() });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut dropped = 0;
        while dropped == 0 && Instant::now() < deadline {
            let frame = read_frame(&mut s).unwrap().expect("closed");
            if let Received::Dropped { intervals } = dec.decode_payload(&frame).unwrap() {
                dropped += intervals;
            }
        }
        assert_eq!(dropped, 1);
        let next = probe.snapshot().map_or(3, |s| s.seq + 2);
        assert!(tick_with_seq(&mut s, &mut dec, next).is_some(), "closed after the update");
        let snap = probe.refresh(Duration::from_secs(5)).unwrap();
        assert!(snap.drops.subscriber_updates >= 1);
        assert!(
            snap.process.missing.iter().any(|m| m.contains("1 updates could not be encoded")),
            "{:?}",
            snap.process.missing
        );
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A panic on a client's thread was caught but not counted, and (the place among
    /// `max_clients` being given back by hand after the writer) it kept that place for good.
    /// Now it is counted in `drops.probe_panics` and the place is given back by a guard.
    #[test]
    fn a_panic_on_a_client_thread_is_counted_and_gives_its_place_back() {
        let dir = std::env::temp_dir().join(format!("stallscope-client-panic-{}", std::process::id()));
        let probe = crate::Probe::builder().socket_dir(&dir).max_clients(1).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let guard = probe.start(rt.handle());
        let path = probe.socket_path().unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client_handshake(&mut s, &Hello::new(PANIC_CLIENT, "0")).unwrap();
        // The thread dies: the connection ends.
        assert!(matches!(read_frame(&mut s), Ok(None) | Err(_)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe.shared.panics.load(super::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(probe.shared.panics.load(super::Relaxed), 1);
        // Its place is free: the one client allowed attaches.
        let mut next = UnixStream::connect(&path).unwrap();
        next.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client_handshake(&mut next, &Hello::new("test", "0")).expect("the panicked client kept its place");
        let snap = probe.refresh(Duration::from_secs(5)).unwrap();
        assert_eq!(snap.drops.probe_panics, 1);
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
