//! blkparse's end-of-run summary: for each device, each CPU's counts of
//! requests queued, dispatched, requeued, completed and merged (with their
//! sizes), the deepest queue, the unplugs, then a total over the CPUs, the
//! completion throughput and the event count.
//!
//! The text is byte-identical to what blkparse 1.2.0 writes after the
//! events (`show_device_and_cpu_stats`), including its quirks, because
//! scripts read it:
//!
//! - Sizes are kept as KiB plus leftover bytes per record (`bytes >> 10`
//!   and `bytes & 1023`) and printed as `KiB + (bytes >> 10)`; a requeue
//!   subtracts from the dispatched size, wrapping as C's unsigned
//!   arithmetic does if it goes below zero.
//! - A read packet command's queued KiB go to the file-system reads' queued
//!   KiB (blkparse's `__account_pc_queue` adds to `qread_kb`).
//! - Counts above 1,000,000 are divided by 1000 with a suffix (K, M, G, P)
//!   until they are not (`size_cnv`).
//! - Only CPUs that handled a record get a section; the Total section
//!   appears when more than one did; the depth line only in CPU sections,
//!   and it is the device's deepest queue (file-system and packet requests
//!   together), not the CPU's.
//! - Throughput is completed bytes over the time from the first counted
//!   event to the last record handled, in whole milliseconds (0 when under
//!   a millisecond).
//! - "Skips" counts gaps in sequence numbers, which blkparse's file mode
//!   never looks for: it is always 0 there, and here.
//! - blkparse groups digits (`%'`) only when the `en_US` locale is
//!   installed (it calls `setlocale(LC_NUMERIC, "en_US")`); `grouping` says
//!   whether to.

use std::collections::BTreeMap;

use super::record::{category, Trace, TN_MESSAGE};

/// A count with its size, kept as blkparse keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sized {
    count: u64,
    kib: u64,
    bytes: u64,
}

impl Sized {
    fn add(&mut self, bytes: u32) {
        self.count = self.count.wrapping_add(1);
        self.kib = self.kib.wrapping_add(u64::from(bytes >> 10));
        self.bytes = self.bytes.wrapping_add(u64::from(bytes & 1023));
    }

    /// A requeue takes its size back (the count is the requeue's own).
    fn take_back(&mut self, bytes: u32) {
        self.kib = self.kib.wrapping_sub(u64::from(bytes >> 10));
        self.bytes = self.bytes.wrapping_sub(u64::from(bytes & 1023));
    }

    /// The size printed: KiB plus the whole KiB of the leftover bytes.
    fn shown_kib(&self) -> u64 {
        self.kib.wrapping_add(self.bytes >> 10)
    }

    fn sum(&mut self, o: &Sized) {
        self.count = self.count.wrapping_add(o.count);
        self.kib = self.kib.wrapping_add(o.kib);
        self.bytes = self.bytes.wrapping_add(o.bytes);
    }
}

/// blkparse's `struct io_stats`; arrays are indexed [read, write].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IoStats {
    queued: [Sized; 2],
    dispatched: [Sized; 2],
    requeued: [u64; 2],
    completed: [Sized; 2],
    merged: [Sized; 2],
    pc_queued: [Sized; 2],
    pc_dispatched: [Sized; 2],
    pc_requeued: [u64; 2],
    pc_completed: [u64; 2],
    io_unplugs: u64,
    timer_unplugs: u64,
}

impl IoStats {
    fn sum(&mut self, o: &IoStats) {
        for w in 0..2 {
            self.queued[w].sum(&o.queued[w]);
            self.dispatched[w].sum(&o.dispatched[w]);
            self.requeued[w] = self.requeued[w].wrapping_add(o.requeued[w]);
            self.completed[w].sum(&o.completed[w]);
            self.merged[w].sum(&o.merged[w]);
            self.pc_queued[w].sum(&o.pc_queued[w]);
            self.pc_dispatched[w].sum(&o.pc_dispatched[w]);
            self.pc_requeued[w] = self.pc_requeued[w].wrapping_add(o.pc_requeued[w]);
            self.pc_completed[w] = self.pc_completed[w].wrapping_add(o.pc_completed[w]);
        }
        self.io_unplugs = self.io_unplugs.wrapping_add(o.io_unplugs);
        self.timer_unplugs = self.timer_unplugs.wrapping_add(o.timer_unplugs);
    }

    fn has_pc(&self) -> bool {
        (0..2).any(|w| {
            self.pc_queued[w].count != 0
                || self.pc_dispatched[w].count != 0
                || self.pc_requeued[w] != 0
                || self.pc_completed[w] != 0
        })
    }
}

#[derive(Clone, Debug, Default)]
struct CpuStats {
    /// Records handled (blkparse's `nelems`, an `unsigned int`).
    handled: u32,
    io: IoStats,
}

/// One device's (one blkparse input's) counts.
#[derive(Clone, Debug, Default)]
struct DeviceStats {
    name: Vec<u8>,
    cpus: BTreeMap<u32, CpuStats>,
    events: u64,
    first_reported: u64,
    last_reported: u64,
    depth: [u32; 2],
    max_depth: [u32; 2],
    driver_data: bool,
}

/// The counts behind blkparse's summary, filled in by the
/// [`Decoder`](super::Decoder) as it hands out records.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    devices: Vec<DeviceStats>,
}

impl Summary {
    /// A summary of these devices (in blkparse's input order).
    pub(super) fn new(names: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Summary {
            devices: names
                .into_iter()
                .map(|name| DeviceStats {
                    name,
                    ..DeviceStats::default()
                })
                .collect(),
        }
    }

    /// blkparse's `handle`: a record of `cpu` taken from the merge, at
    /// `time` since genesis, whether it prints or not.
    pub(super) fn handled(&mut self, device: usize, cpu: u32, time: u64) {
        let Some(d) = self.devices.get_mut(device) else {
            return;
        };
        let c = d.cpus.entry(cpu).or_default();
        c.handled = c.handled.wrapping_add(1);
        d.last_reported = time;
    }

    /// blkparse's `dump_trace`: a handled record with category bits,
    /// `action` as decoded (cgroup bit removed when decoding those).
    pub(super) fn counted(
        &mut self,
        device: usize,
        cpu: u32,
        trace: &Trace,
        action: u32,
        time: u64,
    ) {
        let Some(d) = self.devices.get_mut(device) else {
            return;
        };
        if action != TN_MESSAGE {
            let w = usize::from(action & category::WRITE != 0);
            let code = action & 0xffff;
            let io = &mut d.cpus.entry(cpu).or_default().io;
            let bytes = trace.bytes;
            let pc = action & category::PC != 0;
            let issue = |d: &mut [u32; 2], max: &mut [u32; 2]| {
                d[w] = d[w].wrapping_add(1);
                max[w] = max[w].max(d[w]);
            };
            let done = |d: &mut [u32; 2]| d[w] = d[w].saturating_sub(1);
            match (pc, code) {
                (true, 1) => {
                    let q = &mut io.pc_queued[w];
                    q.count = q.count.wrapping_add(1);
                    q.bytes = q.bytes.wrapping_add(u64::from(bytes & 1023));
                    // blkparse's __account_pc_queue adds a read's KiB to the
                    // file-system reads' queued KiB.
                    let kib = if w == 0 {
                        &mut io.queued[0].kib
                    } else {
                        &mut io.pc_queued[1].kib
                    };
                    *kib = kib.wrapping_add(u64::from(bytes >> 10));
                }
                (true, 6) => {
                    done(&mut d.depth);
                    io.pc_requeued[w] = io.pc_requeued[w].wrapping_add(1);
                    io.pc_dispatched[w].take_back(bytes);
                }
                (true, 7) => {
                    io.pc_dispatched[w].add(bytes);
                    issue(&mut d.depth, &mut d.max_depth);
                }
                (true, 8) => {
                    done(&mut d.depth);
                    io.pc_completed[w] = io.pc_completed[w].wrapping_add(1);
                }
                (false, 1) => io.queued[w].add(bytes),
                (false, 2 | 3) => io.merged[w].add(bytes),
                (false, 6) => {
                    done(&mut d.depth);
                    io.requeued[w] = io.requeued[w].wrapping_add(1);
                    io.dispatched[w].take_back(bytes);
                }
                (false, 7) => {
                    io.dispatched[w].add(bytes);
                    issue(&mut d.depth, &mut d.max_depth);
                }
                (false, 8) => {
                    done(&mut d.depth);
                    io.completed[w].add(bytes);
                }
                (false, 10) => io.io_unplugs = io.io_unplugs.wrapping_add(1),
                (false, 11) => io.timer_unplugs = io.timer_unplugs.wrapping_add(1),
                (false, 17) => d.driver_data = true,
                _ => {}
            }
        }
        if d.events == 0 {
            d.first_reported = time;
        }
        d.events = d.events.wrapping_add(1);
    }

    /// The events counted on device `device` (blkparse's "Events (dev): N
    /// entries").
    pub fn events(&self, device: usize) -> u64 {
        self.devices.get(device).map_or(0, |d| d.events)
    }

    /// Whether any device had driver-data records, which blkparse leaves
    /// out of its text (it says so after the summary).
    pub fn had_driver_data(&self) -> bool {
        self.devices.iter().any(|d| d.driver_data)
    }

    /// The summary as blkparse prints it after the events.
    pub fn write_blkparse(&self, out: &mut Vec<u8>, grouping: bool) {
        let n = Numbers { grouping };
        for (i, d) in self.devices.iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            // get_dev_name into a 32-byte buffer; the line into 47 bytes.
            let name = &d.name[..d.name.len().min(31)];
            let mut total = IoStats::default();
            let mut sections = 0;
            for (cpu, c) in d.cpus.iter().filter(|(_, c)| c.handled != 0) {
                total.sum(&c.io);
                let mut title = format!("CPU{}", *cpu as i32).into_bytes();
                title.extend_from_slice(b" (");
                title.extend_from_slice(name);
                title.extend_from_slice(b"):");
                title.truncate(46);
                write_io_stats(out, &n, &title, &c.io, Some(d.max_depth));
                sections += 1;
            }
            if sections > 1 {
                out.push(b'\n');
                let mut title = b"Total (".to_vec();
                title.extend_from_slice(name);
                title.extend_from_slice(b"):");
                title.truncate(46);
                write_io_stats(out, &n, &title, &total, None);
            }
            let msec = d.last_reported.wrapping_sub(d.first_reported) / 1_000_000;
            let rate = |s: &Sized| {
                s.kib
                    .wrapping_mul(1000)
                    .wrapping_add(s.bytes)
                    .checked_div(msec)
                    .unwrap_or(0)
            };
            out.extend_from_slice(
                format!(
                    "\nThroughput (R/W): {}KiB/s / {}KiB/s\n",
                    n.num(rate(&total.completed[0])),
                    n.num(rate(&total.completed[1]))
                )
                .as_bytes(),
            );
            out.extend_from_slice(b"Events (");
            out.extend_from_slice(&d.name[..d.name.len().min(47)]);
            out.extend_from_slice(format!("): {} entries\n", n.num(d.events)).as_bytes());
            out.extend_from_slice(b"Skips: 0 forward (0 -   0.0%)\n");
        }
    }
}

/// How numbers print: `%'Lu`, grouped by thousands when asked.
struct Numbers {
    grouping: bool,
}

impl Numbers {
    fn num(&self, v: u64) -> String {
        let digits = v.to_string();
        if !self.grouping {
            return digits;
        }
        let mut s = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                s.push(',');
            }
            s.push(c);
        }
        s
    }

    /// blkparse's `size_cnv`: `%'8Lu` and a suffix, dividing by 1000 while
    /// above a million.
    fn size(&self, mut v: u64, in_kib: bool) -> String {
        const SUFFIX: [&str; 5] = ["", "K", "M", "G", "P"];
        let mut i = usize::from(in_kib);
        while v > 1_000_000 && i < SUFFIX.len() - 1 {
            i += 1;
            v /= 1000;
        }
        format!("{:>8}{}", self.num(v), SUFFIX[i])
    }
}

/// blkparse's `dump_io_stats` (without its per-process lines).
fn write_io_stats(
    out: &mut Vec<u8>,
    n: &Numbers,
    title: &[u8],
    io: &IoStats,
    depth: Option<[u32; 2]>,
) {
    out.extend_from_slice(title);
    out.push(b'\n');
    let pair = |s: &Sized| {
        format!(
            "{}, {}iB",
            n.size(s.count, false),
            n.size(s.shown_kib(), true)
        )
    };
    let mut line = |left: &str, l: String, right: &str, r: String, sep: &str| {
        out.extend_from_slice(format!(" {left}{l}{sep} {right}{r}\n").as_bytes());
    };
    line(
        "Reads Queued:    ",
        pair(&io.queued[0]),
        "Writes Queued:    ",
        pair(&io.queued[1]),
        "\t",
    );
    line(
        "Read Dispatches: ",
        pair(&io.dispatched[0]),
        "Write Dispatches: ",
        pair(&io.dispatched[1]),
        "\t",
    );
    line(
        "Reads Requeued:  ",
        n.size(io.requeued[0], false),
        "Writes Requeued:  ",
        n.size(io.requeued[1], false),
        "\t\t",
    );
    line(
        "Reads Completed: ",
        pair(&io.completed[0]),
        "Writes Completed: ",
        pair(&io.completed[1]),
        "\t",
    );
    line(
        "Read Merges:     ",
        pair(&io.merged[0]),
        "Write Merges:     ",
        pair(&io.merged[1]),
        "\t",
    );
    if let Some(depth) = depth {
        line(
            "Read depth:      ",
            format!("{:>8}{:8}", n.num(depth[0].into()), ' '),
            "Write depth:      ",
            format!("{:>8}", n.num(depth[1].into())),
            "\t",
        );
    }
    if io.has_pc() {
        line(
            "PC Reads Queued: ",
            pair(&io.pc_queued[0]),
            "PC Writes Queued: ",
            pair(&io.pc_queued[1]),
            "\t",
        );
        line(
            "PC Read Disp.:   ",
            pair(&io.pc_dispatched[0]),
            "PC Write Disp.:   ",
            pair(&io.pc_dispatched[1]),
            "\t",
        );
        line(
            "PC Reads Req.:   ",
            n.size(io.pc_requeued[0], false),
            "PC Writes Req.:   ",
            n.size(io.pc_requeued[1], false),
            "\t\t",
        );
        line(
            "PC Reads Compl.: ",
            n.size(io.pc_completed[0], false),
            "PC Writes Compl.: ",
            n.size(io.pc_completed[1], false),
            "\t\t",
        );
    }
    line(
        "IO unplugs:      ",
        format!("{:>8}{:8}", n.num(io.io_unplugs), ' '),
        "Timer unplugs:    ",
        format!("{:>8}", n.num(io.timer_unplugs)),
        "\t",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_size_cnv_does() {
        let n = Numbers { grouping: false };
        assert_eq!(n.size(0, false), "       0");
        assert_eq!(n.size(1_000_000, false), " 1000000");
        assert_eq!(n.size(1_000_001, false), "    1000K");
        assert_eq!(n.size(1_000_001, true), "    1000M");
        assert_eq!(n.size(u64::MAX, false), "18446744P");
        let g = Numbers { grouping: true };
        assert_eq!(g.size(1_000_000, false), "1,000,000");
        assert_eq!(g.size(12_345, true), "  12,345K");
        assert_eq!(g.num(999), "999");
        assert_eq!(g.num(1000), "1,000");
    }
}
