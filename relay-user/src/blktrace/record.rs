//! The `blk_io_trace` record: its layout, both byte orders, and the
//! constants blkparse decodes it with.

use std::fmt;

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

impl Endian {
    /// This machine's byte order.
    #[cfg(target_endian = "little")]
    pub const NATIVE: Endian = Endian::Little;
    /// This machine's byte order.
    #[cfg(target_endian = "big")]
    pub const NATIVE: Endian = Endian::Big;
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

pub(super) fn u16_at(b: &[u8], at: usize, e: Endian) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    match e {
        Endian::Little => u16::from_le_bytes(w),
        Endian::Big => u16::from_be_bytes(w),
    }
}

pub(super) fn u32_at(b: &[u8], at: usize, e: Endian) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    match e {
        Endian::Little => u32::from_le_bytes(w),
        Endian::Big => u32::from_be_bytes(w),
    }
}

pub(super) fn u64_at(b: &[u8], at: usize, e: Endian) -> u64 {
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
