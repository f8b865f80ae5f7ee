//! Arbitrary bytes as a whole channel region (read by the consumer, then by
//! a snapshot, which must store nothing) and as one sub-buffer: every
//! rejection is a clean error, nothing panics or reads out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::{AtomicU64, Channel, Geometry, GeometryParams, Mode, SubbufView};

fn words(data: &[u8]) -> Vec<AtomicU64> {
    data.chunks(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            AtomicU64::new(u64::from_le_bytes(a))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a channel.
    let region = words(data);
    if let Ok(ch) = Channel::open(&region) {
        let geo = *ch.geometry();
        let mut buf = vec![0u8; geo.subbuf_size() as usize];
        for cpu in 0..geo.cpu_count().min(4) {
            let _ = ch.stats(cpu);
            let mut r = ch.reader(cpu).expect("cpu below cpu_count");
            for _ in 0..4 {
                if ch.mode() == Mode::NoOverwrite {
                    if let Ok(Some(d)) = r.peek() {
                        let n = d.records().count() as u64;
                        let (seq, lost) = (d.seq, d.lost_before);
                        r.finish(seq, &lost, n);
                        r.commit();
                        continue;
                    }
                }
                match r.next(&mut buf) {
                    Ok(Some(d)) => {
                        let n = d.records().fold(0u64, |n, rec| {
                            std::hint::black_box(rec.payload);
                            n + 1
                        });
                        let (seq, lost) = (d.seq, d.lost_before);
                        r.finish(seq, &lost, n);
                        r.commit();
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
    }

    // 1b. The same bytes read by a snapshot: it copes with any consumer
    // state and seals, and stores nothing.
    if let Ok(ch) = Channel::open(&region) {
        let geo = *ch.geometry();
        let before: Vec<u64> = region
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let mut buf = vec![0u8; geo.subbuf_size() as usize];
        for cpu in 0..geo.cpu_count().min(4) {
            let mut s = ch.snapshot(cpu).expect("cpu below cpu_count");
            for _ in 0..4 {
                match s.next(&mut buf) {
                    Ok(Some(d)) => {
                        let n = d.records().count() as u64;
                        let (seq, lost) = (d.seq, d.lost_before);
                        s.finish(seq, &lost, n);
                        s.commit();
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
            let _ = s.take_unreported_loss();
            let _ = s.overrun_subbufs();
        }
        assert!(
            region
                .iter()
                .zip(&before)
                .all(|(w, b)| w.load(std::sync::atomic::Ordering::Relaxed) == *b),
            "a snapshot stored into the channel"
        );
    }

    // 2. The bytes as one sub-buffer of a geometry picked by the first byte.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let size = 128u64 << (pick % 4);
    let geo = Geometry::new(GeometryParams {
        subbuf_size: size,
        subbuf_count: 2,
        cpu_count: 1,
        page_size: 4096,
    })
    .expect("valid geometry");
    let mut sub = rest.to_vec();
    sub.resize(size as usize, 0);
    let seq = u64::from_le_bytes(sub[..8].try_into().expect("8 bytes"));
    match SubbufView::parse(&sub, &geo, seq, 0) {
        Ok(view) => {
            let n = view.records().count();
            assert_eq!(
                n as u32,
                view.header().records,
                "a validated sub-buffer iterates its count"
            );
            let mut it = view.records();
            it.seek(u64::from(pick) * 8);
            let _ = it.count();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
