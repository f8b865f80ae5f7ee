//! A channel file truncated under a live mapping: the next access to a page
//! past the new end raises SIGBUS, which kills the process by default.
//!
//! A program embedding this library decides what happens then: by default
//! nothing changes (the signal kills it, as with any mapped file). Calling
//! [`exit_on_truncation`] once turns a SIGBUS at an address inside a mapped
//! channel file into a clear message naming the file on standard error and
//! an exit with the given code (what the `relay` CLI does, as LTTng's
//! consumer does for its shared memory); a SIGBUS anywhere else still
//! kills the process as before. Every [`crate::ChannelFile`] registers its
//! mapping here (at most [`SLOTS`] at once; more are not covered).
//!
//! The handler cannot return to the faulting access (the page is gone), so
//! it ends the process: records already delivered stay delivered, progress
//! a consumer committed stays committed, what was in flight is handed to
//! the next reader.

#![allow(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// Mappings covered at once.
pub const SLOTS: usize = 64;

struct Slot {
    /// First byte of the mapping; 0 while the slot is free.
    start: AtomicUsize,
    len: AtomicUsize,
    path: AtomicPtr<u8>,
    path_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    path: AtomicPtr::new(std::ptr::null_mut()),
    path_len: AtomicUsize::new(0),
};

static REGISTRY: [Slot; SLOTS] = [FREE; SLOTS];
/// Exit code of [`exit_on_truncation`]; 0 while not installed.
static EXIT_CODE: AtomicI32 = AtomicI32::new(0);
static PREFIX: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static PREFIX_LEN: AtomicUsize = AtomicUsize::new(0);

/// A mapping's entry in the registry, removed when dropped.
#[derive(Debug)]
pub struct Registration {
    slot: Option<usize>,
    /// The path's bytes, which the slot points to.
    _path: Box<[u8]>,
}

/// Registers the mapping `start..start + len` of the file at `path`.
pub fn register(start: usize, len: usize, path: &Path) -> Registration {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes: Box<[u8]> = path.as_os_str().as_bytes().into();
    for (i, s) in REGISTRY.iter().enumerate() {
        if s.start
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        s.len.store(len, Ordering::Relaxed);
        s.path.store(bytes.as_mut_ptr(), Ordering::Relaxed);
        s.path_len.store(bytes.len(), Ordering::Relaxed);
        s.start.store(start, Ordering::Release);
        return Registration {
            slot: Some(i),
            _path: bytes,
        };
    }
    Registration {
        slot: None,
        _path: bytes,
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(s) = self.slot.and_then(|i| REGISTRY.get(i)) {
            // The handler reads the path only while `start` is set; a
            // SIGBUS in this mapping while another thread drops it is the
            // one race left (the mapping is being unmapped anyway).
            s.start.store(0, Ordering::Release);
        }
    }
}

/// Installs the SIGBUS handler described in the module docs: a fault
/// inside a registered mapping prints `PREFIX: PATH: the file was truncated
/// under this process (a mapped page is gone)` and exits with `code`.
pub fn exit_on_truncation(prefix: &'static str, code: u8) -> std::io::Result<()> {
    PREFIX.store(prefix.as_ptr().cast_mut(), Ordering::Relaxed);
    PREFIX_LEN.store(prefix.len(), Ordering::Relaxed);
    EXIT_CODE.store(i32::from(code).max(1), Ordering::Release);
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // the handler only loads atomics, calls write(2), signal(2) and
    // _exit(2), all async-signal-safe.
    let r = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut())
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The registered file whose mapping holds `addr`: its path bytes.
fn find(addr: usize) -> Option<(*const u8, usize)> {
    REGISTRY.iter().find_map(|s| {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Relaxed);
        (start != 0 && start != usize::MAX && addr >= start && addr - start < len).then(|| {
            (
                s.path.load(Ordering::Relaxed).cast_const(),
                s.path_len.load(Ordering::Relaxed),
            )
        })
    })
}

fn write_err(ptr: *const u8, len: usize) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: `ptr..ptr + len` is a registered path or the static prefix,
    // alive while registered; write(2) only reads it.
    unsafe {
        libc::write(libc::STDERR_FILENO, ptr.cast(), len);
    }
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let code = EXIT_CODE.load(Ordering::Acquire);
    match find(addr) {
        Some((path, path_len)) if code != 0 => {
            write_err(
                PREFIX.load(Ordering::Relaxed),
                PREFIX_LEN.load(Ordering::Relaxed),
            );
            write_err(b": ".as_ptr(), 2);
            write_err(path, path_len);
            let msg =
                b": the file was truncated under this process (a mapped page is gone); ending\n";
            write_err(msg.as_ptr(), msg.len());
            // SAFETY: _exit is async-signal-safe and does not return.
            unsafe { libc::_exit(code) }
        }
        _ => {
            // Not ours: the default action, when the access is retried.
            // SAFETY: signal(2) is async-signal-safe.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
}
