// SPDX-License-Identifier: GPL-2.0
/*
 * RELAY_IOC_LOAD, the load generator: a kthread per online CPU writes
 * checked payloads; optionally a hard-IRQ hrtimer per CPU writes too, nested
 * in the kthread's writes, and sends an NMI to the next CPU, whose handler
 * writes one more, nested in either.
 *
 * A CPU-local writer writes its own CPU's buffer only: relay-core's
 * per-CPU writers use CPU-local atomics that another CPU must not mix with.
 * CPU hotplug moves a bound kthread (not a per-CPU one) and a pinned
 * hrtimer off a CPU that goes down, so each writer checks where it runs: a
 * kthread that finds itself elsewhere cancels its timer and returns; a
 * timer that fires elsewhere stops. A running load is an instance of a
 * CPUHP_AP_ONLINE_DYN state whose startup callback, when a CPU of the load
 * comes back, reaps the old kthread and starts a new one, bound before it
 * first runs, that goes on where the old one stopped. No writer ever
 * changes its own affinity, and nothing waits for a kthread on a CPU that
 * is going down. An NMI is sent only to an online CPU.
 */
#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/completion.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <asm/apic.h>
#include <asm/nmi.h>

#include "relay_glue.h"
#include "relay_uapi.h"

#define RELAY_LOAD_TICK_NS	(100 * NSEC_PER_USEC)
#define RELAY_SOURCE_TASK	0
#define RELAY_SOURCE_IRQ	1
#define RELAY_SOURCE_NMI	2

struct relay_load_ctx;

struct relay_load_cpu {
	struct relay_load_ctx *ctx;
	struct task_struct *task;	/* its kthread (a reference held) */
	struct hrtimer timer;
	u32 cpu;
	u32 nmi_target;
	unsigned long nmi_armed;	/* bit 0: an NMI was sent to this CPU */
	u64 attempted, written;		/* task */
	u64 irq_seq, irq_written;	/* touched only by the timer, on this CPU */
	u64 nmi_seq, nmi_written;	/* touched only by NMIs on this CPU */
	void *buf_task, *buf_irq, *buf_nmi;	/* NULL: not a CPU of this load */
	bool timer_on;
	bool finished;			/* every record attempted: no restart */
};

struct relay_load_ctx {
	struct relay_chan *ch;
	struct relay_load args;
	u32 irq_size;			/* IRQ and NMI payloads: capped */
	u64 t0;				/* the rate's clock, across restarts */
	atomic_t running;		/* CPUs not finished */
	struct completion done;		/* all finished, or a restart failed */
	int restart_err;		/* a CPU coming back could not restart */
	bool live;			/* started: CPUs coming and going matter */
	struct hlist_node hotplug;	/* in relay_load_hotplug's instances */
	struct relay_load_cpu cpu[];	/* [nr_cpu_ids] */
};

/* The CPU hotplug state whose instances are the running loads. */
static enum cpuhp_state relay_load_hotplug;

/* The load whose NMIs the handler serves; one load with NMIs at a time. */
static struct relay_load_ctx *relay_nmi_load;
static DEFINE_MUTEX(relay_nmi_lock);

/*
 * Called by the NMI handler after its own write, so that a BPF program
 * attached here (fentry) runs in NMI context: under TCG there is no PMU to
 * raise NMIs for perf-event programs.
 */
noinline void relay_nmi_hook(u32 cpu, u64 seq);
noinline void relay_nmi_hook(u32 cpu, u64 seq)
{
	asm volatile("" : : "r"(cpu), "r"(seq) : "memory");
}

static void relay_load_one(struct relay_load_ctx *ctx, struct relay_load_cpu *lc,
			   u32 source, u64 *seq, u64 *written, void *buf, u32 size)
{
	int r = relay_rust_load_write(ctx->ch->k, lc->cpu, source, *seq, buf, size);

	*seq += 1;
	if (r >= 0)
		*written += 1;
	relay_written(ctx->ch, r);
}

/*
 * Claims an NMI only if this CPU was sent one (its armed bit), as the
 * kernel's own NMI backtrace does. The sender arms a CPU at most once
 * before its NMI is handled, so NMIs that coalesce in flight cannot leave
 * a stale claim behind to swallow someone else's NMI later.
 */
static int relay_load_nmi(unsigned int type, struct pt_regs *regs)
{
	struct relay_load_ctx *ctx = READ_ONCE(relay_nmi_load);
	struct relay_load_cpu *lc;

	if (!ctx)
		return NMI_DONE;
	lc = &ctx->cpu[raw_smp_processor_id()];
	if (!test_and_clear_bit(0, &lc->nmi_armed))
		return NMI_DONE;	/* not ours */
	relay_load_one(ctx, lc, RELAY_SOURCE_NMI, &lc->nmi_seq,
		       &lc->nmi_written, lc->buf_nmi, ctx->irq_size);
	relay_nmi_hook(lc->cpu, lc->nmi_seq);
	return NMI_HANDLED;
}

static enum hrtimer_restart relay_load_tick(struct hrtimer *timer)
{
	struct relay_load_cpu *lc = container_of(timer, struct relay_load_cpu, timer);
	struct relay_load_ctx *ctx = lc->ctx;
	struct relay_load_cpu *target;

	/* Moved off a CPU going down: stop; its next kthread restarts it. */
	if (raw_smp_processor_id() != lc->cpu)
		return HRTIMER_NORESTART;
	relay_load_one(ctx, lc, RELAY_SOURCE_IRQ, &lc->irq_seq,
		       &lc->irq_written, lc->buf_irq, ctx->irq_size);
	target = &ctx->cpu[lc->nmi_target];
	/* cpu_online() cannot change under us: taking a CPU down stops every
	 * CPU with interrupts off (stop_machine), and we are in hard IRQ. */
	if ((ctx->args.flags & RELAY_LOAD_NMI) && lc->nmi_target != lc->cpu &&
	    cpu_online(lc->nmi_target) && !test_and_set_bit(0, &target->nmi_armed))
		__apic_send_IPI_mask(cpumask_of(lc->nmi_target), NMI_VECTOR);
	hrtimer_forward_now(timer, ns_to_ktime(RELAY_LOAD_TICK_NS));
	return HRTIMER_RESTART;
}

/* (Re)starts @lc's timer on this CPU, which must be lc->cpu. */
static void relay_load_timer_start(struct relay_load_cpu *lc)
{
	if (!lc->timer_on)
		return;
	hrtimer_cancel(&lc->timer);
	preempt_disable();
	/* Pinned: queued on this CPU, which cannot change until preempt_enable. */
	if (raw_smp_processor_id() == lc->cpu)
		hrtimer_start(&lc->timer, ns_to_ktime(RELAY_LOAD_TICK_NS),
			      HRTIMER_MODE_REL_PINNED_HARD);
	preempt_enable();
}

/*
 * One CPU's writer, bound to lc->cpu: writes there until every record is
 * attempted (then waits to be stopped) or it is stopped. Found running
 * elsewhere (its CPU went down), it returns: relay_load_cpu_up() or the
 * end of the load reaps it (its creator holds a task reference, so a
 * kthread_stop() after it returned is allowed).
 */
static int relay_load_thread(void *data)
{
	struct relay_load_cpu *lc = data;
	struct relay_load_ctx *ctx = lc->ctx;
	u64 seq = lc->attempted;

	relay_load_timer_start(lc);
	while (seq < ctx->args.records) {
		if (kthread_should_stop())
			break;
		/* Per-CPU writer: no migration in the middle of a record, and
		 * only on its own CPU. */
		preempt_disable();
		if (unlikely(raw_smp_processor_id() != lc->cpu)) {
			preempt_enable();
			break;
		}
		relay_load_one(ctx, lc, RELAY_SOURCE_TASK, &seq, &lc->written,
			       lc->buf_task, ctx->args.size);
		preempt_enable();
		lc->attempted = seq;
		if (ctx->args.rate) {
			u64 due = ctx->t0 + div64_u64(seq * NSEC_PER_SEC, ctx->args.rate);
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
	if (seq < ctx->args.records)
		return 0;
	WRITE_ONCE(lc->finished, true);
	return relay_kthread_done(&ctx->running, &ctx->done);
}

/* Creates @lc's kthread, bound to its CPU, and takes a reference to it
 * (see relay_load_thread()); the caller wakes it. */
static int relay_load_create(struct relay_load_cpu *lc)
{
	struct task_struct *t;

	t = kthread_create_on_cpu(relay_load_thread, lc, lc->cpu, "relay_load/%u");
	if (IS_ERR(t))
		return PTR_ERR(t);
	get_task_struct(t);
	lc->task = t;
	return 0;
}

/* Stops @lc's kthread (at once if it returned already) and drops it. */
static void relay_load_reap(struct relay_load_cpu *lc)
{
	if (!lc->task)
		return;
	kthread_stop(lc->task);
	put_task_struct(lc->task);
	lc->task = NULL;
}

/*
 * A CPU of a running load came back (hotplug callbacks run one at a time,
 * on that CPU, under the hotplug lock that relay_load()'s start holds for
 * reading): reap the kthread its going down pushed off (it returned, or
 * returns at its next record: it runs elsewhere) and go on writing there.
 * A failure ends the load with the error instead of failing the CPU.
 */
static int relay_load_cpu_up(unsigned int cpu, struct hlist_node *node)
{
	struct relay_load_ctx *ctx = hlist_entry(node, struct relay_load_ctx, hotplug);
	struct relay_load_cpu *lc = &ctx->cpu[cpu];
	int err;

	if (!ctx->live || !lc->buf_task || READ_ONCE(lc->finished))
		return 0;
	relay_load_reap(lc);
	/* Reaped: lc->finished is final (the thread set it before exiting). */
	if (lc->finished)
		return 0;
	err = relay_load_create(lc);
	if (err) {
		WRITE_ONCE(ctx->restart_err, err);
		complete(&ctx->done);
		return 0;
	}
	wake_up_process(lc->task);
	return 0;
}

static void relay_load_free(struct relay_load_ctx *ctx)
{
	u32 cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		kvfree(ctx->cpu[cpu].buf_task);
		kvfree(ctx->cpu[cpu].buf_irq);
		kvfree(ctx->cpu[cpu].buf_nmi);
	}
	kvfree(ctx);
}

/* Payload buffers for the CPUs online now, each as large as its source
 * writes. */
static int relay_load_alloc(struct relay_load_ctx *ctx)
{
	const gfp_t gfp = GFP_KERNEL_ACCOUNT;
	u32 cpu;

	for_each_online_cpu(cpu) {
		struct relay_load_cpu *lc = &ctx->cpu[cpu];

		lc->buf_task = kvmalloc(ctx->args.size, gfp);
		if (!lc->buf_task)
			return -ENOMEM;
		if (ctx->args.flags & (RELAY_LOAD_IRQ | RELAY_LOAD_NMI)) {
			lc->buf_irq = kmalloc(ctx->irq_size, gfp);
			if (!lc->buf_irq)
				return -ENOMEM;
		}
		if (ctx->args.flags & RELAY_LOAD_NMI) {
			lc->buf_nmi = kmalloc(ctx->irq_size, gfp);
			if (!lc->buf_nmi)
				return -ENOMEM;
		}
	}
	return 0;
}

/* After the timers stopped: lets NMIs in flight land, then unpublishes the
 * load (NMI handlers are RCU readers: none uses it after this). */
static void relay_load_nmi_end(struct relay_load_ctx *ctx)
{
	unsigned int spins = 0;
	u32 cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		while (test_bit(0, &ctx->cpu[cpu].nmi_armed) && spins++ < 100000)
			udelay(10);
	mutex_lock(&relay_nmi_lock);
	WRITE_ONCE(relay_nmi_load, NULL);
	mutex_unlock(&relay_nmi_lock);
	synchronize_rcu();
}

long relay_load(struct relay_chan *ch, void __user *uarg)
{
	struct relay_load_ctx *ctx;
	struct relay_load a;
	bool nmi, hotplug;
	u32 cpu, prev = nr_cpu_ids, started = 0;
	long err = 0;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.reserved || a.records > (1ULL << 32) || a.size < 32 ||
	    a.size > 65536 || (a.flags & ~(RELAY_LOAD_IRQ | RELAY_LOAD_NMI)))
		return -EINVAL;
	nmi = a.flags & RELAY_LOAD_NMI;
	ctx = kvzalloc(struct_size(ctx, cpu, nr_cpu_ids), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	ctx->ch = ch;
	ctx->args = a;
	ctx->irq_size = min_t(u32, a.size, RELAY_LOAD_IRQ_SIZE_MAX);
	init_completion(&ctx->done);
	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		ctx->cpu[cpu].ctx = ctx;
		ctx->cpu[cpu].cpu = cpu;
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
	/* An instance before the CPUs are counted, so that no CPU can come or
	 * go unseen; its callbacks do nothing until the load is live. */
	err = cpuhp_state_add_instance_nocalls(relay_load_hotplug, &ctx->hotplug);
	hotplug = !err;
	cpus_read_lock();
	if (!err)
		err = relay_load_alloc(ctx);
	/* Each CPU's timer sends its NMIs to the next online CPU. */
	for_each_online_cpu(cpu) {
		if (prev < nr_cpu_ids)
			ctx->cpu[prev].nmi_target = cpu;
		prev = cpu;
	}
	if (prev < nr_cpu_ids)
		ctx->cpu[prev].nmi_target = cpumask_first(cpu_online_mask);
	ctx->t0 = ktime_get_ns();
	for_each_online_cpu(cpu) {
		struct relay_load_cpu *lc = &ctx->cpu[cpu];

		if (err)
			break;
		if (a.flags & (RELAY_LOAD_IRQ | RELAY_LOAD_NMI)) {
			hrtimer_init(&lc->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
			lc->timer.function = relay_load_tick;
			lc->timer_on = true;
		}
		err = relay_load_create(lc);
		if (err)
			break;
		atomic_inc(&ctx->running);
		started++;
	}
	ctx->live = !err;
	for_each_online_cpu(cpu)
		if (ctx->cpu[cpu].task)
			wake_up_process(ctx->cpu[cpu].task);
	cpus_read_unlock();
	/* Wait only for the threads that started; a signal stops them. Asleep
	 * interruptibly: a long load is not a hung task. */
	if (started && !err && wait_for_completion_interruptible(&ctx->done))
		err = -EINTR;
	if (!err)
		err = READ_ONCE(ctx->restart_err);
	/* Out of the instances first: then no CPU coming or going touches a
	 * task pointer while they are stopped. */
	if (hotplug)
		cpuhp_state_remove_instance_nocalls(relay_load_hotplug, &ctx->hotplug);
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		relay_load_reap(&ctx->cpu[cpu]);
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		if (ctx->cpu[cpu].timer_on)
			hrtimer_cancel(&ctx->cpu[cpu].timer);
	a.elapsed_ns = ktime_get_ns() - ctx->t0;
	if (nmi)
		relay_load_nmi_end(ctx);
	relay_flush_all(ch);
	a.cpus = started;
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

int relay_load_register(void)
{
	int ret;

	ret = cpuhp_setup_state_multi(CPUHP_AP_ONLINE_DYN, "relay/load:online",
				      relay_load_cpu_up, NULL);
	if (ret < 0)
		return ret;
	relay_load_hotplug = ret;
	ret = register_nmi_handler(NMI_LOCAL, relay_load_nmi, 0, "relay_load");
	if (ret)
		cpuhp_remove_multi_state(relay_load_hotplug);
	return ret;
}

void relay_load_unregister(void)
{
	unregister_nmi_handler(NMI_LOCAL, "relay_load");
	cpuhp_remove_multi_state(relay_load_hotplug);
}
