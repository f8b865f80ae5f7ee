//! A channel in a file: create one (the userspace producer side) or open an
//! existing one (a userspace channel, or the kernel module's channel file).
//!
//! A kernel channel file is a character device: its `st_size` is 0, so the
//! size to map comes from the channel header (on the first page), and the
//! module, not this process, owns the producer state and flushes.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use relay_core::{
    AtomicU64, Channel, ChannelError, ChannelFlags, Clock, CpuLocal, CpuStats, Geometry,
    GeometryParams, Repaired, Writer,
};

use crate::error::{io, Error};
use crate::sys::{page_size, Access, Mapping};

/// A mapped channel file.
#[derive(Debug)]
pub struct ChannelFile {
    path: PathBuf,
    /// Kept open for event loops: the kernel module's channel file wakes
    /// `poll` when a sub-buffer seals.
    file: File,
    mapping: Mapping,
    geometry: Geometry,
    flags: ChannelFlags,
    /// A kernel module's channel file (a character device).
    kernel: bool,
    /// Mapped writable as a whole (a userspace producer).
    writable: bool,
    /// Opened read-only: readers of it are snapshots.
    snapshot: bool,
    /// A kernel channel opened read-only: the same device opened for
    /// writing, when the caller may, for RELAY_IOC_FLUSH (which changes the
    /// channel, so the module wants write access).
    flusher: Option<File>,
    /// What opening as a producer repaired (see [`Self::repaired`]).
    repaired: Vec<(u32, Repaired)>,
}

/// The bytes every userspace producer holds a shared lock on while it has
/// the channel open (docs/FORMAT.md, "Producers that die"): the channel
/// header's first word, which no consumer locks.
const PRODUCER_LOCK: (u64, u64) = (0, 8);

/// The size of the channel in `file`: its length for a plain file; for a
/// character device (whose `st_size` is 0) what the header on its first
/// page says, once every header field checked out.
fn region_size(file: &File, path: &Path, kernel: bool) -> Result<u64, Error> {
    if !kernel {
        return Ok(file.metadata().map_err(io(path, "stat"))?.len());
    }
    let probe = Mapping::new(file, page_size(), Access::ReadOnly).map_err(io(path, "map"))?;
    match Channel::open(probe.words()) {
        Ok(channel) => Ok(channel.geometry().total_size()),
        // The header is valid (it is checked before the size): the region
        // is the size the header claims.
        Err(ChannelError::Truncated { need, .. }) => Ok(need),
        Err(source) => Err(Error::Format {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn is_char_device(file: &File, path: &Path) -> Result<bool, Error> {
    Ok(file
        .metadata()
        .map_err(io(path, "stat"))?
        .file_type()
        .is_char_device())
}

/// Validates the channel in `file` (`size` bytes) with a read-only view:
/// nothing is written through it.
fn validate(file: &File, path: &Path, size: u64) -> Result<(Geometry, ChannelFlags), Error> {
    let format = |source| Error::Format {
        path: path.to_path_buf(),
        source,
    };
    let size = usize::try_from(size)
        .map_err(|_| io(path, "map")(std::io::Error::other("file too large")))?;
    if size < relay_core::format::CHANNEL_HEADER_SIZE {
        return Err(format(ChannelError::Truncated {
            need: relay_core::format::CHANNEL_HEADER_SIZE as u64,
            have: size as u64,
        }));
    }
    let probe = Mapping::new(file, size, Access::ReadOnly).map_err(io(path, "map"))?;
    let channel = Channel::open(probe.words()).map_err(format)?;
    Ok((*channel.geometry(), channel.flags()))
}

impl ChannelFile {
    /// Creates a channel file at `path` (it must not exist) for `params` and
    /// `flags`, sized and laid out as docs/FORMAT.md says, stamped with
    /// `CLOCK_MONOTONIC` and anchored to the wall time now.
    pub fn create(path: &Path, params: GeometryParams, flags: ChannelFlags) -> Result<Self, Error> {
        let anchor = crate::sys::monotonic_anchor();
        Self::create_as(path, params, flags, Clock::Monotonic, Some(anchor))
    }

    /// [`Self::create`] for timestamps of `clock` anchored at `anchor`: a
    /// copy of another channel (a snapshot keeps its source's clock and
    /// anchor).
    pub fn create_as(
        path: &Path,
        mut params: GeometryParams,
        flags: ChannelFlags,
        clock: Clock,
        anchor: Option<relay_core::Anchor>,
    ) -> Result<Self, Error> {
        if params.page_size == 0 {
            params.page_size = page_size() as u32;
        }
        let geometry = Geometry::new(params).map_err(Error::Geometry)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(io(path, "create"))?;
        // Every block now: a full filesystem fails here, with the path,
        // not later as SIGBUS in a writer that touches a hole.
        if let Err(e) = crate::sys::allocate(&file, geometry.total_size()) {
            let _ = std::fs::remove_file(path);
            return Err(io(path, "allocate")(e));
        }
        let len = usize::try_from(geometry.total_size()).map_err(|_| {
            io(path, "map")(std::io::Error::other(
                "channel larger than the address space",
            ))
        })?;
        let mut mapping = Mapping::new(&file, len, Access::ReadWrite).map_err(io(path, "map"))?;
        mapping.name(path);
        Channel::create_anchored(mapping.words(), geometry, flags, clock, anchor).map_err(
            |source| Error::Format {
                path: path.to_path_buf(),
                source,
            },
        )?;
        crate::sys::lock_range_shared(&file, PRODUCER_LOCK.0, PRODUCER_LOCK.1)
            .map_err(io(path, "lock"))?;
        Ok(ChannelFile {
            path: path.to_path_buf(),
            file,
            mapping,
            geometry,
            flags,
            kernel: false,
            writable: true,
            snapshot: false,
            flusher: None,
            repaired: Vec::new(),
        })
    }

    /// Opens the channel in `path` for snapshot reading: `O_RDONLY`, mapped
    /// `PROT_READ` as a whole, so nothing in the channel can change through
    /// it. Its [`crate::Stream`]s are snapshots (see relay-core's
    /// `reader`): any number may run beside the consumer and the writers.
    /// Kernel channel files are flushed through the module (an ioctl needs
    /// no write access to the mapping).
    pub fn open_snapshot(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(io(path, "open"))?;
        let kernel = is_char_device(&file, path)?;
        let size = region_size(&file, path, kernel)?;
        let (geometry, flags) = validate(&file, path, size)?;
        let len = usize::try_from(geometry.total_size())
            .map_err(|_| io(path, "map")(std::io::Error::other("file too large")))?;
        let mut mapping = Mapping::new(&file, len, Access::ReadOnly).map_err(io(path, "map"))?;
        mapping.name(path);
        let file = ChannelFile {
            path: path.to_path_buf(),
            file,
            mapping,
            geometry,
            flags,
            kernel,
            writable: false,
            snapshot: true,
            flusher: kernel
                .then(|| std::fs::OpenOptions::new().write(true).open(path).ok())
                .flatten(),
            repaired: Vec::new(),
        };
        // A snapshot starts at the consumer position: it must be sane.
        file.check_consumers()?;
        Ok(file)
    }

    /// Opens the channel in `path` as the consumer of `cpus` (every CPU when
    /// empty), mapped read-only but for the consumer region, and claims them: an exclusive
    /// open-file-description lock on each CPU's consumer-state bytes, held
    /// until this value is dropped (or the process dies: the kernel drops
    /// the lock, so a killed consumer never blocks the next one). A CPU that
    /// another consumer holds is [`Error::Busy`].
    pub fn open_consumer(path: &Path, cpus: &[u32]) -> Result<Self, Error> {
        let file = Self::map(path, false)?;
        let all: Vec<u32> = (0..file.geometry.cpu_count()).collect();
        let cpus = if cpus.is_empty() { &all[..] } else { cpus };
        for &cpu in cpus {
            file.claim(cpu)?;
        }
        Ok(file)
    }

    /// Claims `cpu` for this open file (see [`Self::open_consumer`]).
    fn claim(&self, cpu: u32) -> Result<(), Error> {
        if cpu >= self.geometry.cpu_count() {
            return Ok(()); // no such CPU: nothing to read, nothing to claim
        }
        let stride = self.geometry.consumer_stride();
        let start = self.geometry.consumer_offset() + u64::from(cpu) * stride;
        if !crate::sys::try_lock_range(&self.file, start, stride).map_err(io(&self.path, "lock"))? {
            let holder = u32::try_from(self.channel().claim_pid(cpu))
                .ok()
                .filter(|&pid| crate::sys::process_exists(pid));
            return Err(Error::Busy {
                path: self.path.clone(),
                cpu: Some(cpu),
                holder,
            });
        }
        self.channel().set_claim_pid(cpu, crate::sys::pid().into());
        // This CPU's only consumer now: a sleeper registered here is a dead
        // consumer's (see `relay_core::wake`).
        if let Some(waiters) = self.channel().waiters(cpu) {
            waiters.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether this file was opened for snapshot reading
    /// ([`Self::open_snapshot`]).
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    /// Opens the channel in `path` as a producer: validates every header
    /// field, maps it all writable (to write or flush), takes the producer
    /// lock and repairs what a dead producer left ([`Self::repaired`]). A
    /// kernel channel file is mapped as for reading (the module writes and
    /// flushes: see [`Self::flush_cpu`]).
    pub fn open_producer(path: &Path) -> Result<Self, Error> {
        Self::map(path, true)
    }

    /// Validates every header field, then maps the file read-only except
    /// the consumer region, or (`producer`) all of it writable.
    fn map(path: &Path, producer: bool) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path, "open"))?;
        let kernel = is_char_device(&file, path)?;
        let size = region_size(&file, path, kernel)?;
        let (geometry, flags) = validate(&file, path, size)?;
        let producer = producer && !kernel;
        let len = geometry.total_size() as usize;
        let access = if producer {
            Access::ReadWrite
        } else {
            let system = page_size();
            if !(geometry.page_size() as usize).is_multiple_of(system) {
                return Err(Error::PageSize {
                    path: path.to_path_buf(),
                    channel: geometry.page_size(),
                    system,
                });
            }
            let consumer_len = geometry.data_offset() - geometry.consumer_offset();
            Access::ReadOnlyExcept {
                offset: geometry.consumer_offset() as usize,
                len: consumer_len as usize,
            }
        };
        let mut mapping = Mapping::new(&file, len, access).map_err(io(path, "map"))?;
        mapping.name(path);
        let mut file = ChannelFile {
            path: path.to_path_buf(),
            file,
            mapping,
            geometry,
            flags,
            kernel,
            writable: producer,
            snapshot: false,
            flusher: None,
            repaired: Vec::new(),
        };
        file.check_consumers()?;
        if producer {
            file.join_producers()?;
        }
        Ok(file)
    }

    /// A producer joins the channel's producers: if it is the only one (the
    /// exclusive producer lock is free: every other producer is dead), it
    /// first repairs what dead writers left unfinished; then it holds the
    /// shared producer lock for as long as the file is open.
    fn join_producers(&mut self) -> Result<(), Error> {
        let (start, len) = PRODUCER_LOCK;
        let alone =
            crate::sys::try_lock_range(&self.file, start, len).map_err(io(&self.path, "lock"))?;
        if alone {
            // No other producer holds the lock: no writer of this channel
            // is alive, and none starts until the lock is shared.
            for cpu in 0..self.geometry.cpu_count() {
                if let Some(w) = self.channel().writer(cpu) {
                    let r = w.repair_abandoned(&mut crate::sys::monotonic_ns);
                    if r != Repaired::default() {
                        self.repaired.push((cpu, r));
                    }
                }
            }
        }
        crate::sys::lock_range_shared(&self.file, start, len).map_err(io(&self.path, "lock"))
    }

    /// What opening as a producer repaired: per CPU, the sub-buffers dead
    /// writers had left unfinished, now sealed, and their records counted
    /// abandoned (docs/FORMAT.md, "Producers that die").
    pub fn repaired(&self) -> &[(u32, Repaired)] {
        &self.repaired
    }

    /// The geometry and flags of the channel in `path`, checked, without
    /// taking part in it (nothing is mapped writable). For a kernel channel
    /// file that is read with `read()`, to learn its mode.
    pub fn probe(path: &Path) -> Result<(Geometry, ChannelFlags), Error> {
        let file = File::open(path).map_err(io(path, "open"))?;
        let kernel = is_char_device(&file, path)?;
        let size = region_size(&file, path, kernel)?;
        validate(&file, path, size)
    }

    /// Whether this is a kernel module's channel file (a character device).
    pub fn is_kernel(&self) -> bool {
        self.kernel
    }

    /// Flushes `cpu` through the kernel module (RELAY_IOC_FLUSH): `(barrier,
    /// next)` as in [`relay_core::Flushed`]. `None` for plain files (their
    /// producers flush) or if the module refused (e.g. no such CPU).
    pub fn flush_cpu(&self, cpu: u32) -> Option<(u64, u64)> {
        if !self.kernel {
            return None;
        }
        let file = self.flusher.as_ref().unwrap_or(&self.file);
        crate::kernel::flush(file.as_fd(), cpu).ok()
    }

    /// The open file (a kernel channel file's `write()` is one record).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Every CPU's consumer position must be within what its writer sealed
    /// (readers only ever move it onto sealed sub-buffers, writers only past
    /// sealed ones).
    pub fn check_consumers(&self) -> Result<(), Error> {
        for cpu in 0..self.geometry.cpu_count() {
            let Some(s) = self.stats(cpu) else { continue };
            if s.consumed_subbufs > s.sealed_subbufs {
                return Err(Error::Consumer {
                    path: self.path.clone(),
                    cpu,
                    consumed: s.consumed_subbufs,
                    sealed: s.sealed_subbufs,
                });
            }
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The channel's geometry (validated when opened).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The channel's flags.
    pub fn flags(&self) -> ChannelFlags {
        self.flags
    }

    /// The channel over the mapping.
    pub fn channel(&self) -> Channel<'_> {
        // The mapping holds `total_size` bytes by construction.
        let channel = Channel::attach(self.words(), self.geometry, self.flags)
            .expect("mapping covers the channel");
        // Writers in userspace wake readers asleep on the channel (see
        // `relay_core::wake`); the kernel's sleep in poll().
        if self.writable && !self.kernel {
            channel.with_waker(crate::sys::futex_wake)
        } else {
            channel
        }
    }

    fn words(&self) -> &[AtomicU64] {
        self.mapping.words()
    }

    /// A writer for `cpu` that any thread or process may use concurrently
    /// (and that may flush any CPU). `None` unless the file was created or
    /// opened as producer (the rest is mapped read-only).
    pub fn writer(&self, cpu: u32) -> Option<Writer<'_>> {
        self.channel().writer(cpu).filter(|_| self.writable)
    }

    /// The fast writer for a buffer that only this thread writes (see
    /// [`relay_core::CpuLocal`]); `None` as for [`Self::writer`].
    pub fn local_writer(&self, cpu: u32) -> Option<Writer<'_, CpuLocal>> {
        self.channel().local_writer(cpu).filter(|_| self.writable)
    }

    /// `cpu`'s statistics.
    pub fn stats(&self, cpu: u32) -> Option<CpuStats> {
        self.channel().stats(cpu)
    }
}

impl AsFd for ChannelFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for ChannelFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
