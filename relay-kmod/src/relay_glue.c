// SPDX-License-Identifier: GPL-2.0
/*
 * Thin C glue for relay-kmod, for what Linux 6.12 has no Rust abstraction
 * for: cross-CPU calls, the current CPU id, the NMI-safe monotonic clock
 * (static inlines and macros bindgen cannot export), and the misc device
 * /dev/relay with its ioctl and mmap (misc device and VMA abstractions came
 * in 6.13 and later). Every decision about a channel (geometry, layout,
 * writing) is made by the Rust side, through relay-core.
 */
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/overflow.h>
#include <linux/preempt.h>
#include <linux/workqueue.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/timekeeping.h>
#include <linux/types.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "relay_uapi.h"

void relay_glue_on_each_cpu(smp_call_func_t func, void *info);
u32 relay_glue_this_cpu(void);
u32 relay_glue_nr_cpu_ids(void);
u32 relay_glue_num_online_cpus(void);
u64 relay_glue_clock_ns(void);
int relay_glue_register(void);
struct relay_glue_works;
struct relay_glue_works *relay_glue_works_start(void (*fn)(void *),
						void (*tick)(void *), void *info,
						u64 period_ns);
void relay_glue_works_finish(struct relay_glue_works *ws);
void relay_glue_unregister(void);

/* Implemented in Rust (relay_main.rs). */
int relay_rust_geometry(u64 subbuf_size, u64 subbuf_count, u64 flags,
			u64 *total_size, u64 *consumer_offset,
			u64 *consumer_size, u32 *cpu_count);
int relay_rust_create(void *mem, u64 size, u64 subbuf_size, u64 subbuf_count,
		      u64 flags);
int relay_rust_write_test(void *mem, u64 size, u64 records);

void relay_glue_on_each_cpu(smp_call_func_t func, void *info)
{
	on_each_cpu(func, info, 1);
}

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

u64 relay_glue_clock_ns(void)
{
	return ktime_get_mono_fast_ns();
}

/*
 * Nested writers for the nesting test: one work item per online CPU runs
 * fn(info) on its CPU with preemption disabled, while a hard-IRQ hrtimer
 * pinned to the same CPU calls tick(info) every period_ns: the timer
 * interrupts the task-context writer wherever it is, mid-record included.
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

/* One channel per open file of /dev/relay. */
struct relay_file {
	struct mutex lock;
	void *mem;		/* vmalloc_user, NULL until RELAY_IOC_CREATE */
	u64 size;
	u64 consumer_offset;
	u64 consumer_end;
};

static int relay_open(struct inode *inode, struct file *file)
{
	struct relay_file *rf = kzalloc(sizeof(*rf), GFP_KERNEL);

	if (!rf)
		return -ENOMEM;
	mutex_init(&rf->lock);
	file->private_data = rf;
	return 0;
}

/* Runs once the last mapping is gone too (each VMA holds the file). */
static int relay_release(struct inode *inode, struct file *file)
{
	struct relay_file *rf = file->private_data;

	vfree(rf->mem);
	mutex_destroy(&rf->lock);
	kfree(rf);
	return 0;
}

static long relay_create(struct relay_file *rf, void __user *uarg)
{
	struct relay_create c;
	void *mem;
	int err;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.reserved)
		return -EINVAL;
	err = relay_rust_geometry(c.subbuf_size, c.subbuf_count, c.flags,
				  &c.total_size, &c.consumer_offset,
				  &c.consumer_size, &c.cpu_count);
	if (err)
		return err;
	if (c.total_size > ULONG_MAX)
		return -EINVAL;

	mutex_lock(&rf->lock);
	if (rf->mem) {
		err = -EBUSY;
		goto out;
	}
	/* Zeroed, page-aligned, and marked for remap_vmalloc_range(). */
	mem = vmalloc_user(c.total_size);
	if (!mem) {
		err = -ENOMEM;
		goto out;
	}
	err = relay_rust_create(mem, c.total_size, c.subbuf_size,
				c.subbuf_count, c.flags);
	if (err) {
		vfree(mem);
		goto out;
	}
	rf->mem = mem;
	rf->size = c.total_size;
	rf->consumer_offset = c.consumer_offset;
	rf->consumer_end = c.consumer_offset + c.consumer_size;
out:
	mutex_unlock(&rf->lock);
	if (err)
		return err;
	return copy_to_user(uarg, &c, sizeof(c)) ? -EFAULT : 0;
}

static long relay_write_test(struct relay_file *rf, void __user *uarg)
{
	struct relay_write_test w;
	int err;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	mutex_lock(&rf->lock);
	err = rf->mem ? relay_rust_write_test(rf->mem, rf->size, w.records)
		      : -ENODATA;
	mutex_unlock(&rf->lock);
	return err;
}

static long relay_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct relay_file *rf = file->private_data;

	switch (cmd) {
	case RELAY_IOC_CREATE:
		return relay_create(rf, (void __user *)arg);
	case RELAY_IOC_WRITE_TEST:
		return relay_write_test(rf, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

/*
 * Maps [pgoff, pgoff + len) of the channel. Writable mappings only inside
 * the consumer region; every other mapping is read-only for good
 * (VM_MAYWRITE cleared). MAP_PRIVATE is refused: it would copy on write.
 */
static int relay_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct relay_file *rf = file->private_data;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	int err;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	mutex_lock(&rf->lock);
	if (!rf->mem) {
		err = -ENODATA;
		goto out;
	}
	if (vma->vm_pgoff > (rf->size >> PAGE_SHIFT) || len > rf->size - off) {
		err = -EINVAL;
		goto out;
	}
	if (vma->vm_flags & VM_WRITE) {
		if (off < rf->consumer_offset || off + len > rf->consumer_end) {
			err = -EPERM;
			goto out;
		}
	} else if (off < rf->consumer_offset || off + len > rf->consumer_end) {
		vm_flags_clear(vma, VM_MAYWRITE);
	}
	err = remap_vmalloc_range(vma, rf->mem, vma->vm_pgoff);
out:
	mutex_unlock(&rf->lock);
	return err;
}

static const struct file_operations relay_fops = {
	.owner = THIS_MODULE,
	.open = relay_open,
	.release = relay_release,
	.unlocked_ioctl = relay_ioctl,
	.mmap = relay_mmap,
};

static struct miscdevice relay_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "relay",
	.fops = &relay_fops,
	.mode = 0600,
};

int relay_glue_register(void)
{
	return misc_register(&relay_misc);
}

void relay_glue_unregister(void)
{
	misc_deregister(&relay_misc);
}
