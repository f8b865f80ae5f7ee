//! Arbitrary per-CPU files in a directory, as the kernel's relay interface
//! lays them out in debugfs (plus stray files): the relayfs reader either
//! refuses the directory with a clear error or returns exactly each CPU's
//! bytes, tagged with the right CPU, in order.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_user::RelayfsDir;

#[derive(Arbitrary, Debug)]
struct FileSpec {
    /// Which name: a base (or a stray name) and a CPU number.
    base: u8,
    cpu: u16,
    contents: Vec<u8>,
}

/// The oracle: `<base><cpu>` with a non-empty base and a CPU number without
/// leading zeros (the names generated here have digits only at the end).
fn cpu_file(name: &str) -> Option<(String, u32)> {
    let i = name.find(|c: char| c.is_ascii_digit())?;
    let (base, digits) = name.split_at(i);
    if base.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((base.to_string(), digits.parse().ok()?))
}

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("relay-fuzz-relayfs-{}", std::process::id()))
    })
}

fuzz_target!(|files: Vec<FileSpec>| {
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("temp dir");
    let mut want: BTreeMap<String, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    for f in files.iter().take(16) {
        let name = match f.base % 5 {
            0 | 1 => format!("trace{}", f.cpu % 64),
            2 => format!("relay{}", f.cpu % 8),
            3 => "dropped".to_string(),
            _ => format!("msg{:02}", f.cpu % 100), // leading zero: not a CPU file
        };
        std::fs::write(dir.join(&name), &f.contents).expect("write file");
        if let Some((base, cpu)) = cpu_file(&name) {
            want.entry(base)
                .or_default()
                .insert(cpu, f.contents.clone());
        }
    }
    match RelayfsDir::open(dir) {
        Ok(mut r) => {
            assert_eq!(want.len(), 1, "opened despite {} bases", want.len());
            let expected = want.into_values().next().expect("one base");
            assert_eq!(r.cpus(), expected.keys().copied().collect::<Vec<_>>());
            let mut got: BTreeMap<u32, Vec<u8>> =
                expected.keys().map(|&c| (c, Vec::new())).collect();
            r.read_available(|cpu, bytes| {
                got.get_mut(&cpu)
                    .expect("known cpu")
                    .extend_from_slice(bytes)
            })
            .expect("read");
            assert_eq!(got, expected);
        }
        Err(e) => {
            assert_ne!(want.len(), 1, "refused a directory with one channel: {e}");
        }
    }
});
