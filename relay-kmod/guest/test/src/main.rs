//! The guest side of `cargo xtask vm-test`'s device test: opens
//! `/dev/relay`, creates a channel, maps it the way a reader does (everything
//! read-only, the consumer pages writable), checks that the kernel refuses
//! writable mappings of the rest, has every CPU write records
//! (`RELAY_IOC_WRITE_TEST`) and reads them back through the mapping with
//! relay-core's reader, checking every record and the loss accounting.
//!
//! Prints `relay-guest-test: ... ok ...` lines, or `relay-guest-test: FAILED:
//! ...` and exits 1.

use std::ffi::{c_int, c_ulong, c_void};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::exit;

use std::sync::atomic::{AtomicU64, Ordering};

use relay_core::{Channel, CpuStats, Mode};

/// `struct relay_create` of `relay-kmod/src/relay_uapi.h`.
#[repr(C)]
#[derive(Default, Debug)]
struct RelayCreate {
    subbuf_size: u64,
    subbuf_count: u64,
    flags: u64,
    total_size: u64,
    consumer_offset: u64,
    consumer_size: u64,
    cpu_count: u32,
    reserved: u32,
}

/// `struct relay_write_test`.
#[repr(C)]
struct RelayWriteTest {
    records: u64,
}

const fn ioc(dir: u64, nr: u64, size: usize) -> c_ulong {
    (dir << 30 | (size as u64) << 16 | (b'r' as u64) << 8 | nr) as c_ulong
}
const RELAY_IOC_CREATE: c_ulong = ioc(3, 1, std::mem::size_of::<RelayCreate>());
const RELAY_IOC_WRITE_TEST: c_ulong = ioc(1, 2, std::mem::size_of::<RelayWriteTest>());

const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 1;
const MAP_FIXED: c_int = 0x10;
const EPERM: i32 = 1;
const EACCES: i32 = 13;

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
}

const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
/// The kernel's self-test record type and payload layout (relay_main.rs).
const RTYPE: u16 = 0x5e1f;

fn fail(msg: String) -> ! {
    println!("relay-guest-test: FAILED: {msg}");
    exit(1)
}

fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks a payload written by the kernel for `cpu`; returns its sequence.
fn check_payload(cpu: u32, p: &[u8]) -> Option<u64> {
    if !(24..=80).contains(&p.len()) {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().unwrap());
    let (head, seq, end) = (word(0), word(8), p.len() - 8);
    let len_ok = 24 + (seq.wrapping_add(u64::from(cpu)) % 8) as usize * 8 == p.len();
    (head as u32 == cpu
        && (head >> 32) as usize == p.len()
        && len_ok
        && word(end) == checksum(&p[..end]))
    .then_some(seq)
}

/// Reads everything `cpu` has (in place, or copied out in overwrite mode);
/// returns (records delivered, CPU stats).
fn drain(
    channel: &Channel<'_>,
    cpu: u32,
    expect_contiguous: bool,
    max_seq: u64,
) -> (u64, CpuStats) {
    let mut reader = channel
        .reader(cpu)
        .unwrap_or_else(|| fail(format!("cpu {cpu}: no reader")));
    let copy = channel.mode() == Mode::Overwrite;
    let mut buf = vec![0u8; channel.geometry().subbuf_size() as usize];
    let mut delivered = 0u64;
    let mut next = 0u64;
    let mut last_ts = 0u64;
    loop {
        let d = if copy {
            reader.next(&mut buf)
        } else {
            reader.peek()
        };
        let d = match d {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => fail(format!("cpu {cpu}: reader: {e}")),
        };
        let (seq, lost) = (d.seq, d.lost_before);
        let mut n = 0;
        for r in d.records() {
            let s = check_payload(cpu, r.payload)
                .unwrap_or_else(|| fail(format!("cpu {cpu}: bad payload in sub-buffer {seq}")));
            if r.rtype != RTYPE
                || s < next
                || s >= max_seq
                || (expect_contiguous && s != next)
                || r.ts < last_ts
            {
                fail(format!(
                    "cpu {cpu}: record {s} out of order or mistyped (expected {next})"
                ));
            }
            next = s + 1;
            last_ts = r.ts;
            n += 1;
        }
        reader.finish(seq, &lost, n);
        delivered += n;
    }
    if copy && delivered != 0 && next != max_seq {
        fail(format!(
            "cpu {cpu}: overwrite mode lost the newest record ({next} of {max_seq})"
        ));
    }
    (delivered, reader.stats())
}

/// One open `/dev/relay` file with its channel mapped the way a reader maps it.
struct Mapped {
    _file: std::fs::File,
    fd: c_int,
    c: RelayCreate,
    base: *mut c_void,
    total: usize,
    coff: usize,
    csize: usize,
}

impl Mapped {
    /// Opens `/dev/relay`, creates a channel with `flags` and maps it,
    /// checking that only the consumer pages can be mapped writable.
    fn open(flags: u64) -> Mapped {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/relay")
            .unwrap_or_else(|e| fail(format!("open /dev/relay: {e}")));
        let fd = file.as_raw_fd();
        let mut c = RelayCreate {
            subbuf_size: 4096,
            subbuf_count: 8,
            flags,
            ..Default::default()
        };
        // SAFETY: RELAY_IOC_CREATE reads and writes one `struct relay_create`.
        if unsafe { ioctl(fd, RELAY_IOC_CREATE, &mut c as *mut RelayCreate) } != 0 {
            fail(format!("RELAY_IOC_CREATE: {}", os_err()));
        }
        let mut again = RelayCreate {
            subbuf_size: 4096,
            ..Default::default()
        };
        // SAFETY: as above; a second create on the same file must be refused.
        if unsafe { ioctl(fd, RELAY_IOC_CREATE, &mut again as *mut RelayCreate) } == 0 {
            fail("a second RELAY_IOC_CREATE succeeded".into());
        }
        let total = usize::try_from(c.total_size).unwrap();
        let (coff, csize) = (c.consumer_offset as usize, c.consumer_size as usize);
        println!("relay-guest-test: channel {c:?}");

        // A writable mapping of the whole channel must be refused.
        // SAFETY: mmap with a null hint creates a new mapping or fails.
        let rw = unsafe {
            mmap(
                std::ptr::null_mut(),
                total,
                PROT_READ | PROT_WRITE,
                MAP_SHARED,
                fd,
                0,
            )
        };
        if rw != MAP_FAILED || os_err().raw_os_error() != Some(EPERM) {
            fail(format!(
                "writable mapping of the whole channel: expected EPERM, got {rw:?} {}",
                os_err()
            ));
        }
        // SAFETY: as above.
        let base = unsafe { mmap(std::ptr::null_mut(), total, PROT_READ, MAP_SHARED, fd, 0) };
        if base == MAP_FAILED {
            fail(format!("read-only mapping: {}", os_err()));
        }
        // The header page must not become writable.
        // SAFETY: `base` is our mapping of at least one page.
        if unsafe { mprotect(base, 4096, PROT_READ | PROT_WRITE) } == 0
            || os_err().raw_os_error() != Some(EACCES)
        {
            fail(format!(
                "mprotect(header, RW): expected EACCES, got {}",
                os_err()
            ));
        }
        // The consumer pages, writable, over the same addresses.
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
            fail(format!("writable consumer mapping: {}", os_err()));
        }
        Mapped {
            _file: file,
            fd,
            c,
            base,
            total,
            coff,
            csize,
        }
    }

    /// The mapping as channel words.
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `base..base + total` stays mapped while `self` lives; the
        // kernel writes it only atomically, and we store only through the
        // words, only to the consumer pages (mapped writable).
        unsafe { relay_core::mem::words_from_raw(self.base.cast(), self.total) }
            .unwrap_or_else(|e| fail(format!("words: {e}")))
    }

    /// Has every CPU write `records` records (`RELAY_IOC_WRITE_TEST`).
    fn write_test(&self, records: u64) {
        let w = RelayWriteTest { records };
        // SAFETY: RELAY_IOC_WRITE_TEST reads one `struct relay_write_test`.
        if unsafe { ioctl(self.fd, RELAY_IOC_WRITE_TEST, &w as *const RelayWriteTest) } != 0 {
            fail(format!("RELAY_IOC_WRITE_TEST({records}): {}", os_err()));
        }
    }

    /// Fills the user-writable consumer pages with garbage, has the kernel
    /// write on top of it, and reads what there is: the kernel must treat
    /// the garbage as untrusted (no overflow panic, no out-of-bounds access)
    /// and the reader must fail cleanly, not crash.
    fn hostile(&self, channel: &Channel<'_>) -> usize {
        let words = self.words();
        let consumer = &words[self.coff / 8..(self.coff + self.csize) / 8];
        let patterns: [fn(usize) -> u64; 6] = [
            |_| u64::MAX,
            |_| u64::MAX - 1,
            |_| 1 << 63,
            |_| i64::MAX as u64,
            |i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            |i| if i % 2 == 0 { u64::MAX } else { 0 },
        ];
        let mut buf = vec![0u8; channel.geometry().subbuf_size() as usize];
        for pattern in &patterns {
            for (i, w) in consumer.iter().enumerate() {
                w.store(pattern(i), Ordering::Relaxed);
            }
            self.write_test(3000);
            for cpu in 0..self.c.cpu_count {
                let mut reader = channel.reader(cpu).unwrap();
                for _ in 0..64 {
                    match reader.next(&mut buf) {
                        Ok(Some(d)) => {
                            let (seq, lost) = (d.seq, d.lost_before);
                            let n = d.records().count() as u64;
                            reader.finish(seq, &lost, n);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        patterns.len()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping; nothing borrowed from it outlives
        // `self` (`words` borrows `self`).
        unsafe { munmap(self.base, self.total) };
    }
}

fn main() {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;

    // No-overwrite channel.
    let m = Mapped::open(0);
    let channel = Channel::open(m.words()).unwrap_or_else(|e| fail(format!("Channel::open: {e}")));

    // Round 1: fits, nothing lost.
    let records = 300;
    m.write_test(records);
    let (mut cpus, mut total_delivered, mut total_lost) = (0u64, 0u64, 0u64);
    let mut before = Vec::new();
    for cpu in 0..m.c.cpu_count {
        let (n, st) = drain(&channel, cpu, true, records);
        if n != 0 {
            cpus += 1;
            if n != records || st.produced != n || st.lost.total() != 0 {
                fail(format!(
                    "cpu {cpu}: delivered {n} of {records}, stats {st:?}"
                ));
            }
        }
        total_delivered += n;
        total_lost += st.lost.total();
        before.push(st);
    }
    if cpus != online {
        fail(format!("{cpus} CPUs wrote, {online} online"));
    }
    println!(
        "relay-guest-test: mmap read ok cpus={cpus} records={total_delivered} lost={total_lost}"
    );

    // Round 2: more than fits; delivered + lost = attempted on every CPU.
    let records = 2000;
    m.write_test(records);
    let (mut delivered, mut lost) = (0u64, 0u64);
    for cpu in 0..m.c.cpu_count {
        let (n, st) = drain(&channel, cpu, false, records);
        let l = st.lost.total() - before[cpu as usize].lost.total();
        if (n != 0 || l != 0) && n + l != records {
            fail(format!("cpu {cpu}: delivered {n} + lost {l} != {records}"));
        }
        delivered += n;
        lost += l;
    }
    if lost == 0 || delivered + lost != records * online {
        fail(format!(
            "overflow: delivered {delivered} lost {lost}, attempted {}",
            records * online
        ));
    }
    println!(
        "relay-guest-test: mmap overflow ok cpus={online} attempted={} delivered={delivered} lost={lost}",
        records * online
    );
    let n = m.hostile(&channel);
    println!("relay-guest-test: hostile consumer ok mode=no-overwrite patterns={n}");
    drop(m);

    // Overwrite channel: the newest records survive, read by copying out.
    let m = Mapped::open(1);
    let channel = Channel::open(m.words()).unwrap_or_else(|e| fail(format!("Channel::open: {e}")));
    let records = 2000;
    m.write_test(records);
    let (mut delivered, mut lost) = (0u64, 0u64);
    for cpu in 0..m.c.cpu_count {
        let (n, st) = drain(&channel, cpu, false, records);
        if (n != 0 || st.lost.total() != 0)
            && (n + st.lost.overwrite != records || st.lost.full != 0 || st.lost.too_big != 0)
        {
            fail(format!("overwrite: cpu {cpu}: delivered {n}, stats {st:?}"));
        }
        delivered += n;
        lost += st.lost.total();
    }
    if lost == 0 || delivered + lost != records * online {
        fail(format!(
            "overwrite: delivered {delivered} lost {lost}, attempted {}",
            records * online
        ));
    }
    println!(
        "relay-guest-test: mmap overwrite ok cpus={online} attempted={} delivered={delivered} lost={lost}",
        records * online
    );
    let n = m.hostile(&channel);
    println!("relay-guest-test: hostile consumer ok mode=overwrite patterns={n}");
}
