//! blktrace: the block layer's tracer, relay's most used client, decoded.
//!
//! `blktrace` has the kernel write `struct blk_io_trace` records into one
//! relay buffer per CPU (`/sys/kernel/debug/block/<dev>/trace0..N`); the
//! `blktrace` tool saves them as `<dev>.blktrace.0..N`, and `blkparse`
//! merges the per-CPU files by time and prints one line per event. This
//! module does the same so that `relay cat --format blktrace DIR` reads
//! either kind of directory as one source, and its text output is
//! byte-identical to the event lines of Debian's `blkparse` (1.2.0, the
//! bookworm package) run as `blkparse -i <dev> -D <dir>`: an existing tool's
//! output is the contract that scripts and people already read.
//!
//! What "identical" takes, all from blkparse's file mode (`do_file`):
//!
//! - **Records**: 48-byte headers (magic `0x65617400 | 7`, sequence, time in
//!   ns, sector, bytes, action = category bits << 16 | action code, pid,
//!   device = major << 20 | minor, cpu, error, pdu_len) followed by pdu_len
//!   payload bytes, in the writer's byte order (detected per file from the
//!   magic; blkparse detects it once, from the first record it reads). The
//!   payloads blkparse decodes (unplug counts, split sectors, remaps) are
//!   big-endian, as the kernel writes them.
//! - **Merge order**: each CPU's file is read in file order, in batches of
//!   512 records; the CPUs (of every directory, in argument order, then CPU
//!   order) are kept in a list sorted by the time of their next record, and
//!   the first is printed. Equal times are broken exactly as blkparse's
//!   `ms_sort`/`ms_resort` do: the CPU just printed keeps its place while
//!   its next record is not later than the next CPU's; a CPU re-inserted
//!   goes before CPUs of equal time, except the first. Records are not
//!   sorted within a file, and sequence numbers do not order anything.
//! - **Times** are printed relative to the earliest first record of all the
//!   files (blkparse's genesis time: one for all devices, not one per
//!   device; notifies other than messages do not count), wrapping as
//!   blkparse's unsigned arithmetic does for a record older than that.
//! - **Process names** come from the process notify records
//!   (`BLK_TN_PROCESS`), which print nothing. blkparse takes them in when it
//!   *reads* a batch, not in time order, and keeps the first name a pid gets;
//!   a pid with no name yet prints as `[(null)]` (glibc's `%s` of NULL).
//!   The batching above is reproduced for this reason.
//! - **Messages** (`BLK_TN_MESSAGE`) print as `m   N text`, with sequence
//!   and pid 0; timestamp notifies (`BLK_TN_TIMESTAMP`) and other notifies
//!   print nothing.
//! - **Skipped as blkparse skips them**: records without category bits
//!   (blkparse's default action mask), driver-data records, records whose
//!   cpu field is not their file's CPU, and action codes blkparse does not
//!   know (reported as warnings, as blkparse reports "Bad fs action").
//!
//! Known differences, intentional:
//!
//! - **cgroup-tagged records.** Newer kernels can prefix the payload with an
//!   8-byte cgroup id and set `__BLK_TA_CGROUP` (0x100) in the action; Linux
//!   6.12 with `CONFIG_BLK_CGROUP` does so on every message (cgroup id 1
//!   unless the ftrace `blk_cgroup` option is set), and on I/O events when
//!   that option is set. blkparse 1.2.0 predates this: it drops such
//!   messages silently and calls such I/O events "Bad fs action". The
//!   text output does the same, to stay identical, but says so on stderr
//!   (once per CPU for messages); [`Options::cgroup`] (set by `--json`)
//!   decodes them instead, as later blkparse versions do.
//! - **Malformed input is an error here** (exit 4 in the CLI), naming the
//!   file, CPU, offset and field, where blkparse prints "Bad magic" or
//!   nothing and stops reading that CPU. The events before it are printed
//!   exactly as blkparse prints them. A trailing partial record at the end
//!   of a file is also an error, unless following a live file, where it is
//!   the part the kernel has not finished and the reader waits for the rest.
//! - **Payloads too short** for what blkparse reads from them (an unplug or
//!   split shorter than 8 bytes, a remap shorter than 16): blkparse prints
//!   whatever memory follows; this reports the record as malformed. A
//!   process name without a NUL in a payload shorter than 16 bytes ends at
//!   the payload here (blkparse reads on), and a packet command's payload
//!   is dumped whole (blkparse's 4096-byte buffer overflows past ~1365).
//! - **Missing CPU files**: blkparse stops at the first missing CPU number
//!   (`trace0, trace2` reads only CPU 0); this reads every CPU file found.
//! - **Follow mode** (`--follow`) cannot know the future: it prints the
//!   earliest record once every CPU has one pending or has been idle for the
//!   latency, so its order is blkparse's only when nothing arrives late.
//!
//! Not done: blkparse's end-of-run summary tables (per-CPU and total
//! counts, throughput), its other lines on stdout ("Input file ... added",
//! the note about discarded driver data), its `-f`/`-F` custom formats,
//! `-t` request timing, and its pipe mode. The comparison is on the event
//! lines (`blkparse -q -o FILE` writes exactly those).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `BLK_IO_TRACE_MAGIC`: the high 24 bits of every record's first word.
pub const MAGIC: u32 = 0x6561_7400;

/// Whether `bytes` start with a `blk_io_trace` record's magic word, in
/// either byte order (any version).
pub fn starts_a_record(bytes: &[u8]) -> bool {
    let Some(w) = bytes.get(..4).and_then(|w| <[u8; 4]>::try_from(w).ok()) else {
        return false;
    };
    [u32::from_le_bytes(w), u32::from_be_bytes(w)]
        .iter()
        .any(|&m| m & 0xffff_ff00 == MAGIC)
}
/// `BLK_IO_TRACE_VERSION`: the low byte of the magic word.
pub const VERSION: u8 = 7;
/// `sizeof(struct blk_io_trace)`.
pub const HEADER_LEN: usize = 48;
/// Records blkparse reads from one CPU's file at a time (`RB_BATCH_DEFAULT`).
pub const BATCH: usize = 512;

/// Category bits (`BLK_TC_*`), as they sit in the action word (`<< 16`).
pub mod category {
    /// Reads.
    pub const READ: u32 = 1 << 16;
    /// Writes.
    pub const WRITE: u32 = 1 << 17;
    /// Cache flushes.
    pub const FLUSH: u32 = 1 << 18;
    /// Synchronous requests.
    pub const SYNC: u32 = 1 << 19;
    /// Queueing and merging.
    pub const QUEUE: u32 = 1 << 20;
    /// Requeues.
    pub const REQUEUE: u32 = 1 << 21;
    /// Issues to the driver.
    pub const ISSUE: u32 = 1 << 22;
    /// Completions.
    pub const COMPLETE: u32 = 1 << 23;
    /// File-system requests.
    pub const FS: u32 = 1 << 24;
    /// Packet-command (SCSI passthrough) requests.
    pub const PC: u32 = 1 << 25;
    /// Notify records: process names, timestamps, messages.
    pub const NOTIFY: u32 = 1 << 26;
    /// Readahead.
    pub const AHEAD: u32 = 1 << 27;
    /// Metadata.
    pub const META: u32 = 1 << 28;
    /// Discards.
    pub const DISCARD: u32 = 1 << 29;
    /// Driver data.
    pub const DRV_DATA: u32 = 1 << 30;
    /// Forced unit access.
    pub const FUA: u32 = 1 << 31;
}

/// `__BLK_TA_CGROUP` / `__BLK_TN_CGROUP`: the payload starts with an 8-byte
/// cgroup id.
pub const CGROUP: u32 = 0x100;
/// `BLK_TN_PROCESS`: the payload is the pid's command name.
pub const TN_PROCESS: u32 = category::NOTIFY;
/// `BLK_TN_TIMESTAMP`: the payload is the wall-clock time (two u32).
pub const TN_TIMESTAMP: u32 = category::NOTIFY | 1;
/// `BLK_TN_MESSAGE`: the payload is a text message.
pub const TN_MESSAGE: u32 = category::NOTIFY | 2;

/// Byte order of a file's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    /// Little-endian (x86, arm64, ...).
    Little,
    /// Big-endian (s390x, ...).
    Big,
}

/// One `struct blk_io_trace` and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The magic word (`MAGIC | VERSION`).
    pub magic: u32,
    /// Per-CPU event number (not set by the kernel on notify records).
    pub sequence: u32,
    /// Nanoseconds (the kernel's `ktime_get`).
    pub time: u64,
    /// Disk offset in 512-byte sectors.
    pub sector: u64,
    /// Transfer length.
    pub bytes: u32,
    /// Category bits << 16 | action code.
    pub action: u32,
    /// Process id.
    pub pid: u32,
    /// Device: major << 20 | minor.
    pub device: u32,
    /// The CPU the record was written on.
    pub cpu: u32,
    /// Completion error (a negative errno, truncated to 16 bits).
    pub error: u16,
    /// The `pdu_len` payload bytes.
    pub pdu: Vec<u8>,
}

/// The device's major number (`MINORBITS` is 20).
pub fn major(device: u32) -> u32 {
    device >> 20
}

/// The device's minor number.
pub fn minor(device: u32) -> u32 {
    device & ((1 << 20) - 1)
}

/// Why the bytes at an offset are not a record (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Truncated {
        /// Bytes there are.
        have: usize,
    },
    /// The magic word is not `0x654174xx` in either byte order.
    Magic(u32),
    /// The version byte is not 7.
    Version(u8),
    /// The payload runs past the bytes there are.
    PduPastEnd {
        /// The header's `pdu_len`.
        pdu_len: u16,
        /// Payload bytes there are.
        have: usize,
    },
}

impl RecordError {
    /// The header field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            RecordError::Truncated { .. } => "header",
            RecordError::Magic(_) | RecordError::Version(_) => "magic",
            RecordError::PduPastEnd { .. } => "pdu_len",
        }
    }

    /// More bytes could complete the record (a live file's last record).
    pub fn incomplete(&self) -> bool {
        matches!(
            self,
            RecordError::Truncated { .. } | RecordError::PduPastEnd { .. }
        )
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { have } => {
                write!(f, "partial record: {have} of the {HEADER_LEN} header bytes")
            }
            RecordError::Magic(m) => write!(
                f,
                "{m:#010x} is not a blk_io_trace record (expected {:#010x} in either byte order)",
                MAGIC | u32::from(VERSION)
            ),
            RecordError::Version(v) => write!(
                f,
                "version {v} is not supported (blk_io_trace version {VERSION}, as blkparse 1.2.0)"
            ),
            RecordError::PduPastEnd { pdu_len, have } => write!(
                f,
                "{pdu_len} payload bytes run past the end of the data ({have} there)"
            ),
        }
    }
}

fn u16_at(b: &[u8], at: usize, e: Endian) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    match e {
        Endian::Little => u16::from_le_bytes(w),
        Endian::Big => u16::from_be_bytes(w),
    }
}

fn u32_at(b: &[u8], at: usize, e: Endian) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    match e {
        Endian::Little => u32::from_le_bytes(w),
        Endian::Big => u32::from_be_bytes(w),
    }
}

fn u64_at(b: &[u8], at: usize, e: Endian) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    match e {
        Endian::Little => u64::from_le_bytes(w),
        Endian::Big => u64::from_be_bytes(w),
    }
}

/// Parses the record at the start of `bytes`: the byte order is `endian`,
/// or (if `None`) whichever the magic word reads correctly in. Returns the
/// record, its byte order and its length (header + payload).
pub fn parse_record(
    bytes: &[u8],
    endian: Option<Endian>,
) -> Result<(Trace, Endian, usize), RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated { have: bytes.len() });
    }
    let magic_ok = |e| u32_at(bytes, 0, e) & 0xffff_ff00 == MAGIC;
    let e = match endian {
        Some(e) if magic_ok(e) => e,
        Some(e) => return Err(RecordError::Magic(u32_at(bytes, 0, e))),
        None if magic_ok(Endian::Little) => Endian::Little,
        None if magic_ok(Endian::Big) => Endian::Big,
        None => return Err(RecordError::Magic(u32_at(bytes, 0, Endian::Little))),
    };
    let magic = u32_at(bytes, 0, e);
    let version = (magic & 0xff) as u8;
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    let pdu_len = u16_at(bytes, 46, e);
    let end = HEADER_LEN + usize::from(pdu_len);
    let Some(pdu) = bytes.get(HEADER_LEN..end) else {
        return Err(RecordError::PduPastEnd {
            pdu_len,
            have: bytes.len() - HEADER_LEN,
        });
    };
    let trace = Trace {
        magic,
        sequence: u32_at(bytes, 4, e),
        time: u64_at(bytes, 8, e),
        sector: u64_at(bytes, 16, e),
        bytes: u32_at(bytes, 24, e),
        action: u32_at(bytes, 28, e),
        pid: u32_at(bytes, 32, e),
        device: u32_at(bytes, 36, e),
        cpu: u32_at(bytes, 40, e),
        error: u16_at(bytes, 44, e),
        pdu: pdu.to_vec(),
    };
    Ok((trace, e, end))
}

/// Encodes a record (the inverse of [`parse_record`]; for tests and seeds).
/// The header's `pdu_len` is `trace.pdu.len()`, truncated to 16 bits.
pub fn encode_record(trace: &Trace, endian: Endian) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + trace.pdu.len());
    let mut put = |bytes: &[u8]| out.extend_from_slice(bytes);
    macro_rules! field {
        ($v:expr) => {
            match endian {
                Endian::Little => put(&$v.to_le_bytes()),
                Endian::Big => put(&$v.to_be_bytes()),
            }
        };
    }
    field!(trace.magic);
    field!(trace.sequence);
    field!(trace.time);
    field!(trace.sector);
    field!(trace.bytes);
    field!(trace.action);
    field!(trace.pid);
    field!(trace.device);
    field!(trace.cpu);
    field!(trace.error);
    field!(trace.pdu.len() as u16);
    out.extend_from_slice(&trace.pdu);
    out
}

/// What happened to a request (the action code), with what blkparse
/// decodes from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `Q`: queued.
    Queue,
    /// `M`: back merged into an existing request.
    BackMerge,
    /// `F`: front merged.
    FrontMerge,
    /// `G`: request allocated.
    GetRq,
    /// `S`: slept waiting for a request.
    SleepRq,
    /// `R`: requeued.
    Requeue,
    /// `D`: issued to the driver.
    Issue,
    /// `C`: completed.
    Complete,
    /// `P`: plugged.
    Plug,
    /// `U`: unplugged by I/O, with the number of requests.
    UnplugIo(u64),
    /// `UT`: unplugged by the timer, with the number of requests.
    UnplugTimer(u64),
    /// `I`: inserted.
    Insert,
    /// `X`: split, at this sector.
    Split(u64),
    /// `B`: bounced.
    Bounce,
    /// `A`: remapped from another device.
    Remap {
        /// The device it came from.
        from_device: u32,
        /// The device it went to (printed as the event's device).
        to_device: u32,
        /// Its sector there.
        from_sector: u64,
    },
}

impl Action {
    /// blkparse's action column.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Queue => "Q",
            Action::BackMerge => "M",
            Action::FrontMerge => "F",
            Action::GetRq => "G",
            Action::SleepRq => "S",
            Action::Requeue => "R",
            Action::Issue => "D",
            Action::Complete => "C",
            Action::Plug => "P",
            Action::UnplugIo(_) => "U",
            Action::UnplugTimer(_) => "UT",
            Action::Insert => "I",
            Action::Split(_) => "X",
            Action::Bounce => "B",
            Action::Remap { .. } => "A",
        }
    }
}

/// What an event is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A file-system request's event.
    Fs(Action),
    /// A packet-command request's event (the payload is the command).
    Pc(Action),
    /// A text message (`BLK_TN_MESSAGE`).
    Message,
}

/// One printed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The CPU of the file it came from.
    pub cpu: u32,
    /// Nanoseconds since the earliest first record (wrapping).
    pub time: u64,
    /// What it is.
    pub what: What,
    /// The record (its `time` is the raw kernel time).
    pub trace: Trace,
    /// The cgroup id, for cgroup-tagged records (with [`Options::cgroup`]).
    pub cgroup: Option<u64>,
    /// The pid's name, if a process notify gave one by the time it printed.
    pub process: Option<Vec<u8>>,
}

impl Event {
    /// The payload after the cgroup id (if any).
    pub fn payload(&self) -> &[u8] {
        let skip = if self.cgroup.is_some() { 8 } else { 0 };
        self.trace.pdu.get(skip..).unwrap_or(&[])
    }

    /// The device printed: a remap prints the device it went to.
    pub fn device(&self) -> u32 {
        match self.what {
            What::Fs(Action::Remap { to_device, .. })
            | What::Pc(Action::Remap { to_device, .. }) => to_device,
            _ => self.trace.device,
        }
    }

    /// A message's text: the payload up to its first NUL (as `%s` prints it).
    pub fn message(&self) -> &[u8] {
        let p = self.payload();
        p.split(|&b| b == 0).next().unwrap_or(p)
    }

    /// blkparse's RWBS column: F(lush), then D(iscard)/W(rite)/R(ead)/N(one),
    /// then F(UA), A(head), S(ync), M(eta).
    pub fn rwbs(&self) -> String {
        let a = self.trace.action;
        let mut s = String::new();
        if a & category::FLUSH != 0 {
            s.push('F');
        }
        s.push(if a & category::DISCARD != 0 {
            'D'
        } else if a & category::WRITE != 0 {
            'W'
        } else if self.trace.bytes != 0 {
            'R'
        } else {
            'N'
        });
        for (bit, c) in [
            (category::FUA, 'F'),
            (category::AHEAD, 'A'),
            (category::SYNC, 'S'),
            (category::META, 'M'),
        ] {
            if a & bit != 0 {
                s.push(c);
            }
        }
        s
    }

    /// The event as blkparse prints it (one line, with its newline).
    pub fn write_blkparse(&self, out: &mut Vec<u8>) {
        let t = &self.trace;
        let (secs, nanos) = (
            (self.time / 1_000_000_000) as i32,
            self.time % 1_000_000_000,
        );
        let dev = self.device();
        let (maj, min) = (major(dev) as i32, minor(dev) as i32);
        if self.what == What::Message {
            out.extend_from_slice(
                format!(
                    "{maj:>3},{min:<3} {:>2} {:>8} {secs:>5}.{nanos:09} {:>5} {:>2} {:>3} ",
                    t.cpu as i32, "0", 0, "m", "N"
                )
                .as_bytes(),
            );
            out.extend_from_slice(self.message());
            out.push(b'\n');
            return;
        }
        let (action, pc) = match &self.what {
            What::Fs(a) => (a, false),
            What::Pc(a) => (a, true),
            What::Message => return,
        };
        out.extend_from_slice(
            format!(
                "{maj:>3},{min:<3} {:>2} {:>8} {secs:>5}.{nanos:09} {:>5} {:>2} {:>3} ",
                self.cpu as i32,
                t.sequence as i32,
                t.pid,
                action.label(),
                self.rwbs()
            )
            .as_bytes(),
        );
        let name = |out: &mut Vec<u8>| {
            out.push(b'[');
            out.extend_from_slice(self.process.as_deref().unwrap_or(b"(null)"));
            out.push(b']');
        };
        let sectors = t.bytes >> 9;
        let sector_and_len = |out: &mut Vec<u8>| {
            out.extend_from_slice(format!("{} + {sectors} ", t.sector).as_bytes());
        };
        // blkparse passes the payload to its printer only for pc D, I and C.
        let pdu = match action {
            Action::Issue | Action::Insert | Action::Complete if pc => dump_pdu(self.payload()),
            _ => None,
        };
        match action {
            Action::Requeue | Action::Complete => {
                if pc {
                    if let Some(p) = pdu {
                        out.extend_from_slice(format!("({p}) ").as_bytes());
                    }
                } else if sectors != 0 {
                    sector_and_len(out);
                } else {
                    out.extend_from_slice(format!("{} ", t.sector).as_bytes());
                }
                out.extend_from_slice(format!("[{}]", i32::from(t.error)).as_bytes());
            }
            Action::Issue | Action::Insert | Action::Queue | Action::Bounce => {
                if pc {
                    out.extend_from_slice(format!("{} ", t.bytes).as_bytes());
                    if let Some(p) = pdu {
                        out.extend_from_slice(format!("({p}) ").as_bytes());
                    }
                } else if sectors != 0 {
                    sector_and_len(out);
                }
                name(out);
            }
            Action::BackMerge | Action::FrontMerge | Action::GetRq | Action::SleepRq => {
                if sectors != 0 {
                    sector_and_len(out);
                }
                name(out);
            }
            Action::Plug => name(out),
            Action::UnplugIo(n) | Action::UnplugTimer(n) => {
                name(out);
                out.extend_from_slice(format!(" {}", *n as u32).as_bytes());
            }
            Action::Remap {
                from_device,
                from_sector,
                ..
            } => {
                sector_and_len(out);
                out.extend_from_slice(
                    format!(
                        "<- ({},{}) {from_sector}",
                        major(*from_device) as i32,
                        minor(*from_device) as i32
                    )
                    .as_bytes(),
                );
            }
            Action::Split(at) => {
                out.extend_from_slice(format!("{} / {} ", t.sector, *at as u32).as_bytes());
                name(out);
            }
        }
        out.push(b'\n');
    }

    /// The event as one JSON object (one line, with its newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let t = &self.trace;
        let dev = self.device();
        // docs/JSON.md: `kind` first (fs, pc or message), `ts` the time.
        let kind = match &self.what {
            What::Message => "message",
            What::Fs(_) => "fs",
            What::Pc(_) => "pc",
        };
        let mut s = format!(
            "{{\"kind\":\"{kind}\",\"ts\":{},\"cpu\":{},\"major\":{},\"minor\":{},\"pid\":{}",
            self.time,
            self.cpu,
            major(dev),
            minor(dev),
            t.pid
        );
        let (action, pc) = match &self.what {
            What::Message => {
                s.push_str(",\"action\":\"m\",\"message\":");
                json_string(&mut s, self.message());
                if let Some(id) = self.cgroup {
                    s.push_str(&format!(",\"cgroup\":{id}"));
                }
                s.push_str("}\n");
                out.extend_from_slice(s.as_bytes());
                return;
            }
            What::Fs(a) => (a, false),
            What::Pc(a) => (a, true),
        };
        s.push_str(&format!(
            ",\"sequence\":{},\"action\":\"{}\",\"rwbs\":\"{}\",\"sector\":{},\"bytes\":{},\"error\":{}",
            t.sequence,
            action.label(),
            self.rwbs(),
            t.sector,
            t.bytes,
            t.error
        ));
        match action {
            Action::UnplugIo(n) | Action::UnplugTimer(n) => {
                s.push_str(&format!(",\"requests\":{n}"))
            }
            Action::Split(at) => s.push_str(&format!(",\"split_sector\":{at}")),
            Action::Remap {
                from_device,
                from_sector,
                ..
            } => s.push_str(&format!(
                ",\"from_major\":{},\"from_minor\":{},\"from_sector\":{from_sector}",
                major(*from_device),
                minor(*from_device)
            )),
            _ => {}
        }
        if pc {
            s.push_str(",\"pdu_hex\":\"");
            for b in self.payload() {
                s.push_str(&format!("{b:02x}"));
            }
            s.push('"');
        }
        if let Some(id) = self.cgroup {
            s.push_str(&format!(",\"cgroup\":{id}"));
        }
        s.push_str(",\"process\":");
        match &self.process {
            Some(p) => json_string(&mut s, p),
            None => s.push_str("null"),
        }
        s.push_str("}\n");
        out.extend_from_slice(s.as_bytes());
    }
}

/// blkparse's `dump_pdu`: hex bytes, stopping with ` ..` at a zero byte
/// after which everything is zero; `None` for an empty payload.
fn dump_pdu(pdu: &[u8]) -> Option<String> {
    if pdu.is_empty() {
        return None;
    }
    let mut s = String::new();
    for (i, &b) in pdu.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
        if b == 0 && pdu[i..].iter().all(|&z| z == 0) {
            s.push_str(" ..");
            break;
        }
    }
    Some(s)
}

/// Appends `bytes` as a JSON string (invalid UTF-8 replaced).
fn json_string(s: &mut String, bytes: &[u8]) {
    s.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// How bad a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// A record blkparse skips too (its CPU field, an unknown action): a
    /// warning; nothing else is affected.
    Skipped,
    /// A malformed record. If its framing is broken (magic, version, a
    /// partial record) the rest of that CPU's file is not read.
    Malformed,
    /// The file could not be read; the rest of it is not read.
    Io,
}

/// A record that could not be decoded or printed, located exactly.
#[derive(Debug)]
pub struct Problem {
    /// The CPU's file.
    pub path: PathBuf,
    /// The CPU.
    pub cpu: u32,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// The field at fault (`magic`, `pdu_len`, `action`, ...).
    pub field: &'static str,
    /// What is wrong.
    pub what: String,
    /// How bad it is.
    pub severity: Severity,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cpu {}: offset {}: {}: {}",
            self.path.display(),
            self.cpu,
            self.offset,
            self.field,
            self.what
        )
    }
}

impl std::error::Error for Problem {}

/// One CPU's file (or any reader of one CPU's records).
#[derive(Debug)]
pub struct CpuInput<R> {
    /// For messages.
    pub path: PathBuf,
    /// The CPU (from the file name, as blkparse takes it).
    pub cpu: u32,
    /// The bytes.
    pub reader: R,
}

/// How to decode.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keep waiting for new records (live debugfs files); the reader's 0
    /// means "nothing yet", and a partial record is waited for.
    pub follow: bool,
    /// Follow mode: how long an idle CPU may hold back the others.
    pub latency: Duration,
    /// Decode cgroup-tagged records (Linux 4.14+), which blkparse 1.2.0
    /// does not print; off for blkparse-identical text.
    pub cgroup: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            follow: false,
            latency: Duration::from_millis(100),
            cgroup: false,
        }
    }
}

/// What [`Decoder::next_item`] returns.
#[derive(Debug)]
pub enum Item {
    /// An event to print.
    Event(Event),
    /// A record that could not be decoded or printed.
    Problem(Problem),
    /// Follow mode: nothing to print now; call again later.
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Ended,
}

/// One CPU's file being read.
struct Stream<R> {
    input: CpuInput<R>,
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    start: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    endian: Option<Endian>,
    /// Records read and not yet printed (blkparse's batch).
    queue: VecDeque<(Trace, u64)>,
    state: State,
    /// Follow mode: when this CPU last came up empty.
    idle_since: Option<Instant>,
    /// A cgroup-tagged message was dropped (reported once).
    warned_cgroup: bool,
}

enum Next {
    Record(Trace, u64),
    Wait,
    End,
}

impl<R: Read> Stream<R> {
    fn problem(
        &self,
        offset: u64,
        field: &'static str,
        what: String,
        severity: Severity,
    ) -> Problem {
        Problem {
            path: self.input.path.clone(),
            cpu: self.input.cpu,
            offset,
            field,
            what,
            severity,
        }
    }

    /// Reads more bytes; `Ok(0)` at the end (or nothing yet).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + (1 << 16), 0);
        loop {
            match self.input.reader.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// The next record of this file.
    fn next_record(&mut self, follow: bool) -> Result<Next, Problem> {
        loop {
            let avail = self.buf.get(self.start..).unwrap_or(&[]);
            let have = avail.len();
            match parse_record(avail, self.endian) {
                Ok((trace, endian, len)) => {
                    let at = self.offset;
                    self.endian = Some(endian);
                    self.start += len;
                    self.offset += len as u64;
                    return Ok(Next::Record(trace, at));
                }
                Err(e) if e.incomplete() => match self.fill() {
                    Ok(0) if follow => return Ok(Next::Wait),
                    Ok(0) if have == 0 => return Ok(Next::End),
                    Ok(0) => {
                        return Err(self.problem(
                            self.offset,
                            e.field(),
                            format!("{e}, at the end of the file"),
                            Severity::Malformed,
                        ))
                    }
                    Ok(_) => continue,
                    Err(io) => {
                        return Err(self.problem(self.offset, "read", io.to_string(), Severity::Io))
                    }
                },
                Err(e) => {
                    return Err(self.problem(
                        self.offset,
                        e.field(),
                        e.to_string(),
                        Severity::Malformed,
                    ))
                }
            }
        }
    }
}

/// Per-CPU blktrace files merged into blkparse's event order (see the
/// module documentation).
pub struct Decoder<R> {
    streams: Vec<Stream<R>>,
    /// blkparse's `ms_head` list: streams with records, by next record time.
    order: Vec<usize>,
    names: HashMap<u32, Vec<u8>>,
    genesis: Option<u64>,
    options: Options,
    problems: VecDeque<Problem>,
    started: bool,
}

impl<R: Read> Decoder<R> {
    /// A decoder over these CPUs' files: of one device, or of several (in
    /// the order blkparse would be given them, each in CPU order).
    pub fn new(inputs: Vec<CpuInput<R>>, options: Options) -> Self {
        let streams = inputs
            .into_iter()
            .map(|input| Stream {
                input,
                buf: Vec::new(),
                start: 0,
                offset: 0,
                endian: None,
                queue: VecDeque::new(),
                state: State::Open,
                idle_since: None,
                warned_cgroup: false,
            })
            .collect();
        Decoder {
            streams,
            order: Vec::new(),
            names: HashMap::new(),
            genesis: None,
            options,
            problems: VecDeque::new(),
            started: false,
        }
    }

    /// The next event or problem; `None` at the end (never in follow mode).
    pub fn next_item(&mut self) -> Option<Item> {
        if !self.started {
            self.started = true;
            if !self.options.follow {
                for s in 0..self.streams.len() {
                    if self.prime(s) > 0 {
                        self.ms_sort(s);
                    }
                }
                self.genesis = self.order.first().and_then(|&s| self.head_time(s));
            }
        }
        loop {
            if let Some(p) = self.problems.pop_front() {
                return Some(Item::Problem(p));
            }
            let next = if self.options.follow {
                match self.follow_pick() {
                    Some(s) => s,
                    None => return Some(Item::Idle),
                }
            } else {
                *self.order.first()?
            };
            let Some((trace, offset)) = self.streams[next].queue.pop_front() else {
                // Not reached: listed streams have records.
                self.order.retain(|&s| s != next);
                continue;
            };
            let event = self.event(next, trace, offset);
            if !self.options.follow {
                self.ms_deq(next);
            }
            if let Some(e) = event {
                return Some(Item::Event(e));
            }
        }
    }

    fn head_time(&self, s: usize) -> Option<u64> {
        self.streams[s].queue.front().map(|(t, _)| t.time)
    }

    /// blkparse's `ms_sort`: inserts a stream by its next record's time.
    fn ms_sort(&mut self, s: usize) {
        let t = self.head_time(s).unwrap_or(u64::MAX);
        let time = |d: &Self, i: usize| d.order.get(i).and_then(|&o| d.head_time(o));
        match time(self, 0) {
            None => self.order.insert(0, s),
            Some(h) if t < h => self.order.insert(0, s),
            Some(_) => {
                let mut k = 0;
                while time(self, k + 1).is_some_and(|n| n < t) {
                    k += 1;
                }
                self.order.insert(k + 1, s);
            }
        }
    }

    /// blkparse's `ms_deq` after printing the head stream's record: read its
    /// next batch if it ran out (dropping it at the end), then move it back
    /// only if its next record is later than the next stream's.
    fn ms_deq(&mut self, s: usize) {
        if self.streams[s].queue.is_empty() && self.prime(s) == 0 {
            self.order.retain(|&o| o != s);
            return;
        }
        if let (Some(&next), Some(t)) = (self.order.get(1), self.head_time(s)) {
            if self.head_time(next).is_some_and(|n| t > n) {
                self.order.remove(0);
                self.ms_sort(s);
            }
        }
    }

    /// Follow mode: the stream whose record is next, if every CPU has one
    /// pending or has been idle for the latency.
    fn follow_pick(&mut self) -> Option<usize> {
        let now = Instant::now();
        let mut best: Option<(u64, usize)> = None;
        let mut waiting = false;
        for s in 0..self.streams.len() {
            if self.streams[s].queue.is_empty() && self.streams[s].state == State::Open {
                self.prime(s);
            }
            let st = &mut self.streams[s];
            match st.queue.front() {
                Some((t, _)) => {
                    st.idle_since = None;
                    if best.is_none_or(|(b, _)| t.time < b) {
                        best = Some((t.time, s));
                    }
                }
                None if st.state == State::Open => {
                    let since = *st.idle_since.get_or_insert(now);
                    waiting |= now.duration_since(since) < self.options.latency;
                }
                None => {}
            }
        }
        if !self.problems.is_empty() {
            return None;
        }
        let (time, s) = best?;
        if waiting {
            return None;
        }
        self.genesis.get_or_insert(time);
        Some(s)
    }

    /// blkparse's `ms_prime`: reads up to a batch of records of stream `s`,
    /// taking in process notifies as it goes; returns the records queued.
    fn prime(&mut self, s: usize) -> usize {
        let follow = self.options.follow;
        let mut counted = 0;
        let mut queued = 0;
        while counted < BATCH && self.streams[s].state == State::Open {
            let st = &mut self.streams[s];
            let (trace, offset) = match st.next_record(follow) {
                Ok(Next::Record(t, o)) => (t, o),
                Ok(Next::Wait) => break,
                Ok(Next::End) => {
                    st.state = State::Ended;
                    break;
                }
                Err(p) => {
                    st.state = State::Ended;
                    self.problems.push_back(p);
                    break;
                }
            };
            counted += 1;
            if trace.cpu != st.input.cpu {
                let what = format!(
                    "{} in a file of cpu {}: skipped, as blkparse does",
                    trace.cpu, st.input.cpu
                );
                let p = st.problem(offset, "cpu", what, Severity::Skipped);
                self.problems.push_back(p);
                continue;
            }
            let action = if self.options.cgroup {
                trace.action & !CGROUP
            } else {
                trace.action
            };
            if trace.action & category::NOTIFY != 0 && action != TN_MESSAGE {
                counted -= 1; // notifies do not count towards the batch
                self.notify(s, &trace, offset);
                continue;
            }
            self.streams[s].queue.push_back((trace, offset));
            queued += 1;
        }
        queued
    }

    /// A notify record other than a message, taken in when read.
    fn notify(&mut self, s: usize, trace: &Trace, offset: u64) {
        let tagged = trace.action & CGROUP != 0;
        let action = trace.action & !if self.options.cgroup { CGROUP } else { 0 };
        if action == TN_PROCESS {
            let pdu = if tagged && self.options.cgroup {
                trace.pdu.get(8..).unwrap_or(&[])
            } else {
                &trace.pdu[..]
            };
            // strncpy into a 16-byte comm whose last byte is then zeroed.
            let pdu = &pdu[..pdu.len().min(15)];
            let name = pdu.split(|&b| b == 0).next().unwrap_or(pdu);
            self.names.entry(trace.pid).or_insert_with(|| name.to_vec());
        } else if trace.action & !CGROUP == TN_MESSAGE && !self.streams[s].warned_cgroup {
            let st = &mut self.streams[s];
            st.warned_cgroup = true;
            let p = st.problem(
                offset,
                "action",
                format!(
                    "{:#x}: a cgroup-tagged message, which blkparse 1.2.0 drops without a word; \
                     so does this output (--json shows them); further ones on this CPU not reported",
                    trace.action
                ),
                Severity::Skipped,
            );
            self.problems.push_back(p);
        }
    }

    /// blkparse's `dump_trace`: the event a record prints as, if any.
    fn event(&mut self, s: usize, trace: Trace, offset: u64) -> Option<Event> {
        let time = trace.time.wrapping_sub(self.genesis.unwrap_or(0));
        // The default action mask: records without category bits print nothing.
        if trace.action & 0xffff_0000 == 0 {
            return None;
        }
        let st = &self.streams[s];
        let cgroup = self.options.cgroup && trace.action & CGROUP != 0;
        let cgroup_id = if cgroup {
            Some(u64_at(&trace.pdu, 0, st.endian.unwrap_or(Endian::Little)))
        } else {
            None
        };
        let action = if cgroup {
            trace.action & !CGROUP
        } else {
            trace.action
        };
        let cpu = st.input.cpu;
        let event = |what, process, trace| Event {
            cpu,
            time,
            what,
            cgroup: cgroup_id,
            process,
            trace,
        };
        let payload = trace.pdu.get(if cgroup { 8 } else { 0 }..).unwrap_or(&[]);
        if action == TN_MESSAGE {
            return (!payload.is_empty()).then(|| event(What::Message, None, trace));
        }
        let pc = action & category::PC != 0;
        let code = action & 0xffff;
        let be64 = |need: &'static str| -> Result<u64, String> {
            payload
                .get(..8)
                .map(|b| u64_at(b, 0, Endian::Big))
                .ok_or_else(|| format!("{} payload bytes, {need}", payload.len()))
        };
        let decoded: Result<Option<Action>, String> = match (pc, code) {
            (_, 1) => Ok(Some(Action::Queue)),
            (false, 2) => Ok(Some(Action::BackMerge)),
            (false, 3) => Ok(Some(Action::FrontMerge)),
            (_, 4) => Ok(Some(Action::GetRq)),
            (_, 5) => Ok(Some(Action::SleepRq)),
            (_, 6) => Ok(Some(Action::Requeue)),
            (_, 7) => Ok(Some(Action::Issue)),
            (_, 8) => Ok(Some(Action::Complete)),
            (false, 9) => Ok(Some(Action::Plug)),
            (false, 10) => {
                be64("an unplug needs 8 (the request count)").map(|n| Some(Action::UnplugIo(n)))
            }
            (false, 11) => {
                be64("an unplug needs 8 (the request count)").map(|n| Some(Action::UnplugTimer(n)))
            }
            (_, 12) => Ok(Some(Action::Insert)),
            (false, 13) => be64("a split needs 8 (the new sector)").map(|n| Some(Action::Split(n))),
            (false, 14) => Ok(Some(Action::Bounce)),
            (false, 15) => match payload.get(..16) {
                Some(r) => Ok(Some(Action::Remap {
                    from_device: u32_at(r, 0, Endian::Big),
                    to_device: u32_at(r, 4, Endian::Big),
                    from_sector: u64_at(r, 8, Endian::Big),
                })),
                None => Err(format!(
                    "{} payload bytes, a remap needs 16 (devices and sector)",
                    payload.len()
                )),
            },
            (false, 17) => Ok(None), // driver data: binary output only
            _ => {
                let what = format!(
                    "{:#x}: action code {:#x} is not one blkparse 1.2.0 prints{} (skipped)",
                    trace.action,
                    code,
                    if code & CGROUP != 0 {
                        " (cgroup-tagged: --json decodes these)"
                    } else if pc {
                        " for a pc request"
                    } else {
                        ""
                    }
                );
                let p = st.problem(offset, "action", what, Severity::Skipped);
                self.problems.push_back(p);
                return None;
            }
        };
        match decoded {
            Ok(Some(a)) => {
                let process = self.names.get(&trace.pid).cloned();
                Some(event(
                    if pc { What::Pc(a) } else { What::Fs(a) },
                    process,
                    trace,
                ))
            }
            Ok(None) => None,
            Err(what) => {
                let p = st.problem(offset, "pdu_len", what, Severity::Malformed);
                self.problems.push_back(p);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: u32 = (8 << 20) | 16;

    fn trace(seq: u32, time: u64, action: u32, cpu: u32) -> Trace {
        Trace {
            magic: MAGIC | u32::from(VERSION),
            sequence: seq,
            time,
            sector: 2048,
            bytes: 4096,
            action,
            pid: 42,
            device: DEV,
            cpu,
            error: 0,
            pdu: Vec::new(),
        }
    }

    const Q: u32 = category::QUEUE | category::WRITE | 1;

    fn name_notify(pid: u32, name: &[u8], cpu: u32) -> Trace {
        let mut comm = name.to_vec();
        comm.resize(16, 0);
        Trace {
            pid,
            action: TN_PROCESS,
            sector: 0,
            bytes: 0,
            sequence: 0,
            pdu: comm,
            ..trace(0, 1, 0, cpu)
        }
    }

    fn file(traces: &[Trace], endian: Endian) -> Vec<u8> {
        traces
            .iter()
            .flat_map(|t| encode_record(t, endian))
            .collect()
    }

    fn decode(files: &[Vec<u8>], options: Options) -> (Vec<Event>, Vec<Problem>) {
        let inputs = files
            .iter()
            .enumerate()
            .map(|(cpu, f)| CpuInput {
                path: PathBuf::from(format!("sdb.blktrace.{cpu}")),
                cpu: cpu as u32,
                reader: &f[..],
            })
            .collect();
        let mut d = Decoder::new(inputs, options);
        let (mut events, mut problems) = (Vec::new(), Vec::new());
        while let Some(item) = d.next_item() {
            match item {
                Item::Event(e) => events.push(e),
                Item::Problem(p) => problems.push(p),
                Item::Idle => break,
            }
        }
        (events, problems)
    }

    fn text(events: &[Event]) -> String {
        let mut out = Vec::new();
        for e in events {
            e.write_blkparse(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_round_trip_in_both_byte_orders() {
        let mut t = trace(7, 123_456_789_012, Q, 3);
        t.pdu = vec![1, 2, 3];
        for e in [Endian::Little, Endian::Big] {
            let bytes = encode_record(&t, e);
            assert_eq!(bytes.len(), HEADER_LEN + 3);
            assert_eq!(
                parse_record(&bytes, None),
                Ok((t.clone(), e, HEADER_LEN + 3))
            );
            assert_eq!(
                parse_record(&bytes, Some(e)),
                Ok((t.clone(), e, HEADER_LEN + 3))
            );
        }
        // The header layout, field by field (blktrace_api.h).
        let b = encode_record(&t, Endian::Little);
        assert_eq!(&b[0..4], &0x6561_7407u32.to_le_bytes());
        assert_eq!(&b[4..8], &7u32.to_le_bytes());
        assert_eq!(&b[8..16], &123_456_789_012u64.to_le_bytes());
        assert_eq!(&b[16..24], &2048u64.to_le_bytes());
        assert_eq!(&b[24..28], &4096u32.to_le_bytes());
        assert_eq!(&b[28..32], &Q.to_le_bytes());
        assert_eq!(&b[32..36], &42u32.to_le_bytes());
        assert_eq!(&b[36..40], &DEV.to_le_bytes());
        assert_eq!(&b[40..44], &3u32.to_le_bytes());
        assert_eq!(&b[44..46], &0u16.to_le_bytes());
        assert_eq!(&b[46..48], &3u16.to_le_bytes());
    }

    #[test]
    fn malformed_records_name_the_field() {
        let t = trace(1, 10, Q, 0);
        let good = encode_record(&t, Endian::Little);

        let r = parse_record(&good[..20], None);
        assert_eq!(r, Err(RecordError::Truncated { have: 20 }));
        assert_eq!(RecordError::Truncated { have: 20 }.field(), "header");
        assert!(RecordError::Truncated { have: 20 }.incomplete());

        let mut bad = good.clone();
        bad[3] = 0x12; // magic's high byte
        let e = parse_record(&bad, None).unwrap_err();
        assert_eq!(e, RecordError::Magic(0x1261_7407));
        assert_eq!(e.field(), "magic");
        assert!(!e.incomplete());
        assert!(e.to_string().contains("0x12617407"), "{e}");

        let mut v8 = good.clone();
        v8[0] = 8;
        let e = parse_record(&v8, None).unwrap_err();
        assert_eq!(e, RecordError::Version(8));
        assert_eq!(e.field(), "magic");
        assert!(e.to_string().contains("version 8"), "{e}");

        let mut long = good.clone();
        long[46..48].copy_from_slice(&100u16.to_le_bytes());
        long.extend_from_slice(&[0; 10]);
        let e = parse_record(&long, None).unwrap_err();
        assert_eq!(
            e,
            RecordError::PduPastEnd {
                pdu_len: 100,
                have: 10
            }
        );
        assert_eq!(e.field(), "pdu_len");
        assert!(e.incomplete());

        // A file that is little-endian does not turn big-endian halfway.
        let big = encode_record(&t, Endian::Big);
        assert!(matches!(
            parse_record(&big, Some(Endian::Little)),
            Err(RecordError::Magic(_))
        ));
    }

    #[test]
    fn a_bad_record_stops_its_cpu_with_a_located_error() {
        let mut cpu0 = file(&[trace(1, 10, Q, 0), trace(2, 30, Q, 0)], Endian::Little);
        let cpu1 = file(&[trace(1, 20, Q, 1), trace(2, 40, Q, 1)], Endian::Little);
        cpu0[HEADER_LEN + 1] ^= 0xff; // second record's magic
        cpu0.extend_from_slice(&encode_record(&trace(3, 50, Q, 0), Endian::Little));
        let (events, problems) = decode(&[cpu0, cpu1], Options::default());
        let seqs: Vec<_> = events.iter().map(|e| (e.cpu, e.trace.sequence)).collect();
        assert_eq!(seqs, [(0, 1), (1, 1), (1, 2)]);
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.cpu, p.offset, p.field), (0, HEADER_LEN as u64, "magic"));
        assert_eq!(p.severity, Severity::Malformed);
        assert!(
            p.to_string()
                .starts_with("sdb.blktrace.0: cpu 0: offset 48: magic: "),
            "{p}"
        );
    }

    #[test]
    fn a_trailing_partial_record_is_an_error_unless_following() {
        for (cut, field) in [(20, "header"), (HEADER_LEN + 2, "pdu_len")] {
            let mut last = trace(2, 20, category::QUEUE | 10, 0);
            last.pdu = 5u64.to_be_bytes().to_vec();
            let mut cpu0 = file(&[trace(1, 10, Q, 0)], Endian::Little);
            let whole = encode_record(&last, Endian::Little);
            cpu0.extend_from_slice(&whole[..cut]);

            let (events, problems) = decode(&[cpu0.clone()], Options::default());
            assert_eq!(events.len(), 1);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(
                (problems[0].offset, problems[0].field),
                (HEADER_LEN as u64, field)
            );
            assert!(
                problems[0].what.contains("end of the file"),
                "{}",
                problems[0]
            );

            // Following, the partial record is waited for, then completed.
            let follow = Options {
                follow: true,
                latency: Duration::ZERO,
                ..Options::default()
            };
            let (events, problems) = decode(&[cpu0], follow.clone());
            assert_eq!((events.len(), problems.len()), (1, 0), "{problems:?}");

            let mut grown = std::io::Cursor::new(Vec::new());
            grown
                .get_mut()
                .extend_from_slice(&file(&[trace(1, 10, Q, 0)], Endian::Little));
            grown.get_mut().extend_from_slice(&whole[..cut]);
            let mut d = Decoder::new(
                vec![CpuInput {
                    path: "trace0".into(),
                    cpu: 0,
                    reader: Growing(std::rc::Rc::new(std::cell::RefCell::new(grown))),
                }],
                follow,
            );
            let Some(Item::Event(_)) = d.next_item() else {
                panic!("first event")
            };
            assert!(matches!(d.next_item(), Some(Item::Idle)));
            d.streams[0]
                .input
                .reader
                .0
                .borrow_mut()
                .get_mut()
                .extend_from_slice(&whole[cut..]);
            match d.next_item() {
                Some(Item::Event(e)) => assert_eq!(e.what, What::Fs(Action::UnplugIo(5))),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A reader whose data grows (a live relay file).
    struct Growing(std::rc::Rc<std::cell::RefCell<std::io::Cursor<Vec<u8>>>>);

    impl Read for Growing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.borrow_mut().read(buf)
        }
    }

    #[test]
    fn short_payloads_are_malformed_not_guessed() {
        let unplug = trace(1, 10, category::QUEUE | 10, 0); // no payload
        let mut remap = trace(2, 20, category::QUEUE | 15, 0);
        remap.pdu = vec![0; 12];
        let mut split = trace(3, 30, category::WRITE | 13, 0);
        split.pdu = vec![0; 7];
        let (events, problems) = decode(
            &[file(
                &[unplug, remap, split, trace(4, 40, Q, 0)],
                Endian::Little,
            )],
            Options::default(),
        );
        assert_eq!(events.len(), 1);
        let got: Vec<_> = problems
            .iter()
            .map(|p| (p.offset, p.field, p.severity))
            .collect();
        assert_eq!(
            got,
            [
                (0, "pdu_len", Severity::Malformed),
                (48, "pdu_len", Severity::Malformed),
                (48 + 60, "pdu_len", Severity::Malformed)
            ]
        );
        assert!(
            problems[1].what.contains("remap needs 16"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn skipped_records_are_warnings() {
        let (events, problems) = decode(
            &[file(
                &[
                    trace(1, 10, category::QUEUE | 16, 0), // abort: unknown to 1.2.0
                    trace(2, 20, Q, 1),                    // wrong cpu
                    trace(3, 30, 1, 0),                    // no category bits
                    trace(4, 40, category::DRV_DATA | 17, 0),
                    trace(5, 50, Q | CGROUP, 0),
                    trace(6, 60, category::PC | 2, 0), // no pc back merge
                ],
                Endian::Little,
            )],
            Options::default(),
        );
        assert!(events.is_empty(), "{events:?}");
        let got: Vec<_> = problems.iter().map(|p| (p.field, p.severity)).collect();
        assert_eq!(
            got,
            [
                ("cpu", Severity::Skipped),
                ("action", Severity::Skipped),
                ("action", Severity::Skipped),
                ("action", Severity::Skipped)
            ]
        );
        assert!(problems[2].what.contains("cgroup"), "{}", problems[2]);
    }

    #[test]
    fn lines_are_blkparse_lines() {
        let mut traces = vec![name_notify(42, b"kworker/0:1", 0)];
        let mut add = |action: u32, f: &dyn Fn(&mut Trace)| {
            let mut t = trace(
                traces.len() as u32,
                1_000_000_000 + traces.len() as u64,
                action,
                0,
            );
            f(&mut t);
            traces.push(t);
        };
        let w = category::WRITE;
        add(category::QUEUE | w | 1, &|_| ());
        add(category::QUEUE | 1, &|t| t.bytes = 0);
        add(category::QUEUE | w | category::SYNC | 2, &|_| ());
        add(
            category::QUEUE | category::READ | category::AHEAD | 3,
            &|_| (),
        );
        add(category::QUEUE | w | 4, &|t| t.pid = 7);
        add(category::QUEUE | w | category::META | 5, &|_| ());
        add(category::REQUEUE | w | 6, &|t| t.error = 0xfffb);
        add(
            category::ISSUE | w | category::FUA | category::FLUSH | 7,
            &|_| (),
        );
        add(category::COMPLETE | w | 8, &|t| t.bytes = 0);
        add(category::QUEUE | 9, &|_| ());
        add(category::QUEUE | 10, &|t| {
            t.pdu = 3u64.to_be_bytes().to_vec()
        });
        add(category::QUEUE | 11, &|t| {
            t.pdu = 1u64.to_be_bytes().to_vec()
        });
        add(category::QUEUE | category::DISCARD | 12, &|_| ());
        add(w | 13, &|t| t.pdu = 2056u64.to_be_bytes().to_vec());
        add(w | 14, &|_| ());
        add(category::QUEUE | w | 15, &|t| {
            t.pdu = [
                ((8u32 << 20) | 17).to_be_bytes().to_vec(),
                DEV.to_be_bytes().to_vec(),
                63u64.to_be_bytes().to_vec(),
            ]
            .concat();
        });
        add(category::PC | category::ISSUE | 7, &|t| {
            t.pdu = vec![0x12, 0, 0]
        });
        add(category::PC | category::COMPLETE | 8, &|t| {
            t.pdu = vec![1, 2, 3]
        });
        add(category::PC | category::QUEUE | 1, &|t| t.pdu = vec![1]);
        add(category::PC | category::REQUEUE | 6, &|t| t.pdu = vec![1]);
        add(TN_MESSAGE, &|t| t.pdu = b"hello\0world".to_vec());
        let (events, problems) = decode(&[file(&traces, Endian::Little)], Options::default());
        assert!(problems.is_empty(), "{problems:?}");
        // (The literal starts with a newline so every line keeps its spaces.)
        let want = "
  8,16   0        1     0.000000000    42  Q   W 2048 + 8 [kworker/0:1]
  8,16   0        2     0.000000001    42  Q   N [kworker/0:1]
  8,16   0        3     0.000000002    42  M  WS 2048 + 8 [kworker/0:1]
  8,16   0        4     0.000000003    42  F  RA 2048 + 8 [kworker/0:1]
  8,16   0        5     0.000000004     7  G   W 2048 + 8 [(null)]
  8,16   0        6     0.000000005    42  S  WM 2048 + 8 [kworker/0:1]
  8,16   0        7     0.000000006    42  R   W 2048 + 8 [65531]
  8,16   0        8     0.000000007    42  D FWF 2048 + 8 [kworker/0:1]
  8,16   0        9     0.000000008    42  C   W 2048 [0]
  8,16   0       10     0.000000009    42  P   R [kworker/0:1]
  8,16   0       11     0.000000010    42  U   R [kworker/0:1] 3
  8,16   0       12     0.000000011    42 UT   R [kworker/0:1] 1
  8,16   0       13     0.000000012    42  I   D 2048 + 8 [kworker/0:1]
  8,16   0       14     0.000000013    42  X   W 2048 / 2056 [kworker/0:1]
  8,16   0       15     0.000000014    42  B   W 2048 + 8 [kworker/0:1]
  8,16   0       16     0.000000015    42  A   W 2048 + 8 <- (8,17) 63
  8,16   0       17     0.000000016    42  D   R 4096 (12 00 ..) [kworker/0:1]
  8,16   0       18     0.000000017    42  C   R (01 02 03) [0]
  8,16   0       19     0.000000018    42  Q   R 4096 [kworker/0:1]
  8,16   0       20     0.000000019    42  R   R [0]
  8,16   0        0     0.000000020     0  m   N hello
";
        assert_eq!(text(&events), &want[1..]);
    }

    #[test]
    fn wide_values_print_as_blkparse_casts_them() {
        let mut t = trace(0x8000_0001, 3_000_000_000_000_000_100, Q, 0);
        t.device = (4095 << 20) | 1_048_575;
        let first = trace(1, 100, Q, 0);
        let early = trace(2, 50, Q, 0); // before genesis: wraps
        let (events, _) = decode(
            &[file(&[first, t, early], Endian::Little)],
            Options::default(),
        );
        let got = text(&events);
        let lines: Vec<_> = got.lines().collect();
        assert_eq!(
            lines[1],
            "4095,1048575  0 -2147483647 -1294967296.000000000    42  Q   W 2048 + 8 [(null)]"
        );
        assert_eq!(
            lines[2],
            "  8,16   0        2 1266874889.709551566    42  Q   W 2048 + 8 [(null)]"
        );
    }

    #[test]
    fn cpus_merge_by_time_with_blkparse_ties() {
        // Equal times: the CPU just printed keeps going while not later.
        let cpu0 = file(
            &[trace(1, 10, Q, 0), trace(2, 20, Q, 0), trace(3, 20, Q, 0)],
            Endian::Little,
        );
        let cpu1 = file(&[trace(1, 10, Q, 1), trace(2, 20, Q, 1)], Endian::Little);
        let cpu2 = file(
            &[trace(1, 5, Q, 2), trace(2, 20, Q, 2), trace(3, 15, Q, 2)],
            Endian::Little,
        );
        let (events, problems) = decode(&[cpu0, cpu1, cpu2], Options::default());
        assert!(problems.is_empty());
        let order: Vec<_> = events.iter().map(|e| (e.cpu, e.trace.sequence)).collect();
        // Setup: [cpu2 (5), cpu0 (10), cpu1 (10)] (cpu1 goes after the head
        // of equal time). After cpu2's 5, its 20 goes behind both 10s; after
        // cpu0's 10, its 20 goes before cpu2's equal 20: [cpu1, cpu0, cpu2].
        // cpu1 keeps the head while its 20 is not later than cpu0's 20; then
        // cpu0 runs out, then cpu2 prints its 20 and its (earlier) 15.
        assert_eq!(
            order,
            [
                (2, 1),
                (0, 1),
                (1, 1),
                (1, 2),
                (0, 2),
                (0, 3),
                (2, 2),
                (2, 3)
            ]
        );
        assert_eq!(events[0].time, 0);
        assert_eq!(events[1].time, 5);
    }

    #[test]
    fn names_come_in_when_read_first_one_wins() {
        // cpu0's whole batch, with its later notify, is read before cpu1's
        // earlier one, and the first name a pid gets stays.
        let cpu0 = file(
            &[
                trace(1, 10, Q, 0),
                name_notify(42, b"second", 0),
                trace(2, 30, Q, 0),
            ],
            Endian::Little,
        );
        let cpu1 = file(
            &[name_notify(42, b"first", 1), trace(1, 20, Q, 1)],
            Endian::Little,
        );
        let (events, _) = decode(&[cpu0, cpu1], Options::default());
        let names: Vec<_> = events.iter().map(|e| e.process.clone()).collect();
        assert_eq!(names, vec![Some(b"second".to_vec()); 3]);

        // A notify more than a batch ahead is not read yet.
        let mut cpu0: Vec<Trace> = (0..BATCH as u32 + 1)
            .map(|i| trace(i + 1, 10 + u64::from(i), Q, 0))
            .collect();
        cpu0[0].pid = 9;
        cpu0[BATCH].pid = 9;
        cpu0.insert(BATCH, name_notify(9, b"late", 0));
        let (events, _) = decode(&[file(&cpu0, Endian::Little)], Options::default());
        assert_eq!(events[0].process, None);
        assert_eq!(events[BATCH].process.as_deref(), Some(&b"late"[..]));
        // Names longer than a comm are cut as strncpy into 16 bytes cuts them.
        let long = Trace {
            pdu: b"0123456789abcdefXYZ".to_vec(),
            ..name_notify(42, b"", 0)
        };
        let (events, _) = decode(
            &[file(&[long, trace(1, 10, Q, 0)], Endian::Little)],
            Options::default(),
        );
        assert_eq!(events[0].process.as_deref(), Some(&b"0123456789abcde"[..]));
    }

    #[test]
    fn big_endian_files_decode_the_same() {
        let mut traces = vec![name_notify(42, b"dd", 0), trace(1, 10, Q, 0)];
        let mut u = trace(2, 20, category::QUEUE | 10, 0);
        u.pdu = 4u64.to_be_bytes().to_vec();
        traces.push(u);
        let (le, _) = decode(&[file(&traces, Endian::Little)], Options::default());
        let (be, _) = decode(&[file(&traces, Endian::Big)], Options::default());
        assert_eq!(text(&le), text(&be));
        assert_eq!(le.len(), 2);
    }

    #[test]
    fn cgroup_records_decode_when_asked() {
        let mut msg = trace(0, 10, TN_MESSAGE | CGROUP, 0);
        msg.pdu = [1u64.to_le_bytes().to_vec(), b"bfq says hi".to_vec()].concat();
        let mut q = trace(1, 20, Q | CGROUP, 0);
        q.pdu = 77u64.to_le_bytes().to_vec();
        let files = [file(&[msg, q], Endian::Little)];

        let (events, problems) = decode(&files, Options::default());
        assert!(events.is_empty());
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].what.contains("cgroup-tagged message"),
            "{}",
            problems[0]
        );

        let cg = Options {
            cgroup: true,
            ..Options::default()
        };
        let (events, problems) = decode(&files, cg);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].cgroup, events[0].message()),
            (Some(1), &b"bfq says hi"[..])
        );
        assert_eq!((events[1].cgroup, events[1].payload()), (Some(77), &[][..]));
        let mut json = Vec::new();
        events[0].write_json(&mut json);
        events[1].write_json(&mut json);
        let json = String::from_utf8(json).unwrap();
        assert_eq!(
            json,
            "{\"kind\":\"message\",\"ts\":0,\"cpu\":0,\"major\":8,\"minor\":16,\"pid\":42,\"action\":\"m\",\"message\":\"bfq says hi\",\"cgroup\":1}\n\
             {\"kind\":\"fs\",\"ts\":10,\"cpu\":0,\"major\":8,\"minor\":16,\"pid\":42,\"sequence\":1,\"action\":\"Q\",\"rwbs\":\"W\",\"sector\":2048,\"bytes\":4096,\"error\":0,\"cgroup\":77,\"process\":null}\n"
        );
    }

    #[test]
    fn json_names_every_field_and_escapes_text() {
        let mut remap = trace(3, 10, category::QUEUE | category::READ | 15, 0);
        remap.pdu = [
            ((8u32 << 20) | 17).to_be_bytes().to_vec(),
            ((253u32 << 20) | 1).to_be_bytes().to_vec(),
            63u64.to_be_bytes().to_vec(),
        ]
        .concat();
        let files = [file(
            &[name_notify(42, b"a\"b\\c\n", 0), remap],
            Endian::Little,
        )];
        let (events, _) = decode(&files, Options::default());
        let mut json = Vec::new();
        events[0].write_json(&mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"kind\":\"fs\",\"ts\":0,\"cpu\":0,\"major\":253,\"minor\":1,\"pid\":42,\"sequence\":3,\"action\":\"A\",\"rwbs\":\"R\",\"sector\":2048,\"bytes\":4096,\"error\":0,\"from_major\":8,\"from_minor\":17,\"from_sector\":63,\"process\":\"a\\\"b\\\\c\\n\"}\n"
        );
    }

    #[test]
    fn follow_mode_waits_for_idle_cpus_then_lets_them_go() {
        let cpu0 = file(&[trace(1, 20, Q, 0)], Endian::Little);
        let cpu1: Vec<u8> = Vec::new();
        let mut d = Decoder::new(
            vec![
                CpuInput {
                    path: "trace0".into(),
                    cpu: 0,
                    reader: &cpu0[..],
                },
                CpuInput {
                    path: "trace1".into(),
                    cpu: 1,
                    reader: &cpu1[..],
                },
            ],
            Options {
                follow: true,
                latency: Duration::from_millis(50),
                ..Options::default()
            },
        );
        assert!(
            matches!(d.next_item(), Some(Item::Idle)),
            "cpu1 holds it back"
        );
        std::thread::sleep(Duration::from_millis(60));
        match d.next_item() {
            Some(Item::Event(e)) => assert_eq!((e.cpu, e.time), (0, 0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.next_item(), Some(Item::Idle)));
    }

    #[test]
    fn pdu_dumps_stop_at_trailing_zeros() {
        assert_eq!(dump_pdu(&[]), None);
        assert_eq!(dump_pdu(&[0]).as_deref(), Some("00 .."));
        assert_eq!(dump_pdu(&[0, 1, 0, 0]).as_deref(), Some("00 01 00 .."));
        assert_eq!(dump_pdu(&[0xab, 0xcd]).as_deref(), Some("ab cd"));
    }
}
