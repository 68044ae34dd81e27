/* Prints a greeting on COM1 and resets through the i8042. */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	tiny_puts("Hello from the microvm tiny guest!\n");
	tiny_reset();
}
