/*
 * microvm-sandbox's second wall and lockdown (examples/sandbox/jail.c,
 * jailfs.c, privs.c), natively and fast: a forked child enters the jail,
 * drops its privileges and checks from inside what it can see and hold,
 * then boots the tiny "hello" guest from the jail's root. The whole tool,
 * with Linux guests, is tested in tests/linux/sandbox/test_sandbox_privs.py.
 * Needs root (the jail without a user namespace; becoming nobody for the
 * one with): skips otherwise, fails under CI.
 */
#include <cap-ng.h>
#include <grp.h>
#include <limits.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "kvm_test.h"
#include "sandbox.h"

#define NOBODY 65534

/* Exit codes of the child: which check failed. */
enum { OK, E_ENTER = 10, E_LOCKDOWN, E_SEES_HOST, E_WRITES, E_CAPS, E_NNP, E_DUMPABLE, E_VM,
       E_PID1, E_FORK, E_USER };

/* A copy of the hello payload in a fresh directory anyone can read. */
static void copy_payload(char *dir, char *out)
{
	strcpy(dir, "/tmp/microvm-jail-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0755), 0);
	snprintf(out, PATH_MAX, "%s/hello.elf", dir);
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0644 '%s'", payload("hello"), out, out);
	assert_int_equal(system(cmd), 0);
}

static void remove_payload(const char *dir, const char *file)
{
	assert_int_equal(unlink(file), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* Inside: nothing of the host, nothing writable, no privilege. */
static int check_inside(void)
{
	if (access("/etc/passwd", F_OK) == 0 || access("/proc/self", F_OK) == 0 ||
	    access("/dev/null", F_OK) == 0 || access("/usr", F_OK) == 0)
		return E_SEES_HOST;
	if (mkdir("/x", 0700) == 0 || errno != EROFS)
		return E_WRITES;
	if (capng_get_caps_process() < 0 || capng_have_capabilities(CAPNG_SELECT_BOTH) != CAPNG_NONE)
		return E_CAPS;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return E_NNP;
	return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 ? OK : E_DUMPABLE;
}

/* The tiny guest, booted from the jail's root: its greeting, then reset. */
static int boot_hello(const char *kernel)
{
	microvm *vm = NULL;
	int out = memfd_create("console", MFD_CLOEXEC);
	microvm_exit ex = MICROVM_EXIT_INIT;
	char buf[128] = "";
	int ok = out >= 0 && microvm_create(&vm) == 0 && microvm_set_memory(vm, 16) == 0 &&
		 microvm_set_kernel(vm, kernel, NULL) == 0 && microvm_set_console(vm, -1, out) == 0 &&
		 microvm_set_seccomp(vm, MICROVM_SECCOMP_ON) == 0 && microvm_start(vm) == 0 &&
		 microvm_wait(vm, GUEST_TIMEOUT_MS, &ex) == 0 && ex.reason == MICROVM_EXIT_RESET &&
		 pread(out, buf, sizeof(buf) - 1, 0) > 0 && strstr(buf, "Hello from the microvm");
	if (!ok && vm)
		fprintf(stderr, "jailed VM: %s\n", microvm_last_error(vm));
	microvm_destroy(vm);
	return ok ? OK : E_VM;
}

static int jail_and_boot(const char *kernel)
{
	const char *paths[] = { "/dev/kvm", kernel };
	if (sbx_jail_enter(paths, 2))
		return E_ENTER;
	if (sbx_lockdown(0))
		return E_LOCKDOWN;
	int r = check_inside();
	return r ? r : boot_hello(kernel);
}

static int wait_status(pid_t pid)
{
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static bool need_root(void)
{
	if (geteuid() == 0)
		return true;
	if (getenv("CI"))
		fail_msg("needs root (a jail without a user namespace; becoming nobody), and CI is set");
	fprintf(stderr, "SKIP: needs root\n");
	return false;
}

/* As root: no user namespace; the VMM is still uid 0 but holds nothing. */
static void test_root_jail_boots_tiny_guest(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	if (!need_root())
		skip();
	char dir[64], kernel[PATH_MAX];
	copy_payload(dir, kernel);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(jail_and_boot(kernel));
	assert_int_equal(wait_status(pid), OK);
	remove_payload(dir, kernel);
}

/* As nobody (who cannot open this host's /dev/kvm, so no VM): sbx_jail_fork
 * makes user and PID namespaces, the VMM child is PID 1, enters the jail,
 * and its exit status comes back through the waiting parent. */
static int nobody_child(const char *kernel)
{
	if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
	    setresuid(NOBODY, NOBODY, NOBODY) < 0)
		return E_USER;
	pid_t pid = sbx_jail_fork();
	if (pid < 0)
		return E_FORK;
	if (pid > 0)
		return sbx_jail_wait(pid);
	if (getpid() != 1)
		return E_PID1;
	const char *paths[] = { "/dev/kvm", kernel };
	if (sbx_jail_enter(paths, 2))
		return E_ENTER;
	return sbx_lockdown(0) ? E_LOCKDOWN : check_inside();
}

static void test_unprivileged_jail(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	char dir[64], kernel[PATH_MAX];
	copy_payload(dir, kernel);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(nobody_child(kernel));
	assert_int_equal(wait_status(pid), OK);
	remove_payload(dir, kernel);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_root_jail_boots_tiny_guest),
		cmocka_unit_test(test_unprivileged_jail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
