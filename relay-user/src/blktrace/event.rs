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
        let (buf, len) = self.rwbs_bytes();
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }

    /// The RWBS column in a buffer (at most 6 letters).
    fn rwbs_bytes(&self) -> ([u8; 6], usize) {
        let a = self.trace.action;
        let (mut buf, mut len) = ([0u8; 6], 0);
        let mut push = |c: u8| {
            buf[len] = c;
            len += 1;
        };
        if a & category::FLUSH != 0 {
            push(b'F');
        }
        push(if a & category::DISCARD != 0 {
            b'D'
        } else if a & category::WRITE != 0 {
            b'W'
        } else if self.trace.bytes != 0 {
            b'R'
        } else {
            b'N'
        });
        for (bit, c) in [
            (category::FUA, b'F'),
            (category::AHEAD, b'A'),
            (category::SYNC, b'S'),
            (category::META, b'M'),
        ] {
            if a & bit != 0 {
                push(c);
            }
        }
        (buf, len)
    }

    /// The event as blkparse prints it (one line, with its newline):
    /// blkparse's `%3d,%-3d %2d %8d %5d.%09lu %5u %2s %3s ` and what
    /// follows for the action, written digit by digit (no `format!`: a
    /// trace has millions of lines).
    pub fn write_blkparse(&self, out: &mut Vec<u8>) {
        let t = &self.trace;
        let secs = (self.time / 1_000_000_000) as i32;
        let nanos = self.time % 1_000_000_000;
        let dev = self.device();
        let (maj, min) = (major(dev) as i32, minor(dev) as i32);
        let (cpu, sequence, pid, label): (i32, i32, u32, &[u8]) = match &self.what {
            What::Message => (t.cpu as i32, 0, 0, b"m"),
            What::Fs(a) | What::Pc(a) => (
                self.cpu as i32,
                t.sequence as i32,
                t.pid,
                a.label().as_bytes(),
            ),
        };
        int(out, maj.into(), 3, Align::Right);
        out.push(b',');
        int(out, min.into(), 3, Align::Left);
        out.push(b' ');
        int(out, cpu.into(), 2, Align::Right);
        out.push(b' ');
        if self.what == What::Message {
            pad(out, b"0", 8);
        } else {
            int(out, sequence.into(), 8, Align::Right);
        }
        out.push(b' ');
        int(out, secs.into(), 5, Align::Right);
        out.push(b'.');
        zeros9(out, nanos);
        out.push(b' ');
        int(out, pid.into(), 5, Align::Right);
        out.push(b' ');
        pad(out, label, 2);
        out.push(b' ');
        if self.what == What::Message {
            pad(out, b"N", 3);
            out.push(b' ');
            out.extend_from_slice(self.message());
            out.push(b'\n');
            return;
        }
        let (rwbs, len) = self.rwbs_bytes();
        pad(out, &rwbs[..len], 3);
        out.push(b' ');
        let (action, pc) = match &self.what {
            What::Fs(a) => (a, false),
            What::Pc(a) => (a, true),
            What::Message => return,
        };
        let name = |out: &mut Vec<u8>| {
            out.push(b'[');
            out.extend_from_slice(self.process.as_deref().unwrap_or(b"(null)"));
            out.push(b']');
        };
        let sectors = t.bytes >> 9;
        let sector_and_len = |out: &mut Vec<u8>| {
            int(out, t.sector.into(), 0, Align::Right);
            out.extend_from_slice(b" + ");
            int(out, sectors.into(), 0, Align::Right);
            out.push(b' ');
        };
        // blkparse passes the payload to its printer only for pc D, I and C.
        let pdu = match action {
            Action::Issue | Action::Insert | Action::Complete
                if pc && !self.payload().is_empty() =>
            {
                Some(self.payload())
            }
            _ => None,
        };
        let write_pdu = |out: &mut Vec<u8>| {
            if let Some(p) = pdu {
                out.push(b'(');
                write_pdu_hex(out, p);
                out.extend_from_slice(b") ");
            }
        };
        match action {
            Action::Requeue | Action::Complete => {
                if pc {
                    write_pdu(out);
                } else if sectors != 0 {
                    sector_and_len(out);
                } else {
                    int(out, t.sector.into(), 0, Align::Right);
                    out.push(b' ');
                }
                out.push(b'[');
                int(out, t.error.into(), 0, Align::Right);
                out.push(b']');
            }
            Action::Issue | Action::Insert | Action::Queue | Action::Bounce => {
                if pc {
                    int(out, t.bytes.into(), 0, Align::Right);
                    out.push(b' ');
                    write_pdu(out);
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
                out.push(b' ');
                int(out, (*n as u32).into(), 0, Align::Right);
            }
            Action::Remap {
                from_device,
                from_sector,
                ..
            } => {
                sector_and_len(out);
                out.extend_from_slice(b"<- (");
                int(out, (major(*from_device) as i32).into(), 0, Align::Right);
                out.push(b',');
                int(out, (minor(*from_device) as i32).into(), 0, Align::Right);
                out.extend_from_slice(b") ");
                int(out, (*from_sector).into(), 0, Align::Right);
            }
            Action::Split(at) => {
                int(out, t.sector.into(), 0, Align::Right);
                out.extend_from_slice(b" / ");
                int(out, (*at as u32).into(), 0, Align::Right);
                out.push(b' ');
                name(out);
            }
        }
        out.push(b'\n');
    }

    /// The event as one JSON object (one line, with its newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let t = &self.trace;
        let dev = self.device();
        let num = |out: &mut Vec<u8>, key: &[u8], v: Int| {
            out.extend_from_slice(key);
            int(out, v, 0, Align::Right);
        };
        // docs/JSON.md: `kind` first (fs, pc or message), `ts` the time.
        out.extend_from_slice(match &self.what {
            What::Message => b"{\"kind\":\"message\"",
            What::Fs(_) => b"{\"kind\":\"fs\"",
            What::Pc(_) => b"{\"kind\":\"pc\"",
        });
        num(out, b",\"ts\":", self.time.into());
        num(out, b",\"cpu\":", self.cpu.into());
        num(out, b",\"major\":", major(dev).into());
        num(out, b",\"minor\":", minor(dev).into());
        num(out, b",\"pid\":", t.pid.into());
        let (action, pc) = match &self.what {
            What::Message => {
                out.extend_from_slice(b",\"action\":\"m\",\"message\":");
                crate::json::push_string(out, self.message());
                if let Some(id) = self.cgroup {
                    num(out, b",\"cgroup\":", id.into());
                }
                out.extend_from_slice(b"}\n");
                return;
            }
            What::Fs(a) => (a, false),
            What::Pc(a) => (a, true),
        };
        num(out, b",\"sequence\":", t.sequence.into());
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(action.label().as_bytes());
        out.extend_from_slice(b"\",\"rwbs\":\"");
        let (rwbs, len) = self.rwbs_bytes();
        out.extend_from_slice(&rwbs[..len]);
        out.push(b'"');
        num(out, b",\"sector\":", t.sector.into());
        num(out, b",\"bytes\":", t.bytes.into());
        num(out, b",\"error\":", t.error.into());
        match action {
            Action::UnplugIo(n) | Action::UnplugTimer(n) => {
                num(out, b",\"requests\":", (*n).into())
            }
            Action::Split(at) => num(out, b",\"split_sector\":", (*at).into()),
            Action::Remap {
                from_device,
                from_sector,
                ..
            } => {
                num(out, b",\"from_major\":", major(*from_device).into());
                num(out, b",\"from_minor\":", minor(*from_device).into());
                num(out, b",\"from_sector\":", (*from_sector).into());
            }
            _ => {}
        }
        if pc {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b",\"pdu_hex\":\"");
            for &b in self.payload() {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            out.push(b'"');
        }
        if let Some(id) = self.cgroup {
            num(out, b",\"cgroup\":", id.into());
        }
        out.extend_from_slice(b",\"process\":");
        match &self.process {
            Some(p) => crate::json::push_string(out, p),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}\n");
    }
}

/// blkparse's `dump_pdu`: hex bytes, stopping with ` ..` at a zero byte
/// after which everything is zero; `None` for an empty payload.
#[cfg(test)]
pub(super) fn dump_pdu(pdu: &[u8]) -> Option<String> {
    if pdu.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(3 * pdu.len());
    write_pdu_hex(&mut out, pdu);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// [`dump_pdu`]'s text, appended; linear in the payload's length (the
/// "everything after is zero" test is one position, found once).
fn write_pdu_hex(out: &mut Vec<u8>, pdu: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let last_nonzero = pdu.iter().rposition(|&b| b != 0);
    for (i, &b) in pdu.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
        if b == 0 && last_nonzero.is_none_or(|l| l < i) {
            out.extend_from_slice(b" ..");
            break;
        }
    }
}

/// How [`int`] pads.
#[derive(Clone, Copy)]
enum Align {
    Right,
    Left,
}

/// A decimal integer padded with spaces to `width` (C's `%Nd`, `%-Nd`):
/// a sign and a 64-bit magnitude, so the digits come from 64-bit division.
fn int(out: &mut Vec<u8>, v: Int, width: usize, align: Align) {
    let (negative, mut m) = match v {
        Int::U(u) => (false, u),
        Int::S(i) => (i < 0, i.unsigned_abs()),
    };
    let mut buf = [0u8; 21];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buf[at] = b'-';
    }
    let digits = &buf[at..];
    let fill = width.saturating_sub(digits.len());
    match align {
        Align::Right => {
            out.resize(out.len() + fill, b' ');
            out.extend_from_slice(digits);
        }
        Align::Left => {
            out.extend_from_slice(digits);
            out.resize(out.len() + fill, b' ');
        }
    }
}

/// An integer for [`int`]: unsigned (`u64`, and what widens to it) or
/// signed (`i64`, and what widens to it).
#[derive(Clone, Copy)]
enum Int {
    U(u64),
    S(i64),
}

impl From<u64> for Int {
    fn from(v: u64) -> Self {
        Int::U(v)
    }
}

impl From<u32> for Int {
    fn from(v: u32) -> Self {
        Int::U(v.into())
    }
}

impl From<u16> for Int {
    fn from(v: u16) -> Self {
        Int::U(v.into())
    }
}

impl From<i32> for Int {
    fn from(v: i32) -> Self {
        Int::S(v.into())
    }
}

/// Text right-aligned to `width` (C's `%Ns`).
fn pad(out: &mut Vec<u8>, text: &[u8], width: usize) {
    out.resize(out.len() + width.saturating_sub(text.len()), b' ');
    out.extend_from_slice(text);
}

/// Nanoseconds as nine digits (`%09lu` of a value below 10^9).
fn zeros9(out: &mut Vec<u8>, nanos: u64) {
    let mut buf = [b'0'; 9];
    let mut m = nanos;
    for d in buf.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&buf);
}
