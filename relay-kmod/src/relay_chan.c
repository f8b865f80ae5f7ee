// SPDX-License-Identifier: GPL-2.0
/*
 * Channels: the registry, their memory and lifetimes (see relay_glue.h),
 * the in-kernel writing API (relay_kmod.h), and /dev/relay/control, which
 * creates and destroys them and runs the benchmark.
 *
 * Every decision about a channel's bytes (geometry, layout, writing,
 * reading, merging, verifying) is made by relay-core through the Rust side
 * (relay_main.rs); the C files move pointers, bytes and control between
 * the kernel and it.
 */
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "relay_glue.h"
#include "relay_kmod.h"
#include "relay_uapi.h"

static DEFINE_MUTEX(relay_lock);
static LIST_HEAD(relay_chans);
struct relay_chan __rcu *relay_ids[RELAY_MAX_CHANNELS];
/* The next channel number (under relay_lock): numbers only grow, so a BPF
 * program still holding a destroyed channel's number never writes into a
 * newer channel. 0 names no channel. */
static u32 relay_next_id = 1;

void *relay_mem_alloc(u64 size, struct page ***pagesp)
{
	/* Charged to the creator's memory cgroup; fails instead of invoking
	 * the OOM killer, and fails early when the memory is plainly not
	 * there (as the ftrace ring buffer checks). */
	const gfp_t gfp = GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_ZERO |
			  __GFP_NOWARN;
	unsigned long n = size >> PAGE_SHIFT, i;
	long avail = si_mem_available();
	struct page **pages;
	void *mem;

	if (size % PAGE_SIZE || !n || avail < 0 || n > (unsigned long)avail)
		return NULL;
	pages = kvcalloc(n, sizeof(*pages), GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (!pages)
		return NULL;
	for (i = 0; i < n; i++) {
		pages[i] = alloc_page(gfp);
		if (!pages[i])
			goto fail;
		cond_resched();
	}
	/* VM_USERMAP: remap_vmalloc_range() maps it (as BPF's ring buffer). */
	mem = vmap(pages, n, VM_MAP | VM_USERMAP, PAGE_KERNEL);
	if (!mem)
		goto fail;
	*pagesp = pages;
	return mem;
fail:
	while (i--)
		__free_page(pages[i]);
	kvfree(pages);
	return NULL;
}

void relay_mem_free(void *mem, struct page **pages, u64 size)
{
	unsigned long i;

	if (!mem)
		return;
	vunmap(mem);
	for (i = 0; i < size >> PAGE_SHIFT; i++)
		__free_page(pages[i]);
	kvfree(pages);
}

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
	relay_mem_free(ch->mem, ch->pages, ch->size);
	kvfree(ch->cpu);
	kfree(ch);
}

/**
 * relay_chan_put() - drop a reference taken by relay_chan_get()
 * @ch: the channel
 *
 * Context: process context: the last reference frees the channel, which
 * waits for its wakeup (irq_work_sync) and unmaps its memory.
 */
void relay_chan_put(struct relay_chan *ch)
{
	might_sleep();
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
 * The control device: create, destroy, benchmark.
 */

/* 1..31 of [A-Za-z0-9_-] (ASCII: the kernel's isalnum() would take
 * Latin-1 letters too), NUL-terminated, zero-padded; not "control". */
static int relay_check_name(const char name[RELAY_NAME_MAX])
{
	size_t len = strnlen(name, RELAY_NAME_MAX), i;

	if (len == RELAY_NAME_MAX)
		return -ENAMETOOLONG;
	if (!len || !strcmp(name, "control"))
		return -EINVAL;
	for (i = 0; i < len; i++) {
		char c = name[i];

		if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
		    !(c >= '0' && c <= '9') && c != '_' && c != '-')
			return -EINVAL;
	}
	for (; i < RELAY_NAME_MAX; i++)
		if (name[i])
			return -EINVAL;
	return 0;
}

/* Under relay_lock: the names go, the memory stays while it is in use. */
static void relay_unregister_chan(struct relay_chan *ch)
{
	u32 cpu, slot = ch->id % RELAY_MAX_CHANNELS;

	list_del(&ch->node);
	if (rcu_access_pointer(relay_ids[slot]) == ch) {
		RCU_INIT_POINTER(relay_ids[slot], NULL);
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

/* Under relay_lock: a number never given before whose slot is free. */
static int relay_new_id(u32 *id)
{
	u32 tries;

	for (tries = 0; tries < RELAY_MAX_CHANNELS; tries++) {
		u32 n = relay_next_id;

		if (n == U32_MAX)
			return -ENOSPC;	/* 4 billion channels this boot */
		relay_next_id = n + 1;
		if (!rcu_access_pointer(relay_ids[n % RELAY_MAX_CHANNELS])) {
			*id = n;
			return 0;
		}
	}
	return -ENOSPC;
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
	ch = kzalloc(sizeof(*ch), GFP_KERNEL_ACCOUNT);
	if (!ch)
		return -ENOMEM;
	err = relay_rust_geometry(c.subbuf_size, c.subbuf_count, c.flags,
				  &c.total_size, &consumer_offset,
				  &consumer_size, &c.cpu_count, &ch->max_payload);
	if (err) {
		kfree(ch);
		return err;
	}
	/* A channel is kernel memory: at most 1 GiB of it. */
	if (c.total_size > (1ULL << 30)) {
		kfree(ch);
		return -E2BIG;
	}
	kref_init(&ch->ref);
	INIT_LIST_HEAD(&ch->node);
	init_waitqueue_head(&ch->wq);
	init_irq_work(&ch->wake, relay_wake);
	memcpy(ch->name, c.name, RELAY_NAME_MAX);
	ch->size = c.total_size;
	ch->consumer_offset = consumer_offset;
	ch->consumer_end = consumer_offset + consumer_size;
	ch->cpu = kvcalloc(nr_cpu_ids, sizeof(*ch->cpu), GFP_KERNEL_ACCOUNT);
	ch->mem = relay_mem_alloc(c.total_size, &ch->pages);
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
	err = relay_new_id(&c.id);
	if (err) {
		mutex_unlock(&relay_lock);
		relay_chan_put(ch);
		return err;
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
		rcu_assign_pointer(relay_ids[ch->id % RELAY_MAX_CHANNELS], ch);
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
	int err = relay_bpf_register();

	if (err)
		return err;
	err = relay_load_register();
	if (err)
		return err;
	err = misc_register(&relay_control);
	if (err)
		relay_load_unregister();
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
	relay_load_unregister();
}
