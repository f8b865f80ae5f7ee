//! Errors that name the file and the field at fault.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use relay_core::{ChannelError, GeometryError, ReadError};

use crate::kernel::KernelError;

/// Everything that can go wrong opening, creating or reading a channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on `path` failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("open", "map", ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `path` is not a valid channel (the field and rule are in `source`).
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ChannelError,
    },
    /// The requested geometry breaks a rule.
    Geometry(GeometryError),
    /// The channel's regions are not aligned to this system's pages, so the
    /// consumer region cannot be mapped writable on its own.
    PageSize {
        /// The file.
        path: PathBuf,
        /// The channel's `page_size`.
        channel: u32,
        /// The system's page size.
        system: usize,
    },
    /// A CPU's consumer position is past everything its writer sealed: the
    /// consumer state was overwritten by something that is not a reader.
    Consumer {
        /// The file.
        path: PathBuf,
        /// The CPU.
        cpu: u32,
        /// The consumer position found.
        consumed: u64,
        /// Sub-buffers the writer sealed.
        sealed: u64,
    },
    /// Corrupt sub-buffers were skipped (their records are lost).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// How many sub-buffers.
        subbufs: u64,
    },
    /// A frame stream (what a channel file's `read()` returns) is bad at
    /// byte `offset`: `what` names the field.
    Frame {
        /// The file (`<stdin>` for standard input).
        path: PathBuf,
        /// Stream offset of the frame.
        offset: u64,
        /// What is wrong, field first.
        what: String,
    },
    /// A call into the kernel module failed.
    Kernel(KernelError),
    /// A block device's trace could not be set up or driven.
    Blktrace(crate::blktrace::SessionError),
    /// Records of an existing relay channel that could not be decoded or
    /// read (each was reported where it was found).
    Decode {
        /// The directory.
        path: PathBuf,
        /// Malformed records.
        malformed: u64,
        /// Files that could not be read to the end.
        unreadable: u64,
    },
    /// Another consumer holds `cpu` of the channel (one consumer per CPU
    /// buffer at a time; snapshot readers need no claim).
    Busy {
        /// The file.
        path: PathBuf,
        /// The CPU, where known (a kernel channel's `read()` says only
        /// EBUSY).
        cpu: Option<u32>,
        /// The holder's process id, where the channel says and that process
        /// still exists.
        holder: Option<u32>,
    },
    /// A CPU's data could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The CPU.
        cpu: u32,
        /// What was wrong.
        source: ReadError,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => write!(f, "{}: {op}: {source}", path.display()),
            Error::Format { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Geometry(e) => write!(f, "{e}"),
            Error::PageSize { path, channel, system } => write!(
                f,
                "{}: page_size: the channel's regions are aligned to {channel} bytes, but this system maps {system}-byte pages",
                path.display()
            ),
            Error::Consumer { path, cpu, consumed, sealed } => write!(
                f,
                "{}: cpu {cpu}: consumed: {consumed} is past the {sealed} sub-buffers the writer sealed",
                path.display()
            ),
            Error::Corrupt { path, subbufs } => {
                write!(f, "{}: {subbufs} corrupt sub-buffers skipped", path.display())
            }
            Error::Frame { path, offset, what } => {
                write!(f, "{}: frame at byte {offset}: {what}", path.display())
            }
            Error::Kernel(e) => write!(f, "{e}"),
            Error::Blktrace(e) => write!(f, "{e}"),
            Error::Decode { path, malformed, unreadable } => write!(
                f,
                "{}: {malformed} malformed records, {unreadable} unreadable files (reported above)",
                path.display()
            ),
            Error::Read { path, cpu, source } => write!(f, "{}: cpu {cpu}: {source}", path.display()),
            Error::Busy { path, cpu, holder } => {
                write!(f, "{}: ", path.display())?;
                if let Some(cpu) = cpu {
                    write!(f, "cpu {cpu}: ")?;
                }
                f.write_str("another consumer is reading it")?;
                if let Some(pid) = holder {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str("; one consumer per CPU at a time (a snapshot, `relay cat` without --consume, needs no claim)")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Kernel(e) => Some(e),
            Error::Blktrace(e) => Some(e),
            _ => None,
        }
    }
}

/// Wraps an OS error from `op` on `path` (for `map_err`).
pub(crate) fn io<'p>(path: &'p Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Error::Kernel(e)
    }
}

impl From<crate::blktrace::SessionError> for Error {
    fn from(e: crate::blktrace::SessionError) -> Self {
        Error::Blktrace(e)
    }
}
