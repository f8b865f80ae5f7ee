//! blkparse's summary and its `-d` binary dump, against Debian's blkparse
//! and btt: a trace of several seconds (so that throughput is not 0) on
//! three CPUs, with every request kind the summary counts, driver data,
//! and a notify; relay's summary must be byte-identical to blkparse's and
//! its dump byte-identical to `blkparse -d`'s, which btt then reads.

mod common;

use std::process::Command;

use common::blktrace::*;
use common::relay;

use relay_user::blktrace::Endian;

#[test]
fn the_summary_and_the_dump_match_blkparse_and_btt_reads_the_dump() {
    let w = seconds_of_io(0x5eed);
    let dir = scratch_summary("sdb");
    write_files(&dir, "sdb.blktrace.", &w.files(Endian::Little));

    // blkparse: events and summary into one file, the dump into another.
    let expected_dump = dir.with_extension("blkparse.bin");
    let expected = dir.with_extension("blkparse.txt");
    let run = Command::new("blkparse")
        .args(["-i", "sdb", "-D"])
        .arg(&dir)
        .arg("-o")
        .arg(&expected)
        .arg("-d")
        .arg(&expected_dump)
        .output()
        .expect("blkparse is installed (cargo xtask test installs Debian's blktrace)");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let expected = std::fs::read(&expected).unwrap();
    let text = String::from_utf8_lossy(&expected);
    // Not vacuous: the sections and counts the summary has.
    for needle in [
        "CPU0 (sdb):",
        "CPU1 (sdb):",
        "CPU3 (sdb):",
        "Total (sdb):",
        " Read depth: ",
        " PC Reads Queued: ",
        " Reads Requeued: ",
        "Events (sdb): ",
    ] {
        assert!(text.contains(needle), "blkparse printed no {needle:?}");
    }
    assert!(!text.contains("CPU2 (sdb)"), "an empty CPU has no section");
    assert!(
        !text.contains("Throughput (R/W): 0KiB/s / 0KiB/s"),
        "the trace is long enough for a throughput"
    );

    let dump = dir.with_extension("relay.bin");
    let out = relay()
        .args(["cat", "--format", "blktrace", "--dump"])
        .arg(&dump)
        .arg(&dir)
        .output()
        .expect("run relay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_same(&out.stdout, &expected);
    let (ours, theirs) = (
        std::fs::read(&dump).unwrap(),
        std::fs::read(&expected_dump).unwrap(),
    );
    assert!(theirs.len() > 48 * 3000, "{} bytes", theirs.len());
    assert!(
        ours == theirs,
        "the dumps differ ({} and {} bytes; first difference at byte {:?})",
        ours.len(),
        theirs.len(),
        ours.iter().zip(&theirs).position(|(a, b)| a != b)
    );

    // btt reads it (and gives the report it gives for blkparse's).
    let btt = |input: &std::path::Path| {
        // btt writes .dat files (iops, mbps) into its working directory.
        let out = Command::new("btt")
            .current_dir(input.parent().unwrap())
            .arg("-i")
            .arg(input)
            .output()
            .expect("btt is installed (Debian's blktrace)");
        assert!(
            out.status.success(),
            "btt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let report = btt(&dump);
    assert!(
        String::from_utf8_lossy(&report).contains("Q2C"),
        "{}",
        String::from_utf8_lossy(&report)
    );
    assert_eq!(report, btt(&expected_dump));

    // Without a dump, relay says on stderr what blkparse says on stdout
    // about driver data; -q leaves the summary out.
    let out = relay()
        .args(["cat", "--format", "blktrace"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("driver specific data"));
    assert_same(&out.stdout, &expected);
    let out = relay()
        .args(["cat", "--format", "blktrace", "-q"])
        .arg(&dir)
        .output()
        .unwrap();
    let events = text.find("CPU0 (sdb):").unwrap();
    assert_same(&out.stdout, &expected[..events]);

    // --dump is blktrace's, and not JSON's.
    let out = relay()
        .args(["cat", "--format", "blktrace", "--json", "--dump", "x"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = relay()
        .args(["cat", "--format", "raw", "-q"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-summary is for --format blktrace"));
}

fn scratch_summary(name: &str) -> std::path::PathBuf {
    scratch(&format!("summary-{name}"))
}
