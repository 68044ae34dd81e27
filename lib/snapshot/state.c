#include "snapshot/state.h"

#include "errbuf.h"

#include <errno.h>
#include <libfdt.h>
#include <nmmintrin.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- CRC-32C */

static uint32_t crc_table[256];
static bool crc_table_ready;

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
		crc_table[i] = c;
	}
	__atomic_store_n(&crc_table_ready, true, __ATOMIC_RELEASE);
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							    size_t len)
{
	uint64_t c = crc;
	for (; len >= 8; p += 8, len -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
	}
	uint32_t c32 = (uint32_t)c;
	for (; len; p++, len--)
		c32 = _mm_crc32_u8(c32, *p);
	return c32;
}

uint32_t crc32c_portable(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE))
		crc_table_init(); /* idempotent: racing callers write the same */
	crc = ~crc;
	for (size_t i = 0; i < len; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
	if (!__builtin_cpu_supports("sse4.2"))
		return crc32c_portable(crc, data, len);
	return ~crc32c_hw(~crc, data, len);
}

/* -------------------------------------------------------------- writer */

#define ST_INITIAL (64u * 1024u)

int st_init(struct st_writer *w)
{
	memset(w, 0, sizeof(*w));
	w->fdt = malloc(ST_INITIAL);
	if (!w->fdt)
		return -ENOMEM;
	w->cap = ST_INITIAL;
	if (fdt_create_empty_tree(w->fdt, (int)w->cap) < 0) {
		free(w->fdt);
		w->fdt = NULL;
		return -ENOMEM;
	}
	return 0;
}

void st_free(struct st_writer *w)
{
	free(w->fdt);
	w->fdt = NULL;
}

static void fail(struct st_writer *w, int err, const char *fmt, ...)
{
	if (w->err)
		return;
	w->err = err;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->what, sizeof(w->what), fmt, ap);
	va_end(ap);
}

/* Double the buffer after -FDT_ERR_NOSPACE. */
static bool grow(struct st_writer *w, size_t need)
{
	size_t cap = w->cap * 2;
	while (cap < w->cap + need + 1024)
		cap *= 2;
	if (cap > SNAPSHOT_STATE_MAX * 2u) {
		fail(w, -E2BIG, "state tree larger than %u bytes", SNAPSHOT_STATE_MAX);
		return false;
	}
	void *n = malloc(cap);
	if (!n || fdt_open_into(w->fdt, n, (int)cap) < 0) {
		free(n);
		fail(w, -ENOMEM, "state tree: out of memory");
		return false;
	}
	free(w->fdt);
	w->fdt = n;
	w->cap = cap;
	return true;
}

int st_node(struct st_writer *w, int parent, const char *name)
{
	for (;;) {
		if (w->err)
			return -1;
		int r = fdt_add_subnode(w->fdt, parent, name);
		if (r >= 0)
			return r;
		if (r != -FDT_ERR_NOSPACE || !grow(w, strlen(name) + 64)) {
			fail(w, -EINVAL, "node %s: %s", name, fdt_strerror(r));
			return -1;
		}
	}
}

void st_blob(struct st_writer *w, int node, const char *name, const void *p, size_t len)
{
	for (;;) {
		if (w->err)
			return;
		if (node < 0 || len > SNAPSHOT_STATE_MAX) {
			fail(w, -EINVAL, "property %s: bad node or size", name);
			return;
		}
		int r = fdt_setprop(w->fdt, node, name, p, (int)len);
		if (r == 0)
			return;
		if (r != -FDT_ERR_NOSPACE || !grow(w, len + strlen(name) + 64)) {
			fail(w, -EINVAL, "property %s: %s", name, fdt_strerror(r));
			return;
		}
	}
}

void st_u32(struct st_writer *w, int node, const char *name, uint32_t v)
{
	fdt32_t be = cpu_to_fdt32(v);
	st_blob(w, node, name, &be, sizeof(be));
}

void st_u64(struct st_writer *w, int node, const char *name, uint64_t v)
{
	fdt64_t be = cpu_to_fdt64(v);
	st_blob(w, node, name, &be, sizeof(be));
}

void st_str(struct st_writer *w, int node, const char *name, const char *s)
{
	st_blob(w, node, name, s, strlen(s) + 1);
}

long st_finish(struct st_writer *w)
{
	st_u32(w, 0, "checksum", 0);
	if (w->err)
		return w->err;
	fdt_pack(w->fdt);
	size_t len = fdt_totalsize(w->fdt);
	uint32_t crc = crc32c(0, w->fdt, len);
	int r = fdt_setprop_inplace_u32(w->fdt, 0, "checksum", crc);
	if (r < 0) {
		fail(w, -EINVAL, "checksum: %s", fdt_strerror(r));
		return w->err;
	}
	return (long)len;
}

/* -------------------------------------------------------------- reader */

static const char *node_name(const void *fdt, int node)
{
	const char *n = node == 0 ? "/" : fdt_get_name(fdt, node, NULL);
	return n ? n : "?";
}

int st_verify(const void *blob, size_t len, char *err, size_t errlen)
{
	if (len < 64 || len > SNAPSHOT_STATE_MAX)
		return errbuf_fail(err, errlen, -EINVAL, "state file is %zu bytes: not a snapshot state", len);
	if (fdt_check_header(blob) != 0 || fdt_totalsize(blob) != len)
		return errbuf_fail(err, errlen, -EINVAL, "state file is not a valid state tree (bad header or "
			    "size; truncated?)");
	/* libfdt checks the blocks' bounds, not their alignment; a state file
	 * this library wrote has them aligned (memory map 8, structure 4), so
	 * that the readers' 4-byte values are aligned too. */
	if (fdt_off_mem_rsvmap(blob) % 8 || fdt_off_dt_struct(blob) % 4)
		return errbuf_fail(err, errlen, -EINVAL, "state file is corrupt: misaligned blocks "
				   "(memory map at %u, structure at %u)", fdt_off_mem_rsvmap(blob),
				   fdt_off_dt_struct(blob));
	/* Checks every structure offset, so the lookups below stay in bounds. */
	int r = fdt_check_full(blob, len);
	if (r != 0)
		return errbuf_fail(err, errlen, -EINVAL, "state file is corrupt: %s", fdt_strerror(r));
	int plen = 0;
	const void *ck = fdt_getprop(blob, 0, "checksum", &plen);
	if (!ck || plen != 4)
		return errbuf_fail(err, errlen, -EINVAL, "state file has no checksum");
	fdt32_t be;
	memcpy(&be, ck, sizeof(be));
	uint32_t want = fdt32_to_cpu(be);
	void *copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, blob, len);
	fdt_setprop_inplace_u32(copy, 0, "checksum", 0);
	uint32_t got = crc32c(0, copy, len);
	free(copy);
	if (got != want)
		return errbuf_fail(err, errlen, -EBADMSG, "state file checksum mismatch (0x%08x, "
				   "expected 0x%08x): the file is corrupt", got, want);
	return 0;
}

int st_get_var(const void *fdt, int node, const char *name, const void **p, size_t *len,
	       size_t max, char *err, size_t errlen)
{
	int plen = 0;
	const void *v = fdt_getprop(fdt, node, name, &plen);
	if (!v)
		return errbuf_fail(err, errlen, -EINVAL, "state %s/%s: missing", node_name(fdt, node), name);
	if (plen < 0 || (size_t)plen > max)
		return errbuf_fail(err, errlen, -EINVAL, "state %s/%s: %d bytes, at most %zu allowed",
			    node_name(fdt, node), name, plen, max);
	*p = v;
	*len = (size_t)plen;
	return 0;
}

int st_get_blob(const void *fdt, int node, const char *name, void *p, size_t len, char *err,
		size_t errlen)
{
	const void *v;
	size_t got;
	int r = st_get_var(fdt, node, name, &v, &got, SNAPSHOT_STATE_MAX, err, errlen);
	if (r < 0)
		return r;
	if (got != len)
		return errbuf_fail(err, errlen, -EINVAL, "state %s/%s: %zu bytes, expected %zu",
			    node_name(fdt, node), name, got, len);
	memcpy(p, v, len);
	return 0;
}

int st_get_u32(const void *fdt, int node, const char *name, uint32_t *v, char *err, size_t errlen)
{
	fdt32_t be;
	int r = st_get_blob(fdt, node, name, &be, sizeof(be), err, errlen);
	if (r == 0)
		*v = fdt32_to_cpu(be);
	return r;
}

int st_get_u64(const void *fdt, int node, const char *name, uint64_t *v, char *err, size_t errlen)
{
	fdt64_t be;
	int r = st_get_blob(fdt, node, name, &be, sizeof(be), err, errlen);
	if (r == 0)
		*v = fdt64_to_cpu(be);
	return r;
}

/* ------------------------------------------------------------ field tables */

static uint64_t field_get(const void *obj, const struct st_field *f)
{
	const uint8_t *p = (const uint8_t *)obj + f->offset;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64 = 0;
	switch (f->size) {
	case 1: memcpy(&u8, p, 1); return u8;
	case 2: memcpy(&u16, p, 2); return u16;
	case 4: memcpy(&u32, p, 4); return u32;
	default: memcpy(&u64, p, 8); return u64;
	}
}

static void field_set(void *obj, const struct st_field *f, uint64_t v)
{
	uint8_t *p = (uint8_t *)obj + f->offset;
	uint8_t u8 = (uint8_t)v;
	uint16_t u16 = (uint16_t)v;
	uint32_t u32 = (uint32_t)v;
	switch (f->size) {
	case 1: memcpy(p, &u8, 1); break;
	case 2: memcpy(p, &u16, 2); break;
	case 4: memcpy(p, &u32, 4); break;
	default: memcpy(p, &v, 8); break;
	}
}

void st_save_fields(struct st_writer *w, int node, const void *obj, const struct st_field *f,
		    size_t n)
{
	for (size_t i = 0; i < n; i++)
		st_u64(w, node, f[i].name, field_get(obj, &f[i]));
}

int st_load_fields(const void *fdt, int node, void *obj, const struct st_field *f, size_t n,
		   char *err, size_t errlen)
{
	uint64_t v[64];
	if (n > sizeof(v) / sizeof(v[0]))
		return errbuf_fail(err, errlen, -EINVAL, "state: field table too large");
	for (size_t i = 0; i < n; i++) {
		int r = st_get_u64(fdt, node, f[i].name, &v[i], err, errlen);
		if (r < 0)
			return r;
		if (v[i] > f[i].max)
			return errbuf_fail(err, errlen, -EINVAL, "state %s/%s: %llu is out of range "
					   "(at most %llu)", node_name(fdt, node), f[i].name,
					   (unsigned long long)v[i], (unsigned long long)f[i].max);
	}
	for (size_t i = 0; i < n; i++)
		field_set(obj, &f[i], v[i]);
	return 0;
}

const char *st_get_str(const void *fdt, int node, const char *name)
{
	int plen = 0;
	const char *s = fdt_getprop(fdt, node, name, &plen);
	if (!s || plen < 1 || s[plen - 1] != '\0' || strlen(s) != (size_t)plen - 1)
		return NULL;
	return s;
}

int st_sub(const void *fdt, int parent, const char *name, char *err, size_t errlen)
{
	int n = fdt_subnode_offset(fdt, parent, name);
	if (n < 0)
		return errbuf_fail(err, errlen, -EINVAL, "state %s: node %s missing", node_name(fdt, parent), name);
	return n;
}
