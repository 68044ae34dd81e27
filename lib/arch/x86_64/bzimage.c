#include "arch/x86_64/bzimage.h"

#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arch/x86_64/layout.h"
#include "memory.h"
#include "byteorder.h"
#include "errbuf.h"
#include "image.h"

/* Setup header fields (offsets in the image and in boot_params). */
#define HDR_SETUP_SECTS 0x1f1
#define HDR_BOOT_FLAG 0x1fe
#define HDR_JUMP_END 0x201 /* header ends at 0x202 + this byte */
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_LOADFLAGS 0x211
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_XLOADFLAGS 0x236
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE 0x260

#define LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x01

#define DEFAULT_LOAD_ADDR 0x1000000ULL /* 16 MiB, Linux's usual physical start */


/* Read the setup header of @im into @img (zero-filled past the file) and
 * check the magic, boot flag, protocol version and 64-bit entry. */
static int read_header(const struct image *im, uint8_t img[SETUP_HDR_START + SETUP_HDR_MAX],
		       char *err, size_t errlen)
{
	const uint64_t n = SETUP_HDR_START + SETUP_HDR_MAX;
	if (im->size < HDR_INIT_SIZE + 4)
		return errbuf_fail(err, errlen, -ENOEXEC, "file too small for a bzImage (%llu bytes)",
				   (unsigned long long)im->size);
	memset(img, 0, n);
	int r = image_read(im, 0, img, im->size < n ? im->size : n);
	if (r < 0)
		return errbuf_fail(err, errlen, r, "reading the setup header: %s", strerror(-r));
	if (get32(img + HDR_MAGIC) != 0x53726448) /* "HdrS" */
		return errbuf_fail(err, errlen, -ENOEXEC, "no \"HdrS\" setup header magic");
	if (get16(img + HDR_BOOT_FLAG) != 0xaa55)
		return errbuf_fail(err, errlen, -ENOEXEC, "bad boot flag 0x%04x", get16(img + HDR_BOOT_FLAG));
	uint16_t version = get16(img + HDR_VERSION);
	if (version < BZIMAGE_MIN_PROTOCOL)
		return errbuf_fail(err, errlen, -ENOEXEC,
			    "boot protocol %u.%02u is too old (need %u.%02u for the 64-bit entry)",
			    version >> 8, version & 0xff, BZIMAGE_MIN_PROTOCOL >> 8,
			    BZIMAGE_MIN_PROTOCOL & 0xff);
	if (!(img[HDR_LOADFLAGS] & LOADED_HIGH))
		return errbuf_fail(err, errlen, -ENOEXEC, "not a bzImage (LOADED_HIGH is clear)");
	if (!(get16(img + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return errbuf_fail(err, errlen, -ENOEXEC, "kernel has no 64-bit entry point (XLF_KERNEL_64)");
	return 0;
}

int bzimage_load(const struct image *im, struct guest_mem *mem, struct bzimage_info *out,
		 char *err, size_t errlen)
{
	/* Every header field lies below SETUP_HDR_START + SETUP_HDR_MAX. */
	uint8_t img[SETUP_HDR_START + SETUP_HDR_MAX];
	int r = read_header(im, img, err, errlen);
	if (r < 0)
		return r;
	uint64_t size = im->size;
	uint16_t version = get16(img + HDR_VERSION);

	uint32_t hdr_end = 0x202u + img[HDR_JUMP_END];
	if (hdr_end <= HDR_INIT_SIZE + 4 || hdr_end > SETUP_HDR_START + SETUP_HDR_MAX)
		hdr_end = SETUP_HDR_START + SETUP_HDR_MAX < size ? SETUP_HDR_START + SETUP_HDR_MAX
								  : (uint32_t)size;
	uint32_t setup_sects = img[HDR_SETUP_SECTS] ? img[HDR_SETUP_SECTS] : 4;
	uint64_t pm_offset = (uint64_t)(setup_sects + 1) * 512;
	if (pm_offset >= size)
		return errbuf_fail(err, errlen, -ENOEXEC,
			    "setup (%u sectors) leaves no protected-mode kernel in the file",
			    setup_sects);
	uint64_t pm_size = size - pm_offset;

	uint32_t align = get32(img + HDR_KERNEL_ALIGNMENT);
	if (align == 0 || (align & (align - 1)) || align > (1u << 30))
		return errbuf_fail(err, errlen, -ENOEXEC, "bad kernel_alignment 0x%x", align);
	uint64_t init_size = get32(img + HDR_INIT_SIZE);
	if (init_size < pm_size)
		init_size = pm_size;
	uint64_t pref = get64(img + HDR_PREF_ADDRESS);
	bool relocatable = img[HDR_RELOCATABLE] != 0;

	/* Load at pref_address if it is usable, else (relocatable kernels only)
	 * at 16 MiB rounded up to the alignment. */
	uint64_t load = pref ? pref : DEFAULT_LOAD_ADDR;
	if (load < 0x100000 || (load & (align - 1)) || load > MEM_LOW_LIMIT ||
	    init_size > MEM_LOW_LIMIT - load || !gm_ptr(mem, load, init_size)) {
		if (!relocatable)
			return errbuf_fail(err, errlen, -ENOMEM,
				    "kernel must load at 0x%llx (not relocatable) and needs 0x%llx "
				    "bytes there; guest RAM is 0x%llx bytes",
				    (unsigned long long)load, (unsigned long long)init_size,
				    (unsigned long long)mem->size);
		load = (DEFAULT_LOAD_ADDR + align - 1) & ~((uint64_t)align - 1);
	}
	if (load + init_size > MEM_LOW_LIMIT || !gm_ptr(mem, load, init_size))
		return errbuf_fail(err, errlen, -ENOMEM,
			    "kernel needs 0x%llx bytes at 0x%llx (init_size); guest RAM is 0x%llx "
			    "bytes",
			    (unsigned long long)init_size, (unsigned long long)load,
			    (unsigned long long)mem->size);

	uint8_t *dst = gm_ptr(mem, load, init_size);
	r = image_to_ram(im, mem, pm_offset, dst, pm_size);
	if (r < 0)
		return errbuf_fail(err, errlen, r, "reading the kernel: %s", strerror(-r));
	gm_zero(mem, dst + pm_size, init_size - pm_size);

	memset(out, 0, sizeof(*out));
	out->entry = load + 0x200;
	out->load_addr = load;
	out->kernel_end = load + init_size;
	out->version = version;
	out->initrd_addr_max = version >= 0x0203 ? get32(img + HDR_INITRD_ADDR_MAX) : 0x37ffffff;
	out->hdr_len = hdr_end - SETUP_HDR_START;
	memcpy(out->hdr, img + SETUP_HDR_START, out->hdr_len);
	return 0;
}
