/*
 * Local attack surface: what the library creates on the file system is
 * owner-only whatever the umask, and another local user can neither connect
 * to a VM's vsock bridge socket nor read its snapshot. The other user is
 * "nobody" (uid/gid 65534) in a forked child, so these tests need root
 * (they skip otherwise). The directory used is shared the way /tmp is
 * (mode 1777), so only the files' own modes protect them. Each denial is
 * paired with a control: after the test loosens the mode itself, the same
 * child succeeds, so a child that could never connect or read (a broken
 * test) fails the test.
 */
#include <grp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <dirent.h>

#include "kvm_test.h"

#define NOBODY 65534

struct shared {
	char dir[64];
	char sock[96];
	mode_t old_umask;
};

static void shared_setup(struct shared *s)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/microvm-shared-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	assert_int_equal(chmod(s->dir, 01777), 0);
	snprintf(s->sock, sizeof(s->sock), "%s/vm.sock", s->dir);
	s->old_umask = umask(0);
}

/* Names in @dir other than "." and "..", joined by spaces. */
static const char *dir_listing(const char *dir)
{
	static char buf[1024];
	buf[0] = '\0';
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			strncat(buf, e->d_name, sizeof(buf) - strlen(buf) - 2);
			strncat(buf, " ", sizeof(buf) - strlen(buf) - 1);
		}
	closedir(d);
	return buf;
}

static void shared_teardown(struct shared *s)
{
	umask(s->old_umask);
	assert_int_equal(rmdir(s->dir), 0);
}

static void drop_to_nobody(void)
{
	if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
	    setresuid(NOBODY, NOBODY, NOBODY) < 0)
		_exit(200);
}

static int try_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return errno;
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? errno : 0;
	close(fd);
	return r;
}

static int try_read(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return errno;
	char c;
	int r = read(fd, &c, 1) < 0 ? errno : 0;
	close(fd);
	return r;
}

/* Run @op(@path) as nobody in a child: 0 if it worked, else its errno. */
static int as_nobody(int (*op)(const char *), const char *path)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		drop_to_nobody();
		_exit(op(path));
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 200); /* could not drop privileges */
	return WEXITSTATUS(status);
}

static void expect_mode(const char *path, mode_t type, mode_t perm)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	if ((st.st_mode & S_IFMT) != type || (st.st_mode & 07777) != perm || st.st_uid != geteuid())
		fail_msg("%s: mode %o uid %u, expected %o %o uid %u", path, st.st_mode,
			 st.st_uid, type, perm, geteuid());
}

static microvm *vsock_vm(const char *uds)
{
	microvm *vm = tiny_vm("spin", "every=2000000", 1, -1);
	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	vc.guest_cid = 3;
	vc.uds_path = uds;
	assert_int_equal(microvm_set_vsock(vm, &vc), 0);
	return vm;
}

static int require_root(void)
{
	if (geteuid() == 0)
		return 0;
	if (getenv("CI"))
		fail_msg("needs root to become another user, and CI is set: this test must run");
	fprintf(stderr, "SKIP: needs root to become another user\n");
	return -1;
}

static void test_vsock_socket_owner_only(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	if (require_root() < 0)
		skip();
	struct shared s;
	shared_setup(&s);
	microvm *vm = vsock_vm(s.sock);
	start_ok(vm);
	expect_mode(s.sock, S_IFSOCK, 0600);
	assert_string_equal(dir_listing(s.dir), "vm.sock "); /* no temporary left */
	assert_int_equal(try_connect(s.sock), 0);           /* the owner can */
	int denied = as_nobody(try_connect, s.sock);
	printf("umask 0: socket mode 0600; nobody connecting: %s\n", strerror(denied));
	assert_int_equal(denied, EACCES);
	/* Control: the same child connects once the mode allows it. */
	assert_int_equal(chmod(s.sock, 0666), 0);
	assert_int_equal(as_nobody(try_connect, s.sock), 0);
	microvm_destroy(vm);
	assert_string_equal(dir_listing(s.dir), ""); /* removed with the VM */
	shared_teardown(&s);
}

/* A stale socket is replaced; any other file, or a symlink, is refused and
 * left exactly as it was. */
static void test_vsock_existing_files(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct shared s;
	shared_setup(&s);
	/* A regular file. */
	int fd = open(s.sock, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep", 4), 4);
	close(fd);
	microvm *vm = vsock_vm(s.sock);
	assert_int_equal(microvm_start(vm), -EEXIST);
	assert_non_null(strstr(microvm_last_error(vm), "not a socket"));
	expect_mode(s.sock, S_IFREG, 0644);
	assert_string_equal(dir_listing(s.dir), "vm.sock ");
	microvm_destroy(vm);
	assert_int_equal(unlink(s.sock), 0);
	/* A symlink (to a directory a socket could be created in). */
	assert_int_equal(symlink(s.dir, s.sock), 0);
	vm = vsock_vm(s.sock);
	assert_int_equal(microvm_start(vm), -EEXIST);
	expect_mode(s.sock, S_IFLNK, 0777);
	microvm_destroy(vm);
	assert_int_equal(unlink(s.sock), 0);
	/* A stale socket (bound, then its listener closed). */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s.sock);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	struct stat before;
	assert_int_equal(lstat(s.sock, &before), 0);
	vm = vsock_vm(s.sock);
	start_ok(vm);
	struct stat after;
	assert_int_equal(lstat(s.sock, &after), 0);
	assert_true(after.st_ino != before.st_ino);
	expect_mode(s.sock, S_IFSOCK, 0600);
	assert_string_equal(dir_listing(s.dir), "vm.sock ");
	microvm_destroy(vm);
	assert_string_equal(dir_listing(s.dir), "");
	shared_teardown(&s);
}

/* A file someone put in place of the VM's socket survives its destruction. */
static void test_vsock_replaced_socket_not_removed(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct shared s;
	shared_setup(&s);
	microvm *vm = vsock_vm(s.sock);
	start_ok(vm);
	char other[160];
	snprintf(other, sizeof(other), "%s/other", s.dir);
	int fd = open(other, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(rename(other, s.sock), 0);
	microvm_destroy(vm);
	expect_mode(s.sock, S_IFREG, 0600);
	assert_string_equal(dir_listing(s.dir), "vm.sock ");
	assert_int_equal(unlink(s.sock), 0);
	shared_teardown(&s);
}

static void test_snapshot_owner_only(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	if (require_root() < 0)
		skip();
	struct shared s;
	shared_setup(&s);
	char snap[128], mem[160], st[160];
	snprintf(snap, sizeof(snap), "%s/snap", s.dir);
	snprintf(mem, sizeof(mem), "%s/memory", snap);
	snprintf(st, sizeof(st), "%s/state.dtb", snap);
	microvm *vm = tiny_vm("spin", "every=2000000", 1, -1);
	start_ok(vm);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, snap, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	/* Twice: the second replaces the first (another temporary directory). */
	assert_int_equal(microvm_snapshot(vm, snap, 0), 0);
	microvm_destroy(vm);
	expect_mode(snap, S_IFDIR, 0700);
	expect_mode(mem, S_IFREG, 0600);
	expect_mode(st, S_IFREG, 0600);
	assert_string_equal(dir_listing(s.dir), "snap ");
	int dmem = as_nobody(try_read, mem), dst = as_nobody(try_read, st);
	printf("umask 0: snapshot dir 0700, files 0600; nobody reading memory: %s, state: %s\n",
	       strerror(dmem), strerror(dst));
	assert_int_equal(dmem, EACCES);
	assert_int_equal(dst, EACCES);
	/* With only the directory opened up, the files still refuse... */
	assert_int_equal(chmod(snap, 0755), 0);
	assert_int_equal(as_nobody(try_read, mem), EACCES);
	/* ...and the control: readable once the file's mode allows it. */
	assert_int_equal(chmod(mem, 0644), 0);
	assert_int_equal(as_nobody(try_read, mem), 0);
	assert_int_equal(unlink(mem), 0);
	assert_int_equal(unlink(st), 0);
	assert_int_equal(rmdir(snap), 0);
	shared_teardown(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vsock_socket_owner_only),
		cmocka_unit_test(test_vsock_existing_files),
		cmocka_unit_test(test_vsock_replaced_socket_not_removed),
		cmocka_unit_test(test_snapshot_owner_only),
	};
	return cmocka_run_group_tests_name("kvm_local_access", tests, require_kvm,
					   wait_teardown_done);
}
