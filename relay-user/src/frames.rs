//! Frame streams: what a channel file's `read()` returns (relay-core's
//! [`relay_core::frames`]), decoded from any byte source: a pipe
//! (`cat /dev/relay/x | relay cat -`) or the channel file itself.
//!
//! A stream is a byte stream: a frame may be split across reads, so the
//! reader buffers until a frame is whole. Errors give the stream offset of
//! the frame and name the field.

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_core::frames::{decode, Frame, FrameError, FRAME_HEADER_SIZE};

use crate::error::{io, Error};

/// The longest frame accepted: a record filling a 1 GiB sub-buffer.
const MAX_FRAME: usize = (1 << 30) + FRAME_HEADER_SIZE + 8;
/// The first read buffer.
const INITIAL: usize = 1 << 16;

/// Decodes frames from `R`.
#[derive(Debug)]
pub struct FrameReader<R> {
    src: R,
    path: PathBuf,
    buf: Vec<u8>,
    /// `buf[start..end]`: read, not yet decoded.
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    frames: u64,
}

/// How [`FrameReader::for_each`] treats "nothing to read" (`read()`
/// returning 0).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Until {
    /// The end of the stream (a pipe at EOF, a non-follow read).
    Eof,
    /// Wait with poll(2) up to this long, read again; go on forever.
    Follow(Duration),
    /// As `Follow(latency)`, but end once no byte came for `idle`.
    Idle {
        /// The poll timeout.
        latency: Duration,
        /// How long without a byte ends the stream.
        idle: Duration,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl<R: Read> FrameReader<R> {
    /// A reader of the frames `src` yields; `path` names it in errors.
    pub fn new(src: R, path: impl Into<PathBuf>) -> Self {
        FrameReader {
            src,
            path: path.into(),
            buf: vec![0; INITIAL],
            start: 0,
            end: 0,
            offset: 0,
            frames: 0,
        }
    }

    /// The source.
    pub fn get_ref(&self) -> &R {
        &self.src
    }

    /// The source's name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes decoded so far (the offset of the next frame).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn error(&self, what: String) -> Error {
        Error::Frame {
            path: self.path.clone(),
            offset: self.offset,
            what,
        }
    }

    /// `len` of the buffered frame, once its header is in.
    fn pending_len(&self) -> Option<usize> {
        let head = self.buf.get(self.start..self.end)?;
        (head.len() >= FRAME_HEADER_SIZE).then(|| u32_at(head, 0) as usize)
    }

    /// The next whole frame already read, `Ok(None)` if more bytes are
    /// needed ([`Self::fill`]). The first frame must be the start frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, Error> {
        if self.pending_len().is_some_and(|len| len > MAX_FRAME) {
            let len = self.pending_len().unwrap_or(0);
            return Err(self.error(format!(
                "len: {len} is longer than any frame (at most {MAX_FRAME} bytes)"
            )));
        }
        let bytes = &self.buf[self.start..self.end];
        match decode(bytes) {
            Ok(Some((frame, n))) => {
                if self.frames == 0 && !matches!(frame, Frame::Start { .. }) {
                    return Err(Error::Frame {
                        path: self.path.clone(),
                        offset: self.offset,
                        what: format!("{} (the first frame is not one)", FrameError::Start),
                    });
                }
                self.frames += 1;
                self.start += n;
                self.offset += n as u64;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.error(e.to_string())),
        }
    }

    /// Reads more bytes: how many (0: nothing now, or the end).
    pub fn fill(&mut self) -> Result<usize, Error> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = self
            .pending_len()
            .map_or(0, |len| len.next_multiple_of(8))
            .max(self.end + 1);
        if need > self.buf.len() {
            let grow = need
                .max(self.buf.len() * 2)
                .min(MAX_FRAME.next_multiple_of(8));
            self.buf.resize(grow.max(need), 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A kernel channel file whose CPUs another open file
                // consumes (mapped or read).
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(Error::Busy {
                        path: self.path.clone(),
                        cpu: None,
                        holder: None,
                    })
                }
                Err(e) => return Err(io(&self.path, "read")(e)),
            }
        }
    }

    /// At the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), Error> {
        let have = self.end - self.start;
        if have == 0 {
            return Ok(());
        }
        Err(self.error(match self.pending_len() {
            Some(len) => format!(
                "len: truncated: the stream ends {have} bytes into a frame of {len} bytes"
            ),
            None => format!(
                "len: truncated: the stream ends {have} bytes into a frame header of {FRAME_HEADER_SIZE}"
            ),
        }))
    }
}

impl<R: Read + AsFd> FrameReader<R> {
    /// Every frame to `f` until the stream ends (see [`Until`]) or `f`
    /// returns `false`. A stream that ends inside a frame is an error.
    pub fn for_each(
        &mut self,
        until: Until,
        mut f: impl FnMut(Frame<'_>) -> bool,
    ) -> Result<(), Error> {
        let mut last_byte = Instant::now();
        let mut quiet_polls = 0u32;
        loop {
            while let Some(frame) = self.next_frame()? {
                if !f(frame) {
                    return Ok(());
                }
            }
            if self.fill()? > 0 {
                last_byte = Instant::now();
                quiet_polls = 0;
                continue;
            }
            let (latency, idle) = match until {
                Until::Eof => return self.finish(),
                Until::Follow(latency) => (latency, None),
                Until::Idle { latency, idle } => (latency, Some(idle)),
            };
            let timeout = match idle {
                Some(idle) => match idle.checked_sub(last_byte.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(latency),
                    _ => return self.finish(),
                },
                None => latency,
            };
            let waited = Instant::now();
            let ready = crate::sys::poll_readable(self.src.as_fd(), timeout)
                .map_err(io(&self.path, "poll"))?;
            if ready && waited.elapsed() < timeout / 2 {
                // Readable yet nothing to read (a plain file at its end):
                // poll cannot wait here, so sleep instead.
                quiet_polls += 1;
                if quiet_polls > 1 {
                    std::thread::sleep(timeout.saturating_sub(waited.elapsed()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::frames::{encode, encode_start};
    use relay_core::merge::Event;
    use relay_core::{Lost, Record};

    fn stream(events: &[Event<'_>]) -> Vec<u8> {
        let mut out = vec![0u8; 40];
        let n = encode_start(&mut out).unwrap();
        out.truncate(n);
        for e in events {
            let mut buf = vec![0u8; relay_core::frames::encoded_len(e)];
            let n = encode(e, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// Reads one byte at a time: every frame is split.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(out)) => {
                    *out = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<String>, Error> {
        let mut r = FrameReader::new(Trickle(bytes), "<test>");
        let mut got = Vec::new();
        loop {
            while let Some(f) = r.next_frame()? {
                got.push(format!("{f:?}"));
            }
            if r.fill()? == 0 {
                r.finish()?;
                return Ok(got);
            }
        }
    }

    #[test]
    fn split_frames_decode_and_truncation_is_an_error() {
        let big = vec![7u8; 100_000];
        let events = [
            Event::Record {
                cpu: 1,
                record: Record {
                    ts: 5,
                    rtype: 2,
                    payload: b"abc",
                },
            },
            Event::Lost {
                cpu: 0,
                lost: Lost {
                    full: 3,
                    ..Lost::default()
                },
                ts: 6,
                total: Lost {
                    full: 3,
                    ..Lost::default()
                },
            },
            Event::Record {
                cpu: 0,
                record: Record {
                    ts: 7,
                    rtype: 1,
                    payload: &big,
                },
            },
        ];
        let bytes = stream(&events);
        let got = decode_all(&bytes).unwrap();
        assert_eq!(got.len(), 4);
        assert!(got[0].starts_with("Start"));
        let e = decode_all(&bytes[..bytes.len() - 8])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("frame at byte 160: len: truncated: the stream ends 100016 bytes into a frame of 100024 bytes"),
            "{e}"
        );
        let e = decode_all(&bytes[..50]).unwrap_err().to_string();
        assert!(e.contains("frame at byte 40: len: truncated"), "{e}");
        // No start frame first.
        let e = decode_all(&bytes[40..]).unwrap_err().to_string();
        assert!(
            e.contains("frame at byte 0: start: not a relay stream"),
            "{e}"
        );
    }
}
