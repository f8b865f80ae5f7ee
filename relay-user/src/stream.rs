//! All CPUs of a channel file as one stream, in timestamp order.
//!
//! The stream consumes when its file was opened as a consumer
//! ([`ChannelFile::open_consumer`]) and is a snapshot, changing nothing,
//! when it was opened with [`ChannelFile::open_snapshot`].
//!
//! A consumer's progress is committed to the channel only when the caller
//! is done with what it was handed: every call that hands out events
//! ([`Stream::next_event`], [`Stream::next_batch`] and the like) first
//! commits what the calls before it handed out, and [`Stream::commit`] does
//! it at once. A program that writes events out asks for the next ones (or
//! commits) only after its output accepted them; killed at any instant, its
//! successor repeats at most what it was handed since its last commit, and
//! loses nothing. Dropping a stream does not commit.
//!
//! A CPU with nothing readable holds back newer records of the others until
//! it is known empty. Plain files wait for their producers' flushes (up to
//! `latency`); kernel channel files ask the module to flush that CPU
//! (RELAY_IOC_FLUSH), which answers at once, so nothing waits.

use std::borrow::Borrow;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use relay_core::merge::{nodes_for, Cursor, Event, Flow, Merger, Node, Step};
use relay_core::Channel;

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
    /// In follow mode, end the stream (after draining) once nothing was
    /// delivered for this long.
    pub until_idle: Option<Duration>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            cpus: Vec::new(),
            follow: false,
            latency: Duration::from_millis(100),
            until_idle: None,
        }
    }
}

type Cursors<'f> = Vec<Cursor<'f, Vec<u8>>>;

/// The longest a consumer of a channel file sleeps without looking at it
/// (see `Stream::sleep_until_sealed`): an idle follower wakes this often,
/// and otherwise only when a writer seals a sub-buffer.
const LIVENESS: Duration = Duration::from_secs(1);

/// The merged stream. Records borrow the mapping until the next call.
///
/// `F` holds the file: a reference (`Stream::new(&file, ..)`, the stream
/// borrows it) or an owner (`ChannelFile`, `Arc<ChannelFile>`: the stream
/// keeps it open, and can live in a struct beside nothing else). `'f` is
/// the lifetime of what the stream borrows: the file, when `F` is a
/// reference, and a [`Self::stop_when`] flag.
pub struct Stream<'f, F: Borrow<ChannelFile> + 'f = &'f ChannelFile> {
    /// Declared before `file`, so dropped before it: the cursors read the
    /// file's mapping (see `Stream::new`).
    merger: Merger<'f, Vec<u8>, Cursors<'f>, Vec<Node>>,
    file: F,
    /// The CPUs read.
    cpus: Vec<u32>,
    options: StreamOptions,
    blocked_since: Option<Instant>,
    /// Follow mode: since when nothing has been readable.
    idle_since: Option<Instant>,
    /// When an event was last delivered.
    last_progress: Instant,
    stop: Option<&'f AtomicBool>,
    last_ts: u64,
    late: u64,
    backoff: Duration,
    /// Follow mode, while waiting: when the stream stops waiting of its
    /// own accord (a blocking CPU's `latency`, `until_idle`), if ever.
    deadline: Option<Instant>,
}

impl<'f, F: Borrow<ChannelFile> + 'f> Stream<'f, F> {
    /// A stream over the channel file `file` holds.
    pub fn new(file: F, options: StreamOptions) -> Self {
        let owner = file;
        let file: &ChannelFile = owner.borrow();
        // The cursors borrow the mapping for 'f, which may outlive this
        // borrow of `owner` when `F` owns the file.
        #[allow(unsafe_code)]
        // SAFETY: the mapping is a separate allocation of the kernel's that
        // stays where it is while its `ChannelFile` lives (moving `owner`
        // moves no page), and the `ChannelFile` that `owner.borrow()` gives
        // lives as long as `owner`: a safe `Borrow` cannot drop it while
        // `owner` is shared, and the stream never hands `owner` out, mutably
        // or at all. The stream keeps `owner` in `file`, declared after
        // `merger`: every cursor, and so every borrow of the mapping, is
        // dropped before `owner` is. Events borrow the stream itself, never
        // 'f.
        let channel: Channel<'f> = unsafe { crate::sys::extend_channel(file.channel()) };
        let size = file.geometry().subbuf_size() as usize;
        // Kernel files, to the end: everything written so far, so close
        // every open sub-buffer, before a snapshot fixes where it ends.
        let flushes: Vec<(u32, (u64, u64))> = if file.is_kernel() && !options.follow {
            (0..file.geometry().cpu_count())
                .filter(|cpu| options.cpus.is_empty() || options.cpus.contains(cpu))
                .filter_map(|cpu| file.flush_cpu(cpu).map(|f| (cpu, f)))
                .collect()
        } else {
            Vec::new()
        };
        let cursors: Cursors<'f> = (0..file.geometry().cpu_count())
            .filter(|cpu| options.cpus.is_empty() || options.cpus.contains(cpu))
            .filter_map(|cpu| {
                if file.is_snapshot() {
                    channel.snapshot(cpu)
                } else {
                    channel.reader(cpu)
                }
            })
            .map(|reader| {
                // Reading in place needs no buffer; copies go to one.
                let buf = if reader.reads_in_place() {
                    Vec::new()
                } else {
                    vec![0u8; size]
                };
                Cursor::new(reader, buf)
            })
            .collect();
        let cpus: Vec<u32> = cursors.iter().map(Cursor::cpu).collect();
        let nodes = vec![Node::default(); nodes_for(cursors.len())];
        // At most MAX_CPUS cursors, and the nodes they need: never refused.
        let mut merger = Merger::new(cursors, nodes).expect("nodes sized by nodes_for");
        for (cpu, (barrier, next)) in flushes {
            merger.flushed(cpu, barrier, next);
        }
        Stream {
            merger,
            file: owner,
            cpus,
            options,
            blocked_since: None,
            idle_since: None,
            last_progress: Instant::now(),
            stop: None,
            last_ts: 0,
            late: 0,
            backoff: MIN_BACKOFF,
            deadline: None,
        }
    }

    /// Consumers: publishes the progress of everything handed out so far
    /// (the calls that hand out events do it for the calls before them).
    /// Snapshots: nothing to do.
    pub fn commit(&mut self) {
        if !self.file.borrow().is_snapshot() {
            self.merger.commit();
        }
    }

    /// In follow mode, end the stream (after draining what is readable) once
    /// `flag` is set.
    pub fn stop_when(mut self, flag: &'f AtomicBool) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Snapshot streams: per CPU, the sub-buffers writers reused before the
    /// snapshot could copy them (their records are missing from it). Only
    /// CPUs with some are listed.
    pub fn overrun_subbufs(&mut self) -> Vec<(u32, u64)> {
        self.merger
            .cursors()
            .iter()
            .map(|c| (c.cpu(), c.reader().overrun_subbufs()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Records delivered with a timestamp older than one already delivered
    /// (only possible in follow mode, past `latency`).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Flushes `cpu` through the kernel module and tells the merger.
    fn kernel_flush(&mut self, cpu: u32) -> bool {
        match self.file.borrow().flush_cpu(cpu) {
            Some((barrier, next)) => {
                self.merger.flushed(cpu, barrier, next);
                true
            }
            None => false,
        }
    }

    /// What the stream can do now: deliver (with or without draining), or
    /// wait (how long), or it has ended.
    fn poll_ready(&mut self) -> Ready {
        let follow = self.options.follow;
        let idle_over = follow
            && self
                .options
                .until_idle
                .is_some_and(|d| self.last_progress.elapsed() >= d);
        let stopping = idle_over || self.stop.is_some_and(|f| f.load(Ordering::Acquire));
        let drain = !follow || stopping;
        let kernel = self.file.borrow().is_kernel();
        // Kernel files: flush a blocking CPU (each at most about once) or,
        // idle for `latency`, every CPU, and look again.
        let mut flushes = 0;
        let mut flushed_all = false;
        loop {
            match self.merger.poll(drain) {
                None => {
                    self.blocked_since = None;
                    self.idle_since = None;
                    self.backoff = MIN_BACKOFF;
                    self.last_progress = Instant::now();
                    return Ready::Deliver { drain };
                }
                Some(Step::Blocked { cpu }) => {
                    if kernel && flushes <= self.cpus.len() && self.kernel_flush(cpu) {
                        flushes += 1;
                        continue;
                    }
                    let since = *self.blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.options.latency && self.merger.poll(true).is_none() {
                        self.backoff = MIN_BACKOFF;
                        self.last_progress = Instant::now();
                        return Ready::Deliver { drain: true };
                    }
                }
                Some(_) if drain => return Ready::End,
                Some(_) => {
                    self.blocked_since = None;
                    let since = *self.idle_since.get_or_insert_with(Instant::now);
                    if kernel && !flushed_all && since.elapsed() >= self.options.latency {
                        // Records may sit in open sub-buffers of every CPU.
                        flushed_all = true;
                        self.idle_since = Some(Instant::now());
                        for cpu in self.cpus.clone() {
                            self.kernel_flush(cpu);
                        }
                        continue;
                    }
                }
            }
            break;
        }
        // What ends the wait at the latest, but a record: the blocking CPU's
        // latency, a kernel file's next flush of every CPU, or the end of an
        // idle stream.
        let latency = self.options.latency;
        let blocked = self.blocked_since.map(|since| since + latency);
        let flush = self
            .idle_since
            .filter(|_| kernel)
            .map(|since| since + latency);
        let idle = self.options.until_idle.map(|d| self.last_progress + d);
        self.deadline = [blocked, flush, idle].into_iter().flatten().min();
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
        self.commit();
        let drain = loop {
            match self.poll_ready() {
                Ready::Deliver { drain } => break drain,
                Ready::Wait(d) => self.wait(d, None),
                Ready::End => return None,
            }
        };
        self.take(drain)
    }

    /// Up to `max` events to `f`, in order, until `f` answers
    /// [`Flow::Stop`] (that event comes out again next time), waiting in
    /// follow mode until at least one is ready; `None` at the end of the
    /// stream. Runs of one CPU's records go straight from the mapping to
    /// `f`: the fast way.
    pub fn next_batch(
        &mut self,
        max: usize,
        f: &mut impl FnMut(Event<'_>) -> Flow,
    ) -> Option<usize> {
        self.batch_until(None, max, f)
    }

    /// [`Self::next_batch`] without waiting: `Some(0)` when nothing is
    /// ready yet (follow mode), for event loops that wait on the file
    /// descriptor themselves (a kernel channel file polls readable when a
    /// sub-buffer is sealed).
    pub fn try_next_batch(
        &mut self,
        max: usize,
        f: &mut impl FnMut(Event<'_>) -> Flow,
    ) -> Option<usize> {
        self.batch_until(Some(Instant::now()), max, f)
    }

    /// [`Self::next_batch`] waiting at most `timeout`: `Some(0)` if nothing
    /// became ready in time.
    pub fn next_batch_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
        f: &mut impl FnMut(Event<'_>) -> Flow,
    ) -> Option<usize> {
        self.batch_until(Some(Instant::now() + timeout), max, f)
    }

    /// Waits for something to read, at most until `until` (the caller's
    /// deadline, if any, besides the stream's own). A kernel channel file
    /// waits `d` in poll(2), which a writer's seal ends early; a consumer
    /// of a channel in a file sleeps until a writer seals a sub-buffer
    /// (see [`relay_core::wake`]); a snapshot, which cannot register, or a
    /// channel older than format 1.3, sleeps `d`.
    fn wait(&mut self, d: Duration, until: Option<Instant>) {
        let file = self.file.borrow();
        if file.is_kernel() && self.options.cpus.is_empty() {
            // Readable (a seal), timed out (the stream's own deadline: a
            // flush, a blocking CPU's latency) or interrupted (a signal):
            // the caller looks again.
            let timeout = self.wait_for(until).unwrap_or(d);
            let _ = crate::sys::poll_readable(file.file().as_fd(), timeout);
        } else if !self.sleep_until_sealed(until) {
            std::thread::sleep(
                until.map_or(d, |u| d.min(u.saturating_duration_since(Instant::now()))),
            )
        }
    }

    /// How long until the earlier of `until` and the stream's own deadline,
    /// if either.
    fn wait_for(&self, until: Option<Instant>) -> Option<Duration> {
        let end = [until, self.deadline].into_iter().flatten().min()?;
        Some(end.saturating_duration_since(Instant::now()))
    }

    /// [`Self::wait`] for async code: a kernel file's poll(2) and a file
    /// consumer's futex sleep on tokio's blocking pool, otherwise tokio's
    /// timer; the runtime's own threads never block.
    #[cfg(feature = "tokio")]
    async fn wait_async(&mut self, d: Duration) {
        let file = self.file.borrow();
        if file.is_kernel() && self.options.cpus.is_empty() {
            let timeout = self.wait_for(None).unwrap_or(d);
            // The descriptor's number: if this future is dropped mid-wait,
            // the poll ends by its timeout, and a number closed since only
            // makes it return early.
            let fd = std::os::fd::AsRawFd::as_raw_fd(file.file());
            let _ = tokio::task::spawn_blocking(move || crate::sys::poll_readable_raw(fd, timeout))
                .await;
        } else if !self.sleep_until_sealed_async(None).await {
            tokio::time::sleep(d).await
        }
    }

    /// The consumer of a channel in a file: registers as a sleeper on its
    /// CPUs, looks once more (a seal may have come since the last look),
    /// and sleeps until a writer's wake, a termination signal, `until` or
    /// the stream's own deadline. False if this stream cannot sleep so.
    fn sleep_until_sealed(&mut self, until: Option<Instant>) -> bool {
        match self.prepare_sleep(until) {
            Sleep::Unsupported => false,
            Sleep::Ready => true,
            Sleep::Until(plan, registered) => {
                crate::sys::futex_wait(plan.word, plan.seen, plan.interrupts, Some(plan.end));
                drop(registered);
                true
            }
        }
    }

    /// [`Self::sleep_until_sealed`] for async code: the sleep runs on
    /// tokio's blocking pool, so the runtime's threads do not wait.
    #[cfg(feature = "tokio")]
    async fn sleep_until_sealed_async(&mut self, until: Option<Instant>) -> bool {
        match self.prepare_sleep(until) {
            Sleep::Unsupported => false,
            Sleep::Ready => true,
            Sleep::Until(plan, registered) => {
                // The address, not a reference: if this future is dropped
                // mid-sleep, the sleep ends by its deadline, and a futex on
                // a range unmapped since only fails (EFAULT); dropping
                // `registered` takes the registration back either way.
                let _ = tokio::task::spawn_blocking(move || {
                    crate::sys::futex_wait(plan.word, plan.seen, plan.interrupts, Some(plan.end))
                })
                .await;
                drop(registered);
                true
            }
        }
    }

    /// Registers as a sleeper (see `relay_core::wake`) and looks again:
    /// what to sleep on, if there is still nothing to read.
    fn prepare_sleep(&mut self, until: Option<Instant>) -> Sleep<'_> {
        let file: &ChannelFile = self.file.borrow();
        if file.is_kernel() || file.is_snapshot() {
            return Sleep::Unsupported;
        }
        // A stop flag of the caller's own has no wakeup: poll it instead.
        if self
            .stop
            .is_some_and(|f| !crate::sys::is_termination_flag(f))
        {
            return Sleep::Unsupported;
        }
        let channel = file.channel();
        let Some(wakeups) = channel.wakeups() else {
            return Sleep::Unsupported;
        };
        // Read before the flag: a signal after this read changes it.
        let interrupts = crate::sys::interrupts();
        let (seen, registered) = Registered::new(channel, &self.cpus, wakeups);
        let stopping = self.stop.is_some_and(|f| f.load(Ordering::Acquire));
        // Woken or not, look again at once afterwards.
        self.backoff = MIN_BACKOFF;
        if stopping || self.merger.poll(false).is_none() {
            return Sleep::Ready;
        }
        // At the latest after LIVENESS, look at the file anyway: one
        // truncated under the reader has no writer left to wake it, and the
        // look is what notices (see `crate::truncation`).
        let mut end = Instant::now() + LIVENESS;
        for d in [until, self.deadline].into_iter().flatten() {
            end = end.min(d);
        }
        Sleep::Until(
            SleepPlan {
                word: wakeups.as_ptr() as usize,
                seen,
                interrupts,
                end,
            },
            registered,
        )
    }

    fn batch_until(
        &mut self,
        deadline: Option<Instant>,
        max: usize,
        f: &mut impl FnMut(Event<'_>) -> Flow,
    ) -> Option<usize> {
        self.commit();
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
                Ready::Wait(d) => match deadline {
                    None => self.wait(d, None),
                    Some(end) => {
                        if end <= Instant::now() {
                            return Some(0);
                        }
                        self.wait(d, Some(end));
                    }
                },
                Ready::End => return None,
            }
        }
    }

    /// [`Self::next_event`] for async code (tokio): waits as it does, but on
    /// tokio's blocking pool (a file consumer's futex, a kernel file's
    /// poll) or timer, never blocking the runtime's threads.
    #[cfg(feature = "tokio")]
    pub async fn next_event_async(&mut self) -> Option<Event<'_>> {
        self.commit();
        let drain = loop {
            match self.poll_ready() {
                Ready::Deliver { drain } => break drain,
                Ready::Wait(d) => self.wait_async(d).await,
                Ready::End => return None,
            }
        };
        self.take(drain)
    }

    /// The stream as a [`futures_core::Stream`] of owned events (tokio):
    /// each is [`next_event_async`](Self::next_event_async)'s, its payload
    /// copied, so that it outlives the next. A consumer's event is
    /// committed when the next one is asked for, as with `next_event`.
    #[cfg(feature = "tokio")]
    pub fn into_events(self) -> impl futures_core::Stream<Item = OwnedEvent> + 'f
    where
        F: 'f,
    {
        futures_util::stream::unfold(self, |mut stream| async move {
            let event = stream.next_event_async().await.map(OwnedEvent::from);
            event.map(|e| (e, stream))
        })
    }
}

/// An [`Event`] that owns its payload (what `Stream::into_events` yields,
/// with the `tokio` feature). Exhaustive, as `Event` is: every kind counts
/// toward the exact loss accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedEvent {
    /// A record of `cpu`.
    Record {
        /// The CPU that wrote it.
        cpu: u32,
        /// Its timestamp.
        ts: u64,
        /// Its producer-chosen type.
        rtype: u16,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// `cpu` lost records here (see [`Event::Lost`]).
    Lost {
        /// The CPU that lost them.
        cpu: u32,
        /// How many, by cause.
        lost: relay_core::Lost,
        /// The timestamp of the next record of `cpu`.
        ts: u64,
        /// Every loss of `cpu` reported so far, this one included.
        total: relay_core::Lost,
    },
    /// A corrupt sub-buffer of `cpu` was skipped (its records are lost).
    Corrupt {
        /// The CPU.
        cpu: u32,
        /// What was wrong.
        error: relay_core::ReadError,
    },
}

impl OwnedEvent {
    /// The event, borrowed back as the stream's [`Event`] (to print it as
    /// one).
    pub fn event(&self) -> Event<'_> {
        match self {
            OwnedEvent::Record {
                cpu,
                ts,
                rtype,
                payload,
            } => Event::Record {
                cpu: *cpu,
                record: relay_core::Record {
                    ts: *ts,
                    rtype: *rtype,
                    payload,
                },
            },
            OwnedEvent::Lost {
                cpu,
                lost,
                ts,
                total,
            } => Event::Lost {
                cpu: *cpu,
                lost: *lost,
                ts: *ts,
                total: *total,
            },
            OwnedEvent::Corrupt { cpu, error } => Event::Corrupt {
                cpu: *cpu,
                error: *error,
            },
        }
    }
}

impl From<Event<'_>> for OwnedEvent {
    fn from(e: Event<'_>) -> Self {
        match e {
            Event::Record { cpu, record } => OwnedEvent::Record {
                cpu,
                ts: record.ts,
                rtype: record.rtype,
                payload: record.payload.to_vec(),
            },
            Event::Lost {
                cpu,
                lost,
                ts,
                total,
            } => OwnedEvent::Lost {
                cpu,
                lost,
                ts,
                total,
            },
            Event::Corrupt { cpu, error } => OwnedEvent::Corrupt { cpu, error },
        }
    }
}

/// What [`Stream::prepare_sleep`] found.
enum Sleep<'a> {
    /// This stream cannot sleep on a futex (kernel file, snapshot, old
    /// format, a stop flag with no wakeup).
    Unsupported,
    /// Something is readable now: no sleep (and no registration left).
    Ready,
    /// Registered until the [`Registered`] is dropped: sleep first.
    Until(SleepPlan, Registered<'a>),
}

/// A reader's registration as a sleeper on its CPUs (see
/// `relay_core::wake`), taken back when dropped: also when an async wait is
/// cancelled mid-sleep, so a dropped future leaves no registration that
/// would make writers wake nobody on every seal.
struct Registered<'a> {
    channel: Channel<'a>,
    cpus: &'a [u32],
}

impl<'a> Registered<'a> {
    /// Registers on `cpus` of `channel`; the value of `wakeups` to sleep on.
    fn new(channel: Channel<'a>, cpus: &'a [u32], wakeups: &relay_core::AtomicU64) -> (u64, Self) {
        let waiters = cpus.iter().filter_map(|&c| channel.waiters(c));
        let seen = relay_core::wake::register(wakeups, waiters);
        (seen, Registered { channel, cpus })
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let waiters = self.cpus.iter().filter_map(|&c| self.channel.waiters(c));
        relay_core::wake::unregister(waiters);
    }
}

/// A futex sleep: on the word at `word` while it holds `seen`.
#[derive(Clone, Copy)]
struct SleepPlan {
    word: usize,
    seen: u64,
    interrupts: u32,
    end: Instant,
}

enum Ready {
    Deliver { drain: bool },
    Wait(Duration),
    End,
}

const MIN_BACKOFF: Duration = Duration::from_micros(50);
const MAX_BACKOFF: Duration = Duration::from_millis(20);
