/*
 * bench-snapshot: snapshot and restore costs with the tiny counter guest.
 *
 *   bench-snapshot [--runs N] [--clones N] [--dir DIR]
 *
 * For 128 MiB and 1 GiB of guest RAM: boot the counter payload, pause it,
 * then measure (medians over the runs, all in one process run):
 *  - full snapshot write time and its size (bytes allocated on disk);
 *  - diff snapshot write time after the guest ran ~20 more counts;
 *  - restore: microvm_restore() returning with the VM running, and restore ->
 *    the guest's next console byte (the guest is running again), next to a
 *    cold boot of the same payload (create + start -> first console byte);
 *  - clone rate: N restores of the same snapshot kept alive, per second;
 *  - memory: proportional set size (Pss, /proc/self/smaps_rollup) of the
 *    process with 1 clone and with N clones, i.e. what N clones really cost.
 * Without VT-x/AMD-V the guest itself runs emulated; the restore and
 * snapshot paths measured here are host work and are not.
 */
#include <dirent.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microvm.h>

#include "bench.h"

static void die(const char *what, microvm *vm)
{
	fprintf(stderr, "bench-snapshot: %s: %s\n", what, vm ? microvm_last_error(vm) : "");
	exit(1);
}

/* Wait for one byte on @fd (the guest ran). */
static int wait_byte(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	if (poll(&p, 1, 60000) != 1)
		return -1;
	char buf[4096];
	return read(fd, buf, sizeof(buf)) > 0 ? 0 : -1;
}

static void drain(int fd)
{
	char buf[65536];
	struct pollfd p = { fd, POLLIN, 0 };
	while (poll(&p, 1, 0) == 1 && read(fd, buf, sizeof(buf)) > 0)
		;
}

static uint64_t allocated(const char *dir, const char *file)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	struct stat st;
	return stat(p, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* Pss in KiB of the whole process. */
static long pss_kib(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %ld kB", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static microvm *boot(const char *kernel, uint64_t mib, int out)
{
	microvm *vm;
	if (microvm_create(&vm) < 0)
		die("create", NULL);
	microvm_set_memory(vm, mib);
	if (microvm_set_kernel(vm, kernel, "every=50") < 0 || microvm_set_console(vm, -1, out) < 0 ||
	    microvm_start(vm) < 0)
		die("boot", vm);
	return vm;
}

static microvm *restore(const char *dir, int out, uint32_t flags)
{
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.console_out = out;
	cfg.flags = flags;
	microvm *vm;
	char err[256];
	if (microvm_restore(&vm, dir, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-snapshot: restore: %s\n", err);
		exit(1);
	}
	return vm;
}

struct row {
	double cold, snap, diff, restore_call, restore_run;
	uint64_t snap_bytes, diff_bytes;
	double clone_rate;
	long pss_one, pss_n;
};

static void run_size(const char *kernel, const char *base, uint64_t mib, int runs, int clones,
		     struct row *row)
{
	double *t = calloc((size_t)(runs > clones ? runs : clones), sizeof(double));
	char dir[512], ddir[512];
	snprintf(dir, sizeof(dir), "%s/snap-%llu", base, (unsigned long long)mib);
	snprintf(ddir, sizeof(ddir), "%s/diff-%llu", base, (unsigned long long)mib);
	int p[2];
	if (pipe(p) < 0)
		exit(1);

	/* Cold boot of the same payload and RAM size. */
	for (int i = 0; i < runs; i++) {
		double t0 = now_ms();
		microvm *vm = boot(kernel, mib, p[1]);
		if (wait_byte(p[0]) < 0)
			die("cold boot: no output", vm);
		t[i] = now_ms() - t0;
		microvm_destroy(vm);
		drain(p[0]);
	}
	row->cold = median(t, runs);

	microvm *vm = boot(kernel, mib, p[1]);
	if (wait_byte(p[0]) < 0)
		die("no output", vm);
	usleep(20000);
	int snaps = runs < 20 ? runs : 20;
	for (int i = 0; i < snaps; i++) {
		if (microvm_pause(vm) < 0)
			die("pause", vm);
		double t0 = now_ms();
		if (microvm_snapshot(vm, dir, 0) < 0)
			die("snapshot", vm);
		t[i] = now_ms() - t0;
		microvm_resume(vm);
		drain(p[0]);
		usleep(2000);
	}
	row->snap = median(t, snaps);
	row->snap_bytes = allocated(dir, "memory") + allocated(dir, "state.dtb");
	for (int i = 0; i < snaps; i++) {
		usleep(5000);
		if (microvm_pause(vm) < 0)
			die("pause", vm);
		double t0 = now_ms();
		if (microvm_snapshot(vm, ddir, MICROVM_SNAPSHOT_DIFF) < 0)
			die("diff snapshot", vm);
		t[i] = now_ms() - t0;
		microvm_resume(vm);
		drain(p[0]);
	}
	row->diff = median(t, snaps);
	row->diff_bytes = allocated(ddir, "memory") + allocated(ddir, "state.dtb");
	microvm_pause(vm);
	if (microvm_snapshot(vm, dir, 0) < 0)
		die("snapshot", vm);
	microvm_destroy(vm);
	drain(p[0]);

	double *run = calloc((size_t)runs, sizeof(double));
	for (int i = 0; i < runs; i++) {
		double t0 = now_ms();
		microvm *c = restore(dir, p[1], 0);
		double t1 = now_ms();
		if (wait_byte(p[0]) < 0)
			die("restored VM: no output", c);
		double t2 = now_ms();
		microvm_destroy(c);
		drain(p[0]);
		t[i] = t1 - t0;
		run[i] = t2 - t0;
	}
	row->restore_call = median(t, runs);
	row->restore_run = median(run, runs);
	free(run);

	/* Clones kept alive; paused right away so they do not compete for the
	 * CPU, then resumed together for a moment to touch their pages. */
	long pss0 = pss_kib();
	microvm **cl = calloc((size_t)clones, sizeof(*cl));
	double t0 = now_ms();
	for (int i = 0; i < clones; i++)
		cl[i] = restore(dir, p[1], MICROVM_RESTORE_PAUSED);
	row->clone_rate = clones / ((now_ms() - t0) / 1e3);
	for (int i = 0; i < clones; i++)
		microvm_resume(cl[i]);
	usleep(200000);
	for (int i = 0; i < clones; i++)
		microvm_pause(cl[i]);
	drain(p[0]);
	row->pss_n = pss_kib() - pss0;
	for (int i = 0; i < clones; i++)
		microvm_destroy(cl[i]);
	usleep(300000);
	drain(p[0]);
	long pss1 = pss_kib();
	microvm *one = restore(dir, p[1], 0);
	usleep(200000);
	microvm_pause(one);
	row->pss_one = pss_kib() - pss1;
	microvm_destroy(one);
	drain(p[0]);
	close(p[0]);
	close(p[1]);
	free(cl);
	free(t);
}

int main(int argc, char **argv)
{
	const char *kernel = BENCH_TINY_DIR "/counter.elf";
	int runs = 100, clones = 100, c;
	char base[512] = "";
	static const struct option opts[] = {
		{ "runs", required_argument, NULL, 'n' },
		{ "clones", required_argument, NULL, 'c' },
		{ "dir", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "n:c:d:", opts, NULL)) != -1) {
		if (c == 'n')
			runs = atoi(optarg);
		else if (c == 'c')
			clones = atoi(optarg);
		else if (c == 'd')
			snprintf(base, sizeof(base), "%s", optarg);
		else
			return 2;
	}
	if (runs < 1)
		runs = 1;
	if (clones < 1)
		clones = 1;
	bool own = !base[0];
	if (own) {
		snprintf(base, sizeof(base), "/var/tmp/bench-snapshot-XXXXXX");
		if (!mkdtemp(base))
			return 1;
	}
	static const uint64_t sizes[] = { 128, 1024 };
	struct row rows[2];
	for (int i = 0; i < 2; i++)
		run_size(kernel, base, sizes[i], runs, clones, &rows[i]);

	printf("bench-snapshot: tiny counter guest, 1 vCPU, %d runs (medians), %d clones, "
	       "snapshots in %s\n", runs, clones, base);
	printf("%-44s %14s %14s\n", "", "128 MiB", "1 GiB");
	printf("%-44s %14.3f %14.3f\n", "cold boot -> first output (ms)", rows[0].cold, rows[1].cold);
	printf("%-44s %14.3f %14.3f\n", "restore call, VM running (ms)", rows[0].restore_call,
	       rows[1].restore_call);
	printf("%-44s %14.3f %14.3f\n", "restore -> guest output again (ms)", rows[0].restore_run,
	       rows[1].restore_run);
	printf("%-44s %13.1fx %13.1fx\n", "cold boot / restore call", rows[0].cold / rows[0].restore_call,
	       rows[1].cold / rows[1].restore_call);
	printf("%-44s %14.3f %14.3f\n", "full snapshot write (ms)", rows[0].snap, rows[1].snap);
	printf("%-44s %14llu %14llu\n", "full snapshot on disk (KiB)",
	       (unsigned long long)rows[0].snap_bytes / 1024, (unsigned long long)rows[1].snap_bytes / 1024);
	printf("%-44s %14.3f %14.3f\n", "diff snapshot write (ms)", rows[0].diff, rows[1].diff);
	printf("%-44s %14llu %14llu\n", "diff snapshot on disk (KiB)",
	       (unsigned long long)rows[0].diff_bytes / 1024, (unsigned long long)rows[1].diff_bytes / 1024);
	printf("%-44s %14.0f %14.0f\n", "clones restored per second", rows[0].clone_rate,
	       rows[1].clone_rate);
	printf("%-44s %14ld %14ld\n", "Pss of 1 running clone (KiB)", rows[0].pss_one, rows[1].pss_one);
	char label[64];
	snprintf(label, sizeof(label), "Pss of %d running clones (KiB)", clones);
	printf("%-44s %14ld %14ld\n", label, rows[0].pss_n, rows[1].pss_n);
	if (own) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
		if (system(cmd) != 0)
			return 1;
	}
	return 0;
}
