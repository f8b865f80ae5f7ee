//! Writer and writer+reader throughput of relay-core.
//!
//! `cargo bench -p relay-core --bench writer` (numbers in BENCHMARKS.md).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_core::{AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams, WriteError};

fn channel_mem(subbuf_size: u64, count: u64) -> (Geometry, Vec<AtomicU64>) {
    let geo = Geometry::new(GeometryParams {
        subbuf_size,
        subbuf_count: count,
        cpu_count: 1,
        page_size: 4096,
    })
    .unwrap();
    let mem = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    (geo, mem)
}

/// One thread, flight-recorder mode (the writer never waits): the cost of
/// reserve + copy + commit, sub-buffer switches and reclaims included.
fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_one_thread");
    for size in [64usize, 1024] {
        let (geo, mem) = channel_mem(1 << 16, 8);
        let ch = Channel::create(&mem, geo, ChannelFlags::OVERWRITE, Clock::Counter).unwrap();
        let w = ch.writer(0).unwrap();
        let payload = vec![0xabu8; size];
        g.throughput(Throughput::Elements(1));
        let mut t = 0u64;
        g.bench_with_input(BenchmarkId::new("counter_clock", size), &size, |b, _| {
            b.iter(|| {
                w.write(1, black_box(&payload), &mut || {
                    t += 1;
                    t
                })
                .unwrap()
            })
        });
        let lw = ch.local_writer(0).unwrap();
        g.bench_with_input(
            BenchmarkId::new("local_counter_clock", size),
            &size,
            |b, _| {
                b.iter(|| {
                    lw.write(1, black_box(&payload), &mut || {
                        t += 1;
                        t
                    })
                    .unwrap()
                })
            },
        );
        let start = Instant::now();
        g.bench_with_input(
            BenchmarkId::new("local_monotonic_clock", size),
            &size,
            |b, _| {
                b.iter(|| {
                    lw.write(1, black_box(&payload), &mut || {
                        start.elapsed().as_nanos() as u64
                    })
                    .unwrap()
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("monotonic_clock", size), &size, |b, _| {
            b.iter(|| {
                w.write(1, black_box(&payload), &mut || {
                    start.elapsed().as_nanos() as u64
                })
                .unwrap()
            })
        });
    }
    g.finish();
}

/// One writer thread and one reader thread, no-overwrite: the writer spins
/// when the buffer is full, the reader parses every record in place.
fn writer_and_reader(c: &mut Criterion) {
    let mut g = c.benchmark_group("writer_and_reader");
    g.measurement_time(Duration::from_secs(5));
    for size in [64usize, 1024] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("records", size), &size, |b, &size| {
            b.iter_custom(|iters| {
                let (geo, mem) = channel_mem(1 << 16, 8);
                let ch = Channel::create(&mem, geo, ChannelFlags::empty(), Clock::Counter).unwrap();
                let done = AtomicBool::new(false);
                let payload = vec![0x5au8; size];
                std::thread::scope(|s| {
                    let reader = s.spawn(|| {
                        let mut r = ch.reader(0).unwrap();
                        let mut got = 0u64;
                        let mut sum = 0u64;
                        loop {
                            let finished = done.load(Ordering::Acquire);
                            while let Some(d) = r.peek().unwrap() {
                                let mut n = 0;
                                for rec in d.records() {
                                    sum = sum.wrapping_add(rec.ts ^ rec.payload.len() as u64);
                                    n += 1;
                                }
                                let (seq, lost) = (d.seq, d.lost_before);
                                r.finish(seq, &lost, n);
                                r.commit();
                                got += n;
                            }
                            if finished && r.ready().is_none() {
                                return (got, sum);
                            }
                            std::hint::spin_loop();
                        }
                    });
                    let start = Instant::now();
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
                                Err(WriteError::Full) => std::hint::spin_loop(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    let _ = w.flush(&mut clock);
                    done.store(true, Ordering::Release);
                    let (got, sum) = reader.join().unwrap();
                    let elapsed = start.elapsed();
                    assert_eq!(got, iters);
                    black_box(sum);
                    elapsed
                })
            })
        });
    }
    g.finish();
}

/// The reader alone: validate a sealed 64 KiB sub-buffer (header and record
/// framing) and iterate its records, in place.
fn reader_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("reader_parse");
    for size in [64usize, 1024] {
        let (geo, mem) = channel_mem(1 << 16, 2);
        let ch = Channel::create(&mem, geo, ChannelFlags::empty(), Clock::Counter).unwrap();
        let w = ch.local_writer(0).unwrap();
        let payload = vec![0x11u8; size];
        let mut t = 0u64;
        let mut clock = || {
            t += 1;
            t
        };
        while w.write(1, &payload, &mut clock).is_ok() {}
        let mut r = ch.reader(0).unwrap();
        let d = r.peek().unwrap().unwrap();
        let bytes = d.view.header().content_size as u64;
        let seq = d.seq;
        let raw: Vec<u8> = mem[(geo.data_offset() / 8) as usize..][..(1 << 13)]
            .iter()
            .flat_map(|w| w.load(std::sync::atomic::Ordering::Relaxed).to_le_bytes())
            .collect();
        g.throughput(Throughput::Bytes(bytes));
        g.bench_with_input(
            BenchmarkId::new("subbuf_64KiB_records", size),
            &size,
            |b, _| {
                b.iter(|| {
                    let view =
                        relay_core::SubbufView::parse(black_box(&raw), &geo, seq, 0).unwrap();
                    let mut sum = 0u64;
                    for rec in view.records() {
                        sum = sum.wrapping_add(rec.ts ^ rec.payload.len() as u64);
                    }
                    sum
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, single_thread, writer_and_reader, reader_parse);
criterion_main!(benches);
