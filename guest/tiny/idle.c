/* Prints "idle: ready", then sleeps with interrupts on (hlt) until COM1
 * receives input, answering each line "L" with "idle: L": a VM that costs
 * no CPU while it waits (tests/kvm/test_density.c runs thousands). The
 * UART's receive interrupt (IRQ 4) comes through the IOAPIC. */
#include "tiny.h"

#define COM1 0x3f8
#define COM1_PIN 4
#define VECTOR 0x41

__attribute__((interrupt)) static void on_irq(struct interrupt_frame *f)
{
	(void)f;
	tiny_lapic_eoi();
}

static void setup_irq(void)
{
	/* IRQ 4 also reaches the 8259 PIC (virtual-wire mode, vector base
	 * never programmed): mask it, the IOAPIC delivers. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	tiny_irq_handler(VECTOR, on_irq);
	tiny_ioapic_route(COM1_PIN, VECTOR);
	outb(COM1 + 1, 0x01); /* IER: received data available */
}

void main(void *boot_params)
{
	(void)boot_params;
	char line[128];
	unsigned len = 0;
	setup_irq();
	tiny_puts("idle: ready\n");
	for (;;) {
		while (inb(COM1 + 5) & 1) {
			char c = (char)inb(COM1);
			if (c != '\n' && len + 1 < sizeof(line)) {
				line[len++] = c;
				continue;
			}
			line[len] = 0;
			len = 0;
			tiny_puts("idle: ");
			tiny_puts(line);
			tiny_puts("\n");
		}
		/* sti takes effect after hlt starts: no wake-up is lost */
		__asm__ volatile("sti; hlt; cli" ::: "memory");
	}
}
