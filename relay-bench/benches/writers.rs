//! relay-core's writer against C models of the kernel's writers, natively,
//! in one binary: time per record, and instructions per record under
//! callgrind (the binary runs itself under valgrind when it is installed).
//!
//! `cargo bench -p relay-bench --bench writers` (table in BENCHMARKS.md).
//!
//! Paths (each one out-of-line call per record, as a kernel caller makes):
//! - `relay_write`: the kernel's `relay_write()`, bare payload, no time;
//! - `relay_reserve+ts`: `relay_reserve()`, a 16-byte header with an rdtsc
//!   timestamp, the payload: what relay-core's records hold;
//! - `bpf_ringbuf_output`: one ring buffer for all CPUs, spinlocked;
//! - `relay-core kernel`: relay-kmod's `relay_rust_write` path (a
//!   per-CPU-atomic writer looked up by CPU, rdtsc clock, `Writer::write`);
//! - `relay-core user`: `Writer::write` with cross-CPU atomics (`Shared`),
//!   what a userspace producer shared by threads uses;
//! - `empty`: the loop and the call alone, the floor under every row.
//!
//! Geometry: 64 KiB x 8 sub-buffers per CPU, flight-recorder mode (no
//! writer ever waits); the ring buffer has 4 MiB, and a producer that finds
//! it full consumes everything (once per ~58,000 records of 64 B).

use std::hint::black_box;
use std::process::Command;
use std::sync::Barrier;
use std::time::Instant;

use relay_bench::{RelayCpu, RelayModel, RingbufModel};
use relay_core::{
    AtomicU64, Channel, ChannelFlags, Clock, CpuLocal, Geometry, GeometryParams, Writer,
};

const SUBBUF: usize = 64 << 10;
const SUBBUFS: usize = 8;
const RING: usize = 4 << 20;
/// Records per timed run, and timed runs per row (the best is kept).
const RECORDS: u64 = 2_000_000;
const RUNS: usize = 7;
/// Records per callgrind run.
const COUNTED: u64 = 200_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Path {
    Empty,
    RelayWrite,
    RelayReserveTs,
    Ringbuf,
    RingbufTs,
    CoreKernel,
    CoreLocal,
    CoreUser,
    CoreUserWords,
    Clock,
}

const PATHS: [(Path, &str); 10] = [
    (Path::RelayWrite, "relay_write (no timestamp)"),
    (
        Path::RelayReserveTs,
        "relay_reserve + 16-byte header, rdtsc",
    ),
    (Path::Ringbuf, "bpf_ringbuf_output (no timestamp)"),
    (
        Path::RingbufTs,
        "bpf_ringbuf_output of a record stamped with rdtsc",
    ),
    (Path::CoreKernel, "relay-core, relay-kmod's path, rdtsc"),
    (
        Path::CoreLocal,
        "relay-core, the same writer without the lookup",
    ),
    (
        Path::CoreUser,
        "relay-core, userspace Writer::write (Shared), rdtsc",
    ),
    (
        Path::CoreUserWords,
        "relay-core, userspace, payload stored word by word (write() before)",
    ),
    (
        Path::Clock,
        "rdtsc alone (the clock in every timestamped row)",
    ),
    (Path::Empty, "empty loop + call (floor)"),
];

impl Path {
    fn parse(s: &str) -> Option<Path> {
        PATHS
            .iter()
            .find(|(p, _)| format!("{p:?}") == s)
            .map(|&(p, _)| p)
    }
}

#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// relay-kmod's `struct KChannel`, as far as `relay_rust_write` uses it.
struct KChannel<'a> {
    writers: Vec<Writer<'a, CpuLocal>>,
}

/// `relay_rust_write` (relay-kmod/src/relay_main.rs), minus the C ABI:
/// 1 if a sub-buffer sealed (the caller wakes readers), 0, or an error.
#[inline(never)]
fn relay_rust_write(k: &KChannel<'_>, cpu: u32, rtype: u16, data: &[u8]) -> i32 {
    let Some(writer) = k.writers.get(cpu as usize) else {
        return -22;
    };
    match writer.write(rtype, data, &mut rdtsc) {
        Ok(c) => i32::from(c.sealed_any()),
        Err(_) => -28,
    }
}

#[inline(never)]
fn user_write(w: &Writer<'_>, rtype: u16, data: &[u8]) -> i32 {
    match w.write(rtype, data, &mut rdtsc) {
        Ok(c) => i32::from(c.sealed_any()),
        Err(_) => -28,
    }
}

#[inline(never)]
fn local_write(w: &Writer<'_, CpuLocal>, rtype: u16, data: &[u8]) -> i32 {
    match w.write(rtype, data, &mut rdtsc) {
        Ok(c) => i32::from(c.sealed_any()),
        Err(_) => -28,
    }
}

/// What `Writer::write` did before the fast path: a grant, the payload
/// stored as atomic words, the commit.
#[inline(never)]
fn user_write_words(w: &Writer<'_>, rtype: u16, data: &[u8]) -> i32 {
    match w.reserve(data.len(), &mut rdtsc) {
        Ok(mut g) => {
            g.write_payload(data);
            i32::from(g.commit(rtype).sealed.is_some())
        }
        Err(_) => -28,
    }
}

#[inline(never)]
fn clock_only(_cpu: u32, data: &[u8]) -> i32 {
    black_box(data.len());
    rdtsc() as i32
}

#[inline(never)]
fn empty(_cpu: u32, data: &[u8]) -> i32 {
    black_box(data.len()) as i32
}

struct Channels {
    mem: Vec<AtomicU64>,
    geometry: Geometry,
}

impl Channels {
    fn new(cpus: u32) -> Channels {
        let geometry = Geometry::new(GeometryParams {
            subbuf_size: SUBBUF as u64,
            subbuf_count: SUBBUFS as u64,
            cpu_count: cpus,
            page_size: 4096,
        })
        .expect("benchmark geometry");
        let mem = (0..geometry.total_size() / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        Channels { mem, geometry }
    }

    fn channel(&self) -> Channel<'_> {
        Channel::create(
            &self.mem,
            self.geometry,
            ChannelFlags::OVERWRITE,
            Clock::Counter,
        )
        .expect("benchmark channel")
    }
}

/// One thread's writer for `path`, on CPU `cpu`.
enum Target<'a> {
    Empty,
    RelayWrite(RelayCpu<'a>),
    RelayReserveTs(RelayCpu<'a>),
    Ringbuf(&'a RingbufModel),
    /// The ring buffer and the caller's copy of the payload, whose first
    /// word it stamps (as a BPF program stores `bpf_ktime_get_ns()`).
    RingbufTs(&'a RingbufModel, Vec<u8>),
    Kernel(&'a KChannel<'a>),
    Local(Writer<'a, CpuLocal>),
    User(Writer<'a>),
    UserWords(Writer<'a>),
    Clock,
}

/// The measured loop: `n` records of `payload` on CPU `cpu`. Its name is
/// what callgrind collects (`--toggle-collect`).
#[no_mangle]
#[inline(never)]
fn relay_bench_drive(target: &mut Target<'_>, cpu: u32, payload: &[u8], n: u64) {
    match target {
        Target::Empty => {
            for _ in 0..n {
                empty(cpu, black_box(payload));
            }
        }
        Target::RelayWrite(r) => {
            for _ in 0..n {
                r.relay_write(black_box(payload));
            }
        }
        Target::RelayReserveTs(r) => {
            for _ in 0..n {
                r.relay_reserve_ts(black_box(payload));
            }
        }
        Target::Ringbuf(rb) => {
            for _ in 0..n {
                rb.output(black_box(payload));
            }
        }
        Target::RingbufTs(rb, record) => {
            for _ in 0..n {
                if let Some(ts) = record.first_chunk_mut::<8>() {
                    *ts = rdtsc().to_le_bytes();
                }
                rb.output(black_box(record));
            }
        }
        Target::Kernel(k) => {
            for _ in 0..n {
                relay_rust_write(k, cpu, 1, black_box(payload));
            }
        }
        Target::Local(w) => {
            for _ in 0..n {
                local_write(w, 1, black_box(payload));
            }
        }
        Target::User(w) => {
            for _ in 0..n {
                user_write(w, 1, black_box(payload));
            }
        }
        Target::UserWords(w) => {
            for _ in 0..n {
                user_write_words(w, 1, black_box(payload));
            }
        }
        Target::Clock => {
            for _ in 0..n {
                clock_only(cpu, black_box(payload));
            }
        }
    }
}

/// Builds `path`'s writer for `cpus` CPUs (one shared ring buffer for all)
/// and hands `f` one target per CPU.
fn with_targets<R>(path: Path, cpus: u32, size: usize, f: impl FnOnce(Vec<Target<'_>>) -> R) -> R {
    let cpu_list = 0..cpus;
    match path {
        Path::Empty => f(cpu_list.map(|_| Target::Empty).collect()),
        Path::Clock => f(cpu_list.map(|_| Target::Clock).collect()),
        Path::RelayWrite | Path::RelayReserveTs => {
            let mut model = RelayModel::new(cpus, SUBBUF, SUBBUFS);
            let targets = model
                .cpus()
                .into_iter()
                .map(|c| match path {
                    Path::RelayWrite => Target::RelayWrite(c),
                    _ => Target::RelayReserveTs(c),
                })
                .collect();
            f(targets)
        }
        Path::Ringbuf => {
            let rb = RingbufModel::new(RING);
            f(cpu_list.map(|_| Target::Ringbuf(&rb)).collect())
        }
        Path::RingbufTs => {
            let rb = RingbufModel::new(RING);
            f(cpu_list
                .map(|_| Target::RingbufTs(&rb, vec![0x5a; size]))
                .collect())
        }
        Path::CoreKernel => {
            let channels = Channels::new(cpus);
            let channel = channels.channel();
            let k = KChannel {
                writers: cpu_list
                    .map(|cpu| channel.local_writer(cpu).expect("cpu exists"))
                    .collect(),
            };
            f((0..cpus).map(|_| Target::Kernel(&k)).collect())
        }
        Path::CoreLocal => {
            let channels = Channels::new(cpus);
            let channel = channels.channel();
            f(cpu_list
                .map(|cpu| Target::Local(channel.local_writer(cpu).expect("cpu exists")))
                .collect())
        }
        Path::CoreUser | Path::CoreUserWords => {
            let channels = Channels::new(cpus);
            let channel = channels.channel();
            f(cpu_list
                .map(|cpu| {
                    let w = channel.writer(cpu).expect("cpu exists");
                    if path == Path::CoreUser {
                        Target::User(w)
                    } else {
                        Target::UserWords(w)
                    }
                })
                .collect())
        }
    }
}

/// Nanoseconds per record, one thread, one run of `RECORDS` after a
/// warm-up (the caller takes the best of several, paths interleaved).
fn time_one_thread(path: Path, size: usize) -> f64 {
    let payload = vec![0x5au8; size];
    with_targets(path, 1, size, |mut targets| {
        let t = &mut targets[0];
        relay_bench_drive(t, 0, &payload, RECORDS / 10);
        let start = Instant::now();
        relay_bench_drive(t, 0, &payload, RECORDS);
        start.elapsed().as_nanos() as f64 / RECORDS as f64
    })
}

/// Millions of records per second, all threads together, one thread per
/// CPU writing at once: the best of `RUNS` runs.
fn rate_parallel(path: Path, size: usize, threads: u32) -> f64 {
    let payload = vec![0x5au8; size];
    with_targets(path, threads, size, |targets| {
        let barrier = Barrier::new(threads as usize + 1);
        let mut best = f64::INFINITY;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let mut starts = Vec::new();
            for (cpu, mut t) in (0..threads).zip(targets) {
                let (barrier, payload) = (&barrier, &payload);
                let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
                starts.push(go_tx);
                let done = tx.clone();
                s.spawn(move || {
                    while go_rx.recv() == Ok(true) {
                        barrier.wait();
                        relay_bench_drive(&mut t, cpu, payload, RECORDS);
                        done.send(()).expect("main waits");
                    }
                });
            }
            for _ in 0..RUNS {
                for go in &starts {
                    go.send(true).expect("worker waits");
                }
                barrier.wait();
                let start = Instant::now();
                for _ in 0..threads {
                    rx.recv().expect("worker reports");
                }
                best = best.min(start.elapsed().as_secs_f64());
            }
            for go in &starts {
                go.send(false).expect("worker waits");
            }
        });
        (RECORDS * u64::from(threads)) as f64 / best / 1e6
    })
}

/// Instructions per record under callgrind, or None without valgrind.
fn instructions(path: Path, size: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out_file =
        std::env::temp_dir().join(format!("relay-bench-{}.callgrind", std::process::id()));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--toggle-collect=relay_bench_drive")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args(["--count", &format!("{path:?}"), &size.to_string()])
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&out_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let collected = stderr.lines().find_map(|l| {
        l.split_once("Collected :")
            .map(|(_, n)| n.trim().to_string())
    })?;
    let n: f64 = collected.parse().ok()?;
    Some(n / COUNTED as f64)
}

/// Under valgrind: `COUNTED` records of `path` at `size`, nothing else.
fn count(path: Path, size: usize) {
    let payload = vec![0x5au8; size];
    with_targets(path, 1, size, |mut targets| {
        relay_bench_drive(&mut targets[0], 0, &payload, COUNTED)
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let path = args
            .get(i + 1)
            .and_then(|p| Path::parse(p))
            .expect("--count PATH SIZE");
        let size = args
            .get(i + 2)
            .and_then(|s| s.parse().ok())
            .expect("--count PATH SIZE");
        count(path, size);
        return;
    }
    let sizes = [64usize, 1024];
    let has_valgrind = Command::new("valgrind").arg("--version").output().is_ok();
    if !has_valgrind {
        eprintln!(
            "writers: valgrind is not installed: NO instruction counts (apt-get install valgrind)"
        );
    }
    println!("| path | 64 B ns/rec | 64 B instr/rec | 1 KiB ns/rec | 1 KiB instr/rec | 2 threads, 64 B, M rec/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    // Rounds over every path and size, the best of each kept: a drift of
    // the machine's speed during the run then spreads over all rows alike.
    let mut ns = std::collections::HashMap::new();
    for _ in 0..RUNS {
        for &(path, _) in &PATHS {
            for &size in &sizes {
                let t = time_one_thread(path, size);
                let best = ns.entry((path, size)).or_insert(f64::INFINITY);
                *best = f64::min(*best, t);
            }
        }
    }
    for &(path, name) in &PATHS {
        let mut row = format!("| {name} |");
        for &size in &sizes {
            let t = ns[&(path, size)];
            let i = instructions(path, size).map_or("n/a".to_string(), |i| format!("{i:.1}"));
            row += &format!(" {t:.2} | {i} |");
        }
        let par = if matches!(path, Path::Empty | Path::Clock) {
            "".to_string()
        } else {
            format!("{:.1}", rate_parallel(path, 64, 2))
        };
        println!("{row} {par} |");
    }
    println!();
    for &size in &sizes {
        let core = ns[&(Path::CoreKernel, size)];
        println!(
            "{size} B, one thread, relay-core's kernel path against: relay_write {:.2}x, \
             relay_reserve+ts {:.2}x, bpf_ringbuf_output {:.2}x, stamped {:.2}x \
             (time ratios, above 1: relay-core is faster)",
            ns[&(Path::RelayWrite, size)] / core,
            ns[&(Path::RelayReserveTs, size)] / core,
            ns[&(Path::Ringbuf, size)] / core,
            ns[&(Path::RingbufTs, size)] / core,
        );
    }
    println!(
        "userspace Writer::write against storing the payload word by word: {:.2}x at 64 B, {:.2}x at 1 KiB",
        ns[&(Path::CoreUserWords, 64)] / ns[&(Path::CoreUser, 64)],
        ns[&(Path::CoreUserWords, 1024)] / ns[&(Path::CoreUser, 1024)],
    );
}
