/*
 * microvm_reset() and the VM generation ID with tiny guests: the counter
 * payload prints "count N" lines from a counter in guest RAM, so after a
 * reset the output continues exactly where the snapshot left it, whatever
 * the VM printed in between.
 */
#include "kvm_test.h"

#include <dirent.h>
#include <poll.h>
#include <libfdt.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "arch/x86_64/acpi.h"
#include "vm.h"

static char tmpdir[256];
static int open_fds(void);
static microvm *fork_ok(microvm *parent, uint32_t flags, int out);

static int group_setup(void **state)
{
	if (require_kvm(state) < 0)
		return -1;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/microvm-reset-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	int r = system(cmd);
	(void)r;
	return wait_teardown_done(state);
}

static const char *snap_path(const char *name)
{
	static __thread char p[512];
	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	return p;
}

/* Console output from byte @from on (malloc'd, NUL-terminated). */
static char *read_from(int fd, size_t from)
{
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	size_t len = (size_t)st.st_size > from ? (size_t)st.st_size - from : 0;
	char *b = malloc(len + 1);
	assert_non_null(b);
	ssize_t n = pread(fd, b, len, (off_t)from);
	b[n > 0 ? n : 0] = 0;
	return b;
}

static size_t out_size(int fd)
{
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	return (size_t)st.st_size;
}

/* The numbers of the complete "count N" lines of @text, in order, must run
 * on from @first - 1 without a gap; returns the last (first - 1 if none). */
static uint64_t sequence(const char *text, uint64_t first)
{
	uint64_t want = first;
	for (const char *p = text; (p = strstr(p, "count ")); p += 6) {
		if (p != text && p[-1] != '\n')
			continue;
		char *end;
		uint64_t n = strtoull(p + 6, &end, 10);
		if (*end != '\n')
			break;
		if (n != want)
			fail_msg("count %llu where %llu was expected", (unsigned long long)n,
				 (unsigned long long)want);
		want++;
	}
	return want - 1;
}

static uint64_t last_count(int fd)
{
	char *t = read_from(fd, 0);
	uint64_t last = 0;
	for (const char *p = t; (p = strstr(p, "count ")); p += 6) {
		char *end;
		uint64_t n = strtoull(p + 6, &end, 10);
		if ((p == t || p[-1] == '\n') && *end == '\n')
			last = n;
	}
	free(t);
	return last;
}

static void wait_count(int fd, uint64_t at_least)
{
	double end = now_ms() + GUEST_TIMEOUT_MS;
	while (last_count(fd) < at_least) {
		if (now_ms() > end)
			fail_msg("the guest did not count to %llu", (unsigned long long)at_least);
		usleep(1000);
	}
}

/* A counter VM, paused after a few counts, snapshotted at @dir. */
static microvm *snapshotted_counter(int out, const char *dir)
{
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	start_ok(vm);
	wait_count(out, 5);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, dir, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	return vm;
}

static microvm *restore_ok(const char *dir, uint32_t flags, int out)
{
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.flags = flags;
	cfg.console_out = out;
	microvm *vm = NULL;
	char err[256];
	int r = microvm_restore(&vm, dir, &cfg, err, sizeof(err));
	if (r != 0)
		fail_msg("microvm_restore(%s): %d %s", dir, r, err);
	return vm;
}

static void reset_ok(microvm *vm, uint32_t flags)
{
	int r = microvm_reset(vm, flags);
	if (r != 0)
		fail_msg("microvm_reset: %d %s", r, microvm_last_error(vm));
}

/* -------------------------------------------------------------- VMGENID */

/* The generation ID where the DSDT's VGEN.ADDR says it is. */
static void read_genid(microvm *vm, uint8_t id[16])
{
	const struct guest_mem *m = &vm->kvm.mem;
	const uint8_t *area = gm_ptr(m, ACPI_TABLES_START, ACPI_TABLES_END - ACPI_TABLES_START);
	assert_non_null(area);
	const uint8_t *a = memmem(area, ACPI_TABLES_END - ACPI_TABLES_START, "\x08" "ADDR\x12", 6);
	assert_non_null(a);
	assert_int_equal(a[8], 0x0c); /* DWordConst */
	uint64_t lo = (uint64_t)a[9] | (uint64_t)a[10] << 8 | (uint64_t)a[11] << 16 |
		      (uint64_t)a[12] << 24;
	assert_int_equal(a[13], 0x00); /* high half: Zero */
	assert_true(gm_read(m, lo, id, 16));
}

/* Counts warnings about the generation ID (its notification failing). */
static void genid_log(void *opaque, int level, const char *msg)
{
	(void)level;
	if (strstr(msg, "generation ID"))
		++*(int *)opaque;
}

static void test_vmgenid_changes_on_restore_and_reset(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	const char *dir = snap_path("genid");
	microvm *vm = snapshotted_counter(out, dir);
	uint8_t parent[16], clone[16], again[16], zero[16] = { 0 };
	read_genid(vm, parent);
	assert_memory_not_equal(parent, zero, 16);

	int out2 = console_fd(), warnings = 0;
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.flags = MICROVM_RESTORE_PAUSED;
	cfg.console_out = out2;
	cfg.log_fn = genid_log;
	cfg.log_opaque = &warnings;
	cfg.log_level = MICROVM_LOG_DEBUG;
	microvm *c = NULL;
	char err[256];
	if (microvm_restore(&c, dir, &cfg, err, sizeof(err)) != 0)
		fail_msg("restore: %s", err);
	read_genid(c, clone);
	assert_memory_not_equal(clone, zero, 16);
	assert_memory_not_equal(clone, parent, 16);
	reset_ok(c, MICROVM_RESET_PAUSED);
	read_genid(c, again);
	assert_memory_not_equal(again, clone, 16);
	assert_memory_not_equal(again, parent, 16);
	assert_int_equal(warnings, 0); /* the notification went out */
	/* The original keeps its ID. */
	uint8_t still[16];
	read_genid(vm, still);
	assert_memory_equal(still, parent, 16);
	microvm_destroy(c);
	microvm_destroy(vm);
	close(out);
	close(out2);
}

/* Wait until the output from byte @from on contains @needle. */
static bool wait_text(int fd, size_t from, const char *needle, int timeout_ms)
{
	double end = now_ms() + timeout_ms;
	for (;;) {
		char *t = read_from(fd, from);
		bool found = strstr(t, needle) != NULL;
		free(t);
		if (found)
			return true;
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
}

/* The notification reaches the guest: the genid payload counts interrupts
 * on the Generic Event Device's GSI. A restored clone, a reset VM and a
 * fork each get one; the original, resumed, does not. */
static void test_vmgenid_interrupt(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("genid", "", 1, out);
	start_ok(vm);
	assert_true(wait_text(out, 0, "ready\n", GUEST_TIMEOUT_MS));
	assert_int_equal(microvm_pause(vm), 0);
	const char *dir = snap_path("genid-irq");
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);

	int out2 = console_fd();
	microvm *c = restore_ok(dir, 0, out2);
	assert_true(wait_text(out2, 0, "irq 1\n", GUEST_TIMEOUT_MS));
	size_t at = out_size(out2);
	reset_ok(c, 0);
	assert_true(wait_text(out2, at, "irq 1\n", GUEST_TIMEOUT_MS));

	int out3 = console_fd();
	microvm *f = fork_ok(vm, 0, out3);
	assert_true(wait_text(out3, 0, "irq 1\n", GUEST_TIMEOUT_MS));

	assert_int_equal(microvm_resume(vm), 0);
	assert_false(wait_text(out, 0, "irq", 200));
	microvm_destroy(f);
	microvm_destroy(c);
	microvm_destroy(vm);
	close(out);
	close(out2);
	close(out3);
}

/* ---------------------------------------------------------------- reset */

/* Guest RAM equals the snapshot's memory file, page for page, except the
 * generation ID (new on every reset, by design). */
static void assert_ram_is_snapshot(microvm *vm, const char *dir)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/memory", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	const struct guest_mem *m = &vm->kvm.mem;
	uint8_t page[4096];
	uint64_t differ = 0;
	for (uint64_t off = 0; off < m->size; off += 4096) {
		assert_int_equal(pread(fd, page, sizeof(page), (off_t)off), (ssize_t)sizeof(page));
		if (memcmp(page, m->host + off, sizeof(page)) == 0)
			continue;
		if (off == (ACPI_VMGENID_ADDR & ~4095ULL) &&
		    memcmp(page + 16, m->host + off + 16, sizeof(page) - 16) == 0)
			continue;
		differ++;
	}
	close(fd);
	assert_int_equal(differ, 0);
}

/* Since byte @at: the count restarted at the snapshot's. Paused before the
 * reset: the output after @at continues @before exactly. Running: output
 * from before the reset precedes it, so look for the line "count k+2" and
 * an unbroken count from there. */
static bool count_restarted(int out, size_t at, const char *before, uint64_t k, bool exact)
{
	char *after = read_from(out, at);
	uint64_t last = 0;
	if (exact) {
		char *joined = malloc(strlen(before) + strlen(after) + 1);
		assert_non_null(joined);
		strcpy(joined, before);
		strcat(joined, after);
		last = sequence(joined, 1);
		free(joined);
	} else {
		char line[48];
		snprintf(line, sizeof(line), "\ncount %llu\n", (unsigned long long)(k + 2));
		const char *p = strstr(after, line);
		if (p)
			last = sequence(p + 1, k + 2);
	}
	free(after);
	return last >= k + 4;
}

/* Run on for a while, reset, and check the count picks up at the snapshot. */
static void run_reset_check(microvm *vm, int out, const char *before, uint64_t k, uint32_t flags)
{
	bool paused = flags & MICROVM_RESET_PAUSED;
	wait_count(out, last_count(out) + 5);
	if (paused)
		assert_int_equal(microvm_pause(vm), 0);
	size_t at = out_size(out);
	reset_ok(vm, flags);
	if (paused) {
		assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
		assert_int_equal(microvm_resume(vm), 0);
	}
	assert_int_equal(microvm_state(vm), MICROVM_STATE_RUNNING);
	double end = now_ms() + GUEST_TIMEOUT_MS;
	while (!count_restarted(out, at, before, k, paused)) {
		if (now_ms() > end)
			fail_msg("no count from the snapshot's on after the reset");
		usleep(1000);
	}
}

static void reset_cycles(microvm *vm, int out, const char *dir)
{
	char *before = read_from(out, 0);
	uint64_t k = sequence(before, 1);
	assert_true(k >= 5);
	/* Paused -> running, running -> running, running -> paused. */
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	size_t at = out_size(out);
	reset_ok(vm, MICROVM_RESET_PAUSED);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	assert_ram_is_snapshot(vm, dir);
	assert_int_equal(out_size(out), at);
	assert_int_equal(microvm_resume(vm), 0);
	run_reset_check(vm, out, before, k, 0);
	run_reset_check(vm, out, before, k, 0);
	run_reset_check(vm, out, before, k, MICROVM_RESET_PAUSED);
	/* Dirty pages since then, paused: RAM is the snapshot's again. */
	wait_count(out, last_count(out) + 5);
	assert_int_equal(microvm_pause(vm), 0);
	reset_ok(vm, MICROVM_RESET_PAUSED);
	assert_ram_is_snapshot(vm, dir);
	free(before);
}

static void test_reset_restored_vm(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	const char *dir = snap_path("restored");
	microvm *vm = snapshotted_counter(out, dir);
	char *before = read_from(out, 0);
	microvm_destroy(vm);

	/* The clone prints to its own fd: start it with what the snapshot had
	 * printed, so its output reads like the original's. */
	int out2 = console_fd();
	assert_int_equal(write(out2, before, strlen(before)), (ssize_t)strlen(before));
	free(before);
	microvm *c = restore_ok(dir, MICROVM_RESTORE_PAUSED, out2);
	reset_cycles(c, out2, dir);
	microvm_destroy(c);
	close(out);
	close(out2);
}

static void test_reset_after_own_snapshot(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	const char *dir = snap_path("own");
	microvm *vm = snapshotted_counter(out, dir);
	reset_cycles(vm, out, dir);
	microvm_destroy(vm);
	close(out);
}

/* Dirty tracking on from the restore (MICROVM_RESTORE_TRACK_DIRTY: a reset
 * restarts its log too), and a fork of a restored VM, which inherits its
 * reset target: both come back to the snapshot's RAM exactly. */
static void test_reset_tracked_and_forked(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	char dir[512];
	snprintf(dir, sizeof(dir), "%s", snap_path("tracked"));
	microvm *vm = snapshotted_counter(out, dir);
	microvm_destroy(vm);
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	microvm *c = restore_ok(dir, MICROVM_RESTORE_TRACK_DIRTY, null);
	usleep(20000);
	assert_int_equal(microvm_pause(c), 0);
	reset_ok(c, MICROVM_RESET_PAUSED);
	assert_ram_is_snapshot(c, dir);
	assert_int_equal(microvm_resume(c), 0);
	usleep(20000);
	assert_int_equal(microvm_pause(c), 0);
	microvm *f = fork_ok(c, 0, null);
	usleep(20000);
	reset_ok(f, 0);
	reset_ok(f, 0);
	assert_int_equal(microvm_pause(f), 0);
	reset_ok(f, MICROVM_RESET_PAUSED);
	assert_ram_is_snapshot(f, dir);
	microvm_destroy(f);
	microvm_destroy(c);
	close(null);
	close(out);
}

static void test_reset_errors(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	assert_int_equal(microvm_reset(NULL, 0), -EINVAL);
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_reset(vm, 0), -EINVAL); /* configured */
	start_ok(vm);
	assert_int_equal(microvm_reset(vm, 0), -EINVAL); /* no snapshot */
	assert_non_null(strstr(microvm_last_error(vm), "no snapshot"));
	wait_count(out, 3);
	assert_int_equal(microvm_pause(vm), 0);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s", snap_path("errors"));
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	assert_int_equal(microvm_reset(vm, 0x80), -EINVAL);
	/* A diff snapshot leaves no reset target. */
	assert_int_equal(microvm_snapshot(vm, snap_path("errors-diff"), MICROVM_SNAPSHOT_DIFF), 0);
	assert_int_equal(microvm_reset(vm, 0), -EINVAL);
	/* A full one gives it back. */
	assert_int_equal(microvm_snapshot(vm, snap_path("errors-full"), 0), 0);
	reset_ok(vm, 0);
	assert_int_equal(microvm_stop(vm), 0);
	assert_int_equal(microvm_reset(vm, 0), -EINVAL); /* stopped */
	microvm_destroy(vm);

	/* A VM that took a snapshot which was then replaced, or removed:
	 * refused before anything changes. */
	snprintf(dir, sizeof(dir), "%s", snap_path("errors-replaced"));
	vm = tiny_vm("counter", "every=2000", 1, -1);
	microvm *other = tiny_vm("counter", "every=3000", 1, -1);
	start_ok(vm);
	start_ok(other);
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_pause(other), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	assert_int_equal(microvm_snapshot(other, dir, 0), 0);
	assert_int_equal(microvm_reset(vm, 0), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "replaced or removed"));
	reset_ok(other, 0);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	reset_ok(other, 0); /* its RAM maps the file already: still fine */
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(microvm_reset(vm, 0), -EINVAL);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	assert_int_equal(microvm_resume(vm), 0);
	microvm_destroy(other);
	microvm_destroy(vm);

	/* Restored from a diff snapshot: nothing to return to. */
	microvm *c = restore_ok(snap_path("errors-diff"), MICROVM_RESTORE_PAUSED, -1);
	assert_int_equal(microvm_reset(c, 0), -EINVAL);
	microvm_destroy(c);
	close(out);
}

static int open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static long rss_pages(void)
{
	long size = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%ld %ld", &size, &rss), 2);
	fclose(f);
	return rss;
}

static void test_ten_thousand_resets(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	const char *dir = snap_path("loop");
	microvm *vm = snapshotted_counter(out, dir);
	microvm_destroy(vm);
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	microvm *c = restore_ok(dir, 0, null);
	reset_ok(c, 0); /* the first one opens the page map: fds counted after it */
	for (int i = 0; i < 100; i++)
		reset_ok(c, 0);
	int fds = open_fds();
	long rss = rss_pages();
	double t0 = now_ms();
	for (int i = 0; i < 10000; i++)
		reset_ok(c, i % 2 ? MICROVM_RESET_PAUSED : 0);
	double t = now_ms() - t0;
	assert_int_equal(open_fds(), fds);
	long grown = rss_pages() - rss;
	print_message("10000 resets: %.1f us each, RSS %+ld KiB, %d fds\n", t / 10.0,
		      grown * 4, fds);
#ifdef __SANITIZE_ADDRESS__
	/* ASan keeps freed blocks in its quarantine (256 MiB by default): RSS
	 * grows by what the resets allocated and freed; the plain build checks
	 * the bound, LeakSanitizer that nothing leaked. */
	(void)grown;
#else
	/* So does valgrind (20 MB by default, --freelist-vol); its leak check
	 * is the bound there. */
	if (!RUNNING_ON_VALGRIND)
		assert_true(grown * 4096 < 4 * 1024 * 1024);
#endif
	microvm_destroy(c);
	close(null);
	close(out);
}

/* A 1 MiB sparse disk image @name in the test directory; its path in @img. */
static void sparse_disk(char *img, size_t len, const char *name)
{
	snprintf(img, len, "%s/%s", tmpdir, name);
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
}

/* With every device kind (the counter guest drives none of them): resets
 * reload each device's state in place, fds stay as they are, the vsock
 * socket keeps listening. */
static void test_reset_with_devices(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[600], uds[600], dir[512];
	sparse_disk(img, sizeof(img), "disk.img");
	snprintf(uds, sizeof(uds), "%s/vsock", tmpdir);
	snprintf(dir, sizeof(dir), "%s", snap_path("devices"));
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
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
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	char *before = read_from(out, 0);
	uint64_t k = sequence(before, 1);
	assert_int_equal(microvm_resume(vm), 0);
	reset_ok(vm, 0);
	int fds = open_fds();
	for (int i = 0; i < 200; i++)
		reset_ok(vm, i % 2 ? MICROVM_RESET_PAUSED : 0);
	assert_int_equal(open_fds(), fds);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED); /* the last one */
	assert_int_equal(microvm_resume(vm), 0);
	struct stat st;
	assert_int_equal(stat(uds, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	run_reset_check(vm, out, before, k, MICROVM_RESET_PAUSED);
	microvm_destroy(vm);
	free(before);
	close(out);
	unlink(img);
}

/* Property @prop of node @node in @dir's state file, malloc'd (*@len). */
static void *state_prop(const char *dir, const char *node, const char *prop, int *len)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/state.dtb", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *fdt = malloc((size_t)st.st_size);
	assert_non_null(fdt);
	assert_int_equal(pread(fd, fdt, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	int n = fdt_subnode_offset(fdt, 0, node);
	assert_true(n >= 0);
	const void *p = fdt_getprop(fdt, n, prop, len);
	assert_non_null(p);
	void *copy = malloc((size_t)*len);
	assert_non_null(copy);
	memcpy(copy, p, (size_t)*len);
	free(fdt);
	return copy;
}

/* A reset that leaves the VM paused, then a snapshot: the snapshot holds
 * the reset's registers (a reset hands them to KVM for the vCPU's next run;
 * a snapshot before that run must see them too). The spin payload keeps
 * its tick count in a register, so the registers differ once it ran on. */
static void test_snapshot_after_paused_reset(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	char dir[600];
	snprintf(dir, sizeof(dir), "%s", snap_path("paused-reset"));
	microvm *vm = tiny_vm("spin", "every=2000", 1, out);
	start_ok(vm);
	usleep(20000);
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	size_t at = out_size(out);
	assert_int_equal(microvm_resume(vm), 0);
	while (out_size(out) < at + 64)
		usleep(1000);
	assert_int_equal(microvm_pause(vm), 0);
	reset_ok(vm, MICROVM_RESET_PAUSED);
	char dir2[600];
	snprintf(dir2, sizeof(dir2), "%s", snap_path("paused-reset-2"));
	assert_int_equal(microvm_snapshot(vm, dir2, 0), 0);
	static const char *const props[] = { "regs", "sregs" };
	for (int i = 0; i < 2; i++) {
		int la, lb;
		void *a = state_prop(dir, "vcpu@0", props[i], &la);
		void *b = state_prop(dir2, "vcpu@0", props[i], &lb);
		assert_int_equal(la, lb);
		if (memcmp(a, b, (size_t)la))
			fail_msg("vcpu@0 %s differs from the reset target's", props[i]);
		free(a);
		free(b);
	}
	microvm_destroy(vm);
	close(out);
}

/* Wait until the console output after byte @at holds @text. */
static void expect_text(int out, size_t at, const char *text)
{
	if (!wait_text(out, at, text, GUEST_TIMEOUT_MS))
		fail_msg("no \"%s\" from the guest", text);
}

/* Resets while the guest's virtio-blk requests are in flight (the tiny vblk
 * driver reading in a loop): each reset lets them complete first, the
 * device's writes into guest RAM are dropped like the guest's, and the
 * guest reads on from the snapshot. */
static void test_reset_during_disk_io(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[600], dir[600];
	snprintf(img, sizeof(img), "%s/io.img", tmpdir);
	snprintf(dir, sizeof(dir), "%s", snap_path("disk-io"));
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	char sector[512];
	for (int i = 0; i < 8; i++) {
		memset(sector, 'A' + i, sizeof(sector));
		assert_int_equal(pwrite(fd, sector, sizeof(sector), i * 512), 512);
	}
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	int out = console_fd();
	microvm *vm = tiny_vm("vblk", "loop=1", 1, out);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = img;
	assert_int_equal(microvm_add_disk(vm, &dc), 0);
	start_ok(vm);
	expect_text(out, 0, "vblk: reads 128\n");
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	assert_int_equal(microvm_resume(vm), 0);
	for (int i = 0; i < 100; i++) {
		reset_ok(vm, 0);
		usleep(500);
	}
	size_t at = out_size(out);
	expect_text(out, at, "vblk: reads");
	assert_int_equal(microvm_pause(vm), 0);
	reset_ok(vm, MICROVM_RESET_PAUSED);
	assert_ram_is_snapshot(vm, dir);
	/* Order that read of guest RAM before the device's next writes for
	 * TSan, which cannot see the ordering KVM's eventfds give (resume,
	 * the guest's notify, the event thread): a pass through the event
	 * thread's lock. */
	evloop_stop(&vm->dev.evloop);
	evloop_start(&vm->dev.evloop);
	assert_int_equal(microvm_resume(vm), 0);
	at = out_size(out);
	expect_text(out, at, "vblk: reads");
	assert_int_equal(microvm_state(vm), MICROVM_STATE_RUNNING);
	microvm_destroy(vm);
	close(out);
	unlink(img);
}

/* Poll @fd for @events (0: until it is not readable) within the guest
 * timeout. */
static void wait_readable(int fd, bool readable)
{
	for (int i = 0; i < GUEST_TIMEOUT_MS; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if ((poll(&p, 1, 1) == 1) == readable)
			return;
	}
	fail_msg("the notify eventfd stayed %sreadable", readable ? "not " : "");
}

/* A snapshot taken while the guest's QueueNotify still sits in the queue's
 * eventfd (the guest wrote it, the event thread had not read it yet): that
 * eventfd is not part of the state, so the snapshot must handle it, or the
 * returned-to guest waits for a request the device never looks at. The
 * test holds the event loop to make the window certain. */
static void test_reset_to_snapshot_with_pending_notify(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[600], dir[600];
	sparse_disk(img, sizeof(img), "notify.img");
	snprintf(dir, sizeof(dir), "%s", snap_path("pending-notify"));
	int out = console_fd();
	microvm *vm = tiny_vm("vblk", "loop=1", 1, out);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = img;
	/* Requests complete inside the notify handler: none is in flight
	 * when the loop stops, so the guest's next notify comes. */
	dc.flags = MICROVM_DISK_BACKEND_SYNC;
	assert_int_equal(microvm_add_disk(vm, &dc), 0);
	start_ok(vm);
	expect_text(out, 0, "vblk: reads 64\n");
	int nfd = vm->dev.virtio[0]->notify_fd[0];
	evloop_stop(&vm->dev.evloop);
	wait_readable(nfd, true); /* the guest notified; nobody read it */
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0); /* restarts the loop */
	wait_readable(nfd, false); /* the notify was handled after the snapshot */
	reset_ok(vm, 0);
	size_t at = out_size(out);
	expect_text(out, at, "vblk: reads");
	microvm_destroy(vm);
	close(out);
	unlink(img);
}

/* ----------------------------------------------------------------- fork */

static uint64_t ram_hash(microvm *vm)
{
	const struct guest_mem *m = &vm->kvm.mem;
	uint64_t h = 1469598103934665603ULL;
	const uint64_t *w = (const uint64_t *)(const void *)m->host;
	for (uint64_t i = 0; i < m->size / 8; i++)
		h = (h ^ w[i]) * 1099511628211ULL;
	return h;
}

static microvm *fork_ok(microvm *parent, uint32_t flags, int out)
{
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.flags = flags;
	fc.console_out = out;
	microvm *c = NULL;
	int r = microvm_fork(parent, &c, &fc);
	if (r != 0)
		fail_msg("microvm_fork: %d %s", r, microvm_last_error(parent));
	assert_non_null(c);
	return c;
}

/* @out (a fork's console) continues @before and reaches @before's count + @n. */
static void assert_continues_from(const char *before, int out, uint64_t n)
{
	uint64_t k = sequence(before, 1);
	double end = now_ms() + GUEST_TIMEOUT_MS;
	for (;;) {
		char *after = read_from(out, 0);
		char *joined = malloc(strlen(before) + strlen(after) + 1);
		assert_non_null(joined);
		strcpy(joined, before);
		strcat(joined, after);
		uint64_t last = sequence(joined, 1);
		free(joined);
		free(after);
		if (last >= k + n)
			return;
		if (now_ms() > end)
			fail_msg("the fork did not count on from %llu", (unsigned long long)k);
		usleep(1000);
	}
}

/* A parent (booted, or restored when @restored) and its fork count on
 * independently; the child's writes never reach the parent's RAM. */
static void fork_and_diverge(bool restored)
{
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	start_ok(vm);
	wait_count(out, 5);
	assert_int_equal(microvm_pause(vm), 0);
	if (restored) {
		const char *dir = snap_path("fork-base");
		assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
		microvm_destroy(vm);
		/* Restore and let it run on, so it holds private pages; its
		 * console starts with what the original printed. */
		char *orig = read_from(out, 0);
		close(out);
		out = console_fd();
		assert_int_equal(write(out, orig, strlen(orig)), (ssize_t)strlen(orig));
		vm = restore_ok(dir, 0, out);
		wait_count(out, sequence(orig, 1) + 10);
		free(orig);
		assert_int_equal(microvm_pause(vm), 0);
	}
	char *before = read_from(out, 0);
	uint64_t h = ram_hash(vm);
	int cout = console_fd();
	microvm *c = fork_ok(vm, 0, cout);
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	assert_int_equal(microvm_state(c), MICROVM_STATE_RUNNING);
	assert_continues_from(before, cout, 20);
	assert_int_equal(ram_hash(vm), h); /* the child's writes are its own */
	/* A fork of the fork (paused), then all three run. */
	assert_int_equal(microvm_pause(c), 0);
	char *cbefore = read_from(cout, 0);
	char *cjoined = malloc(strlen(before) + strlen(cbefore) + 1);
	assert_non_null(cjoined);
	strcpy(cjoined, before);
	strcat(cjoined, cbefore);
	int gout = console_fd();
	microvm *g = fork_ok(c, MICROVM_FORK_PAUSED, gout);
	assert_int_equal(microvm_state(g), MICROVM_STATE_PAUSED);
	assert_int_equal(microvm_resume(g), 0);
	assert_int_equal(microvm_resume(c), 0);
	assert_int_equal(microvm_resume(vm), 0);
	assert_continues_from(cjoined, gout, 20);
	assert_continues_from(before, cout, sequence(cbefore, sequence(before, 1) + 1) -
				     sequence(before, 1) + 20);
	wait_count(out, sequence(before, 1) + 20);
	char *all = read_from(out, 0);
	sequence(all, 1);
	/* The child's count and the parent's diverged: different RAM. */
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_pause(c), 0);
	assert_int_not_equal(ram_hash(vm), ram_hash(c));
	microvm_destroy(g);
	microvm_destroy(c);
	microvm_destroy(vm);
	free(all);
	free(cjoined);
	free(cbefore);
	free(before);
	close(out);
	close(cout);
	close(gout);
}

/* A VM that took its snapshot and was not reset since (its RAM is its own
 * memfd, not yet the snapshot's file) ran on, then forked: the child's
 * reset returns it to the snapshot, not to the parent's RAM at the fork. */
static void test_fork_of_unmapped_target(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	const char *dir = snap_path("fork-target");
	microvm *vm = snapshotted_counter(out, dir);
	assert_int_equal(microvm_resume(vm), 0);
	wait_count(out, last_count(out) + 5);
	assert_int_equal(microvm_pause(vm), 0);
	int cout = console_fd();
	microvm *c = fork_ok(vm, MICROVM_FORK_PAUSED, cout);
	reset_ok(c, MICROVM_RESET_PAUSED);
	assert_ram_is_snapshot(c, dir);
	reset_ok(vm, MICROVM_RESET_PAUSED);
	assert_ram_is_snapshot(vm, dir);
	microvm_destroy(c);
	microvm_destroy(vm);
	close(out);
	close(cout);
}

static void test_fork_booted_vm(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	fork_and_diverge(false);
}

static void test_fork_restored_vm(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	fork_and_diverge(true);
}

static void test_fork_errors(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	microvm *c = (microvm *)0x1;
	assert_int_equal(microvm_fork(NULL, &c, NULL), -EINVAL);
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_fork(vm, &c, NULL), -EINVAL); /* configured */
	assert_null(c);
	start_ok(vm);
	assert_int_equal(microvm_fork(vm, &c, NULL), -EINVAL); /* running */
	assert_non_null(strstr(microvm_last_error(vm), "paused"));
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_fork(vm, NULL, NULL), -EINVAL);
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.flags = 0x10;
	assert_int_equal(microvm_fork(vm, &c, &fc), -EINVAL);
	fc.flags = 0;
	fc.size = 8;
	assert_int_equal(microvm_fork(vm, &c, &fc), -EINVAL);
	/* A child with the defaults (no console) works; its reset has no target. */
	c = fork_ok(vm, 0, -1);
	assert_int_equal(microvm_reset(c, 0), -EINVAL);
	microvm_destroy(c);
	microvm_destroy(vm);
	close(out);
}

/* A parent with a vsock Unix socket: the child needs its own path, and
 * listens there while the parent keeps its own. */
static void test_fork_vsock_identity(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char uds[600], uds2[600];
	snprintf(uds, sizeof(uds), "%s/fork-vsock", tmpdir);
	snprintf(uds2, sizeof(uds2), "%s/fork-vsock-child", tmpdir);
	microvm *vm = tiny_vm("counter", "every=2000", 1, -1);
	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	vc.guest_cid = 5;
	vc.uds_path = uds;
	assert_int_equal(microvm_set_vsock(vm, &vc), 0);
	start_ok(vm);
	assert_int_equal(microvm_pause(vm), 0);
	microvm *c = NULL;
	assert_int_equal(microvm_fork(vm, &c, NULL), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "vsock_uds_path"));
	assert_null(c);
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.vsock_uds_path = uds2;
	fc.vsock_cid = 6;
	int r = microvm_fork(vm, &c, &fc);
	if (r)
		fail_msg("fork: %d %s", r, microvm_last_error(vm));
	struct stat st;
	assert_int_equal(stat(uds, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(stat(uds2, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	microvm_destroy(c);
	assert_int_equal(stat(uds, &st), 0); /* the child removed only its own */
	microvm_destroy(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vmgenid_changes_on_restore_and_reset),
		cmocka_unit_test(test_vmgenid_interrupt),
		cmocka_unit_test(test_reset_restored_vm),
		cmocka_unit_test(test_reset_after_own_snapshot),
		cmocka_unit_test(test_reset_tracked_and_forked),
		cmocka_unit_test(test_reset_errors),
		cmocka_unit_test(test_ten_thousand_resets),
		cmocka_unit_test(test_reset_with_devices),
		cmocka_unit_test(test_snapshot_after_paused_reset),
		cmocka_unit_test(test_reset_during_disk_io),
		cmocka_unit_test(test_reset_to_snapshot_with_pending_notify),
		cmocka_unit_test(test_fork_of_unmapped_target),
		cmocka_unit_test(test_fork_booted_vm),
		cmocka_unit_test(test_fork_restored_vm),
		cmocka_unit_test(test_fork_errors),
		cmocka_unit_test(test_fork_vsock_identity),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
