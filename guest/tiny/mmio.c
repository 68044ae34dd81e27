/* Talks to the test MMIO device the host registers at 0xd0000000:
 *   +0  (32-bit) scratch: reads return what was written XOR 0xa5a5a5a5
 *   +8  (64-bit) scratch: reads return what was written, bit-inverted
 * Prints "mmio: ok" or what went wrong, then resets. */
#include "tiny.h"

#define DEV 0xd0000000ULL

void main(void *boot_params)
{
	(void)boot_params;
	int ok = 1;
	mmio_write32(DEV, 0x12345678);
	uint32_t r32 = mmio_read32(DEV);
	if (r32 != (0x12345678u ^ 0xa5a5a5a5u)) {
		tiny_puts("mmio: bad 32-bit read ");
		tiny_puthex(r32);
		tiny_puts("\n");
		ok = 0;
	}
	mmio_write64(DEV + 8, 0x0123456789abcdefULL);
	uint64_t r64 = mmio_read64(DEV + 8);
	if (r64 != ~0x0123456789abcdefULL) {
		tiny_puts("mmio: bad 64-bit read ");
		tiny_puthex(r64);
		tiny_puts("\n");
		ok = 0;
	}
	/* An unclaimed address reads as all ones. */
	uint32_t none = mmio_read32(DEV + 0x10000);
	if (none != 0xffffffffu) {
		tiny_puts("mmio: unclaimed read ");
		tiny_puthex(none);
		tiny_puts("\n");
		ok = 0;
	}
	tiny_puts(ok ? "mmio: ok\n" : "mmio: FAILED\n");
	tiny_reset();
}
