//! `relay cat`: a channel file (snapshot or consumer), frames from
//! read(), relayfs directories, blktrace.

use super::*;

use relay_user::OwnedEvent;

pub(crate) fn cat(
    path: &Path,
    options: &StreamOptions,
    output: Output,
    flush: bool,
    consume: bool,
) -> Result<(), Error> {
    if path.is_dir() {
        return cat_relayfs(path, options, output);
    }
    if flush {
        // As a producer (a kernel channel file is flushed by the module).
        flush_all(&open_producer(path)?);
    }
    let file = if consume {
        ChannelFile::open_consumer(path, &options.cpus)?
    } else {
        ChannelFile::open_snapshot(path)?
    };
    let times = checked_times(&file, path, options, output);
    // A consumer commits a batch once stdout took it, so a batch must fit
    // in one write a pipe takes whole or refuses (PIPE_BUF), and SIGINT or
    // SIGTERM end the loop between batches instead of mid-way.
    let terminating = relay_user::os::catch_termination().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        op: "sigaction",
        source,
    })?;
    let chunk = if relay_user::os::stdout_is_pipe() {
        relay_user::os::PIPE_BUF
    } else {
        64 * 1024
    };
    let mut stream = Stream::new(&file, options.clone()).stop_when(terminating);
    let mut p = Printer {
        out: Vec::with_capacity(2 * chunk),
        path,
        json: output.json,
        raw: output.raw,
        payload: output.payload,
        corrupt: 0,
        closed: false,
        notes: Vec::new(),
        line: Vec::new(),
        times,
        channel: None,
    };
    while !terminating.load(Ordering::Acquire) {
        let batch = stream.next_batch(usize::MAX, &mut |e| {
            let before = p.out.len();
            let record = matches!(e, Event::Record { .. });
            p.print(e);
            if record && before > 0 && p.out.len() > chunk {
                p.out.truncate(before); // next batch
                Flow::Stop
            } else {
                Flow::Take
            }
        });
        if batch.is_none() {
            break;
        }
        if relay_user::os::write_stdout(&p.out).is_err() {
            p.closed = true; // e.g. `| head`: what it took stays committed
            break;
        }
        p.emit_notes();
        p.out.clear();
        stream.commit();
    }
    for (cpu, n) in stream.overrun_subbufs() {
        eprintln!(
            "relay: {}: cpu {cpu}: {n} sub-buffers were overwritten while this snapshot read them (their records are missing from it)",
            path.display()
        );
    }
    relay_user::os::end_by_signal();
    if p.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            subbufs: p.corrupt,
        })
    }
}

/// How `file`'s timestamps print, after a usage error for a `--cpu` the
/// channel does not have or a `--time` its clock cannot give.
fn checked_times(
    file: &ChannelFile,
    path: &Path,
    options: &StreamOptions,
    output: Output,
) -> crate::time::Times {
    let cpus = file.geometry().cpu_count();
    if let Some(cpu) = options.cpus.iter().find(|&&c| c >= cpus) {
        usage_error(format!(
            "--cpu {cpu}: {} has {cpus} CPU buffers (0 to {})",
            path.display(),
            cpus - 1
        ));
    }
    crate::time::Times::new(
        output.time,
        Some(file.channel().clock()),
        file.channel().anchor(),
        path,
    )
    .unwrap_or_else(|e| usage_error(e))
}

/// One of the channels `relay cat a b` merges.
struct Source<'a> {
    stream: Stream<'a>,
    times: crate::time::Times,
    path: &'a Path,
    name: &'a str,
    /// Its next event, copied out (events borrow their stream); handed out
    /// by the stream, so a consumer commits it with the next call, which
    /// comes only once it is printed and written.
    held: Option<OwnedEvent>,
    /// The stream ended.
    ended: bool,
    /// Following: since when it has had nothing to give.
    idle_since: Option<Instant>,
}

impl<'a> Source<'a> {
    /// Prints `event` as this channel's.
    fn print(&mut self, p: &mut Printer<'a, Vec<u8>>, event: Event<'_>) {
        std::mem::swap(&mut p.times, &mut self.times);
        (p.path, p.channel) = (self.path, Some(self.name));
        p.print(event);
        std::mem::swap(&mut p.times, &mut self.times);
        p.emit_notes();
    }

    /// Takes the stream's next record or loss into `held` if one is ready,
    /// printing the corrupt sub-buffers it finds on the way (written at
    /// once, before the stream is asked again).
    fn refill(&mut self, p: &mut Printer<'a, Vec<u8>>, consumer: bool) {
        while self.held.is_none() && !self.ended && !p.closed {
            let mut corrupt = None;
            let mut held = None;
            let got = self.stream.try_next_batch(1, &mut |e| {
                match e {
                    Event::Corrupt { cpu, error } => corrupt = Some((cpu, error)),
                    e => held = Some(OwnedEvent::from(e)),
                }
                Flow::Take
            });
            match got {
                None => self.ended = true,
                Some(0) => {
                    self.idle_since.get_or_insert_with(Instant::now);
                    return;
                }
                Some(_) => self.idle_since = None,
            }
            if let Some((cpu, error)) = corrupt {
                self.print(p, Event::Corrupt { cpu, error });
                write_out(p, consumer);
            }
            self.held = held;
        }
    }
}

/// Writes what `p` printed: a consumer's at once (what it consumed must
/// have reached stdout before its stream is asked again), a snapshot's in
/// chunks of 64 KiB.
fn write_out(p: &mut Printer<'_, Vec<u8>>, consumer: bool) {
    if p.out.is_empty() || (!consumer && p.out.len() < 64 << 10) {
        return;
    }
    if relay_user::os::write_stdout(&p.out).is_err() {
        p.closed = true; // e.g. `| head`: what it took stays committed
    }
    p.out.clear();
}

/// `relay cat a.relay b.relay ...`: several channels, merged by timestamp
/// (their clocks must agree) and tagged with the channel each event comes
/// from (ties go to the channel named first). Snapshots, or, with
/// `consume`, their consumer: each event is written to stdout before its
/// channel is read on (and so committed). Following, an event prints once
/// every channel has one ready or has been idle for the latency (as CPUs
/// within a channel); the channels are then looked at with a back-off of
/// 1 ms to the latency, not slept on.
pub(crate) fn cat_channels(
    paths: &[PathBuf],
    options: &StreamOptions,
    output: Output,
    consume: bool,
) -> Result<(), Error> {
    let consumer = consume || options.follow;
    let files = paths
        .iter()
        .map(|p| {
            if consumer {
                ChannelFile::open_consumer(p, &options.cpus)
            } else {
                ChannelFile::open_snapshot(p)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let clock = |f: &ChannelFile| f.channel().clock();
    let first = clock(&files[0]);
    if let Some((p, f)) = paths.iter().zip(&files).find(|(_, f)| clock(f) != first) {
        let name = |c| relay_core::Clock::from_u32(c).map_or("unspecified", |c| c.name());
        usage_error(format!(
            "{} and {} have different clocks ({} and {}): their timestamps cannot be merged; \
             read them one at a time",
            paths[0].display(),
            p.display(),
            name(first),
            name(clock(f))
        ));
    }
    let terminating = relay_user::os::catch_termination().map_err(|source| Error::Io {
        path: paths[0].clone(),
        op: "sigaction",
        source,
    })?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut sources = Vec::with_capacity(files.len());
    for ((file, path), name) in files.iter().zip(paths).zip(&names) {
        let times = checked_times(file, path, options, output);
        sources.push(Source {
            stream: Stream::new(file, options.clone()).stop_when(terminating),
            times,
            path,
            name,
            held: None,
            ended: false,
            idle_since: None,
        });
    }
    let mut p = Printer {
        out: Vec::with_capacity(128 << 10),
        path: paths[0].as_path(),
        json: output.json,
        raw: output.raw,
        payload: output.payload,
        corrupt: 0,
        closed: false,
        notes: Vec::new(),
        line: Vec::new(),
        times: crate::time::Times::Raw,
        channel: None,
    };
    let latency = options.latency;
    let mut backoff = Duration::from_millis(1);
    while !p.closed {
        for source in &mut sources {
            source.refill(&mut p, consumer);
        }
        // A channel with nothing yet holds the others back for the latency.
        let waiting = sources.iter().any(|s| {
            s.held.is_none() && !s.ended && s.idle_since.is_some_and(|t| t.elapsed() < latency)
        });
        let next = sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.held {
                Some(OwnedEvent::Record { ts, .. } | OwnedEvent::Lost { ts, .. }) => Some((ts, i)),
                _ => None,
            })
            .min();
        match next {
            Some((_, i)) if !waiting => {
                backoff = Duration::from_millis(1);
                let source = &mut sources[i];
                if let Some(held) = source.held.take() {
                    source.print(&mut p, held.event());
                    write_out(&mut p, consumer);
                }
            }
            None if sources.iter().all(|s| s.ended) => break,
            _ => {
                // Following, nothing to print yet: the output so far goes
                // out, and the channels are looked at again soon.
                if relay_user::os::write_stdout(&p.out).is_err() {
                    p.closed = true;
                }
                p.out.clear();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(latency.max(Duration::from_millis(1)));
            }
        }
    }
    if !p.closed && relay_user::os::write_stdout(&p.out).is_err() {
        p.closed = true;
    }
    p.emit_notes();
    relay_user::os::end_by_signal();
    if p.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: paths[0].clone(),
            subbufs: p.corrupt,
        })
    }
}

/// Where frames come from: standard input (`-`) or a file read().
pub(crate) enum FrameSource {
    Stdin(FrameReader<io::StdinLock<'static>>),
    File(FrameReader<File>),
}

impl FrameSource {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        if path.as_os_str() == "-" {
            return Ok(FrameSource::Stdin(FrameReader::new(
                io::stdin().lock(),
                "<stdin>",
            )));
        }
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            op: "open",
            source,
        })?;
        Ok(FrameSource::File(FrameReader::new(file, path)))
    }

    /// Every frame to `f`. A pipe ends at its end, follow or not; a file
    /// read() in follow mode is polled again (until idle that long, if
    /// given).
    pub(crate) fn run(
        &mut self,
        follow: bool,
        latency: Duration,
        until_idle: Option<Duration>,
        f: impl FnMut(Frame<'_>) -> bool,
    ) -> Result<(), Error> {
        let until = match (follow, until_idle) {
            (false, _) => Until::Eof,
            (true, None) => Until::Follow(latency),
            (true, Some(idle)) => Until::Idle { latency, idle },
        };
        match self {
            FrameSource::Stdin(r) => r.for_each(Until::Eof, f),
            FrameSource::File(r) => r.for_each(until, f),
        }
    }

    pub(crate) fn file(&self) -> Option<&File> {
        match self {
            FrameSource::Stdin(_) => None,
            FrameSource::File(r) => Some(r.get_ref()),
        }
    }
}

/// `relay cat -` and `relay cat --read PATH`: decoded frames, printed like
/// merged events.
pub(crate) fn cat_frames(
    path: &Path,
    options: &StreamOptions,
    output: Output,
) -> Result<(), Error> {
    let name = if path.as_os_str() == "-" {
        Path::new("<stdin>")
    } else {
        path
    };
    let stdout = io::stdout();
    let mut p = Printer {
        out: io::BufWriter::new(stdout.lock()),
        path: name,
        json: output.json,
        raw: output.raw,
        payload: output.payload,
        corrupt: 0,
        closed: false,
        notes: Vec::new(),
        line: Vec::new(),
        // Frames say nothing of their clock.
        times: crate::time::Times::new(output.time, None, None, name)
            .unwrap_or_else(|e| usage_error(e)),
        channel: None,
    };
    let follow = options.follow;
    let mut source = FrameSource::open(path)?;
    source.run(follow, options.latency, None, |frame| {
        let cpu = match frame {
            Frame::Record { cpu, .. } | Frame::Lost { cpu, .. } | Frame::Corrupt { cpu, .. } => cpu,
            Frame::Start { .. } => return true,
        };
        if options.cpus.is_empty() || options.cpus.contains(&cpu) {
            p.frame(frame);
            p.emit_notes();
            if follow {
                let _ = p.out.flush();
            }
        }
        !p.closed
    })?;
    let _ = p.out.flush();
    if p.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: name.to_path_buf(),
            subbufs: p.corrupt,
        })
    }
}

/// `relay cat DIR`: the per-CPU files of an existing relay channel, raw
/// (no common framing): each chunk tagged with its CPU.
pub(crate) fn cat_relayfs(
    dir: &Path,
    options: &StreamOptions,
    output: Output,
) -> Result<(), Error> {
    let (follow, cpus) = (options.follow, &options.cpus);
    let mut files = RelayfsDir::open(dir)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut offsets = vec![0u64; files.cpus().iter().max().map_or(0, |&m| m as usize + 1)];
    let mut backoff = Duration::from_millis(1);
    let mut line = Vec::new();
    loop {
        let mut closed = false;
        let n = files.read_available(|cpu, bytes| {
            let off = offsets.get(cpu as usize).copied().unwrap_or(0);
            let r = if !cpus.is_empty() && !cpus.contains(&cpu) {
                Ok(())
            } else if output.raw {
                out.write_all(bytes)
            } else {
                use crate::fmt::push_u64;
                line.clear();
                if output.json {
                    line.extend_from_slice(b"{\"kind\":\"chunk\",\"cpu\":");
                    push_u64(&mut line, cpu.into());
                    line.extend_from_slice(b",\"offset\":");
                    push_u64(&mut line, off);
                    line.extend_from_slice(b",\"len\":");
                    push_u64(&mut line, bytes.len() as u64);
                    output.payload.push_json_field(&mut line, bytes);
                    line.extend_from_slice(b"}\n");
                } else {
                    line.extend_from_slice(b"cpu");
                    push_u64(&mut line, cpu.into());
                    line.extend_from_slice(b" offset=");
                    push_u64(&mut line, off);
                    line.extend_from_slice(b" len=");
                    push_u64(&mut line, bytes.len() as u64);
                    line.push(b' ');
                    output.payload.push(&mut line, bytes);
                    line.push(b'\n');
                }
                out.write_all(&line)
            };
            closed |= r.is_err();
            if let Some(o) = offsets.get_mut(cpu as usize) {
                *o += bytes.len() as u64;
            }
        })?;
        if closed || !follow {
            break;
        }
        let _ = out.flush();
        if n == 0 {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(100));
        } else {
            backoff = Duration::from_millis(1);
        }
    }
    let _ = out.flush();
    Ok(())
}
