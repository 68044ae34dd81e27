/* Reads one line from COM1 by polling the line status, prints it back as
 * "echo: LINE", then resets. */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	char line[128];
	tiny_puts("echo: ready\n");
	tiny_getline(line, sizeof(line));
	tiny_puts("echo: ");
	tiny_puts(line);
	tiny_puts("\n");
	tiny_reset();
}
