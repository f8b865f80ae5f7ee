//! What the CLI tests share: running the `relay` binary and scratch paths.
// Each test binary uses its own part of this.
#![allow(dead_code)]

pub mod blktrace;

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

/// A documented object: its required fields, its optional ones (`f?`), and
/// groups of which exactly one appears (written `a`\|`b` in the table).
type Fields = (Vec<String>, Vec<String>, Vec<Vec<String>>);

/// The objects docs/JSON.md documents, by kind.
fn json_contract() -> std::collections::HashMap<String, Fields> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/JSON.md"))
        .expect("docs/JSON.md");
    let mut kinds = std::collections::HashMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        // Alternatives are written `a`\|`b` (a table cell's escaped bar).
        let line = line.replace("\\|", "\u{1}");
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let kind = cells[1].trim_matches('`').to_string();
        let mut fields = cells[2];
        let (mut req, mut opt, mut one_of) = (Vec::new(), Vec::new(), Vec::new());
        // "the fields of `fs`, and `pdu_hex`"
        if let Some(rest) = fields.strip_prefix("the fields of `") {
            let (base, more) = rest.split_once('`').unwrap();
            let (r, o, g): &Fields = &kinds[base];
            req.extend(r.iter().filter(|f| *f != "kind").cloned());
            opt.extend(o.iter().cloned());
            one_of.extend(g.iter().cloned());
            fields = more.trim_start_matches(", and ");
            req.push("kind".into());
        }
        for f in fields.split(',').map(|f| f.trim().trim_matches('`')) {
            if f.contains('\u{1}') {
                one_of.push(
                    f.split('\u{1}')
                        .map(|a| a.trim_matches('`').to_string())
                        .collect(),
                );
                continue;
            }
            match f.strip_suffix('?') {
                Some(f) => opt.push(f.to_string()),
                None => req.push(f.to_string()),
            }
        }
        kinds.insert(kind, (req, opt, one_of));
    }
    kinds
}

/// Checks every line of `out` against docs/JSON.md (each a JSON object
/// whose `kind` is documented, first, with every required field, one of
/// each group of alternatives, and no undocumented one); returns the kinds
/// seen.
pub fn check_json(out: &str) -> std::collections::BTreeSet<String> {
    let contract = json_contract();
    let mut seen = std::collections::BTreeSet::new();
    for line in out.lines() {
        assert!(line.starts_with("{\"kind\":\""), "kind first: {line}");
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let obj = v.as_object().unwrap();
        let kind = obj["kind"].as_str().unwrap();
        let (req, opt, one_of) = contract
            .get(kind)
            .unwrap_or_else(|| panic!("kind {kind:?} is not in docs/JSON.md: {line}"));
        for f in req {
            assert!(obj.contains_key(f), "{kind}: no {f}: {line}");
        }
        for group in one_of {
            let n = group.iter().filter(|f| obj.contains_key(*f)).count();
            assert_eq!(n, 1, "{kind}: not exactly one of {group:?}: {line}");
        }
        for k in obj.keys() {
            assert!(
                req.contains(k) || opt.contains(k) || one_of.iter().any(|g| g.contains(k)),
                "{kind}: {k} is not in docs/JSON.md: {line}"
            );
        }
        seen.insert(kind.to_string());
    }
    seen
}
