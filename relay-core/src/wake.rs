//! Readers that sleep until a sub-buffer is sealed, and writers that wake
//! them only when one sleeps (the BPF ring buffer's adaptive wakeup): for
//! channels in a file, whose readers have no `poll()` (the kernel's
//! readers sleep in `poll()`, woken by the module; its writers never look
//! at these words).
//!
//! Words (format 1.3): `waiters` is consumer word
//! [`consumer::WAITERS`] of each CPU, stored by that CPU's consumer;
//! `wakeups` is producer word [`producer::WAKEUPS`] of CPU 0, one for the
//! whole channel, bumped by writers. A reader sleeps on the low 32 bits of
//! `wakeups` (a futex, on Linux), so one sleep covers every CPU it reads.
//!
//! The protocol, in the order each side runs it:
//!
//! - Reader ([`register`], then [`unregister`]): adds 1 to `waiters` of
//!   every CPU it reads, then a full fence, then loads `wakeups` (the value
//!   to sleep on), then looks for something to read; only if it finds
//!   nothing does it sleep while `wakeups` still holds that value (the
//!   futex compares before it sleeps), and then takes its 1 back.
//! - Writer (`after_seal`, which every seal runs): stores the seal
//!   (release), then a full fence, then loads its CPU's `waiters`; if it
//!   is not 0, adds 1 to `wakeups` and wakes every sleeper on it.
//!
//! **No lost wakeup**: both sides store, then a sequentially consistent
//! fence, then load the other's word, so at least one sees the other.
//! Either the reader's look finds the seal, or the writer finds the reader
//! registered and changes `wakeups`: before the reader loaded it (then the
//! reader's look, ordered after that load, finds the seal), or after (then
//! the sleep returns at once, or is woken). The loom model
//! `a_seal_wakes_or_is_seen` checks exactly this.
//!
//! Both words are hostile to the side that does not own them: a
//! `waiters` left nonzero by a reader that died makes writers wake
//! nobody, a system call per sealed sub-buffer, until the next consumer of
//! that CPU resets it when it claims the CPU; a scribbled `wakeups` wakes
//! a sleeper early, and it looks again.

use crate::channel::CpuBuffer;
use crate::format::{consumer, producer};
use crate::sync::{fence, AtomicU64, Ordering};

/// Wakes every reader asleep on the `wakeups` word (on Linux, a futex wake
/// of its low 32 bits). Called by a writer right after a seal, from the
/// writer's context: a channel whose writers run where system calls
/// cannot (the kernel) has none.
pub type Waker = fn(&AtomicU64);

/// The channel-wide word a writer bumps and readers sleep on, and who
/// wakes them: what a writer needs to wake readers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wake<'a> {
    pub(crate) wakeups: &'a AtomicU64,
    pub(crate) waker: Waker,
}

/// The writer's half, right after it stored the seal of a sub-buffer of
/// `b`: wakes the readers if one of this CPU's readers registered.
#[inline]
pub(crate) fn after_seal(b: &CpuBuffer<'_>) {
    let Some(wake) = b.wake else { return };
    let Some(waiters) = b.consumer.get(consumer::WAITERS) else {
        return;
    };
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Relaxed) != 0 {
        wake.wakeups.fetch_add(1, Ordering::Release);
        (wake.waker)(wake.wakeups);
    }
}

/// The reader's half, first step: registers a reader of the CPUs whose
/// `waiters` words are `consumers` (see [`crate::Channel::waiters`]) on
/// the channel's `wakeups` word, and returns the value to sleep on: sleep
/// only while `wakeups` still holds it (its low 32 bits, for a futex).
/// Look for something to read after this, sleep only if there is nothing,
/// and [`unregister`] after.
#[must_use = "sleep on this value, then unregister"]
pub fn register<'w>(
    wakeups: &AtomicU64,
    consumers: impl IntoIterator<Item = &'w AtomicU64>,
) -> u64 {
    for waiters in consumers {
        waiters.fetch_add(1, Ordering::SeqCst);
    }
    // The reader's store-then-load fence, paired with the writer's: an SC
    // read-modify-write orders nothing for other words (the loom model
    // fails without it).
    fence(Ordering::SeqCst);
    wakeups.load(Ordering::SeqCst)
}

/// The reader's half, last step: takes back a [`register`] on the same
/// `consumers`.
pub fn unregister<'w>(consumers: impl IntoIterator<Item = &'w AtomicU64>) {
    for waiters in consumers {
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Index of `wakeups` within the channel's words: CPU 0's producer state,
/// at `producer_offset` (see FORMAT.md).
pub(crate) fn wakeups_word(producer_offset: u64) -> Option<usize> {
    usize::try_from(producer_offset / 8)
        .ok()?
        .checked_add(producer::WAKEUPS)
}
