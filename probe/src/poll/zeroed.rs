//! Memory for the per-thread tables: [`Padded`] (a value on its own cache lines) and
//! [`Zeroed`] (a zero-filled table, mapped from the kernel when large so that untouched pages
//! cost nothing). A leaf below `slots` and `event_ring`, which both allocate through it.

/// Pads a value to its own pair of cache lines (adjacent-line prefetch included).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Marker for types whose all-zero bit pattern is a valid value (atomics and arrays of them).
///
/// # Safety
/// Implement only for types made of integers and atomics.
pub(crate) unsafe trait Zeroable {}
// SAFETY: an atomic integer.
unsafe impl Zeroable for std::sync::atomic::AtomicU32 {}

/// `n` zeroed values, owned. Large tables (64 KiB and up) are mapped straight from the kernel
/// (`mmap`, anonymous): their pages stay untouched, and so cost no memory, until a thread or
/// location first writes to them. Through `alloc_zeroed` the same promise did not hold: once
/// something in the process had freed a large block (loading the unwind tables does, in `build`),
/// glibc raised its mmap threshold and served the tables from heap pages it had already touched,
/// which made an idle probe about 18 MiB larger (docs/benchmarks.md, "Probe costs").
pub(crate) struct Zeroed<T: Zeroable> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    mapped: bool,
}

// SAFETY: `Zeroed` owns its values like a `Box<[T]>` does.
unsafe impl<T: Zeroable + Send> Send for Zeroed<T> {}
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Zeroable + Sync> Sync for Zeroed<T> {}

/// Tables at least this large are mapped rather than allocated.
const MAP_AT: usize = 64 << 10;

impl<T: Zeroable> Zeroed<T> {
    fn layout(n: usize) -> std::alloc::Layout {
        std::alloc::Layout::array::<T>(n).expect("table size fits in memory")
    }
}

impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised (zeroed, and T is Zeroable) values we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for Zeroed<T> {
    fn drop(&mut self) {
        let layout = Self::layout(self.len);
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the values need no drop (Zeroable types are plain atomics and integers); the
        // memory came from the matching call in `zeroed_slice`.
        unsafe {
            if self.mapped {
                libc::munmap(self.ptr.as_ptr().cast(), layout.size());
            } else {
                std::alloc::dealloc(self.ptr.as_ptr().cast(), layout);
            }
        }
    }
}

impl<T: Zeroable> std::fmt::Debug for Zeroed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zeroed[{}; {}]", std::any::type_name::<T>(), self.len)
    }
}

/// `n` zeroed values (see [`Zeroed`]).
pub(crate) fn zeroed_slice<T: Zeroable>(n: usize) -> Zeroed<T> {
    let layout = Zeroed::<T>::layout(n);
    if layout.size() == 0 {
        return Zeroed { ptr: std::ptr::NonNull::dangling(), len: n, mapped: false };
    }
    if layout.size() >= MAP_AT && layout.align() <= 4096 {
        // SAFETY: an anonymous private mapping of `size` bytes; the kernel zero-fills it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            if let Some(ptr) = std::ptr::NonNull::new(p.cast::<T>()) {
                return Zeroed { ptr, len: n, mapped: true };
            }
        }
    }
    // SAFETY: layout has non-zero size; T is Zeroable, so zeroed memory holds valid values.
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    match std::ptr::NonNull::new(p) {
        Some(ptr) => Zeroed { ptr, len: n, mapped: false },
        None => std::alloc::handle_alloc_error(layout),
    }
}
