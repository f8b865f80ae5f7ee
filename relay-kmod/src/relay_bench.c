// SPDX-License-Identifier: GPL-2.0
/*
 * RELAY_IOC_BENCH: relay-kmod's writer against the kernel's relay_write()
 * and relay_reserve() in the same kthreads, and what each clock a channel
 * can be stamped with costs to read.
 */
#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/relay.h>
#include <linux/sched/clock.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/msr.h>

#include "relay_glue.h"
#include "relay_uapi.h"

/*
 * The benchmark: relay-kmod's writer against relay_write(), set up the way
 * relay's users (blktrace) do: per-CPU files in debugfs.
 */
static struct dentry *relay_bench_create_buf_file(const char *filename,
						  struct dentry *parent,
						  umode_t mode,
						  struct rchan_buf *buf,
						  int *is_global)
{
	return debugfs_create_file(filename, mode, parent, buf,
				   &relay_file_operations);
}

static int relay_bench_remove_buf_file(struct dentry *dentry)
{
	debugfs_remove(dentry);
	return 0;
}

/* Flight mode, as relay-kmod's overwrite channel: never refuse. */
static int relay_bench_subbuf_start(struct rchan_buf *buf, void *subbuf,
				    void *prev_subbuf, size_t prev_padding)
{
	return 1;
}

static const struct rchan_callbacks relay_bench_callbacks = {
	.subbuf_start = relay_bench_subbuf_start,
	.create_buf_file = relay_bench_create_buf_file,
	.remove_buf_file = relay_bench_remove_buf_file,
};

struct relay_bench_ctx {
	struct relay_bench args;
	void *k;
	struct rchan *rchan;
	atomic_t running;
	struct completion done;
	atomic64_t kmod_ns, relay_ns, reserve_ns;
	atomic64_t clock_ns[RELAY_BENCH_CLOCKS];
	struct task_struct *task[];
};

/* A clock by its RELAY_CLOCK_* code, as relay_main.rs reads it. */
static __always_inline u64 relay_bench_now(u32 clock)
{
	switch (clock) {
	case RELAY_CLOCK_LOCAL:
		return local_clock();
	case RELAY_CLOCK_TSC:
		return rdtsc();
	default:
		return ktime_get_mono_fast_ns();
	}
}

/* What one read of each clock costs here: `records` reads of each. */
static void relay_bench_clocks(struct relay_bench_ctx *ctx)
{
	static const u32 clocks[RELAY_BENCH_CLOCKS] = {
		RELAY_CLOCK_MONOTONIC, RELAY_CLOCK_LOCAL, RELAY_CLOCK_TSC,
	};
	u64 i, t, sink = 0;
	u32 c;

	for (c = 0; c < RELAY_BENCH_CLOCKS; c++) {
		preempt_disable();
		t = ktime_get_ns();
		for (i = 0; i < ctx->args.records; i++)
			sink += relay_bench_now(clocks[c]);
		t = ktime_get_ns() - t;
		preempt_enable();
		atomic64_add(t, &ctx->clock_ns[c]);
	}
	/* Keep the reads. */
	OPTIMIZER_HIDE_VAR(sink);
}

/* Every 4096 records: has the caller been killed (kthread_stop)? */
#define relay_bench_stopped(i) \
	unlikely(((i) & 4095) == 4095 && kthread_should_stop())

/* Each kthread runs the three writers this many times, interleaved, and
 * keeps each one's fastest round: TCG's speed drifts between phases. */
#define RELAY_BENCH_ROUNDS	3

static int relay_bench_thread(void *data)
{
	struct relay_bench_ctx *ctx = data;
	u32 size = ctx->args.size;
	u64 i, t0, t1, t2, t3, best[3] = { U64_MAX, U64_MAX, U64_MAX };
	void *buf = kzalloc(size, GFP_KERNEL);
	int round;

	if (!buf)
		return relay_kthread_done(&ctx->running, &ctx->done);
	for (round = 0; round < RELAY_BENCH_ROUNDS; round++) {
		/* Between timed loops: a signal to the caller stops us. */
		if (kthread_should_stop())
			break;
		cond_resched();
		t0 = ktime_get_ns();
		for (i = 0; i < ctx->args.records; i++) {
			preempt_disable();
			relay_rust_write(ctx->k, raw_smp_processor_id(), 1, buf, size);
			preempt_enable();
			if (relay_bench_stopped(i))
				break;
		}
		t1 = ktime_get_ns();
		for (i = 0; i < ctx->args.records; i++) {
			relay_write(ctx->rchan, buf, size);
			if (relay_bench_stopped(i))
				break;
		}
		t2 = ktime_get_ns();
		for (i = 0; i < ctx->args.records; i++) {
			unsigned long flags;
			u64 *p;

			local_irq_save(flags);
			p = relay_reserve(ctx->rchan, 16 + size);
			if (p) {
				p[0] = (16 + size) | 1ULL << 32;
				p[1] = relay_bench_now(ctx->args.clock);
				memcpy(p + 2, buf, size);
			}
			local_irq_restore(flags);
			if (relay_bench_stopped(i))
				break;
		}
		t3 = ktime_get_ns();
		best[0] = min(best[0], t1 - t0);
		best[1] = min(best[1], t2 - t1);
		best[2] = min(best[2], t3 - t2);
	}
	if (round == RELAY_BENCH_ROUNDS)
		relay_bench_clocks(ctx);
	atomic64_add(best[0], &ctx->kmod_ns);
	atomic64_add(best[1], &ctx->relay_ns);
	atomic64_add(best[2], &ctx->reserve_ns);
	kfree(buf);
	return relay_kthread_done(&ctx->running, &ctx->done);
}

long relay_bench(void __user *uarg)
{
	struct relay_bench_ctx *ctx;
	u64 total = 0, consumer_offset, consumer_size;
	u32 cpus, cpu, want, max_payload;
	struct page **pages = NULL;
	void *mem = NULL;
	long err;

	ctx = kvzalloc(struct_size(ctx, task, nr_cpu_ids), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	err = -EFAULT;
	if (copy_from_user(&ctx->args, uarg, sizeof(ctx->args)))
		goto out;
	err = -EINVAL;
	if (ctx->args.records > (1ULL << 26) || ctx->args.size < 8 ||
	    ctx->args.reserved ||
	    (ctx->args.clock && ctx->args.clock != RELAY_CLOCK_MONOTONIC &&
	     ctx->args.clock != RELAY_CLOCK_LOCAL &&
	     ctx->args.clock != RELAY_CLOCK_TSC) ||
	    ctx->args.size > 4096 || ctx->args.size % 8 ||
	    ctx->args.size > ctx->args.subbuf_size / 2)
		goto out;
	err = relay_rust_geometry(ctx->args.subbuf_size, ctx->args.subbuf_count,
				  RELAY_FLAG_OVERWRITE | RELAY_FLAG_CLOCK(ctx->args.clock),
				  &total, &consumer_offset,
				  &consumer_size, &cpus, &max_payload);
	if (err)
		goto out;
	err = -E2BIG;
	if (total > (1ULL << 30))
		goto out;
	err = -ENOMEM;
	mem = relay_mem_alloc(total, &pages);
	if (!mem)
		goto out;
	err = relay_rust_channel_new(mem, total, ctx->args.subbuf_size,
				     ctx->args.subbuf_count,
				     RELAY_FLAG_OVERWRITE | RELAY_FLAG_CLOCK(ctx->args.clock),
				     &ctx->k);
	if (err)
		goto out;
	err = -ENOMEM;
	ctx->rchan = relay_open("relay_bench", NULL, ctx->args.subbuf_size,
				ctx->args.subbuf_count ?: 8,
				&relay_bench_callbacks, NULL);
	if (!ctx->rchan)
		goto out;
	init_completion(&ctx->done);
	err = 0;
	cpus_read_lock();
	want = ctx->args.cpus;
	ctx->args.cpus = 0;
	for_each_online_cpu(cpu) {
		struct task_struct *t;

		if (want && ctx->args.cpus == want)
			break;
		t = kthread_create_on_cpu(relay_bench_thread, ctx, cpu,
					  "relay_bench/%u");

		if (IS_ERR(t)) {
			err = PTR_ERR(t);
			break;
		}
		ctx->task[cpu] = t;
		atomic_inc(&ctx->running);
		ctx->args.cpus++;
	}
	for_each_online_cpu(cpu)
		if (ctx->task[cpu])
			wake_up_process(ctx->task[cpu]);
	cpus_read_unlock();
	/* Wait only for the threads that started; a signal stops them. Asleep
	 * interruptibly: a long load is not a hung task. */
	if (ctx->args.cpus && !err && wait_for_completion_interruptible(&ctx->done))
		err = -EINTR;
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		if (ctx->task[cpu])
			kthread_stop(ctx->task[cpu]);
	ctx->args.relay_kmod_ns = atomic64_read(&ctx->kmod_ns);
	ctx->args.relay_write_ns = atomic64_read(&ctx->relay_ns);
	ctx->args.relay_reserve_ns = atomic64_read(&ctx->reserve_ns);
	for (cpu = 0; cpu < RELAY_BENCH_CLOCKS; cpu++)
		ctx->args.clock_ns[cpu] = atomic64_read(&ctx->clock_ns[cpu]);
	if (!err && copy_to_user(uarg, &ctx->args, sizeof(ctx->args)))
		err = -EFAULT;
out:
	if (ctx->rchan)
		relay_close(ctx->rchan);
	if (ctx->k)
		relay_rust_channel_free(ctx->k);
	relay_mem_free(mem, pages, total);
	kvfree(ctx);
	return err;
}
