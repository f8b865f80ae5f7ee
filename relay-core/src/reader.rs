//! The reader: finds the next sealed sub-buffer of one CPU, validates it,
//! hands it out (in place or as a copy), and advances the consumer position.
//!
//! Everything read from shared memory is treated as hostile: a value that
//! breaks the format is a [`ReadError`], never a panic or an out-of-bounds
//! access, and a corrupt sub-buffer is consumed so the reader moves on.
//!
//! # Protocol
//!
//! The consumer position `consumed` names the next sub-buffer to read; it is
//! ready when its slot's seal word is `Sealed(consumed)`.
//!
//! - No-overwrite: nothing writes a sealed sub-buffer until `consumed` moves
//!   past it, so the reader reads it in place ([`CpuReader::peek`]) or copies
//!   it, delivers its records, marks it done with [`CpuReader::finish`], and
//!   moves `consumed` past it when it commits.
//! - Overwrite: a writer may reclaim the sub-buffer at any time, so the reader
//!   copies it and then claims it with a CAS on `consumed`. The writer moves
//!   `consumed` with a CAS too before it reuses the slot, so if the claim
//!   succeeds the copy is intact, and if it fails the writer has counted the
//!   records as lost to overwrite and the torn copy is dropped.
//!
//! # Progress
//!
//! The consumer keeps its progress ([`Progress`]: position, resume cursor,
//! records delivered, losses reported) privately while it reads, and
//! publishes it with [`CpuReader::commit`] only once its output has accepted
//! what it delivered. Killed at any point, its successor resumes from the
//! last commit: nothing is lost, and what was delivered after that commit
//! is delivered again. The commit stores, in this order: the reported
//! losses and `consumed_records`, `consumed` (no-overwrite), `cursor_off`,
//! `cursor_seq` (release). A consumer killed between two of those stores
//! leaves a state from which its successor repeats only records delivered
//! after the previous commit: a new `consumed` with an old cursor resumes
//! at the start of the new sub-buffer, an old `consumed` keeps its old
//! cursor.
//!
//! # Recovery
//!
//! Overwrite mode claims a sub-buffer when it copies it, before its records
//! are delivered, so a consumer killed after a claim and before its commit
//! leaves claimed sub-buffers no writer counts lost and no claim reaches
//! again. The consumer adds each claimed sub-buffer's record count to
//! `claimed_records` right after the claim; a successor that finds the
//! committed cursor before the claim position owes `claimed_records -
//! consumed_records - lost_claimed` records. It re-reads those sub-buffers
//! like a snapshot (seal, copy, fence, seal), delivers the intact ones,
//! and reports what it owes and did not find as overwritten, counted in
//! `lost_claimed` when it commits (docs/FORMAT.md, "Recovery").
//!
//! One *consumer* per CPU buffer at a time: the cursor and the reported-loss
//! baseline live in the consumer state, not in the reader. Who may consume
//! is decided outside this crate (an open-file-description lock in
//! userspace, the open file in the kernel).
//!
//! # Snapshots
//!
//! A snapshot reader ([`crate::Channel::snapshot`]) changes nothing in the
//! channel: it stores no shared word, so it works on a read-only mapping,
//! and any number may run beside the consumer and the writers. It starts
//! where a consumer starting now would resume (the consumer state's
//! position, cursor and reported losses, loaded once; in overwrite mode the
//! consumer's uncommitted claims too, see "Recovery"), ends before the sub-buffer each
//! writer had open when it began (so every CPU's part ends at the same
//! moment and the merge stays in timestamp order; flush first to include
//! those), keeps its progress privately, and
//! copies every sealed sub-buffer like a seqlock reader: load the seal
//! (acquire), copy, fence (acquire), load the seal again. A writer takes a
//! slot by changing its seal before it stores anything in it (writer
//! invariant 4), so an unchanged seal proves the copy intact; a changed one
//! drops the copy and counts the sub-buffer as *overrun* (it was reused
//! while the snapshot read it), as is every sub-buffer found reused before
//! its copy began. Losses: full and too-big ones as a consumer would see
//! them, in place; in overwrite channels, the records overwritten before
//! the snapshot's first sub-buffer once, before it (later ones are the
//! overrun sub-buffers: [`CpuReader::overrun_subbufs`]).

use crate::channel::CpuBuffer;
use crate::format::{consumer, producer, FormatError, Head, Seal, SubbufView, SUBBUF_HEADER_SIZE};
use crate::geometry::Geometry;
use crate::policy::Mode;
use crate::sync::{fence, AtomicU64, Ordering};

/// Records lost, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Dropped because no sub-buffer was free.
    pub full: u64,
    /// Dropped because larger than a sub-buffer.
    pub too_big: u64,
    /// Reclaimed by the writer before any reader consumed them.
    pub overwrite: u64,
    /// Their writer died before committing them (or they sat after such a
    /// record in a sub-buffer a repair closed).
    pub abandoned: u64,
}

impl Lost {
    /// All causes together.
    pub fn total(&self) -> u64 {
        self.full
            .wrapping_add(self.too_big)
            .wrapping_add(self.overwrite)
            .wrapping_add(self.abandoned)
    }

    /// Whether nothing was lost.
    pub fn is_zero(&self) -> bool {
        *self == Lost::default()
    }

    /// Losses counted since `earlier`: zero for a cause where `earlier` is
    /// already ahead (reported at the end of a stream, or a hostile value).
    pub fn since(&self, earlier: &Lost) -> Lost {
        Lost {
            full: self.full.saturating_sub(earlier.full),
            too_big: self.too_big.saturating_sub(earlier.too_big),
            overwrite: self.overwrite.saturating_sub(earlier.overwrite),
            abandoned: self.abandoned.saturating_sub(earlier.abandoned),
        }
    }

    /// Both together.
    pub fn plus(&self, other: &Lost) -> Lost {
        Lost {
            full: self.full.wrapping_add(other.full),
            too_big: self.too_big.wrapping_add(other.too_big),
            overwrite: self.overwrite.wrapping_add(other.overwrite),
            abandoned: self.abandoned.wrapping_add(other.abandoned),
        }
    }
}

/// Why the reader could not deliver a sub-buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// Sub-buffer `seq` broke the format. It has been consumed (skipped);
    /// its records are lost, and the error says what was wrong.
    Corrupt {
        /// The sub-buffer.
        seq: u64,
        /// What was wrong.
        error: FormatError,
    },
    /// `peek` on an overwrite channel or by a snapshot: only copies are
    /// safe there.
    InPlaceNeedsNoOverwrite,
    /// The copy buffer is smaller than a sub-buffer.
    BufferTooSmall {
        /// Bytes needed (the sub-buffer size).
        need: usize,
    },
    /// Sub-buffer `seq`, read in place, changed after it was validated
    /// (only a process outside the protocol writes a sealed sub-buffer):
    /// `delivered` of its `records` records were delivered, the rest are
    /// lost.
    Changed {
        /// The sub-buffer.
        seq: u64,
        /// Records it held when validated.
        records: u64,
        /// Records delivered from it.
        delivered: u64,
    },
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReadError::Corrupt { seq, error } => write!(f, "sub-buffer {seq} skipped: {error}"),
            ReadError::InPlaceNeedsNoOverwrite => f.write_str(
                "mode: in-place reads need the consumer of a no-overwrite channel (copy instead)",
            ),
            ReadError::BufferTooSmall { need } => {
                write!(f, "buf: must hold a whole sub-buffer ({need} bytes)")
            }
            ReadError::Changed {
                seq,
                records,
                delivered,
            } => write!(
                f,
                "sub-buffer {seq} changed after it was validated: {delivered} of its {records} records delivered, {} lost",
                records.saturating_sub(*delivered)
            ),
        }
    }
}

/// A validated sub-buffer handed to the caller.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'b> {
    /// Its sequence number.
    pub seq: u64,
    /// Its header and records.
    pub view: SubbufView<'b>,
    /// Records this CPU lost since the previous delivered sub-buffer (or since
    /// the channel was created, for the first one): report them *before* this
    /// sub-buffer's records.
    pub lost_before: Lost,
    /// Byte offset of the first record not yet delivered: past the header, or
    /// where a previous reader of this sub-buffer stopped.
    pub resume: u64,
    /// Whether the reader already consumed it (overwrite mode claims as it
    /// copies); [`CpuReader::finish`] is still required and harmless.
    pub claimed: bool,
}

impl<'b> Delivery<'b> {
    /// The records not yet delivered, in order.
    pub fn records(&self) -> crate::format::Records<'b> {
        let mut records = self.view.records();
        records.seek(self.resume);
        records
    }
}

/// Per-CPU statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Records in sealed sub-buffers: all a reader can ever get.
    pub produced: u64,
    /// Records lost, by cause.
    pub lost: Lost,
    /// Sub-buffers sealed.
    pub sealed_subbufs: u64,
    /// The consumer position: sub-buffers consumed or skipped.
    pub consumed_subbufs: u64,
    /// Records delivered, as readers reported it (untrusted).
    pub consumed_records: u64,
    /// Sub-buffers sealed and not yet consumed (0 when the consumer position
    /// is past the writer, which only a hostile reader causes).
    pub ready_subbufs: u64,
    /// The sub-buffer the writer is filling, if one is open.
    pub open_seq: Option<u64>,
}

impl CpuStats {
    pub(crate) fn load(b: &CpuBuffer<'_>) -> Self {
        let consumed = load(b.consumer_word(consumer::CONSUMED));
        let sealed = b.load(producer::SEALED_SUBBUFS);
        let head = b.head.load(Ordering::Relaxed);
        CpuStats {
            produced: b.load(producer::PRODUCED),
            lost: Lost {
                full: b.load(producer::LOST_FULL),
                too_big: b.load(producer::LOST_TOO_BIG),
                overwrite: b.load(producer::LOST_OVERWRITE),
                abandoned: b.load(producer::LOST_ABANDONED),
            },
            sealed_subbufs: sealed,
            consumed_subbufs: consumed,
            consumed_records: load(b.consumer_word(consumer::CONSUMED_RECORDS)),
            ready_subbufs: sealed
                .checked_sub(consumed)
                .filter(|&n| n <= b.count.into())
                .unwrap_or(0),
            open_seq: match Head::decode(head, b.shift) {
                Head::Open { seq, .. } => Some(seq),
                Head::Closed { .. } => None,
            },
        }
    }
}

fn load(w: Option<&AtomicU64>) -> u64 {
    w.map_or(0, |w| w.load(Ordering::Acquire))
}

/// Consumer-state words holding the loss counts already reported to users.
const REPORTED_FULL: usize = 4;
const REPORTED_TOO_BIG: usize = 5;
const REPORTED_OVERWRITE: usize = 6;
const REPORTED_ABANDONED: usize = consumer::REPORTED_ABANDONED;

/// How many times [`CpuReader::next`] retries after losing a race with an
/// overwriting writer before it returns (the caller calls again later).
const OVERRUN_RETRIES: u32 = 8;

/// A reader's progress: where it is and what it delivered. A reader keeps
/// it privately while it reads; the consumer publishes it with
/// [`CpuReader::commit`] once its output has accepted what it read (see
/// "Progress"), and a snapshot never does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The next sub-buffer to read (the consumer position).
    pub next: u64,
    /// The sub-buffer `cursor_off` refers to: the first one not delivered
    /// whole.
    pub cursor_seq: u64,
    /// Bytes of sub-buffer `cursor_seq` already delivered (0: none).
    pub cursor_off: u64,
    /// Records delivered: the consumer's total (`consumed_records`), a
    /// snapshot's own.
    pub records: u64,
    /// Losses reported.
    pub reported: Lost,
    /// Overwrite mode: records of claimed sub-buffers reused before a
    /// consumer delivered them (a killed consumer's), counted lost by its
    /// successor; part of `reported.overwrite` (see "Recovery").
    pub lost_claimed: u64,
}

/// What only a snapshot keeps (see "Snapshots").
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    /// Sub-buffers reused by writers before this snapshot could copy them.
    overrun: u64,
    /// Whether a sub-buffer was delivered (the overwrite loss before the
    /// first one is reported with it).
    started: bool,
    /// The first sub-buffer not closed when the snapshot began: it reads
    /// only those before, so that what it shows of every CPU ends at the
    /// same moment and merges in timestamp order.
    end: u64,
    /// Overwrite mode: the claim position when it began. Sub-buffers
    /// before it that are gone were the consumer's (delivered or counted),
    /// not overrun by this snapshot.
    claimed: u64,
}

/// An overwrite consumer re-reading what its predecessor claimed and did
/// not commit (see "Recovery").
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// The claim position when this reader started: the first sub-buffer
    /// not claimed.
    end: u64,
    /// Records claimed and neither delivered nor counted lost.
    owed: u64,
    /// Records of the claimed sub-buffers re-read intact so far.
    recovered: u64,
}

/// Records of claimed sub-buffers found reused by a recovering consumer,
/// on their way to being reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClaimedLoss {
    None,
    /// To report with the next delivery (or at the end of the stream).
    Owed(u64),
    /// Reported in a delivery or a tail loss not yet marked reported.
    HandedOut(u64),
}

/// How many reused slots [`CpuReader::next`] skips in one call before it
/// returns (a snapshot racing fast writers; the caller calls again).
const SKIP_LIMIT: u32 = 64;

/// The reader of one CPU's buffer: its consumer, or a snapshot.
///
/// `repr(C)`, `local` first: a merge's run saves its progress there (see
/// `merge::Cursor`).
#[derive(Debug)]
#[repr(C)]
pub struct CpuReader<'a> {
    /// Where this reader is: private until [`Self::commit`].
    local: Progress,
    b: CpuBuffer<'a>,
    geometry: Geometry,
    /// The consumer: what the consumer state holds (the last commit).
    committed: Progress,
    /// `Some` for a snapshot, which never commits.
    snapshot: Option<Snapshot>,
    /// The overwrite consumer: the records of every sub-buffer consumers
    /// claimed (`claimed_records`, stored right after each claim).
    claimed: u64,
    /// `Some` while the overwrite consumer re-reads its predecessor's
    /// uncommitted claims.
    recovery: Option<Recovery>,
    claimed_loss: ClaimedLoss,
}

impl<'a> CpuReader<'a> {
    /// The consumer: resumes from the consumer state.
    pub(crate) fn new(b: CpuBuffer<'a>, geometry: Geometry) -> Self {
        let w = |i| load(b.consumer_word(i));
        let committed = Progress {
            next: w(consumer::CONSUMED),
            cursor_seq: w(consumer::CURSOR_SEQ),
            cursor_off: w(consumer::CURSOR_OFF),
            records: w(consumer::CONSUMED_RECORDS),
            reported: Lost {
                full: w(REPORTED_FULL),
                too_big: w(REPORTED_TOO_BIG),
                overwrite: w(REPORTED_OVERWRITE),
                abandoned: w(REPORTED_ABANDONED),
            },
            lost_claimed: w(consumer::LOST_CLAIMED),
        };
        let claimed = w(consumer::CLAIMED_RECORDS);
        let mut local = committed;
        // Overwrite: sub-buffers from the cursor up to the claim position
        // were claimed by a consumer that did not commit them.
        let recovery = (b.mode == Mode::Overwrite
            && is_newer(committed.next, committed.cursor_seq))
        .then(|| {
            local.next = committed.cursor_seq;
            Recovery {
                end: committed.next,
                owed: claimed
                    .saturating_sub(committed.records)
                    .saturating_sub(committed.lost_claimed),
                recovered: 0,
            }
        });
        CpuReader {
            b,
            geometry,
            local,
            committed,
            snapshot: None,
            claimed,
            recovery,
            claimed_loss: ClaimedLoss::None,
        }
    }

    /// A snapshot reader (see "Snapshots"): starts where the consumer would
    /// resume and never stores to the channel.
    pub(crate) fn new_snapshot(b: CpuBuffer<'a>, geometry: Geometry) -> Self {
        let mut r = Self::new(b, geometry);
        let claimed = r.committed.next;
        r.local = r.committed;
        r.local.records = 0;
        if r.recovery.take().is_some() {
            // Overwrite: what the consumer claimed and did not commit is
            // where a consumer starting now would resume (see "Recovery").
            r.local.next = r.committed.cursor_seq;
        }
        r.snapshot = Some(Snapshot {
            overrun: 0,
            claimed,
            started: false,
            end: match Head::decode(r.b.head.load(Ordering::Acquire), r.b.shift) {
                Head::Open { seq, .. } => seq,
                Head::Closed { next, .. } => next,
            },
        });
        r
    }

    /// Whether this is a snapshot reader (it changes nothing in the channel).
    pub fn is_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Whether this reader may read sealed sub-buffers in place
    /// ([`Self::peek`]): the consumer of a no-overwrite channel. Every
    /// other reader copies ([`Self::next`]).
    pub fn reads_in_place(&self) -> bool {
        self.b.mode == Mode::NoOverwrite && self.snapshot.is_none()
    }

    /// Snapshot readers: sub-buffers writers reused before this reader
    /// could copy them (their records are missing from the snapshot). 0 for
    /// the consumer, whose losses are all counted records.
    pub fn overrun_subbufs(&self) -> u64 {
        self.snapshot.map_or(0, |p| p.overrun)
    }

    /// Records this reader delivered: a snapshot's own count; the
    /// consumer's total, `consumed_records` with what it has not committed.
    pub fn delivered_records(&self) -> u64 {
        self.local.records
    }

    /// Where this reader is (committed or not).
    pub fn progress(&self) -> Progress {
        self.local
    }

    /// Whether the consumer has progress its last [`Self::commit`] did not
    /// publish.
    pub fn uncommitted(&self) -> bool {
        self.snapshot.is_none() && self.local != self.committed
    }

    /// Publishes the consumer's progress: everything delivered so far is
    /// done, and a reader that starts after this resumes after it. Call it
    /// once the output accepted what was delivered (see "Progress"). Does
    /// nothing for a snapshot, or when nothing changed.
    pub fn commit(&mut self) {
        if !self.uncommitted() {
            return;
        }
        let p = self.local;
        let store = |i, v: u64, order| {
            if let Some(w) = self.b.consumer_word(i) {
                w.store(v, order);
            }
        };
        // In this order, so that a consumer killed between two stores
        // neither loses a record nor repeats one from before this batch
        // (see "Progress").
        store(REPORTED_FULL, p.reported.full, Ordering::Relaxed);
        store(REPORTED_TOO_BIG, p.reported.too_big, Ordering::Relaxed);
        store(REPORTED_OVERWRITE, p.reported.overwrite, Ordering::Relaxed);
        store(REPORTED_ABANDONED, p.reported.abandoned, Ordering::Relaxed);
        store(consumer::LOST_CLAIMED, p.lost_claimed, Ordering::Relaxed);
        store(consumer::CONSUMED_RECORDS, p.records, Ordering::Relaxed);
        if self.b.mode == Mode::NoOverwrite && p.next != self.committed.next {
            // Release: the sub-buffers before `next` were read; a writer
            // that sees the new position may reuse them.
            store(consumer::CONSUMED, p.next, Ordering::Release);
        }
        store(consumer::CURSOR_OFF, p.cursor_off, Ordering::Relaxed);
        store(consumer::CURSOR_SEQ, p.cursor_seq, Ordering::Release);
        self.committed = p;
    }

    /// The CPU whose buffer this reads.
    pub fn cpu(&self) -> u32 {
        self.b.cpu
    }

    /// This CPU's statistics.
    pub fn stats(&self) -> CpuStats {
        CpuStats::load(&self.b)
    }

    fn consumed_word(&self) -> Option<&'a AtomicU64> {
        self.b.consumer_word(consumer::CONSUMED)
    }

    /// Where a reader that copies with a seal check stops: the snapshot's
    /// end, or the end of a recovery.
    fn checked_end(&self) -> Option<u64> {
        match (&self.snapshot, &self.recovery) {
            (Some(p), _) => Some(p.end),
            (None, Some(r)) => Some(r.end),
            (None, None) => None,
        }
    }

    /// The sequence number of the next sealed, unconsumed sub-buffer.
    pub fn ready(&self) -> Option<u64> {
        let consumed = self.consumed();
        if self.snapshot.is_some_and(|p| !is_newer(p.end, consumed)) {
            return None;
        }
        let seal = self.b.seals.get(self.b.slot(consumed))?;
        (Seal::decode(seal.load(Ordering::Acquire)) == Seal::Sealed(consumed)).then_some(consumed)
    }

    /// Losses already reported by this reader (the consumer's include
    /// those its predecessors reported and committed, so a restarted one
    /// does not report them again). Untrusted.
    pub fn lost_reported(&self) -> Lost {
        self.local.reported
    }

    /// The reported losses the writers' counters are compared with: those
    /// counted by a recovering consumer were never in them.
    fn writer_baseline(&self) -> Lost {
        let mut base = self.local.reported;
        base.abandoned = 0; // never compared with a writer's count
        base.overwrite = base.overwrite.wrapping_sub(self.local.lost_claimed);
        base
    }

    fn resume_offset(&self, seq: u64) -> u64 {
        cursor_offset(&self.local, seq)
    }

    /// The delivery of validated sub-buffer `seq`. `overwritten`:
    /// overwrite mode, the writer's count of overwritten records read just
    /// before the claim (or the copy).
    fn delivery<'b>(
        &mut self,
        seq: u64,
        view: SubbufView<'b>,
        claimed: bool,
        overwritten: u64,
    ) -> Delivery<'b> {
        let h = view.header();
        let now = Lost {
            full: h.lost_full,
            too_big: h.lost_too_big,
            // Overwritten records are older than this sub-buffer when
            // counted before the claim: then every sub-buffer before it was
            // delivered or reclaimed, and no later one can be reclaimed
            // until this one is (reclaims go in order, and one of this
            // sub-buffer would have failed the claim). Read after the
            // claim, the count could include the next sub-buffer's
            // reclaim: a loss reported early. (A reclaim whose count lands
            // late is reported with the next one.) The header's count is
            // from when this one opened, before the reclaims of its
            // predecessors.
            overwrite: match self.b.mode {
                Mode::Overwrite => overwritten,
                Mode::NoOverwrite => h.lost_overwrite,
            },
            abandoned: 0,
        };
        let mut lost_before = now.since(&self.writer_baseline());
        // Abandoned records are counted in the sub-buffer that held them:
        // reported with its first record (not again when resuming in it).
        if self.resume_offset(seq) == SUBBUF_HEADER_SIZE as u64 {
            lost_before.abandoned = h.abandoned.into();
        }
        if let ClaimedLoss::Owed(n) = self.claimed_loss {
            lost_before.overwrite = lost_before.overwrite.wrapping_add(n);
            self.claimed_loss = ClaimedLoss::HandedOut(n);
        }
        Delivery {
            seq,
            view,
            lost_before,
            resume: self.resume_offset(seq),
            claimed,
        }
    }

    /// Moves the position from `seq` to `seq + 1`; false if it was not at
    /// `seq` (overwrite mode: a writer pushed it). Only the overwrite
    /// consumer moves the shared position here, by its claim; every other
    /// reader moves its own, which the consumer publishes in `commit`.
    fn advance(&mut self, seq: u64) -> bool {
        if self.b.mode == Mode::NoOverwrite || self.checked_end().is_some() {
            if self.local.next == seq {
                self.local.next = seq.wrapping_add(1);
            }
            return true;
        }
        self.consumed_word().is_some_and(|w| {
            w.compare_exchange(
                seq,
                seq.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        })
    }

    /// The next sealed sub-buffer, validated, read in place without copying.
    /// No-overwrite channels only. Call [`Self::finish`] when done with it.
    #[cfg(not(loom))]
    pub fn peek(&mut self) -> Result<Option<Delivery<'_>>, ReadError> {
        if !self.reads_in_place() {
            return Err(ReadError::InPlaceNeedsNoOverwrite);
        }
        let Some(seq) = self.ready() else {
            return Ok(None);
        };
        let bytes = crate::mem::subbuf_bytes(self.b.subbuf_words(self.b.slot(seq)));
        match SubbufView::parse(bytes, &self.geometry, seq, self.b.cpu) {
            Ok(view) => Ok(Some(self.delivery(seq, view, false, 0))),
            Err(error) => {
                self.advance(seq);
                Err(ReadError::Corrupt { seq, error })
            }
        }
    }

    /// The bytes of sealed sub-buffer `seq`, in place, for the merge cursor,
    /// which only asks for a sub-buffer it peeked and has not finished (so no
    /// writer reuses it meanwhile: see `mem::subbuf_bytes`).
    #[cfg(not(loom))]
    pub(crate) fn sealed_bytes(&self, seq: u64) -> &'a [u8] {
        crate::mem::subbuf_bytes(self.b.subbuf_words(self.b.slot(seq)))
    }

    /// Records of this CPU that a reader starting now will not be handed:
    /// those earlier consumers delivered and committed (`consumed_records`,
    /// which counts every record delivered, up to the resume cursor). A
    /// restarted reader's first record should be the one after them, which
    /// is how `relay verify --resume` checks that a restart lost nothing.
    /// Untrusted, like all consumer state.
    pub fn records_before_resume(&self) -> u64 {
        self.committed.records
    }

    /// This reader's position (the next sub-buffer to read): the overwrite
    /// consumer's is the shared one (its claims and writers' reclaims move
    /// it) once it recovered; every other reader's is its own until it
    /// commits.
    pub fn consumed(&self) -> u64 {
        if self.b.mode == Mode::Overwrite && self.checked_end().is_none() {
            load(self.consumed_word())
        } else {
            self.local.next
        }
    }

    /// The channel's mode.
    pub fn mode(&self) -> Mode {
        self.b.mode
    }

    /// The next sealed sub-buffer, copied into `buf` (at least one sub-buffer
    /// long) and validated. Works in both modes; in overwrite mode a copy that
    /// a writer overwrote meanwhile is dropped (the writer counted it) and the
    /// next one is tried. Call [`Self::finish`] when done with it.
    pub fn next<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<Delivery<'b>>, ReadError> {
        let size = self.geometry.subbuf_size() as usize;
        let Some(buf) = buf.get_mut(..size) else {
            return Err(ReadError::BufferTooSmall { need: size });
        };
        if self.checked_end().is_some() {
            if let Some(i) = self.next_checked(buf)? {
                return self.checked_delivery(buf, i).map(Some);
            }
            if self.recovery.is_none() && self.snapshot.is_none() {
                // Recovered: go on claiming.
                return self.next_claimed(buf);
            }
            return Ok(None);
        }
        self.next_claimed(buf)
    }

    /// The consumer's copy: in overwrite mode claimed after the copy.
    fn next_claimed<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<Delivery<'b>>, ReadError> {
        let mut found = None;
        for _ in 0..OVERRUN_RETRIES {
            let Some(seq) = self.ready() else {
                return Ok(None);
            };
            copy_out(self.b.subbuf_words(self.b.slot(seq)), buf);
            // Before the claim (see `delivery`); the claim's release keeps
            // this load before it.
            let overwritten = self.b.load(producer::LOST_OVERWRITE);
            if self.b.mode == Mode::Overwrite {
                if !self.advance(seq) {
                    continue;
                }
                // Right after the claim, so that a successor knows what it
                // owes if this consumer dies before it commits: the header's
                // count, validated below (and taken back if it fails).
                self.add_claimed(claimed_records(buf, &self.geometry));
            }
            found = Some((seq, overwritten));
            break;
        }
        let Some((seq, overwritten)) = found else {
            return Ok(None);
        };
        let claimed = self.b.mode == Mode::Overwrite;
        match SubbufView::parse(buf, &self.geometry, seq, self.b.cpu) {
            Ok(view) => Ok(Some(self.delivery(seq, view, claimed, overwritten))),
            Err(error) => {
                if claimed {
                    self.add_claimed(claimed_records(buf, &self.geometry).wrapping_neg());
                } else {
                    self.advance(seq);
                }
                Err(ReadError::Corrupt { seq, error })
            }
        }
    }

    fn add_claimed(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.claimed = self.claimed.wrapping_add(n);
        if let Some(w) = self.b.consumer_word(consumer::CLAIMED_RECORDS) {
            w.store(self.claimed, Ordering::Relaxed);
        }
    }

    /// Snapshots and recovery: copies the next sub-buffer before the end,
    /// checking that its seal did not change meanwhile (see "Snapshots").
    /// Returns its sequence number and the overwrite count to report
    /// against, with the copy in `buf`; `None` at the end (which ends a
    /// recovery) or when nothing more is sealed.
    fn next_checked(&mut self, buf: &mut [u8]) -> Result<Option<(u64, u64)>, ReadError> {
        let recovering = self.recovery.is_some();
        for _ in 0..SKIP_LIMIT {
            let seq = self.local.next;
            let Some(end) = self.checked_end() else {
                return Ok(None);
            };
            if !is_newer(end, seq) {
                self.end_recovery();
                return Ok(None); // closed after the snapshot began
            }
            let Some(seal_word) = self.b.seals.get(self.b.slot(seq)) else {
                return Ok(None);
            };
            let before = seal_word.load(Ordering::Acquire);
            match Seal::decode(before) {
                Seal::Sealed(s) if s == seq => {}
                Seal::Sealed(s) | Seal::Opening(s) if is_newer(s, seq) => {
                    // Reused: sub-buffers up to `s - count` are gone from
                    // this slot's lap, and so (reused in order) are the
                    // ones before them.
                    let oldest = s.wrapping_sub(self.b.count.into()).wrapping_add(1);
                    self.skip_to(if is_newer(oldest, seq) {
                        oldest
                    } else {
                        seq.wrapping_add(1)
                    });
                    continue;
                }
                // A claimed sub-buffer cannot be unsealed: a hostile value.
                _ if recovering => {
                    self.skip_to(seq.wrapping_add(1));
                    continue;
                }
                _ => return Ok(None),
            }
            // Overwrite channels: the count before the copy covers only
            // sub-buffers older than this one (see `delivery`).
            let overwritten = self.b.load(producer::LOST_OVERWRITE);
            copy_out(self.b.subbuf_words(self.b.slot(seq)), buf);
            fence(Ordering::Acquire);
            if seal_word.load(Ordering::Relaxed) != before {
                self.skip_to(seq.wrapping_add(1));
                continue;
            }
            let started = self.snapshot.as_ref().is_none_or(|p| p.started);
            let overwritten = if started {
                // A snapshot reports overwritten records once, before its
                // first sub-buffer: later reclaims are of sub-buffers it
                // delivered or overran. A recovery reports none: what was
                // overwritten before these claims was reported before them.
                self.writer_baseline().overwrite
            } else {
                overwritten
            };
            self.local.next = seq.wrapping_add(1);
            if let Some(p) = self.snapshot.as_mut() {
                p.started = true;
            }
            return Ok(Some((seq, overwritten)));
        }
        Ok(None)
    }

    /// The delivery of a checked copy (`next_checked`).
    fn checked_delivery<'b>(
        &mut self,
        buf: &'b [u8],
        (seq, overwritten): (u64, u64),
    ) -> Result<Delivery<'b>, ReadError> {
        match SubbufView::parse(buf, &self.geometry, seq, self.b.cpu) {
            Ok(view) => {
                let d = self.delivery(seq, view, true, overwritten);
                if let Some(r) = self.recovery.as_mut() {
                    r.recovered = r.recovered.wrapping_add(d.records().count() as u64);
                }
                Ok(d)
            }
            Err(error) => Err(ReadError::Corrupt { seq, error }),
        }
    }

    /// A snapshot or a recovery moves on to `seq`; a snapshot counts the
    /// sub-buffers it skipped as overrun.
    fn skip_to(&mut self, seq: u64) {
        if let Some(p) = self.snapshot.as_mut() {
            let from = if is_newer(p.claimed, self.local.next) {
                p.claimed
            } else {
                self.local.next
            };
            if is_newer(seq, from) {
                p.overrun = p.overrun.wrapping_add(seq.wrapping_sub(from));
            }
        }
        self.local.next = seq;
    }

    /// A recovery is over: the claimed records it did not find intact are
    /// lost, to be reported with what comes next.
    fn end_recovery(&mut self) {
        if let Some(r) = self.recovery.take() {
            let lost = r.owed.saturating_sub(r.recovered);
            if lost > 0 {
                self.claimed_loss = ClaimedLoss::Owed(lost);
            }
        }
    }

    /// Records that `records` more records of sub-buffer `seq` were
    /// delivered, up to `offset` ([`crate::format::Records::offset`]), so
    /// that after a commit a reader that restarts resumes there instead of
    /// repeating them.
    pub fn save_progress(&mut self, seq: u64, offset: u64, records: u64) {
        self.local.cursor_seq = seq;
        self.local.cursor_off = offset;
        self.local.records = self.local.records.wrapping_add(records);
    }

    /// Records that losses `lost` were reported (before the records that
    /// follow): those of a delivery's `lost_before` or of
    /// [`Self::take_unreported_loss`].
    pub fn report_lost(&mut self, lost: &Lost) {
        self.local.reported = self.local.reported.plus(lost);
        if let ClaimedLoss::HandedOut(n) = self.claimed_loss {
            if lost.overwrite >= n {
                self.local.lost_claimed = self.local.lost_claimed.wrapping_add(n);
                self.claimed_loss = ClaimedLoss::None;
            }
        }
    }

    /// Marks sub-buffer `seq` done: `records` more of it were delivered and
    /// `lost_reported` before them (what [`Self::save_progress`] and
    /// [`Self::report_lost`] did not record yet). Moves the position past it
    /// (no-overwrite) and the resume cursor to the next one;
    /// [`Self::commit`] publishes it.
    pub fn finish(&mut self, seq: u64, lost_reported: &Lost, records: u64) {
        self.report_lost(lost_reported);
        self.save_progress(seq.wrapping_add(1), 0, records);
        if self.b.mode == Mode::NoOverwrite {
            self.advance(seq);
        }
    }

    /// Losses the writer counted that no delivered sub-buffer reported yet
    /// (and claimed records a recovery found lost). Report them with
    /// [`Self::report_lost`] once delivered. Call it when the CPU has
    /// nothing left to read (the end of a stream): losses after the last
    /// sub-buffer a writer opened are only visible this way.
    ///
    /// Nothing is reported while records older than those losses are still
    /// to come: while the writer has a sub-buffer open (a write refused for
    /// want of a free slot leaves the full one open), or, without
    /// overwrite, while a closed sub-buffer is not consumed yet. The losses
    /// then come with the next sub-buffer, or after a flush.
    pub fn take_unreported_loss(&mut self) -> Lost {
        let mut unreported = Lost::default();
        if let ClaimedLoss::Owed(n) | ClaimedLoss::HandedOut(n) = self.claimed_loss {
            unreported.overwrite = n;
            self.claimed_loss = ClaimedLoss::HandedOut(n);
        }
        match Head::decode(self.b.head.load(Ordering::Acquire), self.b.shift) {
            Head::Open { .. } => return unreported,
            Head::Closed { next, .. } => {
                let behind = self.consumed().wrapping_sub(next) >= 1 << 63;
                if self.b.mode == Mode::NoOverwrite && behind {
                    return unreported;
                }
            }
        }
        let mut writers = self.stats().lost.since(&self.writer_baseline());
        // Reported in place, with the sub-buffers that held them.
        writers.abandoned = 0;
        if self.snapshot.is_some_and(|p| p.started) && self.b.mode == Mode::Overwrite {
            // A snapshot reports overwritten records only before its first
            // sub-buffer (see "Snapshots").
            writers.overwrite = 0;
        }
        unreported.plus(&writers)
    }
}

/// The record count in the header of a claimed copy (untrusted until the
/// copy is validated; at most what fits, so a hostile one stays bounded).
fn claimed_records(buf: &[u8], geometry: &Geometry) -> u64 {
    let at = crate::format::subbuf::RECORDS * 8;
    let n = buf
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes);
    u64::from(n).min(u64::from(geometry.subbuf_size()) / crate::format::RECORD_HEADER_SIZE as u64)
}

/// Where delivery of sub-buffer `seq` resumes under progress `p`.
fn cursor_offset(p: &Progress, seq: u64) -> u64 {
    if p.cursor_seq == seq && p.cursor_off != 0 {
        p.cursor_off
    } else {
        SUBBUF_HEADER_SIZE as u64
    }
}

/// Whether sequence number `a` is after `b` (wrapping order).
fn is_newer(a: u64, b: u64) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 63
}

/// Copies sub-buffer words into `buf` (word by word, atomically: racing an
/// overwriting writer is detected by the claim, never undefined).
fn copy_out(words: &[AtomicU64], buf: &mut [u8]) {
    let (chunks, _) = buf.as_chunks_mut::<8>();
    for (w, chunk) in words.iter().zip(chunks) {
        *chunk = w.load(Ordering::Relaxed).to_le_bytes();
    }
}
