/*
 * bench-boot: cold-start cost of a tiny guest, measured from the host.
 *
 *   bench-boot [--kernel PATH] [--runs N] [--samples FILE]
 *
 * For each run: microvm_create + configure + microvm_start, then block on the
 * console pipe until the guest's first port write (a byte of "Hello...")
 * arrives, then wait for the guest's reset, then destroy. Prints the median,
 * p10 and p90 of each phase in milliseconds. --samples writes every run's
 * "create -> first guest output" (ms), one per line, to FILE (for plots).
 */
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microvm.h>

#include "bench.h"

int main(int argc, char **argv)
{
	const char *kernel = BENCH_TINY_DIR "/hello.elf", *samples = NULL;
	int runs = 200, c;
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "runs", required_argument, NULL, 'n' },
		{ "samples", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "k:n:s:", opts, NULL)) != -1) {
		if (c == 'k')
			kernel = optarg;
		else if (c == 'n')
			runs = atoi(optarg);
		else if (c == 's')
			samples = optarg;
		else
			return 2;
	}
	if (runs < 1)
		runs = 1;
	enum { CREATE, START, FIRST, TOTAL_FIRST, RESET, DESTROY, NPH };
	static const char *names[NPH] = {
		"create+configure", "start (build VM, load, threads)", "start -> first guest output",
		"create -> first guest output", "first output -> guest reset seen", "destroy",
	};
	double *t[NPH];
	for (int i = 0; i < NPH; i++)
		t[i] = calloc((size_t)runs, sizeof(double));

	for (int i = 0; i < runs; i++) {
		int p[2];
		if (pipe(p) < 0)
			return 1;
		double t0 = now_ms();
		microvm *vm;
		if (microvm_create(&vm) < 0)
			return 1;
		microvm_set_memory(vm, 128);
		if (microvm_set_kernel(vm, kernel, NULL) < 0 || microvm_set_console(vm, -1, p[1]) < 0) {
			fprintf(stderr, "bench-boot: %s\n", microvm_last_error(vm));
			return 1;
		}
		double t1 = now_ms();
		if (microvm_start(vm) < 0) {
			fprintf(stderr, "bench-boot: %s\n", microvm_last_error(vm));
			return 1;
		}
		double t2 = now_ms();
		char ch;
		if (read(p[0], &ch, 1) != 1)
			return 1;
		double t3 = now_ms();
		microvm_exit ex = MICROVM_EXIT_INIT;
		if (microvm_wait(vm, 60000, &ex) < 0 || ex.reason != MICROVM_EXIT_RESET) {
			fprintf(stderr, "bench-boot: guest did not reset: %s\n", ex.message);
			return 1;
		}
		double t4 = now_ms();
		microvm_destroy(vm);
		double t5 = now_ms();
		close(p[0]);
		close(p[1]);
		t[CREATE][i] = t1 - t0;
		t[START][i] = t2 - t1;
		t[FIRST][i] = t3 - t2;
		t[TOTAL_FIRST][i] = t3 - t0;
		t[RESET][i] = t4 - t3;
		t[DESTROY][i] = t5 - t4;
	}
	if (samples) {
		FILE *f = fopen(samples, "w");
		if (!f) {
			perror(samples);
			return 1;
		}
		for (int i = 0; i < runs; i++)
			fprintf(f, "%.4f\n", t[TOTAL_FIRST][i]);
		if (fclose(f) != 0) {
			perror(samples);
			return 1;
		}
	}
	printf("bench-boot: %d runs of %s (128 MiB, 1 vCPU), times in ms\n", runs, kernel);
	printf("%-36s %10s %10s %10s\n", "phase", "median", "p10", "p90");
	for (int i = 0; i < NPH; i++) {
		double med = quantile(t[i], runs, 0.5);
		printf("%-36s %10.3f %10.3f %10.3f\n", names[i], med, quantile(t[i], runs, 0.1),
		       quantile(t[i], runs, 0.9));
		free(t[i]);
	}
	return 0;
}
