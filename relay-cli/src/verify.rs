//! `relay verify`: checked payloads against the loss accounting.

use super::*;

/// `relay verify`'s options.
pub(crate) struct VerifyOptions {
    pub(crate) follow: bool,
    pub(crate) until_idle: Duration,
    pub(crate) latency: Duration,
    pub(crate) resume: bool,
    pub(crate) expect_lost: Option<u64>,
    pub(crate) expect_records: Option<u64>,
    pub(crate) mode: Option<Mode>,
    pub(crate) verbose: bool,
}

/// Per CPU, what the channel counts: every write attempted is produced or
/// lost for lack of room or abandoned by a dead writer (`produced + lost_full +
/// lost_too_big + lost_abandoned`).
type Attempts = Vec<Option<u64>>;

pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::NoOverwrite => "no-overwrite",
        Mode::Overwrite => "overwrite",
    }
}

/// Prints the per-CPU lines (verbose) and the summary; whether all passed.
/// `attempts`: the channel's statistics, if the source has them; `all_cpus`:
/// the source covers every CPU, so one that wrote and delivered nothing
/// also fails (unless resumed).
pub(crate) fn verify_report(
    v: &Verifier<'_>,
    mode: Mode,
    attempts: Option<&Attempts>,
    earlier: Option<&[u64]>,
    all_cpus: bool,
    o: &VerifyOptions,
) -> bool {
    let tallies = v.tallies();
    let mut total = (0u64, Lost::default());
    let mut cpus = 0u32;
    let mut problem: Option<String> = v
        .first_failure
        .map(|m| format!("{m} ({} checks failed)", v.failures));
    for (cpu, t) in tallies.iter().enumerate() {
        let a = attempts.and_then(|a| a.get(cpu).copied().flatten());
        let active = t.delivered > 0 || !t.lost.is_zero();
        let checked = active || (all_cpus && !o.resume && a.is_some_and(|a| a > 0));
        if !checked {
            continue;
        }
        cpus += u32::from(active);
        total.0 += t.delivered;
        total.1.full += t.lost.full;
        total.1.too_big += t.lost.too_big;
        total.1.overwrite += t.lost.overwrite;
        total.1.abandoned += t.lost.abandoned;
        let balanced = a.map(|a| t.balanced(a));
        if o.verbose {
            let acct = match (a, balanced) {
                (Some(a), Some(true)) => format!(" attempts={a} balanced"),
                (Some(a), _) => format!(" attempts={a} UNBALANCED"),
                _ => String::new(),
            };
            println!(
                " cpu {cpu}: delivered={} lost={} (full {}, too big {}, overwritten {}) earlier={} bad={} sources={:#06b}{acct}",
                t.delivered,
                t.lost.total(),
                t.lost.full,
                t.lost.too_big,
                t.lost.overwrite,
                t.base,
                t.bad,
                t.sources
            );
        }
        // A resumed stream must begin right after what earlier readers took.
        if let (Some(&e), true, None) = (earlier.and_then(|e| e.get(cpu)), t.sources != 0, &problem)
        {
            if t.base != e {
                problem = Some(format!(
                    "cpu {cpu}: resume: the stream began at record {} but earlier readers took {e}: records lost at the restart",
                    t.base
                ));
            }
        }
        if let (Some(a), Some(false), None) = (a, balanced, &problem) {
            problem = Some(format!(
                "cpu {cpu}: accounting: delivered {} + lost {} + consumed earlier {} != {a} writes the channel counts (produced + lost full + lost too big)",
                t.delivered,
                t.lost.total(),
                t.base
            ));
        }
    }
    if problem.is_none() {
        if let Some(n) = o.expect_records.filter(|&n| n != total.0) {
            problem = Some(format!("records: expected {n}, delivered {}", total.0));
        }
    }
    if problem.is_none() {
        if let Some(n) = o.expect_lost.filter(|&n| n != total.1.total()) {
            problem = Some(format!("lost: expected {n}, reported {}", total.1.total()));
        }
    }
    let stats = if attempts.is_some() {
        ""
    } else {
        " stats=none"
    };
    let abandoned = if total.1.abandoned > 0 {
        format!(", abandoned {}", total.1.abandoned)
    } else {
        String::new()
    };
    let summary = format!(
        "records={} lost={} (full {}, too big {}, overwritten {}{abandoned}) cpus={cpus} late={} mode={}{stats}",
        total.0,
        total.1.total(),
        total.1.full,
        total.1.too_big,
        total.1.overwrite,
        v.late,
        mode_name(mode)
    );
    match problem {
        None => {
            println!("verify ok: {summary}");
            true
        }
        Some(p) => {
            println!("verify FAILED: {p}; {summary}");
            false
        }
    }
}

/// `relay verify PATH`: the mapped channel, merged; then its statistics.
pub(crate) fn verify_mapped(
    path: &Path,
    o: &VerifyOptions,
    stop: &AtomicBool,
) -> Result<bool, Error> {
    let file = ChannelFile::open_consumer(path, &[])?;
    let mode = o.mode.unwrap_or_else(|| file.flags().into());
    let n = file.geometry().cpu_count();
    let mut tallies = vec![CpuTally::default(); n as usize];
    let mut v = Verifier::new(&mut tallies, mode, o.resume);
    let options = StreamOptions {
        cpus: Vec::new(),
        follow: o.follow,
        latency: o.latency,
        until_idle: Some(o.until_idle),
    };
    // What earlier readers took (records and reported losses), for a
    // resumed no-overwrite stream to start right after.
    let earlier: Option<Vec<u64>> = (o.resume && mode == Mode::NoOverwrite).then(|| {
        (0..n)
            .map(|cpu| {
                file.channel().reader(cpu).map_or(0, |r| {
                    r.records_before_resume()
                        .wrapping_add(r.lost_reported().total())
                })
            })
            .collect()
    });
    let mut stream = Stream::new(&file, options).stop_when(stop);
    while stream
        .next_batch(4096, &mut |e| {
            if let Event::Corrupt { cpu, error } = e {
                eprintln!("relay: {}: cpu {cpu}: {error}", path.display());
            }
            v.see(&e);
            Flow::Take
        })
        .is_some()
    {}
    drop(stream);
    v.finish();
    let attempts: Attempts = (0..n)
        .map(|cpu| {
            file.stats(cpu)
                .map(|s| s.produced + s.lost.full + s.lost.too_big + s.lost.abandoned)
        })
        .collect();
    Ok(verify_report(
        &v,
        mode,
        Some(&attempts),
        earlier.as_deref(),
        true,
        o,
    ))
}

/// `relay verify -` and `relay verify --read PATH`: decoded frames. Only a
/// kernel channel file read() whole can also give statistics (the ioctl).
pub(crate) fn verify_frames(
    path: &Path,
    o: &VerifyOptions,
    stop: &AtomicBool,
) -> Result<bool, Error> {
    let name = if path.as_os_str() == "-" {
        Path::new("<stdin>")
    } else {
        path
    };
    let header = (path.as_os_str() != "-")
        .then(|| ChannelFile::probe(path).ok())
        .flatten();
    let cpus = header.map_or(8192, |(g, _)| g.cpu_count() as usize);
    // Without a mode, check both ways and pick once the stream has shown
    // whether anything was overwritten.
    let modes: Vec<Mode> = match o.mode.or(header.map(|(_, f)| f.into())) {
        Some(m) => vec![m],
        None => vec![Mode::NoOverwrite, Mode::Overwrite],
    };
    let mut tallies: Vec<Vec<CpuTally>> = modes
        .iter()
        .map(|_| vec![CpuTally::default(); cpus])
        .collect();
    let mut verifiers: Vec<Verifier<'_>> = tallies
        .iter_mut()
        .zip(&modes)
        .map(|(t, &m)| Verifier::new(t, m, o.resume))
        .collect();
    let mut overwritten = false;
    let mut source = FrameSource::open(path)?;
    source.run(o.follow, o.latency, Some(o.until_idle), |frame| {
        let event = match frame {
            Frame::Start { .. } => return true,
            Frame::Corrupt { cpu, seq, message } => {
                eprintln!("relay: {}: cpu {cpu}: {message}", name.display());
                // The verifier counts it; the message was printed.
                Event::Corrupt {
                    cpu,
                    error: ReadError::Corrupt {
                        seq,
                        error: FormatError {
                            field: "subbuf",
                            offset: 0,
                            value: seq,
                            rule: relay_core::format::Rule::Equals(seq),
                        },
                    },
                }
            }
            _ => match frame.event() {
                Some(e) => {
                    overwritten |= matches!(e, Event::Lost { lost, .. } if lost.overwrite > 0);
                    e
                }
                None => return true,
            },
        };
        for v in &mut verifiers {
            v.see(&event);
        }
        !stop.load(Ordering::Acquire)
    })?;
    for v in &mut verifiers {
        v.finish();
    }
    let stats = source
        .file()
        .and_then(|f| kernel::stats(f.as_fd()).ok())
        .map(|(cpus, _)| {
            cpus.iter()
                .map(|s| Some(s.produced + s.lost_full + s.lost_too_big))
                .collect::<Attempts>()
        });
    let pick = if modes.len() == 2 && overwritten {
        1
    } else {
        0
    };
    Ok(verify_report(
        &verifiers[pick],
        modes[pick],
        stats.as_ref(),
        None,
        false,
        o,
    ))
}
