/*
 * The snapshot state tree: a flattened device tree (libfdt) holding all VM
 * state except guest RAM. Writers add nodes and properties through the
 * st_* helpers below, which grow the blob as needed; readers look up
 * properties with checked sizes, so a short, missing or oversized property
 * is a clean error naming it. Unknown properties and nodes are ignored, which
 * is how newer files stay readable; a missing required one is an error.
 *
 * Integers are stored big-endian (the FDT convention); raw KVM structures
 * are stored as the host lays them out (x86_64 little-endian), with their
 * size checked on load.
 */
#ifndef MICROVM_SNAPSHOT_STATE_H
#define MICROVM_SNAPSHOT_STATE_H

#include <stddef.h>
#include <stdint.h>

/* 2: devices carry their whole configuration in their own nodes; the
 * machine node only the machine's (lib/vm_config.c). */
#define SNAPSHOT_FORMAT_VERSION 2
#define SNAPSHOT_STATE_FILE "state.dtb"
#define SNAPSHOT_MEMORY_FILE "memory"
/* Largest state file we accept (vCPU state is a few KiB per vCPU). */
#define SNAPSHOT_STATE_MAX (16u << 20)

struct st_writer {
	void *fdt;
	size_t cap;
	int err; /* first error (negative errno), sticky */
	char what[128]; /* what failed */
};

/* An empty tree. 0 or -ENOMEM. */
int st_init(struct st_writer *w);
void st_free(struct st_writer *w);
/* Add node @name under @parent (0 = root); returns its offset or -1 (error
 * recorded in @w). All helpers do nothing once @w->err is set. */
int st_node(struct st_writer *w, int parent, const char *name);
void st_u32(struct st_writer *w, int node, const char *name, uint32_t v);
void st_u64(struct st_writer *w, int node, const char *name, uint64_t v);
void st_str(struct st_writer *w, int node, const char *name, const char *s);
void st_blob(struct st_writer *w, int node, const char *name, const void *p, size_t len);
/* Pack and store the CRC-32C of the blob in the root's "checksum". Returns
 * the final size or the sticky error. */
long st_finish(struct st_writer *w);

/*
 * Check a state blob read from a file: a valid FDT of exactly @len bytes,
 * with a matching "checksum". 0, or -EINVAL/-EBADMSG with a message in
 * @err.
 */
int st_verify(const void *blob, size_t len, char *err, size_t errlen);

/* Readers. 0, or -EINVAL with "<node>/<name>: missing" or "...: has N
 * bytes, expected M" in @err. */
int st_get_u32(const void *fdt, int node, const char *name, uint32_t *v, char *err, size_t errlen);
int st_get_u64(const void *fdt, int node, const char *name, uint64_t *v, char *err, size_t errlen);
/* Exactly @len bytes. */
int st_get_blob(const void *fdt, int node, const char *name, void *p, size_t len, char *err,
		size_t errlen);
/* A property of any length (at most @max): pointer into the blob. */
int st_get_var(const void *fdt, int node, const char *name, const void **p, size_t *len,
	       size_t max, char *err, size_t errlen);
/* A NUL-terminated string property; NULL if absent (not an error). */
const char *st_get_str(const void *fdt, int node, const char *name);
/* Offset of subnode @name of @parent, or -EINVAL with a message. */
int st_sub(const void *fdt, int parent, const char *name, char *err, size_t errlen);

/*
 * Fixed fields of a C struct, described once and saved/loaded as a table:
 * each field is one 64-bit property; load refuses a value above @max (a
 * clean error naming it) and writes nothing unless every field is valid.
 */
struct st_field {
	const char *name;
	size_t offset;
	uint8_t size; /* 1 (uint8_t or bool), 2, 4 or 8 */
	uint64_t max;
};
#define ST_FIELD(type, member, name, max) \
	{ name, offsetof(type, member), sizeof(((type *)0)->member), max }

void st_save_fields(struct st_writer *w, int node, const void *obj, const struct st_field *f,
		    size_t n);
int st_load_fields(const void *fdt, int node, void *obj, const struct st_field *f, size_t n,
		   char *err, size_t errlen);

/* CRC-32C (Castagnoli), continuing from @crc (start with 0). */
uint32_t crc32c(uint32_t crc, const void *p, size_t len);
/* The same without the SSE4.2 instruction (used when the CPU lacks it). */
uint32_t crc32c_portable(uint32_t crc, const void *p, size_t len);

#endif
