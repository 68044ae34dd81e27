/*
 * A machine without the i8254 PIT (microvm_set_pit): no KVM PIT worker
 * thread exists for the VM, the guest runs and takes interrupts (the
 * "idle" payload answers console input through the IOAPIC), and the
 * setting survives a snapshot (no PIT state in it), a restore, a reset and
 * a fork. The default keeps the PIT. (Linux without a PIT:
 * tests/linux/test_linux.c, test_no_pit_2cpus.)
 */
#include <libfdt.h>

#include "kvm_test.h"

struct idle {
	microvm *vm;
	int in[2], out;
};

/* The console pipes of an idle VM (made by a start, restore or fork). */
static void idle_console(struct idle *t)
{
	t->out = console_fd();
	assert_int_equal(pipe2(t->in, O_CLOEXEC), 0);
}

static void idle_start(struct idle *t, bool pit)
{
	idle_console(t);
	t->vm = tiny_vm("idle", NULL, 1, t->out);
	assert_int_equal(microvm_set_console(t->vm, t->in[0], t->out), 0);
	if (!pit)
		assert_int_equal(microvm_set_pit(t->vm, 0), 0);
	start_ok(t->vm);
	assert_int_equal(console_wait_for(t->out, "idle: ready", GUEST_TIMEOUT_MS), 0);
}

/* The guest answers @line: its interrupts work. */
static void idle_answers(int in, int out, const char *line)
{
	char msg[64], want[64];
	snprintf(msg, sizeof(msg), "%s\n", line);
	snprintf(want, sizeof(want), "idle: %s", line);
	assert_int_equal(write(in, msg, strlen(msg)), (ssize_t)strlen(msg));
	assert_int_equal(console_wait_for(out, want, GUEST_TIMEOUT_MS), 0);
}

static void idle_done(struct idle *t)
{
	microvm_destroy(t->vm);
	close(t->in[0]);
	close(t->in[1]);
	close(t->out);
}

static void test_pit_thread_only_with_pit(void **state)
{
	(void)state;
	assert_int_equal(microvm_teardown_wait(30000), 0);
	int before = kvm_test_pit_threads();
	struct idle with, without;
	idle_start(&with, true);
	assert_int_equal(kvm_test_pit_threads(), before + 1);
	idle_start(&without, false);
	assert_int_equal(kvm_test_pit_threads(), before + 1);
	idle_answers(with.in[1], with.out, "one");
	idle_answers(without.in[1], without.out, "two");
	idle_done(&with);
	idle_done(&without);
	assert_int_equal(microvm_teardown_wait(30000), 0);
	assert_int_equal(kvm_test_pit_threads(), before);
}

static void test_set_pit_only_before_start(void **state)
{
	(void)state;
	struct idle t;
	idle_start(&t, false);
	assert_int_equal(microvm_set_pit(t.vm, 1), -EBUSY);
	idle_done(&t);
}

/* The snapshot's state: "pit" 0 in the machine node, no PIT state. */
static void check_state(const char *dir)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/state.dtb", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	static char blob[1 << 20];
	ssize_t n = read(fd, blob, sizeof(blob));
	close(fd);
	assert_true(n > 0 && fdt_check_header(blob) == 0);
	int mach = fdt_subnode_offset(blob, 0, "machine");
	int kvm = fdt_subnode_offset(blob, 0, "kvm");
	assert_true(mach >= 0 && kvm >= 0);
	int len = 0;
	const void *pit = fdt_getprop(blob, mach, "pit", &len);
	assert_non_null(pit);
	assert_int_equal(len, 8);
	fdt64_t v; /* properties are 4-byte aligned only */
	memcpy(&v, pit, sizeof(v));
	assert_int_equal(fdt64_to_cpu(v), 0);
	assert_null(fdt_getprop(blob, kvm, "pit", NULL));
	assert_non_null(fdt_getprop(blob, kvm, "ioapic", NULL));
}

static void test_snapshot_restore_reset_fork(void **state)
{
	(void)state;
	assert_int_equal(microvm_teardown_wait(30000), 0);
	int before = kvm_test_pit_threads();
	struct idle t;
	idle_start(&t, false);
	assert_int_equal(microvm_pause(t.vm), 0);
	char dir[] = "/tmp/microvm-nopit-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char snap[64];
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	int r = microvm_snapshot(t.vm, snap, 0);
	if (r < 0)
		fail_msg("snapshot: %d %s", r, microvm_last_error(t.vm));
	check_state(snap);

	/* restore: no PIT, and it answers */
	struct idle restored;
	idle_console(&restored);
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_in = restored.in[0];
	rc.console_out = restored.out;
	char err[256] = "";
	if ((r = microvm_restore(&restored.vm, snap, &rc, err, sizeof(err))) < 0)
		fail_msg("restore: %d %s", r, err);
	idle_answers(restored.in[1], restored.out, "restored");
	assert_int_equal(kvm_test_pit_threads(), before);

	/* reset the original to its snapshot, then fork it */
	assert_int_equal(microvm_reset(t.vm, 0), 0);
	idle_answers(t.in[1], t.out, "reset");
	assert_int_equal(microvm_pause(t.vm), 0);
	struct idle child;
	idle_console(&child);
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.console_in = child.in[0];
	fc.console_out = child.out;
	if ((r = microvm_fork(t.vm, &child.vm, &fc)) < 0)
		fail_msg("fork: %d %s", r, microvm_last_error(t.vm));
	idle_answers(child.in[1], child.out, "forked");
	assert_int_equal(kvm_test_pit_threads(), before);

	idle_done(&child);
	idle_done(&restored);
	idle_done(&t);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pit_thread_only_with_pit),
		cmocka_unit_test(test_set_pit_only_before_start),
		cmocka_unit_test(test_snapshot_restore_reset_fork),
	};
	return cmocka_run_group_tests(tests, require_kvm, wait_teardown_done);
}
