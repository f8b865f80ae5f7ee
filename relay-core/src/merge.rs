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
//! The merger is zero-copy on no-overwrite channels: records borrow the
//! channel until the next call. On overwrite channels each cursor copies one
//! whole sub-buffer at a time into its own buffer (never record by record).

use crate::format::{Record, Records};
use crate::reader::{CpuReader, Lost, ReadError};
use crate::Mode;

/// Something the merged stream delivers.
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
    },
    /// A corrupt sub-buffer of `cpu` was skipped (its records are lost).
    Corrupt {
        /// The CPU.
        cpu: u32,
        /// What was wrong.
        error: ReadError,
    },
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
struct Loaded {
    seq: u64,
    copied: bool,
    content: usize,
    off: usize,
    lost: Option<Lost>,
    ts_begin: u64,
    delivered: u64,
    lost_reported: Lost,
}

/// One CPU's position in the merged stream.
pub struct Cursor<'a, B> {
    reader: CpuReader<'a>,
    buf: B,
    loaded: Option<Loaded>,
    /// Set when the event at `off` was handed out and must be stepped over.
    handed_out: bool,
    /// (barrier, next): nothing older than `barrier` once `consumed >= next`.
    flushed: Option<(u64, u64)>,
    corrupt: Option<ReadError>,
    /// The next event's timestamp, while the loaded sub-buffer has one.
    head: Option<u64>,
    /// Losses found at the end of a stream, to deliver as the last event.
    tail: Option<Lost>,
    /// Timestamp of the last event delivered (where a tail loss goes).
    last_ts: u64,
}

impl<'a, B: AsMut<[u8]> + AsRef<[u8]>> Cursor<'a, B> {
    /// A cursor over `reader`. `buf` must hold one sub-buffer on overwrite
    /// channels (copies go there); it is unused (may be empty) otherwise.
    pub fn new(reader: CpuReader<'a>, buf: B) -> Self {
        Cursor {
            reader,
            buf,
            loaded: None,
            handed_out: false,
            flushed: None,
            corrupt: None,
            head: None,
            tail: None,
            last_ts: 0,
        }
    }

    /// The CPU.
    pub fn cpu(&self) -> u32 {
        self.reader.cpu()
    }

    /// The underlying reader.
    pub fn reader(&self) -> &CpuReader<'a> {
        &self.reader
    }

    fn bytes(&self, l: &Loaded) -> &[u8] {
        let all: &[u8] = if l.copied {
            self.buf.as_ref()
        } else {
            self.reader.sealed_bytes(l.seq)
        };
        all.get(..l.content).unwrap_or(&[])
    }

    /// Finishes the current sub-buffer if it is exhausted, then loads the
    /// next one if there is none. Returns false if nothing is loaded.
    fn fill(&mut self) -> bool {
        if let Some(l) = self.loaded {
            if l.lost.is_some() || l.off < l.content {
                return true;
            }
            self.reader.finish(l.seq, &l.lost_reported, l.delivered);
            self.loaded = None;
        }
        let loaded = match self.reader.mode() {
            Mode::NoOverwrite => self.reader.peek().map(|d| d.map(|d| (d, false))),
            Mode::Overwrite => self
                .reader
                .next(self.buf.as_mut())
                .map(|d| d.map(|d| (d, true))),
        };
        match loaded {
            Ok(Some((d, copied))) => {
                let l = Loaded {
                    seq: d.seq,
                    copied,
                    content: d.view.header().content_size as usize,
                    off: d.records().offset(),
                    lost: (!d.lost_before.is_zero()).then_some(d.lost_before),
                    ts_begin: d.view.header().ts_begin,
                    delivered: 0,
                    lost_reported: d.lost_before,
                };
                self.loaded = Some(l);
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.corrupt = Some(e);
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
            if self.corrupt.is_some() {
                return Some(0);
            }
            if !self.fill() {
                return self.corrupt.map(|_| 0);
            }
            let l = self.loaded?;
            match Records::resume(self.bytes(&l), l.off).next() {
                Some(r) => return Some(r.ts),
                None if l.lost.is_some() => return Some(l.ts_begin),
                None => {
                    // Only discarded records were left: finish this one.
                    if let Some(l) = self.loaded.as_mut() {
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
        let Some(mut l) = self.loaded else { return };
        if l.lost.take().is_none() {
            let mut records = Records::resume(self.bytes(&l), l.off);
            if records.next().is_some() {
                l.delivered += 1;
            }
            l.off = records.offset();
            self.reader.save_progress(l.seq, l.off as u64);
        }
        self.loaded = Some(l);
    }

    /// The event at the cursor (after `head_ts` returned `Some`).
    fn event(&mut self) -> Option<Event<'_>> {
        let cpu = self.cpu();
        if let Some(error) = self.corrupt.take() {
            self.head = None;
            return Some(Event::Corrupt { cpu, error });
        }
        if let Some(lost) = self.tail.take() {
            return Some(Event::Lost {
                cpu,
                lost,
                ts: self.last_ts,
            });
        }
        self.handed_out = true;
        let l = self.loaded?;
        let mut records = Records::resume(self.bytes(&l), l.off);
        let record = records.next();
        match (l.lost, record) {
            (Some(lost), r) => Some(Event::Lost {
                cpu,
                lost,
                ts: r.map_or(l.ts_begin, |r| r.ts),
            }),
            (None, Some(record)) => Some(Event::Record { cpu, record }),
            (None, None) => None,
        }
    }

    /// Whether this CPU provably holds nothing older than `ts` (it has
    /// nothing readable now).
    fn known_empty_until(&self, ts: u64) -> bool {
        match self.flushed {
            Some((barrier, next)) => {
                barrier >= ts && self.reader.consumed().wrapping_sub(next) < 1 << 63
            }
            None => false,
        }
    }
}

/// The k-way merge over every CPU's cursor. `C` is the cursors' storage:
/// a slice, an array, a `Vec`, a kernel `KVec`.
pub struct Merger<'a, B, C> {
    cursors: C,
    last: Option<usize>,
    _cursor: core::marker::PhantomData<Cursor<'a, B>>,
}

impl<'a, B: AsMut<[u8]> + AsRef<[u8]> + 'a, C: AsMut<[Cursor<'a, B>]>> Merger<'a, B, C> {
    /// A merger over `cursors` (one per CPU, any order).
    pub fn new(cursors: C) -> Self {
        Merger {
            cursors,
            last: None,
            _cursor: core::marker::PhantomData,
        }
    }

    /// The cursors.
    pub fn cursors(&mut self) -> &mut [Cursor<'a, B>] {
        self.cursors.as_mut()
    }

    /// Tells the merger that `cpu` was flushed (see [`crate::Flushed`]): it
    /// holds nothing older than `barrier` once sub-buffer `next` is reached.
    pub fn flushed(&mut self, cpu: u32, barrier: u64, next: u64) {
        if let Some(c) = self.cursors.as_mut().iter_mut().find(|c| c.cpu() == cpu) {
            c.flushed = Some((barrier, next));
        }
    }

    /// Steps past the event handed out last and finds the next one: its
    /// cursor index, or why there is none.
    fn prepare(&mut self, drain: bool) -> Result<usize, Step<'static>> {
        let cursors = self.cursors.as_mut();
        if let Some(i) = self.last.take() {
            if let Some(c) = cursors.get_mut(i) {
                c.step();
            }
        }
        let mut best: Option<(u64, usize)> = None;
        for (i, c) in cursors.iter_mut().enumerate() {
            if let Some(ts) = c.head_ts() {
                if best.is_none_or(|(b, _)| ts < b) {
                    best = Some((ts, i));
                }
            }
        }
        let Some((ts, i)) = best else {
            if let Some(i) = cursors.iter().position(|c| c.tail.is_some()) {
                return Ok(i);
            }
            if drain {
                // The end of the stream: losses after each CPU's last
                // delivered sub-buffer come out now.
                for (i, c) in cursors.iter_mut().enumerate() {
                    let lost = c.reader.take_unreported_loss();
                    if !lost.is_zero() {
                        c.tail = Some(lost);
                        return Ok(i);
                    }
                }
            }
            return Err(Step::Idle);
        };
        if !drain {
            if let Some(blocker) = cursors
                .iter()
                .find(|c| c.loaded.is_none() && !c.known_empty_until(ts))
            {
                return Err(Step::Blocked { cpu: blocker.cpu() });
            }
        }
        Ok(i)
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
                self.last = Some(i);
                match self.cursors.as_mut().get_mut(i).and_then(|c| c.event()) {
                    Some(e) => Step::Event(e),
                    None => Step::Idle,
                }
            }
            Err(step) => step,
        }
    }
}
