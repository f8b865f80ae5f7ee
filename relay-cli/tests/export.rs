//! `relay export --chrome`: the trace-event JSON that Perfetto's UI and
//! chrome://tracing open. The structure is checked as those viewers need
//! it: one JSON object with a `traceEvents` array; every event with `ph`,
//! `pid`, `name`; instants with a thread scope; timestamps in microseconds
//! (exactly the nanoseconds / 1000); each request one complete slice,
//! slices on one track never overlapping (so properly nested); named
//! processes and threads.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::blktrace::*;
use common::{relay, run, tmp};
use relay_user::blktrace::{category as c, Endian};
use serde_json::Value;

fn export(sources: &[&std::path::Path], to: &std::path::Path) -> Value {
    let out = relay()
        .args(["export", "--chrome"])
        .arg(to)
        .args(sources)
        .output()
        .expect("run relay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(to).unwrap();
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    let events = v["traceEvents"].as_array().expect("a traceEvents array");
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        assert!(e["pid"].is_u64() && e["name"].is_string(), "{e}");
        match ph {
            "M" => assert!(e["args"]["name"].is_string() || e["args"]["sort_index"].is_u64()),
            "i" => {
                assert_eq!(e["s"], "t", "{e}");
                assert!(e["ts"].is_number() && e["tid"].is_u64(), "{e}");
            }
            "X" => assert!(e["ts"].is_number() && e["dur"].is_number() && e["tid"].is_u64()),
            other => panic!("unexpected ph {other}: {e}"),
        }
    }
    v
}

/// `ts` as written (microseconds with the nanoseconds as decimals), back
/// to nanoseconds; exact while below 2^53 ns.
fn ns(v: &Value) -> u64 {
    let us = v.as_f64().expect("a number");
    (us * 1000.0).round() as u64
}

#[test]
fn blktrace_requests_become_slices_on_lanes_that_never_overlap() {
    let w = seconds_of_io(0xc0ffee);
    let dir = scratch("export-sdb");
    write_files(&dir, "sdb.blktrace.", &w.files(Endian::Little));
    let json = tmp("sdb.json");
    let v = export(&[&dir], &json);
    let events = v["traceEvents"].as_array().unwrap();

    // Every fs completion whose request was queued is one slice.
    // blkparse's genesis: the earliest record, notifies not counted.
    let genesis = w
        .cpus
        .iter()
        .flatten()
        .filter(|t| t.action & c::NOTIFY == 0)
        .map(|t| t.time)
        .min()
        .unwrap();
    let completions = w
        .cpus
        .iter()
        .flatten()
        .filter(|t| t.action & c::FS != 0 && t.action & 0xffff == 8)
        .count();
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(completions > 1000);
    assert_eq!(slices.len(), completions, "one slice per completed request");

    // Slices on one track do not overlap.
    let mut tracks: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    for s in &slices {
        let (start, dur) = (ns(&s["ts"]), ns(&s["dur"]));
        assert!(s["args"]["sector"].is_u64() && s["args"]["bytes"].is_u64());
        tracks
            .entry((s["pid"].as_u64().unwrap(), s["tid"].as_u64().unwrap()))
            .or_default()
            .push((start, start + dur));
    }
    assert!(tracks.len() > 1, "concurrent requests take several lanes");
    for spans in tracks.values_mut() {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlapping slices {pair:?}");
        }
    }

    // Instants: one per event blkparse counts, each at its time since
    // genesis, in microseconds.
    let instants: Vec<&Value> = events.iter().filter(|e| e["ph"] == "i").collect();
    let first_q = w
        .cpus
        .iter()
        .flatten()
        .filter(|t| t.action & 0xffff == 1 && t.action & c::FS != 0)
        .min_by_key(|t| t.time)
        .unwrap();
    let q = instants
        .iter()
        .find(|e| e["name"] == "Q" && e["args"]["sector"] == first_q.sector)
        .expect("the first queue event");
    assert_eq!(
        ns(&q["ts"]),
        first_q.time - genesis,
        "genesis {genesis} q {q} first {first_q:?}"
    );
    assert_eq!(q["tid"], first_q.cpu);

    // Names: the device, its CPUs, its lanes.
    let names: HashMap<(u64, Option<u64>), &str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["args"]["name"].is_string())
        .map(|e| {
            (
                (e["pid"].as_u64().unwrap(), e["tid"].as_u64()),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names[&(1, None)], "sdb (blktrace)");
    assert_eq!(names[&(1, Some(3))], "cpu 3");
    assert_eq!(names[&(1, Some(1_000_000))], "requests 0");
}

#[test]
fn channel_records_are_instants_on_their_cpus() {
    let path = tmp("export.relay");
    let p = path.to_str().unwrap();
    assert!(run(&["create", p, "--cpus", "2", "--subbuf-size", "4K"])
        .status
        .success());
    for (cpu, line) in [("0", "zero\n"), ("1", "one\n")] {
        let mut child = relay()
            .args(["write", p, "--cpu", cpu])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let v = export(&[&path], &tmp("export.json"));
    let events = v["traceEvents"].as_array().unwrap();
    let records: Vec<&Value> = events.iter().filter(|e| e["ph"] == "i").collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["tid"], 0);
    assert_eq!(records[0]["args"]["payload_hex"], "7a65726f");
    assert_eq!(records[1]["tid"], 1);
    assert!(ns(&records[0]["ts"]) <= ns(&records[1]["ts"]));
    // The timestamps are the records' own, in microseconds.
    let out = run(&["cat", "--json", "--time", "raw", p]);
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(ns(&records[0]["ts"]), first["ts"].as_u64().unwrap());

    // A source that does not open leaves no file behind.
    let missing = tmp("missing.json");
    let out = relay()
        .args(["export", "--chrome"])
        .arg(&missing)
        .arg(tmp("nothing.relay"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!missing.exists());
}

/// babeltrace2's text, timestamps as clock values (`--clock-cycles`): for
/// each event, (timestamp, cpu, the fields' text).
fn babeltrace2(dir: &std::path::Path) -> Vec<(u64, u64, String)> {
    let out = std::process::Command::new("babeltrace2")
        .arg("--clock-cycles")
        .arg(dir)
        .output()
        .expect("babeltrace2 is installed (cargo xtask test installs Debian's babeltrace2)");
    assert!(
        out.status.success(),
        "babeltrace2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let ts = l[1..].split(']').next().unwrap().parse().unwrap();
            let cpu = l
                .split("cpu_id = ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap()
                .parse()
                .unwrap();
            let fields = l.rsplit("}, { ").next().unwrap().trim_end_matches(" }");
            (ts, cpu, fields.to_string())
        })
        .collect()
}

/// Sorted within runs of equal timestamps: a tie's order is the merge's.
fn ties_sorted(mut v: Vec<(u64, u64, String)>) -> Vec<(u64, u64, String)> {
    let mut i = 0;
    while i < v.len() {
        let j = i + v[i..].iter().take_while(|e| e.0 == v[i].0).count();
        v[i..j].sort();
        i = j;
    }
    v
}

#[test]
fn ctf_reads_in_babeltrace2_as_relay_cat_prints_it() {
    // A channel: records of two CPUs interleaved.
    let path = tmp("ctf.relay");
    let p = path.to_str().unwrap();
    // Each `relay write` seals a sub-buffer as it ends: room for all.
    let created = run(&[
        "create",
        p,
        "--cpus",
        "2",
        "--subbuf-size",
        "4K",
        "--subbufs",
        "64",
    ]);
    assert!(created.status.success());
    for i in 0..40 {
        let mut child = relay()
            .args(["write", p, "--cpu", &(i % 2).to_string()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("r{i}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let dir = tmp("ctf-channel");
    let out = relay()
        .args(["export", "--ctf"])
        .arg(&dir)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = babeltrace2(&dir);
    let cat = run(&["cat", "--json", "--time", "raw", p]);
    let expected: Vec<(u64, u64, String)> = String::from_utf8_lossy(&cat.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let hex = v["payload_hex"].as_str().unwrap();
            let bytes: Vec<String> = (0..hex.len() / 2)
                .map(|i| {
                    format!(
                        "[{i}] = {}",
                        u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
                    )
                })
                .collect();
            (
                v["ts"].as_u64().unwrap(),
                v["cpu"].as_u64().unwrap(),
                format!(
                    "type = {}, length = {}, payload = [ {} ]",
                    v["type"],
                    v["len"],
                    bytes.join(", ")
                ),
            )
        })
        .collect();
    assert_eq!(expected.len(), 40);
    assert_eq!(ties_sorted(ours), ties_sorted(expected));

    // blktrace: every event, in blkparse's order, at blkparse's times.
    let w = seconds_of_io(0xc7f);
    let files = scratch("ctf-sdb");
    write_files(&files, "sdb.blktrace.", &w.files(Endian::Little));
    let dir = tmp("ctf-blktrace");
    let out = relay()
        .args(["export", "--ctf"])
        .arg(&dir)
        .arg(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = babeltrace2(&dir);
    let cat = relay()
        .args(["cat", "--format", "blktrace", "--json"])
        .arg(&files)
        .output()
        .unwrap();
    let expected: Vec<(u64, u64, String)> = String::from_utf8_lossy(&cat.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["ts"].as_u64().unwrap(),
                v["cpu"].as_u64().unwrap(),
                format!(
                    "action = {}, rwbs = {}, sector = {}, bytes = {}, sequence = {}, pid = {}",
                    v["action"], v["rwbs"], v["sector"], v["bytes"], v["sequence"], v["pid"]
                ),
            )
        })
        .collect();
    assert!(expected.len() > 5000, "{}", expected.len());
    let ours: Vec<(u64, u64, String)> = ours
        .into_iter()
        .map(|(ts, cpu, f)| {
            let f = f.split(", process = ").next().unwrap().to_string();
            (ts, cpu, f)
        })
        .collect();
    assert_eq!(ties_sorted(ours), ties_sorted(expected));

    // The directory must be new or empty.
    let out = relay()
        .args(["export", "--ctf"])
        .arg(&dir)
        .arg(&files)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

/// CPU numbers come from file names and headers: a huge one is one stream,
/// not a table that size.
#[test]
fn a_huge_cpu_number_is_one_stream() {
    let cpu = 4_000_000_000u32;
    let dir = scratch("huge-cpu");
    let trace = relay_user::blktrace::Trace {
        sequence: 1,
        time: 1_000,
        sector: 8,
        bytes: 4096,
        action: c::FS | c::QUEUE | c::WRITE | 1,
        pid: 1,
        ..base(cpu)
    };
    std::fs::write(
        dir.join(format!("sdb.blktrace.{cpu}")),
        relay_user::blktrace::encode_record(&trace, Endian::Little),
    )
    .unwrap();
    let ctf = tmp("huge-cpu-ctf");
    let json = tmp("huge-cpu.json");
    let out = relay()
        .args(["export", "--ctf"])
        .arg(&ctf)
        .arg("--chrome")
        .arg(&json)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = babeltrace2(&ctf);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, u64::from(cpu));
    assert!(ctf.join(format!("stream_cpu{cpu}")).is_file());
}
