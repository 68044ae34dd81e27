/* 1000 create/start/wait/destroy cycles: no file descriptor or memory
 * growth. Then cycles of VMs with an io_uring disk: none may fail (a
 * thread with io_uring task work pending once made KVM_CREATE_VM fail with
 * EINTR in a few percent of starts). Prints the numbers it measured. */
#include "kvm_test.h"


static void cycle(void)
{
	microvm *vm = tiny_vm("hello", NULL, 1, -1);
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
	microvm_destroy(vm);
}

/* destroy() hands the slow KVM teardown to a background thread: give those
 * threads time to finish before counting. */
static int settled_fds(int want)
{
	int n = kvm_test_fds();
	for (int i = 0; i < 1000 && (n > want || thread_count() > idle_threads()); i++) {
		usleep(10000);
		n = kvm_test_fds();
	}
	return n;
}

static void test_cycles_no_growth(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	const int warmup = 50, cycles = 1000;
	int fds_base = kvm_test_fds();
	for (int i = 0; i < warmup; i++)
		cycle();
	int fds0 = settled_fds(fds_base);
	assert_int_equal(fds0, fds_base);
	long rss0 = kvm_test_rss_kib();
	double t0 = now_ms();
	for (int i = 0; i < cycles; i++)
		cycle();
	double t1 = now_ms();
	int fds1 = settled_fds(fds0);
	long rss1 = kvm_test_rss_kib();
	printf("cycles: %d create/start/wait/destroy in %.0f ms (%.2f ms each); "
	       "fds %d -> %d; RSS %ld -> %ld KiB\n",
	       cycles, t1 - t0, (t1 - t0) / cycles, fds0, fds1, rss0, rss1);
	assert_int_equal(fds1, fds0);
#ifndef __SANITIZE_ADDRESS__
	/* Allow allocator noise, not per-VM growth (1000 leaked VMs of even 4 KiB
	 * each would be 4000 KiB). Under ASan the quarantine keeps freed memory
	 * resident, so there LeakSanitizer checks for leaks instead. */
	assert_true(rss1 - rss0 < 2048);
#endif
}

/* A VM with one disk (io_uring backend) that starts and stops; the
 * payload never touches the disk, the ring is set up and torn down. */
static void disk_cycle(const char *img, int i)
{
	microvm *vm = tiny_vm("hello", NULL, 1, -1);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = img;
	assert_int_equal(microvm_add_disk(vm, &dc), 0);
	int r = microvm_start(vm);
	if (r != 0)
		fail_msg("cycle %d: microvm_start: %d %s", i, r, microvm_last_error(vm));
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	microvm_destroy(vm);
}

static void test_cycles_with_disk_never_eintr(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[] = "/tmp/microvm-cycles-disk-XXXXXX";
	int fd = mkstemp(img);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	/* Many mappings make the kernel's window for the EINTR wider (it
	 * checks for pending signals once per mapping while registering the
	 * VM's MMU notifier), as in an embedder holding many VMs' RAM. */
	enum { MAPS = 2000 };
	void *maps[MAPS];
	for (int i = 0; i < MAPS; i++) {
		maps[i] = mmap(NULL, 4096, i % 2 ? PROT_READ : PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(maps[i] != MAP_FAILED);
	}
	const int cycles = 600;
	double t0 = now_ms();
	for (int i = 0; i < cycles; i++)
		disk_cycle(img, i);
	printf("cycles with a disk: %d in %.0f ms, none failed\n", cycles, now_ms() - t0);
	for (int i = 0; i < MAPS; i++)
		munmap(maps[i], 4096);
	unlink(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cycles_no_growth),
		cmocka_unit_test(test_cycles_with_disk_never_eintr),
	};
	return cmocka_run_group_tests_name("kvm_cycles", tests, require_kvm, wait_teardown_done);
}
