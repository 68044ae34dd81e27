/* Counts forever in a variable in guest RAM, printing "count N" every
 * "every=N" spin iterations (default 2000), and "in B" for each byte B read
 * from COM1: the snapshot tests check that a restored VM continues the
 * count where the snapshot left it and that clones diverge on their input. */
#include "tiny.h"

#define COM1 0x3f8

static volatile uint64_t count;

void main(void *boot_params)
{
	uint64_t every = tiny_cmdline_num(boot_params, "every", 2000);
	for (;;) {
		for (volatile uint64_t i = 0; i < every; i++)
			;
		while (inb(COM1 + 5) & 0x01) { /* LSR.DR */
			uint8_t c = inb(COM1);
			tiny_puts("in ");
			tiny_putdec(c);
			tiny_puts("\n");
		}
		count++;
		tiny_puts("count ");
		tiny_putdec(count);
		tiny_puts("\n");
	}
}
