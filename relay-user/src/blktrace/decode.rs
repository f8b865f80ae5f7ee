//! Per-CPU files merged into blkparse's event order, with process names
//! taken in as blkparse takes them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::event::{Action, Event, What};
use super::record::*;
use super::record::{u32_at, u64_at};
use super::summary::Summary;

/// How bad a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

/// One device's files: what blkparse calls an input (`-i sda`).
#[derive(Debug)]
pub struct Device<R> {
    /// Its name in the summary (`sda` for `sda.blktrace.N`).
    pub name: String,
    /// Its CPUs' files, in CPU order.
    pub cpus: Vec<CpuInput<R>>,
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
#[non_exhaustive]
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
    /// Index of its [`Device`].
    device: usize,
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
    /// Where the records read are saved (`relay blktrace -o`): each
    /// record's bytes as parsed, so a torn one is not saved.
    save: Option<Box<dyn Write + Send>>,
    /// Warnings found while reading (torn records), for the decoder.
    warnings: Vec<Problem>,
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

    /// The next record of this file. `live`: the file is a live relay
    /// file, whose read() can return space a writer reserved and has not
    /// filled yet (relay has no commit): zeros where a record will be.
    /// Those bytes are consumed and the record lost; the zeros are skipped
    /// to the next record's magic, with a warning.
    fn next_record(&mut self, follow: bool, live: bool) -> Result<Next, Problem> {
        loop {
            let avail = self.buf.get(self.start..).unwrap_or(&[]);
            let have = avail.len();
            match parse_record(avail, self.endian) {
                Ok((trace, endian, len)) => {
                    if let Some(out) = self.save.as_mut() {
                        if let Err(e) = out.write_all(&avail[..len]) {
                            let what = format!("saving the record: {e}");
                            return Err(self.problem(self.offset, "save", what, Severity::Io));
                        }
                    }
                    let at = self.offset;
                    self.endian = Some(endian);
                    self.start += len;
                    self.offset += len as u64;
                    return Ok(Next::Record(trace, at));
                }
                Err(_) if live && avail.len() >= 4 && avail[..4] == [0; 4] => {
                    // A torn record: skip to the next magic (or keep the
                    // last 3 bytes, which may begin one).
                    let skip = (1..avail.len())
                        .find(|&k| crate::blktrace::starts_a_record(&avail[k..]))
                        .unwrap_or(avail.len().saturating_sub(3).max(1));
                    let what = format!(
                        "{skip} bytes a writer had reserved but not yet filled when read() \
                         returned them (relay has no commit): a record lost, skipped"
                    );
                    let p = self.problem(self.offset, "magic", what, Severity::Skipped);
                    self.warnings.push(p);
                    self.start += skip;
                    self.offset += skip as u64;
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
    summary: Summary,
    dump: Option<Dump>,
    /// Follow mode, after [`Decoder::drain`]: read to the end, then end.
    draining: bool,
}

/// Where blkparse's `-d` binary dump goes, and its first write error.
struct Dump {
    out: Box<dyn Write + Send>,
    error: Option<io::Error>,
}

impl Dump {
    fn write(&mut self, trace: &Trace, time: u64) {
        if self.error.is_some() {
            return;
        }
        let record = encode_record(
            &Trace {
                time,
                ..trace.clone()
            },
            Endian::NATIVE,
        );
        if let Err(e) = self.out.write_all(&record) {
            self.error = Some(e);
        }
    }
}

impl<R: Read> Decoder<R> {
    /// A decoder over these devices' files (in the order blkparse would be
    /// given them, each in CPU order).
    pub fn new(devices: Vec<Device<R>>, options: Options) -> Self {
        let summary = Summary::new(devices.iter().map(|d| d.name.clone().into_bytes()));
        let streams = devices
            .into_iter()
            .enumerate()
            .flat_map(|(device, d)| d.cpus.into_iter().map(move |input| (device, input)))
            .map(|(device, input)| Stream {
                input,
                device,
                buf: Vec::new(),
                start: 0,
                offset: 0,
                endian: None,
                queue: VecDeque::new(),
                state: State::Open,
                idle_since: None,
                warned_cgroup: false,
                save: None,
                warnings: Vec::new(),
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
            summary,
            dump: None,
            draining: false,
        }
    }

    /// Follow mode: the writers have stopped (the trace was stopped and its
    /// buffers flushed). What the files still hold is read and handed out,
    /// waiting for no idle CPU, and then [`next_item`](Decoder::next_item)
    /// returns `None`. A partial record left at the end is malformed.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Also writes blkparse's `-d` binary dump to `out`, as blkparse does:
    /// every record it counts, in the order it prints them, with times
    /// since genesis, and the notify records as they are read (raw times);
    /// in this machine's byte order, for `btt`. Call [`finish_dump`] at
    /// the end for its errors.
    ///
    /// [`finish_dump`]: Decoder::finish_dump
    pub fn dump_to(&mut self, out: impl Write + Send + 'static) {
        self.dump = Some(Dump {
            out: Box::new(out),
            error: None,
        });
    }

    /// Saves the records of input `index` (in the order given to
    /// [`Decoder::new`], devices' CPUs one after the other) to `out`, each
    /// as read, so that the saved file holds exactly the records decoded
    /// (`relay blktrace -o`). Call [`finish_saves`](Decoder::finish_saves)
    /// at the end.
    pub fn save_to(&mut self, index: usize, out: impl Write + Send + 'static) {
        if let Some(s) = self.streams.get_mut(index) {
            s.save = Some(Box::new(out));
        }
    }

    /// Flushes what [`save_to`](Decoder::save_to) writes; the first error.
    pub fn finish_saves(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for s in &mut self.streams {
            if let Some(out) = s.save.as_mut() {
                if let Err(e) = out.flush() {
                    result = result.and(Err(e));
                }
            }
        }
        result
    }

    /// Flushes the dump; the first error writing it, if any.
    pub fn finish_dump(&mut self) -> io::Result<()> {
        match self.dump.as_mut() {
            None => Ok(()),
            Some(d) => match d.error.take() {
                Some(e) => Err(e),
                None => d.out.flush(),
            },
        }
    }

    /// The inputs back (their readers, to finish whatever they wrap).
    pub fn into_inputs(self) -> Vec<CpuInput<R>> {
        self.streams.into_iter().map(|s| s.input).collect()
    }

    /// blkparse's genesis time: the raw time events are printed relative
    /// to (known once the first event is handed out).
    pub fn genesis(&self) -> Option<u64> {
        self.genesis
    }

    /// The counts behind blkparse's summary, for what was handed out so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
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
                    // A problem found while looking goes out first.
                    None if !self.problems.is_empty() => continue,
                    None if self.draining
                        && self.problems.is_empty()
                        && self
                            .streams
                            .iter()
                            .all(|s| s.state == State::Ended && s.queue.is_empty()) =>
                    {
                        return None
                    }
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
        let follow = self.options.follow && !self.draining;
        let live = self.options.follow;
        let mut counted = 0;
        let mut queued = 0;
        while counted < BATCH && self.streams[s].state == State::Open {
            let st = &mut self.streams[s];
            let next = st.next_record(follow, live);
            self.problems.extend(st.warnings.drain(..));
            let st = &mut self.streams[s];
            let (trace, offset) = match next {
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
                if let Some(d) = self.dump.as_mut() {
                    d.write(&trace, trace.time);
                }
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
        let (device, cpu) = (self.streams[s].device, self.streams[s].input.cpu);
        self.summary.handled(device, cpu, time);
        // The default action mask: records without category bits print nothing.
        if trace.action & 0xffff_0000 == 0 {
            return None;
        }
        let counted = if self.options.cgroup {
            trace.action & !CGROUP
        } else {
            trace.action
        };
        self.summary.counted(device, cpu, &trace, counted, time);
        if let Some(d) = self.dump.as_mut() {
            d.write(&trace, time);
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
