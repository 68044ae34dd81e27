/* hello with a vmlinux-sized image: 20 MiB of initialised data (in the
 * file, loaded into guest RAM) and 4 MiB of bss, for the start-path
 * benchmark (bench-density) and the loader tests. */
#include "tiny.h"

__attribute__((used)) static const unsigned char blob[20 << 20] = { 1 };
__attribute__((used)) static unsigned char zeros[4 << 20];

void main(void *boot_params)
{
	(void)boot_params;
	tiny_puts("Hello from the big tiny guest!\n");
	tiny_reset();
}
