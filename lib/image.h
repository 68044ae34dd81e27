/* A kernel or initrd being loaded: a file read piece by piece straight into
 * guest RAM (no copy of the whole file in host memory), or a buffer (unit
 * tests and fuzzers). Every read is bounded by the size seen at open; a
 * file that shrinks meanwhile gives an error, never SIGBUS (files are read,
 * not mapped). */
#ifndef MICROVM_IMAGE_H
#define MICROVM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

/* What tells a file's versions apart (lib/image_cache.c). */
struct image_id {
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
};

struct image {
	const uint8_t *buf; /* NULL: read from @fd */
	int fd;
	uint64_t size;
	struct image_id id; /* files only */
};

static inline struct image image_of_buffer(const void *buf, size_t size)
{
	struct image im = { (const uint8_t *)buf, -1, size, { 0, 0, 0, 0, 0 } };
	return im;
}

/* fstat @fd into @id. 0 or -errno. */
int image_identify(int fd, struct image_id *id);

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

/*
 * Put the image's bytes [off, off + len) at @dst, inside guest RAM @mem:
 * read like image_read, or, for a large range of a file, mapped
 * copy-on-write from the process's cached copy of the file (the pages
 * whole inside the range; lib/image_cache.h), so that VMs booting the same
 * file share its unchanged pages and nothing is copied. Same errors as
 * image_read.
 */
int image_to_ram(const struct image *im, struct guest_mem *mem, uint64_t off, void *dst,
		 uint64_t len);

#endif
