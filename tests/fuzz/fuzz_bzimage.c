/* The bzImage loader (lib/arch/x86_64/bzimage.c): any bytes as a kernel
 * image (setup header checks, load address choice, the copy). */
#include "fuzz.h"

#include "arch/x86_64/bzimage.h"
#include "image.h"

static struct guest_mem mem;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!mem.host)
		fz_ram(&mem, 64 * MIB);
	static struct bzimage_info out;
	char err[256];
	struct image im = image_of_buffer(data, size);
	(void)bzimage_load(&im, &mem, &out, err, sizeof(err));
	return 0;
}
