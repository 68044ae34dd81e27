/* Guest RAM: one memfd mapped shared into the process, and the one checked
 * guest-physical-address accessor every other file uses. */
#ifndef MICROVM_MEMORY_H
#define MICROVM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GIB (1ULL << 30)
#define MIB (1ULL << 20)

/* RAM above this is placed at 4 GiB, leaving a hole below 4 GiB for MMIO. */
#define MEM_LOW_LIMIT (3ULL * GIB)
#define MEM_HIGH_BASE (4ULL * GIB)

struct guest_mem {
	int fd;            /* memfd holding all of RAM, -1 if none */
	uint8_t *host;     /* mapping of the whole memfd */
	uint64_t size;     /* bytes of RAM */
	uint64_t low_size; /* RAM at GPA [0, low_size) */
	/* RAM at GPA [MEM_HIGH_BASE, MEM_HIGH_BASE + size - low_size) */
};

/* Allocate @size bytes (multiple of 4 KiB) of RAM. 0 or negative errno. */
int gm_init(struct guest_mem *m, uint64_t size);
/* Unmap and close. Safe on a zeroed or already released struct. */
void gm_release(struct guest_mem *m);

/*
 * The checked accessor: host pointer for [gpa, gpa + len) if the whole range
 * is RAM inside one region, else NULL. Overflow-safe for any gpa/len.
 */
void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy in/out of guest RAM; false if the range is not all RAM. */
bool gm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);
bool gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);

/* Highest GPA + 1 of RAM. */
uint64_t gm_end(const struct guest_mem *m);

#endif
