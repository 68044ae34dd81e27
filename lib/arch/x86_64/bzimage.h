/* bzImage loader (Linux x86 boot protocol, 64-bit entry). Works on an image
 * (lib/image.h: a file, or a buffer so unit tests and fuzzers can feed it
 * malformed images) and guest memory. */
#ifndef MICROVM_BZIMAGE_H
#define MICROVM_BZIMAGE_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct image;

/* The setup header lives at [0x1f1, 0x202 + byte at 0x201) of the image. */
#define SETUP_HDR_START 0x1f1
#define SETUP_HDR_MAX (0x290 - SETUP_HDR_START)

/* Oldest boot protocol accepted: 2.12 brought xloadflags (XLF_KERNEL_64). */
#define BZIMAGE_MIN_PROTOCOL 0x020c

struct bzimage_info {
	uint64_t entry;           /* 64-bit entry: load address + 0x200 */
	uint64_t load_addr;       /* where the protected-mode kernel went */
	uint64_t kernel_end;      /* load_addr + init_size: memory the kernel needs */
	uint32_t initrd_addr_max; /* highest address the initrd may end at */
	uint16_t version;         /* boot protocol version */
	uint32_t hdr_len;
	uint8_t hdr[SETUP_HDR_MAX]; /* the image's setup header, for boot_params */
};

/*
 * Validate the setup header of @img and copy the protected-mode kernel to its
 * load address (pref_address when it fits, else the lowest kernel_alignment-
 * aligned address at or above 16 MiB... see bzimage.c). Returns 0 or
 * -ENOEXEC/-ENOMEM (-EIO if the file shrank while read) with a message in
 * @err. Nothing is written to guest memory unless every check passed.
 */
int bzimage_load(const struct image *im, struct guest_mem *mem, struct bzimage_info *out,
		 char *err, size_t errlen);

#endif
