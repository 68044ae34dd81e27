/*
 * bench-warm: cold boot vs. restore of a Linux guest with the guest agent,
 * up to the agent answering and a first command done.
 *
 *   bench-warm --kernel K --initrd I --dir DIR [--clones N] [--cmdline S]
 *              [--console FILE] [--after SHELL-COMMAND] [--reuse] [--cid CID]
 *              [--hang-dir DIR]
 *
 * Boots K with I (the agent initramfs, scripts/guest-artifacts.sh), 2 vCPUs,
 * 256 MiB, vsock; measures start -> agent connected -> `true` done; pauses
 * and snapshots into DIR; then restores N clones one after the other, each
 * measured the same way (restore call, -> agent connected, -> `true` done)
 * and destroyed. Prints one line per VM and the medians. The guest console
 * of every VM is appended to --console (default /dev/null); --after runs a
 * shell command in each clone after the measurements (its output on stdout);
 * --reuse restores from an existing snapshot in DIR instead of booting;
 * --cid gives the clones another vsock CID (a TRANSPORT_RESET event);
 * --hang-dir: a VM whose agent does not answer within 20 s is paused and
 * snapshotted there (its vCPU, LAPIC and device state), then the bench
 * exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microvm.h>
#include <microvm_agent.h>

#define MAX_CLONES 256

struct opts {
	const char *kernel, *initrd, *dir, *cmdline, *console, *after;
	int clones, reuse;
	uint64_t cid;
};

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench-warm: %s: %s\n", what, detail);
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* --hang-dir: where a clone that does not answer in time is snapshotted
 * (paused as it hangs) before the bench exits, for a look at its state. */
static const char *hang_dir;

static void hung(microvm *vm, const char *what, const char *detail)
{
	if (hang_dir && microvm_pause(vm) == 0 && microvm_snapshot(vm, hang_dir, 0) == 0)
		fprintf(stderr, "bench-warm: hung VM saved in %s\n", hang_dir);
	die(what, detail);
}

/* Agent connected after @t0 and `true` run: fills @ready and @done (ms
 * after @t0). Returns the connection. */
static microvm_agent *ready_and_run(microvm *vm, double t0, double *ready, double *done)
{
	microvm_agent *a;
	int r = microvm_agent_connect(vm, hang_dir ? 20000 : 60000, &a);
	if (r < 0)
		hung(vm, "agent connect", strerror(-r));
	if (hang_dir)
		microvm_agent_set_io_timeout(a, 20000);
	*ready = now_ms() - t0;
	const char *argv[] = { "true", NULL };
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	cfg.argv = argv;
	if (microvm_agent_exec(a, &cfg, &res) < 0 || res.exit_code != 0)
		hung(vm, "exec true", microvm_agent_last_error(a));
	*done = now_ms() - t0;
	microvm_exec_result_free(&res);
	return a;
}

static void cold(const struct opts *o, int console)
{
	microvm *vm;
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3;
	double t0 = now_ms();
	if (microvm_create(&vm) < 0)
		die("create", "out of memory");
	if (microvm_set_vcpus(vm, 2) < 0 || microvm_set_memory(vm, 256) < 0 ||
	    microvm_set_kernel(vm, o->kernel, o->cmdline) < 0 ||
	    microvm_set_initrd(vm, o->initrd) < 0 || microvm_set_console(vm, -1, console) < 0 ||
	    microvm_set_vsock(vm, &vs) < 0 || microvm_set_rng(vm, 1) < 0 || microvm_start(vm) < 0)
		die("boot", microvm_last_error(vm));
	double ready, done;
	microvm_agent *a = ready_and_run(vm, t0, &ready, &done);
	printf("boot:     agent ready %9.1f ms, first command done %9.1f ms\n", ready, done);
	microvm_agent_close(a);
	if (microvm_pause(vm) < 0 || microvm_snapshot(vm, o->dir, 0) < 0)
		die("snapshot", microvm_last_error(vm));
	microvm_destroy(vm);
}

static int on_output(void *opaque, int stream, const void *data, size_t len)
{
	(void)opaque;
	(void)stream;
	fwrite(data, 1, len, stdout);
	return 0;
}

/* --after: a shell command run in each clone, its output on stdout. */
static void run_after(microvm_agent *a, const char *cmd)
{
	const char *argv[] = { "sh", "-c", cmd, NULL };
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	cfg.argv = argv;
	cfg.on_output = on_output;
	if (microvm_agent_exec(a, &cfg, &res) < 0)
		fprintf(stderr, "bench-warm: --after: %s\n", microvm_agent_last_error(a));
	microvm_exec_result_free(&res);
	fflush(stdout);
}

static void clone_one(const struct opts *o, int console, int i, double *rest, double *ready,
		      double *done)
{
	microvm *vm;
	char err[512];
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_out = console;
	rc.vsock_cid = o->cid;
	double t0 = now_ms();
	if (microvm_restore(&vm, o->dir, &rc, err, sizeof(err)) < 0)
		die("restore", err);
	*rest = now_ms() - t0;
	microvm_agent *a = ready_and_run(vm, t0, ready, done);
	printf("clone %3d: restore %7.1f ms, agent ready %9.1f ms, first command done %9.1f ms\n",
	       i, *rest, *ready, *done);
	fflush(stdout);
	if (o->after)
		run_after(a, o->after);
	microvm_agent_close(a);
	microvm_destroy(vm);
}

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "kernel", required_argument, NULL, 'k' }, { "initrd", required_argument, NULL, 'i' },
		{ "dir", required_argument, NULL, 'd' },    { "clones", required_argument, NULL, 'n' },
		{ "cmdline", required_argument, NULL, 'c' }, { "console", required_argument, NULL, 'o' },
		{ "after", required_argument, NULL, 'a' }, { "reuse", no_argument, NULL, 'r' },
		{ "cid", required_argument, NULL, 'C' }, { "hang-dir", required_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct opts){ .cmdline = "console=ttyS0 reboot=k panic=-1 pci=off quiet",
			    .console = "/dev/null", .clones = 5 };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'k': o->kernel = optarg; break;
		case 'i': o->initrd = optarg; break;
		case 'd': o->dir = optarg; break;
		case 'n': o->clones = atoi(optarg); break;
		case 'c': o->cmdline = optarg; break;
		case 'o': o->console = optarg; break;
		case 'a': o->after = optarg; break;
		case 'r': o->reuse = 1; break;
		case 'C': o->cid = strtoull(optarg, NULL, 0); break;
		case 'H': hang_dir = optarg; break;
		default: exit(2);
		}
	}
	if (!o->kernel || !o->initrd || !o->dir || o->clones < 1 || o->clones > MAX_CLONES)
		die("usage", "--kernel K --initrd I --dir DIR [--clones 1..256] [--cmdline S] "
		    "[--console FILE]");
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);
	int console = open(o.console, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (console < 0)
		die(o.console, strerror(errno));
	char state[4096];
	snprintf(state, sizeof(state), "%s/state.dtb", o.dir);
	if (!o.reuse || access(state, F_OK) != 0)
		cold(&o, console);
	static double rest[MAX_CLONES], ready[MAX_CLONES], done[MAX_CLONES];
	for (int i = 0; i < o.clones; i++)
		clone_one(&o, console, i, &rest[i], &ready[i], &done[i]);
	printf("median of %d clones: restore %.1f ms, agent ready %.1f ms, first command done "
	       "%.1f ms\n", o.clones, median(rest, o.clones), median(ready, o.clones),
	       median(done, o.clones));
	return 0;
}
