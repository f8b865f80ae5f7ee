//! What a record means (its action) and how blkparse prints it, in text
//! and as one JSON object.

use super::record::{category, major, minor, Trace};

/// What happened to a request (the action code), with what blkparse
/// decodes from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// The cgroup id, for cgroup-tagged records (with [`Options::cgroup`](super::Options::cgroup)).
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
pub(super) fn dump_pdu(pdu: &[u8]) -> Option<String> {
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
