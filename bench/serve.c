/*
 * bench-serve: one process serving N function calls with the tiny "dirty"
 * guest, four ways.
 *
 *   bench-serve [--calls N] [--pages N] [--mib N] [--dir DIR]
 *
 * A call is: a request byte to the guest's console, the guest writes to
 * --pages pages (default 64) of its RAM and answers "D". A call's latency
 * runs from the moment the host starts serving it to the answer plus
 * whatever makes the VM ready for the next call, per mode:
 *  - cold boot: create + start a VM from the payload (it prints "ready"
 *    once booted), request, answer, destroy;
 *  - restore: microvm_restore() of a snapshot taken at the guest's wait for
 *    its first request, request, answer, destroy;
 *  - reset: one VM restored once; request, answer, microvm_reset() back to
 *    the snapshot (clean state for the next call);
 *  - fork: a paused parent at that wait (restored once); microvm_fork() a
 *    running child, request, answer, destroy the child.
 * destroy hands the kernel's VM teardown to a background thread (see
 * microvm_destroy): it is in the throughput (wall time of all calls), not
 * in the latency, though it runs while the next call is served. One table:
 * calls/s, p50 and p99 latency, each mode's ratios to cold boot, and the
 * medians of the latency's two parts: making the VM ready (boot, restore,
 * fork, or the reset) and the request itself. Without VT-x/AMD-V the guest itself runs emulated;
 * its part (reading a byte, 64 page writes) is the same in every mode.
 */
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microvm.h>

#include "bench.h"

#define CALLS_MAX 100000

static void die(const char *what, microvm *vm)
{
	fprintf(stderr, "bench-serve: %s: %s\n", what, vm ? microvm_last_error(vm) : "");
	exit(1);
}

/* The console pipes every VM of a mode shares (borrowed by each VM). */
struct wires {
	int in_r, in_w;   /* requests: the bench writes, the guest reads */
	int out_r, out_w; /* answers */
};

static void wires_open(struct wires *w)
{
	int in[2], out[2];
	if (pipe(in) < 0 || pipe(out) < 0)
		die("pipe", NULL);
	w->in_r = in[0], w->in_w = in[1], w->out_r = out[0], w->out_w = out[1];
}

static void wires_close(struct wires *w)
{
	close(w->in_r), close(w->in_w), close(w->out_r), close(w->out_w);
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

/* One request: a byte in, "D" out. */
static void call(const struct wires *w)
{
	if (write(w->in_w, "g", 1) != 1)
		die("console write", NULL);
	wait_char(w->out_r, 'D');
}

struct setup {
	const char *kernel;
	char cmdline[64];
	uint64_t mib;
	char snap[600];
};

static microvm *boot(const struct setup *s, const struct wires *w)
{
	microvm *vm;
	if (microvm_create(&vm) < 0)
		die("create", NULL);
	if (microvm_set_memory(vm, s->mib) < 0 || microvm_set_kernel(vm, s->kernel, s->cmdline) < 0 ||
	    microvm_set_console(vm, w->in_r, w->out_w) < 0 || microvm_start(vm) < 0)
		die("start", vm);
	return vm;
}

static microvm *restore(const struct setup *s, const struct wires *w, uint32_t flags)
{
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_in = w->in_r;
	rc.console_out = w->out_w;
	rc.flags = flags;
	microvm *vm;
	char err[256];
	if (microvm_restore(&vm, s->snap, &rc, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-serve: restore: %s\n", err);
		exit(1);
	}
	return vm;
}

/* The snapshot every warm mode starts from: the guest booted and waiting
 * for its first request. */
static void make_snapshot(const struct setup *s)
{
	struct wires w;
	wires_open(&w);
	microvm *vm = boot(s, &w);
	wait_char(w.out_r, '\n'); /* "ready" */
	usleep(20000);            /* well inside its wait loop */
	if (microvm_pause(vm) < 0 || microvm_snapshot(vm, s->snap, 0) < 0)
		die("snapshot", vm);
	microvm_destroy(vm);
	wires_close(&w);
}

/* ---------------------------------------------------------------- modes */

enum mode { COLD, RESTORE, RESET, FORK, MODES };

static const char *const mode_names[MODES] = { "cold boot per call", "restore per call",
					       "reset per call", "fork per call" };

struct ctx {
	const struct setup *s;
	struct wires w;
	microvm *vm; /* reset: the serving VM; fork: the paused parent */
};

static void mode_begin(struct ctx *c, enum mode m)
{
	/* The parent reads no console: its requests are its children's. */
	struct wires parent = c->w;
	parent.in_r = -1;
	c->vm = NULL;
	if (m == RESET)
		c->vm = restore(c->s, &c->w, 0);
	else if (m == FORK)
		c->vm = restore(c->s, &parent, MICROVM_RESTORE_PAUSED);
}

/* Serve one call in mode @m; its latency in us, of which *@vm_us making
 * the VM ready (boot, restore, fork, or the reset after the answer). */
static double serve(struct ctx *c, enum mode m, double *vm_us)
{
	double t0 = now_ms();
	microvm *vm = NULL;
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.console_in = c->w.in_r;
	fc.console_out = c->w.out_w;
	if (m == COLD)
		vm = boot(c->s, &c->w);
	else if (m == RESTORE)
		vm = restore(c->s, &c->w, 0);
	else if (m == FORK && microvm_fork(c->vm, &vm, &fc) < 0)
		die("fork", c->vm);
	double t1 = now_ms();
	call(&c->w);
	double t2 = now_ms();
	if (m == RESET && microvm_reset(c->vm, 0) < 0)
		die("reset", c->vm);
	double us = (now_ms() - t0) * 1000.0;
	*vm_us = us - (t2 - t1) * 1000.0;
	if (vm)
		microvm_destroy(vm);
	return us;
}

struct row {
	double rate, p50, p99, vm50, req50;
};

static void run_mode(const struct setup *s, enum mode m, int calls, struct row *row)
{
	struct ctx c = { .s = s };
	wires_open(&c.w);
	mode_begin(&c, m);
	double *lat = calloc((size_t)calls * 3, sizeof(double));
	if (!lat)
		die("out of memory", NULL);
	double *vm = lat + calls, *req = lat + 2 * calls;
	double t0 = now_ms();
	for (int i = 0; i < calls; i++) {
		lat[i] = serve(&c, m, &vm[i]);
		req[i] = lat[i] - vm[i];
	}
	row->rate = calls / ((now_ms() - t0) / 1e3);
	row->p50 = quantile(lat, calls, 0.5);
	row->p99 = quantile(lat, calls, 0.99);
	row->vm50 = median(vm, calls);
	row->req50 = median(req, calls);
	free(lat);
	microvm_destroy(c.vm);
	wires_close(&c.w);
	usleep(100000); /* background teardowns end before the next mode */
}

static void print(const struct row *r, int calls, int pages, uint64_t mib)
{
	printf("bench-serve: %d calls per mode, tiny dirty guest (%d pages written per call), "
	       "%llu MiB, 1 vCPU\n", calls, pages, (unsigned long long)mib);
	printf("| %-20s | %9s | %10s | %10s | %12s | %12s | %13s | %13s |\n", "mode", "calls/s",
	       "p50 (us)", "p99 (us)", "x cold calls/s", "cold p50 / p50", "p50 VM ready",
	       "p50 request");
	printf("|---|---|---|---|---|---|---|---|\n");
	for (int m = 0; m < MODES; m++)
		printf("| %-20s | %9.0f | %10.1f | %10.1f | %13.1fx | %13.1fx | %13.1f | %13.1f |\n",
		       mode_names[m], r[m].rate, r[m].p50, r[m].p99, r[m].rate / r[COLD].rate,
		       r[COLD].p50 / r[m].p50, r[m].vm50, r[m].req50);
}

int main(int argc, char **argv)
{
	int calls = 200, pages = 64, mib = 128;
	const char *dir = NULL;
	static const struct option opts[] = {
		{ "calls", required_argument, NULL, 'c' },
		{ "pages", required_argument, NULL, 'p' },
		{ "mib", required_argument, NULL, 'm' },
		{ "dir", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		if (c == 'c')
			calls = atoi(optarg);
		else if (c == 'p')
			pages = atoi(optarg);
		else if (c == 'm')
			mib = atoi(optarg);
		else if (c == 'd')
			dir = optarg;
		else
			return 2;
	}
	if (calls < 1 || calls > CALLS_MAX || pages < 0 || pages > 1024 || mib < 16 ||
	    mib > 4096) {
		fprintf(stderr, "usage: bench-serve [--calls 1..%d] [--pages 0..1024] "
				"[--mib 16..4096] [--dir DIR]\n", CALLS_MAX);
		return 2;
	}
	char tmp[] = "/var/tmp/bench-serve-XXXXXX";
	if (!dir && !(dir = mkdtemp(tmp)))
		die("mkdtemp", NULL);
	struct setup s = { .kernel = BENCH_TINY_DIR "/dirty.elf", .mib = (uint64_t)mib };
	snprintf(s.cmdline, sizeof(s.cmdline), "pages=%d", pages);
	snprintf(s.snap, sizeof(s.snap), "%s/snap", dir);
	make_snapshot(&s);
	struct row r[MODES];
	for (int m = 0; m < MODES; m++)
		run_mode(&s, (enum mode)m, calls, &r[m]);
	print(r, calls, pages, s.mib);
	if (dir == tmp) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "bench-serve: could not remove %s\n", tmp);
	}
	return 0;
}
