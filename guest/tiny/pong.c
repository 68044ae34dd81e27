/* Answers each line "L" read from COM1 with "pong: L", forever: the witness
 * VM of tests/kvm/test_hostile.c, which checks it still responds after each
 * attack on another VM in the same process. */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	char line[128];
	tiny_puts("pong: ready\n");
	for (;;) {
		tiny_getline(line, sizeof(line));
		tiny_puts("pong: ");
		tiny_puts(line);
		tiny_puts("\n");
	}
}
