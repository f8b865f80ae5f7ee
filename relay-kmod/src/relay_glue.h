/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What relay-kmod's C files and its Rust side call of each other: internal
 * to the module (its users include relay_kmod.h).
 */
#ifndef RELAY_GLUE_H
#define RELAY_GLUE_H

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/smp.h>
#include <linux/types.h>

#include "relay_uapi.h"

/* ------------------------------------------------------------------------
 * Implemented in Rust (relay_main.rs).
 */
int relay_rust_geometry(u64 subbuf_size, u64 subbuf_count, u64 flags,
			u64 *total_size, u64 *consumer_offset,
			u64 *consumer_size, u32 *cpu_count);
int relay_rust_channel_new(void *mem, u64 size, u64 subbuf_size,
			   u64 subbuf_count, u64 flags, void **out);
void relay_rust_channel_free(void *k);
int relay_rust_write(void *k, u32 cpu, u16 type, const void *data, u64 len);
#define RELAY_GRANT_WORDS 6	/* relay_main.rs: GRANT_WORDS */
int relay_rust_reserve(void *k, u32 cpu, u32 len, u64 *state, u8 **data);
void relay_rust_refuse(void *k, u32 cpu);
int relay_rust_commit(void *k, u32 cpu, const u64 *state, u16 type, bool discard);
int relay_rust_load_write(void *k, u32 cpu, u32 source, u64 seq, void *buf,
			  u64 len);
int relay_rust_flush(void *k, u32 cpu, bool on_cpu, u64 *barrier, u64 *next);
int relay_rust_stats(void *k, u32 cpu, struct relay_cpu_stats *out);
int relay_rust_reader_new(void *k, s32 cpu, void *flusher, u32 pid, void **out);
void relay_rust_reader_free(void *r);
ssize_t relay_rust_reader_fill(void *r, void *buf, u64 cap);
void relay_rust_reader_advance(void *r, u64 n);
bool relay_rust_reader_ready(void *r);
bool relay_rust_ready(void *k, s32 cpu);
int relay_rust_selftest(void);

/* Implemented in relay_glue.c, called by Rust. */
u32 relay_glue_this_cpu(void);
u32 relay_glue_nr_cpu_ids(void);
u32 relay_glue_num_online_cpus(void);
void relay_glue_on_each_cpu(smp_call_func_t func, void *info);
int relay_glue_flush_cpu(void *flusher, u32 cpu, u64 *barrier, u64 *next);
struct relay_glue_works;
struct relay_glue_works *relay_glue_works_start(void (*fn)(void *),
						void (*tick)(void *), void *info,
						u64 period_ns);
void relay_glue_works_finish(struct relay_glue_works *ws);
int relay_glue_register(void);
void relay_glue_unregister(void);

/* relay_glue.c: the end of a load or benchmark kthread (see there). */
int relay_kthread_done(atomic_t *running, struct completion *done);

/* relay_bench.c: RELAY_IOC_BENCH. */
long relay_bench(void __user *uarg);

#endif
