// SPDX-License-Identifier: GPL-2.0
/*
 * BPF programs that write checked payloads (docs/FORMAT.md, relay-core's
 * `checked` module) into a relay-kmod channel through the module's kfunc:
 *
 * - on_sys_enter (tp_btf/sys_enter): one record per getppid() of the
 *   loader's process (source 4, "BPF task");
 * - on_nmi (fentry/relay_nmi_hook): one record per NMI of the module's load
 *   generator, in NMI context (source 5, "BPF NMI").
 *
 * Every attempt takes a sequence number (per CPU and source, in a per-CPU
 * array), so `relay verify` holds the stream to the channel's accounting.
 * Even numbers are copied with relay_kfunc_write; odd ones are reserved
 * and filled in place: the task program through a relay_kfunc_grant_data
 * window, the NMI one with relay_kfunc_grant_write.
 * The first task-context call on each CPU also passes the kfuncs bad
 * channel numbers, types, flags and offsets, and keeps the answers for the
 * loader to check.
 * Built with clang -target bpf by `cargo xtask vm-test`.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "relay_kfunc.h"

#define PAYLOAD 64
#define SOURCE_BPF_TASK 4
#define SOURCE_BPF_NMI 5
#define NR_GETPPID 110 /* x86-64 */

/* Per CPU: [0] the task program's next sequence number, [1] the NMI one's. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} seqs SEC(".maps");

/* Per CPU: records the kfuncs accepted, same keys; [2] and [3]: those of
 * them that were reserved and committed; [4]: the task program's sequence
 * numbers taken by the records its bad-argument calls lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} written SEC(".maps");


static __always_inline __u64 fnv(__u64 h, const __u8 *b, int from, int to)
{
#pragma unroll
	for (int i = from; i < to; i++)
		h = (h ^ b[i]) * 0x00000100000001b3ULL;
	return h;
}

/* The checked payload `seq` of (cpu, source), as relay-core's fill(); a
 * subprogram, as it runs on a stack buffer and in place in a grant. */
static __attribute__((noinline)) void fill(__u8 *b, __u32 cpu, __u32 source, __u64 seq)
{
	__u64 h;

	*(__u64 *)&b[0] = seq;
	*(__u32 *)&b[8] = cpu;
	*(__u32 *)&b[12] = PAYLOAD;
	*(__u32 *)&b[16] = source;
	*(__u32 *)&b[20] = 0;
#pragma unroll
	for (int i = 32; i < PAYLOAD; i++)
		b[i] = (__u8)seq ^ (__u8)(i - 32);
	h = fnv(0xcbf29ce484222325ULL, b, 0, 24);
	h = fnv(h, b, 32, PAYLOAD);
	*(__u64 *)&b[24] = h;
}

/* What the kfuncs answered to bad arguments (checked by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RELAY_BPF_CHECKS);
	__type(key, __u32);
	__type(value, __s64);
} checks SEC(".maps");

static __always_inline void check(__u32 k, __s64 r)
{
	__s64 *v = bpf_map_lookup_elem(&checks, &k);

	if (v)
		*v = r;
}

/* A CPU holds at most RELAY_GRANTS grants at once: of one more than that,
 * at least one reservation fails (and is counted lost). Returns how many
 * failed. */
static __always_inline __s64 held_grants(__u32 channel)
{
	struct relay_grant *g[RELAY_GRANTS + 1];
	__s64 refused = 0;

#pragma unroll
	for (int i = 0; i < RELAY_GRANTS + 1; i++) {
		g[i] = relay_kfunc_reserve(channel, 8);
		refused += !g[i];
	}
#pragma unroll
	for (int i = 0; i < RELAY_GRANTS + 1; i++)
		if (g[i])
			relay_kfunc_discard(g[i]);
	check(9, refused);
	return refused;
}

/* Bad channel numbers, types and flags are errors, never a write. Number 0
 * names no channel; `unused` shares the live channel's slot in the
 * module's table (numbers modulo RELAY_MAX_CHANNELS) but was never given,
 * as a destroyed channel's number is never given again. Returns the
 * records counted lost on the way (the reservations held_grants() is
 * refused), so that the caller's sequence numbers account for them. */
static __always_inline __s64 bad_arguments(struct relay_bpf_config *c, __u8 *buf)
{
	__u32 unused = c->channel + RELAY_MAX_CHANNELS;
	struct relay_grant *g;

	check(0, relay_kfunc_write(0, 1, buf, PAYLOAD, 0));
	check(1, relay_kfunc_write(c->channel, 70000, buf, PAYLOAD, 0));
	check(2, relay_kfunc_write(c->channel, 1, buf, PAYLOAD, 2));
	check(3, relay_kfunc_write(unused, 1, buf, PAYLOAD, 0));
	/* (The verifier wants every grant given back, even one never made.) */
	g = relay_kfunc_reserve(0, 8);
	check(4, g != 0);
	if (g)
		relay_kfunc_discard(g);
	g = relay_kfunc_reserve(unused, 8);
	check(5, g != 0);
	if (g)
		relay_kfunc_discard(g);
	/* A record of 8 bytes: windows and copies must stay inside it, and a
	 * bad type discards it. */
	g = relay_kfunc_reserve(c->channel, 8);
	if (!g) {
		check(6, 2);
		return 1;	/* refused: counted lost */
	}
	check(6, relay_kfunc_grant_data(g, 4, 8) != 0);
	check(7, relay_kfunc_grant_write(g, 1, buf, 8));
	check(8, relay_kfunc_commit(g, 70000, 0));
	return held_grants(c->channel);
}

/* Reserves the record and fills it in place; 0 if it was written. */
static __always_inline int reserve_and_fill(__u32 channel, __u32 cpu, __u32 source,
					    __u64 seq, __u8 *buf)
{
	struct relay_grant *g = relay_kfunc_reserve(channel, PAYLOAD);
	__u8 *p;

	if (!g)
		return -1;
	if (source == SOURCE_BPF_TASK) {
		p = relay_kfunc_grant_data(g, 0, PAYLOAD);
		if (!p) {
			relay_kfunc_discard(g);
			return -1;
		}
		fill(p, cpu, source, seq);
	} else if (relay_kfunc_grant_write(g, 0, buf, PAYLOAD)) {
		relay_kfunc_discard(g);
		return -1;
	}
	return relay_kfunc_commit(g, 0x20 + source,
				  source == SOURCE_BPF_NMI ? RELAY_KFUNC_WAKEUP : 0);
}

static __always_inline int emit(__u32 key, __u32 source)
{
	__u32 zero = 0;
	struct relay_bpf_config *c = bpf_map_lookup_elem(&config, &zero);
	__u64 *seq = bpf_map_lookup_elem(&seqs, &key);
	__u32 rkey = key + 2;
	__u64 *ok = bpf_map_lookup_elem(&written, &key);
	__u64 *reserved = bpf_map_lookup_elem(&written, &rkey);
	__u8 buf[PAYLOAD] __attribute__((aligned(8)));
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 n;

	if (!c || !seq || !ok || !reserved)
		return 0;
	n = *seq;
	/* Each record the bad calls lose takes a number, as a lost write does:
	 * a CPU where only this program writes still accounts exactly. */
	if (n == 0 && source == SOURCE_BPF_TASK) {
		__u32 lkey = 4;
		__u64 *checks_lost = bpf_map_lookup_elem(&written, &lkey);
		__s64 lost = bad_arguments(c, buf);

		if (checks_lost)
			*checks_lost += lost;
		n += lost;
	}
	fill(buf, cpu, source, n);
	*seq = n + 1;
	if (n & 1) {
		if (reserve_and_fill(c->channel, cpu, source, n, buf) == 0) {
			*ok += 1;
			*reserved += 1;
		}
		return 0;
	}
	/* From NMI, also ask for a wakeup (the kfunc defers it to irq_work). */
	if (relay_kfunc_write(c->channel, 0x20 + source, buf, PAYLOAD,
			      source == SOURCE_BPF_NMI ? RELAY_KFUNC_WAKEUP : 0) == 0)
		*ok += 1;
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, void *regs, long id)
{
	__u32 zero = 0;
	struct relay_bpf_config *c = bpf_map_lookup_elem(&config, &zero);

	if (!c || id != NR_GETPPID || (bpf_get_current_pid_tgid() >> 32) != c->tgid)
		return 0;
	return emit(0, SOURCE_BPF_TASK);
}

SEC("fentry/relay_nmi_hook")
int BPF_PROG(on_nmi, __u32 cpu, __u64 seq)
{
	return emit(1, SOURCE_BPF_NMI);
}

char LICENSE[] SEC("license") = "GPL";
