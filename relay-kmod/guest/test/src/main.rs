//! The guest's bad-input test (`cargo xtask vm-test`): hostile userspace
//! against relay-kmod. It speaks the raw ABI of `relay_uapi.h` on purpose
//! (relay-user's typed wrappers cannot send most of these):
//!
//! - every field of every ioctl out of range, each with its errno;
//! - name collisions, unknown names, unknown ioctls, bad pointers;
//! - writable or private mappings of anything but the consumer pages,
//!   `mprotect` upgrades, out-of-range offsets, mappings of per-CPU files;
//! - garbage in the consumer pages while the kernel writes, then reads
//!   through the mapping and through `read()`;
//! - destroying a channel while it is open and mapped: the mapping stays
//!   valid, the name is gone at once.
//!
//! `relay-test fuzz ...` is the soak's system-call fuzzer instead
//! ([`fuzz`]).
//!
//! Prints `relay-guest-test: <check> ok` lines, or `relay-guest-test:
//! FAILED: ...` and exits 1. The kernel log is checked by the harness.

use std::ffi::{c_int, c_ulong, c_void};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::exit;
use std::sync::atomic::{AtomicU64, Ordering};

use relay_core::Channel;

mod fuzz;

const NAME_MAX: usize = 32;

/// `struct relay_create`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Create {
    name: [u8; NAME_MAX],
    subbuf_size: u64,
    subbuf_count: u64,
    flags: u64,
    total_size: u64,
    cpu_count: u32,
    id: u32,
}

/// `struct relay_destroy`.
#[repr(C)]
struct Destroy {
    name: [u8; NAME_MAX],
}

/// `struct relay_flush`.
#[repr(C)]
#[derive(Default)]
struct Flush {
    cpu: u32,
    reserved: u32,
    barrier: u64,
    next: u64,
}

/// `struct relay_stats`.
#[repr(C)]
#[derive(Default)]
struct Stats {
    cpus_ptr: u64,
    cpus: u32,
    reserved: u32,
    memory_bytes: u64,
}

/// `struct relay_load`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Load {
    records: u64,
    rate: u64,
    size: u32,
    flags: u32,
    attempted: u64,
    written: u64,
    irq_writes: u64,
    nmi_writes: u64,
    elapsed_ns: u64,
    cpus: u32,
    reserved: u32,
}

const fn ioc(dir: u64, nr: u64, size: usize) -> c_ulong {
    (dir << 30 | (size as u64) << 16 | (b'r' as u64) << 8 | nr) as c_ulong
}
const IOC_CREATE: c_ulong = ioc(3, 1, std::mem::size_of::<Create>());
const IOC_DESTROY: c_ulong = ioc(1, 2, std::mem::size_of::<Destroy>());
const IOC_FLUSH: c_ulong = ioc(3, 3, std::mem::size_of::<Flush>());
const IOC_STATS: c_ulong = ioc(3, 4, std::mem::size_of::<Stats>());
const IOC_LOAD: c_ulong = ioc(3, 5, std::mem::size_of::<Load>());

const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 1;
const MAP_PRIVATE: c_int = 2;
const MAP_FIXED: c_int = 0x10;
const MAP_FAILED: *mut c_void = !0usize as *mut c_void;

const EPERM: i32 = 1;
const EBADF: i32 = 9;
const ENOENT: i32 = 2;
const EFAULT: i32 = 14;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const ENOTTY: i32 = 25;
const E2BIG: i32 = 7;
const EACCES: i32 = 13;
const ENAMETOOLONG: i32 = 36;
const EMSGSIZE: i32 = 90;
const EOPNOTSUPP: i32 = 95;

extern "C" {
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn poll(fds: *mut PollFd, n: u64, timeout_ms: c_int) -> c_int;
}

/// `struct pollfd`.
#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

const POLLIN: i16 = 1;

fn fail(msg: String) -> ! {
    println!("relay-guest-test: FAILED: {msg}");
    exit(1)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn name(s: &str) -> [u8; NAME_MAX] {
    let mut n = [0u8; NAME_MAX];
    let len = s.len().min(NAME_MAX);
    n[..len].copy_from_slice(&s.as_bytes()[..len]);
    n
}

fn create_args(n: &str, subbuf_size: u64, subbuf_count: u64, flags: u64) -> Create {
    Create {
        name: name(n),
        subbuf_size,
        subbuf_count,
        flags,
        total_size: 0,
        cpu_count: 0,
        id: 0,
    }
}

/// `ioctl(fd, req, arg)`: 0 or the errno.
fn call<T>(fd: c_int, req: c_ulong, arg: &mut T) -> i32 {
    // SAFETY: `req` encodes the size of `T`, and `arg` is a live `T` the
    // kernel may read and write for the duration of the call.
    if unsafe { ioctl(fd, req, arg as *mut T) } == 0 {
        0
    } else {
        errno()
    }
}

fn expect(what: &str, got: i32, want: i32) {
    if got != want {
        fail(format!("{what}: expected errno {want}, got {got}"));
    }
}

fn control() -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/relay/control")
        .unwrap_or_else(|e| fail(format!("open /dev/relay/control: {e}")))
}

/// Every create field out of range, each with its own errno.
fn bad_creates(ctl: c_int) -> usize {
    let cases: &[(&str, Create, i32)] = &[
        (
            "subbuf_size not a power of two",
            create_args("b", 100, 8, 0),
            EINVAL,
        ),
        ("subbuf_size below 128", create_args("b", 64, 8, 0), EINVAL),
        (
            "subbuf_size above 2^30",
            create_args("b", 1 << 31, 8, 0),
            EINVAL,
        ),
        ("subbuf_count 1", create_args("b", 4096, 1, 0), EINVAL),
        (
            "subbuf_count above 2^20",
            create_args("b", 4096, (1 << 20) + 1, 0),
            EINVAL,
        ),
        (
            "subbuf_count upper half",
            create_args("b", 4096, (1 << 32) | 8, 0),
            EINVAL,
        ),
        ("unknown flags", create_args("b", 4096, 8, 2), EOPNOTSUPP),
        (
            "a flag above the clock",
            create_args("b", 4096, 8, 1 << 16),
            EOPNOTSUPP,
        ),
        (
            "clock 2 (a test counter)",
            create_args("b", 4096, 8, 2 << 8),
            EINVAL,
        ),
        (
            "clock 5 (unknown)",
            create_args("b", 4096, 8, 5 << 8),
            EINVAL,
        ),
        ("total above 1 GiB", create_args("b", 1 << 30, 8, 0), E2BIG),
        ("empty name", create_args("", 4096, 8, 0), EINVAL),
        ("name with '/'", create_args("a/b", 4096, 8, 0), EINVAL),
        ("name with '.'", create_args("a.cpu0", 4096, 8, 0), EINVAL),
        (
            "name \"control\"",
            create_args("control", 4096, 8, 0),
            EINVAL,
        ),
        (
            "name without NUL",
            create_args(&"x".repeat(32), 4096, 8, 0),
            ENAMETOOLONG,
        ),
    ];
    for (what, args, want) in cases {
        let mut c = *args;
        expect(what, call(ctl, IOC_CREATE, &mut c), *want);
    }
    let mut c = create_args("b", 4096, 8, 0);
    c.id = 1;
    expect("id != 0", call(ctl, IOC_CREATE, &mut c), EINVAL);
    let mut c = create_args("b", 4096, 8, 0);
    c.name[5] = b'z'; // garbage after the NUL
    expect(
        "bytes after the name's NUL",
        call(ctl, IOC_CREATE, &mut c),
        EINVAL,
    );
    // Latin-1 letters, which the kernel's isalnum() accepts: ASCII only.
    for byte in [0xC0u8, 0xE9, 0xFF] {
        let mut c = create_args("ab", 4096, 8, 0);
        c.name[1] = byte;
        expect(
            &format!("name with byte {byte:#x}"),
            call(ctl, IOC_CREATE, &mut c),
            EINVAL,
        );
    }
    // Channel numbers are never given twice: a BPF program left with a
    // destroyed channel's number must not write into the next channel.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut c = create_args("again", 4096, 4, 0);
        expect("create again", call(ctl, IOC_CREATE, &mut c), 0);
        ids.push(c.id);
        let mut d = Destroy {
            name: name("again"),
        };
        expect("destroy again", call(ctl, IOC_DESTROY, &mut d), 0);
    }
    if ids.contains(&0) || ids.windows(2).any(|w| w[1] <= w[0]) {
        fail(format!("channel numbers reused or zero: {ids:?}"));
    }
    // SAFETY: a null pointer: the kernel must fault cleanly.
    let r = unsafe { ioctl(ctl, IOC_CREATE, std::ptr::null_mut::<Create>()) };
    expect("null argument", if r == 0 { 0 } else { errno() }, EFAULT);
    let mut junk = 0u64;
    expect("unknown ioctl", call(ctl, ioc(3, 77, 8), &mut junk), ENOTTY);
    let mut d = Destroy { name: name("nope") };
    expect(
        "destroy of an unknown name",
        call(ctl, IOC_DESTROY, &mut d),
        ENOENT,
    );
    cases.len() + 11
}

/// A channel mapped the way a reader maps it.
struct Mapped {
    file: File,
    base: *mut c_void,
    total: usize,
    coff: usize,
    csize: usize,
}

impl Mapped {
    fn open(n: &str, c: &Create) -> Mapped {
        let path = format!("/dev/relay/{n}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| fail(format!("open {path}: {e}")));
        let fd = file.as_raw_fd();
        let total = c.total_size as usize;
        let map = |len: usize, prot: c_int, flags: c_int, off: usize| {
            // SAFETY: a new mapping at an address of the kernel's choosing.
            unsafe { mmap(std::ptr::null_mut(), len, prot, flags, fd, off as i64) }
        };
        let refused = |what: &str, p: *mut c_void, want: i32| {
            if p != MAP_FAILED {
                fail(format!("{what}: mapped"));
            }
            expect(what, errno(), want);
        };
        refused(
            "writable mapping of the whole channel",
            map(total, PROT_READ | PROT_WRITE, MAP_SHARED, 0),
            EPERM,
        );
        refused(
            "private mapping",
            map(total, PROT_READ, MAP_PRIVATE, 0),
            EINVAL,
        );
        refused(
            "mapping past the end",
            map(8192, PROT_READ, MAP_SHARED, total),
            EINVAL,
        );
        let base = map(total, PROT_READ, MAP_SHARED, 0);
        if base == MAP_FAILED {
            fail(format!("read-only mapping: errno {}", errno()));
        }
        // SAFETY: `base` is our mapping, at least one page long.
        if unsafe { mprotect(base, 4096, PROT_READ | PROT_WRITE) } == 0 {
            fail("mprotect(header, RW) succeeded".into());
        }
        expect("mprotect(header, RW)", errno(), EACCES);
        let words = Self::words_at(base, total);
        let channel = Channel::open(words).unwrap_or_else(|e| fail(format!("header: {e}")));
        let g = *channel.geometry();
        let (coff, csize) = (
            g.consumer_offset() as usize,
            (g.data_offset() - g.consumer_offset()) as usize,
        );
        // SAFETY: replaces pages inside our own mapping `base..base + total`.
        let cons = unsafe {
            mmap(
                base.cast::<u8>().add(coff).cast(),
                csize,
                PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_FIXED,
                fd,
                coff as i64,
            )
        };
        if cons == MAP_FAILED {
            fail(format!("writable consumer mapping: errno {}", errno()));
        }
        Mapped {
            file,
            base,
            total,
            coff,
            csize,
        }
    }

    fn words_at<'m>(base: *mut c_void, total: usize) -> &'m [AtomicU64] {
        // SAFETY: `base..base + total` stays mapped while the `Mapped` that
        // owns it lives (callers borrow it); the kernel writes it only
        // atomically, and we store only to the consumer pages.
        unsafe { relay_core::mem::words_from_raw(base.cast(), total) }
            .unwrap_or_else(|e| fail(format!("words: {e}")))
    }

    fn words(&self) -> &[AtomicU64] {
        Self::words_at(self.base, self.total)
    }

    fn fd(&self) -> c_int {
        self.file.as_raw_fd()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing borrowed from it outlives `self`.
        unsafe { munmap(self.base, self.total) };
    }
}

/// Every channel-file ioctl field out of range.
fn bad_channel_ioctls(m: &Mapped) -> usize {
    let fd = m.fd();
    let mut f = Flush {
        cpu: 9999,
        ..Flush::default()
    };
    expect("flush of CPU 9999", call(fd, IOC_FLUSH, &mut f), EINVAL);
    let mut f = Flush {
        reserved: 1,
        ..Flush::default()
    };
    expect("flush reserved != 0", call(fd, IOC_FLUSH, &mut f), EINVAL);
    let mut s = Stats {
        reserved: 1,
        ..Stats::default()
    };
    expect("stats reserved != 0", call(fd, IOC_STATS, &mut s), EINVAL);
    let mut s = Stats {
        cpus_ptr: 8,
        cpus: 4,
        ..Stats::default()
    };
    expect(
        "stats into a bad pointer",
        call(fd, IOC_STATS, &mut s),
        EFAULT,
    );
    let good = Load {
        records: 10,
        size: 64,
        ..Load::default()
    };
    let cases: [(&str, Load); 5] = [
        ("load size 31", Load { size: 31, ..good }),
        (
            "load size 65537",
            Load {
                size: 65537,
                ..good
            },
        ),
        (
            "load records 2^32 + 1",
            Load {
                records: (1 << 32) + 1,
                ..good
            },
        ),
        ("load unknown flags", Load { flags: 4, ..good }),
        (
            "load reserved != 0",
            Load {
                reserved: 1,
                ..good
            },
        ),
    ];
    for (what, l) in cases {
        let mut l = l;
        expect(what, call(fd, IOC_LOAD, &mut l), EINVAL);
    }
    // A load writes into the channel: not through a read-only file.
    let ro =
        File::open("/dev/relay/bad").unwrap_or_else(|e| fail(format!("open /dev/relay/bad: {e}")));
    let mut l = good;
    expect(
        "load through a read-only file",
        call(ro.as_raw_fd(), IOC_LOAD, &mut l),
        EBADF,
    );
    drop(ro);
    // One record larger than a sub-buffer: refused and counted.
    let big = vec![0u8; 8192];
    // SAFETY: writes `big` (8192 readable bytes) to our file.
    let r = unsafe { libc_write(fd, big.as_ptr().cast(), big.len()) };
    expect(
        "write() of a record larger than a sub-buffer",
        if r < 0 { errno() } else { 0 },
        EMSGSIZE,
    );
    let mut per_cpu = OpenOptions::new()
        .read(true)
        .open("/dev/relay/bad.cpu0")
        .unwrap_or_else(|e| fail(format!("open /dev/relay/bad.cpu0: {e}")));
    // SAFETY: a new mapping at an address of the kernel's choosing.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            4096,
            PROT_READ,
            MAP_SHARED,
            per_cpu.as_raw_fd(),
            0,
        )
    };
    if p != MAP_FAILED {
        fail("a per-CPU file was mapped".into());
    }
    expect("mmap of a per-CPU file", errno(), ENODEV);
    let mut buf = vec![0u8; 4096];
    if let Err(e) = per_cpu.read(&mut buf) {
        fail(format!("read of an empty per-CPU file: {e}"));
    }
    14
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: c_int, buf: *const c_void, len: usize) -> isize;
}

/// Garbage in the user-writable consumer pages while the kernel writes;
/// then reads through the mapping and through read(). Nothing may crash.
fn hostile(m: &Mapped) -> usize {
    let words = m.words();
    let consumer = &words[m.coff / 8..(m.coff + m.csize) / 8];
    let channel = Channel::open(words).unwrap_or_else(|e| fail(format!("header: {e}")));
    let patterns: [fn(usize) -> u64; 6] = [
        |_| u64::MAX,
        |_| u64::MAX - 1,
        |_| 1 << 63,
        |_| i64::MAX as u64,
        |i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        |i| if i % 2 == 0 { u64::MAX } else { 0 },
    ];
    let mut buf = vec![0u8; channel.geometry().subbuf_size() as usize];
    let mut file = &m.file;
    let mut sink = vec![0u8; 1 << 16];
    for pattern in &patterns {
        for (i, w) in consumer.iter().enumerate() {
            w.store(pattern(i), Ordering::Relaxed);
        }
        let mut l = Load {
            records: 3000,
            size: 64,
            ..Load::default()
        };
        expect(
            "load over hostile consumer pages",
            call(m.fd(), IOC_LOAD, &mut l),
            0,
        );
        for cpu in 0..channel.geometry().cpu_count() {
            let mut reader = channel.reader(cpu).unwrap();
            for _ in 0..64 {
                match reader.next(&mut buf) {
                    Ok(Some(d)) => {
                        let (seq, lost) = (d.seq, d.lost_before);
                        let n = d.records().count() as u64;
                        reader.finish(seq, &lost, n);
                        reader.commit();
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        for (i, w) in consumer.iter().enumerate() {
            w.store(pattern(i).rotate_left(7), Ordering::Relaxed);
        }
        // read() over the same garbage: the kernel's own reader.
        for _ in 0..64 {
            match file.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    patterns.len()
}

/// poll() sleeps until a writer seals a sub-buffer (the wakeup goes
/// through irq_work), not until its timeout.
fn poll_wakes(ctl: c_int) {
    let mut c = create_args("pw", 4096, 8, 0);
    expect("create", call(ctl, IOC_CREATE, &mut c), 0);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/relay/pw")
        .unwrap_or_else(|e| fail(format!("open /dev/relay/pw: {e}")));
    let mut sink = vec![0u8; 1 << 16];
    while file.read(&mut sink).map_or(0, |n| n) > 0 {}
    let fd = file.as_raw_fd();
    let start = std::time::Instant::now();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        // 400 records of 80 bytes: several 4 KiB sub-buffers sealed.
        let mut l = Load {
            records: 100,
            size: 64,
            ..Load::default()
        };
        call(fd, IOC_LOAD, &mut l)
    });
    let mut p = PollFd {
        fd,
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: one live `pollfd`.
    let n = unsafe { poll(&mut p, 1, 20_000) };
    let waited = start.elapsed();
    expect("load while polling", writer.join().unwrap_or(-1), 0);
    if n != 1 || p.revents & POLLIN == 0 {
        fail(format!(
            "poll: returned {n} revents {:#x} after {waited:?}",
            p.revents
        ));
    }
    println!(
        "relay-guest-test: poll wakeup ok after {} ms",
        waited.as_millis()
    );
    drop(file);
    let mut d = Destroy { name: name("pw") };
    expect("destroy", call(ctl, IOC_DESTROY, &mut d), 0);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("fuzz") {
        fuzz::run(&args[1..]);
    }
    let ctl = control();
    poll_wakes(ctl.as_raw_fd());
    let n = bad_creates(ctl.as_raw_fd());
    println!("relay-guest-test: bad creates ok cases={n}");

    for (flags, mode) in [(0u64, "no-overwrite"), (1, "overwrite")] {
        let mut c = create_args("bad", 4096, 8, flags);
        expect("create", call(ctl.as_raw_fd(), IOC_CREATE, &mut c), 0);
        let mut again = create_args("bad", 4096, 8, flags);
        expect(
            "create of a taken name",
            call(ctl.as_raw_fd(), IOC_CREATE, &mut again),
            EEXIST,
        );
        let m = Mapped::open("bad", &c);
        let n = bad_channel_ioctls(&m);
        println!("relay-guest-test: bad mappings and ioctls ok mode={mode} cases={n}");
        let n = hostile(&m);
        println!("relay-guest-test: hostile consumer ok mode={mode} patterns={n}");

        // Destroy while open and mapped: the name goes, the memory stays.
        let mut d = Destroy { name: name("bad") };
        expect(
            "destroy while mapped",
            call(ctl.as_raw_fd(), IOC_DESTROY, &mut d),
            0,
        );
        if std::path::Path::new("/dev/relay/bad").exists() {
            fail("/dev/relay/bad still exists after destroy".into());
        }
        let channel = Channel::open(m.words())
            .unwrap_or_else(|e| fail(format!("mapping after destroy: {e}")));
        let mut l = Load {
            records: 100,
            size: 64,
            ..Load::default()
        };
        expect("load after destroy", call(m.fd(), IOC_LOAD, &mut l), 0);
        let produced: u64 = (0..channel.geometry().cpu_count())
            .filter_map(|cpu| channel.stats(cpu))
            .map(|s| s.produced)
            .sum();
        if produced == 0 {
            fail("nothing produced after destroy".into());
        }
        drop(m);
        println!("relay-guest-test: destroy while mapped ok mode={mode}");
        let mut c = create_args("bad", 4096, 8, flags);
        expect(
            "create after destroy",
            call(ctl.as_raw_fd(), IOC_CREATE, &mut c),
            0,
        );
        let mut d = Destroy { name: name("bad") };
        expect("destroy", call(ctl.as_raw_fd(), IOC_DESTROY, &mut d), 0);
    }
}
