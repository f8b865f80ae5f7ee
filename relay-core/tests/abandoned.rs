//! Writers that die holding a reservation: a repair (run when no writer is
//! alive) closes and seals what they left, counts their records abandoned,
//! delivers every committed record it can reach, never a half-written one,
//! and the buffer moves on.

mod common;

use std::sync::atomic::Ordering;

use common::{check_payload, create, geometry, payload, region};
use relay_core::merge::{Cursor, Event, Merger, Node, Step};
use relay_core::{Channel, Lost};

fn clock_from(t: &std::cell::Cell<u64>) -> impl FnMut() -> u64 + '_ {
    move || {
        t.set(t.get() + 10);
        t.get()
    }
}

/// Every event a fresh consumer of CPU 0 gets, to the end: record ids and
/// the losses.
fn drain(ch: &Channel<'_>) -> (Vec<u64>, Lost) {
    let size = ch.geometry().subbuf_size() as usize;
    let mut m = Merger::new(
        vec![Cursor::new(ch.reader(0).unwrap(), vec![0u8; size])],
        [Node::default(); 4],
    )
    .unwrap();
    let (mut ids, mut lost) = (Vec::new(), Lost::default());
    loop {
        match m.next(true) {
            Step::Event(Event::Record { record, .. }) => {
                ids.push(check_payload(record.payload, |_| 40))
            }
            Step::Event(Event::Lost { lost: l, .. }) => lost = lost.plus(&l),
            Step::Event(Event::Corrupt { error, .. }) => panic!("{error}"),
            _ => break,
        }
    }
    m.commit();
    (ids, lost)
}

/// A writer dies between reservation and commit (its grant is leaked, not
/// dropped: no discard runs); another writer commits after it in the same
/// sub-buffer. The repair keeps both neighbours and counts exactly one
/// record abandoned, in both modes; then writing goes on.
#[test]
fn a_dead_reservation_is_discarded_and_counted() {
    for overwrite in [false, true] {
        let geo = geometry(512, 4, 1);
        let mem = region(&geo);
        let ch = create(&mem, geo, overwrite);
        let t = std::cell::Cell::new(0);
        let mut clock = clock_from(&t);
        let w = ch.writer(0).unwrap();
        w.write(1, &payload(0, 40), &mut clock).unwrap();
        let mut dead = w.reserve(40, &mut clock).unwrap();
        dead.write_payload(&payload(1, 40)[..20]); // half-written
        std::mem::forget(dead);
        w.write(1, &payload(2, 40), &mut clock).unwrap();
        let _ = w.flush(&mut clock);
        // Unsealed: a reader gets nothing.
        assert!(ch.reader(0).unwrap().ready().is_none());
        let repaired = ch.writer(0).unwrap().repair_abandoned(&mut clock);
        assert_eq!(
            (repaired.subbufs, repaired.records),
            (1, 1),
            "overwrite={overwrite}"
        );
        let (ids, lost) = drain(&ch);
        assert_eq!(ids, [0, 2], "overwrite={overwrite}");
        assert_eq!(lost.abandoned, 1);
        assert_eq!(ch.stats(0).unwrap().lost.abandoned, 1);
        // The buffer moves on.
        for id in 3..20 {
            w.write(1, &payload(id, 40), &mut clock).unwrap();
            if id % 3 == 0 {
                let _ = drain(&ch);
            }
        }
        let _ = w.flush(&mut clock);
        let (ids, lost) = drain(&ch);
        assert!(ids.last() == Some(&19), "overwrite={overwrite}: {ids:?}");
        assert_eq!(lost.abandoned, 0, "reported once");
    }
}

/// A writer that died before it marked its reservation leaves bytes the
/// repair cannot walk past: what follows is cut off and counted, with the
/// dead record, and nothing stale is delivered.
#[test]
fn unmarked_bytes_cut_the_subbuffer_and_count_what_follows() {
    let geo = geometry(512, 4, 1);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    let t = std::cell::Cell::new(0);
    let mut clock = clock_from(&t);
    let w = ch.writer(0).unwrap();
    w.write(1, &payload(0, 40), &mut clock).unwrap();
    let dead = w.reserve(40, &mut clock).unwrap();
    std::mem::forget(dead);
    // The dead record (at 72 + 56) looks like a record from the slot's
    // previous lap: valid framing, an older timestamp.
    let at = (geo.data_offset() as usize + 72 + 56) / 8;
    mem[at].store(56, Ordering::Relaxed); // len 56, type 0, flags 0
    mem[at + 1].store(1, Ordering::Relaxed); // ts 1: before the first record
    w.write(1, &payload(2, 40), &mut clock).unwrap();
    w.write(1, &payload(3, 40), &mut clock).unwrap();
    let _ = w.flush(&mut clock);
    let repaired = w.repair_abandoned(&mut clock);
    assert_eq!((repaired.subbufs, repaired.records), (1, 3));
    let (ids, lost) = drain(&ch);
    assert_eq!(ids, [0]);
    assert_eq!(lost.abandoned, 3);
}

/// A slot a writer took for a sub-buffer it never opened (it died between
/// the two) is given back, so the ring does not stop there.
#[test]
fn a_slot_taken_and_never_opened_is_given_back() {
    let geo = geometry(512, 4, 1);
    let mem = region(&geo);
    let ch = create(&mem, geo, false);
    let t = std::cell::Cell::new(0);
    let mut clock = clock_from(&t);
    let w = ch.writer(0).unwrap();
    w.write(1, &payload(0, 40), &mut clock).unwrap();
    let _ = w.flush(&mut clock); // sub-buffer 0 sealed; next is 1
                                 // Slot 1's seal word (FORMAT.md: CPU 0's producer state, then the
                                 // commit array padded to 8 words, then the seals): Opening(1), as
                                 // taking the slot leaves it.
    let seals = geo.producer_offset() as usize / 8 + 16 + 8;
    mem[seals + 1].store((2 << 1) | 1, Ordering::Relaxed);
    let repaired = w.repair_abandoned(&mut clock);
    assert_eq!((repaired.subbufs, repaired.slots), (0, 1));
    w.write(1, &payload(1, 40), &mut clock).unwrap();
    let _ = w.flush(&mut clock);
    assert_eq!(drain(&ch).0, [0, 1]);
}
