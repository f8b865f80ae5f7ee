//! A channel's contents at one moment as a channel file of its own: the
//! flight recorder's `lttng snapshot record`. The copy has the source's
//! geometry and mode and holds, per CPU, what a snapshot reader of the
//! source delivered, records with their timestamps and types and losses
//! where they were reported, so every relay command reads it later as it
//! would have read the source then.

use std::path::Path;

use relay_core::merge::{Event, Flow};
use relay_core::{GeometryParams, Lost};

use crate::file::ChannelFile;
use crate::stream::{Stream, StreamOptions};
use crate::Error;

/// What [`write_snapshot`] copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Records copied.
    pub records: u64,
    /// Losses copied (reported by the source and counted again in the
    /// copy).
    pub lost: Lost,
    /// Per CPU with any, the sub-buffers writers reused while the snapshot
    /// read them (their records are in neither).
    pub overrun: Vec<(u32, u64)>,
    /// Corrupt sub-buffers skipped.
    pub corrupt: u64,
}

/// Reads `source` as a snapshot (it should be opened with
/// [`ChannelFile::open_snapshot`]: a consumer would consume) and writes
/// what it delivers to a new channel file at `dest`, which must not exist
/// (it is removed again if the copy fails).
pub fn write_snapshot(
    source: &ChannelFile,
    dest: &Path,
    options: StreamOptions,
) -> Result<SnapshotSummary, Error> {
    let g = source.geometry();
    let params = GeometryParams {
        subbuf_size: g.subbuf_size().into(),
        subbuf_count: g.subbuf_count().into(),
        cpu_count: g.cpu_count(),
        page_size: 0,
    };
    let channel = source.channel();
    let clock =
        relay_core::Clock::from_u32(channel.clock()).unwrap_or(relay_core::Clock::Unspecified);
    let copy = ChannelFile::create_as(dest, params, source.flags(), clock, channel.anchor())?;
    let result = fill(source, &copy, options);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn fill(
    source: &ChannelFile,
    copy: &ChannelFile,
    options: StreamOptions,
) -> Result<SnapshotSummary, Error> {
    let cpus = source.geometry().cpu_count() as usize;
    let options = StreamOptions {
        follow: false,
        ..options
    };
    let mut summary = SnapshotSummary::default();
    // Per CPU: the last timestamp written, and whether a sub-buffer is open
    // (a loss is placed right before the next record by closing it first).
    let mut last_ts = vec![0u64; cpus];
    let mut open = vec![false; cpus];
    let mut failed: Option<String> = None;
    let mut stream = Stream::new(source, options);
    while failed.is_none()
        && stream
            .next_batch(usize::MAX, &mut |e| {
                match e {
                    Event::Record { cpu, record } => {
                        let Some(w) = copy.writer(cpu) else {
                            failed = Some(format!("cpu {cpu}: not in the copy"));
                            return Flow::Stop;
                        };
                        let ts = record.ts;
                        if let Err(e) = w.write(record.rtype, record.payload, &mut || ts) {
                            failed = Some(format!("cpu {cpu}: record at ts {ts}: {e}"));
                            return Flow::Stop;
                        }
                        summary.records += 1;
                        last_ts[cpu as usize] = ts;
                        open[cpu as usize] = true;
                    }
                    Event::Lost { cpu, lost, .. } => {
                        if let Some(w) = copy.writer(cpu) {
                            let i = cpu as usize;
                            if std::mem::take(&mut open[i]) {
                                let ts = last_ts[i];
                                let _ = w.flush(&mut || ts);
                            }
                            w.count_lost(&lost);
                            summary.lost = summary.lost.plus(&lost);
                        }
                    }
                    Event::Corrupt { .. } => summary.corrupt += 1,
                }
                Flow::Take
            })
            .is_some()
    {}
    if let Some(why) = failed {
        return Err(Error::Io {
            path: copy.path().to_path_buf(),
            op: "snapshot",
            source: std::io::Error::other(why),
        });
    }
    for cpu in 0..cpus {
        if let (true, Some(w)) = (open[cpu], copy.writer(cpu as u32)) {
            let ts = last_ts[cpu];
            let _ = w.flush(&mut || ts);
        }
    }
    summary.overrun = stream.overrun_subbufs();
    Ok(summary)
}
