//! Setting a block device's trace up and tearing it down, as `blktrace`
//! does: the block layer's ioctls on the device (`BLKTRACESETUP`,
//! `BLKTRACESTART`, `BLKTRACESTOP`, `BLKTRACETEARDOWN`). Setup makes the
//! kernel open a relay channel, `<debugfs>/block/<name>/trace0..N` (one
//! file per CPU, read() consumes) beside `dropped` (records lost to full
//! buffers); the [`Decoder`](super::Decoder) reads those files.
//!
//! A trace outlives the process that set it up: if it dies without a
//! teardown, the device stays traced and the next setup gets `EBUSY`.
//! [`Session::setup`] then tears the stale trace down and sets up anew,
//! but only when no process holds its trace files open (that would be a
//! live `blktrace`) and the trace has files (one set up through
//! `/sys/block/<dev>/trace/enable`, the ftrace blk tracer, has none and is
//! someone's configuration). A [`Session`] dropped without
//! [`Session::teardown`] stops and tears its trace down.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sys::{ioctl, ioctl_none, Ioctl};

/// blktrace's default sub-buffer size (`-b 512`, in KiB).
pub const DEFAULT_BUFFER_SIZE: u32 = 512 * 1024;
/// blktrace's default sub-buffer count per CPU (`-n 4`).
pub const DEFAULT_BUFFERS: u32 = 4;

/// `struct blk_user_trace_setup`, with its padding spelled out.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlkUserTraceSetup {
    name: [u8; 32],
    act_mask: u16,
    _pad0: [u8; 2],
    buf_size: u32,
    buf_nr: u32,
    _pad1: [u8; 4],
    start_lba: u64,
    end_lba: u64,
    pid: u32,
    _pad2: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<BlkUserTraceSetup>() == 72);

const BLKTRACESETUP: Ioctl<BlkUserTraceSetup> = Ioctl::read_write(0x12, 115);
const BLKTRACESTART: Ioctl<()> = Ioctl::none(0x12, 116);
const BLKTRACESTOP: Ioctl<()> = Ioctl::none(0x12, 117);
const BLKTRACETEARDOWN: Ioctl<()> = Ioctl::none(0x12, 118);

/// How to set a trace up (blktrace's `-b`, `-n`, `-a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupOptions {
    /// Bytes per sub-buffer.
    pub buffer_size: u32,
    /// Sub-buffers per CPU.
    pub buffers: u32,
    /// The categories traced (`BLK_TC_*` bits; all by default).
    pub act_mask: u16,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            buffer_size: DEFAULT_BUFFER_SIZE,
            buffers: DEFAULT_BUFFERS,
            act_mask: u16::MAX,
        }
    }
}

/// Why a trace could not be set up or driven.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// An operation on the device or its trace failed.
    Io {
        /// The device.
        device: PathBuf,
        /// What was being done (`open`, `BLKTRACESETUP`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Another process reads the device's trace now.
    Busy {
        /// The device.
        device: PathBuf,
        /// A process holding its trace files.
        pid: u32,
    },
    /// The device is traced through sysfs (the ftrace blk tracer), which
    /// is left alone.
    TracedBySysfs {
        /// The device.
        device: PathBuf,
    },
    /// The trace's files are not where debugfs would put them.
    NoDebugfs {
        /// The device.
        device: PathBuf,
        /// Where they were looked for.
        dir: PathBuf,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io { device, op, source } => {
                write!(f, "{}: {op}: {source}", device.display())?;
                match source.raw_os_error() {
                    Some(libc::ENOTTY) => write!(f, " (not a block device)"),
                    Some(libc::EINVAL) if *op == "BLKTRACESETUP" => {
                        write!(f, " (--buffer-size and --buffers must be above 0)")
                    }
                    _ => Ok(()),
                }
            }
            SessionError::Busy { device, pid } => write!(
                f,
                "{}: another trace of it is running (process {pid} reads its trace files)",
                device.display()
            ),
            SessionError::TracedBySysfs { device } => write!(
                f,
                "{}: traced through sysfs (the ftrace blk tracer: /sys/block/<dev>/trace/enable); \
                 relay leaves that alone: write 0 there to end it",
                device.display()
            ),
            SessionError::NoDebugfs { device, dir } => write!(
                f,
                "{}: the trace was set up, but {} does not exist: is debugfs mounted? \
                 (mount -t debugfs none /sys/kernel/debug)",
                device.display(),
                dir.display()
            ),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One device's trace, set up; torn down on drop.
#[derive(Debug)]
pub struct Session {
    device: PathBuf,
    file: File,
    name: String,
    dir: PathBuf,
    running: bool,
    torn_down: bool,
    stale: bool,
}

impl Session {
    /// Sets up a trace of `device` (`/dev/sda`), its files under
    /// `debugfs` (`/sys/kernel/debug`). Not started yet.
    pub fn setup(
        device: &Path,
        debugfs: &Path,
        options: &SetupOptions,
    ) -> Result<Session, SessionError> {
        let err = |op, source| SessionError::Io {
            device: device.to_path_buf(),
            op,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(device)
            .map_err(|e| err("open", e))?;
        let mut setup = BlkUserTraceSetup {
            name: [0; 32],
            act_mask: options.act_mask,
            _pad0: [0; 2],
            buf_size: options.buffer_size,
            buf_nr: options.buffers,
            _pad1: [0; 4],
            start_lba: 0,
            end_lba: 0,
            pid: 0,
            _pad2: [0; 4],
        };
        let mut stale = false;
        let mut request = setup;
        if let Err(e) = ioctl(file.as_fd(), BLKTRACESETUP, &mut request) {
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(err("BLKTRACESETUP", e));
            }
            // Someone's trace: a dead one is torn down, a live one is not.
            let dir = debugfs.join("block").join(kernel_name(device));
            if !dir.join("trace0").exists() {
                return Err(SessionError::TracedBySysfs {
                    device: device.to_path_buf(),
                });
            }
            if let Some(pid) = holder_of(&dir) {
                return Err(SessionError::Busy {
                    device: device.to_path_buf(),
                    pid,
                });
            }
            let _ = ioctl_none(file.as_fd(), BLKTRACESTOP);
            ioctl_none(file.as_fd(), BLKTRACETEARDOWN).map_err(|e| err("BLKTRACETEARDOWN", e))?;
            stale = true;
            request = setup;
            ioctl(file.as_fd(), BLKTRACESETUP, &mut request)
                .map_err(|e| err("BLKTRACESETUP", e))?;
        }
        setup = request;
        let len = setup.name.iter().position(|&b| b == 0).unwrap_or(32);
        let name = String::from_utf8_lossy(&setup.name[..len]).into_owned();
        let dir = debugfs.join("block").join(&name);
        let session = Session {
            device: device.to_path_buf(),
            file,
            name,
            dir,
            running: false,
            torn_down: false,
            stale,
        };
        if !session.dir.join("trace0").exists() {
            return Err(SessionError::NoDebugfs {
                device: device.to_path_buf(),
                dir: session.dir.clone(),
            });
        }
        Ok(session)
    }

    /// The kernel's name for the device (`sda`), which names its debugfs
    /// directory and blkparse's input.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's trace directory (`<debugfs>/block/<name>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether setting up tore down a stale trace first.
    pub fn tore_down_stale(&self) -> bool {
        self.stale
    }

    /// Starts tracing.
    pub fn start(&mut self) -> Result<(), SessionError> {
        self.ioctl("BLKTRACESTART", BLKTRACESTART)?;
        self.running = true;
        Ok(())
    }

    /// Stops tracing; the kernel flushes its buffers, so that the trace
    /// files then hold every record written.
    pub fn stop(&mut self) -> Result<(), SessionError> {
        if self.running {
            self.running = false;
            self.ioctl("BLKTRACESTOP", BLKTRACESTOP)?;
        }
        Ok(())
    }

    /// Records the kernel dropped because a CPU's buffers were full.
    pub fn dropped(&self) -> Result<u64, SessionError> {
        let path = self.dir.join("dropped");
        let err = |source| SessionError::Io {
            device: self.device.clone(),
            op: "read dropped",
            source,
        };
        let text = std::fs::read_to_string(&path).map_err(err)?;
        text.trim().parse().map_err(|_| {
            err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a count: {:?}", path.display(), text.trim()),
            ))
        })
    }

    /// Stops the trace (if running) and tears it down: the trace files go.
    pub fn teardown(mut self) -> Result<(), SessionError> {
        self.stop()?;
        self.torn_down = true;
        self.ioctl("BLKTRACETEARDOWN", BLKTRACETEARDOWN)
    }

    fn ioctl(&self, op: &'static str, request: Ioctl<()>) -> Result<(), SessionError> {
        ioctl_none(self.file.as_fd(), request).map_err(|source| SessionError::Io {
            device: self.device.clone(),
            op,
            source,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.torn_down {
            let _ = self.stop();
            let _ = ioctl_none(self.file.as_fd(), BLKTRACETEARDOWN);
        }
    }
}

/// The name the kernel gives `device` (`%pg`, with `/` as `_`): the name
/// of the node a path resolves to (`/dev/mapper/x` is `dm-0`).
fn kernel_name(device: &Path) -> String {
    let real = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    let name = real
        .strip_prefix("/dev")
        .unwrap_or_else(|_| real.file_name().map_or(&real, Path::new));
    name.to_string_lossy().replace('/', "_")
}

/// A process (other than this one) with one of `dir`'s trace files open.
fn holder_of(dir: &Path) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.starts_with(dir)
                    && target
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("trace"))
                {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_blktraces() {
        // linux/fs.h, as the C compiler encodes them on x86-64 and arm64.
        assert_eq!(BLKTRACESETUP.number(), 0xc048_1273);
        assert_eq!(BLKTRACESTART.number(), 0x1274);
        assert_eq!(BLKTRACESTOP.number(), 0x1275);
        assert_eq!(BLKTRACETEARDOWN.number(), 0x1276);
    }

    #[test]
    fn a_file_that_is_not_a_block_device_is_named() {
        let e = Session::setup(
            Path::new("/dev/null"),
            Path::new("/sys/kernel/debug"),
            &SetupOptions::default(),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("/dev/null: BLKTRACESETUP: "), "{text}");
        assert!(text.contains("not a block device"), "{text}");
    }
}
