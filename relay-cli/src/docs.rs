//! `relay completions` and `relay man`: generated from the same clap
//! definitions as `--help`, so they cannot disagree with it.

use super::*;

/// Writes `shell`'s completion script for `cmd` to standard output.
pub(crate) fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) {
    clap_complete::generate(shell, &mut cmd, "relay", &mut io::stdout());
}

/// Writes the manual page of `cmd`'s subcommand `path` (the whole program
/// when empty) to `out`: `relay man kernel create` is relay-kernel-create(1).
pub(crate) fn man(cmd: clap::Command, path: &[String], out: &mut impl Write) -> Result<(), Error> {
    let mut page = cmd;
    let mut name = String::from("relay");
    for word in path {
        let Some(sub) = page.find_subcommand(word).cloned() else {
            usage_error(format!(
                "man: {} has no subcommand {word:?} (see {} --help)",
                name.replace('-', " "),
                name.replace('-', " ")
            ))
        };
        name = format!("{name}-{word}");
        page = sub;
    }
    let page = page.name(name.clone()).bin_name(name.replace('-', " "));
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .and_then(|()| out.write_all(&roff))
        .map_err(|source| Error::Io {
            path: PathBuf::from(format!("{name}.1")),
            op: "write",
            source,
        })
}

/// Writes every page `relay man` can write into `dir`, one file each.
pub(crate) fn man_all(cmd: clap::Command, dir: &Path) -> Result<(), Error> {
    let io_error = |path: PathBuf, op| move |source| Error::Io { path, op, source };
    std::fs::create_dir_all(dir).map_err(io_error(dir.to_path_buf(), "create"))?;
    for path in pages(&cmd) {
        let name = std::iter::once("relay")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-");
        let file = dir.join(format!("{name}.1"));
        let mut out = File::create(&file).map_err(io_error(file.clone(), "create"))?;
        man(cmd.clone(), &path, &mut out)?;
    }
    Ok(())
}

/// Every page: the program's and each subcommand's, as the words that
/// name it.
fn pages(cmd: &clap::Command) -> Vec<Vec<String>> {
    let mut all = vec![Vec::new()];
    let mut i = 0;
    while let Some(path) = all.get(i).cloned() {
        let mut here = cmd;
        for word in &path {
            if let Some(sub) = here.find_subcommand(word) {
                here = sub;
            }
        }
        for sub in here.get_subcommands() {
            if sub.get_name() != "help" {
                let mut p = path.clone();
                p.push(sub.get_name().to_string());
                all.push(p);
            }
        }
        i += 1;
    }
    all
}
