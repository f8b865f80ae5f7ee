// SPDX-License-Identifier: GPL-2.0

//! The load-time self-test, run through relay-core's own code compiled for
//! the kernel target:
//!
//! 1. every online CPU writes records (checked payloads) into its own
//!    buffer from an IPI handler (`on_each_cpu`: interrupts off, so the
//!    per-CPU [`relay_core::CpuLocal`] writer's rule holds) and flushes;
//!    the reader then verifies every record and the accounting, with nothing
//!    lost;
//! 2. every CPU writes more than its buffer holds without a reader: the
//!    refused records must equal the `lost_full` statistics and
//!    `written = delivered + lost` must hold exactly;
//! 3. the same in overwrite (flight recorder) mode: nothing is refused, the
//!    newest records survive and the reclaimed ones count as lost to
//!    overwrite;
//! 4. nesting: on every CPU a task-context writer (preemption disabled) is
//!    interrupted every 20 us by a hard-IRQ hrtimer that writes into the same
//!    buffer; both record streams must arrive complete, in order, with
//!    non-decreasing timestamps and exact accounting.
//!
//! Each phase prints one `... ok` line (or `selftest FAILED: ...`, and
//! `insmod` fails).

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64 as StatU64, Ordering};

use kernel::prelude::*;
use relay_core::{
    checked, AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams, Lost, Mode,
    WriteError,
};

use crate::glue::{
    clock_ns, relay_glue_nr_cpu_ids, relay_glue_num_online_cpus, relay_glue_on_each_cpu,
    relay_glue_this_cpu, relay_glue_works_finish, relay_glue_works_start,
};

/// Sub-buffer size of the self-test channel.
const SUBBUF_SIZE: u32 = 4096;
/// Sub-buffers per CPU.
const SUBBUF_COUNT: u32 = 8;
/// Record type of the self-test records.
const RTYPE: u16 = 0x5e1f;
/// Records per CPU in the phase that must lose nothing: at most 104 bytes
/// each with the header (76 on average), they fit the 8 x (4096 - 72) bytes
/// of a CPU buffer.
const FIT_RECORDS: u64 = 400;
/// Records per CPU in the overflow phase: far more than a buffer holds.
const OVERFLOW_RECORDS: u64 = 2000;
/// Largest payload the self-test writes.
const PAYLOAD_MAX: usize = 88;

/// Payload length of record `seq` written by `cpu`: 32 ..= 88 bytes, a
/// multiple of 8.
fn payload_len(cpu: u32, seq: u64) -> usize {
    let step = (seq.wrapping_add(u64::from(cpu)) % 8) as usize;
    checked::MIN_LEN + step * 8
}

/// Fills `buf` with the checked payload of record `seq` of `cpu`; returns
/// its length.
fn make_payload(buf: &mut [u8; PAYLOAD_MAX], cpu: u32, seq: u64) -> usize {
    let len = payload_len(cpu, seq).min(PAYLOAD_MAX);
    checked::fill(&mut buf[..len], cpu, 0, seq);
    len
}

/// Checks one delivered payload of `cpu`; returns its sequence number.
fn check_payload(cpu: u32, payload: &[u8]) -> Option<u64> {
    let c = checked::check(payload).ok()?;
    (c.cpu == cpu && payload_len(cpu, c.seq) == payload.len()).then_some(c.seq)
}

/// What one CPU's producer did.
#[derive(Default)]
struct CpuResult {
    /// The producer ran on this CPU.
    ran: StatU64,
    /// Records accepted.
    written: StatU64,
    /// Records refused because the buffer was full.
    full: StatU64,
    /// Records refused for any other reason (a self-test failure).
    other: StatU64,
}

/// The shared state of one production round, passed to every CPU.
struct Round<'c, 'a> {
    channel: &'c Channel<'a>,
    /// Records each CPU attempts.
    records: u64,
    /// Indexed by CPU id.
    results: KVec<CpuResult>,
}

impl Round<'_, '_> {
    /// Writes this round's records into the current CPU's buffer.
    ///
    /// Runs with interrupts disabled on the CPU it writes for, so the CPU
    /// cannot change under it and every writer of the buffer is on this CPU.
    fn produce(&self) {
        // SAFETY: `raw_smp_processor_id` has no preconditions; interrupts are
        // off here, so the id stays valid for the whole call.
        let cpu = unsafe { relay_glue_this_cpu() };
        let Some(result) = self.results.get(cpu as usize) else {
            return;
        };
        result.ran.store(1, Ordering::Relaxed);
        let Some(writer) = self.channel.local_writer(cpu) else {
            result.other.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut clock = clock_ns;
        let mut buf = [0u8; PAYLOAD_MAX];
        for seq in 0..self.records {
            let len = make_payload(&mut buf, cpu, seq);
            let counter = match writer.write(RTYPE, &buf[..len], &mut clock) {
                Ok(_) => &result.written,
                Err(WriteError::Full) => &result.full,
                Err(WriteError::TooBig) => &result.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let _ = writer.flush(&mut clock);
    }
}

/// The `on_each_cpu` callback.
///
/// # Safety
///
/// `info` must point to a live [`Round`] for the whole call.
unsafe extern "C" fn produce_on_this_cpu(info: *mut c_void) {
    // SAFETY: the caller (`run_round`) passes a pointer to a `Round` it keeps
    // alive until `on_each_cpu` returned on every CPU; it is only read here.
    let round = unsafe { &*(info as *const Round<'_, '_>) };
    round.produce();
}

/// Has every online CPU write `records` records into `channel`. Returns the
/// per-CPU results.
fn run_round<'a>(channel: &Channel<'a>, records: u64) -> Result<KVec<CpuResult>> {
    let cpus = channel.geometry().cpu_count() as usize;
    let mut results = KVec::with_capacity(cpus, GFP_KERNEL)?;
    for _ in 0..cpus {
        results.push(CpuResult::default(), GFP_KERNEL)?;
    }
    let round = Round {
        channel,
        records,
        results,
    };
    // SAFETY: `produce_on_this_cpu` matches the callback type `on_each_cpu`
    // expects and only reads `*info`; `round` outlives the call because
    // `on_each_cpu` waits (wait = 1) until every CPU finished.
    unsafe {
        relay_glue_on_each_cpu(
            produce_on_this_cpu,
            &round as *const Round<'_, '_> as *mut c_void,
        )
    };
    Ok(round.results)
}

/// Totals of one verified round.
#[derive(Default)]
struct Totals {
    cpus: u64,
    attempted: u64,
    delivered: u64,
    lost: u64,
    subbufs: u64,
}

/// Reports a self-test failure and turns it into `EIO`.
macro_rules! fail {
    ($($arg:tt)*) => {{
        pr_err!("selftest FAILED: {}\n", format_args!($($arg)*));
        return Err(EIO);
    }};
}

/// Reads back every CPU's buffer and checks records and accounting.
///
/// `contiguous`: no record may be missing (the fitting phase). In place
/// (`peek`) when `copy` is false, else copied out (`next`) into `copy_buf`.
fn verify(
    channel: &Channel<'_>,
    records: u64,
    results: &[CpuResult],
    contiguous: bool,
    copy_buf: Option<&mut [u8]>,
) -> Result<Totals> {
    let mut totals = Totals::default();
    let mut copy_buf = copy_buf;
    let overwrite = channel.mode() == Mode::Overwrite;
    for (cpu, result) in (0u32..).zip(results) {
        let ran = result.ran.load(Ordering::Relaxed) != 0;
        let written = result.written.load(Ordering::Relaxed);
        let full = result.full.load(Ordering::Relaxed);
        let other = result.other.load(Ordering::Relaxed);
        let Some(mut reader) = channel.reader(cpu) else {
            fail!("cpu {cpu}: no reader");
        };
        if !ran {
            if channel.stats(cpu).is_some_and(|s| s.produced != 0) {
                fail!("cpu {cpu}: records in the buffer of an offline CPU");
            }
            continue;
        }
        totals.cpus += 1;
        if other != 0 || written.checked_add(full) != Some(records) {
            fail!("cpu {cpu}: written {written} + full {full} != {records} (other errors {other})");
        }
        if contiguous && full != 0 {
            fail!("cpu {cpu}: {full} records refused although the buffer holds them all");
        }
        let mut delivered = 0u64;
        let mut reported = Lost::default();
        let mut next_seq = 0u64;
        let mut last_ts = 0u64;
        loop {
            let d = match copy_buf.as_deref_mut() {
                Some(buf) => reader.next(buf),
                None => reader.peek(),
            };
            let d = match d {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => fail!("cpu {cpu}: reader: {e}"),
            };
            let (seq, lost) = (d.seq, d.lost_before);
            let mut n = 0u64;
            for r in d.records() {
                let Some(rseq) = check_payload(cpu, r.payload) else {
                    fail!(
                        "cpu {cpu}: bad payload in sub-buffer {seq} (len {})",
                        r.payload.len()
                    );
                };
                if r.rtype != RTYPE {
                    fail!("cpu {cpu}: record {rseq} has type {:#x}", r.rtype);
                }
                if rseq < next_seq || (contiguous && rseq != next_seq) || rseq >= records {
                    fail!("cpu {cpu}: record {rseq} out of order (expected {next_seq})");
                }
                if r.ts < last_ts {
                    fail!("cpu {cpu}: record {rseq}: timestamp went back");
                }
                last_ts = r.ts;
                next_seq = rseq.wrapping_add(1);
                n += 1;
            }
            reported = reported.plus(&lost);
            reader.finish(seq, &lost, n);
            reader.commit();
            delivered += n;
            totals.subbufs += 1;
        }
        let Some(stats) = channel.stats(cpu) else {
            fail!("cpu {cpu}: no statistics");
        };
        let lost = stats.lost.total();
        let mode_ok = if overwrite {
            // Nothing refused; the oldest sealed sub-buffers were reclaimed,
            // and the newest record survived.
            full == 0
                && stats.produced == written
                && delivered.checked_add(stats.lost.overwrite) == Some(written)
                && next_seq == records
        } else {
            delivered == written && stats.produced == delivered && stats.lost.overwrite == 0
        };
        if !mode_ok
            || stats.consumed_records != delivered
            || stats.lost.full != full
            || stats.lost.too_big != 0
            || delivered.checked_add(lost) != Some(records)
            || reported.full > stats.lost.full
            || stats.ready_subbufs != 0
            || stats.open_seq.is_some()
        {
            fail!(
                "cpu {cpu}: accounting: attempted {records} written {written} delivered {delivered} \
                 produced {} consumed {} lost full {} (writer saw {full}) too_big {} overwrite {} \
                 reported {} ready {}",
                stats.produced,
                stats.consumed_records,
                stats.lost.full,
                stats.lost.too_big,
                stats.lost.overwrite,
                reported.full,
                stats.ready_subbufs
            );
        }
        totals.attempted += records;
        totals.delivered += delivered;
        totals.lost += lost;
    }
    // SAFETY: `num_online_cpus` has no preconditions.
    let online = u64::from(unsafe { relay_glue_num_online_cpus() });
    if totals.cpus != online {
        fail!("{} CPUs wrote, {online} are online", totals.cpus);
    }
    Ok(totals)
}

/// Views the zeroed `u64`s of `mem` as channel words for as long as `mem`
/// is mutably borrowed.
fn words(mem: &mut [u64]) -> Result<&[AtomicU64]> {
    let len = mem.len().checked_mul(8).ok_or(EINVAL)?;
    // SAFETY: `mem` is one live allocation of `len` bytes, exclusively
    // borrowed for the returned lifetime, so every access to it while the
    // words live goes through them (atomically).
    unsafe { relay_core::mem::words_from_raw(mem.as_mut_ptr().cast::<u8>(), len) }
        .map_err(|_| EINVAL)
}

/// Runs both self-test phases on the channel memory `mem`.
fn selftest(mem: &mut [u64], geometry: Geometry) -> Result {
    let words = words(mem)?;

    // Phase 1: everything fits, nothing may be lost.
    let channel = match Channel::create(words, geometry, ChannelFlags::empty(), Clock::Monotonic) {
        Ok(c) => c,
        Err(e) => fail!("create: {e}"),
    };
    if Channel::open(words).is_err() {
        fail!("the created channel does not open");
    }
    let results = run_round(&channel, FIT_RECORDS)?;
    let t = verify(&channel, FIT_RECORDS, &results, true, None)?;
    pr_info!(
        "selftest ok cpus={} records={} lost={} subbufs={}\n",
        t.cpus,
        t.delivered,
        t.lost,
        t.subbufs
    );

    // Phase 2: overflow without a reader; exact loss accounting.
    let channel = match Channel::create(words, geometry, ChannelFlags::empty(), Clock::Monotonic) {
        Ok(c) => c,
        Err(e) => fail!("create: {e}"),
    };
    let results = run_round(&channel, OVERFLOW_RECORDS)?;
    let mut buf = KVec::from_elem(0u8, SUBBUF_SIZE as usize, GFP_KERNEL)?;
    let t = verify(&channel, OVERFLOW_RECORDS, &results, false, Some(&mut buf))?;
    if t.lost == 0 {
        fail!("overflow: nothing was lost");
    }
    pr_info!(
        "overflow test ok cpus={} attempted={} delivered={} lost={}\n",
        t.cpus,
        t.attempted,
        t.delivered,
        t.lost
    );

    // Phase 3: the same overflow in overwrite (flight recorder) mode: the
    // newest records survive, the reclaimed ones count as lost to overwrite.
    let channel = match Channel::create(words, geometry, ChannelFlags::OVERWRITE, Clock::Monotonic)
    {
        Ok(c) => c,
        Err(e) => fail!("create: {e}"),
    };
    let results = run_round(&channel, OVERFLOW_RECORDS)?;
    let t = verify(&channel, OVERFLOW_RECORDS, &results, false, Some(&mut buf))?;
    if t.lost == 0 {
        fail!("overwrite: nothing was overwritten");
    }
    pr_info!(
        "overwrite test ok cpus={} attempted={} delivered={} lost={}\n",
        t.cpus,
        t.attempted,
        t.delivered,
        t.lost
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Nesting: task-context writers interrupted by timer-interrupt writers on the
// same CPU.

/// Record type of the task-context writers.
const RTYPE_TASK: u16 = 0x7a5c;
/// Record type of the interrupt-context writers.
const RTYPE_IRQ: u16 = 0x1e9d;
/// Records each task-context writer writes.
const NESTED_TASK_RECORDS: u64 = 25_000;
/// Records each timer interrupt writes on its CPU.
const NESTED_IRQ_BURST: u64 = 1;
/// Period of the interrupting timer.
const NESTED_TICK_NS: u64 = 20_000;
/// Geometry of the nesting test's channel: room for every record.
const NESTED_SUBBUF_SIZE: u64 = 256 * 1024;

/// Shared state of the nesting test.
struct Nested<'c, 'a> {
    channel: &'c Channel<'a>,
    /// Per CPU: what the task-context writer did.
    task: KVec<CpuResult>,
    /// Per CPU: what the interrupt-context writers did.
    irq: KVec<CpuResult>,
    /// Per CPU: the next interrupt-context sequence number.
    irq_next: KVec<StatU64>,
}

/// Writes record `seq` of type `rtype` on `cpu` and counts the outcome.
fn write_counted<S: relay_core::Sharing>(
    writer: &relay_core::Writer<'_, S>,
    cpu: u32,
    seq: u64,
    rtype: u16,
    result: &CpuResult,
) {
    let mut buf = [0u8; PAYLOAD_MAX];
    let len = make_payload(&mut buf, cpu, seq);
    let mut clock = clock_ns;
    let counter = match writer.write(rtype, &buf[..len], &mut clock) {
        Ok(_) => &result.written,
        Err(WriteError::Full) => &result.full,
        Err(WriteError::TooBig) => &result.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Nested<'_, '_> {
    /// The task-context writer: preemption is disabled (work item run by
    /// the glue), interrupts are on.
    fn task_writer(&self) {
        // SAFETY: no preconditions; preemption is off, so the id is stable.
        let cpu = unsafe { relay_glue_this_cpu() };
        let (Some(result), Some(writer)) =
            (self.task.get(cpu as usize), self.channel.local_writer(cpu))
        else {
            return;
        };
        result.ran.store(1, Ordering::Relaxed);
        for seq in 0..NESTED_TASK_RECORDS {
            write_counted(&writer, cpu, seq, RTYPE_TASK, result);
        }
    }

    /// The interrupt-context writer (a hard-IRQ hrtimer on the task
    /// writer's CPU, interrupts off).
    fn irq_writer(&self) {
        // SAFETY: no preconditions; interrupts are off.
        let cpu = unsafe { relay_glue_this_cpu() };
        let (Some(result), Some(next), Some(writer)) = (
            self.irq.get(cpu as usize),
            self.irq_next.get(cpu as usize),
            self.channel.local_writer(cpu),
        ) else {
            return;
        };
        result.ran.store(1, Ordering::Relaxed);
        for _ in 0..NESTED_IRQ_BURST {
            // Only this CPU, with interrupts off, touches its counter.
            let seq = next.fetch_add(1, Ordering::Relaxed);
            write_counted(&writer, cpu, seq, RTYPE_IRQ, result);
        }
    }

    /// Closes this CPU's open sub-buffer (on the CPU, interrupts off).
    fn flush(&self) {
        // SAFETY: no preconditions; interrupts are off.
        let cpu = unsafe { relay_glue_this_cpu() };
        if let Some(writer) = self.channel.local_writer(cpu) {
            let _ = writer.flush(&mut clock_ns);
        }
    }
}

/// Work-item callback.
///
/// # Safety
///
/// `info` must point to a live [`Nested`] for the whole call.
unsafe extern "C" fn nested_task(info: *mut c_void) {
    // SAFETY: `nested_test` keeps the `Nested` alive until every work item
    // finished (`relay_glue_works_finish`); it is only read here.
    unsafe { &*(info as *const Nested<'_, '_>) }.task_writer();
}

/// Timer callback.
///
/// # Safety
///
/// `info` must point to a live [`Nested`] for the whole call.
unsafe extern "C" fn nested_irq(info: *mut c_void) {
    // SAFETY: the glue cancels every timer (`hrtimer_cancel`) before
    // `relay_glue_works_finish` returns, and `nested_test` keeps the `Nested`
    // alive until then; it is only read here.
    unsafe { &*(info as *const Nested<'_, '_>) }.irq_writer();
}

/// Flush callback.
///
/// # Safety
///
/// `info` must point to a live [`Nested`] for the whole call.
unsafe extern "C" fn nested_flush(info: *mut c_void) {
    // SAFETY: `on_each_cpu` waits for every CPU, and `nested_test` keeps the
    // `Nested` alive across it; it is only read here.
    unsafe { &*(info as *const Nested<'_, '_>) }.flush();
}

fn per_cpu<T: Default>(cpus: usize) -> Result<KVec<T>> {
    let mut v = KVec::with_capacity(cpus, GFP_KERNEL)?;
    for _ in 0..cpus {
        v.push(T::default(), GFP_KERNEL)?;
    }
    Ok(v)
}

fn counts(r: &CpuResult) -> (u64, u64, u64) {
    (
        r.written.load(Ordering::Relaxed),
        r.full.load(Ordering::Relaxed),
        r.other.load(Ordering::Relaxed),
    )
}

/// Task-context writers on every CPU, interrupted by timer-IRQ writers on the same
/// CPUs, into one channel; then every record and count is checked.
fn nested_test() -> Result {
    // SAFETY: `nr_cpu_ids` is set before modules load and then constant.
    let cpu_count = unsafe { relay_glue_nr_cpu_ids() };
    let geometry = Geometry::new(GeometryParams {
        subbuf_size: NESTED_SUBBUF_SIZE,
        subbuf_count: 8,
        cpu_count,
        page_size: kernel::page::PAGE_SIZE as u32,
    })
    .map_err(|_| EINVAL)?;
    let n = usize::try_from(geometry.total_size() / 8).map_err(|_| EINVAL)?;
    let mut mem = VVec::from_elem(0u64, n, GFP_KERNEL)?;
    let words = words(&mut mem)?;
    let channel = match Channel::create(words, geometry, ChannelFlags::empty(), Clock::Monotonic) {
        Ok(c) => c,
        Err(e) => fail!("nested: create: {e}"),
    };
    let cpus = cpu_count as usize;
    let nested = Nested {
        channel: &channel,
        task: per_cpu(cpus)?,
        irq: per_cpu(cpus)?,
        irq_next: per_cpu(cpus)?,
    };
    let info = &nested as *const Nested<'_, '_> as *mut c_void;
    // SAFETY: `nested_task` and `nested_irq` match the callback type and only
    // read `*info`, which lives until `relay_glue_works_finish` below returned
    // (after which no work item or timer runs).
    let works = unsafe { relay_glue_works_start(nested_task, nested_irq, info, NESTED_TICK_NS) };
    if works.is_null() {
        return Err(ENOMEM);
    }
    // SAFETY: `works` came from `relay_glue_works_start` and is finished once.
    unsafe { relay_glue_works_finish(works) };
    // SAFETY: `nested_flush` only reads `*info`; `on_each_cpu` waits.
    unsafe { relay_glue_on_each_cpu(nested_flush, info) };

    let (mut ncpus, mut task_total, mut irq_total, mut interleaved, mut lost_total) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for cpu in 0..cpu_count {
        let (Some(task), Some(irq), Some(mut reader)) = (
            nested.task.get(cpu as usize),
            nested.irq.get(cpu as usize),
            channel.reader(cpu),
        ) else {
            fail!("nested: cpu {cpu}: no state");
        };
        if task.ran.load(Ordering::Relaxed) == 0 {
            continue;
        }
        ncpus += 1;
        let (task_written, task_full, task_other) = counts(task);
        let (irq_written, irq_full, irq_other) = counts(irq);
        let irq_attempted = nested
            .irq_next
            .get(cpu as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed));
        if task_other != 0
            || irq_other != 0
            || task_written + task_full != NESTED_TASK_RECORDS
            || irq_written + irq_full != irq_attempted
        {
            fail!("nested: cpu {cpu}: writer counts do not add up");
        }
        let (mut next_task, mut next_irq, mut last_ts) = (0u64, 0u64, 0u64);
        let (mut got_task, mut got_irq, mut pending_irq) = (0u64, 0u64, 0u64);
        loop {
            let d = match reader.peek() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => fail!("nested: cpu {cpu}: reader: {e}"),
            };
            let (seq, lost) = (d.seq, d.lost_before);
            let mut n = 0u64;
            for r in d.records() {
                let Some(rseq) = check_payload(cpu, r.payload) else {
                    fail!("nested: cpu {cpu}: bad payload in sub-buffer {seq}");
                };
                if r.ts < last_ts {
                    fail!("nested: cpu {cpu}: timestamp went back at record {rseq}");
                }
                last_ts = r.ts;
                let next = match r.rtype {
                    RTYPE_TASK => {
                        got_task += 1;
                        interleaved += pending_irq;
                        pending_irq = 0;
                        &mut next_task
                    }
                    RTYPE_IRQ => {
                        got_irq += 1;
                        if got_task > 0 {
                            pending_irq += 1;
                        }
                        &mut next_irq
                    }
                    t => fail!("nested: cpu {cpu}: record type {t:#x}"),
                };
                if rseq < *next {
                    fail!(
                        "nested: cpu {cpu}: record {rseq} of type {:#x} out of order",
                        r.rtype
                    );
                }
                *next = rseq.wrapping_add(1);
                n += 1;
            }
            reader.finish(seq, &lost, n);
            reader.commit();
        }
        let Some(stats) = channel.stats(cpu) else {
            fail!("nested: cpu {cpu}: no statistics");
        };
        if got_task != task_written
            || got_irq != irq_written
            || stats.produced != got_task + got_irq
            || stats.lost.full != task_full + irq_full
            || stats.lost.too_big != 0
            || stats.lost.overwrite != 0
        {
            fail!(
                "nested: cpu {cpu}: accounting: task {got_task}/{task_written} irq {got_irq}/{irq_written} \
                 produced {} lost full {} (writers saw {})",
                stats.produced,
                stats.lost.full,
                task_full + irq_full
            );
        }
        task_total += NESTED_TASK_RECORDS;
        irq_total += irq_attempted;
        lost_total += stats.lost.total();
    }
    // SAFETY: `num_online_cpus` has no preconditions.
    if ncpus != u64::from(unsafe { relay_glue_num_online_cpus() }) {
        fail!("nested: {ncpus} task writers ran");
    }
    if interleaved == 0 {
        fail!("nested: no timer interrupt landed between task-context records");
    }
    pr_info!(
        "nested test ok cpus={ncpus} task={task_total} irq={irq_total} interleaved={interleaved} lost={lost_total}\n"
    );
    Ok(())
}


/// Runs every self-test; `Ok` only if all passed.
pub(crate) fn run() -> Result {
    // SAFETY: `nr_cpu_ids` is set before modules load and then constant.
    let cpu_count = unsafe { relay_glue_nr_cpu_ids() };
    let geometry = Geometry::new(GeometryParams {
        subbuf_size: SUBBUF_SIZE.into(),
        subbuf_count: SUBBUF_COUNT.into(),
        cpu_count,
        page_size: kernel::page::PAGE_SIZE as u32,
    })
    .map_err(|e| {
        pr_err!("geometry: {e}\n");
        EINVAL
    })?;
    let words = usize::try_from(geometry.total_size() / 8).map_err(|_| EINVAL)?;
    let mut mem = VVec::from_elem(0u64, words, GFP_KERNEL)?;
    selftest(&mut mem, geometry)?;
    nested_test()
}
