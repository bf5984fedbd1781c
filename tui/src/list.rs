//! `stallscope list`: the probes on this machine.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use stallscope_wire::discovery::{self, Found};

/// One row of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRow {
    /// What discovery found.
    pub found: Found,
    /// How long the process has run (from `/proc/<pid>/stat`), or since its socket was created.
    pub uptime: Option<Duration>,
}

/// The probes whose sockets are in `dir`, by pid.
pub fn probes(dir: &Path) -> Vec<ProbeRow> {
    discovery::list(dir)
        .into_iter()
        .map(|found| {
            let uptime = if found.alive { process_uptime(found.pid).or_else(|| socket_age(&found.path)) } else { None };
            ProbeRow { found, uptime }
        })
        .collect()
}

/// Seconds since boot from `/proc/uptime`.
fn system_uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()
}

/// How long process `pid` has run: its start time (`/proc/<pid>/stat` field 22, clock ticks
/// after boot) against `/proc/uptime`.
pub fn process_uptime(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    let after = &stat[stat.rfind(')')? + 1..];
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let up = system_uptime()? - start_ticks as f64 / hz as f64;
    Some(Duration::from_secs_f64(up.max(0.0)))
}

fn socket_age(path: &Path) -> Option<Duration> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(m).ok()
}

/// `3d 4h`, `2h 05m`, `4m 07s`, `12s`.
pub fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if days > 0 {
        format!("{days}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// The listing as text. Dead probes (stale sockets) are shown only with `all`, marked.
pub fn render(rows: &[ProbeRow], dir: &Path, all: bool) -> String {
    let mut o = String::new();
    let shown: Vec<&ProbeRow> = rows.iter().filter(|r| all || r.found.alive).collect();
    let dead = rows.iter().filter(|r| !r.found.alive).count();
    if shown.is_empty() {
        let _ = writeln!(o, "no probes running on this machine (looked in {})", dir.display());
    } else {
        let _ = writeln!(o, "{:>8}  {:<20} {:>8}  SOCKET", "PID", "NAME", "UPTIME");
        for r in shown {
            let uptime = match (r.found.alive, r.uptime) {
                (false, _) => "dead".to_string(),
                (true, Some(u)) => fmt_uptime(u),
                (true, None) => "?".to_string(),
            };
            let _ = writeln!(
                o,
                "{:>8}  {:<20} {:>8}  {}{}",
                r.found.pid,
                r.found.name,
                uptime,
                r.found.path.display(),
                if r.found.alive { "" } else { "  (stale socket: the process has exited)" }
            );
        }
    }
    if dead > 0 && !all {
        let _ = writeln!(
            o,
            "({dead} stale socket{} of exited processes not shown; --all shows them)",
            if dead == 1 { "" } else { "s" }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_an_uptime() {
        let up = process_uptime(std::process::id()).expect("/proc is mounted");
        assert!(up < Duration::from_secs(24 * 3600), "{up:?}");
    }

    #[test]
    fn listing_marks_dead_probes() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join(format!("{me}-svc.sock")), b"").unwrap();
        std::fs::write(dir.path().join("99999999-gone.sock"), b"").unwrap();
        let rows = probes(dir.path());
        let text = render(&rows, dir.path(), false);
        assert!(text.contains(&format!("{me}  svc")), "{text}");
        assert!(!text.contains("gone"), "{text}");
        assert!(text.contains("1 stale socket of exited processes not shown"), "{text}");
        let text = render(&rows, dir.path(), true);
        assert!(text.contains("gone") && text.contains("dead") && text.contains("stale socket"), "{text}");
        let empty = tempfile::tempdir().unwrap();
        assert!(render(&probes(empty.path()), empty.path(), false).starts_with("no probes running"));
    }

    #[test]
    fn uptimes_read_well() {
        assert_eq!(fmt_uptime(Duration::from_secs(12)), "12s");
        assert_eq!(fmt_uptime(Duration::from_secs(247)), "4m 07s");
        assert_eq!(fmt_uptime(Duration::from_secs(7500)), "2h 05m");
        assert_eq!(fmt_uptime(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }
}
