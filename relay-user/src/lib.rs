//! relay-user: read a relay channel, every CPU of it, through one file.
//!
//! - [`ChannelFile`]: create a channel in a file (the userspace producer) or
//!   open one (a userspace channel or the kernel module's channel file),
//!   validated against docs/FORMAT.md: as a snapshot
//!   ([`ChannelFile::open_snapshot`]: `O_RDONLY`, mapped read-only, changes
//!   nothing) or as the consumer of some CPUs
//!   ([`ChannelFile::open_consumer`]: claimed with a lock that dies with the
//!   process, the consumer region the only writable part).
//! - [`Stream`]: all CPUs merged in timestamp order, zero-copy on
//!   no-overwrite channels, losses reported where they happened.
//! - [`RelayfsDir`]: an existing relay channel's per-CPU debugfs files
//!   (`trace0..N`) read as one source, each CPU's bytes tagged (raw mode).
//! - [`blktrace`]: those files decoded as blktrace records, merged and
//!   printed as Debian's `blkparse` prints them.
//! - [`FrameReader`]: the frames a channel file's `read()` returns (from a
//!   pipe or the file), decoded.
//! - [`json`]: JSON string literals, escaped alike by every JSON relay
//!   writes.
//! - [`kernel`]: the kernel module's ioctls (create, destroy, flush,
//!   statistics, load generator, benchmark).
//!
//! All `unsafe` code is in the private `sys` module and in [`truncation`]
//! (the SIGBUS handler), but for one call in [`stream`]: a stream that owns
//! its file (`Stream<'_, Arc<ChannelFile>>`) borrows that file's mapping
//! from itself. [`os`] is what programs may use of it.
//!
//! ```no_run
//! use relay_user::{ChannelFile, Stream, StreamOptions};
//! use relay_core::merge::Event;
//!
//! let file = ChannelFile::open_snapshot("trace.relay".as_ref())?;
//! let mut stream = Stream::new(&file, StreamOptions::default());
//! while let Some(event) = stream.next_event() {
//!     match event {
//!         Event::Record { cpu, record } => println!("{} cpu{cpu} {} bytes", record.ts, record.payload.len()),
//!         Event::Lost { cpu, lost, .. } => eprintln!("cpu{cpu} lost {} records", lost.total()),
//!         Event::Corrupt { cpu, error } => eprintln!("cpu{cpu}: {error}"),
//!     }
//! }
//! # Ok::<(), relay_user::Error>(())
//! ```

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod blktrace;
pub mod error;
pub mod export;
pub mod file;
pub mod frames;
pub mod json;
pub mod kernel;
pub mod producer;
pub mod relayfs;
pub mod snapshot;
pub mod stream;
mod sys;
pub mod truncation;

pub use error::Error;
pub use file::ChannelFile;
pub use frames::FrameReader;
pub use relay_core;
/// What a program reading or writing channels may want from the OS, safely
/// wrapped: the channels' clock, the machine's CPUs, pinning a thread, and
/// what a consumer that prints needs to commit exactly what its output took
/// (atomic pipe writes, termination signals turned into a flag).
pub mod os {
    pub use crate::sys::{
        catch_termination, die_on_sigpipe, end_by_signal, locale_exists, monotonic_anchor,
        monotonic_ns, pin_to_cpu, possible_cpus, stdout_is_pipe, write_stdout, PIPE_BUF,
    };
}

pub use relay_core::merge::{Event, Flow};
pub use relayfs::RelayfsDir;
pub use stream::{OwnedEvent, Stream, StreamOptions};
