//! Userspace producers that wait for room instead of losing records (as
//! LTTng-UST's blocking mode does): a record refused for want of a free
//! sub-buffer is retried until a consumer frees one or `timeout` passes,
//! and counted lost only then. And a switch timer (LTTng's
//! `--switch-timer`), so that a slow producer's records reach a follow
//! reader within a bound instead of when a whole sub-buffer fills.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use relay_core::{Committed, Lost, Sharing, WriteError, Writer};

/// Longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_millis(5);

/// Writes one record of type `rtype`, waiting up to `timeout` for room.
/// A record that does not fit a sub-buffer at all is refused at once;
/// either refusal is counted lost, as [`Writer::write`] counts it.
pub fn write_waiting<S: Sharing>(
    w: &Writer<'_, S>,
    rtype: u16,
    payload: &[u8],
    clock: &mut impl FnMut() -> u64,
    timeout: Duration,
) -> Result<Committed, WriteError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        match w.try_write(rtype, payload, clock) {
            Ok(c) => return Ok(c),
            Err(WriteError::Full) if start.elapsed() < timeout => {
                std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => {
                w.count_lost(&match e {
                    WriteError::Full => Lost {
                        full: 1,
                        ..Lost::default()
                    },
                    WriteError::TooBig => Lost {
                        too_big: 1,
                        ..Lost::default()
                    },
                });
                return Err(e);
            }
        }
    }
}

/// Tells a [`switch_timer`] to end.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// A signal not given yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Ends the timer now (it flushes once more first).
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// Every `interval`, flushes each of `writers` whose buffer has had an
/// open sub-buffer and no new record for the whole interval, until `stop`;
/// then once more, whatever moved. Run it on a thread of its own
/// (`std::thread::scope`) beside the producer: a record is then readable
/// within about two intervals of its write, however slow the producer,
/// while a busy producer's sub-buffers still fill before they seal (and
/// the timer rarely closes one under a write in flight). The writers must
/// be [`relay_core::Shared`] ones, since the timer's thread flushes them
/// while the producer writes.
pub fn switch_timer(writers: &[Writer<'_>], interval: Duration, stop: &Stop) {
    let mut last: Vec<Option<u64>> = vec![None; writers.len()];
    let mut flush_quiet = |all: bool| {
        for (w, seen) in writers.iter().zip(&mut last) {
            let (position, open) = w.progress();
            if open && (all || *seen == Some(position)) {
                let _ = w.flush(&mut crate::sys::monotonic_ns);
                *seen = None;
            } else {
                *seen = Some(position);
            }
        }
    };
    let mut stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
    while !*stopped {
        let deadline = Instant::now() + interval;
        // Sleep the whole interval (spurious wakeups resume it), then flush.
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = stop
                .wake
                .wait_timeout(stopped, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let all = *stopped;
        drop(stopped);
        flush_quiet(all);
        stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
    }
}
