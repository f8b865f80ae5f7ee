//! Arbitrary bytes as a directory's per-CPU blktrace files, through the
//! decoder, both printers, the binary dump, the summary and the Chrome
//! export: nothing panics or loops, every record parsed re-encodes to its
//! own bytes, every problem points inside its file, and JSON lines stay one
//! line each.
//!
//! Input: byte 0 = flags (bit 0: decode cgroup records, bit 1: follow
//! mode, bits 2-3: CPUs - 1, bit 4: group the summary's digits); then each
//! CPU's file but the last as a u16 length (little-endian) and that many
//! bytes; the last file is the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_user::blktrace::{
    encode_record, parse_record, CpuInput, Decoder, Device, Item, Options, HEADER_LEN,
};
use std::time::Duration;

fn split(data: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let (&flags, mut rest) = data.split_first()?;
    let cpus = 1 + usize::from((flags >> 2) & 3);
    let mut files = Vec::new();
    for _ in 1..cpus {
        let len = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
        let body = rest.get(2..)?;
        let (file, tail) = body.split_at(len.min(body.len()));
        files.push(file);
        rest = tail;
    }
    files.push(rest);
    Some((flags, files))
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, files)) = split(data) else {
        return;
    };
    // The parser alone: records round-trip byte for byte.
    for file in &files {
        let (mut at, mut endian) = (0, None);
        while let Ok((t, e, len)) = parse_record(&file[at..], endian) {
            assert_eq!(len, HEADER_LEN + t.pdu.len());
            assert_eq!(encode_record(&t, e), &file[at..at + len]);
            endian = Some(e);
            at += len;
        }
    }
    let options = Options {
        cgroup: flags & 1 != 0,
        follow: flags & 2 != 0,
        latency: Duration::ZERO,
    };
    let inputs = files
        .iter()
        .enumerate()
        .map(|(cpu, f)| CpuInput {
            path: format!("trace{cpu}").into(),
            cpu: cpu as u32,
            reader: *f,
        })
        .collect();
    let mut decoder = Decoder::new(
        vec![Device {
            name: "sdb".into(),
            cpus: inputs,
        }],
        options,
    );
    decoder.dump_to(std::io::sink());
    let mut chrome = relay_user::export::ChromeTrace::new(Vec::new()).expect("a Vec takes it");
    // Each record yields at most one item, and following, one warning for
    // torn bytes skipped before it; each file one more (its end).
    let bound = 2 * (data.len() / HEADER_LEN) + 2 * files.len() + 1;
    let mut items = 0;
    let mut line = Vec::new();
    while let Some(item) = decoder.next_item() {
        items += 1;
        assert!(
            items <= bound,
            "more than {bound} items from {} bytes",
            data.len()
        );
        match item {
            Item::Event(e) => {
                chrome.blktrace(1, &e).expect("a Vec takes it");
                line.clear();
                e.write_blkparse(&mut line);
                assert_eq!(line.last(), Some(&b'\n'));
                line.clear();
                e.write_json(&mut line);
                assert!(line.ends_with(b"}\n"));
                assert!(
                    !line[..line.len() - 1].iter().any(|&b| b < 0x20),
                    "raw control byte in JSON"
                );
            }
            Item::Problem(p) => {
                let file = files.get(p.cpu as usize).expect("a known cpu");
                assert!(p.offset <= file.len() as u64, "{p}");
                assert!(!p.to_string().is_empty());
            }
            _ => break, // Idle
        }
    }
    decoder.finish_dump().expect("a sink takes everything");
    let json = chrome.finish().expect("a Vec takes it");
    assert!(json.ends_with(b"]}\n"));
    assert!(
        !json.iter().any(|&b| b < 0x20 && b != b'\n'),
        "raw control byte in the Chrome JSON"
    );
    line.clear();
    decoder.summary().write_blkparse(&mut line, flags & 16 != 0);
    assert!(
        line.ends_with(b"0.0%)\n"),
        "a summary ends with its skips line"
    );
});
