//! The merged stream: timestamp order across CPUs, blocking on CPUs that
//! may hold older records, losses reported in place.

mod common;

use std::cell::Cell;

use common::{check_payload, create, geometry, payload, region, Rng};
use relay_core::merge::{nodes_for, Cursor, Event, Flow, Merger, Node, Step};
use relay_core::{Channel, Lost};

fn cursors<'a>(ch: &Channel<'a>) -> Vec<Cursor<'a, Vec<u8>>> {
    (0..ch.geometry().cpu_count())
        .map(|cpu| {
            Cursor::new(
                ch.reader(cpu).unwrap(),
                vec![0u8; ch.geometry().subbuf_size() as usize],
            )
        })
        .collect()
}

type TestMerger<'a> = Merger<'a, Vec<u8>, Vec<Cursor<'a, Vec<u8>>>, Vec<Node>>;

/// A merger over every CPU of `ch`.
fn merger<'a>(ch: &Channel<'a>) -> TestMerger<'a> {
    let cs = cursors(ch);
    let nodes = vec![Node::default(); nodes_for(cs.len())];
    Merger::new(cs, nodes).unwrap()
}

/// Drains with `drain = true`, returning (cpu, id, ts) and the losses.
fn drain_all<'a>(merger: &mut TestMerger<'a>, len: usize) -> (Vec<(u32, u64, u64)>, Lost) {
    let mut out = Vec::new();
    let mut lost = Lost::default();
    loop {
        match merger.next(true) {
            Step::Event(Event::Record { cpu, record }) => {
                out.push((cpu, check_payload(record.payload, |_| len), record.ts))
            }
            Step::Event(Event::Lost { lost: l, .. }) => {
                lost.full += l.full;
                lost.overwrite += l.overwrite;
                lost.too_big += l.too_big;
            }
            Step::Event(Event::Corrupt { cpu, error }) => panic!("cpu {cpu}: {error}"),
            Step::Blocked { .. } => unreachable!("drain never blocks"),
            Step::Idle => {
                merger.commit();
                return (out, lost);
            }
        }
    }
}

#[test]
fn merges_cpus_in_timestamp_order() {
    let geo = geometry(512, 8, 3);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    let t = Cell::new(0u64);
    let mut clock = || {
        t.set(t.get() + 1);
        t.get()
    };
    let mut rng = Rng(7);
    for id in 0..150 {
        let cpu = rng.below(3) as u32;
        ch.local_writer(cpu)
            .unwrap()
            .write(1, &payload(id, 24), &mut clock)
            .unwrap();
    }
    for cpu in 0..3 {
        let _ = ch.writer(cpu).unwrap().flush(&mut clock);
    }
    let mut m = merger(&ch);
    let (out, lost) = drain_all(&mut m, 24);
    assert_eq!(out.len(), 150);
    assert!(lost.is_zero());
    assert!(out.windows(2).all(|w| w[0].2 < w[1].2), "timestamp order");
    // The clock is global and ids were assigned in clock order.
    assert!(out.iter().enumerate().all(|(i, r)| r.1 == i as u64));
    for cpu in 0..3 {
        assert_eq!(
            ch.stats(cpu).unwrap().consumed_records,
            out.iter().filter(|r| r.0 == cpu).count() as u64
        );
    }
}

#[test]
fn blocks_on_a_cpu_that_may_hold_older_records() {
    let geo = geometry(512, 4, 2);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    let t = Cell::new(0u64);
    let mut clock = || {
        t.set(t.get() + 1);
        t.get()
    };
    // CPU 0 writes first (older) but does not flush; CPU 1 writes and flushes.
    ch.writer(0)
        .unwrap()
        .write(1, &payload(0, 8), &mut clock)
        .unwrap();
    ch.writer(1)
        .unwrap()
        .write(1, &payload(1, 8), &mut clock)
        .unwrap();
    let _ = ch.writer(1).unwrap().flush(&mut clock);
    let mut m = merger(&ch);
    assert_eq!(m.next(false), Step::Blocked { cpu: 0 });
    let f = ch.writer(0).unwrap().flush(&mut clock);
    m.flushed(0, f.barrier, f.next);
    let ids: Vec<u64> = (0..2)
        .map(|_| match m.next(false) {
            Step::Event(Event::Record { record, .. }) => check_payload(record.payload, |_| 8),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [0, 1], "CPU 0's older record first");
    // Both CPUs are now known empty up to their flush barriers.
    let f1 = ch.writer(1).unwrap().flush(&mut clock);
    m.flushed(1, f1.barrier, f1.next);
    assert_eq!(m.next(false), Step::Idle);
    // A new record on CPU 1 is newer than CPU 0's barrier: CPU 0 could have
    // written in between, so the merger asks for a flush again.
    ch.writer(1)
        .unwrap()
        .write(1, &payload(2, 8), &mut clock)
        .unwrap();
    let _ = ch.writer(1).unwrap().flush(&mut clock);
    assert_eq!(m.next(false), Step::Blocked { cpu: 0 });
    let f = ch.writer(0).unwrap().flush(&mut clock);
    m.flushed(0, f.barrier, f.next);
    assert!(matches!(
        m.next(false),
        Step::Event(Event::Record { cpu: 1, .. })
    ));
}

#[test]
fn losses_appear_where_they_happened() {
    let geo = geometry(256, 2, 2);
    let mem = region(&geo);
    let ch = create(&mem, geo, true);
    let t = Cell::new(0u64);
    let mut clock = || {
        t.set(t.get() + 1);
        t.get()
    };
    // 256 - 72 = 184: three 40-byte-payload records per sub-buffer.
    for id in 0..30 {
        ch.writer(0)
            .unwrap()
            .write(1, &payload(id, 40), &mut clock)
            .unwrap();
    }
    ch.writer(1)
        .unwrap()
        .write(1, &payload(1000, 40), &mut clock)
        .unwrap();
    for cpu in 0..2 {
        let _ = ch.writer(cpu).unwrap().flush(&mut clock);
    }
    let mut m = merger(&ch);
    let mut events = Vec::new();
    loop {
        match m.next(true) {
            Step::Event(Event::Record { cpu, record }) => {
                events.push((cpu, Some(check_payload(record.payload, |_| 40)), None))
            }
            Step::Event(Event::Lost { cpu, lost, .. }) => events.push((cpu, None, Some(lost))),
            Step::Idle => break,
            other => panic!("{other:?}"),
        }
    }
    // CPU 0: sub-buffers 0..=9 sealed, slots hold 8 and 9: records 24..30,
    // after a loss of 24 records reported just before record 24.
    let cpu0: Vec<_> = events.iter().filter(|e| e.0 == 0).collect();
    assert_eq!(
        cpu0[0].2,
        Some(Lost {
            overwrite: 24,
            ..Lost::default()
        })
    );
    let ids: Vec<u64> = cpu0[1..].iter().map(|e| e.1.unwrap()).collect();
    assert_eq!(ids, (24..30).collect::<Vec<_>>());
    assert_eq!(ch.stats(0).unwrap().lost.overwrite, 24);
    assert!(events.iter().any(|e| e.1 == Some(1000)));
}

#[test]
fn random_streams_merge_completely_with_flush_on_block() {
    for seed in 0..40 {
        let geo = geometry(256, 4, 4);
        let mem = region(&geo);
        let ch = create(&mem, geo, false);
        let t = Cell::new(0u64);
        let clock = || {
            t.set(t.get() + 1);
            t.get()
        };
        let mut rng = Rng(seed + 1);
        let mut m = merger(&ch);
        let (mut written, mut got) = (Vec::new(), Vec::new());
        let mut next_id = 0;
        for _ in 0..600 {
            match rng.below(10) {
                0..=5 => {
                    let cpu = rng.below(4) as u32;
                    if ch
                        .local_writer(cpu)
                        .unwrap()
                        .write(1, &payload(next_id, 16), &mut { clock })
                        .is_ok()
                    {
                        written.push(next_id);
                    }
                    next_id += 1;
                }
                6 => {
                    let cpu = rng.below(4) as u32;
                    let f = ch.writer(cpu).unwrap().flush(&mut { clock });
                    m.flushed(cpu, f.barrier, f.next);
                }
                _ => match m.next(false) {
                    Step::Event(Event::Record { record, .. }) => {
                        got.push((check_payload(record.payload, |_| 16), record.ts))
                    }
                    Step::Event(Event::Lost { .. }) => {}
                    Step::Event(e) => panic!("seed {seed}: {e:?}"),
                    Step::Blocked { cpu } => {
                        let f = ch.writer(cpu).unwrap().flush(&mut { clock });
                        m.flushed(cpu, f.barrier, f.next);
                    }
                    Step::Idle => {}
                },
            }
        }
        for cpu in 0..4 {
            let _ = ch.writer(cpu).unwrap().flush(&mut { clock });
        }
        loop {
            match m.next(true) {
                Step::Event(Event::Record { record, .. }) => {
                    got.push((check_payload(record.payload, |_| 16), record.ts))
                }
                Step::Event(Event::Lost { .. }) => {}
                Step::Idle => break,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert!(
            got.windows(2).all(|w| w[0].1 < w[1].1),
            "seed {seed}: merged stream out of order"
        );
        let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            ids, written,
            "seed {seed}: every accepted record, in clock order"
        );
    }
}

#[test]
fn batches_deliver_the_same_stream_as_single_steps() {
    for seed in 0..20 {
        let streams: Vec<Vec<(u32, u64, u64)>> = [false, true]
            .iter()
            .map(|&batch| {
                let geo = geometry(512, 16, 3);
                let mem = region(&geo);
                let ch = create(&mem, geo, false);
                let t = Cell::new(0u64);
                let mut clock = || {
                    t.set(t.get() + 1);
                    t.get()
                };
                let mut rng = Rng(seed + 1);
                for id in 0..300 {
                    let cpu = if rng.below(4) == 0 {
                        rng.below(3)
                    } else {
                        (id / 40) % 3
                    } as u32;
                    ch.local_writer(cpu)
                        .unwrap()
                        .write(1, &payload(id, 24), &mut clock)
                        .unwrap();
                }
                for cpu in 0..3 {
                    let _ = ch.writer(cpu).unwrap().flush(&mut clock);
                }
                let mut m = merger(&ch);
                if !batch {
                    return drain_all(&mut m, 24).0;
                }
                let mut out = Vec::new();
                while let Ok(n) = m.next_batch(true, 1 + seed as usize, &mut |e| match e {
                    Event::Record { cpu, record } => {
                        out.push((cpu, check_payload(record.payload, |_| 24), record.ts));
                        Flow::Take
                    }
                    other => panic!("{other:?}"),
                }) {
                    assert!(n > 0);
                }
                out
            })
            .collect();
        assert_eq!(streams[0].len(), 300);
        assert_eq!(streams[0], streams[1], "seed {seed}");
    }
}

/// A batch that stops at an event leaves it for the next one, and a
/// commit after a batch publishes exactly what the batches before it
/// handed out: a consumer started after it goes on from there, with
/// nothing lost or repeated, whichever way the stream was cut.
#[test]
fn commit_publishes_exactly_what_was_taken() {
    for cut in [1usize, 5, 17, 60, 149] {
        let geo = geometry(512, 8, 3);
        let mem = region(&geo);
        let ch = create(&mem, geo, false);
        let t = Cell::new(0u64);
        let mut clock = || {
            t.set(t.get() + 1);
            t.get()
        };
        let mut rng = Rng(cut as u64);
        for id in 0..150 {
            let cpu = rng.below(3) as u32;
            ch.local_writer(cpu)
                .unwrap()
                .write(1, &payload(id, 24), &mut clock)
                .unwrap();
        }
        for cpu in 0..3 {
            let _ = ch.writer(cpu).unwrap().flush(&mut clock);
        }
        let mut ids = Vec::new();
        {
            // Takes `cut` events, declines the next, commits, and then
            // takes more without committing (a consumer killed mid-batch).
            let mut m = merger(&ch);
            let mut taken = 0;
            while taken < cut {
                let _ = m.next_batch(true, 7, &mut |e| {
                    if taken == cut {
                        return Flow::Stop;
                    }
                    if let Event::Record { record, .. } = e {
                        ids.push(check_payload(record.payload, |_| 24));
                    }
                    taken += 1;
                    Flow::Take
                });
            }
            m.commit();
            let _ = m.next_batch(true, 40, &mut |_| Flow::Take);
        }
        let mut m = merger(&ch);
        let (rest, lost) = drain_all(&mut m, 24);
        assert!(lost.is_zero());
        ids.extend(rest.iter().map(|r| r.1));
        assert_eq!(ids, (0..150).collect::<Vec<_>>(), "cut at {cut}");
        let consumed: u64 = (0..3).map(|c| ch.stats(c).unwrap().consumed_records).sum();
        assert_eq!(consumed, 150, "consumed_records exact, cut at {cut}");
    }
}

/// A sub-buffer read in place that a process outside the protocol changes
/// after it was validated (here: a record's length) is not cut short
/// silently: the records delivered before the change stay delivered, and a
/// corrupt event says how many of its records were lost.
#[test]
fn a_subbuffer_changed_after_validation_is_reported() {
    let geo = geometry(512, 4, 1);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    let t = Cell::new(0u64);
    let mut clock = || {
        t.set(t.get() + 1);
        t.get()
    };
    let w = ch.writer(0).unwrap();
    for id in 0..6 {
        w.write(1, &payload(id, 24), &mut clock).unwrap();
    }
    let _ = w.flush(&mut clock);
    let mut m = merger(&ch);
    let mut ids = Vec::new();
    match m.next(true) {
        Step::Event(Event::Record { record, .. }) => {
            ids.push(check_payload(record.payload, |_| 24))
        }
        other => panic!("{other:?}"),
    }
    // Record 2 (72 + 2 * 40 bytes into sub-buffer 0) now claims to run
    // past the end of the sub-buffer.
    let word = (geo.data_offset() as usize + 72 + 2 * 40) / 8;
    let w0 = mem[word].load(std::sync::atomic::Ordering::Relaxed);
    mem[word].store(
        (w0 & !0xffff_ffff) | 4000,
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut corrupt = None;
    loop {
        match m.next(true) {
            Step::Event(Event::Record { record, .. }) => {
                ids.push(check_payload(record.payload, |_| 24))
            }
            Step::Event(Event::Corrupt { error, .. }) => corrupt = Some(error),
            Step::Event(e) => panic!("{e:?}"),
            _ => break,
        }
    }
    assert_eq!(ids, [0, 1]);
    assert_eq!(
        corrupt,
        Some(relay_core::ReadError::Changed {
            seq: 0,
            records: 6,
            delivered: 2
        })
    );
}

/// The merge against a simple oracle at many CPU counts: random writes on
/// random CPUs (a global clock, so the merged order is the write order),
/// random flushes, reads interleaved with the writes that flush a CPU when
/// it blocks, then a drain; through single steps and through batches.
/// Every accepted record comes out once, in clock order, and the losses
/// reported add up to the records refused.
#[test]
fn many_cpus_merge_like_a_sort() {
    for cpus in [1u32, 2, 5, 17, 64, 300] {
        for batch in [false, true] {
            let geo = geometry(256, 4, cpus);
            let mem = region(&geo);
            let ch = create(&mem, geo, false);
            let t = Cell::new(0u64);
            let clock = || {
                t.set(t.get() + 1);
                t.get()
            };
            let mut rng = Rng(u64::from(cpus) * 2 + u64::from(batch) + 1);
            let mut m = merger(&ch);
            let (mut written, mut got, mut refused, mut lost) =
                (Vec::new(), Vec::new(), 0u64, 0u64);
            let mut next_id = 0;
            for _ in 0..3000 {
                match rng.below(10) {
                    0..=5 => {
                        // Mostly a few CPUs, sometimes any: idle CPUs abound.
                        let cpu = if rng.below(4) == 0 {
                            rng.below(u64::from(cpus))
                        } else {
                            rng.below(u64::from(cpus.min(3)))
                        } as u32;
                        match ch
                            .local_writer(cpu)
                            .unwrap()
                            .write(1, &payload(next_id, 16), &mut { clock })
                        {
                            Ok(_) => written.push(next_id),
                            Err(_) => refused += 1,
                        }
                        next_id += 1;
                    }
                    6 => {
                        let cpu = rng.below(u64::from(cpus)) as u32;
                        let f = ch.writer(cpu).unwrap().flush(&mut { clock });
                        m.flushed(cpu, f.barrier, f.next);
                    }
                    _ => {
                        if let Some(cpu) = read_step(&mut m, batch, false, &mut got, &mut lost) {
                            if cpu != u32::MAX {
                                let f = ch.writer(cpu).unwrap().flush(&mut { clock });
                                m.flushed(cpu, f.barrier, f.next);
                            }
                        }
                    }
                }
            }
            for cpu in 0..cpus {
                let _ = ch.writer(cpu).unwrap().flush(&mut { clock });
            }
            while read_step(&mut m, batch, true, &mut got, &mut lost) != Some(u32::MAX) {}
            assert!(
                got.windows(2).all(|w| w[0].1 < w[1].1),
                "{cpus} CPUs, batch={batch}: out of order"
            );
            let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
            assert_eq!(ids, written, "{cpus} CPUs, batch={batch}");
            assert_eq!(lost, refused, "{cpus} CPUs, batch={batch}: losses");
        }
    }
}

/// One read of `many_cpus_merge_like_a_sort`: an event or a batch; the CPU
/// it blocked on, or `u32::MAX` when idle.
fn read_step<'a>(
    m: &mut TestMerger<'a>,
    batch: bool,
    drain: bool,
    got: &mut Vec<(u64, u64)>,
    lost: &mut u64,
) -> Option<u32> {
    if batch {
        let r = m.next_batch(drain, 7, &mut |e| {
            match e {
                Event::Record { record, .. } => {
                    got.push((check_payload(record.payload, |_| 16), record.ts))
                }
                Event::Lost { lost: l, .. } => *lost += l.total(),
                e => panic!("{e:?}"),
            }
            Flow::Take
        });
        return match r {
            Err(Step::Blocked { cpu }) => Some(cpu),
            Err(_) => Some(u32::MAX),
            Ok(_) => None,
        };
    }
    match m.next(drain) {
        Step::Event(Event::Record { record, .. }) => {
            got.push((check_payload(record.payload, |_| 16), record.ts));
            None
        }
        Step::Event(Event::Lost { lost: l, .. }) => {
            *lost += l.total();
            None
        }
        Step::Event(e) => panic!("{e:?}"),
        Step::Blocked { cpu } => Some(cpu),
        Step::Idle => Some(u32::MAX),
    }
}

/// A drain does not wait for idle CPUs, but looks at each again within as
/// many events as there are CPUs: records that reach an idle CPU during a
/// batch merge in (here: a record written at ts 10 comes out before CPU 0's
/// records from ts 10 + 2 CPUs + 1 on), even when the batch switches
/// between the other CPUs all along.
#[test]
fn a_drain_looks_at_idle_cpus_within_a_batch() {
    let geo = geometry(4096, 4, 3);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    // CPUs 0 and 1 alternate (every record switches CPU), ts 1..=60; CPU 2
    // is empty.
    for ts in 1..=60u64 {
        let cpu = (ts % 2) as u32;
        ch.writer(cpu)
            .unwrap()
            .write(1, &payload(ts, 8), &mut || ts)
            .unwrap();
    }
    for cpu in 0..2 {
        let _ = ch.writer(cpu).unwrap().flush(&mut || 60);
    }
    let mut m = merger(&ch);
    let mut got: Vec<(u32, u64)> = Vec::new();
    let n = m
        .next_batch(true, 1000, &mut |e| {
            if let Event::Record { cpu, record } = e {
                if record.ts == 8 {
                    // CPU 2 gets an older record while the batch runs.
                    let w = ch.writer(2).unwrap();
                    w.write(1, &payload(0, 8), &mut || 10).unwrap();
                    let _ = w.flush(&mut || 10);
                }
                got.push((cpu, record.ts));
            }
            Flow::Take
        })
        .unwrap();
    assert_eq!(n, 61);
    let at = got.iter().position(|&(cpu, _)| cpu == 2).unwrap();
    let before = got[..at].iter().map(|g| g.1).max().unwrap();
    assert!(
        before < 10 + 3 + 1,
        "CPU 2's record came after ts {before}: {got:?}"
    );
}

/// Runs of every length, over more sub-buffer bytes than a core's cache
/// holds (48 CPUs of 16 KiB sub-buffers: the merge prefetches the next
/// CPU's records while a run is handed out), come out in clock order,
/// every record once, in batches of any size.
#[test]
fn long_runs_over_many_large_subbuffers_merge_like_a_sort() {
    let cpus = 48u32;
    let geo = geometry(16 << 10, 4, cpus);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    let mut rng = Rng(7);
    let (mut t, mut next_id) = (0u64, 0u64);
    let mut m = merger(&ch);
    for round in 0..3 {
        let mut written = Vec::new();
        // About 16 KiB a CPU: runs of 1 to 100 records (80 bytes each), the
        // CPU chosen at random, so some lead for long and some for one.
        for _ in 0..cpus * 4 {
            let cpu = rng.below(u64::from(cpus)) as u32;
            let w = ch.local_writer(cpu).unwrap();
            for _ in 0..=rng.below(100) {
                t += 1;
                if w.write(1, &payload(next_id, 64), &mut || t).is_ok() {
                    written.push(next_id);
                }
                next_id += 1;
            }
        }
        // Every CPU flushed and known empty past its records: no drain, so
        // no CPU is looked at again, and runs switch straight to the next.
        for cpu in 0..cpus {
            let f = ch.writer(cpu).unwrap().flush(&mut || t);
            m.flushed(cpu, f.barrier, f.next);
        }
        let (mut got, max) = (Vec::new(), [1usize, 7, 4096][round]);
        loop {
            let r = m.next_batch(false, max, &mut |e| {
                match e {
                    Event::Record { record, .. } => {
                        got.push((check_payload(record.payload, |_| 64), record.ts))
                    }
                    e => panic!("{e:?}"),
                }
                Flow::Take
            });
            match r {
                Ok(n) => assert!(n > 0),
                Err(Step::Idle) => break,
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        m.commit();
        assert!(
            got.windows(2).all(|w| w[0].1 < w[1].1),
            "round {round}: out of order"
        );
        let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids, written, "round {round}");
    }
}
