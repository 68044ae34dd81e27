/*
 * bench-agent: vsock + guest agent costs in a running Linux guest.
 *
 *   bench-agent --kernel BZIMAGE --initrd AGENT_INITRD [--runs N] [--mib M]
 *
 * Boots the guest (agent as /init), then measures:
 *  - agent connect (vsock stream + HELLO), median over the runs;
 *  - round trip of a trivial command (exec "true" on an open connection:
 *    EXEC -> STARTED -> EXIT), median;
 *  - guest -> host stream throughput: M MiB of stdout (head -c ... /dev/zero)
 *    through the agent over vsock;
 *  - host -> guest: M MiB of stdin into "cat >/dev/null".
 * scripts/bench-agent.sh builds the artifacts and runs this (inside the
 * emulated machine on hosts without VT-x/AMD-V: then these are emulator
 * numbers, useful only as ratios).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microvm_agent.h>

#include "bench.h"

static int count_bytes(void *opaque, int stream, const void *data, size_t len)
{
	(void)stream, (void)data;
	*(size_t *)opaque += len;
	return 0;
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench-agent: %s: %s\n", what, detail);
	exit(1);
}

int main(int argc, char **argv)
{
	const char *kernel = NULL, *initrd = NULL;
	int runs = 50, mib = 64, c;
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' }, { "initrd", required_argument, NULL, 'i' },
		{ "runs", required_argument, NULL, 'n' },   { "mib", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'k')
			kernel = optarg;
		else if (c == 'i')
			initrd = optarg;
		else if (c == 'n')
			runs = atoi(optarg);
		else if (c == 'm')
			mib = atoi(optarg);
		else
			return 2;
	}
	if (!kernel || !initrd || runs < 1 || mib < 1) {
		fprintf(stderr, "usage: bench-agent --kernel PATH --initrd PATH [--runs N] [--mib M]\n");
		return 2;
	}
	microvm *vm;
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3;
	FILE *devnull = fopen("/dev/null", "w");
	if (microvm_create(&vm) < 0 || microvm_set_memory(vm, 512) < 0 ||
	    microvm_set_kernel(vm, kernel, "console=ttyS0 quiet panic=-1 pci=off") < 0 ||
	    microvm_set_initrd(vm, initrd) < 0 || microvm_set_console(vm, -1, fileno(devnull)) < 0 ||
	    microvm_set_vsock(vm, &vs) < 0 || microvm_start(vm) < 0)
		die("boot", microvm_last_error(vm));
	microvm_agent *a;
	double t0 = now_ms();
	if (microvm_agent_connect(vm, 300000, &a) < 0)
		die("agent", microvm_last_error(vm));
	double boot_to_agent = now_ms() - t0;
	microvm_agent_close(a);

	double *conn = calloc((size_t)runs, sizeof(double));
	double *rtt = calloc((size_t)runs, sizeof(double));
	for (int i = 0; i < runs; i++) {
		t0 = now_ms();
		if (microvm_agent_connect(vm, 60000, &a) < 0)
			die("connect", microvm_last_error(vm));
		conn[i] = now_ms() - t0;
		microvm_agent_close(a);
	}
	if (microvm_agent_connect(vm, 60000, &a) < 0)
		die("connect", microvm_last_error(vm));
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	cfg.argv = (const char *const[]){ "true", NULL };
	for (int i = 0; i < runs; i++) {
		t0 = now_ms();
		if (microvm_agent_exec(a, &cfg, &res) < 0 || res.exit_code != 0)
			die("exec true", microvm_agent_last_error(a));
		rtt[i] = now_ms() - t0;
		microvm_exec_result_free(&res);
	}

	/* Guest -> host. */
	char script[128];
	snprintf(script, sizeof(script), "head -c %d /dev/zero", mib << 20);
	size_t got = 0;
	microvm_exec_config out = MICROVM_EXEC_CONFIG_INIT;
	out.argv = (const char *const[]){ "sh", "-c", script, NULL };
	out.on_output = count_bytes;
	out.opaque = &got;
	t0 = now_ms();
	if (microvm_agent_exec(a, &out, &res) < 0 || got != (size_t)mib << 20)
		die("stdout stream", microvm_agent_last_error(a));
	double g2h = now_ms() - t0;
	microvm_exec_result_free(&res);

	/* Host -> guest. */
	size_t n = (size_t)mib << 20;
	char *buf = calloc(1, n);
	microvm_exec_config in = MICROVM_EXEC_CONFIG_INIT;
	in.argv = (const char *const[]){ "sh", "-c", "cat >/dev/null", NULL };
	in.stdin_data = buf;
	in.stdin_len = n;
	t0 = now_ms();
	if (microvm_agent_exec(a, &in, &res) < 0 || res.exit_code != 0)
		die("stdin stream", microvm_agent_last_error(a));
	double h2g = now_ms() - t0;
	microvm_exec_result_free(&res);
	free(buf);
	microvm_agent_close(a);
	microvm_destroy(vm);

	bool emu = getenv("MICROVM_NESTED") != NULL;
	printf("bench-agent: Linux guest, 1 vCPU, 512 MiB, %d runs (medians)%s\n", runs,
	       emu ? "; EMULATOR NUMBERS (QEMU TCG nested SVM), compare only as ratios" : "");
	printf("%-44s %12s\n", "", "value");
	printf("%-44s %12.1f\n", "start -> agent answers (ms)", boot_to_agent);
	printf("%-44s %12.3f\n", "agent connect: vsock + HELLO (ms)", median(conn, runs));
	printf("%-44s %12.3f\n", "exec \"true\" round trip (ms)", median(rtt, runs));
	printf("%-44s %12.1f\n", "guest -> host stdout stream (MiB/s)", mib / (g2h / 1e3));
	printf("%-44s %12.1f\n", "host -> guest stdin stream (MiB/s)", mib / (h2g / 1e3));
	free(conn);
	free(rtt);
	fclose(devnull);
	return 0;
}
