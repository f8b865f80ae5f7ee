/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * relay-kmod's userspace interface. relay-user mirrors it in
 * relay-user/src/kernel.rs; the layouts below are the contract.
 *
 * The control device /dev/relay/control (root only) creates and destroys
 * named channels. Each channel NAME gets:
 *
 *   /dev/relay/NAME        the one file for all CPUs:
 *     mmap   the whole channel in the layout of docs/FORMAT.md: map it
 *            read-only (MAP_SHARED), then remap the consumer region
 *            read-write (MAP_FIXED); header, producer state and data pages
 *            can never be writable (VM_MAYWRITE is cleared);
 *     read   every CPU's records merged in timestamp order, as frames
 *            (relay-core's frames module, docs/FORMAT.md "Frames"); returns
 *            0 once nothing is readable (flushing idle CPUs first), like a
 *            relay file. The first read() makes the open file the consumer
 *            of its CPUs (EBUSY if another open file, mapped or read,
 *            holds one: the claim of docs/FORMAT.md "Readers"); progress
 *            is committed once every frame encoded was copied out whole;
 *     poll   POLLIN when a sub-buffer is ready (writers wake readers at
 *            sub-buffer boundaries through irq_work, never from NMI);
 *            POLLHUP once the channel is destroyed; claims nothing;
 *     write  each write() is one record (type 1) on the current CPU;
 *     ioctl  RELAY_IOC_FLUSH (needs the file open for writing: EBADF
 *            otherwise), RELAY_IOC_STATS, RELAY_IOC_LOAD.
 *   /dev/relay/NAME.cpuN   the same read/poll for CPU N only.
 *
 * One consumer per CPU buffer at a time; snapshot readers map the file
 * read-only and change nothing.
 */
#ifndef RELAY_UAPI_H
#define RELAY_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Channel names: 1..31 of [A-Za-z0-9_-], NUL-terminated, zero-padded. */
#define RELAY_NAME_MAX		32

/* RELAY_IOC_CREATE (control): errno EINVAL (a geometry field, or id not
 * 0), EOPNOTSUPP (flags), ENAMETOOLONG/EINVAL (name), EEXIST (name taken),
 * E2BIG (too large), ENOSPC (RELAY_MAX_CHANNELS exist), ENOMEM (the memory
 * is not available: charged to the caller's memory cgroup, never by the
 * OOM killer). */
struct relay_create {
	char name[RELAY_NAME_MAX];
	__u64 subbuf_size;	/* power of two, 128 ..= 2^30 */
	__u64 subbuf_count;	/* 0 (means 8) or 2 ..= 2^20; upper 32 bits 0 */
	__u64 flags;		/* RELAY_FLAG_OVERWRITE | RELAY_FLAG_CLOCK(c) */
	__u64 total_size;	/* out: bytes to map */
	__u32 cpu_count;	/* out: per-CPU buffers (nr_cpu_ids) */
	__u32 id;		/* in: 0; out: the channel's number for BPF
				 * programs (relay_kfunc_write): nonzero,
				 * never given twice in a boot */
};

#define RELAY_FLAG_OVERWRITE	1ULL
/* The clock that stamps every record (the channel header's `clock`):
 * RELAY_CLOCK_MONOTONIC (the default, also as 0): ktime_get_mono_fast_ns(),
 *	CLOCK_MONOTONIC, one clock for every CPU and for userspace;
 * RELAY_CLOCK_LOCAL: local_clock() ns, ftrace's and perf's clock, monotonic
 *	per CPU, a bounded drift between CPUs unless the TSC is stable;
 * RELAY_CLOCK_TSC: raw TSC cycles (rdtsc), the cheapest; CPUs agree where
 *	the TSC is reliable. Any other code: EINVAL. */
#define RELAY_FLAG_CLOCK(c)	((__u64)(c) << 8)
#define RELAY_CLOCK_MONOTONIC	1U
#define RELAY_CLOCK_LOCAL	3U
#define RELAY_CLOCK_TSC		4U
/* Channels that exist at once. */
#define RELAY_MAX_CHANNELS	64

/* BPF programs write with the module's kfuncs, from any tracing context,
 * NMI included (declared in ../bpf/relay_kfunc.h): relay_kfunc_write()
 * copies a record; relay_kfunc_reserve(), _grant_data(), _grant_write(),
 * _commit() and _discard() fill one in place. Flags of write and commit: */
#define RELAY_KFUNC_WAKEUP	1ULL	/* wake readers now, not only at seals */
/* Grants (relay_kfunc_reserve) a CPU holds at once, at most: a few per
 * context that can nest; one more is refused and counted lost (full). */
#define RELAY_GRANTS		8

/* RELAY_IOC_DESTROY (control): ENOENT if no such channel. Open files and
 * mappings keep the memory until they are gone; the names disappear now. */
struct relay_destroy {
	char name[RELAY_NAME_MAX];
};

/* RELAY_IOC_FLUSH (channel): close CPU `cpu`'s open sub-buffer (on that
 * CPU) so readers get it. Out: the flush barrier (no record of that CPU
 * older than it is still unreadable once sub-buffer `next` is reached). */
struct relay_flush {
	__u32 cpu;
	__u32 reserved;		/* must be 0 */
	__u64 barrier;		/* out */
	__u64 next;		/* out */
};

/* RELAY_IOC_STATS (channel): per-CPU counters into `cpus_ptr`, an array of
 * `cpus` entries (at most cpu_count are written; `cpus` is set to it). */
struct relay_cpu_stats {
	__u64 produced;		/* records in sealed sub-buffers */
	__u64 consumed;		/* records readers reported consumed */
	__u64 lost_full;
	__u64 lost_too_big;
	__u64 lost_overwrite;
	__u64 ready_subbufs;	/* sealed, not consumed */
};

struct relay_stats {
	__u64 cpus_ptr;		/* struct relay_cpu_stats[cpus] */
	__u32 cpus;		/* in: entries; out: entries written */
	__u32 reserved;		/* must be 0 */
	__u64 memory_bytes;	/* out: channel memory (vmalloc) */
};

/* RELAY_IOC_LOAD (channel, opened for writing: EBADF otherwise; and
 * CAP_SYS_ADMIN): a kthread on every online CPU writes `records`
 * checked payloads (relay-core's checked module) of `size` bytes, at most
 * `rate` per second each (0: as fast as it can); returns when all are done
 * (EINTR if a signal stopped them early; the counts are still filled in).
 * RELAY_LOAD_IRQ adds a hard-IRQ hrtimer writer on every CPU, nested in
 * the kthread's writes; RELAY_LOAD_NMI has that timer also send an NMI to
 * the next CPU, whose NMI handler writes a record mid-write. IRQ and NMI
 * payloads are at most RELAY_LOAD_IRQ_SIZE_MAX bytes (a checksum over a
 * large payload has no place in an interrupt). A CPU taken offline during
 * the load pauses its writers until it is back. */
struct relay_load {
	__u64 records;		/* per CPU, <= 2^32 */
	__u64 rate;		/* records per second per CPU, 0 = no limit */
	__u32 size;		/* payload bytes, 32 ..= 65536 */
	__u32 flags;		/* RELAY_LOAD_* */
	__u64 attempted;	/* out: writes tried, all CPUs and sources */
	__u64 written;		/* out: writes accepted */
	__u64 irq_writes;	/* out: of them, from hard-IRQ context */
	__u64 nmi_writes;	/* out: of them, from NMI context */
	__u64 elapsed_ns;	/* out */
	__u32 cpus;		/* out: CPUs that ran a kthread */
	__u32 reserved;		/* must be 0 */
};

#define RELAY_LOAD_IRQ		1U
#define RELAY_LOAD_NMI		2U
#define RELAY_LOAD_IRQ_SIZE_MAX	256U

/* RELAY_IOC_BENCH (control): on every online CPU (or the first `cpus`), a
 * kthread writes
 * `records` records of `size` bytes through (a) relay-kmod's writer, (b)
 * the kernel's relay_write() of the bare payload, and (c) relay_reserve()
 * of a record with the same 16-byte header relay-kmod writes (length, type,
 * a timestamp of the same clock), interrupts off as relay_write() does:
 * what a relay user who timestamps records pays; then reads each clock
 * `records` times. Channels of the same geometry, overwrite (flight) mode,
 * no reader; summed nanoseconds, each writer's fastest of 3 interleaved
 * rounds per CPU. */
#define RELAY_BENCH_CLOCKS	3
struct relay_bench {
	__u64 records;		/* per CPU, <= 2^26 */
	__u64 subbuf_size;
	__u64 subbuf_count;
	__u32 size;		/* payload bytes, 8 ..= 4096, a multiple of 8 */
	__u32 cpus;		/* in: the first N online CPUs, 0 all; out: ran */
	__u64 relay_kmod_ns;	/* out: sum over CPUs */
	__u64 relay_write_ns;	/* out: sum over CPUs */
	__u64 relay_reserve_ns;	/* out: sum over CPUs */
	__u32 clock;		/* RELAY_CLOCK_* of (a) and (c); 0: monotonic */
	__u32 reserved;		/* must be 0 */
	/* out, sum over CPUs: ktime_get_mono_fast_ns(), local_clock(), rdtsc */
	__u64 clock_ns[RELAY_BENCH_CLOCKS];
};

#define RELAY_IOC_MAGIC		'r'
#define RELAY_IOC_CREATE	_IOWR(RELAY_IOC_MAGIC, 1, struct relay_create)
#define RELAY_IOC_DESTROY	_IOW(RELAY_IOC_MAGIC, 2, struct relay_destroy)
#define RELAY_IOC_FLUSH		_IOWR(RELAY_IOC_MAGIC, 3, struct relay_flush)
#define RELAY_IOC_STATS		_IOWR(RELAY_IOC_MAGIC, 4, struct relay_stats)
#define RELAY_IOC_LOAD		_IOWR(RELAY_IOC_MAGIC, 5, struct relay_load)
#define RELAY_IOC_BENCH		_IOWR(RELAY_IOC_MAGIC, 6, struct relay_bench)

#endif
