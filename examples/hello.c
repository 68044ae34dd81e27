/*
 * microvm-hello: boot a kernel image in a microVM with the console on
 * stdin/stdout, and exit with a status that says how the guest stopped:
 *   0 guest reset or powered off, 1 guest crashed, 2 internal error,
 *   3 bad arguments or the VM could not start.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microvm.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: microvm-hello --kernel PATH [--initrd PATH] [--cmdline STR]\n"
		   "                     [--cpus N] [--mem MIB] [--disk PATH[,ro]]...\n"
		   "                     [--rng] [--virtio-console] [--no-acpi] [--verbose]\n");
}

static void log_stderr(void *opaque, int level, const char *msg)
{
	(void)opaque;
	fprintf(stderr, "microvm[%d]: %s\n", level, msg);
}

/* --disk PATH[,ro] */
static int add_disks(microvm *vm, const char **disks, int n)
{
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s", disks[i]);
		microvm_disk_config cfg = MICROVM_DISK_CONFIG_INIT;
		size_t len = strlen(path);
		if (len > 3 && strcmp(path + len - 3, ",ro") == 0) {
			path[len - 3] = 0;
			cfg.flags |= MICROVM_DISK_READ_ONLY;
		}
		cfg.path = path;
		int r = microvm_add_disk(vm, &cfg);
		if (r < 0)
			return r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "cpus", required_argument, NULL, 'n' },
		{ "mem", required_argument, NULL, 'm' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "disk", required_argument, NULL, 'd' },
		{ "rng", no_argument, NULL, 'r' },
		{ "virtio-console", no_argument, NULL, 'V' },
		{ "no-acpi", no_argument, NULL, 'A' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *kernel = NULL, *initrd = NULL;
	/* A Linux guest needs no more than this on our machine model. */
	const char *cmdline = "console=ttyS0 reboot=k panic=-1 pci=off";
	unsigned long cpus = 1, mem = 128;
	int verbose = 0, rng = 0, vcon = 0, no_acpi = 0, c;
	const char *disks[8];
	int ndisks = 0;
	char *end;
	while ((c = getopt_long(argc, argv, "k:i:c:n:m:vhd:rVA", opts, NULL)) != -1) {
		switch (c) {
		case 'k': kernel = optarg; break;
		case 'i': initrd = optarg; break;
		case 'c': cmdline = optarg; break;
		case 'n':
			cpus = strtoul(optarg, &end, 10);
			if (*end || !*optarg) { usage(stderr); return 3; }
			break;
		case 'm':
			mem = strtoul(optarg, &end, 10);
			if (*end || !*optarg) { usage(stderr); return 3; }
			break;
		case 'v': verbose = 1; break;
		case 'd':
			if (ndisks == 8) { usage(stderr); return 3; }
			disks[ndisks++] = optarg;
			break;
		case 'r': rng = 1; break;
		case 'V': vcon = 1; break;
		case 'A': no_acpi = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 3;
		}
	}
	if (!kernel || optind != argc) {
		usage(stderr);
		return 3;
	}

	microvm *vm;
	int r = microvm_create(&vm);
	if (r < 0) {
		fprintf(stderr, "microvm_create: %s\n", microvm_strerror(r));
		return 3;
	}
	if (verbose)
		microvm_set_log(vm, log_stderr, NULL, MICROVM_LOG_DEBUG);
	if ((r = microvm_set_vcpus(vm, (uint32_t)cpus)) < 0 ||
	    (r = microvm_set_memory(vm, mem)) < 0 ||
	    (r = microvm_set_kernel(vm, kernel, cmdline)) < 0 ||
	    (initrd && (r = microvm_set_initrd(vm, initrd)) < 0) ||
	    (r = microvm_set_console(vm, STDIN_FILENO, STDOUT_FILENO)) < 0 ||
	    (rng && (r = microvm_set_rng(vm, 1)) < 0) ||
	    (vcon && (r = microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO)) < 0) ||
	    (no_acpi && (r = microvm_set_acpi(vm, 0)) < 0) ||
	    (r = add_disks(vm, disks, ndisks)) < 0 ||
	    (r = microvm_start(vm)) < 0) {
		fprintf(stderr, "microvm-hello: %s\n", microvm_last_error(vm));
		microvm_destroy(vm);
		return 3;
	}
	microvm_exit ex = MICROVM_EXIT_INIT;
	microvm_wait(vm, -1, &ex);
	if (verbose || (ex.reason != MICROVM_EXIT_RESET && ex.reason != MICROVM_EXIT_POWEROFF))
		fprintf(stderr, "microvm-hello: guest stopped: %s\n", ex.message);
	microvm_destroy(vm);
	switch (ex.reason) {
	case MICROVM_EXIT_RESET:
	case MICROVM_EXIT_POWEROFF: return 0;
	case MICROVM_EXIT_CRASH: return 1;
	default: return 2;
	}
}
