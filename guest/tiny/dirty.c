/* For the reset benchmark: waits for a byte on COM1, then writes to
 * "pages=N" pages (default 64) of RAM, 16 pages apart from 8 MiB up,
 * prints "D\n" and waits again. A snapshot taken while it waits, then
 * reset after each round, measures microvm_reset() with N dirtied pages. */
#include "tiny.h"

#define COM1 0x3f8

void main(void *boot_params)
{
	uint64_t pages = tiny_cmdline_num(boot_params, "pages", 64);
	volatile uint8_t *base = (volatile uint8_t *)(8ULL << 20);
	uint8_t round = 0;
	tiny_puts("ready\n");
	for (;;) {
		while (!(inb(COM1 + 5) & 0x01)) /* LSR.DR */
			cpu_relax();
		(void)inb(COM1);
		round++;
		for (uint64_t i = 0; i < pages; i++)
			base[i * 16 * 4096] = round;
		tiny_puts("D\n");
	}
}
