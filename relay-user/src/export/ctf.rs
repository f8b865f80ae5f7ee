//! CTF 1.8 (the Common Trace Format LTTng writes, which babeltrace2 and
//! Trace Compass read): a directory with a TSDL `metadata` file and one
//! binary event stream per CPU (`stream_cpuN`), written as events come.
//! Memory holds one open packet per CPU (at most [`PACKET_BYTES`] each),
//! never the trace.
//!
//! The layout, all little-endian and byte-aligned:
//!
//! - packet header: `magic` (0xC1FC1FC1), `stream_id` (0);
//! - packet context: `timestamp_begin`, `timestamp_end` (the first and last
//!   event's), `content_size` and `packet_size` (in bits, equal: no
//!   padding), `events_discarded` (the CPU's losses so far, a running
//!   count, as CTF wants it), `cpu_id`;
//! - event header: `id` (u16), `timestamp` (u64, the clock's value);
//! - events: `record` (a channel's: `type`, `length`, `payload[length]`),
//!   `lost` (a channel's losses here, by cause), `blk` (a blktrace event:
//!   `action` as blkparse prints it, `rwbs`, `sector`, `bytes`, `sequence`,
//!   `pid`, `process`, `major`, `minor`, `error`, `pdu[pdu_length]`), and
//!   `blk_message` (a blktrace message's text).
//!
//! The clock is the trace's: a channel's header clock, nanoseconds
//! (`freq` 1e9; for `tsc` the values are cycles and the seconds a viewer
//! shows are not time), offset by the channel's realtime anchor when it has
//! one, so that viewers show wall time; blktrace's relative times since
//! blkparse's genesis, offset by the genesis. CTF wants each stream's
//! timestamps in order: an event older than its CPU's previous one (a
//! nested writer's record, a clock that stepped back) is stamped with the
//! previous time instead, and counted ([`CtfTrace::clamped`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use relay_core::reader::Lost;

use crate::blktrace::{self, major, minor, What};

/// A CPU's packet is written out when it holds this many bytes.
pub const PACKET_BYTES: usize = 64 << 10;

const MAGIC: u32 = 0xC1FC_1FC1;
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 8 + 8 + 4;

const RECORD: u16 = 0;
const LOST: u16 = 1;
const BLK: u16 = 2;
const BLK_MESSAGE: u16 = 3;

/// What the trace's clock is.
#[derive(Clone, Debug)]
pub struct ClockInfo {
    /// Its name (a TSDL identifier: letters, digits, `_`).
    pub name: String,
    /// What it is, in words.
    pub description: String,
    /// Nanoseconds to add to a value to get its time in the clock's epoch
    /// (the Unix epoch when a realtime anchor is known).
    pub offset_ns: i128,
}

/// One CPU's open packet and its stream file.
struct CpuStream {
    file: io::BufWriter<File>,
    events: Vec<u8>,
    begin: u64,
    last: u64,
    discarded: u64,
}

/// A CTF trace directory being written.
pub struct CtfTrace {
    dir: PathBuf,
    /// By CPU number (a map: the numbers come from file names and headers,
    /// and need not be dense or small).
    cpus: BTreeMap<u32, CpuStream>,
    clamped: u64,
}

fn tsdl_string(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => format!("\\{c}"),
            c if c.is_control() => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The TSDL metadata: types, the trace, the clock, the stream, the events.
fn metadata(clock: &ClockInfo) -> String {
    let name: String = clock
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("clock_{name}")
    } else {
        name
    };
    let (secs, ns) = (
        clock.offset_ns.div_euclid(1_000_000_000),
        clock.offset_ns.rem_euclid(1_000_000_000),
    );
    format!(
        r#"/* CTF 1.8 */

typealias integer {{ size = 8; align = 8; signed = false; }} := uint8_t;
typealias integer {{ size = 16; align = 8; signed = false; }} := uint16_t;
typealias integer {{ size = 32; align = 8; signed = false; }} := uint32_t;
typealias integer {{ size = 64; align = 8; signed = false; }} := uint64_t;

trace {{
	major = 1;
	minor = 8;
	byte_order = le;
	packet.header := struct {{
		uint32_t magic;
		uint32_t stream_id;
	}};
}};

env {{
	domain = "relay";
	tracer_name = "relay";
}};

clock {{
	name = {name};
	description = "{description}";
	freq = 1000000000;
	offset_s = {secs};
	offset = {ns};
}};

typealias integer {{ size = 64; align = 8; signed = false; map = clock.{name}.value; }} := uint64_clock_t;

stream {{
	id = 0;
	packet.context := struct {{
		uint64_clock_t timestamp_begin;
		uint64_clock_t timestamp_end;
		uint64_t content_size;
		uint64_t packet_size;
		uint64_t events_discarded;
		uint32_t cpu_id;
	}};
	event.header := struct {{
		uint16_t id;
		uint64_clock_t timestamp;
	}};
}};

event {{
	name = "record";
	id = {RECORD};
	stream_id = 0;
	fields := struct {{
		uint16_t type;
		uint32_t length;
		uint8_t payload[length];
	}};
}};

event {{
	name = "lost";
	id = {LOST};
	stream_id = 0;
	fields := struct {{
		uint64_t full;
		uint64_t too_big;
		uint64_t overwrite;
		uint64_t abandoned;
	}};
}};

event {{
	name = "blk";
	id = {BLK};
	stream_id = 0;
	fields := struct {{
		string action;
		string rwbs;
		uint64_t sector;
		uint32_t bytes;
		uint32_t sequence;
		uint32_t pid;
		string process;
		uint32_t major;
		uint32_t minor;
		uint16_t error;
		uint16_t pdu_length;
		uint8_t pdu[pdu_length];
	}};
}};

event {{
	name = "blk_message";
	id = {BLK_MESSAGE};
	stream_id = 0;
	fields := struct {{
		uint32_t major;
		uint32_t minor;
		string message;
	}};
}};
"#,
        description = tsdl_string(&clock.description),
    )
}

/// Appends a CTF string: the bytes up to a NUL, then the NUL.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().copied().take_while(|&b| b != 0));
    out.push(0);
}

impl CtfTrace {
    /// Creates `dir` (empty or new); the metadata is written by
    /// [`finish`](CtfTrace::finish), when the clock is known.
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        if fs::read_dir(dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "not empty (a CTF trace is a directory of its own)",
            ));
        }
        Ok(CtfTrace {
            dir: dir.to_path_buf(),
            cpus: BTreeMap::new(),
            clamped: 0,
        })
    }

    /// Events stamped with their CPU's previous time, being older.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    fn stream(&mut self, cpu: u32) -> io::Result<&mut CpuStream> {
        use std::collections::btree_map::Entry;
        Ok(match self.cpus.entry(cpu) {
            Entry::Occupied(s) => s.into_mut(),
            Entry::Vacant(v) => {
                let file = File::create(self.dir.join(format!("stream_cpu{cpu}")))?;
                v.insert(CpuStream {
                    file: io::BufWriter::with_capacity(PACKET_BYTES + HEADER_LEN, file),
                    events: Vec::with_capacity(PACKET_BYTES),
                    begin: 0,
                    last: 0,
                    discarded: 0,
                })
            }
        })
    }

    /// Starts an event of `cpu` at `ts`; its fields follow in the packet.
    fn event(&mut self, cpu: u32, ts: u64, id: u16) -> io::Result<&mut Vec<u8>> {
        // A packet per CPU per PACKET_BYTES: written when it is full.
        if self
            .cpus
            .get(&cpu)
            .is_some_and(|s| s.events.len() >= PACKET_BYTES)
        {
            self.flush(cpu)?;
        }
        let mut clamped = false;
        let s = self.stream(cpu)?;
        let ts = if s.events.is_empty() {
            let ts = ts.max(s.last);
            s.begin = ts;
            ts
        } else if ts < s.last {
            clamped = true;
            s.last
        } else {
            ts
        };
        s.last = ts;
        s.events.extend_from_slice(&id.to_le_bytes());
        s.events.extend_from_slice(&ts.to_le_bytes());
        if clamped {
            self.clamped += 1;
        }
        self.stream(cpu).map(|s| &mut s.events)
    }

    /// Writes `cpu`'s open packet out.
    fn flush(&mut self, cpu: u32) -> io::Result<()> {
        let Some(s) = self.cpus.get_mut(&cpu) else {
            return Ok(());
        };
        if s.events.is_empty() {
            return Ok(());
        }
        let bits = ((HEADER_LEN + s.events.len()) as u64) * 8;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&s.begin.to_le_bytes());
        header.extend_from_slice(&s.last.to_le_bytes());
        header.extend_from_slice(&bits.to_le_bytes());
        header.extend_from_slice(&bits.to_le_bytes());
        header.extend_from_slice(&s.discarded.to_le_bytes());
        header.extend_from_slice(&cpu.to_le_bytes());
        s.file.write_all(&header)?;
        s.file.write_all(&s.events)?;
        s.events.clear();
        Ok(())
    }

    /// A channel's record.
    pub fn record(&mut self, cpu: u32, ts: u64, rtype: u16, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let out = self.event(cpu, ts, RECORD)?;
        out.extend_from_slice(&rtype.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&payload[..len as usize]);
        Ok(())
    }

    /// A channel's losses on `cpu`, before `ts`.
    pub fn lost(&mut self, cpu: u32, ts: u64, lost: &Lost) -> io::Result<()> {
        let out = self.event(cpu, ts, LOST)?;
        for n in [lost.full, lost.too_big, lost.overwrite, lost.abandoned] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let s = self.stream(cpu)?;
        s.discarded = s.discarded.wrapping_add(lost.total());
        Ok(())
    }

    /// A blktrace event, at its time since genesis.
    pub fn blktrace(&mut self, e: &blktrace::Event) -> io::Result<()> {
        let t = &e.trace;
        let dev = e.device();
        if e.what == What::Message {
            let out = self.event(e.cpu, e.time, BLK_MESSAGE)?;
            out.extend_from_slice(&major(dev).to_le_bytes());
            out.extend_from_slice(&minor(dev).to_le_bytes());
            put_string(out, e.message());
            return Ok(());
        }
        let action = match &e.what {
            What::Fs(a) | What::Pc(a) => a.label(),
            What::Message => "m",
        };
        let rwbs = e.rwbs();
        let pdu = e.payload();
        let pdu = &pdu[..pdu.len().min(usize::from(u16::MAX))];
        let out = self.event(e.cpu, e.time, BLK)?;
        put_string(out, action.as_bytes());
        put_string(out, rwbs.as_bytes());
        out.extend_from_slice(&t.sector.to_le_bytes());
        out.extend_from_slice(&t.bytes.to_le_bytes());
        out.extend_from_slice(&t.sequence.to_le_bytes());
        out.extend_from_slice(&t.pid.to_le_bytes());
        put_string(out, e.process.as_deref().unwrap_or(b""));
        out.extend_from_slice(&major(dev).to_le_bytes());
        out.extend_from_slice(&minor(dev).to_le_bytes());
        out.extend_from_slice(&t.error.to_le_bytes());
        out.extend_from_slice(&(pdu.len() as u16).to_le_bytes());
        out.extend_from_slice(pdu);
        Ok(())
    }

    /// Writes every open packet out, and the metadata with `clock`.
    pub fn finish(mut self, clock: &ClockInfo) -> io::Result<()> {
        let cpus: Vec<u32> = self.cpus.keys().copied().collect();
        for cpu in cpus {
            self.flush(cpu)?;
        }
        for s in self.cpus.values_mut() {
            s.file.flush()?;
        }
        fs::write(self.dir.join("metadata"), metadata(clock))
    }
}
