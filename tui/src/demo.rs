//! `stallscope demo`: the bundled demo service in a child process of this binary, and the live
//! alert printout used until the terminal UI lands.
//!
//! This is the only module that links the probe (feature `demo`); the rest of the client speaks
//! the wire protocol only.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use stallscope_wire::{Received, Update};

use crate::conn::Connection;
use crate::timefmt::fmt_ns;

/// The demo service, running.
#[derive(Debug)]
pub struct DemoChild {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where its probe listens.
    pub socket: PathBuf,
}

impl DemoChild {
    /// Stops the service and waits for it.
    pub fn stop(&mut self) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Starts `stallscope __demo-service` and waits for it to say where its probe listens.
pub fn spawn_service() -> Result<DemoChild> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = Command::new(exe)
        .arg("__demo-service")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the demo service")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout from the demo service")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("while waiting for the demo service")?;
    let socket = PathBuf::from(line.trim());
    if line.trim().is_empty() {
        let _ = child.kill();
        bail!("the demo service exited before its probe started listening");
    }
    Ok(DemoChild { child, pid, socket })
}

/// The child: the demo workload on a 2-worker runtime with the probe; prints the socket path,
/// then runs until `limit`, SIGTERM, or its parent going away.
pub fn run_service(limit: Duration) -> Result<()> {
    let probe = stallscope_probe::Probe::builder().name("stallscope-demo").with_env().build()?;
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    let rt = b.build().context("while building the demo runtime")?;
    let guard = probe.start(rt.handle());
    let Some(socket) = probe.socket_path() else {
        let missing = probe.refresh(Duration::from_secs(2)).map(|s| s.process.missing.join("; ")).unwrap_or_default();
        bail!("the demo's probe could not listen: {missing}");
    };
    println!("{}", socket.display());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let deadline = Instant::now() + limit;
    rt.block_on(async move {
        let work = tokio::spawn(stallscope_examples::demo::run());
        // SAFETY: as above.
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && unsafe { libc::getppid() } == parent {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        work.abort();
    });
    drop(guard);
    Ok(())
}

/// Prints stalls and alerts as they arrive, until `duration` or `stop`.
pub fn print_live(conn: &mut Connection, duration: Option<Duration>, stop: &AtomicBool) -> Result<()> {
    let deadline = duration.map(|d| Instant::now() + d);
    let mut seen_alerts: HashSet<stallscope_wire::model::AlertKey> = HashSet::new();
    let mut stalls = 0u64;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let Some(received) = conn.recv()? else { continue };
        match received {
            Received::Update(Update::StallEnded(s)) => {
                stalls += 1;
                println!(
                    "stall  {:>9}  worker {}  in {}  (spawned at {})",
                    fmt_ns(s.length_ns()),
                    s.worker,
                    s.culprit_text(),
                    s.spawned_at
                );
            }
            Received::Update(Update::Tick { snapshot, .. }) => {
                for a in &snapshot.alerts {
                    // Alerts repeat every tick while active, with changing figures; print each
                    // once, keyed as the model keys them.
                    let key = stallscope_wire::model::alert_key(a);
                    if seen_alerts.insert(key) {
                        println!("ALERT  {}\n       what to do: {}", a.summary, a.what_to_do);
                    }
                }
            }
            Received::Dropped { intervals } => println!("(lost {intervals} updates: this terminal is too slow)"),
            Received::Error { message } => println!("probe error: {message}"),
            _ => {}
        }
    }
    eprintln!("{stalls} stalls, {} distinct alerts", seen_alerts.len());
    Ok(())
}
