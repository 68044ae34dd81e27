#include "arch/x86_64/elf.h"

#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "memory.h"
#include "errbuf.h"

#define MAX_PHDRS 64

int elf_load(const uint8_t *img, size_t size, struct guest_mem *mem, uint64_t min_addr,
	     struct elf_image *out, char *err, size_t errlen)
{
	Elf64_Ehdr eh;
	if (size < sizeof(eh))
		return errbuf_fail(err, errlen, -ENOEXEC, "file too small for an ELF header (%zu bytes)", size);
	memcpy(&eh, img, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		return errbuf_fail(err, errlen, -ENOEXEC, "bad ELF magic");
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
		return errbuf_fail(err, errlen, -ENOEXEC, "not a little-endian ELF64 file");
	if (eh.e_machine != EM_X86_64)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF machine %u is not x86_64", eh.e_machine);
	if (eh.e_type != ET_EXEC)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF type %u is not an executable", eh.e_type);
	if (eh.e_phentsize != sizeof(Elf64_Phdr))
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF program header size %u", eh.e_phentsize);
	if (eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF has %u program headers (1..%d allowed)", eh.e_phnum,
			    MAX_PHDRS);
	uint64_t ph_bytes = (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr);
	if (eh.e_phoff > size || ph_bytes > size - eh.e_phoff)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF program headers lie outside the file");

	Elf64_Phdr ph[MAX_PHDRS];
	memcpy(ph, img + eh.e_phoff, ph_bytes);

	/* Validate everything before writing anything to guest memory. */
	uint64_t lo = UINT64_MAX, hi = 0;
	int loads = 0;
	for (int i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type != PT_LOAD)
			continue;
		if (p->p_filesz > p->p_memsz)
			return errbuf_fail(err, errlen, -ENOEXEC, "segment %d: file size 0x%llx > memory size 0x%llx",
				    i, (unsigned long long)p->p_filesz,
				    (unsigned long long)p->p_memsz);
		if (p->p_offset > size || p->p_filesz > size - p->p_offset)
			return errbuf_fail(err, errlen, -ENOEXEC, "segment %d: data lies past the end of the file", i);
		if (p->p_memsz == 0)
			continue;
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
			if (q->p_type != PT_LOAD || q->p_memsz == 0)
				continue;
			if (p->p_paddr < q->p_paddr + q->p_memsz && q->p_paddr < p->p_paddr + p->p_memsz)
				return errbuf_fail(err, errlen, -ENOEXEC, "segments %d and %d overlap", j, i);
		}
		if (p->p_paddr < lo)
			lo = p->p_paddr;
		if (p->p_paddr + p->p_memsz > hi)
			hi = p->p_paddr + p->p_memsz;
		loads++;
	}
	if (loads == 0)
		return errbuf_fail(err, errlen, -ENOEXEC, "ELF has no loadable segment");

	/* The entry must be inside a loaded segment. */
	bool entry_ok = false;
	for (int i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type == PT_LOAD && p->p_memsz && eh.e_entry >= p->p_paddr &&
		    eh.e_entry - p->p_paddr < p->p_memsz)
			entry_ok = true;
	}
	if (!entry_ok)
		return errbuf_fail(err, errlen, -ENOEXEC, "entry point 0x%llx is outside the loaded segments",
			    (unsigned long long)eh.e_entry);

	for (int i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		if (p->p_type != PT_LOAD || p->p_memsz == 0)
			continue;
		uint8_t *dst = gm_ptr(mem, p->p_paddr, p->p_memsz); /* checked above */
		memcpy(dst, img + p->p_offset, p->p_filesz);
		memset(dst + p->p_filesz, 0, p->p_memsz - p->p_filesz);
	}
	out->entry = eh.e_entry;
	out->load_lo = lo;
	out->load_hi = hi;
	return 0;
}
