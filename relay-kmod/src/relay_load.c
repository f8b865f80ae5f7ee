// SPDX-License-Identifier: GPL-2.0
/*
 * RELAY_IOC_LOAD, the load generator: a kthread per online CPU writes
 * checked payloads; optionally a hard-IRQ hrtimer per CPU writes too, nested
 * in the kthread's writes, and sends an NMI to the next CPU, whose handler
 * writes one more, nested in either.
 *
 * A CPU-local writer writes its own CPU's buffer only: relay-core's
 * per-CPU writers use CPU-local atomics that another CPU must not mix with.
 * CPU hotplug moves a bound kthread and a pinned hrtimer off a CPU that
 * goes down, so each writer checks where it runs: a kthread that finds
 * itself elsewhere waits for its CPU to come back and binds to it again
 * (restarting its timer there); a timer that fires elsewhere stops. An
 * NMI is sent only to an online CPU.
 */
#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/completion.h>
#include <linux/cpu.h>
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
	struct task_struct *task;
	struct hrtimer timer;
	u32 cpu;
	u32 nmi_target;
	unsigned long nmi_armed;	/* bit 0: an NMI was sent to this CPU */
	u64 attempted, written;		/* task */
	u64 irq_seq, irq_written;	/* touched only by the timer, on this CPU */
	u64 nmi_seq, nmi_written;	/* touched only by NMIs on this CPU */
	void *buf_task, *buf_irq, *buf_nmi;
	bool timer_on;
};

struct relay_load_ctx {
	struct relay_chan *ch;
	struct relay_load args;
	u32 irq_size;			/* IRQ and NMI payloads: capped */
	atomic_t running;
	struct completion done;
	struct relay_load_cpu cpu[];	/* [nr_cpu_ids] */
};

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

	/* Migrated by an offlined CPU: stop; the kthread restarts it at home. */
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
 * The kthread runs off its CPU (which went offline): wait until the CPU
 * is back and move there again. False if told to stop meanwhile.
 */
static bool relay_load_rehome(struct relay_load_cpu *lc)
{
	while (!kthread_should_stop()) {
		if (cpu_online(lc->cpu) &&
		    !set_cpus_allowed_ptr(current, cpumask_of(lc->cpu)) &&
		    raw_smp_processor_id() == lc->cpu) {
			relay_load_timer_start(lc);
			return true;
		}
		schedule_timeout_interruptible(msecs_to_jiffies(5));
	}
	return false;
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
		relay_load_timer_start(lc);
	}
	for (seq = 0; lc->attempted < ctx->args.records;) {
		if (kthread_should_stop())
			break;
		/* Per-CPU writer: no migration in the middle of a record, and
		 * only on its own CPU. */
		preempt_disable();
		if (unlikely(raw_smp_processor_id() != lc->cpu)) {
			preempt_enable();
			if (!relay_load_rehome(lc))
				break;
			continue;
		}
		relay_load_one(ctx, lc, RELAY_SOURCE_TASK, &seq, &lc->written,
			       lc->buf_task, ctx->args.size);
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
	bool nmi;
	u64 t0;
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
	cpus_read_lock();
	err = relay_load_alloc(ctx);
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

		if (err)
			break;
		t = kthread_create_on_cpu(relay_load_thread, lc, cpu, "relay_load/%u");
		if (IS_ERR(t)) {
			err = PTR_ERR(t);
			break;
		}
		lc->task = t;
		atomic_inc(&ctx->running);
		started++;
	}
	for_each_online_cpu(cpu)
		if (ctx->cpu[cpu].task)
			wake_up_process(ctx->cpu[cpu].task);
	cpus_read_unlock();
	/* Wait only for the threads that started; a signal stops them. Asleep
	 * interruptibly: a long load is not a hung task. */
	if (started && !err && wait_for_completion_interruptible(&ctx->done))
		err = -EINTR;
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		if (ctx->cpu[cpu].task)
			kthread_stop(ctx->cpu[cpu].task);
	a.elapsed_ns = ktime_get_ns() - t0;
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
	return register_nmi_handler(NMI_LOCAL, relay_load_nmi, 0, "relay_load");
}

void relay_load_unregister(void)
{
	unregister_nmi_handler(NMI_LOCAL, "relay_load");
}
