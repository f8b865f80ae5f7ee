//! The `relay` command end to end: several processes sharing one channel
//! file, both modes, the merged order, loss accounting, and bad input.

mod common;

use common::{ok, relay, run, tmp};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn create(path: &Path, extra: &[&str]) {
    let mut args = vec!["create", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `relay write` in its own process, fed `lines`.
fn spawn_writer(path: &Path, cpu: u32, lines: Vec<String>) -> std::process::Child {
    let mut child = relay()
        .args(["write", path.to_str().unwrap(), "--cpu", &cpu.to_string()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    });
    child
}

/// (ts, cpu, payload) of every record `relay cat --json` prints.
fn cat_json(path: &Path) -> (Vec<(u64, u32, String)>, String, Output) {
    cat_json_with(path, &[])
}

/// [`cat_json`] with more arguments (`--consume`).
fn cat_json_with(path: &Path, extra: &[&str]) -> (Vec<(u64, u32, String)>, String, Output) {
    let mut args = vec!["cat", "--json"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let out = run(&args);
    let mut recs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.contains("\"lost\"") {
            continue;
        }
        let field = |name: &str| -> &str {
            let start = line.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            let rest = &line[start..];
            rest[..rest.find([',', '}']).unwrap()].trim_matches('"')
        };
        let hex = field("payload_hex");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        recs.push((
            field("ts").parse().unwrap(),
            field("cpu").parse().unwrap(),
            String::from_utf8(bytes).unwrap(),
        ));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (recs, stderr, out)
}

#[test]
fn processes_share_a_channel_file_and_one_reader_merges_them() {
    let path = tmp("shared.relay");
    create(
        &path,
        &["--subbuf-size", "4096", "--subbufs", "16", "--cpus", "3"],
    );
    let writers: Vec<_> = (0..3)
        .map(|cpu| {
            spawn_writer(
                &path,
                cpu,
                (0..500).map(|i| format!("cpu{cpu}-{i:05}")).collect(),
            )
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (recs, stderr, out) = cat_json(&path);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(recs.len(), 1500, "{stderr}");
    assert!(
        recs.windows(2).all(|w| w[0].0 <= w[1].0),
        "merged by timestamp"
    );
    for cpu in 0..3 {
        let mine: Vec<&str> = recs
            .iter()
            .filter(|r| r.1 == cpu)
            .map(|r| r.2.as_str())
            .collect();
        let want: Vec<String> = (0..500).map(|i| format!("cpu{cpu}-{i:05}")).collect();
        assert_eq!(mine, want, "cpu {cpu}: every record, in order");
    }
    // A snapshot changed nothing: the next one prints the same, and so
    // does the consumer; after it, a consumer gets nothing; stat agrees.
    assert_eq!(cat_json(&path).0, recs);
    assert_eq!(cat_json_with(&path, &["--consume"]).0, recs);
    assert!(cat_json_with(&path, &["--consume"]).0.is_empty());
    assert!(cat_json(&path).0.is_empty());
    let stat = String::from_utf8(run(&["stat", "--json", path.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(
        stat.matches("\"produced\":500,\"consumed\":500,\"lost_full\":0")
            .count(),
        3,
        "{stat}"
    );
}

#[test]
fn no_overwrite_counts_what_did_not_fit() {
    let path = tmp("full.relay");
    create(
        &path,
        &["--subbuf-size", "256", "--subbufs", "2", "--cpus", "1"],
    );
    let out = spawn_writer(
        &path,
        0,
        (0..100).map(|i| format!("record-{i:03}")).collect(),
    )
    .wait_with_output()
    .unwrap();
    assert!(out.status.success());
    let (recs, stderr, _) = cat_json(&path);
    // The oldest records are kept; the loss is reported.
    assert!(!recs.is_empty() && recs.len() < 100);
    assert_eq!(recs[0].2, "record-000");
    let lost: usize = stderr
        .split("lost ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        recs.len() + lost,
        100,
        "delivered + lost = written: {stderr}"
    );
}

#[test]
fn overwrite_keeps_the_newest_and_counts_the_rest() {
    let path = tmp("flight.relay");
    create(
        &path,
        &[
            "--subbuf-size",
            "256",
            "--subbufs",
            "2",
            "--cpus",
            "1",
            "--overwrite",
        ],
    );
    let out = spawn_writer(
        &path,
        0,
        (0..100).map(|i| format!("record-{i:03}")).collect(),
    )
    .wait_with_output()
    .unwrap();
    assert!(out.status.success());
    let (recs, stderr, _) = cat_json(&path);
    assert_eq!(
        recs.last().unwrap().2,
        "record-099",
        "the newest record survives"
    );
    assert!(stderr.contains("overwritten"), "{stderr}");
    let lost: usize = stderr
        .split("lost ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(recs.len() + lost, 100, "{stderr}");
}

fn corrupt(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn expect_error(path: &Path, needle: &str) {
    let out = run(&["cat", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "exit code for bad input ({needle}); stderr: {stderr}"
    );
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_files_give_clear_errors() {
    let fresh = |name: &str| {
        let p = tmp(name);
        create(
            &p,
            &["--subbuf-size", "4096", "--subbufs", "4", "--cpus", "2"],
        );
        let _ = spawn_writer(&p, 1, vec!["hello".into()])
            .wait_with_output()
            .unwrap();
        p
    };
    let p = fresh("magic.relay");
    corrupt(&p, 0, b"NOTRELAY");
    expect_error(
        &p,
        "channel header: not a relay channel: starts with \"NOTRELAY\", expected \"RELAYCHN\"",
    );

    let p = fresh("version.relay");
    corrupt(&p, 8, &2u16.to_le_bytes());
    expect_error(&p, "version_major (byte 8): must be 1 (got 2)");

    let p = fresh("geometry.relay");
    corrupt(&p, 24, &1000u32.to_le_bytes());
    expect_error(&p, "subbuf_size: must be a power of two (got 1000)");

    let p = fresh("offset.relay");
    corrupt(&p, 72, &4096u64.to_le_bytes());
    expect_error(&p, "data_offset (byte 72)");

    let p = fresh("truncated.relay");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_error(
        &p,
        &format!(
            "total_size: the channel needs {len} bytes but the region has {}",
            len / 2
        ),
    );

    let p = fresh("tiny.relay");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100)
        .unwrap();
    expect_error(&p, "needs 128 bytes but the region has 100");

    // A consumer position past the writer.
    let p = fresh("consumer.relay");
    let page = 4096u64; // consumer_offset of this geometry (header page, then one producer page)
    corrupt(&p, 2 * page + 128, &1000u64.to_le_bytes());
    expect_error(
        &p,
        "cpu 1: consumed: 1000 is past the 1 sub-buffers the writer sealed",
    );

    // A sub-buffer header that lies: the rest is still delivered.
    let p = tmp("lying.relay");
    create(
        &p,
        &["--subbuf-size", "4096", "--subbufs", "4", "--cpus", "2"],
    );
    let _ = spawn_writer(&p, 0, vec!["first".into()])
        .wait_with_output()
        .unwrap();
    let _ = spawn_writer(&p, 1, vec!["second".into()])
        .wait_with_output()
        .unwrap();
    let data_offset = 3 * page;
    corrupt(&p, data_offset + 56, &100_000u32.to_le_bytes());
    let out = run(&["cat", p.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Skipped data, the rest delivered: exit 6, not "not a channel" (4).
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("subbuf.content_size (byte 56): must be at most 4096 (got 100000)"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("second"),
        "CPU 1's record is still delivered"
    );

    let out = run(&["cat", "/nonexistent/x.relay"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.relay: open"));
}

#[test]
fn create_refuses_bad_parameters_by_name() {
    let p = tmp("bad-params.relay");
    let out = run(&["create", p.to_str().unwrap(), "--subbuf-size", "1000"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("subbuf_size: must be a power of two (got 1000)"));
    let out = run(&["create", p.to_str().unwrap(), "--subbufs", "4294967304"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("subbuf_count: upper 32 bits must be zero")
    );
    create(&p, &[]);
    let out = run(&["create", p.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an existing file is not overwritten"
    );
}

/// Sizes and durations take units, as lttng, perf and blktrace take them;
/// a bad one is refused naming the option.
#[test]
fn sizes_and_durations_take_units() {
    let p = tmp("units.relay");
    let out = run(&[
        "create",
        p.to_str().unwrap(),
        "--subbuf-size",
        "16K",
        "--cpus",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 CPUs x 8 x 16384 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for latency in ["250", "500us", "100ms", "1s"] {
        let out = run(&["cat", "--latency", latency, p.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "--latency {latency}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (opt, bad) in [("--subbuf-size", "16Q"), ("--latency", "1h")] {
        let args = if opt == "--latency" {
            vec!["cat", opt, bad, p.to_str().unwrap()]
        } else {
            vec!["create", "/dev/null/x", opt, bad]
        };
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{opt} {bad}: {err}");
        assert!(err.contains(opt) && err.contains(bad), "{opt} {bad}: {err}");
    }
}

/// What a new user gets wrong is refused with a message that names it:
/// no channel, a CPU the channel does not have, a demo of no time; and a
/// line that is not UTF-8 is a record like any other.
#[test]
fn usage_errors_name_what_is_wrong() {
    let out = run(&["cat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<PATHS>"));
    let p = tmp("usage.relay");
    create(&p, &["--cpus", "2"]);
    let out = run(&["cat", "--cpu", "5", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cpu 5: ")
            && String::from_utf8_lossy(&out.stderr).contains("has 2 CPU buffers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["-1", "nan", "inf", "1e30"] {
        let out = run(&["demo", &format!("--seconds={bad}")]);
        assert_eq!(out.status.code(), Some(2), "--seconds={bad}");
    }
    let mut w = relay()
        .args(["write", p.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.stdin.take().unwrap().write_all(b"a\xffb\nc\r\n").unwrap();
    let out = w.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 records written, 0 refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&run(&["cat", p.to_str().unwrap()]).stdout).into_owned();
    assert!(
        text.contains("len=3 a\\xffb\n") && text.contains("len=1 c\n"),
        "{text}"
    );
}

#[test]
fn demo_runs_and_verifies() {
    for mode in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["demo", "--seconds", "1"];
        args.extend_from_slice(mode);
        let out = run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("every record delivered or counted: yes"),
            "{stdout}"
        );
    }
    // --keep: the channel stays for stat (and a second demo cannot reuse it).
    let kept = tmp("demo-kept.relay");
    let out = run(&[
        "demo",
        "--seconds",
        "0.5",
        "--overwrite",
        "--keep",
        kept.to_str().unwrap(),
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("the channel stays in"), "{stdout}");
    let stat = ok(&run(&["stat", kept.to_str().unwrap()]));
    let all = stat
        .lines()
        .find(|l| l.trim_start().starts_with("all"))
        .unwrap();
    let produced: u64 = all.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(produced > 0, "{stat}");
    let again = run(&["demo", "--seconds", "0.1", "--keep", kept.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(3), "the file exists");
    // Bad durations are usage errors, never a hang.
    for bad in ["-1", "nan", "inf", "1e30", "0"] {
        let out = run(&["demo", "--seconds", bad]);
        assert_eq!(out.status.code(), Some(2), "--seconds {bad}");
    }
}

/// A directory shaped like the kernel's relay files in debugfs.
fn relayfs_dir(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, bytes) in files {
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    dir
}

#[test]
fn relayfs_directories_read_as_one_source() {
    let dir = relayfs_dir(
        "relayfs",
        &[
            ("trace0", b"cpu zero data"),
            ("trace1", b"one"),
            ("trace2", b""),
            ("dropped", b"0\n"),
            ("msg", b""),
        ],
    );
    let out = run(&["cat", "--json", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let want = format!(
        "{{\"kind\":\"chunk\",\"cpu\":0,\"offset\":0,\"len\":13,\"payload_hex\":\"{}\"}}\n{{\"kind\":\"chunk\",\"cpu\":1,\"offset\":0,\"len\":3,\"payload_hex\":\"{}\"}}\n",
        hex(b"cpu zero data"),
        hex(b"one")
    );
    assert_eq!(
        stdout, want,
        "every CPU's bytes, tagged, nothing from `dropped`"
    );
    let out = run(&["cat", "--raw", dir.to_str().unwrap()]);
    assert_eq!(out.stdout, b"cpu zero dataone");

    let bad = relayfs_dir("relayfs-two", &[("a0", b"x"), ("b0", b"y")]);
    let out = run(&["cat", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("per-CPU files of several channels: a, b")
    );
    let empty = relayfs_dir("relayfs-empty", &[("dropped", b"0")]);
    let out = run(&["cat", empty.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no files named <base><cpu>"));
}

#[test]
fn kernel_commands_name_the_operation_and_the_errno() {
    if Path::new("/dev/relay/control").exists() {
        return; // the module is loaded here: the VM tests cover it
    }
    for args in [
        &["kernel", "create", "t"][..],
        &["kernel", "destroy", "t"][..],
        &["kernel", "bench", "--records", "10"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "open \"/dev/relay/control\": no such device (is relay-kmod loaded?) (ENOENT)"
            ),
            "{args:?}: {stderr}"
        );
    }
    let out = run(&["kernel", "create", "no spaces"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("create \"no spaces\": invalid name"));
    let out = run(&["kernel", "destroy", &"x".repeat(40)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("name longer than 31 bytes (ENAMETOOLONG)")
    );
    let out = run(&["kernel", "load", "/nonexistent/relay", "--records", "1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/relay: open"));
}

#[test]
fn create_on_a_full_filesystem_fails_at_create_with_the_path() {
    // A 1 MiB tmpfs of our own (the tests run as root, as CI does; a
    // machine where mount is refused fails here loudly, never skips).
    let dir = tmp("tiny-fs");
    std::fs::create_dir_all(&dir).unwrap();
    let mount = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            dir.to_str().unwrap(),
        ])
        .output()
        .expect("run mount");
    assert!(
        mount.status.success(),
        "mounting a test tmpfs failed (this test needs root): {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    let p = dir.join("big.relay");
    let out = run(&[
        "create",
        p.to_str().unwrap(),
        "--subbuf-size",
        "1048576",
        "--subbufs",
        "4",
        "--cpus",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let exists = p.exists();
    let _ = Command::new("umount").arg(&dir).status();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: allocate: No space left on device",
            p.display()
        )),
        "{stderr}"
    );
    assert!(!exists, "the half-made file was left behind");
}

#[test]
fn a_reader_that_goes_away_ends_relay_quietly() {
    // `relay stat | head -1`: the pipe's reader is gone before relay prints
    // (its read end closed at once); relay must end as `cat` would (by
    // SIGPIPE, or successfully), never panic about a broken pipe.
    use std::os::unix::process::ExitStatusExt;
    let path = tmp("gone.relay");
    create(&path, &["--cpus", "256"]);
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds are ours; the read end is closed once, here, and
    // the write end moves into the child's stdout.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read_end);
    let out = relay()
        .args(["stat", path.to_str().unwrap()])
        .stdout(write_end)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

#[test]
fn a_slow_producers_records_arrive_within_the_flush_interval() {
    // One line, then the producer waits (its stdin stays open): the switch
    // timer flushes the open sub-buffer, so a reader gets the line now,
    // not when 64 KiB fill. Without the timer it stays invisible.
    for (interval, visible) in [("50ms", true), ("0", false)] {
        let path = tmp(&format!("slow-{visible}.relay"));
        create(&path, &[]);
        let mut child = relay()
            .args([
                "write",
                path.to_str().unwrap(),
                "--flush-interval",
                interval,
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "slow line").unwrap();
        stdin.flush().unwrap();
        // Well past the interval; the reader is a snapshot (changes nothing).
        std::thread::sleep(std::time::Duration::from_millis(500));
        let seen = ok(&run(&["cat", path.to_str().unwrap()]));
        assert_eq!(
            seen.contains("slow line"),
            visible,
            "interval {interval}: {seen:?}"
        );
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        // Ended: flushed either way.
        assert!(ok(&run(&["cat", path.to_str().unwrap()])).contains("slow line"));
    }
}

#[test]
fn write_takes_any_bytes_and_nul_separated_records() {
    let path = tmp("bytes.relay");
    create(&path, &[]);
    let write = |extra: &[&str], input: &[u8]| {
        let mut args = vec!["write", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut child = relay()
            .args(&args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let summary = write(&["--nul"], b"a\nb\0\xff\xfe\0last");
    assert!(
        summary.contains("3 records written, 0 refused"),
        "{summary}"
    );
    let summary = write(&[], b"not utf-8: \xc3\x28\r\nsecond");
    assert!(summary.contains("2 records written"), "{summary}");
    let out = ok(&run(&["cat", "--json", path.to_str().unwrap()]));
    let hex: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("\"payload_hex\":\"").nth(1))
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    let want = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex,
        [
            want(b"a\nb"),
            want(b"\xff\xfe"),
            want(b"last"),
            want(b"not utf-8: \xc3\x28"),
            want(b"second")
        ],
        "{out}"
    );
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&run(&["completions", shell]));
        for sub in [
            "cat",
            "verify",
            "snapshot",
            "kernel",
            "subbuf-size",
            "clock",
        ] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let page = ok(&run(&["man", "kernel", "create"]));
    assert!(page.contains(".TH relay-kernel-create 1"), "{page}");
    assert!(page.contains("\\-\\-clock"), "{page}");
    let out = run(&["man", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no subcommand \"nosuch\""));

    let dir = tmp("man");
    let _ = std::fs::remove_dir_all(&dir);
    ok(&run(&["man", "--all", dir.to_str().unwrap()]));
    let help = ok(&run(&["--help"]));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for sub in [
        "cat",
        "create",
        "stat",
        "verify",
        "write",
        "kernel-create",
        "kernel-bench",
    ] {
        let name = format!("relay-{sub}.1");
        assert!(pages.contains(&name), "{name} missing from {pages:?}");
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(text.contains(".SH NAME"), "{name}");
    }
    // A page for every subcommand --help lists.
    let listed = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&c| c != "help")
        .count();
    assert!(listed >= 10, "{help}");
    let top = pages.iter().filter(|p| p.matches('-').count() == 1).count();
    assert_eq!(top, listed, "{pages:?}");
}

#[test]
fn timestamps_print_as_seconds_raw_relative_or_wall_time() {
    let path = tmp("time.relay");
    create(&path, &[]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let _ = spawn_writer(&path, 1, vec!["one".into(), "two".into()])
        .wait_with_output()
        .unwrap();
    let p = path.to_str().unwrap();
    let first = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["cat"];
        a.extend_from_slice(args);
        a.push(p);
        ok(&run(&a))
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let raw: Vec<u64> = first(&["--time", "raw"])
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let secs = first(&[]);
    assert_eq!(
        secs,
        raw.iter()
            .map(|t| format!("{}.{:09}", t / 1_000_000_000, t % 1_000_000_000))
            .collect::<Vec<_>>(),
        "the default prints the monotonic nanoseconds as seconds"
    );
    let rel = first(&["--time", "rel"]);
    assert_eq!(rel[0], "0.000000000");
    let d = raw[1] - raw[0];
    assert_eq!(
        rel[1],
        format!("{}.{:09}", d / 1_000_000_000, d % 1_000_000_000)
    );
    // Wall time through the header's anchor: today, within the run.
    let wall = first(&["--time", "wall"]);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let day = |ns: u64| ns / 86_400_000_000_000;
    assert!(wall[0].ends_with('Z') && wall[0].contains('T'), "{wall:?}");
    assert!(day(before) <= day(after));
    let json = ok(&run(&["cat", "--json", "--time", "wall", p]));
    assert!(
        json.contains(&format!("\"wall\":\"{}\"", wall[0])),
        "{json}"
    );
    // The wall time of the record lies between before and after: parse
    // back its seconds of the day.
    let hms = &wall[0][11..19];
    let secs_of_day = |h: &str| {
        let v: Vec<u64> = h.split(':').map(|x| x.parse().unwrap()).collect();
        v[0] * 3600 + v[1] * 60 + v[2]
    };
    let s = secs_of_day(hms);
    let (b, a) = (
        before / 1_000_000_000 % 86_400,
        after / 1_000_000_000 % 86_400,
    );
    assert!(b > a || (b..=a).contains(&s), "{hms} not in {b}..{a}");
    // A snapshot keeps the anchor (and the clock).
    let copy = tmp("time-copy.relay");
    ok(&run(&["snapshot", p, "-o", copy.to_str().unwrap()]));
    let copied = ok(&run(&["cat", "--time", "wall", copy.to_str().unwrap()]));
    assert!(copied.starts_with(&wall[0]), "{copied}");
    // Frames carry no anchor: a usage error that says so.
    let out = relay()
        .args(["cat", "--time", "wall", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no realtime anchor"));
}

#[test]
fn json_objects_match_docs_json() {
    // Records (with wall time), stat rows and their total, relayfs chunks:
    // every object as docs/JSON.md documents it (frames_cli and blktrace
    // check the lost, corrupt and blktrace kinds).
    let path = tmp("json-docs.relay");
    create(&path, &[]);
    let _ = spawn_writer(&path, 0, vec!["x".into()])
        .wait_with_output()
        .unwrap();
    let p = path.to_str().unwrap();
    let mut kinds = common::check_json(&ok(&run(&["cat", "--json", "--time", "wall", p])));
    let stat = ok(&run(&["stat", "--json", p]));
    kinds.extend(common::check_json(&stat));
    assert!(
        stat.lines()
            .last()
            .unwrap()
            .starts_with("{\"kind\":\"total\",\"cpus\":2,\"produced\":1,"),
        "{stat}"
    );
    let dir = relayfs_dir("json-relayfs", &[("trace0", b"abc"), ("trace1", b"de")]);
    kinds.extend(common::check_json(&ok(&run(&[
        "cat",
        "--json",
        dir.to_str().unwrap(),
    ]))));
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["chunk", "record", "stat", "total"]
    );
}

/// Undoes `escape_default` (`relay cat`'s text payloads).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'x' => {
                out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                i += 4;
                continue;
            }
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            c @ (b'\\' | b'\'' | b'"') => out.push(c),
            c => panic!("unknown escape \\{}", c as char),
        }
        i += 2;
    }
    out
}

/// Undoes RFC 4648 base64 (padded, standard alphabet).
fn unbase64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {}", c as char),
    };
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let v = quad
            .iter()
            .map(|&c| if c == b'=' { 0 } else { u32::from(value(c)) })
            .fold(0u32, |v, x| v << 6 | x);
        out.extend_from_slice(&v.to_be_bytes()[1..4 - pad]);
    }
    out
}

#[test]
fn payloads_print_as_text_hex_or_base64_and_decode_back() {
    // Every byte but the newline that ends a record, and records whose
    // lengths leave each base64 remainder.
    let all: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').collect();
    let records: Vec<Vec<u8>> = vec![all, b"f".to_vec(), b"fo".to_vec(), b"foo".to_vec()];
    let path = tmp("payloads.relay");
    create(&path, &[]);
    let mut child = relay()
        .args(["write", path.to_str().unwrap(), "--cpu", "0"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for r in &records {
            stdin.write_all(r).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
    let p = path.to_str().unwrap();
    type Decode = fn(&str) -> Vec<u8>;
    let hex: Decode = |s| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    for (args, field, decode) in [
        (&["--json"][..], "payload_hex", hex),
        (&["--json", "--payload", "hex"][..], "payload_hex", hex),
        (
            &["--json", "--payload", "text"][..],
            "payload_text",
            unescape as Decode,
        ),
        (
            &["--json", "--payload", "base64"][..],
            "payload_base64",
            unbase64 as Decode,
        ),
    ] {
        let mut a = vec!["cat"];
        a.extend_from_slice(args);
        a.push(p);
        let out = ok(&run(&a));
        common::check_json(&out);
        let got: Vec<Vec<u8>> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                decode(v[field].as_str().unwrap_or_else(|| panic!("{field}: {l}")))
            })
            .collect();
        assert_eq!(got, records, "{args:?}");
    }
    // Text lines end with the payload, in the form asked for.
    for (form, decode) in [
        ("text", unescape as Decode),
        ("hex", hex),
        ("base64", unbase64 as Decode),
    ] {
        let out = ok(&run(&["cat", "--payload", form, p]));
        let got: Vec<Vec<u8>> = out
            .lines()
            // "TS cpuN type=T len=L PAYLOAD": the payload may hold spaces.
            .map(|l| decode(l.splitn(5, ' ').nth(4).unwrap()))
            .collect();
        assert_eq!(got, records, "--payload {form}");
    }
    // Default text is --payload text.
    assert_eq!(
        ok(&run(&["cat", p])),
        ok(&run(&["cat", "--payload", "text", p]))
    );
    let out = run(&["cat", "--raw", "--payload", "hex", p]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--raw with --payload is a usage error"
    );
}

/// `relay cat a b`: snapshots of several channels as one stream, merged by
/// timestamp and tagged with the channel; their clocks must agree, and
/// consuming or following reads one channel at a time.
#[test]
fn several_channels_merge_by_timestamp() {
    let (a, b) = (tmp("merge-a.relay"), tmp("merge-b.relay"));
    create(&a, &[]);
    create(&b, &[]);
    // One process per write: each record is flushed when its writer ends,
    // so a, b, a, b ... are written (and stamped) in turn.
    for i in 0..3 {
        for (path, cpu, name) in [(&a, 0, "a"), (&b, 1, "b")] {
            let out = spawn_writer(path, cpu, vec![format!("{name}{i}")])
                .wait_with_output()
                .unwrap();
            assert!(out.status.success());
        }
    }
    let (pa, pb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let text = ok(&run(&["cat", pa, pb]));
    let got: Vec<(&str, &str)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1], *f.last().unwrap())
        })
        .collect();
    let want: Vec<(&str, String)> = (0..3)
        .flat_map(|i| [(pa, format!("a{i}")), (pb, format!("b{i}"))])
        .collect();
    assert_eq!(
        got,
        want.iter()
            .map(|(p, r)| (*p, r.as_str()))
            .collect::<Vec<_>>(),
        "{text}"
    );
    // JSON: each object names its channel, as docs/JSON.md says.
    let json = ok(&run(&["cat", "--json", pb, pa]));
    assert_eq!(
        common::check_json(&json).into_iter().collect::<Vec<_>>(),
        ["record"]
    );
    assert_eq!(json.lines().count(), 6);
    assert!(
        json.lines()
            .next()
            .unwrap()
            .contains(&format!("\"channel\":\"{pa}\"")),
        "{json}"
    );
    // Consumed: the same merge, and then they are gone.
    let consumed = ok(&run(&["cat", "--consume", pa, pb]));
    assert_eq!(consumed, text);
    assert_eq!(ok(&run(&["cat", "--consume", pa, pb])), "");
    // Followed: records written to both while it runs come out merged, as
    // they come; SIGINT ends it.
    let mut follower = relay()
        .args(["cat", "--follow", "--latency", "50ms", pa, pb])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    let mut seen = Vec::new();
    for i in 3..5 {
        for (path, cpu, name) in [(&a, 0, "a"), (&b, 1, "b")] {
            let out = spawn_writer(path, cpu, vec![format!("{name}{i}")])
                .wait_with_output()
                .unwrap();
            assert!(out.status.success());
            let line = lines.next().expect("a line").unwrap();
            seen.push(line.rsplit(' ').next().unwrap().to_string());
        }
    }
    assert_eq!(seen, ["a3", "b3", "a4", "b4"]);
    assert_eq!(unsafe { libc::kill(follower.id() as i32, libc::SIGINT) }, 0);
    let status = follower.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert_eq!(
        ok(&run(&["cat", "--consume", pa, pb])),
        "",
        "the follower consumed them"
    );
    // Another clock (header byte 104: 3, the kernel's local_clock) cannot merge.
    let c = tmp("merge-c.relay");
    std::fs::copy(&b, &c).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&c).unwrap();
        f.write_all_at(&3u32.to_le_bytes(), 104).unwrap();
    }
    let out = run(&["cat", pa, c.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("different clocks (monotonic and local)"),
        "{err}"
    );
}
