/*
 * Linux-guest tests: boot the project's guest kernel (ELF vmlinux and
 * bzImage) with the test initramfs through the public API, talk to /init over
 * the serial console, and check how the guest stops.
 *
 * Inputs (environment, set by tests/linux/run.sh):
 *   MICROVM_TEST_VMLINUX, MICROVM_TEST_BZIMAGE, MICROVM_TEST_INITRD
 *   MICROVM_TEST_DISTRO_KERNEL   optional: a distribution bzImage (Debian cloud)
 * On hosts without VT-x/AMD-V run.sh runs this program inside the emulated
 * machine of tests/harness/run-nested.sh, so timeouts here are generous and
 * no assertion depends on time.
 */
#include "linux_test.h"

struct boot {
	const char *kernel;
	const char *cmdline;
	uint32_t vcpus;
	const char *input; /* written once READY-FOR-INPUT appears, or NULL */
	bool no_initrd;
	const char *disk;  /* virtio-blk image, or NULL */
	bool disk_ro;
	bool rng;
	bool virtio_console;
	bool no_pit;
	/* results */
	int start_rc;
	microvm_exit ex;
	char *out;
	double ms_to_init; /* host clock: microvm_start() -> "MICROVM-TEST-INIT" */
};

static void boot_guest(struct boot *b)
{
	int out = memfd_create("console", MFD_CLOEXEC);
	int in[2];
	assert_true(out >= 0);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_vcpus(vm, b->vcpus), 0);
	assert_int_equal(microvm_set_memory(vm, 256), 0);
	assert_int_equal(microvm_set_kernel(vm, b->kernel, b->cmdline), 0);
	if (!b->no_initrd)
		assert_int_equal(microvm_set_initrd(vm, need_env("MICROVM_TEST_INITRD")), 0);
	assert_int_equal(microvm_set_console(vm, in[0], out), 0);
	if (b->disk) {
		microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
		dc.path = b->disk;
		dc.flags = b->disk_ro ? MICROVM_DISK_READ_ONLY : 0;
		assert_int_equal(microvm_add_disk(vm, &dc), 0);
	}
	if (b->rng)
		assert_int_equal(microvm_set_rng(vm, 1), 0);
	if (b->virtio_console)
		assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO), 0);
	if (b->no_pit)
		assert_int_equal(microvm_set_pit(vm, 0), 0);
	double t0 = now_ms();
	b->start_rc = microvm_start(vm);
	if (b->start_rc != 0)
		fail_msg("microvm_start: %s", microvm_last_error(vm));
	b->ms_to_init = -1;
	bool sent = false;
	b->ex = (microvm_exit)MICROVM_EXIT_INIT;
	for (;;) {
		int r = microvm_wait(vm, 20, &b->ex);
		if (r == 0)
			break;
		assert_int_equal(r, -ETIMEDOUT);
		char *text = read_all(out);
		if (b->ms_to_init < 0 && strstr(text, "MICROVM-TEST-INIT"))
			b->ms_to_init = now_ms() - t0;
		if (b->input && !sent && strstr(text, "READY-FOR-INPUT")) {
			size_t len = strlen(b->input);
			assert_int_equal(write(in[1], b->input, len), (ssize_t)len);
			sent = true;
		}
		exit_if_guest_stalled("guest", text);
		free(text);
		if (now_ms() - t0 > BOOT_TIMEOUT_MS) {
			text = read_all(out);
			print_console_tail("guest (still running)", text, 40);
			free(text);
			microvm_destroy(vm);
			fprintf(stderr, "GUEST-STUCK: the guest did not stop within %d s\n",
				BOOT_TIMEOUT_MS / 1000);
			fflush(NULL);
			_exit(EXIT_GUEST_STUCK);
		}
	}
	b->out = read_all(out);
	if (b->ms_to_init < 0 && strstr(b->out, "MICROVM-TEST-INIT"))
		b->ms_to_init = now_ms() - t0;
	microvm_destroy(vm);
	close(in[0]);
	close(in[1]);
	close(out);
}

static void dump_on_failure(const struct boot *b, const char *needle)
{
	if (!strstr(b->out, needle)) {
		print_console_tail("guest", b->out, 40);
		fprintf(stderr, "exit: %u %s\n", b->ex.reason, b->ex.message);
		fail_msg("console output lacks \"%s\"", needle);
	}
}


static void check_echo_boot(const char *kernel, uint32_t vcpus, const char *what)
{
	char want[32];
	struct boot b = {
		.kernel = kernel,
		.cmdline = BASE_CMDLINE,
		.vcpus = vcpus,
		.input = "hello-from-the-host\n",
	};
	boot_guest(&b);
	dump_on_failure(&b, "MICROVM-TEST-INIT");
	snprintf(want, sizeof(want), "CPUS: %u\r\n", vcpus);
	dump_on_failure(&b, want);
	dump_on_failure(&b, "ECHO: hello-from-the-host");
	assert_int_equal(b.ex.reason, MICROVM_EXIT_RESET);
	const char *up = strstr(b.out, "UPTIME: ");
	printf("linux: %s, %u vCPU(s): /init after %.0f ms host clock, guest uptime %.*s s "
	       "(inside the emulated harness these are emulator numbers)\n",
	       what, vcpus, b.ms_to_init, up ? (int)strcspn(up + 8, "\r\n") : 1, up ? up + 8 : "?");
	free(b.out);
}

static void test_vmlinux_1cpu(void **state)
{
	(void)state;
	check_echo_boot(need_env("MICROVM_TEST_VMLINUX"), 1, "vmlinux");
}

static void test_vmlinux_2cpus(void **state)
{
	(void)state;
	check_echo_boot(need_env("MICROVM_TEST_VMLINUX"), 2, "vmlinux");
}

static void test_bzimage_2cpus(void **state)
{
	(void)state;
	check_echo_boot(need_env("MICROVM_TEST_BZIMAGE"), 2, "bzImage");
}

static void test_distro_kernel_2cpus(void **state)
{
	(void)state;
	check_echo_boot(need_env("MICROVM_TEST_DISTRO_KERNEL"), 2, "Debian cloud kernel");
}

/* A machine without a PIT (microvm_set_pit): Linux boots on both vCPUs,
 * finds the TSC-deadline timer on each, and its timers tick (a sleep
 * returns). */
static void test_no_pit_2cpus(void **state)
{
	(void)state;
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_VMLINUX"),
		.cmdline = BASE_CMDLINE " MICROVM_TEST=timers",
		.vcpus = 2,
		.no_pit = true,
	};
	boot_guest(&b);
	dump_on_failure(&b, "CPUS: 2");
	dump_on_failure(&b, "DEADLINE-CPUS: 2");
	dump_on_failure(&b, "SLEPT");
	assert_int_equal(b.ex.reason, MICROVM_EXIT_RESET);
	const char *cs = strstr(b.out, "CLOCKSOURCE: ");
	printf("linux: without a PIT: %.*s\n", cs ? (int)strcspn(cs, "\r\n") : 1, cs ? cs : "?");
	free(b.out);
}

static void test_init_exits_panic_reboots(void **state)
{
	(void)state;
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_VMLINUX"),
		.cmdline = BASE_CMDLINE " MICROVM_TEST=panic",
		.vcpus = 1,
	};
	boot_guest(&b);
	dump_on_failure(&b, "init exiting on purpose");
	dump_on_failure(&b, "Kernel panic");
	/* panic=-1: the kernel reboots at once, which we see as a reset. */
	assert_int_equal(b.ex.reason, MICROVM_EXIT_RESET);
	free(b.out);
}

static void test_poweroff_via_acpi(void **state)
{
	(void)state;
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_BZIMAGE"),
		.cmdline = BASE_CMDLINE " MICROVM_TEST=poweroff",
		.vcpus = 2,
		.input = "bye\n",
	};
	boot_guest(&b);
	dump_on_failure(&b, "ECHO: bye");
	assert_int_equal(b.ex.reason, MICROVM_EXIT_POWEROFF);
	free(b.out);
}

/* Copy the rootfs image so each run starts from the pristine one. */
static void test_ext4_rootfs_on_virtio_blk(void **state)
{
	(void)state;
	char img[] = "/tmp/microvm-rootfs-XXXXXX";
	int fd = mkstemp(img);
	assert_true(fd >= 0);
	close(fd);
	copy_file(need_env("MICROVM_TEST_ROOTFS"), img);
	char *before = ext4_cat(img, "/guest-file.txt");
	assert_null(strstr(before, "written by the guest"));
	free(before);
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_BZIMAGE"),
		.cmdline = BASE_CMDLINE " root=/dev/vda rw init=/init",
		.vcpus = 2,
		.no_initrd = true,
		.disk = img,
	};
	boot_guest(&b);
	dump_on_failure(&b, "ROOTFS-INIT: /dev/root / ext4 rw");
	dump_on_failure(&b, "ROOTFS-WROTE");
	assert_int_equal(b.ex.reason, MICROVM_EXIT_RESET);
	char *after = ext4_cat(img, "/guest-file.txt");
	if (!strstr(after, "written by the guest at boot"))
		fail_msg("the host image lacks the guest's file (debugfs said: %s)", after);
	printf("linux: ext4 root on virtio-blk: host image has \"%.*s\"\n",
	       (int)strcspn(after, "\n"), after);
	free(after);
	free(b.out);
	unlink(img);
}

static void test_read_only_disk(void **state)
{
	(void)state;
	char img[] = "/tmp/microvm-rodisk-XXXXXX";
	int fd = mkstemp(img);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_int_equal(pwrite(fd, "PRISTINE", 8, 0), 8);
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_BZIMAGE"),
		.cmdline = BASE_CMDLINE " MICROVM_TEST=ro-disk",
		.vcpus = 1,
		.disk = img,
		.disk_ro = true,
	};
	boot_guest(&b);
	dump_on_failure(&b, "RO-DISK: write refused");
	dump_on_failure(&b, "RO-DISK: first bytes PRISTINE");
	char head[8];
	assert_int_equal(pread(fd, head, 8, 0), 8);
	assert_memory_equal(head, "PRISTINE", 8);
	free(b.out);
	close(fd);
	unlink(img);
}

static void test_hwrng(void **state)
{
	(void)state;
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_BZIMAGE"),
		.cmdline = BASE_CMDLINE " MICROVM_TEST=rng",
		.vcpus = 1,
		.rng = true,
	};
	boot_guest(&b);
	dump_on_failure(&b, "RNG: ");
	const char *hex = strstr(b.out, "RNG: ") + 5;
	size_t n = strspn(hex, "0123456789abcdef");
	if (n != 32 || strncmp(hex, "00000000000000000000000000000000", 32) == 0)
		fail_msg("/dev/hwrng gave \"%.*s\"", 40, hex);
	free(b.out);
}

static void test_virtio_console(void **state)
{
	(void)state;
	struct boot b = {
		.kernel = need_env("MICROVM_TEST_BZIMAGE"),
		.cmdline = "console=hvc0 reboot=k panic=-1 pci=off",
		.vcpus = 1,
		.input = "through-virtio-console\n",
		.virtio_console = true,
	};
	boot_guest(&b);
	dump_on_failure(&b, "MICROVM-TEST-INIT");
	dump_on_failure(&b, "ECHO: through-virtio-console");
	assert_int_equal(b.ex.reason, MICROVM_EXIT_RESET);
	free(b.out);
}

static void test_not_a_kernel(void **state)
{
	(void)state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	/* The initramfs is a file, but not a kernel. */
	assert_int_equal(microvm_set_kernel(vm, need_env("MICROVM_TEST_INITRD"), NULL), 0);
	int r = microvm_start(vm);
	assert_int_equal(r, -ENOEXEC);
	assert_non_null(strstr(microvm_last_error(vm), "not an ELF vmlinux or a bzImage"));
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
	microvm_destroy(vm);
}

int main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_not_a_kernel),
		cmocka_unit_test(test_vmlinux_1cpu),
		cmocka_unit_test(test_vmlinux_2cpus),
		cmocka_unit_test(test_bzimage_2cpus),
		cmocka_unit_test(test_no_pit_2cpus),
		cmocka_unit_test(test_init_exits_panic_reboots),
		cmocka_unit_test(test_poweroff_via_acpi),
		cmocka_unit_test(test_ext4_rootfs_on_virtio_blk),
		cmocka_unit_test(test_read_only_disk),
		cmocka_unit_test(test_hwrng),
		cmocka_unit_test(test_virtio_console),
		cmocka_unit_test(test_distro_kernel_2cpus),
	};
	size_t n = sizeof(tests) / sizeof(tests[0]);
	/* Without a distribution kernel configured, that one case is left out
	 * (run.sh always provides it; say so loudly when it does not). */
	if (!getenv("MICROVM_TEST_DISTRO_KERNEL")) {
		if (getenv("CI")) {
			fprintf(stderr, "FATAL: MICROVM_TEST_DISTRO_KERNEL unset and CI is set: "
				"the distro kernel case cannot run\n");
			return 1;
		}
		fprintf(stderr, "NOTE: MICROVM_TEST_DISTRO_KERNEL unset: distro kernel case not run\n");
		n--;
	}
	/* run.sh runs one case per emulated machine: MICROVM_TEST_FILTER. */
	const char *filter = getenv("MICROVM_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return _cmocka_run_group_tests("linux", tests, n, NULL, NULL);
}
