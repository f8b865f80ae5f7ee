//! The only `unsafe` code of relay-user: mapping a channel file, ioctls,
//! poll, CPU affinity, the page size and the clock.
//!
//! A channel file is mapped shared, once, as one contiguous range. When the
//! file may only be read (a kernel channel, or `--read-only`), the whole
//! range is mapped read-only and then the consumer region is mapped again,
//! writable, at the same address (`MAP_FIXED`): readers store only there.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use relay_core::AtomicU64;

/// A shared mapping of `len` bytes of a file.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Names the file if a truncation takes pages from under it.
    truncation: Option<crate::truncation::Registration>,
}

// SAFETY: the mapping is plain shared memory accessed only through
// `&[AtomicU64]`, which is `Sync`; moving the owner between threads moves
// only the right to unmap it.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access goes through atomics.
unsafe impl Sync for Mapping {}

/// Which parts of the mapping are writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // read-write, read-only, read-only but...
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
            truncation: None,
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
}

/// `channel`, borrowing its memory for `'a` instead.
///
/// # Safety
///
/// The mapping `channel` views must stay mapped for all of `'a`: the
/// caller keeps its `ChannelFile` alive until it drops the channel and
/// everything borrowed from it.
pub(crate) unsafe fn extend_channel<'a>(
    channel: relay_core::Channel<'_>,
) -> relay_core::Channel<'a> {
    // SAFETY: the two types differ only in the lifetime, which the caller
    // vouches for.
    unsafe { std::mem::transmute::<relay_core::Channel<'_>, relay_core::Channel<'a>>(channel) }
}

impl Mapping {
    /// Registers this mapping as the file at `path` for
    /// [`crate::truncation::exit_on_truncation`].
    pub fn name(&mut self, path: &std::path::Path) {
        let start = self.ptr.as_ptr() as usize;
        self.truncation = Some(crate::truncation::register(start, self.len, path));
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        drop(self.truncation.take()); // before its address range goes
                                      // SAFETY: `ptr..ptr + len` is the mapping this value created and
                                      // still owns; borrows of it (`words`) cannot outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Takes a shared open-file-description lock (`F_RDLCK`) on bytes
/// `start..start + len` of `file`, waiting while another open file
/// description holds an exclusive one there (`F_OFD_SETLKW`). An exclusive
/// lock this description holds there becomes shared, atomically.
pub fn lock_range_shared(file: &File, start: u64, len: u64) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "lock range too large");
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(start).map_err(|_| too_big())?;
    fl.l_len = libc::off_t::try_from(len).map_err(|_| too_big())?;
    loop {
        // SAFETY: a valid open fd and a pointer to a live, initialized
        // `flock` that fcntl reads and does not keep.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes an exclusive open-file-description lock (`F_OFD_SETLK`) on bytes
/// `start..start + len` of `file` (opened for writing). `Ok(false)`: another
/// open file description holds a lock there. The kernel drops the lock when
/// the last descriptor of this description closes, so a killed holder never
/// keeps it.
pub fn try_lock_range(file: &File, start: u64, len: u64) -> io::Result<bool> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "lock range too large");
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(start).map_err(|_| too_big())?;
    fl.l_len = libc::off_t::try_from(len).map_err(|_| too_big())?;
    // SAFETY: a valid open fd and a pointer to a live, initialized `flock`
    // that fcntl reads (and, for SETLK, does not keep).
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(false),
        // EACCES is also a conflict by POSIX, but a kernel without
        // CONFIG_FILE_LOCKING answers every lock with it: a conflict only
        // if F_OFD_GETLK shows a lock there.
        Some(libc::EACCES) => {
            let mut probe = fl;
            // SAFETY: as above; GETLK writes the conflicting lock into `probe`.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
            if r == 0 && probe.l_type != libc::F_UNLCK as libc::c_short {
                Ok(false)
            } else {
                Err(io::Error::other(
                    "file locks are not available (a kernel without CONFIG_FILE_LOCKING?)",
                ))
            }
        }
        _ => Err(e),
    }
}

/// Allocates the first `len` bytes of `file` (`posix_fallocate`), growing
/// it to `len`: `ENOSPC` now rather than `SIGBUS` at the first store into
/// a page the filesystem cannot back.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file size too large"))?;
    // SAFETY: a valid open fd; posix_fallocate touches no memory of ours.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// The process id of this process.
pub fn pid() -> u32 {
    std::process::id()
}

/// Whether process `pid` exists (it may belong to another user).
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Which termination signal (SIGINT, SIGTERM, SIGHUP) arrived, once
/// [`catch_termination`] is in force; 0 while none did.
static TERMINATED_BY: AtomicI32 = AtomicI32::new(0);
/// Set with [`TERMINATED_BY`], for loops that watch a flag.
static TERMINATING: AtomicBool = AtomicBool::new(false);

/// Bumped (after [`TERMINATING`] is set) and woken by the handler, so that
/// a reader asleep in [`futex_wait`] wakes: it sleeps on this word too.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_termination(signal: libc::c_int) {
    // Async-signal-safe: atomic stores and a futex wake. The flag first:
    // a sleeper that read `INTERRUPTS` before the bump then finds it
    // changed (or is woken); one that read it after finds the flag set.
    TERMINATED_BY.store(signal, Ordering::Relaxed);
    TERMINATING.store(true, Ordering::Release);
    INTERRUPTS.fetch_add(1, Ordering::Release);
    // SAFETY: FUTEX_WAKE on a live static word; it touches no memory of
    // this process.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            INTERRUPTS.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Whether `flag` is the one [`catch_termination`] returns (whose
/// signals wake [`futex_wait`]).
pub(crate) fn is_termination_flag(flag: &AtomicBool) -> bool {
    std::ptr::eq(flag, &TERMINATING)
}

/// The low 32 bits of a shared 64-bit word, where a futex on it looks
/// (the word's first four bytes: relay's words are little-endian).
fn low_half(word: &AtomicU64) -> *const u32 {
    word.as_ptr().cast::<u32>().cast_const()
}

/// Wakes every thread, of any process, asleep in [`futex_wait`] on `word`
/// (a shared futex: the word is in a file mapping).
pub(crate) fn futex_wake(word: &AtomicU64) {
    // SAFETY: FUTEX_WAKE only reads the futex's key from the address of a
    // live, aligned word of a mapping; it writes no memory.
    unsafe {
        libc::syscall(libc::SYS_futex, low_half(word), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// The value to give [`futex_wait`] for the termination signals: read it
/// before looking at the termination flag.
pub(crate) fn interrupts() -> u32 {
    INTERRUPTS.load(Ordering::Acquire)
}

/// `struct futex_waitv` (linux/futex.h).
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;

/// Sleeps until the low 32 bits of `word` (a shared futex) differ from
/// those of `seen`, or [`INTERRUPTS`] from `interrupts` (a termination
/// signal), or a wake, or `deadline`; both compared before it sleeps, so a
/// change just before the call ends it at once. Spurious returns are
/// allowed: callers look again. Without `futex_waitv` (Linux before 5.16)
/// it waits on `word` alone, at most 50 ms at a time.
///
/// `word` is the word's address: nothing here dereferences it (the kernel
/// reads the futex, and fails with EFAULT if the range was unmapped since).
pub(crate) fn futex_wait(word: usize, seen: u64, interrupts: u32, deadline: Option<Instant>) {
    let timeout = deadline.map(|d| {
        // futex_waitv's timeout is absolute, on CLOCK_MONOTONIC, which is
        // what `Instant` reads on Linux: now plus what is left.
        let at = Duration::from_nanos(monotonic_ns())
            .saturating_add(d.saturating_duration_since(Instant::now()));
        libc::timespec {
            tv_sec: libc::time_t::try_from(at.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(at.subsec_nanos() as i32),
        }
    });
    let waiters = [
        FutexWaitv {
            val: seen & u64::from(u32::MAX),
            uaddr: word as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        },
        FutexWaitv {
            val: u64::from(interrupts),
            uaddr: INTERRUPTS.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
            reserved: 0,
        },
    ];
    let ts = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: two valid futex_waitv entries and an optional timespec, all
    // alive for the call, which only reads them and the two aligned words.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            2u32,
            0u32,
            ts,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        let left = deadline
            .map_or(Duration::from_millis(50), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(50));
        let rel = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        };
        // SAFETY: as for FUTEX_WAKE, plus a relative timespec alive for
        // the call.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word,
                libc::FUTEX_WAIT,
                (seen as u32) as i32,
                &rel as *const libc::timespec,
            );
        }
    }
}

/// Turns the first SIGINT, SIGTERM or SIGHUP into a flag, so that a
/// consumer can finish writing what it holds, commit it, and then end
/// ([`end_by_signal`]); a second one kills as usual. Returns the flag.
pub fn catch_termination() -> io::Result<&'static AtomicBool> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
        // value; the handler only stores to atomics (async-signal-safe),
        // and SA_RESETHAND restores the default action once it ran.
        let r = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_termination as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(&TERMINATING)
}

/// If a signal caught by [`catch_termination`] arrived, ends the process
/// the way it would have ended it (so the shell sees "killed by SIGINT").
pub fn end_by_signal() {
    let signal = TERMINATED_BY.load(Ordering::Acquire);
    if signal == 0 {
        return;
    }
    // SAFETY: restoring the default action and raising a signal have no
    // memory-safety preconditions.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Whether the C library has the locale `name` (as `setlocale` would
/// find it), without changing this process's locale.
pub fn locale_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `name` is a NUL-terminated string that outlives the call;
    // newlocale with no base locale only allocates a new locale object,
    // which is freed at once and never used otherwise.
    unsafe {
        let locale = libc::newlocale(libc::LC_NUMERIC_MASK, name.as_ptr(), std::ptr::null_mut());
        if locale.is_null() {
            return false;
        }
        libc::freelocale(locale);
    }
    true
}

/// Restores SIGPIPE's default action (Rust's runtime ignores it): a
/// command whose reader went away (`relay stat | head -1`) then ends
/// silently, as `cat` and `ls` do, instead of failing its next print. Not
/// for a consumer, which must see the closed pipe to commit what it wrote.
pub fn die_on_sigpipe() {
    // SAFETY: setting a signal's disposition to its default has no
    // memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Writes all of `buf` to standard output with write(2), unbuffered: one
/// call for a chunk of up to `PIPE_BUF` bytes to a pipe, which the kernel
/// then takes whole or not at all. Interrupted writes are resumed.
pub fn write_stdout(buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
        // SAFETY: `rest` is valid for `rest.len()` bytes of reads.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, rest.as_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(n) => done += n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Whether standard output is a pipe or a socket (where a write of up to
/// `PIPE_BUF` bytes is atomic and a reader may go away).
pub fn stdout_is_pipe() -> bool {
    // SAFETY: a zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes for the call's duration.
    let r = unsafe { libc::fstat(libc::STDOUT_FILENO, &mut st) };
    let kind = st.st_mode & libc::S_IFMT;
    r == 0 && (kind == libc::S_IFIFO || kind == libc::S_IFSOCK)
}

/// Bytes a pipe takes atomically.
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// The CPUs this machine may ever run (`/sys/devices/system/cpu/possible`,
/// "0-N": the highest plus one), whatever this process's affinity: a
/// channel is for the machine, not for the CPUs its creator may use.
/// Falls back to the configured processor count.
pub fn possible_cpus() -> u32 {
    let from_sysfs = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .filter_map(|part| part.rsplit('-').next()?.trim().parse::<u32>().ok())
                .max()
        })
        .and_then(|highest| highest.checked_add(1));
    from_sysfs.unwrap_or_else(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
    })
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// `clock`'s time in nanoseconds (0 for a time before its epoch).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// `CLOCK_REALTIME` in nanoseconds since the epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Where `CLOCK_MONOTONIC` stands in wall time now: the realtime clock read
/// between two monotonic reads, paired with their midpoint.
pub fn monotonic_anchor() -> relay_core::Anchor {
    let before = monotonic_ns();
    let realtime_ns = realtime_ns();
    let after = monotonic_ns();
    relay_core::Anchor {
        realtime_ns,
        clock: before + (after.wrapping_sub(before)) / 2,
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of userspace channels (the
/// kernel's `ktime_get_mono_fast_ns` reads the same clock).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// An ioctl argument the kernel may read and overwrite as plain bytes.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structs of integers and byte arrays
/// without padding, so every byte pattern is a valid value, and with no
/// field that a driver treats as a pointer (so the ioctl touches nothing
/// but the struct itself).
pub unsafe trait Plain: Copy {}

// SAFETY: each is `#[repr(C)]`, made only of `u64`, `u32` and `[u8; N]`
// fields, with its size asserted equal to the sum of its fields in
// kernel.rs (no padding), and none of them carries a pointer
// (`RelayStats`, which does, is deliberately not `Plain`: see
// `ioctl_stats`).
unsafe impl Plain for crate::kernel::RelayCreate {}
// SAFETY: as above.
unsafe impl Plain for crate::kernel::RelayDestroy {}
// SAFETY: as above.
unsafe impl Plain for crate::kernel::RelayFlush {}
// SAFETY: as above.
unsafe impl Plain for crate::kernel::RelayCpuStats {}
// SAFETY: as above.
unsafe impl Plain for crate::kernel::RelayLoad {}
// SAFETY: as above.
unsafe impl Plain for crate::kernel::RelayBench {}
// SAFETY: `#[repr(C)]`, `u64`, `u32`, `u16` and byte-array fields with the
// compiler's padding spelled out as byte arrays (size asserted 72 in
// blktrace/session.rs), no pointer.
unsafe impl Plain for crate::blktrace::session::BlkUserTraceSetup {}

/// An ioctl request whose argument is a `T`: the number encodes
/// `size_of::<T>()`, so a request cannot be sent with the wrong struct.
pub struct Ioctl<T> {
    number: u32,
    _arg: PhantomData<fn(&mut T)>,
}

impl<T> Clone for Ioctl<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Ioctl<T> {}

impl<T> std::fmt::Debug for Ioctl<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ioctl({:#010x})", self.number)
    }
}

/// The `_IOC` encoding of `asm-generic/ioctl.h` (x86, arm, arm64, riscv,
/// ...): direction, size, type, number. powerpc, mips and sparc use 3
/// direction bits and 13 size bits.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod ioc {
    pub const WRITE: u32 = 4;
    pub const READ: u32 = 2;
    pub const SIZE_BITS: u32 = 13;
}
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod ioc {
    pub const WRITE: u32 = 1;
    pub const READ: u32 = 2;
    pub const SIZE_BITS: u32 = 14;
}

impl<T> Ioctl<T> {
    const fn new(dir: u32, ty: u8, nr: u8) -> Self {
        let size = std::mem::size_of::<T>();
        assert!(size < 1 << ioc::SIZE_BITS, "ioctl argument too large");
        Ioctl {
            number: dir << (16 + ioc::SIZE_BITS)
                | (size as u32) << 16
                | (ty as u32) << 8
                | nr as u32,
            _arg: PhantomData,
        }
    }

    /// `_IOW(ty, nr, T)`: userspace writes a `T`.
    pub const fn write(ty: u8, nr: u8) -> Self {
        Self::new(ioc::WRITE, ty, nr)
    }

    /// `_IOWR(ty, nr, T)`: userspace writes a `T`, the kernel writes it back.
    pub const fn read_write(ty: u8, nr: u8) -> Self {
        Self::new(ioc::READ | ioc::WRITE, ty, nr)
    }

    /// `_IO(ty, nr)`: no argument (`T` is `()`).
    pub const fn none(ty: u8, nr: u8) -> Self {
        Self::new(0, ty, nr)
    }

    /// The request number.
    pub const fn number(self) -> u32 {
        self.number
    }
}

/// # Safety
///
/// `arg` must be valid for reads and writes of the size `number` encodes,
/// and every pointer inside it valid for what the driver does with it;
/// no one else may access those bytes during the call.
unsafe fn ioctl_raw(fd: BorrowedFd<'_>, number: u32, arg: *mut u8) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor (borrowed); `arg` is valid as the
    // caller promised; the driver behind `fd` accesses nothing else.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), number as libc::Ioctl, arg) };
    if r >= 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `ioctl(fd, request, arg)`. The driver reads and writes `arg` in place,
/// at most `size_of::<T>()` bytes (the size the request encodes).
pub fn ioctl<T: Plain>(fd: BorrowedFd<'_>, request: Ioctl<T>, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is an exclusive borrow of exactly the bytes the request
    // encodes (`Ioctl<T>` is built from `size_of::<T>()`); a `Plain` value
    // holds no pointers, and any bytes the driver leaves there are a valid
    // `T`.
    unsafe { ioctl_raw(fd, request.number, (arg as *mut T).cast()) }
}

/// `ioctl(fd, request, 0)` for a request that takes no argument (`_IO`).
pub(crate) fn ioctl_none(fd: BorrowedFd<'_>, request: Ioctl<()>) -> io::Result<()> {
    // SAFETY: the request encodes a zero-sized argument, so the driver
    // reads and writes nothing through the (null) pointer.
    unsafe { ioctl_raw(fd, request.number, std::ptr::null_mut()) }
}

/// RELAY_IOC_STATS: fills `out` (at most `out.len()` entries; the kernel
/// writes at most one per CPU) and returns the header the kernel wrote back
/// (`cpus`: entries written, `memory_bytes`).
pub fn ioctl_stats(
    fd: BorrowedFd<'_>,
    request: Ioctl<crate::kernel::RelayStats>,
    out: &mut [crate::kernel::RelayCpuStats],
) -> io::Result<crate::kernel::RelayStats> {
    let mut arg = crate::kernel::RelayStats {
        cpus_ptr: out.as_mut_ptr() as u64,
        cpus: u32::try_from(out.len()).unwrap_or(u32::MAX),
        reserved: 0,
        memory_bytes: 0,
    };
    // SAFETY: `arg` is an exclusive local of the size the request encodes;
    // its pointer and count come from `out`, an exclusive borrow of at
    // least `cpus` entries of a `Plain` type, and the driver writes at most
    // `cpus` of them there (relay_uapi.h), nothing else.
    unsafe {
        ioctl_raw(
            fd,
            request.number,
            (&mut arg as *mut crate::kernel::RelayStats).cast(),
        )?;
    }
    Ok(arg)
}

/// Waits up to `timeout` for `fd` to be readable (`POLLIN`). Returns
/// whether it is (`false`: timed out). A signal ends the wait early.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    poll_readable_raw(fd.as_raw_fd(), timeout)
}

/// [`poll_readable`] on a descriptor number (for a wait on another thread,
/// which cannot borrow it): a number closed since fails or polls another
/// file, which only ends the wait early.
pub(crate) fn poll_readable_raw(fd: std::os::fd::RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid, writable pollfd for the call's duration.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    match r {
        0 => Ok(false),
        r if r > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Runs the calling thread on `cpu` only (a kernel channel file's write()
/// goes to the CPU it runs on).
pub fn pin_to_cpu(cpu: u32) -> io::Result<()> {
    let cpu = cpu as usize;
    // SAFETY: `cpu_set_t` is a plain bit array: all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is below the set's capacity in bits (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
