#include "bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bus_register(struct bus *b, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name)
{
	if (!ops || len == 0 || base + len < base)
		return -EINVAL;
	uint64_t end = base + len; /* no overflow: checked above */
	/* First range whose base is >= ours. */
	size_t pos = 0;
	while (pos < b->count && b->ranges[pos].base < base)
		pos++;
	if (pos > 0) {
		const struct bus_range *prev = &b->ranges[pos - 1];
		if (prev->base + prev->len > base)
			return -EEXIST;
	}
	if (pos < b->count && b->ranges[pos].base < end)
		return -EEXIST;
	if (b->count == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 8;
		struct bus_range *r = realloc(b->ranges, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		b->ranges = r;
		b->cap = cap;
	}
	memmove(&b->ranges[pos + 1], &b->ranges[pos], (b->count - pos) * sizeof(*b->ranges));
	b->ranges[pos] = (struct bus_range){ base, len, ops, opaque, name };
	b->count++;
	return 0;
}

const struct bus_range *bus_find(const struct bus *b, uint64_t addr, uint32_t len)
{
	size_t lo = 0, hi = b->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &b->ranges[mid];
		if (addr < r->base) {
			hi = mid;
		} else if (addr - r->base >= r->len) {
			lo = mid + 1;
		} else {
			if (len > r->len - (addr - r->base))
				return NULL; /* straddles the end of the range */
			return r;
		}
	}
	return NULL;
}

bool bus_access(const struct bus *b, uint64_t addr, void *data, uint32_t len, bool is_write)
{
	const struct bus_range *r = bus_find(b, addr, len);
	if (!r) {
		if (!is_write)
			memset(data, 0xff, len);
		return false;
	}
	if (is_write) {
		if (r->ops->write)
			r->ops->write(r->opaque, addr - r->base, data, len);
	} else if (r->ops->read) {
		r->ops->read(r->opaque, addr - r->base, data, len);
	} else {
		memset(data, 0xff, len);
	}
	return true;
}

void bus_release(struct bus *b)
{
	free(b->ranges);
	memset(b, 0, sizeof(*b));
}
