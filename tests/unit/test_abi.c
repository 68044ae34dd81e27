/*
 * The ABI promises of <microvm.h> that need no /dev/kvm: size-versioned
 * structs ("Structs that may grow") through the public setters, the helper
 * that implements them (lib/abi.c), and microvm_last_error() with several
 * threads on one VM. tests/kvm/test_abi_vm.c covers the
 * calls that need a running or restored VM.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microvm.h>

#include "abi.h"

static char disk_path[64]; /* a 1 MiB image (group setup) */

static int group_setup(void **state)
{
	snprintf(disk_path, sizeof(disk_path), "/tmp/microvm-unit-abi-XXXXXX");
	int fd = mkstemp(disk_path);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		return -1;
	close(fd);
	return 0;
}

static int group_teardown(void **state)
{
	unlink(disk_path);
	return 0;
}

static int vm_setup(void **state)
{
	microvm *vm = NULL;
	if (microvm_create(&vm) < 0)
		return -1;
	*state = vm;
	return 0;
}

static int vm_teardown(void **state)
{
	microvm_destroy(*state);
	return 0;
}

#define assert_error_has(vm, text)                                                  \
	do {                                                                        \
		if (!strstr(microvm_last_error(vm), text))                          \
			fail_msg("error \"%s\" does not mention \"%s\"",            \
				 microvm_last_error(vm), text);                     \
	} while (0)

/* ------------------------------------------------ the helper, directly */

/* A struct that grew: "v1" is its first release, "v2" the library's. */
struct grown_v1 {
	uint32_t size;
	uint32_t a;
	uint64_t b;
};
struct grown_v2 {
	uint32_t size;
	uint32_t a;
	uint64_t b;
	uint64_t c; /* added in v2; 0 = the v1 behaviour */
};
/* A v3 caller: one more field than the library knows. */
struct grown_v3 {
	struct grown_v2 v2;
	uint64_t d;
};

static void test_copy_in_older_caller(void **state)
{
	struct grown_v1 old = { sizeof(old), 7, 8 };
	struct grown_v2 got;
	memset(&got, 0xee, sizeof(got));
	char e[200] = "";
	assert_int_equal(abi_copy_in(&got, sizeof(got), &old, sizeof(old), "x", e, sizeof(e)), 0);
	assert_int_equal(got.size, sizeof(got));
	assert_int_equal(got.a, 7);
	assert_int_equal(got.b, 8);
	assert_int_equal(got.c, 0); /* the field the caller did not have */
	assert_string_equal(e, "");
}

static void test_copy_in_newer_caller(void **state)
{
	struct grown_v3 nw = { { sizeof(nw), 1, 2, 3 }, 0 };
	struct grown_v2 got;
	char e[200] = "";
	assert_int_equal(abi_copy_in(&got, sizeof(got), &nw, sizeof(struct grown_v1), "x", e,
				     sizeof(e)), 0);
	assert_int_equal(got.size, sizeof(got));
	assert_int_equal(got.a, 1);
	assert_int_equal(got.c, 3);
	nw.d = 1ull << 56; /* the last byte */
	assert_int_equal(abi_copy_in(&got, sizeof(got), &nw, sizeof(struct grown_v1), "x", e,
				     sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "x size 32: byte 31 is set, beyond the 24 bytes"));
}

static void test_copy_in_too_small(void **state)
{
	struct grown_v2 in = { sizeof(struct grown_v1) - 1, 1, 2, 3 }, got;
	char e[200] = "";
	assert_int_equal(abi_copy_in(&got, sizeof(got), &in, sizeof(struct grown_v1), "x", e,
				     sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "x size 15 is smaller than 16"));
	assert_int_equal(abi_copy_in(&got, sizeof(got), NULL, 16, "x", e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "x is NULL"));
}

static void test_prepare_out(void **state)
{
	struct grown_v3 out;
	memset(&out, 0x5a, sizeof(out));
	out.v2.size = sizeof(out);
	char e[200] = "";
	assert_int_equal(abi_prepare_out(&out, sizeof(struct grown_v2), sizeof(struct grown_v1),
					 "x", e, sizeof(e)), 0);
	assert_int_equal(out.d, 0);                     /* unknown: zeroed */
	assert_int_equal(out.v2.c, 0x5a5a5a5a5a5a5a5aull); /* known: left to the library */
	assert_int_equal(out.v2.size, sizeof(out));
	out.v2.size = 4;
	assert_int_equal(abi_prepare_out(&out, sizeof(struct grown_v2), sizeof(struct grown_v1),
					 "x", e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "x size 4 is smaller than 16"));
}

/* The first releases' sizes, as recorded in the library. */
static void test_first_release_sizes(void **state)
{
	assert_int_equal(ABI_DISK_CONFIG_MIN, 24);
	assert_int_equal(ABI_VSOCK_CONFIG_MIN, 24);
	assert_int_equal(ABI_RESTORE_CONFIG_MIN, 48);
	assert_int_equal(ABI_EXIT_MIN, 272);
	assert_int_equal(ABI_EXEC_CONFIG_MIN, 80);
	assert_int_equal(ABI_EXEC_RESULT_MIN, 48);
	assert_int_equal(ABI_NET_CONFIG_MIN, 56);
	assert_int_equal(ABI_NET_STATS_MIN, 64);
	assert_true(sizeof(microvm_net_config) >= ABI_NET_CONFIG_MIN);
	assert_true(sizeof(microvm_net_counters) >= ABI_NET_STATS_MIN);
	assert_true(sizeof(microvm_disk_config) >= ABI_DISK_CONFIG_MIN);
	assert_true(sizeof(microvm_vsock_config) >= ABI_VSOCK_CONFIG_MIN);
	assert_true(sizeof(microvm_restore_config) > ABI_RESTORE_CONFIG_MIN); /* grew in 0.3 */
	assert_true(sizeof(microvm_exit) >= ABI_EXIT_MIN);
}

/* ------------------------------------------------- through the public API */

/* microvm_disk_config as first released (0.1), a test-local copy. */
struct disk_config_v01 {
	uint32_t size;
	uint32_t flags;
	const char *path;
	const char *serial;
};
struct disk_config_newer {
	microvm_disk_config c;
	uint64_t future;
};

static void test_disk_config_sizes(void **state)
{
	microvm *vm = *state;
	struct disk_config_v01 old = { sizeof(old), MICROVM_DISK_READ_ONLY, disk_path, "old" };
	assert_int_equal(microvm_add_disk(vm, (const microvm_disk_config *)&old), 0);

	struct disk_config_newer nw = { MICROVM_DISK_CONFIG_INIT, 0 };
	nw.c.size = sizeof(nw);
	nw.c.path = disk_path;
	assert_int_equal(microvm_add_disk(vm, &nw.c), 1);
	nw.future = 2;
	assert_int_equal(microvm_add_disk(vm, &nw.c), -EINVAL);
	assert_error_has(vm, "add_disk: microvm_disk_config size 32: byte 24 is set");

	microvm_disk_config c = MICROVM_DISK_CONFIG_INIT;
	c.path = disk_path;
	const uint32_t small[] = { 0, 4, sizeof(old) - 1 };
	for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
		c.size = small[i];
		assert_int_equal(microvm_add_disk(vm, &c), -EINVAL);
		assert_error_has(vm, "is smaller than 24");
	}
	assert_int_equal(microvm_add_disk(vm, NULL), -EINVAL);
	assert_error_has(vm, "microvm_disk_config is NULL");
}

/* microvm_vsock_config as first released (0.2). */
struct vsock_config_v02 {
	uint32_t size;
	uint32_t flags;
	uint64_t guest_cid;
	const char *uds_path;
};
struct vsock_config_newer {
	microvm_vsock_config c;
	uint64_t future;
};

static void test_vsock_config_sizes(void **state)
{
	microvm *vm = *state;
	struct vsock_config_v02 old = { sizeof(old), 0, 3, NULL };
	assert_int_equal(microvm_set_vsock(vm, (const microvm_vsock_config *)&old), 0);

	struct vsock_config_newer nw = { MICROVM_VSOCK_CONFIG_INIT, 0 };
	nw.c.size = sizeof(nw);
	nw.c.guest_cid = 4;
	assert_int_equal(microvm_set_vsock(vm, &nw.c), 0);
	nw.future = 0x100;
	assert_int_equal(microvm_set_vsock(vm, &nw.c), -EINVAL);
	assert_error_has(vm, "set_vsock: microvm_vsock_config size 32: byte 25 is set");

	old.size = sizeof(old) - 8;
	assert_int_equal(microvm_set_vsock(vm, (const microvm_vsock_config *)&old), -EINVAL);
	assert_error_has(vm, "size 16 is smaller than 24");
}

/* microvm_wait checks the exit struct's size before the VM's state. */
static void test_exit_sizes(void **state)
{
	microvm *vm = *state;
	microvm_exit ex = MICROVM_EXIT_INIT;
	ex.size = ABI_EXIT_MIN - 1;
	assert_int_equal(microvm_wait(vm, 0, &ex), -EINVAL);
	assert_error_has(vm, "wait: microvm_exit size 271 is smaller than 272");
	assert_int_equal(ex.size, ABI_EXIT_MIN - 1);
}

/* Restore rejects a bad config before it looks at the directory. */
struct restore_config_newer {
	microvm_restore_config c;
	uint64_t future;
};

static void test_restore_config_sizes(void **state)
{
	char e[256];
	microvm *vm = NULL;
	microvm_restore_config c = MICROVM_RESTORE_CONFIG_INIT;
	c.size = ABI_RESTORE_CONFIG_MIN - 1;
	assert_int_equal(microvm_restore(&vm, "/nonexistent", &c, e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "restore: microvm_restore_config size 47 is smaller than 48"));
	assert_null(vm);

	struct restore_config_newer nw = { MICROVM_RESTORE_CONFIG_INIT, 1 };
	nw.c.size = sizeof(nw);
	assert_int_equal(microvm_restore(&vm, "/nonexistent", &nw.c, e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "is set, beyond the"));
	/* With the unknown part zero, the config passes: the missing directory
	 * is what fails. */
	nw.future = 0;
	assert_int_equal(microvm_restore(&vm, "/nonexistent", &nw.c, e, sizeof(e)), -ENOENT);
}

/* ------------------------------------------ microvm_last_error, threads */

/*
 * Two threads make failing calls on one VM and read microvm_last_error()
 * after each; a third holds one result and checks that it never changes.
 * Every text read must be one of the three whole messages. (Before, the
 * result pointed into the VM, which the other thread's failures rewrote
 * under the reader.)
 */
#define ERR_ROUNDS 20000

struct err_race {
	microvm *vm;
	const char *msgs[3]; /* the messages of the three failing calls */
	atomic_int running;  /* failing threads still going */
	atomic_int bad;      /* texts that were none of msgs */
};

static int fail_call(microvm *vm, int which)
{
	microvm_exit small = MICROVM_EXIT_INIT;
	small.size = 8;
	switch (which) {
	case 0: return microvm_set_vcpus(vm, 0);
	case 1: return microvm_set_memory(vm, 0);
	default: return microvm_wait(vm, 0, &small); /* outside the API lock */
	}
}

static bool known_msg(const struct err_race *r, const char *text)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(text, r->msgs[i]))
			return true;
	return false;
}

static void *failing_thread(void *arg)
{
	struct err_race *r = arg;
	static atomic_int next;
	int me = atomic_fetch_add(&next, 1);
	for (int i = 0; i < ERR_ROUNDS; i++) {
		if (fail_call(r->vm, (me + i) % 3) != -EINVAL ||
		    !known_msg(r, microvm_last_error(r->vm)))
			atomic_fetch_add(&r->bad, 1);
	}
	atomic_fetch_sub(&r->running, 1);
	return NULL;
}

static void *holding_thread(void *arg)
{
	struct err_race *r = arg;
	const char *held = microvm_last_error(r->vm);
	char first[512];
	snprintf(first, sizeof(first), "%s", held);
	if (!known_msg(r, first))
		atomic_fetch_add(&r->bad, 1);
	while (atomic_load(&r->running) > 0) {
		if (strcmp(held, first))
			atomic_fetch_add(&r->bad, 1);
	}
	return NULL;
}

static void test_last_error_threads(void **state)
{
	microvm *vm = *state;
	struct err_race r = { .vm = vm, .running = 2 };
	char *msgs[3];
	for (int i = 0; i < 3; i++) {
		assert_int_equal(fail_call(vm, i), -EINVAL);
		msgs[i] = strdup(microvm_last_error(vm));
		assert_non_null(msgs[i]);
		r.msgs[i] = msgs[i];
	}
	assert_string_not_equal(msgs[0], msgs[1]);
	assert_string_not_equal(msgs[1], msgs[2]);
	pthread_t t[3];
	assert_int_equal(pthread_create(&t[0], NULL, holding_thread, &r), 0);
	assert_int_equal(pthread_create(&t[1], NULL, failing_thread, &r), 0);
	assert_int_equal(pthread_create(&t[2], NULL, failing_thread, &r), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(atomic_load(&r.bad), 0);
	/* This thread's copy is its own: another thread's read leaves it. */
	const char *mine = microvm_last_error(vm);
	assert_true(known_msg(&r, mine));
	for (int i = 0; i < 3; i++)
		free(msgs[i]);
	assert_string_equal(microvm_last_error(NULL), "");
}

#define V(fn) cmocka_unit_test_setup_teardown(fn, vm_setup, vm_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_in_older_caller),
		cmocka_unit_test(test_copy_in_newer_caller),
		cmocka_unit_test(test_copy_in_too_small),
		cmocka_unit_test(test_prepare_out),
		cmocka_unit_test(test_first_release_sizes),
		V(test_disk_config_sizes),
		V(test_vsock_config_sizes),
		V(test_exit_sizes),
		cmocka_unit_test(test_restore_config_sizes),
		V(test_last_error_threads),
	};
	return cmocka_run_group_tests_name("abi", tests, group_setup, group_teardown);
}
