//! `relay cat -` / `relay verify -` (and `--read FILE`) on frame streams
//! made here with relay-core's encoder: what a kernel channel file's
//! read() returns, without the kernel.

mod common;

use common::{relay, tmp};

use std::io::Write;
use std::process::{Output, Stdio};

use relay_core::checked;
use relay_core::format::{FormatError, Rule};
use relay_core::frames::{encode, encode_start, encoded_len};
use relay_core::merge::Event;
use relay_core::{Lost, ReadError, Record};

/// Runs `relay args...` with `input` on standard input.
fn run_with(args: &[&str], input: &[u8]) -> Output {
    let mut child = relay()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relay");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A frame stream: the start frame, then `events`.
fn frames(events: &[Event<'_>]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let n = encode_start(&mut out).unwrap();
    out.truncate(n);
    for e in events {
        let mut buf = vec![0u8; encoded_len(e)];
        let n = encode(e, &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn rec(cpu: u32, ts: u64, payload: &[u8]) -> Event<'_> {
    Event::Record {
        cpu,
        record: Record {
            ts,
            rtype: 7,
            payload,
        },
    }
}

/// A loss event, the first its CPU reports (its total is itself).
fn lost(cpu: u32, ts: u64, full: u64, overwrite: u64) -> Event<'static> {
    let lost = Lost {
        full,
        overwrite,
        ..Lost::default()
    };
    Event::Lost {
        cpu,
        lost,
        ts,
        total: lost,
    }
}

#[test]
fn cat_dash_prints_frames_like_merged_events() {
    let stream = frames(&[
        rec(0, 10, b"hello"),
        lost(1, 11, 3, 0),
        rec(1, 11, b"a\nb"),
        rec(0, 12, &[0xff, 0]),
    ]);
    let out = run_with(&["cat", "-"], &stream);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "10 cpu0 type=7 len=5 hello\n11 cpu1 type=7 len=3 a\\nb\n12 cpu0 type=7 len=2 \\xff\\x00\n"
    );
    assert!(
        text(&out.stderr).contains(
            "relay: <stdin>: cpu 1 lost 3 records before ts 11 (full 3, too big 0, overwritten 0; 3 in all)"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = run_with(&["cat", "--json", "-"], &stream);
    assert_eq!(
        text(&out.stdout),
        "{\"kind\":\"record\",\"ts\":10,\"cpu\":0,\"type\":7,\"len\":5,\"payload_hex\":\"68656c6c6f\"}\n\
         {\"kind\":\"lost\",\"ts\":11,\"cpu\":1,\"lost\":{\"full\":3,\"too_big\":0,\"overwrite\":0,\"abandoned\":0},\"lost_total\":{\"full\":3,\"too_big\":0,\"overwrite\":0,\"abandoned\":0}}\n\
         {\"kind\":\"record\",\"ts\":11,\"cpu\":1,\"type\":7,\"len\":3,\"payload_hex\":\"610a62\"}\n\
         {\"kind\":\"record\",\"ts\":12,\"cpu\":0,\"type\":7,\"len\":2,\"payload_hex\":\"ff00\"}\n"
    );

    let out = run_with(&["cat", "--raw", "-"], &stream);
    assert_eq!(out.stdout, b"helloa\nb\xff\x00");

    let out = run_with(&["cat", "--cpu", "1", "-"], &stream);
    assert_eq!(text(&out.stdout), "11 cpu1 type=7 len=3 a\\nb\n");

    // An empty stream is an empty stream.
    let out = run_with(&["cat", "-"], b"");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn cat_read_decodes_a_file_of_frames() {
    let stream = frames(&[rec(3, 5, b"saved"), rec(2, 6, b"frames")]);
    let path = tmp("saved.frames");
    std::fs::write(&path, &stream).unwrap();
    let out = run_with(&["cat", "--read", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "5 cpu3 type=7 len=5 saved\n6 cpu2 type=7 len=6 frames\n"
    );
    let out = run_with(&["cat", "--read", "/nonexistent/relay"], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("/nonexistent/relay: open"));
}

/// Runs `relay cat -` on `bytes`; expects the format exit code and `needle`.
fn bad_stream(bytes: &[u8], needle: &str) {
    for cmd in ["cat", "verify"] {
        let out = run_with(&[cmd, "-"], bytes);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{cmd}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{cmd}: expected {needle:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn bad_and_truncated_frames_are_format_errors_naming_the_field() {
    let good = frames(&[rec(0, 1, b"12345678"), rec(0, 2, b"x")]);
    // Frames: start 0..40, record 40..72, record 72..104.
    assert_eq!(good.len(), 104);

    let mut bad = good.clone();
    bad[72 + 4] = 9;
    bad_stream(&bad, "<stdin>: frame at byte 72: kind: 9 is not 0..=3");

    let mut bad = good.clone();
    bad[40 + 12] = 1;
    bad_stream(&bad, "<stdin>: frame at byte 40: reserved: must be 0");

    let mut bad = good.clone();
    bad[40] = 10;
    bad_stream(&bad, "frame at byte 40: len: 10 is too short for the frame");

    let mut bad = good.clone();
    bad[72..76].copy_from_slice(&u32::MAX.to_le_bytes());
    bad_stream(
        &bad,
        "frame at byte 72: len: 4294967295 is longer than any frame",
    );

    bad_stream(&good[40..], "frame at byte 0: start: not a relay stream");

    bad_stream(
        &good[..100],
        "frame at byte 72: len: truncated: the stream ends 28 bytes into a frame of 25 bytes",
    );
    bad_stream(
        &good[..50],
        "frame at byte 40: len: truncated: the stream ends 10 bytes into a frame header of 24",
    );

    // Records before the bad frame are still printed.
    let mut bad = good.clone();
    bad[72 + 4] = 9;
    let out = run_with(&["cat", "-"], &bad);
    assert_eq!(text(&out.stdout), "1 cpu0 type=7 len=8 12345678\n");
}

#[test]
fn corrupt_frames_are_reported_and_fail() {
    let error = ReadError::Corrupt {
        seq: 4,
        error: FormatError {
            field: "subbuf.content_size",
            offset: 56,
            value: 100_000,
            rule: Rule::AtMost(4096),
        },
    };
    let stream = frames(&[rec(0, 1, b"before"), Event::Corrupt { cpu: 1, error }]);
    let out = run_with(&["cat", "-"], &stream);
    assert_eq!(out.status.code(), Some(6), "corrupt data skipped");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cpu 1: sub-buffer 4 skipped: subbuf.content_size (byte 56): must be at most 4096 (got 100000)"),
        "{stderr}"
    );
    assert!(stderr.contains("1 corrupt sub-buffers skipped"), "{stderr}");
    assert_eq!(text(&out.stdout), "1 cpu0 type=7 len=6 before\n");
    // The same in JSON, with the lost report of the merged-events test:
    // objects as docs/JSON.md documents them.
    let mut events = vec![rec(0, 1, b"before"), Event::Corrupt { cpu: 1, error }];
    events.push(Event::Lost {
        cpu: 0,
        ts: 2,
        lost: Lost {
            full: 1,
            ..Lost::default()
        },
        total: Lost {
            full: 1,
            ..Lost::default()
        },
    });
    let out = run_with(&["cat", "--json", "-"], &frames(&events));
    let kinds = common::check_json(&text(&out.stdout));
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["corrupt", "lost", "record"],
        "{}",
        text(&out.stdout)
    );
    let out = run_with(
        &["verify", "-"],
        &frames(&[Event::Corrupt { cpu: 1, error }]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("verify FAILED: cpu 1: corrupt sub-buffer"),
        "{}",
        text(&out.stdout)
    );
    // And a record that is not a checked payload at all.
    let out = run_with(&["verify", "-"], &stream);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("verify FAILED: cpu 0: payload shorter than 32 bytes"));
}

/// Checked payloads of `len` bytes, `(cpu, seq, ts)` each.
fn checked_payloads(recs: &[(u32, u64, u64)], len: usize) -> Vec<(u32, u64, Vec<u8>)> {
    recs.iter()
        .map(|&(cpu, seq, ts)| {
            let mut b = vec![0u8; len];
            assert!(checked::fill(&mut b, cpu, 0, seq));
            (cpu, ts, b)
        })
        .collect()
}

enum Item {
    Rec(u32, u64, u64),
    Lost(u32, u64, u64, u64),
}

fn checked_stream(items: &[Item]) -> Vec<u8> {
    let payloads = checked_payloads(
        &items
            .iter()
            .filter_map(|i| match *i {
                Item::Rec(cpu, seq, ts) => Some((cpu, seq, ts)),
                Item::Lost(..) => None,
            })
            .collect::<Vec<_>>(),
        48,
    );
    let mut p = payloads.iter();
    let events: Vec<Event<'_>> = items
        .iter()
        .map(|i| match *i {
            Item::Rec(..) => {
                let (cpu, ts, b) = p.next().unwrap();
                rec(*cpu, *ts, b)
            }
            Item::Lost(cpu, ts, full, overwrite) => lost(cpu, ts, full, overwrite),
        })
        .collect();
    frames(&events)
}

fn verify(args: &[&str], stream: &[u8]) -> (Option<i32>, String) {
    let mut a = vec!["verify"];
    a.extend_from_slice(args);
    a.push("-");
    let out = run_with(&a, stream);
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn verify_dash_checks_payloads_and_losses() {
    use Item::*;
    // CPU 0: 0, 1, lost 2 (full), 4. CPU 1: 0, 1.
    let good = checked_stream(&[
        Rec(0, 0, 1),
        Rec(1, 0, 2),
        Rec(0, 1, 3),
        Lost(0, 4, 2, 0),
        Rec(0, 4, 4),
        Rec(1, 1, 5),
    ]);
    let (code, out) = verify(&[], &good);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("verify ok: records=5 lost=2 (full 2, too big 0, overwritten 0) cpus=2 late=0 mode=no-overwrite stats=none"),
        "{out}"
    );
    let (code, out) = verify(
        &["--expect-records", "5", "--expect-lost", "2", "-v"],
        &good,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            " cpu 0: delivered=3 lost=2 (full 2, too big 0, overwritten 0) earlier=0 bad=0"
        ),
        "{out}"
    );
    let (code, out) = verify(&["--expect-lost", "1"], &good);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("verify FAILED: lost: expected 1, reported 2"),
        "{out}"
    );
    let (code, out) = verify(&["--expect-records", "6"], &good);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("verify FAILED: records: expected 6, delivered 5"),
        "{out}"
    );

    // A gap that no loss report explains.
    let gap = checked_stream(&[Rec(0, 0, 1), Rec(0, 1, 2), Rec(0, 3, 3)]);
    let (code, out) = verify(&[], &gap);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "verify FAILED: cpu 0: records missing without a loss report (expected 2, found 3)"
        ),
        "{out}"
    );

    // A payload that does not check out.
    let mut bad = checked_stream(&[Rec(0, 0, 1), Rec(1, 0, 2)]);
    let n = bad.len();
    bad[n - 8] ^= 1; // the last payload's filler
    let (code, out) = verify(&[], &bad);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("verify FAILED: cpu 1: payload checksum"),
        "{out}"
    );

    // A stream that begins after an earlier reader's records.
    let later = checked_stream(&[Rec(0, 100, 1), Rec(0, 101, 2)]);
    assert_eq!(verify(&[], &later).0, Some(1));
    let (code, out) = verify(&["--resume", "-v"], &later);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("earlier=100"), "{out}");
}

#[test]
fn verify_dash_infers_overwrite_from_the_losses() {
    use Item::*;
    // 1..=4 were overwritten, and the loss is reported one record late:
    // fine in overwrite mode, never in no-overwrite mode.
    let late = checked_stream(&[Rec(0, 0, 1), Rec(0, 5, 2), Lost(0, 3, 0, 4), Rec(0, 6, 3)]);
    let (code, out) = verify(&[], &late);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("overwritten 4) cpus=1 late=0 mode=overwrite"),
        "{out}"
    );
    let (code, out) = verify(&["--mode", "no-overwrite"], &late);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("records missing without a loss report"),
        "{out}"
    );
    // Reported early is wrong in either mode.
    let early = checked_stream(&[Rec(0, 0, 1), Lost(0, 2, 0, 4), Rec(0, 1, 2)]);
    assert_eq!(verify(&[], &early).0, Some(1));
}
