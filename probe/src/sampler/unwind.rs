//! Unwinding copied stacks with framehop, on the watchdog thread.
//!
//! Modules come from `dl_iterate_phdr`; their unwind sections (`.eh_frame`, `.eh_frame_hdr`,
//! `.text`, `.got`) are read from the files with `object`. The vDSO has no file, so it is read
//! from memory. The list is refreshed when an address outside every known module appears.

use std::ffi::CStr;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use object::{Object, ObjectSection};

use super::signal::Regs;

/// Frames kept per sample.
pub(crate) const MAX_FRAMES: usize = 160;

#[cfg(target_arch = "x86_64")]
type Inner = framehop::x86_64::UnwinderX86_64<Vec<u8>>;
#[cfg(target_arch = "x86_64")]
type Cache = framehop::x86_64::CacheX86_64;
#[cfg(target_arch = "aarch64")]
type Inner = framehop::aarch64::UnwinderAarch64<Vec<u8>>;
#[cfg(target_arch = "aarch64")]
type Cache = framehop::aarch64::CacheAarch64;

/// The module list, loaded once per process and shared by every probe's watchdog (reading the
/// executable's unwind tables can take tens of milliseconds; a watchdog must not spend that
/// while a stall is starting). framehop's unwinder is cheap to clone.
#[derive(Clone)]
struct Modules {
    inner: Inner,
    ranges: Vec<Range<u64>>,
    loaded_at: Instant,
}

static MODULES: Mutex<Option<Modules>> = Mutex::new(None);

/// Loads the module list if no probe has yet. Called from `ProbeBuilder::build`.
pub(crate) fn preload() {
    let mut m = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    if m.is_none() {
        *m = Some(load_modules());
    }
}

/// Returns the shared modules, reloading them first if `stale` and the last load is more than a
/// second old.
fn modules(stale: bool) -> Modules {
    let mut m = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    let reload = match &*m {
        None => true,
        Some(cur) => stale && cur.loaded_at.elapsed() >= Duration::from_secs(1),
    };
    if reload {
        *m = Some(load_modules());
    }
    m.clone().unwrap_or_else(load_modules)
}

fn load_modules() -> Modules {
    let mut inner = Inner::new();
    let mut ranges = Vec::new();
    for (n, l) in loaded_objects().iter().enumerate() {
        let Some(lo) = l.loads.iter().map(|(v, _)| *v).min() else {
            continue;
        };
        let hi = l.loads.iter().map(|(v, s)| v + s).max().unwrap_or(lo);
        let avma = l.bias + lo..l.bias + hi;
        let module = if l.name.contains("vdso") || l.name.contains("linux-gate") {
            // SAFETY: the vDSO image is mapped read-only for the life of the process.
            let bytes = unsafe { std::slice::from_raw_parts(avma.start as *const u8, (hi - lo) as usize) };
            module_from(l, bytes, avma.clone())
        } else {
            let path = if l.name.is_empty() && n == 0 { "/proc/self/exe".to_string() } else { l.name.clone() };
            if path.is_empty() {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            // SAFETY: a read-only private mapping of a loaded object's file; if the file is
            // replaced on disk the mapping keeps the old inode.
            match unsafe { memmap2::Mmap::map(&file) } {
                Ok(map) => module_from(l, &map, avma.clone()),
                Err(_) => None,
            }
        };
        if let Some(m) = module {
            inner.add_module(m);
            ranges.push(avma);
        }
    }
    Modules { inner, ranges, loaded_at: Instant::now() }
}

/// A watchdog's unwinder: a clone of the shared modules plus its own rule cache.
pub(crate) struct Unwinder {
    inner: Inner,
    cache: Cache,
    ranges: Vec<Range<u64>>,
    loaded_at: Instant,
    checked_at: Instant,
}

impl std::fmt::Debug for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinder").field("modules", &self.ranges.len()).finish()
    }
}

struct Loaded {
    name: String,
    bias: u64,
    /// (p_vaddr, p_memsz) of each PT_LOAD.
    loads: Vec<(u64, u64)>,
}

unsafe extern "C" fn collect_cb(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    let out = &mut *(data as *mut Vec<Loaded>);
    let info = &*info;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        CStr::from_ptr(info.dlpi_name).to_string_lossy().into_owned()
    };
    let mut loads = Vec::new();
    for i in 0..info.dlpi_phnum as usize {
        let ph = &*info.dlpi_phdr.add(i);
        if ph.p_type == libc::PT_LOAD {
            loads.push((ph.p_vaddr, ph.p_memsz));
        }
    }
    out.push(Loaded { name, bias: info.dlpi_addr, loads });
    0
}

fn loaded_objects() -> Vec<Loaded> {
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: the callback only reads the phdr info handed to it and pushes into `out`.
    unsafe { libc::dl_iterate_phdr(Some(collect_cb), &mut out as *mut Vec<Loaded> as *mut libc::c_void) };
    out
}

fn section(file: &object::File<'_>, name: &str) -> (Option<Range<u64>>, Option<Vec<u8>>) {
    match file.section_by_name(name) {
        Some(s) => {
            let data = s.data().ok().map(|d| d.to_vec());
            (Some(s.address()..s.address() + s.size()), data)
        }
        None => (None, None),
    }
}

fn module_from(l: &Loaded, data: &[u8], avma: Range<u64>) -> Option<Module<Vec<u8>>> {
    let file = object::File::parse(data).ok()?;
    let (text_svma, text) = section(&file, ".text");
    let (eh_frame_svma, eh_frame) = section(&file, ".eh_frame");
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(&file, ".eh_frame_hdr");
    let (got_svma, _) = section(&file, ".got");
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma,
        text,
        got_svma,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        ..Default::default()
    };
    Some(Module::new(l.name.clone(), avma, l.bias, info))
}

impl Unwinder {
    pub(crate) fn new() -> Unwinder {
        let m = modules(false);
        Unwinder {
            inner: m.inner,
            cache: Cache::new(),
            ranges: m.ranges,
            loaded_at: m.loaded_at,
            checked_at: Instant::now(),
        }
    }

    /// Picks up a newer module list (a library was loaded since).
    fn refresh(&mut self) {
        if self.checked_at.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.checked_at = Instant::now();
        let m = modules(true);
        if m.loaded_at != self.loaded_at {
            self.inner = m.inner;
            self.ranges = m.ranges;
            self.loaded_at = m.loaded_at;
            self.cache = Cache::new();
        }
    }

    fn known(&self, addr: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&addr))
    }

    /// Unwinds one copied stack into lookup addresses (return address - 1 for callers),
    /// innermost first.
    pub(crate) fn unwind(&mut self, regs: Regs, stack: &[u8], out: &mut Vec<u64>) {
        out.clear();
        if !self.known(regs.ip) {
            self.refresh();
        }
        let sp = regs.sp;
        let mut read = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(off..off + 8).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        #[cfg(target_arch = "x86_64")]
        let uregs = framehop::x86_64::UnwindRegsX86_64::new(regs.ip, regs.sp, regs.fp);
        #[cfg(target_arch = "aarch64")]
        let uregs = framehop::aarch64::UnwindRegsAarch64::new(regs.lr, regs.sp, regs.fp);
        let mut iter = self.inner.iter_frames(regs.ip, uregs, &mut self.cache, &mut read);
        while let Ok(Some(frame)) = iter.next() {
            out.push(frame.address_for_lookup());
            if out.len() >= MAX_FRAMES {
                break;
            }
        }
    }
}
