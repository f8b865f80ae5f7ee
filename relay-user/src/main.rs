//! `relay`: create, read, verify, inspect and demo relay channels, and
//! drive the kernel module.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use relay_core::checked::{self, CpuTally, Verifier};
use relay_core::frames::Frame;
use relay_core::merge::Event;
use relay_core::{ChannelFlags, FormatError, GeometryParams, Lost, Mode, ReadError};
use relay_user::blktrace::{self, CpuInput, Decoder, Item, Severity};
use relay_user::frames::Until;
use relay_user::kernel;
use relay_user::sys::monotonic_ns;
use relay_user::{ChannelFile, Error, Flow, FrameReader, RelayfsDir, Stream, StreamOptions};

/// Exit codes (distinct per kind of failure).
mod exit {
    pub const VERIFY: u8 = 1;
    pub const IO: u8 = 3;
    pub const FORMAT: u8 = 4;
    /// Another consumer holds a CPU of the channel.
    pub const BUSY: u8 = 5;
}

#[derive(Parser)]
#[command(name = "relay", version, about = "Per-CPU relay channels, read through one file", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  relay demo                                  writers on every CPU + a verified merged reader
  relay create /dev/shm/t.relay --subbuf-size 65536 --subbufs 8
  echo hello | relay write /dev/shm/t.relay --cpu 0
  relay cat /dev/shm/t.relay                  all CPUs, merged by timestamp (a snapshot:
                                              changes nothing, may run beside a consumer)
  relay cat --consume /dev/shm/t.relay        the same, consumed: the next reader goes on
  relay cat /dev/shm/t.relay --json --cpu 0   one JSON object per line
  relay cat /dev/shm/t.relay --follow         keep reading new records (consumes)
  relay cat /sys/kernel/debug/block/sda       an existing relay channel's per-CPU files, raw
  relay cat --format blktrace DIR             blktrace's per-CPU files (trace0..N or
                                              sda.blktrace.0..N) as blkparse prints them
  relay snapshot /dev/shm/t.relay -o s.relay save what it holds now as a channel file
  relay stat /dev/shm/t.relay                 per-CPU produced/consumed/lost/fill
  relay verify /dev/shm/t.relay               check checked payloads and the loss accounting

Kernel module (root):
  relay kernel create t --subbuf-size 65536 --subbufs 8
  relay kernel load /dev/relay/t --records 100000 --irq
  relay verify /dev/relay/t                   the mapping; or: relay verify --read /dev/relay/t
  cat /dev/relay/t | relay cat -              frames from read(), decoded
  relay cat --read --follow /dev/relay/t.cpu1 one CPU, read() and poll()
  relay kernel bench --records 1000000        relay-kmod vs relay_write()
  relay kernel destroy t";

#[derive(Subcommand)]
enum Command {
    /// Create a channel file.
    Create {
        path: PathBuf,
        /// Bytes per sub-buffer (a power of two, 128 ..= 1 GiB).
        #[arg(long, default_value_t = 65536)]
        subbuf_size: u64,
        /// Sub-buffers per CPU (0 means 8).
        #[arg(long, default_value_t = 8)]
        subbufs: u64,
        /// Flight-recorder mode: overwrite the oldest data when full.
        #[arg(long)]
        overwrite: bool,
        /// Number of per-CPU buffers (default: the CPUs of this machine).
        #[arg(long)]
        cpus: Option<u32>,
    },
    /// Print the records of all CPUs, merged by timestamp. A channel file is
    /// read as a snapshot (read-only; nothing changes, any number may run
    /// beside the consumer) unless --consume or --follow make it the
    /// channel's consumer (one per CPU at a time; what it prints is gone for
    /// the next consumer).
    Cat {
        /// Channel files, relayfs directories, or `-`: frames on standard
        /// input (what a kernel channel file's read() returns).
        paths: Vec<PathBuf>,
        /// read() each PATH and decode frames instead of mapping it (a
        /// kernel channel file, its .cpuN files, or saved frames).
        #[arg(long)]
        read: bool,
        /// How to decode directories: `raw` (each CPU's bytes, tagged) or
        /// `blktrace` (blk_io_trace records merged by time and printed as
        /// Debian's blkparse prints them; several directories are several
        /// devices, as blkparse -i dev1 -i dev2).
        #[arg(long, value_enum, default_value_t = Format::Raw)]
        format: Format,
        /// One JSON object per line.
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Payload bytes only, nothing else (not with --format blktrace).
        #[arg(long)]
        raw: bool,
        /// Keep waiting for new records, as the channel's consumer.
        #[arg(long, short)]
        follow: bool,
        /// Consume what is printed (claims each CPU read; a second consumer
        /// is refused, exit code 5).
        #[arg(long)]
        consume: bool,
        /// Only this CPU (repeatable).
        #[arg(long = "cpu")]
        cpus: Vec<u32>,
        /// Follow mode: how long an idle CPU may hold back the others (ms).
        #[arg(long, default_value_t = 100)]
        latency: u64,
        /// Flush every CPU first (for channels whose producers have exited
        /// or use shared writers).
        #[arg(long)]
        flush: bool,
    },
    /// Check a stream of checked payloads (relay demo, relay kernel load)
    /// against the loss accounting; exit 1 if anything is off. Consumes
    /// (a mapped channel is claimed, as by relay cat --consume).
    Verify {
        /// A channel file (mapped), or `-`: frames on standard input.
        path: PathBuf,
        /// read() PATH and decode frames instead of mapping it.
        #[arg(long)]
        read: bool,
        /// Keep reading new records (until idle, see --until-idle).
        #[arg(long, short)]
        follow: bool,
        /// Follow mode: end once nothing came for this long (ms).
        #[arg(long, default_value_t = 2000)]
        until_idle: u64,
        /// Follow mode: how long an idle CPU may hold back the others (ms);
        /// with --read, the poll timeout.
        #[arg(long, default_value_t = 100)]
        latency: u64,
        /// The stream may begin after records an earlier reader consumed.
        #[arg(long)]
        resume: bool,
        /// Fail unless the losses reported add up to N.
        #[arg(long, value_name = "N")]
        expect_lost: Option<u64>,
        /// Fail unless N records were delivered.
        #[arg(long, value_name = "N")]
        expect_records: Option<u64>,
        /// The channel's mode (default: the channel header's; for frames
        /// without one, overwrite if a loss to overwriting is reported).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// A line per CPU.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Save what a channel holds now as a channel file of its own (the
    /// flight recorder's snapshot): every relay command reads FILE later as
    /// it would have read the channel now. Read-only, like `relay cat`:
    /// consumes nothing; a kernel channel is flushed first where you may
    /// write to it.
    Snapshot {
        /// The channel file (or kernel channel file).
        path: PathBuf,
        /// The new channel file (must not exist).
        #[arg(long, short)]
        output: PathBuf,
        /// Only this CPU (repeatable).
        #[arg(long = "cpu")]
        cpus: Vec<u32>,
        /// Flush every CPU first (a plain channel file, as a producer).
        #[arg(long)]
        flush: bool,
    },
    /// Per-CPU statistics (read-only: needs no write access, changes nothing).
    Stat {
        path: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write each line of standard input as a record on one CPU buffer.
    Write {
        path: PathBuf,
        #[arg(long, default_value_t = 0)]
        cpu: u32,
        /// Record type.
        #[arg(long = "type", default_value_t = 1)]
        rtype: u16,
        /// When the channel is full, wait for a consumer to make room (at
        /// most MS milliseconds per record; without a value, as long as it
        /// takes) instead of refusing the record and counting it lost.
        #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "18446744073709551615")]
        block: Option<u64>,
    },
    /// Close every CPU's open sub-buffer so readers get it.
    Flush { path: PathBuf },
    /// The kernel module: create and destroy channels, load, benchmark.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Writers on every CPU and one merged reader, then a verified summary.
    Demo {
        /// How long the writers run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Flight-recorder mode.
        #[arg(long)]
        overwrite: bool,
        /// Number of CPU buffers and writer threads.
        #[arg(long)]
        cpus: Option<u32>,
    },
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Create channel NAME: /dev/relay/NAME (and NAME.cpuN).
    Create {
        /// 1 ..= 31 of A-Z a-z 0-9 _ -.
        name: String,
        /// Bytes per sub-buffer (a power of two, 128 ..= 1 GiB).
        #[arg(long, default_value_t = 65536)]
        subbuf_size: u64,
        /// Sub-buffers per CPU (0 means 8).
        #[arg(long, default_value_t = 8)]
        subbufs: u64,
        /// Flight-recorder mode.
        #[arg(long)]
        overwrite: bool,
    },
    /// Destroy channel NAME (open files keep its memory until closed).
    Destroy {
        /// NAME or /dev/relay/NAME.
        name: String,
    },
    /// Write checked payloads from a kthread on every CPU, in the kernel.
    Load {
        /// The channel file, /dev/relay/NAME.
        path: PathBuf,
        /// Records per CPU.
        #[arg(long)]
        records: u64,
        /// Payload bytes (32 ..= 65536).
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Records per second per CPU (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Also write from a hard-IRQ timer on every CPU.
        #[arg(long)]
        irq: bool,
        /// Also write from NMI (sent by that timer to the next CPU).
        #[arg(long)]
        nmi: bool,
    },
    /// Time relay-kmod's writer against the kernel's relay_write().
    Bench {
        /// Records per CPU, each way.
        #[arg(long)]
        records: u64,
        /// Payload bytes (8 ..= 4096, at most half a sub-buffer).
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Sub-buffer size of both channels (overwrite mode, no reader).
        #[arg(long, default_value_t = 65536)]
        subbuf_size: u64,
        /// Sub-buffers per CPU of both channels.
        #[arg(long, default_value_t = 8)]
        subbufs: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    NoOverwrite,
    Overwrite,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::NoOverwrite => Mode::NoOverwrite,
            ModeArg::Overwrite => Mode::Overwrite,
        }
    }
}

/// How `relay cat` decodes a directory of per-CPU files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Each CPU's bytes as they are, tagged with the CPU.
    Raw,
    /// blktrace records, merged and printed like blkparse.
    Blktrace,
}

/// Exits with clap's usage error (exit code 2).
fn usage_error(msg: String) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A channel file truncated under us: a clear error and exit 3, not a
    // death by SIGBUS.
    if let Err(e) = relay_user::truncation::exit_on_truncation("relay", exit::IO) {
        eprintln!("relay: sigaction(SIGBUS): {e}");
    }
    let result = match cli.command {
        Command::Create {
            path,
            subbuf_size,
            subbufs,
            overwrite,
            cpus,
        } => create(&path, subbuf_size, subbufs, overwrite, cpus).map(|f| {
            let g = f.geometry();
            println!(
                "{}: {} CPUs x {} x {} bytes, {} mode, {} bytes",
                path.display(),
                g.cpu_count(),
                g.subbuf_count(),
                g.subbuf_size(),
                if overwrite {
                    "overwrite"
                } else {
                    "no-overwrite"
                },
                g.total_size()
            );
        }),
        Command::Cat {
            paths,
            format: Format::Blktrace,
            json,
            raw,
            follow,
            cpus,
            latency,
            ..
        } => {
            if raw {
                usage_error("--raw cannot be used with --format blktrace".into());
            }
            if let Some(p) = paths.iter().find(|p| p.exists() && !p.is_dir()) {
                usage_error(format!(
                    "--format blktrace reads directories of per-CPU files; {} is not one",
                    p.display()
                ));
            }
            let options = blktrace::Options {
                follow,
                latency: Duration::from_millis(latency),
                cgroup: json,
            };
            cat_blktrace(&paths, options, json, &cpus)
        }
        Command::Cat {
            paths,
            format: Format::Raw,
            read,
            json,
            raw,
            follow,
            consume,
            cpus,
            latency,
            flush,
        } => {
            let options = StreamOptions {
                cpus,
                follow,
                latency: Duration::from_millis(latency),
                until_idle: None,
            };
            paths.iter().try_for_each(|p| {
                if p.as_os_str() == "-" || read {
                    cat_frames(p, &options, json, raw)
                } else {
                    cat(p, &options, json, raw, flush, consume || follow)
                }
            })
        }
        Command::Verify {
            path,
            read,
            follow,
            until_idle,
            latency,
            resume,
            expect_lost,
            expect_records,
            mode,
            verbose,
        } => {
            let o = VerifyOptions {
                follow,
                until_idle: Duration::from_millis(until_idle),
                latency: Duration::from_millis(latency),
                resume,
                expect_lost,
                expect_records,
                mode: mode.map(Mode::from),
                verbose,
            };
            let r = if path.as_os_str() == "-" || read {
                verify_frames(&path, &o)
            } else {
                verify_mapped(&path, &o)
            };
            match r {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(exit::VERIFY),
                Err(e) => Err(e),
            }
        }
        Command::Kernel { command } => kernel_command(command),
        Command::Snapshot {
            path,
            output,
            cpus,
            flush,
        } => snapshot(&path, &output, cpus, flush),
        Command::Stat { path, json } => stat(&path, json),
        Command::Write {
            path,
            cpu,
            rtype,
            block,
        } => write(&path, cpu, rtype, block.map(Duration::from_millis)),
        Command::Flush { path } => flush(&path),
        Command::Demo {
            seconds,
            overwrite,
            cpus,
        } => return demo(seconds, overwrite, cpus),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::from(match e {
                Error::Io { .. } | Error::Kernel(_) => exit::IO,
                Error::Decode { unreadable, .. } if unreadable > 0 => exit::IO,
                Error::Busy { .. } => exit::BUSY,
                _ => exit::FORMAT,
            })
        }
    }
}

fn cpu_count(cpus: Option<u32>) -> u32 {
    cpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

fn create(
    path: &Path,
    subbuf_size: u64,
    subbufs: u64,
    overwrite: bool,
    cpus: Option<u32>,
) -> Result<ChannelFile, Error> {
    let flags = if overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    let params = GeometryParams {
        subbuf_size,
        subbuf_count: subbufs,
        cpu_count: cpu_count(cpus),
        page_size: 0,
    };
    ChannelFile::create(path, params, flags)
}

/// Closes every CPU's open sub-buffer: through the module for a kernel
/// channel file, as a producer otherwise.
fn flush_all(file: &ChannelFile) {
    for cpu in 0..file.geometry().cpu_count() {
        if file.is_kernel() {
            let _ = file.flush_cpu(cpu);
        } else if let Some(w) = file.writer(cpu) {
            let _ = w.flush(&mut monotonic_ns);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

fn cat(
    path: &Path,
    options: &StreamOptions,
    json: bool,
    raw: bool,
    flush: bool,
    consume: bool,
) -> Result<(), Error> {
    if path.is_dir() {
        return cat_relayfs(path, options, json, raw);
    }
    if flush {
        // As a producer (a kernel channel file is flushed by the module).
        flush_all(&ChannelFile::open(path, true)?);
    }
    let file = if consume {
        ChannelFile::open_consumer(path, &options.cpus)?
    } else {
        ChannelFile::open_snapshot(path)?
    };
    // A consumer commits a batch once stdout took it, so a batch must fit
    // in one write a pipe takes whole or refuses (PIPE_BUF), and SIGINT or
    // SIGTERM end the loop between batches instead of mid-way.
    let terminating = relay_user::sys::catch_termination().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        op: "sigaction",
        source,
    })?;
    let chunk = if relay_user::sys::stdout_is_pipe() {
        relay_user::sys::PIPE_BUF
    } else {
        64 * 1024
    };
    let mut stream = Stream::new(&file, options.clone()).stop_when(terminating);
    let mut p = Printer {
        out: Vec::with_capacity(2 * chunk),
        path,
        json,
        raw,
        corrupt: 0,
        closed: false,
        notes: Vec::new(),
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
        if relay_user::sys::write_stdout(&p.out).is_err() {
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
    relay_user::sys::end_by_signal();
    if p.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            subbufs: p.corrupt,
        })
    }
}

/// Where frames come from: standard input (`-`) or a file read().
enum FrameSource {
    Stdin(FrameReader<io::StdinLock<'static>>),
    File(FrameReader<File>),
}

impl FrameSource {
    fn open(path: &Path) -> Result<Self, Error> {
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
    fn run(
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

    fn file(&self) -> Option<&File> {
        match self {
            FrameSource::Stdin(_) => None,
            FrameSource::File(r) => Some(r.get_ref()),
        }
    }
}

/// `relay cat -` and `relay cat --read PATH`: decoded frames, printed like
/// merged events.
fn cat_frames(path: &Path, options: &StreamOptions, json: bool, raw: bool) -> Result<(), Error> {
    let name = if path.as_os_str() == "-" {
        Path::new("<stdin>")
    } else {
        path
    };
    let stdout = io::stdout();
    let mut p = Printer {
        out: io::BufWriter::new(stdout.lock()),
        path: name,
        json,
        raw,
        corrupt: 0,
        closed: false,
        notes: Vec::new(),
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
fn cat_relayfs(dir: &Path, options: &StreamOptions, json: bool, raw: bool) -> Result<(), Error> {
    let (follow, cpus) = (options.follow, &options.cpus);
    let mut files = RelayfsDir::open(dir)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut offsets = vec![0u64; files.cpus().iter().max().map_or(0, |&m| m as usize + 1)];
    let mut backoff = Duration::from_millis(1);
    loop {
        let mut closed = false;
        let n = files.read_available(|cpu, bytes| {
            let off = offsets.get(cpu as usize).copied().unwrap_or(0);
            let r = if !cpus.is_empty() && !cpus.contains(&cpu) {
                Ok(())
            } else if raw {
                out.write_all(bytes)
            } else if json {
                writeln!(
                    out,
                    "{{\"cpu\":{cpu},\"offset\":{off},\"len\":{},\"data_hex\":\"{}\"}}",
                    bytes.len(),
                    hex(bytes)
                )
            } else {
                writeln!(
                    out,
                    "cpu{cpu} offset={off} len={} {}",
                    bytes.len(),
                    text(bytes)
                )
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

/// `relay cat --format blktrace DIR...`: every directory's per-CPU files
/// (one device each) decoded and merged as blkparse merges them; text as
/// blkparse prints it, or one JSON object per event. Records that cannot be
/// decoded are reported on stderr as they come; skipped ones are warnings,
/// malformed or unreadable ones make the exit code non-zero at the end.
fn cat_blktrace(
    dirs: &[PathBuf],
    options: blktrace::Options,
    json: bool,
    cpus: &[u32],
) -> Result<(), Error> {
    let mut inputs = Vec::new();
    for dir in dirs {
        for (cpu, path, reader) in RelayfsDir::open(dir)?.into_files() {
            inputs.push(CpuInput { path, cpu, reader });
        }
    }
    let mut decoder = Decoder::new(inputs, options);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    let (mut malformed, mut unreadable) = (0u64, 0u64);
    let mut first_bad: Option<PathBuf> = None;
    let mut backoff = Duration::from_millis(1);
    while let Some(item) = decoder.next_item() {
        match item {
            Item::Event(e) => {
                backoff = Duration::from_millis(1);
                if !cpus.is_empty() && !cpus.contains(&e.cpu) {
                    continue;
                }
                line.clear();
                if json {
                    e.write_json(&mut line);
                } else {
                    e.write_blkparse(&mut line);
                }
                if out.write_all(&line).is_err() {
                    break; // stdout closed (e.g. `| head`)
                }
            }
            Item::Problem(p) => {
                match p.severity {
                    Severity::Skipped => {
                        eprintln!("relay: warning: {p}");
                        continue;
                    }
                    Severity::Malformed => malformed += 1,
                    Severity::Io => unreadable += 1,
                }
                eprintln!("relay: {p}");
                if first_bad.is_none() {
                    first_bad = Some(p.path.parent().unwrap_or(&p.path).to_path_buf());
                }
            }
            Item::Idle => {
                if out.flush().is_err() {
                    break;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }
    let _ = out.flush();
    match first_bad {
        None => Ok(()),
        Some(path) => Err(Error::Decode {
            path,
            malformed,
            unreadable,
        }),
    }
}

/// `relay cat`'s output.
struct Printer<'p, W: Write> {
    out: W,
    path: &'p Path,
    json: bool,
    raw: bool,
    corrupt: u64,
    /// stdout was closed (e.g. `| head`): stop quietly.
    closed: bool,
    /// Lines for standard error, printed with [`Self::emit_notes`].
    notes: Vec<String>,
}

impl<W: Write> Printer<'_, W> {
    /// A decoded frame, printed as the merged event it carries.
    fn frame(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Corrupt { cpu, message, .. } => {
                eprintln!("relay: {}: cpu {cpu}: {message}", self.path.display());
                self.corrupt += 1;
            }
            f => {
                if let Some(e) = relay_user::frames::event(&f) {
                    self.print(e);
                }
            }
        }
    }

    fn print(&mut self, event: Event<'_>) {
        if self.closed {
            return;
        }
        let (out, path, json) = (&mut self.out, self.path, self.json);
        let r = match event {
            Event::Record { record, .. } if self.raw => out.write_all(record.payload),
            Event::Record { cpu, record } if json => writeln!(
                out,
                "{{\"ts\":{},\"cpu\":{cpu},\"type\":{},\"len\":{},\"payload_hex\":\"{}\"}}",
                record.ts,
                record.rtype,
                record.payload.len(),
                hex(record.payload)
            ),
            Event::Record { cpu, record } => writeln!(
                out,
                "{} cpu{cpu} type={} len={} {}",
                record.ts,
                record.rtype,
                record.payload.len(),
                text(record.payload)
            ),
            Event::Lost {
                cpu,
                lost,
                ts,
                total,
            } => {
                self.notes.push(format!(
                    "relay: {}: cpu {cpu} lost {} records before ts {ts} (full {}, too big {}, overwritten {}; {} in all)",
                    path.display(),
                    lost.total(),
                    lost.full,
                    lost.too_big,
                    lost.overwrite,
                    total.total(),
                ));
                if json {
                    writeln!(
                        out,
                        "{{\"ts\":{ts},\"cpu\":{cpu},\"lost\":{{\"full\":{},\"too_big\":{},\"overwrite\":{}}},\"lost_total\":{{\"full\":{},\"too_big\":{},\"overwrite\":{}}}}}",
                        lost.full, lost.too_big, lost.overwrite, total.full, total.too_big, total.overwrite
                    )
                } else {
                    Ok(())
                }
            }
            Event::Corrupt { cpu, error } => {
                self.notes
                    .push(format!("relay: {}: cpu {cpu}: {error}", path.display()));
                self.corrupt += 1;
                Ok(())
            }
        };
        self.closed = r.is_err();
    }

    /// Prints the messages for standard error that the events printed so
    /// far produced (after the output that carries those events was
    /// written, so that both go out or neither).
    fn emit_notes(&mut self) {
        for note in self.notes.drain(..) {
            eprintln!("{note}");
        }
    }
}

fn snapshot(path: &Path, output: &Path, cpus: Vec<u32>, flush: bool) -> Result<(), Error> {
    if flush {
        flush_all(&ChannelFile::open(path, true)?);
    }
    let source = ChannelFile::open_snapshot(path)?;
    let options = StreamOptions {
        cpus,
        ..StreamOptions::default()
    };
    let s = relay_user::snapshot::write_snapshot(&source, output, options)?;
    println!(
        "{}: {} records, {} lost, to {}",
        path.display(),
        s.records,
        s.lost.total(),
        output.display()
    );
    for (cpu, n) in s.overrun {
        eprintln!(
            "relay: {}: cpu {cpu}: {n} sub-buffers were overwritten while the snapshot read them (their records are missing from it)",
            path.display()
        );
    }
    if s.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            subbufs: s.corrupt,
        })
    }
}

fn stat(path: &Path, json: bool) -> Result<(), Error> {
    let file = ChannelFile::open_snapshot(path)?;
    let g = *file.geometry();
    let rows: Vec<_> = (0..g.cpu_count())
        .filter_map(|cpu| file.stats(cpu).map(|s| (cpu, s)))
        .collect();
    // The module also says how much memory the channel holds.
    let memory = if file.is_kernel() {
        let (_, bytes) =
            kernel::stats(file.as_fd()).map_err(|e| e.with_target(path.display().to_string()))?;
        Some(bytes)
    } else {
        None
    };
    if json {
        for (cpu, s) in rows {
            println!(
                "{{\"cpu\":{cpu},\"produced\":{},\"consumed\":{},\"lost_full\":{},\"lost_too_big\":{},\"lost_overwrite\":{},\"ready_subbufs\":{},\"subbufs\":{}}}",
                s.produced, s.consumed_records, s.lost.full, s.lost.too_big, s.lost.overwrite, s.ready_subbufs, g.subbuf_count()
            );
        }
        if let Some(bytes) = memory {
            println!("{{\"memory_bytes\":{bytes}}}");
        }
        return Ok(());
    }
    println!(
        "{}: {} CPUs x {} x {} bytes, {}",
        path.display(),
        g.cpu_count(),
        g.subbuf_count(),
        g.subbuf_size(),
        if file.flags().contains(ChannelFlags::OVERWRITE) {
            "overwrite"
        } else {
            "no-overwrite"
        }
    );
    println!(" cpu     produced     consumed    lost:full  lost:too_big  lost:overwrite   fill");
    let mut total = (0, 0, Lost::default());
    for (cpu, s) in rows {
        println!(
            " {cpu:>3} {:>12} {:>12} {:>12} {:>13} {:>15}   {}/{}",
            s.produced,
            s.consumed_records,
            s.lost.full,
            s.lost.too_big,
            s.lost.overwrite,
            s.ready_subbufs,
            g.subbuf_count()
        );
        total.0 += s.produced;
        total.1 += s.consumed_records;
        total.2.full += s.lost.full;
        total.2.too_big += s.lost.too_big;
        total.2.overwrite += s.lost.overwrite;
    }
    println!(
        " all {:>12} {:>12} {:>12} {:>13} {:>15}",
        total.0, total.1, total.2.full, total.2.too_big, total.2.overwrite
    );
    if let Some(bytes) = memory {
        println!("memory: {bytes} bytes");
    }
    Ok(())
}

fn write(path: &Path, cpu: u32, rtype: u16, block: Option<Duration>) -> Result<(), Error> {
    let file = ChannelFile::open(path, true)?;
    if file.is_kernel() {
        if block.is_some() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                op: "write",
                source: io::Error::other(
                    "--block: a kernel channel's writers never wait (they may run in NMI context)",
                ),
            });
        }
        return write_kernel(&file, cpu, rtype);
    }
    let Some(w) = file.writer(cpu) else {
        return Err(Error::Io {
            path: path.to_path_buf(),
            op: "write",
            source: io::Error::other(format!(
                "cpu: {cpu} is not below cpu_count {}",
                file.geometry().cpu_count()
            )),
        });
    };
    let (mut written, mut refused) = (0u64, 0u64);
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|source| Error::Io {
            path: PathBuf::from("<stdin>"),
            op: "read",
            source,
        })?;
        let done = match block {
            Some(timeout) => relay_user::producer::write_waiting(
                &w,
                rtype,
                line.as_bytes(),
                &mut monotonic_ns,
                timeout,
            ),
            None => w.write(rtype, line.as_bytes(), &mut monotonic_ns),
        };
        match done {
            Ok(_) => written += 1,
            Err(e) => {
                refused += 1;
                eprintln!(
                    "relay: {}: record {}: {e}",
                    path.display(),
                    written + refused
                );
            }
        }
    }
    let _ = w.flush(&mut monotonic_ns);
    eprintln!(
        "relay: {}: cpu {cpu}: {written} records written, {refused} refused",
        path.display()
    );
    Ok(())
}

/// `relay write` on a kernel channel file: each write() is one record (of
/// type 1) on the CPU the thread runs on, so run on `cpu`.
fn write_kernel(file: &ChannelFile, cpu: u32, rtype: u16) -> Result<(), Error> {
    let path = file.path();
    let problem = |op, source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    if rtype != 1 {
        return Err(problem(
            "write",
            io::Error::other(format!(
                "type: a kernel channel file's write() records have type 1, not {rtype}"
            )),
        ));
    }
    relay_user::sys::pin_to_cpu(cpu).map_err(|e| problem("run on cpu", e))?;
    let (mut written, mut refused) = (0u64, 0u64);
    let mut out = file.file();
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|source| Error::Io {
            path: PathBuf::from("<stdin>"),
            op: "read",
            source,
        })?;
        match out.write(line.as_bytes()) {
            Ok(n) if n == line.len() => written += 1,
            r => {
                refused += 1;
                let why = r.map_or_else(|e| e.to_string(), |n| format!("{n} bytes taken"));
                eprintln!(
                    "relay: {}: record {}: {why}",
                    path.display(),
                    written + refused
                );
            }
        }
    }
    let _ = file.flush_cpu(cpu);
    eprintln!(
        "relay: {}: cpu {cpu}: {written} records written, {refused} refused",
        path.display()
    );
    Ok(())
}

fn flush(path: &Path) -> Result<(), Error> {
    let file = ChannelFile::open(path, true)?;
    flush_all(&file);
    Ok(())
}

/// `relay verify`'s options.
struct VerifyOptions {
    follow: bool,
    until_idle: Duration,
    latency: Duration,
    resume: bool,
    expect_lost: Option<u64>,
    expect_records: Option<u64>,
    mode: Option<Mode>,
    verbose: bool,
}

/// Per CPU, what the channel counts: every write attempted is produced or
/// lost for lack of room (`produced + lost_full + lost_too_big`).
type Attempts = Vec<Option<u64>>;

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::NoOverwrite => "no-overwrite",
        Mode::Overwrite => "overwrite",
    }
}

/// Prints the per-CPU lines (verbose) and the summary; whether all passed.
/// `attempts`: the channel's statistics, if the source has them; `all_cpus`:
/// the source covers every CPU, so one that wrote and delivered nothing
/// also fails (unless resumed).
fn verify_report(
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
    let summary = format!(
        "records={} lost={} (full {}, too big {}, overwritten {}) cpus={cpus} late={} mode={}{stats}",
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
fn verify_mapped(path: &Path, o: &VerifyOptions) -> Result<bool, Error> {
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
    let mut stream = Stream::new(&file, options);
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
                .map(|s| s.produced + s.lost.full + s.lost.too_big)
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
fn verify_frames(path: &Path, o: &VerifyOptions) -> Result<bool, Error> {
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
            Frame::Record { cpu, record } => Event::Record { cpu, record },
            Frame::Lost {
                cpu,
                lost,
                ts,
                total,
            } => {
                overwritten |= lost.overwrite > 0;
                Event::Lost {
                    cpu,
                    lost,
                    ts,
                    total,
                }
            }
        };
        for v in &mut verifiers {
            v.see(&event);
        }
        true
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

fn kernel_command(command: KernelCommand) -> Result<(), Error> {
    match command {
        KernelCommand::Create {
            name,
            subbuf_size,
            subbufs,
            overwrite,
        } => {
            let info = kernel::create(&name, subbuf_size, subbufs, overwrite)?;
            println!(
                "{}: {} CPUs x {} x {} bytes, {} mode, {} bytes, id {}",
                info.path.display(),
                info.cpu_count,
                if subbufs == 0 { 8 } else { subbufs },
                subbuf_size,
                if overwrite {
                    "overwrite"
                } else {
                    "no-overwrite"
                },
                info.total_size,
                info.id
            );
        }
        KernelCommand::Destroy { name } => kernel::destroy(&name)?,
        KernelCommand::Load {
            path,
            records,
            size,
            rate,
            irq,
            nmi,
        } => {
            let file = File::open(&path).map_err(|source| Error::Io {
                path: path.clone(),
                op: "open",
                source,
            })?;
            let args = kernel::LoadArgs {
                records,
                rate,
                size,
                irq,
                nmi,
            };
            let r = kernel::load(file.as_fd(), args)
                .map_err(|e| e.with_target(path.display().to_string()))?;
            let line = format!(
                "cpus={} attempted={} written={} irq={} nmi={} elapsed_ms={:.1}",
                r.cpus,
                r.attempted,
                r.written,
                r.irq_writes,
                r.nmi_writes,
                r.elapsed_ns as f64 / 1e6
            );
            if r.interrupted {
                println!("load interrupted: {line}");
                return Err(Error::Io {
                    path,
                    op: "load",
                    source: io::Error::from_raw_os_error(libc::EINTR),
                });
            }
            println!("load ok: {line}");
        }
        KernelCommand::Bench {
            records,
            size,
            subbuf_size,
            subbufs,
        } => {
            let r = kernel::bench(kernel::BenchArgs {
                records,
                size,
                subbuf_size,
                subbuf_count: subbufs,
            })?;
            let (k, w, t) = (
                r.relay_kmod_rate(),
                r.relay_write_rate(),
                r.relay_reserve_rate(),
            );
            let ratio = |other: f64| if other > 0.0 { k / other } else { 0.0 };
            println!(
                "bench: size={size} relay-kmod={k:.2} M/s/cpu relay_write={w:.2} M/s/cpu \
                 relay_reserve+timestamp={t:.2} M/s/cpu ratio={:.2} ratio_timestamped={:.2}",
                ratio(w),
                ratio(t)
            );
        }
    }
    Ok(())
}

fn demo(seconds: f64, overwrite: bool, cpus: Option<u32>) -> ExitCode {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("relay-demo-{}.relay", std::process::id()));
    let file = match create(&path, 1 << 16, 16, overwrite, cpus) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(exit::IO);
        }
    };
    let _ = std::fs::remove_file(&path); // the mapping keeps it alive
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
    if failures == 0 && balanced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::VERIFY)
    }
}
