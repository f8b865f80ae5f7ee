//! What the CLI tests share: running the `relay` binary and scratch paths.
// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `relay` binary under test.
pub fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relay"))
}

/// Runs `relay ARGS` to the end.
pub fn run(args: &[&str]) -> Output {
    relay().args(args).output().expect("run relay")
}

/// A fresh path `name` in this test process's scratch directory.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// The standard output of a run that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
