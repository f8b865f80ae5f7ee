// SPDX-License-Identifier: GPL-2.0
/*
 * relay-bpf: loads relay_events.bpf.o (libbpf, linked statically), points
 * its programs at relay-kmod channel ID, and drives the syscall program:
 * one thread pinned to each online CPU calls getppid() SYSCALLS times. The
 * NMI program fires whenever the module's load generator sends NMIs
 * (`relay kernel load --nmi`) while the programs stay attached (HOLD_MS).
 * Then it prints what the programs attempted and wrote, and how many of
 * those went through reserve/commit:
 *
 *   relay-bpf ok: cpus=4 task=20000 task_written=20000 task_reserved=10000 nmi=812 ...
 *
 * usage: relay-bpf OBJECT ID SYSCALLS HOLD_MS
 *        relay-bpf bench OBJECT ID CALLS [CPUS]
 *        relay-bpf reject OBJECT
 *
 * The second form is the benchmark (relay_bench.bpf.o): CALLS getpgid()
 * per CPU (on CPUs 0 ..< CPUS, default all), each writing 100 records, through relay-kmod's write kfunc and
 * its reserve/commit kfuncs (channel ID, overwrite mode: never full),
 * bpf_ringbuf_output (bare, and with bpf_ktime_get_ns() per record),
 * bpf_ringbuf_reserve/submit and bpf_perf_event_output
 * (each with a consumer thread, as they are used), one after the other,
 * in ROUNDS interleaved rounds; per path the median of its rates (records
 * accepted per second), and the ratios.
 *
 * The third loads each program of relay_reject.bpf.o alone and expects
 * the verifier to refuse it, for the reason the program is named after.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "relay_kfunc.h"


struct worker {
	pthread_t thread;
	int cpu;
	long calls;
	long nr;
	int err;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	w->err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	/* EINVAL: the CPU is offline (the hotplug scenario takes CPUs down);
	 * the calls then run wherever the scheduler puts them. */
	if (w->err == EINVAL)
		w->err = 0;
	if (w->err)
		return NULL;
	for (long i = 0; i < w->calls; i++)
		syscall(w->nr, 0);
	return NULL;
}

/* One pinned thread per online CPU, each making `calls` syscalls `nr`. */
static int run_workers(int online, long calls, long nr)
{
	struct worker *w = calloc(online, sizeof(*w));
	int err = 0;

	if (!w)
		return ENOMEM;
	for (int i = 0; i < online; i++) {
		w[i].cpu = i;
		w[i].calls = calls;
		w[i].nr = nr;
		err = pthread_create(&w[i].thread, NULL, work, &w[i]);
		if (err)
			break;
	}
	for (int i = 0; i < online && w[i].thread; i++) {
		pthread_join(w[i].thread, NULL);
		err = err ?: w[i].err;
	}
	free(w);
	return err;
}

/* Sum over CPUs of per-CPU array `map`, entry `key`. */
static int sum(struct bpf_map *map, unsigned int key, int ncpus,
	       unsigned long long *out)
{
	unsigned long long *v = calloc(ncpus, sizeof(*v));
	int err;

	if (!v)
		return -ENOMEM;
	err = bpf_map_lookup_elem(bpf_map__fd(map), &key, v);
	*out = 0;
	for (int i = 0; !err && i < ncpus; i++)
		*out += v[i];
	free(v);
	return err;
}

static int fail(const char *what, int err)
{
	printf("relay-bpf FAILED: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

/* Opens and loads the BPF object at `path` (verifier, kfunc resolution)
 * and writes `c` into its `config` map; NULL after printing why not. */
static struct bpf_object *open_loaded(const char *path, const struct relay_bpf_config *c)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_map *config;
	unsigned int zero = 0;
	int err = libbpf_get_error(obj);

	if (err) {
		fail("open object", err);
		return NULL;
	}
	err = bpf_object__load(obj);
	if (err) {
		fail("load (verifier and kfunc resolution)", err);
		return NULL;
	}
	config = bpf_object__find_map_by_name(obj, "config");
	if (!config || bpf_map_update_elem(bpf_map__fd(config), &zero, c, BPF_ANY)) {
		fail("config", config ? errno : ENOENT);
		return NULL;
	}
	return obj;
}

static volatile int consuming;

static int on_ring(void *ctx, void *data, size_t size)
{
	return 0;
}

static void on_perf(void *ctx, int cpu, void *data, __u32 size)
{
}

static void *consume_ring(void *arg)
{
	while (consuming)
		ring_buffer__poll(arg, 10);
	return NULL;
}

static void *consume_perf(void *arg)
{
	while (consuming)
		perf_buffer__poll(arg, 10);
	return NULL;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

/* What each program of relay_reject.bpf.o breaks, as the verifier says it. */
static const struct {
	const char *prog, *reason;
} rejects[] = {
	{ "leak", "Unreleased reference" },
	{ "use_after_commit", "invalid mem access 'scalar'" },
	{ "past_window", "invalid access to memory, mem_size=8 off=8 size=1" },
	{ "sleepable", "calling kernel function relay_kfunc_reserve is not allowed" },
};

/* libbpf's own report of each refusal, which reject() expects. */
static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return 0;
}

static int reject(const char *path)
{
	static char log[1 << 16];
	size_t n = sizeof(rejects) / sizeof(rejects[0]);

	libbpf_set_print(quiet);
	for (size_t i = 0; i < n; i++) {
		struct bpf_object *obj = bpf_object__open_file(path, NULL);
		struct bpf_program *prog;
		int err = libbpf_get_error(obj);

		if (err)
			return fail("open object", err);
		bpf_object__for_each_program(prog, obj)
			bpf_program__set_autoload(prog, !strcmp(bpf_program__name(prog),
								rejects[i].prog));
		prog = bpf_object__find_program_by_name(obj, rejects[i].prog);
		if (!prog)
			return fail(rejects[i].prog, ENOENT);
		log[0] = 0;
		bpf_program__set_log_buf(prog, log, sizeof(log));
		err = bpf_object__load(obj);
		bpf_object__close(obj);
		if (!err) {
			printf("relay-bpf FAILED: the verifier accepted %s\n", rejects[i].prog);
			return 1;
		}
		if (!strstr(log, rejects[i].reason)) {
			printf("relay-bpf FAILED: %s refused, but not for \"%s\": %s\n",
			       rejects[i].prog, rejects[i].reason, log);
			return 1;
		}
	}
	printf("relay-bpf reject ok: refused=%zu (", n);
	for (size_t i = 0; i < n; i++)
		printf("%s%s", i ? ", " : "", rejects[i].prog);
	printf(")\n");
	return 0;
}

enum { RELAY, RELAY_RESERVE, RINGBUF, RINGBUF_TS, RINGBUF_RESERVE, PERFBUF, PATHS };

static const char *const bench_names[PATHS] = {
	"bench_relay", "bench_relay_reserve", "bench_ringbuf", "bench_ringbuf_ts",
	"bench_ringbuf_reserve", "bench_perfbuf",
};

/* One run of path `p`: attaches its program, runs the workers, and returns
 * records accepted per second (M/s), or a negative errno. */
static double bench_run(struct bpf_object *obj, int p, int cpus, long calls,
			unsigned long long *att, unsigned long long *ok)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, bench_names[p]);
	struct bpf_map *counts = bpf_object__find_map_by_name(obj, "counts");
	int possible = libbpf_num_possible_cpus();
	unsigned long long *zeros = calloc(possible, sizeof(*zeros));
	unsigned int zero = 0, one = 1;
	struct ring_buffer *rb = NULL;
	struct perf_buffer *pb = NULL;
	pthread_t consumer;
	struct bpf_link *link;
	double t0, t = 0;
	int err;

	if (!prog || !counts || !zeros) {
		free(zeros);
		return -ENOENT;
	}
	bpf_map_update_elem(bpf_map__fd(counts), &zero, zeros, BPF_ANY);
	bpf_map_update_elem(bpf_map__fd(counts), &one, zeros, BPF_ANY);
	free(zeros);
	consuming = 1;
	if (p == RINGBUF || p == RINGBUF_TS || p == RINGBUF_RESERVE) {
		rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "rb")),
				      on_ring, NULL, NULL);
		if (!rb)
			return -errno;
		pthread_create(&consumer, NULL, consume_ring, rb);
	} else if (p == PERFBUF) {
		pb = perf_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "pb")),
				      64, on_perf, NULL, NULL, NULL);
		if (!pb)
			return -errno;
		pthread_create(&consumer, NULL, consume_perf, pb);
	}
	link = bpf_program__attach(prog);
	err = libbpf_get_error(link);
	if (!err) {
		t0 = now_s();
		err = run_workers(cpus, calls, SYS_getpgid);
		t = now_s() - t0;
		bpf_link__destroy(link);
	}
	consuming = 0;
	if (rb || pb)
		pthread_join(consumer, NULL);
	ring_buffer__free(rb);
	perf_buffer__free(pb);
	if (err)
		return -abs(err);
	if (sum(counts, 0, possible, att) || sum(counts, 1, possible, ok))
		return -errno;
	return *ok / t / 1e6;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Runs of each path, interleaved (relay, ring buffer, ..., relay, ...) so
 * that a slow stretch of the host hits every path alike; the median counts. */
#define ROUNDS 3

static int bench(const char *path, unsigned int channel, long calls, int cpus)
{
	struct relay_bpf_config c = { .channel = channel, .tgid = getpid() };
	double runs[PATHS][ROUNDS], rate[PATHS];
	unsigned long long att[PATHS] = { 0 }, ok[PATHS] = { 0 };
	int online = sysconf(_SC_NPROCESSORS_ONLN);
	struct bpf_object *obj;

	if (cpus <= 0 || cpus > online)
		cpus = online;
	obj = open_loaded(path, &c);
	if (!obj)
		return 1;
	for (int r = 0; r < ROUNDS; r++) {
		for (int p = 0; p < PATHS; p++) {
			unsigned long long a, o;

			runs[p][r] = bench_run(obj, p, cpus, calls, &a, &o);
			if (runs[p][r] < 0)
				return fail(bench_names[p], (int)-runs[p][r]);
			att[p] += a;
			ok[p] += o;
		}
	}
	for (int p = 0; p < PATHS; p++) {
		qsort(runs[p], ROUNDS, sizeof(double), by_value);
		rate[p] = runs[p][ROUNDS / 2];
	}
	printf("relay-bpf bench: cpus=%d records=%llu rounds=%d", cpus, att[RELAY], ROUNDS);
	for (int p = 0; p < PATHS; p++)
		printf(" %s=%.2f M/s (%llu/%llu)", bench_names[p] + strlen("bench_"), rate[p],
		       ok[p], att[p]);
	printf(" ratio_ringbuf=%.2f ratio_ringbuf_ts=%.2f ratio_ringbuf_reserve=%.2f ratio_perfbuf=%.2f\n",
	       ratio(rate[RELAY], rate[RINGBUF]), ratio(rate[RELAY], rate[RINGBUF_TS]),
	       ratio(rate[RELAY_RESERVE], rate[RINGBUF_RESERVE]), ratio(rate[RELAY], rate[PERFBUF]));
	bpf_object__close(obj);
	return 0;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *seqs, *written;
	struct relay_bpf_config c;
	unsigned long long task, task_ok, task_res, nmi, nmi_ok, nmi_res, checks_lost;
	struct bpf_link *links[2] = { 0 };
	int n = 0, online, possible, err;
	long syscalls, hold_ms;

	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "bench"))
		return bench(argv[2], strtoul(argv[3], NULL, 0), strtol(argv[4], NULL, 0),
			     argc == 6 ? atoi(argv[5]) : 0);
	if (argc == 3 && !strcmp(argv[1], "reject"))
		return reject(argv[2]);
	if (argc != 5) {
		fprintf(stderr, "usage: relay-bpf OBJECT ID SYSCALLS HOLD_MS\n");
		return 2;
	}
	c.channel = strtoul(argv[2], NULL, 0);
	c.tgid = getpid();
	syscalls = strtol(argv[3], NULL, 0);
	hold_ms = strtol(argv[4], NULL, 0);
	online = sysconf(_SC_NPROCESSORS_ONLN);
	possible = libbpf_num_possible_cpus();
	if (online <= 0 || possible <= 0)
		return fail("CPU count", EINVAL);

	obj = open_loaded(argv[1], &c);
	if (!obj)
		return 1;
	seqs = bpf_object__find_map_by_name(obj, "seqs");
	written = bpf_object__find_map_by_name(obj, "written");
	if (!seqs || !written)
		return fail("maps", ENOENT);
	bpf_object__for_each_program(prog, obj) {
		links[n] = bpf_program__attach(prog);
		err = libbpf_get_error(links[n]);
		if (err)
			return fail(bpf_program__name(prog), err);
		n++;
	}

	/* The guest starts its NMI load once the programs are attached. */
	printf("relay-bpf: attached %d programs\n", n);
	fflush(stdout);
	err = run_workers(online, syscalls, SYS_getppid);
	if (err)
		return fail("syscall threads", err);
	usleep(hold_ms * 1000);
	for (int i = 0; i < n; i++)
		bpf_link__destroy(links[i]);

	/* The kfuncs refused bad arguments (relay_kfunc.h: RELAY_BPF_CHECKS). */
	{
		struct bpf_map *checks = bpf_object__find_map_by_name(obj, "checks");
		static const long long want[RELAY_BPF_CHECKS] = {
			-ENOENT, -EINVAL, -EINVAL, -ENOENT, 0, 0, 0, -EINVAL, -EINVAL, 1,
		};

		for (unsigned int k = 0; k < RELAY_BPF_CHECKS; k++) {
			long long got = 1;

			if (!checks || bpf_map_lookup_elem(bpf_map__fd(checks), &k, &got))
				return fail("read checks", errno);
			/* Held grants: one refusal, more if an NMI held some too. */
			if (k == 9 && got >= 1 && got <= RELAY_GRANTS + 1)
				continue;
			if (got != want[k]) {
				printf("relay-bpf FAILED: bad argument %u: the kfunc returned %lld, not %lld\n",
				       k, got, want[k]);
				return 1;
			}
		}
	}
	if (sum(seqs, 0, possible, &task) || sum(written, 0, possible, &task_ok) ||
	    sum(seqs, 1, possible, &nmi) || sum(written, 1, possible, &nmi_ok) ||
	    sum(written, 2, possible, &task_res) || sum(written, 3, possible, &nmi_res) ||
	    sum(written, 4, possible, &checks_lost))
		return fail("read counters", errno);
	/* The numbers the bad-argument calls' losses took are not syscalls. */
	task -= checks_lost;
	/* Odd sequence numbers are reserved and committed: both ways ran. */
	if ((task_ok > 1 && !task_res) || (nmi_ok > 1 && !nmi_res)) {
		printf("relay-bpf FAILED: no record was reserved and committed: task=%llu nmi=%llu\n",
		       task_res, nmi_res);
		return 1;
	}
	printf("relay-bpf ok: cpus=%d task=%llu task_written=%llu task_reserved=%llu nmi=%llu "
	       "nmi_written=%llu nmi_reserved=%llu bad_arguments=refused bad_arguments_lost=%llu\n",
	       online, task, task_ok, task_res, nmi, nmi_ok, nmi_res, checks_lost);
	bpf_object__close(obj);
	return 0;
}
