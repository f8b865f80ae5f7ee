//! Differential test: long random sequences of writes (some nested inside an
//! unfinished write, as an interrupt would), flushes and reads, run against
//! relay-core and against a plain sequential model of the same policy. Every
//! writer answer, every delivered record and every counter must agree, and
//! at the end every record is delivered exactly once or counted lost once.

mod common;

use std::collections::{BTreeMap, VecDeque};

use common::{check_payload, create, geometry, payload, region, Rng};
use relay_core::{Channel, CpuLocal, Lost, Mode, Shared, Sharing, WriteError, Writer};

/// Both writer flavours run the same sequences.
trait MakeWriter: Sharing {
    fn make<'a>(ch: &Channel<'a>) -> Writer<'a, Self>;
}
impl MakeWriter for Shared {
    fn make<'a>(ch: &Channel<'a>) -> Writer<'a, Self> {
        ch.writer(0).unwrap()
    }
}
impl MakeWriter for CpuLocal {
    fn make<'a>(ch: &Channel<'a>) -> Writer<'a, Self> {
        ch.local_writer(0).unwrap()
    }
}

const HDR: usize = 72;

/// One sub-buffer in the model.
#[derive(Debug, Default)]
struct Sub {
    fill: usize,
    /// Record ids in position order; `None` for discarded reservations.
    records: Vec<Option<u64>>,
    pending: usize,
    closed: bool,
}

/// The policy as a sequential program: what a writer must answer and what a
/// reader must get.
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

    /// Reserve: Ok((seq, index in sub)) or the refusal.
    fn reserve(&mut self, len: usize) -> Result<(u64, usize), WriteError> {
        let total = (16 + len + 7) & !7;
        if total > self.size - HDR {
            self.lost.too_big += 1;
            return Err(WriteError::TooBig);
        }
        if let Some(seq) = self.open {
            let s = self.subs.get_mut(&seq).unwrap();
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
            let old = self.subs.remove(&prev).unwrap();
            if self.mode == Mode::Overwrite && self.consumed <= prev {
                self.lost.overwrite += old.records.iter().flatten().count() as u64;
                self.consumed = prev + 1;
            }
        }
        if let Some(seq) = self.open {
            self.subs.get_mut(&seq).unwrap().closed = true;
        }
        self.open = Some(target);
        self.next = target + 1;
        self.subs.insert(
            target,
            Sub {
                fill: HDR + total,
                records: vec![None],
                pending: 1,
                closed: false,
            },
        );
        Ok((target, 0))
    }

    fn commit(&mut self, seq: u64, index: usize, id: Option<u64>) {
        let s = self.subs.get_mut(&seq).unwrap();
        s.records[index] = id;
        s.pending -= 1;
    }

    fn flush(&mut self) {
        if let Some(seq) = self.open.take() {
            self.subs.get_mut(&seq).unwrap().closed = true;
        }
    }

    /// The next sealed sub-buffer's records, consuming it.
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

struct Outstanding<'w, 'a, S: Sharing> {
    grant: relay_core::Grant<'w, 'a, S>,
    id: u64,
    len: usize,
    discard: bool,
    model: (u64, usize),
}

fn run<S: MakeWriter>(seed: u64, mode: Mode, size: u64, count: u64, ops: usize) -> (Lost, u64) {
    let geo = geometry(size, count, 1);
    let mem = region(&geo);
    let channel = create(&mem, geo, mode == Mode::Overwrite);
    let writer = S::make(&channel);
    let mut reader = channel.reader(0).unwrap();
    let mut model = Model {
        size: size as usize,
        count: geo.subbuf_count().into(),
        mode,
        subs: BTreeMap::new(),
        open: None,
        next: 0,
        consumed: 0,
        lost: Lost::default(),
    };
    let mut rng = Rng(seed | 1);
    let mut now = 0u64;
    let mut clock = || {
        now += 1;
        now
    };
    let max_payload = geo.max_payload() as usize;
    let mut lens: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stack: Vec<Outstanding<S>> = Vec::new();
    let mut next_id = 0u64;
    let (mut accepted, mut refused, mut delivered) = (0u64, 0u64, 0u64);
    let mut expected: VecDeque<u64> = VecDeque::new();
    let mut reported = Lost::default();
    let mut last_ts = 0u64;
    let mut buf = vec![0u8; size as usize];

    let mut read_one = |reader: &mut relay_core::CpuReader<'_>,
                        model: &mut Model,
                        lens: &BTreeMap<u64, usize>,
                        use_peek: bool,
                        delivered: &mut u64,
                        reported: &mut Lost,
                        last_ts: &mut u64| {
        let want = model.read();
        let got = if use_peek && mode == Mode::NoOverwrite {
            reader.peek().unwrap().map(|d| {
                let ids: Vec<(u64, u64)> = d
                    .records()
                    .map(|r| (check_payload(r.payload, |id| lens[&id]), r.ts))
                    .collect();
                (d.seq, ids, d.lost_before)
            })
        } else {
            reader.next(&mut buf).unwrap().map(|d| {
                let ids: Vec<(u64, u64)> = d
                    .records()
                    .map(|r| (check_payload(r.payload, |id| lens[&id]), r.ts))
                    .collect();
                (d.seq, ids, d.lost_before)
            })
        };
        match (want, got) {
            (None, None) => {}
            (Some((wseq, wids)), Some((seq, ids, lost))) => {
                assert_eq!(seq, wseq, "seed {seed}: sub-buffer order");
                let only_ids: Vec<u64> = ids.iter().map(|x| x.0).collect();
                assert_eq!(only_ids, wids, "seed {seed}: records of sub-buffer {seq}");
                for &(_, ts) in &ids {
                    assert!(
                        ts > *last_ts,
                        "seed {seed}: timestamps must increase in buffer order"
                    );
                    *last_ts = ts;
                }
                *delivered += ids.len() as u64;
                reader.finish(seq, &lost, ids.len() as u64);
                *reported = Lost {
                    full: reported.full + lost.full,
                    too_big: reported.too_big + lost.too_big,
                    overwrite: reported.overwrite + lost.overwrite,
                };
            }
            (w, g) => panic!("seed {seed}: model {w:?} vs channel {:?}", g.map(|x| x.0)),
        }
    };

    let trace = std::env::var("TRACE").is_ok();
    for _ in 0..ops {
        let op = rng.below(100);
        if trace {
            eprintln!(
                "op {op} stack {} head {:?} stats {:?}",
                stack.len(),
                reader.stats().open_seq,
                reader.stats()
            );
        }
        match op {
            // Begin a write and leave it outstanding: what follows is nested.
            0..=14 if stack.len() < 3 => {
                let len = pick_len(&mut rng, max_payload);
                let want = model.reserve(len);
                match (writer.reserve(len, &mut clock), want) {
                    (Ok(mut grant), Ok(m)) => {
                        let id = next_id;
                        next_id += 1;
                        lens.insert(id, len);
                        let discard = len >= 8 && rng.below(10) == 0;
                        if len >= 8 {
                            grant.write_payload(&payload(id, len));
                        }
                        if trace {
                            eprintln!("  push seq {} model {:?} len {len}", grant.subbuf_seq(), m);
                        }
                        stack.push(Outstanding {
                            grant,
                            id,
                            len,
                            discard,
                            model: m,
                        });
                    }
                    (Err(e), Err(w)) => {
                        assert_eq!(e, w, "seed {seed}");
                        refused += 1;
                    }
                    (g, w) => panic!("seed {seed}: channel {:?} vs model {w:?}", g.map(|_| ())),
                }
            }
            // Finish the innermost outstanding write.
            15..=29 if !stack.is_empty() => {
                let o = stack.pop().unwrap();
                let counted = o.len >= 8 && !o.discard;
                let _ = if counted {
                    o.grant.commit(1)
                } else {
                    o.grant.discard()
                };
                model.commit(o.model.0, o.model.1, counted.then_some(o.id));
                if counted {
                    accepted += 1;
                    expected.push_back(o.id);
                }
            }
            // A complete write (possibly nested).
            30..=79 => {
                let len = pick_len(&mut rng, max_payload).max(8);
                let id = next_id;
                next_id += 1;
                lens.insert(id, len);
                let want = model.reserve(len);
                match (writer.write(1, &payload(id, len), &mut clock), want) {
                    (Ok(_), Ok((seq, index))) => {
                        model.commit(seq, index, Some(id));
                        accepted += 1;
                    }
                    (Err(e), Err(w)) => {
                        assert_eq!(e, w, "seed {seed}");
                        refused += 1;
                    }
                    (g, w) => panic!("seed {seed}: channel {g:?} vs model {w:?}"),
                }
            }
            80..=84 => {
                let _ = writer.flush(&mut clock);
                model.flush();
            }
            _ => {
                let peek = rng.below(2) == 0;
                read_one(
                    &mut reader,
                    &mut model,
                    &lens,
                    peek,
                    &mut delivered,
                    &mut reported,
                    &mut last_ts,
                );
            }
        }
        let stats = reader.stats();
        assert_eq!(stats.lost, model.lost, "seed {seed}: loss counters");
    }
    // Finish every outstanding write, flush, drain.
    while let Some(o) = stack.pop() {
        let counted = o.len >= 8 && !o.discard;
        let _ = if counted {
            o.grant.commit(1)
        } else {
            o.grant.discard()
        };
        model.commit(o.model.0, o.model.1, counted.then_some(o.id));
        if counted {
            accepted += 1;
        }
    }
    let _ = writer.flush(&mut clock);
    model.flush();
    loop {
        let before = delivered;
        read_one(
            &mut reader,
            &mut model,
            &lens,
            false,
            &mut delivered,
            &mut reported,
            &mut last_ts,
        );
        if delivered == before && !model.sealed(model.consumed) && reader.ready().is_none() {
            break;
        }
    }
    let stats = reader.stats();
    assert_eq!(stats.lost, model.lost, "seed {seed}");
    // Exactly once or counted once.
    assert_eq!(
        accepted,
        delivered + stats.lost.overwrite,
        "seed {seed}: accepted records"
    );
    assert_eq!(
        refused,
        stats.lost.full + stats.lost.too_big,
        "seed {seed}: refused records"
    );
    assert_eq!(stats.produced, accepted, "seed {seed}: produced counter");
    assert_eq!(stats.consumed_records, delivered, "seed {seed}");
    // Losses reported in-stream never exceed what was counted.
    assert!(
        reported.total() <= stats.lost.total(),
        "seed {seed}: {reported:?} vs {:?}",
        stats.lost
    );
    (stats.lost, delivered)
}

/// Sums what the runs exercised, so that the tests cannot pass vacuously.
fn sweep(mode: Mode, salt: u64) -> (Lost, u64) {
    let mut total = (Lost::default(), 0);
    for seed in 0..600 {
        for &(size, count) in &[(128, 2), (256, 3), (512, 4), (256, 8)] {
            let (lost, delivered) = if seed % 2 == 0 {
                run::<Shared>(seed * salt + size, mode, size, count, 400)
            } else {
                run::<CpuLocal>(seed * salt + size, mode, size, count, 400)
            };
            total.0.full += lost.full;
            total.0.too_big += lost.too_big;
            total.0.overwrite += lost.overwrite;
            total.1 += delivered;
        }
    }
    total
}

fn pick_len(rng: &mut Rng, max: usize) -> usize {
    match rng.below(20) {
        0 => max,
        1 => max + 1 + rng.below(64) as usize,
        2 => 0,
        3..=5 => rng.below(max as u64 + 1) as usize,
        _ => 8 + rng.below(40) as usize,
    }
}

#[test]
fn no_overwrite_matches_model() {
    let (lost, delivered) = sweep(Mode::NoOverwrite, 7);
    assert!(
        lost.full > 1000 && lost.too_big > 1000 && delivered > 100_000,
        "{lost:?} {delivered}"
    );
    assert_eq!(lost.overwrite, 0);
}

#[test]
fn overwrite_matches_model() {
    let (lost, delivered) = sweep(Mode::Overwrite, 13);
    // `full` happens in overwrite mode too: the next slot is still held by an
    // outstanding (interrupted) write.
    assert!(
        lost.overwrite > 1000 && lost.full > 100 && delivered > 100_000,
        "{lost:?} {delivered}"
    );
}

#[test]
fn long_sequences() {
    for (seed, mode) in [(1, Mode::NoOverwrite), (2, Mode::Overwrite)] {
        run::<Shared>(seed, mode, 1024, 5, 200_000);
        run::<CpuLocal>(seed + 10, mode, 1024, 5, 200_000);
    }
}
