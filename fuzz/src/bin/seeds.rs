//! Writes the seed corpora under `fuzz/corpus/` (run from `fuzz/`:
//! `cargo run --bin seeds`). Seeds are small valid inputs: real channels
//! with records in both modes, real sub-buffers, valid geometries, and a
//! few structured-input byte strings for the sequence targets.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;

use relay_core::{AtomicU64, Channel, ChannelFlags, Clock, Geometry, GeometryParams};

fn channel_bytes(overwrite: bool, records: u64) -> Vec<u8> {
    let geo = Geometry::new(GeometryParams {
        subbuf_size: 128,
        subbuf_count: 2,
        cpu_count: 1,
        page_size: 64,
    })
    .expect("valid geometry");
    let mem: Vec<AtomicU64> = (0..geo.total_size() / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let flags = if overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    let ch = Channel::create(&mem, geo, flags, Clock::Counter).expect("fits");
    let w = ch.writer(0).expect("cpu 0");
    let mut t = 0;
    let mut clock = || {
        t += 1;
        t
    };
    for i in 0..records {
        let _ = w.write(i as u16, &i.to_le_bytes(), &mut clock);
    }
    let _ = w.flush(&mut clock);
    mem.iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
        .collect()
}

fn write(dir: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(dir);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// blktrace: per-CPU files of real records (every action blkparse prints,
/// notifies, messages), packed as the target splits its input.
fn blktrace_seeds() {
    use relay_user::blktrace::{category as c, encode_record, Endian, Trace, CGROUP, MAGIC};
    use relay_user::blktrace::{TN_MESSAGE, TN_PROCESS, VERSION};

    let record = |cpu: u32, seq: u32, time: u64, action: u32, pdu: &[u8]| Trace {
        magic: MAGIC | u32::from(VERSION),
        sequence: seq,
        time,
        sector: 2048 + u64::from(seq) * 8,
        bytes: 4096,
        action,
        pid: 42,
        device: (8 << 20) | 16,
        cpu,
        error: 0,
        pdu: pdu.to_vec(),
    };
    let cpu_file = |cpu: u32, endian: Endian, cgroup: bool| -> Vec<u8> {
        let fs = c::FS | c::WRITE;
        let tag = if cgroup { CGROUP } else { 0 };
        let mut traces = vec![record(cpu, 0, 1, TN_PROCESS, b"kworker/0:1\0\0\0\0\0")];
        let remap = [
            ((253u32 << 20) | 2).to_be_bytes(),
            ((8u32 << 20) | 16).to_be_bytes(),
        ]
        .concat();
        let remap = [remap, 7u64.to_be_bytes().to_vec()].concat();
        for (i, (action, pdu)) in [
            (fs | c::QUEUE | 15, remap),
            (fs | c::QUEUE | 1, vec![]),
            (fs | c::QUEUE | 2, vec![]),
            (fs | c::QUEUE | 4, vec![]),
            (c::QUEUE | 9, vec![]),
            (fs | c::QUEUE | 12, vec![]),
            (c::QUEUE | 10, 3u64.to_be_bytes().to_vec()),
            (c::WRITE | 13, 2056u64.to_be_bytes().to_vec()),
            (fs | c::ISSUE | 7, vec![]),
            (c::PC | c::ISSUE | 7, vec![0x28, 0, 0, 0]),
            (TN_MESSAGE, b"hello".to_vec()),
            (fs | c::COMPLETE | 8, vec![]),
        ]
        .into_iter()
        .enumerate()
        {
            let pdu = if cgroup {
                [1u64.to_le_bytes().to_vec(), pdu].concat()
            } else {
                pdu
            };
            traces.push(record(
                cpu,
                i as u32 + 1,
                100 + 10 * i as u64 + u64::from(cpu),
                action | tag,
                &pdu,
            ));
        }
        traces
            .iter()
            .flat_map(|t| encode_record(t, endian))
            .collect()
    };
    let pack = |flags: u8, files: &[Vec<u8>]| -> Vec<u8> {
        let mut b = vec![flags | ((files.len() as u8 - 1) << 2)];
        for (i, f) in files.iter().enumerate() {
            if i + 1 < files.len() {
                b.extend_from_slice(&(f.len() as u16).to_le_bytes());
            }
            b.extend_from_slice(f);
        }
        b
    };
    let le = [
        cpu_file(0, Endian::Little, false),
        cpu_file(1, Endian::Little, false),
    ];
    write("blktrace", "two-cpus", &pack(0, &le));
    write("blktrace", "two-cpus-follow", &pack(2, &le));
    let be = [
        cpu_file(0, Endian::Big, false),
        cpu_file(1, Endian::Big, false),
        cpu_file(2, Endian::Big, false),
    ];
    write("blktrace", "three-cpus-big-endian", &pack(0, &be));
    let cg = [cpu_file(0, Endian::Little, true)];
    write("blktrace", "cgroup", &pack(1, &cg));
    write("blktrace", "cgroup-as-blkparse-1.2", &pack(0, &cg));
    let mut cut = le.clone();
    cut[1].truncate(cut[1].len() - 5);
    write("blktrace", "partial-record", &pack(0, &cut));
}

/// A frame stream: start, two records (one a checked payload), a loss.
fn frames_seeds() {
    use relay_core::frames::{encode, encode_start};
    use relay_core::merge::Event;
    use relay_core::{checked, Lost, Record};
    let mut out = vec![0u8; 1024];
    let mut n = encode_start(&mut out).expect("start");
    let mut payload = [0u8; 48];
    checked::fill(&mut payload, 1, 0, 7);
    let events = [
        Event::Record {
            cpu: 0,
            record: Record {
                ts: 5,
                rtype: 1,
                payload: b"hello",
            },
        },
        Event::Record {
            cpu: 1,
            record: Record {
                ts: 6,
                rtype: 0x10,
                payload: &payload,
            },
        },
        Event::Lost {
            cpu: 1,
            lost: Lost {
                full: 3,
                too_big: 0,
                overwrite: 1,
                abandoned: 2,
            },
            ts: 7,
            total: Lost {
                full: 5,
                too_big: 0,
                overwrite: 1,
                abandoned: 2,
            },
        },
    ];
    for e in &events {
        n += encode(e, &mut out[n..]).expect("fits");
    }
    write("frames", "stream", &out[..n]);
    write("frames", "truncated", &out[..n - 5]);
}

fn main() {
    write("format", "channel-no-overwrite", &channel_bytes(false, 3));
    write(
        "format",
        "channel-overwrite-lapped",
        &channel_bytes(true, 9),
    );
    let ch = channel_bytes(false, 2);
    // First byte 0 selects 128-byte sub-buffers; then sub-buffer 0's bytes.
    let data_offset = 128 + 256 + 128;
    let mut sub = vec![0u8];
    sub.extend_from_slice(&ch[data_offset..data_offset + 128]);
    write("format", "subbuf", &sub);

    for (i, (size, count, cpus, page)) in [
        (4096u64, 0u64, 4u32, 4096u32),
        (128, 2, 1, 64),
        (1 << 30, 2, 1, 65536),
        (256, 1 << 32, 2, 4096),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Vec::new();
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&cpus.to_le_bytes());
        b.extend_from_slice(&page.to_le_bytes());
        write("geometry", &format!("params-{i}"), &b);
    }
    // relayfs_dir: (base selector, cpu u16, contents) triples, arbitrary-encoded.
    write(
        "relayfs_dir",
        "two-cpus",
        b"\x00\x01\x00\x05hello\x00\x00\x00\x02hi",
    );
    write("relayfs_dir", "one-relay", b"\x02\x03\x00\x00");
    blktrace_seeds();
    frames_seeds();
    for i in 0..4 {
        write("model", &format!("ops-{i}"), &pseudo_random(i, 600));
        write(
            "hostile_consumer",
            &format!("steps-{i}"),
            &pseudo_random(100 + i, 600),
        );
    }
}
