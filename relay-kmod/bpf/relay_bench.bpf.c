// SPDX-License-Identifier: GPL-2.0
/*
 * The BPF benchmark, in the style of the kernel's bench_ringbufs: on every
 * CPU a thread calls getpgid() in a loop; a program attached to its entry
 * writes BATCH records of PAYLOAD bytes per call through (a) relay-kmod's
 * write kfunc, (b) its reserve/commit kfuncs, (c) bpf_ringbuf_output,
 * (d) the same with a timestamp per record, as relay records have,
 * (e) bpf_ringbuf_reserve/submit, (f) bpf_perf_event_output. The loader
 * attaches one program at a time and counts what was accepted.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "relay_kfunc.h"

#define PAYLOAD 64
#define BATCH 100
#define NR_GETPGID 121 /* x86-64 */

/* Per CPU: [0] attempts, [1] accepted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(int));
	__uint(value_size, sizeof(int));
} pb SEC(".maps");


static __always_inline struct relay_bpf_config *ours(long id)
{
	__u32 zero = 0;
	struct relay_bpf_config *c = bpf_map_lookup_elem(&config, &zero);

	if (!c || id != NR_GETPGID || (bpf_get_current_pid_tgid() >> 32) != c->tgid)
		return 0;
	return c;
}

static __always_inline void count(__u64 ok)
{
	__u32 k0 = 0, k1 = 1;
	__u64 *a = bpf_map_lookup_elem(&counts, &k0);
	__u64 *b = bpf_map_lookup_elem(&counts, &k1);

	if (a && b) {
		*a += BATCH;
		*b += ok;
	}
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_relay, void *regs, long id)
{
	struct relay_bpf_config *c = ours(id);
	__u64 buf[PAYLOAD / 8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	__u64 ok = 0;

	if (!c)
		return 0;
	for (int i = 0; i < BATCH; i++)
		ok += relay_kfunc_write(c->channel, 1, buf, PAYLOAD, 0) == 0;
	count(ok);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_relay_reserve, void *regs, long id)
{
	struct relay_bpf_config *c = ours(id);
	__u64 buf[PAYLOAD / 8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	__u64 ok = 0;

	if (!c)
		return 0;
	for (int i = 0; i < BATCH; i++) {
		struct relay_grant *g = relay_kfunc_reserve(c->channel, PAYLOAD);
		__u8 *p;

		if (!g)
			continue;
		p = relay_kfunc_grant_data(g, 0, PAYLOAD);
		if (p)
			__builtin_memcpy(p, buf, PAYLOAD);
		ok += relay_kfunc_commit(g, 1, 0) == 0;
	}
	count(ok);
	return 0;
}

/* As bench_ringbuf, with the timestamp every relay record carries (and
 * every tracer's event needs): bpf_ktime_get_ns() is the clock relay-kmod's
 * writer reads, CLOCK_MONOTONIC. */
SEC("tp_btf/sys_enter")
int BPF_PROG(bench_ringbuf_ts, void *regs, long id)
{
	__u64 buf[PAYLOAD / 8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	__u64 ok = 0;

	if (!ours(id))
		return 0;
	for (int i = 0; i < BATCH; i++) {
		buf[0] = bpf_ktime_get_ns();
		ok += bpf_ringbuf_output(&rb, buf, PAYLOAD, 0) == 0;
	}
	count(ok);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_ringbuf_reserve, void *regs, long id)
{
	__u64 buf[PAYLOAD / 8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	__u64 ok = 0;

	if (!ours(id))
		return 0;
	for (int i = 0; i < BATCH; i++) {
		__u8 *p = bpf_ringbuf_reserve(&rb, PAYLOAD, 0);

		if (!p)
			continue;
		__builtin_memcpy(p, buf, PAYLOAD);
		bpf_ringbuf_submit(p, 0);
		ok++;
	}
	count(ok);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_ringbuf, void *regs, long id)
{
	__u64 buf[PAYLOAD / 8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	__u64 ok = 0;

	if (!ours(id))
		return 0;
	for (int i = 0; i < BATCH; i++)
		ok += bpf_ringbuf_output(&rb, buf, PAYLOAD, 0) == 0;
	count(ok);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_perfbuf, void *regs, long id)
{
	__u64 buf[PAYLOAD / 8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	__u64 ok = 0;

	if (!ours(id))
		return 0;
	for (int i = 0; i < BATCH; i++)
		ok += bpf_perf_event_output(ctx, &pb, BPF_F_CURRENT_CPU, buf, PAYLOAD) == 0;
	count(ok);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
