/* The private pages of RAM mapped from a file (lib/snapshot/pages.c): the
 * runs PAGEMAP_SCAN reports and the runs read from /proc/self/pagemap are
 * the pages written since the mapping, and agree with each other. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "memory.h"
#include "snapshot/pages.h"

#define PAGES 256
#define MAX_RUNS 16

struct runs {
	int n;
	uint64_t first[MAX_RUNS], len[MAX_RUNS];
	int stop_after; /* return 1 after this many runs (0 = never) */
};

static int collect(void *opaque, uint64_t first, uint64_t n)
{
	struct runs *r = opaque;
	assert_true(r->n < MAX_RUNS);
	r->first[r->n] = first;
	r->len[r->n] = n;
	r->n++;
	return r->stop_after && r->n == r->stop_after ? 1 : 0;
}

struct fixture {
	struct guest_mem m;
	int pagemap;
};

/* RAM of PAGES pages mapped privately from a file holding 0xaa bytes. */
static int setup(void **state)
{
	static struct fixture f;
	int fd = memfd_create("pages-test", MFD_CLOEXEC);
	assert_true(fd >= 0);
	uint8_t page[4096];
	memset(page, 0xaa, sizeof(page));
	for (int i = 0; i < PAGES; i++)
		assert_int_equal(pwrite(fd, page, sizeof(page), (off_t)i * 4096), 4096);
	struct gm_layout layout = { .low_limit = 1ULL << 32, .high_base = 1ULL << 32 };
	assert_int_equal(gm_map_file(&f.m, fd, PAGES * 4096ULL, &layout), 0);
	f.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	assert_true(f.pagemap >= 0);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	close(f->pagemap);
	gm_release(&f->m);
	return 0;
}

static void expect(struct fixture *f, const uint64_t *first, const uint64_t *len, int n)
{
	struct runs scan = { 0 }, map = { 0 };
	assert_int_equal(private_pages(f->pagemap, &f->m, collect, &scan), 0);
	assert_int_equal(private_pages_from_map(f->pagemap, &f->m, collect, &map), 0);
	assert_int_equal(scan.n, n);
	assert_int_equal(map.n, n);
	for (int i = 0; i < n; i++) {
		assert_int_equal(scan.first[i], first[i]);
		assert_int_equal(scan.len[i], len[i]);
		assert_int_equal(map.first[i], first[i]);
		assert_int_equal(map.len[i], len[i]);
	}
}

static void test_written_pages_are_the_runs(void **state)
{
	struct fixture *f = *state;
	expect(f, NULL, NULL, 0);
	volatile uint8_t sink = 0;
	for (int i = 0; i < PAGES; i += 7)
		sink ^= f->m.host[i * 4096]; /* read: file pages, not private */
	(void)sink;
	expect(f, NULL, NULL, 0);
	static const int written[] = { 3, 4, 10, 200, 255 };
	for (size_t i = 0; i < sizeof(written) / sizeof(written[0]); i++)
		f->m.host[written[i] * 4096 + 17] = 1;
	const uint64_t first[] = { 3, 10, 200, 255 }, len[] = { 2, 1, 1, 1 };
	expect(f, first, len, 4);
	/* Dropped pages read the file again and are no longer private. */
	assert_int_equal(madvise(f->m.host + 4 * 4096, 4096, MADV_DONTNEED), 0);
	assert_int_equal(madvise(f->m.host + 255 * 4096, 4096, MADV_DONTNEED), 0);
	assert_int_equal(f->m.host[4 * 4096 + 17], 0xaa);
	const uint64_t first2[] = { 3, 10, 200 }, len2[] = { 1, 1, 1 };
	expect(f, first2, len2, 3);
	assert_int_equal(madvise(f->m.host, PAGES * 4096ULL, MADV_DONTNEED), 0);
	expect(f, NULL, NULL, 0);
}

/* A callback's nonzero return stops the walk and is returned. */
static void test_callback_stops_the_walk(void **state)
{
	struct fixture *f = *state;
	f->m.host[1 * 4096] = 1;
	f->m.host[5 * 4096] = 1;
	f->m.host[9 * 4096] = 1;
	struct runs scan = { .stop_after = 2 }, map = { .stop_after = 2 };
	assert_int_equal(private_pages(f->pagemap, &f->m, collect, &scan), 1);
	assert_int_equal(private_pages_from_map(f->pagemap, &f->m, collect, &map), 1);
	assert_int_equal(scan.n, 2);
	assert_int_equal(map.n, 2);
	assert_int_equal(scan.first[1], 5);
	assert_int_equal(map.first[1], 5);
	assert_int_equal(madvise(f->m.host, PAGES * 4096ULL, MADV_DONTNEED), 0);
}

/* Not a pagemap: an error, not a crash or a made-up run. */
static void test_bad_fd(void **state)
{
	struct fixture *f = *state;
	struct runs r = { 0 };
	f->m.host[0] = 1;
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(null >= 0);
	assert_true(private_pages(null, &f->m, collect, &r) < 0);
	assert_true(private_pages(-1, &f->m, collect, &r) < 0);
	assert_int_equal(r.n, 0);
	close(null);
	assert_int_equal(madvise(f->m.host, PAGES * 4096ULL, MADV_DONTNEED), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_written_pages_are_the_runs),
		cmocka_unit_test(test_callback_stops_the_walk),
		cmocka_unit_test(test_bad_fd),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
