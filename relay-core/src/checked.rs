//! Checked payloads: test records that prove themselves, and the verifier
//! that checks a merged stream of them.
//!
//! The kernel module's load generator, `relay demo` and the self-tests write
//! these payloads; `relay verify` and the tests read them back. A payload
//! carries its writer's CPU, a *source* (task, interrupt, NMI: each numbers
//! its records from 0 on its own) and a sequence number, guarded by a
//! checksum over every other byte. Every attempt takes a sequence number,
//! refused ones included, so a gap in a source's numbers is exactly the
//! records lost there, and the verifier can hold the stream to the
//! channel's loss accounting:
//!
//! - each payload is intact (length, CPU, checksum);
//! - each source's numbers strictly increase;
//! - on a CPU whose records all come from one source, at every record:
//!   `seq = base + delivered + lost reported so far` in no-overwrite mode
//!   (losses are reported in place), `>=` in overwrite mode (a loss racing
//!   a read may be reported one sub-buffer late, never early). Losses are
//!   counted per CPU, not per source, so this is judged at the end
//!   ([`Verifier::finish`]), once it is known that no other source came;
//! - at the end, per CPU, whatever its sources: the gaps in all sources'
//!   numbers do not exceed the losses reported (each gap is a lost record),
//!   and every attempt is delivered or reported lost.
//!
//! Layout (little-endian), `len >= 32`:
//!
//! | offset | size | field                                                     |
//! |-------:|-----:|-----------------------------------------------------------|
//! | 0      | 8    | `seq`                                                     |
//! | 8      | 4    | `cpu`                                                     |
//! | 12     | 4    | `len`: the payload's length                               |
//! | 16     | 4    | `source`: 0 task, 1 hard IRQ, 2 NMI, 3 other, 4 BPF task, 5 BPF NMI, 6, 7 |
//! | 20     | 4    | 0                                                         |
//! | 24     | 8    | FNV-1a over bytes `0..24` and `32..len`                   |
//! | 32     | ...  | filler: byte `i` is `seq as u8 ^ i as u8`                 |

use crate::merge::Event;
use crate::policy::Mode;
use crate::reader::Lost;

/// Bytes before the filler; the shortest checked payload.
pub const MIN_LEN: usize = 32;
/// Sources a CPU can have.
pub const SOURCES: usize = 8;

/// What a checked payload says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The sequence number within (cpu, source).
    pub seq: u64,
    /// The writer's CPU.
    pub cpu: u32,
    /// The writer's source.
    pub source: u32,
}

/// Why a payload is not a valid checked payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckError {
    /// Shorter than [`MIN_LEN`].
    TooShort,
    /// The `len` field differs from the payload's length.
    Length,
    /// `source` is not below [`SOURCES`], or the reserved word is not 0.
    Source,
    /// The checksum does not match.
    Checksum,
}

impl core::fmt::Display for CheckError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CheckError::TooShort => "payload: shorter than 32 bytes",
            CheckError::Length => "len: differs from the payload's length",
            CheckError::Source => "source: not 0..=7 (or reserved not 0)",
            CheckError::Checksum => "checksum: does not match the payload",
        })
    }
}

/// FNV-1a, 64 bits, continued from `h`.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn checksum(payload: &[u8]) -> u64 {
    fnv(fnv(FNV_OFFSET, &payload[..24]), &payload[MIN_LEN..])
}

/// Fills all of `buf` with the checked payload `seq` of (`cpu`, `source`).
/// Returns `false` (and writes nothing) if `buf` is shorter than
/// [`MIN_LEN`], longer than `u32::MAX`, or `source` is not below
/// [`SOURCES`].
pub fn fill(buf: &mut [u8], cpu: u32, source: u32, seq: u64) -> bool {
    let Ok(len) = u32::try_from(buf.len()) else {
        return false;
    };
    if buf.len() < MIN_LEN || source as usize >= SOURCES {
        return false;
    }
    buf[0..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&cpu.to_le_bytes());
    buf[12..16].copy_from_slice(&len.to_le_bytes());
    buf[16..20].copy_from_slice(&source.to_le_bytes());
    buf[20..24].fill(0);
    for (i, b) in buf[MIN_LEN..].iter_mut().enumerate() {
        *b = (seq as u8) ^ (i as u8);
    }
    let sum = checksum(buf);
    buf[24..32].copy_from_slice(&sum.to_le_bytes());
    true
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Checks a payload; returns what it says about itself.
pub fn check(payload: &[u8]) -> Result<Checked, CheckError> {
    if payload.len() < MIN_LEN {
        return Err(CheckError::TooShort);
    }
    let cpu_len = word(payload, 8);
    if (cpu_len >> 32) != payload.len() as u64 {
        return Err(CheckError::Length);
    }
    let source = word(payload, 16);
    if source >= SOURCES as u64 {
        return Err(CheckError::Source);
    }
    if word(payload, 24) != checksum(payload) {
        return Err(CheckError::Checksum);
    }
    Ok(Checked {
        seq: word(payload, 0),
        cpu: cpu_len as u32,
        source: source as u32,
    })
}

/// What the verifier saw of one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTally {
    /// Per source: the next sequence number expected (0 if none seen).
    pub next: [u64; SOURCES],
    /// Sources seen, as bits.
    pub sources: u8,
    /// Records consumed before this stream began (resumed streams): the
    /// first record's sequence number less the losses reported before it.
    pub base: u64,
    /// Records delivered (intact or not).
    pub delivered: u64,
    /// Losses reported in the stream.
    pub lost: Lost,
    /// Records that failed a check.
    pub bad: u64,
    /// Records that broke the one-source accounting, to be judged at the
    /// end (see [`Verifier::finish`]).
    pub suspects: u64,
    /// The first suspect: (expected, found).
    pub suspect: Option<(u64, u64)>,
    /// Sequence numbers missing between delivered records, summed over all
    /// sources (and, unless resumed, before each source's first record):
    /// every one is a lost record, so by the end of the stream they can
    /// never exceed the losses reported ([`Verifier::finish`]).
    pub gaps: u64,
}

impl CpuTally {
    /// Whether every one of `attempts` writes is accounted for: delivered,
    /// reported lost, or consumed before the stream began.
    pub fn balanced(&self, attempts: u64) -> bool {
        self.base
            .checked_add(self.delivered)
            .and_then(|n| n.checked_add(self.lost.total()))
            == Some(attempts)
    }
}

/// The first thing the verifier found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The CPU.
    pub cpu: u32,
    /// What was wrong.
    pub what: &'static str,
    /// The value expected (0 where there is none).
    pub expected: u64,
    /// The value found.
    pub found: u64,
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cpu {}: {} (expected {}, found {})",
            self.cpu, self.what, self.expected, self.found
        )
    }
}

/// Checks a merged stream of checked payloads, event by event.
#[derive(Debug)]
pub struct Verifier<'t> {
    cpus: &'t mut [CpuTally],
    mode: Mode,
    resume: bool,
    last_ts: u64,
    /// Records delivered with a timestamp older than an earlier record's.
    pub late: u64,
    /// Checks that failed.
    pub failures: u64,
    /// The first failure.
    pub first_failure: Option<Mismatch>,
}

impl<'t> Verifier<'t> {
    /// A verifier with one tally per CPU (`cpus[n]` for CPU `n`). `resume`:
    /// the stream may begin after records an earlier reader consumed.
    pub fn new(cpus: &'t mut [CpuTally], mode: Mode, resume: bool) -> Self {
        cpus.fill(CpuTally::default());
        Verifier {
            cpus,
            mode,
            resume,
            last_ts: 0,
            late: 0,
            failures: 0,
            first_failure: None,
        }
    }

    /// The tallies.
    pub fn tallies(&self) -> &[CpuTally] {
        self.cpus
    }

    fn fail(&mut self, cpu: u32, what: &'static str, expected: u64, found: u64) {
        self.failures += 1;
        self.first_failure.get_or_insert(Mismatch {
            cpu,
            what,
            expected,
            found,
        });
    }

    /// Checks one event of the stream.
    pub fn see(&mut self, event: &Event<'_>) {
        match *event {
            Event::Record { cpu, record } => {
                if record.ts < self.last_ts {
                    self.late += 1;
                }
                self.last_ts = self.last_ts.max(record.ts);
                self.record(cpu, record.payload);
            }
            Event::Lost { cpu, lost, .. } => match self.cpus.get_mut(cpu as usize) {
                Some(t) => {
                    t.lost.full = t.lost.full.wrapping_add(lost.full);
                    t.lost.too_big = t.lost.too_big.wrapping_add(lost.too_big);
                    t.lost.overwrite = t.lost.overwrite.wrapping_add(lost.overwrite);
                    t.lost.abandoned = t.lost.abandoned.wrapping_add(lost.abandoned);
                }
                None => self.fail(cpu, "lost event of an unknown CPU", 0, u64::from(cpu)),
            },
            Event::Corrupt { cpu, .. } => self.fail(cpu, "corrupt sub-buffer", 0, 1),
        }
    }

    fn record(&mut self, cpu: u32, payload: &[u8]) {
        let (mode, resume) = (self.mode, self.resume);
        let Some(t) = self.cpus.get_mut(cpu as usize) else {
            return self.fail(cpu, "record of an unknown CPU", 0, u64::from(cpu));
        };
        t.delivered = t.delivered.wrapping_add(1);
        let c = match check(payload) {
            Ok(c) if c.cpu == cpu => c,
            Ok(c) => {
                t.bad += 1;
                return self.fail(
                    cpu,
                    "payload written by another CPU",
                    cpu.into(),
                    c.cpu.into(),
                );
            }
            Err(e) => {
                t.bad += 1;
                let what = match e {
                    CheckError::TooShort => "payload shorter than 32 bytes",
                    CheckError::Length => "payload length field",
                    CheckError::Source => "payload source field",
                    CheckError::Checksum => "payload checksum",
                };
                return self.fail(cpu, what, 0, payload.len() as u64);
            }
        };
        let s = c.source as usize;
        let bit = 1u8 << s;
        let first_ever = t.sources == 0;
        let first_of_source = t.sources & bit == 0;
        if first_ever && resume {
            // Whatever came before this record (less the losses reported
            // before it) was consumed by an earlier reader.
            t.base = c.seq.saturating_sub(t.lost.total());
            t.next[s] = c.seq;
        }
        t.sources |= bit;
        if c.seq < t.next[s] {
            t.bad += 1;
            let expected = t.next[s];
            return self.fail(cpu, "sequence number went back", expected, c.seq);
        }
        let from = match (first_of_source, resume) {
            // Resumed: what came before a source's first record here was
            // an earlier reader's.
            (true, true) => c.seq,
            (true, false) => 0,
            (false, _) => t.next[s],
        };
        t.gaps = t.gaps.wrapping_add(c.seq - from);
        t.next[s] = c.seq.wrapping_add(1);
        if t.sources.count_ones() == 1 {
            // One source so far: its numbers are the stream's accounting.
            // A miss is only a suspect until the end: losses are reported
            // per CPU, and a source not seen yet may have lost records.
            let accounted = t
                .base
                .wrapping_add(t.delivered - 1)
                .wrapping_add(t.lost.total());
            let ok = match mode {
                Mode::NoOverwrite => c.seq == accounted,
                Mode::Overwrite => c.seq >= accounted,
            };
            if !ok {
                t.suspects += 1;
                t.suspect.get_or_insert((accounted, c.seq));
            }
        } else if t.suspects != 0 {
            // A second source: the misses may be its losses.
            t.suspects = 0;
            t.suspect = None;
        }
    }

    /// Ends the stream: on every CPU where only one source's records came,
    /// a record whose number the losses reported before it do not explain
    /// is a failure ("records missing without a loss report"). Call it
    /// once, after the last event. (A CPU whose other sources lost every
    /// record they wrote is judged by the one-source rule too.) On every
    /// CPU, whatever its sources, the gaps in their sequence numbers must
    /// not exceed the losses reported ("sequence gaps exceed the losses
    /// reported").
    pub fn finish(&mut self) {
        for cpu in 0..self.cpus.len() {
            let Some(t) = self.cpus.get_mut(cpu) else {
                break;
            };
            let (gaps, reported) = (t.gaps, t.lost.total());
            let n = t.suspects;
            if let Some((expected, found)) = t.suspect.take() {
                t.suspects = 0;
                t.bad += n;
                self.failures += n - 1;
                self.fail(
                    cpu as u32,
                    "records missing without a loss report",
                    expected,
                    found,
                );
            } else if t.bad == 0 && gaps > reported {
                // (A CPU that failed otherwise has already said so.)
                t.bad += 1;
                self.fail(
                    cpu as u32,
                    "sequence gaps (all sources) exceed the losses reported",
                    reported,
                    gaps,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Record;

    fn rec(cpu: u32, source: u32, seq: u64, ts: u64, buf: &mut [u8]) -> Event<'_> {
        assert!(fill(buf, cpu, source, seq));
        Event::Record {
            cpu,
            record: Record {
                ts,
                rtype: 1,
                payload: buf,
            },
        }
    }

    #[test]
    fn fill_and_check() {
        let mut buf = [0u8; 64];
        assert!(fill(&mut buf, 3, 1, 99));
        assert_eq!(
            check(&buf),
            Ok(Checked {
                seq: 99,
                cpu: 3,
                source: 1
            })
        );
        assert!(!fill(&mut buf[..31], 0, 0, 0));
        assert!(!fill(&mut buf, 0, 8, 0));
        assert_eq!(check(&buf[..31]), Err(CheckError::TooShort));
        assert_eq!(check(&buf[..40]), Err(CheckError::Length));
        for i in 0..64 {
            let mut bad = buf;
            bad[i] ^= 0x10;
            assert!(check(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn gaps_must_be_reported_in_place() {
        let mut tallies = [CpuTally::default(); 2];
        let mut v = Verifier::new(&mut tallies, Mode::NoOverwrite, false);
        let mut b = [0u8; 40];
        v.see(&rec(1, 0, 0, 1, &mut b));
        v.see(&Event::Lost {
            cpu: 1,
            lost: Lost {
                full: 2,
                ..Lost::default()
            },
            ts: 2,
            total: Lost::default(),
        });
        v.see(&rec(1, 0, 3, 2, &mut b));
        assert_eq!(v.failures, 0);
        v.see(&rec(1, 0, 5, 3, &mut b)); // 4 is missing, no report
        v.see(&rec(1, 0, 5, 1, &mut b)); // repeated, and late
        assert_eq!(v.failures, 1, "the repeat fails at once");
        assert_eq!(v.late, 1);
        v.finish();
        assert_eq!(v.failures, 2, "the gap, at the end");
        assert!(tallies[1].balanced(6));
    }

    #[test]
    fn overwrite_losses_may_be_reported_late_never_early() {
        let mut tallies = [CpuTally::default(); 1];
        let mut v = Verifier::new(&mut tallies, Mode::Overwrite, false);
        let mut b = [0u8; 32];
        v.see(&rec(0, 0, 10, 1, &mut b));
        assert_eq!(v.failures, 0);
        let lost = Lost {
            overwrite: 20,
            ..Lost::default()
        };
        v.see(&Event::Lost {
            cpu: 0,
            lost,
            ts: 2,
            total: Lost::default(),
        });
        v.see(&rec(0, 0, 11, 2, &mut b));
        v.finish();
        assert_eq!(v.failures, 1, "reported early");
    }

    #[test]
    fn resumed_streams_start_anywhere() {
        let mut tallies = [CpuTally::default(); 1];
        let mut v = Verifier::new(&mut tallies, Mode::NoOverwrite, true);
        let mut b = [0u8; 32];
        v.see(&rec(0, 0, 500, 1, &mut b));
        v.see(&rec(0, 0, 501, 2, &mut b));
        assert_eq!(v.failures, 0);
        assert_eq!(tallies[0].base, 500);
        assert!(tallies[0].balanced(502));
    }

    /// Losses are per CPU: a loss of a source not seen yet is not a gap
    /// in the first source's numbers (found by the guest's nested test).
    #[test]
    fn another_sources_loss_is_not_a_gap() {
        let mut tallies = [CpuTally::default(); 1];
        let mut v = Verifier::new(&mut tallies, Mode::Overwrite, false);
        let mut b = [0u8; 32];
        let lost = Lost {
            full: 1,
            ..Lost::default()
        };
        v.see(&Event::Lost {
            cpu: 0,
            lost,
            ts: 1,
            total: Lost::default(),
        }); // source 2's record 0
        v.see(&rec(0, 0, 0, 2, &mut b));
        v.see(&rec(0, 0, 1, 3, &mut b));
        v.see(&rec(0, 2, 1, 4, &mut b));
        v.finish();
        assert_eq!(v.failures, 0);
        assert!(tallies[0].balanced(4));
    }

    /// With two sources on a CPU the one-source rule does not apply; a gap
    /// in either's numbers still needs a loss report by the end.
    #[test]
    fn a_gap_with_two_sources_needs_a_loss_report() {
        for reported in [0, 1] {
            let mut tallies = [CpuTally::default(); 1];
            let mut v = Verifier::new(&mut tallies, Mode::NoOverwrite, false);
            let mut b = [0u8; 32];
            v.see(&rec(0, 0, 0, 1, &mut b));
            v.see(&rec(0, 1, 0, 2, &mut b));
            v.see(&rec(0, 0, 1, 3, &mut b));
            if reported == 1 {
                let lost = Lost {
                    full: 1,
                    ..Lost::default()
                };
                v.see(&Event::Lost {
                    cpu: 0,
                    lost,
                    ts: 4,
                    total: Lost::default(),
                });
            }
            v.see(&rec(0, 1, 2, 4, &mut b)); // source 1 lost its record 1
            v.finish();
            assert_eq!(v.failures, 1 - reported, "reported={reported}");
            if reported == 0 {
                let m = v.first_failure.unwrap();
                assert_eq!(
                    format!("{m}"),
                    "cpu 0: sequence gaps (all sources) exceed the losses reported (expected 0, found 1)"
                );
            }
        }
    }

    #[test]
    fn several_sources_are_numbered_apart() {
        let mut tallies = [CpuTally::default(); 1];
        let mut v = Verifier::new(&mut tallies, Mode::NoOverwrite, false);
        let mut b = [0u8; 32];
        v.see(&rec(0, 0, 0, 1, &mut b));
        v.see(&rec(0, 1, 0, 2, &mut b));
        v.see(&rec(0, 0, 1, 3, &mut b));
        v.see(&rec(0, 1, 1, 4, &mut b));
        assert_eq!(v.failures, 0);
        v.see(&rec(0, 1, 1, 5, &mut b));
        assert_eq!(v.failures, 1);
    }
}
