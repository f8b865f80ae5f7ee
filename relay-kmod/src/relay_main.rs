// SPDX-License-Identifier: GPL-2.0

//! relay-kmod: per-CPU relay channels for Linux, built on relay-core.
//!
//! On load the module runs its self-test ([`selftest`]) and registers
//! `/dev/relay/control`, through which userspace creates named channels
//! (`relay_uapi.h`). Each channel is one vmalloc area in the layout of
//! docs/FORMAT.md, read through one file for all CPUs (`/dev/relay/NAME`:
//! mmap, or `read()` of merged frames) and written from any context by
//! kernel code (`relay_chan_write`), by `write()` and by the load
//! generator.
//!
//! The split: the C glue (`relay_chan.c`, `relay_file.c`, `relay_bpf.c`,
//! `relay_context.c`, `relay_load.c`) owns devices, files, lifetimes and
//! execution contexts (what 6.12 has no Rust abstraction for); this file
//! turns each of its requests into relay-core calls. Everything about the bytes of a
//! channel (geometry, writer, reader, merge, frames, checked payloads) is
//! relay-core, compiled for the kernel target from the same source that
//! userspace uses and that loom and the fuzzer check.

use core::ffi::{c_int, c_void};

use kernel::prelude::*;
use relay_core::merge::{nodes_for, Cursor, Merger, Node, Step};
use relay_core::{
    checked, frames, AtomicU64, Channel, ChannelFlags, Clock, CpuLocal, Detached, Geometry,
    GeometryParams, Mode, WriteError, Writer,
};

mod selftest;

module! {
    type: RelayKmod,
    name: "relay_kmod",
    author: "relay authors",
    description: "Per-CPU relay channels (relay-core), one file for all CPUs",
    license: "GPL",
}

/// The C glue's functions (`relay_glue.h`).
mod glue {
    use core::ffi::{c_int, c_void};

    extern "C" {
        /// Runs `func(info)` on every online CPU, with interrupts disabled, and
        /// waits for all of them (`on_each_cpu(func, info, 1)`).
        pub(crate) fn relay_glue_on_each_cpu(
            func: unsafe extern "C" fn(*mut c_void),
            info: *mut c_void,
        );
        /// `raw_smp_processor_id()`.
        pub(crate) fn relay_glue_this_cpu() -> u32;
        /// `nr_cpu_ids`: one more than the highest possible CPU id.
        pub(crate) fn relay_glue_nr_cpu_ids() -> u32;
        /// `num_online_cpus()`.
        pub(crate) fn relay_glue_num_online_cpus() -> u32;
        /// Flushes `cpu` of the channel `k` on that CPU (an IPI), or from
        /// here if it is offline. Process context; 1 if that sealed a
        /// sub-buffer, 0 if not, or a negative errno.
        pub(crate) fn relay_glue_flush_cpu(
            k: *mut c_void,
            cpu: u32,
            barrier: *mut u64,
            next: *mut u64,
        ) -> c_int;
        /// Registers `/dev/relay/control` and the NMI handler.
        pub(crate) fn relay_glue_register() -> c_int;
        /// Destroys every channel and deregisters what `register` did.
        pub(crate) fn relay_glue_unregister();
        /// Queues `func(info)` on every online CPU as a work item that runs
        /// with preemption disabled, interrupted every `period_ns` by a
        /// hard-IRQ hrtimer on the same CPU that calls `tick(info)`; null if
        /// out of memory.
        pub(crate) fn relay_glue_works_start(
            func: unsafe extern "C" fn(*mut c_void),
            tick: unsafe extern "C" fn(*mut c_void),
            info: *mut c_void,
            period_ns: u64,
        ) -> *mut c_void;
        /// Waits for every work item of `works` and frees it.
        pub(crate) fn relay_glue_works_finish(works: *mut c_void);
    }

    extern "C" {
        /// The kernel's `local_clock()` (exported on x86, which has an
        /// unstable sched_clock): nanoseconds, any context, NMI included.
        fn local_clock() -> u64;
        /// `CLOCK_REALTIME` nanoseconds, NMI-safe (kernel/time/timekeeping.c).
        fn ktime_get_real_fast_ns() -> u64;
    }

    /// Where `clock` stands in wall time now, for the channel header; None
    /// for the TSC, whose cycles have no fixed rate the header could give.
    pub(crate) fn anchor(clock: super::Clock) -> Option<relay_core::Anchor> {
        if !clock.is_ns() {
            return None;
        }
        let before = now(clock);
        // SAFETY: no preconditions; any context.
        let realtime_ns = unsafe { ktime_get_real_fast_ns() };
        let after = now(clock);
        Some(relay_core::Anchor {
            realtime_ns,
            clock: before.wrapping_add(after.wrapping_sub(before) / 2),
        })
    }

    /// The NMI-safe monotonic clock (`CLOCK_MONOTONIC`, what userspace
    /// producers stamp too), as relay-core's writer wants it; called
    /// directly, not through the glue: every record reads it.
    #[inline]
    pub(crate) fn clock_ns() -> u64 {
        // SAFETY: `ktime_get_mono_fast_ns` has no preconditions and may be
        // called from any context, NMI included.
        unsafe { kernel::bindings::ktime_get_mono_fast_ns() }
    }

    /// Reads `clock` (a channel's, see `requested`) now.
    #[inline(always)]
    pub(crate) fn now(clock: super::Clock) -> u64 {
        match clock {
            // SAFETY: `local_clock` has no preconditions and may be called
            // from any context, NMI included.
            super::Clock::Local => unsafe { local_clock() },
            // SAFETY: `rdtsc` reads the time-stamp counter, which the kernel
            // lets ring 0 read on every x86-64 CPU; it touches no memory.
            super::Clock::Tsc => unsafe { core::arch::x86_64::_rdtsc() },
            _ => clock_ns(),
        }
    }
}


/// Errno values `kernel::error::code` lacks in 6.12.
fn emsgsize() -> Error {
    Error::from_errno(-(kernel::bindings::EMSGSIZE as i32))
}

fn eopnotsupp() -> Error {
    Error::from_errno(-(kernel::bindings::EOPNOTSUPP as i32))
}

fn errno(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// The geometry and flags of a create request; `EINVAL` for any bad field
/// (relay-core's geometry rules), `EOPNOTSUPP` for unknown flags.
/// `RELAY_FLAG_CLOCK(c)` (relay_uapi.h): the clock code in bits 8..16 of
/// a create request's flags.
const FLAG_CLOCK_SHIFT: u32 = 8;
const FLAG_CLOCK_MASK: u64 = 0xff << FLAG_CLOCK_SHIFT;

/// A create request's geometry, flags and clock (0 means monotonic).
fn requested(
    subbuf_size: u64,
    subbuf_count: u64,
    flags: u64,
) -> Result<(Geometry, ChannelFlags, Clock)> {
    let clock = match (flags & FLAG_CLOCK_MASK) >> FLAG_CLOCK_SHIFT {
        0 | 1 => Clock::Monotonic,
        3 => Clock::Local,
        4 => Clock::Tsc,
        c => {
            pr_info!("create: clock {c}: not 1 (monotonic), 3 (local) or 4 (tsc)\n");
            return Err(EINVAL);
        }
    };
    let flags = ChannelFlags::from_bits(flags & !FLAG_CLOCK_MASK).ok_or_else(eopnotsupp)?;
    let page_size = u32::try_from(kernel::page::PAGE_SIZE).map_err(|_| EINVAL)?;
    let geometry = Geometry::new(GeometryParams {
        subbuf_size,
        subbuf_count,
        // SAFETY: `nr_cpu_ids` is set before modules load and then constant.
        cpu_count: unsafe { glue::relay_glue_nr_cpu_ids() },
        page_size,
    })
    .map_err(|e| {
        pr_info!("create: {e}\n");
        EINVAL
    })?;
    Ok((geometry, flags, clock))
}

/// Validates a channel request and reports its layout.
///
/// # Safety
///
/// Every pointer must be valid for a write of its type.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_geometry(
    subbuf_size: u64,
    subbuf_count: u64,
    flags: u64,
    total_size: *mut u64,
    consumer_offset: *mut u64,
    consumer_size: *mut u64,
    cpu_count: *mut u32,
    max_payload: *mut u32,
) -> c_int {
    errno(
        requested(subbuf_size, subbuf_count, flags).and_then(|(g, _, _)| {
            let size = g
                .data_offset()
                .checked_sub(g.consumer_offset())
                .ok_or(EINVAL)?;
            // SAFETY: the caller passes pointers valid for writes (see above).
            unsafe {
                *total_size = g.total_size();
                *consumer_offset = g.consumer_offset();
                *consumer_size = size;
                *cpu_count = g.cpu_count();
                *max_payload = g.max_payload();
            }
            Ok(())
        }),
    )
}

/// A channel as the glue holds it (`relay_chan.k`).
struct KChannel {
    channel: Channel<'static>,
    /// Per-CPU writers, made once: a write only indexes.
    writers: KVec<Writer<'static, CpuLocal>>,
    /// What every record and flush of this channel is stamped with.
    clock: Clock,
}

impl KChannel {
    /// The channel's clock, now.
    #[inline(always)]
    fn now(&self) -> u64 {
        glue::now(self.clock)
    }
}

/// # Safety
///
/// `k` must come from [`relay_rust_channel_new`] and not be freed yet.
unsafe fn kchannel<'k>(k: *mut c_void) -> &'k KChannel {
    // SAFETY: the caller's contract: a live `KChannel` that only
    // `relay_rust_channel_free` frees, and only shared references exist.
    unsafe { &*(k as *const KChannel) }
}

/// Lays a new channel out over the zeroed vmalloc area `mem` and returns
/// the handle the glue passes back to the other functions.
///
/// # Safety
///
/// `mem` must be a live vmalloc area of `size` bytes, not yet mapped, that
/// stays allocated until [`relay_rust_channel_free`] returned; afterwards
/// it is accessed elsewhere only atomically (writers, readers in
/// userspace) or through read-only mappings. `out` must be valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_channel_new(
    mem: *mut c_void,
    size: u64,
    subbuf_size: u64,
    subbuf_count: u64,
    flags: u64,
    out: *mut *mut c_void,
) -> c_int {
    errno((|| {
        let (geometry, flags, clock) = requested(subbuf_size, subbuf_count, flags)?;
        let len = usize::try_from(size).map_err(|_| EINVAL)?;
        // SAFETY: the caller's contract: `mem` outlives every user of the
        // words (all of them are gone before `relay_rust_channel_free`).
        let words: &'static [AtomicU64] =
            unsafe { relay_core::mem::words_from_raw(mem.cast::<u8>(), len) }
                .map_err(|_| EINVAL)?;
        let channel = Channel::create_anchored(words, geometry, flags, clock, glue::anchor(clock))
            .map_err(|_| EINVAL)?;
        let mut writers = KVec::with_capacity(geometry.cpu_count() as usize, GFP_KERNEL)?;
        for cpu in 0..geometry.cpu_count() {
            writers.push(channel.local_writer(cpu).ok_or(EINVAL)?, GFP_KERNEL)?;
        }
        let k = KBox::new(
            KChannel {
                channel,
                writers,
                clock,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `out` is valid for a write (the caller's contract).
        unsafe { *out = KBox::into_raw(k).cast::<c_void>() };
        Ok(())
    })())
}

/// Frees a channel handle.
///
/// # Safety
///
/// `k` must come from [`relay_rust_channel_new`], with no reader of it left
/// and no writer running; it is not used again.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_channel_free(k: *mut c_void) {
    // SAFETY: the caller's contract: `k` is a `KBox<KChannel>` from
    // `relay_rust_channel_new`, freed once.
    drop(unsafe { KBox::from_raw(k.cast::<KChannel>()) });
}

/// What a write did, for the glue: 1 sealed a sub-buffer (wake readers),
/// 0 written, or the refusal as a negative errno.
fn write_result(r: core::result::Result<relay_core::Committed, WriteError>) -> c_int {
    match r {
        Ok(c) if c.sealed_any() => 1,
        Ok(_) => 0,
        Err(WriteError::Full) => ENOSPC.to_errno(),
        Err(WriteError::TooBig) => emsgsize().to_errno(),
    }
}

/// Writes one record on `cpu`, which must be the current CPU, with
/// preemption disabled (any context: task, IRQ, NMI).
///
/// # Safety
///
/// `k` as for [`kchannel`]; `data` valid for `len` bytes of reads. The
/// caller runs on `cpu` and cannot migrate.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_write(
    k: *mut c_void,
    cpu: u32,
    rtype: u16,
    data: *const c_void,
    len: u64,
) -> c_int {
    // SAFETY: the caller's contract.
    let k = unsafe { kchannel(k) };
    let Some(writer) = k.writers.get(cpu as usize) else {
        return EINVAL.to_errno();
    };
    let Ok(len) = usize::try_from(len) else {
        return emsgsize().to_errno();
    };
    let data = if len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller's contract: `data` is valid for `len` bytes.
        unsafe { core::slice::from_raw_parts(data.cast::<u8>(), len) }
    };
    // One memcpy (`Writer::write`): the module's readers (mmap, read())
    // only read sealed sub-buffers and validate overwrite-mode copies.
    write_result(writer.write(rtype, data, &mut || k.now()))
}

/// Storage the C glue keeps for one detached grant (`struct relay_grant`'s
/// `core` words): opaque there, a [`Detached`] here.
const GRANT_WORDS: usize = 6;
const _: () = assert!(
    core::mem::size_of::<Detached>() <= GRANT_WORDS * 8
        && core::mem::align_of::<Detached>() <= 8
);

/// Reserves `len` payload bytes on `cpu` for a BPF program to fill in place
/// (`relay_kfunc_reserve`): stores the reservation in `state` and where its
/// payload starts in `data`. Returns 0, 1 if the reservation sealed the
/// sub-buffer before it (wake readers), or a negative errno.
///
/// # Safety
///
/// As [`relay_rust_write`]; `state` valid for writes of `GRANT_WORDS`
/// words, `data` for one pointer. The caller passes `state` to
/// [`relay_rust_commit`] exactly once, on `cpu`, without migrating between.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_reserve(
    k: *mut c_void,
    cpu: u32,
    len: u32,
    state: *mut u64,
    data: *mut *mut u8,
) -> c_int {
    // SAFETY: the caller's contract.
    let k = unsafe { kchannel(k) };
    let Some(writer) = k.writers.get(cpu as usize) else {
        return EINVAL.to_errno();
    };
    let mut grant = match writer.reserve(len as usize, &mut || k.now()) {
        Ok(g) => g,
        Err(e) => return write_result(Err(e)),
    };
    let start = grant
        .payload_ptr()
        .map_or(core::ptr::null_mut(), |p| p.as_ptr());
    let sealed_previous = grant.sealed_previous();
    // SAFETY: the caller's contract: `state` holds `GRANT_WORDS` aligned
    // words (asserted above to fit a `Detached`), `data` one pointer.
    unsafe {
        state.cast::<Detached>().write(grant.detach());
        data.write(start);
    }
    c_int::from(sealed_previous)
}

/// Counts a record on `cpu` that the glue refused before reserving (no free
/// grant slot) as lost to a full buffer.
///
/// # Safety
///
/// `k` as for [`kchannel`].
#[no_mangle]
pub unsafe extern "C" fn relay_rust_refuse(k: *mut c_void, cpu: u32) {
    // SAFETY: the caller's contract.
    let k = unsafe { kchannel(k) };
    if let Some(writer) = k.writers.get(cpu as usize) {
        writer.count_refused();
    }
}

/// Commits (type `rtype`) or discards the reservation `state` made by
/// [`relay_rust_reserve`]. Returns 1 if that sealed its sub-buffer (wake
/// readers), or 0.
///
/// # Safety
///
/// `k` as for [`kchannel`]; `state` is a reservation of this channel's
/// `cpu`, not yet committed; the caller runs on `cpu` with preemption off.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_commit(
    k: *mut c_void,
    cpu: u32,
    state: *const u64,
    rtype: u16,
    discard: bool,
) -> c_int {
    // SAFETY: the caller's contract.
    let k = unsafe { kchannel(k) };
    let Some(writer) = k.writers.get(cpu as usize) else {
        return EINVAL.to_errno();
    };
    // SAFETY: the caller's contract: `state` holds what reserve stored.
    let d = unsafe { state.cast::<Detached>().read() };
    let grant = writer.attach(d);
    let c = if discard {
        grant.discard()
    } else {
        grant.commit(rtype)
    };
    c_int::from(c.sealed.is_some())
}

/// Fills `buf` (`len` bytes) with checked payload `seq` of (`cpu`,
/// `source`) and writes it as a record of type `0x10 + source`, like
/// [`relay_rust_write`].
///
/// # Safety
///
/// As [`relay_rust_write`]; `buf` is valid for `len` bytes of writes and
/// used by this context only.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_load_write(
    k: *mut c_void,
    cpu: u32,
    source: u32,
    seq: u64,
    buf: *mut c_void,
    len: u64,
) -> c_int {
    let Ok(len) = usize::try_from(len) else {
        return EINVAL.to_errno();
    };
    // SAFETY: the caller's contract: `buf` is ours for `len` bytes.
    let payload = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    if !checked::fill(payload, cpu, source, seq) {
        return EINVAL.to_errno();
    }
    // SAFETY: the caller's contract; `payload` is valid for `len` bytes.
    unsafe { relay_rust_write(k, cpu, 0x10 + source as u16, buf, len as u64) }
}

/// Closes `cpu`'s open sub-buffer. `on_cpu`: the caller runs on `cpu` with
/// interrupts off (an IPI); otherwise `cpu` is offline and no writer can
/// run on it. Returns 1 if that sealed a sub-buffer (wake readers), 0 if
/// not, or a negative errno.
///
/// # Safety
///
/// `k` as for [`kchannel`]; `barrier` and `next` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_flush(
    k: *mut c_void,
    cpu: u32,
    on_cpu: bool,
    barrier: *mut u64,
    next: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract.
    let k = unsafe { kchannel(k) };
    let flushed = if on_cpu {
        k.channel.local_writer(cpu).map(|w| w.flush(&mut || k.now()))
    } else {
        // Another CPU's clock: with `Clock::Local` the barrier may be a
        // bounded drift off this CPU's (an offline CPU's records after it
        // would then count as late).
        k.channel.writer(cpu).map(|w| w.flush(&mut || k.now()))
    };
    let Some(f) = flushed else {
        return EINVAL.to_errno();
    };
    // SAFETY: the caller's contract.
    unsafe {
        *barrier = f.barrier;
        *next = f.next;
    }
    c_int::from(f.sealed.is_some())
}

/// `struct relay_cpu_stats` of `relay_uapi.h`.
#[repr(C)]
pub struct CpuStatsC {
    produced: u64,
    consumed: u64,
    lost_full: u64,
    lost_too_big: u64,
    lost_overwrite: u64,
    ready_subbufs: u64,
}

/// `cpu`'s statistics.
///
/// # Safety
///
/// `k` as for [`kchannel`]; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_stats(k: *mut c_void, cpu: u32, out: *mut CpuStatsC) -> c_int {
    // SAFETY: the caller's contract.
    let k = unsafe { kchannel(k) };
    let Some(s) = k.channel.stats(cpu) else {
        return EINVAL.to_errno();
    };
    // SAFETY: the caller's contract.
    unsafe {
        *out = CpuStatsC {
            produced: s.produced,
            consumed: s.consumed_records,
            lost_full: s.lost.full,
            lost_too_big: s.lost.too_big,
            lost_overwrite: s.lost.overwrite,
            ready_subbufs: s.ready_subbufs,
        }
    };
    0
}

// ---------------------------------------------------------------------------
// read(): the merged stream as frames.

/// A cursor's copy buffer (empty on no-overwrite channels: in place).
struct CopyBuf(VVec<u8>);

impl AsRef<[u8]> for CopyBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for CopyBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

struct Cursors(KVec<Cursor<'static, CopyBuf>>);

impl AsMut<[Cursor<'static, CopyBuf>]> for Cursors {
    fn as_mut(&mut self) -> &mut [Cursor<'static, CopyBuf>] {
        &mut self.0
    }
}

/// The merge's working memory (see [`nodes_for`]).
struct Nodes(KVec<Node>);

impl AsMut<[Node]> for Nodes {
    fn as_mut(&mut self) -> &mut [Node] {
        &mut self.0
    }
}

/// The reader behind one open channel file.
struct KReader {
    /// The glue's handle for flushes (the channel's `k`).
    k: *mut c_void,
    channel: &'static Channel<'static>,
    merger: Merger<'static, CopyBuf, Cursors, Nodes>,
    /// Per cursor, the round that last flushed its CPU: a CPU is flushed
    /// at most once until an event is delivered (a round).
    flushed_in: KVec<u64>,
    /// Events delivered, plus one: rounds start at 1.
    round: u64,
    /// Encoded frames; `pending[head..tail]` not yet handed out.
    pending: VVec<u8>,
    head: usize,
    tail: usize,
    started: bool,
}

impl KReader {
    /// Flushes the CPU of cursor `i` (an IPI to it) unless this round
    /// already did; false if it did.
    fn flush_once(&mut self, i: usize) -> bool {
        let Some(cpu) = self.merger.cursors().get(i).map(|c| c.cpu()) else {
            return false;
        };
        match self.flushed_in.get_mut(i) {
            Some(f) if *f != self.round => *f = self.round,
            _ => return false,
        }
        let (mut barrier, mut next) = (0u64, 0u64);
        // SAFETY: `self.k` is the live channel this reader reads (the file
        // holds a reference); the out pointers are valid.
        if unsafe { glue::relay_glue_flush_cpu(self.k, cpu, &mut barrier, &mut next) } >= 0 {
            self.merger.flushed(cpu, barrier, next);
        }
        true
    }

    /// Encodes events until `want` bytes are pending or nothing is
    /// readable: blocked CPUs and, once, all idle ones are flushed first.
    /// Encodes nothing while frames are pending: progress is committed when
    /// every encoded frame was delivered ([`relay_rust_reader_advance`]), so
    /// the pending ones go out first, and a reader that reads in small
    /// pieces still commits at every frame boundary it reaches.
    fn fill(&mut self, want: usize) -> Result {
        if self.tail > self.head {
            return Ok(());
        }
        if !self.started {
            let out = self.pending.get_mut(self.tail..).ok_or(EINVAL)?;
            self.tail += frames::encode_start(out).ok_or(EINVAL)?;
            self.started = true;
        }
        self.round = self.round.wrapping_add(1);
        let mut flushed_all = false;
        while self.tail - self.head < want {
            let drain = match self.merger.poll(false) {
                None => false,
                Some(Step::Blocked { cpu }) => {
                    let i = self.merger.cursors().iter().position(|c| c.cpu() == cpu);
                    if i.is_some_and(|i| self.flush_once(i)) {
                        continue;
                    }
                    // Still blocked after its flush, with nothing delivered
                    // since: a writer on that CPU was interrupted
                    // mid-commit. Deliver what is here.
                    true
                }
                Some(_) if !flushed_all => {
                    // Idle: close the open sub-buffers, once per fill, of
                    // the CPUs that have one and were not flushed this
                    // round (a read() that finds nothing sends no IPI to a
                    // CPU with nothing open).
                    flushed_all = true;
                    for i in 0..self.merger.cursors().len() {
                        let cpu = self.merger.cursors()[i].cpu();
                        let open = self.channel.stats(cpu).is_some_and(|s| s.open_seq.is_some());
                        if open {
                            self.flush_once(i);
                        }
                    }
                    continue;
                }
                // Nothing readable after flushing: drain (reports the losses
                // after each CPU's last sub-buffer), then stop.
                Some(_) => true,
            };
            let event = match self.merger.next(drain) {
                Step::Event(e) => e,
                _ => break,
            };
            // Copy the event out of the merger's borrow before encoding.
            let need = frames::encoded_len(&event);
            if self.pending.len() - self.tail < need {
                self.pending.copy_within(self.head..self.tail, 0);
                self.tail -= self.head;
                self.head = 0;
            }
            let out = self.pending.get_mut(self.tail..).ok_or(EINVAL)?;
            self.tail += frames::encode(&event, out).ok_or(EINVAL)?;
            // Progress: a CPU blocking again may need a newer barrier.
            self.round = self.round.wrapping_add(1);
        }
        Ok(())
    }
}

/// Creates the reader of an open file: all CPUs merged (`cpu < 0`) or one.
///
/// # Safety
///
/// `k` as for [`kchannel`], and it outlives the reader (the file holds a
/// reference); `flusher` is `k`; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_reader_new(
    k: *mut c_void,
    cpu: i32,
    flusher: *mut c_void,
    pid: u32,
    out: *mut *mut c_void,
) -> c_int {
    errno((|| {
        // SAFETY: the caller's contract. The `'static` is the channel's
        // lifetime as far as this reader can tell: the glue frees the
        // reader before it drops its reference to the channel.
        let channel: &'static Channel<'static> = &unsafe { kchannel(k) }.channel;
        let g = channel.geometry();
        let size = usize::try_from(g.subbuf_size()).map_err(|_| EINVAL)?;
        let overwrite = channel.mode() == Mode::Overwrite;
        let mut cursors = KVec::new();
        for c in 0..g.cpu_count() {
            if cpu >= 0 && c != cpu as u32 {
                continue;
            }
            let reader = channel.reader(c).ok_or(EINVAL)?;
            // The glue claimed `c` for this file: say who holds it.
            channel.set_claim_pid(c, pid.into());
            let buf = if overwrite {
                VVec::from_elem(0u8, size, GFP_KERNEL_ACCOUNT)?
            } else {
                VVec::new()
            };
            cursors.push(Cursor::new(reader, CopyBuf(buf)), GFP_KERNEL_ACCOUNT)?;
        }
        if cursors.is_empty() {
            return Err(EINVAL);
        }
        // The largest frame, plus one read() chunk (a page).
        let max_frame = size + frames::FRAME_HEADER_SIZE + 8;
        let pending = VVec::from_elem(
            0u8,
            max_frame + 2 * kernel::page::PAGE_SIZE,
            GFP_KERNEL_ACCOUNT,
        )?;
        let mut nodes = KVec::with_capacity(nodes_for(cursors.len()), GFP_KERNEL_ACCOUNT)?;
        for _ in 0..nodes_for(cursors.len()) {
            nodes.push(Node::default(), GFP_KERNEL_ACCOUNT)?;
        }
        let mut flushed_in = KVec::with_capacity(cursors.len(), GFP_KERNEL_ACCOUNT)?;
        for _ in 0..cursors.len() {
            flushed_in.push(0u64, GFP_KERNEL_ACCOUNT)?;
        }
        let r = KBox::new(
            KReader {
                k: flusher,
                channel,
                merger: Merger::new(Cursors(cursors), Nodes(nodes)).map_err(|_| EINVAL)?,
                flushed_in,
                round: 1,
                pending,
                head: 0,
                tail: 0,
                started: false,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        // SAFETY: the caller's contract.
        unsafe { *out = KBox::into_raw(r).cast::<c_void>() };
        Ok(())
    })())
}

/// # Safety
///
/// `r` must come from [`relay_rust_reader_new`], not freed, and not used by
/// anyone else during the call (the file's mutex).
unsafe fn kreader<'r>(r: *mut c_void) -> &'r mut KReader {
    // SAFETY: the caller's contract.
    unsafe { &mut *r.cast::<KReader>() }
}

/// Frees a reader.
///
/// # Safety
///
/// As [`kreader`]; `r` is not used again.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_reader_free(r: *mut c_void) {
    // SAFETY: the caller's contract: a `KBox<KReader>`, freed once.
    drop(unsafe { KBox::from_raw(r.cast::<KReader>()) });
}

/// Copies up to `cap` bytes of frames into `buf` without consuming them
/// ([`relay_rust_reader_advance`] does, once the caller delivered them).
/// Returns the bytes copied, 0 when nothing is readable, or a negative
/// errno. Process context (it may flush CPUs by IPI).
///
/// # Safety
///
/// As [`kreader`]; `buf` valid for `cap` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn relay_rust_reader_fill(r: *mut c_void, buf: *mut c_void, cap: u64) -> isize {
    // SAFETY: the caller's contract.
    let r = unsafe { kreader(r) };
    let cap = usize::try_from(cap).unwrap_or(usize::MAX).min(2 * kernel::page::PAGE_SIZE);
    if let Err(e) = r.fill(cap) {
        return e.to_errno() as isize;
    }
    let n = cap.min(r.tail - r.head);
    // SAFETY: the caller's contract: `buf` is valid for `cap >= n` bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
    out.copy_from_slice(&r.pending[r.head..r.head + n]);
    n as isize
}

/// Consumes `n` bytes that [`relay_rust_reader_fill`] returned, once the
/// caller delivered them (`copy_to_user` succeeded). When that was the last
/// pending byte, every event encoded so far was delivered: the channel's
/// consumer progress is committed. A frame split across reads is committed
/// only with its last byte, so a file closed between the two halves leaves
/// the whole frame to the next reader.
///
/// # Safety
///
/// As [`kreader`].
#[no_mangle]
pub unsafe extern "C" fn relay_rust_reader_advance(r: *mut c_void, n: u64) {
    // SAFETY: the caller's contract.
    let r = unsafe { kreader(r) };
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(r.tail - r.head);
    r.head += n;
    if r.head == r.tail {
        r.head = 0;
        r.tail = 0;
        r.merger.commit();
    }
}

/// Whether the consumer of `cpu` (every CPU when negative) has a sealed
/// sub-buffer to read, for poll() on a file that has no reader: creates
/// no reader and stores nothing.
///
/// # Safety
///
/// `k` as for [`kchannel`].
#[no_mangle]
pub unsafe extern "C" fn relay_rust_ready(k: *mut c_void, cpu: i32) -> bool {
    // SAFETY: the caller's contract.
    let channel = &unsafe { kchannel(k) }.channel;
    (0..channel.geometry().cpu_count())
        .filter(|&c| cpu < 0 || c == cpu as u32)
        .any(|c| channel.reader(c).is_some_and(|r| r.ready().is_some()))
}

/// Whether a read would return data without flushing: frames pending or a
/// sealed sub-buffer on one of the reader's CPUs (poll).
///
/// # Safety
///
/// As [`kreader`].
#[no_mangle]
pub unsafe extern "C" fn relay_rust_reader_ready(r: *mut c_void) -> bool {
    // SAFETY: the caller's contract.
    let r = unsafe { kreader(r) };
    r.tail > r.head
        || r
            .merger
            .cursors()
            .iter()
            .any(|c| c.reader().ready().is_some())
}

struct RelayKmod;

impl kernel::Module for RelayKmod {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        selftest::run()?;
        // SAFETY: registering has no preconditions; `drop` deregisters, and
        // the module cannot unload while a file of it is open (`fops.owner`).
        let err = unsafe { glue::relay_glue_register() };
        if err != 0 {
            return Err(Error::from_errno(err));
        }
        pr_info!("/dev/relay/control registered\n");
        Ok(RelayKmod)
    }
}

impl Drop for RelayKmod {
    fn drop(&mut self) {
        // SAFETY: `init` registered (it returns `Self` only then).
        unsafe { glue::relay_glue_unregister() };
        pr_info!("unloaded\n");
    }
}
