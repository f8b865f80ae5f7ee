//! The only `unsafe` code of relay-user: mapping a channel file, the page
//! size and the clock.
//!
//! A channel file is mapped shared, once, as one contiguous range. When the
//! file may only be read (a kernel channel, or `--read-only`), the whole
//! range is mapped read-only and then the consumer region is mapped again,
//! writable, at the same address (`MAP_FIXED`): readers store only there.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use relay_core::AtomicU64;

/// A shared mapping of `len` bytes of a file.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through
// `&[AtomicU64]`, which is `Sync`; moving the owner between threads moves
// only the right to unmap it.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access goes through atomics.
unsafe impl Sync for Mapping {}

/// Which parts of the mapping are writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Everything (the producer side of a userspace channel).
    ReadWrite,
    /// Nothing writable (probing a header).
    ReadOnly,
    /// Only `offset..offset + len` (a consumer region); the rest read-only.
    ReadOnlyExcept {
        /// Byte offset of the writable range (page-aligned).
        offset: usize,
        /// Its length in bytes.
        len: usize,
    },
}

impl Mapping {
    /// Maps the first `len` bytes of `file` with `access`.
    pub fn new(file: &File, len: usize, access: Access) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty file",
            ));
        }
        let prot = match access {
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Access::ReadOnly | Access::ReadOnlyExcept { .. } => libc::PROT_READ,
        };
        // SAFETY: mmap with a null hint, a valid open fd and offset 0 creates
        // a new mapping and touches no existing memory; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mapping = Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(io::Error::last_os_error)?,
            len,
        };
        if let Access::ReadOnlyExcept { offset, len: wlen } = access {
            let end = offset.checked_add(wlen).filter(|&end| end <= len);
            if end.is_none() || wlen == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "writable range outside the mapping",
                ));
            }
            let off = libc::off_t::try_from(offset).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "writable offset too large")
            })?;
            // SAFETY: `offset..offset + wlen` lies inside the mapping we just
            // created and own (checked above), and nothing references it yet,
            // so replacing those pages with a writable mapping of the same
            // file range (MAP_FIXED) cannot invalidate any live reference.
            let p = unsafe {
                libc::mmap(
                    mapping.ptr.as_ptr().add(offset).cast(),
                    wlen,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    off,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(mapping)
    }

    /// The mapping as channel words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the range is one live shared mapping owned by `self` (so it
        // outlives the borrow); mmap returns page-aligned memory and `len` is
        // rounded down to whole words; every party accesses channel memory
        // with aligned 8-byte atomics (the relay format's rule).
        unsafe { relay_core::mem::words_from_raw(self.ptr.as_ptr(), self.len & !7) }.unwrap_or(&[])
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped (never: `new` refuses empty files).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` is the mapping this value created and
        // still owns; borrows of it (`words`) cannot outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of userspace channels (the
/// kernel's `ktime_get_mono_fast_ns` reads the same clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}
