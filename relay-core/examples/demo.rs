//! The core on its own: one writer thread per CPU buffer producing
//! checksummed records for a few seconds while one reader drains every CPU
//! in place; then the accounting is checked: per CPU, every record accepted
//! was delivered once (in order, intact) or counted lost.
//!
//! `cargo run --release -p relay-core --example demo -- [seconds] [overwrite]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use relay_core::{AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams, Lost};

/// FNV-1a, as the payload checksum.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let overwrite = args.iter().any(|a| a == "overwrite");
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    let geo = Geometry::new(GeometryParams {
        subbuf_size: 1 << 16,
        subbuf_count: 8,
        cpu_count: cpus,
        page_size: 4096,
    })
    .expect("valid geometry");
    let mem: Vec<AtomicU64> = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let flags = if overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    let ch = Channel::create(&mem, geo, flags, Clock::Monotonic).expect("channel fits");
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_nanos() as u64;
    let stop = AtomicBool::new(false);
    let writers_done = AtomicBool::new(false);
    println!(
        "relay-core demo: {cpus} CPU buffers x {} x {} KiB, {} mode, {seconds}s",
        geo.subbuf_count(),
        geo.subbuf_size() / 1024,
        if overwrite {
            "overwrite"
        } else {
            "no-overwrite"
        }
    );

    let (written, delivered, bytes) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..cpus)
            .map(|cpu| {
                let (ch, stop) = (&ch, &stop);
                s.spawn(move || {
                    // The only writer of this buffer: per-CPU atomics suffice.
                    let w = ch.local_writer(cpu).unwrap();
                    let mut clock = || now();
                    let (mut attempts, mut seq) = (0u64, 0u64);
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        let len = 16 + (seq % 48) as usize;
                        buf[..8].copy_from_slice(&seq.to_le_bytes());
                        for (i, b) in buf[16..len].iter_mut().enumerate() {
                            *b = (seq as u8).wrapping_add(i as u8);
                        }
                        let sum = fnv(&buf[16..len]);
                        buf[8..16].copy_from_slice(&sum.to_le_bytes());
                        attempts += 1;
                        if w.write(cpu as u16, &buf[..len], &mut clock).is_ok() {
                            seq += 1;
                        }
                    }
                    let _ = w.flush(&mut clock);
                    (attempts, seq)
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut readers: Vec<_> = (0..cpus).map(|c| ch.reader(c).unwrap()).collect();
            let mut next_seq = vec![0u64; cpus as usize];
            let mut delivered = vec![0u64; cpus as usize];
            let mut reported = vec![Lost::default(); cpus as usize];
            let mut bytes = 0u64;
            let mut buf = vec![0u8; geo.subbuf_size() as usize];
            let mut last_print = Instant::now();
            loop {
                let finished = writers_done.load(Ordering::Acquire);
                let mut idle = true;
                for (cpu, r) in readers.iter_mut().enumerate() {
                    while let Some(d) = r.next(&mut buf).expect("valid sub-buffer") {
                        idle = false;
                        let mut n = 0;
                        for rec in d.records() {
                            let p = rec.payload;
                            let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
                            let sum = u64::from_le_bytes(p[8..16].try_into().unwrap());
                            assert_eq!(sum, fnv(&p[16..]), "checksum, cpu {cpu} record {seq}");
                            assert!(
                                seq >= next_seq[cpu],
                                "order, cpu {cpu}: {seq} after {}",
                                next_seq[cpu]
                            );
                            next_seq[cpu] = seq + 1;
                            bytes += p.len() as u64;
                            n += 1;
                        }
                        let (seq, lost) = (d.seq, d.lost_before);
                        reported[cpu].overwrite += lost.overwrite;
                        reported[cpu].full += lost.full;
                        r.finish(seq, &lost, n);
                        delivered[cpu] += n;
                    }
                }
                if last_print.elapsed() > Duration::from_secs(1) {
                    let total: u64 = delivered.iter().sum();
                    println!(
                        "  {:>5.1}s  {:>12} records read",
                        epoch.elapsed().as_secs_f64(),
                        total
                    );
                    last_print = Instant::now();
                }
                if finished && idle {
                    return (delivered, bytes);
                }
                if idle {
                    std::thread::yield_now();
                }
            }
        });
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Release);
        let written: Vec<(u64, u64)> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        writers_done.store(true, Ordering::Release);
        let (delivered, bytes) = reader.join().unwrap();
        (written, delivered, bytes)
    });

    let elapsed = epoch.elapsed().as_secs_f64();
    let mut ok = true;
    println!("\n cpu     attempted      accepted     delivered   lost:full  lost:overwrite");
    for cpu in 0..cpus as usize {
        let st = ch.stats(cpu as u32).unwrap();
        let (attempts, accepted) = written[cpu];
        let balanced =
            accepted == delivered[cpu] + st.lost.overwrite && attempts - accepted == st.lost.full;
        ok &= balanced;
        println!(
            " {cpu:>3} {attempts:>13} {accepted:>13} {:>13} {:>11} {:>15}  {}",
            delivered[cpu],
            st.lost.full,
            st.lost.overwrite,
            if balanced { "balanced" } else { "MISMATCH" }
        );
    }
    let total: u64 = delivered.iter().sum();
    println!(
        "\n{total} records ({:.1} MB payload) in {elapsed:.1}s: {:.2} M records/s delivered; checksums and per-CPU order verified",
        bytes as f64 / 1e6,
        total as f64 / elapsed / 1e6
    );
    if !ok {
        eprintln!("accounting mismatch: written != delivered + lost");
        std::process::exit(1);
    }
}
