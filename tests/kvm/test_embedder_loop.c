/*
 * Device work on the embedder's own loop (MICROVM_LOOP_EMBEDDER,
 * microvm_loop_fd, microvm_loop_run), with tiny guests:
 *   - console input reaches the guest only through microvm_loop_run, and
 *     the loop fd polls readable while it waits;
 *   - a guest reading its disk in a loop makes progress while a thread of
 *     the test runs the loop, across snapshot, reset, fork and restore
 *     (which stop the devices while that thread is inside the loop), and
 *     children forked or restored with the flag use loops of their own;
 *   - errors: unknown mode, set after start, calls on a VM that is not
 *     started or uses the shared event threads; the one extra fd.
 */
#include "kvm_test.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

static char tmpdir[256];

static int group_setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/microvm-loop-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	return require_kvm(state);
}

static int group_teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	int r = system(cmd);
	return r == 0 ? wait_teardown_done(state) : -1;
}

/* A thread of the embedder running one VM's loop until told to stop. */
struct runner {
	microvm *vm;
	pthread_t thread;
	atomic_bool stop;
	atomic_int errors;
};

static void *run_loop(void *arg)
{
	struct runner *r = arg;
	while (!atomic_load(&r->stop)) {
		struct pollfd p = { .fd = microvm_loop_fd(r->vm), .events = POLLIN };
		if (p.fd < 0 || poll(&p, 1, 20) < 0 || microvm_loop_run(r->vm, 0) < 0)
			atomic_fetch_add(&r->errors, 1);
	}
	return NULL;
}

static void runner_start(struct runner *r, microvm *vm)
{
	r->vm = vm;
	atomic_store(&r->stop, false);
	atomic_store(&r->errors, 0);
	assert_int_equal(pthread_create(&r->thread, NULL, run_loop, r), 0);
}

static void runner_stop(struct runner *r)
{
	atomic_store(&r->stop, true);
	pthread_join(r->thread, NULL);
	assert_int_equal(atomic_load(&r->errors), 0);
}

static size_t out_size(int fd)
{
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	return (size_t)st.st_size;
}

/* Whether the output from byte @at on (its first 64 KiB) holds @text. */
static bool has_after(int out, size_t at, const char *text)
{
	static char buf[65536];
	ssize_t n = pread(out, buf, sizeof(buf) - 1, (off_t)at);
	buf[n > 0 ? n : 0] = 0;
	return strstr(buf, text) != NULL;
}

/* @text appears in the output after byte @at, within the guest timeout. */
static void expect_after(int out, size_t at, const char *text)
{
	for (double end = now_ms() + GUEST_TIMEOUT_MS; now_ms() < end; usleep(2000))
		if (has_after(out, at, text))
			return;
	fail_msg("no \"%s\" from the guest", text);
}

static void test_console_input_needs_the_loop(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int in[2];
	assert_int_equal(pipe(in), 0);
	int out = console_fd();
	microvm *vm = tiny_vm("echo", NULL, 1, out);
	assert_int_equal(microvm_set_console(vm, in[0], out), 0);
	assert_int_equal(microvm_set_event_loop(vm, MICROVM_LOOP_EMBEDDER), 0);
	start_ok(vm);
	assert_int_equal(console_wait_for(out, "echo: ready\n", GUEST_TIMEOUT_MS), 0);
	int lfd = microvm_loop_fd(vm);
	assert_true(lfd >= 0);
	assert_int_equal(microvm_loop_run(vm, 0), 0); /* nothing to do yet */
	assert_int_equal(write(in[1], "hi\n", 3), 3);
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, GUEST_TIMEOUT_MS), 1);
	/* Nobody ran the loop: the input cannot have reached the guest. */
	assert_null(strstr(console_text(out), "echo: hi"));
	int took = 0;
	for (double end = now_ms() + GUEST_TIMEOUT_MS;
	     !strstr(console_text(out), "echo: hi\n") && now_ms() < end;) {
		int n = microvm_loop_run(vm, 10);
		assert_true(n >= 0);
		took += n;
	}
	assert_true(took >= 1);
	assert_non_null(strstr(console_text(out), "echo: hi\n"));
	microvm_exit e = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &e), 0);
	assert_int_equal(e.reason, MICROVM_EXIT_RESET);
	assert_int_equal(microvm_loop_run(vm, 0) >= 0, 1); /* still valid once stopped */
	microvm_destroy(vm);
	close(in[0]);
	close(in[1]);
	close(out);
}

static void make_disk(char *img, size_t len)
{
	snprintf(img, len, "%s/disk.img", tmpdir);
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
}

static microvm *disk_reader(const char *img, int out, uint32_t mode)
{
	microvm *vm = tiny_vm("vblk", "loop=1", 1, out);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = img;
	dc.flags = MICROVM_DISK_READ_ONLY;
	assert_int_equal(microvm_add_disk(vm, &dc), 0);
	assert_int_equal(microvm_set_event_loop(vm, mode), 0);
	start_ok(vm);
	return vm;
}

/* A child (fork or restore) of the reader: it reads on, through a loop of
 * its own (@own) or the shared threads. */
static void check_child(microvm *child, int out, bool own)
{
	struct runner r;
	if (own)
		runner_start(&r, child);
	else
		assert_int_equal(microvm_loop_fd(child), -EINVAL);
	expect_after(out, 0, "vblk: reads");
	if (own)
		runner_stop(&r);
	microvm_destroy(child);
	close(out);
}

static void test_disk_io_across_snapshot_reset_fork(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[300], dir[300];
	make_disk(img, sizeof(img));
	snprintf(dir, sizeof(dir), "%s/snap", tmpdir);
	int out = console_fd();
	microvm *vm = disk_reader(img, out, MICROVM_LOOP_EMBEDDER);
	struct runner r;
	runner_start(&r, vm);
	expect_after(out, 0, "vblk: reads 128\n");
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	assert_int_equal(microvm_resume(vm), 0);
	expect_after(out, out_size(out), "vblk: reads");
	assert_int_equal(microvm_reset(vm, 0), 0);
	expect_after(out, out_size(out), "vblk: reads");

	assert_int_equal(microvm_pause(vm), 0);
	for (int own = 1; own >= 0; own--) {
		microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
		fc.console_out = console_fd();
		fc.flags = own ? MICROVM_FORK_EMBEDDER_LOOP : 0;
		microvm *child = NULL;
		assert_int_equal(microvm_fork(vm, &child, &fc), 0);
		check_child(child, fc.console_out, own);
	}
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_out = console_fd();
	rc.flags = MICROVM_RESTORE_EMBEDDER_LOOP;
	microvm *clone = NULL;
	char err[256];
	if (microvm_restore(&clone, dir, &rc, err, sizeof(err)) != 0)
		fail_msg("restore: %s", err);
	check_child(clone, rc.console_out, true);

	assert_int_equal(microvm_resume(vm), 0);
	expect_after(out, out_size(out), "vblk: reads");
	assert_int_equal(microvm_stop(vm), 0);
	runner_stop(&r);
	microvm_destroy(vm);
	close(out);
	unlink(img);
}

static void test_errors_and_fds(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	assert_int_equal(microvm_set_event_loop(NULL, 0), -EINVAL);
	assert_int_equal(microvm_loop_fd(NULL), -EINVAL);
	assert_int_equal(microvm_loop_run(NULL, 0), -EINVAL);
	int out = console_fd();
	microvm *vm = tiny_vm("idle", NULL, 1, out);
	assert_int_equal(microvm_set_event_loop(vm, 2), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "unknown mode"));
	assert_int_equal(microvm_set_event_loop(vm, MICROVM_LOOP_EMBEDDER), 0);
	assert_int_equal(microvm_loop_fd(vm), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "not started"));
	assert_int_equal(microvm_loop_run(vm, 0), -EINVAL);
	assert_int_equal(microvm_teardown_wait(GUEST_TIMEOUT_MS), 0); /* earlier VMs' fds */
	int before = kvm_test_fds();
	start_ok(vm);
	/* The VM fd, the vCPU fd, and the loop's epoll fd. */
	assert_int_equal(kvm_test_fds() - before, 3);
	assert_int_equal(microvm_set_event_loop(vm, MICROVM_LOOP_SHARED), -EBUSY);
	assert_true(microvm_loop_fd(vm) >= 0);
	microvm_destroy(vm);

	microvm *shared = tiny_vm("idle", NULL, 1, out);
	start_ok(shared);
	assert_int_equal(microvm_loop_fd(shared), -EINVAL);
	assert_non_null(strstr(microvm_last_error(shared), "event threads"));
	assert_int_equal(microvm_loop_run(shared, 0), -EINVAL);
	microvm_destroy(shared);
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.flags = 8;
	microvm *parent = tiny_vm("idle", NULL, 1, out);
	start_ok(parent);
	assert_int_equal(microvm_pause(parent), 0);
	microvm *child = NULL;
	assert_int_equal(microvm_fork(parent, &child, &fc), -EINVAL);
	assert_null(child);
	microvm_destroy(parent);
	close(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_console_input_needs_the_loop),
		cmocka_unit_test(test_disk_io_across_snapshot_reset_fork),
		cmocka_unit_test(test_errors_and_fds),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
