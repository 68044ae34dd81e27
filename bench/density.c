/*
 * bench-density: what a tiny VM costs the host, next to a plain process.
 *
 *   bench-density [--vms N] [--starts K] [--threads T] [--process] [--kernel PATH]
 *
 * Two measurements, one JSON object on stdout:
 *  - memory: N idle instances are started and each has printed its first
 *    byte; the proportional set size (Pss) they add is divided by N. A VM is
 *    the tiny `idle` guest (prints "idle: ready", halts; 128 MiB, 1 vCPU),
 *    all N in this process (Pss of /proc/self/smaps_rollup after minus
 *    before). With --process an instance is `busybox sleep` (a static
 *    binary) and its Pss is read from /proc/PID/smaps_rollup.
 *  - start rate: T threads each start K instances one after the other:
 *    create + configure + start (or posix_spawn of `busybox echo`), wait for
 *    the first byte of output, destroy (or reap). Every start's latency
 *    (create -> first output, ms) and the rate over the wall time of all
 *    threads (starts/s) are reported.
 * Runs on any /dev/kvm: the tiny guest needs no hardware virtualization.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <microvm.h>

#include "bench.h"

#define BUSYBOX "/bin/busybox"

extern char **environ;

struct opts {
	const char *kernel;
	int vms, starts, threads, process;
};

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench-density: %s: %s\n", what, detail);
	exit(1);
}

static long pss_kib(const char *smaps_rollup)
{
	FILE *f = fopen(smaps_rollup, "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %ld kB", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/* Block until @fd has a byte (the instance's first output); 0 or -1. */
static int first_byte(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char c;
	if (poll(&p, 1, 60000) != 1)
		return -1;
	return read(fd, &c, 1) == 1 ? 0 : -1;
}

/* A started tiny VM whose console goes to the pipe @p (the caller reads it). */
static microvm *vm_start(const char *kernel, int p[2])
{
	microvm *vm;
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe", strerror(errno));
	if (microvm_create(&vm) < 0)
		die("create", "out of memory");
	if (microvm_set_memory(vm, 128) < 0 || microvm_set_kernel(vm, kernel, NULL) < 0 ||
	    microvm_set_console(vm, -1, p[1]) < 0 || microvm_start(vm) < 0)
		die("start", microvm_last_error(vm));
	return vm;
}

/* posix_spawn of busybox with @argv, stdout to the pipe @p. */
static pid_t proc_start(char *const argv[], int p[2])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe", strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	int r = posix_spawn(&pid, BUSYBOX, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		die("posix_spawn " BUSYBOX, strerror(r));
	return pid;
}

static double memory_per_instance(const struct opts *o)
{
	microvm **vms = calloc((size_t)o->vms, sizeof(*vms));
	pid_t *pids = calloc((size_t)o->vms, sizeof(*pids));
	int (*pipes)[2] = calloc((size_t)o->vms, sizeof(*pipes));
	char *const idle[] = { "sleep", "3600", NULL };
	long before = pss_kib("/proc/self/smaps_rollup"), sum = 0;
	for (int i = 0; i < o->vms; i++) {
		if (o->process) {
			pids[i] = proc_start(idle, pipes[i]);
			continue;
		}
		vms[i] = vm_start(o->kernel, pipes[i]);
		if (first_byte(pipes[i][0]) < 0)
			die("idle guest", "no output within 60 s");
	}
	if (o->process) {
		usleep(200000); /* each sleep has exec'd and faulted its pages in */
		for (int i = 0; i < o->vms; i++) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pids[i]);
			sum += pss_kib(path);
		}
	} else {
		sum = pss_kib("/proc/self/smaps_rollup") - before;
	}
	for (int i = 0; i < o->vms; i++) {
		if (o->process) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		} else {
			microvm_destroy(vms[i]);
		}
		close(pipes[i][0]);
		close(pipes[i][1]);
	}
	free(vms);
	free(pids);
	free(pipes);
	return (double)sum / o->vms;
}

struct starter {
	const struct opts *o;
	double *lat; /* o->starts latencies, ms */
};

static void *starter_main(void *arg)
{
	struct starter *s = arg;
	char *const echo[] = { "echo", "i", NULL };
	for (int i = 0; i < s->o->starts; i++) {
		int p[2];
		double t0 = now_ms();
		if (s->o->process) {
			pid_t pid = proc_start(echo, p);
			if (first_byte(p[0]) < 0)
				die("busybox echo", "no output");
			s->lat[i] = now_ms() - t0;
			waitpid(pid, NULL, 0);
		} else {
			microvm *vm = vm_start(s->o->kernel, p);
			if (first_byte(p[0]) < 0)
				die("idle guest", "no output within 60 s");
			s->lat[i] = now_ms() - t0;
			microvm_destroy(vm);
		}
		close(p[0]);
		close(p[1]);
	}
	return NULL;
}

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "kernel", required_argument, NULL, 'k' }, { "vms", required_argument, NULL, 'n' },
		{ "starts", required_argument, NULL, 's' }, { "threads", required_argument, NULL, 't' },
		{ "process", no_argument, NULL, 'p' },      { NULL, 0, NULL, 0 },
	};
	*o = (struct opts){ .kernel = BENCH_TINY_DIR "/idle.elf", .vms = 100, .starts = 100,
			    .threads = 1 };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'k': o->kernel = optarg; break;
		case 'n': o->vms = atoi(optarg); break;
		case 's': o->starts = atoi(optarg); break;
		case 't': o->threads = atoi(optarg); break;
		case 'p': o->process = 1; break;
		default: exit(2);
		}
	}
	if (o->vms < 1 || o->starts < 1 || o->threads < 1 || o->threads > 64)
		die("usage", "--vms N --starts K --threads 1..64 [--process] [--kernel PATH]");
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);
	double mem = memory_per_instance(&o);

	int n = o.starts * o.threads;
	double *lat = calloc((size_t)n, sizeof(double));
	struct starter *st = calloc((size_t)o.threads, sizeof(*st));
	pthread_t *th = calloc((size_t)o.threads, sizeof(*th));
	double t0 = now_ms();
	for (int i = 0; i < o.threads; i++) {
		st[i] = (struct starter){ &o, lat + (size_t)i * o.starts };
		if (pthread_create(&th[i], NULL, starter_main, &st[i]) != 0)
			die("pthread_create", "failed");
	}
	for (int i = 0; i < o.threads; i++)
		pthread_join(th[i], NULL);
	double wall = now_ms() - t0;

	printf("{\"system\": \"%s\", \"instances\": %d, \"pss_kib_per_instance\": %.1f, "
	       "\"threads\": %d, \"starts\": %d, \"wall_ms\": %.3f, \"rate_per_s\": %.2f, "
	       "\"start_ms\": [",
	       o.process ? "process" : "libmicrovm", o.vms, mem, o.threads, n, wall,
	       n / (wall / 1000.0));
	for (int i = 0; i < n; i++)
		printf("%s%.4f", i ? ", " : "", lat[i]);
	printf("]}\n");
	free(lat);
	free(st);
	free(th);
	return 0;
}
