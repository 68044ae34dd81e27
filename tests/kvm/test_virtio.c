/* virtio-blk through the virtio-mmio transport, driven by a poll-mode driver
 * in a tiny guest (guest/tiny/vblk.c). */
#include "kvm_test.h"

#define SIG "MICROVM-DISK-SIGNATURE-0123456789"

/* A 1 MiB image whose sector 0 starts with SIG. */
static int make_image(char *path, size_t len)
{
	snprintf(path, len, "/tmp/microvm-vblk-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_int_equal(pwrite(fd, SIG, strlen(SIG), 0), (ssize_t)strlen(SIG));
	return fd;
}

static microvm *vblk_vm(const char *cmdline, const char *image, uint32_t flags, int out)
{
	microvm *vm = tiny_vm("vblk", cmdline, 1, out);
	microvm_disk_config cfg = MICROVM_DISK_CONFIG_INIT;
	cfg.path = image;
	cfg.flags = flags;
	cfg.serial = "tiny-disk";
	int idx = microvm_add_disk(vm, &cfg);
	if (idx != 0)
		fail_msg("microvm_add_disk: %d %s", idx, microvm_last_error(vm));
	return vm;
}

static void run_to_reset(microvm *vm)
{
	start_ok(vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET);
}

static void check_sector1(int fd, bool written)
{
	uint8_t buf[512];
	assert_int_equal(pread(fd, buf, sizeof(buf), 512), 512);
	for (int i = 0; i < 512; i++)
		assert_int_equal(buf[i], written ? (uint8_t)('a' + i % 26) : 0);
}

static void blk_rw(const char *name, uint32_t flags)
{
	char path[64];
	int fd = make_image(path, sizeof(path));
	int out = console_fd();
	microvm *vm = vblk_vm(NULL, path, flags, out);
	const char *backend = microvm_disk_backend(vm, 0);
	assert_non_null(backend);
	run_to_reset(vm);
	const char *text = console_text(out);
	if (!strstr(text, "vblk: ok\n"))
		fail_msg("%s: guest said: %s", name, text);
	assert_non_null(strstr(text, "vblk: sector0: MICROVM-DISK-SIGNATURE-012345678\n"));
	check_sector1(fd, true);
	printf("virtio-blk %s: backend %s\n", name, backend);
	/* The stopped VM's report shows the queue the driver used. */
	char rep[2048];
	assert_true(microvm_describe(vm, rep, sizeof(rep)) > 0);
	if (!strstr(rep, "virtio-blk at 0x") || !strstr(rep, "\n  queue 0: size "))
		fail_msg("%s: report: %s", name, rep);
	microvm_destroy(vm);
	close(out);
	close(fd);
	unlink(path);
}

static void test_blk_read_write_uring(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	blk_rw("default backend", 0);
}

static void test_blk_read_write_sync(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	blk_rw("sync backend", MICROVM_DISK_BACKEND_SYNC);
}

static void test_blk_read_only(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char path[64];
	int fd = make_image(path, sizeof(path));
	int out = console_fd();
	microvm *vm = vblk_vm("ro=1", path, MICROVM_DISK_READ_ONLY, out);
	run_to_reset(vm);
	const char *text = console_text(out);
	if (!strstr(text, "vblk: write rejected\nvblk: ok\n"))
		fail_msg("guest said: %s", text);
	check_sector1(fd, false);
	microvm_destroy(vm);
	close(out);
	close(fd);
	unlink(path);
}

static void test_blk_hostile_descriptor(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char path[64];
	int fd = make_image(path, sizeof(path));
	int out = console_fd();
	microvm *vm = vblk_vm("evil=1", path, 0, out);
	run_to_reset(vm);
	const char *text = console_text(out);
	if (!strstr(text, "vblk: still running\n"))
		fail_msg("guest said: %s", text);
	microvm_destroy(vm);
	close(out);
	close(fd);
	unlink(path);
}

static void test_add_disk_state(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char path[64];
	int fd = make_image(path, sizeof(path));
	microvm *vm = tiny_vm("busy", "loops=10", 1, -1);
	start_ok(vm);
	microvm_disk_config cfg = MICROVM_DISK_CONFIG_INIT;
	cfg.path = path;
	assert_int_equal(microvm_add_disk(vm, &cfg), -EBUSY);
	microvm_destroy(vm);
	close(fd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blk_read_write_uring),
		cmocka_unit_test(test_blk_read_write_sync),
		cmocka_unit_test(test_blk_read_only),
		cmocka_unit_test(test_blk_hostile_descriptor),
		cmocka_unit_test(test_add_disk_state),
	};
	return cmocka_run_group_tests_name("kvm_virtio", tests, require_kvm, wait_teardown_done);
}
