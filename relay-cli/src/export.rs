//! `relay export`: channels and blktrace traces written for trace viewers
//! (Chrome trace-event JSON, which Perfetto's UI opens).

use super::*;

use relay_user::export::{ChromeTrace, ClockInfo, CtfTrace};

/// Where `relay export` writes.
pub(crate) struct Targets {
    pub chrome: Option<PathBuf>,
    pub ctf: Option<PathBuf>,
}

enum Opened {
    Blktrace(RelayfsDir),
    Channel(ChannelFile),
}

/// What the sources are written to.
struct Sinks {
    chrome: Option<ChromeTrace<io::BufWriter<File>>>,
    ctf: Option<CtfTrace>,
    ctf_dir: Option<PathBuf>,
    several: bool,
}

/// A write error on one of the targets: the CTF trace (`true`) or the
/// Chrome file.
struct WriteError(bool, io::Error);

impl Sinks {
    fn each(
        &mut self,
        mut chrome: impl FnMut(&mut ChromeTrace<io::BufWriter<File>>) -> io::Result<()>,
        mut ctf: impl FnMut(&mut CtfTrace) -> io::Result<()>,
    ) -> Result<(), WriteError> {
        if let Some(c) = self.chrome.as_mut() {
            chrome(c).map_err(|e| WriteError(false, e))?;
        }
        if let Some(c) = self.ctf.as_mut() {
            ctf(c).map_err(|e| WriteError(true, e))?;
        }
        Ok(())
    }
}

/// `relay export --chrome FILE --ctf DIR SOURCE...`: each source (a
/// channel file, read as a snapshot, or a directory of blktrace's files)
/// one process of the Chrome trace, and one CTF trace (DIR itself for one
/// source, DIR/N for source N of several).
pub(crate) fn export(sources: &[PathBuf], to: &Targets) -> Result<(), Error> {
    // Every source opens before anything is made.
    let opened = sources
        .iter()
        .map(|path| {
            Ok(if path.is_dir() {
                Opened::Blktrace(RelayfsDir::open(path)?)
            } else {
                Opened::Channel(ChannelFile::open_snapshot(path)?)
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut sinks = Sinks {
        chrome: None,
        ctf: None,
        ctf_dir: to.ctf.clone(),
        several: sources.len() > 1,
    };
    if let Some(path) = &to.chrome {
        let file = File::create(path).map_err(|source| Error::Io {
            path: path.clone(),
            op: "create",
            source,
        })?;
        let trace = ChromeTrace::new(io::BufWriter::with_capacity(1 << 20, file));
        sinks.chrome = Some(trace.map_err(|source| Error::Io {
            path: path.clone(),
            op: "write",
            source,
        })?);
    }
    let result = write_all(sources, opened, &mut sinks, to);
    let result = match result {
        Ok(r) => r,
        Err((path, WriteError(_, source))) => {
            // Not a truncated file that looks whole.
            if let Some(c) = &to.chrome {
                let _ = std::fs::remove_file(c);
            }
            return Err(Error::Io {
                path,
                op: "write",
                source,
            });
        }
    };
    if let (Some(trace), Some(path)) = (sinks.chrome.take(), &to.chrome) {
        trace.finish().map_err(|source| Error::Io {
            path: path.clone(),
            op: "write",
            source,
        })?;
    }
    result
}

/// Writes every source; a write error names its target.
fn write_all(
    sources: &[PathBuf],
    opened: Vec<Opened>,
    sinks: &mut Sinks,
    to: &Targets,
) -> Result<Result<(), Error>, (PathBuf, WriteError)> {
    let mut problems = None;
    for (i, (path, source)) in sources.iter().zip(opened).enumerate() {
        let pid = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let ctf_dir = sinks.ctf_dir.as_ref().map(|d| {
            if sinks.several {
                d.join((i + 1).to_string())
            } else {
                d.clone()
            }
        });
        if let Some(dir) = &ctf_dir {
            let trace = CtfTrace::create(dir).map_err(|e| (dir.clone(), WriteError(true, e)))?;
            sinks.ctf = Some(trace);
        }
        let target = |e: WriteError| {
            let target = match (&e, &ctf_dir, &to.chrome) {
                (WriteError(true, _), Some(d), _) => d.clone(),
                (_, _, Some(c)) => c.clone(),
                _ => PathBuf::new(),
            };
            (target, e)
        };
        let clock = match source {
            Opened::Blktrace(files) => {
                let name = files.blktrace_device();
                if let Some(c) = sinks.chrome.as_mut() {
                    c.source(pid, &format!("{name} (blktrace)"))
                        .map_err(|e| target(WriteError(false, e)))?;
                }
                let cpus = files
                    .into_files()
                    .into_iter()
                    .map(|(cpu, path, reader)| CpuInput { path, cpu, reader })
                    .collect();
                let options = blktrace::Options {
                    cgroup: true,
                    ..Default::default()
                };
                let mut decoder = Decoder::new(vec![Device { name, cpus }], options);
                while let Some(item) = decoder.next_item() {
                    match item {
                        Item::Event(e) => sinks
                            .each(|c| c.blktrace(pid, &e), |c| c.blktrace(&e))
                            .map_err(target)?,
                        Item::Problem(p) if p.severity == Severity::Skipped => {
                            eprintln!("relay: warning: {p}")
                        }
                        Item::Problem(p) => {
                            eprintln!("relay: {p}");
                            problems.get_or_insert(Error::Decode {
                                path: path.clone(),
                                malformed: 1,
                                unreadable: 0,
                            });
                        }
                        _ => break, // Idle: not following, the end
                    }
                }
                ClockInfo {
                    name: "blktrace".into(),
                    description: "blktrace's nanoseconds since its first event (blkparse's times)"
                        .into(),
                    offset_ns: decoder.genesis().unwrap_or(0).into(),
                }
            }
            Opened::Channel(file) => {
                if let Some(c) = sinks.chrome.as_mut() {
                    c.source(pid, &path.display().to_string())
                        .map_err(|e| target(WriteError(false, e)))?;
                }
                let mut stream = Stream::new(&file, StreamOptions::default());
                while let Some(event) = stream.next_event() {
                    match event {
                        Event::Record { cpu, record } => sinks
                            .each(
                                |c| c.record(pid, cpu, record.ts, record.rtype, record.payload),
                                |c| c.record(cpu, record.ts, record.rtype, record.payload),
                            )
                            .map_err(target)?,
                        Event::Lost { cpu, lost, ts, .. } => sinks
                            .each(|c| c.lost(pid, cpu, ts, &lost), |c| c.lost(cpu, ts, &lost))
                            .map_err(target)?,
                        Event::Corrupt { cpu, error } => eprintln!(
                            "relay: {}: cpu {cpu}: skipped a corrupt sub-buffer: {error}",
                            path.display()
                        ),
                    }
                }
                let channel = file.channel();
                let clock = relay_core::Clock::from_u32(channel.clock());
                ClockInfo {
                    name: clock.map_or("unspecified", |c| c.name()).into(),
                    description: format!(
                        "the channel's clock ({}){}",
                        clock.map_or("unspecified", |c| c.name()),
                        if channel.anchor().is_some() {
                            ", offset to wall time by its realtime anchor"
                        } else {
                            ""
                        }
                    ),
                    offset_ns: channel
                        .anchor()
                        .map_or(0, |a| i128::from(a.realtime_ns) - i128::from(a.clock)),
                }
            }
        };
        if let (Some(trace), Some(dir)) = (sinks.ctf.take(), &ctf_dir) {
            let clamped = trace.clamped();
            trace
                .finish(&clock)
                .map_err(|e| (dir.clone(), WriteError(true, e)))?;
            if clamped > 0 {
                eprintln!(
                    "relay: {}: {clamped} events older than their CPU's previous one, stamped with \
                     its time (CTF wants each stream in order)",
                    dir.display()
                );
            }
        }
    }
    Ok(match problems {
        Some(e) => Err(e),
        None => Ok(()),
    })
}
