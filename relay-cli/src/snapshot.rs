//! `relay snapshot`: a channel's contents as a channel file of its own.

use super::*;

pub(crate) fn snapshot(
    path: &Path,
    output: &Path,
    cpus: Vec<u32>,
    flush: bool,
) -> Result<(), Error> {
    if flush {
        flush_all(&open_producer(path)?);
    }
    let source = ChannelFile::open_snapshot(path)?;
    let options = StreamOptions {
        cpus,
        ..StreamOptions::default()
    };
    let s = relay_user::snapshot::write_snapshot(&source, output, options)?;
    println!(
        "{}: {} records, {} lost, to {}",
        path.display(),
        s.records,
        s.lost.total(),
        output.display()
    );
    for (cpu, n) in s.overrun {
        eprintln!(
            "relay: {}: cpu {cpu}: {n} sub-buffers were overwritten while the snapshot read them (their records are missing from it)",
            path.display()
        );
    }
    if s.corrupt == 0 {
        Ok(())
    } else {
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            subbufs: s.corrupt,
        })
    }
}
