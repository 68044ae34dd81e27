#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errbuf.h"
#include "file.h"
#include "image_cache.h"
#include "memory.h"

/* Ranges smaller than this are read: a copy of a few pages costs less than
 * mapping them and faulting them in. */
#define MAP_MIN (1u << 20)

static struct image_id id_of(const struct stat *st)
{
	return (struct image_id){ (uint64_t)st->st_dev, (uint64_t)st->st_ino, (uint64_t)st->st_size,
				  st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
				  st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec };
}

int image_identify(int fd, struct image_id *id)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	*id = id_of(&st);
	return 0;
}

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
	im->id = id_of(&st);
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

/* Map the whole pages of [@dst, @dst + @len) from @c (whose bytes sit at
 * @shift past its start) and read the partial pages at both ends from it
 * too, so all of the range comes from one version of the file. */
static int map_copy(const struct image_copy *c, uint64_t shift, struct guest_mem *mem,
		    uint64_t off, uint8_t *dst, uint64_t len)
{
	uint8_t *a = (uint8_t *)(((uintptr_t)dst + GM_PAGE - 1) & ~(uintptr_t)(GM_PAGE - 1));
	uint8_t *b = (uint8_t *)(((uintptr_t)dst + len) & ~(uintptr_t)(GM_PAGE - 1));
	/* the copy as an image, as long as the range's end */
	struct image copy = { NULL, image_copy_fd(c), shift + off + len, { 0, 0, 0, 0, 0 } };
	int r = gm_map_copy(mem, a, (uint64_t)(b - a), copy.fd, shift + off + (uint64_t)(a - dst));
	if (r == 0)
		r = image_read(&copy, shift + off, dst, (uint64_t)(a - dst));
	if (r == 0)
		r = image_read(&copy, shift + off + (uint64_t)(b - dst), b, (uint64_t)(dst + len - b));
	return r;
}

int image_to_ram(const struct image *im, struct guest_mem *mem, uint64_t off, void *dst,
		 uint64_t len)
{
	if (off > im->size || len > im->size - off)
		return -EINVAL;
	uint64_t shift = ((uintptr_t)dst - off) & (GM_PAGE - 1);
	struct image_copy *c = len >= MAP_MIN ? image_cache_get(im, shift) : NULL;
	int r = c ? map_copy(c, shift, mem, off, dst, len) : -ENOENT;
	image_cache_put(c);
	if (r == 0)
		return 0;
	gm_will_fill(mem, dst, len);
	return image_read(im, off, dst, len);
}
