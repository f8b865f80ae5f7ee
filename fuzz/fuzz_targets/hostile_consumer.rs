//! A hostile reader: between writer steps the input stores arbitrary values
//! into the consumer state (the only words a reader may write, as a
//! malicious process could through its mapping of a kernel channel). The
//! writer must stay in bounds, never touch another CPU's committed data,
//! and keep its refusal counts exact.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_core::{AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams};
use std::sync::atomic::Ordering;

#[derive(Arbitrary, Debug)]
enum Step {
    Write { len: u16 },
    Flush,
    Read,
    Poke { word: u8, value: u64 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    overwrite: bool,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let geo = Geometry::new(GeometryParams {
        subbuf_size: 256,
        subbuf_count: 3,
        cpu_count: 2,
        page_size: 4096,
    })
    .expect("valid geometry");
    let mem: Vec<AtomicU64> = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let flags = if input.overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    let ch = Channel::create(&mem, geo, flags, Clock::Counter).expect("fits");
    let mut now = 0u64;
    let mut clock = || {
        now += 1;
        now
    };
    // CPU 1 commits data first; nothing may change it afterwards.
    let other = ch.writer(1).expect("cpu 1");
    for i in 0..5u8 {
        other.write(7, &[i; 40], &mut clock).expect("room");
    }
    let _ = other.flush(&mut clock);
    let snapshot = |cpu: u64| -> Vec<u64> {
        let p = (geo.producer_offset() + cpu * geo.producer_stride()) / 8;
        let d = (geo.data_offset() + cpu * geo.data_stride()) / 8;
        let mut v: Vec<u64> = mem[p as usize..(p + geo.producer_stride() / 8) as usize]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        v.extend(
            mem[d as usize..(d + geo.data_stride() / 8) as usize]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
        v
    };
    let before = snapshot(1);

    let w = ch.writer(0).expect("cpu 0");
    let mut r = ch.reader(0).expect("cpu 0");
    let mut buf = vec![0u8; 256];
    let consumer_words = (2 * geo.consumer_stride() / 8) as usize;
    let consumer_base = (geo.consumer_offset() / 8) as usize;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for step in input.steps.iter().take(2000) {
        match *step {
            Step::Write { len } => {
                match w.write(1, &vec![0xa5; usize::from(len % 300)], &mut clock) {
                    Ok(_) => accepted += 1,
                    Err(_) => refused += 1,
                }
            }
            Step::Flush => {
                let _ = w.flush(&mut clock);
            }
            Step::Read => {
                if let Ok(Some(d)) = r.next(&mut buf) {
                    let n = d.records().count() as u64;
                    let (seq, lost) = (d.seq, d.lost_before);
                    r.finish(seq, &lost, n);
                    r.commit();
                }
            }
            Step::Poke { word, value } => {
                // Only CPU 0's consumer words: CPU 1's reader is not under test.
                let i = usize::from(word) % (consumer_words / 2);
                mem[consumer_base + i].store(value, Ordering::Relaxed);
            }
        }
    }
    let _ = w.flush(&mut clock);
    let stats = ch.stats(0).expect("cpu 0");
    assert_eq!(
        refused,
        stats.lost.full + stats.lost.too_big,
        "refusals are counted exactly"
    );
    assert_eq!(stats.produced, accepted, "every accepted record was sealed");
    assert_eq!(
        snapshot(1),
        before,
        "CPU 1's producer state and data are untouched"
    );
});
