/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What relay-kmod's BPF programs and their loader share: the kfunc, as BPF
 * programs declare it (see ../src/relay_uapi.h), and the configuration the
 * loader writes into each program's `config` map.
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

#ifdef __bpf__
extern int relay_kfunc_write(__u32 id, __u32 type, const void *data,
			     __u32 data__sz, __u64 flags) __ksym;
#endif

#endif
