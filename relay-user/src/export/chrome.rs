//! Chrome's trace-event JSON (the "JSON Array/Object Format" that
//! Perfetto's UI and `chrome://tracing` open), written as events come:
//! memory holds only the requests in flight, never the trace.
//!
//! Layout:
//! - each source (a channel, a blktrace device) is a process (`pid`),
//!   named by a `process_name` metadata event;
//! - each CPU is a thread (`tid` = the CPU) of its source, named `cpu N`;
//!   records, losses and blktrace events are instant events (`ph: "i"`,
//!   thread scope) on it;
//! - a blktrace request, from its queue (`Q`) to its completion (`C`), is a
//!   complete event (`ph: "X"`) on a lane of its device (`tid` is
//!   1,000,000 plus the lane, named `requests N`): a lane holds one
//!   request at a time, so a lane's slices never overlap and nest
//!   trivially.
//! - timestamps are microseconds (`ts`, `dur`), written exactly (three
//!   decimals: the nanoseconds).
//!
//! Requests are matched as btt matches them, by device and start sector;
//! a front merge moves the request to its new start sector, a back-merged
//! bio's own queue event is dropped. A request still in flight after
//! [`IN_FLIGHT_LIMIT`] others queued behind it is dropped, so that lost
//! completions cannot make memory grow.

use std::collections::HashMap;
use std::io::{self, Write};

use relay_core::reader::Lost;

use crate::blktrace::{self, Action, What};
use crate::json::push_str;

/// Requests in flight kept per device before the oldest are dropped.
pub const IN_FLIGHT_LIMIT: usize = 1 << 16;

/// The first lane's thread id: above any CPU number a trace has.
pub const LANE_TID: u64 = 1_000_000;

/// A request between its queue event and its completion.
#[derive(Clone, Debug)]
struct InFlight {
    queued: u64,
    sectors: u64,
    lane: usize,
    rwbs: String,
    order: u64,
}

/// One device's requests and lanes.
#[derive(Default)]
struct Lanes {
    in_flight: HashMap<u64, InFlight>,
    busy: Vec<bool>,
    queued: u64,
}

/// A trace-event JSON file being written.
pub struct ChromeTrace<W: Write> {
    out: W,
    first: bool,
    threads: std::collections::HashSet<(u32, u64)>,
    devices: HashMap<(u32, u32), Lanes>,
    line: String,
}

/// Microseconds with the nanoseconds as three decimals.
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

impl<W: Write> ChromeTrace<W> {
    /// Starts the file.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        Ok(ChromeTrace {
            out,
            first: true,
            threads: Default::default(),
            devices: HashMap::new(),
            line: String::new(),
        })
    }

    fn emit(&mut self) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        self.out.write_all(self.line.as_bytes())
    }

    /// Names source `pid` (a process in the viewer).
    pub fn source(&mut self, pid: u32, name: &str) -> io::Result<()> {
        self.line.clear();
        self.line.push_str(&format!(
            "{{\"ph\":\"M\",\"pid\":{pid},\"name\":\"process_name\",\"args\":{{\"name\":"
        ));
        push_str(&mut self.line, name);
        self.line.push_str("}}");
        self.emit()
    }

    fn thread(&mut self, pid: u32, tid: u64) -> io::Result<()> {
        if self.threads.insert((pid, tid)) {
            let name = if tid >= LANE_TID {
                format!("requests {}", tid - LANE_TID)
            } else {
                format!("cpu {tid}")
            };
            self.line.clear();
            self.line.push_str(&format!(
                "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_name\",\"args\":{{\"name\":\"{name}\"}}}}"
            ));
            self.emit()?;
            // Lanes after the CPUs.
            self.line.clear();
            self.line.push_str(&format!(
                "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{tid}}}}}"
            ));
            self.emit()?;
        }
        Ok(())
    }

    /// An instant event on `cpu`'s track; `args` is a JSON object's inside.
    fn instant(&mut self, pid: u32, cpu: u32, ts: u64, name: &str, args: &str) -> io::Result<()> {
        self.thread(pid, cpu.into())?;
        self.line.clear();
        self.line.push_str(&format!(
            "{{\"ph\":\"i\",\"s\":\"t\",\"pid\":{pid},\"tid\":{cpu},\"ts\":{},\"name\":",
            micros(ts)
        ));
        push_str(&mut self.line, name);
        self.line.push_str(",\"args\":{");
        self.line.push_str(args);
        self.line.push_str("}}");
        self.emit()
    }

    /// A channel's record: `type N`, with its length and (up to 64 bytes
    /// of) its payload in hex.
    pub fn record(
        &mut self,
        pid: u32,
        cpu: u32,
        ts: u64,
        rtype: u16,
        payload: &[u8],
    ) -> io::Result<()> {
        let mut args = format!("\"len\":{},\"payload_hex\":\"", payload.len());
        for b in payload.iter().take(64) {
            args.push_str(&format!("{b:02x}"));
        }
        args.push('"');
        if payload.len() > 64 {
            args.push_str(",\"truncated\":true");
        }
        self.instant(pid, cpu, ts, &format!("type {rtype}"), &args)
    }

    /// Records `cpu` lost before `ts`, by cause.
    pub fn lost(&mut self, pid: u32, cpu: u32, ts: u64, lost: &Lost) -> io::Result<()> {
        let args = format!(
            "\"full\":{},\"too_big\":{},\"overwrite\":{},\"abandoned\":{}",
            lost.full, lost.too_big, lost.overwrite, lost.abandoned
        );
        self.instant(pid, cpu, ts, "lost", &args)
    }

    /// A blktrace event of source `pid`: an instant on its CPU's track and,
    /// for a file-system request's completion, the request's slice.
    pub fn blktrace(&mut self, pid: u32, e: &blktrace::Event) -> io::Result<()> {
        let t = &e.trace;
        let name = match &e.what {
            What::Message => "m".to_string(),
            What::Fs(a) | What::Pc(a) => a.label().to_string(),
        };
        let mut args = format!(
            "\"sector\":{},\"bytes\":{},\"rwbs\":\"{}\",\"pid\":{}",
            t.sector,
            t.bytes,
            e.rwbs(),
            t.pid
        );
        if e.what == What::Message {
            args = String::from("\"message\":");
            push_str(&mut args, &String::from_utf8_lossy(e.message()));
        }
        self.instant(pid, e.cpu, e.time, &name, &args)?;
        let What::Fs(action) = &e.what else {
            return Ok(());
        };
        let key = (pid, e.device());
        let sectors = u64::from(t.bytes >> 9);
        let dev = self.devices.entry(key).or_default();
        match action {
            Action::Queue => {
                dev.queued += 1;
                let lane = match dev.busy.iter().position(|b| !b) {
                    Some(l) => l,
                    None => {
                        dev.busy.push(false);
                        dev.busy.len() - 1
                    }
                };
                dev.busy[lane] = true;
                let old = dev.in_flight.insert(
                    t.sector,
                    InFlight {
                        queued: e.time,
                        sectors,
                        lane,
                        rwbs: e.rwbs(),
                        order: dev.queued,
                    },
                );
                if let Some(old) = old {
                    dev.busy[old.lane] = false;
                }
                if dev.in_flight.len() > IN_FLIGHT_LIMIT {
                    // Completions were lost: drop the oldest half.
                    let mut orders: Vec<u64> = dev.in_flight.values().map(|r| r.order).collect();
                    orders.sort_unstable();
                    let cut = orders[orders.len() / 2];
                    let busy = &mut dev.busy;
                    dev.in_flight.retain(|_, r| {
                        let keep = r.order >= cut;
                        if !keep {
                            busy[r.lane] = false;
                        }
                        keep
                    });
                }
            }
            Action::BackMerge => {
                // The bio joined a request queued earlier; its own queue
                // event starts nothing.
                if let Some(r) = dev.in_flight.remove(&t.sector) {
                    dev.busy[r.lane] = false;
                }
            }
            Action::FrontMerge => {
                // The request now starts at this bio's sector.
                if let Some(mut r) = dev.in_flight.remove(&t.sector.wrapping_add(sectors)) {
                    if let Some(own) = dev.in_flight.remove(&t.sector) {
                        dev.busy[own.lane] = false;
                    }
                    r.sectors += sectors;
                    dev.in_flight.insert(t.sector, r);
                }
            }
            Action::Complete => {
                if let Some(r) = dev.in_flight.remove(&t.sector) {
                    dev.busy[r.lane] = false;
                    let tid = LANE_TID + r.lane as u64;
                    self.thread(pid, tid)?;
                    self.line.clear();
                    self.line.push_str(&format!(
                        "{{\"ph\":\"X\",\"pid\":{pid},\"tid\":{tid},\"ts\":{},\"dur\":{},\"name\":\"{} {}+{}\",\"args\":{{\"sector\":{},\"sectors\":{},\"bytes\":{},\"error\":{}}}}}",
                        micros(r.queued),
                        micros(e.time.saturating_sub(r.queued)),
                        r.rwbs,
                        t.sector,
                        r.sectors.max(sectors),
                        t.sector,
                        r.sectors.max(sectors),
                        t.bytes,
                        t.error
                    ));
                    self.emit()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the file; the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}
