/*
 * KVM_CREATE_VM interrupted (EINTR): the library tries again, so start and
 * restore succeed; a call interrupted every time gives a clean -EAGAIN.
 * The program is linked with -Wl,--wrap=ioctl, so every ioctl() the static
 * library makes goes through __wrap_ioctl below, which fails the next
 * `fail_create_vm` KVM_CREATE_VM calls with EINTR the way the kernel does
 * when task work is pending (see create_vm_fd() in lib/vm.c).
 */
#include "kvm_test.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);

static int fail_create_vm;  /* fail this many more KVM_CREATE_VM calls */
static int create_vm_calls; /* KVM_CREATE_VM calls seen */

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (req == KVM_CREATE_VM) {
		__atomic_add_fetch(&create_vm_calls, 1, __ATOMIC_RELAXED);
		if (__atomic_load_n(&fail_create_vm, __ATOMIC_RELAXED) > 0) {
			__atomic_sub_fetch(&fail_create_vm, 1, __ATOMIC_RELAXED);
			errno = EINTR;
			return -1;
		}
	}
	return __real_ioctl(fd, req, arg);
}

static void run_hello(microvm *vm)
{
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
}

static void test_start_retries_interrupted_create(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	microvm *vm = tiny_vm("hello", NULL, 1, -1);
	fail_create_vm = 3;
	create_vm_calls = 0;
	start_ok(vm);
	assert_int_equal(create_vm_calls, 4);
	run_hello(vm);
	microvm_destroy(vm);
}

static void test_start_gives_up_cleanly(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	microvm *vm = tiny_vm("hello", NULL, 1, -1);
	fail_create_vm = 1000000;
	int r = microvm_start(vm);
	fail_create_vm = 0;
	print_message("always interrupted: %d %s\n", r, microvm_last_error(vm));
	assert_int_equal(r, -EAGAIN);
	assert_non_null(strstr(microvm_last_error(vm), "KVM_CREATE_VM"));
	assert_int_equal(microvm_state(vm), MICROVM_STATE_CONFIGURED);
	/* Nothing was lost: the same VM starts once the interruptions stop. */
	start_ok(vm);
	run_hello(vm);
	microvm_destroy(vm);
}

static void test_restore_retries_interrupted_create(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char dir[] = "/tmp/microvm-eintr-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char snap[64];
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	microvm *vm = tiny_vm("counter", NULL, 1, -1);
	start_ok(vm);
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, snap, 0), 0);
	microvm_destroy(vm);

	char err[256] = "";
	microvm *c = NULL;
	fail_create_vm = 2;
	int r = microvm_restore(&c, snap, NULL, err, sizeof(err));
	if (r != 0)
		fail_msg("restore: %d %s", r, err);
	assert_int_equal(fail_create_vm, 0);
	microvm_destroy(c);

	fail_create_vm = 1000000;
	c = (microvm *)0x1;
	r = microvm_restore(&c, snap, NULL, err, sizeof(err));
	fail_create_vm = 0;
	print_message("restore always interrupted: %d %s\n", r, err);
	assert_int_equal(r, -EAGAIN);
	assert_null(c);

	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_retries_interrupted_create),
		cmocka_unit_test(test_start_gives_up_cleanly),
		cmocka_unit_test(test_restore_retries_interrupted_create),
	};
	return cmocka_run_group_tests_name("kvm_eintr", tests, require_kvm, wait_teardown_done);
}
