/* The snapshot state tree codec (lib/snapshot/state.c): writer, checked
 * readers, checksum, CRC-32C. No KVM. */
#include <errno.h>
#include <libfdt.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "snapshot/state.h"

static void test_crc32c_vectors(void **state)
{
	(void)state;
	/* The standard check value (RFC 3720 / iSCSI). */
	assert_int_equal(crc32c(0, "123456789", 9), 0xe3069283u);
	uint8_t zeros[32] = { 0 };
	assert_int_equal(crc32c(0, zeros, 32), 0x8a9136aau);
	assert_int_equal(crc32c_portable(0, "123456789", 9), 0xe3069283u);
	uint8_t odd[1003];
	for (size_t i = 0; i < sizeof(odd); i++)
		odd[i] = (uint8_t)(i * 7);
	assert_int_equal(crc32c(0, odd, sizeof(odd)), crc32c_portable(0, odd, sizeof(odd)));
	/* Chaining equals one pass. */
	assert_int_equal(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
}

static long build(struct st_writer *w)
{
	assert_int_equal(st_init(w), 0);
	int n = st_node(w, 0, "machine");
	st_u32(w, n, "vcpus", 4);
	st_u64(w, n, "memory-size", 1ull << 30);
	st_str(w, n, "name", "vm0");
	uint8_t big[100000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	st_blob(w, n, "big", big, sizeof(big)); /* forces the buffer to grow */
	for (int i = 0; i < 50; i++) {
		char name[16];
		snprintf(name, sizeof(name), "vcpu@%d", i);
		st_u32(w, st_node(w, 0, name), "id", (uint32_t)i);
	}
	return st_finish(w);
}

static void test_round_trip(void **state)
{
	(void)state;
	struct st_writer w;
	long len = build(&w);
	assert_true(len > 100000);
	char err[200];
	assert_int_equal(st_verify(w.fdt, (size_t)len, err, sizeof(err)), 0);
	int n = st_sub(w.fdt, 0, "machine", err, sizeof(err));
	assert_true(n > 0);
	uint32_t v32;
	uint64_t v64;
	assert_int_equal(st_get_u32(w.fdt, n, "vcpus", &v32, err, sizeof(err)), 0);
	assert_int_equal(v32, 4);
	assert_int_equal(st_get_u64(w.fdt, n, "memory-size", &v64, err, sizeof(err)), 0);
	assert_int_equal(v64, 1ull << 30);
	assert_string_equal(st_get_str(w.fdt, n, "name"), "vm0");
	const void *p;
	size_t plen;
	assert_int_equal(st_get_var(w.fdt, n, "big", &p, &plen, 200000, err, sizeof(err)), 0);
	assert_int_equal(plen, 100000);
	assert_int_equal(((const uint8_t *)p)[99999], (uint8_t)99999);
	int v = st_sub(w.fdt, 0, "vcpu@49", err, sizeof(err));
	assert_int_equal(st_get_u32(w.fdt, v, "id", &v32, err, sizeof(err)), 0);
	assert_int_equal(v32, 49);
	st_free(&w);
}

static void test_reader_errors(void **state)
{
	(void)state;
	struct st_writer w;
	long len = build(&w);
	char err[200];
	int n = st_sub(w.fdt, 0, "machine", err, sizeof(err));
	uint32_t v32;
	uint64_t v64;
	/* Missing property / node, wrong sizes, too large, not a string. */
	assert_int_equal(st_get_u32(w.fdt, n, "nope", &v32, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "machine/nope: missing"));
	assert_int_equal(st_sub(w.fdt, 0, "devices", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "node devices missing"));
	assert_int_equal(st_get_u32(w.fdt, n, "memory-size", &v32, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "8 bytes, expected 4"));
	assert_int_equal(st_get_u64(w.fdt, n, "vcpus", &v64, err, sizeof(err)), -EINVAL);
	const void *p;
	size_t plen;
	assert_int_equal(st_get_var(w.fdt, n, "big", &p, &plen, 1000, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "at most 1000"));
	assert_null(st_get_str(w.fdt, n, "vcpus")); /* not NUL-terminated text */
	assert_null(st_get_str(w.fdt, n, "absent"));

	/* Verify: truncated, a bad header, a flipped byte, trailing bytes. */
	assert_int_equal(st_verify(w.fdt, 10, err, sizeof(err)), -EINVAL);
	assert_int_equal(st_verify(w.fdt, (size_t)len - 1, err, sizeof(err)), -EINVAL);
	uint8_t *copy = malloc((size_t)len + 8);
	memcpy(copy, w.fdt, (size_t)len);
	copy[0] ^= 1;
	assert_int_equal(st_verify(copy, (size_t)len, err, sizeof(err)), -EINVAL);
	memcpy(copy, w.fdt, (size_t)len);
	copy[len - 60] ^= 0x10; /* inside the last properties */
	int r = st_verify(copy, (size_t)len, err, sizeof(err));
	assert_true(r == -EBADMSG || r == -EINVAL);
	memcpy(copy, w.fdt, (size_t)len);
	assert_int_equal(st_verify(copy, (size_t)len + 8, err, sizeof(err)), -EINVAL);
	free(copy);

	/* The structure block moved one byte on (found by fuzz_state: libfdt
	 * accepts it, and the checksum read was a misaligned load). */
	uint32_t off = fdt_off_dt_struct(w.fdt);
	copy = calloc(1, (size_t)len + 1);
	memcpy(copy, w.fdt, off);
	memcpy(copy + off + 1, (uint8_t *)w.fdt + off, (size_t)len - off);
	fdt_set_totalsize(copy, (uint32_t)len + 1);
	fdt_set_off_dt_struct(copy, off + 1);
	fdt_set_off_dt_strings(copy, fdt_off_dt_strings(w.fdt) + 1);
	assert_int_equal(st_verify(copy, (size_t)len + 1, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "misaligned blocks"));
	free(copy);
	st_free(&w);
}

static void test_random_flips(void **state)
{
	(void)state;
	struct st_writer w;
	long len = build(&w);
	uint8_t *copy = malloc((size_t)len);
	unsigned seed = 7;
	int rejected = 0;
	for (int i = 0; i < 2000; i++) {
		memcpy(copy, w.fdt, (size_t)len);
		int flips = 1 + (int)(rand_r(&seed) % 3);
		for (int k = 0; k < flips; k++)
			copy[rand_r(&seed) % (unsigned)len] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
		char err[200];
		if (st_verify(copy, (size_t)len, err, sizeof(err)) != 0)
			rejected++;
	}
	/* A CRC-32C catches every flip of up to 3 bits. */
	assert_int_equal(rejected, 2000);
	free(copy);
	st_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_reader_errors),
		cmocka_unit_test(test_random_flips),
	};
	return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
