//! A sequential reference model of the writer/reader policy, and a checker
//! that runs one operation sequence against both the model and the real
//! channel (feature `model`; std only, never in the kernel build).
//!
//! The differential test feeds it long random sequences; the `model` fuzz
//! target feeds it whatever the fuzzer finds. Any divergence panics with
//! the operation index, so both report it the same way.

extern crate std;

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use crate::format::{record_total, SUBBUF_HEADER_SIZE};
use crate::writer::{CpuLocal, Grant, Shared, Sharing, WriteError, Writer};
use crate::{
    AtomicU64, Channel, ChannelFlags, Clock, CpuReader, Geometry, GeometryParams, Lost, Mode,
};

/// One step of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reserve `len` payload bytes and leave the write unfinished: later
    /// operations are nested inside it, as an interrupt's would be.
    Begin {
        /// Payload length.
        len: usize,
        /// Whether the write will be discarded instead of committed.
        discard: bool,
    },
    /// Finish the innermost unfinished write.
    Finish,
    /// A complete write of `len` payload bytes (at least 8 are used).
    Write {
        /// Payload length.
        len: usize,
    },
    /// Flush the open sub-buffer.
    Flush,
    /// Read one sub-buffer, in place or as a copy.
    Read {
        /// Use the zero-copy path (no-overwrite channels).
        in_place: bool,
    },
}

/// A channel configuration for [`check`].
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Overwrite or not.
    pub mode: Mode,
    /// Sub-buffer size (a valid geometry value).
    pub subbuf_size: u64,
    /// Sub-buffer count (a valid geometry value).
    pub subbuf_count: u64,
    /// Use the [`CpuLocal`] writer instead of the [`Shared`] one.
    pub local: bool,
    /// At most this many unfinished writes at once.
    pub max_nesting: usize,
}

/// What a checked sequence did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records accepted.
    pub accepted: u64,
    /// Records refused.
    pub refused: u64,
    /// Records delivered.
    pub delivered: u64,
    /// Losses counted by the channel.
    pub lost: Lost,
}

/// A payload of `len` bytes carrying `id` (when `len >= 8`) and bytes derived from it.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect();
    let n = len.min(8);
    p[..n].copy_from_slice(&id.to_le_bytes()[..n]);
    p
}

/// The id in a payload made by [`payload`], after checking every byte
/// against `len_of(id)`; `None` if the payload is torn or corrupt.
pub fn payload_id(p: &[u8], len_of: impl Fn(u64) -> Option<usize>) -> Option<u64> {
    let id = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    (p == &payload(id, len_of(id)?)[..]).then_some(id)
}

#[derive(Debug, Default)]
struct Sub {
    fill: usize,
    records: Vec<Option<u64>>,
    pending: usize,
    closed: bool,
}

/// The policy as a plain sequential program.
struct Model {
    size: usize,
    count: u64,
    mode: Mode,
    subs: BTreeMap<u64, Sub>,
    open: Option<u64>,
    next: u64,
    consumed: u64,
    lost: Lost,
}

impl Model {
    fn sealed(&self, seq: u64) -> bool {
        self.subs
            .get(&seq)
            .is_some_and(|s| s.closed && s.pending == 0)
    }

    fn reserve(&mut self, len: usize) -> Result<(u64, usize), WriteError> {
        let total = match record_total(len) {
            Some(t) if t <= self.size - SUBBUF_HEADER_SIZE => t,
            _ => {
                self.lost.too_big += 1;
                return Err(WriteError::TooBig);
            }
        };
        if let Some(seq) = self.open {
            let s = self.subs.get_mut(&seq).expect("open sub-buffer exists");
            if s.fill + total <= self.size {
                s.fill += total;
                s.pending += 1;
                s.records.push(None);
                return Ok((seq, s.records.len() - 1));
            }
        }
        let target = self.open.map_or(self.next, |s| s + 1);
        if let Some(prev) = target.checked_sub(self.count) {
            let free = self.sealed(prev)
                && match self.mode {
                    Mode::NoOverwrite => self.consumed > prev,
                    Mode::Overwrite => true,
                };
            if !free {
                self.lost.full += 1;
                return Err(WriteError::Full);
            }
            let old = self.subs.remove(&prev).expect("sealed sub-buffer exists");
            if self.mode == Mode::Overwrite && self.consumed <= prev {
                self.lost.overwrite += old.records.iter().flatten().count() as u64;
                self.consumed = prev + 1;
            }
        }
        if let Some(seq) = self.open {
            self.subs
                .get_mut(&seq)
                .expect("open sub-buffer exists")
                .closed = true;
        }
        self.open = Some(target);
        self.next = target + 1;
        let fill = SUBBUF_HEADER_SIZE + total;
        self.subs.insert(
            target,
            Sub {
                fill,
                records: vec![None],
                pending: 1,
                closed: false,
            },
        );
        Ok((target, 0))
    }

    fn commit(&mut self, (seq, index): (u64, usize), id: Option<u64>) {
        let s = self.subs.get_mut(&seq).expect("reserved sub-buffer exists");
        s.records[index] = id;
        s.pending -= 1;
    }

    fn flush(&mut self) {
        if let Some(seq) = self.open.take() {
            self.subs
                .get_mut(&seq)
                .expect("open sub-buffer exists")
                .closed = true;
        }
    }

    fn read(&mut self) -> Option<(u64, Vec<u64>)> {
        if !self.sealed(self.consumed) {
            return None;
        }
        let seq = self.consumed;
        self.consumed += 1;
        Some((
            seq,
            self.subs[&seq].records.iter().flatten().copied().collect(),
        ))
    }
}

/// Runs `ops` against the model and a real channel configured by `config`
/// and panics on the first divergence. At the end it finishes every
/// unfinished write, flushes, drains, and checks that every record was
/// delivered once or counted lost once. Invalid geometry values panic too:
/// pass valid ones.
pub fn check(config: Config, ops: &[Op]) -> Summary {
    if config.local {
        run::<CpuLocal>(config, ops)
    } else {
        run::<Shared>(config, ops)
    }
}

trait MakeWriter: Sharing {
    fn make<'a>(ch: &Channel<'a>) -> Writer<'a, Self>;
}
impl MakeWriter for Shared {
    fn make<'a>(ch: &Channel<'a>) -> Writer<'a, Self> {
        ch.writer(0).expect("cpu 0 exists")
    }
}
impl MakeWriter for CpuLocal {
    fn make<'a>(ch: &Channel<'a>) -> Writer<'a, Self> {
        ch.local_writer(0).expect("cpu 0 exists")
    }
}

struct Unfinished<'w, 'a, S: Sharing> {
    grant: Grant<'w, 'a, S>,
    id: u64,
    counted: bool,
    model: (u64, usize),
}

struct Reading<'r, 'a> {
    reader: &'r mut CpuReader<'a>,
    buf: Vec<u8>,
    lens: BTreeMap<u64, usize>,
    last_ts: u64,
    delivered: u64,
    reported: Lost,
}

impl Reading<'_, '_> {
    /// One read on both sides; false if neither had anything.
    fn read(&mut self, model: &mut Model, in_place: bool, step: usize) -> bool {
        let want = model.read();
        let lens = &self.lens;
        let len_of = |id| lens.get(&id).copied();
        let got = if in_place && model.mode == Mode::NoOverwrite {
            self.reader.peek().expect("valid sub-buffer").map(|d| {
                let recs: Vec<(Option<u64>, u64)> = d
                    .records()
                    .map(|r| (payload_id(r.payload, len_of), r.ts))
                    .collect();
                (d.seq, recs, d.lost_before)
            })
        } else {
            self.reader
                .next(&mut self.buf)
                .expect("valid sub-buffer")
                .map(|d| {
                    let recs: Vec<(Option<u64>, u64)> = d
                        .records()
                        .map(|r| (payload_id(r.payload, len_of), r.ts))
                        .collect();
                    (d.seq, recs, d.lost_before)
                })
        };
        match (want, got) {
            (None, None) => false,
            (Some((want_seq, want_ids)), Some((seq, recs, lost))) => {
                assert_eq!(seq, want_seq, "step {step}: sub-buffer order");
                let ids: Vec<u64> = recs
                    .iter()
                    .map(|r| {
                        r.0.unwrap_or_else(|| {
                            panic!("step {step}: torn or corrupt record in sub-buffer {seq}")
                        })
                    })
                    .collect();
                assert_eq!(ids, want_ids, "step {step}: records of sub-buffer {seq}");
                for &(_, ts) in &recs {
                    assert!(
                        ts > self.last_ts,
                        "step {step}: timestamps must increase in buffer order"
                    );
                    self.last_ts = ts;
                }
                self.delivered += ids.len() as u64;
                self.reader.finish(seq, &lost, ids.len() as u64);
                self.reader.commit();
                self.reported.full += lost.full;
                self.reported.too_big += lost.too_big;
                self.reported.overwrite += lost.overwrite;
                true
            }
            (w, g) => panic!(
                "step {step}: model has {w:?}, channel has {:?}",
                g.map(|x| x.0)
            ),
        }
    }
}

fn run<S: MakeWriter>(config: Config, ops: &[Op]) -> Summary {
    let geo = Geometry::new(GeometryParams {
        subbuf_size: config.subbuf_size,
        subbuf_count: config.subbuf_count,
        cpu_count: 1,
        page_size: 4096,
    })
    .expect("check() needs a valid geometry");
    let mem: Vec<AtomicU64> = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let flags = if config.mode == Mode::Overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    let channel = Channel::create(&mem, geo, flags, Clock::Counter).expect("region fits");
    let writer = S::make(&channel);
    let mut reader = channel.reader(0).expect("cpu 0 exists");
    let mut model = Model {
        size: geo.subbuf_size() as usize,
        count: geo.subbuf_count().into(),
        mode: config.mode,
        subs: BTreeMap::new(),
        open: None,
        next: 0,
        consumed: 0,
        lost: Lost::default(),
    };
    let mut now = 0u64;
    let mut clock = || {
        now += 1;
        now
    };
    let mut reading = Reading {
        reader: &mut reader,
        buf: vec![0; geo.subbuf_size() as usize],
        lens: BTreeMap::new(),
        last_ts: 0,
        delivered: 0,
        reported: Lost::default(),
    };
    let mut unfinished: Vec<Unfinished<S>> = Vec::new();
    let (mut next_id, mut accepted, mut refused) = (0u64, 0u64, 0u64);

    for (step, &op) in ops.iter().enumerate() {
        match op {
            Op::Begin { len, discard } if unfinished.len() < config.max_nesting => {
                let want = model.reserve(len);
                match (writer.reserve(len, &mut clock), want) {
                    (Ok(mut grant), Ok(m)) => {
                        let id = next_id;
                        next_id += 1;
                        reading.lens.insert(id, len);
                        if len >= 8 {
                            grant.write_payload(&payload(id, len));
                        }
                        unfinished.push(Unfinished {
                            grant,
                            id,
                            counted: len >= 8 && !discard,
                            model: m,
                        });
                    }
                    (Err(e), Err(w)) => {
                        assert_eq!(e, w, "step {step}");
                        refused += 1;
                    }
                    (g, w) => panic!("step {step}: channel {:?}, model {w:?}", g.map(|_| ())),
                }
            }
            Op::Begin { .. } => {}
            Op::Finish => {
                if let Some(u) = unfinished.pop() {
                    finish(u, &mut model, &mut accepted);
                }
            }
            Op::Write { len } => {
                let len = len.max(8);
                let id = next_id;
                next_id += 1;
                reading.lens.insert(id, len);
                let want = model.reserve(len);
                match (writer.write(1, &payload(id, len), &mut clock), want) {
                    (Ok(_), Ok(m)) => {
                        model.commit(m, Some(id));
                        accepted += 1;
                    }
                    (Err(e), Err(w)) => {
                        assert_eq!(e, w, "step {step}");
                        refused += 1;
                    }
                    (g, w) => panic!("step {step}: channel {g:?}, model {w:?}"),
                }
            }
            Op::Flush => {
                let _ = writer.flush(&mut clock);
                model.flush();
            }
            Op::Read { in_place } => {
                reading.read(&mut model, in_place, step);
            }
        }
        let lost = reading.reader.stats().lost;
        assert_eq!(lost, model.lost, "step {step}: loss counters");
    }
    while let Some(u) = unfinished.pop() {
        finish(u, &mut model, &mut accepted);
    }
    let _ = writer.flush(&mut clock);
    model.flush();
    while reading.read(&mut model, false, ops.len()) {}
    assert!(
        reading.reader.ready().is_none(),
        "the channel has data the model does not"
    );

    let stats = reading.reader.stats();
    assert_eq!(stats.lost, model.lost, "final loss counters");
    assert_eq!(
        accepted,
        reading.delivered + stats.lost.overwrite,
        "accepted = delivered + overwritten"
    );
    assert_eq!(
        refused,
        stats.lost.full + stats.lost.too_big,
        "refused = lost full + too big"
    );
    assert_eq!(stats.produced, accepted, "produced counter");
    assert_eq!(
        stats.consumed_records, reading.delivered,
        "consumed counter"
    );
    assert!(
        reading.reported.total() <= stats.lost.total(),
        "{:?} reported, {:?} counted",
        reading.reported,
        stats.lost
    );
    Summary {
        accepted,
        refused,
        delivered: reading.delivered,
        lost: stats.lost,
    }
}

fn finish<S: Sharing>(u: Unfinished<'_, '_, S>, model: &mut Model, accepted: &mut u64) {
    let _ = if u.counted {
        u.grant.commit(1)
    } else {
        u.grant.discard()
    };
    model.commit(u.model, u.counted.then_some(u.id));
    if u.counted {
        *accepted += 1;
    }
}
