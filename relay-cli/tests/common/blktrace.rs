//! What the blktrace tests share: synthesised per-CPU blktrace files and
//! Debian's blkparse to compare with.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relay_user::blktrace::{
    category as c, encode_record, Endian, Trace, MAGIC, TN_PROCESS, VERSION,
};

use super::relay;

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("relay-blktrace-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `<dir>/<base><cpu>` for every CPU.
pub fn write_files(dir: &Path, base: &str, cpus: &[Vec<u8>]) {
    for (cpu, bytes) in cpus.iter().enumerate() {
        std::fs::write(dir.join(format!("{base}{cpu}")), bytes).unwrap();
    }
}

/// Debian's blkparse on `<dir>/<dev>.blktrace.N`: its event lines and its
/// summary (`-o`: the file gets those; "Input file ... added" goes to
/// stdout).
pub fn blkparse(dir: &Path, dev: &str) -> Vec<u8> {
    let out_file = dir.with_extension("blkparse.txt");
    let run = Command::new("blkparse")
        .args(["-i", dev, "-D"])
        .arg(dir)
        .arg("-o")
        .arg(&out_file)
        .output();
    let run = match run {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "blkparse is not installed: these tests compare relay cat with Debian's blkparse. \
             Install it with `apt-get install blktrace` (cargo xtask test does this)"
        ),
        Err(e) => panic!("cannot run blkparse: {e}"),
    };
    assert!(
        run.status.success(),
        "blkparse failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(&out_file).unwrap()
}

pub fn relay_cat(args: &[&str], dir: &Path) -> Output {
    relay()
        .args(["cat", "--format", "blktrace"])
        .args(args)
        .arg(dir)
        .output()
        .expect("run relay")
}

/// Shows the first differing line of two outputs.
pub fn assert_same(relay: &[u8], blkparse: &[u8]) {
    if relay == blkparse {
        return;
    }
    let (r, b) = (
        String::from_utf8_lossy(relay),
        String::from_utf8_lossy(blkparse),
    );
    for (i, (x, y)) in r.lines().zip(b.lines()).enumerate() {
        assert_eq!(x, y, "line {} differs (relay left, blkparse right)", i + 1);
    }
    panic!(
        "relay printed {} lines, blkparse {} (the shorter is a prefix)",
        r.lines().count(),
        b.lines().count()
    );
}

pub const DEV: u32 = (8 << 20) | 16; // sdb
pub const DM: u32 = (253 << 20) | 2; // a device-mapper device remapped onto sdb

/// xorshift: deterministic variety.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Per-CPU record lists, as the kernel would lay them out.
pub struct Workload {
    pub cpus: Vec<Vec<Trace>>,
    pub seq: Vec<u32>,
}

pub fn base(cpu: u32) -> Trace {
    Trace {
        magic: MAGIC | u32::from(VERSION),
        sequence: 0,
        time: 0,
        sector: 0,
        bytes: 0,
        action: 0,
        pid: 0,
        device: DEV,
        cpu,
        error: 0,
        pdu: Vec::new(),
    }
}

impl Workload {
    pub fn new(cpus: usize) -> Self {
        Workload {
            cpus: vec![Vec::new(); cpus],
            seq: vec![0; cpus],
        }
    }

    /// An I/O event on `cpu` (sequence numbers per CPU, as the kernel's).
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        cpu: u32,
        time: u64,
        action: u32,
        pid: u32,
        sector: u64,
        bytes: u32,
        pdu: Vec<u8>,
    ) {
        self.seq[cpu as usize] += 1;
        self.cpus[cpu as usize].push(Trace {
            sequence: self.seq[cpu as usize],
            time,
            sector,
            bytes,
            action,
            pid,
            pdu,
            ..base(cpu)
        });
    }

    pub fn notify(&mut self, cpu: u32, time: u64, action: u32, pid: u32, pdu: Vec<u8>) {
        self.cpus[cpu as usize].push(Trace {
            time,
            action,
            pid,
            pdu,
            ..base(cpu)
        });
    }

    pub fn name(&mut self, cpu: u32, time: u64, pid: u32, name: &str) {
        let mut comm = name.as_bytes().to_vec();
        comm.resize(16, 0);
        self.notify(cpu, time, TN_PROCESS, pid, comm);
    }

    pub fn files(&self, endian: Endian) -> Vec<Vec<u8>> {
        self.cpus
            .iter()
            .map(|recs| recs.iter().flat_map(|t| encode_record(t, endian)).collect())
            .collect()
    }
}

pub fn be64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// Requests queued, dispatched, completed over about 4 seconds: reads and
/// writes of 512 B to 512 KiB, merges, requeues, unplugs, packet commands,
/// driver data, on CPUs 0, 1 and 3 (CPU 2's file is empty).
pub fn seconds_of_io(seed: u64) -> Workload {
    let mut rng = Rng(seed);
    let mut w = Workload::new(4);
    let mut comm = b"fio".to_vec();
    comm.resize(16, 0);
    w.notify(0, 1_000, TN_PROCESS, 77, comm);
    let busy = [0u32, 1, 3];
    let mut t = 5_000_000u64;
    let mut sector = 4096u64;
    for _ in 0..3000 {
        let cpu = busy[rng.below(3) as usize];
        let dir = if rng.below(2) == 0 { c::READ } else { c::WRITE };
        let bytes = 512 << rng.below(11);
        let fs = c::FS | dir;
        match rng.below(20) {
            0 => {
                let pc = c::PC | dir;
                w.event(cpu, t, pc | c::QUEUE | 1, 77, 0, bytes, Vec::new());
                w.event(
                    cpu,
                    t + 10,
                    pc | c::ISSUE | 7,
                    77,
                    0,
                    bytes,
                    vec![0x28, 0, 0],
                );
                if rng.below(4) == 0 {
                    w.event(cpu, t + 20, pc | c::REQUEUE | 6, 77, 0, bytes, Vec::new());
                }
                w.event(cpu, t + 30, pc | c::COMPLETE | 8, 77, 0, bytes, vec![0]);
            }
            1 => w.event(cpu, t, fs | c::QUEUE | 2, 77, sector, bytes, Vec::new()),
            2 => w.event(cpu, t, fs | c::QUEUE | 3, 77, sector, bytes, Vec::new()),
            3 => w.event(cpu, t, c::FS | 10, 77, 0, 0, be64(rng.below(9))),
            4 => w.event(cpu, t, c::FS | 11, 77, 0, 0, be64(rng.below(9))),
            5 => w.event(cpu, t, c::DRV_DATA | 17, 0, sector, 0, vec![1, 2, 3]),
            _ => {
                let done = busy[rng.below(3) as usize];
                w.event(cpu, t, fs | c::QUEUE | 1, 77, sector, bytes, Vec::new());
                w.event(
                    cpu,
                    t + 50,
                    fs | c::ISSUE | 7,
                    77,
                    sector,
                    bytes,
                    Vec::new(),
                );
                if rng.below(10) == 0 {
                    w.event(
                        cpu,
                        t + 60,
                        fs | c::REQUEUE | 6,
                        77,
                        sector,
                        bytes,
                        Vec::new(),
                    );
                    w.event(
                        cpu,
                        t + 70,
                        fs | c::ISSUE | 7,
                        77,
                        sector,
                        bytes,
                        Vec::new(),
                    );
                }
                let late = t + 100_000 + rng.below(3_000_000);
                w.event(
                    done,
                    late,
                    fs | c::COMPLETE | 8,
                    0,
                    sector,
                    bytes,
                    Vec::new(),
                );
            }
        }
        sector += u64::from(bytes >> 9);
        t += 1_000_000 + rng.below(400_000);
    }
    // Each CPU's file in time order, as the kernel writes it.
    for cpu in &mut w.cpus {
        cpu.sort_by_key(|t| t.time);
    }
    w
}
