//! `relay stat`: per-CPU statistics, read-only.

use super::*;

pub(crate) fn stat(path: &Path, json: bool) -> Result<(), Error> {
    let file = ChannelFile::open_snapshot(path)?;
    let g = *file.geometry();
    let rows: Vec<_> = (0..g.cpu_count())
        .filter_map(|cpu| file.stats(cpu).map(|s| (cpu, s)))
        .collect();
    // The module also says how much memory the channel holds.
    let memory = if file.is_kernel() {
        let (_, bytes) =
            kernel::stats(file.as_fd()).map_err(|e| e.with_target(path.display().to_string()))?;
        Some(bytes)
    } else {
        None
    };
    // The sums over CPUs: (produced, consumed, lost, ready sub-buffers).
    let total = rows.iter().fold((0, 0, Lost::default(), 0), |t, (_, s)| {
        (
            t.0 + s.produced,
            t.1 + s.consumed_records,
            t.2.plus(&s.lost),
            t.3 + s.ready_subbufs,
        )
    });
    let clock = file.channel().clock();
    let clock = Clock::from_u32(clock).map_or_else(|| clock.to_string(), |c| c.name().to_string());
    if json {
        // docs/JSON.md: a `stat` object per CPU, then the `total`.
        for (cpu, s) in &rows {
            println!(
                "{{\"kind\":\"stat\",\"cpu\":{cpu},\"produced\":{},\"consumed\":{},\"lost_full\":{},\"lost_too_big\":{},\"lost_overwrite\":{},\"lost_abandoned\":{},\"ready_subbufs\":{},\"subbufs\":{}}}",
                s.produced, s.consumed_records, s.lost.full, s.lost.too_big, s.lost.overwrite, s.lost.abandoned, s.ready_subbufs, g.subbuf_count()
            );
        }
        println!(
            "{{\"kind\":\"total\",\"cpus\":{},\"produced\":{},\"consumed\":{},\"lost_full\":{},\"lost_too_big\":{},\"lost_overwrite\":{},\"lost_abandoned\":{},\"ready_subbufs\":{},\"clock\":\"{}\"{}}}",
            rows.len(),
            total.0,
            total.1,
            total.2.full,
            total.2.too_big,
            total.2.overwrite,
            total.2.abandoned,
            total.3,
            clock,
            memory.map_or(String::new(), |b| format!(",\"memory_bytes\":{b}"))
        );
        return Ok(());
    }
    println!(
        "{}: {} CPUs x {} x {} bytes, {}, clock {}",
        path.display(),
        g.cpu_count(),
        g.subbuf_count(),
        g.subbuf_size(),
        if file.flags().contains(ChannelFlags::OVERWRITE) {
            "overwrite"
        } else {
            "no-overwrite"
        },
        clock
    );
    // The abandoned column only where a dead producer left some.
    let abandoned = rows.iter().any(|(_, s)| s.lost.abandoned > 0);
    let extra = |n: u64| {
        if abandoned {
            format!(" {n:>15}")
        } else {
            String::new()
        }
    };
    println!(
        " cpu     produced     consumed    lost:full  lost:too_big  lost:overwrite{}   fill",
        if abandoned { " lost:abandoned" } else { "" }
    );
    for (cpu, s) in rows {
        println!(
            " {cpu:>3} {:>12} {:>12} {:>12} {:>13} {:>15}{}   {}/{}",
            s.produced,
            s.consumed_records,
            s.lost.full,
            s.lost.too_big,
            s.lost.overwrite,
            extra(s.lost.abandoned),
            s.ready_subbufs,
            g.subbuf_count()
        );
    }
    println!(
        " all {:>12} {:>12} {:>12} {:>13} {:>15}{}",
        total.0,
        total.1,
        total.2.full,
        total.2.too_big,
        total.2.overwrite,
        extra(total.2.abandoned)
    );
    if let Some(bytes) = memory {
        println!("memory: {bytes} bytes");
    }
    Ok(())
}
