//! How the merged reader scales with the CPU count: channel files of 1, 2,
//! 8, 32, 128 and 256 CPU buffers of 64-byte records, written one record
//! per CPU in turn (the worst case for a merge) or in runs of 100, drained
//! by the consumer through `Stream::next_batch` (all CPUs merged) and,
//! as the reference, one CPU at a time (`--cpu`-style streams of one CPU
//! each, no merge). Same run, same data: the ratio says what the merge
//! costs.
//!
//! `cargo bench -p relay-user --bench scaling` (numbers in BENCHMARKS.md).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_core::merge::{Event, Flow};
use relay_core::{ChannelFlags, GeometryParams};
use relay_user::{ChannelFile, Stream, StreamOptions};

/// Records per CPU in one fill (1,000 of 64 bytes fit a 128 KiB buffer).
const PER_CPU: u64 = 1000;

struct Fixture {
    file: ChannelFile,
    cpus: u32,
    run: u64,
    t: u64,
}

impl Fixture {
    fn new(cpus: u32, run: u64) -> Self {
        let path = std::env::temp_dir().join(format!(
            "relay-scaling-{}-{cpus}-{run}.relay",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let params = GeometryParams {
            subbuf_size: 1 << 14,
            subbuf_count: 8,
            cpu_count: cpus,
            page_size: 0,
        };
        let file = ChannelFile::create(&path, params, ChannelFlags::empty()).unwrap();
        let _ = std::fs::remove_file(&path); // the mapping keeps it
        Fixture {
            file,
            cpus,
            run,
            t: 0,
        }
    }

    /// Fills every CPU with `PER_CPU` records, `run` at a time per CPU in
    /// turn, timestamps increasing across CPUs; returns how many.
    fn fill(&mut self) -> u64 {
        let payload = [7u8; 64];
        let writers: Vec<_> = (0..self.cpus)
            .map(|c| self.file.local_writer(c).unwrap())
            .collect();
        let mut n = 0;
        let mut t = self.t;
        for _ in 0..PER_CPU / self.run {
            for w in &writers {
                for _ in 0..self.run {
                    t += 1;
                    w.write(1, &payload, &mut || t).expect("fits");
                    n += 1;
                }
            }
        }
        for w in &writers {
            let _ = w.flush(&mut || t);
        }
        self.t = t;
        n
    }
}

#[inline(never)]
fn drain(stream: &mut Stream<'_>) -> u64 {
    let mut got = 0u64;
    while stream
        .next_batch(4096, &mut |e| {
            if let Event::Record { record, .. } = e {
                got += std::hint::black_box(record.payload).len() as u64 / 64;
            }
            Flow::Take
        })
        .is_some()
    {}
    got
}

fn scaling(c: &mut Criterion) {
    for run in [1u64, 100] {
        let mut g = c.benchmark_group(format!("scaling_run{run}"));
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(10);
        for cpus in [1u32, 2, 8, 32, 128, 256] {
            let mut fx = Fixture::new(cpus, run);
            g.throughput(Throughput::Elements(u64::from(cpus) * PER_CPU));
            g.bench_function(BenchmarkId::new("merged", cpus), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let n = fx.fill();
                        let start = Instant::now();
                        let got = drain(&mut Stream::new(&fx.file, StreamOptions::default()));
                        total += start.elapsed();
                        assert_eq!(got, n);
                    }
                    total
                })
            });
            g.bench_function(BenchmarkId::new("per_cpu", cpus), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let n = fx.fill();
                        let start = Instant::now();
                        let mut got = 0;
                        for cpu in 0..cpus {
                            let options = StreamOptions {
                                cpus: vec![cpu],
                                ..StreamOptions::default()
                            };
                            got += drain(&mut Stream::new(&fx.file, options));
                        }
                        total += start.elapsed();
                        assert_eq!(got, n);
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, scaling);
criterion_main!(benches);
