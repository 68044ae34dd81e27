/* Loads an x87 operand from an MMIO address. KVM must emulate MMIO
 * accesses, and its instruction emulator has no x87 loads, so this ends in
 * KVM_EXIT_INTERNAL_ERROR (emulation failure): the VMM must report it with
 * the instruction bytes instead of crashing or hanging. */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	tiny_puts("emulfail: x87 load from MMIO\n");
	__asm__ volatile("fldl (%0)" :: "r"(0xd0000000ULL) : "memory");
	tiny_puts("emulfail: survived (the emulator handled it)\n");
	tiny_reset();
}
