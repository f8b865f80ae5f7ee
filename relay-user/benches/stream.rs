//! The merged reader alone: a channel file with two CPU buffers filled with
//! 64-byte records, drained through `Stream::next_batch` (all CPUs merged
//! by timestamp): by the consumer (in place) and by a snapshot of the same
//! data (read-only mapping, every sub-buffer copied and checked against
//! reuse), in one run, so their ratio is comparable.
//!
//! `cargo bench -p relay-user --bench stream` (numbers in BENCHMARKS.md).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relay_core::merge::{Event, Flow};
use relay_core::{ChannelFlags, GeometryParams};
use relay_user::{ChannelFile, Stream, StreamOptions};

fn merged_drain(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("relay-bench-{}.relay", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let params = GeometryParams {
        subbuf_size: 1 << 16,
        subbuf_count: 64,
        cpu_count: 2,
        page_size: 0,
    };
    let file = ChannelFile::create(&path, params, ChannelFlags::empty()).unwrap();
    let snapshot_file = ChannelFile::open_snapshot(&path).unwrap();
    let _ = std::fs::remove_file(&path); // the mappings keep it
    let payload = [7u8; 64];
    let mut t = 0u64;
    // One fill: both CPUs to the brim, interleaved in time (alternating
    // runs of 100 records), so the merge switches CPUs.
    let mut fill = || -> u64 {
        let (w0, w1) = (file.local_writer(0).unwrap(), file.local_writer(1).unwrap());
        let mut n = 0;
        let mut full = [false; 2];
        while !(full[0] && full[1]) {
            for (cpu, w) in [&w0, &w1].into_iter().enumerate() {
                for _ in 0..100 {
                    t += 1;
                    if full[cpu] || w.write(1, &payload, &mut || t).is_err() {
                        full[cpu] = true;
                        break;
                    }
                    n += 1;
                }
            }
        }
        let _ = w0.flush(&mut || t);
        let _ = w1.flush(&mut || t);
        n
    };
    let per_fill = fill();
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(per_fill))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("merged_drain_2cpus_64B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut s = Stream::new(&file, StreamOptions::default());
                let mut got = 0u64;
                while s
                    .next_batch(4096, &mut |e| {
                        if let Event::Record { record, .. } = e {
                            got += std::hint::black_box(record.payload).len() as u64 / 64;
                        }
                        Flow::Take
                    })
                    .is_some()
                {}
                total += start.elapsed();
                assert_eq!(got, per_fill);
                assert_eq!(fill(), per_fill);
            }
            total
        })
    });
    // The snapshot reads the full channel again and again: it consumes
    // nothing.
    g.bench_function("snapshot_drain_2cpus_64B", |b| {
        b.iter(|| {
            let mut s = Stream::new(&snapshot_file, StreamOptions::default());
            let mut got = 0u64;
            while s
                .next_batch(4096, &mut |e| {
                    if let Event::Record { record, .. } = e {
                        got += std::hint::black_box(record.payload).len() as u64 / 64;
                    }
                    Flow::Take
                })
                .is_some()
            {}
            assert_eq!(got, per_fill);
        })
    });
    g.finish();
}

criterion_group!(benches, merged_drain);
criterion_main!(benches);
