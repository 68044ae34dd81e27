/*
 * Unit tests for the port-I/O / MMIO bus (lib/bus.c): registration checks
 * (overlaps, bad arguments), sorted storage, lookup and dispatch with the
 * right device and offset, and unclaimed accesses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "bus.h"

/* A fake device that records its last access. */
struct dev {
	int id;
	int reads, writes;
	uint64_t last_offset;
	uint32_t last_len;
	uint8_t last_data[8];
};

static void dev_read(void *opaque, uint64_t offset, void *data, uint32_t len)
{
	struct dev *d = opaque;
	d->reads++;
	d->last_offset = offset;
	d->last_len = len;
	/* Byte i of the answer: device id in the high nibble, i in the low. */
	for (uint32_t i = 0; i < len; i++)
		((uint8_t *)data)[i] = (uint8_t)((d->id << 4) | (i & 0xf));
}

static void dev_write(void *opaque, uint64_t offset, const void *data, uint32_t len)
{
	struct dev *d = opaque;
	d->writes++;
	d->last_offset = offset;
	d->last_len = len;
	memcpy(d->last_data, data, len < 8 ? len : 8);
}

static const struct bus_ops dev_ops = { dev_read, dev_write };
static const struct bus_ops no_ops = { NULL, NULL };

static void assert_sorted(const struct bus *b)
{
	for (size_t i = 1; i < b->count; i++) {
		const struct bus_range *p = &b->ranges[i - 1], *r = &b->ranges[i];
		if (!(p->base + p->len <= r->base))
			fail_msg("ranges %zu [0x%llx,+0x%llx) and %zu [0x%llx,+0x%llx) are not "
				 "sorted and disjoint",
				 i - 1, (unsigned long long)p->base, (unsigned long long)p->len, i,
				 (unsigned long long)r->base, (unsigned long long)r->len);
	}
}

static void test_empty_bus(void **state)
{
	struct bus b;
	memset(&b, 0, sizeof(b));
	assert_null(bus_find(&b, 0, 1));
	uint8_t data[8];
	memset(data, 0, sizeof(data));
	assert_false(bus_access(&b, 0x3f8, data, 4, false));
	for (int i = 0; i < 4; i++)
		assert_int_equal(data[i], 0xff);
	assert_int_equal(data[4], 0); /* only @len bytes filled */
	assert_false(bus_access(&b, 0x3f8, data, 1, true));
	bus_release(&b);
	bus_release(&b);
}

static void test_register_overlaps(void **state)
{
	struct bus b;
	memset(&b, 0, sizeof(b));
	struct dev d = { .id = 1 };
	assert_int_equal(bus_register(&b, 0x100, 0x10, &dev_ops, &d, "a"), 0);

	const struct {
		uint64_t base, len;
		const char *what;
	} overlaps[] = {
		{ 0x100, 0x10, "exactly the same" },
		{ 0x0f8, 0x10, "partial left" },
		{ 0x0ff, 0x02, "partial left, one byte" },
		{ 0x108, 0x10, "partial right" },
		{ 0x10f, 0x01, "last byte" },
		{ 0x0f0, 0x30, "containing" },
		{ 0x000, UINT64_MAX, "containing everything" },
		{ 0x104, 0x04, "contained" },
		{ 0x100, 0x01, "first byte" },
		{ 0x100, 0x20, "same base, longer" },
	};
	for (size_t i = 0; i < sizeof(overlaps) / sizeof(overlaps[0]); i++) {
		int r = bus_register(&b, overlaps[i].base, overlaps[i].len, &dev_ops, &d, "x");
		if (r != -EEXIST)
			fail_msg("%s: bus_register returned %d, expected -EEXIST", overlaps[i].what,
				 r);
		assert_int_equal(b.count, 1);
	}

	/* Adjacent ranges on both sides are fine. */
	assert_int_equal(bus_register(&b, 0x0f0, 0x10, &dev_ops, &d, "left"), 0);
	assert_int_equal(bus_register(&b, 0x110, 0x10, &dev_ops, &d, "right"), 0);
	assert_int_equal(b.count, 3);
	assert_sorted(&b);
	/* Now the gap-free block [0xf0, 0x120) rejects anything touching it. */
	assert_int_equal(bus_register(&b, 0x0ef, 2, &dev_ops, &d, "x"), -EEXIST);
	assert_int_equal(bus_register(&b, 0x11f, 2, &dev_ops, &d, "x"), -EEXIST);
	assert_int_equal(bus_register(&b, 0x0ef, 1, &dev_ops, &d, "x"), 0);
	assert_int_equal(bus_register(&b, 0x120, 1, &dev_ops, &d, "x"), 0);
	assert_int_equal(b.count, 5);
	assert_sorted(&b);
	bus_release(&b);
	assert_null(b.ranges);
	assert_int_equal(b.count, 0);
}

static void test_register_invalid(void **state)
{
	struct bus b;
	memset(&b, 0, sizeof(b));
	struct dev d = { .id = 1 };
	assert_int_equal(bus_register(&b, 0x100, 0, &dev_ops, &d, "zero"), -EINVAL);
	assert_int_equal(bus_register(&b, 0x100, 0x10, NULL, &d, "null ops"), -EINVAL);
	assert_int_equal(bus_register(&b, UINT64_MAX, 2, &dev_ops, &d, "wrap"), -EINVAL);
	assert_int_equal(bus_register(&b, 1, UINT64_MAX, &dev_ops, &d, "wrap"), -EINVAL);
	assert_int_equal(bus_register(&b, UINT64_MAX - 0xf, 0x20, &dev_ops, &d, "wrap"),
			 -EINVAL);
	assert_int_equal(b.count, 0);
	/* The highest range that does not wrap is fine. */
	assert_int_equal(bus_register(&b, UINT64_MAX - 0xf, 0xf, &dev_ops, &d, "top"), 0);
	assert_int_equal(b.count, 1);
	const struct bus_range *r = bus_find(&b, UINT64_MAX - 1, 1);
	assert_non_null(r);
	assert_int_equal(r->base, UINT64_MAX - 0xf);
	assert_null(bus_find(&b, UINT64_MAX, 1));
	assert_null(bus_find(&b, UINT64_MAX - 1, 2));
	bus_release(&b);
}

/* Deterministic pseudo-random numbers (no global state touched). */
static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

#define NDEV 200
#define STRIDE 0x100
#define DEV_LEN(i) (0x10 + ((i) % 7) * 0x10) /* 0x10..0x70, gaps in between */
#define DEV_BASE(i) (0x10000 + (uint64_t)(i) * STRIDE)

static void test_many_random_order(void **state)
{
	static struct dev devs[NDEV];
	int order[NDEV];
	for (int i = 0; i < NDEV; i++) {
		memset(&devs[i], 0, sizeof(devs[i]));
		devs[i].id = i % 16;
		order[i] = i;
	}
	uint32_t seed = 12345;
	for (int i = NDEV - 1; i > 0; i--) {
		int j = (int)(lcg(&seed) % (uint32_t)(i + 1));
		int t = order[i];
		order[i] = order[j];
		order[j] = t;
	}

	struct bus b;
	memset(&b, 0, sizeof(b));
	for (int k = 0; k < NDEV; k++) {
		int i = order[k];
		assert_int_equal(bus_register(&b, DEV_BASE(i), DEV_LEN(i), &dev_ops, &devs[i], "dev"),
				 0);
		assert_int_equal(b.count, (size_t)k + 1);
		assert_sorted(&b);
	}
	assert_true(b.cap >= b.count);
	for (int i = 0; i < NDEV; i++) {
		assert_int_equal(b.ranges[i].base, DEV_BASE(i));
		assert_int_equal(b.ranges[i].len, DEV_LEN(i));
		assert_ptr_equal(b.ranges[i].opaque, &devs[i]);
	}

	/* Every registration again, in the same random order, overlaps. */
	for (int k = 0; k < NDEV; k++) {
		int i = order[k];
		assert_int_equal(bus_register(&b, DEV_BASE(i) + 1, 1, &dev_ops, &devs[i], "dup"),
				 -EEXIST);
	}
	assert_int_equal(b.count, NDEV);

	for (int i = 0; i < NDEV; i++) {
		const uint64_t base = DEV_BASE(i), len = DEV_LEN(i);
		uint8_t data[8];

		/* First byte, an 8-byte access in the middle, the last byte. */
		const struct {
			uint64_t off;
			uint32_t len;
		} acc[] = { { 0, 1 }, { 8, 8 }, { len - 1, 1 }, { len - 4, 4 } };
		for (size_t a = 0; a < sizeof(acc) / sizeof(acc[0]); a++) {
			const struct bus_range *r = bus_find(&b, base + acc[a].off, acc[a].len);
			assert_non_null(r);
			assert_ptr_equal(r->opaque, &devs[i]);

			int reads = devs[i].reads;
			memset(data, 0, sizeof(data));
			assert_true(bus_access(&b, base + acc[a].off, data, acc[a].len, false));
			assert_int_equal(devs[i].reads, reads + 1);
			assert_int_equal(devs[i].last_offset, acc[a].off);
			assert_int_equal(devs[i].last_len, acc[a].len);
			for (uint32_t k = 0; k < acc[a].len; k++)
				assert_int_equal(data[k], (devs[i].id << 4) | k);

			int writes = devs[i].writes;
			for (uint32_t k = 0; k < 8; k++)
				data[k] = (uint8_t)(i + k);
			assert_true(bus_access(&b, base + acc[a].off, data, acc[a].len, true));
			assert_int_equal(devs[i].writes, writes + 1);
			assert_int_equal(devs[i].last_offset, acc[a].off);
			assert_memory_equal(devs[i].last_data, data, acc[a].len);
		}

		/* Straddling the end of the range: unclaimed, even though it
		 * starts inside a device. */
		assert_null(bus_find(&b, base + len - 1, 2));
		assert_null(bus_find(&b, base + len - 4, 8));
		int reads = devs[i].reads, writes = devs[i].writes;
		memset(data, 0, sizeof(data));
		assert_false(bus_access(&b, base + len - 2, data, 4, false));
		for (int k = 0; k < 4; k++)
			assert_int_equal(data[k], 0xff);
		assert_false(bus_access(&b, base + len - 2, data, 4, true));
		assert_int_equal(devs[i].reads, reads);
		assert_int_equal(devs[i].writes, writes);

		/* The gap after the range and just before it are unclaimed. */
		memset(data, 0, sizeof(data));
		assert_false(bus_access(&b, base + len, data, 1, false));
		assert_int_equal(data[0], 0xff);
		assert_false(bus_access(&b, base - 1, data, 2, false));
		assert_int_equal(data[0], 0xff);
		assert_int_equal(data[1], 0xff);
		assert_null(bus_find(&b, base + STRIDE - 1, 1));
	}

	/* Below the first and above the last range. */
	assert_null(bus_find(&b, 0, 1));
	assert_null(bus_find(&b, DEV_BASE(0) - 1, 1));
	assert_null(bus_find(&b, DEV_BASE(NDEV - 1) + DEV_LEN(NDEV - 1), 1));
	assert_null(bus_find(&b, UINT64_MAX, 1));
	bus_release(&b);
}

static void test_null_callbacks(void **state)
{
	/* A device without read/write callbacks claims the access: reads give
	 * 0xff, writes are dropped, and both report "claimed". */
	struct bus b;
	memset(&b, 0, sizeof(b));
	assert_int_equal(bus_register(&b, 0x80, 1, &no_ops, NULL, "sink"), 0);
	uint8_t v = 0;
	assert_true(bus_access(&b, 0x80, &v, 1, false));
	assert_int_equal(v, 0xff);
	assert_true(bus_access(&b, 0x80, &v, 1, true));
	bus_release(&b);
}

static void test_find_whole_range(void **state)
{
	struct bus b;
	memset(&b, 0, sizeof(b));
	struct dev d = { .id = 3 };
	assert_int_equal(bus_register(&b, 0x1000, 8, &dev_ops, &d, "d"), 0);
	/* The whole range in one access. */
	const struct bus_range *r = bus_find(&b, 0x1000, 8);
	assert_non_null(r);
	assert_string_equal(r->name, "d");
	assert_null(bus_find(&b, 0x1000, 9));
	assert_null(bus_find(&b, 0x1001, 8));
	assert_null(bus_find(&b, 0x0fff, 2));
	assert_null(bus_find(&b, 0x1008, 1));
	bus_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_bus),
		cmocka_unit_test(test_register_overlaps),
		cmocka_unit_test(test_register_invalid),
		cmocka_unit_test(test_many_random_order),
		cmocka_unit_test(test_null_callbacks),
		cmocka_unit_test(test_find_whole_range),
	};
	return cmocka_run_group_tests_name("bus", tests, NULL, NULL);
}
