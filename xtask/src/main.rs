//! The build driver: `cargo xtask <command>`.
//!
//! - `test`: everything CI checks: formatting, the workspace build (and
//!   relay-core without default features, as the kernel builds it), clippy,
//!   unit/differential/scenario tests, and the loom models.
//! - `demo`: the main job (see README).
//! - `bench`: the criterion benchmarks (numbers go to BENCHMARKS.md).
//! - `vm-test`: build the test kernel and relay-kmod, boot them in qemu and
//!   run the in-guest scenarios (see `vm.rs`).
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

fn test() {
    run("format", cargo_args(&["fmt", "--all", "--", "--check"]));
    run(
        "build workspace",
        cargo_args(&["build", "--workspace", "--all-targets"]),
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
        Some("bench") => {
            let mut c = cargo_args(&["bench", "-p", "relay-core"]);
            c.args(&args[1..]);
            run("benchmarks", c)
        }
        _ => {
            eprintln!("usage: cargo xtask <test|demo|bench|vm-test> [args]");
            exit(2)
        }
    }
    println!("xtask: done in {:.0}s", start.elapsed().as_secs_f64());
}
