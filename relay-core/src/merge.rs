//! One stream from all CPUs: a k-way merge by timestamp that never delivers
//! a record while a CPU that could still hold an earlier one is unaccounted.
//!
//! Each CPU has a [`Cursor`] over its reader. The [`Merger`] looks at every
//! cursor's next event and delivers the earliest, provided that every CPU
//! without data is *known empty* up to that time: a flush of that CPU at
//! barrier `B` (see [`crate::Flushed`]) whose closed sub-buffers have all
//! been consumed proves it holds nothing older than `B`. Otherwise the merger
//! answers [`Step::Blocked`] naming the CPU to flush (or, at the end of a
//! stream, the caller asks it to drain). Losses become [`Event::Lost`] at the
//! point of the stream where they happened: just before the first record of
//! the sub-buffer that reported them.
//!
//! The merger is zero-copy for the consumer of a no-overwrite channel:
//! records borrow the channel until the next call. Otherwise (overwrite
//! channels, snapshots) each cursor copies one whole sub-buffer at a time
//! into its own buffer (never record by record).
//!
//! Cost: the merger keeps the ready cursors in a winner tree by next
//! timestamp and the idle ones in another by barrier (see `tree`; both in
//! the [`Node`]s the caller gives [`Merger::new`], [`nodes_for`] its
//! cursors), so a switch of CPU costs `log2(N)` steps and an idle CPU costs
//! nothing until its barrier is the earliest. A CPU keeps the lead without
//! a look at the others while its records are no later than the runner-up
//! (a run), and records of a run are handed out straight from the
//! sub-buffer. With more sub-buffer bytes in turn than a core's cache
//! holds, a run also prefetches the runner-up's records, so the CPU that
//! leads next does not start cold.

mod tree;

use crate::format::{Record, Records};
use crate::mem::Region;
use crate::reader::{CpuReader, Lost, ReadError};
pub use tree::{nodes_for, Node};
use tree::{Trees, Which};

/// Something the merged stream delivers.
///
/// Exhaustive on purpose: a reader that let a kind of event it did not
/// know pass unseen could not keep the loss accounting exact, so a new
/// kind is a breaking change that every reader must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'r> {
    /// A record of `cpu`.
    Record {
        /// The CPU that wrote it.
        cpu: u32,
        /// The record.
        record: Record<'r>,
    },
    /// `cpu` lost records here (before the records that follow from it).
    Lost {
        /// The CPU that lost them.
        cpu: u32,
        /// How many, by cause.
        lost: Lost,
        /// Where in the stream: the timestamp of the next record of `cpu`.
        ts: u64,
        /// Every loss of `cpu` reported so far, this one included, since
        /// the channel was created: a report delivered again after a
        /// consumer died (see [`Merger::commit`]) repeats or includes an
        /// earlier one, and the largest total is the CPU's.
        total: Lost,
    },
    /// A corrupt sub-buffer of `cpu` was skipped (its records are lost).
    Corrupt {
        /// The CPU.
        cpu: u32,
        /// What was wrong.
        error: ReadError,
    },
}

/// What a batch's consumer ([`Merger::next_batch`]) says of each event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Taken: go on.
    Take,
    /// Not taken: end the batch before this event, which comes out again
    /// next time (an output buffer is full, say).
    Stop,
}

/// The result of [`Merger::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'r> {
    /// The next event in timestamp order.
    Event(Event<'r>),
    /// `cpu` has nothing readable but might still hold records older than
    /// what other CPUs offer: flush it (and report the barrier with
    /// [`Merger::flushed`]), wait, or drain.
    Blocked {
        /// The CPU to flush.
        cpu: u32,
    },
    /// No CPU has anything readable.
    Idle,
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Loaded<'a> {
    /// The sub-buffer's content in place (no-overwrite), or `None` when it
    /// was copied into the cursor's buffer.
    in_place: Option<&'a [u8]>,
    content: usize,
    off: usize,
    /// Records handed out since the resume point.
    delivered: u64,
    lost: Option<Lost>,
    /// How many of `delivered` the reader was told of
    /// ([`Cursor::save_progress`]: when the cursor commits or moves on, not
    /// once a run, so a switch of CPU stores nothing in the reader's cache
    /// lines).
    saved: u64,
    seq: u64,
    ts_begin: u64,
    /// Records from the resume point on, as validated.
    expected: u64,
}

/// What [`Cursor::event`] handed out, for [`Cursor::unget`].
#[derive(Clone, Copy, Debug)]
enum Taken {
    Corrupt(ReadError),
    /// A record or a loss.
    Other,
}

/// What a core's caches are taken to hold of the sub-buffers CPUs lead in
/// turn (a typical second-level cache, 512 KiB): beyond it the next CPU's
/// records are prefetched while the current one's are handed out.
const CACHED: usize = 512 << 10;

/// A cursor's loaded sub-buffer and the offset of its next record: where
/// to prefetch the records of the CPU likely to lead next.
type Ahead = Option<(Region, usize)>;

/// A cursor's next record, decoded: its payload's range and where the
/// record after it starts (offsets in the sub-buffer), and its type.
#[derive(Clone, Copy, Debug)]
struct NextRecord {
    payload: (usize, usize),
    after: usize,
    rtype: u16,
}

impl NextRecord {
    /// The next record of `records` (skipping discarded ones) and its
    /// timestamp.
    #[inline(always)]
    fn decode(records: &mut Records<'_>) -> Option<(u64, NextRecord)> {
        let (at, record) = records.next_at()?;
        let payload = at + crate::format::RECORD_HEADER_SIZE;
        let next = NextRecord {
            payload: (payload, payload + record.payload.len()),
            after: records.offset(),
            rtype: record.rtype,
        };
        Some((record.ts, next))
    }

    fn payload<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        bytes.get(self.payload.0..self.payload.1)
    }

    fn after(&self) -> usize {
        self.after
    }
}

/// How far the leading cursor's run may go (see [`Merger::find`]). The
/// exact limit is the earlier of the runner-up's next event (a walk up the
/// ready tree) and the earliest idle barrier; `low` is known to be no later
/// than it, `high` no earlier (`u64::MAX` when nothing better is known).
/// The run goes on while its records are at most `low`, ends at one later
/// than `high`, and in between the exact limit, computed once, decides. A
/// switch of CPU thus costs no walk when the next record is later than the
/// CPU left last (`high`): the one-record-per-CPU case. After a run of
/// several records the walk is taken at the switch (it would be due at the
/// next run's second record anyway), which names the runner-up to
/// prefetch.
#[derive(Clone, Copy, Debug)]
struct Limit {
    low: u64,
    high: u64,
}

impl Limit {
    /// The bounds for a leader whose next event is at `lead`, when another
    /// ready CPU's next event is at `other` and the earliest idle barrier
    /// that counts is `barrier`.
    #[inline]
    fn new(lead: u64, other: u64, barrier: u64) -> Self {
        Limit {
            low: lead.min(barrier),
            high: other.min(barrier),
        }
    }

    /// The bounds when the exact limit is known.
    #[inline]
    fn exact(limit: u64) -> Self {
        Limit {
            low: limit,
            high: limit,
        }
    }

    /// Whether a record at `ts` (not the run's first) belongs to the run.
    #[inline(always)]
    fn admits(&mut self, ts: u64, exact: &mut impl FnMut() -> u64) -> bool {
        if ts <= self.low {
            return true;
        }
        if ts > self.high {
            return false;
        }
        let e = exact();
        *self = Limit::exact(e);
        ts <= e
    }
}

/// One CPU's position in the merged stream.
///
/// `repr(C, align(64))`, the fields a switch of CPU reads first: with
/// hundreds of CPUs in turn, every cursor is cold when it leads again, and
/// this keeps what a run reads and writes (head, its decoded record, the
/// state flags, the loaded sub-buffer's range and progress) in the first
/// two cache lines of the cursor; the reader, the pending losses and
/// errors, and the copy buffer follow, touched only when a sub-buffer is
/// loaded or finished, or at a commit. (Callgrind's cache model, 256 CPUs
/// one record each in turn: 5.2 first-level misses a record in the merge
/// before, 1.4 after.)
#[repr(C, align(64))]
pub struct Cursor<'a, B> {
    /// Set when the event at `off` was handed out and must be stepped over.
    handed_out: bool,
    /// `tail` or `corrupt` is set: the one byte of them a switch of CPU
    /// reads (they are cold, after the reader).
    pending: bool,
    /// The CPU (the reader's, here where a run reads it).
    cpu: u32,
    /// The next event's timestamp, while the loaded sub-buffer has one.
    head: Option<u64>,
    /// The next record, decoded: type, payload range, and where the record
    /// after it starts.
    pos: Option<NextRecord>,
    /// Timestamp of the last event delivered (where a tail loss goes).
    last_ts: u64,
    loaded: Option<Loaded<'a>>,
    reader: CpuReader<'a>,
    /// Losses found at the end of a stream, to deliver as the last event.
    tail: Option<Lost>,
    corrupt: Option<ReadError>,
    /// (barrier, next): nothing older than `barrier` once `consumed >= next`.
    flushed: Option<(u64, u64)>,
    /// The tail loss handed out last, marked reported when stepped over.
    tail_out: Option<Lost>,
    buf: B,
}

impl<'a, B: AsMut<[u8]> + AsRef<[u8]>> Cursor<'a, B> {
    /// A cursor over `reader`. `buf` must hold one sub-buffer unless the
    /// reader [reads in place](CpuReader::reads_in_place) (copies go
    /// there); it is unused (may be empty) otherwise.
    pub fn new(reader: CpuReader<'a>, buf: B) -> Self {
        Cursor {
            cpu: reader.cpu(),
            reader,
            buf,
            loaded: None,
            handed_out: false,
            pending: false,
            flushed: None,
            corrupt: None,
            head: None,
            pos: None,
            tail: None,
            tail_out: None,
            last_ts: 0,
        }
    }

    /// The CPU.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// The underlying reader. The records delivered from the loaded
    /// sub-buffer reach its progress when the cursor commits or moves to
    /// the next sub-buffer.
    pub fn reader(&self) -> &CpuReader<'a> {
        &self.reader
    }

    fn bytes<'s>(&'s self, l: &'s Loaded<'a>) -> &'s [u8] {
        let all: &[u8] = match l.in_place {
            Some(bytes) => bytes,
            None => self.buf.as_ref(),
        };
        all.get(..l.content).unwrap_or(&[])
    }

    /// Finishes the current sub-buffer if it is exhausted, then loads the
    /// next one if there is none. Returns false if nothing is loaded.
    fn fill(&mut self) -> bool {
        if let Some(l) = &self.loaded {
            if l.lost.is_some() || l.off < l.content {
                return true;
            }
        }
        // Drop the in-place view before finishing: once the sub-buffer is
        // consumed (at the next commit) a writer may reuse it. Its losses
        // were recorded as they were handed out, its records just now.
        self.save_progress();
        if let Some(Loaded { seq, .. }) = self.loaded.take() {
            self.reader.finish(seq, &Lost::default(), 0);
        }
        let loaded = if self.reader.reads_in_place() {
            self.reader.peek().map(|d| d.map(|d| (d, false)))
        } else {
            self.reader
                .next(self.buf.as_mut())
                .map(|d| d.map(|d| (d, true)))
        };
        let loaded = loaded.map(|d| {
            d.map(|(d, copied)| {
                let h = d.view.header();
                // Validation counted them all; those before a resume point
                // were delivered earlier (rare: walk them only then).
                let before = if d.records().offset() > crate::format::SUBBUF_HEADER_SIZE {
                    let mut all = d.view.records();
                    let mut n = 0u64;
                    while all
                        .next_at()
                        .is_some_and(|(at, _)| at < d.records().offset())
                    {
                        n += 1;
                    }
                    n
                } else {
                    0
                };
                (
                    d.seq,
                    copied,
                    h.content_size as usize,
                    d.records().offset(),
                    d.lost_before,
                    h.ts_begin,
                    u64::from(h.records).saturating_sub(before),
                )
            })
        });
        match loaded {
            Ok(Some((seq, copied, content, off, lost, ts_begin, expected))) => {
                self.loaded = Some(Loaded {
                    seq,
                    // Valid until this cursor finishes the sub-buffer, which
                    // it does only after the last record it handed out is no
                    // longer borrowed (records borrow the merger).
                    in_place: (!copied).then(|| self.reader.sealed_bytes(seq)),
                    content,
                    off,
                    lost: (!lost.is_zero()).then_some(lost),
                    ts_begin,
                    expected,
                    delivered: 0,
                    saved: 0,
                });
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.corrupt = Some(e);
                self.pending = true;
                false
            }
        }
    }

    /// The timestamp of this cursor's next event, loading as needed.
    fn head_ts(&mut self) -> Option<u64> {
        if self.head.is_some() {
            return self.head;
        }
        self.head = self.find_head();
        self.head
    }

    fn find_head(&mut self) -> Option<u64> {
        loop {
            if self.pending {
                return Some(0);
            }
            if !self.fill() {
                return self.corrupt.map(|_| 0);
            }
            let l = self.loaded.as_ref()?;
            let (lost, ts_begin) = (l.lost.is_some(), l.ts_begin);
            let mut records = Records::resume(self.bytes(l), l.off);
            match NextRecord::decode(&mut records) {
                Some((ts, next)) => {
                    self.pos = Some(next);
                    return Some(ts);
                }
                None if lost => {
                    self.pos = None;
                    return Some(ts_begin);
                }
                None => {
                    // Only discarded records were left: finish this one,
                    // unless its records changed since it was validated
                    // (read in place, by a process outside the protocol):
                    // then the walk stopped early, or found other records.
                    let end = records.offset();
                    if let Some(l) = self.loaded.as_mut() {
                        if end != l.content || l.delivered != l.expected {
                            self.corrupt = Some(ReadError::Changed {
                                seq: l.seq,
                                records: l.expected,
                                delivered: l.delivered,
                            });
                            self.pending = true;
                        }
                        l.off = l.content;
                    }
                }
            }
        }
    }

    /// Steps over the event handed out last and records progress.
    fn step(&mut self) {
        if !core::mem::take(&mut self.handed_out) {
            return;
        }
        self.head = None;
        if let Some(lost) = self.tail_out.take() {
            self.reader.report_lost(&lost);
            return;
        }
        let Some(l) = self.loaded.as_mut() else {
            return;
        };
        if let Some(lost) = l.lost.take() {
            self.reader.report_lost(&lost);
            return; // the loss came first; the record is still next
        }
        if let Some(next) = self.pos.take() {
            l.off = next.after();
            l.delivered += 1;
        }
    }

    /// Tells the reader how far this cursor delivered in the loaded
    /// sub-buffer, if further than it last told it.
    fn save_progress(&mut self) {
        if let Some(l) = self.loaded.as_mut() {
            if l.delivered != l.saved {
                let records = l.delivered.wrapping_sub(l.saved);
                self.reader.save_progress(l.seq, l.off as u64, records);
                l.saved = l.delivered;
            }
        }
    }

    /// Takes back the event [`Self::event`] just handed out, which the
    /// caller did not take: it comes out again next time.
    fn unget(&mut self, taken: Taken) {
        match taken {
            Taken::Corrupt(error) => self.corrupt = Some(error),
            // A loss before a loaded sub-buffer stays there until stepped
            // over; a tail loss was taken.
            Taken::Other if self.tail_out.is_some() => self.tail = self.tail_out.take(),
            Taken::Other => {}
        }
        self.pending = self.corrupt.is_some() || self.tail.is_some();
        self.handed_out = false;
        self.head = None;
    }

    /// Publishes this CPU's progress (see [`CpuReader::commit`]).
    pub fn commit(&mut self) {
        self.save_progress();
        self.reader.commit();
    }

    /// The event at the cursor (after `head_ts` returned `Some`).
    fn event(&mut self) -> Option<Event<'_>> {
        let cpu = self.cpu();
        if let Some(error) = self.corrupt.take() {
            self.pending = self.tail.is_some();
            self.head = None;
            return Some(Event::Corrupt { cpu, error });
        }
        if let Some(lost) = self.tail.take() {
            self.pending = false; // `corrupt` came first: it is `None`
            self.head = None;
            self.tail_out = Some(lost);
            self.handed_out = true;
            return Some(Event::Lost {
                cpu,
                lost,
                ts: self.last_ts,
                total: self.reader.lost_reported().plus(&lost),
            });
        }
        self.handed_out = true;
        let ts = self.head?;
        self.last_ts = ts;
        let l = self.loaded.as_ref()?;
        if let Some(lost) = l.lost {
            let total = self.reader.lost_reported().plus(&lost);
            return Some(Event::Lost {
                cpu,
                lost,
                ts,
                total,
            });
        }
        let next = self.pos?;
        let payload = next.payload(self.bytes(l))?;
        Some(Event::Record {
            cpu,
            record: Record {
                ts,
                rtype: next.rtype,
                payload,
            },
        })
    }

    /// Hands out records of the loaded sub-buffer while their timestamps are
    /// at most `limit` (at least the next one, which `head_ts` vouched
    /// for), up to `max`, until `f` declines one; saves progress once.
    /// Prefetches the records of `runner_up` (see [`Cursor::ahead`]) as far
    /// as it gets. Returns how many `f` took, and whether it declined one.
    fn run(
        &mut self,
        limit: &mut Limit,
        exact: &mut impl FnMut() -> u64,
        max: usize,
        f: &mut impl FnMut(Event<'_>) -> Flow,
        runner_up: Ahead,
    ) -> (usize, bool) {
        let cpu = self.cpu();
        let Some(l) = self.loaded.as_ref() else {
            return (0, false);
        };
        let start = l.off;
        let bytes = self.bytes(l);
        // The head was decoded when it was found: start after it.
        let (mut cur, mut records) = match (self.head, self.pos) {
            (Some(ts), Some(p)) => (Some((ts, p)), Records::resume(bytes, p.after())),
            _ => {
                let mut records = Records::resume(bytes, start);
                (NextRecord::decode(&mut records), records)
            }
        };
        let (mut n, mut off, mut last, mut stopped) = (0, start, self.last_ts, false);
        // The record the run stopped at, decoded already: the next head.
        let mut next: Option<(u64, NextRecord)> = None;
        while let Some((ts, decoded)) = cur {
            if n >= max || (n > 0 && !limit.admits(ts, exact)) {
                // Another CPU leads now: start loading the record after
                // this one (its header and the payload's first line),
                // which this cursor decodes when it leads again.
                crate::mem::prefetch(bytes, decoded.after());
                crate::mem::prefetch(bytes, decoded.after() + 64);
                next = cur;
                break;
            }
            let Some(payload) = decoded.payload(bytes) else {
                break;
            };
            // The CPU likely to lead next is as cold as this one was: load
            // its records as far as this run got (two lines a record, so
            // records of up to 128 bytes miss none), while this one's are
            // handed out, rather than one miss at a time when it leads.
            if let Some((theirs, at)) = runner_up {
                let ahead = at.wrapping_add(off.wrapping_sub(start));
                theirs.prefetch(ahead);
                theirs.prefetch(ahead.wrapping_add(64));
            }
            let record = Record {
                ts,
                rtype: decoded.rtype,
                payload,
            };
            if f(Event::Record { cpu, record }) == Flow::Stop {
                next = cur;
                stopped = true;
                break;
            }
            last = ts;
            n += 1;
            off = decoded.after();
            cur = NextRecord::decode(&mut records);
        }
        self.last_ts = last;
        self.head = next.map(|(ts, _)| ts);
        self.pos = next.map(|(_, p)| p);
        self.handed_out = false;
        if let Some(l) = self.loaded.as_mut() {
            l.off = off;
            l.delivered += n as u64;
        }
        (n, stopped)
    }

    /// Whether the next event is a record (no corrupt sub-buffer, tail
    /// loss or loss before the loaded sub-buffer comes first), so a run
    /// may hand it out.
    fn plain(&self) -> bool {
        debug_assert_eq!(self.pending, self.corrupt.is_some() || self.tail.is_some());
        !self.pending && self.loaded.as_ref().is_some_and(|l| l.lost.is_none())
    }

    /// Whether a run can start here now: a plain record decoded at the
    /// head.
    fn runs_now(&self) -> bool {
        self.head.is_some() && self.pos.is_some() && !self.handed_out && self.plain()
    }

    /// Where this cursor's next records are, for a prefetch while another
    /// leads (see [`Cursor::run`]), its first line asked for now; `None`
    /// when the sub-buffers of all `cursors` fit a core's cache, so the
    /// prefetch would cost, not save.
    fn ahead(&self, cursors: usize) -> Ahead {
        let l = self.loaded.as_ref()?;
        if l.content.saturating_mul(cursors) <= CACHED {
            return None;
        }
        let region = Region::of(self.bytes(l));
        region.prefetch(l.off);
        Some((region, l.off))
    }

    /// The time up to which this CPU (which has nothing readable now)
    /// provably holds no records: its last flush barrier, once every
    /// sub-buffer closed by that flush was consumed.
    fn known_empty_until(&self) -> Option<u64> {
        let (barrier, next) = self.flushed?;
        (self.reader.consumed().wrapping_sub(next) < 1 << 63).then_some(barrier)
    }
}

/// Which cursors handed out events since the last commit: a commit after
/// one event touches one cursor, not every CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Touched {
    None,
    One(usize),
    Many,
}

impl Touched {
    fn add(&mut self, i: usize) {
        *self = match *self {
            Touched::None => Touched::One(i),
            Touched::One(j) if j == i => Touched::One(i),
            _ => Touched::Many,
        };
    }
}

/// Why [`Merger::new`] refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergerError {
    /// `nodes` is shorter than [`nodes_for`] the cursors.
    TooFewNodes {
        /// How many the cursors need.
        needed: usize,
        /// How many were given.
        got: usize,
    },
    /// More cursors than a merger orders (2^31).
    TooManyCursors {
        /// How many were given.
        cursors: usize,
    },
}

impl core::fmt::Display for MergerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MergerError::TooFewNodes { needed, got } => {
                write!(f, "nodes: {got} given, the cursors need {needed}")
            }
            MergerError::TooManyCursors { cursors } => {
                write!(f, "cursors: {cursors}, more than a merger orders")
            }
        }
    }
}

/// The k-way merge over every CPU's cursor. `C` is the cursors' storage
/// and `N` the merge's working memory, its [`Node`]s: a slice, an array, a
/// `Vec`, a kernel `KVec`.
pub struct Merger<'a, B, C, N> {
    cursors: C,
    /// The ready and idle trees (see `tree`), [`nodes_for`] the
    /// cursors.
    nodes: N,
    last: Option<usize>,
    /// The cursor `prepare` found ready and no one took yet.
    ready: Option<usize>,
    /// (cursor, limit, drain): a run the cursor may continue without
    /// looking at the others.
    run: Option<(usize, Limit, bool)>,
    /// The cursors that handed out events since the last commit.
    uncommitted: Touched,
    /// The `drain` of the last look: what the idle tree's keys mean (see
    /// `find`).
    mode: Option<bool>,
    _cursor: core::marker::PhantomData<Cursor<'a, B>>,
}

impl<'a, B, C, N> Merger<'a, B, C, N>
where
    B: AsMut<[u8]> + AsRef<[u8]> + 'a,
    C: AsMut<[Cursor<'a, B>]>,
    N: AsMut<[Node]>,
{
    /// A merger over `cursors` (one per CPU, any order), working in
    /// `nodes` (at least [`nodes_for`] the cursors; their content
    /// does not matter).
    pub fn new(mut cursors: C, mut nodes: N) -> Result<Self, MergerError> {
        let n = cursors.as_mut().len();
        if n > tree::MAX_CURSORS {
            return Err(MergerError::TooManyCursors { cursors: n });
        }
        let got = nodes.as_mut().len();
        if got < nodes_for(n) {
            return Err(MergerError::TooFewNodes {
                needed: nodes_for(n),
                got,
            });
        }
        // Every cursor starts idle and unknown: the first look wakes those
        // with something to read.
        Trees::of(nodes.as_mut(), n).init(0);
        Ok(Merger {
            cursors,
            nodes,
            last: None,
            ready: None,
            run: None,
            uncommitted: Touched::None,
            mode: None,
            _cursor: core::marker::PhantomData,
        })
    }

    /// The cursors.
    pub fn cursors(&mut self) -> &mut [Cursor<'a, B>] {
        self.cursors.as_mut()
    }

    /// Tells the merger that `cpu` was flushed (see [`crate::Flushed`]): it
    /// holds nothing older than `barrier` once sub-buffer `next` is reached.
    pub fn flushed(&mut self, cpu: u32, barrier: u64, next: u64) {
        let cursors = self.cursors.as_mut();
        let mut trees = Trees::of(self.nodes.as_mut(), cursors.len());
        if let Some(i) = cursors.iter().position(|c| c.cpu() == cpu) {
            if let Some(c) = cursors.get_mut(i) {
                c.flushed = Some((barrier, next));
                if let Some(empty) = c.known_empty_until() {
                    trees.update(Which::Idle, i, empty);
                }
            }
        }
    }

    /// Steps past the event handed out last and finds the next one: its
    /// cursor index, or why there is none.
    fn prepare(&mut self, drain: bool) -> Result<usize, Step<'static>> {
        if let Some(i) = self.ready {
            return Ok(i);
        }
        let i = self.find(drain)?;
        self.ready = Some(i);
        Ok(i)
    }

    /// Puts cursor `i` back in the tree its state says, with its key: the
    /// next event's timestamp if it has one (ready), else how long it is
    /// known empty (idle).
    fn reposition(cursors: &mut [Cursor<'a, B>], trees: &mut Trees<'_>, i: usize) {
        let Some(c) = cursors.get_mut(i) else { return };
        let head = c.head_ts();
        let empty = c.known_empty_until().unwrap_or(0);
        let ready = trees.contains(Which::Ready, i);
        match (ready, head) {
            (true, Some(ts)) => trees.update(Which::Ready, i, ts),
            (true, None) => {
                trees.remove(Which::Ready, i);
                trees.push(Which::Idle, i, empty);
            }
            (false, Some(ts)) => {
                trees.remove(Which::Idle, i);
                trees.push(Which::Ready, i, ts);
            }
            (false, None) => trees.update(Which::Idle, i, empty),
        }
    }

    fn find(&mut self, drain: bool) -> Result<usize, Step<'static>> {
        let cursors = self.cursors.as_mut();
        let trees = &mut Trees::of(self.nodes.as_mut(), cursors.len());
        if let Some(i) = self.last {
            if let Some(c) = cursors.get_mut(i) {
                c.step();
            }
        }
        let touched = self.last.take().or(self.run.map(|r| r.0));
        // Fast path: the cursor that won last time keeps winning while its
        // records are no later than every other CPU's next one (whose heads
        // cannot change while loaded) and every empty CPU's flush barrier.
        // It stays the top of the ready tree: its key only grows to the
        // limit.
        if let Some((i, mut limit, was_drain)) = self.run {
            if was_drain == drain {
                if let Some(ts) = cursors.get_mut(i).and_then(|c| c.head_ts()) {
                    if limit.admits(ts, &mut || Self::exact_limit(trees, drain).0) {
                        self.run = Some((i, limit, drain));
                        trees.update(Which::Ready, i, ts);
                        return Ok(i);
                    }
                }
            }
            self.run = None;
        }
        if let Some(i) = touched {
            Self::reposition(cursors, trees, i);
        }
        if self.mode != Some(drain) {
            // Idle keys mean "known empty until" without drain, "last
            // looked at when the stream was at" with it. Either way, on a
            // change of mode look at every idle CPU once: records may have
            // come since (a drain starts after the last writes).
            self.mode = Some(drain);
            for i in 0..cursors.len() {
                if trees.contains(Which::Idle, i) {
                    Self::reposition(cursors, trees, i);
                    if drain && trees.contains(Which::Idle, i) {
                        trees.update(Which::Idle, i, 0);
                    }
                }
            }
        }
        loop {
            let Some(i) = trees.top(Which::Ready) else {
                // Nothing ready: has an idle CPU got something since?
                let mut woke = false;
                for i in 0..cursors.len() {
                    if trees.contains(Which::Idle, i)
                        && cursors.get_mut(i).and_then(|c| c.head_ts()).is_some()
                    {
                        Self::reposition(cursors, trees, i);
                        woke = true;
                    }
                }
                if woke {
                    continue;
                }
                if drain {
                    // The end of the stream: losses after each CPU's last
                    // delivered sub-buffer come out now.
                    for (i, c) in cursors.iter_mut().enumerate() {
                        let lost = c.reader.take_unreported_loss();
                        if !lost.is_zero() {
                            c.tail = Some(lost);
                            c.pending = true;
                            return Ok(i);
                        }
                    }
                }
                return Err(Step::Idle);
            };
            let ts = trees.key(Which::Ready, i);
            if drain {
                // Idle CPUs do not block a drain, but one that has records
                // now should merge in order: look at the one looked at
                // longest ago (one per event: every idle CPU within as
                // many events as there are CPUs).
                if let Some(j) = trees.top(Which::Idle) {
                    if trees.key(Which::Idle, j) < ts {
                        if cursors.get_mut(j).and_then(|c| c.head_ts()).is_some() {
                            Self::reposition(cursors, trees, j);
                            continue;
                        }
                        trees.update(Which::Idle, j, ts);
                    }
                }
            } else {
                // An idle CPU known empty for less than `ts` may still hold
                // an older record: look at it (only those, the earliest
                // first), and block on it if it has nothing yet.
                if let Some(j) = trees.top(Which::Idle) {
                    if trees.key(Which::Idle, j) < ts {
                        let empty = cursors.get_mut(j).and_then(|c| {
                            c.head_ts()
                                .map_or(c.known_empty_until(), |_| Some(u64::MAX))
                        });
                        match empty {
                            Some(u64::MAX) => Self::reposition(cursors, trees, j),
                            Some(barrier) if barrier >= ts => trees.update(Which::Idle, j, barrier),
                            _ => {
                                let cpu = cursors.get(j).map_or(0, |c| c.cpu());
                                return Err(Step::Blocked { cpu });
                            }
                        }
                        continue;
                    }
                }
            }
            // Bounds of the exact limit, without a walk: the leader's own
            // key below, the key of the CPU left last (still ready) above.
            let barrier = Self::idle_limit(trees, drain);
            let left = touched
                .filter(|&t| t != i && trees.contains(Which::Ready, t))
                .map_or(u64::MAX, |t| trees.key(Which::Ready, t));
            let limit = Limit::new(ts, left, barrier);
            // Corrupt-sub-buffer and loss events come out one at a time.
            let plain = cursors.get(i).is_some_and(|c| !c.pending);
            if plain {
                self.run = Some((i, limit, drain));
            }
            return Ok(i);
        }
    }

    /// The earliest barrier of an idle CPU, unless draining (then idle
    /// CPUs do not hold the stream back).
    fn idle_limit(trees: &Trees<'_>, drain: bool) -> u64 {
        match trees.top(Which::Idle) {
            Some(j) if !drain => trees.key(Which::Idle, j),
            _ => u64::MAX,
        }
    }

    /// How far the top of the ready tree may run: to the next CPU's next
    /// event or the earliest idle barrier; and that next CPU, the
    /// runner-up.
    fn exact_limit(trees: &Trees<'_>, drain: bool) -> (u64, Option<usize>) {
        let (next, runner_up) = match trees.second(Which::Ready) {
            Some((j, key)) => (key, Some(j)),
            None => (u64::MAX, None),
        };
        (next.min(Self::idle_limit(trees, drain)), runner_up)
    }

    /// Whether [`Self::next`] would deliver an event (`None`) or why not,
    /// without handing anything out (so callers can wait in a loop).
    pub fn poll(&mut self, drain: bool) -> Option<Step<'static>> {
        self.prepare(drain).err()
    }

    /// The next event in timestamp order. With `drain`, CPUs with nothing
    /// readable do not block (use it at the end of a stream, when no more
    /// writes can come).
    pub fn next(&mut self, drain: bool) -> Step<'_> {
        match self.prepare(drain) {
            Ok(i) => {
                self.ready = None;
                self.last = Some(i);
                self.uncommitted.add(i);
                match self.cursors.as_mut().get_mut(i).and_then(|c| c.event()) {
                    Some(e) => Step::Event(e),
                    None => Step::Idle,
                }
            }
            Err(step) => step,
        }
    }

    /// Delivers a batch: every event that is ready now, up to `max`, to `f`,
    /// in timestamp order, until `f` answers [`Flow::Stop`]. A run of
    /// records from one CPU is handed out straight from its sub-buffer, with
    /// progress saved once per run, so this is the fast way to consume.
    /// Returns how many events `f` took, or why none was ready.
    pub fn next_batch(
        &mut self,
        drain: bool,
        max: usize,
        f: &mut impl FnMut(Event<'_>) -> Flow,
    ) -> Result<usize, Step<'static>> {
        let mut count = 0;
        while count < max {
            let i = match self.prepare(drain) {
                Ok(i) => i,
                Err(step) if count == 0 => return Err(step),
                Err(_) => break,
            };
            self.ready = None;
            let limit = match self.run {
                Some((r, limit, d)) if r == i && d == drain => Some(limit),
                _ => None,
            };
            let cursors = self.cursors.as_mut();
            let mut trees = Trees::of(self.nodes.as_mut(), cursors.len());
            let Some(c) = cursors.get_mut(i) else { break };
            let plain = c.plain();
            match limit {
                Some(mut limit) if plain => {
                    let (mut i, mut declined, mut switched) = (i, false, false);
                    self.last = None;
                    // An idle CPU due a look (its key is its barrier, or in
                    // a drain when it was last looked at) ends the batch's
                    // switching and goes through `find`. The idle tree does
                    // not change in this loop.
                    let idle = trees.top_entry(Which::Idle).map_or(u64::MAX, |e| e.1);
                    let barrier = if drain { u64::MAX } else { idle };
                    // Runs, switching straight from one to the next while
                    // the next leader has a record decoded and no idle CPU
                    // holds it back (the common case; `find` handles the
                    // rest).
                    // The run that ends the loop may go on next time, while
                    // its cursor still leads (before it is repositioned).
                    self.run = None;
                    let mut ahead = None;
                    while let Some(c) = cursors.get_mut(i) {
                        let mut exact = || Self::exact_limit(&trees, drain).0;
                        let (n, stopped) = c.run(&mut limit, &mut exact, max - count, f, ahead);
                        declined = stopped;
                        count += n;
                        let ts = match c.head {
                            Some(ts) if !stopped && count < max => ts,
                            _ => {
                                self.run = Some((i, limit, drain));
                                break;
                            }
                        };
                        // `i` led, so it is in the ready tree.
                        trees.push(Which::Ready, i, ts);
                        let Some((w, lead)) = trees.top_entry(Which::Ready) else {
                            break;
                        };
                        if idle < lead || !cursors.get(w).is_some_and(Cursor::runs_now) {
                            break;
                        }
                        // After a run of several records the next likely
                        // is one too: its exact limit is due anyway, and
                        // with it the runner-up, whose records the run
                        // prefetches. After one record, the bounds may
                        // spare the walk (the CPUs-in-turn case).
                        (limit, ahead) = if n > 1 {
                            let (exact, runner_up) = Self::exact_limit(&trees, drain);
                            let cpus = cursors.len();
                            let ahead = runner_up.and_then(|j| cursors.get(j)?.ahead(cpus));
                            (Limit::exact(exact), ahead)
                        } else {
                            (Limit::new(lead, ts, barrier), None)
                        };
                        (i, switched) = (w, switched || w != i);
                    }
                    if switched {
                        self.uncommitted = Touched::Many;
                    } else {
                        self.uncommitted.add(i);
                    }
                    if declined {
                        break;
                    }
                }
                _ => {
                    let Some(e) = c.event() else { break };
                    let taken = match e {
                        Event::Corrupt { error, .. } => Taken::Corrupt(error),
                        _ => Taken::Other,
                    };
                    if f(e) == Flow::Stop {
                        c.unget(taken);
                        break;
                    }
                    self.last = Some(i);
                    self.uncommitted.add(i);
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    /// Publishes every CPU's progress: the events handed out so far are
    /// done (see [`CpuReader::commit`]). A consumer calls it once its output
    /// accepted them; until then a consumer that starts after this one
    /// would deliver them again.
    pub fn commit(&mut self) {
        let cursors = self.cursors.as_mut();
        if let Some(i) = self.last.take() {
            if let Some(c) = cursors.get_mut(i) {
                c.step();
            }
        }
        match core::mem::replace(&mut self.uncommitted, Touched::None) {
            Touched::None => {}
            Touched::One(i) => {
                if let Some(c) = cursors.get_mut(i) {
                    c.commit();
                }
            }
            Touched::Many => cursors.iter_mut().for_each(Cursor::commit),
        }
    }
}
