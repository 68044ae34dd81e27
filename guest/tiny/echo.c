/* Reads one line from COM1 by polling the line status, prints it back as
 * "echo: LINE", then resets. */
#include "tiny.h"

#define COM1 0x3f8

void main(void *boot_params)
{
	(void)boot_params;
	char line[128];
	unsigned n = 0;
	tiny_puts("echo: ready\n");
	for (;;) {
		while (!(inb(COM1 + 5) & 0x01)) /* LSR.DR */
			cpu_relax();
		char c = (char)inb(COM1);
		if (c == '\n' || n == sizeof(line) - 1)
			break;
		line[n++] = c;
	}
	line[n] = 0;
	tiny_puts("echo: ");
	tiny_puts(line);
	tiny_puts("\n");
	tiny_reset();
}
