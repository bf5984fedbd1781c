//! The built `stallscope` binary end to end: `--help`, `list`, `record` against a fake probe (a
//! thread speaking the server side of the protocol over a real socket), then `report` and
//! `export` on what it recorded, and the errors a user meets.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use stallscope::flame::Flame;
use stallscope_wire::frame::write_frame;
use stallscope_wire::proto::{self, ProtocolVersion, Refused, Reply, ServerMessage};
use stallscope_wire::{read_frame, Encoder, Received};

fn stallscope() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stallscope"));
    c.env("COLUMNS", "100").stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// === Fake probe ===

/// Binds `<dir>/<this pid>-fakeprobe.sock` and serves one connection with `serve`.
fn fake_probe<F>(dir: &Path, serve: F) -> (PathBuf, JoinHandle<()>)
where
    F: FnOnce(UnixStream) + Send + 'static,
{
    let path = dir.join(format!("{}-fakeprobe.sock", std::process::id()));
    let listener = UnixListener::bind(&path).unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve(stream);
    });
    (path, handle)
}

fn message(enc: &mut Encoder, r: &Received) -> ServerMessage {
    match r {
        Received::Update(u) => enc.encode(u).unwrap(),
        Received::Dropped { intervals } => ServerMessage::Dropped { intervals: *intervals },
        Received::Error { message } => ServerMessage::Error { message: message.clone() },
        Received::TaskDump(d) => ServerMessage::TaskDump(d.clone()),
    }
}

/// Handshake, the whole fixture session, then wait for the client to hang up.
fn serve_session<S: Read + Write>(mut s: S) {
    let hello = proto::server_handshake(&mut s, &support::process()).unwrap();
    assert_eq!(hello.client_name, "stallscope");
    let mut enc = Encoder::new();
    for r in support::session() {
        proto::send(&mut s, &message(&mut enc, &r)).unwrap();
    }
    s.flush().unwrap();
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// === Help ===

#[test]
fn help_golden() {
    let o = run(stallscope().arg("--help"));
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    for cmd in ["attach", "replay", "list", "record", "report", "export", "demo"] {
        assert!(help.contains(&format!("\n  {cmd} ")), "{cmd} missing from:\n{help}");
    }
    support::golden("help.txt", &help);
    let o = run(stallscope().args(["record", "--help"]));
    assert!(o.status.success());
    support::golden("record-help.txt", &stdout(&o));
    let o = run(stallscope().args(["export", "--help"]));
    assert!(o.status.success());
    assert!(stdout(&o).contains("--since <T>"), "{}", stdout(&o));
}

/// With no subcommand stallscope attaches; without a terminal it says what to use instead.
#[test]
fn no_arguments_attach_and_need_a_terminal() {
    let o = run(&mut stallscope());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the live UI needs a terminal"), "{}", stderr(&o));
}

#[test]
fn version() {
    let o = run(stallscope().arg("--version"));
    assert_eq!(stdout(&o), format!("stallscope {}\n", env!("CARGO_PKG_VERSION")));
}

/// End to end with a real service: the demo service (the probe linked into a real Tokio
/// service) runs as a child process; `stallscope record` attaches over the real socket by pid;
/// the report names the culprit of each stall kind and the leak; the SVG contains the culprits.
#[test]
#[cfg(feature = "demo")]
fn record_report_and_export_a_real_service() {
    let mut service = stallscope().args(["__demo-service", "--secs", "60"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(service.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.trim().ends_with(".sock"), "socket path: {line}");
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("demo.stsc");
    let o = run(stallscope().arg("record").arg(service.id().to_string()).args(["--duration", "7s", "-o"]).arg(&rec));
    let _ = service.kill();
    let _ = service.wait();
    assert!(o.status.success(), "record: {}", stderr(&o));
    let report = run(stallscope().arg("report").arg(&rec));
    assert!(report.status.success(), "{}", stderr(&report));
    let text = stdout(&report);
    assert!(text.contains("in fetch_rates_blocking ("), "sleep culprit named:\n{text}");
    assert!(text.contains("in render_report_cpu ("), "CPU culprit named:\n{text}");
    assert!(text.contains("in update_shared_cache ("), "mutex culprit named:\n{text}");
    // The leak must be flagged at the spawn inside `watch_request`, found in the source.
    let src = include_str!("../../examples/src/demo.rs");
    let after = src.lines().position(|l| l.contains("pub fn watch_request")).unwrap();
    let spawn_line = after + 1 + src.lines().skip(after).position(|l| l.contains("tokio::spawn")).unwrap();
    let site = format!("examples/src/demo.rs:{spawn_line}:");
    assert!(text.contains("task leak suspect") && text.contains(&site), "leak at {site}:\n{text}");
    assert!(text.contains("pool saturated: db"), "pool:\n{text}");
    let svg = dir.path().join("demo.svg");
    let folded = dir.path().join("demo.folded");
    let o = run(stallscope().arg("export").arg(&rec).arg("--svg").arg(&svg).arg("--folded").arg(&folded));
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&svg).unwrap();
    for culprit in ["fetch_rates_blocking", "render_report_cpu", "update_shared_cache"] {
        assert!(svg.contains(culprit), "{culprit} in the SVG");
    }
    assert!(svg.starts_with("<?xml"));
    let folded = std::fs::read_to_string(&folded).unwrap();
    assert!(folded.lines().any(|l| l.contains("fetch_rates_blocking") && l.contains("clock_nanosleep")), "{folded}");
}

#[test]
#[cfg(feature = "demo")]
fn demo_headless_prints_the_report_of_its_run() {
    let o = run(stallscope().args(["demo", "--headless", "--duration", "3s"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("stallscope report: stallscope-demo"), "{text}");
    assert!(text.contains("fetch_rates_blocking") || text.contains("render_report_cpu"), "{text}");
}

// === record → report → export ===

#[test]
fn record_from_a_fake_probe_then_report_and_export() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), serve_session);
    let file = dir.path().join("run.stsc");
    let o = run(stallscope().arg("record").arg(&sock).args(["--duration", "1s", "-o"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("recorded 1.0"), "{out}");
    assert!(out.contains("from shopd (pid 4242) into"), "{out}");
    assert!(out.contains("updates  11 (3 ticks)"), "{out}");
    assert!(out.contains("stalls   6 seen"), "{out}");
    assert!(out.contains("dropped  3 updates"), "{out}");
    assert!(out.contains("errors   1 from the probe"), "{out}");
    let bytes = std::fs::metadata(&file).unwrap().len();
    assert!(out.contains(&format!("bytes    {bytes}\n")), "{out}");
    server.join().unwrap();

    // The report reads it: the same stalls as the fixture.
    let o = run(stallscope().arg("report").arg(&file).arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<u64> = v["stalls"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 3, 6, 2, 4, 5]);
    assert_eq!(v["stalls"][0]["frames"][3]["function"], "shopd::checkout::load_cart");
    assert_eq!(v["dropped"]["intervals"], 3);
    assert_eq!(stderr(&o), "", "an intact recording has no warnings");

    let o = run(stallscope().arg("report").arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("stallscope report: shopd (pid 4242)"), "{}", stdout(&o));

    // The flame graph of the recording is the fixture's.
    let svg = dir.path().join("flame.svg");
    let folded = dir.path().join("flame.folded");
    let o = run(stallscope().arg("export").arg(&file).arg("--svg").arg(&svg).arg("--folded").arg(&folded));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("388 samples from 5 stalls (4 with samples)"), "{}", stderr(&o));
    let expected = Flame::from_stalls(support::stalls().iter().filter(|s| s.blames_code())).folded();
    assert_eq!(std::fs::read_to_string(&folded).unwrap(), expected);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("shopd (pid 4242): stalled time, 2025-11-21 04:40:00 – "), "{}", &svg[..2000]);
    assert!(
        svg.contains("5 stalls</text>"),
        "title names the stall count (the one that waited for a CPU blames no code)"
    );
    assert!(svg.contains("function init("), "interactive");

    // A time range keeps the stalls that overlap it: only stall 3 (04:40:01.000, 95 ms).
    let o = run(stallscope().arg("export").arg(&file).args([
        "--folded",
        "-",
        "--since",
        "2025-11-21T04:40:01Z",
        "--until",
        "2025-11-21T04:40:01.200Z",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = stdout(&o);
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(
        lines.contains("shopd::sessions::refresh_token (src/sessions.rs:57)") && lines.ends_with(" 88\n"),
        "{lines}"
    );
    // Relative to the start of the recording (its first event, 04:40:00.100).
    let o = run(stallscope().arg("export").arg(&file).args(["--folded", "-", "--since", "1s", "--until", "1700ms"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("load_cart") && !stdout(&o).contains("refresh_token"), "{}", stdout(&o));
    // An empty range says so.
    let o = run(stallscope().arg("export").arg(&file).args(["--folded", "-", "--since", "1h"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no stack samples to draw: 0 stalls between"), "{}", stderr(&o));
}

#[test]
fn record_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (s, _): (TcpStream, _) = listener.accept().unwrap();
        serve_session(s);
    });
    let dir = tempdir();
    let file = dir.path().join("tcp.stsc");
    let o = run(stallscope().args(["record", &format!("tcp://127.0.0.1:{port}"), "-d", "1s", "-o"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("updates  11 (3 ticks)"), "{}", stdout(&o));
    assert!(stderr(&o).contains(&format!("from tcp://127.0.0.1:{port} into")), "{}", stderr(&o));
    server.join().unwrap();
}

#[test]
fn ctrl_c_stops_recording_and_leaves_a_valid_file() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), |mut s| {
        proto::server_handshake(&mut s, &support::process()).unwrap();
        let mut enc = Encoder::new();
        // A tick every 20 ms until the client hangs up (bounded: at most 30 s).
        for seq in 1..1500u64 {
            let u = support::tick(seq, seq * 20, vec![], vec![]);
            if proto::send(&mut s, &enc.encode(&u).unwrap()).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let file = dir.path().join("int.stsc");
    let child = stallscope()
        .arg("record")
        .arg(&sock)
        .arg("-o")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a few ticks are in the file.
    let t = Instant::now();
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 20_000 && t.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill with a pid of our own child and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(interrupted)"), "{}", stdout(&o));
    server.join().unwrap();
    let o = run(stallscope().arg("report").arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("damaged recording"), "{}", stdout(&o));
}

// === Errors ===

#[test]
fn a_probe_of_another_major_version_is_named_with_both_versions() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), |mut s| {
        let _hello = read_frame(&mut s).unwrap().unwrap();
        let reply = Reply::Refused(Refused {
            protocol: ProtocolVersion { major: 2, minor: 0 },
            reason: "protocol version mismatch: this probe speaks 2.x, the stallscope speaks 1.0".into(),
        });
        write_frame(&mut s, &reply.to_payload().unwrap()).unwrap();
    });
    let file = dir.path().join("never.stsc");
    let o = run(stallscope().arg("record").arg(&sock).args(["-d", "1s", "-o"]).arg(&file));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "stallscope: protocol version mismatch: this stallscope speaks 1.x, the probe speaks 2.0\n");
    assert!(!file.exists(), "no file is created when the connection fails");
    server.join().unwrap();
}

#[test]
fn a_refusal_gives_the_probes_reason() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), |mut s| {
        let e = proto::server_handshake_with(&mut s, |_| Err("too many clients (8 connected)".into())).unwrap_err();
        assert!(matches!(e, stallscope_wire::Error::Refused { .. }));
    });
    let o = run(stallscope().arg("record").arg(&sock).args(["-d", "1s", "-o"]).arg(dir.path().join("x")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("refused the connection: too many clients (8 connected)"), "{}", stderr(&o));
    server.join().unwrap();
}

#[test]
fn a_probe_killed_mid_stream_is_a_clean_message_and_a_readable_file() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), |mut s| {
        proto::server_handshake(&mut s, &support::process()).unwrap();
        let mut enc = Encoder::new();
        for r in support::session().iter().take(3) {
            proto::send(&mut s, &message(&mut enc, r)).unwrap();
        }
        // Half a frame, then the process "dies".
        s.write_all(&1000u32.to_le_bytes()).unwrap();
        s.write_all(&[7u8; 10]).unwrap();
    });
    let file = dir.path().join("cut.stsc");
    let o = run(stallscope().arg("record").arg(&sock).args(["-d", "20s", "-o"]).arg(&file));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("the probe closed the connection (process exited?) after 3 updates"), "{err}");
    assert!(err.contains("holds what was received"), "{err}");
    assert!(stdout(&o).contains("updates  3 (1 ticks)"), "{}", stdout(&o));
    server.join().unwrap();
    let o = run(stallscope().arg("report").arg(&file).arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stalls"].as_array().unwrap().len(), 1);
    assert_eq!(v["stalls"][0]["duration_ms"], 212.0);
}

#[test]
fn garbage_after_the_handshake_is_named() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), |mut s| {
        proto::server_handshake(&mut s, &support::process()).unwrap();
        write_frame(&mut s, &[0xFF; 16]).unwrap();
        let _ = s.read(&mut [0u8; 8]);
    });
    let o = run(stallscope().arg("record").arg(&sock).args(["-d", "5s", "-o"]).arg(dir.path().join("g.stsc")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the probe sent data stallscope cannot decode, after 0 updates"), "{}", stderr(&o));
    server.join().unwrap();
}

#[test]
fn something_that_is_not_a_probe() {
    let dir = tempdir();
    let (sock, server) = fake_probe(dir.path(), |mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        // Read until the client hangs up: closing with its hello unread would reset the
        // connection before it reads the answer.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let o = run(stallscope().arg("record").arg(&sock).args(["-d", "1s", "-o"]).arg(dir.path().join("h.stsc")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a stallscope probe"), "{}", stderr(&o));
    server.join().unwrap();
}

#[test]
fn connection_errors_say_what_to_do() {
    let dir = tempdir();
    // A socket file nobody listens on.
    let stale = dir.path().join("1-stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let o = run(stallscope().arg("record").arg(&stale).args(["-o", "x"]));
    assert!(stderr(&o).contains("nobody is listening on"), "{}", stderr(&o));
    let o = run(stallscope().arg("record").arg(dir.path().join("none.sock")).args(["-o", "x"]));
    assert!(stderr(&o).contains("the file does not exist"), "{}", stderr(&o));
    // A TCP port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = run(stallscope().args(["record", &format!("tcp://127.0.0.1:{port}"), "-o", "x"]));
    assert!(stderr(&o).contains(&format!("connection refused by tcp://127.0.0.1:{port}")), "{}", stderr(&o));
    // A bad address is a usage error.
    let o = run(stallscope().args(["record", "tcp://localhost", "-o", "x"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad address 'tcp://localhost': missing :PORT"), "{}", stderr(&o));
}

// === Discovery: list, pid and no target ===

/// An `XDG_RUNTIME_DIR` whose `stallscope/` socket directory is private.
fn runtime_dir() -> (tempfile::TempDir, PathBuf) {
    let rt = tempdir();
    let dir = rt.path().join("stallscope");
    stallscope_wire::discovery::prepare_dir(&dir).unwrap();
    (rt, dir)
}

#[test]
fn list_shows_live_probes() {
    let (rt, dir) = runtime_dir();
    let _listener = UnixListener::bind(dir.join(format!("{}-fakeprobe.sock", std::process::id()))).unwrap();
    std::fs::write(dir.join("99999999-gone.sock"), b"").unwrap();
    let o = run(stallscope().arg("list").env("XDG_RUNTIME_DIR", rt.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("     PID  NAME                   UPTIME  SOCKET\n"), "{out}");
    assert!(out.contains(&format!("{}  fakeprobe", std::process::id())), "{out}");
    assert!(!out.contains("gone"), "{out}");
    assert!(out.contains("1 stale socket of exited processes not shown"), "{out}");
    let o = run(stallscope().args(["list", "--all"]).env("XDG_RUNTIME_DIR", rt.path()));
    assert!(stdout(&o).contains("99999999  gone"), "{}", stdout(&o));

    let empty = tempdir();
    let o = run(stallscope().arg("list").env("XDG_RUNTIME_DIR", empty.path()));
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("no probes running on this machine"), "{}", stdout(&o));
}

#[test]
fn with_no_target_the_only_probe_is_used() {
    let (rt, dir) = runtime_dir();
    let (_sock, server) = fake_probe(&dir, serve_session);
    let file = rt.path().join("only.stsc");
    let o = run(stallscope().args(["record", "-d", "1s", "-o"]).arg(&file).env("XDG_RUNTIME_DIR", rt.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("updates  11"), "{}", stdout(&o));
    server.join().unwrap();
}

#[test]
fn a_pid_target_finds_its_socket() {
    let (rt, dir) = runtime_dir();
    let (_sock, server) = fake_probe(&dir, serve_session);
    let file = rt.path().join("pid.stsc");
    let pid = std::process::id().to_string();
    let o = run(stallscope().args(["record", &pid, "-d", "1s", "-o"]).arg(&file).env("XDG_RUNTIME_DIR", rt.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    server.join().unwrap();
    // A live process without a probe (this test's parent), and a pid with no process at all.
    let parent = std::os::unix::process::parent_id();
    let o = run(stallscope().args(["record", &parent.to_string(), "-o", "x"]).env("XDG_RUNTIME_DIR", rt.path()));
    assert_eq!(o.status.code(), Some(1));
    let expected = format!("no probe with pid {parent} on this machine (probes: {pid} fakeprobe)");
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
    let dead = dead_pid();
    let o = run(stallscope().args(["record", &dead.to_string(), "-o", "x"]).env("XDG_RUNTIME_DIR", rt.path()));
    assert_eq!(o.status.code(), Some(1));
    let expected = format!("no process with pid {dead} is running on this machine (probes: {pid} fakeprobe)");
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

// === The command line as a newcomer meets it ===

/// A missing recording: the OS error once, with the file it is about.
#[test]
fn report_on_a_missing_file_says_it_once() {
    let dir = tempdir();
    let missing = dir.path().join("missing.stsc");
    for args in [vec!["report"], vec!["report", "--json"], vec!["export", "--folded", "-"]] {
        let o = run(stallscope().args(&args).arg(&missing));
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(
            err,
            format!(
                "stallscope: while reading the recording {}: i/o error: No such file or directory (os error 2)\n",
                missing.display()
            ),
            "{args:?}"
        );
    }
}

/// `replay` reads the file before it asks for a terminal: a missing file is named, without a
/// suggestion to run `report` on it; a good file without a terminal gets the suggestion.
#[test]
fn replay_checks_the_file_before_the_terminal() {
    let dir = tempdir();
    let missing = dir.path().join("missing.stsc");
    let o = run(stallscope().arg("replay").arg(&missing));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("while reading the recording {}: ", missing.display())), "{err}");
    assert!(!err.contains("terminal") && !err.contains("report"), "{err}");
    let file = dir.path().join("good.stsc");
    std::fs::write(&file, support::recording_bytes(3)).unwrap();
    let o = run(stallscope().arg("replay").arg(&file));
    assert_eq!(o.status.code(), Some(1));
    let expected = format!("replay needs a terminal; `stallscope report {}` prints a summary", file.display());
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
}

/// `attach` to a pid with no process behind it ends at once with the reason and a failure
/// status, instead of retrying for ever; `--record` works with and without `attach`.
#[test]
fn attach_to_a_pid_with_no_process_ends() {
    let (rt, _dir) = runtime_dir();
    let dead = dead_pid();
    let started = Instant::now();
    let o = run(stallscope().args(["attach", &dead.to_string()]).env("XDG_RUNTIME_DIR", rt.path()));
    assert_eq!(o.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5), "no retrying");
    let err = stderr(&o);
    assert!(err.starts_with(&format!("stallscope: no process with pid {dead} is running on this machine")), "{err}");
    assert!(!err.contains("Pid("), "no debug formatting: {err}");
    // Its stale socket, left by a probe killed with SIGKILL, does not make it reachable.
    std::fs::write(rt.path().join("stallscope").join(format!("{dead}-killed.sock")), b"").unwrap();
    let o = run(stallscope().args(["attach", &dead.to_string()]).env("XDG_RUNTIME_DIR", rt.path()));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("the probe with pid {dead} has exited")), "{}", stderr(&o));
}

#[test]
fn record_is_an_option_of_stallscope_alone_too() {
    let dir = tempdir();
    let file = dir.path().join("r.stsc");
    for args in [vec!["--record"], vec!["attach", "--record"]] {
        let o = run(stallscope().args(&args).arg(&file));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("the live UI needs a terminal"), "{args:?}: {}", stderr(&o));
    }
    let o = run(stallscope().arg("--record").arg(&file).arg("list"));
    assert_eq!(o.status.code(), Some(2), "not with another subcommand: {}", stderr(&o));
}

#[test]
fn with_several_probes_the_user_must_choose() {
    let (rt, dir) = runtime_dir();
    let me = std::process::id();
    std::fs::write(dir.join(format!("{me}-api.sock")), b"").unwrap();
    std::fs::write(dir.join("1-worker.sock"), b"").unwrap();
    let file = rt.path().join("x.stsc");
    let o = run(stallscope().args(["record", "-d", "1s", "-o"]).arg(&file).env("XDG_RUNTIME_DIR", rt.path()));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("stallscope: 2 probes are running on this machine; choose one by pid:\n"), "{err}");
    assert!(err.contains("worker") && err.contains(&format!("{me}  api")), "{err}");
    assert!(!file.exists());
}

// === report on damaged files, through the binary ===

#[test]
fn report_names_the_damage_offset() {
    let dir = tempdir();
    let bytes = support::recording_bytes(3);
    let offsets = support::record_offsets(&bytes);
    let mut damaged = bytes.clone();
    damaged[offsets[6] as usize + 14] ^= 0x55;
    let file = dir.path().join("damaged.stsc");
    std::fs::write(&file, &damaged).unwrap();
    let o = run(stallscope().arg("report").arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = format!("damaged recording: skipped bytes {}..{}", offsets[6], offsets[7]);
    assert!(stdout(&o).contains(&expected), "{}", stdout(&o));
    // JSON on stdout stays clean; the damage is repeated on stderr.
    let o = run(stallscope().arg("report").arg(&file).arg("--json"));
    assert!(o.status.success());
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok());
    assert!(stderr(&o).contains(&format!("skipped bytes {}..{}", offsets[6], offsets[7])), "{}", stderr(&o));

    let cut = dir.path().join("cut.stsc");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let o = run(stallscope().arg("report").arg(&cut));
    assert!(o.status.success());
    let expected = format!("recording ends at byte {}: truncated record: 3 bytes missing", offsets[12]);
    assert!(stdout(&o).contains(&expected), "{}", stdout(&o));

    let o = run(stallscope().arg("report").arg(dir.path().join("missing.stsc")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("while reading the recording"), "{}", stderr(&o));
    std::fs::write(dir.path().join("text.stsc"), b"hello, world").unwrap();
    let o = run(stallscope().arg("report").arg(dir.path().join("text.stsc")));
    assert!(stderr(&o).contains("bad magic"), "{}", stderr(&o));
}

#[test]
fn export_the_fixture_recording() {
    // Left in the target's temp dir, to look at: target/tmp/fixture-flame.svg.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join("fixture.stsc");
    std::fs::write(&file, support::recording_bytes(100)).unwrap();
    let svg = dir.join("fixture-flame.svg");
    let o = run(stallscope().arg("export").arg(&file).arg("--svg").arg(&svg).args(["--width", "1400"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("width=\"1400\""), "{}", &text[..600]);
    assert!(text.contains("shopd (pid 4242): stalled time, 2025-11-21 04:40:00 – 04:40:02 UTC, 5 stalls"));
}
