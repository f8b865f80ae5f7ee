//! `relay kernel`: the kernel module's channels, load generator and
//! benchmarks.

use super::*;

pub(crate) fn kernel_command(command: KernelCommand) -> Result<(), Error> {
    match command {
        KernelCommand::Create {
            name,
            subbuf_size,
            subbufs,
            overwrite,
            clock,
        } => {
            let clock = Clock::from(clock);
            let info = kernel::create(&name, subbuf_size, subbufs, overwrite, clock)?;
            println!(
                "{}: {} CPUs x {} x {} bytes, {} mode, {} clock, {} bytes, id {}",
                info.path.display(),
                info.cpu_count,
                if subbufs == 0 { 8 } else { subbufs },
                subbuf_size,
                if overwrite {
                    "overwrite"
                } else {
                    "no-overwrite"
                },
                clock.name(),
                info.total_size,
                info.id
            );
        }
        KernelCommand::Destroy { name } => kernel::destroy(&name)?,
        KernelCommand::Load {
            path,
            records,
            size,
            rate,
            irq,
            nmi,
        } => {
            // The load writes into the channel: the module wants write access.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    op: "open",
                    source,
                })?;
            let args = kernel::LoadArgs {
                records,
                rate,
                size,
                irq,
                nmi,
            };
            let r = kernel::load(file.as_fd(), args)
                .map_err(|e| e.with_target(path.display().to_string()))?;
            let line = format!(
                "cpus={} attempted={} written={} irq={} nmi={} elapsed_ms={:.1}",
                r.cpus,
                r.attempted,
                r.written,
                r.irq_writes,
                r.nmi_writes,
                r.elapsed_ns as f64 / 1e6
            );
            if r.interrupted {
                println!("load interrupted: {line}");
                return Err(Error::Io {
                    path,
                    op: "load",
                    source: io::Error::from_raw_os_error(libc::EINTR),
                });
            }
            println!("load ok: {line}");
        }
        KernelCommand::Bench {
            records,
            size,
            subbuf_size,
            subbufs,
            clock,
            cpus,
        } => {
            let clock = Clock::from(clock);
            let r = kernel::bench(kernel::BenchArgs {
                records,
                size,
                subbuf_size,
                subbuf_count: subbufs,
                clock,
                cpus,
            })?;
            let (k, w, t) = (
                r.relay_kmod_rate(),
                r.relay_write_rate(),
                r.relay_reserve_rate(),
            );
            let ratio = |other: f64| if other > 0.0 { k / other } else { 0.0 };
            println!(
                "bench: size={size} clock={} cpus={} relay-kmod={k:.2} M/s/cpu relay_write={w:.2} M/s/cpu \
                 relay_reserve+timestamp={t:.2} M/s/cpu ratio={:.2} ratio_timestamped={:.2} \
                 read_ns: monotonic={:.1} local={:.1} tsc={:.1}",
                clock.name(),
                r.cpus,
                ratio(w),
                ratio(t),
                r.clock_read_ns(0),
                r.clock_read_ns(1),
                r.clock_read_ns(2),
            );
        }
    }
    Ok(())
}
