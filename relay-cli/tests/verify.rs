//! `relay verify` on userspace channel files written here with checked
//! payloads: the mapped stream is checked record by record, then against
//! the channel's own statistics.

mod common;

use common::run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_core::checked;
use relay_core::{ChannelFlags, GeometryParams};
use relay_user::os::monotonic_ns;
use relay_user::ChannelFile;

fn channel(name: &str, subbuf_size: u64, subbufs: u64, overwrite: bool) -> (ChannelFile, PathBuf) {
    let dir = std::env::temp_dir().join(format!("relay-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let params = GeometryParams {
        subbuf_size,
        subbuf_count: subbufs,
        cpu_count: 2,
        page_size: 0,
    };
    let flags = if overwrite {
        ChannelFlags::OVERWRITE
    } else {
        ChannelFlags::empty()
    };
    (ChannelFile::create(&path, params, flags).unwrap(), path)
}

/// Writes checked payloads `seqs` on `cpu` (each attempt takes its number;
/// `tamper` corrupts the payload of that number), then flushes. Returns
/// how many the channel took.
fn write(
    file: &ChannelFile,
    cpu: u32,
    seqs: impl IntoIterator<Item = u64>,
    tamper: Option<u64>,
) -> u64 {
    let w = file.writer(cpu).unwrap();
    let mut buf = [0u8; 48];
    let mut taken = 0;
    for seq in seqs {
        assert!(checked::fill(&mut buf, cpu, 0, seq));
        if tamper == Some(seq) {
            buf[40] ^= 0x80;
        }
        taken += u64::from(w.write(1, &buf, &mut monotonic_ns).is_ok());
    }
    let _ = w.flush(&mut monotonic_ns);
    taken
}

fn verify(path: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_good_channel_verifies_with_its_losses() {
    // Small buffers: CPU 0 overflows (lost: full), CPU 1 does not.
    let (file, path) = channel("good.relay", 1024, 4, false);
    let taken0 = write(&file, 0, 0..200, None);
    let taken1 = write(&file, 1, 0..10, None);
    assert!(taken0 < 200 && taken1 == 10);
    let lost = 200 - taken0;
    let (code, out) = verify(
        &path,
        &[
            "-v",
            "--expect-records",
            &(taken0 + taken1).to_string(),
            "--expect-lost",
            &lost.to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "verify ok: records={} lost={lost} (full {lost}, too big 0, overwritten 0) cpus=2 late=0 mode=no-overwrite\n",
            taken0 + taken1
        )),
        "{out}"
    );
    assert!(out.contains(" cpu 1: delivered=10 lost=0"), "{out}");
    assert!(out.contains("attempts=200 balanced"), "{out}");
}

#[test]
fn an_overwrite_channel_verifies_with_what_was_overwritten() {
    let (file, path) = channel("flight.relay", 1024, 4, true);
    write(&file, 1, 0..500, None);
    let (code, out) = verify(&path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("mode=overwrite"), "{out}");
    let s = file.stats(1).unwrap();
    assert!(s.lost.overwrite > 0);
    assert!(
        out.contains(&format!(
            "records={} lost={}",
            500 - s.lost.overwrite,
            s.lost.overwrite
        )),
        "{out}"
    );
}

#[test]
fn a_corrupted_payload_fails() {
    let (file, path) = channel("tampered.relay", 4096, 4, false);
    write(&file, 0, 0..20, Some(7));
    let (code, out) = verify(&path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "verify FAILED: cpu 0: payload checksum (expected 0, found 48) (1 checks failed)"
        ),
        "{out}"
    );
}

#[test]
fn a_gap_without_a_loss_report_fails() {
    let (file, path) = channel("gap.relay", 4096, 4, false);
    write(&file, 1, (0..10).chain(11..20), None);
    let (code, out) = verify(&path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "verify FAILED: cpu 1: records missing without a loss report (expected 10, found 11)"
        ),
        "{out}"
    );
}

#[test]
fn records_an_earlier_reader_took_need_resume() {
    for resume in [false, true] {
        let (file, path) = channel(&format!("resume-{resume}.relay"), 4096, 4, false);
        write(&file, 0, 0..10, None);
        write(&file, 1, 0..5, None);
        // Another reader consumes all of it...
        let out = run(&["cat", "--consume", path.to_str().unwrap()]);
        assert!(out.status.success());
        // ...then CPU 0 writes on: 10..20.
        write(&file, 0, 10..20, None);
        let extra: &[&str] = if resume { &["--resume", "-v"] } else { &[] };
        let (code, out) = verify(&path, extra);
        if resume {
            assert_eq!(code, Some(0), "{out}");
            assert!(
                out.contains(
                    " cpu 0: delivered=10 lost=0 (full 0, too big 0, overwritten 0) earlier=10"
                ),
                "{out}"
            );
            assert!(out.contains("cpus=1"), "{out}");
        } else {
            // CPU 0's first record is not its first; CPU 1 delivered
            // nothing of the 5 it wrote.
            assert_eq!(code, Some(1), "{out}");
            assert!(
                out.contains("cpu 0: records missing without a loss report (expected 0, found 10)"),
                "{out}"
            );
        }
    }
}

#[test]
fn statistics_catch_what_the_stream_never_showed() {
    // CPU 1's records were all consumed by another reader: the stream has
    // nothing to check, but the channel counts 5 writes.
    let (file, path) = channel("unseen.relay", 4096, 4, false);
    write(&file, 1, 0..5, None);
    assert!(run(&["cat", "--consume", path.to_str().unwrap()])
        .status
        .success());
    write(&file, 0, 0..3, None);
    let (code, out) = verify(&path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("verify FAILED: cpu 1: accounting: delivered 0 + lost 0 + consumed earlier 0 != 5 writes"),
        "{out}"
    );
}

#[test]
fn follow_mode_ends_when_idle() {
    let (file, path) = channel("follow.relay", 4096, 64, false);
    let p = path.clone();
    let child = std::thread::spawn(move || {
        verify(
            &p,
            &[
                "--follow",
                "--until-idle",
                "500",
                "--latency",
                "20",
                "--expect-records",
                "3000",
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let file = &file;
            s.spawn(move || {
                for chunk in 0..15u64 {
                    write(file, cpu, chunk * 100..(chunk + 1) * 100, None);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
    });
    let (code, out) = child.join().unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verify ok: records=3000 lost=0"), "{out}");
}

#[test]
fn a_readers_mapping_has_no_writers() {
    let (file, path) = channel("reader.relay", 4096, 4, false);
    assert!(file.writer(0).is_some());
    let reader = ChannelFile::open_snapshot(&path).unwrap();
    assert!(!reader.is_kernel());
    assert!(reader.writer(0).is_none() && reader.local_writer(0).is_none());
    assert_eq!(
        reader.flush_cpu(0),
        None,
        "plain files flush through producers"
    );
    assert!(ChannelFile::open_producer(&path)
        .unwrap()
        .writer(1)
        .is_some());
    let (g, flags) = ChannelFile::probe(&path).unwrap();
    assert_eq!((g.cpu_count(), flags), (2, ChannelFlags::empty()));
}

/// `--resume` holds the stream to what earlier readers took: a sub-buffer
/// that vanished at the restart (here: an earlier reader "finished" one
/// but counted none of its records, as if they had been dropped) fails.
#[test]
fn a_resumed_stream_must_start_after_what_was_taken() {
    let (file, path) = channel("resume-gap.relay", 4096, 8, false);
    // Two flushed sub-buffers on CPU 0: seqs 0..10 and 10..20.
    write(&file, 0, 0..10, None);
    write(&file, 0, 10..20, None);
    write(&file, 0, 20..30, None);
    let ch = file.channel();
    let mut earlier = ch.reader(0).unwrap();
    let d = earlier.peek().unwrap().unwrap();
    let (seq, lost) = (d.seq, d.lost_before);
    earlier.finish(seq, &lost, 10);
    earlier.commit();
    let (code, out) = verify(&path, &["--resume"]);
    assert_eq!(code, Some(0), "an honest restart verifies: {out}");

    let (file, path) = channel("resume-gap2.relay", 4096, 8, false);
    write(&file, 0, 0..10, None);
    write(&file, 0, 10..20, None);
    let ch = file.channel();
    let mut earlier = ch.reader(0).unwrap();
    let d = earlier.peek().unwrap().unwrap();
    let (seq, lost) = (d.seq, d.lost_before);
    earlier.finish(seq, &lost, 0); // took the sub-buffer, counted nothing
    earlier.commit();
    let (code, out) = verify(&path, &["--resume"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("resume: the stream began at record 10 but earlier readers took 0"),
        "{out}"
    );
}

#[test]
fn sigint_ends_a_follow_with_its_summary() {
    // A follow with no idle end: SIGINT must end it with the summary of
    // what it read, then by the signal (as relay cat ends).
    use std::os::unix::process::ExitStatusExt;
    let (file, path) = channel("sigint.relay", 4096, 8, false);
    write(&file, 0, 0..100, None);
    write(&file, 1, 0..50, None);
    let child = common::relay()
        .args([
            "verify",
            "--follow",
            "--until-idle",
            "3600s",
            path.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{stdout} {stderr}");
    assert!(
        stdout.contains("verify ok: records=150 lost=0"),
        "{stdout} {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
}
