//! Capturing the native stack of a stalled thread: a real-time signal sent with `tgkill`, and an
//! async-signal-safe handler that copies the registers and the top of the stack into a
//! preallocated buffer. Unwinding happens later, on the watchdog thread.
//!
//! Why this shape (measured when the design was prototyped, see DESIGN.md):
//! - `tgkill`, not `pthread_kill`: a blocking-pool thread may exit, leaving a dangling
//!   `pthread_t`; a tid of an exited thread just gives `ESRCH`.
//! - No `_Unwind_Backtrace` in the handler: it crashed the process when a sample landed during
//!   panic unwinding. The handler only copies bytes.
//! - At most one request in flight per thread; the handler saves and restores `errno`, takes no
//!   locks and allocates nothing.
//! - The handler times itself (a raw counter read at entry and one before it publishes the
//!   capture); the watchdog turns that into the probe's own handler-time figures.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};

/// Bytes of stack copied above the stack pointer.
pub(crate) const STACK_COPY: usize = 64 * 1024;
/// Sample buffers shared by every probe in the process.
pub(crate) const ENTRIES: usize = 32;

const IDLE: u8 = 0;
const REQUESTED: u8 = 1;
const WRITING: u8 = 2;
const READY: u8 = 3;

/// `Entry::probe` of a buffer whose probe gave it up while the handler was still writing it
/// (`release_all`): once READY, whoever requests next takes it (`free_entry`). Probe ids start
/// at 1.
const ORPHAN: u64 = 0;

thread_local! {
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside the sample handler (for allocation tripwires in tests).
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.with(Cell::get)
}

/// Registers captured by the handler.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Regs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    /// Frame pointer (rbp / x29).
    pub(crate) fp: u64,
    /// Link register (aarch64 x30; 0 on x86_64).
    pub(crate) lr: u64,
}

/// One sample buffer and its request.
#[derive(Debug)]
pub(crate) struct Entry {
    state: AtomicU8,
    /// Probe that owns the request.
    pub(crate) probe: AtomicU64,
    tid: AtomicI32,
    /// The target slot's poll sequence counter, read by the handler at capture time.
    seq_ptr: AtomicPtr<AtomicU64>,
    pub(crate) want_seq: AtomicU64,
    pub(crate) got_seq: AtomicU64,
    pub(crate) slot: AtomicUsize,
    stack_lo: AtomicUsize,
    stack_hi: AtomicUsize,
    ip: AtomicU64,
    sp: AtomicU64,
    fp: AtomicU64,
    lr: AtomicU64,
    len: AtomicUsize,
    pub(crate) requested_at: AtomicU64,
    /// Raw clock ticks the handler spent, from its entry until just before it published the
    /// capture (the probe's own cost figure, `Probe::sampler_stats`).
    handler_ticks: AtomicU64,
    /// Raw clock as the handler began (0 if unknown).
    captured_at: AtomicU64,
    buf: *mut u8,
}

// SAFETY: `buf` points to a leaked, process-lifetime allocation of STACK_COPY bytes; it is
// written only by the handler between REQUESTED and READY and read only by the owner after READY.
unsafe impl Sync for Entry {}
// SAFETY: as above.
unsafe impl Send for Entry {}

static TABLE: OnceLock<Box<[Entry]>> = OnceLock::new();
/// Stacks copied by the handler, ever (for soak tests and the benchmark).
pub(crate) static CAPTURES: AtomicU64 = AtomicU64::new(0);
static INSTALLED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

impl Entry {
    /// An idle buffer (its STACK_COPY bytes leaked: they live as long as the process).
    fn new() -> Entry {
        Entry {
            state: AtomicU8::new(IDLE),
            probe: AtomicU64::new(ORPHAN),
            tid: AtomicI32::new(0),
            seq_ptr: AtomicPtr::new(std::ptr::null_mut()),
            want_seq: AtomicU64::new(0),
            got_seq: AtomicU64::new(0),
            slot: AtomicUsize::new(0),
            stack_lo: AtomicUsize::new(0),
            stack_hi: AtomicUsize::new(0),
            ip: AtomicU64::new(0),
            sp: AtomicU64::new(0),
            fp: AtomicU64::new(0),
            lr: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            requested_at: AtomicU64::new(0),
            handler_ticks: AtomicU64::new(0),
            captured_at: AtomicU64::new(0),
            buf: Box::leak(vec![0u8; STACK_COPY].into_boxed_slice()).as_mut_ptr(),
        }
    }
}

fn table() -> &'static [Entry] {
    TABLE.get_or_init(|| (0..ENTRIES).map(|_| Entry::new()).collect())
}

/// Why the sample handler could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InstallError {
    /// Another handler is already installed for the signal.
    InUse,
    /// `sigaction` failed.
    Os(i32),
}

/// Installs the handler for `signal`, refusing to replace a handler somebody else installed.
/// Idempotent for the probe's own handler (several probes may share it).
pub(crate) fn install(signal: i32) -> Result<(), InstallError> {
    table();
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if installed.contains(&signal) {
        return Ok(());
    }
    // SAFETY: plain sigaction calls with zeroed, then filled, structs.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
            return Err(InstallError::Os(*libc::__errno_location()));
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Err(InstallError::InUse);
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signal, &sa, std::ptr::null_mut()) != 0 {
            return Err(InstallError::Os(*libc::__errno_location()));
        }
    }
    installed.push(signal);
    Ok(())
}

/// A function the handler calls on the sampled thread after each capture, set by the fault
/// suite's soak (`__set_sample_handler_hook`) to prove that `in_handler` is true for everything
/// the handler runs. Only with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub(crate) static HANDLER_HOOK: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn handler(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // First, so that an allocation tripwire covers every instruction of the handler's own.
    IN_HANDLER.with(|c| c.set(true));
    // SAFETY: errno location is thread-local and always valid.
    let saved_errno = unsafe { *libc::__errno_location() };
    // Next, so that the measured time covers the rest of the handler (a counter read; errno is
    // saved first because without a usable TSC the read is a `clock_gettime` call).
    let entered = crate::poll::clock::now_raw_in_handler();
    // SAFETY: gettid is async-signal-safe.
    let tid = unsafe { libc::gettid() };
    if let Some(table) = TABLE.get() {
        for e in table.iter() {
            if e.state.load(Acquire) != REQUESTED || e.tid.load(Relaxed) != tid {
                continue;
            }
            if e.state.compare_exchange(REQUESTED, WRITING, Acquire, Relaxed).is_err() {
                continue;
            }
            if e.tid.load(Relaxed) != tid {
                // Reused for another thread between our check and the exchange.
                e.state.store(REQUESTED, Release);
                continue;
            }
            // SAFETY: ctx is the ucontext the kernel passed to this SA_SIGINFO handler.
            unsafe { capture(e, ctx) };
            let took = if entered == 0 { 0 } else { crate::poll::clock::now_raw_in_handler().saturating_sub(entered) };
            e.handler_ticks.store(took, Relaxed);
            e.captured_at.store(entered, Relaxed);
            e.state.store(READY, Release);
            CAPTURES.fetch_add(1, Relaxed);
            #[cfg(feature = "fault-injection")]
            {
                let hook = HANDLER_HOOK.load(Acquire);
                if !hook.is_null() {
                    // SAFETY: only `__set_sample_handler_hook` stores here, and only `fn()`s.
                    unsafe { std::mem::transmute::<*mut (), fn()>(hook)() };
                }
            }
            break;
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
    IN_HANDLER.with(|c| c.set(false));
}

#[cfg(target_arch = "x86_64")]
unsafe fn regs_of(ctx: *mut libc::c_void) -> Regs {
    let uc = ctx as *const libc::ucontext_t;
    let g = &(*uc).uc_mcontext.gregs;
    Regs {
        ip: g[libc::REG_RIP as usize] as u64,
        sp: g[libc::REG_RSP as usize] as u64,
        fp: g[libc::REG_RBP as usize] as u64,
        lr: 0,
    }
}

#[cfg(target_arch = "aarch64")]
unsafe fn regs_of(ctx: *mut libc::c_void) -> Regs {
    let uc = ctx as *const libc::ucontext_t;
    let m = &(*uc).uc_mcontext;
    Regs { ip: m.pc, sp: m.sp, fp: m.regs[29], lr: m.regs[30] }
}

/// Copies registers and stack. Runs in the signal handler: no locks, no allocation.
unsafe fn capture(e: &Entry, ctx: *mut libc::c_void) {
    let r = regs_of(ctx);
    let seq = e.seq_ptr.load(Relaxed);
    let got = if seq.is_null() { 0 } else { (*seq).load(Acquire) };
    e.got_seq.store(got, Relaxed);
    e.ip.store(r.ip, Relaxed);
    e.sp.store(r.sp, Relaxed);
    e.fp.store(r.fp, Relaxed);
    e.lr.store(r.lr, Relaxed);
    let lo = e.stack_lo.load(Relaxed);
    let hi = e.stack_hi.load(Relaxed);
    let sp = r.sp as usize;
    // Only copy when the stack pointer lies in the stack the watchdog measured for this thread;
    // otherwise (an alternate signal stack, a reused tid) copying could fault.
    let len = if sp >= lo && sp < hi { (hi - sp).min(STACK_COPY) } else { 0 };
    if len > 0 {
        std::ptr::copy_nonoverlapping(sp as *const u8, e.buf, len);
    }
    e.len.store(len, Relaxed);
}

// === watchdog side ===

/// A request the watchdog wants to make.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) probe: u64,
    pub(crate) slot: usize,
    pub(crate) tid: i32,
    pub(crate) seq: &'a AtomicU64,
    pub(crate) want_seq: u64,
    pub(crate) stack: (usize, usize),
    pub(crate) now: u64,
}

/// Why a sample could not be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// Every buffer is in use.
    NoBuffer,
    /// The thread is gone.
    NoThread,
    /// The signal's handler is no longer the probe's: the host replaced or reset it after
    /// `build()`. Signalling now could kill the process (`SIG_DFL` for a real-time signal
    /// terminates it) or run someone else's handler.
    NotOurs,
}

/// Whether `signal`'s handler is still the probe's. One `sigaction` query, on the watchdog.
pub(crate) fn still_ours(signal: i32) -> bool {
    // SAFETY: a query-only sigaction into a zeroed struct we own.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut cur) == 0 && cur.sa_sigaction == handler as *const () as usize
    }
}

/// Whether thread `tid` of this process blocks `signal` (its `SigBlk` mask in
/// `/proc/self/task/TID/status`); `None` when that cannot be read. Watchdog only.
pub(crate) fn blocked_by(tid: i32, signal: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let mask = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    let bit = u32::try_from(signal - 1).ok().filter(|b| *b < 64)?;
    Some(mask & (1 << bit) != 0)
}

/// Claims a free buffer and signals the thread.
pub(crate) fn request(signal: i32, r: Request<'_>) -> Result<(), RequestError> {
    // Checked before every request, not only at `build()`: the host may have changed it since.
    if !still_ours(signal) {
        return Err(RequestError::NotOurs);
    }
    let Some(e) = free_entry(table()) else {
        return Err(RequestError::NoBuffer);
    };
    // The buffer is ours (WRITING blocks the handler); fill the request, then publish it.
    e.probe.store(r.probe, Relaxed);
    e.tid.store(r.tid, Relaxed);
    e.seq_ptr.store(r.seq as *const AtomicU64 as *mut AtomicU64, Relaxed);
    e.want_seq.store(r.want_seq, Relaxed);
    e.slot.store(r.slot, Relaxed);
    e.stack_lo.store(r.stack.0, Relaxed);
    e.stack_hi.store(r.stack.1, Relaxed);
    e.len.store(0, Relaxed);
    e.handler_ticks.store(0, Relaxed);
    e.captured_at.store(0, Relaxed);
    e.requested_at.store(r.now, Relaxed);
    e.state.store(REQUESTED, Release);
    // SAFETY: tgkill with our own pid and a tid; at worst ESRCH.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), r.tid as libc::c_long, signal as libc::c_long) };
    if rc != 0 {
        // Take the request back, unless the handler already ran (it cannot have: the signal
        // was not sent).
        let _ = e.state.compare_exchange(REQUESTED, IDLE, AcqRel, Relaxed);
        return Err(RequestError::NoThread);
    }
    Ok(())
}

/// Takes a buffer for a new request (state WRITING, so the handler leaves it alone): an idle
/// one, or one a stopped probe gave up while the handler was writing it (READY, `ORPHAN`).
fn free_entry(table: &[Entry]) -> Option<&Entry> {
    table.iter().find(|e| match e.state.load(Acquire) {
        IDLE => e.state.compare_exchange(IDLE, WRITING, AcqRel, Relaxed).is_ok(),
        READY if e.probe.load(Relaxed) == ORPHAN => {
            if e.state.compare_exchange(READY, WRITING, AcqRel, Relaxed).is_err() {
                return false;
            }
            // Between our look and the exchange it may have been freed and captured again for
            // a live probe: WRITING keeps everyone else off it, so look again and give it back.
            if e.probe.load(Relaxed) != ORPHAN {
                e.state.store(READY, Release);
                return false;
            }
            true
        }
        _ => false,
    })
}

/// Whether a request for `tid` from `probe` is in flight or captured but not yet collected.
pub(crate) fn in_flight(probe: u64, tid: i32) -> bool {
    table()
        .iter()
        .any(|e| e.state.load(Acquire) != IDLE && e.probe.load(Relaxed) == probe && e.tid.load(Relaxed) == tid)
}

/// A captured sample, borrowed from its buffer until dropped.
#[derive(Debug)]
pub(crate) struct Captured<'a> {
    entry: &'a Entry,
    pub(crate) slot: usize,
    pub(crate) want_seq: u64,
    pub(crate) got_seq: u64,
    pub(crate) regs: Regs,
    pub(crate) stack: &'a [u8],
    /// Raw clock ticks spent in the handler up to publishing this capture (0 if unknown).
    pub(crate) handler_ticks: u64,
    /// When the handler ran (raw clock), or 0 if the clock could not be read there.
    pub(crate) captured_at: u64,
}

impl Drop for Captured<'_> {
    fn drop(&mut self) {
        self.entry.state.store(IDLE, Release);
    }
}

/// Takes every ready sample of `probe`, and gives up on requests older than `timeout_ticks`
/// (the thread may block signals), telling `expired(slot, tid)` of each. Returns how many were
/// given up.
pub(crate) fn collect(
    probe: u64,
    now: u64,
    timeout_ticks: u64,
    mut f: impl FnMut(Captured<'_>),
    mut expired_of: impl FnMut(usize, i32),
) -> u64 {
    let mut expired = 0;
    for e in table().iter() {
        if e.probe.load(Relaxed) != probe {
            continue;
        }
        match e.state.load(Acquire) {
            READY => {
                let len = e.len.load(Relaxed).min(STACK_COPY);
                // SAFETY: READY means the handler finished writing `len` bytes and will not
                // touch the buffer until we set IDLE (in Captured::drop).
                let stack = unsafe { std::slice::from_raw_parts(e.buf as *const u8, len) };
                f(Captured {
                    entry: e,
                    slot: e.slot.load(Relaxed),
                    want_seq: e.want_seq.load(Relaxed),
                    got_seq: e.got_seq.load(Relaxed),
                    regs: Regs {
                        ip: e.ip.load(Relaxed),
                        sp: e.sp.load(Relaxed),
                        fp: e.fp.load(Relaxed),
                        lr: e.lr.load(Relaxed),
                    },
                    stack,
                    handler_ticks: e.handler_ticks.load(Relaxed),
                    captured_at: e.captured_at.load(Relaxed),
                });
            }
            REQUESTED if now.saturating_sub(e.requested_at.load(Relaxed)) > timeout_ticks => {
                let (slot, tid) = (e.slot.load(Relaxed), e.tid.load(Relaxed));
                if e.state.compare_exchange(REQUESTED, IDLE, AcqRel, Relaxed).is_ok() {
                    expired += 1;
                    expired_of(slot, tid);
                }
            }
            _ => {}
        }
    }
    expired
}

/// Gives back every buffer `probe` still holds (its watchdog is stopping). Never waits: a buffer
/// the handler is writing now (WRITING) is handed to `ORPHAN`, and the next request of any probe
/// takes it once the handler has published it (`free_entry`). It used to be waited for, 1,000
/// yields at most, and a handler slower than that (preempted on a busy host) left a READY buffer
/// that no probe would ever collect: one of the process's `ENTRIES` buffers gone for good.
pub(crate) fn release_all(probe: u64) {
    release_all_in(table(), probe)
}

fn release_all_in(table: &[Entry], probe: u64) {
    for e in table.iter() {
        if e.probe.load(Relaxed) != probe {
            continue;
        }
        match e.state.load(Acquire) {
            // The exchange fails only if the handler took it meanwhile (WRITING): then as below.
            REQUESTED if e.state.compare_exchange(REQUESTED, IDLE, AcqRel, Relaxed).is_ok() => continue,
            READY => {
                // Nobody else touches a READY buffer of a live probe: ours to free.
                e.state.store(IDLE, Release);
                continue;
            }
            IDLE => continue,
            _ => {}
        }
        // WRITING: the handler is capturing for us, or another probe has just taken the buffer
        // (IDLE → WRITING) and has not written its id yet. Only the first is ours to orphan; the
        // exchange fails in the second once that probe has written its id, and that probe's
        // store overwrites ours if it comes later.
        // If the handler has published meanwhile, the buffer is READY and orphaned: taken by the
        // next request like any other orphan.
        let _ = e.probe.compare_exchange(probe, ORPHAN, AcqRel, Relaxed);
    }
}

/// Stack bounds `[lo, hi)` of a live thread, from `pthread_getattr_np`.
pub(crate) fn stack_bounds(thread: usize) -> Option<(usize, usize)> {
    if thread == 0 {
        return None;
    }
    // SAFETY: the caller only passes the pthread_t of a thread that is inside a poll (alive).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(thread as libc::pthread_t, &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && size > 0).then(|| (addr as usize, addr as usize + size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe that stops while the handler is still writing one of its buffers does not strand
    /// it: once the handler publishes, the next request (of any probe) gets it.
    #[test]
    fn release_all_strands_no_buffer_being_written() {
        const PROBE: u64 = 7;
        let table: Vec<Entry> = (0..2).map(|_| Entry::new()).collect();
        // The watchdog requested a sample for PROBE; the handler has begun copying it.
        let e = free_entry(&table).expect("an idle buffer");
        e.probe.store(PROBE, Relaxed);
        e.state.store(REQUESTED, Release);
        assert!(e.state.compare_exchange(REQUESTED, WRITING, Acquire, Relaxed).is_ok());
        // The probe's watchdog stops now, with the handler still inside the capture.
        release_all_in(&table, PROBE);
        assert!(!table.iter().any(|e| e.probe.load(Relaxed) == PROBE), "no buffer stays with the stopped probe");
        // The handler finishes.
        e.state.store(READY, Release);
        let a = free_entry(&table).map(|e| e as *const Entry);
        let b = free_entry(&table).map(|e| e as *const Entry);
        assert!(a.is_some() && b.is_some() && a != b, "both buffers can be requested again");
        assert!(free_entry(&table).is_none());
    }

    /// A live probe's READY capture is never taken for someone else's request.
    #[test]
    fn a_live_probes_capture_is_not_taken() {
        let table: Vec<Entry> = (0..1).map(|_| Entry::new()).collect();
        let e = free_entry(&table).unwrap();
        e.probe.store(9, Relaxed);
        e.state.store(READY, Release);
        assert!(free_entry(&table).is_none());
        release_all_in(&table, 8);
        assert_eq!(e.state.load(Acquire), READY, "another probe's release leaves it alone");
        release_all_in(&table, 9);
        assert_eq!(e.state.load(Acquire), IDLE);
    }

    #[test]
    fn blocked_by_reads_the_threads_own_mask() {
        let signal = libc::SIGRTMIN() + 9;
        // SAFETY: gettid has no preconditions; the mask changes are this test thread's own.
        let tid = unsafe { libc::gettid() };
        let set_mask = |how| unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
        };
        assert_eq!(super::blocked_by(tid, signal), Some(false));
        set_mask(libc::SIG_BLOCK);
        assert_eq!(super::blocked_by(tid, signal), Some(true));
        set_mask(libc::SIG_UNBLOCK);
        assert_eq!(super::blocked_by(tid, signal), Some(false));
        assert_eq!(super::blocked_by(i32::MAX, signal), None, "no such thread");
    }
}
