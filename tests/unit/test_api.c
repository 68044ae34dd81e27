/*
 * Unit tests of the public API's argument and state checking. Only
 * <microvm.h> is used. Nothing here starts a VM successfully, so /dev/kvm is
 * not needed; the one test that reaches /dev/kvm (start with a kernel that
 * is not ELF) accepts both "no KVM" and "KVM present" outcomes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <unistd.h>

#include <microvm.h>

#include "fifo_call.h"

/* Temporary files shared by the tests (created by the group setup). */
static char kernel_path[64];  /* a readable regular file (text, not ELF) */
static char initrd_path[64];  /* a readable regular file */
static char missing_path[96]; /* does not exist */

static void write_file(char *path, size_t pathlen, const char *text)
{
	snprintf(path, pathlen, "/tmp/microvm-unit-api-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static int group_setup(void **state)
{
	write_file(kernel_path, sizeof(kernel_path), "this is a text file, not an ELF kernel\n");
	write_file(initrd_path, sizeof(initrd_path), "initrd contents\n");
	snprintf(missing_path, sizeof(missing_path), "/tmp/microvm-unit-api-missing-%ld",
		 (long)getpid());
	unlink(missing_path);
	return 0;
}

static int group_teardown(void **state)
{
	unlink(kernel_path);
	unlink(initrd_path);
	return 0;
}

static int vm_setup(void **state)
{
	microvm *vm = NULL;
	if (microvm_create(&vm) != 0 || !vm)
		return -1;
	*state = vm;
	return 0;
}

static int vm_teardown(void **state)
{
	microvm_destroy(*state);
	return 0;
}

static void assert_error_mentions(const microvm *vm, const char *needle)
{
	const char *e = microvm_last_error(vm);
	assert_non_null(e);
	if (!strstr(e, needle))
		fail_msg("last error \"%s\" does not mention \"%s\"", e, needle);
}

static int open_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* -------------------------------------------------------------- globals */

static void test_version(void **state)
{
	assert_non_null(microvm_version());
	assert_string_equal(microvm_version(), MICROVM_VERSION_STRING);
	assert_string_equal(microvm_version(), MICROVM_PROJECT_VERSION);
	char buf[32];
	snprintf(buf, sizeof(buf), "%d.%d.%d", MICROVM_VERSION_MAJOR, MICROVM_VERSION_MINOR,
		 MICROVM_VERSION_PATCH);
	assert_string_equal(buf, MICROVM_VERSION_STRING);
	assert_int_equal(MICROVM_VERSION_NUMBER, (MICROVM_VERSION_MAJOR << 16) |
						 (MICROVM_VERSION_MINOR << 8) |
						 MICROVM_VERSION_PATCH);
}

static void test_strerror(void **state)
{
	const int codes[] = { 0,        -EINVAL, -ENOMEM,  -ENOENT, -EACCES, -EBUSY,
			      -ETIMEDOUT, -ENOEXEC, -ENOTSUP, -EEXIST, -E2BIG, -EPIPE,
			      -4095,    -4096,   -99999,   INT32_MIN, 1,     EINVAL,
			      99999,    INT32_MAX };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = microvm_strerror(codes[i]);
		if (!s || !*s)
			fail_msg("microvm_strerror(%d) is %s", codes[i], s ? "empty" : "NULL");
	}
	/* Distinct codes give distinct texts for the library's main errors. */
	assert_string_not_equal(microvm_strerror(-EINVAL), microvm_strerror(-ENOENT));
	assert_string_not_equal(microvm_strerror(-ENOEXEC), microvm_strerror(-EBUSY));
}

static void test_create_null(void **state)
{
	assert_int_equal(microvm_create(NULL), -EINVAL);
}

static void test_null_vm(void **state)
{
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_set_vcpus(NULL, 1), -EINVAL);
	assert_int_equal(microvm_set_memory(NULL, 128), -EINVAL);
	assert_int_equal(microvm_set_kernel(NULL, kernel_path, ""), -EINVAL);
	assert_int_equal(microvm_set_initrd(NULL, initrd_path), -EINVAL);
	assert_int_equal(microvm_set_initrd(NULL, NULL), -EINVAL);
	assert_int_equal(microvm_set_console(NULL, -1, -1), -EINVAL);
	assert_int_equal(microvm_set_kick_signal(NULL, SIGRTMIN + 1), -EINVAL);
	assert_int_equal(microvm_set_log(NULL, NULL, NULL, MICROVM_LOG_ERROR), -EINVAL);
	assert_int_equal(microvm_start(NULL), -EINVAL);
	assert_int_equal(microvm_pause(NULL), -EINVAL);
	assert_int_equal(microvm_resume(NULL), -EINVAL);
	assert_int_equal(microvm_stop(NULL), -EINVAL);
	assert_int_equal(microvm_wait(NULL, 0, &ex), -EINVAL);
	assert_int_equal(microvm_wait(NULL, 0, NULL), -EINVAL);
	assert_int_equal(microvm_event_fd(NULL), -EINVAL);
	assert_int_equal(microvm_state(NULL), -EINVAL);
	assert_non_null(microvm_last_error(NULL));
	assert_string_equal(microvm_last_error(NULL), "");
	microvm_destroy(NULL); /* no-op */
}

/* --------------------------------------------------------------- create */

static void test_create_defaults(void **state)
{
	microvm *vm = *state;
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
	int efd = microvm_event_fd(vm);
	assert_true(efd >= 0);
	assert_true(fcntl(efd, F_GETFD) >= 0);
	assert_int_equal(microvm_event_fd(vm), efd); /* stable */
	assert_string_equal(microvm_last_error(vm), "");
	/* Nothing happened yet: the event fd is not readable. */
	uint64_t v;
	assert_int_equal(read(efd, &v, sizeof(v)), -1);
	assert_int_equal(errno, EAGAIN);
}

static void test_create_independent(void **state)
{
	microvm *a = NULL, *b = NULL;
	assert_int_equal(microvm_create(&a), 0);
	assert_int_equal(microvm_create(&b), 0);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a != b);
	assert_true(microvm_event_fd(a) != microvm_event_fd(b));
	/* An error on one VM is not visible on the other. */
	assert_int_equal(microvm_set_vcpus(a, 0), -EINVAL);
	assert_true(strlen(microvm_last_error(a)) > 0);
	assert_string_equal(microvm_last_error(b), "");
	microvm_destroy(a);
	microvm_destroy(b);
}

/* -------------------------------------------------------------- setters */

static void test_set_vcpus(void **state)
{
	microvm *vm = *state;
	const struct {
		uint32_t n;
		const char *text;
	} bad[] = {
		{ 0, "0" },
		{ MICROVM_MAX_VCPUS + 1, "255" },
		{ 1000000, "1000000" },
		{ UINT32_MAX, "4294967295" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(microvm_set_vcpus(vm, bad[i].n), -EINVAL);
		assert_error_mentions(vm, bad[i].text);
	}
	assert_int_equal(MICROVM_MAX_VCPUS + 1, 255);
	assert_int_equal(microvm_set_vcpus(vm, 1), 0);
	assert_int_equal(microvm_set_vcpus(vm, 4), 0);
	assert_int_equal(microvm_set_vcpus(vm, MICROVM_MAX_VCPUS), 0);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
}

static void test_set_memory(void **state)
{
	microvm *vm = *state;
	const uint64_t bad[] = { 0, 1, MICROVM_MIN_MEMORY_MIB - 1, UINT64_MAX / 2, UINT64_MAX,
				 1ULL << 40 /* 1 EiB */ };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(microvm_set_memory(vm, bad[i]), -EINVAL);
		char num[32];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)bad[i]);
		assert_error_mentions(vm, num);
	}
	assert_int_equal(microvm_set_memory(vm, MICROVM_MIN_MEMORY_MIB), 0);
	assert_int_equal(microvm_set_memory(vm, 128), 0);
}

static void test_set_kernel(void **state)
{
	microvm *vm = *state;
	assert_int_equal(microvm_set_kernel(vm, NULL, NULL), -EINVAL);
	assert_true(strlen(microvm_last_error(vm)) > 0);
	assert_int_equal(microvm_set_kernel(vm, NULL, "console=ttyS0"), -EINVAL);

	assert_int_equal(microvm_set_kernel(vm, missing_path, ""), -ENOENT);
	assert_error_mentions(vm, missing_path);

	assert_int_equal(microvm_set_kernel(vm, "/tmp", ""), -EINVAL);
	assert_error_mentions(vm, "/tmp");
	assert_int_equal(microvm_set_kernel(vm, "", ""), -ENOENT);

	/* Command line: MICROVM_MAX_CMDLINE - 1 bytes fits, one more does not. */
	char *cl = malloc(MICROVM_MAX_CMDLINE + 1);
	assert_non_null(cl);
	memset(cl, 'c', MICROVM_MAX_CMDLINE);
	cl[MICROVM_MAX_CMDLINE] = '\0';
	assert_int_equal(microvm_set_kernel(vm, kernel_path, cl), -EINVAL);
	assert_true(strlen(microvm_last_error(vm)) > 0);
	cl[MICROVM_MAX_CMDLINE - 1] = '\0';
	assert_int_equal(microvm_set_kernel(vm, kernel_path, cl), 0);
	free(cl);

	/* Good ones, and replacing a kernel that was already set. */
	assert_int_equal(microvm_set_kernel(vm, kernel_path, NULL), 0);
	assert_int_equal(microvm_set_kernel(vm, kernel_path, "console=ttyS0"), 0);
	/* A failed call keeps the VM usable. */
	assert_int_equal(microvm_set_kernel(vm, missing_path, NULL), -ENOENT);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
}

static void test_set_initrd(void **state)
{
	microvm *vm = *state;
	assert_int_equal(microvm_set_initrd(vm, missing_path), -ENOENT);
	assert_error_mentions(vm, missing_path);
	assert_int_equal(microvm_set_initrd(vm, "/tmp"), -EINVAL);
	assert_error_mentions(vm, "/tmp");
	assert_int_equal(microvm_set_initrd(vm, initrd_path), 0);
	assert_int_equal(microvm_set_initrd(vm, initrd_path), 0); /* replace */
	assert_int_equal(microvm_set_initrd(vm, NULL), 0);        /* remove */
	assert_int_equal(microvm_set_initrd(vm, NULL), 0);        /* remove again */
	assert_int_equal(microvm_set_initrd(vm, initrd_path), 0);
}

static void test_set_console(void **state)
{
	microvm *vm = *state;
	/* fd 987 is not open in this test process. */
	close(987);
	assert_int_equal(fcntl(987, F_GETFD), -1);
	assert_int_equal(microvm_set_console(vm, -2, -1), -EINVAL);
	assert_int_equal(microvm_set_console(vm, -1, -2), -EINVAL);
	assert_int_equal(microvm_set_console(vm, 987, -1), -EINVAL);
	assert_error_mentions(vm, "987");
	assert_int_equal(microvm_set_console(vm, -1, 987), -EINVAL);
	assert_error_mentions(vm, "987");
	assert_int_equal(microvm_set_console(vm, INT32_MIN, INT32_MAX), -EINVAL);
	assert_int_equal(microvm_set_console(vm, -1, -1), 0);

	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(microvm_set_console(vm, p[0], p[1]), 0);
	/* Borrowed: the library does not close them. */
	assert_true(fcntl(p[0], F_GETFD) >= 0);
	assert_true(fcntl(p[1], F_GETFD) >= 0);
	assert_int_equal(microvm_set_console(vm, -1, -1), 0);
	close(p[0]);
	close(p[1]);
}

static void test_set_kick_signal(void **state)
{
	microvm *vm = *state;
	const int bad[] = { 0, -1, SIGINT, SIGKILL, SIGUSR1, SIGRTMIN - 1, SIGRTMAX + 1, 1000 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (microvm_set_kick_signal(vm, bad[i]) != -EINVAL)
			fail_msg("set_kick_signal(%d) was accepted", bad[i]);
	}
	assert_int_equal(microvm_set_kick_signal(vm, SIGRTMIN + 1), 0);
	assert_int_equal(microvm_set_kick_signal(vm, SIGRTMIN), 0);
	assert_int_equal(microvm_set_kick_signal(vm, SIGRTMAX), 0);
	assert_int_equal(microvm_set_kick_signal(vm, SIGRTMIN + MICROVM_DEFAULT_KICK_SIGNAL_OFFSET),
			 0);
}

struct log_record {
	int calls;
	int level;
	char msg[1024];
};

static void log_cb(void *opaque, int level, const char *msg)
{
	struct log_record *rec = opaque;
	rec->calls++;
	rec->level = level;
	snprintf(rec->msg, sizeof(rec->msg), "%s", msg);
}

static void test_set_log(void **state)
{
	microvm *vm = *state;
	struct log_record rec;
	memset(&rec, 0, sizeof(rec));
	const int bad[] = { 0, -1, MICROVM_LOG_DEBUG + 1, 1000 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(microvm_set_log(vm, log_cb, &rec, bad[i]), -EINVAL);
	assert_int_equal(rec.calls, 0); /* the callback was never installed */

	assert_int_equal(microvm_set_log(vm, log_cb, &rec, MICROVM_LOG_ERROR), 0);
	assert_int_equal(rec.calls, 0);

	/* A failing call reports its error through the callback. */
	assert_int_equal(microvm_set_vcpus(vm, 0), -EINVAL);
	assert_int_equal(rec.calls, 1);
	assert_int_equal(rec.level, MICROVM_LOG_ERROR);
	assert_true(strlen(rec.msg) > 0);
	if (!strstr(rec.msg, microvm_last_error(vm)))
		fail_msg("logged \"%s\" does not contain the error \"%s\"", rec.msg,
			 microvm_last_error(vm));
	assert_null(strchr(rec.msg, '\n'));

	assert_int_equal(microvm_set_kernel(vm, missing_path, NULL), -ENOENT);
	assert_int_equal(rec.calls, 2);
	assert_int_equal(rec.level, MICROVM_LOG_ERROR);
	assert_non_null(strstr(rec.msg, missing_path));

	/* Successful calls log nothing at level ERROR. */
	assert_int_equal(microvm_set_vcpus(vm, 2), 0);
	assert_int_equal(rec.calls, 2);

	/* fn == NULL disables logging. */
	assert_int_equal(microvm_set_log(vm, NULL, NULL, MICROVM_LOG_DEBUG), 0);
	assert_int_equal(microvm_set_vcpus(vm, 0), -EINVAL);
	assert_int_equal(rec.calls, 2);
}

/* ---------------------------------------------------------- state checks */

static void test_start_without_kernel(void **state)
{
	microvm *vm = *state;
	assert_int_equal(microvm_start(vm), -EINVAL);
	assert_true(strlen(microvm_last_error(vm)) > 0);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
	/* Still configurable. */
	assert_int_equal(microvm_set_vcpus(vm, 2), 0);
	/* A failed set_kernel does not count as a kernel either. */
	assert_int_equal(microvm_set_kernel(vm, missing_path, NULL), -ENOENT);
	assert_int_equal(microvm_start(vm), -EINVAL);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
}

static void test_start_not_elf(void **state)
{
	microvm *vm = *state;
	int efd = microvm_event_fd(vm);
	assert_int_equal(microvm_set_kernel(vm, kernel_path, "console=ttyS0"), 0);
	assert_int_equal(microvm_set_memory(vm, 64), 0);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int kvm_errno = errno;
	if (kvm >= 0)
		close(kvm);

	int r = microvm_start(vm);
	const char *e = microvm_last_error(vm);
	if (kvm < 0) {
		/* No usable KVM here: the start fails on /dev/kvm itself. */
		if (r != -ENOENT && r != -EACCES && r != -kvm_errno)
			fail_msg("start without /dev/kvm (%s): %d (%s)", strerror(kvm_errno), r, e);
		if (!strstr(e, "/dev/kvm"))
			fail_msg("message \"%s\" does not mention /dev/kvm", e);
	} else {
		/* KVM works: the VM is built, then the kernel is refused. */
		if (r != -ENOEXEC)
			fail_msg("start with a text-file kernel: %d (%s), expected -ENOEXEC", r, e);
		if (!strstr(e, kernel_path))
			fail_msg("message \"%s\" does not name the kernel %s", e, kernel_path);
	}
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
	/* The failed start announced no state change. */
	uint64_t v;
	assert_int_equal(read(efd, &v, sizeof(v)), -1);
	/* Not started, so the run-time calls still refuse. */
	assert_int_equal(microvm_pause(vm), -EINVAL);
	assert_int_equal(microvm_stop(vm), -EINVAL);
	assert_int_equal(microvm_wait(vm, 0, NULL), -EINVAL);
	/* And it can be configured and started again (failing the same way). */
	assert_int_equal(microvm_set_vcpus(vm, 2), 0);
	assert_int_equal(microvm_start(vm), r);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
	/* vm_teardown destroys it. */
}

static void test_runtime_calls_on_configured_vm(void **state)
{
	microvm *vm = *state;
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_pause(vm), -EINVAL);
	assert_true(strlen(microvm_last_error(vm)) > 0);
	assert_int_equal(microvm_resume(vm), -EINVAL);
	assert_int_equal(microvm_stop(vm), -EINVAL);
	assert_int_equal(microvm_wait(vm, 0, &ex), -EINVAL);
	assert_int_equal(microvm_wait(vm, 0, NULL), -EINVAL);
	assert_int_equal(microvm_wait(vm, 10, &ex), -EINVAL);
	assert_int_equal(microvm_wait(vm, -1, &ex), -EINVAL); /* must not block */
	assert_int_equal(ex.reason, MICROVM_EXIT_NONE);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
}

static void test_wait_small_size(void **state)
{
	microvm *vm = *state;
	microvm_exit ex = MICROVM_EXIT_INIT;
	const uint32_t sizes[] = { 0, 1, 4, offsetof(microvm_exit, message) - 1 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		memset(&ex, 0x5a, sizeof(ex));
		ex.size = sizes[i];
		assert_int_equal(microvm_wait(vm, 0, &ex), -EINVAL);
		/* Nothing written back beyond what the caller set. */
		assert_int_equal(ex.size, sizes[i]);
		assert_int_equal(ex.reason, 0x5a5a5a5a);
	}
}

/*
 * The path checks must not block: a FIFO is not a regular file and must be
 * refused with -EINVAL at once (see fifo_call.h for how a blocking call is
 * released and detected).
 */
static int set_kernel_on(void *vm, const char *path)
{
	return microvm_set_kernel(vm, path, NULL);
}

static int set_initrd_on(void *vm, const char *path)
{
	return microvm_set_initrd(vm, path);
}

static void expect_fifo_refused(microvm *vm, bool initrd)
{
	char fifo[96];
	bool blocked;
	int r = call_on_fifo("api", initrd ? set_initrd_on : set_kernel_on, vm, &blocked, fifo,
			     sizeof(fifo));

	const char *what = initrd ? "initrd" : "kernel";
	if (blocked)
		fail_msg("microvm_set_%s on a FIFO blocked in open() until a writer appeared "
			 "(then returned %d)", what, r);
	if (r != -EINVAL)
		fail_msg("microvm_set_%s on a FIFO returned %d, expected -EINVAL", what, r);
	assert_error_mentions(vm, fifo);
}

static void test_set_kernel_fifo(void **state)
{
	expect_fifo_refused(*state, false);
}

static void test_set_initrd_fifo(void **state)
{
	expect_fifo_refused(*state, true);
}

/* ---------------------------------------------------------------- leaks */

static void test_create_destroy_loop(void **state)
{
	int fds = open_fd_count();
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct log_record rec;
	memset(&rec, 0, sizeof(rec));
	for (int i = 0; i < 1000; i++) {
		microvm *vm = NULL;
		assert_int_equal(microvm_create(&vm), 0);
		assert_int_equal(microvm_set_log(vm, log_cb, &rec, MICROVM_LOG_DEBUG), 0);
		assert_int_equal(microvm_set_vcpus(vm, 1 + (uint32_t)(i % 8)), 0);
		assert_int_equal(microvm_set_memory(vm, 64 + (uint64_t)(i % 4) * 64), 0);
		assert_int_equal(microvm_set_kernel(vm, kernel_path, "console=ttyS0 quiet"), 0);
		assert_int_equal(microvm_set_kernel(vm, kernel_path, NULL), 0); /* replace */
		assert_int_equal(microvm_set_initrd(vm, initrd_path), 0);
		if (i % 2)
			assert_int_equal(microvm_set_initrd(vm, NULL), 0);
		assert_int_equal(microvm_set_console(vm, p[0], p[1]), 0);
		assert_int_equal(microvm_set_kick_signal(vm, SIGRTMIN + 2), 0);
		/* Some failing calls too (they log and record an error). */
		assert_int_equal(microvm_set_vcpus(vm, 0), -EINVAL);
		assert_int_equal(microvm_set_kernel(vm, missing_path, NULL), -ENOENT);
		assert_int_equal(microvm_pause(vm), -EINVAL);
		assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
		microvm_destroy(vm);
	}
	assert_true(rec.calls >= 2000);
	close(p[0]);
	close(p[1]);
	assert_int_equal(open_fd_count(), fds);
}

#define V(fn) cmocka_unit_test_setup_teardown(fn, vm_setup, vm_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_create_null),
		cmocka_unit_test(test_null_vm),
		V(test_create_defaults),
		cmocka_unit_test(test_create_independent),
		V(test_set_vcpus),
		V(test_set_memory),
		V(test_set_kernel),
		V(test_set_initrd),
		V(test_set_kernel_fifo),
		V(test_set_initrd_fifo),
		V(test_set_console),
		V(test_set_kick_signal),
		V(test_set_log),
		V(test_start_without_kernel),
		V(test_start_not_elf),
		V(test_runtime_calls_on_configured_vm),
		V(test_wait_small_size),
		cmocka_unit_test(test_create_destroy_loop),
	};
	return cmocka_run_group_tests_name("api", tests, group_setup, group_teardown);
}
