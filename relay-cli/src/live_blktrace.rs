//! `relay blktrace DEV...`: blktrace and blkparse in one command. relay
//! sets each device's trace up itself (the block layer's ioctls, as
//! blktrace does), reads every CPU's relay file as one merged live stream,
//! prints it as blkparse does (or as JSON), optionally saves the per-CPU
//! files in blktrace's layout, and on Ctrl-C, SIGTERM or the end of `-w`
//! stops the trace, reads what the kernel flushed, tears the trace down
//! and prints blkparse's summary.

use super::*;

use std::cell::Cell;
use std::rc::Rc;

use relay_user::blktrace::{Session, SetupOptions};

/// What `relay blktrace` was asked.
pub(crate) struct LiveOptions {
    pub devices: Vec<PathBuf>,
    pub save: Option<PathBuf>,
    pub stop_after: Option<Duration>,
    pub setup: SetupOptions,
    pub debugfs: PathBuf,
    pub latency: Duration,
}

/// A trace file read through, its bytes counted.
struct Counted {
    file: File,
    read: Rc<Cell<u64>>,
}

impl io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read.set(self.read.get().wrapping_add(n as u64));
        Ok(n)
    }
}

/// One traced device: its session and what was read of each CPU.
struct Traced {
    session: Session,
    /// (cpu, bytes read) per trace file.
    read: Vec<(u32, Rc<Cell<u64>>)>,
}

pub(crate) fn live_blktrace(
    options: &LiveOptions,
    output: &BlkparseOutput,
    cpus: &[u32],
) -> Result<(), Error> {
    // Before anything is set up: a signal must end the reading, not relay
    // (a trace left set up is torn down by the next run, but not leaving
    // one is better).
    let terminating = relay_user::os::catch_termination().map_err(|source| Error::Io {
        path: options.devices.first().cloned().unwrap_or_default(),
        op: "sigaction",
        source,
    })?;
    if let Some(dir) = &options.save {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            op: "create",
            source,
        })?;
    }
    let mut traced = Vec::new();
    let mut devices = Vec::new();
    // blktrace's saved files, in the decoder's input order.
    let mut saves = Vec::new();
    for device in &options.devices {
        let session = Session::setup(device, &options.debugfs, &options.setup)?;
        if session.tore_down_stale() {
            eprintln!(
                "relay: {}: a trace was left set up (by a process that ended without tearing it \
                 down, none reads it now): torn down, and set up anew",
                device.display()
            );
        }
        let name = session.name().to_string();
        let mut inputs = Vec::new();
        let mut read = Vec::new();
        for (cpu, path, file) in RelayfsDir::open(session.dir())?.into_files() {
            if let Some(dir) = &options.save {
                let to = dir.join(format!("{name}.blktrace.{cpu}"));
                let f = File::create(&to).map_err(|source| Error::Io {
                    path: to.clone(),
                    op: "create",
                    source,
                })?;
                saves.push(Some(io::BufWriter::with_capacity(256 << 10, f)));
            } else {
                saves.push(None);
            }
            let count = Rc::new(Cell::new(0));
            read.push((cpu, count.clone()));
            let reader = Counted { file, read: count };
            inputs.push(CpuInput { path, cpu, reader });
        }
        devices.push(Device { name, cpus: inputs });
        traced.push(Traced { session, read });
    }
    for t in &mut traced {
        t.session.start()?;
    }
    let names: Vec<&str> = traced.iter().map(|t| t.session.name()).collect();
    eprintln!(
        "relay blktrace: tracing {} ({}Ctrl-C or SIGTERM ends it)",
        names.join(", "),
        match options.stop_after {
            Some(d) => format!("for {} ms; ", d.as_millis()),
            None => String::new(),
        }
    );
    let deadline = options.stop_after.map(|d| Instant::now() + d);
    let mut decoder = Decoder::new(
        devices,
        blktrace::Options {
            follow: true,
            latency: options.latency,
            cgroup: output.json,
        },
    );
    for (i, save) in saves.into_iter().enumerate() {
        if let Some(out) = save {
            decoder.save_to(i, out);
        }
    }
    let mut stop_error = None;
    let printed = print_decoded(&mut decoder, output, cpus, |decoder| {
        let due =
            terminating.load(Ordering::Acquire) || deadline.is_some_and(|d| Instant::now() >= d);
        if due && stop_error.is_none() {
            // Stop every trace (the kernel flushes its buffers), then read
            // what they hold to the end.
            for t in &mut traced {
                if let Err(e) = t.session.stop() {
                    stop_error = Some(e);
                }
            }
            decoder.drain();
            if stop_error.is_some() {
                return Poll::Stop;
            }
        }
        Poll::Go
    });
    // The saved files, the kernel's drop counts, and the teardown.
    let mut result = printed;
    let mut streams = Vec::new();
    for t in traced {
        let dropped = t.session.dropped();
        let bytes: u64 = t.read.iter().map(|(_, c)| c.get()).sum();
        match dropped {
            Ok(0) => eprintln!(
                "relay blktrace: {}: {} KiB from {} CPUs, no record dropped",
                t.session.name(),
                bytes >> 10,
                t.read.len()
            ),
            Ok(n) => eprintln!(
                "relay blktrace: {}: {} KiB from {} CPUs; the kernel dropped {n} records, its \
                 buffers full (a larger --buffer-size or --buffers keeps them)",
                t.session.name(),
                bytes >> 10,
                t.read.len()
            ),
            Err(e) => eprintln!("relay: {e}"),
        }
        streams.push(t.session);
    }
    for session in streams {
        if let Err(e) = session.teardown() {
            result = result.and(Err(e.into()));
        }
    }
    if let Err(source) = decoder.finish_saves() {
        result = result.and(Err(Error::Io {
            path: options.save.clone().unwrap_or_default(),
            op: "write",
            source,
        }));
    }
    if let Some(e) = stop_error {
        result = result.and(Err(e.into()));
    }
    // Ctrl-C is how a trace is ended, as with blktrace: not a failure.
    result
}
