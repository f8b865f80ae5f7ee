//! `relay`: create, read, inspect and demo relay channels.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use relay_core::merge::Event;
use relay_core::{ChannelFlags, GeometryParams, Lost};
use relay_user::blktrace::{self, CpuInput, Decoder, Item, Severity};
use relay_user::sys::monotonic_ns;
use relay_user::{ChannelFile, Error, RelayfsDir, Stream, StreamOptions};

/// Exit codes (distinct per kind of failure).
mod exit {
    pub const VERIFY: u8 = 1;
    pub const IO: u8 = 3;
    pub const FORMAT: u8 = 4;
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
  relay cat /dev/shm/t.relay                  all CPUs, merged by timestamp
  relay cat /dev/shm/t.relay --json --cpu 0   one JSON object per line
  relay cat /dev/shm/t.relay --follow         keep reading new records
  relay cat /sys/kernel/debug/block/sda       an existing relay channel's per-CPU files, raw
  relay cat --format blktrace DIR             blktrace's per-CPU files (trace0..N or
                                              sda.blktrace.0..N) as blkparse prints them
  relay stat /dev/shm/t.relay                 per-CPU produced/consumed/lost/fill";

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
    /// Print the records of all CPUs, merged by timestamp.
    Cat {
        /// Channel files, or directories of an existing relay channel's
        /// per-CPU files (`<base>0..N`).
        paths: Vec<PathBuf>,
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
        /// Keep waiting for new records.
        #[arg(long, short)]
        follow: bool,
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
    /// Per-CPU statistics.
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
    },
    /// Close every CPU's open sub-buffer so readers get it.
    Flush { path: PathBuf },
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
            json,
            raw,
            follow,
            cpus,
            latency,
            flush,
        } => {
            let options = StreamOptions {
                cpus,
                follow,
                latency: Duration::from_millis(latency),
            };
            paths
                .iter()
                .try_for_each(|p| cat(p, &options, json, raw, flush))
        }
        Command::Stat { path, json } => stat(&path, json),
        Command::Write { path, cpu, rtype } => write(&path, cpu, rtype),
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
                Error::Io { .. } => exit::IO,
                Error::Decode { unreadable, .. } if unreadable > 0 => exit::IO,
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

fn flush_all(file: &ChannelFile) {
    for cpu in 0..file.geometry().cpu_count() {
        if let Some(w) = file.writer(cpu) {
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
) -> Result<(), Error> {
    if path.is_dir() {
        return cat_relayfs(path, options, json, raw);
    }
    let file = ChannelFile::open(path, flush)?;
    if flush {
        flush_all(&file);
    }
    let mut stream = Stream::new(&file, options.clone());
    let stdout = io::stdout();
    let mut p = Printer {
        out: io::BufWriter::new(stdout.lock()),
        path,
        json,
        raw,
        corrupt: 0,
        closed: false,
    };
    while !p.closed && stream.next_batch(1024, &mut |e| p.print(e)).is_some() {
        if options.follow {
            let _ = p.out.flush();
        }
    }
    let _ = p.out.flush();
    if p.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: path.to_path_buf(),
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
}

impl<W: Write> Printer<'_, W> {
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
            Event::Lost { cpu, lost, ts } => {
                eprintln!(
                    "relay: {}: cpu {cpu} lost {} records before ts {ts} (full {}, too big {}, overwritten {})",
                    path.display(),
                    lost.total(),
                    lost.full,
                    lost.too_big,
                    lost.overwrite
                );
                if json {
                    writeln!(
                        out,
                        "{{\"ts\":{ts},\"cpu\":{cpu},\"lost\":{{\"full\":{},\"too_big\":{},\"overwrite\":{}}}}}",
                        lost.full, lost.too_big, lost.overwrite
                    )
                } else {
                    Ok(())
                }
            }
            Event::Corrupt { cpu, error } => {
                eprintln!("relay: {}: cpu {cpu}: {error}", path.display());
                self.corrupt += 1;
                Ok(())
            }
        };
        self.closed = r.is_err();
    }
}

fn stat(path: &Path, json: bool) -> Result<(), Error> {
    let file = ChannelFile::open(path, false)?;
    let g = *file.geometry();
    let rows: Vec<_> = (0..g.cpu_count())
        .filter_map(|cpu| file.stats(cpu).map(|s| (cpu, s)))
        .collect();
    if json {
        for (cpu, s) in rows {
            println!(
                "{{\"cpu\":{cpu},\"produced\":{},\"consumed\":{},\"lost_full\":{},\"lost_too_big\":{},\"lost_overwrite\":{},\"ready_subbufs\":{},\"subbufs\":{}}}",
                s.produced, s.consumed_records, s.lost.full, s.lost.too_big, s.lost.overwrite, s.ready_subbufs, g.subbuf_count()
            );
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
    Ok(())
}

fn write(path: &Path, cpu: u32, rtype: u16) -> Result<(), Error> {
    let file = ChannelFile::open(path, true)?;
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
        match w.write(rtype, line.as_bytes(), &mut monotonic_ns) {
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

fn flush(path: &Path) -> Result<(), Error> {
    let file = ChannelFile::open(path, true)?;
    flush_all(&file);
    Ok(())
}

/// What the demo's reader saw, per CPU.
struct Tally {
    overwrite: bool,
    next_seq: Vec<u64>,
    delivered: Vec<u64>,
    lost: Vec<Lost>,
    bad: u64,
    bytes: u64,
}

impl Tally {
    fn new(cpus: usize, overwrite: bool) -> Self {
        Tally {
            overwrite,
            next_seq: vec![0; cpus],
            delivered: vec![0; cpus],
            lost: vec![Lost::default(); cpus],
            bad: 0,
            bytes: 0,
        }
    }

    /// Checks one event: checksum, per-CPU sequence, losses.
    fn see(&mut self, e: Event<'_>) {
        match e {
            Event::Record { cpu, record } => {
                let (p, c) = (record.payload, cpu as usize);
                let word = |i: usize| {
                    p.get(i..i + 8).map_or(u64::MAX, |b| {
                        u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
                    })
                };
                let (seq, sum) = (word(0), word(8));
                let expected = self.next_seq.get(c).copied().unwrap_or(0);
                if p.len() < 16
                    || sum != fnv(&p[16..])
                    || seq < expected
                    || (!self.overwrite && seq != expected)
                {
                    self.bad += 1;
                }
                if let (Some(n), Some(d)) = (self.next_seq.get_mut(c), self.delivered.get_mut(c)) {
                    *n = seq.wrapping_add(1);
                    *d += 1;
                }
                self.bytes += p.len() as u64;
            }
            Event::Lost { cpu, lost: l, .. } => {
                if let Some(lost) = self.lost.get_mut(cpu as usize) {
                    lost.full += l.full;
                    lost.too_big += l.too_big;
                    lost.overwrite += l.overwrite;
                }
            }
            Event::Corrupt { .. } => self.bad += 1,
        }
    }
}

/// FNV-1a: the demo's payload checksum.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
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
    println!(
        "relay demo: {n} writer threads, one per CPU buffer ({} x {} KiB, {}), one merged reader, {seconds}s",
        g.subbuf_count(),
        g.subbuf_size() / 1024,
        if overwrite { "overwrite" } else { "no-overwrite" }
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
                    let (mut attempts, mut seq) = (0u64, 0u64);
                    let mut buf = [0u8; 64];
                    let mut last_flush = monotonic_ns();
                    while !stop.load(Ordering::Relaxed) {
                        buf[..8].copy_from_slice(&seq.to_le_bytes());
                        for (i, b) in buf[16..].iter_mut().enumerate() {
                            *b = (seq as u8) ^ (i as u8);
                        }
                        let sum = fnv(&buf[16..]);
                        buf[8..16].copy_from_slice(&sum.to_le_bytes());
                        attempts += 1;
                        if w.write(cpu as u16, &buf, &mut monotonic_ns).is_ok() {
                            seq += 1;
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
                    (attempts, seq)
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
            let mut tally = Tally::new(n as usize, overwrite);
            let mut tick = Instant::now();
            let mut last_total = 0u64;
            while stream.next_batch(4096, &mut |e| tally.see(e)).is_some() {
                if tick.elapsed() >= Duration::from_secs(1) {
                    let total: u64 = tally.delivered.iter().sum();
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
            let Tally {
                delivered,
                lost,
                bad,
                bytes,
                ..
            } = tally;
            (delivered, lost, bad, bytes, stream.late())
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
    let (delivered, reported, bad, bytes, late) = report;
    println!("\n cpu      written    delivered    lost:full  lost:overwrite  reported  accounting");
    let mut balanced = true;
    for cpu in 0..n as usize {
        let s = file.stats(cpu as u32).expect("cpu exists");
        let (attempts, accepted) = written[cpu];
        let ok = accepted == delivered[cpu] + s.lost.overwrite
            && attempts - accepted == s.lost.full + s.lost.too_big
            && reported[cpu] == s.lost;
        balanced &= ok;
        println!(
            " {cpu:>3} {attempts:>12} {:>12} {:>12} {:>15}  {:>8}  {}",
            delivered[cpu],
            s.lost.full,
            s.lost.overwrite,
            if reported[cpu] == s.lost {
                "all"
            } else {
                "MISSING"
            },
            if ok { "exact" } else { "MISMATCH" }
        );
    }
    let total: u64 = delivered.iter().sum();
    println!(
        "\n{total} records, {:.1} MB in {elapsed:.1}s: {:.2} M records/s, {:.0} MB/s through one merged stream",
        bytes as f64 / 1e6,
        total as f64 / elapsed / 1e6,
        bytes as f64 / elapsed / 1e6
    );
    println!(
        "checksums and per-CPU order: {}; timestamp order: {late} late records; every record delivered or counted: {}",
        if bad == 0 { "verified" } else { "FAILED" },
        if balanced { "yes" } else { "NO" }
    );
    if bad == 0 && balanced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::VERIFY)
    }
}
