//! loom models of the writer/reader protocol. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p relay-core --test loom`
//! (the build driver does: `cargo xtask test`).
//!
//! Each model checks the invariants written in `writer.rs` and `reader.rs`:
//! every record written is delivered exactly once or counted lost exactly
//! once, delivered records are never torn, and records come out in the
//! order they were reserved with non-decreasing timestamps. A second writer
//! thread on the same CPU buffer stands for an interrupt: threads interleave
//! in strictly more ways than nesting does.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64 as LoomU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use relay_core::{
    AtomicU64, Channel, ChannelFlags, Clock, CpuReader, Geometry, GeometryParams, Lost, Mode,
};

/// 128-byte sub-buffers hold two 8-byte-payload records each.
fn geometry() -> Geometry {
    Geometry::new(GeometryParams {
        subbuf_size: 128,
        subbuf_count: 2,
        cpu_count: 1,
        page_size: 64,
    })
    .unwrap()
}

fn setup(mode: Mode) -> Arc<Vec<AtomicU64>> {
    let geo = geometry();
    let mem: Vec<AtomicU64> = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let flags = if mode == Mode::Overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    Channel::create(&mem, geo, flags, Clock::Counter).unwrap();
    Arc::new(mem)
}

fn clock(c: &Arc<LoomU64>) -> impl FnMut() -> u64 + '_ {
    move || c.fetch_add(1, Ordering::Relaxed) + 1
}

/// Writes records `ids` (payload: the id, and `!id` as the record type check).
/// Returns how many were accepted.
fn write_all(mem: &[AtomicU64], clk: &Arc<LoomU64>, ids: &[u64]) -> u64 {
    let ch = Channel::open(mem).unwrap();
    let w = ch.writer(0).unwrap();
    let mut clock = clock(clk);
    ids.iter()
        .filter(|&&id| w.write(id as u16, &id.to_le_bytes(), &mut clock).is_ok())
        .count() as u64
}

/// What a reader saw: (id, ts) per record and the losses reported in-stream.
#[derive(Default, Debug)]
struct Seen {
    records: Vec<(u64, u64)>,
    lost: Lost,
    /// One writer wrote ids 1, 2, 3, ... in order, one per attempt: then no
    /// loss may be reported before records older than it.
    in_order: bool,
}

/// One read attempt: delivers at most one sub-buffer. Checks every record.
fn read_once(reader: &mut CpuReader<'_>, seen: &mut Seen) -> bool {
    let mut buf = [0u8; 128];
    let Some(d) = reader
        .next(&mut buf)
        .expect("a sealed sub-buffer must validate")
    else {
        return false;
    };
    let before = seen.records.len() as u64;
    let mut n = 0;
    for r in d.records() {
        let id = u64::from_le_bytes(r.payload.try_into().expect("torn record: payload length"));
        assert_eq!(
            r.rtype, id as u16,
            "torn record: type does not match payload"
        );
        seen.records.push((id, r.ts));
        n += 1;
    }
    seen.lost.full += d.lost_before.full;
    seen.lost.too_big += d.lost_before.too_big;
    seen.lost.overwrite += d.lost_before.overwrite;
    seen.lost.abandoned += d.lost_before.abandoned;
    // Ids count every attempt from 1: the records before this sub-buffer's
    // first are delivered or reported lost by now, and a loss is never
    // reported before the records it comes after (never early).
    if let (true, Some(&(first, _))) = (seen.in_order, seen.records.get(before as usize)) {
        assert!(
            before + seen.lost.total() <= first - 1,
            "a loss reported before records older than it: first id {first}, \
             {before} delivered and {:?} lost before it",
            seen.lost
        );
    }
    let (seq, lost) = (d.seq, d.lost_before);
    reader.finish(seq, &lost, n);
    reader.commit();
    true
}

fn drain(mem: &[AtomicU64], clk: &Arc<LoomU64>, seen: &mut Seen) {
    let ch = Channel::open(mem).unwrap();
    let _ = ch.writer(0).unwrap().flush(&mut clock(clk));
    let mut reader = ch.reader(0).unwrap();
    while read_once(&mut reader, seen) {}
}

/// The invariant at quiescence: each written record delivered once (in
/// reservation order, timestamps increasing) or counted lost once.
fn check(mem: &[AtomicU64], written: u64, accepted: u64, seen: &Seen) {
    let ch = Channel::open(mem).unwrap();
    let stats = ch.stats(0).unwrap();
    let ids: Vec<u64> = seen.records.iter().map(|r| r.0).collect();
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        ids.len(),
        "a record was delivered twice: {ids:?}"
    );
    for pair in seen.records.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "timestamps out of buffer order: {:?}",
            seen.records
        );
    }
    assert_eq!(
        accepted,
        ids.len() as u64 + stats.lost.overwrite,
        "accepted = delivered + overwritten; {stats:?}"
    );
    assert_eq!(
        written - accepted,
        stats.lost.full + stats.lost.too_big,
        "refused = counted; {stats:?}"
    );
    assert_eq!(stats.produced, accepted, "{stats:?}");
    assert!(
        seen.lost.total() <= stats.lost.total(),
        "reported {:?} > counted {:?}",
        seen.lost,
        stats.lost
    );
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(4);
    }
    b.check(f);
}

/// Writer racing a reader (and a reader-side flush), no-overwrite: nothing
/// accepted is lost, nothing is torn.
#[test]
fn writer_vs_reader_no_overwrite() {
    model(|| {
        let mem = setup(Mode::NoOverwrite);
        let clk = Arc::new(LoomU64::new(0));
        let (m, c) = (mem.clone(), clk.clone());
        let writer = thread::spawn(move || write_all(&m, &c, &[1, 2, 3]));
        let mut seen = Seen {
            in_order: true,
            ..Seen::default()
        };
        {
            let ch = Channel::open(&mem).unwrap();
            let mut reader = ch.reader(0).unwrap();
            read_once(&mut reader, &mut seen);
            let _ = ch.writer(0).unwrap().flush(&mut clock(&clk));
            read_once(&mut reader, &mut seen);
        }
        let accepted = writer.join().unwrap();
        drain(&mem, &clk, &mut seen);
        check(&mem, 3, accepted, &seen);
    });
}

/// Writer racing a reader, overwrite: the writer laps the reader; every
/// record is delivered intact or counted as overwritten, never both.
#[test]
fn writer_vs_reader_overwrite() {
    model(|| {
        let mem = setup(Mode::Overwrite);
        let clk = Arc::new(LoomU64::new(0));
        let (m, c) = (mem.clone(), clk.clone());
        let writer = thread::spawn(move || write_all(&m, &c, &[1, 2, 3, 4, 5]));
        let mut seen = Seen {
            in_order: true,
            ..Seen::default()
        };
        {
            let ch = Channel::open(&mem).unwrap();
            let mut reader = ch.reader(0).unwrap();
            read_once(&mut reader, &mut seen);
            read_once(&mut reader, &mut seen);
        }
        let accepted = writer.join().unwrap();
        drain(&mem, &clk, &mut seen);
        check(&mem, 5, accepted, &seen);
    });
}

/// Two writers on one CPU buffer (an interrupt stands for the second),
/// both modes, drained afterwards: every accepted record appears once and
/// every sub-buffer seals exactly when its last reservation commits.
#[test]
fn nested_writers() {
    for mode in [Mode::NoOverwrite, Mode::Overwrite] {
        model(move || {
            let mem = setup(mode);
            let clk = Arc::new(LoomU64::new(0));
            let (m, c) = (mem.clone(), clk.clone());
            let irq = thread::spawn(move || write_all(&m, &c, &[10, 11]));
            let accepted = write_all(&mem, &clk, &[1, 2]) + irq.join().unwrap();
            let mut seen = Seen::default();
            drain(&mem, &clk, &mut seen);
            check(&mem, 4, accepted, &seen);
        });
    }
}

/// A nested writer and a reader at once, no-overwrite.
#[test]
fn nested_writers_with_reader() {
    model(|| {
        let mem = setup(Mode::NoOverwrite);
        let clk = Arc::new(LoomU64::new(0));
        let (m, c) = (mem.clone(), clk.clone());
        let irq = thread::spawn(move || write_all(&m, &c, &[10]));
        let (m, c) = (mem.clone(), clk.clone());
        let task = thread::spawn(move || write_all(&m, &c, &[1, 2]));
        let mut seen = Seen::default();
        {
            let ch = Channel::open(&mem).unwrap();
            let mut reader = ch.reader(0).unwrap();
            read_once(&mut reader, &mut seen);
        }
        let accepted = task.join().unwrap() + irq.join().unwrap();
        drain(&mem, &clk, &mut seen);
        check(&mem, 3, accepted, &seen);
    });
}

/// The reader copies a sealed sub-buffer while the writer reclaims that
/// very slot: the copy is either claimed intact or dropped and counted.
#[test]
fn reader_races_overwrite() {
    model(|| {
        let mem = setup(Mode::Overwrite);
        let clk = Arc::new(LoomU64::new(0));
        // Fill both slots: sub-buffers 0 and 1 sealed, 2 open.
        let pre = write_all(&mem, &clk, &[1, 2, 3, 4, 5]);
        let (m, c) = (mem.clone(), clk.clone());
        // Two more records: the writer reclaims the slot of sub-buffer 1.
        let writer = thread::spawn(move || write_all(&m, &c, &[6, 7]));
        let mut seen = Seen {
            in_order: true,
            ..Seen::default()
        };
        {
            let ch = Channel::open(&mem).unwrap();
            let mut reader = ch.reader(0).unwrap();
            read_once(&mut reader, &mut seen);
        }
        let accepted = pre + writer.join().unwrap();
        drain(&mem, &clk, &mut seen);
        check(&mem, 7, accepted, &seen);
    });
}

/// A snapshot racing a writer that reclaims the sub-buffer being copied
/// (overwrite): the snapshot stores nothing, never delivers a torn record
/// (the seal is checked again after the copy: writer invariant 4), and
/// what it delivers is in order.
#[test]
fn snapshot_vs_overwrite_reclaim() {
    model(|| {
        let mem = setup(Mode::Overwrite);
        let clk = Arc::new(LoomU64::new(0));
        // Sub-buffer 0 sealed (ids 1, 2); 1 open with id 3.
        write_all(&mem, &clk, &[1, 2, 3]);
        let (m, c) = (mem.clone(), clk.clone());
        // Fills 1, then opens 2 in slot 0: reclaims sub-buffer 0.
        let writer = thread::spawn(move || write_all(&m, &c, &[4, 5]));
        let mut seen = Seen::default();
        {
            let ch = Channel::open(&mem).unwrap();
            let mut snap = ch.snapshot(0).unwrap();
            while read_once(&mut snap, &mut seen) {}
        }
        writer.join().unwrap();
        let ids: Vec<u64> = seen.records.iter().map(|r| r.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
        // The snapshot reported nothing as consumed.
        let ch = Channel::open(&mem).unwrap();
        assert_eq!(ch.stats(0).unwrap().consumed_records, 0);
    });
}

/// A writer died holding a reservation (between records 1 and 3 of one
/// sub-buffer); a repair (no writer alive) races a consumer that polls:
/// the consumer gets nothing until the seal, then records 1 and 3, whole,
/// and the dead one counted abandoned, once.
#[test]
fn repair_vs_reader() {
    model(|| {
        let mem = setup(Mode::NoOverwrite);
        let clk = Arc::new(LoomU64::new(0));
        {
            let ch = Channel::open(&mem).unwrap();
            let w = ch.writer(0).unwrap();
            let mut clock = clock(&clk);
            w.write(1, &1u64.to_le_bytes(), &mut clock).unwrap();
            let dead = w.reserve(8, &mut clock).unwrap();
            std::mem::forget(dead);
            w.write(3, &3u64.to_le_bytes(), &mut clock).unwrap();
        }
        let (m2, c2) = (mem.clone(), clk.clone());
        let repairer = thread::spawn(move || {
            let ch = Channel::open(&m2).unwrap();
            ch.writer(0).unwrap().repair_abandoned(&mut clock(&c2))
        });
        let mut seen = Seen::default();
        {
            let ch = Channel::open(&mem).unwrap();
            let mut reader = ch.reader(0).unwrap();
            read_once(&mut reader, &mut seen);
        }
        let repaired = repairer.join().unwrap();
        assert_eq!((repaired.subbufs, repaired.records), (1, 1));
        let ch = Channel::open(&mem).unwrap();
        let mut reader = ch.reader(0).unwrap();
        while read_once(&mut reader, &mut seen) {}
        let ids: Vec<u64> = seen.records.iter().map(|r| r.0).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(seen.lost.abandoned, 1);
    });
}

/// The waker of [`a_seal_wakes_or_is_seen`]: the model checks the
/// `wakeups` word itself, so waking is nothing here.
fn no_syscall(_: &AtomicU64) {}

/// No lost wakeup (relay-core `wake`): a writer sealing a sub-buffer
/// races a reader that registers, looks for a sealed sub-buffer, and
/// would sleep on the `wakeups` value it read. Either its look finds the
/// seal, or the writer changes `wakeups` from that value (so the sleep
/// cannot begin, or is woken).
#[test]
fn a_seal_wakes_or_is_seen() {
    model(|| {
        let mem = setup(Mode::NoOverwrite);
        let clk = Arc::new(LoomU64::new(0));
        let (m, c) = (mem.clone(), clk.clone());
        let writer = thread::spawn(move || {
            let ch = Channel::open(&m).unwrap().with_waker(no_syscall);
            let w = ch.writer(0).unwrap();
            let mut clock = clock(&c);
            // A record, then the flush that closes and seals its sub-buffer
            // (a switch timer's, say).
            w.write(1, &1u64.to_le_bytes(), &mut clock).unwrap();
            assert!(w.flush(&mut clock).sealed.is_some());
        });
        let ch = Channel::open(&mem).unwrap();
        let wakeups = ch.wakeups().unwrap();
        let waiters = ch.waiters(0).unwrap();
        let seen = relay_core::wake::register(wakeups, [waiters]);
        let found = ch.reader(0).unwrap().ready().is_some();
        writer.join().unwrap();
        assert!(
            found || wakeups.load(Ordering::SeqCst) != seen,
            "the reader would sleep on a sealed sub-buffer with no wakeup coming"
        );
        relay_core::wake::unregister([waiters]);
        assert_eq!(waiters.load(Ordering::SeqCst), 0);
    });
}
