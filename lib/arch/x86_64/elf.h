/* ELF64 kernel loader. Pure: works on a buffer and guest memory, so the unit
 * tests can feed it malformed images. */
#ifndef MICROVM_ELF_H
#define MICROVM_ELF_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

struct elf_image {
	uint64_t entry;    /* physical entry point */
	uint64_t load_lo;  /* lowest loaded GPA */
	uint64_t load_hi;  /* highest loaded GPA + 1 */
};

/*
 * Load the PT_LOAD segments of the ELF64 x86_64 executable @img (@size bytes)
 * at their physical addresses (p_paddr). Every segment must lie in RAM, at
 * or above @min_addr, and not overlap another; the entry point must be inside
 * a loaded segment. Returns 0, or -ENOEXEC with a message in @err.
 */
int elf_load(const uint8_t *img, size_t size, struct guest_mem *mem, uint64_t min_addr,
	     struct elf_image *out, char *err, size_t errlen);

#endif
