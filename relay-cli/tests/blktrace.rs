//! `relay cat --format blktrace` against Debian's `blkparse`: synthesised
//! per-CPU blktrace files (several CPUs, interleaved and tied times, every
//! action blkparse prints, process-name notifies arriving early, late and
//! twice, messages, records blkparse skips, both byte orders, malformed
//! files) go through `blkparse -i <dev> -D <dir>` and through `relay cat`,
//! and the event lines must be byte-identical.
//!
//! blkparse comes from Debian's `blktrace` package; `cargo xtask test`
//! installs it. Without it these tests fail: the comparison is the point.

mod common;

use common::blktrace::*;
use common::relay;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_user::blktrace::{
    category as c, encode_record, Endian, CGROUP, TN_MESSAGE, TN_TIMESTAMP,
};

/// A busy little trace: 4 CPUs (CPU 2 silent, its file empty), requests
/// queued on one CPU and completed on another, merges, plugs, remaps,
/// splits, bounces, requeues, packet commands, messages, ties, a clock that
/// steps back, and records blkparse skips.
fn workload(seed: u64) -> Workload {
    let mut rng = Rng(seed);
    let mut tr = Workload::new(4);
    let busy = [0u32, 1, 3];
    let pids = [100u32, 200, 300, 400, 500, 600];
    // Names: 100-300 on the CPUs they run on; 400 never; 600 twice, the
    // first read (CPU 0's batch, read first) wins; 500 only on CPU 3, after
    // more than a batch of CPU 3's records, so its first events print
    // without a name as they do in blkparse.
    tr.notify(
        0,
        500,
        TN_TIMESTAMP,
        0,
        [1_700_000_000u32.to_le_bytes(), 5u32.to_le_bytes()].concat(),
    );
    tr.name(0, 900, 100, "kworker/u8:2");
    tr.name(1, 950, 200, "dd");
    tr.name(3, 980, 300, "jbd2/sdb1-8");
    tr.name(3, 990, 600, "second-name");
    tr.name(0, 995, 600, "first-name");
    let mut t = 1_000_000u64;
    let mut sector = 2048u64;
    for i in 0..700u64 {
        let pid = pids[rng.below(pids.len() as u64) as usize];
        let cpu = busy[rng.below(3) as usize];
        let done_cpu = busy[rng.below(3) as usize];
        let dir = match rng.below(10) {
            0 => c::DISCARD,
            1..=4 => c::READ,
            _ => c::WRITE,
        };
        let mut flags = 0;
        for (bit, odds) in [
            (c::SYNC, 3),
            (c::META, 9),
            (c::AHEAD, 11),
            (c::FUA, 13),
            (c::FLUSH, 17),
        ] {
            if rng.below(odds) == 0 {
                flags |= bit;
            }
        }
        let rw = dir | flags;
        let len = 512 * (1 + rng.below(64)) as u32;
        let step = |rng: &mut Rng, t: &mut u64| {
            // Ties across and within CPUs, now and then.
            *t += [0, 0, 1, 7, 250, 3000][rng.below(6) as usize];
            *t
        };
        if i == 350 {
            tr.name(3, t, 500, "fio");
        }
        if i % 97 == 0 {
            let mut m = format!("bfq{pid} served {i}").into_bytes();
            if i % 2 == 1 {
                m.extend_from_slice(b"\0after a nul");
            }
            let at = step(&mut rng, &mut t);
            tr.notify(cpu, at, TN_MESSAGE, pid, m);
        }
        if rng.below(8) == 0 {
            let at = step(&mut rng, &mut t);
            tr.event(
                cpu,
                at,
                c::QUEUE | rw | 15,
                pid,
                sector,
                len,
                [
                    DM.to_be_bytes().to_vec(),
                    DEV.to_be_bytes().to_vec(),
                    be64(sector - 2048),
                ]
                .concat(),
            );
        }
        if rng.below(5) == 0 {
            // A packet command: queued, inserted, issued with its CDB, completed.
            let cdb = vec![0x28, 0, 0, 0, (i & 0xff) as u8, 0, 0, 0, 8, 0, 0, 0];
            let pc = c::PC | dir;
            let at = step(&mut rng, &mut t);
            tr.event(cpu, at, pc | c::QUEUE | 1, pid, 0, len, Vec::new());
            let at = step(&mut rng, &mut t);
            tr.event(cpu, at, pc | c::QUEUE | 12, pid, 0, len, cdb.clone());
            let at = step(&mut rng, &mut t);
            tr.event(cpu, at, pc | c::ISSUE | 7, pid, 0, len, cdb.clone());
            if rng.below(4) == 0 {
                let at = step(&mut rng, &mut t);
                tr.event(done_cpu, at, pc | c::REQUEUE | 6, pid, 0, len, Vec::new());
            }
            let at = step(&mut rng, &mut t);
            tr.event(done_cpu, at, pc | c::COMPLETE | 8, pid, 0, len, vec![0; 4]);
            continue;
        }
        let fs = c::FS | rw;
        let at = step(&mut rng, &mut t);
        tr.event(cpu, at, fs | c::QUEUE | 1, pid, sector, len, Vec::new());
        match rng.below(12) {
            0 => {
                let at = step(&mut rng, &mut t);
                tr.event(cpu, at, fs | c::QUEUE | 2, pid, sector, len, Vec::new());
                sector += u64::from(len / 512);
                continue;
            }
            1 => {
                let at = step(&mut rng, &mut t);
                tr.event(cpu, at, fs | c::QUEUE | 3, pid, sector, len, Vec::new());
                sector += u64::from(len / 512);
                continue;
            }
            2 => {
                let at = step(&mut rng, &mut t);
                tr.event(cpu, at, rw | 13, pid, sector, len, be64(sector + 8));
            }
            3 => {
                let at = step(&mut rng, &mut t);
                tr.event(cpu, at, rw | 14, pid, sector, len, Vec::new());
            }
            4 => {
                let at = step(&mut rng, &mut t);
                tr.event(cpu, at, fs | c::QUEUE | 5, pid, sector, len, Vec::new());
            }
            _ => {}
        }
        let at = step(&mut rng, &mut t);
        tr.event(cpu, at, fs | c::QUEUE | 4, pid, sector, len, Vec::new());
        if rng.below(3) == 0 {
            let at = step(&mut rng, &mut t);
            tr.event(cpu, at, c::QUEUE | 9, pid, 0, 0, Vec::new());
            let at = step(&mut rng, &mut t);
            tr.event(cpu, at, fs | c::QUEUE | 12, pid, sector, len, Vec::new());
            let unplug = if rng.below(2) == 0 { 10 } else { 11 };
            let at = step(&mut rng, &mut t);
            tr.event(
                cpu,
                at,
                c::QUEUE | unplug,
                pid,
                0,
                0,
                be64(1 + rng.below(16)),
            );
        } else {
            let at = step(&mut rng, &mut t);
            tr.event(cpu, at, fs | c::QUEUE | 12, pid, sector, len, Vec::new());
        }
        let at = step(&mut rng, &mut t);
        tr.event(cpu, at, fs | c::ISSUE | 7, pid, sector, len, Vec::new());
        if rng.below(20) == 0 {
            let at = step(&mut rng, &mut t);
            tr.event(
                done_cpu,
                at,
                fs | c::REQUEUE | 6,
                pid,
                sector,
                len,
                Vec::new(),
            );
            let at = step(&mut rng, &mut t);
            tr.event(
                done_cpu,
                at,
                fs | c::ISSUE | 7,
                pid,
                sector,
                len,
                Vec::new(),
            );
        }
        let error = if rng.below(25) == 0 {
            (-5i16) as u16
        } else {
            0
        };
        let at = step(&mut rng, &mut t);
        let completed = if rng.below(10) == 0 { 0 } else { len };
        tr.event(
            done_cpu,
            at,
            fs | c::COMPLETE | 8,
            pid,
            sector,
            completed,
            Vec::new(),
        );
        if let Some(last) = tr.cpus[done_cpu as usize].last_mut() {
            last.error = error;
        }
        sector += u64::from(len / 512);
    }
    // Records blkparse skips: no category bits, an action code it does not
    // know (abort), driver data, one whose cpu field is not its file's, and
    // a cgroup-tagged message (every message of Linux 4.14+).
    tr.event(0, t + 10, 1, 100, 1, 512, Vec::new());
    tr.event(0, t + 11, c::QUEUE | c::WRITE | 16, 100, 1, 512, Vec::new());
    tr.event(
        1,
        t + 12,
        c::DRV_DATA | c::WRITE | 17,
        200,
        1,
        512,
        vec![1, 2, 3],
    );
    tr.event(1, t + 13, c::QUEUE | c::WRITE | 1, 200, 1, 512, Vec::new());
    if let Some(last) = tr.cpus[1].last_mut() {
        last.cpu = 3;
    }
    tr.notify(
        3,
        t + 14,
        TN_MESSAGE | CGROUP,
        300,
        [1u64.to_le_bytes().to_vec(), b"tagged".to_vec()].concat(),
    );
    // A clock that steps back within a CPU's file (the merge does not sort
    // within a file), a sequence number past i32, and a time far ahead.
    tr.event(
        3,
        t + 20,
        c::FS | c::READ | c::QUEUE | 1,
        300,
        7,
        4096,
        Vec::new(),
    );
    tr.event(
        3,
        2,
        c::FS | c::READ | c::QUEUE | 1,
        300,
        8,
        4096,
        Vec::new(),
    );
    tr.seq[3] = 0x7fff_ffff;
    tr.event(
        3,
        t + 3_000_000_000_000_000_000,
        c::FS | c::READ | c::QUEUE | 1,
        300,
        9,
        4096,
        Vec::new(),
    );
    tr
}

/// blkparse's CPU column.
fn cpu_of(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

#[test]
fn event_lines_match_debian_blkparse() {
    let tr = workload(0x9e37_79b9_7f4a_7c15);
    let counts: Vec<usize> = tr.cpus.iter().map(Vec::len).collect();
    assert!(
        counts[0] > 1024 && counts[3] > 1024 && counts[2] == 0,
        "{counts:?}"
    );
    let dir = scratch("le");
    write_files(&dir, "sdb.blktrace.", &tr.files(Endian::Little));

    let expected = blkparse(&dir, "sdb");
    let out = relay_cat(&[], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_same(&out.stdout, &expected);

    // The comparison is not vacuous: every kind of line is there.
    let text = String::from_utf8_lossy(&expected);
    assert!(
        text.lines().count() > 3000,
        "{} lines",
        text.lines().count()
    );
    for needle in [
        "  Q  ",
        "  M  ",
        "  F  ",
        "  G  ",
        "  S  ",
        "  R  ",
        "  D  ",
        "  C  ",
        "  P  ",
        "  U  ",
        " UT  ",
        "  I  ",
        "  X  ",
        "  B  ",
        "  A  ",
        "  m   N bfq",
        " <- (253,2) ",
        "[(null)]",
        "[fio]",
        "[first-name]",
        "[dd]",
        "[jbd2/sdb1-8]",
        "[kworker/u8:2]",
        "[65531]",
        " FWS ",
        " RA",
        "Q   D ",
        " (28 00 00 00 ",
        " (00 ..) ",
        " 0.000000000 ",
        "-2147483648 -1294967",
    ] {
        assert!(text.contains(needle), "blkparse printed no {needle:?}");
    }
    assert!(!text.contains("second-name") && !text.contains("tagged"));
    for cpu in ["0", "1", "3"] {
        assert!(
            text.lines().any(|l| cpu_of(l) == Some(cpu)),
            "no events of cpu {cpu}"
        );
    }
    // blkparse's stderr complaints are warnings here, naming the record.
    assert!(
        stderr.contains("cpu 1: offset") && stderr.contains(": cpu: 3 in a file of cpu 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains(": action: 0x120010: action code 0x10"),
        "{stderr}"
    );
    assert!(stderr.contains("cgroup-tagged message"), "{stderr}");

    // The same files named as in debugfs (block/sdb/trace0..N) print the
    // same; the summary names the device after the directory.
    let debugfs = scratch("debugfs").join("sdb");
    std::fs::create_dir(&debugfs).unwrap();
    write_files(&debugfs, "trace", &tr.files(Endian::Little));
    std::fs::write(debugfs.join("dropped"), "0\n").unwrap();
    let out = relay_cat(&[], &debugfs);
    assert!(out.status.success());
    assert_same(&out.stdout, &expected);

    // --cpu keeps that CPU's lines, unchanged (-q: no summary).
    let out = relay_cat(&["--cpu", "1", "-q"], &dir);
    let only: Vec<&str> = text.lines().filter(|l| cpu_of(l) == Some("1")).collect();
    assert!(!only.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        only
    );
}

#[test]
fn several_devices_merge_as_blkparse_merges_them() {
    // Two devices, as `blkparse -i sdb -i sdc`: one time line, one genesis.
    let sdb = workload(11);
    let mut sdc = workload(12);
    for t in sdc.cpus.iter_mut().flatten() {
        t.device = (8 << 20) | 32;
        t.time += 1_234; // interleave with sdb's times, not tie them
    }
    let both = scratch("two-devices");
    write_files(&both, "sdb.blktrace.", &sdb.files(Endian::Little));
    write_files(&both, "sdc.blktrace.", &sdc.files(Endian::Little));
    let out_file = both.with_extension("blkparse.txt");
    let run = Command::new("blkparse")
        .args(["-i", "sdb", "-i", "sdc", "-D"])
        .arg(&both)
        .arg("-o")
        .arg(&out_file)
        .output()
        .expect("blkparse is installed (see event_lines_match_debian_blkparse)");
    assert!(run.status.success());
    let expected = std::fs::read(&out_file).unwrap();
    let text = String::from_utf8_lossy(&expected);
    assert!(text.contains("  8,16 ") && text.contains("  8,32 "));
    // One summary per device, in input order.
    assert!(text.contains("\nTotal (sdb):\n") && text.contains("\nTotal (sdc):\n"));
    assert!(text.find("Events (sdb)") < text.find("CPU0 (sdc)"));

    let (b, c) = (scratch("sdb"), scratch("sdc"));
    write_files(&b, "sdb.blktrace.", &sdb.files(Endian::Little));
    write_files(&c, "sdc.blktrace.", &sdc.files(Endian::Little));
    let out = relay()
        .args(["cat", "--format", "blktrace"])
        .args([&b, &c])
        .output()
        .expect("run relay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&out.stdout, &expected);
}

#[test]
fn big_endian_files_match_too() {
    let tr = workload(7);
    let dir = scratch("be");
    write_files(&dir, "sdb.blktrace.", &tr.files(Endian::Big));
    let expected = blkparse(&dir, "sdb");
    assert!(String::from_utf8_lossy(&expected).lines().count() > 3000);
    let out = relay_cat(&[], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&out.stdout, &expected);
}

#[test]
fn malformed_files_print_what_blkparse_prints_then_fail() {
    let tr = workload(99);
    let mut files = tr.files(Endian::Little);
    let offset_of = |cpu: usize, index: usize| -> usize {
        tr.cpus[cpu][..index].iter().map(|t| 48 + t.pdu.len()).sum()
    };
    // cpu0: a trailing partial header; cpu1: a bad magic mid-file; cpu3: a
    // payload running past the end of the file.
    files[0].extend_from_slice(&[0x07, 0x74, 0x61, 0x65, 1, 2, 3]);
    let bad = offset_of(1, 300);
    files[1][bad + 3] = 0x66;
    let mut last = encode_record(&tr.cpus[3][0], Endian::Little);
    last[46..48].copy_from_slice(&200u16.to_le_bytes());
    let past = files[3].len();
    files[3].extend_from_slice(&last);
    let dir = scratch("bad");
    write_files(&dir, "sdb.blktrace.", &files);

    let expected = blkparse(&dir, "sdb");
    let out = relay_cat(&[], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_same(&out.stdout, &expected);
    // Skipped data, the rest printed: exit 6.
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let end0 = files[0].len() - 7;
    for needle in [
        format!("sdb.blktrace.0: cpu 0: offset {end0}: header: partial record: 7 of the 48 header bytes"),
        format!("sdb.blktrace.1: cpu 1: offset {bad}: magic: 0x66617407 is not a blk_io_trace record"),
        format!("sdb.blktrace.3: cpu 3: offset {past}: pdu_len: 200 payload bytes run past the end"),
        "3 malformed records, 0 unreadable files".to_string(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
    }
}

#[test]
fn json_gives_each_event_named_fields() {
    let tr = workload(5);
    let dir = scratch("json");
    write_files(&dir, "sdb.blktrace.", &tr.files(Endian::Little));
    let text = relay_cat(&["-q"], &dir);
    let json = relay_cat(&["--json"], &dir);
    assert!(json.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    let json = String::from_utf8_lossy(&json.stdout);
    // The same events, plus the cgroup-tagged message blkparse 1.2.0 drops.
    assert_eq!(json.lines().count(), text.lines().count() + 1);
    assert!(json
        .lines()
        .all(|l| l.starts_with("{\"kind\":") && l.ends_with('}')));
    let kinds = common::check_json(&json);
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["fs", "message", "pc"]
    );
    assert!(
        json.contains("\"action\":\"m\",\"message\":\"tagged\",\"cgroup\":1}"),
        "{json}"
    );
    assert!(json.contains("\"action\":\"A\",\"rwbs\":"));
    assert!(json.contains("\"from_major\":253,\"from_minor\":2,"));
    assert!(json.contains("\"kind\":\"pc\""));
    assert!(json.contains("\"pdu_hex\":\"2800"));
    assert!(json.contains("\"process\":\"jbd2/sdb1-8\"") && json.contains("\"process\":null"));
}

#[test]
fn follow_waits_for_the_rest_of_a_record() {
    let mut tr = Workload::new(2);
    tr.name(0, 1, 42, "dd");
    tr.event(
        0,
        100,
        c::FS | c::WRITE | c::QUEUE | 1,
        42,
        8,
        4096,
        Vec::new(),
    );
    tr.event(
        1,
        150,
        c::FS | c::WRITE | c::QUEUE | 4,
        42,
        8,
        4096,
        Vec::new(),
    );
    tr.event(
        0,
        200,
        c::FS | c::WRITE | c::ISSUE | 7,
        42,
        8,
        4096,
        Vec::new(),
    );
    let files = tr.files(Endian::Little);
    let dir = scratch("follow");
    // CPU 0 starts with its first record and half of its second.
    let first = 48 + 16 + 48;
    write_files(
        &dir,
        "trace",
        &[files[0][..first + 20].to_vec(), files[1].clone()],
    );

    let mut child = relay()
        .args(["cat", "--format", "blktrace", "--follow", "--latency", "20"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relay");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line for {what}"))
    };
    assert_eq!(
        next("Q"),
        "  8,16   0        1     0.000000000    42  Q   W 8 + 8 [dd]"
    );
    assert_eq!(
        next("G"),
        "  8,16   1        1     0.000000050    42  G   W 8 + 8 [dd]"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "printed a partial record");
    let start = Instant::now();
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("trace0"))
        .unwrap()
        .write_all(&files[0][first + 20..])
        .unwrap();
    assert_eq!(
        next("D"),
        "  8,16   0        2     0.000000100    42  D   W 8 + 8 [dd]"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_errors_are_clear() {
    let dir = scratch("usage");
    std::fs::write(dir.join("trace0"), b"").unwrap();
    let out = relay_cat(&["--raw"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--raw cannot be used with --format blktrace"));
    let file = dir.join("trace0");
    let out = relay_cat(&[], &file);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not one"));
    let out = relay_cat(&[], &dir.join("missing"));
    assert_eq!(out.status.code(), Some(3));
    // An empty trace prints only an empty summary and succeeds (as
    // blkparse does), nothing with -q.
    let out = relay_cat(&[], &dir);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\nThroughput (R/W): 0KiB/s / 0KiB/s\nEvents (usage): 0 entries\nSkips: 0 forward (0 -   0.0%)\n"
    );
    let out = relay_cat(&["-q"], &dir);
    assert!(out.status.success() && out.stdout.is_empty());
}

/// Without `--format`, a directory of blktrace's files is decoded as
/// blktrace (said once on stderr); other directories stay raw; a device's
/// debugfs directory with no trace running says how to start one.
#[test]
fn blktrace_files_are_recognised() {
    let tr = workload(0x2545_f491_4f6c_dd1d);
    let dir = scratch("detect");
    write_files(&dir, "sdb.blktrace.", &tr.files(Endian::Little));
    let explicit = relay_cat(&[], &dir);
    assert!(explicit.status.success());
    let detected = relay().arg("cat").arg(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&detected.stderr);
    assert!(detected.status.success(), "{stderr}");
    assert_eq!(detected.stdout, explicit.stdout);
    assert_eq!(
        stderr.matches("decoding them as --format blktrace").count(),
        1,
        "{stderr}"
    );
    // Big-endian files too.
    let be = scratch("detect-be");
    write_files(&be, "sdb.blktrace.", &tr.files(Endian::Big));
    let out = relay().arg("cat").arg(&be).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format blktrace"));
    // --format raw keeps the bytes; other data is raw without a word.
    let raw = relay()
        .args(["cat", "--format", "raw"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(raw.status.success() && raw.stderr.is_empty());
    assert!(String::from_utf8_lossy(&raw.stdout).starts_with("cpu0 offset=0 "));
    let other = scratch("detect-other");
    write_files(&other, "trace", &[b"hello".to_vec()]);
    let out = relay().arg("cat").arg(&other).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(out.stdout, b"cpu0 offset=0 len=5 hello\n");
    // blktrace's debugfs layout (trace<N> beside `dropped`), empty files.
    let live = scratch("detect-live");
    write_files(&live, "trace", &[Vec::new(), Vec::new()]);
    std::fs::write(live.join("dropped"), b"0\n").unwrap();
    let out = relay().args(["cat", "-q"]).arg(&live).output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format blktrace"));
    // A device directory under debugfs with no trace running.
    let dev = scratch("debug").join("block").join("sdz");
    std::fs::create_dir_all(&dev).unwrap();
    let out = relay().arg("cat").arg(&dev).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no blktrace is running on sdz")
            && stderr.contains("relay blktrace /dev/sdz"),
        "{stderr}"
    );
}
