/*
 * Unit tests for the x86_64 direct boot (lib/arch/x86_64/boot.c): the zero
 * page (struct boot_params) at the offsets documented in Linux's
 * Documentation/arch/x86/zero-page.rst and boot.rst, the e820 map, the GDT,
 * the identity page tables, and loading kernel/initrd files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <unistd.h>

#include "arch/x86_64/boot.h"
#include "arch/x86_64/layout.h"
#include "arch/arch.h"
#include "image.h"
#include "memory.h"
#include "microvm.h"

#include "fifo_call.h"

#define RAM_SIZE (64 * MIB)
#define PATTERN 0xa5
#define CMDLINE "console=ttyS0 reboot=k panic=1 root=/dev/vda"

/* ---------------------------------------------------------------- helpers */

static uint8_t rd8(const struct guest_mem *m, uint64_t gpa)
{
	const uint8_t *p = gm_ptr(m, gpa, 1);
	assert_non_null(p);
	return *p;
}

static uint16_t rd16(const struct guest_mem *m, uint64_t gpa)
{
	uint16_t v;
	assert_true(gm_read(m, gpa, &v, sizeof(v)));
	return v;
}

static uint32_t rd32(const struct guest_mem *m, uint64_t gpa)
{
	uint32_t v;
	assert_true(gm_read(m, gpa, &v, sizeof(v)));
	return v;
}

static uint64_t rd64(const struct guest_mem *m, uint64_t gpa)
{
	uint64_t v;
	assert_true(gm_read(m, gpa, &v, sizeof(v)));
	return v;
}

static uint64_t bp(uint64_t off)
{
	return BOOT_PARAMS_ADDR + off;
}

struct e820 {
	uint64_t addr, size;
	uint32_t type;
};

static struct e820 e820_entry(const struct guest_mem *m, unsigned i)
{
	uint64_t e = bp(BP_E820_TABLE) + 20ULL * i;
	struct e820 r = { rd64(m, e), rd64(m, e + 8), rd32(m, e + 16) };
	return r;
}

static void assert_e820(const struct guest_mem *m, unsigned i, uint64_t addr, uint64_t size,
			uint32_t type)
{
	struct e820 e = e820_entry(m, i);
	if (e.addr != addr || e.size != size || e.type != type)
		fail_msg("e820[%u] = {0x%llx, 0x%llx, %u}, expected {0x%llx, 0x%llx, %u}", i,
			 (unsigned long long)e.addr, (unsigned long long)e.size, e.type,
			 (unsigned long long)addr, (unsigned long long)size, type);
}

static int open_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Write @len bytes to a new temporary file; its name goes to @path. */
static void make_temp(char *path, size_t pathlen, const void *data, size_t len)
{
	snprintf(path, pathlen, "/tmp/microvm-unit-boot-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const uint8_t *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
	assert_int_equal(close(fd), 0);
}

/* A minimal ELF64 x86_64 kernel: one PT_LOAD of @code_len bytes at 2 MiB. */
#define KERNEL_ADDR 0x200000ULL
#define KERNEL_MEMSZ 0x3000ULL

static size_t build_kernel(uint8_t *buf, size_t buflen)
{
	const uint8_t code[] = { 0xfa, 0xf4, 0xeb, 0xfd }; /* cli; hlt; jmp hlt */
	size_t data_off = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
	assert_true(buflen >= data_off + sizeof(code));
	memset(buf, 0, buflen);
	Elf64_Ehdr eh;
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = KERNEL_ADDR;
	eh.e_phoff = sizeof(Elf64_Ehdr);
	eh.e_ehsize = sizeof(Elf64_Ehdr);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = 1;
	Elf64_Phdr ph;
	memset(&ph, 0, sizeof(ph));
	ph.p_type = PT_LOAD;
	ph.p_flags = PF_R | PF_X;
	ph.p_offset = data_off;
	ph.p_vaddr = KERNEL_ADDR;
	ph.p_paddr = KERNEL_ADDR;
	ph.p_filesz = sizeof(code);
	ph.p_memsz = KERNEL_MEMSZ;
	memcpy(buf, &eh, sizeof(eh));
	memcpy(buf + sizeof(eh), &ph, sizeof(ph));
	memcpy(buf + data_off, code, sizeof(code));
	return data_off + sizeof(code);
}

/* --------------------------------------------------------------- fixture */

static int setup(void **state)
{
	struct guest_mem *m = calloc(1, sizeof(*m));
	if (!m)
		return -1;
	if (arch_ram_init(m, RAM_SIZE) < 0) {
		free(m);
		return -1;
	}
	/* Low 2 MiB filled with a pattern, so "must be zero" checks mean
	 * something. */
	memset(m->host, PATTERN, 2 * MIB);
	*state = m;
	return 0;
}

static int teardown(void **state)
{
	struct guest_mem *m = *state;
	gm_release(m);
	free(m);
	return 0;
}

static void setup_ok(struct guest_mem *m, const char *cmdline, const struct boot_info *bi)
{
	char err[256] = "";
	int r = boot_setup_memory(m, cmdline, bi, err, sizeof(err));
	if (r != 0)
		fail_msg("boot_setup_memory: %d (%s)", r, err);
}

/* ------------------------------------------------------------ zero page */

static void test_zero_page_header(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(m, CMDLINE, &bi);

	/* setup_header magic values. */
	assert_int_equal(rd16(m, bp(BP_HDR_BOOT_FLAG)), 0xaa55);
	assert_int_equal(rd32(m, bp(BP_HDR_HEADER)), 0x53726448);
	char magic[4];
	assert_true(gm_read(m, bp(BP_HDR_HEADER), magic, 4));
	assert_memory_equal(magic, "HdrS", 4);
	/* Protocol >= 2.06 (cmdline_size exists since 2.06). */
	assert_true(rd16(m, bp(BP_HDR_VERSION)) >= 0x0206);
	assert_int_equal(rd8(m, bp(BP_HDR_TYPE_OF_LOADER)), 0xff);
	assert_true(rd8(m, bp(BP_HDR_LOADFLAGS)) & 0x01); /* LOADED_HIGH */

	/* Command line: pointer, size limit, copied string. */
	assert_int_equal(rd32(m, bp(BP_HDR_CMD_LINE_PTR)), BOOT_CMDLINE_ADDR);
	assert_int_equal(rd32(m, bp(BP_EXT_CMD_LINE_PTR)), 0);
	assert_int_equal(rd32(m, bp(BP_HDR_CMDLINE_SIZE)), MICROVM_MAX_CMDLINE - 1);
	uint64_t cl = (uint64_t)rd32(m, bp(BP_EXT_CMD_LINE_PTR)) << 32 |
		      rd32(m, bp(BP_HDR_CMD_LINE_PTR));
	const char *s = gm_ptr(m, cl, sizeof(CMDLINE));
	assert_non_null(s);
	assert_string_equal(s, CMDLINE);
	/* The rest of the command-line area is cleared (it held the pattern). */
	for (uint64_t i = sizeof(CMDLINE) - 1; i < MICROVM_MAX_CMDLINE; i++)
		assert_int_equal(rd8(m, cl + i), 0);

	/* No initrd. */
	assert_int_equal(rd32(m, bp(BP_HDR_RAMDISK_IMAGE)), 0);
	assert_int_equal(rd32(m, bp(BP_HDR_RAMDISK_SIZE)), 0);
	assert_int_equal(rd32(m, bp(BP_EXT_RAMDISK_IMAGE)), 0);
	assert_int_equal(rd32(m, bp(BP_EXT_RAMDISK_SIZE)), 0);

	/* Fields nobody sets are zero (the page held the pattern before). */
	assert_int_equal(rd8(m, bp(BP_HDR_SETUP_SECTS)), 0);
	assert_int_equal(rd64(m, bp(0)), 0);
	assert_int_equal(rd64(m, bp(BP_SIZE - 8)), 0);
}

static void test_e820_low_ram(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(m, CMDLINE, &bi);

	assert_int_equal(rd8(m, bp(BP_E820_ENTRIES)), 3);
	assert_e820(m, 0, 0, EBDA_START, E820_RAM);
	assert_e820(m, 1, EBDA_START, HIGH_MEMORY_START - EBDA_START, E820_RESERVED);
	assert_e820(m, 2, HIGH_MEMORY_START, RAM_SIZE - HIGH_MEMORY_START, E820_RAM);
	/* Sorted, non-overlapping, and the RAM entries cover exactly the RAM. */
	uint64_t ram = 0, prev_end = 0;
	for (unsigned i = 0; i < 3; i++) {
		struct e820 e = e820_entry(m, i);
		assert_true(e.addr >= prev_end);
		prev_end = e.addr + e.size;
		if (e.type == E820_RAM) {
			assert_non_null(gm_ptr(m, e.addr, e.size));
			ram += e.size;
		}
	}
	assert_int_equal(ram + (HIGH_MEMORY_START - EBDA_START), RAM_SIZE);
	/* The unused table slot after the last entry is clear. */
	struct e820 e = e820_entry(m, 3);
	assert_int_equal(e.addr, 0);
	assert_int_equal(e.size, 0);
	assert_int_equal(e.type, 0);
}

static void test_e820_high_ram(void **state)
{
	struct guest_mem m;
	const uint64_t size = 4 * GIB + 64 * MIB; /* 3 GiB low + 1 GiB + 64 MiB high */
	assert_int_equal(arch_ram_init(&m, size), 0);
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(&m, CMDLINE, &bi);

	assert_int_equal(rd8(&m, bp(BP_E820_ENTRIES)), 4);
	assert_e820(&m, 0, 0, EBDA_START, E820_RAM);
	assert_e820(&m, 1, EBDA_START, HIGH_MEMORY_START - EBDA_START, E820_RESERVED);
	assert_e820(&m, 2, HIGH_MEMORY_START, MEM_LOW_LIMIT - HIGH_MEMORY_START, E820_RAM);
	assert_e820(&m, 3, MEM_HIGH_BASE, size - MEM_LOW_LIMIT, E820_RAM);
	/* Every e820 RAM range really is RAM. */
	for (unsigned i = 0; i < 4; i++) {
		struct e820 e = e820_entry(&m, i);
		if (e.type == E820_RAM)
			assert_non_null(gm_ptr(&m, e.addr, e.size));
	}
	gm_release(&m);
}

static void test_initrd_fields(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = {
		.entry = KERNEL_ADDR,
		.kernel_end = KERNEL_ADDR + KERNEL_MEMSZ,
		.initrd_addr = 0x3000000,
		.initrd_size = 0x123456,
	};
	setup_ok(m, "", &bi);
	assert_int_equal(rd32(m, bp(BP_HDR_RAMDISK_IMAGE)), 0x3000000);
	assert_int_equal(rd32(m, bp(BP_HDR_RAMDISK_SIZE)), 0x123456);
	assert_int_equal(rd32(m, bp(BP_EXT_RAMDISK_IMAGE)), 0);
	assert_int_equal(rd32(m, bp(BP_EXT_RAMDISK_SIZE)), 0);
	/* An empty command line is an empty string. */
	assert_int_equal(rd8(m, BOOT_CMDLINE_ADDR), 0);
}

static void test_null_cmdline(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(m, NULL, &bi);
	assert_int_equal(rd32(m, bp(BP_HDR_CMD_LINE_PTR)), BOOT_CMDLINE_ADDR);
	assert_int_equal(rd8(m, BOOT_CMDLINE_ADDR), 0);
}

static void test_cmdline_max_length(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	char *cl = malloc(MICROVM_MAX_CMDLINE);
	assert_non_null(cl);
	for (int i = 0; i < MICROVM_MAX_CMDLINE - 1; i++)
		cl[i] = (char)('a' + i % 26);
	cl[MICROVM_MAX_CMDLINE - 1] = '\0';
	/* MICROVM_MAX_CMDLINE - 1 bytes is the longest accepted. */
	setup_ok(m, cl, &bi);
	const char *s = gm_ptr(m, BOOT_CMDLINE_ADDR, MICROVM_MAX_CMDLINE);
	assert_non_null(s);
	assert_int_equal(strlen(s), MICROVM_MAX_CMDLINE - 1);
	assert_memory_equal(s, cl, MICROVM_MAX_CMDLINE);
	free(cl);
}

static void test_cmdline_too_long(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	const size_t lens[] = { MICROVM_MAX_CMDLINE, MICROVM_MAX_CMDLINE + 1, 100000 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		char *cl = malloc(lens[i] + 1);
		assert_non_null(cl);
		memset(cl, 'x', lens[i]);
		cl[lens[i]] = '\0';
		char err[256] = "";
		assert_int_equal(boot_setup_memory(m, cl, &bi, err, sizeof(err)), -E2BIG);
		assert_true(strlen(err) > 0);
		free(cl);
		/* Rejected before anything was written. */
		assert_int_equal(rd8(m, bp(BP_HDR_BOOT_FLAG)), PATTERN);
		assert_int_equal(rd8(m, BOOT_CMDLINE_ADDR), PATTERN);
		assert_int_equal(rd8(m, BOOT_PML4_ADDR), PATTERN);
		assert_int_equal(rd8(m, BOOT_GDT_ADDR), PATTERN);
	}
}

static void test_ram_too_small(void **state)
{
	struct guest_mem m;
	struct boot_info bi = { 0 };
	char err[256] = "";
	/* 1 MiB: no room above HIGH_MEMORY_START at all. */
	assert_int_equal(arch_ram_init(&m, MIB), 0);
	assert_int_equal(boot_setup_memory(&m, "", &bi, err, sizeof(err)), -EINVAL);
	assert_true(strlen(err) > 0);
	gm_release(&m);
	/* 2 MiB (MICROVM_MIN_MEMORY_MIB) is enough. */
	assert_int_equal(arch_ram_init(&m, MICROVM_MIN_MEMORY_MIB * MIB), 0);
	setup_ok(&m, "", &bi);
	assert_e820(&m, 2, HIGH_MEMORY_START, MICROVM_MIN_MEMORY_MIB * MIB - HIGH_MEMORY_START,
		    E820_RAM);
	gm_release(&m);
}

/* ---------------------------------------------------- GDT + page tables */

static void test_gdt(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(m, CMDLINE, &bi);

	assert_int_equal(rd64(m, BOOT_GDT_ADDR + 0), 0);
	assert_int_equal(rd64(m, BOOT_GDT_ADDR + 8), 0);

	/* CS = 0x10: 64-bit code segment: present, DPL 0, code exec/read,
	 * L = 1, D = 0. */
	uint64_t cs = rd64(m, BOOT_GDT_ADDR + BOOT_CS);
	assert_int_equal(cs, 0x00af9b000000ffffULL);
	assert_true(cs & (1ULL << 47));        /* P */
	assert_int_equal((cs >> 45) & 3, 0);   /* DPL */
	assert_true(cs & (1ULL << 44));        /* S: code/data */
	assert_true(cs & (1ULL << 43));        /* executable */
	assert_true(cs & (1ULL << 53));        /* L: 64-bit */
	assert_false(cs & (1ULL << 54));       /* D must be 0 when L = 1 */

	/* DS = 0x18: flat 4 GiB read/write data. */
	uint64_t ds = rd64(m, BOOT_GDT_ADDR + BOOT_DS);
	assert_int_equal(ds, 0x00cf93000000ffffULL);
	assert_true(ds & (1ULL << 47));
	assert_false(ds & (1ULL << 43)); /* data */
	assert_true(ds & (1ULL << 41));  /* writable */
	assert_true(ds & (1ULL << 55));  /* G: 4 KiB granularity */
}

/*
 * The TSS descriptor at selector 0x20 (GDT entry 4, GPA 0x520) must survive
 * boot_setup_memory(). KVM loads TR from the sregs, but the descriptor in
 * memory is what the guest sees if it reads its GDT or does "ltr 0x20".
 */
static void test_gdt_tss_entry(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(m, CMDLINE, &bi);
	uint64_t tss = rd64(m, BOOT_GDT_ADDR + BOOT_TSS);
	if (tss != 0x00008b0000000067ULL)
		fail_msg("GDT[4] (TSS, GPA 0x%llx) is 0x%016llx, expected 0x00008b0000000067: "
			 "the IDT at BOOT_IDT_ADDR 0x%llx overlaps the 5-entry GDT at 0x%llx",
			 (unsigned long long)(BOOT_GDT_ADDR + BOOT_TSS), (unsigned long long)tss,
			 (unsigned long long)BOOT_IDT_ADDR, (unsigned long long)BOOT_GDT_ADDR);
}

/* Walk the boot page tables like the MMU does (4-level, 2 MiB leaves). */
static uint64_t translate(const struct guest_mem *m, uint64_t va)
{
	uint64_t pml4e = rd64(m, BOOT_PML4_ADDR + 8 * ((va >> 39) & 511));
	assert_true(pml4e & 1);
	uint64_t pdpte = rd64(m, (pml4e & 0x000ffffffffff000ULL) + 8 * ((va >> 30) & 511));
	assert_true(pdpte & 1);
	assert_false(pdpte & 0x80); /* not a 1 GiB page */
	uint64_t pde = rd64(m, (pdpte & 0x000ffffffffff000ULL) + 8 * ((va >> 21) & 511));
	assert_true(pde & 1);
	assert_true(pde & 0x80); /* 2 MiB page */
	return (pde & 0x000fffffffe00000ULL) | (va & 0x1fffff);
}

static void test_page_tables(void **state)
{
	struct guest_mem *m = *state;
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	setup_ok(m, CMDLINE, &bi);

	/* PML4[0] -> PDPT, present + writable; nothing else mapped. */
	assert_int_equal(rd64(m, BOOT_PML4_ADDR), BOOT_PDPT_ADDR | 0x3);
	for (int i = 1; i < 512; i++)
		assert_int_equal(rd64(m, BOOT_PML4_ADDR + 8ULL * i), 0);
	/* PDPT[0..3] -> the four page directories. */
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(rd64(m, BOOT_PDPT_ADDR + 8 * i), (BOOT_PD_ADDR + 4096 * i) | 0x3);
	for (int i = 4; i < 512; i++)
		assert_int_equal(rd64(m, BOOT_PDPT_ADDR + 8ULL * i), 0);
	/* 2048 identity 2 MiB entries: present, writable, PS. */
	for (uint64_t i = 0; i < 4 * 512; i++)
		assert_int_equal(rd64(m, BOOT_PD_ADDR + 8 * i), (i << 21) | 0x83);

	/* The walk gives the identity for the whole low 4 GiB. */
	const uint64_t vas[] = { 0, 0x1234, KERNEL_ADDR, BOOT_PARAMS_ADDR, 0x12345678,
				 MEM_LOW_LIMIT - 1, 0xfee00000, 0xffffffff };
	for (size_t i = 0; i < sizeof(vas) / sizeof(vas[0]); i++)
		assert_int_equal(translate(m, vas[i]), vas[i]);

	/* The tables and the other boot structures do not overlap. */
	assert_true(BOOT_GDT_ADDR + 5 * 8 <= BOOT_PARAMS_ADDR);
	assert_true(BOOT_PARAMS_ADDR + BP_SIZE <= BOOT_PML4_ADDR);
	assert_true(BOOT_PD_ADDR + 4 * 4096 <= BOOT_CMDLINE_ADDR);
	assert_true(BOOT_CMDLINE_ADDR + MICROVM_MAX_CMDLINE <= EBDA_START);
}

/* --------------------------------------------------------- file loading */

static void test_load_missing_file(void **state)
{
	struct guest_mem *m = *state;
	char path[128];
	snprintf(path, sizeof(path), "/tmp/microvm-unit-missing-%ld", (long)getpid());
	unlink(path);
	int fds = open_fd_count();
	struct boot_info bi = { 0 };
	char err[512] = "";
	assert_int_equal(boot_load_kernel(m, path, &bi, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
	err[0] = '\0';
	assert_int_equal(boot_load_initrd(m, path, &bi, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
	assert_int_equal(bi.entry, 0);
	assert_int_equal(bi.initrd_size, 0);
	assert_int_equal(open_fd_count(), fds);
}

static void test_load_directory(void **state)
{
	struct guest_mem *m = *state;
	int fds = open_fd_count();
	struct boot_info bi = { 0 };
	char err[512] = "";
	assert_int_equal(boot_load_kernel(m, "/tmp", &bi, err, sizeof(err)), -EINVAL);
	assert_true(strlen(err) > 0);
	err[0] = '\0';
	assert_int_equal(boot_load_initrd(m, "/tmp", &bi, err, sizeof(err)), -EINVAL);
	assert_true(strlen(err) > 0);
	assert_int_equal(open_fd_count(), fds);
}

/*
 * A FIFO is not a regular file: -EINVAL with a message, without blocking in
 * open() waiting for a writer (see fifo_call.h for how a blocking call is
 * released and detected).
 */
struct load_call {
	struct guest_mem *mem;
	char err[512];
};

static int load_kernel_on(void *arg, const char *path)
{
	struct load_call *l = arg;
	struct boot_info bi = { 0 };
	return boot_load_kernel(l->mem, path, &bi, l->err, sizeof(l->err));
}

static int load_initrd_on(void *arg, const char *path)
{
	struct load_call *l = arg;
	struct boot_info bi = { 0 };
	return boot_load_initrd(l->mem, path, &bi, l->err, sizeof(l->err));
}

static void expect_fifo_refused(struct guest_mem *m, bool initrd)
{
	char fifo[96];
	bool blocked;
	struct load_call l = { .mem = m, .err = "" };
	int r = call_on_fifo("boot", initrd ? load_initrd_on : load_kernel_on, &l, &blocked, fifo,
			     sizeof(fifo));

	const char *what = initrd ? "initrd" : "kernel";
	if (blocked)
		fail_msg("boot_load_%s on a FIFO blocked in open() until a writer appeared "
			 "(then returned %d: %s)", what, r, l.err);
	if (r != -EINVAL)
		fail_msg("boot_load_%s on a FIFO returned %d (%s), expected -EINVAL", what, r,
			 l.err);
	assert_true(strlen(l.err) > 0);
}

static void test_load_kernel_fifo(void **state)
{
	expect_fifo_refused(*state, false);
}

static void test_load_initrd_fifo(void **state)
{
	expect_fifo_refused(*state, true);
}

static void test_load_empty_file(void **state)
{
	struct guest_mem *m = *state;
	char path[64];
	make_temp(path, sizeof(path), "", 0);
	int fds = open_fd_count();
	struct boot_info bi = { 0 };
	char err[512] = "";
	int rk = boot_load_kernel(m, path, &bi, err, sizeof(err));
	size_t lk = strlen(err);
	err[0] = '\0';
	int ri = boot_load_initrd(m, path, &bi, err, sizeof(err));
	size_t li = strlen(err);
	unlink(path);
	assert_int_equal(rk, -ENOEXEC);
	assert_true(lk > 0);
	assert_int_equal(ri, -ENOEXEC);
	assert_true(li > 0);
	assert_int_equal(open_fd_count(), fds);
}

static void test_load_kernel_not_elf(void **state)
{
	struct guest_mem *m = *state;
	char path[64];
	const char text[] = "#!/bin/sh\necho this is not a kernel image\n";
	make_temp(path, sizeof(path), text, sizeof(text) - 1);
	int fds = open_fd_count();
	struct boot_info bi = { 0 };
	char err[512] = "";
	int r = boot_load_kernel(m, path, &bi, err, sizeof(err));
	unlink(path);
	assert_int_equal(r, -ENOEXEC);
	assert_non_null(strstr(err, path));
	assert_int_equal(open_fd_count(), fds);
}

static void test_load_kernel_ok(void **state)
{
	struct guest_mem *m = *state;
	uint8_t img[512];
	size_t len = build_kernel(img, sizeof(img));
	char path[64];
	make_temp(path, sizeof(path), img, len);
	int fds = open_fd_count();
	struct boot_info bi = { 0 };
	char err[512] = "";
	int r = boot_load_kernel(m, path, &bi, err, sizeof(err));
	unlink(path);
	if (r != 0)
		fail_msg("boot_load_kernel: %d (%s)", r, err);
	assert_int_equal(bi.entry, KERNEL_ADDR);
	assert_int_equal(bi.kernel_end, KERNEL_ADDR + KERNEL_MEMSZ);
	assert_int_equal(rd32(m, KERNEL_ADDR), 0xfdebf4fa);
	assert_int_equal(rd8(m, KERNEL_ADDR + KERNEL_MEMSZ - 1), 0); /* bss */
	assert_int_equal(open_fd_count(), fds);
}

static void test_load_initrd_ok(void **state)
{
	struct guest_mem *m = *state;
	const size_t len = 10000;
	uint8_t *data = malloc(len);
	assert_non_null(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 11 + 7);
	char path[64];
	make_temp(path, sizeof(path), data, len);
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	char err[512] = "";
	int r = boot_load_initrd(m, path, &bi, err, sizeof(err));
	unlink(path);
	if (r != 0)
		fail_msg("boot_load_initrd: %d (%s)", r, err);
	/* Page aligned, as high as possible in low RAM, above the kernel. */
	assert_int_equal(bi.initrd_size, len);
	assert_int_equal(bi.initrd_addr & 0xfff, 0);
	assert_true(bi.initrd_addr >= bi.kernel_end);
	assert_true(bi.initrd_addr + len <= RAM_SIZE);
	assert_true(bi.initrd_addr + len + 4096 > RAM_SIZE);
	const uint8_t *p = gm_ptr(m, bi.initrd_addr, len);
	assert_non_null(p);
	assert_memory_equal(p, data, len);
	free(data);

	/* And the zero page points at it. */
	setup_ok(m, CMDLINE, &bi);
	assert_int_equal(rd32(m, bp(BP_HDR_RAMDISK_IMAGE)), bi.initrd_addr);
	assert_int_equal(rd32(m, bp(BP_HDR_RAMDISK_SIZE)), len);
}

static void test_load_initrd_too_big(void **state)
{
	struct guest_mem *m = *state;
	char path[64];
	make_temp(path, sizeof(path), "x", 1);
	/* A sparse file larger than all of guest RAM. */
	assert_int_equal(truncate(path, (off_t)(RAM_SIZE + MIB)), 0);
	struct boot_info bi = { .entry = KERNEL_ADDR, .kernel_end = KERNEL_ADDR + KERNEL_MEMSZ };
	char err[512] = "";
	int r1 = boot_load_initrd(m, path, &bi, err, sizeof(err));
	size_t l1 = strlen(err);
	/* Fits in RAM, but not above a kernel that ends near the top. */
	assert_int_equal(truncate(path, 8192), 0);
	bi.kernel_end = RAM_SIZE - 4096;
	err[0] = '\0';
	int r2 = boot_load_initrd(m, path, &bi, err, sizeof(err));
	size_t l2 = strlen(err);
	unlink(path);
	assert_int_equal(r1, -ENOMEM);
	assert_true(l1 > 0);
	assert_int_equal(r2, -ENOMEM);
	assert_true(l2 > 0);
	assert_int_equal(bi.initrd_addr, 0);
	assert_int_equal(bi.initrd_size, 0);
}

/* lib/image.c: reads stay inside the size seen at open; a file that shrank
 * since is an error (the loaders read, never map: no SIGBUS). */
static void test_image_reads_are_bounded(void **state)
{
	(void)state;
	char path[64];
	uint8_t data[8192], got[8192];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	make_temp(path, sizeof(path), data, sizeof(data));
	int fds = open_fd_count();
	struct image im;
	char err[256] = "";
	assert_int_equal(image_open(&im, path, 4096, err, sizeof(err)), -ENOMEM);
	assert_non_null(strstr(err, path));
	assert_int_equal(open_fd_count(), fds);
	assert_int_equal(image_open(&im, path, sizeof(data), err, sizeof(err)), 0);
	assert_int_equal(im.size, sizeof(data));
	assert_int_equal(image_read(&im, 100, got, 5000), 0);
	assert_memory_equal(got, data + 100, 5000);
	assert_int_equal(image_read(&im, 8000, got, 193), -EINVAL);
	assert_int_equal(image_read(&im, UINT64_MAX, got, 1), -EINVAL);
	assert_int_equal(image_read(&im, 8192, got, 0), 0);
	assert_int_equal(truncate(path, 4096), 0);
	assert_int_equal(image_read(&im, 0, got, 4096), 0);
	assert_int_equal(image_read(&im, 4000, got, 200), -EIO);
	image_close(&im);
	image_close(&im); /* idempotent */
	assert_int_equal(open_fd_count(), fds);
	struct image b = image_of_buffer(data, 16);
	assert_int_equal(image_read(&b, 8, got, 8), 0);
	assert_memory_equal(got, data + 8, 8);
	assert_int_equal(image_read(&b, 8, got, 9), -EINVAL);
	unlink(path);
}

/* A kernel file cut short between the header check and the segment read
 * (simulated: the ELF's segment lies past a truncation) fails cleanly. */
static void test_load_kernel_truncated(void **state)
{
	struct guest_mem *m = *state;
	uint8_t img[512];
	size_t len = build_kernel(img, sizeof(img));
	char path[64];
	make_temp(path, sizeof(path), img, len - 1);
	struct boot_info bi = { 0 };
	char err[512] = "";
	int r = boot_load_kernel(m, path, &bi, err, sizeof(err));
	unlink(path);
	assert_int_equal(r, -ENOEXEC);
	assert_non_null(strstr(err, "past the end of the file"));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_zero_page_header),
		T(test_e820_low_ram),
		cmocka_unit_test(test_e820_high_ram),
		T(test_initrd_fields),
		T(test_null_cmdline),
		T(test_cmdline_max_length),
		T(test_cmdline_too_long),
		cmocka_unit_test(test_ram_too_small),
		T(test_gdt),
		T(test_gdt_tss_entry),
		T(test_page_tables),
		T(test_load_missing_file),
		T(test_load_directory),
		T(test_load_kernel_fifo),
		T(test_load_initrd_fifo),
		T(test_load_empty_file),
		T(test_load_kernel_not_elf),
		T(test_load_kernel_ok),
		T(test_load_initrd_ok),
		T(test_load_initrd_too_big),
		cmocka_unit_test(test_image_reads_are_bounded),
		T(test_load_kernel_truncated),
	};
	return cmocka_run_group_tests_name("boot", tests, NULL, NULL);
}
