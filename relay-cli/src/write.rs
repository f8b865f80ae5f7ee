//! `relay write` and `relay flush`: the userspace producer side.

use super::*;

pub(crate) fn write(
    path: &Path,
    cpu: u32,
    rtype: u16,
    block: Option<Duration>,
    separator: u8,
    flush_interval: Duration,
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
        return write_kernel(&file, cpu, rtype, separator);
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
    let stop = relay_user::producer::Stop::new();
    let read = std::thread::scope(|s| {
        if !flush_interval.is_zero() {
            // The switch timer: what a slow producer writes reaches a follow
            // reader within about the interval.
            let writers = [w];
            let stop = &stop;
            s.spawn(move || relay_user::producer::switch_timer(&writers, flush_interval, stop));
        }
        let read = records(separator, |record| {
            let done = match block {
                Some(timeout) => relay_user::producer::write_waiting(
                    &w,
                    rtype,
                    record,
                    &mut monotonic_ns,
                    timeout,
                ),
                None => w.write(rtype, record, &mut monotonic_ns),
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
        });
        stop.stop();
        read
    });
    // What was written is flushed and summed up however the input ended.
    let _ = w.flush(&mut monotonic_ns);
    eprintln!(
        "relay: {}: cpu {cpu}: {written} records written, {refused} refused",
        path.display()
    );
    read
}

/// Calls `each` with every record of standard input: the bytes between
/// `separator`s (any bytes: a record need not be UTF-8), without the
/// separator, and for newlines without a `\r` before it. A last record
/// without a separator counts too.
fn records(separator: u8, mut each: impl FnMut(&[u8])) -> Result<(), Error> {
    let mut input = io::stdin().lock();
    let mut record = Vec::new();
    loop {
        record.clear();
        let n = input
            .read_until(separator, &mut record)
            .map_err(|source| Error::Io {
                path: PathBuf::from("<stdin>"),
                op: "read",
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        if record.last() == Some(&separator) {
            record.pop();
            if separator == b'\n' && record.last() == Some(&b'\r') {
                record.pop();
            }
        }
        each(&record);
    }
}

/// `relay write` on a kernel channel file: each write() is one record (of
/// type 1) on the CPU the thread runs on, so run on `cpu`.
pub(crate) fn write_kernel(
    file: &ChannelFile,
    cpu: u32,
    rtype: u16,
    separator: u8,
) -> Result<(), Error> {
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
    let read = records(separator, |record| match out.write(record) {
        Ok(n) if n == record.len() => written += 1,
        r => {
            refused += 1;
            if refused == 1 {
                let why = r.map_or_else(|e| e.to_string(), |n| format!("{n} bytes taken"));
                eprintln!(
                    "relay: {}: record {}: {why} (further refusals are counted below)",
                    path.display(),
                    written + refused
                );
            }
        }
    });
    let _ = file.flush_cpu(cpu);
    eprintln!(
        "relay: {}: cpu {cpu}: {written} records written, {refused} refused",
        path.display()
    );
    read
}

pub(crate) fn flush(path: &Path) -> Result<(), Error> {
    let file = open_producer(path)?;
    flush_all(&file);
    Ok(())
}
