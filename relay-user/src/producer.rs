//! Userspace producers that wait for room instead of losing records (as
//! LTTng-UST's blocking mode does): a record refused for want of a free
//! sub-buffer is retried until a consumer frees one or `timeout` passes,
//! and counted lost only then.

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
