#include "image_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"

#define DEFAULT_LIMIT_MIB 256u

struct image_copy {
	struct image_copy *next; /* most recently used first */
	struct image_id id;
	uint64_t shift;
	int fd;
	unsigned refs;  /* users mapping it now */
	bool dropped;   /* out of the list: closed by the last put */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct image_copy *copies;
static uint64_t held, limit = (uint64_t)DEFAULT_LIMIT_MIB << 20;

/* Bytes the copy holds: the file after @shift bytes of padding. */
static uint64_t bytes_of(const struct image_copy *c)
{
	return c->shift + c->id.size;
}

static bool same(const struct image_copy *c, const struct image_id *id, uint64_t shift)
{
	return c->shift == shift && c->id.dev == id->dev && c->id.ino == id->ino &&
	       c->id.size == id->size && c->id.mtime_ns == id->mtime_ns &&
	       c->id.ctime_ns == id->ctime_ns;
}

static void free_copy(struct image_copy *c)
{
	close(c->fd);
	free(c);
}

/* Take @c out of the list (lock held); freed now if unused. */
static void drop(struct image_copy **link)
{
	struct image_copy *c = *link;
	*link = c->next;
	held -= bytes_of(c);
	c->dropped = true;
	if (c->refs == 0)
		free_copy(c);
}

/* Drop least recently used copies until @extra more bytes fit (lock held). */
static void make_room(uint64_t extra)
{
	while (copies && held + extra > limit) {
		struct image_copy **last = &copies;
		while ((*last)->next)
			last = &(*last)->next;
		drop(last);
	}
}

/* A sealed memfd holding @im's bytes from offset @shift, or -errno. */
static int copy_file(const struct image *im, uint64_t shift)
{
	int fd = memfd_create("microvm-image", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	uint64_t len = shift + im->size;
	int r = ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
	void *p = r == 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
	if (r == 0 && p == MAP_FAILED)
		r = -errno;
	if (r == 0) {
		r = image_read(im, 0, (uint8_t *)p + shift, im->size);
		munmap(p, len);
	}
	if (r == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
					     F_SEAL_SEAL) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/* Whether @im's file is still what image_open saw (not written meanwhile). */
static bool unchanged(const struct image *im)
{
	struct image_id now;
	return image_identify(im->fd, &now) == 0 && now.dev == im->id.dev &&
	       now.ino == im->id.ino && now.size == im->id.size &&
	       now.mtime_ns == im->id.mtime_ns && now.ctime_ns == im->id.ctime_ns;
}

static struct image_copy *lookup(const struct image *im, uint64_t shift)
{
	for (struct image_copy **l = &copies; *l; l = &(*l)->next) {
		struct image_copy *c = *l;
		if (!same(c, &im->id, shift))
			continue;
		*l = c->next; /* to the front */
		c->next = copies;
		copies = c;
		c->refs++;
		return c;
	}
	return NULL;
}

/* Copy the file outside the lock (it may take milliseconds), then add it
 * unless another thread did meanwhile. */
static struct image_copy *add(const struct image *im, uint64_t shift)
{
	struct image_copy *c = calloc(1, sizeof(*c));
	int fd = c ? copy_file(im, shift) : -ENOMEM;
	if (fd < 0 || !unchanged(im)) {
		if (fd >= 0)
			close(fd);
		free(c);
		return NULL;
	}
	*c = (struct image_copy){ .id = im->id, .shift = shift, .fd = fd, .refs = 1 };
	pthread_mutex_lock(&lock);
	struct image_copy *other = lookup(im, shift);
	if (!other && bytes_of(c) <= limit) {
		make_room(bytes_of(c));
		c->next = copies;
		copies = c;
		held += bytes_of(c);
	} else {
		c->dropped = true; /* used once, then closed by its put */
	}
	pthread_mutex_unlock(&lock);
	if (other) {
		free_copy(c);
		return other;
	}
	return c;
}

struct image_copy *image_cache_get(const struct image *im, uint64_t shift)
{
	if (im->buf || im->fd < 0 || shift >= 4096)
		return NULL;
	pthread_mutex_lock(&lock);
	struct image_copy *c = lookup(im, shift);
	bool fits = shift + im->size <= limit;
	pthread_mutex_unlock(&lock);
	if (c || !fits)
		return c;
	return add(im, shift);
}

int image_copy_fd(const struct image_copy *c)
{
	return c->fd;
}

void image_cache_put(struct image_copy *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&lock);
	bool last = --c->refs == 0 && c->dropped;
	pthread_mutex_unlock(&lock);
	if (last)
		free_copy(c);
}

void image_cache_set_limit(uint32_t mib)
{
	pthread_mutex_lock(&lock);
	limit = (uint64_t)mib << 20;
	make_room(0);
	pthread_mutex_unlock(&lock);
}

void image_cache_stats(uint32_t *n, uint64_t *bytes)
{
	pthread_mutex_lock(&lock);
	uint32_t k = 0;
	for (struct image_copy *c = copies; c; c = c->next)
		k++;
	*n = k;
	*bytes = held;
	pthread_mutex_unlock(&lock);
}
