// SPDX-License-Identifier: GPL-2.0
/*
 * Programs the verifier must refuse: each breaks one rule of relay-kmod's
 * reserve/commit kfuncs, and `relay-bpf reject` loads them one at a time and
 * expects the verifier's refusal, with its reason. They are why a BPF
 * program cannot wedge a CPU's buffer or write outside its record.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "relay_kfunc.h"

/* A grant never given back: its sub-buffer could never seal. */
SEC("tp_btf/sys_enter")
int BPF_PROG(leak, void *regs, long id)
{
	struct relay_grant *g = relay_kfunc_reserve(0, 8);
	__u8 *p;

	if (!g)
		return 0;
	p = relay_kfunc_grant_data(g, 0, 8);
	if (p)
		p[0] = 1;
	return 0;
}

/* A window used after its grant was committed: that memory is the reader's. */
SEC("tp_btf/sys_enter")
int BPF_PROG(use_after_commit, void *regs, long id)
{
	struct relay_grant *g = relay_kfunc_reserve(0, 8);
	__u8 *p;

	if (!g)
		return 0;
	p = relay_kfunc_grant_data(g, 0, 8);
	relay_kfunc_commit(g, 1, 0);
	if (p)
		p[0] = 1;
	return 0;
}

/* A store past the window: it could reach the next record. */
SEC("tp_btf/sys_enter")
int BPF_PROG(past_window, void *regs, long id)
{
	struct relay_grant *g = relay_kfunc_reserve(0, 16);
	__u8 *p;

	if (!g)
		return 0;
	p = relay_kfunc_grant_data(g, 0, 8);
	if (p)
		p[8] = 1;
	relay_kfunc_commit(g, 1, 0);
	return 0;
}

/* A grant in a sleepable program: it holds preemption off until its commit. */
SEC("iter.s/task")
int sleepable(void *ctx)
{
	struct relay_grant *g = relay_kfunc_reserve(0, 8);

	if (g)
		relay_kfunc_commit(g, 1, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
