/* Tiny-guest tests of the VM life cycle through the public API. */
#include "kvm_test.h"

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>

#include "vm.h" /* microvm__add_mmio, for the test MMIO device */

static void test_hello_output_and_reset(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("hello", NULL, 1, out);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
	assert_int_equal(ex.error, 0);
	assert_non_null(strstr(ex.message, "reset"));
	assert_string_equal(console_text(out), "Hello from the microvm tiny guest!\n");
	assert_int_equal(microvm_state(vm), MICROVM_STATE_STOPPED);
	/* A stopped VM stays stopped: start again is refused, stop is fine. */
	assert_int_equal(microvm_start(vm), -EINVAL);
	assert_int_equal(microvm_stop(vm), 0);
	assert_int_equal(microvm_pause(vm), -EINVAL);
	assert_int_equal(microvm_resume(vm), -EINVAL);
	microvm_destroy(vm);
	close(out);
}

static void test_triple_fault_is_crash(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("triple", NULL, 1, out);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_CRASH);
	assert_non_null(strstr(ex.message, "triple fault"));
	assert_non_null(strstr(ex.message, "0f 0b")); /* the ud2 that faulted */
	assert_string_equal(console_text(out), "triple: faulting\n");
	microvm_destroy(vm);
	close(out);
}

static void test_emulation_failure_is_internal_error(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("emulfail", NULL, 1, out);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_INTERNAL_ERROR);
	assert_int_equal(ex.error, -EIO);
	assert_int_equal(ex.vcpu, 0);
	assert_non_null(strstr(ex.message, "emulation failure"));
	assert_non_null(strstr(ex.message, "dd 00")); /* fldl (%rax) */
	assert_string_equal(console_text(out), "emulfail: x87 load from MMIO\n");
	microvm_destroy(vm);
	close(out);
}

/* Test MMIO device: see guest/tiny/mmio.c. */
struct testdev {
	uint32_t r32;
	uint64_t r64;
	int writes;
};

static void testdev_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct testdev *d = opaque;
	if (off == 0 && len == 4) {
		uint32_t v = d->r32 ^ 0xa5a5a5a5u;
		memcpy(data, &v, 4);
	} else if (off == 8 && len == 8) {
		uint64_t v = ~d->r64;
		memcpy(data, &v, 8);
	} else {
		memset(data, 0, len);
	}
}

static void testdev_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct testdev *d = opaque;
	d->writes++;
	if (off == 0 && len == 4)
		memcpy(&d->r32, data, 4);
	else if (off == 8 && len == 8)
		memcpy(&d->r64, data, 8);
}

static const struct bus_ops testdev_ops = { testdev_read, testdev_write };

static void test_mmio_device(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	struct testdev dev = { 0 };
	microvm *vm = tiny_vm("mmio", NULL, 1, out);
	assert_int_equal(microvm__add_mmio(vm, 0xd0000000ULL, 0x1000, &testdev_ops, &dev, "test"),
			 0);
	/* Overlapping registration is refused. */
	assert_int_equal(microvm__add_mmio(vm, 0xd0000800ULL, 0x1000, &testdev_ops, &dev, "x"),
			 -EEXIST);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
	assert_string_equal(console_text(out), "mmio: ok\n");
	assert_int_equal(dev.r32, 0x12345678u);
	assert_true(dev.r64 == 0x0123456789abcdefULL);
	assert_int_equal(dev.writes, 2);
	microvm_destroy(vm);
	close(out);
}

static void test_smp(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	for (uint32_t n = 2; n <= 4; n += 2) {
		char cmd[32];
		snprintf(cmd, sizeof(cmd), "ncpus=%u", n);
		int out = console_fd();
		microvm *vm = tiny_vm("smp", cmd, n, out);
		start_ok(vm);
		microvm_exit ex = MICROVM_EXIT_INIT;
		assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
		assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
		char want[64];
		snprintf(want, sizeof(want), "smp: cpus up: %u\n", n);
		assert_string_equal(console_text(out), want);
		microvm_destroy(vm);
		close(out);
	}
}

/* How many of this process's threads are called @name. */
static int threads_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	assert_non_null(d);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d))) {
		char path[300], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f)) {
			comm[strcspn(comm, "\n")] = 0;
			n += strcmp(comm, name) == 0;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/* vCPU threads are "vcpu<N>" in /proc (ps, top -H); gone after destroy.
 * Each thread names itself as it starts, which start does not wait for. */
static void test_vcpu_threads_are_named(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("busy", "loops=1000", 2, out);
	start_ok(vm);
	for (int i = 0; i < 500 && threads_named("vcpu0") + threads_named("vcpu1") < 2; i++)
		usleep(10000);
	assert_int_equal(threads_named("vcpu0"), 1);
	assert_int_equal(threads_named("vcpu1"), 1);
	assert_int_equal(threads_named("vcpu2"), 0);
	microvm_destroy(vm);
	close(out);
	for (int i = 0; i < 500 && threads_named("vcpu0") + threads_named("vcpu1"); i++)
		usleep(10000); /* exiting threads leave /proc a little later */
	assert_int_equal(threads_named("vcpu0") + threads_named("vcpu1"), 0);
}

static void test_halted_vm_stop_and_wait_timeout(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("busy", "loops=1000", 1, out);
	start_ok(vm);
	assert_int_equal(console_wait_for(out, "busy: done, halting\n", GUEST_TIMEOUT_MS), 0);
	/* The guest halts with interrupts off: it never stops by itself. */
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, 0, &ex), -ETIMEDOUT);
	assert_int_equal(microvm_wait(vm, 50, &ex), -ETIMEDOUT);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_RUNNING);
	/* Setters are refused while running. */
	assert_int_equal(microvm_set_vcpus(vm, 2), -EBUSY);
	assert_int_equal(microvm_set_memory(vm, 32), -EBUSY);
	assert_int_equal(microvm_set_kernel(vm, payload("hello"), NULL), -EBUSY);
	assert_int_equal(microvm_set_console(vm, -1, -1), -EBUSY);
	assert_int_equal(microvm_start(vm), -EBUSY);
	assert_int_equal(microvm_resume(vm), -EINVAL);
	/* Pause and stop must kick the vCPU out of its halt. */
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	assert_int_equal(microvm_stop(vm), 0);
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_STOPPED);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_STOPPED);
	microvm_destroy(vm);
	close(out);
}

/* microvm_describe(): refused before a start and while running; on a
 * paused VM a report of the vCPU (halted at the guest's last hlt) and the
 * devices, cut to fit as snprintf cuts; on a stopped VM too. */
static void test_describe(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("busy", "loops=1000", 1, out);
	char buf[4096], small[16];
	assert_int_equal(microvm_set_rng(vm, 1), 0);
	assert_int_equal(microvm_describe(vm, buf, sizeof(buf)), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "never started"));
	start_ok(vm);
	assert_int_equal(console_wait_for(out, "busy: done, halting\n", GUEST_TIMEOUT_MS), 0);
	assert_int_equal(microvm_describe(vm, buf, sizeof(buf)), -EBUSY);
	assert_int_equal(microvm_describe(NULL, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(microvm_describe(vm, NULL, 5), -EINVAL);
	assert_int_equal(microvm_pause(vm), 0);
	int n = microvm_describe(vm, buf, sizeof(buf));
	printf("%s", buf);
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	assert_int_equal(strlen(buf), (size_t)n);
	assert_non_null(strstr(buf, "paused, 1 vCPU(s), 1 virtio device(s)\n"));
	assert_non_null(strstr(buf, "vcpu0: halted rip=0x"));
	assert_non_null(strstr(buf, " cr3=0x"));
	assert_non_null(strstr(buf, " apic: irr="));
	assert_non_null(strstr(buf, "virtio-rng at 0x"));
	assert_int_equal(microvm_describe(vm, NULL, 0), n);
	assert_int_equal(microvm_describe(vm, small, sizeof(small)), n);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_memory_equal(small, buf, sizeof(small) - 1);
	assert_int_equal(microvm_stop(vm), 0);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_true(microvm_describe(vm, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "stopped, 1 vCPU(s)"));
	microvm_destroy(vm);
	close(out);
}

/* A timeout below -1 is refused at once, as by every other call with a
 * timeout, whatever the state (it used to mean "forever"). */
static void test_wait_rejects_bad_timeout(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	microvm_exit ex = MICROVM_EXIT_INIT;
	microvm *vm = tiny_vm("hello", NULL, 1, -1);
	start_ok(vm);
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(microvm_wait(vm, -2, &ex), -EINVAL);
	assert_int_equal(microvm_wait(vm, -1, &ex), 0);
	microvm_destroy(vm);

	vm = tiny_vm("busy", "loops=1000", 1, -1);
	start_ok(vm);
	assert_int_equal(microvm_wait(vm, -2, &ex), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "timeout -2"));
	assert_int_equal(microvm_wait(vm, -1000, NULL), -EINVAL);
	assert_int_equal(microvm_wait(vm, INT32_MIN, NULL), -EINVAL);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_RUNNING);
	microvm_destroy(vm);
}

static size_t count_ticks(const char *s)
{
	size_t n = 0;
	for (const char *p = s; (p = strstr(p, "tick ")); p++)
		n++;
	return n;
}

static void test_pause_resume(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("spin", "every=2000", 1, out);
	start_ok(vm);
	for (int round = 0; round < 3; round++) {
		char want[32];
		size_t before = count_ticks(console_text(out));
		snprintf(want, sizeof(want), "tick %zu\n", before + 2);
		assert_int_equal(console_wait_for(out, want, GUEST_TIMEOUT_MS), 0);
		assert_int_equal(microvm_pause(vm), 0);
		assert_int_equal(microvm_pause(vm), 0); /* idempotent */
		assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
		/* While paused nothing runs, so the output does not change. */
		size_t len = strlen(console_text(out));
		usleep(100 * 1000);
		assert_int_equal(strlen(console_text(out)), len);
		assert_int_equal(microvm_resume(vm), 0);
		assert_int_equal(microvm_state(vm), MICROVM_STATE_RUNNING);
	}
	assert_int_equal(microvm_stop(vm), 0);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, 0, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_STOPPED);
	microvm_destroy(vm);
	close(out);
}

static void test_event_fd(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	microvm *vm = tiny_vm("hello", NULL, 1, -1);
	int efd = microvm_event_fd(vm);
	assert_true(efd >= 0);
	start_ok(vm);
	/* Readable at least once; the VM ends soon after. */
	for (;;) {
		struct pollfd p = { .fd = efd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, GUEST_TIMEOUT_MS), 1);
		uint64_t v;
		assert_int_equal(read(efd, &v, sizeof(v)), (ssize_t)sizeof(v));
		assert_true(v >= 1);
		if (microvm_state(vm) == MICROVM_STATE_STOPPED)
			break;
	}
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, 0, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
	microvm_destroy(vm);
}

/* Destroy at arbitrary moments: configured, just started, running, paused,
 * halted, stopped. */
static void test_destroy_any_moment(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	microvm_destroy(NULL);
	microvm *vm = tiny_vm("spin", NULL, 1, -1);
	microvm_destroy(vm); /* never started */
	for (int i = 0; i < 20; i++) {
		vm = tiny_vm(i % 2 ? "spin" : "smp", "every=500", 2, -1);
		start_ok(vm);
		usleep((useconds_t)(i * 500));
		if (i % 3 == 0)
			assert_int_equal(microvm_pause(vm) == 0 ||
						 microvm_state(vm) == MICROVM_STATE_STOPPED,
					 1);
		microvm_destroy(vm);
	}
}

/* Wait from another thread while the main thread stops the VM. */
struct waiter {
	microvm *vm;
	int rc;
	microvm_exit ex;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	w->ex.size = sizeof(w->ex);
	w->rc = microvm_wait(w->vm, -1, &w->ex);
	return NULL;
}

static void test_wait_in_other_thread(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	struct waiter w = { .vm = tiny_vm("spin", NULL, 2, out) };
	start_ok(w.vm);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	assert_int_equal(console_wait_for(out, "tick 1\n", GUEST_TIMEOUT_MS), 0);
	assert_int_equal(microvm_stop(w.vm), 0);
	pthread_join(t, NULL);
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.ex.reason, MICROVM_EXIT_STOPPED);
	microvm_destroy(w.vm);
	close(out);
}

/* A console nobody reads: the guest fills the pipe and its vCPU blocks in
 * write(); stop and destroy must still finish. */
static void test_stop_with_full_console(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int p[2];
	assert_int_equal(pipe(p), 0);
	microvm *vm = tiny_vm("spin", "every=1", 1, p[1]);
	start_ok(vm);
	/* Wait until the pipe stops filling: the guest's console writes are
	 * then waiting for room. (If the guest were only slow, the steps below
	 * must work all the same, so this wait cannot make the test flaky.) */
	int avail = 0, last = -1;
	for (int i = 0; i < GUEST_TIMEOUT_MS / 100; i++) {
		usleep(100000);
		assert_int_equal(ioctl(p[0], FIONREAD, &avail), 0);
		if (avail >= 4096 && avail == last)
			break;
		last = avail;
	}
	assert_true(avail >= 4096);
	/* The vCPU is waiting for the console: pause still completes. */
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	assert_int_equal(microvm_resume(vm), 0);
	assert_int_equal(microvm_stop(vm), 0);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, 0, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_STOPPED);
	microvm_destroy(vm);
	close(p[0]);
	close(p[1]);
}

static void test_console_input(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int in[2];
	assert_int_equal(pipe(in), 0);
	int out = console_fd();
	microvm *vm = NULL;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_memory(vm, 16), 0);
	assert_int_equal(microvm_set_kernel(vm, payload("echo"), NULL), 0);
	assert_int_equal(microvm_set_console(vm, in[0], out), 0);
	start_ok(vm);
	assert_int_equal(console_wait_for(out, "echo: ready\n", GUEST_TIMEOUT_MS), 0);
	assert_int_equal(write(in[1], "ping from the host\n", 19), 19);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
	assert_string_equal(console_text(out), "echo: ready\necho: ping from the host\n");
	microvm_destroy(vm);
	close(in[0]);
	close(in[1]);
	close(out);
}

/* Without the runtime's event threads' fds (process-wide, kept once made). */
static int count_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n - 2 * kvm_test_event_threads();
}

/* The file descriptor counts documented in microvm.h ("Conventions"). */
static int vm_fds(uint32_t vcpus, const char *devices, int *configured)
{
	static const char img[] = "/tmp/microvm-test-fds.img";
	static const char uds[] = "/tmp/microvm-test-fds.sock";
	int base = count_fds();
	microvm *vm = tiny_vm("busy", "loops=1000", vcpus, -1);
	if (strstr(devices, "rng"))
		assert_int_equal(microvm_set_rng(vm, 1), 0);
	if (strstr(devices, "vconsole"))
		assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO), 0);
	if (strstr(devices, "disk")) {
		int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, 1 << 20), 0);
		close(fd);
		microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
		dc.path = img;
		if (strstr(devices, "sync"))
			dc.flags = MICROVM_DISK_BACKEND_SYNC;
		assert_int_equal(microvm_add_disk(vm, &dc), 0);
	}
	if (strstr(devices, "vsock")) {
		microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
		vc.guest_cid = 3;
		vc.uds_path = uds;
		unlink(uds);
		assert_int_equal(microvm_set_vsock(vm, &vc), 0);
	}
	*configured = count_fds() - base;
	start_ok(vm);
	int running = count_fds() - base;
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(count_fds() - base, running);
	microvm_destroy(vm);
	unlink(img);
	unlink(uds);
	return running;
}

static void test_fd_counts_as_documented(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	static const struct {
		uint32_t vcpus;
		const char *devices;
		int configured, running;
	} cases[] = {
		{ 1, "", 0, 2 },
		{ 3, "", 0, 4 },
		{ 1, "rng", 0, 2 + 2 },
		{ 1, "vconsole", 0, 2 + 3 },
		{ 1, "disk", 3, 2 + 2 + 3 },
		{ 1, "disk-sync", 1, 2 + 2 + 1 },
		{ 1, "vsock", 0, 2 + 4 + 1 },
		{ 2, "rng,disk,vsock", 3, 3 + 2 + 5 + 5 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int configured;
		int running = vm_fds(cases[i].vcpus, cases[i].devices, &configured);
		print_message("%u vCPU(s), devices \"%s\": %d fds configured, %d running\n",
			      cases[i].vcpus, cases[i].devices, configured, running);
		assert_int_equal(configured, cases[i].configured);
		assert_int_equal(running, cases[i].running);
	}
}

static void test_many_vms_alive(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	enum { N = 100 };
	microvm *vms[N];
	int out[N];
	for (int i = 0; i < N; i++) {
		out[i] = console_fd();
		vms[i] = tiny_vm("busy", "loops=100", 1, out[i]);
		start_ok(vms[i]);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(console_wait_for(out[i], "busy: done, halting\n", GUEST_TIMEOUT_MS),
				 0);
		assert_int_equal(microvm_state(vms[i]), MICROVM_STATE_RUNNING);
	}
	/* Stopping one leaves the others running. */
	assert_int_equal(microvm_stop(vms[0]), 0);
	for (int i = 1; i < N; i++)
		assert_int_equal(microvm_state(vms[i]), MICROVM_STATE_RUNNING);
	for (int i = 0; i < N; i++) {
		microvm_destroy(vms[i]);
		close(out[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_output_and_reset),
		cmocka_unit_test(test_triple_fault_is_crash),
		cmocka_unit_test(test_emulation_failure_is_internal_error),
		cmocka_unit_test(test_mmio_device),
		cmocka_unit_test(test_smp),
		cmocka_unit_test(test_vcpu_threads_are_named),
		cmocka_unit_test(test_halted_vm_stop_and_wait_timeout),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_wait_rejects_bad_timeout),
		cmocka_unit_test(test_pause_resume),
		cmocka_unit_test(test_event_fd),
		cmocka_unit_test(test_destroy_any_moment),
		cmocka_unit_test(test_wait_in_other_thread),
		cmocka_unit_test(test_stop_with_full_console),
		cmocka_unit_test(test_console_input),
		cmocka_unit_test(test_fd_counts_as_documented),
		cmocka_unit_test(test_many_vms_alive),
	};
	return cmocka_run_group_tests_name("kvm_vm", tests, require_kvm, wait_teardown_done);
}
