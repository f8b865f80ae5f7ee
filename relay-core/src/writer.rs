//! The writer: lockless reserve/commit on one CPU's buffer, correct when a
//! write is interrupted by another write on the same CPU (IRQ, NMI) and, with
//! real atomics, when several threads share a buffer.
//!
//! # Protocol
//!
//! A reservation moves the head word with one compare-and-swap; the timestamp
//! is read after loading the head and before the CAS, and re-read on every
//! retry, so timestamps never decrease in buffer order on a CPU (an interrupt
//! that writes in between makes the CAS fail). A commit adds the record's bytes
//! (and one record) to its slot's commit word. The CAS that moves the head out
//! of a sub-buffer *closes* it: the closer writes the content size and end
//! timestamp and commits the padding plus the closed bit. Whichever commit
//! brings a closed sub-buffer's bytes to its size *seals* it: writes the
//! record count, updates the statistics and stores `Sealed(seq)` with release
//! ordering. Readers only ever read sealed sub-buffers.
//!
//! Opening sub-buffer `t` needs its slot: the writer checks the policy
//! ([`crate::policy::may_open`]), then takes the slot by swapping its seal word
//! from `Sealed(t - count)` (or `Empty`) to `Opening(t)`. Only the winner
//! resets the slot's commit word and may move the head into `t`; a nested
//! writer that finds the slot being opened drops its record (counted), since it
//! cannot wait for the context it interrupted. In overwrite mode the winner
//! first pushes the consumer position past the old occupant with a CAS, and
//! counts the occupant's records as lost if it was unread: that CAS is the one
//! point where writer and reader agree on who owns the old data.
//!
//! # The fast path
//!
//! Almost every record fits the open sub-buffer. For those, [`Writer::write`]
//! runs one straight line: load the head, read the clock, test the room with
//! masks (`Head::has_room`, no decoding), move the head with one CAS, mark
//! the reservation and store the time, copy the payload with one `memcpy`,
//! store the header, add to the commit word, and test its top bit (only a
//! closed sub-buffer can be complete). The head's word turns into the
//! record's place with one AND (`data_mask`, for power-of-two sub-buffer
//! counts). Opening a sub-buffer, the policy, reclaim, sealing and refusals
//! are out of line (`#[cold]`), as is any write that lost the head to an
//! interrupting one: they go through a [`Grant`].
//!
//! # Invariants (checked by the loom models and the differential test)
//!
//! 1. Every reserved byte of a sub-buffer is committed exactly once, so a
//!    sub-buffer seals exactly once, after its last reservation committed.
//! 2. A sealed sub-buffer is not written until its slot is reopened, which
//!    needs the consumer past it (no-overwrite) or a successful push of the
//!    consumer past it (overwrite).
//! 3. Every record a writer accepted is delivered once or counted lost to
//!    overwrite once; every record it refused is counted full or too big once.
//! 4. No store into a sub-buffer is ordered before the seal change that took
//!    its slot: a release fence follows the head CAS of every reservation,
//!    so a snapshot reader's copy that saw a new byte also sees the new seal.
//! 5. Right after its reservation a writer stores the record's `len` with flag
//!    `RESERVED`, and its commit stores the final flags: in an unsealed
//!    sub-buffer every reservation but one interrupted in between can be
//!    told committed or not, which is what lets a repair close what a dead
//!    writer left ([`Writer::repair_abandoned`]).

use crate::channel::CpuBuffer;
use crate::format::{
    close_flags, consumer, producer, record_total, subbuf, Commit, Head, RecordHeader, Seal,
    RECORD_HEADER_SIZE, SUBBUF_HEADER_SIZE,
};
use crate::policy::{may_open, reclaim_push, required_seal, Mode, RECLAIM_ATTEMPTS};

mod abandoned;
use crate::sync::{fence, AtomicU64, Ordering};
pub use abandoned::Repaired;

/// How the writer's read-modify-write operations on producer words are
/// atomic: across CPUs ([`Shared`]) or only within one CPU ([`CpuLocal`]).
/// The consumer position, which readers also move, is always fully atomic.
pub trait Sharing: Copy + core::fmt::Debug + sealed::Sealed {
    /// Compare-and-swap; true if `w` held `old` and now holds `new`.
    fn cas(w: &AtomicU64, old: u64, new: u64) -> bool;
    /// Fetch-and-add (wrapping); returns the previous value.
    fn add(w: &AtomicU64, v: u64) -> u64;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Shared {}
    impl Sealed for super::CpuLocal {}
}

/// Writers may run on any CPU or thread at once, and flushes may come from
/// anywhere: every operation is a locked atomic.
#[derive(Clone, Copy, Debug)]
pub struct Shared;

/// Every write and flush of the buffer runs on one CPU (in the kernel, with
/// preemption disabled) or one thread, concurrent only by nesting
/// (interrupts, NMIs, signal handlers): the producer words need only
/// per-CPU atomicity, like the kernel's `local_t`, which on x86-64 saves the
/// bus lock on both atomics of every record. Breaking that rule can lose or
/// corrupt records and counts, never memory safety.
#[derive(Clone, Copy, Debug)]
pub struct CpuLocal;

impl Sharing for Shared {
    #[inline(always)]
    fn cas(w: &AtomicU64, old: u64, new: u64) -> bool {
        w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
    #[inline(always)]
    fn add(w: &AtomicU64, v: u64) -> u64 {
        w.fetch_add(v, Ordering::AcqRel)
    }
}

impl Sharing for CpuLocal {
    #[inline(always)]
    fn cas(w: &AtomicU64, old: u64, new: u64) -> bool {
        crate::mem::local_cas(w, old, new)
    }
    #[inline(always)]
    fn add(w: &AtomicU64, v: u64) -> u64 {
        crate::mem::local_add(w, v)
    }
}

const HDR: u64 = SUBBUF_HEADER_SIZE as u64;

/// Orders a writer's stores into a sub-buffer after the seal change that
/// took its slot (`Opening`, by this writer or, through the head, by the
/// opener). Snapshot readers copy sealed sub-buffers without owning them and
/// re-check the seal after an acquire fence (a seqlock): this release fence
/// is what makes a copy that saw any new byte also see the seal change. On
/// x86-64 it is a compiler barrier only.
#[inline(always)]
fn data_after_claim() {
    fence(Ordering::Release);
}

/// The largest payload [`Writer::write`] copies inline.
#[cfg(not(loom))]
const SMALL_COPY: usize = 64;

/// Copies `n` bytes from `src` to `dst` with two or four unaligned loads
/// and stores of 8 or 16 bytes, overlapping in the middle: a small record's
/// copy without a call (a call to `memcpy` makes the writer's fast path
/// save and restore registers around it).
///
/// # Safety
///
/// `8 <= n <= SMALL_COPY`; `src` is valid for `n` bytes of reads and `dst`
/// for `n` bytes of writes, and they do not overlap.
#[cfg(not(loom))]
#[inline(always)]
unsafe fn copy_small(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: every access is at an offset `k` of `src` or `dst` with
    // `k + width <= n` (`k = 0`, `16`, or `n - width`, with `width <= n`
    // as each branch tests), inside what the caller gave.
    unsafe {
        if n <= 16 {
            let a = src.cast::<u64>().read_unaligned();
            let z = src.add(n.wrapping_sub(8)).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n.wrapping_sub(8)).cast::<u64>().write_unaligned(z);
        } else if n <= 32 {
            let a = src.cast::<u128>().read_unaligned();
            let z = src.add(n.wrapping_sub(16)).cast::<u128>().read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(n.wrapping_sub(16))
                .cast::<u128>()
                .write_unaligned(z);
        } else {
            let a = src.cast::<u128>().read_unaligned();
            let b = src.add(16).cast::<u128>().read_unaligned();
            let y = src.add(n.wrapping_sub(32)).cast::<u128>().read_unaligned();
            let z = src.add(n.wrapping_sub(16)).cast::<u128>().read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(16).cast::<u128>().write_unaligned(b);
            dst.add(n.wrapping_sub(32))
                .cast::<u128>()
                .write_unaligned(y);
            dst.add(n.wrapping_sub(16))
                .cast::<u128>()
                .write_unaligned(z);
        }
    }
}

/// Why a record was not written. Each refusal is counted in the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The payload is larger than [`crate::Geometry::max_payload`].
    TooBig,
    /// No sub-buffer was free: the reader is behind (no-overwrite), or the
    /// next slot is still held by an interrupted write.
    Full,
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WriteError::TooBig => "payload: larger than one sub-buffer can hold",
            WriteError::Full => "buffer full: no free sub-buffer",
        })
    }
}

/// What a commit (or flush) did that a caller may need to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Committed {
    /// The sub-buffer this commit sealed, if any: readers waiting for data
    /// can be woken (from a context where waking is allowed). A seal made
    /// while reserving is not reported here: see [`Self::sealed_previous`].
    pub sealed: Option<u64>,
    /// Whether the reservation sealed the sub-buffer before this record's
    /// (see [`Grant::sealed_previous`]). [`Writer::write`] reports it;
    /// [`Grant::commit`] cannot and leaves it false: ask the grant.
    pub sealed_previous: bool,
}

impl Committed {
    /// Whether a sub-buffer became readable: wake waiting readers.
    pub fn sealed_any(&self) -> bool {
        self.sealed.is_some() || self.sealed_previous
    }
}

/// The result of a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flushed {
    /// Every record reserved on this CPU after the flush has a timestamp at
    /// least this; every record reserved before it is in a closed sub-buffer.
    pub barrier: u64,
    /// The sub-buffer the flush closed, if one was open.
    pub closed: Option<u64>,
    /// The first sub-buffer that can hold a record reserved after the flush:
    /// once a reader has consumed every sub-buffer before it, this CPU holds
    /// nothing older than `barrier`.
    pub next: u64,
    /// The sub-buffer the flush sealed, if its last commit had already landed.
    pub sealed: Option<u64>,
}

/// A writer for one CPU's buffer. Cheap to copy; holds no state of its own,
/// so any number of them (nested contexts, and with [`Shared`] threads) may
/// write at once.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a, S: Sharing = Shared> {
    b: CpuBuffer<'a>,
    sharing: core::marker::PhantomData<S>,
}

/// Space reserved for one record. Write the payload, then [`Grant::commit`].
/// A grant dropped without commit is committed as a discarded record, so
/// its sub-buffer still seals.
#[derive(Debug)]
pub struct Grant<'w, 'a, S: Sharing = Shared> {
    writer: &'w Writer<'a, S>,
    /// The record's words: the 16-byte header, then the payload padded to
    /// whole words (`record_total / 8` words; empty only if a corrupt
    /// detached grant pointed outside the buffer).
    record: &'a [AtomicU64],
    /// Its slot's commit word (None only in that corrupt case).
    commit: Option<&'a AtomicU64>,
    /// The sub-buffer holding the record.
    seq: u64,
    /// Byte offset of the record in its sub-buffer.
    off: u64,
    total: u64,
    payload_len: usize,
    ts: u64,
    opened: bool,
    done: bool,
}

/// A reservation held where a [`Grant`]'s borrow cannot go: across the
/// kernel's BPF reserve and commit kfuncs, between which a program fills the
/// payload in place. Plain data. [`Writer::attach`] turns it back into a grant
/// on the writer that reserved it, once: until then its sub-buffer cannot
/// seal, and attaching it twice or to another writer corrupts that buffer's
/// records and counts (never memory; every index is checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detached {
    seq: u64,
    off: u64,
    total: u64,
    payload_len: usize,
    ts: u64,
    opened: bool,
}

impl<'a, S: Sharing> Writer<'a, S> {
    pub(crate) fn new(b: CpuBuffer<'a>) -> Self {
        Writer {
            b,
            sharing: core::marker::PhantomData,
        }
    }

    /// The CPU whose buffer this writes.
    pub fn cpu(&self) -> u32 {
        self.b.cpu
    }

    /// Counts `lost` records as lost before the next record this CPU
    /// writes: for a producer that dropped records itself, or one that
    /// re-writes a stream with its loss reports (a snapshot file). Readers
    /// report them with the first record of the next sub-buffer opened
    /// (flush first to place them right before the next record), or at the
    /// end of the stream.
    pub fn count_lost(&self, lost: &crate::reader::Lost) {
        for (index, n) in [
            (producer::LOST_FULL, lost.full),
            (producer::LOST_TOO_BIG, lost.too_big),
            (producer::LOST_OVERWRITE, lost.overwrite),
        ] {
            if n > 0 {
                self.bump(index, n);
            }
        }
    }

    fn bump(&self, index: usize, by: u64) {
        if let Some(w) = self.b.producer_word(index) {
            S::add(w, by);
        }
    }

    #[cold]
    fn refuse(&self, e: WriteError) -> WriteError {
        self.bump(
            match e {
                WriteError::TooBig => producer::LOST_TOO_BIG,
                WriteError::Full => producer::LOST_FULL,
            },
            1,
        );
        e
    }

    /// Reserves room for a record of `payload_len` bytes. `clock` is called
    /// once per attempt; the record gets the time of the attempt that won.
    /// A refusal counts the record lost (`lost_full`, `lost_too_big`).
    #[inline]
    pub fn reserve(
        &self,
        payload_len: usize,
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Grant<'_, 'a, S>, WriteError> {
        self.reserve_counting::<true>(payload_len, clock)
    }

    /// [`Self::reserve`] that counts nothing when it refuses: for a
    /// producer that waits for room and tries again, and counts the record
    /// lost itself ([`Self::count_lost`]) if it gives up.
    #[inline]
    pub fn try_reserve(
        &self,
        payload_len: usize,
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Grant<'_, 'a, S>, WriteError> {
        self.reserve_counting::<false>(payload_len, clock)
    }

    /// A refusal, counted if `COUNT`.
    #[inline(always)]
    fn refused<const COUNT: bool>(&self, e: WriteError) -> WriteError {
        if COUNT {
            self.refuse(e)
        } else {
            e
        }
    }

    /// The fast path: the record fits the open sub-buffer and nothing but
    /// the head moves. Everything else (opening a sub-buffer, the policy,
    /// reclaim, refusals) is [`Self::reserve_slow`], out of line.
    #[inline(always)]
    fn reserve_counting<const COUNT: bool>(
        &self,
        payload_len: usize,
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Grant<'_, 'a, S>, WriteError> {
        let b = &self.b;
        let head = b.head.load(Ordering::Acquire);
        let ts = clock();
        if let Some(total) = record_total(payload_len) {
            // `total < 2^32`: the cast is lossless.
            let total = total as u64;
            if let Some(pos) = self.claim(head, total) {
                let grant = Grant::new(
                    self,
                    head.wrapping_shr(b.shift),
                    pos,
                    total,
                    payload_len,
                    ts,
                    false,
                );
                grant.mark();
                return Ok(grant);
            }
        }
        self.reserve_slow::<COUNT>(payload_len, clock)
    }

    /// The fast path's claim: if `head` is open with room for `total` more
    /// bytes and the head word still holds it, moves the head past the
    /// record and returns the record's byte position in the CPU's data,
    /// with `pos + total <= data.len() * 8`.
    ///
    /// That bound holds for any `head`, even one a hostile process wrote:
    /// `room_mask` is non-zero only when `count` is a power of two, and then
    /// `pos = head & data_mask` (a multiple of 8) has offset bits at most
    /// `o = head & room_mask`, with `o + total <= size` (`has_room`), above
    /// a multiple of `size` below `count * size`, which is `data`'s length
    /// in bytes.
    #[inline(always)]
    fn claim(&self, head: u64, total: u64) -> Option<u64> {
        let b = &self.b;
        if Head::has_room(head, b.room_mask, total)
            && S::cas(b.head, head, head.wrapping_add(total))
        {
            // Our stores into the sub-buffer come after whoever opened it
            // took the slot (see `data_after_claim`).
            data_after_claim();
            return Some(head & b.data_mask);
        }
        None
    }

    /// Reserves when the fast path cannot: the record opens the next
    /// sub-buffer (closing this one), is too big, or an interrupting write
    /// moved the head first.
    #[cold]
    #[inline(never)]
    fn reserve_slow<const COUNT: bool>(
        &self,
        payload_len: usize,
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Grant<'_, 'a, S>, WriteError> {
        let b = &self.b;
        let size = b.size();
        let total = match record_total(payload_len) {
            Some(t) if t as u64 <= size - HDR => t as u64,
            _ => return Err(self.refused::<COUNT>(WriteError::TooBig)),
        };
        // The sub-buffer whose slot this call took (seal `Opening`), if any.
        let mut owned: Option<u64> = None;
        loop {
            let head = b.head.load(Ordering::Acquire);
            let ts = clock();
            let (target, closing) = match Head::decode(head, b.shift) {
                Head::Open { seq, off } if off + total <= size => {
                    let new = head.wrapping_add(total);
                    if S::cas(b.head, head, new) {
                        // Our stores into the sub-buffer come after whoever
                        // opened it took the slot (see `data_after_claim`).
                        data_after_claim();
                        if let Some(stale) = owned {
                            self.release_slot(stale);
                        }
                        let grant = Grant::locate(self, seq, off, total, payload_len, ts, false);
                        grant.mark();
                        return Ok(grant);
                    }
                    continue;
                }
                Head::Open { seq, off } => (seq.wrapping_add(1), Some((seq, off))),
                Head::Closed { next, .. } => (next, None),
            };
            if owned != Some(target) {
                if let Some(stale) = owned.take() {
                    self.release_slot(stale);
                }
                if let Err(e) = self.acquire_slot(target) {
                    if b.head.load(Ordering::Acquire) != head {
                        // Our view of the head was stale (an interrupt wrote
                        // meanwhile): decide again from the new head.
                        continue;
                    }
                    return Err(self.refused::<COUNT>(e));
                }
                owned = Some(target);
            }
            let new = Head::Open {
                seq: target,
                off: HDR + total,
            }
            .encode(b.shift);
            if !S::cas(b.head, head, new) {
                continue;
            }
            data_after_claim();
            let grant = Grant::locate(self, target, HDR, total, payload_len, ts, true);
            grant.mark();
            if let Some((seq, off)) = closing {
                // Sealing here is possible (everyone else committed already);
                // no commit reports it: callers that wake readers ask
                // `Grant::sealed_previous` (off the hot path).
                let _ = self.close(seq, off, ts, 0);
            }
            self.write_subbuf_header(target, ts);
            return Ok(grant);
        }
    }

    /// Reserves, copies `payload` and commits: one record of type `rtype`.
    /// The returned [`Committed`] reports every seal the write made, the
    /// reservation's included: a caller that wakes readers needs nothing
    /// else.
    #[inline]
    pub fn write(
        &self,
        rtype: u16,
        payload: &[u8],
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Committed, WriteError> {
        self.write_counting::<true>(rtype, payload, clock)
    }

    /// [`Self::write`] with [`Self::try_reserve`]: a refused record is not
    /// counted lost (the caller retries, or counts it).
    #[inline]
    pub fn try_write(
        &self,
        rtype: u16,
        payload: &[u8],
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Committed, WriteError> {
        self.write_counting::<false>(rtype, payload, clock)
    }

    /// The whole write of a record that fits the open sub-buffer, straight
    /// line: claim, mark, copy (payloads of 8 to [`SMALL_COPY`] bytes
    /// inline, others with `memcpy`), header, commit. Anything else is
    /// [`Self::write_slow`]. Under loom, which models atomics only, every
    /// write takes the grant path with word stores.
    #[inline(always)]
    fn write_counting<const COUNT: bool>(
        &self,
        rtype: u16,
        payload: &[u8],
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Committed, WriteError> {
        #[cfg(loom)]
        return self.write_slow::<COUNT>(rtype, payload, clock);
        #[cfg(not(loom))]
        {
            let b = &self.b;
            let len = payload.len();
            let head = b.head.load(Ordering::Acquire);
            let ts = clock();
            // A slice holds at most `isize::MAX` bytes: this does not wrap, and
            // a payload too big for a sub-buffer fails `claim`'s room test.
            let total = (len as u64)
                .wrapping_add((RECORD_HEADER_SIZE + crate::format::RECORD_ALIGN - 1) as u64)
                & !(crate::format::RECORD_ALIGN as u64 - 1);
            let Some(pos) = self.claim(head, total) else {
                return self.write_slow::<COUNT>(rtype, payload, clock);
            };
            // `claim`: `total <= size <= 2^30`, so `len` fits the `u32`.
            let len_field = (len as u32).wrapping_add(RECORD_HEADER_SIZE as u32);
            // `pos < count * size`: the slot is below `count`, the cast lossless.
            let slot = pos.wrapping_shr(b.shift) as usize;
            let add = Commit::RECORD.wrapping_add(total);
            // `total / 8 >= 2` words: the header's two and `ceil(len / 8)`.
            let words = (total >> 3) as usize;
            // SAFETY: `claim` returned `pos` with `pos + total <= data.len() * 8`
            // (its doc says why, for any head) and `pos % 8 == 0`, so the
            // record's `words` words from `data[pos / 8]` exist, and
            // `1 <= words - 1`. The CAS on the head gave them to this call
            // alone: no writer stores to them. An `AtomicU64` may be written
            // through its pointer. Readers: in
            // no-overwrite mode none reads them before the seal this commit
            // makes possible. In overwrite mode a copying reader may read them
            // while this runs, by design: it copied a slot a reclaiming writer
            // took back, and its later check (the seal's round, or the claim
            // CAS) fails, so it discards the torn copy (`Grant::copy_payload`).
            // `copy_small`'s contract: `8 <= len <= SMALL_COPY` is tested, and
            // the payload words hold at least `len` bytes.
            unsafe {
                let record = b.data.as_ptr().byte_add(pos as usize);
                let w0 = &*record;
                w0.store(
                    RecordHeader::word0(len_field, 0, crate::format::record_flags::RESERVED),
                    Ordering::Relaxed,
                );
                // Zero padding, which the copy then overwrites where the payload
                // reaches; for an empty payload this is the time's word, stored
                // next.
                (*record.add(words - 1)).store(0, Ordering::Relaxed);
                (*record.add(1)).store(ts, Ordering::Relaxed);
                let src = payload.as_ptr();
                let dst = record.add(2).cast::<u8>().cast_mut();
                if (8..=SMALL_COPY).contains(&len) {
                    copy_small(src, dst, len);
                } else {
                    core::ptr::copy_nonoverlapping(src, dst, len);
                }
                w0.store(RecordHeader::word0(len_field, rtype, 0), Ordering::Relaxed);
            }
            // SAFETY: `commits` has `count` words (`CpuBuffer`), and `slot < count`.
            let commit = unsafe { b.commits.get_unchecked(slot) };
            let now = S::add(commit, add).wrapping_add(add);
            // Only a closed sub-buffer can be complete: one test of the top bit.
            if now & Commit::CLOSED != 0 {
                return Ok(self.seal_slot_if_complete(slot, now));
            }
            Ok(Committed::default())
        }
    }

    /// [`Self::write`] through a grant: for a record that opens a
    /// sub-buffer, is refused, or lost the head to an interrupting write.
    #[cold]
    #[inline(never)]
    fn write_slow<const COUNT: bool>(
        &self,
        rtype: u16,
        payload: &[u8],
        clock: &mut impl FnMut() -> u64,
    ) -> Result<Committed, WriteError> {
        // Not `reserve_counting`: its fast path just failed here (under
        // loom, it has not run; the slow path serves every case).
        let grant = self.reserve_slow::<COUNT>(payload.len(), clock)?;
        Ok(grant.fill_and_commit(rtype, payload))
    }

    /// Turns a [`Grant::detach`]ed reservation of this writer back into a
    /// grant, to commit or discard it.
    pub fn attach(&self, d: Detached) -> Grant<'_, 'a, S> {
        Grant::locate(self, d.seq, d.off, d.total, d.payload_len, d.ts, d.opened)
    }

    /// Counts a record that its caller refused before reserving (a limit of
    /// its own, such as no room to hold one more detached grant) as lost to
    /// a full buffer, so the accounting stays exact.
    pub fn count_refused(&self) {
        let _ = self.refuse(WriteError::Full);
    }

    /// Whether sub-buffer `seq` is sealed (readable) now.
    pub fn is_sealed(&self, seq: u64) -> bool {
        let b = &self.b;
        b.seals
            .get(b.slot(seq))
            .is_some_and(|w| Seal::decode(w.load(Ordering::Acquire)) == Seal::Sealed(seq))
    }

    /// Where this buffer's writers are: an opaque value that changes with
    /// every reservation and flush, and whether a sub-buffer is open (it
    /// holds records no reader gets until it fills or is flushed). What a
    /// switch timer asks: an open sub-buffer whose position did not move
    /// for a while belongs to a producer gone quiet.
    pub fn progress(&self) -> (u64, bool) {
        let head = self.b.head.load(Ordering::Acquire);
        (
            head,
            matches!(Head::decode(head, self.b.shift), Head::Open { .. }),
        )
    }

    /// Closes the open sub-buffer, if any, so readers get it without waiting
    /// for it to fill. Safe to call from any CPU, concurrently with writers.
    pub fn flush(&self, clock: &mut impl FnMut() -> u64) -> Flushed {
        let b = &self.b;
        loop {
            let head = b.head.load(Ordering::Acquire);
            let ts = clock();
            let (new, closing) = match Head::decode(head, b.shift) {
                Head::Open { seq, off } => (
                    Head::Closed {
                        next: seq.wrapping_add(1),
                        epoch: 0,
                    },
                    Some((seq, off)),
                ),
                // Nothing to close, but still move the head so that a writer
                // that read the clock before this flush retries (see `Flushed`).
                Head::Closed { next, epoch } => (
                    Head::Closed {
                        next,
                        epoch: epoch.wrapping_add(1),
                    },
                    None,
                ),
            };
            let new = new.encode(b.shift);
            if !S::cas(b.head, head, new) {
                continue;
            }
            let (closed, sealed) = match closing {
                Some((seq, off)) => (
                    Some(seq),
                    self.close(seq, off, ts, close_flags::FLUSHED).sealed,
                ),
                None => (None, None),
            };
            let next = match Head::decode(new, b.shift) {
                Head::Closed { next, .. } => next,
                Head::Open { seq, .. } => seq,
            };
            return Flushed {
                barrier: ts,
                closed,
                next,
                sealed,
            };
        }
    }

    /// Takes the slot for sub-buffer `target`, or says why it cannot.
    #[cold]
    #[inline(never)]
    fn acquire_slot(&self, target: u64) -> Result<(), WriteError> {
        let b = &self.b;
        let slot = b.slot(target);
        let (Some(seal_word), Some(commit_word)) = (b.seals.get(slot), b.commits.get(slot)) else {
            return Err(WriteError::Full);
        };
        let seal = Seal::decode(seal_word.load(Ordering::Acquire));
        let consumed = match b.mode {
            Mode::NoOverwrite => b
                .consumer_word(consumer::CONSUMED)
                .map_or(0, |w| w.load(Ordering::Acquire)),
            Mode::Overwrite => 0,
        };
        if !may_open(b.mode, target, b.count, seal, consumed) {
            return Err(WriteError::Full);
        }
        if !S::cas(seal_word, seal.encode(), Seal::Opening(target).encode()) {
            return Err(WriteError::Full);
        }
        if let (Mode::Overwrite, Seal::Sealed(previous)) = (b.mode, seal) {
            self.reclaim(
                previous,
                Commit::records(commit_word.load(Ordering::Relaxed)),
            );
        }
        commit_word.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back a slot this writer took but no longer needs. Only a head
    /// changed by someone outside the protocol gets here.
    #[cold]
    fn release_slot(&self, target: u64) {
        let b = &self.b;
        if let Some(w) = b.seals.get(b.slot(target)) {
            S::cas(
                w,
                Seal::Opening(target).encode(),
                required_seal(target, b.count).encode(),
            );
        }
    }

    /// Overwrite mode: sealed sub-buffer `previous` (holding `records`) is
    /// about to be reused. Push the consumer past it if it is unread.
    fn reclaim(&self, previous: u64, records: u32) {
        let Some(consumed) = self.b.consumer_word(consumer::CONSUMED) else {
            return;
        };
        for _ in 0..RECLAIM_ATTEMPTS {
            let c = consumed.load(Ordering::Acquire);
            let Some(to) = reclaim_push(previous, c) else {
                return;
            };
            if consumed
                .compare_exchange(c, to, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        }
        // Pushed, or a hostile reader kept moving the position: count once.
        self.bump(producer::LOST_OVERWRITE, records.into());
    }

    #[cold]
    fn write_subbuf_header(&self, seq: u64, ts: u64) {
        let b = &self.b;
        let words = b.subbuf_words(b.slot(seq));
        let fields = [
            (subbuf::SEQ, seq),
            (subbuf::CPU_FLAGS, u64::from(b.cpu)),
            (subbuf::TS_BEGIN, ts),
            (subbuf::LOST_FULL, b.load(producer::LOST_FULL)),
            (subbuf::LOST_TOO_BIG, b.load(producer::LOST_TOO_BIG)),
            (subbuf::LOST_OVERWRITE, b.load(producer::LOST_OVERWRITE)),
        ];
        for (index, value) in fields {
            if let Some(w) = words.get(index) {
                w.store(value, Ordering::Relaxed);
            }
        }
    }

    /// Closes sub-buffer `seq` with `off` bytes of content.
    #[cold]
    fn close(&self, seq: u64, off: u64, ts: u64, flags: u32) -> Committed {
        let b = &self.b;
        let slot = b.slot(seq);
        let words = b.subbuf_words(slot);
        if let Some(w) = words.get(subbuf::TS_END) {
            w.store(ts, Ordering::Relaxed);
        }
        if let Some(w) = words.get(subbuf::CONTENT) {
            w.store(off | u64::from(flags) << 32, Ordering::Relaxed);
        }
        self.commit_add(
            seq,
            b.commits.get(slot),
            Commit::CLOSED.wrapping_add(b.size().wrapping_sub(off)),
        )
    }

    /// Adds `add` to commit word `w` (of `seq`'s slot); seals `seq` if
    /// that completed it.
    #[inline(always)]
    fn commit_add(&self, seq: u64, w: Option<&AtomicU64>, add: u64) -> Committed {
        let Some(w) = w else {
            return Committed::default();
        };
        let now = S::add(w, add).wrapping_add(add);
        // Only a closed sub-buffer can be complete: one test of the top bit
        // on the hot path.
        if now & Commit::CLOSED != 0 {
            return self.seal_if_complete(seq, now);
        }
        Committed::default()
    }

    /// Seals sub-buffer `seq` if commit word value `now` says it is complete.
    #[cold]
    #[inline(never)]
    fn seal_if_complete(&self, seq: u64, now: u64) -> Committed {
        if Commit::is_complete(now, self.b.size()) {
            let slot = self.b.slot(seq);
            // What the native fast path relies on to name the sub-buffer it
            // completed from its slot alone (`seal_slot_if_complete`).
            #[cfg(loom)]
            assert_eq!(
                self.b
                    .seals
                    .get(slot)
                    .map(|w| Seal::decode(w.load(Ordering::Acquire))),
                Some(Seal::Opening(seq)),
                "a completing commit finds its slot's seal Opening(seq)"
            );
            return self.seal_records(seq, slot, Commit::records(now), 0);
        }
        Committed::default()
    }

    /// [`Self::seal_if_complete`] for the sub-buffer in slot `slot`, which
    /// the slot's seal word names: `Opening(seq)` from the moment its
    /// opener took the slot (before the head moved into it, so every writer
    /// that reserved in it sees that) until it is sealed, which only the
    /// commit that completes it does. The fast path keeps one value fewer
    /// for it. Any other seal word is a hostile process's: nothing sealed.
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn seal_slot_if_complete(&self, slot: usize, now: u64) -> Committed {
        let seal = self.b.seals.get(slot).map(|w| w.load(Ordering::Acquire));
        match seal.map(Seal::decode) {
            Some(Seal::Opening(seq)) => self.seal_if_complete(seq, now),
            _ => Committed::default(),
        }
    }

    /// [`Self::seal`], with the records a repair counted abandoned.
    fn seal_records(&self, seq: u64, slot: usize, records: u32, abandoned: u32) -> Committed {
        let b = &self.b;
        if let Some(w) = b.subbuf_words(slot).get(subbuf::RECORDS) {
            w.store(
                u64::from(records) | u64::from(abandoned) << 32,
                Ordering::Relaxed,
            );
        }
        self.bump(producer::PRODUCED, records.into());
        self.bump(producer::SEALED_SUBBUFS, 1);
        if let Some(seal) = b.seals.get(slot) {
            seal.store(Seal::Sealed(seq).encode(), Ordering::Release);
        }
        crate::wake::after_seal(b);
        Committed {
            sealed: Some(seq),
            sealed_previous: false,
        }
    }
}

impl<'w, 'a, S: Sharing> Grant<'w, 'a, S> {
    /// The grant for the record at byte `pos` of the CPU's data (slot
    /// `pos >> shift`), in sub-buffer `seq`.
    #[inline(always)]
    fn new(
        writer: &'w Writer<'a, S>,
        seq: u64,
        pos: u64,
        total: u64,
        payload_len: usize,
        ts: u64,
        opened: bool,
    ) -> Self {
        let b = &writer.b;
        // `pos < count << shift <= 2^62` bytes of a slice that exists:
        // the casts are lossless, the word range below does not overflow.
        let at = (pos >> 3) as usize;
        let record = b.data.get(at..at + (total >> 3) as usize).unwrap_or(&[]);
        Grant {
            writer,
            record,
            commit: b.commits.get(pos.wrapping_shr(b.shift) as usize),
            seq,
            off: pos & b.size().wrapping_sub(1),
            total,
            payload_len,
            ts,
            opened,
            done: false,
        }
    }

    /// The grant for the record at offset `off` of sub-buffer `seq`.
    fn locate(
        writer: &'w Writer<'a, S>,
        seq: u64,
        off: u64,
        total: u64,
        payload_len: usize,
        ts: u64,
        opened: bool,
    ) -> Self {
        let b = &writer.b;
        // `slot < count`, `off < size`: the position is inside the data.
        let pos = ((b.slot(seq) as u64) << b.shift) | (off & b.size().wrapping_sub(1));
        Self::new(writer, seq, pos, total, payload_len, ts, opened)
    }

    /// Marks the reservation (see `record_flags::RESERVED`): the first
    /// store after the head CAS.
    #[inline(always)]
    fn mark(&self) {
        if let Some(w) = self.record.first() {
            w.store(
                RecordHeader::word0(self.len_field(), 0, crate::format::record_flags::RESERVED),
                Ordering::Relaxed,
            );
        }
    }

    /// The header's `len`: the payload is at most a sub-buffer, so
    /// `payload_len + 16` fits a `u32`.
    #[inline(always)]
    fn len_field(&self) -> u32 {
        (self.payload_len as u32).wrapping_add(RECORD_HEADER_SIZE as u32)
    }

    /// The record's timestamp.
    pub fn ts(&self) -> u64 {
        self.ts
    }

    /// Payload bytes reserved.
    pub fn len(&self) -> usize {
        self.payload_len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload_len == 0
    }

    /// Sequence number of the sub-buffer holding this record.
    pub fn subbuf_seq(&self) -> u64 {
        self.seq
    }

    /// Whether this record opened its sub-buffer: its reservation closed
    /// the previous one, and usually sealed it too (see
    /// [`Grant::sealed_previous`]).
    pub fn opened_subbuf(&self) -> bool {
        self.opened
    }

    /// Whether this reservation closed the sub-buffer before it and that
    /// one is sealed now: a seal no commit reports, which writers that wake
    /// readers ask about here. Costs a load only for a record that opened
    /// its sub-buffer.
    #[inline]
    pub fn sealed_previous(&self) -> bool {
        self.opened && self.writer.is_sealed(self.seq.wrapping_sub(1))
    }

    /// Where the payload starts, for callers that fill it in place through
    /// a raw pointer (a BPF program): valid for [`Grant::len`] bytes, 8-byte
    /// aligned, until the grant is committed or discarded. None when the
    /// payload is empty.
    #[cfg(not(loom))]
    pub fn payload_ptr(&mut self) -> Option<core::ptr::NonNull<u8>> {
        if self.payload_len == 0 {
            return None;
        }
        let w = self.record.get(RECORD_HEADER_SIZE / 8)?;
        core::ptr::NonNull::new(w.as_ptr().cast::<u8>())
    }

    /// Releases the grant's borrow, leaving the record reserved: see
    /// [`Detached`].
    pub fn detach(mut self) -> Detached {
        self.done = true;
        Detached {
            seq: self.seq,
            off: self.off,
            total: self.total,
            payload_len: self.payload_len,
            ts: self.ts,
            opened: self.opened,
        }
    }

    /// The payload's words (the record's after its header).
    #[inline(always)]
    fn payload_words(&self) -> &'a [AtomicU64] {
        self.record.get(RECORD_HEADER_SIZE / 8..).unwrap_or(&[])
    }

    /// Copies `payload` to the start of the reserved payload, zero-filling the
    /// last word, one atomic store per word (what loom can model). Bytes
    /// beyond the reservation are ignored.
    #[inline]
    pub fn write_payload(&mut self, payload: &[u8]) {
        let payload = payload.get(..self.payload_len).unwrap_or(payload);
        // Whole words, then the zero-padded tail. `as_chunks` splits with
        // shifts (`chunks_exact` divides, and the kernel's objtool flags the
        // division-by-zero panic path when it is not inlined).
        let (words, tail) = payload.as_chunks::<8>();
        let mut dst = self.payload_words().iter();
        for (chunk, w) in words.iter().zip(&mut dst) {
            w.store(u64::from_le_bytes(*chunk), Ordering::Relaxed);
        }
        if !tail.is_empty() {
            let mut a = [0u8; 8];
            a[..tail.len()].copy_from_slice(tail);
            if let Some(w) = dst.next() {
                w.store(u64::from_le_bytes(a), Ordering::Relaxed);
            }
        }
    }

    /// As [`Grant::write_payload`], with one `memcpy` (plain stores) for
    /// the payload after zero-filling its last word: what [`Writer::write`]
    /// does, and what a caller filling a grant itself should do. Not under
    /// loom, which models atomics only.
    ///
    /// Plain stores are sound because no reader looks at a reservation
    /// before its sub-buffer seals, except a copying reader in overwrite
    /// mode (a snapshot, or a consumer behind a reclaiming writer), which
    /// races with the writer by design: it copies a sealed sub-buffer and
    /// then re-checks the seal (or its claim CAS fails) and discards the
    /// copy if a writer reopened the slot meanwhile, so a torn copy is never
    /// delivered (FORMAT.md, "Reading in overwrite mode").
    #[cfg(not(loom))]
    #[inline]
    pub fn copy_payload(&mut self, payload: &[u8]) {
        let payload = payload.get(..self.payload_len).unwrap_or(payload);
        let dst = self.payload_words();
        if payload.len() > dst.len() * 8 {
            return; // only a corrupt detached grant has a short record
        }
        if !payload.len().is_multiple_of(8) {
            if let Some(last) = dst.get(payload.len() / 8) {
                // The tail word, zero-filled, before the copy writes its bytes.
                last.store(0, Ordering::Relaxed);
            }
        }
        // SAFETY: `dst` is this grant's reservation, at least
        // `payload.len()` bytes (checked above), which no other writer
        // writes (the CAS on the head gave it to this grant alone); an
        // `AtomicU64` may be written through its pointer. Readers: in
        // no-overwrite mode none reads it before the seal this grant's
        // commit makes possible. In overwrite mode a copying reader may read
        // it while this write runs, by design: that reader copied a slot a
        // reclaiming writer took back, and its later check (the seal's
        // round, or the claim CAS) fails, so it discards the torn copy. That
        // race is a seqlock's (a data race in Rust's model, on memory the
        // reader treats as hostile bytes anyway): no byte of it is used.
        unsafe {
            core::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                dst.as_ptr().cast::<u8>().cast_mut(),
                payload.len(),
            )
        };
    }

    /// Copies `bytes` to payload offset `offset`. Returns false (writing
    /// nothing) if that range is outside the reservation.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> bool {
        match offset.checked_add(bytes.len()) {
            Some(end) if end <= self.payload_len => {}
            _ => return false,
        }
        let words = self.payload_words();
        for (i, &byte) in bytes.iter().enumerate() {
            let pos = offset + i;
            if let Some(w) = words.get(pos / 8) {
                // This word is inside our reservation: no one else stores to it.
                let shift = (pos % 8) * 8;
                let old = w.load(Ordering::Relaxed);
                let new = (old & !(0xff << shift)) | u64::from(byte) << shift;
                w.store(new, Ordering::Relaxed);
            }
        }
        true
    }

    #[inline(always)]
    fn finish(&mut self, rtype: u16, flags: u16, records: u64) -> Committed {
        self.done = true;
        if let [w0, w1, ..] = self.record {
            w0.store(
                RecordHeader::word0(self.len_field(), rtype, flags),
                Ordering::Relaxed,
            );
            w1.store(self.ts, Ordering::Relaxed);
        }
        // A record and its sub-buffer's header are at most `size <= 2^30`
        // bytes: nothing wraps.
        let bytes = if self.opened {
            self.total.wrapping_add(HDR)
        } else {
            self.total
        };
        self.writer
            .commit_add(self.seq, self.commit, records.wrapping_add(bytes))
    }

    /// Copies `payload` in and commits, reporting the reservation's seal
    /// too ([`Writer::write`]).
    #[inline(always)]
    fn fill_and_commit(mut self, rtype: u16, payload: &[u8]) -> Committed {
        #[cfg(not(loom))]
        self.copy_payload(payload);
        #[cfg(loom)]
        self.write_payload(payload);
        let sealed_previous = self.sealed_previous();
        Committed {
            sealed_previous,
            ..self.commit(rtype)
        }
    }

    /// Publishes the record with type `rtype`.
    #[inline]
    pub fn commit(mut self, rtype: u16) -> Committed {
        self.finish(rtype, 0, Commit::RECORD)
    }

    /// Gives the space back: readers skip it and no record is counted.
    pub fn discard(mut self) -> Committed {
        self.finish(0, crate::format::record_flags::DISCARDED, 0)
    }
}

impl<S: Sharing> Drop for Grant<'_, '_, S> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish(0, crate::format::record_flags::DISCARDED, 0);
        }
    }
}
