/* --jail, second part, in the VMM process (jail.c made it): new mount,
 * network, IPC, UTS and cgroup namespaces, and a root file system that holds
 * nothing of the host but the files the VM opens from here on.
 *
 * Each of those files (/dev/kvm, the kernel, the initramfs or root image, a
 * template directory) is cloned as a detached bind mount (open_tree) and
 * made read-only, nosuid, noexec and, but for /dev/kvm, nodev; then a small
 * tmpfs is mounted over /tmp (of this mount namespace only: / was made
 * private first), the clones are attached in it at their own absolute
 * paths (directories leading to them made 0755), and it becomes the root
 * (pivot_root(".", "."), the old root unmounted). The root is then
 * read-only too: the VMM can write nowhere. There is no /proc, /sys or /dev
 * beyond /dev/kvm in it. The network namespace is empty (only a down
 * loopback): passt and a TAP were opened before, and keep working through
 * their fds.
 *
 * Runs before the VM has threads: a namespace or root change made by one
 * thread would not apply to threads that already exist.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#define STAGE "/tmp" /* where the new root is built, in our mount namespace */
#define MAX_PATHS 8

static int fail_path(const char *what, const char *path)
{
	fprintf(stderr, "microvm-sandbox: --jail: %s %s: %s\n", what, path, strerror(errno));
	return SBX_EXIT_FAILED;
}

/* A detached read-only copy of the mount at @path. */
static int clone_ro(const char *path, bool *is_dir)
{
	struct stat st;
	if (path[0] != '/' || stat(path, &st) < 0)
		return path[0] == '/' ? -1 : (errno = EINVAL, -1);
	*is_dir = S_ISDIR(st.st_mode);
	int fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
					    MOUNT_ATTR_NOEXEC |
					    (S_ISCHR(st.st_mode) ? 0 : MOUNT_ATTR_NODEV) };
	if (fd >= 0 && mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* STAGE/@path as an empty file or directory, with its parents. */
static int make_mountpoint(const char *path, bool is_dir)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), STAGE "%s", path) >= (int)sizeof(p))
		return errno = ENAMETOOLONG, -1;
	for (char *s = strchr(p + strlen(STAGE) + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = 0;
		int r = mkdir(p, 0755);
		*s = '/';
		if (r < 0 && errno != EEXIST)
			return -1;
	}
	if (is_dir)
		return mkdir(p, 0755) < 0 && errno != EEXIST ? -1 : 0;
	int fd = open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0);
	return fd < 0 ? -1 : close(fd);
}

static int attach(int tree, const char *path, bool is_dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), STAGE "%s", path);
	if (make_mountpoint(path, is_dir) < 0 ||
	    move_mount(tree, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return fail_path("cannot place", path);
	return 0;
}

/* The staging tmpfs with @n clones in it, which then becomes the root. */
static int build_root(const char *const *paths, const int *trees, const bool *dirs, int n)
{
	if (mount("microvm-jail", STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "mode=0755,size=64k,nr_inodes=256") < 0)
		return fail_path("cannot mount a tmpfs on", STAGE);
	for (int i = 0; i < n; i++)
		if (attach(trees[i], paths[i], dirs[i]))
			return SBX_EXIT_FAILED;
	struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
					     MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC };
	if (chdir(STAGE) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
	    umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return fail_path("cannot make the root", STAGE);
	if (mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof(ro)) < 0)
		return fail_path("cannot make read-only:", "/");
	return 0;
}

int sbx_jail_enter(const char *const *paths, int n)
{
	int trees[MAX_PATHS], r = 0, made = 0;
	bool dirs[MAX_PATHS];
	if (n > MAX_PATHS)
		return sbx_fail("--jail", "too many files to bind");
	if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP) < 0)
		return sbx_fail("--jail: unshare", strerror(errno));
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return sbx_fail("--jail: making / private", strerror(errno));
	for (; made < n && !r; made++)
		if ((trees[made] = clone_ro(paths[made], &dirs[made])) < 0)
			r = fail_path("cannot bind", paths[made]);
	if (!r)
		r = build_root(paths, trees, dirs, n);
	for (int i = 0; i < made; i++)
		if (trees[i] >= 0)
			close(trees[i]);
	return r;
}
