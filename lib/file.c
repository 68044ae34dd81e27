#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "errbuf.h"

int file_open_regular(const char *path, int flags, struct stat *st)
{
	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
	int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == EISDIR ? -EINVAL : -errno;
	int r = 0;
	if (fstat(fd, st) < 0)
		r = -errno;
	else if (!S_ISREG(st->st_mode))
		r = -EINVAL;
	else if (fcntl(fd, F_SETFL, flags & ~O_ACCMODE) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/* ----------------------------------------------- owner-only Unix sockets */

#define SOCK_LEAF "s"

/* Where the socket is created and where it goes. */
struct usock {
	int parent_fd; /* O_PATH directory of the target */
	char dir[PATH_MAX]; /* its name, as given */
	const char *leaf;
	char tmp[NAME_MAX + 1]; /* private directory inside the parent */
	int tmp_fd;
	int fd; /* the socket */
};

/* Split @path into its directory (opened) and leaf. */
static int usock_open_parent(struct usock *u, const char *path, char *err, size_t errlen)
{
	const char *slash = strrchr(path, '/');
	u->leaf = slash ? slash + 1 : path;
	if (!*u->leaf || !strcmp(u->leaf, ".") || !strcmp(u->leaf, ".."))
		return errbuf_fail(err, errlen, -EINVAL, "%s: not a usable socket name", path);
	size_t dlen = slash ? (size_t)(slash - path) : 0;
	if (dlen >= sizeof(u->dir) - 1)
		return errbuf_fail(err, errlen, -ENAMETOOLONG, "%s: path too long", path);
	memcpy(u->dir, path, dlen);
	u->dir[dlen] = '\0';
	if (!slash || !dlen)
		strcpy(u->dir, slash ? "/" : ".");
	const char *d = u->dir;
	u->parent_fd = open(d, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (u->parent_fd < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "%s: %s", d, strerror(e));
	}
	return 0;
}

/* A new directory ".<leaf>.<random>" in the parent, mode exactly 0700. */
static int usock_make_tmpdir(struct usock *u, char *err, size_t errlen)
{
	int e = EEXIST;
	for (int i = 0; i < 16 && e == EEXIST; i++) {
		uint64_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
			rnd ^= (uint64_t)getpid() << 32 ^ (uint64_t)clock() ^ (uint64_t)i;
		int n = snprintf(u->tmp, sizeof(u->tmp), ".%.200s.%016llx", u->leaf,
				 (unsigned long long)rnd);
		if (n < 0 || (size_t)n >= sizeof(u->tmp))
			return errbuf_fail(err, errlen, -ENAMETOOLONG, "%s: name too long", u->leaf);
		e = mkdirat(u->parent_fd, u->tmp, 0700) < 0 ? errno : 0;
	}
	if (e) {
		u->tmp[0] = '\0';
		return errbuf_fail(err, errlen, -e, "creating a directory beside %s: %s", u->leaf,
				   strerror(e));
	}
	u->tmp_fd = openat(u->parent_fd, u->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (u->tmp_fd < 0 || fchmod(u->tmp_fd, 0700) < 0) { /* the umask may have taken bits */
		e = errno;
		return errbuf_fail(err, errlen, -e, "%s: %s", u->tmp, strerror(e));
	}
	return 0;
}

/* Bind @fd inside the private directory: through its fd, so there is no
 * path to race and no 108-byte sun_path limit on the directory's name; by
 * name if /proc is not mounted. */
static int usock_bind_in_tmp(const struct usock *u, int fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/" SOCK_LEAF, u->tmp_fd);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return 0;
	if (errno != ENOENT || access("/proc/self/fd", X_OK) == 0)
		return -1;
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s/" SOCK_LEAF, u->dir, u->tmp);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return bind(fd, (struct sockaddr *)&sa, sizeof(sa));
}

/* Bind and listen inside the private directory, then make the file 0600. */
static int usock_bind(struct usock *u, const char *path, int backlog, char *err, size_t errlen)
{
	u->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "socket: %s", strerror(e));
	}
	if (usock_bind_in_tmp(u, u->fd) < 0 || fchmodat(u->tmp_fd, SOCK_LEAF, 0600, 0) < 0 ||
	    listen(u->fd, backlog) < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "%s: binding: %s", path, strerror(e));
	}
	return 0;
}

/* What sits at the target now: 1 a socket, 0 nothing, -EEXIST anything else. */
static int usock_target_kind(const struct usock *u)
{
	struct stat st;
	if (fstatat(u->parent_fd, u->leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	return S_ISSOCK(st.st_mode) ? 1 : -EEXIST;
}

/* Swap ours in for the stale socket at the target; keep what came out only
 * if it was a socket (else put it back: someone raced us). */
static int usock_replace(struct usock *u)
{
	if (renameat2(u->tmp_fd, SOCK_LEAF, u->parent_fd, u->leaf, RENAME_EXCHANGE) < 0)
		return -errno;
	struct stat out;
	if (fstatat(u->tmp_fd, SOCK_LEAF, &out, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISSOCK(out.st_mode)) {
		renameat2(u->tmp_fd, SOCK_LEAF, u->parent_fd, u->leaf, RENAME_EXCHANGE);
		return -EEXIST;
	}
	return 0;
}

/* Put ours at the target unless something is there: 0 or -errno. */
static int usock_noreplace(struct usock *u)
{
	if (renameat2(u->tmp_fd, SOCK_LEAF, u->parent_fd, u->leaf, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL)
		return -errno;
	/* A file system without rename flags: a hard link never replaces
	 * either (the private name goes at cleanup). */
	return linkat(u->tmp_fd, SOCK_LEAF, u->parent_fd, u->leaf, 0) == 0 ? 0 : -errno;
}

static int usock_install(struct usock *u, const char *path, char *err, size_t errlen)
{
	for (int tries = 0; tries < 4; tries++) {
		int e = -usock_noreplace(u);
		if (e == 0)
			return 0;
		if (e != EEXIST)
			return errbuf_fail(err, errlen, -e, "%s: %s", path, strerror(e));
		int kind = usock_target_kind(u);
		if (kind == 0)
			continue; /* it went away meanwhile */
		if (kind < 0 || (e = -usock_replace(u)) == EEXIST)
			return errbuf_fail(err, errlen, -EEXIST, "%s: exists and is not a socket",
					   path);
		if (e == 0)
			return 0;
		if (e != ENOENT)
			return errbuf_fail(err, errlen, -e, "%s: replacing the socket there: %s%s", path,
					   strerror(e),
					   e == EINVAL ? " (this file system cannot swap files "
							 "atomically: remove the stale socket first)"
						       : "");
	}
	return errbuf_fail(err, errlen, -EEXIST, "%s: keeps changing under us", path);
}

static void usock_cleanup(struct usock *u)
{
	if (u->tmp_fd >= 0) {
		unlinkat(u->tmp_fd, SOCK_LEAF, 0); /* ours if not installed, or a stale one */
		close(u->tmp_fd);
	}
	if (u->tmp[0])
		unlinkat(u->parent_fd, u->tmp, AT_REMOVEDIR);
	if (u->parent_fd >= 0)
		close(u->parent_fd);
}

int file_listen_unix_private(const char *path, int backlog, struct stat *st, char *err,
			     size_t errlen)
{
	struct usock u = { .parent_fd = -1, .tmp_fd = -1, .fd = -1 };
	int r = usock_open_parent(&u, path, err, errlen);
	if (r == 0)
		r = usock_make_tmpdir(&u, err, errlen);
	if (r == 0)
		r = usock_bind(&u, path, backlog, err, errlen);
	if (r == 0 && fstatat(u.tmp_fd, SOCK_LEAF, st, AT_SYMLINK_NOFOLLOW) < 0)
		r = errbuf_fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	if (r == 0)
		r = usock_install(&u, path, err, errlen);
	usock_cleanup(&u);
	if (r < 0) {
		if (u.fd >= 0)
			close(u.fd);
		return r;
	}
	return u.fd;
}

int file_unlink_socket_if_ours(const char *path, const struct stat *ours)
{
	struct usock u = { .parent_fd = -1, .tmp_fd = -1, .fd = -1 };
	char err[8];
	int r = usock_open_parent(&u, path, err, sizeof(err));
	if (r == 0)
		r = usock_make_tmpdir(&u, err, sizeof(err));
	/* Take whatever is there out of the shared directory first, then look
	 * at it where nobody else can change it. */
	if (r == 0 && renameat2(u.parent_fd, u.leaf, u.tmp_fd, SOCK_LEAF, RENAME_NOREPLACE) < 0)
		r = -errno;
	struct stat st;
	if (r == 0 && fstatat(u.tmp_fd, SOCK_LEAF, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    (st.st_dev != ours->st_dev || st.st_ino != ours->st_ino)) {
		/* Someone else's: put it back (unless the name was taken again). */
		if (renameat2(u.tmp_fd, SOCK_LEAF, u.parent_fd, u.leaf, RENAME_NOREPLACE) < 0) {
			close(u.tmp_fd); /* the name was taken again: keep theirs here */
			u.tmp_fd = -1;
		}
		r = -ESTALE;
	}
	usock_cleanup(&u); /* removes ours (the directory only if empty) */
	return r;
}
