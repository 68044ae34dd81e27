/* Port-I/O and MMIO buses: sorted, non-overlapping address ranges, each
 * served by a device through an ops table. Ranges are registered before the
 * VM runs; after that the bus is read-only, so lookups take no lock. */
#ifndef MICROVM_BUS_H
#define MICROVM_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bus_ops {
	/* @offset is relative to the range base; @len is 1..8. Reads must fill
	 * all @len bytes of @data. */
	void (*read)(void *opaque, uint64_t offset, void *data, uint32_t len);
	void (*write)(void *opaque, uint64_t offset, const void *data, uint32_t len);
};

struct bus_range {
	uint64_t base;
	uint64_t len;
	const struct bus_ops *ops;
	void *opaque;
	const char *name; /* static string */
};

struct bus {
	struct bus_range *ranges;
	size_t count;
	size_t cap;
};

/* 0, -EINVAL (len 0, base + len overflows, NULL ops), -EEXIST (overlap),
 * -ENOMEM. @name must be a static string. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name);

/* Range containing [addr, addr + len), or NULL. */
const struct bus_range *bus_find(const struct bus *b, uint64_t addr, uint32_t len);

/* Dispatch an access. Returns false if no device claims it; then reads are
 * filled with 0xff and writes are dropped. */
bool bus_access(const struct bus *b, uint64_t addr, void *data, uint32_t len, bool is_write);

void bus_release(struct bus *b);

#endif
