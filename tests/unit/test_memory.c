/*
 * Unit tests for guest RAM (lib/memory.c): gm_init size checks, the checked
 * accessor gm_ptr at every boundary (including 64-bit overflow and the MMIO
 * hole between 3 GiB and 4 GiB), gm_read/gm_write and gm_end.
 *
 * The large guests cost nothing: RAM is anonymous memory mapped with MAP_NORESERVE,
 * so only the few pages the tests touch are allocated.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "arch/arch.h"
#include "arch/x86_64/layout.h"
#include "memory.h"

#define SMALL (16 * MIB)
#define BIG (3 * GIB + 64 * MIB) /* 3 GiB low + 64 MiB at 4 GiB */

static void test_init_bad_sizes(void **state)
{
	const uint64_t bad[] = {
		0,
		1,
		0x800,
		4096 + 1,
		SMALL - 1,
		SMALL + 0x800,
		(1ULL << 46) + 4096, /* above the supported maximum */
		UINT64_MAX,
		UINT64_MAX & ~0xfffULL,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct guest_mem m;
		memset(&m, 0x5a, sizeof(m));
		assert_int_equal(arch_ram_init(&m, bad[i]), -EINVAL);
		/* The struct is left in the released state. */
		assert_null(m.host);
		assert_int_equal(m.fd, -1);
		assert_int_equal(m.size, 0);
		assert_null(gm_ptr(&m, 0, 1));
		gm_release(&m); /* harmless */
	}
}

static void test_init_small(void **state)
{
	struct guest_mem m;
	assert_int_equal(arch_ram_init(&m, SMALL), 0);
	assert_non_null(m.host);
	assert_int_equal(m.fd, -1); /* anonymous: no file descriptor kept */
	assert_int_equal(m.size, SMALL);
	assert_int_equal(m.low_size, SMALL);
	assert_int_equal(gm_end(&m), SMALL);
	/* Fresh RAM reads as zeros. */
	assert_int_equal(m.host[0], 0);
	assert_int_equal(m.host[SMALL - 1], 0);
	gm_release(&m);
	assert_null(m.host);
	assert_int_equal(m.fd, -1);
	gm_release(&m); /* twice is fine */
}

static void test_init_one_page(void **state)
{
	struct guest_mem m;
	assert_int_equal(arch_ram_init(&m, 4096), 0);
	assert_ptr_equal(gm_ptr(&m, 0, 4096), m.host);
	assert_null(gm_ptr(&m, 0, 4097));
	assert_null(gm_ptr(&m, 4096, 1));
	assert_int_equal(gm_end(&m), 4096);
	gm_release(&m);
}

static void test_ptr_boundaries(void **state)
{
	struct guest_mem m;
	assert_int_equal(arch_ram_init(&m, SMALL), 0);

	/* Whole RAM, first byte, last byte. */
	assert_ptr_equal(gm_ptr(&m, 0, SMALL), m.host);
	assert_ptr_equal(gm_ptr(&m, 0, 1), m.host);
	assert_ptr_equal(gm_ptr(&m, SMALL - 1, 1), m.host + SMALL - 1);
	assert_ptr_equal(gm_ptr(&m, 0x1234, 0x100), m.host + 0x1234);
	/* An empty range inside RAM. */
	assert_ptr_equal(gm_ptr(&m, 0, 0), m.host);
	assert_ptr_equal(gm_ptr(&m, SMALL - 1, 0), m.host + SMALL - 1);

	/* One past the end, straddling the end, more than all of RAM. */
	assert_null(gm_ptr(&m, SMALL, 1));
	assert_null(gm_ptr(&m, SMALL - 1, 2));
	assert_null(gm_ptr(&m, 0, SMALL + 1));
	/* An empty range at the end: the address itself is not RAM. */
	assert_null(gm_ptr(&m, SMALL, 0));

	/* gpa + len overflows 64 bits. */
	assert_null(gm_ptr(&m, UINT64_MAX, 2));
	assert_null(gm_ptr(&m, UINT64_MAX, 1));
	assert_null(gm_ptr(&m, UINT64_MAX, 0));
	assert_null(gm_ptr(&m, 1, UINT64_MAX));
	assert_null(gm_ptr(&m, 0, UINT64_MAX));
	assert_null(gm_ptr(&m, SMALL - 1, UINT64_MAX));
	assert_null(gm_ptr(&m, UINT64_MAX - SMALL, SMALL + 2));

	/* Nothing in the hole or above 4 GiB for a small guest. */
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT, 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE, 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE, 0));

	gm_release(&m);
	/* Released memory has no RAM at all. */
	assert_null(gm_ptr(&m, 0, 1));
	assert_null(gm_ptr(&m, 0, 0));
}

static void test_ptr_zeroed_struct(void **state)
{
	struct guest_mem m;
	memset(&m, 0, sizeof(m));
	assert_null(gm_ptr(&m, 0, 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE, 1));
	uint8_t b = 0x42;
	assert_false(gm_read(&m, 0, &b, 1));
	assert_false(gm_write(&m, 0, &b, 1));
	assert_int_equal(b, 0x42);
}

static void test_exactly_low_limit(void **state)
{
	/* Exactly 3 GiB: all of it low, no high region. */
	struct guest_mem m;
	assert_int_equal(arch_ram_init(&m, MEM_LOW_LIMIT), 0);
	assert_int_equal(m.low_size, MEM_LOW_LIMIT);
	assert_int_equal(gm_end(&m), MEM_LOW_LIMIT);
	assert_ptr_equal(gm_ptr(&m, MEM_LOW_LIMIT - 1, 1), m.host + MEM_LOW_LIMIT - 1);
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT, 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE, 1));
	gm_release(&m);
}

static void test_high_region(void **state)
{
	struct guest_mem m;
	assert_int_equal(arch_ram_init(&m, BIG), 0);
	const uint64_t high = BIG - MEM_LOW_LIMIT;
	assert_int_equal(m.size, BIG);
	assert_int_equal(m.low_size, MEM_LOW_LIMIT);
	assert_int_equal(gm_end(&m), MEM_HIGH_BASE + high);

	/* Low region ends at 3 GiB. */
	assert_ptr_equal(gm_ptr(&m, MEM_LOW_LIMIT - 1, 1), m.host + MEM_LOW_LIMIT - 1);
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT - 1, 2));
	/* The hole [3 GiB, 4 GiB) is not RAM. */
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT, 1));
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT, 0));
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT + GIB / 2, 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE - 1, 1));
	/* A range may not span the hole. */
	assert_null(gm_ptr(&m, MEM_HIGH_BASE - 1, 2));
	assert_null(gm_ptr(&m, MEM_LOW_LIMIT - 1, MEM_HIGH_BASE - MEM_LOW_LIMIT + 2));
	assert_null(gm_ptr(&m, 0, BIG));

	/* The high region at 4 GiB maps right after the low RAM in the mapping. */
	assert_ptr_equal(gm_ptr(&m, MEM_HIGH_BASE, 1), m.host + MEM_LOW_LIMIT);
	assert_ptr_equal(gm_ptr(&m, MEM_HIGH_BASE, high), m.host + MEM_LOW_LIMIT);
	assert_ptr_equal(gm_ptr(&m, MEM_HIGH_BASE + high - 1, 1), m.host + BIG - 1);
	assert_null(gm_ptr(&m, MEM_HIGH_BASE, high + 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE + high, 1));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE + high, 0));
	assert_null(gm_ptr(&m, MEM_HIGH_BASE + high - 1, 2));
	/* Overflow in the high region. */
	assert_null(gm_ptr(&m, MEM_HIGH_BASE + 1, UINT64_MAX));
	assert_null(gm_ptr(&m, UINT64_MAX, 2));

	/* Writes at 4 GiB land in the mapping after the low RAM, not at 3 GiB. */
	const uint32_t v = 0xdeadbeef;
	assert_true(gm_write(&m, MEM_HIGH_BASE, &v, sizeof(v)));
	uint32_t got = 0;
	memcpy(&got, m.host + MEM_LOW_LIMIT, sizeof(got));
	assert_int_equal(got, v);
	got = 0;
	assert_true(gm_read(&m, MEM_HIGH_BASE, &got, sizeof(got)));
	assert_int_equal(got, v);
	assert_false(gm_write(&m, MEM_LOW_LIMIT, &v, sizeof(v)));
	assert_false(gm_write(&m, MEM_HIGH_BASE + high - 2, &v, sizeof(v)));
	assert_true(gm_write(&m, MEM_HIGH_BASE + high - 4, &v, sizeof(v)));
	gm_release(&m);
}

static void test_read_write(void **state)
{
	struct guest_mem m;
	assert_int_equal(arch_ram_init(&m, SMALL), 0);

	uint8_t src[300], dst[300];
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 31 + 3);

	/* Round trip in the middle, at the start and at the very end. */
	const uint64_t addrs[] = { 0, 0x12345, SMALL - sizeof(src) };
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		memset(dst, 0, sizeof(dst));
		assert_true(gm_write(&m, addrs[i], src, sizeof(src)));
		assert_memory_equal(m.host + addrs[i], src, sizeof(src));
		assert_true(gm_read(&m, addrs[i], dst, sizeof(dst)));
		assert_memory_equal(dst, src, sizeof(src));
	}

	/* Zero-length accesses inside RAM succeed and copy nothing. */
	assert_true(gm_write(&m, 0x100, src, 0));
	assert_true(gm_read(&m, 0x100, dst, 0));

	/* Failures: nothing copied in either direction. */
	memset(m.host + SMALL - 4096, 0x77, 4096);
	memset(dst, 0xcc, sizeof(dst));
	assert_false(gm_read(&m, SMALL - sizeof(dst) + 1, dst, sizeof(dst)));
	for (size_t i = 0; i < sizeof(dst); i++)
		assert_int_equal(dst[i], 0xcc);
	assert_false(gm_write(&m, SMALL - sizeof(src) + 1, src, sizeof(src)));
	for (size_t i = 0; i < 4096; i++)
		assert_int_equal(m.host[SMALL - 4096 + i], 0x77);
	assert_false(gm_write(&m, SMALL, src, 1));
	assert_false(gm_read(&m, UINT64_MAX, dst, 2));
	assert_false(gm_write(&m, 1, src, UINT64_MAX));
	assert_false(gm_read(&m, 1, dst, UINT64_MAX));
	gm_release(&m);
}

static void test_independent_instances(void **state)
{
	/* Two guests do not share RAM. */
	struct guest_mem a, b;
	assert_int_equal(arch_ram_init(&a, SMALL), 0);
	assert_int_equal(arch_ram_init(&b, SMALL), 0);
	assert_true(a.host != b.host);
	const uint8_t x = 0x11, y = 0x22;
	assert_true(gm_write(&a, 0x1000, &x, 1));
	assert_true(gm_write(&b, 0x1000, &y, 1));
	assert_int_equal(a.host[0x1000], 0x11);
	assert_int_equal(b.host[0x1000], 0x22);
	gm_release(&a);
	gm_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_bad_sizes),
		cmocka_unit_test(test_init_small),
		cmocka_unit_test(test_init_one_page),
		cmocka_unit_test(test_ptr_boundaries),
		cmocka_unit_test(test_ptr_zeroed_struct),
		cmocka_unit_test(test_exactly_low_limit),
		cmocka_unit_test(test_high_region),
		cmocka_unit_test(test_read_write),
		cmocka_unit_test(test_independent_instances),
	};
	return cmocka_run_group_tests_name("memory", tests, NULL, NULL);
}
