//! Frames: the byte stream a channel file's `read()` returns.
//!
//! The mapping is the fast way to read a channel; `read()` is the simple one
//! (`cat /dev/relay/NAME | relay cat -`). The kernel module merges every CPU
//! with [`crate::merge`] and writes each event as one frame; relay-user decodes
//! them with [`decode`]. A stream is a byte stream, as from a pipe: a frame may
//! be split across `read()` calls, and a decoder waits for the rest.
//!
//! Every frame is a 24-byte header and a body, padded to 8 bytes:
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! | 0      | 4    | `len`: header + body, before padding                   |
//! | 4      | 2    | `kind`: 0 start, 1 record, 2 lost, 3 corrupt           |
//! | 6      | 2    | `rtype`: the record's type (0 for other kinds)         |
//! | 8      | 4    | `cpu`                                                  |
//! | 12     | 4    | reserved, 0                                            |
//! | 16     | 8    | `ts`: the record's timestamp, or where a loss happened |
//!
//! Bodies: *start* (the first frame of every open file) is the 8 bytes
//! `RELAYSTR` and a `u32` version and a `u32` 0; *record* is the payload;
//! *lost* is eight `u64`: full, too big, overwritten, abandoned, then the
//! CPU's totals reported so far in the same order (this loss included);
//! *corrupt* is the
//! skipped sub-buffer's sequence number (`u64`) and a UTF-8 message.
//! All integers are little-endian.

use crate::format::Record;
use crate::merge::Event;
use crate::reader::Lost;

/// Bytes of a frame header.
pub const FRAME_HEADER_SIZE: usize = 24;
/// The start frame's magic.
pub const STREAM_MAGIC: [u8; 8] = *b"RELAYSTR";
/// The stream format version this code writes and reads.
pub const STREAM_VERSION: u32 = 2;
/// Longest message a corrupt frame carries.
const MESSAGE_MAX: usize = 160;

/// Bytes of a lost frame's body.
const LOST_BODY: usize = 64;

const KIND_START: u16 = 0;
const KIND_RECORD: u16 = 1;
const KIND_LOST: u16 = 2;
const KIND_CORRUPT: u16 = 3;

/// One decoded frame.
///
/// Exhaustive on purpose, as [`crate::merge::Event`]: every frame counts
/// toward the exact accounting, so a new kind must break every reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'b> {
    /// The stream begins (one per open file).
    Start {
        /// The stream format version.
        version: u32,
    },
    /// A record of `cpu`.
    Record {
        /// The CPU that wrote it.
        cpu: u32,
        /// The record.
        record: Record<'b>,
    },
    /// `cpu` lost records here.
    Lost {
        /// The CPU.
        cpu: u32,
        /// How many, by cause.
        lost: Lost,
        /// Where in the stream.
        ts: u64,
        /// The CPU's losses reported so far, this one included.
        total: Lost,
    },
    /// A corrupt sub-buffer of `cpu` was skipped.
    Corrupt {
        /// The CPU.
        cpu: u32,
        /// The sub-buffer's sequence number.
        seq: u64,
        /// What was wrong.
        message: &'b str,
    },
}

impl<'b> Frame<'b> {
    /// The merged-stream event this frame carries: records and losses
    /// (`None` for start and corrupt frames, which carry no
    /// [`crate::ReadError`], only its message).
    pub fn event(&self) -> Option<Event<'b>> {
        match *self {
            Frame::Record { cpu, record } => Some(Event::Record { cpu, record }),
            Frame::Lost {
                cpu,
                lost,
                ts,
                total,
            } => Some(Event::Lost {
                cpu,
                lost,
                ts,
                total,
            }),
            Frame::Start { .. } | Frame::Corrupt { .. } => None,
        }
    }
}

/// Why bytes are not a frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// `len` is shorter than the header, or than the kind's body.
    Length {
        /// The `len` field.
        len: u32,
    },
    /// Unknown `kind`.
    Kind {
        /// The `kind` field.
        kind: u16,
    },
    /// The reserved field is not 0.
    Reserved,
    /// `rtype` is not 0 in a frame that is not a record.
    Type {
        /// The `rtype` field.
        rtype: u16,
    },
    /// A start frame without the magic, or of another version.
    Start,
    /// A corrupt frame whose message is not UTF-8.
    Message,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Length { len } => write!(f, "len: {len} is too short for the frame"),
            FrameError::Kind { kind } => write!(f, "kind: {kind} is not 0..=3"),
            FrameError::Reserved => f.write_str("reserved: must be 0"),
            FrameError::Type { rtype } => {
                write!(f, "rtype: {rtype} must be 0 outside record frames")
            }
            FrameError::Start => write!(
                f,
                "start: not a relay stream (magic RELAYSTR, version {STREAM_VERSION} expected)"
            ),
            FrameError::Message => f.write_str("message: not UTF-8"),
        }
    }
}

fn padded(len: usize) -> usize {
    len.next_multiple_of(8)
}

/// Bytes `event` takes as a frame, padding included.
pub fn encoded_len(event: &Event<'_>) -> usize {
    padded(FRAME_HEADER_SIZE + body_len(event))
}

fn body_len(event: &Event<'_>) -> usize {
    match event {
        Event::Record { record, .. } => record.payload.len(),
        Event::Lost { .. } => LOST_BODY,
        Event::Corrupt { .. } => 8 + MESSAGE_MAX,
    }
}

fn put_header(out: &mut [u8], len: usize, kind: u16, rtype: u16, cpu: u32, ts: u64) {
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4..6].copy_from_slice(&kind.to_le_bytes());
    out[6..8].copy_from_slice(&rtype.to_le_bytes());
    out[8..12].copy_from_slice(&cpu.to_le_bytes());
    out[12..16].fill(0);
    out[16..24].copy_from_slice(&ts.to_le_bytes());
}

/// Writes the start frame into `out`; returns its length, or `None` if
/// `out` is too small.
pub fn encode_start(out: &mut [u8]) -> Option<usize> {
    let len = FRAME_HEADER_SIZE + 16;
    let out = out.get_mut(..len)?;
    put_header(out, len, KIND_START, 0, 0, 0);
    out[24..32].copy_from_slice(&STREAM_MAGIC);
    out[32..36].copy_from_slice(&STREAM_VERSION.to_le_bytes());
    out[36..40].fill(0);
    Some(len)
}

/// A `core::fmt::Write` into a byte slice that truncates (at a char
/// boundary) instead of failing.
struct Truncating<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl core::fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let bytes = c.encode_utf8(&mut tmp).as_bytes();
            let end = self.len + bytes.len();
            let Some(dst) = self.buf.get_mut(self.len..end) else {
                return Ok(());
            };
            dst.copy_from_slice(bytes);
            self.len = end;
        }
        Ok(())
    }
}

/// Writes `event` as one frame into `out`; returns the bytes written
/// (padding included), or `None` if `out` is shorter than
/// [`encoded_len`]`(event)` (a record whose payload does not fit a `u32`
/// length is `None` too).
pub fn encode(event: &Event<'_>, out: &mut [u8]) -> Option<usize> {
    let out = out.get_mut(..encoded_len(event))?;
    let len = match *event {
        Event::Record { cpu, record } => {
            let len = FRAME_HEADER_SIZE.checked_add(record.payload.len())?;
            u32::try_from(len).ok()?;
            put_header(out, len, KIND_RECORD, record.rtype, cpu, record.ts);
            out[FRAME_HEADER_SIZE..len].copy_from_slice(record.payload);
            len
        }
        Event::Lost {
            cpu,
            lost,
            ts,
            total,
        } => {
            let len = FRAME_HEADER_SIZE + LOST_BODY;
            put_header(out, len, KIND_LOST, 0, cpu, ts);
            let words = [
                lost.full,
                lost.too_big,
                lost.overwrite,
                lost.abandoned,
                total.full,
                total.too_big,
                total.overwrite,
                total.abandoned,
            ];
            for (i, w) in words.iter().enumerate() {
                let at = FRAME_HEADER_SIZE + 8 * i;
                out[at..at + 8].copy_from_slice(&w.to_le_bytes());
            }
            len
        }
        Event::Corrupt { cpu, error } => {
            let seq = match error {
                crate::ReadError::Corrupt { seq, .. } | crate::ReadError::Changed { seq, .. } => {
                    seq
                }
                _ => u64::MAX,
            };
            let (head, body) = out.split_at_mut(FRAME_HEADER_SIZE + 8);
            let mut msg = Truncating {
                buf: &mut body[..MESSAGE_MAX],
                len: 0,
            };
            let _ = core::fmt::write(&mut msg, format_args!("{error}"));
            let len = FRAME_HEADER_SIZE + 8 + msg.len;
            put_header(head, len, KIND_CORRUPT, 0, cpu, 0);
            head[24..32].copy_from_slice(&seq.to_le_bytes());
            len
        }
    };
    let end = padded(len);
    out[len..end].fill(0);
    Some(end)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Decodes the frame at the start of `bytes`: the frame and the bytes it
/// took (padding included), `Ok(None)` when `bytes` holds only part of a
/// frame (read more), or what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(head) = bytes.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let len = u32_at(head, 0);
    let kind = u16::from_le_bytes([head[4], head[5]]);
    let rtype = u16::from_le_bytes([head[6], head[7]]);
    let cpu = u32_at(head, 8);
    let ts = u64_at(head, 16);
    if u32_at(head, 12) != 0 {
        return Err(FrameError::Reserved);
    }
    let min_body = match kind {
        KIND_START => 16,
        KIND_RECORD => 0,
        KIND_LOST => LOST_BODY,
        KIND_CORRUPT => 8,
        _ => return Err(FrameError::Kind { kind }),
    };
    if kind != KIND_RECORD && rtype != 0 {
        return Err(FrameError::Type { rtype });
    }
    let total = len as usize;
    if total < FRAME_HEADER_SIZE + min_body {
        return Err(FrameError::Length { len });
    }
    let taken = padded(total);
    if bytes.len() < taken {
        return Ok(None);
    }
    let body = &bytes[FRAME_HEADER_SIZE..total];
    let frame = match kind {
        KIND_START => {
            if body.len() != 16 || body[..8] != STREAM_MAGIC || u32_at(body, 8) != STREAM_VERSION {
                return Err(FrameError::Start);
            }
            Frame::Start {
                version: STREAM_VERSION,
            }
        }
        KIND_RECORD => Frame::Record {
            cpu,
            record: Record {
                ts,
                rtype,
                payload: body,
            },
        },
        KIND_LOST => {
            if body.len() != LOST_BODY {
                return Err(FrameError::Length { len });
            }
            let lost_at = |at| Lost {
                full: u64_at(body, at),
                too_big: u64_at(body, at + 8),
                overwrite: u64_at(body, at + 16),
                abandoned: u64_at(body, at + 24),
            };
            Frame::Lost {
                cpu,
                ts,
                lost: lost_at(0),
                total: lost_at(32),
            }
        }
        _ => Frame::Corrupt {
            cpu,
            seq: u64_at(body, 0),
            message: core::str::from_utf8(&body[8..]).map_err(|_| FrameError::Message)?,
        },
    };
    Ok(Some((frame, taken)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FormatError, Rule};
    use crate::ReadError;

    fn roundtrip(event: Event<'_>, expect: Frame<'_>) {
        let mut buf = [0xAAu8; 512];
        let n = encode(&event, &mut buf).unwrap();
        assert_eq!(n % 8, 0);
        assert!(n <= encoded_len(&event));
        assert_eq!(decode(&buf[..n]).unwrap(), Some((expect, n)));
        // Every strict prefix is "read more", never an error.
        for cut in 0..n {
            assert_eq!(decode(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
        // Too small an output buffer is refused.
        assert_eq!(encode(&event, &mut buf[..encoded_len(&event) - 1]), None);
    }

    #[test]
    fn every_kind_roundtrips() {
        let record = Record {
            ts: 77,
            rtype: 9,
            payload: b"hello",
        };
        roundtrip(
            Event::Record { cpu: 3, record },
            Frame::Record { cpu: 3, record },
        );
        let lost = Lost {
            full: 1,
            too_big: 2,
            overwrite: 3,
            abandoned: 4,
        };
        roundtrip(
            Event::Lost {
                cpu: 1,
                lost,
                ts: 5,
                total: lost.plus(&lost),
            },
            Frame::Lost {
                cpu: 1,
                lost,
                ts: 5,
                total: lost.plus(&lost),
            },
        );
        let error = ReadError::Corrupt {
            seq: 12,
            error: FormatError {
                field: "subbuf.magic",
                offset: 0,
                value: 1,
                rule: Rule::Equals(2),
            },
        };
        let mut buf = [0u8; 256];
        let n = encode(&Event::Corrupt { cpu: 2, error }, &mut buf).unwrap();
        match decode(&buf[..n]).unwrap() {
            Some((
                Frame::Corrupt {
                    cpu: 2,
                    seq: 12,
                    message,
                },
                m,
            )) => {
                assert_eq!(m, n);
                assert!(message.starts_with("sub-buffer 12 skipped"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let n = encode_start(&mut buf).unwrap();
        assert_eq!(
            decode(&buf[..n]).unwrap(),
            Some((
                Frame::Start {
                    version: STREAM_VERSION
                },
                n
            ))
        );
    }

    /// Fuzz finding (fuzz/regressions/frames/nonzero-rtype): a frame that
    /// is not a record carried a type, which the decoder ignored, so the
    /// stream did not re-encode to itself. Such a frame is now an error;
    /// every frame that decodes re-encodes to its own bytes.
    #[test]
    fn regression_nonzero_rtype() {
        let data = include_bytes!("../../fuzz/regressions/frames/nonzero-rtype");
        let mut at = 0;
        let mut errors = 0;
        while at < data.len() {
            match decode(&data[at..]) {
                Ok(Some((frame, n))) => {
                    if let Some(e) = frame.event() {
                        let mut out = [0u8; 512];
                        let m = encode(&e, &mut out).unwrap();
                        let len = u32_at(&data[at..], 0) as usize;
                        assert_eq!(m, n);
                        assert_eq!(out[..len], data[at..at + len]);
                    }
                    at += n;
                }
                Ok(None) => break,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        assert_eq!(errors, 1, "the frame with a type is refused");
    }

    #[test]
    fn bad_frames_name_the_field() {
        let mut buf = [0u8; 64];
        let n = encode_start(&mut buf).unwrap();
        let mut bad = buf;
        bad[24] = b'X';
        assert_eq!(decode(&bad[..n]), Err(FrameError::Start));
        let mut bad = buf;
        bad[4] = 9;
        assert_eq!(decode(&bad[..n]), Err(FrameError::Kind { kind: 9 }));
        let mut bad = buf;
        bad[12] = 1;
        assert_eq!(decode(&bad[..n]), Err(FrameError::Reserved));
        let mut bad = buf;
        bad[6] = 3;
        assert_eq!(decode(&bad[..n]), Err(FrameError::Type { rtype: 3 }));
        let mut bad = buf;
        bad[0] = 8;
        assert_eq!(decode(&bad[..n]), Err(FrameError::Length { len: 8 }));
        // A lost frame with a short body.
        let mut bad = [0u8; 48];
        bad[0] = 40;
        bad[4] = KIND_LOST as u8;
        assert_eq!(decode(&bad), Err(FrameError::Length { len: 40 }));
    }
}
