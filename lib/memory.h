/* Guest RAM: one anonymous private mapping (or a private mapping of a
 * snapshot's memory file), and the one checked guest-physical-address
 * accessor every other file uses. */
#ifndef MICROVM_MEMORY_H
#define MICROVM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GIB (1ULL << 30)
#define MIB (1ULL << 20)

/* Where RAM goes in the guest's physical address space (the architecture's
 * choice, lib/arch/): RAM below @low_limit at GPA 0, the rest from
 * @high_base, leaving a hole between them for devices. */
struct gm_layout {
	uint64_t low_limit;
	uint64_t high_base;
};

#define GM_MAX_MAPPED 8

struct guest_mem {
	int fd;            /* the file RAM maps (file_backed), else -1 */
	uint8_t *host;     /* mapping of all of RAM */
	uint64_t size;     /* bytes of RAM */
	uint64_t low_size; /* RAM at GPA [0, low_size) */
	uint64_t high_base; /* the rest at [high_base, high_base + size - low_size) */
	/* Pages the VMM wrote for the guest (device DMA) since dirty tracking
	 * started: one bit per 4 KiB page of RAM offset; NULL = not tracking.
	 * KVM's dirty log covers the guest's own writes. */
	uint64_t *dirty;
	bool file_backed; /* gm_map_file(): private copy-on-write file mapping */
	/* All of RAM still reads as zeros (gm_init, nothing loaded yet): the
	 * kernel loader need not zero its bss (writing zeros would allocate
	 * host memory for every page of it). Cleared once the kernel is in. */
	bool all_zero;
	/* Ranges of anonymous RAM mapped copy-on-write from a cached image
	 * file (gm_map_copy): their pages are file pages, not private ones,
	 * yet hold the guest's data (snapshot and fork copy them). Offsets
	 * into RAM's mapping. */
	struct gm_range {
		uint64_t off, len;
	} mapped[GM_MAX_MAPPED];
	uint32_t n_mapped;
};

#define GM_PAGE 4096u
#define GM_PAGES(m) ((m)->size / GM_PAGE)

/* Start tracking VMM writes (allocates the bitmap; clears it if tracking).
 * 0 or -ENOMEM. */
int gm_track_dirty(struct guest_mem *m);
/* Mark the pages under host pointer range [p, p + len) written (no-op when
 * not tracking or outside RAM). Any thread. */
void gm_mark_dirty(const struct guest_mem *m, const void *p, uint64_t len);

/* Allocate @size bytes (multiple of 4 KiB) of RAM laid out as @layout:
 * anonymous, zero until written, no fd. 0 or negative errno. */
int gm_init(struct guest_mem *m, uint64_t size, const struct gm_layout *layout);
/*
 * Map @size bytes of the file @fd (adopted: closed by gm_release) as guest
 * RAM, private and copy-on-write: pages are read from the file when first
 * touched and copied when first written, so several VMs mapping the same
 * file share the pages none of them changed (snapshot restore). The file
 * must be at least @size bytes (checked here: a shorter file would fault).
 * 0 or negative errno (@fd is closed on error too).
 */
int gm_map_file(struct guest_mem *m, int fd, uint64_t size, const struct gm_layout *layout);
/* Zero @len bytes at @p (inside RAM) unless RAM is still all zeros. */
void gm_zero(const struct guest_mem *m, void *p, uint64_t len);
/* [p, p + len) (inside RAM) is about to be written whole (a kernel image):
 * back its 2 MiB-aligned interior with transparent huge pages where the
 * host allows (one fault per 2 MiB instead of 512). Only a hint. */
void gm_will_fill(const struct guest_mem *m, void *p, uint64_t len);
/* Map @len bytes of @fd at @fd_off (all page-aligned) over anonymous RAM
 * at @p, private and copy-on-write, and note the range (mapped[]).
 * -EINVAL (not anonymous RAM, not aligned, outside RAM), -ENOSPC (as many
 * ranges as noted already) or -errno from mmap (RAM unchanged then). */
int gm_map_copy(struct guest_mem *m, void *p, uint64_t len, int fd, uint64_t fd_off);
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
