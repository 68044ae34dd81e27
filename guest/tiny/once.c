/* The floor's guest (bench/floor.h) as a payload: one byte written straight
 * to COM1's transmit register, then a reset through the i8042. For
 * bench-density's create -> run to exit -> destroy throughput, where the
 * library and the raw KVM calls run the same guest work. */
#include "tiny.h"

void main(void *boot_params)
{
	(void)boot_params;
	outb(0x3f8, 'A');
	tiny_reset();
}
