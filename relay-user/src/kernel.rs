//! The kernel module's control interface (relay-kmod/src/relay_uapi.h, the
//! contract): its ioctl structs mirrored byte for byte, and safe calls
//! whose errors name the operation and what the errno means there.
//!
//! Channels themselves need none of this: `/dev/relay/NAME` opens with
//! [`crate::ChannelFile::open_consumer`] or `open_snapshot` like any channel file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::sys::{ioctl, ioctl_stats, Ioctl};

/// The control device (root only): create, destroy, bench.
pub const CONTROL_PATH: &str = "/dev/relay/control";
/// Where channel files appear.
pub const DEV_DIR: &str = "/dev/relay";
/// Bytes of a channel name field (31 characters and a NUL).
pub const NAME_MAX: usize = 32;
/// `RELAY_FLAG_OVERWRITE`.
pub const FLAG_OVERWRITE: u64 = 1;

/// `RELAY_FLAG_CLOCK(c)`: the clock's header code in bits 8..16.
pub fn flag_clock(clock: relay_core::Clock) -> u64 {
    (clock as u64) << 8
}
/// `RELAY_LOAD_IRQ`: add a hard-IRQ writer on every CPU.
pub const LOAD_IRQ: u32 = 1;
/// `RELAY_LOAD_NMI`: that timer also sends an NMI whose handler writes.
pub const LOAD_NMI: u32 = 2;

/// `struct relay_create`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCreate {
    /// NUL-terminated, zero-padded.
    pub name: [u8; NAME_MAX],
    /// Power of two, 128 ..= 2^30.
    pub subbuf_size: u64,
    /// 0 (means 8) or 2 ..= 2^20.
    pub subbuf_count: u64,
    /// [`FLAG_OVERWRITE`].
    pub flags: u64,
    /// Out: bytes to map.
    pub total_size: u64,
    /// Out: per-CPU buffers.
    pub cpu_count: u32,
    /// In: 0; out: the channel's number, for BPF programs
    /// (`relay_kfunc_write`).
    pub id: u32,
}

/// `struct relay_destroy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayDestroy {
    /// NUL-terminated, zero-padded.
    pub name: [u8; NAME_MAX],
}

/// `struct relay_flush`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayFlush {
    /// The CPU to flush.
    pub cpu: u32,
    /// 0.
    pub reserved: u32,
    /// Out: the flush barrier.
    pub barrier: u64,
    /// Out: the first sub-buffer after the flush.
    pub next: u64,
}

/// `struct relay_cpu_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCpuStats {
    /// Records in sealed sub-buffers.
    pub produced: u64,
    /// Records readers reported consumed.
    pub consumed: u64,
    /// Dropped: no sub-buffer free.
    pub lost_full: u64,
    /// Dropped: larger than a sub-buffer holds.
    pub lost_too_big: u64,
    /// Reclaimed before a reader got them.
    pub lost_overwrite: u64,
    /// Sealed, not consumed.
    pub ready_subbufs: u64,
}

/// `struct relay_stats`. Not `sys::Plain`: `cpus_ptr` is a pointer the
/// kernel writes through, so only [`stats`] builds one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// `struct relay_cpu_stats[cpus]`.
    pub cpus_ptr: u64,
    /// In: entries; out: entries written.
    pub cpus: u32,
    /// 0.
    pub reserved: u32,
    /// Out: the channel's memory.
    pub memory_bytes: u64,
}

/// `struct relay_load`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayLoad {
    /// Per CPU, at most 2^32.
    pub records: u64,
    /// Per second per CPU, 0: no limit.
    pub rate: u64,
    /// Payload bytes, 32 ..= 65536.
    pub size: u32,
    /// [`LOAD_IRQ`], [`LOAD_NMI`].
    pub flags: u32,
    /// Out: writes tried, all CPUs and sources.
    pub attempted: u64,
    /// Out: writes accepted.
    pub written: u64,
    /// Out: of them, from hard-IRQ context.
    pub irq_writes: u64,
    /// Out: of them, from NMI context.
    pub nmi_writes: u64,
    /// Out.
    pub elapsed_ns: u64,
    /// Out: CPUs that ran a kthread.
    pub cpus: u32,
    /// 0.
    pub reserved: u32,
}

/// `struct relay_bench`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayBench {
    /// Per CPU, at most 2^26.
    pub records: u64,
    /// Geometry of both channels.
    pub subbuf_size: u64,
    /// Geometry of both channels.
    pub subbuf_count: u64,
    /// Payload bytes, 8 ..= 4096.
    pub size: u32,
    /// In: run on the first this many online CPUs, 0 on all; out: ran.
    pub cpus: u32,
    /// Out: relay-kmod's writer, summed over CPUs.
    pub relay_kmod_ns: u64,
    /// Out: the kernel's `relay_write()`, summed over CPUs.
    pub relay_write_ns: u64,
    /// Out: `relay_reserve()` of a timestamped record, summed over CPUs.
    pub relay_reserve_ns: u64,
    /// The clock (a header code: 1, 3 or 4; 0 means 1) of relay-kmod's
    /// records and of `relay_reserve()`'s stamp.
    pub clock: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Out: `records` reads of `ktime_get_mono_fast_ns()`, `local_clock()`
    /// and `rdtsc`, summed over CPUs.
    pub clock_ns: [u64; 3],
}

// The C layouts: sizes and every offset (no padding anywhere).
const _: () = {
    assert!(size_of::<RelayCreate>() == 72);
    assert!(offset_of!(RelayCreate, subbuf_size) == 32);
    assert!(offset_of!(RelayCreate, subbuf_count) == 40);
    assert!(offset_of!(RelayCreate, flags) == 48);
    assert!(offset_of!(RelayCreate, total_size) == 56);
    assert!(offset_of!(RelayCreate, cpu_count) == 64);
    assert!(offset_of!(RelayCreate, id) == 68);
    assert!(size_of::<RelayDestroy>() == 32);
    assert!(size_of::<RelayFlush>() == 24);
    assert!(offset_of!(RelayFlush, reserved) == 4);
    assert!(offset_of!(RelayFlush, barrier) == 8);
    assert!(offset_of!(RelayFlush, next) == 16);
    assert!(size_of::<RelayCpuStats>() == 48);
    assert!(offset_of!(RelayCpuStats, ready_subbufs) == 40);
    assert!(size_of::<RelayStats>() == 24);
    assert!(offset_of!(RelayStats, cpus) == 8);
    assert!(offset_of!(RelayStats, reserved) == 12);
    assert!(offset_of!(RelayStats, memory_bytes) == 16);
    assert!(size_of::<RelayLoad>() == 72);
    assert!(offset_of!(RelayLoad, size) == 16);
    assert!(offset_of!(RelayLoad, flags) == 20);
    assert!(offset_of!(RelayLoad, attempted) == 24);
    assert!(offset_of!(RelayLoad, written) == 32);
    assert!(offset_of!(RelayLoad, irq_writes) == 40);
    assert!(offset_of!(RelayLoad, nmi_writes) == 48);
    assert!(offset_of!(RelayLoad, elapsed_ns) == 56);
    assert!(offset_of!(RelayLoad, cpus) == 64);
    assert!(offset_of!(RelayLoad, reserved) == 68);
    assert!(size_of::<RelayBench>() == 88);
    assert!(offset_of!(RelayBench, clock) == 56);
    assert!(offset_of!(RelayBench, reserved) == 60);
    assert!(offset_of!(RelayBench, clock_ns) == 64);
    assert!(offset_of!(RelayBench, relay_reserve_ns) == 48);
    assert!(offset_of!(RelayBench, size) == 24);
    assert!(offset_of!(RelayBench, cpus) == 28);
    assert!(offset_of!(RelayBench, relay_kmod_ns) == 32);
    assert!(offset_of!(RelayBench, relay_write_ns) == 40);
};

const MAGIC: u8 = b'r';
/// `_IOWR('r', 1, struct relay_create)`.
pub const RELAY_IOC_CREATE: Ioctl<RelayCreate> = Ioctl::read_write(MAGIC, 1);
/// `_IOW('r', 2, struct relay_destroy)`.
pub const RELAY_IOC_DESTROY: Ioctl<RelayDestroy> = Ioctl::write(MAGIC, 2);
/// `_IOWR('r', 3, struct relay_flush)`.
pub const RELAY_IOC_FLUSH: Ioctl<RelayFlush> = Ioctl::read_write(MAGIC, 3);
/// `_IOWR('r', 4, struct relay_stats)`.
pub const RELAY_IOC_STATS: Ioctl<RelayStats> = Ioctl::read_write(MAGIC, 4);
/// `_IOWR('r', 5, struct relay_load)`.
pub const RELAY_IOC_LOAD: Ioctl<RelayLoad> = Ioctl::read_write(MAGIC, 5);
/// `_IOWR('r', 6, struct relay_bench)`.
pub const RELAY_IOC_BENCH: Ioctl<RelayBench> = Ioctl::read_write(MAGIC, 6);

/// What a kernel call was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Opening a device.
    Open,
    /// RELAY_IOC_CREATE.
    Create,
    /// RELAY_IOC_DESTROY.
    Destroy,
    /// RELAY_IOC_FLUSH.
    Flush,
    /// RELAY_IOC_STATS.
    Stats,
    /// RELAY_IOC_LOAD.
    Load,
    /// RELAY_IOC_BENCH.
    Bench,
}

/// A kernel call that failed: what it was, on what, and the errno.
#[derive(Debug)]
pub struct KernelError {
    /// The operation.
    pub op: Op,
    /// What it was applied to (a channel name or a device path).
    pub target: String,
    /// The OS error.
    pub source: io::Error,
    /// The name was refused before the call (by the module's rules).
    pub name: bool,
}

/// The symbolic name of `errno`.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAGAIN => "EAGAIN",
        _ => return None,
    })
}

impl KernelError {
    /// The same error, said of `target` (e.g. the channel file's path).
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// The errno, if the OS gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// What the errno means for this operation (relay_uapi.h).
    pub fn meaning(&self) -> String {
        let Some(e) = self.errno() else {
            return self.source.to_string();
        };
        let specific = match (self.op, e) {
            (_, libc::EINVAL) if self.name => {
                "invalid name (1 ..= 31 of A-Z a-z 0-9 _ -, not \"control\")"
            }
            (Op::Open, libc::ENOENT) => "no such device (is relay-kmod loaded?)",
            (Op::Create, libc::EINVAL) => {
                "invalid geometry, flags or name (subbuf_size a power of two 128 ..= 2^30, subbufs 0 or 2 ..= 2^20)"
            }
            (Op::Create | Op::Destroy, libc::ENAMETOOLONG) => "name longer than 31 bytes",
            (Op::Create, libc::EEXIST) => "name taken",
            (Op::Create | Op::Bench, libc::E2BIG) => "channel too large (at most 1 GiB)",
            (Op::Destroy, libc::ENOENT) => "no such channel",
            (Op::Destroy, libc::EINVAL) => "invalid name (1 ..= 31 of A-Z a-z 0-9 _ -)",
            (Op::Flush, libc::EINVAL) => "no such CPU",
            (Op::Stats, libc::EIO) => "the channel's statistics could not be read",
            (Op::Load, libc::EINVAL) => {
                "records, size or flags out of range (records <= 2^32, size 32 ..= 65536)"
            }
            (Op::Load, libc::EINTR) => "interrupted by a signal",
            (Op::Bench, libc::EINVAL) => {
                "records, size or geometry out of range (records <= 2^26, size 8 ..= 4096 and at most half a sub-buffer)"
            }
            (_, libc::EPERM | libc::EACCES) => "permission denied (root only)",
            (_, libc::ENOTTY) => "not a relay-kmod device (or an older module)",
            (_, libc::ENOMEM) => "out of memory",
            _ => "",
        };
        if specific.is_empty() {
            // strerror, without std's " (os error N)".
            let s = io::Error::from_raw_os_error(e).to_string();
            s.split(" (os error").next().unwrap_or(&s).to_string()
        } else {
            specific.to_string()
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Open => "open",
            Op::Create => "create",
            Op::Destroy => "destroy",
            Op::Flush => "flush",
            Op::Stats => "stats",
            Op::Load => "load",
            Op::Bench => "bench",
        };
        write!(f, "{op} {:?}: {}", self.target, self.meaning())?;
        match self.errno() {
            Some(e) => match errno_name(e) {
                Some(name) => write!(f, " ({name})"),
                None => write!(f, " (errno {e})"),
            },
            None => Ok(()),
        }
    }
}

impl std::error::Error for KernelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn fail(op: Op, target: impl Into<String>) -> impl FnOnce(io::Error) -> KernelError {
    let target = target.into();
    move |source| KernelError {
        op,
        target,
        source,
        name: false,
    }
}

/// The name field for `name` (a bare name or `/dev/relay/NAME`): 1 ..= 31
/// of `[A-Za-z0-9_-]`, checked here as the module checks it.
pub fn encode_name(op: Op, name: &str) -> Result<[u8; NAME_MAX], KernelError> {
    let name = bare_name(name);
    let errno = if name.len() >= NAME_MAX {
        Some(libc::ENAMETOOLONG)
    } else if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        || name == "control"
    {
        Some(libc::EINVAL)
    } else {
        None
    };
    if let Some(e) = errno {
        return Err(KernelError {
            op,
            target: name.to_string(),
            source: io::Error::from_raw_os_error(e),
            name: true,
        });
    }
    let mut out = [0u8; NAME_MAX];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// `NAME` from `NAME` or `/dev/relay/NAME`.
pub fn bare_name(name: &str) -> &str {
    name.strip_prefix(DEV_DIR)
        .and_then(|n| n.strip_prefix('/'))
        .unwrap_or(name)
}

/// The channel file of channel `name`.
pub fn channel_path(name: &str) -> PathBuf {
    Path::new(DEV_DIR).join(bare_name(name))
}

fn control() -> Result<File, KernelError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL_PATH)
        .map_err(fail(Op::Open, CONTROL_PATH))
}

/// A channel the module created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateInfo {
    /// Its file, `/dev/relay/NAME`.
    pub path: PathBuf,
    /// Bytes to map.
    pub total_size: u64,
    /// Per-CPU buffers.
    pub cpu_count: u32,
    /// The channel's number, for BPF programs.
    pub id: u32,
}

/// Creates channel `name` (RELAY_IOC_CREATE on the control device),
/// stamped with `clock` (`Monotonic`, `Local` or `Tsc`; the module refuses
/// others with EINVAL).
pub fn create(
    name: &str,
    subbuf_size: u64,
    subbuf_count: u64,
    overwrite: bool,
    clock: relay_core::Clock,
) -> Result<CreateInfo, KernelError> {
    let mut arg = RelayCreate {
        name: encode_name(Op::Create, name)?,
        subbuf_size,
        subbuf_count,
        flags: if overwrite { FLAG_OVERWRITE } else { 0 } | flag_clock(clock),
        ..RelayCreate::default()
    };
    let target = bare_name(name);
    let ctl = control()?;
    ioctl(ctl.as_fd(), RELAY_IOC_CREATE, &mut arg).map_err(fail(Op::Create, target))?;
    Ok(CreateInfo {
        path: channel_path(target),
        total_size: arg.total_size,
        cpu_count: arg.cpu_count,
        id: arg.id,
    })
}

/// Destroys channel `name` (RELAY_IOC_DESTROY). Open files and mappings
/// keep its memory until they are gone.
pub fn destroy(name: &str) -> Result<(), KernelError> {
    let mut arg = RelayDestroy {
        name: encode_name(Op::Destroy, name)?,
    };
    let ctl = control()?;
    ioctl(ctl.as_fd(), RELAY_IOC_DESTROY, &mut arg).map_err(fail(Op::Destroy, bare_name(name)))
}

/// Closes `cpu`'s open sub-buffer of the channel open as `fd`
/// (RELAY_IOC_FLUSH): `(barrier, next)`: that CPU holds no record older
/// than `barrier` once sub-buffer `next` is consumed.
pub fn flush(fd: BorrowedFd<'_>, cpu: u32) -> Result<(u64, u64), KernelError> {
    let mut arg = RelayFlush {
        cpu,
        ..RelayFlush::default()
    };
    ioctl(fd, RELAY_IOC_FLUSH, &mut arg).map_err(fail(Op::Flush, format!("cpu {cpu}")))?;
    Ok((arg.barrier, arg.next))
}

/// Every CPU's counters of the channel open as `fd` and the bytes of memory
/// it holds (RELAY_IOC_STATS).
pub fn stats(fd: BorrowedFd<'_>) -> Result<(Vec<RelayCpuStats>, u64), KernelError> {
    // The kernel writes at most one entry per possible CPU; ask for plenty
    // (8192: the format's limit), keep what it wrote.
    let mut out = vec![RelayCpuStats::default(); 8192];
    let arg = ioctl_stats(fd, RELAY_IOC_STATS, &mut out).map_err(fail(Op::Stats, "channel"))?;
    out.truncate(arg.cpus as usize);
    Ok((out, arg.memory_bytes))
}

/// What [`load`] asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadArgs {
    /// Records per CPU (kthread).
    pub records: u64,
    /// Records per second per CPU, 0: no limit.
    pub rate: u64,
    /// Payload bytes.
    pub size: u32,
    /// Add a hard-IRQ writer on every CPU.
    pub irq: bool,
    /// Add an NMI writer (needs `irq`'s timer; implies it in the module).
    pub nmi: bool,
}

/// What [`load`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadResult {
    /// CPUs that ran a kthread.
    pub cpus: u32,
    /// Writes tried, all CPUs and sources.
    pub attempted: u64,
    /// Writes accepted.
    pub written: u64,
    /// Of them, from hard-IRQ context.
    pub irq_writes: u64,
    /// Of them, from NMI context.
    pub nmi_writes: u64,
    /// Wall time.
    pub elapsed_ns: u64,
    /// A signal stopped the writers early (EINTR); the counts are what
    /// they did until then.
    pub interrupted: bool,
}

/// Runs the module's load generator on the channel open as `fd`
/// (RELAY_IOC_LOAD): checked payloads from a kthread on every CPU. A
/// signal stops it early: see [`LoadResult::interrupted`].
pub fn load(fd: BorrowedFd<'_>, args: LoadArgs) -> Result<LoadResult, KernelError> {
    let mut arg = RelayLoad {
        records: args.records,
        rate: args.rate,
        size: args.size,
        flags: if args.irq { LOAD_IRQ } else { 0 } | if args.nmi { LOAD_NMI } else { 0 },
        ..RelayLoad::default()
    };
    let interrupted = match ioctl(fd, RELAY_IOC_LOAD, &mut arg) {
        Ok(()) => false,
        // The module fills the counts in before it returns EINTR.
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => true,
        Err(e) => return Err(fail(Op::Load, "channel")(e)),
    };
    Ok(LoadResult {
        interrupted,
        cpus: arg.cpus,
        attempted: arg.attempted,
        written: arg.written,
        irq_writes: arg.irq_writes,
        nmi_writes: arg.nmi_writes,
        elapsed_ns: arg.elapsed_ns,
    })
}

/// What [`bench()`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchArgs {
    /// Records per CPU, each way.
    pub records: u64,
    /// Payload bytes.
    pub size: u32,
    /// Geometry of both channels.
    pub subbuf_size: u64,
    /// Geometry of both channels.
    pub subbuf_count: u64,
    /// The clock relay-kmod's records and `relay_reserve()`'s carry.
    pub clock: relay_core::Clock,
    /// Run on the first this many online CPUs; 0: on all.
    pub cpus: u32,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            records: 0,
            size: 0,
            subbuf_size: 0,
            subbuf_count: 0,
            clock: relay_core::Clock::Monotonic,
            cpus: 0,
        }
    }
}

/// What [`bench()`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchResult {
    /// CPUs that wrote.
    pub cpus: u32,
    /// Records per CPU.
    pub records: u64,
    /// relay-kmod's writer: nanoseconds summed over CPUs.
    pub relay_kmod_ns: u64,
    /// `relay_write()`: nanoseconds summed over CPUs.
    pub relay_write_ns: u64,
    /// `relay_reserve()` of a timestamped record: nanoseconds summed over CPUs.
    pub relay_reserve_ns: u64,
    /// `records` reads of `ktime_get_mono_fast_ns()`, `local_clock()` and
    /// `rdtsc`: nanoseconds summed over CPUs.
    pub clock_ns: [u64; 3],
}

impl BenchResult {
    /// Nanoseconds per read of clock `i` (in [`BenchResult::clock_ns`]'s order).
    pub fn clock_read_ns(&self, i: usize) -> f64 {
        let reads = self.records as f64 * f64::from(self.cpus);
        if reads == 0.0 {
            return 0.0;
        }
        self.clock_ns.get(i).map_or(0.0, |&ns| ns as f64 / reads)
    }

    /// Millions of records per second per CPU for `ns` summed over CPUs.
    fn rate(&self, ns: u64) -> f64 {
        if ns == 0 {
            return 0.0;
        }
        (self.records as f64 * f64::from(self.cpus)) / ns as f64 * 1e3
    }

    /// relay-kmod: millions of records per second per CPU.
    pub fn relay_kmod_rate(&self) -> f64 {
        self.rate(self.relay_kmod_ns)
    }

    /// `relay_write()`: millions of records per second per CPU.
    pub fn relay_write_rate(&self) -> f64 {
        self.rate(self.relay_write_ns)
    }

    /// `relay_reserve()` with a timestamped header (what relay-kmod's
    /// records carry): millions of records per second per CPU.
    pub fn relay_reserve_rate(&self) -> f64 {
        self.rate(self.relay_reserve_ns)
    }
}

/// Times relay-kmod's writer against the kernel's `relay_write()` on every
/// CPU (RELAY_IOC_BENCH on the control device).
pub fn bench(args: BenchArgs) -> Result<BenchResult, KernelError> {
    let mut arg = RelayBench {
        records: args.records,
        subbuf_size: args.subbuf_size,
        subbuf_count: args.subbuf_count,
        size: args.size,
        clock: args.clock as u32,
        cpus: args.cpus,
        ..RelayBench::default()
    };
    let ctl = control()?;
    ioctl(ctl.as_fd(), RELAY_IOC_BENCH, &mut arg).map_err(fail(Op::Bench, CONTROL_PATH))?;
    Ok(BenchResult {
        cpus: arg.cpus,
        records: args.records,
        relay_kmod_ns: arg.relay_kmod_ns,
        relay_write_ns: arg.relay_write_ns,
        relay_reserve_ns: arg.relay_reserve_ns,
        clock_ns: arg.clock_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(dir, type, nr, size)` by hand, asm-generic layout:
    /// dir << 30 | size << 16 | type << 8 | nr; _IOWR: dir 3, _IOW: dir 1.
    #[test]
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    fn ioctl_numbers_match_the_ioc_encoding() {
        assert_eq!(RELAY_IOC_CREATE.number(), 0xc048_7201); // _IOWR, 72 bytes
        assert_eq!(RELAY_IOC_DESTROY.number(), 0x4020_7202); // _IOW, 32 bytes
        assert_eq!(RELAY_IOC_FLUSH.number(), 0xc018_7203); // _IOWR, 24 bytes
        assert_eq!(RELAY_IOC_STATS.number(), 0xc018_7204); // _IOWR, 24 bytes
        assert_eq!(RELAY_IOC_LOAD.number(), 0xc048_7205); // _IOWR, 72 bytes
        assert_eq!(RELAY_IOC_BENCH.number(), 0xc058_7206); // _IOWR, 88 bytes
    }

    #[test]
    fn struct_sizes_match_the_c_layout() {
        assert_eq!(size_of::<RelayCreate>(), NAME_MAX + 4 * 8 + 2 * 4);
        assert_eq!(size_of::<RelayDestroy>(), NAME_MAX);
        assert_eq!(size_of::<RelayFlush>(), 2 * 4 + 2 * 8);
        assert_eq!(size_of::<RelayCpuStats>(), 6 * 8);
        assert_eq!(size_of::<RelayStats>(), 8 + 2 * 4 + 8);
        assert_eq!(size_of::<RelayLoad>(), 2 * 8 + 2 * 4 + 5 * 8 + 2 * 4);
        assert_eq!(
            size_of::<RelayBench>(),
            3 * 8 + 2 * 4 + 3 * 8 + 2 * 4 + 3 * 8
        );
    }

    #[test]
    fn names_are_checked_like_the_module_checks_them() {
        let n = encode_name(Op::Create, "trace_1-x").unwrap();
        assert_eq!(&n[..9], b"trace_1-x");
        assert!(n[9..].iter().all(|&b| b == 0));
        assert_eq!(
            &encode_name(Op::Destroy, "/dev/relay/abc").unwrap()[..4],
            b"abc\0"
        );
        assert!(encode_name(Op::Create, &"x".repeat(31)).is_ok());
        let e = encode_name(Op::Create, &"x".repeat(32)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENAMETOOLONG));
        assert!(
            e.to_string()
                .contains("name longer than 31 bytes (ENAMETOOLONG)"),
            "{e}"
        );
        for bad in ["", "a b", "a/b", "é", "control"] {
            let e = encode_name(Op::Create, bad).unwrap_err();
            assert!(e.to_string().contains("invalid name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn errors_name_the_operation_and_the_errno() {
        let e = |op, errno| {
            KernelError {
                op,
                target: "x".into(),
                source: io::Error::from_raw_os_error(errno),
                name: false,
            }
            .to_string()
        };
        assert_eq!(
            e(Op::Create, libc::EEXIST),
            "create \"x\": name taken (EEXIST)"
        );
        assert_eq!(
            e(Op::Destroy, libc::ENOENT),
            "destroy \"x\": no such channel (ENOENT)"
        );
        assert_eq!(
            e(Op::Open, libc::ENOENT),
            "open \"x\": no such device (is relay-kmod loaded?) (ENOENT)"
        );
        assert_eq!(
            e(Op::Load, libc::EPERM),
            "load \"x\": permission denied (root only) (EPERM)"
        );
        assert_eq!(
            e(Op::Flush, libc::ENOSPC),
            "flush \"x\": No space left on device (ENOSPC)"
        );
        assert_eq!(
            e(Op::Stats, 4000),
            "stats \"x\": Unknown error 4000 (errno 4000)"
        );
    }

    #[test]
    fn bench_rates_are_per_cpu() {
        let r = BenchResult {
            cpus: 4,
            records: 1_000_000,
            relay_kmod_ns: 4 * 100_000_000, // 0.1 s per CPU
            relay_write_ns: 4 * 200_000_000,
            relay_reserve_ns: 4 * 400_000_000,
            clock_ns: [4 * 20_000_000, 4 * 10_000_000, 0],
        };
        assert!((r.relay_kmod_rate() - 10.0).abs() < 1e-9);
        assert!((r.clock_read_ns(0) - 20.0).abs() < 1e-9);
        assert!((r.clock_read_ns(1) - 10.0).abs() < 1e-9);
        assert_eq!(r.clock_read_ns(2), 0.0);
        assert_eq!(r.clock_read_ns(3), 0.0);
        assert!((r.relay_write_rate() - 5.0).abs() < 1e-9);
        assert!((r.relay_reserve_rate() - 2.5).abs() < 1e-9);
    }
}
