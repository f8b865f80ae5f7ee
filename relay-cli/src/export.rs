//! `relay export`: channels and blktrace traces written for trace viewers
//! (Chrome trace-event JSON, which Perfetto's UI opens).

use super::*;

use relay_user::export::ChromeTrace;

/// `relay export --chrome FILE SOURCE...`: each source (a channel file,
/// read as a snapshot, or a directory of blktrace's files) one process of
/// the trace, in argument order.
pub(crate) fn export_chrome(sources: &[PathBuf], to: &Path) -> Result<(), Error> {
    // Every source opens before the file is made.
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
    let file = File::create(to).map_err(|source| Error::Io {
        path: to.to_path_buf(),
        op: "create",
        source,
    })?;
    let result = write_chrome(sources, opened, io::BufWriter::with_capacity(1 << 20, file));
    if let Err(Error::Io { .. }) = &result {
        let _ = std::fs::remove_file(to); // not a truncated file that looks whole
    }
    result.map_err(|e| match e {
        Error::Io {
            op: "write",
            source,
            ..
        } => Error::Io {
            path: to.to_path_buf(),
            op: "write",
            source,
        },
        e => e,
    })
}

enum Opened {
    Blktrace(RelayfsDir),
    Channel(ChannelFile),
}

fn write_chrome(sources: &[PathBuf], opened: Vec<Opened>, out: impl Write) -> Result<(), Error> {
    let w = |source| Error::Io {
        path: PathBuf::new(),
        op: "write",
        source,
    };
    let mut trace = ChromeTrace::new(out).map_err(w)?;
    let mut problems = None;
    for (i, (path, source)) in sources.iter().zip(opened).enumerate() {
        let pid = u32::try_from(i + 1).unwrap_or(u32::MAX);
        match source {
            Opened::Blktrace(files) => {
                let name = files.blktrace_device();
                trace
                    .source(pid, &format!("{name} (blktrace)"))
                    .map_err(w)?;
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
                        Item::Event(e) => trace.blktrace(pid, &e).map_err(w)?,
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
                        Item::Idle => break,
                    }
                }
            }
            Opened::Channel(file) => {
                trace.source(pid, &path.display().to_string()).map_err(w)?;
                let mut stream = Stream::new(&file, StreamOptions::default());
                while let Some(event) = stream.next_event() {
                    match event {
                        Event::Record { cpu, record } => trace
                            .record(pid, cpu, record.ts, record.rtype, record.payload)
                            .map_err(w)?,
                        Event::Lost { cpu, lost, ts, .. } => {
                            trace.lost(pid, cpu, ts, &lost).map_err(w)?
                        }
                        Event::Corrupt { cpu, error } => eprintln!(
                            "relay: {}: cpu {cpu}: skipped a corrupt sub-buffer: {error}",
                            path.display()
                        ),
                    }
                }
            }
        }
    }
    trace.finish().map_err(w)?;
    match problems {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
