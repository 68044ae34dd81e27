/* Answers each line "L" read from COM1 with "pong: L", forever: the witness
 * VM of tests/kvm/test_hostile.c, which checks it still responds after each
 * attack on another VM in the same process. */
#include "tiny.h"

#define COM1 0x3f8

void main(void *boot_params)
{
	(void)boot_params;
	char line[128];
	tiny_puts("pong: ready\n");
	for (;;) {
		unsigned n = 0;
		for (;;) {
			while (!(inb(COM1 + 5) & 0x01)) /* LSR.DR */
				cpu_relax();
			char c = (char)inb(COM1);
			if (c == '\n' || n == sizeof(line) - 1)
				break;
			line[n++] = c;
		}
		line[n] = 0;
		tiny_puts("pong: ");
		tiny_puts(line);
		tiny_puts("\n");
	}
}
