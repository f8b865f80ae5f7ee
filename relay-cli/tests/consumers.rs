//! Readers you can trust, end to end with the `relay` CLI: snapshots change
//! nothing and repeat, one consumer per CPU at a time, and a consumer's
//! claim dies with its process.

mod common;

use common::{ok, relay, run, tmp};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A channel of `cpus` CPU buffers with `per_cpu` lines written on each
/// (`cpuN-IIIII`), flushed.
fn channel(name: &str, cpus: u32, per_cpu: u32, overwrite: bool) -> PathBuf {
    let p = tmp(name);
    let s = p.to_str().unwrap();
    let mut args = vec![
        "create",
        s,
        "--subbuf-size",
        "4096",
        "--subbufs",
        "64",
        "--cpus",
    ];
    let n = cpus.to_string();
    args.push(&n);
    if overwrite {
        args.push("--overwrite");
    }
    ok(&run(&args));
    for cpu in 0..cpus {
        let mut w = relay()
            .args(["write", s, "--cpu", &cpu.to_string()])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = w.stdin.take().unwrap();
        for i in 0..per_cpu {
            writeln!(stdin, "cpu{cpu}-{i:05}").unwrap();
        }
        drop(stdin);
        assert!(w.wait().unwrap().success());
    }
    ok(&run(&["flush", s]));
    p
}

/// The first line `relay cat PATH | head -n 1` prints.
fn head_1(path: &Path) -> String {
    let mut cat = relay()
        .args(["cat", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    drop(out); // as head exits: the next write gets EPIPE
    let status = cat.wait().unwrap();
    assert!(
        status.success(),
        "relay cat must end quietly on a closed pipe: {status:?}"
    );
    String::from_utf8(line).unwrap()
}

#[test]
fn cat_piped_to_head_twice_prints_the_same_first_line() {
    for overwrite in [false, true] {
        let p = channel(&format!("head-{overwrite}.relay"), 2, 3000, overwrite);
        let before = std::fs::read(&p).unwrap();
        let first = head_1(&p);
        assert!(first.contains("cpu"), "{first}");
        assert_eq!(head_1(&p), first, "overwrite={overwrite}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            before,
            "a snapshot changed the channel file"
        );
        // stat is read-only too, and nothing was consumed.
        let stat = ok(&run(&["stat", "--json", p.to_str().unwrap()]));
        let untouched = stat
            .lines()
            .filter(|l| l.starts_with("{\"kind\":\"stat\"") && l.contains("\"consumed\":0,"))
            .count();
        assert_eq!(untouched, 2, "{stat}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}

/// Waits until `relay stat` shows that the follower consumed something on
/// every CPU (so it holds its claims).
fn wait_consumed(path: &Path, cpus: u32) {
    let start = Instant::now();
    loop {
        let stat = ok(&run(&["stat", "--json", path.to_str().unwrap()]));
        if stat.matches("\"consumed\":0,").count() == 0 && stat.lines().count() >= cpus as usize {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{stat}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn follower(path: &Path, cpus: &[&str]) -> Child {
    let mut args = vec!["cat", "--follow", path.to_str().unwrap()];
    for c in cpus {
        args.push("--cpu");
        args.push(c);
    }
    relay()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_second_consumer_is_refused_until_the_first_dies() {
    let p = channel("two.relay", 2, 10, false);
    let s = p.to_str().unwrap();
    let mut first = follower(&p, &[]);
    wait_consumed(&p, 2);
    for args in [
        vec!["cat", "--consume", s],
        vec!["cat", "--follow", "--cpu", "1", s],
        vec!["verify", s],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{s}: cpu {}: another consumer is reading it (pid {})",
                if args.contains(&"1") { 1 } else { 0 },
                first.id()
            )),
            "{args:?}: {stderr}"
        );
    }
    // Snapshots need no claim: they run beside the consumer.
    assert!(run(&["cat", s]).status.success());
    // SIGKILL: the kernel drops the claim with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    ok(&run(&["cat", "--consume", s]));
}

#[test]
fn consumers_of_different_cpus_run_at_once() {
    let p = channel("split.relay", 2, 10, false);
    let mut zero = follower(&p, &["0"]);
    let mut one = follower(&p, &["1"]);
    wait_consumed(&p, 2);
    for c in [&mut zero, &mut one] {
        assert!(
            c.try_wait().unwrap().is_none(),
            "a --cpu consumer was refused"
        );
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

#[test]
fn snapshots_beside_a_consumer_and_writers_see_ordered_valid_records() {
    let p = channel("busy.relay", 2, 0, true);
    let s = p.to_str().unwrap().to_string();
    let mut consumer = follower(&p, &[]);
    let writers: Vec<Child> = (0..2)
        .map(|cpu| {
            let mut w = relay()
                .args(["write", &s, "--cpu", &cpu.to_string()])
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = w.stdin.take().unwrap();
            std::thread::spawn(move || {
                for i in 0..20000 {
                    if writeln!(stdin, "cpu{cpu}-{i:05}").is_err() {
                        break;
                    }
                }
            });
            w
        })
        .collect();
    for _ in 0..20 {
        let out = ok(&run(&["cat", &s]));
        let mut last_ts = 0u64;
        let mut last_id = [None::<u32>; 2];
        for line in out.lines() {
            // "TS cpuN type=1 len=L cpuN-IIIII"
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 5, "{line}");
            // Seconds with nine decimals (the default --time): ns without the dot.
            let ts: u64 = f[0].replace('.', "").parse().unwrap();
            assert!(ts >= last_ts, "out of order: {line}");
            last_ts = ts;
            let cpu: usize = f[1].trim_start_matches("cpu").parse().unwrap();
            let (who, id) = f[4].split_once('-').unwrap();
            assert_eq!(who, f[1], "{line}");
            assert_eq!(f[3], "len=10", "{line}");
            let id: u32 = id.parse().unwrap();
            assert!(last_id[cpu].is_none_or(|l| id > l), "{line}");
            last_id[cpu] = Some(id);
        }
    }
    for mut w in writers {
        w.wait().unwrap();
    }
    consumer.kill().unwrap();
    consumer.wait().unwrap();
}

/// `relay snapshot` saves what a channel holds as a channel file of its
/// own: reading the copy later prints what reading the channel printed
/// then (records, and loss reports where they were), and the source is
/// unchanged.
#[test]
fn snapshot_file_reads_as_the_channel_read() {
    for overwrite in [false, true] {
        // Overwrite: 3000 lines per CPU lap the 64 sub-buffers: losses.
        let per_cpu = if overwrite { 12000 } else { 3000 };
        let p = channel(&format!("snap-{overwrite}.relay"), 2, per_cpu, overwrite);
        let s = p.to_str().unwrap();
        let copy = tmp(&format!("snap-{overwrite}.copy.relay"));
        let before = std::fs::read(&p).unwrap();
        let saved = ok(&run(&["snapshot", s, "-o", copy.to_str().unwrap()]));
        assert!(saved.contains(" records, "), "{saved}");
        assert_eq!(std::fs::read(&p).unwrap(), before, "the source changed");
        let source = run(&["cat", s]);
        let from_copy = run(&["cat", copy.to_str().unwrap()]);
        assert!(source.status.success() && from_copy.status.success());
        assert!(!source.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&from_copy.stdout),
            String::from_utf8_lossy(&source.stdout),
            "overwrite={overwrite}: records"
        );
        let losses = |o: &Output| -> Vec<String> {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .filter_map(|l| l.split_once(": cpu ").map(|(_, rest)| rest.to_string()))
                .collect()
        };
        assert_eq!(
            losses(&from_copy),
            losses(&source),
            "overwrite={overwrite}: losses"
        );
        assert_eq!(
            !losses(&source).is_empty(),
            overwrite,
            "{:?}",
            losses(&source)
        );
        // A second snapshot to the same file is refused, naming it.
        let again = run(&["snapshot", s, "-o", copy.to_str().unwrap()]);
        assert!(!again.status.success());
    }
}

/// A channel file truncated under a follower and under a writer: each ends
/// with exit 3 and a message naming the file, not a death by SIGBUS.
#[test]
fn truncation_under_a_reader_and_a_writer_is_a_clear_error() {
    use std::os::unix::process::ExitStatusExt;
    let p = channel("trunc.relay", 2, 100, false);
    let s = p.to_str().unwrap().to_string();
    let mut follower = relay()
        .args(["cat", "--follow", "--latency", "5", &s])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_consumed(&p, 2);
    let mut writer = relay()
        .args(["write", &s, "--cpu", "0"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    writeln!(stdin, "before").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    // The writer touches the mapping with its next record.
    for _ in 0..100 {
        if writeln!(stdin, "after").is_err() {
            break;
        }
    }
    drop(stdin);
    for (name, child) in [("follower", &mut follower), ("writer", &mut writer)] {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name} did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.signal(), None, "{name}: killed by a signal: {err}");
        assert_eq!(status.code(), Some(3), "{name}: {err}");
        assert!(
            err.contains(&format!(
                "relay: {s}: the file was truncated under this process"
            )),
            "{name}: {err}"
        );
    }
}
