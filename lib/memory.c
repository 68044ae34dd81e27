#include "memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static bool size_ok(uint64_t size)
{
	return size != 0 && !(size & 0xfff) && size <= (1ULL << 46);
}

/* Take the mapping @p of @size bytes as the guest RAM of @m. */
static void adopt_ram(struct guest_mem *m, void *p, int fd, uint64_t size,
		      const struct gm_layout *layout, bool file_backed)
{
	madvise(p, size, MADV_DONTDUMP);
	m->fd = fd;
	m->host = p;
	m->size = size;
	m->low_size = size < layout->low_limit ? size : layout->low_limit;
	m->high_base = layout->high_base;
	m->file_backed = file_backed;
}

/* Anonymous and private: no file descriptor to keep (a VM holds only what
 * KVM needs), untouched pages read as the shared zero page. */
int gm_init(struct guest_mem *m, uint64_t size, const struct gm_layout *layout)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (!size_ok(size))
		return -EINVAL;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	adopt_ram(m, p, -1, size, layout, false);
	m->all_zero = true;
	return 0;
}

void gm_zero(const struct guest_mem *m, void *p, uint64_t len)
{
	if (!m->all_zero)
		memset(p, 0, len);
}

void gm_will_fill(const struct guest_mem *m, void *p, uint64_t len)
{
	const uintptr_t huge = 2u << 20;
	uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
	uintptr_t b = ((uintptr_t)p + len) & ~(huge - 1);
	if (m->fd < 0 && b > a)
		madvise((void *)a, b - a, MADV_HUGEPAGE);
}

int gm_map_file(struct guest_mem *m, int fd, uint64_t size, const struct gm_layout *layout)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	struct stat st;
	int err = 0;
	if (!size_ok(size))
		err = -EINVAL;
	else if (fstat(fd, &st) < 0)
		err = -errno;
	else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < size)
		err = -EINVAL;
	if (err) {
		close(fd);
		return err;
	}
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		err = -errno;
		close(fd);
		return err;
	}
	adopt_ram(m, p, fd, size, layout, true);
	return 0;
}

int gm_map_copy(struct guest_mem *m, void *p, uint64_t len, int fd, uint64_t fd_off)
{
	uintptr_t base = (uintptr_t)m->host, addr = (uintptr_t)p;
	uint64_t at = addr - base; /* checked below: addr >= base */
	if (m->file_backed || !m->host || addr < base || at >= m->size || len == 0 ||
	    len > m->size - at || ((at | len | fd_off) & (GM_PAGE - 1)))
		return -EINVAL;
	if (m->n_mapped == GM_MAX_MAPPED)
		return -ENOSPC;
	void *q = mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd,
		       (off_t)fd_off);
	if (q == MAP_FAILED)
		return -errno;
	madvise(p, len, MADV_DONTDUMP);
	m->mapped[m->n_mapped++] = (struct gm_range){ at, len };
	return 0;
}

int gm_track_dirty(struct guest_mem *m)
{
	size_t words = (size_t)((GM_PAGES(m) + 63) / 64);
	if (m->dirty) {
		memset(m->dirty, 0, words * sizeof(uint64_t));
		return 0;
	}
	m->dirty = calloc(words ? words : 1, sizeof(uint64_t));
	return m->dirty ? 0 : -ENOMEM;
}

void gm_mark_dirty(const struct guest_mem *m, const void *p, uint64_t len)
{
	if (!m->dirty || len == 0)
		return;
	const uint8_t *b = p;
	if (b < m->host || (uint64_t)(b - m->host) >= m->size || len > m->size - (uint64_t)(b - m->host))
		return;
	uint64_t first = (uint64_t)(b - m->host) / GM_PAGE;
	uint64_t last = ((uint64_t)(b - m->host) + len - 1) / GM_PAGE;
	for (uint64_t pg = first; pg <= last; pg++)
		__atomic_fetch_or(&m->dirty[pg / 64], 1ULL << (pg % 64), __ATOMIC_RELAXED);
}

void gm_release(struct guest_mem *m)
{
	free(m->dirty);
	if (m->host)
		munmap(m->host, m->size);
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	if (!m->host)
		return NULL;
	/* Low region: [0, low_size). gpa < low_size and len <= low_size - gpa
	 * cannot overflow. */
	if (gpa < m->low_size) {
		if (len > m->low_size - gpa)
			return NULL;
		return m->host + gpa;
	}
	uint64_t high_size = m->size - m->low_size;
	if (gpa < m->high_base || gpa - m->high_base >= high_size)
		return NULL;
	uint64_t off = gpa - m->high_base;
	if (len > high_size - off)
		return NULL;
	return m->host + m->low_size + off;
}

bool gm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *p = gm_ptr(m, gpa, len);
	if (!p)
		return false;
	memcpy(dst, p, len);
	return true;
}

bool gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gm_ptr(m, gpa, len);
	if (!p)
		return false;
	memcpy(p, src, len);
	return true;
}

uint64_t gm_end(const struct guest_mem *m)
{
	if (m->size > m->low_size)
		return m->high_base + (m->size - m->low_size);
	return m->low_size;
}
