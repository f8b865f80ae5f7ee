// SPDX-License-Identifier: GPL-2.0-only
/*
 * A model of Linux 6.12's bpf_ringbuf_output() (kernel/bpf/ringbuf.c), for
 * a native comparison with relay-core's writer: one ring buffer shared by
 * every CPU, its producer position behind a spinlock.
 *
 * __bpf_ringbuf_reserve() and bpf_ringbuf_commit() are the kernel's line
 * for line. Differences, all of which make the model cheaper than the
 * kernel:
 *  - raw_spin_lock_irqsave() is the qspinlock fast path (one cmpxchg of 0 to
 *    1) with a test-and-test-and-set spin for the contended case instead of
 *    the MCS queue; interrupts are not disabled (a compiler barrier);
 *  - the data area is not mapped twice: it has `max record` bytes of slack
 *    after its end so that a record that wraps is still one memcpy;
 *  - irq_work_queue() is an empty call.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define unlikely(x) __builtin_expect(!!(x), 0)
#define barrier() __asm__ __volatile__("" ::: "memory")
#define PAGE_SHIFT 12
#define PAGE_MASK (~((1UL << PAGE_SHIFT) - 1))
#define BPF_RINGBUF_BUSY_BIT (1U << 31)
#define BPF_RINGBUF_DISCARD_BIT (1U << 30)
#define BPF_RINGBUF_HDR_SZ 8
#define RINGBUF_MAX_RECORD_SZ (UINT32_MAX / 4)
#define BPF_RB_NO_WAKEUP (1ULL << 0)
#define BPF_RB_FORCE_WAKEUP (1ULL << 1)
#define round_up(x, y) ((((x) - 1) | ((y) - 1)) + 1)
#define READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define smp_load_acquire(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define smp_store_release(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)

struct bpf_ringbuf_hdr {
	uint32_t len;
	uint32_t pg_off;
};

/* The kernel's layout: the lock, the consumer position and the producer
 * position each on their own cache line (their own page, in the kernel). */
struct model_ringbuf {
	uint64_t mask;
	int lock __attribute__((aligned(64)));
	unsigned long consumer_pos __attribute__((aligned(64)));
	unsigned long producer_pos __attribute__((aligned(64)));
	unsigned long pending_pos;
	char *data __attribute__((aligned(64)));
};

__attribute__((noinline))
static void model_irq_work_queue(struct model_ringbuf *rb)
{
	barrier();
	(void)rb;
}

static inline void model_spin_lock(int *lock)
{
	int zero = 0;

	if (__atomic_compare_exchange_n(lock, &zero, 1, 0, __ATOMIC_ACQUIRE,
					__ATOMIC_RELAXED))
		return;
	for (;;) {
		while (__atomic_load_n(lock, __ATOMIC_RELAXED))
			__builtin_ia32_pause();
		zero = 0;
		if (__atomic_compare_exchange_n(lock, &zero, 1, 0,
						__ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return;
	}
}

static inline void model_spin_unlock(int *lock)
{
	__atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

static inline uint32_t ringbuf_rec_pg_off(struct model_ringbuf *rb,
					  struct bpf_ringbuf_hdr *hdr)
{
	return ((char *)hdr - (char *)rb) >> PAGE_SHIFT;
}

static void *model_ringbuf_reserve(struct model_ringbuf *rb, uint64_t size)
{
	unsigned long cons_pos, prod_pos, new_prod_pos, pend_pos;
	struct bpf_ringbuf_hdr *hdr;
	uint32_t len, pg_off, tmp_size, hdr_len;

	if (unlikely(size > RINGBUF_MAX_RECORD_SZ))
		return NULL;

	len = round_up(size + BPF_RINGBUF_HDR_SZ, 8);
	if (len > rb->mask + 1)
		return NULL;

	cons_pos = smp_load_acquire(&rb->consumer_pos);

	model_spin_lock(&rb->lock);

	pend_pos = rb->pending_pos;
	prod_pos = rb->producer_pos;
	new_prod_pos = prod_pos + len;

	while (prod_pos - pend_pos > 0) {
		hdr = (void *)(rb->data + (pend_pos & rb->mask));
		hdr_len = READ_ONCE(hdr->len);
		if (hdr_len & BPF_RINGBUF_BUSY_BIT)
			break;
		tmp_size = hdr_len & ~BPF_RINGBUF_DISCARD_BIT;
		tmp_size = round_up(tmp_size + BPF_RINGBUF_HDR_SZ, 8);
		pend_pos += tmp_size;
	}
	rb->pending_pos = pend_pos;

	if (new_prod_pos - cons_pos > rb->mask ||
	    new_prod_pos - pend_pos > rb->mask) {
		model_spin_unlock(&rb->lock);
		return NULL;
	}

	hdr = (void *)(rb->data + (prod_pos & rb->mask));
	pg_off = ringbuf_rec_pg_off(rb, hdr);
	hdr->len = size | BPF_RINGBUF_BUSY_BIT;
	hdr->pg_off = pg_off;

	smp_store_release(&rb->producer_pos, new_prod_pos);

	model_spin_unlock(&rb->lock);

	return (char *)hdr + BPF_RINGBUF_HDR_SZ;
}

static struct model_ringbuf *ringbuf_restore_from_rec(struct bpf_ringbuf_hdr *hdr)
{
	unsigned long addr = (unsigned long)(void *)hdr;
	unsigned long off = (unsigned long)hdr->pg_off << PAGE_SHIFT;

	return (void *)((addr & PAGE_MASK) - off);
}

static void model_ringbuf_commit(void *sample, uint64_t flags, int discard)
{
	unsigned long rec_pos, cons_pos;
	struct bpf_ringbuf_hdr *hdr;
	struct model_ringbuf *rb;
	uint32_t new_len;

	hdr = (void *)((char *)sample - BPF_RINGBUF_HDR_SZ);
	rb = ringbuf_restore_from_rec(hdr);
	new_len = hdr->len ^ BPF_RINGBUF_BUSY_BIT;
	if (discard)
		new_len |= BPF_RINGBUF_DISCARD_BIT;

	__atomic_exchange_n(&hdr->len, new_len, __ATOMIC_SEQ_CST);

	rec_pos = (char *)hdr - rb->data;
	cons_pos = smp_load_acquire(&rb->consumer_pos) & rb->mask;

	if (flags & BPF_RB_FORCE_WAKEUP)
		model_irq_work_queue(rb);
	else if (cons_pos == rec_pos && !(flags & BPF_RB_NO_WAKEUP))
		model_irq_work_queue(rb);
}

/* bpf_ringbuf_output(): 0, or -EAGAIN (-11) when the ring is full. */
__attribute__((noinline))
int model_bpf_ringbuf_output(struct model_ringbuf *rb, const void *data,
			     uint64_t size, uint64_t flags)
{
	void *rec;

	if (unlikely(flags & ~(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP)))
		return -22;

	rec = model_ringbuf_reserve(rb, size);
	if (!rec)
		return -11;

	memcpy(rec, data, size);
	model_ringbuf_commit(rec, flags, 0);
	return 0;
}

/* The consumer, for the benchmark: consumes everything committed. */
void model_ringbuf_consume_all(struct model_ringbuf *rb)
{
	smp_store_release(&rb->consumer_pos,
			  smp_load_acquire(&rb->producer_pos));
}

/* Sets up a ring buffer over `data`: `size` bytes (a power of two) plus
 * slack for one record. The struct must be page-aligned and `data` within
 * 2^32 pages after it (the kernel's pg_off). */
void model_ringbuf_init(struct model_ringbuf *rb, char *data, uint64_t size)
{
	memset(rb, 0, sizeof(*rb));
	rb->mask = size - 1;
	rb->data = data;
}
