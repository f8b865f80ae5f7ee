//! `relay demo`: writers on every CPU, one merged reader, a verified
//! summary.

use super::*;

pub(crate) fn demo(
    seconds: f64,
    overwrite: bool,
    cpus: Option<u32>,
    keep: Option<&Path>,
) -> ExitCode {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = keep.map_or_else(
        || dir.join(format!("relay-demo-{}.relay", std::process::id())),
        Path::to_path_buf,
    );
    let file = match create(&path, 1 << 16, 16, overwrite, cpus) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(exit::IO);
        }
    };
    if keep.is_none() {
        let _ = std::fs::remove_file(&path); // the mapping keeps it alive
    }
    let g = *file.geometry();
    let n = g.cpu_count();
    let mode = if overwrite {
        Mode::Overwrite
    } else {
        Mode::NoOverwrite
    };
    println!(
        "relay demo: {n} writer threads, one per CPU buffer ({} x {} KiB, {}), one merged reader, {seconds}s",
        g.subbuf_count(),
        g.subbuf_size() / 1024,
        mode_name(mode)
    );
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (written, report) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..n)
            .map(|cpu| {
                let (file, stop) = (&file, &stop);
                s.spawn(move || {
                    // This thread is the buffer's only writer: per-CPU atomics.
                    let w = file.local_writer(cpu).expect("cpu exists");
                    let (mut attempts, mut accepted) = (0u64, 0u64);
                    let mut buf = [0u8; 64];
                    let mut last_flush = monotonic_ns();
                    while !stop.load(Ordering::Relaxed) {
                        // Every attempt takes a number, refused ones too: a
                        // gap is exactly the records lost there.
                        checked::fill(&mut buf, cpu, 0, attempts);
                        attempts += 1;
                        if w.write(cpu as u16, &buf, &mut monotonic_ns).is_ok() {
                            accepted += 1;
                        } else {
                            // Full (counted): give the reader the core.
                            std::thread::yield_now();
                        }
                        if attempts % 1024 == 0 {
                            let now = monotonic_ns();
                            if now - last_flush > 2_000_000 {
                                let _ = w.flush(&mut monotonic_ns);
                                last_flush = now;
                            }
                        }
                    }
                    let _ = w.flush(&mut monotonic_ns);
                    (attempts, accepted)
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut stream = Stream::new(
                &file,
                StreamOptions {
                    follow: true,
                    ..Default::default()
                },
            )
            .stop_when(&done);
            let mut tallies = vec![CpuTally::default(); n as usize];
            let mut v = Verifier::new(&mut tallies, mode, false);
            let mut bytes = 0u64;
            let mut tick = Instant::now();
            let mut last_total = 0u64;
            while stream
                .next_batch(4096, &mut |e| {
                    if let Event::Record { record, .. } = e {
                        bytes += record.payload.len() as u64;
                    }
                    v.see(&e);
                    Flow::Take
                })
                .is_some()
            {
                if tick.elapsed() >= Duration::from_secs(1) {
                    let total: u64 = v.tallies().iter().map(|t| t.delivered).sum();
                    println!(
                        "  {:>4.1}s  {:>11} records read  {:>7.2} M/s",
                        start.elapsed().as_secs_f64(),
                        total,
                        (total - last_total) as f64 / tick.elapsed().as_secs_f64() / 1e6
                    );
                    last_total = total;
                    tick = Instant::now();
                }
            }
            v.finish();
            let (failures, first) = (v.failures, v.first_failure);
            (tallies, failures, first, bytes, stream.late())
        });
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Release);
        let written: Vec<(u64, u64)> = writers
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect();
        done.store(true, Ordering::Release);
        (written, reader.join().expect("reader"))
    });
    let elapsed = start.elapsed().as_secs_f64();
    let (tallies, failures, first_failure, bytes, late) = report;
    println!("\n cpu      written    delivered    lost:full  lost:overwrite  reported  accounting");
    let mut balanced = true;
    for cpu in 0..n as usize {
        let s = file.stats(cpu as u32).expect("cpu exists");
        let t = &tallies[cpu];
        let (attempts, accepted) = written[cpu];
        let ok = accepted == t.delivered + s.lost.overwrite
            && attempts - accepted == s.lost.full + s.lost.too_big
            && t.lost == s.lost
            && t.balanced(attempts);
        balanced &= ok;
        println!(
            " {cpu:>3} {attempts:>12} {:>12} {:>12} {:>15}  {:>8}  {}",
            t.delivered,
            s.lost.full,
            s.lost.overwrite,
            if t.lost == s.lost { "all" } else { "MISSING" },
            if ok { "exact" } else { "MISMATCH" }
        );
    }
    let total: u64 = tallies.iter().map(|t| t.delivered).sum();
    println!(
        "\n{total} records, {:.1} MB in {elapsed:.1}s: {:.2} M records/s, {:.0} MB/s through one merged stream",
        bytes as f64 / 1e6,
        total as f64 / elapsed / 1e6,
        bytes as f64 / elapsed / 1e6
    );
    let verified = match first_failure {
        None => "verified".to_string(),
        Some(m) => format!("FAILED ({failures}; first: {m})"),
    };
    println!(
        "checksums and per-CPU order: {verified}; timestamp order: {late} late records; every record delivered or counted: {}",
        if balanced { "yes" } else { "NO" }
    );
    if late > 0 {
        println!(
            "(a late record is older than one the merge already gave from another CPU: its writer \
             read the clock, then was preempted before the record was readable)"
        );
    }
    if let Some(p) = keep {
        println!(
            "the channel stays in {}: relay stat, relay cat, relay verify --resume read it",
            p.display()
        );
    }
    if failures == 0 && balanced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::VERIFY)
    }
}
