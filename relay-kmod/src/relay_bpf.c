// SPDX-License-Identifier: GPL-2.0
/*
 * BPF: programs write through kfuncs (a module cannot add a map type): a
 * copy (relay_kfunc_write), and reserve/commit in place with the grant as
 * an acquired reference the verifier tracks. Tracing programs of every
 * kind may call them: fentry/fexit, raw and BTF tracepoints, LSM
 * (BPF_PROG_TYPE_TRACING and _LSM share the kernel's tracing kfunc hook),
 * tracepoints, perf events and kprobes, NMI context included; sleepable
 * programs get the copy only.
 */
#include <linux/bpf.h>
#include <linux/btf.h>
#include <linux/btf_ids.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/string.h>

#include "relay_glue.h"
#include "relay_uapi.h"

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
 * Return: 0; -EINVAL (bad @type or @flags), -ENOENT (no channel
 * @id: never created, or destroyed), -ENOSPC (full), -EMSGSIZE (larger than a sub-buffer holds).
 */
__bpf_kfunc int relay_kfunc_write(u32 id, u32 type, const void *data, u32 data__sz,
				  u64 flags)
{
	struct relay_chan *ch;
	int r = -ENOENT;

	if (type > U16_MAX || (flags & ~RELAY_KFUNC_WAKEUP))
		return -EINVAL;
	/* A preemption-off region is an RCU read-side critical section:
	 * destroy's synchronize_rcu() waits for it (no rcu_read_lock calls
	 * on the path of every record). */
	preempt_disable_notrace();
	ch = relay_chan_by_id(id);
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

	preempt_disable_notrace();
	ch = relay_chan_by_id(id);
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

int relay_bpf_register(void)
{
	int err = register_btf_kfunc_id_set(BPF_PROG_TYPE_TRACING, &relay_kfunc_set);

	if (!err)
		err = register_btf_kfunc_id_set(BPF_PROG_TYPE_KPROBE, &relay_kfunc_set);
	return err;
}
