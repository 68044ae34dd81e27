/* Spins "loops=N" iterations (default 100000), then halts with interrupts
 * off: the vCPU stays inside KVM_RUN until the host kicks it. */
#include "tiny.h"

void main(void *boot_params)
{
	uint64_t n = tiny_cmdline_num(boot_params, "loops", 100000);
	for (volatile uint64_t i = 0; i < n; i++)
		;
	tiny_puts("busy: done, halting\n");
	tiny_halt_forever();
}
