/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What relay-kmod's C files and its Rust side call of each other: internal
 * to the module (its users include relay_kmod.h).
 */
#ifndef RELAY_GLUE_H
#define RELAY_GLUE_H

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/irq_work.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/rcupdate.h>
#include <linux/smp.h>
#include <linux/types.h>
#include <linux/wait.h>

#include "relay_uapi.h"

/* ------------------------------------------------------------------------
 * Implemented in Rust (relay_main.rs).
 */
int relay_rust_geometry(u64 subbuf_size, u64 subbuf_count, u64 flags,
			u64 *total_size, u64 *consumer_offset,
			u64 *consumer_size, u32 *cpu_count, u32 *max_payload);
int relay_rust_channel_new(void *mem, u64 size, u64 subbuf_size,
			   u64 subbuf_count, u64 flags, void **out);
void relay_rust_channel_free(void *k);
int relay_rust_write(void *k, u32 cpu, u16 type, const void *data, u64 len);
#define RELAY_GRANT_WORDS 6	/* relay_main.rs: GRANT_WORDS */
int relay_rust_reserve(void *k, u32 cpu, u32 len, u64 *state, u8 **data);
void relay_rust_refuse(void *k, u32 cpu);
int relay_rust_commit(void *k, u32 cpu, const u64 *state, u16 type, bool discard);
int relay_rust_load_write(void *k, u32 cpu, u32 source, u64 seq, void *buf,
			  u64 len);
int relay_rust_flush(void *k, u32 cpu, bool on_cpu, u64 *barrier, u64 *next);
int relay_rust_stats(void *k, u32 cpu, struct relay_cpu_stats *out);
int relay_rust_reader_new(void *k, s32 cpu, void *flusher, u32 pid, void **out);
void relay_rust_reader_free(void *r);
ssize_t relay_rust_reader_fill(void *r, void *buf, u64 cap);
void relay_rust_reader_advance(void *r, u64 n);
bool relay_rust_reader_ready(void *r);
bool relay_rust_ready(void *k, s32 cpu);
int relay_rust_selftest(void);

/* relay_context.c: CPUs, cross-CPU calls, nested-writer works; called by Rust. */
u32 relay_glue_this_cpu(void);
u32 relay_glue_nr_cpu_ids(void);
u32 relay_glue_num_online_cpus(void);
void relay_glue_on_each_cpu(smp_call_func_t func, void *info);
int relay_glue_flush_cpu(void *flusher, u32 cpu, u64 *barrier, u64 *next);
struct relay_glue_works;
struct relay_glue_works *relay_glue_works_start(void (*fn)(void *),
						void (*tick)(void *), void *info,
						u64 period_ns);
void relay_glue_works_finish(struct relay_glue_works *ws);
/* relay_context.c: the end of a load or benchmark kthread (see there). */
int relay_kthread_done(atomic_t *running, struct completion *done);

/* relay_chan.c: the devices, registered at load; called by Rust. */
int relay_glue_register(void);
void relay_glue_unregister(void);

/* ------------------------------------------------------------------------
 * Channels (relay_chan.c).
 *
 * Lifetimes: a channel is reference counted (kref). The registry holds one
 * reference until RELAY_IOC_DESTROY or unload; every open file holds one
 * (each mapping holds its file); a load generator holds one while it runs.
 * The memory is freed with the last reference, so destroying a channel
 * while it is open or mapped is safe: the names go at once, the memory when
 * the last user does. The module cannot unload while a file is open
 * (fops.owner pins it).
 */
struct relay_chan;

/* /dev/relay/NAME.cpuN */
struct relay_cpu_dev {
	struct miscdevice misc;
	struct relay_chan *ch;
	int cpu;
	char name[RELAY_NAME_MAX + 24];
};

struct relay_chan {
	struct kref ref;
	struct list_head node;		/* in relay_chans, under relay_lock */
	char name[RELAY_NAME_MAX];
	void *mem;			/* relay_mem_alloc() */
	struct page **pages;		/* its pages */
	u64 size;
	u64 consumer_offset;
	u64 consumer_end;
	u32 max_payload;		/* the largest record's payload */
	void *k;			/* the Rust channel */
	wait_queue_head_t wq;		/* readers in poll() */
	struct irq_work wake;		/* wakes them; queued by writers */
	struct miscdevice misc;		/* /dev/relay/NAME */
	char misc_name[RELAY_NAME_MAX + 8];
	u32 cpu_devs;			/* registered per-CPU devices */
	struct relay_cpu_dev *cpu;	/* [nr_cpu_ids] */
	u32 id;				/* for BPF programs; never reused */
	bool registered;
	bool destroyed;			/* poll() says EPOLLHUP */
};

/*
 * Channels by number, for BPF programs: slot id % RELAY_MAX_CHANNELS,
 * written under relay_lock, read under RCU-sched from any context (NMI
 * included).
 */
extern struct relay_chan __rcu *relay_ids[RELAY_MAX_CHANNELS];

/* The channel numbered @id, or NULL. Preemption off: destroy's
 * synchronize_rcu() waits for the caller. */
static inline struct relay_chan *relay_chan_by_id(u32 id)
{
	struct relay_chan *ch = rcu_dereference_sched(relay_ids[id % RELAY_MAX_CHANNELS]);

	return ch && ch->id == id ? ch : NULL;
}

/* After a write: a sub-buffer was sealed (@r == 1), wake pollers, through
 * irq_work, which is NMI-safe (wake_up is not). wq_has_sleeper pairs with
 * poll_wait. */
static inline void relay_written(struct relay_chan *ch, int r)
{
	if (r == 1 && wq_has_sleeper(&ch->wq))
		irq_work_queue(&ch->wake);
}

/* relay_chan_write() with preemption already off. */
static inline int relay_write_here(struct relay_chan *ch, u16 type,
				   const void *data, u32 len)
{
	int r = relay_rust_write(ch->k, raw_smp_processor_id(), type, data, len);

	relay_written(ch, r);
	return r < 0 ? r : 0;
}

/* Zeroed, mappable (remap_vmalloc_range) channel memory, charged to the
 * caller's memory cgroup; NULL (never the OOM killer) if it cannot be had. */
void *relay_mem_alloc(u64 size, struct page ***pages);
void relay_mem_free(void *mem, struct page **pages, u64 size);

/* relay_context.c: flush every CPU of @ch (process context). */
void relay_flush_all(struct relay_chan *ch);

/* relay_file.c: /dev/relay/NAME and /dev/relay/NAME.cpuN. */
extern const struct file_operations relay_chan_fops;
extern const struct file_operations relay_cpu_fops;

/* relay_bpf.c: the kfuncs, registered at load. */
int relay_bpf_register(void);

/* relay_load.c: RELAY_IOC_LOAD and its NMI handler. */
long relay_load(struct relay_chan *ch, void __user *uarg);
int relay_load_register(void);
void relay_load_unregister(void);

/* relay_bench.c: RELAY_IOC_BENCH. */
long relay_bench(void __user *uarg);

#endif
