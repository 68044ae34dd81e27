/* x86_64 direct boot: kernel load, boot_params (zero page), GDT, page
 * tables, and the initial vCPU state of the Linux 64-bit boot protocol. */
#ifndef MICROVM_X86_BOOT_H
#define MICROVM_X86_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/bzimage.h"

struct guest_mem;
struct microvm;

/* Offsets in struct boot_params (Linux Documentation/arch/x86/zero-page.rst
 * and boot.rst). */
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR_SETUP_SECTS 0x1f1
#define BP_HDR_BOOT_FLAG 0x1fe
#define BP_HDR_HEADER 0x202
#define BP_HDR_VERSION 0x206
#define BP_HDR_TYPE_OF_LOADER 0x210
#define BP_HDR_LOADFLAGS 0x211
#define BP_HDR_RAMDISK_IMAGE 0x218
#define BP_HDR_RAMDISK_SIZE 0x21c
#define BP_HDR_CMD_LINE_PTR 0x228
#define BP_HDR_CMDLINE_SIZE 0x238
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
#define BP_SIZE 4096

#define E820_RAM 1
#define E820_RESERVED 2

struct boot_info {
	uint64_t entry;
	uint64_t kernel_end;       /* GPA just past the kernel */
	uint64_t initrd_addr;      /* 0 = none */
	uint64_t initrd_size;
	uint32_t initrd_addr_max;  /* from the bzImage header; 0 = no limit */
	uint32_t setup_hdr_len;    /* bzImage: setup header to copy, else 0 */
	uint8_t setup_hdr[SETUP_HDR_MAX];
	uint32_t ncpus;            /* for the MP and ACPI tables; 0 = 1 */
	bool no_acpi;              /* MP table only */
	uint32_t n_mmio;           /* virtio-mmio devices for the DSDT */
	struct acpi_mmio_device mmio[ACPI_MAX_MMIO_DEVICES];
};

/*
 * Write the zero page at BOOT_PARAMS_ADDR: e820 map for @mem, command line
 * @cmdline (copied to BOOT_CMDLINE_ADDR), initrd, ACPI RSDP address. Also
 * writes the GDT, identity page tables, MP table and ACPI tables (for
 * bi->ncpus vCPUs). Returns 0 or -EINVAL/-E2BIG with a message in @err.
 */
int boot_setup_memory(struct guest_mem *mem, const char *cmdline, const struct boot_info *bi,
		      char *err, size_t errlen);

/* Load a kernel file (ELF64 vmlinux or bzImage, told apart by their magic)
 * into guest memory. 0 or negative errno + message. */
int boot_load_kernel(struct guest_mem *mem, const char *path, struct boot_info *bi, char *err,
		     size_t errlen);

/* Load an initrd file at the top of low RAM, above the kernel and below the
 * kernel's initrd_addr_max. */
int boot_load_initrd(struct guest_mem *mem, const char *path, struct boot_info *bi, char *err,
		     size_t errlen);

#endif
