/* SPDX-License-Identifier: GPL-2.0 */
/* relay-kmod's kfunc, as BPF programs declare it (see ../src/relay_uapi.h). */
#ifndef RELAY_KFUNC_H
#define RELAY_KFUNC_H

#include "../src/relay_uapi.h"

extern int relay_kfunc_write(__u32 id, __u32 type, const void *data,
			     __u32 data__sz, __u64 flags) __ksym;

#endif
