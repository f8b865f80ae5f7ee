//! `relay write` and `relay flush`: the userspace producer side.

use super::*;

pub(crate) fn write(
    path: &Path,
    cpu: u32,
    rtype: u16,
    block: Option<Duration>,
) -> Result<(), Error> {
    let file = open_producer(path)?;
    if file.is_kernel() {
        if block.is_some() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                op: "write",
                source: io::Error::other(
                    "--block: a kernel channel's writers never wait (they may run in NMI context)",
                ),
            });
        }
        return write_kernel(&file, cpu, rtype);
    }
    let Some(w) = file.writer(cpu) else {
        return Err(Error::Io {
            path: path.to_path_buf(),
            op: "write",
            source: io::Error::other(format!(
                "cpu: {cpu} is not below cpu_count {}",
                file.geometry().cpu_count()
            )),
        });
    };
    let (mut written, mut refused) = (0u64, 0u64);
    // Lines are bytes: a record need not be UTF-8.
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| Error::Io {
                path: PathBuf::from("<stdin>"),
                op: "read",
                source,
            })?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let done = match block {
            Some(timeout) => {
                relay_user::producer::write_waiting(&w, rtype, &line, &mut monotonic_ns, timeout)
            }
            None => w.write(rtype, &line, &mut monotonic_ns),
        };
        match done {
            Ok(_) => written += 1,
            Err(e) => {
                refused += 1;
                // The first refusal says why; the summary counts them all.
                if refused == 1 {
                    eprintln!(
                        "relay: {}: record {}: {e} (further refusals are counted below)",
                        path.display(),
                        written + refused
                    );
                }
            }
        }
    }
    let _ = w.flush(&mut monotonic_ns);
    eprintln!(
        "relay: {}: cpu {cpu}: {written} records written, {refused} refused",
        path.display()
    );
    Ok(())
}

/// `relay write` on a kernel channel file: each write() is one record (of
/// type 1) on the CPU the thread runs on, so run on `cpu`.
pub(crate) fn write_kernel(file: &ChannelFile, cpu: u32, rtype: u16) -> Result<(), Error> {
    let path = file.path();
    let problem = |op, source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    if rtype != 1 {
        return Err(problem(
            "write",
            io::Error::other(format!(
                "type: a kernel channel file's write() records have type 1, not {rtype}"
            )),
        ));
    }
    relay_user::os::pin_to_cpu(cpu).map_err(|e| problem("run on cpu", e))?;
    let (mut written, mut refused) = (0u64, 0u64);
    let mut out = file.file();
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|source| Error::Io {
            path: PathBuf::from("<stdin>"),
            op: "read",
            source,
        })?;
        match out.write(line.as_bytes()) {
            Ok(n) if n == line.len() => written += 1,
            r => {
                refused += 1;
                let why = r.map_or_else(|e| e.to_string(), |n| format!("{n} bytes taken"));
                eprintln!(
                    "relay: {}: record {}: {why}",
                    path.display(),
                    written + refused
                );
            }
        }
    }
    let _ = file.flush_cpu(cpu);
    eprintln!(
        "relay: {}: cpu {cpu}: {written} records written, {refused} refused",
        path.display()
    );
    Ok(())
}

pub(crate) fn flush(path: &Path) -> Result<(), Error> {
    let file = open_producer(path)?;
    flush_all(&file);
    Ok(())
}
