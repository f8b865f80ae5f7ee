// SPDX-License-Identifier: GPL-2.0-only
/*
 * A model of Linux 6.12's relay write paths (include/linux/relay.h,
 * kernel/relay.c), for a native comparison with relay-core's writer.
 *
 * The hot paths (relay_write(), relay_reserve()) are the kernel's line for
 * line; relay_switch_subbuf() keeps every load and store the kernel does
 * except the dentry's i_size, and relay_subbuf_start() calls the channel's
 * callback through a pointer as the kernel does. Differences, all of which
 * make the model cheaper than the kernel:
 *  - local_irq_save()/restore() are compiler barriers (no pushf/cli/popf);
 *  - this_cpu_ptr() is an array index by a CPU number the caller passes;
 *  - waking readers is a flag test, never taken (no reader waits here).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>


#define unlikely(x) __builtin_expect(!!(x), 0)
#define barrier() __asm__ __volatile__("" ::: "memory")
#define local_irq_save(flags) do { (flags) = 0; barrier(); } while (0)
#define local_irq_restore(flags) do { (void)(flags); barrier(); } while (0)

struct model_rchan;

struct model_rchan_buf {
	void *start;
	void *data;
	size_t offset;
	size_t subbufs_produced;
	size_t subbufs_consumed;
	struct model_rchan *chan;
	int readers_waiting;
	size_t *padding;
	size_t prev_padding;
	size_t early_bytes;
	unsigned int cpu;
} __attribute__((aligned(64)));

struct model_rchan {
	size_t subbuf_size;
	size_t n_subbufs;
	size_t last_toobig;
	int (*subbuf_start)(struct model_rchan_buf *buf, void *subbuf,
			    void *prev_subbuf, size_t prev_padding);
	struct model_rchan_buf *buf[64];
};

/* Flight-recorder mode: every sub-buffer may be reused (the callback the
 * guest benchmark's channel uses). */
static int model_subbuf_start_overwrite(struct model_rchan_buf *buf,
					void *subbuf, void *prev_subbuf,
					size_t prev_padding)
{
	(void)buf; (void)subbuf; (void)prev_subbuf; (void)prev_padding;
	return 1;
}

__attribute__((noinline))
static void model_irq_work_queue(struct model_rchan_buf *buf)
{
	barrier();
	(void)buf;
}

/* kernel/relay.c: relay_switch_subbuf(), an exported function (a call). */
__attribute__((noinline))
size_t model_relay_switch_subbuf(struct model_rchan_buf *buf, size_t length)
{
	void *old, *new;
	size_t old_subbuf, new_subbuf;

	if (unlikely(length > buf->chan->subbuf_size))
		goto toobig;

	if (buf->offset != buf->chan->subbuf_size + 1) {
		buf->prev_padding = buf->chan->subbuf_size - buf->offset;
		old_subbuf = buf->subbufs_produced % buf->chan->n_subbufs;
		buf->padding[old_subbuf] = buf->prev_padding;
		buf->subbufs_produced++;
		buf->early_bytes += buf->chan->subbuf_size -
				    buf->padding[old_subbuf];
		__atomic_thread_fence(__ATOMIC_SEQ_CST); /* smp_mb() */
		if (buf->readers_waiting)
			model_irq_work_queue(buf);
	}

	old = buf->data;
	new_subbuf = buf->subbufs_produced % buf->chan->n_subbufs;
	new = (char *)buf->start + new_subbuf * buf->chan->subbuf_size;
	buf->offset = 0;
	if (!buf->chan->subbuf_start(buf, new, old, buf->prev_padding)) {
		buf->offset = buf->chan->subbuf_size + 1;
		return 0;
	}
	buf->data = new;
	buf->padding[new_subbuf] = 0;

	if (unlikely(length + buf->offset > buf->chan->subbuf_size))
		goto toobig;

	return length;

toobig:
	buf->chan->last_toobig = length;
	return 0;
}

/* include/linux/relay.h: relay_write(), inline in its caller. */
static inline void model_relay_write_inline(struct model_rchan *chan,
					    unsigned int cpu,
					    const void *data, size_t length)
{
	unsigned long flags;
	struct model_rchan_buf *buf;

	local_irq_save(flags);
	buf = chan->buf[cpu];
	if (unlikely(buf->offset + length > chan->subbuf_size))
		length = model_relay_switch_subbuf(buf, length);
	memcpy((char *)buf->data + buf->offset, data, length);
	buf->offset += length;
	local_irq_restore(flags);
}

/* include/linux/relay.h: relay_reserve(), then the 16-byte header a relay
 * user who timestamps records writes (len | type << 32, then the time),
 * then the payload: what relay-core's writer does per record. */
static inline void model_relay_reserve_ts_inline(struct model_rchan *chan,
						 unsigned int cpu,
						 const void *data,
						 size_t size)
{
	unsigned long flags;
	size_t length = 16 + size;
	uint64_t *p = NULL;
	struct model_rchan_buf *buf;

	local_irq_save(flags);
	buf = chan->buf[cpu]; /* get_cpu_ptr() */
	if (unlikely(buf->offset + length > buf->chan->subbuf_size)) {
		length = model_relay_switch_subbuf(buf, length);
		if (!length)
			goto end;
	}
	p = (uint64_t *)((char *)buf->data + buf->offset);
	buf->offset += length;
end:
	if (p) {
		p[0] = (16 + size) | 1ULL << 32;
		p[1] = __builtin_ia32_rdtsc();
		memcpy(p + 2, data, size);
	}
	local_irq_restore(flags);
}

/* One call per record, as the benchmark loops call them: the callee is
 * where the kernel's caller (blktrace, a driver) would inline them. */
__attribute__((noinline))
void model_relay_write(struct model_rchan *chan, unsigned int cpu,
		       const void *data, size_t length)
{
	model_relay_write_inline(chan, cpu, data, length);
}

__attribute__((noinline))
void model_relay_reserve_ts(struct model_rchan *chan, unsigned int cpu,
			    const void *data, size_t size)
{
	model_relay_reserve_ts_inline(chan, cpu, data, size);
}

/* relay_open()'s part that the write paths depend on: `n_cpus` buffers of
 * `n_subbufs` x `subbuf_size` bytes at `mem` (its size is the product),
 * `bufs` and `padding` caller-provided (n_cpus and n_cpus * n_subbufs). */
void model_relay_open(struct model_rchan *chan, struct model_rchan_buf *bufs,
		      size_t *padding, void *mem, unsigned int n_cpus,
		      size_t subbuf_size, size_t n_subbufs)
{
	memset(chan, 0, sizeof(*chan));
	chan->subbuf_size = subbuf_size;
	chan->n_subbufs = n_subbufs;
	chan->subbuf_start = model_subbuf_start_overwrite;
	for (unsigned int cpu = 0; cpu < n_cpus && cpu < 64; cpu++) {
		struct model_rchan_buf *buf = &bufs[cpu];

		memset(buf, 0, sizeof(*buf));
		buf->start = (char *)mem + cpu * subbuf_size * n_subbufs;
		buf->data = buf->start;
		buf->chan = chan;
		buf->padding = padding + cpu * n_subbufs;
		buf->cpu = cpu;
		chan->buf[cpu] = buf;
	}
}
