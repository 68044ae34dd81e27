/* The ELF loader (lib/arch/x86_64/elf.c): any bytes as a kernel image. */
#include "fuzz.h"

#include "arch/x86_64/elf.h"
#include "image.h"

static struct guest_mem mem;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!mem.host)
		fz_ram(&mem, 16 * MIB);
	struct elf_image out;
	char err[256];
	struct image im = image_of_buffer(data, size);
	(void)elf_load(&im, &mem, 0x100000, &out, err, sizeof(err));
	return 0;
}
