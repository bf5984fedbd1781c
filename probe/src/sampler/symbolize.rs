//! Symbolization (blazesym, with inlined frames and a per-address cache), frame classification
//! and trimming of the probe's and Tokio's poll machinery. The lookups run on one
//! `stallscope-symbolizer` thread per process; the aggregator asks for a sample's new addresses
//! without waiting ([`request`]) and waits only for a stack it needs now ([`wait_for`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::Pid;
use stallscope_wire::{Frame, FrameKind};

use super::names;

/// Cache entries kept before the cache is cleared.
const CACHE_LIMIT: usize = 200_000;
/// How long a caller waits for the symbolizer thread.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A stack of lookup addresses to resolve, and whether this is the warm-up.
type Request = (Vec<u64>, bool);

/// What the symbolizer thread has cost (process-wide, like the thread): every address it is
/// sent is missing from the cache, so this is the cost per new address.
static RESOLVED_ADDRS: AtomicU64 = AtomicU64::new(0);
static RESOLVE_NS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);
static WARM_UP_NS: AtomicU64 = AtomicU64::new(0);

/// The symbolizer's costs so far.
#[derive(Debug, Default)]
pub(crate) struct Costs {
    /// Addresses resolved (each one missing from the cache when asked for), warm-up excluded.
    pub(crate) addresses: u64,
    /// Batches they came in.
    pub(crate) batches: u64,
    /// Time spent resolving them, ns.
    pub(crate) time_ns: u64,
    /// Time of the warm-up lookup (parsing the executable's debug information), ns.
    pub(crate) warm_up_ns: u64,
}

pub(crate) fn costs() -> Costs {
    Costs {
        addresses: RESOLVED_ADDRS.load(Relaxed),
        batches: BATCHES.load(Relaxed),
        time_ns: RESOLVE_NS.load(Relaxed),
        warm_up_ns: WARM_UP_NS.load(Relaxed),
    }
}

/// One symbolizer per process, shared by every probe: blazesym's symbolizer is not `Send`, so
/// it lives on its own thread, and its DWARF parsing and the address cache serve every probe.
///
/// Callers never wait for it to look an address up, except for the stack they need now
/// ([`wait_for`]): [`request`] sends a stack's new addresses and returns, the thread puts what it
/// resolves in the cache and wakes the waiters. Each address is looked up once (`pending`
/// keeps a second request from sending it again while the first is in flight).
struct Service {
    tx: Mutex<mpsc::Sender<Request>>,
    store: Arc<Store>,
}

/// The address cache, shared with the symbolizer thread.
#[derive(Default)]
struct Store {
    cache: Mutex<Cache>,
    /// Signalled each time the thread has put a batch in the cache.
    resolved: Condvar,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u64, Entry>,
    /// Addresses sent to the thread and not yet in `entries`.
    pending: HashSet<u64>,
}

impl Cache {
    fn known(&self, a: u64) -> bool {
        self.entries.contains_key(&a) || self.pending.contains(&a)
    }

    /// The call targets of `stack` (tagged addresses) that may be tail calls: those whose inner
    /// frame (the address before them) is resolved and in another function.
    fn targets<'a>(&'a self, stack: &'a [u64]) -> impl Iterator<Item = u64> + 'a {
        stack
            .windows(2)
            .filter(|w| w[0] & TAIL_CALL_TAG == 0 && w[1] & TAIL_CALL_TAG != 0)
            .filter(|w| self.entries.get(&w[0]).is_some_and(|e| e.start != 0 && e.start != w[1] & !TAIL_CALL_TAG))
            .map(|w| w[1])
    }

    /// Whether every address `frames` will read for `stack` is resolved.
    fn complete(&self, stack: &[u64]) -> bool {
        stack.iter().all(|a| a & TAIL_CALL_TAG != 0 || self.entries.contains_key(a))
            && self.targets(stack).all(|t| self.entries.contains_key(&t))
    }

    /// Whether `stack` has an address to look up that nobody has asked for yet.
    fn wants(&self, stack: &[u64]) -> bool {
        stack.iter().any(|&a| a & TAIL_CALL_TAG == 0 && !self.known(a)) || self.targets(stack).any(|t| !self.known(t))
    }

    fn insert(&mut self, addrs: &[u64], entries: Vec<Entry>) {
        if self.entries.len() + addrs.len() > CACHE_LIMIT {
            self.entries.clear();
        }
        for (a, e) in addrs.iter().zip(entries) {
            self.pending.remove(a);
            self.entries.insert(*a, e);
        }
        // What the thread could not answer (a panic, a short reply) is asked again next time.
        for a in addrs {
            self.pending.remove(a);
        }
    }
}

/// What one lookup address resolves to: its frames (outermost function last) and the start
/// address of that function (0 when unknown), which decides whether a recovered tail call is
/// real (see [`frames`]).
#[derive(Clone)]
struct Entry {
    start: u64,
    frames: Arc<[Frame]>,
}

impl Entry {
    fn unknown(addr: u64) -> Entry {
        Entry { start: 0, frames: vec![unknown(addr)].into() }
    }
}

static SERVICE: OnceLock<Option<Service>> = OnceLock::new();

fn service() -> Option<&'static Service> {
    SERVICE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            let store = Arc::new(Store::default());
            let theirs = store.clone();
            let spawned = std::thread::Builder::new().name("stallscope-symbolizer".into()).spawn(move || {
                let blaze =
                    Blaze::builder().enable_code_info(true).enable_inlined_fns(true).enable_demangling(true).build();
                // The ELF symbol table alone: under `line-tables-only` DWARF names a function
                // `{async_block#0}` or `drop`, while its symbol says `svc::serve::{{closure}}` or
                // `<svc::Flusher as core::ops::drop::Drop>::drop`.
                let elf =
                    Blaze::builder().enable_code_info(false).enable_inlined_fns(false).enable_demangling(true).build();
                while let Ok((stack, mut warm_up)) = rx.recv() {
                    // Every stack asked for meanwhile goes in the same batches.
                    let mut stacks = vec![stack];
                    while let Ok((more, w)) = rx.try_recv() {
                        stacks.push(more);
                        warm_up |= w;
                    }
                    // The stacks' own addresses in one batch, then the call targets that turn out
                    // to matter (see `Cache::targets`), each missing from the cache.
                    let own = theirs.missing(stacks.iter().flatten().copied().filter(|a| a & TAIL_CALL_TAG == 0));
                    theirs.resolve(&blaze, &elf, &own, warm_up);
                    let targets = {
                        let cache = theirs.cache.lock().unwrap_or_else(|e| e.into_inner());
                        stacks.iter().flat_map(|s| cache.targets(s)).collect::<Vec<u64>>()
                    };
                    let targets = theirs.missing(targets.into_iter());
                    theirs.resolve(&blaze, &elf, &targets, false);
                }
            });
            spawned.ok().map(|_| Service { tx: Mutex::new(tx), store })
        })
        .as_ref()
}

impl Store {
    /// The addresses not in the cache, sorted and without repeats.
    fn missing(&self, addrs: impl Iterator<Item = u64>) -> Vec<u64> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<u64> = addrs.filter(|a| !cache.entries.contains_key(a)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Looks `addrs` up (on the symbolizer thread), caches them and wakes the waiters.
    fn resolve(&self, blaze: &Blaze, elf: &Blaze, addrs: &[u64], warm_up: bool) {
        if addrs.is_empty() {
            return;
        }
        let began = Instant::now();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| symbolize(blaze, elf, addrs)))
            .unwrap_or_else(|_| addrs.iter().map(|a| Entry::unknown(*a)).collect());
        let ns = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if warm_up {
            WARM_UP_NS.fetch_add(ns, Relaxed);
        } else {
            RESOLVED_ADDRS.fetch_add(addrs.len() as u64, Relaxed);
            RESOLVE_NS.fetch_add(ns, Relaxed);
            BATCHES.fetch_add(1, Relaxed);
        }
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(addrs, out);
        self.resolved.notify_all();
    }
}

fn symbolize(blaze: &Blaze, elf: &Blaze, addrs: &[u64]) -> Vec<Entry> {
    let mut process = Process::new(Pid::Slf);
    process.perf_map = false;
    process.map_files = false;
    let mut symtab = process.clone();
    symtab.debug_syms = false;
    let plain: Vec<u64> = addrs.iter().map(|a| a & !TAIL_CALL_TAG).collect();
    // On failure every address stays unknown (shown as hex) rather than failing the stall.
    let results = blaze.symbolize(&Source::Process(process), Input::AbsAddr(&plain)).unwrap_or_default();
    // The symbol table only where DWARF's name of the outer function is incomplete (a bare or
    // anonymous name) or where a call target must be a function's entry.
    let wants_elf: Vec<usize> = (0..addrs.len())
        .filter(|&i| {
            addrs[i] & TAIL_CALL_TAG != 0
                || match results.get(i) {
                    Some(Symbolized::Sym(sym)) => names::incomplete(&sym.name),
                    _ => true,
                }
        })
        .collect();
    let elf_addrs: Vec<u64> = wants_elf.iter().map(|&i| plain[i]).collect();
    let elf_results = if elf_addrs.is_empty() {
        Vec::new()
    } else {
        elf.symbolize(&Source::Process(symtab), Input::AbsAddr(&elf_addrs)).unwrap_or_default()
    };
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let elf_sym = match wants_elf.binary_search(&i).ok().and_then(|k| elf_results.get(k)) {
                Some(Symbolized::Sym(e)) => Some(e),
                _ => None,
            };
            let elf_name = elf_sym.map(|e| e.name.as_ref());
            match results.get(i) {
                Some(Symbolized::Sym(sym)) if addr & TAIL_CALL_TAG != 0 => {
                    // A function the caller jumped to: only its entry counts, named by the
                    // symbol table (a mid-function target is no function we can name).
                    let at_entry = sym.offset == 0 || elf_sym.is_some_and(|e| e.offset == 0);
                    if !at_entry {
                        return Entry { start: 0, frames: Vec::new().into() };
                    }
                    let mut outer = frames_of(sym, elf_name);
                    let Some(mut f) = outer.pop() else {
                        return Entry { start: 0, frames: Vec::new().into() };
                    };
                    f.function.push_str(stallscope_wire::names::TAIL_CALL_SUFFIX);
                    f.inlined = false;
                    Entry { start: addr & !TAIL_CALL_TAG, frames: vec![f].into() }
                }
                Some(Symbolized::Sym(sym)) => {
                    Entry { start: plain[i].wrapping_sub(sym.offset as u64), frames: frames_of(sym, elf_name).into() }
                }
                _ if addr & TAIL_CALL_TAG != 0 => Entry { start: 0, frames: Vec::new().into() },
                _ => Entry::unknown(*addr),
            }
        })
        .collect()
}

/// Asks for the addresses of `stack` (lookup addresses, innermost first) that nobody has asked
/// for yet, and returns at once: the symbolizer thread puts them in the cache.
pub(crate) fn request(stack: &[u64]) {
    send(stack, false);
}

fn send(stack: &[u64], warm_up: bool) {
    let Some(svc) = service() else { return };
    let mut cache = svc.store.cache.lock().unwrap_or_else(|e| e.into_inner());
    if !warm_up && !cache.wants(stack) {
        return;
    }
    let own: Vec<u64> = stack.iter().copied().filter(|&a| a & TAIL_CALL_TAG == 0 && !cache.known(a)).collect();
    let targets: Vec<u64> = cache.targets(stack).filter(|&t| !cache.known(t)).collect();
    cache.pending.extend(own.iter().chain(targets.iter()));
    let sent = svc.tx.lock().unwrap_or_else(|e| e.into_inner()).send((stack.to_vec(), warm_up));
    if sent.is_err() {
        for a in own.iter().chain(targets.iter()) {
            cache.pending.remove(a);
        }
    }
}

/// Whether every address [`frames`] reads for `stack` is in the cache.
pub(crate) fn is_resolved(stack: &[u64]) -> bool {
    service().is_none_or(|svc| svc.store.cache.lock().unwrap_or_else(|e| e.into_inner()).complete(stack))
}

/// Asks for `stack`'s new addresses and waits until [`frames`] can name all of them, or for
/// `timeout` (then the ones missing show as addresses). Returns whether it is resolved.
pub(crate) fn wait_for(stack: &[u64], timeout: Duration) -> bool {
    wait(stack, timeout, false)
}

fn wait(stack: &[u64], timeout: Duration, warm_up: bool) -> bool {
    let Some(svc) = service() else { return true };
    send(stack, warm_up);
    let deadline = Instant::now() + timeout;
    let mut cache = svc.store.cache.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if cache.complete(stack) {
            return true;
        }
        if cache.wants(stack) {
            // A target that another stack's request resolved the inner frame of, and so did not
            // look up for this one.
            drop(cache);
            send(stack, false);
            cache = svc.store.cache.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        cache = svc.store.resolved.wait_timeout(cache, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Marks a lookup address as the target of a direct call whose callee may have been left by a
/// tail call (see `unwind::call_target`): user-space addresses never have this bit set.
pub(crate) const TAIL_CALL_TAG: u64 = 1 << 63;

/// Frames for a stack of lookup addresses (innermost first), from the cache: an address not
/// resolved yet ([`is_resolved`], [`wait_for`]) shows as its hex value.
///
/// A tagged address (a function `F` its caller called directly) becomes the frame
/// `F (tail call)` only when the next inner frame is not in `F`: then `F` jumped to it and left
/// no frame of its own. When the inner frame is in `F`, `F`'s own frame is already there.
pub(crate) fn frames(addrs: &[u64]) -> Vec<Frame> {
    let mut out = Vec::with_capacity(addrs.len());
    let cache = service().map(|s| s.store.cache.lock().unwrap_or_else(|e| e.into_inner()));
    let mut inner_start: Option<u64> = None;
    for a in addrs {
        let entry = cache.as_ref().and_then(|c| c.entries.get(a));
        if a & TAIL_CALL_TAG != 0 {
            if let Some(e) = entry {
                let target = a & !TAIL_CALL_TAG;
                if e.start == target && inner_start.is_some_and(|s| s != 0 && s != target) {
                    out.extend(e.frames.iter().cloned());
                }
            }
            continue;
        }
        match entry {
            Some(e) => {
                out.extend(e.frames.iter().cloned());
                inner_start = Some(e.start);
            }
            None => {
                out.push(unknown(*a));
                inner_start = None;
            }
        }
    }
    out
}

/// Parses the executable's debug information ahead of the first stall.
pub(crate) fn warm_up() {
    wait(&[warm_up as *const () as usize as u64], WAIT, true);
}

fn unknown(addr: u64) -> Frame {
    Frame { function: format!("{addr:#x}"), file: None, line: None, inlined: false, kind: FrameKind::Unknown }
}

fn path_of(ci: &blazesym::symbolize::CodeInfo<'_>) -> String {
    match &ci.dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(&*ci.file).to_string_lossy().into_owned(),
        _ => ci.file.to_string_lossy().into_owned(),
    }
}

fn frames_of(sym: &blazesym::symbolize::Sym<'_>, elf_name: Option<&str>) -> Vec<Frame> {
    let module = sym.module.as_ref().map(|m| m.to_string_lossy().into_owned());
    // blazesym reports the outer function `f` with inlined calls `g`, `h` (outermost first).
    // `sym.code_info` is the line inside `f` (where `g` was inlined), and each inlined
    // function's `code_info` is the line inside that function (checked against std's
    // `thread::sleep` chain: functions.rs -> sys/thread/unix.rs -> nanosleep).
    let mut raw: Vec<&str> = vec![&sym.name];
    raw.extend(sym.inlined.iter().map(|i| i.name.as_ref()));
    let names = names::resolve(&raw, elf_name);
    let mut locs: Vec<Option<(String, Option<u32>)>> = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let ci = if i == 0 { sym.code_info.as_deref() } else { sym.inlined[i - 1].code_info.as_ref() };
        locs.push(ci.map(|c| (path_of(c), c.line)));
    }
    let mut out: Vec<Frame> = names
        .into_iter()
        .enumerate()
        .zip(locs)
        .map(|((i, name), loc)| {
            let (file, line) = match loc {
                Some((f, l)) => (Some(f), l),
                None => (None, None),
            };
            let kind = classify(&name, file.as_deref(), module.as_deref());
            Frame { function: name, file, line, inlined: i > 0, kind }
        })
        .collect();
    out.reverse();
    out
}

/// The crate a (demangled) function name belongs to: its first path segment, looking through
/// `<T as Trait>::f` to `T` and past references.
pub(crate) fn crate_of(function: &str) -> &str {
    let mut s = function.trim_start_matches(['<', '&', '*', '(']);
    for p in ["mut ", "const ", "dyn ", "impl "] {
        s = s.trim_start_matches(p);
    }
    s = s.trim_start_matches(['<', '&']);
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Which kind of code a frame is. The source path decides when there is one (inlined frames
/// under `line-tables-only` carry short names such as `{closure#0}`); otherwise the crate of
/// the symbol name, then the module it lives in.
pub(crate) fn classify(function: &str, file: Option<&str>, module: Option<&str>) -> FrameKind {
    if let Some(f) = file {
        if f.starts_with("/rustc/") || f.contains("/rustlib/src/") {
            return FrameKind::Std;
        }
        if let Some(dep) = registry_crate(f) {
            return if dep.starts_with("tokio-") && !dep.starts_with("tokio-metrics") {
                FrameKind::Tokio
            } else {
                FrameKind::Library
            };
        }
    }
    let krate = crate_of(function);
    if matches!(krate, "std" | "core" | "alloc" | "proc_macro") {
        return FrameKind::Std;
    }
    if krate == "tokio" {
        return FrameKind::Tokio;
    }
    if krate == "stallscope_probe" {
        return FrameKind::Library;
    }
    // A C symbol (no path separator) without line info, or anything in a shared object other
    // than the executable, is a library.
    let in_shared_object = module.is_some_and(|m| m.contains(".so"));
    if in_shared_object || (!function.contains("::") && file.is_none()) {
        return FrameKind::Library;
    }
    FrameKind::User
}

/// `tokio-1.54.1` for a path inside a crate downloaded by cargo.
fn registry_crate(path: &str) -> Option<&str> {
    let i = path.find("/.cargo/registry/src/").or_else(|| path.find("/.cargo/git/checkouts/"))?;
    let rest = &path[i..];
    // .../registry/src/<index>/<crate-version>/...
    rest.split('/').nth(5).filter(|s| !s.is_empty())
}

/// Whether a frame is where Tokio (or the probe's `instrument`) polls a task's future: every
/// frame outside it is runtime machinery and is trimmed. Decided by Tokio's module (from the
/// name, or from the source path for inlined frames), never by the user's names.
fn is_poll_boundary(f: &Frame) -> bool {
    let n = f.function.trim_start_matches('<');
    if n.contains("block_in_place") {
        return false;
    }
    let by_name = n.starts_with("tokio::runtime::task::")
        || n.starts_with("tokio::runtime::park::CachedParkThread::block_on")
        || n.starts_with("tokio::runtime::scheduler::current_thread::CoreGuard::block_on")
        || n.starts_with("tokio::task::local::")
        || n.starts_with("stallscope_probe::");
    let by_path = f.kind == FrameKind::Tokio
        && f.file.as_deref().is_some_and(|p| {
            p.contains("/src/runtime/task/")
                || p.contains("/src/runtime/scheduler/")
                || p.ends_with("/src/runtime/park.rs")
                || p.ends_with("/src/task/local.rs")
        });
    let probe_path = f.file.as_deref().is_some_and(|p| {
        p.ends_with("/src/poll/instrument.rs") && (p.contains("stallscope-probe") || p.contains("/probe/src/"))
    });
    by_name || by_path || probe_path
}

/// Trims a symbolized stack (innermost first): keeps the frames inside the innermost poll
/// boundary. Stacks with no boundary (should not happen for a stalled poll) lose only the
/// thread-start frames.
pub(crate) fn trim(frames: &mut Vec<Frame>) {
    if let Some(cut) = frames.iter().position(is_poll_boundary) {
        frames.truncate(cut);
        // The future's own `poll` glue that Tokio calls through (`Pin<&mut F>::poll`,
        // `AssertUnwindSafe`, closures of `catch_unwind`) is std; drop those outermost ones.
        while frames.last().is_some_and(|f| f.kind == FrameKind::Std) && frames.len() > 1 {
            frames.pop();
        }
        return;
    }
    while frames.last().is_some_and(|f| {
        let n = f.function.as_str();
        n.starts_with("std::sys::")
            || n.contains("start_thread")
            || n.contains("clone")
            || n.starts_with("core::ops::function")
    }) && frames.len() > 1
    {
        frames.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(name: &str, file: Option<&str>) -> Frame {
        Frame {
            function: name.into(),
            file: file.map(Into::into),
            line: None,
            inlined: false,
            kind: classify(name, file, None),
        }
    }

    fn entry(start: u64) -> Entry {
        Entry { start, frames: vec![unknown(start)].into() }
    }

    #[test]
    fn an_address_in_flight_is_not_asked_for_twice_and_a_stack_waits_for_its_tail_call_targets() {
        let mut c = Cache::default();
        // Innermost first: a leaf in function 0x1000, then a direct call to 0x5000 (tagged) made
        // from a frame in function 0x2000.
        let stack = [0x1010, 0x5000 | TAIL_CALL_TAG, 0x2020];
        assert!(c.wants(&stack) && !c.complete(&stack));
        c.pending.extend([0x1010, 0x2020]);
        assert!(!c.wants(&stack), "both own addresses are in flight");
        c.insert(&[0x1010, 0x2020], vec![entry(0x1000), entry(0x2000)]);
        assert!(c.pending.is_empty());
        // The inner frame is in 0x1000, not the call's target: the target may be a tail call
        // and must be resolved before the stack is.
        assert_eq!(c.targets(&stack).collect::<Vec<_>>(), [0x5000 | TAIL_CALL_TAG]);
        assert!(c.wants(&stack) && !c.complete(&stack));
        c.insert(&[0x5000 | TAIL_CALL_TAG], vec![entry(0x5000)]);
        assert!(!c.wants(&stack) && c.complete(&stack));
        // An inner frame in the target itself needs no lookup of the target.
        let own_frame = [0x5010, 0x5000 | TAIL_CALL_TAG];
        c.insert(&[0x5010], vec![entry(0x5000)]);
        assert!(c.complete(&own_frame) && c.targets(&own_frame).next().is_none());
        // A reply that misses an address leaves it to be asked again.
        c.pending.insert(0x3030);
        c.insert(&[0x3030], Vec::new());
        assert!(c.wants(&[0x3030]));
    }

    #[test]
    fn crates_are_read_through_trait_impls() {
        assert_eq!(crate_of("<tokio::runtime::task::core::Core<T,S>>::poll"), "tokio");
        assert_eq!(crate_of("<&mut F as core::future::future::Future>::poll"), "F");
        assert_eq!(crate_of("my_service::handler::{{closure}}"), "my_service");
        assert_eq!(crate_of("clock_nanosleep"), "clock_nanosleep");
    }

    #[test]
    fn classification_separates_user_std_tokio_and_libraries() {
        assert_eq!(
            classify("std::thread::sleep", Some("/rustc/abc/library/std/src/thread/mod.rs"), None),
            FrameKind::Std
        );
        assert_eq!(classify("tokio::task::block_in_place", None, None), FrameKind::Tokio);
        assert_eq!(classify("clock_nanosleep", None, Some("/usr/lib/x86_64-linux-gnu/libc.so.6")), FrameKind::Library);
        assert_eq!(
            classify("serde_json::from_str", Some("/root/.cargo/registry/src/x/serde_json-1/src/de.rs"), None),
            FrameKind::Library
        );
        assert_eq!(
            classify("{closure#0}", Some("/root/.cargo/registry/src/x/tokio-1.54.1/src/runtime/task/core.rs"), None),
            FrameKind::Tokio
        );
        assert_eq!(classify("{async_block#0}", Some("/srv/app/src/main.rs"), None), FrameKind::User);
        assert_eq!(
            classify("svc::culprit", Some("/work/svc/src/main.rs"), Some("/work/svc/target/release/svc")),
            FrameKind::User
        );
    }

    #[test]
    fn trim_keeps_frames_inside_the_task_poll() {
        let mut frames = vec![
            fr("clock_nanosleep", None),
            fr("std::thread::sleep", Some("/rustc/x/std/src/thread/mod.rs")),
            fr("svc::culprit", Some("/w/src/main.rs")),
            fr("svc::handler::{{closure}}", Some("/w/src/main.rs")),
            fr("<core::pin::Pin<P> as core::future::future::Future>::poll", Some("/rustc/x/core/src/future/future.rs")),
            fr("poll<svc::Root>", Some("/root/.cargo/registry/src/x/tokio-1.54.1/src/runtime/task/trace/mod.rs")),
            fr("tokio::runtime::task::core::Core<T,S>::poll::{{closure}}", None),
            fr("tokio::runtime::scheduler::multi_thread::worker::Context::run", None),
            fr("start_thread", None),
        ];
        trim(&mut frames);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["clock_nanosleep", "std::thread::sleep", "svc::culprit", "svc::handler::{{closure}}"]);
    }
}
