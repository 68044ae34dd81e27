/* A kernel or initrd being loaded: a file read piece by piece straight into
 * guest RAM (no copy of the whole file in host memory), or a buffer (unit
 * tests and fuzzers). Every read is bounded by the size seen at open; a
 * file that shrinks meanwhile gives an error, never SIGBUS (files are read,
 * not mapped). */
#ifndef MICROVM_IMAGE_H
#define MICROVM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

struct image {
	const uint8_t *buf; /* NULL: read from @fd */
	int fd;
	uint64_t size;
};

static inline struct image image_of_buffer(const void *buf, size_t size)
{
	struct image im = { (const uint8_t *)buf, -1, size };
	return im;
}

/*
 * Open the regular file @path, at most @max bytes and not empty. 0, or a
 * negative errno with a message naming @path in @err (-EINVAL: not a
 * regular file, -ENOMEM: larger than @max, -ENOEXEC: empty).
 */
int image_open(struct image *im, const char *path, uint64_t max, char *err, size_t errlen);
void image_close(struct image *im);

/* Copy @len bytes at offset @off into @dst. 0, -EINVAL if the range is not
 * inside the image, -EIO if the file shrank, or another negative errno. */
int image_read(const struct image *im, uint64_t off, void *dst, uint64_t len);

#endif
