// SPDX-License-Identifier: GPL-2.0
/*
 * Thin C glue for relay-kmod: what Linux 6.12 has no Rust abstraction for.
 *
 * - devices: /dev/relay/control and, per channel, /dev/relay/NAME and
 *   /dev/relay/NAME.cpuN (misc devices; a '!' in a misc name is a '/' in
 *   /dev), their file operations, the channel registry and lifetimes;
 * - contexts: cross-CPU calls, kthreads, hard-IRQ hrtimers, NMIs sent by
 *   IPI, irq_work wakeups;
 * - BPF: the kfuncs (a copy, and reserve/commit with the grant as an
 *   acquired reference) and their per-CPU grant slots.
 *
 * The benchmark against the kernel's relay_write() is relay_bench.c.
 *
 * Every decision about a channel's bytes (geometry, layout, writing,
 * reading, merging, verifying) is made by relay-core through the Rust side
 * (relay_main.rs); this file moves pointers, bytes and control between the
 * kernel and it.
 *
 * Lifetimes: a channel is reference counted (kref). The registry holds one
 * reference until RELAY_IOC_DESTROY or unload; every open file holds one
 * (each mapping holds its file); a load generator holds one while it runs.
 * The memory is freed with the last reference, so destroying a channel
 * while it is open or mapped is safe: the names go at once, the memory when
 * the last user does. The module cannot unload while a file is open
 * (fops.owner pins it).
 */
#include <linux/bpf.h>
#include <linux/btf.h>
#include <linux/btf_ids.h>
#include <linux/cpu.h>
#include <linux/ctype.h>
#include <linux/debugfs.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/filelock.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/irq_work.h>
#include <linux/kref.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/preempt.h>
#include <linux/relay.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/timekeeping.h>
#include <linux/types.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <asm/apic.h>
#include <asm/nmi.h>

#include "relay_glue.h"
#include "relay_kmod.h"
#include "relay_uapi.h"

u32 relay_glue_this_cpu(void)
{
	return raw_smp_processor_id();
}

u32 relay_glue_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

u32 relay_glue_num_online_cpus(void)
{
	return num_online_cpus();
}

void relay_glue_on_each_cpu(smp_call_func_t func, void *info)
{
	on_each_cpu(func, info, 1);
}

/* ------------------------------------------------------------------------
 * Nested writers for the load-time self-test: one work item per online CPU
 * runs fn(info) with preemption disabled, while a hard-IRQ hrtimer pinned
 * to the same CPU calls tick(info) every period_ns, mid-record included.
 */
struct relay_glue_work {
	struct work_struct work;
	struct hrtimer timer;
	struct relay_glue_works *owner;
	bool queued;
};

struct relay_glue_works {
	void (*fn)(void *info);
	void (*tick)(void *info);
	void *info;
	u64 period_ns;
	struct relay_glue_work w[];
};

static enum hrtimer_restart relay_glue_tick(struct hrtimer *timer)
{
	struct relay_glue_work *w = container_of(timer, struct relay_glue_work, timer);

	w->owner->tick(w->owner->info);
	hrtimer_forward_now(timer, ns_to_ktime(w->owner->period_ns));
	return HRTIMER_RESTART;
}

static void relay_glue_work_fn(struct work_struct *work)
{
	struct relay_glue_work *w = container_of(work, struct relay_glue_work, work);

	hrtimer_init(&w->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
	w->timer.function = relay_glue_tick;
	preempt_disable();
	/* Pinned: queued on this CPU, which cannot change until preempt_enable. */
	hrtimer_start(&w->timer, ns_to_ktime(w->owner->period_ns),
		      HRTIMER_MODE_REL_PINNED_HARD);
	w->owner->fn(w->owner->info);
	preempt_enable();
	hrtimer_cancel(&w->timer);
}

struct relay_glue_works *relay_glue_works_start(void (*fn)(void *),
						void (*tick)(void *), void *info,
						u64 period_ns)
{
	struct relay_glue_works *ws;
	unsigned int cpu;

	ws = kzalloc(struct_size(ws, w, nr_cpu_ids), GFP_KERNEL);
	if (!ws)
		return NULL;
	ws->fn = fn;
	ws->tick = tick;
	ws->info = info;
	ws->period_ns = period_ns;
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		struct relay_glue_work *w = &ws->w[cpu];

		INIT_WORK(&w->work, relay_glue_work_fn);
		w->owner = ws;
		w->queued = true;
		schedule_work_on(cpu, &w->work);
	}
	cpus_read_unlock();
	return ws;
}

/* Waits for every work item, then frees them. */
void relay_glue_works_finish(struct relay_glue_works *ws)
{
	unsigned int cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		if (ws->w[cpu].queued)
			flush_work(&ws->w[cpu].work);
	kfree(ws);
}

/* ------------------------------------------------------------------------
 * Channels.
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
	void *mem;			/* vmalloc_user */
	u64 size;
	u64 consumer_offset;
	u64 consumer_end;
	void *k;			/* the Rust channel */
	wait_queue_head_t wq;		/* readers in poll() */
	struct irq_work wake;		/* wakes them; queued by writers */
	struct miscdevice misc;		/* /dev/relay/NAME */
	char misc_name[RELAY_NAME_MAX + 8];
	u32 cpu_devs;			/* registered per-CPU devices */
	struct relay_cpu_dev *cpu;	/* [nr_cpu_ids] */
	u32 id;				/* in relay_ids, for BPF programs */
	bool registered;
	bool destroyed;			/* poll() says EPOLLHUP */
};

static DEFINE_MUTEX(relay_lock);
static LIST_HEAD(relay_chans);
/* Channels by number, for BPF programs: written under relay_lock, read
 * under RCU from any context (NMI included). */
static struct relay_chan __rcu *relay_ids[RELAY_MAX_CHANNELS];

static void relay_wake(struct irq_work *w)
{
	struct relay_chan *ch = container_of(w, struct relay_chan, wake);

	wake_up_interruptible_all(&ch->wq);
}

static void relay_chan_free(struct kref *ref)
{
	struct relay_chan *ch = container_of(ref, struct relay_chan, ref);

	irq_work_sync(&ch->wake);
	if (ch->k)
		relay_rust_channel_free(ch->k);
	vfree(ch->mem);
	kfree(ch->cpu);
	kfree(ch);
}

/**
 * relay_chan_put() - drop a reference taken by relay_chan_get()
 * @ch: the channel
 */
void relay_chan_put(struct relay_chan *ch)
{
	kref_put(&ch->ref, relay_chan_free);
}
EXPORT_SYMBOL_GPL(relay_chan_put);

/* Under relay_lock. */
static struct relay_chan *relay_find(const char *name)
{
	struct relay_chan *ch;

	list_for_each_entry(ch, &relay_chans, node)
		if (!strcmp(ch->name, name))
			return ch;
	return NULL;
}

/**
 * relay_chan_get() - find a channel by name for writing
 * @name: the channel's name
 *
 * Context: process context.
 * Return: the channel with a reference (drop it with relay_chan_put()), or
 * NULL if there is none.
 */
struct relay_chan *relay_chan_get(const char *name)
{
	struct relay_chan *ch;

	mutex_lock(&relay_lock);
	ch = relay_find(name);
	if (ch)
		kref_get(&ch->ref);
	mutex_unlock(&relay_lock);
	return ch;
}
EXPORT_SYMBOL_GPL(relay_chan_get);

static void relay_written(struct relay_chan *ch, int r)
{
	/* A sub-buffer was sealed: wake pollers, through irq_work, which is
	 * NMI-safe (wake_up is not). wq_has_sleeper pairs with poll_wait. */
	if (r == 1 && wq_has_sleeper(&ch->wq))
		irq_work_queue(&ch->wake);
}

/* relay_chan_write() with preemption already off. */
static int relay_write_here(struct relay_chan *ch, u16 type, const void *data, u32 len)
{
	int r = relay_rust_write(ch->k, raw_smp_processor_id(), type, data, len);

	relay_written(ch, r);
	return r < 0 ? r : 0;
}

/**
 * relay_chan_write() - write one record on the current CPU
 * @ch: a channel from relay_chan_get()
 * @type: the record's type
 * @data: the payload
 * @len: its length
 *
 * Context: any: task, softirq, hard IRQ, NMI. Lockless; never sleeps.
 * Return: 0, -ENOSPC if the CPU's buffer was full (no-overwrite mode) or
 * -EMSGSIZE if @len does not fit a sub-buffer; each refusal is counted in
 * the channel's statistics.
 */
int relay_chan_write(struct relay_chan *ch, u16 type, const void *data, u32 len)
{
	int r;

	preempt_disable_notrace();
	r = relay_write_here(ch, type, data, len);
	preempt_enable_notrace();
	return r;
}
EXPORT_SYMBOL_GPL(relay_chan_write);

/* ------------------------------------------------------------------------
 * BPF: programs write through a kfunc (a module cannot add a map type).
 */
__bpf_kfunc_start_defs();

/**
 * relay_kfunc_write() - write one record from a BPF program
 * @id: the channel's number (struct relay_create.id)
 * @type: the record's type (0 ..= 65535)
 * @data: the payload, in program memory
 * @data__sz: its length (the verifier checks @data for it)
 * @flags: RELAY_KFUNC_WAKEUP: wake readers now (through irq_work, so NMI
 *	   is fine), not only when a sub-buffer is sealed
 *
 * Context: any a tracing program runs in, NMI included.
 * Return: 0; -EINVAL (bad @id, @type or @flags), -ENOENT (no channel
 * @id), -ENOSPC (full), -EMSGSIZE (larger than a sub-buffer holds).
 */
__bpf_kfunc int relay_kfunc_write(u32 id, u32 type, const void *data, u32 data__sz,
				  u64 flags)
{
	struct relay_chan *ch;
	int r = -ENOENT;

	if (id >= RELAY_MAX_CHANNELS || type > U16_MAX || (flags & ~RELAY_KFUNC_WAKEUP))
		return -EINVAL;
	/* A preemption-off region is an RCU read-side critical section:
	 * destroy's synchronize_rcu() waits for it (no rcu_read_lock calls
	 * on the path of every record). */
	preempt_disable_notrace();
	ch = rcu_dereference_sched(relay_ids[id]);
	if (ch) {
		r = relay_write_here(ch, type, data, data__sz);
		if (!r && (flags & RELAY_KFUNC_WAKEUP))
			irq_work_queue(&ch->wake);
	}
	preempt_enable_notrace();
	return r;
}

/*
 * Reserve and commit: the program fills a record in place, in the channel.
 * The verifier holds it to the protocol: the grant is an acquired reference
 * (KF_ACQUIRE), which every path must give back through relay_kfunc_commit()
 * or relay_kfunc_discard() (KF_RELEASE) before the program ends, and the
 * payload pointers from relay_kfunc_grant_data() die with it. In between,
 * preemption stays off: the CPU's writes nest as relay-core's CpuLocal writer
 * requires, and, that being an RCU read-side critical section, the channel
 * outlives the grant (destroy waits for a grace period). Sleepable programs
 * get none of this (relay_kfunc_filter).
 */

/**
 * struct relay_grant - a record reserved by relay_kfunc_reserve()
 * @ch: its channel
 * @data: its payload, @size bytes in the channel's memory
 * @cpu: the CPU whose buffer holds it
 * @size: payload bytes reserved
 * @busy: the slot is taken (claimed with cmpxchg_local: NMIs nest)
 * @core: relay-core's reservation (relay_main.rs), opaque here
 */
struct relay_grant {
	struct relay_chan *ch;
	u8 *data;
	u32 cpu;
	u32 size;
	unsigned long busy;
	u64 core[RELAY_GRANT_WORDS];
};

static DEFINE_PER_CPU(struct relay_grant, relay_grants[RELAY_GRANTS]);

/**
 * relay_kfunc_reserve() - reserve a record on the current CPU
 * @id: the channel's number (struct relay_create.id)
 * @size: payload bytes; relay_kfunc_grant_data() and
 *	  relay_kfunc_grant_write() fill them
 *
 * Context: a non-sleepable tracing program, NMI included.
 * Return: the grant, which the program must pass to relay_kfunc_commit() or
 * relay_kfunc_discard(); NULL if @id names no channel, the buffer is full,
 * @size does not fit a sub-buffer, or the CPU holds RELAY_GRANTS grants
 * already (the last three are counted in the channel's statistics).
 */
__bpf_kfunc struct relay_grant *relay_kfunc_reserve(u32 id, u32 size)
{
	struct relay_grant *pool, *g = NULL;
	struct relay_chan *ch;
	u32 cpu;
	int i, r;

	if (id >= RELAY_MAX_CHANNELS)
		return NULL;
	preempt_disable_notrace();
	ch = rcu_dereference_sched(relay_ids[id]);
	if (!ch)
		goto enable;
	cpu = raw_smp_processor_id();
	pool = *this_cpu_ptr(&relay_grants);
	for (i = 0; i < RELAY_GRANTS && !g; i++)
		if (!cmpxchg_local(&pool[i].busy, 0, 1))
			g = &pool[i];
	if (!g) {
		relay_rust_refuse(ch->k, cpu);
		goto enable;
	}
	r = relay_rust_reserve(ch->k, cpu, size, g->core, &g->data);
	if (r < 0) {
		WRITE_ONCE(g->busy, 0);
		goto enable;
	}
	relay_written(ch, r);
	g->ch = ch;
	g->cpu = cpu;
	g->size = size;
	/* Preemption stays off until relay_grant_end(). */
	return g;
enable:
	preempt_enable_notrace();
	return NULL;
}

/**
 * relay_kfunc_grant_data() - a window into a grant's payload
 * @g: the grant
 * @offset: where the window starts in the payload
 * @rdwr_buf_size: its size, a constant (the verifier checks every access
 *		   through the window against it)
 *
 * Return: the window, valid until @g is committed or discarded; NULL if it
 * does not lie inside the payload.
 */
__bpf_kfunc u8 *relay_kfunc_grant_data(struct relay_grant *g, u32 offset,
				       const u32 rdwr_buf_size)
{
	if (offset > g->size || rdwr_buf_size > g->size - offset)
		return NULL;
	return g->data + offset;
}

/**
 * relay_kfunc_grant_write() - copy program memory into a grant's payload
 * @g: the grant
 * @offset: where in the payload
 * @data: the bytes
 * @data__sz: how many (the verifier checks @data for them)
 *
 * Return: 0, or -EINVAL if they do not fit inside the payload.
 */
__bpf_kfunc int relay_kfunc_grant_write(struct relay_grant *g, u32 offset,
					const void *data, u32 data__sz)
{
	if (offset > g->size || data__sz > g->size - offset)
		return -EINVAL;
	if (data__sz)
		memcpy(g->data + offset, data, data__sz);
	return 0;
}

static void relay_grant_end(struct relay_grant *g, u16 type, bool discard,
			    bool wake)
{
	struct relay_chan *ch = g->ch;
	int r = relay_rust_commit(ch->k, g->cpu, g->core, type, discard);

	relay_written(ch, r);
	if (wake)
		irq_work_queue(&ch->wake);
	barrier();
	WRITE_ONCE(g->busy, 0);
	preempt_enable_notrace();
}

/**
 * relay_kfunc_commit() - publish a reserved record
 * @g: the grant, which this gives back
 * @type: the record's type (0 ..= 65535)
 * @flags: RELAY_KFUNC_WAKEUP, as for relay_kfunc_write()
 *
 * Return: 0, or -EINVAL for a bad @type or @flags, in which case the
 * record is discarded (the grant is given back either way).
 */
__bpf_kfunc int relay_kfunc_commit(struct relay_grant *g, u32 type, u64 flags)
{
	bool bad = type > U16_MAX || (flags & ~RELAY_KFUNC_WAKEUP);

	relay_grant_end(g, bad ? 0 : type, bad, !bad && (flags & RELAY_KFUNC_WAKEUP));
	return bad ? -EINVAL : 0;
}

/**
 * relay_kfunc_discard() - give a reserved record back unpublished
 * @g: the grant
 *
 * Readers skip its space; no record is counted.
 */
__bpf_kfunc void relay_kfunc_discard(struct relay_grant *g)
{
	relay_grant_end(g, 0, true, false);
}

__bpf_kfunc_end_defs();

BTF_KFUNCS_START(relay_kfunc_ids)
BTF_ID_FLAGS(func, relay_kfunc_write)
BTF_ID_FLAGS(func, relay_kfunc_reserve, KF_ACQUIRE | KF_RET_NULL)
BTF_ID_FLAGS(func, relay_kfunc_grant_data, KF_TRUSTED_ARGS | KF_RET_NULL)
BTF_ID_FLAGS(func, relay_kfunc_grant_write, KF_TRUSTED_ARGS)
BTF_ID_FLAGS(func, relay_kfunc_commit, KF_RELEASE)
BTF_ID_FLAGS(func, relay_kfunc_discard, KF_RELEASE)
BTF_KFUNCS_END(relay_kfunc_ids)

BTF_ID_LIST(relay_kfunc_write_id)
BTF_ID(func, relay_kfunc_write)

/* A grant holds preemption off until its commit: no sleeping in between. */
static int relay_kfunc_filter(const struct bpf_prog *prog, u32 kfunc_id)
{
	return prog->sleepable && kfunc_id != relay_kfunc_write_id[0] ? -EACCES : 0;
}

static const struct btf_kfunc_id_set relay_kfunc_set = {
	.owner = THIS_MODULE,
	.set = &relay_kfunc_ids,
	.filter = relay_kfunc_filter,
};

/*
 * Called by the load generator's NMI handler after its own write, so that
 * a BPF program attached here (fentry) runs in NMI context: under TCG there
 * is no PMU to raise NMIs for perf-event programs.
 */
noinline void relay_nmi_hook(u32 cpu, u64 seq);
noinline void relay_nmi_hook(u32 cpu, u64 seq)
{
	asm volatile("" : : "r"(cpu), "r"(seq) : "memory");
}

/* Runs relay_rust_flush on the CPU it flushes (IPI, interrupts off). */
struct relay_flush_args {
	void *k;
	u64 barrier, next;
	int err;
};

static void relay_flush_ipi(void *info)
{
	struct relay_flush_args *a = info;

	a->err = relay_rust_flush(a->k, raw_smp_processor_id(), true,
				  &a->barrier, &a->next);
}

/*
 * Flushes @cpu of the Rust channel @k: on that CPU by IPI (its writers use
 * per-CPU atomics, which only that CPU may mix with), or from here if it is
 * offline (then no writer can run on it). Process context. Returns 1 if
 * that sealed a sub-buffer, 0 if not, or a negative errno.
 */
int relay_glue_flush_cpu(void *k, u32 cpu, u64 *barrier, u64 *next)
{
	struct relay_flush_args a = { .k = k };
	int err;

	if (cpu >= nr_cpu_ids)
		return -EINVAL;
	cpus_read_lock();
	if (cpu_online(cpu)) {
		err = smp_call_function_single(cpu, relay_flush_ipi, &a, 1);
		if (!err)
			err = a.err;
	} else {
		err = relay_rust_flush(k, cpu, false, &a.barrier, &a.next);
	}
	cpus_read_unlock();
	*barrier = a.barrier;
	*next = a.next;
	return err;
}

static void relay_flush_all(struct relay_chan *ch)
{
	u64 barrier, next;
	u32 cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		relay_written(ch, relay_glue_flush_cpu(ch->k, cpu, &barrier, &next));
}

/* ------------------------------------------------------------------------
 * Channel files: /dev/relay/NAME (cpu = -1) and /dev/relay/NAME.cpuN.
 */
#define RELAY_STAGING	PAGE_SIZE

struct relay_file {
	struct relay_chan *ch;
	s32 cpu;
	struct mutex lock;		/* the reader and the staging page */
	void *reader;			/* Rust, created on first read or poll */
	void *staging;
};

static const struct file_operations relay_cpu_fops;

static int relay_chan_open(struct inode *inode, struct file *file)
{
	/* misc_open set private_data to our miscdevice, under misc_mtx, which
	 * misc_deregister also takes: the channel is alive here. */
	struct miscdevice *misc = file->private_data;
	struct relay_file *rf;
	struct relay_chan *ch;
	s32 cpu = -1;

	if (misc->fops == &relay_cpu_fops) {
		struct relay_cpu_dev *cd = container_of(misc, struct relay_cpu_dev, misc);

		ch = cd->ch;
		cpu = cd->cpu;
	} else {
		ch = container_of(misc, struct relay_chan, misc);
	}
	rf = kzalloc(sizeof(*rf), GFP_KERNEL);
	if (!rf)
		return -ENOMEM;
	kref_get(&ch->ref);
	rf->ch = ch;
	rf->cpu = cpu;
	mutex_init(&rf->lock);
	file->private_data = rf;
	return stream_open(inode, file);
}

/* Runs once the last mapping is gone too (each VMA holds the file). */
static int relay_chan_release(struct inode *inode, struct file *file)
{
	struct relay_file *rf = file->private_data;

	if (rf->reader)
		relay_rust_reader_free(rf->reader);
	kfree(rf->staging);
	mutex_destroy(&rf->lock);
	relay_chan_put(rf->ch);
	kfree(rf);
	return 0;
}

/* Bytes of consumer state per CPU (FORMAT.md, "Consumer state"). */
#define RELAY_CONSUMER_BYTES	128

/*
 * Takes (F_WRLCK) or drops (F_UNLCK) @file's claim on @cpu: the
 * open-file-description lock a userspace consumer takes on that CPU's
 * consumer state (FORMAT.md, "Readers"), so that read() consumers and
 * mapped ones exclude each other. The kernel drops it when the file is
 * closed. Returns 0 or -EBUSY.
 */
static int relay_claim_cpu(struct file *file, struct relay_chan *ch, u32 cpu,
			   unsigned char type)
{
	struct file_lock fl;
	int err;

	locks_init_lock(&fl);
	fl.c.flc_flags = FL_POSIX | FL_OFDLCK;
	fl.c.flc_type = type;
	fl.c.flc_owner = file;
	fl.c.flc_pid = -1;
	fl.c.flc_file = file;
	fl.fl_start = ch->consumer_offset + (u64)cpu * RELAY_CONSUMER_BYTES;
	fl.fl_end = fl.fl_start + RELAY_CONSUMER_BYTES - 1;
	err = vfs_lock_file(file, F_SETLK, &fl, NULL);
	return err == -EAGAIN || err == -EACCES ? -EBUSY : err;
}

/* Drops @file's claims on @rf's CPUs below @end. */
static void relay_unclaim(struct file *file, struct relay_file *rf, u32 end)
{
	u32 cpu = rf->cpu < 0 ? 0 : rf->cpu;

	for (; cpu < end; cpu++)
		relay_claim_cpu(file, rf->ch, cpu, F_UNLCK);
}

/* Claims every CPU @rf reads, or none. */
static int relay_claim(struct file *file, struct relay_file *rf)
{
	u32 cpu = rf->cpu < 0 ? 0 : rf->cpu;
	u32 end = rf->cpu < 0 ? nr_cpu_ids : rf->cpu + 1;
	int err;

	for (; cpu < end; cpu++) {
		err = relay_claim_cpu(file, rf->ch, cpu, F_WRLCK);
		if (err) {
			relay_unclaim(file, rf, cpu);
			return err;
		}
	}
	return 0;
}

/*
 * The reader of @rf, created on the first read(): that makes the file the
 * consumer of its CPUs (-EBUSY if another file holds one). Under rf->lock.
 */
static int relay_file_reader(struct file *file, struct relay_file *rf)
{
	int err;

	if (rf->reader)
		return 0;
	if (!rf->staging) {
		rf->staging = kmalloc(RELAY_STAGING, GFP_KERNEL_ACCOUNT);
		if (!rf->staging)
			return -ENOMEM;
	}
	err = relay_claim(file, rf);
	if (err)
		return err;
	err = relay_rust_reader_new(rf->ch->k, rf->cpu, rf->ch->k,
				    task_tgid_nr(current), &rf->reader);
	if (err) {
		rf->reader = NULL;
		relay_unclaim(file, rf, rf->cpu < 0 ? nr_cpu_ids : rf->cpu + 1);
	}
	return err;
}

/*
 * Frames of every record readable now, merged by timestamp (idle CPUs are
 * flushed first); 0 once nothing is readable. A frame may be split across
 * calls. Progress is committed only for frames copied out whole: a file
 * closed mid-frame leaves that frame to the next reader.
 */
static ssize_t relay_chan_read(struct file *file, char __user *buf,
			       size_t count, loff_t *ppos)
{
	struct relay_file *rf = file->private_data;
	size_t done = 0;
	int err;

	if (mutex_lock_interruptible(&rf->lock))
		return -ERESTARTSYS;
	err = relay_file_reader(file, rf);
	while (!err && done < count) {
		ssize_t n = relay_rust_reader_fill(rf->reader, rf->staging,
						   min_t(size_t, count - done,
							 RELAY_STAGING));

		if (n < 0)
			err = n;
		if (n <= 0)
			break;
		if (copy_to_user(buf + done, rf->staging, n)) {
			err = -EFAULT;
			break;
		}
		relay_rust_reader_advance(rf->reader, n);
		done += n;
		if (fatal_signal_pending(current))
			break;
		cond_resched();
	}
	mutex_unlock(&rf->lock);
	return done ? done : err;
}

/* Each write() is one record of type 1 on the current CPU. */
static ssize_t relay_chan_write_file(struct file *file, const char __user *buf,
				     size_t count, loff_t *ppos)
{
	struct relay_file *rf = file->private_data;
	void *data;
	int r;

	if (count > (1U << 20))
		return -EMSGSIZE;
	data = memdup_user(buf, count);
	if (IS_ERR(data))
		return PTR_ERR(data);
	r = relay_chan_write(rf->ch, 1, data, count);
	kfree(data);
	return r ? r : count;
}

/*
 * Readable: frames pending in this file's reader, or a sealed sub-buffer
 * at the consumer position of one of its CPUs. Polling claims nothing and
 * allocates nothing (snapshot readers and mapped consumers poll too);
 * EPOLLHUP once the channel was destroyed.
 */
static __poll_t relay_chan_poll(struct file *file, poll_table *wait)
{
	struct relay_file *rf = file->private_data;
	__poll_t mask = 0;
	bool ready;

	poll_wait(file, &rf->ch->wq, wait);
	mutex_lock(&rf->lock);
	ready = rf->reader ? relay_rust_reader_ready(rf->reader) :
			     relay_rust_ready(rf->ch->k, rf->cpu);
	mutex_unlock(&rf->lock);
	if (ready)
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(rf->ch->destroyed))
		mask |= EPOLLHUP;
	return mask;
}

/*
 * Maps [pgoff, pgoff + len) of the channel. Writable mappings only inside
 * the consumer region; every other mapping is read-only for good
 * (VM_MAYWRITE cleared). MAP_PRIVATE is refused: it would copy on write.
 * A shared mapping of an O_RDONLY file has VM_MAYSHARE but not VM_SHARED
 * (mmap clears it when the file cannot be written): snapshot readers map
 * that way, read-only.
 */
static int relay_chan_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct relay_file *rf = file->private_data;
	struct relay_chan *ch = rf->ch;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	bool consumer = off >= ch->consumer_offset &&
			off <= ch->consumer_end &&
			len <= ch->consumer_end - off;

	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_pgoff > (ch->size >> PAGE_SHIFT) || len > ch->size - off)
		return -EINVAL;
	if (vma->vm_flags & VM_WRITE) {
		if (!consumer)
			return -EPERM;
	} else if (!consumer) {
		vm_flags_clear(vma, VM_MAYWRITE);
	}
	return remap_vmalloc_range(vma, ch->mem, vma->vm_pgoff);
}

/* ------------------------------------------------------------------------
 * The load generator: a kthread per online CPU writes checked payloads;
 * optionally a hard-IRQ hrtimer per CPU writes too, and sends an NMI to the
 * next CPU, whose handler writes one more.
 */
#define RELAY_LOAD_TICK_NS	(100 * NSEC_PER_USEC)
#define RELAY_SOURCE_TASK	0
#define RELAY_SOURCE_IRQ	1
#define RELAY_SOURCE_NMI	2

/*
 * The end of a load or benchmark kthread: the last one completes @done;
 * each then lives until kthread_stop(), so the stopper never races its
 * exit (kthread_stop on a thread that already returned is not allowed).
 */
int relay_kthread_done(atomic_t *running, struct completion *done)
{
	if (atomic_dec_and_test(running))
		complete(done);
	while (!kthread_should_stop()) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (!kthread_should_stop())
			schedule();
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

struct relay_load_ctx;

struct relay_load_cpu {
	struct relay_load_ctx *ctx;
	struct task_struct *task;
	struct hrtimer timer;
	u32 cpu;
	u32 nmi_target;
	atomic_t nmi_pending;		/* NMIs sent to this CPU, not yet handled */
	u64 attempted, written;		/* task */
	u64 irq_seq, irq_written;	/* touched only by this CPU's timer */
	u64 nmi_seq, nmi_written;	/* touched only by this CPU's NMIs */
	void *buf_task, *buf_irq, *buf_nmi;
	bool timer_on;
};

struct relay_load_ctx {
	struct relay_chan *ch;
	struct relay_load args;
	atomic_t running;
	struct completion done;
	struct relay_load_cpu cpu[];	/* [nr_cpu_ids] */
};

/* The load whose NMIs the handler serves; one load with NMIs at a time. */
static struct relay_load_ctx *relay_nmi_load;
static DEFINE_MUTEX(relay_nmi_lock);

static void relay_load_one(struct relay_load_ctx *ctx, struct relay_load_cpu *lc,
			   u32 source, u64 *seq, u64 *written, void *buf)
{
	int r = relay_rust_load_write(ctx->ch->k, lc->cpu, source, *seq, buf,
				      ctx->args.size);

	*seq += 1;
	if (r >= 0)
		*written += 1;
	relay_written(ctx->ch, r);
}

static int relay_load_nmi(unsigned int type, struct pt_regs *regs)
{
	struct relay_load_ctx *ctx = READ_ONCE(relay_nmi_load);
	struct relay_load_cpu *lc;

	if (!ctx)
		return NMI_DONE;
	lc = &ctx->cpu[raw_smp_processor_id()];
	if (atomic_dec_if_positive(&lc->nmi_pending) < 0)
		return NMI_DONE;	/* not ours */
	relay_load_one(ctx, lc, RELAY_SOURCE_NMI, &lc->nmi_seq,
		       &lc->nmi_written, lc->buf_nmi);
	relay_nmi_hook(lc->cpu, lc->nmi_seq);
	return NMI_HANDLED;
}

static enum hrtimer_restart relay_load_tick(struct hrtimer *timer)
{
	struct relay_load_cpu *lc = container_of(timer, struct relay_load_cpu, timer);
	struct relay_load_ctx *ctx = lc->ctx;

	relay_load_one(ctx, lc, RELAY_SOURCE_IRQ, &lc->irq_seq,
		       &lc->irq_written, lc->buf_irq);
	if ((ctx->args.flags & RELAY_LOAD_NMI) && lc->nmi_target != lc->cpu) {
		atomic_inc(&ctx->cpu[lc->nmi_target].nmi_pending);
		__apic_send_IPI_mask(cpumask_of(lc->nmi_target), NMI_VECTOR);
	}
	hrtimer_forward_now(timer, ns_to_ktime(RELAY_LOAD_TICK_NS));
	return HRTIMER_RESTART;
}

static int relay_load_thread(void *data)
{
	struct relay_load_cpu *lc = data;
	struct relay_load_ctx *ctx = lc->ctx;
	u64 start = ktime_get_ns(), seq;

	if (ctx->args.flags & (RELAY_LOAD_IRQ | RELAY_LOAD_NMI)) {
		hrtimer_init(&lc->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
		lc->timer.function = relay_load_tick;
		lc->timer_on = true;
		/* Bound to lc->cpu: the pinned timer fires there. */
		hrtimer_start(&lc->timer, ns_to_ktime(RELAY_LOAD_TICK_NS),
			      HRTIMER_MODE_REL_PINNED_HARD);
	}
	for (seq = 0; lc->attempted < ctx->args.records;) {
		if (kthread_should_stop())
			break;
		/* Per-CPU writer: no migration in the middle of a record. */
		preempt_disable();
		relay_load_one(ctx, lc, RELAY_SOURCE_TASK, &seq, &lc->written,
			       lc->buf_task);
		preempt_enable();
		lc->attempted = seq;
		if (ctx->args.rate) {
			u64 due = start + div64_u64(seq * NSEC_PER_SEC, ctx->args.rate);
			u64 now = ktime_get_ns();

			if (due > now + 20 * NSEC_PER_USEC)
				usleep_range((due - now) / NSEC_PER_USEC,
					     (due - now) / NSEC_PER_USEC + 20);
		} else if ((seq & 255) == 0) {
			cond_resched();
		}
	}
	if (lc->timer_on)
		hrtimer_cancel(&lc->timer);
	return relay_kthread_done(&ctx->running, &ctx->done);
}

static void relay_load_free(struct relay_load_ctx *ctx)
{
	u32 cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		kvfree(ctx->cpu[cpu].buf_task);
		kvfree(ctx->cpu[cpu].buf_irq);
		kvfree(ctx->cpu[cpu].buf_nmi);
	}
	kfree(ctx);
}

static long relay_load(struct relay_chan *ch, void __user *uarg)
{
	struct relay_load_ctx *ctx;
	struct relay_load a;
	bool nmi;
	u64 t0;
	u32 cpu, prev = nr_cpu_ids;
	long err = 0;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.reserved || a.records > (1ULL << 32) || a.size < 32 ||
	    a.size > 65536 || (a.flags & ~(RELAY_LOAD_IRQ | RELAY_LOAD_NMI)))
		return -EINVAL;
	nmi = a.flags & RELAY_LOAD_NMI;
	ctx = kzalloc(struct_size(ctx, cpu, nr_cpu_ids), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	ctx->ch = ch;
	ctx->args = a;
	init_completion(&ctx->done);
	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		struct relay_load_cpu *lc = &ctx->cpu[cpu];

		lc->ctx = ctx;
		lc->cpu = cpu;
		lc->buf_task = kvmalloc(a.size, GFP_KERNEL);
		lc->buf_irq = kvmalloc(a.size, GFP_KERNEL);
		lc->buf_nmi = kvmalloc(a.size, GFP_KERNEL);
		if (!lc->buf_task || !lc->buf_irq || !lc->buf_nmi) {
			relay_load_free(ctx);
			return -ENOMEM;
		}
	}
	if (nmi) {
		mutex_lock(&relay_nmi_lock);
		if (relay_nmi_load) {
			mutex_unlock(&relay_nmi_lock);
			relay_load_free(ctx);
			return -EBUSY;
		}
		WRITE_ONCE(relay_nmi_load, ctx);
		mutex_unlock(&relay_nmi_lock);
	}
	cpus_read_lock();
	/* Each CPU's timer sends its NMIs to the next online CPU. */
	for_each_online_cpu(cpu) {
		if (prev < nr_cpu_ids)
			ctx->cpu[prev].nmi_target = cpu;
		prev = cpu;
	}
	if (prev < nr_cpu_ids)
		ctx->cpu[prev].nmi_target = cpumask_first(cpu_online_mask);
	t0 = ktime_get_ns();
	for_each_online_cpu(cpu) {
		struct relay_load_cpu *lc = &ctx->cpu[cpu];
		struct task_struct *t;

		t = kthread_create_on_cpu(relay_load_thread, lc, cpu, "relay_load/%u");
		if (IS_ERR(t)) {
			err = PTR_ERR(t);
			break;
		}
		lc->task = t;
		atomic_inc(&ctx->running);
		a.cpus++;
	}
	for_each_online_cpu(cpu)
		if (ctx->cpu[cpu].task)
			wake_up_process(ctx->cpu[cpu].task);
	cpus_read_unlock();
	if (a.cpus && wait_for_completion_killable(&ctx->done))
		err = -EINTR;
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		if (ctx->cpu[cpu].task)
			kthread_stop(ctx->cpu[cpu].task);
	a.elapsed_ns = ktime_get_ns() - t0;
	if (nmi) {
		/* Timers are cancelled; wait for NMIs still in flight. */
		unsigned int spins = 0;

		for (cpu = 0; cpu < nr_cpu_ids; cpu++)
			while (atomic_read(&ctx->cpu[cpu].nmi_pending) > 0 &&
			       spins++ < 100000)
				udelay(10);
		mutex_lock(&relay_nmi_lock);
		WRITE_ONCE(relay_nmi_load, NULL);
		mutex_unlock(&relay_nmi_lock);
		/* NMI handlers run as RCU readers: none uses ctx after this. */
		synchronize_rcu();
	}
	relay_flush_all(ch);
	a.attempted = a.written = a.irq_writes = a.nmi_writes = 0;
	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		struct relay_load_cpu *lc = &ctx->cpu[cpu];

		a.attempted += lc->attempted + lc->irq_seq + lc->nmi_seq;
		a.written += lc->written + lc->irq_written + lc->nmi_written;
		a.irq_writes += lc->irq_written;
		a.nmi_writes += lc->nmi_written;
	}
	relay_load_free(ctx);
	if (copy_to_user(uarg, &a, sizeof(a)))
		return -EFAULT;
	return err;
}

static long relay_chan_ioctl(struct file *file, unsigned int cmd,
			     unsigned long arg)
{
	struct relay_file *rf = file->private_data;
	struct relay_chan *ch = rf->ch;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case RELAY_IOC_FLUSH: {
		struct relay_flush f;
		int err;

		/* A flush changes the channel (it closes sub-buffers). */
		if (!(file->f_mode & FMODE_WRITE))
			return -EBADF;
		if (copy_from_user(&f, uarg, sizeof(f)))
			return -EFAULT;
		if (f.reserved)
			return -EINVAL;
		err = relay_glue_flush_cpu(ch->k, f.cpu, &f.barrier, &f.next);
		if (err < 0)
			return err;
		relay_written(ch, err);
		return copy_to_user(uarg, &f, sizeof(f)) ? -EFAULT : 0;
	}
	case RELAY_IOC_STATS: {
		struct relay_stats s;
		struct relay_cpu_stats cs;
		struct relay_cpu_stats __user *out;
		u32 cpu;

		if (copy_from_user(&s, uarg, sizeof(s)))
			return -EFAULT;
		if (s.reserved)
			return -EINVAL;
		out = u64_to_user_ptr(s.cpus_ptr);
		s.cpus = min_t(u32, s.cpus, nr_cpu_ids);
		for (cpu = 0; cpu < s.cpus; cpu++) {
			if (relay_rust_stats(ch->k, cpu, &cs))
				return -EIO;
			if (copy_to_user(&out[cpu], &cs, sizeof(cs)))
				return -EFAULT;
		}
		s.memory_bytes = ch->size;
		return copy_to_user(uarg, &s, sizeof(s)) ? -EFAULT : 0;
	}
	case RELAY_IOC_LOAD:
		if (!capable(CAP_SYS_ADMIN))
			return -EPERM;
		return relay_load(ch, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations relay_chan_fops = {
	.owner = THIS_MODULE,
	.open = relay_chan_open,
	.release = relay_chan_release,
	.read = relay_chan_read,
	.write = relay_chan_write_file,
	.poll = relay_chan_poll,
	.mmap = relay_chan_mmap,
	.unlocked_ioctl = relay_chan_ioctl,
};

/* /dev/relay/NAME.cpuN: read and poll one CPU; no mapping. */
static const struct file_operations relay_cpu_fops = {
	.owner = THIS_MODULE,
	.open = relay_chan_open,
	.release = relay_chan_release,
	.read = relay_chan_read,
	.poll = relay_chan_poll,
	.unlocked_ioctl = relay_chan_ioctl,
};

/* ------------------------------------------------------------------------
 * The control device: create, destroy, benchmark.
 */

/* 1..31 of [A-Za-z0-9_-], NUL-terminated, zero-padded; not "control". */
static int relay_check_name(const char name[RELAY_NAME_MAX])
{
	size_t len = strnlen(name, RELAY_NAME_MAX), i;

	if (len == RELAY_NAME_MAX)
		return -ENAMETOOLONG;
	if (!len || !strcmp(name, "control"))
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (!isalnum(name[i]) && name[i] != '_' && name[i] != '-')
			return -EINVAL;
	for (; i < RELAY_NAME_MAX; i++)
		if (name[i])
			return -EINVAL;
	return 0;
}

/* Under relay_lock: the names go, the memory stays while it is in use. */
static void relay_unregister_chan(struct relay_chan *ch)
{
	u32 cpu;

	list_del(&ch->node);
	if (rcu_access_pointer(relay_ids[ch->id]) == ch) {
		RCU_INIT_POINTER(relay_ids[ch->id], NULL);
		/* No BPF program still writes through the old number. */
		synchronize_rcu();
	}
	for (cpu = 0; cpu < ch->cpu_devs; cpu++)
		misc_deregister(&ch->cpu[cpu].misc);
	if (ch->registered)
		misc_deregister(&ch->misc);
	WRITE_ONCE(ch->destroyed, true);
	wake_up_interruptible_all(&ch->wq);
	relay_chan_put(ch);
}

static long relay_create(void __user *uarg)
{
	struct relay_create c;
	struct relay_chan *ch;
	u64 consumer_offset, consumer_size;
	u32 cpu;
	int err;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.id)
		return -EINVAL;
	err = relay_check_name(c.name);
	if (err)
		return err;
	err = relay_rust_geometry(c.subbuf_size, c.subbuf_count, c.flags,
				  &c.total_size, &consumer_offset,
				  &consumer_size, &c.cpu_count);
	if (err)
		return err;
	/* A channel is kernel memory: at most 1 GiB of it. */
	if (c.total_size > (1ULL << 30))
		return -E2BIG;
	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	if (!ch)
		return -ENOMEM;
	kref_init(&ch->ref);
	INIT_LIST_HEAD(&ch->node);
	init_waitqueue_head(&ch->wq);
	init_irq_work(&ch->wake, relay_wake);
	memcpy(ch->name, c.name, RELAY_NAME_MAX);
	ch->size = c.total_size;
	ch->consumer_offset = consumer_offset;
	ch->consumer_end = consumer_offset + consumer_size;
	ch->cpu = kcalloc(nr_cpu_ids, sizeof(*ch->cpu), GFP_KERNEL);
	/* Zeroed, page-aligned, and marked for remap_vmalloc_range(). */
	ch->mem = vmalloc_user(c.total_size);
	if (!ch->cpu || !ch->mem) {
		relay_chan_put(ch);
		return -ENOMEM;
	}
	err = relay_rust_channel_new(ch->mem, ch->size, c.subbuf_size,
				     c.subbuf_count, c.flags, &ch->k);
	if (err) {
		relay_chan_put(ch);
		return err;
	}

	mutex_lock(&relay_lock);
	if (relay_find(ch->name)) {
		mutex_unlock(&relay_lock);
		relay_chan_put(ch);
		return -EEXIST;
	}
	for (c.id = 0; c.id < RELAY_MAX_CHANNELS; c.id++)
		if (!rcu_access_pointer(relay_ids[c.id]))
			break;
	if (c.id == RELAY_MAX_CHANNELS) {
		mutex_unlock(&relay_lock);
		relay_chan_put(ch);
		return -ENOSPC;
	}
	ch->id = c.id;
	list_add(&ch->node, &relay_chans);
	snprintf(ch->misc_name, sizeof(ch->misc_name), "relay!%s", ch->name);
	ch->misc.minor = MISC_DYNAMIC_MINOR;
	ch->misc.name = ch->misc_name;
	ch->misc.fops = &relay_chan_fops;
	ch->misc.mode = 0600;
	err = misc_register(&ch->misc);
	ch->registered = !err;
	for (cpu = 0; !err && cpu < nr_cpu_ids; cpu++) {
		struct relay_cpu_dev *cd = &ch->cpu[cpu];

		cd->ch = ch;
		cd->cpu = cpu;
		snprintf(cd->name, sizeof(cd->name), "relay!%s.cpu%u", ch->name, cpu);
		cd->misc.minor = MISC_DYNAMIC_MINOR;
		cd->misc.name = cd->name;
		cd->misc.fops = &relay_cpu_fops;
		cd->misc.mode = 0600;
		err = misc_register(&cd->misc);
		if (!err)
			ch->cpu_devs++;
	}
	if (err)
		relay_unregister_chan(ch);
	else
		rcu_assign_pointer(relay_ids[ch->id], ch);
	mutex_unlock(&relay_lock);
	if (err)
		return err;
	return copy_to_user(uarg, &c, sizeof(c)) ? -EFAULT : 0;
}

static long relay_destroy(void __user *uarg)
{
	struct relay_destroy d;
	struct relay_chan *ch;
	int err;

	if (copy_from_user(&d, uarg, sizeof(d)))
		return -EFAULT;
	err = relay_check_name(d.name);
	if (err)
		return err;
	mutex_lock(&relay_lock);
	ch = relay_find(d.name);
	if (ch)
		relay_unregister_chan(ch);
	mutex_unlock(&relay_lock);
	return ch ? 0 : -ENOENT;
}

static long relay_control_ioctl(struct file *file, unsigned int cmd,
				unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	switch (cmd) {
	case RELAY_IOC_CREATE:
		return relay_create(uarg);
	case RELAY_IOC_DESTROY:
		return relay_destroy(uarg);
	case RELAY_IOC_BENCH:
		return relay_bench(uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations relay_control_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = relay_control_ioctl,
};

static struct miscdevice relay_control = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "relay!control",
	.fops = &relay_control_fops,
	.mode = 0600,
};

int relay_glue_register(void)
{
	int err = register_btf_kfunc_id_set(BPF_PROG_TYPE_TRACING, &relay_kfunc_set);

	if (err)
		return err;
	err = register_nmi_handler(NMI_LOCAL, relay_load_nmi, 0, "relay_load");
	if (err)
		return err;
	err = misc_register(&relay_control);
	if (err)
		unregister_nmi_handler(NMI_LOCAL, "relay_load");
	return err;
}

/* Unload: no file is open (each pins the module), so no load runs. */
void relay_glue_unregister(void)
{
	struct relay_chan *ch, *tmp;

	misc_deregister(&relay_control);
	mutex_lock(&relay_lock);
	list_for_each_entry_safe(ch, tmp, &relay_chans, node)
		relay_unregister_chan(ch);
	mutex_unlock(&relay_lock);
	unregister_nmi_handler(NMI_LOCAL, "relay_load");
}
