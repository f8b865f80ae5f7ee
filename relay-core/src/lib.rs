//! relay-core: the part of relay that the kernel module and the userspace
//! reader share, compiled from this one source on both sides.
//!
//! A *channel* is one region of memory that holds every CPU's buffer: a
//! header, per-CPU producer state (written by writers only), per-CPU consumer
//! state (the only part readers write) and the sub-buffers. `docs/FORMAT.md`
//! describes the bytes; this crate implements them:
//!
//! - [`geometry`]: sizes, counts and where every region lies (checked math);
//! - [`format`]: the binary layout and the sub-buffer parser;
//! - [`writer`]: lockless, interrupt- and NMI-safe reserve/commit;
//! - [`reader`]: validation, in-place or copied delivery, consumption, stats;
//! - [`policy`]: no-overwrite vs. overwrite (flight recorder);
//! - [`merge`]: all CPUs as one stream in timestamp order, losses in place;
//! - [`frames`]: that stream as bytes, as a channel file's `read()` returns it;
//! - [`checked`]: self-checking test payloads and the stream verifier;
//! - [`mem`]: the only `unsafe` code, turning borrowed memory into words.
//!
//! Every shared word is an [`AtomicU64`]; under `cfg(loom)` those are loom's,
//! so the loom models check the exact code that ships.
//!
//! ```
//! use relay_core::{Channel, ChannelFlags, Clock, Geometry, GeometryParams, AtomicU64};
//!
//! let geo = Geometry::new(GeometryParams { subbuf_size: 4096, subbuf_count: 0, cpu_count: 2, page_size: 4096 })?;
//! let mem: Vec<AtomicU64> = (0..geo.total_size() / 8).map(|_| AtomicU64::new(0)).collect();
//! let channel = Channel::create(&mem, geo, ChannelFlags::empty(), Clock::Counter).unwrap();
//!
//! let mut now = 0u64;
//! let mut clock = || { now += 1; now };
//! let writer = channel.writer(1).unwrap();
//! writer.write(7, b"hello", &mut clock).unwrap();
//! let _ = writer.flush(&mut clock); // seal the partly filled sub-buffer
//!
//! let mut reader = channel.reader(1).unwrap();
//! let d = reader.peek().unwrap().unwrap();
//! let (seq, lost) = (d.seq, d.lost_before);
//! let payloads: Vec<&[u8]> = d.records().map(|r| r.payload).collect();
//! assert_eq!(payloads, [b"hello"]);
//! reader.finish(seq, &lost, 1);
//! reader.commit(); // publish: the next reader goes on from here
//! assert_eq!(channel.stats(1).unwrap().consumed_records, 1);
//! # Ok::<(), relay_core::GeometryError>(())
//! ```

#![no_std]
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
#[macro_use]
extern crate std;

pub mod channel;
#[cfg(not(loom))]
pub mod checked;
pub mod format;
#[cfg(not(loom))]
pub mod frames;
pub mod geometry;
pub mod mem;
#[cfg(not(loom))]
pub mod merge;
#[cfg(all(feature = "model", not(loom)))]
pub mod model;
pub mod policy;
pub mod reader;
mod sync;
pub mod wake;
pub mod writer;

pub use channel::{Channel, ChannelError};
pub use format::{Anchor, Clock, FormatError, Record, SubbufView};
pub use geometry::{Geometry, GeometryError, GeometryParams};
pub use policy::{ChannelFlags, Mode};
pub use reader::{CpuReader, CpuStats, Delivery, Lost, ReadError};
pub use sync::AtomicU64;
pub use writer::{
    Committed, CpuLocal, Detached, Flushed, Grant, Repaired, Shared, Sharing, WriteError, Writer,
};
