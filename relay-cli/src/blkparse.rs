//! `relay cat --format blktrace`: blktrace's per-CPU files, decoded and
//! printed as blkparse prints them (events, then its summary), or as JSON;
//! optionally blkparse's `-d` binary dump for btt.

use super::*;

/// What `relay cat --format blktrace` prints besides the events.
pub(crate) struct BlkparseOutput {
    /// One JSON object per event instead of blkparse's lines.
    pub json: bool,
    /// blkparse's summary after the events (text only).
    pub summary: bool,
    /// blkparse's `-d`: the binary dump, for btt.
    pub dump: Option<PathBuf>,
}

/// What the printing loop does next, asked when the decoder has nothing
/// to print and every few thousand events.
pub(crate) enum Poll {
    /// Go on (waiting a little first if idle).
    Go,
    /// Stop reading (the summary still follows).
    Stop,
}

/// `relay cat --format blktrace DIR...`: every directory's per-CPU files
/// (one device each) decoded and merged as blkparse merges them; text as
/// blkparse prints it, or one JSON object per event. Following, SIGINT or
/// SIGTERM end the reading, and the summary follows.
pub(crate) fn cat_blktrace(
    dirs: &[PathBuf],
    options: blktrace::Options,
    output: &BlkparseOutput,
    cpus: &[u32],
) -> Result<(), Error> {
    let mut devices = Vec::new();
    for dir in dirs {
        let files = RelayfsDir::open(dir)?;
        let name = files.blktrace_device();
        let cpus = files
            .into_files()
            .into_iter()
            .map(|(cpu, path, reader)| CpuInput { path, cpu, reader })
            .collect();
        devices.push(Device { name, cpus });
    }
    let follow = options.follow;
    let mut decoder = Decoder::new(devices, options);
    let terminating = if follow {
        Some(
            relay_user::os::catch_termination().map_err(|source| Error::Io {
                path: dirs.first().cloned().unwrap_or_default(),
                op: "sigaction",
                source,
            })?,
        )
    } else {
        None
    };
    let result = print_decoded(&mut decoder, output, cpus, |_| {
        if terminating.is_some_and(|t| t.load(Ordering::Acquire)) {
            Poll::Stop
        } else {
            Poll::Go
        }
    });
    relay_user::os::end_by_signal();
    result
}

/// Prints what `decoder` hands out until it ends (or `poll` says stop, or
/// stdout closes), then blkparse's summary (text, unless left out), and
/// finishes the dump. Records that cannot be decoded are reported on stderr
/// as they come; skipped ones are warnings, malformed or unreadable ones
/// make the result an error at the end.
pub(crate) fn print_decoded<R: io::Read>(
    decoder: &mut Decoder<R>,
    output: &BlkparseOutput,
    cpus: &[u32],
    mut poll: impl FnMut(&mut Decoder<R>) -> Poll,
) -> Result<(), Error> {
    if let Some(path) = &output.dump {
        let file = File::create(path).map_err(|source| Error::Io {
            path: path.clone(),
            op: "create",
            source,
        })?;
        decoder.dump_to(io::BufWriter::with_capacity(128 << 10, file));
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    let (mut malformed, mut unreadable) = (0u64, 0u64);
    let mut first_bad: Option<PathBuf> = None;
    let mut backoff = Duration::from_millis(1);
    let mut closed = false;
    let mut since_poll = 0u32;
    while let Some(item) = decoder.next_item() {
        since_poll += 1;
        if since_poll == 4096 {
            since_poll = 0;
            if let Poll::Stop = poll(decoder) {
                break;
            }
        }
        match item {
            Item::Event(e) => {
                backoff = Duration::from_millis(1);
                if !cpus.is_empty() && !cpus.contains(&e.cpu) {
                    continue;
                }
                line.clear();
                if output.json {
                    e.write_json(&mut line);
                } else {
                    e.write_blkparse(&mut line);
                }
                if out.write_all(&line).is_err() {
                    closed = true; // stdout closed (e.g. `| head`)
                    break;
                }
            }
            Item::Problem(p) => {
                match p.severity {
                    Severity::Skipped => {
                        eprintln!("relay: warning: {p}");
                        continue;
                    }
                    Severity::Io => unreadable += 1,
                    _ => malformed += 1,
                }
                eprintln!("relay: {p}");
                if first_bad.is_none() {
                    first_bad = Some(p.path.parent().unwrap_or(&p.path).to_path_buf());
                }
            }
            Item::Idle => {
                since_poll = 0;
                if let Poll::Stop = poll(decoder) {
                    break;
                }
                if out.flush().is_err() {
                    closed = true;
                    break;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            _ => {} // kinds of items this relay does not know
        }
    }
    if output.summary && !output.json && !closed {
        line.clear();
        decoder
            .summary()
            .write_blkparse(&mut line, relay_user::os::locale_exists("en_US"));
        let _ = out.write_all(&line);
    }
    let _ = out.flush();
    drop(out);
    if let Some(path) = &output.dump {
        decoder.finish_dump().map_err(|source| Error::Io {
            path: path.clone(),
            op: "write",
            source,
        })?;
    } else if decoder.summary().had_driver_data() && !output.json {
        eprintln!(
            "relay: note: discarded traces containing low-level device driver specific data \
             (only available in binary output, --dump)"
        );
    }
    match first_bad {
        None => Ok(()),
        Some(path) => Err(Error::Decode {
            path,
            malformed,
            unreadable,
        }),
    }
}
