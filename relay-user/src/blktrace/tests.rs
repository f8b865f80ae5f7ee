use super::event::dump_pdu;
use super::*;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

const DEV: u32 = (8 << 20) | 16;

fn trace(seq: u32, time: u64, action: u32, cpu: u32) -> Trace {
    Trace {
        magic: MAGIC | u32::from(VERSION),
        sequence: seq,
        time,
        sector: 2048,
        bytes: 4096,
        action,
        pid: 42,
        device: DEV,
        cpu,
        error: 0,
        pdu: Vec::new(),
    }
}

const Q: u32 = category::QUEUE | category::WRITE | 1;

fn name_notify(pid: u32, name: &[u8], cpu: u32) -> Trace {
    let mut comm = name.to_vec();
    comm.resize(16, 0);
    Trace {
        pid,
        action: TN_PROCESS,
        sector: 0,
        bytes: 0,
        sequence: 0,
        pdu: comm,
        ..trace(0, 1, 0, cpu)
    }
}

fn file(traces: &[Trace], endian: Endian) -> Vec<u8> {
    traces
        .iter()
        .flat_map(|t| encode_record(t, endian))
        .collect()
}

fn decode(files: &[Vec<u8>], options: Options) -> (Vec<Event>, Vec<Problem>) {
    let inputs = files
        .iter()
        .enumerate()
        .map(|(cpu, f)| CpuInput {
            path: PathBuf::from(format!("sdb.blktrace.{cpu}")),
            cpu: cpu as u32,
            reader: &f[..],
        })
        .collect();
    let mut d = Decoder::new(
        vec![Device {
            name: "sdb".into(),
            cpus: inputs,
        }],
        options,
    );
    let (mut events, mut problems) = (Vec::new(), Vec::new());
    while let Some(item) = d.next_item() {
        match item {
            Item::Event(e) => events.push(e),
            Item::Problem(p) => problems.push(p),
            Item::Idle => break,
        }
    }
    (events, problems)
}

fn text(events: &[Event]) -> String {
    let mut out = Vec::new();
    for e in events {
        e.write_blkparse(&mut out);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn records_round_trip_in_both_byte_orders() {
    let mut t = trace(7, 123_456_789_012, Q, 3);
    t.pdu = vec![1, 2, 3];
    for e in [Endian::Little, Endian::Big] {
        let bytes = encode_record(&t, e);
        assert_eq!(bytes.len(), HEADER_LEN + 3);
        assert_eq!(
            parse_record(&bytes, None),
            Ok((t.clone(), e, HEADER_LEN + 3))
        );
        assert_eq!(
            parse_record(&bytes, Some(e)),
            Ok((t.clone(), e, HEADER_LEN + 3))
        );
    }
    // The header layout, field by field (blktrace_api.h).
    let b = encode_record(&t, Endian::Little);
    assert_eq!(&b[0..4], &0x6561_7407u32.to_le_bytes());
    assert_eq!(&b[4..8], &7u32.to_le_bytes());
    assert_eq!(&b[8..16], &123_456_789_012u64.to_le_bytes());
    assert_eq!(&b[16..24], &2048u64.to_le_bytes());
    assert_eq!(&b[24..28], &4096u32.to_le_bytes());
    assert_eq!(&b[28..32], &Q.to_le_bytes());
    assert_eq!(&b[32..36], &42u32.to_le_bytes());
    assert_eq!(&b[36..40], &DEV.to_le_bytes());
    assert_eq!(&b[40..44], &3u32.to_le_bytes());
    assert_eq!(&b[44..46], &0u16.to_le_bytes());
    assert_eq!(&b[46..48], &3u16.to_le_bytes());
}

#[test]
fn malformed_records_name_the_field() {
    let t = trace(1, 10, Q, 0);
    let good = encode_record(&t, Endian::Little);

    let r = parse_record(&good[..20], None);
    assert_eq!(r, Err(RecordError::Truncated { have: 20 }));
    assert_eq!(RecordError::Truncated { have: 20 }.field(), "header");
    assert!(RecordError::Truncated { have: 20 }.incomplete());

    let mut bad = good.clone();
    bad[3] = 0x12; // magic's high byte
    let e = parse_record(&bad, None).unwrap_err();
    assert_eq!(e, RecordError::Magic(0x1261_7407));
    assert_eq!(e.field(), "magic");
    assert!(!e.incomplete());
    assert!(e.to_string().contains("0x12617407"), "{e}");

    let mut v8 = good.clone();
    v8[0] = 8;
    let e = parse_record(&v8, None).unwrap_err();
    assert_eq!(e, RecordError::Version(8));
    assert_eq!(e.field(), "magic");
    assert!(e.to_string().contains("version 8"), "{e}");

    let mut long = good.clone();
    long[46..48].copy_from_slice(&100u16.to_le_bytes());
    long.extend_from_slice(&[0; 10]);
    let e = parse_record(&long, None).unwrap_err();
    assert_eq!(
        e,
        RecordError::PduPastEnd {
            pdu_len: 100,
            have: 10
        }
    );
    assert_eq!(e.field(), "pdu_len");
    assert!(e.incomplete());

    // A file that is little-endian does not turn big-endian halfway.
    let big = encode_record(&t, Endian::Big);
    assert!(matches!(
        parse_record(&big, Some(Endian::Little)),
        Err(RecordError::Magic(_))
    ));
}

#[test]
fn a_bad_record_stops_its_cpu_with_a_located_error() {
    let mut cpu0 = file(&[trace(1, 10, Q, 0), trace(2, 30, Q, 0)], Endian::Little);
    let cpu1 = file(&[trace(1, 20, Q, 1), trace(2, 40, Q, 1)], Endian::Little);
    cpu0[HEADER_LEN + 1] ^= 0xff; // second record's magic
    cpu0.extend_from_slice(&encode_record(&trace(3, 50, Q, 0), Endian::Little));
    let (events, problems) = decode(&[cpu0, cpu1], Options::default());
    let seqs: Vec<_> = events.iter().map(|e| (e.cpu, e.trace.sequence)).collect();
    assert_eq!(seqs, [(0, 1), (1, 1), (1, 2)]);
    assert_eq!(problems.len(), 1);
    let p = &problems[0];
    assert_eq!((p.cpu, p.offset, p.field), (0, HEADER_LEN as u64, "magic"));
    assert_eq!(p.severity, Severity::Malformed);
    assert!(
        p.to_string()
            .starts_with("sdb.blktrace.0: cpu 0: offset 48: magic: "),
        "{p}"
    );
}

#[test]
fn a_trailing_partial_record_is_an_error_unless_following() {
    for (cut, field) in [(20, "header"), (HEADER_LEN + 2, "pdu_len")] {
        let mut last = trace(2, 20, category::QUEUE | 10, 0);
        last.pdu = 5u64.to_be_bytes().to_vec();
        let mut cpu0 = file(&[trace(1, 10, Q, 0)], Endian::Little);
        let whole = encode_record(&last, Endian::Little);
        cpu0.extend_from_slice(&whole[..cut]);

        let (events, problems) = decode(&[cpu0.clone()], Options::default());
        assert_eq!(events.len(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].offset, problems[0].field),
            (HEADER_LEN as u64, field)
        );
        assert!(
            problems[0].what.contains("end of the file"),
            "{}",
            problems[0]
        );

        // Following, the partial record is waited for, then completed.
        let follow = Options {
            follow: true,
            latency: Duration::ZERO,
            ..Options::default()
        };
        let (events, problems) = decode(&[cpu0], follow.clone());
        assert_eq!((events.len(), problems.len()), (1, 0), "{problems:?}");

        let mut grown = std::io::Cursor::new(Vec::new());
        grown
            .get_mut()
            .extend_from_slice(&file(&[trace(1, 10, Q, 0)], Endian::Little));
        grown.get_mut().extend_from_slice(&whole[..cut]);
        let grown = std::rc::Rc::new(std::cell::RefCell::new(grown));
        let mut d = Decoder::new(
            vec![Device {
                name: "sdb".into(),
                cpus: vec![CpuInput {
                    path: "trace0".into(),
                    cpu: 0,
                    reader: Growing(grown.clone()),
                }],
            }],
            follow,
        );
        let Some(Item::Event(_)) = d.next_item() else {
            panic!("first event")
        };
        assert!(matches!(d.next_item(), Some(Item::Idle)));
        grown
            .borrow_mut()
            .get_mut()
            .extend_from_slice(&whole[cut..]);
        match d.next_item() {
            Some(Item::Event(e)) => assert_eq!(e.what, What::Fs(Action::UnplugIo(5))),
            other => panic!("{other:?}"),
        }
    }
}

/// A reader whose data grows (a live relay file).
struct Growing(std::rc::Rc<std::cell::RefCell<std::io::Cursor<Vec<u8>>>>);

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

#[test]
fn short_payloads_are_malformed_not_guessed() {
    let unplug = trace(1, 10, category::QUEUE | 10, 0); // no payload
    let mut remap = trace(2, 20, category::QUEUE | 15, 0);
    remap.pdu = vec![0; 12];
    let mut split = trace(3, 30, category::WRITE | 13, 0);
    split.pdu = vec![0; 7];
    let (events, problems) = decode(
        &[file(
            &[unplug, remap, split, trace(4, 40, Q, 0)],
            Endian::Little,
        )],
        Options::default(),
    );
    assert_eq!(events.len(), 1);
    let got: Vec<_> = problems
        .iter()
        .map(|p| (p.offset, p.field, p.severity))
        .collect();
    assert_eq!(
        got,
        [
            (0, "pdu_len", Severity::Malformed),
            (48, "pdu_len", Severity::Malformed),
            (48 + 60, "pdu_len", Severity::Malformed)
        ]
    );
    assert!(
        problems[1].what.contains("remap needs 16"),
        "{}",
        problems[1]
    );
}

#[test]
fn skipped_records_are_warnings() {
    let (events, problems) = decode(
        &[file(
            &[
                trace(1, 10, category::QUEUE | 16, 0), // abort: unknown to 1.2.0
                trace(2, 20, Q, 1),                    // wrong cpu
                trace(3, 30, 1, 0),                    // no category bits
                trace(4, 40, category::DRV_DATA | 17, 0),
                trace(5, 50, Q | CGROUP, 0),
                trace(6, 60, category::PC | 2, 0), // no pc back merge
            ],
            Endian::Little,
        )],
        Options::default(),
    );
    assert!(events.is_empty(), "{events:?}");
    let got: Vec<_> = problems.iter().map(|p| (p.field, p.severity)).collect();
    assert_eq!(
        got,
        [
            ("cpu", Severity::Skipped),
            ("action", Severity::Skipped),
            ("action", Severity::Skipped),
            ("action", Severity::Skipped)
        ]
    );
    assert!(problems[2].what.contains("cgroup"), "{}", problems[2]);
}

#[test]
fn lines_are_blkparse_lines() {
    let mut traces = vec![name_notify(42, b"kworker/0:1", 0)];
    let mut add = |action: u32, f: &dyn Fn(&mut Trace)| {
        let mut t = trace(
            traces.len() as u32,
            1_000_000_000 + traces.len() as u64,
            action,
            0,
        );
        f(&mut t);
        traces.push(t);
    };
    let w = category::WRITE;
    add(category::QUEUE | w | 1, &|_| ());
    add(category::QUEUE | 1, &|t| t.bytes = 0);
    add(category::QUEUE | w | category::SYNC | 2, &|_| ());
    add(
        category::QUEUE | category::READ | category::AHEAD | 3,
        &|_| (),
    );
    add(category::QUEUE | w | 4, &|t| t.pid = 7);
    add(category::QUEUE | w | category::META | 5, &|_| ());
    add(category::REQUEUE | w | 6, &|t| t.error = 0xfffb);
    add(
        category::ISSUE | w | category::FUA | category::FLUSH | 7,
        &|_| (),
    );
    add(category::COMPLETE | w | 8, &|t| t.bytes = 0);
    add(category::QUEUE | 9, &|_| ());
    add(category::QUEUE | 10, &|t| {
        t.pdu = 3u64.to_be_bytes().to_vec()
    });
    add(category::QUEUE | 11, &|t| {
        t.pdu = 1u64.to_be_bytes().to_vec()
    });
    add(category::QUEUE | category::DISCARD | 12, &|_| ());
    add(w | 13, &|t| t.pdu = 2056u64.to_be_bytes().to_vec());
    add(w | 14, &|_| ());
    add(category::QUEUE | w | 15, &|t| {
        t.pdu = [
            ((8u32 << 20) | 17).to_be_bytes().to_vec(),
            DEV.to_be_bytes().to_vec(),
            63u64.to_be_bytes().to_vec(),
        ]
        .concat();
    });
    add(category::PC | category::ISSUE | 7, &|t| {
        t.pdu = vec![0x12, 0, 0]
    });
    add(category::PC | category::COMPLETE | 8, &|t| {
        t.pdu = vec![1, 2, 3]
    });
    add(category::PC | category::QUEUE | 1, &|t| t.pdu = vec![1]);
    add(category::PC | category::REQUEUE | 6, &|t| t.pdu = vec![1]);
    add(TN_MESSAGE, &|t| t.pdu = b"hello\0world".to_vec());
    let (events, problems) = decode(&[file(&traces, Endian::Little)], Options::default());
    assert!(problems.is_empty(), "{problems:?}");
    // (The literal starts with a newline so every line keeps its spaces.)
    let want = "
  8,16   0        1     0.000000000    42  Q   W 2048 + 8 [kworker/0:1]
  8,16   0        2     0.000000001    42  Q   N [kworker/0:1]
  8,16   0        3     0.000000002    42  M  WS 2048 + 8 [kworker/0:1]
  8,16   0        4     0.000000003    42  F  RA 2048 + 8 [kworker/0:1]
  8,16   0        5     0.000000004     7  G   W 2048 + 8 [(null)]
  8,16   0        6     0.000000005    42  S  WM 2048 + 8 [kworker/0:1]
  8,16   0        7     0.000000006    42  R   W 2048 + 8 [65531]
  8,16   0        8     0.000000007    42  D FWF 2048 + 8 [kworker/0:1]
  8,16   0        9     0.000000008    42  C   W 2048 [0]
  8,16   0       10     0.000000009    42  P   R [kworker/0:1]
  8,16   0       11     0.000000010    42  U   R [kworker/0:1] 3
  8,16   0       12     0.000000011    42 UT   R [kworker/0:1] 1
  8,16   0       13     0.000000012    42  I   D 2048 + 8 [kworker/0:1]
  8,16   0       14     0.000000013    42  X   W 2048 / 2056 [kworker/0:1]
  8,16   0       15     0.000000014    42  B   W 2048 + 8 [kworker/0:1]
  8,16   0       16     0.000000015    42  A   W 2048 + 8 <- (8,17) 63
  8,16   0       17     0.000000016    42  D   R 4096 (12 00 ..) [kworker/0:1]
  8,16   0       18     0.000000017    42  C   R (01 02 03) [0]
  8,16   0       19     0.000000018    42  Q   R 4096 [kworker/0:1]
  8,16   0       20     0.000000019    42  R   R [0]
  8,16   0        0     0.000000020     0  m   N hello
";
    assert_eq!(text(&events), &want[1..]);
}

#[test]
fn wide_values_print_as_blkparse_casts_them() {
    let mut t = trace(0x8000_0001, 3_000_000_000_000_000_100, Q, 0);
    t.device = (4095 << 20) | 1_048_575;
    let first = trace(1, 100, Q, 0);
    let early = trace(2, 50, Q, 0); // before genesis: wraps
    let (events, _) = decode(
        &[file(&[first, t, early], Endian::Little)],
        Options::default(),
    );
    let got = text(&events);
    let lines: Vec<_> = got.lines().collect();
    assert_eq!(
        lines[1],
        "4095,1048575  0 -2147483647 -1294967296.000000000    42  Q   W 2048 + 8 [(null)]"
    );
    assert_eq!(
        lines[2],
        "  8,16   0        2 1266874889.709551566    42  Q   W 2048 + 8 [(null)]"
    );
}

#[test]
fn cpus_merge_by_time_with_blkparse_ties() {
    // Equal times: the CPU just printed keeps going while not later.
    let cpu0 = file(
        &[trace(1, 10, Q, 0), trace(2, 20, Q, 0), trace(3, 20, Q, 0)],
        Endian::Little,
    );
    let cpu1 = file(&[trace(1, 10, Q, 1), trace(2, 20, Q, 1)], Endian::Little);
    let cpu2 = file(
        &[trace(1, 5, Q, 2), trace(2, 20, Q, 2), trace(3, 15, Q, 2)],
        Endian::Little,
    );
    let (events, problems) = decode(&[cpu0, cpu1, cpu2], Options::default());
    assert!(problems.is_empty());
    let order: Vec<_> = events.iter().map(|e| (e.cpu, e.trace.sequence)).collect();
    // Setup: [cpu2 (5), cpu0 (10), cpu1 (10)] (cpu1 goes after the head
    // of equal time). After cpu2's 5, its 20 goes behind both 10s; after
    // cpu0's 10, its 20 goes before cpu2's equal 20: [cpu1, cpu0, cpu2].
    // cpu1 keeps the head while its 20 is not later than cpu0's 20; then
    // cpu0 runs out, then cpu2 prints its 20 and its (earlier) 15.
    assert_eq!(
        order,
        [
            (2, 1),
            (0, 1),
            (1, 1),
            (1, 2),
            (0, 2),
            (0, 3),
            (2, 2),
            (2, 3)
        ]
    );
    assert_eq!(events[0].time, 0);
    assert_eq!(events[1].time, 5);
}

#[test]
fn names_come_in_when_read_first_one_wins() {
    // cpu0's whole batch, with its later notify, is read before cpu1's
    // earlier one, and the first name a pid gets stays.
    let cpu0 = file(
        &[
            trace(1, 10, Q, 0),
            name_notify(42, b"second", 0),
            trace(2, 30, Q, 0),
        ],
        Endian::Little,
    );
    let cpu1 = file(
        &[name_notify(42, b"first", 1), trace(1, 20, Q, 1)],
        Endian::Little,
    );
    let (events, _) = decode(&[cpu0, cpu1], Options::default());
    let names: Vec<_> = events.iter().map(|e| e.process.clone()).collect();
    assert_eq!(names, vec![Some(b"second".to_vec()); 3]);

    // A notify more than a batch ahead is not read yet.
    let mut cpu0: Vec<Trace> = (0..BATCH as u32 + 1)
        .map(|i| trace(i + 1, 10 + u64::from(i), Q, 0))
        .collect();
    cpu0[0].pid = 9;
    cpu0[BATCH].pid = 9;
    cpu0.insert(BATCH, name_notify(9, b"late", 0));
    let (events, _) = decode(&[file(&cpu0, Endian::Little)], Options::default());
    assert_eq!(events[0].process, None);
    assert_eq!(events[BATCH].process.as_deref(), Some(&b"late"[..]));
    // Names longer than a comm are cut as strncpy into 16 bytes cuts them.
    let long = Trace {
        pdu: b"0123456789abcdefXYZ".to_vec(),
        ..name_notify(42, b"", 0)
    };
    let (events, _) = decode(
        &[file(&[long, trace(1, 10, Q, 0)], Endian::Little)],
        Options::default(),
    );
    assert_eq!(events[0].process.as_deref(), Some(&b"0123456789abcde"[..]));
}

#[test]
fn big_endian_files_decode_the_same() {
    let mut traces = vec![name_notify(42, b"dd", 0), trace(1, 10, Q, 0)];
    let mut u = trace(2, 20, category::QUEUE | 10, 0);
    u.pdu = 4u64.to_be_bytes().to_vec();
    traces.push(u);
    let (le, _) = decode(&[file(&traces, Endian::Little)], Options::default());
    let (be, _) = decode(&[file(&traces, Endian::Big)], Options::default());
    assert_eq!(text(&le), text(&be));
    assert_eq!(le.len(), 2);
}

#[test]
fn cgroup_records_decode_when_asked() {
    let mut msg = trace(0, 10, TN_MESSAGE | CGROUP, 0);
    msg.pdu = [1u64.to_le_bytes().to_vec(), b"bfq says hi".to_vec()].concat();
    let mut q = trace(1, 20, Q | CGROUP, 0);
    q.pdu = 77u64.to_le_bytes().to_vec();
    let files = [file(&[msg, q], Endian::Little)];

    let (events, problems) = decode(&files, Options::default());
    assert!(events.is_empty());
    assert_eq!(problems.len(), 2);
    assert!(
        problems[0].what.contains("cgroup-tagged message"),
        "{}",
        problems[0]
    );

    let cg = Options {
        cgroup: true,
        ..Options::default()
    };
    let (events, problems) = decode(&files, cg);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].cgroup, events[0].message()),
        (Some(1), &b"bfq says hi"[..])
    );
    assert_eq!((events[1].cgroup, events[1].payload()), (Some(77), &[][..]));
    let mut json = Vec::new();
    events[0].write_json(&mut json);
    events[1].write_json(&mut json);
    let json = String::from_utf8(json).unwrap();
    assert_eq!(
        json,
        "{\"kind\":\"message\",\"ts\":0,\"cpu\":0,\"major\":8,\"minor\":16,\"pid\":42,\"action\":\"m\",\"message\":\"bfq says hi\",\"cgroup\":1}\n\
         {\"kind\":\"fs\",\"ts\":10,\"cpu\":0,\"major\":8,\"minor\":16,\"pid\":42,\"sequence\":1,\"action\":\"Q\",\"rwbs\":\"W\",\"sector\":2048,\"bytes\":4096,\"error\":0,\"cgroup\":77,\"process\":null}\n"
    );
}

#[test]
fn json_names_every_field_and_escapes_text() {
    let mut remap = trace(3, 10, category::QUEUE | category::READ | 15, 0);
    remap.pdu = [
        ((8u32 << 20) | 17).to_be_bytes().to_vec(),
        ((253u32 << 20) | 1).to_be_bytes().to_vec(),
        63u64.to_be_bytes().to_vec(),
    ]
    .concat();
    let files = [file(
        &[name_notify(42, b"a\"b\\c\n", 0), remap],
        Endian::Little,
    )];
    let (events, _) = decode(&files, Options::default());
    let mut json = Vec::new();
    events[0].write_json(&mut json);
    assert_eq!(
        String::from_utf8(json).unwrap(),
        "{\"kind\":\"fs\",\"ts\":0,\"cpu\":0,\"major\":253,\"minor\":1,\"pid\":42,\"sequence\":3,\"action\":\"A\",\"rwbs\":\"R\",\"sector\":2048,\"bytes\":4096,\"error\":0,\"from_major\":8,\"from_minor\":17,\"from_sector\":63,\"process\":\"a\\\"b\\\\c\\n\"}\n"
    );
}

#[test]
fn follow_mode_waits_for_idle_cpus_then_lets_them_go() {
    let cpu0 = file(&[trace(1, 20, Q, 0)], Endian::Little);
    let cpu1: Vec<u8> = Vec::new();
    let mut d = Decoder::new(
        vec![Device {
            name: "sdb".into(),
            cpus: vec![
                CpuInput {
                    path: "trace0".into(),
                    cpu: 0,
                    reader: &cpu0[..],
                },
                CpuInput {
                    path: "trace1".into(),
                    cpu: 1,
                    reader: &cpu1[..],
                },
            ],
        }],
        Options {
            follow: true,
            latency: Duration::from_millis(50),
            ..Options::default()
        },
    );
    assert!(
        matches!(d.next_item(), Some(Item::Idle)),
        "cpu1 holds it back"
    );
    std::thread::sleep(Duration::from_millis(60));
    match d.next_item() {
        Some(Item::Event(e)) => assert_eq!((e.cpu, e.time), (0, 0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(d.next_item(), Some(Item::Idle)));
}

#[test]
fn pdu_dumps_stop_at_trailing_zeros() {
    assert_eq!(dump_pdu(&[]), None);
    assert_eq!(dump_pdu(&[0]).as_deref(), Some("00 .."));
    assert_eq!(dump_pdu(&[0, 1, 0, 0]).as_deref(), Some("00 01 00 .."));
    assert_eq!(dump_pdu(&[0xab, 0xcd]).as_deref(), Some("ab cd"));
    // Zeros up to a last non-zero byte print whole (and the test of "all
    // zero from here" is not a scan from every zero: 64 KiB is quick).
    let mut long = vec![0u8; 65_534];
    long.push(1);
    let text = dump_pdu(&long).unwrap();
    assert!(text.ends_with("00 01") && !text.contains(".."));
    assert_eq!(text.len(), 3 * long.len() - 1);
}

#[test]
fn a_live_file_skips_space_reserved_but_not_yet_written() {
    // relay's read() can return a reservation before its writer filled it:
    // zeros where a record will be, consumed. Following a live file, they
    // are skipped to the next record with a warning; in a saved file they
    // stay malformed, as blkparse sees them.
    let mut bytes = file(&[trace(1, 10, Q, 0)], Endian::Little);
    bytes.extend_from_slice(&[0u8; 48 + 13]);
    bytes.extend(file(&[trace(3, 30, Q, 0)], Endian::Little));
    let follow = Options {
        follow: true,
        latency: Duration::ZERO,
        ..Options::default()
    };
    let (events, problems) = decode(&[bytes.clone()], follow);
    let seqs: Vec<u32> = events.iter().map(|e| e.trace.sequence).collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].severity, Severity::Skipped);
    assert_eq!(problems[0].offset, 48);
    assert!(
        problems[0]
            .what
            .starts_with("61 bytes a writer had reserved"),
        "{}",
        problems[0]
    );
    let (events, problems) = decode(&[bytes], Options::default());
    assert_eq!(events.len(), 1);
    assert_eq!(problems[0].severity, Severity::Malformed);
}
