//! The only module with `unsafe` code: turning memory the crate does not own
//! (a `vmalloc` area in the kernel, an `mmap`ed file in userspace) into the
//! `&[AtomicU64]` every other module works on, and the one zero-copy byte view.
//!
//! Everything outside this module is safe Rust on `&[AtomicU64]`: every shared
//! word is read and written atomically, so racing with another CPU or another
//! process is never a data race in the Rust sense, and every index is
//! bounds-checked by slice access.

#[cfg(not(loom))]
use crate::sync::AtomicU64;

/// Why raw memory could not be used as channel words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemError {
    /// `ptr` is null.
    Null,
    /// `ptr` is not 8-byte aligned.
    Misaligned,
    /// `len` is not a multiple of 8 bytes.
    LengthNotWords,
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            MemError::Null => "ptr: must not be null",
            MemError::Misaligned => "ptr: must be 8-byte aligned",
            MemError::LengthNotWords => "len: must be a multiple of 8 bytes",
        })
    }
}

/// Views `len` bytes at `ptr` as shared 64-bit words.
///
/// # Safety
///
/// For the whole lifetime `'a`:
/// - `ptr..ptr + len` must be one live allocation or mapping that stays mapped
///   (the caller keeps the `vmalloc` area or the `mmap` alive);
/// - every other access to that memory, from any thread, CPU or process, must
///   be an aligned 8-byte atomic access or a read that tolerates concurrent
///   writes (as `subbuf_bytes` documents); no `&mut` reference to it exists.
///
/// Pages mapped read-only are fine as long as the caller never stores to them;
/// the protocol stores only to the words its role owns (see `docs/FORMAT.md`).
#[cfg(not(loom))]
pub unsafe fn words_from_raw<'a>(ptr: *mut u8, len: usize) -> Result<&'a [AtomicU64], MemError> {
    if ptr.is_null() {
        return Err(MemError::Null);
    }
    if ptr.align_offset(core::mem::align_of::<AtomicU64>()) != 0 {
        return Err(MemError::Misaligned);
    }
    if !len.is_multiple_of(8) {
        return Err(MemError::LengthNotWords);
    }
    // SAFETY: `ptr` is non-null and aligned for `AtomicU64` (checked above);
    // `len / 8` words lie inside the caller's live mapping (the caller's
    // contract); `AtomicU64` has the size and alignment of `u64` and every bit
    // pattern is valid, and shared access through `&AtomicU64` is what the
    // caller promised all other parties use.
    Ok(unsafe { core::slice::from_raw_parts(ptr.cast::<AtomicU64>(), len / 8) })
}

/// The bytes of `words`, for zero-copy parsing of a sealed sub-buffer.
///
/// Only the reader calls this, and only on a sub-buffer that is sealed and not
/// yet consumed in a no-overwrite channel: the protocol guarantees that no
/// writer stores to it until the reader advances the consumer position, which
/// needs `&mut` on the reader that holds the returned borrow. A hostile
/// process that writes the mapping anyway can change the bytes under us; the
/// parser re-checks every length against the slice, so the worst it can cause
/// is garbage records, never an out-of-bounds access.
#[cfg(not(loom))]
pub(crate) fn subbuf_bytes(words: &[AtomicU64]) -> &[u8] {
    // SAFETY: the pointer and length describe exactly the memory of `words`
    // (8 bytes per word, `u8` needs no alignment), which lives as long as the
    // borrow of `words`. Per the protocol (see above) no one writes it while the
    // returned borrow lives, so reading it as plain bytes does not race.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

/// Compare-and-swap that is atomic with respect to code running on the same
/// CPU (interrupts, NMIs, signal handlers) but not to other CPUs: the
/// kernel's `local_cmpxchg`. On x86-64 it is one `cmpxchg` without `lock`,
/// which an interrupt cannot split and which costs a fraction of a locked one.
/// Other CPUs may load `w` concurrently: the instruction's load and store are
/// each one aligned 8-byte access.
#[cfg(all(target_arch = "x86_64", not(loom)))]
#[inline(always)]
pub(crate) fn local_cas(w: &AtomicU64, old: u64, new: u64) -> bool {
    let prev: u64;
    // SAFETY: `w.as_ptr()` is valid and 8-byte aligned for the borrow of `w`.
    // The instruction reads and writes only `*w` (one aligned 8-byte load and
    // at most one aligned 8-byte store, so concurrent atomic loads elsewhere
    // see old or new, never a mix), rax and the flags (clobbered by default);
    // it needs no stack.
    unsafe {
        core::arch::asm!(
            "cmpxchg qword ptr [{p}], {new}",
            p = in(reg) w.as_ptr(),
            new = in(reg) new,
            inout("rax") old => prev,
            options(nostack),
        );
    }
    prev == old
}

/// Fetch-and-add with the same per-CPU atomicity as [`local_cas`] (the
/// kernel's `local_add_return`). Returns the previous value.
#[cfg(all(target_arch = "x86_64", not(loom)))]
#[inline(always)]
pub(crate) fn local_add(w: &AtomicU64, v: u64) -> u64 {
    let prev: u64;
    // SAFETY: as for `local_cas`: one aligned 8-byte load and store of `*w`
    // (wrapping on overflow), the flags clobbered, no stack.
    unsafe {
        core::arch::asm!(
            "xadd qword ptr [{p}], {v}",
            p = in(reg) w.as_ptr(),
            v = inout(reg) v => prev,
            options(nostack),
        );
    }
    prev
}

/// Elsewhere (and under loom) the per-CPU operations are full atomics:
/// stronger than needed, never weaker.
#[cfg(not(all(target_arch = "x86_64", not(loom))))]
#[inline(always)]
pub(crate) fn local_cas(w: &crate::sync::AtomicU64, old: u64, new: u64) -> bool {
    use crate::sync::Ordering;
    w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// See the x86-64 version.
#[cfg(not(all(target_arch = "x86_64", not(loom))))]
#[inline(always)]
pub(crate) fn local_add(w: &crate::sync::AtomicU64, v: u64) -> u64 {
    w.fetch_add(v, crate::sync::Ordering::AcqRel)
}

/// Asks the CPU to start loading the cache line of `bytes[at]` (nothing if
/// `at` is out of bounds): a hint that never changes a result. The merge
/// gives it for the record a cursor will decode next time it leads, which
/// with hundreds of CPUs in turn is many records away, and otherwise a
/// cache miss every record.
#[inline(always)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn prefetch(bytes: &[u8], at: usize) {
    Region::of(bytes).prefetch(at);
}

/// A byte range to prefetch from later, held without a borrow: a prefetch
/// reads nothing a program can see and never faults, so the range may be
/// gone by the time it is used (the hint is then wasted, never wrong).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct Region {
    start: *const u8,
    len: usize,
}

#[cfg_attr(loom, allow(dead_code))]
impl Region {
    /// The range `bytes` covers now.
    #[inline(always)]
    pub(crate) fn of(bytes: &[u8]) -> Self {
        Region {
            start: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Asks the CPU to start loading the cache line of byte `at` of the
    /// range (nothing if `at` is out of it).
    #[inline(always)]
    pub(crate) fn prefetch(self, at: usize) {
        if at < self.len {
            self.prefetch_any(at);
        }
    }

    /// Asks the CPU to start loading the cache line `at` bytes from the
    /// range's start, in it or not: for a loop that would otherwise test
    /// every time (past the end, the line is the memory that follows, or
    /// nothing mapped; either way no result changes).
    #[inline(always)]
    pub(crate) fn prefetch_any(self, at: usize) {
        // Not dereferenced: an address, which `wrapping_add` makes without
        // any claim on what it points to.
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        let p = self.start.wrapping_add(at);
        // SAFETY: `prefetcht0` changes no register, flag or memory and never
        // faults, whatever the address (so one past the range, or in a range
        // since unmapped or reused, is harmless).
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        unsafe {
            core::arch::asm!(
                "prefetcht0 byte ptr [{p}]",
                p = in(reg) p,
                options(nostack, readonly, preserves_flags),
            );
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        let _ = (self, at);
    }
}
