//! The binary format: byte offsets, word encodings and the parser for sealed
//! sub-buffers. `docs/FORMAT.md` is the prose version of this module; every
//! offset written there is pinned here by a static assertion.
//!
//! All integers are little-endian. A channel is a sequence of 64-bit words;
//! fields narrower than a word share a word with their neighbours, low bytes
//! first, and are only ever written by one party (see the "writer" columns in
//! FORMAT.md), so a whole-word store never clobbers someone else's field.

use core::mem::offset_of;
use static_assertions::const_assert_eq;

use crate::geometry::Geometry;

#[cfg(target_endian = "big")]
compile_error!("relay's format is little-endian and relay-core only supports little-endian hosts");

/// `b"RELAYCHN"` read as a little-endian u64: the first word of every channel.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RELAYCHN");
/// Incompatible format changes bump the major version; readers refuse others.
pub const VERSION_MAJOR: u16 = 1;
/// Compatible additions bump the minor version; readers accept any.
pub const VERSION_MINOR: u16 = 3;

/// Bytes of the channel header at offset 0 (the rest of its page is zero).
pub const CHANNEL_HEADER_SIZE: usize = 128;
/// Bytes of the header at the start of every sub-buffer.
pub const SUBBUF_HEADER_SIZE: usize = 72;
/// Bytes of the header in front of every record's payload.
pub const RECORD_HEADER_SIZE: usize = 16;
/// Records start at multiples of this within a sub-buffer.
pub const RECORD_ALIGN: usize = 8;
/// Words of per-CPU producer state before the commit and seal arrays.
pub const PRODUCER_FIXED_WORDS: usize = 16;
/// Bytes of per-CPU consumer state (two cache lines: no false sharing
/// between CPUs' readers, even with adjacent-line prefetch).
pub const CONSUMER_STRIDE: usize = 128;

/// The channel header: the first [`CHANNEL_HEADER_SIZE`] bytes of a channel.
/// Written once by whoever creates the channel, read-only afterwards.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "zerocopy",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct ChannelHeader {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION_MAJOR`].
    pub version_major: u16,
    /// [`VERSION_MINOR`].
    pub version_minor: u16,
    /// [`CHANNEL_HEADER_SIZE`].
    pub header_size: u32,
    /// [`crate::ChannelFlags`] bits.
    pub flags: u64,
    /// Bytes per sub-buffer (a power of two).
    pub subbuf_size: u32,
    /// Sub-buffers per CPU.
    pub subbuf_count: u32,
    /// Number of per-CPU buffers.
    pub cpu_count: u32,
    /// Alignment of every region.
    pub page_size: u32,
    /// Byte offset of CPU 0's producer state.
    pub producer_offset: u64,
    /// Bytes between consecutive CPUs' producer states.
    pub producer_stride: u64,
    /// Byte offset of CPU 0's consumer state.
    pub consumer_offset: u64,
    /// Bytes between consecutive CPUs' consumer states.
    pub consumer_stride: u64,
    /// Byte offset of CPU 0's sub-buffers.
    pub data_offset: u64,
    /// Bytes between consecutive CPUs' sub-buffers.
    pub data_stride: u64,
    /// Bytes of the whole channel.
    pub total_size: u64,
    /// [`SUBBUF_HEADER_SIZE`].
    pub subbuf_header_size: u32,
    /// [`RECORD_HEADER_SIZE`].
    pub record_header_size: u32,
    /// The clock of every timestamp: a [`Clock`] value.
    pub clock: u32,
    /// Zero.
    pub reserved0: u32,
    /// `CLOCK_REALTIME` nanoseconds at the instant `clock_anchor` was read
    /// (format 1.2; 0: no anchor).
    pub realtime_anchor: u64,
    /// The channel's clock at that instant: a timestamp `ts` happened at
    /// wall time `realtime_anchor + (ts - clock_anchor)` (nanosecond clocks).
    pub clock_anchor: u64,
}

/// Where a channel's clock stood in wall time: read back to back when the
/// channel was created, so that its timestamps can be printed as dates and
/// lined up with another machine's or another boot's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// `CLOCK_REALTIME` nanoseconds since the Unix epoch.
    pub realtime_ns: u64,
    /// The channel's clock at the same instant.
    pub clock: u64,
}

impl Anchor {
    /// Wall time (ns since the epoch, UTC) of timestamp `ts` of a
    /// nanosecond clock; None if it falls outside what a u64 holds.
    pub fn wall_ns(&self, ts: u64) -> Option<u64> {
        if ts >= self.clock {
            self.realtime_ns.checked_add(ts - self.clock)
        } else {
            self.realtime_ns.checked_sub(self.clock - ts)
        }
    }
}

const_assert_eq!(core::mem::size_of::<ChannelHeader>(), CHANNEL_HEADER_SIZE);
const_assert_eq!(offset_of!(ChannelHeader, magic), 0);
const_assert_eq!(offset_of!(ChannelHeader, version_major), 8);
const_assert_eq!(offset_of!(ChannelHeader, version_minor), 10);
const_assert_eq!(offset_of!(ChannelHeader, header_size), 12);
const_assert_eq!(offset_of!(ChannelHeader, flags), 16);
const_assert_eq!(offset_of!(ChannelHeader, subbuf_size), 24);
const_assert_eq!(offset_of!(ChannelHeader, subbuf_count), 28);
const_assert_eq!(offset_of!(ChannelHeader, cpu_count), 32);
const_assert_eq!(offset_of!(ChannelHeader, page_size), 36);
const_assert_eq!(offset_of!(ChannelHeader, producer_offset), 40);
const_assert_eq!(offset_of!(ChannelHeader, producer_stride), 48);
const_assert_eq!(offset_of!(ChannelHeader, consumer_offset), 56);
const_assert_eq!(offset_of!(ChannelHeader, consumer_stride), 64);
const_assert_eq!(offset_of!(ChannelHeader, data_offset), 72);
const_assert_eq!(offset_of!(ChannelHeader, data_stride), 80);
const_assert_eq!(offset_of!(ChannelHeader, total_size), 88);
const_assert_eq!(offset_of!(ChannelHeader, subbuf_header_size), 96);
const_assert_eq!(offset_of!(ChannelHeader, record_header_size), 100);
const_assert_eq!(offset_of!(ChannelHeader, clock), 104);
const_assert_eq!(offset_of!(ChannelHeader, reserved0), 108);
const_assert_eq!(offset_of!(ChannelHeader, realtime_anchor), 112);
const_assert_eq!(offset_of!(ChannelHeader, clock_anchor), 120);

/// Words of the channel header.
pub const CHANNEL_HEADER_WORDS: usize = CHANNEL_HEADER_SIZE / 8;

const fn lo(word: u64) -> u32 {
    word as u32
}
const fn hi(word: u64) -> u32 {
    (word >> 32) as u32
}
const fn pair(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

impl ChannelHeader {
    /// The header of a new channel with geometry `geo`.
    pub fn new(geo: &Geometry, flags: u64, clock: Clock) -> Self {
        ChannelHeader {
            magic: MAGIC,
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            header_size: CHANNEL_HEADER_SIZE as u32,
            flags,
            subbuf_size: geo.subbuf_size(),
            subbuf_count: geo.subbuf_count(),
            cpu_count: geo.cpu_count(),
            page_size: geo.page_size(),
            producer_offset: geo.producer_offset(),
            producer_stride: geo.producer_stride(),
            consumer_offset: geo.consumer_offset(),
            consumer_stride: geo.consumer_stride(),
            data_offset: geo.data_offset(),
            data_stride: geo.data_stride(),
            total_size: geo.total_size(),
            subbuf_header_size: SUBBUF_HEADER_SIZE as u32,
            record_header_size: RECORD_HEADER_SIZE as u32,
            clock: clock as u32,
            reserved0: 0,
            realtime_anchor: 0,
            clock_anchor: 0,
        }
    }

    /// The header as the little-endian words it occupies.
    pub fn to_words(&self) -> [u64; CHANNEL_HEADER_WORDS] {
        let version = u32::from(self.version_major) | u32::from(self.version_minor) << 16;
        [
            self.magic,
            pair(version, self.header_size),
            self.flags,
            pair(self.subbuf_size, self.subbuf_count),
            pair(self.cpu_count, self.page_size),
            self.producer_offset,
            self.producer_stride,
            self.consumer_offset,
            self.consumer_stride,
            self.data_offset,
            self.data_stride,
            self.total_size,
            pair(self.subbuf_header_size, self.record_header_size),
            pair(self.clock, self.reserved0),
            self.realtime_anchor,
            self.clock_anchor,
        ]
    }

    /// The header held by `words` (no validation: see `Channel::open`).
    pub fn from_words(w: &[u64; CHANNEL_HEADER_WORDS]) -> Self {
        ChannelHeader {
            magic: w[0],
            version_major: lo(w[1]) as u16,
            version_minor: (lo(w[1]) >> 16) as u16,
            header_size: hi(w[1]),
            flags: w[2],
            subbuf_size: lo(w[3]),
            subbuf_count: hi(w[3]),
            cpu_count: lo(w[4]),
            page_size: hi(w[4]),
            producer_offset: w[5],
            producer_stride: w[6],
            consumer_offset: w[7],
            consumer_stride: w[8],
            data_offset: w[9],
            data_stride: w[10],
            total_size: w[11],
            subbuf_header_size: lo(w[12]),
            record_header_size: hi(w[12]),
            clock: lo(w[13]),
            reserved0: hi(w[13]),
            realtime_anchor: w[14],
            clock_anchor: w[15],
        }
    }

    /// The header at the start of `bytes`, or `None` if `bytes` is shorter
    /// than [`CHANNEL_HEADER_SIZE`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut words = [0u64; CHANNEL_HEADER_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = read_u64(bytes, i * 8)?;
        }
        Some(Self::from_words(&words))
    }
}

/// What clock the timestamps come from (informational: readers merge by
/// value, and count a record that arrives later than its order allows as
/// late). A channel's clock decides how far its CPUs' times agree:
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum Clock {
    /// Not stated.
    Unspecified = 0,
    /// `CLOCK_MONOTONIC` nanoseconds (`ktime_get_mono_fast_ns` in the
    /// kernel): one clock for all CPUs and for userspace producers; it may
    /// step back only for a record stamped in an NMI that interrupted a
    /// timekeeping update.
    Monotonic = 1,
    /// A test counter, not time.
    Counter = 2,
    /// The kernel's `local_clock()` nanoseconds (ftrace's and perf's
    /// default): monotonic on each CPU; between CPUs it agrees only within a
    /// bounded drift unless the kernel found the TSC stable.
    Local = 3,
    /// Raw x86 TSC cycles (`rdtsc`): the cheapest stamp; CPUs agree where
    /// the kernel marked the TSC reliable (`constant_tsc`, `nonstop_tsc`),
    /// and readers that want time must know the TSC frequency.
    Tsc = 4,
}

impl Clock {
    /// The clock a header's `clock` field names, if it is one of these.
    pub const fn from_u32(v: u32) -> Option<Clock> {
        Some(match v {
            0 => Clock::Unspecified,
            1 => Clock::Monotonic,
            2 => Clock::Counter,
            3 => Clock::Local,
            4 => Clock::Tsc,
            _ => return None,
        })
    }

    /// Whether timestamps are nanoseconds (of a clock an [`Anchor`] can
    /// turn into wall time).
    pub const fn is_ns(self) -> bool {
        matches!(self, Clock::Monotonic | Clock::Local)
    }

    /// A short name: `monotonic`, `local`, `tsc`, `counter`, `unspecified`.
    pub const fn name(self) -> &'static str {
        match self {
            Clock::Unspecified => "unspecified",
            Clock::Monotonic => "monotonic",
            Clock::Counter => "counter",
            Clock::Local => "local",
            Clock::Tsc => "tsc",
        }
    }
}

/// Word indices of the per-CPU producer state. Only writers store to it;
/// readers (and, in the kernel, userspace) only load.
pub mod producer {
    /// The reserve position (see [`super::Head`]). Writer-hot cache line.
    pub const HEAD: usize = 0;
    /// Records dropped because no sub-buffer was free (cumulative).
    pub const LOST_FULL: usize = 8;
    /// Records dropped because they exceed the largest payload (cumulative).
    pub const LOST_TOO_BIG: usize = 9;
    /// Records whose writer died before committing them, or that a repair
    /// could not reach after such a record (cumulative; format 1.1).
    pub const LOST_ABANDONED: usize = 13;
    /// Records in sub-buffers reclaimed before a reader consumed them.
    pub const LOST_OVERWRITE: usize = 10;
    /// Records in sealed sub-buffers (cumulative): what readers can get.
    pub const PRODUCED: usize = 11;
    /// Sub-buffers sealed (cumulative).
    pub const SEALED_SUBBUFS: usize = 12;
    /// CPU 0's only, for the whole channel: bumped by a writer of any CPU
    /// that sealed a sub-buffer a reader waits for; readers of a channel
    /// in a file sleep on its low 32 bits (a futex). See [`crate::wake`]
    /// (format 1.3; 0 and unused in other CPUs' state and in kernel
    /// channels).
    pub const WAKEUPS: usize = 15;
    /// First word of the commit array: one [`super::Commit`] word per slot.
    pub const COMMITS: usize = super::PRODUCER_FIXED_WORDS;
}

/// Word indices of the per-CPU consumer state: the only words a reader
/// stores to. Writers treat every value in it as hostile.
pub mod consumer {
    /// Sequence number of the next sub-buffer to read.
    pub const CONSUMED: usize = 0;
    /// Sequence number the cursor offset refers to.
    pub const CURSOR_SEQ: usize = 1;
    /// Bytes of sub-buffer `CURSOR_SEQ` already delivered by a reader that
    /// stopped mid-sub-buffer (so a restarted reader neither loses nor repeats).
    pub const CURSOR_OFF: usize = 2;
    /// Records delivered by readers (maintained by readers: statistics only).
    pub const CONSUMED_RECORDS: usize = 3;
    /// The process id of the consumer holding the claim, stored by it after
    /// it claimed (informational and untrusted: the claim itself is a lock
    /// outside the channel; 0 when unknown).
    pub const CLAIM_PID: usize = 7;
    /// Overwrite mode: records of the sub-buffers consumers claimed, stored
    /// by the consumer right after each claim, so that a successor knows
    /// how many records a consumer that died before it committed had in
    /// hand (format 1.1; 0 in older files).
    pub const CLAIMED_RECORDS: usize = 8;
    /// Overwrite mode: records of claimed sub-buffers that writers reused
    /// before a consumer delivered them, counted lost by the consumer that
    /// found them (part of `reported_overwrite`; format 1.1).
    pub const LOST_CLAIMED: usize = 9;
    /// Abandoned records already reported (format 1.1).
    pub const REPORTED_ABANDONED: usize = 10;
    /// Readers of this CPU asleep (or about to sleep) until a sub-buffer is
    /// sealed: nonzero asks its writers to wake them. See [`crate::wake`]
    /// (format 1.3).
    pub const WAITERS: usize = 11;
}

/// The sub-buffer header: the first [`SUBBUF_HEADER_SIZE`] bytes of every
/// sub-buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "zerocopy",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct SubbufHeader {
    /// Sequence number: the n-th sub-buffer this CPU opened, from 0.
    pub seq: u64,
    /// The CPU whose buffer this is.
    pub cpu: u32,
    /// Zero (reserved for the opener).
    pub flags: u32,
    /// Timestamp of the first record.
    pub ts_begin: u64,
    /// Cumulative records lost because full, when this sub-buffer was opened.
    pub lost_full: u64,
    /// Cumulative records lost because too big, when this sub-buffer was opened.
    pub lost_too_big: u64,
    /// Cumulative records lost to overwrite, when this sub-buffer was opened.
    pub lost_overwrite: u64,
    /// Timestamp taken when the sub-buffer was closed: no record in it is later.
    pub ts_end: u64,
    /// Bytes from the start of the sub-buffer to the end of the last record;
    /// the rest is padding.
    pub content_size: u32,
    /// [`close_flags`] bits.
    pub close_flags: u32,
    /// Records committed in this sub-buffer (discarded reservations excluded).
    pub records: u32,
    /// Records of this sub-buffer lost because their writer died (set by
    /// a repair, with [`close_flags::ABANDONED`]; 0 otherwise).
    pub abandoned: u32,
}

const_assert_eq!(core::mem::size_of::<SubbufHeader>(), SUBBUF_HEADER_SIZE);
const_assert_eq!(offset_of!(SubbufHeader, seq), subbuf::SEQ * 8);
const_assert_eq!(offset_of!(SubbufHeader, cpu), subbuf::CPU_FLAGS * 8);
const_assert_eq!(offset_of!(SubbufHeader, flags), subbuf::CPU_FLAGS * 8 + 4);
const_assert_eq!(offset_of!(SubbufHeader, ts_begin), subbuf::TS_BEGIN * 8);
const_assert_eq!(offset_of!(SubbufHeader, lost_full), subbuf::LOST_FULL * 8);
const_assert_eq!(
    offset_of!(SubbufHeader, lost_too_big),
    subbuf::LOST_TOO_BIG * 8
);
const_assert_eq!(
    offset_of!(SubbufHeader, lost_overwrite),
    subbuf::LOST_OVERWRITE * 8
);
const_assert_eq!(offset_of!(SubbufHeader, ts_end), subbuf::TS_END * 8);
const_assert_eq!(offset_of!(SubbufHeader, content_size), subbuf::CONTENT * 8);
const_assert_eq!(
    offset_of!(SubbufHeader, close_flags),
    subbuf::CONTENT * 8 + 4
);
const_assert_eq!(offset_of!(SubbufHeader, records), subbuf::RECORDS * 8);
const_assert_eq!(offset_of!(SubbufHeader, abandoned), subbuf::RECORDS * 8 + 4);

/// Word indices of the sub-buffer header, grouped by who writes them.
pub mod subbuf {
    /// Opener: sequence number.
    pub const SEQ: usize = 0;
    /// Opener: CPU (low half) and flags (high half).
    pub const CPU_FLAGS: usize = 1;
    /// Opener: first record's timestamp.
    pub const TS_BEGIN: usize = 2;
    /// Opener: cumulative lost-because-full.
    pub const LOST_FULL: usize = 3;
    /// Opener: cumulative lost-because-too-big.
    pub const LOST_TOO_BIG: usize = 4;
    /// Opener: cumulative lost-to-overwrite.
    pub const LOST_OVERWRITE: usize = 5;
    /// Closer: closing timestamp.
    pub const TS_END: usize = 6;
    /// Closer: content size (low half) and close flags (high half).
    pub const CONTENT: usize = 7;
    /// Sealer: record count (low half); a repair: records abandoned (high
    /// half, format 1.1).
    pub const RECORDS: usize = 8;
}

/// Bits of [`SubbufHeader::close_flags`].
pub mod close_flags {
    /// Closed by a flush rather than by a record that did not fit.
    pub const FLUSHED: u32 = 1;
    /// Closed and sealed by a repair after its writer died (format 1.1).
    pub const ABANDONED: u32 = 2;
}

/// The record header, [`RECORD_HEADER_SIZE`] bytes in front of each payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "zerocopy",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct RecordHeader {
    /// Header plus payload bytes, unpadded. The next record starts at the
    /// next multiple of [`RECORD_ALIGN`].
    pub len: u32,
    /// Record type, chosen by the producer.
    pub rtype: u16,
    /// [`record_flags`] bits.
    pub flags: u16,
    /// Timestamp, taken when the record was reserved.
    pub ts: u64,
}

const_assert_eq!(core::mem::size_of::<RecordHeader>(), RECORD_HEADER_SIZE);
const_assert_eq!(offset_of!(RecordHeader, len), 0);
const_assert_eq!(offset_of!(RecordHeader, rtype), 4);
const_assert_eq!(offset_of!(RecordHeader, flags), 6);
const_assert_eq!(offset_of!(RecordHeader, ts), 8);

/// Bits of [`RecordHeader::flags`].
pub mod record_flags {
    /// The producer reserved this space and then discarded it: skip it.
    pub const DISCARDED: u16 = 1;
    /// Reserved and not committed yet: the writer stores `len` with this
    /// flag right after its reservation, and the final flags when it
    /// commits, so that a repair can tell a dead writer's reservation from
    /// committed records (see `Writer::repair_abandoned`). Never in a sealed
    /// sub-buffer.
    pub const RESERVED: u16 = 2;
}

impl RecordHeader {
    /// The first word of a record (len, type, flags).
    pub(crate) const fn word0(len: u32, rtype: u16, flags: u16) -> u64 {
        len as u64 | (rtype as u64) << 32 | (flags as u64) << 48
    }
}

/// Record bytes including header and alignment padding, or `None` if the
/// payload is larger than any geometry allows.
pub const fn record_total(payload_len: usize) -> Option<usize> {
    match payload_len.checked_add(RECORD_HEADER_SIZE + RECORD_ALIGN - 1) {
        Some(v) if v <= u32::MAX as usize => Some(v & !(RECORD_ALIGN - 1)),
        _ => None,
    }
}

/// The head word: where the next reservation goes.
///
/// - `Open { seq, off }`: sub-buffer `seq` is open and `off` bytes of it are
///   reserved, `1 <= off <= size`; stored as `seq * size + off` (bit 0 clear:
///   `off` is a multiple of 8).
/// - `Closed { next, epoch }`: every sub-buffer before `next` is closed and
///   `next` is not open yet; stored as `next * size | epoch << 1 | 1`. A flush
///   of a closed head bumps `epoch` so that a writer that read the clock
///   before the flush cannot complete its reservation with that old time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// A sub-buffer is open.
    Open {
        /// Its sequence number.
        seq: u64,
        /// Bytes reserved in it, header included.
        off: u64,
    },
    /// No sub-buffer is open.
    Closed {
        /// The next sub-buffer to open.
        next: u64,
        /// Flush epoch.
        epoch: u64,
    },
}

impl Head {
    /// The head of a new buffer.
    pub const INITIAL: u64 = 1;

    /// Decodes a head word for sub-buffers of `1 << shift` bytes. Any word
    /// decodes to something in range, so a corrupt head cannot make a writer
    /// go out of bounds.
    #[inline]
    pub fn decode(word: u64, shift: u32) -> Head {
        if word & 1 == 1 {
            let mask = (1u64 << shift) - 1;
            Head::Closed {
                next: word >> shift,
                epoch: (word & mask) >> 1,
            }
        } else {
            let seq = word.wrapping_sub(1) >> shift;
            Head::Open {
                seq,
                off: word.wrapping_sub(seq << shift),
            }
        }
    }

    /// Whether `word` is an open head with room for `total` more bytes in
    /// its sub-buffer (`size_mask = size - 1`; a mask of 0 admits nothing,
    /// since `total > 0`): the writer's fast path, with
    /// no decoding. For an open head `(word - 1) & size_mask` is `off - 1`
    /// (`1 <= off <= size`); `total < 2^63` and `size <= 2^30`: no wrap.
    #[inline(always)]
    pub const fn has_room(word: u64, size_mask: u64, total: u64) -> bool {
        word & 1 == 0 && (word.wrapping_sub(1) & size_mask).wrapping_add(total) <= size_mask
    }

    /// Encodes this head for sub-buffers of `1 << shift` bytes.
    #[inline]
    pub fn encode(self, shift: u32) -> u64 {
        match self {
            Head::Open { seq, off } => (seq << shift).wrapping_add(off),
            Head::Closed { next, epoch } => {
                let mask = (1u64 << shift) - 1;
                next << shift | (epoch << 1 & mask) | 1
            }
        }
    }
}

/// The per-slot commit word: bytes committed to the slot's current
/// sub-buffer (bits 0..32), records committed (bits 32..63) and the closed
/// bit (63). A sub-buffer is complete when it is closed and every byte of it
/// is committed; whoever's commit completes it seals it.
pub struct Commit;

impl Commit {
    /// Added per record (besides its bytes).
    pub const RECORD: u64 = 1 << 32;
    /// Added once, by the closer.
    pub const CLOSED: u64 = 1 << 63;
    /// Bytes committed.
    pub const fn bytes(word: u64) -> u64 {
        word & 0xffff_ffff
    }
    /// Records committed.
    pub const fn records(word: u64) -> u32 {
        ((word >> 32) & 0x7fff_ffff) as u32
    }
    /// Whether `word` says a sub-buffer of `size` bytes is complete.
    pub const fn is_complete(word: u64, size: u64) -> bool {
        word & Self::CLOSED != 0 && Self::bytes(word) == size
    }
}

/// The per-slot seal word: which sub-buffer occupies the slot and whether it
/// is sealed (complete, readable) or being opened. Holds 63 bits of sequence
/// number; head words hold at most `64 - 7`, so nothing is cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// The slot has never held a sub-buffer (word 0).
    Empty,
    /// Sub-buffer `seq` is complete: readers may read it (word `(seq+1) << 1`).
    Sealed(u64),
    /// Sub-buffer `seq` is open or being opened (word `(seq+1) << 1 | 1`).
    Opening(u64),
}

impl Seal {
    /// The word for this state.
    #[inline]
    pub const fn encode(self) -> u64 {
        match self {
            Seal::Empty => 0,
            Seal::Sealed(seq) => seq.wrapping_add(1) << 1,
            Seal::Opening(seq) => seq.wrapping_add(1) << 1 | 1,
        }
    }

    /// The state a word holds.
    #[inline]
    pub const fn decode(word: u64) -> Seal {
        if word == 0 {
            Seal::Empty
        } else if word & 1 == 0 {
            Seal::Sealed((word >> 1).wrapping_sub(1))
        } else {
            Seal::Opening((word >> 1).wrapping_sub(1))
        }
    }
}

/// Why bytes read from a channel were rejected: the field, where it is, the
/// value found and the rule it broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatError {
    /// Field name, as FORMAT.md spells it (`subbuf.content_size`, ...).
    pub field: &'static str,
    /// Byte offset of the field within the sub-buffer or channel.
    pub offset: u64,
    /// The value found.
    pub value: u64,
    /// The rule, as a phrase ("must equal the expected sequence number 7").
    pub rule: Rule,
}

/// A rule a field of the format must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Must equal this value.
    Equals(u64),
    /// Must be at least this.
    AtLeast(u64),
    /// Must be at most this.
    AtMost(u64),
    /// Must be a multiple of this.
    MultipleOf(u64),
    /// Must be one of the known bits.
    KnownBits(u64),
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let FormatError {
            field,
            offset,
            value,
            rule,
        } = *self;
        if field == "magic" && offset == 0 && rule == Rule::Equals(MAGIC) {
            // Not a channel at all: say what the file starts with instead.
            f.write_str("not a relay channel: starts with \"")?;
            for b in value.to_le_bytes() {
                if b.is_ascii_graphic() || b == b' ' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\x{b:02x}")?;
                }
            }
            return f.write_str("\", expected \"RELAYCHN\"");
        }
        write!(f, "{field} (byte {offset}): ")?;
        match rule {
            Rule::Equals(v) => write!(f, "must be {v}")?,
            Rule::AtLeast(v) => write!(f, "must be at least {v}")?,
            Rule::AtMost(v) => write!(f, "must be at most {v}")?,
            Rule::MultipleOf(v) => write!(f, "must be a multiple of {v}")?,
            Rule::KnownBits(v) => write!(f, "only bits {v:#x} are defined")?,
        }
        write!(f, " (got {value})")
    }
}

fn check(field: &'static str, offset: usize, value: u64, rule: Rule) -> Result<u64, FormatError> {
    let ok = match rule {
        Rule::Equals(v) => value == v,
        Rule::AtLeast(v) => value >= v,
        Rule::AtMost(v) => value <= v,
        Rule::MultipleOf(v) => v != 0 && value.is_multiple_of(v),
        Rule::KnownBits(v) => value & !v == 0,
    };
    if ok {
        Ok(value)
    } else {
        Err(FormatError {
            field,
            offset: offset as u64,
            value,
            rule,
        })
    }
}

/// Little-endian u64 at `off`, or `None` past the end.
#[inline]
pub(crate) fn read_u64(bytes: &[u8], off: usize) -> Option<u64> {
    let b = bytes.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// A sealed sub-buffer whose header and record framing have been validated.
#[derive(Clone, Copy, Debug)]
pub struct SubbufView<'b> {
    header: SubbufHeader,
    /// The sub-buffer bytes up to `content_size`.
    content: &'b [u8],
}

/// One record of a sub-buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'b> {
    /// Timestamp.
    pub ts: u64,
    /// Producer-chosen type.
    pub rtype: u16,
    /// Payload bytes.
    pub payload: &'b [u8],
}

/// How far ahead of its walk [`SubbufView::parse`] asks for the
/// sub-buffer's bytes: 48 cache lines, about a load's latency from memory
/// at the walk's pace (of 384 to 6,144 bytes, the fastest on the 256-CPU
/// drain; BENCHMARKS.md).
const WALK_PREFETCH: usize = 3072;

impl<'b> SubbufView<'b> {
    /// Validates `bytes` (one whole sub-buffer) as sub-buffer `seq` of `cpu`
    /// in a channel of geometry `geo`: header fields, every record's framing,
    /// and the record count. After this, iterating records cannot fail.
    pub fn parse(bytes: &'b [u8], geo: &Geometry, seq: u64, cpu: u32) -> Result<Self, FormatError> {
        let size = geo.subbuf_size() as usize;
        check("subbuf", 0, bytes.len() as u64, Rule::Equals(size as u64))?;
        let word = |i: usize| read_u64(bytes, i * 8).unwrap_or(0);
        let header = SubbufHeader {
            seq: word(subbuf::SEQ),
            cpu: lo(word(subbuf::CPU_FLAGS)),
            flags: hi(word(subbuf::CPU_FLAGS)),
            ts_begin: word(subbuf::TS_BEGIN),
            lost_full: word(subbuf::LOST_FULL),
            lost_too_big: word(subbuf::LOST_TOO_BIG),
            lost_overwrite: word(subbuf::LOST_OVERWRITE),
            ts_end: word(subbuf::TS_END),
            content_size: lo(word(subbuf::CONTENT)),
            close_flags: hi(word(subbuf::CONTENT)),
            records: lo(word(subbuf::RECORDS)),
            abandoned: hi(word(subbuf::RECORDS)),
        };
        check("subbuf.seq", 0, header.seq, Rule::Equals(seq))?;
        check("subbuf.cpu", 8, header.cpu.into(), Rule::Equals(cpu.into()))?;
        check("subbuf.flags", 12, header.flags.into(), Rule::Equals(0))?;
        let content = header.content_size as usize;
        check(
            "subbuf.content_size",
            56,
            content as u64,
            Rule::AtLeast((SUBBUF_HEADER_SIZE + RECORD_HEADER_SIZE) as u64),
        )?;
        check(
            "subbuf.content_size",
            56,
            content as u64,
            Rule::AtMost(size as u64),
        )?;
        check(
            "subbuf.content_size",
            56,
            content as u64,
            Rule::MultipleOf(RECORD_ALIGN as u64),
        )?;
        check(
            "subbuf.close_flags",
            60,
            header.close_flags.into(),
            Rule::KnownBits((close_flags::FLUSHED | close_flags::ABANDONED).into()),
        )?;
        let content_bytes = bytes.get(..content).unwrap_or(&[]);

        // Walk the framing once; `Records` then trusts it. Its first lines
        // are asked for at once, the rest as it goes.
        let region = crate::mem::Region::of(content_bytes);
        for ahead in (0..WALK_PREFETCH).step_by(64) {
            region.prefetch(ahead);
        }
        let mut off = SUBBUF_HEADER_SIZE;
        let mut records: u64 = 0;
        while off < content {
            // Each record's length says where the next one is: without a
            // prefetch ahead, a cold sub-buffer is one miss a record. (Past
            // the content it is the next sub-buffer's or nothing: no test.)
            region.prefetch_any(off.wrapping_add(WALK_PREFETCH));
            let w0 = read_u64(content_bytes, off).unwrap_or(0);
            let len = lo(w0) as usize;
            let flags = (w0 >> 48) as u16;
            check(
                "record.len",
                off,
                len as u64,
                Rule::AtLeast(RECORD_HEADER_SIZE as u64),
            )?;
            check(
                "record.len",
                off,
                len as u64,
                Rule::AtMost((content - off) as u64),
            )?;
            check(
                "record.flags",
                off + 6,
                flags.into(),
                Rule::KnownBits(record_flags::DISCARDED.into()),
            )?;
            if flags & record_flags::DISCARDED == 0 {
                records += 1;
            }
            // len <= content - off <= 2^30, so this cannot overflow.
            off += (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1);
        }
        check(
            "subbuf.records",
            64,
            header.records.into(),
            Rule::Equals(records),
        )?;
        Ok(SubbufView {
            header,
            content: content_bytes,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &SubbufHeader {
        &self.header
    }

    /// The records, in the order they were reserved (timestamps ascending).
    /// Discarded reservations are skipped.
    pub fn records(&self) -> Records<'b> {
        Records {
            content: self.content,
            off: SUBBUF_HEADER_SIZE,
        }
    }
}

/// Iterator over the records of a [`SubbufView`], from some byte offset.
#[derive(Clone, Debug)]
pub struct Records<'b> {
    content: &'b [u8],
    off: usize,
}

impl<'b> Records<'b> {
    /// Iterates `content` (the first `content_size` bytes of a sub-buffer
    /// that [`SubbufView::parse`] accepted) from byte offset `off`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn resume(content: &'b [u8], off: usize) -> Self {
        Records { content, off }
    }

    /// Byte offset (within the sub-buffer) of the next record.
    pub fn offset(&self) -> usize {
        self.off
    }

    /// Skips to byte offset `off` if it is a record boundary at or after the
    /// current one (a resume cursor from shared memory is hostile: anything
    /// else leaves the iterator where it is and returns false).
    pub fn seek(&mut self, off: u64) -> bool {
        let mut probe = self.clone();
        while (probe.off as u64) < off {
            if probe.next_raw().is_none() {
                return false;
            }
        }
        if probe.off as u64 == off {
            *self = probe;
            true
        } else {
            false
        }
    }

    /// The next record (skipping discarded ones) and its byte offset.
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    pub(crate) fn next_at(&mut self) -> Option<(usize, Record<'b>)> {
        loop {
            let start = self.off;
            let (flags, record) = self.next_raw()?;
            if flags & record_flags::DISCARDED == 0 {
                return Some((start, record));
            }
        }
    }

    /// The record at `off`, if its header fits and its `len` is at least
    /// a header and at most what is left: three tests a record, on bytes
    /// that may change under the reader (a sub-buffer read in place).
    #[inline]
    fn next_raw(&mut self) -> Option<(u16, Record<'b>)> {
        let rest = self.content.get(self.off..)?;
        let (header, _) = rest.split_first_chunk::<RECORD_HEADER_SIZE>()?;
        let [w0, ts] = [0, 8].map(|at| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(a)
        });
        let len = lo(w0) as usize;
        let payload = rest.get(RECORD_HEADER_SIZE..len)?;
        // `off + len <= content.len()`, which a slice keeps below
        // `isize::MAX`: adding the padding does not wrap.
        self.off = self
            .off
            .wrapping_add((len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1));
        Some((
            (w0 >> 48) as u16,
            Record {
                ts,
                rtype: (w0 >> 32) as u16,
                payload,
            },
        ))
    }
}

impl<'b> Iterator for Records<'b> {
    type Item = Record<'b>;

    #[inline]
    fn next(&mut self) -> Option<Record<'b>> {
        loop {
            let (flags, record) = self.next_raw()?;
            if flags & record_flags::DISCARDED == 0 {
                return Some(record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::GeometryParams;
    use std::vec::Vec;

    fn geo() -> Geometry {
        Geometry::new(GeometryParams {
            subbuf_size: 256,
            subbuf_count: 2,
            cpu_count: 1,
            page_size: 4096,
        })
        .unwrap()
    }

    fn put(bytes: &mut [u8], off: usize, v: u64) {
        bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A valid sub-buffer 5 of CPU 0 with records of the given payload sizes.
    fn subbuf(payloads: &[usize]) -> Vec<u8> {
        let mut b = std::vec![0u8; 256];
        put(&mut b, 0, 5);
        let mut off = SUBBUF_HEADER_SIZE;
        for (i, &n) in payloads.iter().enumerate() {
            put(&mut b, off, RecordHeader::word0((16 + n) as u32, 7, 0));
            put(&mut b, off + 8, 100 + i as u64);
            for j in 0..n {
                b[off + 16 + j] = j as u8;
            }
            off += record_total(n).unwrap();
        }
        put(&mut b, subbuf::CONTENT * 8, off as u64);
        put(&mut b, subbuf::RECORDS * 8, payloads.len() as u64);
        b
    }

    #[test]
    fn head_round_trips_and_boundaries() {
        let shift = 8;
        for h in [
            Head::Open { seq: 0, off: 8 },
            Head::Open { seq: 3, off: 256 },
            Head::Open { seq: 3, off: 88 },
            Head::Closed { next: 0, epoch: 0 },
            Head::Closed {
                next: 9,
                epoch: 127,
            },
        ] {
            assert_eq!(Head::decode(h.encode(shift), shift), h);
        }
        assert_eq!(
            Head::decode(Head::INITIAL, shift),
            Head::Closed { next: 0, epoch: 0 }
        );
        // A full sub-buffer is still open, not the next one.
        assert_eq!(
            Head::decode(4 * 256, shift),
            Head::Open { seq: 3, off: 256 }
        );
        // Epochs wrap inside the low bits.
        assert_eq!(
            Head::decode(
                Head::Closed {
                    next: 1,
                    epoch: 128
                }
                .encode(shift),
                shift
            ),
            Head::Closed { next: 1, epoch: 0 }
        );
        // Any word decodes to an in-range offset.
        for w in [0u64, 2, u64::MAX - 1, 0x8000_0000_0000_0000] {
            if let Head::Open { off, .. } = Head::decode(w, shift) {
                assert!((1..=256).contains(&off), "{w:#x} -> {off}");
            }
        }
    }

    #[test]
    fn seal_round_trips() {
        for s in [
            Seal::Empty,
            Seal::Sealed(0),
            Seal::Opening(0),
            Seal::Sealed((1 << 62) + 5),
            Seal::Opening(41),
        ] {
            assert_eq!(Seal::decode(s.encode()), s);
        }
    }

    #[test]
    fn commit_fields() {
        let w = Commit::CLOSED + 3 * Commit::RECORD + 256;
        assert_eq!((Commit::bytes(w), Commit::records(w)), (256, 3));
        assert!(Commit::is_complete(w, 256));
        assert!(!Commit::is_complete(w - Commit::CLOSED, 256));
        assert!(!Commit::is_complete(w - 8, 256));
    }

    #[test]
    fn record_total_rounds_and_refuses_overflow() {
        assert_eq!(record_total(0), Some(16));
        assert_eq!(record_total(1), Some(24));
        assert_eq!(record_total(8), Some(24));
        assert_eq!(record_total(usize::MAX), None);
        assert_eq!(record_total(u32::MAX as usize), None);
    }

    #[test]
    fn channel_header_words_round_trip() {
        let h = ChannelHeader::new(&geo(), 1, Clock::Monotonic);
        let w = h.to_words();
        assert_eq!(ChannelHeader::from_words(&w), h);
        let mut bytes = Vec::new();
        for x in w {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(ChannelHeader::from_bytes(&bytes), Some(h));
        assert_eq!(ChannelHeader::from_bytes(&bytes[..127]), None);
        #[cfg(feature = "zerocopy")]
        {
            use zerocopy::FromBytes;
            assert_eq!(*ChannelHeader::ref_from_bytes(&bytes).unwrap(), h);
        }
    }

    #[test]
    fn parses_valid_subbuf() {
        let b = subbuf(&[0, 5, 48]);
        let v = SubbufView::parse(&b, &geo(), 5, 0).unwrap();
        let recs: Vec<_> = v.records().collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].payload, &[0, 1, 2, 3, 4]);
        assert_eq!(recs[2].ts, 102);
        assert_eq!(recs[2].rtype, 7);
    }

    #[test]
    fn subbuf_exactly_full() {
        // 256 - 72 header = 184 = one record of 168 payload bytes.
        let b = subbuf(&[168]);
        let v = SubbufView::parse(&b, &geo(), 5, 0).unwrap();
        assert_eq!(v.header().content_size, 256);
        assert_eq!(v.records().next().unwrap().payload.len(), 168);
    }

    #[test]
    fn rejects_each_bad_field() {
        let g = geo();
        let good = subbuf(&[8, 8]);
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            SubbufView::parse(&b, &g, 5, 0).unwrap_err()
        };
        assert_eq!(bad(&|b| put(b, 0, 6)).field, "subbuf.seq");
        assert_eq!(bad(&|b| put(b, 8, 1)).field, "subbuf.cpu");
        assert_eq!(bad(&|b| put(b, 8, 1 << 32)).field, "subbuf.flags");
        assert_eq!(bad(&|b| put(b, 56, 300)).field, "subbuf.content_size");
        assert_eq!(bad(&|b| put(b, 56, 80)).field, "subbuf.content_size");
        assert_eq!(bad(&|b| put(b, 56, 124)).field, "subbuf.content_size");
        assert_eq!(
            bad(&|b| put(b, 56, 120 | 4 << 32)).field,
            "subbuf.close_flags"
        );
        assert_eq!(bad(&|b| put(b, 64, 3)).field, "subbuf.records");
        assert_eq!(bad(&|b| put(b, 72, 8)).field, "record.len");
        assert_eq!(bad(&|b| put(b, 72, 1000)).field, "record.len");
        assert_eq!(
            bad(&|b| put(b, 72, RecordHeader::word0(24, 0, 4))).field,
            "record.flags"
        );
        // Reserved and never committed: never in a sealed sub-buffer.
        assert_eq!(
            bad(&|b| put(b, 72, RecordHeader::word0(24, 0, record_flags::RESERVED))).field,
            "record.flags"
        );
        let e = SubbufView::parse(&good[..255], &g, 5, 0).unwrap_err();
        assert_eq!(e.field, "subbuf");
        assert_eq!(
            format!("{}", bad(&|b| put(b, 0, 6))),
            "subbuf.seq (byte 0): must be 5 (got 6)"
        );
    }

    #[test]
    fn discarded_records_are_skipped() {
        let mut b = subbuf(&[8, 8]);
        put(
            &mut b,
            72,
            RecordHeader::word0(24, 7, record_flags::DISCARDED),
        );
        put(&mut b, 64, 1);
        let v = SubbufView::parse(&b, &geo(), 5, 0).unwrap();
        let recs: Vec<_> = v.records().collect();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].ts, 101);
    }

    #[test]
    fn seek_only_to_record_boundaries() {
        let b = subbuf(&[8, 8, 8]);
        let v = SubbufView::parse(&b, &geo(), 5, 0).unwrap();
        let mut r = v.records();
        assert!(!r.seek(73));
        assert!(!r.seek(10_000));
        assert_eq!(r.offset(), 72);
        assert!(r.seek(96));
        assert_eq!(r.next().unwrap().ts, 101);
    }
}
