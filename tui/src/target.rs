//! `TARGET`: which probe to talk to.
//!
//! A target is given as a pid (`4242`: the probe socket of that process on this machine), a
//! socket path (`/run/user/1000/stallscope/4242-api.sock`, anything containing a `/` or ending in
//! `.sock`), or a TCP address (`tcp://127.0.0.1:7755`, `tcp://[::1]:7755`,
//! `tcp://localhost:7755`). With no target at all, the only live probe on the machine is used.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use stallscope_wire::discovery::{self, Found};

/// What the user asked to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A process id: its socket is looked up in the socket directory.
    Pid(u32),
    /// A Unix socket path.
    Socket(PathBuf),
    /// A TCP address, `host:port`.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

/// Where to connect, once a [`Target`] is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// Why a target could not be parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// An empty argument.
    #[error("empty target: give a pid, a socket path or tcp://HOST:PORT")]
    Empty,
    /// `tcp://` with something that is not `HOST:PORT`.
    #[error("bad address '{given}': {why} (expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:7755 or tcp://[::1]:7755)")]
    BadAddress {
        /// The argument.
        given: String,
        /// What is wrong with it.
        why: String,
    },
    /// Neither a pid, a path nor an address.
    #[error(
        "bad target '{0}': give a pid (4242), a socket path (/run/user/1000/stallscope/4242-api.sock) or \
         tcp://HOST:PORT"
    )]
    Unrecognised(String),
    /// No socket for that pid, though the process runs (its probe may not listen yet).
    #[error("no probe with pid {pid} on this machine ({})", probes_phrase(.dir, .probes))]
    NoSuchPid {
        /// The pid asked for.
        pid: u32,
        /// Where sockets were looked for.
        dir: PathBuf,
        /// The probes that are there.
        probes: Vec<Found>,
    },
    /// No socket for that pid, and no process with that pid either.
    #[error("no process with pid {pid} is running on this machine ({})", probes_phrase(.dir, .probes))]
    NoProcess {
        /// The pid asked for.
        pid: u32,
        /// Where sockets were looked for.
        dir: PathBuf,
        /// The probes that are there.
        probes: Vec<Found>,
    },
    /// The pid has a socket, but the process is gone.
    #[error("the probe with pid {pid} has exited (stale socket {})", .path.display())]
    Exited {
        /// The pid asked for.
        pid: u32,
        /// The stale socket.
        path: PathBuf,
    },
    /// No target given and no live probe found.
    #[error(
        "no probe is running on this machine (looked in {}); start a service with the probe, or give a target",
        .dir.display()
    )]
    NoProbes {
        /// Where sockets were looked for.
        dir: PathBuf,
    },
    /// No target given and several live probes found.
    #[error("{} probes are running on this machine; choose one by pid:\n{}", .probes.len(), probe_lines(.probes))]
    Ambiguous {
        /// The live probes.
        probes: Vec<Found>,
    },
}

impl TargetError {
    /// Whether the target is a pid whose process is gone: no probe will ever answer for it.
    pub fn process_gone(&self) -> bool {
        matches!(self, TargetError::NoProcess { .. } | TargetError::Exited { .. })
    }
}

/// Whether a process with this pid exists on this machine.
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn probes_phrase(dir: &Path, probes: &[Found]) -> String {
    let live: Vec<String> = probes.iter().filter(|f| f.alive).map(|f| format!("{} {}", f.pid, f.name)).collect();
    if live.is_empty() {
        format!("no probes running; looked in {}", dir.display())
    } else {
        format!("probes: {}", live.join(", "))
    }
}

fn probe_lines(probes: &[Found]) -> String {
    probes.iter().map(|f| format!("  {:>7}  {:<20} {}", f.pid, f.name, f.path.display())).collect::<Vec<_>>().join("\n")
}

impl fmt::Display for Target {
    /// As the user would write it, with a pid named as one: `pid 4242`, a path, `tcp://h:p`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "pid {pid}"),
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Tcp { host, port } => write!(f, "{}", Endpoint::Tcp { host: host.clone(), port: *port }),
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    /// ```
    /// use stallscope::target::Target;
    /// assert_eq!("4242".parse::<Target>().unwrap(), Target::Pid(4242));
    /// assert_eq!("tcp://[::1]:7755".parse::<Target>().unwrap(), Target::Tcp { host: "::1".into(), port: 7755 });
    /// assert!("tcp://localhost".parse::<Target>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Target, TargetError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(TargetError::Empty);
        }
        if let Some(rest) = t.strip_prefix("tcp://") {
            return parse_tcp(s, rest);
        }
        if t.contains("://") {
            let scheme = t.split("://").next().unwrap_or_default();
            return Err(TargetError::BadAddress {
                given: s.to_string(),
                why: format!("unsupported scheme '{scheme}://' (only tcp:// is)"),
            });
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return match t.parse::<u32>() {
                Ok(pid) if pid > 0 => Ok(Target::Pid(pid)),
                _ => Err(TargetError::Unrecognised(s.to_string())),
            };
        }
        if t.contains('/') || t.ends_with(".sock") {
            return Ok(Target::Socket(PathBuf::from(t)));
        }
        Err(TargetError::Unrecognised(s.to_string()))
    }
}

fn parse_tcp(given: &str, rest: &str) -> Result<Target, TargetError> {
    let bad = |why: &str| TargetError::BadAddress { given: given.to_string(), why: why.to_string() };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("missing :PORT"))?;
        (host, port)
    } else {
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("missing :PORT"))?;
        if host.contains(':') {
            return Err(bad("put an IPv6 address in brackets"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if host.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad("the host has characters a host name cannot have"));
    }
    let port: u16 = match port.parse() {
        Ok(0) => return Err(bad("port 0")),
        Ok(p) => p,
        Err(_) => return Err(bad(&format!("'{port}' is not a port number (1-65535)"))),
    };
    Ok(Target::Tcp { host: host.to_string(), port })
}

impl Target {
    /// Where to connect, looking pids up among the sockets in `dir`.
    pub fn resolve(&self, dir: &Path) -> Result<Endpoint, TargetError> {
        match self {
            Target::Socket(p) => Ok(Endpoint::Unix(p.clone())),
            Target::Tcp { host, port } => Ok(Endpoint::Tcp { host: host.clone(), port: *port }),
            Target::Pid(pid) => {
                let probes = discovery::list(dir);
                let mine: Vec<&Found> = probes.iter().filter(|f| f.pid == *pid).collect();
                match mine.iter().find(|f| f.alive).or(mine.first()) {
                    Some(f) if f.alive => Ok(Endpoint::Unix(f.path.clone())),
                    Some(f) => Err(TargetError::Exited { pid: *pid, path: f.path.clone() }),
                    None if !process_exists(*pid) => {
                        Err(TargetError::NoProcess { pid: *pid, dir: dir.to_path_buf(), probes })
                    }
                    None => Err(TargetError::NoSuchPid { pid: *pid, dir: dir.to_path_buf(), probes }),
                }
            }
        }
    }
}

/// The endpoint for an optional target: the target itself, or with none the only live probe
/// in `dir` (an error lists them when there are several).
pub fn resolve_or_only(target: Option<&Target>, dir: &Path) -> Result<Endpoint, TargetError> {
    if let Some(t) = target {
        return t.resolve(dir);
    }
    let live: Vec<Found> = discovery::list(dir).into_iter().filter(|f| f.alive).collect();
    match live.len() {
        0 => Err(TargetError::NoProbes { dir: dir.to_path_buf() }),
        1 => Ok(Endpoint::Unix(live[0].path.clone())),
        _ => Err(TargetError::Ambiguous { probes: live }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_show_as_written() {
        assert_eq!(Target::Pid(4242).to_string(), "pid 4242");
        assert_eq!(Target::Socket("/r/4-a.sock".into()).to_string(), "/r/4-a.sock");
        assert_eq!(Target::Tcp { host: "::1".into(), port: 7755 }.to_string(), "tcp://[::1]:7755");
    }

    #[test]
    fn targets_parse() {
        assert_eq!("123".parse::<Target>(), Ok(Target::Pid(123)));
        assert_eq!("./x.sock".parse::<Target>(), Ok(Target::Socket("./x.sock".into())));
        assert_eq!("4-api.sock".parse::<Target>(), Ok(Target::Socket("4-api.sock".into())));
        assert_eq!("tcp://127.0.0.1:7755".parse::<Target>(), Ok(Target::Tcp { host: "127.0.0.1".into(), port: 7755 }));
        assert_eq!("tcp://localhost:7755/".parse::<Target>(), Ok(Target::Tcp { host: "localhost".into(), port: 7755 }));
    }

    #[test]
    fn bad_targets_say_why() {
        let msg = |s: &str| s.parse::<Target>().unwrap_err().to_string();
        assert!(msg("tcp://localhost").contains("missing :PORT"), "{}", msg("tcp://localhost"));
        assert!(msg("tcp://:80").contains("missing host"));
        assert!(msg("tcp://h:99999").contains("'99999' is not a port number"));
        assert!(msg("tcp://::1:80").contains("brackets"));
        assert!(msg("http://h:80").contains("unsupported scheme 'http://'"));
        assert!(msg("api").contains("bad target 'api'"));
        assert!(msg("0").contains("bad target '0'"));
        assert!(msg("").contains("empty target"));
    }

    #[test]
    fn pids_are_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join(format!("{me}-svc.sock")), b"").unwrap();
        std::fs::write(dir.path().join("99999999-gone.sock"), b"").unwrap();
        assert_eq!(Target::Pid(me).resolve(dir.path()), Ok(Endpoint::Unix(dir.path().join(format!("{me}-svc.sock")))));
        // A process without a probe socket (its probe may not listen yet): the parent process.
        let parent = std::os::unix::process::parent_id();
        let e = Target::Pid(parent).resolve(dir.path()).unwrap_err();
        assert!(!e.process_gone());
        assert_eq!(e.to_string(), format!("no probe with pid {parent} on this machine (probes: {me} svc)"));
        let e = Target::Pid(99999999).resolve(dir.path()).unwrap_err();
        assert!(e.process_gone() && e.to_string().contains("has exited"), "{e}");
        assert_eq!(resolve_or_only(None, dir.path()), Ok(Endpoint::Unix(dir.path().join(format!("{me}-svc.sock")))));

        let empty = tempfile::tempdir().unwrap();
        let e = Target::Pid(parent).resolve(empty.path()).unwrap_err().to_string();
        let start = format!("no probe with pid {parent} on this machine (no probes running; looked in");
        assert!(e.starts_with(&start), "{e}");
        // No socket and no process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let e = Target::Pid(dead).resolve(dir.path()).unwrap_err();
        assert!(e.process_gone());
        assert_eq!(e.to_string(), format!("no process with pid {dead} is running on this machine (probes: {me} svc)"));
        assert!(matches!(resolve_or_only(None, empty.path()), Err(TargetError::NoProbes { .. })));
    }

    #[test]
    fn several_probes_ask_to_choose() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join(format!("{me}-a.sock")), b"").unwrap();
        std::fs::write(dir.path().join("1-init.sock"), b"").unwrap();
        let e = resolve_or_only(None, dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("2 probes are running on this machine; choose one by pid:"), "{e}");
        assert!(e.contains("init") && e.contains(&me.to_string()), "{e}");
    }
}
