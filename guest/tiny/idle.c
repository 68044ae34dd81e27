/* Prints "idle: ready" on COM1, then halts with interrupts off: a running VM
 * that uses no CPU (bench-density counts the host memory of many of them;
 * destroying it kicks the halted vCPU). */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	tiny_puts("idle: ready\n");
	tiny_halt_forever();
}
