#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

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
