//! One producer thread, one consumer thread, records of 64 B and 1 KiB:
//! relay against the SPSC queues a Rust user would reach for, and a plain
//! memcpy loop as the physical limit. The consumer reads each record's
//! length and first word; every peer moves the same bytes.
//!
//! `cargo bench -p relay-user --bench peers` (numbers in BENCHMARKS.md).

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_core::{AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams, WriteError};

/// Bytes of ring every peer gets (relay: 16 sub-buffers of 64 KiB).
const RING: usize = 1 << 20;

fn touch(p: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = p.len().min(8);
    w[..n].copy_from_slice(&p[..n]);
    u64::from_le_bytes(w) ^ p.len() as u64
}

/// Runs `produce` and `consume` on two threads; returns the wall time.
fn pair(produce: impl FnOnce() + Send, consume: impl FnOnce() -> u64 + Send) -> Duration {
    std::thread::scope(|s| {
        let c = s.spawn(consume);
        let start = Instant::now();
        produce();
        black_box(c.join().unwrap());
        start.elapsed()
    })
}

fn relay(iters: u64, size: usize) -> Duration {
    let geo = Geometry::new(GeometryParams {
        subbuf_size: 1 << 16,
        subbuf_count: 16,
        cpu_count: 1,
        page_size: 4096,
    })
    .unwrap();
    let mem: Vec<AtomicU64> = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let ch = Channel::create(&mem, geo, ChannelFlags::empty(), Clock::Counter).unwrap();
    let payload = vec![0x5au8; size];
    let done = AtomicBool::new(false);
    pair(
        || {
            let w = ch.local_writer(0).unwrap();
            let mut t = 0u64;
            let mut clock = || {
                t += 1;
                t
            };
            for _ in 0..iters {
                loop {
                    match w.write(1, &payload, &mut clock) {
                        Ok(_) => break,
                        Err(WriteError::Full) => spin_loop(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            let _ = w.flush(&mut clock);
            done.store(true, Ordering::Release);
        },
        || {
            let mut r = ch.reader(0).unwrap();
            let (mut got, mut sum) = (0u64, 0u64);
            loop {
                let finished = done.load(Ordering::Acquire);
                while let Some(d) = r.peek().unwrap() {
                    let mut n = 0;
                    for rec in d.records() {
                        sum ^= touch(rec.payload);
                        n += 1;
                    }
                    let (seq, lost) = (d.seq, d.lost_before);
                    r.finish(seq, &lost, n);
                    r.commit();
                    got += n;
                }
                if finished && r.ready().is_none() {
                    assert_eq!(got, iters);
                    return sum;
                }
                spin_loop();
            }
        },
    )
}

/// Copies `src` into the two parts of a (possibly wrapped) ring region.
fn copy_split(src: &[u8], a: &mut [u8], b: &mut [u8]) {
    let n = a.len().min(src.len());
    a[..n].copy_from_slice(&src[..n]);
    let m = b.len().min(src.len() - n);
    b[..m].copy_from_slice(&src[n..n + m]);
}

/// The rtrb producer of both rtrb rows: `iters` copies of `framed` (a
/// 4-byte length and the payload), each as one chunk.
fn rtrb_produce(p: &mut rtrb::Producer<u8>, iters: u64, framed: &[u8]) {
    for _ in 0..iters {
        let mut chunk = loop {
            if let Ok(chunk) = p.write_chunk(framed.len()) {
                break chunk;
            }
            spin_loop();
        };
        let (a, b) = chunk.as_mut_slices();
        copy_split(framed, a, b);
        chunk.commit_all();
    }
}

fn rtrb(iters: u64, size: usize) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<u8>::new(RING);
    let mut framed = (size as u32).to_le_bytes().to_vec();
    framed.resize(4 + size, 0x5a);
    let frame = framed.len();
    pair(
        move || rtrb_produce(&mut p, iters, &framed),
        move || {
            let mut sum = 0;
            let mut buf = vec![0u8; frame];
            for _ in 0..iters {
                let chunk = loop {
                    if let Ok(chunk) = c.read_chunk(frame) {
                        break chunk;
                    }
                    spin_loop();
                };
                // A record may wrap: reassemble it (two slice copies), as a
                // reader must.
                let (a, b) = chunk.as_slices();
                let (head, tail) = buf.split_at_mut(a.len().min(frame));
                head.copy_from_slice(&a[..head.len()]);
                tail.copy_from_slice(&b[..tail.len()]);
                sum ^= touch(&buf[4..]);
                chunk.commit_all();
            }
            sum
        },
    )
}

/// rtrb as a record queue: the consumer learns each record's size from
/// its 4-byte length, as a reader of variable-size records must (the
/// `rtrb` row above reads fixed-size chunks it knows in advance: an upper
/// bound).
fn rtrb_framed(iters: u64, size: usize) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<u8>::new(RING);
    let mut framed = (size as u32).to_le_bytes().to_vec();
    framed.resize(4 + size, 0x5a);
    pair(
        move || rtrb_produce(&mut p, iters, &framed),
        move || {
            let mut sum = 0;
            let mut buf = vec![0u8; RING];
            for _ in 0..iters {
                // The length first (it may wrap), then the whole record.
                let len = loop {
                    if let Ok(chunk) = c.read_chunk(4) {
                        let (a, b) = chunk.as_slices();
                        let mut w = [0u8; 4];
                        w[..a.len().min(4)].copy_from_slice(&a[..a.len().min(4)]);
                        let rest = 4 - a.len().min(4);
                        w[4 - rest..].copy_from_slice(&b[..rest]);
                        break u32::from_le_bytes(w) as usize;
                    }
                    spin_loop();
                };
                let chunk = loop {
                    if let Ok(chunk) = c.read_chunk(4 + len) {
                        break chunk;
                    }
                    spin_loop();
                };
                let (a, b) = chunk.as_slices();
                let n = 4 + len;
                let (head, tail) = buf[..n].split_at_mut(a.len().min(n));
                head.copy_from_slice(&a[..head.len()]);
                tail.copy_from_slice(&b[..tail.len()]);
                sum ^= touch(&buf[4..n]);
                chunk.commit_all();
            }
            sum
        },
    )
}

fn bbqueue(iters: u64, size: usize) -> Duration {
    let bb: &'static bbqueue::BBBuffer<RING> = Box::leak(Box::new(bbqueue::BBBuffer::new()));
    let (mut p, mut c) = bb.try_split_framed().unwrap();
    let payload = vec![0x5au8; size];
    pair(
        move || {
            for _ in 0..iters {
                let mut g = loop {
                    if let Ok(g) = p.grant(size) {
                        break g;
                    }
                    spin_loop();
                };
                g[..size].copy_from_slice(&payload);
                g.commit(size);
            }
        },
        move || {
            let mut sum = 0;
            for _ in 0..iters {
                let f = loop {
                    if let Some(f) = c.read() {
                        break f;
                    }
                    spin_loop();
                };
                sum ^= touch(&f);
                f.release();
            }
            sum
        },
    )
}

fn ringbuf(iters: u64, size: usize) -> Duration {
    use ringbuf::traits::{Consumer, Observer, Producer, Split};
    let (mut p, mut c) = ringbuf::HeapRb::<u8>::new(RING).split();
    let mut payload = (size as u32).to_le_bytes().to_vec();
    payload.resize(4 + size, 0x5a);
    pair(
        move || {
            for _ in 0..iters {
                while p.vacant_len() < payload.len() {
                    spin_loop();
                }
                p.push_slice(&payload);
            }
        },
        move || {
            let mut sum = 0;
            let mut buf = vec![0u8; 4 + size];
            for _ in 0..iters {
                while c.occupied_len() < buf.len() {
                    spin_loop();
                }
                c.pop_slice(&mut buf);
                sum ^= touch(&buf[4..]);
            }
            sum
        },
    )
}

fn crossbeam<const S: usize>(iters: u64) -> Duration {
    let q = crossbeam_queue::ArrayQueue::<[u8; S]>::new(RING / S);
    let payload = [0x5au8; S];
    pair(
        || {
            for _ in 0..iters {
                while q.push(payload).is_err() {
                    spin_loop();
                }
            }
        },
        || {
            let mut sum = 0;
            for _ in 0..iters {
                let rec = loop {
                    if let Some(r) = q.pop() {
                        break r;
                    }
                    spin_loop();
                };
                sum ^= touch(&rec);
            }
            sum
        },
    )
}

fn memcpy(iters: u64, size: usize) -> Duration {
    let payload = vec![0x5au8; size];
    let mut ring = vec![0u8; RING * 16];
    let start = Instant::now();
    let mut off = 0;
    for _ in 0..iters {
        if off + size > ring.len() {
            off = 0;
        }
        ring[off..off + size].copy_from_slice(black_box(&payload));
        off += size;
    }
    black_box(&ring);
    start.elapsed()
}

fn peers(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    for size in [64usize, 1024] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("relay", size), &size, |b, &s| {
            b.iter_custom(|n| relay(n, s))
        });
        g.bench_with_input(BenchmarkId::new("rtrb", size), &size, |b, &s| {
            b.iter_custom(|n| rtrb(n, s))
        });
        g.bench_with_input(BenchmarkId::new("rtrb_framed", size), &size, |b, &s| {
            b.iter_custom(|n| rtrb_framed(n, s))
        });
        g.bench_with_input(BenchmarkId::new("bbqueue", size), &size, |b, &s| {
            b.iter_custom(|n| bbqueue(n, s))
        });
        g.bench_with_input(BenchmarkId::new("ringbuf", size), &size, |b, &s| {
            b.iter_custom(|n| ringbuf(n, s))
        });
        g.bench_with_input(
            BenchmarkId::new("crossbeam_arrayqueue", size),
            &size,
            |b, &s| {
                b.iter_custom(|n| {
                    if s == 64 {
                        crossbeam::<64>(n)
                    } else {
                        crossbeam::<1024>(n)
                    }
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, &s| {
            b.iter_custom(|n| memcpy(n, s))
        });
    }
    g.finish();
}

criterion_group!(benches, peers);
criterion_main!(benches);
