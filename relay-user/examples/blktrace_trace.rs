//! Writes a synthetic blktrace trace, as blktrace saves one: `DIR/sdb.blktrace.N`
//! for N CPUs, each request queued (Q), allocated (G), dispatched (D) and
//! completed (C) on one CPU, requests of 4 to 64 KiB, reads and writes, a
//! microsecond apart. For benchmarks against blkparse
//! (relay-cli/benches/blkparse.sh).
//!
//!   cargo run --release -p relay-user --example blktrace_trace -- DIR CPUS REQUESTS

use relay_user::blktrace::{category as c, encode_record, Endian, Trace, MAGIC, VERSION};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, cpus, requests] = &args[..] else {
        eprintln!("usage: blktrace_trace DIR CPUS REQUESTS");
        std::process::exit(2);
    };
    let (cpus, requests): (u32, u64) = (cpus.parse().unwrap(), requests.parse().unwrap());
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut files: Vec<Vec<u8>> = vec![Vec::new(); cpus as usize];
    let mut seq = vec![0u32; cpus as usize];
    let (mut t, mut sector, mut rng) = (1_000u64, 0u64, 0x9e37_79b9_7f4a_7c15u64);
    for i in 0..requests {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let cpu = (i % u64::from(cpus)) as u32;
        let dir_bit = if rng & 1 == 0 { c::READ } else { c::WRITE };
        let bytes = 4096u32 << ((rng >> 1) % 5);
        for (dt, action, pid) in [
            (0, c::QUEUE | 1, 100 + cpu),
            (100, c::QUEUE | 4, 100 + cpu),
            (200, c::ISSUE | 7, 100 + cpu),
            (5_000, c::COMPLETE | 8, 0),
        ] {
            let s = &mut seq[cpu as usize];
            *s += 1;
            let trace = Trace {
                magic: MAGIC | u32::from(VERSION),
                sequence: *s,
                time: t + dt,
                sector,
                bytes,
                action: c::FS | dir_bit | action,
                pid,
                device: (8 << 20) | 16,
                cpu,
                error: 0,
                pdu: Vec::new(),
            };
            files[cpu as usize].extend(encode_record(&trace, Endian::Little));
        }
        sector += u64::from(bytes >> 9);
        t += 1_000;
    }
    for (cpu, bytes) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("sdb.blktrace.{cpu}")), bytes).unwrap();
    }
}
