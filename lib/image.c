#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errbuf.h"
#include "file.h"

int image_open(struct image *im, const char *path, uint64_t max, char *err, size_t errlen)
{
	struct stat st;
	*im = image_of_buffer(NULL, 0);
	int fd = file_open_regular(path, O_RDONLY, &st);
	if (fd == -EINVAL)
		return errbuf_fail(err, errlen, -EINVAL, "%s: not a regular file", path);
	if (fd < 0)
		return errbuf_fail(err, errlen, fd, "%s: %s", path, strerror(-fd));
	int r = 0;
	if (st.st_size == 0)
		r = errbuf_fail(err, errlen, -ENOEXEC, "%s: empty file", path);
	else if ((uint64_t)st.st_size > max)
		r = errbuf_fail(err, errlen, -ENOMEM, "%s: %lld bytes do not fit in guest RAM", path,
				(long long)st.st_size);
	if (r < 0) {
		close(fd);
		return r;
	}
	im->fd = fd;
	im->size = (uint64_t)st.st_size;
	return 0;
}

void image_close(struct image *im)
{
	if (im->fd >= 0)
		close(im->fd);
	im->fd = -1;
}

int image_read(const struct image *im, uint64_t off, void *dst, uint64_t len)
{
	if (off > im->size || len > im->size - off)
		return -EINVAL;
	if (im->buf) {
		memcpy(dst, im->buf + off, len);
		return 0;
	}
	for (uint64_t got = 0; got < len;) {
		ssize_t n = pread(im->fd, (uint8_t *)dst + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the file shrank since it was opened */
		got += (uint64_t)n;
	}
	return 0;
}
