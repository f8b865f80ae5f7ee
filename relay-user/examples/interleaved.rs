//! Writes a channel file for reader benchmarks: CPUS CPU buffers of
//! 64-byte records, RUN records per CPU in turn (1: every record switches
//! CPU, the worst case for a merge), timestamps increasing across CPUs,
//! PER_CPU records each, every CPU flushed at the end. PAYLOAD is
//! `binary` (64 bytes of 0x07, which text output escapes to four bytes
//! each: the worst case for `relay cat`'s text) or `text` (64 printable
//! ASCII bytes, a log line's).
//!
//! `cargo run --release -p relay-user --example interleaved -- PATH CPUS PER_CPU RUN [binary|text]`
//! (used by `relay-cli/benches/cat.sh`).

use relay_core::{ChannelFlags, GeometryParams};
use relay_user::ChannelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, cpus, per_cpu, run, kind) = match args.as_slice() {
        [path, cpus, per_cpu, run] => (path, cpus, per_cpu, run, "binary"),
        [path, cpus, per_cpu, run, kind] => (path, cpus, per_cpu, run, kind.as_str()),
        _ => return Err("usage: interleaved PATH CPUS PER_CPU RUN [binary|text]".into()),
    };
    let (cpus, per_cpu, run): (u32, u64, u64) = (cpus.parse()?, per_cpu.parse()?, run.parse()?);
    if run == 0 || per_cpu % run != 0 {
        return Err("RUN must divide PER_CPU".into());
    }
    // 80 bytes a record with its header; 64 KiB sub-buffers, one spare.
    let subbuf = 64 * 1024u64;
    let per_subbuf = (subbuf - 128) / 80;
    let subbufs = (per_cpu.div_ceil(per_subbuf) + 1)
        .next_power_of_two()
        .max(2);
    let _ = std::fs::remove_file(path);
    let params = GeometryParams {
        subbuf_size: subbuf,
        subbuf_count: subbufs,
        cpu_count: cpus,
        page_size: 0,
    };
    let file = ChannelFile::create(path.as_ref(), params, ChannelFlags::empty())?;
    let writers: Vec<_> = (0..cpus)
        .map(|c| file.local_writer(c).ok_or("no writer"))
        .collect::<Result<_, _>>()?;
    let payload: [u8; 64] = match kind {
        "binary" => [7u8; 64],
        "text" => *b"sched_switch: prev=kworker/u8:2 next=swapper/0 prio=120 state=R ",
        _ => return Err(format!("PAYLOAD: binary or text, not {kind:?}").into()),
    };
    let mut t = 0u64;
    for _ in 0..per_cpu / run {
        for w in &writers {
            for _ in 0..run {
                t += 1;
                w.write(1, &payload, &mut || t)
                    .map_err(|e| format!("{e:?}"))?;
            }
        }
    }
    for w in &writers {
        let _ = w.flush(&mut || t);
    }
    println!("{path}: {cpus} CPUs, {} records", u64::from(cpus) * per_cpu);
    Ok(())
}
