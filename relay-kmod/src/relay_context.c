// SPDX-License-Identifier: GPL-2.0
/*
 * Contexts for relay-kmod: which CPU this is, cross-CPU calls, the flush
 * of one CPU's buffer (on that CPU, by IPI), the self-test's nested
 * writers (a work item per CPU with a hard-IRQ hrtimer firing into it) and
 * the end of the module's kthreads.
 */
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/workqueue.h>

#include "relay_glue.h"

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

	ws = kvzalloc(struct_size(ws, w, nr_cpu_ids), GFP_KERNEL);
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
	kvfree(ws);
}

/* ------------------------------------------------------------------------
 * Flushes: closing a CPU's open sub-buffer so readers see its records.
 */

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
 * offline. cpus_read_lock() holds hotplug off: an offline CPU stays dead
 * (cpu_down returns only after the CPU stopped running code), so no writer
 * runs on it. Process context. Returns 1 if that sealed a sub-buffer, 0 if
 * not, or a negative errno.
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

void relay_flush_all(struct relay_chan *ch)
{
	u64 barrier, next;
	u32 cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		relay_written(ch, relay_glue_flush_cpu(ch->k, cpu, &barrier, &next));
}

/*
 * The end of a load or benchmark kthread: the last one completes @done;
 * each then lives until kthread_stop(), so the stopper never races its
 * exit.
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
