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
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <microvm.h>

/* Boots take seconds even emulated; a guest silent this long is stuck. */
#define BOOT_TIMEOUT_MS (4 * 60 * 1000)
/* Exit status for "the guest got stuck": under the emulated machine that is
 * usually the emulator's own nested-SVM trouble, so run.sh retries it (a
 * deterministic hang still fails every attempt). */
#define EXIT_GUEST_STUCK 124
#define OUT_MAX (4 << 20)

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		fail_msg("%s is not set (run this through tests/linux/run.sh)", name);
	return v;
}

struct boot {
	const char *kernel;
	const char *cmdline;
	uint32_t vcpus;
	const char *input; /* written once READY-FOR-INPUT appears, or NULL */
	/* results */
	int start_rc;
	microvm_exit ex;
	char *out;
	double ms_to_init; /* host clock: microvm_start() -> "MICROVM-TEST-INIT" */
};

static char *read_all(int fd)
{
	char *buf = malloc(OUT_MAX + 1);
	assert_non_null(buf);
	ssize_t n = pread(fd, buf, OUT_MAX, 0);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

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
	assert_int_equal(microvm_set_initrd(vm, need_env("MICROVM_TEST_INITRD")), 0);
	assert_int_equal(microvm_set_console(vm, in[0], out), 0);
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
		free(text);
		if (now_ms() - t0 > BOOT_TIMEOUT_MS) {
			text = read_all(out);
			fprintf(stderr, "---- console so far ----\n%s\n----\n", text);
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
		fprintf(stderr, "---- console ----\n%s\n---- exit: %u %s\n", b->out, b->ex.reason,
			b->ex.message);
		fail_msg("console output lacks \"%s\"", needle);
	}
}

#define BASE_CMDLINE "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux"

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
		cmocka_unit_test(test_init_exits_panic_reboots),
		cmocka_unit_test(test_poweroff_via_acpi),
		cmocka_unit_test(test_distro_kernel_2cpus),
	};
	size_t n = sizeof(tests) / sizeof(tests[0]);
	/* Without a distribution kernel configured, that one case is left out
	 * (run.sh always provides it; say so loudly when it does not). */
	if (!getenv("MICROVM_TEST_DISTRO_KERNEL")) {
		fprintf(stderr, "NOTE: MICROVM_TEST_DISTRO_KERNEL unset: distro kernel case not run\n");
		n--;
	}
	/* run.sh runs one case per emulated machine: MICROVM_TEST_FILTER. */
	const char *filter = getenv("MICROVM_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return _cmocka_run_group_tests("linux", tests, n, NULL, NULL);
}
