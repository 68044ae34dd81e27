/*
 * The ABI promises of <microvm.h> that need a running or restored tiny
 * guest: size-versioned structs from older and newer callers (microvm_exit,
 * microvm_restore_config), and the log callback and kick signal a restored
 * VM gets from its config. tests/unit/test_abi.c has the rest.
 */
#include "kvm_test.h"

#include <pthread.h>
#include <signal.h>

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
	/* The first release's layout (0.1, a test-local copy) works the same. */
	struct exit_v01 {
		uint32_t size, reason;
		int32_t error;
		uint32_t vcpu;
		char message[256];
	} old = { sizeof(old), 0, 0, 0, { 0 } };
	assert_int_equal(microvm_wait(vm, 0, (microvm_exit *)&old), 0);
	assert_int_equal(old.reason, MICROVM_EXIT_RESET);
	assert_int_equal(old.size, sizeof(old));
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

/* microvm_restore_config as first released (0.2), a test-local copy. */
struct restore_config_v02 {
	uint32_t size;
	uint32_t flags;
	int console_in;
	int console_out;
	uint32_t n_disks;
	const char *const *disk_paths;
	uint64_t vsock_cid;
	const char *vsock_uds_path;
};

/* Kicks seen per signal: handlers the application installed (the library
 * keeps them; they must just return). */
static volatile sig_atomic_t kicks_default, kicks_custom;
#define CUSTOM_KICK (SIGRTMIN + 3)

static void count_default(int sig)
{
	(void)sig;
	kicks_default++;
}

static void count_custom(int sig)
{
	(void)sig;
	kicks_custom++;
}

static void install_kick_counters(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = count_default;
	assert_int_equal(sigaction(SIGRTMIN + MICROVM_DEFAULT_KICK_SIGNAL_OFFSET, &sa, NULL), 0);
	sa.sa_handler = count_custom;
	assert_int_equal(sigaction(CUSTOM_KICK, &sa, NULL), 0);
	kicks_default = kicks_custom = 0;
}

/* Pause and resume @vm; the guest keeps printing after the resume. */
static void pause_resume_ok(microvm *vm, int out)
{
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	size_t len = strlen(console_text(out));
	assert_int_equal(microvm_resume(vm), 0);
	assert_int_equal(wait_output_grows(out, len), 0);
}

/* A caller built against 0.2 (the smaller struct) restores with the
 * defaults for what 0.3 added: no log callback, the default kick signal. */
static void test_restore_old_config(void **state)
{
	SKIP_WITHOUT_KVM();
	const char *dir = counter_snapshot();
	install_kick_counters();
	int out = console_fd();
	struct restore_config_v02 old = { sizeof(old), 0, -1, out, 0, NULL, 0, NULL };
	microvm *vm = NULL;
	char e[256];
	int r = microvm_restore(&vm, dir, (const microvm_restore_config *)&old, e, sizeof(e));
	if (r < 0)
		fail_msg("restore: %d %s", r, e);
	assert_int_equal(wait_output_grows(out, 0), 0);
	pause_resume_ok(vm, out);
	assert_true(kicks_default > 0);
	assert_int_equal(kicks_custom, 0);
	microvm_destroy(vm);
	close(out);
}

struct log_record {
	pthread_mutex_t lock;
	int calls;
	int restored; /* "restored from" lines seen */
	int max_level;
};

static void log_cb(void *opaque, int level, const char *msg)
{
	struct log_record *rec = opaque;
	pthread_mutex_lock(&rec->lock);
	rec->calls++;
	if (strstr(msg, "restored from") && strstr(msg, snapdir))
		rec->restored++;
	if (level > rec->max_level)
		rec->max_level = level;
	pthread_mutex_unlock(&rec->lock);
}

/* The 0.3 fields: the restored VM logs through the callback from the start
 * and is kicked (pause/resume) with the given signal. */
static void test_restore_log_and_kick(void **state)
{
	SKIP_WITHOUT_KVM();
	const char *dir = counter_snapshot();
	install_kick_counters();
	int out = console_fd();
	struct log_record rec = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 };
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.console_out = out;
	cfg.log_fn = log_cb;
	cfg.log_opaque = &rec;
	cfg.log_level = MICROVM_LOG_INFO;
	cfg.kick_signal = CUSTOM_KICK;
	microvm *vm = NULL;
	char e[256];
	int r = microvm_restore(&vm, dir, &cfg, e, sizeof(e));
	if (r < 0)
		fail_msg("restore: %d %s", r, e);
	pthread_mutex_lock(&rec.lock);
	assert_int_equal(rec.restored, 1);
	assert_int_equal(rec.max_level, MICROVM_LOG_INFO);
	pthread_mutex_unlock(&rec.lock);
	assert_int_equal(wait_output_grows(out, 0), 0);
	pause_resume_ok(vm, out);
	pause_resume_ok(vm, out);
	assert_true(kicks_custom > 0);
	assert_int_equal(kicks_default, 0);
	microvm_destroy(vm);
	close(out);

	/* The default level (0) is WARN: no info lines. */
	rec.calls = rec.restored = rec.max_level = 0;
	cfg.log_level = 0;
	out = console_fd();
	cfg.console_out = out;
	r = microvm_restore(&vm, dir, &cfg, e, sizeof(e));
	if (r < 0)
		fail_msg("restore: %d %s", r, e);
	pthread_mutex_lock(&rec.lock);
	assert_int_equal(rec.restored, 0);
	pthread_mutex_unlock(&rec.lock);
	microvm_destroy(vm);
	close(out);
}

/* Bad values are refused like the setters refuse them. */
static void test_restore_bad_log_and_kick(void **state)
{
	SKIP_WITHOUT_KVM();
	const char *dir = counter_snapshot();
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	microvm *vm = NULL;
	char e[256];
	cfg.log_level = 9;
	assert_int_equal(microvm_restore(&vm, dir, &cfg, e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "set_log: level 9 out of range"));
	assert_null(vm);
	cfg.log_level = 0;
	cfg.kick_signal = SIGUSR1;
	assert_int_equal(microvm_restore(&vm, dir, &cfg, e, sizeof(e)), -EINVAL);
	assert_non_null(strstr(e, "set_kick_signal"));
	assert_null(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_newer_exit),
		cmocka_unit_test(test_restore_newer_config),
		cmocka_unit_test(test_restore_old_config),
		cmocka_unit_test(test_restore_log_and_kick),
		cmocka_unit_test(test_restore_bad_log_and_kick),
	};
	return cmocka_run_group_tests_name("abi_vm", tests, group_setup, group_teardown);
}
