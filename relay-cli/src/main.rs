//! `relay`: create, read, verify, inspect and demo relay channels, and
//! drive the kernel module.

#![forbid(unsafe_code)]

mod blkparse;
mod cat;
mod demo;
mod docs;
mod export;
mod fmt;
mod kmod;
mod live_blktrace;
mod print;
mod snapshot;
mod stat;
mod time;
mod verify;
mod write;

use blkparse::*;
use cat::*;
use demo::*;
use export::*;
use kmod::*;
use live_blktrace::*;
use print::*;
use snapshot::*;
use stat::*;
use verify::*;
use write::*;

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
use relay_core::{ChannelFlags, Clock, FormatError, GeometryParams, Lost, Mode, ReadError};
use relay_user::blktrace::{self, CpuInput, Decoder, Device, Item, Severity};
use relay_user::frames::Until;
use relay_user::kernel;
use relay_user::os::monotonic_ns;
use relay_user::{ChannelFile, Error, Flow, FrameReader, RelayfsDir, Stream, StreamOptions};

/// Exit codes (distinct per kind of failure).
mod exit {
    pub const VERIFY: u8 = 1;
    /// clap's own code for usage errors.
    pub const USAGE: u8 = 2;
    pub const IO: u8 = 3;
    /// Not a relay channel or frame stream, or a malformed one.
    pub const FORMAT: u8 = 4;
    /// Another consumer holds a CPU of the channel.
    pub const BUSY: u8 = 5;
    /// Corrupt data was skipped (and counted); everything else was delivered.
    pub const SKIPPED: u8 = 6;
}

#[derive(Parser)]
#[command(name = "relay", version, about = "Per-CPU relay channels, read through one file", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  relay demo                                  writers on every CPU + a verified merged reader
  relay create /dev/shm/t.relay --subbuf-size 64K --subbufs 8
  echo hello | relay write /dev/shm/t.relay --cpu 0
  relay cat /dev/shm/t.relay                  all CPUs, merged by timestamp (a snapshot:
                                              changes nothing, may run beside a consumer)
  relay cat --consume /dev/shm/t.relay        the same, consumed: the next reader goes on
  relay cat /dev/shm/t.relay --json --cpu 0   one JSON object per line
  relay cat /dev/shm/t.relay --follow         keep reading new records (consumes)
  relay cat a.relay b.relay                   several channels, merged, tagged by channel
                                              (--follow, --consume too)
  relay cat /sys/kernel/debug/block/sda       blktrace's per-CPU files (trace0..N, or saved
                                              sda.blktrace.0..N), recognised, as blkparse prints them,
                                              its summary after (-q: none)
  relay cat -d sda.bin DIR                    and blkparse's binary dump, for btt -i sda.bin
  relay blktrace /dev/sda -o DIR -w 10        blktrace + blkparse in one (root): trace, print live,
                                              save blktrace's files in DIR; Ctrl-C ends it
  relay cat --format raw DIR                  any relay channel's per-CPU files, raw
  relay snapshot /dev/shm/t.relay -o s.relay save what it holds now as a channel file
  relay export --ctf t.ctf t.relay            CTF for babeltrace2 and Trace Compass
  relay export --chrome t.json t.relay DIR    Chrome trace-event JSON for Perfetto's UI
  relay stat /dev/shm/t.relay                 per-CPU produced/consumed/lost/fill
  relay verify /dev/shm/t.relay               check checked payloads and the loss accounting

Kernel module (root):
  relay kernel create t --subbuf-size 64K --subbufs 8
  relay kernel load /dev/relay/t --records 100000 --irq
  relay verify /dev/relay/t                   the mapping; or: relay verify --read /dev/relay/t
  cat /dev/relay/t | relay cat -              frames from read(), decoded
  relay cat --read --follow /dev/relay/t.cpu1 one CPU, read() and poll()
  relay kernel bench --records 1000000        relay-kmod vs relay_write()
  relay kernel destroy t

Exit codes: 0 success; 1 relay verify found the stream wrong; 2 bad usage
(a geometry no channel can have included); 3 an I/O error (a channel file
truncated under relay included); 4 not a relay channel or frame stream, or
a malformed one; 5 another consumer holds a CPU (or another trace reads
the device); 6 corrupt data was
skipped (reported, its records counted lost), the rest delivered.
On SIGINT, SIGTERM or SIGHUP, relay cat commits what it printed, then ends.";

#[derive(Subcommand)]
enum Command {
    /// Create a channel file.
    Create {
        path: PathBuf,
        /// Bytes per sub-buffer (a power of two, 128 ..= 1 GiB).
        #[arg(long, default_value = "64K", value_parser = parse_size)]
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
        /// input (what a kernel channel file's read() returns). Several
        /// channel files are one stream, merged by timestamp (their clocks
        /// must agree), each record tagged with its channel's path: their
        /// snapshots, or with --consume or --follow their consumer (each
        /// record written out before its channel is read on).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// read() each PATH and decode frames instead of mapping it (a
        /// kernel channel file, its .cpuN files, or saved frames).
        #[arg(long)]
        read: bool,
        /// How to decode directories: `raw` (each CPU's bytes, tagged) or
        /// `blktrace` (blk_io_trace records merged by time and printed as
        /// Debian's blkparse prints them; several directories are several
        /// devices, as blkparse -i dev1 -i dev2). Default: blktrace for
        /// directories of blktrace's files (its debugfs channel, or saved
        /// files starting with its records), raw otherwise.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// One JSON object per line.
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Payload bytes only, nothing else (not with --format blktrace).
        #[arg(long)]
        raw: bool,
        /// How payloads print: text (printable ASCII as is, other bytes
        /// escaped: \n, \", \xNN; the default for text), hex (the default
        /// for JSON) or base64. JSON names the field payload_text,
        /// payload_hex or payload_base64.
        #[arg(long, value_enum, conflicts_with = "raw")]
        payload: Option<fmt::Payload>,
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
        /// Follow mode: how long an idle CPU may hold back the others (ms, or
        /// with a unit: 500us, 100ms, 1s).
        #[arg(long, default_value = "100ms", value_parser = parse_ms)]
        latency: u64,
        /// Flush every CPU first (for channels whose producers have exited
        /// or use shared writers).
        #[arg(long)]
        flush: bool,
        /// --format blktrace: no summary after the events (blkparse -q).
        #[arg(long = "no-summary", short = 'q')]
        no_summary: bool,
        /// --format blktrace: also write blkparse's binary dump (blkparse
        /// -d FILE), which btt reads: `btt -i FILE`.
        #[arg(long, short = 'd', value_name = "FILE")]
        dump: Option<PathBuf>,
        /// How timestamps print: auto (seconds for a nanosecond clock, as
        /// perf script prints them; raw values otherwise and for frames),
        /// raw, mono (seconds), rel (seconds since the first record), wall
        /// (UTC, through the channel's realtime anchor; JSON adds "wall").
        #[arg(long, value_enum, default_value_t = time::TimeArg::Auto)]
        time: time::TimeArg,
    },
    /// Trace block devices, as `blktrace -d DEV -o - | blkparse -i -` does
    /// in one command (root): set each device's trace up (the block
    /// layer's ioctls, blktrace's defaults), print every CPU's events
    /// merged as they come, as blkparse prints them, and on Ctrl-C, SIGTERM
    /// or the end of -w stop the trace, print what the kernel flushed, tear
    /// the trace down and print blkparse's summary. A trace left set up by
    /// a relay that was killed is torn down by the next run (said on
    /// stderr); one another process reads is not (exit 5).
    Blktrace {
        /// Block devices (/dev/sda ...), each one device of the summary.
        #[arg(required = true)]
        devices: Vec<PathBuf>,
        /// Also save each CPU's records in blktrace's layout
        /// (DIR/DEV.blktrace.CPU), which blkparse -i DEV -D DIR, btt
        /// and relay cat read.
        #[arg(long, short = 'o', value_name = "DIR")]
        output: Option<PathBuf>,
        /// Stop after this long (seconds, or with a unit: 500ms, 2s).
        #[arg(long = "stop-after", short = 'w', value_parser = parse_secs_or_unit, value_name = "SECONDS")]
        stop_after: Option<u64>,
        /// Size of a kernel sub-buffer: KiB, as blktrace -b takes it, or
        /// with a suffix (K, M).
        #[arg(long, short = 'b', default_value = "512K", value_parser = parse_kib)]
        buffer_size: u64,
        /// Kernel sub-buffers per CPU (blktrace -n).
        #[arg(long, short = 'n', default_value_t = relay_user::blktrace::DEFAULT_BUFFERS)]
        buffers: u32,
        /// One JSON object per event (docs/JSON.md); no summary.
        #[arg(long)]
        json: bool,
        /// No summary after the events (blkparse -q).
        #[arg(long = "no-summary", short = 'q')]
        no_summary: bool,
        /// Also write blkparse's binary dump (blkparse -d FILE), for btt.
        #[arg(long, short = 'd', value_name = "FILE")]
        dump: Option<PathBuf>,
        /// Only this CPU's events (repeatable; the summary counts all).
        #[arg(long = "cpu")]
        cpus: Vec<u32>,
        /// Where debugfs is mounted.
        #[arg(long, default_value = "/sys/kernel/debug")]
        debugfs: PathBuf,
        /// How long an idle CPU may hold back the others (ms, or with a
        /// unit: 500us, 100ms, 1s).
        #[arg(long, default_value = "100ms", value_parser = parse_ms)]
        latency: u64,
    },
    /// Write traces for viewers: CTF 1.8 (babeltrace2, Trace Compass) and
    /// Chrome trace-event JSON (Perfetto's UI, chrome://tracing). Sources
    /// are channel files (snapshots: nothing changes) and directories of
    /// blktrace's files. In CTF, a stream per CPU, records (or blktrace
    /// events) as events; one source's trace is DIR, several are DIR/1,
    /// DIR/2, ... In Chrome JSON, each source a process with a track per
    /// CPU, records as instant events, each blktrace request a slice from
    /// queue to completion on its device's lanes.
    #[command(group(clap::ArgGroup::new("to").required(true).multiple(true).args(["chrome", "ctf"])))]
    Export {
        /// Channel files and blktrace directories.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// The Chrome JSON file to write.
        #[arg(long, value_name = "FILE")]
        chrome: Option<PathBuf>,
        /// The CTF trace directory to write (new or empty).
        #[arg(long, value_name = "DIR")]
        ctf: Option<PathBuf>,
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
        /// Follow mode: end once nothing came for this long (ms, or with a
        /// unit: 500ms, 2s).
        #[arg(long, default_value = "2s", value_parser = parse_ms)]
        until_idle: u64,
        /// Follow mode: how long an idle CPU may hold back the others (ms,
        /// or with a unit); with --read, the poll timeout.
        #[arg(long, default_value = "100ms", value_parser = parse_ms)]
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
        /// Records are separated by NUL bytes, not newlines.
        #[arg(long)]
        nul: bool,
        /// The switch timer: flush what was written once the input has been
        /// quiet this long (100ms, 1s; 0 never), so a follow reader sees a
        /// slow producer's records within about twice that. Userspace
        /// channels only (a kernel channel's readers flush idle CPUs
        /// themselves).
        #[arg(long, default_value = "100ms", value_parser = parse_ms)]
        flush_interval: u64,
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
        /// How long the writers run (seconds, more than 0 and at most a day).
        #[arg(long, default_value = "3", value_parser = parse_seconds)]
        seconds: f64,
        /// Flight-recorder mode.
        #[arg(long)]
        overwrite: bool,
        /// Number of CPU buffers and writer threads.
        #[arg(long)]
        cpus: Option<u32>,
        /// Create the channel at FILE (which must not exist) and leave it
        /// there, for relay stat, cat and verify.
        #[arg(long, value_name = "FILE")]
        keep: Option<PathBuf>,
    },
    /// Shell completions, for bash, zsh, fish, elvish or powershell
    /// (`relay completions bash > /usr/share/bash-completion/completions/relay`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) of relay, or of one subcommand:
    /// `relay man cat | man -l -`; `relay man kernel create`.
    Man {
        /// The subcommand (words, as typed after `relay`).
        subcommand: Vec<String>,
        /// Write every page (relay.1, relay-cat.1, relay-kernel-create.1,
        /// ...) into this directory instead.
        #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
        all: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Create channel NAME: /dev/relay/NAME (and NAME.cpuN).
    Create {
        /// 1 ..= 31 of A-Z a-z 0-9 _ -.
        name: String,
        /// Bytes per sub-buffer (a power of two, 128 ..= 1 GiB).
        #[arg(long, default_value = "64K", value_parser = parse_size)]
        subbuf_size: u64,
        /// Sub-buffers per CPU (0 means 8).
        #[arg(long, default_value_t = 8)]
        subbufs: u64,
        /// Flight-recorder mode.
        #[arg(long)]
        overwrite: bool,
        /// What stamps the records: monotonic (CLOCK_MONOTONIC, one clock
        /// for every CPU), local (local_clock(), ftrace's; a bounded drift
        /// between CPUs), tsc (raw cycles, the cheapest).
        #[arg(long, value_enum, default_value_t = ClockArg::Monotonic)]
        clock: ClockArg,
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
        #[arg(long, default_value = "64K", value_parser = parse_size)]
        subbuf_size: u64,
        /// Sub-buffers per CPU of both channels.
        #[arg(long, default_value_t = 8)]
        subbufs: u64,
        /// The clock of relay-kmod's records and relay_reserve()'s stamp.
        #[arg(long, value_enum, default_value_t = ClockArg::Monotonic)]
        clock: ClockArg,
        /// Run on the first N online CPUs (0: all).
        #[arg(long, default_value_t = 0)]
        cpus: u32,
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

/// The clock of a kernel channel (`relay kernel create --clock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClockArg {
    Monotonic,
    Local,
    Tsc,
}

impl From<ClockArg> for Clock {
    fn from(c: ClockArg) -> Clock {
        match c {
            ClockArg::Monotonic => Clock::Monotonic,
            ClockArg::Local => Clock::Local,
            ClockArg::Tsc => Clock::Tsc,
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

/// `relay cat`'s format when none is given: blktrace if every path is a
/// directory of blktrace's files (said once on stderr), raw otherwise.
fn detect_format(paths: &[PathBuf]) -> Format {
    let blktrace = !paths.is_empty()
        && paths
            .iter()
            .all(|p| p.is_dir() && relay_user::RelayfsDir::open(p).is_ok_and(|d| d.is_blktrace()));
    if !blktrace {
        return Format::Raw;
    }
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "relay: {}: blktrace's files: decoding them as --format blktrace (--format raw for their bytes)",
        names.join(", ")
    );
    Format::Blktrace
}

/// A byte count: a number with an optional binary suffix K, M or G (64K
/// is 65536), as lttng, perf and blktrace take them.
fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_bare(s, 1, "65536 or 64K")
}

/// A byte count where a bare number is KiB, as blktrace's -b takes it
/// (512 is 512 KiB); suffixes as parse_size.
fn parse_kib(s: &str) -> Result<u64, String> {
    parse_size_bare(s, 1 << 10, "512 (KiB) or 1M")
}

fn parse_size_bare(s: &str, bare: u64, like: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, bare),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: a byte count, like {like}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// A number of seconds for `relay demo`: finite, positive, at most a day.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 86_400.0 => Ok(x),
        _ => Err(format!("{s:?}: seconds, more than 0 and at most 86400")),
    }
}

/// A duration in milliseconds: a bare number is milliseconds; or a number
/// with a unit: us, ms, s (rounded up to whole milliseconds).
fn parse_ms(s: &str) -> Result<u64, String> {
    parse_duration(s, 1000, "100 (ms)")
}

/// A duration in milliseconds: seconds, or a number with a unit (as
/// parse_ms), as blktrace's -w takes seconds.
fn parse_secs_or_unit(s: &str) -> Result<u64, String> {
    parse_duration(s, 1_000_000, "2 (s)")
}

/// A duration in milliseconds; a bare number counts `bare_us`.
fn parse_duration(s: &str, bare_us: u64, bare: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?}: a duration, like {bare}, 500us, 100ms or 2s");
    let (digits, unit_us) = if let Some(d) = t.strip_suffix("us") {
        (d, 1u64)
    } else if let Some(d) = t.strip_suffix("ms") {
        (d, 1000)
    } else if let Some(d) = t.strip_suffix('s') {
        (d, 1_000_000)
    } else {
        (t, bare_us)
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let us = n.checked_mul(unit_us).ok_or_else(bad)?;
    Ok(us.div_ceil(1000))
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
    // `relay cat` sees a closed pipe as the end of its output and commits
    // what it wrote; every other command just ends with its reader.
    // `relay blktrace` must live to tear its trace down.
    if !matches!(cli.command, Command::Cat { .. } | Command::Blktrace { .. }) {
        relay_user::os::die_on_sigpipe();
    }
    let mut command = cli.command;
    if let Command::Cat {
        paths,
        format: format @ None,
        read: false,
        raw: false,
        payload: None,
        ..
    } = &mut command
    {
        *format = Some(detect_format(paths));
    }
    let result = match command {
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
        Command::Export {
            sources,
            chrome,
            ctf,
        } => export(&sources, &Targets { chrome, ctf }),
        Command::Blktrace {
            devices,
            output,
            stop_after,
            buffer_size,
            buffers,
            json,
            no_summary,
            dump,
            cpus,
            debugfs,
            latency,
        } => {
            if json && dump.is_some() {
                usage_error("--dump cannot be used with --json (it dumps what blkparse counts, as blkparse -d)".into());
            }
            let Ok(buffer_size) = u32::try_from(buffer_size) else {
                usage_error(format!(
                    "--buffer-size {buffer_size}: at most 4G - 1 (the kernel takes a u32)"
                ));
            };
            if buffer_size == 0 || buffers == 0 {
                usage_error("--buffer-size and --buffers must be above 0".into());
            }
            let options = LiveOptions {
                devices,
                save: output,
                stop_after: stop_after.map(Duration::from_millis),
                setup: relay_user::blktrace::SetupOptions {
                    buffer_size,
                    buffers,
                    ..Default::default()
                },
                debugfs,
                latency: Duration::from_millis(latency),
            };
            let output = BlkparseOutput {
                json,
                summary: !no_summary,
                dump,
            };
            live_blktrace(&options, &output, &cpus)
        }
        Command::Cat {
            paths,
            format: Some(Format::Blktrace),
            json,
            raw,
            payload,
            follow,
            cpus,
            latency,
            no_summary,
            dump,
            ..
        } => {
            if raw {
                usage_error("--raw cannot be used with --format blktrace".into());
            }
            if json && dump.is_some() {
                usage_error("--dump cannot be used with --json (it dumps what blkparse counts, as blkparse -d)".into());
            }
            if payload.is_some() {
                usage_error(
                    "--payload cannot be used with --format blktrace (it prints events, not payloads)"
                        .into(),
                );
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
            let output = BlkparseOutput {
                json,
                summary: !no_summary,
                dump,
            };
            cat_blktrace(&paths, options, &output, &cpus)
        }
        Command::Cat {
            paths,
            format: Some(Format::Raw) | None,
            read,
            json,
            raw,
            payload,
            follow,
            consume,
            cpus,
            latency,
            flush,
            time,
            no_summary,
            dump,
        } => {
            if no_summary || dump.is_some() {
                usage_error(format!(
                    "{} is for --format blktrace",
                    if no_summary { "--no-summary" } else { "--dump" }
                ));
            }
            let output = Output {
                json,
                raw,
                payload: payload.unwrap_or(if json {
                    fmt::Payload::Hex
                } else {
                    fmt::Payload::Text
                }),
                time,
            };
            let options = StreamOptions {
                cpus,
                follow,
                latency: Duration::from_millis(latency),
                until_idle: None,
            };
            // Several channel files: one stream, merged by timestamp.
            let channels = paths.len() > 1
                && !read
                && paths.iter().all(|p| p.as_os_str() != "-" && !p.is_dir());
            if channels {
                if flush {
                    for p in &paths {
                        match open_producer(p) {
                            Ok(f) => flush_all(&f),
                            Err(e) => return report(e),
                        }
                    }
                }
                cat_channels(&paths, &options, output, consume)
            } else {
                paths.iter().try_for_each(|p| {
                    if p.as_os_str() == "-" || read {
                        cat_frames(p, &options, output)
                    } else {
                        cat(p, &options, output, flush, consume || follow)
                    }
                })
            }
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
            // SIGINT, SIGTERM or SIGHUP end a follow with the summary of
            // what was read, then the signal's exit.
            let stop = match relay_user::os::catch_termination() {
                Ok(stop) => stop,
                Err(source) => {
                    return report(Error::Io {
                        path: path.clone(),
                        op: "sigaction",
                        source,
                    })
                }
            };
            let r = if path.as_os_str() == "-" || read {
                verify_frames(&path, &o, stop)
            } else {
                verify_mapped(&path, &o, stop)
            };
            if stop.load(Ordering::Acquire) {
                eprintln!(
                    "relay: {}: interrupted: the summary covers what was read",
                    path.display()
                );
                let _ = io::stdout().flush();
                relay_user::os::end_by_signal();
            }
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
            nul,
            flush_interval,
        } => write(
            &path,
            cpu,
            rtype,
            block.map(Duration::from_millis),
            if nul { 0 } else { b'\n' },
            Duration::from_millis(flush_interval),
        ),
        Command::Flush { path } => flush(&path),
        Command::Demo {
            seconds,
            overwrite,
            cpus,
            keep,
        } => return demo(seconds, overwrite, cpus, keep.as_deref()),
        Command::Completions { shell } => {
            docs::completions(shell, Cli::command());
            Ok(())
        }
        Command::Man { subcommand, all } => match all {
            Some(dir) => docs::man_all(Cli::command(), &dir),
            None => docs::man(Cli::command(), &subcommand, &mut io::stdout()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

/// Prints `e` and gives its exit code.
fn report(e: Error) -> ExitCode {
    eprintln!("relay: {e}");
    ExitCode::from(match e {
        Error::Io { .. } | Error::Kernel(_) => exit::IO,
        Error::Blktrace(
            blktrace::SessionError::Busy { .. } | blktrace::SessionError::TracedBySysfs { .. },
        ) => exit::BUSY,
        Error::Blktrace(_) => exit::IO,
        Error::Decode { unreadable, .. } if unreadable > 0 => exit::IO,
        Error::Decode { .. } | Error::Corrupt { .. } | Error::Read { .. } => exit::SKIPPED,
        Error::Busy { .. } => exit::BUSY,
        Error::Geometry(_) => exit::USAGE,
        _ => exit::FORMAT,
    })
}

/// The CPU buffers of a new channel: as asked, or one per CPU the machine
/// may run (not only those this process's affinity allows).
fn cpu_count(cpus: Option<u32>) -> u32 {
    cpus.unwrap_or_else(relay_user::os::possible_cpus)
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
/// Opens `path` as a producer, saying on stderr what the open repaired (a
/// dead producer's unfinished sub-buffers).
fn open_producer(path: &Path) -> Result<ChannelFile, Error> {
    let file = ChannelFile::open_producer(path)?;
    for (cpu, r) in file.repaired() {
        eprintln!(
            "relay: {}: cpu {cpu}: a dead producer left {} sub-buffers unfinished: sealed them, {} records abandoned",
            path.display(),
            r.subbufs + r.slots,
            r.records
        );
    }
    Ok(file)
}

fn flush_all(file: &ChannelFile) {
    for cpu in 0..file.geometry().cpu_count() {
        if file.is_kernel() {
            let _ = file.flush_cpu(cpu);
        } else if let Some(w) = file.writer(cpu) {
            let _ = w.flush(&mut monotonic_ns);
        }
    }
}
