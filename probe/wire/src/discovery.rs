//! Where probes listen, and how clients find them.
//!
//! A probe's private socket lives at `$XDG_RUNTIME_DIR/stallscope/<pid>-<name>.sock`, or under
//! `/tmp/stallscope-<uid>/` when `XDG_RUNTIME_DIR` is unset. The directory is mode 0700 and owned
//! by the user; the socket is mode 0600. Both the probe (to create it and clean up stale sockets)
//! and the client (to list probes) use this module.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory that holds this user's probe sockets.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() && d.is_dir() => d.join("stallscope"),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => PathBuf::from(format!("/tmp/stallscope-{}", unsafe { libc::getuid() })),
    }
}

/// Creates the socket directory (mode 0700) or checks that an existing one is private: owned by
/// this user and not accessible to group or others. Refuses anything else, so that another user
/// cannot pre-create the directory and intercept connections.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory owned by uid {me}", dir.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `<dir>/<pid>-<name>.sock`, with the name reduced to safe characters.
pub fn socket_path(dir: &Path, pid: u32, name: &str) -> PathBuf {
    socket_path_nth(dir, pid, name, 1)
}

/// The socket of the `n`-th probe of one process with this name: [`socket_path`] for the first,
/// `<dir>/<pid>-<name>-<n>.sock` for the others (the suffix survives the name's truncation).
pub fn socket_path_nth(dir: &Path, pid: u32, name: &str, n: u32) -> PathBuf {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' })
        .take(40)
        .collect();
    if n <= 1 {
        dir.join(format!("{pid}-{clean}.sock"))
    } else {
        dir.join(format!("{pid}-{clean}-{n}.sock"))
    }
}

/// A probe socket found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Process id from the socket name.
    pub pid: u32,
    /// Process name from the socket name.
    pub name: String,
    /// Socket path.
    pub path: PathBuf,
    /// Whether the process is alive.
    pub alive: bool,
}

fn parse_name(file: &str) -> Option<(u32, String)> {
    let stem = file.strip_suffix(".sock")?;
    let (pid, name) = stem.split_once('-')?;
    Some((pid.parse().ok()?, name.to_string()))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every probe socket in `dir`, sorted by pid.
pub fn list(dir: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some((pid, name)) = file.to_str().and_then(parse_name) else { continue };
        out.push(Found { pid, name, path: e.path(), alive: pid_alive(pid) });
    }
    out.sort_by_key(|f| f.pid);
    out
}

/// Removes sockets whose process is gone. Returns how many were removed.
pub fn remove_stale(dir: &Path) -> usize {
    list(dir).into_iter().filter(|f| !f.alive).filter(|f| std::fs::remove_file(&f.path).is_ok()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_and_sanitised() {
        assert_eq!(parse_name("123-my_svc.sock"), Some((123, "my_svc".to_string())));
        assert_eq!(parse_name("x-y.sock"), None);
        assert_eq!(parse_name("123-svc.txt"), None);
        let p = socket_path(Path::new("/d"), 7, "a b/c");
        assert_eq!(p, PathBuf::from("/d/7-a_b_c.sock"));
    }

    #[test]
    fn the_directory_is_private_and_stale_sockets_go() {
        let dir = std::env::temp_dir().join(format!("stallscope-disc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A pid that cannot exist (above the kernel's pid_max).
        std::fs::write(dir.join("99999999-gone.sock"), b"").unwrap();
        let me = socket_path(&dir, std::process::id(), "me");
        std::fs::write(&me, b"").unwrap();
        let found = list(&dir);
        assert_eq!(found.len(), 2);
        assert_eq!(remove_stale(&dir), 1);
        let left = list(&dir);
        assert_eq!(left.len(), 1);
        assert!(left[0].alive && left[0].name == "me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
