/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * relay-kmod's /dev/relay interface, shared by the module's C glue and
 * documented for userspace (the guest test mirrors it in Rust).
 *
 * One channel per open file:
 *
 *   fd = open("/dev/relay", O_RDWR);
 *   ioctl(fd, RELAY_IOC_CREATE, &create);     // lays out the channel
 *   mmap(NULL, create.total_size, PROT_READ, MAP_SHARED, fd, 0);
 *   mmap(base + create.consumer_offset, create.consumer_size,
 *        PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
 *        create.consumer_offset);            // the only writable pages
 *
 * The header, producer state and data pages can only be mapped read-only
 * (VM_MAYWRITE is cleared, so mprotect cannot upgrade them); a writable
 * mapping must lie inside the consumer region.
 */
#ifndef RELAY_UAPI_H
#define RELAY_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

struct relay_create {
	__u64 subbuf_size;	/* in: power of two, 128 ..= 2^30 */
	__u64 subbuf_count;	/* in: 0 (means 8) or 2 ..= 2^20 */
	__u64 flags;		/* in: bit 0 overwrite */
	__u64 total_size;	/* out: bytes to map */
	__u64 consumer_offset;	/* out: first byte of the consumer region */
	__u64 consumer_size;	/* out: its size, whole pages */
	__u32 cpu_count;	/* out: per-CPU buffers (nr_cpu_ids) */
	__u32 reserved;		/* must be 0 */
};

/* Test hook: every online CPU writes `records` self-test records, then flushes. */
struct relay_write_test {
	__u64 records;
};

#define RELAY_IOC_MAGIC		'r'
#define RELAY_IOC_CREATE	_IOWR(RELAY_IOC_MAGIC, 1, struct relay_create)
#define RELAY_IOC_WRITE_TEST	_IOW(RELAY_IOC_MAGIC, 2, struct relay_write_test)

#endif
