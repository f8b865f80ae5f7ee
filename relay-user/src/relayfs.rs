//! Existing relay channels: the per-CPU files that the kernel's relay
//! interface creates in debugfs (`<dir>/<base>0 .. <base>N`, e.g. blktrace's
//! `trace0..N`), read as one source. Plain relay data has no common framing,
//! so this is the raw mode: each CPU's bytes, tagged with the CPU.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{io, Error};

/// The per-CPU files of one relay channel.
#[derive(Debug)]
pub struct RelayfsDir {
    dir: PathBuf,
    base: String,
    files: Vec<(u32, File)>,
}

/// Whether `dir` is a block device's directory in debugfs
/// (`.../block/<dev>`), where blktrace's files appear while it traces.
fn is_block_debugfs_dir(dir: &Path) -> bool {
    dir.parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "block")
        && dir
            .ancestors()
            .any(|a| a.file_name().is_some_and(|n| n == "debug"))
}

/// `trace12` -> (`trace`, 12); names without a CPU number -> `None`.
fn split_cpu(name: &str) -> Option<(&str, u32)> {
    let digits = name.len() - name.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (base, num) = name.split_at(digits);
    if base.is_empty() || num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    Some((base, num.parse().ok()?))
}

impl RelayfsDir {
    /// Finds the per-CPU files in `dir`. Exactly one base name must have
    /// per-CPU files (other files, like blktrace's `dropped`, are ignored).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let mut bases: BTreeMap<String, Vec<(u32, PathBuf)>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir, "read directory"))? {
            let entry = entry.map_err(io(dir, "read directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_file = entry.file_type().map_err(io(dir, "stat"))?.is_file();
            if let (true, Some((base, cpu))) = (is_file, split_cpu(name)) {
                bases
                    .entry(base.to_string())
                    .or_default()
                    .push((cpu, entry.path()));
            }
        }
        let problem = |what: String| Error::Io {
            path: dir.to_path_buf(),
            op: "find per-CPU relay files",
            source: std::io::Error::other(what),
        };
        let (base, mut paths) = match bases.len() {
            0 if is_block_debugfs_dir(dir) => {
                let dev = dir
                    .file_name()
                    .map_or("DEV".into(), |n| n.to_string_lossy());
                return Err(problem(format!(
                    "no trace0..N files: no blktrace is running on {dev} \
                     (trace it with `relay blktrace /dev/{dev}`)"
                )));
            }
            0 => {
                return Err(problem(
                    "no files named <base><cpu> (e.g. trace0, trace1)".into(),
                ))
            }
            1 => bases.into_iter().next().expect("one base"),
            _ => {
                let names: Vec<&str> = bases.keys().map(String::as_str).collect();
                return Err(problem(format!(
                    "per-CPU files of several channels: {}",
                    names.join(", ")
                )));
            }
        };
        paths.sort();
        let files = paths
            .into_iter()
            .map(|(cpu, p)| File::open(&p).map(|f| (cpu, f)).map_err(io(&p, "open")))
            .collect::<Result<_, _>>()?;
        Ok(RelayfsDir {
            dir: dir.to_path_buf(),
            base,
            files,
        })
    }

    /// Whether these are blktrace's files: saved files whose data all
    /// starts with a `blk_io_trace` record, or, when no file has data to
    /// look at, the kernel's blktrace channel in debugfs (`trace0..N`
    /// beside a `dropped` file; a live relay file reports no size, and a
    /// read would consume what it returns, so none is read).
    pub fn is_blktrace(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let heads: Vec<Option<[u8; 4]>> = self
            .files
            .iter()
            .filter(|(_, f)| f.metadata().is_ok_and(|m| m.len() > 0))
            .map(|(_, f)| {
                let mut head = [0u8; 4];
                f.read_exact_at(&mut head, 0).ok().map(|()| head)
            })
            .collect();
        if heads.is_empty() {
            return self.base == "trace" && self.dir.join("dropped").is_file();
        }
        heads
            .iter()
            .all(|h| h.is_some_and(|h| crate::blktrace::starts_a_record(&h)))
    }

    /// The device these blktrace files trace, as blkparse names it: `sda`
    /// for saved `sda.blktrace.N` files, the directory's name for the
    /// kernel's `.../block/sda/trace0..N`.
    pub fn blktrace_device(&self) -> String {
        match self.base.strip_suffix(".blktrace.") {
            Some(dev) => dev.to_string(),
            None => self
                .dir
                .canonicalize()
                .ok()
                .as_deref()
                .unwrap_or(&self.dir)
                .file_name()
                .map_or_else(|| self.base.clone(), |n| n.to_string_lossy().into_owned()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files' common name before the CPU number.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The CPUs that have a file, ascending.
    pub fn cpus(&self) -> Vec<u32> {
        self.files.iter().map(|(cpu, _)| *cpu).collect()
    }

    /// Each CPU's path and open file, ascending by CPU (for readers that
    /// pace each CPU themselves, like the blktrace decoder).
    pub fn into_files(self) -> Vec<(u32, PathBuf, File)> {
        let (dir, base) = (self.dir, self.base);
        self.files
            .into_iter()
            .map(|(cpu, f)| (cpu, dir.join(format!("{base}{cpu}")), f))
            .collect()
    }

    /// Reads everything each CPU's file has now (relay files in debugfs
    /// hand out each byte once; plain files are read from where the last
    /// call stopped), calling `f(cpu, chunk)`. Returns the bytes read.
    pub fn read_available(&mut self, mut f: impl FnMut(u32, &[u8])) -> Result<u64, Error> {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        for (cpu, file) in &mut self.files {
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        f(*cpu, &buf[..n]);
                        total += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let path = self.dir.join(format!("{}{cpu}", self.base));
                        return Err(io(&path, "read")(e));
                    }
                }
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::split_cpu;

    #[test]
    fn cpu_numbers_come_from_trailing_digits() {
        assert_eq!(split_cpu("trace0"), Some(("trace", 0)));
        assert_eq!(split_cpu("my_relay235"), Some(("my_relay", 235)));
        assert_eq!(split_cpu("dropped"), None);
        assert_eq!(split_cpu("42"), None);
        assert_eq!(split_cpu("trace01"), None);
        assert_eq!(split_cpu("x99999999999"), None);
    }
}
