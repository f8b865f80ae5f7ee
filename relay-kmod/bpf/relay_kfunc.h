/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What relay-kmod's BPF programs and their loader share: the kfuncs, as BPF
 * programs declare them (documented in ../src/relay_bpf.c), and the
 * configuration the loader writes into each program's `config` map.
 */
#ifndef RELAY_KFUNC_H
#define RELAY_KFUNC_H

#include "../src/relay_uapi.h"

/* The `config` map's one value: the channel's number, and the process
 * whose syscalls the programs turn into records (the loader's). */
struct relay_bpf_config {
	__u32 channel;
	__u32 tgid;
};

/* Answers of the kfuncs to bad arguments, kept by relay_events.bpf.c's
 * `checks` map: write with a bad channel number, type, flags and an unused
 * number; reserve with a bad and an unused number (0: NULL); a window and a
 * copy outside a grant (0: NULL), a commit with a bad type; and how many of
 * RELAY_GRANTS + 1 grants held at once were refused. */
#define RELAY_BPF_CHECKS 10

#ifdef __bpf__
#include <bpf/bpf_helpers.h>

/* The loader writes the one struct relay_bpf_config here before attaching. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct relay_bpf_config);
} config SEC(".maps");

/* A reserved record (relay_bpf.c); programs only pass it back. */
struct relay_grant {
	__u64 opaque;
};

extern int relay_kfunc_write(__u32 id, __u32 type, const void *data,
			     __u32 data__sz, __u64 flags) __ksym;
extern struct relay_grant *relay_kfunc_reserve(__u32 id, __u32 size) __ksym;
extern __u8 *relay_kfunc_grant_data(struct relay_grant *g, __u32 offset,
				    const __u32 rdwr_buf_size) __ksym;
extern int relay_kfunc_grant_write(struct relay_grant *g, __u32 offset,
				   const void *data, __u32 data__sz) __ksym;
extern int relay_kfunc_commit(struct relay_grant *g, __u32 type, __u64 flags) __ksym;
extern void relay_kfunc_discard(struct relay_grant *g) __ksym;
#endif

#endif
