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
///   writes (as [`subbuf_bytes`] documents); no `&mut` reference to it exists.
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
    if len % 8 != 0 {
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
