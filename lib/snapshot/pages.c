#include "snapshot/pages.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "memory.h"

/* /proc/self/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61) /* file page or shared anonymous */
#define PAGEMAP_BATCH 4096

/* PAGEMAP_SCAN (Linux 6.7, linux/fs.h; defined here for older headers):
 * the kernel walks the range and returns only the matching page runs. */
#ifndef PAGEMAP_SCAN
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#endif
#define SCAN_REGIONS 256

/* With PAGEMAP_SCAN: 0, -ENOTTY/-EINVAL from a kernel without it (before
 * any run was reported), another -errno, or @fn's return. The kernel's
 * answers are checked: runs inside RAM, the walk moving forward. */
static int scan(int fd, const struct guest_mem *m, private_run_fn fn, void *opaque)
{
	struct page_region v[SCAN_REGIONS];
	uint64_t at = (uintptr_t)m->host, end = at + m->size;
	while (at < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .start = at, .end = end,
			.vec = (uintptr_t)v, .vec_len = SCAN_REGIONS,
			/* present or swapped, not a file page, not the zero page */
			.category_inverted = PAGE_IS_FILE | PAGE_IS_PFNZERO,
			.category_mask = PAGE_IS_FILE | PAGE_IS_PFNZERO,
			.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
			.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		};
		memset(v, 0, sizeof(v)); /* for tools that do not know what it writes */
		int n = ioctl(fd, PAGEMAP_SCAN, &a);
		if (n < 0)
			return -errno;
		if (n > SCAN_REGIONS)
			return -EIO;
		for (int i = 0; i < n; i++) {
			if (v[i].start < at || v[i].end > end || v[i].end <= v[i].start ||
			    (v[i].start | v[i].end) % GM_PAGE)
				return -EIO;
			uint64_t first = (v[i].start - (uintptr_t)m->host) / GM_PAGE;
			int r = fn(opaque, first, (v[i].end - v[i].start) / GM_PAGE);
			if (r)
				return r;
		}
		if (a.walk_end <= at || a.walk_end > end)
			return -EIO;
		at = a.walk_end;
	}
	return 0;
}

static bool is_private(uint64_t e)
{
	return ((e & PM_PRESENT) && !(e & PM_FILE)) || (e & PM_SWAPPED);
}

int private_pages_from_map(int fd, const struct guest_mem *m, private_run_fn fn, void *opaque)
{
	static __thread uint64_t e[PAGEMAP_BATCH];
	uint64_t pages = GM_PAGES(m), first = (uintptr_t)m->host / GM_PAGE;
	uint64_t run = 0, len = 0;
	for (uint64_t i = 0; i < pages; i += PAGEMAP_BATCH) {
		uint64_t n = pages - i < PAGEMAP_BATCH ? pages - i : PAGEMAP_BATCH;
		ssize_t got = pread(fd, e, n * 8, (off_t)((first + i) * 8));
		if (got != (ssize_t)(n * 8))
			return got < 0 ? -errno : -EIO;
		for (uint64_t j = 0; j < n; j++) {
			if (!is_private(e[j]))
				continue;
			if (len && run + len == i + j) {
				len++;
				continue;
			}
			int r = len ? fn(opaque, run, len) : 0;
			if (r)
				return r;
			run = i + j;
			len = 1;
		}
	}
	return len ? fn(opaque, run, len) : 0;
}

int private_pages(int pagemap_fd, const struct guest_mem *m, private_run_fn fn, void *opaque)
{
	int r = scan(pagemap_fd, m, fn, opaque);
	return r == -ENOTTY || r == -EINVAL ? private_pages_from_map(pagemap_fd, m, fn, opaque) : r;
}
