/* Runs forever, printing "tick N" every "every=N" iterations (default
 * 20000): used to observe pause/resume from the host. */
#include "tiny.h"

void main(void *boot_params)
{
	uint64_t every = tiny_cmdline_num(boot_params, "every", 20000);
	for (uint64_t tick = 0;; tick++) {
		for (volatile uint64_t i = 0; i < every; i++)
			;
		tiny_puts("tick ");
		tiny_putdec(tick);
		tiny_puts("\n");
	}
}
