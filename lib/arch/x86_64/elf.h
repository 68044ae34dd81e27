/* ELF64 kernel loader. Works on an image (lib/image.h: a file, or a buffer
 * so the unit tests and fuzzers can feed it malformed images) and guest
 * memory. */
#ifndef MICROVM_ELF_H
#define MICROVM_ELF_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct image;

struct elf_image {
	uint64_t entry;    /* physical entry point */
	uint64_t load_lo;  /* lowest loaded GPA */
	uint64_t load_hi;  /* highest loaded GPA + 1 */
};

/*
 * Load the PT_LOAD segments of the ELF64 x86_64 executable @im at their
 * physical addresses (p_paddr), reading each straight into guest memory.
 * Every segment must lie in RAM, at or above @min_addr, and not overlap
 * another; the entry point must be inside a loaded segment; all of that is
 * checked before anything is written. Returns 0, or -ENOEXEC (-EIO if the
 * file shrank while read) with a message in @err.
 */
int elf_load(const struct image *im, struct guest_mem *mem, uint64_t min_addr,
	     struct elf_image *out, char *err, size_t errlen);

#endif
