//! The library's merged stream in follow mode, blocking and async, with
//! writer threads running.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use relay_core::merge::{Event, Flow};
use relay_core::{ChannelFlags, GeometryParams};
use relay_user::os::monotonic_ns;
use relay_user::{ChannelFile, Stream, StreamOptions};

fn channel(name: &str) -> (ChannelFile, PathBuf) {
    let path = std::env::temp_dir().join(format!("relay-stream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let params = GeometryParams {
        subbuf_size: 4096,
        subbuf_count: 64,
        cpu_count: 2,
        page_size: 0,
    };
    (
        ChannelFile::create(&path, params, ChannelFlags::empty()).unwrap(),
        path,
    )
}

/// Two writer threads, each flushing now and then, `n` records each.
fn write(file: &ChannelFile, n: u64) {
    std::thread::scope(|s| {
        for cpu in 0..2 {
            s.spawn(move || {
                let w = file.local_writer(cpu).unwrap();
                for i in 0..n {
                    while w
                        .write(
                            1,
                            &(u64::from(cpu) << 32 | i).to_le_bytes(),
                            &mut monotonic_ns,
                        )
                        .is_err()
                    {
                        std::thread::yield_now();
                    }
                    if i % 100 == 0 {
                        let _ = w.flush(&mut monotonic_ns);
                    }
                }
                let _ = w.flush(&mut monotonic_ns);
            });
        }
    });
}

fn check(got: &[(u64, u64)], n: u64) {
    assert_eq!(got.len() as u64, 2 * n);
    for cpu in 0..2u64 {
        let mine: Vec<u64> = got
            .iter()
            .filter(|r| r.0 >> 32 == cpu)
            .map(|r| r.0 & 0xffff_ffff)
            .collect();
        assert_eq!(
            mine,
            (0..n).collect::<Vec<_>>(),
            "cpu {cpu}: all records, in order"
        );
    }
}

#[test]
fn follow_mode_reads_while_writers_write() {
    let (file, path) = channel("follow");
    let done = AtomicBool::new(false);
    let n = 20_000;
    let got = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let options = StreamOptions {
                follow: true,
                latency: Duration::from_millis(50),
                ..Default::default()
            };
            let mut stream = Stream::new(&file, options).stop_when(&done);
            let mut got = Vec::new();
            while let Some(e) = stream.next_event() {
                if let Event::Record { record, .. } = e {
                    got.push((
                        u64::from_le_bytes(record.payload.try_into().unwrap()),
                        record.ts,
                    ));
                }
            }
            got
        });
        write(&file, n);
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    check(&got, n);
    let _ = std::fs::remove_file(path);
}

#[test]
fn async_stream_with_tokio() {
    let (file, path) = channel("async");
    let done = AtomicBool::new(false);
    let n = 5_000;
    let got = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let options = StreamOptions {
                    follow: true,
                    ..Default::default()
                };
                let mut stream = Stream::new(&file, options).stop_when(&done);
                let mut got = Vec::new();
                while let Some(e) = stream.next_event_async().await {
                    if let Event::Record { record, .. } = e {
                        got.push((
                            u64::from_le_bytes(record.payload.try_into().unwrap()),
                            record.ts,
                        ));
                    }
                }
                got
            })
        });
        write(&file, n);
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    check(&got, n);
    let _ = std::fs::remove_file(path);
}

/// Non-blocking and bounded waits: nothing ready is `Some(0)`, not the end
/// and not a hang; a flushed record is there on the next call.
#[test]
fn non_blocking_and_timeout() {
    let (file, path) = channel("nonblocking");
    let mut stream = Stream::new(
        &file,
        StreamOptions {
            follow: true,
            ..Default::default()
        },
    );
    let mut got = 0;
    assert_eq!(
        stream.try_next_batch(16, &mut |_| {
            got += 1;
            Flow::Take
        }),
        Some(0)
    );
    assert_eq!(
        stream.next_batch_timeout(16, Duration::from_millis(20), &mut |_| {
            got += 1;
            Flow::Take
        }),
        Some(0)
    );
    for cpu in 0..2 {
        let w = file.local_writer(cpu).unwrap();
        w.write(1, b"x", &mut monotonic_ns).unwrap();
        let _ = w.flush(&mut monotonic_ns);
    }
    let mut total = 0;
    while total < 2 {
        let n = stream
            .next_batch_timeout(16, Duration::from_secs(5), &mut |e| {
                assert!(matches!(e, Event::Record { .. }));
                got += 1;
                Flow::Take
            })
            .unwrap();
        assert!(n > 0, "flushed records did not arrive");
        total += n;
    }
    assert_eq!(got, 2);
    drop(stream);
    let _ = std::fs::remove_file(path);
}

/// This thread's voluntary context switches: each is a sleep that ended.
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A follower of a channel file sleeps (a futex, see relay_core::wake)
/// until a writer seals a sub-buffer: idle, it does not wake every few
/// milliseconds as a polling reader would, and a seal wakes it.
#[test]
fn an_idle_follower_sleeps_until_a_writer_seals() {
    let (file, path) = channel("sleeps");
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        let consumer = ChannelFile::open_consumer(&path, &[]).unwrap();
        let options = StreamOptions {
            follow: true,
            latency: Duration::from_millis(10),
            ..StreamOptions::default()
        };
        let mut stream = Stream::new(&consumer, options);
        let before = voluntary_switches();
        let mut got = None;
        // Follow mode: returns only with a record.
        stream.next_batch(1, &mut |e| {
            if let Event::Record { record, .. } = e {
                got = Some(u64::from_le_bytes(record.payload.try_into().unwrap()));
            }
            Flow::Take
        });
        tx.send((got, voluntary_switches() - before)).unwrap();
        let _ = std::fs::remove_file(&path);
    });
    // Idle for 600 ms: a reader polling with a back-off up to 20 ms would
    // wake about 30 times; this one about once (its 1 s liveness look).
    std::thread::sleep(Duration::from_millis(600));
    let w = file.writer(0).unwrap();
    w.write(1, &42u64.to_le_bytes(), &mut monotonic_ns).unwrap();
    let flushed = w.flush(&mut monotonic_ns);
    assert!(flushed.sealed.is_some(), "the flush seals the sub-buffer");
    let (got, switches) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the seal woke the follower");
    follower.join().unwrap();
    assert_eq!(got, Some(42));
    assert!(
        switches <= 6,
        "the follower woke {switches} times in about 600 ms while idle"
    );
}

/// Every record's payload, drained to the end.
fn drain_all<F: std::borrow::Borrow<ChannelFile>>(stream: &mut Stream<'_, F>) -> Vec<u64> {
    let mut got = Vec::new();
    while stream
        .next_batch(usize::MAX, &mut |e| {
            if let Event::Record { record, .. } = e {
                got.push(u64::from_le_bytes(record.payload.try_into().unwrap()));
            }
            Flow::Take
        })
        .is_some()
    {}
    got
}

/// A stream that owns its file (by value, or shared in an `Arc`) can live
/// in a struct of its own and move (returned, boxed) while it reads.
#[test]
fn a_stream_owns_its_file() {
    struct Reader {
        stream: Stream<'static, std::sync::Arc<ChannelFile>>,
    }
    fn snapshot_of(path: &std::path::Path) -> Stream<'static, ChannelFile> {
        Stream::new(
            ChannelFile::open_snapshot(path).unwrap(),
            StreamOptions::default(),
        )
    }
    let (file, path) = channel("owned");
    write(&file, 100);
    drop(file);
    let mut by_value = Box::new(snapshot_of(&path));
    let snapshot = drain_all(&mut *by_value);
    assert_eq!(snapshot.len(), 200);
    let shared = std::sync::Arc::new(ChannelFile::open_consumer(&path, &[]).unwrap());
    let mut reader = Reader {
        stream: Stream::new(shared.clone(), StreamOptions::default()),
    };
    drop(shared); // the stream's clone keeps the file open
    let moved = std::mem::replace(
        &mut reader,
        Reader {
            stream: Stream::new(
                std::sync::Arc::new(ChannelFile::open_snapshot(&path).unwrap()),
                StreamOptions::default(),
            ),
        },
    );
    let mut consumer = moved;
    assert_eq!(drain_all(&mut consumer.stream), snapshot);
    drop(consumer);
    // Consumed: a new consumer finds nothing; the other snapshot still
    // sees what it saw when it was opened.
    let again = ChannelFile::open_consumer(&path, &[]).unwrap();
    assert!(drain_all(&mut Stream::new(&again, StreamOptions::default())).is_empty());
    assert_eq!(drain_all(&mut reader.stream).len(), 200);
    let _ = std::fs::remove_file(&path);
}

/// The async follower: the same sleep, on tokio's blocking pool; the
/// runtime's thread waits for it instead of waking on a timer.
#[test]
fn an_async_follower_sleeps_until_a_writer_seals() {
    let (file, path) = channel("sleeps-async");
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        let consumer = ChannelFile::open_consumer(&path, &[]).unwrap();
        let options = StreamOptions {
            follow: true,
            latency: Duration::from_millis(10),
            ..StreamOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (got, switches) = rt.block_on(async {
            let mut stream = Stream::new(&consumer, options);
            let before = voluntary_switches();
            let got = match stream.next_event_async().await {
                Some(Event::Record { record, .. }) => {
                    Some(u64::from_le_bytes(record.payload.try_into().unwrap()))
                }
                _ => None,
            };
            (got, voluntary_switches() - before)
        });
        tx.send((got, switches)).unwrap();
        let _ = std::fs::remove_file(&path);
    });
    std::thread::sleep(Duration::from_millis(600));
    let w = file.writer(1).unwrap();
    w.write(1, &7u64.to_le_bytes(), &mut monotonic_ns).unwrap();
    assert!(w.flush(&mut monotonic_ns).sealed.is_some());
    // CPU 0 never writes: the stream waits out its 10 ms latency for it.
    let (got, switches) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the seal woke the async follower");
    follower.join().unwrap();
    assert_eq!(got, Some(7));
    assert!(
        switches <= 8,
        "the runtime's thread woke {switches} times in about 600 ms while idle"
    );
}

/// An async wait cancelled mid-sleep (a timeout around it) takes its
/// registration back: no `waiters` word is left set, which would make
/// writers wake nobody on every seal.
#[test]
fn a_cancelled_async_wait_leaves_no_registration() {
    let (file, path) = channel("cancelled");
    let consumer = ChannelFile::open_consumer(&path, &[]).unwrap();
    let options = StreamOptions {
        follow: true,
        ..StreamOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut stream = Stream::new(&consumer, options);
    let waiters = |cpu| file.channel().waiters(cpu).unwrap().load(Ordering::SeqCst);
    for _ in 0..3 {
        let r = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), stream.next_event_async())
                .await
                .is_err()
        });
        assert!(r, "nothing was written: the wait times out");
        assert_eq!((waiters(0), waiters(1)), (0, 0));
    }
    let _ = std::fs::remove_file(&path);
}

/// The stream as a `futures::Stream` of owned events: idle, it sleeps
/// until a writer seals (a handful of switches, not a timer's), wakes with
/// the record, and the event outlives the next poll.
#[test]
fn the_futures_stream_sleeps_until_a_writer_seals() {
    use futures_util::StreamExt;
    let (file, path) = channel("futures-stream");
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        let consumer = ChannelFile::open_consumer(&path, &[]).unwrap();
        let options = StreamOptions {
            follow: true,
            latency: Duration::from_millis(10),
            ..StreamOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (events, switches) = rt.block_on(async {
            let events = Stream::new(consumer, options).into_events();
            let mut events = std::pin::pin!(events);
            let before = voluntary_switches();
            let first = events.next().await;
            let switches = voluntary_switches() - before;
            let second = events.next().await;
            (vec![first, second], switches)
        });
        tx.send((events, switches)).unwrap();
        let _ = std::fs::remove_file(&path);
    });
    std::thread::sleep(Duration::from_millis(600));
    let w = file.writer(1).unwrap();
    w.write(1, &7u64.to_le_bytes(), &mut monotonic_ns).unwrap();
    w.write(2, &8u64.to_le_bytes(), &mut monotonic_ns).unwrap();
    assert!(w.flush(&mut monotonic_ns).sealed.is_some());
    let (events, switches) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the seal woke the futures stream");
    follower.join().unwrap();
    let payloads: Vec<(u16, Vec<u8>)> = events
        .into_iter()
        .map(|e| match e {
            Some(relay_user::OwnedEvent::Record {
                cpu: 1,
                rtype,
                payload,
                ..
            }) => (rtype, payload),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        payloads,
        vec![
            (1, 7u64.to_le_bytes().to_vec()),
            (2, 8u64.to_le_bytes().to_vec())
        ]
    );
    assert!(
        switches <= 8,
        "the runtime's thread woke {switches} times in about 600 ms while idle"
    );
}
