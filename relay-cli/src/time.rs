//! How `relay cat` prints timestamps (`--time`): raw clock values, seconds
//! (as `perf script` and `trace-cmd report` print them), seconds since the
//! first record, or UTC wall time through the channel's realtime anchor.

use super::*;
use crate::fmt::push_u64;
use relay_core::Anchor;

/// `--time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TimeArg {
    /// Seconds for a nanosecond clock, raw values for any other.
    Auto,
    /// The clock's values as they are.
    Raw,
    /// Seconds with nanoseconds: 223618.286726104.
    Mono,
    /// Seconds since the first record printed.
    Rel,
    /// UTC wall time, 2026-12-02T16:14:04.123456789Z (needs the channel's
    /// realtime anchor).
    Wall,
}

/// The timestamp printer a channel and `--time` make.
pub(crate) enum Times {
    Raw,
    Seconds,
    Relative { first: Option<u64>, ns: bool },
    Wall(Anchor),
}

impl Times {
    /// For a source whose clock (and anchor) are known, or not (frames).
    pub(crate) fn new(
        arg: TimeArg,
        clock: Option<u32>,
        anchor: Option<Anchor>,
        path: &Path,
    ) -> Result<Times, String> {
        let known = clock.and_then(Clock::from_u32);
        let ns = known.is_some_and(Clock::is_ns);
        let name = match known {
            Some(c) => c.name().to_string(),
            None => clock.map_or("unknown".into(), |c| format!("code {c}")),
        };
        Ok(match arg {
            TimeArg::Auto if ns => Times::Seconds,
            TimeArg::Auto | TimeArg::Raw => Times::Raw,
            TimeArg::Mono if ns => Times::Seconds,
            TimeArg::Mono => {
                return Err(format!(
                    "--time mono: {}: the clock ({name}) does not count nanoseconds",
                    path.display()
                ))
            }
            TimeArg::Rel => Times::Relative { first: None, ns },
            TimeArg::Wall => match anchor {
                Some(a) if ns => Times::Wall(a),
                _ => {
                    return Err(format!(
                        "--time wall: {}: no realtime anchor (the clock is {name}; channels \
                         before format 1.2, frame streams and TSC clocks have none)",
                        path.display()
                    ))
                }
            },
        })
    }

    /// Appends `ts` as text.
    pub(crate) fn push(&mut self, out: &mut Vec<u8>, ts: u64) {
        match self {
            Times::Raw => push_u64(out, ts),
            Times::Seconds => push_seconds(out, ts),
            Times::Relative { first, ns } => {
                let t0 = *first.get_or_insert(ts);
                let (neg, d) = if ts >= t0 {
                    (false, ts - t0)
                } else {
                    (true, t0 - ts)
                };
                if neg {
                    out.push(b'-');
                }
                if *ns {
                    push_seconds(out, d)
                } else {
                    push_u64(out, d)
                }
            }
            Times::Wall(a) => match a.wall_ns(ts) {
                Some(w) => push_utc(out, w),
                None => push_u64(out, ts),
            },
        }
    }

    /// The JSON members this adds after `"ts"` (only wall time adds one).
    pub(crate) fn push_json(&self, out: &mut Vec<u8>, ts: u64) {
        if let Times::Wall(a) = self {
            if let Some(w) = a.wall_ns(ts) {
                out.extend_from_slice(b",\"wall\":\"");
                push_utc(out, w);
                out.push(b'"');
            }
        }
    }
}

/// `S.NNNNNNNNN`.
fn push_seconds(out: &mut Vec<u8>, ns: u64) {
    push_u64(out, ns / 1_000_000_000);
    push_nanos(out, ns % 1_000_000_000);
}

/// `.NNNNNNNNN` of `frac < 10^9`: one digit, then four pairs from the
/// table (constant divisors: multiplications), not nine divisions; the ten
/// bytes go into `out` in one copy of constant size.
fn push_nanos(out: &mut Vec<u8>, frac: u64) {
    let frac = frac % 1_000_000_000;
    let rest = frac % 100_000_000;
    let mut buf = [
        b'.',
        b'0' + (frac / 100_000_000) as u8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    for (at, pair) in [
        rest / 1_000_000,
        rest / 10_000 % 100,
        rest / 100 % 100,
        rest % 100,
    ]
    .into_iter()
    .enumerate()
    {
        let i = pair as usize * 2;
        buf[2 + 2 * at..4 + 2 * at].copy_from_slice(&crate::fmt::PAIRS[i..i + 2]);
    }
    out.extend_from_slice(&buf);
}

/// ISO 8601 UTC with nanoseconds, from ns since the Unix epoch.
fn push_utc(out: &mut Vec<u8>, ns: u64) {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, v: u64| {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    push_u64(out, y);
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem % 3600 / 60);
    out.push(b':');
    two(out, rem % 60);
    push_nanos(out, ns % 1_000_000_000);
    out.push(b'Z');
}

/// (year, month, day) of day `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn dates_and_seconds_print_as_perf_and_iso_8601_do() {
        assert_eq!(s(|v| push_utc(v, 0)), "1970-01-01T00:00:00.000000000Z");
        // 2026-12-02T16:14:04.000000123Z
        assert_eq!(
            s(|v| push_utc(v, 1_796_228_044_000_000_123)),
            "2026-12-02T16:14:04.000000123Z"
        );
        // A leap day.
        assert_eq!(
            s(|v| push_utc(v, 951_782_400 * 1_000_000_000)),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            s(|v| push_seconds(v, 223_618_286_726_104)),
            "223618.286726104"
        );
        assert_eq!(s(|v| push_seconds(v, 5)), "0.000000005");
        let mut rel = Times::Relative {
            first: None,
            ns: true,
        };
        assert_eq!(s(|v| rel.push(v, 1_000)), "0.000000000");
        assert_eq!(s(|v| rel.push(v, 1_500_001_000)), "1.500000000");
        assert_eq!(s(|v| rel.push(v, 999)), "-0.000000001");
    }
}
