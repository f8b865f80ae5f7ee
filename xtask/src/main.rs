//! The build driver: `cargo xtask <command>`.
//!
//! - `test`: everything CI checks: formatting, the workspace build (and
//!   relay-core without default features, as the kernel builds it), clippy,
//!   unit/differential/scenario tests (after installing their apt packages:
//!   blktrace, whose blkparse the decoder is compared with), the loom models,
//!   a 25-second run of every fuzz target (two at a time), and the kernel
//!   tests (`vm-test`) in qemu.
//! - `demo`: the main job (see README).
//! - `bench`: the criterion benchmarks (numbers go to BENCHMARKS.md).
//! - `fuzz [--seconds N] [targets]`: every cargo-fuzz target for N seconds
//!   (default 30; `test` runs this as a smoke run), as many at a time as
//!   there are cores, up to two; each one's output goes to target/fuzz-logs.
//! - `vm-test`: build the test kernel and relay-kmod, boot them in qemu and
//!   run the in-guest scenarios (see `vm.rs`).
//! - `man`: the manual pages (target/man) and shell completions
//!   (target/completions); `test` builds them too, after the API docs
//!   (`cargo doc`, warnings are errors).
//!
//! Every step prints what it runs; any failure stops the run with a non-zero
//! exit. Nothing is skipped silently: a step that cannot run fails.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::time::Instant;

mod vm;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd`, echoing it; exits on failure.
fn run(step: &str, mut cmd: Command) {
    let shown = format!("{cmd:?}").replace('"', "");
    println!("\n==> {step}\n    {shown}");
    let start = Instant::now();
    let status = cmd.status().unwrap_or_else(|e| {
        eprintln!("xtask: cannot start {shown}: {e}");
        exit(2)
    });
    if !status.success() {
        eprintln!("xtask: step '{step}' failed ({status})");
        exit(1);
    }
    println!("    ok in {:.1}s", start.elapsed().as_secs_f64());
}

fn cargo_args(args: &[&str]) -> Command {
    let mut c = cargo();
    c.args(args);
    c
}

/// The cargo-fuzz targets (fuzz/fuzz_targets/*.rs).
const FUZZ_TARGETS: [&str; 7] = [
    "format",
    "geometry",
    "model",
    "hostile_consumer",
    "relayfs_dir",
    "blktrace",
    "frames",
];

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs every fuzz target (or those named) for `seconds` each, installing
/// cargo-fuzz first if it is missing. New inputs go to target/fuzz-corpus;
/// the committed seeds in fuzz/corpus are read, never written.
fn fuzz(args: &[String]) {
    let mut seconds = 30u64;
    let mut targets: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                    eprintln!("xtask fuzz: --seconds needs a number");
                    exit(2)
                })
            }
            t if FUZZ_TARGETS.contains(&t) => targets.push(t),
            other => {
                eprintln!("xtask fuzz: unknown argument {other} (targets: {FUZZ_TARGETS:?})");
                exit(2)
            }
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    if !have("cargo-fuzz", "--version") {
        run(
            "install cargo-fuzz",
            cargo_args(&["install", "cargo-fuzz", "--locked"]),
        );
    }
    let fuzz_dir = root().join("fuzz");
    let mut build = cargo_args(&["fuzz", "build", "-O"]);
    build.current_dir(&fuzz_dir).env("RUSTC_BOOTSTRAP", "1");
    run("build fuzz targets (AddressSanitizer)", build);
    // libFuzzer runs one process per target: two at a time keep both
    // cores of a CI machine busy and halve the wall time.
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let logs = root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| {
        eprintln!("xtask fuzz: cannot create {}: {e}", logs.display());
        exit(2)
    });
    println!(
        "\n==> fuzz {} targets for {seconds}s each, {jobs} at a time (logs in {})",
        targets.len(),
        logs.display()
    );
    for batch in targets.chunks(jobs) {
        let running: Vec<_> = batch
            .iter()
            .map(|&t| {
                let scratch = root().join("target/fuzz-corpus").join(t);
                std::fs::create_dir_all(&scratch).unwrap_or_else(|e| {
                    eprintln!("xtask fuzz: cannot create {}: {e}", scratch.display());
                    exit(2)
                });
                let log = logs.join(format!("{t}.log"));
                let out = std::fs::File::create(&log).unwrap_or_else(|e| {
                    eprintln!("xtask fuzz: cannot create {}: {e}", log.display());
                    exit(2)
                });
                let err = out.try_clone().unwrap_or_else(|e| {
                    eprintln!("xtask fuzz: {}: {e}", log.display());
                    exit(2)
                });
                let mut c = cargo_args(&["fuzz", "run", "-O", t]);
                c.current_dir(&fuzz_dir)
                    .env("RUSTC_BOOTSTRAP", "1")
                    .arg(&scratch)
                    .arg(fuzz_dir.join("corpus").join(t))
                    .args([
                        "--",
                        &format!("-max_total_time={seconds}"),
                        "-print_final_stats=1",
                    ])
                    .stdout(out)
                    .stderr(err);
                let child = c.spawn().unwrap_or_else(|e| {
                    eprintln!("xtask fuzz: cannot start cargo fuzz run {t}: {e}");
                    exit(2)
                });
                (t, log, child, Instant::now())
            })
            .collect();
        for (t, log, mut child, start) in running {
            let status = child.wait().unwrap_or_else(|e| {
                eprintln!("xtask fuzz: waiting for {t}: {e}");
                exit(2)
            });
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if !status.success() {
                eprintln!(
                    "\n==> fuzz {t}: FAILED ({status}); the end of {}:",
                    log.display()
                );
                for l in &lines[lines.len().saturating_sub(80)..] {
                    eprintln!("    {l}");
                }
                exit(1);
            }
            let stats: Vec<&str> = lines
                .iter()
                .filter(|l| {
                    l.starts_with("Done ") || l.starts_with("stat::number_of_executed_units")
                })
                .copied()
                .collect();
            println!(
                "    fuzz {t}: ok in {:.1}s: {}",
                start.elapsed().as_secs_f64(),
                stats.join("; ")
            );
        }
    }
}

/// The manual pages (target/man/relay*.1, one per subcommand) and the
/// shell completions (target/completions/), from the CLI's own definitions.
fn man() {
    let out = root().join("target");
    let mut c = cargo_args(&["run", "--release", "-p", "relay-cli", "--", "man", "--all"]);
    c.arg(out.join("man"));
    run("manual pages (target/man)", c);
    let dir = out.join("completions");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
        eprintln!("xtask man: cannot create {}: {e}", dir.display());
        exit(2)
    });
    for (shell, file) in [
        ("bash", "relay.bash"),
        ("zsh", "_relay"),
        ("fish", "relay.fish"),
    ] {
        let mut c = cargo_args(&[
            "run",
            "--release",
            "-q",
            "-p",
            "relay-cli",
            "--",
            "completions",
            shell,
        ]);
        let path = dir.join(file);
        let f = std::fs::File::create(&path).unwrap_or_else(|e| {
            eprintln!("xtask man: cannot create {}: {e}", path.display());
            exit(2)
        });
        c.stdout(f);
        run(&format!("{shell} completions ({})", path.display()), c);
    }
}

fn test() {
    run("format", cargo_args(&["fmt", "--all", "--", "--check"]));
    // Release, as the tests below: they reuse this build (a debug build of
    // the workspace too would cost minutes of CI and check nothing more).
    run(
        "build workspace",
        cargo_args(&["build", "--workspace", "--all-targets", "--release"]),
    );
    run(
        "relay-core as the kernel builds it (no default features)",
        cargo_args(&["build", "-p", "relay-core", "--no-default-features"]),
    );
    run(
        "clippy",
        cargo_args(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    let mut doc = cargo_args(&["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run("API docs, no warnings", doc);
    man();
    // relay-cli's blktrace tests compare `relay cat` with Debian's blkparse.
    vm::install_packages("host test", vm::HOST_PACKAGES);
    run(
        "unit, differential and scenario tests",
        cargo_args(&["test", "--workspace", "--release"]),
    );
    let mut loom = cargo_args(&["test", "--release", "-p", "relay-core", "--test", "loom"]);
    loom.env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", root().join("target/loom"))
        .env(
            "LOOM_MAX_PREEMPTIONS",
            env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "4".into()),
        );
    run("loom models", loom);
    fuzz(&["--seconds".into(), "25".into()]);
    println!(
        "\n==> kernel: build the test kernel and relay-kmod, boot them in qemu, run the scenarios"
    );
    vm::run(&[]);
    println!("\nall checks passed");
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let start = Instant::now();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => {
            let mut c = cargo_args(&[
                "run",
                "--release",
                "-p",
                "relay-core",
                "--example",
                "demo",
                "--",
            ]);
            c.args(&args[1..]);
            run("demo", c)
        }
        Some("vm-test") => vm::run(&args[1..]),
        Some("man") => man(),
        Some("fuzz") => fuzz(&args[1..]),
        Some("bench") => {
            let mut c = cargo_args(&["bench", "-p", "relay-core"]);
            c.args(&args[1..]);
            run("benchmarks", c)
        }
        _ => {
            eprintln!("usage: cargo xtask <test|demo|bench|fuzz|vm-test|man> [args]");
            exit(2)
        }
    }
    println!("xtask: done in {:.0}s", start.elapsed().as_secs_f64());
}
