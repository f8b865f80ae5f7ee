//! A channel: one region holding the header and every CPU's producer state,
//! consumer state and sub-buffers, carved into per-CPU slices once, so that
//! writers and readers only ever index slices whose bounds were checked here.

use crate::format::{
    consumer, producer, Anchor, ChannelHeader, Clock, FormatError, Head, Rule, CHANNEL_HEADER_SIZE,
    CHANNEL_HEADER_WORDS, CONSUMER_STRIDE, MAGIC, PRODUCER_FIXED_WORDS, RECORD_HEADER_SIZE,
    SUBBUF_HEADER_SIZE, VERSION_MAJOR,
};
use crate::geometry::{align_up, Geometry, GeometryError, GeometryParams};
use crate::policy::{ChannelFlags, Mode};
use crate::reader::{CpuReader, CpuStats};
use crate::sync::{AtomicU64, Ordering};
use crate::writer::{CpuLocal, Writer};

/// Why a region could not be opened or created as a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The region is smaller than the channel needs.
    Truncated {
        /// Bytes the channel needs.
        need: u64,
        /// Bytes the region has.
        have: u64,
    },
    /// A header field is wrong.
    Format(FormatError),
    /// The header's geometry breaks a rule.
    Geometry(GeometryError),
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ChannelError::Truncated { need, have } => {
                write!(
                    f,
                    "total_size: the channel needs {need} bytes but the region has {have}"
                )
            }
            ChannelError::Format(e) => write!(f, "channel header: {e}"),
            ChannelError::Geometry(e) => write!(f, "channel header: {e}"),
        }
    }
}

impl From<FormatError> for ChannelError {
    fn from(e: FormatError) -> Self {
        ChannelError::Format(e)
    }
}

/// One CPU's slices of a channel. Each slice has exactly the length the
/// geometry gives it, so `slot < count` and `word < size / 8` index in bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuBuffer<'a> {
    pub(crate) cpu: u32,
    pub(crate) mode: Mode,
    pub(crate) shift: u32,
    pub(crate) count: u32,
    /// `count`, for the division when it is not a power of two.
    pub(crate) count_nz: core::num::NonZeroU64,
    /// `size - 1`, a head word's offset bits, when `count` is a power of
    /// two; else 0, so that the writer's fast path ([`crate::format::Head::has_room`])
    /// never finds room and every record takes the path that divides.
    pub(crate) room_mask: u64,
    /// `count * size - 8` when `count` is a power of two, else 0: the
    /// writer's fast path turns a head word into the record's byte offset
    /// in `data` with one AND (`seq % count * size + off`, a multiple of 8
    /// even for a head word a hostile process wrote). With `room_mask`'s
    /// room test, that offset plus the record's bytes is at most `data`'s
    /// length, which the fast path relies on to index unchecked.
    pub(crate) data_mask: u64,
    pub(crate) head: &'a AtomicU64,
    /// The fixed producer words (head, statistics).
    pub(crate) producer: &'a [AtomicU64],
    pub(crate) commits: &'a [AtomicU64],
    pub(crate) seals: &'a [AtomicU64],
    pub(crate) consumer: &'a [AtomicU64],
    /// `count` sub-buffers of `1 << shift` bytes.
    pub(crate) data: &'a [AtomicU64],
    /// Who wakes sleeping readers after a seal (see [`crate::wake`]).
    pub(crate) wake: Option<crate::wake::Wake<'a>>,
}

impl<'a> CpuBuffer<'a> {
    pub(crate) fn size(&self) -> u64 {
        1 << self.shift
    }

    /// Producer word `index` (a `format::producer` constant: always in bounds).
    pub(crate) fn producer_word(&self, index: usize) -> Option<&'a AtomicU64> {
        self.producer.get(index)
    }

    /// Consumer word `index` (a `format::consumer` constant: always in bounds).
    pub(crate) fn consumer_word(&self, index: usize) -> Option<&'a AtomicU64> {
        self.consumer.get(index)
    }

    /// The slot sub-buffer `seq` occupies.
    #[inline]
    pub(crate) fn slot(&self, seq: u64) -> usize {
        // The remainder is below `count`, a u32: the cast is lossless.
        if self.data_mask != 0 {
            // `count` is a power of two: no division.
            (seq & (self.count_nz.get() - 1)) as usize
        } else {
            // A non-zero divisor the compiler can see: no division-by-zero
            // panic path (the kernel's objtool flags those).
            (seq % self.count_nz) as usize
        }
    }

    /// The words of sub-buffer slot `slot`.
    #[inline]
    pub(crate) fn subbuf_words(&self, slot: usize) -> &'a [AtomicU64] {
        // `slot < count` and `count << shift` bytes fit the slice (checked
        // when it was carved), so neither the shift nor the add overflows.
        let words_shift = self.shift - 3;
        let start = slot << words_shift;
        self.data
            .get(start..start + (1 << words_shift))
            .unwrap_or(&[])
    }

    pub(crate) fn load(&self, index: usize) -> u64 {
        self.producer_word(index)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }
}

/// A channel laid out in `docs/FORMAT.md`'s format over memory it borrows.
pub struct Channel<'a> {
    words: &'a [AtomicU64],
    geometry: Geometry,
    flags: ChannelFlags,
    /// Given to writers: see [`Self::with_waker`].
    waker: Option<crate::wake::Waker>,
}

impl core::fmt::Debug for Channel<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("geometry", &self.geometry)
            .field("flags", &self.flags)
            .field("bytes", &(self.words.len() * 8))
            .finish()
    }
}

fn words_of(bytes: u64) -> Option<usize> {
    usize::try_from(bytes / 8).ok()
}

impl<'a> Channel<'a> {
    /// Lays a new channel out over `words` (from `mem::words_from_raw`, or an
    /// owned buffer): writes the header and initializes every CPU's producer
    /// and consumer state. Sub-buffer contents need not be initialized: no
    /// one reads a sub-buffer before a writer sealed it.
    pub fn create(
        words: &'a [AtomicU64],
        geometry: Geometry,
        flags: ChannelFlags,
        clock: Clock,
    ) -> Result<Self, ChannelError> {
        Self::create_anchored(words, geometry, flags, clock, None)
    }

    /// [`Self::create`], recording where `clock` stood in wall time (the
    /// header's `realtime_anchor` and `clock_anchor`).
    pub fn create_anchored(
        words: &'a [AtomicU64],
        geometry: Geometry,
        flags: ChannelFlags,
        clock: Clock,
        anchor: Option<Anchor>,
    ) -> Result<Self, ChannelError> {
        let channel = Self::attach(words, geometry, flags)?;
        for cpu in 0..geometry.cpu_count() {
            let Some(b) = channel.cpu_buffer(cpu) else {
                continue;
            };
            for w in b
                .producer
                .iter()
                .chain(b.commits)
                .chain(b.seals)
                .chain(b.consumer)
            {
                w.store(0, Ordering::Relaxed);
            }
            b.head.store(Head::INITIAL, Ordering::Relaxed);
        }
        let mut header = ChannelHeader::new(&geometry, flags.bits(), clock);
        if let Some(a) = anchor {
            header.realtime_anchor = a.realtime_ns;
            header.clock_anchor = a.clock;
        }
        let header = header.to_words();
        // The magic goes last, with release: whoever sees it sees the rest.
        for (w, v) in words.iter().zip(header).skip(1) {
            w.store(v, Ordering::Relaxed);
        }
        if let Some(w) = words.first() {
            w.store(MAGIC, Ordering::Release);
        }
        Ok(channel)
    }

    /// Opens the channel that `words` holds, validating every header field:
    /// the geometry is recomputed from the parameters and every offset the
    /// header claims must match it, so nothing later trusts a stored offset.
    pub fn open(words: &'a [AtomicU64]) -> Result<Self, ChannelError> {
        let have = (words.len() as u64).saturating_mul(8);
        if words.len() < CHANNEL_HEADER_WORDS {
            return Err(ChannelError::Truncated {
                need: CHANNEL_HEADER_SIZE as u64,
                have,
            });
        }
        let mut raw = [0u64; CHANNEL_HEADER_WORDS];
        for (i, (r, w)) in raw.iter_mut().zip(words).enumerate() {
            *r = w.load(if i == 0 {
                Ordering::Acquire
            } else {
                Ordering::Relaxed
            });
        }
        let h = ChannelHeader::from_words(&raw);
        let field = |name: &'static str, offset: u64, value: u64, expect: u64| {
            if value == expect {
                Ok(())
            } else {
                Err(FormatError {
                    field: name,
                    offset,
                    value,
                    rule: Rule::Equals(expect),
                })
            }
        };
        field("magic", 0, h.magic, MAGIC)?;
        field(
            "version_major",
            8,
            h.version_major.into(),
            VERSION_MAJOR.into(),
        )?;
        field(
            "header_size",
            12,
            h.header_size.into(),
            CHANNEL_HEADER_SIZE as u64,
        )?;
        let flags = ChannelFlags::from_bits(h.flags).ok_or(FormatError {
            field: "flags",
            offset: 16,
            value: h.flags,
            rule: Rule::KnownBits(ChannelFlags::all().bits()),
        })?;
        let geometry = Geometry::new(GeometryParams {
            subbuf_size: h.subbuf_size.into(),
            subbuf_count: h.subbuf_count.into(),
            cpu_count: h.cpu_count,
            page_size: h.page_size,
        })
        .map_err(ChannelError::Geometry)?;
        // A count of 0 means 8 in the API, but a stored header holds the real count.
        field(
            "subbuf_count",
            28,
            h.subbuf_count.into(),
            geometry.subbuf_count().into(),
        )?;
        field(
            "producer_offset",
            40,
            h.producer_offset,
            geometry.producer_offset(),
        )?;
        field(
            "producer_stride",
            48,
            h.producer_stride,
            geometry.producer_stride(),
        )?;
        field(
            "consumer_offset",
            56,
            h.consumer_offset,
            geometry.consumer_offset(),
        )?;
        field(
            "consumer_stride",
            64,
            h.consumer_stride,
            geometry.consumer_stride(),
        )?;
        field("data_offset", 72, h.data_offset, geometry.data_offset())?;
        field("data_stride", 80, h.data_stride, geometry.data_stride())?;
        field("total_size", 88, h.total_size, geometry.total_size())?;
        field(
            "subbuf_header_size",
            96,
            h.subbuf_header_size.into(),
            SUBBUF_HEADER_SIZE as u64,
        )?;
        field(
            "record_header_size",
            100,
            h.record_header_size.into(),
            RECORD_HEADER_SIZE as u64,
        )?;
        Self::attach(words, geometry, flags)
    }

    /// A channel over `words` whose header was already validated (by
    /// [`Self::open`]) into `geometry` and `flags`: the header is not read
    /// again, so a header changed since cannot change the layout in use.
    pub fn attach(
        words: &'a [AtomicU64],
        geometry: Geometry,
        flags: ChannelFlags,
    ) -> Result<Self, ChannelError> {
        let have = (words.len() as u64).saturating_mul(8);
        if have < geometry.total_size() {
            return Err(ChannelError::Truncated {
                need: geometry.total_size(),
                have,
            });
        }
        Ok(Channel {
            waker: None,
            words,
            geometry,
            flags,
        })
    }

    /// The validated geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The channel's flags.
    pub fn flags(&self) -> ChannelFlags {
        self.flags
    }

    /// Where the channel's clock stood in wall time, if its creator said
    /// (format 1.2; a `realtime_anchor` of 0 means it did not).
    pub fn anchor(&self) -> Option<Anchor> {
        let word = |i: usize| self.words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
        let (realtime_ns, clock) = (word(14), word(15));
        (realtime_ns != 0).then_some(Anchor { realtime_ns, clock })
    }

    /// The header's `version_minor`: what the creator's format knew (a
    /// reader accepts any; see FORMAT.md, "Compatibility").
    pub fn version_minor(&self) -> u16 {
        // Word 1 holds `version_minor` in bits 16..32 (FORMAT.md, byte 10).
        self.words
            .get(1)
            .map_or(0, |w| (w.load(Ordering::Relaxed) >> 16) as u16)
    }

    /// The header's `clock` code ([`Clock::from_u32`] names the known ones;
    /// readers accept any).
    pub fn clock(&self) -> u32 {
        // Word 13 holds `clock` in its low half (FORMAT.md, byte 104).
        self.words
            .get(13)
            .map_or(0, |w| w.load(Ordering::Relaxed) as u32)
    }

    /// The overwrite mode the flags select.
    pub fn mode(&self) -> Mode {
        self.flags.into()
    }

    pub(crate) fn cpu_buffer(&self, cpu: u32) -> Option<CpuBuffer<'a>> {
        let g = &self.geometry;
        if cpu >= g.cpu_count() {
            return None;
        }
        let cpu64 = u64::from(cpu);
        let count = g.subbuf_count() as usize;
        let slot_words = align_up(count as u64, 8)? as usize;
        let slice = |offset: u64, len_words: usize| -> Option<&'a [AtomicU64]> {
            let start = words_of(offset)?;
            self.words.get(start..start.checked_add(len_words)?)
        };
        let producer_base = g.producer_offset() + cpu64 * g.producer_stride();
        let producer = slice(producer_base, PRODUCER_FIXED_WORDS)?;
        let commits = slice(producer_base + (producer::COMMITS * 8) as u64, count)?;
        let seals = slice(
            producer_base + ((producer::COMMITS + slot_words) * 8) as u64,
            count,
        )?;
        let consumer = slice(
            g.consumer_offset() + cpu64 * CONSUMER_STRIDE as u64,
            CONSUMER_STRIDE / 8,
        )?;
        let data_words = (u64::from(g.subbuf_size()) * count as u64) / 8;
        let data = slice(
            g.data_offset() + cpu64 * g.data_stride(),
            usize::try_from(data_words).ok()?,
        )?;
        Some(CpuBuffer {
            cpu,
            mode: self.mode(),
            shift: g.subbuf_shift(),
            count: g.subbuf_count(),
            count_nz: core::num::NonZeroU64::new(g.subbuf_count().into())?,
            room_mask: if g.subbuf_count().is_power_of_two() {
                u64::from(g.subbuf_size()) - 1
            } else {
                0
            },
            data_mask: if g.subbuf_count().is_power_of_two() {
                (u64::from(g.subbuf_size()) << g.subbuf_count().trailing_zeros()) - 8
            } else {
                0
            },
            head: producer.get(producer::HEAD)?,
            producer,
            commits,
            seals,
            consumer,
            data,
            wake: self.waker.and_then(|waker| {
                Some(crate::wake::Wake {
                    wakeups: self.wakeups()?,
                    waker,
                })
            }),
        })
    }

    /// This channel, with writers that wake sleeping readers through
    /// `waker` after each seal, when one sleeps (see [`crate::wake`]). For
    /// channels in a file; the kernel's readers sleep in `poll()` instead.
    pub fn with_waker(mut self, waker: crate::wake::Waker) -> Self {
        self.waker = Some(waker);
        self
    }

    /// The word readers of this channel sleep on (see [`crate::wake`]);
    /// `None` in a channel created before format 1.3, whose writers may
    /// not know it.
    pub fn wakeups(&self) -> Option<&'a AtomicU64> {
        if self.version_minor() < 3 {
            return None;
        }
        self.words
            .get(crate::wake::wakeups_word(self.geometry.producer_offset())?)
    }

    /// `cpu`'s `waiters` word, where a reader of it registers (see
    /// [`crate::wake`]).
    pub fn waiters(&self, cpu: u32) -> Option<&'a AtomicU64> {
        self.cpu_buffer(cpu)?.consumer.get(consumer::WAITERS)
    }

    /// The writer for `cpu`'s buffer, or `None` if there is no such CPU.
    ///
    /// Any number of writers may write one CPU's buffer: nested contexts on
    /// that CPU (IRQ, NMI) or, in userspace, several threads.
    pub fn writer(&self, cpu: u32) -> Option<Writer<'a>> {
        self.cpu_buffer(cpu).map(Writer::new)
    }

    /// A writer for `cpu`'s buffer whose producer-side atomics are per-CPU
    /// only ([`CpuLocal`]): about twice as fast per record on x86-64. Use it
    /// when every write and flush of this buffer runs on one CPU with
    /// preemption disabled (the kernel) or on one thread (userspace), so that
    /// writers only ever interrupt each other. Breaking that rule can lose or
    /// corrupt records and counts, never memory safety.
    pub fn local_writer(&self, cpu: u32) -> Option<Writer<'a, CpuLocal>> {
        self.cpu_buffer(cpu).map(Writer::new)
    }

    /// The consumer of `cpu`'s buffer, or `None` if there is no such CPU.
    /// One consumer per CPU buffer at a time (see `CpuReader`); the caller
    /// holds the claim.
    pub fn reader(&self, cpu: u32) -> Option<CpuReader<'a>> {
        self.cpu_buffer(cpu)
            .map(|b| CpuReader::new(b, self.geometry))
    }

    /// A snapshot reader of `cpu`'s buffer (see `reader`'s "Snapshots"):
    /// it stores nothing into the channel, so it works on a read-only
    /// mapping and any number may run beside the consumer.
    pub fn snapshot(&self, cpu: u32) -> Option<CpuReader<'a>> {
        self.cpu_buffer(cpu)
            .map(|b| CpuReader::new_snapshot(b, self.geometry))
    }

    /// The process id the consumer of `cpu` stored when it claimed it
    /// (untrusted; 0 when unknown or no such CPU).
    pub fn claim_pid(&self, cpu: u32) -> u64 {
        self.cpu_buffer(cpu)
            .and_then(|b| b.consumer_word(consumer::CLAIM_PID))
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Records `pid` as the consumer of `cpu` (after claiming it: the claim
    /// itself is outside the channel). Needs the consumer region writable.
    pub fn set_claim_pid(&self, cpu: u32, pid: u64) {
        if let Some(w) = self
            .cpu_buffer(cpu)
            .and_then(|b| b.consumer_word(consumer::CLAIM_PID))
        {
            w.store(pid, Ordering::Relaxed);
        }
    }

    /// `cpu`'s statistics.
    pub fn stats(&self, cpu: u32) -> Option<CpuStats> {
        self.cpu_buffer(cpu).map(|b| CpuStats::load(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn geo() -> Geometry {
        Geometry::new(GeometryParams {
            subbuf_size: 256,
            subbuf_count: 3,
            cpu_count: 2,
            page_size: 4096,
        })
        .unwrap()
    }

    fn region(geo: &Geometry) -> Vec<AtomicU64> {
        (0..geo.total_size() / 8)
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    #[test]
    fn create_then_open() {
        let g = geo();
        let mem = region(&g);
        Channel::create(&mem, g, ChannelFlags::OVERWRITE, Clock::Counter).unwrap();
        let ch = Channel::open(&mem).unwrap();
        assert_eq!(*ch.geometry(), g);
        assert_eq!(ch.mode(), Mode::Overwrite);
        assert!(ch.writer(1).is_some());
        assert!(ch.writer(2).is_none());
        assert!(ch.reader(2).is_none());
    }

    #[test]
    fn create_refuses_short_region() {
        let g = geo();
        let mem = region(&g);
        let e = Channel::create(
            &mem[..mem.len() - 1],
            g,
            ChannelFlags::empty(),
            Clock::Counter,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ChannelError::Truncated {
                need: g.total_size(),
                have: g.total_size() - 8
            }
        );
    }

    #[test]
    fn open_rejects_each_bad_header_field() {
        let g = geo();
        let mem = region(&g);
        Channel::create(&mem, g, ChannelFlags::empty(), Clock::Counter).unwrap();
        let good: Vec<u64> = mem
            .iter()
            .take(16)
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        let try_with = |word: usize, value: u64| {
            for (w, v) in mem.iter().zip(&good) {
                w.store(*v, Ordering::Relaxed);
            }
            mem[word].store(value, Ordering::Relaxed);
            Channel::open(&mem).unwrap_err()
        };
        let field = |e: ChannelError| match e {
            ChannelError::Format(f) => f.field,
            ChannelError::Geometry(g) => g.param.name(),
            ChannelError::Truncated { .. } => "truncated",
        };
        assert_eq!(field(try_with(0, 0)), "magic");
        assert_eq!(field(try_with(1, good[1] + 1)), "version_major");
        assert_eq!(field(try_with(1, good[1] & 0xffff_ffff)), "header_size");
        assert_eq!(field(try_with(2, 6)), "flags");
        assert_eq!(field(try_with(3, 100 | 3 << 32)), "subbuf_size");
        assert_eq!(field(try_with(3, 256 | 1 << 32)), "subbuf_count");
        assert_eq!(field(try_with(3, 256)), "subbuf_count");
        assert_eq!(field(try_with(4, 4096 << 32)), "cpu_count");
        assert_eq!(field(try_with(4, 2 | 100 << 32)), "page_size");
        assert_eq!(field(try_with(5, 0)), "producer_offset");
        assert_eq!(field(try_with(6, 8)), "producer_stride");
        assert_eq!(field(try_with(7, 1)), "consumer_offset");
        assert_eq!(field(try_with(8, 64)), "consumer_stride");
        assert_eq!(field(try_with(9, 0)), "data_offset");
        assert_eq!(field(try_with(10, 4095)), "data_stride");
        assert_eq!(field(try_with(11, 1 << 50)), "total_size");
        assert_eq!(field(try_with(12, 64 | 16 << 32)), "subbuf_header_size");
        assert_eq!(field(try_with(12, 72 | 8 << 32)), "record_header_size");
        // A consistent header that claims more CPUs than the region holds.
        try_with(11, 24576);
        mem[4].store(3 | 4096 << 32, Ordering::Relaxed);
        assert_eq!(
            Channel::open(&mem).unwrap_err(),
            ChannelError::Truncated {
                need: 24576,
                have: 20480
            }
        );
        let e = format!("{}", try_with(0, 0));
        assert_eq!(
            e,
            "channel header: not a relay channel: starts with \"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\", expected \"RELAYCHN\""
        );
    }

    #[test]
    fn the_realtime_anchor_survives_a_reopen() {
        let g = geo();
        let mem = region(&g);
        let a = Anchor {
            realtime_ns: 1_796_228_044_000_000_123,
            clock: 4_602_902_069_035,
        };
        Channel::create_anchored(&mem, g, ChannelFlags::empty(), Clock::Local, Some(a)).unwrap();
        let c = Channel::open(&mem).unwrap();
        assert_eq!(c.anchor(), Some(a));
        assert_eq!(c.clock(), Clock::Local as u32);
        assert_eq!(a.wall_ns(a.clock + 5), Some(a.realtime_ns + 5));
        assert_eq!(a.wall_ns(a.clock - 5), Some(a.realtime_ns - 5));
        assert_eq!(a.wall_ns(u64::MAX), None);
        let mem = region(&g);
        Channel::create(&mem, g, ChannelFlags::empty(), Clock::Counter).unwrap();
        assert_eq!(Channel::open(&mem).unwrap().anchor(), None);
    }

    #[test]
    fn open_rejects_truncated_region() {
        let g = geo();
        let mem = region(&g);
        Channel::create(&mem, g, ChannelFlags::empty(), Clock::Counter).unwrap();
        assert!(matches!(
            Channel::open(&mem[..10]).unwrap_err(),
            ChannelError::Truncated {
                need: 128,
                have: 80
            }
        ));
        assert!(matches!(
            Channel::open(&mem[..mem.len() - 1]).unwrap_err(),
            ChannelError::Truncated { .. }
        ));
    }
}
