#include "arch/x86_64/elf.h"

#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "memory.h"
#include "errbuf.h"
#include "image.h"

#define MAX_PHDRS 64

/* Read and check the ELF header; the program headers it points at must lie
 * inside the file. */
static int elf_read_header(const struct image *im, Elf64_Ehdr *eh, char *err, size_t errlen)
{
	uint64_t size = im->size;
	if (size < sizeof(*eh))
		return errbuf_fail(err, errlen, -ENOEXEC, "file too small for an ELF header (%llu bytes)",
				   (unsigned long long)size);
	int r = image_read(im, 0, eh, sizeof(*eh));
	if (r < 0)
		return errbuf_fail(err, errlen, r, "reading the ELF header: %s", strerror(-r));
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
		return errbuf_fail(err, errlen, -ENOEXEC, "bad ELF magic");
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return errbuf_fail(err, errlen, -ENOEXEC, "not a little-endian ELF64 file");
	if (eh->e_machine != EM_X86_64)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF machine %u is not x86_64", eh->e_machine);
	if (eh->e_type != ET_EXEC)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF type %u is not an executable", eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr))
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF program header size %u", eh->e_phentsize);
	if (eh->e_phnum == 0 || eh->e_phnum > MAX_PHDRS)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF has %u program headers (1..%d allowed)", eh->e_phnum,
			    MAX_PHDRS);
	uint64_t ph_bytes = (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr);
	if (eh->e_phoff > size || ph_bytes > size - eh->e_phoff)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF program headers lie outside the file");
	return 0;
}

/* A PT_LOAD segment that occupies guest memory. */
static bool elf_segment_loads(const Elf64_Phdr *p)
{
	return p->p_type == PT_LOAD && p->p_memsz != 0;
}

/* Check loadable segment @i of @ph: its data inside the file and, if it takes
 * memory, its memory inside guest RAM at or above @min_addr and apart from
 * the segments before it. */
static int elf_check_segment(const Elf64_Phdr *ph, int i, uint64_t size, struct guest_mem *mem,
			     uint64_t min_addr, char *err, size_t errlen)
{
	const Elf64_Phdr *p = &ph[i];
	if (p->p_filesz > p->p_memsz)
		return errbuf_fail(err, errlen, -ENOEXEC, "segment %d: file size 0x%llx > memory size 0x%llx",
			    i, (unsigned long long)p->p_filesz,
			    (unsigned long long)p->p_memsz);
	if (p->p_offset > size || p->p_filesz > size - p->p_offset)
		return errbuf_fail(err, errlen, -ENOEXEC, "segment %d: data lies past the end of the file", i);
	if (p->p_memsz == 0)
		return 0;
	if (p->p_paddr < min_addr)
		return errbuf_fail(err, errlen, -ENOEXEC, "segment %d: address 0x%llx is below 0x%llx", i,
			    (unsigned long long)p->p_paddr, (unsigned long long)min_addr);
	if (!gm_ptr(mem, p->p_paddr, p->p_memsz))
		return errbuf_fail(err, errlen, -ENOEXEC,
			    "segment %d: [0x%llx, +0x%llx) does not fit in guest RAM "
			    "(0x%llx bytes)",
			    i, (unsigned long long)p->p_paddr,
			    (unsigned long long)p->p_memsz, (unsigned long long)mem->size);
	for (int j = 0; j < i; j++) {
		const Elf64_Phdr *q = &ph[j];
		if (!elf_segment_loads(q))
			continue;
		if (p->p_paddr < q->p_paddr + q->p_memsz && q->p_paddr < p->p_paddr + p->p_memsz)
			return errbuf_fail(err, errlen, -ENOEXEC, "segments %d and %d overlap", j, i);
	}
	return 0;
}

/* Check every PT_LOAD segment and find the range [*lo, *hi) they cover. */
static int elf_check_segments(const Elf64_Phdr *ph, int phnum, uint64_t size, struct guest_mem *mem,
			      uint64_t min_addr, uint64_t *lo, uint64_t *hi, char *err,
			      size_t errlen)
{
	int loads = 0;
	*lo = UINT64_MAX;
	*hi = 0;
	for (int i = 0; i < phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type != PT_LOAD)
			continue;
		int r = elf_check_segment(ph, i, size, mem, min_addr, err, errlen);
		if (r < 0)
			return r;
		if (p->p_memsz == 0)
			continue;
		if (p->p_paddr < *lo)
			*lo = p->p_paddr;
		if (p->p_paddr + p->p_memsz > *hi)
			*hi = p->p_paddr + p->p_memsz;
		loads++;
	}
	if (loads == 0)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF has no loadable segment");
	return 0;
}

/* Whether @entry lies inside a loaded segment. */
static bool elf_entry_loaded(const Elf64_Phdr *ph, int phnum, uint64_t entry)
{
	for (int i = 0; i < phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (elf_segment_loads(p) && entry >= p->p_paddr && entry - p->p_paddr < p->p_memsz)
			return true;
	}
	return false;
}

/* Read the checked segments into guest memory, zeroing each one's tail. */
static int elf_copy_segments(const struct image *im, const Elf64_Phdr *ph, int phnum,
			     struct guest_mem *mem, char *err, size_t errlen)
{
	for (int i = 0; i < phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (!elf_segment_loads(p))
			continue;
		uint8_t *dst = gm_ptr(mem, p->p_paddr, p->p_memsz); /* checked above */
		int r = image_to_ram(im, mem, p->p_offset, dst, p->p_filesz);
		if (r < 0)
			return errbuf_fail(err, errlen, r, "segment %d: %s", i, strerror(-r));
		gm_zero(mem, dst + p->p_filesz, p->p_memsz - p->p_filesz); /* bss */
	}
	return 0;
}

int elf_load(const struct image *im, struct guest_mem *mem, uint64_t min_addr,
	     struct elf_image *out, char *err, size_t errlen)
{
	Elf64_Ehdr eh;
	int r = elf_read_header(im, &eh, err, errlen);
	if (r < 0)
		return r;

	Elf64_Phdr ph[MAX_PHDRS];
	r = image_read(im, eh.e_phoff, ph, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr));
	if (r < 0)
		return errbuf_fail(err, errlen, r, "reading the program headers: %s", strerror(-r));

	/* Validate everything before writing anything to guest memory. */
	uint64_t lo, hi;
	r = elf_check_segments(ph, eh.e_phnum, im->size, mem, min_addr, &lo, &hi, err, errlen);
	if (r < 0)
		return r;
	if (!elf_entry_loaded(ph, eh.e_phnum, eh.e_entry))
		return errbuf_fail(err, errlen, -ENOEXEC, "entry point 0x%llx is outside the loaded segments",
			    (unsigned long long)eh.e_entry);

	r = elf_copy_segments(im, ph, eh.e_phnum, mem, err, errlen);
	if (r < 0)
		return r;
	out->entry = eh.e_entry;
	out->load_lo = lo;
	out->load_hi = hi;
	return 0;
}
