/* The guest pages RAM holds privately: written since RAM was mapped
 * copy-on-write from its file (lib/snapshot/, for fork and reset). */
#ifndef MICROVM_SNAPSHOT_PAGES_H
#define MICROVM_SNAPSHOT_PAGES_H

#include <stdint.h>

struct guest_mem;

/* Called for each run of private pages [first, first + n) (page indexes of
 * RAM), in increasing order; nonzero stops the walk and is returned. */
typedef int (*private_run_fn)(void *opaque, uint64_t first, uint64_t n);

/*
 * Walk the pages of @m that are not its file's: present anonymous copies
 * (written since mapped) or swapped out. @pagemap_fd is an open
 * /proc/self/pagemap (borrowed). With PAGEMAP_SCAN (Linux 6.7) the kernel
 * walks the page tables, skipping unpopulated ranges, and returns the runs,
 * so the cost follows the pages touched far more than the size of RAM (6
 * us at 128 MiB, 13 us at 2 GiB with 64 pages written, docs/performance.md);
 * older kernels read the whole page map (8 bytes per page). 0, -errno, or
 * @fn's nonzero return.
 */
int private_pages(int pagemap_fd, const struct guest_mem *m, private_run_fn fn, void *opaque);

/* The same walk the way older kernels need it (reading every entry);
 * private_pages() uses it without PAGEMAP_SCAN. For the tests too. */
int private_pages_from_map(int pagemap_fd, const struct guest_mem *m, private_run_fn fn,
			   void *opaque);

#endif
