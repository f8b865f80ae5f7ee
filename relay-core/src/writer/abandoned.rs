//! Sub-buffers a dead writer left unfinished, closed and sealed so that the
//! buffer moves on.
//!
//! A writer that dies between its reservation and its commit leaves its
//! sub-buffer unsealed for good: no reader gets it, and, once writers lap
//! the ring, no writer can reuse its slot (no-overwrite and overwrite
//! alike). Only whoever *knows* that no writer of the channel is alive may
//! repair it (a userspace producer proves it with the producer lock, see
//! docs/FORMAT.md "Producers that die"); a slow writer would otherwise have
//! its record cut off.
//!
//! A repair walks the unfinished sub-buffer by its records' `len` words,
//! which every writer stores (flag `RESERVED`) right after its reservation:
//!
//! - a committed record (no `RESERVED`, a timestamp not older than the
//!   sub-buffer's first) is kept;
//! - a reserved one is marked `DISCARDED` and counted *abandoned*;
//! - anything else (a writer died between its reservation and that store,
//!   or the sub-buffer's opener died before writing its header) ends the
//!   walk: what follows is cut off, its committed records counted
//!   abandoned too (the commit word says how many were committed).
//!
//! The sub-buffer is then closed at the end of the walk, its header says
//! how many records were abandoned (`close_flags::ABANDONED`), and it is
//! sealed. A record a dead writer reserved is never delivered, and nothing
//! half-written either: a record's header is written after its payload.

use super::{Sharing, Writer};
use crate::format::{
    close_flags, producer, record_flags, subbuf, Commit, Head, RecordHeader, Seal,
    RECORD_HEADER_SIZE, SUBBUF_HEADER_SIZE,
};
use crate::policy::required_seal;
use crate::sync::Ordering;

/// What [`Writer::repair_abandoned`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Sub-buffers closed and sealed.
    pub subbufs: u64,
    /// Records counted abandoned (`lost_abandoned`).
    pub records: u64,
    /// Slots a dead writer had taken for a sub-buffer it never opened,
    /// given back.
    pub slots: u64,
}

const HDR: usize = SUBBUF_HEADER_SIZE;
const ALIGN: usize = 8;

impl<S: Sharing> Writer<'_, S> {
    /// Closes and seals every sub-buffer of this CPU that a dead writer
    /// left unfinished (see the module docs), counting its lost records.
    ///
    /// Only call it when no writer of this CPU buffer is alive, nor will
    /// start before it returns: a live writer's reservation would be cut
    /// off, and its later commit would corrupt a sealed sub-buffer. Readers
    /// may run meanwhile. `clock` stamps what is closed.
    pub fn repair_abandoned(&self, clock: &mut impl FnMut() -> u64) -> Repaired {
        let mut done = Repaired::default();
        // An open sub-buffer is closed as a flush closes it: if everything
        // in it was committed, that seals it.
        let _ = self.flush(clock);
        let b = &self.b;
        let next = match Head::decode(b.head.load(Ordering::Acquire), b.shift) {
            Head::Closed { next, .. } => next,
            Head::Open { seq, .. } => seq.wrapping_add(1),
        };
        for slot in 0..b.seals.len() {
            let Some(seal_word) = b.seals.get(slot) else {
                continue;
            };
            let Seal::Opening(seq) = Seal::decode(seal_word.load(Ordering::Acquire)) else {
                continue;
            };
            if seq.wrapping_sub(next) < 1 << 63 {
                // Taken, never opened (the head never reached it): give the
                // slot back to the sub-buffer that had it.
                seal_word.store(required_seal(seq, b.count).encode(), Ordering::Release);
                done.slots += 1;
                continue;
            }
            done.records += self.close_abandoned(seq, slot, clock);
            done.subbufs += 1;
        }
        done
    }

    /// Closes and seals unfinished sub-buffer `seq` in `slot`; returns the
    /// records it counted abandoned.
    fn close_abandoned(&self, seq: u64, slot: usize, clock: &mut impl FnMut() -> u64) -> u64 {
        let b = &self.b;
        let size = b.size() as usize;
        let words = b.subbuf_words(slot);
        let word = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
        let put = |i: usize, v: u64| {
            if let Some(w) = words.get(i) {
                w.store(v, Ordering::Relaxed);
            }
        };
        let commit = b.commits.get(slot).map_or(0, |w| w.load(Ordering::Acquire));
        let committed = u64::from(Commit::records(commit));
        let closed = commit & Commit::CLOSED != 0;
        let content_word = word(subbuf::CONTENT);
        // Where reservations end: what the closer wrote, else the whole
        // sub-buffer (the walk stops at the first unmarked bytes).
        let limit = if closed {
            (content_word as u32 as usize).clamp(HDR, size)
        } else {
            size
        };
        let now = clock();
        let header_ok = word(subbuf::SEQ) == seq;
        let ts_begin = word(subbuf::TS_BEGIN);
        let (mut kept, mut dead) = (0u64, 0u64);
        let mut off = HDR;
        let mut cut = false;
        let mut ts_last = ts_begin;
        if header_ok {
            while off + RECORD_HEADER_SIZE <= limit {
                let w0 = word(off / 8);
                let len = w0 as u32 as usize;
                let flags = (w0 >> 48) as u16;
                let step = (len + ALIGN - 1) & !(ALIGN - 1);
                if len < RECORD_HEADER_SIZE || step > limit - off {
                    cut = true;
                    break;
                }
                if flags == record_flags::RESERVED {
                    put(
                        off / 8,
                        RecordHeader::word0(len as u32, 0, record_flags::DISCARDED),
                    );
                    dead += 1;
                } else if flags & !record_flags::DISCARDED != 0 {
                    cut = true;
                    break;
                } else {
                    // A header from this sub-buffer's previous lap is older
                    // than its first record (writers' clocks never go back).
                    let ts = word(off / 8 + 1);
                    if ts < ts_begin {
                        cut = true;
                        break;
                    }
                    ts_last = ts_last.max(ts);
                    if flags & record_flags::DISCARDED == 0 {
                        kept += 1;
                    }
                }
                off += step;
            }
        } else {
            // The opener died before its header: nothing here can be told
            // from what the slot held before. Start the sub-buffer afresh.
            self.write_subbuf_header(seq, now);
            cut = true;
        }
        // Whoever stopped the walk before the closer's end, or the opener
        // who wrote no header, reserved a record too.
        let unmarked = u64::from(cut && (closed || !header_ok));
        let abandoned = dead + committed.saturating_sub(kept) + unmarked;
        let mut content = off;
        if content == HDR {
            // A sub-buffer holds at least one record: a discarded one.
            put(
                HDR / 8,
                RecordHeader::word0(RECORD_HEADER_SIZE as u32, 0, record_flags::DISCARDED),
            );
            put(HDR / 8 + 1, now);
            content = HDR + RECORD_HEADER_SIZE;
        }
        let flags = if closed {
            (content_word >> 32) as u32
        } else {
            close_flags::FLUSHED
        };
        put(
            subbuf::TS_END,
            if closed {
                word(subbuf::TS_END)
            } else {
                now.max(ts_last)
            },
        );
        put(
            subbuf::CONTENT,
            content as u64 | u64::from(flags | close_flags::ABANDONED) << 32,
        );
        if let Some(w) = b.commits.get(slot) {
            w.store(Commit::CLOSED | b.size() | kept << 32, Ordering::Relaxed);
        }
        self.bump(producer::LOST_ABANDONED, abandoned);
        let _ = self.seal_records(seq, slot, kept as u32, abandoned as u32);
        abandoned
    }
}
