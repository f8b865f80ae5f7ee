//! `relay-test fuzz SECONDS SEED PROTECTED TARGET...`: random sequences of
//! system calls on relay-kmod's files for SECONDS, for the soak in the
//! checking kernel. Nothing it does may make the kernel warn, and the
//! legitimate consumer of the PROTECTED channel must still verify.
//!
//! The calls: `open` (any flags) of `/dev/relay/control`, the TARGET
//! channels, their per-CPU files and the PROTECTED channel; `ioctl` with
//! every command of the uapi and random ones, with random structs, short
//! buffers, null and kernel pointers; `mmap` at random offsets, lengths and
//! protections, shared and private, then a read (and a scribble where
//! writable) of the mapping, `mremap` to grow, shrink or move it, `fork`
//! while mapped (the child touches the mapping and exits), `munmap`;
//! `read`, `write`, `poll` and `close`.
//!
//! The PROTECTED channel is opened read-only and never destroyed by name:
//! a process that can write a channel's consumer pages owns its consumer
//! state (FORMAT.md, "Readers"), so a consumer can only be protected from
//! processes that cannot. Loads and benchmarks the fuzzer starts are kept
//! short (their record counts bounded) so that it keeps calling.

use std::ffi::{c_int, c_ulong, c_void, CString};

// The calls main.rs declares already.
use super::{ioctl, libc_write as write, mmap, munmap, poll};

const O_RDONLY: c_int = 0;
const O_WRONLY: c_int = 1;
const O_RDWR: c_int = 2;
const O_NONBLOCK: c_int = 0o4000;
const MREMAP_MAYMOVE: c_int = 1;

extern "C" {
    fn open(path: *const i8, flags: c_int, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize;
    fn mremap(old: *mut c_void, old_len: usize, new_len: usize, flags: c_int, ...) -> *mut c_void;
    fn fork() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
}

/// xorshift64*: reproducible from the seed the log prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len() as u64) as usize)
        }
    }
}

#[derive(Clone, Copy)]
struct Map {
    addr: *mut c_void,
    len: usize,
    /// PROT_NONE mappings are made too; only readable ones are touched.
    readable: bool,
    writable: bool,
}

const KINDS: [&str; 11] = [
    "open", "close", "ioctl", "mmap", "mremap", "munmap", "fork", "read", "write", "poll", "touch",
];

/// The ioctl numbers of relay_uapi.h with their struct sizes.
fn known_ioctls() -> [(u64, usize); 6] {
    [(1, 72), (2, 32), (3, 24), (4, 24), (5, 72), (6, 88)]
}

fn ioc(dir: u64, nr: u64, size: usize) -> c_ulong {
    (dir << 30 | (size as u64 & 0x3fff) << 16 | (b'r' as u64) << 8 | (nr & 0xff)) as c_ulong
}

/// Fills a struct-sized buffer with random words, then bounds what would
/// keep the kernel busy for long: a load's or a benchmark's record count
/// (the first word), and a channel's size (create).
fn random_struct(rng: &mut Rng, nr: u64, buf: &mut [u8], names: &[String]) {
    for chunk in buf.chunks_mut(8) {
        let w = match rng.below(4) {
            0 => 0,
            1 => rng.below(300),
            2 => 1 << rng.below(64),
            _ => rng.next(),
        }
        .to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    // The shaping below needs the whole struct: a random command number
    // with a random size gets random bytes only.
    let whole = known_ioctls()
        .iter()
        .any(|&(n, size)| n == nr && size == buf.len());
    if !whole {
        return;
    }
    match nr {
        // create: a fuzz name, and most of the time a plausible geometry.
        1 => {
            let name = format!("fz{}", rng.below(8));
            buf[..32].fill(0);
            buf[..name.len()].copy_from_slice(name.as_bytes());
            if rng.below(4) != 0 {
                buf[32..40].copy_from_slice(&(1u64 << (7 + rng.below(10))).to_le_bytes());
                buf[40..48].copy_from_slice(&rng.below(40).to_le_bytes());
                buf[48..56].copy_from_slice(&(rng.below(2) | rng.below(6) << 8).to_le_bytes());
                buf[68..72].fill(0);
            }
        }
        // destroy: a fuzz channel by name (never the protected one).
        2 => {
            buf.fill(0);
            if let Some(n) = names.get(rng.below(names.len() as u64 + 1) as usize) {
                buf[..n.len()].copy_from_slice(n.as_bytes());
            }
        }
        // load: few records, and no rate that would stretch them.
        5 => {
            buf[..8].copy_from_slice(&rng.below(200).to_le_bytes());
            let rate = if rng.below(2) == 0 {
                0
            } else {
                10_000 + rng.below(100_000)
            };
            buf[8..16].copy_from_slice(&rate.to_le_bytes());
        }
        // bench: few records, and a relay channel (relay_open's, which
        // warns when its memory cannot be had) of at most 1 MiB per CPU.
        6 => {
            buf[..8].copy_from_slice(&rng.below(200).to_le_bytes());
            buf[8..16].copy_from_slice(&(1u64 << (7 + rng.below(10))).to_le_bytes());
            buf[16..24].copy_from_slice(&rng.below(17).to_le_bytes());
        }
        _ => {}
    }
}

pub fn run(args: &[String]) -> ! {
    let usage =
        || -> ! { super::fail("usage: relay-test fuzz SECONDS SEED PROTECTED TARGET...".into()) };
    let (Some(secs), Some(seed), Some(protected)) = (
        args.first().and_then(|s| s.parse::<u64>().ok()),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
        args.get(2),
    ) else {
        usage()
    };
    let targets: Vec<String> = args[3..].to_vec();
    let mut paths: Vec<String> = vec![
        "/dev/relay/control".into(),
        format!("/dev/relay/{protected}"),
    ];
    for t in &targets {
        paths.push(format!("/dev/relay/{t}"));
        for cpu in 0..2 {
            paths.push(format!("/dev/relay/{t}.cpu{cpu}"));
        }
    }
    for i in 0..8 {
        paths.push(format!("/dev/relay/fz{i}"));
    }
    let names: Vec<String> = (0..8)
        .map(|i| format!("fz{i}"))
        .chain(targets.iter().cloned())
        .collect();
    let protected_path = format!("/dev/relay/{protected}");
    let mut rng = Rng(seed | 1);
    let mut fds: Vec<(c_int, bool)> = Vec::new(); // (fd, may write its consumer pages)
    let mut maps: Vec<Map> = Vec::new();
    let mut counts = [0u64; KINDS.len()];
    let mut ok = [0u64; KINDS.len()];
    let mut buf = vec![0u8; 1 << 17];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let page = 4096usize;
    while std::time::Instant::now() < deadline {
        let kind = rng.below(KINDS.len() as u64) as usize;
        let fd = rng.pick(&fds).copied();
        let good = match KINDS[kind] {
            "open" if fds.len() < 24 => {
                let path = rng.pick(&paths).unwrap().clone();
                let mut flags = [O_RDONLY, O_WRONLY, O_RDWR][rng.below(3) as usize];
                if rng.below(2) == 0 {
                    flags |= O_NONBLOCK;
                }
                if path == protected_path {
                    flags = O_RDONLY | (flags & O_NONBLOCK);
                }
                let c = CString::new(path.clone()).unwrap();
                // SAFETY: a NUL-terminated path.
                let f = unsafe { open(c.as_ptr(), flags) };
                if f >= 0 {
                    fds.push((f, path != protected_path));
                }
                f >= 0
            }
            "close" => match fd {
                Some((f, _)) => {
                    fds.retain(|&(g, _)| g != f);
                    // SAFETY: an fd this process opened; mappings stay valid.
                    unsafe { close(f) == 0 }
                }
                None => false,
            },
            "ioctl" => match fd {
                Some((f, _)) => {
                    let (nr, size) = if rng.below(8) == 0 {
                        (rng.below(16), rng.below(200) as usize)
                    } else {
                        *rng.pick(&known_ioctls()).unwrap()
                    };
                    let dir = if rng.below(8) == 0 { rng.below(4) } else { 3 };
                    // A short buffer sometimes: the kernel must not read past it.
                    let len = if rng.below(8) == 0 {
                        rng.below(size as u64 + 1) as usize
                    } else {
                        size
                    };
                    let mut arg = vec![0u8; len.max(size) + 8];
                    random_struct(&mut rng, nr, &mut arg[..size], &names);
                    // Pointers inside a stats struct: sometimes a real buffer.
                    if nr == 4 && size >= 8 && rng.below(2) == 0 {
                        arg[..8].copy_from_slice(&(buf.as_mut_ptr() as u64).to_le_bytes());
                        arg[8..12].copy_from_slice(&(rng.below(9) as u32).to_le_bytes());
                    }
                    let p: u64 = match rng.below(10) {
                        0 => 0,
                        1 => 0xffff_8880_0000_0000,
                        2 => 1,
                        _ => arg.as_mut_ptr() as u64,
                    };
                    // SAFETY: the kernel checks every user pointer; `arg`
                    // is as long as the encoded size.
                    unsafe { ioctl(f, ioc(dir, nr, size), p) == 0 }
                }
                None => false,
            },
            "mmap" if maps.len() < 16 => match fd {
                Some((f, may_write)) => {
                    let off = match rng.below(4) {
                        0 => rng.below(64) as i64 * page as i64,
                        1 => rng.next() as i64 & !(page as i64 - 1),
                        2 => rng.below(1 << 20) as i64,
                        _ => 0,
                    };
                    let len = match rng.below(3) {
                        0 => page,
                        1 => (1 + rng.below(64) as usize) * page,
                        _ => rng.below(1 << 22) as usize,
                    };
                    let mut prot = [1, 3, 0, 1 | 4][rng.below(4) as usize];
                    if !may_write {
                        prot &= !2;
                    }
                    let flags = if rng.below(4) == 0 { 2 } else { 1 }; // PRIVATE : SHARED
                                                                       // SAFETY: a new mapping at an address of the kernel's choosing.
                    let a = unsafe { mmap(std::ptr::null_mut(), len, prot, flags, f, off) };
                    if a != super::MAP_FAILED {
                        maps.push(Map {
                            addr: a,
                            len,
                            readable: prot & 1 != 0,
                            writable: prot & 2 != 0,
                        });
                    }
                    a != super::MAP_FAILED
                }
                None => false,
            },
            "touch" => match rng.pick(&maps).copied() {
                // Read a word of the mapping; scribble where writable.
                Some(m) if m.len >= 8 && m.readable => {
                    let at = (rng.below((m.len / 8) as u64) as usize) * 8;
                    // SAFETY: inside a live mapping of ours (a read of a
                    // page beyond the channel would be SIGBUS, which the
                    // kernel refused to map in the first place).
                    unsafe {
                        let p = m.addr.cast::<u8>().add(at).cast::<u64>();
                        let v = p.read_volatile();
                        if m.writable {
                            p.write_volatile(v ^ rng.next());
                        }
                    }
                    true
                }
                _ => false,
            },
            "mremap" => match rng.pick(&maps).copied() {
                Some(m) => {
                    let new_len = match rng.below(3) {
                        0 => m.len + page,
                        1 => (m.len / 2).max(page),
                        _ => m.len,
                    };
                    // SAFETY: a mapping of ours; on success the old range is
                    // gone and the new one replaces it in `maps`.
                    let a = unsafe { mremap(m.addr, m.len, new_len, MREMAP_MAYMOVE) };
                    if a != super::MAP_FAILED {
                        maps.retain(|x| x.addr != m.addr);
                        maps.push(Map {
                            addr: a,
                            len: new_len,
                            ..m
                        });
                    }
                    a != super::MAP_FAILED
                }
                None => false,
            },
            "munmap" => match rng.pick(&maps).copied() {
                Some(m) => {
                    maps.retain(|x| x.addr != m.addr);
                    // SAFETY: a mapping of ours, no longer referenced.
                    unsafe { munmap(m.addr, m.len) == 0 }
                }
                None => false,
            },
            "fork" if maps.iter().any(|m| m.readable) => {
                let readable: Vec<Map> = maps.iter().copied().filter(|m| m.readable).collect();
                let m = *rng.pick(&readable).unwrap();
                let scribble = rng.next();
                // SAFETY: the child only touches the inherited mapping and
                // leaves with _exit (no destructors, no stdio).
                let pid = unsafe { fork() };
                if pid == 0 {
                    unsafe {
                        let p = m.addr.cast::<u64>();
                        let v = p.read_volatile();
                        if m.writable {
                            p.write_volatile(v ^ scribble);
                        }
                        _exit(0)
                    }
                }
                let mut status = 0;
                // SAFETY: our child.
                pid > 0 && unsafe { waitpid(pid, &mut status, 0) } == pid
            }
            "read" => match fd {
                Some((f, _)) => {
                    let len = rng.below(buf.len() as u64) as usize;
                    // SAFETY: `buf` holds `len` bytes.
                    unsafe { read(f, buf.as_mut_ptr().cast(), len) >= 0 }
                }
                None => false,
            },
            "write" => match fd {
                Some((f, _)) => {
                    let len = rng.below(70_000.min(buf.len() as u64)) as usize;
                    for b in &mut buf[..len.min(64)] {
                        *b = rng.next() as u8;
                    }
                    // SAFETY: `buf` holds `len` bytes.
                    unsafe { write(f, buf.as_ptr().cast(), len) >= 0 }
                }
                None => false,
            },
            "poll" if !fds.is_empty() => {
                let mut set: Vec<super::PollFd> = (0..1 + rng.below(4))
                    .map(|_| super::PollFd {
                        fd: rng.pick(&fds).unwrap().0,
                        events: super::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: `set` is a live array of pollfds.
                unsafe { poll(set.as_mut_ptr(), set.len() as u64, rng.below(5) as c_int) >= 0 }
            }
            _ => continue,
        };
        counts[kind] += 1;
        ok[kind] += u64::from(good);
    }
    for m in &maps {
        // SAFETY: our mappings.
        unsafe { munmap(m.addr, m.len) };
    }
    for &(f, _) in &fds {
        // SAFETY: our fds.
        unsafe { close(f) };
    }
    let total: u64 = counts.iter().sum();
    let by_kind: Vec<String> = KINDS
        .iter()
        .zip(counts.iter().zip(&ok))
        .map(|(k, (n, s))| format!("{k}={n}/{s}"))
        .collect();
    println!(
        "relay-guest-test: fuzz ok seconds={secs} seed={seed} calls={total} (kind=calls/succeeded) {}",
        by_kind.join(" ")
    );
    std::process::exit(0)
}
