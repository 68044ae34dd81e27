/*
 * bench-serve-linux: one process serving function calls in a Linux guest
 * through the guest agent, four ways: the Linux + agent counterpart of
 * bench-serve (tiny guest). bench/serve-linux.sh builds what it needs and
 * runs it (inside the emulated machine on hosts without VT-x/AMD-V).
 *
 *   bench-serve-linux --kernel BZIMAGE --initrd AGENT_INITRD [--calls N]
 *       [--cold-calls N] [--vcpus N] [--mib N] [--dir DIR]
 *
 * The guest is the project's default one: its kernel and the initramfs
 * whose /init is the guest agent (scripts/guest-artifacts.sh), with vsock
 * and virtio-rng. A call is: connect to the agent (vsock + HELLO) and run
 *   sh -c SCRIPT sh TOKEN
 * where SCRIPT fails (exit 3) if /tmp/serve-call (tmpfs) exists, else
 * writes TOKEN (new for every call) there and prints the file back; the
 * call fails unless the output is TOKEN and the exit status 0. So every
 * call shows that it started from a state in which no earlier call ran.
 * Per mode:
 *  - cold boot: create + start a VM, connect (that waits for the boot and
 *    the agent), run, destroy;
 *  - restore: microvm_restore() of the template, connect, run, destroy;
 *  - reset: one VM restored once from the template; connect, run, close
 *    the connection, microvm_reset() back to the template;
 *  - fork: a paused parent restored once from the template; microvm_fork()
 *    a running child, connect, run, destroy the child.
 * The template is a booted VM whose agent answered one connection (a check
 * that /tmp is a tmpfs), closed again before the VM is paused and
 * snapshotted into DIR (default: a new directory under $TMPDIR or /tmp;
 * inside the emulated machine /tmp is its own tmpfs). Agent connections are
 * not part of a snapshot: after a restore, reset or fork the host connects
 * anew (a reset also closes the host side of streams still open, so the
 * connection is closed before it).
 *
 * A call's latency runs from its start to the command's result, plus the
 * reset in reset mode; it is split into making the VM ready (boot, restore,
 * fork, or the reset after the call), the agent connection, and the command.
 * destroy hands the kernel's teardown to a background thread: it counts in
 * the throughput (wall time of all of a mode's calls), not in the latency.
 * Progress goes to stderr, one line per call; the table to stdout. With
 * MICROVM_NESTED=1 (tests/harness/run-nested.sh) the table says that these
 * are emulator numbers; MICROVM_BENCH_HOST, if set, is printed as the host
 * facts (the script sets it from outside the emulated machine).
 */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <microvm.h>
#include <microvm_agent.h>

#include "bench.h"

#define CALLS_MAX 10000
#define CONNECT_TIMEOUT_MS 120000 /* a cold boot in a loaded emulator */
#define COMMAND_TIMEOUT_MS 120000
#define CMDLINE "console=ttyS0 reboot=k panic=-1 pci=off quiet tsc=reliable"

static const char call_script[] =
	"f=/tmp/serve-call; "
	"if [ -e $f ]; then echo \"left over from an earlier call: $(cat $f)\"; exit 3; fi; "
	"echo \"$1\" >$f && cat $f";

/* Every VM's console goes to this memfd; it is emptied at each call and its
 * tail printed when something fails. */
static int console_fd = -1;

static void console_tail(void)
{
	char buf[3000];
	off_t end = lseek(console_fd, 0, SEEK_END);
	off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
	ssize_t n = pread(console_fd, buf, sizeof(buf), from);
	if (n > 0)
		fprintf(stderr, "---- guest console (tail) ----\n%.*s\n----\n", (int)n, buf);
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench-serve-linux: %s: %s\n", what, detail);
	if (console_fd >= 0)
		console_tail();
	exit(1);
}

static void console_clear(void)
{
	if (ftruncate(console_fd, 0) < 0 || lseek(console_fd, 0, SEEK_SET) < 0)
		die("console memfd", strerror(errno));
}

struct opts {
	const char *kernel, *initrd, *dir;
	int calls, cold_calls, vcpus, mib;
};

static microvm *boot(const struct opts *o)
{
	microvm *vm;
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3;
	if (microvm_create(&vm) < 0)
		die("create", "out of memory");
	if (microvm_set_vcpus(vm, (uint32_t)o->vcpus) < 0 ||
	    microvm_set_memory(vm, (uint64_t)o->mib) < 0 ||
	    microvm_set_kernel(vm, o->kernel, CMDLINE) < 0 || microvm_set_initrd(vm, o->initrd) < 0 ||
	    microvm_set_console(vm, -1, console_fd) < 0 || microvm_set_vsock(vm, &vs) < 0 ||
	    microvm_set_rng(vm, 1) < 0 || microvm_start(vm) < 0)
		die("boot", microvm_last_error(vm));
	return vm;
}

static microvm *restore(const char *snap, uint32_t flags)
{
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_out = console_fd;
	rc.flags = flags;
	microvm *vm;
	char err[512];
	if (microvm_restore(&vm, snap, &rc, err, sizeof(err)) < 0)
		die("restore", err);
	return vm;
}

static microvm_agent *agent_connect(microvm *vm)
{
	microvm_agent *a;
	int r = microvm_agent_connect(vm, CONNECT_TIMEOUT_MS, &a);
	if (r < 0) {
		char detail[600];
		snprintf(detail, sizeof(detail), "%s (%s)", strerror(-r), microvm_last_error(vm));
		die("agent connect", detail);
	}
	return a;
}

/* Run `sh -c @script sh @arg`; dies unless it exits 0 printing the line
 * @want. */
static void agent_sh(microvm_agent *a, const char *script, const char *arg, const char *want)
{
	char line[128];
	snprintf(line, sizeof(line), "%s\n", want);
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	cfg.argv = (const char *const[]){ "sh", "-c", script, "sh", arg, NULL };
	cfg.timeout_ms = COMMAND_TIMEOUT_MS;
	if (microvm_agent_exec(a, &cfg, &res) < 0)
		die("exec", microvm_agent_last_error(a));
	if (res.exit_code != 0 || strcmp(res.out, line) != 0) {
		char detail[1200];
		res.out[strcspn(res.out, "\n")] = '\0';
		snprintf(detail, sizeof(detail), "exit %d, wanted \"%s\", got stdout \"%.400s\" "
			 "stderr \"%.400s\"", res.exit_code, want, res.out, res.err);
		die("call", detail);
	}
	microvm_exec_result_free(&res);
}

/* The template every warm mode starts from: the agent answered once (and
 * found /tmp on a tmpfs), the connection is closed, the VM is paused. */
static void make_template(const struct opts *o, const char *snap)
{
	fprintf(stderr, "bench-serve-linux: booting the template VM\n");
	double t0 = now_ms();
	microvm *vm = boot(o);
	microvm_agent *a = agent_connect(vm);
	agent_sh(a, "grep -q '^[^ ]* /tmp tmpfs ' /proc/mounts && echo tmpfs", "", "tmpfs");
	microvm_agent_close(a);
	usleep(200000); /* the agent sees the close and waits for the next one */
	if (microvm_pause(vm) < 0 || microvm_snapshot(vm, snap, 0) < 0)
		die("snapshot", microvm_last_error(vm));
	microvm_destroy(vm);
	fprintf(stderr, "bench-serve-linux: template in %s (%.0f ms)\n", snap, now_ms() - t0);
}

/* ---------------------------------------------------------------- modes */

enum mode { COLD, RESTORE, RESET, FORK, MODES };

static const char *const mode_names[MODES] = { "cold boot per call", "restore per call",
					       "reset per call", "fork per call" };

struct ctx {
	const struct opts *o;
	const char *snap;
	microvm *vm; /* reset: the serving VM; fork: the paused parent */
};

/* The parts of one call's latency, in ms. */
struct parts {
	double ready, connect, command;
};

static microvm *ready_vm(struct ctx *c, enum mode m)
{
	microvm *vm = c->vm;
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.console_out = console_fd;
	if (m == COLD)
		vm = boot(c->o);
	else if (m == RESTORE)
		vm = restore(c->snap, 0);
	else if (m == FORK && microvm_fork(c->vm, &vm, &fc) < 0)
		die("fork", microvm_last_error(c->vm));
	return vm;
}

/* Serve call @i in mode @m; its latency in ms, split into *@p. */
static double serve(struct ctx *c, enum mode m, int i, struct parts *p)
{
	char token[64];
	snprintf(token, sizeof(token), "call-%d-%d-%ld", (int)m, i, (long)getpid());
	console_clear();
	double t0 = now_ms();
	microvm *vm = ready_vm(c, m);
	double t1 = now_ms();
	microvm_agent *a = agent_connect(vm);
	double t2 = now_ms();
	agent_sh(a, call_script, token, token);
	double t3 = now_ms();
	microvm_agent_close(a);
	if (m == RESET && microvm_reset(c->vm, 0) < 0)
		die("reset", microvm_last_error(c->vm));
	double t4 = now_ms();
	*p = (struct parts){ .ready = (t1 - t0) + (t4 - t3), .connect = t2 - t1,
			     .command = t3 - t2 };
	if (vm != c->vm)
		microvm_destroy(vm);
	return t4 - t0;
}

struct row {
	int calls;
	double rate, p50, p99, ready50, connect50, command50;
};

static void summarize(struct row *r, double *lat, struct parts *p, int n, double wall_ms)
{
	double *v = calloc((size_t)n, sizeof(double));
	if (!v)
		die("out of memory", "");
	r->calls = n;
	r->rate = n / (wall_ms / 1e3);
	r->p50 = quantile(lat, n, 0.5);
	r->p99 = quantile(lat, n, 0.99);
	for (int i = 0; i < n; i++)
		v[i] = p[i].ready;
	r->ready50 = median(v, n);
	for (int i = 0; i < n; i++)
		v[i] = p[i].connect;
	r->connect50 = median(v, n);
	for (int i = 0; i < n; i++)
		v[i] = p[i].command;
	r->command50 = median(v, n);
	free(v);
}

static void run_mode(const struct opts *o, const char *snap, enum mode m, struct row *row)
{
	struct ctx c = { .o = o, .snap = snap };
	int n = m == COLD ? o->cold_calls : o->calls;
	if (m == RESET)
		c.vm = restore(snap, 0);
	else if (m == FORK)
		c.vm = restore(snap, MICROVM_RESTORE_PAUSED);
	double *lat = calloc((size_t)n, sizeof(double));
	struct parts *p = calloc((size_t)n, sizeof(*p));
	if (!lat || !p)
		die("out of memory", "");
	double t0 = now_ms();
	for (int i = 0; i < n; i++) {
		lat[i] = serve(&c, m, i, &p[i]);
		fprintf(stderr, "bench-serve-linux: %s: call %d/%d: %.1f ms (VM ready %.1f, "
			"connect %.1f, command %.1f)\n", mode_names[m], i + 1, n, lat[i], p[i].ready,
			p[i].connect, p[i].command);
	}
	summarize(row, lat, p, n, now_ms() - t0);
	free(lat);
	free(p);
	microvm_destroy(c.vm);
	usleep(200000); /* background teardowns end before the next mode */
}

/* ---------------------------------------------------------------- output */

static void print_header(const struct opts *o)
{
	const char *host = getenv("MICROVM_BENCH_HOST");
	struct utsname u;
	uname(&u);
	double load[3] = { 0, 0, 0 };
	getloadavg(load, 3);
	if (getenv("MICROVM_NESTED"))
		printf("bench-serve-linux: Linux + agent, inside the emulated machine (QEMU TCG + "
		       "nested SVM): emulator numbers, compare only as ratios\n");
	else
		printf("bench-serve-linux: Linux + agent, native KVM\n");
	if (host)
		printf("host: %s\n", host);
	printf("ran on: Linux %s, %ld CPUs, load average %.2f %.2f %.2f at the end\n", u.release,
	       sysconf(_SC_NPROCESSORS_ONLN), load[0], load[1], load[2]);
	printf("guest: the project's kernel + agent initramfs, %d vCPU, %d MiB, vsock, rng; a call "
	       "= agent connect + `sh -c` that fails if /tmp/serve-call (tmpfs) exists, else "
	       "writes it and reads it back\n", o->vcpus, o->mib);
	printf("calls: %d cold boots, %d per other mode; p99 of fewer than 100 calls is "
	       "about the slowest call; VM ready = create + start, restore, fork, or the reset "
	       "after the call; connect = to the agent (after a cold start: the guest's boot)\n",
	       o->cold_calls, o->calls);
}

static void print(const struct opts *o, const struct row *r)
{
	print_header(o);
	printf("| %-18s | %5s | %7s | %9s | %9s | %14s | %14s | %14s | %13s | %13s |\n", "mode",
	       "calls", "calls/s", "p50 (ms)", "p99 (ms)", "x cold calls/s", "cold p50 / p50",
	       "p50 VM ready", "p50 connect", "p50 command");
	printf("|---|---|---|---|---|---|---|---|---|---|\n");
	for (int m = 0; m < MODES; m++)
		printf("| %-18s | %5d | %7.2f | %9.1f | %9.1f | %13.1fx | %13.1fx | %14.1f | %13.1f "
		       "| %13.1f |\n", mode_names[m], r[m].calls, r[m].rate, r[m].p50, r[m].p99,
		       r[m].rate / r[COLD].rate, r[COLD].p50 / r[m].p50, r[m].ready50,
		       r[m].connect50, r[m].command50);
}

/* ---------------------------------------------------------------- main */

static void usage(void)
{
	fprintf(stderr, "usage: bench-serve-linux --kernel BZIMAGE --initrd AGENT_INITRD "
			"[--calls 1..%d] [--cold-calls 1..%d] [--vcpus 1..8] [--mib 64..4096] "
			"[--dir DIR]\n", CALLS_MAX, CALLS_MAX);
	exit(2);
}

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "kernel", required_argument, NULL, 'k' }, { "initrd", required_argument, NULL, 'i' },
		{ "calls", required_argument, NULL, 'n' }, { "cold-calls", required_argument, NULL, 'C' },
		{ "vcpus", required_argument, NULL, 'v' }, { "mib", required_argument, NULL, 'm' },
		{ "dir", required_argument, NULL, 'd' },   { NULL, 0, NULL, 0 },
	};
	*o = (struct opts){ .calls = 50, .cold_calls = 10, .vcpus = 1, .mib = 256 };
	for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
		switch (c) {
		case 'k': o->kernel = optarg; break;
		case 'i': o->initrd = optarg; break;
		case 'n': o->calls = atoi(optarg); break;
		case 'C': o->cold_calls = atoi(optarg); break;
		case 'v': o->vcpus = atoi(optarg); break;
		case 'm': o->mib = atoi(optarg); break;
		case 'd': o->dir = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || !o->kernel || !o->initrd || o->calls < 1 || o->calls > CALLS_MAX ||
	    o->cold_calls < 1 || o->cold_calls > CALLS_MAX || o->vcpus < 1 || o->vcpus > 8 ||
	    o->mib < 64 || o->mib > 4096)
		usage();
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);
	console_fd = memfd_create("bench-serve-linux-console", MFD_CLOEXEC);
	if (console_fd < 0)
		die("memfd_create", strerror(errno));
	char tmp[4096];
	const char *td = getenv("TMPDIR");
	snprintf(tmp, sizeof(tmp), "%s/bench-serve-linux-XXXXXX", td && *td ? td : "/tmp");
	if (!o.dir && !(o.dir = mkdtemp(tmp)))
		die("mkdtemp", strerror(errno));
	char snap[4200];
	snprintf(snap, sizeof(snap), "%s/template", o.dir);
	make_template(&o, snap);
	struct row r[MODES];
	for (int m = 0; m < MODES; m++)
		run_mode(&o, snap, (enum mode)m, &r[m]);
	print(&o, r);
	if (o.dir == tmp) {
		char cmd[4300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "bench-serve-linux: could not remove %s\n", tmp);
	}
	return 0;
}
