//! Exactly-once consumption, end to end with the `relay` CLI: a consumer
//! commits only what its output took, so a consumer ended by SIGINT
//! leaves exactly the rest to the next one, and one killed by SIGKILL at
//! any instant, again and again while writers run, loses nothing: every
//! record is delivered or counted lost, and a record is delivered twice
//! only in the batch a killed consumer had in flight (at most one pipe
//! write, `PIPE_BUF` bytes).

mod common;

use common::{ok, relay, tmp};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

fn create(path: &Path, subbufs: u32, overwrite: bool) {
    let s = path.to_str().unwrap();
    let n = subbufs.to_string();
    let mut args = vec![
        "create",
        s,
        "--subbuf-size",
        "4096",
        "--subbufs",
        &n,
        "--cpus",
        "2",
    ];
    if overwrite {
        args.push("--overwrite");
    }
    ok(&relay().args(args).output().unwrap());
}

/// A `relay write` on `cpu` fed `lines` lines `cpuN-IIIII.PAD` (`pad`
/// bytes of padding) by a thread, `burst` at a time with a pause between
/// bursts.
fn writer(path: &Path, cpu: u32, lines: u32, pad: usize, burst: u32, pause: Duration) -> Child {
    let mut w = relay()
        .args(["write", path.to_str().unwrap(), "--cpu", &cpu.to_string()])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = w.stdin.take().unwrap();
    let pad = "x".repeat(pad);
    std::thread::spawn(move || {
        for i in 0..lines {
            writeln!(stdin, "cpu{cpu}-{i:05}.{pad}").unwrap();
            if burst > 0 && i % burst == burst - 1 {
                stdin.flush().unwrap();
                std::thread::sleep(pause);
            }
        }
    });
    w
}

/// What one consumer printed: per CPU the ids in order, the bytes of each
/// record line, and the largest loss total reported (a loss report
/// delivered again after a kill repeats or includes an earlier one; the
/// total, "N in all", says how many were lost in all).
#[derive(Default)]
struct Run {
    ids: [Vec<u32>; 2],
    line_bytes: [Vec<usize>; 2],
    lost_total: [u64; 2],
    /// Records among the last `PIPE_BUF` bytes printed: a superset of the
    /// batch in flight when the consumer was killed.
    last_batch: [u64; 2],
    /// Loss reports by (cpu, timestamp): a repeated one has the same.
    lost: BTreeMap<(u32, u64), u64>,
}

fn parse(stdout: &str, stderr: &str) -> Run {
    let mut run = Run::default();
    let mut from_end = 0;
    for line in stdout.lines().rev() {
        from_end += line.len() + 1;
        if from_end > libc::PIPE_BUF {
            break;
        }
        let cpu = usize::from(line.split(' ').nth(1) == Some("cpu1"));
        run.last_batch[cpu] += 1;
    }
    for line in stdout.lines() {
        // "TS cpuN type=1 len=L cpuN-IIIII.PAD"
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 5, "{line:?}");
        let cpu: usize = f[1].trim_start_matches("cpu").parse().unwrap();
        let (who, id) = f[4].split_once('-').unwrap();
        assert_eq!(who, f[1], "{line}");
        let id = id.split('.').next().unwrap();
        run.ids[cpu].push(id.parse().unwrap());
        run.line_bytes[cpu].push(line.len() + 1);
    }
    for line in stderr.lines() {
        // "relay: PATH: cpu N lost X records before ts T (...; S in all)"
        let Some((_, rest)) = line.split_once(": cpu ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        if f.get(1) != Some(&"lost") {
            continue;
        }
        let cpu: u32 = f[0].parse().unwrap();
        let n: u64 = f[2].parse().unwrap();
        let ts: u64 = f[6].parse().unwrap();
        run.lost.insert((cpu, ts), n);
        let all: u64 = f[f.len() - 3].parse().unwrap();
        let t = &mut run.lost_total[cpu as usize];
        *t = (*t).max(all);
    }
    run
}

/// Runs `relay cat --consume [--follow] PATH`, reading its output as it
/// comes; `kill_after` ends it with SIGKILL.
fn consume(path: &Path, follow: bool, kill_after: Option<Duration>) -> Run {
    let mut args = vec!["cat", "--consume", path.to_str().unwrap()];
    if follow {
        args.extend(["--follow", "--latency", "5"]);
    }
    let mut c = relay()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = c.stdout.take().unwrap();
    let mut err = c.stderr.take().unwrap();
    // A slow reader: the consumer often waits on a full pipe, where a
    // kill finds it with a batch half in hand.
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf).unwrap() {
                0 => break,
                n => s.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        String::from_utf8(s).unwrap()
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    if let Some(d) = kill_after {
        std::thread::sleep(d);
        let _ = c.kill();
    }
    let status = c.wait().unwrap();
    let (stdout, stderr) = (reader.join().unwrap(), err_reader.join().unwrap());
    if kill_after.is_none() {
        assert!(status.success(), "{status:?}: {stderr}");
    }
    // A killed consumer may die mid-line: what it printed whole counts.
    let whole = &stdout[..stdout.rfind('\n').map_or(0, |i| i + 1)];
    parse(whole, &stderr)
}

/// Checks runs of consumers of one channel against `written` records per
/// CPU: every id delivered or counted lost, in order within each run, and
/// repeated only at the start of a run, in at most `in_flight` bytes. The
/// losses: the largest total reported; in a channel that never overwrites,
/// a repeated report is identical, so the sum of distinct ones too. In a
/// flight recorder, records a killed consumer printed without committing
/// them and that writers then overwrote are counted lost by its successor
/// as well: at most its batch in flight.
fn check(runs: &[Run], written: u32, in_flight: usize, overwrite: bool) {
    let mut lost: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    for r in runs {
        lost.extend(r.lost.iter().map(|(k, v)| (*k, *v)));
    }
    for cpu in 0..2usize {
        let mut seen = BTreeSet::new();
        let mut repeats = 0usize;
        for (i, r) in runs.iter().enumerate() {
            let ids = &r.ids[cpu];
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "run {i} cpu {cpu}: ids out of order"
            );
            // Repeats: a prefix of this run, bytes of one batch.
            let again = ids.iter().take_while(|id| seen.contains(*id)).count();
            assert!(
                ids[again..].iter().all(|id| !seen.contains(id)),
                "run {i} cpu {cpu}: a record delivered twice outside the batch in flight"
            );
            let bytes: usize = r.line_bytes[cpu][..again].iter().sum();
            assert!(
                bytes <= in_flight,
                "run {i} cpu {cpu}: {again} records ({bytes} bytes) repeated"
            );
            repeats += again;
            seen.extend(ids.iter().copied());
        }
        let total = runs.iter().map(|r| r.lost_total[cpu]).max().unwrap_or(0);
        if !overwrite {
            let sum: u64 = lost
                .iter()
                .filter(|((c, _), _)| *c as usize == cpu)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(sum, total, "cpu {cpu}: distinct loss reports vs the total");
        }
        let lost = total;
        let delivered = seen.len() as u64;
        let written = u64::from(written);
        assert!(
            delivered + lost >= written,
            "cpu {cpu}: {delivered} delivered + {lost} lost < {written} written: records lost silently"
        );
        let in_flight_records: u64 = runs.iter().map(|r| r.last_batch[cpu]).sum();
        let excess = delivered + lost - written;
        if overwrite {
            assert!(
                excess <= in_flight_records,
                "cpu {cpu}: {excess} records both delivered and counted lost, more than the batches in flight ({in_flight_records})"
            );
        } else {
            assert_eq!(
                excess, 0,
                "cpu {cpu}: records both delivered and counted lost"
            );
        }
        eprintln!(
            "cpu {cpu}: {delivered} delivered, {lost} lost ({excess} of them also delivered), {repeats} repeated over {} runs",
            runs.len()
        );
    }
}

/// SIGINT while the consumer is blocked writing to a full pipe: it
/// finishes the batch in hand, commits it, and ends by the signal; the
/// next consumer prints exactly the rest.
#[test]
fn sigint_commits_exactly_what_was_written() {
    let p = tmp("sigint.relay");
    create(&p, 64, false);
    for cpu in 0..2 {
        let w = writer(&p, cpu, 6000, 0, 0, Duration::ZERO);
        assert!(w.wait_with_output().unwrap().status.success());
    }
    ok(&relay()
        .args(["flush", p.to_str().unwrap()])
        .output()
        .unwrap());
    let mut c = relay()
        .args(["cat", "--consume", p.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 12000 lines of about 40 bytes fill the pipe: the consumer blocks.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY-free: kill(2) through libc, on our own child.
    let pid = libc::pid_t::try_from(c.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut first = String::new();
    c.stdout.take().unwrap().read_to_string(&mut first).unwrap();
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = c.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}: {err}");
    let first = parse(&first, &err);
    let printed = first.ids[0].len() + first.ids[1].len();
    assert!(
        printed > 0 && printed < 12000,
        "SIGINT did not land mid-stream: {printed} printed"
    );
    let second = consume(&p, false, None);
    for cpu in 0..2 {
        let mut all = first.ids[cpu].clone();
        all.extend(&second.ids[cpu]);
        assert_eq!(all, (0..6000).collect::<Vec<_>>(), "cpu {cpu}");
    }
    assert!(first.lost.is_empty() && second.lost.is_empty());
}

/// A consumer SIGKILLed at random instants 200 times while two writers
/// run, restarted each time, then one that reads to the end: every record
/// delivered or counted lost, repeats only in the batch in flight.
fn kill_loop(overwrite: bool) {
    let p = tmp(&format!("kill-{overwrite}.relay"));
    create(&p, 16, overwrite);
    let per_cpu = 20000;
    let writers: Vec<Child> = (0..2)
        .map(|cpu| writer(&p, cpu, per_cpu, 150, 100, Duration::from_millis(15)))
        .collect();
    let mut runs = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = Duration::from_micros(500 + rng % 30_000);
        runs.push(consume(&p, true, Some(after)));
    }
    for mut w in writers {
        assert!(w.wait().unwrap().success());
    }
    ok(&relay()
        .args(["flush", p.to_str().unwrap()])
        .output()
        .unwrap());
    runs.push(consume(&p, false, None));
    check(&runs, per_cpu, libc::PIPE_BUF, overwrite);
    let delivered: usize = runs.iter().map(|r| r.ids[0].len() + r.ids[1].len()).sum();
    assert!(delivered > 0);
}

#[test]
fn consumer_killed_200_times_loses_nothing() {
    kill_loop(false);
}

/// The same with a flight recorder: a killed consumer's claimed, not yet
/// committed sub-buffers are re-read by the next one, or counted lost if
/// the writers reused them meanwhile.
#[test]
fn overwrite_consumer_killed_200_times_loses_nothing() {
    kill_loop(true);
}

/// `relay write --block` into a channel far smaller than what it writes,
/// with a consumer reading: it waits for room instead of losing, so every
/// line arrives, in order, and nothing is counted lost.
#[test]
fn a_blocking_writer_loses_nothing() {
    let p = tmp("block.relay");
    let s = p.to_str().unwrap();
    ok(&relay()
        .args([
            "create",
            s,
            "--subbuf-size",
            "4096",
            "--subbufs",
            "4",
            "--cpus",
            "1",
        ])
        .output()
        .unwrap());
    let mut consumer = relay()
        .args(["cat", "--consume", "--follow", "--latency", "5", s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = consumer.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let lines = 20000u32;
    let mut w = relay()
        .args(["write", s, "--cpu", "0", "--block"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = w.stdin.take().unwrap();
    for i in 0..lines {
        writeln!(stdin, "cpu0-{i:05}").unwrap();
    }
    drop(stdin);
    let wout = w.wait_with_output().unwrap();
    let werr = String::from_utf8_lossy(&wout.stderr);
    assert!(wout.status.success(), "{werr}");
    assert!(
        werr.contains(&format!("{lines} records written, 0 refused")),
        "{werr}"
    );
    // The consumer drains what is left, then SIGINT ends it cleanly.
    let start = std::time::Instant::now();
    loop {
        let stat = ok(&relay().args(["stat", "--json", s]).output().unwrap());
        if stat.contains(&format!("\"produced\":{lines},\"consumed\":{lines},")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{stat}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(consumer.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    consumer.wait().unwrap();
    let mut err = String::new();
    consumer
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let got = parse(&reader.join().unwrap(), &err);
    assert_eq!(got.ids[0], (0..lines).collect::<Vec<_>>());
    assert!(got.lost.is_empty(), "{err}");
}

/// A producer SIGKILLed at random instants 200 times, restarted each time,
/// beside a consumer: whatever it held when it died, the next producer's
/// open repairs (the producer lock proves no writer is alive), so the
/// buffer never wedges; no record is delivered half-written or out of
/// order, and a record a dead producer had reserved is counted abandoned.
#[test]
fn producer_killed_200_times_never_wedges() {
    let p = tmp("producer-kill.relay");
    let s = p.to_str().unwrap().to_string();
    ok(&relay()
        .args([
            "create",
            &s,
            "--subbuf-size",
            "4096",
            "--subbufs",
            "8",
            "--cpus",
            "1",
        ])
        .output()
        .unwrap());
    let mut consumer = relay()
        .args(["cat", "--consume", "--follow", "--latency", "5", &s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = consumer.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let mut err = consumer.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let instances = 200u32;
    for k in 0..instances {
        let mut w = relay()
            .args(["write", &s, "--cpu", "0", "--block"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = w.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            for i in 0..100_000u32 {
                if writeln!(stdin, "{k:03}-{i:06}.{}", "x".repeat(40)).is_err() {
                    break;
                }
            }
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(1000 + rng % 15_000));
        let _ = w.kill();
        w.wait().unwrap();
        feeder.join().unwrap();
    }
    // A last producer that lives: its open repairs what the last killed
    // one left, and all of its records must come through. It waits (up to
    // 10 s a record) for the consumer to drain what the killed ones left: a
    // full buffer the consumer is still reading is not a wedge, and a
    // wedged one still refuses after the wait.
    let mut w = relay()
        .args(["write", &s, "--cpu", "0", "--block=10000"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = w.stdin.take().unwrap();
    for i in 0..100u32 {
        writeln!(stdin, "{instances:03}-{i:06}.{}", "x".repeat(40)).unwrap();
    }
    drop(stdin);
    let last_out = w.wait_with_output().unwrap();
    let last_err = String::from_utf8_lossy(&last_out.stderr);
    assert!(
        last_err.contains("100 records written, 0 refused"),
        "wedged: {last_err}"
    );
    let start = std::time::Instant::now();
    let stat = loop {
        let stat = ok(&relay().args(["stat", "--json", &s]).output().unwrap());
        let field = |name: &str| -> u64 {
            let at = stat.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            stat[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        if field("produced") == field("consumed") && field("ready_subbufs") == 0 {
            break stat;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the buffer wedged: {stat}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = libc::pid_t::try_from(consumer.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    consumer.wait().unwrap();
    let (text, err) = (reader.join().unwrap(), err_reader.join().unwrap());
    let mut last: Vec<Option<u32>> = vec![None; instances as usize + 1];
    let mut delivered = 0u64;
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        // "TS cpu0 type=1 len=51 KKK-IIIIII.xxxx"
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 5, "{line:?}");
        assert_eq!(f[3], "len=51", "a record delivered half-written: {line:?}");
        let (id, pad) = f[4].split_once('.').unwrap();
        assert_eq!(pad, "x".repeat(40), "{line:?}");
        let (k, i) = id.split_once('-').unwrap();
        let (k, i): (usize, u32) = (k.parse().unwrap(), i.parse().unwrap());
        let expect = last[k].map_or(0, |l| l + 1);
        assert_eq!(
            i,
            expect,
            "instance {k}: a record missing or repeated at line {n}: {line}\n\
             lines before:\n{}\nthe consumer said:\n{err}",
            lines[n.saturating_sub(4)..n].join("\n")
        );
        last[k] = Some(i);
        delivered += 1;
    }
    let abandoned: u64 = err
        .lines()
        .filter_map(|l| l.split_once(", abandoned ").map(|(_, r)| r))
        .map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(abandoned <= u64::from(instances), "{abandoned} abandoned");
    assert_eq!(
        last[instances as usize],
        Some(99),
        "the last producer's records"
    );
    assert!(
        stat.contains(&format!("\"produced\":{delivered},")),
        "{stat}"
    );
    eprintln!("{delivered} records from {instances} killed producers, {abandoned} abandoned");
}
