// SPDX-License-Identifier: GPL-2.0
/*
 * Channel files: /dev/relay/NAME (all CPUs, cpu = -1) and
 * /dev/relay/NAME.cpuN (one CPU). read() consumes merged frames, write()
 * writes a record, poll() waits for sealed sub-buffers, mmap() maps the
 * channel (writable only in the consumer region), ioctl() flushes, reports
 * statistics and runs the load generator.
 *
 * Consumers exclude each other with open-file-description locks on their
 * CPUs' consumer state (FORMAT.md, "Readers"): the same claims for read()
 * consumers here and for mapped consumers in userspace.
 */
#include <linux/capability.h>
#include <linux/filelock.h>
#include <linux/fs.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "relay_glue.h"
#include "relay_kmod.h"
#include "relay_uapi.h"

#define RELAY_STAGING	PAGE_SIZE

struct relay_file {
	struct relay_chan *ch;
	s32 cpu;
	struct mutex lock;		/* the reader and the staging page */
	void *reader;			/* Rust, created on first read */
	void *staging;
};

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
	rf = kzalloc(sizeof(*rf), GFP_KERNEL_ACCOUNT);
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
 * consumer state, so that read() consumers and mapped ones exclude each
 * other. The kernel drops it when the file is closed. Returns 0 or -EBUSY.
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

/*
 * Each write() is one record of type 1 on the current CPU; EMSGSIZE, before
 * anything is copied, if it is larger than the channel's records can be.
 */
static ssize_t relay_chan_write_file(struct file *file, const char __user *buf,
				     size_t count, loff_t *ppos)
{
	struct relay_file *rf = file->private_data;
	void *data;
	int r;

	if (count > rf->ch->max_payload)
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
		/* It writes into the channel: write access, as for write(). */
		if (!(file->f_mode & FMODE_WRITE))
			return -EBADF;
		if (!capable(CAP_SYS_ADMIN))
			return -EPERM;
		return relay_load(ch, uarg);
	default:
		return -ENOTTY;
	}
}

const struct file_operations relay_chan_fops = {
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
const struct file_operations relay_cpu_fops = {
	.owner = THIS_MODULE,
	.open = relay_chan_open,
	.release = relay_chan_release,
	.read = relay_chan_read,
	.poll = relay_chan_poll,
	.unlocked_ioctl = relay_chan_ioctl,
};
