/*
 * bench-reset: microvm_reset() latency with the tiny "dirty" guest.
 *
 *   bench-reset [--runs N] [--pages N] [--dir DIR]
 *
 * For 128 MiB and 2 GiB of guest RAM: boot the dirty payload, snapshot it
 * while it waits for a console byte, restore a VM from that snapshot, and
 * then, per round, send it a byte (it writes to N pages, default 64, and
 * answers "D") and time microvm_reset():
 *  - running -> running: the call on a running VM (includes kicking the
 *    vCPU out of the guest and parking it);
 *  - paused -> paused: the VM paused first (not timed), reset left paused;
 *  - running, no round before (nothing dirtied but the guest's own page
 *    writes since the last reset: none, it waits);
 * and microvm_fork() of a paused 256 MiB VM (the same guest after one round,
 * booted, not restored) into a paused child, the child destroyed after each;
 * medians and 99th percentiles over the runs (after 200 untimed rounds per
 * size), all in one process run.
 * Without VT-x/AMD-V the guest itself runs emulated; the reset is host work.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microvm.h>

#include "bench.h"

static void die(const char *what, microvm *vm)
{
	fprintf(stderr, "bench-reset: %s: %s\n", what, vm ? microvm_last_error(vm) : "");
	exit(1);
}

/* Read @fd until @c arrives (60 s at most). */
static void wait_char(int fd, char c)
{
	char buf[256];
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 60000) != 1)
			die("the guest did not answer", NULL);
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			die("console read", NULL);
		if (memchr(buf, c, (size_t)n))
			return;
	}
}

struct rig {
	microvm *vm;
	int in_w, out_r; /* the bench's ends of the console pipes */
	int in_r, out_w; /* the VM's */
};

/* Boot the payload, snapshot it at its first wait into @dir, and restore
 * the VM the rounds run on. */
static void rig_up(struct rig *g, const char *kernel, uint64_t mib, int pages, const char *dir)
{
	int in[2], out[2];
	if (pipe(in) < 0 || pipe(out) < 0)
		die("pipe", NULL);
	g->in_r = in[0], g->in_w = in[1], g->out_r = out[0], g->out_w = out[1];
	microvm *vm;
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "pages=%d", pages);
	if (microvm_create(&vm) < 0)
		die("create", NULL);
	if (microvm_set_memory(vm, mib) < 0 || microvm_set_kernel(vm, kernel, cmd) < 0 ||
	    microvm_set_console(vm, g->in_r, g->out_w) < 0 || microvm_start(vm) < 0)
		die("start", vm);
	wait_char(g->out_r, '\n'); /* "ready" */
	usleep(20000);             /* well inside its wait loop */
	if (microvm_pause(vm) < 0 || microvm_snapshot(vm, dir, 0) < 0)
		die("snapshot", vm);
	microvm_destroy(vm);
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_in = g->in_r;
	rc.console_out = g->out_w;
	char err[256];
	if (microvm_restore(&g->vm, dir, &rc, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-reset: restore: %s\n", err);
		exit(1);
	}
	/* The first reset opens /proc/self/pagemap (kept for the next ones). */
	if (microvm_reset(g->vm, 0) < 0)
		die("reset", g->vm);
}

static void rig_down(struct rig *g)
{
	microvm_destroy(g->vm);
	close(g->in_r), close(g->in_w), close(g->out_r), close(g->out_w);
}

/* One round of the guest: a byte in, N pages written, "D" out. */
static void dirty_round(struct rig *g)
{
	if (write(g->in_w, "g", 1) != 1)
		die("console write", NULL);
	wait_char(g->out_r, 'D');
}

enum mode { RUNNING, PAUSED, CLEAN };

static double timed_reset(struct rig *g, enum mode m)
{
	if (m != CLEAN)
		dirty_round(g);
	if (m == PAUSED && microvm_pause(g->vm) < 0)
		die("pause", g->vm);
	double t0 = now_ms();
	if (microvm_reset(g->vm, m == PAUSED ? MICROVM_RESET_PAUSED : 0) < 0)
		die("reset", g->vm);
	double t = now_ms() - t0;
	if (m == PAUSED && microvm_resume(g->vm) < 0)
		die("resume", g->vm);
	return t * 1000.0; /* us */
}

#define WARMUP_ROUNDS 200

struct result {
	double med[3], p99[3];
};

static void measure(const char *kernel, uint64_t mib, int pages, int runs, const char *dir,
		    struct result *res)
{
	struct rig g;
	rig_up(&g, kernel, mib, pages, dir);
	double *v = calloc((size_t)runs, sizeof(double));
	if (!v)
		die("out of memory", NULL);
	/* Untimed rounds first: whichever size was measured first used to
	 * read up to 2x slower in its first mode (threads, caches, the
	 * scheduler settling). */
	for (int i = 0; i < WARMUP_ROUNDS; i++)
		timed_reset(&g, RUNNING);
	for (int m = RUNNING; m <= CLEAN; m++) {
		for (int i = 0; i < runs; i++)
			v[i] = timed_reset(&g, (enum mode)m);
		res->med[m] = median(v, runs);
		res->p99[m] = quantile(v, runs, 0.99);
	}
	free(v);
	rig_down(&g);
}

/* microvm_fork() latency, median / p99 in us (@runs forks, at most 500). */
static void measure_fork(const char *kernel, uint64_t mib, int pages, int runs, double *med,
			 double *p99)
{
	int in[2], out[2];
	if (pipe(in) < 0 || pipe(out) < 0)
		die("pipe", NULL);
	microvm *vm;
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "pages=%d", pages);
	if (microvm_create(&vm) < 0)
		die("create", NULL);
	if (microvm_set_memory(vm, mib) < 0 || microvm_set_kernel(vm, kernel, cmd) < 0 ||
	    microvm_set_console(vm, in[0], out[1]) < 0 || microvm_start(vm) < 0)
		die("start", vm);
	wait_char(out[0], '\n');
	if (write(in[1], "g", 1) != 1)
		die("console write", NULL);
	wait_char(out[0], 'D');
	if (microvm_pause(vm) < 0)
		die("pause", vm);
	if (runs > 500)
		runs = 500;
	double *v = calloc((size_t)runs, sizeof(double));
	if (!v)
		die("out of memory", NULL);
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.flags = MICROVM_FORK_PAUSED;
	for (int i = 0; i < runs; i++) {
		microvm *child;
		double t0 = now_ms();
		if (microvm_fork(vm, &child, &fc) < 0)
			die("fork", vm);
		v[i] = (now_ms() - t0) * 1000.0;
		microvm_destroy(child);
		usleep(2000); /* let the background teardown finish */
	}
	*med = median(v, runs);
	*p99 = quantile(v, runs, 0.99);
	free(v);
	microvm_destroy(vm);
	close(in[0]), close(in[1]), close(out[0]), close(out[1]);
}

int main(int argc, char **argv)
{
	int runs = 1000, pages = 64;
	const char *dir = NULL;
	static const struct option opts[] = {
		{ "runs", required_argument, NULL, 'r' },
		{ "pages", required_argument, NULL, 'p' },
		{ "dir", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		if (c == 'r')
			runs = atoi(optarg);
		else if (c == 'p')
			pages = atoi(optarg);
		else if (c == 'd')
			dir = optarg;
		else
			return 2;
	}
	if (runs < 1 || pages < 0 || pages > 1024) {
		fprintf(stderr, "usage: bench-reset [--runs N] [--pages 0..1024] [--dir DIR]\n");
		return 2;
	}
	char tmp[] = "/tmp/bench-reset-XXXXXX";
	if (!dir && !(dir = mkdtemp(tmp)))
		die("mkdtemp", NULL);
	char kernel[512], snap[600];
	snprintf(kernel, sizeof(kernel), "%s/dirty.elf", BENCH_TINY_DIR);
	snprintf(snap, sizeof(snap), "%s/snap", dir);

	const uint64_t sizes[] = { 128, 2048 };
	struct result r[2];
	for (int s = 0; s < 2; s++)
		measure(kernel, sizes[s], pages, runs, snap, &r[s]);

	static const char *const names[] = { "running -> running", "paused -> paused",
					     "running, nothing dirtied" };
	printf("microvm_reset, tiny guest, %d dirtied pages, %d runs (median / p99, us)\n", pages,
	       runs);
	printf("| %-26s | %-17s | %-17s |\n|---|---|---|\n", "", "128 MiB", "2 GiB");
	for (int m = 0; m < 3; m++)
		printf("| %-26s | %7.1f / %7.1f | %7.1f / %7.1f |\n", names[m], r[0].med[m],
		       r[0].p99[m], r[1].med[m], r[1].p99[m]);
	double fmed, fp99;
	measure_fork(kernel, 256, pages, runs, &fmed, &fp99);
	printf("\nmicrovm_fork, paused 256 MiB tiny guest -> paused child: median %.1f us, "
	       "p99 %.1f us\n", fmed, fp99);
	if (dir == tmp) {
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "bench-reset: could not remove %s\n", tmp);
	}
	return 0;
}
