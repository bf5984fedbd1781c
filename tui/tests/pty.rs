//! End to end in a pseudo-terminal: the real `stallscope` binary attached to a real service
//! (the demo service: the probe in a Tokio service that blocks, leaks and saturates), driven by
//! keys as a person would, its screen read back through a terminal emulator (vt100).
#![cfg(all(target_os = "linux", feature = "demo"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Pty {
    master: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
    child: Child,
}

impl Pty {
    /// Runs `cmd` on a new pseudo-terminal of `cols`x`rows`, as its controlling terminal.
    fn spawn(mut cmd: Command, cols: u16, rows: u16) -> Pty {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two fds into the locals; the name and termios are optional.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened and are owned here.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm-256color");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let _ = slave_fd;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the pty");
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let mut reader = master.try_clone().expect("dup master");
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().expect("screen").process(&buf[..n]),
                }
            }
        });
        Pty { master, screen, child }
    }

    fn contents(&self) -> String {
        self.screen.lock().expect("screen").screen().contents()
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("write keys");
        self.master.flush().expect("flush");
    }

    /// Waits until the screen satisfies `f`, or fails with the last screen.
    fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + timeout;
        loop {
            let s = self.contents();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn attach_finds_the_culprit_in_the_flame_view() {
    let bin = env!("CARGO_BIN_EXE_stallscope");
    let mut service =
        Command::new(bin).args(["__demo-service", "--secs", "90"]).stdout(Stdio::piped()).spawn().expect("service");
    let mut line = String::new();
    BufReader::new(service.stdout.take().expect("stdout")).read_line(&mut line).expect("socket line");
    let socket = line.trim().to_string();
    assert!(socket.ends_with(".sock"), "{socket}");

    let mut cmd = Command::new(bin);
    cmd.arg("attach").arg(&socket);
    let mut ui = Pty::spawn(cmd, 120, 36);
    ui.wait_for("the overview", Duration::from_secs(20), |s| s.contains("Workers busy") && s.contains("connected"));
    // Wait for a stall: the Stalls tab lists it.
    ui.send("2");
    ui.wait_for("a stall in the table", Duration::from_secs(30), |s| s.contains(" ms ") && s.contains(" w"));
    ui.send("3");
    let culprits = ["fetch_rates_blocking", "render_report_cpu", "update_shared_cache"];
    let screen = ui.wait_for("a culprit in the flame graph", Duration::from_secs(30), |s| {
        s.contains("Stalled time") && culprits.iter().any(|c| s.contains(c))
    });
    assert!(screen.contains("samples"), "{screen}");
    eprintln!("{screen}");
    // Search highlights a frame and gives its share.
    ui.send("/sleep\r");
    ui.wait_for("the search share", Duration::from_secs(10), |s| s.contains("search \"sleep\":"));
    ui.send("q");
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = ui.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < until, "q did not quit; screen:\n{}", ui.contents());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let parser = ui.screen.lock().expect("screen");
    assert!(!parser.screen().alternate_screen(), "the alternate screen was left");
    assert!(!parser.screen().hide_cursor(), "the cursor is shown again");
    drop(parser);
    let _ = service.kill();
    let _ = service.wait();
}

#[test]
fn a_dead_probe_shows_disconnected_and_the_ui_keeps_running() {
    let bin = env!("CARGO_BIN_EXE_stallscope");
    let mut service =
        Command::new(bin).args(["__demo-service", "--secs", "90"]).stdout(Stdio::piped()).spawn().expect("service");
    let mut line = String::new();
    BufReader::new(service.stdout.take().expect("stdout")).read_line(&mut line).expect("socket line");
    let mut cmd = Command::new(bin);
    cmd.arg("attach").arg(line.trim());
    let mut ui = Pty::spawn(cmd, 100, 30);
    ui.wait_for("connected", Duration::from_secs(20), |s| s.contains("connected") && s.contains("Workers busy"));
    service.kill().expect("kill the service");
    let _ = service.wait();
    ui.wait_for("disconnected", Duration::from_secs(20), |s| s.contains("disconnected"));
    // Still answering keys.
    ui.send("4");
    ui.wait_for("the Tasks view", Duration::from_secs(10), |s| s.contains("Spawn locations"));
    ui.send("q");
    let until = Instant::now() + Duration::from_secs(10);
    while ui.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < until, "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM (a terminal closed, a `kill`) ends the UI cleanly and gives the terminal back.
#[test]
fn sigterm_restores_the_terminal() {
    let bin = env!("CARGO_BIN_EXE_stallscope");
    let dir = tempfile::tempdir().expect("tempdir");
    // No probe at all: the UI waits, retrying, and must still end cleanly.
    let mut cmd = Command::new(bin);
    cmd.arg("attach").arg(dir.path().join("1-nothing.sock"));
    let mut ui = Pty::spawn(cmd, 90, 24);
    ui.wait_for("the retry message", Duration::from_secs(20), |s| s.contains("disconnected") && s.contains("retry"));
    // SAFETY: signalling a child we own.
    unsafe { libc::kill(ui.child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = ui.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < until, "SIGTERM did not end the UI; screen:\n{}", ui.contents());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    let parser = ui.screen.lock().expect("screen");
    assert!(!parser.screen().alternate_screen(), "the alternate screen was left");
    assert!(!parser.screen().hide_cursor(), "the cursor is shown again");
}

/// Starts the demo service with its socket under `runtime_dir` (as `XDG_RUNTIME_DIR`).
fn demo_service(runtime_dir: &std::path::Path) -> Child {
    let mut service = Command::new(env!("CARGO_BIN_EXE_stallscope"))
        .args(["__demo-service", "--secs", "90"])
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("service");
    let mut line = String::new();
    BufReader::new(service.stdout.take().expect("stdout")).read_line(&mut line).expect("socket line");
    assert!(line.trim().starts_with(&runtime_dir.display().to_string()), "{line}");
    service
}

fn wait_exit(ui: &mut Pty) -> std::process::ExitStatus {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = ui.child.try_wait().expect("wait") {
            return st;
        }
        assert!(Instant::now() < until, "did not exit; screen:\n{}", ui.contents());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `stallscope` with two probes: the picker offers both; one is killed while it is shown and
/// leaves the list (as it leaves `stallscope list`); Enter attaches to the one left.
#[test]
fn the_picker_offers_live_probes_only() {
    let rt = tempfile::tempdir().expect("tempdir");
    let mut first = demo_service(rt.path());
    let mut second = demo_service(rt.path());
    let mut ui = Pty::spawn(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_stallscope"));
            c.env("XDG_RUNTIME_DIR", rt.path());
            c
        },
        100,
        30,
    );
    ui.wait_for("the picker", Duration::from_secs(20), |s| s.contains("2 probes are running on this machine"));
    let screen = ui.contents();
    assert!(screen.contains(&first.id().to_string()) && screen.contains(&second.id().to_string()), "{screen}");
    assert!(screen.contains("Enter attach"), "{screen}");
    // SIGKILL: the socket stays behind, as when a service crashes.
    first.kill().expect("kill");
    first.wait().expect("reap");
    ui.wait_for("the dead probe to go", Duration::from_secs(10), |s| s.contains("1 probe is running on this machine"));
    assert!(!ui.contents().contains(&format!(" {} ", first.id())), "{}", ui.contents());
    ui.send("\r");
    ui.wait_for("the UI on the probe left", Duration::from_secs(20), |s| {
        s.contains("connected") && s.contains(&format!("(pid {})", second.id()))
    });
    ui.send("q");
    assert!(wait_exit(&mut ui).success());
    let _ = second.kill();
    let _ = second.wait();
}

/// `stallscope --record FILE` (no subcommand) records what the UI receives, as `attach` does.
#[test]
fn stallscope_alone_records_with_record() {
    let rt = tempfile::tempdir().expect("tempdir");
    let mut service = demo_service(rt.path());
    let file = rt.path().join("ui.stsc");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stallscope"));
    cmd.arg("--record").arg(&file).env("XDG_RUNTIME_DIR", rt.path());
    let mut ui = Pty::spawn(cmd, 120, 30);
    ui.wait_for("recording", Duration::from_secs(20), |s| s.contains("connected") && s.contains("rec "));
    ui.wait_for("an update", Duration::from_secs(20), |s| s.contains("Workers busy"));
    ui.send("q");
    assert!(wait_exit(&mut ui).success());
    let _ = service.kill();
    let _ = service.wait();
    let o = Command::new(env!("CARGO_BIN_EXE_stallscope")).arg("report").arg(&file).output().expect("report");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains(&format!("pid {}", service.id())), "the recording is of the service:\n{report}");
}
