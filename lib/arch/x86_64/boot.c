#include "arch/x86_64/boot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/elf.h"
#include "arch/x86_64/mptable.h"
#include "arch/x86_64/layout.h"
#include "memory.h"
#include "byteorder.h"
#include "errbuf.h"
#include "image.h"
#include "microvm.h"


/* What the first bytes of @im say it is (an ELF or a bzImage). */
static int kernel_format(const struct image *im, bool *elf)
{
	uint8_t head[BP_HDR_HEADER + 4];
	uint64_t n = im->size < sizeof(head) ? im->size : sizeof(head);
	int r = image_read(im, 0, head, n);
	if (r < 0)
		return r;
	*elf = n >= 4 && memcmp(head, "\177ELF", 4) == 0;
	if (*elf || (n == sizeof(head) && memcmp(head + BP_HDR_HEADER, "HdrS", 4) == 0))
		return 0;
	return -ENOEXEC;
}

static int load_elf(const struct image *im, struct guest_mem *mem, struct boot_info *bi,
		    char *why, size_t whylen)
{
	struct elf_image ei;
	int r = elf_load(im, mem, HIGH_MEMORY_START, &ei, why, whylen);
	if (r == 0 && ei.load_hi > MEM_LOW_LIMIT)
		r = errbuf_fail(why, whylen, -ENOEXEC,
				"loads up to 0x%llx; it must lie below 0x%llx (the boot page "
				"tables map only low memory)",
				(unsigned long long)ei.load_hi, (unsigned long long)MEM_LOW_LIMIT);
	if (r == 0) {
		bi->entry = ei.entry;
		bi->kernel_end = ei.load_hi;
	}
	return r;
}

static int load_bzimage(const struct image *im, struct guest_mem *mem, struct boot_info *bi,
			char *why, size_t whylen)
{
	struct bzimage_info zi;
	int r = bzimage_load(im, mem, &zi, why, whylen);
	if (r == 0) {
		bi->entry = zi.entry;
		bi->kernel_end = zi.kernel_end;
		bi->initrd_addr_max = zi.initrd_addr_max;
		bi->setup_hdr_len = zi.hdr_len;
		memcpy(bi->setup_hdr, zi.hdr, zi.hdr_len);
	}
	return r;
}

int boot_load_kernel(struct guest_mem *mem, const char *path, struct boot_info *bi, char *err,
		     size_t errlen)
{
	struct image im;
	int r = image_open(&im, path, mem->size, err, errlen);
	if (r < 0)
		return r;
	char why[256];
	bool elf = false;
	r = kernel_format(&im, &elf);
	if (r == -ENOEXEC)
		errbuf_fail(why, sizeof(why), r, "not an ELF vmlinux or a bzImage");
	else if (r < 0)
		errbuf_fail(why, sizeof(why), r, "read: %s", strerror(-r));
	else
		r = elf ? load_elf(&im, mem, bi, why, sizeof(why))
			: load_bzimage(&im, mem, bi, why, sizeof(why));
	image_close(&im);
	if (r < 0)
		return errbuf_fail(err, errlen, r, "kernel %s: %s", path, why);
	return 0;
}

int boot_load_initrd(struct guest_mem *mem, const char *path, struct boot_info *bi, char *err,
		     size_t errlen)
{
	struct image im;
	int r = image_open(&im, path, mem->size, err, errlen);
	if (r < 0)
		return r;
	uint64_t size = im.size;
	/* Highest page-aligned spot in low RAM (below 4 GiB, as the 32-bit
	 * ramdisk fields require) above the kernel. */
	uint64_t top = mem->low_size;
	if (bi->initrd_addr_max && (uint64_t)bi->initrd_addr_max + 1 < top)
		top = (uint64_t)bi->initrd_addr_max + 1;
	uint64_t addr = size <= top ? ((top - size) & ~0xfffULL) : 0;
	if (size > top || addr < ((bi->kernel_end + 0xfff) & ~0xfffULL))
		r = errbuf_fail(err, errlen, -ENOMEM,
				"initrd %s (%llu bytes) does not fit in guest RAM between the "
				"kernel (ends at 0x%llx) and 0x%llx",
				path, (unsigned long long)size, (unsigned long long)bi->kernel_end,
				(unsigned long long)top);
	else if ((r = image_to_ram(&im, mem, 0, gm_ptr(mem, addr, size), size)) < 0)
		errbuf_fail(err, errlen, r, "initrd %s: read: %s", path, strerror(-r));
	image_close(&im);
	if (r < 0)
		return r;
	bi->initrd_addr = addr;
	bi->initrd_size = size;
	return 0;
}

static void add_e820(uint8_t *bp, uint64_t addr, uint64_t size, uint32_t type)
{
	uint8_t n = bp[BP_E820_ENTRIES];
	uint8_t *e = bp + BP_E820_TABLE + 20 * n;
	put64(e, addr);
	put64(e + 8, size);
	put32(e + 16, type);
	bp[BP_E820_ENTRIES] = n + 1;
}

/* The command line must fit in our buffer and in what a bzImage accepts. */
static int boot_check_cmdline(size_t cmdlen, const struct boot_info *bi, char *err, size_t errlen)
{
	if (cmdlen >= MICROVM_MAX_CMDLINE)
		return errbuf_fail(err, errlen, -E2BIG, "command line is %zu bytes (max %d)", cmdlen,
			    MICROVM_MAX_CMDLINE - 1);
	if (bi->setup_hdr_len > BP_HDR_CMDLINE_SIZE + 4 - SETUP_HDR_START) {
		/* bzImage: the kernel says how long a command line it takes. */
		uint32_t max;
		memcpy(&max, bi->setup_hdr + (BP_HDR_CMDLINE_SIZE - SETUP_HDR_START), 4);
		if (max && cmdlen > max)
			return errbuf_fail(err, errlen, -E2BIG,
				    "command line is %zu bytes; this kernel accepts at most %u "
				    "(cmdline_size)",
				    cmdlen, max);
	}
	return 0;
}

/* GDT, an empty IDT and the identity page tables the boot vCPU starts with. */
static void boot_write_gdt_and_page_tables(struct guest_mem *mem)
{
	/* GDT: null, null, code64 (0x10), data (0x18), TSS (0x20). */
	uint64_t gdt[5] = {
		0,
		0,
		0x00af9b000000ffffULL, /* 64-bit code, present, DPL0, exec/read */
		0x00cf93000000ffffULL, /* 4 GiB flat data, read/write */
		0x00008b0000000067ULL, /* 64-bit TSS (busy), base 0, limit 0x67 */
	};
	gm_write(mem, BOOT_GDT_ADDR, gdt, sizeof(gdt));
	uint64_t zero_idt = 0;
	gm_write(mem, BOOT_IDT_ADDR, &zero_idt, sizeof(zero_idt));

	/* Identity map of [0, 4 GiB) with 2 MiB pages. */
	uint8_t *pml4 = gm_ptr(mem, BOOT_PML4_ADDR, 4096);
	uint8_t *pdpt = gm_ptr(mem, BOOT_PDPT_ADDR, 4096);
	uint8_t *pd = gm_ptr(mem, BOOT_PD_ADDR, 4 * 4096);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	put64(pml4, BOOT_PDPT_ADDR | 0x3); /* present, writable */
	for (uint64_t i = 0; i < 4; i++)
		put64(pdpt + 8 * i, (BOOT_PD_ADDR + 4096 * i) | 0x3);
	for (uint64_t i = 0; i < 4 * 512; i++)
		put64(pd + 8 * i, (i << 21) | 0x83); /* present, writable, 2 MiB */
}

/* Fill the zero page (boot_params) but for the RSDP and the E820 map. */
static uint8_t *boot_write_zero_page(struct guest_mem *mem, const struct boot_info *bi)
{
	uint8_t *bp = gm_ptr(mem, BOOT_PARAMS_ADDR, BP_SIZE);
	memset(bp, 0, BP_SIZE);
	if (bi->setup_hdr_len) {
		/* bzImage: start from the kernel's own setup header. */
		memcpy(bp + SETUP_HDR_START, bi->setup_hdr, bi->setup_hdr_len);
	} else {
		put16(bp + BP_HDR_BOOT_FLAG, 0xaa55);
		put32(bp + BP_HDR_HEADER, 0x53726448); /* "HdrS" */
		put16(bp + BP_HDR_VERSION, 0x020f);
	}
	bp[BP_HDR_TYPE_OF_LOADER] = 0xff; /* undefined loader */
	bp[BP_HDR_LOADFLAGS] |= 0x01;     /* LOADED_HIGH */
	bp[BP_HDR_LOADFLAGS] &= (uint8_t)~0x20; /* QUIET_FLAG off: let it print */
	put32(bp + BP_HDR_CMD_LINE_PTR, (uint32_t)BOOT_CMDLINE_ADDR);
	put32(bp + BP_HDR_CMDLINE_SIZE, MICROVM_MAX_CMDLINE - 1);
	if (bi->initrd_size) {
		put32(bp + BP_HDR_RAMDISK_IMAGE, (uint32_t)bi->initrd_addr);
		put32(bp + BP_HDR_RAMDISK_SIZE, (uint32_t)bi->initrd_size);
		put32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(bi->initrd_addr >> 32));
		put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)(bi->initrd_size >> 32));
	}
	return bp;
}

/* Firmware tables: MP table (EBDA) for kernels with MPPARSE, ACPI for the
 * others (distribution kernels) and for power-off. The RSDP's address goes
 * into the zero page @bp. */
static int boot_write_firmware_tables(struct guest_mem *mem, const struct boot_info *bi,
				      uint8_t *bp, char *err, size_t errlen)
{
	uint32_t ncpus = bi->ncpus ? bi->ncpus : 1;
	uint64_t rsdp = 0;
	int r = mptable_write(mem, ncpus, err, errlen);
	if (r == 0 && !bi->no_acpi)
		r = acpi_write_devices(mem, ncpus, bi->mmio, bi->n_mmio, &rsdp, err, errlen);
	if (r < 0)
		return r;
	put64(bp + ACPI_BOOT_PARAMS_RSDP_OFFSET, rsdp);
	return 0;
}

int boot_setup_memory(struct guest_mem *mem, const char *cmdline, const struct boot_info *bi,
		      char *err, size_t errlen)
{
	size_t cmdlen = cmdline ? strlen(cmdline) : 0;
	int r = boot_check_cmdline(cmdlen, bi, err, errlen);
	if (r < 0)
		return r;
	if (mem->low_size < HIGH_MEMORY_START + 0x100000)
		return errbuf_fail(err, errlen, -EINVAL, "guest RAM too small for boot structures");

	boot_write_gdt_and_page_tables(mem);

	/* Command line. */
	uint8_t *cl = gm_ptr(mem, BOOT_CMDLINE_ADDR, MICROVM_MAX_CMDLINE);
	memset(cl, 0, MICROVM_MAX_CMDLINE);
	if (cmdlen)
		memcpy(cl, cmdline, cmdlen);

	uint8_t *bp = boot_write_zero_page(mem, bi);
	r = boot_write_firmware_tables(mem, bi, bp, err, errlen);
	if (r < 0)
		return r;

	add_e820(bp, 0, EBDA_START, E820_RAM);
	add_e820(bp, EBDA_START, HIGH_MEMORY_START - EBDA_START, E820_RESERVED);
	add_e820(bp, HIGH_MEMORY_START, mem->low_size - HIGH_MEMORY_START, E820_RAM);
	if (mem->size > mem->low_size)
		add_e820(bp, MEM_HIGH_BASE, mem->size - mem->low_size, E820_RAM);
	return 0;
}
