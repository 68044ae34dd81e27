/*
 * Linux-guest tests of a disk root file system with the guest agent as init
 * (the layout of guest/rootfs/build-*.sh images: /.microvm/agent) and the
 * agent's overlay root (microvm.overlay= on the kernel command line): the
 * base image is attached read-only and must come out unchanged, writes land
 * in a tmpfs or on a scratch disk. The image is tests/linux/mkagentroot.sh's
 * (busybox + agent), built by run.sh: MICROVM_TEST_AGENT_ROOTFS. One VM per
 * case.
 */
#include "linux_test.h"

#include <microvm_agent.h>

#define AGENT_TIMEOUT_MS (4 * 60 * 1000)
#define EXEC_TIMEOUT_MS (60 * 1000)

struct rootvm {
	microvm *vm;
	int console;
};

/* Boot the base image (read-only, /dev/vda) with @overlay as the value of
 * microvm.overlay= (NULL: none) and @scratch as /dev/vdb (NULL: none). */
static void boot_root(struct rootvm *r, const char *overlay, const char *scratch)
{
	char cmdline[512];
	snprintf(cmdline, sizeof(cmdline),
		 BASE_CMDLINE " root=/dev/vda ro rootfstype=ext4 init=/.microvm/agent%s%s",
		 overlay ? " microvm.overlay=" : "", overlay ? overlay : "");
	r->console = memfd_create("console", MFD_CLOEXEC);
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 42;
	microvm_disk_config base = MICROVM_DISK_CONFIG_INIT;
	base.path = need_env("MICROVM_TEST_AGENT_ROOTFS");
	base.flags = MICROVM_DISK_READ_ONLY;
	microvm_disk_config scr = MICROVM_DISK_CONFIG_INIT;
	scr.path = scratch;
	assert_int_equal(microvm_create(&r->vm), 0);
	if (microvm_set_vcpus(r->vm, 1) || microvm_set_memory(r->vm, 256) ||
	    microvm_set_kernel(r->vm, need_env("MICROVM_TEST_BZIMAGE"), cmdline) ||
	    microvm_set_console(r->vm, -1, r->console) || microvm_set_vsock(r->vm, &vs) ||
	    microvm_add_disk(r->vm, &base) < 0 || (scratch && microvm_add_disk(r->vm, &scr) < 0) ||
	    microvm_start(r->vm))
		fail_msg("boot: %s", microvm_last_error(r->vm));
}

static char *console_text(const struct rootvm *r)
{
	return read_all(r->console);
}

static void destroy_root(struct rootvm *r)
{
	microvm_destroy(r->vm);
	close(r->console);
}

/* Run `sh -c @script` in the guest; its stdout (caller frees), exit code in *code. */
static char *guest_sh(struct rootvm *r, const char *script, int *code)
{
	microvm_agent *a = NULL;
	int e = agent_connect_watching(r->vm, r->console, "root file system guest",
				       AGENT_TIMEOUT_MS, &a);
	if (e) {
		char *c = console_text(r);
		print_console_tail("root file system guest", c, 40);
		free(c);
		fail_msg("agent connect: %d %s", e, microvm_last_error(r->vm));
	}
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = (const char *const[]){ "/bin/sh", "-c", script, NULL };
	cfg.timeout_ms = EXEC_TIMEOUT_MS;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	e = microvm_agent_exec(a, &cfg, &res);
	if (e)
		fail_msg("exec: %d %s", e, microvm_agent_last_error(a));
	if (res.err_len)
		fprintf(stderr, "guest stderr: %.*s", (int)res.err_len, res.err);
	char *out = strndup(res.out ? res.out : "", res.out_len);
	*code = res.exit_code;
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
	return out;
}

/* First line of `sha256sum @path` (the hash). */
static char *sha256_of(const char *path)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char *h = calloc(1, 65);
	assert_non_null(h);
	assert_int_equal(fread(h, 1, 64, p), 64);
	pclose(p);
	return h;
}

/* Writes, a changed base file and a removal: all in the overlay. */
#define WRITE_SCRIPT                                                                       \
	"set -e; grep ' / ' /proc/mounts; echo written-by-guest >/new.txt; cat /new.txt; "  \
	"echo changed >/etc/base.txt; cat /etc/base.txt; rm /bin/ls; test ! -e /bin/ls; " \
	"sync; echo WRITES-OK"

static void check_writes(const char *out, const char *root_type)
{
	if (!strstr(out, root_type) || !strstr(out, "written-by-guest\nchanged\n") ||
	    !strstr(out, "WRITES-OK"))
		fail_msg("unexpected guest output:\n%s", out);
}

static void test_overlay_root_keeps_base(void **state)
{
	(void)state;
	const char *img = need_env("MICROVM_TEST_AGENT_ROOTFS");
	char *before = sha256_of(img);
	struct rootvm r;
	boot_root(&r, "tmpfs", NULL);
	int code;
	char *out = guest_sh(&r, WRITE_SCRIPT, &code);
	printf("linux rootfs: guest said:\n%s", out);
	assert_int_equal(code, 0);
	check_writes(out, "overlay / overlay rw");
	free(out);
	destroy_root(&r);
	char *after = sha256_of(img);
	assert_string_equal(before, after);
	char *base = ext4_cat(img, "/etc/base.txt");
	assert_string_equal(base, "base image file\n");
	printf("linux rootfs: base image sha256 %s unchanged\n", after);
	free(base);
	free(before);
	free(after);
}

static void test_overlay_root_on_scratch_disk(void **state)
{
	(void)state;
	char scratch[] = "/tmp/microvm-scratch-XXXXXX";
	int fd = mkstemp(scratch);
	assert_true(fd >= 0);
	close(fd);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "mke2fs -q -F -t ext4 '%s' 32M", scratch);
	assert_int_equal(system(cmd), 0);
	const char *img = need_env("MICROVM_TEST_AGENT_ROOTFS");
	char *before = sha256_of(img);
	struct rootvm r;
	boot_root(&r, "/dev/vdb", scratch);
	int code;
	char *out = guest_sh(&r, WRITE_SCRIPT, &code);
	assert_int_equal(code, 0);
	check_writes(out, "overlay / overlay rw");
	free(out);
	destroy_root(&r);
	char *kept = ext4_cat(scratch, "/upper/new.txt");
	assert_string_equal(kept, "written-by-guest\n");
	char *after = sha256_of(img);
	assert_string_equal(before, after);
	printf("linux rootfs: scratch disk holds upper/new.txt; base unchanged\n");
	free(kept);
	free(before);
	free(after);
	unlink(scratch);
}

/* A bad microvm.overlay= is reported; the agent still serves, on the
 * read-only root. */
static void test_overlay_failure_keeps_agent(void **state)
{
	(void)state;
	struct rootvm r;
	boot_root(&r, "/dev/vdz", NULL);
	int code;
	char *out = guest_sh(&r, "grep ' / ' /proc/mounts; touch /x 2>/dev/null || echo RO", &code);
	char *con = console_text(&r);
	if (!strstr(out, "RO\n") || !strstr(con, "ERROR: microvm.overlay=/dev/vdz"))
		fail_msg("output:\n%s\nconsole:\n%s", out, con);
	free(out);
	free(con);
	destroy_root(&r);
}

int main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_overlay_root_keeps_base),
		cmocka_unit_test(test_overlay_root_on_scratch_disk),
		cmocka_unit_test(test_overlay_failure_keeps_agent),
	};
	/* run.sh runs one case per emulated machine: MICROVM_TEST_FILTER. */
	const char *filter = getenv("MICROVM_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests_name("linux_rootfs", tests, NULL, NULL);
}
