//! Unwinding copied stacks with framehop, on the watchdog thread.
//!
//! Modules come from `dl_iterate_phdr`; their unwind sections (`.eh_frame`, `.eh_frame_hdr`,
//! `.text`, `.got`) are read from the files with `object`. The vDSO has no file, so it is read
//! from memory. The list is refreshed when an address outside every known module appears.

use std::collections::HashMap;
use std::ffi::CStr;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use object::{Object, ObjectSection};

use super::signal::Regs;
use super::symbolize::TAIL_CALL_TAG;

/// Decoded call sites kept per unwinder before the cache is cleared.
const CALL_CACHE_LIMIT: usize = 65_536;

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
    /// The executable segments of the modules (where call instructions may be read).
    exec: Vec<Range<u64>>,
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
    let mut exec = Vec::new();
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
            exec.extend(l.exec.iter().map(|(v, s)| l.bias + v..l.bias + v + s));
        }
    }
    Modules { inner, ranges, exec, loaded_at: Instant::now() }
}

/// A watchdog's unwinder: a clone of the shared modules plus its own rule cache.
pub(crate) struct Unwinder {
    inner: Inner,
    cache: Cache,
    ranges: Vec<Range<u64>>,
    exec: Vec<Range<u64>>,
    /// Return address -> the function its call instruction calls directly (0: none).
    calls: HashMap<u64, u64>,
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
    /// The same for the executable PT_LOADs.
    exec: Vec<(u64, u64)>,
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
    let mut exec = Vec::new();
    for i in 0..info.dlpi_phnum as usize {
        let ph = &*info.dlpi_phdr.add(i);
        if ph.p_type == libc::PT_LOAD {
            loads.push((ph.p_vaddr, ph.p_memsz));
            if ph.p_flags & libc::PF_X != 0 {
                exec.push((ph.p_vaddr, ph.p_memsz));
            }
        }
    }
    out.push(Loaded { name, bias: info.dlpi_addr, loads, exec });
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
            exec: m.exec,
            calls: HashMap::new(),
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
            self.exec = m.exec;
            self.calls.clear();
            self.loaded_at = m.loaded_at;
            self.cache = Cache::new();
        }
    }

    fn known(&self, addr: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&addr))
    }

    /// The function that the call instruction ending at `ret` calls directly, if it is a direct
    /// call into a known module's code (cached per return address).
    fn call_target(&mut self, ret: u64) -> Option<u64> {
        if let Some(t) = self.calls.get(&ret) {
            return (*t != 0).then_some(*t);
        }
        let in_code = |a: u64| self.exec.iter().any(|r| r.contains(&a));
        let target = if ret >= CALL_LEN as u64 && in_code(ret - CALL_LEN as u64) && in_code(ret - 1) {
            let mut bytes = [0u8; CALL_LEN];
            read_own(ret - CALL_LEN as u64, &mut bytes).then(|| decode_call(ret, &bytes)).flatten()
        } else {
            None
        };
        let target = target.filter(|t| in_code(*t));
        if self.calls.len() >= CALL_CACHE_LIMIT {
            self.calls.clear();
        }
        self.calls.insert(ret, target.unwrap_or(0));
        target
    }

    /// Unwinds one copied stack into lookup addresses (return address - 1 for callers),
    /// innermost first.
    ///
    /// Before each caller's address goes the function that its call instruction calls directly
    /// (tagged with [`TAIL_CALL_TAG`]): when the next inner frame is not in that function, the
    /// function left by a tail call (a `jmp` to the callee), and the symbolizer shows it (see
    /// `symbolize::frames`).
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
        let mut returns: Vec<(usize, u64)> = Vec::new();
        {
            let mut iter = self.inner.iter_frames(regs.ip, uregs, &mut self.cache, &mut read);
            while let Ok(Some(frame)) = iter.next() {
                if let framehop::FrameAddress::ReturnAddress(r) = frame {
                    returns.push((out.len(), r.get()));
                }
                out.push(frame.address_for_lookup());
                if out.len() >= MAX_FRAMES {
                    break;
                }
            }
        }
        // Insert the direct-call targets, last first so that the indices stay valid.
        for (at, ret) in returns.into_iter().rev() {
            if let Some(target) = self.call_target(ret) {
                out.insert(at, target | TAIL_CALL_TAG);
            }
        }
        out.truncate(MAX_FRAMES);
    }
}

/// Bytes read before a return address to decode the call that pushed it.
#[cfg(target_arch = "x86_64")]
const CALL_LEN: usize = 5;
#[cfg(target_arch = "aarch64")]
const CALL_LEN: usize = 4;

#[cfg(target_arch = "x86_64")]
fn decode_call(ret: u64, bytes: &[u8; CALL_LEN]) -> Option<u64> {
    x86_64_direct_call(ret, bytes)
}

#[cfg(target_arch = "aarch64")]
fn decode_call(ret: u64, bytes: &[u8; CALL_LEN]) -> Option<u64> {
    aarch64_direct_call(ret, bytes)
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// x86_64: `call rel32` (`E8 xx xx xx xx`) ending at `ret` calls `ret + rel32`.
pub(crate) fn x86_64_direct_call(ret: u64, before: &[u8; 5]) -> Option<u64> {
    if before[0] != 0xE8 {
        return None;
    }
    let rel = i32::from_le_bytes([before[1], before[2], before[3], before[4]]);
    Some(ret.wrapping_add_signed(i64::from(rel)))
}

#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
/// aarch64: `bl imm26` (top six bits `100101`) at `ret - 4` calls `ret - 4 + imm26 * 4`.
pub(crate) fn aarch64_direct_call(ret: u64, before: &[u8; 4]) -> Option<u64> {
    let insn = u32::from_le_bytes(*before);
    if insn >> 26 != 0b100101 {
        return None;
    }
    // Sign-extend the 26-bit word offset.
    let imm = ((insn << 6) as i32) >> 6;
    Some(ret.wrapping_sub(4).wrapping_add_signed(i64::from(imm) * 4))
}

/// Reads our own memory without trusting that it is still mapped: `process_vm_readv` on our
/// own pid fails with `EFAULT` where a plain read would fault (a library unloaded since the
/// module list was read).
fn read_own(addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` points at `buf`, which outlives the call; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_direct_calls_are_decoded() {
        // `call +0x10` ending at 0x1005 -> 0x1015; `call -0x105` ending at 0x2005 -> 0x1f00.
        assert_eq!(x86_64_direct_call(0x1005, &[0xE8, 0x10, 0x00, 0x00, 0x00]), Some(0x1015));
        assert_eq!(x86_64_direct_call(0x2005, &[0xE8, 0xFB, 0xFE, 0xFF, 0xFF]), Some(0x1f00));
        // `call *%rax` (FF D0) and `call *0x10(%rip)` (FF 15 ..) are not direct calls.
        assert_eq!(x86_64_direct_call(0x1005, &[0x90, 0x90, 0x90, 0xFF, 0xD0]), None);
        assert_eq!(x86_64_direct_call(0x1006, &[0x15, 0x10, 0x00, 0x00, 0x00]), None);
    }

    #[test]
    fn aarch64_branch_and_links_are_decoded() {
        // `bl #+0x40` at 0x1000 (0x94000010) returns to 0x1004 and calls 0x1040.
        assert_eq!(aarch64_direct_call(0x1004, &0x9400_0010u32.to_le_bytes()), Some(0x1040));
        // `bl #-0x8` at 0x1000 (0x97fffffe) calls 0xff8.
        assert_eq!(aarch64_direct_call(0x1004, &0x97ff_fffeu32.to_le_bytes()), Some(0xff8));
        // `blr x8` (0xd63f0100) and `b #+0x40` (0x14000010) are not direct calls.
        assert_eq!(aarch64_direct_call(0x1004, &0xd63f_0100u32.to_le_bytes()), None);
        assert_eq!(aarch64_direct_call(0x1004, &0x1400_0010u32.to_le_bytes()), None);
    }

    #[test]
    fn own_code_is_read_and_unmapped_memory_is_refused() {
        let f = x86_64_direct_call as fn(u64, &[u8; 5]) -> Option<u64>;
        let mut buf = [0u8; 4];
        assert!(read_own(f as usize as u64, &mut buf));
        assert!(!read_own(8, &mut buf));
    }
}
