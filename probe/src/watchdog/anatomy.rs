//! A stall's anatomy: where the stalled thread's wall time went (on CPU, waiting for a CPU,
//! blocked), read from the kernel's accounting of that thread alone, and what it was blocked in.
//!
//! Runs on the watchdog thread, never on the poll path. The watchdog reads a thread's counters
//! ([`Counters::read`]: its CPU clock and the run-queue wait from `/proc/self/task/TID/schedstat`)
//! when it first sees a poll running. Once the poll passes half the threshold it measures it
//! ([`Track`]): at that moment and at each stack sample it observes the thread (its counters, the
//! cgroup's throttling, and `/proc/self/task/TID/syscall`: the system call it sleeps in and, for
//! a file descriptor, its target, a path or a socket's peer), and it reads the counters once more
//! when it sees the poll end. The aggregator turns that into a [`StallAnatomy`]
//! ([`Raw::anatomy`], which says how the window is scaled, split and capped).
//!
//! Costs (docs/benchmarks.md, "Stall anatomy"): two system calls per poll the watchdog sees
//! running at a scan (a scan happens every threshold / 2 to / 8 while a worker is busy, so at
//! most a few hundred a second per busy worker); three to five per observation of a poll past
//! half the threshold (plus a `readlink` and a `getpeername` the first time a descriptor is seen
//! in that poll). Idle workers cost nothing: a parked worker is not in a poll.

use std::fs::File;
use std::os::unix::fs::FileExt;

use stallscope_wire::{BlockedIn, StallAnatomy};

/// Distinct "blocked in" entries kept per stall; later ones are counted in the last.
const MAX_BLOCKED_IN: usize = 8;

/// One reading of a thread's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// When it was taken (raw clock).
    pub(crate) at: u64,
    /// CPU time of the thread, ns (its thread CPU clock: exact, unlike schedstat's run time,
    /// which lags by up to a scheduler tick while the thread runs).
    pub(crate) cpu_ns: u64,
    /// Time the thread spent runnable on a run queue without running, ns (schedstat's second
    /// field). A wait in progress is added only when the thread gets its CPU back.
    pub(crate) wait_ns: u64,
}

/// The files the watchdog keeps open for one thread, and its CPU clock.
#[derive(Debug)]
pub(crate) struct Counters {
    tid: i32,
    clock: libc::clockid_t,
    schedstat: Option<File>,
    syscall: Option<File>,
}

impl Counters {
    pub(crate) fn open(tid: i32) -> Counters {
        let path = |leaf: &str| format!("/proc/self/task/{tid}/{leaf}");
        Counters {
            tid,
            // The kernel's per-thread CPU clock id (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED),
            // what glibc's pthread_getcpuclockid builds): from the tid, so a thread that has
            // exited gives an error instead of a dangling pthread_t.
            clock: (!(tid as libc::clockid_t) << 3) | 6,
            schedstat: File::open(path("schedstat")).ok(),
            syscall: File::open(path("syscall")).ok(),
        }
    }

    pub(crate) fn tid(&self) -> i32 {
        self.tid
    }

    /// The thread's counters now, `None` when the thread has gone or `/proc` is not readable.
    /// Two system calls (about 2 µs on the benchmark machine).
    pub(crate) fn read(&self, at: u64) -> Option<Reading> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid out pointer; an unknown clock id gives an error, nothing else.
        if unsafe { libc::clock_gettime(self.clock, &mut ts) } != 0 {
            return None;
        }
        let cpu_ns = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
        let mut buf = [0u8; 96];
        let n = self.schedstat.as_ref()?.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let wait_ns = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
        Some(Reading { at, cpu_ns, wait_ns })
    }
}

/// The process's cgroup `cpu.stat`, if it has throttling counters (cgroup v2's
/// `throttled_usec`, or v1's `throttled_time` under the cpu controller).
#[derive(Debug, Default)]
pub(crate) struct Cgroup {
    stat: Option<(File, CgroupVersion)>,
}

#[derive(Clone, Copy, Debug)]
enum CgroupVersion {
    V2,
    V1,
}

impl Cgroup {
    pub(crate) fn open() -> Cgroup {
        Cgroup { stat: Self::find() }
    }

    fn find() -> Option<(File, CgroupVersion)> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            // v2 is mounted at /sys/fs/cgroup, or at /sys/fs/cgroup/unified on a hybrid host.
            let candidates = if controllers.is_empty() {
                vec![
                    (format!("/sys/fs/cgroup/{path}/cpu.stat"), CgroupVersion::V2),
                    (format!("/sys/fs/cgroup/unified/{path}/cpu.stat"), CgroupVersion::V2),
                ]
            } else if controllers.split(',').any(|c| c == "cpu") {
                vec![(format!("/sys/fs/cgroup/{controllers}/{path}/cpu.stat"), CgroupVersion::V1)]
            } else {
                continue;
            };
            for (file, version) in candidates {
                let cg = Cgroup { stat: File::open(&file).ok().map(|f| (f, version)) };
                if cg.throttled_ns().is_some() {
                    return cg.stat;
                }
            }
        }
        None
    }

    /// Whether throttling can be read on this host.
    pub(crate) fn available(&self) -> bool {
        self.stat.is_some()
    }

    /// Time the cgroup's CPU quota has throttled it, ns, when readable.
    pub(crate) fn throttled_ns(&self) -> Option<u64> {
        let (file, version) = self.stat.as_ref()?;
        let mut buf = [0u8; 1024];
        let n = file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let (key, scale) = match version {
            CgroupVersion::V2 => ("throttled_usec", 1_000),
            CgroupVersion::V1 => ("throttled_time", 1),
        };
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok().map(|v| v.saturating_mul(scale)))?
        })
    }
}

// === what a thread is blocked in ===

/// A system call a thread was seen in, before its target is described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InSyscall {
    nr: i64,
    args: [u64; 3],
}

/// What `/proc/self/task/TID/syscall` says: `None` while the thread runs or is not in a system
/// call (then it is on CPU or waiting for one), the call and its first arguments while it sleeps
/// in one.
pub(crate) fn observe(counters: &Counters) -> Option<InSyscall> {
    let mut buf = [0u8; 256];
    let n = counters.syscall.as_ref()?.read_at(&mut buf, 0).ok()?;
    parse_syscall(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_syscall(text: &str) -> Option<InSyscall> {
    let mut words = text.split_ascii_whitespace();
    let nr: i64 = words.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 3];
    for a in &mut args {
        *a = u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some(InSyscall { nr, args })
}

/// The "blocked in" list of one stall, built as samples come.
#[derive(Debug, Default)]
pub(crate) struct BlockedLog {
    /// (system call, first argument) already described, with their index in `entries`.
    seen: Vec<(InSyscall, usize)>,
    entries: Vec<BlockedIn>,
}

impl BlockedLog {
    /// Counts one sample in `s`; returns what it was blocked in, for the sample's stack.
    pub(crate) fn add(&mut self, s: InSyscall) -> String {
        if let Some((_, i)) = self.seen.iter().find(|(k, _)| k.nr == s.nr && k.args[0] == s.args[0]) {
            self.entries[*i].samples += 1;
            return self.entries[*i].describe();
        }
        let entry = describe(s);
        let i = match self.entries.iter().position(|e| e.syscall == entry.syscall && e.target == entry.target) {
            Some(i) => i,
            None if self.entries.len() < MAX_BLOCKED_IN => {
                self.entries.push(BlockedIn { samples: 0, ..entry });
                self.entries.len() - 1
            }
            None => self.entries.len() - 1,
        };
        self.entries[i].samples += 1;
        if self.seen.len() < 4 * MAX_BLOCKED_IN {
            self.seen.push((s, i));
        }
        self.entries[i].describe()
    }

    pub(crate) fn into_entries(mut self) -> Vec<BlockedIn> {
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.samples));
        self.entries
    }
}

/// The system call's name and what it waits on.
fn describe(s: InSyscall) -> BlockedIn {
    let name = syscall_name(s.nr);
    let syscall = match name {
        Some(n) => format!("{n}(2)"),
        None => format!("system call {}", s.nr),
    };
    let target = match name.unwrap_or("") {
        "futex" | "futex_waitv" => Some("(a lock, a condition variable or a channel)".to_string()),
        "nanosleep" | "clock_nanosleep" => Some("(a sleep)".to_string()),
        "poll" | "ppoll" | "select" | "pselect6" | "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => {
            Some("(waiting for file descriptors)".to_string())
        }
        "wait4" | "waitid" => Some("(waiting for a child process)".to_string()),
        "connect" => sockaddr_at(s.args[1], s.args[2]).or_else(|| fd_target(s.args[0])),
        n if FD_FIRST.contains(&n) => fd_target(s.args[0]),
        _ => None,
    };
    BlockedIn { syscall, target, samples: 0 }
}

/// System calls whose first argument is the file descriptor they wait on.
const FD_FIRST: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "recvmmsg",
    "sendmmsg",
    "accept",
    "accept4",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "flock",
    "fcntl",
    "ioctl",
    "splice",
    "tee",
    "copy_file_range",
    "sendfile",
    "fallocate",
    "ftruncate",
    "getdents64",
    "close",
    "shutdown",
];

/// A file descriptor's target: its path, or for a socket its peer (or local address while it has
/// none).
fn fd_target(fd: u64) -> Option<String> {
    let fd = i32::try_from(fd).ok()?;
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let link = link.to_string_lossy().into_owned();
    if !link.starts_with("socket:") {
        return Some(link);
    }
    // The descriptor is this process's own, so its peer can be asked directly (the number may
    // have been reused since the read of `syscall`: then this names the new socket).
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid out pointers of the stated length.
    if unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) } == 0 {
        if let Some(a) = format_sockaddr(&addr, len) {
            return Some(format!("a socket to {a}"));
        }
    }
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    if unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) } == 0 {
        if let Some(a) = format_sockaddr(&addr, len) {
            return Some(format!("a socket on {a}"));
        }
    }
    Some(format!("a socket ({link})"))
}

/// The address a `connect(2)` in progress is connecting to: read from the caller's memory
/// (this process's own) with `process_vm_readv`, which fails cleanly on a bad pointer.
fn sockaddr_at(ptr: u64, len: u64) -> Option<String> {
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    if ptr == 0 || len == 0 {
        return None;
    }
    let local = libc::iovec { iov_base: (&raw mut addr).cast(), iov_len: len };
    let remote = libc::iovec { iov_base: ptr as *mut libc::c_void, iov_len: len };
    // SAFETY: our own address space; the kernel checks the remote range and fails with EFAULT.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n != len as isize {
        return None;
    }
    format_sockaddr(&addr, len as libc::socklen_t).map(|a| format!("a socket to {a}"))
}

fn format_sockaddr(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<String> {
    let len = len as usize;
    match i32::from(addr.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says so and the length covers it.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(format!("{ip}:{}", u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(format!("[{ip}]:{}", u16::from_be(a.sin6_port)))
        }
        libc::AF_UNIX => {
            // SAFETY: as above; sun_path is read within `len`.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_un) };
            let off = std::mem::size_of::<libc::sa_family_t>();
            let n = len.saturating_sub(off).min(a.sun_path.len());
            let bytes: Vec<u8> = a.sun_path[..n].iter().map(|c| *c as u8).take_while(|b| *b != 0).collect();
            Some(if bytes.is_empty() {
                "an unnamed unix socket".to_string()
            } else {
                format!("unix:{}", String::from_utf8_lossy(&bytes))
            })
        }
        _ => None,
    }
}

/// Names of the system calls a thread can block in, from the `libc` numbers of this
/// architecture (a table of the ABI, not of culprits: any other call is named by its number).
fn syscall_name(nr: i64) -> Option<&'static str> {
    macro_rules! names {
        ($($name:ident),* $(,)?) => {
            $(if nr == libc::$name as i64 { return Some(&stringify!($name)[4..]); })*
        };
    }
    names!(
        SYS_read,
        SYS_write,
        SYS_pread64,
        SYS_pwrite64,
        SYS_readv,
        SYS_writev,
        SYS_preadv,
        SYS_pwritev,
        SYS_preadv2,
        SYS_pwritev2,
        SYS_recvfrom,
        SYS_sendto,
        SYS_recvmsg,
        SYS_sendmsg,
        SYS_recvmmsg,
        SYS_sendmmsg,
        SYS_accept,
        SYS_accept4,
        SYS_connect,
        SYS_fsync,
        SYS_fdatasync,
        SYS_sync_file_range,
        SYS_flock,
        SYS_fcntl,
        SYS_ioctl,
        SYS_splice,
        SYS_tee,
        SYS_copy_file_range,
        SYS_sendfile,
        SYS_fallocate,
        SYS_ftruncate,
        SYS_getdents64,
        SYS_close,
        SYS_shutdown,
        SYS_futex,
        SYS_nanosleep,
        SYS_clock_nanosleep,
        SYS_ppoll,
        SYS_pselect6,
        SYS_epoll_pwait,
        SYS_wait4,
        SYS_waitid,
        SYS_openat,
        SYS_newfstatat,
        SYS_unlinkat,
        SYS_mkdirat,
        SYS_sync,
        SYS_syncfs,
        SYS_msync,
        SYS_madvise,
        SYS_mmap,
        SYS_munmap,
        SYS_mprotect,
        SYS_brk,
        SYS_sched_yield,
        SYS_rt_sigtimedwait,
        SYS_getrandom,
        SYS_io_getevents,
        SYS_semtimedop,
        SYS_msgrcv,
        SYS_msgsnd,
        SYS_mq_timedreceive,
        SYS_mq_timedsend,
        SYS_execve,
        SYS_clone,
        SYS_exit,
        SYS_exit_group,
    );
    #[cfg(target_arch = "x86_64")]
    names!(
        SYS_poll,
        SYS_select,
        SYS_epoll_wait,
        SYS_open,
        SYS_stat,
        SYS_lstat,
        SYS_pause,
        SYS_futex_waitv,
        SYS_epoll_pwait2,
        SYS_rename,
        SYS_renameat,
        SYS_unlink,
        SYS_mkdir,
        SYS_fork,
        SYS_vfork,
        SYS_statx,
        SYS_clone3,
        SYS_io_uring_enter,
    );
    None
}

// === one poll's measurements ===

/// What the watchdog measures of one poll that may become a stall (it has run past half the
/// threshold), from that moment until it sees the poll end.
#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) seq: u64,
    pub(crate) tid: i32,
    /// The counters when the watchdog first saw the poll running.
    base: Option<Reading>,
    /// The thread's latest counters before that, from an earlier scan: taken before the poll
    /// began (that scan saw another poll, or none).
    before: Option<Reading>,
    /// The counters at the latest observation, while the poll still ran.
    last: Option<Reading>,
    blocked: BlockedLog,
    observed: u32,
    in_syscall: u32,
    /// The cgroup's throttled time when the track began, and at its latest observation (read
    /// here, not with every reading: most readings are of polls that never get this far).
    throttled: Option<(u64, u64)>,
}

impl Track {
    pub(crate) fn new(seq: u64, tid: i32, base: Option<Reading>, before: Option<Reading>, cgroup: &Cgroup) -> Track {
        let throttled = cgroup.throttled_ns().map(|t| (t, t));
        let blocked = BlockedLog::default();
        Track { seq, tid, base, before, last: None, blocked, observed: 0, in_syscall: 0, throttled }
    }

    /// The counters at the latest observation.
    pub(crate) fn last(&self) -> Option<Reading> {
        self.last
    }

    /// One look at the running poll's thread: whether it sleeps in a system call (and in which),
    /// and its counters. Returns the call it is blocked in and its description, if it is.
    pub(crate) fn observe(&mut self, counters: &Counters, now: u64, cgroup: &Cgroup) -> Option<(InSyscall, String)> {
        if counters.tid() != self.tid {
            return None;
        }
        let call = observe(counters);
        self.observed += 1;
        let blocked = call.map(|c| {
            self.in_syscall += 1;
            (c, self.blocked.add(c))
        });
        self.last = counters.read(now).or(self.last);
        if let (Some((_, last)), Some(t)) = (self.throttled.as_mut(), cgroup.throttled_ns()) {
            *last = t;
        }
        blocked
    }

    /// What was measured, once the poll has ended; `at_end` is a reading taken after the end,
    /// used only when no observation was made while the poll ran.
    pub(crate) fn finish(self, at_end: Option<Reading>) -> Option<Raw> {
        let base = self.base?;
        // A reading taken while the poll ran ends the window: one taken after it would count
        // whatever the thread did next (other polls, its park).
        let end = self.last.filter(|l| l.at > base.at).or(at_end)?;
        Some(Raw {
            base,
            end,
            before: self.before,
            after: at_end,
            blocked_in: self.blocked.into_entries(),
            observed: self.observed,
            in_syscall: self.in_syscall,
            throttled_ns: self.throttled.map(|(a, b)| b.saturating_sub(a)),
        })
    }
}

// === from two readings to an anatomy ===

/// What the watchdog measured of one long poll, for the aggregator.
#[derive(Clone, Debug, Default)]
pub(crate) struct Raw {
    /// When it first saw the poll running.
    pub(crate) base: Reading,
    /// The last reading while the poll ran (or just after it ended).
    pub(crate) end: Reading,
    /// A reading from before the poll began and one from after it ended, when there are: the
    /// CPU the thread used between them bounds the poll's from above.
    pub(crate) before: Option<Reading>,
    pub(crate) after: Option<Reading>,
    pub(crate) blocked_in: Vec<BlockedIn>,
    /// Observations of the thread during the poll, and how many found it in a system call.
    pub(crate) observed: u32,
    pub(crate) in_syscall: u32,
    /// The cgroup's CPU-quota throttling over the track, ns, when readable.
    pub(crate) throttled_ns: Option<u64>,
}

impl Raw {
    /// The anatomy of a poll of `wall_ns`, with `ns_of(ticks)` converting raw clock ticks.
    ///
    /// The counters cover the window between the two readings, which starts after the poll did
    /// (when the watchdog first saw it) and ends at the last observation while it ran. The
    /// window's split is scaled to the poll's exact wall time, so the three parts add up to it;
    /// `measured_ns` says how much of it was measured.
    ///
    /// The CPU clock is exact, but the kernel adds a run-queue wait to schedstat only when the
    /// thread gets its CPU back: a wait in progress at the window's end is in neither counter.
    /// So the rest of the window (neither on CPU nor a finished wait) is split between blocked
    /// and waiting by what the observations saw: the share of them that found the thread asleep
    /// in a system call is blocked; a thread that was never seen in one was not blocked.
    pub(crate) fn anatomy(&self, wall_ns: u64, threshold_ns: u64, ns_of: impl Fn(u64) -> u64) -> Option<StallAnatomy> {
        let window = ns_of(self.end.at.saturating_sub(self.base.at));
        if window == 0 || wall_ns == 0 {
            return None;
        }
        let cpu = self.end.cpu_ns.saturating_sub(self.base.cpu_ns).min(window);
        let mut wait = self.end.wait_ns.saturating_sub(self.base.wait_ns).min(window - cpu);
        let rest = window - cpu - wait;
        if self.observed > 0 {
            let blocked = (rest as u128 * u128::from(self.in_syscall) / u128::from(self.observed)) as u64;
            wait += rest - blocked;
        }
        let scale = |ns: u64| ((ns as u128 * wall_ns as u128) / window as u128) as u64;
        let mut parts = [scale(cpu), scale(wait), scale(window - cpu - wait)];
        // Rounding leaves a few nanoseconds over or under the wall time: give them to the
        // largest part, so that the parts add up and no part reads "1 ns".
        let sum: u64 = parts.iter().sum();
        let largest = (0..3).max_by_key(|&i| parts[i]).unwrap_or(0);
        parts[largest] = (parts[largest] + wall_ns).saturating_sub(sum);
        // Scaling a short window can credit the poll with more CPU than the thread used from
        // before it began to after it ended (a window that caught its one run on a CPU between
        // long waits): cap it there, and give the excess to the other two parts as the
        // observations split them.
        if let (Some(b), Some(a)) = (self.before, self.after) {
            let cpu_bound = a.cpu_ns.saturating_sub(b.cpu_ns);
            if a.at > b.at && parts[0] > cpu_bound {
                let excess = parts[0] - cpu_bound;
                parts[0] = cpu_bound;
                let to_blocked = match self.observed {
                    0 => 0,
                    n => (excess as u128 * u128::from(self.in_syscall) / u128::from(n)) as u64,
                };
                parts[2] += to_blocked;
                parts[1] += excess - to_blocked;
            }
        }
        let [on_cpu_ns, waiting_ns, blocked_ns] = parts;
        Some(StallAnatomy {
            on_cpu_ns,
            waiting_ns,
            blocked_ns,
            measured_ns: window.min(wall_ns),
            throttled_ns: self.throttled_ns,
            blocked_in: self.blocked_in.clone(),
            cpu_starved: on_cpu_ns.saturating_add(blocked_ns) < threshold_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines_parse() {
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd 0x5555\n"), None);
        let s = parse_syscall("0 0x3 0x7f00 0x1000 0x0 0x0 0x0 0x7ffd 0x5555\n").unwrap();
        assert_eq!((s.nr, s.args), (0, [3, 0x7f00, 0x1000]));
    }

    #[test]
    fn names_come_from_this_architecture_s_numbers() {
        assert_eq!(syscall_name(libc::SYS_read), Some("read"));
        assert_eq!(syscall_name(libc::SYS_futex), Some("futex"));
        assert_eq!(syscall_name(libc::SYS_clock_nanosleep), Some("clock_nanosleep"));
        assert_eq!(syscall_name(99_999), None);
        assert_eq!(describe(InSyscall { nr: 99_999, args: [0; 3] }).syscall, "system call 99999");
    }

    #[test]
    fn a_file_descriptor_names_its_file_and_a_socket_its_peer() {
        let dir = std::env::temp_dir().join(format!("stallscope-anatomy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.csv");
        let file = File::create(&path).unwrap();
        use std::os::fd::AsRawFd;
        let got = describe(InSyscall { nr: libc::SYS_read, args: [file.as_raw_fd() as u64, 0, 0] });
        assert_eq!(got.syscall, "read(2)");
        assert_eq!(got.target.as_deref(), Some(path.to_str().unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(peer).unwrap();
        let got = describe(InSyscall { nr: libc::SYS_recvfrom, args: [stream.as_raw_fd() as u64, 0, 0] });
        assert_eq!(got.target, Some(format!("a socket to {peer}")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_window_is_scaled_to_the_wall_time_and_the_parts_add_up() {
        let mut raw = Raw {
            base: Reading { at: 0, cpu_ns: 1_000, wait_ns: 500 },
            end: Reading { at: 40, cpu_ns: 11_000, wait_ns: 20_500 },
            blocked_in: Vec::new(),
            observed: 4,
            in_syscall: 4,
            throttled_ns: Some(20),
            before: None,
            after: None,
        };
        // Window 40 µs (ticks are µs here): 10 µs on CPU, 20 µs waiting, 10 µs blocked; the poll
        // took 80 µs.
        let a = raw.anatomy(80_000, 50_000, |t| t * 1_000).unwrap();
        assert_eq!((a.on_cpu_ns, a.waiting_ns, a.blocked_ns), (20_000, 40_000, 20_000));
        assert_eq!(a.measured_ns, 40_000);
        assert_eq!(a.throttled_ns, Some(20));
        assert!(a.cpu_starved, "40 µs of CPU and blocked time is under the 50 µs threshold");
        let a = raw.anatomy(80_000, 30_000, |t| t * 1_000).unwrap();
        assert!(!a.cpu_starved);
        // Never seen in a system call: the 10 µs neither on CPU nor a finished wait was a wait
        // still in progress, not a block.
        raw.in_syscall = 0;
        let a = raw.anatomy(80_000, 50_000, |t| t * 1_000).unwrap();
        assert_eq!((a.on_cpu_ns, a.waiting_ns, a.blocked_ns), (20_000, 60_000, 0));
        // Seen in one half the time: half of it.
        raw.in_syscall = 2;
        let a = raw.anatomy(80_000, 50_000, |t| t * 1_000).unwrap();
        assert_eq!((a.on_cpu_ns, a.waiting_ns, a.blocked_ns), (20_000, 50_000, 10_000));
        // The thread used 6 µs of CPU from before the poll to after it: the scaled 20 µs is
        // capped there, and the 14 µs over go to waiting and blocked as the observations split.
        raw.before = Some(Reading { at: 0, cpu_ns: 0, wait_ns: 0 });
        raw.after = Some(Reading { at: 100, cpu_ns: 6_000, wait_ns: 0 });
        let a = raw.anatomy(80_000, 50_000, |t| t * 1_000).unwrap();
        assert_eq!((a.on_cpu_ns, a.waiting_ns, a.blocked_ns), (6_000, 57_000, 17_000));
        assert!(a.cpu_starved);
    }

    #[test]
    fn counters_of_this_thread_move_with_its_cpu_time() {
        let tid = unsafe { libc::gettid() };
        let c = Counters::open(tid);
        let a = c.read(0).expect("own counters");
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::black_box(0);
        }
        let b = c.read(1).expect("own counters");
        assert!(b.cpu_ns - a.cpu_ns >= 5_000_000, "spun 20 ms: {a:?} → {b:?}");
        assert!(Counters::open(i32::MAX).read(0).is_none());
    }
}
