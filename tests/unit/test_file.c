/* Owner-only Unix sockets (lib/file.c: file_listen_unix_private and
 * file_unlink_socket_if_ours), the vsock bridge's listening socket. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "file.h"

struct dir {
	char path[256];
	char sock[300];
	mode_t old_umask;
	int deep;
};

static void dir_setup(struct dir *d, const char *deep)
{
	snprintf(d->path, sizeof(d->path), "/tmp/microvm-file-XXXXXX");
	assert_non_null(mkdtemp(d->path));
	d->deep = deep != NULL;
	if (deep) { /* a directory whose name alone exceeds sun_path */
		strcat(d->path, "/");
		strcat(d->path, deep);
		assert_int_equal(mkdir(d->path, 0700), 0);
	}
	snprintf(d->sock, sizeof(d->sock), "%s/vm.sock", d->path);
	d->old_umask = umask(0);
}

static int entries(const char *path)
{
	DIR *dd = opendir(path);
	assert_non_null(dd);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(dd)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(dd);
	return n;
}

static void dir_teardown(struct dir *d)
{
	umask(d->old_umask);
	assert_int_equal(rmdir(d->path), 0);
	if (d->deep) { /* remove the parent too */
		*strrchr(d->path, '/') = '\0';
		assert_int_equal(rmdir(d->path), 0);
	}
}

static void expect_private_socket(const char *path, const struct stat *st)
{
	struct stat now;
	assert_int_equal(lstat(path, &now), 0);
	assert_true(S_ISSOCK(now.st_mode));
	assert_int_equal(now.st_mode & 07777, 0600);
	assert_true(now.st_ino == st->st_ino && now.st_dev == st->st_dev);
}

static void test_listen_and_unlink(void **state)
{
	(void)state;
	struct dir d;
	dir_setup(&d, NULL);
	char err[256];
	struct stat st;
	int fd = file_listen_unix_private(d.sock, 4, &st, err, sizeof(err));
	if (fd < 0)
		fail_msg("%d %s", fd, err);
	expect_private_socket(d.sock, &st);
	assert_int_equal(entries(d.path), 1); /* no private directory left */
	/* It listens: a client connects. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(d.sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, d.sock, strlen(d.sock) + 1);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(c);
	assert_int_equal(file_unlink_socket_if_ours(d.sock, &st), 0);
	assert_int_equal(entries(d.path), 0);
	close(fd);
	dir_teardown(&d);
}

/* A file that took the socket's place is not removed (it is put back). */
static void test_unlink_leaves_others(void **state)
{
	(void)state;
	struct dir d;
	dir_setup(&d, NULL);
	char err[256];
	struct stat st;
	int fd = file_listen_unix_private(d.sock, 4, &st, err, sizeof(err));
	assert_true(fd >= 0);
	assert_int_equal(unlink(d.sock), 0);
	int f = open(d.sock, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(f >= 0);
	close(f);
	assert_int_equal(file_unlink_socket_if_ours(d.sock, &st), -ESTALE);
	struct stat now;
	assert_int_equal(lstat(d.sock, &now), 0);
	assert_true(S_ISREG(now.st_mode));
	assert_int_equal(entries(d.path), 1);
	assert_int_equal(unlink(d.sock), 0);
	close(fd);
	dir_teardown(&d);
}

/* The directory's name is longer than a sockaddr_un can hold. */
static void test_long_directory_name(void **state)
{
	(void)state;
	char deep[161];
	memset(deep, 'd', sizeof(deep) - 1);
	deep[sizeof(deep) - 1] = '\0';
	struct dir d;
	dir_setup(&d, deep);
	assert_true(strlen(d.sock) > sizeof(((struct sockaddr_un *)0)->sun_path));
	char err[256];
	struct stat st;
	int fd = file_listen_unix_private(d.sock, 4, &st, err, sizeof(err));
	if (fd < 0)
		fail_msg("%d %s", fd, err);
	expect_private_socket(d.sock, &st);
	assert_int_equal(file_unlink_socket_if_ours(d.sock, &st), 0);
	close(fd);
	dir_teardown(&d);
}

/* In a child whose renameat2() refuses flags (as on file systems without
 * RENAME_NOREPLACE / RENAME_EXCHANGE): 0 when the checks held, else the
 * number of the check that failed. */
static int no_rename_flags_child(const char *sock)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r = !ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EINVAL), SCMP_SYS(renameat2), 1,
					 SCMP_A4(SCMP_CMP_NE, 0)) < 0 || seccomp_load(ctx) < 0;
	seccomp_release(ctx); /* the loaded filter stays; valgrind checks this child too */
	if (r)
		return 1;
	char err[256];
	struct stat st;
	int fd = file_listen_unix_private(sock, 4, &st, err, sizeof(err)); /* by hard link */
	struct stat now;
	if (fd < 0 || lstat(sock, &now) < 0 || !S_ISSOCK(now.st_mode) ||
	    (now.st_mode & 07777) != 0600 || now.st_ino != st.st_ino)
		return 2;
	close(fd); /* now a stale socket: it cannot be swapped out atomically */
	if (file_listen_unix_private(sock, 4, &st, err, sizeof(err)) != -EINVAL ||
	    !strstr(err, "remove the stale socket first"))
		return 3;
	return unlink(sock) == 0 ? 0 : 5;
}

static void test_without_rename_flags(void **state)
{
	(void)state;
	struct dir d;
	dir_setup(&d, NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(no_rename_flags_child(d.sock));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status))
		fail_msg("check %d of no_rename_flags_child failed", WEXITSTATUS(status));
	assert_int_equal(entries(d.path), 0);
	dir_teardown(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listen_and_unlink),
		cmocka_unit_test(test_unlink_leaves_others),
		cmocka_unit_test(test_long_directory_name),
		cmocka_unit_test(test_without_rename_flags),
	};
	return cmocka_run_group_tests_name("file", tests, NULL, NULL);
}
