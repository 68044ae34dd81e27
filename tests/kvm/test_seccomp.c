/* microvm_set_seccomp: VMs run their life cycle, console input, disk I/O,
 * vsock and snapshot/restore with the filter ON; a forbidden system call on
 * a library thread (event loop or vCPU) stops the VM with a message naming
 * it, while the embedder's threads stay unfiltered. */
#include "kvm_test.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "vm.h" /* microvm__add_mmio, the VM's event loop (internal) */

static char tmpdir[] = "/tmp/microvm-seccomp-XXXXXX";

static int group_setup(void **state)
{
	if (require_kvm(state) < 0)
		return -1;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	int r = system(cmd);
	(void)r;
	return wait_teardown_done(state);
}

/* The last "count N" on the console. */
static uint64_t last_count(int fd)
{
	const char *t = console_text(fd), *p = t, *q;
	uint64_t n = 0;
	while ((q = strstr(p, "count ")) != NULL) {
		n = strtoull(q + 6, NULL, 10);
		p = q + 6;
	}
	return n;
}

static void wait_count(int fd, uint64_t n)
{
	double end = now_ms() + GUEST_TIMEOUT_MS;
	while (last_count(fd) < n) {
		if (now_ms() > end)
			fail_msg("count %llu not reached: %s", (unsigned long long)n,
				 console_text(fd));
		usleep(2000);
	}
}

static void assert_running(microvm *vm)
{
	microvm_exit ex = MICROVM_EXIT_INIT;
	int r = microvm_wait(vm, 0, &ex);
	if (r != -ETIMEDOUT)
		fail_msg("VM stopped: reason %u: %s", ex.reason, ex.message);
}

/* A file "forbidden" is opened on the calling thread: the embedder's
 * threads are never filtered. */
static void embedder_can_open(void)
{
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
}

static void *embedder_thread(void *arg)
{
	(void)arg;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		close(fd);
	return (void *)(intptr_t)(fd >= 0);
}

static void test_set_seccomp_args(void **state)
{
	(void)state;
	microvm *vm = NULL;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_seccomp(vm, 99), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "unknown mode"));
	assert_int_equal(microvm_seccomp_allow(vm, -1), -EINVAL);
	for (int i = 0; i < 64; i++)
		assert_int_equal(microvm_seccomp_allow(vm, SYS_getcwd), 0);
	assert_int_equal(microvm_seccomp_allow(vm, SYS_getcwd), -ENOSPC);
	assert_int_equal(microvm_set_seccomp(NULL, 1), -EINVAL);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	microvm_destroy(vm);
}

/* Life cycle, console input (event loop -> UART -> IRQ), pause/resume,
 * disk, vsock host connection, snapshot and restore (filter ON again). */
static void test_lifecycle_devices_snapshot(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[600], dir[600], uds[100], uds2[100];
	snprintf(img, sizeof(img), "%s/disk.img", tmpdir);
	snprintf(uds, sizeof(uds), "%s/vsock", tmpdir);
	snprintf(uds2, sizeof(uds2), "%s/vsock2", tmpdir);
	snprintf(dir, sizeof(dir), "%s/snap", tmpdir);
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	int in[2];
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_set_console(vm, in[0], out), 0);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = img;
	assert_int_equal(microvm_add_disk(vm, &dc), 0);
	assert_int_equal(microvm_set_rng(vm, 1), 0);
	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	vc.guest_cid = 7;
	vc.uds_path = uds;
	assert_int_equal(microvm_set_vsock(vm, &vc), 0);
	start_ok(vm);
	wait_count(out, 3);
	assert_int_equal(write(in[1], "A", 1), 1);
	assert_int_equal(console_wait_for(out, "in 65\n", GUEST_TIMEOUT_MS), 0);

	/* vsock: a host program connects to the bridge (accepted and read on
	 * the event-loop thread); no guest listens, so it is refused or left
	 * waiting: either way the VM runs on. */
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", uds);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(s, "CONNECT 1234\n", 13), 13);
	struct pollfd pfd = { .fd = s, .events = POLLIN };
	poll(&pfd, 1, 300);
	close(s);

	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_resume(vm), 0);
	uint64_t k = last_count(out);
	wait_count(out, k + 3);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, dir, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	assert_int_equal(microvm_resume(vm), 0); /* the event loop restarted */
	k = last_count(out);
	wait_count(out, k + 3);
	assert_running(vm);
	assert_int_equal(microvm_stop(vm), 0);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_STOPPED);
	microvm_destroy(vm);

	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	int out2 = console_fd();
	rc.console_out = out2;
	rc.vsock_uds_path = uds2;
	rc.seccomp = MICROVM_SECCOMP_ON;
	microvm *c = NULL;
	char err[256];
	r = microvm_restore(&c, dir, &rc, err, sizeof(err));
	if (r)
		fail_msg("restore: %d %s", r, err);
	assert_int_equal(c->sec.mode, MICROVM_SECCOMP_ON);
	wait_count(out2, 3);
	assert_running(c);
	microvm_destroy(c);
	embedder_can_open();
	close(out);
	close(out2);
	close(in[0]);
	close(in[1]);
	unlink(img);
}

/* Resets with the filter on, left paused and resumed, running and paused:
 * a vCPU thread takes the registers a reset left in its kvm_run inside its
 * next KVM_RUN (no system call of its own). */
static void test_resets_with_filter(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/reset-snap", tmpdir);
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	start_ok(vm);
	wait_count(out, 3);
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	for (int i = 0; i < 300; i++) {
		int r = microvm_reset(vm, MICROVM_RESET_PAUSED);
		if (r == 0)
			r = microvm_resume(vm);
		if (r == 0)
			r = microvm_reset(vm, 0);
		if (r == 0)
			r = microvm_pause(vm);
		if (r)
			fail_msg("round %d: %d %s", i, r, microvm_last_error(vm));
	}
	assert_int_equal(microvm_resume(vm), 0);
	uint64_t k = last_count(out);
	wait_count(out, k + 3);
	assert_running(vm);
	microvm_destroy(vm);
	close(out);
}

/* virtio-blk I/O from the guest's poll-mode driver (tiny vblk), with both
 * backends. */
static void blk_io(uint32_t flags)
{
	char img[600];
	snprintf(img, sizeof(img), "%s/vblk.img", tmpdir);
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	int out = console_fd();
	microvm *vm = tiny_vm("vblk", NULL, 1, out);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	microvm_disk_config cfg = MICROVM_DISK_CONFIG_INIT;
	cfg.path = img;
	cfg.flags = flags;
	cfg.serial = "tiny-disk";
	assert_int_equal(microvm_add_disk(vm, &cfg), 0);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	if (ex.reason != MICROVM_EXIT_RESET || !strstr(console_text(out), "vblk: ok\n"))
		fail_msg("exit %u (%s), guest said: %s", ex.reason, ex.message, console_text(out));
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, 512), 1);
	assert_int_equal(b, 'a'); /* the guest wrote sector 1 */
	microvm_destroy(vm);
	close(fd);
	close(out);
	unlink(img);
}

static void test_blk_io(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	blk_io(0);
	blk_io(MICROVM_DISK_BACKEND_SYNC);
}

/* -------------------------------------------------- forbidden calls */

struct bad_call {
	struct ev_handler h;
	long result;
	int err;
	int done;
};

/* Runs on the event-loop thread: a call the filter does not admit. */
static void bad_call_fn(void *opaque, uint32_t events)
{
	struct bad_call *b = opaque;
	uint64_t v;
	ssize_t n = read(b->h.fd, &v, sizeof(v));
	(void)n;
	errno = 0;
	b->result = syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
	b->err = errno;
	if (b->result >= 0)
		close((int)b->result);
	__atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
}

/* Make @vm's event-loop thread call openat (the test hook: an extra
 * handler on the VM's own loop, through the internal symbols). */
static void evloop_bad_call(microvm *vm, struct bad_call *b)
{
	memset(b, 0, sizeof(*b));
	b->h.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	b->h.fn = bad_call_fn;
	b->h.opaque = b;
	assert_int_equal(evloop_add(&vm->dev.evloop, &b->h, EPOLLIN), 0);
	uint64_t one = 1;
	assert_int_equal(write(b->h.fd, &one, sizeof(one)), sizeof(one));
	for (int i = 0; i < 5000 && !__atomic_load_n(&b->done, __ATOMIC_SEQ_CST); i++)
		usleep(1000);
	assert_true(b->done);
}

static void test_evloop_violation_stops_vm(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	start_ok(vm);
	wait_count(out, 2);
	struct bad_call b;
	evloop_bad_call(vm, &b);
	assert_int_equal(b.result, -1);
	assert_int_equal(b.err, EPERM);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_INTERNAL_ERROR);
	assert_int_equal(ex.error, -EPERM);
	if (!strstr(ex.message, "event-loop") || !strstr(ex.message, "openat"))
		fail_msg("message: %s", ex.message);
	/* The embedder's threads, this one and a new one, are not filtered. */
	embedder_can_open();
	pthread_t t;
	void *ok = NULL;
	assert_int_equal(pthread_create(&t, NULL, embedder_thread, NULL), 0);
	pthread_join(t, &ok);
	assert_true(ok != NULL);
	evloop_del(&vm->dev.evloop, &b.h);
	microvm_destroy(vm);
	close(b.h.fd);
	close(out);
}

/* microvm_seccomp_allow() extends the list: the same call is admitted. */
static void test_allow_extends(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	assert_int_equal(microvm_seccomp_allow(vm, SYS_openat), 0);
	start_ok(vm);
	wait_count(out, 2);
	struct bad_call b;
	evloop_bad_call(vm, &b);
	assert_true(b.result >= 0);
	uint64_t k = last_count(out);
	wait_count(out, k + 2);
	assert_running(vm);
	evloop_del(&vm->dev.evloop, &b.h);
	microvm_destroy(vm);
	close(b.h.fd);
	close(out);
}

/* A fork's child runs under its parent's filter, extra calls included: the
 * child's event loop may call what the parent allowed, not more. */
static void test_fork_child_inherits_filter(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	assert_int_equal(microvm_seccomp_allow(vm, SYS_getcwd), 0);
	start_ok(vm);
	wait_count(out, 2);
	assert_int_equal(microvm_pause(vm), 0);
	microvm *child = NULL;
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	assert_int_equal(microvm_fork(vm, &child, &fc), 0);
	assert_int_equal(child->sec.mode, MICROVM_SECCOMP_ON);
	assert_int_equal(child->sec.n_extra, 1);
	assert_int_equal(child->sec.extra[0], SYS_getcwd);
	struct bad_call b;
	evloop_bad_call(child, &b); /* openat: not allowed to the parent either */
	assert_int_equal(b.result, -1);
	assert_int_equal(b.err, EPERM);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(child, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_INTERNAL_ERROR);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED); /* the parent is untouched */
	evloop_del(&child->dev.evloop, &b.h);
	microvm_destroy(child);
	microvm_destroy(vm);
	close(b.h.fd);
	close(out);
}

/* A device on a vCPU thread making a forbidden call (guest MMIO write). */
static void baddev_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	long *r = opaque;
	*r = syscall(SYS_getcwd, NULL, 0);
}

static void baddev_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	memset(data, 0, len);
}

static const struct bus_ops baddev_ops = { baddev_read, baddev_write };

static void test_vcpu_violation_stops_vm(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	long result = 0;
	microvm *vm = tiny_vm("mmio", NULL, 1, out);
	assert_int_equal(microvm__add_mmio(vm, 0xd0000000ULL, 0x1000, &baddev_ops, &result,
					   "bad"), 0);
	assert_int_equal(microvm_set_seccomp(vm, MICROVM_SECCOMP_ON), 0);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_INTERNAL_ERROR);
	assert_int_equal(result, -1);
	if (!strstr(ex.message, "vCPU 0") || !strstr(ex.message, "getcwd"))
		fail_msg("message: %s", ex.message);
	microvm_destroy(vm);
	embedder_can_open();
	close(out);
}

/* KILL_PROCESS: the whole (child) process dies of SIGSYS. */
static void test_kill_process(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		microvm *vm = NULL;
		int out = memfd_create("console", MFD_CLOEXEC);
		if (microvm_create(&vm) || microvm_set_memory(vm, 16) ||
		    microvm_set_kernel(vm, payload("counter"), "every=2000") ||
		    microvm_set_console(vm, -1, out) ||
		    microvm_set_seccomp(vm, MICROVM_SECCOMP_KILL_PROCESS) || microvm_start(vm))
			_exit(2);
		struct bad_call b;
		memset(&b, 0, sizeof(b));
		b.h.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		b.h.fn = bad_call_fn;
		b.h.opaque = &b;
		uint64_t one = 1;
		if (evloop_add(&vm->dev.evloop, &b.h, EPOLLIN) ||
		    write(b.h.fd, &one, sizeof(one)) != sizeof(one))
			_exit(3);
		sleep(30);
		_exit(4);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
		fail_msg("child status 0x%x", status);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_seccomp_args),
		cmocka_unit_test(test_kill_process), /* forks: before other threads exist */
		cmocka_unit_test(test_lifecycle_devices_snapshot),
		cmocka_unit_test(test_resets_with_filter),
		cmocka_unit_test(test_blk_io),
		cmocka_unit_test(test_evloop_violation_stops_vm),
		cmocka_unit_test(test_allow_extends),
		cmocka_unit_test(test_fork_child_inherits_filter),
		cmocka_unit_test(test_vcpu_violation_stops_vm),
	};
	return cmocka_run_group_tests_name("kvm_seccomp", tests, group_setup, group_teardown);
}
