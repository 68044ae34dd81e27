/*
 * The ABI promises of <microvm.h> that need a running or restored tiny
 * guest: size-versioned structs from older and newer callers (microvm_exit,
 * microvm_restore_config). tests/unit/test_abi.c has the rest.
 */
#include "kvm_test.h"

static char tmpdir[256];
static char snapdir[300]; /* a snapshot of the counter payload */

/* Poll the console for a counter line after @after. */
static int wait_output_grows(int fd, size_t after)
{
	double end = now_ms() + GUEST_TIMEOUT_MS;
	while (strlen(console_text(fd)) <= after) {
		if (now_ms() > end)
			return -1;
		usleep(2000);
	}
	return 0;
}

static int group_setup(void **state)
{
	if (require_kvm(state) < 0)
		return -1;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/microvm-abi-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(snapdir, sizeof(snapdir), "%s/snap", tmpdir);
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	int r = system(cmd);
	(void)r;
	return wait_teardown_done(state);
}

/* The counter payload, paused after its first output, snapshotted once. */
static const char *counter_snapshot(void)
{
	if (access(snapdir, F_OK) == 0)
		return snapdir;
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	start_ok(vm);
	assert_int_equal(wait_output_grows(out, 0), 0);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, snapdir, 0);
	if (r < 0)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	microvm_destroy(vm);
	close(out);
	return snapdir;
}

/* ------------------------------------------------------------ microvm_exit */

struct exit_newer {
	microvm_exit e;
	uint64_t future;
};

/* A newer caller's larger microvm_exit: filled, the unknown part zeroed,
 * size kept. */
static void test_wait_newer_exit(void **state)
{
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("hello", NULL, 1, out);
	start_ok(vm);
	struct exit_newer nx;
	memset(&nx, 0x5a, sizeof(nx));
	nx.e.size = sizeof(nx);
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &nx.e), 0);
	assert_int_equal(nx.e.reason, MICROVM_EXIT_RESET);
	assert_int_equal(nx.e.error, 0);
	assert_int_equal(nx.e.size, sizeof(nx));
	assert_int_equal(nx.future, 0);
	/* The first release's size works the same. */
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, 0, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
	microvm_destroy(vm);
	close(out);
}

/* ------------------------------------------------- microvm_restore_config */

struct restore_config_newer {
	microvm_restore_config c;
	uint64_t future;
};

/* A newer caller's config with its unknown part zero restores. */
static void test_restore_newer_config(void **state)
{
	SKIP_WITHOUT_KVM();
	const char *dir = counter_snapshot();
	int out = console_fd();
	struct restore_config_newer nc;
	memset(&nc, 0, sizeof(nc));
	nc.c = (microvm_restore_config)MICROVM_RESTORE_CONFIG_INIT;
	nc.c.size = sizeof(nc);
	nc.c.console_out = out;
	microvm *vm = NULL;
	char e[256];
	int r = microvm_restore(&vm, dir, &nc.c, e, sizeof(e));
	if (r < 0)
		fail_msg("restore: %d %s", r, e);
	assert_int_equal(wait_output_grows(out, 0), 0); /* the guest runs */
	microvm_destroy(vm);
	close(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_newer_exit),
		cmocka_unit_test(test_restore_newer_config),
	};
	return cmocka_run_group_tests_name("abi_vm", tests, group_setup, group_teardown);
}
