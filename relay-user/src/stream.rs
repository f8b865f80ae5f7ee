//! All CPUs of a channel file as one stream, in timestamp order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use relay_core::merge::{Cursor, Event, Merger, Step};

use crate::file::ChannelFile;

/// How a [`Stream`] reads.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Only these CPUs (all when empty).
    pub cpus: Vec<u32>,
    /// Keep waiting for new records instead of ending when none are left.
    pub follow: bool,
    /// In follow mode, how long a CPU with nothing readable may hold back
    /// newer records of other CPUs (it might still deliver older ones). After
    /// that the stream moves on; records that arrive later than that are
    /// delivered late and counted in [`Stream::late`].
    pub latency: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            cpus: Vec::new(),
            follow: false,
            latency: Duration::from_millis(100),
        }
    }
}

type Cursors<'f> = Vec<Cursor<'f, Vec<u8>>>;

/// The merged stream. Records borrow the mapping until the next call.
pub struct Stream<'f> {
    merger: Merger<'f, Vec<u8>, Cursors<'f>>,
    options: StreamOptions,
    blocked_since: Option<Instant>,
    stop: Option<&'f AtomicBool>,
    last_ts: u64,
    late: u64,
    backoff: Duration,
}

impl<'f> Stream<'f> {
    /// A stream over `file`.
    pub fn new(file: &'f ChannelFile, options: StreamOptions) -> Self {
        let channel = file.channel();
        let size = file.geometry().subbuf_size() as usize;
        let cursors: Cursors<'f> = (0..file.geometry().cpu_count())
            .filter(|cpu| options.cpus.is_empty() || options.cpus.contains(cpu))
            .filter_map(|cpu| channel.reader(cpu))
            .map(|reader| {
                // Only overwrite channels copy; in place needs no buffer.
                let buf = if reader.mode() == relay_core::Mode::Overwrite {
                    vec![0u8; size]
                } else {
                    Vec::new()
                };
                Cursor::new(reader, buf)
            })
            .collect();
        Stream {
            merger: Merger::new(cursors),
            options,
            blocked_since: None,
            stop: None,
            last_ts: 0,
            late: 0,
            backoff: MIN_BACKOFF,
        }
    }

    /// In follow mode, end the stream (after draining what is readable) once
    /// `flag` is set.
    pub fn stop_when(mut self, flag: &'f AtomicBool) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Records delivered with a timestamp older than one already delivered
    /// (only possible in follow mode, past `latency`).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// What the stream can do now: deliver (with or without draining), or
    /// wait (how long), or it has ended.
    fn poll_ready(&mut self) -> Ready {
        let stopping = self.stop.is_some_and(|f| f.load(Ordering::Acquire));
        let drain = !self.options.follow || stopping;
        match self.merger.poll(drain) {
            None => {
                self.blocked_since = None;
                self.backoff = MIN_BACKOFF;
                return Ready::Deliver { drain };
            }
            Some(Step::Blocked { .. }) => {
                let since = *self.blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.options.latency && self.merger.poll(true).is_none() {
                    self.backoff = MIN_BACKOFF;
                    return Ready::Deliver { drain: true };
                }
            }
            Some(_) if drain => return Ready::End,
            Some(_) => self.blocked_since = None,
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ready::Wait(wait)
    }

    /// Hands out the event `poll_ready` found.
    fn take(&mut self, drain: bool) -> Option<Event<'_>> {
        match self.merger.next(drain) {
            Step::Event(e) => {
                let ts = match e {
                    Event::Record { record, .. } => record.ts,
                    Event::Lost { ts, .. } => ts,
                    Event::Corrupt { .. } => self.last_ts,
                };
                if ts < self.last_ts {
                    self.late += 1;
                }
                self.last_ts = self.last_ts.max(ts);
                Some(e)
            }
            _ => None,
        }
    }

    /// The next event, or `None` at the end of the stream. Blocks (with a
    /// bounded back-off) in follow mode.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        let drain = loop {
            match self.poll_ready() {
                Ready::Deliver { drain } => break drain,
                Ready::Wait(d) => std::thread::sleep(d),
                Ready::End => return None,
            }
        };
        self.take(drain)
    }

    /// Up to `max` events to `f`, in order, waiting in follow mode until at
    /// least one is ready; `None` at the end of the stream. Runs of one
    /// CPU's records go straight from the mapping to `f`: the fast way.
    pub fn next_batch(&mut self, max: usize, f: &mut impl FnMut(Event<'_>)) -> Option<usize> {
        loop {
            match self.poll_ready() {
                Ready::Deliver { drain } => {
                    let (last_ts, late) = (&mut self.last_ts, &mut self.late);
                    let mut track = |e: Event<'_>| {
                        let ts = match e {
                            Event::Record { record, .. } => record.ts,
                            Event::Lost { ts, .. } => ts,
                            Event::Corrupt { .. } => *last_ts,
                        };
                        if ts < *last_ts {
                            *late += 1;
                        }
                        *last_ts = (*last_ts).max(ts);
                        f(e)
                    };
                    return self.merger.next_batch(drain, max, &mut track).ok();
                }
                Ready::Wait(d) => std::thread::sleep(d),
                Ready::End => return None,
            }
        }
    }

    /// [`Self::next_event`] for async code: waits with the tokio timer
    /// instead of blocking the thread.
    #[cfg(feature = "tokio")]
    pub async fn next_event_async(&mut self) -> Option<Event<'_>> {
        let drain = loop {
            match self.poll_ready() {
                Ready::Deliver { drain } => break drain,
                Ready::Wait(d) => tokio::time::sleep(d).await,
                Ready::End => return None,
            }
        };
        self.take(drain)
    }
}

enum Ready {
    Deliver { drain: bool },
    Wait(Duration),
    End,
}

const MIN_BACKOFF: Duration = Duration::from_micros(50);
const MAX_BACKOFF: Duration = Duration::from_millis(20);
