/*
 * Unit tests for the ELF64 kernel loader (lib/arch/x86_64/elf.c).
 *
 * Images are built in memory with the <elf.h> structures and loaded into a
 * real guest_mem. Every malformed image must be rejected with -ENOEXEC and a
 * message, before anything is written to guest memory: RAM is filled with a
 * pattern before each test and the pattern is checked after every rejection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "arch/x86_64/elf.h"
#include "image.h"
#include "arch/x86_64/layout.h"
#include "arch/arch.h"
#include "memory.h"

#define RAM_SIZE (16 * MIB)
#define MIN_ADDR HIGH_MEMORY_START
#define PATTERN 0xa5

/* The good image: header, room for 64 program headers, then segment data. */
#define DATA0_OFF 0x1000
#define DATA0_SIZE 0x80
#define DATA1_OFF 0x1100
#define DATA1_FILESZ 0x40
#define DATA1_MEMSZ 0x1000
#define SEG0_ADDR 0x100000ULL
#define SEG1_ADDR 0x200000ULL
#define ENTRY (SEG0_ADDR + 0x10)
#define GOOD_SIZE (DATA1_OFF + DATA1_FILESZ)

struct test_image {
	_Alignas(8) uint8_t buf[8192];
	size_t size;
};

struct fixture {
	struct guest_mem mem;
	struct test_image im;
};

static Elf64_Ehdr *ehdr(struct test_image *im)
{
	return (Elf64_Ehdr *)im->buf;
}

static Elf64_Phdr *phdr(struct test_image *im, int i)
{
	return (Elf64_Phdr *)(im->buf + sizeof(Elf64_Ehdr)) + i;
}

static uint8_t seg0_byte(size_t i)
{
	return (uint8_t)(i * 7 + 1);
}

static uint8_t seg1_byte(size_t i)
{
	return (uint8_t)(i * 13 + 0x40);
}

/*
 * A valid ELF64 x86_64 executable with two PT_LOAD segments:
 *   0: [SEG0_ADDR, +0x80)   from file offset DATA0_OFF, all file data
 *   1: [SEG1_ADDR, +0x1000) from file offset DATA1_OFF, 0x40 file bytes + bss
 * The virtual addresses are kernel-style high addresses: the loader must use
 * the physical ones.
 */
static void build_good(struct test_image *im)
{
	memset(im->buf, 0, sizeof(im->buf));
	Elf64_Ehdr *eh = ehdr(im);
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_ident[EI_OSABI] = ELFOSABI_SYSV;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = ENTRY;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 2;

	Elf64_Phdr *p0 = phdr(im, 0), *p1 = phdr(im, 1);
	p0->p_type = PT_LOAD;
	p0->p_flags = PF_R | PF_X;
	p0->p_offset = DATA0_OFF;
	p0->p_vaddr = 0xffffffff81000000ULL;
	p0->p_paddr = SEG0_ADDR;
	p0->p_filesz = DATA0_SIZE;
	p0->p_memsz = DATA0_SIZE;
	p0->p_align = 0x1000;

	p1->p_type = PT_LOAD;
	p1->p_flags = PF_R | PF_W;
	p1->p_offset = DATA1_OFF;
	p1->p_vaddr = 0xffffffff81100000ULL;
	p1->p_paddr = SEG1_ADDR;
	p1->p_filesz = DATA1_FILESZ;
	p1->p_memsz = DATA1_MEMSZ;
	p1->p_align = 0x1000;

	for (size_t i = 0; i < DATA0_SIZE; i++)
		im->buf[DATA0_OFF + i] = seg0_byte(i);
	for (size_t i = 0; i < DATA1_FILESZ; i++)
		im->buf[DATA1_OFF + i] = seg1_byte(i);
	im->size = GOOD_SIZE;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	if (arch_ram_init(&f->mem, RAM_SIZE) < 0) {
		free(f);
		return -1;
	}
	memset(f->mem.host, PATTERN, RAM_SIZE);
	f->mem.all_zero = false; /* written above: the loader must zero the bss */
	build_good(&f->im);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	gm_release(&f->mem);
	free(f);
	return 0;
}

/* True if every byte of guest RAM still holds PATTERN. */
static bool ram_untouched(const struct guest_mem *m)
{
	static uint8_t ref[64 * 1024];
	if (ref[0] != PATTERN)
		memset(ref, PATTERN, sizeof(ref));
	for (uint64_t off = 0; off < m->size; off += sizeof(ref))
		if (memcmp(m->host + off, ref, sizeof(ref)) != 0)
			return false;
	return true;
}

/*
 * Load @f->im and expect a rejection: -ENOEXEC, a non-empty message
 * (containing @needle if not NULL), @out not written and guest RAM
 * untouched.
 */
static void expect_rejected(struct fixture *f, const char *needle)
{
	char err[256] = "";
	struct elf_image out = { 0x1111, 0x2222, 0x3333 };
	int r = elf_load(&(struct image){ .buf = f->im.buf, .fd = -1, .size = f->im.size }, &f->mem, MIN_ADDR, &out, err, sizeof(err));
	assert_int_equal(r, -ENOEXEC);
	assert_true(strlen(err) > 0);
	if (needle && !strstr(err, needle))
		fail_msg("message \"%s\" does not mention \"%s\"", err, needle);
	assert_int_equal(out.entry, 0x1111);
	assert_int_equal(out.load_lo, 0x2222);
	assert_int_equal(out.load_hi, 0x3333);
	assert_true(ram_untouched(&f->mem));
}

static void expect_loaded(struct fixture *f, struct elf_image *out)
{
	char err[256] = "";
	int r = elf_load(&(struct image){ .buf = f->im.buf, .fd = -1, .size = f->im.size }, &f->mem, MIN_ADDR, out, err, sizeof(err));
	if (r != 0)
		fail_msg("elf_load failed: %d (%s)", r, err);
}

/* ------------------------------------------------------------ good images */

static void test_good_two_segments(void **state)
{
	struct fixture *f = *state;
	struct elf_image out;
	expect_loaded(f, &out);
	assert_int_equal(out.entry, ENTRY);
	assert_int_equal(out.load_lo, SEG0_ADDR);
	assert_int_equal(out.load_hi, SEG1_ADDR + DATA1_MEMSZ);

	const uint8_t *ram = f->mem.host;
	/* Segment 0: file bytes copied at its physical address. */
	for (size_t i = 0; i < DATA0_SIZE; i++)
		assert_int_equal(ram[SEG0_ADDR + i], seg0_byte(i));
	/* Segment 1: file bytes, then bss zeroed up to p_memsz. */
	for (size_t i = 0; i < DATA1_FILESZ; i++)
		assert_int_equal(ram[SEG1_ADDR + i], seg1_byte(i));
	for (size_t i = DATA1_FILESZ; i < DATA1_MEMSZ; i++)
		assert_int_equal(ram[SEG1_ADDR + i], 0);
	/* Nothing written around the segments. */
	assert_int_equal(ram[SEG0_ADDR - 1], PATTERN);
	assert_int_equal(ram[SEG0_ADDR + DATA0_SIZE], PATTERN);
	assert_int_equal(ram[SEG1_ADDR - 1], PATTERN);
	assert_int_equal(ram[SEG1_ADDR + DATA1_MEMSZ], PATTERN);
	/* Nothing at the virtual addresses' low bits either (0x1000000). */
	assert_int_equal(ram[0x1000000 - 1], PATTERN);
	assert_int_equal(ram[0], PATTERN);
}

static void test_good_entry_in_bss(void **state)
{
	struct fixture *f = *state;
	ehdr(&f->im)->e_entry = SEG1_ADDR + DATA1_MEMSZ - 1;
	struct elf_image out;
	expect_loaded(f, &out);
	assert_int_equal(out.entry, SEG1_ADDR + DATA1_MEMSZ - 1);
}

static void test_good_adjacent_segments(void **state)
{
	struct fixture *f = *state;
	/* Segment 1 starts exactly where segment 0 ends: not an overlap. */
	phdr(&f->im, 1)->p_paddr = SEG0_ADDR + DATA0_SIZE;
	struct elf_image out;
	expect_loaded(f, &out);
	assert_int_equal(out.load_lo, SEG0_ADDR);
	assert_int_equal(out.load_hi, SEG0_ADDR + DATA0_SIZE + DATA1_MEMSZ);
	assert_int_equal(f->mem.host[SEG0_ADDR + DATA0_SIZE - 1], seg0_byte(DATA0_SIZE - 1));
	assert_int_equal(f->mem.host[SEG0_ADDR + DATA0_SIZE], seg1_byte(0));
}

static void test_good_segment_at_end_of_ram(void **state)
{
	struct fixture *f = *state;
	phdr(&f->im, 1)->p_paddr = RAM_SIZE - DATA1_MEMSZ;
	struct elf_image out;
	expect_loaded(f, &out);
	assert_int_equal(out.load_hi, RAM_SIZE);
	assert_int_equal(f->mem.host[RAM_SIZE - DATA1_MEMSZ], seg1_byte(0));
	assert_int_equal(f->mem.host[RAM_SIZE - 1], 0);
}

static void test_good_max_phdrs_with_other_types(void **state)
{
	struct fixture *f = *state;
	/* 64 program headers (the maximum): the two PT_LOADs at the end, the
	 * others of types the loader must skip. */
	Elf64_Phdr p0 = *phdr(&f->im, 0), p1 = *phdr(&f->im, 1);
	for (int i = 0; i < 62; i++) {
		Elf64_Phdr *p = phdr(&f->im, i);
		memset(p, 0, sizeof(*p));
		p->p_type = (i % 3 == 0) ? PT_NULL : (i % 3 == 1) ? PT_NOTE : PT_GNU_STACK;
		/* Nonsense addresses: must be ignored for non-PT_LOAD types. */
		p->p_paddr = 0x10;
		p->p_memsz = UINT64_MAX;
	}
	*phdr(&f->im, 62) = p0;
	*phdr(&f->im, 63) = p1;
	ehdr(&f->im)->e_phnum = 64;
	assert_true(sizeof(Elf64_Ehdr) + 64 * sizeof(Elf64_Phdr) <= DATA0_OFF);
	struct elf_image out;
	expect_loaded(f, &out);
	assert_int_equal(out.entry, ENTRY);
	assert_int_equal(out.load_lo, SEG0_ADDR);
	assert_int_equal(out.load_hi, SEG1_ADDR + DATA1_MEMSZ);
	assert_int_equal(f->mem.host[SEG0_ADDR], seg0_byte(0));
}

static void test_good_empty_load_segment_ignored(void **state)
{
	struct fixture *f = *state;
	/* A third PT_LOAD with p_memsz 0 loads nothing, so its address does not
	 * matter. */
	Elf64_Phdr *p2 = phdr(&f->im, 2);
	p2->p_type = PT_LOAD;
	p2->p_paddr = 0x1000; /* below min_addr, but empty */
	p2->p_offset = 0;
	p2->p_filesz = 0;
	p2->p_memsz = 0;
	ehdr(&f->im)->e_phnum = 3;
	struct elf_image out;
	expect_loaded(f, &out);
	assert_int_equal(out.load_lo, SEG0_ADDR);
	assert_int_equal(f->mem.host[0x1000], PATTERN);
}

/* ---------------------------------------------------------- truncation */

static void test_truncated_header(void **state)
{
	struct fixture *f = *state;
	const size_t sizes[] = { 0, 1, 4, 16, sizeof(Elf64_Ehdr) - 1 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		f->im.size = sizes[i];
		expect_rejected(f, NULL);
	}
}

static void test_truncated_phdrs(void **state)
{
	struct fixture *f = *state;
	/* The header fits, the program headers end past the file. */
	f->im.size = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) + 10;
	expect_rejected(f, NULL);
	f->im.size = sizeof(Elf64_Ehdr);
	expect_rejected(f, NULL);
}

static void test_phoff_past_end(void **state)
{
	struct fixture *f = *state;
	ehdr(&f->im)->e_phoff = GOOD_SIZE - 10;
	expect_rejected(f, NULL);
	ehdr(&f->im)->e_phoff = GOOD_SIZE + 1;
	expect_rejected(f, NULL);
	/* e_phoff + e_phnum * e_phentsize overflows 64 bits. */
	ehdr(&f->im)->e_phoff = UINT64_MAX - 8;
	expect_rejected(f, NULL);
}

static void test_segment_data_past_end(void **state)
{
	struct fixture *f = *state;
	/* The file ends one byte before segment 1's data does. */
	f->im.size = GOOD_SIZE - 1;
	expect_rejected(f, NULL);

	build_good(&f->im);
	phdr(&f->im, 0)->p_offset = GOOD_SIZE + 0x100;
	expect_rejected(f, NULL);

	build_good(&f->im);
	/* p_offset + p_filesz overflows 64 bits. */
	phdr(&f->im, 0)->p_offset = UINT64_MAX - 0x10;
	expect_rejected(f, NULL);
}

/* ------------------------------------------------------- header fields */

static void test_bad_magic(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < SELFMAG; i++) {
		build_good(&f->im);
		ehdr(&f->im)->e_ident[i] ^= 0x20;
		expect_rejected(f, NULL);
	}
	/* Not an ELF at all: a text file. */
	build_good(&f->im);
	memcpy(f->im.buf, "#!/bin/sh\necho this is not a kernel\n", 36);
	expect_rejected(f, NULL);
}

static void test_elfclass32(void **state)
{
	struct fixture *f = *state;
	ehdr(&f->im)->e_ident[EI_CLASS] = ELFCLASS32;
	expect_rejected(f, NULL);
	ehdr(&f->im)->e_ident[EI_CLASS] = ELFCLASSNONE;
	expect_rejected(f, NULL);
}

static void test_big_endian(void **state)
{
	struct fixture *f = *state;
	ehdr(&f->im)->e_ident[EI_DATA] = ELFDATA2MSB;
	expect_rejected(f, NULL);
	ehdr(&f->im)->e_ident[EI_DATA] = ELFDATANONE;
	expect_rejected(f, NULL);
}

static void test_wrong_machine(void **state)
{
	struct fixture *f = *state;
	const uint16_t machines[] = { EM_NONE, EM_386, EM_AARCH64, EM_RISCV, EM_X86_64 + 1 };
	for (size_t i = 0; i < sizeof(machines) / sizeof(machines[0]); i++) {
		ehdr(&f->im)->e_machine = machines[i];
		expect_rejected(f, NULL);
	}
}

static void test_wrong_type(void **state)
{
	struct fixture *f = *state;
	const uint16_t types[] = { ET_DYN, ET_REL, ET_CORE, ET_NONE };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		ehdr(&f->im)->e_type = types[i];
		expect_rejected(f, NULL);
	}
}

static void test_wrong_phentsize(void **state)
{
	struct fixture *f = *state;
	const uint16_t sizes[] = { 0, sizeof(Elf32_Phdr), sizeof(Elf64_Phdr) - 1,
				   sizeof(Elf64_Phdr) + 1, 0xffff };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		ehdr(&f->im)->e_phentsize = sizes[i];
		expect_rejected(f, NULL);
	}
}

static void test_zero_phdrs(void **state)
{
	struct fixture *f = *state;
	ehdr(&f->im)->e_phnum = 0;
	expect_rejected(f, NULL);
}

static void test_too_many_phdrs(void **state)
{
	struct fixture *f = *state;
	/* 65 headers would even fit in the file: the count alone is refused. */
	memset(f->im.buf + sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr), 0,
	       63 * sizeof(Elf64_Phdr));
	f->im.size = sizeof(f->im.buf);
	ehdr(&f->im)->e_phnum = 65;
	expect_rejected(f, NULL);
	ehdr(&f->im)->e_phnum = 0xffff; /* PN_XNUM */
	expect_rejected(f, NULL);
}

/* --------------------------------------------------------- segment checks */

static void test_segment_below_min_addr(void **state)
{
	struct fixture *f = *state;
	/* Ends exactly at min_addr: still below it. */
	phdr(&f->im, 0)->p_paddr = MIN_ADDR - DATA0_SIZE;
	ehdr(&f->im)->e_entry = MIN_ADDR - DATA0_SIZE;
	expect_rejected(f, NULL);
	/* One byte below. */
	phdr(&f->im, 0)->p_paddr = MIN_ADDR - 1;
	ehdr(&f->im)->e_entry = MIN_ADDR;
	expect_rejected(f, NULL);
	/* Address 0, where the real-mode structures live. */
	phdr(&f->im, 0)->p_paddr = 0;
	ehdr(&f->im)->e_entry = 0;
	expect_rejected(f, NULL);
}

static void test_segment_past_ram(void **state)
{
	struct fixture *f = *state;
	/* Starts just past the end of RAM. */
	phdr(&f->im, 1)->p_paddr = RAM_SIZE;
	expect_rejected(f, NULL);
	/* Straddles the end of RAM by one byte. */
	phdr(&f->im, 1)->p_paddr = RAM_SIZE - DATA1_MEMSZ + 1;
	expect_rejected(f, NULL);
	/* In the MMIO hole / above 4 GiB, where a 16 MiB guest has no RAM. */
	phdr(&f->im, 1)->p_paddr = MEM_LOW_LIMIT;
	expect_rejected(f, NULL);
	phdr(&f->im, 1)->p_paddr = MEM_HIGH_BASE;
	expect_rejected(f, NULL);
}

static void test_segment_address_overflow(void **state)
{
	struct fixture *f = *state;
	/* p_paddr + p_memsz wraps around 2^64. */
	phdr(&f->im, 1)->p_paddr = 0xfffffffffffff000ULL;
	phdr(&f->im, 1)->p_memsz = 0x2000;
	expect_rejected(f, NULL);
	phdr(&f->im, 1)->p_paddr = UINT64_MAX;
	phdr(&f->im, 1)->p_memsz = DATA1_MEMSZ;
	expect_rejected(f, NULL);
}

static void test_huge_memsz(void **state)
{
	struct fixture *f = *state;
	phdr(&f->im, 1)->p_memsz = 1ULL << 62;
	expect_rejected(f, NULL);
	phdr(&f->im, 1)->p_memsz = UINT64_MAX;
	expect_rejected(f, NULL);
	/* Just one byte more than the RAM left above the segment. */
	phdr(&f->im, 1)->p_memsz = RAM_SIZE - SEG1_ADDR + 1;
	expect_rejected(f, NULL);
}

static void test_filesz_greater_than_memsz(void **state)
{
	struct fixture *f = *state;
	phdr(&f->im, 1)->p_memsz = DATA1_FILESZ - 1;
	expect_rejected(f, NULL);
	/* Also when memsz is 0 (a segment that would otherwise be skipped). */
	phdr(&f->im, 1)->p_memsz = 0;
	expect_rejected(f, NULL);
}

static void test_overlapping_segments(void **state)
{
	struct fixture *f = *state;
	/* Segment 0 moved up so that every case below stays above min_addr. */
	const uint64_t s0 = 0x180000;
	const struct {
		uint64_t addr, memsz;
	} cases[] = {
		{ s0, DATA0_SIZE },            /* exactly the same range */
		{ s0 - 0x40, 0x80 },           /* overlaps the start (partial left) */
		{ s0 + DATA0_SIZE - 1, 0x80 }, /* overlaps the last byte (partial right) */
		{ s0 + 0x10, 0x10 },           /* contained in segment 0 */
		{ s0 - 0x1000, 0x2000 },       /* contains segment 0 */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		build_good(&f->im);
		phdr(&f->im, 0)->p_paddr = s0;
		ehdr(&f->im)->e_entry = s0;
		Elf64_Phdr *p1 = phdr(&f->im, 1);
		p1->p_paddr = cases[i].addr;
		p1->p_memsz = cases[i].memsz;
		p1->p_filesz = cases[i].memsz < DATA1_FILESZ ? cases[i].memsz : DATA1_FILESZ;
		expect_rejected(f, "overlap");
	}
	/* The higher segment first in the table: still an overlap. */
	build_good(&f->im);
	Elf64_Phdr tmp = *phdr(&f->im, 0);
	*phdr(&f->im, 0) = *phdr(&f->im, 1);
	*phdr(&f->im, 1) = tmp;
	phdr(&f->im, 0)->p_paddr = SEG0_ADDR + 0x40;
	expect_rejected(f, "overlap");
}

static void test_entry_outside_segments(void **state)
{
	struct fixture *f = *state;
	const uint64_t entries[] = {
		0,
		SEG0_ADDR - 1,
		SEG0_ADDR + DATA0_SIZE, /* one past segment 0 */
		0x180000,               /* in the gap between the segments */
		SEG1_ADDR + DATA1_MEMSZ, /* one past segment 1 (and its bss) */
		RAM_SIZE - 1,           /* RAM, but not loaded */
		UINT64_MAX,
	};
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		ehdr(&f->im)->e_entry = entries[i];
		expect_rejected(f, "entry");
	}
}

static void test_entry_in_non_load_segment(void **state)
{
	struct fixture *f = *state;
	/* A PT_NOTE that "covers" the entry does not count. */
	Elf64_Phdr *p2 = phdr(&f->im, 2);
	p2->p_type = PT_NOTE;
	p2->p_paddr = 0x300000;
	p2->p_memsz = 0x1000;
	ehdr(&f->im)->e_phnum = 3;
	ehdr(&f->im)->e_entry = 0x300000;
	expect_rejected(f, "entry");
}

static void test_no_load_segment(void **state)
{
	struct fixture *f = *state;
	phdr(&f->im, 0)->p_type = PT_NOTE;
	phdr(&f->im, 1)->p_type = PT_DYNAMIC;
	expect_rejected(f, NULL);

	/* PT_LOADs that load nothing (p_memsz 0) do not count either. */
	build_good(&f->im);
	for (int i = 0; i < 2; i++) {
		phdr(&f->im, i)->p_filesz = 0;
		phdr(&f->im, i)->p_memsz = 0;
	}
	expect_rejected(f, NULL);
}

/* ------------------------------------------------------- error buffer */

static void test_small_error_buffer(void **state)
{
	struct fixture *f = *state;
	ehdr(&f->im)->e_machine = EM_386;
	char err[16];
	memset(err, 'X', sizeof(err));
	struct elf_image out;
	int r = elf_load(&(struct image){ .buf = f->im.buf, .fd = -1, .size = f->im.size }, &f->mem, MIN_ADDR, &out, err, 8);
	assert_int_equal(r, -ENOEXEC);
	/* Truncated, NUL-terminated within errlen, nothing written past it. */
	assert_int_equal(strlen(err), 7);
	for (size_t i = 8; i < sizeof(err); i++)
		assert_int_equal(err[i], 'X');

	/* No buffer at all is fine too. */
	r = elf_load(&(struct image){ .buf = f->im.buf, .fd = -1, .size = f->im.size }, &f->mem, MIN_ADDR, &out, NULL, 0);
	assert_int_equal(r, -ENOEXEC);
	assert_true(ram_untouched(&f->mem));
}

/* Into fresh RAM (all zeros) the bss is not written: its pages stay
 * unpopulated (no host memory) and read as zeros. */
static void test_fresh_ram_bss_not_written(void **state)
{
	struct fixture *f = *state;
	enum { BSS_PAGES = 16 };
	gm_release(&f->mem);
	assert_int_equal(arch_ram_init(&f->mem, RAM_SIZE), 0);
	assert_true(f->mem.all_zero);
	Elf64_Phdr *p1 = (Elf64_Phdr *)(f->im.buf + sizeof(Elf64_Ehdr)) + 1;
	p1->p_memsz = BSS_PAGES * 4096; /* segment 1: 0x40 file bytes, then bss */
	struct elf_image out;
	expect_loaded(f, &out);
	unsigned char vec[BSS_PAGES];
	assert_int_equal(mincore(f->mem.host + SEG1_ADDR, BSS_PAGES * 4096, vec), 0);
	assert_int_equal(vec[0] & 1, 1); /* the file bytes' page */
	for (int i = 1; i < BSS_PAGES; i++)
		assert_int_equal(vec[i] & 1, 0);
	const uint8_t *ram = f->mem.host;
	for (size_t i = 0; i < DATA1_FILESZ; i++)
		assert_int_equal(ram[SEG1_ADDR + i], seg1_byte(i));
	for (size_t i = DATA1_FILESZ; i < BSS_PAGES * 4096; i++)
		assert_int_equal(ram[SEG1_ADDR + i], 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_good_two_segments),
		T(test_fresh_ram_bss_not_written),
		T(test_good_entry_in_bss),
		T(test_good_adjacent_segments),
		T(test_good_segment_at_end_of_ram),
		T(test_good_max_phdrs_with_other_types),
		T(test_good_empty_load_segment_ignored),
		T(test_truncated_header),
		T(test_truncated_phdrs),
		T(test_phoff_past_end),
		T(test_segment_data_past_end),
		T(test_bad_magic),
		T(test_elfclass32),
		T(test_big_endian),
		T(test_wrong_machine),
		T(test_wrong_type),
		T(test_wrong_phentsize),
		T(test_zero_phdrs),
		T(test_too_many_phdrs),
		T(test_segment_below_min_addr),
		T(test_segment_past_ram),
		T(test_segment_address_overflow),
		T(test_huge_memsz),
		T(test_filesz_greater_than_memsz),
		T(test_overlapping_segments),
		T(test_entry_outside_segments),
		T(test_entry_in_non_load_segment),
		T(test_no_load_segment),
		T(test_small_error_buffer),
	};
	return cmocka_run_group_tests_name("elf", tests, NULL, NULL);
}
