/* Executes an invalid opcode with an empty IDT: #UD -> #GP -> #DF ->
 * triple fault, which KVM reports as a shutdown. */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	tiny_puts("triple: faulting\n");
	__asm__ volatile("ud2");
	tiny_puts("triple: still alive?!\n");
	tiny_reset();
}
